//! The WebSocket session against scripted, misbehaving test servers.

use crate::support::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use ws_miner::{Event, Outcome};

/// Renders events as the plain lines a user sees, with what varies between runs (times,
/// attempt counts, random proofs, ports, the CPU's kernel) replaced by fixed values.
fn plain_redacted(events: &[Event], addr: std::net::SocketAddr) -> String {
    let lines: Vec<String> = events
        .iter()
        .map(|event| {
            let mut e = event.clone();
            match &mut e {
                Event::SearchFinished { proof, secs, attempts, hashrate, .. } => {
                    (*proof, *secs, *attempts, *hashrate) = (4242, 1.5, 3_000_000, 2_000_000.0);
                }
                Event::Accepted { proof, .. } | Event::Rejected { proof, .. } => *proof = 4242,
                // The kernel depends on the CPU (portable, AVX2, SHA-NI...).
                Event::SearchStarted { kernel, .. } => *kernel = "KERNEL",
                Event::SearchAborted {
                    secs,
                    arrived_ts,
                    flag_ms,
                    stop_ms,
                    attempts,
                    stale_attempts,
                    ..
                } => {
                    (*secs, *arrived_ts, *flag_ms, *stop_ms) = (0.25, 1.7e9, 0.05, 1.0);
                    (*attempts, *stale_attempts) = (500_000, 300);
                }
                Event::Summary(s) => {
                    (s.attempts, s.search_secs, s.run_secs) = (6_000_000, 3.0, 4.0);
                }
                _ => {}
            }
            e.to_plain().replace(&addr.to_string(), "HOST:PORT")
        })
        .collect();
    lines.join("\n")
}

