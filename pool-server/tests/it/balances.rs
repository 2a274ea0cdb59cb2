//! Exact balances: transfers are bounded so that `/balances` always adds up to the coins the
//! chain minted (one per forged block), with no saturation or overflow; the ranking stays right
//! through many blocks, and `/balances` pages like `/chain`.

use std::collections::HashMap;

use pool_server::serve::Limits;
use protocol::message::MAX_COINS;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::Server;

async fn transfer(server: &Server, sender: &str, recipient: &str, amount: u64) -> (u16, String) {
    let res = reqwest::Client::new()
        .post(server.url("/transactions/new"))
        .json(&json!({ "sender": sender, "recipient": recipient, "amount": amount }))
        .send()
        .await
        .expect("POST /transactions/new");
    let status = res.status().as_u16();
    let body: Value = res.json().await.expect("a JSON body");
    (status, body["message"].as_str().expect("a message").to_owned())
}

#[tokio::test]
async fn huge_transfers_are_bounded_and_balances_add_up_to_the_coins_minted() {
    let server = Server::start(2).await;
    let max = MAX_COINS as u64;
    // Beyond the bound: refused outright (this once saturated the balances at ±2^63).
    let (status, message) = transfer(&server, "alice", "bob", i64::MAX as u64).await;
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("at most 9007199254740991"), "{message}");
    assert_eq!(transfer(&server, "alice", "bob", max).await.0, 201);
    // Pending transfers count: a second one would leave alice at -2 × MAX, bob at MAX + 1.
    let (status, message) = transfer(&server, "alice", "bob", max).await;
    assert_eq!(status, 409, "{message}");
    assert!(
        message.contains("\"alice\"") && message.contains("balances are kept within"),
        "{message}"
    );
    let (status, message) = transfer(&server, "carol", "bob", 1).await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("\"bob\""), "{message}");
    server.forge("miner").await;
    // Still refused once the block holds the first one; paying back is fine.
    assert_eq!(transfer(&server, "carol", "bob", 1).await.0, 409);
    assert_eq!(transfer(&server, "bob", "carol", 5).await.0, 201);
    server.forge("miner").await;

    let body: Value =
        reqwest::get(server.url("/balances")).await.expect("GET").json().await.expect("json");
    let balances: Vec<(String, i128)> = body["balances"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|b| {
            (
                b["id"].as_str().expect("id").to_owned(),
                i128::from(b["coins"].as_i64().expect("coins")),
            )
        })
        .collect();
    let minted = server.chain().await.len() as i128 - 1; // one coin per block after genesis
    assert_eq!(balances.iter().map(|(_, c)| c).sum::<i128>(), minted, "{body}");
    let m = i128::from(MAX_COINS);
    assert_eq!(
        balances,
        [("bob".into(), m - 5), ("carol".into(), 5), ("miner".into(), 2), ("alice".into(), -m)]
    );
    assert_eq!(
        reqwest::get(server.url("/balance/alice")).await.expect("GET").status(),
        StatusCode::OK
    );
}

/// `GET /balances`, whole or one page (`from`, `limit`), as JSON.
async fn balances_at(server: &Server, query: &str) -> (StatusCode, Value) {
    let res = reqwest::get(server.url(&format!("/balances{query}"))).await.expect("GET");
    let status = res.status();
    assert_eq!(res.headers()[reqwest::header::CONTENT_TYPE], "application/json", "{query}");
    (status, res.json().await.expect("a JSON body"))
}

fn pairs(list: &Value) -> Vec<(String, i64)> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|b| (b["id"].as_str().expect("id").to_owned(), b["coins"].as_i64().expect("coins")))
        .collect()
}

