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
    check_metadata_sizes(&mut std::io::BufReader::new(std::fs::File::open(tar_path)?))
        .map_err(bad)?;
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
        let max = super::validate::max_file_bytes(&name, max);
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

/// The most bytes of one tar metadata entry (a GNU long name or link, a
/// PAX header): the tar reader holds those in memory whole.
const MAX_METADATA: u64 = 64 * 1024;

/// Walks the tar's 512-byte headers without reading the file entries, and
/// refuses a metadata entry (GNU long name/link, PAX) declaring more than
/// [`MAX_METADATA`] bytes, before the tar reader would read it into memory
/// at the size its header claims. A PAX `size` record replaces the next
/// entry's header size, as the tar reader does, so the walk stays on the
/// headers the reader will see; GNU sparse entries are refused (their
/// extension blocks are not headers, and a session file is never sparse).
/// File entries are streamed, never held.
fn check_metadata_sizes(r: &mut (impl std::io::Read + std::io::Seek)) -> Result<(), String> {
    let damaged = |what: String| format!("the tar archive is damaged: {what}");
    let mut header = [0u8; 512];
    // The `size` of the last PAX header, for the next entry.
    let mut pax_size: Option<u64> = None;
    loop {
        match read_block(r, &mut header) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(damaged(e.to_string())),
        }
        if header.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let declared = header_size(&header[124..136])
            .ok_or_else(|| damaged("an entry size is not a number".into()))?;
        let kind = header[156];
        if kind == b'S' {
            return Err("tar entries may not be sparse files".into());
        }
        let metadata = matches!(kind, b'L' | b'K' | b'x' | b'g');
        if metadata && declared > MAX_METADATA {
            return Err(format!(
                "the tar archive's metadata entry declares {declared} bytes (at most {MAX_METADATA})"
            ));
        }
        let size = if metadata {
            declared
        } else {
            pax_size.take().unwrap_or(declared)
        };
        if kind == b'x' {
            let mut records = vec![0u8; declared as usize];
            r.read_exact(&mut records)
                .map_err(|e| damaged(e.to_string()))?;
            pax_size = pax_record(&records, "size")
                .map(|v| {
                    v.parse()
                        .map_err(|_| damaged(format!("a PAX size of {v:?}")))
                })
                .transpose()?
                .or(pax_size);
            let pad = declared.div_ceil(512) * 512 - declared;
            r.seek(std::io::SeekFrom::Current(pad as i64))
                .map_err(|e| damaged(e.to_string()))?;
            continue;
        }
        let skip = size.div_ceil(512).saturating_mul(512);
        let skip =
            i64::try_from(skip).map_err(|_| damaged(format!("an entry declares {size} bytes")))?;
        r.seek(std::io::SeekFrom::Current(skip))
            .map_err(|e| damaged(e.to_string()))?;
    }
}

/// The value of `key` in PAX extended header records (`<len> key=value\n`).
fn pax_record<'a>(records: &'a [u8], key: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(records).ok()?;
    let mut found = None;
    let mut rest = text;
    while !rest.is_empty() {
        let (len, _) = rest.split_once(' ')?;
        let n: usize = len.parse().ok()?;
        let record = rest.get(..n)?;
        rest = &rest[n..];
        let (_, kv) = record.split_once(' ')?;
        let (k, v) = kv.trim_end_matches('\n').split_once('=')?;
        if k == key {
            found = Some(v);
        }
    }
    found
}

/// Fills `block`; `false` at a clean end of input.
fn read_block(r: &mut impl std::io::Read, block: &mut [u8; 512]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..])? {
            0 if got == 0 => return Ok(false),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(true)
}

/// A tar header's size field: octal digits, or base-256 when the top bit
/// of its first byte is set.
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar header of `kind` declaring `size` bytes (octal), checksummed.
    fn header(name: &str, kind: u8, size: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        let size = format!("{size:011o}");
        h[124..135].copy_from_slice(size.as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    #[test]
    fn a_long_name_entry_declaring_gigabytes_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("one-shot.tar");
        // A GNU long-name entry claiming 4 GiB, followed by 1 MiB of it:
        // the tar reader would try to hold all it declares in memory.
        let mut bytes = header("././@LongLink", b'L', 4 << 30).to_vec();
        bytes.extend(std::iter::repeat_n(b'a', 1 << 20));
        let err = refusal(&tar, &bytes);
        assert!(
            err.contains("metadata entry declares 4294967296 bytes"),
            "{err}"
        );

        // A small long name is fine and the file behind it unpacks.
        let mut ok = header("././@LongLink", b'L', 10).to_vec();
        ok.extend(b"info.json\0");
        ok.extend([0u8; 502]);
        ok.extend(header("x", b'0', 2));
        ok.extend(b"{}");
        ok.extend([0u8; 510]);
        ok.extend([0u8; 1024]);
        std::fs::write(&tar, &ok).unwrap();
        let parts = unpack(&tar, dir.path(), "call-1", 1 << 40).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name, "info.json");
        assert_eq!(parts[0].record.size, 2);
    }

    /// Writes `bytes` as the tar at `tar` and gives the refusal unpacking it.
    fn refusal(tar: &std::path::Path, bytes: &[u8]) -> String {
        std::fs::write(tar, bytes).unwrap();
        let dir = tar.parent().unwrap();
        match unpack(tar, dir, "call-1", 1 << 40) {
            Err(Refusal::BadRequest(m)) => m,
            other => panic!("{:?}", other.map(|p| p.len())),
        }
    }

    /// A PAX header holding `records`.
    fn pax(records: &str) -> Vec<u8> {
        let mut out = header("././@PaxHeader", b'x', records.len() as u64).to_vec();
        out.extend(records.as_bytes());
        out.extend(std::iter::repeat_n(
            0u8,
            records.len().div_ceil(512) * 512 - records.len(),
        ));
        out
    }

    #[test]
    fn a_pax_size_hiding_a_huge_long_name_behind_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("one-shot.tar");
        // PAX says the next file is empty; its header claims 1024 bytes,
        // which a walk by header sizes would skip, over a long-name entry
        // declaring 4 GiB that the tar reader reads next.
        let mut bytes = pax("10 size=0\n");
        bytes.extend(header("info.json", b'0', 1024));
        bytes.extend(header("././@LongLink", b'L', 4 << 30));
        bytes.extend(std::iter::repeat_n(b'a', 1 << 20));
        let err = refusal(&tar, &bytes);
        assert!(
            err.contains("metadata entry declares 4294967296 bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_pax_size_is_honoured_for_the_file_it_describes() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("one-shot.tar");
        let mut bytes = pax("10 size=2\n");
        bytes.extend(header("info.json", b'0', 0));
        bytes.extend(b"{}");
        bytes.extend([0u8; 510]);
        bytes.extend([0u8; 1024]);
        std::fs::write(&tar, &bytes).unwrap();
        let parts = unpack(&tar, dir.path(), "call-1", 1 << 40).unwrap();
        assert_eq!(parts[0].record.size, 2);
    }

    #[test]
    fn info_json_over_its_cap_is_refused_in_a_tar() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("one-shot.tar");
        let big = super::super::validate::MAX_INFO_BYTES + 1;
        let mut bytes = header("info.json", b'0', big).to_vec();
        bytes.extend(std::iter::repeat_n(b' ', big.div_ceil(512) as usize * 512));
        bytes.extend([0u8; 1024]);
        let err = refusal(&tar, &bytes);
        assert!(
            err.contains("\"info.json\" is larger than 262144 bytes"),
            "{err}"
        );
    }
}
