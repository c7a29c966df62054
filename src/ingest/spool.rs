//! The ingest spool: where a session's files wait, durably, until S3 has them.
//!
//! ```text
//! SPOOL/<tenant>/<id>/state.json       the session's state (written atomically)
//! SPOOL/<tenant>/<id>/files/<name>     received files (fsync'd before the 2xx)
//! SPOOL/<tenant>/<id>/files/.<name>.part  a file being received
//! SPOOL/<tenant>/.archived/<id>.json   what was archived (status, hashes)
//! SPOOL/<tenant>/.quarantine/<id>/     sessions that failed validation, for an operator
//! SPOOL/<tenant>/.trash-<id>-<n>/      an archived session's folder being deleted
//! ```
//! Every state change is written to a temporary file, fsync'd, renamed over
//! `state.json` and the folder fsync'd, so a crash at any moment leaves
//! either the old or the new state, never half of one. State changes are
//! async and run on blocking threads (fsync, rename and remove may take
//! milliseconds), never on the async workers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The files a session may hold.
pub const ALLOWED: [&str; 5] = [
    "agent-audio.mjr",
    "agent-video.mjr",
    "user-audio.mjr",
    "user-video.mjr",
    "info.json",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Receiving,
    Queued,
    Archiving,
    Archived,
    Failed,
}

/// A received file's size and SHA-256: what the index records of it.
pub use crate::layout::index::Digest as FileRecord;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionState {
    pub tenant: String,
    pub id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub files: BTreeMap<String, FileRecord>,
    /// When `complete` was accepted (RFC 3339); also the index's `ingested_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// A multipart upload in progress, aborted if the archiver restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<(String, String)>,
    /// Storage key of the archived index, once archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_key: Option<String>,
    /// Archiving attempts that failed for a reason a retry cannot mend (a
    /// panic); at `[limits] archive_max_failures` the session is quarantined.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SessionState {
    pub fn new(tenant: &str, id: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            id: id.to_string(),
            status: Status::Receiving,
            reason: None,
            files: BTreeMap::new(),
            completed_at: None,
            upload: None,
            index_key: None,
            failures: 0,
        }
    }

    /// Total bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }
}

/// The spool folder.
#[derive(Clone)]
pub struct Spool {
    root: PathBuf,
}

/// Syncs a folder so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent folder"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{:x}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        rand::random::<u64>()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

impl Spool {
    /// Opens (creates) the spool; its folder is made private to recvault's
    /// user (mode 0700): RAW files wait there in clear until archived.
    pub fn open(root: &Path) -> std::io::Result<Spool> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        Ok(Spool {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn session_dir(&self, tenant: &str, id: &str) -> PathBuf {
        self.root.join(tenant).join(id)
    }

    pub fn files_dir(&self, tenant: &str, id: &str) -> PathBuf {
        self.session_dir(tenant, id).join("files")
    }

    fn archived_path(&self, tenant: &str, id: &str) -> PathBuf {
        self.root
            .join(tenant)
            .join(".archived")
            .join(format!("{id}.json"))
    }

    fn quarantine_dir(&self, tenant: &str, id: &str) -> PathBuf {
        self.root.join(tenant).join(".quarantine").join(id)
    }

    /// Runs `f` on a clone of the spool on a blocking thread.
    async fn off_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce(Spool) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || f(spool))
            .await
            .map_err(std::io::Error::other)?
    }

