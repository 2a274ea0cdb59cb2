//! PostgreSQL [`Storage`] (`--database postgres://…`): any number of pool-server processes
//! (frontends) over one database are one pool.
//!
//! - **One winner per height.** Every write first locks the single row of `pool_head` (the
//!   stored chain's height) and goes ahead only if the height is the one the frontend judged
//!   against; the block goes in under `pool_blocks`' primary key on its index. So of any number
//!   of frontends forging the same height, one stores its block and the others are told
//!   [`Forged::Lost`]: they catch up and answer "stale", naming the winner from the stored row.
//! - **Pending transactions** live in `pool_pending`; a forge reads them and deletes the ones
//!   its block took in the same transaction, so each is mined exactly once cluster-wide.
//! - **New blocks reach every frontend**: the forging transaction sends
//!   `NOTIFY pool_blocks, '<height>'`; each frontend runs a [`listen`] thread that catches up by
//!   height on every notification and after every (re)connection, so a frontend whose
//!   connection dropped misses no block.
//! - **Migrations**: `pool_schema` holds the layout's version; a starting frontend applies the
//!   missing steps of [`MIGRATIONS`] under an advisory lock, so frontends starting together
//!   do it once, and refuses a database laid out by a newer server.
//! - **Difficulty and payout**: the first frontend records its `--difficulty` and `--payout` in
//!   `pool_head`; a frontend started with another one refuses to start, naming both (every
//!   frontend of a pool judges and pays alike).
//! - **Outages**: a lost or unreachable database is [`Unavailable`] (answered 503 / `error`
//!   frame); the next operation reconnects by itself.

use std::time::{Duration, Instant};

use anyhow::Context;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, IsolationLevel, NoTls};
use protocol::share::share_work;
use protocol::{Block, Difficulty, Transaction};
use tokio_util::sync::CancellationToken;

use crate::payout::Payout;
use crate::storage::{
    Changes, CheckPending, FinderShare, Forged, Loaded, MAX_CHANGED_BLOCKS, MAX_KEPT_SHARES,
    MakeBlock, Queued, ShareBatch, ShareRow, ShareStore, ShareStored, Storage, StoredBlock,
    Unavailable, WORK_BUCKET_SECONDS, WorkerRow, decode_block, proof_to_i64, read_window,
    work_bucket,
};

/// The channel new blocks are announced on; the payload is the new height.
pub const CHANNEL: &str = "pool_blocks";
/// How long connecting to the database may take before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a statement may run, and the longest a write waits for another frontend's
/// lock on the chain's head, before it fails with a 503 (`statement_timeout`,
/// `lock_timeout`); a session idle inside a transaction that long is ended by the database
/// (`idle_in_transaction_session_timeout`), so a frozen frontend cannot hold the head.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection unused for this long is checked (one round trip) before it is used again, so
/// the first request after a database restart does not fail on a dead connection.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);
/// How often the listener looks at the shutdown signal while waiting for notifications.
const LISTEN_POLL: Duration = Duration::from_millis(250);
/// The most time between two attempts of the listener to reconnect.
const LISTEN_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The advisory lock key that serialises migrations ("poolserv").
const MIGRATION_LOCK: i64 = 0x706f_6f6c_7365_7276;

