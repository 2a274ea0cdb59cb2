//! What a server cannot do to the miner (issue 10): reach the terminal with escape sequences,
//! make it read a huge HTTP body or WebSocket message, or leave it retrying a wrong URL without
//! a hint; and what the miner tells the user: blocks numbered as the server numbers them, the
//! id's balance on the server, and wins still in flight at Ctrl-C.

use crate::support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use ws_miner::limits::MAX_WS_MESSAGE_BYTES;
use ws_miner::untrusted::is_unsafe;
use ws_miner::{Event, Outcome};

const BIN: &str = env!("CARGO_BIN_EXE_ws-miner");

/// Text a hostile server sends: clear screen, window title, an OSC 52 clipboard write, a C1
/// CSI, DEL, a right-to-left override, a bare carriage return.
const EVIL: &str =
    "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{1b}]52;c;ZWNobyBoaQ==\u{7}\u{9b}31m\u{7f}\u{202e}gnp.exe\rX";

/// Runs the binary with `--once` against a scripted server that puts [`EVIL`] in every string
/// it sends; returns the binary's stdout.
async fn stdout_against_an_evil_server(format: &[&str]) -> String {
    let server = WsServer::bind().await;
    let url = format!("ws://{}/ws", server.addr);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = vec!["--id", "alice", "--once", "--threads", "1", "--no-balance"];
    args.extend_from_slice(format);
    args.push(&url);
    let child = std::process::Command::new(BIN)
        .args(&args)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn ws-miner");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output());
    let mut ws = server.accept().await;
    send(&mut ws, Message::text(serde_json::json!({"type": "error", "message": EVIL}).to_string()))
        .await;
    send(&mut ws, Message::text(format!("not JSON {EVIL}"))).await;
    let b = block(1, "evil");
    send(&mut ws, block_frame(&b, EASY)).await;
    recv_proof(&mut ws).await;
    send(&mut ws, result_frame(true, &format!("New Block Forged {EVIL}"), None, 2)).await;
    let output = within("ws-miner to exit", output).await.expect("waiter").expect("output");
    assert_eq!(output.status.code(), Some(0), "--once won");
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

#[tokio::test]
async fn server_text_reaches_stdout_escaped_plain_and_json() {
    for format in [&[][..], &["--json"]] {
        let out = stdout_against_an_evil_server(format).await;
        println!("{out}");
        let raw: Vec<char> = out.chars().filter(|&c| c != '\n' && is_unsafe(c)).collect();
        assert!(raw.is_empty(), "{format:?}: raw control characters {raw:?} in:\n{out}");
        // The text is shown, escaped, not dropped.
        assert!(out.contains("u{1b}]52;c;ZWNobyBoaQ=="), "{format:?}: {out}");
        assert!(out.contains("u{202e}gnp.exe"), "{format:?}: {out}");
    }
}

#[tokio::test]
async fn a_websocket_message_over_the_limit_is_one_line_then_a_reconnect() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    let huge =
        format!("{{\"type\":\"error\",\"message\":\"{}\"}}", "x".repeat(MAX_WS_MESSAGE_BYTES));
    // The miner drops the connection while this is still being written: ignore the error.
    let _ = futures_util::SinkExt::send(&mut ws, Message::text(huge)).await;
    let reason = miner
        .wait_for("the disconnect", |e| match e {
            Event::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
    println!("{reason}");
    assert!(reason.contains("4 MiB"), "{reason}");
    // A message just under the limit is read (here: a block frame padded with spaces).
    let mut ws = server.accept().await;
    let b = block(1, "after-huge");
    let mut frame = block_frame(&b, EASY).into_text().expect("text").to_string();
    frame.push_str(&" ".repeat(MAX_WS_MESSAGE_BYTES - frame.len()));
    send(&mut ws, Message::text(frame)).await;
    assert!(solves(&b, EASY, &recv_proof(&mut ws).await["proof"]));
    miner.stop().await;
}

/// A course-style HTTP server whose `GET /last_block` answers 300 MB: first with a
/// `Content-Length`, then chunked without one. `/ws` is a 404, so the miner falls back to HTTP.
/// Reports, per huge answer, how many bytes it managed to write before the miner hung up.
async fn huge_body_server(listener: tokio::net::TcpListener, written: mpsc::UnboundedSender<u64>) {
    const TOTAL: u64 = 300_000_000;
    let answers = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else { return };
        let (answers, written) = (answers.clone(), written.clone());
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if !head.starts_with(b"GET /last_block") {
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                return;
            }
            let chunked = answers.fetch_add(1, Ordering::Relaxed) % 2 == 1;
            let header = if chunked {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_owned()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {TOTAL}\r\n\r\n"
                )
            };
            if tcp.write_all(header.as_bytes()).await.is_err() {
                return;
            }
            let piece = vec![b' '; 64 * 1024];
            let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
            let mut sent = 0u64;
            while sent < TOTAL {
                let data = if chunked { &chunk } else { &piece };
                if tcp.write_all(data).await.is_err() {
                    break;
                }
                sent += piece.len() as u64;
            }
            let _ = written.send(sent);
        });
    }
}

