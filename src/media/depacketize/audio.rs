//! Audio over RTP: Opus (RFC 7587), G.711 PCMU/PCMA and G.722 (RFC 3551).
//!
//! Audio has no keyframes, so a loss never drops what follows it; instead
//! the hole becomes silence of the right length, so that the audio stays in
//! step with the RTP timeline (and with the video). [`opus`] hands out one
//! Opus packet per RTP packet and fills holes with Opus silence packets;
//! [`g711`] decodes PCMU/PCMA to 16-bit samples laid on the timeline by RTP
//! timestamp, with zeros where packets are missing. The G.711 codec itself
//! ([`decode_ulaw`], [`encode_ulaw`], [`decode_alaw`], [`encode_alaw`])
//! follows the segment/quantisation formulas of ITU-T G.711.

use super::{Frame, Packet, Stats};

/// The Opus RTP clock (RFC 7587: always 48 kHz).
const OPUS_CLOCK_PER_MS: u64 = 48;

/// The longest hole [`opus`] fills at once: one hour. A larger timestamp
/// jump is taken as a discontinuity rather than filled with silence.
const OPUS_MAX_FILL: u64 = 3600 * 1000 * OPUS_CLOCK_PER_MS;

/// A CELT-only, fullband, mono Opus packet of one 20 ms frame whose frame
/// decodes as silence (TOC config 31, code 0, then a frame whose first
/// range-coded symbol is the CELT silence flag).
pub const OPUS_SILENCE_20MS: [u8; 3] = [0xf8, 0xff, 0xfe];

/// Opus silence packets by duration (48 kHz ticks), longest first: the same
/// silent CELT frame under TOC configs 31, 30, 29 and 28 (20, 10, 5 and
/// 2.5 ms), used for holes that are not a whole number of 20 ms frames.
const OPUS_SILENCE: [(u64, [u8; 3]); 4] = [
    (960, OPUS_SILENCE_20MS),
    (480, [0xf0, 0xff, 0xfe]),
    (240, [0xe8, 0xff, 0xfe]),
    (120, [0xe0, 0xff, 0xfe]),
];

/// The longest timeline [`g711`] and [`g722`] build: 4 hours of 8 kHz ticks.
pub const G711_MAX_SAMPLES: u64 = 4 * 3600 * 8000;

/// The number of 48 kHz samples in an Opus packet, from its TOC byte and
/// frame count (RFC 6716 §3.1); `None` if the packet breaks the rules of
/// §3.4 (R1–R7) that can be checked without decoding it.
///
/// Frame sizes: configs 0–11 (SILK) 10/20/40/60 ms, 12–15 (hybrid) 10/20 ms,
/// 16–31 (CELT) 2.5/5/10/20 ms. Code 0 holds one frame, codes 1 and 2 two,
/// code 3 the count `M` in the second byte (at most 120 ms in all).
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let (&toc, rest) = packet.split_first()?;
    let config = toc >> 3;
    let frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 => {
            // R3: two frames of equal size.
            if rest.len() % 2 != 0 {
                return None;
            }
            2
        }
        2 => {
            // R4: the first frame's length must fit.
            let (len, used) = frame_length(rest)?;
            if len > rest.len() - used {
                return None;
            }
            2
        }
        _ => {
            let (&count, mut rest) = rest.split_first()?;
            let m = (count & 0x3f) as u32;
            // R5: at least one frame, at most 120 ms.
            if m == 0 || m * frame > 5760 {
                return None;
            }
            if count & 0x40 != 0 {
                // Opus padding: each 255 adds 254 bytes and another length byte.
                let mut padding = 0usize;
                loop {
                    let (&b, r) = rest.split_first()?;
                    rest = r;
                    if b == 255 {
                        padding += 254;
                    } else {
                        padding += b as usize;
                        break;
                    }
                }
                rest = rest.get(..rest.len().checked_sub(padding)?)?;
            }
            if count & 0x80 != 0 {
                // R6 (VBR): M-1 lengths, then frames that fit.
                let mut total = 0usize;
                for _ in 1..m {
                    let (len, used) = frame_length(rest)?;
                    rest = &rest[used..];
                    total += len;
                }
                if total > rest.len() {
                    return None;
                }
            } else if rest.len() % m as usize != 0 {
                // R7 (CBR): M frames of equal size.
                return None;
            }
            m
        }
    };
    Some(frames * frame)
}

