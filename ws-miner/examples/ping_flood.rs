//! Ping-flood bench (on demand, not in CI), for issue 20: a local pool on 127.0.0.1:0 that
//! answers the WebSocket handshake, then sends ping frames (125-byte payloads) as fast as it can
//! in batches and never reads. Runs `ws-miner` against it for `--seconds` and prints the miner's
//! resident set every 10 s, its peak, and how many times it connected.
//!
//! Usage: `cargo build -p ws-miner --example ping_flood && target/debug/examples/ping_flood
//! [--miner PATH] [--seconds 60]` (default miner: the `ws-miner` beside this example).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::io::AsyncWriteExt;

/// A pool that pings and never reads, against ws-miner.
#[derive(Debug, Parser)]
struct Args {
    /// The miner binary.
    #[arg(long)]
    miner: Option<PathBuf>,
    /// How long to run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Ping frames per batch (one batch every 5 ms, as fast as the socket takes them).
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let miner = match args.miner {
        Some(miner) => miner,
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .context("no target directory")?
            .join("ws-miner"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let connections = Arc::new(AtomicU64::new(0));
    let pings = Arc::new(AtomicU64::new(0));
    let batch = {
        let mut ping = vec![0x89, 125];
        ping.extend_from_slice(&[b'p'; 125]);
        ping.repeat(args.batch)
    };
    let (conns, sent) = (connections.clone(), pings.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (batch, sent) = (batch.clone(), sent.clone());
            conns.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let tcp = ws.get_mut();
                while tcp.write_all(&batch).await.is_ok() {
                    sent.fetch_add((batch.len() / 127) as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
    });
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(&miner)
        .args(["--id", "alice", "--threads", "1", "--no-balance", "--no-shares"])
        .arg(format!("ws://{addr}/ws"))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", miner.display()))?;
    let pid = child.id();
    let start = Instant::now();
    let mut peak = 0;
    let mut next_report = Duration::from_secs(10);
    while start.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rss = rss_kib(pid)?;
        peak = peak.max(rss);
        if start.elapsed() >= next_report {
            println!(
                "{:>3}s: miner RSS {rss} KiB (peak {peak} KiB), {} connections, {} pings sent",
                next_report.as_secs(),
                connections.load(Ordering::Relaxed),
                pings.load(Ordering::Relaxed)
            );
            next_report += Duration::from_secs(10);
        }
    }
    println!(
        "after {}s: miner RSS {} KiB, peak {peak} KiB; {} connections",
        args.seconds,
        rss_kib(pid)?,
        connections.load(Ordering::Relaxed)
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// A process's resident memory in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}
