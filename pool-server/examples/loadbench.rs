//! Load bench (on demand, not in CI): N WebSocket watchers on one server, each reading every
//! broadcast, while a few miners submit valid proofs as fast as they can at a low difficulty.
//!
//! Prints proofs handled per second, blocks forged per second, the broadcast fan-out time (from the
//! block's `timestamp`, which the server stamps from its clock when it forges the block, before
//! committing and publishing it, to the moment the last watcher has read that block's frame;
//! p50/p99 over the blocks every watcher received), the server's own fan-out histogram from
//! `/metrics` for comparison, errors, the CPU time the server and the bench each spent per frame
//! delivered (from `/proc/PID/stat`, so the bench's own cost shows), which CPUs each may run on,
//! and the server's resident memory (VmRSS from `/proc/PID/status`) before connecting, after
//! connecting and over the run, so growth shows.
//!
//! By default it starts the release `pool-server` next to this example (`--server-bin` to choose,
//! `--server-arg` to pass flags) on a temporary data directory; `--addr` and `--pid` point it at a
//! server that is already running instead. Loopback only. `scripts/bench-load` wraps it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use anyhow::{Context, bail};
use clap::Parser;
use common::procs::{TICKS_PER_SECOND, cpus_allowed, stat_fields};
use common::{RawFrame, RawWebSocket, check_fd_limit, rand_u32};
use futures_util::{SinkExt, StreamExt};
use protocol::{ClientMessage, Difficulty, ProofSubmission, to_python_json};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// WebSocket fan-out and proof-rate load bench for pool-server.
#[derive(Debug, Parser)]
struct Args {
    /// WebSocket watcher connections.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Miners submitting proofs over their own WebSocket connections.
    #[arg(long, default_value_t = 4)]
    miners: usize,
    /// Seconds to mine for once every watcher is connected.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Difficulty of the server the bench starts (ignored with --addr).
    #[arg(long, default_value_t = 1)]
    difficulty: u64,
    /// A running server to bench instead of starting one.
    #[arg(long, requires = "pid")]
    addr: Option<SocketAddr>,
    /// The PID of that server (for its memory).
    #[arg(long)]
    pid: Option<u32>,
    /// The server binary to start (default: the release pool-server beside this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra flags for the started server (repeat for each).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Concurrent WebSocket handshakes while connecting.
    #[arg(long, default_value_t = 200)]
    connect_parallelism: usize,
    /// Runs the started server under `taskset -c CPUS` (pin the bench itself with taskset).
    #[arg(long)]
    server_cpus: Option<String>,
}

/// Receipt times of one block, in nanoseconds since the bench's epoch (0: none yet).
#[derive(Default)]
struct BlockStat {
    accepted: AtomicU64,
    /// The block's `timestamp` (the server's clock when it forged the block), read by the first
    /// watcher to receive it.
    forged: AtomicU64,
    first: AtomicU64,
    last: AtomicU64,
    receipts: AtomicU32,
}

/// State shared by every task.
struct Shared {
    epoch: Instant,
    /// The wall-clock time at `epoch`, in seconds since the Unix epoch, to place block timestamps.
    epoch_wall: f64,
    /// Indexed by block index minus `base`.
    blocks: Vec<BlockStat>,
    base: u64,
    errors: AtomicU64,
    proofs_answered: AtomicU64,
    accepted: AtomicU64,
    receipts_total: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Converts a wall-clock time (seconds since the Unix epoch) to nanoseconds since `epoch`.
    fn since_epoch(&self, secs: f64) -> u64 {
        let nanos = (secs - self.epoch_wall) * 1e9;
        if nanos.is_finite() && nanos >= 1.0 { nanos as u64 } else { 1 }
    }

    fn stat(&self, index: u64) -> Option<&BlockStat> {
        let i = usize::try_from(index.checked_sub(self.base)?).ok()?;
        self.blocks.get(i)
    }

    fn error(&self, what: &str) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("error: {what}");
        }
    }
}

/// The block index in a `block` frame, found without parsing the whole frame: ten thousand
/// watchers parse every broadcast on the same cores as the server.
fn block_index(frame: &str) -> Option<u64> {
    if !frame.starts_with("{\"type\":\"block\"") {
        return None;
    }
    number_after(frame, "\"index\":")?.parse().ok()
}

/// The block's `timestamp` in a `block` frame (seconds since the Unix epoch).
fn block_timestamp(frame: &str) -> Option<f64> {
    number_after(frame, "\"timestamp\":")?.parse().ok()
}

