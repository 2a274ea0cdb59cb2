//! Turns what a server sends into work for the search: finds the block in an answer of any
//! common shape, renders its block string in the server's dialect, and builds a [`Job`].
//!
//! This module knows nothing about sockets or HTTP; it is pure functions over JSON values, so
//! each server variant can be unit-tested.

use protocol::{Difficulty, to_python_json};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

use crate::search::Job;

/// How a server turns a block string and a proof into the bytes it hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// `f"{block_string}{proof}"`: the course's README and this pool.
    Json,
    /// `f"{block_string.encode()}{proof}"`: Python's bytes repr, `b'{...}'123`, which some
    /// course servers hash by mistake.
    Bytes,
}

impl Dialect {
    /// Returns the bytes hashed before the proof's digits for `block_string`.
    pub fn prefix(self, block_string: &str) -> Vec<u8> {
        match self {
            Dialect::Json => block_string.as_bytes().to_vec(),
            Dialect::Bytes => python_bytes_repr(block_string.as_bytes()).into_bytes(),
        }
    }

    /// Returns the other dialect.
    pub fn other(self) -> Self {
        match self {
            Dialect::Json => Dialect::Bytes,
            Dialect::Bytes => Dialect::Json,
        }
    }

    /// Returns true when `proof` is valid for `block_string` at `difficulty` in this dialect.
    pub fn is_valid_proof(self, block_string: &str, proof: u64, difficulty: Difficulty) -> bool {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(self.prefix(block_string));
        hasher.update(proof.to_string().as_bytes());
        difficulty.is_met_by(&hasher.finalize().into())
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Json => "json",
            Dialect::Bytes => "bytes",
        })
    }
}

/// Returns Python's `repr(data)` for a `bytes` object, e.g. `b'{"a": 1}'`.
///
/// Python picks single quotes unless the data holds a single quote and no double quote; it
/// escapes the chosen quote and backslashes, writes `\t \n \r` short, and every other byte outside
/// printable ASCII as `\xhh`.
pub fn python_bytes_repr(data: &[u8]) -> String {
    let quote = if data.contains(&b'\'') && !data.contains(&b'"') { b'"' } else { b'\'' };
    let mut out = String::with_capacity(data.len() + 3);
    out.push('b');
    out.push(char::from(quote));
    for &byte in data {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if byte == quote => {
                out.push('\\');
                out.push(char::from(byte));
            }
            b' '..=b'~' => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push(char::from(quote));
    out
}

/// Keys that mark a JSON object as a block, in any of the common spellings.
const BLOCK_KEYS: &[&str] = &[
    "index",
    "proof",
    "timestamp",
    "transactions",
    "previous_hash",
    "previousHash",
    "prev_hash",
    "prevHash",
];

fn is_block_like(obj: &Map<String, Value>) -> bool {
    BLOCK_KEYS.iter().filter(|k| obj.contains_key(**k)).count() >= 2
}

/// A block found in a server's answer, with the difficulty the answer states, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The block, exactly as received.
    pub block: Value,
    /// The answer's `difficulty`, when it has a usable one.
    pub difficulty: Option<Difficulty>,
}

/// Finds the block in a `GET /last_block` answer: `{"last_block": block}`, any other single
/// key holding a block-like object (`block`, `lastBlock`, … possibly beside `difficulty`), or the
/// bare block. Returns `None` when the answer holds no block.
pub fn extract_block(answer: &Value) -> Option<Extracted> {
    let obj = answer.as_object()?;
    let difficulty = obj.get("difficulty").and_then(parse_difficulty);
    let block = if let Some(block @ Value::Object(_)) = obj.get("last_block") {
        block.clone()
    } else if is_block_like(obj) {
        answer.clone()
    } else {
        let mut candidates =
            obj.values().filter(|v| v.as_object().is_some_and(is_block_like)).cloned();
        let first = candidates.next()?;
        if candidates.next().is_some() {
            return None;
        }
        first
    };
    Some(Extracted { block, difficulty })
}

