//! What the kernel reads at its entry point: the PVH `hvm_start_info` (with its memory
//! map and module list) or the bzImage zero page (`boot_params` with its e820 table).
//! Both carry the command line, the initramfs and the RSDP address.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{self, E820Entry};

/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// `boot_params.hdr.boot_flag`.
const BOOT_FLAG: u16 = 0xaa55;
/// `boot_params.hdr.header` ("HdrS").
const HDRS: u32 = 0x5372_6448;
/// `type_of_loader`: undefined loader.
const LOADER_UNDEFINED: u8 = 0xff;
/// `loadflags`: the kernel is loaded high; the heap pointer is valid.
const LOADED_HIGH: u8 = 1;
const CAN_USE_HEAP: u8 = 0x80;

/// Errors writing boot information.
#[derive(Debug, thiserror::Error)]
pub enum BootInfoError {
    /// The memory map has more entries than the structure holds.
    #[error("{0} memory map entries do not fit the boot structure")]
    TooManyEntries(usize),
    /// Writing guest memory failed.
    #[error("writing the {what} into guest memory")]
    Memory {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

fn mem_err(what: &'static str) -> impl FnOnce(vm_memory::GuestMemoryError) -> BootInfoError {
    move |source| BootInfoError::Memory { what, source }
}

/// Write the PVH start info, memory map and module list.
pub fn write_pvh(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    initrd: Option<(u64, u64)>,
    rsdp_addr: u64,
) -> Result<(), BootInfoError> {
    if e820.len() > layout::PVH_MEMMAP_MAX {
        return Err(BootInfoError::TooManyEntries(e820.len()));
    }
    for (i, e) in e820.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        let at =
            layout::PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(entry, GuestAddress(at))
            .map_err(mem_err("PVH memory map"))?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: layout::CMDLINE_ADDR,
        rsdp_paddr: rsdp_addr,
        memmap_paddr: layout::PVH_MEMMAP_ADDR,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    if let Some((addr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(layout::PVH_MODLIST_ADDR))
            .map_err(mem_err("PVH module list"))?;
        info.nr_modules = 1;
        info.modlist_paddr = layout::PVH_MODLIST_ADDR;
    }
    mem.write_obj(info, GuestAddress(layout::PVH_INFO_ADDR))
        .map_err(mem_err("PVH start info"))
}

/// Write the bzImage zero page from the kernel's setup header.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    header: setup_header,
    e820: &[E820Entry],
    initrd: Option<(u64, u64)>,
    cmdline_len: usize,
    rsdp_addr: u64,
) -> Result<(), BootInfoError> {
    let mut params = boot_params {
        hdr: header,
        acpi_rsdp_addr: rsdp_addr,
        ..Default::default()
    };
    if e820.len() > params.e820_table.len() {
        return Err(BootInfoError::TooManyEntries(e820.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.header = HDRS;
    params.hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;
    params.hdr.cmd_line_ptr = layout::CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32 + 1;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    mem.write_obj(params, GuestAddress(layout::ZERO_PAGE_ADDR))
        .map_err(mem_err("zero page"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_guest_memory, RegionSpec};

    #[test]
    fn pvh_start_info_points_at_everything() {
        let mem = create_guest_memory(&[RegionSpec::new(0, 64 << 20)]).unwrap();
        let e820 = layout::e820_map(64 << 20);
        write_pvh(&mem, &e820, Some((0x300_0000, 0x1234)), layout::ACPI_ADDR).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(
            (info.version, info.nr_modules, info.memmap_entries),
            (1, 1, 3)
        );
        assert_eq!(info.rsdp_paddr, layout::ACPI_ADDR);
        assert_eq!(info.cmdline_paddr, layout::CMDLINE_ADDR);
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((m.paddr, m.size), (0x300_0000, 0x1234));
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(info.memmap_paddr + 2 * 24))
            .unwrap();
        assert_eq!(
            (last.addr, last.size, last.type_),
            (0x10_0000, (64 << 20) - 0x10_0000, 1)
        );
        // The start info and module list end before the memory map.
        const {
            assert!(
                layout::PVH_INFO_ADDR + std::mem::size_of::<hvm_start_info>() as u64
                    <= layout::PVH_MODLIST_ADDR
            );
            assert!(
                layout::PVH_MODLIST_ADDR + std::mem::size_of::<hvm_modlist_entry>() as u64
                    <= layout::PVH_MEMMAP_ADDR
            );
        }
    }

    #[test]
    fn zero_page_has_the_e820_map_and_the_initramfs() {
        let mem = create_guest_memory(&[RegionSpec::new(0, 64 << 20)]).unwrap();
        let e820 = layout::e820_map(64 << 20);
        let hdr = setup_header {
            version: 0x020f,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        write_zero_page(
            &mem,
            hdr,
            &e820,
            Some((0x200_0000, 99)),
            19,
            layout::ACPI_ADDR,
        )
        .unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_ADDR)).unwrap();
        assert_eq!(p.e820_entries, 3);
        let (ty, addr) = (p.e820_table[1].r#type, p.e820_table[1].addr);
        assert_eq!((ty, addr), (2, layout::LOW_RAM_END));
        let hdr = p.hdr;
        assert_eq!((hdr.ramdisk_image, hdr.ramdisk_size), (0x200_0000, 99));
        assert_eq!(
            (hdr.cmd_line_ptr, hdr.cmdline_size),
            (layout::CMDLINE_ADDR as u32, 20)
        );
        assert_eq!(
            (hdr.boot_flag, hdr.header, hdr.type_of_loader),
            (BOOT_FLAG, HDRS, 0xff)
        );
        let rsdp = p.acpi_rsdp_addr;
        assert_eq!(rsdp, layout::ACPI_ADDR);
    }
}
