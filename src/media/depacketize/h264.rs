//! H.264 over RTP (RFC 6184), packetization modes 0 and 1.
//!
//! [`depacketize`] turns one stream's ordered packets into access units in
//! Annex B form (each NAL unit after a `00 00 00 01` start code). It reads
//! single NAL unit packets (types 1–23), STAP-A (24) and FU-A (28); the
//! interleaved-mode types (STAP-B, MTAP16/24, FU-B) and malformed payloads
//! make their access unit incomplete. Reserved NAL unit types 0, 30 and 31
//! are ignored, as RFC 6184 asks. An access unit is the run of packets with
//! one RTP timestamp, ended by the marker bit or a new timestamp; it is kept
//! only when none of its packets is missing and every fragmented NAL unit in
//! it is whole. After a loss the stream waits for the next IDR picture, and
//! every IDR access unit handed out carries the latest in-band SPS and PPS,
//! so that each keyframe decodes on its own.
//!
//! [`packetize`] is the sender side (used by tests and fixtures) and
//! [`split_access_units`] cuts a raw Annex B elementary stream into access
//! units.

use super::{Frame, Packet, Stats};

const START_CODE: [u8; 4] = [0, 0, 0, 1];

const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;
const STAP_B: u8 = 25;
const MTAP16: u8 = 26;
const MTAP24: u8 = 27;
const FU_A: u8 = 28;
const FU_B: u8 = 29;

fn nal_type(header: u8) -> u8 {
    header & 0x1f
}

/// Slices (coded picture data), as opposed to parameter sets, SEI and the like.
fn is_vcl(t: u8) -> bool {
    (1..=5).contains(&t)
}

/// One piece of an RTP payload.
#[derive(Debug, PartialEq, Eq)]
enum Unit<'a> {
    /// A whole NAL unit, header included.
    Nal(&'a [u8]),
    /// An FU-A fragment; `header` is the reconstructed NAL unit header.
    Fragment {
        header: u8,
        start: bool,
        end: bool,
        data: &'a [u8],
    },
}

/// The units of one payload; `None` if it is malformed or of a type this
/// depacketizer refuses.
fn parse_payload(payload: &[u8]) -> Option<Vec<Unit<'_>>> {
    let first = *payload.first()?;
    match nal_type(first) {
        // Reserved types: ignored (RFC 6184 §5.2).
        0 | 30 | 31 => Some(Vec::new()),
        1..=23 => Some(vec![Unit::Nal(payload)]),
        STAP_A => {
            let mut units = Vec::new();
            let mut rest = &payload[1..];
            while !rest.is_empty() {
                let (size, tail) = match rest {
                    [hi, lo, tail @ ..] => (u16::from_be_bytes([*hi, *lo]) as usize, tail),
                    _ => return None,
                };
                if size == 0 || size > tail.len() {
                    return None;
                }
                let (nal, after) = tail.split_at(size);
                match nal_type(nal[0]) {
                    1..=23 => units.push(Unit::Nal(nal)),
                    0 | 30 | 31 => {}
                    _ => return None,
                }
                rest = after;
            }
            if units.is_empty() && payload.len() == 1 {
                // An STAP-A that aggregates nothing.
                return None;
            }
            Some(units)
        }
        FU_A => {
            let fu = *payload.get(1)?;
            let t = nal_type(fu);
            if !(1..=23).contains(&t) {
                return None;
            }
            Some(vec![Unit::Fragment {
                header: (first & 0xe0) | t,
                start: fu & 0x80 != 0,
                end: fu & 0x40 != 0,
                data: &payload[2..],
            }])
        }
        STAP_B | MTAP16 | MTAP24 | FU_B => None,
        _ => None,
    }
}

