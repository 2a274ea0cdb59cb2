//! Fuzz-style property tests of the parsers that face the network: `ClientMessage::from_json`,
//! `ServerMessage::from_json` and `ProofSubmission::from_value` never panic on arbitrary bytes,
//! arbitrary JSON or near-miss messages, always answer a short error or a value, and a proof
//! submission is accepted exactly when its fields follow the protocol (an independent oracle
//! below spells the rules out).
//!
//! `PROPTEST_CASES` raises the case count for a longer run (e.g. `PROPTEST_CASES=100000`).

mod support;

use proptest::prelude::*;
use protocol::id::is_printable;
use protocol::message::MAX_ID_CHARS;
use protocol::{ClientMessage, MessageError, ProofSubmission, ServerMessage, to_python_json};
use serde_json::Value;
use support::{arb_client_message, arb_float, arb_json, arb_server_message, arb_string};

/// The longest error text a peer may be sent, whatever it sent: errors quote input, but shortened.
const MAX_ERROR_CHARS: usize = 1024;

/// 512 cases per property unless `PROPTEST_CASES` says otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512)
}

/// Parses `text` both ways and checks the invariants that hold for any input.
fn check_any_text(text: &str) -> Result<(), TestCaseError> {
    match ClientMessage::from_json(text) {
        Ok(msg) => {
            // What parses re-serialises to something that parses to the same message.
            prop_assert_eq!(ClientMessage::from_json(&msg.to_json()), Ok(msg));
        }
        Err(e) => check_error(&e)?,
    }
    match ServerMessage::from_json(text) {
        Ok(msg) => prop_assert_eq!(ServerMessage::from_json(&msg.to_json()), Ok(msg)),
        Err(e) => check_error(&e)?,
    }
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        match ProofSubmission::from_value(&value) {
            Ok(sub) => prop_assert_eq!(sub.id.trim(), sub.id.as_str()),
            Err(e) => check_error(&e)?,
        }
    }
    Ok(())
}

fn check_error(e: &MessageError) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(!text.is_empty());
    prop_assert!(
        text.chars().count() <= MAX_ERROR_CHARS,
        "error text too long: {} chars",
        text.len()
    );
    Ok(())
}

/// One field of a near-miss message: absent, or raw JSON text of some kind.
#[derive(Debug, Clone)]
enum Field {
    Absent,
    Null,
    Bool(bool),
    U64(u64),
    Negative(i64),
    Float(f64),
    /// An integer beyond u64 (serde_json reads it as a float).
    Huge(String),
    Str(String),
    Array(Value),
    Object(Value),
}

impl Field {
    fn json(&self) -> Option<String> {
        Some(match self {
            Field::Absent => return None,
            Field::Null => "null".into(),
            Field::Bool(b) => b.to_string(),
            Field::U64(n) => n.to_string(),
            Field::Negative(n) => n.to_string(),
            Field::Float(f) => to_python_json(&Value::from(*f)),
            Field::Huge(digits) => digits.clone(),
            Field::Str(s) => Value::String(s.clone()).to_string(),
            Field::Array(v) | Field::Object(v) => v.to_string(),
        })
    }
}

fn arb_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Absent),
        Just(Field::Null),
        any::<bool>().prop_map(Field::Bool),
        any::<u64>().prop_map(Field::U64),
        Just(Field::U64(0)),
        Just(Field::U64(u64::MAX)),
        (i64::MIN..0).prop_map(Field::Negative),
        arb_float().prop_map(Field::Float),
        Just(Field::Float(1.0)),
        "[1-9][0-9]{20,40}".prop_map(Field::Huge),
        Just(Field::Huge("18446744073709551616".into())),
        arb_string().prop_map(Field::Str),
        "[ \t\n]{0,3}[a-zA-Z0-9]{0,3}[ \t\n]{0,3}".prop_map(Field::Str),
        "[a-z]{120,140}".prop_map(Field::Str),
        proptest::collection::vec(arb_json(), 0..3).prop_map(|v| Field::Array(Value::Array(v))),
        arb_json().prop_map(|v| Field::Object(serde_json::json!({ "v": v }))),
    ]
}

