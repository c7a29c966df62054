//! VP8 over RTP (RFC 7741): the payload descriptor and frame assembly (the
//! packetizer is in [`crate::media::packetize`]).
//!
//! Every VP8 payload starts with a descriptor (`X R N S R PID`, then, when
//! `X` is set, an extension byte `I L T K` and the optional PictureID,
//! TL0PICIDX and TID/Y/KEYIDX bytes). A frame is the run of packets with the
//! same RTP timestamp from the one with `S=1, PID=0` to the marker bit; its
//! data is the concatenation of what follows each descriptor. The first byte
//! of that data is the VP8 payload header: bit 0 clear is a key frame, which
//! also carries the start code `9d 01 2a` at offset 3.
//!
//! The frame assembly ([`assemble`]) is shared with VP9: a packet whose `seq`
//! does not follow the previous one is a loss and the frame it hits is
//! dropped; what happens to the frames after it is the loss policy of
//! [`super::Gate`]. Duplicated sequence numbers are ignored.

use super::{Entropy, Frame, Gate, Packet, Stats};

/// The VP8 payload descriptor of one packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `N`: a non-reference frame (may be discarded).
    pub non_reference: bool,
    /// `S`: this packet starts a VP8 partition.
    pub start: bool,
    /// `PID`: the partition index (0..=7).
    pub partition: u8,
    /// The PictureID (7 or 15 bits) when `I` is set.
    pub picture_id: Option<u16>,
    /// TL0PICIDX when `L` is set.
    pub tl0_pic_idx: Option<u8>,
    /// The temporal layer index (TID) when `T` is set.
    pub tid: Option<u8>,
    /// `Y`: layer sync (meaningful only when `T` is set).
    pub layer_sync: bool,
    /// KEYIDX when `K` is set.
    pub key_idx: Option<u8>,
    /// Length of the descriptor in bytes: the VP8 data starts there.
    pub len: usize,
}

/// Reads the payload descriptor at the start of an RTP payload; `None` when
/// the payload is too short for the fields its bits announce.
pub fn parse_descriptor(payload: &[u8]) -> Option<Descriptor> {
    let first = *payload.first()?;
    let mut d = Descriptor {
        non_reference: first & 0x20 != 0,
        start: first & 0x10 != 0,
        partition: first & 0x07,
        len: 1,
        ..Descriptor::default()
    };
    if first & 0x80 == 0 {
        return Some(d);
    }
    let ext = *payload.get(d.len)?;
    d.len += 1;
    if ext & 0x80 != 0 {
        let b = *payload.get(d.len)?;
        d.len += 1;
        if b & 0x80 != 0 {
            let lo = *payload.get(d.len)?;
            d.len += 1;
            d.picture_id = Some(u16::from(b & 0x7f) << 8 | u16::from(lo));
        } else {
            d.picture_id = Some(u16::from(b));
        }
    }
    if ext & 0x40 != 0 {
        d.tl0_pic_idx = Some(*payload.get(d.len)?);
        d.len += 1;
    }
    let (t, k) = (ext & 0x20 != 0, ext & 0x10 != 0);
    if t || k {
        let b = *payload.get(d.len)?;
        d.len += 1;
        if t {
            d.tid = Some(b >> 6);
            d.layer_sync = b & 0x20 != 0;
        }
        if k {
            d.key_idx = Some(b & 0x1f);
        }
    }
    Some(d)
}

/// Assembles the VP8 frames of one stream; see the module documentation.
pub fn depacketize(packets: &[Packet]) -> (Vec<Frame>, Stats) {
    assemble(packets, unit, classify)
}

fn unit(payload: &[u8]) -> Unit<'_> {
    match parse_descriptor(payload) {
        Some(d) => Unit::Piece {
            start: d.start && d.partition == 0,
            end: false,
            independent: true,
            data: payload.get(d.len..).unwrap_or_default(),
        },
        None => Unit::Malformed,
    }
}

