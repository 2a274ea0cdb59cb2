//! Crash safety of the real binary: `kill -9` at random moments while HTTP and WebSocket miners
//! submit, at least 20 times in a row on one data directory; after each restart the chain
//! validates and holds every block that got a success answer. Also random byte corruption of
//! the database file: the server refuses to start with a clear message, or serves exactly the
//! chain it had, never a silently different one.
//!
//! Randomness comes from a seed printed on failure; `CRASH_SEED=<n>` replays a run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use protocol::Difficulty;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Binary, HANG_GUARD, mine, spawn_binary};
use test_support::{Rng, assert_valid_chain, block_hash};

const ZEROS: u64 = 2;
const KILLS: usize = 20;

/// What a miner was told was accepted: the block index and what must be in that block.
#[derive(Debug, Clone)]
enum Ack {
    /// `POST /mine` answered with the whole new block.
    Http(Value),
    /// A WebSocket `result` names the index; the miner knows the proof, its id and the block it
    /// mined on (so the new block's `previous_hash`).
    Ws { index: u64, proof: u64, id: String, previous_hash: String },
}

impl Ack {
    fn index(&self) -> u64 {
        match self {
            Ack::Http(block) => block["index"].as_u64().expect("index"),
            Ack::Ws { index, .. } => *index,
        }
    }

    fn check_in(&self, chain: &[Value]) {
        let i = usize::try_from(self.index()).expect("small index") - 1;
        let block = chain.get(i).unwrap_or_else(|| panic!("acknowledged {self:?} is missing"));
        match self {
            Ack::Http(acked) => assert_eq!(block, acked, "acknowledged block changed"),
            Ack::Ws { proof, id, previous_hash, .. } => {
                assert_eq!(block["proof"], *proof, "{block}");
                assert_eq!(block["previous_hash"], previous_hash.as_str(), "{block}");
                let reward = block["transactions"].as_array().and_then(|t| t.last());
                assert_eq!(
                    reward,
                    Some(&json!({"sender": "0", "recipient": id, "amount": 1})),
                    "{block}"
                );
            }
        }
    }
}

async fn get_chain(addr: std::net::SocketAddr) -> Vec<Value> {
    let body: Value = reqwest::get(format!("http://{addr}/chain"))
        .await
        .expect("GET /chain")
        .json()
        .await
        .expect("json");
    body["chain"].as_array().expect("chain").clone()
}

/// Shared by the miners of one server life.
struct Life {
    acks: Mutex<Vec<Ack>>,
    count: watch::Sender<usize>,
    /// Set just before the kill: errors after it are expected.
    killed: AtomicBool,
    /// An error a miner met while the server was alive.
    failure: Mutex<Option<String>>,
}

impl Life {
    fn ack(&self, ack: Ack) {
        let mut acks = self.acks.lock().expect("not poisoned");
        acks.push(ack);
        self.count.send_replace(acks.len());
    }

    fn fail(&self, what: String) {
        if !self.killed.load(Ordering::SeqCst) {
            self.failure.lock().expect("not poisoned").get_or_insert(what);
        }
    }
}

async fn http_miner(addr: std::net::SocketAddr, id: String, start: u64, life: Arc<Life>) {
    let client = reqwest::Client::new();
    let difficulty = Difficulty::new(ZEROS).expect("valid");
    loop {
        let answer = async {
            let body: Value =
                client.get(format!("http://{addr}/last_block")).send().await?.json().await?;
            let proof = mine(&body["last_block"], difficulty, start);
            let sub = json!({"proof": proof, "id": id});
            client
                .post(format!("http://{addr}/mine"))
                .json(&sub)
                .send()
                .await?
                .json::<Value>()
                .await
        }
        .await;
        match answer {
            Ok(answer) if answer["message"] == "New Block Forged" => {
                life.ack(Ack::Http(answer["block"].clone()));
            }
            Ok(answer) if answer["reason"] == "stale" => {}
            Ok(answer) => return life.fail(format!("unexpected answer {answer}")),
            Err(e) => return life.fail(format!("http miner: {e}")),
        }
    }
}

