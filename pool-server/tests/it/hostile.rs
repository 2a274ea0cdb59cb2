//! A hostile client against the server's write paths, each attack at the API boundary: the
//! huge-block attack (transaction spam with ids that grow when escaped), unprintable ids, write
//! floods (per-address rate limits, neighbours unaffected), oversized request heads and bad
//! `/balance` ids. Every refusal is a JSON `{"message"}` or an `error` frame.

use std::process::Command;

use pool_server::chain::{MAX_PENDING_BYTES, MAX_PENDING_TRANSACTIONS};
use pool_server::serve::Limits;
use protocol::block::MAX_BLOCK_BYTES;
use protocol::to_python_json;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{HANG_GUARD, Server, Ws, loopback, mine, raw_request, tcp_from, ws_from};

/// A party name of 128 bytes that grows the most when Python escapes it: 32 characters above
/// U+FFFF, each printed as a 12-byte surrogate pair (`\ud83d\ude80`), so 384 bytes.
fn widest_party(n: usize) -> String {
    let tag = format!("{n:06}");
    let rockets = "🚀".repeat(30);
    // 6 ASCII digits + 30 × 4 bytes = 126 bytes; pad to 128 with a 2-byte character.
    format!("{tag}{rockets}é")
}

async fn post_transaction(client: &reqwest::Client, server: &Server, body: &Value) -> (u16, Value) {
    let response = client
        .post(server.url("/transactions/new"))
        .json(body)
        .send()
        .await
        .expect("POST /transactions/new");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// The attack that made a 17.6 MB block and stopped every WebSocket miner: spam the widest
/// transactions the rules allow. The server refuses them once the next block is full, the block
/// then forged stays under the documented maximum, and clients with their libraries' default
/// frame limits (tungstenite here, Python's `websockets`, whose default is 1 MiB) keep mining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_spam_cannot_make_a_block_miners_cannot_read() {
    let limits = Limits { transaction_rate: 1_000_000, ..Limits::default() };
    let server = Server::start_with(1, limits).await;
    let client = reqwest::Client::new();
    let mut accepted = 0;
    let refusal = loop {
        let n = accepted;
        let body =
            json!({ "sender": widest_party(n), "recipient": widest_party(n + 1), "amount": 1 });
        let (status, answer) = post_transaction(&client, &server, &body).await;
        match status {
            201 => accepted += 1,
            429 => break answer,
            other => panic!("unexpected {other}: {answer}"),
        }
        assert!(accepted <= 20_000, "20,000 transactions were queued without a refusal");
    };
    let message = refusal["message"].as_str().expect("a message");
    assert!(message.contains("the next block (#2) is full"), "{message}");
    assert!(accepted <= MAX_PENDING_TRANSACTIONS);

    // Mine the full block over WebSocket: the forged block and its frame stay under the bound.
    let (mut ws, greeting) = Ws::connect_and_greet(&server.ws_url()).await;
    let proof = mine(&greeting["block"], server.difficulty, 0);
    ws.send_text(json!({ "type": "proof", "proof": proof, "id": widest_party(0) }).to_string())
        .await;
    // The result and the broadcast of block 2 arrive in either order.
    let (mut result, mut frame) = (None, None);
    while result.is_none() || frame.is_none() {
        let text = match ws.recv_raw().await {
            tokio_tungstenite::tungstenite::Message::Text(t) => t.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        };
        let msg: Value = serde_json::from_str(&text).expect("JSON");
        match msg["type"].as_str() {
            Some("result") => result = Some(msg),
            Some("block") if msg["block"]["index"] == 2 => frame = Some(text),
            _ => panic!("unexpected {msg}"),
        }
    }
    let (result, frame) = (result.expect("read"), frame.expect("read"));
    assert_eq!(result["accepted"], true, "{result}");
    let block: Value = serde_json::from_str::<Value>(&frame).expect("JSON")["block"].clone();
    assert_eq!(block["transactions"].as_array().map(Vec::len), Some(accepted + 1));
    let block_string = to_python_json(&block);
    assert!(block_string.len() <= MAX_BLOCK_BYTES, "{} bytes", block_string.len());
    assert!(frame.len() <= MAX_BLOCK_BYTES + 64, "frame of {} bytes", frame.len());
    assert!(block_string.len() > MAX_PENDING_BYTES / 2, "the attack filled the block");

    // Once it is forged, transactions are taken again.
    let body = json!({ "sender": "a", "recipient": "b", "amount": 1 });
    assert_eq!(post_transaction(&client, &server, &body).await.0, 201);

    // A fresh tungstenite client (default limits) and a real Python `websockets` client (default
    // 1 MiB) read the big block and mine on it.
    let (mut fresh, greeting) = Ws::connect_and_greet(&server.ws_url()).await;
    assert_eq!(greeting["block"]["index"], 2);
    let proof = mine(&greeting["block"], server.difficulty, 0);
    fresh.send_text(json!({ "type": "proof", "proof": proof, "id": "bob" }).to_string()).await;
    assert_eq!(fresh.recv_result().await["accepted"], true);
    let url = server.ws_url();
    let python = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(["-c", PYTHON_MINER, &url]).output()
    })
    .await
    .expect("join")
    .expect("python3 runs");
    assert!(
        python.status.success(),
        "the Python client failed:\n{}{}",
        String::from_utf8_lossy(&python.stdout),
        String::from_utf8_lossy(&python.stderr)
    );
    assert!(String::from_utf8_lossy(&python.stdout).contains("accepted True"));
}

