//! Test harness: one moto S3 server per test binary (signature checking on),
//! recvault started as a real process per test, client keys, and helpers to
//! seed sessions and drive OpenSSH's `sftp`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use recvault::store::s3::S3Store;
use recvault::store::ObjectStore;

pub struct S3 {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    /// The AWS account moto runs as.
    pub account: String,
    /// The role made with `--role` (see `tests/support/moto_s3.py`).
    pub role_arn: Option<String>,
    _wrapper: Mutex<Child>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MOTO_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// The shared moto server (started on first use; it exits with this process,
/// because it stops when its standard input closes).
pub fn s3() -> &'static S3 {
    static S3_SERVER: OnceLock<S3> = OnceLock::new();
    S3_SERVER.get_or_init(|| start_moto(&[]))
}

/// A second moto server that answers one request at a time: moto's
/// threaded server checks a conditional write and then writes without a
/// lock, so two conditional writes of one key can both succeed there (real
/// S3 refuses the second). Tests of concurrent conditional updates by
/// several recvault processes use this one.
pub fn s3_single_threaded() -> &'static S3 {
    static S3_SERVER: OnceLock<S3> = OnceLock::new();
    S3_SERVER.get_or_init(|| start_moto(&["--single-threaded"]))
}

/// The external id the customer's role asks for.
pub const CUSTOMER_EXTERNAL_ID: &str = "recvault-acme-7f3c";

/// Another AWS account (a moto server of its own, account 222233334444,
/// with its own user and keys and bucket `customer`) and a role
/// `recvault-delivery` the operator's recvault assumes there: a
/// customer-owned bucket.
pub fn s3_customer() -> &'static S3 {
    static S3_SERVER: OnceLock<S3> = OnceLock::new();
    S3_SERVER.get_or_init(|| {
        start_moto(&[
            "--account=222233334444",
            "--role=recvault-delivery",
            &format!("--external-id={CUSTOMER_EXTERNAL_ID}"),
            "customer",
        ])
    })
}

fn start_moto(flags: &[&str]) -> S3 {
    {
        let mut child = Command::new(python())
            .arg(repo().join("tests/support/moto_s3.py"))
            .args(flags)
            .args((!flags.iter().any(|f| !f.starts_with("--"))).then_some("recordings"))
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start moto (install with scripts/test.sh, or set MOTO_PYTHON)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read moto's ready line");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("moto did not start: {e}: {line:?}"));
        assert!(v.get("error").is_none(), "moto did not start: {line}");
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        S3 {
            endpoint: s("endpoint"),
            access_key: s("access_key"),
            secret_key: s("secret_key"),
            bucket: s("bucket"),
            account: s("account"),
            role_arn: v["role_arn"].as_str().map(str::to_string),
            _wrapper: Mutex::new(child),
        }
    }
}

impl crate::faults::S3Endpoint for S3 {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn storage_toml(&self) -> String {
        S3::storage_toml(self)
    }
}

impl S3 {
    /// The `[storage]` section for this server.
    pub fn storage_toml(&self) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\nbucket = \"{}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\n",
            self.bucket, self.endpoint
        )
    }

    /// A store client for seeding and inspecting objects.
    pub async fn store(&self) -> Arc<dyn ObjectStore> {
        let cfg = recvault::config::parse(&format!("{}\n", self.storage_toml()), "test")
            .expect("storage config")
            .storage;
        Arc::new(
            S3Store::connect_with_key(&cfg, &self.access_key, &self.secret_key)
                .await
                .expect("connect to moto"),
        )
    }
}

/// A client key pair made by ssh-keygen (one per name per test binary).
pub struct ClientKey {
    pub private: PathBuf,
    pub public: String,
}

pub fn client_key(name: &str) -> &'static ClientKey {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static KEYS: OnceLock<Mutex<Vec<(String, &'static ClientKey)>>> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"));
    let keys = KEYS.get_or_init(|| Mutex::new(Vec::new()));
    let mut keys = keys.lock().unwrap();
    if let Some((_, k)) = keys.iter().find(|(n, _)| n == name) {
        return k;
    }
    let private = dir.path().join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(private.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_string();
    let key: &'static ClientKey = Box::leak(Box::new(ClientKey { private, public }));
    keys.push((name.to_string(), key));
    key
}

