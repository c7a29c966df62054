//! VP9 over RTP (RFC 9628): the payload descriptor and frame assembly (the
//! packetizer is in [`crate::media::packetize`]).
//!
//! Every VP9 payload starts with a descriptor: `I P L F B E V Z`, then the
//! picture ID (7 or 15 bits) when `I` is set, the layer indices when `L` is
//! set (with TL0PICIDX in non-flexible mode), up to three reference P_DIFFs
//! in flexible mode when `P` is set, and the scalability structure when `V`
//! is set. A frame runs from `B=1` to `E=1` (or the marker bit); its data is
//! the concatenation of what follows each descriptor. It is a keyframe when
//! its first packet has `P` clear and its uncompressed header says so.
//!
//! Only one spatial layer is assembled: packets of spatial layers above 0
//! fill their sequence numbers but are left out, which keeps the base layer
//! of an SVC stream decodable. Losses, duplicates and the wait for a keyframe
//! follow the shared rules of [`super::vp8`].

use super::vp8::{assemble, Assembler, Kind, Unit};
use super::Entropy;
use super::{Frame, Packet, Stats};

/// The layer indices of a packet (`L` set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    /// Temporal layer (TID, 0..=7).
    pub tid: u8,
    /// `U`: switching up point.
    pub switching_up: bool,
    /// Spatial layer (SID, 0..=7).
    pub sid: u8,
    /// `D`: inter-layer dependency.
    pub inter_layer: bool,
    /// TL0PICIDX (non-flexible mode only).
    pub tl0_pic_idx: Option<u8>,
}

/// The scalability structure (`V` set), as far as it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalability {
    /// N_S + 1.
    pub spatial_layers: u8,
    /// Width and height of each spatial layer, when `Y` is set.
    pub resolutions: Vec<(u16, u16)>,
    /// N_G, the pictures in the group description, when `G` is set.
    pub group_size: Option<u8>,
}

/// The VP9 payload descriptor of one packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `P`: inter-picture predicted.
    pub inter_predicted: bool,
    /// `F`: flexible mode.
    pub flexible: bool,
    /// `B`: start of a frame.
    pub begin: bool,
    /// `E`: end of a frame.
    pub end: bool,
    /// `Z`: not a reference for upper spatial layers.
    pub not_upper_reference: bool,
    /// The picture ID (7 or 15 bits) when `I` is set.
    pub picture_id: Option<u16>,
    pub layers: Option<Layers>,
    /// Reference differences (flexible mode with `P`), at most three.
    pub p_diffs: Vec<u8>,
    pub scalability: Option<Scalability>,
    /// Length of the descriptor in bytes: the VP9 data starts there.
    pub len: usize,
}

/// A cursor over a payload that fails (instead of panicking) past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.byte()?) << 8 | u16::from(self.byte()?))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len())?;
        self.pos = end;
        Some(())
    }
}

/// Reads the payload descriptor at the start of an RTP payload; `None` when
/// the payload is too short for the fields its bits announce or has more
/// than three P_DIFFs.
pub fn parse_descriptor(payload: &[u8]) -> Option<Descriptor> {
    let mut c = Cursor {
        bytes: payload,
        pos: 0,
    };
    let first = c.byte()?;
    let mut d = Descriptor {
        inter_predicted: first & 0x40 != 0,
        flexible: first & 0x10 != 0,
        begin: first & 0x08 != 0,
        end: first & 0x04 != 0,
        not_upper_reference: first & 0x01 != 0,
        ..Descriptor::default()
    };
    if first & 0x80 != 0 {
        let b = c.byte()?;
        d.picture_id = Some(if b & 0x80 != 0 {
            u16::from(b & 0x7f) << 8 | u16::from(c.byte()?)
        } else {
            u16::from(b)
        });
    }
    if first & 0x20 != 0 {
        let b = c.byte()?;
        d.layers = Some(Layers {
            tid: b >> 5,
            switching_up: b & 0x10 != 0,
            sid: (b >> 1) & 0x07,
            inter_layer: b & 0x01 != 0,
            tl0_pic_idx: if d.flexible { None } else { Some(c.byte()?) },
        });
    }
    if d.flexible && d.inter_predicted {
        loop {
            if d.p_diffs.len() == 3 {
                return None;
            }
            let b = c.byte()?;
            d.p_diffs.push(b >> 1);
            if b & 0x01 == 0 {
                break;
            }
        }
    }
    if first & 0x02 != 0 {
        d.scalability = Some(scalability(&mut c)?);
    }
    d.len = c.pos;
    Some(d)
}