/// The JSON number that follows the first `key` in `frame`.
fn number_after<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let rest = frame[frame.find(key)? + key.len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    check_fd_limit(args.connections + args.miners)?;
    let mut server = None;
    let (addr, pid) = match (args.addr, args.pid) {
        (Some(addr), Some(pid)) => (addr, pid),
        _ => {
            let started = ServerProcess::start(&args)?;
            let at = (started.addr, started.child.id());
            server = Some(started);
            at
        }
    };
    let url = format!("ws://{addr}/ws");
    let http = format!("http://{addr}");
    let first: Value = reqwest::get(format!("{http}/last_block"))
        .await
        .context("GET /last_block")?
        .json()
        .await
        .context("reading /last_block")?;
    let base = first["last_block"]["index"].as_u64().context("no last_block.index")?;
    let difficulty = first["difficulty"].as_u64().context("no difficulty")?;
    println!(
        "server {addr} (pid {pid}), difficulty {difficulty}, chain at block {base}; \
         {} watchers, {} miners, {} s",
        args.connections, args.miners, args.duration
    );
    println!(
        "CPUs allowed: server {}, bench {} (online: {})",
        cpus_allowed(&pid.to_string()),
        cpus_allowed("self"),
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
    );

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        epoch_wall: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        blocks: (0..2_000_000).map(|_| BlockStat::default()).collect(),
        base,
        errors: AtomicU64::new(0),
        proofs_answered: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        receipts_total: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });

    let rss_before = rss_kib(pid)?;
    let connect_start = Instant::now();
    let gate = Arc::new(Semaphore::new(args.connect_parallelism));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(args.connections.max(1));
    let mut watchers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        watchers.push(tokio::spawn(watcher(addr, shared.clone(), gate.clone(), ready_tx.clone())));
    }
    drop(ready_tx);
    let mut connected = 0usize;
    while let Some(ok) = ready_rx.recv().await {
        connected += usize::from(ok);
    }
    let rss_connected = rss_kib(pid)?;
    println!(
        "connected {connected}/{} watchers in {:.1} s; server VmRSS {} → {} KiB ({:.1} KiB per connection)",
        args.connections,
        connect_start.elapsed().as_secs_f64(),
        rss_before,
        rss_connected,
        (rss_connected.saturating_sub(rss_before)) as f64 / connected.max(1) as f64
    );

    let metrics_start = fanout_histogram(&http).await?;
    let cpu_start = (cpu_ticks(&pid.to_string())?, cpu_ticks("self")?);
    let frames_start = shared.receipts_total.load(Ordering::Relaxed);
    let run_start = shared.now();
    let started = Instant::now();
    // The miners get a runtime (and thread) of their own, so ten thousand watcher tasks do not
    // delay their submissions: the proof rate measures the server, not the bench.
    let miner_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the miners' runtime")?;
    let miner_tasks: Vec<_> =
        (0..args.miners).map(|m| (url.clone(), format!("bench-{m}"), shared.clone())).collect();
    let miners = std::thread::spawn(move || {
        miner_runtime.block_on(async move {
            let tasks: Vec<_> = miner_tasks
                .into_iter()
                .map(|(url, id, shared)| tokio::spawn(miner(url, id, shared)))
                .collect();
            let mut errors = Vec::new();
            for task in tasks {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errors.push(format!("miner: {e:#}")),
                    Err(e) => errors.push(format!("miner task: {e}")),
                }
            }
            errors
        })
    });
    let mut rss_samples = vec![rss_connected];
    let deadline = started + Duration::from_secs(args.duration);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
        rss_samples.push(rss_kib(pid)?);
    }
    shared.stop.store(true, Ordering::Relaxed);
    let miner_errors = tokio::task::spawn_blocking(move || miners.join())
        .await
        .context("joining the miners")?
        .map_err(|_| anyhow::anyhow!("a miner thread panicked"))?;
    for e in miner_errors {
        shared.error(&e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let run_end = shared.now();
    // Let the last broadcast land before the watchers are stopped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_end = (cpu_ticks(&pid.to_string())?, cpu_ticks("self")?);
    let frames = shared.receipts_total.load(Ordering::Relaxed).saturating_sub(frames_start);
    let metrics_end = fanout_histogram(&http).await?;
    for w in &watchers {
        w.abort();
    }

    report(&shared, connected, elapsed, run_start, run_end, &rss_samples);
    let per_frame = |ticks: u64| ticks as f64 * 1e6 / TICKS_PER_SECOND / frames.max(1) as f64;
    println!(
        "CPU per frame delivered: server {:.1} µs, bench {:.1} µs (watchers and miners)",
        per_frame(cpu_end.0.saturating_sub(cpu_start.0)),
        per_frame(cpu_end.1.saturating_sub(cpu_start.1)),
    );
    let writes: Vec<(f64, u64)> = metrics_end
        .iter()
        .zip(&metrics_start)
        .map(|((le, end), (_, start))| (*le, end.saturating_sub(*start)))
        .collect();
    let total = writes.last().map_or(0, |(_, n)| *n);
    let within = |p: f64| {
        writes
            .iter()
            .find(|(_, n)| *n as f64 >= p * total as f64)
            .map_or("-".to_owned(), |(le, _)| format!("≤ {} ms", le * 1e3))
    };
    println!(
        "server's /metrics fan-out (publish → frame written, per connection): {total} writes, \
         p50 {}, p99 {} (histogram bucket bounds)",
        within(0.5),
        within(0.99)
    );
    if let Some(mut server) = server {
        let _ = server.child.kill();
        let _ = server.child.wait();
    }
    Ok(())
}

/// User plus system CPU time of a process, every thread included, in clock ticks.
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    Ok(stat_fields(pid)?.0)
}

