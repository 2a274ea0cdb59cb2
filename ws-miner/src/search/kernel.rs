//! The kernels (the code that runs the compressions) and their run-time choice.
//!
//! Each kernel answers one question for a [`Prepared`] slow step: which is the first fast value
//! in a range whose digest's first word passes the target mask? The SIMD kernels live in their
//! own modules, the only ones allowed `unsafe`; this module only calls them once the CPU has
//! been checked for the features they need.

use super::layout::Prepared;
use super::sha;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512, shani};
use std::fmt;
use std::sync::OnceLock;

/// A way of computing compressions, fastest first in [`Kernel::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// 16 candidates at once in AVX-512 registers (needs `avx512f`).
    Avx512,
    /// One compression per candidate with the SHA extensions, three candidates interleaved
    /// (needs `sha`, `sse4.1`).
    ShaNi,
    /// 8 candidates at once in AVX2 registers (needs `avx2`).
    Avx2,
    /// Plain Rust, one candidate at a time; runs everywhere.
    Portable,
}

impl Kernel {
    /// Every kernel, in order of preference (measured: SHA-NI beats AVX2 on AMD Zen 3, and
    /// 16-lane AVX-512 beats SHA-NI where a CPU has both).
    pub const ALL: [Kernel; 4] = [Kernel::Avx512, Kernel::ShaNi, Kernel::Avx2, Kernel::Portable];

    /// Returns the kernel's short name, as the CLI and the bench print it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::ShaNi => "sha-ni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// Returns the kernel named `name` (as [`Kernel::name`] prints it).
    pub fn from_name(name: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Returns true when this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::is_supported(),
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi => shani::is_supported(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::is_supported(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Returns the kernels this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.is_available()).collect()
    }

    /// Returns the fastest kernel this CPU can run that passes the start-up self-test (it
    /// finds exactly what the plain hash finds on known ranges). Tested once per process.
    pub fn detect() -> Kernel {
        static DETECTED: OnceLock<Kernel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            Kernel::ALL
                .into_iter()
                .filter(|k| k.is_available())
                .find(|k| {
                    let ok = *k == Kernel::Portable || k.passes_self_test();
                    if !ok {
                        tracing::warn!(kernel = k.name(), "kernel failed its self-test; not used");
                    }
                    ok
                })
                .unwrap_or(Kernel::Portable)
        })
    }

    /// Returns true when this kernel runs here and finds exactly the proofs the plain
    /// `sha256(prefix + decimal(proof))` finds on a few known ranges (a few milliseconds).
    pub fn passes_self_test(self) -> bool {
        self.is_available() && super::selftest::passes(self)
    }

    /// Returns the first fast value in `lo..hi` whose first digest word passes `p.mask`.
    /// A kernel the CPU lacks falls back to the portable one (callers choose available ones).
    pub(crate) fn scan(self, p: &Prepared<'_>, lo: usize, hi: usize) -> Option<usize> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::scan(p, lo, hi),
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi => shani::scan(p, lo, hi),
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
