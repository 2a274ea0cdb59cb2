//! The command line (clap derive) and its validation into a plain [`Config`]. No code past
//! `main` sees clap types.

use clap::Parser;
use protocol::{Difficulty, IdError, MinerId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

use crate::backoff::BackoffPolicy;
use crate::error::ConfigError;
use crate::job::Dialect;
use crate::limits::SHARES_REPORT_EVERY;
use crate::output::Format;
use crate::search::Kernel;
use crate::watcher::WatchOptions;

/// The server mined on when no URL is given.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:5000/ws";
/// The file the miner's id is read from, in the working directory.
pub const ID_FILE: &str = "my_id.txt";
/// The most server URLs one run takes (`ws-miner URL [URL...]`, an ordered list of pools); more
/// is a usage error (exit 2).
pub const MAX_POOLS: usize = 16;
/// How often the course HTTP protocol polls `GET /last_block`.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Mines proofs for a pool-server (pushed work over WebSockets) or a course Flask server
/// (HTTP polling), until stopped with Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "ws-miner", version, about, long_about = None)]
// `ws-miner watch URL` is the watcher; any other first argument is a server URL (or a flag).
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Server to mine on: ws://HOST:PORT/ws (a pool-server), or http://HOST:PORT (tries the
    /// WebSocket endpoint /ws first, else the course HTTP API: GET /last_block, POST /mine);
    /// wss:// and https:// for the same over TLS. Several (at most 16): an ordered list of
    /// pools: mine on the first that answers, move to the next when it fails, and go back to
    /// an earlier one as soon as it answers again.
    #[arg(default_value = DEFAULT_URL, num_args = 1..)]
    pub url: Vec<String>,

    /// Miner id credited with the coins [default: the contents of ./my_id.txt].
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,

    /// Worker threads for the search [default: every core].
    #[arg(long, short = 't', value_name = "N")]
    pub threads: Option<usize>,

    /// Print only the final summary.
    #[arg(long, short = 'q', conflicts_with = "json")]
    pub quiet: bool,

    /// Print one JSON event per line, for scripts.
    #[arg(long)]
    pub json: bool,

    /// Print every step of every search (start, proof found, aborted) with its timings, and
    /// the balance after each win; without it, about one line per block.
    #[arg(long, short = 'v', conflicts_with_all = ["json", "quiet"])]
    pub verbose: bool,

    /// Mine one block, then exit: 0 if this miner won it, 1 if not.
    #[arg(long)]
    pub once: bool,

    /// Leading hex zeroes a proof needs when the server does not say.
    #[arg(long, value_name = "N", default_value_t = u64::from(Difficulty::DEFAULT.zeros()))]
    pub zeros: u64,

    /// What the server hashes: json = block_string + proof (the course README), bytes =
    /// Python's repr of block_string.encode() + proof [default: json, or bytes when the
    /// server's /chain shows it].
    #[arg(long, value_enum)]
    pub dialect: Option<Dialect>,

    /// How far below the miner's own priority the search threads run, in nice steps (0-19;
    /// 0, the default: the same). 19 lets everything else on the machine go first and lets the
    /// miner's network thread read a new block while every core is busy hashing. Linux only.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub nice: u8,

    /// SHA-256 kernel: auto (the fastest of those this CPU runs, measured at start-up for a few
    /// ms and printed to stderr), avx512, sha-ni (its fastest width here), sha-ni-x2,
    /// sha-ni-x3, sha-ni-x4, avx2 or portable.
    #[arg(long, value_name = "NAME", default_value = "auto")]
    pub kernel: String,

    /// A PEM file of certificates to trust for wss:// and https:// besides the system's (a
    /// classroom server's own CA, or its self-signed certificate).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Do not ask the server for the id's balance (`GET /balance/{id}`) after a win and for
    /// the summary, nor for its hashrate figure for the id (`GET /workers`) for the shares
    /// line (the miner's own estimate from its accepted shares is shown instead).
    #[arg(long)]
    pub no_balance: bool,

    /// Do not mine shares: never ask a pool-server for a share target (`{"type":"shares"}`);
    /// only block proofs are sent, as to a server without shares.
    #[arg(long)]
    pub no_shares: bool,

    /// Measure attempts/s of every kernel this CPU has (one thread, then --threads or every
    /// core) next to a course-style Python miner, print the table and exit. Needs no server.
    #[arg(long)]
    pub bench: bool,

    /// Something else than mining.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `ws-miner` does instead of mining.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print each block a pool-server pushes, one line per block (e.g. `#42  won by alice  proof
    /// 1234567  +3.1s`), reconnecting by itself, until Ctrl-C. Mines nothing.
    Watch(WatchArgs),
}

