//! Rendering derived media with ffmpeg through pipes only: inputs are
//! written to ffmpeg's stdin in explicit formats, output is read from its
//! stdout as it is produced, settings are fixed (one thread, constant
//! bitrate) so the same RAW always gives the same bytes, and every child is
//! killed when nobody needs it any more.
//!
//! Sizes are known before a render starts: an MP3 at 48 kHz and 128 kbps CBR
//! without a Xing/Info frame is `384 × (⌈N/1152⌉ + 1)` bytes for N samples
//! (checked for many N), and every rendered MP3 starts with an ID3v2 tag of
//! exactly [`MP3_TAG`] bytes (a TSSE frame and padding).

pub mod audio;
pub mod ffmpeg;
pub mod video;
pub mod webm;
pub mod x264;

use bytes::Bytes;
use std::ffi::OsStr;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use audio::Party;
use ffmpeg::{Ffmpeg, PipeDir};

/// Bytes of the ID3v2.4 tag at the start of every rendered MP3.
pub const MP3_TAG: usize = 128;

/// The exact size of the MP3 of `samples` mixed samples.
pub fn mp3_size(samples: u64) -> u64 {
    MP3_TAG as u64 + 384 * (samples.div_ceil(1152) + 1)
}

fn syncsafe(n: usize) -> [u8; 4] {
    [
        (n >> 21 & 0x7f) as u8,
        (n >> 14 & 0x7f) as u8,
        (n >> 7 & 0x7f) as u8,
        (n & 0x7f) as u8,
    ]
}

/// An ID3v2.4 tag of exactly [`MP3_TAG`] bytes: TSSE = "recvault", then padding.
pub fn id3_tag() -> Vec<u8> {
    let text = b"\x03recvault";
    let mut tag = b"ID3\x04\x00\x00".to_vec();
    tag.extend_from_slice(&syncsafe(MP3_TAG - 10));
    tag.extend_from_slice(b"TSSE");
    tag.extend_from_slice(&syncsafe(text.len()));
    tag.extend_from_slice(&[0, 0]);
    tag.extend_from_slice(text);
    tag.resize(MP3_TAG, 0);
    tag
}

/// Samples in one MP3 frame (MPEG-1 Layer III) and its bytes at 128 kbps, 48 kHz.
const MP3_FRAME: u64 = 1152;
const MP3_FRAME_BYTES: u64 = 384;

/// Frames of mix each half's encoder also gets beyond its half, so its
/// frames at the seam are made with the real signal around them.
const MP3_OVERLAP_FRAMES: u64 = 4;

/// Starts LAME on the mix of `parties` over samples `[from, from + len)`;
/// returns the encoder (stdin taken) and the future that feeds it.
fn mp3_encoder(
    parties: Vec<Party>,
    from: u64,
    len: u64,
) -> Result<
    (
        Ffmpeg,
        impl std::future::Future<Output = Result<(), String>>,
    ),
    String,
> {
    let mut enc = Ffmpeg::spawn([
        "-protocol_whitelist",
        "pipe",
        "-f",
        "s16le",
        "-ar",
        "48000",
        "-ac",
        "1",
        "-i",
        "pipe:0",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
        "-reservoir",
        "0",
        "-threads",
        "1",
        "-write_xing",
        "0",
        "-id3v2_version",
        "0",
        "-f",
        "mp3",
        "pipe:1",
    ])?;
    let mut stdin = enc.stdin.take().ok_or("ffmpeg has no stdin")?;
    let parties: Vec<Party> = parties
        .into_iter()
        .map(|p| {
            let mut p = p.from_sample(from as i64);
            p.start -= from as i64;
            p
        })
        .collect();
    let feed = async move {
        let r = audio::mix(parties, len, &mut stdin).await;
        drop(stdin);
        r
    };
    Ok((enc, feed))
}

