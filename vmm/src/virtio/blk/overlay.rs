//! A copy-on-write overlay: each guest run gets a private, writable view of a
//! shared read-only disk image (a qcow2 backing file in spirit), and the image
//! itself is never modified.
//!
//! [`Overlay`] is a [`BlkBackend`] with two layers:
//! - the *base*: the image, opened read-only, shared through the host page cache
//!   by every run that uses it;
//! - the *top*: an anonymous file in a scratch directory (`O_TMPFILE`, mode 0600,
//!   or a uniquely named file unlinked at once where `O_TMPFILE` is not
//!   supported), sparse and as long as the disk. It holds guest data, so it is
//!   private to this process and nothing is left behind however the run ends,
//!   even on `SIGKILL`. On a file system where an unlinked file cannot be
//!   used (9p, which the nested sandbox's scratch directories are on, sizes
//!   files by name) it keeps its 0600 name in the scratch directory, which
//!   must then be private to the run and removed by its owner (the runner's
//!   scratch directories are, and the sandbox sweeps them after a kill). The
//!   overlay does not unlink it itself: it is dropped on the device's worker
//!   thread, whose seccomp filter allows no `unlink`.
//!
//! The disk is split into [`OVERLAY_BLOCK`]-byte blocks (the last one is shorter
//! when the size is not a multiple of it) and a bitmap records which blocks live
//! in the top layer:
//! - reads are split into runs of consecutive blocks in the same layer, one
//!   `pread` per run (found a bitmap word at a time);
//! - writes go to the top layer; a block not yet there that the write covers only
//!   in part is first copied whole from the base (read-modify-write);
//! - discards punch a hole in the top layer (`FALLOC_FL_PUNCH_HOLE |
//!   FALLOC_FL_KEEP_SIZE`, or write zeros where that fails) for the blocks they
//!   cover whole and zero the covered part of the others, as writes do;
//! - flushes do nothing: the top layer is thrown away when the run ends, so there
//!   is nothing to make durable (and the base is never written).
//!
//! A block is marked as living in the top layer only once all of it has been
//! written there, so the top layer's copy of an unmarked block is never read. An
//! operation that fails leaves every block reading either its old contents or its
//! new ones, never bytes nobody wrote.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::backend::{punch_hole, BlkBackend};

/// Copy-on-write granularity in bytes: a block is in one layer or the other.
pub const OVERLAY_BLOCK: u64 = 4096;

/// [`OVERLAY_BLOCK`] as a buffer length.
const BLOCK: usize = OVERLAY_BLOCK as usize;

/// The disk size is rounded down to whole sectors.
const SECTOR: u64 = 512;

/// Zeros for discards where hole punching fails.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// What an operation puts into the range it covers.
#[derive(Clone, Copy)]
enum Fill<'a> {
    /// The bytes of a write, which starts at byte offset `origin`.
    Data { buf: &'a [u8], origin: u64 },
    /// Zeros (a discard).
    Zeros,
}

impl<'a> Fill<'a> {
    /// The bytes for `[from, to)`, or `None` for zeros.
    fn slice(self, from: u64, to: u64) -> Option<&'a [u8]> {
        match self {
            Self::Data { buf, origin } => {
                Some(&buf[(from - origin) as usize..(to - origin) as usize])
            }
            Self::Zeros => None,
        }
    }
}

/// A private, writable copy-on-write view of a read-only base image.
pub struct Overlay {
    base: File,
    top: File,
    /// Disk size in bytes: the base's, rounded down to a sector.
    size: u64,
    /// One bit per block: set when the block lives in the top layer.
    bitmap: Vec<u64>,
    /// Bits set in `bitmap`.
    written: u64,
    /// Whether to try punching holes (cleared when the file system refuses).
    punch: bool,
    /// One block, for read-modify-write.
    block_buf: Vec<u8>,
    /// The top layer's name, when the file system needed it to keep one.
    named: Option<PathBuf>,
}

impl fmt::Debug for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overlay")
            .field("size", &self.size)
            .field("blocks_written", &self.written)
            .field("punch", &self.punch)
            .finish_non_exhaustive()
    }
}

/// `e` with `what` and `path` in front of its message (the kind is kept).
fn named(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Opens the base read-only; anything but a regular file is refused.
fn open_base(path: &Path) -> io::Result<File> {
    // O_NONBLOCK so that opening a FIFO cannot hang; cleared once we know it is a
    // regular file.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| named(e, "cannot open overlay base", path))?;
    let ty = file
        .metadata()
        .map_err(|e| named(e, "cannot stat overlay base", path))?
        .file_type();
    if !ty.is_file() {
        let what = if ty.is_dir() {
            "a directory"
        } else if ty.is_block_device() {
            "a block device"
        } else if ty.is_char_device() {
            "a character device"
        } else if ty.is_fifo() {
            "a FIFO"
        } else if ty.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "overlay base {} must be a regular file, but it is {what}",
                path.display()
            ),
        ));
    }
    let blocking = |f| OFlag::from_bits_retain(f) - OFlag::O_NONBLOCK;
    fcntl(&file, FcntlArg::F_GETFL)
        .and_then(|f| fcntl(&file, FcntlArg::F_SETFL(blocking(f))))
        .map_err(|e| named(e.into(), "cannot set the flags of overlay base", path))?;
    Ok(file)
}

