//! Fuzz target `blk_request`: see `vmm::fuzzing::blk_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzzing::blk_request(data));