/// The NAL units of one access unit, or `None` if a payload is malformed
/// or a fragmented NAL unit is not whole.
fn assemble(packets: &[&Packet]) -> Option<Vec<Vec<u8>>> {
    let mut nals = Vec::new();
    let mut fu: Option<Vec<u8>> = None;
    let mut broken = false;
    for p in packets {
        let Some(units) = parse_payload(&p.payload) else {
            broken = true;
            continue;
        };
        for u in units {
            match u {
                Unit::Nal(n) => {
                    if fu.take().is_some() {
                        broken = true;
                    }
                    nals.push(n.to_vec());
                }
                Unit::Fragment {
                    header,
                    start,
                    end,
                    data,
                } => {
                    if start {
                        if fu.is_some() {
                            broken = true;
                        }
                        let mut n = Vec::with_capacity(1 + data.len());
                        n.push(header);
                        n.extend_from_slice(data);
                        fu = Some(n);
                    } else {
                        match fu.as_mut() {
                            Some(n) if nal_type(n[0]) == nal_type(header) => {
                                n.extend_from_slice(data)
                            }
                            _ => {
                                // A middle or last fragment without its start.
                                fu = None;
                                broken = true;
                                continue;
                            }
                        }
                    }
                    if end {
                        if let Some(n) = fu.take() {
                            nals.push(n);
                        }
                    }
                }
            }
        }
    }
    if broken || fu.is_some() {
        None
    } else {
        Some(nals)
    }
}

/// Remembers the last SPS and PPS among `nals`.
fn remember<'a>(
    nals: impl Iterator<Item = &'a [u8]>,
    sps: &mut Option<Vec<u8>>,
    pps: &mut Option<Vec<u8>>,
) {
    for n in nals {
        match nal_type(n[0]) {
            NAL_SPS => *sps = Some(n.to_vec()),
            NAL_PPS => *pps = Some(n.to_vec()),
            _ => {}
        }
    }
}

/// The whole (unfragmented) NAL units in the payloads of an access unit
/// that is otherwise incomplete.
fn whole_nals<'a>(packets: &[&'a Packet]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for p in packets {
        for u in parse_payload(&p.payload).unwrap_or_default() {
            if let Unit::Nal(n) = u {
                out.push(n);
            }
        }
    }
    out
}

