//! Integration tests of `ws-miner`: the library against misbehaving WebSocket servers and
//! course-style Flask servers, the binary's CLI (exit codes, Ctrl-C), end-to-end runs, and the
//! watcher (`ws-miner watch`, `scripts/watch`).

mod cli;
mod course;
mod e2e;
mod failover;
mod hardening;
mod shares;
mod support;
mod tls;
mod watch;
mod ws;
