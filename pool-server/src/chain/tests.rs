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
                assert_eq!(message, "block 1 was already won by alice 1.5 s ago; mine on block 2");
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
