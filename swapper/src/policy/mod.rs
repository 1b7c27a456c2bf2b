//! Eviction policies (pure: they only see page indices and events).
//!
//! A policy tracks the pages that hold real memory (resident or staged; zero-map
//! pool pages are not tracked until a scan finds them written) and answers
//! "which page next?". The swapper core tells it what happened:
//! [`Policy::mapped`] (a page became resident and mapped), [`Policy::staged`]
//! (a page sits unmapped in the staging area: moved aside by the clock, or
//! prefetched), [`Policy::reactivated`] (a fault hit a page moved aside by the
//! clock: a *software reference bit*), and [`Policy::removed`].
//!
//! How each decides:
//! - [`fifo`]: evicts in the order pages became resident. Access-blind.
//! - [`random`]: evicts a uniformly random resident page (what VMware ESX used
//!   for its uncooperative host swapping). Access-blind.
//! - [`clock`]: second-chance CLOCK whose reference bits are observed by
//!   unmapping. The hand walks the active pages in FIFO order; a page whose
//!   reference counter is non-zero has it decremented and is skipped, a page at
//!   zero is *deactivated*: the core moves it out of the guest mapping into
//!   staging memory with `UFFDIO_MOVE` (no copy, no I/O). Pages evicted to the
//!   store are taken from the head of that inactive list; a guest access to an
//!   inactive page is a cheap minor fault (`UFFDIO_MOVE` back) that counts as a
//!   reference: the counter is set to [`clock::MAX_REFS`] (7) and the page goes
//!   back to the tail of the active ring. A hot page thus survives eight
//!   revolutions of the hand per minor fault, and the store only sees pages
//!   that were not touched during a whole trip through the inactive list
//!   (default length: limit / 8). In a simulation of a 90/10 pattern over 4x
//!   the limit this costs 0.65x fifo's major faults plus 0.11x in minor faults.
//!
//! `select` removes the page it returns from the policy; if the core cannot
//! act on it (page busy, move refused) it hands it back with `mapped`/`staged`.

pub mod clock;
pub mod fifo;
pub mod random;

use crate::page_state::PageIdx;
use thiserror::Error;

/// Which policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// First in, first out.
    Fifo,
    /// Uniform random.
    Random,
    /// Second-chance clock with software reference bits.
    Clock,
}

impl PolicyKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::Random => "random",
            Self::Clock => "clock",
        }
    }
}

/// Errors of this module.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Unknown policy name.
    #[error("unknown policy {0:?} (expected fifo, random or clock)")]
    Unknown(String),
}

impl std::str::FromStr for PolicyKind {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fifo" => Ok(Self::Fifo),
            "random" => Ok(Self::Random),
            "clock" => Ok(Self::Clock),
            other => Err(PolicyError::Unknown(other.to_string())),
        }
    }
}

/// What to do with the selected page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Victim {
    /// Write it to the store (unless clean) and free its memory.
    Evict(PageIdx),
    /// Move it out of the guest mapping into staging (clock only).
    Deactivate(PageIdx),
}

/// Tunables shared by the policies.
#[derive(Clone, Copy, Debug)]
pub struct PolicyParams {
    /// Number of pages the policy may have to track.
    pub num_pages: usize,
    /// Clock: target length of the inactive list.
    pub inactive_target: usize,
    /// Random: PRNG seed.
    pub seed: u64,
}

/// An eviction policy.
pub trait Policy: Send {
    /// Which policy this is.
    fn kind(&self) -> PolicyKind;
    /// `page` is resident and mapped (new, or back from staging without a
    /// reference: prefetch hit, failed eviction).
    fn mapped(&mut self, page: PageIdx);
    /// `page` sits in staging (moved aside or prefetched). Access-blind policies
    /// treat it like any resident page.
    fn staged(&mut self, page: PageIdx) {
        self.mapped(page);
    }
    /// A fault hit `page` while it was moved aside: it was referenced. Access-blind
    /// policies ignore the reference and treat it like a newly mapped page.
    fn reactivated(&mut self, page: PageIdx) {
        self.mapped(page);
    }
    /// `page` left the resident set (evicted elsewhere, discarded, zeroed).
    fn removed(&mut self, page: PageIdx);
    /// The next page to act on; `urgent` asks for an eviction now (a fault is
    /// waiting for room) rather than a deactivation.
    fn select(&mut self, urgent: bool) -> Option<Victim>;
    /// Number of tracked pages.
    fn len(&self) -> usize;
    /// Whether no page is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds a policy.
pub fn new_policy(kind: PolicyKind, params: PolicyParams) -> Box<dyn Policy> {
    match kind {
        PolicyKind::Fifo => Box::new(fifo::Fifo::new(params.num_pages)),
        PolicyKind::Random => Box::new(random::Random::new(params.num_pages, params.seed)),
        PolicyKind::Clock => Box::new(clock::Clock::new(params.num_pages, params.inactive_target)),
    }
}

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

/// Deterministic xorshift64* generator (per policy instance; no global state).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x2545_f491_4f6c_dd1d
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod sim;
