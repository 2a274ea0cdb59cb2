//! Tests of the search against the straightforward `sha256(prefix + decimal(proof))`, for every
//! kernel this CPU can run (the others print that they were skipped).

use super::*;
use proptest::prelude::*;

fn difficulty(zeros: u64) -> Difficulty {
    Difficulty::new(zeros).expect("test difficulties are in range")
}

/// Every proof in `lo..=hi` that meets `zeros`, the straightforward way.
fn reference(prefix: &str, zeros: u64, lo: u64, hi: u64) -> Vec<u64> {
    let d = difficulty(zeros);
    (lo..=hi).filter(|&p| d.is_valid_proof(prefix, p)).collect()
}

/// Every proof in `lo..=hi` that meets `zeros`, found by repeated `first_in_range` calls.
fn found_by(kernel: Kernel, prefix: &str, zeros: u64, lo: u64, hi: u64) -> Vec<u64> {
    let searcher = Searcher::with_kernel(kernel, 1).expect("callers pass available kernels");
    let job = Job { prefix: prefix.as_bytes().to_vec(), difficulty: difficulty(zeros) };
    let (stop, attempts) = (AtomicBool::new(false), AtomicU64::new(0));
    let mut out = Vec::new();
    let mut from = lo;
    while let Some(p) = searcher.first_in_range(&job, from, hi, &stop, &attempts) {
        assert!((from..=hi).contains(&p), "{kernel}: {p} outside {from}..={hi}");
        out.push(p);
        if p == hi {
            break;
        }
        from = p + 1;
    }
    out
}

/// Checks that `kernel` finds exactly the valid proofs of `lo..=hi` at one hex zero (one proof
/// in 16): each kernel answer is a first-valid-proof-in-range query, so a skipped candidate or
/// a wrong digest shows as a difference (and a false candidate trips a debug assertion).
#[track_caller]
fn check(kernel: Kernel, prefix: &str, lo: u64, hi: u64) {
    assert_eq!(
        found_by(kernel, prefix, 1, lo, hi),
        reference(prefix, 1, lo, hi),
        "{kernel} kernel, prefix length {} (mod 64: {}), proofs {lo}..={hi}",
        prefix.len(),
        prefix.len() % 64
    );
}

/// A deterministic ASCII prefix of `len` bytes that looks like a block string.
fn prefix_of_len(len: usize) -> String {
    let pattern = r#"{"index": 7, "previous_hash": "a1b2", "proof": 35293, "timestamp": 1.5}"#;
    pattern.chars().cycle().take(len).collect()
}

fn available() -> Vec<Kernel> {
    for kernel in Kernel::ALL {
        if !kernel.is_available() {
            eprintln!("skipped: the {kernel} kernel (this CPU lacks its features)");
        }
    }
    Kernel::available()
}

#[test]
fn every_tail_length_in_every_planned_range() {
    for kernel in available() {
        for tail in 0..64 {
            let prefix = prefix_of_len(64 * (tail % 3) + tail);
            let job = Job { prefix: prefix.as_bytes().to_vec(), difficulty: difficulty(1) };
            for (lo, hi) in job.proof_ranges() {
                check(kernel, &prefix, lo, (lo + 250).min(hi));
                check(kernel, &prefix, hi.saturating_sub(250).max(lo), hi);
            }
        }
    }
}

#[test]
fn digit_count_boundaries_and_the_largest_proofs() {
    for kernel in available() {
        for len in [0, 13, 40, 51, 55, 56, 63, 64, 110, 119, 127] {
            let prefix = prefix_of_len(len);
            check(kernel, &prefix, 0, 130);
            for k in 2..=19u32 {
                let edge = 10u64.pow(k);
                check(kernel, &prefix, edge - 60, edge + 60);
            }
            check(kernel, &prefix, MAX_PROOF - 80, MAX_PROOF + 80);
            check(kernel, &prefix, u64::MAX - 100, u64::MAX);
        }
    }
}

