//! Durable storage of the chain and the pending transactions in one SQLite file: the embedded
//! [`Storage`], used unless `--database` names a PostgreSQL one.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so once [`Store::append_block`]
//! returns, the block survives `kill -9` and power loss. Each block row keeps the block's JSON,
//! its hash and the difficulty its proof was checked against, so a restart with another
//! `--difficulty` still validates old blocks. This module only reads and writes rows; the chain
//! rules (what makes a stored chain valid) live in `chain`.
//!
//! A new chain is created only in a directory without a database; a database that exists but
//! is empty, has lost blocks, or lost its write-ahead log is refused, never replaced (see
//! [`Store`]). Errors say "cannot write" when the file system or permissions are the problem,
//! and "corrupt" only when SQLite finds the file damaged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use protocol::share::share_work;

use protocol::{Block, Difficulty, Transaction};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use crate::lockfile::{DirLock, is_permission};
pub use crate::storage::StoredBlock;
use crate::storage::{
    Changes, CheckPending, FinderShare, Forged, Loaded, MAX_KEPT_SHARES, MakeBlock, Queued,
    ShareBatch, ShareRow, ShareStore, ShareStored, Storage, WorkerDeltas, WorkerRow, decode_block,
    proof_to_i64, read_window, work_bucket,
};

/// The database file's name inside `--data-dir`.
pub const DB_FILE: &str = "chain.sqlite3";
/// The database's name while it is being created: a new chain is written there (schema, genesis
/// block, bookkeeping) and then renamed to [`DB_FILE`], so a [`DB_FILE`] always holds a whole
/// chain and a crash during creation leaves only this file, which the next start replaces.
pub const NEW_DB_FILE: &str = "chain.sqlite3.new";
/// The version of the layout written into the `meta` table.
pub const FORMAT: i64 = 1;

/// The open database, and the lock on its directory.
///
/// Besides `blocks` and `pending`, the database keeps a `meta` table: the layout `format`, the
/// number of `blocks` committed (updated in each block's own transaction) and whether the last
/// server stopped `clean`ly. While a server runs, `clean` is 0 in the main file itself (it is
/// checkpointed out of the WAL at start); a clean stop sets it back to 1 and SQLite folds the WAL
/// into the main file. So a main file that says 0 without a `-wal` file next to it lost the
/// blocks in its WAL, and is refused.
#[derive(Debug)]
pub struct Store {
    // Fields drop in order: the database closes (and checkpoints) before the lock is released.
    conn: Connection,
    path: PathBuf,
    running: bool,
    _lock: DirLock,
}

/// Returns the error for a file that cannot be written or created: "cannot write" with the
/// reason when the file system or permissions forbid it, so that nobody is told to throw away a
/// healthy chain.
pub(crate) fn cannot_write(path: &Path, e: std::io::Error) -> anyhow::Error {
    if is_permission(&e) {
        anyhow::anyhow!(
            "cannot write {}: {e}; the data directory must be writable by the server \
             (nothing in it was changed)",
            path.display()
        )
    } else {
        anyhow::Error::new(e).context(format!("cannot open {}", path.display()))
    }
}

/// Wraps an SQLite error met while opening `path`: "cannot write" for read-only files, file
/// systems and permissions, "unreadable or corrupt" only when SQLite says the file is damaged.
fn open_error(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    let what = match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            format!(
                "cannot write database {} (a read-only file or file system, or no permission); \
                 make it and its directory writable by the server (nothing in it was changed)",
                path.display()
            )
        }
        Some(ErrorCode::DiskFull) => format!("cannot write database {}: disk full", path.display()),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => format!(
            "database {} is unreadable or corrupt; move it away to start a new chain",
            path.display()
        ),
        _ => format!("cannot open database {}", path.display()),
    };
    anyhow::Error::new(e).context(what)
}

/// A file next to `path`: `path` with `suffix` appended (SQLite's `-wal`, `-shm`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn exists(path: &Path) -> anyhow::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

const SCHEMA: &str = "CREATE TABLE blocks (
                          idx        INTEGER PRIMARY KEY,
                          hash       TEXT    NOT NULL,
                          difficulty INTEGER,
                          body       TEXT    NOT NULL
                      );
                      CREATE TABLE pending (
                          seq       INTEGER PRIMARY KEY AUTOINCREMENT,
                          sender    TEXT    NOT NULL,
                          recipient TEXT    NOT NULL,
                          amount    INTEGER NOT NULL
                      );
                      CREATE TABLE meta (
                          key   TEXT    PRIMARY KEY,
                          value INTEGER NOT NULL
                      );";

