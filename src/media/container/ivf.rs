//! IVF, the simple VP8/VP9 container of libvpx: a 32-byte file header
//! (`DKIF`, version 0, header length 32, FourCC, width, height, time base
//! denominator and numerator, frame count, 4 unused bytes), then each frame
//! as a 12-byte header (length, 64-bit presentation time in time-base units)
//! followed by the frame. Every number is little-endian.
//!
//! [`header`] and [`frame_header`] write it ([`write`] a whole file of
//! depacketized frames); [`read`] parses a whole file
//! back (for tests and checks) and refuses, with the byte offset, what it
//! cannot read, without ever panicking.

use crate::media::depacketize::Frame;

/// Length of the file header.
pub const HEADER_LEN: usize = 32;
/// Length of each frame header.
pub const FRAME_HEADER_LEN: usize = 12;

/// The file header fields [`read`] gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfHeader {
    /// `VP80`, `VP90`, `AV01`…
    pub fourcc: [u8; 4],
    pub width: u16,
    pub height: u16,
    /// The time base is `timebase_num / timebase_den` seconds; a 90 kHz RTP
    /// clock is `den = 90000, num = 1`.
    pub timebase_den: u32,
    pub timebase_num: u32,
}

/// One frame as [`read`] gives it back: presentation time and data.
pub type IvfFrame = (u64, Vec<u8>);

/// The 32-byte file header.
pub fn header(
    fourcc: &[u8; 4],
    width: u16,
    height: u16,
    timebase_den: u32,
    timebase_num: u32,
    frames: u32,
) -> [u8; 32] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(b"DKIF");
    // Version 0 at 4..6; the header length:
    h[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    h[8..12].copy_from_slice(fourcc);
    h[12..14].copy_from_slice(&width.to_le_bytes());
    h[14..16].copy_from_slice(&height.to_le_bytes());
    h[16..20].copy_from_slice(&timebase_den.to_le_bytes());
    h[20..24].copy_from_slice(&timebase_num.to_le_bytes());
    h[24..28].copy_from_slice(&frames.to_le_bytes());
    h
}

/// The 12-byte header in front of a frame of `len` bytes shown at `pts`.
pub fn frame_header(len: u32, pts: u64) -> [u8; 12] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..12].copy_from_slice(&pts.to_le_bytes());
    h
}

/// The presentation times of one file's frames: counted from the first
/// frame's timestamp, and only moving forward (a frame stamped at or before
/// the one before it, a sender's clock stepping back, shows one tick
/// later, so decoders still get it and muxers get valid times).
#[derive(Debug, Default)]
pub struct Times {
    first: Option<u64>,
    last: Option<u64>,
}

impl Times {
    /// The presentation time of the next frame, stamped `ts`.
    pub fn next(&mut self, ts: u64) -> u64 {
        let first = *self.first.get_or_insert(ts);
        let mut pts = ts.saturating_sub(first);
        if let Some(last) = self.last.filter(|&l| pts <= l) {
            pts = last + 1;
        }
        self.last = Some(pts);
        pts
    }

    /// The first frame's timestamp, once there is one.
    pub fn first(&self) -> Option<u64> {
        self.first
    }
}

