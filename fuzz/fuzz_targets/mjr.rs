#![no_main]
//! `recvault::fuzz::mjr` under libFuzzer; corpus in `fuzz/corpus/mjr/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::mjr(data));
