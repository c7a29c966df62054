//! Janus MJR recordings: the header and a packet scan.
//!
//! Layout (MJR00002): `MJR00002`, a 2-byte length, a JSON header
//! (`t` a/v/d, `c` codec, `s` created µs, `u` first frame µs), then frames of
//! `MEET`, a 4-byte received-time offset in ms, a 2-byte length and one RTP
//! packet. Legacy MJR00001 files start with `MEETECHO`, a 2-byte length and
//! the word `audio`/`video`, and their frames have no time field.
//!
//! [`scan`] reads a whole file once and summarises it (codec, packets, RTP
//! and wall-clock span, losses); it refuses, with the byte offset, what no
//! converter could use.

use std::io::Read;

use serde::Deserialize;

/// Largest JSON header accepted.
const MAX_HEADER: usize = 16 * 1024;

/// Stream kinds and summaries are part of the session index schema.
pub use crate::layout::index::{Kind, StreamSummary};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MjrError {
    #[error("not an MJR recording (byte 0 does not start MJR00002, MJR00001 or MEETECHO)")]
    NotMjr,
    #[error("bad MJR header at byte {offset}: {reason}")]
    BadHeader { offset: u64, reason: String },
    #[error("truncated at byte {offset}: {reason}")]
    Truncated { offset: u64, reason: String },
    #[error("bad frame at byte {offset}: {reason}")]
    BadFrame { offset: u64, reason: String },
    #[error("read error at byte {offset}: {reason}")]
    Io { offset: u64, reason: String },
}

/// The RTP clock rate of a codec named in an MJR header.
pub fn clock_rate(codec: &str) -> Option<u32> {
    Some(match codec {
        "opus" => 48_000,
        "pcmu" | "pcma" | "g722" => 8_000,
        "vp8" | "vp9" | "h264" | "av1" | "h265" => 90_000,
        _ => return None,
    })
}

struct Reader<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Reader<R> {
    /// Fills `buf`; `Ok(false)` on a clean end before the first byte.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<bool, MjrError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(MjrError::Truncated {
                        offset: self.offset + got as u64,
                        reason: format!("file ends inside {what}"),
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(MjrError::Io {
                        offset: self.offset + got as u64,
                        reason: e.to_string(),
                    })
                }
            }
        }
        self.offset += got as u64;
        Ok(true)
    }

    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), MjrError> {
        if self.fill(buf, what)? {
            Ok(())
        } else {
            Err(MjrError::Truncated {
                offset: self.offset,
                reason: format!("file ends before {what}"),
            })
        }
    }
}

#[derive(Deserialize)]
struct JsonHeader {
    t: String,
    c: String,
    s: Option<i64>,
    u: Option<i64>,
}

/// What an MJR header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub codec: String,
    /// `MJR00001` or `MJR00002`.
    pub format: &'static str,
    pub created_us: Option<i64>,
    pub first_frame_us: Option<i64>,
    /// RTP clock rate (Hz); 1000 for data streams.
    pub clock_rate: u32,
}

/// Reads an MJR stream frame by frame.
pub struct MjrReader<R> {
    r: Reader<R>,
    pub header: Header,
    legacy: bool,
    packet: Vec<u8>,
}

/// One frame: where it starts, when it was received (MJR00002) and its packet.
pub struct MjrFrame<'a> {
    pub offset: u64,
    pub received_ms: Option<u32>,
    pub packet: &'a [u8],
}

impl MjrFrame<'_> {
    /// The frame's RTP header; a frame that is not RTP is a bad frame.
    pub fn rtp(&self) -> Result<Rtp, MjrError> {
        Rtp::parse(self.packet).map_err(|reason| MjrError::BadFrame {
            offset: self.offset,
            reason,
        })
    }
}

