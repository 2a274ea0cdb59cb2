//! Hostile clients against a live server, while honest miners keep mining:
//! - thousands of random WebSocket frames (text, binary, huge, fragmented, invalid UTF-8 sent
//!   raw, wrong types, pings, stray continuations, closes): each gets an `error` frame, or that one
//!   connection is closed; honest miners forge blocks all through the fuzzing;
//! - slowloris (hundreds of TCP connections dribbling a request a byte at a time, or silent) and
//!   WebSocket clients that never read: honest miners and watchers are not stopped;
//! - 1,000 valid submissions for one block at once over WebSocket and HTTP: exactly one winner.
//!
//! Attackers connect from other loopback addresses (127.0.0.2, ...) than the honest miners
//! (127.0.0.1), as they would from other machines; per-address limits then apply to them alone.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use pool_server::serve::Limits;
use protocol::{ClientMessage, Difficulty, ServerMessage};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Barrier, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{HANG_GUARD, Server, loopback, mine};
use test_support::{Rng, assert_one_winner, assert_valid_chain};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a TCP connection to `server` from `from`.
async fn tcp_from(from: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(server).await
}

/// Opens a WebSocket to `server` from `from`.
async fn ws_from(from: IpAddr, server: SocketAddr) -> Option<Socket> {
    let tcp = tcp_from(from, server).await.ok()?;
    let url = format!("ws://{server}/ws");
    tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await.ok().map(|(ws, _)| ws)
}

/// Honest miners, one over WebSocket and one over HTTP, mining until `stop`; `forged` counts
/// their accepted blocks.
struct Honest {
    stop: Arc<AtomicBool>,
    forged: watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Honest {
    async fn start(server: &Server) -> Honest {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, forged) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let difficulty = server.difficulty;
        let ws = tokio::spawn(honest_ws(server.ws_url(), difficulty, stop.clone(), tx.clone()));
        let http = tokio::spawn(honest_http(server.url(""), difficulty, stop.clone(), tx));
        Honest { stop, forged, tasks: vec![ws, http] }
    }

    /// Waits until the honest miners forged at least `n` blocks in all.
    async fn wait_for(&mut self, n: u64) {
        tokio::time::timeout(HANG_GUARD, self.forged.wait_for(|f| *f >= n))
            .await
            .unwrap_or_else(|_| panic!("honest miners stalled before {n} blocks"))
            .expect("honest miners alive");
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            tokio::time::timeout(HANG_GUARD, task).await.expect("miner stops").expect("no panic");
        }
        *self.forged.borrow()
    }
}

async fn honest_ws(
    url: String,
    difficulty: Difficulty,
    stop: Arc<AtomicBool>,
    forged: Arc<watch::Sender<u64>>,
) {
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("honest ws connects");
    let mut latest: Option<Value> = None;
    let mut submitted = 0u64;
    let mut waiting = false;
    while !stop.load(Ordering::SeqCst) {
        if !waiting
            && let Some(block) = &latest
            && block["index"].as_u64().is_some_and(|i| i > submitted)
        {
            submitted = block["index"].as_u64().expect("index");
            let proof = mine(block, difficulty, 1 << 32);
            let msg =
                json!({"type": "proof", "proof": proof, "id": "honest-ws", "index": submitted});
            ws.send(Message::text(msg.to_string())).await.expect("honest ws send");
            waiting = true;
        }
        let frame = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("the server talks to honest miners")
            .expect("honest connection open")
            .expect("honest frame ok");
        let Message::Text(text) = frame else { continue };
        let msg: Value = serde_json::from_str(text.as_str()).expect("JSON");
        match msg["type"].as_str() {
            Some("block") => latest = Some(msg["block"].clone()),
            Some("result") => {
                waiting = false;
                if msg["accepted"] == true {
                    forged.send_modify(|n| *n += 1);
                } else {
                    assert_eq!(msg["reason"], "stale", "{msg}");
                }
            }
            _ => panic!("honest miner got {msg}"),
        }
    }
}

