//! Building a policy of a given kind: [`new_policy`] and its [`PolicyParams`].

use super::kind::PolicyKind;
use super::traits::Policy;
use super::{clock, fifo, random};

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

/// Builds a policy.
pub fn new_policy(kind: PolicyKind, params: PolicyParams) -> Box<dyn Policy> {
    match kind {
        PolicyKind::Fifo => Box::new(fifo::Fifo::new(params.num_pages)),
        PolicyKind::Random => Box::new(random::Random::new(params.num_pages, params.seed)),
        PolicyKind::Clock => Box::new(clock::Clock::new(params.num_pages, params.inactive_target)),
    }
}
