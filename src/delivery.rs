//! Delivery to the customer's storage (`delivery = "customer"`, SPEC §11):
//! a session is archived into the operator's storage first (the backup, so
//! that "archived" means durable whatever the customer's bucket does), then
//! copied here to the tenant's own storage, each object verified against
//! the session index (size and SHA-256, read back from the customer's
//! bucket; a file rendered while the session was only in the backup
//! against its own bytes), and the backup copy deleted `backup_hours`
//! after the verified delivery, never before.
//!
//! The ledger is one small object per session in the backup,
//! `P/delivery/<id>.json` ([`crate::layout::delivery`]): written by the
//! archiver before a session counts as archived, so a session is never
//! archived without one, and removed once the backup copy is deleted. Every
//! node runs a deliverer over the ledger of its delivery tenants: a node
//! that dies mid-copy leaves the entry, and the next pass (of any node)
//! copies again what is not verified yet. Copies are idempotent (same key,
//! same bytes), so two nodes delivering one session at once do no harm.
//! An unreachable or refusing customer bucket keeps the backup and is
//! retried with backoff (5 s doubling to 10 minutes) without limit; the state
//! and its reason are in the ledger, the ingest status, the audit trail
//! (`delivered`, `delivery_failed`, `backup_deleted` with what was
//! verified), the metrics (`recvault_ingest_sessions_total{stage}`) and
//! the `call.delivered` / `delivery.failed` events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::audit::Audit;
use crate::layout::index::SessionIndex;
use crate::layout::{self, SessionKeys};
use crate::store::{PutOptions, SharedStore, StoreError};

/// A session's delivery state, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The session index's key (the same in both storages).
    pub index: String,
    /// `delivering` (not verified yet), `delivery_failed` (the last try
    /// failed: `reason`) or `delivered`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Tries that failed in a row.
    #[serde(default)]
    pub failures: u32,
    /// Not tried again before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try: Option<String>,
    /// When the copy was verified (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// What was verified: (key, size, SHA-256) of every object copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<Verified>,
    /// A node is deleting the backup copy until this time (RFC 3339);
    /// other nodes leave it alone until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting_until: Option<String>,
}

/// One object as the customer's storage holds it, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

impl Entry {
    fn new(index: &str) -> Self {
        Entry {
            index: index.to_string(),
            state: "delivering".into(),
            reason: None,
            failures: 0,
            next_try: None,
            delivered_at: None,
            verified: Vec::new(),
            deleting_until: None,
        }
    }

    fn due(&self, now: DateTime<Utc>) -> bool {
        time(&self.next_try).is_none_or(|t| t <= now)
    }

    /// Whether a node holds the deletion of the backup at `now`.
    fn being_deleted(&self, now: DateTime<Utc>) -> bool {
        time(&self.deleting_until).is_some_and(|t| t > now)
    }
}

