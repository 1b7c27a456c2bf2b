//! The kernel's userfaultfd uAPI (`include/uapi/linux/userfaultfd.h`), as
//! far as swaplab uses it: `#[repr(C)]` argument structs, feature, mode and
//! event constants, and the ioctl wrappers.
//!
//! Written from the header, not generated: the structs are plain `u64`
//! records, so a binding generator (and the libclang it needs at build
//! time) buys nothing. The unit tests below pin every size, offset and
//! ioctl number to the kernel's values.

use std::mem::size_of;

/// `UFFD_API`: the only API version.
pub const UFFD_API: u64 = 0xAA;
/// `UFFDIO`: the ioctl type byte of userfaultfd ioctls.
pub const UFFDIO: u8 = 0xAA;
/// `USERFAULTFD_IOC`: the ioctl type byte of `/dev/userfaultfd`.
pub const USERFAULTFD_IOC: u8 = 0xAA;
/// `UFFD_USER_MODE_ONLY`: a creation flag (faults from kernel mode, e.g.
/// KVM or a syscall, are then not handled). swaplab never sets it.
pub const UFFD_USER_MODE_ONLY: i32 = 1;

// Feature bits (`uffdio_api.features`).
/// `UFFD_FEATURE_PAGEFAULT_FLAG_WP`.
pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// `UFFD_FEATURE_EVENT_FORK` (needs `CAP_SYS_PTRACE`).
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `UFFD_FEATURE_EVENT_REMAP`.
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `UFFD_FEATURE_EVENT_REMOVE`.
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `UFFD_FEATURE_MISSING_HUGETLBFS`.
pub const UFFD_FEATURE_MISSING_HUGETLBFS: u64 = 1 << 4;
/// `UFFD_FEATURE_MISSING_SHMEM`.
pub const UFFD_FEATURE_MISSING_SHMEM: u64 = 1 << 5;
/// `UFFD_FEATURE_EVENT_UNMAP`.
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// `UFFD_FEATURE_SIGBUS`.
pub const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
/// `UFFD_FEATURE_THREAD_ID`.
pub const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;
/// `UFFD_FEATURE_MINOR_HUGETLBFS`.
pub const UFFD_FEATURE_MINOR_HUGETLBFS: u64 = 1 << 9;
/// `UFFD_FEATURE_MINOR_SHMEM`.
pub const UFFD_FEATURE_MINOR_SHMEM: u64 = 1 << 10;
/// `UFFD_FEATURE_EXACT_ADDRESS`.
pub const UFFD_FEATURE_EXACT_ADDRESS: u64 = 1 << 11;
/// `UFFD_FEATURE_WP_HUGETLBFS_SHMEM`.
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
/// `UFFD_FEATURE_WP_UNPOPULATED`.
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFD_FEATURE_POISON`.
pub const UFFD_FEATURE_POISON: u64 = 1 << 14;
/// `UFFD_FEATURE_WP_ASYNC`.
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFD_FEATURE_MOVE`.
pub const UFFD_FEATURE_MOVE: u64 = 1 << 16;

// Ioctl command numbers (the `nr` of `_IOC`).
/// `_UFFDIO_REGISTER`.
pub const NR_REGISTER: u8 = 0x00;
/// `_UFFDIO_UNREGISTER`.
pub const NR_UNREGISTER: u8 = 0x01;
/// `_UFFDIO_WAKE`.
pub const NR_WAKE: u8 = 0x02;
/// `_UFFDIO_COPY`.
pub const NR_COPY: u8 = 0x03;
/// `_UFFDIO_ZEROPAGE`.
pub const NR_ZEROPAGE: u8 = 0x04;
/// `_UFFDIO_MOVE`.
pub const NR_MOVE: u8 = 0x05;
/// `_UFFDIO_WRITEPROTECT`.
pub const NR_WRITEPROTECT: u8 = 0x06;
/// `_UFFDIO_CONTINUE`.
pub const NR_CONTINUE: u8 = 0x07;
/// `_UFFDIO_POISON`.
pub const NR_POISON: u8 = 0x08;
/// `_UFFDIO_API`.
pub const NR_API: u8 = 0x3F;

