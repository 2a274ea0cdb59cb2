//! Share load bench (on demand, not in CI; issue 19): accepted shares per second and server CPU
//! per share, for one SQLite pool-server and for `--frontends` frontends on one PostgreSQL,
//! beside the transport floor measured in the same run with the same client: a bare WebSocket
//! echo server (this program run as `--serve-echo`, a process of its own like the servers) that
//! answers each frame with a share-sized answer.
//!
//! The client opens `--connections` WebSocket connections (spread over the servers of a phase),
//! opts each in to shares, and sends each `--rate` distinct valid shares a second, paced, from
//! proofs mined before the phase starts (so the client does not hash while it measures). The
//! servers run with `--share-interval-ms 100`, `--share-start-bits 4` and `--share-min-bits 4`,
//! so vardiff wants ten shares a second per connection and leaves a rate below that at 4 bits,
//! and at a difficulty no share reaches. Answers are counted over `--seconds` after every
//! connection opted in; "accepted" means `"accepted":true` (for the echo: any answer).
//!
//! `scripts/bench-shares-load` builds it and starts a throwaway PostgreSQL for the cluster phase.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// The raw WebSocket client of the other benches is not used here.
#[allow(dead_code)]
mod common;

use anyhow::{Context, bail};
use clap::Parser;
use common::procs::{Cpu, Server, print_machine};
use common::{check_fd_limit, rand_u32};
use futures_util::{SinkExt, StreamExt};
use protocol::share::leading_zero_bits;
use protocol::{Block, ProofChecker, to_python_json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Accepted shares/s of one SQLite server and of a PostgreSQL cluster, beside the echo floor.
#[derive(Debug, Parser)]
struct Args {
    /// The PostgreSQL database of the cluster phase (postgres://USER@127.0.0.1:PORT/DB); without
    /// it, that phase is left out.
    #[arg(long)]
    database: Option<String>,
    /// PostgreSQL's postmaster PID, to count its CPU time and its children's.
    #[arg(long)]
    pg_pid: Option<u32>,
    /// Frontends of the cluster phase.
    #[arg(long, default_value_t = 3)]
    frontends: usize,
    /// WebSocket connections per phase.
    #[arg(long, default_value_t = 3600)]
    connections: usize,
    /// Shares each connection sends a second (below the 10 vardiff wants at 100 ms).
    #[arg(long, default_value_t = 9.0)]
    rate: f64,
    /// How long each phase is measured, after every connection opted in.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The block difficulty of the servers (no share of 4 bits reaches it in a run).
    #[arg(long, default_value_t = 8)]
    difficulty: u64,
    /// The pool-server binary (default: the release one beside this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Runs as the echo server on this address instead (used by the bench itself).
    #[arg(long, hide = true)]
    serve_echo: Option<SocketAddr>,
}

/// The share target the servers are started at, and the proofs are mined for.
const BITS: u8 = 4;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(addr) = args.serve_echo {
        return rt.block_on(serve_echo(addr));
    }
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    check_fd_limit(args.connections * 2)?;
    print_machine("start");
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .context("no target directory")?
            .join("pool-server"),
    };
    let dir = tempfile::tempdir()?;
    let extra: Vec<String> = [
        "--share-interval-ms",
        "100",
        "--share-start-bits",
        "4",
        "--share-min-bits",
        "4",
        "--max-conns-per-ip",
        "100000",
        "--proof-rate",
        "1000",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    println!(
        "{} connections × {} shares/s = {:.0} offered a second, {} s a phase, shares at {BITS} bits",
        args.connections,
        args.rate,
        args.connections as f64 * args.rate,
        args.seconds
    );

    // The floor: the echo server, a process of its own.
    let echo = Echo::start()?;
    let floor = phase(&args, "echo floor", &[echo.addr], &[echo.child.id()], None).await?;
    drop(echo);

    let sqlite =
        Server::start(&bin, "sqlite", &dir.path().join("sqlite"), &extra, args.difficulty)?;
    let one = phase(&args, "one pool-server (SQLite)", &[sqlite.addr], &[sqlite.pid()], None).await;
    stop(sqlite);
    let one = one?;

    let mut cluster = None;
    if let Some(url) = &args.database {
        let mut frontends = Vec::new();
        for k in 0..args.frontends {
            let mut extra = extra.clone();
            extra.extend(["--database".to_owned(), url.clone()]);
            let data = dir.path().join(format!("frontend-{k}"));
            frontends.push(Server::start(
                &bin,
                &format!("frontend-{k}"),
                &data,
                &extra,
                args.difficulty,
            )?);
        }
        let addrs: Vec<SocketAddr> = frontends.iter().map(|f| f.addr).collect();
        let pids: Vec<u32> = frontends.iter().map(Server::pid).collect();
        let name = format!("{} frontends (PostgreSQL)", args.frontends);
        let run = phase(&args, &name, &addrs, &pids, args.pg_pid).await;
        frontends.into_iter().for_each(stop);
        cluster = Some(run?);
    }

    println!();
    println!("accepted shares/s, of the echo floor ({:.0}/s):", floor.rate);
    println!("  one pool-server (SQLite): {:.0}/s, {:.2}", one.rate, one.rate / floor.rate);
    if let Some(c) = cluster {
        println!(
            "  {} frontends (PostgreSQL): {:.0}/s, {:.2}",
            args.frontends,
            c.rate,
            c.rate / floor.rate
        );
    }
    print_machine("end");
    Ok(())
}

