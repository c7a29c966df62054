#![no_main]
//! `recvault::fuzz::tar` under libFuzzer; corpus in `fuzz/corpus/tar/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::tar(data));