/// The `recvault` binary with moto's credentials and nothing else of the
/// AWS environment.
pub fn recvault_command() -> Command {
    recvault_command_for(s3())
}

/// The `recvault` binary with the credentials of moto server `s3`.
pub fn recvault_command_for(s3: &S3) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_recvault"));
    c.env("AWS_ACCESS_KEY_ID", &s3.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_KMS", &s3.endpoint)
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_PROFILE");
    c
}

/// A running recvault process; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    /// Port of the ingest listener.
    pub ingest_port: u16,
    /// Port of the explicit FTPS listener.
    pub ftps_port: u16,
    /// Port of the implicit FTPS listener (0 when not configured).
    pub ftps_implicit_port: u16,
    /// The admin listener's port (0 without `[admin]`).
    pub admin_port: u16,
    /// The content API's port (0 without `[api]`).
    pub api_port: u16,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `recvault serve` with `[storage]` for moto plus `rest` (tenants, limits…).
    pub fn start(rest: &str) -> Server {
        let s3 = s3();
        Self::start_with(&format!("{}\n{rest}", s3.storage_toml()))
    }

    /// Starts `recvault serve` with a whole configuration (minus [sftp], [ingest] and [audit]).
    pub fn start_with(config: &str) -> Server {
        Self::start_in(tempfile::tempdir().expect("tempdir"), config)
    }

    /// Starts again in the folder of a killed server (its spool, host key,
    /// audit log), with `[storage]` for moto plus `rest`.
    pub fn restart(dir: tempfile::TempDir, rest: &str) -> Server {
        Self::start_in(dir, &format!("{}\n{rest}", s3().storage_toml()))
    }

    /// Starts in `dir` (its spool, host key and audit log) with a whole configuration.
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Server {
        Self::start_logging(dir, config, "info")
    }

    /// [`Server::start_in`] with a log filter (`RUST_LOG`) of its own.
    pub fn start_logging(dir: tempfile::TempDir, config: &str, filter: &str) -> Server {
        Self::start_full(dir, config, filter, s3())
    }

    /// Starts with `[storage]` for moto server `s3` (its credentials) plus
    /// `rest`, or with a whole configuration (`rest` has its own
    /// `[storage]`, a proxy in front of `s3`, say).
    pub fn start_on(s3: &S3, rest: &str) -> Server {
        let config = if rest.contains("[storage]") {
            rest.to_string()
        } else {
            format!(
                "{}
{rest}",
                s3.storage_toml()
            )
        };
        Self::start_full(tempfile::tempdir().expect("tempdir"), &config, "info", s3)
    }

    /// [`Server::start_in`] on moto server `s3` (its `[storage]` and
    /// credentials), in `dir` (a killed node's folder, say).
    pub fn start_on_in(s3: &S3, dir: tempfile::TempDir, rest: &str) -> Server {
        Self::start_full(dir, &format!("{}\n{rest}", s3.storage_toml()), "info", s3)
    }

    fn start_full(dir: tempfile::TempDir, config: &str, filter: &str, s3: &S3) -> Server {
        let path = write_config(dir.path(), config);
        let mut child = recvault_command_for(s3)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start recvault");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for what in ["sftp", "ingest", "ftps", "ftps-implicit", "admin", "api"] {
                    if let Some(addr) =
                        line.strip_prefix(&format!("recvault: {what} listening on "))
                    {
                        let _ = tx.send((what, addr.to_string()));
                    }
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let (mut port, mut ingest_port, mut ftps_port, mut ftps_implicit_port) = (0u16, 0, 0, 0);
        let (mut admin_port, mut api_port) = (0, 0);
        // The SFTP line comes last: every other listener is bound by then.
        while port == 0 || ingest_port == 0 {
            let Ok((what, addr)) = rx.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                panic!("recvault did not start; its log:\n{}", log.lock().unwrap());
            };
            let p = addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
            match what {
                "sftp" => port = p,
                "ingest" => ingest_port = p,
                "ftps" => ftps_port = p,
                "admin" => admin_port = p,
                "api" => api_port = p,
                _ => ftps_implicit_port = p,
            }
        }
        Server {
            child,
            port,
            ingest_port,
            ftps_port,
            ftps_implicit_port,
            admin_port,
            api_port,
            dir,
            log,
        }
    }

    /// Replaces the configuration file (same listener, key and audit log)
    /// with `[storage]` for moto plus `rest`, then sends SIGHUP.
    pub fn reload(&self, rest: &str) {
        write_config(self.dir.path(), &format!("{}\n{rest}", s3().storage_toml()));
        self.signal("HUP");
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Whether the log shows `needle`, waiting (up to 10 s) for lines still
    /// on their way from the server's stderr.
    pub fn log_shows(&self, needle: &str) -> bool {
        for _ in 0..200 {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process with SIGKILL and hands back its folder (spool, keys).
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ingest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ingest_port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, config: &str) -> PathBuf {
    // A test that brings its own [ingest] section (TLS) keeps it.
    let ingest = if config.contains("\n[ingest]") {
        String::new()
    } else {
        format!(
            "[ingest]\nlisten = \"127.0.0.1:0\"\nspool_dir = \"{}\"\n",
            dir.join("spool").display()
        )
    };
    // A test that brings its own [ftps] section (a port range, resumption) keeps it.
    let ftps = if config.contains("\n[ftps]") {
        String::new()
    } else {
        ftps_toml("")
    };
    // A test may bring `[audit]` keys of its own (`# audit: KEY = VALUE`
    // lines, anywhere): they join the table that names the log.
    let audit_extra: String = config
        .lines()
        .filter_map(|l| l.strip_prefix("# audit: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = format!(
        "{config}\n[sftp]\nlisten = \"127.0.0.1:0\"\nhost_key = \"{}\"\n\n{ingest}\n{ftps}\n[audit]\npath = \"{}\"\n{audit_extra}",
        dir.join("host_key").display(),
        dir.join("audit.log").display()
    );
    let path = dir.join("recvault.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The test certificate for FTPS (self-signed for localhost and 127.0.0.1):
/// (certificate, key) paths.
pub fn ftps_cert() -> &'static (PathBuf, PathBuf) {
    static CERT: OnceLock<(tempfile::TempDir, (PathBuf, PathBuf))> = OnceLock::new();
    &CERT
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let cert = dir.path().join("ftps.crt");
            let key = dir.path().join("ftps.key");
            recvault::tls::ensure_self_signed(&cert, &key, &["localhost", "127.0.0.1"])
                .expect("test certificate");
            (dir, (cert, key))
        })
        .1
}

/// An `[ftps]` section on free loopback ports (explicit and implicit), with
/// the test certificate and `extra` lines.
pub fn ftps_toml(extra: &str) -> String {
    let (cert, key) = ftps_cert();
    ftps_toml_with(cert, key, extra)
}

/// [`ftps_toml`] with the certificate pair `cert`/`key`.
pub fn ftps_toml_with(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[ftps]\nlisten = \"127.0.0.1:0\"\nimplicit_listen = \"127.0.0.1:0\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n{extra}\n",
        cert.display(),
        key.display()
    )
}

/// A `[[tenants]]` block with one key-authenticated user per (name, key, extra) triple.
pub fn tenant_toml(id: &str, prefix: &str, users: &[(&str, &ClientKey, &str)]) -> String {
    let mut s = format!("\n[[tenants]]\nid = \"{id}\"\nprefix = \"{prefix}\"\n");
    for (name, key, extra) in users {
        s.push_str(&format!(
            "\n[[tenants.users]]\nname = \"{name}\"\nauthorized_keys = [\"{}\"]\npermissions = [\"list\", \"download\"]\n{extra}\n",
            key.public
        ));
    }
    s
}

/// A unique tenant prefix per test, so tests sharing one bucket never meet.
pub fn unique_prefix(test: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("it/{}-{}-{n}/", test.replace('_', "-"), std::process::id())
}

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

/// Stores a session with `archive` as its RAW archive bytes.
pub async fn seed(
    store: &dyn ObjectStore,
    prefix: &str,
    id: &str,
    started: &str,
    ended: &str,
    archive: Vec<u8>,
) {
    recvault::sample::put_session(
        store,
        prefix,
        id,
        t(started),
        t(ended),
        Bytes::from(archive),
    )
    .await
    .expect("seed session");
}

/// Deterministic pseudo-random bytes (xorshift), so large objects need no RNG crate.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> String {
    sha256(&std::fs::read(path).expect("read downloaded file"))
}

