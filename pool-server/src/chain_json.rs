//! [`ChainJson`]: every block's JSON, serialised once when the block is forged (or loaded at
//! start), in an append-only list of shared segments, so that `GET /chain` streams any page of
//! the chain without the ledger lock and without building its body.
//!
//! A reader takes a [`Snapshot`] (two `Arc` clones under a lock held for nothing else) and
//! streams slices of it: a slow reader holds that snapshot and the few chunks hyper has queued,
//! all of them references to bytes the chain keeps anyway, so 60 slow readers of the whole chain
//! cost about what one does.
//!
//! Layout: every [`SEGMENT_BLOCKS`] blocks are sealed into one [`Segment`], the blocks' JSON
//! joined in one buffer; the newer blocks sit in the tail, one buffer each. Each block's bytes
//! start with a comma (`,{"index":...}`), so that any run of consecutive blocks is one slice of a
//! segment and a page's first block just drops its first byte.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use protocol::Block;

/// Blocks per sealed segment. Appending copies the tail's list of buffers (not the bytes), so
/// this bounds that copy; sealing copies the segment's bytes once.
pub const SEGMENT_BLOCKS: usize = 1024;

/// Sealed blocks: their JSON, each preceded by a comma, in one buffer.
#[derive(Debug)]
struct Segment {
    bytes: Bytes,
    /// Where each block's bytes start in `bytes`.
    starts: Vec<usize>,
}

impl Segment {
    fn seal(blocks: &[Bytes]) -> Segment {
        let mut joined = Vec::with_capacity(blocks.iter().map(Bytes::len).sum());
        let mut starts = Vec::with_capacity(blocks.len());
        for b in blocks {
            starts.push(joined.len());
            joined.extend_from_slice(b);
        }
        Segment { bytes: joined.into(), starts }
    }

    /// The bytes of blocks `from..to` (positions within the segment).
    fn range(&self, from: usize, to: usize) -> Bytes {
        let end = self.starts.get(to).copied().unwrap_or(self.bytes.len());
        self.bytes.slice(self.starts[from]..end)
    }
}

/// The chain's JSON at one moment: cheap to clone, never changes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    sealed: Arc<[Arc<Segment>]>,
    /// The blocks after the sealed ones, fewer than [`SEGMENT_BLOCKS`].
    tail: Arc<[Bytes]>,
}

impl Snapshot {
    /// Returns the number of blocks.
    pub fn len(&self) -> u64 {
        (self.sealed.len() * SEGMENT_BLOCKS + self.tail.len()) as u64
    }

    /// Returns true when there is no block (never, once the server runs).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the JSON of the blocks at positions `from..to` (0-based, clamped to the chain) as
    /// chunks that join into `b1,b2,...`, with the total length in bytes.
    pub fn blocks(&self, from: u64, to: u64) -> (Chunks, usize) {
        let len = self.len();
        let to = to.min(len) as usize;
        let from = (from.min(len) as usize).min(to);
        let chunks = Chunks { snapshot: self.clone(), start: from, pos: from, end: to };
        let bytes = chunks.clone().map(|c| c.len()).sum();
        (chunks, bytes)
    }
}

/// The chunks of a run of blocks; see [`Snapshot::blocks`].
#[derive(Debug, Clone)]
pub struct Chunks {
    snapshot: Snapshot,
    /// Where the run starts: its first block goes without its comma.
    start: usize,
    pos: usize,
    end: usize,
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.pos >= self.end {
            return None;
        }
        let first = self.pos;
        let sealed = self.snapshot.sealed.len() * SEGMENT_BLOCKS;
        let chunk = if self.pos < sealed {
            let segment = &self.snapshot.sealed[self.pos / SEGMENT_BLOCKS];
            let base = self.pos / SEGMENT_BLOCKS * SEGMENT_BLOCKS;
            let to = self.end.min(base + SEGMENT_BLOCKS);
            let chunk = segment.range(self.pos - base, to - base);
            self.pos = to;
            chunk
        } else {
            let chunk = self.snapshot.tail[self.pos - sealed].clone();
            self.pos += 1;
            chunk
        };
        // Every block's bytes start with a comma; the run's first one goes without.
        Some(if first == self.start { chunk.slice(1..) } else { chunk })
    }
}

