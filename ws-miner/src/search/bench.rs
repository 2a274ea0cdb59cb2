//! The attempts/s measurement behind `ws-miner --bench` and `cargo run --release -p ws-miner
//! --example bench`: every available kernel on one thread and on all threads, next to a
//! course-style Python miner timed in the same run.
//!
//! It measures the real search path ([`Searcher::search`] on a hopeless target, stopped after
//! a fixed time), so thread start-up, slow steps and stop-flag checks are all in the figures.

use super::{Job, Kernel, Searcher};
use anyhow::{Context, bail};
use protocol::{Block, Difficulty, Transaction};
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The course's miner loop, timed: prints `attempts seconds`. `sys.argv[1]` is the block
/// string and `sys.argv[2]` the time to run for.
const PYTHON_MINER: &str = r#"
import hashlib, sys, time
block_string, seconds = sys.argv[1], float(sys.argv[2])
proof = 0
start = time.perf_counter()
while True:
    for _ in range(20000):
        if hashlib.sha256(f"{block_string}{proof}".encode()).hexdigest()[:6] == "000000":
            pass
        proof += 1
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
        break
print(proof, elapsed)
"#;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds per measurement.
    pub seconds: f64,
    /// Measurements per figure; the median is printed.
    pub repetitions: usize,
    /// The "all threads" thread count.
    pub threads: usize,
    /// The kernels to measure (unavailable ones are reported and skipped).
    pub kernels: Vec<Kernel>,
    /// Whether to time the course-style Python miner (needs `python3` on the PATH).
    pub python: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            seconds: 2.0,
            repetitions: 3,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernels: Kernel::ALL.to_vec(),
            python: true,
        }
    }
}

/// Returns a block string like the ones a course server sends: block 2 with a reward.
pub fn sample_block_string() -> String {
    let block = Block {
        index: 2,
        timestamp: 1_700_000_000.123_456,
        transactions: vec![Transaction::reward("0f1e2d3c4b5a69788796a5b4c3d2e1f0")],
        proof: 35_293,
        previous_hash: "9d2c5f0c6d8e4b1f3a7e2c9b0d4f6a8e1c3b5d7f9a0e2c4b6d8f1a3c5e7b9d0f"
            .to_owned(),
    };
    block.block_string()
}

/// Measures and prints attempts/s for every kernel in `opts` on one thread and on
/// `opts.threads` threads, and the ratio to the Python miner.
///
/// # Errors
/// When the Python miner cannot be run or prints something unexpected, or `out` fails.
pub fn run(opts: &BenchOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let block_string = sample_block_string();
    // No proof meets 64 hex zeroes, so every run lasts the full time.
    let difficulty = Difficulty::new(u64::from(Difficulty::MAX))?;
    let job = Job { prefix: block_string.clone().into_bytes(), difficulty };
    let digits = job.proof_ranges().first().map_or(0, |(lo, _)| lo.to_string().len());
    let reps = opts.repetitions.max(1);
    writeln!(
        out,
        "block string: {} bytes ({} mod 64), proofs of {digits} digits; median of {reps} x {:.1} s",
        block_string.len(),
        block_string.len() % 64,
        opts.seconds
    )?;
    writeln!(out, "auto chooses {}", Kernel::calibration())?;
    writeln!(
        out,
        "{:<10} {:>7} {:>14} {:>14} {:>10}",
        "kernel", "threads", "attempts/s", "per CPU-s", "vs python"
    )?;
    let python = if opts.python {
        let rate = median(
            (0..reps)
                .map(|_| python_rate(&block_string, opts.seconds))
                .collect::<Result<_, _>>()?,
        );
        writeln!(out, "{:<10} {:>7} {:>14}", "python", 1, format_rate(rate))?;
        Some(rate)
    } else {
        None
    };
    let mut thread_counts = vec![1];
    if opts.threads > 1 {
        thread_counts.push(opts.threads);
    }
    let mut best = 0f64;
    for &kernel in &opts.kernels {
        for &threads in &thread_counts {
            let Ok(searcher) = Searcher::with_kernel(kernel, threads) else {
                writeln!(out, "{:<10} {:>7} {:>14}", kernel.name(), threads, "unavailable")?;
                break;
            };
            let rates: Vec<Rate> =
                (0..reps).map(|_| search_rate(&searcher, &job, opts.seconds)).collect();
            let rate = median(rates.iter().map(|r| r.wall).collect());
            let cpu = rates.iter().map(|r| r.cpu).collect::<Option<Vec<f64>>>().map(median);
            best = best.max(rate);
            write!(out, "{:<10} {:>7} {:>14}", kernel.name(), threads, format_rate(rate))?;
            match cpu {
                Some(cpu) => write!(out, " {:>14}", format_rate(cpu))?,
                None => write!(out, " {:>14}", "-")?,
            }
            match python {
                Some(py) => writeln!(out, " {:>9.1}x", rate / py)?,
                None => writeln!(out)?,
            }
        }
    }
    if best > 0.0 {
        let six = Difficulty::DEFAULT.expected_attempts();
        writeln!(
            out,
            "six hex zeroes ({:.1} M attempts on average) take {:.0} ms at the best rate",
            six / 1e6,
            six / best * 1e3
        )?;
    }
    Ok(())
}

/// Attempts per wall-clock second and per CPU second of one measurement.
#[derive(Debug, Clone, Copy)]
struct Rate {
    wall: f64,
    /// `None` where the process's CPU time cannot be read (not Linux).
    cpu: Option<f64>,
}

/// Returns this process's user + system CPU time in seconds, from `/proc/self/stat` (Linux;
/// the clock tick is 100 Hz on every Linux this runs on).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; utime and
    // stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Returns the attempts/s of `searcher` on a hopeless `job` for `seconds`.
fn search_rate(searcher: &Searcher, job: &Job, seconds: f64) -> Rate {
    let stop = AtomicBool::new(false);
    let attempts = AtomicU64::new(0);
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_secs_f64(seconds));
            stop.store(true, Ordering::Relaxed);
        });
        // A proof at 64 hex zeroes will not turn up; if one did, the count is still right.
        searcher.search(job, 0, &stop, &attempts);
        stop.store(true, Ordering::Relaxed);
    });
    let wall = start.elapsed().as_secs_f64();
    let count = attempts.load(Ordering::Relaxed) as f64;
    let cpu = match (cpu_start, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => Some(count / (b - a)),
        _ => None,
    };
    Rate { wall: count / wall, cpu }
}

/// Returns the attempts/s of the course-style Python miner for `seconds`.
fn python_rate(block_string: &str, seconds: f64) -> anyhow::Result<f64> {
    let output = Command::new("python3")
        .args(["-c", PYTHON_MINER, block_string, &seconds.to_string()])
        .output()
        .context("running python3")?;
    if !output.status.success() {
        bail!("python3 failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(attempts)), Some(Ok(elapsed))) if elapsed > 0.0 => Ok(attempts / elapsed),
        _ => bail!("unexpected python3 output: {text:?}"),
    }
}

/// Returns the median of `values` (0 for none).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Formats attempts/s in millions.
fn format_rate(rate: f64) -> String {
    format!("{:.2} M/s", rate / 1e6)
}
