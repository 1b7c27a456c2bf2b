//! Fuzz target `balloon`: see `balloon::fuzzing::balloon`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| balloon::fuzzing::balloon(data));