/// A Python `websockets` client with its default limits: reads the block, mines it with
/// `json.dumps(sort_keys=True)` and `hashlib`, sends the proof, prints the answer.
const PYTHON_MINER: &str = r#"
import asyncio, hashlib, json, sys
import websockets

async def main(url):
    async with websockets.connect(url) as ws:
        msg = json.loads(await ws.recv())
        block = json.dumps(msg["block"], sort_keys=True)
        zeros = "0" * msg["difficulty"]
        proof = 0
        while not hashlib.sha256(f"{block}{proof}".encode()).hexdigest().startswith(zeros):
            proof += 1
        await ws.send(json.dumps({"type": "proof", "proof": proof, "id": "py"}))
        while True:
            answer = json.loads(await ws.recv())
            if answer["type"] == "result":
                print("accepted", answer["accepted"], answer["message"])
                return

asyncio.run(main(sys.argv[1]))
"#;

/// Ids and party names are printable text: control characters (the terminal escapes that
/// reached miners' screens) and invisible reordering characters are refused everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprintable_ids_are_refused_on_every_path() {
    let server = Server::start(1).await;
    let client = reqwest::Client::new();
    for bad in ["\u{1b}]52;c;aGk=\u{7}", "a\u{1b}[2Jb", "evil\u{202e}gnp.exe", "x\u{9b}y"] {
        let body = json!({ "sender": "alice", "recipient": bad, "amount": 1 });
        let (status, answer) = post_transaction(&client, &server, &body).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["message"].as_str().expect("message");
        assert!(message.starts_with("\"recipient\" must be printable text"), "{message}");

        let answer = server.mine_http(0, bad).await;
        assert!(
            answer["message"].as_str().is_some_and(|m| m.contains("must be printable text")),
            "{answer}"
        );
        let (mut ws, _) = Ws::connect_and_greet(&server.ws_url()).await;
        ws.send_text(json!({ "type": "proof", "proof": 0, "id": bad }).to_string()).await;
        let reply = ws.recv().await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert!(reply["message"].as_str().is_some_and(|m| m.contains("printable")), "{reply}");
    }
    // The chain never saw any of them.
    assert_eq!(server.chain().await.len(), 1);
}

/// `/balance/{id}` follows the id rules: an id that is empty after trimming or unprintable is a
/// JSON 400, not `{"id": ""}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_of_a_bad_id_is_a_json_400() {
    let server = Server::start(1).await;
    for path in ["/balance/%20%20", "/balance/a%1Bb", "/balance/%E2%80%AEx"] {
        let response = reqwest::get(server.url(path)).await.expect("GET");
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.expect("JSON");
        assert!(body["message"].as_str().is_some_and(|m| m.starts_with("the id ")), "{body}");
    }
    let body: Value = reqwest::get(server.url("/balance/%20bob%20"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body, json!({ "id": "bob", "coins": 0 }));
}

