//! Command-line options and the validated [`Config`] the server runs with.
//!
//! Only this module and `main.rs` see clap types; everything past `main` takes a plain
//! [`Config`], so tests build one directly.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use protocol::Difficulty;

use crate::payout::{DEFAULT_PPLNS_WINDOW, MAX_PPLNS_WINDOW, Payout};
use crate::serve::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNS, DEFAULT_MAX_CONNS_PER_IP, DEFAULT_PROOF_RATE,
    DEFAULT_TLS_HANDSHAKE_RATE, DEFAULT_TRANSACTION_RATE, DEFAULT_WRITE_TIMEOUT, Limits,
};
use crate::shares::{DEFAULT_MIN_BITS, DEFAULT_SHARE_INTERVAL, DEFAULT_START_BITS, ShareSettings};
use crate::tls::TlsFiles;
use protocol::share::{MAX_SHARE_BITS, MIN_SHARE_BITS};

/// The shortest `--share-interval-ms`: ten shares a second per connection at most.
pub const MIN_SHARE_INTERVAL_MS: u64 = 100;
/// The longest `--share-interval-ms`: one share a minute.
pub const MAX_SHARE_INTERVAL_MS: u64 = 60_000;

/// The default address to listen on: loopback only, so a fresh checkout is not exposed.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The course server's port.
pub const DEFAULT_PORT: u16 = 5000;
/// The course's difficulty: six leading hex zeroes.
pub const DEFAULT_DIFFICULTY: u64 = 6;
/// The most leading zeroes `--difficulty` accepts; beyond that no miner would ever win a block.
pub const MAX_DIFFICULTY: u64 = 16;
/// Where the chain is stored unless `--data-dir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./pool-data";

/// Keeps the chain, pushes each new block to every miner over WebSockets and serves the
/// course's HTTP API (`GET /last_block`, `POST /mine`, `GET /chain`, `POST /transactions/new`).
#[derive(Debug, Parser)]
#[command(name = "pool-server", version, about)]
pub struct Cli {
    /// Address to listen on (an IP address).
    #[arg(long, default_value = DEFAULT_HOST)]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Leading hex zeroes a proof needs (1-16).
    #[arg(long, default_value_t = DEFAULT_DIFFICULTY)]
    pub difficulty: u64,
    /// Directory of the SQLite database (created if missing). Unused with --database.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Keep the chain in this PostgreSQL database instead of SQLite
    /// (postgres://USER[:PASSWORD]@HOST:PORT/DB). Every pool-server on one database is one
    /// pool; all of them must use the same --difficulty.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Open connections (HTTP and WebSocket) allowed from one IP address; one more gets a 429.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNS_PER_IP)]
    pub max_conns_per_ip: usize,
    /// Open connections (HTTP and WebSocket) allowed in all; one more gets a 503. The soft
    /// open-file limit is raised to the hard one at start, with a warning if this exceeds it.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNS)]
    pub max_conns: usize,
    /// Seconds a client has to send a request's headers before it is disconnected.
    #[arg(long, default_value_t = DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    pub header_timeout: u64,
    /// Seconds a write may wait for the client to take any of it (an answer it asked for and
    /// does not read, a WebSocket frame) before the connection is closed.
    #[arg(long, default_value_t = DEFAULT_WRITE_TIMEOUT.as_secs())]
    pub write_timeout: u64,
    /// Proofs per second one address may send (HTTP and WebSocket together; IPv6 per /64), on
    /// average; twice as many at once. More get a 429 or an `error` frame.
    #[arg(long, default_value_t = DEFAULT_PROOF_RATE)]
    pub proof_rate: u32,
    /// Transactions per second one address may send (`POST /transactions/new`), likewise.
    #[arg(long, default_value_t = DEFAULT_TRANSACTION_RATE)]
    pub transaction_rate: u32,
    /// TLS handshakes per second one address may start (IPv6 per /64), on average; twice as
    /// many at once. More connections are closed before the handshake. Only with --tls-cert.
    #[arg(long, default_value_t = DEFAULT_TLS_HANDSHAKE_RATE)]
    pub tls_handshake_rate: u32,
    /// The share rate vardiff steers each opted-in WebSocket connection toward: one share per
    /// this many milliseconds.
    #[arg(long, default_value_t = DEFAULT_SHARE_INTERVAL.as_millis() as u64, value_name = "MS")]
    pub share_interval_ms: u64,
    /// The share target a connection starts at, in leading zero bits (below the block's).
    #[arg(long, default_value_t = DEFAULT_START_BITS)]
    pub share_start_bits: u8,
    /// The easiest share target vardiff may set, in leading zero bits.
    #[arg(long, default_value_t = DEFAULT_MIN_BITS)]
    pub share_min_bits: u8,
    /// How block rewards are paid: solo (one coin to the proof's sender, the course's rule) or
    /// pplns (1,000,000 units a block, split by work over the pool's last shares whose work
    /// adds up to --pplns-window blocks' work).
    #[arg(long, value_enum, default_value = "solo")]
    pub payout: PayoutArg,
    /// N of PPLNS: the shares of the pool's last N blocks' work (N × 16^difficulty hashes) are
    /// paid, by work.
    #[arg(long, default_value_t = DEFAULT_PPLNS_WINDOW, value_name = "N")]
    pub pplns_window: u32,
    /// Serve HTTPS and WSS (instead of HTTP and WS) with this PEM certificate chain.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The server's validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Leading hex zeroes a new proof needs.
    pub difficulty: Difficulty,
    /// Directory of the SQLite database.
    pub data_dir: PathBuf,
    /// The PostgreSQL database of `--database`, instead of SQLite in `data_dir`.
    pub database: Option<DatabaseUrl>,
    /// How block rewards are paid.
    pub payout: Payout,
    /// Connection limits.
    pub limits: Limits,
    /// The certificate and key of `--tls-cert`/`--tls-key`: HTTPS and WSS; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

impl Config {
    /// Returns a config with the default connection limits.
    pub fn new(listen: SocketAddr, difficulty: Difficulty, data_dir: PathBuf) -> Self {
        Config {
            listen,
            difficulty,
            data_dir,
            database: None,
            payout: Payout::Solo,
            limits: Limits::default(),
            tls: None,
        }
    }
}

/// `--payout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PayoutArg {
    /// One coin to the proof's sender (the course's rule).
    Solo,
    /// Pay-per-last-N-shares.
    Pplns,
}

