//! `recvault demo`: the embedded default. Local storage in a data folder, a
//! `demo` tenant and user with a fresh printed password, a generated host
//! key and self-signed FTPS certificate, and a few sample sessions; then it serves like `recvault serve`.

use std::path::Path;

use chrono::{Duration, TimeZone, Utc};
use rand::distributions::{Alphanumeric, DistString};

use crate::config;

pub async fn run(dir: &Path, listen: &str, ftps_listen: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let password = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 16);
    let hash = crate::auth::password::hash(&password)?;
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

[[tenants]]
id = "demo"
prefix = "tenants/demo/"

[[tenants.users]]
name = "demo"
password = {hash:?}
permissions = ["list", "download"]
"#,
        objects = objects.display().to_string(),
        host_key = dir.join("keys/ssh_host_ed25519_key").display().to_string(),
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    let cfg = config::parse(&text, "embedded demo config").map_err(|e| e.to_string())?;
    let store = crate::store::open(&cfg.storage).await?;
    let base = Utc
        .with_ymd_and_hms(2026, 11, 23, 9, 0, 0)
        .single()
        .ok_or("bad date")?;
    for (i, minutes) in [(0u64, 4i64), (1, 11), (2, 7)] {
        let id = format!("demo-call-{:04}", i + 1);
        let started = base + Duration::minutes(75 * i as i64);
        let info = format!(
            "{}info.json",
            crate::sample::session_prefix("tenants/demo/", started, &id)
        );
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
    let shown = dir.display().to_string();
    let banner = Box::new(move |bound: &crate::server::Listening| {
        println!("recvault demo");
        println!("  data folder : {shown}");
        println!("  user        : demo");
        println!("  password    : {password}   (new on every start)");
        println!(
            "  connect     : sftp -P {} demo@{}",
            bound.sftp.port(),
            bound.sftp.ip()
        );
        if let Some(f) = bound.ftps {
            println!(
                "  ftps        : curl --ssl-reqd -k -u demo ftp://{f}/ (self-signed certificate in keys/)"
            );
        }
        println!("  stop        : Ctrl-C");
    });
    crate::server::serve(cfg, None, Some(banner)).await
}
