//! The start-up choice of kernel, by measurement: which kernel is fastest depends on the CPU
//! (SHA-NI beats AVX2 on AMD Zen 3; AVX-512 beats SHA-NI by far on Intel Sapphire Rapids, whose
//! `sha256rnds2` issues only every 3 cycles), so every kernel the CPU runs and that passes its
//! self-test is timed for a few milliseconds on the calling thread and the fastest is used.
//!
//! Each kernel is timed [`ROUNDS`] times for about [`SLICE`], the kernels taking turns, and its
//! best round counts: another process taking the core can only make a round slower. Time is the
//! thread's CPU time where the platform has it (Linux), else wall-clock time.

use super::bench::sample_block_string;
use super::{Job, Kernel, Searcher};
use protocol::Difficulty;
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

/// How long one timing of one kernel lasts, about.
pub const SLICE: Duration = Duration::from_millis(3);
/// How many times each kernel is timed; the best counts.
pub const ROUNDS: usize = 3;
/// Attempts in the first, sizing run of a kernel (and the fewest in any timing).
const PROBE: u64 = 2_000;
/// The most attempts in one timing (bounds a timing when the clock misbehaves).
const MAX_ATTEMPTS: u64 = 4_000_000;

/// What the start-up measurement found.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The kernel used by default: the highest rate below.
    pub chosen: Kernel,
    /// Every kernel this CPU runs that passed its self-test, with its attempts per second on
    /// one thread (best of [`ROUNDS`]), in [`Kernel::ALL`]'s order.
    pub rates: Vec<(Kernel, f64)>,
    /// Kernels this CPU runs that failed their self-test: never measured nor chosen.
    pub failed: Vec<Kernel>,
    /// Whether the rates are per second of the thread's CPU time (else of wall-clock time).
    pub cpu_time: bool,
}

impl Calibration {
    /// Returns the SHA-NI width that measured fastest, if this CPU has SHA-NI.
    pub fn fastest_sha_ni(&self) -> Option<Kernel> {
        fastest(
            self.rates
                .iter()
                .filter(|(k, _)| matches!(k, Kernel::ShaNi2 | Kernel::ShaNi3 | Kernel::ShaNi4)),
        )
    }

    /// Returns the measured rate of `kernel`, in attempts per second.
    pub fn rate(&self, kernel: Kernel) -> Option<f64> {
        self.rates.iter().find(|(k, _)| *k == kernel).map(|(_, r)| *r)
    }
}

impl fmt::Display for Calibration {
    /// One line: the choice, then why (every kernel's rate).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (fastest measured here: M attempts per {} second on one thread, best of {ROUNDS} x {} ms:",
            self.chosen,
            if self.cpu_time { "CPU" } else { "wall-clock" },
            SLICE.as_millis()
        )?;
        for (kernel, rate) in &self.rates {
            write!(f, " {kernel} {:.1}", rate / 1e6)?;
        }
        write!(f, ")")?;
        if !self.failed.is_empty() {
            let names: Vec<_> = self.failed.iter().map(|k| k.name()).collect();
            write!(f, "; failed the self-test, not used: {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// Returns the calibration, measuring on first use (tens of milliseconds, once per process).
pub(crate) fn once() -> &'static Calibration {
    static DONE: OnceLock<Calibration> = OnceLock::new();
    DONE.get_or_init(|| measure(ROUNDS, SLICE))
}

/// Returns the kernel with the highest rate among `rates`.
fn fastest<'a>(rates: impl Iterator<Item = &'a (Kernel, f64)>) -> Option<Kernel> {
    rates.max_by(|a, b| a.1.total_cmp(&b.1)).map(|(k, _)| *k)
}

/// Self-tests every available kernel, then times those that pass: `rounds` turns of about
/// `slice` each.
pub(crate) fn measure(rounds: usize, slice: Duration) -> Calibration {
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for kernel in Kernel::available() {
        if kernel == Kernel::Portable || kernel.passes_self_test() {
            passed.push(kernel);
        } else {
            tracing::warn!(kernel = kernel.name(), "kernel failed its self-test; not used");
            failed.push(kernel);
        }
    }
    // No proof meets 64 hex zeroes: every timing tries all its attempts.
    let difficulty = Difficulty::new(u64::from(Difficulty::MAX)).expect("the maximum is valid");
    let job = Job { prefix: sample_block_string().into_bytes(), difficulty };
    let clock = Clock::new();
    // Size each kernel's timing to about `slice` from a short first run.
    let sizes: Vec<u64> = passed
        .iter()
        .map(|&k| {
            let secs = time(k, &job, PROBE, &clock).max(1e-7);
            let n = (slice.as_secs_f64() / secs * PROBE as f64) as u64;
            n.clamp(PROBE, MAX_ATTEMPTS)
        })
        .collect();
    let mut best = vec![0f64; passed.len()];
    for _ in 0..rounds.max(1) {
        for (i, &kernel) in passed.iter().enumerate() {
            let secs = time(kernel, &job, sizes[i], &clock);
            if secs > 0.0 {
                best[i] = best[i].max(sizes[i] as f64 / secs);
            }
        }
    }
    let rates: Vec<(Kernel, f64)> = passed.into_iter().zip(best).collect();
    let chosen = fastest(rates.iter()).unwrap_or(Kernel::Portable);
    Calibration { chosen, rates, failed, cpu_time: clock.cpu }
}

/// Returns the seconds `kernel` takes for `attempts` hopeless attempts of `job` on this thread.
fn time(kernel: Kernel, job: &Job, attempts: u64, clock: &Clock) -> f64 {
    let Ok(searcher) = Searcher::with_kernel(kernel, 1) else {
        return 0.0;
    };
    let (stop, counted) = (AtomicBool::new(false), AtomicU64::new(0));
    let (lo, hi) = job.proof_ranges().first().copied().unwrap_or((0, 0));
    let start = clock.now();
    let mut left = attempts;
    while left > 0 {
        let n = left.min(hi - lo + 1);
        searcher.first_in_range(job, lo, lo + n - 1, &stop, &counted);
        left -= n;
    }
    clock.now() - start
}

/// The thread's CPU-time clock where there is one, else a monotonic wall clock.
struct Clock {
    cpu: bool,
    origin: Instant,
}

impl Clock {
    fn new() -> Self {
        Clock { cpu: thread_cpu_seconds().is_some(), origin: Instant::now() }
    }

    /// Returns the time in seconds from an arbitrary origin.
    fn now(&self) -> f64 {
        if self.cpu {
            // A failed read gives a non-positive interval, which `measure` ignores.
            thread_cpu_seconds().unwrap_or(0.0)
        } else {
            self.origin.elapsed().as_secs_f64()
        }
    }
}

/// Returns the CPU time the calling thread has used, in seconds (Linux).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn thread_cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the call writes only it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// Returns the CPU time the calling thread has used: not read on this platform.
#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> Option<f64> {
    None
}