/// Renders the MP3 of `parties` mixed over `samples` samples, sending its
/// bytes to `out` as they are produced. Fails if the encoder's output is not
/// exactly [`mp3_size`] bytes.
///
/// Without the bit reservoir every LAME frame stands alone, so a long mix is
/// encoded in two halves at once (two cores): the first half streams to the
/// reader, the second waits in a spill file. Each encoder gets
/// [`MP3_OVERLAP_FRAMES`] frames of the other half's mix, and the frames
/// made from the overlap are dropped. The result is deterministic, has
/// exactly the frames one encoder would make (LAME's first frame covers
/// 576 samples of delay), and in our tests is byte-identical to one
/// encoder's output.
pub async fn render_mp3(
    parties: Vec<Party>,
    samples: u64,
    out: mpsc::Sender<Bytes>,
) -> Result<u64, String> {
    let want = mp3_size(samples);
    let tag = id3_tag();
    let tag_len = tag.len() as u64;
    out.send(Bytes::from(tag))
        .await
        .map_err(|_| "no reader".to_string())?;
    let overlap = MP3_OVERLAP_FRAMES * MP3_FRAME;
    let split = samples / 2 / MP3_FRAME * MP3_FRAME;
    let n = if split < 2 * overlap {
        let (mut enc, feed) = mp3_encoder(parties, 0, samples)?;
        let mut stdout = enc.stdout.take().ok_or("ffmpeg has no stdout")?;
        let pump = ffmpeg::pump(&mut stdout, &out, want - tag_len, "MP3", |_| {});
        let n = match tokio::try_join!(feed, pump) {
            Ok(((), n)) => n,
            Err(e) => return Err(ffmpeg::explain(e, [enc]).await),
        };
        enc.finish().await?;
        n
    } else {
        let first_bytes = split / MP3_FRAME * MP3_FRAME_BYTES;
        let (mut enc_a, feed_a) = mp3_encoder(parties.clone(), 0, split + overlap)?;
        let (mut enc_b, feed_b) = mp3_encoder(parties, split - overlap, samples - split + overlap)?;
        let mut out_a = enc_a.stdout.take().ok_or("ffmpeg has no stdout")?;
        let mut out_b = enc_b.stdout.take().ok_or("ffmpeg has no stdout")?;
        let second = std::sync::Arc::new(super::spill::Growing::new()?);
        let mut second_reader = second.follow(0);
        let first = async {
            let n = ffmpeg::pump_exact(&mut out_a, &out, first_bytes, "MP3").await?;
            ffmpeg::drain(&mut out_a).await;
            Ok::<u64, String>(n)
        };
        let keep_second = async {
            let r = ffmpeg::skip_then(&mut out_b, MP3_OVERLAP_FRAMES * MP3_FRAME_BYTES, |b| {
                second.push(b)
            })
            .await;
            second.end(r.clone().map(drop));
            r
        };
        let stream_second = async {
            first.await?;
            let mut n = first_bytes;
            use futures::StreamExt;
            while let Some(b) = second_reader.next().await {
                let b = b.map_err(|e| e.to_string())?;
                n += b.len() as u64;
                if n > want - tag_len {
                    return Err("the MP3 outgrew its reserved size".to_string());
                }
                out.send(b).await.map_err(|_| "no reader".to_string())?;
            }
            Ok(n)
        };
        let n = match tokio::try_join!(feed_a, feed_b, keep_second, stream_second) {
            Ok(((), (), _, n)) => n,
            Err(e) => return Err(ffmpeg::explain(e, [enc_a, enc_b]).await),
        };
        let (done_a, done_b) = tokio::join!(enc_a.finish(), enc_b.finish());
        done_a?;
        done_b?;
        n
    };
    let n = tag_len + n;
    if n != want {
        return Err(format!("the MP3 has {n} bytes, {want} were reserved"));
    }
    Ok(n)
}

/// Default video bitrate cap (`-maxrate`, bits/s) of the side-by-side MP4
/// (per tenant: `mp4_video_kbps`); the VBV buffer (`-bufsize`) is twice the
/// cap. And the AAC bitrate.
pub const VIDEO_BPS: u64 = 800_000;
pub const AUDIO_BPS: u64 = 64_000;

