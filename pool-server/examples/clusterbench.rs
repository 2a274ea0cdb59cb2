//! Cluster bench (on demand, not in CI; issue 11): several pool-server frontends over one
//! PostgreSQL against one SQLite server, measured side by side in one run.
//!
//! 1. **Cross-frontend push latency.** One block at a time, each proof sent over a WebSocket to
//!    frontend A (A turns round the frontends); one observer socket per frontend reads every
//!    `block` frame. Per block: from the block's `timestamp` (the server's clock when it forged
//!    it) to the "accepted" answer on A, to the frame read on A's socket (same frontend), and to
//!    the frame read on every other frontend's socket (cross-frontend, through PostgreSQL
//!    `LISTEN/NOTIFY`); p50/p99 over `--blocks` blocks, both figures from the same blocks.
//! 2. **Accepted proofs/s**, cluster (miners spread over the frontends) against one SQLite
//!    server (same miners on it), same binary and difficulty, alternated `--rounds` times, and
//!    the ratio. Miners submit valid proofs over WebSocket as fast as they can.
//! 3. **Fan-out**: `--connections` watchers spread over every frontend, against all of them on
//!    one frontend, and (what one of three machines would carry) a third of them on one
//!    frontend; p50/p99 from the block's `timestamp` to the last watcher's read (as `loadbench`
//!    measures it), blocks forged at a fixed pace on the frontends in turn; alternated `--rounds`
//!    times, and the ratios.
//!
//! It prints the CPU (model, `sha_ni`, `avx2`, `avx512f`), the load average at the start and the
//! end, and for every phase the CPU time (from `/proc/PID/stat`) of the servers, of PostgreSQL
//! (`--pg-pid`, the postmaster: it and its children) and of the bench itself, so the bench's own
//! cost shows. Every process shares this machine's cores: see the note it prints.
//!
//! It starts the release `pool-server` beside this example (`--server-bin` to choose) as
//! `--frontends` frontends on `--database` and one SQLite server on a temporary data directory,
//! all on loopback, and stops them at the end. `scripts/bench-cluster` starts a throwaway
//! PostgreSQL and wraps it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use anyhow::{Context, bail};
use clap::Parser;
use common::procs::{Cpu, Server, cpus_allowed, print_machine};
use common::{RawFrame, RawWebSocket, check_fd_limit, rand_u32};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use protocol::{ClientMessage, Difficulty, ProofSubmission, to_python_json};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Cross-frontend latency, proofs/s and fan-out of a PostgreSQL cluster against one SQLite server.
#[derive(Debug, Parser)]
struct Args {
    /// The PostgreSQL database of the frontends (postgres://USER@127.0.0.1:PORT/DB).
    #[arg(long)]
    database: String,
    /// PostgreSQL's postmaster PID, to count its CPU time and its children's.
    #[arg(long)]
    pg_pid: Option<u32>,
    /// pool-server frontends on the database.
    #[arg(long, default_value_t = 3)]
    frontends: usize,
    /// Difficulty of every server (leading hex zeroes).
    #[arg(long, default_value_t = 1)]
    difficulty: u64,
    /// Blocks timed one at a time for the push latency (after 5 not counted).
    #[arg(long, default_value_t = 200)]
    blocks: usize,
    /// Pause between two of those blocks, in milliseconds.
    #[arg(long, default_value_t = 20)]
    block_gap_ms: u64,
    /// Miners (WebSocket connections) submitting proofs as fast as they can, in the proofs/s part.
    #[arg(long, default_value_t = 6)]
    miners: usize,
    /// Seconds of each proofs/s run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// How many times each configuration runs, alternating, in the proofs/s and fan-out parts.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// WebSocket watchers in the fan-out part (in all, whatever the configuration).
    #[arg(long, default_value_t = 9_900)]
    connections: usize,
    /// Seconds of each fan-out run once every watcher is connected.
    #[arg(long, default_value_t = 15)]
    fanout_duration: u64,
    /// One block forged every this many milliseconds during a fan-out run.
    #[arg(long, default_value_t = 100)]
    fanout_interval_ms: u64,
    /// Concurrent WebSocket handshakes while connecting watchers.
    #[arg(long, default_value_t = 200)]
    connect_parallelism: usize,
    /// The server binary (default: the release pool-server beside this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// Block receipts more than this many blocks past a run's start are not recorded.
const MAX_BLOCKS_PER_RUN: usize = 200_000;
/// How long the bench waits for one answer or one push before it calls the run broken.
const WAIT_GUARD: Duration = Duration::from_secs(10);

/// Set once the bench is done, so the observers' connections may end quietly.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The bench's clock: nanoseconds since its start, and the wall-clock time block timestamps use.
#[derive(Clone, Copy)]
struct Clock {
    epoch: Instant,
    /// The wall-clock time at `epoch`, in seconds since the Unix epoch.
    epoch_wall: f64,
}

impl Clock {
    fn start() -> Self {
        Clock {
            epoch: Instant::now(),
            epoch_wall: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Converts a wall-clock time (seconds since the Unix epoch) to nanoseconds since `epoch`.
    fn since_epoch(&self, secs: f64) -> u64 {
        let nanos = (secs - self.epoch_wall) * 1e9;
        if nanos.is_finite() && nanos >= 1.0 { nanos as u64 } else { 1 }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.frontends < 2 {
        bail!("--frontends must be at least 2 (cross-frontend latency needs two)");
    }
    if args.rounds == 0 || args.miners == 0 || args.connections < args.frontends {
        bail!("--rounds and --miners must be at least 1, --connections at least --frontends");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    check_fd_limit(args.connections + args.miners + 2 * (args.frontends + 1))?;
    print_machine("start");
    let clock = Clock::start();
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()
            .context("locating this example")?
            .parent()
            .and_then(|examples| examples.parent())
            .context("no target directory")?
            .join("pool-server"),
    };
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let cap = (args.connections + args.miners + 1_000).to_string();
    let limits = [
        "--max-conns-per-ip",
        &cap,
        "--max-conns",
        &cap,
        "--proof-rate",
        "1000000",
        "--transaction-rate",
        "1000000",
    ];
    let mut frontends = Vec::new();
    for k in 1..=args.frontends {
        let mut extra = vec!["--database".to_owned(), args.database.clone()];
        extra.extend(limits.iter().map(|s| (*s).to_owned()));
        let data = dir.path().join(format!("frontend-{k}"));
        frontends.push(Server::start(
            &bin,
            &format!("frontend-{k}"),
            &data,
            &extra,
            args.difficulty,
        )?);
    }
    let extra: Vec<String> = limits.iter().map(|s| (*s).to_owned()).collect();
    let sqlite =
        Server::start(&bin, "sqlite", &dir.path().join("sqlite"), &extra, args.difficulty)?;
    println!(
        "servers: {} frontends on PostgreSQL ({}), one SQLite server ({}); difficulty {}",
        frontends.len(),
        frontends.iter().map(|s| s.addr.to_string()).collect::<Vec<_>>().join(", "),
        sqlite.addr,
        args.difficulty
    );
    println!(
        "CPUs allowed: servers {}, bench {} (online: {})",
        cpus_allowed(&frontends[0].pid().to_string()),
        cpus_allowed("self"),
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
    );

    // One observer socket and one submitting connection per server, for the whole run.
    let mut observers = Vec::new();
    let mut submitters = Vec::new();
    for server in frontends.iter().chain([&sqlite]) {
        observers.push(Observer::connect(server.addr, clock).await?);
        submitters.push(Submitter::connect(server.addr, clock).await?);
    }
    let sqlite_at = frontends.len();
    let pg = args.pg_pid;

    let outcome = async {
        let extra =
            latency(&args, clock, &observers[..sqlite_at], &mut submitters[..sqlite_at]).await?;
        throughput(&args, &frontends, &sqlite, pg).await?;
        fanout(&args, clock, &frontends, &observers[..sqlite_at], &mut submitters, pg, extra).await
    }
    .await;
    STOPPING.store(true, Ordering::Relaxed);
    print_machine("end");
    for mut server in frontends.into_iter().chain([sqlite]) {
        let _ = server.child.kill();
        let _ = server.child.wait();
    }
    outcome
}

// --- Part 1: cross-frontend push latency --------------------------------------------------------

/// One timed block: when it was forged, answered and read on each frontend's observer socket.
struct Timed {
    on: usize,
    forged: u64,
    answered: u64,
    reads: Vec<u64>,
}

/// Returns the p99 of the cross-frontend extra (read on B − read on A), in milliseconds.
async fn latency(
    args: &Args,
    clock: Clock,
    observers: &[Arc<Observer>],
    submitters: &mut [Submitter],
) -> anyhow::Result<f64> {
    const WARM_UP: usize = 5;
    let n = observers.len();
    println!(
        "\n== 1. push latency: {} blocks one at a time, proofs sent to the {n} frontends in turn, \
         one observer socket per frontend ==",
        args.blocks
    );
    let mut timed = Vec::with_capacity(args.blocks);
    for i in 0..WARM_UP + args.blocks {
        let on = i % n;
        let tip = observers[on].tip();
        let (index, answered) = submitters[on].forge(&tip).await?;
        for o in observers {
            o.wait_for(index).await?;
        }
        let forged = observers[on].forged(index).context("forged block not seen")?;
        let reads = observers.iter().map(|o| o.read_at(index).unwrap_or(0)).collect();
        if i >= WARM_UP {
            timed.push(Timed { on, forged: clock.since_epoch(forged), answered, reads });
        }
        tokio::time::sleep(Duration::from_millis(args.block_gap_ms)).await;
    }
    let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
    let answered: Vec<f64> = timed.iter().map(|t| ms(t.answered, t.forged)).collect();
    let same: Vec<f64> = timed.iter().map(|t| ms(t.reads[t.on], t.forged)).collect();
    let mut cross = Vec::new();
    let mut extra = Vec::new();
    for t in &timed {
        for (k, read) in t.reads.iter().enumerate() {
            if k != t.on {
                cross.push(ms(*read, t.forged));
                extra.push(ms(*read, t.reads[t.on]));
            }
        }
    }
    let line = |what: &str, v: Vec<f64>| {
        let (p50, p99, max) = percentiles(v);
        println!("  {what:<58} p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms");
        p99
    };
    println!("  {} blocks timed (block timestamp → ...):", timed.len());
    let _ = line("\"accepted\" answer on frontend A (the forging one)", answered);
    let _ = line("frame read on a socket of frontend A (same frontend)", same);
    let _ =
        line(&format!("frame read on a socket of frontend B ({} other frontends)", n - 1), cross);
    Ok(line("cross-frontend extra: read on B − read on A, same block", extra))
}

// --- Part 2: accepted proofs/s ------------------------------------------------------------------

/// What the miners of one run counted.
#[derive(Default)]
struct Counters {
    stop: AtomicBool,
    answered: AtomicU64,
    accepted: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
}

async fn throughput(
    args: &Args,
    frontends: &[Server],
    sqlite: &Server,
    pg: Option<u32>,
) -> anyhow::Result<()> {
    println!(
        "\n== 2. accepted proofs/s: {} miners over WebSocket, {} s per run, cluster ({} \
         frontends, miners spread over them) and one SQLite server alternately, {} rounds ==",
        args.miners,
        args.duration,
        frontends.len(),
        args.rounds
    );
    let mut totals = [(0u64, 0f64); 2];
    for round in 1..=args.rounds {
        let mut rates = [0f64; 2];
        for (c, (name, servers)) in
            [("sqlite ", std::slice::from_ref(sqlite)), ("cluster", frontends)]
                .into_iter()
                .enumerate()
        {
            let with_pg = if c == 1 { pg } else { None };
            let counters = Arc::new(Counters::default());
            let cpu_start = Cpu::read(servers, with_pg)?;
            let start = Instant::now();
            let tasks: Vec<_> = (0..args.miners)
                .map(|m| {
                    let url = format!("ws://{}/ws", servers[m % servers.len()].addr);
                    tokio::spawn(miner(url, format!("bench-{m}"), counters.clone()))
                })
                .collect();
            tokio::time::sleep(Duration::from_secs(args.duration)).await;
            let (answered, accepted, stale) = (
                counters.answered.load(Ordering::Relaxed),
                counters.accepted.load(Ordering::Relaxed),
                counters.stale.load(Ordering::Relaxed),
            );
            let elapsed = start.elapsed().as_secs_f64();
            let cpu = Cpu::read(servers, with_pg)?.since(&cpu_start);
            counters.stop.store(true, Ordering::Relaxed);
            for task in tasks {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => error(&counters.errors, &format!("miner: {e:#}")),
                    Err(e) => error(&counters.errors, &format!("miner task: {e}")),
                }
            }
            rates[c] = accepted as f64 / elapsed;
            totals[c].0 += accepted;
            totals[c].1 += elapsed;
            println!(
                "  round {round} {name}: {accepted} accepted ({:.0}/s), {answered} answered \
                 ({:.0}/s), {stale} stale, {} errors; {}",
                rates[c],
                answered as f64 / elapsed,
                counters.errors.load(Ordering::Relaxed),
                cpu.describe(accepted, "accepted proof"),
            );
            // Let the miners' connections close before the next run.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("  round {round} ratio cluster / sqlite: {:.2}", rates[1] / rates[0]);
    }
    let rate = |(n, s): (u64, f64)| n as f64 / s;
    println!(
        "  all rounds: sqlite {:.0}/s, cluster {:.0}/s, ratio cluster / sqlite {:.2}",
        rate(totals[0]),
        rate(totals[1]),
        rate(totals[1]) / rate(totals[0])
    );
    Ok(())
}

/// One miner: mines the newest block it knows, submits, and repeats until told to stop.
async fn miner(url: String, id: String, counters: Arc<Counters>) -> anyhow::Result<()> {
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.context("miner connect")?;
    let (mut sink, mut stream) = ws.split();
    let mut block: Option<(u64, Value, Difficulty)> = None;
    let mut submitted_for: Option<u64> = None;
    while !counters.stop.load(Ordering::Relaxed) {
        if let Some((index, value, difficulty)) = &block
            && submitted_for != Some(*index)
        {
            let proof = find_proof(value, *difficulty)?;
            let msg = ClientMessage::Proof(ProofSubmission {
                proof,
                id: id.clone(),
                index: Some(*index),
            });
            sink.send(Message::text(msg.to_json())).await.context("miner send")?;
            submitted_for = Some(*index);
        }
        let frame = match tokio::time::timeout(WAIT_GUARD, stream.next()).await {
            Ok(Some(frame)) => frame.context("miner read")?,
            Ok(None) => bail!("server closed the miner's connection"),
            Err(_) => bail!("miner heard nothing for {WAIT_GUARD:?}"),
        };
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(text.as_str()).context("server sent bad JSON")?;
        match value["type"].as_str() {
            Some("block") => {
                let (index, value, difficulty) = parse_block(&value)?;
                if block.as_ref().is_none_or(|(known, _, _)| index > *known) {
                    block = Some((index, value, difficulty));
                }
            }
            Some("result") => {
                counters.answered.fetch_add(1, Ordering::Relaxed);
                if value["accepted"] == true {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                } else if value["reason"] == "stale" {
                    counters.stale.fetch_add(1, Ordering::Relaxed);
                } else {
                    error(&counters.errors, &format!("miner got {text}"));
                }
            }
            _ => error(&counters.errors, &format!("miner got {text}")),
        }
    }
    Ok(())
}

// --- Part 3: fan-out ----------------------------------------------------------------------------

/// Receipt times of one block, in nanoseconds on the bench's clock (0: none yet).
#[derive(Default)]
struct BlockStat {
    /// The block's `timestamp`, read by the first watcher to receive it.
    forged: AtomicU64,
    last: AtomicU64,
    receipts: AtomicU32,
}

/// State shared by the watchers of one fan-out run.
struct FanoutRun {
    clock: Clock,
    /// Indexed by block index minus `base`.
    blocks: Vec<BlockStat>,
    base: u64,
    frames: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

impl FanoutRun {
    fn stat(&self, index: u64) -> Option<&BlockStat> {
        let i = usize::try_from(index.checked_sub(self.base)?).ok()?;
        self.blocks.get(i)
    }
}

async fn fanout(
    args: &Args,
    clock: Clock,
    frontends: &[Server],
    observers: &[Arc<Observer>],
    submitters: &mut [Submitter],
    pg: Option<u32>,
    cross_extra_p99: f64,
) -> anyhow::Result<()> {
    let n = frontends.len();
    let third = args.connections / n;
    println!(
        "\n== 3. fan-out: {} watchers over {n} frontends ({third} each), against {} on one \
         frontend, and {third} on one frontend (one machine's share), all PostgreSQL frontends; \
         one block every {} ms on the frontends in use, in turn; {} s per run, {} rounds ==",
        third * n,
        args.connections,
        args.fanout_interval_ms,
        args.fanout_duration,
        args.rounds
    );
    let configs: [(String, &[Server], usize); 3] = [
        (format!("{n} frontends × {third}"), frontends, third),
        (format!("1 frontend × {}", args.connections), &frontends[..1], args.connections),
        (format!("1 frontend × {third}"), &frontends[..1], third),
    ];
    let mut p99s = vec![Vec::new(); configs.len()];
    let mut p50s = vec![Vec::new(); configs.len()];
    for round in 1..=args.rounds {
        for (c, (name, servers, each)) in configs.iter().enumerate() {
            let base = observers[0].newest();
            let run = Arc::new(FanoutRun {
                clock,
                blocks: (0..MAX_BLOCKS_PER_RUN).map(|_| BlockStat::default()).collect(),
                base,
                frames: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                stop: AtomicBool::new(false),
            });
            let gate = Arc::new(Semaphore::new(args.connect_parallelism));
            let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(1024);
            let mut watchers = Vec::new();
            for w in 0..each * servers.len() {
                let addr = servers[w % servers.len()].addr;
                watchers.push(tokio::spawn(watcher(
                    addr,
                    run.clone(),
                    gate.clone(),
                    ready_tx.clone(),
                )));
            }
            drop(ready_tx);
            let connect_start = Instant::now();
            let mut connected = 0usize;
            while let Some(ok) = ready_rx.recv().await {
                connected += usize::from(ok);
            }
            let connect_s = connect_start.elapsed().as_secs_f64();
            let cpu_start = Cpu::read(frontends, pg)?;
            let frames_start = run.frames.load(Ordering::Relaxed);
            let first = base + 1;
            let deadline = Instant::now() + Duration::from_secs(args.fanout_duration);
            let interval = Duration::from_millis(args.fanout_interval_ms);
            let mut i = 0;
            let mut last_index = base;
            while Instant::now() < deadline {
                let next = Instant::now() + interval;
                let on = i % servers.len();
                let tip = observers[on].tip();
                last_index = submitters[on].forge(&tip).await?.0;
                for o in observers {
                    o.wait_for(last_index).await?;
                }
                i += 1;
                tokio::time::sleep_until(next.into()).await;
            }
            // Let the last broadcast land before the watchers are stopped.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let cpu = Cpu::read(frontends, pg)?.since(&cpu_start);
            let frames = run.frames.load(Ordering::Relaxed).saturating_sub(frames_start);
            run.stop.store(true, Ordering::Relaxed);
            for w in &watchers {
                w.abort();
            }
            let mut fan = Vec::new();
            let mut coalesced = 0;
            for index in first..=last_index {
                let Some(stat) = run.stat(index) else { continue };
                let forged = stat.forged.load(Ordering::Relaxed);
                if (stat.receipts.load(Ordering::Relaxed) as usize) < connected || forged == 0 {
                    coalesced += 1;
                    continue;
                }
                fan.push((stat.last.load(Ordering::Relaxed) as f64 - forged as f64) / 1e6);
            }
            let count = fan.len();
            let (p50, p99, max) = percentiles(fan);
            p50s[c].push(p50);
            p99s[c].push(p99);
            println!(
                "  round {round} {name:<22} connected {connected} in {connect_s:.1} s; {count} \
                 blocks to every watcher: p50 {p50:6.1} ms, p99 {p99:6.1} ms, max {max:6.1} ms; \
                 {coalesced} coalesced; {} errors; {}",
                run.errors.load(Ordering::Relaxed),
                cpu.describe(frames, "frame delivered")
            );
            // Let the servers drop the closed connections before the next run.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let (spread, single, share) = (median(&p99s[0]), median(&p99s[1]), median(&p99s[2]));
    println!(
        "  p99 (median over rounds): {} {spread:.1} ms, {} {single:.1} ms, {} {share:.1} ms",
        configs[0].0, configs[1].0, configs[2].0
    );
    println!(
        "  p50 (median over rounds): {} {:.1} ms, {} {:.1} ms, {} {:.1} ms",
        configs[0].0,
        median(&p50s[0]),
        configs[1].0,
        median(&p50s[1]),
        configs[2].0,
        median(&p50s[2])
    );
    println!(
        "  ratio {} / {}: p50 {:.2}, p99 {:.2}",
        configs[1].0,
        configs[0].0,
        median(&p50s[1]) / median(&p50s[0]),
        single / spread
    );
    println!(
        "  note: here the {n} frontends, PostgreSQL and the bench all run on the same CPUs ({}), \
         so \"{n} frontends × {third}\" spreads the sockets over processes, not over cores: the \
         sum is bounded by the same cores, and the ratio shows what splitting saves or costs \
         within them, not what {n} machines give. On {n} machines each frontend has its own \
         cores and delivers to its {third} watchers about as \"1 frontend × {third}\" does here \
         (p99 {share:.1} ms, an upper bound: here it shares its cores with the bench), plus, on \
         the frontends that did not forge the block, the cross-frontend extra of part 1 (p99 \
         {cross_extra_p99:.1} ms): about {:.1} ms p99 for {} watchers in all.",
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned()),
        share + cross_extra_p99,
        third * n
    );
    Ok(())
}

/// One watcher: connects, then records the receipt time of every `block` frame (see
/// `loadbench`'s watcher: a hand-made WebSocket client reading from one reused buffer).
async fn watcher(
    addr: SocketAddr,
    run: Arc<FanoutRun>,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<bool>,
) {
    let permit = gate.acquire_owned().await;
    let mut conn = match RawWebSocket::connect(addr).await {
        Ok(conn) => conn,
        Err(e) => {
            error(&run.errors, &format!("connect: {e:#}"));
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
                let now = run.clock.now();
                run.frames.fetch_add(1, Ordering::Relaxed);
                if let Some(stat) = run.stat(index) {
                    if stat.forged.load(Ordering::Relaxed) == 0
                        && let Some(forged) = block_timestamp(text)
                    {
                        stat.forged.store(run.clock.since_epoch(forged), Ordering::Relaxed);
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
    if !run.stop.load(Ordering::Relaxed) {
        error(&run.errors, &why);
    }
}

// --- Observers and submitters -------------------------------------------------------------------

/// One socket on one server that reads every `block` frame for the whole run: the chain's tip as
/// that server pushed it, and when each block arrived.
struct Observer {
    /// The newest block index read.
    newest: watch::Sender<u64>,
    /// The newest `block` frame read.
    tip: Mutex<String>,
    /// Block index → (read time on the bench's clock, the block's `timestamp`).
    reads: Mutex<HashMap<u64, (u64, f64)>>,
}

impl Observer {
    /// Connects and waits for the first frame (the server's current block).
    async fn connect(addr: SocketAddr, clock: Clock) -> anyhow::Result<Arc<Observer>> {
        let mut conn = RawWebSocket::connect(addr).await?;
        let observer = Arc::new(Observer {
            newest: watch::channel(0).0,
            tip: Mutex::new(String::new()),
            reads: Mutex::new(HashMap::new()),
        });
        let o = observer.clone();
        tokio::spawn(async move {
            loop {
                match conn.next_frame().await {
                    Ok(RawFrame::Text(text)) => {
                        let Some(index) = block_index(text) else { continue };
                        let now = clock.now();
                        let stamp = block_timestamp(text).unwrap_or(0.0);
                        lock(&o.reads).insert(index, (now, stamp));
                        if index > *o.newest.borrow() {
                            text.clone_into(&mut lock(&o.tip));
                            o.newest.send_replace(index);
                        }
                    }
                    Ok(RawFrame::Ping(range)) => {
                        if conn.pong(range).await.is_err() {
                            break;
                        }
                    }
                    Ok(RawFrame::Other) => {}
                    Ok(RawFrame::Close) | Err(_) => break,
                }
            }
            if !STOPPING.load(Ordering::Relaxed) {
                eprintln!("error: an observer's connection ended");
            }
        });
        observer.wait_for(1).await?;
        Ok(observer)
    }

    fn newest(&self) -> u64 {
        *self.newest.borrow()
    }

    fn tip(&self) -> String {
        lock(&self.tip).clone()
    }

    async fn wait_for(&self, index: u64) -> anyhow::Result<()> {
        let mut rx = self.newest.subscribe();
        match tokio::time::timeout(WAIT_GUARD, rx.wait_for(|i| *i >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => bail!("observer gone"),
            Err(_) => bail!("block {index} did not reach an observer within {WAIT_GUARD:?}"),
        }
    }

    fn read_at(&self, index: u64) -> Option<u64> {
        lock(&self.reads).get(&index).map(|(at, _)| *at)
    }

    fn forged(&self, index: u64) -> Option<f64> {
        lock(&self.reads).get(&index).map(|(_, stamp)| *stamp)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type WsSink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// A WebSocket to one server that submits one proof at a time; a task reads its frames and
/// passes on the answers (with their arrival time), dropping pushed blocks.
struct Submitter {
    sink: WsSink,
    answers: mpsc::Receiver<(u64, Value)>,
}

impl Submitter {
    async fn connect(addr: SocketAddr, clock: Clock) -> anyhow::Result<Submitter> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .context("submitter connect")?;
        let (sink, mut stream) = ws.split();
        let (tx, answers) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                if text.starts_with("{\"type\":\"block\"") {
                    continue;
                }
                let now = clock.now();
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if tx.send((now, value)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Submitter { sink, answers })
    }

    /// Mines on the block in `tip` (a `block` frame), submits and waits for the answer: the new
    /// block's index and when "accepted" arrived.
    async fn forge(&mut self, tip: &str) -> anyhow::Result<(u64, u64)> {
        let frame: Value = serde_json::from_str(tip).context("bad tip frame")?;
        let (index, block, difficulty) = parse_block(&frame)?;
        let proof = find_proof(&block, difficulty)?;
        let msg = ClientMessage::Proof(ProofSubmission {
            proof,
            id: "bench-driver".to_owned(),
            index: Some(index),
        });
        self.sink.send(Message::text(msg.to_json())).await.context("submitter send")?;
        let (at, answer) = match tokio::time::timeout(WAIT_GUARD, self.answers.recv()).await {
            Ok(Some(answer)) => answer,
            Ok(None) => bail!("the submitter's connection ended"),
            Err(_) => bail!("no answer to a proof within {WAIT_GUARD:?}"),
        };
        if answer["type"] != "result" || answer["accepted"] != true {
            bail!("proof for block {index} not accepted: {answer}");
        }
        let new = answer["index"].as_u64().context("result without index")?;
        Ok((new, at))
    }
}

/// The block, its index and the difficulty of a `block` frame.
fn parse_block(frame: &Value) -> anyhow::Result<(u64, Value, Difficulty)> {
    let index = frame["block"]["index"].as_u64().context("block without index")?;
    let difficulty = frame["difficulty"]
        .as_u64()
        .and_then(|d| Difficulty::new(d).ok())
        .context("block without difficulty")?;
    Ok((index, frame["block"].clone(), difficulty))
}

/// A valid proof for `block`, searched from a random point so miners racing on one block differ.
fn find_proof(block: &Value, difficulty: Difficulty) -> anyhow::Result<u64> {
    let s = to_python_json(block);
    (u64::from(rand_u32())..).find(|p| difficulty.is_valid_proof(&s, *p)).context("no proof")
}

/// A cheap per-call random number (no crate needed for spreading start points).
fn error(errors: &AtomicU64, what: &str) {
    if errors.fetch_add(1, Ordering::Relaxed) < 10 {
        eprintln!("error: {what}");
    }
}

/// (p50, p99, max) of `v`; NaN when empty.
fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}

// --- A minimal WebSocket client (as in loadbench) -----------------------------------------------

/// The block index in a `block` frame, found without parsing the whole frame.
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
