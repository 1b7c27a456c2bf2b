//! Fuzz target `scenario`: see `scenario::fuzzing::reader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scenario::fuzzing::reader(data));
