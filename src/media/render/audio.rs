//! The session's mixed audio: each party's stream depacketized (Opus,
//! G.711, G.722), decoded to 48 kHz mono by ffmpeg through pipes, placed on the
//! session timeline from its MJR first-frame time and RTP clock, summed, and
//! cut or padded to an exact number of samples so that encoded sizes are
//! known before rendering.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::ffmpeg::Ffmpeg;
use crate::media::container::ogg::OggOpusWriter;
use crate::media::depacketize::{audio, Frame};
use crate::media::order::read_stream;

/// Sample rate of every mix.
pub const RATE: u64 = 48_000;

/// The look-ahead of libopus encoders at 48 kHz.
const OPUS_PRE_SKIP: u16 = 312;

/// One party's audio, ready to decode.
#[derive(Clone)]
pub struct Party {
    pub name: String,
    /// Where its first sample lands on the session timeline (may be negative).
    pub start: i64,
    source: Source,
}

#[derive(Clone)]
enum Source {
    Opus(Vec<Frame>),
    /// 48 kHz samples, already decoded (G.711, G.722).
    Pcm(Vec<i16>),
}

impl Party {
    /// A party of already decoded 48 kHz samples starting at `start`.
    pub fn pcm(name: &str, start: i64, samples: Vec<i16>) -> Self {
        Self {
            name: name.to_string(),
            start,
            source: Source::Pcm(samples),
        }
    }
}

/// Samples in `ms` milliseconds at [`RATE`].
pub fn samples_for_ms(ms: u64) -> u64 {
    ms * RATE / 1000
}

/// Reads one audio stream of a session starting at `session_start_us`.
pub fn prepare(name: &str, mjr: &[u8], session_start_us: i64) -> Result<Party, String> {
    let stream = read_stream(mjr).map_err(|e| format!("{name}: {e}"))?;
    let first = stream.packets.first().map_or(0, |p| p.ts);
    let offset_us = stream.wall_us(first, session_start_us) - session_start_us;
    let start = offset_us * RATE as i64 / 1_000_000;
    let source = match stream.header.codec.as_str() {
        "opus" => Source::Opus(audio::opus(&stream.packets).0),
        "pcmu" | "pcma" => {
            let (pcm8k, _) = audio::g711(&stream.packets, stream.header.codec == "pcma");
            Source::Pcm(upsample(&pcm8k, 6))
        }
        "g722" => Source::Pcm(upsample(&audio::g722(&stream.packets).0, 3)),
        other => {
            return Err(format!(
                "{name}: audio codec {other:?} is not supported yet"
            ))
        }
    };
    Ok(Party {
        name: name.to_string(),
        start,
        source,
    })
}

/// Raises the sample rate `factor` times (8 or 16 kHz → 48 kHz) by linear
/// interpolation (deterministic, no filter state).
fn upsample(x: &[i16], factor: i32) -> Vec<i16> {
    let mut out = Vec::with_capacity(x.len() * factor as usize);
    for (i, &a) in x.iter().enumerate() {
        let b = *x.get(i + 1).unwrap_or(&a) as i32;
        for k in 0..factor {
            out.push((a as i32 + (b - a as i32) * k / factor) as i16);
        }
    }
    out
}

/// Opus frames as an Ogg Opus file. Opus encoders delay their output by
/// 312 samples (6.5 ms) and RTP does not say so: they are pre-skipped, as an
/// Ogg Opus file from the encoder would.
pub(crate) fn ogg_opus(frames: &[Frame], channels: u8) -> Vec<u8> {
    let mut w = OggOpusWriter::new(1, channels, OPUS_PRE_SKIP, 48_000);
    let mut granule = OPUS_PRE_SKIP as u64;
    for f in frames {
        granule += audio::opus_packet_samples(&f.data).unwrap_or(960) as u64;
        w.push(&f.data, granule);
    }
    w.finish()
}

