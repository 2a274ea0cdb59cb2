//! The WebSocket messages (JSON text frames on `/ws`) and the parsing of untrusted input.
//!
//! Parsing goes through [`serde_json::Value`] and checks each field by hand rather than through
//! derived `Deserialize` impls, so every rejection names the field and what was wrong with it
//! (`"proof" must be a non-negative integer that fits in 64 bits, got -1`). The HTTP routes use the
//! same checks ([`ProofSubmission::from_value`]), so both transports reject alike.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::block::Block;
pub use crate::id::MAX_ID_CHARS;
use crate::id::{IdError, MinerId};
use crate::pow::Difficulty;
use crate::share::{MAX_SHARE_BITS, MIN_SHARE_BITS, ShareReject};

/// Reads the fields a `result` and a `share` answer share: `accepted` (required), `message`
/// (default empty), `reason` (its text; `None` when absent or null) and `index` (default 0).
fn verdict(obj: &Map<String, Value>) -> Result<(bool, String, Option<&str>, u64), MessageError> {
    let accepted = match obj.get("accepted") {
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(MessageError::wrong("accepted", "a boolean", v)),
        None => return Err(MessageError::Missing("accepted")),
    };
    let message = match obj.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(MessageError::wrong("message", "a string", v)),
        None => String::new(),
    };
    let reason = match obj.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(v) => return Err(MessageError::wrong("reason", "a string", v)),
    };
    let index = match obj.get("index") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| MessageError::wrong("index", "an integer", v))?,
    };
    Ok((accepted, message, reason, index))
}

/// Reads a share target's `bits` field.
fn bits(obj: &Map<String, Value>) -> Result<u8, MessageError> {
    match obj.get("bits") {
        Some(v) => v
            .as_u64()
            .and_then(|b| u8::try_from(b).ok())
            .filter(|b| (MIN_SHARE_BITS..=MAX_SHARE_BITS).contains(b))
            .ok_or_else(|| MessageError::wrong("bits", "an integer 1..=64", v)),
        None => Err(MessageError::Missing("bits")),
    }
}

/// Reads a JSON object's fields; each refusal names the field and what it must be.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// Reads `value` as an object; else the refusal names `field` as not being `what`.
    fn of(value: &'a Value, field: &'static str, what: &'static str) -> Result<Self, MessageError> {
        value.as_object().map(Fields).ok_or_else(|| MessageError::wrong(field, what, value))
    }

    fn required(&self, field: &'static str) -> Result<&'a Value, MessageError> {
        self.0.get(field).ok_or(MessageError::Missing(field))
    }

    fn uint(&self, field: &'static str) -> Result<u64, MessageError> {
        let v = self.required(field)?;
        v.as_u64().ok_or_else(|| MessageError::wrong(field, "a non-negative integer", v))
    }

    fn int(&self, field: &'static str) -> Result<i64, MessageError> {
        let v = self.required(field)?;
        v.as_i64().ok_or_else(|| MessageError::wrong(field, "an integer", v))
    }

    fn float(&self, field: &'static str) -> Result<f64, MessageError> {
        let v = self.required(field)?;
        v.as_f64().ok_or_else(|| MessageError::wrong(field, "a number", v))
    }

    fn text(&self, field: &'static str) -> Result<String, MessageError> {
        match self.required(field)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(MessageError::wrong(field, "a string", v)),
        }
    }

    fn text_or_null(&self, field: &'static str) -> Result<Option<String>, MessageError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(MessageError::wrong(field, "a string or null", v)),
        }
    }

    fn list(&self, field: &'static str) -> Result<&'a Vec<Value>, MessageError> {
        match self.required(field)? {
            Value::Array(items) => Ok(items),
            v => Err(MessageError::wrong(field, "a list", v)),
        }
    }
}

