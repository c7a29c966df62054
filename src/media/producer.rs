//! Derived media (the mixed MP3 and the side-by-side MP4) as entries of the tree. Sizes are the reservations ingest
//! stored in the session index (`recvault.derived`), so a listing never
//! changes after the first read. A read serves `derived/<name>` when it is
//! cached; otherwise it starts the render (one per entry: concurrent readers
//! share it), streams bytes as they are produced from the reader's offset
//! (they wait in an unlinked spill file, not in memory), and uploads the
//! file to `derived/` part by part while it is made (multipart, completed
//! only when the render succeeded) for later ranged reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use super::lease;
use super::render::{self, audio};
use super::spill::Growing;
use crate::audit::Audit;
use crate::layout::index::{Derived, Hashes, SessionIndex, Summer};
use crate::store::{ByteStream, Multipart, ObjectStore, PutOptions, StoreError};
use crate::vfs::{Producer, SessionHandle, VfsError};

/// How long a render goes on with no reader before it is stopped.
const READERLESS_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// Size of the parts of the upload to `derived/` (S3 wants >= 5 MiB but the last).
const PART: usize = 8 << 20;

/// A render's output as it grows, shared by its readers.
type Render = Growing;

type Renders = Arc<Mutex<HashMap<String, Arc<Render>>>>;

/// The derived-media producer (MP3 and MP4; per-party WebM to come).
pub struct MediaProducer {
    renders: Renders,
    pool: Arc<RenderPool>,
    /// Longest a render may run before it is killed.
    timeout: std::time::Duration,
    audit: Arc<Audit>,
    /// Cancelled when the server stops.
    stopping: CancellationToken,
    /// The render jobs, for the stop to wait on.
    jobs: TaskTracker,
}

impl MediaProducer {
    pub fn new(
        concurrency: usize,
        threads: u32,
        timeout: std::time::Duration,
        audit: Arc<Audit>,
    ) -> Self {
        Self {
            renders: Arc::new(Mutex::new(HashMap::new())),
            pool: Arc::new(RenderPool::new(concurrency, threads)),
            timeout,
            audit,
            stopping: CancellationToken::new(),
            jobs: TaskTracker::new(),
        }
    }
}

/// What renders may run at once: `render_concurrency` of them, holding at
/// most `render_concurrency × render_threads` encoder threads between them
/// (a render holds one per x264 it runs, at most all of them; a session
/// recorded with more encoders than that still runs its recorded count).
/// A render takes its slot first, then its threads, so waiting renders
/// queue in order.
pub struct RenderPool {
    slots: Arc<Semaphore>,
    threads: Arc<Semaphore>,
    budget: u32,
}

impl RenderPool {
    pub fn new(concurrency: usize, threads: u32) -> Self {
        let concurrency = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        let budget = (concurrency as u64 * u64::from(threads.max(1)))
            .min(Semaphore::MAX_PERMITS as u64) as u32;
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            threads: Arc::new(Semaphore::new(budget as usize)),
            budget,
        }
    }

    /// Waits for a slot and `threads` encoder threads.
    pub async fn acquire(
        &self,
        threads: u32,
    ) -> Result<
        (
            tokio::sync::OwnedSemaphorePermit,
            tokio::sync::OwnedSemaphorePermit,
        ),
        String,
    > {
        let closed = |_| "render pool closed".to_string();
        let slot = self.slots.clone().acquire_owned().await.map_err(closed)?;
        let held = self
            .threads
            .clone()
            .acquire_many_owned(threads.clamp(1, self.budget))
            .await
            .map_err(closed)?;
        Ok((slot, held))
    }
}

/// How a session's MP4 is rendered, recorded at archive time.
#[derive(Debug, Clone)]
pub struct Mp4Recipe {
    /// The tenant's video cap (bits/s).
    pub video_bps: u64,
    /// The encoder build (see [`render::ffmpeg::encoder_build`]).
    pub encoder: String,
    /// Encoders run in parallel (`[limits] render_threads`; see
    /// [`render::x264`]).
    pub threads: u32,
}

