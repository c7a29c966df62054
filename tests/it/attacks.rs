//! Security tests, each named after the attack it stops.

use std::time::Duration;

use crate::harness::*;
use crate::rawsftp::*;

const DAY: &str = "/2026/11/23";

/// acme (prefix P) and acme2 (prefix P + "2/", a sibling sharing its stem)
/// each with one session; returns (server, acme prefix).
async fn two_tenants(test: &str, extra_limits: &str) -> (Server, String) {
    let base = unique_prefix(test);
    let acme = format!("{base}acme/");
    let acme2 = format!("{base}acme2/");
    let store = s3().store().await;
    seed(
        store.as_ref(),
        &acme,
        "mine-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        b"acme data".to_vec(),
    )
    .await;
    seed(
        store.as_ref(),
        &acme,
        "old-1",
        "2026-10-01T09:00:00Z",
        "2026-10-01T09:05:00Z",
        b"october".to_vec(),
    )
    .await;
    seed(
        store.as_ref(),
        &acme2,
        "secret-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        b"acme2 secret".to_vec(),
    )
    .await;
    let config = format!(
        "{extra_limits}\n{}\n{}",
        tenant_toml(
            "acme",
            &acme,
            &[
                ("qa", client_key("qa"), ""),
                ("scoped", client_key("scoped"), "scope = \"/2026/11\"")
            ]
        ),
        tenant_toml("acme2", &acme2, &[("qa2", client_key("qa2"), "")])
    );
    (Server::start(&config), acme)
}