impl<R: Read> MjrReader<R> {
    /// Reads and checks the header.
    pub fn open(input: R) -> Result<Self, MjrError> {
        let mut r = Reader {
            inner: input,
            offset: 0,
        };
        let mut magic = [0u8; 8];
        if !r.fill(&mut magic, "the file magic")? {
            return Err(MjrError::NotMjr);
        }
        let legacy = match &magic {
            b"MJR00002" => false,
            b"MJR00001" | b"MEETECHO" => true,
            _ => return Err(MjrError::NotMjr),
        };
        let mut len = [0u8; 2];
        r.exact(&mut len, "the header length")?;
        let hlen = u16::from_be_bytes(len) as usize;
        let header_at = r.offset;
        if hlen == 0 || hlen > MAX_HEADER {
            return Err(MjrError::BadHeader {
                offset: header_at,
                reason: format!("header length {hlen} is out of range"),
            });
        }
        let mut hbuf = vec![0u8; hlen];
        r.exact(&mut hbuf, "the header")?;
        let (kind, codec, created_us, first_frame_us) = if legacy {
            // The legacy header is just "audio" or "video"; the codec is not recorded.
            let word = String::from_utf8_lossy(&hbuf)
                .trim_end_matches('\0')
                .to_string();
            match word.as_str() {
                "audio" => (Kind::Audio, "opus".to_string(), None, None),
                "video" => (Kind::Video, "vp8".to_string(), None, None),
                other => {
                    return Err(MjrError::BadHeader {
                        offset: header_at,
                        reason: format!("legacy header names {other:?}, not audio or video"),
                    })
                }
            }
        } else {
            let h: JsonHeader = serde_json::from_slice(&hbuf).map_err(|e| MjrError::BadHeader {
                offset: header_at,
                reason: format!("header is not the expected JSON: {e}"),
            })?;
            let kind = match h.t.as_str() {
                "a" => Kind::Audio,
                "v" => Kind::Video,
                "d" => Kind::Data,
                other => {
                    return Err(MjrError::BadHeader {
                        offset: header_at,
                        reason: format!("unknown media type {other:?}"),
                    })
                }
            };
            (kind, h.c.to_ascii_lowercase(), h.s, h.u)
        };
        let clock_rate = match kind {
            Kind::Data => 1000,
            _ => clock_rate(&codec).ok_or_else(|| MjrError::BadHeader {
                offset: header_at,
                reason: format!("unsupported codec {codec:?}"),
            })?,
        };
        Ok(Self {
            r,
            header: Header {
                kind,
                codec,
                format: if legacy { "MJR00001" } else { "MJR00002" },
                created_us,
                first_frame_us,
                clock_rate,
            },
            legacy,
            packet: vec![0u8; u16::MAX as usize],
        })
    }

    /// The next frame; `None` at a clean end of the file.
    pub fn next_frame(&mut self) -> Result<Option<MjrFrame<'_>>, MjrError> {
        let r = &mut self.r;
        let offset = r.offset;
        let mut tag = [0u8; 4];
        if !r.fill(&mut tag, "a frame tag")? {
            return Ok(None);
        }
        if &tag != b"MEET" {
            return Err(MjrError::BadFrame {
                offset,
                reason: "expected a MEET frame tag".into(),
            });
        }
        let received_ms = if self.legacy {
            None
        } else {
            let mut t = [0u8; 4];
            r.exact(&mut t, "a frame's time")?;
            Some(u32::from_be_bytes(t))
        };
        let mut l = [0u8; 2];
        r.exact(&mut l, "a frame's length")?;
        let plen = u16::from_be_bytes(l) as usize;
        let body = &mut self.packet[..plen];
        r.exact(body, "a frame's packet")?;
        Ok(Some(MjrFrame {
            offset,
            received_ms,
            packet: body,
        }))
    }
}

