//! `swaplab-guest`: runs inside the guest image (built static). See `workloads::guest`.
//!
//! The guest modules, and the probe's pattern generator they share with the probe
//! guests, are compiled straight into this binary rather than used through the
//! `workloads` library, so edits elsewhere in the library do not change the binary's
//! bytes (and with them the guest image's cache key).

#[path = "../guest/mod.rs"]
#[allow(dead_code)]
mod guest;

// The parts of `workloads::probe` the guest programs use, reachable at the same
// paths as in the library (`crate::probe::pattern`, ...).
#[path = "../probe/pattern.rs"]
#[allow(dead_code)]
mod pattern;
#[path = "../probe/rng.rs"]
#[allow(dead_code)]
mod rng;
#[path = "../probe/zipf.rs"]
#[allow(dead_code)]
mod zipf;
mod probe {
    pub(crate) use super::{pattern, rng};
}

fn main() {
    std::process::exit(guest::main());
}
