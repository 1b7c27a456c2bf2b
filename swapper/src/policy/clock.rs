//! Second-chance CLOCK with software reference bits (see the module docs of
//! [`crate::policy`] for how it decides).

use super::kind::PolicyKind;
use super::members::Members;
use super::traits::{Policy, Victim};
use crate::page_state::PageIdx;
use std::collections::VecDeque;

const ACTIVE: u8 = 1;
const INACTIVE: u8 = 2;
/// Value of the reference counter after a reference (a minor fault on an
/// inactive page): the page is skipped by this many revolutions of the hand.
pub const MAX_REFS: u8 = 7;

/// CLOCK over an active ring (mapped pages) and an inactive FIFO (pages
/// moved aside into staging).
#[derive(Debug)]
pub struct Clock {
    members: Members,
    refs: Vec<u8>,
    active: VecDeque<(PageIdx, u32)>,
    inactive: VecDeque<(PageIdx, u32)>,
    active_len: usize,
    inactive_len: usize,
    inactive_target: usize,
}

impl Clock {
    /// Empty clock over `num_pages`, keeping up to `inactive_target` pages
    /// moved aside.
    pub fn new(num_pages: usize, inactive_target: usize) -> Self {
        Self {
            members: Members::new(num_pages),
            refs: vec![0; num_pages],
            active: VecDeque::new(),
            inactive: VecDeque::new(),
            active_len: 0,
            inactive_len: 0,
            inactive_target: inactive_target.max(1),
        }
    }

    /// Number of pages on the inactive list.
    pub fn inactive_len(&self) -> usize {
        self.inactive_len
    }

    /// Reference counter of `page`.
    pub fn refs(&self, page: PageIdx) -> u8 {
        self.refs[page as usize]
    }

    fn unlink(&mut self, page: PageIdx) {
        match self.members.list(page) {
            ACTIVE => self.active_len -= 1,
            INACTIVE => self.inactive_len -= 1,
            _ => return,
        }
        self.members.set(page, Members::NONE);
    }

    fn push_active(&mut self, page: PageIdx) {
        let gen = self.members.set(page, ACTIVE);
        self.active.push_back((page, gen));
        self.active_len += 1;
        self.compact();
    }

    fn compact(&mut self) {
        let m = &self.members;
        if self.active.len() > 2 * self.active_len + 1024 {
            self.active.retain(|&(p, g)| m.live(p, g, ACTIVE));
        }
        if self.inactive.len() > 2 * self.inactive_len + 1024 {
            self.inactive.retain(|&(p, g)| m.live(p, g, INACTIVE));
        }
    }

    fn pop_inactive(&mut self) -> Option<PageIdx> {
        while let Some((page, gen)) = self.inactive.pop_front() {
            if self.members.live(page, gen, INACTIVE) {
                self.unlink(page);
                return Some(page);
            }
        }
        None
    }

    /// Advances the hand to the first active page with no references left,
    /// decrementing the counters it passes.
    fn sweep(&mut self) -> Option<PageIdx> {
        // Every live entry is visited at most MAX_REFS + 1 times.
        let bound = self.active.len() * (MAX_REFS as usize + 2);
        for _ in 0..bound {
            let (page, gen) = self.active.pop_front()?;
            if !self.members.live(page, gen, ACTIVE) {
                continue;
            }
            let r = &mut self.refs[page as usize];
            if *r > 0 {
                *r -= 1;
                self.active.push_back((page, gen));
            } else {
                self.unlink(page);
                return Some(page);
            }
        }
        None
    }
}

