//! Writes sessions into storage in the archived layout (SPEC §4): the RAW
//! archive first, the indexed `info.json` next (a session is visible once its
//! index exists); the day's index is then dropped, to be built from the
//! sessions by the next listing. Used by `recvault demo` and by tests to seed storage.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::layout::index::{SessionIndex, Summer};
use crate::layout::SessionKeys;
use crate::store::{ObjectStore, PutOptions, StoreError};

/// Stores a session whose RAW archive is `archive` (any bytes) and returns
/// the archive's storage key.
pub async fn put_session(
    store: &dyn ObjectStore,
    tenant_prefix: &str,
    id: &str,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
    archive: Bytes,
) -> Result<String, StoreError> {
    let keys = SessionKeys::of_call(tenant_prefix, started, id);
    let mut sums = Summer::default();
    sums.update(&archive);
    let mut digest = sums.finish();
    store
        .put(&keys.archive(), archive, PutOptions::default())
        .await?;
    // As ingest does: the index records the key that sealed the archive.
    digest.sealed = store.head(&keys.archive()).await?.and_then(|m| m.mark);
    let gateway = json!({
        "session_id": id,
        "started_at": started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "ended_at": ended.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "agent": {"id": "agent-7", "name": "Agent Seven"},
        "user": {"id": "caller-42", "name": "Caller"},
    });
    let mut index = SessionIndex::from_gateway(gateway).map_err(StoreError::Permanent)?;
    index.recvault.objects.insert(keys.archive_name(), digest);
    store
        .put(
            &keys.index(),
            Bytes::from(index.to_bytes()),
            PutOptions::default(),
        )
        .await?;
    // Many samples are written at once: rather than each updating the day
    // index, the index is dropped and the next listing builds it from the
    // sessions.
    crate::days::forget(store, tenant_prefix, &crate::layout::Day::of_call(started)).await?;
    Ok(keys.archive())
}

/// A small but well-formed tar.gz of fake MJR streams, for demos.
pub fn demo_archive(id: &str, seed: u64) -> Bytes {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        for (i, name) in ["agent-audio.mjr", "user-audio.mjr"].iter().enumerate() {
            let mut data = b"MJR00002".to_vec();
            let header = format!(
                r#"{{"t":"a","c":"opus","s":{},"u":{},"session":"{id}"}}"#,
                1_700_000_000_000_000u64 + seed,
                1_700_000_000_000_000u64 + seed + i as u64
            );
            data.extend_from_slice(&(header.len() as u16).to_be_bytes());
            data.extend_from_slice(header.as_bytes());
            for n in 0..50u32 {
                data.extend_from_slice(b"MEET");
                data.extend_from_slice(&(n * 20).to_be_bytes());
                data.extend_from_slice(&12u16.to_be_bytes());
                data.extend_from_slice(&[0x80, 111, 0, n as u8, 0, 0, 0, n as u8, 0, 0, 0, 1]);
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000 + seed);
            h.set_cksum();
            let _ = tar.append_data(&mut h, name, data.as_slice());
        }
        let _ = tar.finish();
    }
    Bytes::from(gz.finish().unwrap_or_default())
}
