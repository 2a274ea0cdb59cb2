//! The dashboard in a real headless Chromium: runs `tests/browser/dashboard.test.mjs`
//! (playwright-core driving Debian's `chromium`) against a real server on `127.0.0.1:0`.
//!
//! It skips, saying why, when `chromium`, `node` or the npm packages are missing, unless
//! `REQUIRE_BROWSER` is set (CI sets it), in which case their absence fails the test.
//! `DASHBOARD_SCREENSHOT=path.png` keeps a screenshot of the page at the end.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::support::{Server, Ws, opt_in, proof_with_bits, send_proof};

/// Guards against a hang only; the script normally takes seconds.
const SCRIPT_GUARD: Duration = Duration::from_secs(180);

/// What the browser test needs that is not there.
fn missing(dir: &Path, chromium: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium.exists() {
        missing.push(format!("{} (apt-get install chromium)", chromium.display()));
    }
    if !dir.join("node_modules/playwright-core").is_dir() {
        missing.push(format!("{}/node_modules (npm ci there, or scripts/setup)", dir.display()));
    }
    if std::process::Command::new("node").arg("--version").output().is_err() {
        missing.push("node".to_owned());
    }
    missing
}

#[tokio::test]
async fn dashboard_shows_new_blocks_live_in_chromium() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser");
    let chromium =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    let missing = missing(&dir, &chromium);
    if !missing.is_empty() {
        let what = missing.join(", ");
        test_support::skip("REQUIRE_BROWSER", &format!("dashboard browser test: missing {what}"));
        return;
    }

    let server = Server::start(3).await;
    // A second pool paying PPLNS, for how the page shows coins there.
    let pplns = Server::start_paying(
        3,
        pool_server::serve::Limits::default(),
        None,
        pool_server::payout::Payout::Pplns { window: 2 },
    )
    .await;
    // Two shares from "sharer", for the page's workers table.
    let (mut ws, hello) = Ws::connect_and_greet(&server.ws_url()).await;
    let bits = u32::try_from(opt_in(&mut ws).await).expect("bits");
    let mut proof = 0;
    for _ in 0..2 {
        proof = proof_with_bits(&hello["block"], bits, 12, proof + 1);
        let answer = send_proof(&mut ws, proof, "sharer", Some(1)).await;
        assert_eq!((&answer["type"], &answer["accepted"]), (&"share".into(), &true.into()));
    }
    let mut script = tokio::process::Command::new("node");
    script
        .args(["--test", "--test-reporter=spec", "dashboard.test.mjs"])
        .current_dir(&dir)
        .env("POOL_URL", server.url(""))
        .env("POOL_PPLNS_URL", pplns.url(""))
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // The script runs in a child process while this runtime keeps serving it.
    let out = tokio::time::timeout(SCRIPT_GUARD, script.output())
        .await
        .expect("the browser test finishes")
        .expect("node runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed ({}):\n{text}", out.status);
    assert!(text.contains("pass 2"), "the browser test did not run both tests:\n{text}");
}
