//! Test helpers shared by the media modules' unit tests.

use super::depacketize::{Frame, Packet};

/// A tiny xorshift PRNG: deterministic test data without extra crates.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// RTP packets of `frames`, 3000 ticks apart from `ts0`, with consecutive
/// sequence numbers from `seq0`; frame i goes through
/// `packetize(frame, max, pid0 + i)`.
pub(crate) fn packets(
    frames: &[Vec<u8>],
    max: usize,
    (seq0, ts0, pid0): (u64, u64, u16),
    packetize: impl Fn(&[u8], usize, u16) -> Vec<(bool, Vec<u8>)>,
) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut seq = seq0;
    for (i, f) in frames.iter().enumerate() {
        let ts = ts0 + 3000 * i as u64;
        for (marker, payload) in packetize(f, max, pid0 + i as u16) {
            out.push(Packet {
                seq,
                ts,
                marker,
                payload,
            });
            seq += 1;
        }
    }
    out
}

/// The frames of [`packets`] numbered in `keep`, as a depacketizer hands them out.
pub(crate) fn expected(
    frames: &[Vec<u8>],
    keep: &[usize],
    ts0: u64,
    is_key: impl Fn(&[u8]) -> bool,
) -> Vec<Frame> {
    keep.iter()
        .map(|&i| Frame {
            ts: ts0 + 3000 * i as u64,
            keyframe: is_key(&frames[i]),
            data: frames[i].clone(),
        })
        .collect()
}

/// key, delta, delta, delta, key, delta, delta (big enough for 3+ packets at 100 bytes).
pub(crate) fn gop(
    key: impl Fn(usize, u8) -> Vec<u8>,
    delta: impl Fn(usize, u8) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    vec![
        key(450, 1),
        delta(260, 2),
        delta(120, 3),
        delta(230, 4),
        key(500, 5),
        delta(210, 6),
        delta(60, 7),
    ]
}
