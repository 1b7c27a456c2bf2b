//! `swaplab-guest`: runs inside the guest image (built static). See `workloads::guest`.

fn main() {
    std::process::exit(workloads::guest::main());
}
