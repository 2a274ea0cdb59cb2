//! A throwaway PostgreSQL for tests: `initdb` in a temp dir, `postgres` on 127.0.0.1 and a free
//! port, database `pool` owned by the trusted role `pool`; stopped and removed on drop.
//!
//! It finds `initdb`, `postgres` and `pg_ctl` on `PATH`, else in the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package; `scripts/setup` installs it).
//! PostgreSQL refuses to run as root, so as root (CI runs as root) the temp dir is handed to the
//! unprivileged user `nobody` and the server runs as that user through `setpriv`.
//!
//! [`server_or_skip`] returns `None`, saying why, when PostgreSQL cannot start here, unless
//! `REQUIRE_POSTGRES` is set (CI sets it), in which case it panics with the reason.
//!
//! The server runs with `fsync=off`: a committed row survives the server's crash ([`PgServer::kill`]
//! is a SIGKILL of the postmaster), not the machine's. Every method blocks (a few seconds at
//! most); from a `#[tokio::test]` whose in-process servers must keep running meanwhile, use
//! `flavor = "multi_thread"` and `tokio::task::block_in_place`. The sync `postgres::Client` runs
//! its own runtime, so use it from a plain `#[test]` or from `spawn_blocking`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

/// Guards against a hang only: how long a start waits for the server to accept connections.
const START_GUARD: Duration = Duration::from_secs(60);

/// The role, and the database, that [`PgServer::url`] names.
pub const ROLE: &str = "pool";

/// A running (or stopped) throwaway PostgreSQL server; dropping it stops it and removes its files.
pub struct PgServer {
    bin: PathBuf,
    port: u16,
    /// `(uid, gid)` the server runs as when this process is root.
    run_as: Option<(u32, u32)>,
    settings: Vec<String>,
    postmaster: Option<Child>,
    // Last: dropped (removed) after `Drop::drop` has stopped the server.
    dir: TempDir,
}

/// Starts a throwaway server, or, when PostgreSQL cannot start here, prints why and returns
/// `None` (the caller returns: the test skips).
///
/// # Panics
/// When it cannot start and `REQUIRE_POSTGRES` is set.
pub fn server_or_skip() -> Option<PgServer> {
    match PgServer::start() {
        Ok(pg) => Some(pg),
        Err(e) => {
            test_support::skip(
                "REQUIRE_POSTGRES",
                &format!("PostgreSQL cannot start here: {e:#} (scripts/setup installs it)"),
            );
            None
        }
    }
}

impl PgServer {
    /// Creates a cluster in a new temp dir, starts it on a free loopback port and creates the
    /// database `pool`.
    pub fn start() -> anyhow::Result<PgServer> {
        PgServer::start_with(&[])
    }

