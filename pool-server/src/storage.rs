//! [`Storage`]: where the chain and the pending transactions are kept, behind one interface
//! with two implementations: SQLite in `--data-dir` (`store`, the embedded default, one server
//! per database) and PostgreSQL with `--database` (`pg`, any number of servers on one database).
//!
//! The chain rules (`chain`) never see which one is underneath; `ledger` drives both the same
//! way. Each write names the height (`tip`) of the chain the caller judged against and the
//! storage performs it only if the stored chain still ends there, in one transaction. A store
//! that is the only writer of its database (SQLite) always finds it so; on a shared database
//! another server may have stored a block first, and the caller catches up with
//! [`Storage::changes`] and judges again.

use anyhow::Context;
use protocol::share::share_work;
use protocol::{Block, Difficulty, Transaction};

use crate::ledger::Refusal;

/// A block as stored: the block, the hash recorded when it was appended, and the difficulty its
/// proof met (`None` for the genesis block, whose proof is fixed).
#[derive(Debug, Clone)]
pub struct StoredBlock {
    /// The block.
    pub block: Block,
    /// The hex hash recorded next to it.
    pub hash: String,
    /// The difficulty its proof was judged at.
    pub difficulty: Option<Difficulty>,
}

/// Decodes a stored block row: its index, recorded hash, recorded difficulty and JSON. Checks
/// only that the row is well-formed (the JSON is a block of that index); the chain rules are
/// checked by `chain`.
///
/// # Errors
/// Names the row and what is wrong with it.
pub fn decode_block(
    idx: i64,
    hash: String,
    difficulty: Option<i64>,
    body: &str,
) -> anyhow::Result<StoredBlock> {
    let block: Block = serde_json::from_str(body)
        .with_context(|| format!("block row {idx}: stored JSON is not a block"))?;
    let difficulty = match difficulty {
        None => None,
        Some(d) => Some(
            u64::try_from(d)
                .ok()
                .and_then(|d| Difficulty::new(d).ok())
                .with_context(|| format!("block row {idx}: bad difficulty {d}"))?,
        ),
    };
    if i64::try_from(block.index).ok() != Some(idx) {
        anyhow::bail!("block row {idx}: its JSON says index {}", block.index);
    }
    Ok(StoredBlock { block, hash, difficulty })
}

/// Everything stored: the whole chain, genesis first, and the pending transactions in arrival
/// order, read as one consistent snapshot.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every block in index order (not yet checked against the chain rules).
    pub blocks: Vec<StoredBlock>,
    /// The transactions waiting for the next block.
    pub pending: Vec<Transaction>,
}

/// What other servers stored after the height this one knows: the blocks that follow it (in
/// index order, at most [`MAX_CHANGED_BLOCKS`]; ask again for more) and the pending
/// transactions as they are now.
pub type Changes = Loaded;

/// The most blocks one [`Storage::changes`] call returns, so a server that fell far behind
/// catches up in bounded steps.
pub const MAX_CHANGED_BLOCKS: usize = 1000;

/// What became of a block to store.
#[derive(Debug)]
pub enum Forged {
    /// It is stored, and took the pending transactions it holds.
    Stored(Block),
    /// Another server stored the block at that height first: nothing was written.
    Lost,
}

/// What became of a transaction to queue.
#[derive(Debug)]
pub enum Queued {
    /// It is stored.
    Stored,
    /// The check refused it: nothing was written.
    Refused(Refusal),
    /// The stored chain moved past the caller's height: nothing was written; catch up and retry.
    Behind,
}

/// Refused shares of one id not yet stored: the id, how many were stale, how many invalid (or
/// duplicates).
pub type RefusedCount = (String, u64, u64);

/// The proof that wins a block, from a connection with shares: stored as its finder's share in
/// the block's own transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct FinderShare {
    /// The finder's id.
    pub id: String,
    /// The winning proof.
    pub proof: u64,
    /// The finder's share target, in leading zero bits: the work the share counts for.
    pub bits: u8,
}

impl FinderShare {
    /// The share row of the proof that won `block` (forged on block `block.index - 1`).
    pub fn row(&self, block: &Block) -> ShareRow {
        ShareRow {
            block: block.index.saturating_sub(1),
            proof: self.proof,
            id: self.id.clone(),
            bits: self.bits,
            ts: block.timestamp,
        }
    }
}

/// An accepted share, as stored: the block it extends (the chain's last block when it was
/// judged), its proof, the miner's id, the target it met and when.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareRow {
    /// The index of the block the share's proof was found on.
    pub block: u64,
    /// The proof.
    pub proof: u64,
    /// The miner's id (as `MinerId` trimmed it).
    pub id: String,
    /// The share target it met, in leading zero bits.
    pub bits: u8,
    /// When it was accepted, seconds since the Unix epoch.
    pub ts: f64,
}

/// What became of a share to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareStored {
    /// Stored, and counted for its id.
    Stored,
    /// The same proof was already stored for that block (by this server or another): nothing
    /// was written.
    Duplicate,
}