impl Store {
    /// Locks `data_dir` and opens its database. A new chain (just a genesis block made at
    /// `now`) is created only when the directory holds no database at all; a database that
    /// exists but is empty, lost its blocks or its write-ahead log is refused.
    ///
    /// # Errors
    /// When another server holds the directory, the directory or database cannot be written,
    /// or the database is damaged; the message names the file and the problem.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            if is_permission(&e) {
                cannot_write(data_dir, e)
            } else {
                anyhow::Error::new(e)
                    .context(format!("cannot create data directory {}", data_dir.display()))
            }
        })?;
        let lock = DirLock::acquire(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let wal = sibling(&path, "-wal");
        let had_wal = exists(&wal)?;
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if had_wal {
                    anyhow::bail!(
                        "{} is there but its database {} is missing; restore the database, \
                         or move both away to start a new chain",
                        wal.display(),
                        path.display()
                    );
                }
                create(data_dir, &path)?;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            Ok(m) if m.len() == 0 => anyhow::bail!(
                "database {} is empty (0 bytes), so the chain it held is lost; restore it from \
                 a backup, or move it away to start a new chain",
                path.display()
            ),
            Ok(_) => {}
        }
        let conn = Connection::open(&path).map_err(|e| open_error(&path, e))?;
        let mut store = Store { conn, path, running: false, _lock: lock };
        // On a refusal the connection closes here, which also removes the empty `-wal` that
        // opening created, so the next start sees the directory as this one found it.
        store.check(had_wal)?;
        Ok(store)
    }

    /// Checks the database's integrity and bookkeeping before anything is written to it.
    fn check(&mut self, had_wal: bool) -> anyhow::Result<()> {
        let path = self.path.clone();
        // A truncated or scribbled file can still open; the integrity check reads every page.
        let check: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| open_error(&path, e))?;
        if check != "ok" {
            anyhow::bail!(
                "database {} is unreadable or corrupt (integrity check: {check}); move it away \
                 to start a new chain",
                path.display()
            );
        }
        let table = |name: &str| -> anyhow::Result<bool> {
            let found: Option<String> = self
                .conn
                .query_row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| open_error(&path, e))?;
            Ok(found.is_some())
        };
        if !table("blocks")? || !table("pending")? {
            anyhow::bail!(
                "database {} holds no chain (no blocks or pending table)",
                path.display()
            );
        }
        let count: i64 = self
            .conn
            .query_row("SELECT count(*) FROM blocks", [], |r| r.get(0))
            .map_err(|e| open_error(&path, e))?;
        if count == 0 {
            anyhow::bail!(
                "database {} has no blocks: its chain was emptied; restore it from a backup, \
                 or move it away to start a new chain",
                path.display()
            );
        }
        if !table("meta")? {
            // Written before this bookkeeping existed: adopt it as it is.
            self.write_meta(count).map_err(|e| open_error(&path, e))?;
            return Ok(());
        }
        let meta = |key: &str| -> anyhow::Result<Option<i64>> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(|e| open_error(&path, e))
        };
        match meta("format")? {
            Some(FORMAT) => {}
            other => anyhow::bail!(
                "database {} has layout format {other:?}; this server reads format {FORMAT}",
                path.display()
            ),
        }
        let clean = meta("clean")?;
        if clean == Some(0) && !had_wal {
            anyhow::bail!(
                "database {} was not stopped cleanly and its write-ahead log {} is missing, so \
                 the newest blocks are not in it; put the -wal file back next to it (copy both \
                 files together), or move the database away to start a new chain",
                path.display(),
                sibling(&path, "-wal").display()
            );
        }
        let committed = meta("blocks")?;
        if committed != Some(count) {
            anyhow::bail!(
                "database {} holds {count} blocks but {} were committed: blocks were removed; \
                 restore it from a backup, or move it away to start a new chain",
                path.display(),
                committed.map_or("an unknown number".to_owned(), |c| c.to_string())
            );
        }
        Ok(())
    }

    fn write_meta(&self, blocks: i64) -> rusqlite::Result<()> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('format', ?1), ('blocks', ?2), \
             ('clean', 1)",
            params![FORMAT, blocks],
        )?;
        Ok(())
    }

    /// Records in the main database file (not only in its WAL) that a server now runs on it,
    /// so that losing the WAL before a clean stop is detected at the next start.
    ///
    /// # Errors
    /// When the database cannot be written.
    pub fn mark_running(&mut self) -> anyhow::Result<()> {
        let path = self.path.clone();
        (|| -> rusqlite::Result<()> {
            self.conn.pragma_update(None, "synchronous", "FULL")?;
            // The share writer's connection commits beside this one; a commit waits for the
            // other's (a few milliseconds), never fails on it.
            self.conn.busy_timeout(BUSY_TIMEOUT)?;
            self.conn.execute_batch(SHARES_SCHEMA)?;
            // Whether a share's figures were stored with it (a block's own share); the share
            // writer's are added up in memory (see `ShareDb`).
            let counted: i64 = self.conn.query_row(
                "SELECT count(*) FROM pragma_table_info('shares') WHERE name = 'counted'",
                [],
                |r| r.get(0),
            )?;
            if counted == 0 {
                self.conn.execute_batch(
                    "ALTER TABLE shares ADD COLUMN counted INTEGER NOT NULL DEFAULT 1",
                )?;
            }
            self.conn.execute("UPDATE meta SET value = 0 WHERE key = 'clean'", [])?;
            let busy: i64 =
                self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy != 0 {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("the checkpoint was blocked by another connection".to_owned()),
                ));
            }
            Ok(())
        })()
        .map_err(|e| open_error(&path, e))?;
        self.running = true;
        Ok(())
    }

    /// Returns the database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every stored block in index order. Does not check the chain rules.
    ///
    /// # Errors
    /// When a row cannot be read or its JSON is not a block; the message names the row.
    pub fn load_blocks(&self) -> anyhow::Result<Vec<StoredBlock>> {
        let mut stmt =
            self.conn.prepare("SELECT idx, hash, difficulty, body FROM blocks ORDER BY idx")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut blocks = Vec::new();
        for row in rows {
            let (idx, hash, difficulty, body) = row.context("cannot read a block row")?;
            blocks.push(decode_block(idx, hash, difficulty, &body)?);
        }
        Ok(blocks)
    }

    /// Reads the pending transactions in arrival order.
    ///
    /// # Errors
    /// When a row cannot be read.
    pub fn load_pending(&self) -> anyhow::Result<Vec<Transaction>> {
        let mut stmt =
            self.conn.prepare("SELECT sender, recipient, amount FROM pending ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
        })?;
        let mut pending = Vec::new();
        for row in rows {
            let (sender, recipient, amount) = row.context("cannot read a pending transaction")?;
            let amount = u64::try_from(amount)
                .with_context(|| format!("pending transaction with negative amount {amount}"))?;
            pending.push(Transaction { sender, recipient, amount });
        }
        Ok(pending)
    }

    /// Appends `block` and clears the pending transactions, in one committed transaction.
    ///
    /// # Errors
    /// When SQLite fails; then nothing was written.
    pub fn append_block(
        &mut self,
        block: &Block,
        difficulty: Option<Difficulty>,
    ) -> anyhow::Result<()> {
        self.append_block_with_share(block, difficulty, None)
    }

    /// As [`Store::append_block`], and stores `share` (the winning proof as its finder's share)
    /// in the same transaction.
    fn append_block_with_share(
        &mut self,
        block: &Block,
        difficulty: Option<Difficulty>,
        share: Option<&ShareRow>,
    ) -> anyhow::Result<()> {
        let body = serde_json::to_string(block).context("serialising a block")?;
        let idx = i64::try_from(block.index).context("block index beyond SQLite's range")?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO blocks (idx, hash, difficulty, body) VALUES (?1, ?2, ?3, ?4)",
            params![idx, block.hash().to_hex(), difficulty.map(|d| d.zeros()), body],
        )?;
        tx.execute("DELETE FROM pending", [])?;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'blocks'", [idx])?;
        if let Some(share) = share {
            // A winning proof is new for its block: nothing to count twice.
            insert_shares(&tx, std::slice::from_ref(share), true)?;
            add_worker_figures(&tx, &WorkerDeltas::of([share]))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores a pending transaction.
    ///
    /// # Errors
    /// When SQLite fails; then nothing was written.
    pub fn add_pending(&mut self, t: &Transaction) -> anyhow::Result<()> {
        let amount = i64::try_from(t.amount).context("amount beyond SQLite's range")?;
        self.conn.execute(
            "INSERT INTO pending (sender, recipient, amount) VALUES (?1, ?2, ?3)",
            params![t.sender, t.recipient, amount],
        )?;
        Ok(())
    }
}

