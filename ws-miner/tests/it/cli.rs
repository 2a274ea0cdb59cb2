//! The binary: configuration errors (exit 2), the id file, `--once` exit codes, `--json`, and
//! Ctrl-C and SIGTERM (summary, exit 130).

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_ws-miner");

fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(dir).output().expect("run ws-miner")
}

#[test]
fn no_id_is_a_usage_error_naming_both_ways() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_in(dir.path(), &["ws://127.0.0.1:9/ws"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--id") && stderr.contains("my_id.txt"), "{stderr}");
    println!("{stderr}");
}

#[test]
fn bad_settings_are_usage_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    for args in [
        &["--id", "a", "--ca", "/nonexistent/ca.pem"][..],
        &["--id", "a", "ftp://example.com"],
        &["--id", "a", "--threads", "0"],
        &["--id", "a", "--zeros", "0"],
        &["--id", "a", "--zeros", "65"],
        &["--id", "   "],
        &["--id", "a", "--dialect", "yaml"],
        &["--id", "a", "--quiet", "--json"],
        &["--id", "a", "--kernel", "md5"],
        &["--bench", "--kernel", "md5"],
        &["--id", "a", "--nice", "20"],
        &["--id", "a", "--nice", "-1"],
        &["--id", "a", "ws://127.0.0.1:9/ws", "ftp://example.com"],
        &[
            "--id",
            "a",
            "ws://a/ws",
            "ws://b/ws",
            "ws://c/ws",
            "ws://d/ws",
            "ws://e/ws",
            "ws://f/ws",
            "ws://g/ws",
            "ws://h/ws",
            "ws://i/ws",
            "ws://j/ws",
            "ws://k/ws",
            "ws://l/ws",
            "ws://m/ws",
            "ws://n/ws",
            "ws://o/ws",
            "ws://p/ws",
            "ws://q/ws",
        ],
    ] {
        let out = run_in(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        println!("{args:?}: {}", stderr.lines().next().unwrap_or(""));
    }
}

#[test]
fn a_kernel_this_cpu_lacks_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lacking = ws_miner::search::Kernel::ALL.into_iter().filter(|k| !k.is_available());
    for kernel in lacking {
        let out = run_in(dir.path(), &["--id", "a", "--kernel", kernel.name()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kernel}: {stderr}");
        assert!(stderr.contains("lacks"), "{kernel}: {stderr}");
    }
}

/// A running binary whose stdout lines arrive on a channel.
struct Bin {
    child: Option<Child>,
    pid: u32,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Bin {
    fn start(dir: &Path, args: &[&str]) -> Self {
        // The scripted servers serve no `/balance/{id}`.
        let mut child = Command::new(BIN)
            .arg("--no-balance")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ws-miner");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Bin { pid: child.id(), child: Some(child), lines, seen: Vec::new() }
    }

    async fn line_containing(&mut self, needle: &str) -> String {
        within(&format!("a line containing {needle:?}"), async {
            loop {
                let Some(line) = self.lines.recv().await else {
                    panic!("ws-miner ended before printing {needle:?}: {:#?}", self.seen)
                };
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
    }

    /// Waits for the process to exit; returns its exit code and all its stdout lines.
    async fn wait(mut self) -> (Option<i32>, Vec<String>) {
        let mut child = self.child.take().expect("waited once");
        let status = within(
            "ws-miner to exit",
            tokio::task::spawn_blocking(move || child.wait().expect("wait")),
        )
        .await
        .expect("waiter");
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        (status.code(), std::mem::take(&mut self.seen))
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        // Only reached with a live child when a test failed: do not leave it mining.
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn id_file_is_read_trimmed_and_once_exits_0_on_a_win_1_on_a_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("my_id.txt"), "  bob \n").expect("write my_id.txt");
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);

    let bin = Bin::start(dir.path(), &["--once", "--threads", "1", &url]);
    let mut ws = server.accept().await;
    let b = block(1, "cli");
    send(&mut ws, block_frame(&b, EASY)).await;
    let proof = recv_proof(&mut ws).await;
    assert_eq!(proof["id"], "bob", "id from my_id.txt, trimmed");
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    let (code, lines) = bin.wait().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("block #2: won with proof ")
                && l.ends_with(" (coins: 1 this run)")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("summary: 1 blocks won")));

    // --id overrides the file; a rejection makes --once exit 1.
    let bin = Bin::start(dir.path(), &["--once", "--threads", "1", "--id", "zed", &url]);
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&b, EASY)).await;
    let proof = recv_proof(&mut ws).await;
    assert_eq!(proof["id"], "zed");
    send(&mut ws, result_frame(false, "too late", Some("stale"), 2)).await;
    let (code, lines) = bin.wait().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("rejected (stale): too late")));
}

