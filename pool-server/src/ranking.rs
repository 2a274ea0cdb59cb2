//! [`Ranking`]: every id's coins in leaderboard order (highest first, ties by id), kept sorted
//! one changed id at a time, and [`Standings`], a snapshot of it that costs nothing to keep.
//!
//! A forged block changes a few balances; re-sorting every id for each block made every block
//! slower with every id ever paid. Here an update costs a binary search and one short move
//! within a chunk, whatever the number of ids.
//!
//! Layout: the sorted entries are cut into chunks of [`CHUNK`] to 2 × [`CHUNK`] entries (a
//! two-level B-tree), each behind an `Arc`. A [`Standings`] snapshot is a list of those `Arc`s,
//! so taking one copies a pointer per chunk and no entry; an update copies one chunk only when a
//! snapshot still holds it (copy on write). Readers of `GET /balances` stream a snapshot without
//! any lock, and many slow readers share the same chunks. Each chunk also keeps its entries'
//! JSON once serialised, so a bare `GET /balances` read again and again is not serialised again
//! and again.
//!
//! Pure data, no I/O and no locking: the [`Scoreboard`](crate::scoreboard::Scoreboard) owns one.

use std::cmp::Reverse;
use std::io::Write as _;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use protocol::Balance;

/// The fewest entries a chunk is cut to when it grows past twice this. Small enough that an
/// update moves and (when a snapshot holds the chunk) copies little; large enough that a
/// snapshot of 200,000 ids is a few hundred pointers.
pub const CHUNK: usize = 512;

/// An entry's place: coins, highest first, then the id.
type Key = (Reverse<i128>, Arc<str>);

/// A run of consecutive entries.
#[derive(Debug, Default)]
struct Chunk {
    keys: Vec<Key>,
    /// The entries' JSON, each preceded by a comma; made on first read.
    json: OnceLock<Bytes>,
}

impl Clone for Chunk {
    /// Copies the entries; the JSON is made again for the copy (it is about to change).
    fn clone(&self) -> Self {
        Chunk { keys: self.keys.clone(), json: OnceLock::new() }
    }
}

impl Chunk {
    fn new(keys: Vec<Key>) -> Arc<Chunk> {
        Arc::new(Chunk { keys, json: OnceLock::new() })
    }

    fn last(&self) -> &Key {
        self.keys.last().expect("no chunk is empty")
    }

    /// The entries as `,{"id":…,"coins":…}` one after another.
    fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| {
                let mut out = Vec::with_capacity(self.keys.len() * 40);
                for key in &self.keys {
                    write_entry(&mut out, key);
                }
                out.into()
            })
            .clone()
    }
}

