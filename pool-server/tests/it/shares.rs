//! Shares at the WebSocket boundary (issue 12): opting in, share / duplicate / stale / invalid
//! verdicts next to blocks, vardiff raising a fast miner's target, the cut-off for mostly invalid
//! shares, `GET /workers`, shares kept across a restart, and shares across two frontends of one
//! PostgreSQL pool. Connections that do not opt in see nothing new (the rest of the suite).

use std::time::Duration;

use pool_server::serve::Limits;
use pool_server::shares::ShareSettings;
use serde_json::{Value, json};

use crate::pg;
use crate::support::{Server, Ws, opt_in, proof_with_bits, send_proof, spawn_binary_with};

/// Difficulty 3: a block needs 12 zero bits; shares start at 4.
const ZEROS: u64 = 3;

fn limits(start_bits: u8) -> Limits {
    Limits {
        proof_rate: 1_000_000,
        shares: ShareSettings { interval: Duration::from_secs(1), start_bits, min_bits: 2 },
        ..Limits::default()
    }
}

async fn workers(server: &Server) -> Vec<Value> {
    let body: Value = reqwest::get(server.url("/workers"))
        .await
        .expect("GET /workers")
        .json()
        .await
        .expect("json");
    assert_eq!(body["window"], 120, "{body}");
    body["workers"].as_array().cloned().expect("a workers list")
}

#[tokio::test]
async fn shares_blocks_duplicates_stale_and_invalid_are_told_apart() {
    // Start high so vardiff (8 shares a retarget) does not move the target during the test.
    let server = Server::start_with(ZEROS, limits(5)).await;
    let (mut ws, first) = Ws::connect_and_greet(&server.ws_url()).await;
    let block1 = first["block"].clone();
    assert_eq!(opt_in(&mut ws).await, 5);

    let share = proof_with_bits(&block1, 5, 12, 0);
    let answer = send_proof(&mut ws, share, "alice", Some(1)).await;
    assert_eq!(answer["type"], "share", "{answer}");
    assert_eq!((answer["accepted"].clone(), answer["reason"].clone()), (json!(true), Value::Null));
    assert_eq!(answer["bits"], 5);

    let again = send_proof(&mut ws, share, "alice", Some(1)).await;
    assert_eq!(
        (again["accepted"].clone(), again["reason"].clone()),
        (json!(false), json!("duplicate"))
    );

    let weak = proof_with_bits(&block1, 0, 5, 0);
    let invalid = send_proof(&mut ws, weak, "alice", Some(1)).await;
    assert_eq!(invalid["reason"], "invalid", "{invalid}");
    assert!(invalid["message"].as_str().unwrap_or_default().contains("share target (5 zero bits)"));

    // A block is still a block, answered as before.
    let winning = proof_with_bits(&block1, 12, 257, 0);
    let won = send_proof(&mut ws, winning, "alice", Some(1)).await;
    assert_eq!(
        (won["type"].clone(), won["message"].clone()),
        (json!("result"), json!("New Block Forged"))
    );

    // A share for block 1, now won, is stale.
    let late = proof_with_bits(&block1, 5, 12, share + 1);
    let stale = send_proof(&mut ws, late, "alice", Some(1)).await;
    assert_eq!(stale["reason"], "stale", "{stale}");

    // /workers: one accepted share plus the block; refusals counted once the id had a share.
    let list = workers(&server).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let alice = &list[0];
    assert_eq!(alice["id"], "alice");
    assert_eq!(
        (alice["shares"].clone(), alice["stale"].clone(), alice["invalid"].clone()),
        (json!(2), json!(1), json!(2))
    );
    assert!(alice["hashrate"].as_f64().unwrap_or(0.0) > 0.0, "{alice}");
    assert_eq!(alice["coins"], 1);

    // A connection that did not opt in is judged as before: a share-grade proof is invalid.
    let (mut plain, second) = Ws::connect_and_greet(&server.ws_url()).await;
    let block2 = second["block"].clone();
    let share2 = proof_with_bits(&block2, 5, 12, 0);
    let answer = send_proof(&mut plain, share2, "bob", None).await;
    assert_eq!(
        (answer["type"].clone(), answer["reason"].clone()),
        (json!("result"), json!("invalid"))
    );
}

