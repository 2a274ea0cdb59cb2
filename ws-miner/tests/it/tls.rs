//! TLS end to end (issue 14): `pool-server --tls-cert/--tls-key` with certificates made at test
//! time by a throw-away CA (rcgen); the miner mines over `wss://` and `https://` with `--ca`, and
//! without it says in one line that the certificate is not trusted, then keeps retrying.

use crate::support::*;
use std::path::{Path, PathBuf};
use ws_miner::{Event, Outcome};

const BIN: &str = env!("CARGO_BIN_EXE_ws-miner");

/// A test CA and a server certificate it signed for 127.0.0.1 and localhost, as PEM files.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "ws-miner test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
            .expect("server params");
        params.distinguished_name.push(DnType::CommonName, "pool-server test");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        TestCa {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            dir,
        }
    }
}

fn endpoint(url: &str) -> ws_miner::Endpoint {
    ws_miner::cli::parse_endpoint(url).expect("valid URL")
}

fn tls_config(ca: Option<&Path>) -> ws_miner::Config {
    let mut cfg = config(endpoint("wss://127.0.0.1:1/ws"), "tess");
    cfg.tls = Some(ws_miner::tls::client_config(ca).expect("TLS settings"));
    cfg
}

#[tokio::test]
async fn mines_over_wss_and_https_with_the_test_ca() {
    let ca = TestCa::new();
    let pool = Pool::start_tls(EASY, &ca.cert, &ca.key).await;
    for url in [format!("wss://{}/ws", pool.addr), format!("https://{}", pool.addr)] {
        let mut cfg = tls_config(Some(&ca.ca));
        cfg.endpoint = endpoint(&url);
        cfg.once = true;
        // The balance comes over https:// with the same CA.
        cfg.server_balance = true;
        let (outcome, events) = MinerRun::start(cfg).finish().await;
        for e in &events {
            println!("{}", e.to_plain());
        }
        assert_eq!(outcome, Outcome::Won, "{url}: {events:#?}");
        let wss = format!("wss://{}/ws", pool.addr);
        assert!(
            events.iter().any(|e| matches!(e, Event::Connected { url, .. } if *url == wss)),
            "{events:#?}"
        );
        assert!(summary(&events).server_coins.is_some_and(|c| c >= 1), "{events:#?}");
    }
    pool.stop().await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_one_line_naming_ca_then_retried() {
    let ca = TestCa::new();
    let pool = Pool::start_tls(EASY, &ca.cert, &ca.key).await;
    let mut cfg = tls_config(None);
    cfg.endpoint = endpoint(&format!("wss://{}/ws", pool.addr));
    let mut miner = MinerRun::start(cfg);
    for _ in 0..2 {
        let error = miner
            .wait_for("a refused certificate", |e| match e {
                Event::ConnectFailed { error, .. } => Some(error.clone()),
                _ => None,
            })
            .await;
        println!("{error}");
        assert!(error.contains("not trusted") && error.contains("--ca FILE"), "{error}");
    }
    let (outcome, _) = miner.stop().await;
    assert_eq!(outcome, Outcome::Interrupted);
    pool.stop().await;
}

#[tokio::test]
async fn plain_ws_to_a_tls_port_fails_cleanly() {
    let ca = TestCa::new();
    let pool = Pool::start_tls(EASY, &ca.cert, &ca.key).await;
    let mut miner = MinerRun::start(config(ws_endpoint(pool.addr), "tess"));
    let error = miner
        .wait_for("a failed attempt", |e| match e {
            Event::ConnectFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .await;
    println!("{error}");
    miner.stop().await;
    pool.stop().await;
}

#[tokio::test]
async fn the_binary_takes_ca_and_refuses_a_missing_file() {
    let ca = TestCa::new();
    let pool = Pool::start_tls(EASY, &ca.cert, &ca.key).await;
    let url = format!("wss://{}/ws", pool.addr);
    let ca_path = ca.ca.to_str().expect("UTF-8 path").to_owned();
    let dir = ca.dir.path().to_owned();
    let run = move |args: Vec<String>| {
        std::process::Command::new(BIN).args(args).current_dir(&dir).output().expect("run")
    };
    let args: Vec<String> = ["--id", "tess", "--once", "-t", "1", "--ca", &ca_path, &url]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let out = within(
        "ws-miner --once over wss",
        tokio::task::spawn_blocking({
            let run = run.clone();
            move || run(args)
        }),
    )
    .await
    .expect("runner");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("block #2: won with proof "), "{stdout}");
    let missing = vec!["--id".into(), "tess".into(), "--ca".into(), "/nonexistent/ca.pem".into()];
    let out = tokio::task::spawn_blocking(move || run(missing)).await.expect("runner");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--ca /nonexistent/ca.pem"), "{stderr}");
    println!("{stderr}");
    pool.stop().await;
}

/// Makes a self-signed certificate for 127.0.0.1 the way a new user does, with OpenSSL 3's
/// one-liner (which marks it `CA:TRUE`); returns the certificate's and the key's paths, or
/// `None` after saying why when `openssl` cannot run here (a failure with `REQUIRE_OPENSSL`).
fn openssl_self_signed(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status();
    match made {
        Ok(status) if status.success() => Some((cert, key)),
        other => {
            test_support::skip(
                "REQUIRE_OPENSSL",
                &format!("TLS test with an OpenSSL certificate: `openssl req` failed: {other:?}"),
            );
            None
        }
    }
}

#[tokio::test]
async fn an_openssl_self_signed_certificate_given_with_ca_is_trusted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some((cert, key)) = openssl_self_signed(dir.path()) else { return };
    let pool = Pool::start_tls(EASY, &cert, &key).await;
    for url in [format!("wss://{}/ws", pool.addr), format!("https://{}", pool.addr)] {
        let mut cfg = tls_config(Some(&cert));
        cfg.endpoint = endpoint(&url);
        let mut miner = MinerRun::start(cfg);
        let connected = miner
            .wait_for("the first connection attempt", |e| match e {
                Event::Connected { .. } => Some(Ok(())),
                Event::ConnectFailed { error, .. } => Some(Err(error.clone())),
                _ => None,
            })
            .await;
        miner.stop().await;
        assert_eq!(connected, Ok(()), "{url}");
    }
    // Pinning is to that certificate: another one made the same way is not trusted.
    let other = tempfile::tempdir().expect("temp dir");
    let Some((other_cert, _)) = openssl_self_signed(other.path()) else { return };
    let mut cfg = tls_config(Some(&other_cert));
    cfg.endpoint = endpoint(&format!("wss://{}/ws", pool.addr));
    let mut miner = MinerRun::start(cfg);
    let error = miner
        .wait_for("a refused certificate", |e| match e {
            Event::ConnectFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .await;
    miner.stop().await;
    assert!(error.contains("not trusted"), "{error}");
    pool.stop().await;
}