/// An Opus frame length (1 or 2 bytes, RFC 6716 §3.2.1) and the bytes it used.
fn frame_length(bytes: &[u8]) -> Option<(usize, usize)> {
    match *bytes {
        [b, ..] if b < 252 => Some((b as usize, 1)),
        [b, c, ..] => Some((c as usize * 4 + b as usize, 2)),
        _ => None,
    }
}

/// Opus frames of one stream, in order, with holes filled by silence.
///
/// Padding-only packets (empty payload) are dropped and duplicate sequence
/// numbers read once. A packet whose TOC byte breaks RFC 6716 §3.4 is
/// dropped (`incomplete`) and treated as lost. Wherever the next packet's
/// timestamp lies beyond the end of the previous one (its timestamp plus
/// its TOC-derived duration) — lost packets, or a pause in transmission
/// (DTX) — the hole is filled with 20 ms silence packets
/// ([`OPUS_SILENCE_20MS`]), then 10, 5 and 2.5 ms ones for a remainder that
/// is not a whole 20 ms, each counted in `concealed`. A remainder under
/// 2.5 ms (never produced by a real Opus sender) and holes over one hour
/// are not filled. A packet that starts before the previous one ends
/// (overlapping timestamps; no real sender does it) is dropped
/// (`incomplete`), as G.711 ignores overlapping data: the timeline only
/// moves forward.
pub fn opus(packets: &[Packet]) -> (Vec<Frame>, Stats) {
    let mut stats = Stats::default();
    let mut frames = Vec::with_capacity(packets.len());
    // Where the previous packet ends on the timeline.
    let mut end: Option<u64> = None;
    for (p, _) in super::fresh(packets) {
        if p.payload.is_empty() {
            continue;
        }
        let Some(samples) = opus_packet_samples(&p.payload) else {
            stats.incomplete += 1;
            continue;
        };
        if end.is_some_and(|e| p.ts < e) {
            stats.incomplete += 1;
            continue;
        }
        if let Some(mut at) = end {
            if p.ts > at && p.ts - at <= OPUS_MAX_FILL {
                for (len, silence) in OPUS_SILENCE {
                    while p.ts - at >= len {
                        frames.push(Frame {
                            ts: at,
                            keyframe: true,
                            data: silence.to_vec(),
                        });
                        stats.concealed += 1;
                        at += len;
                    }
                }
            }
        }
        end = Some(p.ts + samples as u64);
        frames.push(Frame {
            ts: p.ts,
            keyframe: true,
            data: p.payload.clone(),
        });
        stats.frames += 1;
    }
    (frames, stats)
}

/// 8 kHz mono samples of one PCMU (`a_law` false) or PCMA stream.
///
/// The first media packet's timestamp is sample 0, and each packet's bytes
/// are decoded to the samples at its timestamp. Samples no packet covers
/// stay zero (silence): each missing sequence number counts one
/// `concealed`, and a hole in the timestamps with no missing sequence
/// number (the sender paused) counts one. Data that overlaps samples
/// already written (duplicates, overlapping timestamps) is ignored for
/// those samples, so it never moves anything on the timeline. Padding-only
/// packets are skipped. The timeline stops at [`G711_MAX_SAMPLES`]; packets
/// beyond it count as `incomplete`. `frames` counts the packets used.
pub fn g711(packets: &[Packet], a_law: bool) -> (Vec<i16>, Stats) {
    let decode = if a_law { decode_alaw } else { decode_ulaw };
    byte_timeline(packets, 1, |bytes, out| {
        out.extend(bytes.iter().map(|&b| decode(b)))
    })
}

