//! One party's WebM: its VP8/VP9 video and Opus audio remuxed without
//! re-encoding (G.711 audio is encoded to Opus), with the two streams
//! aligned by their MJR first-frame times. Made once at archive time, so the
//! listed size is the stored file's; `-fflags +bitexact` keeps the bytes the
//! same for the same RAW (no random segment UID).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::audio::ogg_opus;
use super::ffmpeg::{self, Ffmpeg, PipeDir};
use super::video::ivf_of;
use crate::media::depacketize::audio;
use crate::media::order::read_stream;

/// One input: its container bytes, where it starts (µs, wall clock), its
/// ffmpeg input options and whether its audio needs encoding.
struct Input {
    start_us: i64,
    bytes: Vec<u8>,
    format: &'static [&'static str],
    encode_opus: bool,
}

fn video_input(mjr: &[u8]) -> Result<Option<Input>, String> {
    let s = read_stream(mjr).map_err(|e| e.to_string())?;
    // H.264 cannot go into WebM without re-encoding; such a party's WebM
    // carries its audio only.
    if !matches!(s.header.codec.as_str(), "vp8" | "vp9") {
        return Ok(None);
    }
    Ok(ivf_of(&s)?.map(|(bytes, first)| Input {
        start_us: s.wall_us(first, 0),
        bytes,
        format: &["-f", "ivf"],
        encode_opus: false,
    }))
}

fn audio_input(mjr: &[u8]) -> Result<Option<Input>, String> {
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
                bytes: ogg_opus(&frames, 2),
                format: &["-f", "ogg"],
                encode_opus: false,
            }))
        }
        "pcmu" | "pcma" => {
            let (pcm, _) = audio::g711(&s.packets, s.header.codec == "pcma");
            Ok(Some(Input {
                start_us,
                bytes: pcm.iter().flat_map(|v| v.to_le_bytes()).collect(),
                format: &["-f", "s16le", "-ar", "8000", "-ac", "1"],
                encode_opus: true,
            }))
        }
        "g722" => {
            let (pcm, _) = audio::g722(&s.packets);
            Ok(Some(Input {
                start_us,
                bytes: pcm.iter().flat_map(|v| v.to_le_bytes()).collect(),
                format: &["-f", "s16le", "-ar", "16000", "-ac", "1"],
                encode_opus: true,
            }))
        }
        _ => Ok(None),
    }
}

/// The party's WebM, or `None` when it has neither VP8/VP9 video nor audio.
/// The recordings are parsed on a blocking thread.
pub async fn party(
    video: Option<Vec<u8>>,
    audio: Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, String> {
    let (v, a) = tokio::task::spawn_blocking(move || {
        let v = video.as_deref().map(video_input).transpose()?.flatten();
        let a = audio.as_deref().map(audio_input).transpose()?.flatten();
        Ok::<_, String>((v, a))
    })
    .await
    .map_err(|e| format!("WebM input parser: {e}"))??;
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
                "-f",
                "webm",
                "pipe:1",
            ])
            .map(std::ffi::OsStr::new),
    );
    let mut enc = Ffmpeg::spawn(args)?;
    let mut stdout = enc.stdout.take().ok_or("ffmpeg has no stdout")?;
    let feeds = inputs
        .into_iter()
        .zip(&paths)
        .map(|((i, _), path)| async move {
            let mut f = ffmpeg::open_pipe(path).await?;
            // A closed pipe means ffmpeg stopped; its own error says why.
            let _ = f.write_all(&i.bytes).await;
            let _ = f.flush().await;
            Ok::<(), String>(())
        });
    let mut out = Vec::new();
    let (fed, read) = tokio::join!(
        futures::future::try_join_all(feeds),
        stdout.read_to_end(&mut out)
    );
    enc.finish().await?;
    fed?;
    read.map_err(|e| e.to_string())?;
    Ok(Some(out))
}