#[tokio::test]
async fn json_prints_one_event_per_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);
    let bin = Bin::start(dir.path(), &["--json", "--once", "--id", "j", "-t", "1", &url]);
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(4, "json"), EASY)).await;
    recv_proof(&mut ws).await;
    send(&mut ws, result_frame(true, "New Block Forged", None, 5)).await;
    let (code, lines) = bin.wait().await;
    assert_eq!(code, Some(0));
    let events: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("every line is JSON");
            let ts = v["ts"].as_f64().expect("every line has a wall-clock ts");
            assert!(ts > 1.7e9, "ts is Unix seconds: {ts}");
            v["event"].as_str().expect("every line names its event").to_owned()
        })
        .collect();
    assert_eq!(
        events,
        ["connected", "search_started", "search_finished", "accepted", "summary"],
        "{lines:#?}"
    );
}

#[tokio::test]
async fn json_abort_line_tells_when_the_block_arrived_and_the_work_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);
    let mut bin = Bin::start(dir.path(), &["--json", "--once", "--id", "j", "-t", "2", &url]);
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "hopeless"), NEVER)).await;
    bin.line_containing("search_started").await;
    // Let the workers get going, so the abort has attempts to count.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    send(&mut ws, block_frame(&block(2, "hopeless"), NEVER)).await;
    let line = bin.line_containing("search_aborted").await;
    // --once: the block went to someone else.
    let (code, _) = bin.wait().await;
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&line).expect("the line is JSON");
    let num = |field: &str| v[field].as_f64().unwrap_or_else(|| panic!("no {field} in {line}"));
    let (ts, arrived, flag_ms, stop_ms) =
        (num("ts"), num("arrived_ts"), num("flag_ms"), num("stop_ms"));
    let attempts = v["attempts"].as_u64().expect("attempts is a count");
    let stale = v["stale_attempts"].as_u64().expect("stale_attempts is a count");
    assert_eq!((v["index"].as_u64(), v["by_index"].as_u64()), (Some(1), Some(2)), "{line}");
    // The frame was read after it was sent and before the line was printed, which came after
    // the flag was set and the workers returned (1 ms of slack for float rounding).
    assert!(arrived >= sent - 0.001 && arrived <= ts, "{line}");
    assert!(flag_ms >= 0.0 && stop_ms >= 0.0, "{line}");
    assert!((ts - arrived) * 1000.0 + 1.0 >= flag_ms + stop_ms, "{line}");
    assert!(attempts > 0, "{line}");
    assert!(stale <= attempts, "{line}");
}

/// The nice values of a process's threads, main thread first, from /proc.
#[cfg(target_os = "linux")]
fn thread_nices(pid: u32) -> Vec<i32> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process is alive")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_by_key(|&tid| tid != pid);
    tids.iter()
        .filter_map(|tid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            // Field 19 is the nice value; fields after the command name start at field 3.
            stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn search_threads_run_as_far_below_the_network_thread_as_nice_says() {
    for (nice, lowered) in [(None, 0), (Some("19"), 19), (Some("5"), 5)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = WsServer::bind().await;
        let url = format!("ws://{}/ws", server.addr);
        let mut args = vec!["--json", "--id", "n", "-t", "3", &url];
        if let Some(n) = nice {
            args.extend(["--nice", n]);
        }
        let mut bin = Bin::start(dir.path(), &args);
        let mut ws = server.accept().await;
        send(&mut ws, block_frame(&block(1, "nice"), NEVER)).await;
        bin.line_containing("search_started").await;
        // The workers are spawned as the search starts; give them a moment to lower themselves.
        // Threads: main, the runtime's, the search's blocking thread and its three workers.
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let (base, target, nices) = loop {
            let nices = thread_nices(bin.pid);
            let base = nices[0];
            let target = (base + lowered).min(19);
            let at_target = nices.iter().filter(|&&n| n == target).count();
            let settled = nices.len() >= 6 && (lowered == 0 || at_target == 3);
            if settled || Instant::now() > deadline {
                break (base, target, nices);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        if lowered == 0 {
            assert!(nices.len() >= 6 && nices.iter().all(|&n| n == base), "no --nice: {nices:?}");
        } else if target == base {
            println!("this test runs at nice {base} already: nothing lower to check");
        } else {
            let at_target = nices.iter().filter(|&&n| n == target).count();
            assert_eq!(at_target, 3, "{nice:?}: three workers at {target}: {nices:?}");
            assert!(nices.iter().filter(|&&n| n == base).count() >= 2, "{nices:?}");
        }
    }
}

#[tokio::test]
async fn quiet_prints_only_the_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);
    let bin = Bin::start(dir.path(), &["--quiet", "--once", "--id", "q", "-t", "1", &url]);
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "quiet"), EASY)).await;
    recv_proof(&mut ws).await;
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    let (code, lines) = bin.wait().await;
    assert_eq!(code, Some(0));
    assert!(lines.iter().all(|l| l.starts_with("summary: ")), "{lines:#?}");
}

