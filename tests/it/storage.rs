//! The storage contract, run against S3 (moto, signature checks on).

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_meets_the_storage_contract() {
    let store = s3().store().await;
    recvault::store::contract::run(store.as_ref(), &unique_prefix("contract")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_wrong_credentials_fails_cleanly_and_the_server_says_so() {
    let prefix = unique_prefix("badcreds");
    let s3 = s3();
    let cfg = recvault::config::parse(&s3.storage_toml(), "test")
        .unwrap()
        .storage;
    let bad =
        recvault::store::s3::S3Store::connect_with_key(&cfg, &s3.access_key, "not-the-secret")
            .await
            .unwrap();
    let err = recvault::store::ObjectStore::head(&bad, &format!("{prefix}x"))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "a signature error is permanent: {err}");
    assert!(
        err.to_string().contains("SignatureDoesNotMatch") || err.to_string().contains("403"),
        "{err}"
    );
}

/// An S3 endpoint that accepts connections and never answers (a network
/// partition, a stuck proxy): it reads and discards what it is sent.
fn black_hole() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::Read;
                let mut conn = conn;
                let mut sink = [0u8; 4096];
                while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_storage_neither_stops_the_server_starting_nor_hangs_a_client() {
    let key = client_key("qa");
    let config = format!(
        "[storage]\nbackend = \"s3\"\nbucket = \"b\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\n\n[limits]\nstorage_timeout_secs = 2\nstorage_stall_secs = 2\n{}",
        black_hole(),
        tenant_toml("acme", "p/", &[("qa", key, "password = \"x\"")]).replace(
            "password = \"x\"",
            &format!("password = \"{}\"", recvault::password::hash("Bh-Passw0rd-1").unwrap())
        )
    );
    // It binds its listeners although its storage check never returns.
    let server = Server::start_with(&config);

    // SFTP: a listing fails with the reason, within the limit.
    let began = std::time::Instant::now();
    let mut h = crate::rawsftp::connect(server.port).await;
    assert!(crate::rawsftp::auth_password(&mut h, "qa", "Bh-Passw0rd-1").await);
    let (mut sftp, _) = crate::rawsftp::RawSftp::start(&h).await;
    let opened = sftp.opendir(b"/").await;
    let (code, message) = match opened {
        // The listing may open lazily; its first page asks storage.
        Ok(handle) => {
            let r = sftp
                .request(crate::rawsftp::FXP_READDIR, |b| {
                    crate::rawsftp::put_string(b, &handle)
                })
                .await;
            r.status().expect("a status")
        }
        Err(e) => e,
    };
    let sftp_wait = began.elapsed();
    assert_eq!(code, crate::rawsftp::FX_FAILURE, "{message}");
    assert!(message.contains("try again later"), "{message}");

    // FTPS: LIST ends with 451 and the reason.
    let began = std::time::Instant::now();
    let mut ftp = crate::rawftp::RawFtp::login(server.ftps_port, "qa", "Bh-Passw0rd-1").await;
    let (_, reply) = ftp.data_cmd("LIST /2026").await;
    let ftps_wait = began.elapsed();
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text.contains("try again later"), "{reply:?}");
    // The operator's log says which operation and which limit.
    assert!(server.log_shows("storage_timeout_secs"));
    let log = server.log();
    assert!(
        log.contains("storage did not answer LIST p/") && log.contains("storage_timeout_secs"),
        "{log}"
    );
    eprintln!(
        "black-holed storage, limit 2 s: SFTP error after {:.1} s, FTPS 451 after {:.1} s",
        sftp_wait.as_secs_f64(),
        ftps_wait.as_secs_f64()
    );
    // And the server still serves: another login works.
    let mut again = crate::rawsftp::connect(server.port).await;
    assert!(crate::rawsftp::auth_password(&mut again, "qa", "Bh-Passw0rd-1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_uploads_of_a_dead_process_are_aborted_at_start() {
    let prefix = unique_prefix("orphans");
    let store = s3().store().await;
    // A render and an archive cut off mid-upload, and an upload outside
    // every tenant's prefix (not ours).
    let ours = [
        format!("{prefix}acme/2026/11/23/c-1/c-1.tar.gz"),
        format!("{prefix}acme/2026/11/23/c-1/derived/c-1.mp4"),
    ];
    for key in &ours {
        let up = store.multipart_start(key).await.unwrap();
        store
            .multipart_part(key, &up, 1, bytes::Bytes::from_static(b"part"))
            .await
            .unwrap();
    }
    let foreign = format!("{prefix}elsewhere/x");
    let foreign_id = store.multipart_start(&foreign).await.unwrap();
    assert_eq!(store.multipart_list(&prefix).await.unwrap().len(), 3);

    let key = client_key("qa");
    let server = Server::start(&format!(
        "[limits]\norphan_upload_age_secs = 0\n{}",
        tenant_toml("acme", &format!("{prefix}acme/"), &[("qa", key, "")])
    ));
    let mut left = Vec::new();
    for _ in 0..200 {
        left = store.multipart_list(&prefix).await.unwrap();
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        left.iter()
            .map(|u| (u.key.clone(), u.id.clone()))
            .collect::<Vec<_>>(),
        [(foreign.clone(), foreign_id.clone())],
        "{}",
        server.log()
    );
    assert!(
        server
            .log()
            .contains("aborted unfinished multipart uploads"),
        "{}",
        server.log()
    );
    store.multipart_abort(&foreign, &foreign_id).await.unwrap();
}