/// The layout's steps; step `n` (from 1) takes a database from version `n - 1` to `n`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the chain, the pending transactions, and the head row every write locks.
    "CREATE TABLE pool_blocks (
         idx        bigint  PRIMARY KEY CHECK (idx >= 1),
         hash       text    NOT NULL,
         difficulty integer,
         body       text    NOT NULL,
         frontend   text    NOT NULL,
         stored_at  timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE pool_pending (
         seq       bigserial PRIMARY KEY,
         sender    text   NOT NULL,
         recipient text   NOT NULL,
         amount    bigint NOT NULL CHECK (amount >= 0)
     );
     CREATE TABLE pool_head (
         only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
         height     bigint  NOT NULL,
         difficulty integer NOT NULL
     );",
    // 2: shares (issue 12) and each miner's share counts.
    "CREATE TABLE pool_shares (
         seq   bigserial PRIMARY KEY,
         block bigint  NOT NULL,
         proof bigint  NOT NULL,
         id    text    NOT NULL,
         bits  integer NOT NULL,
         work  double precision NOT NULL,
         ts    double precision NOT NULL,
         UNIQUE (block, proof)
     );
     CREATE INDEX pool_shares_ts ON pool_shares (ts);
     CREATE INDEX pool_shares_id_ts ON pool_shares (id, ts);
     CREATE TABLE pool_workers (
         id          text   PRIMARY KEY,
         shares      bigint NOT NULL,
         stale       bigint NOT NULL,
         invalid     bigint NOT NULL,
         first_share double precision NOT NULL,
         last_share  double precision NOT NULL
     );",
    // 3: the pool's payout scheme, which every frontend must share (NULL: not recorded yet).
    "ALTER TABLE pool_head ADD COLUMN payout text;",
    // 4: share work per miner and second (the hashrate window reads these, not every share);
    // the payout recorded as a stable code (`Payout::code`), not as display text: a PPLNS pool
    // recorded by an older server (a window of N shares by count) is recorded again by the
    // first frontend of this version (the window is now one of work).
    "CREATE TABLE pool_share_work (
         id     text   NOT NULL,
         bucket bigint NOT NULL,
         work   double precision NOT NULL,
         PRIMARY KEY (id, bucket)
     );
     CREATE INDEX pool_share_work_bucket ON pool_share_work (bucket);
     DROP INDEX IF EXISTS pool_shares_id_ts;
     UPDATE pool_head SET payout = NULL WHERE payout IS DISTINCT FROM 'solo';",
];

/// Rows of the PPLNS window read from the database at a time.
const WINDOW_CHUNK: i32 = 1024;

/// The layout version this server writes.
pub fn schema_version() -> i32 {
    MIGRATIONS.len() as i32
}

/// Parses `--database` and sets this server's connection options.
///
/// # Errors
/// When `url` is not a PostgreSQL connection string.
pub fn config(url: &str, frontend: &str) -> anyhow::Result<postgres::Config> {
    let mut config: postgres::Config = url.parse().with_context(|| {
        "--database must be a PostgreSQL URL such as postgres://USER@HOST:PORT/DB".to_owned()
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let ms = STATEMENT_TIMEOUT.as_millis();
    let ours = format!(
        "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={} \
         -c client_min_messages=warning",
        ms * 2
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(&options);
    config.application_name(&format!("pool-server {frontend}"));
    Ok(config)
}

/// Names the database without its password: "PostgreSQL database DB on HOST:PORT".
pub fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    format!("PostgreSQL database {db} on {host}:{port}")
}

/// A connection to the database that reconnects by itself (see [`Conn::run`]).
struct Conn {
    config: postgres::Config,
    client: Option<Client>,
    last_used: Instant,
    name: String,
}

/// One frontend's connection to the shared database.
pub struct PgStore {
    conn: Conn,
    frontend: String,
}

/// The share writer's own connection to the shared database.
pub struct PgShares {
    conn: Conn,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("database", &self.conn.name).finish_non_exhaustive()
    }
}

/// A failure inside one database operation.
enum Fail {
    Db(postgres::Error),
    Other(anyhow::Error),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Fail::Other(e)
    }
}

/// Whether `e` means the database cannot be used right now (as opposed to a wrong query or
/// data): the connection is gone, the server is starting or stopping, or a timeout hit.
fn is_unavailable(e: &postgres::Error) -> bool {
    let Some(code) = e.code() else { return true };
    code.code().starts_with("08")
        || code.code().starts_with("53")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        ]
        .contains(code)
}

/// Whether `e` means the connection itself is gone (rather than the database refusing work).
fn is_connection_lost(e: &postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            code.code().starts_with("08")
                || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN].contains(code)
        }
    }
}

fn to_i64(n: u64, what: &str) -> anyhow::Result<i64> {
    i64::try_from(n).with_context(|| format!("{what} {n} is beyond PostgreSQL's bigint"))
}

fn read_pending(tx: &mut postgres::Transaction<'_>) -> Result<(Vec<Transaction>, i64), Fail> {
    let rows =
        tx.query("SELECT seq, sender, recipient, amount FROM pool_pending ORDER BY seq", &[])?;
    let mut pending = Vec::with_capacity(rows.len());
    let mut last_seq = 0;
    for row in rows {
        last_seq = row.try_get(0)?;
        let amount: i64 = row.try_get(3)?;
        let amount = u64::try_from(amount)
            .with_context(|| format!("pending transaction {last_seq} has amount {amount}"))?;
        pending.push(Transaction { sender: row.try_get(1)?, recipient: row.try_get(2)?, amount });
    }
    Ok((pending, last_seq))
}

