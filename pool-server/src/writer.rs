//! [`ShareWriter`]: group commit of shares. Accepted shares from every connection are gathered
//! and stored a batch per transaction (one fsync, or one multi-row insert on PostgreSQL) by one
//! thread with its own connection to the database, beside the chain's and without its lock; each
//! share is answered only once its batch is durable. The refused shares are counted in memory and
//! stored with a batch about once a second (and before the workers' figures are read, and at a
//! clean stop), when the store also stores the miners' figures it adds up in memory (see
//! `ShareStore::write`); a crash loses at most a second of refusal counts, never a share. The
//! same thread answers the workers' figures and removes expired shares.
//!
//! A batch closes [`BATCH_LINGER`] after its first share or at [`MAX_BATCH`] shares, whichever
//! comes first; while one commits, the next gathers. Blocks never wait here: a winning proof is
//! committed at once by the ledger, with its finder's share in the block's own transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::share::ShareReject;
use tokio::sync::{mpsc, oneshot};

use crate::storage::{
    RefusedCount, SHARE_RETENTION_SECONDS, ShareBatch, ShareRow, ShareStore, ShareStored, WorkerRow,
};

/// How long a batch waits for more shares after its first.
pub const BATCH_LINGER: Duration = Duration::from_millis(2);
/// The most shares one batch stores.
pub const MAX_BATCH: usize = 4096;
/// Shares (and workers' requests) waiting for the writer; a connection whose share finds the
/// queue full waits for room (and stops reading meanwhile).
pub const QUEUE: usize = 16 * 1024;
/// The refused shares (and the miners' figures a store adds up in memory) are stored this often
/// (and before the workers' figures are read, and at a clean stop). A crash loses at most a
/// second of refusal counts, never an accepted share.
pub const FIGURES_EVERY: Duration = Duration::from_secs(1);
/// The most ids whose refusals wait in memory; refusals of further ids are not counted until
/// the next batch is stored.
pub const MAX_REFUSED_IDS: usize = 4096;

/// Why a share was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The database failed; the message is for the miner.
    #[error("{0}")]
    Unavailable(String),
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The answer to one share.
pub type ShareAnswer = Result<ShareStored, WriteError>;

enum Job {
    Share(ShareRow, oneshot::Sender<ShareAnswer>),
    Workers { since: f64, limit: usize, reply: oneshot::Sender<anyhow::Result<Vec<WorkerRow>>> },
}

type Refused = Arc<Mutex<HashMap<String, (u64, u64)>>>;

/// The handle: cheap to share, the writer thread behind it.
#[derive(Debug)]
pub struct ShareWriter {
    jobs: mpsc::Sender<Job>,
    refused: Refused,
    thread: Mutex<Option<JoinHandle<()>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Share(row, _) => f.debug_tuple("Share").field(row).finish(),
            Job::Workers { since, limit, .. } => {
                f.debug_struct("Workers").field("since", since).field("limit", limit).finish()
            }
        }
    }
}

