//! Unit tests of the H.264 depacketizer ([`crate::media::depacketize::h264`]),
//! with the packetizer ([`crate::media::packetize::h264`]) and the access
//! unit splitter as the sender side.

use crate::media::depacketize::h264::{
    depacketize, first_mb_in_slice, nal_type, parse_payload, rbsp_prefix, read_ue, Unit, FU_A,
    FU_B, MTAP16, MTAP24, NAL_IDR, STAP_B, START_CODE,
};
use crate::media::depacketize::{Packet, Stats};
use crate::media::packetize::{
    h264 as packetize, h264_access_units as split_access_units, split_nals,
};

use crate::media::testkit::Rng;

/// A NAL unit: `header`, then `body` bytes that never form a start code.
fn nal(header: u8, first: u8, len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let mut n = vec![header, first];
    n.extend((2..len).map(|_| (r.next() % 255) as u8 + 1));
    n
}

pub(crate) fn sps() -> Vec<u8> {
    nal(0x67, 0x42, 12, 1)
}
pub(crate) fn pps() -> Vec<u8> {
    nal(0x68, 0xce, 5, 2)
}
/// A slice with first_mb_in_slice = 0 (ue "1" as the first bit).
pub(crate) fn idr(len: usize, seed: u64) -> Vec<u8> {
    nal(0x65, 0x88, len, seed)
}
pub(crate) fn non_idr(len: usize, seed: u64) -> Vec<u8> {
    nal(0x41, 0x9a, len, seed)
}
/// A slice with first_mb_in_slice = 5 (ue "00110").
fn second_slice(len: usize, seed: u64) -> Vec<u8> {
    nal(0x41, 0b0011_0000, len, seed)
}

pub(crate) fn annexb(nals: &[Vec<u8>]) -> Vec<u8> {
    nals.iter()
        .flat_map(|n| START_CODE.iter().copied().chain(n.iter().copied()))
        .collect()
}

/// Packets for access units, 3000 ticks apart, consecutive seq.
fn packets_for(aus: &[Vec<u8>], max: usize) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut seq = 1000;
    for (i, au) in aus.iter().enumerate() {
        for (marker, payload) in packetize(au, max) {
            out.push(Packet {
                seq,
                ts: 90_000 + i as u64 * 3000,
                marker,
                payload,
            });
            seq += 1;
        }
    }
    out
}

/// IDR, four P-frames, IDR, P: with a large first IDR that needs FU-A.
fn gop() -> Vec<Vec<u8>> {
    vec![
        annexb(&[sps(), pps(), idr(3000, 3)]),
        annexb(&[non_idr(400, 4)]),
        annexb(&[non_idr(1500, 5), second_slice(900, 6)]),
        annexb(&[non_idr(80, 7)]),
        annexb(&[non_idr(60, 8)]),
        annexb(&[sps(), pps(), idr(2000, 9)]),
        annexb(&[non_idr(700, 10)]),
    ]
}

#[test]
fn round_trip() {
    let aus = gop();
    for max in [3, 50, 200, 1200, 5000] {
        let packets = packets_for(&aus, max);
        let (frames, stats) = depacketize(&packets);
        assert_eq!(stats.frames, aus.len() as u64, "max {max}");
        assert_eq!(stats.incomplete + stats.waiting_for_keyframe, 0);
        let data: Vec<Vec<u8>> = frames.iter().map(|f| f.data.clone()).collect();
        assert_eq!(data, aus, "max {max}");
        let keys: Vec<bool> = frames.iter().map(|f| f.keyframe).collect();
        assert_eq!(keys, [true, false, false, false, false, true, false]);
        assert_eq!(frames[1].ts, 93_000);
    }
}

#[test]
fn three_byte_start_codes_and_trailing_zeros() {
    let mut au = vec![0, 0, 1];
    au.extend(sps());
    au.extend([0, 0, 0, 0, 1]); // trailing_zero_8bits + 4-byte start code
    au.extend(pps());
    au.extend([0, 0, 1]);
    au.extend(idr(50, 1));
    au.extend([0, 0]);
    let p = packetize(&au, 1200);
    let (frames, _) = depacketize(&[Packet {
        seq: 1,
        ts: 0,
        marker: true,
        payload: p[0].1.clone(),
    }]);
    assert_eq!(frames[0].data, annexb(&[sps(), pps(), idr(50, 1)]));
}