/// A PostgreSQL connection URL; its `Debug` hides it (it may hold a password).
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

/// A command line that parses but makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--difficulty` is outside 1..=16.
    #[error("--difficulty must be between 1 and {MAX_DIFFICULTY}, got {0}")]
    Difficulty(u64),
    /// `--database` is not a PostgreSQL URL.
    #[error("--database must be a PostgreSQL URL such as postgres://USER@HOST:PORT/DB")]
    Database,
    /// `--pplns-window` is out of range.
    #[error("--pplns-window must be between 1 and {MAX_PPLNS_WINDOW}, got {0}")]
    PplnsWindow(u32),
    /// `--share-interval-ms` is out of range.
    #[error(
        "--share-interval-ms must be between {MIN_SHARE_INTERVAL_MS} and {MAX_SHARE_INTERVAL_MS}, got {0}"
    )]
    ShareInterval(u64),
    /// A share target is out of range.
    #[error("{0} must be between {MIN_SHARE_BITS} and {MAX_SHARE_BITS}, got {1}")]
    ShareBits(&'static str, u8),
    /// A limit of zero would refuse every client.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl Cli {
    /// Validates the command line into a [`Config`].
    ///
    /// # Errors
    /// When `--difficulty` is outside 1..=16, or a limit is zero.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if !(1..=MAX_DIFFICULTY).contains(&self.difficulty) {
            return Err(ConfigError::Difficulty(self.difficulty));
        }
        let difficulty = Difficulty::new(self.difficulty)
            .map_err(|_| ConfigError::Difficulty(self.difficulty))?;
        if self.max_conns_per_ip == 0 {
            return Err(ConfigError::Zero("--max-conns-per-ip"));
        }
        if self.max_conns == 0 {
            return Err(ConfigError::Zero("--max-conns"));
        }
        if self.header_timeout == 0 {
            return Err(ConfigError::Zero("--header-timeout"));
        }
        if self.write_timeout == 0 {
            return Err(ConfigError::Zero("--write-timeout"));
        }
        if self.proof_rate == 0 {
            return Err(ConfigError::Zero("--proof-rate"));
        }
        if self.transaction_rate == 0 {
            return Err(ConfigError::Zero("--transaction-rate"));
        }
        if self.tls_handshake_rate == 0 {
            return Err(ConfigError::Zero("--tls-handshake-rate"));
        }
        if !(MIN_SHARE_INTERVAL_MS..=MAX_SHARE_INTERVAL_MS).contains(&self.share_interval_ms) {
            return Err(ConfigError::ShareInterval(self.share_interval_ms));
        }
        for (flag, bits) in [
            ("--share-start-bits", self.share_start_bits),
            ("--share-min-bits", self.share_min_bits),
        ] {
            if !(MIN_SHARE_BITS..=MAX_SHARE_BITS).contains(&bits) {
                return Err(ConfigError::ShareBits(flag, bits));
            }
        }
        if !(1..=MAX_PPLNS_WINDOW).contains(&self.pplns_window) {
            return Err(ConfigError::PplnsWindow(self.pplns_window));
        }
        let payout = match self.payout {
            PayoutArg::Solo => Payout::Solo,
            PayoutArg::Pplns => Payout::Pplns { window: self.pplns_window },
        };
        let database = match self.database {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(DatabaseUrl(url))
            }
            Some(_) => return Err(ConfigError::Database),
            None => None,
        };
        Ok(Config {
            listen: SocketAddr::new(self.host, self.port),
            difficulty,
            data_dir: self.data_dir,
            database,
            payout,
            limits: Limits {
                max_conns_per_ip: self.max_conns_per_ip,
                max_conns: self.max_conns,
                header_read_timeout: Duration::from_secs(self.header_timeout),
                write_timeout: Duration::from_secs(self.write_timeout),
                proof_rate: self.proof_rate,
                transaction_rate: self.transaction_rate,
                tls_handshake_rate: self.tls_handshake_rate,
                shares: ShareSettings {
                    interval: Duration::from_millis(self.share_interval_ms),
                    start_bits: self.share_start_bits,
                    min_bits: self.share_min_bits,
                },
            },
            tls: self.tls_cert.zip(self.tls_key).map(|(cert, key)| TlsFiles { cert, key }),
        })
    }
}
