//! FTPS with real clients (lftp, curl, Python's ftplib, rclone) and the raw
//! client, against the real binary and moto. Attack tests are named after
//! the attack.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::harness::*;
use crate::rawftp::*;

pub(crate) const PW: &str = "ftps-Passw0rd-1";
const DAY: &str = "/2026/11/23";

pub(crate) fn pw_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| recvault::password::hash(PW).unwrap())
}

/// A password user `name` who may list and download (also key-authenticated, key "qa").
pub(crate) fn user_toml_pub(name: &str) -> String {
    user_toml(name, "[\"list\", \"download\"]")
}

/// A password user block (also key-authenticated for SFTP comparisons).
fn user_toml(name: &str, perms: &str) -> String {
    format!(
        "\n[[tenants.users]]\nname = \"{name}\"\npassword = \"{}\"\nauthorized_keys = [\"{}\"]\npermissions = {perms}\n",
        pw_hash(),
        client_key("qa").public
    )
}

/// Tenants acme (qa: list+download; eraser: +delete) and acme2 (qa2) whose
/// prefix shares acme's stem. acme holds a 3 MiB session, a small one and
/// one in October; acme2 holds "secret-1". Returns the server and acme's prefix.
async fn setup(test: &str, extra: &str) -> (Server, String) {
    let base = unique_prefix(test);
    let acme = format!("{base}acme/");
    let acme2 = format!("{base}acme2/");
    let store = s3().store().await;
    let sessions: [(&str, &str, &str, &str, Vec<u8>); 4] = [
        (
            &acme,
            "call-1",
            "2026-11-23T09:00:00Z",
            "2026-11-23T09:05:00Z",
            pseudo_random(3 << 20, 1),
        ),
        (
            &acme,
            "call-2",
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:01:30Z",
            b"small".to_vec(),
        ),
        (
            &acme,
            "old-1",
            "2026-10-01T09:00:00Z",
            "2026-10-01T09:05:00Z",
            b"october".to_vec(),
        ),
        (
            &acme2,
            "secret-1",
            "2026-11-23T09:00:00Z",
            "2026-11-23T09:05:00Z",
            b"acme2 secret".to_vec(),
        ),
    ];
    for (prefix, id, start, end, data) in sessions {
        seed(store.as_ref(), prefix, id, start, end, data).await;
    }
    let config = format!(
        "{extra}\n[[tenants]]\nid = \"acme\"\nprefix = \"{acme}\"\n{}{}\n[[tenants]]\nid = \"acme2\"\nprefix = \"{acme2}\"\n{}",
        user_toml("qa", "[\"list\", \"download\"]"),
        user_toml("eraser", "[\"list\", \"download\", \"delete\"]"),
        user_toml("qa2", "[\"list\", \"download\"]"),
    );
    (Server::start(&config), acme)
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("run client")
}

fn lftp(port: u16, script: &str, cwd: &Path) -> Output {
    let (cert, _) = ftps_cert();
    let settings = format!(
        "set ssl:ca-file {}; set ssl:check-hostname no; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ftp:ssl-protect-list yes; set net:max-retries 1; set net:timeout 20; set cmd:fail-exit yes; ",
        cert.display()
    );
    run(Command::new("lftp")
        .arg("-c")
        .arg(format!(
            "{settings} open -u qa,{PW} ftp://127.0.0.1:{port}; {script}"
        ))
        .current_dir(cwd))
}

pub(crate) fn curl(args: &[&str]) -> Output {
    let (cert, _) = ftps_cert();
    run(Command::new("curl")
        .args(["-sS", "--ssl-reqd", "--cacert"])
        .arg(cert)
        .args(["--user", &format!("qa:{PW}")])
        .args(args))
}

fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, sha256_file(&p)));
            }
        }
    }
    out.sort();
    out
}