/// The server's fan-out histogram: (upper bound in seconds, cumulative count), `+Inf` last.
async fn fanout_histogram(http: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .context("GET /metrics")?
        .text()
        .await
        .context("reading /metrics")?;
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("pool_broadcast_fanout_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, rest) = l.split_once("\"}")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect();
    if buckets.is_empty() {
        bail!("/metrics has no pool_broadcast_fanout_seconds histogram");
    }
    Ok(buckets)
}

fn report(
    shared: &Shared,
    connected: usize,
    elapsed: f64,
    run_start: u64,
    run_end: u64,
    rss: &[u64],
) {
    let answered = shared.proofs_answered.load(Ordering::Relaxed);
    let forged = shared.accepted.load(Ordering::Relaxed);
    // From the block's timestamp to the last receipt; and from the first receipt to the last.
    let mut fanout = Vec::new();
    let mut spread = Vec::new();
    let mut partial = 0u64;
    let mut untimed = 0u64;
    for stat in &shared.blocks {
        let accepted = stat.accepted.load(Ordering::Relaxed);
        if accepted == 0 || accepted < run_start || accepted > run_end {
            continue;
        }
        let receipts = stat.receipts.load(Ordering::Relaxed) as usize;
        if receipts < connected {
            // Skipped by some watcher: a lagging connection gets only the newest block.
            partial += 1;
            continue;
        }
        let forged = stat.forged.load(Ordering::Relaxed);
        let (first, last) = (stat.first.load(Ordering::Relaxed), stat.last.load(Ordering::Relaxed));
        if forged == 0 {
            untimed += 1;
            continue;
        }
        fanout.push(last.saturating_sub(forged));
        spread.push(last.saturating_sub(first));
    }
    fanout.sort_unstable();
    spread.sort_unstable();
    let pct = |v: &[u64], p: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i] as f64 / 1e6
    };
    let receipts = shared.receipts_total.load(Ordering::Relaxed);
    println!("proofs answered: {answered} ({:.0}/s)", answered as f64 / elapsed);
    println!("blocks forged:   {forged} ({:.0}/s)", forged as f64 / elapsed);
    println!(
        "broadcast frames received: {receipts} ({:.0}/s, {:.1} blocks per watcher)",
        receipts as f64 / elapsed,
        receipts as f64 / connected.max(1) as f64
    );
    println!(
        "fan-out to all {connected} watchers (block timestamp → last watcher's read): {} blocks, \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {partial} blocks coalesced (some watcher got a \
         newer block instead)",
        fanout.len(),
        pct(&fanout, 0.5),
        pct(&fanout, 0.99),
        pct(&fanout, 1.0)
    );
    if untimed > 0 {
        println!("{untimed} blocks left out: their frame had no readable timestamp");
    }
    println!(
        "  first watcher's read → last watcher's read: p50 {:.1} ms, p99 {:.1} ms",
        pct(&spread, 0.5),
        pct(&spread, 0.99)
    );
    let (first, last) = (rss.first().copied().unwrap_or(0), rss.last().copied().unwrap_or(0));
    let max = rss.iter().copied().max().unwrap_or(0);
    println!(
        "server VmRSS over the run: start {first} KiB, end {last} KiB, max {max} KiB ({:+.1}%)",
        (last as f64 - first as f64) * 100.0 / first.max(1) as f64
    );
    println!("errors: {}", shared.errors.load(Ordering::Relaxed));
}

