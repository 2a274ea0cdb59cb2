//! The course's HTTP routes and every kind of bad request.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Server, mine};

/// Sends a request and returns its status and JSON body (the body must be JSON).
async fn call(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let content_type = resp.headers().get("content-type").cloned();
    let text = resp.text().await.expect("body");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"));
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{status} {text}"
    );
    (status, body)
}

/// Asserts a 4xx with a JSON `message` containing `needle`.
async fn rejects(req: reqwest::RequestBuilder, status: u16, needle: &str) {
    let (got, body) = call(req).await;
    assert_eq!(got.as_u16(), status, "{body}");
    let message = body["message"].as_str().unwrap_or_else(|| panic!("no message in {body}"));
    assert!(message.contains(needle), "{message:?} does not contain {needle:?}");
}

#[tokio::test]
async fn course_routes() {
    let server = Server::start(2).await;
    let client = reqwest::Client::new();

    let (status, body) = call(client.get(server.url("/last_block"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["difficulty"], 2);
    let genesis = body["last_block"].clone();
    assert_eq!(genesis["index"], 1);
    assert!(genesis["timestamp"].is_f64());

    let (status, body) = call(client.get(server.url("/chain"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"length": 1, "from": 1, "next": null, "chain": [genesis.clone()]}));

    let tx = json!({"sender": "alice", "recipient": "bob", "amount": 5});
    let (status, body) = call(client.post(server.url("/transactions/new")).json(&tx)).await;
    assert_eq!(status, 201);
    assert_eq!(body, json!({"message": "Transaction will be added to Block 2"}));

    let proof = mine(&genesis, server.difficulty, 0);
    let (status, body) =
        call(client.post(server.url("/mine")).json(&json!({"proof": proof, "id": "miner-1\n"})))
            .await;
    assert_eq!(status, 200);
    assert_eq!(body["message"], "New Block Forged");
    let block = &body["block"];
    assert_eq!(block["index"], 2);
    assert_eq!(block["proof"], proof);
    assert_eq!(
        block["transactions"],
        json!([tx, {"sender": "0", "recipient": "miner-1", "amount": 1}])
    );
    let parsed: protocol::Block = serde_json::from_value(genesis.clone()).expect("a block");
    assert_eq!(block["previous_hash"], parsed.hash().to_hex());

    // The same proof again, for block 1: it lost (200, as the course's server answers).
    let late = json!({"proof": proof, "id": "late", "index": 1});
    let (status, body) = call(client.post(server.url("/mine")).json(&late)).await;
    assert_eq!(status, 200);
    assert_eq!(body["reason"], "stale");
    assert_eq!(body["index"], 2);
    assert!(body["message"].as_str().expect("message").contains("already won by miner-1"));

    let (_, body) = call(client.get(server.url("/chain"))).await;
    assert_eq!(body["length"], body["chain"].as_array().map(Vec::len).expect("array"));
    assert_eq!(body["chain"][1], *block);
    assert_eq!(server.last_block().await, *block);
}

#[tokio::test]
async fn bad_requests_get_a_json_4xx() {
    let server = Server::start(2).await;
    let client = reqwest::Client::new();
    let mine = server.url("/mine");
    let post_json = |body: &str| {
        client.post(&mine).header("content-type", "application/json").body(body.to_owned())
    };

    rejects(post_json("{not json"), 400, "parse").await;
    rejects(post_json(""), 400, "").await;
    rejects(client.post(&mine).body(r#"{"proof": 1, "id": "a"}"#), 415, "Content-Type").await;
    rejects(
        client.post(&mine).header("content-type", "text/plain").body(r#"{"proof":1,"id":"a"}"#),
        415,
        "Content-Type",
    )
    .await;
    let big = format!(r#"{{"proof": 1, "id": "{}"}}"#, "a".repeat(100_000));
    rejects(post_json(&big), 413, "length limit").await;
    rejects(client.get(server.url("/nope")), 404, "no route for /nope").await;
    rejects(client.post(server.url("/nope")), 404, "no route").await;
    // `/` is the dashboard page: GET only.
    rejects(client.post(server.url("/")), 405, "POST").await;
    rejects(client.get(&mine), 405, "GET").await;
    rejects(client.post(server.url("/chain")), 405, "POST").await;
    rejects(client.delete(server.url("/last_block")), 405, "DELETE").await;
    rejects(client.get(server.url("/ws")), 400, "").await;

    for (body, needle) in [
        ("[1]", "expected a JSON object"),
        ("null", "expected a JSON object"),
        (r#"{"id": "a"}"#, "missing field \"proof\""),
        (r#"{"proof": 1}"#, "missing field \"id\""),
        (r#"{"proof": 1.5, "id": "a"}"#, "\"proof\" must be"),
        (r#"{"proof": 1.0, "id": "a"}"#, "\"proof\" must be"),
        (r#"{"proof": -3, "id": "a"}"#, "\"proof\" must be"),
        (r#"{"proof": "7", "id": "a"}"#, "\"proof\" must be"),
        (r#"{"proof": 99999999999999999999999, "id": "a"}"#, "\"proof\" must be"),
        (r#"{"proof": 1, "id": ""}"#, "\"id\" must not be empty"),
        (r#"{"proof": 1, "id": " \t\n"}"#, "\"id\" must not be empty"),
        (r#"{"proof": 1, "id": 42}"#, "\"id\" must be a string"),
        (r#"{"proof": 1, "id": ["a"]}"#, "\"id\" must be a string"),
    ] {
        rejects(post_json(body), 400, needle).await;
    }

    let tx_url = server.url("/transactions/new");
    for (body, needle) in [
        (json!({"recipient": "b", "amount": 1}), "missing field \"sender\""),
        (json!({"sender": "a", "amount": 1}), "missing field \"recipient\""),
        (json!({"sender": "a", "recipient": "b"}), "missing field \"amount\""),
        (json!({"sender": "a", "recipient": "b", "amount": 0}), "positive integer"),
        (json!({"sender": "a", "recipient": "b", "amount": -1}), "positive integer"),
        (json!({"sender": "a", "recipient": "b", "amount": 1.5}), "positive integer"),
        (json!({"sender": "a", "recipient": "b", "amount": "1"}), "positive integer"),
        (json!({"sender": "a", "recipient": "b", "amount": u64::MAX}), "positive integer"),
        (json!({"sender": "", "recipient": "b", "amount": 1}), "must not be empty"),
        (json!({"sender": "a", "recipient": 3, "amount": 1}), "must be a string"),
        (json!({"sender": "0", "recipient": "b", "amount": 1}), "reserved"),
        (json!([]), "expected a JSON object"),
    ] {
        rejects(client.post(&tx_url).json(&body), 400, needle).await;
    }
    rejects(client.post(&tx_url).body("{}"), 415, "Content-Type").await;

    // Nothing above changed the chain, and the server still works.
    assert_eq!(server.chain().await.len(), 1);
    server.forge("still-fine").await;
}