/// The VP8 payload header: 3 bytes, bit 0 of the first clear on key frames,
/// which then carry the start code and 4 bytes of dimensions. An inter
/// frame's header says whether it saves its probabilities for the frames
/// after it ([`refreshes_entropy`]).
fn classify(_independent: bool, data: &[u8]) -> Kind {
    match data.first() {
        Some(b) if b & 1 == 1 && data.len() >= 3 => match refreshes_entropy(&data[3..]) {
            Some(saves) => Kind::Delta(Entropy::Carried { saves }),
            None => Kind::Malformed,
        },
        Some(b)
            if b & 1 == 0
                && data.len() >= 10
                && data.get(3..6) == Some(&[0x9d, 0x01, 0x2a][..]) =>
        {
            Kind::Key
        }
        _ => Kind::Malformed,
    }
}

/// The boolean entropy decoder of RFC 6386 §7, enough to read the frame
/// header's flags and literals (`L(n)` are `n` bits at probability 128).
struct BoolDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    value: u32,
    range: u32,
    bit_count: u32,
}

impl<'a> BoolDecoder<'a> {
    /// `None` when the data is too short to start decoding.
    fn new(data: &'a [u8]) -> Option<Self> {
        let (a, b) = (*data.first()?, *data.get(1)?);
        Some(BoolDecoder {
            data,
            pos: 2,
            value: u32::from(a) << 8 | u32::from(b),
            range: 255,
            bit_count: 0,
        })
    }

    /// One bool at probability 128; `None` past the end of the data.
    fn bit(&mut self) -> Option<bool> {
        let split = 1 + (((self.range - 1) * 128) >> 8);
        let big_split = split << 8;
        let bit = if self.value >= big_split {
            self.range -= split;
            self.value -= big_split;
            true
        } else {
            self.range = split;
            false
        };
        while self.range < 128 {
            self.value <<= 1;
            self.range <<= 1;
            self.bit_count += 1;
            if self.bit_count == 8 {
                self.bit_count = 0;
                self.value |= u32::from(*self.data.get(self.pos)?);
                self.pos += 1;
            }
        }
        Some(bit)
    }

    fn literal(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |v, _| Some(v << 1 | u32::from(self.bit()?)))
    }

    /// A flag, and when it is set `n` bits of value and a sign bit.
    fn optional_signed(&mut self, n: u32) -> Option<()> {
        if self.bit()? {
            self.literal(n + 1)?;
        }
        Some(())
    }
}

/// Reads an inter frame's header (RFC 6386 §9.2-9.7, §19.2: segmentation,
/// loop filter, partitions, quantizers, reference updates) up to
/// `refresh_entropy_probs`: whether the probabilities this frame updates
/// are kept for the frames after it. `first_partition` is the frame after
/// its 3-byte tag; `None` when it ends before the flag.
fn refreshes_entropy(first_partition: &[u8]) -> Option<bool> {
    let mut d = BoolDecoder::new(first_partition)?;
    if d.bit()? {
        // segmentation_enabled
        let update_map = d.bit()?;
        if d.bit()? {
            // update_segment_feature_data: mode, 4 quantizers, 4 filter levels
            d.bit()?;
            for _ in 0..4 {
                d.optional_signed(7)?;
            }
            for _ in 0..4 {
                d.optional_signed(6)?;
            }
        }
        if update_map {
            for _ in 0..3 {
                if d.bit()? {
                    d.literal(8)?;
                }
            }
        }
    }
    d.literal(1 + 6 + 3)?; // filter_type, loop_filter_level, sharpness_level
    if d.bit()? && d.bit()? {
        // loop_filter_adj_enable, mode_ref_lf_delta_update: 4 + 4 deltas
        for _ in 0..8 {
            d.optional_signed(6)?;
        }
    }
    d.literal(2)?; // log2_nbr_of_dct_partitions
    d.literal(7)?; // y_ac_qi
    for _ in 0..5 {
        d.optional_signed(4)?;
    }
    let refresh_golden = d.bit()?;
    let refresh_alternate = d.bit()?;
    if !refresh_golden {
        d.literal(2)?; // copy_buffer_to_golden
    }
    if !refresh_alternate {
        d.literal(2)?; // copy_buffer_to_alternate
    }
    d.literal(2)?; // sign_bias_golden, sign_bias_alternate
    d.bit()
}

