use super::*;
use serde_json::json;

#[track_caller]
fn check_client(text: &str, expected: Result<ClientMessage, &str>) {
    let got = ClientMessage::from_json(text).map_err(|e| e.to_string());
    assert_eq!(got, expected.map_err(str::to_owned), "input: {text}");
}

fn proof(proof: u64, id: &str, index: Option<u64>) -> ClientMessage {
    ClientMessage::Proof(ProofSubmission { proof, id: id.to_owned(), index })
}

#[test]
fn parses_good_client_messages() {
    check_client(r#"{"type":"proof","proof":0,"id":"alice\n"}"#, Ok(proof(0, "alice", None)));
    check_client(
        r#"{"type":"proof","proof":18446744073709551615,"id":" bob ","index":7}"#,
        Ok(proof(u64::MAX, "bob", Some(7))),
    );
    check_client(r#"{"type":"last_block"}"#, Ok(ClientMessage::LastBlock));
}

#[test]
fn rejects_bad_client_messages_with_reasons() {
    check_client("hello", Err("not valid JSON: expected value at line 1 column 1"));
    check_client("[1]", Err("expected a JSON object, got an array"));
    check_client(
        r#"{"proof":1,"id":"a"}"#,
        Err(r#"missing "type": expected a string such as "proof" or "last_block""#),
    );
    check_client(r#"{"type":"mine"}"#, Err(r#"unknown message type "mine""#));
    check_client(r#"{"type":"proof","id":"a"}"#, Err(r#"missing field "proof""#));
    check_client(
        r#"{"type":"proof","proof":-1,"id":"a"}"#,
        Err(r#""proof" must be a non-negative integer that fits in 64 bits, got -1"#),
    );
    check_client(
        r#"{"type":"proof","proof":1.0,"id":"a"}"#,
        Err(r#""proof" must be a non-negative integer that fits in 64 bits, got 1.0"#),
    );
    check_client(
        r#"{"type":"proof","proof":"12","id":"a"}"#,
        Err(r#""proof" must be a non-negative integer that fits in 64 bits, got "12""#),
    );
    check_client(
        r#"{"type":"proof","proof":18446744073709551616,"id":"a"}"#,
        Err(
            r#""proof" must be a non-negative integer that fits in 64 bits, got 1.8446744073709552e+19"#,
        ),
    );
    check_client(r#"{"type":"proof","proof":1,"id":7}"#, Err(r#""id" must be a string, got 7"#));
    check_client(
        r#"{"type":"proof","proof":1,"id":" \n"}"#,
        Err(r#""id" must not be empty or only whitespace"#),
    );
    let long = "x".repeat(MAX_ID_CHARS + 1);
    check_client(
        &format!(r#"{{"type":"proof","proof":1,"id":"{long}"}}"#),
        Err(r#""id" is 129 characters long; at most 128 are allowed"#),
    );
}

#[test]
fn server_messages_round_trip() {
    let block = crate::Block::genesis(1.0);
    let msgs = [
        ServerMessage::block(&block, Difficulty::DEFAULT),
        ServerMessage::Result { accepted: true, message: FORGED.into(), reason: None, index: 2 },
        ServerMessage::Result {
            accepted: false,
            message: "too late".into(),
            reason: Some(RejectReason::Stale),
            index: 3,
        },
        ServerMessage::Error { message: "bad".into() },
        // A block frame that does not say its difficulty (not a pool-server's).
        ServerMessage::Block { block: block.to_value(), difficulty: None },
    ];
    for msg in msgs {
        assert_eq!(ServerMessage::from_json(&msg.to_json()), Ok(msg));
    }
}

#[test]
fn wire_format_is_stable() {
    let msg = ServerMessage::Result {
        accepted: false,
        message: "no".into(),
        reason: Some(RejectReason::Invalid),
        index: 4,
    };
    assert_eq!(
        serde_json::to_value(&msg).ok(),
        Some(
            json!({"type": "result", "accepted": false, "message": "no", "reason": "invalid", "index": 4})
        )
    );
    assert_eq!(proof(5, "a", None).to_json(), r#"{"type":"proof","proof":5,"id":"a"}"#);
}

fn stats_example() -> ServerMessage {
    let block = crate::Block::genesis(1.5);
    ServerMessage::Stats {
        chain_length: 3,
        difficulty: Difficulty::new(4).expect("4 is in range"),
        miners: 2,
        blocks_per_minute: 1.5,
        hashrate: 1638.4,
        balances: vec![
            Balance { id: "José 🚀".into(), coins: 2 },
            Balance { id: "bob".into(), coins: -1 },
        ],
        recent: vec![BlockSummary::of(&block, Some("ab".repeat(32)))],
        workers: vec![Worker {
            id: "carol".into(),
            hashrate: 1.5e6,
            shares: 12,
            stale: 1,
            invalid: 0,
            last_share: 1_700_000_000.25,
            coins: 3,
        }],
    }
}

#[test]
fn stats_request_parses_and_serialises() {
    check_client(r#"{"type":"stats"}"#, Ok(ClientMessage::Stats));
    check_client(r#"{"type":"stats","extra":1}"#, Ok(ClientMessage::Stats));
    assert_eq!(ClientMessage::Stats.to_json(), r#"{"type":"stats"}"#);
}

#[test]
fn stats_wire_format_is_stable_and_round_trips() {
    let msg = stats_example();
    assert_eq!(
        serde_json::to_value(&msg).ok(),
        Some(json!({
            "type": "stats", "chain_length": 3, "difficulty": 4, "miners": 2,
            "blocks_per_minute": 1.5, "hashrate": 1638.4,
            "balances": [{"id": "José 🚀", "coins": 2}, {"id": "bob", "coins": -1}],
            "recent": [{"index": 1, "timestamp": 1.5, "proof": 100, "previous_hash": "1",
                        "hash": "ab".repeat(32), "winner": null, "transaction_count": 0}],
            "workers": [{"id": "carol", "hashrate": 1.5e6, "shares": 12, "stale": 1,
                         "invalid": 0, "last_share": 1_700_000_000.25, "coins": 3}],
        }))
    );
    assert_eq!(ServerMessage::from_json(&msg.to_json()), Ok(msg));
}

#[test]
fn rejects_bad_stats_messages_with_reasons() {
    let good = serde_json::to_value(stats_example()).expect("serialises");
    let with = |field: &str, value: serde_json::Value| {
        let mut v = good.clone();
        v[field] = value;
        ServerMessage::from_json(&v.to_string()).map_err(|e| e.to_string())
    };
    let without = |field: &str| {
        let mut v = good.clone();
        v.as_object_mut().expect("an object").remove(field);
        ServerMessage::from_json(&v.to_string()).map_err(|e| e.to_string())
    };
    assert_eq!(without("miners"), Err(r#"missing field "miners""#.into()));
    assert_eq!(without("recent"), Err(r#"missing field "recent""#.into()));
    // Servers older than shares send no workers.
    let Ok(ServerMessage::Stats { workers, .. }) = without("workers") else {
        panic!("a stats message without workers parses");
    };
    assert!(workers.is_empty());
    assert_eq!(
        with("workers", json!([{"id": "x", "hashrate": 1.0, "coins": 1}])),
        Err(r#"missing field "shares""#.into())
    );
    assert_eq!(with("workers", json!(3)), Err(r#""workers" must be a list, got 3"#.into()));
    assert_eq!(
        with("chain_length", json!(-2)),
        Err(r#""chain_length" must be a non-negative integer, got -2"#.into())
    );
    assert_eq!(
        with("hashrate", json!("fast")),
        Err(r#""hashrate" must be a number, got "fast""#.into())
    );
    assert_eq!(
        with("difficulty", json!(0)),
        Err(r#""difficulty" must be an integer 1..=64, got 0"#.into())
    );
    assert_eq!(with("balances", json!({})), Err(r#""balances" must be a list, got {}"#.into()));
    assert_eq!(
        with("balances", json!([{"id": 1, "coins": 1}])),
        Err(r#""id" must be a string, got 1"#.into())
    );
    assert_eq!(
        with("balances", json!([{"id": "a", "coins": 1.5}])),
        Err(r#""coins" must be an integer, got 1.5"#.into())
    );
    assert_eq!(
        with("recent", json!([7])),
        Err(r#""recent" must be a list of block summaries, got 7"#.into())
    );
    let mut summary = good["recent"][0].clone();
    summary["transaction_count"] = json!([]);
    assert_eq!(
        with("recent", json!([summary])),
        Err(r#""transaction_count" must be a non-negative integer, got []"#.into())
    );
    summary["transaction_count"] = json!(1);
    summary["hash"] = json!(5);
    assert_eq!(
        with("recent", json!([summary])),
        Err(r#""hash" must be a string or null, got 5"#.into())
    );
}

#[test]
fn a_block_without_difficulty_says_so() {
    for text in
        [r#"{"type":"block","block":{}}"#, r#"{"type":"block","block":{},"difficulty":null}"#]
    {
        let parsed = ServerMessage::from_json(text);
        assert!(
            matches!(parsed, Ok(ServerMessage::Block { difficulty: None, .. })),
            "{text}: {parsed:?}"
        );
    }
}
