//! `recvault demo`: the embedded default. Local storage in a data folder, a
//! `demo` tenant and user with a fresh printed password, a generated host
//! key and self-signed FTPS certificate, a loopback ingest listener with a
//! printed token, and three sample calls; then it serves like `recvault
//! serve`. When ffmpeg is installed the sample calls are real recordings
//! (synthetic video and tones), pushed through ingest on first start, so
//! their MP4, MP3 and WebM entries play; without it they are placeholders
//! with only their RAW archive.

use std::path::Path;

use chrono::{Duration, TimeZone, Utc};
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};

use crate::config;
use crate::store::SharedStore;

/// The sample calls: id and length in seconds.
const CALLS: [(&str, u32); 3] = [
    ("demo-call-0001", 40),
    ("demo-call-0002", 75),
    ("demo-call-0003", 25),
];

pub async fn run(dir: &Path, listen: &str, ftps_listen: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let password = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 16);
    let hash = crate::password::hash(&password)?;
    let token = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 32);
    let token_hash = hex::encode(Sha256::digest(token.as_bytes()));
    let objects = dir.join("objects");
    let cert = dir.join("keys/ftps.crt");
    let key = dir.join("keys/ftps.key");
    crate::tls::ensure_self_signed(&cert, &key, &["localhost", "127.0.0.1"])?;
    let text = format!(
        r#"
[storage]
backend = "local"
path = {objects:?}

[sftp]
listen = {listen:?}
host_key = {host_key:?}

[ftps]
listen = {ftps_listen:?}
certificate = {cert:?}
private_key = {key:?}

[ingest]
listen = "127.0.0.1:0"
spool_dir = {spool:?}

[api]
listen = "127.0.0.1:0"
link_key_file = {link_key:?}
outbox_dir = {outbox:?}

[[tenants]]
id = "demo"
prefix = "tenants/demo/"
ingest_tokens = ["sha256:{token_hash}"]

[[tenants.users]]
name = "demo"
password = {hash:?}
permissions = ["list", "download"]
"#,
        objects = objects.display().to_string(),
        host_key = dir.join("keys/ssh_host_ed25519_key").display().to_string(),
        cert = cert.display().to_string(),
        key = key.display().to_string(),
        spool = dir.join("spool").display().to_string(),
        link_key = dir.join("keys/link.key").display().to_string(),
        outbox = dir.join("outbox").display().to_string(),
    );
    let cfg = config::parse(&text, "embedded demo config").map_err(|e| e.to_string())?;
    let store: crate::store::SharedStore = crate::store::open(&cfg.storage, &cfg.limits).await?;
    let media = has_ffmpeg();
    if !media {
        placeholders(&store).await?;
    }
    let shown = Shown {
        dir: dir.display().to_string(),
        exe: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "recvault".into()),
        cert: cert.display().to_string(),
        password,
        token,
    };
    let samples = dir.join("samples");
    let example = dir.join("push-example");
    let banner = Box::new(move |bound: &crate::server::Listening| {
        let bound = bound.clone();
        tokio::spawn(async move {
            let mut ready = None;
            if media {
                if let Some(ingest) = bound.ingest {
                    sample_calls(&store, &samples, ingest, &shown.token).await;
                }
                ready = push_example(&example).await;
            }
            print_banner(&shown, &bound, media, ready.as_deref());
        });
    });
    crate::server::serve(cfg, None, Some(banner)).await
}

/// What the banner shows besides the listeners.
struct Shown {
    dir: String,
    /// The running binary, so the printed lines work without it on PATH.
    exe: String,
    cert: String,
    password: String,
    token: String,
}

