//! Hundreds of valid proofs for one block at once, over WebSocket and HTTP: exactly one wins.

use futures_util::future::join_all;
use serde_json::{Value, json};

use pool_server::serve::Limits;

use crate::support::{Server, Ws, mine};
use test_support::assert_one_winner;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_many_concurrent_valid_proofs_wins() {
    const WS_CLIENTS: usize = 8;
    const PER_WS: usize = 20;
    const HTTP: usize = 140;
    // Every client comes from 127.0.0.1: lift the per-address caps above the 148 connections and
    // their 300 proofs at once.
    let limits = Limits { max_conns_per_ip: 1_000, proof_rate: 1_000, ..Limits::default() };
    let server = Server::start_with(1, limits).await;
    let genesis = server.last_block().await;

    // Proofs all valid for block 1. Each names `index: 1`, so once block 2 exists every other
    // one is stale even if it happens to be valid for block 2 as well.
    let mut proofs = Vec::new();
    let mut next = 0;
    while proofs.len() < WS_CLIENTS * PER_WS + HTTP {
        let p = mine(&genesis, server.difficulty, next);
        proofs.push(p);
        next = p + 1;
    }
    let (ws_proofs, http_proofs) = proofs.split_at(WS_CLIENTS * PER_WS);

    let mut clients = Vec::new();
    for _ in 0..WS_CLIENTS {
        clients.push(Ws::connect_and_greet(&server.ws_url()).await.0);
    }
    let ws_tasks = clients.into_iter().zip(ws_proofs.chunks(PER_WS)).enumerate().map(
        |(n, (mut ws, chunk))| {
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                // Send them all before reading, so they really are in flight together.
                for p in &chunk {
                    let msg =
                        json!({"type": "proof", "proof": p, "id": format!("ws-{n}"), "index": 1});
                    ws.send_text(msg.to_string()).await;
                }
                let mut results = Vec::new();
                for _ in &chunk {
                    results.push(ws.recv_result().await);
                }
                results
            })
        },
    );
    let client = reqwest::Client::new();
    let http_tasks = http_proofs.iter().enumerate().map(|(n, p)| {
        let req = client
            .post(server.url("/mine"))
            .json(&json!({"proof": p, "id": format!("http-{n}"), "index": 1}));
        tokio::spawn(async move {
            let body: Value = req.send().await.expect("POST /mine").json().await.expect("json");
            body
        })
    });
    let (ws_results, http_results) = tokio::join!(join_all(ws_tasks), join_all(http_tasks));

    let answers: Vec<Value> = ws_results
        .into_iter()
        .flat_map(|r| r.expect("ws task"))
        .chain(http_results.into_iter().map(|r| r.expect("http task")))
        .collect();
    assert_eq!(answers.len(), proofs.len());
    assert_one_winner(&answers);
    assert_eq!(server.chain().await.len(), 2);
}