fn time(t: &Option<String>) -> Option<DateTime<Utc>> {
    t.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// One tenant delivered to its own storage.
#[derive(Clone)]
pub struct Place {
    pub tenant: String,
    pub prefix: String,
    /// The operator's copy (as the tenant reads it: decrypted when the
    /// tenant is encrypted).
    pub backup: SharedStore,
    /// The customer's storage (likewise).
    pub home: SharedStore,
    /// How long the backup is kept after a verified delivery.
    pub keep: Duration,
    /// Who the customer's storage is, for logs and the audit trail.
    pub describe: String,
}

/// The deliverer of a node: one pass over every delivery tenant's ledger
/// when woken (after an archive) and at least every [`PASS`].
pub struct Deliverer {
    places: HashMap<String, Place>,
    audit: Arc<Audit>,
    /// Wakes the tenant's loop (after an archive).
    wake: HashMap<String, tokio::sync::Notify>,
}

/// The longest wait between two passes.
const PASS: Duration = Duration::from_secs(10);
/// The longest wait before a failed delivery is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long a node holds the deletion of a backup copy.
const DELETION_CLAIM: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// Sessions of one tenant delivered at once.
const AT_ONCE: usize = 4;

impl Deliverer {
    pub fn new(places: Vec<Place>, audit: Arc<Audit>) -> Arc<Self> {
        Arc::new(Deliverer {
            wake: places
                .iter()
                .map(|p| (p.tenant.clone(), tokio::sync::Notify::new()))
                .collect(),
            places: places.into_iter().map(|p| (p.tenant.clone(), p)).collect(),
            audit,
        })
    }

    /// Whether `tenant` is delivered to its own storage.
    pub fn serves(&self, tenant: &str) -> bool {
        self.places.contains_key(tenant)
    }

    /// Records that session `id` (its index at `index_key`) is archived in
    /// the backup and must be delivered: the archiver's last step before
    /// the session counts as archived. An entry already there is kept.
    pub async fn note_archived(
        &self,
        tenant: &str,
        id: &str,
        index_key: &str,
    ) -> Result<(), StoreError> {
        let Some(p) = self.places.get(tenant) else {
            return Ok(());
        };
        let body = serde_json::to_vec(&Entry::new(index_key)).unwrap_or_default();
        match p
            .backup
            .put(
                &layout::delivery(&p.prefix, id),
                Bytes::from(body),
                PutOptions::if_absent(),
            )
            .await
        {
            Ok(()) | Err(StoreError::AlreadyExists(_)) => {
                if let Some(w) = self.wake.get(tenant) {
                    w.notify_one();
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The delivery state of an archived session, for the ingest status:
    /// `{"state", "reason", "delivered_at"}`; `delivered` once the ledger
    /// is gone and the customer's storage has the index.
    pub async fn state(
        &self,
        tenant: &str,
        id: &str,
        index_key: Option<&str>,
    ) -> Option<serde_json::Value> {
        let p = self.places.get(tenant)?;
        match read_entry(p, id).await {
            Ok(Some((e, _))) => Some(serde_json::json!({
                "state": e.state,
                "reason": e.reason,
                "delivered_at": e.delivered_at,
                "failures": e.failures,
            })),
            Ok(None) => {
                let there = match index_key {
                    Some(k) => p.home.head(k).await.ok().flatten().is_some(),
                    None => false,
                };
                Some(serde_json::json!({
                    "state": if there { "delivered" } else { "unknown" },
                    "backup": "deleted",
                }))
            }
            Err(e) => Some(serde_json::json!({"state": "unknown", "reason": e.to_string()})),
        }
    }

    /// Runs passes until the process stops: a loop per tenant, so a
    /// customer bucket that does not answer (each wait bounded by
    /// `[limits] storage_timeout_secs`) holds up no other tenant's
    /// deliveries.
    pub async fn run(self: Arc<Self>) {
        let loops = self.places.values().map(|p| {
            let me = self.clone();
            async move {
                loop {
                    if let Err(e) = me.pass(p).await {
                        warn!(tenant = %p.tenant, error = %e, "delivery pass: the backup's ledger cannot be read; next pass soon");
                    }
                    if let Some(w) = me.wake.get(&p.tenant) {
                        let _ = tokio::time::timeout(PASS, w.notified()).await;
                    }
                }
            }
        });
        futures::future::join_all(loops).await;
    }

    /// One pass over a tenant's ledger: delivers what is due, deletes the
    /// backups whose time has come.
    async fn pass(&self, p: &Place) -> Result<(), StoreError> {
        use futures::StreamExt;
        let ids: Vec<String> = keys_under(p.backup.as_ref(), &layout::deliveries(&p.prefix))
            .await?
            .iter()
            .filter_map(|k| layout::delivery_of(&p.prefix, k).map(str::to_string))
            .collect();
        futures::stream::iter(ids)
            .for_each_concurrent(AT_ONCE, |id| async move {
                if let Err(e) = self.one(p, &id).await {
                    warn!(tenant = %p.tenant, session = %id, error = %e, "delivery ledger not updated; next pass tries again");
                }
            })
            .await;
        Ok(())
    }

    /// Works on one ledger entry.
    async fn one(&self, p: &Place, id: &str) -> Result<(), StoreError> {
        let Some((mut e, version)) = read_entry(p, id).await? else {
            return Ok(());
        };
        let version = version.as_deref();
        let now = Utc::now();
        if e.state == "delivered" {
            if e.being_deleted(now) {
                return Ok(());
            }
            let at = time(&e.delivered_at);
            let keep = chrono::Duration::from_std(p.keep).unwrap_or(chrono::Duration::MAX);
            if at.is_some_and(|at| at + keep <= now) {
                return self.delete_backup(p, id, &e, version).await;
            }
            return Ok(());
        }
        if !e.due(now) {
            return Ok(());
        }
        match deliver(p, &e.index).await {
            Ok(Delivered::Copied(verified)) => {
                e.state = "delivered".into();
                e.reason = None;
                e.failures = 0;
                e.next_try = None;
                e.delivered_at = Some(Utc::now().to_rfc3339());
                e.verified = verified;
                if !write_entry(p, id, &e, version).await? {
                    self.another_node(p, id);
                    return Ok(());
                }
                info!(tenant = %p.tenant, session = id, objects = e.verified.len(), storage = %p.describe, "delivered to the customer's storage and verified");
                self.audit.ingest(
                    &p.tenant,
                    id,
                    "delivered",
                    serde_json::json!({
                        "storage": p.describe,
                        "verified": e.verified,
                        "day": day_of(&e.index),
                        "backup_until": (Utc::now() + chrono::Duration::from_std(p.keep).unwrap_or(chrono::Duration::MAX)).to_rfc3339(),
                    }),
                );
                if p.keep.is_zero() {
                    // This node's own entry, just written.
                    return self.delete_backup(p, id, &e, None).await;
                }
                Ok(())
            }
            Ok(Delivered::Gone) => {
                // Erased (neither place has its index): nothing to deliver.
                info!(tenant = %p.tenant, session = id, "delivery dropped: the session is gone from both storages (erased)");
                p.backup.delete(&layout::delivery(&p.prefix, id)).await
            }
            Err(reason) => {
                e.failures = e.failures.saturating_add(1);
                let wait = backoff(e.failures);
                e.state = "delivery_failed".into();
                e.reason = Some(reason.clone());
                e.next_try = Some(
                    (Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default())
                        .to_rfc3339(),
                );
                if !write_entry(p, id, &e, version).await? {
                    self.another_node(p, id);
                    return Ok(());
                }
                warn!(tenant = %p.tenant, session = id, storage = %p.describe, failures = e.failures, retry_in_s = wait.as_secs(), %reason, "delivery failed; the backup copy is kept and delivery tried again");
                self.audit.ingest(
                    &p.tenant,
                    id,
                    "delivery_failed",
                    serde_json::json!({
                        "storage": p.describe,
                        "reason": reason,
                        "failures": e.failures,
                        "day": day_of(&e.index),
                    }),
                );
                Ok(())
            }
        }
    }

    /// Another node changed the session's entry while this one worked on
    /// it: that node's outcome stands.
    fn another_node(&self, p: &Place, id: &str) {
        info!(tenant = %p.tenant, session = id, "another node changed this delivery first; its outcome stands");
    }

    /// Deletes the backup copy of a delivered session, after checking once
    /// more that the customer's storage has every verified object at its
    /// size; audited with what was verified, then the ledger entry goes.
    /// The entry is claimed first (over `version`) for [`DELETION_CLAIM`],
    /// so two nodes' passes do not both delete and audit it; one that dies
    /// holding the claim leaves the deletion to a pass after it.
    async fn delete_backup(
        &self,
        p: &Place,
        id: &str,
        e: &Entry,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut e = e.clone();
        e.deleting_until = Some((Utc::now() + DELETION_CLAIM).to_rfc3339());
        if !write_entry(p, id, &e, version).await? {
            self.another_node(p, id);
            return Ok(());
        }
        for v in &e.verified {
            match p.home.head(&v.key).await? {
                Some(m) if m.size == v.size => {}
                other => {
                    let reason = format!(
                        "{} is {} in the customer's storage; the backup is kept",
                        v.key,
                        other.map_or("missing".to_string(), |m| format!("{} bytes", m.size))
                    );
                    let mut again = e.clone();
                    again.state = "delivering".into();
                    again.reason = Some(reason.clone());
                    again.deleting_until = None;
                    // This node holds the entry (its claim).
                    write_entry(p, id, &again, None).await?;
                    warn!(tenant = %p.tenant, session = id, %reason, "delivered copy changed before the backup was deleted; delivering again");
                    return Ok(());
                }
            }
        }
        // Everything in the backup's session folder (renders finished since
        // the delivery too: they are made again on demand), the index last:
        // until it goes, the backup is a whole session.
        let mut keys: Vec<String> = e.verified.iter().map(|v| v.key.clone()).collect();
        if let Some(folder) = layout::session_folder_of(&e.index) {
            for k in keys_under(p.backup.as_ref(), folder).await? {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys.sort_by_key(|k| *k == e.index);
        for k in &keys {
            p.backup.delete(k).await?;
        }
        info!(tenant = %p.tenant, session = id, "backup copy deleted after its delivery was verified");
        self.audit.ingest(
            &p.tenant,
            id,
            "backup_deleted",
            serde_json::json!({
                "storage": p.describe,
                "delivered_at": e.delivered_at,
                "verified": e.verified,
                "day": day_of(&e.index),
            }),
        );
        p.backup.delete(&layout::delivery(&p.prefix, id)).await
    }
}

/// 5 s doubling per failure, to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

/// `YYYY-MM-DD` of a session index key (`…/sessions/YYYY/MM/DD/<id>/info.json`).
fn day_of(index_key: &str) -> Option<String> {
    let parts: Vec<&str> = index_key.rsplit('/').skip(2).take(3).collect();
    (parts.len() == 3).then(|| format!("{}-{}-{}", parts[2], parts[1], parts[0]))
}

/// A session's ledger entry and the version read (its ETag), which a
/// change is written back over ([`write_entry`]).
async fn read_entry(p: &Place, id: &str) -> Result<Option<(Entry, Option<String>)>, StoreError> {
    let key = layout::delivery(&p.prefix, id);
    let Some((bytes, meta)) =
        crate::store::read_versioned(p.backup.as_ref(), &key, 1 << 20).await?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(|e| Some((e, meta.etag)))
        .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))
}

/// Writes a change of the entry over the `version` read. `false` when
/// another node changed or removed it since (two nodes delivering one
/// session at once): its outcome stands, and this one is dropped unsaid,
/// so a delivery is audited and announced once. On a store that ignores
/// conditional writes the last writer wins, as its copies are the same.
async fn write_entry(
    p: &Place,
    id: &str,
    e: &Entry,
    version: Option<&str>,
) -> Result<bool, StoreError> {
    let body = serde_json::to_vec(e).unwrap_or_default();
    let opts = PutOptions {
        if_match: version.map(str::to_string),
        ..PutOptions::default()
    };
    match p
        .backup
        .put(&layout::delivery(&p.prefix, id), Bytes::from(body), opts)
        .await
    {
        Ok(()) => Ok(true),
        Err(StoreError::Changed(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

enum Delivered {
    Copied(Vec<Verified>),
    Gone,
}

/// Copies the session of `index_key` from the backup to the customer's
/// storage and verifies it; `Err(reason)` when it could not.
async fn deliver(p: &Place, index_key: &str) -> Result<Delivered, String> {
    let index_bytes = match crate::store::read_all(
        p.backup.as_ref(),
        index_key,
        crate::layout::index::MAX_BYTES,
    )
    .await
    {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => {
            return match p.home.head(index_key).await {
                Ok(Some(_)) => Err(format!(
                    "{index_key} is in the customer's storage but no longer in the backup: nothing left to verify it against"
                )),
                Ok(None) => Ok(Delivered::Gone),
                Err(e) => Err(format!("customer's storage: {e}")),
            };
        }
        Err(e) => return Err(format!("backup: {e}")),
    };
    let index = SessionIndex::parse(&index_bytes).map_err(|e| format!("{index_key}: {e}"))?;
    let id = index.session_id.clone().unwrap_or_default();
    let started = index
        .started()
        .ok_or_else(|| format!("{index_key}: no start time"))?;
    let keys = SessionKeys::of_call(&p.prefix, started, &id);
    if keys.index() != index_key {
        return Err(format!(
            "{index_key}: the index names another session ({id})"
        ));
    }
    // Every object the index names, with the size and SHA-256 it records.
    let mut wanted: Vec<(String, u64, Option<String>)> = Vec::new();
    for (name, d) in &index.recvault.objects {
        let key = keys
            .object(name)
            .ok_or_else(|| format!("{index_key}: bad object name {name:?}"))?;
        wanted.push((key, d.size, d.sha256_hex()));
    }
    for (name, d) in index.recvault.derived.iter().filter(|(_, d)| d.stored) {
        let key = keys
            .derived_checked(name)
            .ok_or_else(|| format!("{index_key}: bad derived name {name:?}"))?;
        wanted.push((key, d.size, d.hashes.sha256.clone()));
    }
    let mut verified = Vec::new();
    for (key, size, sha) in wanted {
        let sha = sha.ok_or_else(|| {
            format!("{key}: the index records no SHA-256 to verify a copy against")
        })?;
        if check(&p.home, &key, size, &sha).await.is_err() {
            copy(p, &key, size, &sha).await?;
            check(&p.home, &key, size, &sha)
                .await
                .map_err(|e| format!("verification of the copy: {e}"))?;
        }
        verified.push(Verified {
            key,
            size,
            sha256: sha,
        });
    }
    // What was rendered while only the backup had the session (renders go
    // beside the index): taken along, each checked against its own bytes.
    let listed = keys_under(p.backup.as_ref(), keys.prefix())
        .await
        .map_err(|e| format!("backup: {e}"))?;
    for key in listed {
        if key == index_key
            || verified.iter().any(|v| v.key == key)
            || layout::is_lease(&key)
            || layout::is_staged(&key)
        {
            continue;
        }
        let (size, sha) = copy_as_is(p, &key).await?;
        check(&p.home, &key, size, &sha)
            .await
            .map_err(|e| format!("verification of the copy: {e}"))?;
        verified.push(Verified {
            key,
            size,
            sha256: sha,
        });
    }
    // The index last: once the customer's storage has it, the session is
    // whole there.
    let index_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&index_bytes));
    match crate::store::read_all(p.home.as_ref(), index_key, crate::layout::index::MAX_BYTES).await
    {
        Ok(b) if b == index_bytes => {}
        _ => {
            p.home
                .put(index_key, index_bytes.clone(), PutOptions::default())
                .await
                .map_err(|e| format!("customer's storage: {e}"))?;
            let back =
                crate::store::read_all(p.home.as_ref(), index_key, crate::layout::index::MAX_BYTES)
                    .await
                    .map_err(|e| format!("verification of the copy: {e}"))?;
            if back != index_bytes {
                return Err(format!(
                    "verification of the copy: {index_key} reads back different bytes"
                ));
            }
        }
    }
    verified.push(Verified {
        key: index_key.to_string(),
        size: index_bytes.len() as u64,
        sha256: index_sha,
    });
    Ok(Delivered::Copied(verified))
}

/// Streams `key` from the backup to the customer's storage, checking the
/// bytes read against the index (a backup that does not match it is not
/// delivered).
async fn copy(p: &Place, key: &str, size: u64, sha: &str) -> Result<(), String> {
    let (n, got) = copy_as_is(p, key).await?;
    if n != size || got != sha {
        return Err(format!(
            "{key}: the backup holds {n} bytes with SHA-256 {got}, the index records {size} bytes with {sha}; not delivered"
        ));
    }
    Ok(())
}

/// Streams `key` from the backup to the customer's storage as it is (a
/// rendered file the index does not hash): its size and SHA-256.
async fn copy_as_is(p: &Place, key: &str) -> Result<(u64, String), String> {
    use sha2::Digest as _;
    let body = p
        .backup
        .get(key, 0, None)
        .await
        .map_err(|e| format!("backup: {e}"))?;
    let mut hash = sha2::Sha256::new();
    let n = crate::store::upload_stream(p.home.as_ref(), key, body, None, |b| hash.update(b))
        .await
        .map_err(|e| format!("customer's storage: {e}"))?;
    Ok((n, hex::encode(hash.finalize())))
}

/// Every key under `prefix`.
async fn keys_under(
    store: &dyn crate::store::ObjectStore,
    prefix: &str,
) -> Result<Vec<String>, StoreError> {
    let all = crate::store::list_all(store, prefix, None).await?;
    Ok(all.objects.into_iter().map(|o| o.key).collect())
}

/// Reads `key` back from `store`: `Ok` when it has `size` bytes with
/// SHA-256 `sha`.
async fn check(store: &SharedStore, key: &str, size: u64, sha: &str) -> Result<(), String> {
    use futures::StreamExt;
    use sha2::Digest as _;
    let mut body = store.get(key, 0, None).await.map_err(|e| e.to_string())?;
    let (mut hash, mut n) = (sha2::Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        n += chunk.len() as u64;
        hash.update(&chunk);
    }
    let got = hex::encode(hash.finalize());
    if n == size && got == sha {
        Ok(())
    } else {
        Err(format!(
            "{key}: {n} bytes with SHA-256 {got}, the index records {size} with {sha}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_ten_minutes_and_days_come_from_index_keys() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(8), Duration::from_secs(600));
        assert_eq!(backoff(7), Duration::from_secs(320));
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        assert_eq!(
            day_of("t/acme/sessions/2026/11/23/call-1/info.json").as_deref(),
            Some("2026-11-23")
        );
        assert_eq!(day_of("x"), None);
    }

    /// Two nodes (two deliverers over the same storages) work on one
    /// session at once, the customer's storage slowed so both are at it
    /// together:
    /// the session is delivered, and audited as delivered once; then both
    /// delete the backup at once, and that is done and audited once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_delivering_one_session_at_once_deliver_and_delete_it_once() {
        use crate::store::local::LocalStore;
        let dir = tempfile::tempdir().unwrap();
        let backup: SharedStore = Arc::new(LocalStore::open(&dir.path().join("b")).unwrap());
        let home_raw: SharedStore = Arc::new(LocalStore::open(&dir.path().join("h")).unwrap());
        let home: SharedStore = Arc::new(
            crate::store::tap::Tap::new(home_raw.clone()).before(|_| Duration::from_millis(300)),
        );
        let keys = SessionKeys::new("t/", "2026", "11", "23", "c1");
        let index = br#"{"session_id":"c1","started_at":"2026-11-23T10:00:00Z","ended_at":"2026-11-23T10:00:30Z","agent":{"id":"a"},"user":{"id":"u"},"recvault":{"v":1,"ingested_at":"2026-11-23T11:00:00Z"}}"#;
        backup
            .put(
                &keys.index(),
                Bytes::from_static(index),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let node = |name: &str, keep: Duration| {
            let audit = Arc::new(Audit::file(&dir.path().join(format!("{name}.log"))).unwrap());
            Deliverer::new(
                vec![Place {
                    tenant: "acme".into(),
                    prefix: "t/".into(),
                    backup: backup.clone(),
                    home: home.clone(),
                    keep,
                    describe: "customer".into(),
                }],
                audit,
            )
        };
        let lines = |stage: &str| {
            ["a", "b"]
                .iter()
                .map(|n| {
                    std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap_or_default()
                })
                .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
                .filter(|l| l.contains(&format!("\"stage\":\"{stage}\"")))
                .count()
        };
        let keep = Duration::from_millis(500);
        let (a, b) = (node("a", keep), node("b", keep));
        a.note_archived("acme", "c1", &keys.index()).await.unwrap();
        let (pa, pb) = (&a.places["acme"], &b.places["acme"]);
        let (ra, rb) = tokio::join!(a.one(pa, "c1"), b.one(pb, "c1"));
        ra.unwrap();
        rb.unwrap();
        assert!(home_raw.head(&keys.index()).await.unwrap().is_some());
        let (e, _) = read_entry(pa, "c1").await.unwrap().unwrap();
        assert_eq!(e.state, "delivered");
        assert_eq!(lines("delivered"), 1, "one delivery, audited once");
        // Past `keep`: both nodes' passes come for the backup at once.
        tokio::time::sleep(keep + Duration::from_millis(100)).await;
        let (ra, rb) = tokio::join!(a.one(pa, "c1"), b.one(pb, "c1"));
        ra.unwrap();
        rb.unwrap();
        assert!(backup.head(&keys.index()).await.unwrap().is_none());
        assert!(read_entry(pa, "c1").await.unwrap().is_none());
        assert_eq!(lines("backup_deleted"), 1, "one deletion, audited once");
    }
}
