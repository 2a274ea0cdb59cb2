//! The dashboard's routes and data: the embedded page, `/balances`, `/balance/{id}`,
//! `/metrics`, and the `stats` request over WebSocket.

use protocol::{Balance, Block, BlockSummary, ServerMessage, to_python_json};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::support::{Server, Ws, mine};

async fn get(server: &Server, path: &str) -> reqwest::Response {
    reqwest::get(server.url(path)).await.expect("GET")
}

async fn get_json(server: &Server, path: &str) -> (StatusCode, Value) {
    let res = get(server, path).await;
    let status = res.status();
    (status, res.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn serves_the_embedded_page_uncached() {
    let server = Server::start(2).await;
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "/dashboard.js"),
        ("/dashboard.css", "text/css; charset=utf-8", "--accent"),
        ("/dashboard.js", "text/javascript; charset=utf-8", "'/ws'"),
    ] {
        let res = get(&server, path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers()[CONTENT_TYPE], content_type, "{path}");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-cache", "{path}");
        assert!(res.text().await.expect("body").contains(needle), "{path} has {needle}");
    }
}

#[tokio::test]
async fn balances_count_rewards_and_transfers_highest_first() {
    let server = Server::start(2).await;
    let (status, body) = get_json(&server, "/balances").await;
    let empty = json!({ "length": 0, "from": 1, "next": null, "balances": [] });
    assert_eq!((status, body), (StatusCode::OK, empty));

    server.forge("alice\n").await;
    server.forge("bob").await;
    server.forge("José 🚀").await;
    let res = reqwest::Client::new()
        .post(server.url("/transactions/new"))
        .json(&json!({ "sender": "alice", "recipient": "carol", "amount": 3 }))
        .send()
        .await
        .expect("POST /transactions/new");
    assert_eq!(res.status(), StatusCode::CREATED);
    // Pending transfers count only once a block holds them.
    assert_eq!(get_json(&server, "/balance/carol").await.1, json!({ "id": "carol", "coins": 0 }));
    server.forge("bob").await;

    let (status, body) = get_json(&server, "/balances").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "length": 4, "from": 1, "next": null, "balances": [
            { "id": "carol", "coins": 3 },
            { "id": "bob", "coins": 2 },
            { "id": "José 🚀", "coins": 1 },
            { "id": "alice", "coins": -2 },
        ]})
    );
    for (path, id, coins) in [
        ("/balance/bob", "bob", 2),
        ("/balance/alice", "alice", -2),
        ("/balance/Jos%C3%A9%20%F0%9F%9A%80", "José 🚀", 1),
        ("/balance/%20bob%0A", "bob", 2),
        ("/balance/nobody", "nobody", 0),
    ] {
        assert_eq!(
            get_json(&server, path).await,
            (StatusCode::OK, json!({ "id": id, "coins": coins }))
        );
    }
    let (status, body) = get_json(&server, "/balance/%FF").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// Reads one sample from the Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

