//! The guest-physical memory map of a Linux guest: where RAM, boot structures, ACPI
//! tables and devices live, and the e820 map the kernel is given.
//!
//! ```text
//! 0x0000_0000  RAM (e820 usable) ......... 0x0009_fc00
//!   0x500  GDT, 0x520 IDT, 0x6000 PVH start info (+0x40 module list),
//!   0x7000 PVH memory map or bzImage zero page, 0x8ff0 boot stack,
//!   0x9000.. bzImage identity page tables, 0x20000 command line
//! 0x0009_fc00  reserved (EBDA, VGA hole, BIOS) .. 0x0010_0000
//!   0xe_0000 ACPI tables (RSDP first), 0xf_fff0 reset vector (a stub that writes the
//!   ACPI reset register)
//! 0x0010_0000  RAM: kernel, initramfs (top of low RAM) ... min(mem, 3 GiB)
//! 0xc000_0000  32-bit MMIO hole: virtio-mmio slots at 0xd000_0000, IOAPIC 0xfec0_0000,
//!              local APIC 0xfee0_0000, KVM's TSS pages at 0xfffb_d000
//! 0x1_0000_0000 RAM above 4 GiB (what did not fit below the hole)
//! ```
//!
//! RAM is at most two vm-memory regions (below and above the hole), each its own
//! anonymous mapping, so a swapper can register them like any other guest memory.

use crate::memory::{RegionSpec, PAGE_SIZE};

