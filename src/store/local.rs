//! A directory as an object store: key `a/b/c` is the file `ROOT/a/b/c`.
//!
//! Writes go to a temporary file that is fsync'd and then renamed (or, for a
//! conditional create, hard-linked, which fails when the key exists), so a
//! reader never sees half an object. Temporary files live in `ROOT/#tmp`,
//! a name no key can have.
//!
//! An object's mark ([`ObjectMeta::mark`]) is the file `NAME#mark-INODE`
//! beside it: tied to the inode, so it stays with the object's file through
//! the rename or hard link that publishes it, and a replaced object never
//! inherits its predecessor's mark.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{Got, ListPage, ObjectMeta, ObjectStore, PutOptions, StoreError};

const TMP: &str = "#tmp";
const PAGE: usize = 1000;
const CHUNK: usize = 256 * 1024;

pub struct LocalStore {
    root: PathBuf,
    seq: AtomicU64,
}

impl LocalStore {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join(TMP))?;
        Ok(Self {
            root: root.to_owned(),
            seq: AtomicU64::new(0),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let ok = !key.is_empty()
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains(['#', '\0', '\\']));
        if !ok {
            return Err(StoreError::Permanent(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(key))
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.root.join(TMP).join(format!(
            "{}-{n}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ))
    }

    /// Writes `parts` into a synced temporary file and returns its path.
    fn write_tmp(&self, parts: &[&[u8]]) -> std::io::Result<PathBuf> {
        let tmp = self.tmp_path();
        let mut f = std::fs::File::create(&tmp)?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
        Ok(tmp)
    }

    fn publish(
        &self,
        tmp: &Path,
        dest: &Path,
        opts: &PutOptions,
        key: &str,
    ) -> Result<(), StoreError> {
        let if_absent = opts.if_absent;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        // The new file's mark goes beside the destination before the file
        // does (a mark without its file is never read); the old file's is
        // removed once it is replaced.
        let ino = std::fs::metadata(tmp).map_err(io_err)?.ino();
        let mark = mark_path(dest, ino);
        match &opts.mark {
            Some(m) => write_synced(&mark, m.as_bytes()).map_err(io_err)?,
            None => remove_if_there(&mark).map_err(io_err)?,
        }
        // A write on a version (If-Match): checked and made under one lock,
        // so two writers cannot both replace the version they read.
        let _cas = match &opts.if_match {
            Some(want) => {
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(self.root.join(TMP).join("cas.lock"))
                    .map_err(io_err)?;
                lock.lock().map_err(io_err)?;
                let now = std::fs::metadata(dest).ok().map(|md| etag_of(&md));
                if now.as_deref() != Some(want.as_str()) {
                    let _ = std::fs::remove_file(tmp);
                    if opts.mark.is_some() {
                        let _ = std::fs::remove_file(&mark);
                    }
                    return Err(StoreError::Changed(key.to_string()));
                }
                Some(lock)
            }
            None => None,
        };
        let old = std::fs::metadata(dest).ok().map(|md| md.ino());
        let res = if if_absent {
            let r = std::fs::hard_link(tmp, dest);
            let _ = std::fs::remove_file(tmp);
            r
        } else {
            std::fs::rename(tmp, dest)
        };
        if res.is_err() && opts.mark.is_some() {
            let _ = std::fs::remove_file(&mark);
        }
        match res {
            Ok(()) => {
                if let Some(old) = old.filter(|o| *o != ino) {
                    let _ = std::fs::remove_file(mark_path(dest, old));
                }
                if let Some(dir) = dest.parent() {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists(key.to_string()))
            }
            Err(e) => {
                let _ = std::fs::remove_file(tmp);
                Err(io_err(e))
            }
        }
    }

    fn upload_dir(&self, upload: &str) -> Result<PathBuf, StoreError> {
        if upload.is_empty() || !upload.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Permanent(format!(
                "unknown multipart upload {upload:?}"
            )));
        }
        Ok(self.root.join(TMP).join(format!("mpu-{upload}")))
    }
}

/// A local object's version tag: its file's inode, change time and size
/// (every write publishes a new file, so a new inode).
fn etag_of(md: &std::fs::Metadata) -> String {
    format!(
        "{:x}-{:x}.{:x}-{:x}",
        md.ino(),
        md.ctime(),
        md.ctime_nsec(),
        md.len()
    )
}

/// The mark of the object file `path` whose inode is `ino`.
fn mark_path(path: &Path, ino: u64) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{}#mark-{ino}", name.unwrap_or_default()))
}