fn read_blocks(
    tx: &mut postgres::Transaction<'_>,
    after: i64,
    limit: Option<i64>,
) -> Result<Vec<StoredBlock>, Fail> {
    let rows = tx.query(
        "SELECT idx, hash, difficulty, body FROM pool_blocks WHERE idx > $1 ORDER BY idx \
         LIMIT $2",
        &[&after, &limit],
    )?;
    let mut blocks = Vec::with_capacity(rows.len());
    for row in rows {
        let difficulty: Option<i32> = row.try_get(2)?;
        let body: String = row.try_get(3)?;
        blocks.push(decode_block(
            row.try_get(0)?,
            row.try_get(1)?,
            difficulty.map(i64::from),
            &body,
        )?);
    }
    Ok(blocks)
}

/// Stores `shares` in the open transaction, each unless its proof was already stored for its
/// block (on any frontend), and adds the stored ones to their miners' counts and work: one
/// statement, whatever the number of shares (a multi-row insert, whose new rows feed the two
/// upserts, in id order so that frontends writing at once never deadlock). Returns what became of
/// each share.
fn insert_shares(
    tx: &mut postgres::Transaction<'_>,
    shares: &[ShareRow],
) -> Result<Vec<ShareStored>, Fail> {
    if shares.is_empty() {
        return Ok(Vec::new());
    }
    let mut blocks = Vec::with_capacity(shares.len());
    let mut proofs = Vec::with_capacity(shares.len());
    for share in shares {
        blocks.push(to_i64(share.block, "block index")?);
        proofs.push(proof_to_i64(share.proof));
    }
    let ids: Vec<&str> = shares.iter().map(|s| s.id.as_str()).collect();
    let bits: Vec<i32> = shares.iter().map(|s| i32::from(s.bits)).collect();
    let work: Vec<f64> = shares.iter().map(|s| share_work(s.bits)).collect();
    let ts: Vec<f64> = shares.iter().map(|s| s.ts).collect();
    let rows = tx.query(
        "WITH ins AS ( \
             INSERT INTO pool_shares (block, proof, id, bits, work, ts) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::integer[], \
                                  $5::double precision[], $6::double precision[]) \
             ON CONFLICT (block, proof) DO NOTHING \
             RETURNING block, proof, id, work, ts), \
         counts AS ( \
             INSERT INTO pool_workers (id, shares, stale, invalid, first_share, last_share) \
             SELECT id, count(*), 0, 0, min(ts), max(ts) FROM ins GROUP BY id ORDER BY id \
             ON CONFLICT (id) DO UPDATE \
             SET shares = pool_workers.shares + excluded.shares, \
                 first_share = LEAST(pool_workers.first_share, excluded.first_share), \
                 last_share = GREATEST(pool_workers.last_share, excluded.last_share)), \
         buckets AS ( \
             INSERT INTO pool_share_work (id, bucket, work) \
             SELECT id, floor(ts / $7)::bigint, sum(work) FROM ins GROUP BY 1, 2 ORDER BY 1, 2 \
             ON CONFLICT (id, bucket) DO UPDATE \
             SET work = pool_share_work.work + excluded.work) \
         SELECT block, proof FROM ins",
        &[&blocks, &proofs, &ids, &bits, &work, &ts, &WORK_BUCKET_SECONDS],
    )?;
    let mut inserted = std::collections::HashSet::with_capacity(rows.len());
    for row in rows {
        inserted.insert((row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?));
    }
    // A proof twice in one batch is stored once: the first is it, the other a duplicate.
    Ok(blocks
        .iter()
        .zip(&proofs)
        .map(
            |(b, p)| {
                if inserted.remove(&(*b, *p)) {
                    ShareStored::Stored
                } else {
                    ShareStored::Duplicate
                }
            },
        )
        .collect())
}

