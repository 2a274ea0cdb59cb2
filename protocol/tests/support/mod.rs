//! Strategies shared by the property tests: arbitrary JSON values and every message the crate
//! serialises, so the fuzz and schema tests draw from the same space.

#![allow(dead_code)] // each test binary uses a different subset

use proptest::prelude::*;
use protocol::message::FORGED;
use protocol::share::ShareReject;
use protocol::{Balance, Block, ClientMessage, Difficulty, ProofSubmission, Transaction};
use protocol::{BlockSummary, RejectReason, ServerMessage, Worker};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A `python3` process running a script that answers each input line with one output line, so
/// a property test can ask real CPython thousands of questions cheaply.
pub struct Python {
    child: Child,
    stdin: RefCell<Option<ChildStdin>>,
    stdout: RefCell<BufReader<ChildStdout>>,
}

impl Python {
    /// Starts `python3 -c script`.
    pub fn spawn(script: &str) -> Self {
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed to run this test (scripts/setup installs it)");
        let stdin = RefCell::new(Some(child.stdin.take().expect("piped")));
        let stdout = RefCell::new(BufReader::new(child.stdout.take().expect("piped")));
        Python { child, stdin, stdout }
    }

    /// Sends one line and returns the script's answer line.
    pub fn ask(&self, line: &str) -> String {
        let mut stdin = self.stdin.borrow_mut();
        writeln!(stdin.as_mut().expect("open until drop"), "{line}").expect("python3 is reading");
        let mut answer = String::new();
        self.stdout.borrow_mut().read_line(&mut answer).expect("python3 answers");
        answer
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        // Closing stdin ends the script's read loop.
        self.stdin.borrow_mut().take();
        let _ = self.child.wait();
    }
}

/// Strings that stress escaping: quotes, backslashes, controls, non-ASCII, astral planes.
pub fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_ ]{0,12}",
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('\n'),
                Just('\u{0}'),
                Just('\u{7f}'),
                Just('\u{e9}'),
                Just('\u{1f680}'),
                Just('\u{feff}'),
                any::<char>()
            ],
            0..8
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

/// Finite floats of every magnitude (JSON has no NaN or infinity).
pub fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("JSON floats are finite", |f| f.is_finite()),
        (0u32..2_000_000_000, 0u32..1_000_000)
            .prop_map(|(s, us)| f64::from(s) + f64::from(us) / 1e6),
        (-1e6f64..1e6),
        (-30i32..30, 1u32..1000).prop_map(|(e, m)| f64::from(m) * 10f64.powi(e)),
        Just(0.0),
        Just(-0.0),
        Just(1e16),
        Just(5e-324),
    ]
}

/// Any JSON value, nested a few levels.
pub fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        arb_float().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((arb_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid difficulty (1..=64 zeroes).
pub fn arb_difficulty() -> impl Strategy<Value = Difficulty> {
    (1u64..=64).prop_map(|z| Difficulty::new(z).expect("1..=64 is a valid difficulty"))
}

/// A block as the server stores and sends it.
pub fn arb_block() -> impl Strategy<Value = Block> {
    let tx = (arb_string(), arb_string(), any::<u64>())
        .prop_map(|(sender, recipient, amount)| Transaction { sender, recipient, amount });
    (
        any::<u64>(),
        arb_float(),
        proptest::collection::vec(tx, 0..4),
        any::<u64>(),
        prop_oneof![Just("1".to_owned()), "[0-9a-f]{64}", arb_string()],
    )
        .prop_map(|(index, timestamp, transactions, proof, previous_hash)| Block {
            index,
            timestamp,
            transactions,
            proof,
            previous_hash,
        })
}

/// A non-negative finite float, as statistics are.
fn arb_rate() -> impl Strategy<Value = f64> {
    arb_float().prop_map(f64::abs)
}

/// Every kind of server message, with arbitrary contents.
pub fn arb_server_message() -> impl Strategy<Value = ServerMessage> {
    let reason = prop_oneof![Just(RejectReason::Stale), Just(RejectReason::Invalid)];
    let share_reason = prop_oneof![
        Just(ShareReject::Stale),
        Just(ShareReject::Invalid),
        Just(ShareReject::Duplicate)
    ];
    let balance = (arb_string(), any::<i64>()).prop_map(|(id, coins)| Balance { id, coins });
    let worker = (arb_string(), arb_rate(), any::<[u64; 3]>(), arb_rate(), any::<i64>()).prop_map(
        |(id, hashrate, [shares, stale, invalid], last_share, coins)| Worker {
            id,
            hashrate,
            shares,
            stale,
            invalid,
            last_share,
            coins,
        },
    );
    let stats = (
        (any::<u64>(), arb_difficulty(), any::<u64>(), arb_rate(), arb_rate()),
        proptest::collection::vec(balance, 0..4),
        proptest::collection::vec(arb_block(), 0..3),
        proptest::collection::vec(worker, 0..3),
    )
        .prop_map(
            |(
                (chain_length, difficulty, miners, blocks_per_minute, hashrate),
                balances,
                recent,
                workers,
            )| {
                ServerMessage::Stats {
                    chain_length,
                    difficulty,
                    miners,
                    blocks_per_minute,
                    hashrate,
                    balances,
                    recent: recent
                        .iter()
                        .map(|b: &Block| BlockSummary::of(b, Some(b.hash().to_hex())))
                        .collect(),
                    workers,
                }
            },
        );
    prop_oneof![
        (arb_block(), arb_difficulty()).prop_map(|(b, d)| ServerMessage::block(&b, d)),
        // As the server sends them: accepted ⇔ "New Block Forged" and no reason.
        any::<u64>().prop_map(|index| ServerMessage::Result {
            accepted: true,
            message: FORGED.to_owned(),
            reason: None,
            index
        }),
        (arb_string(), reason, any::<u64>()).prop_map(|(message, reason, index)| {
            ServerMessage::Result { accepted: false, message, reason: Some(reason), index }
        }),
        arb_string().prop_map(|message| ServerMessage::Error { message }),
        stats,
        (1u8..=64).prop_map(|bits| ServerMessage::ShareTarget { bits }),
        (any::<u64>(), 1u8..=64).prop_map(|(index, bits)| ServerMessage::Share {
            accepted: true,
            message: "share accepted".to_owned(),
            reason: None,
            index,
            bits
        }),
        (arb_string(), share_reason, any::<u64>(), 1u8..=64).prop_map(
            |(message, reason, index, bits)| ServerMessage::Share {
                accepted: false,
                message,
                reason: Some(reason),
                index,
                bits
            }
        ),
    ]
}

/// A miner id that the protocol accepts: non-empty after trimming, at most 128 bytes.
pub fn arb_valid_id() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9_-]{1,20}", "\\PC{1,30}"].prop_filter("valid id", |s| {
        let t = s.trim();
        // Exactly what `MinerId` keeps: `\PC` still lets through U+2028/9 (separators), which
        // ids refuse.
        !t.is_empty()
            && t.chars().count() <= protocol::message::MAX_ID_CHARS
            && t == s
            && protocol::MinerId::parse(s).is_ok_and(|id| id.as_str() == s)
    })
}

/// Every kind of client message, with valid contents.
pub fn arb_client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (any::<u64>(), arb_valid_id(), proptest::option::of(any::<u64>())).prop_map(
            |(proof, id, index)| ClientMessage::Proof(ProofSubmission { proof, id, index })
        ),
        Just(ClientMessage::LastBlock),
        Just(ClientMessage::Stats),
        Just(ClientMessage::Shares),
    ]
}
