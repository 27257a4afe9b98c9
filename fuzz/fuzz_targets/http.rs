//! Fuzz target: the HTTP request parser and router (`ringlock::fuzzing::http`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringlock::fuzzing::http(data));