/// End of the conventional RAM below 1 MiB (the EBDA starts here).
pub const LOW_RAM_END: u64 = 0x9_fc00;
/// Start of RAM above the legacy BIOS area.
pub const HIMEM_START: u64 = 0x10_0000;
/// Boot GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Boot IDT (empty).
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH module list (the initramfs).
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH memory map (`hvm_memmap_table_entry` array).
pub const PVH_MEMMAP_ADDR: u64 = 0x7000;
/// Most PVH memory map entries that fit before the boot stack.
pub const PVH_MEMMAP_MAX: usize = 0x1e00 / 24;
/// bzImage zero page (`boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer for the 64-bit bzImage entry.
pub const BOOT_STACK: u64 = 0x8ff0;
/// bzImage boot page tables: PML4, PDPT, then one page directory per GiB mapped.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First page directory.
pub const PD_ADDR: u64 = 0xb000;
/// GiB identity-mapped for the bzImage entry (4 page directories).
pub const IDENTITY_MAPPED_GIB: u64 = 4;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line, with its NUL (x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX: usize = 2048;
/// ACPI tables, RSDP first (inside the BIOS area Linux also scans).
pub const ACPI_ADDR: u64 = 0xe_0000;
/// End of the ACPI table area.
pub const ACPI_END: u64 = 0xf_0000;
/// Start of the 32-bit MMIO hole.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// First address above 4 GiB.
pub const FOUR_GIB: u64 = 1 << 32;
/// First virtio-mmio slot.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of each virtio-mmio slot.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC registers.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const APIC_ADDR: u64 = 0xfee0_0000;
/// GSI of the first virtio-mmio device (0-4 are the ISA timer, keyboard, cascade,
/// COM2 and COM1).
pub const VIRTIO_GSI_BASE: u32 = 5;
/// Last GSI of KVM's IOAPIC (24 pins).
pub const GSI_MAX: u32 = 23;
/// Most virtio-mmio devices (one GSI each).
pub const VIRTIO_MAX_DEVICES: u32 = GSI_MAX - VIRTIO_GSI_BASE + 1;
/// Smallest guest RAM accepted: the kernel, its initramfs and early allocations.
pub const MIN_MEM: u64 = 64 << 20;

/// e820 entry types.
pub const E820_RAM: u32 = 1;
/// Reserved.
pub const E820_RESERVED: u32 = 2;

/// One e820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Guest RAM placement for `mem` bytes: below the MMIO hole, and the rest above 4 GiB.
/// `mem` must be a multiple of the page size.
pub fn ram_regions(mem: u64) -> Vec<RegionSpec> {
    let low = mem.min(MMIO_HOLE_START);
    let mut v = vec![RegionSpec::new(0, low)];
    if mem > low {
        v.push(RegionSpec::new(FOUR_GIB, mem - low));
    }
    v
}

/// End of RAM below the MMIO hole.
pub fn low_ram_end(mem: u64) -> u64 {
    mem.min(MMIO_HOLE_START)
}

/// The e820 map for `mem` bytes of RAM laid out by [`ram_regions`].
pub fn e820_map(mem: u64) -> Vec<E820Entry> {
    let low = low_ram_end(mem);
    let mut v = vec![
        E820Entry {
            addr: 0,
            size: LOW_RAM_END,
            kind: E820_RAM,
        },
        E820Entry {
            addr: LOW_RAM_END,
            size: HIMEM_START - LOW_RAM_END,
            kind: E820_RESERVED,
        },
    ];
    if low > HIMEM_START {
        v.push(E820Entry {
            addr: HIMEM_START,
            size: low - HIMEM_START,
            kind: E820_RAM,
        });
    }
    if mem > low {
        v.push(E820Entry {
            addr: FOUR_GIB,
            size: mem - low,
            kind: E820_RAM,
        });
    }
    v
}

/// Guest address of virtio-mmio slot `index`.
pub fn virtio_slot(index: u32) -> (u64, u32) {
    (
        VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_SIZE,
        VIRTIO_GSI_BASE + index,
    )
}

/// Where to put an initramfs of `size` bytes: the highest page-aligned address that
/// keeps it below `limit` (exclusive) and above `floor`; `None` if it does not fit.
pub fn initrd_addr(size: u64, floor: u64, limit: u64) -> Option<u64> {
    let start = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    (start >= floor).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region_with_a_bios_hole_in_e820() {
        let mem = 512 << 20;
        assert_eq!(ram_regions(mem), vec![RegionSpec::new(0, mem)]);
        let e = e820_map(mem);
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].addr, e[0].size, e[0].kind),
            (0, LOW_RAM_END, E820_RAM)
        );
        assert_eq!(e[1].kind, E820_RESERVED);
        assert_eq!(e[1].addr + e[1].size, HIMEM_START);
        assert_eq!(e[2].addr + e[2].size, mem);
        assert!(ACPI_ADDR >= e[1].addr && ACPI_END <= HIMEM_START);
        let usable: u64 = e
            .iter()
            .filter(|x| x.kind == E820_RAM)
            .map(|x| x.size)
            .sum();
        assert_eq!(usable, mem - (HIMEM_START - LOW_RAM_END));
    }

    #[test]
    fn big_guest_is_split_around_the_mmio_hole() {
        let mem = 5u64 << 30;
        let r = ram_regions(mem);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].size, MMIO_HOLE_START);
        assert_eq!(r[1].guest_addr, FOUR_GIB);
        assert_eq!(r[0].size + r[1].size, mem);
        let e = e820_map(mem);
        assert_eq!(e.last().unwrap().addr, FOUR_GIB);
        assert_eq!(e.last().unwrap().size, mem - MMIO_HOLE_START);
        for a in [VIRTIO_MMIO_BASE, IOAPIC_ADDR, APIC_ADDR] {
            assert!((MMIO_HOLE_START..FOUR_GIB).contains(&a), "{a:#x}");
        }
        const { assert!(crate::vm::KVM_TSS_ADDRESS > APIC_ADDR) };
    }

    #[test]
    fn virtio_slots_and_initrd_placement() {
        assert_eq!(virtio_slot(0), (VIRTIO_MMIO_BASE, 5));
        assert_eq!(virtio_slot(2), (VIRTIO_MMIO_BASE + 0x2000, 7));
        let (last, gsi) = virtio_slot(VIRTIO_MAX_DEVICES - 1);
        assert_eq!(gsi, GSI_MAX);
        assert!(last + VIRTIO_MMIO_SIZE <= IOAPIC_ADDR);
        assert_eq!(initrd_addr(0x1800, 0x1000, 0x10000), Some(0xe000));
        assert_eq!(initrd_addr(0x1000, 0x1000, 0x10000), Some(0xf000));
        assert_eq!(initrd_addr(0x10000, 0x1000, 0x10000), None);
        assert_eq!(initrd_addr(0x20000, 0, 0x10000), None);
    }
}