/// How long a commit waits for the other connection's (the chain's, or the share writer's).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Stores `shares` in the open transaction, each unless its proof was already stored for its
/// block (`counted`: their figures are stored in this transaction too); returns what became of
/// each, and the newest `seq` stored.
fn insert_shares(
    tx: &rusqlite::Transaction<'_>,
    shares: &[ShareRow],
    counted: bool,
) -> anyhow::Result<(Vec<ShareStored>, Option<i64>)> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO shares (block, proof, id, bits, work, ts, counted) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut results = Vec::with_capacity(shares.len());
    let mut newest = None;
    for share in shares {
        let block = i64::try_from(share.block).context("block index beyond SQLite's range")?;
        let inserted = insert.execute(params![
            block,
            proof_to_i64(share.proof),
            share.id,
            share.bits,
            share_work(share.bits),
            share.ts,
            counted
        ])?;
        if inserted == 0 {
            results.push(ShareStored::Duplicate);
        } else {
            results.push(ShareStored::Stored);
            newest = Some(tx.last_insert_rowid());
        }
    }
    Ok((results, newest))
}

/// Adds stored shares' figures to their miners' rows, in the open transaction.
fn add_worker_figures(tx: &rusqlite::Transaction<'_>, deltas: &WorkerDeltas) -> anyhow::Result<()> {
    let mut worker = tx.prepare_cached(
        "INSERT INTO workers (id, shares, stale, invalid, first_share, last_share) \
         VALUES (?1, ?2, 0, 0, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET shares = shares + excluded.shares, \
             first_share = MIN(first_share, excluded.first_share), \
             last_share = MAX(last_share, excluded.last_share)",
    )?;
    let mut work = tx.prepare_cached(
        "INSERT INTO share_work (id, bucket, work) VALUES (?1, ?2, ?3) \
         ON CONFLICT (id, bucket) DO UPDATE SET work = work + excluded.work",
    )?;
    for (id, delta) in &deltas.0 {
        worker.execute(params![id, delta.shares, delta.first, delta.last])?;
        for (bucket, w) in &delta.work {
            work.execute(params![id, bucket, w])?;
        }
    }
    Ok(())
}