/// The scalability structure: N_S/Y/G, the resolutions, the picture group.
fn scalability(c: &mut Cursor<'_>) -> Option<Scalability> {
    let b = c.byte()?;
    let spatial_layers = (b >> 5) + 1;
    let mut ss = Scalability {
        spatial_layers,
        resolutions: Vec::new(),
        group_size: None,
    };
    if b & 0x10 != 0 {
        for _ in 0..spatial_layers {
            ss.resolutions.push((c.u16()?, c.u16()?));
        }
    }
    if b & 0x08 != 0 {
        let n_g = c.byte()?;
        for _ in 0..n_g {
            let r = (c.byte()? >> 2) & 0x03;
            c.skip(usize::from(r))?;
        }
        ss.group_size = Some(n_g);
    }
    Some(ss)
}

/// Assembles the VP9 frames of one stream (spatial layer 0); see the module
/// documentation.
pub fn depacketize(packets: &[Packet]) -> (Vec<Frame>, Stats) {
    assemble(packets, unit, classify)
}

/// A VP9 [`Assembler`]: [`depacketize`] a packet at a time.
pub(crate) fn assembler() -> Assembler {
    Assembler::new(unit, classify)
}

fn classify(independent: bool, data: &[u8]) -> Kind {
    match header_kind(data) {
        // A key frame the descriptor marks inter-predicted still resets
        // the probability contexts.
        Kind::Key if !independent => Kind::Delta(Entropy::Resets),
        k => k,
    }
}

fn unit(payload: &[u8]) -> Unit<'_> {
    match parse_descriptor(payload) {
        Some(d) if d.layers.is_some_and(|l| l.sid > 0) => Unit::Skip,
        Some(d) => Unit::Piece {
            start: d.begin,
            end: d.end,
            independent: !d.inter_predicted,
            data: payload.get(d.len..).unwrap_or_default(),
        },
        None => Unit::Malformed,
    }
}

/// Reads bits, most significant first.
struct Bits<'a> {
    bytes: &'a [u8],
    bit: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            let byte = *self.bytes.get(self.bit / 8)?;
            v = v << 1 | u32::from(byte >> (7 - self.bit % 8) & 1);
            self.bit += 1;
        }
        Some(v)
    }
}

