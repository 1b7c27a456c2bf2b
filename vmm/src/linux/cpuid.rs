//! Per-vCPU CPUID: KVM's supported set with the fix-ups a guest OS needs to see a
//! consistent machine of `n` single-threaded cores in one package.
//!
//! - leaf 1: initial APIC ID = vCPU index, logical processor count, CLFLUSH line size,
//!   the hypervisor bit, TSC-deadline timer when KVM emulates it, HTT when n > 1;
//! - leaves 0xB and 0x1F (x2APIC topology): SMT level of 1 thread, core level of n,
//!   x2APIC ID = vCPU index;
//! - leaf 4 (Intel caches): cores per package; leaf 0x8000_0008 ECX (AMD): core count;
//!   leaf 0x8000_001E (AMD): extended APIC ID and core ID.
//!
//! [`hide_xsave`] takes XSAVE and the features that need it away, for hosts
//! whose (emulated) SVM lets a guest's `XSETBV` through without an exit.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// What the fix-ups depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// This vCPU's index (= APIC ID).
    pub index: u32,
    /// Number of vCPUs.
    pub count: u32,
    /// KVM can emulate the TSC-deadline timer (`KVM_CAP_TSC_DEADLINE_TIMER`).
    pub tsc_deadline: bool,
}

const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;
const CLFLUSH_LINE_8_BYTES: u32 = 8; // 64-byte lines

/// Bits needed to number `n` items.
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

fn is_amd(entries: &[kvm_cpuid_entry2]) -> bool {
    let vendors = [u32::from_le_bytes(*b"Auth"), u32::from_le_bytes(*b"Hygo")];
    entries
        .iter()
        .any(|e| e.function == 0 && vendors.contains(&e.ebx))
}

