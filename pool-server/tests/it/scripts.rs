//! The scripts run the programs where cargo puts them (issue 21): with `CARGO_TARGET_DIR` set,
//! `scripts/watch` and `scripts/demo` run the binaries of that directory, not `target/release`.
//!
//! Cheap: a `cargo` on `PATH` ahead of the real one makes `cargo build` do nothing and hands
//! every other command (`cargo metadata`, which says where the target directory is) to the real
//! cargo. The release programs it would have built are stand-ins in the temporary target
//! directory: scripts that note that they ran, then run this test build's own binaries.
//!
//! And `scripts/test`'s closing line (`scripts/test-summary`): a test that skips shows its
//! `SKIPPED` line, although cargo captures the output of passing tests, and is counted; and
//! `scripts/unified`: one build serves both binaries.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::Server;

/// A temporary `CARGO_TARGET_DIR` with stand-ins for `release/pool-server` and
/// `release/ws-miner`, and a directory holding the `cargo` to put first on `PATH`.
struct FakeTarget {
    dir: tempfile::TempDir,
}

impl FakeTarget {
    fn new() -> FakeTarget {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool_server = PathBuf::from(env!("CARGO_BIN_EXE_pool-server"));
        let ws_miner = pool_server.with_file_name("ws-miner");
        assert!(
            ws_miner.exists(),
            "{} is missing: run the workspace's tests (scripts/test), which build it",
            ws_miner.display()
        );
        let release = dir.path().join("target/release");
        std::fs::create_dir_all(&release).expect("release dir");
        for (name, real) in [("pool-server", &pool_server), ("ws-miner", &ws_miner)] {
            let ran = dir.path().join(format!("{name}.ran"));
            let script =
                format!("#!/bin/sh\ntouch '{}'\nexec '{}' \"$@\"\n", ran.display(), real.display());
            executable(&release.join(name), &script);
        }
        let real_cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        std::fs::create_dir(dir.path().join("bin")).expect("bin dir");
        let cargo = format!(
            "#!/bin/sh\nif [ \"$1\" = build ]; then exit 0; fi\nexec '{real_cargo}' \"$@\"\n"
        );
        executable(&dir.path().join("bin/cargo"), &cargo);
        FakeTarget { dir }
    }

    /// Returns `script` (in `scripts/`) to run with this target directory and `cargo`.
    fn command(&self, script: &str) -> Command {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts").join(script);
        let mut command = Command::new(path);
        let search = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.dir.path().join("bin")];
        paths.extend(std::env::split_paths(&search));
        command
            .env("PATH", std::env::join_paths(paths).expect("a PATH"))
            .env("CARGO_TARGET_DIR", self.dir.path().join("target"))
            .env_remove("WS_MINER")
            .stdin(Stdio::null());
        command
    }

    /// Whether the stand-in for `name` ran.
    fn ran(&self, name: &str) -> bool {
        self.dir.path().join(format!("{name}.ran")).exists()
    }
}

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[tokio::test]
async fn scripts_watch_runs_the_ws_miner_in_cargo_target_dir() {
    let server = Server::start(2).await;
    let target = FakeTarget::new();
    let mut watch = target
        .command("watch")
        .arg(server.ws_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/watch");
    let stdout = watch.stdout.take().expect("piped");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        line
    });
    let first = tokio::time::timeout(Duration::from_secs(60), first).await;
    let _ = watch.kill();
    let output = watch.wait_with_output().expect("wait for scripts/watch");
    let first = first.expect("a line within 60 s").expect("reader");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(first.starts_with("#1  genesis"), "{first:?}; stderr: {stderr}");
    assert!(target.ran("ws-miner"), "stderr: {stderr}");
}

#[tokio::test]
async fn scripts_demo_runs_the_programs_in_cargo_target_dir() {
    let target = FakeTarget::new();
    let output = tokio::task::spawn_blocking(move || {
        let output = target
            .command("demo")
            .env("DEMO_SECONDS", "1")
            .env("DEMO_DIFFICULTY", "2")
            .output()
            .expect("run scripts/demo");
        (output, target.ran("pool-server"), target.ran("ws-miner"))
    });
    let (output, server_ran, miner_ran) = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("demo ends")
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(server_ran && miner_ran, "{stdout}\n{stderr}");
    assert!(stdout.contains("leaderboard after"), "{stdout}\n{stderr}");
}

/// Skips (when `SKIP_NOTICE_DEMO` is set) as a test does when a tool is missing; otherwise does
/// nothing. Run by [`a_skip_shows_in_the_test_output_and_is_counted`] as a child process.
#[test]
fn skip_notice_demo() {
    if std::env::var_os("SKIP_NOTICE_DEMO").is_some() {
        test_support::skip("REQUIRE_SKIP_NOTICE_DEMO", "skip notice demo: nothing is missing");
    }
}

#[test]
fn a_skip_shows_in_the_test_output_and_is_counted() {
    // This test binary, run as cargo runs it (output captured), on the one test that skips.
    let exe = std::env::current_exe().expect("the test binary");
    let output = Command::new(exe)
        .args(["--exact", "scripts::skip_notice_demo", "--test-threads", "1"])
        .env("SKIP_NOTICE_DEMO", "1")
        .env_remove("REQUIRE_SKIP_NOTICE_DEMO")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // scripts/test adds up stdout and stderr together.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log");
    std::fs::write(&log, format!("{stdout}\n{stderr}")).expect("write the log");
    let summary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-summary");
    let said = Command::new(summary).arg(&log).output().expect("run scripts/test-summary");
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(
        said.contains("SKIPPED skip notice demo: nothing is missing"),
        "{said}\n{stdout}\n{stderr}"
    );
    assert!(said.ends_with("tests: 1 passed (1 of them skipped), 0 failed\n"), "{said}");
}

#[test]
fn one_build_serves_pool_server_and_ws_miner() {
    // Every crate both binaries depend on has the same features under `-p pool-server` as
    // under `-p ws-miner` (scripts/unified asks `cargo tree`), so the README's two commands
    // and the scripts' builds compile each dependency once.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/unified");
    let mut command = Command::new(script);
    if let Ok(cargo) = std::env::var("CARGO") {
        // The cargo that runs this test, wherever it is installed.
        let dir = Path::new(&cargo).parent().map(Path::to_path_buf).unwrap_or_default();
        let search = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir];
        paths.extend(std::env::split_paths(&search));
        command.env("PATH", std::env::join_paths(paths).expect("a PATH"));
    }
    let output = command.output().expect("run scripts/unified");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "built twice, with these features:\n{stdout}{stderr}");
}
