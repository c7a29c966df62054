//! The MP4's video encoder: x264's settings, and the parallel form that
//! uses several cores and still gives the same bytes on every run.
//!
//! The same RAW must give the same MP4 bytes on every node and every render
//! (a resumed download splices two renders). x264 with VBV (which the
//! reserved size needs) is not deterministic with more than one thread: 4
//! runs on 2 threads gave 4 different streams, with frame or sliced
//! threads, with or without the lookahead, because its rate control reads
//! the sizes of frames other threads are still encoding. One thread gives
//! one stream.
//!
//! So a render with `threads` = N > 1 runs N single-threaded x264
//! processes on interleaved chunks of one GOP each: chunk c (frames
//! 30c..30c+29) goes to encoder c mod N, every encoder starts each of its
//! chunks with an IDR (a fixed GOP, no scene cuts), and the chunks' H.264
//! is put back in order for the muxer. Each encoder sees a fixed sequence
//! of frames, so it writes the same bytes every time; its own VBV bounds
//! its own stream, so the video is at most (R·T + N·B)/8 bytes
//! ([`super::mp4_size`]). The bytes depend on N: the session's reservation
//! records it ([`crate::layout::index::Derived::threads`]), and N = 1 is
//! today's single encoder, byte for byte.

use std::ffi::OsStr;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::ffmpeg::Ffmpeg;
use super::video;

/// Frames per GOP, and per chunk of the parallel form.
pub const GOP: u64 = 30;

/// x264's settings for a cap of `rate` bits/s and a VBV buffer of `buf`
/// bits, one thread. `fixed_gop`: an IDR every [`GOP`] frames and only
/// there (the parallel form's chunks).
pub fn args<'a>(rate: &'a str, buf: &'a str, fixed_gop: bool) -> Vec<&'a OsStr> {
    let mut a = vec![
        "-c:v", "libx264", "-preset", "veryfast", "-threads", "1", "-g", "30", "-bf", "0",
    ];
    if fixed_gop {
        a.extend(["-keyint_min", "30", "-sc_threshold", "0"]);
    }
    a.extend([
        "-b:v", rate, "-maxrate", rate, "-bufsize", buf, "-pix_fmt", "yuv420p",
    ]);
    a.into_iter().map(OsStr::new).collect()
}

/// The input side of N parallel encoders: frames in, dealt out by chunk.
pub struct Feeds {
    feeds: Vec<mpsc::Sender<Bytes>>,
    frame: u64,
}

/// The output side: each encoder's chunks of H.264 (Annex B), in its order.
/// Each encoder holds at most two finished chunks the muxer has not taken,
/// so a slow reader slows the encoders (and the composer) instead of
/// piling up video in memory. It cannot stall them: chunk c is taken from
/// encoder c mod N, which needs only the first frames of chunk c + N to
/// finish it, and every other encoder holds at most chunks below c + N.
pub struct Outputs {
    chunks: Vec<mpsc::Receiver<Vec<u8>>>,
}

/// Starts `n` (≥ 2) encoders of 1280x480 yuv420p frames. Each holds at
/// most one chunk of frames queued (about 28 MB), so the composer can run
/// one chunk ahead of each encoder and all of them stay busy.
pub fn start(n: u32, rate: &str, buf: &str) -> Result<(Feeds, Outputs, Vec<Ffmpeg>), String> {
    let raw = video::raw_format();
    let (mut feeds, mut chunks, mut encoders) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let mut args: Vec<&OsStr> = raw.iter().map(OsStr::new).collect();
        args.extend(["-i", "pipe:0"].map(OsStr::new));
        args.extend(self::args(rate, buf, true));
        args.extend(["-f", "h264", "pipe:1"].map(OsStr::new));
        let mut enc = Ffmpeg::spawn(args)?;
        let mut stdin = enc.stdin.take().ok_or("x264 has no stdin")?;
        super::ffmpeg::widen_frame_pipe(&stdin);
        let mut stdout = enc.stdout.take().ok_or("x264 has no stdout")?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(GOP as usize);
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                if stdin.write_all(&f).await.is_err() {
                    // The encoder ended: its output says so.
                    return;
                }
            }
        });
        let (out_tx, out_rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut split = Chunks::default();
            let mut buf = vec![0u8; 256 * 1024];
            let mut done = Vec::new();
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        if let Err(e) = split.push(&buf[..k], &mut |c| done.push(c)) {
                            // Ending the output early fails the render.
                            tracing::warn!(error = %e, "video encoder output refused");
                            return;
                        }
                    }
                }
                for c in done.drain(..) {
                    if out_tx.send(c).await.is_err() {
                        return;
                    }
                }
            }
            match split.finish() {
                Ok(Some(c)) => {
                    let _ = out_tx.send(c).await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "video encoder output refused"),
            }
        });
        feeds.push(tx);
        chunks.push(out_rx);
        encoders.push(enc);
    }
    Ok((Feeds { feeds, frame: 0 }, Outputs { chunks }, encoders))
}