/// The reserved size of the MP4 of a `ms`-long call: x264 with `-maxrate R
/// -bufsize B` writes at most `(R·T + B)/8` bytes of video, `threads`
/// encoders in parallel (see [`x264`]) `(R·T + threads·B)/8`; AAC its bitrate
/// plus 1 %; fragmented-MP4 boxes a bounded amount per sample and fragment;
/// 8 more bytes so that a `free` box can always fill the rest.
pub fn mp4_size(ms: u64, video_bps: u64, threads: u32) -> u64 {
    let video = (video_bps * ms / 1000 + u64::from(threads.max(1)) * 2 * video_bps) / 8;
    let audio = AUDIO_BPS * ms / 1000 / 8 * 101 / 100;
    let video_frames = (ms * video::FPS).div_ceil(1000);
    let audio_frames = (ms * audio::RATE / 1000).div_ceil(1024) + 2;
    let fragments = video_frames.div_ceil(30) + 2;
    let boxes = 16_384 + fragments * 512 + (video_frames + audio_frames) * 16;
    video + audio + boxes + 8
}

/// Samples of priming the AAC encoder puts before the first input sample.
const AAC_PRIMING: i64 = 1024;

/// Follows the top-level boxes of a fragmented MP4 as its bytes are handed
/// on, and logs (at debug, target `recvault::media::render`) each fragment
/// once its `mdat` has been handed to the readers' file: how far a render
/// has come, in the server's own words (the progressive-read test orders
/// these events against what a client has received).
#[derive(Default)]
struct Fragments {
    /// Bytes seen.
    at: u64,
    /// Where the next top-level box starts.
    next_box: u64,
    /// The first bytes of a box header split across chunks.
    header: Vec<u8>,
    /// The box being passed is an `mdat`.
    in_mdat: bool,
    done: u64,
}

impl Fragments {
    fn sent(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.at < self.next_box {
                let skip = ((self.next_box - self.at) as usize).min(b.len());
                self.at += skip as u64;
                b = &b[skip..];
                self.box_ended();
                continue;
            }
            let take = (8 - self.header.len()).min(b.len());
            self.header.extend_from_slice(&b[..take]);
            self.at += take as u64;
            b = &b[take..];
            if self.header.len() == 8 {
                let size = u32::from_be_bytes([
                    self.header[0],
                    self.header[1],
                    self.header[2],
                    self.header[3],
                ]);
                self.in_mdat = &self.header[4..8] == b"mdat";
                // A box is at least its header; 0 and 1 (to the end, 64-bit
                // sizes) are not written by ffmpeg's fragmented muxer here:
                // stop following rather than guess.
                self.next_box = match size {
                    8.. => self.at - 8 + u64::from(size),
                    _ => u64::MAX,
                };
                self.header.clear();
                self.box_ended();
            }
        }
    }

    /// Logs a fragment when the `mdat` being passed has just ended.
    fn box_ended(&mut self) {
        if self.at == self.next_box && self.in_mdat {
            self.in_mdat = false;
            tracing::debug!(
                target: "recvault::media::render",
                fragment = self.done,
                end = self.at,
                "MP4 fragment written"
            );
            self.done += 1;
        }
    }
}

/// A `free` box of exactly `n` (>= 8) bytes.
fn free_box(n: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(n as usize);
    b.extend_from_slice(&(n as u32).to_be_bytes());
    b.extend_from_slice(b"free");
    b.resize(n as usize, 0);
    b
}

