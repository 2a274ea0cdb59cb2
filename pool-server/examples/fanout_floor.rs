//! The floor under the load bench's fan-out figure (on demand, not in CI): the bare cost of
//! writing one frame to each of N loopback TCP sockets and reading it back on the other end, with
//! no WebSocket, no async runtime and no JSON, only `write` and `read` system calls.
//!
//! The writer (this process) writes the same frame to every accepted socket in turn, each round
//! stamped with the wall-clock time of its first write; a reader (this program again, as a child
//! process, so each side has its own open-files limit as the server and the bench do) reads it
//! from every client socket in the same order, with blocking reads, so a reader that catches up
//! with the writer sleeps until the next frame arrives, as an event-loop client would. A round's
//! fan-out time runs from the first write to the last read. Prints p50/p99 over the rounds and
//! what each side's loop took.
//!
//! `cargo run --release -p pool-server --example fanout_floor -- [CONNECTIONS] [ROUNDS] [BYTES]`
//! (defaults 10000, 100, 300). To pin: `taskset -c 0` in front pins both sides; the environment
//! variable `READER_TASKSET` (e.g. `1`) runs the reader under `taskset -c` that CPU list.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--reader") {
        return reader(&args[1..]);
    }
    let number = |i: usize, default: usize| -> anyhow::Result<usize> {
        args.get(i).map_or(Ok(default), |a| a.parse().with_context(|| format!("bad number {a:?}")))
    };
    let connections = number(0, 10_000)?.max(1);
    let rounds = number(1, 100)?.max(1);
    let bytes = number(2, 300)?.max(8);

    let listener = TcpListener::bind("127.0.0.1:0").context("binding")?;
    let addr = listener.local_addr().context("reading the address")?;
    let exe = std::env::current_exe().context("locating this program")?;
    let mut command = match std::env::var("READER_TASKSET") {
        Ok(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpus]).arg(&exe);
            c
        }
        Err(_) => Command::new(&exe),
    };
    let mut child = command
        .args(["--reader", &addr.to_string(), &connections.to_string(), &rounds.to_string()])
        .arg(bytes.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the reader")?;
    let mut servers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (server, _) = listener.accept().context("accepting")?;
        server.set_nodelay(true).context("TCP_NODELAY")?;
        servers.push(server);
    }
    let mut frame = vec![b'x'; bytes];
    let mut write_loops = Vec::with_capacity(rounds);
    let mut ack = [0u8; 1];
    for _ in 0..rounds {
        let start = Instant::now();
        frame[..8].copy_from_slice(&now_nanos().to_le_bytes());
        for s in &mut servers {
            s.write_all(&frame).context("writing")?;
        }
        write_loops.push(start.elapsed());
        // The reader answers on the first socket once it has read the whole round.
        servers[0].read_exact(&mut ack).context("waiting for the reader")?;
    }
    let mut out = String::new();
    BufReader::new(child.stdout.take().context("no reader output")?)
        .read_line(&mut out)
        .context("reading the reader's output")?;
    if !child.wait().context("waiting for the reader")?.success() {
        bail!("the reader failed");
    }
    let mut fanout = Vec::with_capacity(rounds);
    let mut read_loops = Vec::with_capacity(rounds);
    for pair in out.split_whitespace() {
        let (f, r) = pair.split_once(',').context("bad reader output")?;
        fanout.push(Duration::from_nanos(f.parse()?));
        read_loops.push(Duration::from_nanos(r.parse()?));
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
    };
    let write_p50 = pct(&mut write_loops, 0.5);
    println!(
        "{connections} sockets, {rounds} rounds of {bytes} bytes: fan-out (first write → last read) \
         p50 {:.1} ms, p99 {:.1} ms; write loop p50 {write_p50:.1} ms ({:.2} µs per socket); \
         read loop p50 {:.1} ms",
        pct(&mut fanout, 0.5),
        pct(&mut fanout, 0.99),
        write_p50 * 1e3 / connections as f64,
        pct(&mut read_loops, 0.5),
    );
    Ok(())
}

/// The child: connects, reads every round from every socket in order, and prints
/// `fanout_nanos,read_loop_nanos` per round on one line.
fn reader(args: &[String]) -> anyhow::Result<()> {
    let [addr, connections, rounds, bytes] = args else {
        bail!("usage: --reader ADDR CONNECTIONS ROUNDS BYTES");
    };
    let addr: SocketAddr = addr.parse().context("bad address")?;
    let (connections, rounds, bytes): (usize, usize, usize) =
        (connections.parse()?, rounds.parse()?, bytes.parse()?);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(TcpStream::connect(addr).context("connecting")?);
    }
    let mut buf = vec![0u8; bytes];
    let mut line = String::new();
    for _ in 0..rounds {
        clients[0].read_exact(&mut buf).context("reading")?;
        let start = Instant::now();
        let stamp = u64::from_le_bytes(buf[..8].try_into().context("short frame")?);
        for c in &mut clients[1..] {
            c.read_exact(&mut buf).context("reading")?;
        }
        let read_loop = start.elapsed();
        let fanout = now_nanos().saturating_sub(stamp);
        line.push_str(&format!("{fanout},{} ", read_loop.as_nanos()));
        clients[0].write_all(b"k").context("answering")?;
    }
    println!("{line}");
    Ok(())
}
