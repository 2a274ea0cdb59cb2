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
    let long = "x".repeat(MAX_ID_BYTES + 1);
    check_client(
        &format!(r#"{{"type":"proof","proof":1,"id":"{long}"}}"#),
        Err(r#""id" is 129 bytes long; at most 128 are allowed"#),
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