/// The party's 48 kHz mono samples as a byte stream (s16le).
async fn decoded(party: Party) -> Result<Box<dyn AsyncRead + Unpin + Send>, String> {
    match party.source {
        Source::Pcm(samples) => {
            let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
            Ok(Box::new(std::io::Cursor::new(bytes)))
        }
        Source::Opus(frames) => {
            let ogg = ogg_opus(&frames, 1);
            let stdout = Ffmpeg::spawn([
                "-protocol_whitelist",
                "pipe",
                "-f",
                "ogg",
                "-i",
                "pipe:0",
                "-f",
                "s16le",
                "-ar",
                "48000",
                "-ac",
                "1",
                "-threads",
                "1",
                "pipe:1",
            ])?
            .decode(ogg)?;
            Ok(Box::new(stdout))
        }
    }
}

/// Writes the mix of `parties` over exactly `total` samples (s16le) to `out`.
pub async fn mix<W: tokio::io::AsyncWrite + Unpin>(
    parties: Vec<Party>,
    total: u64,
    out: &mut W,
) -> Result<(), String> {
    const CHUNK: u64 = 48_000;
    let mut inputs = Vec::new();
    for p in parties {
        let start = p.start;
        inputs.push((start, decoded(p).await?, false));
    }
    let mut acc = vec![0i32; CHUNK as usize];
    let mut buf = vec![0u8; CHUNK as usize * 2];
    let mut pos: u64 = 0;
    // Samples before the session start are skipped once.
    for (start, input, _) in inputs.iter_mut() {
        if *start < 0 {
            let mut skip = (-*start) as u64 * 2;
            while skip > 0 {
                let n = (skip as usize).min(buf.len());
                match input.read(&mut buf[..n]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => skip -= k as u64,
                }
            }
            *start = 0;
        }
    }
    while pos < total {
        let len = CHUNK.min(total - pos) as usize;
        acc[..len].iter_mut().for_each(|a| *a = 0);
        for (start, input, done) in inputs.iter_mut() {
            let begin = *start as u64;
            if *done || begin >= pos + len as u64 {
                continue;
            }
            let from = begin.saturating_sub(pos) as usize;
            let want = (len - from) * 2;
            let got = read_full(input, &mut buf[..want]).await;
            if got < want {
                *done = true;
            }
            for (i, s) in buf[..got & !1].chunks_exact(2).enumerate() {
                acc[from + i] += i16::from_le_bytes([s[0], s[1]]) as i32;
            }
        }
        let bytes: Vec<u8> = acc[..len]
            .iter()
            .flat_map(|&v| (v.clamp(i16::MIN as i32, i16::MAX as i32) as i16).to_le_bytes())
            .collect();
        out.write_all(&bytes)
            .await
            .map_err(|e| format!("encoder input: {e}"))?;
        pos += len as u64;
    }
    Ok(())
}

async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_keeps_length_and_endpoints() {
        let y = upsample(&[0, 600, -600], 6);
        assert_eq!(y.len(), 18);
        assert_eq!((y[0], y[6], y[12]), (0, 600, -600));
        assert_eq!(y[3], 300);
    }

    #[tokio::test]
    async fn the_mix_has_exactly_the_asked_length() {
        let a = Party {
            name: "a".into(),
            start: -10,
            source: Source::Pcm(vec![100; 100]),
        };
        let b = Party {
            name: "b".into(),
            start: 50,
            source: Source::Pcm(vec![1000; 30]),
        };
        let mut out = Vec::new();
        mix(vec![a, b], 120, &mut out).await.unwrap();
        let s: Vec<i16> = out
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(s.len(), 120);
        assert_eq!(s[0], 100);
        assert_eq!(s[49], 100);
        assert_eq!(s[50], 1100);
        assert_eq!(s[79], 1100);
        assert_eq!(s[80], 100);
        assert_eq!(s[89], 100);
        assert_eq!(s[90], 0);
        assert_eq!(s[119], 0);
    }
}