impl Feeds {
    /// Queues the next frame for the encoder of its chunk.
    pub async fn put(&mut self, frame: &[u8]) -> Result<(), String> {
        let k = ((self.frame / GOP) % self.feeds.len() as u64) as usize;
        self.frame += 1;
        self.feeds[k]
            .send(Bytes::copy_from_slice(frame))
            .await
            .map_err(|_| format!("video encoder {k} ended early"))
    }
}

impl video::FrameSink for Feeds {
    async fn put(&mut self, frame: &[u8]) -> Result<(), String> {
        Feeds::put(self, frame).await
    }
}

impl Outputs {
    /// Writes the `frames` frames' H.264 to `out` in order, chunk by chunk
    /// as each is done.
    pub async fn write_to(
        mut self,
        frames: u64,
        out: &mut tokio::net::unix::pipe::Sender,
    ) -> Result<(), String> {
        let n = self.chunks.len() as u64;
        for c in 0..frames.div_ceil(GOP) {
            let chunk = self.chunks[(c % n) as usize]
                .recv()
                .await
                .ok_or_else(|| format!("video encoder {} ended before chunk {c}", c % n))?;
            out.write_all(&chunk)
                .await
                .map_err(|e| format!("muxer video input: {e}"))?;
        }
        out.flush().await.map_err(|e| e.to_string())
    }
}

/// Cuts one encoder's H.264 byte stream (Annex B, one slice per frame)
/// into chunks of [`GOP`] frames. A NAL unit is known to be whole when the
/// next start code (or the end) arrives; a chunk ends with its GOP-th
/// picture (slice NAL types 1 and 5).
#[derive(Default)]
struct Chunks {
    /// Bytes of the NAL being read, from its start code.
    nal: Vec<u8>,
    /// Where to look for the next start code in `nal`.
    scan: usize,
    /// The chunk so far and its pictures.
    chunk: Vec<u8>,
    pictures: u64,
}

impl Chunks {
    fn push(&mut self, mut b: &[u8], emit: &mut impl FnMut(Vec<u8>)) -> Result<(), String> {
        while !b.is_empty() {
            let take = b.len().min(64 * 1024);
            self.nal.extend_from_slice(&b[..take]);
            b = &b[take..];
            // A start code after the current NAL's own (which sits at 0..4).
            while let Some(at) = next_start(&self.nal, self.scan.max(3)) {
                let rest = self.nal.split_off(at);
                let whole = std::mem::replace(&mut self.nal, rest);
                self.scan = 3;
                self.whole(whole, emit)?;
            }
            self.scan = self.nal.len().saturating_sub(3).max(3);
        }
        Ok(())
    }

    /// The last NAL and the last (short) chunk, at the end of the stream.
    fn finish(mut self) -> Result<Option<Vec<u8>>, String> {
        let last = std::mem::take(&mut self.nal);
        let mut tail = None;
        if !last.is_empty() {
            self.whole(last, &mut |c| tail = Some(c))?;
        }
        Ok(tail.or_else(|| (!self.chunk.is_empty()).then_some(self.chunk)))
    }

    /// Adds one whole NAL. A chunk must start with an IDR picture and hold
    /// one slice per picture (what the settings ask of x264): anything else
    /// would make a chunk depend on another encoder's pictures, so it is
    /// refused rather than passed on.
    fn whole(&mut self, nal: Vec<u8>, emit: &mut impl FnMut(Vec<u8>)) -> Result<(), String> {
        let kind = nal_type(&nal);
        if matches!(kind, Some(1 | 5)) {
            if self.pictures == 0 && kind != Some(5) {
                return Err("a chunk of the parallel encoders does not start with an IDR".into());
            }
            if !first_slice(&nal) {
                return Err("a picture of the parallel encoders has more than one slice".into());
            }
        }
        self.chunk.extend_from_slice(&nal);
        if matches!(kind, Some(1 | 5)) {
            self.pictures += 1;
            if self.pictures == GOP {
                self.pictures = 0;
                emit(std::mem::take(&mut self.chunk));
            }
        }
        Ok(())
    }
}