#[tokio::test]
async fn a_fast_miner_gets_a_harder_target_pushed() {
    let server = Server::start_with(4, limits(2)).await;
    let (mut ws, first) = Ws::connect_and_greet(&server.ws_url()).await;
    let block = first["block"].clone();
    assert_eq!(opt_in(&mut ws).await, 2);
    // Eight shares at once, far more than one a second: the target rises.
    let mut proof = 0;
    let mut target = 2;
    for _ in 0..8 {
        proof = proof_with_bits(&block, target as u32, 16, proof + 1);
        let answer = send_proof(&mut ws, proof, "fast", Some(1)).await;
        assert_eq!((&answer["type"], &answer["accepted"]), (&json!("share"), &json!(true)));
    }
    let pushed = loop {
        let frame = ws.recv().await;
        if frame["type"] == "share_target" {
            break frame["bits"].as_u64().expect("bits");
        }
    };
    assert!(pushed > target, "the target rose from {target} to {pushed}");
    // A share found for the old target, arriving just after the raise (it was in flight), is
    // honest work: accepted, and counted at the old target, not refused as invalid.
    let weak = proof_with_bits(&block, 2, 3, proof + 1);
    let answer = send_proof(&mut ws, weak, "fast", Some(1)).await;
    assert_eq!((&answer["accepted"], &answer["bits"]), (&json!(true), &json!(2)), "{answer}");
    // Once the grace is over, below the new target is no longer a share.
    tokio::time::sleep(pool_server::shares::TARGET_GRACE).await;
    let weak = proof_with_bits(&block, 2, 3, weak + 1);
    let answer = send_proof(&mut ws, weak, "fast", Some(1)).await;
    assert_eq!(answer["reason"], "invalid", "{answer}");
    target = pushed;
    let strong = proof_with_bits(&block, target as u32, 16, weak + 1);
    let answer = send_proof(&mut ws, strong, "fast", Some(1)).await;
    assert_eq!(answer["accepted"], true, "{answer}");
}

#[tokio::test]
async fn a_connection_sending_mostly_invalid_shares_is_cut_off() {
    let server = Server::start_with(ZEROS, limits(8)).await;
    let (mut ws, first) = Ws::connect_and_greet(&server.ws_url()).await;
    let block = first["block"].clone();
    opt_in(&mut ws).await;
    let mut proof = 0;
    let mut last = Value::Null;
    for _ in 0..20 {
        proof = proof_with_bits(&block, 0, 8, proof + 1);
        last = send_proof(&mut ws, proof, "spammer", Some(1)).await;
    }
    assert_eq!(last["reason"], "invalid", "{last}");
    let cut = ws.recv().await;
    assert_eq!(cut["type"], "error", "{cut}");
    assert!(cut["message"].as_str().unwrap_or_default().contains("20 of the 20"), "{cut}");
    // Others are unaffected.
    let (_, hello) = Ws::connect_and_greet(&server.ws_url()).await;
    assert_eq!(hello["type"], "block");
}

#[tokio::test]
async fn a_connection_resending_one_share_is_cut_off() {
    let server = Server::start_with(ZEROS, limits(5)).await;
    let (mut ws, first) = Ws::connect_and_greet(&server.ws_url()).await;
    opt_in(&mut ws).await;
    let share = proof_with_bits(&first["block"], 5, 12, 0);
    assert_eq!(send_proof(&mut ws, share, "echo", Some(1)).await["accepted"], true);
    // Each copy costs the server a lookup: duplicates count against the connection too.
    for _ in 0..19 {
        let again = send_proof(&mut ws, share, "echo", Some(1)).await;
        assert_eq!(again["reason"], "duplicate", "{again}");
    }
    let cut = ws.recv().await;
    assert_eq!(cut["type"], "error", "{cut}");
    assert!(cut["message"].as_str().unwrap_or_default().contains("19 of the 20"), "{cut}");
}