#[test]
fn lost_fu_a_middle_drops_only_its_access_unit() {
    let aus = gop();
    let mut packets = packets_for(&aus, 200);
    // The third access unit's first slice spans 8 fragments; lose one in the middle.
    let (at, _) = packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.ts == 96_000)
        .nth(3)
        .unwrap();
    assert_eq!(nal_type(packets[at].payload[0]), FU_A);
    assert_eq!(packets[at].payload[1] & 0xc0, 0);
    packets.remove(at);
    let (frames, stats) = depacketize(&packets);
    let data: Vec<Vec<u8>> = frames.iter().map(|f| f.data.clone()).collect();
    assert_eq!(
        data,
        vec![
            aus[0].clone(),
            aus[1].clone(),
            aus[3].clone(),
            aus[4].clone(),
            aus[5].clone(),
            aus[6].clone()
        ]
    );
    assert_eq!(stats.incomplete, 1);
    assert_eq!(stats.after_loss, 2);
    assert_eq!(stats.waiting_for_keyframe, 0);
    assert_eq!(stats.frames, 6);
}

#[test]
fn fu_a_without_start_or_end_is_incomplete() {
    let frag = |s: bool, e: bool, d: &[u8]| {
        let mut p = vec![0x60 | FU_A, NAL_IDR | (s as u8) << 7 | (e as u8) << 6];
        p.extend_from_slice(d);
        p
    };
    // Every case starts with an STAP-A carrying the SPS and PPS.
    let run = |fragments: Vec<Vec<u8>>| {
        let mut packets = vec![Packet {
            seq: 0,
            ts: 0,
            marker: false,
            payload: packetize(&annexb(&[sps(), pps()]), 1200)[0].1.clone(),
        }];
        let n = fragments.len();
        for (i, payload) in fragments.into_iter().enumerate() {
            packets.push(Packet {
                seq: i as u64 + 1,
                ts: 0,
                marker: i + 1 == n,
                payload,
            });
        }
        depacketize(&packets)
    };
    // Start and end present: fine.
    let (f, s) = run(vec![
        frag(true, false, &[0x88, 1]),
        frag(false, true, &[2, 3]),
    ]);
    assert_eq!(s.frames, 1, "{s:?}");
    assert_eq!(
        f[0].data,
        annexb(&[sps(), pps(), vec![0x65, 0x88, 1, 2, 3]])
    );
    assert!(f[0].keyframe);
    // No end: the marker comes on a middle fragment.
    let (_, s) = run(vec![
        frag(true, false, &[0x88, 1]),
        frag(false, false, &[2]),
    ]);
    assert_eq!((s.frames, s.incomplete), (0, 1));
    // No start.
    let (_, s) = run(vec![frag(false, true, &[0x88, 1])]);
    assert_eq!((s.frames, s.incomplete), (0, 1));
    // Two starts.
    let (_, s) = run(vec![
        frag(true, false, &[0x88, 1]),
        frag(true, false, &[0x88, 1]),
        frag(false, true, &[2]),
    ]);
    assert_eq!((s.frames, s.incomplete), (0, 1));
    // A single NAL unit inside a fragmented one.
    let (_, s) = run(vec![
        frag(true, false, &[0x88, 1]),
        idr(10, 1),
        frag(false, true, &[2]),
    ]);
    assert_eq!((s.frames, s.incomplete), (0, 1));
    // A fragment of another NAL unit type in the middle.
    let mut other = frag(false, false, &[2]);
    other[1] = (other[1] & 0xe0) | 1;
    let (_, s) = run(vec![
        frag(true, false, &[0x88]),
        other,
        frag(false, true, &[3]),
    ]);
    assert_eq!((s.frames, s.incomplete), (0, 1));
}

fn pk(seq: u64, ts: u64, marker: bool, payload: Vec<u8>) -> Packet {
    Packet {
        seq,
        ts,
        marker,
        payload,
    }
}

fn stap(nals: &[&[u8]]) -> Vec<u8> {
    let mut p = vec![0x78];
    for n in nals {
        p.extend_from_slice(&(n.len() as u16).to_be_bytes());
        p.extend_from_slice(n);
    }
    p
}