/// The command line of `ws-miner watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The pool-server's WebSocket: ws://HOST:PORT/ws, or wss:// over TLS; http://HOST:PORT
    /// (or https://) means its /ws.
    #[arg(default_value = DEFAULT_URL)]
    pub url: String,

    /// Print each frame the server pushes as one JSON line instead.
    #[arg(long)]
    pub json: bool,

    /// A PEM file of certificates to trust for wss:// besides the system's.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl WatchArgs {
    /// Validates the watcher's command line.
    ///
    /// # Errors
    /// An unusable URL or `--ca` file.
    pub fn into_options(self) -> Result<WatchOptions, ConfigError> {
        let url = match parse_endpoint(&self.url)? {
            Endpoint::WebSocket(url) => url,
            Endpoint::Http { ws, .. } => ws,
        };
        let tls = if url.scheme() == "wss" || self.ca.is_some() {
            Some(crate::tls::client_config(self.ca.as_deref())?)
        } else {
            None
        };
        Ok(WatchOptions { url, json: self.json, tls, backoff: BackoffPolicy::default() })
    }
}

/// Where to mine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A WebSocket URL: pushed work only.
    WebSocket(Url),
    /// An HTTP base URL: try `ws` first, else the course HTTP API under `base`.
    Http {
        /// The base of the course routes (ends with `/`).
        base: Url,
        /// The WebSocket endpoint tried first.
        ws: Url,
    },
}

impl Endpoint {
    /// Returns true for `wss://` and `https://`.
    pub fn needs_tls(&self) -> bool {
        match self {
            Endpoint::WebSocket(url) => url.scheme() == "wss",
            Endpoint::Http { base, .. } => base.scheme() == "https",
        }
    }
}

/// The validated configuration of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to mine (the first, preferred pool).
    pub endpoint: Endpoint,
    /// The pools after `endpoint`, in order of preference: mined on while every earlier one
    /// fails (empty: one server, retried on its own as long as it fails).
    pub failover: Vec<Endpoint>,
    /// The id credited with the coins (trimmed).
    pub id: String,
    /// Search worker threads.
    pub threads: usize,
    /// How events are printed.
    pub format: Format,
    /// Mine one block, then stop.
    pub once: bool,
    /// The difficulty when the server does not say.
    pub zeros: Difficulty,
    /// A fixed dialect, or `None` to detect it.
    pub dialect: Option<Dialect>,
    /// The SHA-256 kernel the search runs.
    pub kernel: Kernel,
    /// Nice steps the search threads run below the network thread (`--nice`).
    pub nice: u8,
    /// Reconnect delays.
    pub backoff: BackoffPolicy,
    /// How often HTTP mode polls `GET /last_block`.
    pub poll_interval: Duration,
    /// Ask the server for the id's balance after a win and for the summary (`--no-balance`
    /// turns it off).
    pub server_balance: bool,
    /// TLS settings for wss:// and https:// (the system's roots plus `--ca`); `None` when the
    /// endpoint needs no TLS and no `--ca` was given.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Ask a pool-server (over WebSocket) for a share target and mine shares (`--no-shares`
    /// turns it off).
    pub shares: bool,
    /// How often the `shares` line is printed while shares are mined
    /// ([`crate::limits::SHARES_REPORT_EVERY`]; tests shorten it).
    pub shares_report: Duration,
}

impl Config {
    /// Returns a configuration with the defaults for `endpoint` and `id` (as tests want it:
    /// two threads, no printing rules beyond plain lines).
    pub fn new(endpoint: Endpoint, id: &str) -> Self {
        Config {
            endpoint,
            failover: Vec::new(),
            id: id.trim().to_owned(),
            threads: 2,
            format: Format::Plain,
            once: false,
            zeros: Difficulty::DEFAULT,
            dialect: None,
            kernel: Kernel::detect(),
            nice: 0,
            backoff: BackoffPolicy::default(),
            poll_interval: POLL_INTERVAL,
            server_balance: true,
            tls: None,
            shares: true,
            shares_report: SHARES_REPORT_EVERY,
        }
        .with_default_tls()
    }

    /// Gives endpoints that need TLS the system's roots, if there are no TLS settings yet.
    pub fn with_default_tls(mut self) -> Self {
        if self.tls.is_none() && self.endpoints().any(Endpoint::needs_tls) {
            self.tls = crate::tls::client_config(None).ok();
        }
        self
    }

    /// Returns every pool, the preferred first.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        std::iter::once(&self.endpoint).chain(&self.failover)
    }
}

