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
        offset_us(&self.header, self.first_ts, ts)
    }

    /// Wall-clock time (µs since the epoch) of the frame at `ts`: the
    /// header's first-frame time (or creation time, or `fallback_us` when
    /// the recording has neither) plus the RTP clock's offset.
    pub fn wall_us(&self, ts: u64, fallback_us: i64) -> i64 {
        wall_us(&self.header, self.first_ts, ts, fallback_us)
    }
}

fn offset_us(header: &Header, first_ts: Option<u64>, ts: u64) -> i64 {
    let first = first_ts.unwrap_or(ts) as i64;
    (ts as i64 - first) * 1_000_000 / header.clock_rate.max(1) as i64
}

fn wall_us(header: &Header, first_ts: Option<u64>, ts: u64, fallback_us: i64) -> i64 {
    let u = header.first_frame_us.or(header.created_us);
    u.unwrap_or(fallback_us) + offset_us(header, first_ts, ts)
}

/// One SSRC's numbering, mapped onto the stream's continuous numbering.
struct Segment {
    ssrc: u32,
    seq: Unwrap<16>,
    ts: Unwrap<32>,
    seq_shift: i64,
    ts_shift: i64,
}

/// Packets held to put reordered ones back in sequence: a packet arriving
/// more than this many packets late (seconds of video, tens of seconds of
/// audio) is dropped as late, like a jitter buffer would.
pub const REORDER_WINDOW: usize = 1024;

/// A recording read packet by packet, in play order, holding at most
/// [`REORDER_WINDOW`] packets: a long call costs no more memory than a
/// short one.
pub struct Packets<R> {
    m: MjrReader<R>,
    header: Header,
    clock: i64,
    data: bool,
    seg: Option<Segment>,
    max_seq: i64,
    max_ts: i64,
    last_recv: Option<u32>,
    /// By sequence number; the first copy of a duplicate is kept.
    window: std::collections::BTreeMap<u64, Packet>,
    /// The last sequence number handed out (before renumbering).
    last_out: Option<u64>,
    /// Padding-only packets taken out so far (later numbers close up).
    removed: u64,
    ended: bool,
    pub first_ts: Option<u64>,
    pub padding_dropped: u64,
    pub duplicates_dropped: u64,
    pub late_dropped: u64,
    pub ssrc_changes: u64,
}