/// The rendered entries of the index's `recvault.derived` for a call from
/// `started` to `ended`: each one's reserved size and what its render needs.
pub fn reserve(
    id: &str,
    started: chrono::DateTime<chrono::Utc>,
    ended: chrono::DateTime<chrono::Utc>,
    mp4: &Mp4Recipe,
) -> [(String, Derived); 2] {
    let video_bps = mp4.video_bps;
    let ms = (ended - started).num_milliseconds().max(0) as u64;
    let samples = audio::samples_for_ms(ms);
    [
        (
            format!("{id}.mp3"),
            Derived {
                size: render::mp3_size(samples),
                samples: Some(samples),
                ..Derived::default()
            },
        ),
        (
            format!("{id}.mp4"),
            Derived {
                size: render::mp4_size(ms, video_bps, mp4.threads),
                duration_ms: Some(ms),
                video_bps: Some(video_bps),
                encoder: Some(mp4.encoder.clone()),
                // Sessions without it render with one encoder, as before.
                threads: (mp4.threads > 1).then_some(mp4.threads),
                ..Derived::default()
            },
        ),
    ]
}

#[async_trait]
impl Producer for MediaProducer {
    fn entries(&self, index: &SessionIndex) -> Vec<(String, u64)> {
        index.shown_derived()
    }

    async fn open(
        &self,
        s: &SessionHandle,
        name: &str,
        offset: u64,
    ) -> Result<ByteStream, VfsError> {
        let key = s.keys.derived(name);
        if let Some(cached) = cached(s.store.as_ref(), &key, offset).await? {
            return Ok(cached);
        }
        let spec = s
            .index
            .recvault
            .derived
            .get(name)
            .ok_or_else(|| VfsError::NotFound(name.to_string()))?;
        if spec.stored {
            // Made at archive time (party files); only storage can serve it.
            return Err(VfsError::Producer(format!(
                "{name} is missing from storage"
            )));
        }
        let what = if name.ends_with(".mp4") {
            let ms = spec.duration_ms.ok_or_else(|| {
                VfsError::Producer("the session index has no duration for the MP4".into())
            })?;
            // Indexes written before the cap was recorded used the default.
            let video_bps = spec.video_bps.unwrap_or(render::VIDEO_BPS);
            // And with one encoder (the bytes depend on the count).
            let threads = spec.threads.unwrap_or(1);
            let max = crate::limits::MAX_RENDER_THREADS;
            if !(1..=max).contains(&threads) {
                return Err(VfsError::Producer(format!(
                    "the session index records {threads} encoder threads (1 to {max} can be rendered)"
                )));
            }
            What::Mp4 {
                ms,
                video_bps,
                threads,
            }
        } else {
            let samples = spec.samples.ok_or_else(|| {
                VfsError::Producer("the session index has no sample count".into())
            })?;
            What::Mp3 { samples }
        };
        // Following before the render starts, so it never runs readerless.
        let reader = {
            let mut map = self.renders.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(r) => r.follow(offset),
                // Checked under the lock `stop` waits on: no render starts
                // after it returned (its lease would outlive the process).
                None if self.stopping.is_cancelled() => {
                    return Err(VfsError::Producer(STOPPING.to_string()))
                }
                None => {
                    let r = Arc::new(Render::new().map_err(VfsError::Producer)?);
                    map.insert(key.clone(), r.clone());
                    let job = Job {
                        render: r.clone(),
                        store: s.store.clone(),
                        key: key.clone(),
                        lease: s.keys.lease(name),
                        sums: s.keys.sums(name),
                        tenant: s.tenant.clone(),
                        path: format!("{}/{name}", s.path),
                        audit: self.audit.clone(),
                        tar_key: s.keys.archive(),
                        start_us: s.index.started().map_or(0, |t| t.timestamp_micros()),
                        what,
                        encoder: spec.encoder.clone(),
                        pool: self.pool.clone(),
                        timeout: self.timeout,
                        stopping: self.stopping.clone(),
                    };
                    let reader = r.follow(offset);
                    self.jobs.spawn(job.run(self.renders.clone()));
                    reader
                }
            }
        };
        Ok(reader)
    }

    async fn open_range(
        &self,
        s: &SessionHandle,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<ByteStream>, VfsError> {
        Ok(cached_range(s.store.as_ref(), &s.keys.derived(name), offset, Some(len)).await?)
    }

    async fn hashes(&self, s: &SessionHandle, name: &str) -> Result<Hashes, VfsError> {
        let Some(spec) = s.index.recvault.derived.get(name) else {
            return Ok(Hashes::default());
        };
        if spec.stored {
            return Ok(spec.hashes.clone().checked());
        }
        Ok(sums_of(s.store.as_ref(), &s.keys.sums(name)).await?)
    }

    /// Stops every render (each deletes its lease; what it had uploaded is
    /// aborted by the store's [`crate::store::inflight::Inflight`]) and waits
    /// up to 5 s for them to end.
    async fn stop(&self) {
        self.stopping.cancel();
        // An `open` that saw no cancellation spawned its job under this
        // lock: once the lock is free, every job is tracked.
        drop(self.renders.lock().unwrap_or_else(|e| e.into_inner()));
        self.jobs.close();
        let wait = std::time::Duration::from_secs(5);
        if tokio::time::timeout(wait, self.jobs.wait()).await.is_err() {
            warn!("renders still running 5 s after the stop was asked");
        }
    }
}

