//! `ws-miner`: mines on a pool-server, or on a course Flask server, until stopped.
//!
//! # Layout
//! - [`cli`]: the command line and its validation into a [`Config`].
//! - `driver` (private): the mining loop and its rules (which block, abort, the proof queue,
//!   proofs whose block is gone, verdicts, Ctrl-C, `--once`), over a `Transport`.
//! - `session` (private): the WebSocket transport (pushed work, reconnects).
//! - `http` (private): the course HTTP transport (polling `/last_block`, `POST /mine`).
//!   Neither transport imports the other; each only moves messages.
//! - `pools` (private): failover across an ordered list of pools, above both transports.
//! - [`job`]: block extraction, dialects, success detection: pure functions over JSON.
//! - [`miner`] (private): runs one search at a time on blocking threads and keeps the totals.
//! - [`output`]: every user-facing line, as [`Event`]s rendered plain, as JSON or not at all.
//! - [`backoff`]: reconnect delays. [`error`]: configuration errors and exit codes.
//! - [`limits`]: every bound on what a server can make the miner read or wait for.
//! - [`untrusted`]: server text made safe to print (the reporter sanitises every event).
//! - `net`, `http_body`, `balance` (private): opening connections, reading bounded HTTP
//!   bodies, the id's balance on the server.
//! - [`tls`]: TLS for `wss://` and `https://` (rustls; the system's roots plus `--ca`).
//! - [`search`]: the proof search (the hot loop), behind one small interface.
//! - [`watcher`]: `ws-miner watch`, which prints the blocks a pool-server pushes (no mining).
//! - `websocket` (private): opening a WebSocket, for the session and the watcher.
//! - `workers` (private): the pool's hashrate figure for the id (`GET /workers`), for the
//!   `shares` line.

pub mod backoff;
mod balance;
pub mod cli;
mod driver;
pub mod error;
mod http;
mod http_body;
pub mod job;
pub mod limits;
mod miner;
mod net;
pub mod output;
mod pools;
mod probe;
pub mod search;
mod session;
pub mod tls;
pub mod untrusted;
pub mod watcher;
mod websocket;
mod workers;

pub use cli::{Cli, Config, Endpoint};
pub use error::{ConfigError, Exit, Outcome};
pub use output::{Event, Format, Reporter, Summary};

use std::future::Future;
use tokio::sync::watch;

use crate::balance::BalanceProbe;
use crate::driver::Ctx;
use crate::miner::Miner;
use crate::search::Searcher;
use crate::workers::WorkersProbe;

/// Returns an HTTP client with the run's TLS settings (the system's roots plus `--ca`).
pub(crate) fn http_client(config: &Config) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder();
    match &config.tls {
        Some(tls) => builder.use_preconfigured_tls((**tls).clone()).build(),
        None => builder.build(),
    }
}

/// Mines as `config` says until `shutdown` resolves (or, with `--once`, until the first block
/// is decided), then stops the workers, reports the summary and returns how the run ended.
pub async fn run(
    config: Config,
    reporter: Reporter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Outcome {
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        // Nobody listening means the run is already over.
        let _ = stop_tx.send(true);
        // Keep the sender alive so that receivers do not mistake its drop for a signal.
        std::future::pending::<()>().await;
    });
    let searcher = Searcher::with_kernel(config.kernel, config.threads)
        .unwrap_or_else(|_| Searcher::new(config.threads))
        .with_nice(config.nice);
    let mut miner = Miner::new(searcher, reporter.clone());
    let shares = miner.share_queue();
    let endpoint = config.endpoint.clone();
    let balance = if config.server_balance {
        http_client(&config)
            .ok()
            .and_then(|client| BalanceProbe::new(&endpoint, &config.id, client))
    } else {
        None
    };
    // Only a WebSocket pool can set a share target; `--no-balance` asks nothing over HTTP.
    let workers = if config.server_balance && config.shares {
        http_client(&config)
            .ok()
            .and_then(|client| WorkersProbe::new(&endpoint, &config.id, client))
    } else {
        None
    };
    let mut ctx = Ctx {
        config,
        miner,
        shares,
        reporter: reporter.clone(),
        shutdown: stop_rx,
        once_block: None,
        balance,
        reached: false,
        draining: false,
        failover: None,
        workers,
        shares_shown: (0, 0, 0, 0),
        seen_block: None,
    };
    let outcome = if ctx.config.failover.is_empty() {
        // One server: its transport retries it as long as it fails; it never leaves.
        pools::leg(&mut ctx, &endpoint, &mut false).await.unwrap_or(Outcome::Lost)
    } else {
        pools::mine_pools(&mut ctx).await
    };
    ctx.miner.halt().await;
    signal.abort();
    let mut summary = ctx.miner.summary();
    if let Some(balance) = ctx.balance.as_mut()
        && ctx.reached
    {
        summary.server_coins = balance.for_summary().await;
    }
    reporter.finish();
    reporter.emit(Event::Summary(summary));
    outcome
}