fn stop(mut server: Server) {
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// What a phase measured.
struct Measured {
    rate: f64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    counting: AtomicBool,
}

async fn phase(
    args: &Args,
    name: &str,
    addrs: &[SocketAddr],
    pids: &[u32],
    pg: Option<u32>,
) -> anyhow::Result<Measured> {
    // The block every share is mined on: the first frame of a server (the echo has none).
    let block = first_block(addrs[0]).await?;
    let per_conn = (args.rate * (args.seconds as f64 + 30.0)).ceil() as usize;
    let proofs = mine(&block, args.connections * per_conn);
    let counters = Arc::new(Counters::default());
    let ready = Arc::new(tokio::sync::Barrier::new(args.connections + 1));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for (i, chunk) in proofs.chunks(per_conn).take(args.connections).enumerate() {
        let addr = addrs[i % addrs.len()];
        let (chunk, counters, ready, stop) =
            (chunk.to_vec(), counters.clone(), ready.clone(), stop.clone());
        let rate = args.rate;
        let index = block.as_ref().map_or(1, |b| b.index);
        tasks.push(tokio::spawn(async move {
            let result = connection(addr, index, chunk, rate, &counters, &ready, stop).await;
            if let Err(e) = &result
                && counters.errors.fetch_add(1, Ordering::Relaxed) < 3
            {
                eprintln!("connection {i}: {e:#}");
            }
        }));
    }
    ready.wait().await;
    // A second for the paced senders to settle, then count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_start = Cpu::of_pids(pids, pg)?;
    let start = (
        counters.sent.load(Ordering::Relaxed),
        counters.accepted.load(Ordering::Relaxed),
        counters.refused.load(Ordering::Relaxed),
    );
    counters.counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let end = (
        counters.sent.load(Ordering::Relaxed),
        counters.accepted.load(Ordering::Relaxed),
        counters.refused.load(Ordering::Relaxed),
    );
    let used = Cpu::of_pids(pids, pg)?.since(&cpu_start);
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let accepted = end.1 - start.1;
    let rate = accepted as f64 / elapsed;
    println!(
        "{name}: sent {:.0}/s, accepted {rate:.0}/s, refused {}, connection errors {}; {}",
        (end.0 - start.0) as f64 / elapsed,
        end.2 - start.2,
        counters.errors.load(Ordering::Relaxed),
        used.describe(accepted, "accepted share")
    );
    Ok(Measured { rate })
}

/// The block a server pushes first; `None` from the echo server (any proof will do).
async fn first_block(addr: SocketAddr) -> anyhow::Result<Option<Block>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
    let Some(Ok(Message::Text(first))) = ws.next().await else { bail!("no first frame") };
    let frame: serde_json::Value = serde_json::from_str(first.as_str())?;
    if frame["type"] != "block" {
        return Ok(None);
    }
    Ok(Some(serde_json::from_value(frame["block"].clone()).context("a block")?))
}

