//! Clients as scripts and people use them: OpenSSH `scp` and `ssh -s
//! sftp` exit 0 after a clean session; paramiko sees exit status 0 on the
//! SFTP channel, retries a mistyped password on the same connection and
//! logs in with keyboard-interactive; failed logins reach the log.

use std::process::{Command, Stdio};

use crate::harness::*;

const PW: &str = "clients-Passw0rd-7";

/// One session `c-1` (archive `data`), user qa with key "qa" and password PW.
async fn server_with_one_session(test: &str, data: &[u8]) -> (Server, &'static ClientKey) {
    let prefix = unique_prefix(test);
    let store = s3().store().await;
    seed(
        store.as_ref(),
        &prefix,
        "c-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        data.to_vec(),
    )
    .await;
    let key = client_key("qa");
    let hash = recvault::password::hash(PW).unwrap();
    let server = Server::start(&tenant_toml(
        "acme",
        &prefix,
        &[("qa", key, &format!("password = \"{hash}\""))],
    ));
    (server, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_and_ssh_s_sftp_exit_0_after_a_clean_session() {
    let data = pseudo_random(300_000, 11);
    let (server, key) = server_with_one_session("scp-exit", &data).await;
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("c-1.tar.gz");
    let scp = Command::new("scp")
        .args(OPENSSH_OPTS)
        .args(["-P", &server.port.to_string(), "-o", "BatchMode=yes", "-i"])
        .arg(&key.private)
        .arg("qa@127.0.0.1:/2026/11/23/c-1/c-1.tar.gz")
        .arg(&dest)
        .stdin(Stdio::null())
        .output()
        .expect("scp");
    assert_eq!(scp.status.code(), Some(0), "{}", text(&scp));
    assert_eq!(sha256_file(&dest), sha256(&data));

    // The subsystem over plain ssh: the client closes its input, the
    // session ends, the status is 0.
    let ssh = Command::new("ssh")
        .args(OPENSSH_OPTS)
        .args(["-p", &server.port.to_string(), "-o", "BatchMode=yes", "-i"])
        .arg(&key.private)
        .args(["-s", "qa@127.0.0.1", "sftp"])
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert_eq!(ssh.status.code(), Some(0), "{}", text(&ssh));

    // A session broken by the client (an over-long packet) ends with 1 and
    // the reason on stderr.
    let mut child = Command::new("ssh")
        .args(OPENSSH_OPTS)
        .args(["-p", &server.port.to_string(), "-o", "BatchMode=yes", "-i"])
        .arg(&key.private)
        .args(["-s", "qa@127.0.0.1", "sftp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&u32::MAX.to_be_bytes()).unwrap();
        stdin.flush().unwrap();
        // Keep the input open: the server must end the session itself.
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("recvault: SFTP packet of 4294967295 bytes"),
            "{err}"
        );
    }
}

/// Runs a paramiko script with the test's venv python; its stdout.
fn paramiko(script: &str, port: u16) -> std::process::Output {
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    Command::new(python)
        .arg("-c")
        .arg(script)
        .env("PORT", port.to_string())
        .env("PW", PW)
        .output()
        .expect("python with paramiko (install with scripts/test.sh)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paramiko_sees_exit_status_0_and_logs_in_with_keyboard_interactive() {
    let data = pseudo_random(70_000, 12);
    let (server, _key) = server_with_one_session("paramiko", &data).await;
    let out = paramiko(
        r#"
import hashlib, os, socket, paramiko
port, pw = int(os.environ["PORT"]), os.environ["PW"]

t = paramiko.Transport(socket.create_connection(("127.0.0.1", port)))
t.start_client(timeout=20)
t.auth_password("qa", pw)
chan = t.open_session()
chan.invoke_subsystem("sftp")
sftp = paramiko.SFTPClient(chan)
with sftp.open("/2026/11/23/c-1/c-1.tar.gz") as f:
    print("sha256:", hashlib.sha256(f.read()).hexdigest())
st = sftp.stat("/2026/11/23/c-1/c-1.tar.gz")
print("owner:", st.st_uid, st.st_gid, oct(st.st_mode))
print("longname:", [a.longname for a in sftp.listdir_attr("/2026/11/23/c-1") if a.filename == "c-1.tar.gz"][0])
chan.shutdown_write()
print("exit status:", chan.recv_exit_status())
t.close()

# keyboard-interactive (what WinSCP and PuTTY prefer): one password prompt.
t = paramiko.Transport(socket.create_connection(("127.0.0.1", port)))
t.start_client(timeout=20)
prompts = []
def answer(title, instructions, asked):
    prompts.extend(p for p, _ in asked)
    return [pw for _ in asked]
t.auth_interactive("qa", answer)
print("interactive:", t.is_authenticated(), prompts)
t.close()

# A wrong password is refused cleanly.
t = paramiko.Transport(socket.create_connection(("127.0.0.1", port)))
t.start_client(timeout=20)
try:
    t.auth_password("qa", "typo-" + pw)
    print("typo accepted")
except paramiko.AuthenticationException:
    print("typo refused")
t.close()
"#,
        server.port,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", text(&out), server.log());
    assert!(
        stdout.contains(&format!("sha256: {}", sha256(&data))),
        "{stdout}"
    );
    assert!(stdout.contains("exit status: 0"), "{stdout}");
    // No numeric owner that would contradict the long name's `recvault`.
    assert!(stdout.contains("owner: None None 0o100444"), "{stdout}");
    assert!(stdout.contains(" recvault recvault "), "{stdout}");
    assert!(
        stdout.contains("interactive: True ['Password: ']"),
        "{stdout}"
    );
    assert!(stdout.contains("typo refused"), "{stdout}");
    assert!(server.log_shows("wrong password"));
    let log = server.log();
    assert!(
        log.contains("login failed") && log.contains("wrong password"),
        "the typo is in the log:\n{log}"
    );
    assert!(!log.contains(PW), "never the password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_sftp_retries_a_mistyped_password_on_the_same_connection() {
    let data = pseudo_random(10_000, 13);
    let (server, _key) = server_with_one_session("retry", &data).await;
    let work = tempfile::tempdir().unwrap();
    // An askpass that types a wrong password first, then the right one, as
    // a person at the prompt would.
    let askpass = work.path().join("askpass");
    let count = work.path().join("asked");
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\necho x >> '{}'\nif [ $(wc -l < '{}') -eq 1 ]; then echo 'typo-{PW}'; else echo '{PW}'; fi\n",
            count.display(),
            count.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut setsid = Command::new("setsid");
    setsid
        .arg("-w")
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    let out = run_batch(
        sftp_by_password(setsid, server.port, 3),
        "qa",
        "get /2026/11/23/c-1/c-1.tar.gz\n",
        work.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out),
        server.log()
    );
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        2,
        "asked twice"
    );
    assert_eq!(sha256_file(&work.path().join("c-1.tar.gz")), sha256(&data));
    assert_eq!(server.log().matches("login failed").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sftp_downloads_and_resumes() {
    let data = pseudo_random(500_000, 14);
    let (server, _key) = server_with_one_session("curl-sftp", &data).await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("c-1.tar.gz");
    let url = format!("sftp://127.0.0.1:{}/2026/11/23/c-1/c-1.tar.gz", server.port);
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--insecure", "-u", &format!("qa:{PW}")])
            .args(extra)
            .arg("-o")
            .arg(&out)
            .arg(&url)
            .output()
            .expect("curl")
    };
    let got = curl(&[]);
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(sha256_file(&out), sha256(&data));
    // An interrupted download, resumed where it stopped.
    std::fs::write(&out, &data[..123_457]).unwrap();
    let got = curl(&["-C", "-"]);
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(sha256_file(&out), sha256(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_sftp_mirror_is_right_first_time_and_transfers_nothing_the_second() {
    let data = pseudo_random(200_000, 15);
    let (server, key) = server_with_one_session("lftp-sftp", &data).await;
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("mirror");
    let connect = format!(
        "ssh -a -x -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -i {}",
        key.private.display()
    );
    let mirror = || {
        Command::new("lftp")
            .arg("-c")
            .arg(format!(
                "set sftp:connect-program \"{connect}\"; open -u qa, sftp://127.0.0.1:{}; mirror -v /2026/11/23 {}",
                server.port,
                dest.display()
            ))
            .stdin(Stdio::null())
            .output()
            .expect("lftp")
    };
    let first = mirror();
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(sha256_file(&dest.join("c-1/c-1.tar.gz")), sha256(&data));
    let second = mirror();
    assert!(second.status.success(), "{}", text(&second));
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(
        !said.contains("Transferring file"),
        "the second mirror must transfer nothing:\n{said}"
    );
}

/// The server's host key fingerprint (`SHA256:…`), as PuTTY wants it.
fn host_key_fingerprint(server: &Server) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(server.dir.path().join("host_key"))
        .output()
        .expect("ssh-keygen");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putty_psftp_batch_downloads_and_a_write_is_refused() {
    let data = pseudo_random(150_000, 16);
    let (server, _key) = server_with_one_session("psftp", &data).await;
    let work = tempfile::tempdir().unwrap();
    let psftp = |batch: &str| {
        let file = work.path().join("batch");
        std::fs::write(&file, batch).unwrap();
        Command::new("psftp")
            .args(["-batch", "-P", &server.port.to_string(), "-pw", PW])
            .args(["-hostkey", &host_key_fingerprint(&server), "-b"])
            .arg(&file)
            .arg("qa@127.0.0.1")
            .current_dir(work.path())
            .stdin(Stdio::null())
            .output()
            .expect("psftp (Debian putty-tools; scripts/test.sh installs it)")
    };
    let got = psftp("get /2026/11/23/c-1/c-1.tar.gz c.tgz\n");
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(sha256_file(&work.path().join("c.tgz")), sha256(&data));
    std::fs::write(work.path().join("up.txt"), b"hello").unwrap();
    let put = psftp("put up.txt /2026/11/23/c-1/up.txt\n");
    assert!(!put.status.success(), "a write must fail: {}", text(&put));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&put.stdout),
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(
        said.contains("read-only") || said.contains("ermission"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshfs_mounts_the_tree_and_reads_a_file() {
    if !std::path::Path::new("/dev/fuse").exists() {
        eprintln!("skipped: no /dev/fuse on this machine");
        return;
    }
    let data = pseudo_random(90_000, 17);
    let (server, key) = server_with_one_session("sshfs", &data).await;
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = Command::new("sshfs")
        .args(["-p", &server.port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes",
        ])
        .arg("-o")
        .arg(format!("IdentityFile={}", key.private.display()))
        .arg("qa@127.0.0.1:/")
        .arg(&mnt)
        .stdin(Stdio::null())
        .output()
        .expect("sshfs (Debian sshfs; scripts/test.sh installs it)");
    if !mount.status.success() {
        let err = String::from_utf8_lossy(&mount.stderr);
        if err.contains("fuse") || err.contains("permitted") || err.contains("device") {
            eprintln!("skipped: this machine cannot mount FUSE file systems: {err}");
            return;
        }
        panic!("sshfs failed: {}", text(&mount));
    }
    let read = std::fs::read(mnt.join("2026/11/23/c-1/c-1.tar.gz"));
    let listed = std::fs::read_dir(mnt.join("2026/11/23/c-1")).map(|d| d.count());
    let _ = Command::new("fusermount").arg("-u").arg(&mnt).status();
    assert_eq!(sha256(&read.expect("read through sshfs")), sha256(&data));
    assert_eq!(listed.unwrap(), 2, "info.json and the archive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_sftp_df_reports_a_read_only_file_system_without_invented_sizes() {
    let (server, key) = server_with_one_session("statvfs", b"x").await;
    let work = tempfile::tempdir().unwrap();
    let out = sftp_batch(server.port, "qa", key, "df /\ndf /2026/11\n", work.path());
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // OpenSSH prints a header then one line per `df`: sizes in KiB.
    let rows: Vec<&str> = t
        .lines()
        .filter(|l| l.trim_start().starts_with('0'))
        .collect();
    assert_eq!(rows.len(), 2, "{t}");
    for r in rows {
        let cols: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(&cols[..3], &["0", "0", "0"], "{t}");
    }
    assert!(!t.contains("does not support"), "{t}");
}
