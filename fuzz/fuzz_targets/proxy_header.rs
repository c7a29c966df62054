#![no_main]
//! `recvault::fuzz::proxy_header` under libFuzzer; corpus in `fuzz/corpus/proxy_header/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::proxy_header(data));
