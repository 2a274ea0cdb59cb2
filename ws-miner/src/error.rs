//! Configuration errors and the process exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

/// Why the command line cannot be turned into a configuration. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither `--id` nor `my_id.txt`.
    #[error(
        "no miner id: pass --id NAME, or put your id in my_id.txt in the directory you run ws-miner from"
    )]
    NoId,
    /// `my_id.txt` exists but cannot be read.
    #[error("cannot read the miner id from {}: {source}", path.display())]
    IdFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The id is empty after trimming.
    #[error("the miner id is empty: pass --id NAME or write a name into my_id.txt")]
    EmptyId,
    /// The id breaks the protocol's id rules (too long, unprintable).
    #[error("the miner id {0}")]
    BadId(protocol::IdError),
    /// The URL cannot be used.
    #[error("bad server URL {url:?}: {why}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        why: String,
    },
    /// `--zeros` out of range.
    #[error("--zeros: {0}")]
    Zeros(protocol::DifficultyError),
    /// `--threads 0`.
    #[error("--threads must be at least 1")]
    Threads,
    /// `--ca` cannot be used.
    #[error("--ca {}: {why}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The TLS settings cannot be built.
    #[error("TLS: {0}")]
    Tls(String),
    /// `--kernel` names no kernel.
    #[error("--kernel: unknown kernel {0:?}; choose auto, avx512, sha-ni, avx2 or portable")]
    Kernel(String),
    /// `--kernel` names a kernel this CPU cannot run.
    #[error("--kernel: the {0} kernel needs CPU features this machine lacks; try --kernel auto")]
    KernelUnavailable(crate::search::Kernel),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `--once`: this miner won its block.
    Won,
    /// `--once`: another miner won the block, or the proof was rejected.
    Lost,
    /// Stopped by Ctrl-C (or the caller's shutdown signal).
    Interrupted,
}

/// The process exit codes, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success (`--once` won, or `--help`).
    Ok = 0,
    /// `--once` lost, or a fatal runtime error.
    Lost = 1,
    /// Usage or configuration error.
    Usage = 2,
    /// Ctrl-C.
    Interrupted = 130,
}

impl From<Outcome> for Exit {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Won => Exit::Ok,
            Outcome::Lost => Exit::Lost,
            Outcome::Interrupted => Exit::Interrupted,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
