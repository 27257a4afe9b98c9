//! Fuzz target: the wire protocol's frame decoder, both directions (`ringlock::fuzzing::wire`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringlock::fuzzing::wire(data));
