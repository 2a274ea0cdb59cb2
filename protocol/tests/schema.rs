//! The JSON Schema of the WebSocket messages (`protocol/schema/messages.json`, draft 2020-12)
//! matches what the crate serialises: every generated server and client message validates, and
//! hand-written wrong messages do not (so the check can fail). Validation is done by Python's
//! `jsonschema` package in one `python3` process, the reference implementation of the draft.

mod support;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use proptest::prelude::*;
use serde_json::{Value, json};
use support::{arb_client_message, arb_server_message};

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/messages.json");

/// Reads `<definition>\t<json>` lines; answers `ok` or the first validation error on one line.
const VALIDATOR: &str = r##"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validators = {}
for name in list(schema["$defs"]) + [""]:
    ref = {"$schema": schema["$schema"], "$defs": schema["$defs"]}
    ref.update({"$ref": "#/$defs/" + name} if name else {"anyOf": schema["anyOf"]})
    validators[name] = jsonschema.Draft202012Validator(ref)
print("ready", flush=True)
for line in sys.stdin:
    name, _, text = line.rstrip("\n").partition("\t")
    errors = list(validators[name].iter_errors(json.loads(text)))
    print("ok" if not errors else "invalid: " + errors[0].message.replace("\n", " ")[:300], flush=True)
"##;

struct Validator {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Validator {
    fn start() -> Self {
        let mut child = Command::new("python3")
            .args(["-c", VALIDATOR, SCHEMA])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed (scripts/setup installs jsonschema)");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading from python3");
        assert_eq!(line.trim(), "ready", "the schema did not load (is jsonschema installed?)");
        Validator { _child: child, stdin, stdout }
    }

    /// Returns `Ok(())` when `text` validates against `$defs/<definition>` (`""`: the root).
    fn check(&mut self, definition: &str, text: &str) -> Result<(), String> {
        assert!(!text.contains('\n'), "compact JSON has no newline");
        writeln!(self.stdin, "{definition}\t{text}").expect("writing to python3");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("reading from python3");
        match line.trim_end() {
            "ok" => Ok(()),
            other => Err(other.to_owned()),
        }
    }
}

thread_local! {
    static VALIDATOR_PROCESS: RefCell<Option<Validator>> = const { RefCell::new(None) };
}

fn check(definition: &str, text: &str) -> Result<(), String> {
    VALIDATOR_PROCESS
        .with(|v| v.borrow_mut().get_or_insert_with(Validator::start).check(definition, text))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_server_message_validates(msg in arb_server_message()) {
        let text = msg.to_json();
        prop_assert_eq!(check("ServerMessage", &text), Ok(()), "{}", text);
        prop_assert_eq!(check("", &text), Ok(()), "{}", text);
    }

    #[test]
    fn every_client_message_validates(msg in arb_client_message()) {
        let text = msg.to_json();
        prop_assert_eq!(check("ClientMessage", &text), Ok(()), "{}", text);
        prop_assert_eq!(check("", &text), Ok(()), "{}", text);
    }
}

#[test]
fn wrong_messages_do_not_validate() {
    let block = protocol::Block::genesis(1_732_531_641.0).to_value();
    let mut extra_field = block.clone();
    extra_field["nonce"] = json!(1);
    let cases: Vec<(&str, Value)> = vec![
        ("ServerMessage", json!({"type": "block", "block": block, "difficulty": 0})),
        ("ServerMessage", json!({"type": "block", "block": block, "difficulty": 65})),
        ("ServerMessage", json!({"type": "block", "block": extra_field, "difficulty": 2})),
        ("ServerMessage", json!({"type": "block", "block": {"index": 1}, "difficulty": 2})),
        (
            "ServerMessage",
            json!({"type": "result", "accepted": true, "message": "yes", "reason": null, "index": 2}),
        ),
        (
            "ServerMessage",
            json!({"type": "result", "accepted": false, "message": "no", "reason": null, "index": 2}),
        ),
        (
            "ServerMessage",
            json!({"type": "result", "accepted": false, "message": "no", "reason": "late", "index": 2}),
        ),
        (
            "ServerMessage",
            json!({"type": "result", "accepted": false, "message": "no", "reason": "stale", "index": -1}),
        ),
        ("ServerMessage", json!({"type": "error"})),
        ("ServerMessage", json!({"type": "blocks", "message": "x"})),
        ("ClientMessage", json!({"type": "proof", "proof": -1, "id": "a"})),
        ("ClientMessage", json!({"type": "proof", "proof": 1.5, "id": "a"})),
        ("ClientMessage", json!({"type": "proof", "proof": "12", "id": "a"})),
        (
            "ClientMessage",
            json!({"type": "proof", "proof": 18_446_744_073_709_551_615u64, "id": "  "}),
        ),
        ("ClientMessage", json!({"type": "proof", "proof": 1, "id": "x".repeat(129)})),
        ("ClientMessage", json!({"type": "proof", "proof": 1, "id": "a", "index": "3"})),
        ("ClientMessage", json!({"type": "proof", "id": "a"})),
        ("ClientMessage", json!({"proof": 1, "id": "a"})),
        ("ClientMessage", json!(["last_block"])),
        ("", json!({"type": "mine"})),
    ];
    for (definition, value) in cases {
        let text = value.to_string();
        assert!(check(definition, &text).is_err(), "{definition} accepted {text}");
        // The server's parser of client frames refuses them as well. (The client-side parser of
        // server frames is lenient on purpose, to mine on other servers, so it is not checked.)
        if definition == "ClientMessage" {
            assert!(protocol::ClientMessage::from_json(&text).is_err(), "{text}");
        }
    }
    // Numbers past u64 are refused too (written as text: serde_json has no such integer).
    let huge = r#"{"type": "proof", "proof": 18446744073709551616, "id": "a"}"#;
    assert!(check("ClientMessage", huge).is_err());
    assert!(protocol::ClientMessage::from_json(huge).is_err());
}