/// Whether a slice NAL (with its start code) is its picture's first slice:
/// `first_mb_in_slice` is 0, the Exp-Golomb code `1`, so the first bit after
/// the NAL header is set.
fn first_slice(nal: &[u8]) -> bool {
    let Some(at) = next_start(nal, 0) else {
        return false;
    };
    let header = if nal.get(at..at + 4) == Some(&[0, 0, 0, 1]) {
        at + 4
    } else {
        at + 3
    };
    nal.get(header + 1).is_some_and(|b| b & 0x80 != 0)
}

/// Where the next start code (`00 00 01`, with one zero before it for the
/// 4-byte form) begins in `b`, looking from `from`.
fn next_start(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 3 <= b.len() {
        match b[i + 2] {
            1 if b[i] == 0 && b[i + 1] == 0 => {
                return Some(if i > from && b[i - 1] == 0 { i - 1 } else { i });
            }
            // Neither of the next two positions can start `00 00 01`.
            0 => i += 1,
            _ => i += 3,
        }
    }
    None
}

/// The `nal_unit_type` of a NAL that begins with its start code.
fn nal_type(nal: &[u8]) -> Option<u8> {
    let at = next_start(nal, 0)?;
    let header = if nal[at] == 0 && nal.get(at + 1) == Some(&0) && nal.get(at + 2) == Some(&0) {
        at + 4
    } else {
        at + 3
    };
    nal.get(header).map(|h| h & 0x1f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Annex B stream: SPS, PPS, then `pictures` slices (an IDR every
    /// GOP), start codes of both lengths, payloads with zeros in them.
    fn stream(pictures: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut all = Vec::new();
        let mut chunks = Vec::new();
        let mut chunk = Vec::new();
        for p in 0..pictures {
            let mut nals: Vec<Vec<u8>> = Vec::new();
            if p % GOP == 0 {
                nals.push(vec![0, 0, 0, 1, 0x67, 0x42, 0, 0x1f, 0]);
                nals.push(vec![0, 0, 1, 0x68, 0xce, 0x38, 0x80]);
            }
            let kind = if p % GOP == 0 { 0x65 } else { 0x41 };
            // first_mb_in_slice = 0: the slice data's first bit is set.
            let mut slice = vec![0, 0, 0, 1, kind, 0x88];
            slice.extend((0..(p % 7 + 3)).map(|i| if i % 3 == 0 { 0 } else { p as u8 | 1 }));
            slice.extend([0, 0, 3, 0, 0x80]);
            nals.push(slice);
            for n in nals {
                chunk.extend_from_slice(&n);
                all.extend_from_slice(&n);
            }
            if p % GOP == GOP - 1 {
                chunks.push(std::mem::take(&mut chunk));
            }
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        (all, chunks)
    }

    #[test]
    fn an_encoders_stream_is_cut_into_chunks_of_one_gop_however_its_bytes_arrive() {
        let (all, want) = stream(GOP * 3 + 7);
        for step in [1usize, 2, 3, 5, 64, 1000, all.len()] {
            let mut c = Chunks::default();
            let mut got = Vec::new();
            for piece in all.chunks(step) {
                c.push(piece, &mut |x| got.push(x)).unwrap();
            }
            if let Some(x) = c.finish().unwrap() {
                got.push(x);
            }
            assert_eq!(got.len(), want.len(), "step {step}");
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn a_stream_of_whole_gops_ends_without_an_empty_chunk() {
        let (all, want) = stream(GOP * 2);
        let mut c = Chunks::default();
        let mut got = Vec::new();
        c.push(&all, &mut |x| got.push(x)).unwrap();
        if let Some(x) = c.finish().unwrap() {
            got.push(x);
        }
        assert_eq!(got, want);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_chunk_that_does_not_start_with_an_idr_or_a_second_slice_is_refused() {
        let p = [0, 0, 0, 1, 0x41, 0x88, 1, 2];
        let mut c = Chunks::default();
        let mut got = Vec::new();
        c.push(&p, &mut |x| got.push(x)).unwrap();
        assert!(c.finish().is_err(), "a P slice opening a chunk");
        let (all, _) = stream(2);
        let mut c = Chunks::default();
        c.push(&all, &mut |x| got.push(x)).unwrap();
        // A second slice of the same picture: first_mb_in_slice > 0.
        c.push(&[0, 0, 1, 0x41, 0x40, 9], &mut |x| got.push(x))
            .unwrap();
        assert!(c
            .push(&[0, 0, 1, 0x41, 0x88], &mut |x| got.push(x))
            .is_err());
    }
}
