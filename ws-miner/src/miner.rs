//! The bridge between the network side and the search: runs one search at a time on blocking
//! threads, stops it when a newer block arrives, and keeps the run's totals.
//!
//! Each search gets a fresh stop flag and attempt counter, and a random non-zero seed: course
//! miners all start at 0, so identical miners would find the same proof and waste their work.
//!
//! While a pool sets a share target, the search also hands over every share it finds (through
//! a queue of at most [`MAX_SHARES_QUEUED`]) and goes on; a new target restarts the running
//! search at it, on the same block, with a new seed, keeping its counters.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::job::Work;
use crate::limits::MAX_SHARES_QUEUED;
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

/// The shares the search found, not yet taken by the network side.
pub(crate) struct ShareQueue(mpsc::Receiver<Found>);

impl ShareQueue {
    /// Waits for the next share. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Found {
        match self.0.recv().await {
            Some(found) => found,
            // The miner holds a sender: never closed while it lives.
            None => pending().await,
        }
    }
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
    /// The pool's share target (leading zero bits), while one is set.
    share_bits: Option<u8>,
    /// Where the search hands its shares (see [`Miner::share_queue`]).
    shares_tx: mpsc::Sender<Found>,
    /// Shares dropped because the queue was full.
    overflow: Arc<AtomicU64>,
    /// Σ 2^bits of the accepted shares, and when the first share target came.
    share_work: f64,
    shares_since: Option<Instant>,
}

impl Miner {
    pub(crate) fn new(searcher: Searcher, reporter: Reporter) -> Self {
        // Replaced by `share_queue`; until then shares go nowhere.
        let (shares_tx, _) = mpsc::channel(1);
        Miner {
            searcher,
            reporter,
            totals: Summary::default(),
            started: Instant::now(),
            running: None,
            share_bits: None,
            shares_tx,
            overflow: Arc::new(AtomicU64::new(0)),
            share_work: 0.0,
            shares_since: None,
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
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicU64::new(0));
        let handle = self.spawn(&work, &stop, &attempts);
        self.reporter.emit(Event::SearchStarted {
            index: work.index,
            block: forged(work.index),
            difficulty: work.difficulty().zeros(),
            kernel: self.searcher.kernel_name(),
            threads: self.searcher.threads(),
        });
        self.running = Some(Running { work, stop, attempts, started: Instant::now(), handle });
    }

    /// Starts the search threads on `work` at the current share target, from a random seed.
    fn spawn(
        &self,
        work: &Arc<Work>,
        stop: &Arc<AtomicBool>,
        attempts: &Arc<AtomicU64>,
    ) -> JoinHandle<Option<u64>> {
        let seed = loop {
            let seed: u64 = rand::random();
            if seed != 0 {
                break seed;
            }
        };
        let (searcher, work, stop, attempts) =
            (self.searcher.clone(), work.clone(), stop.clone(), attempts.clone());
        let (bits, tx, overflow) = (self.share_bits, self.shares_tx.clone(), self.overflow.clone());
        tokio::task::spawn_blocking(move || {
            let on_share = |proof| {
                if tx.try_send(Found { work: work.clone(), proof }).is_err() {
                    overflow.fetch_add(1, Ordering::Relaxed);
                }
            };
            searcher.search_shares(&work.job, bits, seed, &stop, &attempts, &on_share)
        })
    }

    /// Sets the pool's share target (`None`: no shares, e.g. the connection is gone). A change
    /// restarts the running search at the new target (same block and counters, a new seed, so
    /// that no share is found twice); a block proof the old search found meanwhile is kept.
    pub(crate) async fn set_share_target(&mut self, bits: Option<u8>) {
        if self.share_bits == bits {
            return;
        }
        self.share_bits = bits;
        if bits.is_some() {
            self.shares_since.get_or_insert_with(Instant::now);
        }
        let Some(mut running) = self.running.take() else { return };
        running.stop.store(true, Ordering::Relaxed);
        // The workers return within a few hundred hashes of the flag.
        let found = (&mut running.handle).await.ok().flatten();
        running.stop = Arc::new(AtomicBool::new(false));
        running.handle = match found {
            Some(proof) => tokio::spawn(async move { Some(proof) }),
            None => self.spawn(&running.work, &running.stop, &running.attempts),
        };
        self.running = Some(running);
    }

