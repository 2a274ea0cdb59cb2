//! Failover across an ordered list of pools (`ws-miner URL [URL...]`): two real pool-servers
//! in-process (and a course Flask server), the first stopped and started again on the same port
//! and data dir; and scripted servers for which proofs are sent where after a switch.

use crate::course::Flask;
use crate::support::*;
use serde_json::Value;
use ws_miner::{Endpoint, Event};

/// Returns the miner configuration for the pools `endpoints`, the preferred first.
fn pools_config(endpoints: Vec<Endpoint>, id: &str) -> ws_miner::Config {
    let mut endpoints = endpoints.into_iter();
    let mut cfg = config(endpoints.next().expect("a pool"), id);
    cfg.failover = endpoints.collect();
    cfg
}

/// Returns the URL the miner names `endpoint` by.
fn url(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::WebSocket(url) => url.to_string(),
        Endpoint::Http { base, .. } => base.to_string(),
    }
}

/// Returns how many blocks of `chain` reward `id`.
fn won_by(chain: &[Value], id: &str) -> usize {
    chain
        .iter()
        .filter(|b| {
            b["transactions"].as_array().is_some_and(|txs| {
                txs.iter().any(|t| t["sender"] == "0" && t["recipient"].as_str() == Some(id))
            })
        })
        .count()
}

/// Waits for the next pool switch; returns `(from, to)`.
async fn switch(miner: &mut MinerRun) -> (String, String) {
    miner
        .wait_for("a pool switch", |e| match e {
            Event::PoolSwitch { from, to, why } => {
                println!("{}", e.to_plain());
                assert!(!why.is_empty());
                Some((from.clone(), to.clone()))
            }
            _ => None,
        })
        .await
}

/// Waits for the next won block; returns its number and the proof.
async fn accepted(miner: &mut MinerRun) -> (u64, u64) {
    miner
        .wait_for("a won block", |e| match e {
            Event::Accepted { block: Some(block), proof, .. } => Some((*block, *proof)),
            _ => None,
        })
        .await
}

/// Asserts that `chain` holds block `won.0` forged with proof `won.1` for `id`.
#[track_caller]
fn on_chain(chain: &[Value], won: (u64, u64), id: &str) {
    let (number, proof) = won;
    let block = chain.iter().find(|b| b["index"] == number);
    let block = block.unwrap_or_else(|| panic!("block {number} is on the chain: {chain:#?}"));
    assert_eq!(block["proof"], proof, "{block}");
    assert_eq!(won_by(std::slice::from_ref(block), id), 1, "{block}");
}

