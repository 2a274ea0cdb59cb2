//! The real binary: every acknowledged block survives `kill -9`; SIGTERM stops it cleanly; a
//! corrupt database is refused with a clear message.

use std::path::Path;
use std::process::Command;

use protocol::{Block, Difficulty};
use serde_json::{Value, json};

use crate::support::{Binary, spawn_binary};
use test_support::assert_valid_chain;

const ZEROS: u64 = 2;

fn get(addr: &std::net::SocketAddr, path: &str) -> Value {
    blocking_client().get(format!("http://{addr}{path}")).send().expect("GET").json().expect("json")
}

fn blocking_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

/// Wins the current block of the running binary; returns the acknowledged block.
fn forge(bin: &Binary, id: &str) -> Value {
    bin.forge(ZEROS, id)
}

fn sigterm(bin: &mut Binary) -> std::process::ExitStatus {
    let pid = bin.child.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success();
    assert!(ok);
    bin.child.wait().expect("wait")
}

#[test]
fn acknowledged_blocks_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut bin = spawn_binary(&data, ZEROS).expect("server starts");
    // A miner keeps submitting from another thread, so the kill lands while a request is in
    // flight; only answers it received count as acknowledged.
    let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (miner_acks, addr) = (acks.clone(), bin.addr);
    let miner = std::thread::spawn(move || {
        let d = Difficulty::new(ZEROS).expect("ok");
        for n in 0.. {
            let Ok(resp) = blocking_client().get(format!("http://{addr}/last_block")).send() else {
                return;
            };
            let Ok(body) = resp.json::<Value>() else { return };
            let proof = crate::support::mine(&body["last_block"], d, 0);
            let answer = blocking_client()
                .post(format!("http://{addr}/mine"))
                .json(&json!({"proof": proof, "id": format!("miner-{n}")}))
                .send()
                .and_then(|r| r.json::<Value>());
            match answer {
                Ok(a) if a["message"] == "New Block Forged" => {
                    miner_acks.lock().expect("lock").push(a["block"].clone())
                }
                Ok(a) => panic!("unexpected answer {a}"),
                Err(_) => return,
            }
        }
    });
    while acks.lock().expect("lock").len() < 25 {
        std::thread::yield_now();
    }
    bin.child.kill().expect("SIGKILL");
    bin.child.wait().expect("wait");
    miner.join().expect("miner thread");
    drop(bin);
    let acknowledged = acks.lock().expect("lock").clone();

    let bin = spawn_binary(&data, ZEROS).expect("server restarts on the same data");
    let chain = get(&bin.addr, "/chain")["chain"].as_array().expect("chain").clone();
    // Genesis plus every acknowledged block; the one request in flight at the kill may have been
    // committed without its answer reaching the miner, so one more block is allowed, never fewer.
    assert!(
        (acknowledged.len() + 1..=acknowledged.len() + 2).contains(&chain.len()),
        "{} acknowledged, {} stored",
        acknowledged.len(),
        chain.len()
    );
    for block in &acknowledged {
        let index = block["index"].as_u64().expect("index") as usize;
        assert_eq!(&chain[index - 1], block, "block {index} survived intact");
    }
    assert_valid_chain(&chain, Difficulty::new(ZEROS).expect("in range"));
    // It carries on from where it was.
    let next = forge(&bin, "after-restart");
    assert_eq!(next["index"], chain.len() as u64 + 1);
}

#[test]
fn sigterm_stops_cleanly_and_another_difficulty_keeps_old_blocks_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut bin = spawn_binary(&data, ZEROS).expect("server starts");
    forge(&bin, "a");
    let status = sigterm(&mut bin);
    assert!(status.success(), "{status}");
    // Blocks mined at difficulty 2 stay valid when the server restarts at 3.
    let bin = spawn_binary(&data, 3).expect("restarts at another difficulty");
    let body = get(&bin.addr, "/last_block");
    assert_eq!(body["difficulty"], 3);
    assert_eq!(body["last_block"]["index"], 2);
}

fn refuses(data: &Path, needles: &[&str]) {
    match spawn_binary(data, ZEROS) {
        Ok(_) => panic!("the server started on a corrupt database"),
        Err((code, log)) => {
            assert_ne!(code, 0, "{log}");
            assert!(!log.contains("panicked"), "{log}");
            for needle in needles {
                assert!(log.contains(needle), "{needle:?} not in {log}");
            }
        }
    }
}

/// Makes a stopped database holding three blocks.
fn three_blocks(data: &Path) {
    let mut bin = spawn_binary(data, ZEROS).expect("server starts");
    forge(&bin, "a");
    forge(&bin, "b");
    assert!(sigterm(&mut bin).success());
}

#[test]
fn refuses_a_garbage_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("chain.sqlite3"), vec![0xa5u8; 10_000]).expect("write");
    refuses(dir.path(), &["chain.sqlite3", "corrupt"]);
}

#[test]
fn refuses_a_truncated_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_blocks(dir.path());
    let file = dir.path().join("chain.sqlite3");
    let len = std::fs::metadata(&file).expect("db file").len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).expect("open");
    f.set_len(len / 2).expect("truncate");
    drop(f);
    refuses(dir.path(), &["chain.sqlite3"]);
}

#[test]
fn refuses_a_tampered_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_blocks(dir.path());
    let conn = rusqlite::Connection::open(dir.path().join("chain.sqlite3")).expect("open");
    let body: String =
        conn.query_row("SELECT body FROM blocks WHERE idx = 2", [], |r| r.get(0)).expect("row");
    let forged = body.replace("\"recipient\":\"a\"", "\"recipient\":\"mallory\"");
    assert_ne!(body, forged);
    conn.execute("UPDATE blocks SET body = ?1 WHERE idx = 2", [forged]).expect("update");
    drop(conn);
    refuses(dir.path(), &["block 2", "altered"]);
}

#[test]
fn refuses_a_broken_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_blocks(dir.path());
    let conn = rusqlite::Connection::open(dir.path().join("chain.sqlite3")).expect("open");
    // Rewrites block 2 and its recorded hash consistently: only block 3's link can tell.
    let body: String =
        conn.query_row("SELECT body FROM blocks WHERE idx = 2", [], |r| r.get(0)).expect("row");
    let mut block: Block = serde_json::from_str(&body).expect("block");
    block.transactions[0].recipient = "mallory".into();
    conn.execute(
        "UPDATE blocks SET body = ?1, hash = ?2 WHERE idx = 2",
        [serde_json::to_string(&block).expect("json"), block.hash().to_hex()],
    )
    .expect("update");
    drop(conn);
    refuses(dir.path(), &["block 3", "previous_hash"]);
}
