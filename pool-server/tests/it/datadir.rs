//! The data directory at the binary's boundary: one server per directory, a damaged database
//! refused (never replaced by a new chain), and an unwritable one reported as such.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{Binary, spawn_binary};

const ZEROS: u64 = 2;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn get(bin: &Binary, path: &str) -> Value {
    bin.get(path)
}

fn forge(bin: &Binary, id: &str) -> Value {
    bin.forge(ZEROS, id)
}

fn chain_length(bin: &Binary) -> u64 {
    get(bin, "/chain")["length"].as_u64().expect("length")
}

fn signal(bin: &mut Binary, sig: &str) -> std::process::ExitStatus {
    let pid = bin.child.id().to_string();
    assert!(Command::new("kill").args([sig, &pid]).status().expect("kill").success());
    bin.child.wait().expect("wait")
}

/// Starts the binary on `data`, expects it to exit 1 at once, and returns its log.
#[track_caller]
fn refused(data: &Path, needles: &[&str]) -> String {
    match spawn_binary(data, ZEROS) {
        Ok(_) => panic!("the server started on {}", data.display()),
        Err((code, log)) => {
            assert_eq!(code, 1, "{log}");
            assert!(!log.contains("panicked"), "{log}");
            for needle in needles {
                assert!(log.contains(needle), "{needle:?} not in {log}");
            }
            log
        }
    }
}

/// A stopped (SIGTERM) data directory holding three blocks.
fn three_blocks(data: &Path) {
    let mut bin = spawn_binary(data, ZEROS).expect("server starts");
    forge(&bin, "a");
    forge(&bin, "b");
    assert!(signal(&mut bin, "-TERM").success());
}

fn db(data: &Path) -> PathBuf {
    data.join("chain.sqlite3")
}

#[test]
fn a_second_server_on_the_same_directory_exits_1_naming_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut first = spawn_binary(&data, ZEROS).expect("the first server starts");
    let res = client()
        .post(format!("http://{}/transactions/new", first.addr))
        .json(&json!({"sender": "a", "recipient": "b", "amount": 7}))
        .send()
        .expect("POST /transactions/new");
    assert_eq!(res.status(), 201);

    let log = refused(&data, &["in use by another pool-server"]);
    assert!(log.contains(&format!("PID {}", first.child.id())), "{log}");
    // Twice, to be sure the refusal changed nothing.
    refused(&data, &["in use"]);

    // The first keeps answering, and the acknowledged transaction lands in its next block.
    let block = forge(&first, "m");
    assert_eq!(block["transactions"][0], json!({"sender": "a", "recipient": "b", "amount": 7}));
    assert!(signal(&mut first, "-TERM").success());
    let again = spawn_binary(&data, ZEROS).expect("restarts once the first has stopped");
    assert_eq!(chain_length(&again), 2);
}

#[test]
fn the_start_up_line_says_the_payout_scheme() {
    let dir = tempfile::tempdir().expect("tempdir");
    let solo = spawn_binary(&dir.path().join("solo"), ZEROS).expect("starts");
    assert!(solo.started.contains("payout: solo"), "{}", solo.started);
    let pplns = crate::support::spawn_binary_with(
        &dir.path().join("pplns"),
        ZEROS,
        &["--payout", "pplns", "--pplns-window", "5"],
    )
    .expect("starts");
    assert!(
        pplns.started.contains("payout: pplns over the last 5 blocks' work of shares"),
        "{}",
        pplns.started
    );
}

#[test]
fn the_lock_is_released_by_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut first = spawn_binary(&data, ZEROS).expect("starts");
    forge(&first, "a");
    signal(&mut first, "-KILL");
    let bin = spawn_binary(&data, ZEROS).expect("a stale lock file does not block a restart");
    assert_eq!(chain_length(&bin), 2);
}

#[test]
fn a_zero_byte_database_is_refused_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(db(dir.path()), b"").expect("write");
    refused(dir.path(), &["chain.sqlite3", "is empty (0 bytes)"]);
    assert_eq!(std::fs::metadata(db(dir.path())).expect("still there").len(), 0);
}

#[test]
fn an_emptied_blocks_table_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_blocks(dir.path());
    let conn = rusqlite::Connection::open(db(dir.path())).expect("open");
    conn.execute("DELETE FROM blocks", []).expect("delete");
    drop(conn);
    refused(dir.path(), &["chain.sqlite3", "has no blocks"]);
    refused(dir.path(), &["has no blocks"]);
}

#[test]
fn removed_newest_blocks_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_blocks(dir.path());
    let conn = rusqlite::Connection::open(db(dir.path())).expect("open");
    conn.execute("DELETE FROM blocks WHERE idx = 3", []).expect("delete");
    drop(conn);
    refused(dir.path(), &["holds 2 blocks but 3 were committed"]);
}

