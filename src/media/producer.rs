//! Derived media (the mixed MP3 and the side-by-side MP4) as entries of the tree. Sizes are the reservations ingest
//! stored in the session index (`recvault.derived`), so a listing never
//! changes after the first read. A read serves `derived/<name>` when it is
//! cached; otherwise it starts the render (one per entry: concurrent readers
//! share it), streams bytes as they are produced from the reader's offset,
//! and stores the finished file in `derived/` for later ranged reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{info, warn};

use super::lease;
use super::render::{self, audio};
use crate::store::{ByteStream, PutOptions, StoreError};
use crate::vfs::meta::SessionMeta;
use crate::vfs::{Producer, Tenant, VfsError};

/// How long a render goes on with no reader before it is stopped.
const READERLESS_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// Where a render stands: bytes produced so far, and its end.
#[derive(Clone, Default)]
struct Progress {
    chunks: usize,
    end: Option<Result<(), String>>,
}

struct Render {
    chunks: Mutex<Vec<Bytes>>,
    progress: watch::Sender<Progress>,
}

type Renders = Arc<Mutex<HashMap<String, Arc<Render>>>>;

/// The derived-media producer (MP3 and MP4; per-party WebM to come).
pub struct MediaProducer {
    renders: Renders,
    pool: Arc<Semaphore>,
    /// Longest a render may run before it is killed.
    timeout: std::time::Duration,
}

impl MediaProducer {
    pub fn new(concurrency: usize, timeout: std::time::Duration) -> Self {
        Self {
            renders: Arc::new(Mutex::new(HashMap::new())),
            pool: Arc::new(Semaphore::new(concurrency.max(1))),
            timeout,
        }
    }
}

/// The `recvault.derived` section ingest writes for a call from `started`
/// to `ended`: each entry's reserved size and what the render needs.
pub fn reserve(
    id: &str,
    started: chrono::DateTime<chrono::Utc>,
    ended: chrono::DateTime<chrono::Utc>,
    video_bps: u64,
) -> serde_json::Value {
    let ms = (ended - started).num_milliseconds().max(0) as u64;
    let samples = audio::samples_for_ms(ms);
    serde_json::json!({
        format!("{id}.mp3"): { "size": render::mp3_size(samples), "samples": samples },
        format!("{id}.mp4"): {
            "size": render::mp4_size(ms, video_bps),
            "duration_ms": ms,
            "video_bps": video_bps,
        },
    })
}

fn derived<'a>(m: &'a SessionMeta, name: &str) -> Option<&'a serde_json::Value> {
    m.raw_index.pointer("/recvault/derived")?.get(name)
}

#[async_trait]
impl Producer for MediaProducer {
    fn entries(&self, m: &SessionMeta) -> Vec<(String, u64)> {
        let Some(d) = m
            .raw_index
            .pointer("/recvault/derived")
            .and_then(|v| v.as_object())
        else {
            return Vec::new();
        };
        d.iter()
            .filter(|(name, _)| [".mp3", ".mp4", ".webm"].iter().any(|x| name.ends_with(x)))
            .filter_map(|(name, v)| Some((name.clone(), v.get("size")?.as_u64()?)))
            .collect()
    }

    async fn open(
        &self,
        tenant: &Tenant,
        m: &SessionMeta,
        name: &str,
        offset: u64,
    ) -> Result<ByteStream, VfsError> {
        let key = format!("{}derived/{name}", m.session.prefix(&tenant.prefix));
        if tenant.store.head(&key).await?.is_some() {
            return Ok(tenant.store.get(&key, offset, None).await?);
        }
        let spec = derived(m, name).ok_or_else(|| VfsError::NotFound(name.to_string()))?;
        if spec.get("stored").and_then(|v| v.as_bool()) == Some(true) {
            // Made at archive time (WebM); only storage can serve it.
            return Err(VfsError::Producer(format!(
                "{name} is missing from storage"
            )));
        }
        let what = if name.ends_with(".mp4") {
            let ms = spec
                .get("duration_ms")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| {
                    VfsError::Producer("the session index has no duration for the MP4".into())
                })?;
            // Indexes written before the cap was recorded used the default.
            let video_bps = spec
                .get("video_bps")
                .and_then(|v| v.as_u64())
                .unwrap_or(render::VIDEO_BPS);
            What::Mp4 { ms, video_bps }
        } else {
            let samples = spec
                .get("samples")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| {
                    VfsError::Producer("the session index has no sample count".into())
                })?;
            What::Mp3 { samples }
        };
        // Subscribed before the render starts, so it never runs readerless.
        let (render, rx) = {
            let mut map = self.renders.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(r) => (r.clone(), r.progress.subscribe()),
                None => {
                    let r = Arc::new(Render {
                        chunks: Mutex::new(Vec::new()),
                        progress: watch::Sender::new(Progress::default()),
                    });
                    map.insert(key.clone(), r.clone());
                    let job = Job {
                        render: r.clone(),
                        store: tenant.store.clone(),
                        key: key.clone(),
                        tar_key: m
                            .files
                            .iter()
                            .find(|f| f.name.ends_with(".tar.gz"))
                            .map(|f| f.key.clone())
                            .unwrap_or_default(),
                        start_us: m
                            .index
                            .started_at
                            .as_deref()
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                            .map(|t| t.timestamp_micros())
                            .unwrap_or(0),
                        what,
                        pool: self.pool.clone(),
                        timeout: self.timeout,
                    };
                    let rx = r.progress.subscribe();
                    tokio::spawn(job.run(self.renders.clone()));
                    (r, rx)
                }
            }
        };
        Ok(follow(render, rx, offset))
    }
}