/// The hashes beside a rendered file (`None` when there are none yet).
async fn sums_of(store: &dyn ObjectStore, key: &str) -> Result<Hashes, StoreError> {
    match crate::store::read_all(store, key, 4096).await {
        Ok(b) => Ok(serde_json::from_slice::<Hashes>(&b)
            .unwrap_or_default()
            .checked()),
        Err(StoreError::NotFound(_)) => Ok(Hashes::default()),
        Err(e) => Err(e),
    }
}

/// The stored file at `key` from `offset`, `None` when it is not stored
/// (one request: no HEAD before the GET).
async fn cached(
    store: &dyn ObjectStore,
    key: &str,
    offset: u64,
) -> Result<Option<ByteStream>, StoreError> {
    cached_range(store, key, offset, None).await
}

async fn cached_range(
    store: &dyn ObjectStore,
    key: &str,
    offset: u64,
    len: Option<u64>,
) -> Result<Option<ByteStream>, StoreError> {
    match store.get(key, offset, len).await {
        Ok(body) => Ok(Some(body)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

struct Job {
    render: Arc<Render>,
    store: crate::store::SharedStore,
    key: String,
    /// The render lease of `key`.
    lease: String,
    /// Where the rendered file's hashes go once it is stored.
    sums: String,
    tenant: String,
    /// The entry's path in the tenant's tree (for the audit trail).
    path: String,
    audit: Arc<Audit>,
    tar_key: String,
    start_us: i64,
    what: What,
    /// The encoder build recorded at archive time (MP4).
    encoder: Option<String>,
    pool: Arc<RenderPool>,
    timeout: std::time::Duration,
    stopping: CancellationToken,
}

/// What a reader of a render cut by the stop is told.
const STOPPING: &str = "the server is shutting down; read the file again once it is back";

/// One stream of the RAW archive, ready to render.
enum Input {
    Audio(audio::Party),
    Video(Option<render::video::Party>),
}

/// What a render makes.
#[derive(Clone, Copy)]
enum What {
    Mp3 {
        samples: u64,
    },
    Mp4 {
        ms: u64,
        video_bps: u64,
        threads: u32,
    },
}

impl Job {
    /// Renders, then leaves the in-flight table: later reads use the cached
    /// file, or render again after a failure.
    async fn run(self, renders: Renders) {
        let began = std::time::Instant::now();
        let result = self.render_and_store().await;
        match &result {
            Ok(true) => self.audit.render(
                &self.tenant,
                &self.path,
                Ok(self.render.len()),
                began.elapsed(),
            ),
            Ok(false) => {}
            Err(e) => {
                warn!(key = %self.key, error = %e, "render failed");
                self.audit
                    .render(&self.tenant, &self.path, Err(e), began.elapsed())
            }
        }
        let result = result.map(drop);
        renders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        self.render.end(result);
    }

    /// Renders under the bucket-wide lease, or, when another process holds
    /// it, waits for that process's file and serves it. True when the file
    /// was rendered here.
    async fn render_and_store(&self) -> Result<bool, String> {
        let lease = &self.lease;
        loop {
            match lease::acquire(self.store.as_ref(), lease).await? {
                lease::Outcome::Mine => break,
                lease::Outcome::Theirs => {
                    if self.follow_other_process(lease).await? {
                        return Ok(false);
                    }
                    // Their lease expired without a file: try to take over.
                }
            }
        }
        // The file may have been finished just before the lease was free.
        let stored = cached(self.store.as_ref(), &self.key, 0)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(body) = stored {
            let _ = self.store.delete(lease).await;
            return self.serve_stored(body).await.map(|()| false);
        }
        let renew = lease::keep(self.store.clone(), lease.clone());
        let result = tokio::select! {
            r = tokio::time::timeout(self.timeout, self.render_here()) => match r {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "the render took longer than {} s and was stopped",
                    self.timeout.as_secs()
                )),
            },
            _ = self.stopping.cancelled() => Err(STOPPING.to_string()),
        };
        renew.abort();
        let _ = self.store.delete(lease).await;
        result.map(|()| true)
    }

    /// Waits for another process's render; true once its file was served,
    /// false when its lease ran out first.
    async fn follow_other_process(&self, lease: &str) -> Result<bool, String> {
        info!(key = %self.key, "another process is rendering; waiting for its file");
        loop {
            let cached = cached(self.store.as_ref(), &self.key, 0)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(body) = cached {
                return self.serve_stored(body).await.map(|()| true);
            }
            if !lease::alive(self.store.as_ref(), lease).await? {
                return Ok(false);
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                _ = self.stopping.cancelled() => return Err(STOPPING.to_string()),
            }
        }
    }

    /// Hands a stored copy of the file to this render's readers.
    async fn serve_stored(&self, mut body: ByteStream) -> Result<(), String> {
        use futures::StreamExt;
        while let Some(c) = body.next().await {
            self.render.push(&c.map_err(|e| e.to_string())?)?;
        }
        Ok(())
    }

    async fn render_here(&self) -> Result<(), String> {
        let threads = match self.what {
            What::Mp4 { threads, .. } => threads,
            What::Mp3 { .. } => 1,
        };
        let waiting = crate::metrics::Held::new(&crate::metrics::get().renders_waiting);
        let _permits = self.pool.acquire(threads).await?;
        drop(waiting);
        let _running = crate::metrics::Held::new(&crate::metrics::get().renders_running);
        if let Some(recorded) = &self.encoder {
            let here = render::ffmpeg::encoder_build().await;
            if recorded != here {
                warn!(
                    path = %self.path,
                    recorded = %recorded,
                    here = %here,
                    "this node's encoder build differs from the one the session was archived with: its MP4 may differ in bytes from another node's render"
                );
            }
        }
        info!(key = %self.key, encoders = threads, "render started");
        let began = std::time::Instant::now();
        let video = matches!(self.what, What::Mp4 { .. });
        let want: fn(&str) -> bool = if video {
            |n| n.ends_with(".mjr")
        } else {
            |n| n.ends_with("-audio.mjr")
        };
        let start_us = self.start_us;
        let streams = super::raw::parse_entries(
            self.store.as_ref(),
            &self.tar_key,
            want,
            move |name, file| {
                let file = std::io::BufReader::with_capacity(256 * 1024, file);
                Ok(if name.ends_with("-audio.mjr") {
                    Input::Audio(audio::prepare(name, file, start_us)?)
                } else {
                    Input::Video(render::video::prepare(name, file, start_us)?)
                })
            },
        )
        .await?;
        let mut parties = Vec::new();
        let (mut agent, mut user) = (None, None);
        for (name, input) in streams {
            match input {
                Input::Audio(p) => parties.push(p),
                Input::Video(v) if name == "agent-video.mjr" => agent = v,
                Input::Video(v) if name == "user-video.mjr" => user = v,
                Input::Video(_) => {}
            }
        }
        info!(key = %self.key, ms = began.elapsed().as_millis() as u64, "render inputs ready");
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let encode = async {
            match self.what {
                What::Mp3 { samples } => render::render_mp3(parties, samples, tx).await,
                What::Mp4 {
                    ms,
                    video_bps,
                    threads,
                } => render::render_mp4(parties, agent, user, ms, video_bps, threads, tx).await,
            }
        }
        .instrument(tracing::info_span!("render", key = %self.key));
        // Produced bytes go to the spill file for readers and, in parts,
        // to the upload. Nobody reading for a while (a seek reopens a reader
        // at once, so allow a grace period): stop; ffmpeg is killed with its
        // handle.
        let (parts_tx, parts_rx) = mpsc::channel::<Bytes>(1);
        let collect = async move {
            let mut last_reader = std::time::Instant::now();
            let mut part = BytesMut::new();
            let mut sums = Summer::default();
            while let Some(b) = rx.recv().await {
                self.render.push(&b)?;
                sums.update(&b);
                part.extend_from_slice(&b);
                if part.len() >= PART {
                    let _ = parts_tx.send(part.split().freeze()).await;
                }
                if self.render.readers() > 0 {
                    last_reader = std::time::Instant::now();
                } else if last_reader.elapsed() > READERLESS_GRACE {
                    return Err("every reader left; render stopped".to_string());
                }
            }
            if !part.is_empty() {
                let _ = parts_tx.send(part.freeze()).await;
            }
            Ok(sums.finish())
        };
        let upload = upload_parts(self.store.as_ref(), &self.key, parts_rx);
        let (size, readers, upload) = tokio::join!(encode, collect, upload);
        let rendered = readers.and_then(|sums| size.map(|_| sums));
        match (&rendered, upload) {
            (Ok(sums), Some(up)) => {
                if let Err(e) = up.complete().await {
                    warn!(key = %self.key, error = %e, "rendered file not cached");
                } else {
                    // Its hashes beside it, for md5sum/sha1sum/sha256sum and
                    // sync tools; without them a read of the hash is "unknown".
                    let body = serde_json::to_vec(&sums.hashes()).unwrap_or_default();
                    let stored = self
                        .store
                        .put(&self.sums, Bytes::from(body), PutOptions::default())
                        .await;
                    if let Err(e) = stored {
                        warn!(key = %self.sums, error = %e, "hashes of the rendered file not stored");
                    }
                }
            }
            (Err(_), Some(up)) => up.abort().await,
            (_, None) => {}
        }
        let size = rendered?.size;
        info!(key = %self.key, bytes = size, ms = began.elapsed().as_millis() as u64, "rendered");
        Ok(())
    }
}

/// Uploads a render's parts to `key` as they arrive. Returns the upload
/// for the caller to complete (or abort); `None` when storage refused
/// (logged: readers are still served, the file is just not cached).
async fn upload_parts<'a>(
    store: &'a dyn ObjectStore,
    key: &str,
    mut parts: mpsc::Receiver<Bytes>,
) -> Option<Multipart<'a>> {
    let mut upload: Option<Multipart<'a>> = None;
    let mut failed = false;
    while let Some(part) = parts.recv().await {
        if failed {
            continue;
        }
        let step = async {
            let up = match upload.as_mut() {
                Some(up) => up,
                None => upload.insert(Multipart::start(store, key).await?),
            };
            up.part(part).await
        };
        if let Err(e) = step.await {
            warn!(key = %key, error = %e, "rendered file not cached");
            failed = true;
        }
    }
    match (upload, failed) {
        (Some(up), false) => Some(up),
        (Some(up), true) => {
            up.abort().await;
            None
        }
        (None, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    #[tokio::test]
    async fn parts_uploaded_as_they_come_complete_into_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (tx, rx) = mpsc::channel(1);
        let feed = async move {
            for b in [7u8, 8, 9] {
                tx.send(Bytes::from(vec![b; 1000])).await.unwrap();
            }
        };
        let (_, up) = tokio::join!(feed, upload_parts(&store, "d/x.mp4", rx));
        let up = up.expect("an upload");
        assert_eq!(up.parts(), 3);
        assert!(
            store.head("d/x.mp4").await.unwrap().is_none(),
            "not before completion"
        );
        up.complete().await.unwrap();
        let got = crate::store::read_all(&store, "d/x.mp4", 1 << 20)
            .await
            .unwrap();
        assert_eq!(got.len(), 3000);
        assert_eq!((got[0], got[1000], got[2999]), (7, 8, 9));
    }

    #[tokio::test]
    async fn the_render_pool_bounds_renders_and_encoder_threads() {
        use std::time::Duration;
        // Two renders, two threads each: four threads in all.
        let pool = RenderPool::new(2, 2);
        let a = pool.acquire(1).await.unwrap();
        let b = pool.acquire(1).await.unwrap();
        // A third render waits for a slot, though threads are free.
        let third = tokio::time::timeout(Duration::from_millis(100), pool.acquire(1)).await;
        assert!(third.is_err(), "a third render ran beside two");
        drop(a);
        // A session recorded with 16 encoders takes the whole budget (it
        // never waits forever for more threads than exist).
        drop(b);
        let big = tokio::time::timeout(Duration::from_secs(5), pool.acquire(16))
            .await
            .expect("a render asking for more threads than the budget waits forever")
            .unwrap();
        let small = tokio::time::timeout(Duration::from_millis(100), pool.acquire(1)).await;
        assert!(small.is_err(), "a render ran while all threads were held");
        drop(big);
        assert!(pool.acquire(1).await.is_ok());
    }
}
