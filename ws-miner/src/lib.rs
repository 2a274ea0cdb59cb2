//! `ws-miner`: mines on a pool-server, or on a course Flask server, until stopped.
//!
//! # Layout
//! - [`search`]: the proof search (the hot loop), behind one small interface.

pub mod search;