/// Apply the fix-ups for `topo` to `entries` (one vCPU's copy of the supported CPUID).
pub fn fixup_entries(entries: &mut [kvm_cpuid_entry2], topo: Topology) {
    let n = topo.count.max(1);
    let amd = is_amd(entries);
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0xff)
                    | (CLFLUSH_LINE_8_BYTES << 8)
                    | (n.min(255) << 16)
                    | ((topo.index & 0xff) << 24);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if topo.tsc_deadline {
                    e.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                if n > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            4 => {
                let level = (e.eax >> 5) & 7;
                if e.eax & 0x1f != 0 {
                    let sharing = if level >= 3 { n - 1 } else { 0 };
                    e.eax =
                        (e.eax & 0x3ff) | ((sharing.min(0xfff)) << 14) | (((n - 1).min(63)) << 26);
                }
            }
            0xb | 0x1f => {
                e.edx = topo.index;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (1 << 8) | e.index;
                    }
                    1 => {
                        e.eax = id_bits(n);
                        e.ebx = n;
                        e.ecx = (2 << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index & 0xff;
                    }
                }
            }
            0x8000_0008 if amd => {
                e.ecx = (e.ecx & !0xf0ff) | (id_bits(n) << 12) | ((n - 1) & 0xff);
            }
            0x8000_001e if amd => {
                e.eax = topo.index;
                e.ebx = topo.index & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

// CPUID.1:ECX
const LEAF1_ECX_FMA: u32 = 1 << 12;
const LEAF1_ECX_XSAVE: u32 = 1 << 26;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF1_ECX_AVX: u32 = 1 << 28;
const LEAF1_ECX_F16C: u32 = 1 << 29;
// CPUID.7.0:EBX: AVX2 (5) and the AVX-512 family (16, 17, 21, 26, 27, 28, 30, 31).
const LEAF7_EBX_XSTATE: u32 =
    1 << 5 | 1 << 16 | 1 << 17 | 1 << 21 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 30 | 1 << 31;
// CPUID.7.0:ECX: AVX512_VBMI (1), PKU (3), OSPKE (4), AVX512_VBMI2 (6), VAES (9),
// VPCLMULQDQ (10), AVX512_VNNI (11), AVX512_BITALG (12), AVX512_VPOPCNTDQ (14).
const LEAF7_ECX_XSTATE: u32 =
    1 << 1 | 1 << 3 | 1 << 4 | 1 << 6 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 14;
// CPUID.7.0:EDX: AVX512_4VNNIW (2), AVX512_4FMAPS (3), AVX512_VP2INTERSECT (8),
// AMX_BF16 (22), AVX512_FP16 (23), AMX_TILE (24), AMX_INT8 (25).
const LEAF7_EDX_XSTATE: u32 = 1 << 2 | 1 << 3 | 1 << 8 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25;
// CPUID.7.1:EAX: AVX_VNNI (4), AVX512_BF16 (5).
const LEAF7_1_EAX_XSTATE: u32 = 1 << 4 | 1 << 5;
// CPUID.0x8000_0001:ECX (AMD): XOP (11), FMA4 (16).
const EXT1_ECX_XSTATE: u32 = 1 << 11 | 1 << 16;

/// Takes XSAVE away from `entries`: CPUID.1 XSAVE/OSXSAVE, every feature whose
/// state lives only in the XSAVE area (AVX and its kin, AVX-512, AMX, PKU),
/// and leaf 0xD. The guest then never runs `XSETBV` and keeps its SSE state
/// with `FXSAVE`.
///
/// For L1 hypervisors emulated by QEMU TCG (the nested sandbox): QEMU 7.2's
/// SVM does not intercept `XSETBV`, so the guest's write reaches the emulated
/// XCR0 behind L1's KVM, which then answers CPUID 0xD for the wrong XCR0 (the
/// guest warns "XSAVE consistency problem" at boot and disables XSAVE) and
/// switches XCR0 around guest entries from a value the guest never set.
pub fn hide_xsave(entries: &mut [kvm_cpuid_entry2]) {
    for e in entries.iter_mut() {
        match (e.function, e.index) {
            (1, _) => {
                e.ecx &= !(LEAF1_ECX_FMA
                    | LEAF1_ECX_XSAVE
                    | LEAF1_ECX_OSXSAVE
                    | LEAF1_ECX_AVX
                    | LEAF1_ECX_F16C);
            }
            (7, 0) => {
                e.ebx &= !LEAF7_EBX_XSTATE;
                e.ecx &= !LEAF7_ECX_XSTATE;
                e.edx &= !LEAF7_EDX_XSTATE;
            }
            (7, 1) => e.eax &= !LEAF7_1_EAX_XSTATE,
            (0xd, _) => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            (0x8000_0001, _) => e.ecx &= !EXT1_ECX_XSTATE,
            _ => {}
        }
    }
}

/// A copy of `supported` with the fix-ups for `topo`.
pub fn for_vcpu(supported: &CpuId, topo: Topology) -> CpuId {
    let mut c = supported.clone();
    fixup_entries(c.as_mut_slice(), topo);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn amd_set() -> Vec<kvm_cpuid_entry2> {
        let mut v0 = entry(0, 0);
        v0.ebx = u32::from_le_bytes(*b"Auth");
        let mut l1 = entry(1, 0);
        l1.ebx = 0xffff_ff42;
        l1.edx = LEAF1_EDX_HTT;
        let mut l4 = entry(4, 0);
        l4.eax = (3 << 5) | 3; // L3 unified
        vec![
            v0,
            l1,
            l4,
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_0008, 0),
            entry(0x8000_001e, 0),
        ]
    }

    #[test]
    fn hiding_xsave_leaves_sse_and_takes_avx_pku_and_leaf_0xd() {
        let mut l1 = entry(1, 0);
        let sse3_ssse3_sse41_sse42 = 1 | 1 << 9 | 1 << 19 | 1 << 20;
        l1.ecx = u32::MAX;
        l1.edx = u32::MAX;
        let mut l7 = entry(7, 0);
        l7.ebx = u32::MAX;
        l7.ecx = u32::MAX;
        let mut ld0 = entry(0xd, 0);
        ld0.eax = 0x207;
        ld0.ebx = 0x240;
        ld0.ecx = 0xa88;
        let mut ld9 = entry(0xd, 9);
        ld9.eax = 8;
        ld9.ebx = 0xa80;
        let mut v = vec![l1, l7, ld0, ld9];
        hide_xsave(&mut v);
        assert_eq!(
            v[0].ecx & (LEAF1_ECX_XSAVE | LEAF1_ECX_OSXSAVE | LEAF1_ECX_AVX),
            0
        );
        assert_eq!(v[0].ecx & sse3_ssse3_sse41_sse42, sse3_ssse3_sse41_sse42);
        assert_eq!(v[0].edx, u32::MAX, "FXSR, SSE and SSE2 stay");
        assert_eq!(v[1].ebx & (1 << 5), 0, "AVX2");
        assert_eq!(v[1].ecx & (1 << 3), 0, "PKU");
        assert_eq!(v[1].ebx & 1, 1, "FSGSBASE stays");
        for d in &v[2..] {
            assert_eq!((d.eax, d.ebx, d.ecx, d.edx), (0, 0, 0, 0));
        }
    }

    #[test]
    fn each_vcpu_sees_its_apic_id_and_the_cpu_count() {
        for (index, count) in [(0, 1), (1, 2), (3, 4), (4, 5)] {
            let mut v = amd_set();
            fixup_entries(
                &mut v,
                Topology {
                    index,
                    count,
                    tsc_deadline: true,
                },
            );
            let l1 = v[1];
            assert_eq!(l1.ebx >> 24, index);
            assert_eq!((l1.ebx >> 16) & 0xff, count);
            assert_eq!((l1.ebx >> 8) & 0xff, 8);
            assert_eq!(l1.ebx & 0xff, 0x42, "brand index kept");
            assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
            assert_ne!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
            assert_eq!(l1.edx & LEAF1_EDX_HTT != 0, count > 1);
            assert_eq!((v[2].eax >> 26) + 1, count);
            assert_eq!(((v[2].eax >> 14) & 0xfff) + 1, count, "L3 shared by all");
            let (smt, core, none) = (v[3], v[4], v[5]);
            assert_eq!((smt.ebx, smt.ecx >> 8, smt.edx), (1, 1, index));
            assert_eq!((core.ebx, core.ecx >> 8, core.edx), (count, 2, index));
            assert!(1 << core.eax >= count);
            assert_eq!((none.ebx, none.ecx >> 8), (0, 0));
            assert_eq!((v[6].ecx & 0xff) + 1, count);
            assert!(1 << ((v[6].ecx >> 12) & 0xf) >= count);
            assert_eq!(v[7].eax, index);
        }
    }

    #[test]
    fn amd_leaves_are_left_alone_on_intel_and_bits_are_counted() {
        let mut v = amd_set();
        v[0].ebx = u32::from_le_bytes(*b"Genu");
        v[6].ecx = 0x1234;
        fixup_entries(
            &mut v,
            Topology {
                index: 1,
                count: 2,
                tsc_deadline: false,
            },
        );
        assert_eq!(v[6].ecx, 0x1234);
        assert_eq!(v[1].ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(id_bits), [0, 1, 2, 2, 3, 3, 4]);
    }
}