impl Policy for Clock {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Clock
    }

    fn mapped(&mut self, page: PageIdx) {
        match self.members.list(page) {
            ACTIVE => {}
            INACTIVE => {
                self.unlink(page);
                self.push_active(page);
            }
            _ => {
                self.refs[page as usize] = 0;
                self.push_active(page);
            }
        }
    }

    fn staged(&mut self, page: PageIdx) {
        if self.members.list(page) != Members::NONE {
            self.unlink(page);
        } else {
            self.refs[page as usize] = 0;
        }
        let gen = self.members.set(page, INACTIVE);
        self.inactive.push_back((page, gen));
        self.inactive_len += 1;
        self.compact();
    }

    fn reactivated(&mut self, page: PageIdx) {
        let r = &mut self.refs[page as usize];
        *r = MAX_REFS;
        if self.members.list(page) != ACTIVE {
            self.unlink(page);
            self.push_active(page);
        }
    }

    fn removed(&mut self, page: PageIdx) {
        self.unlink(page);
    }

    fn select(&mut self, urgent: bool) -> Option<Victim> {
        let evict_now = self.inactive_len > 0
            && (urgent || self.inactive_len >= self.inactive_target || self.active_len == 0);
        if evict_now {
            if let Some(p) = self.pop_inactive() {
                return Some(Victim::Evict(p));
            }
        }
        if let Some(p) = self.sweep() {
            return Some(Victim::Deactivate(p));
        }
        self.pop_inactive().map(Victim::Evict)
    }

    fn len(&self) -> usize {
        self.active_len + self.inactive_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deactivates_until_target_then_evicts_inactive_head() {
        let mut c = Clock::new(16, 2);
        for p in 0..4 {
            c.mapped(p);
        }
        assert_eq!(c.select(false), Some(Victim::Deactivate(0)));
        c.staged(0);
        assert_eq!(c.select(false), Some(Victim::Deactivate(1)));
        c.staged(1);
        // Inactive list at target: evict its oldest page.
        assert_eq!(c.select(false), Some(Victim::Evict(0)));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn urgent_prefers_inactive() {
        let mut c = Clock::new(8, 4);
        c.mapped(0);
        c.mapped(1);
        assert_eq!(c.select(false), Some(Victim::Deactivate(0)));
        c.staged(0);
        assert_eq!(c.select(true), Some(Victim::Evict(0)));
        // Nothing inactive: even urgent requests deactivate first.
        assert_eq!(c.select(true), Some(Victim::Deactivate(1)));
    }

    #[test]
    fn referenced_pages_get_second_chances() {
        let mut c = Clock::new(8, 8);
        c.mapped(0);
        c.mapped(1);
        assert_eq!(c.select(false), Some(Victim::Deactivate(0)));
        c.staged(0);
        // Touched while inactive: back to the active tail, fully referenced.
        c.reactivated(0);
        assert_eq!(c.refs(0), MAX_REFS);
        assert_eq!(c.inactive_len(), 0);
        // Hand passes 1 (refs 0) first.
        assert_eq!(c.select(false), Some(Victim::Deactivate(1)));
        c.staged(1);
        // Then 0 is skipped MAX_REFS times before it is taken.
        assert_eq!(c.select(false), Some(Victim::Deactivate(0)));
        assert_eq!(c.refs(0), 0);
    }

    #[test]
    fn hot_page_outlives_cold_pages() {
        let mut c = Clock::new(8, 1);
        c.mapped(0);
        c.reactivated(0);
        for p in 1..4 {
            c.mapped(p);
        }
        // The three cold pages go first, even though page 0 is older.
        let order: Vec<_> = (0..4)
            .map(|_| match c.select(false) {
                Some(Victim::Deactivate(p)) => p,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(order, vec![1, 2, 3, 0]);
    }

    #[test]
    fn prefetched_pages_are_inactive_and_hits_do_not_reference() {
        let mut c = Clock::new(8, 4);
        c.staged(5);
        assert_eq!(c.inactive_len(), 1);
        c.mapped(5);
        assert_eq!(c.refs(5), 0);
        assert_eq!(c.inactive_len(), 0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn removed_pages_are_never_selected() {
        let mut c = Clock::new(8, 1);
        c.mapped(0);
        c.mapped(1);
        c.staged(2);
        c.removed(2);
        c.removed(0);
        assert_eq!(c.select(true), Some(Victim::Deactivate(1)));
        assert_eq!(c.select(true), None);
    }
}
