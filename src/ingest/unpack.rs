//! The one-shot upload's tar: unpacked into part files beside it, refusing
//! anything but the allowed regular files (no links, no paths, no
//! duplicates, no oversize entries). Blocking: run it on a blocking thread.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::session::Refusal;
use super::spool::{FileRecord, ALLOWED};

/// A file unpacked and fsync'd, waiting to be committed.
pub struct Part {
    pub name: String,
    pub path: PathBuf,
    pub record: FileRecord,
}

/// Unpacks the tar at `tar_path` into part files in `dir` (named after
/// session `id`), each at most `max` bytes. On a refusal no part file is
/// left behind.
pub fn unpack(tar_path: &Path, dir: &Path, id: &str, max: u64) -> Result<Vec<Part>, Refusal> {
    let mut parts: Vec<Part> = Vec::new();
    let result = unpack_into(tar_path, dir, id, max, &mut parts);
    if result.is_err() {
        parts
            .iter()
            .for_each(|p| drop(std::fs::remove_file(&p.path)));
    }
    result.map(|()| parts)
}

fn unpack_into(
    tar_path: &Path,
    dir: &Path,
    id: &str,
    max: u64,
    parts: &mut Vec<Part>,
) -> Result<(), Refusal> {
    let bad = |msg: String| Refusal::BadRequest(msg);
    let file = std::fs::File::open(tar_path)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("the body is not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("the tar archive is damaged: {e}")))?;
        let kind = entry.header().entry_type();
        let raw = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = raw.trim_start_matches("./").to_string();
        if kind.is_dir() && (name.is_empty() || name == ".") {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!("tar entry {raw:?} is not a regular file")));
        }
        if !ALLOWED.contains(&name.as_str()) {
            return Err(bad(format!(
                "tar entry {raw:?}: names must be one of {}",
                ALLOWED.join(", ")
            )));
        }
        if parts.iter().any(|p| p.name == name) {
            return Err(bad(format!("tar entry {name:?} appears twice")));
        }
        if entry.size() > max {
            return Err(bad(format!(
                "tar entry {name:?} is larger than {max} bytes"
            )));
        }
        let path = dir.join(format!("{id}.{name}.{:016x}", rand::random::<u64>()));
        let mut out = std::fs::File::create(&path)?;
        // Recorded before the copy, so that a failed copy is cleaned up too.
        parts.push(Part {
            name,
            path,
            record: FileRecord::new(0, String::new()),
        });
        let mut hasher = HashingWriter {
            inner: &mut out,
            sha: Sha256::new(),
            n: 0,
        };
        std::io::copy(&mut entry, &mut hasher)?;
        let record = FileRecord::new(hasher.n, hex::encode(hasher.sha.finalize()));
        out.sync_all()?;
        if let Some(p) = parts.last_mut() {
            p.record = record;
        }
    }
    if parts.is_empty() {
        return Err(bad("the tar archive holds no session files".into()));
    }
    Ok(())
}

struct HashingWriter<'a> {
    inner: &'a mut std::fs::File,
    sha: Sha256,
    n: u64,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