impl Cli {
    /// Validates the command line into a [`Config`]; `cwd` is where `my_id.txt` is looked for.
    ///
    /// # Errors
    /// No id (neither `--id` nor `my_id.txt`), an unusable id, URL, zero count or thread count.
    pub fn into_config(self, cwd: &Path) -> Result<Config, ConfigError> {
        let kernel = self.kernel()?;
        if self.kernel == "auto" && !self.quiet {
            eprintln!("ws-miner: kernel {}", Kernel::calibration());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let path = cwd.join(ID_FILE);
                match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(ConfigError::NoId);
                    }
                    Err(e) => return Err(ConfigError::IdFile { path, source: e }),
                }
            }
        };
        // The protocol's rules, as the server applies them: trimmed, bounded, printable.
        let id = MinerId::parse(&id).map_err(|e| match e {
            IdError::Empty => ConfigError::EmptyId,
            other => ConfigError::BadId(other),
        })?;
        let id = id.as_str();
        if self.url.len() > MAX_POOLS {
            return Err(ConfigError::Url {
                url: self.url.join(" "),
                why: format!("{} URLs; at most {MAX_POOLS}", self.url.len()),
            });
        }
        let mut endpoints = Vec::with_capacity(self.url.len());
        for url in &self.url {
            endpoints.push(parse_endpoint(url)?);
        }
        let tls = if endpoints.iter().any(Endpoint::needs_tls) || self.ca.is_some() {
            Some(crate::tls::client_config(self.ca.as_deref())?)
        } else {
            None
        };
        let zeros = Difficulty::new(self.zeros).map_err(ConfigError::Zeros)?;
        let threads = match self.threads {
            Some(0) => return Err(ConfigError::Threads),
            Some(n) => n,
            None => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        };
        let format = if self.quiet {
            Format::Quiet
        } else if self.json {
            Format::Json
        } else if self.verbose {
            Format::Verbose
        } else {
            Format::Plain
        };
        let mut endpoints = endpoints.into_iter();
        let endpoint = endpoints.next().ok_or_else(|| ConfigError::Url {
            url: String::new(),
            why: "no server URL".to_owned(),
        })?;
        Ok(Config {
            endpoint,
            failover: endpoints.collect(),
            id: id.to_owned(),
            threads,
            format,
            once: self.once,
            zeros,
            dialect: self.dialect,
            kernel,
            nice: self.nice,
            backoff: BackoffPolicy::default(),
            poll_interval: POLL_INTERVAL,
            server_balance: !self.no_balance,
            tls,
            shares: !self.no_shares,
            shares_report: SHARES_REPORT_EVERY,
        })
    }
}

impl Cli {
    /// Returns the kernel `--kernel` names: `auto` is the one that measures fastest here.
    ///
    /// # Errors
    /// An unknown name, or a kernel this CPU cannot run.
    pub fn kernel(&self) -> Result<Kernel, ConfigError> {
        if self.kernel == "auto" {
            return Ok(Kernel::detect());
        }
        let kernel = Kernel::from_name(&self.kernel)
            .ok_or_else(|| ConfigError::Kernel(self.kernel.clone()))?;
        if !kernel.is_available() {
            return Err(ConfigError::KernelUnavailable(kernel));
        }
        Ok(kernel)
    }
}

