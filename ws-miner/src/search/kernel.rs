//! The kernels (the code that runs the compressions) and their run-time choice.
//!
//! Each kernel answers one question for a [`Prepared`] slow step: which is the first fast value
//! in a range whose digest's first word passes the target mask? The SIMD kernels live in their
//! own modules, the only ones allowed `unsafe`; this module only calls them once the CPU has
//! been checked for the features they need.

use super::calibrate::{self, Calibration};
use super::layout::Prepared;
use super::sha;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512, shani};
use std::fmt;

/// A way of computing compressions. Which is fastest depends on the CPU, so the one used by
/// default is chosen by measuring them ([`Kernel::detect`]), never by a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// 16 candidates at once in AVX-512 registers (needs `avx512f`).
    Avx512,
    /// One compression per candidate with the SHA extensions, two candidates interleaved
    /// (needs `sha`, `sse4.1`).
    ShaNi2,
    /// As [`Kernel::ShaNi2`], three candidates interleaved.
    ShaNi3,
    /// As [`Kernel::ShaNi2`], four candidates interleaved.
    ShaNi4,
    /// 8 candidates at once in AVX2 registers (needs `avx2`).
    Avx2,
    /// Plain Rust, one candidate at a time; runs everywhere.
    Portable,
}

impl Kernel {
    /// Every kernel, in no order of preference: [`Kernel::detect`] measures them.
    pub const ALL: [Kernel; 6] = [
        Kernel::Avx512,
        Kernel::ShaNi2,
        Kernel::ShaNi3,
        Kernel::ShaNi4,
        Kernel::Avx2,
        Kernel::Portable,
    ];

    /// The name that stands for the fastest SHA-NI width on this CPU (`--kernel sha-ni`).
    pub const SHA_NI: &'static str = "sha-ni";

    /// Returns the kernel's short name, as the CLI and the bench print it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::ShaNi2 => "sha-ni-x2",
            Kernel::ShaNi3 => "sha-ni-x3",
            Kernel::ShaNi4 => "sha-ni-x4",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// Returns the kernel named `name` (as [`Kernel::name`] prints it); [`Kernel::SHA_NI`]
    /// names the SHA-NI width that measures fastest here (measuring them once per process).
    pub fn from_name(name: &str) -> Option<Kernel> {
        if name == Kernel::SHA_NI {
            return Some(Kernel::calibration().fastest_sha_ni().unwrap_or(Kernel::ShaNi3));
        }
        Kernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Returns true when this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::is_supported(),
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi2 | Kernel::ShaNi3 | Kernel::ShaNi4 => shani::is_supported(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::is_supported(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Returns the kernels this CPU can run, in [`Kernel::ALL`]'s order.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.is_available()).collect()
    }

    /// Returns the kernel that measured fastest here among those this CPU runs and that pass
    /// the start-up self-test ([`Kernel::calibration`], done once per process).
    pub fn detect() -> Kernel {
        Kernel::calibration().chosen
    }

    /// Returns the measurement behind [`Kernel::detect`]: every available kernel that passes
    /// its self-test, timed on one thread for a few milliseconds (see [`Calibration`]). Runs
    /// once per process, on first use.
    pub fn calibration() -> &'static Calibration {
        calibrate::once()
    }

    /// Returns true when this kernel runs here and finds exactly the proofs the plain
    /// `sha256(prefix + decimal(proof))` finds on a few known ranges (a few milliseconds).
    pub fn passes_self_test(self) -> bool {
        self.is_available() && super::selftest::passes(self)
    }

    /// Returns how many candidates one step of the kernel hashes together.
    pub fn width(self) -> usize {
        match self {
            Kernel::Avx512 => 16,
            Kernel::ShaNi2 => 2,
            Kernel::ShaNi3 => 3,
            Kernel::ShaNi4 => 4,
            Kernel::Avx2 => 8,
            Kernel::Portable => 1,
        }
    }

    /// Returns the first fast value in `lo..hi` whose first digest word passes `p.mask`.
    /// A kernel the CPU lacks falls back to the portable one (callers choose available ones).
    pub(crate) fn scan(self, p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::scan(p, lo, hi),
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi2 | Kernel::ShaNi3 | Kernel::ShaNi4 => {
                shani::scan(p, lo, hi, self.width())
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::scan(p, lo, hi),
            _ => sha::scan(p, lo, hi),
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
