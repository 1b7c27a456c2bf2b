//! A flat 64-bit guest at CPL 3: no OS, no interrupts, identity-mapped memory.
//!
//! [`setup`] writes into guest memory, inside a caller-chosen *tables area*:
//! - a GDT with a 64-bit code and a data descriptor, both DPL 3, and a 64-bit TSS
//!   descriptor (`+0x000`);
//! - the TSS itself (`+0x080`, no I/O bitmap);
//! - identity-mapping page tables with 2 MiB pages, present + writable + user, with the
//!   accessed/dirty bits preset: PML4 (`+0x1000`), PDPT (`+0x2000`), then one page
//!   directory per GiB that holds a mapped range (`+0x3000`, ...);
//!
//! and loads the vCPU with long mode (CR0.PG|PE, CR4.PAE, EFER.LME|LMA), CR4.TSD clear so
//! `rdtsc` works at CPL 3, CS/SS/DS/ES/FS/GS on the DPL-3 descriptors (so CPL = 3), TR on
//! the busy TSS, RFLAGS = 2 (interrupts off, IOPL 0) and an empty IDT (base 0, limit 0).
//!
//! With an empty IDT any guest exception cannot be delivered and escalates to a triple
//! fault, which KVM reports as `KVM_EXIT_SHUTDOWN`; the vCPU loop turns that into
//! [`crate::VcpuError::TripleFault`]. Only ranges passed in [`FlatGuest::map`] are
//! mapped (rounded out to 2 MiB), so a stray access faults too. Port I/O at CPL 3 with
//! IOPL 0 and no I/O bitmap raises #GP: such a guest talks to the VMM through MMIO.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// User code selector (GDT index 1, RPL 3).
pub const USER_CS: u16 = (1 << 3) | 3;
/// User data/stack selector (GDT index 2, RPL 3).
pub const USER_DS: u16 = (2 << 3) | 3;
/// TSS selector (GDT index 3, a 16-byte system descriptor).
pub const TSS_SEL: u16 = 3 << 3;

const GDT_OFFSET: u64 = 0;
const GDT_ENTRIES: usize = 5; // null, code, data, TSS (2 slots)
const TSS_OFFSET: u64 = 0x80;
const TSS_LIMIT: u32 = 0x67;
const PML4_OFFSET: u64 = 0x1000;
const PDPT_OFFSET: u64 = 0x2000;
const PD_OFFSET: u64 = 0x3000;

const GIB: u64 = 1 << 30;
const HUGE: u64 = 2 << 20;
/// One PDPT: guest-physical addresses below this can be mapped.
pub const MAX_MAPPED_ADDR: u64 = 512 * GIB;

// Page-table entry bits.
const PTE_P: u64 = 1;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;

// Control registers.
const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Errors from building a flat guest.
#[derive(Debug, thiserror::Error)]
pub enum FlatError {
    /// The tables area cannot hold the GDT, TSS and page tables.
    #[error("the flat-guest tables area at {addr:#x} has {have:#x} bytes, needs {need:#x}")]
    TablesTooSmall {
        /// Area start.
        addr: u64,
        /// Bytes available.
        have: u64,
        /// Bytes needed.
        need: u64,
    },
    /// The tables area is not 4 KiB-aligned.
    #[error("the flat-guest tables area at {0:#x} is not 4 KiB-aligned")]
    Unaligned(u64),
    /// A range to map lies beyond what one PDPT covers.
    #[error("cannot identity-map {start:#x}+{len:#x}: flat guests map below 512 GiB")]
    TooHigh {
        /// Range start.
        start: u64,
        /// Range length.
        len: u64,
    },
    /// Writing the tables into guest memory failed.
    #[error("writing flat-guest tables into guest memory")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// A register ioctl failed.
    #[error("{op} failed")]
    Kvm {
        /// Which ioctl.
        op: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// More register arguments than the SysV argument registers.
    #[error("a flat guest takes at most 6 register arguments, got {0}")]
    TooManyArgs(usize),
}

/// How to lay out and start a flat guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatGuest {
    /// Guest-physical address of the tables area (4 KiB-aligned, inside guest RAM and
    /// inside a mapped range if the guest should be able to read it).
    pub tables_addr: u64,
    /// Bytes available there (see [`FlatGuest::tables_bytes`]).
    pub tables_size: u64,
    /// Guest-physical ranges `(start, len)` to identity-map (RAM and MMIO alike).
    pub map: Vec<(u64, u64)>,
    /// Entry point (RIP).
    pub entry: u64,
    /// Initial RSP.
    pub stack_top: u64,
    /// Initial values of RDI, RSI, RDX, RCX, R8, R9 (SysV argument order; unset ones are 0).
    pub args: Vec<u64>,
}