/// The largest coin amount anywhere: one transaction's `amount`, and the largest balance (either
/// sign) that transfers may leave any id with. 2^53 − 1, so every balance is an exact integer in
/// an `i64` and in JavaScript (the dashboard). The server refuses a transaction that would take
/// the sender or the recipient past it, counting the transactions already waiting for the next
/// block. Only mining rewards (one coin per block won) can carry a balance beyond it.
pub const MAX_COINS: i64 = (1 << 53) - 1;
/// The `message` of an accepted proof, exactly as the course's server says it.
pub const FORGED: &str = "New Block Forged";

/// Why a proof was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// Valid for a block that someone else already extended.
    Stale,
    /// Not valid for the current block nor for any recent one.
    Invalid,
}

impl RejectReason {
    /// Returns the wire name (`"stale"`, `"invalid"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Stale => "stale",
            RejectReason::Invalid => "invalid",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "stale" => Some(RejectReason::Stale),
            "invalid" => Some(RejectReason::Invalid),
            _ => None,
        }
    }
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// The latest block: sent on connect, on request and broadcast whenever a block is forged.
    Block {
        /// The block to mine on. A `Value` so that a miner can mine any server's block shape.
        block: Value,
        /// Leading hex zeroes a proof needs; `None` when the frame does not say (a pool-server
        /// always says; a client then decides, e.g. from its own setting).
        #[serde(skip_serializing_if = "Option::is_none")]
        difficulty: Option<Difficulty>,
    },
    /// The answer to a proof, sent to its sender only.
    Result {
        /// Whether the proof won a block.
        accepted: bool,
        /// `"New Block Forged"` when accepted, else a sentence saying why not.
        message: String,
        /// Why it was rejected; `null` when accepted.
        reason: Option<RejectReason>,
        /// The index of the chain's last block after this proof was handled.
        index: u64,
    },
    /// A frame the server could not use; the connection stays open.
    Error {
        /// What was wrong with the frame.
        message: String,
    },
    /// The connection's share target, sent after it opted in with [`ClientMessage::Shares`] and
    /// whenever the target changes (see [`crate::share`]).
    ShareTarget {
        /// Leading zero bits of the digest a share needs.
        bits: u8,
    },
    /// The answer to a proof that was judged as a share (it did not win a block).
    Share {
        /// Whether it was counted.
        accepted: bool,
        /// A sentence for the miner.
        message: String,
        /// Why it was refused; `null` when counted.
        reason: Option<ShareReject>,
        /// The index of the chain's last block (the block the share was for, when counted).
        index: u64,
        /// The target it was judged at.
        bits: u8,
    },
    /// Pool statistics, sent only to the connection that asked with [`ClientMessage::Stats`]
    /// (the dashboard asks on connect and after each `block` message, so it never polls).
    Stats {
        /// Number of blocks in the chain, genesis included.
        chain_length: u64,
        /// Leading hex zeroes a proof needs.
        difficulty: Difficulty,
        /// Connected WebSocket clients (miners and watchers alike).
        miners: u64,
        /// Blocks forged per minute, over a recent window.
        blocks_per_minute: f64,
        /// Estimated network hashrate in hashes per second: `blocks_per_minute × 16^D / 60`.
        hashrate: f64,
        /// Coins per id, highest first, ties by id: the top [`STATS_BALANCES`] only.
        balances: Vec<Balance>,
        /// Summaries of the newest blocks, newest first (at most [`STATS_RECENT_BLOCKS`]); a
        /// block's transactions are in `GET /chain?from=INDEX&limit=1`.
        recent: Vec<BlockSummary>,
        /// The miners with the most share work lately, most first: the top [`STATS_WORKERS`]
        /// of `GET /workers`. Empty when nobody mines shares (and from servers older than
        /// shares, which leave the field out).
        workers: Vec<Worker>,
    },
}

/// How many workers (those with the most share work) a [`ServerMessage::Stats`] carries at
/// most; `GET /workers` lists more.
pub const STATS_WORKERS: usize = 20;

