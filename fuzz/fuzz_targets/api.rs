//! Fuzz target `api`: see `vmm::fuzzing::api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzzing::api(data));