struct Job {
    render: Arc<Render>,
    store: crate::store::SharedStore,
    key: String,
    tar_key: String,
    start_us: i64,
    what: What,
    pool: Arc<Semaphore>,
    timeout: std::time::Duration,
}

/// What a render makes.
#[derive(Clone, Copy)]
enum What {
    Mp3 { samples: u64 },
    Mp4 { ms: u64, video_bps: u64 },
}

impl Job {
    /// Renders, then leaves the in-flight table: later reads use the cached
    /// file, or render again after a failure.
    async fn run(self, renders: Renders) {
        let result = self.render_and_store().await;
        if let Err(e) = &result {
            warn!(key = %self.key, error = %e, "render failed");
        }
        renders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        self.render.progress.send_modify(|p| p.end = Some(result));
    }

    /// Renders under the bucket-wide lease, or, when another process holds
    /// it, waits for that process's file and serves it.
    async fn render_and_store(&self) -> Result<(), String> {
        let lease = format!("{}.lease", self.key);
        loop {
            match lease::acquire(self.store.as_ref(), &lease).await? {
                lease::Outcome::Mine => break,
                lease::Outcome::Theirs => {
                    if self.follow_other_process(&lease).await? {
                        return Ok(());
                    }
                    // Their lease expired without a file: try to take over.
                }
            }
        }
        // The file may have been finished just before the lease was free.
        if self
            .store
            .head(&self.key)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            let _ = self.store.delete(&lease).await;
            return self.follow_other_process(&lease).await.map(|_| ());
        }
        let renew = lease::keep(self.store.clone(), lease.clone());
        let result = match tokio::time::timeout(self.timeout, self.render_here()).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the render took longer than {} s and was stopped",
                self.timeout.as_secs()
            )),
        };
        renew.abort();
        let _ = self.store.delete(&lease).await;
        result
    }

    /// Waits for another process's render; true once its file was served,
    /// false when its lease ran out first.
    async fn follow_other_process(&self, lease: &str) -> Result<bool, String> {
        info!(key = %self.key, "another process is rendering; waiting for its file");
        loop {
            if self
                .store
                .head(&self.key)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                let mut body = self
                    .store
                    .get(&self.key, 0, None)
                    .await
                    .map_err(|e| e.to_string())?;
                use futures::StreamExt;
                while let Some(c) = body.next().await {
                    let c = c.map_err(|e| e.to_string())?;
                    self.push(c);
                }
                return Ok(true);
            }
            if !lease::alive(self.store.as_ref(), lease).await? {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    fn push(&self, b: Bytes) {
        self.render
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(b);
        self.render.progress.send_modify(|p| p.chunks += 1);
    }

    async fn render_here(&self) -> Result<(), String> {
        let _permit = self
            .pool
            .acquire()
            .await
            .map_err(|_| "render pool closed".to_string())?;
        info!(key = %self.key, "render started");
        let began = std::time::Instant::now();
        let video = matches!(self.what, What::Mp4 { .. });
        let want: fn(&str) -> bool = if video {
            |n| n.ends_with(".mjr")
        } else {
            |n| n.ends_with("-audio.mjr")
        };
        let streams = super::raw::entries(self.store.as_ref(), &self.tar_key, want).await?;
        let mut parties = Vec::new();
        let (mut agent, mut user) = (None, None);
        for (name, bytes) in &streams {
            if name.ends_with("-audio.mjr") {
                parties.push(audio::prepare(name, bytes, self.start_us)?);
            } else if name == "agent-video.mjr" {
                agent = render::video::prepare(name, bytes, self.start_us)?;
            } else if name == "user-video.mjr" {
                user = render::video::prepare(name, bytes, self.start_us)?;
            }
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let encode = async {
            match self.what {
                What::Mp3 { samples } => render::render_mp3(parties, samples, tx).await,
                What::Mp4 { ms, video_bps } => {
                    render::render_mp4(parties, agent, user, ms, video_bps, tx).await
                }
            }
        };
        // Nobody reading for a while (a seek reopens a reader at once, so
        // allow a grace period): stop; ffmpeg is killed with its handle.
        let collect = async move {
            let mut last_reader = std::time::Instant::now();
            while let Some(b) = rx.recv().await {
                self.push(b);
                if self.render.progress.receiver_count() > 0 {
                    last_reader = std::time::Instant::now();
                } else if last_reader.elapsed() > READERLESS_GRACE {
                    return Err("every reader left; render stopped".to_string());
                }
            }
            Ok(())
        };
        let (size, readers) = tokio::join!(encode, collect);
        readers?;
        let size = size?;
        let mut whole = BytesMut::with_capacity(size as usize);
        for c in self
            .render
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            whole.extend_from_slice(c);
        }
        match self
            .store
            .put(&self.key, whole.freeze(), PutOptions { if_absent: true })
            .await
        {
            Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => warn!(key = %self.key, error = %e, "rendered file not cached"),
        }
        info!(key = %self.key, bytes = size, ms = began.elapsed().as_millis() as u64, "rendered");
        Ok(())
    }
}

/// The bytes of a render from `offset`, as they are produced.
fn follow(render: Arc<Render>, rx: watch::Receiver<Progress>, offset: u64) -> ByteStream {
    let state = (render, rx, 0usize, offset);
    Box::pin(futures::stream::unfold(Some(state), |state| async move {
        let (render, mut rx, mut next, mut skip) = state?;
        loop {
            let chunk = render
                .chunks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(next)
                .cloned();
            if let Some(c) = chunk {
                next += 1;
                if skip >= c.len() as u64 {
                    skip -= c.len() as u64;
                    continue;
                }
                let c = c.slice(skip as usize..);
                return Some((Ok(c), Some((render, rx, next, 0))));
            }
            let end = rx.borrow().end.clone();
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