/// Reads the PPLNS window (see [`read_window`]) a chunk of rows at a time, so a forge reads
/// only the rows the window needs.
fn window(tx: &mut postgres::Transaction<'_>, work: u128) -> Result<Vec<(String, u8)>, Fail> {
    if work == 0 {
        return Ok(Vec::new());
    }
    let portal = tx.bind("SELECT id, bits FROM pool_shares ORDER BY seq DESC", &[])?;
    let mut chunk = std::collections::VecDeque::new();
    let mut done = false;
    let rows = std::iter::from_fn(|| {
        loop {
            if let Some(row) = chunk.pop_front() {
                return Some(Ok(row));
            }
            if done {
                return None;
            }
            match tx.query_portal(&portal, WINDOW_CHUNK) {
                Ok(rows) => {
                    done = rows.len() < WINDOW_CHUNK as usize;
                    for row in rows {
                        let parsed = row.try_get::<_, String>(0).and_then(|id| {
                            row.try_get::<_, i32>(1).map(|b| (id, u8::try_from(b).unwrap_or(0)))
                        });
                        match parsed {
                            Ok(r) => chunk.push_back(r),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    });
    Ok(read_window(rows, work)?)
}

/// Locks the head row and returns the stored chain's height.
fn lock_head(tx: &mut postgres::Transaction<'_>) -> Result<i64, Fail> {
    Ok(tx.query_one("SELECT height FROM pool_head FOR UPDATE", &[])?.try_get(0)?)
}

impl PgStore {
    /// Connects, creates or migrates the layout, and creates the genesis block if the database
    /// holds no chain yet. `frontend` names this server in the database (`pool_blocks.frontend`,
    /// the connection's `application_name`).
    ///
    /// # Errors
    /// When the database cannot be reached, was laid out by a newer server, or its pool mines
    /// at another difficulty.
    pub fn open(
        url: &str,
        difficulty: Difficulty,
        payout: Payout,
        frontend: &str,
    ) -> anyhow::Result<Self> {
        let config = config(url, frontend)?;
        let name = describe(&config);
        let mut client =
            config.connect(NoTls).with_context(|| format!("cannot connect to {name}"))?;
        migrate(&mut client, &name, difficulty, payout, frontend)?;
        let conn = Conn { config, client: Some(client), last_used: Instant::now(), name };
        Ok(PgStore { conn, frontend: frontend.to_owned() })
    }
}

impl Conn {
    /// Runs `op` on a live connection (reconnecting when needed). A failure that means the
    /// database cannot be used becomes [`Unavailable`] and drops the connection. When a
    /// connection kept from before turns out to be dead (the database restarted), `op` runs
    /// once more on a new one, unless it had started to commit (it sets its `bool` argument
    /// before committing a write), whose outcome is then unknown.
    fn run<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Client, &mut bool) -> Result<T, Fail>,
    ) -> anyhow::Result<T> {
        for attempt in 0..2 {
            if let Some(client) = &mut self.client
                && (client.is_closed()
                    || (self.last_used.elapsed() > CHECK_IDLE_AFTER
                        && client.is_valid(CONNECT_TIMEOUT).is_err()))
            {
                self.client = None;
            }
            let reused = self.client.is_some();
            if self.client.is_none() {
                match self.config.connect(NoTls) {
                    Ok(c) => self.client = Some(c),
                    Err(e) => return Err(self.unavailable(what, &e)),
                }
            }
            let Some(client) = &mut self.client else {
                anyhow::bail!("{what}: no connection to {}", self.name);
            };
            let mut committing = false;
            let result = op(client, &mut committing);
            self.last_used = Instant::now();
            match result {
                Ok(v) => return Ok(v),
                Err(Fail::Db(e)) if is_unavailable(&e) => {
                    self.client = None;
                    if attempt == 0 && reused && !committing && is_connection_lost(&e) {
                        tracing::debug!(database = %self.name, error = %e, "{what}: reconnecting");
                        continue;
                    }
                    return Err(self.unavailable(what, &e));
                }
                Err(Fail::Db(e)) => {
                    return Err(anyhow::Error::new(e).context(format!("{what} in {}", self.name)));
                }
                Err(Fail::Other(e)) => return Err(e.context(format!("{what} in {}", self.name))),
            }
        }
        anyhow::bail!("{what}: no connection to {}", self.name)
    }

    fn unavailable(&self, what: &str, e: &postgres::Error) -> anyhow::Error {
        tracing::warn!(database = %self.name, error = %e, "{what}: the database is unavailable");
        anyhow::Error::new(Unavailable(format!(
            "the pool's database is unavailable ({what} failed); try again shortly"
        )))
    }
}

fn migrate(
    client: &mut Client,
    name: &str,
    difficulty: Difficulty,
    payout: Payout,
    frontend: &str,
) -> anyhow::Result<()> {
    let latest = schema_version();
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS pool_schema (version integer NOT NULL)")?;
    let version: i32 = match tx.query_opt("SELECT version FROM pool_schema", &[])? {
        Some(row) => row.try_get(0)?,
        None => 0,
    };
    if version > latest {
        anyhow::bail!(
            "{name} was laid out by a newer pool-server (schema version {version}; this one \
             knows up to {latest}); run the newer server"
        );
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql)
            .with_context(|| format!("migrating {name} to version {}", step + 1))?;
    }
    if version == 0 {
        tx.execute("INSERT INTO pool_schema (version) VALUES ($1)", &[&latest])?;
    } else if version < latest {
        tx.execute("UPDATE pool_schema SET version = $1", &[&latest])?;
        tracing::info!(database = %name, from = version, to = latest, "migrated the layout");
    }
    let zeros = i32::from(difficulty.zeros());
    match tx.query_opt("SELECT difficulty FROM pool_head", &[])? {
        Some(row) => {
            let theirs: i32 = row.try_get(0)?;
            if theirs != zeros {
                anyhow::bail!(
                    "the pool in {name} mines at difficulty {theirs}, and this server was \
                     started with --difficulty {zeros}: every frontend of one pool judges at \
                     the same difficulty; start it with --difficulty {theirs}"
                );
            }
            let recorded: Option<String> =
                tx.query_one("SELECT payout FROM pool_head", &[])?.try_get(0)?;
            match recorded {
                Some(theirs) if theirs != payout.code() => {
                    let theirs = Payout::from_code(&theirs)
                        .map_or_else(|| format!("by {theirs:?}"), |p| p.to_string());
                    anyhow::bail!(
                        "the pool in {name} pays {theirs}, and this server was started to pay \
                         {payout}: every frontend of one pool pays the same way; start it with \
                         the pool's --payout (and --pplns-window)"
                    )
                }
                Some(_) => {}
                None => {
                    tx.execute("UPDATE pool_head SET payout = $1", &[&payout.code()])?;
                }
            }
        }
        None => {
            let genesis = Block::genesis(crate::ledger::now());
            let body = serde_json::to_string(&genesis).context("serialising the genesis block")?;
            tx.execute(
                "INSERT INTO pool_blocks (idx, hash, difficulty, body, frontend) \
                 VALUES (1, $1, NULL, $2, $3)",
                &[&genesis.hash().to_hex(), &body, &frontend],
            )?;
            tx.execute(
                "INSERT INTO pool_head (height, difficulty, payout) VALUES (1, $1, $2)",
                &[&zeros, &payout.code()],
            )?;
            tracing::info!(database = %name, difficulty = zeros, "created a new chain");
        }
    }
    tx.commit().with_context(|| format!("preparing {name}"))?;
    Ok(())
}

impl Storage for PgStore {
    fn describe(&self) -> String {
        self.conn.name.clone()
    }

    fn load(&mut self) -> anyhow::Result<Loaded> {
        self.conn.run("reading the chain", |client, _| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let height: i64 = tx.query_one("SELECT height FROM pool_head", &[])?.try_get(0)?;
            let blocks = read_blocks(&mut tx, 0, None)?;
            if blocks.len() as u64 != height as u64
                || blocks.last().map(|b| b.block.index) != Some(height as u64)
            {
                return Err(Fail::Other(anyhow::anyhow!(
                    "it holds {} blocks but its head says {height}: blocks were removed or \
                     added outside pool-server",
                    blocks.len()
                )));
            }
            let (pending, _) = read_pending(&mut tx)?;
            tx.commit()?;
            Ok(Loaded { blocks, pending })
        })
    }

    fn mark_running(&mut self) -> anyhow::Result<()> {
        // Nothing to record: PostgreSQL keeps its own crash safety, and frontends come and go.
        Ok(())
    }

    fn changes(&mut self, tip: u64) -> anyhow::Result<Option<Changes>> {
        let tip = to_i64(tip, "height")?;
        self.conn.run("catching up", |client, _| {
            let height: i64 = client.query_one("SELECT height FROM pool_head", &[])?.try_get(0)?;
            if height == tip {
                return Ok(None);
            }
            if height < tip {
                return Err(Fail::Other(anyhow::anyhow!(
                    "the stored chain has {height} blocks, fewer than the {tip} this server \
                     holds: the database was replaced or rolled back; restart the server"
                )));
            }
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let blocks = read_blocks(&mut tx, tip, Some(MAX_CHANGED_BLOCKS as i64))?;
            let (pending, _) = read_pending(&mut tx)?;
            tx.commit()?;
            Ok(Some(Changes { blocks, pending }))
        })
    }

    fn forge(
        &mut self,
        tip: u64,
        difficulty: Difficulty,
        work: u128,
        finder: Option<&FinderShare>,
        make: &mut MakeBlock<'_>,
    ) -> anyhow::Result<Forged> {
        let tip = to_i64(tip, "height")?;
        let zeros = i32::from(difficulty.zeros());
        let frontend = self.frontend.clone();
        self.conn.run("storing a block", |client, committing| {
            let mut tx = client.transaction()?;
            if lock_head(&mut tx)? != tip {
                return Ok(Forged::Lost);
            }
            let (pending, last_seq) = read_pending(&mut tx)?;
            let shares = window(&mut tx, work)?;
            let block = make(Some(&pending), &shares);
            let idx = to_i64(block.index, "block index")?;
            let body = serde_json::to_string(&block).context("serialising a block")?;
            let inserted = tx.execute(
                "INSERT INTO pool_blocks (idx, hash, difficulty, body, frontend) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idx) DO NOTHING",
                &[&idx, &block.hash().to_hex(), &zeros, &body, &frontend],
            )?;
            if inserted == 0 {
                return Ok(Forged::Lost);
            }
            if !pending.is_empty() {
                tx.execute("DELETE FROM pool_pending WHERE seq <= $1", &[&last_seq])?;
            }
            if let Some(finder) = finder {
                // A winning proof is new for its block: nothing to count twice.
                let row = finder.row(&block);
                insert_shares(&mut tx, std::slice::from_ref(&row))?;
            }
            tx.execute("UPDATE pool_head SET height = $1", &[&idx])?;
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &idx.to_string()])?;
            *committing = true;
            tx.commit()?;
            Ok(Forged::Stored(block))
        })
    }

    fn add_pending(
        &mut self,
        tip: u64,
        t: &Transaction,
        check: &mut CheckPending<'_>,
    ) -> anyhow::Result<Queued> {
        let tip = to_i64(tip, "height")?;
        let amount = to_i64(t.amount, "amount")?;
        self.conn.run("storing a pending transaction", |client, committing| {
            let mut tx = client.transaction()?;
            if lock_head(&mut tx)? != tip {
                return Ok(Queued::Behind);
            }
            let (pending, _) = read_pending(&mut tx)?;
            if let Err(refusal) = check(Some(&pending)) {
                return Ok(Queued::Refused(refusal));
            }
            tx.execute(
                "INSERT INTO pool_pending (sender, recipient, amount) VALUES ($1, $2, $3)",
                &[&t.sender, &t.recipient, &amount],
            )?;
            *committing = true;
            tx.commit()?;
            Ok(Queued::Stored)
        })
    }

    fn share_store(&self) -> anyhow::Result<Box<dyn ShareStore>> {
        let conn = Conn {
            config: self.conn.config.clone(),
            client: None,
            last_used: Instant::now(),
            name: self.conn.name.clone(),
        };
        Ok(Box::new(PgShares { conn }))
    }
}