async fn honest_http(
    base: String,
    difficulty: Difficulty,
    stop: Arc<AtomicBool>,
    forged: Arc<watch::Sender<u64>>,
) {
    let client = reqwest::Client::new();
    while !stop.load(Ordering::SeqCst) {
        let body: Value = client
            .get(format!("{base}/last_block"))
            .send()
            .await
            .expect("GET /last_block")
            .json()
            .await
            .expect("json");
        let proof = mine(&body["last_block"], difficulty, 1 << 33);
        let answer: Value = client
            .post(format!("{base}/mine"))
            .json(&json!({"proof": proof, "id": "honest-http"}))
            .send()
            .await
            .expect("POST /mine")
            .json()
            .await
            .expect("json");
        if answer["message"] == "New Block Forged" {
            forged.send_modify(|n| *n += 1);
        } else {
            assert_eq!(answer["reason"], "stale", "{answer}");
        }
    }
}

/// Honest miners at difficulty 2 send hundreds of proofs a second, all from 127.0.0.1: the
/// per-address proof rate is lifted for them (the attackers use other addresses).
fn racing() -> Limits {
    Limits { proof_rate: 1_000_000, ..Limits::default() }
}

/// What the fuzzer expects after sending a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// An `error` frame.
    Error,
    /// A `result` frame (the random text happened to be a well-formed proof).
    Result,
    /// Nothing in particular (pings, pongs).
    Nothing,
    /// The server closes this connection (invalid UTF-8, protocol violations, beyond 1 MiB).
    Close,
}

fn random_text(rng: &mut Rng) -> String {
    let len = rng.below(200) as usize;
    match rng.below(6) {
        0 => String::from_utf8_lossy(&(0..len).map(|_| rng.next_u64() as u8).collect::<Vec<_>>())
            .into_owned(),
        1 => (0..len)
            .map(|_| char::from(b"{}[]\":,0123456789abcdeftrunl .-\\"[rng.below(32) as usize]))
            .collect(),
        2 => {
            // Right type, fields of every wrong type.
            let wrong = [
                json!(null),
                json!(true),
                json!(-1),
                json!(1.5),
                json!("7"),
                json!([1]),
                json!({"a": 1}),
                json!(u64::MAX),
                json!(""),
            ];
            let mut msg = json!({"type": "proof"});
            for field in ["proof", "id", "index"] {
                if rng.below(3) > 0 {
                    msg[field] = wrong[rng.below(wrong.len() as u64) as usize].clone();
                }
            }
            msg.to_string()
        }
        3 => {
            let types = [
                json!("block"),
                json!("result"),
                json!("error"),
                json!("mine"),
                json!(1),
                json!(null),
                json!(""),
                json!("PROOF"),
            ];
            json!({"type": types[rng.below(types.len() as u64) as usize], "proof": rng.next_u64(), "id": "x"}).to_string()
        }
        4 => ["", "null", "[]", "1", "\"proof\"", "{}", "{\"type\":\"proof\"", "\u{feff}{}"]
            [rng.below(8) as usize]
            .to_owned(),
        _ => {
            json!({"type": "proof", "proof": rng.next_u64(), "id": "x".repeat(rng.below(300) as usize)})
                .to_string()
        }
    }
}

