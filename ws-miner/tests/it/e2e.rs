//! End to end against the real `pool-server`, started in-process on 127.0.0.1:0 with a
//! throw-away SQLite data dir.

use crate::support::*;
use protocol::Difficulty;
use test_support::{assert_valid_chain, rewarded};
use ws_miner::{Event, Outcome};

#[tokio::test]
async fn once_wins_a_block_on_the_real_server() {
    let pool = Pool::start(EASY).await;
    let mut cfg = config(ws_endpoint(pool.addr), "alice");
    cfg.once = true;
    let (outcome, events) = MinerRun::start(cfg).finish().await;
    assert_eq!(outcome, Outcome::Won, "{events:#?}");
    let proof = events
        .iter()
        .find_map(|e| match e {
            Event::Accepted { proof, index: Some(1), .. } => Some(*proof),
            _ => None,
        })
        .expect("block 1 accepted");
    let chain = pool.chain().await;
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1]["proof"], proof);
    assert_eq!(rewarded(&chain[1]), "alice");
    pool.stop().await;
}

#[tokio::test]
async fn an_http_url_finds_the_websocket_endpoint() {
    let pool = Pool::start(EASY).await;
    let mut cfg = config(http_endpoint(pool.addr), "hugo");
    cfg.once = true;
    let (outcome, events) = MinerRun::start(cfg).finish().await;
    assert_eq!(outcome, Outcome::Won);
    assert!(events.iter().any(|e| matches!(e, Event::Connected { protocol: "websocket", .. })));
    assert!(!events.iter().any(|e| matches!(e, Event::FallbackToHttp { .. })));
    pool.stop().await;
}

#[tokio::test]
async fn two_miners_race_and_every_block_has_one_winner() {
    let pool = Pool::start(EASY).await;
    let mut alice = config(ws_endpoint(pool.addr), "alice");
    alice.threads = 1;
    let mut bob = config(ws_endpoint(pool.addr), "bob");
    bob.threads = 1;
    let mut alice = MinerRun::start(alice);
    let bob = MinerRun::start(bob);
    const BLOCKS: u64 = 20;
    // Every forged block is pushed to both: wait until alice is mining block BLOCKS + 1.
    alice
        .wait_for("block BLOCKS + 1", |e| match e {
            Event::SearchStarted { index: Some(i), .. } if *i > BLOCKS => Some(()),
            _ => None,
        })
        .await;
    let (_, alice_events) = alice.stop().await;
    let (_, bob_events) = bob.stop().await;
    let (a, b) = (summary(&alice_events), summary(&bob_events));
    println!("alice: {a:?}\nbob:   {b:?}");
    let chain = pool.chain().await;
    pool.stop().await;
    assert_valid_chain(&chain, Difficulty::new(EASY).expect("in range"));
    let mut wins = std::collections::HashMap::new();
    for block in &chain[1..] {
        *wins.entry(rewarded(block).to_owned()).or_insert(0u64) += 1;
    }
    // Each miner counted every win it was told about; a proof still in flight when it was
    // stopped may have won without the miner hearing of it (at most one each).
    for (who, s) in [("alice", &a), ("bob", &b)] {
        let on_chain = wins.get(who).copied().unwrap_or(0);
        assert!((s.coins..=s.coins + 1).contains(&on_chain), "{who}: {s:?} vs chain {wins:?}");
    }
    assert!(chain.len() as u64 > BLOCKS, "{} blocks", chain.len());
    // Random start proofs: equal miners share the blocks (one taking all 20 has odds 2^-19).
    assert!(a.coins > 0 && b.coins > 0, "both win blocks when racing on equal terms: {wins:?}");
    assert_eq!(a.rejected_invalid + b.rejected_invalid, 0);
}