// Register modes (`uffdio_register.mode`).
/// `UFFDIO_REGISTER_MODE_MISSING`.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
/// `UFFDIO_REGISTER_MODE_WP`.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_REGISTER_MODE_MINOR`.
pub const UFFDIO_REGISTER_MODE_MINOR: u64 = 1 << 2;

// Per-ioctl modes.
/// `UFFDIO_COPY_MODE_DONTWAKE`.
pub const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_COPY_MODE_WP`: install the page write-protected.
pub const UFFDIO_COPY_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_ZEROPAGE_MODE_DONTWAKE`.
pub const UFFDIO_ZEROPAGE_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_WRITEPROTECT_MODE_WP`: protect (clear it to unprotect).
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
/// `UFFDIO_WRITEPROTECT_MODE_DONTWAKE`.
pub const UFFDIO_WRITEPROTECT_MODE_DONTWAKE: u64 = 1 << 1;
/// `UFFDIO_CONTINUE_MODE_DONTWAKE`.
pub const UFFDIO_CONTINUE_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_CONTINUE_MODE_WP`.
pub const UFFDIO_CONTINUE_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_POISON_MODE_DONTWAKE`.
pub const UFFDIO_POISON_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_MOVE_MODE_DONTWAKE`.
pub const UFFDIO_MOVE_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES`: skip unpopulated source pages.
pub const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: u64 = 1 << 1;

// Event types (`uffd_msg.event`).
/// `UFFD_EVENT_PAGEFAULT`.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFD_EVENT_FORK`.
pub const UFFD_EVENT_FORK: u8 = 0x13;
/// `UFFD_EVENT_REMAP`.
pub const UFFD_EVENT_REMAP: u8 = 0x14;
/// `UFFD_EVENT_REMOVE`.
pub const UFFD_EVENT_REMOVE: u8 = 0x15;
/// `UFFD_EVENT_UNMAP`.
pub const UFFD_EVENT_UNMAP: u8 = 0x16;

// Page-fault flags (`uffd_msg.arg.pagefault.flags`).
/// `UFFD_PAGEFAULT_FLAG_WRITE`.
pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
/// `UFFD_PAGEFAULT_FLAG_WP`.
pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;
/// `UFFD_PAGEFAULT_FLAG_MINOR`.
pub const UFFD_PAGEFAULT_FLAG_MINOR: u64 = 1 << 2;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioApi {
    /// In: `UFFD_API`.
    pub api: u64,
    /// In: features to enable; out: every feature the kernel offers.
    pub features: u64,
    /// Out: the ioctls available on the descriptor (bit `1 << nr`).
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioRange {
    /// Start address (page aligned).
    pub start: u64,
    /// Length in bytes (page multiple).
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioRegister {
    /// The range.
    pub range: UffdioRange,
    /// `UFFDIO_REGISTER_MODE_*`.
    pub mode: u64,
    /// Out: the ioctls available on the range.
    pub ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioCopy {
    /// Destination (registered).
    pub dst: u64,
    /// Source.
    pub src: u64,
    /// Length in bytes.
    pub len: u64,
    /// `UFFDIO_COPY_MODE_*`.
    pub mode: u64,
    /// Out: bytes copied, or a negated errno.
    pub copy: i64,
}

/// `struct uffdio_zeropage`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioZeropage {
    /// The range.
    pub range: UffdioRange,
    /// `UFFDIO_ZEROPAGE_MODE_*`.
    pub mode: u64,
    /// Out: bytes mapped, or a negated errno.
    pub zeropage: i64,
}

/// `struct uffdio_writeprotect`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioWriteprotect {
    /// The range.
    pub range: UffdioRange,
    /// `UFFDIO_WRITEPROTECT_MODE_*`.
    pub mode: u64,
}

/// `struct uffdio_continue` (minor faults on shmem/hugetlbfs; swaplab's
/// anonymous memory has none, so no wrapper uses it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioContinue {
    /// The range.
    pub range: UffdioRange,
    /// `UFFDIO_CONTINUE_MODE_*`.
    pub mode: u64,
    /// Out: bytes mapped, or a negated errno.
    pub mapped: i64,
}