    /// [`PgServer::start`] with more server settings, each `name=value` (passed as `-c`), e.g.
    /// `max_connections=300`.
    pub fn start_with(settings: &[&str]) -> anyhow::Result<PgServer> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir().context("creating a temp dir")?;
        let run_as = if rustix::process::geteuid().is_root() {
            let (uid, gid) = unprivileged_user()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("chown {} to {uid}:{gid}", dir.path().display()))?;
            Some((uid, gid))
        } else {
            None
        };
        let mut pg = PgServer {
            bin,
            port: 0,
            run_as,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            postmaster: None,
            dir,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data_dir())
            // -N: no fsync of the new files, for speed; -A trust: no passwords on loopback.
            .args(["-A", "trust", "-U", ROLE, "-E", "UTF8", "--no-locale", "-N"])
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            let hint = match pg.run_as {
                Some((uid, _)) => format!(
                    " (as root it runs as uid {uid}, who must be able to reach {})",
                    pg.dir.path().display()
                ),
                None => String::new(),
            };
            bail!(
                "initdb failed ({}){hint}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A free port can be taken between choosing and binding it: try a few.
        for attempt in 1.. {
            pg.port = free_port()?;
            match pg.spawn_and_wait(Instant::now() + START_GUARD) {
                Ok(()) => break,
                Err(e) if attempt == 3 => return Err(e),
                Err(_) => {}
            }
        }
        pg.admin(&format!("CREATE DATABASE {ROLE}"))?;
        Ok(pg)
    }

    /// `postgres://pool@127.0.0.1:PORT/pool`.
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{ROLE}", self.port)
    }

    /// The server's loopback port (the same across [`PgServer::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server with a fast shutdown (clients disconnected, everything committed kept)
    /// and waits until it has exited.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.postmaster.take() else { return Ok(()) };
        let out = self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl stop");
        let stopped = matches!(&out, Ok(o) if o.status.success());
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => bail!(
                "pg_ctl stop failed ({}): {}; killed it",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => Err(e),
        }
    }

    /// Kills the postmaster with SIGKILL, as a crash; its other processes exit by themselves
    /// soon after (they watch the postmaster).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped or killed server again on the same files and port, waiting until it
    /// accepts connections (after a kill, until crash recovery is done).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.postmaster.is_some() {
            bail!("the server is running");
        }
        let deadline = Instant::now() + START_GUARD;
        // After a kill the old processes may hold the shared memory (or the port) for a moment;
        // the new postmaster then refuses to start: try again until the deadline.
        loop {
            match self.spawn_and_wait(deadline) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of PostgreSQL's programs, run as the unprivileged user when root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// Starts the postmaster and waits until it accepts connections; on failure it is not
    /// running and the error carries the log's tail.
    fn spawn_and_wait(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the server log")?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "fsync=off"]);
        for s in &self.settings {
            cmd.args(["-c", s]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cloning the log file")?)
            .stderr(log)
            .spawn()
            .context("spawning postgres")?;
        self.postmaster = Some(child);
        loop {
            let child = self.postmaster.as_mut().expect("just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.postmaster = None;
                bail!("postgres exited ({status}); its log ends:\n{}", self.log_tail(20));
            }
            let Err(last) = on_thread(connect_config(self.port, "postgres")) else { return Ok(()) };
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "postgres did not accept connections within {START_GUARD:?} ({last}); \
                     its log ends:\n{}",
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one statement in the `postgres` database.
    fn admin(&self, sql: &str) -> anyhow::Result<()> {
        let config = connect_config(self.port, "postgres");
        let sql = sql.to_owned();
        std::thread::spawn(move || -> Result<(), String> {
            let mut client = config.connect(postgres::NoTls).map_err(|e| e.to_string())?;
            client.batch_execute(&sql).map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| anyhow!("the admin thread panicked"))?
        .map_err(|e| anyhow!("{e}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.stop().is_err() {
            self.kill();
        }
    }
}

fn connect_config(port: u16, dbname: &str) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(ROLE)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(5));
    config
}

/// Tries one connection on a thread of its own: the sync client runs its own runtime, which
/// must not start inside a caller's tokio runtime.
fn on_thread(config: postgres::Config) -> Result<(), String> {
    std::thread::spawn(move || config.connect(postgres::NoTls).map(drop).map_err(|e| e.to_string()))
        .join()
        .unwrap_or_else(|_| Err("the connecting thread panicked".to_owned()))
}

/// The directory holding `initdb`, `postgres` and `pg_ctl`: on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let has_all = |d: &Path| ["initdb", "postgres", "pg_ctl"].iter().all(|p| d.join(p).is_file());
    if let Some(d) =
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).find(|d| has_all(d))
    {
        return Ok(d);
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').next()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_all(bin))
        .max_by_key(|(version, _)| *version);
    newest.map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!("initdb, postgres and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin")
    })
}

/// `nobody`'s uid and gid, from `/etc/passwd` (PostgreSQL's programs look the user up).
fn unprivileged_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"nobody"))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .ok_or_else(|| anyhow!("running as root, and no user `nobody` to run PostgreSQL as"))
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr().context("its address")?.port())
}

#[test]
fn a_throwaway_postgres_keeps_a_committed_row_across_a_kill_9() {
    let Some(mut pg) = server_or_skip() else { return };
    let url = pg.url();
    assert_eq!(url, format!("postgres://pool@127.0.0.1:{}/pool", pg.port()));
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    client.batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (42)").expect("write");

    pg.kill();
    pg.start_again().expect("starts again after the crash");
    // It was a real crash: the new server starts only once every old process has gone, the
    // backend of this connection included.
    assert!(client.simple_query("SELECT 1").is_err(), "the old connection is dead");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("reconnect");
    let n: i32 = client.query_one("SELECT n FROM t", &[]).expect("read").get(0);
    assert_eq!(n, 42);

    client.batch_execute("INSERT INTO t VALUES (43)").expect("write");
    pg.stop().expect("stops");
    pg.start_again().expect("starts again after a stop");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("reconnect");
    let count: i64 = client.query_one("SELECT count(*) FROM t", &[]).expect("read").get(0);
    assert_eq!(count, 2);
}