/// GiB slots (index into the PDPT) that `map` touches, sorted and deduplicated.
fn gib_slots(map: &[(u64, u64)]) -> Result<Vec<u64>, FlatError> {
    let mut slots = Vec::new();
    for &(start, len) in map {
        if len == 0 {
            continue;
        }
        let end = start
            .checked_add(len)
            .filter(|&e| e <= MAX_MAPPED_ADDR)
            .ok_or(FlatError::TooHigh { start, len })?;
        slots.extend(start / GIB..end.div_ceil(GIB));
    }
    slots.sort_unstable();
    slots.dedup();
    Ok(slots)
}

impl FlatGuest {
    /// Bytes the tables area needs for identity-mapping `map`.
    pub fn tables_bytes(map: &[(u64, u64)]) -> Result<u64, FlatError> {
        Ok(PD_OFFSET + 0x1000 * gib_slots(map)?.len() as u64)
    }
}

/// An 8-byte code/data segment descriptor with base 0 and a 4 GiB limit.
fn segment_descriptor(access: u8, flags: u8) -> u64 {
    let limit: u64 = 0xf_ffff;
    (limit & 0xffff) | (u64::from(access) << 40) | ((limit >> 16) << 48) | (u64::from(flags) << 52)
}

/// The two 8-byte halves of a 64-bit TSS descriptor.
fn tss_descriptor(base: u64, limit: u32) -> [u64; 2] {
    let access: u64 = 0x8b; // present, DPL 0, type 0xb (busy 64-bit TSS)
    let lo = (u64::from(limit) & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (access << 40)
        | ((u64::from(limit) >> 16 & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [lo, base >> 32]
}

fn segment(selector: u16, type_: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Write the GDT, TSS and page tables for `g` into `mem`.
pub fn write_tables(mem: &GuestMemoryMmap, g: &FlatGuest) -> Result<(), FlatError> {
    if g.tables_addr % 0x1000 != 0 {
        return Err(FlatError::Unaligned(g.tables_addr));
    }
    let need = FlatGuest::tables_bytes(&g.map)?;
    if need > g.tables_size {
        return Err(FlatError::TablesTooSmall {
            addr: g.tables_addr,
            have: g.tables_size,
            need,
        });
    }
    let base = g.tables_addr;
    // Start from zeroes: stale entries would map memory we did not ask for.
    mem.write_slice(&vec![0u8; need as usize], GuestAddress(base))?;

    let tss_addr = base + TSS_OFFSET;
    let [tss_lo, tss_hi] = tss_descriptor(tss_addr, TSS_LIMIT);
    let gdt: [u64; GDT_ENTRIES] = [
        0,
        segment_descriptor(0xfb, 0xa), // P, DPL3, S, code exec/read accessed; G, L
        segment_descriptor(0xf3, 0xc), // P, DPL3, S, data read/write accessed; G, D/B
        tss_lo,
        tss_hi,
    ];
    for (i, d) in gdt.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(base + GDT_OFFSET + 8 * i as u64))?;
    }
    // TSS: all stack pointers zero; I/O map base past the limit = no I/O bitmap.
    mem.write_obj(TSS_LIMIT as u16 + 1, GuestAddress(tss_addr + 0x66))?;

    let table_flags = PTE_P | PTE_RW | PTE_US | PTE_A;
    let pml4 = base + PML4_OFFSET;
    let pdpt = base + PDPT_OFFSET;
    mem.write_obj(pdpt | table_flags, GuestAddress(pml4))?;
    let slots = gib_slots(&g.map)?;
    for (i, slot) in slots.iter().enumerate() {
        let pd = base + PD_OFFSET + 0x1000 * i as u64;
        mem.write_obj(pd | table_flags, GuestAddress(pdpt + 8 * slot))?;
    }
    for &(start, len) in &g.map {
        if len == 0 {
            continue;
        }
        let mut page = start / HUGE * HUGE;
        while page < start + len {
            let slot = page / GIB;
            let pd_index = slots.binary_search(&slot).expect("slot was collected");
            let pd = base + PD_OFFSET + 0x1000 * pd_index as u64;
            let entry = page | PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | PTE_PS;
            mem.write_obj(entry, GuestAddress(pd + 8 * ((page % GIB) / HUGE)))?;
            page += HUGE;
        }
    }
    Ok(())
}

/// Special registers for `g` (long mode, CPL 3, TR on the TSS).
pub fn sregs(g: &FlatGuest, mut s: kvm_sregs) -> kvm_sregs {
    let code = segment(USER_CS, 0xb, true);
    let data = segment(USER_DS, 0x3, false);
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = kvm_segment {
        base: g.tables_addr + TSS_OFFSET,
        limit: TSS_LIMIT,
        selector: TSS_SEL,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    s.ldt = kvm_segment {
        selector: 0,
        type_: 0x2,
        present: 0,
        unusable: 1,
        ..Default::default()
    };
    s.gdt.base = g.tables_addr + GDT_OFFSET;
    s.gdt.limit = (8 * GDT_ENTRIES - 1) as u16;
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    s.cr3 = g.tables_addr + PML4_OFFSET;
    s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT; // TSD clear: rdtsc allowed at CPL 3
    s.efer = EFER_LME | EFER_LMA;
    s
}

/// Write the tables and load `vcpu` so that it starts at `g.entry` at CPL 3.
pub fn setup(mem: &GuestMemoryMmap, vcpu: &VcpuFd, g: &FlatGuest) -> Result<(), FlatError> {
    if g.args.len() > 6 {
        return Err(FlatError::TooManyArgs(g.args.len()));
    }
    write_tables(mem, g)?;
    let kvm = |op| move |source| FlatError::Kvm { op, source };
    let current = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&sregs(g, current))
        .map_err(kvm("KVM_SET_SREGS"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))?;
    let mut regs = kvm_regs {
        rip: g.entry,
        rsp: g.stack_top,
        rflags: 0x2,
        ..Default::default()
    };
    let slots = [
        &mut regs.rdi,
        &mut regs.rsi,
        &mut regs.rdx,
        &mut regs.rcx,
        &mut regs.r8,
        &mut regs.r9,
    ];
    for (r, v) in slots.into_iter().zip(&g.args) {
        *r = *v;
    }
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_guest_memory, RegionSpec};

    #[test]
    fn descriptors_encode_as_the_sdm_says() {
        // Classic flat 64-bit user code / data descriptors.
        assert_eq!(segment_descriptor(0xfb, 0xa), 0x00af_fb00_0000_ffff);
        assert_eq!(segment_descriptor(0xf3, 0xc), 0x00cf_f300_0000_ffff);
        let [lo, hi] = tss_descriptor(0x1234_5678_9abc_def0, 0x67);
        assert_eq!(lo, 0x9a00_8bbc_def0_0067);
        assert_eq!(hi, 0x1234_5678);
    }

    #[test]
    fn maps_only_the_requested_ranges() {
        let mem = create_guest_memory(&[RegionSpec::new(0, 2 << 20)]).unwrap();
        let g = FlatGuest {
            tables_addr: 0x1000,
            tables_size: 0x10_0000,
            map: vec![
                (0, 2 << 20),
                (0xd000_0000, 0x1000),
                (4 * GIB + (3 << 20), 4 << 20),
            ],
            entry: 0x10_0000,
            stack_top: 0x12_0000,
            args: vec![],
        };
        assert_eq!(
            FlatGuest::tables_bytes(&g.map).unwrap(),
            0x3000 + 3 * 0x1000
        );
        write_tables(&mem, &g).unwrap();
        let rd = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        let pml4 = 0x1000 + PML4_OFFSET;
        let pdpt = 0x1000 + PDPT_OFFSET;
        assert_eq!(rd(pml4) & !0xfff, pdpt);
        // GiB slots 0, 3 and 4 (4G+3M..4G+7M lies inside slot 4).
        let pd0 = rd(pdpt) & !0xfff;
        let pd3 = rd(pdpt + 8 * 3) & !0xfff;
        let pd4 = rd(pdpt + 8 * 4) & !0xfff;
        assert_eq!(rd(pdpt + 8), 0);
        assert_eq!(rd(pdpt + 8 * 5), 0);
        assert_eq!(rd(pd0), PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | PTE_PS);
        assert_eq!(rd(pd0 + 8), 0);
        assert_eq!(rd(pd3 + 8 * 128) & !0xfff, 0xd000_0000);
        // 3M..7M rounds out to the 2M pages at 2M, 4M and 6M.
        assert_eq!(rd(pd4), 0);
        for i in 1..4 {
            assert_eq!(rd(pd4 + 8 * i) & !0x1fffff, 4 * GIB + i * HUGE);
        }
        assert_eq!(rd(pd4 + 8 * 4), 0);
        let s = sregs(&g, kvm_sregs::default());
        assert_eq!(s.cs.dpl, 3);
        assert_eq!(s.ss.dpl, 3);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.cr4 & (1 << 2), 0, "CR4.TSD must be clear");
        assert_eq!(s.tr.base, 0x1000 + TSS_OFFSET);
        assert_eq!(s.cr3, pml4);
    }

    #[test]
    fn refuses_bad_areas() {
        let mem = create_guest_memory(&[RegionSpec::new(0, 1 << 20)]).unwrap();
        let mut g = FlatGuest {
            tables_addr: 0x1000,
            tables_size: 0x3000,
            map: vec![(0, 1 << 20)],
            entry: 0,
            stack_top: 0,
            args: vec![],
        };
        assert!(matches!(
            write_tables(&mem, &g),
            Err(FlatError::TablesTooSmall { need: 0x4000, .. })
        ));
        g.tables_addr = 0x1800;
        assert!(matches!(
            write_tables(&mem, &g),
            Err(FlatError::Unaligned(_))
        ));
        g.tables_addr = 0x1000;
        g.map.push((MAX_MAPPED_ADDR - 0x1000, 0x2000));
        assert!(matches!(
            FlatGuest::tables_bytes(&g.map),
            Err(FlatError::TooHigh { .. })
        ));
    }
}
