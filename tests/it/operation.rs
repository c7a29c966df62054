//! Operating the server: the demo command, reload on SIGHUP, clean stop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::rawsftp::*;

#[test]
fn demo_prints_a_login_that_works_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_recvault"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--ftps-listen",
            "127.0.0.1:0",
        ])
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut password, mut connect, mut ftps) = (String::new(), String::new(), String::new());
    let (mut ingest, mut progress, mut web) = (String::new(), 0, String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(c) = line.trim().strip_prefix("web page    : ") {
            web = c.split_whitespace().next().unwrap_or("").to_string();
        }
        if line.starts_with("recvault demo: recording sample call") {
            progress += 1;
        }
        if let Some(c) = line.trim().strip_prefix("ingest      : ") {
            ingest = c.to_string();
        }
        if let Some(p) = line.trim().strip_prefix("password    : ") {
            password = p.split_whitespace().next().unwrap().to_string();
        }
        if let Some(c) = line.trim().strip_prefix("connect     : ") {
            connect = c.to_string();
        }
        if let Some(c) = line.trim().strip_prefix("ftps        : ") {
            ftps = c.to_string();
            break;
        }
    }
    // "sftp -P PORT demo@127.0.0.1"
    let words: Vec<&str> = connect.split_whitespace().collect();
    assert_eq!(
        (words[0], words[1], words[3]),
        ("sftp", "-P", "demo@127.0.0.1"),
        "{connect}"
    );
    let port: u16 = words[2].parse().unwrap();
    assert_eq!(password.len(), 16);

    let work = tempfile::tempdir().unwrap();
    let out = sftp_batch_password(
        port,
        "demo",
        &password,
        "ls /2026/11/23\nget /2026/11/23/demo-call-0001/demo-call-0001.tar.gz c.tgz\n",
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    for id in ["demo-call-0001", "demo-call-0002", "demo-call-0003"] {
        assert!(listing.contains(id), "{listing}");
    }
    // The printed web page URL serves the page (under its CSP) and logs in
    // with the printed password; its session then lists the day.
    assert!(
        web.starts_with("http://127.0.0.1:") && web.ends_with('/'),
        "{web:?}"
    );
    let page = Command::new("curl")
        .args(["-sS", "-i", &web])
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&page.stdout).to_string();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    assert!(page.contains("/app.js"), "{page}");
    let jar = tempfile::NamedTempFile::new().unwrap();
    let login = Command::new("curl")
        .args(["-sS", "-c"])
        .arg(jar.path())
        .args(["-H", "Content-Type: application/json", "--data"])
        .arg(format!(r#"{{"user":"demo","password":"{password}"}}"#))
        .arg(format!("{web}session"))
        .output()
        .unwrap();
    let login = String::from_utf8_lossy(&login.stdout).to_string();
    assert!(login.contains("\"user\":\"demo\""), "{login}");
    // A day's calls in the session.
    let calls_of = |day: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-b"])
            .arg(jar.path())
            .arg(format!("{web}v1/calls?from={day}&to={day}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let day = calls_of("2026-11-23");
    assert!(day.contains("demo-call-0001"), "{day}");
    let empty = calls_of("2026-11-24");
    assert!(
        empty.contains("\"calls\":[]"),
        "a day without calls: {empty}"
    );

    // The printed FTPS line works as printed (with the password added): the
    // certificate it names verifies the server.
    let words: Vec<&str> = ftps.split_whitespace().collect();
    let url = words
        .iter()
        .find(|w| w.starts_with("ftp://"))
        .unwrap_or_else(|| panic!("no ftp:// URL in {ftps:?}"));
    let cacert = words
        .iter()
        .position(|w| *w == "--cacert")
        .map(|i| words[i + 1])
        .unwrap_or_else(|| panic!("no --cacert in {ftps:?}"));
    assert!(Path::new(cacert).is_absolute(), "{ftps}");
    let out = Command::new("curl")
        .args(["-sS", "--ssl-reqd", "--cacert", cacert])
        .args(["-u", &format!("demo:{password}")])
        .arg(format!("{url}2026/11/23/"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 3, "{listing}");
    let tar = Command::new("tar")
        .arg("tzf")
        .arg(work.path().join("c.tgz"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tar.stdout).contains("agent-audio.mjr"),
        "{}",
        text(&tar)
    );
    // With ffmpeg installed (the suite needs it) the sample calls are real
    // recordings: their derived media is listed and plays.
    let session = "/2026/11/23/demo-call-0003";
    let out = sftp_batch_password(
        port,
        "demo",
        &password,
        &format!("ls -l {session}\nget {session}/demo-call-0003.mp3 c.mp3\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    let listed: u64 = listing
        .lines()
        .find(|l| l.ends_with("demo-call-0003.mp3"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MP3 in {listing}"));
    // The demo's user has H.264 video: their own file is an MP4.
    for name in ["demo-call-0003.mp4", "agent.webm", "user.mp4"] {
        assert!(listing.contains(name), "{listing}");
    }
    let mp3 = std::fs::metadata(work.path().join("c.mp3")).unwrap().len();
    assert_eq!(mp3, listed);
    let secs = crate::media::decoded_seconds(&work.path().join("c.mp3"));
    assert!((secs - 25.0).abs() < 0.1, "{secs} s");

    // Progress reached stdout while the calls were recorded, and the printed
    // ingest line pushes the session folder it names, as printed (no
    // `recvault` on PATH needed).
    assert_eq!(progress, 3, "one progress line per sample call");
    let words: Vec<&str> = ingest.split_whitespace().collect();
    assert_eq!(words.get(1), Some(&"push"), "{ingest}");
    assert!(Path::new(words[0]).is_absolute(), "{ingest}");
    assert!(Path::new(words[2]).join("info.json").exists(), "{ingest}");
    let pushed = Command::new(words[0]).args(&words[1..]).output().unwrap();
    assert!(pushed.status.success(), "{}", text(&pushed));
    let out = sftp_batch_password(port, "demo", &password, "ls /2026/11/23\n", work.path());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("demo-push-0001"),
        "{}",
        text(&out)
    );

    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("demo did not stop on Ctrl-C")
    });
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_users_without_dropping_connections_and_refuses_a_broken_file() {
    let prefix = unique_prefix("reload");
    let store = s3().store().await;
    seed(
        store.as_ref(),
        &prefix,
        "r-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        b"r".to_vec(),
    )
    .await;
    let (qa, newbie) = (client_key("qa"), client_key("newbie"));
    let server = Server::start(&tenant_toml("acme", &prefix, &[("qa", qa, "")]));
    let mut h = connect(server.port).await;
    assert!(auth_key(&mut h, "qa", qa).await);
    let (mut open_session, _) = RawSftp::start(&h).await;
    let mut nh = connect(server.port).await;
    assert!(
        !auth_key(&mut nh, "newbie", newbie).await,
        "not configured yet"
    );

    server.reload(&tenant_toml(
        "acme",
        &prefix,
        &[("qa", qa, ""), ("newbie", newbie, "")],
    ));
    let mut admitted = false;
    for _ in 0..100 {
        let mut nh = connect(server.port).await;
        if auth_key(&mut nh, "newbie", newbie).await {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        admitted,
        "SIGHUP did not add the user; log:\n{}",
        server.log()
    );
    assert_eq!(
        open_session.list(b"/2026/11/23").await.unwrap(),
        ["r-1"],
        "the open session survived the reload"
    );

    // A broken file is refused and the running configuration stays.
    std::fs::write(server.dir.path().join("recvault.toml"), "this is [not toml").unwrap();
    server.signal("HUP");
    let refused = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        server.log_shows("reload refused")
    });
    assert!(refused, "{}", server.log());
    let mut again = connect(server.port).await;
    assert!(
        auth_key(&mut again, "newbie", newbie).await,
        "running configuration kept"
    );
}