#[test]
fn accepted_shares_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let options = ["--share-start-bits", "4", "--share-min-bits", "2"];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let count = |addr: std::net::SocketAddr| -> Value {
        let body: Value = reqwest::blocking::get(format!("http://{addr}/workers"))
            .expect("GET /workers")
            .json()
            .expect("json");
        body["workers"][0]["shares"].clone()
    };
    let first = spawn_binary_with(&data, ZEROS, &options).expect("server starts");
    runtime.block_on(async {
        let (mut ws, hello) = Ws::connect_and_greet(&format!("ws://{}/ws", first.addr)).await;
        assert_eq!(opt_in(&mut ws).await, 4);
        let mut proof = 0;
        for _ in 0..3 {
            proof = proof_with_bits(&hello["block"], 4, 12, proof + 1);
            let answer = send_proof(&mut ws, proof, "keeper", Some(1)).await;
            assert_eq!(answer["accepted"], true, "{answer}");
        }
    });
    assert_eq!(count(first.addr), 3);
    drop(first); // kill -9: every acknowledged share was committed before its answer
    let second = spawn_binary_with(&data, ZEROS, &options).expect("server restarts");
    assert_eq!(count(second.addr), 3);
}

#[test]
fn pplns_pays_shares_sent_before_a_kill_and_restart() {
    use pool_server::payout::PPLNS_REWARD;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // 11-bit shares (one below the block's 12) that vardiff leaves alone.
    let options = [
        "--payout",
        "pplns",
        "--share-start-bits",
        "11",
        "--share-min-bits",
        "11",
        "--share-interval-ms",
        "60000",
    ];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let first = spawn_binary_with(&data, ZEROS, &options).expect("server starts");
    let block = runtime.block_on(async {
        let (mut ws, hello) = Ws::connect_and_greet(&format!("ws://{}/ws", first.addr)).await;
        assert_eq!(opt_in(&mut ws).await, 11);
        let mut proof = 0;
        for _ in 0..2 {
            proof = proof_with_bits(&hello["block"], 11, 12, proof + 1);
            let answer = send_proof(&mut ws, proof, "before", Some(1)).await;
            assert_eq!(answer["accepted"], true, "{answer}");
        }
        hello["block"].clone()
    });
    drop(first); // kill -9
    let second = spawn_binary_with(&data, ZEROS, &options).expect("server restarts");
    // A course miner wins block 1 over HTTP: its proof counts as one share at the block's bits.
    let proof = proof_with_bits(&block, 12, 257, 0);
    let won: Value = reqwest::blocking::Client::new()
        .post(format!("http://{}/mine", second.addr))
        .json(&json!({"proof": proof, "id": "finder"}))
        .send()
        .expect("POST /mine")
        .json()
        .expect("json");
    assert_eq!(won["message"], "New Block Forged", "{won}");
    let rewards = rewards_by_id(std::slice::from_ref(&won["block"]));
    assert_eq!(rewards.values().sum::<u64>(), PPLNS_REWARD, "{won}");
    // The two shares from before the kill (2 × 2^11) weigh as much as the finder's (2^12); the
    // finder also gets its one unit, and rounding may move one more.
    let before = rewards.get("before").copied().unwrap_or(0);
    let finder = rewards.get("finder").copied().unwrap_or(0);
    assert!(before > 0, "shares acknowledged before the kill were paid: {won}");
    assert!(before.abs_diff(finder) <= 2, "before {before}, finder {finder}: {won}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frontends_count_shares_once_and_agree_on_workers() {
    let Some(pg) = pg::server_or_skip() else { return };
    let url = pg.url();
    let a = Server::start_on(ZEROS, limits(5), Some(&url)).await;
    let b = Server::start_on(ZEROS, limits(5), Some(&url)).await;
    let (mut wa, hello) = Ws::connect_and_greet(&a.ws_url()).await;
    let (mut wb, _) = Ws::connect_and_greet(&b.ws_url()).await;
    opt_in(&mut wa).await;
    opt_in(&mut wb).await;
    let share = proof_with_bits(&hello["block"], 5, 12, 0);
    let first = send_proof(&mut wa, share, "carol", Some(1)).await;
    assert_eq!(first["accepted"], true, "{first}");
    // The same proof on the other frontend is a duplicate: one pool, one count.
    let second = send_proof(&mut wb, share, "carol", Some(1)).await;
    assert_eq!(second["reason"], "duplicate", "{second}");
    let other = proof_with_bits(&hello["block"], 5, 12, share + 1);
    assert_eq!(send_proof(&mut wb, other, "carol", Some(1)).await["accepted"], true);
    // Refused shares are counted in memory and stored within a second or so: wait for b's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let on_a = loop {
        let on_a = workers(&a).await;
        if on_a[0]["invalid"] == 1 || tokio::time::Instant::now() > deadline {
            break on_a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let on_b = workers(&b).await;
    assert_eq!(on_a[0]["shares"], 2, "{on_a:?}");
    assert_eq!(on_a[0]["invalid"], 1, "{on_a:?}");
    assert_eq!(
        (on_a[0]["id"].clone(), on_a[0]["shares"].clone()),
        (on_b[0]["id"].clone(), on_b[0]["shares"].clone())
    );
}

/// Sums each id's rewards (transactions from "0") over a `/chain`.
fn rewards_by_id(chain: &[Value]) -> std::collections::BTreeMap<String, u64> {
    let mut paid = std::collections::BTreeMap::new();
    for block in chain {
        for t in block["transactions"].as_array().into_iter().flatten() {
            if t["sender"] == "0" {
                let id = t["recipient"].as_str().expect("recipient").to_owned();
                *paid.entry(id).or_insert(0) += t["amount"].as_u64().expect("amount");
            }
        }
    }
    paid
}

#[tokio::test]
async fn pplns_pays_every_block_exactly_over_the_last_shares() {
    use pool_server::payout::{PPLNS_REWARD, Payout};
    // Shares at 11 bits, one below the block's 12: vardiff cannot raise them, and with a
    // minute per wanted share it does not lower them during the test.
    let settings =
        ShareSettings { interval: Duration::from_secs(60), start_bits: 11, min_bits: 11 };
    let limits = Limits { shares: settings, ..limits(11) };
    let server = Server::start_paying(ZEROS, limits, None, Payout::Pplns { window: 8 }).await;
    let (mut a, hello) = Ws::connect_and_greet(&server.ws_url()).await;
    let (mut b, _) = Ws::connect_and_greet(&server.ws_url()).await;
    opt_in(&mut a).await;
    opt_in(&mut b).await;
    let mut block = hello["block"].clone();
    let mut proof = 0;
    // Three blocks; before each, "light" sends one share and "heavy" three, all at 11 bits.
    for _ in 0..3 {
        let index = block["index"].as_u64().expect("index");
        for (ws, id, n) in [(&mut a, "light", 1), (&mut b, "heavy", 3)] {
            for _ in 0..n {
                proof = proof_with_bits(&block, 11, 12, proof + 1);
                let answer = send_proof(ws, proof, id, Some(index)).await;
                assert_eq!(answer["accepted"], true, "{answer}");
            }
        }
        proof = proof_with_bits(&block, 12, 257, proof + 1);
        let won = send_proof(&mut a, proof, "finder", Some(index)).await;
        assert_eq!(won["message"], "New Block Forged", "{won}");
        // (The block frame may come before the result, so read it over HTTP.)
        block = server.last_block().await;
        assert_eq!(block["index"], index + 1);
        let last = block["transactions"].as_array().and_then(|t| t.last()).cloned();
        assert_eq!(last.map(|t| t["recipient"].clone()), Some(json!("finder")), "{block}");
        let minted: u64 = block["transactions"]
            .as_array()
            .expect("transactions")
            .iter()
            .filter(|t| t["sender"] == "0")
            .map(|t| t["amount"].as_u64().expect("amount"))
            .sum();
        assert_eq!(minted, PPLNS_REWARD, "each block mints exactly the reward: {block}");
    }
    let chain = server.chain().await;
    let paid = rewards_by_id(&chain);
    assert_eq!(paid.values().sum::<u64>(), 3 * PPLNS_REWARD, "{paid:?}");
    // Heavy sent three times light's shares; the ratio of their pay follows, within rounding
    // (the window also holds the finder's block shares).
    let ratio = paid["heavy"] as f64 / paid["light"] as f64;
    assert!((ratio - 3.0).abs() < 0.01, "heavy/light = {ratio}: {paid:?}");
    // /balances agrees with the chain exactly.
    let balances: Value =
        reqwest::get(server.url("/balances")).await.expect("GET").json().await.expect("json");
    for b in balances["balances"].as_array().expect("balances") {
        let id = b["id"].as_str().expect("id");
        assert_eq!(b["coins"].as_u64(), paid.get(id).copied(), "{id}");
    }
}

#[tokio::test]
async fn solo_pays_one_coin_to_the_finder_even_with_shares() {
    let server = Server::start_with(ZEROS, limits(5)).await;
    let (mut ws, hello) = Ws::connect_and_greet(&server.ws_url()).await;
    opt_in(&mut ws).await;
    let block = hello["block"].clone();
    let share = proof_with_bits(&block, 5, 12, 0);
    assert_eq!(send_proof(&mut ws, share, "helper", Some(1)).await["accepted"], true);
    let winning = proof_with_bits(&block, 12, 257, 0);
    assert_eq!(
        send_proof(&mut ws, winning, "finder", Some(1)).await["message"],
        "New Block Forged"
    );
    let chain = server.chain().await;
    assert_eq!(
        chain[1]["transactions"],
        json!([{"sender": "0", "recipient": "finder", "amount": 1}])
    );
}

#[tokio::test]
async fn stats_and_metrics_show_the_busiest_workers_only() {
    let server = Server::start_with(ZEROS, limits(5)).await;
    let (_, hello) = Ws::connect_and_greet(&server.ws_url()).await;
    let block = hello["block"].clone();
    // 25 ids, each on its own connection (fewer than 8 shares each: vardiff stays at 5 bits).
    // The busiest has a quote and a backslash in its id, for the Prometheus label.
    let ids: Vec<String> =
        (0..25).map(|i| if i == 0 { r#"a"b\c"#.to_owned() } else { format!("w{i:02}") }).collect();
    let mut proof = 0;
    for (i, id) in ids.iter().enumerate() {
        let (mut ws, _) = Ws::connect_and_greet(&server.ws_url()).await;
        assert_eq!(opt_in(&mut ws).await, 5);
        let count = if i == 0 { 7 } else { 1 + i % 5 };
        for _ in 0..count {
            proof = proof_with_bits(&block, 5, 12, proof + 1);
            let answer = send_proof(&mut ws, proof, id, Some(1)).await;
            assert_eq!(answer["accepted"], true, "{answer}");
        }
    }
    let listed = workers(&server).await;
    assert_eq!(listed.len(), 25);

    let (mut dashboard, _) = Ws::connect_and_greet(&server.ws_url()).await;
    dashboard.send_text(r#"{"type":"stats"}"#).await;
    let reply = dashboard.recv().await;
    let Ok(protocol::ServerMessage::Stats { workers: in_stats, .. }) =
        protocol::ServerMessage::from_json(&reply.to_string())
    else {
        panic!("expected a stats message, got {reply}");
    };
    // The 20 with the most work, as /workers orders them.
    assert_eq!(in_stats.len(), 20);
    let key = |w: &Value| (w["id"].as_str().map(str::to_owned), w["shares"].as_u64());
    let expected: Vec<_> = listed.iter().take(20).map(key).collect();
    let got: Vec<_> = in_stats.iter().map(|w| (Some(w.id.clone()), Some(w.shares))).collect();
    assert_eq!(got, expected);
    assert_eq!((in_stats[0].id.as_str(), in_stats[0].shares), (r#"a"b\c"#, 7));

    let text = reqwest::get(server.url("/metrics")).await.expect("GET").text().await.expect("text");
    assert!(text.contains("\npool_workers 25\n"), "{text}");
    let series = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(series("pool_worker_hashrate{"), 20, "{text}");
    assert_eq!(series("pool_worker_shares_total{"), 60, "{text}");
    assert!(
        text.contains(r#"pool_worker_shares_total{id="a\"b\\c",result="accepted"} 7"#),
        "{text}"
    );
}

#[tokio::test]
async fn shares_are_limited_per_connection_not_from_the_address_allowance() {
    // 5 proofs a second per address, 10 at once; a connection that asked for shares gets the
    // same allowance to itself.
    let limits = Limits { proof_rate: 5, ..limits(5) };
    let server = Server::start_with(ZEROS, limits).await;
    let (mut ws, hello) = Ws::connect_and_greet(&server.ws_url()).await;
    let block1 = hello["block"].clone();
    assert_eq!(opt_in(&mut ws).await, 5);
    // Block 1 is won (over HTTP: one of the address's 10), so shares for it are stale: judged,
    // and never a cut-off.
    server.forge("winner").await;
    let mut proof = 0;
    let mut judged = 0;
    let refusal = loop {
        assert!(judged < 100, "100 proofs in a row were judged: no per-connection limit");
        proof = proof_with_bits(&block1, 5, 12, proof + 1);
        let answer = send_proof(&mut ws, proof, "classroom", Some(1)).await;
        if answer["type"] == "error" {
            break answer;
        }
        assert_eq!(answer["reason"], "stale", "{answer}");
        judged += 1;
    };
    assert!(judged >= 10, "only {judged} shares judged before {refusal}");
    let message = refusal["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many proofs on this connection"), "{refusal}");
    // The address's own allowance is untouched: a course miner there is judged, not refused.
    let course = server.mine_http(proof_with_bits(&block1, 0, 5, 0), "course").await;
    assert_eq!(course["reason"], "invalid", "{course}");
    // Another connection asking for shares has its own allowance too.
    let (mut other, _) = Ws::connect_and_greet(&server.ws_url()).await;
    opt_in(&mut other).await;
    proof = proof_with_bits(&block1, 5, 12, proof + 1);
    assert_eq!(send_proof(&mut other, proof, "classroom", Some(1)).await["reason"], "stale");
    // The first connection stays open and usable.
    ws.send_text(r#"{"type":"last_block"}"#).await;
    assert_eq!(ws.recv().await["type"], "block");
}

/// The PPLNS flush (issue 19): a miner whose connections sit at a cheap target sends a thousand
/// shares just before the block it found. With a window of the last N shares by count it pushed
/// every honest share out and took the whole reward; with a window of work its cheap shares
/// count for the work they stand for, and the honest miner keeps the rest.
#[tokio::test]
async fn flushing_the_pplns_window_with_cheap_shares_pays_only_their_work() {
    use pool_server::payout::{PPLNS_REWARD, Payout};
    // Difficulty 4: a block is 16 bits; the window is 2 blocks' work, 2^17. Shares start at 6
    // bits; a minute per wanted share, so only the eight-share retarget moves a target.
    const ZEROS: u64 = 4;
    let settings = ShareSettings { interval: Duration::from_secs(60), start_bits: 6, min_bits: 6 };
    let limits = Limits { shares: settings, max_conns_per_ip: 1000, ..limits(6) };
    let server = Server::start_paying(ZEROS, limits, None, Payout::Pplns { window: 2 }).await;
    let (mut honest, hello) = Ws::connect_and_greet(&server.ws_url()).await;
    let block = hello["block"].clone();
    assert_eq!(opt_in(&mut honest).await, 6);
    // Eight quick shares raise the honest connection by 8 bits, to 14; then eight 14-bit shares
    // (2^17 of work) fill the window.
    let mut proof = 0;
    for _ in 0..8 {
        proof = proof_with_bits(&block, 6, 7, proof + 1);
        assert_eq!(send_proof(&mut honest, proof, "honest", Some(1)).await["accepted"], true);
    }
    for _ in 0..8 {
        proof = proof_with_bits(&block, 14, 15, proof + 1);
        let answer = send_proof(&mut honest, proof, "honest", Some(1)).await;
        assert_eq!((&answer["accepted"], &answer["bits"]), (&json!(true), &json!(14)), "{answer}");
    }
    // The attacker: a thousand 6-bit shares over 125 connections (each stays at 6 bits for its
    // eight), then the block on a fresh connection at 6 bits.
    let mut cheap = Vec::new();
    while cheap.len() < 1000 {
        proof = proof_with_bits(&block, 6, 7, proof + 1);
        cheap.push(proof);
    }
    let mut senders = Vec::new();
    for chunk in cheap.chunks(8) {
        let (url, chunk) = (server.ws_url(), chunk.to_vec());
        senders.push(tokio::spawn(async move {
            let (mut ws, _) = Ws::connect_and_greet(&url).await;
            assert_eq!(opt_in(&mut ws).await, 6);
            for p in chunk {
                let answer = send_proof(&mut ws, p, "flusher", Some(1)).await;
                assert_eq!(answer["accepted"], true, "{answer}");
            }
        }));
    }
    for s in senders {
        s.await.expect("a flushing connection");
    }
    let (mut finder, _) = Ws::connect_and_greet(&server.ws_url()).await;
    assert_eq!(opt_in(&mut finder).await, 6);
    let winning = proof_with_bits(&block, 16, 257, proof + 1);
    let won = send_proof(&mut finder, winning, "flusher", Some(1)).await;
    assert_eq!(won["message"], "New Block Forged", "{won}");
    let paid = rewards_by_id(&server.chain().await);
    assert_eq!(paid.values().sum::<u64>(), PPLNS_REWARD, "{paid:?}");
    // The flusher's work in the window: its block (2^6) and its 1,000 shares (2^6 each), of
    // 2^17; plus the finder's unit. Counted by shares, it would have had everything.
    let work = 1001.0 * 64.0 / 131_072.0;
    let fair = (PPLNS_REWARD - 1) as f64 * work + 1.0;
    let flusher = paid.get("flusher").copied().unwrap_or(0) as f64;
    assert!((flusher - fair).abs() <= 2.0, "flusher got {flusher}, its work is {fair}: {paid:?}");
    assert!(paid.get("honest").copied().unwrap_or(0) > 500_000, "{paid:?}");
}

/// Group commit (issue 19): shares from many connections are stored in batches and each is
/// answered only once its batch is committed, so `kill -9` in the middle of a flood loses none
/// that was acknowledged.
#[test]
fn no_acknowledged_share_is_lost_to_a_kill_during_a_flood() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // 11-bit shares (one below the block's 12): vardiff cannot raise them.
    let options = [
        "--share-start-bits",
        "11",
        "--share-min-bits",
        "11",
        "--share-interval-ms",
        "60000",
        "--proof-rate",
        "100000",
    ];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = spawn_binary_with(&data, ZEROS, &options).expect("server starts");
    let url = format!("ws://{}/ws", server.addr);
    const CONNECTIONS: u64 = 16;
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..CONNECTIONS).map(|_| AtomicU64::new(0)).collect());
    let total = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        for c in 0..CONNECTIONS {
            let (url, acked, total) = (url.clone(), acked.clone(), total.clone());
            tokio::spawn(async move {
                let (mut ws, hello) = Ws::connect_and_greet(&url).await;
                opt_in(&mut ws).await;
                let mut proof = c << 40;
                loop {
                    proof = proof_with_bits(&hello["block"], 11, 12, proof + 1);
                    let answer = send_proof(&mut ws, proof, &format!("c{c}"), Some(1)).await;
                    assert_eq!(answer["accepted"], true, "{answer}");
                    acked[c as usize].fetch_add(1, Ordering::SeqCst);
                    total.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Kill the server in the middle of the flood.
        while total.load(Ordering::SeqCst) < 400 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    drop(server); // kill -9
    let acked: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    runtime.shutdown_background();
    let second = spawn_binary_with(&data, ZEROS, &options).expect("server restarts");
    let body: Value = reqwest::blocking::get(format!("http://{}/workers", second.addr))
        .expect("GET /workers")
        .json()
        .expect("json");
    for (c, acked) in acked.iter().enumerate() {
        let stored = body["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["id"] == format!("c{c}"))
            .map_or(0, |w| w["shares"].as_u64().expect("shares"));
        assert!(stored >= *acked, "c{c}: {acked} acknowledged, {stored} stored: {body}");
    }
}

#[test]
fn clients_read_pplns_units_as_the_server_mints_them() {
    // ws-miner and the dashboard tell a PPLNS pool by a block's rewards adding up to this.
    assert_eq!(protocol::reward::UNITS_PER_BLOCK, pool_server::payout::PPLNS_REWARD);
}

/// A miner that stops reads as idle (0 H/s) after 20 share intervals, instead of keeping its
/// hashrate for the rest of the 120 s window (issue 21).
#[tokio::test]
async fn a_stopped_miner_reads_idle_soon() {
    let settings =
        ShareSettings { interval: Duration::from_millis(100), start_bits: 5, min_bits: 2 };
    let server = Server::start_with(ZEROS, Limits { shares: settings, ..limits(5) }).await;
    let (mut ws, hello) = Ws::connect_and_greet(&server.ws_url()).await;
    opt_in(&mut ws).await;
    let mut proof = 0;
    for _ in 0..3 {
        proof = proof_with_bits(&hello["block"], 5, 12, proof + 1);
        assert_eq!(send_proof(&mut ws, proof, "stopper", Some(1)).await["accepted"], true);
    }
    let rate = |w: &[Value]| w.iter().find(|w| w["id"] == "stopper").map(|w| w["hashrate"].clone());
    let before = workers(&server).await;
    assert!(rate(&before).and_then(|r| r.as_f64()).unwrap_or(0.0) > 0.0, "{before:?}");
    // 20 intervals of 100 ms, and the figures' 250 ms reuse.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = workers(&server).await;
    assert_eq!(rate(&after), Some(json!(0.0)), "{after:?}");
}
