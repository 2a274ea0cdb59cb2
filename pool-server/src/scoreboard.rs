//! [`Scoreboard`]: what the dashboard and `/balances` show (coins per id, the newest blocks, the
//! recent block rate), kept up to date one forged block at a time so that no request rescans the
//! chain.
//!
//! Coins are everything an id received minus everything it sent, over the transactions of forged
//! blocks: mining rewards (sender `"0"`) and the course's transfers alike. Pending transactions
//! count only once a block holds them. The course's server never checks that a sender can pay,
//! so a balance can be negative.
//!
//! A block costs the same whatever the number of ids: only the ids it names move in the
//! [`Ranking`], and nothing is re-sorted.
//!
//! Pure data, no I/O and no locking: [`AppState`](crate::AppState) keeps it behind a mutex.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use protocol::block::REWARD_SENDER;
use protocol::message::{STATS_BALANCES, STATS_RECENT_BLOCKS};
use protocol::{Block, BlockSummary, Difficulty, ServerMessage, Worker};

use crate::ranking::{Ranking, Standings, wire_coins};

/// The window the block rate is measured over, in seconds: "blocks / minute" is the last minute.
pub const RATE_WINDOW_SECS: f64 = 60.0;
/// The shortest window: right after start, a couple of quick blocks should not read as hundreds a
/// minute, but a race's first minute should not read as a fraction of its real pace either.
pub const MIN_RATE_WINDOW_SECS: f64 = 10.0;

/// Coins per id, the newest blocks and recent forge times.
#[derive(Debug)]
pub struct Scoreboard {
    /// Exact coins per id (`i128`: sums of any transfers cannot overflow).
    coins: HashMap<Arc<str>, i128>,
    /// The same coins in leaderboard order, moved one changed id at a time.
    ranked: Ranking,
    /// Summaries of the newest blocks, newest first.
    recent: VecDeque<BlockSummary>,
    /// Timestamps of the blocks forged within the rate window, oldest first.
    forged_at: VecDeque<f64>,
    chain_length: u64,
    /// When the server started (seconds since the epoch): the rate counts only blocks since then.
    started: f64,
}

impl Scoreboard {
    /// Builds the scoreboard from the whole chain (once, at start); `started` is the server's
    /// start time in seconds since the epoch.
    pub fn from_chain(blocks: &[Block], started: f64) -> Self {
        let mut board = Scoreboard {
            coins: HashMap::new(),
            ranked: Ranking::default(),
            recent: VecDeque::with_capacity(STATS_RECENT_BLOCKS + 1),
            forged_at: VecDeque::new(),
            chain_length: 0,
            started,
        };
        for block in blocks {
            for (id, delta) in changes(block) {
                *board.coins.entry(Arc::from(id)).or_default() += delta;
            }
            board.apply(block);
        }
        // Sorted once here; from now on only the ids a block names move.
        board.ranked = Ranking::new(board.coins.iter().map(|(id, c)| (id.clone(), *c)));
        board
    }

    /// Adds a newly forged block: its time does not grow with the number of ids.
    pub fn record(&mut self, block: &Block) {
        for (id, delta) in changes(block) {
            let (id, old) = match self.coins.get_key_value(id) {
                Some((id, coins)) => (id.clone(), Some(*coins)),
                None => (Arc::from(id), None),
            };
            let new = old.unwrap_or(0) + delta;
            self.ranked.update(&id, old, new);
            self.coins.insert(id, new);
        }
        self.apply(block);
    }

    fn apply(&mut self, block: &Block) {
        // The new block records its predecessor's hash: no hashing needed.
        if let Some(prev) = self.recent.front_mut()
            && prev.index + 1 == block.index
        {
            prev.hash = Some(block.previous_hash.clone());
        }
        self.recent.push_front(BlockSummary::of(block, None));
        self.recent.truncate(STATS_RECENT_BLOCKS);
        // The genesis block is made, not forged: it says nothing about the miners.
        if block.index > 1 && block.timestamp >= self.started {
            self.forged_at.push_back(block.timestamp);
        }
        self.chain_length += 1;
    }

    /// Returns every id that appears in a forged block with its coins, highest first, ties by
    /// id, as they are now: a snapshot that later blocks do not change, costing a pointer per
    /// few hundred ids.
    pub fn balances(&mut self) -> Standings {
        self.ranked.snapshot()
    }

