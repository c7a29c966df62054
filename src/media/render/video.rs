//! Each party's video: read packet by packet, depacketized (VP8, VP9,
//! H.264) and wrapped in IVF in a spill file (disk, not memory), decoded by
//! ffmpeg through pipes to constant-rate 640x480 YUV
//! tiles, and placed side by side (agent left) on the session timeline, with
//! a black tile where a party has no video yet or any more.

use std::io::Read;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::ffmpeg::Ffmpeg;
use crate::media::container::ivf;
use crate::media::depacketize::Video;
use crate::media::order::Packets;
use crate::media::spill::Spill;

/// Output frame rate, tile and canvas sizes.
pub const FPS: u64 = 15;
pub const TILE_W: usize = 640;
pub const TILE_H: usize = 480;
pub const W: usize = TILE_W * 2;
pub const H: usize = TILE_H;

const TILE_BYTES: usize = TILE_W * TILE_H * 3 / 2;

/// One party's video, ready to decode.
pub struct Party {
    pub name: String,
    /// Output frame index at which its first frame shows.
    pub start_frame: i64,
    ivf: IvfSpill,
}

/// A stream's frames as an IVF file in an unlinked temporary file: a long
/// call's video costs disk, not memory.
pub(crate) struct IvfSpill {
    spill: Spill,
}

impl IvfSpill {
    /// The file from its start, to feed a decoder.
    pub(crate) fn reader(&self) -> Result<std::fs::File, String> {
        self.spill.reader()
    }
}

/// Bytes of frames gathered before each write to the spill file.
const IVF_WRITE: usize = 256 * 1024;

/// Reads the stream packet by packet, depacketizes as it goes and writes
/// the frames as IVF (times from the first frame) to a spill file: a
/// recording of any length costs the reorder window and a frame in memory.
/// Gives the file and the first frame's timestamp; `None` when no frame
/// decodes. The bytes are those of [`ivf::write`] over all the frames
/// (the same [`ivf::Times`]).
pub(crate) fn ivf_of<R: Read>(packets: &mut Packets<R>) -> Result<Option<(IvfSpill, u64)>, String> {
    let codec = packets.header().codec.clone();
    let Some((mut depacketizer, fourcc)) = Video::of(&codec) else {
        return Err(format!("video codec {codec:?} is not supported yet"));
    };
    let mut out = IvfWriter {
        spill: Spill::new()?,
        buf: Vec::with_capacity(IVF_WRITE + 64 * 1024),
        len: ivf::HEADER_LEN as u64,
        times: ivf::Times::default(),
        count: 0,
    };
    while let Some(p) = packets.next_packet().map_err(|e| e.to_string())? {
        depacketizer.push(&p);
        out.frames(depacketizer.take())?;
    }
    let (rest, stats) = depacketizer.end();
    out.frames(rest)?;
    if stats.incomplete + stats.stale_contexts + stats.waiting_for_keyframe > 0 {
        tracing::debug!(
            codec = %codec,
            kept = stats.frames,
            with_a_hole = stats.incomplete,
            kept_after_a_loss = stats.after_loss,
            on_stale_probabilities = stats.stale_contexts,
            before_the_first_keyframe = stats.waiting_for_keyframe,
            "video frames lost in the recording"
        );
    }
    out.finish(fourcc)
}

struct IvfWriter {
    spill: Spill,
    buf: Vec<u8>,
    /// Bytes of the file so far, `buf` included.
    len: u64,
    times: ivf::Times,
    count: u32,
}

