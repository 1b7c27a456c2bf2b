//! Putting a Linux kernel, its initramfs and its command line into guest memory.
//!
//! Two kernel formats, told apart by their first bytes:
//! - an uncompressed ELF `vmlinux` with a Xen `PHYS32_ENTRY` note: loaded at its
//!   segments' physical addresses and entered through the PVH boot protocol (32-bit
//!   protected mode, paging off, `hvm_start_info` in `%ebx`);
//! - a `bzImage`: its protected-mode part loaded at 1 MiB and entered at its 64-bit
//!   entry point with a zero page (`boot_params`) in `%rsi`; it decompresses itself.
//!
//! The initramfs goes to the top of RAM below the MMIO hole (and below the kernel's
//! `initrd_addr_max`); its first bytes must be a cpio archive or a compressed stream the
//! kernel knows, so an obviously corrupt file fails here rather than in the guest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;

/// Offset of the bzImage's 64-bit entry point from where it is loaded.
const BZIMAGE_ENTRY_64: u64 = 0x200;
/// Boot protocol 2.12: the 64-bit entry point (`XLF_KERNEL_64`) and 2.06 fields exist.
const MIN_BOOT_PROTOCOL: u16 = 0x020c;
const XLF_KERNEL_64: u16 = 1;

/// Errors loading the guest's boot files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be opened or read.
    #[error("cannot read {what} {path}")]
    Read {
        /// "kernel" or "initramfs".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither an ELF nor a bzImage.
    #[error("{0} is not a Linux kernel: neither an ELF vmlinux nor a bzImage")]
    NotAKernel(PathBuf),
    /// An ELF without a PVH entry point.
    #[error("{0} is an ELF kernel without a PVH entry point (Xen PHYS32_ENTRY note); use a kernel built with CONFIG_PVH or its bzImage")]
    NoPvhEntry(PathBuf),
    /// A bzImage too old or without a 64-bit entry point.
    #[error("{path} is a bzImage with boot protocol {version:#x} and xloadflags {xloadflags:#x}; a 64-bit kernel with boot protocol 2.12 or later is needed")]
    OldBzImage {
        /// The file.
        path: PathBuf,
        /// Its boot protocol version.
        version: u16,
        /// Its xloadflags.
        xloadflags: u16,
    },
    /// linux-loader refused the image (truncated, bad headers, does not fit).
    #[error("cannot load kernel {path}: {reason}")]
    Kernel {
        /// The file.
        path: PathBuf,
        /// What linux-loader said (its innermost error; its outer ones repeat it).
        reason: String,
    },
    /// The initramfs is empty or starts with unknown bytes.
    #[error("{path} is not an initramfs: it starts with {head}, not a cpio archive or a compressed stream the kernel can unpack")]
    NotAnInitramfs {
        /// The file.
        path: PathBuf,
        /// Its first bytes, in hex.
        head: String,
    },
    /// The initramfs does not fit in guest RAM.
    #[error("initramfs {path} ({size} bytes) does not fit in guest RAM between {floor:#x} and {limit:#x}; give the guest more memory")]
    InitramfsTooBig {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Lowest usable address (end of the kernel).
        floor: u64,
        /// Highest address + 1.
        limit: u64,
    },
    /// The command line is too long or has a NUL.
    #[error("kernel command line of {len} bytes is invalid (at most {max} bytes, no NUL)")]
    Cmdline {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Writing guest memory failed.
    #[error("writing {what} into guest memory")]
    Memory {
        /// What was written.
        what: &'static str,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Entry {
    /// PVH: 32-bit entry point.
    Pvh(u64),
    /// bzImage: 64-bit entry point and the setup header for the zero page.
    BzImage(u64, setup_header),
}

/// A loaded kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kernel {
    /// How to enter it.
    pub entry: Entry,
    /// First address past everything the kernel may use before it sets up its own
    /// memory map (segments and bss; for a bzImage, its decompression area).
    pub end: u64,
}

impl Kernel {
    /// Highest address + 1 the kernel accepts its initramfs below.
    pub fn initrd_limit(&self) -> u64 {
        match self.entry {
            Entry::BzImage(_, hdr) if hdr.initrd_addr_max != 0 => {
                u64::from(hdr.initrd_addr_max) + 1
            }
            _ => u64::MAX,
        }
    }
}

fn open(what: &'static str, path: &Path) -> Result<File, LoadError> {
    File::open(path).map_err(|source| LoadError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_head(
    what: &'static str,
    path: &Path,
    f: &mut File,
    n: usize,
) -> Result<Vec<u8>, LoadError> {
    let mut head = Vec::with_capacity(n);
    f.by_ref()
        .take(n as u64)
        .read_to_end(&mut head)
        .and_then(|_| f.seek(SeekFrom::Start(0)).map(|_| ()))
        .map_err(|source| LoadError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    Ok(head)
}

/// The two kernel formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF vmlinux (booted through PVH).
    Elf,
    /// bzImage.
    BzImage,
}

fn format_of(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(b"\x7fELF") {
        Some(KernelFormat::Elf)
    } else if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        Some(KernelFormat::BzImage)
    } else {
        None
    }
}

/// The format of the kernel at `path`, from its first bytes (nothing is loaded).
pub fn kernel_format(path: &Path) -> Result<KernelFormat, LoadError> {
    let mut f = open("kernel", path)?;
    let head = read_head("kernel", path, &mut f, 0x300)?;
    format_of(&head).ok_or_else(|| LoadError::NotAKernel(path.to_path_buf()))
}

/// Load the kernel at `path` into `mem`.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<Kernel, LoadError> {
    let mut f = open("kernel", path)?;
    let head = read_head("kernel", path, &mut f, 0x300)?;
    let kernel_err = |e: linux_loader::loader::Error| {
        let mut inner: &dyn std::error::Error = &e;
        while let Some(s) = inner.source() {
            inner = s;
        }
        LoadError::Kernel {
            path: path.to_path_buf(),
            reason: inner.to_string(),
        }
    };
    let himem = Some(GuestAddress(layout::HIMEM_START));
    match format_of(&head) {
        Some(KernelFormat::Elf) => {
            let r = Elf::load(mem, None, &mut f, himem).map_err(kernel_err)?;
            match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => Ok(Kernel {
                    entry: Entry::Pvh(entry.0),
                    end: r.kernel_end,
                }),
                _ => Err(LoadError::NoPvhEntry(path.to_path_buf())),
            }
        }
        Some(KernelFormat::BzImage) => {
            let r = BzImage::load(mem, None, &mut f, himem).map_err(kernel_err)?;
            let hdr = r
                .setup_header
                .ok_or_else(|| LoadError::NotAKernel(path.to_path_buf()))?;
            let (version, xloadflags) = (hdr.version, hdr.xloadflags);
            if version < MIN_BOOT_PROTOCOL || xloadflags & XLF_KERNEL_64 == 0 {
                return Err(LoadError::OldBzImage {
                    path: path.to_path_buf(),
                    version,
                    xloadflags,
                });
            }
            let load = r.kernel_load.0;
            let end = r.kernel_end.max(load + u64::from(hdr.init_size));
            Ok(Kernel {
                entry: Entry::BzImage(load + BZIMAGE_ENTRY_64, hdr),
                end,
            })
        }
        None => Err(LoadError::NotAKernel(path.to_path_buf())),
    }
}

