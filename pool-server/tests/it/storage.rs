//! One conformance suite for both storage backends: every test here runs the same scenario
//! through the `Storage` and `ShareStore` traits on SQLite (a real file in a temp dir) and on
//! PostgreSQL (a throwaway server; skipped only where PostgreSQL cannot start and
//! `REQUIRE_POSTGRES` is unset: CI sets it). Two share stores opened from one storage stand for
//! two frontends writing shares at once (two connections to the same SQLite file, or to the same
//! PostgreSQL database).

use pool_server::payout::Payout;
use pool_server::pg::PgStore;
use pool_server::storage::{
    Forged, ShareBatch, ShareRow, ShareStore, ShareStored, Storage, WorkerRow,
};
use pool_server::store::Store;
use protocol::{Block, Difficulty, Transaction};

use crate::pg;

fn difficulty() -> Difficulty {
    Difficulty::new(3).expect("difficulty")
}

/// Runs `scenario` on a fresh SQLite store, then on a fresh PostgreSQL one.
fn on_both(scenario: impl Fn(&str, &mut dyn Storage)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sqlite = Store::open(&dir.path().join("data")).expect("SQLite store");
    Storage::mark_running(&mut sqlite).expect("mark running");
    scenario("sqlite", &mut sqlite);
    drop(sqlite);
    let Some(server) = pg::server_or_skip() else { return };
    let mut postgres = PgStore::open(&server.url(), difficulty(), Payout::Solo, "127.0.0.1:1")
        .expect("PostgreSQL store");
    scenario("postgres", &mut postgres);
}

fn share(block: u64, proof: u64, id: &str, bits: u8, ts: f64) -> ShareRow {
    ShareRow { block, proof, id: id.to_owned(), bits, ts }
}

/// Stores `shares` as the share writer does: the shares in one batch, then (as about once a
/// second) a batch with the figures due.
fn put(to: &mut dyn ShareStore, shares: Vec<ShareRow>) -> Vec<ShareStored> {
    let results = to.write(&ShareBatch { shares, ..ShareBatch::default() }).expect("a batch");
    let none = to.write(&ShareBatch { figures_due: true, ..ShareBatch::default() });
    assert!(none.expect("the figures").is_empty());
    results
}

fn now() -> f64 {
    pool_server::ledger::now()
}

/// Forges the next block on `tip` paying `finder`, handing `make` the window's shares.
fn forge(store: &mut dyn Storage, tip: u64, window: u128, seen: &mut Vec<(String, u8)>) -> Block {
    let mut make = |_: Option<&[Transaction]>, shares: &[(String, u8)]| {
        *seen = shares.to_vec();
        let mut block = Block::genesis(now());
        block.index = tip + 1;
        block.proof = 1000 + tip;
        block.transactions = vec![Transaction::reward("finder")];
        block
    };
    match store.forge(tip, difficulty(), window, None, &mut make).expect("forge") {
        Forged::Stored(block) => block,
        Forged::Lost => panic!("lost a forge with one writer"),
    }
}

#[test]
fn a_batch_stores_each_share_once_across_frontends() {
    on_both(|name, store| {
        let mut a = store.share_store().expect("share store a");
        let mut b = store.share_store().expect("share store b");
        let t = now();
        let first = put(
            &mut *a,
            vec![
                share(1, 10, "alice", 5, t),
                share(1, 11, "alice", 5, t),
                share(1, 10, "mallory", 5, t), // the same proof again, in the same batch
            ],
        );
        assert_eq!(
            first,
            [ShareStored::Stored, ShareStored::Stored, ShareStored::Duplicate],
            "{name}"
        );
        // Another frontend sends one already stored and a new one.
        let second = put(&mut *b, vec![share(1, 11, "bob", 5, t), share(1, 12, "bob", 6, t)]);
        assert_eq!(second, [ShareStored::Duplicate, ShareStored::Stored], "{name}");
        // The same proof for another block is another share.
        let third = put(&mut *a, vec![share(2, 10, "alice", 5, t)]);
        assert_eq!(third, [ShareStored::Stored], "{name}");
        let workers = b.workers(t - 60.0, 10).expect("workers");
        let of = |id: &str| workers.iter().find(|w| w.id == id).cloned();
        let alice = of("alice").expect("alice");
        assert_eq!((alice.shares, alice.work), (3, 3.0 * 32.0), "{name}: {workers:?}");
        let bob = of("bob").expect("bob");
        assert_eq!((bob.shares, bob.work), (1, 64.0), "{name}: {workers:?}");
        assert!(of("mallory").is_none(), "{name}: a duplicate counts for nobody: {workers:?}");
        // Most work first.
        assert_eq!(workers[0].id, "alice", "{name}");
    });
}

#[test]
fn first_and_last_share_are_the_earliest_and_latest_whatever_the_order() {
    on_both(|name, store| {
        let mut a = store.share_store().expect("share store a");
        let mut b = store.share_store().expect("share store b");
        let t = now();
        // Two frontends' batches commit out of time order.
        put(&mut *a, vec![share(1, 1, "carol", 4, t - 5.0)]);
        put(&mut *b, vec![share(1, 2, "carol", 4, t - 1.0)]);
        put(&mut *a, vec![share(1, 3, "carol", 4, t - 3.0), share(1, 4, "carol", 4, t - 9.0)]);
        let w: Vec<WorkerRow> = a.workers(t - 60.0, 10).expect("workers");
        assert_eq!(w.len(), 1, "{name}");
        assert_eq!((w[0].first_share, w[0].last_share), (t - 9.0, t - 1.0), "{name}: {w:?}");
        assert_eq!((w[0].shares, w[0].work), (4, 64.0), "{name}");
        // Only work inside the window counts; the counts are for ever.
        let recent = a.workers(t - 4.0, 10).expect("workers");
        assert_eq!(recent[0].shares, 4, "{name}");
        assert!(recent[0].work < 64.0, "{name}: {recent:?}");
        // A worker whose last share is before the window is not listed.
        assert!(a.workers(t - 0.5, 10).expect("workers").is_empty(), "{name}");
    });
}

