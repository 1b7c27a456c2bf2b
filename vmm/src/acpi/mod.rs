//! ACPI tables for a hardware-reduced x86 platform: RSDP → XSDT → FADT (→ DSDT) and MADT.
//!
//! - The FADT sets `HW_REDUCED_ACPI`, so the guest needs no PM timer, GPE blocks or SCI;
//!   power-off goes through the sleep control register (S5, with `_S5_` in the DSDT) and
//!   reboot through the reset register, both I/O ports the VMM implements
//!   ([`crate::devices::power`]). Its boot flags say: no VGA, no MSI, no CMOS RTC, no
//!   i8042, so the kernel probes none of them.
//! - The MADT lists one enabled local APIC per vCPU (APIC ID = vCPU index), the IOAPIC
//!   with GSI base 0, and LINT1 as NMI on every CPU.
//! - The DSDT describes COM1 (`PNP0501`, I/O 0x3f8, IRQ 4), and COM2 (I/O 0x2f8,
//!   IRQ 3) when the VM has one, so the kernel's PNP serial driver sets up their
//!   interrupts (with a hardware-reduced FADT there are no
//!   legacy ISA IRQ mappings otherwise), and one `LNRO0005` device per virtio-mmio slot with its register window
//!   and edge-triggered GSI, which is how a kernel without `VIRTIO_MMIO_CMDLINE_DEVICES`
//!   (Debian's) finds virtio-mmio devices.
//!
//! [`build`] lays everything out in one blob whose first bytes are the RSDP.

pub mod aml;

use aml::AmlError;

/// OEM ID in every table.
pub const OEM_ID: [u8; 6] = *b"SWPLAB";
/// Creator ID in every table.
const CREATOR_ID: [u8; 4] = *b"SWPL";
/// ACPI sleep type for S5 (soft off): `_S5_` and the value the VMM expects.
pub const S5_SLEEP_TYPE: u8 = 5;

/// Errors building the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The DSDT could not be encoded.
    #[error("encoding the DSDT")]
    Aml(#[from] AmlError),
    /// More vCPUs than xAPIC entries can describe.
    #[error("{0} vCPUs: the MADT describes at most 254")]
    TooManyCpus(u32),
    /// A device lies above 4 GiB (Memory32Fixed cannot describe it).
    #[error("virtio-mmio slot at {0:#x} is above 4 GiB")]
    SlotTooHigh(u64),
}

/// A virtio-mmio device as the DSDT describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioSlot {
    /// Register window.
    pub base: u64,
    /// Window size.
    pub size: u64,
    /// GSI (IOAPIC pin).
    pub gsi: u32,
}

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Number of vCPUs (APIC IDs 0..n).
    pub vcpus: u32,
    /// Local APIC base.
    pub apic_addr: u32,
    /// IOAPIC base.
    pub ioapic_addr: u32,
    /// Sleep control register (1 byte, I/O port).
    pub sleep_control_port: u16,
    /// Sleep status register (1 byte, I/O port).
    pub sleep_status_port: u16,
    /// Reset register (1 byte, I/O port).
    pub reset_port: u16,
    /// Value to write to the reset register.
    pub reset_value: u8,
    /// A 16550 UART: base port and ISA IRQ.
    pub com1: Option<(u16, u8)>,
    /// A second 16550 UART (the result channel): base port and ISA IRQ.
    pub com2: Option<(u16, u8)>,
    /// virtio-mmio devices.
    pub virtio: Vec<VirtioSlot>,
}

/// The tables, laid out for one guest address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// Guest address of the blob (and of the RSDP, its first bytes).
    pub addr: u64,
    /// The bytes to copy there.
    pub bytes: Vec<u8>,
    /// Where each table went (signature, guest address), for logs and tests.
    pub index: Vec<([u8; 4], u64)>,
}

