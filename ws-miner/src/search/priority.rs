//! The search workers' CPU priority (`--nice`): optionally below the miner's own network thread,
//! so that the thread that reads a new block never waits behind the hashing.
//!
//! On Linux each worker raises its own nice value ([`Searcher::with_nice`]; `setpriority` on a
//! thread id affects that thread only, and a nice value can only go up without privileges). The
//! network thread keeps the priority the miner was started with. Nice 19 (the lowest priority)
//! suits a miner run in the background on a laptop: anything the user runs comes first, and an
//! otherwise idle CPU is still all the miner's. It is not the default: in bench-waste races (4
//! miners x 2 threads on 2 cores) it did not lower the hashes spent on blocks already won and made
//! the old workers return later (see the README). Elsewhere than Linux this does nothing.
//!
//! [`Searcher::with_nice`]: super::Searcher::with_nice

/// The highest nice value (the lowest priority) Linux has.
pub const MAX_NICE: i32 = 19;

/// Raises the calling thread's nice value by `by` (at most to [`MAX_NICE`]); returns whether
/// the thread now runs at that value.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn lower_this_thread(by: i32) -> bool {
    // SAFETY: gettid has no preconditions; getpriority and setpriority read only their integer
    // arguments, and change at most the nice value of the thread they name (this one).
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        // getpriority returns -1 for an error as well as for nice -1; on its own thread id it
        // cannot fail, and a wrong guess only makes the new value off by the difference.
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        let target = now.saturating_add(by.max(0)).min(MAX_NICE);
        libc::setpriority(libc::PRIO_PROCESS, tid, target) == 0
    }
}

/// Raises the calling thread's nice value: not done on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_this_thread(_by: i32) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's nice value, from /proc (field 19 of its stat line).
    fn nice_of_this_thread() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc is mounted");
        let rest = stat.rsplit_once(')').expect("stat names the command in parentheses").1;
        rest.split_whitespace().nth(16).and_then(|f| f.parse().ok()).expect("a nice field")
    }

    #[test]
    fn lowering_a_worker_leaves_the_other_threads_alone() {
        let before = nice_of_this_thread();
        for by in [3, MAX_NICE] {
            let worker = std::thread::spawn(move || (lower_this_thread(by), nice_of_this_thread()))
                .join()
                .expect("the worker ran");
            assert_eq!(worker, (true, (before + by).min(MAX_NICE)), "by {by}");
        }
        assert_eq!(nice_of_this_thread(), before, "only the workers were lowered");
    }
}