/// The first bytes of a NAL unit's payload with emulation prevention bytes removed.
fn rbsp_prefix(data: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(max);
    let mut zeros = 0;
    for &b in data {
        if out.len() == max {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// An unsigned Exp-Golomb code (H.264 §9.1) at the start of `bits`.
fn read_ue(bits: &[u8]) -> Option<u32> {
    let bit = |pos: usize| bits.get(pos / 8).map(|b| (b >> (7 - pos % 8)) & 1);
    let mut pos = 0;
    let mut zeros = 0u32;
    while bit(pos)? == 0 {
        zeros += 1;
        pos += 1;
        if zeros > 31 {
            return None;
        }
    }
    pos += 1;
    let mut v = 0u64;
    for _ in 0..zeros {
        v = (v << 1) | bit(pos)? as u64;
        pos += 1;
    }
    u32::try_from((1u64 << zeros) - 1 + v).ok()
}

/// `first_mb_in_slice` of a slice NAL unit (the slice header's first field).
fn first_mb_in_slice(nal: &[u8]) -> Option<u32> {
    read_ue(&rbsp_prefix(nal.get(1..)?, 8))
}

/// True if the first slice of the access unit starts the picture, i.e. the
/// access unit did not lose its head.
fn starts_picture(nals: &[Vec<u8>]) -> bool {
    match nals.iter().find(|n| is_vcl(nal_type(n[0]))) {
        Some(n) => first_mb_in_slice(n) == Some(0),
        None => true,
    }
}

/// The access unit in Annex B form. For an IDR access unit, a missing SPS
/// is inserted at the start (after an access unit delimiter), and a missing
/// PPS after the access unit's SPS, so that each parameter set comes before
/// what refers to it. `None` if an IDR access unit lacks a parameter set
/// that is not known.
fn annex_b(
    nals: &[Vec<u8>],
    keyframe: bool,
    sps: &Option<Vec<u8>>,
    pps: &Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut list: Vec<&[u8]> = nals.iter().map(Vec::as_slice).collect();
    if keyframe {
        let start = usize::from(list.first().is_some_and(|n| nal_type(n[0]) == NAL_AUD));
        let last_sps = list.iter().rposition(|n| nal_type(n[0]) == NAL_SPS);
        if !list.iter().any(|n| nal_type(n[0]) == NAL_PPS) {
            list.insert(last_sps.map_or(start, |i| i + 1), pps.as_deref()?);
        }
        if last_sps.is_none() {
            list.insert(start, sps.as_deref()?);
        }
    }
    let mut out = Vec::with_capacity(list.iter().map(|n| n.len() + 4).sum());
    for n in list {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(n);
    }
    Some(out)
}

/// Access units of one H.264 stream, in Annex B form.
///
/// Padding-only packets (empty payload) carry no media but keep their
/// sequence numbers, so they are not losses; duplicate sequence numbers are
/// read once. An access unit is dropped as `incomplete` when a packet of it
/// is missing (a sequence gap inside it, or a gap right after it when it
/// lacks the marker bit), a payload is malformed or refused, or an FU-A
/// sequence lacks its start, a middle or its end. After a gap, the next
/// access unit is kept only if its first slice starts the picture
/// (`first_mb_in_slice == 0`); the same check applies to the stream's first
/// access unit, since a recording may start mid-frame.
///
/// The stream starts waiting for a keyframe (an access unit with an IDR
/// slice) and waits again after any loss or drop; complete access units in
/// that state are counted in `waiting_for_keyframe`. Access units without a
/// slice (parameter sets or SEI alone) are not frames: their SPS/PPS are
/// remembered for the next IDR. An IDR access unit that lacks an SPS or PPS
/// and has none to borrow cannot decode on its own and is treated as a
/// non-keyframe.
pub fn depacketize(packets: &[Packet]) -> (Vec<Frame>, Stats) {
    let mut stats = Stats::default();
    let mut frames = Vec::new();

    // Media packets, each with "a packet is missing right before it".
    let mut media: Vec<(&Packet, bool)> = Vec::new();
    let mut gap = false;
    for (p, missing) in super::fresh(packets) {
        gap |= missing > 0;
        if p.payload.is_empty() {
            continue;
        }
        media.push((p, gap));
        gap = false;
    }

    // Access units: runs of one timestamp, ended by the marker bit.
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=media.len() {
        if i == media.len() || media[i].0.ts != media[i - 1].0.ts || media[i - 1].0.marker {
            groups.push(start..i);
            start = i;
        }
    }

    let (mut sps, mut pps) = (None, None);
    let mut waiting = true;
    for (gi, g) in groups.iter().enumerate() {
        let unit = &media[g.clone()];
        let refs: Vec<&Packet> = unit.iter().map(|(p, _)| *p).collect();
        let lost_before = unit[0].1;
        let gap_inside = unit[1..].iter().any(|(_, gap)| *gap);
        let last = unit[unit.len() - 1].0;
        let tail_lost = !last.marker
            && match groups.get(gi + 1) {
                Some(next) => media[next.start].1,
                // The recording stops inside the access unit.
                None => true,
            };
        let assembled = assemble(&refs);
        // Parameter sets are kept even from an access unit that is dropped.
        match &assembled {
            Some(nals) => remember(nals.iter().map(Vec::as_slice), &mut sps, &mut pps),
            None => remember(whole_nals(&refs).into_iter(), &mut sps, &mut pps),
        }
        if lost_before {
            waiting = true;
        }
        let nals = match assembled {
            Some(n) if !gap_inside && !tail_lost => n,
            _ => {
                stats.incomplete += 1;
                waiting = true;
                continue;
            }
        };
        if (gi == 0 || lost_before) && !starts_picture(&nals) {
            stats.incomplete += 1;
            waiting = true;
            continue;
        }
        if !nals.iter().any(|n| is_vcl(nal_type(n[0]))) {
            continue;
        }
        let idr = nals.iter().any(|n| nal_type(n[0]) == NAL_IDR);
        let data = if idr {
            annex_b(&nals, true, &sps, &pps)
        } else {
            None
        };
        let (keyframe, data) = match data {
            Some(d) => (true, d),
            None if waiting => {
                stats.waiting_for_keyframe += 1;
                continue;
            }
            // A non-IDR access unit needs nothing added.
            None => (
                false,
                annex_b(&nals, false, &None, &None).unwrap_or_default(),
            ),
        };
        waiting = false;
        stats.frames += 1;
        frames.push(Frame {
            ts: last.ts,
            keyframe,
            data,
        });
    }
    (frames, stats)
}

/// The NAL units of an Annex B byte stream, split on 3- or 4-byte start
/// codes. Bytes before the first start code are ignored; trailing zero
/// bytes of a NAL unit (the next start code's leading zero, or
/// `trailing_zero_8bits`) are removed, since a NAL unit never ends in 0x00.
fn split_nals(annexb: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // (start code position, NAL unit position)
    let mut i = 0;
    while i + 3 <= annexb.len() {
        if annexb[i] == 0 && annexb[i + 1] == 0 && annexb[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &(_, at)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(annexb.len(), |s| s.0);
        let mut nal = &annexb[at..end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            nals.push(nal);
        }
    }
    nals
}

/// RTP payloads for one access unit given in Annex B form, each with its
/// marker bit (set on the last payload only).
///
/// A NAL unit that fits in `max_payload` bytes goes alone in a single NAL
/// unit packet, or, with the NAL units that follow it while they fit,
/// aggregated in an STAP-A; a larger one is split into FU-A fragments.
/// `max_payload` is raised to 3 if smaller (an FU-A needs two header bytes
/// and one byte of data). NAL unit types are not checked.
pub fn packetize(au_annexb: &[u8], max_payload: usize) -> Vec<(bool, Vec<u8>)> {
    let max = max_payload.max(3);
    let nals = split_nals(au_annexb);
    let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut i = 0;
    while i < nals.len() {
        let nal = nals[i];
        if nal.len() > max {
            let header = nal[0];
            let indicator = (header & 0xe0) | FU_A;
            let chunks: Vec<&[u8]> = nal[1..].chunks(max - 2).collect();
            let n = chunks.len();
            for (k, chunk) in chunks.into_iter().enumerate() {
                let mut fu = nal_type(header);
                if k == 0 {
                    fu |= 0x80;
                }
                if k + 1 == n {
                    fu |= 0x40;
                }
                let mut p = Vec::with_capacity(2 + chunk.len());
                p.extend_from_slice(&[indicator, fu]);
                p.extend_from_slice(chunk);
                out.push((false, p));
            }
            i += 1;
            continue;
        }
        let mut j = i;
        let mut size = 1;
        while j < nals.len() && nals[j].len() <= 0xffff && size + 2 + nals[j].len() <= max {
            size += 2 + nals[j].len();
            j += 1;
        }
        if j - i >= 2 {
            let group = &nals[i..j];
            let f = group.iter().fold(0, |a, n| a | (n[0] & 0x80));
            let nri = group.iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
            let mut p = Vec::with_capacity(size);
            p.push(f | nri | STAP_A);
            for n in group {
                p.extend_from_slice(&(n.len() as u16).to_be_bytes());
                p.extend_from_slice(n);
            }
            out.push((false, p));
            i = j;
        } else {
            out.push((false, nal.to_vec()));
            i += 1;
        }
    }
    if let Some(last) = out.last_mut() {
        last.0 = true;
    }
    out
}

/// Cuts a raw Annex B elementary stream (as `ffmpeg -f h264` writes it)
/// into access units, each returned in Annex B form with 4-byte start codes.
///
/// The heuristic follows H.264 §7.4.1.2.3, simplified: a new access unit
/// begins at an access unit delimiter (whenever the current one is not
/// empty), and, once the current access unit holds a slice, at an SEI, SPS,
/// PPS, a NAL unit of type 14–18, or a slice whose `first_mb_in_slice` is 0
/// (the first slice of the next picture). Without arbitrary slice order or
/// redundant pictures — which encoders for WebRTC and ffmpeg's H.264
/// encoders do not produce — this matches the standard's rule that compares
/// `frame_num`, `pic_parameter_set_id` and the other slice header fields.
/// Slices with `first_mb_in_slice` > 0 stay with the picture they belong to;
/// end-of-sequence and end-of-stream NAL units stay with the access unit
/// they end.
pub fn split_access_units(annexb_stream: &[u8]) -> Vec<Vec<u8>> {
    let mut aus = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut cur_has_slice = false;
    for nal in split_nals(annexb_stream) {
        let t = nal_type(nal[0]);
        let starts_new = match t {
            NAL_AUD => !cur.is_empty(),
            NAL_SEI | NAL_SPS | NAL_PPS | 14..=18 => cur_has_slice,
            1..=5 => cur_has_slice && first_mb_in_slice(nal) == Some(0),
            _ => false,
        };
        if starts_new {
            aus.push(std::mem::take(&mut cur));
            cur_has_slice = false;
        }
        cur.extend_from_slice(&START_CODE);
        cur.extend_from_slice(nal);
        cur_has_slice |= is_vcl(t);
    }
    if !cur.is_empty() {
        aus.push(cur);
    }
    aus
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::media::testkit::Rng;

    /// A NAL unit: `header`, then `body` bytes that never form a start code.
    fn nal(header: u8, first: u8, len: usize, seed: u64) -> Vec<u8> {
        let mut r = Rng(seed | 1);
        let mut n = vec![header, first];
        n.extend((2..len).map(|_| (r.next() % 255) as u8 + 1));
        n
    }

    fn sps() -> Vec<u8> {
        nal(0x67, 0x42, 12, 1)
    }
    fn pps() -> Vec<u8> {
        nal(0x68, 0xce, 5, 2)
    }
    /// A slice with first_mb_in_slice = 0 (ue "1" as the first bit).
    fn idr(len: usize, seed: u64) -> Vec<u8> {
        nal(0x65, 0x88, len, seed)
    }
    fn non_idr(len: usize, seed: u64) -> Vec<u8> {
        nal(0x41, 0x9a, len, seed)
    }
    /// A slice with first_mb_in_slice = 5 (ue "00110").
    fn second_slice(len: usize, seed: u64) -> Vec<u8> {
        nal(0x41, 0b0011_0000, len, seed)
    }

    fn annexb(nals: &[Vec<u8>]) -> Vec<u8> {
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
    fn packetize_shapes() {
        let au = annexb(&[sps(), pps(), idr(3000, 3)]);
        let p = packetize(&au, 1200);
        // STAP-A(SPS, PPS), then three FU-A fragments.
        assert_eq!(p.len(), 4);
        assert_eq!(nal_type(p[0].1[0]), STAP_A);
        assert_eq!(p[0].1.len(), 1 + 2 + 12 + 2 + 5);
        assert!(p[1..].iter().all(|(_, x)| nal_type(x[0]) == FU_A));
        assert_eq!(p[1].1[1], 0x80 | 5);
        assert_eq!(p[2].1[1], 5);
        assert_eq!(p[3].1[1], 0x40 | 5);
        // The FU indicator keeps the NAL header's F and NRI bits.
        assert_eq!(p[1].1[0], 0x60 | FU_A);
        assert!(p.iter().all(|(_, x)| x.len() <= 1200));
        let markers: Vec<bool> = p.iter().map(|(m, _)| *m).collect();
        assert_eq!(markers, [false, false, false, true]);
        // A lone NAL unit that fits goes as a single NAL unit packet.
        let p = packetize(&annexb(&[non_idr(100, 1)]), 1200);
        assert_eq!(p, vec![(true, non_idr(100, 1))]);
        assert!(packetize(&[], 1200).is_empty());
        assert!(packetize(&[0, 0, 0, 1], 1200).is_empty());
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
    fn lost_fu_a_middle_drops_until_next_idr() {
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
                aus[5].clone(),
                aus[6].clone()
            ]
        );
        assert_eq!(stats.incomplete, 1);
        assert_eq!(stats.waiting_for_keyframe, 2);
        assert_eq!(stats.frames, 4);
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
        // incomplete, but the P-frames after it wait for the IDR.
        let lost: Vec<Packet> = packets.iter().filter(|p| p.ts != 99_000).cloned().collect();
        let (idx, stats) = frames_of(&lost);
        assert_eq!(idx, [0, 1, 2, 5, 6]);
        assert_eq!((stats.incomplete, stats.waiting_for_keyframe), (0, 1));
        // Lose the last packet (with the marker) of the third: it is
        // incomplete although what remains of it looks whole.
        let at = packets.iter().rposition(|p| p.ts == 96_000).unwrap();
        let mut lost = packets.clone();
        lost.remove(at);
        assert!(!lost[at - 1].marker);
        let (idx, stats) = frames_of(&lost);
        assert_eq!(idx, [0, 1, 5, 6]);
        assert_eq!((stats.incomplete, stats.waiting_for_keyframe), (1, 2));
        // Lose the first packet of the third: its second slice does not start a picture.
        let at = packets.iter().position(|p| p.ts == 96_000).unwrap();
        let mut lost = packets.clone();
        lost.remove(at);
        let (idx, stats) = frames_of(&lost);
        assert_eq!(idx, [0, 1, 5, 6]);
        assert_eq!((stats.incomplete, stats.waiting_for_keyframe), (1, 2));
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
}
