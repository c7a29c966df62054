#![no_main]
//! `recvault::fuzz::path` under libFuzzer; corpus in `fuzz/corpus/path/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::path(data));