/// The share tables, added to any database at open: an older server ignores them.
const SHARES_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS shares (
                                 seq   INTEGER PRIMARY KEY AUTOINCREMENT,
                                 block INTEGER NOT NULL,
                                 proof INTEGER NOT NULL,
                                 id    TEXT    NOT NULL,
                                 bits  INTEGER NOT NULL,
                                 work  REAL    NOT NULL,
                                 ts    REAL    NOT NULL,
                                 counted INTEGER NOT NULL DEFAULT 0,
                                 UNIQUE (block, proof)
                             );
                             CREATE INDEX IF NOT EXISTS shares_ts ON shares (ts);
                             DROP INDEX IF EXISTS shares_id_ts;
                             CREATE TABLE IF NOT EXISTS workers (
                                 id          TEXT    PRIMARY KEY,
                                 shares      INTEGER NOT NULL,
                                 stale       INTEGER NOT NULL,
                                 invalid     INTEGER NOT NULL,
                                 first_share REAL    NOT NULL,
                                 last_share  REAL    NOT NULL
                             );
                             CREATE TABLE IF NOT EXISTS share_work (
                                 id     TEXT    NOT NULL,
                                 bucket INTEGER NOT NULL,
                                 work   REAL    NOT NULL,
                                 PRIMARY KEY (id, bucket)
                             ) WITHOUT ROWID;
                             CREATE INDEX IF NOT EXISTS share_work_bucket ON share_work (bucket);";

impl Store {
    /// The shares of the PPLNS window (see [`read_window`]).
    fn window(&self, work: u128) -> anyhow::Result<Vec<(String, u8)>> {
        if work == 0 {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached("SELECT id, bits FROM shares ORDER BY seq DESC")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u8>(1)?)))?;
        read_window(rows, work).context("reading the PPLNS window")
    }
}

