//! The archiver: turns a completed, spooled session into its storage objects.
//!
//! For each queued session, in a bounded pool: validate; stream the RAW
//! archive (`<id>.tar.gz`: the files in name order, fixed headers, so the
//! same files always give the same bytes) into a multipart upload with
//! bounded memory; write the indexed `info.json` **last** with
//! `If-None-Match: *`; verify both with HEAD; only then record the session as
//! archived and delete the spool copy. Storage errors are retried with
//! jittered backoff without limit; an attempt that panics is retried too,
//! but after `[limits] archive_max_failures` of those the session is
//! quarantined (a parser bug must not hold a worker forever); a restart
//! resumes every queued or interrupted session. A session whose index already exists is compared, not rewritten:
//! the same files make it archived, different ones a conflict.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Mutex};
use tracing::{error, info, warn};

use super::spool::{SessionState, Spool, Status};
use super::validate::{validate, Validated};
use crate::layout::index::{self, Derived, Digest, SessionIndex, Summer};
use crate::layout::SessionKeys;
use crate::store::{PutOptions, SharedStore, StoreError};

/// Multipart part size (S3's minimum is 5 MiB for all parts but the last).
const PART: usize = 8 * 1024 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where a tenant's sessions are archived.
#[derive(Clone)]
pub struct Target {
    pub prefix: String,
    pub store: SharedStore,
    /// The tenant's day indexes (over `store`), shared with the tree.
    pub days: Arc<crate::days::Days>,
    /// The tenant's MP4 video cap (bits/s), recorded in each index it writes.
    pub mp4_video_bps: u64,
    /// Encoders of a new session's MP4 (`[limits] render_threads`).
    pub render_threads: u32,
    /// For `delivery = "customer"`: the deliverer that takes the session
    /// on from `store` (the operator's backup) to the customer's storage.
    pub delivery: Option<Arc<crate::delivery::Deliverer>>,
}

pub struct Archiver {
    spool: Spool,
    targets: HashMap<String, Target>,
    /// A session to archive, and how long to wait after this attempt fails.
    tx: mpsc::UnboundedSender<(String, String, Duration)>,
    max_failures: u32,
    first_backoff: Duration,
    audit: Arc<crate::audit::Audit>,
}

impl Archiver {
    /// Starts `workers` archiving tasks and queues every pending session.
    pub fn start(
        spool: Spool,
        targets: HashMap<String, Target>,
        limits: &crate::limits::Limits,
        audit: Arc<crate::audit::Audit>,
    ) -> std::io::Result<Arc<Archiver>> {
        Self::start_with(spool, targets, limits, Duration::from_secs(1), audit)
    }