impl ShareStore for PgShares {
    fn write(&mut self, batch: &ShareBatch) -> anyhow::Result<Vec<ShareStored>> {
        let mut refused: Vec<&(String, u64, u64)> = batch.refused.iter().collect();
        refused.sort_by(|a, b| a.0.cmp(&b.0));
        self.conn.run("storing shares", |client, committing| {
            let mut tx = client.transaction()?;
            // Frontends come and go: each batch stores its own figures (in the same statement),
            // so none waits in a frontend's memory.
            let results = insert_shares(&mut tx, &batch.shares)?;
            if !refused.is_empty() {
                let ids: Vec<&str> = refused.iter().map(|r| r.0.as_str()).collect();
                let mut stale = Vec::with_capacity(refused.len());
                let mut invalid = Vec::with_capacity(refused.len());
                for (_, s, i) in &refused {
                    stale.push(to_i64(*s, "a count")?);
                    invalid.push(to_i64(*i, "a count")?);
                }
                tx.execute(
                    "UPDATE pool_workers w SET stale = w.stale + t.s, invalid = w.invalid + t.i \
                     FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS t(id, s, i) \
                     WHERE w.id = t.id",
                    &[&ids, &stale, &invalid],
                )?;
            }
            *committing = true;
            tx.commit()?;
            Ok(results)
        })
    }

