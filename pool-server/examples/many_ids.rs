//! Many-ids bench (on demand, not in CI), for issue 20: what a chain that has paid many ids
//! costs the server.
//!
//! 1. Per-block CPU: writes two chains, one whose blocks paid 10 ids and one that paid `--ids`
//!    (200,000), starts the release `pool-server` on each in turn, forges `--blocks` blocks on it
//!    over HTTP at difficulty 1, and prints the server's CPU time per forged block (user +
//!    system, every thread, from `/proc/PID/stat`) for both, and their ratio. The bench's own
//!    work per block (a `GET /last_block`, a few hashes, a `POST /mine`) is the same in both.
//! 2. With `--readers N`: on the many-ids server, N clients ask for `GET /balances` (the whole
//!    list, unpaged) and never read past the first bytes; prints the server's resident set
//!    before and at its peak over `--watch` seconds, then again once the write deadline has
//!    dropped them.
//!
//! Usage: `cargo run --release -p pool-server --example many_ids -- [--ids N] [--blocks N]
//! [--readers N]` (builds the server first: `cargo build --release -p pool-server`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use pool_server::store::Store;
use protocol::{Block, Difficulty, Transaction};
use serde_json::Value;

/// Per-block server CPU with many ids paid, and non-reading `/balances` clients.
#[derive(Debug, Parser)]
struct Args {
    /// Ids the big chain pays.
    #[arg(long, default_value_t = 200_000)]
    ids: usize,
    /// Blocks forged on each server for the CPU figure.
    #[arg(long, default_value_t = 1_000)]
    blocks: u64,
    /// Clients that ask for `GET /balances` and never read (0: skip that part).
    #[arg(long, default_value_t = 0)]
    readers: usize,
    /// Seconds the resident set is watched while they wait.
    #[arg(long, default_value_t = 5)]
    watch: u64,
    /// The server binary (default: the release pool-server beside this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Skip the 10-id chain (only the many-ids server: for the readers alone).
    #[arg(long)]
    only_many: bool,
}

/// Transactions per written block (the server's own cap on a block's pending transactions).
const PER_BLOCK: usize = 1_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .context("no target directory")?
            .join("pool-server"),
    };
    let few = if args.only_many { None } else { Some(per_block_cpu(&bin, 10, &args)?) };
    let many = per_block_cpu(&bin, args.ids, &args)?;
    if let Some(few) = few {
        println!(
            "per-block server CPU: {:.3} ms with 10 ids, {:.3} ms with {} ids: ratio {:.2}",
            few,
            many,
            args.ids,
            many / few
        );
    }
    Ok(())
}

/// Writes a chain paying `ids` ids, serves it, forges `args.blocks` blocks and returns the
/// server's CPU milliseconds per block; runs the readers' part on it when asked.
fn per_block_cpu(bin: &Path, ids: usize, args: &Args) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let started = Instant::now();
    write_chain(&data, ids)?;
    eprintln!("wrote a chain paying {ids} ids in {:.1}s", started.elapsed().as_secs_f64());
    let server = Server::start(bin, &data)?;
    let http = reqwest::blocking::Client::new();
    // Warm up: the first blocks allocate what every later one reuses.
    for _ in 0..20 {
        forge(&http, server.addr)?;
    }
    let before = cpu_ticks(server.child.id())?;
    let t0 = Instant::now();
    for _ in 0..args.blocks {
        forge(&http, server.addr)?;
    }
    let ticks = cpu_ticks(server.child.id())? - before;
    let ms = ticks as f64 * 10.0 / args.blocks as f64;
    let rss = rss_kib(server.child.id())?;
    eprintln!(
        "{ids} ids: {} blocks in {:.1}s, server CPU {ticks} ticks = {ms:.3} ms/block, RSS {} MiB",
        args.blocks,
        t0.elapsed().as_secs_f64(),
        rss / 1024
    );
    if args.readers > 0 && ids == args.ids {
        readers(&server, args)?;
    }
    Ok(ms)
}