#[test]
fn a_main_file_without_its_wal_after_kill_9_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut bin = spawn_binary(&data, ZEROS).expect("starts");
    forge(&bin, "a");
    forge(&bin, "b");
    signal(&mut bin, "-KILL");
    assert!(data.join("chain.sqlite3-wal").exists(), "the blocks are in the WAL");

    // A copy of the main file alone, as a careless backup would make.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).expect("mkdir");
    std::fs::copy(db(&data), db(&copy)).expect("copy");
    refused(&copy, &["not stopped cleanly", "chain.sqlite3-wal", "is missing"]);
    // Still refused the second time: the first attempt left no WAL behind.
    refused(&copy, &["not stopped cleanly"]);

    // The original, with its WAL, recovers every acknowledged block.
    let bin = spawn_binary(&data, ZEROS).expect("recovers");
    assert_eq!(chain_length(&bin), 3);
}

#[test]
fn a_main_file_copied_after_a_clean_stop_is_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    three_blocks(&data);
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).expect("mkdir");
    std::fs::copy(db(&data), db(&copy)).expect("copy");
    let bin = spawn_binary(&copy, ZEROS).expect("a cleanly stopped database needs no WAL");
    assert_eq!(chain_length(&bin), 3);
}

#[test]
fn a_wal_without_its_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("chain.sqlite3-wal"), b"x").expect("write");
    refused(dir.path(), &["chain.sqlite3-wal is there but its database"]);
    assert!(!db(dir.path()).exists());
}

#[test]
fn an_unfinished_new_database_is_replaced_by_a_new_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    // What a crash while creating a new chain leaves: not the chain, so it is started over.
    std::fs::write(dir.path().join("chain.sqlite3.new"), b"half").expect("write");
    let bin = spawn_binary(dir.path(), ZEROS).expect("starts a new chain");
    assert_eq!(chain_length(&bin), 1);
    assert!(!dir.path().join("chain.sqlite3.new").exists());
}

/// Runs the binary on `data` with `read_only` bind-mounted read-only in a private mount
/// namespace (`unshare`), which stops root too; returns its exit code and stderr, or `None`
/// where user namespaces are not available. With `REQUIRE_NAMESPACES` set (CI sets it), their
/// absence fails the test instead.
fn run_read_only(data: &Path, read_only: &Path) -> Option<(i32, String)> {
    let available = Command::new("unshare")
        .args(["-rm", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        test_support::skip(
            "REQUIRE_NAMESPACES",
            "read-only data directory test: `unshare -rm` (user namespaces) is not available here",
        );
        return None;
    }
    let script =
        r#"mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@""#;
    // `timeout`: a server that wrongly starts is stopped instead of hanging the test.
    let out = Command::new("timeout")
        .args(["60", "unshare", "-rm", "sh", "-c", script, "sh"])
        .arg(read_only)
        .arg(env!("CARGO_BIN_EXE_pool-server"))
        .args(["--port", "0", "--difficulty", "2", "--data-dir"])
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    Some((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn a_read_only_data_directory_says_cannot_write_not_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    three_blocks(&data);
    let Some((code, log)) = run_read_only(&data, &data) else { return };
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("cannot write") && log.contains("Read-only file system"), "{log}");
    assert!(!log.contains("corrupt") && !log.contains("move it away"), "{log}");
    // Nothing was lost: writable again, it starts with every block.
    let bin = spawn_binary(&data, ZEROS).expect("starts");
    assert_eq!(chain_length(&bin), 3);
}

#[test]
fn a_read_only_database_file_says_cannot_write_not_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    three_blocks(&data);
    let Some((code, log)) = run_read_only(&data, &db(&data)) else { return };
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("cannot write database") && log.contains("read-only"), "{log}");
    assert!(!log.contains("corrupt") && !log.contains("move it away"), "{log}");
    let bin = spawn_binary(&data, ZEROS).expect("starts");
    assert_eq!(chain_length(&bin), 3);
}

/// Once `run` returns, the chain is closed and the directory free, even while a connection task
/// that outlived shutdown still holds the server's state (a WebSocket client that never reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_free_as_soon_as_the_server_stops() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let mut server = crate::support::Server::start(2).await;
    server.forge("a").await;
    let data = server.data_dir();
    // A client that floods stats requests and never reads: once the socket's buffers are full the
    // server's writer waits in a send (up to its 10 s deadline), longer than shutdown waits for
    // connections (5 s), so its task outlives `run` holding the server's state.
    let (stuck, _) = tokio_tungstenite::connect_async(server.ws_url()).await.expect("connect");
    let (mut sink, stream) = futures_util::StreamExt::split(stuck);
    let flood = tokio::spawn(async move {
        for _ in 0..40_000 {
            if sink.feed(Message::text(r#"{"type":"stats"}"#)).await.is_err() {
                break;
            }
        }
        let _ = sink.flush().await;
        sink
    });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    server.stop_keeping_data().await.expect("a clean stop");
    // The lock is free now: a second server opens the same chain at once, with every block.
    let length = tokio::task::spawn_blocking(move || {
        let bin = spawn_binary(&data, ZEROS).expect("the directory is free");
        chain_length(&bin)
    })
    .await
    .expect("join");
    assert_eq!(length, 2);
    flood.abort();
    drop(stream);
}
