//! Synthetic call recordings for benchmarks and demos: ffmpeg encodes test
//! sources (VP8 and H.264 video at 320x240/15 fps, PCMU and Opus tones),
//! which are packetized to RTP and written as a gateway session folder
//! (four MJR streams and `info.json`). Needs `ffmpeg` on the PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, TimeZone, Utc};

use super::container::{ivf, ogg};
use super::mjr::{rtp_packet, write_mjr, Kind};
use super::packetize;

/// Runs one ffmpeg command to completion.
pub fn ffmpeg(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ffmpeg: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// MJR frames (received ms, RTP packet) of encoded video frames at 15 fps
/// (VP8 when `vp8_codec`, else H.264 access units).
pub fn video_rtp(units: &[Vec<u8>], vp8_codec: bool, ssrc: u32) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut seq = 0u16;
    for (i, data) in units.iter().enumerate() {
        let ts = (i as u32).wrapping_mul(6000);
        let packets = if vp8_codec {
            packetize::vp8(data, 1100, i as u16)
        } else {
            packetize::h264(data, 1100)
        };
        for (marker, p) in packets {
            out.push((
                (i as u64 * 1000 / 15) as u32,
                rtp_packet(96, marker, seq, ts, ssrc, &p),
            ));
            seq = seq.wrapping_add(1);
        }
    }
    out
}

/// MJR frames of µ-law audio, 20 ms (160 bytes) per packet.
pub fn pcmu_rtp(ulaw: &[u8], ssrc: u32) -> Vec<(u32, Vec<u8>)> {
    ulaw.chunks(160)
        .enumerate()
        .map(|(i, c)| {
            let ts = (i as u32).wrapping_mul(160);
            ((i * 20) as u32, rtp_packet(0, false, i as u16, ts, ssrc, c))
        })
        .collect()
}

/// MJR frames of the 20 ms Opus packets of an Ogg Opus file.
pub fn opus_rtp(ogg_file: &[u8], ssrc: u32) -> Result<Vec<(u32, Vec<u8>)>, String> {
    Ok(ogg::read_opus_packets(ogg_file)?
        .into_iter()
        .enumerate()
        .map(|(i, (_, p))| {
            let ts = (i as u32).wrapping_mul(960);
            (
                (i * 20) as u32,
                rtp_packet(111, false, i as u16, ts, ssrc, &p),
            )
        })
        .collect())
}

/// Encodes `secs` seconds of the lavfi audio source `src` to raw 8 kHz
/// µ-law (PCMU) at `out`.
pub fn pcmu_file(src: &str, secs: &str, out: &str) -> Result<(), String> {
    ffmpeg(&[
        "-f", "lavfi", "-i", src, "-t", secs, "-f", "mulaw", "-ar", "8000", "-ac", "1", out,
    ])
}

/// Encodes `secs` seconds of the lavfi audio source `src` to mono Opus
/// (32 kbps, 20 ms frames) in Ogg at `out`.
pub fn opus_file(src: &str, secs: &str, out: &str) -> Result<(), String> {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src,
        "-t",
        secs,
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-frame_duration",
        "20",
        "-ac",
        "1",
        out,
    ])
}

/// Writes session `id` of `seconds` seconds into `root/id` and returns the folder.
pub fn session(root: &Path, id: &str, seconds: u32) -> Result<PathBuf, String> {
    session_late(root, id, seconds, 0)
}

/// [`session`] with the user's streams (camera and microphone) starting
/// `user_late_ms` after the agent's, as when a user joins late.
pub fn session_late(
    root: &Path,
    id: &str,
    seconds: u32,
    user_late_ms: u32,
) -> Result<PathBuf, String> {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let work = dir.join(".work");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let f = |n: &str| work.join(n).to_string_lossy().into_owned();
    let t = seconds.to_string();
    let src = "testsrc2=size=320x240:rate=15";
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src,
        "-t",
        &t,
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-g",
        "30",
        "-b:v",
        "300k",
        "-f",
        "ivf",
        &f("a.ivf"),
    ])?;
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src,
        "-t",
        &t,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-profile:v",
        "baseline",
        "-bf",
        "0",
        "-g",
        "30",
        "-b:v",
        "300k",
        "-f",
        "h264",
        &f("u.h264"),
    ])?;
    pcmu_file("sine=frequency=440:sample_rate=8000", &t, &f("a.ul"))?;
    opus_file("sine=frequency=660:sample_rate=48000", &t, &f("u.ogg"))?;
    let read = |n: &str| std::fs::read(work.join(n)).map_err(|e| format!("{n}: {e}"));
    let (_, agent_v) = ivf::read(&read("a.ivf")?)?;
    let agent_v: Vec<Vec<u8>> = agent_v.into_iter().map(|(_, d)| d).collect();
    let user_v = packetize::h264_access_units(&read("u.h264")?);
    let agent_a = pcmu_rtp(&read("a.ul")?, 5);
    let user_a = opus_rtp(&read("u.ogg")?, 6)?;
    let _ = std::fs::remove_dir_all(&work);
    let start = Utc
        .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .ok_or("bad date")?;
    let t0 = start.timestamp_micros();
    let tu = t0 + i64::from(user_late_ms) * 1000;
    let files = [
        (
            "agent-video.mjr",
            write_mjr(Kind::Video, "vp8", t0, t0, &video_rtp(&agent_v, true, 7)),
        ),
        (
            "user-video.mjr",
            write_mjr(Kind::Video, "h264", tu, tu, &video_rtp(&user_v, false, 8)),
        ),
        (
            "agent-audio.mjr",
            write_mjr(Kind::Audio, "pcmu", t0, t0, &agent_a),
        ),
        (
            "user-audio.mjr",
            write_mjr(Kind::Audio, "opus", tu, tu, &user_a),
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).map_err(|e| format!("{name}: {e}"))?;
    }
    let end = start + Duration::seconds(seconds as i64);
    let info = serde_json::json!({
        "session_id": id,
        "started_at": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "ended_at": end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "agent": {"id": "agent-1"},
        "user": {"id": "user-1"},
    });
    std::fs::write(dir.join("info.json"), info.to_string()).map_err(|e| e.to_string())?;
    Ok(dir)
}