/// Every block's JSON, appended as blocks are forged.
#[derive(Debug, Default)]
pub struct ChainJson {
    current: Mutex<Snapshot>,
    /// Serialises appends, so that each builds on the one before.
    writer: Mutex<()>,
}

impl ChainJson {
    /// Returns the JSON of `blocks`, genesis first.
    pub fn new(blocks: &[Block]) -> Self {
        let mut sealed = Vec::new();
        let mut tail = Vec::with_capacity(SEGMENT_BLOCKS);
        for block in blocks {
            tail.push(block_bytes(block));
            if tail.len() == SEGMENT_BLOCKS {
                sealed.push(Arc::new(Segment::seal(&tail)));
                tail.clear();
            }
        }
        let snapshot = Snapshot { sealed: sealed.into(), tail: tail.into() };
        ChainJson { current: Mutex::new(snapshot), writer: Mutex::new(()) }
    }

    /// Returns the chain's JSON as it is now.
    pub fn snapshot(&self) -> Snapshot {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Appends a newly forged block.
    pub fn push(&self, block: &Block) {
        let bytes = block_bytes(block);
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.snapshot();
        let mut tail = Vec::with_capacity(old.tail.len() + 1);
        tail.extend(old.tail.iter().cloned());
        tail.push(bytes);
        let next = if tail.len() == SEGMENT_BLOCKS {
            let mut sealed = Vec::with_capacity(old.sealed.len() + 1);
            sealed.extend(old.sealed.iter().cloned());
            sealed.push(Arc::new(Segment::seal(&tail)));
            Snapshot { sealed: sealed.into(), tail: Arc::from(Vec::new()) }
        } else {
            Snapshot { sealed: old.sealed, tail: tail.into() }
        };
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = next;
    }
}

/// A block's JSON with a comma before it.
fn block_bytes(block: &Block) -> Bytes {
    let mut bytes = vec![b','];
    serde_json::to_writer(&mut bytes, block).expect("a Block has string keys");
    bytes.into()
}

#[cfg(test)]
mod tests {
    use protocol::Transaction;

    use super::*;

    fn chain(n: u64) -> Vec<Block> {
        let mut blocks = vec![Block::genesis(1.5)];
        blocks.extend((2..=n).map(|i| Block {
            index: i,
            timestamp: i as f64 + 0.25,
            transactions: vec![Transaction::reward(&format!("miner {i}"))],
            proof: i * 7,
            previous_hash: format!("{i:064x}"),
        }));
        blocks
    }

    fn joined(snapshot: &Snapshot, from: u64, to: u64) -> String {
        let (chunks, len) = snapshot.blocks(from, to);
        let bytes: Vec<u8> = chunks.flat_map(|c| c.to_vec()).collect();
        assert_eq!(bytes.len(), len);
        String::from_utf8(bytes).expect("JSON is UTF-8")
    }

    fn expected(blocks: &[Block]) -> String {
        let json = serde_json::to_string(blocks).expect("serialises");
        json[1..json.len() - 1].to_owned()
    }

    #[test]
    fn any_run_of_blocks_is_their_json_across_segments() {
        let blocks = chain(2 * SEGMENT_BLOCKS as u64 + 5);
        // Built at start from part of the chain, the rest appended as if forged.
        let split = SEGMENT_BLOCKS - 3;
        let json = ChainJson::new(&blocks[..split]);
        let before = json.snapshot();
        for block in &blocks[split..] {
            json.push(block);
        }
        let snapshot = json.snapshot();
        assert_eq!(snapshot.len(), blocks.len() as u64);
        // An older snapshot does not change.
        assert_eq!(before.len(), split as u64);
        assert_eq!(joined(&before, 0, u64::MAX), expected(&blocks[..split]));
        let s = SEGMENT_BLOCKS as u64;
        let runs =
            [(0, u64::MAX), (0, 1), (5, 6), (s - 1, s + 1), (s - 2, 2 * s + 3), (2 * s, 2 * s + 5)];
        for (from, to) in runs {
            let end = (to as usize).min(blocks.len());
            assert_eq!(
                joined(&snapshot, from, to),
                expected(&blocks[from as usize..end]),
                "{from}..{to}"
            );
        }
        assert_eq!(joined(&snapshot, 9_999, 10_000), "");
        assert_eq!(joined(&snapshot, 7, 3), "");
    }
}