/// What the protocol says about a proof submission with these fields, written out independently
/// of the crate: `Ok((proof, trimmed id, index))` or the name of the field it must blame.
fn oracle(
    proof: &Field,
    id: &Field,
    index: &Field,
) -> Result<(u64, String, Option<u64>), &'static str> {
    let proof = match proof {
        Field::Absent => return Err("missing proof"),
        // JSON `-0` is an integer zero to serde_json; everything else below zero is not a proof.
        Field::U64(n) => *n,
        _ => return Err("proof"),
    };
    let id = match id {
        Field::Absent => return Err("missing id"),
        Field::Str(s) if s.trim().is_empty() => return Err("empty id"),
        Field::Str(s) if s.trim().chars().count() > MAX_ID_CHARS => return Err("long id"),
        Field::Str(s) if !s.trim().chars().all(is_printable) => return Err("unprintable id"),
        Field::Str(s) => s.trim().to_owned(),
        _ => return Err("id"),
    };
    let index = match index {
        Field::Absent | Field::Null => None,
        Field::U64(n) => Some(*n),
        _ => return Err("index"),
    };
    Ok((proof, id, index))
}

fn blame(e: &MessageError) -> &'static str {
    match e {
        MessageError::Missing("proof") => "missing proof",
        MessageError::Missing("id") => "missing id",
        MessageError::EmptyId => "empty id",
        MessageError::IdTooLong(_) => "long id",
        MessageError::IdUnprintable(_) => "unprintable id",
        MessageError::Wrong { field, .. } => field,
        _ => "something else",
    }
}

