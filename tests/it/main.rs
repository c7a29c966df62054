//! Integration tests: the real `recvault` binary, over real sockets, against
//! moto's S3 server (signature checking on), with OpenSSH's `sftp`/`ssh`, lftp, curl,
//! rclone and Python's ftplib, and russh- and rustls-based protocol clients. One test binary, so one build serves all.

mod admin;
mod api;
mod attacks;
mod browser;
mod clients;
mod crypto;
mod customer;
mod faults;
mod ftps;
mod harness;
mod ingest;
mod listing;
mod media;
mod nodes;
mod operation;
mod progressive;
mod protocol;
mod proxy;
mod ranged;
mod rawftp;
mod rawsftp;
mod sealed;
mod sftp_openssh;
mod storage;
mod sync_tools;