/// Sum of bytes, for checksums (a table's bytes sum to 0 mod 256).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// A system description table: the 36-byte header, then `body`, checksummed.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = 36 + body.len();
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(signature);
    t.extend_from_slice(&(len as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(&OEM_ID);
    let mut table_id = *b"SWAPLAB ";
    table_id[4..].copy_from_slice(signature);
    t.extend_from_slice(&table_id);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(&CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = 0u8.wrapping_sub(checksum(&t));
    t
}

/// A Generic Address Structure for a 1-byte I/O port register.
fn gas_io_byte(port: u16) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O space
    g[1] = 8; // register bit width
    g[2] = 0; // bit offset
    g[3] = 1; // byte access
    g[4..].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

// FADT (revision 6) field offsets, counted from the start of the table.
const FADT_LEN: usize = 276;
const FADT_IAPC_BOOT_ARCH: usize = 109;
const FADT_FLAGS: usize = 112;
const FADT_RESET_REG: usize = 116;
const FADT_RESET_VALUE: usize = 128;
const FADT_MINOR_VERSION: usize = 131;
const FADT_X_DSDT: usize = 140;
const FADT_SLEEP_CONTROL: usize = 244;
const FADT_SLEEP_STATUS: usize = 256;
const FADT_HYPERVISOR_ID: usize = 268;

// FADT flags and IA-PC boot architecture flags.
const FADT_F_RESET_REG_SUP: u32 = 1 << 10;
const FADT_F_HW_REDUCED_ACPI: u32 = 1 << 20;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

fn fadt(p: &Platform, dsdt_addr: u64) -> Vec<u8> {
    let mut body = vec![0u8; FADT_LEN - 36];
    let mut put =
        |off: usize, bytes: &[u8]| body[off - 36..off - 36 + bytes.len()].copy_from_slice(bytes);
    let iapc = IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT;
    put(FADT_IAPC_BOOT_ARCH, &iapc.to_le_bytes());
    put(
        FADT_FLAGS,
        &(FADT_F_HW_REDUCED_ACPI | FADT_F_RESET_REG_SUP).to_le_bytes(),
    );
    put(FADT_RESET_REG, &gas_io_byte(p.reset_port));
    put(FADT_RESET_VALUE, &[p.reset_value]);
    put(FADT_MINOR_VERSION, &[5]);
    put(FADT_X_DSDT, &dsdt_addr.to_le_bytes());
    put(FADT_SLEEP_CONTROL, &gas_io_byte(p.sleep_control_port));
    put(FADT_SLEEP_STATUS, &gas_io_byte(p.sleep_status_port));
    put(FADT_HYPERVISOR_ID, b"SWAPLAB\0");
    sdt(b"FACP", 6, &body)
}

fn madt(p: &Platform) -> Result<Vec<u8>, AcpiError> {
    if p.vcpus == 0 || p.vcpus > 254 {
        return Err(AcpiError::TooManyCpus(p.vcpus));
    }
    let mut body = Vec::new();
    body.extend_from_slice(&p.apic_addr.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // flags: no dual 8259 setup
    for i in 0..p.vcpus as u8 {
        // Processor Local APIC: UID, APIC ID, flags (enabled).
        body.extend_from_slice(&[0, 8, i, i]);
        body.extend_from_slice(&1u32.to_le_bytes());
    }
    // I/O APIC: ID 0, address, GSI base 0.
    body.extend_from_slice(&[1, 12, 0, 0]);
    body.extend_from_slice(&p.ioapic_addr.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Local APIC NMI: all processors, default polarity and trigger, LINT1.
    body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    Ok(sdt(b"APIC", 5, &body))
}

fn dsdt(p: &Platform) -> Result<Vec<u8>, AcpiError> {
    let mut devices = Vec::with_capacity(p.virtio.len() + 2);
    for (uid, (name, com)) in [("COM1", p.com1), ("COM2", p.com2)].into_iter().enumerate() {
        let Some((port, irq)) = com else { continue };
        let crs = aml::resource_template(&[aml::io(port, port, 1, 8), aml::irq_no_flags(irq)])?;
        let hid = aml::eisa_id("PNP0501").ok_or_else(|| AmlError::BadName("PNP0501".into()))?;
        devices.push(aml::device(
            name,
            &[
                aml::name("_HID", &hid)?,
                aml::name("_UID", &aml::integer(uid as u64 + 1))?,
                aml::name("_CRS", &crs)?,
            ],
        )?);
    }
    for (i, slot) in p.virtio.iter().enumerate() {
        let base = u32::try_from(slot.base).map_err(|_| AcpiError::SlotTooHigh(slot.base))?;
        let size = u32::try_from(slot.size).map_err(|_| AcpiError::SlotTooHigh(slot.base))?;
        let crs = aml::resource_template(&[
            aml::memory32_fixed(true, base, size),
            aml::interrupt(aml::Trigger::EdgeHigh, slot.gsi),
        ])?;
        devices.push(aml::device(
            &format!("VR{i:02X}"),
            &[
                aml::name("_HID", &aml::string("LNRO0005"))?,
                aml::name("_UID", &aml::integer(i as u64))?,
                aml::name("_CCA", &aml::integer(1))?,
                aml::name("_CRS", &crs)?,
            ],
        )?);
    }
    let mut body = aml::scope("\\_SB_", &devices)?;
    let s5 = u64::from(S5_SLEEP_TYPE);
    body.extend(aml::name(
        "\\_S5_",
        &aml::package(&[
            aml::integer(s5),
            aml::integer(s5),
            aml::integer(0),
            aml::integer(0),
        ])?,
    )?);
    Ok(sdt(b"DSDT", 2, &body))
}

fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes
    r.extend_from_slice(&OEM_ID);
    r.push(2); // revision: ACPI 2.0+, XSDT
    r.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&xsdt_addr.to_le_bytes());
    r.push(0); // extended checksum
    r.extend_from_slice(&[0; 3]);
    r[8] = 0u8.wrapping_sub(checksum(&r[..20]));
    r[32] = 0u8.wrapping_sub(checksum(&r));
    r
}

/// Build every table for `platform`, laid out from guest address `addr` (RSDP first).
pub fn build(platform: &Platform, addr: u64) -> Result<Tables, AcpiError> {
    const RSDP_SLOT: u64 = 64;
    let align = |n: u64| n.next_multiple_of(16);
    let dsdt = dsdt(platform)?;
    let dsdt_addr = addr + RSDP_SLOT;
    let fadt = fadt(platform, dsdt_addr);
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64);
    let madt = madt(platform)?;
    let madt_addr = align(fadt_addr + fadt.len() as u64);
    let xsdt_addr = align(madt_addr + madt.len() as u64);
    let mut xsdt_body = Vec::new();
    xsdt_body.extend_from_slice(&fadt_addr.to_le_bytes());
    xsdt_body.extend_from_slice(&madt_addr.to_le_bytes());
    let xsdt = sdt(b"XSDT", 1, &xsdt_body);

    let mut bytes = Vec::new();
    let mut index = Vec::new();
    for (sig, at, table) in [
        (*b"RSDP", addr, rsdp(xsdt_addr)),
        (*b"DSDT", dsdt_addr, dsdt),
        (*b"FACP", fadt_addr, fadt),
        (*b"APIC", madt_addr, madt),
        (*b"XSDT", xsdt_addr, xsdt),
    ] {
        bytes.resize((at - addr) as usize, 0);
        bytes.extend_from_slice(&table);
        index.push((sig, at));
    }
    Ok(Tables { addr, bytes, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(vcpus: u32, devices: u32) -> Platform {
        Platform {
            vcpus,
            apic_addr: 0xfee0_0000,
            ioapic_addr: 0xfec0_0000,
            sleep_control_port: 0x600,
            sleep_status_port: 0x601,
            reset_port: 0x602,
            reset_value: 1,
            com1: Some((0x3f8, 4)),
            com2: None,
            virtio: (0..devices)
                .map(|i| VirtioSlot {
                    base: 0xd000_0000 + u64::from(i) * 0x1000,
                    size: 0x1000,
                    gsi: 5 + i,
                })
                .collect(),
        }
    }

    fn table_at(t: &Tables, addr: u64) -> &[u8] {
        let off = (addr - t.addr) as usize;
        let len = u32::from_le_bytes(t.bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        &t.bytes[off..off + len]
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn pointers_chain_and_checksums_hold() {
        let t = build(&platform(2, 3), 0xe_0000).unwrap();
        let r = &t.bytes[..36];
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(checksum(&r[..20]), 0);
        assert_eq!(checksum(r), 0);
        let xsdt = table_at(&t, u64_at(r, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(checksum(xsdt), 0);
        assert_eq!(xsdt.len(), 36 + 16);
        let fadt = table_at(&t, u64_at(xsdt, 36));
        let madt = table_at(&t, u64_at(xsdt, 44));
        assert_eq!((&fadt[..4], fadt.len(), fadt[8]), (&b"FACP"[..], 276, 6));
        assert_eq!(checksum(fadt), 0);
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & FADT_F_HW_REDUCED_ACPI, 0);
        assert_eq!(&fadt[244..248], &[1, 8, 0, 1]);
        assert_eq!(u64_at(fadt, 248), 0x600);
        assert_eq!(u64_at(fadt, 120), 0x602);
        assert_eq!(fadt[128], 1);
        let dsdt = table_at(&t, u64_at(fadt, 140));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(checksum(dsdt), 0);
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(checksum(madt), 0);
        // Everything fits before 1 MiB.
        assert!(t.addr + t.bytes.len() as u64 <= 0x10_0000);
        for w in t.index.windows(2) {
            assert!(w[0].1 < w[1].1);
        }
    }

    #[test]
    fn madt_lists_each_cpu_and_the_ioapic() {
        let m = madt(&platform(3, 0)).unwrap();
        let mut off = 44;
        let mut apics = Vec::new();
        let mut ioapics = 0;
        while off < m.len() {
            let (kind, len) = (m[off], m[off + 1] as usize);
            match kind {
                0 => apics.push((m[off + 3], m[off + 4] & 1)),
                1 => {
                    ioapics += 1;
                    assert_eq!(
                        u32::from_le_bytes(m[off + 4..off + 8].try_into().unwrap()),
                        0xfec0_0000
                    );
                }
                _ => {}
            }
            off += len;
        }
        assert_eq!(off, m.len());
        assert_eq!(apics, vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(ioapics, 1);
        assert!(matches!(
            madt(&platform(255, 0)),
            Err(AcpiError::TooManyCpus(255))
        ));
        assert!(matches!(
            madt(&platform(0, 0)),
            Err(AcpiError::TooManyCpus(0))
        ));
    }

    #[test]
    fn dsdt_describes_every_virtio_slot_and_s5() {
        let d = dsdt(&platform(1, 2)).unwrap();
        let count = |needle: &[u8]| d.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b"LNRO0005\0"), 2);
        assert_eq!(count(b"VR00"), 1);
        assert_eq!(count(b"VR01"), 1);
        assert_eq!(count(b"_S5_"), 1);
        assert_eq!(count(b"COM1"), 1);
        assert_eq!(count(&[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]), 1);
        assert_eq!(count(&[0x22, 0x10, 0x00]), 1);
        let mut mem1 = vec![0x86, 0x09, 0x00, 0x01];
        mem1.extend_from_slice(&0xd000_1000u32.to_le_bytes());
        mem1.extend_from_slice(&0x1000u32.to_le_bytes());
        assert_eq!(count(&mem1), 1);
        let mut irq6 = vec![0x89, 0x06, 0x00, 0x03, 0x01];
        irq6.extend_from_slice(&6u32.to_le_bytes());
        assert_eq!(count(&irq6), 1);
        assert_eq!(count(b"COM2"), 0);
        let mut two = platform(1, 0);
        two.com2 = Some((0x2f8, 3));
        let d = dsdt(&two).unwrap();
        let count = |needle: &[u8]| d.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b"COM1"), 1);
        assert_eq!(count(b"COM2"), 1);
        assert_eq!(count(&[0x47, 0x01, 0xf8, 0x02, 0xf8, 0x02, 0x01, 0x08]), 1);
        assert_eq!(count(&[0x22, 0x08, 0x00]), 1, "IRQ 3");
        assert_eq!(count(&[0x22, 0x10, 0x00]), 1, "IRQ 4");
        let mut high = platform(1, 1);
        high.virtio[0].base = 1 << 32;
        assert!(matches!(dsdt(&high), Err(AcpiError::SlotTooHigh(_))));
    }
}
