//! `GET /metrics`: the pool's counters in the Prometheus text exposition format (version 0.0.4).
//!
//! Hand-written: a handful of counters and gauges and one histogram do not need a metrics
//! registry. Everything is an atomic bumped where the event happens ([`Metrics`]), read without
//! locks when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::share::ShareReject;
use protocol::{RejectReason, Worker};

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the fan-out histogram's buckets: from 50 µs to 5 s, finer between
/// 100 ms and 500 ms, where reaching 10,000 connections lands on two cores.
pub const FANOUT_BUCKETS: [f64; 19] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2,
    0.25, 0.3, 0.4, 0.5, 1.0, 5.0,
];

/// Counters bumped as things happen.
#[derive(Debug, Default)]
pub struct Metrics {
    proofs_accepted: AtomicU64,
    proofs_stale: AtomicU64,
    proofs_invalid: AtomicU64,
    blocks_forged: AtomicU64,
    shares_accepted: AtomicU64,
    shares_stale: AtomicU64,
    shares_invalid: AtomicU64,
    shares_duplicate: AtomicU64,
    fanout: Histogram,
    /// `(frontend, storage)`: this server's address and `sqlite` or `postgres`.
    identity: std::sync::OnceLock<(String, &'static str)>,
}

impl Metrics {
    /// Names this server in `pool_frontend_info`: its address, and where the chain is kept
    /// (`sqlite`, or `postgres` for a frontend of a pool that several may serve).
    pub fn identify(&self, frontend: String, storage: &'static str) {
        let _ = self.identity.set((frontend, storage));
    }

