//! `swaplab-guest`: runs inside the guest image (built static). See `workloads::guest`.
//!
//! The guest modules are compiled straight into this binary rather than used
//! through the `workloads` library, so edits elsewhere in the library do not
//! change the binary's bytes (and with them the guest image's cache key).

#[path = "../guest/mod.rs"]
#[allow(dead_code)]
mod guest;

fn main() {
    std::process::exit(guest::main());
}