#[tokio::test]
async fn ctrl_c_stops_the_workers_prints_the_summary_and_exits_130() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);
    let mut bin = Bin::start(dir.path(), &["--id", "c", "--threads", "2", &url]);
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "ctrl-c"), NEVER)).await;
    bin.line_containing("mining at difficulty 16").await;
    let sent = Instant::now();
    let status =
        Command::new("kill").args(["-INT", &bin.pid.to_string()]).status().expect("run kill");
    assert!(status.success());
    let (code, lines) = bin.wait().await;
    println!("exited {:.1} ms after SIGINT", sent.elapsed().as_secs_f64() * 1000.0);
    assert_eq!(code, Some(130), "{lines:#?}");
    let summary: Vec<&String> = lines.iter().filter(|l| l.starts_with("summary: ")).collect();
    assert_eq!(summary.len(), 2, "{lines:#?}");
    assert!(summary[0].contains("0 blocks won, coins: 0 this run"), "{summary:?}");
    for line in &lines {
        println!("{line}");
    }
}

/// Sends `kill -SIGNAL PID`.
fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Returns the `summary: ` lines among `lines`.
fn summary_lines(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.starts_with("summary: ")).collect()
}

#[tokio::test]
async fn sigterm_prints_the_summary_as_ctrl_c_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);
    let mut bin = Bin::start(dir.path(), &["--id", "c", "--threads", "2", &url]);
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "sigterm"), NEVER)).await;
    bin.line_containing("mining at difficulty 16").await;
    kill("TERM", bin.pid);
    let (code, lines) = bin.wait().await;
    assert_eq!(code, Some(130), "{lines:#?}");
    let summary = summary_lines(&lines);
    assert_eq!(summary.len(), 2, "{lines:#?}");
    assert!(summary[0].contains("0 blocks won"), "{summary:?}");
}

#[tokio::test]
async fn two_sigints_at_once_still_print_the_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);
    let mut bin = Bin::start(dir.path(), &["-v", "--id", "c", "--threads", "2", &url]);
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "two signals"), EASY)).await;
    // A proof left unanswered: after the first signal the miner waits for its answer (up to
    // 2 s), so a second signal surely comes while the summary is not printed yet.
    recv_proof(&mut ws).await;
    bin.line_containing("found proof").await;
    // `timeout -s INT` signals the miner, then its whole process group: two signals at once.
    // 20 ms apart, the first has surely been seen (closer ones may be merged into one).
    kill("INT", bin.pid);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    kill("INT", bin.pid);
    let (code, lines) = bin.wait().await;
    assert_eq!(code, Some(130), "{lines:#?}");
    assert_eq!(summary_lines(&lines).len(), 2, "{lines:#?}");
    drop(ws);
}