/// The mark of the object file `path` (with metadata `md`), if it has one.
fn read_mark(path: &Path, md: &std::fs::Metadata) -> Result<Option<String>, StoreError> {
    match std::fs::read_to_string(mark_path(path, md.ino())) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Permanent(format!("local storage: {e}"))
}

fn meta_of(key: String, md: &std::fs::Metadata) -> ObjectMeta {
    let last_modified: DateTime<Utc> = md
        .modified()
        .map(DateTime::from)
        .unwrap_or_else(|_| Utc::now());
    ObjectMeta {
        key,
        size: md.len(),
        last_modified,
        mark: None,
        etag: Some(etag_of(md)),
    }
}

/// Collects every key under `dir` (whose key prefix is `base`) that starts with `prefix`.
fn walk(
    dir: &Path,
    base: &str,
    prefix: &str,
    delimiter: Option<&str>,
    out: &mut Vec<(String, Option<std::fs::Metadata>)>,
) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.contains('#') {
            continue;
        }
        let key = format!("{base}{name}");
        let ft = entry.file_type()?;
        if ft.is_dir() {
            let sub = format!("{key}/");
            // Descend only where keys can still match the prefix.
            if !(sub.starts_with(prefix) || prefix.starts_with(&sub)) {
                continue;
            }
            if delimiter == Some("/") && sub.starts_with(prefix) {
                out.push((sub, None));
            } else {
                walk(&entry.path(), &sub, prefix, delimiter, out)?;
            }
        } else if ft.is_file() && key.starts_with(prefix) {
            out.push((key, Some(entry.metadata()?)));
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => {
                let mark = read_mark(&path, &md)?;
                Ok(Some(ObjectMeta {
                    mark,
                    ..meta_of(key.to_string(), &md)
                }))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
                Ok(None)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    async fn get_object(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Got, StoreError> {
        let path = self.path(key)?;
        let key = key.to_string();
        let file = tokio::task::spawn_blocking(
            move || -> Result<(std::fs::File, ObjectMeta), StoreError> {
                let mut f = std::fs::File::open(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        StoreError::NotFound(key.clone())
                    } else {
                        io_err(e)
                    }
                })?;
                let md = f.metadata().map_err(io_err)?;
                if !md.is_file() {
                    return Err(StoreError::NotFound(key));
                }
                let meta = ObjectMeta {
                    mark: read_mark(&path, &md)?,
                    ..meta_of(key, &md)
                };
                f.seek(SeekFrom::Start(offset.min(meta.size)))
                    .map_err(io_err)?;
                Ok((f, meta))
            },
        )
        .await
        .map_err(|e| StoreError::Permanent(e.to_string()))??;
        let (file, meta) = file;
        let size = meta.size;
        let end = len.map_or(size, |l| offset.saturating_add(l).min(size));
        let remaining = end.saturating_sub(offset);
        let state = (Some(file), remaining);
        let stream = futures::stream::unfold(state, |(file, remaining)| async move {
            let mut f = file?;
            if remaining == 0 {
                return None;
            }
            let want = (remaining as usize).min(CHUNK);
            let res = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    match f.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(filled);
                Ok((f, buf))
            })
            .await;
            match res {
                Ok(Ok((f, buf))) if !buf.is_empty() => {
                    let left = remaining - buf.len() as u64;
                    Some((Ok(Bytes::from(buf)), (Some(f), left)))
                }
                Ok(Ok(_)) => Some((
                    Err(StoreError::Permanent(
                        "object shrank while being read".into(),
                    )),
                    (None, 0),
                )),
                Ok(Err(e)) => Some((Err(io_err(e)), (None, 0))),
                Err(e) => Some((Err(StoreError::Permanent(e.to_string())), (None, 0))),
            }
        });
        Ok(Got {
            meta,
            body: Box::pin(stream),
        })
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        if delimiter.is_some_and(|d| d != "/") {
            return Err(StoreError::Permanent(
                "local storage lists only with delimiter \"/\"".into(),
            ));
        }
        // Start at the deepest directory that contains every match.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        if !dir_part.is_empty() {
            self.path(dir_part.trim_end_matches('/'))?;
        }
        let root = self.root.join(dir_part);
        let (base, prefix_owned, delim) = (
            dir_part.to_string(),
            prefix.to_string(),
            delimiter.map(str::to_owned),
        );
        let mut all = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &base, &prefix_owned, delim.as_deref(), &mut out).map(|_| out)
        })
        .await
        .map_err(|e| StoreError::Permanent(e.to_string()))?
        .map_err(io_err)?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let start = match &continuation {
            Some(after) => all.partition_point(|(k, _)| k.as_str() <= after.as_str()),
            None => 0,
        };
        let mut page = ListPage::default();
        let mut last = None;
        for (key, md) in all.iter().skip(start).take(PAGE) {
            last = Some(key.clone());
            match md {
                Some(md) => page.objects.push(meta_of(key.clone(), md)),
                None => page.common_prefixes.push(key.clone()),
            }
        }
        if start + PAGE < all.len() {
            page.next = last;
        }
        Ok(page)
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError> {
        let dest = self.path(key)?;
        let tmp = self.write_tmp(&[&body]).map_err(io_err)?;
        self.publish(&tmp, &dest, &opts, key)
    }

    async fn multipart_start(&self, key: &str, mark: Option<&str>) -> Result<String, StoreError> {
        self.path(key)?;
        let id = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let dir = self.upload_dir(&id)?;
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        // The key, for listing unfinished uploads.
        std::fs::write(dir.join("key"), key).map_err(io_err)?;
        if let Some(m) = mark {
            std::fs::write(dir.join("mark"), m).map_err(io_err)?;
        }
        Ok(id)
    }

    async fn multipart_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.path(key)?;
        let dir = self.upload_dir(upload)?;
        if !dir.is_dir() {
            return Err(StoreError::NotFound(format!("multipart upload {upload}")));
        }
        let mut f = std::fs::File::create(dir.join(format!("{number:05}"))).map_err(io_err)?;
        f.write_all(&body).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        Ok(format!("{number:05}"))
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload: &str,
        tags: Vec<String>,
    ) -> Result<(), StoreError> {
        let dest = self.path(key)?;
        let dir = self.upload_dir(upload)?;
        let tmp = self.tmp_path();
        {
            let mut out = std::fs::File::create(&tmp).map_err(io_err)?;
            for tag in &tags {
                if tag.len() != 5 || !tag.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(StoreError::Permanent(format!("invalid part tag {tag:?}")));
                }
                let mut part = std::fs::File::open(dir.join(tag)).map_err(io_err)?;
                std::io::copy(&mut part, &mut out).map_err(io_err)?;
            }
            out.sync_all().map_err(io_err)?;
        }
        let mark = match std::fs::read_to_string(dir.join("mark")) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        let opts = PutOptions {
            if_absent: false,
            mark,
            if_match: None,
        };
        self.publish(&tmp, &dest, &opts, key)?;
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    async fn multipart_abort(&self, _key: &str, upload: &str) -> Result<(), StoreError> {
        let dir = self.upload_dir(upload)?;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn multipart_list(&self, prefix: &str) -> Result<Vec<super::Upload>, StoreError> {
        let mut out = Vec::new();
        let dir = self.root.join(TMP);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("mpu-") else {
                continue;
            };
            let path = e.path().join("key");
            let Ok(key) = std::fs::read_to_string(&path) else {
                continue;
            };
            let started = e
                .metadata()
                .and_then(|m| m.modified())
                .map(DateTime::<Utc>::from)
                .map_err(io_err)?;
            if key.starts_with(prefix) {
                out.push(super::Upload {
                    key,
                    id: id.to_string(),
                    started,
                });
            }
        }
        out.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id)));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let ino = std::fs::symlink_metadata(&path).ok().map(|md| md.ino());
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Some(ino) = ino {
                    remove_if_there(&mark_path(&path, ino)).map_err(io_err)?;
                }
                // Remove directories the delete left empty, up to the root.
                let mut dir = path.parent();
                while let Some(d) = dir {
                    if d == self.root || std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        super::super::contract::run(&store, "").await;
        super::super::contract::marks(&store, "").await;
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("objects")).unwrap();
        for key in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "#tmp/x",
            "a\\..\\b",
        ] {
            assert!(
                store
                    .put(key, Bytes::from_static(b"x"), PutOptions::default())
                    .await
                    .is_err(),
                "{key}"
            );
            assert!(store.head(key).await.is_err(), "{key}");
        }
        assert!(!dir.path().join("x").exists());
    }

    #[tokio::test]
    async fn listing_pages_through_many_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        for i in 0..2500 {
            store
                .put(&format!("d/{i:05}"), Bytes::new(), PutOptions::default())
                .await
                .unwrap();
        }
        let (mut token, mut seen) = (None, Vec::new());
        loop {
            let page = store.list_page("d/", Some("/"), token).await.unwrap();
            seen.extend(page.objects.into_iter().map(|o| o.key));
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 2500);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }
}
