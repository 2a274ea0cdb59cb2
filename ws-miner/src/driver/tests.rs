//! The driver's rules, tested once, against a scripted transport (both real transports run
//! through the same [`drive`]; `tests/it` runs them against real servers): a new block aborts
//! the search, a proof whose block is gone is re-sent or dropped (or won), `--once`, verdicts
//! and their totals, Ctrl-C waiting for an answer in flight.

use super::*;
use crate::cli::Endpoint;
use crate::job::Dialect;
use crate::output::Summary;
use crate::search::Searcher;
use protocol::Difficulty;
use serde_json::json;

/// Builds a message from the proofs sent so far.
type Build = Box<dyn FnOnce(&[Found]) -> Incoming + Send>;

/// What the scripted transport does next, once at least `after` proofs were handed to `send`.
enum Cue {
    /// Returns this message.
    Say(Incoming),
    /// Returns the message built from the proofs sent so far.
    SayWith(Build),
    /// Sets the shutdown signal (Ctrl-C), then says nothing this time.
    CtrlC,
}

/// A transport that plays a script and records what the driver asks of it. When the script
/// is over it sets the shutdown signal, which ends the run.
struct Script {
    cues: VecDeque<(usize, Cue)>,
    /// Every proof handed to `send`, delivered or not.
    sent: Vec<Found>,
    /// How many of the next sends fail (the connection drops).
    failing_sends: usize,
    requests: usize,
    retries: usize,
    connected: bool,
    /// Shares handed to `send_share` and not answered yet; one at a time is let out.
    shares_awaiting: usize,
    ctrl_c: watch::Sender<bool>,
}

impl Transport for Script {
    async fn next(&mut self) -> Incoming {
        match self.cues.front() {
            Some((after, _)) if self.sent.len() >= *after => {}
            Some(_) => return pending().await,
            None => {
                let _ = self.ctrl_c.send(true);
                return pending().await;
            }
        }
        let Some((_, cue)) = self.cues.pop_front() else { return pending().await };
        let incoming = match cue {
            Cue::Say(incoming) => incoming,
            Cue::SayWith(build) => build(&self.sent),
            Cue::CtrlC => {
                let _ = self.ctrl_c.send(true);
                return pending().await;
            }
        };
        match &incoming {
            Incoming::Connected { .. } => self.connected = true,
            Incoming::Lost(_) => self.connected = false,
            Incoming::ShareVerdict { .. } => self.shares_awaiting -= 1,
            _ => {}
        }
        incoming
    }

    async fn send(&mut self, found: &Found) -> Result<(), String> {
        self.sent.push(found.clone());
        if self.failing_sends > 0 {
            self.failing_sends -= 1;
            self.connected = false;
            return Err("the connection dropped".into());
        }
        Ok(())
    }

    async fn request_block(&mut self) -> Result<(), String> {
        self.requests += 1;
        Ok(())
    }

    fn retry(&mut self) -> Duration {
        self.retries += 1;
        self.connected = false;
        Duration::from_millis(250)
    }

    fn is_connected(&self) -> bool {
        self.connected
    }

    fn share_window_open(&self) -> bool {
        self.connected && self.shares_awaiting == 0
    }

    /// Shares count as sent proofs for the cues.
    async fn send_share(&mut self, share: &Found) -> Result<bool, String> {
        if !self.share_window_open() {
            return Ok(false);
        }
        self.sent.push(share.clone());
        self.shares_awaiting += 1;
        Ok(true)
    }

    fn shares_awaiting(&self) -> bool {
        self.shares_awaiting > 0
    }

    fn url(&self) -> String {
        "scripted://pool".into()
    }
}

/// Zeroes that a proof needs: found in a few hundred attempts, or never.
const EASY: u64 = 1;
const NEVER: u64 = 64;

fn block(index: u64) -> Value {
    json!({ "index": index, "previous_hash": "00ab", "proof": 100 + index, "timestamp": 1.5,
            "transactions": [] })
}

fn connected() -> Cue {
    Cue::Say(Incoming::Connected { url: "scripted://pool".into(), protocol: "websocket" })
}

fn new_block(index: u64, zeros: u64) -> Cue {
    let block = block(index);
    let difficulty = Difficulty::new(zeros).expect("a valid difficulty");
    let work = Arc::new(Work::new(&block, difficulty, Dialect::Json));
    Cue::Say(Incoming::Block { block, work })
}

fn verdict(verdict: Verdict) -> Cue {
    Cue::Say(Incoming::Verdict {
        verdict,
        message: format!("{verdict:?}"),
        won: None,
        frame: String::new(),
        then: None,
    })
}

/// The block after block 1, carrying the last proof sent, rewarded to `id`.
fn next_carrying_last_proof(id: &'static str) -> Cue {
    Cue::SayWith(Box::new(move |sent: &[Found]| {
        let proof = sent.last().map_or(0, |f| f.proof);
        let block = json!({ "index": 2, "previous_hash": "00cd", "proof": proof, "timestamp": 2.5,
            "transactions": [{ "sender": "0", "recipient": id, "amount": 1 }] });
        let difficulty = Difficulty::new(NEVER).expect("a valid difficulty");
        let work = Arc::new(Work::new(&block, difficulty, Dialect::Json));
        Incoming::Block { block, work }
    }))
}