#[tokio::test]
async fn a_pool_switch_is_one_json_event_and_one_plain_line() {
    for json in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        // The first pool: a port nobody listens on.
        let dead = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("ws://{}/ws", probe.local_addr().expect("addr"))
        };
        let server = WsServer::bind().await;
        let url = format!("ws://{}/ws", server.addr);
        let mut args = vec!["--once", "--id", "p", "-t", "1", &dead, &url];
        if json {
            args.insert(0, "--json");
        }
        let bin = Bin::start(dir.path(), &args);
        let mut ws = server.accept().await;
        send(&mut ws, block_frame(&block(4, "pools"), EASY)).await;
        recv_proof(&mut ws).await;
        send(&mut ws, result_frame(true, "New Block Forged", None, 5)).await;
        let (code, lines) = bin.wait().await;
        assert_eq!(code, Some(0), "{lines:#?}");
        if json {
            let switches: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines"))
                .filter(|v| v["event"] == "pool_switch")
                .collect();
            assert_eq!(switches.len(), 1, "{lines:#?}");
            assert_eq!((&switches[0]["from"], &switches[0]["to"]), (&dead.into(), &url.into()));
            assert!(switches[0]["why"].as_str().is_some_and(|w| !w.is_empty()));
        } else {
            let switches: Vec<&String> =
                lines.iter().filter(|l| l.starts_with("switching pools")).collect();
            assert_eq!(switches.len(), 1, "{lines:#?}");
            println!("{}", switches[0]);
            assert!(switches[0].contains(&format!("from {dead} to {url}: ")), "{}", switches[0]);
            // The first pool's failure is said in the switch line, not in a line of its own.
            assert!(!lines.iter().any(|l| l.starts_with("cannot connect")), "{lines:#?}");
        }
    }
}

/// Returns block `index` paying `rewards` (recipient, amount) at its end, as a pool forges it.
fn paying(index: u64, rewards: &[(&str, u64)]) -> serde_json::Value {
    let mut b = block(index, "paid");
    b["transactions"] = rewards
        .iter()
        .map(|(to, amount)| serde_json::json!({"sender": "0", "recipient": to, "amount": amount}))
        .collect();
    b
}

#[tokio::test]
async fn a_block_takes_one_line_in_order_naming_who_won_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);
    let mut bin = Bin::start(dir.path(), &["--id", "me", "--threads", "1", &url]);
    let mut ws = server.accept().await;
    // Block #2 is ours: the pool pushes the block it forged before it answers the proof, as
    // pool-server does.
    send(&mut ws, block_frame(&block(1, "classroom"), EASY)).await;
    let proof = recv_proof(&mut ws).await;
    send(&mut ws, block_frame(&paying(2, &[("me", 1)]), NEVER)).await;
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    bin.line_containing("block #2: won with proof").await;
    // Block #3 is someone else's, while we search.
    send(&mut ws, block_frame(&paying(3, &[("rival", 1)]), NEVER)).await;
    bin.line_containing("block #3: won by rival").await;
    kill("INT", bin.pid);
    let (code, lines) = bin.wait().await;
    assert_eq!(code, Some(130), "{lines:#?}");
    for line in &lines {
        println!("{line}");
    }
    // The search's settings are said when they change (the test's difficulty does); beyond
    // them, one line per block.
    assert!(lines[1].starts_with("mining at difficulty 3 ("), "{lines:#?}");
    let blocks: Vec<&String> = lines.iter().filter(|l| !l.starts_with("mining at ")).collect();
    let expected = [
        "connected to ",
        &format!("block #2: won with proof {} (coins: 1 this run)", proof["proof"]),
        "block #3: won by rival",
        "summary: 1 blocks won, coins: 1 this run, ",
        "summary: ",
    ];
    assert_eq!(blocks.len(), expected.len(), "{lines:#?}");
    for (line, start) in blocks.iter().zip(expected) {
        assert!(line.starts_with(start), "{line:?} should start with {start:?}: {lines:#?}");
    }
}

#[tokio::test]
async fn under_pplns_coins_read_with_their_fraction_and_blocks_are_found_not_won() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);
    let mut bin = Bin::start(dir.path(), &["--id", "me", "--threads", "1", &url]);
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "pplns"), NEVER)).await;
    bin.line_containing("mining at difficulty 16").await;
    let split = [("rival", 600_000), ("me", 399_999), ("finder", 1)];
    send(&mut ws, block_frame(&paying(2, &split), NEVER)).await;
    let line = bin.line_containing("block #2: ").await;
    assert_eq!(line, "block #2: found by finder, 3 ids paid; you got 0.399999 (0.399999 this run)");
    send(&mut ws, block_frame(&paying(3, &[("rival", 999_999), ("finder", 1)]), NEVER)).await;
    let line = bin.line_containing("block #3: ").await;
    assert_eq!(line, "block #3: found by finder, 2 ids paid; you got 0.000000 (0.399999 this run)");
    kill("INT", bin.pid);
    let (code, lines) = bin.wait().await;
    assert_eq!(code, Some(130), "{lines:#?}");
    let summary = summary_lines(&lines);
    assert!(
        summary[0].starts_with("summary: 0 blocks found, coins: 0.399999 this run,"),
        "{summary:?}"
    );
}