async fn ws_miner(addr: std::net::SocketAddr, id: String, start: u64, life: Arc<Life>) {
    let difficulty = Difficulty::new(ZEROS).expect("valid");
    let (mut ws, _) = match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
        Ok(ok) => ok,
        Err(e) => return life.fail(format!("ws connect: {e}")),
    };
    let mut latest: Option<Value> = None;
    // The proof in flight and the hash of the block it is for.
    let mut in_flight: Option<(u64, String)> = None;
    let mut last_submitted = 0;
    loop {
        if in_flight.is_none()
            && let Some(block) = &latest
            && block["index"].as_u64().is_some_and(|i| i > last_submitted)
        {
            let index = block["index"].as_u64().expect("index");
            let proof = mine(block, difficulty, start);
            let msg = json!({"type": "proof", "proof": proof, "id": id, "index": index});
            if let Err(e) = ws.send(Message::text(msg.to_string())).await {
                return life.fail(format!("ws send: {e}"));
            }
            in_flight = Some((proof, block_hash(block)));
            last_submitted = index;
        }
        let frame = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return life.fail(format!("ws read: {e}")),
            None => return life.fail("ws closed".into()),
        };
        let msg: Value = serde_json::from_str(frame.as_str()).expect("server sends JSON");
        match msg["type"].as_str() {
            Some("block") => {
                if latest
                    .as_ref()
                    .is_none_or(|b| msg["block"]["index"].as_u64() > b["index"].as_u64())
                {
                    latest = Some(msg["block"].clone());
                }
            }
            Some("result") => {
                let (proof, previous_hash) = in_flight.take().expect("a result answers a proof");
                if msg["accepted"] == true {
                    let index = msg["index"].as_u64().expect("index");
                    life.ack(Ack::Ws { index, proof, id: id.clone(), previous_hash });
                } else if msg["reason"] != "stale" {
                    return life.fail(format!("unexpected result {msg}"));
                }
            }
            _ => return life.fail(format!("unexpected frame {msg}")),
        }
    }
}

