//! The session's mixed audio: each party's stream depacketized (Opus,
//! G.711, G.722), decoded to 48 kHz mono by ffmpeg through pipes, placed on the
//! session timeline from its MJR first-frame time and RTP clock, summed, and
//! cut or padded to an exact number of samples so that encoded sizes are
//! known before rendering.

use std::sync::Arc;

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
    /// Decoded samples (G.711, G.722) at 48 kHz / `factor`, from index
    /// `from` on; raised to 48 kHz as the mixer reads them.
    Pcm {
        samples: Arc<Vec<i16>>,
        from: usize,
        factor: usize,
    },
}

/// Samples decoded before the point a mixer starts at, when the party is
/// cut there ([`Party::from_sample`]): an Opus decoder's output settles
/// within this (RFC 7845 advises 80 ms of pre-roll).
const PRE_ROLL: i64 = 4_800;

impl Party {
    /// The party as a mixer starting at timeline sample `at` needs it:
    /// what ends more than [`PRE_ROLL`] before `at` is dropped (whole Opus
    /// packets) and `start` moves by as much, so that mixer does not decode
    /// the past.
    pub fn from_sample(mut self, at: i64) -> Self {
        let skip = at - PRE_ROLL - self.start;
        if skip <= 0 {
            return self;
        }
        let dropped = match &mut self.source {
            Source::Pcm {
                samples,
                from,
                factor,
            } => {
                let k = (skip as usize / *factor).min(samples.len() - *from);
                *from += k;
                (k * *factor) as i64
            }
            Source::Opus(frames) => {
                let (mut dropped, mut k) = (0i64, 0usize);
                for f in frames.iter() {
                    let n = audio::opus_packet_samples(&f.data).unwrap_or(960) as i64;
                    if dropped + n > skip {
                        break;
                    }
                    dropped += n;
                    k += 1;
                }
                frames.drain(..k);
                dropped
            }
        };
        self.start += dropped;
        self
    }

    /// A party of already decoded 48 kHz samples starting at `start`.
    pub fn pcm(name: &str, start: i64, samples: Vec<i16>) -> Self {
        Self {
            name: name.to_string(),
            start,
            source: Source::Pcm {
                samples: Arc::new(samples),
                from: 0,
                factor: 1,
            },
        }
    }
}

/// Samples in `ms` milliseconds at [`RATE`].
pub fn samples_for_ms(ms: u64) -> u64 {
    ms * RATE / 1000
}

