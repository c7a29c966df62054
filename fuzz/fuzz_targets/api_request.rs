#![no_main]
//! `recvault::fuzz::api_request` under libFuzzer; corpus in `fuzz/corpus/api_request/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::api_request(data));