/// One address that floods proofs over WebSocket and HTTP is slowed down with `error` frames and
/// JSON 429s (with `Retry-After`); a miner on another address is not, and wins the block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_floods_are_rate_limited_per_address() {
    const RATE: u32 = 20;
    let limits = Limits { proof_rate: RATE, ..Limits::default() };
    let server = Server::start_with(6, limits).await;
    let flooder = loopback(11);
    let mut ws = ws_from(flooder, server.addr).await.expect("connects");
    assert_eq!(ws.recv().await["type"], "block");
    // More than the burst (2 s of the rate) at once: the rest are refused, each answered.
    let sent = 3 * RATE as usize;
    for proof in 0..sent {
        ws.send_text(json!({ "type": "proof", "proof": proof, "id": "flood" }).to_string()).await;
    }
    let (mut judged, mut limited) = (0, 0);
    while judged + limited < sent {
        let reply = ws.recv().await;
        match reply["type"].as_str() {
            Some("result") => judged += 1,
            Some("error") => {
                let message = reply["message"].as_str().expect("message");
                assert!(message.starts_with("too many proofs from 127.0.0.11"), "{message}");
                limited += 1;
            }
            _ => panic!("unexpected {reply}"),
        }
    }
    assert!(limited >= RATE as usize - 5, "{judged} judged, {limited} limited");
    assert!(judged >= 2 * RATE as usize, "the burst is judged: {judged}");

    // The same address over HTTP shares the allowance: a JSON 429 with Retry-After.
    let request = "POST /mine HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                   content-length: 23\r\nconnection: close\r\n\r\n{\"proof\": 1, \"id\": \"f\"}";
    let answer = raw_request(flooder, server.addr, request).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after: "), "{answer}");
    assert!(answer.contains("\"message\":\"too many proofs from 127.0.0.11"), "{answer}");

    // A neighbour on another address mines as usual.
    let mut honest = ws_from(loopback(12), server.addr).await.expect("connects");
    let greeting = honest.recv().await;
    let proof = mine(&greeting["block"], server.difficulty, 0);
    honest.send_text(json!({ "type": "proof", "proof": proof, "id": "honest" }).to_string()).await;
    assert_eq!(honest.recv_result().await["accepted"], true);
}

/// Transactions have their own, lower, allowance per address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_floods_are_rate_limited_per_address() {
    let limits = Limits { transaction_rate: 5, ..Limits::default() };
    let server = Server::start_with(1, limits).await;
    let client = reqwest::Client::new();
    let body = json!({ "sender": "a", "recipient": "b", "amount": 1 });
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (status, answer) = post_transaction(&client, &server, &body).await;
        if status == 429 {
            assert!(
                answer["message"].as_str().is_some_and(|m| m.starts_with("too many transactions"))
            );
        }
        statuses.push(status);
    }
    let created = statuses.iter().filter(|s| **s == 201).count();
    assert!((10..20).contains(&created), "{statuses:?}");
    assert_eq!(created + statuses.iter().filter(|s| **s == 429).count(), 30);
}

/// A request target or headers over the documented limits get a JSON 414 / 431 from the
/// server, not hyper's bodiless answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_json_refusals() {
    let server = Server::start(1).await;
    let from = loopback(1);
    let long_path = format!("/balance/{}", "a".repeat(9 * 1024));
    let answer = raw_request(
        from,
        server.addr,
        &format!("GET {long_path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{}", &answer[..answer.len().min(200)]);
    assert!(answer.contains("{\"message\":\"the request target is "), "{answer:.300}");

    let cookie = "c".repeat(20 * 1024);
    let answer = raw_request(
        from,
        server.addr,
        &format!(
            "GET /last_block HTTP/1.1\r\nhost: x\r\ncookie: {cookie}\r\nconnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);
    assert!(answer.contains("{\"message\":\"the headers take "), "{answer:.300}");

    // A head over hyper's own buffer is cut off by hyper (documented): the connection does not
    // hang and the server carries on.
    let mut tcp = tcp_from(from, server.addr).await;
    let huge = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "h".repeat(100 * 1024));
    let _ = tcp.write_all(huge.as_bytes()).await;
    drop(tcp);
    let body: Value = tokio::time::timeout(HANG_GUARD, async {
        reqwest::get(server.url("/last_block")).await.expect("GET").json().await.expect("JSON")
    })
    .await
    .expect("the server still answers");
    assert_eq!(body["last_block"]["index"], 1);
}
