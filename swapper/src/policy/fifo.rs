//! FIFO: evict in the order pages became resident.

use super::kind::PolicyKind;
use super::members::Members;
use super::traits::{Policy, Victim};
use crate::page_state::PageIdx;
use std::collections::VecDeque;

const IN: u8 = 1;

/// First in, first out.
#[derive(Debug)]
pub struct Fifo {
    members: Members,
    queue: VecDeque<(PageIdx, u32)>,
    len: usize,
}

impl Fifo {
    /// Empty FIFO over `num_pages` pages.
    pub fn new(num_pages: usize) -> Self {
        Self {
            members: Members::new(num_pages),
            queue: VecDeque::new(),
            len: 0,
        }
    }

    fn insert(&mut self, page: PageIdx) {
        if self.members.list(page) == IN {
            return;
        }
        let gen = self.members.set(page, IN);
        self.queue.push_back((page, gen));
        self.len += 1;
        if self.queue.len() > 2 * self.len + 1024 {
            let m = &self.members;
            self.queue.retain(|&(p, g)| m.live(p, g, IN));
        }
    }
}

impl Policy for Fifo {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Fifo
    }

    fn mapped(&mut self, page: PageIdx) {
        self.insert(page);
    }

    fn removed(&mut self, page: PageIdx) {
        if self.members.list(page) == IN {
            self.members.set(page, Members::NONE);
            self.len -= 1;
        }
    }

    fn select(&mut self, _urgent: bool) -> Option<Victim> {
        while let Some((page, gen)) = self.queue.pop_front() {
            if self.members.live(page, gen, IN) {
                self.members.set(page, Members::NONE);
                self.len -= 1;
                return Some(Victim::Evict(page));
            }
        }
        None
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_in_insertion_order_skipping_removed() {
        let mut f = Fifo::new(10);
        for p in [3, 1, 4, 1, 5] {
            f.mapped(p);
        }
        assert_eq!(f.len(), 4);
        f.removed(1);
        assert_eq!(f.select(false), Some(Victim::Evict(3)));
        assert_eq!(f.select(false), Some(Victim::Evict(4)));
        // Re-inserted after removal: goes to the back.
        f.mapped(1);
        assert_eq!(f.select(true), Some(Victim::Evict(5)));
        assert_eq!(f.select(true), Some(Victim::Evict(1)));
        assert_eq!(f.select(true), None);
        assert!(f.is_empty());
    }

    #[test]
    fn staged_and_reactivated_keep_position() {
        let mut f = Fifo::new(4);
        f.mapped(0);
        f.mapped(1);
        f.staged(0);
        f.reactivated(0);
        assert_eq!(f.select(false), Some(Victim::Evict(0)));
    }

    #[test]
    fn queue_stays_bounded_under_churn() {
        let mut f = Fifo::new(8);
        for i in 0..100_000u32 {
            f.mapped(i % 8);
            f.removed(i % 8);
        }
        assert!(f.queue.len() <= 2 * f.len + 1024 + 1);
        assert_eq!(f.select(false), None);
    }
}