#[test]
fn plans_use_one_compression_per_attempt_and_safe_proofs() {
    for tail in 0..64usize {
        let job = Job { prefix: vec![b'x'; tail], difficulty: difficulty(1) };
        let ranges = job.proof_ranges();
        assert!(!ranges.is_empty(), "tail {tail}");
        let total: u64 = ranges.iter().map(|(lo, hi)| hi - lo + 1).sum();
        // Enough proofs for eight hex zeroes many times over.
        assert!(total >= 900_000_000, "tail {tail}: only {total} proofs");
        for (lo, hi) in ranges {
            assert!(lo <= hi && hi <= MAX_PROOF);
            let n = lo.to_string().len();
            assert_eq!(n, hi.to_string().len(), "one digit count per range");
            // Either everything fits after the tail, or the high digits complete the tail's
            // block and at least one digit plus the padding fit the next one.
            assert!(tail + n + 9 <= 64 || (64 - tail < n && n - (64 - tail) + 9 <= 64));
        }
    }
}

#[test]
fn every_kernel_search_returns_valid_proofs() {
    for kernel in available() {
        for threads in [1, 2, 3] {
            for (len, seed) in [(0, 0), (50, 7), (117, u64::MAX), (200, 12_345_678_901)] {
                let prefix = prefix_of_len(len);
                let job = Job { prefix: prefix.as_bytes().to_vec(), difficulty: difficulty(3) };
                let (stop, attempts) = (AtomicBool::new(false), AtomicU64::new(0));
                let searcher = Searcher::with_kernel(kernel, threads).expect("available");
                let proof = searcher.search(&job, seed, &stop, &attempts).expect("a proof");
                assert!(job.difficulty.is_valid_proof(&prefix, proof), "{kernel}: {proof}");
                assert!(proof <= MAX_PROOF);
                assert!(attempts.load(Ordering::Relaxed) > 0);
            }
        }
    }
}

#[test]
fn one_thread_search_returns_the_first_proof_from_the_seed() {
    for kernel in available() {
        let prefix = prefix_of_len(150);
        let job = Job { prefix: prefix.as_bytes().to_vec(), difficulty: difficulty(2) };
        let (lo, hi) = job.proof_ranges()[0];
        let seed = 777;
        let (stop, attempts) = (AtomicBool::new(false), AtomicU64::new(0));
        let searcher = Searcher::with_kernel(kernel, 1).expect("available");
        let proof = searcher.search(&job, seed, &stop, &attempts).expect("a proof");
        let expected = reference(&prefix, 2, lo + seed, hi.min(lo + seed + 20_000));
        assert_eq!(Some(&proof), expected.first(), "{kernel}");
        assert_eq!(attempts.load(Ordering::Relaxed), proof - (lo + seed) + 1, "{kernel}");
    }
}

#[test]
fn a_set_stop_flag_ends_a_hopeless_search() {
    for kernel in available() {
        let job = Job { prefix: prefix_of_len(90).into(), difficulty: difficulty(64) };
        let (stop, attempts) = (AtomicBool::new(true), AtomicU64::new(0));
        let searcher = Searcher::with_kernel(kernel, 2).expect("available");
        assert_eq!(searcher.search(&job, 1, &stop, &attempts), None, "{kernel}");
        // Each worker stops at its first look at the flag, after one chunk of the kernel.
        assert!(attempts.load(Ordering::Relaxed) <= 2 * CHECK_EVERY, "{kernel}");
    }
}

#[test]
fn kernel_names_round_trip_and_detection_picks_an_available_one() {
    for kernel in Kernel::ALL {
        assert_eq!(Kernel::from_name(kernel.name()), Some(kernel));
        assert_eq!(Searcher::with_kernel(kernel, 1).is_ok(), kernel.is_available());
        assert!(CHECK_EVERY.is_multiple_of(kernel.width() as u64), "{kernel}");
    }
    assert!(Kernel::detect().is_available());
    assert!(Kernel::available().contains(&Kernel::Portable));
    let sha_ni = Kernel::from_name(Kernel::SHA_NI).expect("sha-ni names a kernel");
    assert!(matches!(sha_ni, Kernel::ShaNi2 | Kernel::ShaNi3 | Kernel::ShaNi4), "{sha_ni}");
    assert_eq!(Kernel::from_name("md5"), None);
}