#[tokio::test]
async fn mines_pushed_blocks_reports_results_and_summarises() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;

    let b1 = block(1, "first");
    send(&mut ws, block_frame(&b1, EASY)).await;
    let proof = recv_proof(&mut ws).await;
    assert_eq!(proof["id"], "alice");
    assert_eq!(proof["index"], 1);
    assert!(solves(&b1, EASY, &proof["proof"]), "{proof} does not solve block 1");
    assert_ne!(proof["proof"], 0, "searches start at a random proof");
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    miner.wait_for("accepted", |e| matches!(e, Event::Accepted { .. }).then_some(())).await;

    let b2 = block(2, "first");
    send(&mut ws, block_frame(&b2, EASY)).await;
    let proof = recv_proof(&mut ws).await;
    assert!(solves(&b2, EASY, &proof["proof"]));
    send(&mut ws, result_frame(false, "block 2 was already won by bob 0.1s ago", Some("stale"), 3))
        .await;
    miner.wait_for("rejected", |e| matches!(e, Event::Rejected { .. }).then_some(())).await;
    // After a rejection the miner asks for the current block rather than sit idle.
    let asked = within("a last_block request", async {
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                return t.to_string();
            }
        }
    })
    .await;
    assert_eq!(asked, r#"{"type":"last_block"}"#);

    let (outcome, events) = miner.stop().await;
    assert_eq!(outcome, Outcome::Interrupted);
    let s = summary(&events);
    assert_eq!((s.blocks_won, s.coins, s.rejected_stale, s.rejected_invalid), (1, 1, 1, 0));
    assert!(s.attempts > 0);
    insta::assert_snapshot!(plain_redacted(&events, server.addr), @r"
    connected to ws://HOST:PORT/ws (websocket)
    block #2: mining at difficulty 3 (KERNEL kernel, 2 threads)
    block #2: found proof 4242 in 1.50s (3000000 attempts, 2.00 MH/s)
    won block #2 with proof 4242: New Block Forged (coins: 1 this run)
    block #3: mining at difficulty 3 (KERNEL kernel, 2 threads)
    block #3: found proof 4242 in 1.50s (3000000 attempts, 2.00 MH/s)
    block #3: proof 4242 rejected (stale): block 2 was already won by bob 0.1s ago
    summary: 1 blocks won, coins: 1 this run, proofs rejected: 1 stale, 0 invalid, 0 searches aborted by a new block
    summary: 6000000 attempts in 3.00s of search (2.00 MH/s average), run time 4.00s
    ");
}

#[tokio::test]
async fn garbage_frames_are_reported_and_ignored() {
    let server = WsServer::bind().await;
    let miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    let garbage = [
        Message::text("this is not JSON"),
        Message::binary(vec![0u8, 159, 146, 150]),
        Message::text(r#"{"type": "surprise", "block": 1}"#),
        Message::text("[1, 2, 3]"),
        Message::text(r#"{"type": "block"}"#),
        Message::text(r#"{"type": "block", "block": "nope", "difficulty": 3}"#),
        Message::text(r#"{"type": "block", "block": {"index": 1}, "difficulty": 99}"#),
        Message::text(r#"{"type": "result", "accepted": true, "message": "New Block Forged"}"#),
        Message::text(r#"{"no type": true}"#),
    ];
    let count = garbage.len();
    for frame in garbage {
        send(&mut ws, frame).await;
    }
    let b = block(7, "garbage");
    send(&mut ws, block_frame(&b, EASY)).await;
    let proof = recv_proof(&mut ws).await;
    assert!(solves(&b, EASY, &proof["proof"]));
    let (_, events) = miner.stop().await;
    let ignored: Vec<&Event> =
        events.iter().filter(|e| matches!(e, Event::Ignored { .. })).collect();
    assert_eq!(ignored.len(), count, "one line per bad frame: {ignored:#?}");
    for e in &ignored {
        println!("{}", e.to_plain());
    }
    assert!(!events.iter().any(|e| matches!(e, Event::Disconnected { .. })));
}

#[tokio::test]
async fn a_newer_block_aborts_the_search() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "hard"), NEVER)).await;
    miner
        .wait_for("search on block 1", |e| {
            matches!(e, Event::SearchStarted { index: Some(1), .. }).then_some(())
        })
        .await;
    let b2 = block(2, "hard");
    send(&mut ws, block_frame(&b2, EASY)).await;
    let (flag_ms, stop_ms, attempts, stale) = miner
        .wait_for("the abort", |e| match e {
            Event::SearchAborted {
                index: Some(1),
                by_index: Some(2),
                flag_ms,
                stop_ms,
                attempts,
                stale_attempts,
                ..
            } => Some((*flag_ms, *stop_ms, *attempts, *stale_attempts)),
            _ => None,
        })
        .await;
    println!(
        "abort latency: stop flag set {flag_ms:.3} ms after the new block, workers stopped \
         {stop_ms:.2} ms later; {stale} of {attempts} attempts after the new block"
    );
    assert!(stale <= attempts);
    let started = miner
        .wait_for("the next search", |e| match e {
            Event::SearchStarted { index, .. } => Some(*index),
            _ => None,
        })
        .await;
    assert_eq!(started, Some(2));
    let proof = recv_proof(&mut ws).await;
    assert_eq!(proof["index"], 2);
    assert!(solves(&b2, EASY, &proof["proof"]));
    let (_, events) = miner.stop().await;
    assert_eq!(summary(&events).aborted, 1);
}

#[tokio::test]
async fn the_same_block_again_does_not_restart_the_search() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    let b = block(1, "same");
    send(&mut ws, block_frame(&b, NEVER)).await;
    send(&mut ws, block_frame(&b, NEVER)).await;
    // A marker the miner must report after handling both blocks: frames are handled in order.
    send(&mut ws, Message::text("marker")).await;
    miner.wait_for("the marker", |e| matches!(e, Event::Ignored { .. }).then_some(())).await;
    let (_, events) = miner.stop().await;
    let starts = events.iter().filter(|e| matches!(e, Event::SearchStarted { .. })).count();
    assert_eq!(starts, 1, "{events:#?}");
}

#[tokio::test]
async fn closing_the_socket_mid_search_reconnects_and_keeps_the_search() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    let b1 = block(1, "close");
    send(&mut ws, block_frame(&b1, NEVER)).await;
    miner.wait_for("search", |e| matches!(e, Event::SearchStarted { .. }).then_some(())).await;
    drop(ws); // no close frame: the TCP connection just ends
    miner.wait_for("disconnect", |e| matches!(e, Event::Disconnected { .. }).then_some(())).await;
    let mut ws = server.accept().await;
    // The same block again: the search that kept running during the reconnect goes on.
    send(&mut ws, block_frame(&b1, NEVER)).await;
    let b2 = block(2, "close");
    send(&mut ws, block_frame(&b2, EASY)).await;
    let proof = recv_proof(&mut ws).await;
    assert!(solves(&b2, EASY, &proof["proof"]));
    let (_, events) = miner.stop().await;
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::SearchStarted { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![Some(1), Some(2)]);
}

#[tokio::test]
async fn a_close_frame_is_reported_with_its_reason() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Away,
        reason: "server restarting".into(),
    }))
    .await
    .expect("close");
    let reason = miner
        .wait_for("disconnect", |e| match e {
            Event::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("server restarting"), "{reason}");
    let mut ws = server.accept().await;
    let b = block(3, "close-frame");
    send(&mut ws, block_frame(&b, EASY)).await;
    assert!(solves(&b, EASY, &recv_proof(&mut ws).await["proof"]));
    miner.stop().await;
}