#[test]
fn stap_a_bounds() {
    let (s, p) = (sps(), pps());
    let good = stap(&[&s, &p]);
    assert_eq!(
        parse_payload(&good),
        Some(vec![Unit::Nal(&s), Unit::Nal(&p)])
    );
    // Every truncation of it runs past the end somewhere.
    for cut in 1..good.len() {
        let want = if cut == 3 + s.len() {
            Some(vec![Unit::Nal(&s[..])]) // exactly after the first NAL unit
        } else {
            None
        };
        assert_eq!(parse_payload(&good[..cut]), want, "cut at {cut}");
    }
    // A size past the end, a zero size, a lone size byte, nothing aggregated.
    assert_eq!(parse_payload(&[0x78, 0, 9, 0x67, 1, 2]), None);
    assert_eq!(parse_payload(&[0x78, 0, 0, 0, 1, 0x67]), None);
    assert_eq!(parse_payload(&[0x78, 0, 1, 0x67, 0]), None);
    assert_eq!(parse_payload(&[0x78]), None);
    assert_eq!(parse_payload(&[0x78, 0xff, 0xff]), None);
    // Aggregation and fragmentation types inside an STAP-A are refused.
    assert_eq!(parse_payload(&[0x78, 0, 2, 0x7c, 0x85]), None);
    // A reserved type inside one is skipped.
    assert_eq!(
        parse_payload(&[0x78, 0, 1, 0x1e, 0, 1, 0x09]),
        Some(vec![Unit::Nal(&[0x09])])
    );
    // Through the depacketizer: the broken STAP-A makes its access unit incomplete.
    let (frames, stats) = depacketize(&[
        pk(1, 0, false, good[..good.len() - 1].to_vec()),
        pk(2, 0, true, idr(20, 1)),
    ]);
    assert!(frames.is_empty());
    assert_eq!(stats.incomplete, 1);
}

#[test]
fn refused_packet_types() {
    for t in [STAP_B, MTAP16, MTAP24, FU_B] {
        let payload = vec![0x60 | t, 0x80 | 5, 0, 0, 0, 0, 0x88, 1, 2];
        assert_eq!(parse_payload(&payload), None);
        let (frames, stats) = depacketize(&[
            pk(1, 0, false, stap(&[&sps(), &pps()])),
            pk(2, 0, true, payload),
        ]);
        assert!(frames.is_empty());
        assert_eq!(stats.incomplete, 1);
    }
    // FU-A headers carrying an aggregation type, or cut short.
    assert_eq!(parse_payload(&[0x7c, 0x80 | 24, 1]), None);
    assert_eq!(parse_payload(&[0x7c, 0x80]), None);
    assert_eq!(parse_payload(&[0x7c]), None);
    assert_eq!(parse_payload(&[]), None);
    // Reserved types are ignored without harm.
    assert_eq!(parse_payload(&[0x00, 1]), Some(vec![]));
    assert_eq!(parse_payload(&[0x1f]), Some(vec![]));
}

