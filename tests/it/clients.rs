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
    assert!(
        stdout.contains("interactive: True ['Password: ']"),
        "{stdout}"
    );
    assert!(stdout.contains("typo refused"), "{stdout}");
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
    let batch = work.path().join("batch");
    std::fs::write(&batch, "get /2026/11/23/c-1/c-1.tar.gz\n").unwrap();
    let out = Command::new("setsid")
        .arg("-w")
        .arg("sftp")
        .args(OPENSSH_OPTS)
        .args(["-P", &server.port.to_string()])
        .args([
            "-o",
            "BatchMode=no",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=3",
            "-b",
        ])
        .arg(&batch)
        .arg("qa@127.0.0.1")
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .output()
        .expect("sftp");
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