/// One watcher: connects, then records the receipt time of every `block` frame.
///
/// It speaks WebSocket by hand (a handshake, then unmasked server frames read from one reused
/// buffer, pongs for pings), because ten thousand of them run on the same cores as the server:
/// every byte of every frame is still read from the socket and its header checked, but nothing
/// is allocated or copied per frame and only the index (and, once per block, the timestamp) is
/// looked at.
async fn watcher(
    addr: SocketAddr,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    ready: tokio::sync::mpsc::Sender<bool>,
) {
    let permit = gate.acquire_owned().await;
    let mut conn = match RawWebSocket::connect(addr).await {
        Ok(conn) => conn,
        Err(e) => {
            shared.error(&format!("connect: {e:#}"));
            let _ = ready.send(false).await;
            return;
        }
    };
    drop(permit);
    let _ = ready.send(true).await;
    drop(ready);
    let why = loop {
        let frame = match conn.next_frame().await {
            Ok(frame) => frame,
            Err(e) => break format!("watcher read: {e:#}"),
        };
        match frame {
            RawFrame::Text(text) => {
                let Some(index) = block_index(text) else { continue };
                let now = shared.now();
                shared.receipts_total.fetch_add(1, Ordering::Relaxed);
                if let Some(stat) = shared.stat(index) {
                    let first =
                        stat.first.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                    if first.is_ok()
                        && let Some(forged) = block_timestamp(text)
                    {
                        stat.forged.store(shared.since_epoch(forged), Ordering::Relaxed);
                    }
                    stat.last.fetch_max(now, Ordering::Relaxed);
                    stat.receipts.fetch_add(1, Ordering::Relaxed);
                }
            }
            RawFrame::Ping(range) => {
                if let Err(e) = conn.pong(range).await {
                    break format!("watcher pong: {e:#}");
                }
            }
            RawFrame::Other => {}
            RawFrame::Close => break "watcher: server closed the connection".to_owned(),
        }
    };
    if !shared.stop.load(Ordering::Relaxed) {
        shared.error(&why);
    }
}

/// One miner: mines the newest block it knows, submits, and repeats until told to stop.
async fn miner(url: String, id: String, shared: Arc<Shared>) -> anyhow::Result<()> {
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.context("miner connect")?;
    let (mut sink, mut stream) = ws.split();
    let mut block: Option<(u64, Value, Difficulty)> = None;
    let mut submitted_for: Option<u64> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some((index, value, difficulty)) = &block
            && submitted_for != Some(*index)
        {
            // Start the search at a random point so miners racing on one block differ.
            let start = u64::from(rand_u32());
            let s = to_python_json(value);
            let proof =
                (start..).find(|p| difficulty.is_valid_proof(&s, *p)).context("no proof")?;
            let msg = ClientMessage::Proof(ProofSubmission {
                proof,
                id: id.clone(),
                index: Some(*index),
            });
            sink.send(Message::text(msg.to_json())).await.context("miner send")?;
            submitted_for = Some(*index);
        }
        let frame = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(frame)) => frame.context("miner read")?,
            Ok(None) => bail!("server closed the miner's connection"),
            Err(_) => bail!("miner heard nothing for 10 s"),
        };
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(text.as_str()).context("server sent bad JSON")?;
        match value["type"].as_str() {
            Some("block") => {
                let index = value["block"]["index"].as_u64().context("block without index")?;
                let difficulty = value["difficulty"]
                    .as_u64()
                    .and_then(|d| Difficulty::new(d).ok())
                    .context("block without difficulty")?;
                if block.as_ref().is_none_or(|(known, _, _)| index > *known) {
                    block = Some((index, value["block"].clone(), difficulty));
                }
            }
            Some("result") => {
                let now = shared.now();
                shared.proofs_answered.fetch_add(1, Ordering::Relaxed);
                if value["accepted"] == true {
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    if let Some(stat) = value["index"].as_u64().and_then(|i| shared.stat(i)) {
                        stat.accepted.store(now, Ordering::Relaxed);
                    }
                }
            }
            _ => shared.error(&format!("miner got {text}")),
        }
    }
    Ok(())
}

/// A cheap per-call random number (no crate needed for spreading start points).
/// The server's resident memory in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

/// A pool-server child process on a fresh data directory.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    fn start(args: &Args) -> anyhow::Result<Self> {
        let bin = match &args.server_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()
                .context("locating this example")?
                .parent()
                .and_then(|examples| examples.parent())
                .context("no target directory")?
                .join("pool-server"),
        };
        let dir = tempfile::tempdir().context("creating a data directory")?;
        let mut command = match &args.server_cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .args(["--port", "0", "--difficulty", &args.difficulty.to_string(), "--data-dir"])
            .arg(dir.path())
            .args(&args.server_args)
            .env("RUST_LOG", "warn,pool_server=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.wait();
                bail!("{} exited before listening", bin.display());
            };
            let line = line.context("reading the server's log")?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").trim_end_matches(':');
                break addr.parse().with_context(|| format!("bad address in {line:?}"))?;
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Ok(ServerProcess { child, addr, _dir: dir })
    }
}