    fn workers(&mut self, since: f64, limit: usize) -> anyhow::Result<Vec<WorkerRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let bucket = work_bucket(since);
        self.conn.run("reading the workers", |client, _| {
            let rows = client.query(
                "SELECT w.id, w.shares, w.stale, w.invalid, w.first_share, w.last_share, \
                        COALESCE((SELECT SUM(b.work) FROM pool_share_work b \
                                  WHERE b.id = w.id AND b.bucket >= $2), 0) AS work \
                 FROM pool_workers w WHERE w.last_share > $1 \
                 ORDER BY work DESC, w.id LIMIT $3",
                &[&since, &bucket, &limit],
            )?;
            let mut workers = Vec::with_capacity(rows.len());
            for r in rows {
                workers.push(WorkerRow {
                    id: r.try_get(0)?,
                    shares: to_u64(r.try_get(1)?),
                    stale: to_u64(r.try_get(2)?),
                    invalid: to_u64(r.try_get(3)?),
                    first_share: r.try_get(4)?,
                    last_share: r.try_get(5)?,
                    work: r.try_get(6)?,
                });
            }
            Ok(workers)
        })
    }

    fn prune(&mut self, before: f64) -> anyhow::Result<()> {
        let bucket = work_bucket(before);
        self.conn.run("removing expired shares", |client, _| {
            client.execute("DELETE FROM pool_shares WHERE ts < $1", &[&before])?;
            client.execute(
                "DELETE FROM pool_shares WHERE seq <= (SELECT MAX(seq) FROM pool_shares) - $1",
                &[&MAX_KEPT_SHARES],
            )?;
            client.execute("DELETE FROM pool_share_work WHERE bucket < $1", &[&bucket])?;
            Ok(())
        })
    }
}