#[test]
fn sps_and_pps_are_prepended_to_an_idr() {
    let sei = nal(0x06, 0x05, 8, 9);
    let aus = [
        annexb(&[sps(), pps(), idr(100, 1)]),
        annexb(&[non_idr(50, 2)]),
        annexb(&[idr(100, 3)]),
        annexb(&[nal(0x09, 0xf0, 2, 1), idr(100, 4)]), // AUD first
        annexb(&[pps(), idr(100, 5)]),
        annexb(&[sei.clone(), idr(100, 6)]),
        annexb(&[sps(), sei.clone(), idr(100, 7)]),
    ];
    let (frames, stats) = depacketize(&packets_for(&aus, 1200));
    assert_eq!(stats.frames, 7);
    assert_eq!(frames[2].data, annexb(&[sps(), pps(), idr(100, 3)]));
    assert!(frames[2].keyframe);
    // Inserted after the AUD, before the first slice.
    assert_eq!(
        frames[3].data,
        annexb(&[nal(0x09, 0xf0, 2, 1), sps(), pps(), idr(100, 4)])
    );
    // Only what is missing, SPS first.
    assert_eq!(frames[4].data, annexb(&[sps(), pps(), idr(100, 5)]));
    assert_eq!(
        frames[5].data,
        annexb(&[sps(), pps(), sei.clone(), idr(100, 6)])
    );
    // The PPS goes after the access unit's own SPS.
    assert_eq!(frames[6].data, annexb(&[sps(), pps(), sei, idr(100, 7)]));

    // Parameter sets in access units of their own (no slice) are not
    // frames, but the next IDR gets them; a newer SPS replaces an older one.
    let new_sps = nal(0x67, 0x64, 14, 7);
    let aus = [
        annexb(&[sps(), pps()]),
        annexb(&[idr(100, 1)]),
        annexb(std::slice::from_ref(&new_sps)),
        annexb(&[non_idr(40, 2)]),
        annexb(&[idr(100, 3)]),
    ];
    let (frames, stats) = depacketize(&packets_for(&aus, 1200));
    assert_eq!(stats.frames, 3);
    assert_eq!(frames[0].data, annexb(&[sps(), pps(), idr(100, 1)]));
    assert_eq!(frames[2].data, annexb(&[new_sps, pps(), idr(100, 3)]));

    // Parameter sets of a dropped access unit still count.
    let aus = [annexb(&[sps(), pps(), idr(300, 1)]), annexb(&[idr(100, 2)])];
    let mut packets = packets_for(&aus, 120);
    let at = packets.iter().rposition(|p| p.ts == 90_000).unwrap();
    packets.remove(at); // the end of the first IDR
    let (frames, stats) = depacketize(&packets);
    assert_eq!((stats.frames, stats.incomplete), (1, 1));
    assert_eq!(frames[0].data, annexb(&[sps(), pps(), idr(100, 2)]));
    // So do fragmented ones.
    let big_sps = nal(0x67, 0x64, 300, 11);
    let aus = [
        annexb(&[big_sps.clone(), pps(), idr(100, 1)]),
        annexb(&[idr(100, 2)]),
    ];
    let (frames, _) = depacketize(&packets_for(&aus, 120));
    assert_eq!(frames[1].data, annexb(&[big_sps, pps(), idr(100, 2)]));

    // An IDR with no parameter set known cannot decode on its own.
    let aus = [annexb(&[idr(100, 1)]), annexb(&[non_idr(40, 2)])];
    let (frames, stats) = depacketize(&packets_for(&aus, 1200));
    assert!(frames.is_empty());
    assert_eq!(stats.waiting_for_keyframe, 2);
}

#[test]
fn duplicates_and_padding_are_not_losses() {
    let aus = gop();
    let clean = packets_for(&aus, 300);
    let mut packets = Vec::new();
    for p in &clean {
        packets.push(p.clone());
        if p.seq % 3 == 0 {
            packets.push(p.clone());
        }
    }
    // Shift sequence numbers to make room for padding-only packets.
    let mut seq = 0;
    let mut padded = Vec::new();
    for mut p in packets.clone() {
        if p.seq % 4 == 0 && padded.last().is_none_or(|l: &Packet| l.seq < seq) {
            padded.push(pk(seq + 1, p.ts, false, Vec::new()));
            seq += 1;
        }
        let dup = padded
            .last()
            .is_some_and(|l: &Packet| l.payload == p.payload && l.ts == p.ts);
        p.seq = if dup { seq } else { seq + 1 };
        seq = p.seq;
        padded.push(p);
    }
    for packets in [packets, padded] {
        let (frames, stats) = depacketize(&packets);
        assert_eq!(stats.frames, aus.len() as u64, "{stats:?}");
        let data: Vec<Vec<u8>> = frames.into_iter().map(|f| f.data).collect();
        assert_eq!(data, aus);
    }
}