fn switches(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PoolSwitch { from, to, .. } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn moves_to_the_second_pool_when_the_first_stops_and_back_when_it_returns() {
    let first = Pool::start(EASY).await;
    let second = Pool::start(EASY).await;
    let (a, b) = (ws_endpoint(first.addr), ws_endpoint(second.addr));
    let (url_a, url_b) = (url(&a), url(&b));
    let mut miner = MinerRun::start(pools_config(vec![a, b], "fo"));
    let won = accepted(&mut miner).await;
    on_chain(&first.chain().await, won, "fo");

    let (addr, data) = first.stop_keeping().await;
    assert_eq!(switch(&mut miner).await, (url_a.clone(), url_b.clone()));
    let won = accepted(&mut miner).await;
    on_chain(&second.chain().await, won, "fo");

    // The first comes back: the same chain on the same port.
    let first = Pool::restart(EASY, addr, data).await;
    assert!(first.chain().await.len() > 1, "the first pool is back with its chain");
    assert_eq!(switch(&mut miner).await, (url_b.clone(), url_a.clone()));
    let won = accepted(&mut miner).await;
    let (_, events) = miner.stop().await;
    on_chain(&first.chain().await, won, "fo");
    assert_eq!(
        switches(&events),
        vec![(url_a.clone(), url_b.clone()), (url_b, url_a)],
        "one event per switch"
    );
    // Each proof went to the pool whose block it solves: none was invalid (a proof refused by
    // the server's proof rate limit, which EASY blocks can reach, is counted invalid too).
    let invalid: Vec<String> = events
        .iter()
        .filter(|e| {
            matches!(e, Event::Rejected { reason: "invalid", message, .. }
                if !message.contains("too many proofs"))
        })
        .map(Event::to_plain)
        .collect();
    assert!(invalid.is_empty(), "{invalid:#?}");
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_course_http_pool_is_mined_on_when_the_pool_server_stops() {
    let first = Pool::start(EASY).await;
    let flask = Flask::start(&[]).await;
    let (a, b) = (ws_endpoint(first.addr), http_endpoint(flask.addr));
    let (url_a, url_b) = (url(&a), url(&b));
    let mut cfg = pools_config(vec![a, b], "fh");
    // The Flask server wants 3 zeroes and does not say so.
    cfg.zeros = protocol::Difficulty::new(EASY).expect("in range");
    let mut miner = MinerRun::start(cfg);
    let won = accepted(&mut miner).await;
    on_chain(&first.chain().await, won, "fh");

    let (addr, data) = first.stop_keeping().await;
    assert_eq!(switch(&mut miner).await, (url_a.clone(), url_b.clone()));
    miner
        .wait_for("the course HTTP protocol", |e| {
            matches!(e, Event::Connected { protocol: "http", .. }).then_some(())
        })
        .await;
    let won = accepted(&mut miner).await;
    on_chain(&flask.chain().await, won, "fh");

    let first = Pool::restart(EASY, addr, data).await;
    assert_eq!(switch(&mut miner).await, (url_b.clone(), url_a.clone()));
    let won = accepted(&mut miner).await;
    let (_, events) = miner.stop().await;
    on_chain(&first.chain().await, won, "fh");
    let lines: Vec<String> = events
        .iter()
        .filter(|e| matches!(e, Event::PoolSwitch { .. } | Event::Disconnected { .. }))
        .map(Event::to_plain)
        .collect();
    assert_eq!(
        switches(&events),
        vec![(url_a.clone(), url_b.clone()), (url_b, url_a)],
        "{lines:#?}"
    );
    first.stop().await;
}

/// A proof found on the first pool's block and unanswered when that pool went away.
async fn proof_in_flight_when_the_first_goes(
    miner: &mut MinerRun,
    first: WsServer,
    first_block: &Value,
) -> Value {
    let mut ws = first.accept().await;
    send(&mut ws, block_frame(first_block, EASY)).await;
    let proof = recv_proof(&mut ws).await;
    // Gone without an answer: listener and connection.
    drop(ws);
    drop(first);
    let _ = switch(miner).await;
    proof
}

#[tokio::test]
async fn a_proof_is_not_sent_to_a_pool_whose_chain_it_does_not_extend() {
    let (first, second) = (WsServer::bind().await, WsServer::bind().await);
    let (a, b) = (ws_endpoint(first.addr), ws_endpoint(second.addr));
    let url_b = url(&b);
    let mut miner = MinerRun::start(pools_config(vec![a, b], "np"));
    let proof = proof_in_flight_when_the_first_goes(&mut miner, first, &block(1, "a")).await;

    // The second pool is on another chain: its block 1 is not the first's.
    let mut ws = second.accept().await;
    send(&mut ws, block_frame(&block(1, "b"), NEVER)).await;
    let line = miner
        .wait_for("the proof dropped", |e| match e {
            Event::ProofNotSent { proof: p, server, server_block, .. } => {
                assert_eq!(json_u64(&proof["proof"]), *p);
                assert_eq!((server.as_str(), *server_block), (url_b.as_str(), Some(2)));
                Some(e.to_plain())
            }
            Event::Accepted { .. } | Event::Rejected { .. } => panic!("judged: {e:?}"),
            _ => None,
        })
        .await;
    println!("{line}");
    assert!(line.contains("not sent to"), "{line}");
    // The first proof this pool ever gets is for its own block 2, not the carried one.
    let own = block(2, "b");
    send(&mut ws, block_frame(&own, EASY)).await;
    let got = recv_proof(&mut ws).await;
    assert_eq!(got["index"], 2, "{got}");
    assert!(solves(&own, EASY, &got["proof"]));
    miner.stop().await;
}

#[tokio::test]
async fn a_proof_found_after_the_switch_on_the_old_block_is_not_sent_to_the_new_pool() {
    let (first, second) = (WsServer::bind().await, WsServer::bind().await);
    let (a, b) = (ws_endpoint(first.addr), ws_endpoint(second.addr));
    let mut miner = MinerRun::start(pools_config(vec![a, b], "af"));
    let mut ws = first.accept().await;
    // A block that takes a while to solve; the first pool goes at once, the search goes on.
    let old = block(1, "a");
    send(&mut ws, block_frame(&old, 6)).await;
    drop(ws);
    drop(first);
    let _ = switch(&mut miner).await;
    let mut ws = second.accept().await;
    let found = miner
        .wait_for("the proof of the old block", |e| match e {
            Event::SearchFinished { index: Some(1), proof, .. } => Some(*proof),
            _ => None,
        })
        .await;
    // Only now does the second pool serve its own block: the old proof was held back.
    let own = block(7, "b");
    send(&mut ws, block_frame(&own, EASY)).await;
    let got = recv_proof(&mut ws).await;
    assert_eq!(got["index"], 7, "the old block's proof {found} reached the new pool: {got}");
    assert!(solves(&own, EASY, &got["proof"]));
    let (_, events) = miner.stop().await;
    assert!(
        events.iter().any(|e| matches!(e, Event::ProofNotSent { proof, .. } if *proof == found)),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_proof_is_sent_to_the_next_pool_when_its_block_is_that_pools_block() {
    let (first, second) = (WsServer::bind().await, WsServer::bind().await);
    let (a, b) = (ws_endpoint(first.addr), ws_endpoint(second.addr));
    let mut miner = MinerRun::start(pools_config(vec![a, b], "ys"));
    let shared = block(1, "shared");
    let proof = proof_in_flight_when_the_first_goes(&mut miner, first, &shared).await;

    // The second pool serves the same block (the same chain): the proof extends it.
    let mut ws = second.accept().await;
    send(&mut ws, block_frame(&shared, EASY)).await;
    let resent = recv_proof(&mut ws).await;
    assert_eq!(resent, proof);
    send(&mut ws, result_frame(true, "New Block Forged", None, 2)).await;
    accepted(&mut miner).await;
    let (_, events) = miner.stop().await;
    assert!(!events.iter().any(|e| matches!(e, Event::ProofNotSent { .. })));
}

#[tokio::test]
async fn one_url_reports_and_retries_as_before() {
    let server = WsServer::bind().await;
    let addr = server.addr;
    drop(server);
    let mut miner = MinerRun::start(config(ws_endpoint(addr), "one"));
    miner
        .wait_for("a failed attempt", |e| matches!(e, Event::ConnectFailed { .. }).then_some(()))
        .await;
    miner
        .wait_for("a second attempt", |e| matches!(e, Event::ConnectFailed { .. }).then_some(()))
        .await;
    let (_, events) = miner.stop().await;
    assert!(!events.iter().any(|e| matches!(e, Event::PoolSwitch { .. })));
}

fn json_u64(value: &Value) -> u64 {
    value.as_u64().expect("a numeric proof")
}