/// Creates the top layer, `size` bytes long: an anonymous 0600 file in `dir`,
/// or, where the file system cannot use an unlinked file, a named one (its
/// path is returned, for removal).
fn create_sized_top(dir: &Path, size: u64) -> io::Result<(File, Option<PathBuf>)> {
    let top = create_top(dir)?;
    match top.set_len(size) {
        Ok(()) => return Ok((top, None)),
        // 9p truncates by name: an unlinked file is gone for it.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    drop(top);
    let (top, path) = create_named(dir)?;
    if let Err(e) = top.set_len(size) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((top, Some(path)))
}

/// Creates the top layer: an anonymous 0600 file in `dir`.
fn create_top(dir: &Path) -> io::Result<File> {
    // O_EXCL: the file can never be linked into the file system either.
    let tmp = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_EXCL)
        .open(dir);
    match tmp {
        // Kernels or file systems without O_TMPFILE answer with one of these.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            create_unlinked(dir)
        }
        r => r,
    }
}

/// Creates a uniquely named 0600 file in `dir` and unlinks it at once.
fn create_unlinked(dir: &Path) -> io::Result<File> {
    let (file, path) = create_named(dir)?;
    std::fs::remove_file(&path).map_err(|e| named(e, "cannot unlink overlay top layer", &path))?;
    Ok(file)
}

/// Creates a uniquely named 0600 file in `dir` (never following a link).
fn create_named(dir: &Path) -> io::Result<(File, PathBuf)> {
    let pid = std::process::id();
    for attempt in 0u32..100 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = dir.join(format!(".swaplab-overlay-{pid}-{nanos:09}-{attempt}"));
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        match created {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no unused name for the overlay top layer",
    ))
}

/// Writes zeros to `[from, to)` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], pos)?;
        pos += n;
    }
    Ok(())
}