/// `struct uffdio_poison`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioPoison {
    /// The range.
    pub range: UffdioRange,
    /// `UFFDIO_POISON_MODE_*`.
    pub mode: u64,
    /// Out: bytes poisoned, or a negated errno.
    pub updated: i64,
}

/// `struct uffdio_move`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioMove {
    /// Destination (registered with the uffd the ioctl is issued on).
    pub dst: u64,
    /// Source.
    pub src: u64,
    /// Length in bytes.
    pub len: u64,
    /// `UFFDIO_MOVE_MODE_*`.
    pub mode: u64,
    /// Out: bytes moved, or a negated errno (the kernel calls it `move`).
    pub moved: i64,
}

/// `struct uffd_msg` (packed in the kernel; with these field types the
/// packed and natural layouts coincide). `arg` is the union, kept as three
/// words; see [`UffdMsg::from_bytes`] and the event decoder for its members:
///
/// | event | `arg[0]` | `arg[1]` | `arg[2]` |
/// |---|---|---|---|
/// | pagefault | flags | address | `feat.ptid` (low 4 bytes) |
/// | fork | `ufd` (low 4 bytes) | | |
/// | remap | from | to | len |
/// | remove, unmap | start | end | |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UffdMsg {
    /// `UFFD_EVENT_*`.
    pub event: u8,
    /// Reserved.
    pub reserved1: u8,
    /// Reserved.
    pub reserved2: u16,
    /// Reserved.
    pub reserved3: u32,
    /// The event's arguments (a union in the kernel).
    pub arg: [u64; 3],
}

/// Size of one `uffd_msg` as `read(2)` returns it.
pub const UFFD_MSG_SIZE: usize = size_of::<UffdMsg>();

