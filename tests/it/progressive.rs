//! A first read of a call's MP4 is progressive: bytes reach the reader at
//! the pace of the render, over SFTP and over FTPS, alone and with other
//! renders and a CPU hog running. Checked by the order of events, never by
//! wall-clock time: the server logs each MP4 fragment it hands to its
//! readers (`MP4 fragment written`, with the fragment's end offset), and the
//! client, after every piece it receives, notes how many fragments the
//! server has reported so far. When the client holds fragment k, the server
//! must not yet have reported fragment k+3; and the client must hold the
//! first half of the file before the server reports the render done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use crate::harness::*;
use crate::media::{media_config, push_session, PW};
use crate::rawftp::{open_data, RawFtp};
use crate::rawsftp::{self, RawSftp};

const DAY: &str = "/2026/11/23";

/// What the client had received when it noted the server's reports.
struct Sample {
    received: u64,
    reported: usize,
    rendered: bool,
}

/// The render's fragment ends (in order) and whether it reported
/// completion, from the server's log: only the lines of `key`'s render.
fn reports(log: &str, id: &str) -> (Vec<u64>, bool) {
    let key = format!("{id}/derived/{id}.mp4");
    let mut ends = Vec::new();
    let mut rendered = false;
    for line in log.lines().filter(|l| l.contains(&key)) {
        if line.contains("MP4 fragment written") {
            if let Some(end) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("end="))
                .and_then(|n| n.parse().ok())
            {
                ends.push(end);
            }
        } else if line.ends_with(" rendered") || line.contains(" rendered ") {
            rendered = true;
        }
    }
    (ends, rendered)
}

fn note(server: &Server, id: &str, received: u64, samples: &mut Vec<Sample>) {
    let (ends, rendered) = reports(&server.log(), id);
    samples.push(Sample {
        received,
        reported: ends.len(),
        rendered,
    });
}

/// Checks the order of events of one first read of `size` bytes.
fn check(server: &Server, id: &str, how: &str, size: u64, samples: &[Sample]) {
    // The render reports completion once the file is stored, after the
    // last byte reached the client.
    let mut tries = 0;
    let (ends, rendered) = loop {
        let (ends, rendered) = reports(&server.log(), id);
        tries += 1;
        if rendered || tries == 300 {
            break (ends, rendered);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        rendered,
        "{how}: the render never reported completion:\n{}",
        server.log()
    );
    // A 60 s call in fragments of 2 s of media.
    assert!(ends.len() >= 25, "{how}: {} fragments reported", ends.len());
    let mut worst = 0usize;
    for (k, end) in ends.iter().enumerate() {
        let s = samples
            .iter()
            .find(|s| s.received >= *end)
            .unwrap_or_else(|| panic!("{how}: fragment {k} never received"));
        // Fragments reported when the client first held fragment k.
        let ahead = s.reported.saturating_sub(k + 1);
        worst = worst.max(ahead);
        assert!(
            s.reported < k + 4,
            "{how}: the client got fragment {k} (ends at {end}) only after the server reported fragment {} written",
            s.reported - 1
        );
    }
    let half = samples
        .iter()
        .find(|s| s.received >= size / 2)
        .expect("half the file");
    assert!(
        !half.rendered,
        "{how}: the first half of the file arrived only after the render ended"
    );
    eprintln!(
        "{how}: {} fragments; the server was at most {worst} fragment(s) ahead of the client",
        ends.len()
    );
}

/// Reads `id`'s MP4 over SFTP one request at a time, noting the server's
/// reports after each reply.
async fn read_sftp(server: &Server, id: &str) -> (u64, Vec<Sample>) {
    let mut h = rawsftp::connect(server.port).await;
    assert!(rawsftp::auth_password(&mut h, "qa", PW).await);
    let (mut sftp, _) = RawSftp::start(&h).await;
    let path = format!("{DAY}/{id}/{id}.mp4");
    let size = sftp.stat(path.as_bytes()).await.unwrap().size;
    let handle = sftp.open(path.as_bytes(), 1).await.unwrap();
    let mut samples = Vec::new();
    let mut at = 0u64;
    while at < size {
        let piece = sftp.read(&handle, at, 64 * 1024).await.unwrap();
        assert!(!piece.is_empty(), "an empty read at {at} of {size}");
        at += piece.len() as u64;
        note(server, id, at, &mut samples);
    }
    (size, samples)
}

/// Reads `id`'s MP4 over FTPS, noting the server's reports after each piece
/// the data connection delivers.
async fn read_ftps(server: &Server, id: &str) -> (u64, Vec<Sample>) {
    let mut ftp = RawFtp::login(server.ftps_port, "qa", PW).await;
    assert_eq!(ftp.cmd("TYPE I").await.code, 200);
    let path = format!("{DAY}/{id}/{id}.mp4");
    let size: u64 = {
        let r = ftp.cmd(&format!("SIZE {path}")).await;
        assert_eq!(r.code, 213, "{r:?}");
        r.text[4..].trim().parse().unwrap()
    };
    let port = ftp.epsv().await;
    let r = ftp.cmd(&format!("RETR {path}")).await;
    assert_eq!(r.code, 150, "{r:?}");
    let mut data = open_data(port).await.unwrap();
    let mut samples = Vec::new();
    let mut at = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = data.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        at += n as u64;
        note(server, id, at, &mut samples);
    }
    assert_eq!(at, size, "bytes received = SIZE");
    assert_eq!(ftp.reply().await.unwrap().code, 226);
    (size, samples)
}

