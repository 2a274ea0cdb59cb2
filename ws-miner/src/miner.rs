//! The bridge between the network side and the search: runs one search at a time on blocking
//! threads, stops it when a newer block arrives, and keeps the run's totals.
//!
//! Each search gets a fresh stop flag and attempt counter, and a random non-zero seed: course
//! miners all start at 0, so identical miners would find the same proof and waste their work.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

use crate::job::Work;
use crate::output::{Event, Reporter, Summary, forged, format_hashrate};
use crate::search::Searcher;

/// A proof the search found, with the work it solves.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The work the proof solves.
    pub work: Arc<Work>,
    /// The proof.
    pub proof: u64,
}

/// When a new block reached the miner, and how many attempts the running search had made by then.
/// Taken as the frame (or poll answer) is read, before anything else is done with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    at: Instant,
    wall: SystemTime,
    attempts: u64,
}

struct Running {
    work: Arc<Work>,
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
    started: Instant,
    handle: JoinHandle<Option<u64>>,
}

/// Runs searches one at a time and counts what happens.
pub(crate) struct Miner {
    searcher: Searcher,
    reporter: Reporter,
    totals: Summary,
    started: Instant,
    running: Option<Running>,
}

impl Miner {
    pub(crate) fn new(searcher: Searcher, reporter: Reporter) -> Self {
        Miner {
            searcher,
            reporter,
            totals: Summary::default(),
            started: Instant::now(),
            running: None,
        }
    }

    /// Returns the work being searched, if any.
    pub(crate) fn current(&self) -> Option<&Arc<Work>> {
        self.running.as_ref().map(|r| &r.work)
    }

    /// Returns the moment now, with the running search's attempts so far (each worker's count
    /// lags by less than twice [`crate::search::CHECK_EVERY`] attempts).
    pub(crate) fn arrival(&self) -> Arrival {
        let attempts = self.running.as_ref().map_or(0, |r| r.attempts.load(Ordering::Relaxed));
        Arrival { at: Instant::now(), wall: SystemTime::now(), attempts }
    }

    /// Starts searching `work`. Stops any search still running first (without reporting it).
    pub(crate) fn start(&mut self, work: Arc<Work>) {
        if let Some(old) = self.running.take() {
            old.stop.store(true, Ordering::Relaxed);
        }
        let seed = loop {
            let seed: u64 = rand::random();
            if seed != 0 {
                break seed;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicU64::new(0));
        let handle = tokio::task::spawn_blocking({
            let (searcher, work, stop, attempts) =
                (self.searcher.clone(), work.clone(), stop.clone(), attempts.clone());
            move || searcher.search(&work.job, seed, &stop, &attempts)
        });
        self.reporter.emit(Event::SearchStarted {
            index: work.index,
            block: forged(work.index),
            difficulty: work.difficulty().zeros(),
            kernel: self.searcher.kernel_name(),
            threads: self.searcher.threads(),
        });
        self.running = Some(Running { work, stop, attempts, started: Instant::now(), handle });
    }

    /// Stops the running search because block `by_index` arrived at `arrival`, waits for the
    /// workers and reports it, with the attempts made on the old block after the new one
    /// arrived. Returns false when nothing was running.
    pub(crate) async fn abort(&mut self, by_index: Option<u64>, arrival: Arrival) -> bool {
        let Some(running) = self.running.take() else { return false };
        running.stop.store(true, Ordering::Relaxed);
        let flagged = Instant::now();
        let secs = running.started.elapsed().as_secs_f64();
        let index = running.work.index;
        let attempts = self.finish(running).await;
        self.totals.aborted += 1;
        self.reporter.emit(Event::SearchAborted {
            index,
            block: forged(index),
            by_index,
            secs,
            arrived_ts: arrival.wall.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            flag_ms: flagged.saturating_duration_since(arrival.at).as_secs_f64() * 1000.0,
            stop_ms: flagged.elapsed().as_secs_f64() * 1000.0,
            attempts,
            stale_attempts: attempts.saturating_sub(arrival.attempts),
        });
        true
    }

    /// Stops the running search, if any, without reporting it (the run is ending).
    pub(crate) async fn halt(&mut self) {
        if let Some(running) = self.running.take() {
            self.finish(running).await;
        }
    }

    /// Sets the stop flag (if it is not set yet), waits for the workers and adds the search to
    /// the totals. Returns the search's attempts.
    async fn finish(&mut self, running: Running) -> u64 {
        running.stop.store(true, Ordering::Relaxed);
        // The search returns within a few hundred hashes of the flag; a JoinError means the
        // search panicked, which the totals survive.
        let _ = running.handle.await;
        let attempts = running.attempts.load(Ordering::Relaxed);
        self.totals.attempts += attempts;
        self.totals.search_secs += running.started.elapsed().as_secs_f64();
        attempts
    }

    /// Waits until the running search finds a proof and reports it; never returns while no
    /// search is running. Cancel-safe: dropping the future leaves the search running.
    pub(crate) async fn found(&mut self) -> Found {
        loop {
            let Some(running) = self.running.as_mut() else { return pending().await };
            let result = (&mut running.handle).await;
            let Some(running) = self.running.take() else { continue };
            let secs = running.started.elapsed().as_secs_f64();
            let attempts = running.attempts.load(Ordering::Relaxed);
            self.totals.attempts += attempts;
            self.totals.search_secs += secs;
            match result {
                Ok(Some(proof)) => {
                    let hashrate = if secs > 0.0 { attempts as f64 / secs } else { 0.0 };
                    self.reporter.emit(Event::SearchFinished {
                        index: running.work.index,
                        block: forged(running.work.index),
                        proof,
                        secs,
                        attempts,
                        hashrate,
                    });
                    return Found { work: running.work, proof };
                }
                Ok(None) => self.reporter.emit(Event::Ignored {
                    what: "the search ended without a proof; waiting for the next block".into(),
                }),
                Err(e) => self.reporter.emit(Event::Ignored {
                    what: format!("the search failed ({e}); waiting for the next block"),
                }),
            }
        }
    }

    /// Counts a won block; returns the coins won so far.
    pub(crate) fn won(&mut self) -> u64 {
        self.totals.blocks_won += 1;
        self.totals.coins += 1;
        self.totals.coins
    }

    /// Counts a rejected proof.
    pub(crate) fn rejected(&mut self, stale: bool) {
        if stale {
            self.totals.rejected_stale += 1;
        } else {
            self.totals.rejected_invalid += 1;
        }
    }

    /// Returns the run's totals.
    pub(crate) fn summary(&self) -> Summary {
        Summary { run_secs: self.started.elapsed().as_secs_f64(), ..self.totals.clone() }
    }

    /// Updates the live status line: block, hashrate of the running search, coins.
    pub(crate) fn show_status(&self) {
        let what = match &self.running {
            Some(r) => {
                let secs = r.started.elapsed().as_secs_f64();
                let rate =
                    if secs > 0.0 { r.attempts.load(Ordering::Relaxed) as f64 / secs } else { 0.0 };
                let block = forged(r.work.index).map_or("?".to_owned(), |n| n.to_string());
                format!("mining block #{block} at {} for {secs:.1}s", format_hashrate(rate))
            }
            None => "waiting for work".to_owned(),
        };
        self.reporter.status(format!("{what} | coins: {}", self.totals.coins));
    }
}