impl UffdMsg {
    /// Decodes one message from the bytes `read(2)` returned (native endian).
    pub fn from_bytes(b: &[u8; UFFD_MSG_SIZE]) -> Self {
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_ne_bytes(w)
        };
        Self {
            event: b[0],
            reserved1: b[1],
            reserved2: u16::from_ne_bytes([b[2], b[3]]),
            reserved3: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            arg: [word(8), word(16), word(24)],
        }
    }

    /// The 32-bit value at the start of `arg[i]` (`feat.ptid`, `fork.ufd`).
    pub fn arg_u32(&self, i: usize) -> u32 {
        let b = self.arg[i].to_ne_bytes();
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// Request codes, from nix's `_IOC` equivalents.
pub type Request = nix::sys::ioctl::ioctl_num_type;

/// `UFFDIO_API`: `_IOWR(UFFDIO, 0x3F, struct uffdio_api)`.
pub const UFFDIO_API: Request =
    nix::request_code_readwrite!(UFFDIO, NR_API, size_of::<UffdioApi>());
/// `UFFDIO_REGISTER`: `_IOWR(UFFDIO, 0x00, struct uffdio_register)`.
pub const UFFDIO_REGISTER: Request =
    nix::request_code_readwrite!(UFFDIO, NR_REGISTER, size_of::<UffdioRegister>());
/// `UFFDIO_UNREGISTER`: `_IOR(UFFDIO, 0x01, struct uffdio_range)` (the
/// kernel reads the range despite the direction, as its header says).
pub const UFFDIO_UNREGISTER: Request =
    nix::request_code_read!(UFFDIO, NR_UNREGISTER, size_of::<UffdioRange>());
/// `UFFDIO_WAKE`: `_IOR(UFFDIO, 0x02, struct uffdio_range)`.
pub const UFFDIO_WAKE: Request = nix::request_code_read!(UFFDIO, NR_WAKE, size_of::<UffdioRange>());
/// `UFFDIO_COPY`: `_IOWR(UFFDIO, 0x03, struct uffdio_copy)`.
pub const UFFDIO_COPY: Request =
    nix::request_code_readwrite!(UFFDIO, NR_COPY, size_of::<UffdioCopy>());
/// `UFFDIO_ZEROPAGE`: `_IOWR(UFFDIO, 0x04, struct uffdio_zeropage)`.
pub const UFFDIO_ZEROPAGE: Request =
    nix::request_code_readwrite!(UFFDIO, NR_ZEROPAGE, size_of::<UffdioZeropage>());
/// `UFFDIO_MOVE`: `_IOWR(UFFDIO, 0x05, struct uffdio_move)`.
pub const UFFDIO_MOVE: Request =
    nix::request_code_readwrite!(UFFDIO, NR_MOVE, size_of::<UffdioMove>());
/// `UFFDIO_WRITEPROTECT`: `_IOWR(UFFDIO, 0x06, struct uffdio_writeprotect)`.
pub const UFFDIO_WRITEPROTECT: Request =
    nix::request_code_readwrite!(UFFDIO, NR_WRITEPROTECT, size_of::<UffdioWriteprotect>());
/// `UFFDIO_CONTINUE`: `_IOWR(UFFDIO, 0x07, struct uffdio_continue)`.
pub const UFFDIO_CONTINUE: Request =
    nix::request_code_readwrite!(UFFDIO, NR_CONTINUE, size_of::<UffdioContinue>());
/// `UFFDIO_POISON`: `_IOWR(UFFDIO, 0x08, struct uffdio_poison)`.
pub const UFFDIO_POISON: Request =
    nix::request_code_readwrite!(UFFDIO, NR_POISON, size_of::<UffdioPoison>());
/// `USERFAULTFD_IOC_NEW`: `_IO(USERFAULTFD_IOC, 0x00)` on `/dev/userfaultfd`;
/// its argument is the creation flags, by value.
pub const USERFAULTFD_IOC_NEW: Request = nix::request_code_none!(USERFAULTFD_IOC, 0x00);

nix::ioctl_readwrite_bad!(
    /// `ioctl(fd, UFFDIO_API, data)`.
    ///
    /// # Safety
    ///
    /// `fd` must be a userfaultfd and `data` valid for reads and writes.
    api,
    UFFDIO_API,
    UffdioApi
);
nix::ioctl_readwrite_bad!(
    /// `ioctl(fd, UFFDIO_REGISTER, data)`.
    ///
    /// # Safety
    ///
    /// `fd` must be a userfaultfd and `data` valid for reads and writes.
    register,
    UFFDIO_REGISTER,
    UffdioRegister
);
nix::ioctl_read_bad!(
    /// `ioctl(fd, UFFDIO_UNREGISTER, data)`.
    ///
    /// # Safety
    ///
    /// `fd` must be a userfaultfd and `data` valid for reads.
    unregister,
    UFFDIO_UNREGISTER,
    UffdioRange
);
nix::ioctl_read_bad!(
    /// `ioctl(fd, UFFDIO_WAKE, data)`.
    ///
    /// # Safety
    ///
    /// `fd` must be a userfaultfd and `data` valid for reads.
    wake,
    UFFDIO_WAKE,
    UffdioRange
);
nix::ioctl_readwrite_bad!(
    /// `ioctl(fd, UFFDIO_COPY, data)`.
    ///
    /// # Safety
    ///
    /// `fd` must be a userfaultfd and `data` valid for reads and writes;
    /// the destination must be memory no Rust reference covers (its
    /// contents change) and the source readable.
    copy,
    UFFDIO_COPY,
    UffdioCopy
);
nix::ioctl_readwrite_bad!(
    /// `ioctl(fd, UFFDIO_ZEROPAGE, data)`.
    ///
    /// # Safety
    ///
    /// As for [`copy`] (destination only).
    zeropage,
    UFFDIO_ZEROPAGE,
    UffdioZeropage
);
nix::ioctl_readwrite_bad!(
    /// `ioctl(fd, UFFDIO_MOVE, data)`.
    ///
    /// # Safety
    ///
    /// As for [`copy`], and the source loses its contents: no Rust
    /// reference may cover it either.
    move_pages,
    UFFDIO_MOVE,
    UffdioMove
);
nix::ioctl_readwrite_bad!(
    /// `ioctl(fd, UFFDIO_WRITEPROTECT, data)`.
    ///
    /// # Safety
    ///
    /// `fd` must be a userfaultfd and `data` valid for reads and writes.
    writeprotect,
    UFFDIO_WRITEPROTECT,
    UffdioWriteprotect
);
nix::ioctl_readwrite_bad!(
    /// `ioctl(fd, UFFDIO_POISON, data)`.
    ///
    /// # Safety
    ///
    /// As for [`copy`] (destination only: later accesses fail).
    poison,
    UFFDIO_POISON,
    UffdioPoison
);
nix::ioctl_write_int_bad!(
    /// `ioctl(fd, USERFAULTFD_IOC_NEW, flags)`: a new userfaultfd.
    ///
    /// # Safety
    ///
    /// `fd` must be an open `/dev/userfaultfd`; the caller owns the
    /// returned descriptor.
    new_from_device,
    USERFAULTFD_IOC_NEW
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of};

    /// `_IOC(dir, type, nr, size)` on x86-64, written out by hand:
    /// dir in bits 30-31 (1 = write, 2 = read), size in 16-29, type in
    /// 8-15, nr in 0-7.
    fn ioc(dir: Request, ty: Request, nr: Request, size: Request) -> Request {
        (dir << 30) | (size << 16) | (ty << 8) | nr
    }

    #[test]
    fn struct_sizes_match_the_uapi() {
        assert_eq!(size_of::<UffdioApi>(), 24);
        assert_eq!(size_of::<UffdioRange>(), 16);
        assert_eq!(size_of::<UffdioRegister>(), 32);
        assert_eq!(size_of::<UffdioCopy>(), 40);
        assert_eq!(size_of::<UffdioZeropage>(), 32);
        assert_eq!(size_of::<UffdioWriteprotect>(), 24);
        assert_eq!(size_of::<UffdioContinue>(), 32);
        assert_eq!(size_of::<UffdioPoison>(), 32);
        assert_eq!(size_of::<UffdioMove>(), 40);
        assert_eq!(size_of::<UffdMsg>(), 32);
        assert_eq!(UFFD_MSG_SIZE, 32);
        // Reading into an array of messages must leave no gaps.
        assert_eq!(size_of::<[UffdMsg; 3]>(), 96);
        assert_eq!(align_of::<UffdioCopy>(), 8);
    }

    #[test]
    fn field_offsets_match_the_uapi() {
        assert_eq!(offset_of!(UffdioApi, features), 8);
        assert_eq!(offset_of!(UffdioApi, ioctls), 16);
        assert_eq!(offset_of!(UffdioRegister, mode), 16);
        assert_eq!(offset_of!(UffdioRegister, ioctls), 24);
        assert_eq!(offset_of!(UffdioCopy, src), 8);
        assert_eq!(offset_of!(UffdioCopy, len), 16);
        assert_eq!(offset_of!(UffdioCopy, mode), 24);
        assert_eq!(offset_of!(UffdioCopy, copy), 32);
        assert_eq!(offset_of!(UffdioZeropage, mode), 16);
        assert_eq!(offset_of!(UffdioZeropage, zeropage), 24);
        assert_eq!(offset_of!(UffdioWriteprotect, mode), 16);
        assert_eq!(offset_of!(UffdioContinue, mapped), 24);
        assert_eq!(offset_of!(UffdioPoison, mode), 16);
        assert_eq!(offset_of!(UffdioPoison, updated), 24);
        assert_eq!(offset_of!(UffdioMove, mode), 24);
        assert_eq!(offset_of!(UffdioMove, moved), 32);
        // uffd_msg: 8-byte header, then the union.
        assert_eq!(offset_of!(UffdMsg, reserved1), 1);
        assert_eq!(offset_of!(UffdMsg, reserved2), 2);
        assert_eq!(offset_of!(UffdMsg, reserved3), 4);
        assert_eq!(offset_of!(UffdMsg, arg), 8);
    }

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        let (rw, r) = (3, 2);
        let want: [(Request, Request); 11] = [
            (UFFDIO_API, 0xC018_AA3F),
            (UFFDIO_REGISTER, 0xC020_AA00),
            (UFFDIO_UNREGISTER, 0x8010_AA01),
            (UFFDIO_WAKE, 0x8010_AA02),
            (UFFDIO_COPY, 0xC028_AA03),
            (UFFDIO_ZEROPAGE, 0xC020_AA04),
            (UFFDIO_MOVE, 0xC028_AA05),
            (UFFDIO_WRITEPROTECT, 0xC018_AA06),
            (UFFDIO_CONTINUE, 0xC020_AA07),
            (UFFDIO_POISON, 0xC020_AA08),
            (USERFAULTFD_IOC_NEW, 0x0000_AA00),
        ];
        for (got, hex) in want {
            assert_eq!(got, hex, "{got:#x}");
        }
        // The same numbers from the _IOC formula and the structs' C sizes.
        assert_eq!(UFFDIO_API, ioc(rw, 0xAA, 0x3F, 24));
        assert_eq!(UFFDIO_REGISTER, ioc(rw, 0xAA, 0x00, 32));
        assert_eq!(UFFDIO_UNREGISTER, ioc(r, 0xAA, 0x01, 16));
        assert_eq!(UFFDIO_WAKE, ioc(r, 0xAA, 0x02, 16));
        assert_eq!(UFFDIO_COPY, ioc(rw, 0xAA, 0x03, 40));
        assert_eq!(UFFDIO_ZEROPAGE, ioc(rw, 0xAA, 0x04, 32));
        assert_eq!(UFFDIO_MOVE, ioc(rw, 0xAA, 0x05, 40));
        assert_eq!(UFFDIO_WRITEPROTECT, ioc(rw, 0xAA, 0x06, 24));
        assert_eq!(UFFDIO_CONTINUE, ioc(rw, 0xAA, 0x07, 32));
        assert_eq!(UFFDIO_POISON, ioc(rw, 0xAA, 0x08, 32));
        assert_eq!(USERFAULTFD_IOC_NEW, ioc(0, 0xAA, 0x00, 0));
    }

    #[test]
    fn feature_bits_match_the_uapi() {
        let bits = [
            UFFD_FEATURE_PAGEFAULT_FLAG_WP,
            UFFD_FEATURE_EVENT_FORK,
            UFFD_FEATURE_EVENT_REMAP,
            UFFD_FEATURE_EVENT_REMOVE,
            UFFD_FEATURE_MISSING_HUGETLBFS,
            UFFD_FEATURE_MISSING_SHMEM,
            UFFD_FEATURE_EVENT_UNMAP,
            UFFD_FEATURE_SIGBUS,
            UFFD_FEATURE_THREAD_ID,
            UFFD_FEATURE_MINOR_HUGETLBFS,
            UFFD_FEATURE_MINOR_SHMEM,
            UFFD_FEATURE_EXACT_ADDRESS,
            UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
            UFFD_FEATURE_WP_UNPOPULATED,
            UFFD_FEATURE_POISON,
            UFFD_FEATURE_WP_ASYNC,
            UFFD_FEATURE_MOVE,
        ];
        // Bits 0..=16 in the header's order, none missing or doubled.
        for (i, b) in bits.iter().enumerate() {
            assert_eq!(*b, 1 << i);
        }
        assert_eq!(UFFD_FEATURE_MOVE, 0x1_0000);
        assert_eq!(UFFD_FEATURE_POISON, 0x4000);
    }

    #[test]
    fn message_decodes_from_native_bytes() {
        let mut b = [0u8; UFFD_MSG_SIZE];
        b[0] = UFFD_EVENT_PAGEFAULT;
        b[8..16].copy_from_slice(&3u64.to_ne_bytes());
        b[16..24].copy_from_slice(&0x7f00_1234_5000u64.to_ne_bytes());
        b[24..28].copy_from_slice(&4242u32.to_ne_bytes());
        b[28..32].copy_from_slice(&0xdead_beefu32.to_ne_bytes());
        let m = UffdMsg::from_bytes(&b);
        assert_eq!(m.event, 0x12);
        assert_eq!(m.arg[0], 3);
        assert_eq!(m.arg[1], 0x7f00_1234_5000);
        // ptid is the first four bytes of the third word, whatever follows.
        assert_eq!(m.arg_u32(2), 4242);
    }
}