/// Builds one random frame (or a short sequence) and what the server should answer.
fn random_frames(rng: &mut Rng) -> (Vec<Message>, Expect) {
    let text_expect = |text: &str| match ClientMessage::from_json(text) {
        Ok(ClientMessage::Proof(_)) => Some(Expect::Result),
        // A well-formed request would be answered with a block or stats frame, which a broadcast
        // can be confused with: not sent.
        Ok(_) => None,
        Err(_) => Some(Expect::Error),
    };
    loop {
        let choice = rng.below(100);
        let out = match choice {
            0..=49 => {
                let text = random_text(rng);
                text_expect(&text).map(|e| (vec![Message::text(text)], e))
            }
            50..=59 => {
                let len = rng.below(300) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                Some((vec![Message::binary(bytes)], Expect::Error))
            }
            60..=69 => {
                // A text message split into fragments: one message to the server.
                let text = random_text(rng);
                let expect = text_expect(&text);
                let bytes = text.into_bytes();
                let cut = if bytes.is_empty() { 0 } else { rng.below(bytes.len() as u64) as usize };
                let first = Frame::message(bytes[..cut].to_vec(), OpCode::Data(Data::Text), false);
                let rest =
                    Frame::message(bytes[cut..].to_vec(), OpCode::Data(Data::Continue), true);
                // A fragment boundary may split a UTF-8 sequence; the whole message is still valid.
                expect.map(|e| (vec![Message::Frame(first), Message::Frame(rest)], e))
            }
            70..=76 => Some((
                vec![Message::Ping(vec![7u8; rng.below(125) as usize].into())],
                Expect::Nothing,
            )),
            77..=79 => Some((vec![Message::Pong(vec![1, 2, 3].into())], Expect::Nothing)),
            80..=86 => {
                // Invalid UTF-8 in a text frame, sent raw (a client library would refuse).
                let mut bytes = b"{\"type\": \"proof\", \"id\": \"".to_vec();
                bytes.extend_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
                bytes.extend_from_slice(b"\"}");
                Some((
                    vec![Message::Frame(Frame::message(bytes, OpCode::Data(Data::Text), true))],
                    Expect::Close,
                ))
            }
            87..=89 => {
                // A continuation with nothing to continue.
                let frame = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Continue), true);
                Some((vec![Message::Frame(frame)], Expect::Close))
            }
            90..=93 => {
                // Above the 64 KiB text cap, within the 1 MiB transport cap: an error frame.
                let len = 64 * 1024 + 1 + rng.below(256 * 1024) as usize;
                Some((vec![Message::text("a".repeat(len))], Expect::Error))
            }
            94..=95 => {
                // Beyond the transport cap: the connection is closed (1009).
                Some((
                    vec![Message::text("b".repeat(1024 * 1024 + 1 + rng.below(1024) as usize))],
                    Expect::Close,
                ))
            }
            96..=97 => Some((vec![Message::Close(None)], Expect::Close)),
            _ => {
                // A huge message in many small fragments.
                let mut frames = vec![Message::Frame(Frame::message(
                    b"[".to_vec(),
                    OpCode::Data(Data::Text),
                    false,
                ))];
                for _ in 0..200 {
                    frames.push(Message::Frame(Frame::message(
                        vec![b'1'; 8 * 1024],
                        OpCode::Data(Data::Continue),
                        false,
                    )));
                }
                frames.push(Message::Frame(Frame::message(
                    b"]".to_vec(),
                    OpCode::Data(Data::Continue),
                    true,
                )));
                Some((frames, Expect::Close))
            }
        };
        if let Some(out) = out {
            return out;
        }
    }
}

