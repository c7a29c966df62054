//! One render per derived file across every process on a bucket: a lease
//! object created with `If-None-Match: *` next to the file. Its holder
//! renews it while rendering and deletes it when done; a lease whose expiry
//! has passed (a crashed holder), or whose holder was a process of this host
//! that no longer runs, may be taken over. Stores that ignore
//! conditional writes (Garage, per the spec) get at most duplicate work:
//! renders are deterministic, so both copies are identical.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::store::{ObjectStore, PutOptions, SharedStore, StoreError};

/// How long a lease lasts without renewal, and how often it is renewed.
const TTL: Duration = Duration::from_secs(120);
const RENEW: Duration = Duration::from_secs(30);

pub enum Outcome {
    Mine,
    Theirs,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn body() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "host": hostname(),
            "pid": std::process::id(),
            "expires_unix": now() + TTL.as_secs(),
        })
        .to_string(),
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// When the lease at `key` expires (0 when its holder is a dead process on
/// this host: no need to wait for the expiry); `None` when there is none.
async fn expiry(store: &dyn ObjectStore, key: &str) -> Result<Option<u64>, String> {
    match crate::store::read_all(store, key, 4096).await {
        Ok(b) => {
            let v = serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default();
            let here = v.get("host").and_then(|h| h.as_str()) == Some(hostname().as_str());
            let pid = v.get("pid").and_then(|p| p.as_u64());
            if let (true, Some(pid)) = (here, pid) {
                let dead = pid != std::process::id() as u64
                    && !std::path::Path::new(&format!("/proc/{pid}")).exists();
                if dead {
                    return Ok(Some(0));
                }
            }
            Ok(Some(
                v.get("expires_unix").and_then(|t| t.as_u64()).unwrap_or(0),
            ))
        }
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(format!("render lease: {e}")),
    }
}

/// Takes the lease, or says another live process holds it.
pub async fn acquire(store: &dyn ObjectStore, key: &str) -> Result<Outcome, String> {
    for _ in 0..3 {
        match store.put(key, body(), PutOptions::if_absent()).await {
            Ok(()) => return Ok(Outcome::Mine),
            Err(StoreError::AlreadyExists(_)) => match expiry(store, key).await? {
                Some(t) if t > now() => return Ok(Outcome::Theirs),
                // Expired (or gone meanwhile): clear it and race for it again.
                Some(_) => {
                    let _ = store.delete(key).await;
                }
                None => {}
            },
            Err(e) => return Err(format!("render lease: {e}")),
        }
    }
    Ok(Outcome::Theirs)
}

/// Whether someone holds a live lease at `key`.
pub async fn alive(store: &dyn ObjectStore, key: &str) -> Result<bool, String> {
    Ok(expiry(store, key).await?.is_some_and(|t| t > now()))
}

/// Renews the lease until the returned task is aborted.
pub fn keep(store: SharedStore, key: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RENEW).await;
            let _ = store.put(&key, body(), PutOptions::default()).await;
        }
    })
}