#[test]
fn whole_lost_frames_and_gaps_between_frames() {
    let aus = gop();
    let packets = packets_for(&aus, 1200);
    let frames_of = |packets: &[Packet]| {
        let (frames, stats) = depacketize(packets);
        let idx: Vec<usize> = frames
            .iter()
            .map(|f| aus.iter().position(|a| *a == f.data).unwrap())
            .collect();
        (idx, stats)
    };
    // Lose the whole fourth access unit (one packet): nothing is
    // incomplete, and the P-frame after it is kept.
    let lost: Vec<Packet> = packets.iter().filter(|p| p.ts != 99_000).cloned().collect();
    let (idx, stats) = frames_of(&lost);
    assert_eq!(idx, [0, 1, 2, 4, 5, 6]);
    assert_eq!((stats.incomplete, stats.after_loss), (0, 1));
    // Lose the last packet (with the marker) of the third: it is
    // incomplete although what remains of it looks whole.
    let at = packets.iter().rposition(|p| p.ts == 96_000).unwrap();
    let mut lost = packets.clone();
    lost.remove(at);
    assert!(!lost[at - 1].marker);
    let (idx, stats) = frames_of(&lost);
    assert_eq!(idx, [0, 1, 3, 4, 5, 6]);
    assert_eq!((stats.incomplete, stats.after_loss), (1, 2));
    // Lose the first packet of the third: its second slice does not start a picture.
    let at = packets.iter().position(|p| p.ts == 96_000).unwrap();
    let mut lost = packets.clone();
    lost.remove(at);
    let (idx, stats) = frames_of(&lost);
    assert_eq!(idx, [0, 1, 3, 4, 5, 6]);
    assert_eq!((stats.incomplete, stats.after_loss), (1, 2));
    // Lose the whole P-frame before the second IDR: the IDR is kept.
    let lost: Vec<Packet> = packets
        .iter()
        .filter(|p| p.ts != 102_000)
        .cloned()
        .collect();
    let (idx, stats) = frames_of(&lost);
    assert_eq!(idx, [0, 1, 2, 3, 5, 6]);
    assert_eq!((stats.incomplete, stats.waiting_for_keyframe), (0, 0));
}

#[test]
fn stream_starting_mid_frame_waits_for_a_keyframe() {
    let aus = gop();
    let packets = packets_for(&aus, 200);
    // Start inside the first IDR (FU-A without its start).
    let (frames, stats) = depacketize(&packets[4..]);
    assert_eq!(frames[0].data, aus[5]);
    assert_eq!(stats.incomplete, 1);
    assert_eq!(stats.waiting_for_keyframe, 4);
    // A stream whose first access unit is a P-frame.
    let (frames, stats) = depacketize(&packets_for(&aus[3..], 1200));
    assert_eq!(frames[0].data, aus[5]);
    assert_eq!((stats.frames, stats.waiting_for_keyframe), (2, 2));
    // No packets.
    assert_eq!(depacketize(&[]), (vec![], Stats::default()));
}

#[test]
fn access_units_without_marker_bits() {
    let aus = gop();
    let mut packets = packets_for(&aus, 500);
    for p in &mut packets {
        p.marker = false;
    }
    // A new timestamp ends each one; the last one, without its marker,
    // may have lost its tail with the end of the recording.
    let (frames, stats) = depacketize(&packets);
    assert_eq!(stats.frames, aus.len() as u64 - 1);
    assert_eq!(stats.incomplete, 1);
    assert_eq!(frames[4].data, aus[4]);
    // A gap right after an access unit without a marker: its tail may be lost.
    let at = packets.iter().position(|p| p.ts == 99_000).unwrap();
    packets.remove(at + 1);
    let (_, stats) = depacketize(&packets);
    assert_eq!(stats.incomplete, 2);
}

#[test]
fn exp_golomb() {
    assert_eq!(read_ue(&[0b1000_0000]), Some(0));
    assert_eq!(read_ue(&[0b0100_0000]), Some(1));
    assert_eq!(read_ue(&[0b0110_0000]), Some(2));
    assert_eq!(read_ue(&[0b0011_0000]), Some(5));
    assert_eq!(read_ue(&[0b0000_0001, 0b0000_0000]), Some(127));
    assert_eq!(read_ue(&[0, 0, 0, 0]), None);
    assert_eq!(read_ue(&[0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]), None);
    assert_eq!(read_ue(&[]), None);
    // Emulation prevention bytes are skipped: 00 00 03 01 → 00 00 01.
    assert_eq!(rbsp_prefix(&[0, 0, 3, 1, 0, 0, 3], 8), [0, 0, 1, 0, 0]);
    assert_eq!(
        first_mb_in_slice(&[0x41, 0, 0, 3, 0x80, 0xff, 0xff]),
        Some((1 << 16) - 1 + 511)
    );
    assert_eq!(first_mb_in_slice(&[0x41]), None);
}

