//! The contract between the probe payload (guest) and the host driver.
//!
//! # Guest-physical layout
//!
//! ```text
//! 0x0000_0000 ─ control region (CONTROL_SIZE = 2 MiB, its own memslot; never test RAM)
//!   0x0000_1000  page tables, GDT, TSS        (vmm::flat tables area, up to CODE_ADDR)
//!   0x0010_0000  payload code                 (CODE_MAX bytes)
//!   0x0011_0000  control block                (one page, fields below)
//!   0x0011_1000  stack                        (grows down from STACK_TOP)
//!   0x0012_0000  index buffer                 (CHUNK_CAPACITY × u32 page indices)
//!   0x0016_0000  latency buffer               (CHUNK_CAPACITY × u64 TSC cycles)
//! 0xd000_0000 ─ doorbell (MMIO, no memslot: every write is a VM exit)
//! 0x1_0000_0000 ─ test RAM (the memory under test, a separate memslot)
//! ```
//!
//! # Protocol
//!
//! The guest writes a [`Doorbell`] code (a `u64`) to [`DOORBELL_ADDR`]:
//! 1. [`Doorbell::Ready`] once at start. The host fills the index buffer, sets
//!    [`CB_COUNT`] and resumes.
//! 2. The guest then, for each of the `count` page indices `i`: `lfence; rdtsc`, reads the
//!    tag word at offset 0 of page `i` of test RAM, writes the page's own tag there
//!    ([`page_tag`]), increments the access counter at offset 8, `lfence; rdtsc`, and
//!    stores the cycle difference in the latency buffer. The doorbell is never inside
//!    the timed window.
//! 3. [`Doorbell::ChunkDone`]: the host drains `count` latencies, refills, resumes.
//! 4. When the host sets `count` to 0, the guest rings [`Doorbell::Finished`] and the
//!    host stops the VM (resuming it after that is a guest `ud2`: a triple fault).
//!
//! A tag read back must be 0 (never written) or the page's own tag; anything else
//! (another page's data) is counted in [`CB_BAD_TAGS`], with the last offending page
//! index and value in [`CB_LAST_BAD_PAGE`] / [`CB_LAST_BAD_VALUE`]. The access counter
//! lets the host check afterwards that no write was lost.

/// Guest-physical base of the control region.
pub const CONTROL_BASE: u64 = 0;
/// Size of the control region.
pub const CONTROL_SIZE: u64 = 2 << 20;
/// Where `vmm::flat` puts its GDT, TSS and page tables.
pub const TABLES_ADDR: u64 = 0x1000;
/// Bytes available for the flat-guest tables.
pub const TABLES_SIZE: u64 = CODE_ADDR - TABLES_ADDR;
/// Payload entry point.
pub const CODE_ADDR: u64 = 0x10_0000;
/// Maximum payload size.
pub const CODE_MAX: u64 = 0x1_0000;
/// The control block.
pub const CONTROL_BLOCK_ADDR: u64 = 0x11_0000;
/// Initial stack pointer.
pub const STACK_TOP: u64 = 0x12_0000;
/// Page indices (`u32`) for the current chunk.
pub const INDEX_ADDR: u64 = 0x12_0000;
/// Maximum accesses per chunk (per doorbell exit).
pub const CHUNK_CAPACITY: usize = 65536;
/// Latencies (`u64` TSC cycles) for the current chunk.
pub const LATENCY_ADDR: u64 = INDEX_ADDR + 4 * CHUNK_CAPACITY as u64;
/// The MMIO doorbell (8 bytes).
pub const DOORBELL_ADDR: u64 = 0xd000_0000;
/// Guest-physical base of test RAM.
pub const TEST_RAM_BASE: u64 = 1 << 32;

/// Control block: accesses in the current chunk (host writes; 0 = no more work).
pub const CB_COUNT: u64 = 0x00;
/// Control block: guest-physical base of test RAM (host writes before start).
pub const CB_RAM_BASE: u64 = 0x08;
/// Control block: tags that were neither 0 nor the page's own (guest increments).
pub const CB_BAD_TAGS: u64 = 0x10;
/// Control block: page index of the last bad tag.
pub const CB_LAST_BAD_PAGE: u64 = 0x18;
/// Control block: the last bad tag value.
pub const CB_LAST_BAD_VALUE: u64 = 0x20;
/// Control block: chunks the guest completed.
pub const CB_CHUNKS: u64 = 0x28;

/// Offset of the tag word in each test page.
pub const PAGE_TAG_OFFSET: u64 = 0;
/// Offset of the access counter in each test page.
pub const PAGE_COUNTER_OFFSET: u64 = 8;

/// The tag a page carries once the probe has written it: its guest-physical address + 1
/// (never 0, and different for every page).
pub fn page_tag(page_gpa: u64) -> u64 {
    page_gpa | 1
}

/// Codes the guest writes to the doorbell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Doorbell {
    /// The payload started; give it the first chunk.
    Ready = 1,
    /// The current chunk is done; latencies are in the buffer.
    ChunkDone = 2,
    /// The payload saw `count == 0` and is done.
    Finished = 3,
}

impl Doorbell {
    /// Decode a doorbell value.
    pub fn from_u64(v: u64) -> Option<Self> {
        match v {
            1 => Some(Self::Ready),
            2 => Some(Self::ChunkDone),
            3 => Some(Self::Finished),
            _ => None,
        }
    }
}

// The layout is checked at compile time: regions in order, no overlaps, all inside the
// control region, the doorbell between the control region and test RAM.
const _: () = {
    assert!(TABLES_ADDR + TABLES_SIZE <= CODE_ADDR);
    assert!(CODE_ADDR + CODE_MAX <= CONTROL_BLOCK_ADDR);
    assert!(CONTROL_BLOCK_ADDR + 0x1000 < STACK_TOP);
    assert!(STACK_TOP <= INDEX_ADDR);
    assert!(INDEX_ADDR + 4 * CHUNK_CAPACITY as u64 <= LATENCY_ADDR);
    assert!(LATENCY_ADDR + 8 * CHUNK_CAPACITY as u64 <= CONTROL_BASE + CONTROL_SIZE);
    assert!(DOORBELL_ADDR >= CONTROL_BASE + CONTROL_SIZE && DOORBELL_ADDR < TEST_RAM_BASE);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_doorbell_codes() {
        assert_ne!(page_tag(0), 0);
        assert_ne!(page_tag(TEST_RAM_BASE), page_tag(TEST_RAM_BASE + 4096));
        assert_eq!(page_tag(TEST_RAM_BASE) & !1, TEST_RAM_BASE);
        for d in [Doorbell::Ready, Doorbell::ChunkDone, Doorbell::Finished] {
            assert_eq!(Doorbell::from_u64(d as u64), Some(d));
        }
        assert_eq!(Doorbell::from_u64(0), None);
        assert_eq!(Doorbell::from_u64(9), None);
    }
}
