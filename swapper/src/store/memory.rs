//! Uncompressed in-memory store.

use super::backend::{check_len, Store};
use super::error::StoreError;
use super::occupancy::Occupancy;
use crate::page::PAGE_SIZE;
use crate::slots::Slot;
use std::sync::Mutex;

/// Copies of pages in host memory (one heap page per used slot).
#[derive(Debug)]
pub struct MemoryStore {
    slots: Vec<Mutex<Option<Box<[u8]>>>>,
    occ: Occupancy,
}

impl MemoryStore {
    /// A store with `capacity` empty slots.
    pub fn new(capacity: u32) -> Self {
        Self {
            slots: (0..capacity).map(|_| Mutex::new(None)).collect(),
            occ: Occupancy::new(capacity),
        }
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    fn write(&self, slot: Slot, page: &[u8]) -> Result<(), StoreError> {
        self.occ.check(slot)?;
        check_len(page.len())?;
        let mut s = self.slots[slot.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match s.as_mut() {
            Some(b) => b.copy_from_slice(page),
            None => *s = Some(page.into()),
        }
        self.occ.set(slot);
        Ok(())
    }

    fn read(&self, slot: Slot, buf: &mut [u8]) -> Result<(), StoreError> {
        self.occ.check(slot)?;
        check_len(buf.len())?;
        let s = self.slots[slot.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let data = s.as_ref().ok_or(StoreError::Empty(slot.0))?;
        buf.copy_from_slice(data);
        Ok(())
    }

    fn discard(&self, slot: Slot) {
        if self.occ.clear(slot) {
            *self.slots[slot.index()]
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = None;
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
    fn meets_store_contract() {
        super::super::testutil::exercise(&MemoryStore::new(16));
    }
}
