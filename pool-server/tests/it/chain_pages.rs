//! `GET /chain`: the whole chain as the course's server answers it (streamed), and its pages
//! `?from=&limit=`.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::support::Server;

async fn get(server: &Server, path: &str) -> (StatusCode, Value) {
    let res = reqwest::get(server.url(path)).await.expect("GET");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("a body");
    assert_eq!(headers[CONTENT_TYPE], "application/json", "{path}");
    if status.is_success() {
        let length: usize =
            headers[CONTENT_LENGTH].to_str().expect("ascii").parse().expect("a number");
        assert_eq!(length, bytes.len(), "{path}: content-length matches the body");
    }
    (status, serde_json::from_slice(&bytes).expect("a JSON body"))
}

#[tokio::test]
async fn the_whole_chain_and_its_pages_agree() {
    let server = Server::start(1).await;
    let mut forged = vec![server.last_block().await];
    for i in 0..6 {
        forged.push(server.forge(&format!("miner {i}")).await);
    }

    let (status, whole) = get(&server, "/chain").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whole, json!({ "length": 7, "from": 1, "next": null, "chain": forged }));

    let page = |from: usize, to: usize| Value::from(forged[from - 1..to - 1].to_vec());
    let (_, first) = get(&server, "/chain?from=1&limit=3").await;
    assert_eq!(first, json!({ "length": 7, "from": 1, "next": 4, "chain": page(1, 4) }));
    let (_, middle) = get(&server, "/chain?from=4&limit=3").await;
    assert_eq!(middle, json!({ "length": 7, "from": 4, "next": 7, "chain": page(4, 7) }));
    let (_, end) = get(&server, "/chain?from=5&limit=3").await;
    assert_eq!(end, json!({ "length": 7, "from": 5, "next": null, "chain": page(5, 8) }));
    let (_, last) = get(&server, "/chain?limit=1000&from=7").await;
    assert_eq!(last, json!({ "length": 7, "from": 7, "next": null, "chain": page(7, 8) }));
    let (_, one) = get(&server, "/chain?from=2&limit=1").await;
    assert_eq!(one, json!({ "length": 7, "from": 2, "next": 3, "chain": page(2, 3) }));
    // Only `limit`: from the genesis block.
    let (_, head) = get(&server, "/chain?limit=2").await;
    assert_eq!(head["chain"], page(1, 3));
    // Past the end: an empty page, to ask again once more blocks are forged.
    let (status, beyond) = get(&server, "/chain?from=8").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(beyond, json!({ "length": 7, "from": 8, "next": null, "chain": [] }));
    let (_, far) = get(&server, "/chain?from=18446744073709551615&limit=1000").await;
    assert_eq!(far["chain"], json!([]));
    // Unknown parameters are ignored, as the course's server ignores them all.
    let (_, ignored) = get(&server, "/chain?page=2").await;
    assert_eq!(ignored, whole);

    // A block forged after a reader's answer does not change that answer, and shows next time.
    let newer = server.forge("late").await;
    let (_, after) = get(&server, "/chain?from=7").await;
    assert_eq!(after["chain"], json!([forged[6], newer]));
}

#[tokio::test]
async fn bad_page_parameters_get_a_json_400() {
    let server = Server::start(1).await;
    for query in [
        "from=0",
        "from=-1",
        "from=abc",
        "from=1.5",
        "from=",
        "limit=0",
        "limit=1001",
        "limit=-5",
        "from=1&from=2",
        "from=18446744073709551616",
    ] {
        let (status, body) = get(&server, &format!("/chain?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let message = body["message"].as_str().expect("a message");
        assert!(message.contains("from") || message.contains("limit"), "{query}: {message}");
    }
    let (_, body) = get(&server, "/chain?limit=5000").await;
    assert_eq!(body["message"], "\"limit\" must be between 1 and 1000, got 5000");
}
