//! Test helpers: a scriptable WebSocket server, an in-process miner whose events can be awaited,
//! and a few block builders. No sleeps: every wait is for an event, under a generous deadline
//! that only turns a hang into a failure.

use futures_util::{SinkExt, StreamExt};
use protocol::{Block, Difficulty, ServerMessage};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use ws_miner::backoff::BackoffPolicy;
use ws_miner::{Config, Endpoint, Event, Outcome, Reporter};

/// How long any single wait may take before the test fails (a hang detector, not a timing check).
pub const DEADLINE: Duration = Duration::from_secs(60);
/// A difficulty no test solves: the search runs until it is stopped.
pub const NEVER: u64 = 16;
/// A difficulty every test solves at once.
pub const EASY: u64 = 3;

/// Awaits `future`, failing the test if it hangs.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Returns the `chain` list of a server's `GET /chain`.
pub async fn get_chain(addr: SocketAddr) -> Vec<Value> {
    let answer: Value = within("GET /chain", async {
        reqwest::get(format!("http://{addr}/chain"))
            .await
            .expect("GET /chain")
            .json()
            .await
            .expect("a JSON answer")
    })
    .await;
    answer["chain"].as_array().cloned().expect("a chain list")
}

/// Returns a test-sized configuration: 2 threads, quick reconnects.
pub fn config(endpoint: Endpoint, id: &str) -> Config {
    let mut config = Config::new(endpoint, id);
    config.threads = 2;
    config.backoff =
        BackoffPolicy { base: Duration::from_millis(20), cap: Duration::from_millis(300) };
    config.poll_interval = Duration::from_millis(200);
    // Scripted test servers serve no `/balance/{id}`: the tests that want it turn it on.
    config.server_balance = false;
    config
}

/// Returns the endpoint `ws://addr/ws`.
pub fn ws_endpoint(addr: SocketAddr) -> Endpoint {
    match ws_miner::cli::parse_endpoint(&format!("ws://{addr}/ws")) {
        Ok(endpoint) => endpoint,
        Err(e) => panic!("bad test URL: {e}"),
    }
}

/// Returns the endpoint `http://addr/`.
pub fn http_endpoint(addr: SocketAddr) -> Endpoint {
    match ws_miner::cli::parse_endpoint(&format!("http://{addr}")) {
        Ok(endpoint) => endpoint,
        Err(e) => panic!("bad test URL: {e}"),
    }
}

/// A miner running in-process.
pub struct MinerRun {
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Every event received so far, in order.
    pub seen: Vec<Event>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Outcome>,
}

impl MinerRun {
    /// Starts `ws_miner::run` with a channel reporter and a stop switch.
    pub fn start(config: Config) -> Self {
        let (reporter, events) = Reporter::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ws_miner::run(config, reporter, async {
            let _ = stopped.await;
        }));
        MinerRun { events, seen: Vec::new(), stop: Some(stop), task }
    }

    /// Waits for the next event that `pick` accepts, and returns what it returns.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                let Some(event) = self.events.recv().await else {
                    panic!("the miner ended while waiting for {what}; events: {:#?}", self.seen)
                };
                self.seen.push(event.clone());
                if let Some(value) = pick(&event) {
                    return value;
                }
            }
        })
        .await;
        match waited {
            Ok(value) => value,
            Err(_) => {
                let last = &self.seen[self.seen.len().saturating_sub(40)..];
                let lines: Vec<String> = last.iter().map(Event::to_plain).collect();
                panic!("timed out waiting for {what}; the last events:\n{}", lines.join("\n"))
            }
        }
    }

    /// Waits for the run to end on its own (e.g. `--once`); returns its outcome and the summary.
    pub async fn finish(mut self) -> (Outcome, Vec<Event>) {
        let outcome = within("the miner to end", &mut self.task).await.expect("run does not panic");
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        (outcome, self.seen)
    }

    /// Sends the shutdown signal (as Ctrl-C does) and waits for the run to end.
    pub async fn stop(mut self) -> (Outcome, Vec<Event>) {
        self.interrupt();
        self.finish().await
    }

    /// Sends the shutdown signal (as Ctrl-C does) without waiting.
    pub fn interrupt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Returns the summary among `events`.
