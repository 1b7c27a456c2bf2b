//! Fuzz target `frames`: see `sandbox::fuzzing::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandbox::fuzzing::frames(data));