/// Parses the server URL: `ws://…` and `wss://…` as is; `http://…`, `https://…` (or a bare
/// `host:port`) as a course base with the WebSocket endpoint `/ws` (`ws://` or `wss://`) on the
/// same host tried first.
///
/// # Errors
/// An unparsable URL, an unsupported scheme, or no host.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, ConfigError> {
    let bad = |why: &str| ConfigError::Url { url: text.to_owned(), why: why.to_owned() };
    let url = if text.contains("://") {
        Url::parse(text).map_err(|e| bad(&e.to_string()))?
    } else {
        // `127.0.0.1:5000` or `localhost:5000`: a course server's address, as its README gives it.
        Url::parse(&format!("http://{text}")).map_err(|e| bad(&e.to_string()))?
    };
    if !url.has_host() {
        return Err(bad("no host"));
    }
    match url.scheme() {
        "ws" | "wss" => Ok(Endpoint::WebSocket(url)),
        "http" | "https" => {
            let mut base = url.clone();
            if !base.path().ends_with('/') {
                let path = format!("{}/", base.path());
                base.set_path(&path);
            }
            base.set_query(None);
            let mut ws = base.clone();
            let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
            ws.set_scheme(scheme).map_err(|()| bad("cannot make a ws:// URL of it"))?;
            ws.set_path("/ws");
            Ok(Endpoint::Http { base, ws })
        }
        other => Err(bad(&format!(
            "unsupported scheme {other:?}; use ws://, wss://, http:// or https://"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Result<(&str, &str), &str>) {
        let got = match parse_endpoint(input) {
            Ok(Endpoint::WebSocket(url)) => Ok((url.to_string(), String::new())),
            Ok(Endpoint::Http { base, ws }) => Ok((base.to_string(), ws.to_string())),
            Err(e) => Err(e.to_string()),
        };
        match (got, expected) {
            (Ok((a, b)), Ok((x, y))) => assert_eq!((a.as_str(), b.as_str()), (x, y), "{input}"),
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{input}: {e}"),
            (got, expected) => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn endpoints() {
        check("ws://127.0.0.1:5000/ws", Ok(("ws://127.0.0.1:5000/ws", "")));
        check("http://127.0.0.1:5000", Ok(("http://127.0.0.1:5000/", "ws://127.0.0.1:5000/ws")));
        check("http://h:81/pool", Ok(("http://h:81/pool/", "ws://h:81/ws")));
        check("127.0.0.1:5000", Ok(("http://127.0.0.1:5000/", "ws://127.0.0.1:5000/ws")));
        check("localhost:5000", Ok(("http://localhost:5000/", "ws://localhost:5000/ws")));
        check("wss://x/ws", Ok(("wss://x/ws", "")));
        check("https://x:8443", Ok(("https://x:8443/", "wss://x:8443/ws")));
        check("ftp://x", Err("unsupported scheme"));
        check("http://", Err("bad server URL"));
    }

    #[test]
    fn id_comes_from_the_flag_or_the_file() {
        let dir = std::env::temp_dir().join(format!("ws-miner-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cli = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("ws-miner").chain(args.iter().copied()))
                .expect("parses")
        };
        assert!(matches!(cli(&[]).into_config(&dir), Err(ConfigError::NoId)));
        std::fs::write(dir.join(ID_FILE), "\t eve \n").expect("write");
        assert_eq!(cli(&[]).into_config(&dir).map(|c| c.id).ok().as_deref(), Some("eve"));
        let c = cli(&["--id", " zed ", "--threads", "3", "--json", "--zeros", "4"])
            .into_config(&dir)
            .expect("valid");
        assert_eq!(
            (c.id.as_str(), c.threads, c.format, c.zeros.zeros(), c.shares),
            ("zed", 3, Format::Json, 4, true)
        );
        let no_shares = cli(&["--no-shares"]).into_config(&dir).expect("valid");
        assert!(!no_shares.shares && no_shares.server_balance);
        let long = "x".repeat(protocol::message::MAX_ID_CHARS + 1);
        assert!(matches!(cli(&["--id", &long]).into_config(&dir), Err(ConfigError::BadId(_))));
        let escape = cli(&["--id", "a\u{1b}[2J"]).into_config(&dir);
        assert!(matches!(escape, Err(ConfigError::BadId(IdError::Unprintable(0x1b)))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn watch_is_a_subcommand_and_urls_stay_urls() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("ws-miner").chain(args.iter().copied()))
        };
        let watch = |args: &[&str]| match parse(args).map(|c| c.command) {
            Ok(Some(Command::Watch(w))) => w.into_options().map(|o| (o.url.to_string(), o.json)),
            other => panic!("{args:?}: {other:?}"),
        };
        assert_eq!(watch(&["watch"]).ok(), Some((DEFAULT_URL.to_owned(), false)));
        assert_eq!(
            watch(&["watch", "--json", "http://h:81"]).ok(),
            Some(("ws://h:81/ws".to_owned(), true))
        );
        assert!(watch(&["watch", "ftp://h"]).is_err());
        let mine = parse(&["ws://a:1/ws", "http://b:2"]).expect("parses");
        assert!(mine.command.is_none());
        assert_eq!(mine.url, ["ws://a:1/ws", "http://b:2"]);
        // The watcher is the first argument or nothing: after a mining flag, `watch` is a URL.
        assert!(parse(&["--id", "x", "watch"]).is_ok_and(|c| c.command.is_none()));
    }

    #[test]
    fn several_urls_are_pools_in_order() {
        let dir = std::env::temp_dir().join(format!("ws-miner-pools-{}", std::process::id()));
        let cli = |args: &[&str]| {
            Cli::try_parse_from(["ws-miner", "--id", "p"].into_iter().chain(args.iter().copied()))
                .expect("parses")
        };
        let c = cli(&["ws://a:1/ws", "http://b:2"]).into_config(&dir).expect("valid");
        assert_eq!(c.endpoint, parse_endpoint("ws://a:1/ws").expect("valid"));
        assert_eq!(c.failover, vec![parse_endpoint("http://b:2").expect("valid")]);
        let one = cli(&[]).into_config(&dir).expect("valid");
        assert_eq!(
            (one.endpoint, one.failover),
            (parse_endpoint(DEFAULT_URL).expect("ok"), vec![])
        );
        let many: Vec<String> = (0..=MAX_POOLS).map(|i| format!("ws://h{i}:1/ws")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(cli(&many).into_config(&dir), Err(ConfigError::Url { .. })));
        assert!(cli(&many[1..]).into_config(&dir).is_ok());
    }
}