/// Scans a whole MJR stream.
pub fn scan(input: impl Read) -> Result<StreamSummary, MjrError> {
    let mut m = MjrReader::open(input)?;
    let h = m.header.clone();
    let mut s = StreamSummary {
        kind: h.kind,
        codec: h.codec,
        format: h.format.to_string(),
        created_us: h.created_us,
        first_frame_us: h.first_frame_us,
        packets: 0,
        padding_only: 0,
        lost: 0,
        reordered: 0,
        ssrc_changes: 0,
        first_rtp: None,
        last_rtp: None,
        clock_rate: h.clock_rate,
        duration_ms: 0,
        received_span_ms: 0,
    };
    let mut seg = Segment::default();
    let mut ssrc: Option<u32> = None;
    let (mut first_recv, mut last_recv) = (None::<u32>, 0u32);
    while let Some(f) = m.next_frame()? {
        if let Some(t) = f.received_ms {
            first_recv.get_or_insert(t);
            last_recv = last_recv.max(t);
        }
        s.packets += 1;
        if h.kind == Kind::Data {
            continue;
        }
        let rtp = f.rtp()?;
        if ssrc.is_some_and(|x| x != rtp.ssrc) {
            // A new source numbers its packets afresh: close the old segment.
            s.ssrc_changes += 1;
            seg.close(&mut s);
        }
        ssrc = Some(rtp.ssrc);
        if rtp.payload_len == 0 {
            s.padding_only += 1;
        }
        let uts = seg.add(rtp.seq, rtp.timestamp, &mut s.reordered);
        s.first_rtp.get_or_insert(uts);
        s.last_rtp = Some(uts);
    }
    seg.close(&mut s);
    if let Some(first) = first_recv {
        s.received_span_ms = (last_recv - first) as u64;
    }
    Ok(s)
}

/// Packets of one SSRC: sequence and timestamp ranges after unwrapping.
#[derive(Default)]
struct Segment {
    seq: Unwrap<16>,
    ts: Unwrap<32>,
    min_seq: u64,
    max_seq: u64,
    min_ts: u64,
    max_ts: u64,
    received: u64,
}

impl Segment {
    /// Adds a packet; returns its unwrapped timestamp.
    fn add(&mut self, seq: u16, ts: u32, reordered: &mut u64) -> u64 {
        let useq = self.seq.next(seq as u64);
        let uts = self.ts.next(ts as u64);
        if self.received == 0 {
            (self.min_seq, self.max_seq, self.min_ts, self.max_ts) = (useq, useq, uts, uts);
        } else {
            if useq <= self.max_seq {
                *reordered += 1;
            }
            self.min_seq = self.min_seq.min(useq);
            self.max_seq = self.max_seq.max(useq);
            self.min_ts = self.min_ts.min(uts);
            self.max_ts = self.max_ts.max(uts);
        }
        self.received += 1;
        uts
    }

    /// Adds this segment's losses (RFC 3550: expected - received) and
    /// duration to the summary, and starts afresh.
    fn close(&mut self, s: &mut StreamSummary) {
        if self.received > 0 {
            let expected = self.max_seq - self.min_seq + 1;
            s.lost += expected.saturating_sub(self.received);
            s.duration_ms += (self.max_ts - self.min_ts) * 1000 / s.clock_rate as u64;
        }
        *self = Segment::default();
    }
}

/// Unwraps a BITS-bit counter that wraps around: each value is placed
/// within half a cycle of the previous one.
#[derive(Default)]
pub(crate) struct Unwrap<const BITS: u32> {
    last: Option<u64>,
}

impl<const BITS: u32> Unwrap<BITS> {
    pub(crate) fn next(&mut self, raw: u64) -> u64 {
        let m = 1i64 << BITS;
        let v = match self.last {
            // Start one cycle up, so that packets just before the first stay positive.
            None => raw + m as u64,
            Some(last) => {
                let mut d = raw as i64 - (last as i64 % m);
                if d > m / 2 {
                    d -= m;
                } else if d < -m / 2 {
                    d += m;
                }
                (last as i64 + d).max(0) as u64
            }
        };
        self.last = Some(v);
        v
    }
}

/// The fields of an RTP packet the scan needs.
pub struct Rtp {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Offset and length of the payload within the packet.
    pub payload_at: usize,
    pub payload_len: usize,
}