/// OpenSSH client options every test uses: no config file, no host-key
/// prompts, quiet, bounded connect time.
pub const OPENSSH_OPTS: [&str; 10] = [
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=20",
];

fn ssh_opts(port: u16) -> Vec<String> {
    OPENSSH_OPTS
        .iter()
        .map(|s| s.to_string())
        .chain(["-P".to_string(), port.to_string()])
        .collect()
}

/// Seeds one tenant with `sessions` (id, start, end, archive bytes) and
/// starts a server where user "qa" (key "qa") sees it.
pub async fn serve_sessions(
    test: &str,
    sessions: Vec<(&str, &str, &str, Vec<u8>)>,
) -> (Server, &'static ClientKey, tempfile::TempDir) {
    let prefix = unique_prefix(test);
    let store = s3().store().await;
    for (id, started, ended, data) in sessions {
        seed(store.as_ref(), &prefix, id, started, ended, data).await;
    }
    let key = client_key("qa");
    let server = Server::start(&tenant_toml("acme", &prefix, &[("qa", key, "")]));
    (server, key, tempfile::tempdir().expect("tempdir"))
}

/// Runs an `sftp -b` batch as `user` with `key`, in `cwd`.
pub fn sftp_batch(port: u16, user: &str, key: &ClientKey, batch: &str, cwd: &Path) -> Output {
    sftp_batch_with(port, user, key, batch, cwd, &[])
}

