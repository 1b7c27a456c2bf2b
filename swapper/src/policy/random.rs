//! Random: evict a uniformly chosen resident page.

use super::kind::PolicyKind;
use super::rng::Rng;
use super::traits::{Policy, Victim};
use crate::page_state::PageIdx;

const ABSENT: u32 = u32::MAX;

/// Uniform random replacement.
#[derive(Debug)]
pub struct Random {
    members: Vec<PageIdx>,
    pos: Vec<u32>,
    rng: Rng,
}

impl Random {
    /// Empty set over `num_pages` pages with a seeded generator.
    pub fn new(num_pages: usize, seed: u64) -> Self {
        Self {
            members: Vec::new(),
            pos: vec![ABSENT; num_pages],
            rng: Rng::new(seed),
        }
    }

    fn insert(&mut self, page: PageIdx) {
        if self.pos[page as usize] == ABSENT {
            self.pos[page as usize] = self.members.len() as u32;
            self.members.push(page);
        }
    }

    fn remove_at(&mut self, i: usize) -> PageIdx {
        let page = self.members.swap_remove(i);
        self.pos[page as usize] = ABSENT;
        if let Some(&moved) = self.members.get(i) {
            self.pos[moved as usize] = i as u32;
        }
        page
    }
}

impl Policy for Random {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Random
    }

    fn mapped(&mut self, page: PageIdx) {
        self.insert(page);
    }

    fn removed(&mut self, page: PageIdx) {
        let i = self.pos[page as usize];
        if i != ABSENT {
            self.remove_at(i as usize);
        }
    }

    fn select(&mut self, _urgent: bool) -> Option<Victim> {
        if self.members.is_empty() {
            return None;
        }
        let i = self.rng.below(self.members.len() as u64) as usize;
        Some(Victim::Evict(self.remove_at(i)))
    }

    fn len(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_each_member_once() {
        let mut r = Random::new(100, 42);
        for p in 0..100 {
            r.mapped(p);
            r.mapped(p);
        }
        r.removed(50);
        let mut seen = std::collections::HashSet::new();
        while let Some(Victim::Evict(p)) = r.select(false) {
            assert!(seen.insert(p));
        }
        assert_eq!(seen.len(), 99);
        assert!(!seen.contains(&50));
    }

    #[test]
    fn roughly_uniform() {
        let mut counts = [0u32; 4];
        let mut r = Random::new(4, 7);
        for _ in 0..40_000 {
            for p in 0..4 {
                r.mapped(p);
            }
            if let Some(Victim::Evict(p)) = r.select(false) {
                counts[p as usize] += 1;
            }
            for p in 0..4 {
                r.removed(p);
            }
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let run = |seed| {
            let mut r = Random::new(64, seed);
            (0..64).for_each(|p| r.mapped(p));
            (0..10).map(|_| r.select(false)).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
