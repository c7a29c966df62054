#![no_main]
//! `recvault::fuzz::depacketize` under libFuzzer; corpus in `fuzz/corpus/depacketize/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::depacketize(data));
