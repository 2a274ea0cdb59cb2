//! Course-style Flask servers (HTTP only, `tests/flask/server.py`): the miner falls back from
//! WebSocket to the course HTTP protocol, finds the block in every common answer shape, detects
//! success however the server words it, picks the bytes dialect, survives HTML error pages, and
//! its proofs land on each chain.

use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use ws_miner::job::Dialect;
use ws_miner::{Event, Outcome};

/// A running `server.py`, killed when dropped.
pub struct Flask {
    child: Child,
    pub addr: SocketAddr,
}

impl Flask {
    pub async fn start(args: &[&str]) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flask/server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs tests/flask/server.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let port = within("the Flask server's port", async {
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            })
            .await
        })
        .await
        .expect("reader thread")
        .expect("read the port line");
        let port: u16 = match port.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("server.py printed {port:?} instead of its port (is flask installed?)")
            }
        };
        Flask { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    pub async fn chain(&self) -> Vec<Value> {
        get_chain(self.addr).await
    }
}

impl Drop for Flask {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mines `blocks` blocks on a Flask server started with `args`; checks that each accepted
/// proof is on the chain, rewarding our id, and returns the events.
async fn mine_course(args: &[&str], zeros: u64, blocks: usize) -> Vec<Event> {
    let flask = Flask::start(args).await;
    let mut cfg = config(http_endpoint(flask.addr), "carol");
    cfg.zeros = protocol::Difficulty::new(zeros).expect("in range");
    // A course server has no `/balance/{id}`: the miner asks, and says nothing about it.
    cfg.server_balance = true;
    let mut miner = MinerRun::start(cfg);
    let mut proofs = Vec::new();
    for _ in 0..blocks {
        let (index, block, proof) = miner
            .wait_for("an accepted proof", |e| match e {
                Event::Accepted { index, block, proof, .. } => Some((*index, *block, *proof)),
                _ => None,
            })
            .await;
        let index = index.expect("course blocks have an index");
        assert_eq!(block, Some(index + 1), "a win is named by the block it forged");
        proofs.push((index, proof));
    }
    let (outcome, events) = miner.stop().await;
    assert_eq!(outcome, Outcome::Interrupted);
    for e in &events {
        println!("{}", e.to_plain());
    }
    assert!(
        events.iter().any(|e| matches!(e, Event::FallbackToHttp { .. })),
        "the miner tried /ws first and fell back"
    );
    let chain = flask.chain().await;
    for (index, proof) in proofs {
        // The block after the one we mined carries our proof and rewards us.
        let next = chain.iter().find(|b| b["index"] == index + 1).expect("the next block exists");
        assert_eq!(next["proof"], proof, "block {} carries our proof", index + 1);
        assert_eq!(next["transactions"][0]["recipient"], "carol");
    }
    assert_eq!(summary(&events).coins, blocks as u64);
    assert_eq!(summary(&events).server_coins, None);
    assert!(!events.iter().any(|e| matches!(e, Event::Balance { .. })));
    events
}

#[tokio::test]
async fn course_readme_shape_last_block() {
    mine_course(&["--shape", "last_block"], 3, 2).await;
}

#[tokio::test]
async fn course_bare_block() {
    mine_course(&["--shape", "bare"], 3, 2).await;
}

#[tokio::test]
async fn course_block_key_with_difficulty_beats_zeros() {
    // --zeros says 6; the server's answer says 3, and wins.
    mine_course(&["--shape", "block", "--difficulty", "3"], 6, 2).await;
}

#[tokio::test]
async fn course_camel_case_keys() {
    mine_course(&["--shape", "camel"], 3, 2).await;
}

#[tokio::test]
async fn success_in_other_words_and_status_codes() {
    mine_course(&["--message", "new block forged!", "--status", "201"], 3, 1).await;
    mine_course(&["--message", "New Block Forged", "--status", "400"], 3, 1).await;
    // No word of success at all: only the chain shows the proof landed.
    mine_course(&["--message", "ok", "--status", "200"], 3, 1).await;
}

#[tokio::test]
async fn bytes_dialect_detected_from_the_chain() {
    let events = mine_course(&["--dialect", "bytes", "--premine", "2"], 3, 2).await;
    let decided = events.iter().find_map(|e| match e {
        Event::Dialect { dialect, .. } => Some(*dialect),
        _ => None,
    });
    assert_eq!(decided, Some(Dialect::Bytes));
    assert_eq!(summary(&events).rejected_invalid, 0, "detected before the first proof");
}

#[tokio::test]
async fn bytes_dialect_learned_from_a_rejection_on_a_fresh_chain() {
    // Only the genesis block: nothing to detect from, so the first (json) proof is rejected.
    let events = mine_course(&["--dialect", "bytes"], 3, 2).await;
    assert!(events.iter().any(|e| matches!(e, Event::Dialect { dialect: Dialect::Bytes, .. })));
    assert!(summary(&events).rejected_invalid <= 1);
}

#[tokio::test]
async fn html_error_pages_are_survived() {
    let events = mine_course(&["--html-errors", "2"], 3, 1).await;
    let failures: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::ConnectFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2, "{failures:#?}");
    assert!(failures.iter().all(|f| f.contains("HTTP 500") && f.contains("not JSON")));
}

#[tokio::test]
async fn a_course_server_restart_is_survived() {
    let flask = Flask::start(&[]).await;
    let addr = flask.addr;
    let mut miner = MinerRun::start({
        let mut cfg = config(http_endpoint(addr), "carol");
        cfg.zeros = protocol::Difficulty::new(3).expect("in range");
        cfg
    });
    miner.wait_for("a first win", |e| matches!(e, Event::Accepted { .. }).then_some(())).await;
    drop(flask);
    let reason = miner
        .wait_for("the poll to fail", |e| match e {
            Event::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
    println!("server gone: {reason}");
    let port = addr.port().to_string();
    let flask = Flask::start(&["--port", &port]).await;
    // A fresh chain: our next win lands on it.
    let index = miner
        .wait_for("a win on the new chain", |e| match e {
            Event::Accepted { index, .. } => Some(*index),
            _ => None,
        })
        .await;
    let (_, events) = miner.stop().await;
    let chain = flask.chain().await;
    let index = index.expect("an index");
    let next = chain.iter().find(|b| b["index"] == index + 1).expect("our block on the new chain");
    assert_eq!(next["transactions"][0]["recipient"], "carol", "{events:#?}");
}
