//! Media fidelity against the reference converter: synthetic sources are
//! encoded with ffmpeg, packetized to RTP, written as MJR recordings with
//! impairments (a late start, a loss burst, reordering, sequence and
//! timestamp wrap-around, padding-only packets, an SSRC change), then
//! depacketized by recvault and by `janus-pp-rec`. ffprobe counts what each
//! yields; recvault must recover at least as many decodable frames and hand
//! the decoder no frame it cannot decode.

use std::path::Path;
use std::process::Command;

use recvault::media::container::{ivf, ogg};
use recvault::media::depacketize::{audio, h264, vp8, vp9, Frame};
use recvault::media::fixture;
use recvault::media::mjr::{rtp_packet, write_mjr, Kind};
use recvault::media::order::read_stream;
use recvault::media::packetize;

const T0: i64 = 1_763_888_400_000_000;

/// One media unit (frame) at an RTP timestamp, as (marker, payload) packets.
type Unit = (u32, Vec<(bool, Vec<u8>)>);

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("run tool")
}

fn ffmpeg(args: &[&str]) {
    if let Err(e) = fixture::ffmpeg(args) {
        panic!("{args:?}: {e}");
    }
}

/// Frames ffmpeg can decode from `file`, and the errors its decoder printed.
fn decode(file: &Path) -> (u64, String) {
    let probe = run(Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(file));
    let frames = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or(0);
    let dec = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"]));
    (frames, String::from_utf8_lossy(&dec.stderr).into_owned())
}

/// What `ffprobe -v error ARGS FILE` prints.
fn probe(file: &Path, args: &[&str]) -> String {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(file));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file's duration in seconds as ffprobe reports it (0 when it cannot).
pub(crate) fn decoded_seconds(file: &Path) -> f64 {
    probe(
        file,
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
    )
    .trim()
    .parse()
    .unwrap_or(0.0)
}

/// RTP packets with impairments, as (received ms, packet) frames:
/// - sequence numbers start near 65535 and timestamps near 2^32 (both wrap),
/// - a burst of `loss` packets is dropped after packet `loss_at`, and
///   each burst of `more_losses` (after, count) too,
/// - every 37th pair is swapped (reordering),
/// - a padding-only packet every 50 packets,
/// - from unit `ssrc_change_at` on, a new SSRC with its own numbering.
#[derive(Default)]
struct Impair {
    loss_at: usize,
    loss: usize,
    more_losses: Vec<(usize, usize)>,
    ssrc_change_at: usize,
}

fn rtp_stream(pt: u8, units: &[Unit], ms_per_tick: f64, imp: &Impair) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let (mut seq, mut ts0, mut ssrc) = (65_400u16, u32::MAX - 200_000, 0x1111u32);
    let mut n = 0usize;
    for (i, (ts, payloads)) in units.iter().enumerate() {
        if i == imp.ssrc_change_at {
            seq = 12_345;
            ts0 = 7_000u32.wrapping_sub(*ts);
            ssrc = 0x2222;
        }
        let recv = (*ts as f64 * ms_per_tick) as u32;
        for (marker, payload) in payloads {
            n += 1;
            let lost = std::iter::once(&(imp.loss_at, imp.loss))
                .chain(&imp.more_losses)
                .any(|&(at, count)| n > at && n <= at + count);
            if !lost {
                out.push((
                    recv,
                    rtp_packet(pt, *marker, seq, ts0.wrapping_add(*ts), ssrc, payload),
                ));
            }
            seq = seq.wrapping_add(1);
            if n.is_multiple_of(50) {
                out.push((
                    recv,
                    rtp_packet(pt, false, seq, ts0.wrapping_add(*ts), ssrc, &[]),
                ));
                seq = seq.wrapping_add(1);
            }
        }
    }
    for i in (0..out.len().saturating_sub(1)).step_by(37) {
        out.swap(i, i + 1);
    }
    out
}

fn janus(mjr: &Path, out: &Path) {
    let o = run(Command::new("janus-pp-rec").arg(mjr).arg(out));
    assert!(
        out.exists(),
        "janus-pp-rec made no {}: {}{}",
        out.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn write_ivf(path: &Path, fourcc: &[u8; 4], frames: &[Frame]) {
    std::fs::write(path, ivf::write(fourcc, 320, 240, frames)).unwrap();
}

/// Encodes 20 s of test video at 15 fps with keyframes 10 s apart (as a
/// gateway records: WebRTC senders send keyframes seldom), SPS/PPS with
/// every H.264 IDR, as WebRTC encoders send them; VP8/VP9 `resilient` or
/// not (libvpx's default saves probabilities from frame to frame; WebRTC
/// turns error resilience on with temporal layers and SVC).
fn video_units(dir: &Path, codec: &str, resilient: bool) -> Vec<(u32, Vec<u8>)> {
    let src = [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=15",
        "-t",
        "20",
        "-g",
        "150",
        "-keyint_min",
        "150",
        "-sc_threshold",
        "0",
    ];
    match codec {
        "h264" => {
            let f = dir.join("src.h264");
            let mut args = src.to_vec();
            args.extend([
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-bf",
                "0",
                "-x264-params",
                "threads=1:repeat-headers=1",
                "-f",
                "h264",
            ]);
            args.push(f.to_str().unwrap());
            ffmpeg(&args);
            packetize::h264_access_units(&std::fs::read(&f).unwrap())
                .into_iter()
                .enumerate()
                .map(|(i, au)| (i as u32 * 6000, au))
                .collect()
        }
        _ => {
            let f = dir.join("src.ivf");
            let enc = if codec == "vp8" {
                "libvpx"
            } else {
                "libvpx-vp9"
            };
            let mut args = src.to_vec();
            args.extend([
                "-c:v",
                enc,
                "-b:v",
                "300k",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-lag-in-frames",
                "0",
                "-error-resilient",
                if resilient { "1" } else { "0" },
                "-threads",
                "1",
                "-f",
                "ivf",
            ]);
            args.push(f.to_str().unwrap());
            ffmpeg(&args);
            let (_, frames) = ivf::read(&std::fs::read(&f).unwrap()).unwrap();
            frames
                .into_iter()
                .enumerate()
                .map(|(i, (_, data))| (i as u32 * 6000, data))
                .collect()
        }
    }
}

/// The hashes of a file's video packets, as they are stored (no decoding),
/// in the same framing for every container: H.264 (Annex B in IVF or raw)
/// goes through a Matroska remux first, as `janus-pp-rec` writes it.
fn packet_hashes(file: &Path, dir: &Path, h264: bool) -> Vec<String> {
    let input = if h264 && file.extension().is_some_and(|e| e != "mkv") {
        let mkv = dir.join("remuxed.mkv");
        ffmpeg(&[
            "-y",
            "-i",
            file.to_str().unwrap(),
            "-c",
            "copy",
            mkv.to_str().unwrap(),
        ]);
        mkv
    } else {
        file.to_path_buf()
    };
    let out = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(&input)
        .args(["-map", "0:v:0", "-c", "copy", "-f", "framemd5", "-"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(',').map(str::trim).collect();
            // stream, dts, pts, duration, size, hash
            (cols.len() == 6).then(|| format!("{}:{}", cols[4], cols[5]))
        })
        .collect()
}

/// The hashes of a file's decoded pictures.
fn picture_hashes(file: &Path) -> Vec<String> {
    let out = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(file)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_string()))
        .collect()
}