struct Run {
    outcome: End,
    events: Vec<Event>,
    summary: Summary,
    script: Script,
}

/// Plays `cues` (each once `after` proofs were sent) through the driver.
async fn play(once: bool, failing_sends: usize, cues: Vec<(usize, Cue)>) -> Run {
    let (reporter, mut rx) = Reporter::channel();
    let (ctrl_c, shutdown) = watch::channel(false);
    let endpoint = Endpoint::WebSocket("ws://127.0.0.1:9/ws".parse().expect("a URL"));
    let mut config = Config::new(endpoint, "me");
    config.once = once;
    let mut miner = Miner::new(Searcher::new(1), reporter.clone());
    let shares = miner.share_queue();
    let mut ctx = Ctx {
        config,
        miner,
        shares,
        reporter,
        shutdown,
        once_block: None,
        balance: None,
        reached: false,
        draining: false,
        failover: None,
        workers: None,
        shares_shown: (0, 0, 0, 0),
        seen_block: None,
    };
    let mut script = Script {
        cues: cues.into(),
        sent: Vec::new(),
        failing_sends,
        requests: 0,
        retries: 0,
        connected: false,
        shares_awaiting: 0,
        ctrl_c,
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), drive(&mut ctx, &mut script))
        .await
        .expect("the run ends");
    ctx.miner.halt().await;
    let summary = ctx.miner.summary();
    drop(ctx);
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    Run { outcome, events, summary, script }
}

fn outcome(end: &End) -> Option<Outcome> {
    match end {
        End::Done(outcome) => Some(*outcome),
        _ => None,
    }
}

fn started(events: &[Event]) -> Vec<Option<u64>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SearchStarted { index, .. } => Some(*index),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_new_block_aborts_the_search_and_the_same_block_changes_nothing() {
    let run = play(
        false,
        0,
        vec![
            (0, connected()),
            (0, new_block(1, NEVER)),
            (0, new_block(1, NEVER)),
            (0, new_block(2, NEVER)),
        ],
    )
    .await;
    assert_eq!(outcome(&run.outcome), Some(Outcome::Interrupted));
    assert_eq!(started(&run.events), [Some(1), Some(2)], "{:?}", run.events);
    let aborted: Vec<_> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SearchAborted { index, by_index, .. } => Some((*index, *by_index)),
            _ => None,
        })
        .collect();
    assert_eq!(aborted, [(Some(1), Some(2))]);
    assert_eq!(run.summary.aborted, 1);
    assert!(run.script.sent.is_empty());
}

#[tokio::test]
async fn once_ends_the_run_lost_when_another_block_comes() {
    let run = play(
        true,
        0,
        vec![
            (0, connected()),
            (0, new_block(1, NEVER)),
            (0, new_block(2, NEVER)),
            (0, new_block(3, NEVER)),
        ],
    )
    .await;
    assert_eq!(outcome(&run.outcome), Some(Outcome::Lost));
    assert_eq!(started(&run.events), [Some(1)], "--once mines one block: {:?}", run.events);
    // The run ended on block 2: block 3 was never read.
    assert_eq!(run.script.cues.len(), 1);
}

#[tokio::test]
async fn once_ends_the_run_won_when_the_proof_is_accepted() {
    let run = play(
        true,
        0,
        vec![(0, connected()), (0, new_block(1, EASY)), (1, verdict(Verdict::Accepted))],
    )
    .await;
    assert_eq!(outcome(&run.outcome), Some(Outcome::Won));
    assert_eq!(run.summary.coins, 1);
}

#[tokio::test]
async fn verdicts_are_counted_and_the_idle_miner_asks_for_work() {
    let run = play(
        false,
        0,
        vec![
            (0, connected()),
            (0, new_block(1, EASY)),
            (1, verdict(Verdict::Stale)),
            (1, new_block(2, EASY)),
            (2, verdict(Verdict::Accepted)),
            (2, new_block(3, EASY)),
            (3, Cue::Say(Incoming::Error("no such thing".into()))),
            // An answer when none is awaited is only a line.
            (3, verdict(Verdict::Accepted)),
        ],
    )
    .await;
    assert_eq!(outcome(&run.outcome), Some(Outcome::Interrupted));
    let s = &run.summary;
    assert_eq!(
        (s.rejected_stale, s.blocks_won, s.coins, s.rejected_invalid),
        (1, 1, 1, 1),
        "{s:?}"
    );
    // Idle after each verdict: it asked for the current block each time.
    assert_eq!(run.script.requests, 3);
    let verdicts: Vec<String> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Accepted { index, coins, .. } => Some(format!("won {index:?} {coins}")),
            Event::Rejected { index, reason, .. } => Some(format!("{reason} {index:?}")),
            Event::ServerError { message } => Some(format!("error {message}")),
            Event::Ignored { what } if what.starts_with("a result for no proof") => {
                Some("ignored".into())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        verdicts,
        ["stale Some(1)", "won Some(2) 1", "error no such thing", "invalid Some(3)", "ignored"]
    );
}

