//! PROXY protocol v2 from a load balancer: believed only from the
//! addresses `[listeners] trusted_proxies` names, required from them, and
//! then the client it names is who the defender, the audit trail and the
//! FTPS data-peer check see. The "balancer" is a socket bound to
//! 127.0.0.2 (loopback holds all of 127/8); anyone else connects from
//! 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ftps::PW;
use crate::harness::*;
use crate::rawftp::{open_data_via, tcp_from, RawFtp};

const BALANCER: &str = "127.0.0.2";

fn header(client: &str, port: u16) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    recvault::proxy::header(client, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// An FTPS control connection through the balancer for `client`.
async fn via_balancer(port: u16, client: &str) -> std::io::Result<(RawFtp, Option<u16>)> {
    let mut sock = tcp_from(BALANCER, SocketAddr::from(([127, 0, 0, 1], port))).await?;
    sock.write_all(&header(client, port)).await?;
    let mut c = RawFtp::from_io(Box::new(sock));
    let greeting = c.reply().await.map(|r| r.code);
    Ok((c, greeting))
}

async fn login(c: RawFtp, password: &str) -> (RawFtp, u16) {
    let mut c = c.auth_tls().await;
    assert_eq!(c.cmd("USER qa").await.code, 331);
    let code = c.cmd(&format!("PASS {password}")).await.code;
    (c, code)
}

fn server(prefix: &str) -> Server {
    Server::start(&format!(
        "[listeners]\ntrusted_proxies = [\"{BALANCER}\"]\n[limits]\nban_after_failures = 2\nban_secs = 300\nauth_reject_ms = 0\n[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}\"\n{}",
        crate::ftps::user_toml_pub("qa")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_balancer_names_the_client_to_the_audit_the_defender_and_the_data_check() {
    let prefix = unique_prefix("proxied");
    seed(
        s3().store().await.as_ref(),
        &prefix,
        "call-p",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        b"proxied bytes".to_vec(),
    )
    .await;
    let server = server(&prefix);
    let port = server.ftps_port;

    // A login through the balancer is the client's, in the audit trail.
    let (c, greeting) = via_balancer(port, "203.0.113.7:50123").await.unwrap();
    assert_eq!(greeting, Some(220));
    let (mut c, code) = login(c, PW).await;
    assert_eq!(code, 230);
    assert_eq!(c.cmd("PBSZ 0").await.code, 200);
    assert_eq!(c.cmd("PROT P").await.code, 200);
    let audit = server.audit();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"login\"") && l.contains("203.0.113.7")),
        "{audit}"
    );

    // Its data connection through the balancer, for the same client: served.
    let path = "RETR /2026/11/23/call-p/call-p.tar.gz";
    let data_port = c.epsv().await;
    assert_eq!(c.cmd(path).await.code, 150);
    let mut data = open_data_via(data_port, BALANCER, &header("203.0.113.7:50124", data_port))
        .await
        .expect("data connection through the balancer");
    let mut got = Vec::new();
    let _ = data.read_to_end(&mut got).await;
    assert_eq!(got, b"proxied bytes");
    assert_eq!(c.reply().await.unwrap().code, 226);
    // Through the balancer for another client: refused as a stranger's.
    let data_port = c.epsv().await;
    assert_eq!(c.cmd(path).await.code, 150);
    let other = header("198.51.100.1:4000", data_port);
    let stolen = open_data_via(data_port, BALANCER, &other);
    let stolen = tokio::time::timeout(Duration::from_secs(10), stolen).await;
    assert!(
        !matches!(stolen, Ok(Ok(_))),
        "a data connection for another client was served"
    );
    assert!(server.log_shows("refused a data connection from another address"));
    drop(c);

    // Wrong passwords from one client behind the balancer ban that client,
    // not the balancer: the next client through it still logs in.
    for i in 0..2 {
        let (c, _) = via_balancer(port, "198.51.100.66:1000").await.unwrap();
        let (_, code) = login(c, "wrong-password").await;
        // The failure that bans is told so (421) and the connection closed.
        assert!(
            code == 530 || (i == 1 && code == 421),
            "attempt {i}: {code}"
        );
    }
    assert!(server.log_shows("198.51.100.66"));
    let banned = via_balancer(port, "198.51.100.66:1001").await;
    assert!(
        !matches!(banned, Ok((_, Some(220)))),
        "the banned client was greeted"
    );
    let (c, greeting) = via_balancer(port, "203.0.113.8:2000").await.unwrap();
    assert_eq!(greeting, Some(220), "the balancer itself is not banned");
    assert_eq!(login(c, PW).await.1, 230);

    // A connection from the balancer without a header is refused.
    let mut bare = tcp_from(BALANCER, SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    bare.write_all(b"USER qa\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), bare.read(&mut buf))
        .await
        .expect("closed within the header time")
        .unwrap_or(0);
    assert_eq!(n, 0, "greeted: {:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(server.log_shows("refused a connection from a trusted balancer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_spoofing_from_an_untrusted_address_is_not_believed() {
    let prefix = unique_prefix("spoof");
    let server = server(&prefix);
    // SSH from 127.0.0.1 with a header claiming another address first.
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    sock.write_all(&header("203.0.113.99:1", server.port))
        .await
        .unwrap();
    let config = std::sync::Arc::new(russh::client::Config::default());
    let ssh = russh::client::connect_stream(config, sock, crate::rawsftp::AcceptAnyHost);
    if let Ok(Ok(mut h)) = tokio::time::timeout(Duration::from_secs(10), ssh).await {
        let _ = h.authenticate_password("qa", "wrong-password").await;
    }
    // FTPS likewise: the header's bytes are commands to the server, never
    // an address.
    let mut sock = tcp_from(
        "127.0.0.1",
        SocketAddr::from(([127, 0, 0, 1], server.ftps_port)),
    )
    .await
    .unwrap();
    sock.write_all(&header("203.0.113.99:2", server.ftps_port))
        .await
        .unwrap();
    let mut c = RawFtp::from_io(Box::new(sock));
    let _ = tokio::time::timeout(Duration::from_secs(5), c.reply()).await;
    // Give the server time to log what it saw.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (log, audit) = (server.log(), server.audit());
    assert!(
        !log.contains("203.0.113.99") && !audit.contains("203.0.113.99"),
        "the claimed address was believed:\n{log}\n{audit}"
    );
    // And the server still serves.
    let _ = RawFtp::login(server.ftps_port, "qa", PW).await;
}