    /// Returns the coins of `id`; 0 for an id the chain has never mentioned.
    pub fn coins(&self, id: &str) -> i64 {
        wire_coins(self.coins.get(id).copied().unwrap_or(0))
    }

    /// Returns the number of blocks in the chain, genesis included.
    pub fn chain_length(&self) -> u64 {
        self.chain_length
    }

    /// Returns blocks forged per minute at `now` (seconds since the epoch), over the last
    /// [`RATE_WINDOW_SECS`] or the time since start if shorter (but at least
    /// [`MIN_RATE_WINDOW_SECS`]).
    pub fn blocks_per_minute(&mut self, now: f64) -> f64 {
        let window = (now - self.started).clamp(MIN_RATE_WINDOW_SECS, RATE_WINDOW_SECS);
        while self.forged_at.front().is_some_and(|t| *t < now - window) {
            self.forged_at.pop_front();
        }
        self.forged_at.len() as f64 * 60.0 / window
    }

    /// Returns the `stats` message at `now` for a pool at `difficulty` with `clients` WebSocket
    /// connections. The hashrate is estimated as blocks/min × 16^D / 60: the hashes a block
    /// takes on average, times blocks per second. Its size does not grow with the chain, the
    /// blocks or the number of ids: [`STATS_RECENT_BLOCKS`] block summaries and the top
    /// [`STATS_BALANCES`] balances, and the `workers` given.
    pub fn stats(
        &mut self,
        difficulty: Difficulty,
        clients: u64,
        now: f64,
        workers: Vec<Worker>,
    ) -> ServerMessage {
        let blocks_per_minute = self.blocks_per_minute(now);
        ServerMessage::Stats {
            chain_length: self.chain_length,
            difficulty,
            miners: clients,
            blocks_per_minute,
            hashrate: blocks_per_minute * difficulty.expected_attempts() / 60.0,
            balances: self.ranked.top(STATS_BALANCES),
            recent: self.recent.iter().cloned().collect(),
            workers,
        }
    }
}

