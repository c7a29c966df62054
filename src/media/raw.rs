//! Reading a session's RAW archive from storage: the tar.gz is streamed and
//! unpacked on a blocking thread; only the entries asked for are kept, each
//! in a spill file (disk, not memory) that its parser reads as a stream.

use std::io::Read;

use futures::TryStreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::store::ObjectStore;

/// Largest single stream taken from an archive.
const MAX_ENTRY: u64 = 16 * 1024 * 1024 * 1024;

/// The entries of the archive at `key` whose names `want` accepts, each
/// handed to `parse` on a thread of its own as soon as it is unpacked, so
/// parsing one stream overlaps unpacking the next; as (name, parsed), in
/// archive order.
pub async fn parse_entries<T, P>(
    store: &dyn ObjectStore,
    key: &str,
    want: fn(&str) -> bool,
    parse: P,
) -> Result<Vec<(String, T)>, String>
where
    T: Send + 'static,
    P: Fn(&str, std::fs::File) -> Result<T, String> + Send + Sync + 'static,
{
    let body = store
        .get(key, 0, None)
        .await
        .map_err(|e| format!("cannot read the RAW archive: {e}"))?;
    let reader = StreamReader::new(body.map_err(std::io::Error::other));
    let bridge = SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || {
        let gz = flate2::read::GzDecoder::new(bridge);
        let mut ar = tar::Archive::new(gz);
        let parse = &parse;
        std::thread::scope(|scope| {
            let mut parsing = Vec::new();
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
                // Copied as bytes arrive: a damaged header's size is never an
                // allocation, and the stream never sits in memory whole.
                let file =
                    spill_entry(&mut e).map_err(|err| format!("RAW archive, {name}: {err}"))?;
                parsing.push(scope.spawn(move || parse(&name, file).map(|t| (name, t))));
            }
            parsing
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| "a stream parser panicked".to_string())?
                })
                .collect()
        })
    })
    .await
    .map_err(|e| format!("RAW reader: {e}"))?
}

/// Copies one entry into an unlinked spill file and gives it back, read
/// from its start.
fn spill_entry(e: &mut impl Read) -> Result<std::fs::File, String> {
    let spill = crate::media::spill::Spill::new()?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    loop {
        let n = match e.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.to_string()),
        };
        spill.write_at(&buf[..n], at)?;
        at += n as u64;
    }
    spill.reader()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{local::LocalStore, PutOptions};

    #[tokio::test]
    async fn wanted_entries_are_parsed_in_archive_order_and_errors_name_the_stream() {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, body) in [
            ("a.mjr", &b"one"[..]),
            ("info.json", b"{}"),
            ("b.mjr", b"two!"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, body).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let body = bytes::Bytes::from(gz.finish().unwrap());
        store
            .put("s.tar.gz", body, PutOptions::default())
            .await
            .unwrap();
        let mjr = |n: &str| n.ends_with(".mjr");
        let got = parse_entries(&store, "s.tar.gz", mjr, |_, mut f| {
            let mut b = Vec::new();
            f.read_to_end(&mut b).map_err(|e| e.to_string())?;
            Ok(b.len())
        })
        .await
        .unwrap();
        assert_eq!(
            got,
            vec![("a.mjr".to_string(), 3), ("b.mjr".to_string(), 4)]
        );
        let e = parse_entries(&store, "s.tar.gz", mjr, |n, _| {
            Err::<(), _>(format!("{n}: broken"))
        })
        .await
        .unwrap_err();
        assert_eq!(e, "a.mjr: broken");
        let e = parse_entries(&store, "missing.tar.gz", mjr, |_, _| Ok(()))
            .await
            .unwrap_err();
        assert!(e.contains("cannot read the RAW archive"), "{e}");
    }
}
