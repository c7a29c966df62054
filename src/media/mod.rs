//! Media: Janus MJR recordings and RTP. Ingest scans streams with it; the
//! derived-media renderer (MP4/MP3/WebM) builds on the same parser, the
//! depacketizers and the container writers.

pub mod container;
pub mod depacketize;
#[doc(hidden)]
pub mod fixture;
pub mod g722;
pub mod lease;
pub mod mjr;
pub mod order;
pub mod packetize;
pub mod producer;
pub mod raw;
pub mod render;
pub mod spill;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
