//! The pool's one inter-process contract, shared by `pool-server` and `ws-miner`.
//!
//! This crate does no I/O, no async and no logging: it is pure data and pure functions, so both
//! sides (and their tests) agree on exactly the same bytes.
//!
//! # Layout
//! - [`canonical`]: the block string, i.e. the exact text of Python's
//!   `json.dumps(value, sort_keys=True)` for any JSON value.
//! - [`block`]: [`Block`] and [`Transaction`], the genesis block and the block hash.
//! - [`id`]: [`MinerId`], the rules for ids and transaction parties (printable, bounded).
//! - [`pow`]: [`Difficulty`] (leading hex zeroes) and the proof check.
//! - [`share`]: shares, judged in leading zero bits (the opt-in messages live in [`message`]).
//! - [`reward`]: what a block paid, read off its reward transactions: how the pool pays (solo,
//!   or PPLNS in units shown as coins with six decimals).
//! - [`message`]: the WebSocket messages ([`ServerMessage`], [`ClientMessage`]) and their parsing
//!   of untrusted input.

pub mod block;
pub mod canonical;
pub mod id;
pub mod message;
pub mod pow;
pub mod reward;
pub mod share;

pub use block::{Block, BlockHash, Transaction};
pub use canonical::{block_string, to_python_json};
pub use id::{IdError, MinerId};
pub use message::{
    Balance, BlockSummary, ClientMessage, MessageError, ProofSubmission, RejectReason,
    ServerMessage, Worker,
};
pub use pow::{Difficulty, DifficultyError, ProofChecker, proof_digest};
pub use reward::{Rewards, Scheme};