impl<R: Read> Packets<R> {
    pub fn open(input: R) -> Result<Self, MjrError> {
        let m = MjrReader::open(input)?;
        let header = m.header.clone();
        Ok(Self {
            clock: header.clock_rate as i64,
            data: header.kind == Kind::Data,
            header,
            m,
            seg: None,
            max_seq: 0,
            max_ts: 0,
            last_recv: None,
            window: Default::default(),
            last_out: None,
            removed: 0,
            ended: false,
            first_ts: None,
            padding_dropped: 0,
            duplicates_dropped: 0,
            late_dropped: 0,
            ssrc_changes: 0,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// [`Stream::wall_us`], for the packets read so far.
    pub fn wall_us(&self, ts: u64, fallback_us: i64) -> i64 {
        wall_us(&self.header, self.first_ts, ts, fallback_us)
    }

    /// The next packet in sequence order (gaps are losses), `None` at the end.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, MjrError> {
        loop {
            while !self.ended && self.window.len() < REORDER_WINDOW {
                self.read_one()?;
            }
            let Some((_, mut p)) = self.window.pop_first() else {
                return Ok(None);
            };
            self.last_out = Some(p.seq);
            // Padding-only packets go, and the numbers after them close up,
            // so that a gap in `seq` means a lost packet and nothing else.
            if p.payload.is_empty() {
                self.removed += 1;
                self.padding_dropped += 1;
                continue;
            }
            p.seq -= self.removed;
            return Ok(Some(p));
        }
    }

    /// Reads one frame of the file into the window.
    fn read_one(&mut self) -> Result<(), MjrError> {
        let Some(f) = self.m.next_frame()? else {
            self.ended = true;
            return Ok(());
        };
        if self.data {
            return Ok(());
        }
        let rtp = f.rtp()?;
        let new_source = self.seg.as_ref().is_none_or(|s| s.ssrc != rtp.ssrc);
        let change = new_source && self.seg.is_some();
        if new_source {
            self.seg = Some(Segment {
                ssrc: rtp.ssrc,
                seq: Unwrap::default(),
                ts: Unwrap::default(),
                seq_shift: 0,
                ts_shift: 0,
            });
        }
        let s = self.seg.as_mut().expect("set above");
        let useq = s.seq.next(rtp.seq as u64) as i64;
        let uts = s.ts.next(rtp.timestamp as u64) as i64;
        if change {
            self.ssrc_changes += 1;
            // Continue the numbering; place the new source by how much
            // later it was received than the old one's last packet.
            let gap_ms = match (self.last_recv, f.received_ms) {
                (Some(a), Some(b)) => b.saturating_sub(a) as i64,
                _ => 20,
            };
            s.seq_shift = self.max_seq + 1 - useq;
            s.ts_shift = self.max_ts + (gap_ms * self.clock / 1000).max(1) - uts;
        }
        let seq = (useq + s.seq_shift).max(0) as u64;
        let ts = (uts + s.ts_shift).max(0);
        self.max_seq = self.max_seq.max(seq as i64);
        self.max_ts = self.max_ts.max(ts);
        self.first_ts.get_or_insert(ts as u64);
        if f.received_ms.is_some() {
            self.last_recv = f.received_ms;
        }
        if self.last_out.is_some_and(|last| seq <= last) {
            // Its place in the sequence has been handed out already: a
            // duplicate of a packet handed out, or one too late to place.
            if seq == self.last_out.unwrap_or_default() {
                self.duplicates_dropped += 1;
            } else {
                self.late_dropped += 1;
            }
            return Ok(());
        }
        // Padding-only packets stay until handed out (their sequence numbers
        // are taken out then, so they do not look like losses).
        let payload = f
            .packet
            .get(rtp.payload_at..rtp.payload_at + rtp.payload_len)
            .unwrap_or_default()
            .to_vec();
        match self.window.entry(seq) {
            std::collections::btree_map::Entry::Occupied(_) => self.duplicates_dropped += 1,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Packet {
                    seq,
                    ts: ts as u64,
                    marker: rtp.marker,
                    payload,
                });
            }
        }
        Ok(())
    }
}

/// Reads a whole recording (data streams give no packets).
pub fn read_stream(input: impl Read) -> Result<Stream, MjrError> {
    let mut packets = Packets::open(input)?;
    let mut out = Vec::new();
    while let Some(p) = packets.next_packet()? {
        out.push(p);
    }
    Ok(Stream {
        header: packets.header.clone(),
        packets: out,
        first_ts: packets.first_ts,
        padding_dropped: packets.padding_dropped,
        duplicates_dropped: packets.duplicates_dropped + packets.late_dropped,
        ssrc_changes: packets.ssrc_changes,
    })
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
    fn a_long_stream_is_read_in_a_bounded_window_and_packets_too_late_are_dropped() {
        // 5000 packets, neighbours swapped throughout, and one packet held
        // back far longer than the window.
        let mut f = opus(5000, 100, 0, 7, 0);
        for i in (0..4990).step_by(7) {
            f.swap(i, i + 1);
        }
        let late = f.remove(10);
        f.insert(10 + REORDER_WINDOW + 100, late);
        let bytes = write_mjr(Kind::Audio, "opus", T0, T0, &f);
        let mut p = Packets::open(&bytes[..]).unwrap();
        let mut seqs = Vec::new();
        while let Some(pkt) = p.next_packet().unwrap() {
            assert!(p.window.len() <= REORDER_WINDOW);
            seqs.push(pkt.seq);
        }
        assert_eq!(p.late_dropped, 1);
        assert_eq!(seqs.len(), 4999);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in sequence order");
        // The one too late is a loss: a gap of one.
        assert_eq!(seqs.windows(2).filter(|w| w[1] - w[0] == 2).count(), 1);
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
