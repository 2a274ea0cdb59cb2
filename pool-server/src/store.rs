//! Durable storage of the chain and the pending transactions in one SQLite file.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so once [`Store::append_block`]
//! returns, the block survives `kill -9` and power loss. Each block row keeps the block's JSON,
//! its hash and the difficulty its proof was checked against, so a restart with another
//! `--difficulty` still validates old blocks. This module only reads and writes rows; the chain
//! rules (what makes a stored chain valid) live in `chain`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::{Block, Difficulty, Transaction};
use rusqlite::{Connection, OptionalExtension, params};

/// The database file's name inside `--data-dir`.
pub const DB_FILE: &str = "chain.sqlite3";

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

/// The open database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database under `data_dir`.
    ///
    /// # Errors
    /// When the directory cannot be created or the file is not a usable SQLite database.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        let store = Store { conn, path };
        store.init().with_context(|| {
            format!(
                "database {} is unreadable or corrupt; move it away to start a new chain",
                store.path.display()
            )
        })?;
        Ok(store)
    }

    fn init(&self) -> rusqlite::Result<()> {
        // WAL + FULL: a commit is on disk before we acknowledge a block (the durability promise).
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        // A truncated or scribbled file can still open; the integrity check reads every page.
        let check: String = self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("integrity check failed: {check}")),
            ));
        }
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS blocks (
                 idx        INTEGER PRIMARY KEY,
                 hash       TEXT    NOT NULL,
                 difficulty INTEGER,
                 body       TEXT    NOT NULL
             );
             CREATE TABLE IF NOT EXISTS pending (
                 seq       INTEGER PRIMARY KEY AUTOINCREMENT,
                 sender    TEXT    NOT NULL,
                 recipient TEXT    NOT NULL,
                 amount    INTEGER NOT NULL
             );",
        )
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
            let block: Block = serde_json::from_str(&body)
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
            blocks.push(StoredBlock { block, hash, difficulty });
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

    /// Returns whether any block is stored yet.
    ///
    /// # Errors
    /// When the query fails.
    pub fn has_blocks(&self) -> anyhow::Result<bool> {
        let one: Option<i64> =
            self.conn.query_row("SELECT idx FROM blocks LIMIT 1", [], |r| r.get(0)).optional()?;
        Ok(one.is_some())
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
        let body = serde_json::to_string(block).context("serialising a block")?;
        let idx = i64::try_from(block.index).context("block index beyond SQLite's range")?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO blocks (idx, hash, difficulty, body) VALUES (?1, ?2, ?3, ?4)",
            params![idx, block.hash().to_hex(), difficulty.map(|d| d.zeros()), body],
        )?;
        tx.execute("DELETE FROM pending", [])?;
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
