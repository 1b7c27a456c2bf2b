//! Fuzz target `mmio`: see `vmm::fuzzing::mmio`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzzing::mmio(data));
