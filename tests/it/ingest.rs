//! Ingest: sessions pushed over HTTP (curl and `recvault push`), archived
//! into moto, visible over SFTP; bad input; re-delivery; disk floor; an S3
//! outage; SIGKILL at random moments.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use recvault::ingest::spool::ALLOWED;
use recvault::media::mjr::{rtp_packet, write_mjr, Kind};

use crate::harness::*;

pub(crate) const TOKEN_A: &str = "token-for-acme-0123456789abcdef";
const TOKEN_B: &str = "token-for-bravo-0123456789abcdef";

/// Tenants acme (user "qa", token A) and bravo (token B) under `prefix`.
fn tenants(prefix: &str, limits: &str) -> String {
    let hash = recvault::ingest::token_hash;
    format!(
        "{limits}\n[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}acme/\"\ningest_tokens = [\"sha256:{}\"]\n\n[[tenants.users]]\nname = \"qa\"\nauthorized_keys = [\"{}\"]\n\n[[tenants]]\nid = \"bravo\"\nprefix = \"{prefix}bravo/\"\ningest_tokens = [\"sha256:{}\"]\n",
        hash(TOKEN_A),
        client_key("qa").public,
        hash(TOKEN_B)
    )
}

/// A session folder like the gateway's: four MJR streams and info.json.
pub(crate) fn make_session(root: &Path, id: &str, seed: u8, packets: u32) -> PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = 1_763_888_400_000_000i64;
    let payload = |i: u32, n: usize| -> Vec<u8> {
        (0..n)
            .map(|k| (k as u32 ^ i).wrapping_mul(seed as u32 + 1) as u8)
            .collect()
    };
    let audio = |pt, codec: &str, step: u32, n| {
        let frames: Vec<_> = (0..packets)
            .map(|i| {
                (
                    i * 20,
                    rtp_packet(pt, false, i as u16, i * step, 11, &payload(i, n)),
                )
            })
            .collect();
        write_mjr(Kind::Audio, codec, t0, t0 + 1000, &frames)
    };
    let video = |codec: &str| {
        let frames: Vec<_> = (0..packets / 2)
            .map(|i| {
                (
                    i * 40,
                    rtp_packet(96, true, i as u16, i * 3600, 22, &payload(i, 900)),
                )
            })
            .collect();
        write_mjr(Kind::Video, codec, t0, t0 + 2000, &frames)
    };
    std::fs::write(dir.join("agent-audio.mjr"), audio(0, "pcmu", 160, 160)).unwrap();
    std::fs::write(dir.join("user-audio.mjr"), audio(111, "opus", 960, 80)).unwrap();
    std::fs::write(dir.join("agent-video.mjr"), video("vp8")).unwrap();
    std::fs::write(dir.join("user-video.mjr"), video("h264")).unwrap();
    std::fs::write(
        dir.join("info.json"),
        format!(r#"{{"session_id":"{id}","started_at":"2026-11-23T10:00:00Z","ended_at":"2026-11-23T10:05:00Z","agent":{{"id":"a1","name":"Ann"}},"user":{{"id":"u9","name":"Bob"}},"queue":"sales","tags":{{"lang":"en"}}}}"#),
    )
    .unwrap();
    dir
}

/// PUT one session file: (status, body).
pub(crate) fn put_file(
    server: &Server,
    id: &str,
    name: &str,
    token: &str,
    file: &Path,
) -> (u16, String) {
    curl(
        "PUT",
        &format!("{}/v1/sessions/{id}/files/{name}", server.ingest_url()),
        Some(token),
        Some(file),
    )
}

/// POST complete: (status, body).
pub(crate) fn complete(server: &Server, id: &str, token: &str) -> (u16, String) {
    curl(
        "POST",
        &format!("{}/v1/sessions/{id}/complete", server.ingest_url()),
        Some(token),
        None,
    )
}

