//! Swap-file store: slot `n` lives at byte offset `n * 4096` of a sparse file.
//!
//! The file holds guest memory, so it is private from the start: created
//! `O_TMPFILE` with mode 0600 (it never has a name, and even a SIGKILL leaves
//! nothing behind); on a filesystem without `O_TMPFILE` (9p, some FUSE) it is
//! created `O_EXCL|O_NOFOLLOW` with mode 0600 as `swaplab-swap-<pid>-<n>.img`
//! and unlinked at once. Discarded slots are hole-punched so the
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
    /// Creates a new swap file for `capacity` pages in `dir`, private and
    /// without a name (see the module documentation).
    pub fn create(dir: &Path, capacity: u32, direct: bool) -> Result<Self, StoreError> {
        let direct_flag = if direct { libc::O_DIRECT } else { 0 };
        let tmp = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | direct_flag)
            .open(dir);
        let file = match tmp {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                Self::create_unlinked(dir, direct_flag)?
            }
            Err(source) => {
                return Err(StoreError::Create {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        if let Err(source) = file.set_len(capacity as u64 * PAGE_SIZE as u64) {
            return Err(StoreError::Create {
                path: dir.to_path_buf(),
                source,
            });
        }
        Ok(Self {
            file,
            path: dir.to_path_buf(),
            capacity,
            direct,
            occ: Occupancy::new(capacity),
        })
    }

    /// A new 0600 file in `dir` under a fresh name, unlinked as soon as it is open.
    fn create_unlinked(dir: &Path, flags: i32) -> Result<File, StoreError> {
        let pid = std::process::id();
        for n in 0..10_000u32 {
            let path = dir.join(format!("{FILE_PREFIX}{pid}-{n}.img"));
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | flags)
                .open(&path);
            match opened {
                Ok(f) => {
                    return match std::fs::remove_file(&path) {
                        Ok(()) => Ok(f),
                        Err(source) => Err(StoreError::Create { path, source }),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(StoreError::Create { path, source }),
            }
        }
        Err(StoreError::Create {
            path: dir.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::EEXIST),
        })
    }

    /// The directory the (nameless) swap file lives in.
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
    fn the_file_is_private_and_has_no_name() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::create(dir.path(), 4, false).unwrap();
        let b = FileStore::create(dir.path(), 4, false).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        for s in [&a, &b] {
            let meta = s.file.metadata().unwrap();
            assert_eq!(meta.mode() & 0o777, 0o600);
            assert_eq!(meta.nlink(), 0, "the file has no name");
            assert_eq!(meta.len(), 4 * PAGE_SIZE as u64);
        }
        let fallback = FileStore::create_unlinked(dir.path(), 0).unwrap();
        assert_eq!(fallback.metadata().unwrap().mode() & 0o777, 0o600);
        assert_eq!(fallback.metadata().unwrap().nlink(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
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
