//! Fuzz target `virtqueue`: see `vmm::fuzzing::virtqueue`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzzing::virtqueue(data));