#[test]
fn video_depacketizing_recovers_at_least_as_many_decodable_frames_as_janus_pp_rec() {
    use std::collections::HashSet;
    for (codec, resilient) in [
        ("vp8", true),
        ("vp8", false),
        ("vp9", true),
        ("vp9", false),
        ("h264", false),
    ] {
        let name = format!(
            "{codec}{}",
            if resilient { " (error-resilient)" } else { "" }
        );
        let dir = tempfile::tempdir().unwrap();
        let units = video_units(dir.path(), codec, resilient);
        assert_eq!(units.len(), 300, "{name}: encoded frames");
        let packets: Vec<Unit> = units
            .iter()
            .enumerate()
            .map(|(i, (ts, data))| {
                let p = match codec {
                    "vp8" => packetize::vp8(data, 1100, i as u16),
                    "vp9" => packetize::vp9(data, 1100, i as u16),
                    _ => packetize::h264(data, 1100),
                };
                (*ts, p)
            })
            .collect();
        let packets_before =
            |frame: usize| -> usize { packets.iter().take(frame).map(|(_, p)| p.len()).sum() };
        // Two loss bursts, each 2-7 s after a keyframe (frames 0 and 150),
        // and an SSRC change in between.
        let imp = Impair {
            loss_at: packets_before(40) + 1,
            loss: 3,
            more_losses: vec![(packets_before(200), 2)],
            ssrc_change_at: 100,
        };
        let frames = rtp_stream(96, &packets, 1.0 / 90.0, &imp);
        let mjr = dir.path().join(format!("{codec}.mjr"));
        // The video starts 2 s after the session.
        std::fs::write(
            &mjr,
            write_mjr(Kind::Video, codec, T0, T0 + 2_000_000, &frames),
        )
        .unwrap();

        let stream = read_stream(std::fs::File::open(&mjr).unwrap()).unwrap();
        let (ours, stats) = match codec {
            "vp8" => vp8::depacketize(&stream.packets),
            "vp9" => vp9::depacketize(&stream.packets),
            _ => h264::depacketize(&stream.packets),
        };
        let keyframes = ours.iter().filter(|f| f.keyframe).count();
        assert_eq!(keyframes, 2, "{name}: the fixture has keyframes 10 s apart");
        let fourcc = match codec {
            "vp8" => b"VP80",
            "vp9" => b"VP90",
            _ => b"H264",
        };
        let ours_file = dir.path().join("ours.ivf");
        write_ivf(&ours_file, fourcc, &ours);
        let (ours_frames, ours_errors) = decode(&ours_file);

        let reference = dir.path().join(if codec == "h264" {
            "janus.mkv"
        } else {
            "janus.webm"
        });
        janus(&mjr, &reference);
        let (janus_frames, janus_errors) = decode(&reference);

        // Pictures equal to what the sender's whole stream decodes to.
        let h264 = codec == "h264";
        let source = dir.path().join(if h264 { "src.h264" } else { "src.ivf" });
        let true_pictures: HashSet<String> = picture_hashes(&source).into_iter().collect();
        let ours_pictures = picture_hashes(&ours_file);
        let janus_pictures = picture_hashes(&reference);
        let exact = |p: &[String]| p.iter().filter(|h| true_pictures.contains(*h)).count();
        let (ours_exact, janus_exact) = (exact(&ours_pictures), exact(&janus_pictures));
        eprintln!(
            "{name}: encoded 300; recvault {ours_frames} decodable, {ours_exact} exact pictures ({stats:?}); \
             janus-pp-rec {janus_frames} decodable, {janus_exact} exact, {} decoder errors",
            janus_errors.lines().count()
        );
        assert!(
            ours_errors.is_empty(),
            "{name}: decoder errors on recvault's output:\n{ours_errors}"
        );
        assert_eq!(
            ours_frames,
            ours.len() as u64,
            "{name}: every frame handed out decodes"
        );
        assert!(
            ours_exact >= janus_exact,
            "{name}: recvault {ours_exact} exact pictures < janus-pp-rec {janus_exact}"
        );

        // Every frame recvault keeps is byte for byte a frame the encoder
        // made, so no count can be met with broken frames.
        let sent = packet_hashes(&source, dir.path(), h264);
        assert_eq!(sent.len(), 300, "{name}: framemd5 of the source");
        let kept = packet_hashes(&ours_file, dir.path(), h264);
        assert_eq!(kept.len(), ours.len(), "{name}: framemd5 of ours");
        let sent_set: HashSet<&String> = sent.iter().collect();
        let kept_set: HashSet<&String> = kept.iter().collect();
        let broken = kept.iter().filter(|h| !sent_set.contains(h)).count();
        assert_eq!(broken, 0, "{name}: frames kept that the encoder never made");
        let theirs = packet_hashes(&reference, dir.path(), h264);
        let theirs_intact: Vec<&String> = theirs.iter().filter(|h| sent_set.contains(h)).collect();
        let missed = theirs_intact
            .iter()
            .filter(|h| !kept_set.contains(*h))
            .count();

        if resilient || h264 {
            // Nothing carries over from frame to frame but pictures: after
            // a loss every complete frame is kept (with some smearing until
            // the next keyframe), at least every intact frame janus-pp-rec
            // wrote, and only frames with a hole are lost.
            assert!(
                ours_frames >= janus_frames,
                "{name}: recvault {ours_frames} < janus-pp-rec {janus_frames}"
            );
            assert_eq!(
                missed, 0,
                "{name}: intact frames janus-pp-rec kept and recvault did not"
            );
            assert!(ours_frames >= 295, "{name}: only {ours_frames} of 300");
            assert!(stats.after_loss > 150, "{name}: {stats:?}");
        } else {
            // Probabilities carry over: a frame after a loss would decode
            // as garbage, so the picture holds until the next keyframe, and
            // every picture shown is the sender's.
            assert!(stats.stale_contexts > 150, "{name}: {stats:?}");
            assert_eq!(
                ours_exact,
                ours_pictures.len(),
                "{name}: pictures shown that the sender never showed"
            );
        }
        // The stream is placed at the header's first-frame time.
        assert_eq!(stream.header.first_frame_us, Some(T0 + 2_000_000));
    }
}

#[test]
fn opus_losses_become_silence_of_the_right_length() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.ogg");
    fixture::opus_file(
        "sine=frequency=440:sample_rate=48000",
        "6",
        src.to_str().unwrap(),
    )
    .unwrap();
    let packets = ogg::read_opus_packets(&std::fs::read(&src).unwrap()).unwrap();
    // 6 s of 20 ms packets, plus the encoder's look-ahead packet.
    let n = packets.len();
    assert!((300..=302).contains(&n), "{n} packets");
    let units: Vec<Unit> = packets
        .iter()
        .enumerate()
        .map(|(i, (_, p))| (i as u32 * 960, vec![(i == 0, p.clone())]))
        .collect();
    let imp = Impair {
        loss_at: 100,
        loss: 10,
        ssrc_change_at: 200,
        ..Impair::default()
    };
    let frames = rtp_stream(111, &units, 1.0 / 48.0, &imp);
    let mjr = dir.path().join("a.mjr");
    std::fs::write(&mjr, write_mjr(Kind::Audio, "opus", T0, T0, &frames)).unwrap();
    let stream = read_stream(std::fs::File::open(&mjr).unwrap()).unwrap();
    let (ours, stats) = audio::opus(&stream.packets);
    assert_eq!(stats.concealed, 10, "{stats:?}");
    assert_eq!(ours.len(), n, "losses are concealed frame for frame");
    let mut w = ogg::OggOpusWriter::new(1, 1, 312, 48_000);
    let mut granule = 312u64;
    for f in &ours {
        granule += audio::opus_packet_samples(&f.data).unwrap() as u64;
        w.push(&f.data, granule);
    }
    let ours_file = dir.path().join("ours.ogg");
    std::fs::write(&ours_file, w.finish()).unwrap();
    let (_, errors) = decode(&ours_file);
    assert!(errors.is_empty(), "{errors}");
    let secs = decoded_seconds(&ours_file);
    assert!((secs - 6.0).abs() < 0.03, "recvault: {secs} s");
    let reference = dir.path().join("janus.opus");
    janus(&mjr, &reference);
    eprintln!(
        "opus: recvault {secs:.3} s ({stats:?}), janus-pp-rec {:.3} s",
        decoded_seconds(&reference)
    );
}

/// A recording `dir/a.mjr` of a codec with one byte per 8 kHz RTP tick
/// (G.711, G.722): 20 ms packets of 160 bytes, packets 50..55 lost, with the
/// other impairments of [`rtp_stream`]; and that recording read back.
fn byte_codec_recording(
    dir: &Path,
    bytes: &[u8],
    pt: u8,
    codec: &str,
) -> (std::path::PathBuf, recvault::media::order::Stream) {
    let units: Vec<Unit> = bytes
        .chunks(160)
        .enumerate()
        .map(|(i, c)| (i as u32 * 160, vec![(false, c.to_vec())]))
        .collect();
    let imp = Impair {
        loss_at: 50,
        loss: 5,
        ssrc_change_at: usize::MAX,
        ..Impair::default()
    };
    let frames = rtp_stream(pt, &units, 1.0 / 8.0, &imp);
    let mjr = dir.join("a.mjr");
    std::fs::write(&mjr, write_mjr(Kind::Audio, codec, T0, T0, &frames)).unwrap();
    let stream = read_stream(std::fs::File::open(&mjr).unwrap()).unwrap();
    (mjr, stream)
}

#[test]
fn g711_losses_become_silence_at_the_right_place() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.ul");
    fixture::pcmu_file(
        "sine=frequency=440:sample_rate=8000",
        "4",
        src.to_str().unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(&src).unwrap();
    assert_eq!(bytes.len(), 32_000);
    let (mjr, stream) = byte_codec_recording(dir.path(), &bytes, 0, "pcmu");
    let (samples, stats) = audio::g711(&stream.packets, false);
    assert_eq!(samples.len(), 32_000, "{stats:?}");
    // Packets 50..55 (samples 8000..8800) were lost: silence there only.
    assert!(samples[8000..8800].iter().all(|&s| s == 0));
    assert!(samples[7000..8000].iter().any(|&s| s.abs() > 1000));
    assert!(samples[8800..9800].iter().any(|&s| s.abs() > 1000));
    let reference = dir.path().join("janus.wav");
    janus(&mjr, &reference);
    eprintln!(
        "pcmu: recvault {} samples ({stats:?}), janus-pp-rec {:.3} s",
        samples.len(),
        decoded_seconds(&reference)
    );
}