    /// Returns the current share target.
    pub(crate) fn share_target(&self) -> Option<u8> {
        self.share_bits
    }

    /// Returns the queue the searches started from now on hand their shares to (at most
    /// [`MAX_SHARES_QUEUED`] waiting; more are dropped and counted).
    pub(crate) fn share_queue(&mut self) -> ShareQueue {
        let (tx, rx) = mpsc::channel(MAX_SHARES_QUEUED);
        self.shares_tx = tx;
        ShareQueue(rx)
    }

    /// Counts a share sent to the pool.
    pub(crate) fn share_sent(&mut self) {
        self.totals.shares_sent += 1;
    }

    /// Counts a share found but not sent (its block is gone, or no connection).
    pub(crate) fn share_dropped(&mut self) {
        self.totals.shares_dropped += 1;
    }

    /// Counts the pool's answer to a share: accepted at `bits`, or refused, stale or not.
    pub(crate) fn share_judged(&mut self, accepted: bool, stale: bool, bits: u8) {
        if accepted {
            self.totals.shares_accepted += 1;
            self.share_work += protocol::share::share_work(bits);
        } else if stale {
            self.totals.shares_stale += 1;
        } else {
            self.totals.shares_invalid += 1;
        }
    }

    /// Returns the periodic `shares` line: the counts, the miner's own hashrate, and its
    /// estimate of the pool's figure (Σ 2^bits of the accepted shares over the time since the
    /// first share target), which the pool's own (`GET /workers`) replaces when it answers.
    pub(crate) fn shares_report(&self) -> Event {
        let t = &self.totals;
        let own = self.shares_since.map_or(0.0, |since| {
            let secs = since.elapsed().as_secs_f64();
            if secs > 0.0 { self.share_work / secs } else { 0.0 }
        });
        Event::Shares {
            accepted: t.shares_accepted,
            stale: t.shares_stale,
            invalid: t.shares_invalid,
            bits: self.share_bits,
            pool_hashrate: own,
            pool_source: "shares",
            hashrate: self.hashrate(),
        }
    }

    /// Returns the counts the `shares` line shows, to tell whether anything changed.
    pub(crate) fn share_counts(&self) -> (u64, u64, u64, u64) {
        let t = &self.totals;
        (t.shares_sent, t.shares_accepted, t.shares_stale, t.shares_invalid)
    }

    /// Returns this run's hashrate: attempts over time searched, the running search included.
    fn hashrate(&self) -> f64 {
        let (mut attempts, mut secs) = (self.totals.attempts, self.totals.search_secs);
        if let Some(r) = &self.running {
            attempts += r.attempts.load(Ordering::Relaxed);
            secs += r.started.elapsed().as_secs_f64();
        }
        if secs > 0.0 { attempts as f64 / secs } else { 0.0 }
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

    /// Counts what a new block paid this id under PPLNS (`units`); returns the run's total.
    pub(crate) fn earned(&mut self, units: u64) -> u64 {
        self.totals.pplns = true;
        self.totals.earned = self.totals.earned.saturating_add(units);
        self.totals.earned
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
        Summary {
            run_secs: self.started.elapsed().as_secs_f64(),
            shares_dropped: self.totals.shares_dropped + self.overflow.load(Ordering::Relaxed),
            ..self.totals.clone()
        }
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
        let shares = match self.share_bits {
            Some(bits) => format!(" | shares: {} at {bits} bits", self.totals.shares_accepted),
            None => String::new(),
        };
        let coins = if self.totals.pplns {
            protocol::Scheme::Pplns.coins(i128::from(self.totals.earned))
        } else {
            self.totals.coins.to_string()
        };
        self.reporter.status(format!("{what} | coins: {coins}{shares}"));
    }
}