/// What a codec's descriptor parser makes of one packet, for [`assemble`].
pub(super) enum Unit<'a> {
    /// A piece of a frame: `start` opens a frame, `end` closes it (as does
    /// the marker bit); `independent` (on a frame's first packet) says the
    /// descriptor allows a keyframe; `data` is what follows the descriptor.
    Piece {
        start: bool,
        end: bool,
        independent: bool,
        data: &'a [u8],
    },
    /// A packet that fills its sequence number without joining a frame
    /// (a spatial layer that is not kept). Empty payloads (padding) are
    /// skipped without asking the codec.
    Skip,
    /// A descriptor that does not parse: its frame is lost.
    Malformed,
}

/// What a codec says about an assembled frame's data, for [`assemble`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Key,
    /// A frame that needs earlier ones, and what its entropy decoding needs.
    Delta(Entropy),
    /// Not a frame the decoder could use: dropped as incomplete.
    Malformed,
}

/// A frame being put together.
struct Assembly {
    ts: u64,
    /// Started properly and no malformed packet so far.
    ok: bool,
    independent: bool,
    data: Vec<u8>,
}

/// Frame assembly shared by VP8 and VP9: `unit` parses each packet's
/// descriptor, `classify` judges a finished frame (given whether its first
/// packet allowed a keyframe). A frame ends at its `end` flag or marker, or,
/// when no packet is missing, where the next frame visibly starts (new
/// timestamp or a new start); one still open when the packets run out is
/// incomplete.
pub(super) fn assemble(
    packets: &[Packet],
    unit: fn(&[u8]) -> Unit<'_>,
    classify: fn(bool, &[u8]) -> Kind,
) -> (Vec<Frame>, Stats) {
    let mut a = Assembler::new(unit, classify);
    for p in packets {
        a.push(p);
    }
    a.end()
}

/// [`assemble`] a packet at a time: frames come out as they complete.
pub(crate) struct Assembler {
    unit: fn(&[u8]) -> Unit<'_>,
    classify: fn(bool, &[u8]) -> Kind,
    frames: Vec<Frame>,
    stats: Stats,
    gate: Gate,
    fresh: super::Fresh,
    current: Option<Assembly>,
}

impl Assembler {
    pub(super) fn new(unit: fn(&[u8]) -> Unit<'_>, classify: fn(bool, &[u8]) -> Kind) -> Self {
        Self {
            unit,
            classify,
            frames: Vec::new(),
            stats: Stats::default(),
            gate: Gate::default(),
            fresh: super::Fresh::default(),
            current: None,
        }
    }

    /// The next packet in sequence order.
    pub(crate) fn push(&mut self, p: &Packet) {
        let Some(missing) = self.fresh.missing_before(p.seq) else {
            return;
        };
        if missing > 0 {
            // The frame being assembled has a hole (it is counted once,
            // when it ends); whole frames may have gone too.
            if let Some(c) = self.current.as_mut() {
                c.ok = false;
            }
            self.gate.lost();
        }
        let parsed = if p.payload.is_empty() {
            Unit::Skip
        } else {
            (self.unit)(&p.payload)
        };
        let (start, end, independent, data, bad) = match parsed {
            Unit::Skip => return,
            Unit::Malformed => (false, false, false, &[][..], true),
            Unit::Piece {
                start,
                end,
                independent,
                data,
            } => (start, end, independent, data, false),
        };
        if self.current.as_ref().is_some_and(|c| c.ts != p.ts || start) {
            let done = self.current.take();
            self.finish(done);
        }
        let c = self.current.get_or_insert_with(|| Assembly {
            ts: p.ts,
            ok: start,
            independent,
            data: Vec::new(),
        });
        c.ok &= !bad;
        if c.ok {
            c.data.extend_from_slice(data);
        }
        if end || p.marker {
            let done = self.current.take();
            self.finish(done);
        }
    }

    /// The frames completed so far (taken out).
    pub(crate) fn take(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.frames)
    }

    /// After the last packet: the frames not yet taken, and the counts.
    pub(crate) fn end(mut self) -> (Vec<Frame>, Stats) {
        if self.current.is_some() {
            self.stats.incomplete += 1;
        }
        (std::mem::take(&mut self.frames), self.stats)
    }

    /// A frame that ended with no packet missing.
    fn finish(&mut self, a: Option<Assembly>) {
        let Some(a) = a else { return };
        let kind = if a.ok {
            (self.classify)(a.independent, &a.data)
        } else {
            Kind::Malformed
        };
        if kind == Kind::Malformed {
            self.stats.incomplete += 1;
            self.gate.lost();
            return;
        }
        let entropy = match kind {
            Kind::Delta(e) => e,
            _ => Entropy::Resets,
        };
        if !self.gate.admit(kind == Kind::Key, entropy, &mut self.stats) {
            return;
        }
        self.frames.push(Frame {
            ts: a.ts,
            keyframe: kind == Kind::Key,
            data: a.data,
        });
    }
}

