//! `scripts/cluster` end to end: the recipe starts PostgreSQL, three `pool-server --database`
//! frontends (this test's binary) and HAProxy; the test mines through the balancer over HTTP
//! (course style) and WebSocket, kills one frontend with SIGKILL, and mining goes on through the
//! balancer while every live frontend serves the same valid chain.
//!
//! It skips, saying why, when PostgreSQL or HAProxy is missing, unless `REQUIRE_POSTGRES` or
//! `REQUIRE_HAPROXY` is set (CI sets both), in which case their absence fails the test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protocol::Difficulty;
use serde_json::{Value, json};

use crate::support::{HANG_GUARD, Ws, line_channel, mine};
use test_support::assert_valid_chain;

const ZEROS: u64 = 3;
const FRONTENDS: u16 = 3;
/// Guards against a hang only: the recipe runs initdb and starts four processes.
const START_GUARD: Duration = Duration::from_secs(120);

/// The running recipe; dropping it stops it (SIGTERM: its trap stops everything it started).
struct Cluster {
    script: Child,
    dir: tempfile::TempDir,
    base_port: u16,
    port: u16,
    _out: mpsc::Receiver<String>,
    _err: mpsc::Receiver<String>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // As root the recipe runs PostgreSQL as `nobody`, who must reach the directory.
        set_mode(dir.path(), 0o711);
        let base_port = free_port_block(FRONTENDS + 2);
        let port = base_port + FRONTENDS + 1;
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_pool-server")).parent().expect("bin dir");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster");
        let mut child = Command::new("bash")
            .arg(script)
            .arg("--dir")
            .arg(dir.path())
            .arg("--bin-dir")
            .arg(bin_dir)
            .args(["--frontends", &FRONTENDS.to_string(), "--difficulty", &ZEROS.to_string()])
            .args(["--base-port", &base_port.to_string(), "--port", &port.to_string()])
            .arg("--no-fsync")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn scripts/cluster");
        let out = line_channel(child.stdout.take().expect("piped stdout"));
        let err = line_channel(child.stderr.take().expect("piped stderr"));
        let deadline = Instant::now() + START_GUARD;
        let mut said = String::new();
        loop {
            match out.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("cluster ready") => break,
                Ok(line) => said.push_str(&format!("{line}\n")),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let errors: Vec<String> = err.try_iter().collect();
                    panic!("scripts/cluster did not get ready:\n{said}{}", errors.join("\n"));
                }
            }
        }
        Cluster { script: child, dir, base_port, port, _out: out, _err: err }
    }

    fn balancer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn frontend(&self, k: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + k))
    }

    /// SIGKILLs frontend `k` (1-based), as a crash.
    fn kill_frontend(&self, k: u16) {
        let pid = std::fs::read_to_string(self.dir.path().join(format!("frontend-{k}.pid")))
            .expect("the recipe writes each pid");
        let killed =
            Command::new("kill").args(["-KILL", pid.trim()]).status().expect("run kill").success();
        assert!(killed, "kill -9 frontend-{k} ({pid})");
        // The signal is sent; the port closes once the process is gone.
        let deadline = Instant::now() + HANG_GUARD;
        while TcpStream::connect(self.frontend(k)).is_ok() {
            assert!(Instant::now() < deadline, "frontend-{k} still answers after kill -9");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pid = self.script.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + HANG_GUARD;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.script.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.script.kill();
        let _ = self.script.wait();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The first port of `n` consecutive loopback ports that are free, chosen below the kernel's
/// ephemeral range (32768 and up) so that other tests' `:0` binds cannot take them meanwhile.
fn free_port_block(n: u16) -> u16 {
    let start = 20_000 + u16::try_from(std::process::id() % 1_000).expect("small") * 10;
    (0..1_000u16)
        .map(|i| 20_000 + (start - 20_000 + i * 10) % 12_000)
        .find(|&base| (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .expect("a block of free loopback ports below 32000")
}

/// Whether `program -v` runs, from PATH or `/usr/sbin`.
fn haproxy_runs() -> bool {
    ["haproxy", "/usr/sbin/haproxy"].iter().any(|p| {
        Command::new(p).arg("-v").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

/// What the recipe needs that is missing, failing instead when its `REQUIRE_*` is set.
fn available() -> bool {
    let mut available = true;
    if let Err(e) = crate::pg::bin_dir() {
        let why = format!("scripts/cluster test: PostgreSQL is missing ({e:#}; scripts/setup)");
        test_support::skip("REQUIRE_POSTGRES", &why);
        available = false;
    }
    if !haproxy_runs() {
        let why =
            "scripts/cluster test: HAProxy is missing (scripts/setup, or apt-get install haproxy)";
        test_support::skip("REQUIRE_HAPROXY", why);
        available = false;
    }
    available
}

/// Wins the current block course-style through `base`: `GET /last_block`, `POST /mine`, again
/// while the answer is `stale`: the `GET` may meet a frontend that has not yet heard of the
/// block another one just accepted (a notification away). Any other refusal fails the test.
async fn forge(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let last = json_of(http.get(format!("{base}/last_block"))).await;
        let proof = mine(&last["last_block"], difficulty(), 0);
        let answer =
            json_of(http.post(format!("{base}/mine")).json(&json!({"proof": proof, "id": id})))
                .await;
        if answer["message"] == "New Block Forged" {
            return answer["block"].clone();
        }
        assert_eq!(answer["reason"], "stale", "mined on {last}: {answer}");
        assert!(Instant::now() < deadline, "still stale after {HANG_GUARD:?}: {answer}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the frontend at `base` serves at least `len` blocks, and returns its chain.
async fn chain_of_length(http: &reqwest::Client, base: &str, len: usize) -> Vec<Value> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let served = chain(http, base).await;
        if served.len() >= len || Instant::now() >= deadline {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn chain(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let body = json_of(http.get(format!("{base}/chain"))).await;
    body["chain"].as_array().expect("chain array").clone()
}

/// Sends `request` and returns its JSON body, failing the test on any error status (a 503 from
/// the balancer: no live frontend took the request).
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    let answer = request.send().await.expect("the balancer answers");
    let status = answer.status();
    let body = answer.text().await.expect("a body");
    assert!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn difficulty() -> Difficulty {
    Difficulty::new(ZEROS).expect("difficulty in range")
}

#[tokio::test]
async fn mining_through_the_balancer_goes_on_when_a_frontend_is_killed() {
    if !available() {
        return;
    }
    let cluster = Cluster::start();
    let lb = cluster.balancer();
    let ws_url = format!("ws://127.0.0.1:{}/ws", cluster.port);
    let http = reqwest::Client::new();
    let mut acked = Vec::new();

    // Through the balancer: HTTP wins, and a WebSocket (on whichever frontend) is pushed them.
    let (mut watcher, _) = Ws::connect_and_greet(&ws_url).await;
    for n in 0..3 {
        let block = forge(&http, &lb, &format!("http-{n}")).await;
        assert_eq!(watcher.recv_block(block["index"].as_u64().expect("index")).await, block);
        acked.push(block);
    }
    drop(watcher);

    cluster.kill_frontend(1);

    // Mining goes on through the balancer: requests that meet the dead frontend before its
    // health check takes it out are sent to a live one (redispatch), so none of these fails.
    for n in 3..6 {
        acked.push(forge(&http, &lb, &format!("http-{n}")).await);
    }
    // And over a WebSocket through the balancer: it is pushed the newest block (in the greeting,
    // or soon after where its frontend had not yet heard of it) and wins the next.
    let (mut miner, greeting) = Ws::connect_and_greet(&ws_url).await;
    let last = acked.last().expect("acked blocks");
    let last_index = last["index"].as_u64().expect("index");
    if greeting["block"]["index"] != last_index {
        assert_eq!(&miner.recv_block(last_index).await, last);
    } else {
        assert_eq!(&greeting["block"], last);
    }
    let proof = mine(last, difficulty(), 0);
    miner.send_text(json!({"type": "proof", "proof": proof, "id": "ws-miner"}).to_string()).await;
    // Its sender gets both the result and the new block, in either order.
    let index = last_index + 1;
    let (mut result, mut ws_block) = (Value::Null, Value::Null);
    while result.is_null() || ws_block.is_null() {
        let msg = miner.recv().await;
        match msg["type"].as_str() {
            Some("result") => result = msg,
            Some("block") if msg["block"]["index"] == index => ws_block = msg["block"].clone(),
            Some("block") => {}
            _ => panic!("unexpected {msg}"),
        }
    }
    assert_eq!(result["accepted"], true, "{result}");
    assert_eq!(result["index"], index, "{result}");
    assert_eq!(ws_block["proof"], proof);
    acked.push(ws_block);

    // Every live frontend, asked directly, and the balancer serve the same valid chain, holding
    // every acknowledged block.
    let expected = chain_of_length(&http, &lb, 1 + acked.len()).await;
    assert_valid_chain(&expected, difficulty());
    assert_eq!(&expected[1..], &acked[..]);
    for k in 2..=FRONTENDS {
        let base = format!("http://{}", cluster.frontend(k));
        let served = chain_of_length(&http, &base, expected.len()).await;
        assert_eq!(served, expected, "frontend-{k} serves another chain");
    }
}