/// An IVF file of `frames` (90 kHz timestamps), times as [`Times`] gives them.
pub fn write(fourcc: &[u8; 4], width: u16, height: u16, frames: &[Frame]) -> Vec<u8> {
    let size = 32 + frames.iter().map(|f| 12 + f.data.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&header(
        fourcc,
        width,
        height,
        90_000,
        1,
        frames.len() as u32,
    ));
    let mut times = Times::default();
    for f in frames {
        out.extend_from_slice(&frame_header(f.data.len() as u32, times.next(f.ts)));
        out.extend_from_slice(&f.data);
    }
    out
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses a whole IVF file: its header and every frame with its
/// presentation time. The frame count in the header is not trusted (writers
/// that stream often leave it 0); the frames are what the file holds.
pub fn read(bytes: &[u8]) -> Result<(IvfHeader, Vec<IvfFrame>), String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "truncated IVF header: {} of {HEADER_LEN} bytes",
            bytes.len()
        ));
    }
    if bytes.get(0..4) != Some(&b"DKIF"[..]) {
        return Err("not an IVF file (byte 0 is not DKIF)".into());
    }
    let bad = |what: &str| format!("bad IVF header: {what}");
    let version = le16(bytes, 4).ok_or_else(|| bad("version"))?;
    if version != 0 {
        return Err(bad(&format!("version {version}")));
    }
    let header_len = usize::from(le16(bytes, 6).ok_or_else(|| bad("length"))?);
    if header_len < HEADER_LEN || header_len > bytes.len() {
        return Err(bad(&format!("header length {header_len}")));
    }
    let mut fourcc = [0u8; 4];
    fourcc.copy_from_slice(bytes.get(8..12).ok_or_else(|| bad("fourcc"))?);
    let header = IvfHeader {
        fourcc,
        width: le16(bytes, 12).ok_or_else(|| bad("width"))?,
        height: le16(bytes, 14).ok_or_else(|| bad("height"))?,
        timebase_den: le32(bytes, 16).ok_or_else(|| bad("time base"))?,
        timebase_num: le32(bytes, 20).ok_or_else(|| bad("time base"))?,
    };
    let mut frames = Vec::new();
    let mut at = header_len;
    while at < bytes.len() {
        let (Some(len), Some(pts)) = (le32(bytes, at), le64(bytes, at + 4)) else {
            return Err(format!("truncated frame header at byte {at}"));
        };
        let start = at + FRAME_HEADER_LEN;
        let data = usize::try_from(len)
            .ok()
            .and_then(|len| bytes.get(start..start.checked_add(len)?))
            .ok_or_else(|| {
                format!(
                    "truncated frame at byte {at}: {len} bytes announced, {} left",
                    bytes.len() - start
                )
            })?;
        frames.push((pts, data.to_vec()));
        at = start + data.len();
    }
    Ok((header, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut f = header(b"VP80", 640, 480, 90_000, 1, frames.len() as u32).to_vec();
        for (pts, data) in frames {
            f.extend_from_slice(&frame_header(data.len() as u32, *pts));
            f.extend_from_slice(data);
        }
        f
    }

    #[test]
    fn header_layout() {
        let h = header(b"VP90", 0x0280, 0x01e0, 30_000, 1001, 0x0102_0304);
        assert_eq!(&h[0..4], b"DKIF");
        assert_eq!(&h[4..8], &[0, 0, 32, 0]);
        assert_eq!(&h[8..12], b"VP90");
        assert_eq!(&h[12..16], &[0x80, 0x02, 0xe0, 0x01]);
        assert_eq!(&h[16..20], &30_000u32.to_le_bytes());
        assert_eq!(&h[20..24], &1001u32.to_le_bytes());
        assert_eq!(&h[24..28], &[4, 3, 2, 1]);
        assert_eq!(&h[28..32], &[0, 0, 0, 0]);
    }

    #[test]
    fn frame_header_layout() {
        let h = frame_header(0x0a0b_0c0d, 0x1122_3344_5566_7788);
        assert_eq!(&h[0..4], &[0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(&h[4..12], &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    }

    #[test]
    fn round_trip() {
        let frames = vec![
            (0, vec![1, 2, 3]),
            (3000, Vec::new()),
            (u64::MAX, vec![9; 1000]),
        ];
        let (h, got) = read(&file(&frames)).unwrap();
        assert_eq!(
            h,
            IvfHeader {
                fourcc: *b"VP80",
                width: 640,
                height: 480,
                timebase_den: 90_000,
                timebase_num: 1
            }
        );
        assert_eq!(got, frames);
        let (_, none) = read(&file(&[])).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn a_longer_header_is_skipped() {
        let mut f = header(b"VP80", 1, 2, 3, 4, 1).to_vec();
        f[6] = 40;
        f.extend_from_slice(&[0xee; 8]);
        f.extend_from_slice(&frame_header(2, 5));
        f.extend_from_slice(&[7, 8]);
        assert_eq!(read(&f).unwrap().1, vec![(5, vec![7, 8])]);
    }

    #[test]
    fn bad_files_are_refused() {
        let good = file(&[(0, vec![1, 2, 3]), (1, vec![4])]);
        assert!(read(&[]).unwrap_err().contains("truncated IVF header"));
        assert!(read(&good[..31]).is_err());
        let mut f = good.clone();
        f[0] = b'X';
        assert!(read(&f).unwrap_err().contains("not an IVF"));
        let mut f = good.clone();
        f[4] = 1;
        assert!(read(&f).unwrap_err().contains("version"));
        for len in [0u8, 31] {
            let mut f = good.clone();
            f[6] = len;
            assert!(read(&f).unwrap_err().contains("header length"));
        }
        let mut f = good.clone();
        f[6..8].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(read(&f).unwrap_err().contains("header length"));
        // Every cut inside the frames is refused with its offset.
        for n in 33..good.len() {
            if n == 32 + 12 + 3 {
                assert!(read(&good[..n]).is_ok());
                continue;
            }
            let e = read(&good[..n]).unwrap_err();
            assert!(
                e.contains("at byte 32") || e.contains("at byte 47"),
                "{n}: {e}"
            );
        }
        // An absurd length.
        let mut f = good.clone();
        f[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read(&f).unwrap_err().contains("4294967295 bytes announced"));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let good = file(&[(0, vec![1, 2, 3]), (1, vec![4; 20]), (2, vec![5; 7])]);
        for _ in 0..5000 {
            let mut f = good.clone();
            for _ in 0..=next() % 4 {
                let i = (next() % f.len() as u64) as usize;
                f[i] = next() as u8;
            }
            let cut = (next() % (f.len() as u64 + 1)) as usize;
            let _ = read(&f[..cut]);
            let _ = read(&f);
            let len = (next() % 80) as usize;
            let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = read(&junk);
        }
    }
}
