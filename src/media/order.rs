//! From an MJR recording to its RTP packets in play order: sequence numbers
//! and timestamps unwrapped (16- and 32-bit wrap-around), a new SSRC placed
//! after the old one by its received time, padding-only packets and
//! duplicates dropped, reordered packets put back in sequence. Gaps in the
//! resulting sequence numbers are losses; the depacketizers handle them.

use std::io::Read;

use super::depacketize::Packet;
use super::mjr::{Header, Kind, MjrError, MjrReader, Unwrap};

/// One stream of a recording, ready to depacketize.
#[derive(Debug)]
pub struct Stream {
    pub header: Header,
    /// In sequence order, each sequence number once.
    pub packets: Vec<Packet>,
    /// Extended timestamp of the first packet in the file: the one the
    /// header's first-frame time `u` describes.
    pub first_ts: Option<u64>,
    pub padding_dropped: u64,
    pub duplicates_dropped: u64,
    pub ssrc_changes: u64,
}

impl Stream {
    /// Microseconds from the header's first-frame time to the frame at
    /// extended timestamp `ts` (negative for reordered packets sent earlier).
    pub fn offset_us(&self, ts: u64) -> i64 {
        let first = self.first_ts.unwrap_or(ts) as i64;
        (ts as i64 - first) * 1_000_000 / self.header.clock_rate.max(1) as i64
    }

    /// Wall-clock time (µs since the epoch) of the frame at `ts`: the
    /// header's first-frame time (or creation time, or `fallback_us` when
    /// the recording has neither) plus the RTP clock's offset.
    pub fn wall_us(&self, ts: u64, fallback_us: i64) -> i64 {
        let u = self.header.first_frame_us.or(self.header.created_us);
        u.unwrap_or(fallback_us) + self.offset_us(ts)
    }
}

/// One SSRC's numbering, mapped onto the stream's continuous numbering.
struct Segment {
    ssrc: u32,
    seq: Unwrap<16>,
    ts: Unwrap<32>,
    seq_shift: i64,
    ts_shift: i64,
}