/// A tiny pseudo-random sequence (xorshift), so the test is the same every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Thousands of ids, most tied with many others, then hundreds of transfers that move them
/// across the ranking block by block: the whole list and every page, walked by `next`, stay
/// exactly the chain's balances, highest first, ties by id (the ranking is kept per changed id
/// now, not re-sorted per block).
#[tokio::test]
async fn balances_stay_ranked_through_many_blocks_and_their_pages_agree() {
    let limits = Limits { transaction_rate: 1_000_000, ..Limits::default() };
    let server = Server::start_with(1, limits).await;
    let http = reqwest::Client::new();
    let mut expected: HashMap<String, i64> = HashMap::new();
    let send = async |sender: &str, recipient: &str, amount: u64| {
        let res = http
            .post(server.url("/transactions/new"))
            .json(&json!({ "sender": sender, "recipient": recipient, "amount": amount }))
            .send()
            .await
            .expect("POST /transactions/new");
        assert_eq!(res.status(), StatusCode::CREATED);
    };
    let mut pending = 0;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for step in 0..2_400u64 {
        // First a crowd of new ids with a few distinct amounts (ties), then moves among them and
        // to a few newcomers, by small and large amounts.
        let (sender, recipient, amount) = if step < 1_500 {
            ("bank".to_owned(), format!("id{step:04}"), step % 9 + 1)
        } else {
            let r = next(&mut state);
            let from = format!("id{:04}", r % 1_500);
            let to = if r.is_multiple_of(50) {
                format!("new{}", r % 97)
            } else {
                format!("id{:04}", (r >> 16) % 1_500)
            };
            (from, to, (r >> 32) % 20 + 1 + if r.is_multiple_of(13) { 500 } else { 0 })
        };
        send(&sender, &recipient, amount).await;
        *expected.entry(sender).or_default() -= amount as i64;
        *expected.entry(recipient).or_default() += amount as i64;
        pending += 1;
        if pending == 900 || (step >= 1_500 && pending == 150) || step == 2_399 {
            server.forge("miner").await;
            *expected.entry("miner".to_owned()).or_default() += 1;
            pending = 0;
        }
    }
    let mut ranked: Vec<(String, i64)> = expected.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let length = ranked.len() as u64;

    let (status, whole) = balances_at(&server, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (whole["length"].as_u64(), &whole["from"], &whole["next"]),
        (Some(length), &json!(1), &Value::Null)
    );
    assert_eq!(pairs(&whole["balances"]), ranked);

    let mut walked = Vec::new();
    let mut from = 1;
    loop {
        let (status, page) = balances_at(&server, &format!("?from={from}&limit=256")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!((page["length"].as_u64(), page["from"].as_u64()), (Some(length), Some(from)));
        let items = pairs(&page["balances"]);
        assert!(items.len() <= 256);
        walked.extend(items);
        match page["next"].as_u64() {
            Some(next) => {
                assert_eq!(next, from + 256);
                from = next;
            }
            None => break,
        }
    }
    assert_eq!(walked, ranked);
    // Past the end: an empty page; a default page is 1,000 long.
    let (_, beyond) = balances_at(&server, &format!("?from={}", length + 1)).await;
    assert_eq!(
        beyond,
        json!({ "length": length, "from": length + 1, "next": null, "balances": [] })
    );
    let (_, first) = balances_at(&server, "?from=1").await;
    assert_eq!(pairs(&first["balances"]), ranked[..1_000]);
    assert_eq!(first["next"], 1_001);
    let (_, one) = balances_at(&server, "?limit=1&from=3").await;
    assert_eq!(pairs(&one["balances"]), ranked[2..3]);
}

#[tokio::test]
async fn bad_balances_pages_get_a_json_400() {
    let server = Server::start(1).await;
    server.forge("miner").await;
    for query in [
        "from=0",
        "from=-1",
        "from=abc",
        "from=1.5",
        "from=",
        "limit=0",
        "limit=1001",
        "limit=-5",
        "limit=1&limit=2",
        "from=18446744073709551616",
    ] {
        let (status, body) = balances_at(&server, &format!("?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let message = body["message"].as_str().expect("a message");
        assert!(message.contains("from") || message.contains("limit"), "{query}: {message}");
    }
    let (_, body) = balances_at(&server, "?limit=5000").await;
    assert_eq!(body["message"], "\"limit\" must be between 1 and 1000, got 5000");
    let (_, body) = balances_at(&server, "?from=0").await;
    assert_eq!(body["message"], "\"from\" is a place in the ranking; the first is 1");
    let (_, body) = balances_at(&server, "?from=18446744073709551615&limit=1000").await;
    assert_eq!(
        body,
        json!({ "length": 1, "from": 18446744073709551615_u64, "next": null, "balances": [] })
    );
}
