//! Shares (issue 12) against a real pool-server started in-process with a low share target:
//! the miner opts in, sends shares that are accepted, goes on mining after each, and the
//! server's `GET /workers` lists it; `--no-shares` changes nothing for blocks; a server that
//! answers the opt-in with an `error` (one without shares) is mined as before, with one line.

use futures_util::StreamExt;
use pool_server::serve::Limits;
use pool_server::shares::ShareSettings;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use ws_miner::{Event, Outcome};

use crate::support::{
    MinerRun, Pool, ServerWs, WsServer, block, block_frame, config, recv_proof, result_frame, send,
    solves, summary, within, ws_endpoint,
};

/// Shares from 8 leading zero bits, vardiff toward one a second, no proof rate limit.
fn limits() -> Limits {
    Limits {
        proof_rate: 1_000_000,
        shares: ShareSettings { interval: Duration::from_secs(1), start_bits: 8, min_bits: 4 },
        ..Limits::default()
    }
}

/// Returns the pool's `GET /workers` list.
async fn workers(pool: &Pool) -> Vec<Value> {
    let body: Value = within("GET /workers", async {
        reqwest::get(format!("http://{}/workers", pool.addr))
            .await
            .expect("GET /workers")
            .json()
            .await
            .expect("a JSON answer")
    })
    .await;
    body["workers"].as_array().cloned().expect("a workers list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opts_in_sends_accepted_shares_and_keeps_mining_after_each() {
    // Nine hex zeroes (36 bits): no block is found while the test runs, so every proof sent
    // is a share and the search must go on after each.
    let pool = Pool::start_limits(9, limits()).await;
    let mut config = config(ws_endpoint(pool.addr), "sharer");
    // A real pool-server: the `shares` line asks it for its figure.
    config.server_balance = true;
    config.shares_report = Duration::from_millis(100);
    let mut miner = MinerRun::start(config);
    let bits = miner
        .wait_for("the share target", |e| match e {
            Event::ShareTarget { bits } => Some(*bits),
            _ => None,
        })
        .await;
    assert_eq!(bits, 8, "the pool's start target");
    let mut accepted = 0;
    while accepted < 10 {
        let (ok, index) = miner
            .wait_for("a share's answer", |e| match e {
                Event::ShareResult { accepted, index, .. } => Some((*accepted, *index)),
                _ => None,
            })
            .await;
        // Every share is for the genesis block: one search, never stopped by a share.
        assert_eq!(index, Some(1));
        accepted += u32::from(ok);
    }
    let ended = |e: &Event| {
        matches!(e, Event::SearchFinished { .. } | Event::SearchAborted { .. })
            || matches!(e, Event::SearchStarted { index, .. } if *index != Some(1))
    };
    assert!(!miner.seen.iter().any(ended), "a share ended the search: {:#?}", miner.seen);
    // The pool counts them for the miner's id (its figures are reused for up to 250 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let me = loop {
        let listed = workers(&pool).await;
        let me = listed.iter().find(|w| w["id"] == "sharer").cloned().expect("in /workers");
        if me["shares"].as_u64().unwrap_or(0) >= 10 || tokio::time::Instant::now() > deadline {
            break me;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(me["shares"].as_u64().unwrap_or(0) >= 10, "{me}");
    assert!(me["hashrate"].as_f64().unwrap_or(0.0) > 0.0, "{me}");
    // The periodic line: the counts, the pool's figure for this id, the miner's own.
    let (shown, pool_rate, source, own) = miner
        .wait_for("a shares line with the pool's figure", |e| match e {
            Event::Shares { accepted, pool_hashrate, pool_source, hashrate, .. }
                if *pool_source == "workers" =>
            {
                Some((*accepted, *pool_hashrate, *pool_source, *hashrate))
            }
            _ => None,
        })
        .await;
    assert!(shown >= 10 && pool_rate > 0.0 && own > 0.0, "{shown} {pool_rate} {source} {own}");
    let (outcome, events) = miner.stop().await;
    assert_eq!(outcome, Outcome::Interrupted);
    let s = summary(&events);
    assert!(s.shares_accepted >= 10 && s.shares_sent >= s.shares_accepted, "{s:?}");
    // Shares already on their way when the pool raised the target may be refused, never most.
    assert!(s.shares_invalid * 2 < s.shares_sent, "{s:?}");
    assert!(Event::Summary(s).to_plain().contains("summary: shares: "));
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_still_won_while_shares_are_mined() {
    // Four hex zeroes (16 bits) with shares from 8: blocks come quickly, shares between them.
    let pool = Pool::start_limits(4, limits()).await;
    let mut miner = MinerRun::start(config(ws_endpoint(pool.addr), "both"));
    for _ in 0..3 {
        miner.wait_for("a won block", |e| matches!(e, Event::Accepted { .. }).then_some(())).await;
    }
    let (_, events) = miner.stop().await;
    let s = summary(&events);
    assert!(s.blocks_won >= 3, "{s:?}");
    assert!(events.iter().any(|e| matches!(e, Event::ShareTarget { .. })));
    // The chain records the wins, as without shares.
    let chain = pool.chain().await;
    let won = chain.iter().filter(|b| b["transactions"].to_string().contains("\"both\"")).count();
    assert!(won as u64 >= s.blocks_won, "{won} blocks in the chain, {s:?}");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shares_mines_blocks_only() {
    let pool = Pool::start_limits(3, limits()).await;
    let mut config = config(ws_endpoint(pool.addr), "plain");
    config.shares = false;
    let mut miner = MinerRun::start(config);
    for _ in 0..2 {
        miner.wait_for("a won block", |e| matches!(e, Event::Accepted { .. }).then_some(())).await;
    }
    let (_, events) = miner.stop().await;
    let share_events = events.iter().filter(|e| {
        matches!(
            e,
            Event::ShareTarget { .. }
                | Event::ShareResult { .. }
                | Event::Shares { .. }
                | Event::SharesRefused { .. }
        )
    });
    assert_eq!(share_events.count(), 0, "{events:#?}");
    let s = summary(&events);
    assert_eq!((s.shares_sent, s.shares_dropped), (0, 0), "{s:?}");
    assert!(!Event::Summary(s).to_plain().contains("shares"));
    // Not opted in: the pool has no shares from it.
    assert!(workers(&pool).await.iter().all(|w| w["id"] != "plain"));
    pool.stop().await;
}

/// Reads the miner's opt-in (its first frame on a connection) and answers it as a server
/// without shares does.
async fn refuse_opt_in(ws: &mut ServerWs) {
    let first = within("the opt-in", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(_)) => {}
                other => panic!("connection ended before the opt-in: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(serde_json::from_str::<Value>(&first).ok(), Some(json!({"type": "shares"})));
    let refusal = json!({"type": "error", "message": "unknown message type \"shares\""});
    send(ws, Message::text(refusal.to_string())).await;
}

#[tokio::test]
async fn a_server_without_shares_is_mined_as_before_with_one_line() {
    let server = WsServer::bind().await;
    let mut miner = MinerRun::start(config(ws_endpoint(server.addr), "alice"));
    for round in 1..=2u64 {
        let mut ws = server.accept().await;
        refuse_opt_in(&mut ws).await;
        let b = block(round, "old-server");
        send(&mut ws, block_frame(&b, 3)).await;
        let proof = recv_proof(&mut ws).await;
        assert!(solves(&b, 3, &proof["proof"]));
        assert_eq!(proof["index"], round, "a plain proof, as before");
        send(&mut ws, result_frame(true, "New Block Forged", None, round + 1)).await;
        miner.wait_for("the win", |e| matches!(e, Event::Accepted { .. }).then_some(())).await;
        // Closing makes the miner reconnect, and opt in again.
        drop(ws);
    }
    let (_, events) = miner.stop().await;
    let refused = events.iter().filter(|e| matches!(e, Event::SharesRefused { .. })).count();
    assert_eq!(refused, 1, "one line however often it reconnects: {events:#?}");
    let noise = events.iter().filter(|e| {
        matches!(e, Event::ServerError { .. } | Event::Ignored { .. } | Event::Rejected { .. })
    });
    assert_eq!(noise.count(), 0, "{events:#?}");
    let s = summary(&events);
    assert_eq!((s.blocks_won, s.shares_sent), (2, 0), "{s:?}");
}
