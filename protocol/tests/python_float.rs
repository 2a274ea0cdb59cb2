//! Every float prints as CPython's `repr` (what `json.dumps` writes): shortest round-trip digits,
//! and where two shortest strings are equally near the exact value, the one with the even last
//! digit. Checked in bulk against one real `python3` process: the ties near today's epoch
//! seconds, 100,000 random bit patterns and 100,000 random timestamps, from fixed seeds.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::Value;
use test_support::Rng;

/// Answers each line holding an f64's bits (decimal) with `json.dumps` of that float.
const PYTHON: &str = r#"
import json, struct, sys
out = []
for line in sys.stdin:
    out.append(json.dumps(struct.unpack("<d", struct.pack("<Q", int(line)))[0]))
sys.stdout.write("\n".join(out) + "\n")
"#;

fn ours(f: f64) -> String {
    protocol::to_python_json(&Value::from(f))
}

/// Returns Python's `json.dumps` of every value, from one `python3` process.
fn python(values: &[f64]) -> Vec<String> {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run this test (scripts/setup installs it)");
    let mut stdin = child.stdin.take().expect("piped");
    let input: String = values.iter().map(|f| format!("{}\n", f.to_bits())).collect();
    // Written on a thread: python3 answers only at the end, but a pipe holds only so much.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let lines: Vec<String> = stdout.lines().map(|l| l.expect("python3 answers")).collect();
    writer.join().expect("writer thread").expect("python3 reads its input");
    assert!(child.wait().expect("python3 exits").success());
    assert_eq!(lines.len(), values.len());
    lines
}

#[track_caller]
fn check_all(values: &[f64]) {
    let expected = python(values);
    let wrong: Vec<String> = values
        .iter()
        .zip(&expected)
        .filter(|(f, e)| ours(**f) != **e)
        .map(|(f, e)| format!("{:#x}: ours {}, python {e}", f.to_bits(), ours(*f)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} differ, e.g. {:?}",
        wrong.len(),
        values.len(),
        &wrong[..wrong.len().min(10)]
    );
}

#[test]
fn ties_go_to_the_even_digit_as_in_python() {
    // Each is exactly halfway between two shortest candidates; CPython's dtoa keeps the even one.
    assert_eq!(ours(-1073470262229740.2), "-1073470262229740.2");
    assert_eq!(ours(1795954622.0039062), "1795954622.0039062");
    // Both candidates of `1795954622.0039062` read back as the same float: only the tie rule
    // tells them apart.
    assert_eq!("1795954622.0039063".parse::<f64>(), Ok(1795954622.0039062));
}

#[test]
fn odd_multiples_of_powers_of_two_near_today_match_python() {
    // Timestamps from 1.7e9 to 1.8e9 s with k fractional bits (k = 1..30), odd numerators: the
    // values whose exact decimal expansion is shortest, where ties happen.
    let mut rng = Rng::new(0x5eed_0001);
    let mut values = Vec::new();
    for k in 1..=30 {
        let scale = f64::from(1u32 << k);
        for _ in 0..1000 {
            let seconds = 1.7e9 + (rng.next_u64() % 100_000_000) as f64;
            let numerator = (seconds * scale) as u64 | 1;
            values.push(numerator as f64 / scale);
        }
    }
    check_all(&values);
}

#[test]
fn random_floats_and_timestamps_match_python() {
    let mut rng = Rng::new(0x5eed_0002);
    let mut values = Vec::new();
    while values.len() < 100_000 {
        let f = f64::from_bits(rng.next_u64());
        if f.is_finite() {
            values.push(f);
        }
    }
    for _ in 0..100_000 {
        // Microsecond-ish timestamps as `time()` returns them, and their neighbours.
        let t = 1.7e9 + (rng.next_u64() % (100_000_000 << 20)) as f64 / f64::from(1u32 << 20);
        values.push(t);
    }
    // Powers of two and their neighbours: where the gap below is half the gap above.
    let powers = (0..52).map(|i| 1u64 << i).chain((1..2047).map(|e| e << 52));
    for bits in powers {
        values.extend([bits - 1, bits, bits + 1].map(f64::from_bits));
    }
    check_all(&values);
}