/// Opens `args.readers` connections that ask for the whole `/balances` and stop reading.
fn readers(server: &Server, args: &Args) -> anyhow::Result<()> {
    let pid = server.child.id();
    // One whole answer read first, as any client does.
    let body: Value = reqwest::blocking::get(format!("http://{}/balances", server.addr))?.json()?;
    let listed = body["balances"].as_array().map_or(0, Vec::len);
    let baseline = rss_kib(pid)?;
    let mut open = Vec::new();
    for _ in 0..args.readers {
        let mut stream = TcpStream::connect(server.addr)?;
        stream.write_all(b"GET /balances HTTP/1.1\r\nhost: x\r\n\r\n")?;
        let mut first = [0u8; 1024];
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let n = stream.read(&mut first)?;
        if !first[..n].starts_with(b"HTTP/1.1 200") {
            bail!("unexpected answer: {:?}", String::from_utf8_lossy(&first[..n]));
        }
        open.push(stream);
    }
    let end = Instant::now() + Duration::from_secs(args.watch);
    let mut peak = rss_kib(pid)?;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        peak = peak.max(rss_kib(pid)?);
    }
    println!(
        "{} readers of /balances ({listed} ids) that never read: RSS {} KiB before, peak {} KiB \
         over {}s: growth {:.1} MiB",
        args.readers,
        baseline,
        peak,
        args.watch,
        peak.saturating_sub(baseline) as f64 / 1024.0
    );
    // The write deadline (10 s by default) drops them; their memory goes back.
    std::thread::sleep(Duration::from_secs(12));
    println!("12 s later: RSS {} KiB", rss_kib(pid)?);
    drop(open);
    Ok(())
}

/// Writes a chain whose transfers pay `ids` ids (blocks of up to [`PER_BLOCK`] transfers from
/// one `bank`, mined at difficulty 1, as the server checks them).
fn write_chain(data_dir: &Path, ids: usize) -> anyhow::Result<()> {
    let difficulty = Difficulty::new(1).expect("in range");
    let mut store = Store::open(data_dir)?;
    let mut last = store.load_blocks()?.pop().context("no genesis block")?.block;
    let mut next_id = 0;
    while next_id < ids {
        let count = PER_BLOCK.min(ids - next_id);
        let mut transactions: Vec<Transaction> = (next_id..next_id + count)
            .map(|i| Transaction {
                sender: "bank".into(),
                recipient: format!("id-{i:07}"),
                amount: (i % 1_000 + 1) as u64,
            })
            .collect();
        next_id += count;
        transactions.push(Transaction::reward("writer"));
        let string = last.block_string();
        let proof = (0..).find(|p| difficulty.is_valid_proof(&string, *p)).context("a proof")?;
        let block = Block {
            index: last.index + 1,
            timestamp: last.timestamp + 1.0,
            transactions,
            proof,
            previous_hash: last.hash().to_hex(),
        };
        store.append_block(&block, Some(difficulty))?;
        last = block;
    }
    Ok(())
}

/// Wins the current block over HTTP.
fn forge(http: &reqwest::blocking::Client, addr: SocketAddr) -> anyhow::Result<()> {
    let last: Value = http.get(format!("http://{addr}/last_block")).send()?.json()?;
    let difficulty = Difficulty::new(1).expect("in range");
    let proof = test_support::mine(&last["last_block"], difficulty, 0);
    let answer: Value = http
        .post(format!("http://{addr}/mine"))
        .json(&serde_json::json!({ "proof": proof, "id": "bench-miner" }))
        .send()?
        .json()?;
    if answer["message"] != "New Block Forged" {
        bail!("not forged: {answer}");
    }
    Ok(())
}

/// User plus system CPU time of a process, every thread included, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Ok(field(14).context("no utime")? + field(15).context("no stime")?)
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

/// A pool-server child process at difficulty 1 on `data_dir`.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(["--port", "0", "--difficulty", "1", "--max-conns-per-ip", "1000"])
            .args(["--proof-rate", "100000", "--data-dir"])
            .arg(data_dir)
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
            let line = line?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").trim_end_matches(':');
                break addr.parse().with_context(|| format!("bad address in {line:?}"))?;
            }
        };
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
