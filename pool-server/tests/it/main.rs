//! Integration tests of `pool-server` at its boundaries: a real server on `127.0.0.1:0` with a
//! real SQLite file, driven over WebSocket and HTTP, the real binary for restarts and corrupt
//! databases, and real `python3` course miners.

mod adversarial_memory;
mod balances;
mod browser;
mod chain_pages;
mod cluster;
mod cluster_lb;
mod compat;
mod concurrency;
mod crash;
mod dashboard;
mod datadir;
mod durability;
mod fuzz_ws;
mod hostile;
mod http;
mod limits;
mod pg;
mod schemathesis;
mod scripts;
mod shares;
mod storage;
mod support;
mod ws;