/// How many recent blocks a [`ServerMessage::Stats`] summarises at most.
pub const STATS_RECENT_BLOCKS: usize = 20;
/// How many balances (the highest) a [`ServerMessage::Stats`] carries at most, so that its size
/// does not grow with the number of ids; `GET /balances` has them all.
pub const STATS_BALANCES: usize = 100;

/// A block without its transactions, as [`ServerMessage::Stats`] lists it: its size does not
/// grow with the block's, so a `stats` answer stays small however big blocks get.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockSummary {
    /// Position in the chain; the genesis block is 1.
    pub index: u64,
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
    /// The block's proof.
    pub proof: u64,
    /// The hash of the previous block.
    pub previous_hash: String,
    /// This block's hash (the next block's `previous_hash`); `None` (JSON `null`) for the newest
    /// block, whose hash no later block records yet.
    pub hash: Option<String>,
    /// The id rewarded in this block; `None` for the genesis block.
    pub winner: Option<String>,
    /// How many transactions the block holds, the reward included.
    pub transaction_count: u64,
}

impl BlockSummary {
    /// Summarises `block`; `hash` is its hash when known.
    pub fn of(block: &Block, hash: Option<String>) -> Self {
        BlockSummary {
            index: block.index,
            timestamp: block.timestamp,
            proof: block.proof,
            previous_hash: block.previous_hash.clone(),
            hash,
            winner: block.winner().map(str::to_owned),
            transaction_count: block.transactions.len() as u64,
        }
    }

    fn from_value(value: &Value) -> Result<Self, MessageError> {
        let f = Fields::of(value, "recent", "a list of block summaries")?;
        Ok(BlockSummary {
            index: f.uint("index")?,
            timestamp: f.float("timestamp")?,
            proof: f.uint("proof")?,
            previous_hash: f.text("previous_hash")?,
            hash: f.text_or_null("hash")?,
            winner: f.text_or_null("winner")?,
            transaction_count: f.uint("transaction_count")?,
        })
    }
}

/// The coins held by one id: everything received minus everything sent, rewards included.
///
/// Signed because the course's `POST /transactions/new` does not check that the sender can pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// The miner or account id.
    pub id: String,
    /// Coins held; negative when an id sent more than it received.
    pub coins: i64,
}

impl Balance {
    fn from_value(value: &Value) -> Result<Self, MessageError> {
        let f = Fields::of(value, "balances", "a list of objects")?;
        Ok(Balance { id: f.text("id")?, coins: f.int("coins")? })
    }
}

/// One miner's share figures, as `GET /workers` and [`ServerMessage::Stats`] list them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Worker {
    /// The id its shares were sent with.
    pub id: String,
    /// Estimated hashes per second, from the work its accepted shares stand for (Σ 2^bits) over
    /// the server's hashrate window.
    pub hashrate: f64,
    /// Shares accepted, ever.
    pub shares: u64,
    /// Shares refused as stale, ever.
    pub stale: u64,
    /// Shares refused as invalid or duplicate, ever.
    pub invalid: u64,
    /// When its last share was accepted (seconds since the Unix epoch).
    pub last_share: f64,
    /// Its coins on the chain.
    pub coins: i64,
}

impl Worker {
    fn from_value(value: &Value) -> Result<Self, MessageError> {
        let f = Fields::of(value, "workers", "a list of objects")?;
        Ok(Worker {
            id: f.text("id")?,
            hashrate: f.float("hashrate")?,
            shares: f.uint("shares")?,
            stale: f.uint("stale")?,
            invalid: f.uint("invalid")?,
            last_share: f.float("last_share")?,
            coins: f.int("coins")?,
        })
    }
}

impl ServerMessage {
    /// Returns the `block` message for `block`.
    pub fn block(block: &Block, difficulty: Difficulty) -> Self {
        ServerMessage::Block { block: block.to_value(), difficulty: Some(difficulty) }
    }

