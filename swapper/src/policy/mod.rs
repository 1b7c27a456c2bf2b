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
mod kind;
mod make;
mod members;
pub mod random;
mod rng;
mod traits;

pub use kind::{PolicyError, PolicyKind};
pub use make::{new_policy, PolicyParams};
pub use rng::Rng;
pub use traits::{Policy, Victim};

#[cfg(test)]
mod sim;