impl IvfWriter {
    fn frames(&mut self, frames: Vec<crate::media::depacketize::Frame>) -> Result<(), String> {
        for f in frames {
            let head = ivf::frame_header(f.data.len() as u32, self.times.next(f.ts));
            self.buf.extend_from_slice(&head);
            self.buf.extend_from_slice(&f.data);
            self.len += (head.len() + f.data.len()) as u64;
            self.count += 1;
            if self.buf.len() >= IVF_WRITE {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        let at = self.len - self.buf.len() as u64;
        self.spill.write_at(&self.buf, at)?;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self, fourcc: &[u8; 4]) -> Result<Option<(IvfSpill, u64)>, String> {
        let Some(first) = self.times.first() else {
            return Ok(None);
        };
        self.flush()?;
        let header = ivf::header(fourcc, TILE_W as u16, TILE_H as u16, 90_000, 1, self.count);
        self.spill.write_at(&header, 0)?;
        Ok(Some((IvfSpill { spill: self.spill }, first)))
    }
}

/// Reads one video stream of a session starting at `session_start_us`;
/// `None` when it holds no decodable frame.
pub fn prepare(name: &str, mjr: impl Read, session_start_us: i64) -> Result<Option<Party>, String> {
    let mut packets = Packets::open(mjr).map_err(|e| format!("{name}: {e}"))?;
    let Some((ivf, first)) = ivf_of(&mut packets).map_err(|e| format!("{name}: {e}"))? else {
        return Ok(None);
    };
    let offset_us = packets.wall_us(first, session_start_us) - session_start_us;
    Ok(Some(Party {
        name: name.to_string(),
        start_frame: (offset_us * FPS as i64).div_euclid(1_000_000),
        ivf,
    }))
}

/// Starts the party's decoder: constant-rate tiles from its first frame.
fn decoder(party: Party) -> Result<(i64, Box<dyn AsyncRead + Unpin + Send>), String> {
    let filter = format!(
        "fps={FPS},scale={TILE_W}:{TILE_H}:force_original_aspect_ratio=decrease,pad={TILE_W}:{TILE_H}:(ow-iw)/2:(oh-ih)/2,format=yuv420p"
    );
    let stdout = Ffmpeg::spawn([
        "-protocol_whitelist",
        "pipe",
        "-f",
        "ivf",
        "-i",
        "pipe:0",
        "-an",
        "-vf",
        &filter,
        "-threads",
        "1",
        "-f",
        "rawvideo",
        "pipe:1",
    ])?
    .decode_file(party.ivf.reader()?)?;
    super::ffmpeg::widen_frame_pipe(&stdout);
    Ok((party.start_frame, Box::new(stdout)))
}

/// A black 640x480 YUV 4:2:0 tile.
fn black() -> Vec<u8> {
    let mut t = vec![16u8; TILE_W * TILE_H];
    t.resize(TILE_BYTES, 128);
    t
}

/// Copies a tile into the left or right half of a canvas.
fn place(canvas: &mut [u8], tile: &[u8], right: bool) {
    let x = if right { TILE_W } else { 0 };
    for row in 0..TILE_H {
        let src = &tile[row * TILE_W..(row + 1) * TILE_W];
        canvas[row * W + x..row * W + x + TILE_W].copy_from_slice(src);
    }
    let (cw, ch) = (TILE_W / 2, TILE_H / 2);
    for plane in 0..2 {
        let src_base = TILE_W * TILE_H + plane * cw * ch;
        let dst_base = W * H + plane * (W / 2) * ch;
        for row in 0..ch {
            let src = &tile[src_base + row * cw..src_base + (row + 1) * cw];
            let d = dst_base + row * (W / 2) + x / 2;
            canvas[d..d + cw].copy_from_slice(src);
        }
    }
}

/// The composed frames' format (1280x480 yuv420p at [`FPS`]) as ffmpeg
/// input options.
pub fn raw_format() -> Vec<String> {
    let mut f: Vec<String> = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s"]
        .map(String::from)
        .to_vec();
    f.extend([format!("{W}x{H}"), "-framerate".into(), FPS.to_string()]);
    f
}

/// Writes exactly `frames` side-by-side frames (1280x480 yuv420p) to `out`:
/// `agent` on the left, `user` on the right.
pub async fn compose<S: FrameSink>(
    agent: Option<Party>,
    user: Option<Party>,
    frames: u64,
    out: &mut S,
) -> Result<(), String> {
    let mut sides = Vec::new();
    for p in [agent, user] {
        sides.push(match p {
            Some(p) => {
                let (start, r) = decoder(p)?;
                Some((start, r, black(), -1i64, false))
            }
            None => None,
        });
    }
    let blank = black();
    let mut canvas = vec![0u8; W * H * 3 / 2];
    for k in 0..frames as i64 {
        for (i, side) in sides.iter_mut().enumerate() {
            let right = i == 1;
            match side {
                None => place(&mut canvas, &blank, right),
                Some((start, r, tile, shown, ended)) => {
                    let want = k - *start;
                    if want < 0 || *ended {
                        place(&mut canvas, &blank, right);
                        continue;
                    }
                    while *shown < want && !*ended {
                        if read_exact(r, tile).await {
                            *shown += 1;
                        } else {
                            *ended = true;
                        }
                    }
                    if *ended {
                        place(&mut canvas, &blank, right);
                    } else {
                        place(&mut canvas, tile, right);
                    }
                }
            }
        }
        out.put(&canvas).await?;
    }
    Ok(())
}

/// Where composed frames go: one encoder's input pipe, or the feeds of
/// several ([`super::x264::Feeds`]).
pub trait FrameSink {
    fn put(&mut self, frame: &[u8]) -> impl std::future::Future<Output = Result<(), String>>;
}

impl FrameSink for tokio::net::unix::pipe::Sender {
    async fn put(&mut self, frame: &[u8]) -> Result<(), String> {
        self.write_all(frame)
            .await
            .map_err(|e| format!("encoder video input: {e}"))
    }
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::depacketize::Frame;

    #[test]
    fn ivf_times_only_move_forward_when_a_senders_clock_steps_back() {
        let mut w = IvfWriter {
            spill: Spill::new().unwrap(),
            buf: Vec::new(),
            len: ivf::HEADER_LEN as u64,
            times: ivf::Times::default(),
            count: 0,
        };
        let frame = |ts| Frame {
            ts,
            keyframe: true,
            data: vec![1, 2, 3],
        };
        w.frames(vec![frame(9000), frame(6000), frame(9000), frame(15000)])
            .unwrap();
        let (ivf, first) = w.finish(b"VP80").unwrap().unwrap();
        assert_eq!(first, 9000);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut ivf.reader().unwrap(), &mut bytes).unwrap();
        let (_, frames) = ivf::read(&bytes).unwrap();
        let pts: Vec<u64> = frames.iter().map(|(t, _)| *t).collect();
        assert_eq!(pts, [0, 1, 2, 6000]);
    }

    #[test]
    fn tiles_land_in_their_half() {
        let mut canvas = vec![0u8; W * H * 3 / 2];
        let tile = vec![200u8; TILE_BYTES];
        place(&mut canvas, &tile, true);
        assert_eq!(canvas[0], 0);
        assert_eq!(canvas[TILE_W], 200);
        assert_eq!(canvas[W * H - 1], 200);
        assert_eq!(canvas[W * H], 0);
        assert_eq!(canvas[W * H + TILE_W / 2], 200);
        place(&mut canvas, &black(), false);
        assert_eq!((canvas[0], canvas[W * H]), (16, 128));
    }
}
