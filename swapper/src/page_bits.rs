//! One bit per page, set and cleared from any thread: which pages are in the
//! zero-map pool, so a pool scan walks only the page tables around them
//! instead of every region from end to end ([`crate::residency`]).

use crate::page_state::PageIdx;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-size set of page indices (relaxed atomics: a reader may miss a
/// change made concurrently, which a scan tolerates — it runs again).
#[derive(Debug)]
pub(crate) struct PageBits {
    words: Box<[AtomicU64]>,
}

impl PageBits {
    /// An empty set for pages `0..pages`.
    pub(crate) fn new(pages: u32) -> Self {
        Self {
            words: (0..(pages as usize).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Adds page `idx`.
    pub(crate) fn set(&self, idx: PageIdx) {
        self.words[idx as usize / 64].fetch_or(1 << (idx % 64), Ordering::Relaxed);
    }

    /// Removes page `idx`.
    pub(crate) fn clear(&self, idx: PageIdx) {
        self.words[idx as usize / 64].fetch_and(!(1 << (idx % 64)), Ordering::Relaxed);
    }

    /// Whether page `idx` is in the set.
    #[cfg(test)]
    fn contains(&self, idx: PageIdx) -> bool {
        self.words[idx as usize / 64].load(Ordering::Relaxed) & (1 << (idx % 64)) != 0
    }

    /// The runs `[start, end)` of pages in the set within `lo..hi`, in order;
    /// runs fewer than `join` pages apart are merged into one (one page-table
    /// walk over a short gap is cheaper than a second walk).
    pub(crate) fn runs(&self, lo: PageIdx, hi: PageIdx, join: u32) -> Vec<(PageIdx, PageIdx)> {
        let mut out: Vec<(PageIdx, PageIdx)> = Vec::new();
        let mut idx = lo;
        while idx < hi {
            let word = self.words[idx as usize / 64].load(Ordering::Relaxed) >> (idx % 64);
            if word == 0 {
                // Nothing set from here to the end of this word.
                idx = (idx / 64 + 1) * 64;
                continue;
            }
            let start = idx + word.trailing_zeros();
            if start >= hi {
                break;
            }
            let mut end = start + 1;
            while end < hi {
                let w = self.words[end as usize / 64].load(Ordering::Relaxed) >> (end % 64);
                let ones = (!w).trailing_zeros().min(64 - end % 64);
                if ones == 0 {
                    break;
                }
                end = (end + ones).min(hi);
            }
            match out.last_mut() {
                Some(last) if start - last.1 < join => last.1 = end,
                _ => out.push((start, end)),
            }
            idx = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(pages: u32, set: &[PageIdx]) -> PageBits {
        let b = PageBits::new(pages);
        for &i in set {
            b.set(i);
        }
        b
    }

    #[test]
    fn set_and_clear_one_page_at_a_time() {
        let b = of(130, &[0, 63, 64, 129]);
        assert!(b.contains(63) && b.contains(64) && b.contains(129));
        b.clear(63);
        assert!(!b.contains(63) && b.contains(64));
        assert_eq!(b.runs(0, 130, 1), vec![(0, 1), (64, 65), (129, 130)]);
    }

    #[test]
    fn runs_cross_word_boundaries_and_stop_at_the_window() {
        let b = of(300, &(60..200).collect::<Vec<_>>());
        assert_eq!(b.runs(0, 300, 1), vec![(60, 200)]);
        assert_eq!(b.runs(100, 150, 1), vec![(100, 150)]);
        assert_eq!(b.runs(0, 64, 1), vec![(60, 64)]);
        assert_eq!(b.runs(200, 300, 1), vec![]);
        let full = of(128, &(0..128).collect::<Vec<_>>());
        assert_eq!(full.runs(0, 128, 1), vec![(0, 128)]);
        assert_eq!(full.runs(5, 70, 1), vec![(5, 70)]);
    }

    #[test]
    fn runs_closer_than_join_are_merged() {
        let b = of(1000, &[10, 11, 20, 500, 501, 502, 999]);
        assert_eq!(
            b.runs(0, 1000, 1),
            vec![(10, 12), (20, 21), (500, 503), (999, 1000)]
        );
        assert_eq!(b.runs(0, 1000, 9), vec![(10, 21), (500, 503), (999, 1000)]);
        assert_eq!(
            b.runs(0, 1000, 8),
            vec![(10, 12), (20, 21), (500, 503), (999, 1000)]
        );
        assert_eq!(b.runs(0, 1000, 1000), vec![(10, 1000)]);
    }

    #[test]
    fn an_empty_set_has_no_runs() {
        assert_eq!(PageBits::new(0).runs(0, 0, 64), vec![]);
        assert_eq!(PageBits::new(65).runs(0, 65, 64), vec![]);
    }
}
