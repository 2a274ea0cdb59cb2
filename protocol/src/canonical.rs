//! Python-compatible canonical JSON: the text of `json.dumps(value, sort_keys=True)`.
//!
//! Course servers hash `json.dumps(block, sort_keys=True).encode()` followed by the decimal proof,
//! so miner and server must reproduce Python's output byte for byte, for any JSON value (other
//! servers' blocks carry extra keys, camelCase names, floats, nested objects):
//! - separators `", "` and `": "`, object keys sorted by code point;
//! - `ensure_ascii=True`: every character outside printable ASCII (`' '..='~'`) is escaped as
//!   `\uXXXX` (lower-case hex; surrogate pairs above U+FFFF), with the short forms `\n \r \t \b \f`;
//! - floats as Python's `repr(float)`: shortest round-trip digits, `1.0` not `1`, scientific
//!   notation (`1e+16`, `1e-05`) outside `1e-4 <= |x| < 1e16`.
//!
//! Integers are printed exactly as `serde_json` holds them. `serde_json` (without its
//! `arbitrary_precision` feature) reads an integer outside the 64-bit ranges as a float, so such a
//! value would print differently from Python, which keeps every integer exact. No block of this
//! pool or of the course servers carries such numbers.

use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;

/// Returns Python's `json.dumps(value, sort_keys=True)` for a JSON value.
pub fn to_python_json(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// Returns the block string of any serialisable block: `json.dumps(block, sort_keys=True)`.
///
/// # Errors
/// Fails only when `block` cannot be represented as JSON (a map with non-string keys, a
/// non-finite float); [`crate::Block`] always can.
pub fn block_string<T: Serialize + ?Sized>(block: &T) -> Result<String, serde_json::Error> {
    Ok(to_python_json(&serde_json::to_value(block)?))
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                write!(out, "{u}").expect("writing to a String never fails");
            } else if let Some(i) = n.as_i64() {
                write!(out, "{i}").expect("writing to a String never fails");
            } else if let Some(f) = n.as_f64() {
                write_python_float(out, f);
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sort explicitly rather than trusting the map's order: another crate in the build
            // may enable serde_json's `preserve_order`. Rust's `str` order is byte order of
            // UTF-8, which equals Python's code-point order.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, key);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").expect("writing to a String never fails");
                }
            }
        }
    }
    out.push('"');
}

/// Writes `repr(f)` as Python 3 prints it (`float_repr_style == 'short'`).
///
/// CPython uses David Gay's `dtoa` in mode 0: the fewest significant digits that read back as
/// `f`, and among those the digits nearest to `f`'s exact value, an exact tie going to the even
/// last digit. Rust's `{:e}` gives the fewest digits too, but breaks a tie upwards (Python
/// `1795954622.0039062`, Rust `1795954622.0039063`), so [`shortest_digits`] redoes the rounding.
fn write_python_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    let (digits, exp) = shortest_digits(f.abs());
    if (-4..16).contains(&exp) {
        // Fixed notation with at least one digit after the point.
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            out.push_str(&digits);
        } else {
            let point = point as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        write!(out, "e{sign}{:02}", exp.abs()).expect("writing to a String never fails");
    }
}

/// Splits `{:e}` text ("1.2345e-7") into its digits without the point ("12345") and exponent.
fn split_sci(sci: &str) -> (String, i32) {
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exp = exp.parse().expect("`{:e}` writes a decimal exponent");
    (mantissa.chars().filter(|c| *c != '.').collect(), exp)
}

/// Returns the significant digits (no trailing zeroes) and the decimal exponent of the first
/// digit of Python's `repr` of a finite `x >= 0`.
///
/// The length comes from Rust's shortest round-trip `{:e}`. The digits are then `x`'s exact
/// value rounded half-to-even to that length, if those read back as `x`; otherwise (possible
/// only where the gap below `x` is half the gap above, at a power of two) Rust's digits, the
/// only other candidate of that length.
fn shortest_digits(x: f64) -> (String, i32) {
    let (shortest, exp) = split_sci(&format!("{x:e}"));
    let n = shortest.len();
    // `{:.P$e}` is correctly rounded; 40 digits past the shortest length decide the rounding,
    // except when they read "5000...": then `x` may be a tie, and its exact expansion (at most
    // 767 significant digits for an f64) decides.
    let (mut wide, mut wide_exp) = split_sci(&format!("{x:.*e}", n + 40));
    let tail = &wide[n..];
    if tail.starts_with('5') && tail[1..].bytes().all(|b| b == b'0') {
        (wide, wide_exp) = split_sci(&format!("{x:.800e}"));
    }
    let (head, tail) = wide.split_at(n);
    let round_up = match tail.as_bytes().first() {
        Some(b'5') if tail[1..].bytes().all(|b| b == b'0') => {
            // An exact tie: keep the even neighbour.
            head.as_bytes().last().is_some_and(|d| (d - b'0') % 2 == 1)
        }
        Some(b'6'..=b'9' | b'5') => true,
        _ => false,
    };
    let mut digits = head.as_bytes().to_vec();
    let mut digits_exp = wide_exp;
    if round_up {
        let mut i = digits.len();
        loop {
            if i == 0 {
                // 999 → 1000: one more digit before the point.
                digits.insert(0, b'1');
                digits.pop();
                digits_exp += 1;
                break;
            }
            i -= 1;
            if digits[i] == b'9' {
                digits[i] = b'0';
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    let nearest = String::from_utf8(digits).expect("ASCII digits");
    let reads_back = format!("{nearest}e{}", digits_exp - (nearest.len() as i32 - 1))
        .parse::<f64>()
        .is_ok_and(|y| y == x);
    if reads_back { (nearest, digits_exp) } else { (shortest, exp) }
}

#[cfg(test)]
mod tests;
