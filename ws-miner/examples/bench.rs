//! Prints the proof search's attempts/s per kernel, on one thread and on all threads, next to a
//! course-style Python miner: `cargo run --release -p ws-miner --example bench [SECONDS [REPS]]`.

use ws_miner::search::bench::{self, BenchOptions};

fn main() -> anyhow::Result<()> {
    let mut opts = BenchOptions::default();
    let mut args = std::env::args().skip(1);
    if let Some(seconds) = args.next() {
        opts.seconds = seconds.parse()?;
    }
    if let Some(reps) = args.next() {
        opts.repetitions = reps.parse()?;
    }
    bench::run(&opts, &mut std::io::stdout().lock())
}
