//! [`Members`]: list membership with generations, shared by the queue-based
//! policies (fifo, clock).

use crate::page_state::PageIdx;

/// Membership with generations, so queues can delete lazily: a queue entry
/// `(page, gen)` is live only while `gen` is the page's current generation.
#[derive(Debug, Clone)]
pub(crate) struct Members {
    gen: Vec<u32>,
    list: Vec<u8>,
}

impl Members {
    pub(crate) const NONE: u8 = 0;

    pub(crate) fn new(n: usize) -> Self {
        Self {
            gen: vec![0; n],
            list: vec![Self::NONE; n],
        }
    }

    pub(crate) fn list(&self, page: PageIdx) -> u8 {
        self.list[page as usize]
    }

    /// Puts `page` on `list` and returns the generation for its queue entry.
    pub(crate) fn set(&mut self, page: PageIdx, list: u8) -> u32 {
        let i = page as usize;
        self.gen[i] = self.gen[i].wrapping_add(1);
        self.list[i] = list;
        self.gen[i]
    }

    pub(crate) fn live(&self, page: PageIdx, gen: u32, list: u8) -> bool {
        let i = page as usize;
        self.list[i] == list && self.gen[i] == gen
    }
}