/// Mines `n` distinct proofs meeting [`BITS`] for `block`, on every core.
fn mine(block: &Option<Block>, n: usize) -> Vec<u64> {
    let Some(block) = block else { return (0..n as u64).collect() };
    let string = to_python_json(&serde_json::to_value(block).expect("a block serialises"));
    let checker = ProofChecker::new(&string);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t0 = Instant::now();
    let mut proofs: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let checker = &checker;
                s.spawn(move || {
                    let mut found = Vec::with_capacity(n / threads + 1);
                    let mut proof = t as u64;
                    while found.len() < n / threads + 1 {
                        if leading_zero_bits(&checker.digest(proof)) >= u32::from(BITS) {
                            found.push(proof);
                        }
                        proof += threads as u64;
                    }
                    found
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a miner thread")).collect()
    });
    proofs.truncate(n);
    eprintln!("mined {n} shares in {:.1} s", t0.elapsed().as_secs_f64());
    proofs
}

async fn connection(
    addr: SocketAddr,
    index: u64,
    proofs: Vec<u64>,
    rate: f64,
    counters: &Counters,
    ready: &tokio::sync::Barrier,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let connected = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
        ws.next().await.context("no first frame")??;
        ws.send(Message::text(r#"{"type":"shares"}"#)).await?;
        ws.next().await.context("no share target")??;
        anyhow::Ok(ws)
    }
    .await;
    ready.wait().await;
    let ws = connected?;
    let (mut sink, mut stream) = ws.split();
    let reader = async {
        while let Some(frame) = stream.next().await {
            let Message::Text(text) = frame? else { continue };
            let text = text.as_str();
            if !text.contains("\"share\"") && !text.contains("\"echo\"") {
                continue; // a block or a share target
            }
            if text.contains("\"accepted\":true") {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        anyhow::Ok(())
    };
    let writer = async {
        // Each connection starts at a random point of its period, so sends spread evenly.
        let period = Duration::from_secs_f64(1.0 / rate);
        let offset = period.mul_f64(f64::from(rand_u32()) / f64::from(u32::MAX));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        for proof in proofs {
            tick.tick().await;
            let frame = format!(
                r#"{{"type":"proof","proof":{proof},"id":"load{}","index":{index}}}"#,
                proof % 997
            );
            sink.send(Message::text(frame)).await?;
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        anyhow::Ok(())
    };
    tokio::select! {
        () = stop.cancelled() => Ok(()),
        r = reader => r,
        // Every proof sent: go on reading answers until the phase stops.
        r = writer => {
            r?;
            stop.cancelled().await;
            Ok(())
        }
    }
}

/// The echo server as a child process of the bench (this program with `--serve-echo`).
struct Echo {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Echo {
    fn start() -> anyhow::Result<Echo> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("--serve-echo")
            .arg(addr.to_string())
            .spawn()
            .context("starting the echo server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("the echo server does not listen");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Echo { child, addr })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answers every text frame with a frame the size of a share answer.
async fn serve_echo(addr: SocketAddr) -> anyhow::Result<()> {
    const ANSWER: &str = r#"{"type":"echo","accepted":true,"message":"share accepted (4 bits)","reason":null,"index":1,"bits":4}"#;
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else { return };
            let _ = ws.send(Message::text(r#"{"type":"hello"}"#)).await;
            while let Some(Ok(frame)) = ws.next().await {
                if let Message::Text(_) = frame
                    && ws.send(Message::text(ANSWER)).await.is_err()
                {
                    return;
                }
            }
        });
    }
}
