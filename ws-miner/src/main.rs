//! The `ws-miner` binary: parse the command line, start a small runtime, run, map the outcome
//! to an exit code. Everything else lives in the library.

use clap::Parser;
use std::process::ExitCode;
use ws_miner::cli::{Command, WatchArgs};
use ws_miner::search::bench::BenchOptions;
use ws_miner::{Cli, Exit, Reporter};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(Command::Watch(args)) = cli.command.take() {
        return watch(args);
    }
    if cli.bench {
        return bench(&cli);
    }
    let config = match std::env::current_dir()
        .map_err(|e| format!("cannot read the working directory: {e}"))
        .and_then(|cwd| cli.into_config(&cwd).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ws-miner: {e}");
            return Exit::Usage.into();
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    // The network needs little: two runtime threads; the search has its own blocking threads.
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("ws-miner: cannot start the async runtime: {e}");
                return Exit::Lost.into();
            }
        };
    let reporter = Reporter::stdout(config.format);
    let outcome = runtime.block_on(ws_miner::run(config, reporter, interrupted()));
    // The search threads are joined; do not wait for anything the runtime may still hold.
    runtime.shutdown_background();
    Exit::from(outcome).into()
}

/// Runs `--bench`: the search's attempts/s per kernel next to a course-style Python miner.
fn bench(cli: &Cli) -> ExitCode {
    let mut opts = BenchOptions::default();
    if let Some(threads) = cli.threads {
        opts.threads = threads.max(1);
    }
    if cli.kernel != "auto" {
        match cli.kernel() {
            Ok(kernel) => opts.kernels = vec![kernel],
            Err(e) => {
                eprintln!("ws-miner: {e}");
                return Exit::Usage.into();
            }
        }
    }
    match ws_miner::search::bench::run(&opts, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ws-miner: bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `ws-miner watch`: prints the pool's blocks until Ctrl-C (exit 130), or until stdout is
/// closed (`| head`: exit 0).
fn watch(args: WatchArgs) -> ExitCode {
    let options = match args.into_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("ws-miner watch: {e}");
            return Exit::Usage.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ws-miner watch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let watched = runtime.block_on(ws_miner::watcher::watch(&options, &mut out, &mut err, ctrl_c));
    match watched {
        Ok(()) => Exit::Interrupted.into(),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ws-miner watch: cannot write: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long after the first stop signal another one is taken as the same request: `timeout -s
/// INT` signals both the miner and its process group, and a terminal may too, so two signals can
/// arrive at once; a person pressing Ctrl-C again takes longer than this.
const SECOND_SIGNAL_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM (systemd, docker, `scripts/cluster`), after
/// arming the next one to exit at once (unless it comes within [`SECOND_SIGNAL_AFTER`]).
async fn interrupted() {
    let Some(mut signals) = StopSignals::new() else {
        // No signal handling on this platform: never interrupted.
        return std::future::pending::<()>().await;
    };
    signals.next().await;
    let first = tokio::time::Instant::now();
    tokio::spawn(async move {
        loop {
            signals.next().await;
            if first.elapsed() >= SECOND_SIGNAL_AFTER {
                eprintln!("ws-miner: interrupted twice, exiting now");
                std::process::exit(Exit::Interrupted as i32);
            }
        }
    });
}

/// The signals that stop the miner: SIGINT and, on Unix, SIGTERM; listened for from the start,
/// so that none that arrives while the miner starts up is lost.
struct StopSignals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Returns the listeners, or `None` where signals cannot be listened for.
    fn new() -> Option<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Some(StopSignals {
                int: signal(SignalKind::interrupt()).ok()?,
                term: signal(SignalKind::terminate()).ok()?,
            })
        }
        #[cfg(not(unix))]
        {
            Some(StopSignals {})
        }
    }

    /// Waits for the next stop signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