/// Reads one audio stream of a session starting at `session_start_us`.
pub fn prepare(
    name: &str,
    mjr: impl std::io::Read,
    session_start_us: i64,
) -> Result<Party, String> {
    let stream = read_stream(mjr).map_err(|e| format!("{name}: {e}"))?;
    let first = stream.packets.first().map_or(0, |p| p.ts);
    let offset_us = stream.wall_us(first, session_start_us) - session_start_us;
    let start = offset_us * RATE as i64 / 1_000_000;
    let source = match stream.header.codec.as_str() {
        "opus" => Source::Opus(audio::opus(&stream.packets).0),
        "pcmu" | "pcma" => {
            let (pcm8k, _) = audio::g711(&stream.packets, stream.header.codec == "pcma");
            Source::Pcm {
                samples: Arc::new(pcm8k),
                from: 0,
                factor: 6,
            }
        }
        "g722" => Source::Pcm {
            samples: Arc::new(audio::g722(&stream.packets).0),
            from: 0,
            factor: 3,
        },
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

/// 8 or 16 kHz samples read as 48 kHz s16le bytes: each sample followed by
/// `factor - 1` linearly interpolated ones (deterministic, no filter state,
/// nothing held but the source).
struct Upsampled {
    samples: Arc<Vec<i16>>,
    pos: usize,
    factor: usize,
    phase: usize,
    /// The second byte of a sample split by an odd-sized read.
    pending: Option<u8>,
}

impl Upsampled {
    fn next_sample(&mut self) -> Option<i16> {
        let a = *self.samples.get(self.pos)? as i32;
        let b = *self.samples.get(self.pos + 1).unwrap_or(&(a as i16)) as i32;
        let v = a + (b - a) * self.phase as i32 / self.factor as i32;
        self.phase += 1;
        if self.phase == self.factor {
            self.phase = 0;
            self.pos += 1;
        }
        Some(v as i16)
    }
}

impl AsyncRead for Upsampled {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(b) = this.pending.take() {
            buf.put_slice(&[b]);
        }
        while buf.remaining() > 0 {
            let Some(v) = this.next_sample() else { break };
            let [lo, hi] = v.to_le_bytes();
            if buf.remaining() >= 2 {
                buf.put_slice(&[lo, hi]);
            } else {
                buf.put_slice(&[lo]);
                this.pending = Some(hi);
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
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
        Source::Pcm {
            samples,
            from,
            factor,
        } => Ok(Box::new(Upsampled {
            samples,
            pos: from,
            factor,
            phase: 0,
            pending: None,
        })),
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

    #[tokio::test]
    async fn upsampling_keeps_length_and_endpoints_whatever_the_read_sizes() {
        let mut whole = Vec::new();
        for read in [1usize, 3, 64] {
            let mut r = Upsampled {
                samples: Arc::new(vec![0, 600, -600]),
                pos: 0,
                factor: 6,
                phase: 0,
                pending: None,
            };
            let mut bytes = Vec::new();
            let mut buf = vec![0u8; read];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                bytes.extend_from_slice(&buf[..n]);
            }
            whole.push(bytes);
        }
        assert!(whole.iter().all(|b| *b == whole[0]));
        let y: Vec<i16> = whole[0]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(y.len(), 18);
        assert_eq!((y[0], y[6], y[12]), (0, 600, -600));
        assert_eq!(y[3], 300);
    }

    #[tokio::test]
    async fn the_mix_has_exactly_the_asked_length() {
        let a = Party {
            name: "a".into(),
            start: -10,
            source: Source::Pcm {
                samples: Arc::new(vec![100; 100]),
                from: 0,
                factor: 1,
            },
        };
        let b = Party {
            name: "b".into(),
            start: 50,
            source: Source::Pcm {
                samples: Arc::new(vec![1000; 30]),
                from: 0,
                factor: 1,
            },
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

    async fn mixed(parties: Vec<Party>, total: u64) -> Vec<u8> {
        let mut out = Vec::new();
        mix(parties, total, &mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_party_cut_for_a_later_mixer_mixes_the_same_from_there() {
        let samples: Vec<i16> = (0..20_000).map(|i| (i % 3000) as i16).collect();
        let whole = Party::pcm("a", 100, samples);
        let cut = whole.clone().from_sample(10_000);
        assert_eq!(cut.start, 10_000 - PRE_ROLL);
        // A mixer starting at 10000 sees the same samples either way.
        let shift = |mut p: Party| {
            p.start -= 10_000;
            p
        };
        let a = mixed(vec![shift(whole.clone())], 8_000).await;
        let b = mixed(vec![shift(cut)], 8_000).await;
        assert_eq!(a, b);
        // Nothing to drop when the mixer starts early.
        assert_eq!(whole.clone().from_sample(3_000).start, 100);
    }

    #[test]
    fn opus_parties_lose_whole_packets_only() {
        // 20 ms CELT packets (TOC config 31, one frame): 960 samples each.
        let frames: Vec<Frame> = (0..100)
            .map(|i| Frame {
                ts: i * 960,
                keyframe: true,
                data: vec![0xf8, 0xff, 0xfe],
            })
            .collect();
        let p = Party {
            name: "o".into(),
            start: 0,
            source: Source::Opus(frames),
        };
        let cut = p.from_sample(50_000);
        // 50000 - 4800 = 45200 samples may go: 47 whole packets (45120).
        assert_eq!(cut.start, 47 * 960);
        let Source::Opus(left) = &cut.source else {
            panic!("still Opus")
        };
        assert_eq!(left.len(), 53);
        assert_eq!(left[0].ts, 47 * 960);
    }
}
