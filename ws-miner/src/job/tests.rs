use super::*;
use serde_json::json;

#[track_caller]
fn check_extract(answer: Value, block: Option<Value>, difficulty: Option<u64>) {
    let got = extract_block(&answer);
    assert_eq!(got.as_ref().map(|e| &e.block), block.as_ref(), "block of {answer}");
    assert_eq!(
        got.and_then(|e| e.difficulty).map(|d| u64::from(d.zeros())),
        difficulty,
        "difficulty of {answer}"
    );
}

fn course_block() -> Value {
    json!({"index": 2, "timestamp": 1.5, "transactions": [], "proof": 7, "previous_hash": "ab"})
}

#[test]
fn extracts_blocks_of_every_common_shape() {
    let b = course_block();
    check_extract(json!({"last_block": b}), Some(b.clone()), None);
    check_extract(json!({"last_block": b, "difficulty": 4}), Some(b.clone()), Some(4));
    check_extract(b.clone(), Some(b.clone()), None);
    check_extract(json!({"block": b, "difficulty": "5"}), Some(b.clone()), Some(5));
    let camel = json!({"index": 3, "previousHash": "x", "proof": 1, "timeStamp": 2.0});
    check_extract(json!({"lastBlock": camel}), Some(camel.clone()), None);
    // A difficulty out of range is ignored, not fatal: --zeros applies.
    check_extract(json!({"last_block": b, "difficulty": 0}), Some(b.clone()), None);
}

#[test]
fn refuses_answers_without_a_single_block() {
    check_extract(json!({"message": "hello"}), None, None);
    check_extract(json!([1, 2]), None, None);
    check_extract(json!("text"), None, None);
    check_extract(json!({"a": course_block(), "b": course_block()}), None, None);
    check_extract(json!({"last_block": null, "x": 1}), None, None);
}

#[test]
fn index_and_proof_read_integers_and_strings() {
    assert_eq!(block_index(&json!({"index": 5})), Some(5));
    assert_eq!(block_index(&json!({"index": "6"})), Some(6));
    assert_eq!(block_index(&json!({"index": -1})), None);
    assert_eq!(block_proof(&json!({"proof": "17"})), Some(17));
    assert_eq!(block_proof(&json!({})), None);
}

/// Returns what Python prints for `f"{s.encode()}{proof}"`.
fn python_bytes_line(s: &str) -> String {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; s = sys.stdin.read(); sys.stdout.write(f'{s.encode()}42')"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("piped").write_all(s.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3 runs");
    assert!(output.status.success());
    String::from_utf8(output.stdout).expect("python prints ASCII")
}

#[test]
fn bytes_dialect_matches_python() {
    let tricky = [
        r#"{"index": 1, "previous_hash": "1"}"#.to_owned(),
        to_python_json(&json!({"id": "O'Brien"})),
        to_python_json(&json!({"id": "back\\slash", "q": "it's \"both\""})),
        "only 'single' quotes".to_owned(),
        "tab\there\nnewline\r\u{1} del\u{7f}".to_owned(),
        to_python_json(&json!({"name": "José 🚀"})),
        String::new(),
    ];
    for s in tricky {
        let mut ours = Dialect::Bytes.prefix(&s);
        ours.extend_from_slice(b"42");
        assert_eq!(String::from_utf8(ours).expect("ascii"), python_bytes_line(&s), "for {s:?}");
    }
}

#[test]
fn dialects_validate_differently() {
    let s = to_python_json(&course_block());
    let d = Difficulty::new(2).expect("in range");
    let json_proof = (0..).find(|p| Dialect::Json.is_valid_proof(&s, *p, d)).expect("found");
    assert!(protocol::pow::proof_digest(&s, json_proof)[0] == 0);
    let bytes_proof = (0..)
        .find(|p| {
            Dialect::Bytes.is_valid_proof(&s, *p, d) && !Dialect::Json.is_valid_proof(&s, *p, d)
        })
        .expect("found");
    let genesis = course_block();
    let mined = |proof: u64| json!({"index": 3, "proof": proof, "previous_hash": "x"});
    assert_eq!(detect_dialect(std::slice::from_ref(&genesis), d), None);
    assert_eq!(detect_dialect(&[genesis.clone(), mined(bytes_proof)], d), Some(Dialect::Bytes));
    if !Dialect::Bytes.is_valid_proof(&s, json_proof, d) {
        assert_eq!(detect_dialect(&[genesis, mined(json_proof)], d), Some(Dialect::Json));
    }
}

#[test]
fn chain_answers() {
    let b = course_block();
    assert_eq!(extract_chain(&json!({"chain": [b], "length": 1})).map(<[Value]>::len), Some(1));
    assert_eq!(extract_chain(&json!([b, b])).map(<[Value]>::len), Some(2));
    assert_eq!(extract_chain(&json!({"length": 1})), None);
}

#[test]
fn success_messages() {
    for yes in [
        "New Block Forged",
        "new block forged",
        "NEW BLOCK FORGED!",
        "New_Block_Forged",
        "New block forged: block 4",
        "Success! New Block Forged.",
        "newblockforged",
    ] {
        assert!(says_forged(yes), "{yes:?} should count as a win");
    }
    for no in [
        "",
        "Proof invalid or already submitted",
        "Block not forged",
        "No new block forged",
        "Proof rejected: stale (New Block Forged by alice)",
        "failed",
        "Invalid proof",
    ] {
        assert!(!says_forged(no), "{no:?} should not count as a win");
    }
}

