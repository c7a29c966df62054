#![no_main]
//! `recvault::fuzz::info_json` under libFuzzer; corpus in `fuzz/corpus/info_json/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::info_json(data));