impl Storage for Store {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&mut self) -> anyhow::Result<Loaded> {
        Ok(Loaded { blocks: self.load_blocks()?, pending: self.load_pending()? })
    }

    fn mark_running(&mut self) -> anyhow::Result<()> {
        Store::mark_running(self)
    }

    fn changes(&mut self, _tip: u64) -> anyhow::Result<Option<Changes>> {
        // The directory lock makes this server the database's only writer.
        Ok(None)
    }

    fn forge(
        &mut self,
        _tip: u64,
        difficulty: Difficulty,
        window: u128,
        finder: Option<&FinderShare>,
        make: &mut MakeBlock<'_>,
    ) -> anyhow::Result<Forged> {
        let shares = self.window(window)?;
        let block = make(None, &shares);
        let share = finder.map(|f| f.row(&block));
        self.append_block_with_share(&block, Some(difficulty), share.as_ref())
            .with_context(|| format!("storing block {}", block.index))?;
        Ok(Forged::Stored(block))
    }

    fn add_pending(
        &mut self,
        _tip: u64,
        t: &Transaction,
        check: &mut CheckPending<'_>,
    ) -> anyhow::Result<Queued> {
        if let Err(refusal) = check(None) {
            return Ok(Queued::Refused(refusal));
        }
        Store::add_pending(self, t).context("storing a pending transaction")?;
        Ok(Queued::Stored)
    }

    fn share_store(&self) -> anyhow::Result<Box<dyn ShareStore>> {
        let mut conn = Connection::open(&self.path).map_err(|e| open_error(&self.path, e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .and_then(|()| conn.busy_timeout(BUSY_TIMEOUT))
            .map_err(|e| open_error(&self.path, e))?;
        let stored = rebuild_figures(&mut conn)
            .with_context(|| format!("counting the shares in {}", self.path.display()))?;
        Ok(Box::new(ShareDb { conn, figures: WorkerDeltas::default(), stored }))
    }
}

/// The `meta` key of the newest share whose figures are stored (the share writer's shares up to
/// it are counted in `workers` and `share_work`).
const FIGURES_SEQ: &str = "figures_seq";

/// Stores the figures of the share writer's shares stored after the last figures were (a crash
/// came between), and returns the newest share's `seq`: every figure is then stored.
fn rebuild_figures(conn: &mut Connection) -> anyhow::Result<i64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let newest: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM shares", [], |r| r.get(0))?;
    let stored: Option<i64> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [FIGURES_SEQ], |r| r.get(0))
        .optional()?;
    // A database from before figures were added up in memory: every share is counted.
    let stored = stored.unwrap_or(newest);
    let mut missed = WorkerDeltas::default();
    {
        let mut rows = tx.prepare(
            "SELECT id, bits, ts FROM shares WHERE seq > ?1 AND counted = 0 ORDER BY seq",
        )?;
        let rows = rows.query_map([stored], |r| {
            Ok(ShareRow { block: 0, proof: 0, id: r.get(0)?, bits: r.get(1)?, ts: r.get(2)? })
        })?;
        for row in rows {
            missed.add(&row?);
        }
    }
    if !missed.is_empty() {
        tracing::info!(miners = missed.len(), "counted the shares a crash left uncounted");
    }
    add_worker_figures(&tx, &missed)?;
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![FIGURES_SEQ, newest],
    )?;
    tx.commit()?;
    Ok(newest)
}

/// The share writer's own connection to the chain's SQLite file. The figures of the shares it
/// stores are added up here and stored with the next batch whose `figures_due` is set, with the
/// newest share they cover ([`FIGURES_SEQ`]): one upsert per miner a second, not one per
/// share. After a crash, [`rebuild_figures`] counts the shares stored after it.
pub struct ShareDb {
    conn: Connection,
    /// The figures of shares stored since the figures were last stored.
    figures: WorkerDeltas,
    /// The newest share those figures cover.
    stored: i64,
}

