//! Property test: the block string agrees with real CPython's `json.dumps(v, sort_keys=True)`.
//!
//! Generates arbitrary JSON (unicode from every plane, floats of every magnitude, nesting, 64-bit
//! integers), sends each value's compact JSON to one `python3` process, and compares its
//! `json.dumps(json.loads(line), sort_keys=True)` with `protocol::to_python_json`.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const PYTHON: &str = r#"
import json, sys
for line in sys.stdin:
    sys.stdout.write(json.dumps(json.dumps(json.loads(line), sort_keys=True)) + "\n")
    sys.stdout.flush()
"#;

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_ ]{0,12}",
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('\u{7f}'),
                Just('\u{e9}'),
                Just('\u{1f680}'),
                Just('\u{ffff}'),
                any::<char>()
            ],
            0..8
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        (-1e6f64..1e6),
        (0u64..2_000_000_000).prop_map(|s| s as f64),
        (0u64..2_000_000_000, 0u32..1_000_000).prop_map(|(s, us)| s as f64 + us as f64 / 1e6),
        (-30i32..30, 1u32..1000).prop_map(|(e, m)| m as f64 * 10f64.powi(e)),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        arb_float().prop_map(|f| Value::Number(Number::from_f64(f).expect("finite"))),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((arb_string(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[test]
fn block_string_matches_python_json_dumps() {
    let mut python = Command::new("python3")
        .args(["-c", PYTHON])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run this test (scripts/setup installs it)");
    let stdin = RefCell::new(python.stdin.take().expect("piped"));
    let stdout = RefCell::new(BufReader::new(python.stdout.take().expect("piped")));

    let config = ProptestConfig { cases: 2000, ..ProptestConfig::default() };
    proptest!(config, |(value in arb_json())| {
        let line = serde_json::to_string(&value).expect("serialisable");
        writeln!(stdin.borrow_mut(), "{line}").expect("python3 is reading");
        let mut answer = String::new();
        stdout.borrow_mut().read_line(&mut answer).expect("python3 answers");
        let expected: String = serde_json::from_str(&answer).expect("python3 wrote a JSON string");
        prop_assert_eq!(protocol::to_python_json(&value), expected, "input: {}", line);
    });
    drop(stdin);
    let _ = python.wait();
}
