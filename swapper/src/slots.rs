//! Slot allocator: a bitmap of fixed-size slots with a next-fit cursor.
//!
//! Used twice: for the backing store (one slot = one page of the swap file /
//! one entry of the in-memory stores) and for the staging area (one slot =
//! one page of swapper-owned memory that holds pages moved aside).
//!
//! Next-fit (the cursor keeps moving forward and wraps) keeps consecutive
//! evictions in consecutive slots, so pages evicted in guest order stay in
//! store order (VSwapper's "decayed swap sequentiality" is then only caused by
//! the eviction order, not by the allocator).
//!
//! Pure data structure: no I/O, no locking (callers wrap it in a mutex).

use thiserror::Error;

/// Index of one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u32);

impl Slot {
    /// The slot index as `usize`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Errors of the slot allocator.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SlotError {
    /// The slot index is beyond the allocator capacity.
    #[error("slot {0} is out of range (capacity {1})")]
    OutOfRange(u32, u32),
    /// The slot was not allocated.
    #[error("slot {0} freed twice")]
    DoubleFree(u32),
}

/// Bitmap slot allocator (1 bit per slot).
#[derive(Debug, Clone)]
pub struct SlotAllocator {
    words: Vec<u64>,
    capacity: u32,
    used: u32,
    cursor: u32,
}

impl SlotAllocator {
    /// An allocator with `capacity` free slots.
    pub fn new(capacity: u32) -> Self {
        Self {
            words: vec![0; (capacity as usize).div_ceil(64)],
            capacity,
            used: 0,
            cursor: 0,
        }
    }

    /// Total number of slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Number of allocated slots.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// Number of free slots.
    pub fn free_count(&self) -> u32 {
        self.capacity - self.used
    }

    /// Whether `slot` is currently allocated.
    pub fn is_allocated(&self, slot: Slot) -> bool {
        slot.0 < self.capacity && self.words[slot.index() / 64] & (1 << (slot.0 % 64)) != 0
    }

    /// Allocates the next free slot at or after the cursor (wrapping).
    pub fn alloc(&mut self) -> Option<Slot> {
        if self.used == self.capacity {
            return None;
        }
        let nwords = self.words.len();
        let start_word = (self.cursor / 64) as usize;
        // `step == nwords` revisits the start word without the cursor mask, so
        // free bits before the cursor in that word are found too.
        for step in 0..=nwords {
            let w = (start_word + step) % nwords;
            let mut free = !self.words[w];
            if step == 0 {
                // On the first word only look at bits at or after the cursor.
                free &= u64::MAX << (self.cursor % 64);
            }
            if w == nwords - 1 && self.capacity % 64 != 0 {
                free &= (1u64 << (self.capacity % 64)) - 1;
            }
            if free != 0 {
                let bit = free.trailing_zeros();
                let idx = w as u32 * 64 + bit;
                self.words[w] |= 1 << bit;
                self.used += 1;
                self.cursor = (idx + 1) % self.capacity;
                return Some(Slot(idx));
            }
        }
        None
    }

    /// Allocates exactly `slot` if it is free.
    pub fn alloc_at(&mut self, slot: Slot) -> Result<bool, SlotError> {
        if slot.0 >= self.capacity {
            return Err(SlotError::OutOfRange(slot.0, self.capacity));
        }
        if self.is_allocated(slot) {
            return Ok(false);
        }
        self.words[slot.index() / 64] |= 1 << (slot.0 % 64);
        self.used += 1;
        Ok(true)
    }

    /// Returns `slot` to the free pool.
    pub fn free(&mut self, slot: Slot) -> Result<(), SlotError> {
        if slot.0 >= self.capacity {
            return Err(SlotError::OutOfRange(slot.0, self.capacity));
        }
        if !self.is_allocated(slot) {
            return Err(SlotError::DoubleFree(slot.0));
        }
        self.words[slot.index() / 64] &= !(1 << (slot.0 % 64));
        self.used -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_sequentially_then_exhausts() {
        let mut a = SlotAllocator::new(130);
        for i in 0..130 {
            assert_eq!(a.alloc(), Some(Slot(i)));
        }
        assert_eq!(a.alloc(), None);
        assert_eq!(a.used(), 130);
        assert_eq!(a.free_count(), 0);
    }

    #[test]
    fn next_fit_wraps_to_freed_slots() {
        let mut a = SlotAllocator::new(70);
        for _ in 0..70 {
            a.alloc().unwrap();
        }
        a.free(Slot(3)).unwrap();
        a.free(Slot(65)).unwrap();
        // Cursor is at the end (wrapped to 0): first free slot from 0 is 3.
        assert_eq!(a.alloc(), Some(Slot(3)));
        assert_eq!(a.alloc(), Some(Slot(65)));
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn free_before_cursor_in_same_word_is_found() {
        let mut a = SlotAllocator::new(10);
        for _ in 0..10 {
            a.alloc().unwrap();
        }
        a.free(Slot(1)).unwrap();
        a.free(Slot(8)).unwrap();
        assert_eq!(a.alloc(), Some(Slot(1)));
        // Cursor now at 2: the next free slot is 8.
        assert_eq!(a.alloc(), Some(Slot(8)));
        a.free(Slot(0)).unwrap();
        // Cursor at 9, only slot 0 free (before the cursor, same word).
        assert_eq!(a.alloc(), Some(Slot(0)));
    }

    #[test]
    fn double_free_and_out_of_range_are_errors() {
        let mut a = SlotAllocator::new(4);
        let s = a.alloc().unwrap();
        a.free(s).unwrap();
        assert_eq!(a.free(s), Err(SlotError::DoubleFree(0)));
        assert_eq!(a.free(Slot(4)), Err(SlotError::OutOfRange(4, 4)));
        assert_eq!(a.alloc_at(Slot(9)), Err(SlotError::OutOfRange(9, 4)));
    }

    #[test]
    fn alloc_at_reserves_exact_slot() {
        let mut a = SlotAllocator::new(8);
        assert_eq!(a.alloc_at(Slot(5)), Ok(true));
        assert_eq!(a.alloc_at(Slot(5)), Ok(false));
        assert!(a.is_allocated(Slot(5)));
        let got: Vec<_> = (0..7).map(|_| a.alloc().unwrap().0).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 6, 7]);
    }

    #[test]
    fn random_alloc_free_keeps_counts_consistent() {
        let mut a = SlotAllocator::new(1000);
        let mut live = std::collections::BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 != 0 {
                if let Some(s) = a.alloc() {
                    assert!(live.insert(s.0), "slot handed out twice");
                }
            } else if let Some(&s) = live.iter().nth((x as usize / 3) % live.len().max(1)) {
                live.remove(&s);
                a.free(Slot(s)).unwrap();
            }
            assert_eq!(a.used() as usize, live.len());
        }
    }
}
