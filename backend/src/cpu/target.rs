//! The host as a [`Target`]: AVX2/FMA and AVX-512F from the CPU's feature flags, data
//! cache sizes from `cpuid`'s cache descriptors (leaf 4 on Intel, 0x8000_001D on
//! AMD), and the code generator's vector width (Cranelift's x86-64 backend: 128-bit, 4 f32 lanes).
//! Anything that cannot be read keeps [`Target::baseline`]'s value.

use kiln_ir::Target;

/// The machine this process runs on, scheduled for `threads` threads.
pub fn host_target(threads: usize) -> Target {
    let mut target = Target::baseline().with_threads(threads);
    #[cfg(target_arch = "x86_64")]
    {
        target.avx2_fma =
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        target.avx512f = std::is_x86_feature_detected!("avx512f");
        for cache in x86::data_caches() {
            match cache.level {
                1 => target.l1d_bytes = cache.bytes,
                2 => target.l2_bytes = cache.bytes,
                3 => target.l3_bytes = cache.bytes,
                _ => {}
            }
        }
    }
    target
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__cpuid_count, CpuidResult};

    /// A data or unified cache level.
    pub struct Cache {
        pub level: u32,
        pub bytes: usize,
    }

    fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
        // `cpuid` exists on every x86-64 processor; it only reads identification
        // registers.
        __cpuid_count(leaf, subleaf)
    }

    /// The data and unified caches that the deterministic cache-parameter leaf
    /// describes, or none if the processor lacks the leaf.
    pub fn data_caches() -> Vec<Cache> {
        let vendor = cpuid(0, 0);
        let amd = vendor.ebx == u32::from_le_bytes(*b"Auth");
        let (leaf, max) = if amd {
            (0x8000_001D, cpuid(0x8000_0000, 0).eax)
        } else {
            (4, vendor.eax)
        };
        if max < leaf {
            return Vec::new();
        }
        let mut caches = Vec::new();
        // At most a handful of levels exist; the bound guards against a bad leaf.
        for subleaf in 0..16 {
            let r = cpuid(leaf, subleaf);
            let kind = r.eax & 0x1f;
            if kind == 0 {
                break;
            }
            // 1: data, 3: unified; 2 (instruction) is not ours.
            if kind == 1 || kind == 3 {
                let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
                let partitions = ((r.ebx >> 12) & 0x3ff) as usize + 1;
                let line = (r.ebx & 0xfff) as usize + 1;
                let sets = r.ecx as usize + 1;
                caches.push(Cache {
                    level: (r.eax >> 5) & 0x7,
                    bytes: ways * partitions * line * sets,
                });
            }
        }
        caches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_has_plausible_caches_and_keeps_the_thread_count() {
        let target = host_target(3);
        assert_eq!(target.threads, 3);
        assert_eq!(target.vector_lanes, 4);
        assert!((4 << 10..=4 << 20).contains(&target.l1d_bytes), "{target}");
        assert!(target.l2_bytes >= target.l1d_bytes, "{target}");
        assert!(target.l3_bytes >= 1 << 10, "{target}");
        assert_eq!(host_target(0).threads, 1);
    }
}