impl Overlay {
    /// A fresh overlay on the image `base` (a regular file, opened read-only),
    /// with its top layer an anonymous file in `scratch_dir`. Errors name the path
    /// at fault.
    pub fn open(base: &Path, scratch_dir: &Path) -> io::Result<Self> {
        let base_file = open_base(base)?;
        let len = base_file
            .metadata()
            .map_err(|e| named(e, "cannot stat overlay base", base))?
            .len();
        let size = len - len % SECTOR;
        let blocks = size.div_ceil(OVERLAY_BLOCK);
        let words = usize::try_from(blocks.div_ceil(64)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("overlay base {} is too big", base.display()),
            )
        })?;
        let (top, named_top) = create_sized_top(scratch_dir, size)
            .map_err(|e| named(e, "cannot create the overlay top layer in", scratch_dir))?;
        Ok(Self {
            base: base_file,
            top,
            size,
            bitmap: vec![0; words],
            written: 0,
            punch: true,
            block_buf: vec![0; BLOCK],
            named: named_top,
        })
    }

    /// The top layer's path, if the scratch directory's file system made it
    /// keep a name (see the module doc); `None` when it is anonymous.
    pub fn top_path(&self) -> Option<&Path> {
        self.named.as_deref()
    }

    /// Blocks ([`OVERLAY_BLOCK`] bytes each) that live in the top layer.
    pub fn blocks_written(&self) -> u64 {
        self.written
    }

    /// The end of `[offset, offset + len)`, or an error of `kind` if that is not
    /// inside the disk.
    fn end_of(&self, offset: u64, len: u64, kind: io::ErrorKind) -> io::Result<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(end),
            _ => Err(io::Error::new(
                kind,
                format!(
                    "{len} bytes at {offset} reach beyond the end of the {}-byte overlay",
                    self.size
                ),
            )),
        }
    }

    /// `[start, end)` of block `b` (the last block may be short).
    fn extent(&self, b: u64) -> (u64, u64) {
        let start = b * OVERLAY_BLOCK;
        (start, (start + OVERLAY_BLOCK).min(self.size))
    }

    fn is_written(&self, b: u64) -> bool {
        self.bitmap[(b / 64) as usize] >> (b % 64) & 1 != 0
    }

    /// Marks blocks `[first, end)` as living in the top layer.
    fn mark(&mut self, first: u64, end: u64) {
        let mut b = first;
        while b < end {
            let word = b - b % 64;
            let (lo, hi) = (b % 64, (end - word).min(64));
            let mask = (u64::MAX >> (64 - (hi - lo))) << lo;
            let old = &mut self.bitmap[(word / 64) as usize];
            self.written += u64::from((mask & !*old).count_ones());
            *old |= mask;
            b = word + hi;
        }
    }

    /// The first block at or after `b` (and before `limit`) in the other layer
    /// from `b`'s, or `limit`.
    fn run_end(&self, b: u64, limit: u64) -> u64 {
        let flip = if self.is_written(b) { u64::MAX } else { 0 };
        let mut w = b / 64;
        // Set bits: blocks in the other layer.
        let mut differ = (self.bitmap[w as usize] ^ flip) & (u64::MAX << (b % 64));
        loop {
            if differ != 0 {
                return (w * 64 + u64::from(differ.trailing_zeros())).min(limit);
            }
            w += 1;
            if w * 64 >= limit {
                return limit;
            }
            differ = self.bitmap[w as usize] ^ flip;
        }
    }

    /// Whether `[from, to)` covers all of block `b`.
    fn covers(&self, b: u64, from: u64, to: u64) -> bool {
        let (start, end) = self.extent(b);
        from <= start && to >= end
    }

    /// Puts `fill` into `[from, to)`, which is inside block `b` but does not cover
    /// it: in place if the block is in the top layer, else by copying the block up
    /// from the base with the change applied.
    fn patch_block(&mut self, b: u64, from: u64, to: u64, fill: Fill<'_>) -> io::Result<()> {
        if self.is_written(b) {
            return match fill.slice(from, to) {
                Some(data) => self.top.write_all_at(data, from),
                None => write_zeros(&self.top, from, to),
            };
        }
        let (start, end) = self.extent(b);
        let block = &mut self.block_buf[..(end - start) as usize];
        self.base.read_exact_at(block, start)?;
        let part = &mut block[(from - start) as usize..(to - start) as usize];
        match fill.slice(from, to) {
            Some(data) => part.copy_from_slice(data),
            None => part.fill(0),
        }
        self.top.write_all_at(block, start)?;
        self.mark(b, b + 1);
        Ok(())
    }

    /// Puts `fill` into `[from, to)`, which is made of whole blocks.
    fn fill_blocks(&mut self, from: u64, to: u64, fill: Fill<'_>) -> io::Result<()> {
        match fill.slice(from, to) {
            Some(data) => self.top.write_all_at(data, from)?,
            None => {
                let punched = self.punch
                    && match punch_hole(&self.top, from, to - from) {
                        Ok(()) => true,
                        Err(e) => {
                            // Not supported here: stop trying. Other errors may
                            // be transient: zeros will do this time.
                            if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) {
                                self.punch = false;
                            }
                            false
                        }
                    };
                if !punched {
                    write_zeros(&self.top, from, to)?;
                }
            }
        }
        self.mark(from / OVERLAY_BLOCK, (to - 1) / OVERLAY_BLOCK + 1);
        Ok(())
    }

    /// Puts `fill` into `[offset, end)` (non-empty, inside the disk): the partly
    /// covered edge blocks one at a time, then the whole blocks in between at once.
    fn apply(&mut self, offset: u64, end: u64, fill: Fill<'_>) -> io::Result<()> {
        let first = offset / OVERLAY_BLOCK;
        let last = (end - 1) / OVERLAY_BLOCK;
        let (mut lo, mut hi) = (offset, end);
        if !self.covers(first, offset, end) {
            let to = end.min(self.extent(first).1);
            self.patch_block(first, offset, to, fill)?;
            lo = to;
        }
        if last != first && !self.covers(last, offset, end) {
            let from = self.extent(last).0;
            self.patch_block(last, from, end, fill)?;
            hi = from;
        }
        if lo < hi {
            self.fill_blocks(lo, hi, fill)?;
        }
        Ok(())
    }
}

impl BlkBackend for Overlay {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = self.end_of(offset, buf.len() as u64, io::ErrorKind::UnexpectedEof)?;
        let mut pos = offset;
        while pos < end {
            let b = pos / OVERLAY_BLOCK;
            let limit = (end - 1) / OVERLAY_BLOCK + 1;
            let run_end = (self.run_end(b, limit) * OVERLAY_BLOCK).min(end);
            let layer = if self.is_written(b) {
                &self.top
            } else {
                &self.base
            };
            layer.read_exact_at(
                &mut buf[(pos - offset) as usize..(run_end - offset) as usize],
                pos,
            )?;
            pos = run_end;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = self.end_of(offset, buf.len() as u64, io::ErrorKind::InvalidInput)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.apply(
            offset,
            end,
            Fill::Data {
                buf,
                origin: offset,
            },
        )
    }

    /// Nothing to do: the top layer is discarded when the run ends, so its
    /// contents need not survive a crash, and the base is never written.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let end = self.end_of(offset, len, io::ErrorKind::InvalidInput)?;
        if len == 0 {
            return Ok(());
        }
        self.apply(offset, end, Fill::Zeros)
    }

    fn supports_discard(&self) -> bool {
        true
    }

    fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
#[path = "overlay_tests.rs"]
mod tests;
