//! What the benches share about processes: the machine they run on, the CPU time of a process
//! (and of PostgreSQL with its children) from `/proc`, and a `pool-server` child process.

// Each bench uses a part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

// --- Machine and CPU time -----------------------------------------------------------------------

/// Prints the CPU model, the flags that matter to the miners' kernels, and the load average.
pub fn print_machine(when: &str) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map_or("?", |(_, v)| v.trim())
    };
    let flags: Vec<&str> = field("flags").split_whitespace().collect();
    let has = |f: &str| format!("{f} {}", if flags.contains(&f) { "yes" } else { "no" });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    if when == "start" {
        println!(
            "machine: {} × {}; {}, {}, {}",
            std::fs::read_to_string("/sys/devices/system/cpu/online")
                .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned()),
            field("model name"),
            has("sha_ni"),
            has("avx2"),
            has("avx512f")
        );
    }
    println!("load average at the {when}: {load}");
}

/// `/proc/PID/stat` counts CPU time in clock ticks of 1/100 s (`USER_HZ`, fixed on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time, in clock ticks, of the servers in a run, of PostgreSQL and of the bench.
#[derive(Default)]
pub struct Cpu {
    pub servers: u64,
    pub postgres: Option<u64>,
    pub bench: u64,
}

impl Cpu {
    pub fn read(servers: &[Server], pg: Option<u32>) -> anyhow::Result<Cpu> {
        let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
        Cpu::of_pids(&pids, pg)
    }

    /// As [`Cpu::read`], for the server processes `pids` (which need not be `Server`s).
    pub fn of_pids(pids: &[u32], pg: Option<u32>) -> anyhow::Result<Cpu> {
        let mut servers = 0;
        for pid in pids {
            servers += stat_fields(&pid.to_string())?.0;
        }
        Ok(Cpu {
            servers,
            postgres: pg.map(postgres_ticks).transpose()?,
            bench: stat_fields("self")?.0,
        })
    }

    pub fn since(&self, start: &Cpu) -> Cpu {
        Cpu {
            servers: self.servers.saturating_sub(start.servers),
            postgres: self.postgres.zip(start.postgres).map(|(e, s)| e.saturating_sub(s)),
            bench: self.bench.saturating_sub(start.bench),
        }
    }

    /// "CPU s: servers …, PostgreSQL …, bench …; per <unit>: …".
    pub fn describe(&self, units: u64, unit: &str) -> String {
        let s = |t: u64| t as f64 / TICKS_PER_SECOND;
        let per = |t: u64| t as f64 * 1e6 / TICKS_PER_SECOND / units.max(1) as f64;
        let pg = self
            .postgres
            .map_or_else(String::new, |t| format!(", PostgreSQL {:.1} s ({:.0} µs)", s(t), per(t)));
        format!(
            "CPU (per {unit}): servers {:.1} s ({:.0} µs){pg}, bench {:.1} s ({:.0} µs)",
            s(self.servers),
            per(self.servers),
            s(self.bench),
            per(self.bench)
        )
    }
}

/// (user + system CPU ticks, parent PID, ticks of waited-for children) of a process.
pub fn stat_fields(pid: &str) -> anyhow::Result<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces): the state is
    // the 3rd field, the parent the 4th, utime and stime the 14th and 15th, cutime and cstime
    // the 16th and 17th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let own = field(14).context("no utime")? + field(15).context("no stime")?;
    let children = field(16).context("no cutime")? + field(17).context("no cstime")?;
    Ok((own, field(4).context("no ppid")?, children))
}

/// CPU ticks of PostgreSQL: the postmaster, its live children (backends, writers) and the
/// children it has waited for.
pub fn postgres_ticks(postmaster: u32) -> anyhow::Result<u64> {
    let (own, _, exited) = stat_fields(&postmaster.to_string())?;
    let mut total = own + exited;
    for entry in std::fs::read_dir("/proc").context("listing /proc")?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        // A process may end between the listing and the read.
        if let Ok((ticks, parent, _)) = stat_fields(pid)
            && parent == u64::from(postmaster)
        {
            total += ticks;
        }
    }
    Ok(total)
}

/// The CPUs a process may run on, as `/proc/PID/status` lists them.
pub fn cpus_allowed(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

// --- Servers ------------------------------------------------------------------------------------

/// A pool-server child process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(
        bin: &Path,
        name: &str,
        data_dir: &Path,
        extra: &[String],
        difficulty: u64,
    ) -> anyhow::Result<Server> {
        let mut child = Command::new(bin)
            .args(["--port", "0", "--difficulty", &difficulty.to_string(), "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn,pool_server=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} ({name})", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut log = Vec::new();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.wait();
                bail!("{name} exited before listening; its log:\n{}", log.join("\n"));
            };
            let line = line.context("reading the server's log")?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").trim_end_matches(':');
                break addr.parse().with_context(|| format!("bad address in {line:?}"))?;
            }
            log.push(line);
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Ok(Server { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