/// Whether `head` (the first bytes of a file) looks like something the kernel's
/// initramfs unpacker accepts: a newc/crc cpio archive or a compressed stream.
pub fn looks_like_initramfs(head: &[u8]) -> bool {
    const MAGICS: &[&[u8]] = &[
        b"070701",                          // cpio newc
        b"070702",                          // cpio crc
        &[0x1f, 0x8b],                      // gzip
        &[0x1f, 0x9e],                      // old gzip
        b"BZh",                             // bzip2
        &[0x5d, 0x00, 0x00],                // lzma
        &[0xfd, b'7', b'z', b'X', b'Z', 0], // xz
        &[0x89, b'L', b'Z', b'O'],          // lzo
        &[0x02, 0x21, 0x4c, 0x18],          // lz4 legacy
        &[0x28, 0xb5, 0x2f, 0xfd],          // zstd
    ];
    MAGICS.iter().any(|m| head.starts_with(m))
}

fn open_initrd(path: &Path) -> Result<(File, u64), LoadError> {
    let mut f = open("initramfs", path)?;
    let head = read_head("initramfs", path, &mut f, 8)?;
    if !looks_like_initramfs(&head) {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        return Err(LoadError::NotAnInitramfs {
            path: path.to_path_buf(),
            head: if hex.is_empty() {
                "nothing (empty file)".into()
            } else {
                hex.join(" ")
            },
        });
    }
    let size = f
        .metadata()
        .map_err(|source| LoadError::Read {
            what: "initramfs",
            path: path.to_path_buf(),
            source,
        })?
        .len();
    Ok((f, size))
}

/// Check that `path` is a readable initramfs (by its first bytes); returns its size.
pub fn check_initrd(path: &Path) -> Result<u64, LoadError> {
    open_initrd(path).map(|(_, size)| size)
}