fn downloads(server: &Server) -> Vec<serde_json::Value> {
    server
        .audit()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "download" && v["protocol"] == "ftps")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lftp_mirror_matches_sftp_and_a_second_mirror_transfers_nothing() {
    let (server, _) = setup("ftps-mirror", "").await;
    let work = tempfile::tempdir().unwrap();
    let out = lftp(server.ftps_port, &format!("mirror {DAY} ftp"), work.path());
    assert!(out.status.success(), "{}", text(&out));
    let first = downloads(&server).len();
    assert_eq!(first, 4, "2 sessions x 2 files: {}", server.audit());

    // The same day over SFTP.
    let o = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("get -r {DAY} sftp\n"),
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let ftp_files = files_under(&work.path().join("ftp"));
    assert_eq!(ftp_files.len(), 4, "{ftp_files:?}");
    assert_eq!(ftp_files, files_under(&work.path().join("sftp")));

    // Sizes and times are stable: a second mirror downloads nothing.
    let out = lftp(server.ftps_port, &format!("mirror {DAY} ftp"), work.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(downloads(&server).len(), first, "{}", server.audit());
}

#[tokio::test(flavor = "multi_thread")]
async fn lftp_mirror_continue_resumes_an_interrupted_download() {
    let (server, _) = setup("ftps-continue", "").await;
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("ftp/call-1/call-1.tar.gz");
    // A slow mirror, stopped once part of the big file is on disk.
    let (cert, _) = ftps_cert();
    let mut child = Command::new("lftp")
        .arg("-c")
        .arg(format!(
            "set ssl:ca-file {}; set ssl:check-hostname no; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set net:limit-rate 262144; open -u qa,{PW} ftp://127.0.0.1:{}; mirror {DAY}/call-1 ftp/call-1",
            cert.display(),
            server.ftps_port
        ))
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut partial = 0;
    for _ in 0..600 {
        partial = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        if partial >= 256 * 1024 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let partial = std::fs::metadata(&target)
        .map(|m| m.len())
        .unwrap_or(0)
        .max(partial);
    assert!(partial > 0 && partial < 3 << 20, "partial {partial}");

    let out = lftp(
        server.ftps_port,
        &format!("mirror --continue {DAY}/call-1 ftp/call-1"),
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha256_file(&target), sha256(&pseudo_random(3 << 20, 1)));
    // The resumed download served only what was missing.
    let last = downloads(&server)
        .into_iter()
        .rfind(|v| v["path"].as_str().unwrap().ends_with("call-1.tar.gz"))
        .unwrap();
    let served = last["bytes"].as_u64().unwrap();
    assert!(served < 3 << 20, "resumed download served {served} bytes");
    assert!(served + partial >= 3 << 20, "{served} + {partial}");
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_lists_downloads_and_resumes_over_explicit_and_implicit_tls() {
    let (server, _) = setup("ftps-curl", "").await;
    let base = format!("ftp://127.0.0.1:{}", server.ftps_port);
    let out = curl(&[&format!("{base}{DAY}/")]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split(' ').next_back())
        .collect();
    assert_eq!(names, ["call-1", "call-2"], "{listing}");
    assert!(!listing.contains("1970"), "{listing}");

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("c.tgz");
    let url = format!("{base}{DAY}/call-1/call-1.tar.gz");
    let want = pseudo_random(3 << 20, 1);
    // A partial file, then `-C -` fetches the rest.
    std::fs::write(&file, &want[..1_000_003]).unwrap();
    let out = curl(&["-C", "-", "-o", file.to_str().unwrap(), &url]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha256_file(&file), sha256(&want));
    let last = downloads(&server).pop().unwrap();
    assert_eq!(last["bytes"].as_u64(), Some(want.len() as u64 - 1_000_003));

    // Implicit FTPS: TLS from the first byte, data protected without PROT P.
    let (mut c, g) = RawFtp::connect_implicit(server.ftps_implicit_port).await;
    assert_eq!(g.code, 220);
    assert_eq!(c.cmd("USER qa").await.code, 331);
    assert_eq!(c.cmd(&format!("PASS {PW}")).await.code, 230);
    let (body, end) = c
        .data_cmd(&format!("RETR {DAY}/call-2/call-2.tar.gz"))
        .await;
    assert_eq!((body.as_slice(), end.code), (&b"small"[..], 226));
    // curl's ftps:// is implicit FTPS and gets the same bytes.
    let url = format!(
        "ftps://127.0.0.1:{}{DAY}/call-1/call-1.tar.gz",
        server.ftps_implicit_port
    );
    let out = curl(&["-o", file.to_str().unwrap(), &url]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha256_file(&file), sha256(&want));
}

/// Python's ftplib: MLSD facts, SIZE and MDTM against SFTP's stat, and
/// whether data connections resume the control connection's TLS session.
fn ftplib(port: u16, script: &str) -> Output {
    let (cert, _) = ftps_cert();
    let prelude = format!(
        r#"
import ftplib, ssl, json, sys
ctx = ssl.create_default_context(cafile={cert:?})
ctx.check_hostname = False
class Reusing(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size
def connect(cls=ftplib.FTP_TLS):
    f = cls(context=ctx, timeout=20)
    f.connect("127.0.0.1", {port})
    f.login("qa", {PW:?})
    f.prot_p()
    return f
"#,
        cert = cert.display().to_string()
    );
    run(Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}\n{script}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn ftplib_sees_mlsd_size_and_mdtm_equal_to_sftp() {
    let (server, _) = setup("ftps-ftplib", "").await;
    let out = ftplib(
        server.ftps_port,
        &format!(
            r#"
f = connect()
out = {{"mlsd": {{n: fa for n, fa in f.mlsd("{DAY}/call-1")}}}}
out["size"] = f.size("{DAY}/call-1/call-1.tar.gz")
out["mdtm"] = f.sendcmd("MDTM {DAY}/call-1/call-1.tar.gz")
out["mlst"] = f.sendcmd("MLST {DAY}/call-1/info.json")
out["feat"] = f.sendcmd("FEAT")
out["pwd"] = f.pwd()
print(json.dumps(out))
"#
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let facts = &v["mlsd"]["call-1.tar.gz"];
    assert_eq!(facts["type"], "file");
    assert_eq!(facts["size"], (3u64 << 20).to_string());
    assert_eq!(facts["modify"], "20261123090500");
    assert_eq!(v["size"], 3u64 << 20);
    assert_eq!(v["mdtm"], "213 20261123090500");
    assert!(
        v["mlst"].as_str().unwrap().contains("type=file;size="),
        "{v}"
    );
    assert!(v["feat"]
        .as_str()
        .unwrap()
        .contains("MLST type*;size*;modify*;perm*;"));
    assert_eq!(v["pwd"], "/");

    // SFTP reports the same size and time for every entry.
    let (_h, mut s) = {
        let mut h = crate::rawsftp::connect(server.port).await;
        assert!(crate::rawsftp::auth_key(&mut h, "qa", client_key("qa")).await);
        let (s, _) = crate::rawsftp::RawSftp::start(&h).await;
        (h, s)
    };
    for (name, fa) in v["mlsd"].as_object().unwrap() {
        let a = s
            .stat(format!("{DAY}/call-1/{name}").as_bytes())
            .await
            .unwrap();
        assert_eq!(fa["size"], a.size.to_string(), "{name}");
        let t = chrono::DateTime::from_timestamp(a.mtime as i64, 0).unwrap();
        assert_eq!(fa["modify"], t.format("%Y%m%d%H%M%S").to_string(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn required_tls_resumption_admits_resuming_clients_and_refuses_others() {
    let (server, _) = setup("ftps-resume", &ftps_toml("require_tls_resumption = true")).await;
    // ftplib without session reuse: the data connection is refused.
    let out = ftplib(
        server.ftps_port,
        r#"
f = connect()
try:
    f.nlst("/2026/11/23")
    print("accepted")
except ftplib.error_perm as e:
    print(str(e))
except OSError as e:
    # A TLS-level error on the data connection; the reply follows.
    try:
        f.voidresp()
    except ftplib.error_perm as e:
        print(str(e))
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("522"), "{said}");
    assert!(
        server.log_shows("TLS session reuse required"),
        "{}",
        server.log()
    );
    // ftplib passing the control session to the data connection: accepted.
    let out = ftplib(
        server.ftps_port,
        r#"
f = connect(Reusing)
print(sorted(f.nlst("/2026/11/23")))
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("'call-1', 'call-2'"));
    // rustls (the raw client), curl and lftp resume sessions.
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    let (body, end) = c
        .data_cmd(&format!("RETR {DAY}/call-2/call-2.tar.gz"))
        .await;
    assert_eq!(end.code, 226, "{end:?}");
    assert_eq!(body, b"small");
    let url = format!(
        "ftp://127.0.0.1:{}{DAY}/call-2/call-2.tar.gz",
        server.ftps_port
    );
    let out = curl(&[&url]);
    assert!(out.status.success(), "curl: {}", text(&out));
    assert_eq!(out.stdout, b"small");
    let work = tempfile::tempdir().unwrap();
    let out = lftp(
        server.ftps_port,
        &format!("get {DAY}/call-2/call-2.tar.gz -o x"),
        work.path(),
    );
    assert!(out.status.success(), "lftp: {}", text(&out));
    assert_eq!(std::fs::read(work.path().join("x")).unwrap(), b"small");
    let out = rclone_ftp(
        server.ftps_port,
        &["cat", &format!("f:{DAY}/call-2/call-2.tar.gz")],
        work.path(),
    );
    assert!(out.status.success(), "rclone: {}", text(&out));
    assert_eq!(out.stdout, b"small");
}

/// rclone's ftp backend with explicit TLS against the explicit listener.
fn rclone_ftp(port: u16, args: &[&str], cwd: &Path) -> Output {
    static OBSCURED: OnceLock<String> = OnceLock::new();
    let pass = OBSCURED.get_or_init(|| {
        let o = run(Command::new("rclone").args(["obscure", PW]));
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    });
    run(Command::new("rclone")
        .args(args)
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_F_TYPE", "ftp")
        .env("RCLONE_CONFIG_F_HOST", "127.0.0.1")
        .env("RCLONE_CONFIG_F_PORT", port.to_string())
        .env("RCLONE_CONFIG_F_USER", "qa")
        .env("RCLONE_CONFIG_F_PASS", pass)
        .env("RCLONE_CONFIG_F_EXPLICIT_TLS", "true")
        .env("RCLONE_CONFIG_F_NO_CHECK_CERTIFICATE", "true")
        .current_dir(cwd))
}

#[tokio::test(flavor = "multi_thread")]
async fn rclone_ftp_copy_then_check_over_explicit_tls() {
    let (server, _) = setup("ftps-rclone", "").await;
    let work = tempfile::tempdir().unwrap();
    let rclone = |args: &[&str]| rclone_ftp(server.ftps_port, args, work.path());
    let out = rclone(&["copy", &format!("f:{DAY}"), "out"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files_under(&work.path().join("out")).len(), 4);
    let out = rclone(&["check", &format!("f:{DAY}"), "out"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = downloads(&server).len();
    let out = rclone(&["copy", &format!("f:{DAY}"), "out"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        downloads(&server).len(),
        before,
        "second copy transferred files"
    );
}

// ------------------------------------------------------------- attacks --

#[tokio::test(flavor = "multi_thread")]
async fn login_before_auth_tls_is_refused_and_the_password_never_checked() {
    let (server, _) = setup("ftps-cleartext", "[limits]\nban_after_failures = 2\n").await;
    let (mut c, g) = RawFtp::connect(server.ftps_port).await;
    assert_eq!(g.code, 220);
    for _ in 0..5 {
        let r = c.cmd("USER qa").await;
        assert_eq!(r.code, 530, "{r:?}");
        assert!(r.text.contains("AUTH TLS"), "{r:?}");
        let r = c.cmd(&format!("PASS {PW}")).await;
        assert_eq!(r.code, 530, "{r:?}");
    }
    let r = c.cmd("LIST").await;
    assert_eq!(r.code, 530);
    // Nothing was checked: no login events, no ban, and a TLS login works.
    assert!(!server.audit().contains("\"login\""), "{}", server.audit());
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    assert_eq!(c.cmd("PWD").await.code, 257);
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_commands_pipelined_after_auth_tls_are_discarded() {
    let (server, _) = setup("ftps-pipelined", "").await;
    let (mut c, _) = RawFtp::connect(server.ftps_port).await;
    c.send_raw(format!("AUTH TLS\r\nUSER qa\r\nPASS {PW}\r\n").as_bytes())
        .await
        .unwrap();
    let r = c.reply().await.unwrap();
    assert_eq!(r.code, 234);
    let io = c.io;
    let tls = connector()
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            io,
        )
        .await;
    // Either the handshake fails (the tail was read as TLS) or the session
    // is not logged in: the clear-text USER/PASS were never obeyed.
    if let Ok(tls) = tls {
        let mut c = RawFtp::from_io(Box::new(tls));
        let r = c.cmd("PWD").await;
        assert_eq!(r.code, 530, "{r:?}");
    }
    assert!(!server.audit().contains("\"login\""), "{}", server.audit());
    assert!(
        server.log_shows("discarded clear-text input"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ftp_bounce_with_port_or_eprt_is_refused() {
    let (server, _) = setup("ftps-bounce", "").await;
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    for cmd in [
        "PORT 10,0,0,1,0,80",
        "EPRT |1|10.0.0.1|80|",
        "EPRT |2|::1|80|",
        "LPRT 4,4,10,0,0,1,2,0,80",
    ] {
        let r = c.cmd(cmd).await;
        assert_eq!(r.code, 502, "{cmd}: {r:?}");
    }
    // The session goes on.
    let (body, end) = c
        .data_cmd(&format!("RETR {DAY}/call-2/call-2.tar.gz"))
        .await;
    assert_eq!((body.as_slice(), end.code), (&b"small"[..], 226));
    // HASH answers from the SHA-256 ingest recorded.
    let r = c.cmd(&format!("HASH {DAY}/call-2/call-2.tar.gz")).await;
    assert_eq!(r.code, 213, "{r:?}");
    assert!(
        r.text
            .contains(&format!("SHA-256 0-4 {}", sha256(b"small"))),
        "{r:?}"
    );
    let r = c.cmd(&format!("XSHA256 {DAY}/call-2/call-2.tar.gz")).await;
    assert_eq!(r.text, format!("213 {}", sha256(b"small")));
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_ftps_connection_is_closed_after_the_login_grace_time() {
    let (server, _) = setup("ftps-slowloris", "[limits]\nlogin_grace_secs = 1\n").await;
    let (c, _) = RawFtp::connect(server.ftps_port).await;
    let mut c = c.auth_tls().await;
    // Say nothing more: the server closes with 421.
    let r = c.reply().await.expect("a 421 before the close");
    assert_eq!(r.code, 421, "{r:?}");
    assert!(c.reply().await.is_none());
    // And keeps serving others.
    let mut ok = RawFtp::login(server.ftps_port, "qa", PW).await;
    assert_eq!(ok.cmd("NOOP").await.code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_connection_stealing_from_another_address_gets_nothing() {
    let (server, _) = setup("ftps-steal", "").await;
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    let port = c.epsv().await;
    // The thief connects first, from another address.
    let mut thief = tcp_from("127.0.0.2", ([127, 0, 0, 1], port).into())
        .await
        .unwrap();
    let r = c.cmd(&format!("RETR {DAY}/call-2/call-2.tar.gz")).await;
    assert_eq!(r.code, 150, "{r:?}");
    let mut got = Vec::new();
    use tokio::io::AsyncReadExt;
    let n = thief.read_to_end(&mut got).await.unwrap_or(0);
    assert_eq!(n, 0, "the thief received {got:?}");
    // The real client still gets its file.
    let mut data = open_data(port).await.unwrap();
    let mut body = Vec::new();
    data.read_to_end(&mut body).await.unwrap();
    assert_eq!(body, b"small");
    assert_eq!(c.reply().await.unwrap().code, 226);
    assert!(server
        .log()
        .contains("refused a data connection from another address"));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_megabyte_command_line_closes_the_connection_and_the_server_keeps_serving() {
    let (server, _) = setup("ftps-longline", "").await;
    // Before TLS.
    let (mut c, _) = RawFtp::connect(server.ftps_port).await;
    let _ = c.send_raw(&vec![b'A'; 1 << 20]).await;
    let r = c.reply().await.expect("a reply before the close");
    assert_eq!(r.code, 500, "{r:?}");
    assert!(c.reply().await.is_none(), "connection still open");
    // After login, inside TLS.
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    let mut line = format!("CWD /{}", "a/".repeat(600_000));
    line.push_str("\r\n");
    let _ = c.send_raw(line.as_bytes()).await;
    let r = c.reply().await.expect("a reply before the close");
    assert_eq!(r.code, 500, "{r:?}");
    assert!(c.reply().await.is_none());
    // Others are still served.
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    let (body, end) = c.data_cmd(&format!("NLST {DAY}")).await;
    assert_eq!(end.code, 226);
    assert_eq!(String::from_utf8_lossy(&body), "call-1\r\ncall-2\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn path_traversal_over_cwd_retr_mlst_and_size_never_leaves_the_tenant() {
    let (server, acme) = setup("ftps-traversal", "").await;
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    let table = [
        "..".to_string(),
        "../../x".into(),
        "/a/../../b".into(),
        "\\".into(),
        "..\\..\\x".into(),
        "%2e%2e".into(),
        "%2e%2e/%2e%2e/acme2".into(),
        "../acme2/sessions/2026/11/23/secret-1/secret-1.tar.gz".into(),
        "/../../../acme2/sessions/2026/11/23/secret-1/info.json".into(),
        format!("/{acme}sessions"),
        "/2026/11/23/secret-1/secret-1.tar.gz".into(),
        "/2026/11/23/secret-1".into(),
        "/2026/11/23/call-1/derived".into(),
        "/2026/11/23/call-1/../../../../../etc/passwd".into(),
        "a\"b".into(),
        "x\r230 forged".into(),
        "/\u{00ff}\u{00fe}".into(),
        "a".repeat(300),
    ];
    for p in &table {
        for verb in ["CWD", "SIZE", "MDTM", "MLST"] {
            let r = c.cmd(&format!("{verb} {p}")).await;
            let shown: String = p.chars().take(50).collect();
            assert!(r.code != 0, "{verb} {shown:?} closed the connection");
            if r.code < 400 {
                // Only the tenant's own root-level folders can be reached.
                assert!(!r.text.contains("secret"), "{verb} {shown:?}: {r:?}");
                assert!(!r.text.contains(&acme), "{verb} {shown:?}: {r:?}");
                assert!(!r.text.contains("type=file"), "{verb} {shown:?}: {r:?}");
            }
            // One reply line per reply: nothing forged.
            assert!(!r.text.contains("\n230"), "{verb} {shown:?}: {r:?}");
        }
        let (body, end) = c.data_cmd(&format!("RETR {p}")).await;
        assert!(body.is_empty() && end.code >= 500, "RETR {p:?}: {end:?}");
        assert_eq!(c.cmd("CWD /").await.code, 250);
    }
    // And the session still works.
    let (body, _) = c
        .data_cmd(&format!("RETR {DAY}/call-2/call-2.tar.gz"))
        .await;
    assert_eq!(body, b"small");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_isolation_between_prefixes_sharing_a_stem_over_ftps() {
    let (server, _) = setup("ftps-isolation", "").await;
    let mut c = RawFtp::login(server.ftps_port, "qa2", PW).await;
    let (body, end) = c.data_cmd(&format!("NLST {DAY}")).await;
    assert_eq!(end.code, 226);
    assert_eq!(String::from_utf8_lossy(&body), "secret-1\r\n");
    for p in ["call-1", "call-2"] {
        assert_eq!(c.cmd(&format!("CWD {DAY}/{p}")).await.code, 550);
        let (body, end) = c.data_cmd(&format!("RETR {DAY}/{p}/{p}.tar.gz")).await;
        assert!(body.is_empty() && end.code == 550, "{end:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn brute_force_over_ftps_bans_the_address_across_connections_and_protocols() {
    let (server, _) = setup(
        "ftps-brute",
        "[limits]\nban_after_failures = 3\nauth_reject_ms = 10\n",
    )
    .await;
    for _ in 0..3 {
        let (c, _) = RawFtp::connect(server.ftps_port).await;
        let mut c = c.auth_tls().await;
        assert_eq!(c.cmd("USER qa").await.code, 331);
        let r = c.cmd("PASS wrong").await;
        assert!(r.code == 530 || r.code == 421, "{r:?}");
    }
    // 127.0.0.1 is now refused before any greeting, over FTPS and SFTP alike.
    let refused = RawFtp::connect_from("127.0.0.1", server.ftps_port).await;
    assert!(refused.is_err(), "banned address was greeted");
    let work = tempfile::tempdir().unwrap();
    let o = sftp_batch(server.port, "qa", client_key("qa"), "ls /\n", work.path());
    assert!(!o.status.success(), "SFTP let a banned address in");
    // Another address still logs in, even with the right password.
    let (c, g) = RawFtp::connect_from("127.0.0.2", server.ftps_port)
        .await
        .unwrap();
    assert_eq!(g.code, 220);
    let mut c = c.auth_tls().await;
    assert_eq!(c.cmd("USER qa").await.code, 331);
    assert_eq!(c.cmd(&format!("PASS {PW}")).await.code, 230);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_refused_and_only_delete_holders_erase_whole_sessions() {
    let (server, acme) = setup("ftps-erase", "").await;
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    for cmd in [
        "MKD /x",
        "DELE /2026/11/23/call-2/info.json",
        "RNFR /2026",
        "SITE CHMOD 777 /2026",
        "RMD /2026/11/23/call-2",
    ] {
        let r = c.cmd(cmd).await;
        assert_eq!(r.code, 550, "{cmd}: {r:?}");
    }
    let (_, r) = c.data_cmd("STOR /2026/x").await;
    assert_eq!(r.code, 550, "{r:?}");

    let mut e = RawFtp::login(server.ftps_port, "eraser", PW).await;
    let r = e.cmd(&format!("DELE {DAY}/call-2/info.json")).await;
    assert_eq!(r.code, 550);
    assert!(r.text.contains("RMD"), "{r:?}");
    assert_eq!(
        e.cmd(&format!("RMD {DAY}")).await.code,
        550,
        "a day is not a session"
    );
    let r = e.cmd(&format!("RMD {DAY}/call-2")).await;
    assert_eq!(r.code, 250, "{r:?}");
    let (body, _) = e.data_cmd(&format!("NLST {DAY}")).await;
    assert_eq!(String::from_utf8_lossy(&body), "call-1\r\n");
    assert_no_objects_left(&acme, "call-2").await;
    assert!(
        server.audit().contains("\"event\":\"erase\""),
        "{}",
        server.audit()
    );
    // The other user's view agrees (no stale cache in another session).
    assert_eq!(c.cmd(&format!("CWD {DAY}/call-2")).await.code, 550);
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_passive_port_range_gets_a_readable_error() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let (server, _) = setup(
        "ftps-ports",
        &ftps_toml(&format!(
            "passive_ports = \"{port}-{port}\"\npassive_host = \"203.0.113.10\""
        )),
    )
    .await;
    let mut a = RawFtp::login(server.ftps_port, "qa", PW).await;
    let mut b = RawFtp::login(server.ftps_port, "qa", PW).await;
    // PASV announces the NAT address with the range's port.
    let r = a.cmd("PASV").await;
    let want = format!("(203,0,113,10,{},{})", port >> 8, port & 0xff);
    assert!(r.code == 227 && r.text.contains(&want), "{r:?}");
    assert_eq!(a.epsv().await, port);
    let r = b.cmd("EPSV").await;
    assert_eq!(r.code, 425, "{r:?}");
    assert!(r.text.contains("busy"), "{r:?}");
    // Once a's transfer is done, b gets the port.
    let (_, end) = a
        .data_cmd_on(port, &format!("RETR {DAY}/call-2/call-2.tar.gz"))
        .await;
    assert_eq!(end.code, 226);
    let (body, end) = b
        .data_cmd(&format!("RETR {DAY}/call-2/call-2.tar.gz"))
        .await;
    assert_eq!((body.as_slice(), end.code), (&b"small"[..], 226));
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_rmdir_erases_a_whole_session_for_delete_holders_only() {
    let (server, acme) = setup("sftp-erase", "").await;
    let work = tempfile::tempdir().unwrap();
    let key = client_key("qa");
    let out = sftp_batch(
        server.port,
        "qa",
        key,
        &format!("rmdir {DAY}/call-2\n"),
        work.path(),
    );
    assert!(!out.status.success(), "qa has no delete permission");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sftp_batch(
        server.port,
        "eraser",
        key,
        &format!("rmdir {DAY}\n"),
        work.path(),
    );
    assert!(!out.status.success(), "a day is not a session");
    let out = sftp_batch(
        server.port,
        "eraser",
        key,
        &format!("rmdir {DAY}/call-2\nls -1 {DAY}\n"),
        work.path(),
    );
    // Listed names, without the batch's echoed commands.
    let listing: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("sftp>"))
        .map(str::to_string)
        .collect();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listing, [format!("{DAY}/call-1")]);
    assert_no_objects_left(&acme, "call-2").await;
    let audit = server.audit();
    assert!(
        audit.contains("\"event\":\"erase\"") && audit.contains("\"protocol\":\"sftp\""),
        "{audit}"
    );
}

/// Asserts that storage holds nothing of session `id` of 2026-11-23 under `prefix`.
async fn assert_no_objects_left(prefix: &str, id: &str) {
    let left = s3()
        .store()
        .await
        .list_page(&format!("{prefix}sessions/2026/11/23/{id}/"), None, None)
        .await
        .unwrap();
    assert!(left.objects.is_empty(), "{:?}", left.objects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_commands_during_a_transfer_is_disconnected() {
    let (server, _) = setup("ftps-flood", "").await;
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    let _port = c.epsv().await;
    // A RETR whose data connection never comes: the transfer is waiting.
    let r = c.cmd(&format!("RETR {DAY}/call-1/call-1.tar.gz")).await;
    assert_eq!(r.code, 150, "{r:?}");
    // Answered after the transfer, but only so many: 40 are too many.
    c.send_raw("PWD\r\n".repeat(40).as_bytes()).await.unwrap();
    let r = c.reply().await.expect("a reply");
    assert_eq!(r.code, 421, "{r:?}");
    assert!(
        r.text
            .contains("More than 32 commands sent during a transfer"),
        "{r:?}"
    );
    assert!(c.reply().await.is_none(), "the connection is closed");
    // The server serves others.
    let mut other = RawFtp::login(server.ftps_port, "qa", PW).await;
    assert_eq!(other.cmd("PWD").await.code, 257);
}

/// Session `call-big` of `acme`: a 48 MiB archive, far more than
/// loopback's socket buffers hold.
async fn seed_big(acme: &str, content_seed: u64) {
    seed(
        s3().store().await.as_ref(),
        acme,
        "call-big",
        "2026-11-23T11:00:00Z",
        "2026-11-23T11:05:00Z",
        pseudo_random(48 << 20, content_seed),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_download_is_cut_off_at_the_stall_limit() {
    let (server, acme) = setup("ftps-stall", "[limits]\nftp_stall_secs = 2\n").await;
    seed_big(&acme, 9).await;
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    let port = c.epsv().await;
    let r = c.cmd(&format!("RETR {DAY}/call-big/call-big.tar.gz")).await;
    assert_eq!(r.code, 150, "{r:?}");
    // Connect (TLS and all), then never read.
    let data = open_data(port).await.unwrap();
    let began = std::time::Instant::now();
    let r = c.reply().await.expect("the transfer's end");
    eprintln!(
        "a stalled download ended after {:.1} s",
        began.elapsed().as_secs_f64()
    );
    assert_eq!(r.code, 426, "{r:?}");
    assert!(
        r.text
            .contains("the client took no data for 2 s ([limits] ftp_stall_secs)"),
        "{r:?}"
    );
    drop(data);
    // The control connection carries on.
    assert_eq!(c.cmd("PWD").await.code, 257);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_idle_clients_at_once_and_cuts_a_download_left_after_the_drain_with_426_and_421(
) {
    let (mut server, acme) = setup("ftps-drain", "[limits]\ndrain_secs = 1\n").await;
    seed_big(&acme, 11).await;
    let mut idle = RawFtp::login(server.ftps_port, "qa", PW).await;
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    let port = c.epsv().await;
    let r = c.cmd(&format!("RETR {DAY}/call-big/call-big.tar.gz")).await;
    assert_eq!(r.code, 150, "{r:?}");
    // A slow reader: some bytes, then nothing.
    let mut data = open_data(port).await.unwrap();
    let mut some = vec![0u8; 64 * 1024];
    tokio::io::AsyncReadExt::read_exact(&mut data, &mut some)
        .await
        .unwrap();
    server.signal("TERM");
    let r = idle.reply().await.expect("the idle client is told");
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text.contains("Server shutting down"), "{r:?}");
    let r = c.reply().await.expect("the transfer's end");
    assert_eq!(r.code, 426, "{r:?}");
    assert!(
        r.text
            .contains("Server shutting down: transfer aborted after"),
        "{r:?}"
    );
    let r = c.reply().await.expect("the goodbye");
    assert_eq!(r.code, 421, "{r:?}");
    assert!(c.reply().await.is_none(), "the connection is closed");
    drop(data);
    let began = std::time::Instant::now();
    while server.is_running() && began.elapsed() < std::time::Duration::from_secs(20) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!server.is_running(), "the server stopped by itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_of_a_folder_lists_at_most_its_limit_and_says_so() {
    let (server, _) = setup("ftps-stat", "[limits]\nftp_stat_max_entries = 1\n").await;
    let mut c = RawFtp::login(server.ftps_port, "qa", PW).await;
    let r = c.cmd(&format!("STAT {DAY}")).await;
    assert_eq!(r.code, 213, "{r:?}");
    let listed = r.text.lines().filter(|l| l.contains(" call-")).count();
    assert_eq!(listed, 1, "{r:?}");
    assert!(
        r.text
            .ends_with("213 End of the first 1 entries: use LIST or MLSD for the whole folder"),
        "{r:?}"
    );
    // LIST still streams the whole folder.
    let (data, end) = c.data_cmd(&format!("LIST {DAY}")).await;
    assert_eq!(end.code, 226, "{end:?}");
    let names = String::from_utf8_lossy(&data).to_string();
    assert!(
        names.contains("call-1") && names.contains("call-2"),
        "{names}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_connection_resuming_another_clients_tls_session_is_refused() {
    let (server, _) = setup("ftps-steal", &ftps_toml("require_tls_resumption = true")).await;
    // Client b opens its data connection with the TLS session of client
    // a's control connection (same user, same address: a session handed
    // over or stolen), then with its own.
    let out = ftplib(
        server.ftps_port,
        r#"
victim = connect(Reusing)
victim.nlst("/2026/11/23")
class Stealing(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        conn = self.context.wrap_socket(conn, server_hostname=self.host, session=victim.sock.session)
        return conn, size
thief = connect(Stealing)
try:
    thief.nlst("/2026/11/23")
    print("stolen session accepted")
except ftplib.error_perm as e:
    print(str(e))
except OSError as e:
    try:
        thief.voidresp()
    except ftplib.error_perm as e:
        print(str(e))
# The same client with its own session is served.
honest = connect(Reusing)
print(sorted(honest.nlst("/2026/11/23")))
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    let mut lines = said.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("522"), "{said}");
    assert!(
        first.contains("this control connection's TLS session"),
        "{said}"
    );
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .contains("'call-1', 'call-2'"),
        "{said}"
    );
}