#[tokio::test]
async fn a_proof_not_delivered_goes_out_again_while_its_block_is_current() {
    let run = play(
        false,
        1,
        vec![
            (0, connected()),
            (0, new_block(1, EASY)),
            // The send failed; the server is back with the same block.
            (1, connected()),
            (1, new_block(1, EASY)),
            (2, verdict(Verdict::Accepted)),
        ],
    )
    .await;
    assert_eq!(run.script.sent.len(), 2);
    assert_eq!(run.script.sent[0].proof, run.script.sent[1].proof, "the same proof, again");
    assert_eq!(run.script.retries, 1);
    assert!(run.events.iter().any(|e| matches!(e, Event::Disconnected { .. })));
    // No new search on block 1 while its proof was judged.
    assert_eq!(started(&run.events), [Some(1)]);
    assert_eq!(run.summary.coins, 1);
}

#[tokio::test]
async fn a_proof_whose_block_is_gone_is_dropped() {
    let run = play(
        false,
        1,
        vec![(0, connected()), (0, new_block(1, EASY)), (1, connected()), (1, new_block(2, NEVER))],
    )
    .await;
    assert_eq!(run.script.sent.len(), 1, "not sent again: its block is gone");
    assert!(run.events.iter().any(|e| matches!(e, Event::ProofDropped { index: Some(1), .. })));
    assert_eq!(started(&run.events), [Some(1), Some(2)]);
    assert_eq!(run.summary.coins, 0);
}

#[tokio::test]
async fn a_proof_whose_block_is_gone_won_if_the_next_block_carries_it() {
    let run = play(
        true,
        1,
        vec![
            (0, connected()),
            (0, new_block(1, EASY)),
            (1, connected()),
            (1, next_carrying_last_proof("me")),
        ],
    )
    .await;
    assert_eq!(outcome(&run.outcome), Some(Outcome::Won));
    assert_eq!(run.summary.coins, 1);
    assert!(run.events.iter().any(|e| matches!(e, Event::Accepted { index: Some(1), .. })));
}

#[tokio::test]
async fn ctrl_c_waits_for_the_answer_to_a_proof_in_flight() {
    let run = play(
        false,
        0,
        vec![
            (0, connected()),
            (0, new_block(1, EASY)),
            (1, Cue::CtrlC),
            (1, verdict(Verdict::Accepted)),
            // Never read: the run ends once the answer is in.
            (1, new_block(2, NEVER)),
        ],
    )
    .await;
    assert_eq!(outcome(&run.outcome), Some(Outcome::Interrupted));
    assert_eq!(run.summary.coins, 1, "the win in flight is counted");
    assert_eq!(run.script.cues.len(), 1);
}

#[tokio::test]
async fn ctrl_c_waits_for_the_answer_to_a_share_in_flight() {
    let share_verdict = Cue::SayWith(Box::new(|sent: &[Found]| Incoming::ShareVerdict {
        found: sent.last().cloned().expect("a share was sent"),
        accepted: true,
        reason: None,
        bits: 2,
        message: "share accepted".into(),
    }));
    let run = play(
        false,
        0,
        vec![
            (0, connected()),
            (0, new_block(1, NEVER)),
            (0, Cue::Say(Incoming::ShareTarget(2))),
            (1, Cue::CtrlC),
            (1, share_verdict),
            // Never read: the run ends once the answer is in.
            (1, new_block(2, NEVER)),
        ],
    )
    .await;
    assert_eq!(outcome(&run.outcome), Some(Outcome::Interrupted));
    assert_eq!(run.summary.shares_accepted, 1, "the share in flight is counted");
    assert_eq!(run.script.cues.len(), 1);
}

#[tokio::test]
async fn ctrl_c_with_nothing_in_flight_ends_the_run_at_once() {
    let run = play(
        false,
        0,
        vec![(0, connected()), (0, new_block(1, NEVER)), (0, Cue::CtrlC), (0, new_block(2, NEVER))],
    )
    .await;
    assert_eq!(outcome(&run.outcome), Some(Outcome::Interrupted));
    assert_eq!(run.script.cues.len(), 1);
}

#[tokio::test]
async fn a_lost_connection_is_retried_with_one_line() {
    let run = play(
        false,
        0,
        vec![
            (0, Cue::Say(Incoming::Unreachable("refused".into()))),
            (0, connected()),
            (0, Cue::Say(Incoming::Lost("reset".into()))),
        ],
    )
    .await;
    assert_eq!(run.script.retries, 2);
    let lines: Vec<_> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ConnectFailed { error, retry_in_ms, .. } => {
                Some(format!("{error} {retry_in_ms}"))
            }
            Event::Disconnected { reason } => Some(reason.clone()),
            Event::Connected { .. } => Some("connected".into()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["refused 250", "connected", "reset"]);
}
