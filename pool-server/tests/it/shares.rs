//! Shares at the WebSocket boundary (issue 12): opting in, share / duplicate / stale / invalid
//! verdicts next to blocks, vardiff raising a fast miner's target, the cut-off for mostly invalid
//! shares, `GET /workers`, shares kept across a restart, and shares across two frontends of one
//! PostgreSQL pool. Connections that do not opt in see nothing new (the rest of the suite).

use std::time::Duration;

use pool_server::serve::Limits;
use pool_server::shares::ShareSettings;
use protocol::share::leading_zero_bits;
use protocol::{ProofChecker, to_python_json};
use serde_json::{Value, json};

use crate::pg;
use crate::support::{Server, Ws, spawn_binary_with};

/// Difficulty 3: a block needs 12 zero bits; shares start at 4.
const ZEROS: u64 = 3;

fn limits(start_bits: u8) -> Limits {
    Limits {
        proof_rate: 1_000_000,
        shares: ShareSettings { interval: Duration::from_secs(1), start_bits, min_bits: 2 },
        ..Limits::default()
    }
}

/// Returns the first proof from `start` whose digest for `block` has `lo..hi` leading zero bits.
fn proof_with_bits(block: &Value, lo: u32, hi: u32, start: u64) -> u64 {
    let checker = ProofChecker::new(&to_python_json(block));
    (start..)
        .find(|p| (lo..hi).contains(&leading_zero_bits(&checker.digest(*p))))
        .expect("a proof exists")
}

async fn opt_in(ws: &mut Ws) -> u64 {
    ws.send_text(json!({"type": "shares"}).to_string()).await;
    loop {
        let frame = ws.recv().await;
        if frame["type"] == "share_target" {
            return frame["bits"].as_u64().expect("bits");
        }
    }
}

async fn send_proof(ws: &mut Ws, proof: u64, id: &str, index: Option<u64>) -> Value {
    let mut msg = json!({"type": "proof", "proof": proof, "id": id});
    if let Some(index) = index {
        msg["index"] = json!(index);
    }
    ws.send_text(msg.to_string()).await;
    loop {
        let frame = ws.recv().await;
        if frame["type"] == "share" || frame["type"] == "result" || frame["type"] == "error" {
            return frame;
        }
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
        ws.send_text(
            json!({"type": "proof", "proof": proof, "id": "fast", "index": 1}).to_string(),
        )
        .await;
        loop {
            let frame = ws.recv().await;
            if frame["type"] == "share" {
                assert_eq!(frame["accepted"], true, "{frame}");
                break;
            }
        }
    }
    let pushed = loop {
        let frame = ws.recv().await;
        if frame["type"] == "share_target" {
            break frame["bits"].as_u64().expect("bits");
        }
    };
    assert!(pushed > target, "the target rose from {target} to {pushed}");
    target = pushed;
    // Below the new target is no longer a share.
    let weak = proof_with_bits(&block, 2, target as u32, proof + 1);
    let answer = send_proof(&mut ws, weak, "fast", Some(1)).await;
    assert_eq!(answer["reason"], "invalid", "{answer}");
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
    let (on_a, on_b) = (workers(&a).await, workers(&b).await);
    assert_eq!(on_a[0]["shares"], 2, "{on_a:?}");
    assert_eq!(on_a[0]["invalid"], 1, "{on_a:?}");
    assert_eq!(
        (on_a[0]["id"].clone(), on_a[0]["shares"].clone()),
        (on_b[0]["id"].clone(), on_b[0]["shares"].clone())
    );
}