async fn login(port: u16, user: &str) -> (russh::client::Handle<AcceptAnyHost>, RawSftp) {
    let mut h = connect(port).await;
    assert!(
        auth_key(&mut h, user, client_key(user)).await,
        "login {user}"
    );
    let (s, _) = RawSftp::start(&h).await;
    (h, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_never_leaves_the_tenant() {
    let (server, acme_prefix) = two_tenants("traversal", "").await;
    let (_h, mut s) = login(server.port, "qa").await;
    let long_name = "a".repeat(200);
    let very_long = "/x".repeat(5000);
    let table: Vec<Vec<u8>> = vec![
        b"..".to_vec(),
        b"../../x".to_vec(),
        b"/a/../../b".to_vec(),
        b"//".to_vec(),
        b"\\".to_vec(),
        b"..\\..\\x".to_vec(),
        b"%2e%2e".to_vec(),
        b"%2e%2e/%2e%2e/acme2".to_vec(),
        b"/2026/11/23/\0/../../..".to_vec(),
        b"a\0b".to_vec(),
        b"/2026/11/23/".to_vec(),
        b"/2026/11/23/mine-1/".to_vec(),
        long_name.as_bytes().to_vec(),
        very_long.as_bytes().to_vec(),
        b"../acme2/sessions/2026/11/23/secret-1/secret-1.tar.gz".to_vec(),
        b"/../../../acme2/sessions/2026/11/23/secret-1/info.json".to_vec(),
        format!("/{acme_prefix}sessions").into_bytes(),
        b"/2026/11/23/secret-1/secret-1.tar.gz".to_vec(),
        b"/2026/11/23/mine-1/derived".to_vec(),
        b"/\xff\xfe".to_vec(),
    ];
    for raw in &table {
        let shown = String::from_utf8_lossy(raw)
            .chars()
            .take(60)
            .collect::<String>();
        match s.realpath(raw).await {
            Ok(p) => {
                assert!(p.starts_with('/'), "{shown:?} -> {p}");
                let asked = String::from_utf8_lossy(raw);
                assert!(!p.contains(".."), "{shown:?} -> {p}");
                assert!(
                    asked.contains(&acme_prefix) || !p.contains(&acme_prefix),
                    "realpath leaks the prefix: {shown:?} -> {p}"
                );
            }
            Err((code, msg)) => assert!(
                code == FX_NO_SUCH_FILE || code == 4,
                "{shown:?}: {code} {msg}"
            ),
        }
        if let Ok(a) = s.stat(raw).await {
            // Only the tenant's own folders can stat.
            assert_eq!(
                a.permissions & 0o170000,
                0o040000,
                "{shown:?} stat'ed a file"
            );
        }
        if let Ok(names) = s.list(raw).await {
            assert!(
                !names.iter().any(|n| n.contains("secret")),
                "{shown:?} listed acme2: {names:?}"
            );
        }
        if let Ok(h) = s.open(raw, 1).await {
            let data = s.read(&h, 0, 4096).await.unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&data).contains("secret"),
                "{shown:?} read acme2"
            );
        }
    }
    // Every one of those left the server serving.
    let (_h2, mut s2) = login(server.port, "qa").await;
    assert_eq!(s2.list(DAY.as_bytes()).await.unwrap(), ["mine-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_between_prefixes_sharing_a_stem() {
    let (server, _) = two_tenants("isolation", "").await;
    let work = tempfile::tempdir().unwrap();
    let a = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("ls {DAY}\n"),
        work.path(),
    );
    assert!(a.status.success(), "{}", text(&a));
    let out = String::from_utf8_lossy(&a.stdout);
    assert!(out.contains("mine-1") && !out.contains("secret"), "{out}");
    let b = sftp_batch(
        server.port,
        "qa2",
        client_key("qa2"),
        &format!("ls {DAY}\nget {DAY}/secret-1/secret-1.tar.gz s.bin\n"),
        work.path(),
    );
    assert!(b.status.success(), "{}", text(&b));
    assert!(!String::from_utf8_lossy(&b.stdout).contains("mine-1"));
    assert_eq!(
        std::fs::read(work.path().join("s.bin")).unwrap(),
        b"acme2 secret"
    );
    let stolen = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("get {DAY}/secret-1/secret-1.tar.gz x.bin\n"),
        work.path(),
    );
    assert!(
        !stolen.status.success(),
        "acme's user must not reach acme2's session"
    );
    assert!(!work.path().join("x.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_escape_is_confined_to_the_users_folder() {
    let (server, _) = two_tenants("scope", "").await;
    let (_h, mut s) = login(server.port, "scoped").await;
    assert_eq!(s.list(b"/").await.unwrap(), ["23"]);
    assert_eq!(s.list(b"/../..").await.unwrap(), ["23"]);
    assert_eq!(s.realpath(b"../../..").await.unwrap(), "/");
    assert!(
        s.stat(b"/10/01/old-1").await.is_err(),
        "October is outside the scope"
    );
    assert!(s.stat(b"/2026/10").await.is_err());
    let h = s
        .open(b"/23/mine-1/mine-1.tar.gz", 1)
        .await
        .expect("own file opens");
    assert_eq!(&s.read(&h, 0, 100).await.unwrap()[..], b"acme data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_changes_are_refused_but_setstat_is_a_no_op() {
    let (server, _) = two_tenants("readonly", "").await;
    let (_h, mut s) = login(server.port, "qa").await;
    let file = b"/2026/11/23/mine-1/mine-1.tar.gz";
    let denied =
        |r: Reply| assert_eq!(r.status().map(|s| s.0), Some(FX_PERMISSION_DENIED), "{r:?}");
    // OPEN for write, create, truncate.
    for flags in [2u32, 0x08 | 0x02, 0x10 | 0x02, 0x04 | 0x02] {
        assert_eq!(
            s.open(file, flags).await.err().map(|e| e.0),
            Some(FX_PERMISSION_DENIED),
            "flags {flags:#x}"
        );
    }
    denied(s.path_request(FXP_MKDIR, b"/newdir").await);
    denied(s.path_request(FXP_REMOVE, file).await);
    denied(
        s.request(FXP_RENAME, |b| {
            put_string(b, file);
            put_string(b, b"/x");
        })
        .await,
    );
    denied(
        s.request(FXP_SYMLINK, |b| {
            put_string(b, b"/l");
            put_string(b, file);
        })
        .await,
    );
    let h = s.open(file, 1).await.unwrap();
    denied(
        s.request(FXP_WRITE, |b| {
            put_string(b, &h);
            bytes::BufMut::put_u64(b, 0);
            put_string(b, b"overwrite");
        })
        .await,
    );
    let setstat = s
        .request(FXP_SETSTAT, |b| {
            put_string(b, file);
            bytes::BufMut::put_u32(b, 8);
            bytes::BufMut::put_u32(b, 0);
            bytes::BufMut::put_u32(b, 0);
        })
        .await;
    assert_eq!(setstat.status().map(|s| s.0), Some(FX_OK));
    assert_eq!(
        &s.read(&h, 0, 100).await.unwrap()[..],
        b"acme data",
        "content unchanged"
    );
    // And with OpenSSH's client.
    let work = tempfile::tempdir().unwrap();
    write_file(work.path(), "up.txt", b"upload");
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("put up.txt {DAY}/mine-1/up.txt\n"),
        work.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_shell_and_port_forwarding_are_refused() {
    let (server, _) = two_tenants("exec", "").await;
    // OpenSSH: a command must not run.
    let marker = tempfile::tempdir().unwrap();
    let target = marker.path().join("pwned");
    let out = std::process::Command::new("ssh")
        .args(OPENSSH_OPTS)
        .args(["-o", "BatchMode=yes", "-i"])
        .arg(&client_key("qa").private)
        .arg("-p")
        .arg(server.port.to_string())
        .arg("qa@127.0.0.1")
        .arg(format!("touch {}", target.display()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!target.exists());

    let (h, _) = login(server.port, "qa").await;
    for what in ["exec", "shell"] {
        let mut ch = h.channel_open_session().await.unwrap();
        if what == "exec" {
            ch.exec(true, "id").await.unwrap();
        } else {
            ch.request_shell(true).await.unwrap();
        }
        let mut refused = false;
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(10), ch.wait()).await {
            match msg {
                russh::ChannelMsg::Failure => refused = true,
                russh::ChannelMsg::Success => panic!("{what} was accepted"),
                russh::ChannelMsg::Data { data } => panic!(
                    "{what} produced output: {:?}",
                    String::from_utf8_lossy(&data)
                ),
                russh::ChannelMsg::Close => break,
                _ => {}
            }
        }
        assert!(refused, "{what} not refused");
    }
    assert!(
        h.channel_open_direct_tcpip("127.0.0.1", server.port as u32, "127.0.0.1", 5555)
            .await
            .is_err(),
        "local forwarding"
    );
    assert!(
        h.tcpip_forward("127.0.0.1", 0).await.is_err(),
        "remote forwarding"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_sftp_packet_closes_the_channel_and_the_server_keeps_serving() {
    let (mut server, _) = two_tenants("oversize", "").await;
    let (_h, mut s) = login(server.port, "qa").await;
    // A packet declaring 4 GiB - 1 bytes, followed by a little data.
    s.send_raw(&[0xff, 0xff, 0xff, 0xff, 17, 0, 0, 0, 1])
        .await
        .unwrap();
    assert!(s.recv().await.is_none(), "the channel must be closed");
    assert!(server.is_running());
    let (_h2, mut s2) = login(server.port, "qa").await;
    assert_eq!(s2.list(DAY.as_bytes()).await.unwrap(), ["mine-1"]);
    assert!(
        server.log_shows("SFTP packet length out of bounds"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sftp_requests_get_bad_message_and_the_session_goes_on() {
    let (server, _) = two_tenants("malformed", "").await;
    let (_h, mut s) = login(server.port, "qa").await;
    // Unknown type, then a STAT whose string length runs past the packet.
    s.send_raw(&[0, 0, 0, 5, 250, 0, 0, 0, 9]).await.unwrap();
    let r = s.recv().await.unwrap();
    assert_eq!((r.id, r.status().map(|s| s.0)), (9, Some(5)));
    s.send_raw(&[0, 0, 0, 9, FXP_STAT, 0, 0, 0, 10, 0xff, 0, 0, 0])
        .await
        .unwrap();
    let r = s.recv().await.unwrap();
    assert_eq!((r.id, r.status().map(|s| s.0)), (10, Some(5)));
    assert_eq!(s.list(DAY.as_bytes()).await.unwrap(), ["mine-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_password_guessing_gets_the_address_banned() {
    let prefix = unique_prefix("bruteforce");
    let store = s3().store().await;
    seed(
        store.as_ref(),
        &prefix,
        "b-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        b"x".to_vec(),
    )
    .await;
    let hash = recvault::password::hash("right-password").unwrap();
    let server = Server::start(&format!(
        "[limits]\nban_after_failures = 4\nban_secs = 300\nauth_reject_ms = 0\nmax_auth_attempts = 2\n\n[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}\"\n\n[[tenants.users]]\nname = \"pw\"\npassword = \"{hash}\"\n"
    ));
    // Four wrong guesses over two connections (two attempts each).
    for _ in 0..2 {
        let mut h = connect(server.port).await;
        for _ in 0..2 {
            assert!(!auth_password(&mut h, "pw", "guess").await);
        }
    }
    // Now even the right password from this address is refused: the connection is dropped.
    let banned = tokio::time::timeout(Duration::from_secs(20), async {
        let cfg = std::sync::Arc::new(russh::client::Config::default());
        match russh::client::connect(cfg, ("127.0.0.1", server.port), AcceptAnyHost).await {
            Ok(mut h) => auth_password(&mut h, "pw", "right-password").await,
            Err(_) => false,
        }
    })
    .await
    .unwrap_or(false);
    assert!(!banned, "a banned address logged in");
    // Another address (127.0.0.2 is loopback too) is not affected.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = sock
        .connect(format!("127.0.0.1:{}", server.port).parse().unwrap())
        .await
        .unwrap();
    let cfg = std::sync::Arc::new(russh::client::Config::default());
    let mut h = russh::client::connect_stream(cfg, stream, AcceptAnyHost)
        .await
        .expect("connect from 127.0.0.2");
    assert!(
        auth_password(&mut h, "pw", "right-password").await,
        "other addresses still log in"
    );
    assert!(server.log_shows("address banned"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_stuffing_unknown_users_wrong_keys_and_attempt_cap() {
    let (server, _) = two_tenants(
        "credentials",
        "[limits]\nmax_auth_attempts = 3\nauth_reject_ms = 0\nban_after_failures = 1000\n",
    )
    .await;
    let mut h = connect(server.port).await;
    assert!(
        !auth_key(&mut h, "nobody", client_key("qa")).await,
        "unknown user"
    );
    assert!(
        !auth_key(&mut h, "qa", client_key("intruder")).await,
        "key not authorized for qa"
    );
    assert!(
        !auth_key(&mut h, "qa2", client_key("qa")).await,
        "another tenant's user with qa's key"
    );
    assert!(!auth_password(&mut h, "qa", "x").await);
    // The attempt cap has closed this connection: even the right key fails on it.
    assert!(
        !auth_key(&mut h, "qa", client_key("qa")).await,
        "attempts past the cap must not be served"
    );
    // A fresh connection with the right key works.
    let (_h, mut s) = login(server.port, "qa").await;
    assert_eq!(s.list(DAY.as_bytes()).await.unwrap(), ["mine-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connection_is_closed_after_the_login_grace_time() {
    let (server, _) = two_tenants("grace", "[limits]\nlogin_grace_secs = 1\n").await;
    use tokio::io::AsyncReadExt;
    // Never send a banner.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "a silent connection must be closed");
    // Complete the handshake but never authenticate.
    let h = connect(server.port).await;
    let gone = tokio::time::timeout(Duration::from_secs(15), async {
        while !h.is_closed() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok();
    assert!(gone, "an unauthenticated session must be closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_to_weak_ssh_algorithms_is_refused() {
    let (server, _) = two_tenants("algorithms", "").await;
    let work = tempfile::tempdir().unwrap();
    let key = client_key("qa");
    let batch = format!("ls {DAY}\n");
    for good in [
        vec!["-c", "aes128-gcm@openssh.com"],
        vec!["-c", "aes256-gcm@openssh.com"],
        vec!["-c", "chacha20-poly1305@openssh.com"],
    ] {
        let out = sftp_batch_with(server.port, "qa", key, &batch, work.path(), &good);
        assert!(out.status.success(), "{good:?}: {}", text(&out));
    }
    for weak in [
        vec!["-c", "aes128-cbc"],
        vec!["-c", "3des-cbc"],
        vec!["-c", "aes128-ctr", "-o", "MACs=hmac-sha1"],
        vec!["-o", "KexAlgorithms=diffie-hellman-group1-sha1"],
        vec!["-o", "KexAlgorithms=diffie-hellman-group14-sha1"],
        vec!["-o", "HostKeyAlgorithms=ssh-rsa"],
    ] {
        let out = sftp_batch_with(server.port, "qa", key, &batch, work.path(), &weak);
        assert!(
            !out.status.success(),
            "{weak:?} was accepted: {}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_idle_connections_cannot_lock_other_clients_out() {
    use tokio::io::AsyncReadExt;
    let key = client_key("qa");
    let pw = "Idle-Passw0rd-1";
    let hash = recvault::password::hash(pw).unwrap();
    let server = Server::start(&tenant_toml(
        "acme",
        &unique_prefix("idle-hold"),
        &[("qa", key, &format!("password = \"{hash}\""))],
    ));
    // 127.0.0.2 opens more idle connections than the listener's whole
    // pre-authentication cap (64), on SFTP, FTPS and ingest.
    let mut held = Vec::new();
    for port in [server.port, server.ftps_port, server.ingest_port] {
        let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..70 {
            held.push(crate::rawftp::tcp_from("127.0.0.2", to).await.unwrap());
        }
    }
    // Beyond its own cap (16) ingest answers 503 with the reason and when
    // to come back, and closes.
    let mut last = held.pop().unwrap();
    use tokio::io::AsyncWriteExt;
    last.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), last.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(_))), "{read:?}");
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 503"), "{got}");
    assert!(got.contains("\r\nretry-after: 5\r\n"), "{got}");
    assert!(
        got.contains("too many connections still authenticating from this address"),
        "{got}"
    );
    // The server closes the SFTP and FTPS ones at once, FTPS with the reason.
    let mut last = held.pop().unwrap();
    while last.peer_addr().unwrap().port() == server.ingest_port {
        last = held.pop().unwrap();
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), last.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(_))), "{read:?}");
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("421 Refused: too many connections still authenticating from this address"),
        "{got}"
    );
    // Another address still logs in, on both.
    let work = tempfile::tempdir().unwrap();
    let out = sftp_batch(server.port, "qa", key, "ls /\n", work.path());
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());
    let mut ftp = crate::rawftp::RawFtp::login(server.ftps_port, "qa", pw).await;
    assert_eq!(ftp.cmd("PWD").await.code, 257);
    let health = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/healthz", server.ingest_url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "200");
    assert!(
        server.log_shows("from this address (max_unauthenticated_per_source = 16)"),
        "{}",
        server.log()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_network_is_never_banned_and_a_bad_one_is_refused_at_load() {
    let pw = "Allow-Passw0rd-1";
    let hash = recvault::password::hash(pw).unwrap();
    let users = tenant_toml(
        "acme",
        &unique_prefix("allow"),
        &[("qa", client_key("qa"), &format!("password = \"{hash}\""))],
    );
    let server = Server::start(&format!(
        "[limits]\nban_after_failures = 2\nauth_reject_ms = 0\n\n[defender]\nallow = [\"127.0.0.0/8\"]\n{users}"
    ));
    let work = tempfile::tempdir().unwrap();
    for _ in 0..4 {
        let out = sftp_batch_password(server.port, "qa", "wrong", "pwd\n", work.path());
        assert!(!out.status.success());
    }
    let out = sftp_batch_password(server.port, "qa", pw, "pwd\n", work.path());
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());

    let bad = recvault::config::parse(
        &format!(
            "{}\n[defender]\nallow = [\"10.0.0.0/40\"]\n",
            s3().storage_toml()
        ),
        "bad.toml",
    );
    let e = bad.expect_err("a bad network is refused").to_string();
    assert!(
        e.contains("[defender] allow") && e.contains("bad.toml"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_log_in_count_as_failed_logins_and_earn_a_ban() {
    use tokio::io::AsyncReadExt;
    let server = Server::start(&format!(
        "[limits]\nlogin_grace_secs = 1\nban_after_failures = 2\n{}",
        tenant_toml(
            "acme",
            &unique_prefix("grace-ban"),
            &[("qa", client_key("qa"), "")]
        )
    ));
    // Each protocol from an address of its own: two connections that send
    // nothing, each closed by the server at the grace time.
    let protocols = [
        ("sftp", server.port, "127.0.0.3"),
        ("ftps", server.ftps_port, "127.0.0.4"),
        ("ingest", server.ingest_port, "127.0.0.5"),
    ];
    for (protocol, port, source) in protocols {
        let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..2 {
            let mut c = crate::rawftp::tcp_from(source, to).await.unwrap();
            let mut sink = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut sink)).await;
            assert!(matches!(closed, Ok(Ok(_))), "{protocol}: {closed:?}");
        }
        assert!(
            server.log_shows(&format!("protocol=\"{protocol}\" peer={source}")),
            "{}",
            server.log()
        );
    }
    assert!(server.log_shows("no login within the login grace time"));
    // The server closes a connection before it logs the failed login and
    // the ban: wait for the lines (bounded), then check them.
    let banned = |log: &str, protocol: &str, source: &str| {
        log.lines().any(|l| {
            l.contains("address banned")
                && l.contains(&format!("protocol=\"{protocol}\""))
                && l.contains(&format!("peer={source}:"))
        })
    };
    for _ in 0..100 {
        let log = server.log();
        if protocols.iter().all(|(p, _, s)| banned(&log, p, s)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    for (protocol, _, source) in protocols {
        assert!(
            banned(&log, protocol, source),
            "{protocol} from {source} was not banned:\n{log}"
        );
    }
    // An address that logs in is unaffected.
    let work = tempfile::tempdir().unwrap();
    let out = sftp_batch(server.port, "qa", client_key("qa"), "ls /\n", work.path());
    assert!(out.status.success(), "{}", text(&out));
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_open_handles_cannot_exhaust_memory_through_read_ahead() {
    use crate::rawsftp::*;
    let prefix = unique_prefix("read-ahead-budget");
    let data = pseudo_random(16 << 20, 5);
    seed(
        s3().store().await.as_ref(),
        &prefix,
        "call-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        data.clone(),
    )
    .await;
    let pw = "Budget-Passw0rd-1";
    let hash = recvault::password::hash(pw).unwrap();
    // 2 MiB per file, as by default, but 8 MiB for the whole server.
    let server = Server::start(&format!(
        "[limits]\nread_ahead_bytes = 2097152\nread_ahead_connection_bytes = 8388608\nread_ahead_total_bytes = 8388608\n{}",
        tenant_toml("acme", &prefix, &[("qa", client_key("qa"), &format!("password = \"{hash}\""))])
    ));
    let path = b"/2026/11/23/call-1/call-1.tar.gz";
    let mut h = connect(server.port).await;
    assert!(auth_password(&mut h, "qa", pw).await);
    let (mut sftp, _) = RawSftp::start(&h).await;
    // Warm up (first storage connections, TLS-free moto client, caches).
    let warm = sftp.open(path, 1).await.unwrap();
    sftp.read(&warm, 0, 1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(server.pid());
    // 60 handles, one byte read from each: each would read 2 MiB ahead.
    let mut handles = Vec::new();
    for _ in 0..60 {
        let f = sftp.open(path, 1).await.unwrap();
        assert_eq!(sftp.read(&f, 0, 1).await.unwrap()[..], data[..1]);
        handles.push(f);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = rss_kib(server.pid()).saturating_sub(before);
    eprintln!("60 idle handles: server RSS grew by {} KiB (budget 8192 KiB; unbudgeted it would hold 60 x 2048 KiB)", grown);
    assert!(grown < 48 * 1024, "RSS grew by {grown} KiB");

    // Another connection reads the whole file although the budget is held.
    let mut h2 = connect(server.port).await;
    assert!(auth_password(&mut h2, "qa", pw).await);
    let (mut other, _) = RawSftp::start(&h2).await;
    let f = other.open(path, 1).await.unwrap();
    let mut got = Vec::new();
    loop {
        match other.read(&f, got.len() as u64, 32 * 1024).await {
            Ok(b) => got.extend_from_slice(&b),
            Err((FX_EOF, _)) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(got == data, "{} of {} bytes", got.len(), data.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_told_the_server_is_full() {
    use tokio::io::AsyncReadExt;
    let server = Server::start(&format!(
        "[limits]\nmax_connections = 2\n{}",
        tenant_toml(
            "acme",
            &unique_prefix("full"),
            &[("qa", client_key("qa"), "")]
        )
    ));
    for (port, want) in [
        (
            server.ftps_port,
            "421 Too many connections (max_connections): try again later",
        ),
        (
            server.ingest_port,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\n",
        ),
    ] {
        let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(crate::rawftp::tcp_from("127.0.0.1", to).await.unwrap());
        }
        // Both are admitted before the third arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut third = crate::rawftp::tcp_from("127.0.0.1", to).await.unwrap();
        if port == server.ingest_port {
            // An HTTP client speaks first; it still reads the answer.
            use tokio::io::AsyncWriteExt;
            third
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), third.read_to_end(&mut got)).await;
        assert!(matches!(read, Ok(Ok(_))), "{read:?}");
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with(want), "{got:?}");
        drop(held);
    }
    assert!(server.log_shows("refused: connection limit reached"));
}