fn to_u64(n: i64) -> u64 {
    n.max(0).unsigned_abs()
}

/// Starts the thread that listens for new blocks on [`CHANNEL`] and calls `catch_up` on every
/// notification and after every (re)connection, until `stop` is cancelled; a `catch_up` that
/// fails (returns false) is tried again every [`LISTEN_POLL`] until it succeeds. A dropped
/// connection is retried with a back-off of up to [`LISTEN_MAX_BACKOFF`].
///
/// # Errors
/// When the thread cannot be started.
pub fn listen(
    config: postgres::Config,
    name: String,
    stop: CancellationToken,
    catch_up: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("pg-listen".to_owned()).spawn(move || {
        let mut backoff = Duration::from_millis(100);
        let mut warned = false;
        while !stop.is_cancelled() {
            let mut client = match config
                .connect(NoTls)
                .and_then(|mut c| c.batch_execute(&format!("LISTEN {CHANNEL}")).map(|()| c))
            {
                Ok(c) => c,
                Err(e) => {
                    if !warned {
                        tracing::warn!(database = %name, error = %e, "cannot listen for new blocks; retrying");
                        warned = true;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(LISTEN_MAX_BACKOFF);
                    continue;
                }
            };
            if warned {
                tracing::info!(database = %name, "listening for new blocks again");
            }
            warned = false;
            backoff = Duration::from_millis(100);
            // Blocks stored while this connection was down (or before it was first made).
            let mut behind = !catch_up();
            while !stop.is_cancelled() {
                let next = client.notifications().timeout_iter(LISTEN_POLL).next();
                let alive = match next {
                    Ok(Some(_)) => {
                        // One catch-up answers every notification already here.
                        let mut queued = client.notifications();
                        let mut queued = queued.iter();
                        while let Ok(Some(_)) = queued.next() {}
                        behind = !catch_up();
                        true
                    }
                    // A timeout, or a connection that closed.
                    Ok(None) => {
                        if behind {
                            behind = !catch_up();
                        }
                        !client.is_closed()
                    }
                    Err(_) => false,
                };
                if !alive {
                    tracing::warn!(database = %name, "lost the connection listening for new blocks; reconnecting");
                    warned = true;
                    break;
                }
            }
        }
    })
}
