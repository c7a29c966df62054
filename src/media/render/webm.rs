//! One party's own file: its video and Opus audio remuxed without
//! re-encoding (G.711 and G.722 audio are encoded to Opus), with the two
//! streams aligned by their MJR first-frame times. VP8/VP9 (or audio alone)
//! go into a WebM, H.264 into an MP4 (Opus in MP4), since WebM cannot carry
//! H.264. Made once at archive time, so the listed size is the stored
//! file's; the muxer writes to a file it can seek in, so the WebM has its
//! Duration and Cues and the MP4 its index first (`faststart`): players
//! show the length and seek at once. `-fflags +bitexact` keeps the bytes the
//! same for the same RAW (no random segment UID, no encoder tag).

use std::io::Read;

use tokio::io::AsyncWriteExt;

use super::audio::ogg_opus;
use super::ffmpeg::{self, Ffmpeg, PipeDir};
use super::video::{ivf_of, IvfSpill};
use crate::media::depacketize::audio;
use crate::media::order::{read_stream, Packets};

/// One input: its container bytes, where it starts (µs, wall clock), its
/// ffmpeg input options and whether its audio needs encoding.
struct Input {
    start_us: i64,
    body: Body,
    format: &'static [&'static str],
    encode_opus: bool,
}

/// An input's bytes: audio in memory (small), video in a spill file.
enum Body {
    Bytes(Vec<u8>),
    Ivf(IvfSpill),
}

/// A party's file: its extension (`webm` or `mp4`), size, and the file
/// itself (unlinked: it lives while open).
#[derive(Debug)]
pub struct PartyFile {
    pub ext: &'static str,
    pub size: u64,
    pub file: std::fs::File,
}

/// The party's video as an input, and whether it is H.264.
fn video_input(mjr: impl Read) -> Result<Option<(Input, bool)>, String> {
    let mut packets = Packets::open(mjr).map_err(|e| e.to_string())?;
    let h264 = packets.header().codec == "h264";
    let Some((ivf, first)) = ivf_of(&mut packets)? else {
        return Ok(None);
    };
    let input = Input {
        start_us: packets.wall_us(first, 0),
        body: Body::Ivf(ivf),
        format: &["-f", "ivf"],
        encode_opus: false,
    };
    Ok(Some((input, h264)))
}

fn audio_input(mjr: impl Read) -> Result<Option<Input>, String> {
    let s = read_stream(mjr).map_err(|e| e.to_string())?;
    let Some(first) = s.packets.first().map(|p| p.ts) else {
        return Ok(None);
    };
    let start_us = s.wall_us(first, 0);
    match s.header.codec.as_str() {
        "opus" => {
            let (frames, _) = audio::opus(&s.packets);
            Ok(Some(Input {
                start_us,
                body: Body::Bytes(ogg_opus(&frames, 2)),
                format: &["-f", "ogg"],
                encode_opus: false,
            }))
        }
        "pcmu" | "pcma" => {
            let (pcm, _) = audio::g711(&s.packets, s.header.codec == "pcma");
            Ok(Some(Input {
                start_us,
                body: Body::Bytes(pcm.iter().flat_map(|v| v.to_le_bytes()).collect()),
                format: &["-f", "s16le", "-ar", "8000", "-ac", "1"],
                encode_opus: true,
            }))
        }
        "g722" => {
            let (pcm, _) = audio::g722(&s.packets);
            Ok(Some(Input {
                start_us,
                body: Body::Bytes(pcm.iter().flat_map(|v| v.to_le_bytes()).collect()),
                format: &["-f", "s16le", "-ar", "16000", "-ac", "1"],
                encode_opus: true,
            }))
        }
        _ => Ok(None),
    }
}