/// A server whose log has the render's fragment reports, with one 60 s
/// call per id pushed.
async fn server_with_calls(test: &str, ids: &[&str]) -> Server {
    let prefix = unique_prefix(test);
    let config = format!(
        "[limits]\nrender_concurrency = 4\n\n{}",
        media_config(&prefix)
    );
    let server = Server::start_logging(
        tempfile::tempdir().unwrap(),
        &format!("{}\n{config}", s3().storage_toml()),
        "info,recvault::media::render=debug",
    );
    // One 60 s recording, pushed under each id.
    let work = tempfile::tempdir().unwrap();
    let source = recvault::media::fixture::session(work.path(), "source", 60).unwrap();
    let info = std::fs::read_to_string(source.join("info.json")).unwrap();
    for id in ids {
        let dir = work.path().join(id);
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(&source).unwrap() {
            let from = entry.unwrap().path();
            if from.extension().is_some_and(|e| e == "mjr") {
                std::fs::copy(&from, dir.join(from.file_name().unwrap())).unwrap();
            }
        }
        let renamed = info.replace(
            "\"session_id\":\"source\"",
            &format!("\"session_id\":\"{id}\""),
        );
        assert_ne!(renamed, info);
        std::fs::write(dir.join("info.json"), renamed).unwrap();
        push_session(&server, &dir);
    }
    server
}

/// Keeps one core busy until dropped.
struct Hog(Arc<AtomicBool>);

impl Hog {
    fn start() -> Hog {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !flag.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
        });
        Hog(stop)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_mp4_read_arrives_at_render_pace_over_sftp_and_ftps_alone_and_under_load() {
    let ids = ["prog-s", "prog-f", "prog-sl", "prog-fl", "busy-1", "busy-2"];
    let server = server_with_calls("progressive", &ids).await;

    // Alone.
    let (size, samples) = read_sftp(&server, "prog-s").await;
    check(&server, "prog-s", "SFTP, alone", size, &samples);
    let (size, samples) = read_ftps(&server, "prog-f").await;
    check(&server, "prog-f", "FTPS, alone", size, &samples);

    // With two other renders and a CPU hog running.
    let busy = |id: &'static str| {
        let server_port = server.port;
        tokio::spawn(async move {
            let mut h = rawsftp::connect(server_port).await;
            assert!(rawsftp::auth_password(&mut h, "qa", PW).await);
            let (mut sftp, _) = RawSftp::start(&h).await;
            let path = format!("{DAY}/{id}/{id}.mp4");
            let size = sftp.stat(path.as_bytes()).await.unwrap().size;
            let handle = sftp.open(path.as_bytes(), 1).await.unwrap();
            let mut at = 0;
            while at < size {
                at += sftp.read(&handle, at, 255 * 1024).await.unwrap().len() as u64;
            }
        })
    };
    let hog = Hog::start();
    let others = [busy("busy-1"), busy("busy-2")];
    let (size, samples) = read_sftp(&server, "prog-sl").await;
    check(&server, "prog-sl", "SFTP, under load", size, &samples);
    let (size, samples) = read_ftps(&server, "prog-fl").await;
    check(&server, "prog-fl", "FTPS, under load", size, &samples);
    drop(hog);
    for o in others {
        o.await.unwrap();
    }
}