#[test]
fn refusals_count_only_for_ids_with_an_accepted_share() {
    on_both(|name, store| {
        let mut a = store.share_store().expect("share store");
        let t = now();
        put(&mut *a, vec![share(1, 1, "dave", 4, t)]);
        let refused = ShareBatch {
            refused: vec![("dave".to_owned(), 2, 3), ("nobody".to_owned(), 5, 5)],
            figures_due: true,
            ..ShareBatch::default()
        };
        assert!(a.write(&refused).expect("write").is_empty(), "{name}");
        let w = a.workers(t - 60.0, 10).expect("workers");
        assert_eq!(w.len(), 1, "{name}: refusals create no worker: {w:?}");
        assert_eq!((w[0].stale, w[0].invalid), (2, 3), "{name}");
    });
}

#[test]
fn a_forge_reads_the_pplns_window_by_work_newest_first() {
    on_both(|name, store| {
        let mut a = store.share_store().expect("share store");
        let t = now();
        // Oldest first: two 10-bit shares, then eight 4-bit ones.
        let mut shares = vec![share(1, 1, "old", 10, t), share(1, 2, "old", 10, t)];
        shares.extend((0..8).map(|i| share(1, 100 + i, "cheap", 4, t)));
        put(&mut *a, shares);
        let mut seen = Vec::new();
        // A window of 2^10 + 2^7: the eight cheap shares (2^7) and one old one reach it.
        forge(store, 1, (1 << 10) + (1 << 7), &mut seen);
        let expected: Vec<(String, u8)> = std::iter::repeat_n(("cheap".to_owned(), 4), 8)
            .chain([("old".to_owned(), 10)])
            .collect();
        assert_eq!(seen, expected, "{name}");
        // Solo reads nothing.
        forge(store, 2, 0, &mut seen);
        assert!(seen.is_empty(), "{name}");
        // A window larger than all the work reads every share.
        forge(store, 3, 1 << 40, &mut seen);
        assert_eq!(seen.len(), 10, "{name}");
        // The chain went on: each forge stored its block.
        assert_eq!(store.load().expect("load").blocks.len(), 4, "{name}");
    });
}

#[test]
fn pending_transactions_go_into_the_next_block_once() {
    on_both(|name, store| {
        let t = Transaction { sender: "a".to_owned(), recipient: "b".to_owned(), amount: 3 };
        let mut check = |_: Option<&[Transaction]>| Ok(());
        store.add_pending(1, &t, &mut check).expect("add pending");
        assert_eq!(store.load().expect("load").pending, std::slice::from_ref(&t), "{name}");
        let mut taken = None;
        let mut make = |pending: Option<&[Transaction]>, _: &[(String, u8)]| {
            taken = pending.map(<[Transaction]>::to_vec);
            let mut block = Block::genesis(now());
            block.index = 2;
            block.transactions = pending.map(<[Transaction]>::to_vec).unwrap_or_default();
            block
        };
        store.forge(1, difficulty(), 0, None, &mut make).expect("forge");
        let loaded = store.load().expect("load");
        assert!(loaded.pending.is_empty(), "{name}: the block took them");
        assert_eq!(loaded.blocks.len(), 2, "{name}");
    });
}

#[test]
fn pruning_removes_expired_shares_and_work() {
    on_both(|name, store| {
        let mut a = store.share_store().expect("share store");
        let t = now();
        put(&mut *a, vec![share(1, 1, "eve", 6, t - 600.0), share(1, 2, "eve", 6, t)]);
        a.prune(t - 300.0).expect("prune");
        // The old proof is gone from the store: it can be stored again (its block is long won).
        let again = put(&mut *a, vec![share(1, 1, "eve", 6, t)]);
        assert_eq!(again, [ShareStored::Stored], "{name}");
        let still = put(&mut *a, vec![share(1, 2, "eve", 6, t)]);
        assert_eq!(still, [ShareStored::Duplicate], "{name}: a kept share stays unique");
        let w = a.workers(t - 1000.0, 10).expect("workers");
        assert_eq!(w[0].work, 128.0, "{name}: the expired work bucket is gone: {w:?}");
    });
}

#[test]
fn figures_a_crash_left_in_memory_are_counted_when_the_store_opens_again() {
    on_both(|name, store| {
        let t = now();
        {
            let mut a = store.share_store().expect("share store");
            let batch = ShareBatch {
                shares: vec![share(1, 1, "frank", 5, t), share(1, 2, "frank", 5, t)],
                ..ShareBatch::default()
            };
            assert_eq!(a.write(&batch).expect("write"), [ShareStored::Stored; 2], "{name}");
            // Dropped with its figures not stored: as a crash would.
        }
        let mut b = store.share_store().expect("share store again");
        let w = b.workers(t - 60.0, 10).expect("workers");
        assert_eq!(w.len(), 1, "{name}: {w:?}");
        assert_eq!((w[0].shares, w[0].work), (2, 64.0), "{name}: {w:?}");
        // Counted once: opening again adds nothing.
        let mut c = store.share_store().expect("share store a third time");
        assert_eq!(c.workers(t - 60.0, 10).expect("workers")[0].shares, 2, "{name}");
    });
}