/// As [`sftp_batch`], with extra `sftp` options (ciphers, algorithms…).
pub fn sftp_batch_with(
    port: u16,
    user: &str,
    key: &ClientKey,
    batch: &str,
    cwd: &Path,
    extra: &[&str],
) -> Output {
    let mut cmd = Command::new("sftp");
    cmd.args(ssh_opts(port))
        .args(extra)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&key.private);
    run_batch(cmd, user, batch, cwd)
}

/// Runs an `sftp -b` batch with password authentication through sshpass.
pub fn sftp_batch_password(
    port: u16,
    user: &str,
    password: &str,
    batch: &str,
    cwd: &Path,
) -> Output {
    let mut cmd = Command::new("sshpass");
    cmd.arg("-p").arg(password);
    run_batch(sftp_by_password(cmd, port, 1), user, batch, cwd)
}

/// `cmd` (a program that supplies the password: sshpass, setsid with an
/// askpass) followed by `sftp` on `port` logging in by password only, with
/// `prompts` tries.
pub fn sftp_by_password(mut cmd: Command, port: u16, prompts: u32) -> Command {
    cmd.arg("sftp").args(ssh_opts(port)).args([
        "-o".to_string(),
        "BatchMode=no".to_string(),
        "-o".to_string(),
        "PubkeyAuthentication=no".to_string(),
        "-o".to_string(),
        format!("NumberOfPasswordPrompts={prompts}"),
    ]);
    cmd
}

/// Finishes an `sftp` command line with `-b BATCH user@127.0.0.1` and runs it in `cwd`.
pub fn run_batch(mut cmd: Command, user: &str, batch: &str, cwd: &Path) -> Output {
    let file = cwd.join(format!("batch-{}", rand_suffix()));
    std::fs::write(&file, batch).expect("write batch");
    let out = cmd
        .arg("-b")
        .arg(&file)
        .arg(format!("{user}@127.0.0.1"))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run sftp");
    let _ = std::fs::remove_file(file);
    out
}

fn rand_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub fn text(o: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes `data` to a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    f.write_all(data).expect("write");
    p
}
