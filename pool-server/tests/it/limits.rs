//! The server's limits, each at its boundary: connections per IP address (WebSockets included,
//! a JSON 429 beyond), the deadline for request headers (slowloris), the body cap (413), the
//! id length cap (HTTP 400 and WebSocket `error`), the text frame cap and the rate of TLS
//! handshakes per address.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pool_server::serve::Limits;
use pool_server::tls::TlsFiles;
use protocol::message::MAX_ID_CHARS;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{HANG_GUARD, Server, Ws, loopback, raw_request, tcp_from, ws_from};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped_and_others_are_unaffected() {
    const CAP: usize = 8;
    let limits = Limits { max_conns_per_ip: CAP, ..Limits::default() };
    let server = Server::start_with(2, limits).await;
    let greedy = loopback(9);
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut ws = ws_from(greedy, server.addr).await.expect("under the cap");
        assert_eq!(ws.recv().await["type"], "block");
        held.push(ws);
    }
    // One more from the same address: refused with a reason, over WebSocket and HTTP alike.
    let refused = ws_from(greedy, server.addr).await.err().expect("over the cap");
    assert!(refused.contains("429"), "{refused}");
    let answer =
        raw_request(greedy, server.addr, "GET /last_block HTTP/1.1\r\nHost: pool\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    let body: Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("JSON");
    assert!(body["message"].as_str().expect("message").contains("at most 8"), "{body}");

    // Everyone else mines and watches as usual.
    let (mut watcher, _) = Ws::connect_and_greet(&server.ws_url()).await;
    let block = server.forge("honest").await;
    assert_eq!(watcher.recv_block(2).await, block);
    for ws in &mut held {
        assert_eq!(ws.recv_block(2).await, block);
    }

    // A closed connection gives its place back (as soon as the server has seen the close).
    held.pop().expect("one").close().await;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        match ws_from(greedy, server.addr).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(e.contains("429"), "{e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the slot never came back: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_have_a_deadline() {
    let limits = Limits { header_read_timeout: Duration::from_millis(500), ..Limits::default() };
    let server = Server::start_with(2, limits).await;
    // Half a request, then silence; and a request dribbled a byte at a time, forever.
    let mut silent = tcp_from(loopback(1), server.addr).await;
    silent.write_all(b"GET /last_block HTTP/1.1\r\nHost: po").await.expect("write");
    let dribbler = tokio::spawn({
        let addr = server.addr;
        async move {
            let mut tcp = tcp_from(loopback(1), addr).await;
            let header = b"GET /last_block HTTP/1.1\r\nHost: pool\r\nX-Slow: ";
            for byte in header.iter().chain(std::iter::repeat(&b'a')) {
                if tcp.write_all(&[*byte]).await.is_err() {
                    return;
                }
                // The attacker's pace, not a test timing.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // Both are cut off by the server (the dribbler's writes start failing).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, silent.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the half-sent request was never cut off");
    tokio::time::timeout(HANG_GUARD, dribbler)
        .await
        .expect("the dribbler is cut off")
        .expect("task");
    // A complete request is served as usual.
    assert_eq!(server.last_block().await["index"], 1);
}

#[tokio::test]
async fn bodies_ids_and_frames_are_capped() {
    let server = Server::start(2).await;
    let client = reqwest::Client::new();
    // Body: 64 KiB at most.
    let big = json!({"proof": 1, "id": "x", "pad": "y".repeat(64 * 1024)});
    let answer = client.post(server.url("/mine")).json(&big).send().await.expect("POST");
    assert_eq!(answer.status(), 413);
    let body: Value = answer.json().await.expect("JSON 413");
    assert!(body["message"].is_string(), "{body}");
    // Id: MAX_ID_CHARS characters after trimming, over HTTP and WebSocket; exactly the cap is fine.
    let long = "é".repeat(MAX_ID_CHARS + 1);
    let answer = client
        .post(server.url("/mine"))
        .json(&json!({"proof": 1, "id": long}))
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.expect("JSON");
    assert!(body["message"].as_str().expect("message").contains("at most 128"), "{body}");
    let fits = format!("  {}\n", "é".repeat(MAX_ID_CHARS));
    let answer: Value = client
        .post(server.url("/mine"))
        .json(&json!({"proof": 1, "id": fits}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["reason"], "invalid", "{answer}");
    let (mut ws, _) = Ws::connect_and_greet(&server.ws_url()).await;
    ws.send_text(json!({"type": "proof", "proof": 1, "id": long}).to_string()).await;
    let error = ws.recv().await;
    assert_eq!(error["type"], "error");
    assert!(error["message"].as_str().expect("message").contains("at most 128"), "{error}");
    // Text frames: 64 KiB at most, answered with an error; the connection stays usable.
    ws.send_text(format!("{{\"type\": \"last_block\", \"pad\": \"{}\"}}", "z".repeat(64 * 1024)))
        .await;
    let error = ws.recv().await;
    assert_eq!(error["type"], "error");
    assert!(error["message"].as_str().expect("message").contains("at most 65536"), "{error}");
    ws.send_text(r#"{"type": "last_block"}"#).await;
    assert_eq!(ws.recv().await["type"], "block");
}

/// Full TLS handshakes cost the server far more than the client, so each address may start
/// `--tls-handshake-rate` of them a second (twice that at once); beyond it a connection is
/// closed before its handshake, and other addresses are unaffected. Before, there was no bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_are_rate_limited_per_address() {
    const RATE: u32 = 1;
    const BURST: u32 = 2 * RATE;
    const TRIES: u32 = 12;
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    let limits = Limits { tls_handshake_rate: RATE, ..Limits::default() };
    let server = Server::start_tls(2, limits, TlsFiles { cert, key }).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async |from| {
        let tcp = tcp_from(from, server.addr).await;
        let name = ServerName::try_from("localhost").expect("a name");
        let done = tokio::time::timeout(HANG_GUARD, connector.connect(name, tcp)).await;
        done.expect("the handshake ends one way or the other").is_ok()
    };
    let start = Instant::now();
    let mut done = 0;
    for _ in 0..TRIES {
        if handshake(loopback(1)).await {
            done += 1;
        }
    }
    // The burst, plus what refilled while they ran (and one for rounding).
    let refilled = (start.elapsed().as_secs_f64() * f64::from(RATE)).ceil() as u32;
    assert!(
        (BURST..=BURST + refilled + 1).contains(&done) && done < TRIES,
        "{done} of {TRIES} handshakes from one address went through in {:?}",
        start.elapsed()
    );
    assert!(handshake(loopback(2)).await, "another address is unaffected");
}