/// Load the initramfs at `path` as high as possible in `[floor, limit)`.
/// Returns its guest address and size.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    floor: u64,
    limit: u64,
) -> Result<(u64, u64), LoadError> {
    let (mut f, size) = open_initrd(path)?;
    let addr =
        layout::initrd_addr(size, floor, limit).ok_or_else(|| LoadError::InitramfsTooBig {
            path: path.to_path_buf(),
            size,
            floor,
            limit,
        })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)
        .map_err(|source| LoadError::Memory {
            what: "the initramfs",
            source,
        })?;
    Ok((addr, size))
}

/// Write `cmdline` (NUL-terminated) at [`layout::CMDLINE_ADDR`].
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), LoadError> {
    if cmdline.len() >= layout::CMDLINE_MAX || cmdline.contains('\0') {
        return Err(LoadError::Cmdline {
            len: cmdline.len(),
            max: layout::CMDLINE_MAX - 1,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(layout::CMDLINE_ADDR))
        .map_err(|source| LoadError::Memory {
            what: "the command line",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_guest_memory, RegionSpec};
    use std::io::Write;

    fn mem() -> GuestMemoryMmap {
        create_guest_memory(&[RegionSpec::new(0, 16 << 20)]).unwrap()
    }

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn rejects_files_that_are_not_kernels() {
        let m = mem();
        let missing = load_kernel(&m, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(
            matches!(missing, LoadError::Read { what: "kernel", .. }),
            "{missing}"
        );
        let junk = file(&[0x55; 4096]);
        assert!(matches!(
            load_kernel(&m, junk.path()),
            Err(LoadError::NotAKernel(_))
        ));
        let empty = file(&[]);
        assert!(matches!(
            load_kernel(&m, empty.path()),
            Err(LoadError::NotAKernel(_))
        ));
        // An ELF magic followed by garbage: linux-loader's header checks refuse it.
        let mut elf = b"\x7fELF".to_vec();
        elf.extend_from_slice(&[0xaa; 60]);
        let bad_elf = file(&elf);
        assert_eq!(kernel_format(bad_elf.path()).unwrap(), KernelFormat::Elf);
        let e = load_kernel(&m, bad_elf.path()).unwrap_err();
        assert!(matches!(e, LoadError::Kernel { .. }), "{e}");
        // A bzImage header with an old protocol.
        let mut bz = vec![0u8; 0x1000];
        bz[0x1f1] = 1; // setup_sects
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x0200u16.to_le_bytes());
        bz[0x211] = 1; // loadflags: LOADED_HIGH
        bz[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        let old = file(&bz);
        let e = load_kernel(&m, old.path()).unwrap_err();
        assert!(
            matches!(e, LoadError::OldBzImage { version: 0x200, .. }),
            "{e}"
        );
    }

    #[test]
    fn initramfs_magic_placement_and_limits() {
        let m = mem();
        let mut cpio = b"070701".to_vec();
        cpio.resize(10_000, 7);
        let f = file(&cpio);
        assert_eq!(check_initrd(f.path()).unwrap(), 10_000);
        let (addr, size) = load_initrd(&m, f.path(), 1 << 20, 16 << 20).unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + size <= 16 << 20 && addr + size > (16 << 20) - 4096);
        let mut back = vec![0u8; 10_000];
        m.read_slice(&mut back, GuestAddress(addr)).unwrap();
        assert_eq!(back, cpio);
        let e = load_initrd(&m, f.path(), (16 << 20) - 8192, 16 << 20).unwrap_err();
        assert!(matches!(e, LoadError::InitramfsTooBig { .. }), "{e}");
        let junk = file(b"hello world");
        let e = load_initrd(&m, junk.path(), 0, 16 << 20).unwrap_err();
        assert!(e.to_string().contains("68 65 6c 6c 6f"), "{e}");
        let empty = file(b"");
        assert!(load_initrd(&m, empty.path(), 0, 16 << 20)
            .unwrap_err()
            .to_string()
            .contains("empty file"));
        assert!(looks_like_initramfs(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        assert!(looks_like_initramfs(b"\x1f\x8b\x08"));
        assert!(!looks_like_initramfs(b"07070"));
    }

    #[test]
    fn command_line_is_nul_terminated_and_bounded() {
        let m = mem();
        write_cmdline(&m, "console=ttyS0 quiet").unwrap();
        let mut b = [0u8; 20];
        m.read_slice(&mut b, GuestAddress(layout::CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&b, b"console=ttyS0 quiet\0");
        assert!(write_cmdline(&m, &"x".repeat(2047)).is_ok());
        assert!(write_cmdline(&m, &"x".repeat(2048)).is_err());
        assert!(write_cmdline(&m, "a\0b").is_err());
    }
}