#[test]
fn g722_decodes_like_ffmpeg_and_losses_become_silence_at_the_right_place() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.g722");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=16000",
        "-t",
        "4",
        "-c:a",
        "g722",
        "-f",
        "g722",
        src.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&src).unwrap();
    assert_eq!(bytes.len(), 32_000);
    // ffmpeg's own decoding of the whole stream, for comparison.
    let pcm = dir.path().join("ffmpeg.s16");
    ffmpeg(&[
        "-f",
        "g722",
        "-i",
        src.to_str().unwrap(),
        "-f",
        "s16le",
        "-ar",
        "16000",
        pcm.to_str().unwrap(),
    ]);
    let reference: Vec<i16> = std::fs::read(&pcm)
        .unwrap()
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let (mjr, stream) = byte_codec_recording(dir.path(), &bytes, 9, "g722");
    let (samples, stats) = audio::g722(&stream.packets);
    assert_eq!(samples.len(), 64_000, "{stats:?}");
    // Up to the loss, every sample is ffmpeg's.
    assert_eq!(samples[..16_000], reference[..16_000]);
    // Packets 50..55 (samples 16000..17600 at 16 kHz) were lost: silence there only.
    assert!(samples[16_000..17_600].iter().all(|&s| s == 0));
    assert!(samples[17_600..19_600].iter().any(|&s| s.abs() > 1000));
    assert!(samples[60_000..].iter().any(|&s| s.abs() > 1000));
    let janus_out = dir.path().join("janus.wav");
    janus(&mjr, &janus_out);
    // janus-pp-rec's WAV header states half the true byte rate (ffprobe
    // says 8 s), so compare its samples, after the 44-byte header.
    let wav = std::fs::read(&janus_out).unwrap();
    let janus: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    eprintln!(
        "g722: recvault {} samples ({stats:?}), janus-pp-rec {} samples",
        samples.len(),
        janus.len()
    );
    assert_eq!(janus, samples, "recvault and janus-pp-rec decode alike");
}

// ------------------------------------------------------------ derived MP3 --

pub(crate) const TOKEN: &str = "token-for-media-0123456789abcdef";

/// A 6-second session: the agent speaks PCMU from 1 s, the user Opus from
/// 2 s (both 3 s of tone); video streams are token frames.
pub(crate) fn media_session(root: &Path, id: &str) -> std::path::PathBuf {
    media_session_until(root, id, "2026-11-23T10:00:06Z")
}

/// [`media_session`] with another end time.
fn media_session_until(root: &Path, id: &str, ended_at: &str) -> std::path::PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = 1_795_428_000_000_000i64; // 2026-11-23T10:00:00Z
                                       // Agent: PCMU 440 Hz, 3 s.
    let ul = dir.join("src.ul");
    fixture::pcmu_file(
        "sine=frequency=440:sample_rate=8000",
        "3",
        ul.to_str().unwrap(),
    )
    .unwrap();
    let agent = fixture::pcmu_rtp(&std::fs::read(&ul).unwrap(), 5);
    std::fs::remove_file(&ul).unwrap();
    // User: Opus 880 Hz, 3 s.
    let og = dir.join("src.ogg");
    fixture::opus_file(
        "sine=frequency=880:sample_rate=48000",
        "3",
        og.to_str().unwrap(),
    )
    .unwrap();
    let user = fixture::opus_rtp(&std::fs::read(&og).unwrap(), 6).unwrap();
    std::fs::remove_file(&og).unwrap();
    let video: Vec<(u32, Vec<u8>)> = (0..10)
        .map(|i| {
            (
                i * 100,
                rtp_packet(96, true, i as u16, i * 9000, 7, &[0x10, 1, 2, 3]),
            )
        })
        .collect();
    let files = [
        (
            "agent-audio.mjr",
            write_mjr(Kind::Audio, "pcmu", t0, t0 + 1_000_000, &agent),
        ),
        (
            "user-audio.mjr",
            write_mjr(Kind::Audio, "opus", t0, t0 + 2_000_000, &user),
        ),
        (
            "agent-video.mjr",
            write_mjr(Kind::Video, "vp8", t0, t0, &video),
        ),
        (
            "user-video.mjr",
            write_mjr(Kind::Video, "vp8", t0, t0, &video),
        ),
    ];
    write_session(&dir, id, ended_at, files);
    dir
}

/// Writes a session folder's MJR files and an `info.json` starting at 10:00:00.
fn write_session(dir: &Path, id: &str, ended_at: &str, files: [(&str, Vec<u8>); 4]) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(
        dir.join("info.json"),
        format!(r#"{{"session_id":"{id}","started_at":"2026-11-23T10:00:00Z","ended_at":"{ended_at}","agent":{{"id":"a1"}},"user":{{"id":"u1"}}}}"#),
    )
    .unwrap();
}

pub(crate) const PW: &str = "media-Passw0rd-1";

/// Tenant acme with ingest token TOKEN and user qa (key "qa", password PW).
pub(crate) fn media_config(prefix: &str) -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| recvault::password::hash(PW).unwrap());
    format!(
        "[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}acme/\"\ningest_tokens = [\"sha256:{}\"]\n\n[[tenants.users]]\nname = \"qa\"\npassword = \"{hash}\"\nauthorized_keys = [\"{}\"]\n",
        recvault::ingest::token_hash(TOKEN),
        crate::harness::client_key("qa").public
    )
}