/// A progress line on standard output, at once.
fn say(line: &str) {
    use std::io::Write;
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// A recorded session folder left for the user to push (made once); its path.
async fn push_example(root: &Path) -> Option<std::path::PathBuf> {
    let id = "demo-push-0001";
    let ready = root.join(id);
    if ready.join("info.json").exists() {
        return Some(ready);
    }
    let root = root.to_path_buf();
    let made =
        tokio::task::spawn_blocking(move || crate::media::fixture::session(&root, id, 20)).await;
    match made {
        Ok(Ok(dir)) => Some(dir),
        Ok(Err(e)) => {
            say(&format!("recvault demo: no session to push was made: {e}"));
            None
        }
        Err(_) => None,
    }
}

fn print_banner(
    shown: &Shown,
    bound: &crate::server::Listening,
    media: bool,
    ready: Option<&Path>,
) {
    let Shown {
        dir,
        exe,
        cert,
        password,
        token,
    } = shown;
    println!("recvault demo");
    println!("  data folder : {dir}");
    println!("  user        : demo");
    println!("  password    : {password}   (new on every start)");
    println!(
        "  connect     : sftp -P {} demo@{}",
        bound.sftp.port(),
        bound.sftp.ip()
    );
    if let Some(a) = bound.api {
        println!("  web page    : http://{a}/   (user demo, the password above)");
    }
    if let Some(i) = bound.ingest {
        let session = ready.map_or("SESSION_DIR".to_string(), |p| p.display().to_string());
        println!("  ingest      : {exe} push {session} --url http://{i} --token {token}");
    }
    if !media {
        println!(
            "  note        : ffmpeg is not installed: the sample calls have no playable media"
        );
    }
    // Last: scripts and tests wait for this line.
    if let Some(f) = bound.ftps {
        println!("  ftps        : curl --ssl-reqd --cacert {cert} -u demo ftp://{f}/");
    }
    println!("  stop        : Ctrl-C");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

fn has_ffmpeg() -> bool {
    std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Records the sample calls that are not archived yet (synthetic video and
/// tones, through ffmpeg) and pushes them through ingest, waiting for each.
async fn sample_calls(store: &SharedStore, root: &Path, ingest: std::net::SocketAddr, token: &str) {
    let started = Utc
        .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .unwrap_or_default();
    for (id, seconds) in CALLS {
        let info = crate::layout::SessionKeys::of_call("tenants/demo/", started, id).index();
        if matches!(store.head(&info).await, Ok(Some(_))) {
            continue;
        }
        say(&format!(
            "recvault demo: recording sample call {id} ({seconds} s of media, a few seconds)..."
        ));
        let made = {
            let root = root.to_path_buf();
            tokio::task::spawn_blocking(move || crate::media::fixture::session(&root, id, seconds))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
        };
        let pushed = match made {
            Ok(dir) => {
                let url = format!("http://{ingest}");
                let wait = std::time::Duration::from_secs(300);
                let r = crate::push::push(&dir, &url, token, None, wait).await;
                let _ = std::fs::remove_dir_all(&dir);
                r
            }
            Err(e) => Err(e),
        };
        match pushed {
            Ok(crate::push::Outcome::Archived) => {}
            Ok(crate::push::Outcome::Failed(e) | crate::push::Outcome::TimedOut(e)) | Err(e) => {
                eprintln!("recvault demo: sample call {id} was not archived: {e}")
            }
        }
    }
}

/// Placeholder sessions (a RAW archive of silent streams, no derived media).
async fn placeholders(store: &SharedStore) -> Result<(), String> {
    let base = Utc
        .with_ymd_and_hms(2026, 11, 23, 9, 0, 0)
        .single()
        .ok_or("bad date")?;
    for (i, minutes) in [(0u64, 4i64), (1, 11), (2, 7)] {
        let id = format!("demo-call-{:04}", i + 1);
        let started = base + Duration::minutes(75 * i as i64);
        let info = crate::layout::SessionKeys::of_call("tenants/demo/", started, &id).index();
        if store
            .head(&info)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            let archive = crate::sample::demo_archive(&id, i);
            crate::sample::put_session(
                store.as_ref(),
                "tenants/demo/",
                &id,
                started,
                started + Duration::minutes(minutes),
                archive,
            )
            .await
            .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