#[tokio::test]
async fn a_server_restart_on_the_same_port_is_survived() {
    let server = WsServer::bind().await;
    let addr = server.addr;
    let mut miner = MinerRun::start(config(ws_endpoint(addr), "alice"));
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "restart"), NEVER)).await;
    miner.wait_for("search", |e| matches!(e, Event::SearchStarted { .. }).then_some(())).await;
    // The server goes away: listener and connection.
    drop(ws);
    drop(server);
    miner.wait_for("disconnect", |e| matches!(e, Event::Disconnected { .. }).then_some(())).await;
    let error = miner
        .wait_for("a refused reconnect", |e| match e {
            Event::ConnectFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .await;
    println!("while the server was down: {error}");
    // The server comes back on the same port with a new chain.
    let listener = tokio::net::TcpListener::bind(addr).await.expect("re-bind the same port");
    let server = WsServer { listener, addr };
    let mut ws = server.accept().await;
    let fresh = block(1, "after-restart");
    send(&mut ws, block_frame(&fresh, EASY)).await;
    let proof = recv_proof(&mut ws).await;
    assert!(solves(&fresh, EASY, &proof["proof"]));
    miner.stop().await;
}

#[tokio::test]
async fn refused_connections_are_retried_until_the_server_appears() {
    // Find a free port, then leave it closed for a while.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    };
    let mut miner = MinerRun::start(config(ws_endpoint(addr), "alice"));
    for attempt in 0..2 {
        let line = miner
            .wait_for("a failed attempt", |e| {
                matches!(e, Event::ConnectFailed { .. }).then(|| e.to_plain())
            })
            .await;
        println!("attempt {attempt}: {line}");
    }
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the port");
    let server = WsServer { listener, addr };
    let mut ws = server.accept().await;
    let b = block(1, "late");
    send(&mut ws, block_frame(&b, EASY)).await;
    assert!(solves(&b, EASY, &recv_proof(&mut ws).await["proof"]));
    miner.stop().await;
}

#[tokio::test]
async fn dns_failure_is_one_line_per_attempt_and_ctrl_c_still_works() {
    let endpoint =
        ws_miner::cli::parse_endpoint("ws://no-such-host.invalid:5000/ws").expect("valid URL");
    let mut miner = MinerRun::start(config(endpoint, "alice"));
    let error = miner
        .wait_for("a failed attempt", |e| match e {
            Event::ConnectFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .await;
    println!("DNS failure: {error}");
    let (outcome, _) = miner.stop().await;
    assert_eq!(outcome, Outcome::Interrupted);
}

#[tokio::test]
async fn slow_handshakes_and_slow_answers_are_waited_for() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let (tcp, _) = within("tcp connect", server.listener.accept()).await.expect("accept");
    // The server is slow to finish the handshake (well under the miner's 10 s connect timeout).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("handshake");
    let b = block(1, "slow");
    send(&mut ws, block_frame(&b, EASY)).await;
    let proof = recv_proof(&mut ws).await;
    // ... and slow to answer the proof.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    let coins = miner
        .wait_for("accepted", |e| match e {
            Event::Accepted { coins, .. } => Some(*coins),
            _ => None,
        })
        .await;
    assert_eq!(coins, 1);
    assert!(solves(&b, EASY, &proof["proof"]));
    let (_, events) = miner.stop().await;
    assert!(!events.iter().any(|e| matches!(e, Event::Disconnected { .. })));
}

#[tokio::test]
async fn a_proof_found_while_disconnected_is_sent_after_reconnecting() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    let b = block(1, "away");
    send(&mut ws, block_frame(&b, EASY)).await;
    // The proof is sent, but the server dies before answering.
    let first = recv_proof(&mut ws).await;
    drop(ws);
    miner.wait_for("disconnect", |e| matches!(e, Event::Disconnected { .. }).then_some(())).await;
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&b, EASY)).await;
    let again = recv_proof(&mut ws).await;
    assert_eq!(first["proof"], again["proof"], "the unanswered proof is sent again");
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    miner.wait_for("accepted", |e| matches!(e, Event::Accepted { .. }).then_some(())).await;
    miner.stop().await;
}

