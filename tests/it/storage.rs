//! The storage contract, run against S3 (moto, signature checks on).

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_meets_the_storage_contract() {
    let store = s3().store().await;
    let prefix = unique_prefix("contract");
    recvault::store::contract::run(store.as_ref(), &prefix).await;
    recvault::store::contract::marks(store.as_ref(), &prefix).await;
    // Encrypted, over S3: the same contract through the decorator.
    let prefix = unique_prefix("contract-sealed");
    let sealed = recvault::store::crypt::Crypt::new(
        store,
        "t",
        &prefix,
        recvault::crypto::keyset::Keyset::generate().unwrap(),
    )
    .unwrap();
    recvault::store::contract::run(&sealed, &prefix).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_storage_neither_stops_the_server_starting_nor_hangs_a_client() {
    let key = client_key("qa");
    // An S3 endpoint that accepts connections and never answers (a network
    // partition, a stuck proxy).
    let proxy = crate::faults::FaultProxy::start(&s3().endpoint);
    proxy.inject(crate::faults::Rule::new(
        None,
        "",
        crate::faults::Fault::BlackHole,
    ));
    let config = format!(
        "{}\n[limits]\nstorage_timeout_secs = 2\nstorage_stall_secs = 2\n{}",
        proxy.storage_toml(s3()),
        tenant_toml("acme", "p/", &[("qa", key, "password = \"x\"")]).replace(
            "password = \"x\"",
            &format!(
                "password = \"{}\"",
                recvault::password::hash("Bh-Passw0rd-1").unwrap()
            )
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
        let up = store.multipart_start(key, None).await.unwrap();
        store
            .multipart_part(key, &up, 1, bytes::Bytes::from_static(b"part"))
            .await
            .unwrap();
    }
    let foreign = format!("{prefix}elsewhere/x");
    let foreign_id = store.multipart_start(&foreign, None).await.unwrap();
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

// ---------------------------------------------------------------------------
// Storage faults through the fault proxy: what SFTP and FTPS clients see.

const FAULT_PW: &str = "Fault-Passw0rd-1";
const DAY: &str = "/2026/11/23";
const ARCHIVE: &str = "/2026/11/23/call-1/call-1.tar.gz";

/// A server whose storage is moto behind a fault proxy, holding one
/// session (`call-1`, a 1 MiB archive), no metadata cache (every request
/// reaches storage), an FTPS listener, and `limits` lines.
async fn behind_fault_proxy(
    test: &str,
    limits: &str,
) -> (Server, crate::faults::FaultProxy, Vec<u8>) {
    let prefix = unique_prefix(test);
    let archive = pseudo_random(1 << 20, 7);
    seed(
        s3().store().await.as_ref(),
        &prefix,
        "call-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        archive.clone(),
    )
    .await;
    let proxy = crate::faults::FaultProxy::start(&s3().endpoint);
    let password = format!(
        "password = \"{}\"",
        recvault::password::hash(FAULT_PW).unwrap()
    );
    let server = Server::start_with(&format!(
        "{}\n{}\n[limits]\nmetadata_cache_secs = 0\nlisting_fresh_ms = 0\n{limits}\n{}",
        proxy.storage_toml(s3()),
        ftps_toml(""),
        tenant_toml("acme", &prefix, &[("qa", client_key("qa"), &password)])
    ));
    (server, proxy, archive)
}

/// What a client does; each reaches storage in its own way.
#[derive(Debug, Clone, Copy)]
enum Op {
    SftpReaddir,
    /// Open and read, every request faulted (the open meets it first).
    SftpOpen,
    /// Open and read, only the archive's body faulted.
    SftpRead,
    FtpsMlsd,
    FtpsRetr,
}

const OPS: [Op; 5] = [
    Op::SftpReaddir,
    Op::SftpOpen,
    Op::SftpRead,
    Op::FtpsMlsd,
    Op::FtpsRetr,
];

impl Op {
    /// The requests a fault aims at: the archive's body for reads, any
    /// request for listings.
    fn target(self) -> &'static str {
        match self {
            Op::SftpRead | Op::FtpsRetr => "call-1.tar.gz",
            Op::SftpReaddir | Op::SftpOpen | Op::FtpsMlsd => "",
        }
    }

    /// The listing or the file's bytes, or the error the client was given.
    /// Succeeds only on a complete answer (SFTP EOF, FTP 226).
    async fn run(self, server: &Server) -> Result<Vec<u8>, String> {
        use crate::rawsftp::*;
        match self {
            Op::SftpReaddir | Op::SftpOpen | Op::SftpRead => {
                let mut h = connect(server.port).await;
                assert!(auth_password(&mut h, "qa", FAULT_PW).await);
                let (mut sftp, _) = RawSftp::start(&h).await;
                let mut out = Vec::new();
                if let Op::SftpReaddir = self {
                    let dir = sftp
                        .opendir(DAY.as_bytes())
                        .await
                        .map_err(|(c, m)| format!("opendir: {c} {m}"))?;
                    loop {
                        let r = sftp.request(FXP_READDIR, |b| put_string(b, &dir)).await;
                        if r.ty == FXP_NAME {
                            let mut b = r.body.clone();
                            use bytes::Buf;
                            for _ in 0..b.get_u32() {
                                out.extend_from_slice(get_string(&mut b).as_bytes());
                                out.push(b'\n');
                                get_string(&mut b);
                                get_attrs(&mut b);
                            }
                            continue;
                        }
                        return match r.status().expect("a status") {
                            (FX_EOF, _) => Ok(out),
                            (c, m) => Err(format!("readdir: {c} {m}")),
                        };
                    }
                }
                let file = sftp
                    .open(ARCHIVE.as_bytes(), 1)
                    .await
                    .map_err(|(c, m)| format!("open: {c} {m}"))?;
                loop {
                    match sftp.read(&file, out.len() as u64, 32 * 1024).await {
                        Ok(data) => out.extend_from_slice(&data),
                        Err((FX_EOF, _)) => return Ok(out),
                        Err((c, m)) => return Err(format!("read: {c} {m}")),
                    }
                }
            }
            Op::FtpsMlsd | Op::FtpsRetr => {
                let mut ftp = crate::rawftp::RawFtp::login(server.ftps_port, "qa", FAULT_PW).await;
                let command = match self {
                    Op::FtpsMlsd => format!("MLSD {DAY}"),
                    _ => format!("RETR {ARCHIVE}"),
                };
                let (data, reply) = ftp.data_cmd(&command).await;
                match reply.code {
                    226 => Ok(data),
                    c => Err(format!("{c} {}", reply.text)),
                }
            }
        }
    }

    fn check(self, got: &[u8], archive: &[u8]) {
        match self {
            Op::SftpOpen | Op::SftpRead | Op::FtpsRetr => {
                assert!(
                    got == archive,
                    "{self:?}: {} bytes, not the archive",
                    got.len()
                )
            }
            Op::SftpReaddir | Op::FtpsMlsd => assert!(
                String::from_utf8_lossy(got).contains("call-1"),
                "{self:?}: {}",
                String::from_utf8_lossy(got)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_throttling_and_500s_are_retried_without_sftp_or_ftps_clients_noticing() {
    use crate::faults::{Fault, Rule};
    let (server, proxy, archive) = behind_fault_proxy("fault-retry", "").await;
    for fault in [
        Fault::Status(503, "SlowDown"),
        Fault::Status(500, "InternalError"),
    ] {
        for op in OPS {
            let before = proxy.faulted();
            proxy.inject(Rule::new(None, op.target(), fault.clone()).times(2));
            let got = op
                .run(&server)
                .await
                .unwrap_or_else(|e| panic!("{op:?} under {fault:?}: {e}\n{}", server.log()));
            op.check(&got, &archive);
            assert_eq!(
                proxy.faulted() - before,
                2,
                "{op:?}: both injected {fault:?} answers reached recvault"
            );
            proxy.clear();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_that_keeps_failing_or_never_answers_gives_clients_a_clear_try_again_error() {
    use crate::faults::{Fault, Rule};
    let (server, proxy, archive) = behind_fault_proxy(
        "fault-persistent",
        "storage_attempt_secs = 1\nstorage_timeout_secs = 3\nstorage_stall_secs = 3",
    )
    .await;
    for fault in [
        Fault::Status(503, "SlowDown"),
        Fault::Status(500, "InternalError"),
        Fault::BlackHole,
    ] {
        for op in OPS {
            proxy.inject(Rule::new(None, op.target(), fault.clone()));
            let began = std::time::Instant::now();
            let err = match op.run(&server).await {
                Ok(got) => panic!("{op:?} under {fault:?} succeeded with {} bytes", got.len()),
                Err(e) => e,
            };
            eprintln!(
                "{op:?} under {fault:?}: error after {:.1} s: {err}",
                began.elapsed().as_secs_f64()
            );
            let code = match op {
                Op::SftpReaddir | Op::SftpOpen | Op::SftpRead => "4 ",
                Op::FtpsMlsd | Op::FtpsRetr => "451 ",
            };
            assert!(err.contains(code), "{op:?} under {fault:?}: {err}");
            assert!(
                err.contains("try again later"),
                "{op:?} under {fault:?}: {err}"
            );
            if let Op::SftpRead = op {
                assert!(
                    err.starts_with("read:"),
                    "the open needs no archive byte: {err}"
                );
            }
            proxy.clear();
            // Storage is back: the same request works, on the same server.
            let got = op
                .run(&server)
                .await
                .unwrap_or_else(|e| panic!("{op:?} after {fault:?} cleared: {e}"));
            op.check(&got, &archive);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_body_cut_mid_stream_is_never_a_short_success() {
    use crate::faults::{Fault, Rule};
    let (server, proxy, archive) = behind_fault_proxy("fault-cut", "").await;
    for op in [Op::SftpRead, Op::FtpsRetr] {
        proxy.inject(Rule::new(Some("GET"), op.target(), Fault::CutBody(300_000)));
        let err = match op.run(&server).await {
            Ok(got) => panic!(
                "{op:?}: a success with {} of {} bytes",
                got.len(),
                archive.len()
            ),
            Err(e) => e,
        };
        let cut: Vec<_> = proxy
            .seen()
            .into_iter()
            .filter(|s| s.fault.is_some())
            .collect();
        assert!(!cut.is_empty());
        assert!(
            cut.iter()
                .all(|s| s.method == "GET" && s.path.contains("call-1.tar.gz")),
            "only the archive's body was cut: {cut:?}"
        );
        let code = match op {
            Op::SftpRead => "read: 4 ",
            _ => "451 ",
        };
        assert!(err.starts_with(code), "{op:?}: {err}");
        assert!(err.contains("try again later"), "{op:?}: {err}");
        proxy.clear();
        let got = op.run(&server).await.expect("whole once storage is well");
        op.check(&got, &archive);
    }
}

/// The conditional-write self-test at start: moto honours `If-None-Match`
/// and `If-Match` and the log says so; behind a proxy that answers a
/// refused condition with 200 (a store that ignores them), the log warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_self_test_tells_a_store_that_ignores_conditional_writes() {
    let wait_for = |server: &Server, needle: &str| {
        for _ in 0..200 {
            if server.log_shows(needle) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    };
    let prefix = unique_prefix("selftest");
    let tenant = tenant_toml("acme", &prefix, &[]);
    let server = Server::start(&tenant);
    assert!(
        wait_for(&server, "storage honours conditional writes"),
        "{}",
        server.log()
    );
    drop(server);
    let proxy = crate::faults::FaultProxy::start(&s3().endpoint);
    proxy.inject(crate::faults::Rule::new(
        Some("PUT"),
        "selftest-",
        crate::faults::Fault::IgnoreConditions,
    ));
    let server = Server::start_with(&format!("{}\n{tenant}", proxy.storage_toml(s3())));
    assert!(
        wait_for(&server, "storage IGNORES conditional writes"),
        "{}",
        server.log()
    );
    assert!(server.log_shows("if_none_match=false"), "{}", server.log());
}