impl Rtp {
    pub fn parse(p: &[u8]) -> Result<Rtp, String> {
        if p.len() < 12 {
            return Err(format!(
                "RTP packet of {} bytes is shorter than its 12-byte header",
                p.len()
            ));
        }
        if p[0] >> 6 != 2 {
            return Err(format!("RTP version {} (expected 2)", p[0] >> 6));
        }
        let padding = p[0] & 0x20 != 0;
        let extension = p[0] & 0x10 != 0;
        let csrcs = (p[0] & 0x0f) as usize;
        let mut at = 12 + 4 * csrcs;
        if extension {
            if p.len() < at + 4 {
                return Err("RTP header extension runs past the packet".into());
            }
            let words = u16::from_be_bytes([p[at + 2], p[at + 3]]) as usize;
            at += 4 + 4 * words;
        }
        if at > p.len() {
            return Err("RTP header runs past the packet".into());
        }
        let mut end = p.len();
        if padding {
            let pad = p[p.len() - 1] as usize;
            if pad == 0 || at + pad > end {
                return Err("RTP padding length is invalid".into());
            }
            end -= pad;
        }
        Ok(Rtp {
            payload_type: p[1] & 0x7f,
            marker: p[1] & 0x80 != 0,
            seq: u16::from_be_bytes([p[2], p[3]]),
            timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            payload_at: at,
            payload_len: end - at,
        })
    }
}

