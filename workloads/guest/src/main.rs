//! `swaplab-guest`: runs inside the guest image (built static). See the
//! `swaplab_guest` library.

fn main() {
    std::process::exit(swaplab_guest::main());
}