/// What the uncompressed header of a VP9 frame says: frame_marker (2 bits,
/// must be 2), profile low and high bits, a reserved zero bit in profile 3,
/// show_existing_frame, frame_type (0 = key frame), show_frame,
/// error_resilient_mode, then on key frames the sync code `49 83 42`, on
/// other frames intra_only (when not shown) and reset_frame_context (when
/// not error-resilient), which say whether the frame's probabilities come
/// from a saved context ([`Entropy`]; whether a frame saves its own,
/// `refresh_frame_context`, comes much later in the header and is presumed
/// for every frame that is not error-resilient).
pub(crate) fn header_kind(data: &[u8]) -> Kind {
    fn read(data: &[u8]) -> Option<Kind> {
        let mut b = Bits {
            bytes: data,
            bit: 0,
        };
        if b.read(2)? != 2 {
            return None;
        }
        let low = b.read(1)?;
        let profile = b.read(1)? << 1 | low;
        if profile == 3 && b.read(1)? != 0 {
            return None;
        }
        if b.read(1)? == 1 {
            // show_existing_frame: shows a saved picture, decodes nothing.
            return Some(Kind::Delta(Entropy::Own));
        }
        let key = b.read(1)? == 0;
        let show_frame = b.read(1)? == 1;
        let error_resilient = b.read(1)? == 1;
        if key {
            return (b.read(24)? == 0x49_83_42).then_some(Kind::Key);
        }
        if error_resilient {
            return Some(Kind::Delta(Entropy::Resets));
        }
        let intra_only = !show_frame && b.read(1)? == 1;
        let reset_frame_context = b.read(2)?;
        Some(Kind::Delta(if intra_only && reset_frame_context == 3 {
            Entropy::Resets
        } else {
            Entropy::Carried { saves: true }
        }))
    }
    read(data).unwrap_or(Kind::Malformed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::packetize::vp9 as packetize;
    use crate::media::testkit::Rng;

    /// A fake VP9 key frame (profile 0) of `len` (≥ 4) bytes.
    pub(crate) fn key(len: usize, seed: u8) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
        // frame_marker 10, profile 0 0, show_existing 0, frame_type 0, show_frame 1, error_res 0.
        f[..4].copy_from_slice(&[0x82, 0x49, 0x83, 0x42]);
        f
    }

    /// A fake error-resilient VP9 inter frame of `len` (≥ 1) bytes.
    pub(crate) fn delta(len: usize, seed: u8) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len)
            .map(|i| seed.wrapping_mul(7).wrapping_add(i as u8))
            .collect();
        f[0] = 0x87; // frame_type 1, show_frame 1, error_resilient_mode 1
        f
    }

    /// A fake VP9 inter frame of `len` (≥ 2) bytes whose probabilities
    /// come from a saved context (not error-resilient).
    fn chained(len: usize, seed: u8) -> Vec<u8> {
        let mut f = delta(len, seed);
        f[0] = 0x86;
        f
    }

    fn is_key(f: &[u8]) -> bool {
        header_kind(f) == Kind::Key
    }

    fn packets(frames: &[Vec<u8>], max: usize) -> Vec<Packet> {
        crate::media::testkit::packets(frames, max, (1 << 40, 0, 0x7ffe), packetize)
    }

    fn expected(frames: &[Vec<u8>], keep: &[usize]) -> Vec<Frame> {
        crate::media::testkit::expected(frames, keep, 0, is_key)
    }

    fn gop() -> Vec<Vec<u8>> {
        crate::media::testkit::gop(key, delta)
    }

    #[test]
    fn header_kinds() {
        assert_eq!(header_kind(&key(4, 0)), Kind::Key);
        assert_eq!(header_kind(&delta(1, 0)), Kind::Delta(Entropy::Resets));
        assert_eq!(
            header_kind(&chained(2, 0)),
            Kind::Delta(Entropy::Carried { saves: true })
        );
        assert_eq!(header_kind(&[0x86]), Kind::Malformed); // reset_frame_context cut
        assert_eq!(header_kind(&[]), Kind::Malformed);
        assert_eq!(header_kind(&[0x42, 0x49, 0x83, 0x42]), Kind::Malformed); // frame_marker 01
        assert_eq!(header_kind(&[0x82, 0x49, 0x83]), Kind::Malformed); // sync code cut
        assert_eq!(header_kind(&[0x82, 0x49, 0x83, 0x43]), Kind::Malformed); // bad sync code
        assert_eq!(header_kind(&[0x88]), Kind::Delta(Entropy::Own)); // show_existing_frame
                                                                     // Profile 1 (low bit set): same positions.
        assert_eq!(header_kind(&[0xa2, 0x49, 0x83, 0x42]), Kind::Key);
        // Profile 2 (high bit set).
        assert_eq!(header_kind(&[0x92, 0x49, 0x83, 0x42]), Kind::Key);
        assert_eq!(
            header_kind(&[0x96, 0]),
            Kind::Delta(Entropy::Carried { saves: true })
        );
        // Profile 3: reserved zero, then everything one bit later, and the
        // sync code starts at bit 9.
        // 10 1 1 0 0 0 1 | 0 then 0x498342 shifted right by one bit.
        assert_eq!(header_kind(&[0xb1, 0x24, 0xc1, 0xa1, 0x00]), Kind::Key);
        // frame_type 1, not shown: intra_only and reset_frame_context follow.
        assert_eq!(
            header_kind(&[0xb2, 0x00]),
            Kind::Delta(Entropy::Carried { saves: true })
        );
        assert_eq!(header_kind(&[0xb2, 0xe0]), Kind::Delta(Entropy::Resets));
        assert_eq!(
            header_kind(&[0xb2, 0x60]),
            Kind::Delta(Entropy::Carried { saves: true })
        ); // not intra-only
        assert_eq!(header_kind(&[0xb4]), Kind::Delta(Entropy::Own)); // show_existing_frame
                                                                     // Reserved bit set.
        assert_eq!(header_kind(&[0xb8]), Kind::Malformed);
        // The same bits without the reserved one do not line up.
        assert_eq!(
            header_kind(&[0x81, 0x24, 0xc1, 0xa1, 0x00]),
            Kind::Malformed
        );
    }

    #[test]
    fn descriptor_basic() {
        let d = parse_descriptor(&[0x8c, 0x12, 0xff]).unwrap();
        assert!(d.begin && d.end && !d.inter_predicted && !d.flexible);
        assert_eq!((d.picture_id, d.len), (Some(0x12), 2));
        let d = parse_descriptor(&[0xcd, 0xff, 0xff]).unwrap();
        assert!(d.inter_predicted && d.not_upper_reference);
        assert_eq!((d.picture_id, d.len), (Some(0x7fff), 3));
        let d = parse_descriptor(&[0x08]).unwrap();
        assert_eq!((d.picture_id, d.len), (None, 1));
        assert_eq!(parse_descriptor(&[]), None);
        assert_eq!(parse_descriptor(&[0x80]), None);
        assert_eq!(parse_descriptor(&[0x80, 0x80]), None);
    }

    #[test]
    fn descriptor_layers() {
        // Non-flexible: layer byte then TL0PICIDX.
        let d = parse_descriptor(&[0xa8, 0x01, 0b0101_0111, 0x09, 0xaa]).unwrap();
        let l = d.layers.unwrap();
        assert_eq!(
            (l.tid, l.switching_up, l.sid, l.inter_layer, l.tl0_pic_idx),
            (2, true, 3, true, Some(9))
        );
        assert_eq!(d.len, 4);
        assert_eq!(parse_descriptor(&[0xa8, 0x01, 0b0101_0111]), None);
        // Flexible: no TL0PICIDX.
        let d = parse_descriptor(&[0xb8, 0x01, 0b0000_0010, 0xaa]).unwrap();
        assert_eq!(d.layers.unwrap().tl0_pic_idx, None);
        assert_eq!((d.layers.unwrap().sid, d.len), (1, 3));
    }

    #[test]
    fn descriptor_p_diffs() {
        let d = parse_descriptor(&[0xd8, 0x05, 0x03, 0x04, 0xaa]).unwrap();
        assert_eq!((d.p_diffs.clone(), d.len), (vec![1, 2], 4));
        let d = parse_descriptor(&[0xd8, 0x05, 0x03, 0x05, 0x06]).unwrap();
        assert_eq!(d.p_diffs, vec![1, 2, 3]);
        // A fourth is not allowed; a chain that runs out is truncated.
        assert_eq!(
            parse_descriptor(&[0xd8, 0x05, 0x03, 0x05, 0x07, 0x08]),
            None
        );
        assert_eq!(parse_descriptor(&[0xd8, 0x05, 0x03]), None);
        // Non-flexible mode has no P_DIFF even with P set.
        let d = parse_descriptor(&[0xc8, 0x05, 0x03]).unwrap();
        assert_eq!((d.p_diffs.len(), d.len), (0, 2));
        // Flexible without P: none either.
        let d = parse_descriptor(&[0x98, 0x05, 0x03]).unwrap();
        assert_eq!(d.len, 2);
    }

    #[test]
    fn descriptor_scalability_structure() {
        // Two spatial layers with resolutions, a group of two pictures with
        // one and two references.
        let payload = [
            0x8a,
            0x05,        // I B V
            0b0011_1000, // N_S = 1, Y, G
            0x01,
            0x40,
            0x00,
            0xb4, // 320x180
            0x02,
            0x80,
            0x01,
            0x68, // 640x360
            0x02, // N_G
            0b0001_0100,
            0x01, // R = 1
            0b0010_1000,
            0x01,
            0x02, // R = 2
            0xee,
        ];
        let d = parse_descriptor(&payload).unwrap();
        let ss = d.scalability.unwrap();
        assert_eq!(ss.spatial_layers, 2);
        assert_eq!(ss.resolutions, vec![(320, 180), (640, 360)]);
        assert_eq!(ss.group_size, Some(2));
        assert_eq!(d.len, payload.len() - 1);
        for n in 0..payload.len() - 1 {
            assert_eq!(parse_descriptor(&payload[..n]), None, "{n} bytes");
        }
        // The smallest SS: one byte.
        let d = parse_descriptor(&[0x0a, 0x00, 0x82]).unwrap();
        assert_eq!(d.scalability.unwrap().spatial_layers, 1);
        assert_eq!(d.len, 2);
        // Eight layers with resolutions, N_G 255 and R 3 everywhere, cut short.
        let mut big = vec![0x0a, 0xf8];
        big.extend([0x11; 32]);
        big.push(0xff);
        big.extend([0x0c; 10]);
        assert_eq!(parse_descriptor(&big), None);
    }

    #[test]
    fn round_trip() {
        let frames = gop();
        for max in [4, 17, 100, 1200] {
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
        let frames = vec![delta(50, 1), key(50, 3), delta(50, 4)];
        let (out, stats) = depacketize(&packets(&frames, 1200));
        assert_eq!(out, expected(&frames, &[1, 2]));
        assert_eq!(
            stats,
            Stats {
                frames: 2,
                waiting_for_keyframe: 1,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn a_key_header_with_p_set_is_not_a_keyframe() {
        let frames = vec![key(40, 1)];
        let mut p = packets(&frames, 1200);
        p[0].payload[0] |= 0x40;
        let (out, stats) = depacketize(&p);
        assert!(out.is_empty());
        assert_eq!(stats.waiting_for_keyframe, 1);
    }

    #[test]
    fn lost_middle_packet_drops_only_its_frame() {
        let frames = gop();
        let mut p = packets(&frames, 100);
        // Key frame: 450 / 97 → 5 packets; frame 1: 3 packets (5, 6, 7).
        assert_eq!(p[5].ts, p[7].ts);
        p.remove(6);
        let (out, stats) = depacketize(&p);
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
    fn after_a_loss_frames_on_stale_probabilities_wait_for_a_reset() {
        // Key, chained, chained (lost), chained, error-resilient, chained,
        // key, chained.
        let frames = vec![
            key(40, 1),
            chained(40, 2),
            chained(40, 3),
            chained(40, 4),
            delta(40, 5),
            chained(40, 6),
            key(40, 7),
            chained(40, 8),
        ];
        let mut p = packets(&frames, 1200);
        p.remove(2);
        let (out, stats) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[0, 1, 4, 5, 6, 7]));
        assert_eq!(
            stats,
            Stats {
                frames: 6,
                after_loss: 2,
                stale_contexts: 1,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn end_bit_ends_a_frame_without_marker() {
        let frames = gop();
        let mut p = packets(&frames, 100);
        for x in &mut p {
            x.marker = false;
        }
        let (out, stats) = depacketize(&p);
        assert_eq!(out, expected(&frames, &[0, 1, 2, 3, 4, 5, 6]));
        assert_eq!(stats.frames, 7);
        // Without E nor marker, the last frame is cut short.
        let last = p.len() - 1;
        p[last].payload[0] &= !0x04;
        let (out, stats) = depacketize(&p);
        assert_eq!(out.len(), 6);
        assert_eq!(stats.incomplete, 1);
    }

    #[test]
    fn duplicates_are_ignored() {
        let frames = gop();
        let p = packets(&frames, 100);
        let dup: Vec<Packet> = p.iter().flat_map(|x| [x.clone(), x.clone()]).collect();
        let (out, _) = depacketize(&dup);
        assert_eq!(out, expected(&frames, &[0, 1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn upper_spatial_layers_are_left_out() {
        // Each picture: SID 0 then SID 1, in one packet each, non-flexible.
        let mut p = Vec::new();
        let mut seq = 0;
        let base = [key(30, 1), delta(30, 2), delta(30, 3)];
        for (i, f) in base.iter().enumerate() {
            let ts = 3000 * i as u64;
            let pb = if i == 0 { 0x00 } else { 0x40 };
            for sid in 0..2u8 {
                let mut payload = vec![0xac | pb, i as u8, sid << 1 | u8::from(sid == 1), 0];
                payload.extend_from_slice(if sid == 0 { f } else { &[0x86, 9, 9][..] });
                p.push(Packet {
                    seq,
                    ts,
                    marker: sid == 1,
                    payload,
                });
                seq += 1;
            }
        }
        let (out, stats) = depacketize(&p);
        assert_eq!(
            out.iter().map(|f| f.data.clone()).collect::<Vec<_>>(),
            base.to_vec()
        );
        assert!(out[0].keyframe && !out[1].keyframe);
        assert_eq!(
            stats,
            Stats {
                frames: 3,
                ..Stats::default()
            }
        );
        // Losing an upper-layer packet is a loss, but the base layer of
        // that picture and the next picture are whole: all three are kept.
        p.remove(3);
        let (out, stats) = depacketize(&p);
        assert_eq!(
            out.iter().map(|f| f.data.clone()).collect::<Vec<_>>(),
            base.to_vec()
        );
        assert_eq!((stats.after_loss, stats.waiting_for_keyframe), (1, 0));
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..200 {
            let mut p = Vec::new();
            let mut seq = rng.next() >> 20;
            let mut ts = rng.next() >> 20;
            for _ in 0..rng.below(60) {
                seq += if rng.below(10) == 0 { rng.below(4) } else { 1 };
                if rng.below(4) == 0 {
                    ts += rng.below(5000);
                }
                let len = rng.below(40) as usize;
                let payload = rng.bytes(len);
                let _ = parse_descriptor(&payload);
                let _ = header_kind(&payload);
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
        }
        // Descriptors with every first byte and random tails.
        for first in 0..=255u8 {
            for _ in 0..20 {
                let len = rng.below(12) as usize;
                let mut payload = vec![first];
                payload.extend(rng.bytes(len));
                if let Some(d) = parse_descriptor(&payload) {
                    assert!(d.len <= payload.len() && d.p_diffs.len() <= 3);
                }
            }
        }
    }

    #[test]
    fn mutated_streams_never_hand_out_a_broken_frame() {
        let frames = gop();
        let clean = packets(&frames, 60);
        let mut rng = Rng(7);
        for _ in 0..2000 {
            let mut p = clean.clone();
            let i = rng.below(p.len() as u64) as usize;
            match rng.below(3) {
                0 => {
                    let j = rng.below(p[i].payload.len() as u64) as usize;
                    p[i].payload[j] ^= 1 << rng.below(8);
                }
                1 => {
                    let n = rng.below(p[i].payload.len() as u64 + 1) as usize;
                    p[i].payload.truncate(n);
                }
                _ => {
                    p.remove(i);
                }
            }
            let (out, stats) = depacketize(&p);
            assert_eq!(stats.frames, out.len() as u64);
            assert!(out.first().is_none_or(|f| f.keyframe));
        }
        for _ in 0..500 {
            let mut p = clean.clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(p.len() as u64) as usize;
                p.remove(i);
            }
            let (out, _) = depacketize(&p);
            for f in &out {
                assert_eq!(f.data, frames[(f.ts / 3000) as usize]);
            }
        }
    }
}