#[test]
fn work_from_a_block() {
    let work = Work::new(&course_block(), Difficulty::new(3).expect("ok"), Dialect::Json);
    assert_eq!(work.index, Some(2));
    assert_eq!(
        work.block_string,
        r#"{"index": 2, "previous_hash": "ab", "proof": 7, "timestamp": 1.5, "transactions": []}"#
    );
    assert_eq!(work.job.prefix, work.block_string.as_bytes());
    let bytes = Work::new(&course_block(), Difficulty::new(3).expect("ok"), Dialect::Bytes);
    assert_eq!(bytes.job.prefix, format!("b'{}'", work.block_string).into_bytes());
}

#[test]
fn block_strings_of_received_blocks_match_python_for_many_timestamps() {
    // Python's time() floats, as a course server sends them; Rust must read each back to the
    // very same double, or the block string (and every proof) differs from the server's.
    let script = "import json, random\n\
        random.seed(7)\n\
        blocks = [{'index': i, 'timestamp': 1.7e9 + random.random() * 1e8, 'proof': 1} for i in range(3000)]\n\
        print(json.dumps(blocks))\n\
        for b in blocks: print(json.dumps(b, sort_keys=True))";
    let output =
        std::process::Command::new("python3").args(["-c", script]).output().expect("python3");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let mut lines = text.lines();
    let blocks: Vec<Value> = serde_json::from_str(lines.next().expect("blocks")).expect("json");
    let mismatches: Vec<(String, &str)> = blocks
        .iter()
        .map(to_python_json)
        .zip(lines)
        .filter(|(ours, python)| ours != python)
        .collect();
    assert!(mismatches.is_empty(), "{} differ, e.g. {:?}", mismatches.len(), mismatches.first());
}

#[test]
fn json_events_have_a_stable_shape() {
    use crate::output::Event;
    let lines: Vec<String> = [
        Event::SearchStarted {
            index: Some(3),
            block: Some(4),
            difficulty: 6,
            kernel: "portable",
            threads: 4,
        },
        Event::SearchFinished {
            index: Some(3),
            block: Some(4),
            proof: 123,
            secs: 1.5,
            attempts: 3_000_000,
            hashrate: 2e6,
        },
        Event::SearchAborted {
            index: Some(3),
            block: Some(4),
            by_index: Some(4),
            secs: 0.5,
            arrived_ts: 1_700_000_000.5,
            flag_ms: 0.03,
            stop_ms: 1.25,
            attempts: 1_000_000,
            stale_attempts: 700,
        },
        Event::Accepted {
            index: Some(3),
            block: Some(4),
            proof: 123,
            message: "New Block Forged".into(),
            coins: 2,
        },
        Event::Rejected {
            index: None,
            block: None,
            proof: 9,
            reason: "stale",
            message: "late".into(),
        },
        Event::Balance { id: "alice".into(), coins: 2, server_coins: 212 },
    ]
    .iter()
    .map(Event::to_json)
    .collect();
    insta::assert_snapshot!(lines.join("\n"), @r#"
    {"event":"search_started","index":3,"block":4,"difficulty":6,"kernel":"portable","threads":4}
    {"event":"search_finished","index":3,"block":4,"proof":123,"secs":1.5,"attempts":3000000,"hashrate":2000000.0}
    {"event":"search_aborted","index":3,"block":4,"by_index":4,"secs":0.5,"arrived_ts":1700000000.5,"flag_ms":0.03,"stop_ms":1.25,"attempts":1000000,"stale_attempts":700}
    {"event":"accepted","index":3,"block":4,"proof":123,"message":"New Block Forged","coins":2}
    {"event":"rejected","index":null,"block":null,"proof":9,"reason":"stale","message":"late"}
    {"event":"balance","id":"alice","coins":2,"server_coins":212}
    "#);
}

#[test]
fn share_events_are_json_lines_and_one_plain_line_every_so_often() {
    use crate::output::Event;
    let result = Event::ShareResult {
        index: Some(3),
        proof: 77,
        accepted: false,
        reason: Some("stale"),
        bits: 20,
        message: "block 3 was already won".into(),
    };
    assert_eq!(
        result.to_json(),
        r#"{"event":"share_result","index":3,"proof":77,"accepted":false,"reason":"stale","bits":20,"message":"block 3 was already won"}"#
    );
    let target = Event::ShareTarget { bits: 20 };
    assert_eq!(target.to_json(), r#"{"event":"share_target","bits":20}"#);
    // One per share or retarget: JSON only.
    assert!(result.is_json_only() && target.is_json_only());
    let line = Event::Shares {
        accepted: 12,
        stale: 1,
        invalid: 2,
        bits: Some(24),
        pool_hashrate: 41.5e6,
        pool_source: "workers",
        hashrate: 45e6,
    };
    assert!(!line.is_json_only());
    assert_eq!(
        line.to_plain(),
        "shares: 12 accepted (1 stale, 2 invalid) at 24 bits; ~41.50 MH/s by the pool, \
         45.00 MH/s measured"
    );
    assert_eq!(
        line.to_json(),
        r#"{"event":"shares","accepted":12,"stale":1,"invalid":2,"bits":24,"pool_hashrate":41500000.0,"pool_source":"workers","hashrate":45000000.0}"#
    );
    let refused = Event::SharesRefused { message: "unknown message type \"shares\"".into() };
    assert_eq!(
        refused.to_plain(),
        "the server takes no shares (unknown message type \"shares\"); mining for blocks only"
    );
}
