//! Initial vCPU state for entering Linux.
//!
//! - PVH: 32-bit protected mode with paging off, flat 4 GiB code and data segments,
//!   `%ebx` = address of `hvm_start_info` (PVH boot ABI).
//! - bzImage: 64-bit long mode on identity-mapped page tables (first 4 GiB, 2 MiB
//!   pages), `%rsi` = zero page (Linux x86 boot protocol, 64-bit entry).
//!
//! Every vCPU also gets an x87/SSE reset state, MSRs with sane boot values (fast
//! strings, write-back default memory type, a zero TSC), and its local APIC's LINT0 as
//! ExtINT and LINT1 as NMI. Only the boot vCPU runs at once; the others wait in KVM for
//! the INIT/SIPI the kernel sends them (`KVM_MP_STATE_UNINITIALIZED`).

use kvm_bindings::{
    kvm_fpu, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_segment, Msrs, KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;

/// Errors setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A register ioctl failed.
    #[error("{op} failed on vCPU {vcpu}")]
    Kvm {
        /// Which ioctl.
        op: &'static str,
        /// vCPU index.
        vcpu: u32,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM accepted fewer MSRs than given.
    #[error("KVM_SET_MSRS took {set} of {total} boot MSRs on vCPU {vcpu}")]
    Msrs {
        /// vCPU index.
        vcpu: u32,
        /// How many were set.
        set: usize,
        /// How many were given.
        total: usize,
    },
    /// Writing the GDT or page tables failed.
    #[error("writing boot {what} into guest memory")]
    Memory {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Which entry protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// PVH, 32-bit entry at this address.
    Pvh {
        /// Entry point.
        entry: u64,
    },
    /// bzImage, 64-bit entry at this address.
    Linux64 {
        /// Entry point.
        entry: u64,
    },
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_TYPE_WRBACK: u64 = 6;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// A GDT descriptor from its flags (access byte in bits 0-7, flags nibble in 12-15),
/// base and limit.
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    (u64::from(base & 0xff00_0000) << 32)
        | (u64::from(flags & 0xf0ff) << 40)
        | (u64::from(limit & 0x000f_0000) << 32)
        | (u64::from(base & 0x00ff_ffff) << 16)
        | u64::from(limit & 0xffff)
}

/// The KVM segment a GDT descriptor at `index` loads.
fn segment(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

fn mem_err(what: &'static str) -> impl FnOnce(vm_memory::GuestMemoryError) -> RegsError {
    move |source| RegsError::Memory { what, source }
}

fn kvm_err(op: &'static str, vcpu: u32) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { op, vcpu, source }
}

/// The boot GDT for `mode`: null, code, data, TSS.
fn gdt(mode: BootMode) -> [u64; 4] {
    match mode {
        BootMode::Pvh { .. } => [
            0,
            gdt_entry(0xc09b, 0, 0xf_ffff), // 32-bit code, 4 GiB
            gdt_entry(0xc093, 0, 0xf_ffff), // data, 4 GiB
            gdt_entry(0x008b, 0, 0x67),     // busy 32-bit TSS
        ],
        BootMode::Linux64 { .. } => [
            0,
            gdt_entry(0xa09b, 0, 0xf_ffff), // 64-bit code
            gdt_entry(0xc093, 0, 0xf_ffff), // data
            gdt_entry(0x808b, 0, 0xf_ffff), // busy TSS
        ],
    }
}

/// Write the boot GDT, an empty IDT and (for a bzImage) the identity page tables.
pub fn write_tables(mem: &GuestMemoryMmap, mode: BootMode) -> Result<(), RegsError> {
    for (i, e) in gdt(mode).iter().enumerate() {
        mem.write_obj(*e, GuestAddress(layout::GDT_ADDR + 8 * i as u64))
            .map_err(mem_err("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::IDT_ADDR))
        .map_err(mem_err("IDT"))?;
    if let BootMode::Linux64 { .. } = mode {
        const PRESENT_RW: u64 = 0x3;
        const HUGE: u64 = 0x80;
        mem.write_obj(
            layout::PDPT_ADDR | PRESENT_RW,
            GuestAddress(layout::PML4_ADDR),
        )
        .map_err(mem_err("page tables"))?;
        for gib in 0..layout::IDENTITY_MAPPED_GIB {
            let pd = layout::PD_ADDR + gib * 0x1000;
            mem.write_obj(pd | PRESENT_RW, GuestAddress(layout::PDPT_ADDR + gib * 8))
                .map_err(mem_err("page tables"))?;
            for i in 0..512u64 {
                let addr = (gib << 30) | (i << 21);
                mem.write_obj(addr | PRESENT_RW | HUGE, GuestAddress(pd + i * 8))
                    .map_err(mem_err("page tables"))?;
            }
        }
    }
    Ok(())
}

/// Put the boot vCPU at the kernel's entry point.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, index: u32, mode: BootMode) -> Result<(), RegsError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS", index))?;
    let table = gdt(mode);
    let (code, data, tss) = (
        segment(table[1], 1),
        segment(table[2], 2),
        segment(table[3], 3),
    );
    sregs.gdt.base = layout::GDT_ADDR;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = layout::IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        BootMode::Pvh { entry } => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = layout::PVH_INFO_ADDR;
        }
        BootMode::Linux64 { entry } => {
            sregs.cr3 = layout::PML4_ADDR;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_PG | CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsp = layout::BOOT_STACK;
            regs.rbp = layout::BOOT_STACK;
            regs.rsi = layout::ZERO_PAGE_ADDR;
        }
    }
    vcpu.set_sregs(&sregs)
        .map_err(kvm_err("KVM_SET_SREGS", index))?;
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS", index))
}

/// FPU, MSRs, local APIC LINT pins and MP state of vCPU `index` (all vCPUs).
pub fn setup_common(vcpu: &VcpuFd, index: u32) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU", index))?;

    let entries: Vec<kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRBACK),
    ]
    .iter()
    .map(|&(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    let total = entries.len();
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::Msrs {
        vcpu: index,
        set: 0,
        total,
    })?;
    let set = vcpu
        .set_msrs(&msrs)
        .map_err(kvm_err("KVM_SET_MSRS", index))?;
    if set != total {
        return Err(RegsError::Msrs {
            vcpu: index,
            set,
            total,
        });
    }

    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC", index))?;
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let v = u32::from_le_bytes(bytes);
        // Delivery mode is bits 8-10.
        let v = (v & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic)
        .map_err(kvm_err("KVM_SET_LAPIC", index))?;

    let mp_state = kvm_mp_state {
        mp_state: if index == 0 {
            KVM_MP_STATE_RUNNABLE
        } else {
            KVM_MP_STATE_UNINITIALIZED
        },
    };
    vcpu.set_mp_state(mp_state)
        .map_err(kvm_err("KVM_SET_MP_STATE", index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_the_segments_intended() {
        let code = segment(gdt(BootMode::Pvh { entry: 0 })[1], 1);
        assert_eq!((code.base, code.limit, code.selector), (0, 0xffff_ffff, 8));
        assert_eq!(
            (code.type_, code.present, code.s, code.db, code.l, code.g),
            (0xb, 1, 1, 1, 0, 1)
        );
        let tss = segment(gdt(BootMode::Pvh { entry: 0 })[3], 3);
        assert_eq!((tss.limit, tss.type_, tss.s, tss.g), (0x67, 0xb, 0, 0));
        let code64 = segment(gdt(BootMode::Linux64 { entry: 0 })[1], 1);
        assert_eq!((code64.l, code64.db, code64.type_), (1, 0, 0xb));
        let data = segment(gdt(BootMode::Linux64 { entry: 0 })[2], 2);
        assert_eq!((data.type_, data.db, data.selector), (3, 1, 16));
        // Base and limit bits are split across the descriptor and must round-trip.
        let odd = segment(gdt_entry(0x0093, 0x1234_5678, 0x9_abcd), 5);
        assert_eq!((odd.base, odd.limit, odd.g), (0x1234_5678, 0x9_abcd, 0));
    }

    #[test]
    fn identity_tables_map_the_first_gibs() {
        use crate::memory::{create_guest_memory, RegionSpec};
        let mem = create_guest_memory(&[RegionSpec::new(0, 1 << 20)]).unwrap();
        write_tables(&mem, BootMode::Linux64 { entry: 0 }).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(layout::PML4_ADDR)).unwrap();
        assert_eq!(pml4, layout::PDPT_ADDR | 3);
        let pdpt3: u64 = mem.read_obj(GuestAddress(layout::PDPT_ADDR + 24)).unwrap();
        assert_eq!(pdpt3, layout::PD_ADDR + 0x3000 + 3);
        let pde: u64 = mem
            .read_obj(GuestAddress(layout::PD_ADDR + 0x1000 + 5 * 8))
            .unwrap();
        assert_eq!(pde, (1 << 30) + (5 << 21) + 0x83);
        const { assert!(layout::PD_ADDR + layout::IDENTITY_MAPPED_GIB * 0x1000 <= layout::CMDLINE_ADDR) };
    }
}