#[test]
fn splitting_an_elementary_stream() {
    let aud = vec![0x09, 0xf0];
    let sei = nal(0x06, 0x05, 20, 3);
    let (i, p1, p1b, p2) = (
        idr(300, 1),
        non_idr(100, 2),
        second_slice(80, 3),
        non_idr(90, 4),
    );
    // Without delimiters, with 3- and 4-byte start codes.
    let mut stream = Vec::new();
    for (k, n) in [&sps(), &pps(), &sei, &i, &p1, &p1b, &p2]
        .into_iter()
        .enumerate()
    {
        stream.extend_from_slice(if k % 2 == 0 {
            &[0, 0, 1][..]
        } else {
            &[0, 0, 0, 1][..]
        });
        stream.extend_from_slice(n);
    }
    let aus = split_access_units(&stream);
    assert_eq!(
        aus,
        vec![
            annexb(&[sps(), pps(), sei.clone(), i.clone()]),
            annexb(&[p1.clone(), p1b.clone()]),
            annexb(std::slice::from_ref(&p2)),
        ]
    );
    // With delimiters, and a new SPS/PPS before the second IDR.
    let mut with_aud = Vec::new();
    for au in [
        vec![aud.clone(), sps(), pps(), sei.clone(), i.clone()],
        vec![aud.clone(), p1.clone(), p1b.clone()],
        vec![aud.clone(), p2.clone()],
        vec![aud.clone(), sps(), pps(), i.clone()],
    ] {
        with_aud.extend(annexb(&au));
    }
    let aus = split_access_units(&with_aud);
    assert_eq!(aus.len(), 4);
    assert_eq!(aus.concat(), with_aud);
    assert_eq!(aus[3], annexb(&[aud.clone(), sps(), pps(), i.clone()]));
    // Without delimiters: a new SPS starts the access unit too.
    let mut stream = annexb(&[sps(), pps(), i.clone(), p1.clone(), sps(), pps(), i.clone()]);
    stream.extend([0, 0]); // trailing zeros
    assert_eq!(split_access_units(&stream).len(), 3);
    assert!(split_access_units(&[]).is_empty());
    assert!(split_access_units(&[1, 2, 3]).is_empty());
    // Each access unit packetizes and depacketizes back to itself.
    let (frames, _) = depacketize(&packets_for(&aus, 120));
    let data: Vec<Vec<u8>> = frames.into_iter().map(|f| f.data).collect();
    assert_eq!(data, aus);
}

#[test]
fn no_panics_on_random_input() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let aus = gop();
    let valid = packets_for(&aus, 150);
    for round in 0..4000 {
        let packets: Vec<Packet> = if round % 2 == 0 {
            // Random payloads, with a bias towards the types parsed.
            let n = rng.below(30) as usize;
            let mut seq = 0;
            let mut ts = 0;
            (0..n)
                .map(|_| {
                    seq += rng.below(3);
                    ts += rng.below(2) * 3000;
                    let len = rng.below(40) as usize;
                    let mut payload = rng.bytes(len);
                    if let Some(b) = payload.first_mut() {
                        if rng.below(2) == 0 {
                            *b = (*b & 0xe0) | [1, 5, 7, 8, 24, 28][rng.below(6) as usize];
                        }
                    }
                    pk(seq, ts, rng.below(3) == 0, payload)
                })
                .collect()
        } else {
            // Valid packets with bytes flipped, packets dropped or cut.
            let mut packets = valid.clone();
            for _ in 0..rng.below(6) {
                let i = rng.below(packets.len() as u64) as usize;
                match rng.below(3) {
                    0 => {
                        packets.remove(i);
                    }
                    1 => {
                        let p = &mut packets[i].payload;
                        let at = rng.below(p.len() as u64) as usize;
                        if let Some(b) = p.get_mut(at) {
                            *b ^= 1 << rng.below(8);
                        }
                    }
                    _ => {
                        let len = rng.below(packets[i].payload.len() as u64 + 1) as usize;
                        packets[i].payload.truncate(len);
                    }
                }
            }
            packets
        };
        let (frames, stats) = depacketize(&packets);
        assert_eq!(frames.len() as u64, stats.frames);
        for f in &frames {
            assert!(f.data.starts_with(&START_CODE));
            assert_eq!(
                f.keyframe,
                split_nals(&f.data)
                    .iter()
                    .any(|n| nal_type(n[0]) == NAL_IDR)
            );
        }
        let bytes: Vec<u8> = packets.iter().flat_map(|p| p.payload.clone()).collect();
        for au in split_access_units(&bytes) {
            let _ = packetize(&au, rng.below(100) as usize);
        }
        let _ = packetize(&bytes, rng.below(100) as usize);
    }
}
