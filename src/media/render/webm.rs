//! One party's WebM: its VP8/VP9 video and Opus audio remuxed without
//! re-encoding (G.711 audio is encoded to Opus), with the two streams
//! aligned by their MJR first-frame times. Made once at archive time, so the
//! listed size is the stored file's; `-fflags +bitexact` keeps the bytes the
//! same for the same RAW (no random segment UID).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::PipeDir;
use crate::media::container::{ivf, ogg::OggOpusWriter};
use crate::media::depacketize::{audio, vp8, vp9, Frame};
use crate::media::order::{read_stream, Stream};

/// A stream's frames, its container bytes and where it starts (µs, wall clock).
struct Input {
    start_us: i64,
    bytes: Vec<u8>,
    /// ffmpeg input format and whether the audio needs encoding.
    format: &'static str,
    encode_opus: bool,
}

fn start_us(s: &Stream, first: Option<&Frame>) -> i64 {
    let u = s.header.first_frame_us.or(s.header.created_us).unwrap_or(0);
    u + first.map_or(0, |f| s.offset_us(f.ts))
}

fn video_input(mjr: &[u8]) -> Result<Option<Input>, String> {
    let s = read_stream(mjr).map_err(|e| e.to_string())?;
    let (frames, fourcc) = match s.header.codec.as_str() {
        "vp8" => (vp8::depacketize(&s.packets).0, b"VP80"),
        "vp9" => (vp9::depacketize(&s.packets).0, b"VP90"),
        // H.264 cannot go into WebM without re-encoding; such a party's
        // WebM carries its audio only.
        _ => return Ok(None),
    };
    let Some(first) = frames.first() else {
        return Ok(None);
    };
    let mut bytes = ivf::header(fourcc, 640, 480, 90_000, 1, frames.len() as u32).to_vec();
    for f in &frames {
        bytes.extend_from_slice(&ivf::frame_header(f.data.len() as u32, f.ts - first.ts));
        bytes.extend_from_slice(&f.data);
    }
    Ok(Some(Input {
        start_us: start_us(&s, Some(first)),
        bytes,
        format: "ivf",
        encode_opus: false,
    }))
}

fn audio_input(mjr: &[u8]) -> Result<Option<Input>, String> {
    let s = read_stream(mjr).map_err(|e| e.to_string())?;
    match s.header.codec.as_str() {
        "opus" => {
            let (frames, _) = audio::opus(&s.packets);
            let Some(first) = frames.first() else {
                return Ok(None);
            };
            let mut w = OggOpusWriter::new(1, 2, 312, 48_000);
            let mut granule = 312u64;
            for f in &frames {
                granule += audio::opus_packet_samples(&f.data).unwrap_or(960) as u64;
                w.push(&f.data, granule);
            }
            Ok(Some(Input {
                start_us: start_us(&s, Some(first)),
                bytes: w.finish(),
                format: "ogg",
                encode_opus: false,
            }))
        }
        "pcmu" | "pcma" => {
            let (pcm, _) = audio::g711(&s.packets, s.header.codec == "pcma");
            if pcm.is_empty() {
                return Ok(None);
            }
            let first = s.packets.first().map(|p| p.ts);
            let u = s.header.first_frame_us.or(s.header.created_us).unwrap_or(0);
            Ok(Some(Input {
                start_us: u + first.map_or(0, |ts| s.offset_us(ts)),
                bytes: pcm.iter().flat_map(|v| v.to_le_bytes()).collect(),
                format: "s16le",
                encode_opus: true,
            }))
        }
        _ => Ok(None),
    }
}

/// The party's WebM, or `None` when it has neither VP8/VP9 video nor audio.
pub async fn party(video: Option<&[u8]>, audio: Option<&[u8]>) -> Result<Option<Vec<u8>>, String> {
    let v = match video {
        Some(m) => video_input(m)?,
        None => None,
    };
    let a = match audio {
        Some(m) => audio_input(m)?,
        None => None,
    };
    if v.is_none() && a.is_none() {
        return Ok(None);
    }
    let t0 = v
        .iter()
        .chain(a.iter())
        .map(|i| i.start_us)
        .min()
        .unwrap_or(0);
    let pipes = PipeDir::new().await?;
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
    let mut maps = Vec::new();
    let mut inputs = Vec::new();
    for (input, path, kind) in [(&v, pipes.video(), "v"), (&a, pipes.audio(), "a")] {
        let Some(i) = input else { continue };
        let offset = format!("{:.6}", (i.start_us - t0) as f64 / 1e6);
        cmd.args([
            "-itsoffset",
            &offset,
            "-protocol_whitelist",
            "file,pipe",
            "-f",
            i.format,
        ]);
        if i.format == "s16le" {
            cmd.args(["-ar", "8000", "-ac", "1"]);
        }
        cmd.arg("-i").arg(&path);
        maps.push(format!("{}:{kind}", inputs.len()));
        inputs.push((path, i.bytes.clone()));
    }
    for m in &maps {
        cmd.args(["-map", m]);
    }
    cmd.args(["-c:v", "copy"]);
    if a.as_ref().is_some_and(|i| i.encode_opus) {
        cmd.args(["-c:a", "libopus", "-b:a", "32k", "-ar", "48000"]);
    } else {
        cmd.args(["-c:a", "copy"]);
    }
    cmd.args([
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
        "-flags:a",
        "+bitexact",
    ])
    .args(["-f", "webm", "pipe:1"])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start ffmpeg: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("ffmpeg has no stdout")?;
    let mut stderr = child.stderr.take().ok_or("ffmpeg has no stderr")?;
    let feeds = inputs.into_iter().map(|(path, bytes)| async move {
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // A closed pipe means ffmpeg stopped; its own error says why.
        let _ = f.write_all(&bytes).await;
        let _ = f.flush().await;
        Ok::<(), String>(())
    });
    let mut out = Vec::new();
    let mut errors = String::new();
    let (fed, read, _) = tokio::join!(
        futures::future::try_join_all(feeds),
        stdout.read_to_end(&mut out),
        stderr.read_to_string(&mut errors)
    );
    let status = child.wait().await.map_err(|e| e.to_string())?;
    fed?;
    read.map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("ffmpeg (WebM) failed: {}", errors.trim()));
    }
    Ok(Some(out))
}