/// One miner's share figures, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    /// The id.
    pub id: String,
    /// Shares accepted, ever.
    pub shares: u64,
    /// Shares refused as stale, ever (counted once the id has an accepted share).
    pub stale: u64,
    /// Shares refused as invalid or duplicate, ever (likewise).
    pub invalid: u64,
    /// When its first share was accepted (seconds since the Unix epoch).
    pub first_share: f64,
    /// When its last share was accepted.
    pub last_share: f64,
    /// The hashes its shares accepted since the window's start stand for: Σ 2^bits.
    pub work: f64,
}

/// The width of the buckets a miner's share work is summed in for the hashrate window, in
/// seconds: `GET /workers` adds up at most `window / WORK_BUCKET_SECONDS` rows per miner,
/// however many shares it sent.
pub const WORK_BUCKET_SECONDS: f64 = 1.0;

/// Returns the work bucket of a share accepted at `ts`.
pub fn work_bucket(ts: f64) -> i64 {
    // Seconds since the epoch fit an i64 for any clock this runs on.
    (ts / WORK_BUCKET_SECONDS).floor() as i64
}

/// What one group commit writes: accepted shares, and refused shares counted per id.
#[derive(Debug, Default)]
pub struct ShareBatch {
    /// The accepted shares, in arrival order.
    pub shares: Vec<ShareRow>,
    /// Refused shares per id since the last batch.
    pub refused: Vec<RefusedCount>,
    /// Whether the miners' figures a store keeps in memory must be stored with this batch
    /// (see [`ShareStore::write`]).
    pub figures_due: bool,
}

/// What stored shares add to one id's figures: shares, first and last share time, and the work
/// per [`work_bucket`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WorkerDelta {
    /// Shares stored.
    pub shares: i64,
    /// The earliest share time.
    pub first: f64,
    /// The latest share time.
    pub last: f64,
    /// Work per [`work_bucket`].
    pub work: std::collections::BTreeMap<i64, f64>,
}

/// Per-miner figures of stored shares, by id. In id order, so that frontends writing them at once
/// lock worker rows in the same order and never deadlock. The share writer adds up those of many
/// batches and stores them together (the shares themselves are stored with their own batch).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WorkerDeltas(pub std::collections::BTreeMap<String, WorkerDelta>);

impl WorkerDeltas {
    /// Counts a stored share.
    pub fn add(&mut self, share: &ShareRow) {
        let d = match self.0.get_mut(&share.id) {
            Some(d) => d,
            None => self.0.entry(share.id.clone()).or_insert_with(|| WorkerDelta {
                first: share.ts,
                last: share.ts,
                ..WorkerDelta::default()
            }),
        };
        d.shares += 1;
        d.first = d.first.min(share.ts);
        d.last = d.last.max(share.ts);
        *d.work.entry(work_bucket(share.ts)).or_default() += share_work(share.bits);
    }