/// The party's file, or `None` when it has neither video nor audio. The
/// recordings are parsed on a blocking thread.
pub async fn party_file(
    video: Option<std::fs::File>,
    audio: Option<std::fs::File>,
) -> Result<Option<PartyFile>, String> {
    let (v, a) = tokio::task::spawn_blocking(move || {
        let buffered = |f| std::io::BufReader::with_capacity(256 * 1024, f);
        let v = video
            .map(|f| video_input(buffered(f)))
            .transpose()?
            .flatten();
        let a = audio
            .map(|f| audio_input(buffered(f)))
            .transpose()?
            .flatten();
        Ok::<_, String>((v, a))
    })
    .await
    .map_err(|e| format!("party file input parser: {e}"))??;
    let h264 = v.as_ref().is_some_and(|(_, h264)| *h264);
    let v = v.map(|(i, _)| i);
    let (ext, muxer): (&'static str, &[&str]) = if h264 {
        ("mp4", &["-movflags", "+faststart", "-f", "mp4"])
    } else {
        ("webm", &["-f", "webm"])
    };
    let encode_opus = a.as_ref().is_some_and(|i| i.encode_opus);
    let inputs: Vec<(Input, &str)> = [(v, "v"), (a, "a")]
        .into_iter()
        .filter_map(|(i, kind)| Some((i?, kind)))
        .collect();
    let Some(t0) = inputs.iter().map(|(i, _)| i.start_us).min() else {
        return Ok(None);
    };
    let pipes = PipeDir::new().await?;
    let paths = [pipes.video(), pipes.audio()];
    let output = pipes.file(&format!("party.{ext}"));
    let offsets: Vec<String> = inputs
        .iter()
        .map(|(i, _)| format!("{:.6}", (i.start_us - t0) as f64 / 1e6))
        .collect();
    let maps: Vec<String> = (0..inputs.len())
        .map(|n| format!("{n}:{}", inputs[n].1))
        .collect();
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    for (n, (i, _)) in inputs.iter().enumerate() {
        args.extend(["-itsoffset", &offsets[n]].map(std::ffi::OsStr::new));
        args.extend(ffmpeg::pipe_input(&paths[n], i.format));
    }
    for m in &maps {
        args.extend(["-map", m.as_str()].map(std::ffi::OsStr::new));
    }
    let codec_a: &[&str] = if encode_opus {
        &["-c:a", "libopus", "-b:a", "32k", "-ar", "48000"]
    } else {
        &["-c:a", "copy"]
    };
    args.extend(
        ["-c:v", "copy"]
            .iter()
            .chain(codec_a)
            .chain(&[
                "-fflags",
                "+bitexact",
                "-flags:v",
                "+bitexact",
                "-flags:a",
                "+bitexact",
            ])
            .chain(muxer)
            .map(std::ffi::OsStr::new),
    );
    args.push(output.as_os_str());
    let enc = Ffmpeg::spawn(args)?;
    let feeds = inputs
        .into_iter()
        .zip(&paths)
        .map(|((i, _), path)| async move {
            let mut f = ffmpeg::open_pipe(path).await?;
            // A closed pipe means ffmpeg stopped; its own error says why.
            match i.body {
                Body::Bytes(b) => drop(f.write_all(&b).await),
                Body::Ivf(ivf) => {
                    let mut from = tokio::fs::File::from_std(ivf.reader()?);
                    drop(tokio::io::copy(&mut from, &mut f).await);
                }
            }
            let _ = f.flush().await;
            Ok::<(), String>(())
        });
    let fed = futures::future::try_join_all(feeds).await;
    enc.finish().await?;
    fed?;
    // Opened before the pipe folder (and the file in it) is removed.
    let file = std::fs::File::open(&output).map_err(|e| format!("{}: {e}", output.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("{}: {e}", output.display()))?
        .len();
    Ok(Some(PartyFile { ext, size, file }))
}

/// Whether a derived entry is a party's own file (`agent.webm`,
/// `user.mp4`, …), as [`store_party_files`] names them.
pub fn is_party_file(name: &str) -> bool {
    ["agent.", "user."].iter().any(|p| name.starts_with(p))
}

/// Makes each party's file from its MJR streams (`mjr` gives a stream by
/// name: `agent-video.mjr`, …), stores it under the session's `derived/`
/// (create-only: the same RAW gives the same bytes, so one stored by an
/// earlier try is kept) and returns its name and digest. A party whose file
/// cannot be made or stored is logged and left out: the RAW recording is
/// what must not be lost, and a session without the file is still whole.
pub async fn store_party_files(
    store: &dyn crate::store::ObjectStore,
    keys: &crate::layout::SessionKeys,
    mut mjr: impl FnMut(&str) -> Option<std::fs::File>,
) -> Vec<(String, crate::layout::index::Digest)> {
    use crate::store::{PutOptions, StoreError};
    let mut out = Vec::new();
    for party in ["agent", "user"] {
        let (video, audio) = (
            mjr(&format!("{party}-video.mjr")),
            mjr(&format!("{party}-audio.mjr")),
        );
        match party_file(video, audio).await {
            Ok(Some(file)) => {
                let name = format!("{party}.{}", file.ext);
                let mut sums = crate::layout::index::Summer::default();
                let key = keys.derived(&name);
                let put = crate::store::upload_file(
                    store,
                    &key,
                    file.file,
                    file.size,
                    PutOptions::if_absent(),
                    |b| sums.update(b),
                )
                .await;
                match put {
                    Ok(()) | Err(StoreError::AlreadyExists(_)) => out.push((name, sums.finish())),
                    Err(e) => tracing::warn!(
                        %key, error = %e,
                        "party file not stored; the session is archived without it"
                    ),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                party, error = %e,
                "party file not made; the session is archived without it"
            ),
        }
    }
    out
}
