//! Property test: the block string agrees with real CPython's `json.dumps(v, sort_keys=True)`.
//!
//! Generates arbitrary JSON (unicode from every plane, floats of every magnitude, nesting, 64-bit
//! integers), sends each value's compact JSON to one `python3` process, and compares its
//! `json.dumps(json.loads(line), sort_keys=True)` with `protocol::to_python_json`.

mod support;

use proptest::prelude::*;
use support::{Python, arb_json};

const PYTHON: &str = r#"
import json, sys
for line in sys.stdin:
    sys.stdout.write(json.dumps(json.dumps(json.loads(line), sort_keys=True)) + "\n")
    sys.stdout.flush()
"#;

#[test]
fn block_string_matches_python_json_dumps() {
    let python = Python::spawn(PYTHON);
    let config =
        ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(value in arb_json())| {
        let line = serde_json::to_string(&value).expect("serialisable");
        let expected: String =
            serde_json::from_str(&python.ask(&line)).expect("python3 wrote a JSON string");
        prop_assert_eq!(protocol::to_python_json(&value), expected, "input: {}", line);
    });
}