/// 16 kHz mono samples of one G.722 (64 kbit/s) stream, laid on the
/// timeline like [`g711`]'s. RFC 3551 keeps G.722's RTP clock at 8 kHz:
/// one byte per tick, two samples per byte. The decoder's state runs on
/// across a hole, as it would in a phone.
pub fn g722(packets: &[Packet]) -> (Vec<i16>, Stats) {
    let mut decoder = crate::media::g722::G722Decoder::new();
    byte_timeline(packets, 2, |bytes, out| decoder.decode(bytes, out))
}

/// Lays payload bytes (one per RTP tick) on a timeline by timestamp;
/// `decode` turns bytes into `per_byte` samples each. See [`g711`].
fn byte_timeline(
    packets: &[Packet],
    per_byte: usize,
    mut decode: impl FnMut(&[u8], &mut Vec<i16>),
) -> (Vec<i16>, Stats) {
    let mut stats = Stats::default();
    let mut out: Vec<i16> = Vec::new();
    let mut base: Option<u64> = None;
    for (p, missing) in super::fresh(packets) {
        stats.concealed += missing;
        if p.payload.is_empty() {
            continue;
        }
        let base = *base.get_or_insert(p.ts);
        // Where the packet's first byte lies on the timeline, in ticks
        // (negative only for a timestamp before the first packet's).
        let first = p.ts as i128 - base as i128;
        if first + p.payload.len() as i128 > G711_MAX_SAMPLES as i128 {
            stats.incomplete += 1;
            continue;
        }
        let written = (out.len() / per_byte) as i128;
        if first > written {
            if missing == 0 {
                stats.concealed += 1;
            }
            out.resize(first as usize * per_byte, 0);
        }
        // Bytes for ticks before 0 or already written are skipped.
        let skip = ((out.len() / per_byte) as i128 - first).max(0) as usize;
        if let Some(new) = p.payload.get(skip..) {
            decode(new, &mut out);
        }
        stats.frames += 1;
    }
    (out, stats)
}