    fn start_with(
        spool: Spool,
        targets: HashMap<String, Target>,
        limits: &crate::limits::Limits,
        first_backoff: Duration,
        audit: Arc<crate::audit::Audit>,
    ) -> std::io::Result<Arc<Archiver>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let archiver = Arc::new(Archiver {
            spool,
            targets,
            tx,
            max_failures: limits.archive_max_failures.max(1),
            first_backoff,
            audit,
        });
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..limits.archive_concurrency.max(1) {
            let (a, rx) = (archiver.clone(), rx.clone());
            tokio::spawn(async move {
                loop {
                    let job = rx.lock().await.recv().await;
                    let Some((tenant, id, delay)) = job else {
                        break;
                    };
                    a.archive_with_retry(tenant, id, delay).await;
                }
            });
        }
        let pending = archiver.spool.pending()?;
        if !pending.is_empty() {
            info!(
                sessions = pending.len(),
                "resuming sessions waiting to be archived"
            );
        }
        for s in pending {
            archiver.enqueue(&s.tenant, &s.id);
        }
        Ok(archiver)
    }

    pub fn enqueue(&self, tenant: &str, id: &str) {
        let _ = self
            .tx
            .send((tenant.to_string(), id.to_string(), self.first_backoff));
    }

    /// One attempt; a session that must be tried again is queued again
    /// after `delay` (doubling up to [`MAX_BACKOFF`]), so that the worker is
    /// free meanwhile: sessions of a tenant whose storage does not answer
    /// never hold up another tenant's.
    async fn archive_with_retry(self: &Arc<Self>, tenant: String, id: String, delay: Duration) {
        // In a task of its own, so that a panic (a parser bug, say) ends
        // the attempt, not the worker.
        let attempt = {
            let (a, t, i) = (self.clone(), tenant.clone(), id.clone());
            tokio::spawn(async move { a.archive_once(&t, &i).await }).await
        };
        let (t, i) = (tenant.as_str(), id.as_str());
        match attempt {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                warn!(tenant = t, session = i, error = %e, retry_in_ms = delay.as_millis() as u64, "archiving failed; will retry");
            }
            // Cancelled (the runtime is shutting down): not the session's fault.
            Err(e) if !e.is_panic() => return,
            Err(panic) => {
                let reason = format!("archiving panicked: {}", panic_text(panic));
                match self.count_failure(t, i, &reason).await {
                    Ok(true) => return,
                    Ok(false) => {
                        error!(tenant = t, session = i, %reason, retry_in_ms = delay.as_millis() as u64, "archiving failed; will retry");
                    }
                    Err(e) => {
                        error!(tenant = t, session = i, %reason, error = %e, "archiving failed and the spool cannot record it; will retry");
                    }
                }
            }
        }
        let (tx, next) = (self.tx.clone(), (delay * 2).min(MAX_BACKOFF));
        tokio::spawn(async move {
            tokio::time::sleep(jittered(delay)).await;
            let _ = tx.send((tenant, id, next));
        });
    }

    /// Records one failure a retry cannot mend; at the limit the session is
    /// quarantined and this returns `true`.
    async fn count_failure(&self, tenant: &str, id: &str, reason: &str) -> Result<bool, String> {
        let Some(mut st) = self
            .spool
            .load(tenant, id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(true);
        };
        st.failures += 1;
        if st.failures >= self.max_failures {
            let reason = format!("{reason} ({} attempts)", st.failures);
            self.fail(st, reason).await?;
            return Ok(true);
        }
        self.spool.save(&st).await.map_err(|e| e.to_string())?;
        Ok(false)
    }

    /// One attempt. `Err` means "try again later"; a session that can never
    /// be archived is quarantined and returns `Ok`.
    async fn archive_once(&self, tenant: &str, id: &str) -> Result<(), String> {
        let spool = &self.spool;
        let Some(mut st) = spool.load(tenant, id).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        if !matches!(st.status, Status::Queued | Status::Archiving) {
            return Ok(());
        }
        let target = self
            .targets
            .get(tenant)
            .ok_or_else(|| format!("tenant {tenant:?} is not configured"))?
            .clone();
        if st.status == Status::Queued {
            st.status = Status::Archiving;
            spool.save(&st).await.map_err(|e| e.to_string())?;
        }
        let files = spool.files_dir(tenant, id);
        let v = {
            let (files, st) = (files.clone(), st.clone());
            tokio::task::spawn_blocking(move || validate(&files, &st))
                .await
                .map_err(rethrow)?
        };
        let v = match v {
            Ok(v) => v,
            Err(reason) => return self.fail(st, reason).await.map(drop),
        };
        let keys = SessionKeys::of_call(&target.prefix, v.info.started, id);
        let (index_key, archive_key) = (keys.index(), keys.archive());

        if let Some(existing) = read_index(&target, &index_key).await? {
            return self.settle_stored(st, &existing, &index_key).await;
        }
        if let Some((key, upload)) = st.upload.take() {
            let _ = target.store.multipart_abort(&key, &upload).await;
            spool.save(&st).await.map_err(|e| e.to_string())?;
        }
        let archive = self
            .upload_archive(&mut st, &target, &archive_key, files.clone(), v.info.ended)
            .await?;
        let size = archive.size;
        // The archive is checked before the index that publishes it is
        // written; its mark (the key that sealed it) goes into the index.
        let stored = target
            .store
            .head(&archive_key)
            .await
            .map_err(|e| e.to_string())?;
        let Some(stored) = stored.filter(|m| m.size == size) else {
            return Err(format!(
                "verification: {archive_key} does not have the {size} bytes uploaded"
            ));
        };
        let archive = index::Digest {
            sealed: stored.mark,
            ..archive
        };
        let (sha256, sealed) = (archive.sha256.clone(), archive.sealed.clone());
        let party_files = store_party_files(&target, &files, &keys).await;
        let recipe = crate::media::producer::Mp4Recipe {
            video_bps: target.mp4_video_bps,
            encoder: crate::media::render::ffmpeg::encoder_build()
                .await
                .to_string(),
            threads: target.render_threads,
        };
        let index = build_index(v, &st, &keys, archive, &party_files, &recipe)?;
        match target
            .store
            .put(
                &index_key,
                Bytes::from(index.to_bytes()),
                PutOptions::if_absent(),
            )
            .await
        {
            Ok(()) => {}
            Err(StoreError::AlreadyExists(_)) => {
                // Another node archived the same session meanwhile.
                let existing = read_index(&target, &index_key)
                    .await?
                    .ok_or("index vanished")?;
                return self.settle_stored(st, &existing, &index_key).await;
            }
            Err(e) => return Err(e.to_string()),
        }
        if target
            .store
            .head(&index_key)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err(format!(
                "verification: {index_key} is missing after it was written"
            ));
        }
        let written = index.to_bytes().len() as u64;
        self.publish(&st, &index, written, &index_key).await?;
        st.status = Status::Archived;
        st.index_key = Some(index_key);
        st.upload = None;
        spool.finish(&st).await.map_err(|e| e.to_string())?;
        info!(tenant, session = id, bytes = size, "archived");
        self.audit.ingest(
            tenant,
            id,
            "archived",
            serde_json::json!({
                "bytes": size,
                "sha256": sha256,
                "sealed": sealed,
                "day": index.started().map(|t| t.format("%Y-%m-%d").to_string()),
            }),
        );
        Ok(())
    }

    /// The archiver's settle of a session whose index is stored: an
    /// identical delivery is listed in its day (an attempt may have stopped
    /// before it was), then settled. `Err`: try again later.
    async fn settle_stored(
        &self,
        st: SessionState,
        existing: &Stored,
        index_key: &str,
    ) -> Result<(), String> {
        if same_files(&st, existing) {
            self.publish(&st, &existing.index, existing.len, index_key)
                .await?;
        }
        self.settle_existing(st, existing, index_key)
            .await
            .map(drop)
    }

    /// Publishes an archived session: adds it to its day index (and, for a tenant
    /// delivered to its own storage, to the delivery ledger): the last
    /// steps before the session counts as archived (a failure is retried
    /// like a storage error, and the retry finds the index and lists it).
    async fn publish(
        &self,
        st: &SessionState,
        index: &SessionIndex,
        len: u64,
        index_key: &str,
    ) -> Result<(), String> {
        let target = self
            .targets
            .get(&st.tenant)
            .ok_or_else(|| format!("tenant {:?} is not configured", st.tenant))?;
        target
            .days
            .add(index, len)
            .await
            .map_err(|e| format!("day index: {e}"))?;
        if let Some(d) = &target.delivery {
            d.note_archived(&st.tenant, &st.id, index_key)
                .await
                .map_err(|e| format!("delivery ledger: {e}"))?;
        }
        Ok(())
    }

    async fn fail(&self, mut st: SessionState, reason: String) -> Result<SessionState, String> {
        error!(tenant = %st.tenant, session = %st.id, %reason, "session cannot be archived; quarantined");
        self.audit.ingest(
            &st.tenant,
            &st.id,
            "failed",
            serde_json::json!({"reason": reason}),
        );
        st.status = Status::Failed;
        st.reason = Some(reason);
        self.spool
            .quarantine(&st)
            .await
            .map_err(|e| e.to_string())?;
        Ok(st)
    }

    /// Settles a session whose index may already be stored (a re-delivery):
    /// `Some(final state)`, archived or failed as a conflict, when it is;
    /// `None` when it is not, or when storage does not answer (the archiver
    /// checks again). `Err` only when the spool cannot be written.
    pub(super) async fn settle_if_stored(
        &self,
        st: SessionState,
        started: DateTime<Utc>,
    ) -> Result<Option<SessionState>, String> {
        let Some(target) = self.targets.get(&st.tenant) else {
            return Ok(None);
        };
        let index_key = SessionKeys::of_call(&target.prefix, started, &st.id).index();
        match read_index(target, &index_key).await {
            Ok(Some(existing)) => {
                if same_files(&st, &existing) {
                    if let Err(e) = self
                        .publish(&st, &existing.index, existing.len, &index_key)
                        .await
                    {
                        warn!(tenant = %st.tenant, session = %st.id, error = %e, "an earlier delivery is stored but not listed yet; the archiver lists it");
                        return Ok(None);
                    }
                }
                self.settle_existing(st, &existing, &index_key)
                    .await
                    .map(Some)
            }
            Ok(None) => Ok(None),
            Err(e) => {
                warn!(tenant = %st.tenant, session = %st.id, error = %e, "cannot check storage for an earlier delivery; the archiver will");
                Ok(None)
            }
        }
    }

    /// An index already exists: the same files make this an archived
    /// re-delivery; different files are a conflict. Returns the final state.
    /// The caller has listed the session in its day (an attempt may have
    /// stopped between the index and the listing).
    async fn settle_existing(
        &self,
        mut st: SessionState,
        existing: &Stored,
        index_key: &str,
    ) -> Result<SessionState, String> {
        if same_files(&st, existing) {
            st.status = Status::Archived;
            st.index_key = Some(index_key.to_string());
            st.upload = None;
            self.spool.finish(&st).await.map_err(|e| e.to_string())?;
            info!(tenant = %st.tenant, session = %st.id, "already archived with identical files");
            Ok(st)
        } else {
            self.fail(
                st,
                "conflict: a session with this id and different files is already archived".into(),
            )
            .await
        }
    }

    async fn upload_archive(
        &self,
        st: &mut SessionState,
        target: &Target,
        key: &str,
        files: PathBuf,
        mtime: DateTime<Utc>,
    ) -> Result<Digest, String> {
        let mut upload = crate::store::Multipart::start(target.store.as_ref(), key)
            .await
            .map_err(|e| e.to_string())?;
        st.upload = Some((key.to_string(), upload.id().to_string()));
        self.spool.save(st).await.map_err(|e| e.to_string())?;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1);
        let names: Vec<String> = st.files.keys().cloned().collect();
        let builder = tokio::task::spawn_blocking(move || write_tar_gz(&files, &names, mtime, tx));
        let mut failure = None;
        while let Some(part) = rx.recv().await {
            if let Err(e) = upload.part(Bytes::from(part)).await {
                failure = Some(e.to_string());
                break;
            }
        }
        drop(rx);
        let built = builder.await.map_err(rethrow)?;
        let failed = match (failure, built) {
            (Some(e), _) => e,
            (None, Err(e)) => format!("building the archive: {e}"),
            (None, Ok(done)) => {
                return upload
                    .complete()
                    .await
                    .map(|_| done)
                    .map_err(|e| e.to_string())
            }
        };
        upload.abort().await;
        Err(failed)
    }
}