/// Writes one entry as `Balance` serialises: `,{"id":"…","coins":N}`.
fn write_entry(out: &mut Vec<u8>, (Reverse(coins), id): &Key) {
    out.extend_from_slice(br#",{"id":"#);
    serde_json::to_writer(&mut *out, &**id).expect("writing to a Vec cannot fail");
    write!(out, r#","coins":{}}}"#, wire_coins(*coins)).expect("writing to a Vec cannot fail");
}

/// Returns coins as the wire's `i64`. Transfers keep balances within ±`MAX_COINS` (2^53 − 1),
/// so this is exact; only a chain stored before that rule can hold more, shown as the nearest
/// `i64`.
pub fn wire_coins(coins: i128) -> i64 {
    i64::try_from(coins).unwrap_or(if coins < 0 { i64::MIN } else { i64::MAX })
}

fn balance((Reverse(coins), id): &Key) -> Balance {
    Balance { id: id.to_string(), coins: wire_coins(*coins) }
}

/// Every id with its coins, highest first, ties by id; see the module doc.
#[derive(Debug, Default)]
pub struct Ranking {
    chunks: Vec<Arc<Chunk>>,
    len: usize,
    /// The snapshot of the current state, once one was asked for; dropped by the next change
    /// (before it, so that this one does not make the change copy a chunk).
    snapshot: Option<Standings>,
}

impl Ranking {
    /// Returns the ranking of `entries` (each id once), sorted here.
    pub fn new(entries: impl IntoIterator<Item = (Arc<str>, i128)>) -> Self {
        let mut keys: Vec<Key> = entries.into_iter().map(|(id, c)| (Reverse(c), id)).collect();
        keys.sort_unstable();
        let len = keys.len();
        let chunks = keys.chunks(CHUNK).map(|c| Chunk::new(c.to_vec())).collect();
        Ranking { chunks, len, snapshot: None }
    }

    /// Returns the number of ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns true when no id has a balance.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves `id` from `old` coins (`None`: not ranked yet) to `new` coins.
    pub fn update(&mut self, id: &Arc<str>, old: Option<i128>, new: i128) {
        if old == Some(new) {
            return;
        }
        self.snapshot = None;
        if let Some(old) = old {
            self.remove(&(Reverse(old), id.clone()));
        }
        self.insert((Reverse(new), id.clone()));
    }

    /// The chunk `key` belongs in: the first whose last entry is not below it (or the last).
    fn chunk_of(&self, key: &Key) -> usize {
        self.chunks.partition_point(|c| c.last() < key).min(self.chunks.len().saturating_sub(1))
    }

    fn insert(&mut self, key: Key) {
        if self.chunks.is_empty() {
            self.chunks.push(Chunk::new(vec![key]));
            self.len = 1;
            return;
        }
        let at = self.chunk_of(&key);
        let chunk = Arc::make_mut(&mut self.chunks[at]);
        chunk.json = OnceLock::new();
        let Err(pos) = chunk.keys.binary_search(&key) else { return };
        chunk.keys.insert(pos, key);
        self.len += 1;
        if chunk.keys.len() > 2 * CHUNK {
            let upper = chunk.keys.split_off(chunk.keys.len() / 2);
            self.chunks.insert(at + 1, Chunk::new(upper));
        }
    }

    fn remove(&mut self, key: &Key) {
        if self.chunks.is_empty() {
            return;
        }
        let at = self.chunk_of(key);
        let Ok(pos) = self.chunks[at].keys.binary_search(key) else { return };
        let chunk = Arc::make_mut(&mut self.chunks[at]);
        chunk.json = OnceLock::new();
        chunk.keys.remove(pos);
        let remaining = chunk.keys.len();
        self.len -= 1;
        // Keep every chunk at least a quarter full, so that the chunks stay few however the
        // balances move: a small one joins a neighbour (and is cut again if that is too big).
        if remaining >= CHUNK / 4 {
            return;
        }
        if self.chunks.len() == 1 {
            if remaining == 0 {
                self.chunks.clear();
            }
            return;
        }
        let (left, right) = if at + 1 < self.chunks.len() { (at, at + 1) } else { (at - 1, at) };
        let moved = match Arc::get_mut(&mut self.chunks[right]) {
            Some(chunk) => std::mem::take(&mut chunk.keys),
            None => self.chunks[right].keys.clone(),
        };
        let merged = Arc::make_mut(&mut self.chunks[left]);
        merged.json = OnceLock::new();
        merged.keys.extend(moved);
        if merged.keys.len() > 2 * CHUNK {
            let upper = merged.keys.split_off(merged.keys.len() / 2);
            self.chunks[right] = Chunk::new(upper);
        } else {
            self.chunks.remove(right);
        }
    }

    /// Returns the ranking as it is now; later changes do not show in it.
    pub fn snapshot(&mut self) -> Standings {
        self.snapshot
            .get_or_insert_with(|| Standings { chunks: self.chunks.clone().into(), len: self.len })
            .clone()
    }

    /// Returns the first `n` entries.
    pub fn top(&self, n: usize) -> Vec<Balance> {
        self.chunks.iter().flat_map(|c| &c.keys).take(n).map(balance).collect()
    }
}

/// The ranking at one moment: cheap to clone, never changes; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct Standings {
    chunks: Arc<[Arc<Chunk>]>,
    len: usize,
}

impl Standings {
    /// Returns the number of ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns true when no id has a balance.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the entries at positions `from..from + limit` (0-based; clamped to the ranking).
    pub fn page(&self, from: usize, limit: usize) -> Vec<Balance> {
        let mut skip = from;
        let mut out = Vec::new();
        for chunk in self.chunks.iter() {
            if out.len() >= limit {
                break;
            }
            if skip >= chunk.keys.len() {
                skip -= chunk.keys.len();
                continue;
            }
            let take = (chunk.keys.len() - skip).min(limit - out.len());
            out.extend(chunk.keys[skip..skip + take].iter().map(balance));
            skip = 0;
        }
        out
    }

    /// Returns every entry's JSON as chunks that join into `{…},{…},…` (no brackets).
    pub fn json(&self) -> impl Iterator<Item = Bytes> + Send + 'static {
        let chunks = self.chunks.clone();
        (0..chunks.len()).map(move |i| {
            let json = chunks[i].json();
            // Every entry starts with a comma; the first one goes without.
            if i == 0 { json.slice(1..) } else { json }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A tiny pseudo-random sequence, so the test needs no dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn sorted(coins: &HashMap<Arc<str>, i128>) -> Vec<Balance> {
        let mut all: Vec<Balance> =
            coins.iter().map(|(id, c)| balance(&(Reverse(*c), id.clone()))).collect();
        all.sort_by(|a, b| b.coins.cmp(&a.coins).then_with(|| a.id.cmp(&b.id)));
        all
    }

    #[test]
    fn stays_sorted_through_many_updates_and_snapshots_do_not_change() {
        let mut coins: HashMap<Arc<str>, i128> = HashMap::new();
        for i in 0..3_000u64 {
            coins.insert(format!("id{i:05}").into(), i128::from(i % 17));
        }
        let mut ranking = Ranking::new(coins.iter().map(|(id, c)| (id.clone(), *c)));
        let before = ranking.snapshot();
        let expected_before = sorted(&coins);
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for step in 0..20_000u64 {
            let r = next(&mut state);
            // New ids now and then; mostly moves of known ones, by small and large amounts.
            let id: Arc<str> = format!("id{:05}", r % 3_500).into();
            let delta =
                i128::from((r >> 20) % 41) - 20 + if step.is_multiple_of(97) { 1_000 } else { 0 };
            let old = coins.get(&id).copied();
            let new = old.unwrap_or(0) + delta;
            ranking.update(&id, old, new);
            coins.insert(id, new);
            if step.is_multiple_of(5_000) {
                let snap = ranking.snapshot();
                assert_eq!(snap.page(0, usize::MAX), sorted(&coins));
            }
        }
        let now = ranking.snapshot();
        assert_eq!(now.len(), coins.len());
        assert_eq!(now.page(0, usize::MAX), sorted(&coins));
        assert_eq!(ranking.top(10), sorted(&coins)[..10]);
        assert_eq!(now.page(1_234, 10), sorted(&coins)[1_234..1_244]);
        assert_eq!(now.page(coins.len() - 2, 10).len(), 2);
        assert!(now.page(coins.len(), 10).is_empty());
        // The snapshot taken first still shows the start.
        assert_eq!(before.page(0, usize::MAX), expected_before);
        // Chunks stay at least a quarter full.
        assert!(ranking.chunks.len() <= 4 * coins.len() / CHUNK + 1, "{}", ranking.chunks.len());
        // The JSON is the balances' own.
        let json: Vec<u8> = now.json().flat_map(|b| b.to_vec()).collect();
        let parsed: serde_json::Value =
            serde_json::from_slice(&[b"[", &json[..], b"]"].concat()).expect("JSON");
        assert_eq!(parsed, serde_json::to_value(sorted(&coins)).expect("serialises"));
    }

    #[test]
    fn empty_and_draining() {
        let mut ranking = Ranking::default();
        assert!(ranking.snapshot().is_empty());
        assert_eq!(ranking.snapshot().json().count(), 0);
        let ids: Vec<Arc<str>> = (0..2_000).map(|i| Arc::from(format!("{i}"))).collect();
        for id in &ids {
            ranking.update(id, None, 5);
        }
        assert_eq!(ranking.len(), ids.len());
        for id in &ids {
            ranking.update(id, Some(5), 5);
        }
        assert_eq!(ranking.len(), ids.len());
        for id in &ids {
            ranking.remove(&(Reverse(5), id.clone()));
        }
        assert!(ranking.is_empty() && ranking.chunks.is_empty());
    }
}