#[test]
fn auto_chooses_the_fastest_measured_kernel_among_those_that_pass_the_self_test() {
    let calibration = Kernel::calibration();
    let measured: Vec<Kernel> = calibration.rates.iter().map(|(k, _)| *k).collect();
    // Every kernel this CPU runs is either measured or reported as failing its self-test.
    let mut accounted = measured.clone();
    accounted.extend(&calibration.failed);
    accounted.sort_by_key(|k| k.name());
    let mut available = Kernel::available();
    available.sort_by_key(|k| k.name());
    assert_eq!(accounted, available);
    assert!(measured.contains(&Kernel::Portable));
    for (kernel, rate) in &calibration.rates {
        assert!(*rate > 0.0, "{kernel}: {rate}");
        assert!(*kernel == Kernel::Portable || kernel.passes_self_test(), "{kernel}");
        // The choice is the highest figure (no fixed order decides it).
        assert!(*rate <= calibration.rate(calibration.chosen).unwrap_or(0.0), "{kernel}");
    }
    assert_eq!(Kernel::detect(), calibration.chosen);
    if let Some(fastest) = calibration.fastest_sha_ni() {
        assert_eq!(Kernel::from_name(Kernel::SHA_NI), Some(fastest));
    }
    // The printed reason names the choice and every figure behind it.
    let line = calibration.to_string();
    assert!(line.starts_with(calibration.chosen.name()), "{line}");
    for kernel in measured {
        assert!(line.contains(&format!(" {kernel} ")), "{kernel} missing from {line}");
    }
}

#[test]
fn a_fresh_calibration_measures_every_kernel_that_passes() {
    // Independent of the process-wide one: one round of a short slice each.
    let fresh = calibrate::measure(1, std::time::Duration::from_micros(200));
    assert_eq!(fresh.rates.len() + fresh.failed.len(), Kernel::available().len());
    assert!(fresh.rates.iter().any(|(k, _)| *k == fresh.chosen));
}

#[test]
fn every_available_kernel_passes_the_start_up_self_test() {
    for kernel in Kernel::available() {
        assert!(kernel.passes_self_test(), "{kernel}");
    }
    assert!(Kernel::detect().passes_self_test());
}

#[test]
fn avx512_matches_the_reference_where_the_cpu_has_it() {
    if !Kernel::Avx512.is_available() {
        eprintln!("skipped: this CPU lacks avx512f, the avx512 kernel was not run");
        return;
    }
    for len in [0, 30, 50, 55, 60, 63, 100, 250] {
        let prefix = prefix_of_len(len);
        let job = Job { prefix: prefix.as_bytes().to_vec(), difficulty: difficulty(1) };
        for (lo, hi) in job.proof_ranges() {
            check(Kernel::Avx512, &prefix, lo + 5, (lo + 2000).min(hi));
        }
    }
}

/// Every proof in `lo..=hi` whose digest has at least `bits` leading zero bits, the
/// straightforward way.
fn reference_bits(prefix: &str, bits: u32, lo: u64, hi: u64) -> Vec<u64> {
    use sha2::{Digest, Sha256};
    (lo..=hi)
        .filter(|p| {
            let digest: [u8; 32] =
                Sha256::new().chain_update(prefix).chain_update(p.to_string()).finalize().into();
            protocol::share::leading_zero_bits(&digest) >= bits
        })
        .collect()
}

/// The shares `kernel` reports in `lo..=hi` at `share_bits` for a job of `zeros`, and the
/// block proof that ended the scan, if any.
fn shares_by(
    kernel: Kernel,
    prefix: &str,
    zeros: u64,
    share_bits: u8,
    lo: u64,
    hi: u64,
) -> (Vec<u64>, Option<u64>) {
    let searcher = Searcher::with_kernel(kernel, 1).expect("callers pass available kernels");
    let job = Job { prefix: prefix.as_bytes().to_vec(), difficulty: difficulty(zeros) };
    let (stop, attempts) = (AtomicBool::new(false), AtomicU64::new(0));
    let shares = std::sync::Mutex::new(Vec::new());
    let block = searcher.shares_in_range(&job, Some(share_bits), lo, hi, &stop, &attempts, &|p| {
        shares.lock().expect("not poisoned").push(p);
    });
    (shares.into_inner().expect("not poisoned"), block)
}

