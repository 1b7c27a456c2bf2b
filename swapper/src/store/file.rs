//! Swap-file store: slot `n` lives at byte offset `n * 4096` of a sparse file.
//!
//! The file is named `swaplab-swap-<pid>-<n>.img` (so
//! [`crate::kswap::sweep_leftovers`] can recognise files of crashed runs) and
//! removed when the store is dropped. Discarded slots are hole-punched so the
//! disk space comes back. With `direct`, the file is opened `O_DIRECT`:
//! transfers bypass the host page cache (unaligned buffers go through a
//! bounce page). A short transfer is an error, never silently accepted.

use super::backend::{check_len, AlignedPage, Store};
use super::error::StoreError;
use super::occupancy::Occupancy;
use crate::page::PAGE_SIZE;
use crate::slots::Slot;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name prefix of swap files.
pub const FILE_PREFIX: &str = "swaplab-swap-";

/// A swap file.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    path: PathBuf,
    capacity: u32,
    direct: bool,
    occ: Occupancy,
}

impl FileStore {
    /// Creates a new swap file for `capacity` pages in `dir`.
    pub fn create(dir: &Path, capacity: u32, direct: bool) -> Result<Self, StoreError> {
        let pid = std::process::id();
        let mut n = 0u32;
        let (file, path) = loop {
            let path = dir.join(format!("{FILE_PREFIX}{pid}-{n}.img"));
            let mut opts = OpenOptions::new();
            opts.read(true).write(true).create_new(true);
            if direct {
                opts.custom_flags(libc::O_DIRECT);
            }
            match opts.open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
                Err(source) => return Err(StoreError::Create { path, source }),
            }
        };
        if let Err(source) = file.set_len(capacity as u64 * PAGE_SIZE as u64) {
            let _ = std::fs::remove_file(&path);
            return Err(StoreError::Create { path, source });
        }
        Ok(Self {
            file,
            path,
            capacity,
            direct,
            occ: Occupancy::new(capacity),
        })
    }

    /// Path of the swap file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn offset(slot: Slot) -> u64 {
        slot.0 as u64 * PAGE_SIZE as u64
    }

    fn needs_bounce(&self, ptr: *const u8) -> bool {
        self.direct && (ptr as usize) % PAGE_SIZE != 0
    }

    fn write_raw(&self, slot: Slot, page: &[u8]) -> Result<(), StoreError> {
        let at = Self::offset(slot);
        self.whole_page("write", slot, |done| {
            self.file.write_at(&page[done..], at + done as u64)
        })
    }

    fn read_raw(&self, slot: Slot, buf: &mut [u8]) -> Result<(), StoreError> {
        let at = Self::offset(slot);
        self.whole_page("read", slot, |done| {
            self.file.read_at(&mut buf[done..], at + done as u64)
        })
    }

    /// Repeat `io(done)` (a positional read or write of the rest of the page) until the
    /// whole page is transferred; a zero-length or (under O_DIRECT, which cannot go on at
    /// an unaligned offset) partial transfer is a short I/O error.
    fn whole_page(
        &self,
        op: &'static str,
        slot: Slot,
        mut io: impl FnMut(usize) -> std::io::Result<usize>,
    ) -> Result<(), StoreError> {
        let mut done = 0;
        while done < PAGE_SIZE {
            match io(done) {
                Ok(0) => {
                    return Err(StoreError::Short {
                        op,
                        slot: slot.0,
                        done,
                    })
                }
                Ok(n) if self.direct && n < PAGE_SIZE - done => {
                    return Err(StoreError::Short {
                        op,
                        slot: slot.0,
                        done: done + n,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        op,
                        slot: slot.0,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

impl Store for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn write(&self, slot: Slot, page: &[u8]) -> Result<(), StoreError> {
        self.occ.check(slot)?;
        check_len(page.len())?;
        if self.needs_bounce(page.as_ptr()) {
            let mut bounce = AlignedPage::boxed();
            bounce.0.copy_from_slice(page);
            self.write_raw(slot, &bounce.0)?;
        } else {
            self.write_raw(slot, page)?;
        }
        self.occ.set(slot);
        Ok(())
    }

    fn read(&self, slot: Slot, buf: &mut [u8]) -> Result<(), StoreError> {
        self.occ.check(slot)?;
        check_len(buf.len())?;
        if !self.occ.is_set(slot) {
            return Err(StoreError::Empty(slot.0));
        }
        if self.needs_bounce(buf.as_ptr()) {
            let mut bounce = AlignedPage::boxed();
            self.read_raw(slot, &mut bounce.0)?;
            buf.copy_from_slice(&bounce.0);
            Ok(())
        } else {
            self.read_raw(slot, buf)
        }
    }

    fn discard(&self, slot: Slot) {
        if self.occ.clear(slot) {
            // SAFETY: fallocate on our own file descriptor; punching a hole
            // only releases disk blocks of a slot nobody references any more.
            // Failure is harmless (the space is just not returned early).
            unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    Self::offset(slot) as libc::off_t,
                    PAGE_SIZE as libc::off_t,
                );
            }
        }
    }

    fn bytes_used(&self) -> u64 {
        self.occ.count() * PAGE_SIZE as u64
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("cannot remove swap file {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meets_store_contract_buffered_and_direct() {
        for direct in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let s = FileStore::create(dir.path(), 16, direct).unwrap();
            super::super::testutil::exercise(&s);
        }
    }

    #[test]
    fn file_is_named_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::create(dir.path(), 4, false).unwrap();
        let b = FileStore::create(dir.path(), 4, false).unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with(FILE_PREFIX), "{name}");
        let (pa, pb) = (a.path().to_owned(), b.path().to_owned());
        assert!(pa.exists());
        drop(a);
        drop(b);
        assert!(!pa.exists() && !pb.exists());
    }

    #[test]
    fn unaligned_buffers_work_with_o_direct() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::create(dir.path(), 2, true).unwrap();
        let data = super::super::testutil::page(5);
        let mut big = vec![0u8; PAGE_SIZE + 1];
        big[1..].copy_from_slice(&data);
        s.write(Slot(1), &big[1..]).unwrap();
        let mut out = vec![0u8; PAGE_SIZE + 1];
        s.read(Slot(1), &mut out[1..]).unwrap();
        assert_eq!(&out[1..], &data[..]);
    }
}
