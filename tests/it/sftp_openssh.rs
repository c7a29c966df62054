//! OpenSSH `sftp -b` against recvault on moto: listings, downloads (byte
//! for byte), recursive get, resumed get, password logins.

use crate::harness::*;

const DAY: &str = "/2026/11/23";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_byte_identical_for_empty_and_small_objects() {
    let prefix = unique_prefix("bytes");
    let store = s3().store().await;
    let small = pseudo_random(1500, 1);
    seed(
        store.as_ref(),
        &prefix,
        "empty-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:01:00Z",
        Vec::new(),
    )
    .await;
    seed(
        store.as_ref(),
        &prefix,
        "small-1",
        "2026-11-23T10:00:00Z",
        "2026-11-23T10:07:00Z",
        small.clone(),
    )
    .await;
    let key = client_key("qa");
    let server = Server::start(&tenant_toml("acme", &prefix, &[("qa", key, "")]));
    let work = tempfile::tempdir().unwrap();
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
    let prefix = unique_prefix("big");
    let store = s3().store().await;
    let big = pseudo_random(200 * 1024 * 1024, 7);
    let want = sha256(&big);
    seed(
        store.as_ref(),
        &prefix,
        "big-1",
        "2026-11-23T11:00:00Z",
        "2026-11-23T12:00:00Z",
        big,
    )
    .await;
    let key = client_key("qa");
    let server = Server::start(&tenant_toml("acme", &prefix, &[("qa", key, "")]));
    let work = tempfile::tempdir().unwrap();
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
    let prefix = unique_prefix("recursive");
    let store = s3().store().await;
    let mut expected = Vec::new();
    for i in 0..4u64 {
        let id = format!("call-{i}");
        let data = pseudo_random(10_000 + i as usize * 333, i + 10);
        seed(
            store.as_ref(),
            &prefix,
            &id,
            &format!("2026-11-23T0{i}:00:00Z"),
            &format!("2026-11-23T0{i}:30:00Z"),
            data.clone(),
        )
        .await;
        expected.push((id, data));
    }
    let key = client_key("qa");
    let server = Server::start(&tenant_toml("acme", &prefix, &[("qa", key, "")]));
    let work = tempfile::tempdir().unwrap();
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
    let prefix = unique_prefix("reget");
    let store = s3().store().await;
    let data = pseudo_random(8 * 1024 * 1024 + 123, 3);
    seed(
        store.as_ref(),
        &prefix,
        "long-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:45:00Z",
        data.clone(),
    )
    .await;
    let key = client_key("qa");
    let server = Server::start(&tenant_toml("acme", &prefix, &[("qa", key, "")]));
    let work = tempfile::tempdir().unwrap();
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
    let prefix = unique_prefix("stable");
    let store = s3().store().await;
    seed(
        store.as_ref(),
        &prefix,
        "s-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:10:00Z",
        pseudo_random(4096, 5),
    )
    .await;
    let key = client_key("qa");
    let server = Server::start(&tenant_toml("acme", &prefix, &[("qa", key, "")]));
    let work = tempfile::tempdir().unwrap();
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
    let hash = recvault::auth::password::hash("s3cret-Passw0rd").unwrap();
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
