//! Media: Janus MJR recordings and RTP. Ingest scans streams with it; the
//! derived-media renderer (MP4/MP3/WebM) will build on the same parser.

pub mod mjr;
