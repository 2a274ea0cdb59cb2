//! The OpenAPI document against the live server: schemathesis (PyPI) generates requests from
//! `pool-server/openapi.json` (valid ones, boundary cases and invalid ones) and runs all its checks,
//! among them: no 5xx, every status code and body as documented, invalid input refused with a
//! 4xx, valid input accepted, 405 for undeclared methods. Bounded (100 examples per operation,
//! a fixed seed) to stay well under a minute. Never skipped: without schemathesis this test fails
//! and says to run `scripts/setup`.

use std::process::Command;

use crate::support::Server;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_conforms_to_its_openapi_document() {
    let server = Server::start(6).await;
    let url = server.url("");
    // schemathesis keeps a cache directory in its working directory: not in the checkout.
    let scratch = tempfile::tempdir().expect("tempdir");
    let cwd = scratch.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .current_dir(cwd)
            .args(["run", SPEC, "--url", &url, "--checks", "all", "--max-examples", "100"])
            .args(["--seed", "20261125", "--request-timeout", "10", "--no-color"])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
    })
    .await
    .expect("join")
    .expect("schemathesis is installed (scripts/setup installs tests/requirements.txt)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A run that tested nothing would also exit 0.
    assert!(report.contains("Tested: 12"), "not every operation was tested:\n{report}");
}