pub(crate) fn push_session(server: &crate::harness::Server, dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_recvault"))
        .arg("push")
        .arg(dir)
        .args([
            "--url",
            &server.ingest_url(),
            "--token",
            TOKEN,
            "--wait",
            "120",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::harness::text(&out),
        server.log()
    );
}

/// `n` simultaneous `sftp get`s of `remote` (user qa), spread over the
/// servers on `ports` in turn; each must succeed. Their files' bytes.
fn parallel_gets(ports: &[u16], n: usize, remote: &str, cwd: &Path) -> Vec<Vec<u8>> {
    use crate::harness::*;
    let readers: Vec<_> = (0..n)
        .map(|i| {
            let port = ports[i % ports.len()];
            let (cwd, remote) = (cwd.to_path_buf(), remote.to_string());
            std::thread::spawn(move || {
                let ext = Path::new(&remote).extension().unwrap_or_default();
                let local = format!("r{i}.{}", ext.to_string_lossy());
                let batch = format!("get {remote} {local}\n");
                let out = sftp_batch(port, "qa", client_key("qa"), &batch, &cwd);
                assert!(out.status.success(), "{}", text(&out));
                std::fs::read(cwd.join(local)).unwrap()
            })
        })
        .collect();
    readers.into_iter().map(|t| t.join().unwrap()).collect()
}

fn listed_size(server: &crate::harness::Server, dir: &Path, path: &str, name: &str) -> u64 {
    use crate::harness::*;
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("ls -l {path}\n"),
        dir,
    );
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    listing
        .lines()
        .find(|l| l.ends_with(&format!(" {name}")))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn mp3_size_is_reserved_at_ingest_and_eight_first_reads_share_one_render() {
    use crate::harness::*;
    let prefix = unique_prefix("media-mp3");
    let server = Server::start(&media_config(&prefix));
    let work = tempfile::tempdir().unwrap();
    let dir = media_session(work.path(), "call-mp3");
    push_session(&server, &dir);

    // 6 s at 48 kHz = 288,000 samples: 251 frames of 384 bytes and the 128-byte tag.
    let want = 128 + 384 * (288_000u64.div_ceil(1152) + 1);
    let session = "/2026/11/23/call-mp3";
    assert_eq!(
        listed_size(&server, work.path(), session, "call-mp3.mp3"),
        want
    );

    // Eight simultaneous first reads: one render, identical bytes.
    let bodies = parallel_gets(
        &[server.port],
        8,
        &format!("{session}/call-mp3.mp3"),
        work.path(),
    );
    for b in &bodies {
        assert_eq!(b.len() as u64, want);
        assert_eq!(b, &bodies[0]);
    }
    assert_eq!(
        server.log().matches("render started").count(),
        1,
        "{}",
        server.log()
    );
    assert_eq!(
        listed_size(&server, work.path(), session, "call-mp3.mp3"),
        want
    );
    // FTPS shows the same entry with the same size and serves the same bytes.
    let (cert, _) = ftps_cert();
    let url = format!("ftp://127.0.0.1:{}{session}/", server.ftps_port);
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--ssl-reqd", "--cacert"])
            .arg(cert)
            .args(["--user", &format!("qa:{PW}")])
            .args(args)
            .output()
            .unwrap()
    };
    let listing = curl(&[&url]);
    assert!(listing.status.success(), "{}", text(&listing));
    let line = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find(|l| l.ends_with(" call-mp3.mp3"))
        .map(str::to_string)
        .expect("mp3 listed over FTPS");
    assert_eq!(
        line.split_whitespace().nth(4),
        Some(want.to_string().as_str()),
        "{line}"
    );
    let got = curl(&[&format!("{url}call-mp3.mp3")]);
    assert_eq!(got.stdout, bodies[0], "FTPS bytes differ from SFTP's");

    let secs = decoded_seconds(&work.path().join("r0.mp3"));
    assert!((secs - 6.0).abs() < 0.06, "MP3 lasts {secs} s");
    let (_, errors) = decode(&work.path().join("r0.mp3"));
    assert!(errors.is_empty(), "{errors}");

    // The finished file is stored in derived/ (shortly after the last byte).
    let store = s3().store().await;
    let derived_key = format!("{prefix}acme/sessions/2026/11/23/call-mp3/derived/call-mp3.mp3");
    let mut cached = None;
    for _ in 0..100 {
        cached = store.head(&derived_key).await.unwrap();
        if cached.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(cached.expect("cached in derived/").size, want);

    // Later reads come from derived/ in storage; a resumed download is identical.
    std::fs::write(work.path().join("part.mp3"), &bodies[0][..40_000]).unwrap();
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("reget {session}/call-mp3.mp3 part.mp3\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(work.path().join("part.mp3")).unwrap(),
        bodies[0]
    );
    assert_eq!(server.log().matches("render started").count(), 1);
}

// ------------------------------------------------------------ derived MP4 --

/// A 6-second session with events at known times: the agent's camera
/// flashes white and their microphone beeps at session time 2.0 s (both
/// streams start 1 s into the session, the event 1 s into them); the user
/// joins at 3 s with H.264 video and Opus audio (a tone from 3 s).
fn mp4_session(root: &Path, id: &str) -> std::path::PathBuf {
    mp4_session_until(root, id, "2026-11-23T10:00:06Z")
}

/// [`mp4_session`] with the call ending at `ended_at`.
pub(crate) fn mp4_session_until(root: &Path, id: &str, ended_at: &str) -> std::path::PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = 1_795_428_000_000_000i64; // 2026-11-23T10:00:00Z
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    ffmpeg(&[
        "-f", "lavfi", "-i",
        "color=c=black:s=320x240:r=15:d=4,drawbox=x=0:y=0:w=320:h=240:color=white:t=fill:enable='between(t,1,1.19)'",
        "-c:v", "libvpx", "-g", "15", "-b:v", "200k", "-threads", "1", "-f", "ivf", &f("a.ivf"),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=15",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-bf",
        "0",
        "-g",
        "15",
        "-x264-params",
        "threads=1",
        "-f",
        "h264",
        &f("u.h264"),
    ]);
    fixture::pcmu_file("sine=frequency=1000:sample_rate=8000:samples_per_frame=80,volume=volume=0:enable='not(between(t,1,1.2))'", "4", &f("a.ul")).unwrap();
    fixture::opus_file("sine=frequency=300:sample_rate=48000", "3", &f("u.ogg")).unwrap();
    let (_, agent_v) = ivf::read(&std::fs::read(f("a.ivf")).unwrap()).unwrap();
    let agent_v: Vec<Vec<u8>> = agent_v.into_iter().map(|(_, d)| d).collect();
    let user_v = packetize::h264_access_units(&std::fs::read(f("u.h264")).unwrap());
    let agent_a = fixture::pcmu_rtp(&std::fs::read(f("a.ul")).unwrap(), 5);
    let user_a = fixture::opus_rtp(&std::fs::read(f("u.ogg")).unwrap(), 6).unwrap();
    for n in ["a.ivf", "u.h264", "a.ul", "u.ogg"] {
        std::fs::remove_file(dir.join(n)).unwrap();
    }
    let files = [
        (
            "agent-video.mjr",
            write_mjr(
                Kind::Video,
                "vp8",
                t0,
                t0 + 1_000_000,
                &fixture::video_rtp(&agent_v, true, 7),
            ),
        ),
        (
            "user-video.mjr",
            write_mjr(
                Kind::Video,
                "h264",
                t0,
                t0 + 3_000_000,
                &fixture::video_rtp(&user_v, false, 8),
            ),
        ),
        (
            "agent-audio.mjr",
            write_mjr(Kind::Audio, "pcmu", t0, t0 + 1_000_000, &agent_a),
        ),
        (
            "user-audio.mjr",
            write_mjr(Kind::Audio, "opus", t0, t0 + 3_000_000, &user_a),
        ),
    ];
    write_session(&dir, id, ended_at, files);
    dir
}

