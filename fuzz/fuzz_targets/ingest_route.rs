#![no_main]
//! `recvault::fuzz::ingest_route` under libFuzzer; corpus in `fuzz/corpus/ingest_route/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::ingest_route(data));