#[test]
fn a_share_search_goes_on_after_each_share_and_stops_at_a_block() {
    for kernel in available() {
        let prefix = prefix_of_len(77);
        let (lo, hi) = (1_000_000, 1_200_000);
        // Shares of 4 bits until the first proof of two hex zeroes (8 bits).
        let (shares, block) = shares_by(kernel, &prefix, 2, 4, lo, hi);
        let first_block = reference(&prefix, 2, lo, hi).first().copied();
        assert!(first_block.is_some(), "the range holds a block");
        assert_eq!(block, first_block, "{kernel}");
        let expected: Vec<u64> = reference_bits(&prefix, 4, lo, hi)
            .into_iter()
            .filter(|p| Some(*p) < first_block)
            .collect();
        assert!(expected.len() > 1, "several shares come before the block");
        assert_eq!(shares, expected, "{kernel}");
        // A target at or above the block's finds blocks only.
        assert_eq!(shares_by(kernel, &prefix, 2, 8, lo, hi), (Vec::new(), first_block));
        // A whole search hands shares over as it goes and still returns a block.
        let job = Job { prefix: prefix.as_bytes().to_vec(), difficulty: difficulty(3) };
        let (stop, attempts) = (AtomicBool::new(false), AtomicU64::new(0));
        let seen = std::sync::Mutex::new(Vec::new());
        let searcher = Searcher::with_kernel(kernel, 2).expect("available");
        let proof = searcher
            .search_shares(&job, Some(6), 99, &stop, &attempts, &|p| {
                seen.lock().expect("not poisoned").push(p);
            })
            .expect("a proof");
        assert!(job.difficulty.is_valid_proof(&prefix, proof), "{kernel}: {proof}");
        for share in seen.into_inner().expect("not poisoned") {
            let bits = reference_bits(&prefix, 6, share, share);
            assert_eq!(bits, [share], "{kernel}: share {share} has fewer than 6 zero bits");
            assert!(!job.difficulty.is_valid_proof(&prefix, share), "{kernel}: {share} is a block");
        }
    }
}

fn prefix_strategy() -> impl Strategy<Value = String> {
    let len = prop_oneof![0usize..300, (0usize..4, 50usize..64).prop_map(|(k, t)| 64 * k + t)];
    len.prop_flat_map(|n| proptest::collection::vec(0x20u8..0x7f, n))
        .prop_map(|bytes| bytes.into_iter().map(char::from).collect())
}

fn start_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..1_000_000,
        (1u32..20, 0u64..300).prop_map(|(k, back)| 10u64.pow(k).saturating_sub(back)),
        any::<u64>(),
        (0u64..1000).prop_map(|back| MAX_PROOF - back),
        (0u64..1000).prop_map(|back| u64::MAX - back),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn kernels_agree_with_the_straightforward_hash(
        prefix in prefix_strategy(),
        lo in start_strategy(),
        len in 0u64..400,
    ) {
        let hi = lo.saturating_add(len);
        let expected = reference(&prefix, 1, lo, hi);
        for kernel in Kernel::available() {
            prop_assert_eq!(found_by(kernel, &prefix, 1, lo, hi), expected.clone(), "{}", kernel);
        }
    }

    #[test]
    fn planned_ranges_agree_with_the_straightforward_hash(
        prefix in prefix_strategy(),
        pick in any::<prop::sample::Index>(),
        offset in any::<u64>(),
        len in 0u64..400,
    ) {
        let job = Job { prefix: prefix.as_bytes().to_vec(), difficulty: difficulty(1) };
        let ranges = job.proof_ranges();
        let (lo, hi) = ranges[pick.index(ranges.len())];
        let lo = lo + offset % (hi - lo + 1);
        let hi = hi.min(lo + len);
        let expected = reference(&prefix, 1, lo, hi);
        for kernel in Kernel::available() {
            prop_assert_eq!(found_by(kernel, &prefix, 1, lo, hi), expected.clone(), "{}", kernel);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// A target in leading zero bits (a share target, not a multiple of 4) finds exactly the
    /// proofs whose plain SHA-256 has that many, in order, with every kernel; with no block in
    /// reach (difficulty 64) the whole range is scanned.
    #[test]
    fn a_bits_target_finds_exactly_what_the_plain_hash_finds(
        prefix in prefix_strategy(),
        lo in start_strategy(),
        len in 0u64..400,
        bits in 1u8..=7,
    ) {
        let hi = lo.saturating_add(len);
        let expected = reference_bits(&prefix, u32::from(bits), lo, hi);
        for kernel in Kernel::available() {
            prop_assert_eq!(shares_by(kernel, &prefix, 64, bits, lo, hi), (expected.clone(), None), "{}", kernel);
        }
    }
}
