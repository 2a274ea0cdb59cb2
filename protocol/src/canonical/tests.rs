use super::*;
use serde_json::json;

#[track_caller]
fn check(value: Value, expected: &str) {
    assert_eq!(to_python_json(&value), expected);
}

#[track_caller]
fn check_float(f: f64, expected: &str) {
    let mut out = String::new();
    write_python_float(&mut out, f);
    assert_eq!(out, expected, "repr({f:?})");
}

#[test]
fn known_answers_from_python() {
    // Each expected string was printed by CPython 3.11's json.dumps(..., sort_keys=True).
    check(json!({"b": 1, "a": [1, 2.5, "x"]}), r#"{"a": [1, 2.5, "x"], "b": 1}"#);
    check(json!({}), "{}");
    check(json!([]), "[]");
    check(json!(null), "null");
    check(json!("Jos\u{e9} \u{1f680}"), r#""Jos\u00e9 \ud83d\ude80""#);
    check(json!("q\"\\/\n\r\t\u{8}\u{c}\u{1}\u{7f}"), r#""q\"\\/\n\r\t\b\f\u0001\u007f""#);
    check(
        json!({"index": 1, "previous_hash": "1", "proof": 100, "timestamp": 1732531641.0, "transactions": []}),
        r#"{"index": 1, "previous_hash": "1", "proof": 100, "timestamp": 1732531641.0, "transactions": []}"#,
    );
}

#[test]
fn floats_match_python_repr() {
    check_float(0.0, "0.0");
    check_float(-0.0, "-0.0");
    check_float(1.0, "1.0");
    check_float(2.5, "2.5");
    check_float(0.1, "0.1");
    check_float(1e16, "1e+16");
    check_float(1e15, "1000000000000000.0");
    check_float(9999999999999998.0, "9999999999999998.0");
    check_float(0.0001, "0.0001");
    check_float(0.00001, "1e-05");
    check_float(1.5e-7, "1.5e-07");
    check_float(1e100, "1e+100");
    check_float(1.7976931348623157e308, "1.7976931348623157e+308");
    check_float(5e-324, "5e-324");
    check_float(1732531641.123456, "1732531641.123456");
    check_float(123456789012345.67, "123456789012345.67");
}

#[test]
fn keys_sort_by_code_point() {
    check(
        json!({"\u{e9}": 1, "z": 2, "Z": 3, "\u{1f680}": 4}),
        r#"{"Z": 3, "z": 2, "\u00e9": 1, "\ud83d\ude80": 4}"#,
    );
}