async fn metrics(server: &Server) -> String {
    let res = get(server, "/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_TYPE], "text/plain; version=0.0.4; charset=utf-8");
    res.text().await.expect("body")
}

#[tokio::test]
async fn metrics_move_with_blocks_proofs_and_connections() {
    let server = Server::start(2).await;
    let before = metrics(&server).await;
    assert_eq!(sample(&before, "pool_blocks_total"), 0.0);
    assert_eq!(sample(&before, "pool_chain_length"), 1.0);
    assert_eq!(sample(&before, "pool_difficulty"), 2.0);
    assert_eq!(sample(&before, "pool_ws_clients"), 0.0);
    assert_eq!(sample(&before, r#"pool_proofs_total{result="accepted"}"#), 0.0);
    assert!(sample(&before, "pool_uptime_seconds") >= 0.0);
    assert!(before.contains("# TYPE pool_broadcast_fanout_seconds histogram"));

    let (mut ws, _) = Ws::connect_and_greet(&server.ws_url()).await;
    let genesis = server.last_block().await;
    let proof = mine(&genesis, server.difficulty, 0);
    assert_eq!(server.mine_http(proof, "alice").await["message"], "New Block Forged");
    let block2 = ws.recv_block(2).await;
    // The writer records the fan-out right after sending the block; a reply it sends next
    // proves that happened.
    ws.send_text(r#"{"type":"last_block"}"#).await;
    assert_eq!(ws.recv_block(2).await, block2);

    // The same proof again is stale (valid for a block already won); one valid for neither
    // block is invalid.
    assert_eq!(server.mine_http(proof, "bob").await["reason"], "stale");
    let (s1, s2) = (to_python_json(&genesis), to_python_json(&block2));
    let bad = (0..)
        .find(|p| {
            !server.difficulty.is_valid_proof(&s1, *p) && !server.difficulty.is_valid_proof(&s2, *p)
        })
        .expect("an invalid proof exists");
    assert_eq!(server.mine_http(bad, "bob").await["reason"], "invalid");
    assert_eq!(server.mine_http(bad, "carol").await["reason"], "invalid");

    let after = metrics(&server).await;
    assert_eq!(sample(&after, "pool_blocks_total"), 1.0);
    assert_eq!(sample(&after, "pool_chain_length"), 2.0);
    assert_eq!(sample(&after, r#"pool_proofs_total{result="accepted"}"#), 1.0);
    assert_eq!(sample(&after, r#"pool_proofs_total{result="stale"}"#), 1.0);
    assert_eq!(sample(&after, r#"pool_proofs_total{result="invalid"}"#), 2.0);
    assert_eq!(sample(&after, "pool_ws_clients"), 1.0);
    assert_eq!(sample(&after, "pool_broadcast_fanout_seconds_count"), 1.0);
    assert_eq!(sample(&after, r#"pool_broadcast_fanout_seconds_bucket{le="+Inf"}"#), 1.0);
}

#[tokio::test]
async fn stats_answer_the_asking_connection_only() {
    let server = Server::start(2).await;
    let (mut dashboard, _) = Ws::connect_and_greet(&server.ws_url()).await;
    let (mut miner, _) = Ws::connect_and_greet(&server.ws_url()).await;
    server.forge("alice").await;
    server.forge("bob").await;
    server.forge("alice").await;
    dashboard.recv_block(4).await;

    dashboard.send_text(r#"{"type":"stats"}"#).await;
    let reply = dashboard.recv().await;
    let parsed = ServerMessage::from_json(&reply.to_string()).expect("a well-formed stats message");
    let ServerMessage::Stats {
        chain_length,
        difficulty,
        miners,
        blocks_per_minute,
        hashrate,
        balances,
        recent,
        workers,
    } = parsed
    else {
        panic!("expected stats, got {reply}");
    };
    assert_eq!(chain_length, 4);
    assert!(workers.is_empty(), "nobody mined shares: {reply}");
    assert_eq!(difficulty, server.difficulty);
    assert_eq!(miners, 2);
    assert!(blocks_per_minute > 0.0, "{reply}");
    assert_eq!(hashrate, blocks_per_minute * 256.0 / 60.0);
    assert_eq!(
        balances,
        vec![Balance { id: "alice".into(), coins: 2 }, Balance { id: "bob".into(), coins: 1 }]
    );
    // Summaries, newest first: no transactions, each older block's hash from its successor.
    let chain = server.chain().await;
    let newest_first: Vec<BlockSummary> = chain
        .iter()
        .rev()
        .map(|b| {
            let block: Block = serde_json::from_value(b.clone()).expect("a block");
            let hash = chain
                .get(usize::try_from(block.index).expect("small"))
                .map(|next| next["previous_hash"].as_str().expect("a string").to_owned());
            BlockSummary::of(&block, hash)
        })
        .collect();
    assert_eq!(recent, newest_first);
    assert_eq!(recent[0].hash, None);
    assert_eq!(recent[0].winner.as_deref(), Some("alice"));
    assert_eq!(recent[0].transaction_count, 1);
    assert!(reply["recent"][0].get("transactions").is_none(), "{reply}");

    // The other connection got no stats: after block 4 its next frame is the next broadcast.
    miner.recv_block(4).await;
    server.forge("bob").await;
    let next = miner.recv().await;
    assert_eq!((&next["type"], &next["block"]["index"]), (&json!("block"), &json!(5)), "{next}");
}