    /// The state of a session: in the spool, archived, or quarantined.
    pub async fn load(&self, tenant: &str, id: &str) -> std::io::Result<Option<SessionState>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.off_thread(move |s| s.load_now(&tenant, &id)).await
    }

    /// Writes a session's state, atomically and durably.
    pub async fn save(&self, st: &SessionState) -> std::io::Result<()> {
        let st = st.clone();
        self.off_thread(move |s| s.save_now(&st)).await
    }

    /// Records the session as archived, then removes its spooled files.
    pub async fn finish(&self, st: &SessionState) -> std::io::Result<()> {
        let st = st.clone();
        self.off_thread(move |s| s.finish_now(&st)).await
    }

    /// Moves a failed session into quarantine, keeping its files for an operator.
    pub async fn quarantine(&self, st: &SessionState) -> std::io::Result<()> {
        let st = st.clone();
        self.off_thread(move |s| s.quarantine_now(&st)).await
    }

    /// Makes the received (fsync'd) file at `part` the session's file
    /// `name`, durably.
    pub async fn adopt(
        &self,
        tenant: &str,
        id: &str,
        name: &str,
        part: &Path,
    ) -> std::io::Result<()> {
        let (files, part, name) = (
            self.files_dir(tenant, id),
            part.to_path_buf(),
            name.to_string(),
        );
        self.off_thread(move |_| {
            std::fs::create_dir_all(&files)?;
            std::fs::rename(part, files.join(name))?;
            sync_dir(&files)
        })
        .await
    }

    fn load_now(&self, tenant: &str, id: &str) -> std::io::Result<Option<SessionState>> {
        for path in [
            self.session_dir(tenant, id).join("state.json"),
            self.archived_path(tenant, id),
            self.quarantine_dir(tenant, id).join("state.json"),
        ] {
            match std::fs::read(&path) {
                Ok(b) => {
                    return serde_json::from_slice(&b)
                        .map(Some)
                        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn save_now(&self, s: &SessionState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
        match s.status {
            Status::Archived => write_atomic(&self.archived_path(&s.tenant, &s.id), &bytes),
            _ => write_atomic(
                &self.session_dir(&s.tenant, &s.id).join("state.json"),
                &bytes,
            ),
        }
    }

    fn finish_now(&self, s: &SessionState) -> std::io::Result<()> {
        self.save_now(s)?;
        // Rename the folder aside first, so that it disappears at once: a
        // reader never sees a half-deleted session. A crash mid-delete
        // leaves only a `.trash-*` folder, cleared at the next start.
        let tenant_dir = self.root.join(&s.tenant);
        let trash = tenant_dir.join(format!(".trash-{}-{:016x}", s.id, rand::random::<u64>()));
        match std::fs::rename(self.session_dir(&s.tenant, &s.id), &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        sync_dir(&tenant_dir)?;
        std::fs::remove_dir_all(&trash)
    }

    fn quarantine_now(&self, s: &SessionState) -> std::io::Result<()> {
        self.save_now(s)?;
        let to = self.quarantine_dir(&s.tenant, &s.id);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_dir_all(&to);
        std::fs::rename(self.session_dir(&s.tenant, &s.id), &to)?;
        sync_dir(&self.root.join(&s.tenant))
    }

    /// Removes what a crash can leave behind: part files of uploads that
    /// were cut off, and archived sessions' folders caught mid-delete. Call
    /// at start, when no upload is in flight.
    pub fn clear_leftovers(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        for tenant in std::fs::read_dir(&self.root)? {
            let tenant = tenant?.path();
            if let Ok(rd) = std::fs::read_dir(tenant.join(".incoming")) {
                removed += rd
                    .flatten()
                    .filter(|f| std::fs::remove_file(f.path()).is_ok())
                    .count();
            }
            let Ok(rd) = std::fs::read_dir(&tenant) else {
                continue;
            };
            let trash = rd
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".trash-"));
            removed += trash
                .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
                .count();
        }
        Ok(removed)
    }

    /// Every session waiting to be archived (queued or interrupted while archiving).
    pub fn pending(&self) -> std::io::Result<Vec<SessionState>> {
        let mut out = Vec::new();
        for tenant in std::fs::read_dir(&self.root)? {
            let tenant = tenant?;
            if !tenant.file_type()?.is_dir() {
                continue;
            }
            for session in std::fs::read_dir(tenant.path())? {
                let session = session?;
                let name = session.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                if let Ok(b) = std::fs::read(session.path().join("state.json")) {
                    if let Ok(s) = serde_json::from_slice::<SessionState>(&b) {
                        if matches!(s.status, Status::Queued | Status::Archiving) {
                            out.push(s);
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.completed_at.cmp(&b.completed_at));
        Ok(out)
    }
}

/// Free bytes on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    fs4::available_space(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn states_move_between_spool_archive_and_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut s = SessionState::new("acme", "call-1");
        spool.save(&s).await.unwrap();
        assert_eq!(
            spool.load("acme", "call-1").await.unwrap().unwrap().status,
            Status::Receiving
        );
        s.status = Status::Queued;
        s.completed_at = Some("2026-11-23T10:00:00Z".into());
        spool.save(&s).await.unwrap();
        assert_eq!(spool.pending().unwrap().len(), 1);
        s.status = Status::Archived;
        spool.finish(&s).await.unwrap();
        assert!(!spool.session_dir("acme", "call-1").exists());
        assert_eq!(
            spool.load("acme", "call-1").await.unwrap().unwrap().status,
            Status::Archived
        );
        assert!(spool.pending().unwrap().is_empty());

        let mut bad = SessionState::new("acme", "call-2");
        spool.save(&bad).await.unwrap();
        bad.status = Status::Failed;
        bad.reason = Some("agent-audio.mjr: truncated at byte 7".into());
        spool.quarantine(&bad).await.unwrap();
        let loaded = spool.load("acme", "call-2").await.unwrap().unwrap();
        assert_eq!(
            (loaded.status, loaded.reason.as_deref()),
            (Status::Failed, Some("agent-audio.mjr: truncated at byte 7"))
        );
        assert!(
            spool.load("other", "call-2").await.unwrap().is_none(),
            "tenants do not share sessions"
        );
    }
}
