//! A render's bytes on disk while it runs: an unlinked temporary file (in
//! `$TMPDIR`, mode 0600) that the render appends to and every reader reads
//! at its own offset, so a long render costs disk, not memory, and nothing
//! is left behind when the process dies.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

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
}
