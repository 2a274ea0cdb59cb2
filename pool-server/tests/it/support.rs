//! Test helpers: an in-process server on port 0, a tiny WebSocket client, proof search, and the
//! real binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pool_server::Config;
use pool_server::serve::Limits;
use protocol::share::leading_zero_bits;
use protocol::{Difficulty, ProofChecker, to_python_json};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Guards against a hang only; no test asserts on how long anything takes.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Shows the server's logs in failing tests: `RUST_LOG=pool_server=debug cargo test`.
fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// A server running in this process on an ephemeral port with its own data directory.
pub struct Server {
    pub addr: SocketAddr,
    pub difficulty: Difficulty,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub async fn start(zeros: u64) -> Server {
        Server::start_with(zeros, Limits::default()).await
    }

    /// Starts a server with the given connection limits.
    pub async fn start_with(zeros: u64, limits: Limits) -> Server {
        Server::start_on(zeros, limits, None).await
    }

    /// Starts a server keeping its chain in the PostgreSQL database at `database` (one
    /// frontend of the pool on it), or in SQLite when `None`.
    pub async fn start_on(zeros: u64, limits: Limits, database: Option<&str>) -> Server {
        Server::start_paying(zeros, limits, database, pool_server::payout::Payout::Solo).await
    }

    /// [`Server::start_on`] with a payout scheme.
    pub async fn start_paying(
        zeros: u64,
        limits: Limits,
        database: Option<&str>,
        payout: pool_server::payout::Payout,
    ) -> Server {
        Server::start_full(zeros, limits, database, payout, None).await
    }

    /// Starts a server serving HTTPS and WSS with `tls` (SQLite, solo payouts).
    pub async fn start_tls(zeros: u64, limits: Limits, tls: pool_server::tls::TlsFiles) -> Server {
        Server::start_full(zeros, limits, None, pool_server::payout::Payout::Solo, Some(tls)).await
    }

