//! A render's bytes on disk while it runs: an unlinked temporary file (in
//! `$TMPDIR`, mode 0600) that the render appends to and every reader reads
//! at its own offset, so a long render costs disk, not memory, and nothing
//! is left behind when the process dies. [`Growing`] adds the length so far
//! and the end, and streams the file to readers as it grows.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::store::{ByteStream, StoreError};

/// Largest piece a reader takes from the file at once.
const READ_CHUNK: u64 = 256 << 10;

pub struct Spill {
    file: File,
}

impl Spill {
    /// Creates the file and unlinks it at once; it lives while it is open.
    pub fn new() -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!(
            "recvault-spill-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("render spill file {}: {e}", path.display()))?;
        std::fs::remove_file(&path)
            .map_err(|e| format!("render spill file {}: {e}", path.display()))?;
        Ok(Self { file })
    }

    /// Writes `bytes` at `at` (the caller's running length).
    pub fn write_at(&self, bytes: &[u8], at: u64) -> Result<(), String> {
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| format!("render spill file: {e}"))
    }

    /// The file for reading from its start (a handle of its own; the
    /// spill's positional writes do not move it).
    pub fn reader(&self) -> Result<File, String> {
        use std::io::Seek;
        let mut f = self
            .file
            .try_clone()
            .map_err(|e| format!("render spill file: {e}"))?;
        f.rewind().map_err(|e| format!("render spill file: {e}"))?;
        Ok(f)
    }

    /// Reads up to `len` bytes at `at`; fewer only at the end of what was written.
    pub fn read_at(&self, at: u64, len: usize) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match self.file.read_at(&mut buf[got..], at + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("render spill file: {e}")),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }
}

/// Where a growing file stands: bytes written so far, and its end.
#[derive(Clone, Default)]
struct Progress {
    len: u64,
    end: Option<Result<(), String>>,
}

/// A spill file one writer appends to while any number of readers follow it.
pub struct Growing {
    spill: Spill,
    progress: watch::Sender<Progress>,
}

impl Growing {
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            spill: Spill::new()?,
            progress: watch::Sender::new(Progress::default()),
        })
    }

    /// Appends bytes and wakes the readers (one writer only).
    pub fn push(&self, b: &[u8]) -> Result<(), String> {
        let at = self.len();
        self.spill.write_at(b, at)?;
        self.progress.send_modify(|p| p.len += b.len() as u64);
        Ok(())
    }

    /// Ends the file: readers get the rest, then the end or the error.
    pub fn end(&self, result: Result<(), String>) {
        self.progress.send_modify(|p| p.end = Some(result));
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.progress.borrow().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Readers following the file now.
    pub fn readers(&self) -> usize {
        self.progress.receiver_count()
    }

    /// The bytes from `offset`, as they are written; counts as a reader
    /// from this call on.
    pub fn follow(self: &Arc<Self>, offset: u64) -> ByteStream {
        let state = (self.clone(), self.progress.subscribe(), offset);
        Box::pin(futures::stream::unfold(Some(state), |state| async move {
            let (file, mut rx, at) = state?;
            loop {
                let (len, end) = {
                    let p = rx.borrow_and_update();
                    (p.len, p.end.clone())
                };
                if at < len {
                    let want = (len - at).min(READ_CHUNK) as usize;
                    return match file.spill.read_at(at, want) {
                        Ok(b) if b.len() == want => {
                            let next = at + want as u64;
                            Some((Ok(Bytes::from(b)), Some((file, rx, next))))
                        }
                        Ok(_) => Some((
                            Err(StoreError::Permanent(
                                "render spill file ended early".into(),
                            )),
                            None,
                        )),
                        Err(e) => Some((Err(StoreError::Permanent(e)), None)),
                    };
                }
                match end {
                    Some(Ok(())) => return None,
                    Some(Err(e)) => {
                        return Some((
                            Err(StoreError::Permanent(format!("render failed: {e}"))),
                            None,
                        ))
                    }
                    None => {
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_read_back_at_any_offset_and_the_file_has_no_name() {
        let s = Spill::new().unwrap();
        s.write_at(b"hello ", 0).unwrap();
        s.write_at(b"world", 6).unwrap();
        assert_eq!(s.read_at(0, 11).unwrap(), b"hello world");
        assert_eq!(s.read_at(6, 100).unwrap(), b"world");
        assert!(s.read_at(11, 4).unwrap().is_empty());
        let pid = std::process::id();
        let named = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("recvault-spill-{pid}-"))
            });
        assert!(!named, "the spill file must be unlinked");
    }

    #[tokio::test]
    async fn a_growing_file_is_read_from_any_offset_while_it_grows() {
        let file = Arc::new(Growing::new().unwrap());
        let reader = file.follow(3);
        assert_eq!(file.readers(), 1);
        let writer = file.clone();
        let produce = async move {
            for piece in [&b"abcd"[..], b"efgh", b"ij"] {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                writer.push(piece).unwrap();
            }
            writer.end(Ok(()));
        };
        let read = async move {
            use futures::StreamExt;
            let chunks: Vec<_> = reader.collect().await;
            chunks
                .into_iter()
                .flat_map(|c| c.unwrap().to_vec())
                .collect::<Vec<u8>>()
        };
        let ((), got) = tokio::join!(produce, read);
        assert_eq!(got, b"defghij");
        assert_eq!(file.len(), 10);
    }

    #[tokio::test]
    async fn a_failed_file_ends_its_readers_with_the_error() {
        use futures::StreamExt;
        let file = Arc::new(Growing::new().unwrap());
        let mut reader = file.follow(0);
        file.end(Err("ffmpeg failed: boom".into()));
        let e = reader.next().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        assert!(reader.next().await.is_none());
    }
}