/// Bytes before the trailing `free` box of an MP4.
fn content_bytes(file: &Path) -> u64 {
    let b = std::fs::read(file).unwrap();
    let mut at = 0usize;
    while at + 8 <= b.len() {
        let size = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if &b[at + 4..at + 8] == b"free" && at + size == b.len() {
            return at as u64;
        }
        at += size.max(8);
    }
    b.len() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn mp4_shows_both_parties_side_by_side_with_events_at_their_true_times() {
    use crate::harness::*;
    let prefix = unique_prefix("media-mp4");
    let server = Server::start(&media_config(&prefix));
    let work = tempfile::tempdir().unwrap();
    let dir = mp4_session(work.path(), "call-mp4");
    push_session(&server, &dir);
    let session = "/2026/11/23/call-mp4";
    let listed = listed_size(&server, work.path(), session, "call-mp4.mp4");
    assert_eq!(listed, recvault::media::render::mp4_size(6000, 800_000, 1));
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("get {session}/call-mp4.mp4 c.mp4\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());
    let mp4 = work.path().join("c.mp4");
    assert_eq!(
        std::fs::metadata(&mp4).unwrap().len(),
        listed,
        "bytes read = listed size"
    );
    assert_eq!(
        listed_size(&server, work.path(), session, "call-mp4.mp4"),
        listed
    );

    let streams = probe(
        &mp4,
        &[
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ],
    );
    assert!(streams.contains("h264,1280,480"), "{streams}");
    assert!(streams.contains("aac"), "{streams}");
    let secs = decoded_seconds(&mp4);
    let per_stream = probe(
        &mp4,
        &[
            "-show_entries",
            "stream=codec_name,start_time,duration,nb_frames",
            "-of",
            "csv=p=0",
        ],
    );
    assert!(
        (secs - 6.0).abs() <= 1.0 / 15.0 + 0.03,
        "duration {secs}: {per_stream}"
    );
    let (frames, errors) = decode(&mp4);
    assert!(errors.is_empty(), "{errors}");
    assert!((89..=91).contains(&frames), "{frames} video frames");

    // The agent's flash: the first frame whose left half is bright.
    let luma = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(&mp4)
        .args([
            "-vf",
            "crop=640:480:0:0,signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-",
        ])
        .args(["-an", "-f", "null", "-"]));
    let text_out = String::from_utf8_lossy(&luma.stdout);
    let yavg: Vec<f64> = text_out
        .lines()
        .filter_map(|l| l.strip_prefix("lavfi.signalstats.YAVG="))
        .map(|v| v.parse().unwrap())
        .collect();
    let flash = yavg
        .iter()
        .position(|&y| y > 128.0)
        .expect("a bright frame");
    // Session time 2.0 s = frame 30 at 15 fps.
    assert!(
        (29..=31).contains(&flash),
        "flash at frame {flash}: {yavg:?}"
    );

    // Every video frame on the 15 fps grid (±1 ms), the first at 0.
    let pts = probe(
        &mp4,
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ],
    );
    let pts: Vec<f64> = pts.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pts.len(), 90, "6 s at 15 fps");
    for (k, t) in pts.iter().enumerate() {
        assert!((t - k as f64 / 15.0).abs() <= 0.001, "frame {k} at {t} s");
    }

    // The agent's beep: the first loud sample of the decoded mix.
    let pcm = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(&mp4)
        .args(["-vn", "-f", "s16le", "-ac", "1", "-ar", "48000", "-"]));
    let samples: Vec<i16> = pcm
        .stdout
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let onset = samples.iter().position(|s| s.abs() > 1000).expect("a beep");
    let at = onset as f64 / 48_000.0;
    let padding = listed - content_bytes(&mp4);
    eprintln!(
        "mp4: flash at frame {flash} (expected 30), beep at {at:.4} s (expected 2.0), reserved {listed} bytes of which {padding} are the free box ({:.1} %)",
        padding as f64 * 100.0 / listed as f64
    );
    assert!((at - 2.0).abs() <= 0.02, "beep at {at} s");

    // A resumed MP4 download equals the full one.
    let full = std::fs::read(&mp4).unwrap();
    std::fs::write(work.path().join("part.mp4"), &full[..full.len() / 3]).unwrap();
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("reget {session}/call-mp4.mp4 part.mp4\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(work.path().join("part.mp4")).unwrap(), full);

    // Per-party files, made at archive time: the agent's VP8 with its PCMU
    // encoded to Opus in a WebM; the user's H.264 (which WebM cannot carry)
    // with its Opus in an MP4. Both seekable: a duration equal to the
    // party's span (4 s of each stream, ± one video frame), a WebM with Cues,
    // an MP4 with its index first, and a seek to the middle that decodes.
    let tree = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("ls -1 {session}\n"),
        work.path(),
    );
    assert!(!text(&tree).contains("user.webm"), "{}", text(&tree));
    for (party, ext, want) in [
        ("agent", "webm", "vp8\nopus\n"),
        ("user", "mp4", "h264\nopus\n"),
    ] {
        let name = format!("{party}.{ext}");
        let listed = listed_size(&server, work.path(), session, &name);
        let out = sftp_batch(
            server.port,
            "qa",
            client_key("qa"),
            &format!("get {session}/{name} {name}\n"),
            work.path(),
        );
        assert!(out.status.success(), "{}", text(&out));
        let file = work.path().join(&name);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), listed, "{name}");
        let codecs = probe(
            &file,
            &["-show_entries", "stream=codec_name", "-of", "csv=p=0"],
        );
        assert_eq!(codecs, want, "{name}");
        let (frames, errors) = decode(&file);
        assert!(errors.is_empty(), "{name}: {errors}");
        assert!(frames >= 59, "{name}: {frames} video frames decode");
        let duration = decoded_seconds(&file);
        assert!(
            (duration - 4.0).abs() <= 1.0 / 15.0 + 0.001,
            "{name}: duration {duration} s"
        );
        let bytes = std::fs::read(&file).unwrap();
        if ext == "webm" {
            let cues = [0x1c, 0x53, 0xbb, 0x6b];
            assert!(bytes.windows(4).any(|w| w == cues), "{name}: no Cues");
        } else {
            let moov = bytes.windows(4).position(|w| w == b"moov");
            let mdat = bytes.windows(4).position(|w| w == b"mdat");
            assert!(moov < mdat, "{name}: the index is not first");
        }
        let seek = run(Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-ss", "2", "-i"])
            .arg(&file)
            .args(["-f", "null", "-"]));
        assert!(
            seek.status.success() && seek.stderr.is_empty(),
            "{name}: seek: {}",
            String::from_utf8_lossy(&seek.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_render_killed_half_way_renders_again_byte_for_byte_and_reget_completes_it() {
    use crate::harness::*;
    let prefix = unique_prefix("media-kill");
    let config = media_config(&prefix);
    let server = Server::start(&config);
    let work = tempfile::tempdir().unwrap();
    // A 20-minute call: its MP3 takes seconds to render.
    let dir = media_session_until(work.path(), "call-long", "2026-11-23T10:20:00Z");
    push_session(&server, &dir);
    let session = "/2026/11/23/call-long";
    let want = listed_size(&server, work.path(), session, "call-long.mp3");
    assert_eq!(want, 128 + 384 * ((20 * 60 * 48_000u64).div_ceil(1152) + 1));

    // Start downloading; kill the server once bytes have arrived.
    let mut get = sftp_get_in_background(
        &server,
        &format!("{session}/call-long.mp3"),
        work.path(),
        "part.mp3",
    );
    let part = work.path().join("part.mp3");
    for _ in 0..600 {
        if std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) >= 64 * 1024 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let dir_back = server.kill9();
    let _ = get.wait();
    let partial = std::fs::read(&part).unwrap_or_default();
    assert!(
        !partial.is_empty() && (partial.len() as u64) < want,
        "the kill came at {} of {want} bytes",
        partial.len()
    );

    // A new process renders again: the same bytes, so `reget` completes the file.
    let server = Server::restart(dir_back, &config);
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("reget {session}/call-long.mp3 part.mp3\nget {session}/call-long.mp3 full.mp3\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());
    let full = std::fs::read(work.path().join("full.mp3")).unwrap();
    assert_eq!(full.len() as u64, want);
    assert_eq!(std::fs::read(&part).unwrap(), full, "resumed file differs");
    assert_eq!(&full[..partial.len()], &partial[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_whose_storage_read_is_cut_fails_the_read_and_the_next_read_renders_it_whole() {
    use crate::faults::{Fault, FaultProxy, Rule};
    use crate::harness::*;
    let prefix = unique_prefix("media-fault");
    let proxy = FaultProxy::start(&s3().endpoint);
    let server = Server::start_with(&format!(
        "{}\n{}",
        proxy.storage_toml(s3()),
        media_config(&prefix)
    ));
    let work = tempfile::tempdir().unwrap();
    let dir = media_session(work.path(), "call-f");
    push_session(&server, &dir);
    let session = "/2026/11/23/call-f";
    let want = listed_size(&server, work.path(), session, "call-f.mp3");

    // The render's read of the RAW archive is cut off after 4 KiB.
    proxy.inject(Rule::new(
        Some("GET"),
        "call-f.tar.gz",
        Fault::CutBody(4096),
    ));
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("get {session}/call-f.mp3 cut.mp3\n"),
        work.path(),
    );
    assert!(proxy.faulted() > 0, "the render read through the proxy");
    assert!(
        !out.status.success(),
        "a render that lost its input is a failed read: {}",
        text(&out)
    );
    let partial = std::fs::metadata(work.path().join("cut.mp3")).map_or(0, |m| m.len());
    assert!(partial < want, "{partial} of {want} bytes");

    // Storage is well again: the next read renders the whole file.
    proxy.clear();
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("get {session}/call-f.mp3 whole.mp3\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());
    assert_eq!(
        std::fs::metadata(work.path().join("whole.mp3"))
            .unwrap()
            .len(),
        want
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_recording_fails_the_read_clearly_and_the_server_keeps_serving() {
    use crate::harness::*;
    let prefix = unique_prefix("media-corrupt");
    let server = Server::start(&media_config(&prefix));
    let work = tempfile::tempdir().unwrap();
    let dir = media_session(work.path(), "call-bad");
    push_session(&server, &dir);
    // Replace the archive in storage with one whose agent stream is cut short.
    let mut mjr = std::fs::read(dir.join("agent-audio.mjr")).unwrap();
    mjr.truncate(mjr.len() - 50);
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(mjr.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "call-bad/agent-audio.mjr", &mjr[..])
        .unwrap();
    let gz = tar.into_inner().unwrap().finish().unwrap();
    let store = s3().store().await;
    store
        .put(
            &format!("{prefix}acme/sessions/2026/11/23/call-bad/call-bad.tar.gz"),
            bytes::Bytes::from(gz),
            Default::default(),
        )
        .await
        .unwrap();
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        "get /2026/11/23/call-bad/call-bad.mp3 x.mp3\n",
        work.path(),
    );
    assert!(
        !out.status.success(),
        "a corrupt recording rendered: {}",
        text(&out)
    );
    assert!(server.log_shows("render failed"), "{}", server.log());
    assert!(
        server.log_shows("agent-audio.mjr"),
        "the error names the stream: {}",
        server.log()
    );
    // Other reads still work.
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        "get /2026/11/23/call-bad/info.json i.json\n",
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_server_processes_on_one_bucket_render_once() {
    use crate::harness::*;
    let prefix = unique_prefix("media-two");
    let config = media_config(&prefix);
    let a = Server::start(&config);
    let b = Server::start(&config);
    let work = tempfile::tempdir().unwrap();
    // Two minutes of call: long enough that both processes ask at once.
    let dir = media_session_until(work.path(), "call-two", "2026-11-23T10:02:00Z");
    push_session(&a, &dir);
    let session = "/2026/11/23/call-two";
    let want = listed_size(&b, work.path(), session, "call-two.mp3");
    let bodies = parallel_gets(
        &[a.port, b.port],
        6,
        &format!("{session}/call-two.mp3"),
        work.path(),
    );
    for body in &bodies {
        assert_eq!(body.len() as u64, want);
        assert_eq!(body, &bodies[0]);
    }
    let renders =
        a.log().matches("render started").count() + b.log().matches("render started").count();
    assert_eq!(renders, 1, "A:\n{}\nB:\n{}", a.log(), b.log());
    let waited = a.log().matches("another process is rendering").count()
        + b.log().matches("another process is rendering").count();
    eprintln!("two processes: 1 render, {waited} waiting for the other process's file");
    // The lease is gone once the file is stored.
    let store = s3().store().await;
    let lease = format!("{prefix}acme/sessions/2026/11/23/call-two/derived/call-two.mp3.lease");
    assert!(store.head(&lease).await.unwrap().is_none());
}

// --------------------------------------------------- hashes over SSH exec --

/// MD5 of a file's bytes (hex).
fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// The hash `rclone hashsum` printed for `path` ("" when it printed none).
fn hash_listed(out: &std::process::Output, path: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.ends_with(&format!("  {path}")))
        .unwrap_or_else(|| panic!("{path} not listed:\n{}", crate::harness::text(out)));
    line.trim_end_matches(&format!("  {path}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_hashsum_and_check_use_stored_hashes_and_unknown_ones_delete_nothing() {
    use crate::harness::*;
    use crate::sync_tools::rclone;
    let prefix = unique_prefix("rclone-hashes");
    let server = Server::start(&media_config(&prefix));
    let work = tempfile::tempdir().unwrap();
    push_session(&server, &media_session(work.path(), "h-1"));
    // A session archived before MD5 and SHA-1 were recorded.
    let store = s3().store().await;
    let tenant = format!("{prefix}acme/");
    let old = recvault::layout::SessionKeys::of_call(&tenant, t("2026-11-23T11:00:00Z"), "h-old");
    let old_raw = pseudo_random(20_000, 3);
    store
        .put(&old.archive(), old_raw.clone().into(), Default::default())
        .await
        .unwrap();
    let index = format!(
        r#"{{"session_id":"h-old","started_at":"2026-11-23T11:00:00Z","ended_at":"2026-11-23T11:05:00Z","recvault":{{"version":1,"objects":{{"h-old.tar.gz":{{"size":{},"sha256":"{}"}}}}}}}}"#,
        old_raw.len(),
        sha256(&old_raw)
    );
    store
        .put(&old.index(), index.into(), Default::default())
        .await
        .unwrap();
    // Written behind the server's back, as an older version would have: the
    // day's index is dropped, so the next listing builds it again.
    recvault::days::forget(
        store.as_ref(),
        &tenant,
        &recvault::layout::Day::new("2026", "11", "23"),
    )
    .await
    .unwrap();
    // Render the MP3 once, so that its hashes are stored beside it.
    let key = client_key("qa");
    let got = sftp_batch(
        server.port,
        "qa",
        key,
        "get /2026/11/23/h-1/h-1.mp3\n",
        work.path(),
    );
    assert!(got.status.success(), "{}", text(&got));
    let mp3 = std::fs::read(work.path().join("h-1.mp3")).unwrap();
    let keys = recvault::layout::SessionKeys::of_call(&tenant, t("2026-11-23T10:00:00Z"), "h-1");
    let started = std::time::Instant::now();
    while store.head(&keys.sums("h-1.mp3")).await.unwrap().is_none() {
        assert!(
            started.elapsed().as_secs() < 30,
            "the render's hashes were never stored"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let stored = |k: String| {
        let store = store.clone();
        async move {
            recvault::store::read_all(store.as_ref(), &k, 1 << 30)
                .await
                .unwrap()
        }
    };
    let tar = stored(keys.archive()).await;
    let webm = stored(keys.derived("agent.webm")).await;

    // rclone's probe (a bare md5sum and sha1sum with empty input) accepts
    // the answers. One file, so that nothing runs beside the probe: rclone
    // 1.60 answers "hash unsupported" for files listed while it probes (its
    // own race), which is why the README says to name the commands.
    let probe = rclone(
        &server,
        key,
        &["hashsum", "md5", "-vv", "rv:/2026/11/23/h-1/h-1.tar.gz"],
    );
    assert!(probe.status.success(), "{}", text(&probe));
    let probe_err = String::from_utf8_lossy(&probe.stderr);
    assert_eq!(
        probe_err.matches("Hash command accepted").count(),
        2,
        "{probe_err}"
    );
    assert_eq!(hash_listed(&probe, "h-1.tar.gz"), md5_hex(&tar));
    let named = [
        "--sftp-md5sum-command",
        "md5sum",
        "--sftp-sha1sum-command",
        "sha1sum",
    ];
    let md5 = rclone(
        &server,
        key,
        &[&["hashsum", "md5", "rv:/2026/11/23"][..], &named].concat(),
    );
    assert!(md5.status.success(), "{}", text(&md5));
    assert_eq!(
        hash_listed(&md5, "h-1/h-1.tar.gz"),
        md5_hex(&tar),
        "stored at ingest"
    );
    assert_eq!(
        hash_listed(&md5, "h-1/agent.webm"),
        md5_hex(&webm),
        "made at ingest"
    );
    assert_eq!(
        hash_listed(&md5, "h-1/h-1.mp3"),
        md5_hex(&mp3),
        "stored with the render"
    );
    assert_eq!(
        hash_listed(&md5, "h-1/h-1.mp4"),
        "",
        "not rendered: no hash, not an error"
    );
    assert_eq!(
        hash_listed(&md5, "h-old/h-old.tar.gz"),
        "",
        "archived before MD5 was kept"
    );
    let sha1 = rclone(
        &server,
        key,
        &[&["hashsum", "sha1", "rv:/2026/11/23"][..], &named].concat(),
    );
    assert!(sha1.status.success(), "{}", text(&sha1));
    use sha1::Digest;
    assert_eq!(
        hash_listed(&sha1, "h-1/h-1.mp3"),
        hex::encode(sha1::Sha1::digest(&mp3))
    );

    // A copy with hash checks on, then a check that compares hashes: both
    // succeed over entries without a hash, and nothing is deleted.
    let dest = work.path().join("export");
    let dest_s = dest.display().to_string();
    let copy = rclone(
        &server,
        key,
        &[&["copy", "rv:/2026/11/23", &dest_s][..], &named].concat(),
    );
    assert!(copy.status.success(), "{}", text(&copy));
    let check = rclone(
        &server,
        key,
        &[&["check", "rv:/2026/11/23", &dest_s][..], &named].concat(),
    );
    assert!(check.status.success(), "{}", text(&check));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("0 differences found"), "{err}");
    assert!(err.contains("matching files"), "{err}");
    for f in [
        "h-1/h-1.tar.gz",
        "h-1/h-1.mp4",
        "h-1/h-1.mp3",
        "h-1/agent.webm",
        "h-old/h-old.tar.gz",
    ] {
        assert!(dest.join(f).exists(), "{f} kept");
    }
    assert_eq!(
        std::fs::read(dest.join("h-old/h-old.tar.gz")).unwrap(),
        old_raw
    );
}

/// Reads `session`'s MP4 over SFTP from `server`.
pub(crate) fn get_mp4(
    server: &crate::harness::Server,
    cwd: &Path,
    session: &str,
    id: &str,
) -> Vec<u8> {
    use crate::harness::*;
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("get {session}/{id}.mp4 got.mp4\n"),
        cwd,
    );
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());
    std::fs::read(cwd.join("got.mp4")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mp4_renders_to_the_same_bytes_in_another_process_and_a_different_encoder_build_is_logged(
) {
    use crate::harness::*;
    let prefix = unique_prefix("media-encoder");
    let config = media_config(&prefix);
    let work = tempfile::tempdir().unwrap();
    let id = "call-enc";
    let session = "/2026/11/23/call-enc";
    let keys =
        recvault::layout::SessionKeys::new(&format!("{prefix}acme/"), "2026", "11", "23", id);
    let store = s3().store().await;
    let name = format!("{id}.mp4");
    let forget_render = || async {
        for key in [keys.derived(&name), keys.sums(&name), keys.lease(&name)] {
            let _ = store.delete(&key).await;
        }
    };

    // The archiving node records its encoder build in the reservation.
    let first = Server::start(&config);
    let dir = mp4_session(work.path(), id);
    push_session(&first, &dir);
    let index = recvault::store::read_all(store.as_ref(), &keys.index(), 1 << 20)
        .await
        .unwrap();
    let index = recvault::layout::index::SessionIndex::parse(&index).unwrap();
    let encoder = index.recvault.derived[&name]
        .encoder
        .clone()
        .unwrap_or_default();
    assert!(
        encoder.starts_with("ffmpeg ") && encoder.contains("; x264 core "),
        "{encoder}"
    );
    let rendered = get_mp4(&first, work.path(), session, id);
    drop(first);

    // The render is lost (say, the derived files were cleaned) and another
    // process renders it again: the same bytes. Its index says another
    // build archived it, which the log says.
    let mut other = index.clone();
    other.recvault.derived.get_mut(&name).unwrap().encoder =
        Some("ffmpeg 4.4.0; x264 core 163 r3060".into());
    store
        .put(&keys.index(), other.to_bytes().into(), Default::default())
        .await
        .unwrap();
    forget_render().await;
    let second = Server::start(&config);
    let again = get_mp4(&second, work.path(), session, id);
    assert!(
        again == rendered,
        "a render in another process gave other bytes"
    );
    assert!(second.log_shows("x264 core 163 r3060"));
    let log = second.log();
    assert!(
        log.contains("encoder build differs") && log.contains("x264 core 163 r3060"),
        "{log}"
    );
}

/// The pids of the running children of `parent` whose command line holds
/// every one of `words` (as separate arguments).
fn children_running(parent: u32, words: &[&str]) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: state, ppid, ...
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let ppid = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if words.iter().all(|w| args.contains(&w.as_bytes())) {
            out.push(pid);
        }
    }
    out
}

/// One of a render's two x264 encoders is killed (SIGKILL) while a client
/// reads the MP4: the read fails (never a short success or a hang), the
/// server logs why and keeps serving, and the next read renders the whole
/// file, whose start is byte for byte what the first read had received.
#[tokio::test(flavor = "multi_thread")]
async fn an_encoder_killed_mid_render_fails_the_read_and_the_next_read_renders_it_whole() {
    use crate::harness::*;
    let prefix = unique_prefix("media-x264-kill");
    let config = format!("{}\n[limits]\nrender_threads = 2\n", media_config(&prefix));
    let server = Server::start(&config);
    let work = tempfile::tempdir().unwrap();
    let (id, session) = ("call-enc", "/2026/11/23/call-enc");
    // Ten minutes: its render takes seconds.
    push_session(
        &server,
        &mp4_session_until(work.path(), id, "2026-11-23T10:10:00Z"),
    );
    let name = format!("{id}.mp4");
    let want = listed_size(&server, work.path(), session, &name);
    let mut get = sftp_get_in_background(
        &server,
        &format!("{session}/{name}"),
        work.path(),
        "part.mp4",
    );
    let part = work.path().join("part.mp4");
    let mut encoders = Vec::new();
    for _ in 0..1500 {
        let got = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        encoders = children_running(server.pid(), &["libx264", "h264", "pipe:1"]);
        if got >= 64 * 1024 && encoders.len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(encoders.len(), 2, "two encoders running:\n{}", server.log());
    let killed = Command::new("kill")
        .args(["-KILL", &encoders[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = get.wait().unwrap();
    let partial = std::fs::read(&part).unwrap_or_default();
    assert!(
        !status.success(),
        "the read of a render that lost an encoder failed ({} of {want} bytes)",
        partial.len()
    );
    assert!((partial.len() as u64) < want, "{} of {want}", partial.len());
    eprintln!(
        "x264 {} killed; the read failed after {} of {want} bytes",
        encoders[0],
        partial.len()
    );
    assert!(
        server.log_shows("render failed"),
        "the server says why:\n{}",
        server.log()
    );
    // The next read renders again, whole, and starts with what was read.
    let full = get_mp4(&server, work.path(), session, id);
    assert_eq!(full.len() as u64, want);
    assert_eq!(&full[..partial.len()], &partial[..], "the same bytes again");
    let check = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(work.path().join("got.mp4"))
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        check.status.success() && check.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mp4_archived_with_three_encoders_renders_the_same_bytes_in_a_process_set_to_one() {
    use crate::harness::*;
    let prefix = unique_prefix("media-threads");
    let three = format!("{}\n[limits]\nrender_threads = 3\n", media_config(&prefix));
    let one = format!(
        "{}\n[limits]\nrender_threads = 1\nrender_concurrency = 1\n",
        media_config(&prefix)
    );
    let work = tempfile::tempdir().unwrap();
    let (id, session) = ("call-thr", "/2026/11/23/call-thr");
    let keys =
        recvault::layout::SessionKeys::new(&format!("{prefix}acme/"), "2026", "11", "23", id);
    let store = s3().store().await;
    let name = format!("{id}.mp4");

    // Archived by a node set to three encoders: the reservation says so and
    // its size has room for each encoder's VBV buffer. 6.5 s: 98 frames, so
    // the last chunk (encoder 0's second) is 8 frames.
    let first = Server::start(&three);
    push_session(
        &first,
        &mp4_session_until(work.path(), id, "2026-11-23T10:00:06.500Z"),
    );
    let index = recvault::store::read_all(store.as_ref(), &keys.index(), 1 << 20)
        .await
        .unwrap();
    let index = recvault::layout::index::SessionIndex::parse(&index).unwrap();
    assert_eq!(index.recvault.derived[&name].threads, Some(3));
    let listed = listed_size(&first, work.path(), session, &name);
    assert_eq!(listed, recvault::media::render::mp4_size(6500, 800_000, 3));
    let rendered = get_mp4(&first, work.path(), session, id);
    assert_eq!(rendered.len() as u64, listed);
    assert!(first.log_shows("encoders=3"), "{}", first.log());
    let mp4 = work.path().join("three.mp4");
    std::fs::write(&mp4, &rendered).unwrap();
    let (frames, errors) = decode(&mp4);
    assert!(errors.is_empty(), "{errors}");
    assert_eq!(frames, 98);
    // Every frame on the 15 fps grid; an IDR at each chunk's start (frames
    // 0, 30, 60, 90: chunks from the three encoders in turn) and nowhere else.
    let packets = probe(
        &mp4,
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
        ],
    );
    let mut keyframes = Vec::new();
    for (k, line) in packets.lines().enumerate() {
        let (t, flags) = line.split_once(',').unwrap();
        let t: f64 = t.trim().parse().unwrap();
        assert!((t - k as f64 / 15.0).abs() <= 0.001, "frame {k} at {t} s");
        if flags.starts_with('K') {
            keyframes.push(k);
        }
    }
    assert_eq!(keyframes, [0, 30, 60, 90], "{packets}");
    drop(first);

    // The render is lost and a node set to one encoder renders it again:
    // with the three recorded, the same bytes.
    for key in [keys.derived(&name), keys.sums(&name), keys.lease(&name)] {
        let _ = store.delete(&key).await;
    }
    let second = Server::start(&one);
    let again = get_mp4(&second, work.path(), session, id);
    assert!(
        again == rendered,
        "the re-render with the recorded encoders gave other bytes"
    );
    assert!(second.log_shows("encoders=3"), "{}", second.log());

    // A session it archives itself records nothing (one encoder, as
    // before) and renders with one.
    let (id1, session1) = ("call-thr1", "/2026/11/23/call-thr1");
    push_session(&second, &mp4_session(work.path(), id1));
    let keys1 =
        recvault::layout::SessionKeys::new(&format!("{prefix}acme/"), "2026", "11", "23", id1);
    let index1 = recvault::store::read_all(store.as_ref(), &keys1.index(), 1 << 20)
        .await
        .unwrap();
    let index1 = recvault::layout::index::SessionIndex::parse(&index1).unwrap();
    assert_eq!(index1.recvault.derived[&format!("{id1}.mp4")].threads, None);
    let single = get_mp4(&second, work.path(), session1, id1);
    assert_eq!(
        single.len() as u64,
        recvault::media::render::mp4_size(6000, 800_000, 1)
    );
    assert!(second.log_shows("encoders=1"), "{}", second.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_gives_an_old_session_its_derived_entries_once_and_they_serve_their_listed_sizes()
{
    use crate::harness::*;
    let prefix = unique_prefix("media-backfill");
    let jobs = tempfile::tempdir().unwrap();
    let config = format!(
        "[jobs]\nstate_dir = \"{}\"\n\n{}",
        jobs.path().display(),
        media_config(&prefix)
    );
    let server = Server::start(&config);
    let work = tempfile::tempdir().unwrap();
    let id = "call-bf";
    push_session(&server, &mp4_session(work.path(), id));
    push_session(&server, &media_session(work.path(), "call-new"));
    let session = format!("/2026/11/23/{id}");

    // Make call-bf look archived before derived media existed: no derived
    // section, no stored party files.
    let store = s3().store().await;
    let keys =
        recvault::layout::SessionKeys::new(&format!("{prefix}acme/"), "2026", "11", "23", id);
    let read_index = || async {
        recvault::store::read_all(store.as_ref(), &keys.index(), 1 << 20)
            .await
            .unwrap()
    };
    let original = recvault::layout::index::SessionIndex::parse(&read_index().await).unwrap();
    let mut old = original.clone();
    for name in old.recvault.derived.keys() {
        let _ = store.delete(&keys.derived(name)).await;
    }
    old.recvault.derived.clear();
    store
        .put(&keys.index(), old.to_bytes().into(), Default::default())
        .await
        .unwrap();
    let other_index = recvault::layout::SessionKeys::new(
        &format!("{prefix}acme/"),
        "2026",
        "11",
        "23",
        "call-new",
    )
    .index();
    let read_other = || async {
        recvault::store::read_all(store.as_ref(), &other_index, 1 << 20)
            .await
            .unwrap()
    };
    let untouched_other = read_other().await;

    let backfill = || {
        recvault_command()
            .arg("backfill")
            .arg("--config")
            .arg(server.dir.path().join("recvault.toml"))
            .args(["--tenant", "acme"])
            .output()
            .expect("recvault backfill")
    };
    let out = backfill();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!(
            "acme {session}: derived entries added: {id}.mp3 ("
        )),
        "{stdout}"
    );
    for name in [".mp4 (", "agent.webm (", "user.mp4 ("] {
        assert!(lines[0].contains(name), "{stdout}");
    }
    assert_eq!(lines[1], "backfill acme: 2 sessions seen, 1 reported");
    assert!(
        server.audit().contains(r#""kind":"backfill""#),
        "{}",
        server.audit()
    );

    // The entries are what ingest writes today: same sizes (the party files
    // the same bytes), and the other session was not rewritten.
    let filled = recvault::layout::index::SessionIndex::parse(&read_index().await).unwrap();
    let sizes = |i: &recvault::layout::index::SessionIndex| -> Vec<(String, u64)> {
        i.recvault
            .derived
            .iter()
            .map(|(n, d)| (n.clone(), d.size))
            .collect()
    };
    assert_eq!(sizes(&filled), sizes(&original));
    assert_eq!(
        filled.recvault.derived["agent.webm"].hashes,
        original.recvault.derived["agent.webm"].hashes
    );
    let other_now = read_other().await;
    assert_eq!(other_now, untouched_other);

    // A server that reads the new index (a fresh one: the first caches the
    // old for [limits] metadata_cache_secs) serves each entry at its listed
    // size.
    let reader = Server::start(&config);
    for name in [
        format!("{id}.mp3"),
        format!("{id}.mp4"),
        "agent.webm".to_string(),
        "user.mp4".to_string(),
    ] {
        let listed = listed_size(&reader, work.path(), &session, &name);
        let got = sftp_batch(
            reader.port,
            "qa",
            client_key("qa"),
            &format!("get {session}/{name} got-{name}\n"),
            work.path(),
        );
        assert!(got.status.success(), "{}", text(&got));
        let served = std::fs::metadata(work.path().join(format!("got-{name}")))
            .unwrap()
            .len();
        assert_eq!(served, listed, "{name}");
    }

    // A second run changes nothing.
    let before = read_index().await;
    let out = backfill();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "backfill acme: 2 sessions seen, 0 reported\n"
    );
    assert_eq!(read_index().await, before);
}

/// Process ids of the ffmpeg processes reading from a render folder of the
/// recvault process `pid`.
fn ffmpegs_of(pid: u32) -> Vec<u32> {
    let mark = format!("recvault-render-{pid}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let n: u32 = p.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            (cmd.starts_with("ffmpeg\0") && cmd.contains(&mark)).then_some(n)
        })
        .collect()
}

/// Render folders the recvault process `pid` made in the temporary folder.
fn render_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let mark = format!("recvault-render-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&mark))
        .map(|e| e.path())
        .collect()
}

/// Waits (bounded) until `ok` holds; false when it never did.
fn eventually(limit: std::time::Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    ok()
}

/// SIGKILLs `server` while its ffmpeg runs: no ffmpeg of it outlives it,
/// it leaves a render folder, and the next start removes that folder.
fn kill_and_restart(server: crate::harness::Server, config: &str) -> crate::harness::Server {
    let pid = server.pid();
    let dir = server.kill9();
    assert!(
        eventually(std::time::Duration::from_secs(30), || ffmpegs_of(pid)
            .is_empty()),
        "ffmpeg outlived its recvault: {:?}",
        ffmpegs_of(pid)
    );
    assert!(
        !render_dirs_of(pid).is_empty(),
        "the kill left no folder to sweep"
    );
    let server = crate::harness::Server::restart(dir, config);
    assert_eq!(render_dirs_of(pid), Vec::<std::path::PathBuf>::new());
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_remux_or_a_render_leaves_no_ffmpeg_and_no_render_folder() {
    use crate::harness::*;
    use std::time::Duration;
    let prefix = unique_prefix("media-crash");
    let config = media_config(&prefix);
    let work = tempfile::tempdir().unwrap();
    let call = recvault::media::fixture::session(work.path(), "crash-1", 300).unwrap();

    // Killed while ingest remuxes the per-party files.
    let server = Server::start(&config);
    let mut push = Command::new(env!("CARGO_BIN_EXE_recvault"))
        .arg("push")
        .arg(&call)
        .args([
            "--url",
            &server.ingest_url(),
            "--token",
            TOKEN,
            "--wait",
            "300",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(240), || !ffmpegs_of(server.pid())
            .is_empty()),
        "no remux seen:\n{}",
        server.log()
    );
    let server = kill_and_restart(server, &config);
    let _ = push.kill();
    let _ = push.wait();

    // The spooled session is archived after the restart; killed while its
    // MP4 renders.
    let session = "/2026/11/23/crash-1";
    assert!(
        eventually(Duration::from_secs(240), || {
            let out = sftp_batch(
                server.port,
                "qa",
                client_key("qa"),
                &format!("ls {session}\n"),
                work.path(),
            );
            text(&out).contains("crash-1.mp4")
        }),
        "not archived after the restart:\n{}",
        server.log()
    );
    let mut get = Command::new("sftp")
        .args(["-q", "-P", &server.port.to_string(), "-i"])
        .arg(&client_key("qa").private)
        .args(OPENSSH_OPTS)
        .args([
            "-o",
            "BatchMode=yes",
            &format!("qa@127.0.0.1:{session}/crash-1.mp4"),
        ])
        .arg(work.path().join("c.mp4"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(120), || !ffmpegs_of(server.pid())
            .is_empty()),
        "no render seen:\n{}",
        server.log()
    );
    let _server = kill_and_restart(server, &config);
    let _ = get.kill();
    let _ = get.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_render_leaves_no_upload_or_lease_behind_and_the_next_start_renders_it() {
    use crate::harness::*;
    let prefix = unique_prefix("media-stop");
    let config = format!("[limits]\ndrain_secs = 1\n\n{}", media_config(&prefix));
    let mut server = Server::start(&config);
    let work = tempfile::tempdir().unwrap();
    // A one-hour call: its MP3 (58 MB) takes a while to render and is
    // uploaded in 8 MiB parts as it is made.
    let dir = media_session_until(work.path(), "call-stop", "2026-11-23T11:00:00Z");
    push_session(&server, &dir);
    let session = "/2026/11/23/call-stop";
    let want = listed_size(&server, work.path(), session, "call-stop.mp3");
    let get = sftp_get_in_background(
        &server,
        &format!("{session}/call-stop.mp3"),
        work.path(),
        "part.mp3",
    );
    // Wait until the render's upload has begun (its first part is sent
    // once 8 MiB are made), so the stop has an upload to clean up.
    let store = s3().store().await;
    let tenant = format!("{prefix}acme/");
    let mut uploading = false;
    for _ in 0..1500 {
        if !store.multipart_list(&tenant).await.unwrap().is_empty() {
            uploading = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(uploading, "the render's upload never started");
    let leases = |keys: &[String]| keys.iter().filter(|k| k.ends_with(".lease")).count();
    assert_eq!(
        leases(&list_keys(store.as_ref(), &tenant).await),
        1,
        "the render holds its lease"
    );

    server.signal("TERM");
    let began = std::time::Instant::now();
    while server.is_running() && began.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !server.is_running(),
        "stopped within the drain, goodbye and clean-up times"
    );
    let out = get.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the cut download fails (the render had ended: make the call longer)\n{}",
        server.log()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server shutting down"),
        "the client is told why: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing half-made is left in storage.
    assert_eq!(
        store.multipart_list(&tenant).await.unwrap(),
        vec![],
        "uploads aborted at the stop"
    );
    let keys = list_keys(store.as_ref(), &tenant).await;
    assert_eq!(
        leases(&keys),
        0,
        "lease deleted at the stop: {keys:?}\n{}",
        server.log()
    );
    assert!(
        !keys.iter().any(|k| k.ends_with("call-stop.mp3")),
        "{keys:?}"
    );

    // The next start renders it whole.
    let server = Server::restart(server.kill9(), &config);
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("get {session}/call-stop.mp3 full.mp3\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());
    assert_eq!(
        std::fs::metadata(work.path().join("full.mp3"))
            .unwrap()
            .len(),
        want
    );
}

/// OpenSSH `sftp` getting `remote` into `cwd/local` as user qa, in the
/// background; its stderr (warnings and errors only) is piped.
fn sftp_get_in_background(
    server: &crate::harness::Server,
    remote: &str,
    cwd: &Path,
    local: &str,
) -> std::process::Child {
    use crate::harness::client_key;
    let batch = cwd.join(format!("{local}.batch"));
    std::fs::write(&batch, format!("get {remote} {local}\n")).unwrap();
    Command::new("sftp")
        .args(["-o", "LogLevel=error", "-P", &server.port.to_string(), "-i"])
        .arg(&client_key("qa").private)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-b",
        ])
        .arg(&batch)
        .arg("qa@127.0.0.1")
        .current_dir(cwd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every key under `prefix`.
async fn list_keys(store: &dyn recvault::store::ObjectStore, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut next = None;
    loop {
        let page = store.list_page(prefix, None, next).await.unwrap();
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.next {
            Some(n) => next = Some(n),
            None => return keys,
        }
    }
}