/// A VP8 [`Assembler`].
pub(crate) fn assembler() -> Assembler {
    Assembler::new(unit, classify)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::packetize::vp8 as packetize;

    /// A fake VP8 key frame of `len` (≥ 10) bytes: payload header with bit 0
    /// clear, the start code, then a pattern from `seed`.
    pub(crate) fn key(len: usize, seed: u8) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
        f[0] = 0x10; // bit 0 clear: key frame; show_frame set
        f[1] = seed;
        f[2] = 0;
        f[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        f
    }

    /// A fake VP8 delta frame of `len` (≥ 3) bytes.
    pub(crate) fn delta(len: usize, seed: u8) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len)
            .map(|i| seed.wrapping_mul(7).wrapping_add(i as u8))
            .collect();
        f[0] = 0x11;
        // A frame header of zeros: no segmentation, no updates, and
        // refresh_entropy_probs 0 (as error-resilient encoders write).
        let header = 3..len.min(10);
        f[header].fill(0);
        f
    }

    /// As [`delta`], saving its probabilities (refresh_entropy_probs 1).
    fn saving_delta(len: usize, seed: u8) -> Vec<u8> {
        let zeros = delta(len, seed);
        // Every other field 0: the flag is one bit of the header; find it.
        (3..10)
            .flat_map(|at| (0..8).map(move |bit| (at, 0x80u8 >> bit)))
            .map(|(at, v)| {
                let mut f = zeros.clone();
                f[at] = v;
                f
            })
            .find(|f| refreshes_entropy(&f[3..]) == Some(true))
            .expect("a header that saves its probabilities")
    }

    #[test]
    fn the_header_says_whether_probabilities_are_saved() {
        assert_eq!(refreshes_entropy(&delta(40, 1)[3..]), Some(false));
        assert_eq!(refreshes_entropy(&saving_delta(40, 1)[3..]), Some(true));
        assert_eq!(refreshes_entropy(&[0, 0]), None);
        assert_eq!(refreshes_entropy(&[]), None);
    }

    #[test]
    fn after_a_loss_frames_on_saved_probabilities_wait_for_a_keyframe() {
        // An encoder that saves probabilities on every frame: after the
        // lost frame 2, frames 3 and 4 would decode as garbage.
        let frames = vec![
            key(40, 1),
            saving_delta(40, 2),
            saving_delta(40, 3),
            saving_delta(40, 4),
            saving_delta(40, 5),
            key(40, 6),
            saving_delta(40, 7),
        ];
        let mut p = packets(&frames, 1200);
        p.remove(2);
        let (out, stats) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[0, 1, 5, 6]));
        assert_eq!(
            stats,
            Stats {
                frames: 4,
                stale_contexts: 2,
                ..Stats::default()
            }
        );
    }

    use crate::media::testkit::Rng;

    /// Packetizes `frames` with consecutive sequence numbers, 3000 ticks apart.
    fn packets(frames: &[Vec<u8>], max: usize) -> Vec<Packet> {
        crate::media::testkit::packets(frames, max, (65_530, 90_000, 32_760), packetize)
    }

    fn expected(frames: &[Vec<u8>], keep: &[usize]) -> Vec<Frame> {
        crate::media::testkit::expected(frames, keep, 90_000, |f| f[0] & 1 == 0)
    }

    fn gop() -> Vec<Vec<u8>> {
        crate::media::testkit::gop(key, delta)
    }

    #[test]
    fn descriptor_minimal() {
        let d = parse_descriptor(&[0x10, 0xaa]).unwrap();
        assert!(d.start && !d.non_reference);
        assert_eq!((d.partition, d.len, d.picture_id), (0, 1, None));
        let d = parse_descriptor(&[0x27]).unwrap();
        assert!(!d.start && d.non_reference);
        assert_eq!((d.partition, d.len), (7, 1));
        assert_eq!(parse_descriptor(&[]), None);
    }

    #[test]
    fn descriptor_picture_ids() {
        let d = parse_descriptor(&[0x90, 0x80, 0x55, 0xff]).unwrap();
        assert_eq!((d.picture_id, d.len), (Some(0x55), 3));
        let d = parse_descriptor(&[0x90, 0x80, 0xd5, 0x01, 0xff]).unwrap();
        assert_eq!((d.picture_id, d.len), (Some(0x5501), 4));
        assert_eq!(parse_descriptor(&[0x90, 0x80, 0xd5]), None);
        assert_eq!(parse_descriptor(&[0x90, 0x80]), None);
        assert_eq!(parse_descriptor(&[0x90]), None);
        // X with no optional field: a 2-byte descriptor.
        let d = parse_descriptor(&[0x90, 0x00, 1]).unwrap();
        assert_eq!((d.picture_id, d.len), (None, 2));
    }

    #[test]
    fn descriptor_all_fields() {
        // I (15-bit), L, T, K.
        let d = parse_descriptor(&[0xb3, 0xf0, 0x81, 0x02, 0x09, 0b1011_0101, 0xee]).unwrap();
        assert!(d.start && d.non_reference);
        assert_eq!(d.partition, 3);
        assert_eq!(d.picture_id, Some(0x0102));
        assert_eq!(d.tl0_pic_idx, Some(9));
        assert_eq!(d.tid, Some(2));
        assert!(d.layer_sync);
        assert_eq!(d.key_idx, Some(0x15));
        assert_eq!(d.len, 6);
        // Each truncation of it fails.
        let full = [0xb3, 0xf0, 0x81, 0x02, 0x09, 0b1011_0101];
        for n in 0..full.len() {
            assert_eq!(parse_descriptor(&full[..n]), None, "{n} bytes");
        }
    }

    #[test]
    fn descriptor_t_or_k_alone() {
        let d = parse_descriptor(&[0x80, 0x20, 0b0100_0011]).unwrap();
        assert_eq!(
            (d.tid, d.layer_sync, d.key_idx, d.len),
            (Some(1), false, None, 3)
        );
        let d = parse_descriptor(&[0x80, 0x10, 0b1110_0011]).unwrap();
        assert_eq!(
            (d.tid, d.layer_sync, d.key_idx, d.len),
            (None, false, Some(3), 3)
        );
        let d = parse_descriptor(&[0x80, 0x40, 0x07]).unwrap();
        assert_eq!((d.tl0_pic_idx, d.tid, d.len), (Some(7), None, 3));
        // Reserved bits are ignored.
        let d = parse_descriptor(&[0xc8, 0x0f]).unwrap();
        assert_eq!(d.len, 2);
    }

    #[test]
    fn round_trip() {
        let frames = gop();
        for max in [5, 17, 100, 1200] {
            let (out, stats) = depacketize(&packets(&frames, max));
            assert_eq!(out, expected(&frames, &[0, 1, 2, 3, 4, 5, 6]), "max {max}");
            assert_eq!(
                stats,
                Stats {
                    frames: 7,
                    ..Stats::default()
                }
            );
        }
    }

    #[test]
    fn starts_waiting_for_a_keyframe() {
        let frames = vec![delta(50, 1), delta(50, 2), key(50, 3), delta(50, 4)];
        let (out, stats) = depacketize(&packets(&frames, 1200));
        assert_eq!(out, expected(&frames, &[2, 3]));
        assert_eq!(
            stats,
            Stats {
                frames: 2,
                waiting_for_keyframe: 2,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn lost_middle_packet_drops_only_its_frame() {
        let frames = gop();
        let mut p = packets(&frames, 100);
        // Frame 1 (260 bytes) spans packets 5, 6, 7 (450 bytes of key frame take 5).
        assert_eq!(p[5].ts, p[7].ts);
        assert!(p[7].marker && !p[6].marker);
        p.remove(6);
        let (out, stats) = depacketize(&p);
        // Frames 2 and 3 are complete: kept, and counted as after a loss.
        assert_eq!(out, expected(&frames, &[0, 2, 3, 4, 5, 6]));
        assert_eq!(
            stats,
            Stats {
                frames: 6,
                incomplete: 1,
                after_loss: 2,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn lost_first_or_last_packet() {
        let frames = gop();
        let base = packets(&frames, 100);
        // First packet of frame 1: the rest has no S=1.
        let mut p = base.clone();
        p.remove(5);
        let (out, stats) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[0, 2, 3, 4, 5, 6]));
        assert_eq!((stats.incomplete, stats.after_loss), (1, 2));
        // Last (marker) packet of frame 1.
        let mut p = base.clone();
        p.remove(7);
        let (out, stats) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[0, 2, 3, 4, 5, 6]));
        assert_eq!((stats.incomplete, stats.after_loss), (1, 2));
        // The last packet of the first key frame: nothing before frame 4 can
        // decode (the stream has not started).
        let mut p = base;
        p.remove(4);
        let (out, stats) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[4, 5, 6]));
        assert_eq!((stats.incomplete, stats.waiting_for_keyframe), (1, 3));
    }

    #[test]
    fn a_whole_lost_frame_drops_only_itself() {
        let frames = vec![key(40, 1), delta(40, 2), delta(40, 3), key(40, 4)];
        let mut p = packets(&frames, 1200);
        p.remove(1); // frame 1 in a single packet, gone
        let (out, stats) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[0, 2, 3]));
        assert_eq!(
            stats,
            Stats {
                frames: 3,
                after_loss: 1,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn duplicates_are_ignored() {
        let frames = gop();
        let p = packets(&frames, 100);
        let mut dup = Vec::new();
        for (i, x) in p.iter().enumerate() {
            dup.push(x.clone());
            if i % 2 == 0 {
                dup.push(x.clone());
            }
            if i % 5 == 0 {
                // A stale copy of an earlier packet.
                dup.push(p[i / 2].clone());
            }
        }
        let (out, stats) = depacketize(&dup);
        assert_eq!(out, expected(&frames, &[0, 1, 2, 3, 4, 5, 6]));
        assert_eq!(stats.frames, 7);
    }

    #[test]
    fn timestamp_change_ends_a_frame_without_marker() {
        let frames = vec![key(300, 1), delta(300, 2)];
        let mut p = packets(&frames, 100);
        let last_of_first = p.iter().position(|x| x.marker).unwrap();
        p[last_of_first].marker = false;
        let (out, _) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[0, 1]));
        // At the very end, though, a frame without marker may be cut short.
        let last = p.len() - 1;
        p[last].marker = false;
        let (out, stats) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[0]));
        assert_eq!(stats.incomplete, 1);
    }

    #[test]
    fn malformed_packets() {
        let frames = vec![key(300, 1), delta(300, 2), delta(300, 3), key(30, 4)];
        let mut p = packets(&frames, 100);
        // Frame 1's middle packet loses its descriptor (X set, nothing after).
        let i = p.iter().position(|x| x.ts == 93_000).unwrap() + 1;
        p[i].payload = vec![0x80];
        let (out, stats) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[0, 2, 3]));
        assert_eq!((stats.incomplete, stats.after_loss), (1, 1));
    }

    #[test]
    fn bad_keyframe_header_is_incomplete() {
        let mut bad = key(40, 1);
        bad[4] = 0; // broken start code
        let frames = vec![key(40, 0), bad, delta(40, 2), key(9, 3), key(40, 4)];
        let (out, stats) = depacketize(&packets(&frames, 1200));
        // The 9-byte "key frame" is too short to be one.
        assert_eq!(out, expected(&frames, &[0, 2, 4]));
        assert_eq!(
            stats,
            Stats {
                frames: 3,
                incomplete: 2,
                after_loss: 1,
                ..Stats::default()
            }
        );
        // A delta frame shorter than its 3-byte header.
        let frames = vec![key(40, 0), vec![0x01, 0x00]];
        let (_, stats) = depacketize(&packets(&frames, 1200));
        assert_eq!((stats.frames, stats.incomplete), (1, 1));
    }

    #[test]
    fn empty_payloads_are_padding() {
        let frames = gop();
        let mut p = packets(&frames, 100);
        // Insert padding packets (own seq) between frames and renumber.
        let mut out = Vec::new();
        for x in p.drain(..) {
            let marker = x.marker;
            let ts = x.ts;
            out.push(x);
            if marker {
                out.push(Packet {
                    seq: 0,
                    ts,
                    marker: false,
                    payload: Vec::new(),
                });
            }
        }
        for (i, x) in out.iter_mut().enumerate() {
            x.seq = 10 + i as u64;
        }
        let (got, stats) = depacketize(&out);
        assert_eq!(got, expected(&frames, &[0, 1, 2, 3, 4, 5, 6]));
        assert_eq!(stats.frames, 7);
    }

    #[test]
    fn restart_with_same_timestamp() {
        // Two S=1/PID=0 starts on one timestamp: two frames.
        let a = key(20, 1);
        let b = delta(20, 2);
        let mut p = Vec::new();
        for (i, f) in [&a, &b].iter().enumerate() {
            for (_, payload) in packetize(f, 1200, i as u16) {
                p.push(Packet {
                    seq: i as u64,
                    ts: 7,
                    marker: false,
                    payload,
                });
            }
        }
        p[1].marker = true;
        let (out, stats) = depacketize(&p);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, a);
        assert_eq!(out[1].data, b);
        assert_eq!(stats.frames, 2);
    }

    #[test]
    fn partitions_other_than_zero_continue_a_frame() {
        // S=1 with PID=1 continues; S=1 PID=1 alone cannot start a frame.
        let f = key(30, 1);
        let p = vec![
            Packet {
                seq: 1,
                ts: 5,
                marker: false,
                payload: [&[0x10][..], &f[..10]].concat(),
            },
            Packet {
                seq: 2,
                ts: 5,
                marker: true,
                payload: [&[0x11][..], &f[10..]].concat(),
            },
            Packet {
                seq: 3,
                ts: 6,
                marker: true,
                payload: [&[0x11][..], &delta(5, 1)[..]].concat(),
            },
        ];
        let (out, stats) = depacketize(&p);
        assert_eq!(
            out,
            vec![Frame {
                ts: 5,
                keyframe: true,
                data: f
            }]
        );
        assert_eq!(stats.incomplete, 1);
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let mut p = Vec::new();
            let mut seq = rng.next() >> 20;
            let mut ts = rng.next() >> 20;
            for _ in 0..rng.below(60) {
                seq += if rng.below(10) == 0 { rng.below(4) } else { 1 };
                if rng.below(4) == 0 {
                    ts += rng.below(5000);
                }
                let len = rng.below(40) as usize;
                let mut payload = rng.bytes(len);
                if round % 2 == 0 && !payload.is_empty() {
                    payload[0] &= 0xb7; // more plausible starts
                }
                p.push(Packet {
                    seq,
                    ts,
                    marker: rng.below(3) == 0,
                    payload,
                });
            }
            let (out, stats) = depacketize(&p);
            assert_eq!(stats.frames, out.len() as u64);
            assert!(out.first().is_none_or(|f| f.keyframe));
            for x in &p {
                let _ = parse_descriptor(&x.payload);
            }
        }
    }

    #[test]
    fn mutated_streams_never_hand_out_a_broken_frame() {
        let frames = gop();
        let clean = packets(&frames, 60);
        let mut rng = Rng(42);
        for _ in 0..2000 {
            let mut p = clean.clone();
            match rng.below(4) {
                0 => {
                    let i = rng.below(p.len() as u64) as usize;
                    let j = rng.below(p[i].payload.len() as u64) as usize;
                    p[i].payload[j] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(p.len() as u64) as usize;
                    let n = rng.below(p[i].payload.len() as u64 + 1) as usize;
                    p[i].payload.truncate(n);
                }
                2 => {
                    let i = rng.below(p.len() as u64) as usize;
                    p.remove(i);
                }
                _ => {
                    let i = rng.below(p.len() as u64) as usize;
                    p[i].marker = !p[i].marker;
                }
            }
            let (out, stats) = depacketize(&p);
            assert_eq!(stats.frames, out.len() as u64);
            assert!(out.first().is_none_or(|f| f.keyframe));
        }
        // Losses alone: every frame handed out is one of the originals.
        for _ in 0..500 {
            let mut p = clean.clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(p.len() as u64) as usize;
                p.remove(i);
            }
            let (out, _) = depacketize(&p);
            for f in &out {
                let i = ((f.ts - 90_000) / 3000) as usize;
                assert_eq!(f.data, frames[i]);
            }
        }
    }
}