/// Reads a difficulty given as an integer or a decimal string.
fn parse_difficulty(value: &Value) -> Option<Difficulty> {
    let zeros = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Difficulty::new(zeros).ok()
}

/// Returns a block's `index` (an integer or a decimal string), when it has one.
pub fn block_index(block: &Value) -> Option<u64> {
    match block.get("index")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Returns a block's `proof` (an integer or a decimal string), when it has one.
pub fn block_proof(block: &Value) -> Option<u64> {
    match block.get("proof")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One block to mine: what the search needs plus what the reports and submissions need.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// The block's `index`, when it has one.
    pub index: Option<u64>,
    /// Python's `json.dumps(block, sort_keys=True)` of the block.
    pub block_string: String,
    /// The dialect the prefix is rendered in.
    pub dialect: Dialect,
    /// What the search runs.
    pub job: Job,
    /// What the block paid (its reward transactions); `None` for genesis or a block without.
    pub rewards: Option<protocol::Rewards>,
}

impl Work {
    /// Returns the work for `block` at `difficulty` in `dialect`.
    pub fn new(block: &Value, difficulty: Difficulty, dialect: Dialect) -> Self {
        let block_string = to_python_json(block);
        let job = Job { prefix: dialect.prefix(&block_string), difficulty };
        let rewards = protocol::Rewards::of(block);
        Work { index: block_index(block), block_string, dialect, job, rewards }
    }

    /// Returns the difficulty a proof needs.
    pub fn difficulty(&self) -> Difficulty {
        self.job.difficulty
    }

    /// Returns the leading zero bits of `proof`'s digest for this work (a share's worth).
    pub fn zero_bits(&self, proof: u64) -> u32 {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::new()
            .chain_update(&self.job.prefix)
            .chain_update(proof.to_string())
            .finalize()
            .into();
        protocol::share::leading_zero_bits(&digest)
    }

    /// Returns true when `proof` solves this work.
    pub fn is_solved_by(&self, proof: u64) -> bool {
        self.dialect.is_valid_proof(&self.block_string, proof, self.difficulty())
    }
}

/// Decides the dialect from a course server's `/chain`: the first mined block whose `proof`
/// solves the block before it in exactly one dialect. Returns `None` when the chain cannot tell
/// (only a genesis block, or no proof valid in either dialect at `difficulty`).
pub fn detect_dialect(chain: &[Value], difficulty: Difficulty) -> Option<Dialect> {
    chain.windows(2).find_map(|pair| {
        let proof = block_proof(&pair[1])?;
        let s = to_python_json(&pair[0]);
        let json = Dialect::Json.is_valid_proof(&s, proof, difficulty);
        let bytes = Dialect::Bytes.is_valid_proof(&s, proof, difficulty);
        match (json, bytes) {
            (true, false) => Some(Dialect::Json),
            (false, true) => Some(Dialect::Bytes),
            _ => None,
        }
    })
}

/// Finds the chain's list in a `GET /chain` answer: `{"chain": [...]}` or a bare list.
pub fn extract_chain(answer: &Value) -> Option<&[Value]> {
    match answer {
        Value::Array(items) => Some(items),
        Value::Object(obj) => obj.get("chain").and_then(Value::as_array).map(Vec::as_slice),
        _ => None,
    }
}

/// Returns true when a server's answer to a proof says it forged a block: "New Block Forged" in
/// any case, spacing or punctuation, and no word of failure.
pub fn says_forged(message: &str) -> bool {
    let words: Vec<String> = message
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let squashed: String = words.concat();
    const FAILURE: &[&str] =
        &["not", "no", "invalid", "fail", "failed", "stale", "rejected", "error", "wrong", "late"];
    squashed.contains("blockforged") && !words.iter().any(|w| FAILURE.contains(&w.as_str()))
}

#[cfg(test)]
mod tests;