pub fn summary(events: &[Event]) -> ws_miner::Summary {
    events
        .iter()
        .find_map(|e| match e {
            Event::Summary(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a summary is reported at the end")
}

/// A course-shaped block with index `index`, unique per `tag`.
pub fn block(index: u64, tag: &str) -> Value {
    let mut b = Block::genesis(1_732_531_641.5);
    b.index = index;
    b.previous_hash = format!("{tag}-{index}");
    b.to_value()
}

/// The `block` message for `block` at `zeros`.
pub fn block_frame(block: &Value, zeros: u64) -> Message {
    let message = ServerMessage::Block {
        block: block.clone(),
        difficulty: Some(Difficulty::new(zeros).expect("test difficulty in range")),
    };
    Message::text(message.to_json())
}

/// A test WebSocket server: accept connections and script what they see.
pub struct WsServer {
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

pub type ServerWs = WebSocketStream<TcpStream>;

impl WsServer {
    /// Binds 127.0.0.1:0.
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        WsServer { listener, addr }
    }

    /// Accepts one WebSocket connection (a plain HTTP request, such as the miner's
    /// `GET /balance/{id}`, is answered 404 and skipped).
    pub async fn accept(&self) -> ServerWs {
        within("a miner to connect", async {
            loop {
                let (tcp, _) = self.listener.accept().await.expect("accept");
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    return ws;
                }
            }
        })
        .await
    }
}

/// Sends a frame from the test server.
pub async fn send(ws: &mut ServerWs, message: Message) {
    ws.send(message).await.expect("send to the miner");
}

/// Waits for the miner's next proof frame; returns the parsed JSON.
pub async fn recv_proof(ws: &mut ServerWs) -> Value {
    within("a proof from the miner", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let value: Value =
                        serde_json::from_str(text.as_str()).expect("miner sends JSON");
                    if value["type"] == "proof" {
                        return value;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended while waiting for a proof: {other:?}"),
            }
        }
    })
    .await
}

/// Returns true when `proof` solves `block` at `zeros` in the json dialect.
pub fn solves(block: &Value, zeros: u64, proof: &Value) -> bool {
    let Some(proof) = proof.as_u64() else { return false };
    let difficulty = Difficulty::new(zeros).expect("in range");
    difficulty.is_valid_proof(&protocol::to_python_json(block), proof)
}

/// The `result` frame the pool-server sends.
pub fn result_frame(accepted: bool, message: &str, reason: Option<&str>, index: u64) -> Message {
    Message::text(
        json!({"type": "result", "accepted": accepted, "message": message, "reason": reason, "index": index})
            .to_string(),
    )
}

/// A real `pool-server`, in-process on 127.0.0.1:0 with a throw-away data dir.
pub struct Pool {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl Pool {
    pub async fn start(zeros: u64) -> Self {
        Self::start_with(zeros, None).await
    }

    /// Starts a server that serves HTTPS and WSS with `cert` and `key` (PEM files).
    pub async fn start_tls(zeros: u64, cert: &std::path::Path, key: &std::path::Path) -> Self {
        let files = pool_server::tls::TlsFiles { cert: cert.to_owned(), key: key.to_owned() };
        Self::start_with(zeros, Some(files)).await
    }

    async fn start_with(zeros: u64, tls: Option<pool_server::tls::TlsFiles>) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(zeros, tls, listener, data, pool_server::serve::Limits::default())
    }

    /// Starts a server with `limits` (share settings, rate limits).
    pub async fn start_limits(zeros: u64, limits: pool_server::serve::Limits) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(zeros, None, listener, data, limits)
    }

    /// Starts a server again on the address and data dir of one stopped with
    /// [`Pool::stop_keeping`]: the same chain on the same port.
    pub async fn restart(zeros: u64, addr: SocketAddr, data: tempfile::TempDir) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("re-bind the same port");
        Self::serve(zeros, None, listener, data, pool_server::serve::Limits::default())
    }

    fn serve(
        zeros: u64,
        tls: Option<pool_server::tls::TlsFiles>,
        listener: TcpListener,
        data: tempfile::TempDir,
        limits: pool_server::serve::Limits,
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        let mut config = pool_server::Config::new(
            addr,
            protocol::Difficulty::new(zeros).expect("in range"),
            data.path().to_path_buf(),
        );
        config.tls = tls;
        config.limits = limits;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(pool_server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Pool { addr, stop: Some(stop), task, _data: data }
    }

    pub async fn chain(&self) -> Vec<Value> {
        get_chain(self.addr).await
    }

    /// Stops the server, keeping its address and data dir for [`Pool::restart`].
    pub async fn stop_keeping(mut self) -> (SocketAddr, tempfile::TempDir) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within("the server to stop", &mut self.task).await.expect("no panic").expect("clean stop");
        // `run` may return while a task of the old server still holds its state, and with it
        // the data dir's lock: wait for the lock (a blocking `flock`), so that the restart
        // does not find it taken.
        let lock = self._data.path().join(pool_server::lockfile::LOCK_FILE);
        within("the old server to release its data dir", async {
            tokio::task::spawn_blocking(move || {
                let file = std::fs::OpenOptions::new().write(true).open(&lock)?;
                file.lock()
            })
            .await
        })
        .await
        .expect("no panic")
        .expect("the lock file can be locked");
        (self.addr, self._data)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within("the server to stop", &mut self.task).await.expect("no panic").expect("clean stop");
    }
}
