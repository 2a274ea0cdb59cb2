//! Property test of the other direction from `python_json.rs`: JSON text written by Python (as a
//! course server sends it: `json.dumps` with or without `ensure_ascii`, compact or spaced,
//! sorted or not), parsed by Rust, must give back exactly Python's
//! `json.dumps(value, sort_keys=True)`. This is what a miner does with a block from a Flask
//! server; a float parsed one ulp off would make every proof for that block invalid.
//!
//! 1,000 cases by default; `RUN_SLOW_TESTS=1` runs 50,000.

mod support;

use proptest::prelude::*;
use serde_json::Value;
use support::{Python, arb_json};

/// Reads `<dialect> <json>` lines; writes `[wire text, sorted block string]` as one JSON line.
const PYTHON: &str = r#"
import json, sys
dialects = [
    dict(),
    dict(ensure_ascii=False),
    dict(separators=(",", ":")),
    dict(separators=(",", ":"), ensure_ascii=False, sort_keys=True),
    dict(indent=2),
]
for line in sys.stdin:
    dialect, _, text = line.partition(" ")
    value = json.loads(text)
    wire = json.dumps(value, **dialects[int(dialect)])
    sys.stdout.write(json.dumps([wire, json.dumps(value, sort_keys=True)]) + "\n")
    sys.stdout.flush()
"#;

#[test]
fn python_written_json_parses_to_the_same_block_string() {
    let python = Python::spawn(PYTHON);
    let cases = if std::env::var_os("RUN_SLOW_TESTS").is_some() { 50_000 } else { 1_000 };
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(value in arb_json(), dialect in 0u8..5)| {
        let line = serde_json::to_string(&value).expect("serialisable");
        let answer = python.ask(&format!("{dialect} {line}"));
        let (wire, expected): (String, String) =
            serde_json::from_str(&answer).expect("python3 wrote a JSON pair");
        let parsed: Value = serde_json::from_str(&wire).expect("Python's JSON parses");
        prop_assert_eq!(protocol::to_python_json(&parsed), expected, "wire: {}", wire);
    });
}