impl ShareStore for ShareDb {
    fn write(&mut self, batch: &ShareBatch) -> anyhow::Result<Vec<ShareStored>> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (results, newest) = insert_shares(&tx, &batch.shares, false)?;
        let stored = batch.shares.iter().zip(&results).filter(|(_, r)| **r == ShareStored::Stored);
        let mut figures = WorkerDeltas::of(stored.map(|(s, _)| s));
        let newest = newest.unwrap_or(self.stored).max(self.stored);
        if batch.figures_due {
            figures.merge(self.figures.clone());
            add_worker_figures(&tx, &figures)?;
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![FIGURES_SEQ, newest],
            )?;
        }
        {
            let mut update = tx.prepare_cached(
                "UPDATE workers SET stale = stale + ?2, invalid = invalid + ?3 WHERE id = ?1",
            )?;
            for (id, stale, invalid) in &batch.refused {
                let (stale, invalid) = (i64::try_from(*stale)?, i64::try_from(*invalid)?);
                update.execute(params![id, stale, invalid])?;
            }
        }
        tx.commit().context("storing shares")?;
        self.stored = newest;
        if batch.figures_due {
            self.figures = WorkerDeltas::default();
        } else {
            self.figures.merge(figures);
        }
        Ok(results)
    }

    fn workers(&mut self, since: f64, limit: usize) -> anyhow::Result<Vec<WorkerRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT w.id, w.shares, w.stale, w.invalid, w.first_share, w.last_share, \
                    COALESCE((SELECT SUM(b.work) FROM share_work b \
                              WHERE b.id = w.id AND b.bucket >= ?2), 0) AS work \
             FROM workers w WHERE w.last_share > ?1 ORDER BY work DESC, w.id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![since, work_bucket(since), limit], |r| {
            Ok(WorkerRow {
                id: r.get(0)?,
                shares: r.get::<_, i64>(1)?.max(0).unsigned_abs(),
                stale: r.get::<_, i64>(2)?.max(0).unsigned_abs(),
                invalid: r.get::<_, i64>(3)?.max(0).unsigned_abs(),
                first_share: r.get(4)?,
                last_share: r.get(5)?,
                work: r.get(6)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>().context("reading the workers")
    }

    fn prune(&mut self, before: f64) -> anyhow::Result<()> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM shares WHERE ts < ?1", [before])?;
        tx.execute(
            "DELETE FROM shares WHERE seq <= (SELECT MAX(seq) FROM shares) - ?1",
            [MAX_KEPT_SHARES],
        )?;
        tx.execute("DELETE FROM share_work WHERE bucket < ?1", [work_bucket(before)])?;
        tx.commit().context("removing expired shares")?;
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // A clean stop: the connection closes next, folding the WAL into the main file.
        if self.running
            && let Err(e) = self.conn.execute("UPDATE meta SET value = 1 WHERE key = 'clean'", [])
        {
            tracing::warn!(error = %e, "could not record a clean stop in the database");
        }
    }
}

/// Creates a new chain (schema, genesis block made now, bookkeeping) as [`NEW_DB_FILE`] and
/// renames it to `path` once it is complete and on disk.
fn create(data_dir: &Path, path: &Path) -> anyhow::Result<()> {
    let tmp = data_dir.join(NEW_DB_FILE);
    for leftover in [tmp.clone(), sibling(&tmp, "-wal"), sibling(&tmp, "-shm")] {
        match std::fs::remove_file(&leftover) {
            Ok(()) => {
                tracing::info!(file = %leftover.display(), "removed an unfinished new database")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(cannot_write(&leftover, e)),
        }
    }
    let genesis = Block::genesis(crate::ledger::now());
    let body = serde_json::to_string(&genesis).context("serialising the genesis block")?;
    (|| -> rusqlite::Result<()> {
        let mut conn = Connection::open(&tmp)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.execute(
            "INSERT INTO blocks (idx, hash, difficulty, body) VALUES (1, ?1, NULL, ?2)",
            params![genesis.hash().to_hex(), body],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('format', ?1), ('blocks', 1), ('clean', 1)",
            [FORMAT],
        )?;
        tx.commit()?;
        // Closing the only connection checkpoints the WAL into the file and deletes it.
        conn.close().map_err(|(_, e)| e)
    })()
    .map_err(|e| open_error(&tmp, e))?;
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    sync(&tmp).map_err(|e| cannot_write(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| cannot_write(path, e))?;
    sync(data_dir).map_err(|e| cannot_write(data_dir, e))?;
    tracing::info!(database = %path.display(), "created a new chain");
    Ok(())
}
