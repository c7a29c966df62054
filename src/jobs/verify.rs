//! `recvault verify`: re-reads every stored object of each session and
//! checks its size and SHA-256 against the session index, and the sizes of
//! the stored derived files against their reservations. Every mismatch is a
//! finding: a missing object, a wrong size, a wrong hash, an unreadable
//! index or a part of one this version cannot read. A storage fault stops the job (it resumes at that session).

use async_trait::async_trait;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use super::{Job, Session};
use crate::layout::index::{self, SessionIndex};
use crate::store::StoreError;

pub struct Verify;

/// A storage error that stops the job, or `None` for a missing object.
fn stop(e: StoreError) -> Result<(), String> {
    match e {
        StoreError::NotFound(_) => Ok(()),
        e => Err(e.to_string()),
    }
}

/// Size and SHA-256 of a whole object; `None` when it is missing.
async fn digest(s: &Session, key: &str) -> Result<Option<(u64, String)>, String> {
    let mut body = match s.store.get(key, 0, None).await {
        Ok(b) => b,
        Err(e) => return stop(e).map(|()| None),
    };
    let (mut sha, mut n) = (Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        sha.update(&chunk);
        n += chunk.len() as u64;
    }
    Ok(Some((n, hex::encode(sha.finalize()))))
}

#[async_trait]
impl Job for Verify {
    fn kind(&self) -> &'static str {
        "verify"
    }

    async fn session(&self, s: &Session) -> Result<Vec<String>, String> {
        let mut found = Vec::new();
        let bytes =
            match crate::store::read_all(s.store.as_ref(), &s.keys.index(), index::MAX_BYTES).await
            {
                Ok(b) => b,
                Err(StoreError::NotFound(_)) => {
                    return Ok(vec![
                        "info.json disappeared during the check (erased?)".into()
                    ])
                }
                Err(e) => return Err(e.to_string()),
            };
        let index = match SessionIndex::parse(&bytes) {
            Ok(i) => i,
            Err(e) => return Ok(vec![format!("info.json: {e}")]),
        };
        for field in SessionIndex::unreadable(&bytes) {
            found.push(format!(
                "info.json: {field} has a shape this version cannot read (left out)"
            ));
        }
        if index.recvault.objects.is_empty() {
            found.push("info.json records no stored objects (no sizes or hashes to check)".into());
        }
        for (name, want) in &index.recvault.objects {
            let Some(key) = s.keys.object(name) else {
                found.push(format!(
                    "info.json names an object {name:?} that cannot exist"
                ));
                continue;
            };
            match digest(s, &key).await? {
                None => found.push(format!("{name} is missing from storage")),
                Some((size, _)) if size != want.size => found.push(format!(
                    "{name} holds {size} bytes, the index records {}",
                    want.size
                )),
                Some((_, sha)) if Some(&sha) != want.sha256_hex().as_ref() => found.push(format!(
                    "{name}: SHA-256 is {sha}, the index records {}",
                    want.sha256
                )),
                Some(_) => {}
            }
        }
        for (name, d) in &index.recvault.derived {
            let Some(key) = s.keys.derived_checked(name) else {
                found.push(format!(
                    "info.json names a derived entry {name:?} that cannot exist"
                ));
                continue;
            };
            let stored = match s.store.head(&key).await {
                Ok(m) => m,
                Err(e) => return Err(e.to_string()),
            };
            match stored {
                None if d.stored => found.push(format!("{name} is missing from storage")),
                // Rendered on first read: not there yet is fine.
                None => {}
                Some(m) if m.size != d.size => found.push(format!(
                    "{name} holds {} bytes, the index reserves {}",
                    m.size, d.size
                )),
                Some(_) => {}
            }
        }
        Ok(found)
    }
}

/// `recvault verify`: checks every configured tenant (or the one named),
/// prints each mismatch and a summary line per tenant on stdout, and
/// returns the number of mismatches. `Err` when a check could not finish
/// (its checkpoint is kept: the next run resumes).
pub async fn run_cli(
    cfg: &crate::config::Config,
    tenant: Option<&str>,
    since: Option<chrono::NaiveDate>,
) -> Result<usize, String> {
    super::run_cli(cfg, tenant, since, &Verify, |id, report, resumed| {
        for f in &report.findings {
            println!("MISMATCH {id} {}: {}", f.path, f.what);
        }
        println!(
            "verify {id}: {} sessions checked, {} mismatches{resumed}",
            report.sessions,
            report.findings.len()
        );
    })
    .await
}