impl ShareWriter {
    /// Starts the writer thread over `store`.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(store: Box<dyn ShareStore>) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let refused = Refused::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (refused, stop) = (refused.clone(), stop.clone());
            std::thread::Builder::new()
                .name("share-writer".to_owned())
                .spawn(move || Writer { store, jobs: rx, refused, stop }.run())?
        };
        Ok(ShareWriter { jobs, refused, thread: Mutex::new(Some(thread)), stop })
    }

    /// Queues an accepted share; the answer comes once its batch is stored.
    pub async fn store(&self, share: ShareRow) -> ShareAnswer {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Share(share, tx)).await.is_err() {
            return Err(WriteError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(WriteError::ShuttingDown))
    }

    /// Counts a refused share for `id` (stored with the next batch).
    pub fn refused(&self, id: &str, reason: ShareReject) {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if !refused.contains_key(id) && refused.len() >= MAX_REFUSED_IDS {
            return;
        }
        let counts = match refused.get_mut(id) {
            Some(counts) => counts,
            None => refused.entry(id.to_owned()).or_default(),
        };
        if reason == ShareReject::Stale {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }

    /// Returns up to `limit` miners with shares since `since`, most work first (the refused
    /// shares counted so far are stored first).
    ///
    /// # Errors
    /// When the database fails, or the server is stopping.
    pub async fn workers(&self, since: f64, limit: usize) -> anyhow::Result<Vec<WorkerRow>> {
        let (reply, rx) = oneshot::channel();
        let stopped = || anyhow::anyhow!("the server is shutting down");
        self.jobs.send(Job::Workers { since, limit, reply }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stores what is queued, then stops the thread. Blocking: call it from `spawn_blocking`.
    pub fn close(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::warn!("the share writer panicked");
        }
    }
}

struct Writer {
    store: Box<dyn ShareStore>,
    jobs: mpsc::Receiver<Job>,
    refused: Refused,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// How often the thread looks at the stop flag while nothing comes.
const IDLE_POLL: Duration = Duration::from_millis(100);

impl Writer {
    fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the share writer");
                return;
            }
        };
        let mut last_figures = Instant::now();
        let mut last_prune = Instant::now();
        let mut shares: Vec<ShareRow> = Vec::new();
        let mut replies: Vec<oneshot::Sender<ShareAnswer>> = Vec::new();
        let mut workers = Vec::new();
        loop {
            let mut stopping = self.stop.load(std::sync::atomic::Ordering::Relaxed);
            // The first job (or a timeout), then whatever comes within the linger.
            let first = if stopping {
                self.jobs.try_recv().ok()
            } else {
                // (The timer is made inside the runtime: `block_on` enters it.)
                match rt.block_on(async { tokio::time::timeout(IDLE_POLL, self.jobs.recv()).await })
                {
                    Ok(Some(job)) => Some(job),
                    // Every handle is gone: nothing more can come.
                    Ok(None) => {
                        stopping = true;
                        None
                    }
                    Err(_) => None,
                }
            };
            if let Some(job) = first {
                let deadline = tokio::time::Instant::now() + BATCH_LINGER;
                let mut next = Some(job);
                while let Some(job) = next.take() {
                    match job {
                        Job::Share(row, reply) => {
                            shares.push(row);
                            replies.push(reply);
                        }
                        Job::Workers { since, limit, reply } => workers.push((since, limit, reply)),
                    }
                    if shares.len() >= MAX_BATCH {
                        break;
                    }
                    next = match self.jobs.try_recv() {
                        Ok(job) => Some(job),
                        Err(_) if shares.is_empty() || stopping => None,
                        Err(_) => rt
                            .block_on(async {
                                tokio::time::timeout_at(deadline, self.jobs.recv()).await
                            })
                            .ok()
                            .flatten(),
                    };
                }
            } else if stopping {
                // Nothing queued any more: the last figures and refusals, and done.
                self.flush(&mut shares, &mut replies, true);
                return;
            }
            let figures_due = last_figures.elapsed() >= FIGURES_EVERY || !workers.is_empty();
            if !shares.is_empty() || figures_due {
                self.flush(&mut shares, &mut replies, figures_due);
            }
            if figures_due {
                last_figures = Instant::now();
            }
            for (since, limit, reply) in workers.drain(..) {
                let _ = reply.send(self.store.workers(since, limit));
            }
            if last_prune.elapsed() >= crate::storage::PRUNE_EVERY {
                last_prune = Instant::now();
                let before = crate::ledger::now() - SHARE_RETENTION_SECONDS;
                if let Err(e) = self.store.prune(before) {
                    tracing::warn!(error = format!("{e:#}"), "could not remove expired shares");
                }
            }
        }
    }

    /// Stores `shares` (with `figures_due`, also the miners' figures and the refused counts
    /// waiting) in one transaction and answers each share.
    fn flush(
        &mut self,
        shares: &mut Vec<ShareRow>,
        replies: &mut Vec<oneshot::Sender<ShareAnswer>>,
        figures_due: bool,
    ) {
        let refused: Vec<RefusedCount> = if figures_due {
            let mut map = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
            map.drain().map(|(id, (stale, invalid))| (id, stale, invalid)).collect()
        } else {
            Vec::new()
        };
        if shares.is_empty() && refused.is_empty() && !figures_due {
            return;
        }
        let batch = ShareBatch { shares: std::mem::take(shares), refused, figures_due };
        let started = Instant::now();
        let written = self.store.write(&batch);
        tracing::debug!(
            shares = batch.shares.len(),
            refused_ids = batch.refused.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "stored a batch"
        );
        match written {
            Ok(results) => {
                for (reply, result) in replies.drain(..).zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(error, shares = batch.shares.len(), "could not store shares");
                let message = match e.downcast_ref::<crate::storage::Unavailable>() {
                    Some(u) => u.0.clone(),
                    None => "the pool could not store the share".to_owned(),
                };
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(WriteError::Unavailable(message.clone())));
                }
                // The counts are kept for the next try.
                let mut map = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
                for (id, stale, invalid) in batch.refused {
                    if map.len() < MAX_REFUSED_IDS || map.contains_key(&id) {
                        let counts = map.entry(id).or_default();
                        counts.0 += stale;
                        counts.1 += invalid;
                    }
                }
            }
        }
    }
}