/// Half of `delay` plus a random part of the other half, so that nodes
/// retrying against one bucket spread out instead of retrying in step.
fn jittered(delay: Duration) -> Duration {
    delay / 2 + delay.mul_f64(rand::random::<f64>() / 2.0)
}

/// A blocking step's panic becomes the attempt's panic (counted towards
/// quarantine); any other join error is an ordinary, retried failure.
fn rethrow(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => std::panic::resume_unwind(p),
        Err(e) => e.to_string(),
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(e) => e.to_string(),
    }
}

/// Whether the stored index records exactly the files received.
fn same_files(st: &SessionState, existing: &Stored) -> bool {
    let received = st
        .files
        .iter()
        .map(|(n, f)| (n.as_str(), f.sha256.as_str()));
    existing.index.same_raw_files(received)
}

/// A session index as stored, and its size.
struct Stored {
    index: SessionIndex,
    len: u64,
}

/// The stored index at `key`; an unreadable one counts as recording no
/// files (a conflict for any delivery: an operator must look).
async fn read_index(target: &Target, key: &str) -> Result<Option<Stored>, String> {
    match crate::store::read_all(target.store.as_ref(), key, index::MAX_BYTES).await {
        Ok(b) => Ok(Some(Stored {
            index: SessionIndex::parse(&b).unwrap_or_default(),
            len: b.len() as u64,
        })),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Remuxes and stores each party's file (WebM, or MP4 for H.264; cheap: no
/// video re-encoding) from the spooled streams, so its exact size can go
/// into the index. Streams, remux and upload go through files, never whole
/// in memory.
async fn store_party_files(
    target: &Target,
    files: &std::path::Path,
    keys: &SessionKeys,
) -> Vec<(String, Digest)> {
    // Read as streams from the spool, never whole.
    let mut streams = HashMap::new();
    for side in ["agent", "user"] {
        for kind in ["video", "audio"] {
            let name = format!("{side}-{kind}.mjr");
            if let Ok(f) = std::fs::File::open(files.join(&name)) {
                streams.insert(name, f);
            }
        }
    }
    crate::media::render::webm::store_party_files(target.store.as_ref(), keys, |n| {
        streams.remove(n)
    })
    .await
}

/// The indexed `info.json`: the gateway's fields plus what ingest learned.
fn build_index(
    v: Validated,
    st: &SessionState,
    keys: &SessionKeys,
    archive: Digest,
    party_files: &[(String, Digest)],
    mp4: &crate::media::producer::Mp4Recipe,
) -> Result<SessionIndex, String> {
    let mut index = SessionIndex::from_gateway(v.info.original)?;
    let r = &mut index.recvault;
    r.ingested_at = st.completed_at.clone();
    r.objects.insert(keys.archive_name(), archive);
    r.raw_files = st.files.clone();
    r.streams = v.streams;
    let reserved = crate::media::producer::reserve(keys.id(), v.info.started, v.info.ended, mp4);
    r.derived.extend(reserved);
    for (name, d) in party_files {
        r.derived.insert(name.clone(), Derived::stored(d));
    }
    Ok(index)
}

/// Hands the archive to the uploader in parts while hashing it.
struct PartWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    sums: Summer,
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.sums.update(data);
        if self.buf.len() >= PART {
            let part = std::mem::replace(&mut self.buf, Vec::with_capacity(PART + 64 * 1024));
            self.tx
                .blocking_send(part)
                .map_err(|_| std::io::Error::other("upload stopped"))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the deterministic tar.gz of `names` (in order) to the uploader.
fn write_tar_gz(
    files: &std::path::Path,
    names: &[String],
    mtime: DateTime<Utc>,
    tx: mpsc::Sender<Vec<u8>>,
) -> std::io::Result<Digest> {
    let out = PartWriter {
        tx,
        buf: Vec::with_capacity(PART + 64 * 1024),
        sums: Summer::default(),
    };
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for name in names {
        let f = std::fs::File::open(files.join(name))?;
        let len = f.metadata()?.len();
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime.timestamp().max(0) as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append_data(
            &mut h,
            name,
            std::io::BufReader::with_capacity(256 * 1024, f),
        )?;
    }
    let gz = tar.into_inner()?;
    let mut out = gz.finish()?;
    let last = std::mem::take(&mut out.buf);
    if !last.is_empty() {
        out.tx
            .blocking_send(last)
            .map_err(|_| std::io::Error::other("upload stopped"))?;
    }
    Ok(out.sums.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mjr::{rtp_packet, write_mjr, Kind};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_session_whose_attempts_keep_panicking_is_quarantined_after_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let writes = Arc::new(AtomicU32::new(0));
        // A store that panics on every write of a session index, as a
        // parser bug would mid-attempt, and counts those writes.
        let counted = writes.clone();
        let inner = crate::store::local::LocalStore::open(&dir.path().join("store")).unwrap();
        let store = crate::store::tap::Tap::new(Arc::new(inner)).before(move |op| {
            if let crate::store::tap::Op::Put { key } = op {
                if key.ends_with("info.json") {
                    counted.fetch_add(1, Ordering::SeqCst);
                    panic!("index writer bug");
                }
            }
            std::time::Duration::ZERO
        });
        // A queued session: one short audio stream and its info.json.
        let mut st = SessionState::new("acme", "call-p");
        let files = spool.files_dir("acme", "call-p");
        std::fs::create_dir_all(&files).unwrap();
        let t0 = 1_763_888_400_000_000i64;
        let frames: Vec<_> = (0..50u32)
            .map(|i| {
                (
                    i * 20,
                    rtp_packet(0, false, i as u16, i * 160, 7, &[0x55; 160]),
                )
            })
            .collect();
        let info = br#"{"session_id":"call-p","started_at":"2026-11-23T10:00:00Z","ended_at":"2026-11-23T10:00:01Z","agent":{"id":"a"},"user":{"id":"u"}}"#;
        for (name, bytes) in [
            (
                "agent-audio.mjr",
                write_mjr(Kind::Audio, "pcmu", t0, t0, &frames),
            ),
            ("info.json", info.to_vec()),
        ] {
            std::fs::write(files.join(name), &bytes).unwrap();
            let mut sums = Summer::default();
            sums.update(&bytes);
            st.files.insert(name.to_string(), sums.finish());
        }
        st.status = Status::Queued;
        st.completed_at = Some("2026-11-23T10:00:02Z".into());
        spool.save(&st).await.unwrap();

        let store: SharedStore = Arc::new(store);
        let target = Target {
            delivery: None,
            prefix: "acme/".into(),
            days: Arc::new(crate::days::Days::new(store.clone(), "acme/", "test")),
            store,
            mp4_video_bps: crate::media::render::VIDEO_BPS,
            render_threads: 1,
        };
        let limits = crate::limits::Limits {
            archive_max_failures: 3,
            ..Default::default()
        };
        let _archiver = Archiver::start_with(
            spool.clone(),
            HashMap::from([("acme".to_string(), target)]),
            &limits,
            Duration::from_millis(10),
            Arc::new(crate::audit::Audit::stderr()),
        )
        .unwrap();
        let mut state = None;
        for _ in 0..500 {
            state = spool.load("acme", "call-p").await.unwrap();
            if state.as_ref().is_some_and(|s| s.status == Status::Failed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let state = state.unwrap();
        assert_eq!(state.status, Status::Failed, "{state:?}");
        let reason = state.reason.unwrap_or_default();
        assert!(
            reason.contains("archiving panicked: index writer bug")
                && reason.contains("3 attempts"),
            "{reason}"
        );
        // Quarantined, not retried again: no further attempt writes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(writes.load(Ordering::SeqCst), 3);
        assert!(spool.pending().unwrap().is_empty());
    }
}