    /// Returns the JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialise")
    }

    /// Parses a server message from untrusted text.
    ///
    /// # Errors
    /// When the text is not JSON, not an object, has an unknown `type`, or a field is missing or
    /// of the wrong type.
    pub fn from_json(text: &str) -> Result<Self, MessageError> {
        let mut obj = parse_object(text)?;
        match take_type(&mut obj)?.as_str() {
            "block" => {
                let block = obj.remove("block").ok_or(MessageError::Missing("block"))?;
                if !block.is_object() {
                    return Err(MessageError::wrong("block", "an object", &block));
                }
                let difficulty = match obj.get("difficulty") {
                    None | Some(Value::Null) => None,
                    Some(v) => {
                        Some(v.as_u64().and_then(|z| Difficulty::new(z).ok()).ok_or_else(|| {
                            MessageError::wrong("difficulty", "an integer 1..=64", v)
                        })?)
                    }
                };
                Ok(ServerMessage::Block { block, difficulty })
            }
            "result" => {
                let (accepted, message, reason, index) = verdict(&obj)?;
                let reason = reason.and_then(RejectReason::parse);
                Ok(ServerMessage::Result { accepted, message, reason, index })
            }
            "error" => {
                let message = match obj.get("message") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                Ok(ServerMessage::Error { message })
            }
            "stats" => Self::stats_from_object(&obj),
            "share_target" => Ok(ServerMessage::ShareTarget { bits: bits(&obj)? }),
            "share" => {
                let (accepted, message, reason, index) = verdict(&obj)?;
                let reason = reason.and_then(ShareReject::parse);
                Ok(ServerMessage::Share { accepted, message, reason, index, bits: bits(&obj)? })
            }
            other => Err(MessageError::UnknownType(truncate(other))),
        }
    }

    fn stats_from_object(obj: &Map<String, Value>) -> Result<Self, MessageError> {
        let f = Fields(obj);
        let difficulty = f.required("difficulty")?;
        let difficulty = difficulty
            .as_u64()
            .and_then(|z| Difficulty::new(z).ok())
            .ok_or_else(|| MessageError::wrong("difficulty", "an integer 1..=64", difficulty))?;
        let balances =
            f.list("balances")?.iter().map(Balance::from_value).collect::<Result<_, _>>()?;
        let recent =
            f.list("recent")?.iter().map(BlockSummary::from_value).collect::<Result<_, _>>()?;
        // Servers older than shares leave it out.
        let workers = match obj.get("workers") {
            None => Vec::new(),
            Some(_) => {
                f.list("workers")?.iter().map(Worker::from_value).collect::<Result<_, _>>()?
            }
        };
        Ok(ServerMessage::Stats {
            chain_length: f.uint("chain_length")?,
            difficulty,
            miners: f.uint("miners")?,
            blocks_per_minute: f.float("blocks_per_minute")?,
            hashrate: f.float("hashrate")?,
            balances,
            recent,
            workers,
        })
    }
}

/// A proof sent by a miner, over WebSocket or `POST /mine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProofSubmission {
    /// The proof found.
    pub proof: u64,
    /// The miner's id, trimmed of surrounding whitespace.
    pub id: String,
    /// The index of the block the proof was found for, when the miner says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

impl ProofSubmission {
    /// Checks a proof submission's fields: `proof` (non-negative integer that fits in 64 bits),
    /// `id` (a string that is a valid [`MinerId`]: printable, non-empty after trimming, at most
    /// [`MAX_ID_CHARS`] characters), and optional `index`.
    /// Other fields are ignored, as the course's server ignores them.
    ///
    /// # Errors
    /// Names the first field that is missing or wrong.
    pub fn from_value(value: &Value) -> Result<Self, MessageError> {
        let obj = value.as_object().ok_or_else(|| MessageError::NotAnObject(kind_of(value)))?;
        Self::from_object(obj)
    }