    /// Counts a proof that won a block (and so a forged block).
    pub fn accepted(&self) {
        self.proofs_accepted.fetch_add(1, Ordering::Relaxed);
        self.blocks_forged.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a proof that lost.
    pub fn rejected(&self, reason: RejectReason) {
        match reason {
            RejectReason::Stale => &self.proofs_stale,
            _ => &self.proofs_invalid,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a proof judged as a share.
    pub fn share(&self, accepted: bool, reason: Option<ShareReject>) {
        let counter = match (accepted, reason) {
            (true, _) => &self.shares_accepted,
            (false, Some(ShareReject::Stale)) => &self.shares_stale,
            (false, Some(ShareReject::Duplicate)) => &self.shares_duplicate,
            (false, _) => &self.shares_invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long after its publication a new block was handed to one connection.
    pub fn fanout(&self, elapsed: Duration) {
        self.fanout.observe(elapsed);
    }

    /// Renders every metric; the gauges are read by the caller at scrape time.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        if let Some((frontend, storage)) = self.identity.get() {
            metric(
                &mut out,
                "pool_frontend_info",
                "gauge",
                "This server: its address, and where the chain is kept (postgres: one of the \
                 frontends of a pool; pool_chain_length is then the pool's, the other series \
                 this frontend's).",
            );
            let _ = writeln!(
                out,
                "pool_frontend_info{{frontend=\"{frontend}\",storage=\"{storage}\"}} 1"
            );
        }
        metric(
            &mut out,
            "pool_blocks_total",
            "counter",
            "Blocks forged by proofs this server judged, since it started.",
        );
        let _ = writeln!(out, "pool_blocks_total {}", load(&self.blocks_forged));
        metric(&mut out, "pool_chain_length", "gauge", "Blocks in the chain, genesis included.");
        let _ = writeln!(out, "pool_chain_length {}", gauges.chain_length);
        metric(
            &mut out,
            "pool_proofs_total",
            "counter",
            "Well-formed proofs judged since the server started, by result.",
        );
        for (result, counter) in [
            ("accepted", &self.proofs_accepted),
            ("stale", &self.proofs_stale),
            ("invalid", &self.proofs_invalid),
        ] {
            let _ = writeln!(out, "pool_proofs_total{{result=\"{result}\"}} {}", load(counter));
        }
        metric(
            &mut out,
            "pool_shares_total",
            "counter",
            "Proofs judged as shares by this server since it started, by result.",
        );
        for (result, counter) in [
            ("accepted", &self.shares_accepted),
            ("stale", &self.shares_stale),
            ("invalid", &self.shares_invalid),
            ("duplicate", &self.shares_duplicate),
        ] {
            let _ = writeln!(out, "pool_shares_total{{result=\"{result}\"}} {}", load(counter));
        }
        metric(&mut out, "pool_difficulty", "gauge", "Leading hex zeroes a proof needs.");
        let _ = writeln!(out, "pool_difficulty {}", gauges.difficulty);
        metric(&mut out, "pool_ws_clients", "gauge", "WebSocket connections open now.");
        let _ = writeln!(out, "pool_ws_clients {}", gauges.ws_clients);
        metric(
            &mut out,
            "pool_broadcast_fanout_seconds",
            "histogram",
            "Time from a forged block's publication to its frame being written to each WebSocket \
             connection; the highest buckets bound the time to reach them all.",
        );
        self.fanout.render(&mut out, "pool_broadcast_fanout_seconds");
        render_workers(&mut out, gauges.workers);
        metric(&mut out, "pool_uptime_seconds", "gauge", "Seconds since the server started.");
        let _ = writeln!(out, "pool_uptime_seconds {:.3}", gauges.uptime.as_secs_f64());
        out
    }
}

/// How many workers (those with the most share work lately) get series of their own, so that
/// the number of series stays bounded however many ids mine.
pub const METRICS_WORKERS: usize = 20;

/// The values read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct Gauges<'a> {
    /// Blocks in the chain.
    pub chain_length: u64,
    /// Leading hex zeroes.
    pub difficulty: u8,
    /// Open WebSocket connections.
    pub ws_clients: u64,
    /// Time since start.
    pub uptime: Duration,
    /// The workers with shares in the hashrate window, most work first.
    pub workers: &'a [Worker],
}

/// Writes `value` as a Prometheus label value: backslash, double quote and newline escaped.
fn label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn render_workers(out: &mut String, workers: &[Worker]) {
    metric(
        out,
        "pool_workers",
        "gauge",
        "Miners with an accepted share in the hashrate window (GET /workers; counted up to its \
         limit).",
    );
    let _ = writeln!(out, "pool_workers {}", workers.len());
    let top = &workers[..workers.len().min(METRICS_WORKERS)];
    metric(
        out,
        "pool_worker_hashrate",
        "gauge",
        "Estimated hashes per second of each of the miners with the most share work lately \
         (at most 20 ids), as GET /workers gives it.",
    );
    for w in top {
        out.push_str("pool_worker_hashrate{id=\"");
        label(out, &w.id);
        let _ = writeln!(out, "\"}} {}", w.hashrate);
    }
    metric(
        out,
        "pool_worker_shares_total",
        "counter",
        "Share proofs of each of those miners, by result (invalid includes duplicates).",
    );
    for w in top {
        for (result, n) in [("accepted", w.shares), ("stale", w.stale), ("invalid", w.invalid)] {
            out.push_str("pool_worker_shares_total{id=\"");
            label(out, &w.id);
            let _ = writeln!(out, "\",result=\"{result}\"}} {n}");
        }
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A fixed-bucket histogram of durations: counts per bucket (not cumulative, summed when
/// rendered), the total count and the sum in nanoseconds.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; FANOUT_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = FANOUT_BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (le, bucket) in FANOUT_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum:.9}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges<'static> {
        Gauges {
            chain_length: 3,
            difficulty: 4,
            ws_clients: 2,
            uptime: Duration::from_millis(1500),
            workers: &[],
        }
    }

    fn line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find(|l| l.split(' ').next() == Some(name)).and_then(|l| l.split(' ').nth(1))
    }

    #[test]
    fn renders_counters_gauges_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.accepted();
        m.accepted();
        m.rejected(RejectReason::Stale);
        m.rejected(RejectReason::Invalid);
        m.rejected(RejectReason::Invalid);
        m.fanout(Duration::from_micros(40));
        m.fanout(Duration::from_micros(700));
        m.fanout(Duration::from_secs(9));
        let text = m.render(&gauges());
        assert_eq!(line(&text, "pool_blocks_total"), Some("2"));
        assert_eq!(line(&text, "pool_chain_length"), Some("3"));
        assert_eq!(line(&text, "pool_proofs_total{result=\"accepted\"}"), Some("2"));
        assert_eq!(line(&text, "pool_proofs_total{result=\"stale\"}"), Some("1"));
        assert_eq!(line(&text, "pool_proofs_total{result=\"invalid\"}"), Some("2"));
        assert_eq!(line(&text, "pool_difficulty"), Some("4"));
        assert_eq!(line(&text, "pool_ws_clients"), Some("2"));
        assert_eq!(line(&text, "pool_uptime_seconds"), Some("1.500"));
        let bucket =
            |le: &str| line(&text, &format!("pool_broadcast_fanout_seconds_bucket{{le=\"{le}\"}}"));
        assert_eq!(bucket("0.00005"), Some("1"));
        assert_eq!(bucket("0.0005"), Some("1"));
        assert_eq!(bucket("0.001"), Some("2"));
        assert_eq!(bucket("5"), Some("2"));
        assert_eq!(bucket("+Inf"), Some("3"));
        assert_eq!(line(&text, "pool_broadcast_fanout_seconds_count"), Some("3"));
        assert_eq!(line(&text, "pool_broadcast_fanout_seconds_sum"), Some("9.000740000"));
        // Every sample line belongs to a declared metric.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "undeclared: {l}");
        }
    }
}
