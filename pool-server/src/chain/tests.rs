use super::*;

fn mine(block_string: &str, d: Difficulty) -> u64 {
    (0..).find(|p| d.is_valid_proof(block_string, *p)).expect("a proof exists")
}

fn sub(proof: u64, index: Option<u64>) -> ProofSubmission {
    ProofSubmission { proof, id: "alice".into(), index }
}

#[test]
fn win_then_stale_then_invalid() {
    let d = Difficulty::new(2).expect("in range");
    let mut chain = Chain::new(Block::genesis(1000.0));
    let proof = mine(&chain.last().block_string(), d);
    assert_eq!(chain.judge(&sub(proof, None), d, 1001.0), Judgement::Wins);
    let block = chain.forge(proof, "alice", 1001.0);
    chain.append(block);
    // Unless it happens to be valid for block 2 too, the same proof is now stale.
    if !d.is_valid_proof(&chain.last().block_string(), proof) {
        match chain.judge(&sub(proof, None), d, 1002.5) {
            Judgement::Rejected { reason: RejectReason::Stale, message } => {
                assert_eq!(
                    message,
                    "block #2 was already won by alice 1.5 s ago; mine on block #3"
                );
            }
            other => panic!("expected stale, got {other:?}"),
        }
    }
    // Naming block 1 makes it stale whatever block 2 is.
    assert!(matches!(
        chain.judge(&sub(proof, Some(1)), d, 1002.0),
        Judgement::Rejected { reason: RejectReason::Stale, .. }
    ));
    let bad = (0..).find(|p| {
        !d.is_valid_proof(&chain.blocks()[0].block_string(), *p)
            && !d.is_valid_proof(&chain.last().block_string(), *p)
    });
    let bad = bad.expect("some proof is invalid");
    assert!(matches!(
        chain.judge(&sub(bad, None), d, 1002.0),
        Judgement::Rejected { reason: RejectReason::Invalid, .. }
    ));
    assert!(matches!(
        chain.judge(&sub(proof, Some(9)), d, 1002.0),
        Judgement::Rejected { reason: RejectReason::Invalid, .. }
    ));
}

#[test]
fn forged_block_takes_pending_then_reward() {
    let mut chain = Chain::new(Block::genesis(1.0));
    let t = Transaction { sender: "a".into(), recipient: "b".into(), amount: 5 };
    assert_eq!(chain.add_pending(t.clone()), 2);
    let block = chain.forge(7, "miner", 2.0);
    assert_eq!(block.transactions, vec![t, Transaction::reward("miner")]);
    assert_eq!(block.previous_hash, chain.last().hash().to_hex());
    chain.append(block);
    assert!(chain.pending().is_empty());
}

/// A 128-byte party name that Python escapes to the most bytes (surrogate pairs: 12 bytes per
/// 4-byte character), made distinct by `n`.
fn widest(n: usize) -> String {
    format!("{n:06}{}é", "🚀".repeat(30))
}

#[test]
fn the_fullest_block_stays_under_the_maximum() {
    let mut chain = Chain::new(Block::genesis(1.0));
    // Only what is not a pending transaction: the overhead the bound reserves.
    let empty = chain.forge(u64::MAX, &widest(0), -1.2345678901234567e-300);
    assert!(empty.block_string().len() <= BLOCK_OVERHEAD_BYTES);
    let mut n = 0;
    loop {
        let t = Transaction { sender: widest(n), recipient: widest(n + 1), amount: u64::MAX };
        if let Err(full) = chain.check_pending(&t) {
            assert_eq!(full.next, 2);
            assert_eq!(full.pending, n);
            break;
        }
        chain.add_pending(t);
        n += 1;
    }
    assert!(n > 100, "room for {n} transactions only");
    let block = chain.forge(u64::MAX, &widest(0), -1.2345678901234567e-300);
    let bytes = block.block_string().len();
    assert!(bytes <= protocol::block::MAX_BLOCK_BYTES, "{bytes} bytes");
    assert!(bytes > MAX_PENDING_BYTES - 1024, "the pending bytes are counted as printed: {bytes}");
    // The WebSocket frame is no longer than the block string plus the envelope.
    let frame = protocol::ServerMessage::block(&block, Difficulty::DEFAULT).to_json();
    assert!(frame.len() <= bytes + 64, "frame {} vs block string {bytes}", frame.len());
    chain.append(block);
    assert!(chain.check_pending(&Transaction::reward("x")).is_ok());
}

#[test]
fn the_count_of_pending_transactions_is_capped() {
    let mut chain = Chain::new(Block::genesis(1.0));
    let t = Transaction { sender: "a".into(), recipient: "b".into(), amount: 1 };
    for _ in 0..MAX_PENDING_TRANSACTIONS {
        assert!(chain.check_pending(&t).is_ok());
        chain.add_pending(t.clone());
    }
    let full = chain.check_pending(&t).expect_err("full");
    assert_eq!(full.pending, MAX_PENDING_TRANSACTIONS);
}
