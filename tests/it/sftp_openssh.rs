//! OpenSSH `sftp -b` against recvault on moto: listings, downloads (byte
//! for byte), recursive get, resumed get, password logins.

use crate::harness::*;

const DAY: &str = "/2026/11/23";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_byte_identical_for_empty_and_small_objects() {
    let small = pseudo_random(1500, 1);
    let (server, key, work) = serve_sessions(
        "bytes",
        vec![
            (
                "empty-1",
                "2026-11-23T09:00:00Z",
                "2026-11-23T09:01:00Z",
                Vec::new(),
            ),
            (
                "small-1",
                "2026-11-23T10:00:00Z",
                "2026-11-23T10:07:00Z",
                small.clone(),
            ),
        ],
    )
    .await;
    let out = sftp_batch(
        server.port,
        "qa",
        key,
        &format!("ls -l {DAY}\nls -l {DAY}/small-1\nget {DAY}/empty-1/empty-1.tar.gz e.bin\nget {DAY}/small-1/small-1.tar.gz s.bin\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("empty-1") && stdout.contains("small-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" 1500 Nov 23 10:07 small-1.tar.gz"),
        "size and call-end time in ls -l:\n{stdout}"
    );
    assert!(!stdout.contains("1970"), "no epoch times:\n{stdout}");
    assert_eq!(
        std::fs::metadata(work.path().join("e.bin")).unwrap().len(),
        0
    );
    assert_eq!(sha256_file(&work.path().join("s.bin")), sha256(&small));
    let audit = server.audit();
    assert!(
        audit.contains("\"event\":\"download\"") && audit.contains("\"bytes\":1500"),
        "audit:\n{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_recording_downloads_byte_identical() {
    let big = pseudo_random(200 * 1024 * 1024, 7);
    let want = sha256(&big);
    let (server, key, work) = serve_sessions(
        "big",
        vec![("big-1", "2026-11-23T11:00:00Z", "2026-11-23T12:00:00Z", big)],
    )
    .await;
    let out = sftp_batch(
        server.port,
        "qa",
        key,
        &format!("get {DAY}/big-1/big-1.tar.gz big.bin\n"),
        work.path(),
    );
    assert!(
        out.status.success(),
        "{}\nserver log:\n{}",
        text(&out),
        server.log()
    );
    assert_eq!(
        std::fs::metadata(work.path().join("big.bin"))
            .unwrap()
            .len(),
        200 * 1024 * 1024
    );
    assert_eq!(sha256_file(&work.path().join("big.bin")), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_get_copies_a_whole_day() {
    let expected: Vec<(String, Vec<u8>)> = (0..4u64)
        .map(|i| {
            (
                format!("call-{i}"),
                pseudo_random(10_000 + i as usize * 333, i + 10),
            )
        })
        .collect();
    let times: Vec<(String, String)> = (0..4)
        .map(|i| {
            (
                format!("2026-11-23T0{i}:00:00Z"),
                format!("2026-11-23T0{i}:30:00Z"),
            )
        })
        .collect();
    let sessions = expected
        .iter()
        .zip(&times)
        .map(|((id, data), (a, b))| (id.as_str(), a.as_str(), b.as_str(), data.clone()))
        .collect();
    let (server, key, work) = serve_sessions("recursive", sessions).await;
    let out = sftp_batch(
        server.port,
        "qa",
        key,
        &format!("get -r {DAY} day\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    for (id, data) in &expected {
        let got = work.path().join(format!("day/{id}/{id}.tar.gz"));
        assert_eq!(sha256_file(&got), sha256(data), "{id}");
        let info =
            std::fs::read_to_string(work.path().join(format!("day/{id}/info.json"))).unwrap();
        assert!(
            info.contains(&format!("\"session_id\": \"{id}\"")),
            "{info}"
        );
        assert!(
            info.contains(&sha256(data)),
            "info.json lists the archive's SHA-256"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reget_resumes_an_interrupted_download() {
    let data = pseudo_random(8 * 1024 * 1024 + 123, 3);
    let (server, key, work) = serve_sessions(
        "reget",
        vec![(
            "long-1",
            "2026-11-23T09:00:00Z",
            "2026-11-23T09:45:00Z",
            data.clone(),
        )],
    )
    .await;
    // What an interrupted download leaves behind: the first 3 MiB.
    let partial = 3 * 1024 * 1024;
    write_file(work.path(), "long.bin", &data[..partial]);
    let out = sftp_batch(
        server.port,
        "qa",
        key,
        &format!("reget {DAY}/long-1/long-1.tar.gz long.bin\n"),
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha256_file(&work.path().join("long.bin")), sha256(&data));
    // The server sent only the missing part.
    let audit = server.audit();
    let served = (data.len() - partial).to_string();
    assert!(
        audit.contains(&format!("\"bytes\":{served}")),
        "expected {served} bytes served in audit:\n{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_are_stable_between_runs() {
    let (server, key, work) = serve_sessions(
        "stable",
        vec![(
            "s-1",
            "2026-11-23T09:00:00Z",
            "2026-11-23T09:10:00Z",
            pseudo_random(4096, 5),
        )],
    )
    .await;
    let batch = format!("ls -l /\nls -l /2026\nls -l /2026/11\nls -l {DAY}\nls -l {DAY}/s-1\n");
    let first = sftp_batch(server.port, "qa", key, &batch, work.path());
    assert!(first.status.success(), "{}", text(&first));
    let second = sftp_batch(server.port, "qa", key, &batch, work.path());
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&second.stdout)
    );
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(!out.contains("1970"), "{out}");
    assert!(out.contains("4096 Nov 23 09:10 s-1.tar.gz"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_works_and_wrong_password_fails() {
    let prefix = unique_prefix("password");
    let store = s3().store().await;
    seed(
        store.as_ref(),
        &prefix,
        "p-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:10:00Z",
        b"hello".to_vec(),
    )
    .await;
    let hash = recvault::password::hash("s3cret-Passw0rd").unwrap();
    let server = Server::start(&format!(
        "\n[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}\"\n\n[[tenants.users]]\nname = \"pw\"\npassword = \"{hash}\"\n"
    ));
    let work = tempfile::tempdir().unwrap();
    let ok = sftp_batch_password(
        server.port,
        "pw",
        "s3cret-Passw0rd",
        &format!("get {DAY}/p-1/p-1.tar.gz p.bin\n"),
        work.path(),
    );
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(std::fs::read(work.path().join("p.bin")).unwrap(), b"hello");
    let bad = sftp_batch_password(server.port, "pw", "wrong", "ls /\n", work.path());
    assert!(!bad.status.success(), "{}", text(&bad));
    let audit = server.audit();
    assert!(
        audit.contains("\"ok\":false") && audit.contains("\"ok\":true"),
        "{audit}"
    );
    assert!(
        !audit.contains("s3cret") && !server.log().contains("s3cret"),
        "passwords never reach logs"
    );
}