    /// The figures of `shares`.
    pub fn of<'a>(shares: impl IntoIterator<Item = &'a ShareRow>) -> Self {
        let mut deltas = WorkerDeltas::default();
        for share in shares {
            deltas.add(share);
        }
        deltas
    }

    /// Adds `other`'s figures to these.
    pub fn merge(&mut self, other: WorkerDeltas) {
        for (id, d) in other.0 {
            match self.0.get_mut(&id) {
                None => {
                    self.0.insert(id, d);
                }
                Some(mine) => {
                    mine.shares += d.shares;
                    mine.first = mine.first.min(d.first);
                    mine.last = mine.last.max(d.last);
                    for (bucket, w) in d.work {
                        *mine.work.entry(bucket).or_default() += w;
                    }
                }
            }
        }
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The shares of the PPLNS window: newest first, `(id, bits)`, read until their work reaches
/// the window's (the last one may pass it) or [`MAX_WINDOW_SHARES`] were read.
///
/// # Errors
/// Whatever reading a row fails with.
pub fn read_window<E>(
    rows: impl Iterator<Item = Result<(String, u8), E>>,
    work: u128,
) -> Result<Vec<(String, u8)>, E> {
    let mut shares = Vec::new();
    let mut sum: u128 = 0;
    for row in rows.take(MAX_WINDOW_SHARES) {
        if sum >= work {
            break;
        }
        let (id, bits) = row?;
        sum = sum.saturating_add(1u128 << bits.min(100));
        shares.push((id, bits));
    }
    Ok(shares)
}

/// The most shares a forge reads for the PPLNS window. The window is a quantity of work; only a
/// window made of shares cheaper on average than its work / this many is cut short here (then
/// the newest this many shares are paid, still by work).
pub const MAX_WINDOW_SHARES: usize = 1 << 17;

/// The most shares kept in storage: older ones are removed (as are those older than
/// [`SHARE_RETENTION_SECONDS`]). Far more than [`MAX_WINDOW_SHARES`], so a forge always finds its
/// window; it bounds the database under any share rate.
pub const MAX_KEPT_SHARES: i64 = 1 << 20;

/// How often the share writer removes expired shares.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How long accepted shares are kept (for the hashrate window); older ones are removed.
pub const SHARE_RETENTION_SECONDS: f64 = 3600.0;

/// Returns `proof` as the signed 64-bit integer both databases store (the same bits).
pub fn proof_to_i64(proof: u64) -> i64 {
    i64::from_ne_bytes(proof.to_ne_bytes())
}

/// Builds the next block from the pending transactions it will take (see [`Storage`] for
/// `None`) and the shares of the PPLNS window, newest first, as `(id, bits)` (see
/// [`read_window`]).
pub type MakeBlock<'a> = dyn FnMut(Option<&[Transaction]>, &[(String, u8)]) -> Block + 'a;

/// Decides whether a transaction may join the pending ones (see [`Storage`] for `None`).
pub type CheckPending<'a> = dyn FnMut(Option<&[Transaction]>) -> Result<(), Refusal> + 'a;

/// The database could not be reached (or stopped answering): the operation was not done, or,
/// when it was a commit in flight, its outcome is not known. Answered with a 503, never with a
/// success.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Durable storage of one chain. Blocking: call it from `spawn_blocking` or start-up only.
///
/// The pending transactions handed to the closures below are `None` when they are exactly the
/// ones the caller already knows (the caller is the only writer), and otherwise the ones stored
/// now, which replace the caller's.
pub trait Storage: Send + std::fmt::Debug {
    /// Names the database for messages and logs ("/data/chain.sqlite3", "PostgreSQL at …").
    fn describe(&self) -> String;

    /// Reads everything stored. Does not check the chain rules.
    ///
    /// # Errors
    /// When the database cannot be read or a row is not what it should be.
    fn load(&mut self) -> anyhow::Result<Loaded>;

    /// Records that a server now runs on the database (for checks at the next start).
    ///
    /// # Errors
    /// When the database cannot be written.
    fn mark_running(&mut self) -> anyhow::Result<()>;

    /// Returns what other servers stored after block `tip`, or `None` when the stored chain
    /// still ends there (always, for a store that is the only writer).
    ///
    /// # Errors
    /// When the database cannot be read ([`Unavailable`] when it cannot be reached).
    fn changes(&mut self, tip: u64) -> anyhow::Result<Option<Changes>>;

    /// If the stored chain still ends at block `tip`, builds the next block with `make` (given
    /// the pending transactions, which the block takes, and the newest shares whose work
    /// reaches `window`, see [`read_window`]) and stores
    /// it, judged at `difficulty`, in one transaction that also removes those pending
    /// transactions and, with `finder`, counts the winning proof as its finder's share (of block
    /// `tip`, at the block's time).
    ///
    /// # Errors
    /// When the database fails ([`Unavailable`] when it cannot be reached); then the block
    /// was not stored, or, for a connection lost during the commit, may have been.
    fn forge(
        &mut self,
        tip: u64,
        difficulty: Difficulty,
        window: u128,
        finder: Option<&FinderShare>,
        make: &mut MakeBlock<'_>,
    ) -> anyhow::Result<Forged>;

    /// If the stored chain still ends at block `tip` and `check` accepts `t` beside the
    /// pending transactions, stores it.
    ///
    /// # Errors
    /// When the database fails ([`Unavailable`] when it cannot be reached); then nothing was
    /// queued.
    fn add_pending(
        &mut self,
        tip: u64,
        t: &Transaction,
        check: &mut CheckPending<'_>,
    ) -> anyhow::Result<Queued>;

    /// Opens a second connection to the same database for the share writer: shares are
    /// stored beside the chain, in their own transactions, without the chain's lock.
    ///
    /// # Errors
    /// When the database cannot be opened.
    fn share_store(&self) -> anyhow::Result<Box<dyn ShareStore>>;
}

/// Where shares are kept: written a batch per transaction by the share writer (one thread per
/// server), off the chain's lock. Blocking.
pub trait ShareStore: Send {
    /// Stores a batch in one transaction: each share unless the same proof was already stored
    /// for its block (by any server on the database), and the refused counts (to ids that have
    /// a worker row only). Returns what became of each share, in order.
    ///
    /// The stored shares' figures (their miners' counts, last share and work per second) are
    /// stored with the batch, or, by a store that adds them up in memory (SQLite: one upsert per
    /// miner a second instead of one per share), with the next batch whose `figures_due` is set;
    /// such a store rebuilds from the shares, when it opens, the figures a crash lost.
    ///
    /// # Errors
    /// When the database fails; then nothing of the batch was stored, or, when the connection
    /// was lost during the commit, its outcome is not known.
    fn write(&mut self, batch: &ShareBatch) -> anyhow::Result<Vec<ShareStored>>;

    /// Returns at most `limit` workers whose last share is after `since`, with the work of
    /// their shares after `since` (by bucket), most work first.
    ///
    /// # Errors
    /// When the database fails.
    fn workers(&mut self, since: f64, limit: usize) -> anyhow::Result<Vec<WorkerRow>>;

    /// Removes shares older than `before` and all but the newest [`MAX_KEPT_SHARES`], and work
    /// buckets older than `before`.
    ///
    /// # Errors
    /// When the database fails.
    fn prune(&mut self, before: f64) -> anyhow::Result<()>;
}