/// Builds `{"type": ..., <fields in the given order>, <extra fields>}` as raw JSON text, so huge
/// integers and exact float spellings reach the parser untouched.
fn object_text(ty: Option<&str>, fields: &[(&str, &Field)], extra: &[(String, Value)]) -> String {
    let mut parts = Vec::new();
    if let Some(ty) = ty {
        parts.push(format!("\"type\": {}", Value::from(ty)));
    }
    for (name, field) in fields {
        if let Some(json) = field.json() {
            parts.push(format!("{}: {json}", Value::from(*name)));
        }
    }
    for (name, value) in extra {
        if !matches!(name.as_str(), "type" | "proof" | "id" | "index") {
            parts.push(format!("{}: {value}", Value::from(name.as_str())));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_lossy_utf8(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_any_text(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_strings(text in any::<String>()) {
        check_any_text(&text)?;
    }

    #[test]
    fn json_ish_byte_soup(text in "[{}\\[\\]\":,0-9a-z\\\\ .eE+-]{0,200}") {
        check_any_text(&text)?;
    }

    #[test]
    fn arbitrary_json_values(value in arb_json()) {
        check_any_text(&value.to_string())?;
        // Wrapped as an object with each known `type`, to get past the first checks.
        for ty in ["proof", "last_block", "stats", "block", "result", "error"] {
            let mut obj = serde_json::json!({ "payload": value.clone() });
            if let Value::Object(map) = &value {
                obj = Value::Object(map.clone());
            }
            obj["type"] = Value::from(ty);
            check_any_text(&obj.to_string())?;
        }
    }

    #[test]
    fn truncated_and_mutated_valid_messages(
        msg in arb_server_message(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let text = msg.to_json();
        let mut bytes = text.clone().into_bytes();
        bytes.truncate(cut.index(bytes.len() + 1));
        check_any_text(&String::from_utf8_lossy(&bytes))?;
        let mut bytes = text.into_bytes();
        if !bytes.is_empty() {
            let at = flip.index(bytes.len());
            bytes[at] = byte;
        }
        check_any_text(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn proof_near_misses_match_the_oracle(
        proof in arb_field(),
        id in arb_field(),
        index in arb_field(),
        order in Just([0usize, 1, 2]).prop_shuffle(),
        extra in proptest::collection::vec(("[a-z_]{1,8}", arb_json()), 0..3),
    ) {
        let named = [("proof", &proof), ("id", &id), ("index", &index)];
        let fields: Vec<_> = order.iter().map(|&i| named[i]).collect();
        let expected = oracle(&proof, &id, &index);

        let text = object_text(Some("proof"), &fields, &extra);
        let got = ClientMessage::from_json(&text);
        match (&expected, &got) {
            (Ok((p, i, x)), Ok(ClientMessage::Proof(sub))) => {
                prop_assert_eq!((sub.proof, &sub.id, sub.index), (*p, i, *x));
            }
            (Err(field), Err(e)) => {
                check_error(e)?;
                prop_assert_eq!(blame(e), *field, "{} → {}", text, e);
            }
            _ => prop_assert!(false, "{} → {:?}, expected {:?}", text, got, expected),
        }

        // `POST /mine` uses the same checks on the body without a `type`.
        let body: Value = serde_json::from_str(&object_text(None, &fields, &extra))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = ProofSubmission::from_value(&body);
        match (&expected, &got) {
            (Ok((p, i, x)), Ok(sub)) => prop_assert_eq!((sub.proof, &sub.id, sub.index), (*p, i, *x)),
            (Err(field), Err(e)) => prop_assert_eq!(blame(e), *field),
            _ => prop_assert!(false, "{} → {:?}, expected {:?}", body, got, expected),
        }
    }

    #[test]
    fn wrong_types_for_every_field_of_every_message(
        msg in arb_server_message(),
        field_value in arb_json(),
        pick in any::<prop::sample::Index>(),
    ) {
        // Replace one field of a valid message with a value of any type.
        let mut value: Value = serde_json::from_str(&msg.to_json())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let obj = value.as_object_mut().ok_or_else(|| TestCaseError::fail("not an object"))?;
        let keys: Vec<String> = obj.keys().filter(|k| *k != "type").cloned().collect();
        if !keys.is_empty() {
            obj.insert(keys[pick.index(keys.len())].clone(), field_value);
        }
        check_any_text(&value.to_string())?;
    }

    #[test]
    fn valid_messages_round_trip(server in arb_server_message(), client in arb_client_message()) {
        prop_assert_eq!(ServerMessage::from_json(&server.to_json()), Ok(server));
        prop_assert_eq!(ClientMessage::from_json(&client.to_json()), Ok(client));
    }

    #[test]
    fn python_float_text_parses_back_to_the_same_float(f in arb_float()) {
        // A miner re-serialises the block it was sent; if parsing the server's float text were
        // off by one ulp, its block string would differ and every proof would be invalid.
        let text = to_python_json(&Value::from(f));
        let back: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.as_f64().map(f64::to_bits), Some(f.to_bits()), "{}", text);
        prop_assert_eq!(to_python_json(&back), text);
    }
}

// Cases proptest once found, kept as plain tests (proptest writes no regression files here).

#[test]
fn regression_huge_floats_print_and_parse_back() {
    for f in [-1.3180828094108986e141_f64, 3.212591362577054e305] {
        let text = to_python_json(&Value::from(f));
        let back: Value = serde_json::from_str(&text).expect("Python's float text parses");
        assert_eq!(back.as_f64().map(f64::to_bits), Some(f.to_bits()), "{text}");
    }
}

#[test]
fn regression_block_message_with_a_huge_timestamp_cut_or_spaced_anywhere() {
    let text = r#"{"type": "block", "block": {"index": 10, "previous_hash": "1", "proof": 0, "timestamp": 3.212591362577054e+305, "transactions": []}, "difficulty": 1}"#;
    for at in 0..=text.len() {
        check_any_text(&text[..at]).expect("a cut message is parsed or refused cleanly");
        let mut bytes = text.as_bytes().to_vec();
        if at < bytes.len() {
            bytes[at] = b' ';
        }
        check_any_text(&String::from_utf8_lossy(&bytes)).expect("parsed or refused cleanly");
    }
}
