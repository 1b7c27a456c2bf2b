//! lz4-compressed in-memory store (what zram does, in userspace).

use super::backend::{check_len, Store};
use super::error::StoreError;
use super::occupancy::Occupancy;
use crate::page::PAGE_SIZE;
use crate::slots::Slot;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A stored page: compressed, or raw when lz4 does not shrink it.
#[derive(Debug)]
enum Blob {
    Lz4(Box<[u8]>),
    Raw(Box<[u8]>),
}

impl Blob {
    fn len(&self) -> usize {
        match self {
            Self::Lz4(b) | Self::Raw(b) => b.len(),
        }
    }
}

/// Compressed copies of pages in host memory.
#[derive(Debug)]
pub struct Lz4Store {
    slots: Vec<Mutex<Option<Blob>>>,
    occ: Occupancy,
    bytes: AtomicU64,
}

impl Lz4Store {
    /// A store with `capacity` empty slots.
    pub fn new(capacity: u32) -> Self {
        Self {
            slots: (0..capacity).map(|_| Mutex::new(None)).collect(),
            occ: Occupancy::new(capacity),
            bytes: AtomicU64::new(0),
        }
    }

    fn replace(&self, slot: Slot, blob: Option<Blob>) {
        let new_len = blob.as_ref().map_or(0, Blob::len) as u64;
        let old = std::mem::replace(
            &mut *self.slots[slot.index()]
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            blob,
        );
        let old_len = old.as_ref().map_or(0, Blob::len) as u64;
        self.bytes.fetch_add(new_len, Ordering::Relaxed);
        self.bytes.fetch_sub(old_len, Ordering::Relaxed);
    }
}

impl Store for Lz4Store {
    fn kind(&self) -> &'static str {
        "lz4"
    }

    fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    fn write(&self, slot: Slot, page: &[u8]) -> Result<(), StoreError> {
        self.occ.check(slot)?;
        check_len(page.len())?;
        let compressed = lz4_flex::block::compress(page);
        let blob = if compressed.len() < PAGE_SIZE {
            Blob::Lz4(compressed.into_boxed_slice())
        } else {
            Blob::Raw(page.into())
        };
        self.replace(slot, Some(blob));
        self.occ.set(slot);
        Ok(())
    }

    fn read(&self, slot: Slot, buf: &mut [u8]) -> Result<(), StoreError> {
        self.occ.check(slot)?;
        check_len(buf.len())?;
        let s = self.slots[slot.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match s.as_ref().ok_or(StoreError::Empty(slot.0))? {
            Blob::Raw(b) => buf.copy_from_slice(b),
            Blob::Lz4(b) => {
                let n =
                    lz4_flex::block::decompress_into(b, buf).map_err(|e| StoreError::Corrupt {
                        slot: slot.0,
                        reason: e.to_string(),
                    })?;
                if n != PAGE_SIZE {
                    return Err(StoreError::Corrupt {
                        slot: slot.0,
                        reason: format!("decompressed to {n} bytes"),
                    });
                }
            }
        }
        Ok(())
    }

    fn discard(&self, slot: Slot) {
        if self.occ.clear(slot) {
            self.replace(slot, None);
        }
    }

    fn bytes_used(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meets_store_contract() {
        super::super::testutil::exercise(&Lz4Store::new(16));
    }

    #[test]
    fn compresses_compressible_and_keeps_random_raw() {
        let s = Lz4Store::new(4);
        let mut text = vec![0u8; PAGE_SIZE];
        for (i, b) in text.iter_mut().enumerate() {
            *b = b"swaplab "[i % 8];
        }
        s.write(Slot(0), &text).unwrap();
        let small = s.bytes_used();
        assert!(small < 200, "{small}");
        let mut x = 0x1234_5678_9abc_def1u64;
        let random: Vec<u8> = (0..PAGE_SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        s.write(Slot(1), &random).unwrap();
        assert_eq!(s.bytes_used(), small + PAGE_SIZE as u64);
        let mut buf = vec![0u8; PAGE_SIZE];
        s.read(Slot(0), &mut buf).unwrap();
        assert_eq!(buf, text);
        s.read(Slot(1), &mut buf).unwrap();
        assert_eq!(buf, random);
        // Overwriting accounts the new size only.
        s.write(Slot(1), &text).unwrap();
        assert_eq!(s.bytes_used(), 2 * small);
    }
}
