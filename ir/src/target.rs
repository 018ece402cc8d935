//! What a schedule may assume about the machine that runs a program: ISA features,
//! SIMD width, cache sizes and the number of threads.
//!
//! A `Target` is plain data. The backend reads the host's (`cpuid`, the available
//! parallelism) and the caller may override any field (`threads` is a compile
//! option); a test or a cross compile builds one by hand.

use std::fmt;

/// The machine a program is scheduled for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// 512-bit AVX-512F: the 12x32 matmul microkernel may be used.
    pub avx512f: bool,
    /// 256-bit AVX2 with FMA: the 6x16 matmul microkernel may be used.
    pub avx2_fma: bool,
    /// f32 lanes of the vectors the code generator emits for loops (Cranelift's
    /// x86-64 backend has 128-bit vectors: 4).
    pub vector_lanes: u32,
    /// Data cache sizes in bytes, per core for L1 and L2.
    pub l1d_bytes: usize,
    pub l2_bytes: usize,
    pub l3_bytes: usize,
    /// Threads a run may use (1: everything runs on the caller's thread).
    pub threads: usize,
}

impl Target {
    /// A conservative x86-64 target: SSE vectors, no AVX2, common cache sizes, one
    /// thread.
    pub fn baseline() -> Target {
        Target {
            avx512f: false,
            avx2_fma: false,
            vector_lanes: 4,
            l1d_bytes: 32 << 10,
            l2_bytes: 512 << 10,
            l3_bytes: 8 << 20,
            threads: 1,
        }
    }

    /// The same target with `threads` threads (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Target {
        self.threads = threads.max(1);
        self
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} f32x{} l1d={}K l2={}K l3={}K threads={}",
            if self.avx512f {
                "avx512f"
            } else if self.avx2_fma {
                "avx2+fma"
            } else {
                "sse"
            },
            self.vector_lanes,
            self.l1d_bytes >> 10,
            self.l2_bytes >> 10,
            self.l3_bytes >> 10,
            self.threads
        )
    }
}
