#![no_main]
//! `recvault::fuzz::sftp_packet` under libFuzzer; corpus in `fuzz/corpus/sftp_packet/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| recvault::fuzz::sftp_packet(data));
