//! Real `python3` course miners (`tests/compat/miner.py`) against a real server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{HANG_GUARD, Server, line_channel, mine};

/// Course difficulty is 6; 3 keeps Python's hashing instant.
const ZEROS: u64 = 3;

fn miner_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat/miner.py")
}

/// A running course miner whose stdout lines arrive on `lines`.
struct PyMiner {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
    _dir: TempDir,
}

impl PyMiner {
    /// Starts the miner in a fresh directory whose `my_id.txt` holds `id` and a newline, as
    /// the course's students write it.
    fn start(node: &str, id: &str) -> PyMiner {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("my_id.txt"), format!("{id}\n")).expect("my_id.txt");
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(miner_py())
            .args([node, &ZEROS.to_string()])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let lines = line_channel(child.stdout.take().expect("piped"));
        PyMiner { child, lines, output: Vec::new(), _dir: dir }
    }

    /// Takes in every line printed so far without waiting.
    fn poll(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.output.push(line);
        }
    }

    /// Kills the miner and takes in everything it printed before dying.
    fn finish(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread forwards the rest of the pipe, then hangs up.
        while let Ok(line) = self.lines.recv_timeout(HANG_GUARD) {
            self.output.push(line);
        }
    }

    fn coins(&self) -> usize {
        self.output.iter().filter(|l| l.starts_with("Total coins mined: ")).count()
    }

    /// Waits until the miner has printed `n` coins.
    fn wait_for_coins(&mut self, n: usize) {
        let deadline = std::time::Instant::now() + HANG_GUARD;
        while self.coins() < n {
            match self.lines.recv_timeout(HANG_GUARD) {
                Ok(line) => self.output.push(line),
                Err(e) => panic!("miner stopped ({e}) after: {:?}", self.output),
            }
            assert!(std::time::Instant::now() < deadline, "hang: {:?}", self.output);
        }
    }
}

impl Drop for PyMiner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn winners(chain: &[Value]) -> Vec<String> {
    chain[1..].iter().map(|b| test_support::rewarded(b).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_course_miner_earns_coins() {
    let server = Server::start(ZEROS).await;
    let node = server.url("");
    let mut miner = tokio::task::spawn_blocking(move || {
        let mut miner = PyMiner::start(&node, "alice");
        miner.wait_for_coins(3);
        miner
    })
    .await
    .expect("miner task");
    let _ = miner.child.kill();
    assert_eq!(miner.output[0], "ID is alice", "it prints its id with the newline");
    let chain = server.chain().await;
    let won = winners(&chain).iter().filter(|w| *w == "alice").count();
    assert!(won >= 3, "the chain shows alice's coins, id trimmed: {won}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_course_miners_get_one_winner_per_block() {
    let server = Server::start(ZEROS).await;
    let node = server.url("");
    let (a, b) = tokio::task::spawn_blocking(move || {
        let mut a = PyMiner::start(&node, "alice");
        let mut b = PyMiner::start(&node, "bob");
        let deadline = std::time::Instant::now() + HANG_GUARD;
        while a.coins() + b.coins() < 8 {
            a.poll();
            b.poll();
            assert!(std::time::Instant::now() < deadline, "{:?} {:?}", a.output, b.output);
            std::thread::yield_now();
        }
        a.finish();
        b.finish();
        (a, b)
    })
    .await
    .expect("miners task");
    let (coins_a, coins_b) = (a.coins(), b.coins());
    let chain = server.chain().await;
    let winners = winners(&chain);
    let won_a = winners.iter().filter(|w| *w == "alice").count();
    let won_b = winners.iter().filter(|w| *w == "bob").count();
    assert_eq!(won_a + won_b, winners.len());
    // Every coin a miner was told about is a block in the chain (a last one may be in flight
    // when the miner is killed).
    assert!(coins_a <= won_a && won_a <= coins_a + 1, "alice {coins_a} vs {won_a}");
    assert!(coins_b <= won_b && won_b <= coins_b + 1, "bob {coins_b} vs {won_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mines_after_a_block_won_by_a_non_ascii_id() {
    let server = Server::start(ZEROS).await;
    let genesis = server.last_block().await;
    let proof = mine(&genesis, server.difficulty, 0);
    let answer = server.mine_http(proof, "José 🚀").await;
    assert_eq!(answer["message"], "New Block Forged");
    let last = server.last_block().await;
    assert_eq!(last["transactions"], json!([{"sender": "0", "recipient": "José 🚀", "amount": 1}]));

    let node = server.url("");
    let mut miner = tokio::task::spawn_blocking(move || {
        let mut miner = PyMiner::start(&node, "alice");
        miner.wait_for_coins(2);
        miner
    })
    .await
    .expect("miner task");
    let _ = miner.child.kill();
    let chain = server.chain().await;
    let winners = winners(&chain);
    assert_eq!(winners[0], "José 🚀");
    assert_eq!(winners[1], "alice", "python mined on the block with the non-ASCII id");
}
