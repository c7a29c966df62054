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

/// What reading a whole object gave.
enum Read {
    Missing,
    /// Damaged, or not readable with the tenant's keyset: a finding.
    Corrupt(String),
    Whole {
        size: u64,
        sha256: String,
    },
}

/// Size and SHA-256 of a whole object.
async fn digest(s: &Session, key: &str) -> Result<Read, String> {
    let mut body = match s.store.get(key, 0, None).await {
        Ok(b) => b,
        Err(StoreError::Corrupt(why)) => return Ok(Read::Corrupt(why)),
        Err(e) => return stop(e).map(|()| Read::Missing),
    };
    let (mut sha, mut n) = (Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                sha.update(&c);
                n += c.len() as u64;
            }
            Err(StoreError::Corrupt(why)) => return Ok(Read::Corrupt(why)),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(Read::Whole {
        size: n,
        sha256: hex::encode(sha.finalize()),
    })
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
                Read::Missing => found.push(format!("{name} is missing from storage")),
                Read::Corrupt(why) => found.push(format!("{name} cannot be read: {why}")),
                Read::Whole { size, .. } if size != want.size => found.push(format!(
                    "{name} holds {size} bytes, the index records {}",
                    want.size
                )),
                Read::Whole { sha256, .. } if Some(&sha256) != want.sha256_hex().as_ref() => found
                    .push(format!(
                        "{name}: SHA-256 is {sha256}, the index records {}",
                        want.sha256
                    )),
                Read::Whole { .. } => {}
            }
            if let Some(sealed) = &want.sealed {
                let stored = s.raw.head(&key).await.map_err(|e| e.to_string())?;
                match stored.map(|m| m.mark) {
                    Some(None) => found.push(format!(
                        "{name} is stored without the encryption mark the index records ({sealed}): its metadata was removed"
                    )),
                    Some(Some(m)) if m != *sealed => found.push(format!(
                        "{name} is marked {m:?}, the index records {sealed:?}"
                    )),
                    _ => {}
                }
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
                Err(StoreError::Corrupt(why)) => {
                    found.push(format!("{name} cannot be read: {why}"));
                    continue;
                }
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
