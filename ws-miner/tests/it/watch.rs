//! `ws-miner watch` and `scripts/watch` against a real pool-server: one line per pushed block
//! (ids printed without terminal escapes), `--json` frames, a reconnect after the server
//! restarts (the block already printed is not printed again), `wss://` with `--ca` (and one
//! clear line without it), and exit 130 on Ctrl-C.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::{Pool, solves, within};

const BIN: &str = env!("CARGO_BIN_EXE_ws-miner");
const ZEROS: u64 = 2;

/// A watcher process whose lines can be awaited.
struct Watcher {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Watcher {
    fn start(program: &str, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .env("WS_MINER", BIN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the watcher starts");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Watcher { child, lines }
    }

    async fn line(&mut self) -> String {
        within("a line from the watcher", self.lines.next_line())
            .await
            .expect("stdout readable")
            .expect("the watcher is still running")
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit code.
    async fn interrupt(mut self) -> Option<i32> {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().await;
        assert!(sent.is_ok_and(|s| s.success()), "kill -INT {pid}");
        within("the watcher to exit", self.child.wait()).await.expect("wait").code()
    }
}

/// Forges the next block on `pool` for `id` over the course HTTP API; returns it.
async fn forge(pool: &Pool, id: &str) -> Value {
    let client = reqwest::Client::new();
    let last: Value = within("GET /last_block", async {
        client.get(format!("http://{}/last_block", pool.addr)).send().await?.json().await
    })
    .await
    .expect("GET /last_block");
    let block = &last["last_block"];
    let proof = (0u64..).find(|p| solves(block, ZEROS, &json!(p))).expect("a proof");
    let answer: Value = within("POST /mine", async {
        let body = json!({ "proof": proof, "id": id });
        client.post(format!("http://{}/mine", pool.addr)).json(&body).send().await?.json().await
    })
    .await
    .expect("POST /mine");
    assert_eq!(answer["message"], "New Block Forged", "{answer}");
    answer["block"].clone()
}

#[tokio::test]
async fn one_line_per_block_then_exit_130_on_ctrl_c() {
    let pool = Pool::start(ZEROS).await;
    let url = format!("ws://{}/ws", pool.addr);
    let mut watcher = Watcher::start(BIN, &["watch", &url]);
    let first = watcher.line().await;
    assert!(first.starts_with("#1  genesis  proof 100  (current block, forged "), "{first}");

    let block = forge(&pool, "José 🚀").await;
    let line = watcher.line().await;
    let expected = format!("#2  won by José 🚀  proof {}  +", block["proof"]);
    assert!(line.starts_with(&expected) && line.ends_with('s'), "{line:?} vs {expected:?}");

    assert_eq!(watcher.interrupt().await, Some(130));
    pool.stop().await;
}

#[tokio::test]
async fn json_prints_each_frame_as_one_line() {
    let pool = Pool::start(ZEROS).await;
    // An http:// URL means the pool's /ws.
    let url = format!("http://{}", pool.addr);
    let mut watcher = Watcher::start(BIN, &["watch", "--json", &url]);
    let first: Value = serde_json::from_str(&watcher.line().await).expect("JSON");
    assert_eq!(
        (first["type"].as_str(), first["block"]["index"].as_u64()),
        (Some("block"), Some(1))
    );
    assert_eq!(first["difficulty"].as_u64(), Some(ZEROS));
    let block = forge(&pool, "j").await;
    let second: Value = serde_json::from_str(&watcher.line().await).expect("JSON");
    assert_eq!(second["block"], block);
    assert_eq!(watcher.interrupt().await, Some(130));
    pool.stop().await;
}

#[tokio::test]
async fn scripts_watch_runs_the_watcher_and_reconnects_after_a_restart() {
    let pool = Pool::start(ZEROS).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/watch");
    let url = format!("ws://{}/ws", pool.addr);
    let mut watcher = Watcher::start(script.to_str().expect("a UTF-8 path"), &[&url]);
    assert!(watcher.line().await.starts_with("#1  genesis  proof 100"));
    forge(&pool, "before").await;
    assert!(watcher.line().await.starts_with("#2  won by before  proof "));

    let (addr, data) = pool.stop_keeping().await;
    let pool = Pool::restart(ZEROS, addr, data).await;
    // The greeting after the reconnect repeats block 2: not printed again; block 3 follows it.
    forge(&pool, "after").await;
    let line = watcher.line().await;
    assert!(line.starts_with("#3  won by after  proof ") && line.contains("  +"), "{line}");

    assert_eq!(watcher.interrupt().await, Some(130));
    pool.stop().await;
}

#[tokio::test]
async fn wss_with_the_ca_and_one_clear_line_without_it() {
    let ca = crate::tls::TestCa::new();
    let pool = Pool::start_tls(ZEROS, &ca.cert, &ca.key).await;
    let url = format!("wss://127.0.0.1:{}/ws", pool.addr.port());
    let ca_file = ca.ca.to_str().expect("a UTF-8 path");
    let mut watcher = Watcher::start(BIN, &["watch", "--ca", ca_file, &url]);
    let first = watcher.line().await;
    assert!(first.starts_with("#1  genesis  proof 100  "), "{first}");
    assert_eq!(watcher.interrupt().await, Some(130));

    // Without --ca: the certificate is refused in one line, then retried.
    let mut untrusting = Command::new(BIN)
        .args(["watch", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the watcher starts");
    let mut errors = BufReader::new(untrusting.stderr.take().expect("piped")).lines();
    let line = within("a line on stderr", errors.next_line())
        .await
        .expect("stderr readable")
        .expect("a line");
    assert!(line.starts_with("watch: ") && line.contains("reconnecting in"), "{line}");
    assert!(line.contains("certificate"), "{line}");
    let _ = untrusting.kill().await;
    pool.stop().await;
}
