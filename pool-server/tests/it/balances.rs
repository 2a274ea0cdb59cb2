//! Exact balances: transfers are bounded so that `/balances` always adds up to the coins the
//! chain minted (one per forged block), with no saturation or overflow.

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
