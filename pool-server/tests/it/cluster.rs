//! Several frontends over one PostgreSQL database are one pool (`--database`): one winner per
//! height, pending transactions mined once, every block on every frontend, outages answered
//! with 503s and survived, a frontend killed -9 and the database restarted mid-race.
//!
//! Each test starts its own throwaway PostgreSQL (`pg`); in CI (`REQUIRE_POSTGRES=1`) a
//! PostgreSQL that cannot start fails the test instead of skipping it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pool_server::serve::Limits;
use protocol::Difficulty;
use serde_json::{Value, json};
use test_support::assert_valid_chain;

use crate::pg;
use crate::support::{Binary, HANG_GUARD, Server, Ws, mine, spawn_binary_with};

const ZEROS: u64 = 3;

fn difficulty() -> Difficulty {
    Difficulty::new(ZEROS).expect("difficulty in range")
}

/// Limits that let one test process stand in for a thousand clients on one address.
fn crowd() -> Limits {
    Limits {
        max_conns_per_ip: 4096,
        proof_rate: 1_000_000,
        transaction_rate: 1_000_000,
        ..Limits::default()
    }
}

/// Polls until `done` holds for every frontend's `/last_block`, failing after [`HANG_GUARD`].
async fn until_all(frontends: &[&Server], what: &str, done: impl Fn(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let mut all = true;
        for f in frontends {
            all &= done(&f.last_block().await);
        }
        if all {
            return;
        }
        assert!(start.elapsed() < HANG_GUARD, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_a_thousand_valid_proofs_spread_over_three_frontends_wins() {
    let Some(pg) = pg::server_or_skip() else { return };
    let url = pg.url();
    let mut frontends = Vec::new();
    for _ in 0..3 {
        frontends.push(Server::start_on(ZEROS, crowd(), Some(&url)).await);
    }
    let genesis = frontends[0].last_block().await;
    for f in &frontends[1..] {
        assert_eq!(f.last_block().await, genesis, "one chain, one genesis block");
    }
    let proof = mine(&genesis, difficulty(), 0);

    // 900 over HTTP and 100 over WebSocket, round-robin over the frontends, all at once.
    let http = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000usize {
        let addr = frontends[i % 3].addr;
        let id = format!("miner-{i}");
        if i % 10 == 0 {
            tasks.spawn(async move {
                let (mut ws, _) = Ws::connect_and_greet(&format!("ws://{addr}/ws")).await;
                ws.send_text(json!({"type": "proof", "proof": proof, "id": id}).to_string()).await;
                let result = ws.recv_result().await;
                let won = result["accepted"] == true;
                (id, won, result["message"].as_str().unwrap_or_default().to_owned())
            });
        } else {
            let http = http.clone();
            tasks.spawn(async move {
                let answer: Value = http
                    .post(format!("http://{addr}/mine"))
                    .json(&json!({"proof": proof, "id": id}))
                    .send()
                    .await
                    .expect("POST /mine")
                    .json()
                    .await
                    .expect("a JSON answer");
                let message = answer["message"].as_str().unwrap_or_default().to_owned();
                (id, message == "New Block Forged", message)
            });
        }
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (id, won, message) = joined.expect("a submission task");
        if won { winners.push(id) } else { losers.push(message) }
    }
    assert_eq!(winners.len(), 1, "exactly one winner across the frontends: {winners:?}");
    let winner = &winners[0];
    for message in &losers {
        assert!(
            message.contains(&format!("already won by {winner}")),
            "every other submission is told who won: {message}"
        );
    }

    let all: Vec<&Server> = frontends.iter().collect();
    until_all(&all, "every frontend serves block 2", |b| b["index"] == 2).await;
    let chain = frontends[0].chain().await;
    assert_eq!(chain[1]["transactions"][0]["recipient"], winner.as_str());
    for f in &frontends[1..] {
        assert_eq!(f.chain().await, chain, "every frontend serves the same chain");
    }
    assert_valid_chain(&chain, difficulty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_transactions_are_shared_and_mined_exactly_once() {
    let Some(pg) = pg::server_or_skip() else { return };
    let url = pg.url();
    let mut frontends = Vec::new();
    for _ in 0..3 {
        frontends.push(Server::start_on(ZEROS, crowd(), Some(&url)).await);
    }
    let http = reqwest::Client::new();
    for (i, f) in frontends.iter().enumerate() {
        let answer: Value = http
            .post(f.url("/transactions/new"))
            .json(&json!({"sender": "alice", "recipient": format!("r{i}"), "amount": i + 1}))
            .send()
            .await
            .expect("POST /transactions/new")
            .json()
            .await
            .expect("json");
        assert_eq!(answer["message"], "Transaction will be added to Block 2", "{answer}");
    }
    // Forged on the third frontend: the block holds the transactions all three took.
    let block = frontends[2].forge("winner").await;
    let recipients: Vec<&str> = block["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| t["recipient"].as_str().expect("recipient"))
        .collect();
    assert_eq!(recipients, ["r0", "r1", "r2", "winner"]);
    let all: Vec<&Server> = frontends.iter().collect();
    until_all(&all, "every frontend serves block 2", |b| b["index"] == 2).await;
    // The next block, forged elsewhere, takes none of them again.
    let block = frontends[0].forge("next").await;
    assert_eq!(block["transactions"].as_array().map(Vec::len), Some(1), "{block}");
    until_all(&all, "every frontend serves block 3", |b| b["index"] == 3).await;
    for f in &frontends {
        let balances: Value =
            reqwest::get(f.url("/balances")).await.expect("GET").json().await.expect("json");
        let coins: BTreeMap<String, i64> = balances["balances"]
            .as_array()
            .expect("balances")
            .iter()
            .map(|b| (b["id"].as_str().expect("id").to_owned(), b["coins"].as_i64().expect("n")))
            .collect();
        assert_eq!(coins["alice"], -6, "alice paid 1 + 2 + 3 once: {coins:?}");
        assert_eq!((coins["r2"], coins["winner"], coins["next"]), (3, 1, 1));
        // Metrics name the frontend; the chain length is the pool's.
        let metrics =
            reqwest::get(f.url("/metrics")).await.expect("GET").text().await.expect("text");
        let info = format!("pool_frontend_info{{frontend=\"{}\",storage=\"postgres\"}} 1", f.addr);
        assert!(metrics.contains(&info), "{metrics}");
        assert!(metrics.contains("\npool_chain_length 3\n"), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_503_and_the_pool_resumes_by_itself() {
    let Some(mut pg) = pg::server_or_skip() else { return };
    let url = pg.url();
    let a = Server::start_on(ZEROS, crowd(), Some(&url)).await;
    let b = Server::start_on(ZEROS, crowd(), Some(&url)).await;
    a.forge("before").await;
    let (mut ws, _) = Ws::connect_and_greet(&a.ws_url()).await;
    let mut ws_b = Ws::connect(&b.ws_url()).await;
    ws_b.recv_block(2).await;

    tokio::task::block_in_place(|| pg.stop()).expect("stop PostgreSQL");
    let proof = mine(&a.last_block().await, difficulty(), 0);
    let response = reqwest::Client::new()
        .post(a.url("/mine"))
        .json(&json!({"proof": proof, "id": "during"}))
        .send()
        .await
        .expect("POST /mine");
    assert_eq!(response.status(), 503);
    let answer: Value = response.json().await.expect("a JSON body");
    assert!(answer["message"].as_str().unwrap_or_default().contains("database is unavailable"));
    ws.send_text(json!({"type": "proof", "proof": proof, "id": "during"}).to_string()).await;
    let frame = ws.recv().await;
    assert_eq!(frame["type"], "error", "{frame}");
    // The socket stays open and still answers from memory.
    ws.send_text(json!({"type": "last_block"}).to_string()).await;
    assert_eq!(ws.recv().await["block"]["index"], 2);

    tokio::task::block_in_place(|| pg.start_again()).expect("start PostgreSQL again");
    // The same proof wins once the database is back (a frontend reconnects by itself).
    let start = Instant::now();
    let block = loop {
        let answer = a.mine_http(proof, "after").await;
        if answer["message"] == "New Block Forged" {
            break answer["block"].clone();
        }
        assert!(start.elapsed() < HANG_GUARD, "the pool never resumed: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(block["index"], 3);
    // The other frontend's listener reconnected and pushes the block to its sockets.
    let pushed = ws_b.recv_block(3).await;
    assert_eq!(pushed, block);
}

#[test]
fn a_frontend_with_another_difficulty_or_payout_refuses_to_start() {
    let Some(pg) = pg::server_or_skip() else { return };
    let url = pg.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = spawn_binary_with(&dir.path().join("a"), ZEROS, &["--database", &url])
        .expect("the first frontend starts");
    let Err((code, log)) = spawn_binary_with(&dir.path().join("b"), 4, &["--database", &url])
    else {
        panic!("a frontend at another difficulty started");
    };
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("start it with --difficulty 3"), "{log}");
    let Err((code, log)) =
        spawn_binary_with(&dir.path().join("c"), ZEROS, &["--database", &url, "--payout", "pplns"])
    else {
        panic!("a frontend paying another way started");
    };
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("the pool in") && log.contains("pays solo"), "{log}");
}

/// Miners racing the test: `ws-miner` (the binary cargo built beside pool-server's) and the
/// course's Python miner (`tests/compat/miner.py`); stopped on drop.
struct Rivals {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Rivals {
    fn start(b: &Binary, c: &Binary) -> Rivals {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("my_id.txt"), "rival-py").expect("my_id.txt");
        let ws_miner = Path::new(env!("CARGO_BIN_EXE_pool-server")).with_file_name("ws-miner");
        assert!(
            ws_miner.exists(),
            "{} is missing: run the workspace's tests (scripts/test), which build it",
            ws_miner.display()
        );
        let log = |name: &str| {
            let file = std::fs::File::create(dir.path().join(name)).expect("a log file");
            Stdio::from(file)
        };
        let ws = Command::new(ws_miner)
            .args([&format!("ws://{}/ws", b.addr), &format!("ws://{}/ws", c.addr)])
            .args(["--id", "rival-ws", "--threads", "1"])
            .stdout(log("ws-miner.out"))
            .stderr(log("ws-miner.err"))
            .spawn()
            .expect("start ws-miner");
        let course = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat/miner.py");
        let py = Command::new("python3")
            .arg(course)
            .args([&format!("http://{}", c.addr), &ZEROS.to_string()])
            .current_dir(dir.path())
            .stdout(log("miner.py.out"))
            .stderr(log("miner.py.err"))
            .spawn()
            .expect("start the course miner");
        Rivals { children: vec![ws, py], _dir: dir }
    }

    /// The end of each rival's output, for failure messages.
    fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["ws-miner.out", "ws-miner.err", "miner.py.out", "miner.py.err"] {
            let text = std::fs::read_to_string(self._dir.path().join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            all.push_str(&format!("--- {name}\n{}\n", tail.join("\n")));
        }
        all
    }
}

impl Drop for Rivals {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `id` has won a block after block `after` on `frontend`'s chain.
fn until_won(frontend: &Binary, id: &str, after: usize, rivals: &Rivals) {
    let start = Instant::now();
    loop {
        let chain = chain_of(frontend);
        let won = chain.iter().skip(after).any(|b| {
            b["transactions"]
                .as_array()
                .and_then(|t| t.last())
                .is_some_and(|t| t["recipient"] == id)
        });
        if won {
            return;
        }
        assert!(start.elapsed() < 4 * HANG_GUARD, "{id} never won a block\n{}", rivals.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Returns `addr`'s whole chain, blocking.
fn chain_of(frontend: &Binary) -> Vec<Value> {
    frontend.get("/chain")["chain"].as_array().cloned().expect("a chain list")
}

/// Mines one block through whichever frontend of `frontends` answers, blocking; returns the
/// acknowledged block, or `None` when the answer was not a win (stale, 503, connection refused).
fn try_forge(frontends: &[&Binary], turn: usize, id: &str) -> Option<Value> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let f = frontends[turn % frontends.len()];
    let last: Value =
        client.get(format!("http://{}/last_block", f.addr)).send().ok()?.json().ok()?;
    let proof = mine(&last["last_block"], difficulty(), 0);
    let g = frontends[(turn + 1) % frontends.len()];
    let answer: Value = client
        .post(format!("http://{}/mine", g.addr))
        .json(&json!({"proof": proof, "id": id}))
        .send()
        .ok()?
        .json()
        .ok()?;
    (answer["message"] == "New Block Forged").then(|| answer["block"].clone())
}

#[test]
fn the_race_goes_on_through_a_frontend_killed_and_a_database_restart() {
    let Some(mut pg) = pg::server_or_skip() else { return };
    let url = pg.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ["--database", url.as_str(), "--proof-rate", "100000"];
    let spawn = |name: &str| {
        spawn_binary_with(&dir.path().join(name), ZEROS, &options).expect("a frontend starts")
    };
    let a = spawn("a");
    let mut b = spawn("b");
    let c = spawn("c");

    // Rival miners: ws-miner on b, failing over to c, and the course's Python miner on c.
    let miners = Rivals::start(&b, &c);
    until_won(&a, "rival-ws", 0, &miners);
    until_won(&a, "rival-py", 0, &miners);

    let mut acknowledged: Vec<Value> = Vec::new();
    let mut turn = 0;
    let mut mine_until = |frontends: &[&Binary], blocks: usize, acknowledged: &mut Vec<Value>| {
        let start = Instant::now();
        let goal = acknowledged.len() + blocks;
        while acknowledged.len() < goal {
            assert!(start.elapsed() < 4 * HANG_GUARD, "the race stalled");
            turn += 1;
            if let Some(block) = try_forge(frontends, turn, "tester") {
                acknowledged.push(block);
            }
        }
    };
    mine_until(&[&a, &b, &c], 5, &mut acknowledged);

    // kill -9 a frontend mid-race; the others go on.
    b.child.kill().expect("kill -9 b");
    b.child.wait().expect("reap b");
    mine_until(&[&a, &c], 5, &mut acknowledged);
    // ws-miner failed over from b to c and wins there.
    until_won(&a, "rival-ws", chain_of(&a).len(), &miners);
    b = spawn("b2");
    mine_until(&[&a, &b, &c], 3, &mut acknowledged);

    // Restart PostgreSQL (as after a crash); the frontends reconnect by themselves.
    pg.kill();
    pg.start_again().expect("PostgreSQL starts again");
    mine_until(&[&a, &b, &c], 5, &mut acknowledged);
    let height = chain_of(&a).len();
    until_won(&a, "rival-ws", height, &miners);
    until_won(&a, "rival-py", height, &miners);
    drop(miners);

    // One identical, valid chain everywhere, holding every acknowledged block.
    let start = Instant::now();
    let chain = loop {
        let chains = [chain_of(&a), chain_of(&b), chain_of(&c)];
        if chains[0] == chains[1] && chains[1] == chains[2] {
            break chains[0].clone();
        }
        assert!(start.elapsed() < HANG_GUARD, "the frontends never agreed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_valid_chain(&chain, difficulty());
    for block in &acknowledged {
        let index = block["index"].as_u64().expect("index") as usize;
        assert_eq!(&chain[index - 1], block, "acknowledged block {index} is in the chain");
    }
}