#[tokio::test]
async fn a_300_mb_http_body_is_refused_early_with_one_line_then_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, mut written) = mpsc::unbounded_channel();
    let server = tokio::spawn(huge_body_server(listener, tx));
    let mut miner = MinerRun::start(config(http_endpoint(addr), "alice"));
    for what in ["with a content-length", "chunked"] {
        let error = miner
            .wait_for("a refused answer", |e| match e {
                Event::ConnectFailed { error, .. } => Some(error.clone()),
                _ => None,
            })
            .await;
        println!("{what}: {error}");
        assert!(error.contains("4 MiB") && error.contains("refused"), "{what}: {error}");
        let sent = within("the server to notice", written.recv()).await.expect("a count");
        println!("{what}: the server wrote {sent} bytes before the miner hung up");
        // The miner reads at most 4 MiB; the rest of the 64 MiB are the sockets' buffers.
        assert!(sent < 64 << 20, "{what}: {sent} bytes written: the miner read on");
    }
    miner.stop().await;
    server.abort();
}

#[tokio::test]
async fn a_wrong_path_hints_at_ws_and_retries() {
    let pool = Pool::start(EASY).await;
    let endpoint =
        ws_miner::cli::parse_endpoint(&format!("ws://{}/wrong", pool.addr)).expect("valid URL");
    let mut miner = MinerRun::start(config(endpoint, "alice"));
    for attempt in 0..2 {
        let error = miner
            .wait_for("a failed attempt", |e| match e {
                Event::ConnectFailed { error, .. } => Some(error.clone()),
                _ => None,
            })
            .await;
        println!("attempt {attempt}: {error}");
        assert!(error.contains(&format!("try ws://{}/ws", pool.addr)), "{error}");
    }
    miner.stop().await;
    pool.stop().await;
}

#[tokio::test]
async fn an_unknown_host_is_named_and_retried() {
    for url in ["ws://no-such-host.invalid:5000/ws", "no-such-host.invalid:5000"] {
        let endpoint = ws_miner::cli::parse_endpoint(url).expect("valid URL");
        let mut miner = MinerRun::start(config(endpoint, "alice"));
        for _ in 0..2 {
            let error = miner
                .wait_for("a failed attempt", |e| match e {
                    Event::ConnectFailed { error, .. } => Some(error.clone()),
                    _ => None,
                })
                .await;
            println!("{url}: {error}");
            assert!(error.contains("unknown host \"no-such-host.invalid\""), "{error}");
        }
        let (outcome, _) = miner.stop().await;
        assert_eq!(outcome, Outcome::Interrupted);
    }
}

#[tokio::test]
async fn wins_are_numbered_as_the_server_numbers_blocks_with_the_balance_beside() {
    let pool = Pool::start(EASY).await;
    let mut cfg = config(ws_endpoint(pool.addr), "alice");
    cfg.once = true;
    cfg.server_balance = true;
    // Two runs: the second's "this run" is 1 while the server holds 2.
    for run in 1..=2 {
        let (outcome, events) = MinerRun::start(cfg.clone()).finish().await;
        assert_eq!(outcome, Outcome::Won, "{events:#?}");
        let chain = pool.chain().await;
        let last = chain.last().and_then(|b| b["index"].as_u64()).expect("an index");
        let won =
            events.iter().find(|e| matches!(e, Event::Accepted { .. })).expect("a win").to_plain();
        println!("{won}");
        assert!(won.starts_with(&format!("won block #{last} ")), "{won}");
        let started = events.iter().find(|e| matches!(e, Event::SearchStarted { .. }));
        let started = started.expect("a search").to_plain();
        assert!(started.starts_with(&format!("block #{last}: mining")), "{started}");
        let s = summary(&events);
        assert_eq!((s.coins, s.server_coins), (1, Some(run)), "{events:#?}");
        let text = Event::Summary(s).to_plain();
        println!("{text}");
        assert!(text.contains(&format!("coins: 1 this run, {run} on the server")), "{text}");
    }
    pool.stop().await;
}

