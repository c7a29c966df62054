//! RTP sender side for synthetic recordings and tests: VP8, VP9 and H.264
//! frames split into RTP payloads (with their marker bits) the way a WebRTC
//! sender would, and a raw H.264 elementary stream cut into access units.
//! [`crate::media::fixture`] builds its recordings with these, and the
//! depacketizers' unit tests round-trip through them; the receiving side is
//! [`crate::media::depacketize`].

use super::depacketize::h264::{
    first_mb_in_slice, is_vcl, nal_type, FU_A, NAL_AUD, NAL_PPS, NAL_SEI, NAL_SPS, STAP_A,
    START_CODE,
};
use super::depacketize::vp8::Kind;
use super::depacketize::vp9::header_kind;

/// Splits one VP8 frame into RTP payloads of at most `max_payload` bytes
/// (descriptor included), each with a 15-bit PictureID; the marker is set on
/// the last one. The whole frame is sent as partition 0, so only the first
/// payload has `S=1`. A `max_payload` too small for the descriptor and one
/// byte of data is raised to that; an empty frame gives no payloads. `_ts`
/// (the RTP timestamp) goes in the RTP header the caller writes, not here.
pub fn vp8(frame: &[u8], max_payload: usize, picture_id: u16) -> Vec<(bool, Vec<u8>)> {
    const DESCRIPTOR: usize = 4;
    let chunk = max_payload.max(DESCRIPTOR + 1) - DESCRIPTOR;
    let pid = picture_id & 0x7fff;
    let count = frame.chunks(chunk).count();
    frame
        .chunks(chunk)
        .enumerate()
        .map(|(i, data)| {
            let first = if i == 0 { 0x90 } else { 0x80 };
            let mut payload = Vec::with_capacity(DESCRIPTOR + data.len());
            payload.extend_from_slice(&[first, 0x80, 0x80 | (pid >> 8) as u8, pid as u8]);
            payload.extend_from_slice(data);
            (i + 1 == count, payload)
        })
        .collect()
}

/// Splits one VP9 frame into RTP payloads of at most `max_payload` bytes
/// (descriptor included), in non-flexible mode with a 15-bit picture ID:
/// `B` on the first, `E` and the marker on the last, `P` on all of them
/// unless the frame's header says key frame. A `max_payload` too small for
/// the descriptor and one byte of data is raised to that; an empty frame
/// gives no payloads. `_ts` (the RTP timestamp) goes in the RTP header the
/// caller writes, not here.
pub fn vp9(frame: &[u8], max_payload: usize, picture_id: u16) -> Vec<(bool, Vec<u8>)> {
    const DESCRIPTOR: usize = 3;
    let chunk = max_payload.max(DESCRIPTOR + 1) - DESCRIPTOR;
    let pid = picture_id & 0x7fff;
    let p = if header_kind(frame) == Kind::Key {
        0
    } else {
        0x40
    };
    let count = frame.chunks(chunk).count();
    frame
        .chunks(chunk)
        .enumerate()
        .map(|(i, data)| {
            let last = i + 1 == count;
            let first = 0x80 | p | if i == 0 { 0x08 } else { 0 } | if last { 0x04 } else { 0 };
            let mut payload = Vec::with_capacity(DESCRIPTOR + data.len());
            payload.extend_from_slice(&[first, 0x80 | (pid >> 8) as u8, pid as u8]);
            payload.extend_from_slice(data);
            (last, payload)
        })
        .collect()
}

/// The NAL units of an Annex B byte stream, split on 3- or 4-byte start
/// codes. Bytes before the first start code are ignored; trailing zero
/// bytes of a NAL unit (the next start code's leading zero, or
/// `trailing_zero_8bits`) are removed, since a NAL unit never ends in 0x00.
pub(crate) fn split_nals(annexb: &[u8]) -> Vec<&[u8]> {
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
pub fn h264(au_annexb: &[u8], max_payload: usize) -> Vec<(bool, Vec<u8>)> {
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
pub fn h264_access_units(annexb_stream: &[u8]) -> Vec<Vec<u8>> {
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
    mod vp8 {
        use crate::media::depacketize::vp8::parse_descriptor;
        use crate::media::depacketize::vp8::tests::key;
        use crate::media::packetize::vp8 as packetize;

        #[test]
        fn packetize_layout() {
            let f = key(25, 9);
            let p = packetize(&f, 14, 0x8123);
            assert_eq!(p.len(), 3);
            assert_eq!(
                p.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
                [false, false, true]
            );
            assert_eq!(&p[0].1[..4], &[0x90, 0x80, 0x81, 0x23]);
            assert_eq!(&p[1].1[..4], &[0x80, 0x80, 0x81, 0x23]);
            assert!(p.iter().all(|(_, x)| x.len() <= 14));
            let data: Vec<u8> = p.iter().flat_map(|(_, x)| x[4..].to_vec()).collect();
            assert_eq!(data, f);
            for (_, payload) in &p {
                let d = parse_descriptor(payload).unwrap();
                assert_eq!((d.picture_id, d.len), (Some(0x0123), 4));
            }
            // A too small limit still progresses; an empty frame gives nothing.
            assert_eq!(packetize(&f, 0, 1).len(), 25);
            assert!(packetize(&[], 1200, 1).is_empty());
            assert_eq!(packetize(&f, 1200, 1).len(), 1);
        }
    }

    mod vp9 {
        use crate::media::depacketize::vp9::tests::{delta, key};
        use crate::media::packetize::vp9 as packetize;

        #[test]
        fn packetize_layout() {
            let f = key(25, 9);
            let p = packetize(&f, 13, 0x8123);
            assert_eq!(p.len(), 3);
            assert_eq!(
                p.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
                [false, false, true]
            );
            assert_eq!(&p[0].1[..3], &[0x88, 0x81, 0x23]);
            assert_eq!(&p[1].1[..3], &[0x80, 0x81, 0x23]);
            assert_eq!(&p[2].1[..3], &[0x84, 0x81, 0x23]);
            assert!(p.iter().all(|(_, x)| x.len() <= 13));
            let d = packetize(&delta(5, 1), 1200, 7);
            assert_eq!(d.len(), 1);
            assert_eq!(&d[0].1[..3], &[0xcc, 0x80, 0x07]);
            assert_eq!(packetize(&f, 2, 1).len(), 25);
            assert!(packetize(&[], 1200, 1).is_empty());
        }
    }

    mod h264 {
        use crate::media::depacketize::h264::{nal_type, FU_A, STAP_A};
        use crate::media::packetize::h264 as packetize;
        use crate::media::tests::h264::{annexb, idr, non_idr, pps, sps};

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
    }
}
