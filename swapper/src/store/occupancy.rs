//! Per-slot occupancy, shared by the in-memory and file stores.

use super::error::StoreError;
use crate::slots::Slot;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Per-slot occupancy plus a running count (shared by the stores).
#[derive(Debug)]
pub(crate) struct Occupancy {
    used: Vec<AtomicBool>,
    count: AtomicU64,
}

impl Occupancy {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            used: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn check(&self, slot: Slot) -> Result<(), StoreError> {
        if slot.index() < self.used.len() {
            Ok(())
        } else {
            Err(StoreError::OutOfRange {
                slot: slot.0,
                capacity: self.used.len() as u32,
            })
        }
    }

    pub(crate) fn set(&self, slot: Slot) {
        if !self.used[slot.index()].swap(true, Ordering::AcqRel) {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Clears the slot; returns whether it was set.
    pub(crate) fn clear(&self, slot: Slot) -> bool {
        let was =
            slot.index() < self.used.len() && self.used[slot.index()].swap(false, Ordering::AcqRel);
        if was {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        was
    }

    pub(crate) fn is_set(&self, slot: Slot) -> bool {
        self.used[slot.index()].load(Ordering::Acquire)
    }

    /// The slots in use now.
    pub(crate) fn used(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.used.len() as u32).filter(|&s| self.used[s as usize].load(Ordering::Acquire))
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.used.len() as u32
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