#[tokio::test]
async fn the_balance_line_follows_a_win() {
    let pool = Pool::start(EASY).await;
    let mut cfg = config(ws_endpoint(pool.addr), "carol");
    cfg.server_balance = true;
    let mut miner = MinerRun::start(cfg);
    let line = miner
        .wait_for("the balance", |e| matches!(e, Event::Balance { .. }).then(|| e.to_plain()))
        .await;
    println!("{line}");
    assert!(line.starts_with("coins: ") && line.contains("on the server (id carol)"), "{line}");
    miner.stop().await;
    pool.stop().await;
}

#[tokio::test]
async fn a_win_in_flight_at_ctrl_c_is_counted() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "in-flight"), EASY)).await;
    recv_proof(&mut ws).await;
    // Ctrl-C while the proof is being judged; the answer comes a moment later.
    miner.interrupt();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    let (outcome, events) = miner.finish().await;
    assert_eq!(outcome, Outcome::Interrupted);
    let s = summary(&events);
    assert_eq!((s.blocks_won, s.coins), (1, 1), "{events:#?}");
}

#[tokio::test]
async fn ctrl_c_with_no_answer_coming_waits_only_the_grace() {
    let server = WsServer::bind().await;
    let miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "no-answer"), EASY)).await;
    recv_proof(&mut ws).await;
    // The server never answers: the run still ends (after at most SHUTDOWN_GRACE).
    let (outcome, events) = miner.stop().await;
    assert_eq!(outcome, Outcome::Interrupted);
    assert_eq!(summary(&events).blocks_won, 0);
    drop(ws);
}

/// The miner's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// A pool that pings as fast as it can and never reads: the miner answers every ping with a
/// pong, which the pool never takes. Before, the miner queued every pong (13 → 106 MiB in 55 s);
/// now what it queues is bounded and the connection is dropped once the pool has taken nothing
/// for `WRITE_STALL`, then the miner reconnects. Its resident set is watched meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_pings_and_never_reads_is_dropped_and_the_miner_stays_small() {
    /// How much the miner's resident set may grow meanwhile (it grew by over 100 MiB before).
    const GROWTH_BOUND_KIB: u64 = 16 * 1024;
    // A small receive buffer, so that the kernel soon stops taking the miner's pongs.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let listener = socket.listen(16).expect("listen");
    let addr = listener.local_addr().expect("bound address");
    let server = WsServer { listener, addr };
    let url = format!("ws://{addr}/ws");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(BIN)
        .args(["--id", "alice", "--threads", "1", "--no-balance", "--no-shares", &url])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ws-miner");
    let pid = child.id();
    let mut first = server.accept().await;
    let baseline = rss_kib(pid);
    // Unmasked ping frames with the longest payload a control frame may carry (125 bytes),
    // written on the raw socket in batches; nothing is ever read.
    let mut ping = vec![0x89, 125];
    ping.extend_from_slice(&[b'p'; 125]);
    let batch = ping.repeat(500);
    let flood = tokio::spawn(async move {
        let tcp = first.get_mut();
        while tcp.write_all(&batch).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut peak = baseline;
    let again = within("the miner to drop the flooding pool and connect again", async {
        loop {
            tokio::select! {
                ws = server.accept() => return ws,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    peak = peak.max(rss_kib(pid));
                    assert!(
                        peak - baseline < GROWTH_BOUND_KIB,
                        "the miner grew from {baseline} KiB to {peak} KiB against the flood"
                    );
                }
            }
        }
    })
    .await;
    eprintln!("ws-miner against a ping flood: RSS {baseline} KiB at start, peak {peak} KiB");
    flood.abort();
    drop(again);
    let _ = child.kill();
    let _ = child.wait();
}
