#![no_main]
//! `recvault::fuzz::config` under libFuzzer; corpus in `fuzz/corpus/config/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::config(data));