fn kill_9(bin: &mut Binary) {
    bin.child.kill().expect("SIGKILL");
    bin.child.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_blocks_survive_repeated_kill_9_under_load() {
    let difficulty = Difficulty::new(ZEROS).expect("valid");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut rng = Rng::from_env("CRASH_SEED");
    let mut acked: BTreeMap<u64, Ack> = BTreeMap::new();
    let mut previous_chain: Vec<Value> = Vec::new();

    for round in 0..KILLS {
        let mut bin = spawn_binary(&data, ZEROS).unwrap_or_else(|(code, log)| {
            panic!("round {round}: refused to restart ({code}): {log}")
        });
        let chain = get_chain(bin.addr).await;
        assert_valid_chain(&chain, difficulty);
        assert!(chain.len() >= previous_chain.len(), "round {round}: the chain shrank");
        assert_eq!(&chain[..previous_chain.len()], &previous_chain[..], "history rewritten");
        for ack in acked.values() {
            ack.check_in(&chain);
        }

        let (count, mut counted) = watch::channel(0usize);
        let life = Arc::new(Life {
            acks: Mutex::new(Vec::new()),
            count,
            killed: AtomicBool::new(false),
            failure: Mutex::new(None),
        });
        let mut miners = Vec::new();
        for m in 0..2u64 {
            let start = rng.below(1 << 40);
            miners.push(tokio::spawn(http_miner(bin.addr, format!("h{m}"), start, life.clone())));
            let start = rng.below(1 << 40);
            miners.push(tokio::spawn(ws_miner(bin.addr, format!("w{m}"), start, life.clone())));
        }
        // Kill once a random number of blocks were acknowledged, a random moment later, while
        // every miner has a submission in flight or about to be.
        let target = 1 + rng.below(6) as usize;
        tokio::time::timeout(HANG_GUARD, counted.wait_for(|n| *n >= target))
            .await
            .expect("miners make progress")
            .expect("counter alive");
        tokio::time::sleep(Duration::from_micros(rng.below(5_000))).await;
        life.killed.store(true, Ordering::SeqCst);
        kill_9(&mut bin);
        for miner in miners {
            let _ = tokio::time::timeout(HANG_GUARD, miner).await.expect("miner stops");
        }
        if let Some(failure) = life.failure.lock().expect("not poisoned").take() {
            panic!("round {round}: {failure}");
        }
        for ack in life.acks.lock().expect("not poisoned").drain(..) {
            let previous = acked.insert(ack.index(), ack.clone());
            assert!(previous.is_none(), "two acknowledgements for block {}", ack.index());
        }
        previous_chain = chain;
    }

    let bin = spawn_binary(&data, ZEROS).expect("restarts after the last kill");
    let chain = get_chain(bin.addr).await;
    assert_valid_chain(&chain, difficulty);
    assert!(acked.len() >= KILLS, "every round acknowledged at least one block");
    eprintln!(
        "{KILLS} kills: {} acknowledged blocks, chain of {}, all present",
        acked.len(),
        chain.len()
    );
    for ack in acked.values() {
        ack.check_in(&chain);
    }
}

/// Makes a stopped database with a few blocks and returns its chain.
async fn stopped_chain(data: &Path) -> Vec<Value> {
    let bin = spawn_binary(data, ZEROS).expect("server starts");
    let client = reqwest::Client::new();
    let difficulty = Difficulty::new(ZEROS).expect("valid");
    for n in 0..4 {
        let body: Value = reqwest::get(format!("http://{}/last_block", bin.addr))
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        let proof = mine(&body["last_block"], difficulty, 0);
        client
            .post(format!("http://{}/mine", bin.addr))
            .json(&json!({"proof": proof, "id": format!("m{n}")}))
            .send()
            .await
            .expect("POST /mine");
        client
            .post(format!("http://{}/transactions/new", bin.addr))
            .json(&json!({"sender": "a", "recipient": "b", "amount": n + 1}))
            .send()
            .await
            .expect("POST /transactions/new");
    }
    let chain = get_chain(bin.addr).await;
    let mut bin = bin;
    // SIGTERM: a clean stop checkpoints the WAL into the main file.
    let pid = bin.child.id().to_string();
    assert!(
        std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success()
    );
    assert!(bin.child.wait().expect("wait").success());
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_corruption_is_refused_or_harmless_never_a_different_chain() {
    let mut rng = Rng::from_env("CRASH_SEED");
    let pristine = tempfile::tempdir().expect("tempdir");
    let chain = stopped_chain(pristine.path()).await;
    assert_eq!(chain.len(), 5);
    let db = std::fs::read(pristine.path().join("chain.sqlite3")).expect("db file");
    let (mut refused, mut served) = (0, 0);
    for round in 0..30 {
        let dir = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(pristine.path()).expect("ls") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
        let mut bytes = db.clone();
        let flips = 1 + rng.below(4);
        let mut at = Vec::new();
        for _ in 0..flips {
            // Half the flips land past the 100-byte header, where the rows live.
            let pos = if rng.below(2) == 0 {
                rng.below(bytes.len() as u64)
            } else {
                100 + rng.below(bytes.len() as u64 - 100)
            } as usize;
            bytes[pos] ^= 1 << rng.below(8);
            at.push(pos);
        }
        std::fs::write(dir.path().join("chain.sqlite3"), &bytes).expect("write");
        match spawn_binary(dir.path(), ZEROS) {
            Err((code, log)) => {
                refused += 1;
                assert_ne!(code, 0, "round {round} (flips at {at:?}): {log}");
                assert!(!log.contains("panicked"), "round {round} (flips at {at:?}): {log}");
                assert!(
                    log.contains("chain.sqlite3") || log.contains("block"),
                    "round {round} (flips at {at:?}): the refusal does not say what is wrong: {log}"
                );
            }
            Ok(bin) => {
                served += 1;
                let got = get_chain(bin.addr).await;
                assert_eq!(
                    got, chain,
                    "round {round} (flips at {at:?}): a silently different chain"
                );
            }
        }
    }
    eprintln!("corrupted databases: {refused} refused, {served} served the unchanged chain");
}
