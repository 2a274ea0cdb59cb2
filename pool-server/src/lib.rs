//! The pool server: keeps the chain, pushes each new block to every miner over WebSockets, and
//! serves the course's HTTP API on the same port. It never mines.
//!
//! # Layout
//! - `config`: command line → [`Config`].
//! - `chain`: the chain rules (validate a stored chain, judge a proof, forge a block); pure.
//! - `storage`: the one interface to where the chain is kept; `store` implements it with SQLite
//!   (WAL, `synchronous=FULL`; refuses damaged ones), `pg` with PostgreSQL (several frontends,
//!   one pool: one winner per height, `LISTEN/NOTIFY` for new blocks).
//! - `lockfile`: one server per data directory (an exclusive `flock`).
//! - `ledger`: chain + store under one lock, so judge-and-append is atomic.
//! - `shares`: vardiff and each opted-in connection's share rules; `writer`: group commit of
//!   accepted shares (a batch per transaction, off the ledger's lock); `payout`: solo or PPLNS
//!   by work.
//! - `balances`: exact (`i128`) balances and the ±`MAX_COINS` rule for transfers.
//! - `state`: [`AppState`], shared by handlers and connections; the broadcast `watch`.
//! - `chain_json`: every block's JSON, serialised once, for `GET /chain` without the ledger lock.
//! - `serve`: the accept loop and its limits (header deadline, connections per address and in
//!   all).
//! - `rate`: per-address rate limits for proofs and transactions.
//! - `ws`: the `/ws` endpoint; `http`: the course's routes; `error`: JSON error responses;
//!   `envelope`: request-size limits and a JSON body for every error.
//! - `dashboard`: the live page at `/` and what it reads: `/balances`, `/balance/{id}`,
//!   `/metrics`; `scoreboard`: balances, recent blocks and block rate, kept per block;
//!   `ranking`: the balances in leaderboard order, updated per changed id, and its snapshots;
//!   `metrics`: the Prometheus counters.

pub mod balances;
pub mod chain;
pub mod chain_json;
pub mod config;
pub mod dashboard;
pub mod envelope;
pub mod error;
pub mod http;
pub mod ledger;
pub mod lockfile;
pub mod metrics;
pub mod payout;
pub mod pg;
pub mod ranking;
pub mod rate;
pub mod scoreboard;
pub mod serve;
pub mod shares;
pub mod state;
pub mod storage;
pub mod store;
pub mod tls;
pub mod writer;
pub mod ws;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use config::{Cli, Config};
pub use state::AppState;

/// The largest HTTP request body read; a bigger one gets a 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long an HTTP request may take before it gets a 503, so shutdown never hangs on one.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for WebSocket connections to close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Returns the router: the course's HTTP routes, `/ws`, and JSON 404/405 fallbacks.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/last_block", get(http::last_block))
        .route("/mine", post(http::mine))
        .route("/chain", get(http::chain))
        .route("/transactions/new", post(http::new_transaction))
        .route("/openapi.json", get(http::openapi))
        .route("/ws", get(ws::upgrade))
        .route("/", get(dashboard::index))
        .route("/dashboard.css", get(dashboard::css))
        .route("/dashboard.js", get(dashboard::js))
        .route("/balances", get(dashboard::balances))
        .route("/workers", get(http::workers))
        .route("/balance/{id}", get(dashboard::balance))
        .route("/metrics", get(dashboard::metrics))
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .layer(axum::middleware::from_fn(envelope::envelope))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Opens (or creates) the chain under `config.data_dir`, re-validates it, and serves on
/// `listener` until `shutdown` completes; then closes every WebSocket and returns.
///
/// # Errors
/// When the database cannot be opened, the stored chain is corrupt (the message names the
/// block and the problem), or serving fails.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let difficulty = config.difficulty;
    let addr = listener.local_addr().context("reading the bound address")?;
    let frontend = addr.to_string();
    let database = config.database.clone();
    let payout = config.payout;
    let ledger = tokio::task::spawn_blocking(move || match database {
        Some(url) => {
            let open = || -> anyhow::Result<_> {
                let store = pg::PgStore::open(&url.0, difficulty, payout, &frontend)?;
                ledger::Ledger::open(Box::new(store), difficulty, payout)
            };
            open().context("cannot use the chain in --database")
        }
        None => {
            let open = || -> anyhow::Result<_> {
                let store = store::Store::open(&data_dir)?;
                ledger::Ledger::open(Box::new(store), difficulty, payout)
            };
            // Whatever fails, the message names the database it was about.
            open().with_context(|| {
                format!("cannot use the chain in {}", data_dir.join(store::DB_FILE).display())
            })
        }
    })
    .await
    .context("opening the chain")??;
    let last = ledger.chain().last().index;
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let (http, ws) = if tls.is_some() { ("https", "wss") } else { ("http", "ws") };

    let writer = ledger
        .share_store()
        .and_then(|store| Ok(writer::ShareWriter::start(store)?))
        .context("starting the share writer")?;
    let token = CancellationToken::new();
    let tasks = TaskTracker::new();
    let state = AppState::new(ledger, writer, &config.limits, token.clone(), tasks.clone());
    state
        .metrics()
        .identify(addr.to_string(), if config.database.is_some() { "postgres" } else { "sqlite" });
    let storage = match &config.database {
        Some(url) => {
            // Blocks stored by the other frontends: read and broadcast as they are announced.
            let pg = pg::config(&url.0, &format!("{addr} listener"))?;
            let name = pg::describe(&pg);
            let listener_state = state.clone();
            pg::listen(pg, name.clone(), token.clone(), move || {
                listener_state
                    .catch_up_blocking()
                    .map_err(|e| {
                        let error = format!("{e:#}");
                        tracing::warn!(error, "catching up with the database failed; retrying");
                    })
                    .is_ok()
            })
            .context("starting the database listener")?;
            name
        }
        None => config.data_dir.display().to_string(),
    };
    tracing::info!(
        %difficulty,
        last_block = last,
        %storage,
        "listening on {addr}: {http}://{addr}/ (GET /last_block, POST /mine, GET /chain) and {ws}://{addr}/ws; payout: {payout}"
    );
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down");
    };
    serve::serve(
        listener,
        app(state.clone()),
        config.limits,
        tls,
        shutdown,
        token.clone(),
        tasks.clone(),
    )
    .await;
    // Closes every WebSocket and asks HTTP connections to finish their request in flight.
    token.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
        tracing::warn!("some WebSocket connections did not close in time");
    }
    // Tasks that outlived the grace may still hold the state: close the chain itself, so the
    // stop is recorded and the data directory is free once `run` returns.
    state.close().await;
    tracing::info!("stopped");
    Ok(())
}