    async fn start_full(
        zeros: u64,
        limits: Limits,
        database: Option<&str>,
        payout: pool_server::payout::Payout,
        tls: Option<pool_server::tls::TlsFiles>,
    ) -> Server {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let difficulty = Difficulty::new(zeros).expect("difficulty in range");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Config {
            listen: addr,
            difficulty,
            data_dir: dir.path().join("data"),
            database: database.map(|url| pool_server::config::DatabaseUrl(url.to_owned())),
            payout,
            limits,
            tls,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(pool_server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Server { addr, difficulty, _dir: dir, stop: Some(stop), handle: Some(handle) }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn last_block(&self) -> Value {
        let body: Value = reqwest::get(self.url("/last_block"))
            .await
            .expect("GET /last_block")
            .json()
            .await
            .expect("json");
        body["last_block"].clone()
    }

    pub async fn chain(&self) -> Vec<Value> {
        let body: Value =
            reqwest::get(self.url("/chain")).await.expect("GET /chain").json().await.expect("json");
        body["chain"].as_array().expect("chain array").clone()
    }

    /// Submits a proof over HTTP and returns the JSON answer.
    pub async fn mine_http(&self, proof: u64, id: &str) -> Value {
        reqwest::Client::new()
            .post(self.url("/mine"))
            .json(&serde_json::json!({ "proof": proof, "id": id }))
            .send()
            .await
            .expect("POST /mine")
            .json()
            .await
            .expect("json")
    }

    /// Wins the current block over HTTP and returns the new block.
    pub async fn forge(&self, id: &str) -> Value {
        let proof = mine(&self.last_block().await, self.difficulty, 0);
        let answer = self.mine_http(proof, id).await;
        assert_eq!(answer["message"], "New Block Forged", "{answer}");
        answer["block"].clone()
    }

    /// Stops the server and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_keeping_data().await
    }

    /// Stops the server and waits for `run` to return, keeping its data directory until this
    /// `Server` is dropped.
    pub async fn stop_keeping_data(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(HANG_GUARD, handle).await.expect("server stops")?
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub use test_support::mine;

/// A test WebSocket client.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Wraps a connected stream (e.g. one opened from a chosen source address).
    pub fn from_stream(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Ws {
        Ws { stream }
    }

    /// Closes the connection and waits for the server's close.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(HANG_GUARD, self.stream.next()).await {}
    }

    pub async fn connect(url: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
        Ws { stream }
    }

    /// Connects and reads the block pushed on connect.
    pub async fn connect_and_greet(url: &str) -> (Ws, Value) {
        let mut ws = Ws::connect(url).await;
        let first = ws.recv().await;
        assert_eq!(first["type"], "block", "{first}");
        (ws, first)
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.stream.send(Message::text(text.into())).await.expect("ws send");
    }

    pub async fn send(&mut self, msg: &Message) {
        self.stream.send(msg.clone()).await.expect("ws send");
    }

    /// Reads the next text frame as JSON, skipping pings and pongs.
    pub async fn recv(&mut self) -> Value {
        match self.recv_raw().await {
            Message::Text(t) => serde_json::from_str(t.as_str()).expect("server sends JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads the next non-ping frame.
    pub async fn recv_raw(&mut self) -> Message {
        let frame = async {
            loop {
                match self.stream.next().await.expect("stream open").expect("frame ok") {
                    Message::Ping(_) | Message::Pong(_) => continue,
                    other => return other,
                }
            }
        };
        tokio::time::timeout(HANG_GUARD, frame).await.expect("a frame arrives")
    }

    /// Reads frames until a `block` message for block `index` arrives, returning the block.
    /// Blocks in between may be skipped: only the newest block matters.
    pub async fn recv_block(&mut self, index: u64) -> Value {
        loop {
            let msg = self.recv().await;
            if msg["type"] == "block" && msg["block"]["index"] == index {
                return msg["block"].clone();
            }
        }
    }

    /// Reads frames until a `result` message arrives.
    pub async fn recv_result(&mut self) -> Value {
        loop {
            let msg = self.recv().await;
            if msg["type"] == "result" {
                return msg;
            }
            assert_eq!(msg["type"], "block", "unexpected frame {msg}");
        }
    }
}

/// The real `pool-server` binary running as a child process.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    /// Keeps draining stderr so the child never blocks on a full pipe.
    pub _log: mpsc::Receiver<String>,
    /// The start-up line (`listening on ...`).
    pub started: String,
}

/// Returns a channel that receives a child's output lines as they are printed (read on a
/// thread of its own, which ends with the pipe or when the receiver is dropped).
pub fn line_channel(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts the binary on port 0 with `data_dir`; returns once it logs its address, or returns
/// the exit status and log if it exits first.
pub fn spawn_binary(data_dir: &Path, zeros: u64) -> Result<Binary, (i32, String)> {
    spawn_binary_with(data_dir, zeros, &[])
}

/// [`spawn_binary`] with more command-line options.
pub fn spawn_binary_with(
    data_dir: &Path,
    zeros: u64,
    options: &[&str],
) -> Result<Binary, (i32, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pool-server"))
        .args(["--port", "0", "--difficulty", &zeros.to_string(), "--data-dir"])
        .arg(data_dir)
        .args(options)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pool-server");
    let rx = line_channel(child.stderr.take().expect("piped stderr"));
    let mut log = String::new();
    loop {
        match rx.recv_timeout(HANG_GUARD) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr =
                        rest.split_whitespace().next().expect("address").trim_end_matches(':');
                    let addr = addr.parse().expect("a socket address");
                    return Ok(Binary { child, addr, _log: rx, started: line });
                }
            }
            Err(e) => {
                // stderr closed: the process exited. Nothing for too long: it hangs; stop it.
                if e == mpsc::RecvTimeoutError::Timeout {
                    let _ = child.kill();
                }
                let status = child.wait().expect("wait");
                return Err((status.code().unwrap_or(-1), log));
            }
        }
    }
}

impl Binary {
    /// `GET path` as JSON, blocking.
    pub fn get(&self, path: &str) -> Value {
        reqwest::blocking::get(format!("http://{}{path}", self.addr))
            .expect("GET")
            .json()
            .expect("json")
    }

    /// Wins the current block at `zeros` over HTTP, blocking; returns the acknowledged block.
    pub fn forge(&self, zeros: u64, id: &str) -> Value {
        let last = self.get("/last_block")["last_block"].clone();
        let proof = mine(&last, Difficulty::new(zeros).expect("difficulty in range"), 0);
        let answer: Value = reqwest::blocking::Client::new()
            .post(format!("http://{}/mine", self.addr))
            .json(&serde_json::json!({"proof": proof, "id": id}))
            .send()
            .expect("POST /mine")
            .json()
            .expect("json");
        assert_eq!(answer["message"], "New Block Forged", "{answer}");
        answer["block"].clone()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns 127.0.0.`n`: tests stand in for several client machines by binding these.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

pub async fn tcp_from(from: IpAddr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(server).await.expect("connect")
}

/// Sends a raw HTTP request from `from` and returns the whole answer (the server closes).
pub async fn raw_request(from: IpAddr, server: SocketAddr, request: &str) -> String {
    let mut tcp = tcp_from(from, server).await;
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(HANG_GUARD, tcp.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

pub async fn ws_from(from: IpAddr, server: SocketAddr) -> Result<Ws, String> {
    let tcp = tcp_from(from, server).await;
    tokio_tungstenite::client_async(
        format!("ws://{server}/ws"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .map(|(stream, _)| Ws::from_stream(stream))
    .map_err(|e| e.to_string())
}

/// Returns the first proof from `start` whose digest for `block` has `lo..hi` leading zero bits.
pub fn proof_with_bits(block: &Value, lo: u32, hi: u32, start: u64) -> u64 {
    let checker = ProofChecker::new(&to_python_json(block));
    (start..)
        .find(|p| (lo..hi).contains(&leading_zero_bits(&checker.digest(*p))))
        .expect("a proof exists")
}

/// Asks for shares; returns the share target the server answers with.
pub async fn opt_in(ws: &mut Ws) -> u64 {
    ws.send_text(serde_json::json!({"type": "shares"}).to_string()).await;
    loop {
        let frame = ws.recv().await;
        if frame["type"] == "share_target" {
            return frame["bits"].as_u64().expect("bits");
        }
    }
}

/// Sends a proof and returns the server's answer to it (a `share`, `result` or `error`), skipping
/// other frames.
pub async fn send_proof(ws: &mut Ws, proof: u64, id: &str, index: Option<u64>) -> Value {
    let mut msg = serde_json::json!({"type": "proof", "proof": proof, "id": id});
    if let Some(index) = index {
        msg["index"] = serde_json::json!(index);
    }
    ws.send_text(msg.to_string()).await;
    loop {
        let frame = ws.recv().await;
        if frame["type"] == "share" || frame["type"] == "result" || frame["type"] == "error" {
            return frame;
        }
    }
}