/// Reads until the answer `expect` calls for; block and stats frames (broadcasts) are skipped.
/// Returns false when the connection is gone (as it must be for [`Expect::Close`]).
async fn await_answer(ws: &mut Socket, expect: Expect, what: &str) -> bool {
    if expect == Expect::Nothing {
        return true;
    }
    loop {
        let frame = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no answer to {what}"));
        let frame = match frame {
            None | Some(Err(_)) => {
                assert_eq!(expect, Expect::Close, "connection lost after {what}");
                return false;
            }
            Some(Ok(frame)) => frame,
        };
        match frame {
            Message::Text(text) => {
                let msg = ServerMessage::from_json(text.as_str())
                    .unwrap_or_else(|e| panic!("unparsable server frame {text}: {e}"));
                match msg {
                    ServerMessage::Block { .. } | ServerMessage::Stats { .. } => {}
                    ServerMessage::Error { message } => {
                        assert!(!message.is_empty());
                        assert_eq!(expect, Expect::Error, "error {message:?} after {what}");
                        return true;
                    }
                    ServerMessage::Result { .. } => {
                        assert_eq!(expect, Expect::Result, "result after {what}");
                        return true;
                    }
                    other => panic!("unexpected {other:?} after {what}"),
                }
            }
            Message::Close(_) => {
                assert_eq!(expect, Expect::Close, "closed after {what}");
                return false;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_random_frames_never_stop_honest_miners() {
    const FUZZERS: u8 = 4;
    const FRAMES_EACH: u64 = 1_000;
    const CHECK_EVERY: u64 = 250;
    let server = Server::start_with(2, racing()).await;
    let honest = Honest::start(&server).await;
    let sent = Arc::new(AtomicU64::new(0));
    let closes = Arc::new(AtomicU64::new(0));

    let mut fuzzers = Vec::new();
    for f in 0..FUZZERS {
        let (addr, sent, closes) = (server.addr, sent.clone(), closes.clone());
        let mut forged = honest.forged.clone();
        fuzzers.push(tokio::spawn(async move {
            let mut rng = Rng::from_env("CRASH_SEED");
            let mut ws = ws_from(loopback(2 + f), addr).await.expect("fuzzer connects");
            let mut forged_before = *forged.borrow();
            for n in 1..=FRAMES_EACH {
                let (frames, expect) = random_frames(&mut rng);
                let what = format!("{:.200?}", frames.first());
                let mut open = true;
                for frame in frames {
                    if ws.send(frame).await.is_err() {
                        open = false;
                        break;
                    }
                }
                if open {
                    open = await_answer(&mut ws, expect, &what).await;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                if !open {
                    closes.fetch_add(1, Ordering::Relaxed);
                    ws = ws_from(loopback(2 + f), addr).await.expect("fuzzer reconnects");
                }
                if n % CHECK_EVERY == 0 {
                    // Honest miners forged a block since this fuzzer's last checkpoint, so mining
                    // is proven to go on during the fuzzing, not only after it.
                    let seen = tokio::time::timeout(
                        HANG_GUARD,
                        forged.wait_for(|now| *now > forged_before),
                    )
                    .await
                    .expect("honest miners keep forging during the fuzzing")
                    .map(|now| *now)
                    .expect("honest miners alive");
                    forged_before = seen;
                }
            }
        }));
    }
    for fuzzer in fuzzers {
        tokio::time::timeout(HANG_GUARD * 4, fuzzer)
            .await
            .expect("fuzzer ends")
            .expect("fuzzer ok");
    }
    let forged = honest.stop().await;
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "{sent} random frames, {} closed connections, {forged} honest blocks meanwhile",
        closes.load(Ordering::Relaxed)
    );
    assert_eq!(sent, u64::from(FUZZERS) * FRAMES_EACH);
    assert!(forged >= FRAMES_EACH / CHECK_EVERY);
    assert_valid_chain(&server.chain().await, server.difficulty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_clients_that_never_read_do_not_stop_honest_miners() {
    const DRIBBLERS: usize = 200;
    const SILENT: usize = 100;
    const NON_READERS: usize = 40;
    const BLOCKS: u64 = 40;
    let server = Server::start_with(2, racing()).await;
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    // Slowloris: an HTTP request a byte at a time that never ends, from several addresses.
    for n in 0..DRIBBLERS {
        let stop = stop.clone();
        attackers.push(tokio::spawn(async move {
            let Ok(mut tcp) = tcp_from(loopback(10 + (n % 4) as u8), addr).await else { return };
            let request = b"GET /last_block HTTP/1.1\r\nHost: pool\r\nX-Slow: ";
            for byte in request.iter().chain(std::iter::repeat(&b'a')) {
                if stop.load(Ordering::SeqCst) || tcp.write_all(&[*byte]).await.is_err() {
                    return;
                }
                // An attacker's pace, not a test timing.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }));
    }
    // Half-open: connects and never says a word.
    let mut silent = Vec::new();
    for n in 0..SILENT {
        silent.push(tcp_from(loopback(20 + (n % 4) as u8), addr).await);
    }
    // WebSocket clients that never read; half of them flood requests on top.
    for n in 0..NON_READERS {
        let stop = stop.clone();
        attackers.push(tokio::spawn(async move {
            let Some(mut ws) = ws_from(loopback(30 + (n % 4) as u8), addr).await else { return };
            if n % 2 == 0 {
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst)
                        || ws.feed(Message::text(r#"{"type":"last_block"}"#)).await.is_err()
                    {
                        break;
                    }
                }
                let _ = ws.flush().await;
            }
            // Hold the socket, unread, until the test ends.
            while !stop.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }));
    }

    let (mut watcher, _) = crate::support::Ws::connect_and_greet(&server.ws_url()).await;
    let mut honest = Honest::start(&server).await;
    honest.wait_for(BLOCKS).await;
    // An honest watcher sees the newest block pushed, despite everyone else.
    let last = server.last_block().await;
    let index = last["index"].as_u64().expect("index");
    assert_eq!(watcher.recv_block(index).await, last);
    let forged = honest.stop().await;
    assert!(forged >= BLOCKS);
    stop.store(true, Ordering::SeqCst);
    join_all(attackers).await;
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_valid_submissions_have_one_winner() {
    const WS: usize = 500;
    const HTTP: usize = 500;
    // 40 source addresses, 25 submissions each: well under the default cap of 64 connections
    // per address, even when the HTTP client opens a spare connection while racing its pool.
    const PER_ADDRESS: usize = 25;
    let server = Server::start(2).await;
    let genesis = server.last_block().await;
    let mut proofs = Vec::with_capacity(WS + HTTP);
    let mut next = 0;
    while proofs.len() < WS + HTTP {
        let p = mine(&genesis, server.difficulty, next);
        proofs.push(p);
        next = p + 1;
    }
    let (ws_proofs, http_proofs) = proofs.split_at(WS);

    // Every WebSocket connected and greeted, every HTTP connection warm, before the start.
    let barrier = Arc::new(Barrier::new(WS + HTTP));
    let mut tasks = Vec::new();
    for (n, proof) in ws_proofs.iter().copied().enumerate() {
        let from = loopback(40 + (n / PER_ADDRESS) as u8); // 127.0.0.40..=59
        let mut ws = ws_from(from, server.addr).await.expect("ws connects");
        let first = ws.next().await.expect("greeting").expect("frame");
        assert!(first.to_text().expect("text").contains("\"block\""));
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let msg = json!({"type": "proof", "proof": proof, "id": format!("ws-{n}"), "index": 1});
            ws.send(Message::text(msg.to_string())).await.expect("send");
            loop {
                let frame = tokio::time::timeout(HANG_GUARD, ws.next())
                    .await
                    .expect("a result")
                    .expect("open")
                    .expect("frame");
                let msg: Value =
                    serde_json::from_str(frame.to_text().expect("text")).expect("json");
                if msg["type"] == "result" {
                    return msg;
                }
            }
        }));
    }
    let clients: Vec<reqwest::Client> = (0..HTTP / PER_ADDRESS)
        .map(|i| {
            reqwest::Client::builder()
                .local_address(loopback(60 + i as u8)) // 127.0.0.60..=79
                .build()
                .expect("client")
        })
        .collect();
    for (n, proof) in http_proofs.iter().copied().enumerate() {
        let client = clients[n / PER_ADDRESS].clone();
        let url = server.url("/mine");
        let last_block = server.url("/last_block");
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            // Warm a connection so the race is between requests, not TCP handshakes.
            client.get(last_block).send().await.expect("warm-up");
            barrier.wait().await;
            let body = json!({"proof": proof, "id": format!("http-{n}"), "index": 1});
            let answer: Value = client
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("POST")
                .json()
                .await
                .expect("json");
            answer
        }));
    }
    let answers: Vec<Value> = join_all(tasks).await.into_iter().map(|r| r.expect("task")).collect();
    assert_eq!(answers.len(), WS + HTTP);
    assert_one_winner(&answers);
    let chain = server.chain().await;
    assert_eq!(chain.len(), 2);
}