/// Reads a whole recording (data streams give no packets).
pub fn read_stream(input: impl Read) -> Result<Stream, MjrError> {
    let mut m = MjrReader::open(input)?;
    let header = m.header.clone();
    let clock = header.clock_rate as i64;
    let mut out = Stream {
        header,
        packets: Vec::new(),
        first_ts: None,
        padding_dropped: 0,
        duplicates_dropped: 0,
        ssrc_changes: 0,
    };
    let data = out.header.kind == Kind::Data;
    let mut seg: Option<Segment> = None;
    let (mut max_seq, mut max_ts, mut last_recv) = (0i64, 0i64, None::<u32>);
    while let Some(f) = m.next_frame()? {
        if data {
            continue;
        }
        let rtp = f.rtp()?;
        let new_source = seg.as_ref().is_none_or(|s| s.ssrc != rtp.ssrc);
        let change = new_source && seg.is_some();
        if new_source {
            seg = Some(Segment {
                ssrc: rtp.ssrc,
                seq: Unwrap::default(),
                ts: Unwrap::default(),
                seq_shift: 0,
                ts_shift: 0,
            });
        }
        let s = seg.as_mut().expect("set above");
        let useq = s.seq.next(rtp.seq as u64) as i64;
        let uts = s.ts.next(rtp.timestamp as u64) as i64;
        if change {
            out.ssrc_changes += 1;
            // Continue the numbering; place the new source by how much
            // later it was received than the old one's last packet.
            let gap_ms = match (last_recv, f.received_ms) {
                (Some(a), Some(b)) => b.saturating_sub(a) as i64,
                _ => 20,
            };
            s.seq_shift = max_seq + 1 - useq;
            s.ts_shift = max_ts + (gap_ms * clock / 1000).max(1) - uts;
        }
        let seq = (useq + s.seq_shift).max(0);
        let ts = (uts + s.ts_shift).max(0);
        max_seq = max_seq.max(seq);
        max_ts = max_ts.max(ts);
        out.first_ts.get_or_insert(ts as u64);
        // Padding-only packets stay until sorting (their sequence numbers
        // are taken out afterwards, so they do not look like losses).
        let payload = f
            .packet
            .get(rtp.payload_at..rtp.payload_at + rtp.payload_len)
            .unwrap_or_default()
            .to_vec();
        out.packets.push(Packet {
            seq: seq as u64,
            ts: ts as u64,
            marker: rtp.marker,
            payload,
        });
        if f.received_ms.is_some() {
            last_recv = f.received_ms;
        }
    }
    // Sequence order; a duplicate keeps its first copy (stable sort).
    out.packets.sort_by_key(|p| p.seq);
    let before = out.packets.len();
    out.packets.dedup_by_key(|p| p.seq);
    out.duplicates_dropped = (before - out.packets.len()) as u64;
    // Drop padding-only packets and close the gaps they leave, so that a
    // gap in `seq` means a lost packet and nothing else.
    let mut removed = 0u64;
    out.packets.retain_mut(|p| {
        if p.payload.is_empty() {
            removed += 1;
            return false;
        }
        p.seq -= removed;
        true
    });
    out.padding_dropped = removed;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mjr::{rtp_packet, write_mjr};

    const T0: i64 = 1_763_888_400_000_000;

    fn stream(frames: &[(u32, Vec<u8>)]) -> Stream {
        read_stream(&write_mjr(Kind::Audio, "opus", T0, T0, frames)[..]).unwrap()
    }

    fn opus(n: u32, seq: u16, ts: u32, ssrc: u32, recv0: u32) -> Vec<(u32, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let p = rtp_packet(
                    111,
                    false,
                    seq.wrapping_add(i as u16),
                    ts.wrapping_add(i * 960),
                    ssrc,
                    &[0xfc, i as u8],
                );
                (recv0 + i * 20, p)
            })
            .collect()
    }

    #[test]
    fn wrap_around_reordering_duplicates_and_padding() {
        let mut f = opus(100, 65_500, u32::MAX - 960 * 30, 7, 0);
        f.swap(10, 11);
        let dup = f[20].clone();
        f.insert(22, dup);
        f.push((
            2000,
            rtp_packet(111, false, 65_500u16.wrapping_add(100), 0, 7, &[]),
        ));
        let s = stream(&f);
        assert_eq!(s.packets.len(), 100);
        assert_eq!(s.duplicates_dropped, 1);
        assert_eq!(s.padding_dropped, 1);
        for w in s.packets.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1);
            assert_eq!(w[1].ts, w[0].ts + 960);
        }
        assert_eq!(s.offset_us(s.packets[99].ts), 99 * 20_000);
    }

    #[test]
    fn a_new_ssrc_continues_after_the_old_one() {
        let mut f = opus(50, 1000, 5000, 7, 0);
        f.extend(opus(50, 30_000, 777, 9, 50 * 20 + 500));
        let s = stream(&f);
        assert_eq!(s.ssrc_changes, 1);
        assert_eq!(s.packets.len(), 100);
        assert_eq!(s.packets[50].seq, s.packets[49].seq + 1);
        // Received 520 ms after the old source's last packet.
        assert_eq!(s.packets[50].ts - s.packets[49].ts, 520 * 48);
    }

    #[test]
    fn losses_stay_gaps_and_bad_packets_name_their_offset() {
        let mut f = opus(20, 0, 0, 7, 0);
        f.drain(5..8);
        let s = stream(&f);
        assert_eq!(s.packets.len(), 17);
        assert_eq!(s.packets[5].seq - s.packets[4].seq, 4);
        let mut bad = write_mjr(Kind::Audio, "opus", T0, T0, &opus(2, 0, 0, 7, 0));
        bad.extend_from_slice(b"MEET\0\0\0\0\0\x03abc");
        let e = read_stream(&bad[..]).unwrap_err();
        assert!(matches!(e, MjrError::BadFrame { .. }), "{e}");
    }
}
