#![no_main]
//! `recvault::fuzz::ftp_line` under libFuzzer; corpus in `fuzz/corpus/ftp_line/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::ftp_line(data));