/// Decodes a G.711 μ-law byte to a 16-bit sample.
///
/// The byte is transmitted inverted; once inverted, bit 7 is the sign
/// (set = negative), bits 6–4 the segment `e` and bits 3–0 the step `m`.
/// The magnitude is the middle of the step, `((2m + 33) << e) - 33` on the
/// standard's 14-bit scale, times 4 for 16 bits.
pub fn decode_ulaw(byte: u8) -> i16 {
    let u = !byte;
    let e = (u >> 4) & 7;
    let m = (u & 0x0f) as i32;
    let magnitude = (((2 * m + 33) << e) - 33) * 4;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// Encodes a 16-bit sample to G.711 μ-law (the inverse of [`decode_ulaw`]):
/// the magnitude on the 14-bit scale plus the bias 33 lies in
/// `[32 << e, 64 << e)` for segment `e`, and `m` is its next four bits.
pub fn encode_ulaw(sample: i16) -> u8 {
    let sign = if sample < 0 { 0x80 } else { 0 };
    // 14-bit magnitude, clipped to the top of segment 7 (8158).
    let magnitude = ((sample as i32).abs() / 4).min(8158) + 33;
    // Segment: position of the highest set bit, minus 5.
    let e = (31 - (magnitude as u32).leading_zeros())
        .saturating_sub(5)
        .min(7);
    let m = (magnitude >> (e + 1)) & 0x0f;
    !(sign | (e as u8) << 4 | m as u8)
}

/// Decodes a G.711 A-law byte to a 16-bit sample.
///
/// The even bits are transmitted inverted (XOR 0x55); then bit 7 is the
/// sign (set = positive), bits 6–4 the segment `e` and bits 3–0 the step
/// `m`. On the standard's 13-bit scale the magnitude is `2m + 1` in
/// segment 0 and `(2m + 33) << (e - 1)` above it, times 8 for 16 bits.
pub fn decode_alaw(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let e = (a >> 4) & 7;
    let m = (a & 0x0f) as i32;
    let magnitude = if e == 0 {
        2 * m + 1
    } else {
        (2 * m + 33) << (e - 1)
    } * 8;
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// Encodes a 16-bit sample to G.711 A-law (the inverse of [`decode_alaw`]):
/// on the 13-bit scale, segment 0 covers magnitudes below 32 in steps of 2,
/// and segment `e` ≥ 1 covers `[16 << e, 32 << e)` in steps of `1 << e`.
pub fn encode_alaw(sample: i16) -> u8 {
    let sign = if sample >= 0 { 0x80 } else { 0 };
    let magnitude = ((sample as i32).abs() / 8).min(4095) as u32;
    let (e, m) = if magnitude < 32 {
        (0, magnitude >> 1)
    } else {
        let e = 31 - magnitude.leading_zeros() - 4;
        (e, (magnitude >> e) & 0x0f)
    };
    (sign | (e as u8) << 4 | m as u8) ^ 0x55
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::media::testkit::Rng;

    fn pk(seq: u64, ts: u64, payload: &[u8]) -> Packet {
        Packet {
            seq,
            ts,
            marker: false,
            payload: payload.to_vec(),
        }
    }

    /// `n` 20 ms Opus packets (CELT FB, code 0) from seq 10 and ts 48000.
    fn opus_stream(n: u64) -> Vec<Packet> {
        (0..n)
            .map(|i| pk(10 + i, 48_000 + i * 960, &[0xfc, i as u8, 0x55]))
            .collect()
    }

    /// The duration of a frame list, from the first frame's start to the
    /// end of the last, and whether it has no hole or overlap.
    fn contiguous(frames: &[Frame]) -> (u64, bool) {
        let mut ok = true;
        for w in frames.windows(2) {
            ok &= w[0].ts + opus_packet_samples(&w[0].data).unwrap() as u64 == w[1].ts;
        }
        let last = frames.last().unwrap();
        let end = last.ts + opus_packet_samples(&last.data).unwrap() as u64;
        (end - frames[0].ts, ok)
    }

    #[test]
    fn toc_sample_counts() {
        let cases: &[(&[u8], Option<u32>)] = &[
            (&[], None),
            (&[0 << 3], Some(480)),                     // SILK NB 10 ms
            (&[1 << 3, 7], Some(960)),                  // SILK NB 20 ms
            (&[2 << 3], Some(1920)),                    // SILK NB 40 ms
            (&[11 << 3], Some(2880)),                   // SILK WB 60 ms
            (&[12 << 3], Some(480)),                    // hybrid SWB 10 ms
            (&[15 << 3], Some(960)),                    // hybrid FB 20 ms
            (&[16 << 3], Some(120)),                    // CELT NB 2.5 ms
            (&[21 << 3], Some(240)),                    // CELT WB 5 ms
            (&[30 << 3], Some(480)),                    // CELT FB 10 ms
            (&[0xfc, 1, 2, 3], Some(960)),              // CELT FB 20 ms, stereo
            (&[0xf9, 1, 2], Some(1920)),                // code 1: two equal frames
            (&[0xf9, 1], None),                         // code 1 with odd length (R3)
            (&[0xf9], Some(1920)),                      // code 1, two empty frames
            (&[0xfa, 1, 9, 8], Some(1920)),             // code 2: first frame 1 byte
            (&[0xfa, 3, 9], None),                      // code 2: first frame too long (R4)
            (&[0xfa], None),                            // code 2 without a length
            (&[0xfa, 252, 1, 0], None),                 // code 2, two-byte length 256
            (&[0xfb, 3, 1, 2, 3], Some(2880)),          // code 3 CBR, 3 frames
            (&[0xfb, 3, 1, 2], None),                   // code 3 CBR, not divisible (R7)
            (&[0xfb, 0], None),                         // code 3, no frames (R5)
            (&[0xfb], None),                            // code 3 without a count
            (&[0xfb, 6], Some(5760)),                   // 6 × 20 ms = 120 ms
            (&[0xfb, 7], None),                         // 140 ms (R5)
            (&[0x1b, 2], Some(5760)),                   // SILK 60 ms × 2
            (&[0x1b, 3], None),                         // 180 ms
            (&[0x83, 48], Some(5760)),                  // CELT 2.5 ms × 48
            (&[0xfb, 0x82, 1, 7, 8], Some(1920)),       // VBR: lengths 1 and 1
            (&[0xfb, 0x82, 3, 7], None),                // VBR: first frame too long (R6)
            (&[0xfb, 0x42, 2, 1, 2, 0, 0], Some(1920)), // CBR with 2 bytes of padding
            (&[0xfb, 0x42, 9, 1, 2], None),             // padding longer than the packet
            (&[0xfb, 0x42, 255], None),                 // padding length runs off the end
        ];
        for (packet, want) in cases {
            assert_eq!(opus_packet_samples(packet), *want, "{packet:02x?}");
        }
    }

    #[test]
    fn opus_clean_stream() {
        let packets = opus_stream(50);
        let (frames, stats) = opus(&packets);
        assert_eq!(frames.len(), 50);
        assert_eq!(
            stats,
            Stats {
                frames: 50,
                ..Stats::default()
            }
        );
        assert!(frames
            .iter()
            .zip(&packets)
            .all(|(f, p)| f.data == p.payload && f.ts == p.ts));
        assert!(frames.iter().all(|f| f.keyframe));
    }

    #[test]
    fn opus_gap_becomes_silence_of_the_right_length() {
        let mut packets = opus_stream(20);
        packets.drain(5..9); // 4 × 20 ms lost
        let (frames, stats) = opus(&packets);
        assert_eq!(stats.concealed, 4);
        assert_eq!(stats.frames, 16);
        assert_eq!(frames.len(), 20);
        for (i, f) in frames[5..9].iter().enumerate() {
            assert_eq!(f.data, OPUS_SILENCE_20MS);
            assert_eq!(f.ts, 48_000 + (5 + i as u64) * 960);
        }
        assert_eq!(contiguous(&frames), (20 * 960, true));
    }

    #[test]
    fn opus_gap_of_10ms_packets() {
        // 10 ms packets; three lost = 30 ms = one 20 ms and one 10 ms silence.
        let mut packets: Vec<Packet> = (0..10).map(|i| pk(i, i * 480, &[30 << 3, 1, 2])).collect();
        packets.drain(3..6);
        let (frames, stats) = opus(&packets);
        assert_eq!(stats.concealed, 2);
        assert_eq!(frames[3].data, OPUS_SILENCE_20MS);
        assert_eq!(opus_packet_samples(&frames[4].data), Some(480));
        assert_eq!(contiguous(&frames), (10 * 480, true));
        // 2.5 ms granularity: a 60 ms packet followed by a hole of 62.5 ms.
        let packets = vec![pk(0, 0, &[3 << 3, 1]), pk(3, 2880 + 3000, &[0xf8, 1])];
        let (frames, stats) = opus(&packets);
        assert_eq!(stats.concealed, 3 + 1);
        assert_eq!(contiguous(&frames), (2880 + 3000 + 960, true));
    }

    #[test]
    fn opus_dtx_jump_is_filled() {
        // Consecutive sequence numbers, but 400 ms between two packets.
        let packets = vec![
            pk(1, 0, &[0xf8, 1]),
            pk(2, 960, &[0xf8, 1]),
            pk(3, 960 + 400 * 48, &[0xf8, 1]),
        ];
        let (frames, stats) = opus(&packets);
        assert_eq!(stats.concealed, 19);
        assert_eq!(contiguous(&frames), (22 * 960, true));
        // A jump of exactly one frame is no hole; a hole beyond an hour is not filled.
        let packets = vec![
            pk(1, 0, &[0xf8]),
            pk(2, 960, &[0xf8]),
            pk(3, 10 * 3_600_000 * 48, &[0xf8]),
        ];
        let (frames, stats) = opus(&packets);
        assert_eq!((frames.len(), stats.concealed), (3, 0));
    }

    #[test]
    fn opus_duplicates_padding_and_bad_packets() {
        let packets = vec![
            pk(1, 0, &[0xf8, 1]),
            pk(1, 0, &[0xf8, 1]),
            pk(2, 960, &[]), // padding only: not a loss
            pk(3, 960, &[0xf8, 2]),
            pk(4, 1920, &[0xf9, 1]), // malformed (R3): dropped, then filled
            pk(5, 2880, &[0xf8, 3]),
        ];
        let (frames, stats) = opus(&packets);
        assert_eq!(stats.frames, 3);
        assert_eq!(stats.incomplete, 1);
        assert_eq!(stats.concealed, 1);
        let ts: Vec<u64> = frames.iter().map(|f| f.ts).collect();
        assert_eq!(ts, [0, 960, 1920, 2880]);
        assert_eq!(frames[2].data, OPUS_SILENCE_20MS);
    }

    #[test]
    fn ulaw_codes_round_trip() {
        for b in 0..=255u8 {
            let want = if b == 0x7f { 0xff } else { b }; // −0 and +0
            assert_eq!(encode_ulaw(decode_ulaw(b)), want, "{b:#04x}");
        }
        assert_eq!(decode_ulaw(0xff), 0);
        assert_eq!(decode_ulaw(0x80), 32124);
        assert_eq!(decode_ulaw(0x00), -32124);
        assert_eq!(decode_ulaw(0xfe), 8);
    }

    #[test]
    fn alaw_codes_round_trip() {
        for b in 0..=255u8 {
            assert_eq!(encode_alaw(decode_alaw(b)), b, "{b:#04x}");
        }
        assert_eq!(decode_alaw(0xd5), 8);
        assert_eq!(decode_alaw(0x55), -8);
        assert_eq!(decode_alaw(0xaa), 32256);
        assert_eq!(decode_alaw(0x2a), -32256);
    }

    #[test]
    fn samples_round_trip_within_quantisation_error() {
        for x in i16::MIN..=i16::MAX {
            let m = (x as i32).abs();
            // μ-law: half a step of segment e is 4 << e, and the 16-bit
            // magnitude is at least (128 << e) - 132 there; plus 3 for the
            // 16 → 14-bit truncation. Beyond the clip level, 32124 comes back.
            let u = decode_ulaw(encode_ulaw(x)) as i32;
            let err = (u - x as i32).abs();
            if m <= 32635 {
                assert!(err <= (m + 132) / 32 + 4, "μ-law {x} → {u}");
            } else {
                assert_eq!(u.abs(), 32124);
            }
            assert!(u == 0 || (u < 0) == (x < 0), "μ-law sign {x} → {u}");
            // A-law: half a step is 8 in segments 0 and 1, 4 << e above,
            // where the magnitude is at least 128 << e; plus 7 for 16 → 13 bits.
            let a = decode_alaw(encode_alaw(x)) as i32;
            let err = (a - x as i32).abs();
            assert!(err <= (m / 32).max(8) + 8, "A-law {x} → {a}");
        }
    }

    #[test]
    fn g711_on_the_timeline() {
        let tone: Vec<i16> = (0..800)
            .map(|i| ((i * 97) % 2000 - 1000) as i16 * 8)
            .collect();
        for a_law in [false, true] {
            let enc = |s: &[i16]| -> Vec<u8> {
                s.iter()
                    .map(|&x| {
                        if a_law {
                            encode_alaw(x)
                        } else {
                            encode_ulaw(x)
                        }
                    })
                    .collect()
            };
            let dec = |s: &[i16]| -> Vec<i16> {
                enc(s)
                    .into_iter()
                    .map(|b| {
                        if a_law {
                            decode_alaw(b)
                        } else {
                            decode_ulaw(b)
                        }
                    })
                    .collect()
            };
            // Five packets of 160 samples from ts 12345; the third is lost.
            let mut packets: Vec<Packet> = (0..5)
                .map(|i| {
                    pk(
                        7 + i,
                        12_345 + i * 160,
                        &enc(&tone[i as usize * 160..][..160]),
                    )
                })
                .collect();
            packets.remove(2);
            let (samples, stats) = g711(&packets, a_law);
            assert_eq!(samples.len(), 800);
            assert_eq!(stats.concealed, 1);
            assert_eq!(stats.frames, 4);
            let mut want = dec(&tone);
            want[320..480].fill(0);
            assert_eq!(samples, want);

            // A duplicate and an overlapping packet move nothing.
            let mut noisy = packets.clone();
            noisy.insert(1, packets[0].clone());
            noisy.insert(3, pk(9, 12_345 + 220, &enc(&[1000; 160])));
            let (again, stats) = g711(&noisy, a_law);
            assert_eq!(again.len(), 800);
            assert_eq!(again[..320], want[..320]);
            assert_eq!(again[320..380], dec(&[1000; 60])[..]);
            assert_eq!(again[380..480], [0; 100]);
            assert_eq!(again[480..], want[480..]);
            assert_eq!((stats.frames, stats.concealed), (5, 1));

            // A pause without a missing sequence number is a hole too.
            let paused = vec![pk(1, 0, &enc(&[500; 10])), pk(2, 30, &enc(&[500; 10]))];
            let (s, stats) = g711(&paused, a_law);
            assert_eq!(s.len(), 40);
            assert_eq!(s[10..30], [0; 20]);
            assert_ne!(s[30], 0);
            assert_eq!(stats.concealed, 1);
        }
    }

    #[test]
    fn g711_limits() {
        let (s, stats) = g711(
            &[
                pk(1, 5, &[0xff; 4]),
                pk(2, 5 + G711_MAX_SAMPLES, &[0xff; 4]),
            ],
            false,
        );
        assert_eq!(s.len(), 4);
        assert_eq!(stats.incomplete, 1);
        let (s, stats) = g711(&[pk(1, 5, &[]), pk(2, 5, &[])], true);
        assert!(s.is_empty());
        assert_eq!(stats, Stats::default());
        // A timestamp before the first packet's: only what lies after sample 0 counts.
        let (s, _) = g711(&[pk(1, 100, &[0xd5; 4]), pk(2, 98, &[0x55; 8])], true);
        assert_eq!(s, [8, 8, 8, 8, -8, -8]);
    }

    #[test]
    fn no_panics_on_random_input() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let n = rng.below(40) as usize;
            let mut seq = rng.below(1000);
            let mut ts = rng.below(1 << 40);
            let packets: Vec<Packet> = (0..n)
                .map(|_| {
                    seq += rng.below(4);
                    ts += rng.below(5000);
                    let len = rng.below(30) as usize;
                    Packet {
                        seq,
                        ts,
                        marker: rng.below(2) == 0,
                        payload: (0..len).map(|_| rng.next() as u8).collect(),
                    }
                })
                .collect();
            for p in &packets {
                if let Some(n) = opus_packet_samples(&p.payload) {
                    assert!((120..=5760).contains(&n));
                }
            }
            let (frames, stats) = opus(&packets);
            assert_eq!(frames.len() as u64, stats.frames + stats.concealed);
            let _ = g711(&packets, false);
            let _ = g711(&packets, true);
        }
    }
}