    fn from_object(obj: &Map<String, Value>) -> Result<Self, MessageError> {
        let proof = match obj.get("proof") {
            None => return Err(MessageError::Missing("proof")),
            Some(v) => v.as_u64().ok_or_else(|| {
                MessageError::wrong("proof", "a non-negative integer that fits in 64 bits", v)
            })?,
        };
        let id = match obj.get("id") {
            None => return Err(MessageError::Missing("id")),
            Some(Value::String(s)) => MinerId::parse(s)?.into_string(),
            Some(v) => return Err(MessageError::wrong("id", "a string", v)),
        };
        let index = match obj.get("index") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| MessageError::wrong("index", "a non-negative integer", v))?,
            ),
        };
        Ok(ProofSubmission { proof, id, index })
    }
}

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// A proof for the current block.
    Proof(ProofSubmission),
    /// A request for the latest block.
    LastBlock,
    /// A request for a [`ServerMessage::Stats`] (sent by the dashboard).
    Stats,
    /// Opts this connection in to shares: the server answers with a
    /// [`ServerMessage::ShareTarget`] and judges proofs below the block difficulty as shares.
    Shares,
}

impl ClientMessage {
    /// Parses a client message from untrusted text.
    ///
    /// # Errors
    /// When the text is not JSON, not an object, has a missing or unknown `type`, or a field is
    /// missing or of the wrong type.
    pub fn from_json(text: &str) -> Result<Self, MessageError> {
        let mut obj = parse_object(text)?;
        match take_type(&mut obj)?.as_str() {
            "proof" => Ok(ClientMessage::Proof(ProofSubmission::from_object(&obj)?)),
            "last_block" => Ok(ClientMessage::LastBlock),
            "stats" => Ok(ClientMessage::Stats),
            "shares" => Ok(ClientMessage::Shares),
            other => Err(MessageError::UnknownType(truncate(other))),
        }
    }

    /// Returns the JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client messages always serialise")
    }
}

/// Why a message could not be used. The `Display` text is what the peer is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The text is not JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// The JSON is not an object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The `type` field is missing or not a string.
    #[error("missing \"type\": expected a string such as \"proof\" or \"last_block\"")]
    MissingType,
    /// The `type` is not one this side knows.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A required field is missing.
    #[error("missing field {0:?}")]
    Missing(&'static str),
    /// A field has the wrong type or range.
    #[error("{field:?} must be {expected}, got {got}")]
    Wrong {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// A short rendering of what it was.
        got: String,
    },
    /// The id is empty or only whitespace.
    #[error("\"id\" must not be empty or only whitespace")]
    EmptyId,
    /// The id is longer than [`MAX_ID_CHARS`] (its length in characters).
    #[error("\"id\" is {0} characters long; at most {MAX_ID_CHARS} are allowed")]
    IdTooLong(usize),
    /// The id holds a control or invisible formatting character (its code point).
    #[error("\"id\" must be printable text, but holds the character U+{0:04X}")]
    IdUnprintable(u32),
}

impl From<IdError> for MessageError {
    fn from(e: IdError) -> Self {
        match e {
            IdError::Empty => MessageError::EmptyId,
            IdError::TooLong(n) => MessageError::IdTooLong(n),
            IdError::Unprintable(c) => MessageError::IdUnprintable(c),
        }
    }
}

impl MessageError {
    fn wrong(field: &'static str, expected: &'static str, got: &Value) -> Self {
        MessageError::Wrong { field, expected, got: truncate(&got.to_string()) }
    }
}

fn parse_object(text: &str) -> Result<Map<String, Value>, MessageError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(MessageError::NotAnObject(kind_of(&other))),
        Err(e) => Err(MessageError::NotJson(e.to_string())),
    }
}

fn take_type(obj: &mut Map<String, Value>) -> Result<String, MessageError> {
    match obj.remove("type") {
        Some(Value::String(t)) => Ok(t),
        _ => Err(MessageError::MissingType),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Shortens untrusted text quoted back in an error, on a character boundary.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests;