/// Builds an RTP packet (version 2, no CSRCs or extension).
pub fn rtp_packet(
    payload_type: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(payload_type | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Writes an MJR00002 recording: a header for `kind`/`codec` with created and
/// first-frame times, then `(received ms, RTP packet)` frames.
pub fn write_mjr(
    kind: Kind,
    codec: &str,
    created_us: i64,
    first_frame_us: i64,
    frames: &[(u32, Vec<u8>)],
) -> Vec<u8> {
    let t = match kind {
        Kind::Audio => "a",
        Kind::Video => "v",
        Kind::Data => "d",
    };
    let header =
        serde_json::json!({"t": t, "c": codec, "s": created_us, "u": first_frame_us}).to_string();
    let mut out = b"MJR00002".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_be_bytes());
    out.extend_from_slice(header.as_bytes());
    for (ms, pkt) in frames {
        out.extend_from_slice(b"MEET");
        out.extend_from_slice(&ms.to_be_bytes());
        out.extend_from_slice(&(pkt.len() as u16).to_be_bytes());
        out.extend_from_slice(pkt);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_763_888_400_000_000;

    /// `n` Opus packets of 20 ms starting at `seq`/`ts`.
    fn opus(n: u32, seq: u16, ts: u32) -> Vec<(u32, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    i * 20,
                    rtp_packet(
                        111,
                        false,
                        seq.wrapping_add(i as u16),
                        ts.wrapping_add(i * 960),
                        7,
                        &[0xfc, 1, 2],
                    ),
                )
            })
            .collect()
    }

    fn scan_frames(frames: &[(u32, Vec<u8>)]) -> StreamSummary {
        scan(&write_mjr(Kind::Audio, "opus", T0, T0 + 5000, frames)[..]).expect("scan")
    }

    #[test]
    fn a_clean_stream() {
        let s = scan_frames(&opus(100, 1000, 5000));
        assert_eq!(
            (s.kind, s.codec.as_str(), s.format.as_str()),
            (Kind::Audio, "opus", "MJR00002")
        );
        assert_eq!(
            (s.packets, s.lost, s.reordered, s.ssrc_changes),
            (100, 0, 0, 0)
        );
        assert_eq!(s.duration_ms, 1980);
        assert_eq!(s.received_span_ms, 1980);
        assert_eq!(
            (s.created_us, s.first_frame_us),
            (Some(T0), Some(T0 + 5000))
        );
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        let s = scan_frames(&opus(200, 65_500, u32::MAX - 960 * 50));
        assert_eq!((s.packets, s.lost, s.reordered), (200, 0, 0));
        assert_eq!(s.duration_ms, 199 * 20);
    }

    #[test]
    fn losses_reordering_padding_and_ssrc_changes() {
        let mut f = opus(50, 10, 0);
        f.drain(20..25); // a burst of 5 lost packets
        f.swap(30, 31); // one reordered pair
        f.push((2000, rtp_packet(111, false, 70, 70 * 960, 7, &[]))); // padding only, after a gap of 10
        let mut other = opus(10, 40_000, 123_456);
        for (_, p) in &mut other {
            p[8..12].copy_from_slice(&99u32.to_be_bytes());
        }
        f.extend(other);
        let s = scan_frames(&f);
        assert_eq!(s.packets, 45 + 1 + 10);
        assert_eq!(
            s.lost,
            5 + 10,
            "the burst, and the gap before the padding packet"
        );
        assert_eq!(s.reordered, 1);
        assert_eq!(s.padding_only, 1);
        assert_eq!(s.ssrc_changes, 1);
    }

    #[test]
    fn unusable_files_are_refused_with_the_offset() {
        assert_eq!(scan(&b"RIFF0000garbage"[..]), Err(MjrError::NotMjr));
        assert_eq!(scan(&b""[..]), Err(MjrError::NotMjr));
        let good = write_mjr(Kind::Audio, "opus", T0, T0, &opus(3, 0, 0));
        let cut = &good[..good.len() - 5];
        match scan(cut) {
            Err(MjrError::Truncated { offset, .. }) => assert_eq!(offset as usize, cut.len()),
            other => panic!("{other:?}"),
        }
        let mut bad_json = b"MJR00002\x00\x05{nope".to_vec();
        bad_json.extend_from_slice(b"MEET");
        assert!(matches!(
            scan(&bad_json[..]),
            Err(MjrError::BadHeader { offset: 10, .. })
        ));
        let mut bad_frame = write_mjr(Kind::Audio, "opus", T0, T0, &opus(1, 0, 0));
        let at = bad_frame.len();
        bad_frame.extend_from_slice(b"JUNK\0\0\0\0\0\x01x");
        match scan(&bad_frame[..]) {
            Err(MjrError::BadFrame { offset, .. }) => assert_eq!(offset as usize, at),
            other => panic!("{other:?}"),
        }
        let not_rtp = write_mjr(Kind::Audio, "opus", T0, T0, &[(0, vec![0x40; 20])]);
        assert!(matches!(scan(&not_rtp[..]), Err(MjrError::BadFrame { .. })));
        let codec = write_mjr(Kind::Audio, "speex", T0, T0, &[]);
        assert!(matches!(scan(&codec[..]), Err(MjrError::BadHeader { .. })));
    }

    #[test]
    fn legacy_files_scan() {
        let mut f = b"MEETECHO\x00\x05audio".to_vec();
        for (_, p) in opus(10, 0, 0) {
            f.extend_from_slice(b"MEET");
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
            f.extend_from_slice(&p);
        }
        let s = scan(&f[..]).unwrap();
        assert_eq!(
            (s.format.as_str(), s.packets, s.duration_ms),
            ("MJR00001", 10, 180)
        );
    }

    #[test]
    fn g711_and_video_clock_rates() {
        let pcmu: Vec<_> = (0..51u32)
            .map(|i| {
                (
                    i * 20,
                    rtp_packet(0, false, i as u16, i * 160, 1, &[0xff; 160]),
                )
            })
            .collect();
        let s = scan(&write_mjr(Kind::Audio, "pcmu", T0, T0, &pcmu)[..]).unwrap();
        assert_eq!(s.duration_ms, 1000);
        let vp8: Vec<_> = (0..31u32)
            .map(|i| {
                (
                    i * 33,
                    rtp_packet(96, true, i as u16, i * 3000, 2, &[0x10, 0, 0]),
                )
            })
            .collect();
        let s = scan(&write_mjr(Kind::Video, "vp8", T0, T0, &vp8)[..]).unwrap();
        assert_eq!((s.kind, s.duration_ms), (Kind::Video, 1000));
    }
}
