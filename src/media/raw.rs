//! Reading a session's RAW archive from storage: the tar.gz is streamed and
//! unpacked on a blocking thread; only the entries asked for are kept.

use std::io::Read;

use futures::TryStreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::store::ObjectStore;

/// Largest single stream kept in memory.
const MAX_ENTRY: u64 = 2 * 1024 * 1024 * 1024;

/// The entries of the archive at `key` whose names `want` accepts, as (name, bytes).
pub async fn entries(
    store: &dyn ObjectStore,
    key: &str,
    want: fn(&str) -> bool,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let body = store
        .get(key, 0, None)
        .await
        .map_err(|e| format!("cannot read the RAW archive: {e}"))?;
    let reader = StreamReader::new(body.map_err(std::io::Error::other));
    let bridge = SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || {
        let gz = flate2::read::GzDecoder::new(bridge);
        let mut ar = tar::Archive::new(gz);
        let mut out = Vec::new();
        for e in ar.entries().map_err(|e| format!("RAW archive: {e}"))? {
            let mut e = e.map_err(|e| format!("RAW archive: {e}"))?;
            let name = e
                .path()
                .map_err(|e| format!("RAW archive: {e}"))?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !want(&name) {
                continue;
            }
            if e.size() > MAX_ENTRY {
                return Err(format!("{name} is larger than {MAX_ENTRY} bytes"));
            }
            let mut buf = Vec::with_capacity(e.size() as usize);
            e.read_to_end(&mut buf)
                .map_err(|err| format!("RAW archive, {name}: {err}"))?;
            out.push((name, buf));
        }
        Ok(out)
    })
    .await
    .map_err(|e| format!("RAW reader: {e}"))?
}