/// One HTTP request with curl: (status, body).
fn curl(method: &str, url: &str, token: Option<&str>, data: Option<&Path>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "--max-time",
        "60",
    ]);
    if let Some(t) = token {
        c.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    if let Some(d) = data {
        c.arg("--data-binary").arg(format!("@{}", d.display()));
    }
    let out = c.arg("--path-as-is").arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

pub(crate) fn push(server: &Server, dir: &Path, token: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_recvault"))
        .arg("push")
        .arg(dir)
        .args([
            "--url",
            &server.ingest_url(),
            "--token",
            token,
            "--wait",
            "120",
        ])
        .output()
        .expect("recvault push")
}

pub(crate) fn wait_status(
    server: &Server,
    id: &str,
    token: &str,
    want: &str,
    limit: Duration,
) -> String {
    let start = Instant::now();
    loop {
        let (_, body) = curl(
            "GET",
            &format!("{}/v1/sessions/{id}", server.ingest_url()),
            Some(token),
            None,
        );
        if body.contains(&format!("\"status\":\"{want}\"")) || start.elapsed() > limit {
            return body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_archives_a_session_that_sftp_then_serves_byte_for_byte() {
    let prefix = unique_prefix("ingest-happy");
    let server = Server::start(&tenants(&prefix, ""));
    let work = tempfile::tempdir().unwrap();
    let dir = make_session(work.path(), "call-happy-1", 1, 400);
    let out = push(&server, &dir, TOKEN_A);
    assert!(
        out.status.success(),
        "{}\nserver log:\n{}",
        text(&out),
        server.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "archived");

    let get = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        "get /2026/11/23/call-happy-1/call-happy-1.tar.gz a.tgz\nget /2026/11/23/call-happy-1/info.json info.json\n",
        work.path(),
    );
    assert!(get.status.success(), "{}", text(&get));
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = Command::new("tar")
        .arg("xzf")
        .arg(work.path().join("a.tgz"))
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", text(&tar));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.path().join("info.json")).unwrap()).unwrap();
    for name in ALLOWED {
        let original = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(
            std::fs::read(unpacked.join(name)).unwrap(),
            original,
            "{name} round-trips"
        );
        assert_eq!(
            index["recvault"]["raw_files"][name]["sha256"],
            sha256(&original),
            "{name} hash in the index"
        );
    }
    assert_eq!(
        index["recvault"]["objects"]["call-happy-1.tar.gz"]["sha256"],
        sha256_file(&work.path().join("a.tgz"))
    );
    assert_eq!(
        index["recvault"]["streams"]["agent-audio.mjr"]["codec"],
        "pcmu"
    );
    assert_eq!(
        index["recvault"]["streams"]["user-video.mjr"]["packets"],
        200
    );
    assert_eq!(index["queue"], "sales", "the gateway's fields are kept");
    let spooled = server.dir.path().join("spool/acme/call-happy-1");
    assert!(
        !spooled.exists(),
        "the spool copy is removed once S3 has the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_ids_names_and_bodies_are_refused_clearly() {
    let prefix = unique_prefix("ingest-bad");
    let server = Server::start(&tenants(
        &prefix,
        "[limits]\ningest_max_file_bytes = 1048576\nban_after_failures = 1000\n",
    ));
    let work = tempfile::tempdir().unwrap();
    let dir = make_session(work.path(), "call-bad-1", 2, 50);
    let url = server.ingest_url();
    let file = dir.join("agent-audio.mjr");
    let put = |id: &str, name: &str, token: Option<&str>, data: &Path| {
        curl(
            "PUT",
            &format!("{url}/v1/sessions/{id}/files/{name}"),
            token,
            Some(data),
        )
    };

    assert_eq!(put("call-bad-1", "agent-audio.mjr", None, &file).0, 401);
    assert_eq!(
        put("call-bad-1", "agent-audio.mjr", Some("wrong"), &file).0,
        401
    );
    let (code, body) = put("call-bad-1", "agent-audio.mjr", Some(TOKEN_A), &file);
    assert_eq!(code, 201, "{body}");
    // Another tenant's token sees nothing of acme's session.
    assert_eq!(
        curl(
            "GET",
            &format!("{url}/v1/sessions/call-bad-1"),
            Some(TOKEN_B),
            None
        )
        .0,
        404
    );
    // Ids of the spool's own folders (a leading dot) are refused too.
    for id in [
        "..",
        "%2e%2e",
        "a%2Fb",
        "a%00b",
        "a\\b",
        &"x".repeat(129),
        ".archived",
        ".quarantine",
        ".trash-x",
    ] {
        let (code, body) = put(id, "agent-audio.mjr", Some(TOKEN_A), &file);
        assert_eq!(code, 400, "id {id:?}: {body}");
        assert!(body.contains("session id"), "{body}");
    }
    for name in ["../x", "evil.sh", "info.json.bak", "%2e%2e"] {
        let (code, body) = put("call-bad-1", name, Some(TOKEN_A), &file);
        assert!(code == 400 || code == 404, "name {name:?}: {code} {body}");
    }
    let big = write_file(work.path(), "big.bin", &vec![7u8; 2 * 1024 * 1024]);
    let (code, body) = put("call-bad-1", "user-audio.mjr", Some(TOKEN_A), &big);
    assert_eq!(code, 413, "{body}");
    // info.json has a cap of its own, far below the file limit.
    let padded = write_file(work.path(), "padded.json", &vec![b' '; 300 * 1024]);
    let (code, body) = put("call-bad-1", "info.json", Some(TOKEN_A), &padded);
    assert_eq!(code, 413, "{body}");
    assert!(
        body.contains("info.json may hold at most 262144 bytes"),
        "{body}"
    );

    // Garbage info.json: refused at complete, with the reason.
    let junk = write_file(work.path(), "junk.json", b"{not json");
    assert_eq!(put("call-bad-1", "info.json", Some(TOKEN_A), &junk).0, 201);
    let (code, body) = curl(
        "POST",
        &format!("{url}/v1/sessions/call-bad-1/complete"),
        Some(TOKEN_A),
        None,
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("info.json is not JSON"), "{body}");
    assert!(wait_status(
        &server,
        "call-bad-1",
        TOKEN_A,
        "failed",
        Duration::from_secs(5)
    )
    .contains("failed"));

    // Truncated and garbage MJR: archiving fails naming the file and the byte.
    for (id, damage) in [("call-trunc-1", "truncate"), ("call-junk-1", "garbage")] {
        let d = make_session(work.path(), id, 3, 50);
        let mjr = std::fs::read(d.join("user-audio.mjr")).unwrap();
        let broken = if damage == "truncate" {
            mjr[..mjr.len() - 7].to_vec()
        } else {
            b"RIFF....WAVEfmt junk".to_vec()
        };
        std::fs::write(d.join("user-audio.mjr"), broken).unwrap();
        let out = push(&server, &d, TOKEN_A);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("user-audio.mjr"), "{err}");
        let expect = if damage == "truncate" {
            "truncated at byte"
        } else {
            "not an MJR"
        };
        assert!(err.contains(expect), "{err}");
        assert!(
            server
                .dir
                .path()
                .join(format!("spool/acme/.quarantine/{id}/files/user-audio.mjr"))
                .exists(),
            "kept for an operator"
        );
    }
    assert_eq!(
        curl("GET", &format!("{url}/healthz"), None, None).0,
        200,
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_is_idempotent_and_different_bytes_conflict() {
    let prefix = unique_prefix("ingest-redeliver");
    let server = Server::start(&tenants(&prefix, ""));
    let work = tempfile::tempdir().unwrap();
    let dir = make_session(work.path(), "call-again-1", 4, 100);
    assert!(push(&server, &dir, TOKEN_A).status.success());
    let store = s3().store().await;
    let key = format!("{prefix}acme/sessions/2026/11/23/call-again-1/call-again-1.tar.gz");
    let before = store.head(&key).await.unwrap().unwrap();
    let again = push(&server, &dir, TOKEN_A);
    assert!(again.status.success(), "{}", text(&again));
    let after = store.head(&key).await.unwrap().unwrap();
    assert_eq!(before, after, "no second archive");

    // Same id, different bytes: 409 at upload, push fails with the reason.
    let mut mjr = std::fs::read(dir.join("agent-audio.mjr")).unwrap();
    let n = mjr.len();
    mjr[n - 1] ^= 0xff;
    std::fs::write(dir.join("agent-audio.mjr"), mjr).unwrap();
    let (code, body) = put_file(
        &server,
        "call-again-1",
        "agent-audio.mjr",
        TOKEN_A,
        &dir.join("agent-audio.mjr"),
    );
    assert_eq!(code, 409, "{body}");

    // Two concurrent completes of one session: both acknowledged, one archive.
    let d2 = make_session(work.path(), "call-twice-1", 5, 60);
    for name in ALLOWED {
        let (code, _) = put_file(&server, "call-twice-1", name, TOKEN_A, &d2.join(name));
        assert_eq!(code, 201);
    }
    let url = format!("{}/v1/sessions/call-twice-1/complete", server.ingest_url());
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| curl("POST", &url, Some(TOKEN_A), None));
        let b = s.spawn(|| curl("POST", &url, Some(TOKEN_A), None));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        (200..300).contains(&a.0) && (200..300).contains(&b.0),
        "{a:?} {b:?}"
    );
    assert!(wait_status(
        &server,
        "call-twice-1",
        TOKEN_A,
        "archived",
        Duration::from_secs(60)
    )
    .contains("archived"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_disk_answers_507_and_earlier_sessions_are_untouched() {
    let prefix = unique_prefix("ingest-floor");
    let config = tenants(&prefix, "");
    let server = Server::start(&config);
    let work = tempfile::tempdir().unwrap();
    let first = make_session(work.path(), "call-floor-1", 6, 60);
    assert!(push(&server, &first, TOKEN_A).status.success());
    let dir = server.kill9();
    // The same server, now with a floor no disk can meet.
    let server = Server::restart(
        dir,
        &tenants(
            &prefix,
            "[limits]\ningest_min_free_bytes = 1000000000000000000\n",
        ),
    );
    let second = make_session(work.path(), "call-floor-2", 7, 60);
    let (code, body) = put_file(
        &server,
        "call-floor-2",
        "info.json",
        TOKEN_A,
        &second.join("info.json"),
    );
    assert_eq!(code, 507, "{body}");
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        "ls /2026/11/23\n",
        work.path(),
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("call-floor-1") && !listing.contains("call-floor-2"),
        "{listing}"
    );
    assert!(wait_status(
        &server,
        "call-floor-1",
        TOKEN_A,
        "archived",
        Duration::from_secs(5)
    )
    .contains("archived"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_keeps_sessions_queued_until_storage_returns() {
    let prefix = unique_prefix("ingest-outage");
    let s3 = s3();
    // Storage is down: every connection to it is dropped unanswered.
    let outage = crate::faults::FaultProxy::start(&s3.endpoint);
    outage.inject(crate::faults::Rule::new(
        None,
        "",
        crate::faults::Fault::Reset,
    ));
    let server = Server::start_with(&format!(
        "{}\n{}",
        outage.storage_toml(s3),
        tenants(&prefix, "")
    ));
    let work = tempfile::tempdir().unwrap();
    let ids = ["call-out-1", "call-out-2"];
    for (i, id) in ids.iter().enumerate() {
        let dir = make_session(work.path(), id, 10 + i as u8, 80);
        for name in ALLOWED {
            let (code, body) = put_file(&server, id, name, TOKEN_A, &dir.join(name));
            assert_eq!(code, 201, "{body}");
        }
        let (code, body) = complete(&server, id, TOKEN_A);
        assert_eq!(code, 202, "accepted while storage is down: {body}");
    }
    std::thread::sleep(Duration::from_secs(3));
    for id in ids {
        let body = wait_status(&server, id, TOKEN_A, "archived", Duration::ZERO);
        assert!(
            body.contains("\"status\":\"archiving\"") || body.contains("\"status\":\"queued\""),
            "{body}"
        );
    }
    assert!(
        outage.faulted() > 0,
        "the archiver tried storage while it was down"
    );
    outage.clear();
    for id in ids {
        let body = wait_status(&server, id, TOKEN_A, "archived", Duration::from_secs(90));
        assert!(
            body.contains("\"status\":\"archived\""),
            "{id}: {body}\n{}",
            server.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_rides_out_throttling_500s_dropped_connections_and_a_black_hole_losing_nothing() {
    use crate::faults::{Fault, FaultProxy, Rule};
    let prefix = unique_prefix("ingest-faults");
    let s3 = s3();
    let proxy = FaultProxy::start(&s3.endpoint);
    // Each step of an archive meets a fault: the index lookup a dropped
    // connection, the upload's start a black hole, its part more 503s than
    // one request's attempts (so the whole session is retried), the index
    // write two 500s.
    let rules = [
        Rule::new(Some("GET"), "info.json", Fault::Reset).times(2),
        Rule::new(Some("POST"), "?uploads", Fault::BlackHole).times(1),
        Rule::new(Some("PUT"), "uploadId=", Fault::Status(503, "SlowDown")).times(5),
        Rule::new(
            Some("PUT"),
            "info.json",
            Fault::Status(500, "InternalError"),
        )
        .times(2),
    ];
    let injected: usize = rules.iter().map(|r| r.times.unwrap()).sum();
    for r in rules {
        proxy.inject(r);
    }
    let server = Server::start_with(&format!(
        "{}\n{}",
        proxy.storage_toml(s3),
        tenants(
            &prefix,
            "[limits]\nstorage_attempt_secs = 1\nstorage_timeout_secs = 5"
        )
    ));
    let work = tempfile::tempdir().unwrap();
    let id = "call-faults-1";
    let dir = make_session(work.path(), id, 3, 120);
    for name in ALLOWED {
        let (code, body) = put_file(&server, id, name, TOKEN_A, &dir.join(name));
        assert_eq!(code, 201, "{body}");
    }
    let (code, body) = complete(&server, id, TOKEN_A);
    assert_eq!(code, 202, "{body}");
    let body = wait_status(&server, id, TOKEN_A, "archived", Duration::from_secs(120));
    assert!(
        body.contains("\"status\":\"archived\""),
        "{body}\n{}",
        server.log()
    );
    assert_eq!(proxy.faulted(), injected, "every injected fault was met");
    assert!(server.log_shows("archiving failed; will retry"));
    // Nothing lost: the stored index names every file with its hash, and
    // the stored archive is the one it records.
    let store = s3.store().await;
    let keys = recvault::layout::SessionKeys::of_call(
        &format!("{prefix}acme/"),
        t("2026-11-23T10:00:00Z"),
        id,
    );
    let index: serde_json::Value = serde_json::from_slice(
        &recvault::store::read_all(store.as_ref(), &keys.index(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    for name in ALLOWED {
        assert_eq!(
            index["recvault"]["raw_files"][name]["sha256"],
            sha256(&std::fs::read(dir.join(name)).unwrap()),
            "{name}"
        );
    }
    let archive = recvault::store::read_all(store.as_ref(), &keys.archive(), 64 << 20)
        .await
        .unwrap();
    assert_eq!(
        index["recvault"]["objects"][format!("{id}.tar.gz")]["sha256"],
        sha256(&archive)
    );
    assert!(
        store.multipart_list(&prefix).await.unwrap().is_empty(),
        "the upload the retry replaced was aborted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_session() {
    use rand::Rng;
    let prefix = unique_prefix("ingest-crash");
    let config = tenants(&prefix, "");
    let work = tempfile::tempdir().unwrap();
    let names = ALLOWED;
    let sessions: Vec<(String, PathBuf)> = (0..16)
        .map(|i| {
            let id = format!("call-crash-{i}");
            let dir = make_session(work.path(), &id, 20 + i as u8, 3000 + i * 400);
            (id, dir)
        })
        .collect();
    // Gateway state: next request per session (files, then complete), and acknowledged completes.
    let mut next = vec![0usize; sessions.len()];
    let mut acked = vec![false; sessions.len()];
    let mut dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let iterations = 20;
    let mut kills_mid_request = 0;
    for _ in 0..iterations {
        let server = Server::restart(dir, &config);
        let url = server.ingest_url();
        // The kill comes from elsewhere, at a random moment: mid-upload, mid-archiving, or idle.
        let pid = server.pid();
        let delay = Duration::from_millis(rng.gen_range(20..800));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        });
        'send: for (i, (id, path)) in sessions.iter().enumerate() {
            while next[i] <= names.len() {
                let (code, _) = if next[i] < names.len() {
                    curl(
                        "PUT",
                        &format!("{url}/v1/sessions/{id}/files/{}", names[next[i]]),
                        Some(TOKEN_A),
                        Some(&path.join(names[next[i]])),
                    )
                } else {
                    curl(
                        "POST",
                        &format!("{url}/v1/sessions/{id}/complete"),
                        Some(TOKEN_A),
                        None,
                    )
                };
                if !(200..300).contains(&code) {
                    // The server died under this request: the gateway retries it after the restart.
                    kills_mid_request += 1;
                    break 'send;
                }
                if next[i] == names.len() {
                    acked[i] = true;
                }
                next[i] += 1;
            }
        }
        killer.join().unwrap();
        dir = server.kill9();
    }
    // Finish what the gateway had not finished, then let the archiver drain.
    let server = Server::restart(dir, &config);
    for (i, (id, path)) in sessions.iter().enumerate() {
        while next[i] <= names.len() {
            let (code, body) = if next[i] < names.len() {
                curl(
                    "PUT",
                    &format!(
                        "{}/v1/sessions/{id}/files/{}",
                        server.ingest_url(),
                        names[next[i]]
                    ),
                    Some(TOKEN_A),
                    Some(&path.join(names[next[i]])),
                )
            } else {
                complete(&server, id, TOKEN_A)
            };
            assert!((200..300).contains(&code), "{id}: {code} {body}");
            next[i] += 1;
        }
    }
    let store = s3().store().await;
    let acknowledged_during_kills = acked.iter().filter(|a| **a).count();
    for (id, path) in &sessions {
        let body = wait_status(&server, id, TOKEN_A, "archived", Duration::from_secs(120));
        assert!(
            body.contains("\"status\":\"archived\""),
            "{id}: {body}\n{}",
            server.log()
        );
        let key = format!("{prefix}acme/sessions/2026/11/23/{id}/{id}.tar.gz");
        let archive = recvault::store::read_all(store.as_ref(), &key, 1 << 30)
            .await
            .unwrap();
        let unpacked = work.path().join(format!("check-{id}"));
        std::fs::create_dir_all(&unpacked).unwrap();
        let tgz = write_file(work.path(), &format!("{id}.tgz"), &archive);
        assert!(Command::new("tar")
            .arg("xzf")
            .arg(&tgz)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .unwrap()
            .success());
        for name in names {
            assert_eq!(
                std::fs::read(unpacked.join(name)).unwrap(),
                std::fs::read(path.join(name)).unwrap(),
                "{id}/{name}"
            );
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(server.dir.path().join("spool/acme/.incoming"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "parts of cut-off uploads are cleaned: {leftovers:?}"
    );
    let spooled: Vec<_> = std::fs::read_dir(server.dir.path().join("spool/acme"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    assert!(
        spooled.is_empty(),
        "every spool copy is gone once archived: {spooled:?}"
    );
    eprintln!(
        "crash loop: {iterations} SIGKILLs ({kills_mid_request} cut a request short), {acknowledged_during_kills} of {} sessions acknowledged during the loop, all {} archived with correct bytes",
        sessions.len(),
        sessions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_tar_upload_archives_and_tar_slip_is_refused() {
    let prefix = unique_prefix("ingest-oneshot");
    let server = Server::start(&tenants(&prefix, ""));
    let work = tempfile::tempdir().unwrap();
    let dir = make_session(work.path(), "call-tar-1", 30, 120);
    let tarball = work.path().join("s.tar");
    assert!(Command::new("tar")
        .arg("cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let (code, body) = curl(
        "POST",
        &format!("{}/v1/sessions/call-tar-1", server.ingest_url()),
        Some(TOKEN_A),
        Some(&tarball),
    );
    assert_eq!(code, 202, "{body}");
    assert!(wait_status(
        &server,
        "call-tar-1",
        TOKEN_A,
        "archived",
        Duration::from_secs(60)
    )
    .contains("archived"));

    // Tar slip, links and foreign names: refused, nothing lands outside the spool.
    let evil = work.path().join("evil");
    std::fs::create_dir_all(evil.join("sub")).unwrap();
    std::fs::write(evil.join("sub/agent-audio.mjr"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", evil.join("info.json")).unwrap();
    std::fs::write(evil.join("notes.txt"), b"x").unwrap();
    let cases = [
        (
            vec![
                "--transform",
                "s,sub/agent-audio.mjr,../../escaped.mjr,",
                "-P",
                "sub/agent-audio.mjr",
            ],
            "escaped",
        ),
        (vec!["info.json"], "not a regular file"),
        (vec!["notes.txt"], "names must be one of"),
        (vec!["sub/agent-audio.mjr"], "names must be one of"),
    ];
    for (i, (args, why)) in cases.iter().enumerate() {
        let t = work.path().join(format!("evil-{i}.tar"));
        let out = Command::new("tar")
            .arg("cf")
            .arg(&t)
            .arg("-C")
            .arg(&evil)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let (code, body) = curl(
            "POST",
            &format!("{}/v1/sessions/evil-{i}", server.ingest_url()),
            Some(TOKEN_A),
            Some(&t),
        );
        assert_eq!(code, 400, "{args:?}: {body}");
        assert!(
            body.contains(why) || (*why == "escaped" && body.contains("names must be one of")),
            "{args:?}: {body}"
        );
    }
    let garbage = write_file(work.path(), "garbage.tar", &vec![0x5a; 4096]);
    let (code, _) = curl(
        "POST",
        &format!("{}/v1/sessions/evil-g", server.ingest_url()),
        Some(TOKEN_A),
        Some(&garbage),
    );
    assert_eq!(code, 400);
    let escaped: Vec<_> = walk(server.dir.path().parent().unwrap())
        .into_iter()
        .filter(|p| p.ends_with("escaped.mjr"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if p.components().count() < 12 {
                    out.extend(walk(&p));
                }
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_tls_and_plaintext_or_untrusted_clients_fail() {
    let prefix = unique_prefix("ingest-tls");
    let work = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        work.path().join("ca.pem"),
        work.path().join("cert.pem"),
        work.path().join("key.pem"),
    );
    let ext = write_file(
        work.path(),
        "leaf.ext",
        b"subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<String>> = vec![
        ["req", "-x509"]
            .iter()
            .chain(&ec)
            .chain(&["-days", "2", "-subj", "/CN=recvault test CA", "-keyout"])
            .map(|s| s.to_string())
            .chain([
                work.path().join("ca.key").display().to_string(),
                "-out".into(),
                ca.display().to_string(),
            ])
            .collect(),
        ["req"]
            .iter()
            .chain(&ec)
            .chain(&["-subj", "/CN=localhost", "-keyout"])
            .map(|s| s.to_string())
            .chain([
                key.display().to_string(),
                "-out".into(),
                work.path().join("leaf.csr").display().to_string(),
            ])
            .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                work.path().join("leaf.csr").display().to_string(),
                "-CA".into(),
                ca.display().to_string(),
                "-CAkey".into(),
                work.path().join("ca.key").display().to_string(),
                "-extfile".into(),
                ext.display().to_string(),
                "-out".into(),
                cert.display().to_string(),
            ])
            .collect(),
    ];
    for step in steps {
        let out = Command::new("openssl").args(&step).output().unwrap();
        assert!(out.status.success(), "openssl {step:?}: {}", text(&out));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let spool = work.path().join("spool");
    let ingest = |key: &Path| {
        format!("[ingest]\nlisten = \"127.0.0.1:0\"\nspool_dir = \"{}\"\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n", spool.display(), cert.display(), key.display())
    };
    let server = Server::start(&format!("{}\n{}", ingest(&key), tenants(&prefix, "")));
    let https = format!("https://127.0.0.1:{}", server.ingest_port);

    let ok = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .arg(format!("{https}/healthz"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "200");
    assert_eq!(
        curl(
            "GET",
            &format!("http://127.0.0.1:{}/healthz", server.ingest_port),
            None,
            None
        )
        .0,
        0,
        "plain HTTP is not served on a TLS port"
    );

    let dir = make_session(work.path(), "call-tls-1", 40, 60);
    let untrusted = Command::new(env!("CARGO_BIN_EXE_recvault"))
        .arg("push")
        .arg(&dir)
        .args(["--url", &https, "--token", TOKEN_A, "--wait", "10"])
        .output()
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "a server the client cannot verify is refused: {}",
        text(&untrusted)
    );
    let pushed = Command::new(env!("CARGO_BIN_EXE_recvault"))
        .arg("push")
        .arg(&dir)
        .args([
            "--url",
            &https,
            "--token",
            TOKEN_A,
            "--wait",
            "60",
            "--ca-file",
        ])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}\n{}",
        text(&pushed),
        server.log()
    );

    // A private key others can read is refused at start, with the fix named.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = work.path().join("loose.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n{}\n[sftp]\nlisten = \"127.0.0.1:0\"\nhost_key = \"{}\"\n",
            s3().storage_toml(),
            ingest(&key),
            work.path().join("hk").display()
        ),
    )
    .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_recvault"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("chmod 600"),
        "{}",
        text(&refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_ingest_tokens() {
    let prefix = unique_prefix("ingest-rotate");
    let server = Server::start(&tenants(&prefix, ""));
    let url = format!("{}/v1/sessions/nothing-yet", server.ingest_url());
    assert_eq!(
        curl("GET", &url, Some(TOKEN_A), None).0,
        404,
        "token A is accepted"
    );
    let rotated = "rotated-token-for-acme-fedcba9876543210";
    server.reload(&tenants(&prefix, "").replace(
        &recvault::ingest::token_hash(TOKEN_A),
        &recvault::ingest::token_hash(rotated),
    ));
    let mut switched = false;
    for _ in 0..100 {
        if curl("GET", &url, Some(rotated), None).0 == 404 {
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        switched,
        "the new token is accepted after SIGHUP:\n{}",
        server.log()
    );
    assert_eq!(
        curl("GET", &url, Some(TOKEN_A), None).0,
        401,
        "the old token is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ingest_token_is_audited_as_a_failed_login_and_earns_a_ban() {
    let prefix = unique_prefix("ingest-token-audit");
    let server = Server::start(&tenants(&prefix, "[limits]\nban_after_failures = 3\n"));
    let url = format!("{}/v1/sessions/call-x-1", server.ingest_url());
    assert_eq!(
        curl("GET", &url, Some(TOKEN_A), None).0,
        404,
        "a good token"
    );
    for _ in 0..2 {
        assert_eq!(curl("GET", &url, Some("guessed-token"), None).0, 401);
    }
    let audit = server.audit();
    let failed: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["event"] == "login" && e["protocol"] == "ingest")
        .collect();
    assert_eq!(failed.len(), 2, "one event per wrong token: {audit}");
    for e in &failed {
        assert_eq!(e["ok"], false);
        assert_eq!(e["method"], "bearer-token");
        assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
        assert!(
            !audit.contains("guessed-token"),
            "the token never reaches the trail"
        );
    }
    // The third failure bans the address: its next connection is dropped,
    // whatever the token.
    assert_eq!(curl("GET", &url, Some("guessed-token"), None).0, 401);
    assert_eq!(curl("GET", &url, Some(TOKEN_A), None).0, 0, "banned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_upload_in_flight_finish_and_acknowledges_it() {
    use std::io::{Read, Write};
    let prefix = unique_prefix("ingest-drain");
    let rest = tenants(&prefix, "");
    let mut server = Server::start(&rest);
    let data = pseudo_random(4 * 1024 * 1024, 7);
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", server.ingest_port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        sock,
        "PUT /v1/sessions/call-drain-1/files/agent-audio.mjr HTTP/1.1\r\nHost: rec\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .unwrap();
    let half = data.len() / 2;
    sock.write_all(&data[..half]).unwrap();
    sock.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.is_running(), "still draining the upload");
    // A new client is not let in any more.
    let (code, _) = curl(
        "GET",
        &format!("{}/healthz", server.ingest_url()),
        None,
        None,
    );
    assert_eq!(code, 0, "no new connections once stopping");
    sock.write_all(&data[half..]).unwrap();
    let mut reply = String::new();
    let _ = sock.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    assert!(reply.contains(&sha256(&data)), "{reply}");
    let start = Instant::now();
    while server.is_running() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!server.is_running(), "stopped once the upload was answered");
    // What was acknowledged is on the spool after a restart.
    let server = Server::restart(server.kill9(), &rest);
    let (code, body) = curl(
        "GET",
        &format!("{}/v1/sessions/call-drain-1", server.ingest_url()),
        Some(TOKEN_A),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["status"], "receiving");
    assert_eq!(st["files"]["agent-audio.mjr"]["sha256"], sha256(&data));
    assert_eq!(st["files"]["agent-audio.mjr"]["size"], data.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_changed_archive_and_a_missing_one_and_exits_1() {
    let prefix = unique_prefix("verify");
    let jobs = tempfile::tempdir().unwrap();
    let rest = tenants(
        &prefix,
        &format!("[jobs]\nstate_dir = \"{}\"\n", jobs.path().display()),
    );
    let server = Server::start(&rest);
    let work = tempfile::tempdir().unwrap();
    for (i, id) in ["call-ver-1", "call-ver-2", "call-ver-3"]
        .iter()
        .enumerate()
    {
        let out = push(
            &server,
            &make_session(work.path(), id, i as u8 + 4, 60),
            TOKEN_A,
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let config = server.dir.path().join("recvault.toml");
    let verify = |args: &[&str]| {
        recvault_command()
            .arg("verify")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("recvault verify")
    };
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("verify acme: 3 sessions checked, 0 mismatches"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verify bravo: 0 sessions checked, 0 mismatches"),
        "{stdout}"
    );

    // Change one archive (same size, other bytes) and delete another.
    let store = s3().store().await;
    let page = store
        .list_page(&format!("{prefix}acme/"), None, None)
        .await
        .unwrap();
    let archive = |id: &str| {
        page.objects
            .iter()
            .find(|o| o.key.ends_with(&format!("/{id}/{id}.tar.gz")))
            .map(|o| o.key.clone())
            .expect("archive stored")
    };
    let changed = archive("call-ver-1");
    let mut bytes = recvault::store::read_all(store.as_ref(), &changed, 1 << 30)
        .await
        .unwrap()
        .to_vec();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    store
        .put(&changed, bytes.into(), Default::default())
        .await
        .unwrap();
    store.delete(&archive("call-ver-2")).await.unwrap();

    let out = verify(&["--tenant", "acme", "--since", "2026-11-23"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0]
            .starts_with("MISMATCH acme /2026/11/23/call-ver-1: call-ver-1.tar.gz: SHA-256 is "),
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        "MISMATCH acme /2026/11/23/call-ver-2: call-ver-2.tar.gz is missing from storage"
    );
    assert_eq!(lines[2], "verify acme: 3 sessions checked, 2 mismatches");
    let audit = server.audit();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["event"] == "job"
            && e["finding"] == "call-ver-2.tar.gz is missing from storage"
            && e["kind"] == "verify"
            && e["path"] == "/2026/11/23/call-ver-2"
            && e["tenant"] == "acme"),
        "{audit}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "job_end" && e["complete"] == true && e["findings"] == 2),
        "{audit}"
    );

    // Days before --since are not read at all.
    let out = verify(&["--tenant", "acme", "--since", "2026-11-24"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 sessions checked"));

    let out = verify(&["--tenant", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no tenant \"nope\"") && err.contains("acme, bravo"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_on_a_trail_a_server_and_a_job_wrote_together_and_names_an_edited_line()
{
    let prefix = unique_prefix("audit-chain");
    let jobs = tempfile::tempdir().unwrap();
    let rest = tenants(
        &prefix,
        &format!("[jobs]\nstate_dir = \"{}\"\n", jobs.path().display()),
    );
    let mut server = Server::start(&rest);
    let work = tempfile::tempdir().unwrap();
    let out = push(
        &server,
        &make_session(work.path(), "call-aud-1", 4, 60),
        TOKEN_A,
    );
    assert!(out.status.success(), "{}", text(&out));
    let ls = || {
        let out = sftp_batch(server.port, "qa", client_key("qa"), "ls /\n", work.path());
        assert!(out.status.success(), "{}", text(&out));
    };
    ls();
    // A job run beside the server appends to the same file, between the
    // server's lines.
    let config = server.dir.path().join("recvault.toml");
    let job = recvault_command()
        .args(["verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(job.status.success(), "{}", text(&job));
    ls();
    ls();
    let audit_path = server.dir.path().join("audit.log");
    let check = |path: &Path| {
        recvault_command()
            .args(["audit", "verify"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = check(&audit_path);
    assert!(out.status.success(), "{}\n{}", text(&out), server.audit());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("intact: "),
        "{}",
        text(&out)
    );
    let trail = server.audit();
    assert!(trail.contains("\"event\":\"job_end\""), "{trail}");
    let lines: Vec<&str> = trail.lines().collect();
    let logins: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("\"event\":\"login\""))
        .collect();
    assert!(logins.len() >= 2, "{trail}");

    // Someone turns the first login into another user's.
    let i = logins[0];
    assert!(lines[i].contains("\"user\":\"qa\""), "{}", lines[i]);
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[i] = edited[i].replace("\"user\":\"qa\"", "\"user\":\"qb\"");
    let edited_path = work.path().join("edited.log");
    std::fs::write(&edited_path, edited.join("\n") + "\n").unwrap();
    let out = check(&edited_path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains(&format!(
            "edited.log:{}: its prev is not the SHA-256 of the line before it",
            i + 2
        )),
        "{said}"
    );
    // And a later login taken out (not the last line: a cut-off tail needs
    // the anchors, below).
    let mut cut: Vec<&str> = lines.clone();
    cut.remove(logins[1]);
    std::fs::write(&edited_path, cut.join("\n") + "\n").unwrap();
    let out = check(&edited_path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 line(s) missing"),
        "{}",
        text(&out)
    );

    // The stop anchors the chain's head in the bucket: with the config,
    // verify checks the files against it, and a cut-off tail shows.
    server.signal("TERM");
    let began = std::time::Instant::now();
    while server.is_running() && began.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let with_anchors = |path: &Path| {
        recvault_command()
            .args(["audit", "verify", "--config"])
            .arg(&config)
            .arg(path)
            .output()
            .unwrap()
    };
    let out = with_anchors(&audit_path);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("anchors in the bucket match") && !said.contains("; 0 anchors"),
        "{said}"
    );
    let trail = server.audit();
    let all: Vec<&str> = trail.lines().collect();
    std::fs::write(&edited_path, all[..all.len() - 1].join("\n") + "\n").unwrap();
    assert!(
        check(&edited_path).status.success(),
        "the chain alone cannot see a cut tail"
    );
    let out = with_anchors(&edited_path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("their tail was cut"),
        "{}",
        text(&out)
    );
}