/// Returns each id a block's transactions name with the net change of its coins (rewards,
/// sender `"0"`, only credit; transfers debit the sender and credit the recipient), each id once.
fn changes(block: &Block) -> Vec<(&str, i128)> {
    let mut net: HashMap<&str, i128> = HashMap::with_capacity(block.transactions.len() + 1);
    for t in &block.transactions {
        let amount = i128::from(t.amount);
        if t.sender != REWARD_SENDER {
            *net.entry(t.sender.as_str()).or_default() -= amount;
        }
        *net.entry(t.recipient.as_str()).or_default() += amount;
    }
    net.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Balance, Transaction};

    fn block(index: u64, timestamp: f64, transactions: Vec<Transaction>) -> Block {
        Block { index, timestamp, transactions, proof: index, previous_hash: "h".into() }
    }

    fn transfer(from: &str, to: &str, amount: u64) -> Transaction {
        Transaction { sender: from.into(), recipient: to.into(), amount }
    }

    fn ranked(board: &mut Scoreboard) -> Vec<(String, i64)> {
        board.balances().page(0, usize::MAX).into_iter().map(|b| (b.id, b.coins)).collect()
    }

    #[test]
    fn counts_rewards_and_transfers_highest_first_ties_by_id() {
        let chain = [
            Block::genesis(0.0),
            block(2, 1.0, vec![Transaction::reward("bob")]),
            block(3, 2.0, vec![Transaction::reward("alice")]),
            block(4, 3.0, vec![transfer("bob", "carol", 3), Transaction::reward("alice")]),
        ];
        let mut board = Scoreboard::from_chain(&chain, 10.0);
        assert_eq!(
            ranked(&mut board),
            [("carol".into(), 3), ("alice".into(), 2), ("bob".into(), -2)].to_vec()
        );
        board.record(&block(5, 11.0, vec![Transaction::reward("bob"), Transaction::reward("bob")]));
        assert_eq!(board.coins("bob"), 0);
        assert_eq!(board.coins("nobody"), 0);
        assert_eq!(board.chain_length(), 5);
        board.record(&block(6, 12.0, vec![Transaction::reward("dave")]));
        let order: Vec<String> = ranked(&mut board).into_iter().map(|(id, _)| id).collect();
        assert_eq!(order, ["carol", "alice", "dave", "bob"]);
    }

    #[test]
    fn stats_carry_the_newest_blocks_newest_first() {
        let mut chain = vec![Block::genesis(0.0)];
        chain.extend((2..=30).map(|i| block(i, i as f64, vec![Transaction::reward("a")])));
        let mut board = Scoreboard::from_chain(&chain, 0.0);
        let ServerMessage::Stats { chain_length, recent, balances, miners, .. } =
            board.stats(Difficulty::DEFAULT, 3, 31.0, Vec::new())
        else {
            panic!("stats() returns a Stats message");
        };
        assert_eq!(chain_length, 30);
        assert_eq!(miners, 3);
        assert_eq!(balances, vec![Balance { id: "a".into(), coins: 29 }]);
        let indexes: Vec<u64> = recent.iter().map(|b| b.index).collect();
        assert_eq!(indexes, (11..=30).rev().collect::<Vec<_>>());
        // Summaries, not blocks: each older block's hash is its successor's previous_hash.
        assert_eq!(recent[0].hash, None);
        assert_eq!(recent[1].hash.as_deref(), Some("h"));
        assert!(
            recent.iter().all(|b| b.transaction_count == 1 && b.winner.as_deref() == Some("a"))
        );
    }

    #[test]
    fn stats_carry_the_highest_balances_only() {
        let payouts: Vec<Transaction> = (0..STATS_BALANCES as u64 + 50)
            .map(|i| transfer("bank", &format!("{i:03}"), i + 1))
            .collect();
        let chain = [Block::genesis(0.0), block(2, 1.0, payouts)];
        let mut board = Scoreboard::from_chain(&chain, 0.0);
        assert_eq!(board.balances().len(), STATS_BALANCES + 51);
        let all = board.balances().page(0, usize::MAX);
        let ServerMessage::Stats { balances, .. } =
            board.stats(Difficulty::DEFAULT, 0, 2.0, Vec::new())
        else {
            panic!("stats() returns a Stats message");
        };
        assert_eq!(balances.len(), STATS_BALANCES);
        assert_eq!(balances[..], all[..STATS_BALANCES]);
        assert_eq!(balances[0].id, "149");
    }

    #[test]
    fn block_rate_counts_blocks_since_start_within_the_window() {
        let started = 1000.0;
        // A block from before the start does not count.
        let mut board = Scoreboard::from_chain(&[Block::genesis(900.0)], started);
        assert_eq!(board.blocks_per_minute(1001.0), 0.0);
        for i in 0..30 {
            board.record(&block(i + 2, started + 1.0 + i as f64, Vec::new()));
        }
        // 30 blocks in the first 30 s: measured over those 30 s, not a whole minute.
        assert_eq!(board.blocks_per_minute(started + 30.0), 60.0);
        // Two quick blocks right after start are measured over the 10 s floor.
        let mut early = Scoreboard::from_chain(&[Block::genesis(900.0)], started);
        early.record(&block(2, started + 1.0, Vec::new()));
        early.record(&block(3, started + 2.0, Vec::new()));
        assert_eq!(early.blocks_per_minute(started + 3.0), 12.0);
        // Ten minutes later they have left the one-minute window.
        assert_eq!(board.blocks_per_minute(started + 630.0), 0.0);
        let ServerMessage::Stats { hashrate, blocks_per_minute, .. } =
            board.stats(Difficulty::new(2).expect("in range"), 0, started + 630.0, Vec::new())
        else {
            panic!("stats() returns a Stats message");
        };
        assert_eq!((blocks_per_minute, hashrate), (0.0, 0.0));
    }

    #[test]
    fn hashrate_is_blocks_per_second_times_expected_attempts() {
        let started = 0.0;
        let mut board = Scoreboard::from_chain(&[Block::genesis(0.0)], started);
        for i in 0..120 {
            board.record(&block(i + 2, 100.0 + i as f64, Vec::new()));
        }
        let ServerMessage::Stats { blocks_per_minute, hashrate, .. } =
            board.stats(Difficulty::new(3).expect("in range"), 0, 240.0, Vec::new())
        else {
            panic!("stats() returns a Stats message");
        };
        // One a second from 100 s to 219 s: the last minute (180 s to 240 s) holds 40 of them.
        assert_eq!(blocks_per_minute, 40.0);
        assert_eq!(hashrate, blocks_per_minute * 4096.0 / 60.0);
    }
}