/// Renders the side-by-side MP4 (H.264 + AAC, fragmented so the header
/// comes first) of a `ms`-long call, sending bytes as they are produced and
/// padding with a `free` box to exactly [`mp4_size`].
pub async fn render_mp4(
    audio_parties: Vec<Party>,
    agent: Option<video::Party>,
    user: Option<video::Party>,
    ms: u64,
    video_bps: u64,
    threads: u32,
    out: mpsc::Sender<Bytes>,
) -> Result<u64, String> {
    let dir = PipeDir::new().await?;
    let (vpath, apath) = (dir.video(), dir.audio());
    let frames = (ms * video::FPS).div_ceil(1000);
    let samples = audio::samples_for_ms(ms);
    let (rate, buf, abr) = (
        video_bps.to_string(),
        (2 * video_bps).to_string(),
        AUDIO_BPS.to_string(),
    );
    let fps = video::FPS.to_string();
    let raw = video::raw_format();
    let raw_video: Vec<&str> = raw.iter().map(String::as_str).collect();
    let pcm = ["-f", "s16le", "-ar", "48000", "-ac", "1"];
    // One encoder: it reads the composed frames and muxes. Several: they
    // encode chunks in parallel and this ffmpeg muxes their H.264 as is.
    let parallel = threads > 1;
    let h264 = ["-f", "h264", "-framerate", &fps];
    let mut args = if parallel {
        ffmpeg::pipe_input(&vpath, &h264)
    } else {
        ffmpeg::pipe_input(&vpath, &raw_video)
    };
    args.extend(ffmpeg::pipe_input(&apath, &pcm));
    args.extend(["-map", "0:v", "-map", "1:a"].map(OsStr::new));
    if parallel {
        args.extend(["-c:v", "copy"].map(OsStr::new));
    } else {
        args.extend(x264::args(&rate, &buf, false));
    }
    args.extend(
        [
            "-c:a",
            "aac",
            "-b:a",
            &abr,
            // The AAC priming makes the audio start at -1024 samples; the
            // muxer's default shift for that moved every video frame but the
            // first 21.3 ms off the frame grid. Unshifted, video keeps its
            // own timeline (the mix is started early instead, below).
            "-avoid_negative_ts",
            "disabled",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-f",
            "mp4",
            "pipe:1",
        ]
        .map(OsStr::new),
    );
    let mut enc = Ffmpeg::spawn(args)?;
    let mut stdout = enc.stdout.take().ok_or("ffmpeg has no stdout")?;
    let (lanes, mut encoders) = if parallel {
        let (feeds, outputs, encoders) = x264::start(threads, &rate, &buf)?;
        (Some((feeds, outputs)), encoders)
    } else {
        (None, Vec::new())
    };
    let feed_video = async {
        let mut f = ffmpeg::open_pipe(&vpath).await?;
        match lanes {
            Some((mut feeds, outputs)) => {
                let compose = async {
                    video::compose(agent, user, frames, &mut feeds).await?;
                    // Closing the feeds ends the encoders' input.
                    drop(feeds);
                    Ok::<(), String>(())
                };
                tokio::try_join!(compose, outputs.write_to(frames, &mut f))?;
                Ok(())
            }
            None => {
                ffmpeg::widen_frame_pipe(&f);
                video::compose(agent, user, frames, &mut f).await?;
                f.flush().await.map_err(|e| e.to_string())
            }
        }
    };
    // The AAC encoder puts 1024 samples of priming before the first one and
    // a fragmented MP4 has no edit list to hide them: start the mix 1024
    // samples later, so decoded audio lines up with the video.
    let mut audio_parties = audio_parties;
    for p in &mut audio_parties {
        p.start -= AAC_PRIMING;
    }
    let feed_audio = async {
        let mut f = ffmpeg::open_pipe(&apath).await?;
        audio::mix(audio_parties, samples, &mut f).await?;
        f.flush().await.map_err(|e| e.to_string())
    };
    // 8 bytes stay free for the padding box's header.
    let want = mp4_size(ms, video_bps, threads);
    let mut fragments = Fragments::default();
    let pump = ffmpeg::pump(&mut stdout, &out, want - 8, "MP4", |b| fragments.sent(b));
    let n = match tokio::try_join!(feed_video, feed_audio, pump) {
        Ok(((), (), n)) => n,
        Err(e) => {
            // The x264s first: a muxer fails when one of them died.
            encoders.push(enc);
            return Err(ffmpeg::explain(e, encoders).await);
        }
    };
    for e in encoders {
        e.finish().await?;
    }
    enc.finish().await?;
    out.send(Bytes::from(free_box(want - n)))
        .await
        .map_err(|_| "no reader".to_string())?;
    Ok(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_counted_at_the_end_of_each_mdat_whatever_the_chunking() {
        let boxed = |kind: &[u8; 4], body: usize| {
            let mut b = ((body + 8) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(kind);
            b.resize(body + 8, 7);
            b
        };
        let mut file = Vec::new();
        file.extend(boxed(b"ftyp", 16));
        file.extend(boxed(b"moov", 300));
        for n in 0..5 {
            file.extend(boxed(b"moof", 50 + n));
            file.extend(boxed(b"mdat", 1000 * n));
        }
        for chunk in [1, 3, 7, 8, 9, 1000, 100_000] {
            let mut f = Fragments::default();
            file.chunks(chunk).for_each(|c| f.sent(c));
            assert_eq!((f.done, f.at), (5, file.len() as u64), "chunks of {chunk}");
        }
        // Half-way through the last mdat: four fragments.
        let mut f = Fragments::default();
        f.sent(&file[..file.len() - 100]);
        assert_eq!(f.done, 4);
    }

    #[test]
    fn the_tag_has_its_fixed_size_and_a_valid_header() {
        let t = id3_tag();
        assert_eq!(t.len(), MP3_TAG);
        assert_eq!(&t[..5], b"ID3\x04\x00");
        assert_eq!(&t[10..14], b"TSSE");
        assert_eq!(mp3_size(1), 128 + 768);
        assert_eq!(mp3_size(48_000), 128 + 16_512);
    }

    /// Speech-like test sound: a gliding tone, bursts of noise, silences.
    fn voice(n: usize, seed: u64) -> Vec<i16> {
        let mut rng = crate::media::testkit::Rng(seed);
        (0..n)
            .map(|i| {
                let t = i as f64 / 48_000.0;
                let on = (t * 3.0).sin() > -0.3;
                let tone =
                    (2.0 * std::f64::consts::PI * (300.0 + 200.0 * (t * 0.7).sin()) * t).sin();
                let noise = (rng.below(2001) as f64 - 1000.0) / 1000.0;
                if on {
                    (tone * 9000.0 + noise * 1500.0) as i16
                } else {
                    0
                }
            })
            .collect()
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> Vec<u8> {
        let mut v = Vec::new();
        while let Some(b) = rx.recv().await {
            v.extend_from_slice(&b);
        }
        v
    }

    #[tokio::test]
    async fn an_mp3_encoded_in_two_halves_has_its_reserved_size_and_one_encoders_bytes() {
        let samples = 48_000 * 7 + 123;
        let parties = vec![
            audio::Party::pcm("a", 0, voice(48_000 * 7, 3)),
            audio::Party::pcm("b", 30_000, voice(48_000 * 5, 5)),
        ];
        let (tx, rx) = mpsc::channel(4);
        let (n, split) = tokio::join!(render_mp3(parties.clone(), samples, tx), collect(rx));
        assert_eq!(n.unwrap(), mp3_size(samples));
        assert_eq!(split.len() as u64, mp3_size(samples));
        // Every frame starts with a frame sync (no byte lost or added at the seam).
        let frames = &split[MP3_TAG..];
        assert!(frames
            .chunks(MP3_FRAME_BYTES as usize)
            .all(|f| f[0] == 0xff && f[1] & 0xe0 == 0xe0));
        // One encoder over the whole mix, for comparison.
        let (enc, feed) = mp3_encoder(parties, 0, samples).unwrap();
        let mut enc = enc;
        let mut stdout = enc.stdout.take().unwrap();
        let mut whole = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut whole);
        let (fed, read) = tokio::join!(feed, read);
        fed.unwrap();
        read.unwrap();
        enc.finish().await.unwrap();
        assert_eq!(frames.len(), whole.len());
        let differing = frames
            .chunks(MP3_FRAME_BYTES as usize)
            .zip(whole.chunks(MP3_FRAME_BYTES as usize))
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "frames differing from one encoder's");
    }

    #[tokio::test]
    async fn a_short_mp3_is_encoded_whole_with_its_reserved_size() {
        let samples = 20_000;
        let (tx, rx) = mpsc::channel(4);
        let parties = vec![audio::Party::pcm("a", 0, voice(20_000, 7))];
        let (n, got) = tokio::join!(render_mp3(parties, samples, tx), collect(rx));
        assert_eq!(n.unwrap(), mp3_size(samples));
        assert_eq!(got.len() as u64, mp3_size(samples));
    }
}
