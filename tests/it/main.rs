//! Integration tests: the real `recvault` binary, over real sockets, against
//! moto's S3 server (signature checking on), with OpenSSH's `sftp`/`ssh` and
//! a russh-based protocol client. One test binary, so one build serves all.

mod attacks;
mod harness;
mod ingest;
mod listing;
mod operation;
mod protocol;
mod rawsftp;
mod sftp_openssh;
mod storage;
mod sync_tools;
