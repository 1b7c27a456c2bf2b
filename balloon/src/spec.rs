//! What the virtio spec (1.2, 5.5) fixes for a memory balloon: the device ID,
//! the 4 KiB balloon page and the feature bits. Its own module so the device
//! files import it from here and `lib.rs` only re-exports it.

/// virtio device ID of a memory balloon.
pub const DEVICE_TYPE: u32 = 5;

/// Size of a balloon page: PFNs in the queues are always in 4 KiB units
/// (`VIRTIO_BALLOON_PFN_SHIFT`), whatever the guest's page size.
pub const BALLOON_PAGE_SIZE: u64 = 4096;

/// `VIRTIO_BALLOON_PFN_SHIFT`.
pub const PFN_SHIFT: u32 = 12;

/// Balloon feature bits (virtio 1.2, 5.5.3).
pub mod features {
    /// The host must be told before pages are taken back (not offered).
    pub const MUST_TELL_HOST: u64 = 1 << 0;
    /// A statistics queue is present.
    pub const STATS_VQ: u64 = 1 << 1;
    /// The guest deflates the balloon when it runs out of memory.
    pub const DEFLATE_ON_OOM: u64 = 1 << 2;
    /// Free page hinting (not offered).
    pub const FREE_PAGE_HINT: u64 = 1 << 3;
    /// The guest poisons freed pages (not offered).
    pub const PAGE_POISON: u64 = 1 << 4;
    /// Free page reporting queue present.
    pub const REPORTING: u64 = 1 << 5;
}
