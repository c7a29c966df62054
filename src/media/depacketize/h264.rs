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
//! The sender side (packetizing an access unit, cutting a raw Annex B
//! elementary stream into access units) is in [`crate::media::packetize`];
//! the unit tests are in `media/tests/h264.rs`.

use super::{Frame, Packet, Stats};

pub(crate) const START_CODE: [u8; 4] = [0, 0, 0, 1];

pub(crate) const NAL_IDR: u8 = 5;
pub(crate) const NAL_SEI: u8 = 6;
pub(crate) const NAL_SPS: u8 = 7;
pub(crate) const NAL_PPS: u8 = 8;
pub(crate) const NAL_AUD: u8 = 9;
pub(crate) const STAP_A: u8 = 24;
pub(crate) const STAP_B: u8 = 25;
pub(crate) const MTAP16: u8 = 26;
pub(crate) const MTAP24: u8 = 27;
pub(crate) const FU_A: u8 = 28;
pub(crate) const FU_B: u8 = 29;

pub(crate) fn nal_type(header: u8) -> u8 {
    header & 0x1f
}

/// Slices (coded picture data), as opposed to parameter sets, SEI and the like.
pub(crate) fn is_vcl(t: u8) -> bool {
    (1..=5).contains(&t)
}

/// One piece of an RTP payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unit<'a> {
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
pub(crate) fn parse_payload(payload: &[u8]) -> Option<Vec<Unit<'_>>> {
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
pub(crate) fn rbsp_prefix(data: &[u8], max: usize) -> Vec<u8> {
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
pub(crate) fn read_ue(bits: &[u8]) -> Option<u32> {
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
pub(crate) fn first_mb_in_slice(nal: &[u8]) -> Option<u32> {
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
/// Which complete access units are handed out is the loss policy of
/// [`super::Gate`] (a keyframe is an access unit with an IDR slice that can
/// decode on its own). Access units without a
/// slice (parameter sets or SEI alone) are not frames: their SPS/PPS are
/// remembered for the next IDR. An IDR access unit that lacks an SPS or PPS
/// and has none to borrow cannot decode on its own and is treated as a
/// non-keyframe.
pub fn depacketize(packets: &[Packet]) -> (Vec<Frame>, Stats) {
    let mut d = Depacketizer::default();
    for p in packets {
        d.push(p);
    }
    d.end()
}

/// [`depacketize`] a packet at a time: access units come out as soon as
/// the packet after them shows whether they lost their tail.
#[derive(Default)]
pub struct Depacketizer {
    stats: Stats,
    frames: Vec<Frame>,
    fresh: super::Fresh,
    /// A packet is missing since the last media packet.
    gap: bool,
    /// The access unit being collected: media packets, each with "a packet
    /// is missing right before it".
    unit: Vec<(Packet, bool)>,
    /// Access units handled so far.
    units: u64,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    gate: super::Gate,
}

impl Depacketizer {
    /// The next packet in sequence order.
    pub fn push(&mut self, p: &Packet) {
        let Some(missing) = self.fresh.missing_before(p.seq) else {
            return;
        };
        self.gap |= missing > 0;
        if p.payload.is_empty() {
            return;
        }
        let gap = std::mem::take(&mut self.gap);
        // Access units: runs of one timestamp, ended by the marker bit.
        if let Some((last, _)) = self.unit.last() {
            if last.ts != p.ts || last.marker {
                let unit = std::mem::take(&mut self.unit);
                self.access_unit(unit, Some(gap));
            }
        }
        self.unit.push((p.clone(), gap));
    }

    /// The frames completed so far (taken out).
    pub fn take(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.frames)
    }

    /// After the last packet: the frames not yet taken, and the counts.
    pub fn end(mut self) -> (Vec<Frame>, Stats) {
        let unit = std::mem::take(&mut self.unit);
        if !unit.is_empty() {
            self.access_unit(unit, None);
        }
        (std::mem::take(&mut self.frames), self.stats)
    }

    /// One access unit; `next_gap` tells whether a packet is missing right
    /// before the next one (`None`: the recording ends here).
    fn access_unit(&mut self, unit: Vec<(Packet, bool)>, next_gap: Option<bool>) {
        let first = self.units == 0;
        self.units += 1;
        let refs: Vec<&Packet> = unit.iter().map(|(p, _)| p).collect();
        let lost_before = unit[0].1;
        let gap_inside = unit[1..].iter().any(|(_, gap)| *gap);
        let last = &unit[unit.len() - 1].0;
        // The recording stops inside the access unit when nothing follows.
        let tail_lost = !last.marker && next_gap.unwrap_or(true);
        let assembled = assemble(&refs);
        // Parameter sets are kept even from an access unit that is dropped.
        match &assembled {
            Some(nals) => remember(nals.iter().map(Vec::as_slice), &mut self.sps, &mut self.pps),
            None => remember(whole_nals(&refs).into_iter(), &mut self.sps, &mut self.pps),
        }
        if lost_before {
            self.gate.lost();
        }
        let nals = match assembled {
            Some(n) if !gap_inside && !tail_lost => n,
            _ => {
                self.stats.incomplete += 1;
                self.gate.lost();
                return;
            }
        };
        if (first || lost_before) && !starts_picture(&nals) {
            self.stats.incomplete += 1;
            self.gate.lost();
            return;
        }
        if !nals.iter().any(|n| is_vcl(nal_type(n[0]))) {
            return;
        }
        let idr = nals.iter().any(|n| nal_type(n[0]) == NAL_IDR);
        let data = if idr {
            annex_b(&nals, true, &self.sps, &self.pps)
        } else {
            None
        };
        let keyframe = data.is_some();
        // H.264 (CAVLC/CABAC) carries no probabilities across pictures.
        if !self
            .gate
            .admit(keyframe, super::Entropy::Own, &mut self.stats)
        {
            return;
        }
        // A non-IDR access unit needs nothing added.
        let data = match data {
            Some(d) => d,
            None => annex_b(&nals, false, &None, &None).unwrap_or_default(),
        };
        self.frames.push(Frame {
            ts: last.ts,
            keyframe,
            data,
        });
    }
}
