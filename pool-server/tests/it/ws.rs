//! The WebSocket protocol: push on connect, broadcast, results, bad frames, stuck clients.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Server, Ws, mine};

#[tokio::test]
async fn pushes_the_last_block_on_connect_and_on_request() {
    let server = Server::start(2).await;
    let (mut ws, first) = Ws::connect_and_greet(&server.ws_url()).await;
    assert_eq!(first["difficulty"], 2);
    assert_eq!(first["block"]["index"], 1);
    assert_eq!(first["block"]["previous_hash"], "1");
    assert_eq!(first["block"]["proof"], 100);
    assert_eq!(first["block"], server.last_block().await);

    ws.send_text(r#"{"type": "last_block"}"#).await;
    assert_eq!(ws.recv().await, first);
}

#[tokio::test]
async fn broadcasts_every_forged_block_from_ws_and_http() {
    let server = Server::start(2).await;
    let url = server.ws_url();
    let (mut miner, greeting) = Ws::connect_and_greet(&url).await;
    let mut watchers = Vec::new();
    for _ in 0..3 {
        watchers.push(Ws::connect_and_greet(&url).await.0);
    }

    // A proof over WebSocket wins block 2; its sender gets a result, everyone gets the block.
    let proof = mine(&greeting["block"], server.difficulty, 0);
    miner.send_text(json!({"type": "proof", "proof": proof, "id": "alice"}).to_string()).await;
    // Its sender gets both the result and the broadcast, in either order.
    let (mut result, mut block2) = (Value::Null, Value::Null);
    while result.is_null() || block2.is_null() {
        let msg = miner.recv().await;
        match msg["type"].as_str() {
            Some("result") => result = msg,
            Some("block") => block2 = msg["block"].clone(),
            _ => panic!("unexpected {msg}"),
        }
    }
    assert_eq!(
        result,
        json!({"type": "result", "accepted": true, "message": "New Block Forged",
               "reason": null, "index": 2})
    );
    assert_eq!(block2["transactions"], json!([{"sender": "0", "recipient": "alice", "amount": 1}]));
    assert_eq!(block2["proof"], proof);
    for w in &mut watchers {
        assert_eq!(w.recv_block(2).await, block2);
    }

    // A proof over HTTP is broadcast to WebSocket clients too.
    let block3 = server.forge("bob").await;
    assert_eq!(block3["index"], 3);
    assert_eq!(miner.recv_block(3).await, block3);
    for w in &mut watchers {
        assert_eq!(w.recv_block(3).await, block3);
    }
}

#[tokio::test]
async fn stale_and_invalid_results() {
    let server = Server::start(2).await;
    let (mut ws, greeting) = Ws::connect_and_greet(&server.ws_url()).await;
    let genesis = greeting["block"].clone();
    // Two different proofs valid for the genesis block.
    let first = mine(&genesis, server.difficulty, 0);
    let block2 = server.forge("carol").await;
    // The next proof valid for genesis that is not valid for block 2: stale, not a win.
    let mut stale = mine(&genesis, server.difficulty, first + 1);
    while mine(&block2, server.difficulty, stale) == stale {
        stale = mine(&genesis, server.difficulty, stale + 1);
    }
    ws.send_text(json!({"type": "proof", "proof": stale, "id": "dave"}).to_string()).await;
    let result = ws.recv_result().await;
    assert_eq!(result["accepted"], false);
    assert_eq!(result["reason"], "stale");
    assert_eq!(result["index"], 2);
    let message = result["message"].as_str().expect("message");
    assert!(message.starts_with("block #2 was already won by carol "), "{message}");

    // Naming the block mined on makes a proof for an old block stale even if it would fit.
    ws.send_text(json!({"type": "proof", "proof": first, "id": "dave", "index": 1}).to_string())
        .await;
    assert_eq!(ws.recv_result().await["reason"], "stale");

    // Valid for neither block: invalid.
    let invalid = (0..)
        .find(|p| {
            mine(&genesis, server.difficulty, *p) != *p
                && mine(&block2, server.difficulty, *p) != *p
        })
        .expect("an invalid proof");
    ws.send_text(json!({"type": "proof", "proof": invalid, "id": "dave"}).to_string()).await;
    let result = ws.recv_result().await;
    assert_eq!(result["reason"], "invalid");
    assert_eq!(result["accepted"], false);
    assert!(result["message"].as_str().expect("message").contains("not valid for block 2"));
    assert_eq!(server.chain().await.len(), 2);
}

#[tokio::test]
async fn bad_frames_get_an_error_and_the_connection_stays_usable() {
    let server = Server::start(2).await;
    let (mut ws, greeting) = Ws::connect_and_greet(&server.ws_url()).await;
    let huge_id = "x".repeat(200);
    let proof_with =
        |proof: &str, id: &str| format!(r#"{{"type":"proof","proof":{proof},"id":{id}}}"#);
    let frames: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "not valid JSON"),
        (Message::text(""), "not valid JSON"),
        (Message::binary(vec![1u8, 2, 3]), "binary"),
        (Message::text("[1, 2]"), "expected a JSON object, got an array"),
        (Message::text("42"), "expected a JSON object"),
        (Message::text(r#"{"proof": 1, "id": "a"}"#), "missing \"type\""),
        (Message::text(r#"{"type": "mine"}"#), "unknown message type"),
        (Message::text(r#"{"type": 7}"#), "missing \"type\""),
        (Message::text(r#"{"type": "proof", "id": "a"}"#), "missing field \"proof\""),
        (Message::text(r#"{"type": "proof", "proof": 1}"#), "missing field \"id\""),
        (Message::text(proof_with("1.5", "\"a\"")), "\"proof\" must be"),
        (Message::text(proof_with("-1", "\"a\"")), "\"proof\" must be"),
        (Message::text(proof_with("\"12\"", "\"a\"")), "\"proof\" must be"),
        (Message::text(proof_with("18446744073709551616", "\"a\"")), "\"proof\" must be"),
        (Message::text(proof_with("1", "\"\"")), "\"id\" must not be empty"),
        (Message::text(proof_with("1", "\"  \\n\"")), "\"id\" must not be empty"),
        (Message::text(proof_with("1", "5")), "\"id\" must be a string"),
        (Message::text(proof_with("1", "null")), "\"id\" must be a string"),
        (Message::text(proof_with("1", &format!("\"{huge_id}\""))), "at most 128"),
        (Message::text(r#"{"type":"proof","proof":1,"id":"a","index":-2}"#), "\"index\" must be"),
        (
            Message::text(format!(r#"{{"type":"last_block","pad":"{}"}}"#, "y".repeat(100_000))),
            "at most 65536",
        ),
    ];
    for (frame, expected) in frames {
        ws.send(&frame).await;
        let reply = ws.recv().await;
        assert_eq!(reply["type"], "error", "{frame:?} -> {reply}");
        let message = reply["message"].as_str().expect("message");
        assert!(message.contains(expected), "{frame:?} -> {message:?}, expected {expected:?}");
    }
    // Still connected and served.
    ws.send_text(r#"{"type":"last_block"}"#).await;
    assert_eq!(ws.recv().await, greeting);
    let proof = mine(&greeting["block"], server.difficulty, 0);
    ws.send_text(json!({"type": "proof", "proof": proof, "id": " erin\n"}).to_string()).await;
    assert_eq!(ws.recv_result().await["accepted"], true);
    let chain = server.chain().await;
    assert_eq!(chain[1]["transactions"][0]["recipient"], "erin", "id is trimmed");
}

#[tokio::test]
async fn a_frame_beyond_the_transport_limit_closes_only_that_connection() {
    let server = Server::start(2).await;
    let (mut big, _) = Ws::connect_and_greet(&server.ws_url()).await;
    let (mut other, _) = Ws::connect_and_greet(&server.ws_url()).await;
    big.send_text("z".repeat(2 * 1024 * 1024)).await;
    match big.recv_raw().await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1009);
            assert!(frame.reason.as_str().contains("too big"), "{}", frame.reason);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    let block = server.forge("frank").await;
    assert_eq!(other.recv_block(2).await, block);
}

#[tokio::test]
async fn a_stuck_client_does_not_delay_the_others() {
    let server = Server::start(2).await;
    let (mut live, _) = Ws::connect_and_greet(&server.ws_url()).await;
    // Never reads; floods requests so that its replies fill every buffer on the way.
    let (mut stuck, _) = tokio_tungstenite::connect_async(server.ws_url()).await.expect("connect");
    let flood = tokio::spawn(async move {
        for _ in 0..50_000 {
            if stuck.feed(Message::text(r#"{"type":"last_block"}"#)).await.is_err() {
                break;
            }
        }
        let _ = stuck.flush().await;
        stuck
    });
    // Not a stuck one: a connection that never reads at all.
    let (_idle, _) = tokio_tungstenite::connect_async(server.ws_url()).await.expect("connect");
    for index in 2..=30u64 {
        let block = server.forge("grace").await;
        assert_eq!(block["index"], index);
        assert_eq!(live.recv_block(index).await, block);
    }
    // The flooder is stuck in its writes until the server gives up on it; no need to wait.
    flood.abort();
    let chain: Vec<Value> = server.chain().await;
    assert_eq!(chain.len(), 30);
}

#[tokio::test]
async fn shutdown_closes_every_connection_cleanly() {
    let server = Server::start(2).await;
    let (mut a, _) = Ws::connect_and_greet(&server.ws_url()).await;
    let (mut b, _) = Ws::connect_and_greet(&server.ws_url()).await;
    let stopping = tokio::spawn(server.stop());
    for ws in [&mut a, &mut b] {
        match ws.recv_raw().await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1001);
                assert_eq!(frame.reason.as_str(), "server shutting down");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    stopping.await.expect("task").expect("run returns Ok");
}