#[tokio::test]
async fn once_exits_won_or_lost() {
    // Won: the first proof is accepted.
    let server = WsServer::bind().await;
    let mut cfg = config(ws_endpoint(server.addr), "alice");
    cfg.once = true;
    let miner = MinerRun::start(cfg.clone());
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "once"), EASY)).await;
    recv_proof(&mut ws).await;
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    let (outcome, events) = miner.finish().await;
    assert_eq!(outcome, Outcome::Won);
    assert_eq!(summary(&events).coins, 1);

    // Lost: someone else's block arrives first.
    let miner = MinerRun::start(cfg);
    let mut ws = server.accept().await;
    send(&mut ws, block_frame(&block(1, "once-lost"), NEVER)).await;
    send(&mut ws, block_frame(&block(2, "once-lost"), NEVER)).await;
    let (outcome, events) = miner.finish().await;
    assert_eq!(outcome, Outcome::Lost);
    assert_eq!(summary(&events).aborted, 1);
}

#[tokio::test]
async fn zeros_applies_when_the_server_states_no_difficulty() {
    let server = WsServer::bind().await;
    let mut cfg = config(ws_endpoint(server.addr), "alice");
    cfg.zeros = protocol::Difficulty::new(2).expect("in range");
    let mut miner = MinerRun::start(cfg);
    let mut ws = server.accept().await;
    let b = block(1, "no-difficulty");
    let frame = serde_json::json!({"type": "block", "block": b}).to_string();
    send(&mut ws, Message::text(frame)).await;
    let zeros = miner
        .wait_for("search", |e| match e {
            Event::SearchStarted { difficulty, .. } => Some(*difficulty),
            _ => None,
        })
        .await;
    assert_eq!(zeros, 2);
    assert!(solves(&b, 2, &recv_proof(&mut ws).await["proof"]));
    miner.stop().await;
}

#[tokio::test]
async fn results_answer_proofs_in_order_even_when_a_second_proof_is_sent_first() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    let mut ws = server.accept().await;
    // Block 1 is won by our proof, and the server pushes block 2 before answering it (as a
    // busy pool-server may): the miner mines block 2 and sends a second proof meanwhile.
    send(&mut ws, block_frame(&block(1, "order"), EASY)).await;
    let first = recv_proof(&mut ws).await;
    send(&mut ws, block_frame(&block(2, "order"), EASY)).await;
    let second = recv_proof(&mut ws).await;
    assert_eq!((first["index"].as_u64(), second["index"].as_u64()), (Some(1), Some(2)));
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    send(&mut ws, result_frame(false, "block 2 was already won by bob", Some("stale"), 3)).await;
    miner
        .wait_for("the second answer", |e| matches!(e, Event::Rejected { .. }).then_some(()))
        .await;
    let (_, events) = miner.stop().await;
    let answers: Vec<(Option<u64>, bool)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Accepted { index, .. } => Some((*index, true)),
            Event::Rejected { index, .. } => Some((*index, false)),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![(Some(1), true), (Some(2), false)]);
    assert!(!events.iter().any(|e| matches!(e, Event::Ignored { .. })), "{events:#?}");
}
