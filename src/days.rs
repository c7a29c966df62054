//! The day index kept up to date and read (SPEC §16; its schema and keys
//! are in [`crate::layout::day`] and [`crate::layout::Day`]).
//!
//! One [`Days`] per tenant, shared by the archiver, the tree and the jobs of
//! a process. It learns once, by the storage self-test
//! ([`crate::store::selftest`], under the tenant's own prefix), how updates
//! can be made safe there:
//!
//! - [`Mode::Shared`], on a store that honours conditional writes: one
//!   object per day, `P/index/YYYY/MM/DD.json`, updated by read, change and
//!   write on the ETag read (`If-Match`; a new one with `If-None-Match: *`),
//!   again on conflict, so two nodes never lose each other's sessions.
//! - [`Mode::Shards`], on a store that ignores them: each node writes only
//!   its own shard, `P/index/YYYY/MM/DD/<node>.json` (`[audit] node`, which
//!   must differ between nodes), one update at a time within the process;
//!   readers merge the day's index and all its shards. An erase by one node
//!   of a session another node's shard lists is a dated entry in the erasing
//!   node's shard.
//!
//! Readers list the day's index prefix (one request finds the index and
//! every shard with their ETags) and read only what changed since they last
//! read it. A day with no index yet is built from its sessions (one read of
//! each `info.json`) and stored, so sessions archived before the index
//! existed still list; `recvault reindex` rebuilds days on purpose.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::layout::day::{DayEntry, DayIndex, MAX_BYTES};
use crate::layout::index::{self, SessionIndex};
use crate::layout::{self, Day, SessionKeys};
use crate::store::{ObjectStore, PutOptions, SharedStore, StoreError};

/// How updates are made safe on this tenant's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One index per day, conditional writes.
    Shared,
    /// One shard per node and day, merged on read.
    Shards,
}

impl Mode {
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Shared => {
                "one day index updated with conditional writes (If-Match, If-None-Match)"
            }
            Mode::Shards => {
                "per-node day index shards merged on read (the store ignores conditional writes)"
            }
        }
    }
}

/// Tries of one update before it reports a conflict (each after a short,
/// growing, jittered pause).
const TRIES: u32 = 30;
/// Sessions' `info.json` read at once when a day is built from them.
const SCAN_CONCURRENCY: usize = 16;
/// Parsed day indexes kept in memory, in KiB of their stored size (each
/// part validated by its ETag before use): 64 MiB stored, about 16 days of
/// 10,000 sessions.
const CACHED_KIB: u64 = 64 * 1024;
/// Days whose newest call end is kept (by the ETags of their parts).
const CACHED_TIMES: u64 = 100_000;
/// How long a day last listed with its index alone (no shard) is checked
/// with a HEAD of the index instead of a LIST, on a store that honours
/// conditional writes: a shard can only come from a node that found the
/// store ignoring them, and it is seen within this long.
const RELIST_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// A day's index, or its shards merged, as one tenant's tree reads it.
pub struct Days {
    store: SharedStore,
    prefix: String,
    node: String,
    mode: OnceCell<Mode>,
    /// Forces the mode (tests; `None`: the self-test decides).
    forced: Option<Mode>,
    /// One update of a key at a time within this process.
    locks: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Parsed parts by key, with the ETag they were read at.
    parts: moka::future::Cache<String, (String, Arc<DayIndex>, u32)>,
    /// Each day's newest call end by its index prefix, with the ETags of
    /// the parts it was read from.
    times: moka::future::Cache<String, (String, Option<chrono::DateTime<Utc>>)>,
    /// Days (by index prefix) whose last listing found the index alone;
    /// kept [`RELIST_AFTER`], used in [`Mode::Shared`] only.
    index_only: moka::future::Cache<String, ()>,
    /// Each day's parts as last listed, answered again for
    /// [`Self::fresh_for`] without asking storage (none when that is zero).
    fresh: Option<moka::future::Cache<String, Vec<crate::store::ObjectMeta>>>,
    /// Counts this process's writes of any day's parts: a listing made
    /// while one ran is not kept as fresh (this node's writes show at once).
    writes: std::sync::atomic::AtomicU64,
}

/// What a rebuild of one day found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub sessions: usize,
    /// Whether the stored index differed and was rewritten.
    pub changed: bool,
}

impl Days {
    /// The day indexes of the tenant whose objects `store` holds below
    /// `prefix`; `node` names this process's shards.
    pub fn new(store: SharedStore, prefix: &str, node: &str) -> Self {
        Days {
            store,
            prefix: prefix.to_string(),
            node: node.to_string(),
            mode: OnceCell::new(),
            forced: None,
            locks: std::sync::Mutex::new(HashMap::new()),
            parts: moka::future::Cache::builder()
                .max_capacity(CACHED_KIB)
                .weigher(|_, part: &(String, Arc<DayIndex>, u32)| part.2)
                .build(),
            times: moka::future::Cache::builder()
                .max_capacity(CACHED_TIMES)
                .build(),
            index_only: moka::future::Cache::builder()
                .max_capacity(CACHED_TIMES)
                .time_to_live(RELIST_AFTER)
                .build(),
            fresh: None,
            writes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Answers a day's listing again from what this process last read for
    /// `window` (`[limits] listing_fresh_ms`): a repeated listing or search
    /// within it asks storage nothing. This process's own writes show at
    /// once; another node's show within `window`. Zero: every listing
    /// asks storage.
    pub fn fresh_for(mut self, window: std::time::Duration) -> Self {
        self.fresh = (!window.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(CACHED_TIMES)
                .time_to_live(window)
                .build()
        });
        self
    }

    /// Marks the day's parts written by this process (called once the write
    /// has ended, whatever its outcome): its next listing asks storage, and
    /// a listing under way while the write ran is not kept.
    async fn wrote(&self, day: &Day) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(fresh) = &self.fresh {
            fresh.invalidate(&day.index_prefix(&self.prefix)).await;
        }
    }

    /// The same with the mode chosen instead of tested (tests, samples).
    pub fn with_mode(store: SharedStore, prefix: &str, node: &str, mode: Mode) -> Self {
        Days {
            forced: Some(mode),
            ..Days::new(store, prefix, node)
        }
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The self-test's verdict once it has run (or the mode forced); `None`
    /// before.
    pub fn known_mode(&self) -> Option<Mode> {
        self.forced.or_else(|| self.mode.get().copied())
    }

    /// The mode, from the self-test the first time (again after a self-test
    /// that could not run: storage did not answer).
    pub async fn mode(&self) -> Result<Mode, StoreError> {
        self.mode
            .get_or_try_init(|| async {
                if let Some(m) = self.forced {
                    return Ok(m);
                }
                let probe = layout::index_selftest_probe(
                    &self.prefix,
                    &self.node,
                    &format!("{:016x}", rand::random::<u64>()),
                );
                let c = crate::store::selftest(self.store.as_ref(), &probe).await?;
                if c.trusted() {
                    info!(prefix = %self.prefix, "storage honours conditional writes (If-None-Match, If-Match); day indexes are shared");
                    Ok(Mode::Shared)
                } else {
                    warn!(
                        prefix = %self.prefix,
                        if_none_match = c.if_none_match,
                        if_match = c.if_match,
                        node = %self.node,
                        "storage IGNORES conditional writes: day indexes fall back to one shard per node (give every node its own [audit] node name); deliver each session to one node only, since two nodes archiving the same session at once may both write its info.json; a render lease can then be held twice (both renders give the same bytes)"
                    );
                    Ok(Mode::Shards)
                }
            })
            .await
            .copied()
    }

    fn lock_of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, l| l.strong_count() > 0);
        if let Some(l) = locks.get(key).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.to_string(), Arc::downgrade(&l));
        l
    }

    /// The day's stored parts (the index and its shards) with their ETags:
    /// one LIST, or one HEAD of the index when the store honours
    /// conditional writes and the day's last listing (within
    /// [`RELIST_AFTER`]) found no shard. On S3 a HEAD costs what any GET
    /// does, while a LIST is slower (and on some stores scans the bucket).
    async fn list_parts(&self, day: &Day) -> Result<Vec<crate::store::ObjectMeta>, StoreError> {
        let Some(fresh) = &self.fresh else {
            return self.ask_parts(day).await;
        };
        let prefix = day.index_prefix(&self.prefix);
        if let Some(listed) = fresh.get(&prefix).await {
            return Ok(listed);
        }
        let writes = self.writes.load(std::sync::atomic::Ordering::SeqCst);
        let listed = self.ask_parts(day).await?;
        if self.writes.load(std::sync::atomic::Ordering::SeqCst) == writes {
            fresh.insert(prefix.clone(), listed.clone()).await;
            // A write that ended between the check and the insert.
            if self.writes.load(std::sync::atomic::Ordering::SeqCst) != writes {
                fresh.invalidate(&prefix).await;
            }
        }
        Ok(listed)
    }

    /// [`Self::list_parts`] from storage.
    async fn ask_parts(&self, day: &Day) -> Result<Vec<crate::store::ObjectMeta>, StoreError> {
        let shared = self.known_mode() == Some(Mode::Shared);
        let (prefix, index) = (day.index_prefix(&self.prefix), day.index(&self.prefix));
        if shared && self.index_only.contains_key(&prefix) {
            if let Some(meta) = self.store.head(&index).await? {
                if meta.etag.is_some() {
                    return Ok(vec![meta]);
                }
            }
        }
        let listed = list_parts(self.store.as_ref(), &self.prefix, day).await?;
        // Noted whatever the mode: a read before the start's self-test has
        // decided it can use what this listing found.
        let index_only = listed.len() == 1 && listed[0].key == index;
        if index_only {
            self.index_only.insert(prefix, ()).await;
        } else {
            self.index_only.invalidate(&prefix).await;
        }
        Ok(listed)
    }

    /// The newest call end of a day (`None`: it lists no session). A day
    /// whose parts kept their ETags since the last look costs one LIST.
    pub async fn newest(&self, day: &Day) -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
        let listed = self.list_parts(day).await?;
        let tags: Vec<&str> = listed
            .iter()
            .map(|o| o.etag.as_deref().unwrap_or(""))
            .collect();
        let tags = tags.join(" ");
        let key = day.index_prefix(&self.prefix);
        if !listed.is_empty() && listed.iter().all(|o| o.etag.is_some()) {
            if let Some((t, newest)) = self.times.get(&key).await {
                if t == tags {
                    return Ok(newest);
                }
            }
        }
        let newest = match self.load_listed(day, listed).await? {
            Some(d) => d.newest(),
            None => self.day(day).await?.newest(),
        };
        self.times.insert(key, (tags, newest)).await;
        Ok(newest)
    }

    /// The day's stored parts merged; `None` when the day has none (or only
    /// unreadable ones).
    async fn load(&self, day: &Day) -> Result<Option<Arc<DayIndex>>, StoreError> {
        let listed = self.list_parts(day).await?;
        self.load_listed(day, listed).await
    }

    /// [`Self::load`] of the parts a listing found.
    async fn load_listed(
        &self,
        day: &Day,
        listed: Vec<crate::store::ObjectMeta>,
    ) -> Result<Option<Arc<DayIndex>>, StoreError> {
        let mut parts = Vec::new();
        for o in listed {
            let etag = o.etag.clone().unwrap_or_default();
            if let Some((tag, d, _)) = self.parts.get(&o.key).await {
                if !etag.is_empty() && tag == etag {
                    parts.push(d);
                    continue;
                }
            }
            if let Some((tag, d)) = read_part(self.store.as_ref(), &o.key).await?.read() {
                let d = Arc::new(d);
                if !tag.is_empty() {
                    let kib = u32::try_from(o.size.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
                    self.parts
                        .insert(o.key.clone(), (tag, d.clone(), kib))
                        .await;
                }
                parts.push(d);
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        if parts.len() == 1 && parts[0].erased.is_empty() {
            return Ok(parts.pop());
        }
        Ok(Some(Arc::new(DayIndex::merge(
            &day.label(),
            parts.iter().map(|p| (**p).clone()),
        ))))
    }

    /// The day as listings see it: its index (its shards merged), built from
    /// the sessions and stored when there is none yet.
    pub async fn day(&self, day: &Day) -> Result<Arc<DayIndex>, StoreError> {
        let listed = self.list_parts(day).await?;
        let stored = !listed.is_empty();
        if let Some(d) = self.load_listed(day, listed).await? {
            return Ok(d);
        }
        if stored {
            // Parts that cannot be read: rewritten from the sessions on
            // their ETag.
            self.rebuild(day).await?;
            if let Some(d) = self.load(day).await? {
                return Ok(d);
            }
        }
        let scanned = scan(self.store.as_ref(), &self.prefix, day).await?;
        if !scanned.sessions.is_empty() {
            info!(prefix = %self.prefix, day = %day.label(), sessions = scanned.sessions.len(), "day index missing; built from the sessions");
            if let Err(e) = self.store_built(day, &scanned).await {
                warn!(prefix = %self.prefix, day = %day.label(), error = %e, "the day index built from the sessions could not be stored; it is built again on the next listing");
            }
        }
        Ok(Arc::new(scanned))
    }

    /// Stores a day built from its sessions where nothing is stored yet.
    async fn store_built(&self, day: &Day, built: &DayIndex) -> Result<(), StoreError> {
        let stored = self.put_built(day, built).await;
        self.wrote(day).await;
        stored
    }

    /// [`Self::store_built`]'s write.
    async fn put_built(&self, day: &Day, built: &DayIndex) -> Result<(), StoreError> {
        let body = Bytes::from(built.to_bytes());
        match self.mode().await? {
            Mode::Shared => match self
                .store
                .put(&day.index(&self.prefix), body, PutOptions::if_absent())
                .await
            {
                // Another node stored it first: theirs is as good.
                Ok(()) | Err(StoreError::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(e),
            },
            Mode::Shards => {
                let key = day.shard(&self.prefix, &self.node);
                let lock = self.lock_of(&key);
                let _held = lock.lock().await;
                if !matches!(read_part(self.store.as_ref(), &key).await?, Part::Absent) {
                    return Ok(());
                }
                self.store.put(&key, body, PutOptions::default()).await
            }
        }
    }

    /// Applies `change` to the day's index (or this node's shard), one
    /// update of a key at a time in this process.
    async fn update(
        &self,
        day: &Day,
        change: impl Fn(&mut DayIndex, Mode) -> bool,
    ) -> Result<(), StoreError> {
        let mode = self.mode().await?;
        let key = self.key(day, mode);
        let lock = self.lock_of(&key);
        let _held = lock.lock().await;
        let updated = update(self.store.as_ref(), &self.prefix, day, &key, mode, change).await;
        self.wrote(day).await;
        updated
    }

    /// The part of the day's index this process writes.
    fn key(&self, day: &Day, mode: Mode) -> String {
        match mode {
            Mode::Shared => day.index(&self.prefix),
            Mode::Shards => day.shard(&self.prefix, &self.node),
        }
    }

    /// Records an archived session (`info_len`: the size of its stored
    /// `info.json`). Idempotent.
    pub async fn add(&self, index: &SessionIndex, info_len: u64) -> Result<(), StoreError> {
        let (id, day, entry) = placed(index, info_len)?;
        self.update(&day, add_entry(&id, &entry)).await
    }

    /// Removes an erased session from its day. Idempotent.
    pub async fn remove(&self, day: &Day, id: &str) -> Result<(), StoreError> {
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.update(day, |d, mode| {
            let listed = d.sessions.remove(id).is_some();
            match mode {
                Mode::Shared => listed,
                Mode::Shards => {
                    d.erased.insert(id.to_string(), now.clone());
                    true
                }
            }
        })
        .await
    }

    /// Those of `sessions` whose `info.json` is still stored (a few HEADs at
    /// once).
    async fn still_there(
        &self,
        day: &Day,
        ids: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let keys: Vec<String> = ids
            .iter()
            .map(|id| SessionKeys::new(&self.prefix, &day.year, &day.month, &day.day, id).index())
            .collect();
        let store = self.store.clone();
        let found: Vec<bool> = futures::stream::iter(keys)
            .map(move |key| {
                let store = store.clone();
                async move { Ok::<_, StoreError>(store.head(&key).await?.is_some()) }
            })
            .buffered(SCAN_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(ids
            .into_iter()
            .zip(found)
            .filter_map(|(id, there)| there.then_some(id))
            .collect())
    }

    /// Rebuilds a day's index from its sessions (`recvault reindex`):
    /// what the scan finds, plus sessions the stored index lists that were
    /// archived while the scan ran; rewritten only when it differs.
    pub async fn rebuild(&self, day: &Day) -> Result<Rebuilt, StoreError> {
        let rebuilt = self.rewrite(day).await;
        self.wrote(day).await;
        rebuilt
    }

    /// [`Self::rebuild`]'s scan and write.
    async fn rewrite(&self, day: &Day) -> Result<Rebuilt, StoreError> {
        let mode = self.mode().await?;
        let key = self.key(day, mode);
        let lock = self.lock_of(&key);
        let _held = lock.lock().await;
        for _ in 0..TRIES {
            let mut built = scan(self.store.as_ref(), &self.prefix, day).await?;
            let part = read_part(self.store.as_ref(), &key).await?;
            let unreadable = match &part {
                Part::Unreadable(tag) => Some(tag.clone()),
                _ => None,
            };
            let stored = part.read();
            if let Some((_, current)) = &stored {
                // Listed but not scanned: archived while the scan ran, or
                // erased before it.
                for id in self.still_there(day, absent_from(current, &built)).await? {
                    if let Some(e) = current.sessions.get(&id) {
                        built.sessions.insert(id, e.clone());
                    }
                }
                // Scanned but not listed: erased since the scan read it?
                let kept = self.still_there(day, absent_from(&built, current)).await?;
                built
                    .sessions
                    .retain(|id, _| current.sessions.contains_key(id) || kept.contains(id));
            }
            if mode == Mode::Shards {
                // Another node's shard may list a session erased since: this
                // node's shard says so, or the merge would bring it back.
                if let Some((_, c)) = &stored {
                    for (id, when) in &c.erased {
                        if !built.sessions.contains_key(id) {
                            built.erased.insert(id.clone(), when.clone());
                        }
                    }
                }
                if let Some(all) = self.load(day).await? {
                    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    let others = absent_from(&all, &built);
                    let there = self.still_there(day, others.clone()).await?;
                    for id in others {
                        if !there.contains(&id) {
                            let had = stored
                                .as_ref()
                                .and_then(|(_, c)| c.erased.get(&id).cloned());
                            built.erased.insert(id, had.unwrap_or_else(|| now.clone()));
                        }
                    }
                }
            }
            let sessions = built.sessions.len();
            let unchanged = match (&stored, &unreadable) {
                (Some((_, current)), _) => {
                    current.sessions == built.sessions && current.erased == built.erased
                }
                (None, Some(_)) => false,
                (None, None) => built.sessions.is_empty(),
            };
            if unchanged {
                return Ok(Rebuilt {
                    sessions,
                    changed: false,
                });
            }
            let tag = stored.map(|(tag, _)| tag).or(unreadable);
            match self
                .store
                .put(&key, Bytes::from(built.to_bytes()), write_on(mode, tag))
                .await
            {
                Ok(()) => {
                    return Ok(Rebuilt {
                        sessions,
                        changed: true,
                    })
                }
                Err(StoreError::Changed(_) | StoreError::AlreadyExists(_)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Transient(format!(
            "{key}: changed by another writer on each of {TRIES} tries"
        )))
    }
}

/// Reads one part (the day's index or a shard): `None` when absent.
/// One stored part of a day's index.
enum Part {
    Absent,
    /// Stored but not readable as a day index (rebuilt, and written on its ETag).
    Unreadable(String),
    Read(String, DayIndex),
}

impl Part {
    fn read(self) -> Option<(String, DayIndex)> {
        match self {
            Part::Read(tag, d) => Some((tag, d)),
            _ => None,
        }
    }
}

async fn read_part(store: &dyn ObjectStore, key: &str) -> Result<Part, StoreError> {
    let got = match store.get_object(key, 0, None).await {
        Ok(g) => g,
        Err(StoreError::NotFound(_)) => return Ok(Part::Absent),
        Err(e) => return Err(e),
    };
    let etag = got.meta.etag.clone().unwrap_or_default();
    if got.meta.size > MAX_BYTES {
        // Not read (it would hold that much memory): rebuilt instead.
        warn!(%key, bytes = got.meta.size, "day index larger than {MAX_BYTES} bytes; rebuilding it from the sessions");
        return Ok(Part::Unreadable(etag));
    }
    let bytes: Vec<Bytes> = got.body.try_collect().await?;
    let bytes = bytes.concat();
    match DayIndex::parse(&bytes) {
        Ok(d) => Ok(Part::Read(etag, d)),
        Err(e) => {
            // Rebuilt from the sessions (and rewritten) like a missing one.
            warn!(%key, error = %e, "day index unreadable; rebuilding it from the sessions");
            Ok(Part::Unreadable(etag))
        }
    }
}

/// Builds a day's index from its sessions: one read of each session's
/// `info.json`.
async fn scan(
    store: &dyn ObjectStore,
    tenant_prefix: &str,
    day: &Day,
) -> Result<DayIndex, StoreError> {
    let prefix = day.sessions_prefix(tenant_prefix);
    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let page = store.list_page(&prefix, None, token).await?;
        for o in &page.objects {
            if let Some(id) = layout::session_of_index_key(&prefix, &o.key) {
                ids.push((id.to_string(), o.last_modified));
            }
        }
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    let entries: Vec<Option<(String, DayEntry)>> = futures::stream::iter(ids)
        .map(|(id, written)| async move {
            let keys = SessionKeys::new(tenant_prefix, &day.year, &day.month, &day.day, &id);
            let bytes = match crate::store::read_all(store, &keys.index(), index::MAX_BYTES).await {
                Ok(b) => b,
                // Erased between the listing and the read.
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            Ok(Some((id, entry_of_stored(&bytes, written))))
        })
        .buffered(SCAN_CONCURRENCY)
        .try_collect()
        .await?;
    let mut out = DayIndex::new(&day.label());
    out.sessions.extend(entries.into_iter().flatten());
    Ok(out)
}

/// Applies `change` to the day's index (or this node's shard) and
/// stores it, again on conflict; `change` returns whether it changed
/// anything. A day without an index yet starts from its sessions.
async fn update(
    store: &dyn ObjectStore,
    tenant_prefix: &str,
    day: &Day,
    key: &str,
    mode: Mode,
    change: impl Fn(&mut DayIndex, Mode) -> bool,
) -> Result<(), StoreError> {
    let mut pause = Duration::from_millis(10);
    for _ in 0..TRIES {
        let part = read_part(store, key).await?;
        let repair = matches!(part, Part::Unreadable(_));
        let (current, etag) = match part {
            Part::Read(etag, d) => (d, Some(etag)),
            // Whatever it held, the sessions tell again.
            Part::Unreadable(etag) => (scan(store, tenant_prefix, day).await?, Some(etag)),
            Part::Absent => {
                let nothing_yet = match mode {
                    Mode::Shared => true,
                    Mode::Shards => list_parts(store, tenant_prefix, day).await?.is_empty(),
                };
                let base = if nothing_yet {
                    scan(store, tenant_prefix, day).await?
                } else {
                    DayIndex::new(&day.label())
                };
                (base, None)
            }
        };
        let mut next = current;
        if !change(&mut next, mode) && etag.is_some() && !repair {
            return Ok(());
        }
        match store
            .put(key, Bytes::from(next.to_bytes()), write_on(mode, etag))
            .await
        {
            Ok(()) => return Ok(()),
            Err(StoreError::Changed(_) | StoreError::AlreadyExists(_)) => {
                tokio::time::sleep(pause / 2 + pause.mul_f64(rand::random::<f64>() / 2.0)).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Transient(format!(
        "{key}: changed by another writer on each of {TRIES} tries"
    )))
}

/// `recvault check-config`: one line per tenant saying which storage it
/// lives in, whether that answers and honours conditional writes, and so
/// how its day indexes are kept. The tenants are checked side by side,
/// each bounded in time, so one unreachable bucket delays no other line.
pub async fn check_config(cfg: &crate::config::Config) -> Vec<String> {
    let stores = match tokio::time::timeout(
        Duration::from_secs(30),
        crate::store::Stores::open(cfg),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return vec![format!("storage: cannot be opened: {e}")],
        Err(_) => return vec!["storage: did not answer within 30 s".into()],
    };
    let node = format!("{}-check", cfg.audit.node_name());
    let lines = cfg.tenants.iter().map(|t| {
        let (stores, node) = (&stores, &node);
        async move {
            let id = t.id.get_ref();
            let place = cfg
                .storage_of(t)
                .map_or_else(|| "no storage".to_string(), |p| p.describe());
            let line = async {
                let store = stores.of_tenant(cfg, t).await?;
                let sealed = crate::store::crypt::for_tenant(t, &store)
                    .await
                    .map_err(|e| format!("its keyset cannot be read: {e}"))?;
                let days = Days::new(
                    crate::store::crypt::tenant_store(sealed.as_ref(), &store),
                    t.prefix.get_ref(),
                    node,
                );
                let mode = tokio::time::timeout(Duration::from_secs(30), days.mode())
                    .await
                    .map_err(|_| "did not answer within 30 s".to_string())?
                    .map_err(|e| format!("does not answer: {e}"))?;
                Ok::<_, String>(match mode {
                    Mode::Shared => format!("honours conditional writes; {}", mode.describe()),
                    Mode::Shards => format!("IGNORES conditional writes; {}", mode.describe()),
                })
            }
            .await;
            match line {
                Ok(l) => format!("tenant {id}: {place} {l}"),
                Err(e) => format!("tenant {id}: {place}: {e}"),
            }
        }
    });
    futures::future::join_all(lines).await
}

/// How a part read at `etag` (`None`: absent) is written: on its ETag, or
/// as a new object, where conditions are honoured; plainly in a node's own
/// shard.
fn write_on(mode: Mode, etag: Option<String>) -> PutOptions {
    match (mode, etag) {
        (Mode::Shards, _) => PutOptions::default(),
        (Mode::Shared, Some(tag)) if !tag.is_empty() => PutOptions {
            if_match: Some(tag),
            ..PutOptions::default()
        },
        (Mode::Shared, _) => PutOptions::if_absent(),
    }
}

/// The sessions `a` lists and `b` does not.
fn absent_from(a: &DayIndex, b: &DayIndex) -> Vec<String> {
    a.sessions
        .keys()
        .filter(|id| !b.sessions.contains_key(*id))
        .cloned()
        .collect()
}

/// A day's stored parts (its index and every shard) with their ETags.
async fn list_parts(
    store: &dyn ObjectStore,
    tenant_prefix: &str,
    day: &Day,
) -> Result<Vec<crate::store::ObjectMeta>, StoreError> {
    let mut listed = Vec::new();
    let mut token = None;
    let index_prefix = day.index_prefix(tenant_prefix);
    loop {
        let page = store.list_page(&index_prefix, None, token).await?;
        listed.extend(
            page.objects
                .into_iter()
                .filter(|o| day.is_index_part(tenant_prefix, &o.key)),
        );
        token = page.next;
        if token.is_none() {
            return Ok(listed);
        }
    }
}

/// Drops a day's index and its shards, for a writer that changed the
/// day's sessions without a [`Days`] (samples written straight into
/// storage): the next listing builds the day from its sessions.
pub async fn forget(
    store: &dyn ObjectStore,
    tenant_prefix: &str,
    day: &Day,
) -> Result<(), StoreError> {
    for o in list_parts(store, tenant_prefix, day).await? {
        store.delete(&o.key).await?;
    }
    Ok(())
}

/// A session's id, day and entry, from its index.
fn placed(index: &SessionIndex, info_len: u64) -> Result<(String, Day, DayEntry), StoreError> {
    match (
        index.session_id.clone(),
        index.started(),
        DayEntry::of(index, info_len),
    ) {
        (Some(id), Some(started), Some(entry)) => Ok((id, Day::of_call(started), entry)),
        _ => Err(StoreError::Permanent(
            "a session index without id, start or end cannot be listed".into(),
        )),
    }
}

/// The change that adds (or refreshes) one session's entry.
fn add_entry<'a>(id: &'a str, entry: &'a DayEntry) -> impl Fn(&mut DayIndex, Mode) -> bool + 'a {
    move |d, _| {
        let erased = d.erased.remove(id).is_some();
        let same = d.sessions.get(id) == Some(entry);
        if !same {
            d.sessions.insert(id.to_string(), entry.clone());
        }
        erased || !same
    }
}

/// A day entry from a stored `info.json` (`written`: its time in storage).
/// An index that cannot be read still lists, as the tree shows it: its
/// own file, at the time it was written.
fn entry_of_stored(bytes: &[u8], written: chrono::DateTime<Utc>) -> DayEntry {
    let len = bytes.len() as u64;
    SessionIndex::parse(bytes)
        .ok()
        .and_then(|i| DayEntry::of(&i, len))
        .unwrap_or_else(|| {
            let at = written.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            DayEntry {
                started_at: at.clone(),
                ended_at: at,
                entries: [(layout::INDEX.to_string(), len)].into(),
                ..DayEntry::default()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;
    use std::collections::BTreeMap;

    const P: &str = "tenants/acme/";

    fn index(id: &str, minute: u32) -> SessionIndex {
        SessionIndex::parse(
            format!(
                r#"{{"session_id":"{id}","started_at":"2026-11-23T10:{minute:02}:00Z","ended_at":"2026-11-23T10:{minute:02}:30Z",
                "agent":{{"id":"a"}},"user":{{"id":"u"}},"recvault":{{"v":1,"ingested_at":"2026-11-23T11:00:00Z"}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    /// Writes a session's `info.json` as the archiver does (the scan finds it).
    async fn archive(store: &SharedStore, ix: &SessionIndex) -> u64 {
        let keys =
            SessionKeys::of_call(P, ix.started().unwrap(), ix.session_id.as_deref().unwrap());
        let bytes = ix.to_bytes();
        let len = bytes.len() as u64;
        store
            .put(&keys.index(), Bytes::from(bytes), PutOptions::default())
            .await
            .unwrap();
        len
    }

    fn day() -> Day {
        Day::new("2026", "11", "23")
    }

    /// Pauses after each read, so that two nodes' read-change-write
    /// cycles overlap (as over a network); counts LISTs.
    struct Slow(SharedStore, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl ObjectStore for Slow {
        async fn head(&self, key: &str) -> Result<Option<crate::store::ObjectMeta>, StoreError> {
            self.0.head(key).await
        }
        async fn get_object(
            &self,
            k: &str,
            o: u64,
            l: Option<u64>,
        ) -> Result<crate::store::Got, StoreError> {
            let got = self.0.get_object(k, o, l).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
            got
        }
        async fn list_page(
            &self,
            p: &str,
            d: Option<&str>,
            c: Option<String>,
        ) -> Result<crate::store::ListPage, StoreError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.list_page(p, d, c).await
        }
        async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<(), StoreError> {
            self.0.put(key, body, opts).await
        }
        async fn multipart_start(&self, key: &str, m: Option<&str>) -> Result<String, StoreError> {
            self.0.multipart_start(key, m).await
        }
        async fn multipart_part(
            &self,
            k: &str,
            u: &str,
            n: u32,
            b: Bytes,
        ) -> Result<String, StoreError> {
            self.0.multipart_part(k, u, n, b).await
        }
        async fn multipart_complete(
            &self,
            k: &str,
            u: &str,
            t: Vec<String>,
        ) -> Result<(), StoreError> {
            self.0.multipart_complete(k, u, t).await
        }
        async fn multipart_abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
            self.0.multipart_abort(key, upload).await
        }
        async fn multipart_list(
            &self,
            prefix: &str,
        ) -> Result<Vec<crate::store::Upload>, StoreError> {
            self.0.multipart_list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.0.delete(key).await
        }
    }

    /// Within `fresh_for`, a repeated read asks storage nothing; this
    /// node's own write shows at once (also one that ended while a listing
    /// was under way); another node's shows once the window has passed.
    #[tokio::test]
    async fn a_repeated_read_within_the_fresh_window_asks_storage_nothing_but_sees_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let local: SharedStore = Arc::new(LocalStore::open(dir.path()).unwrap());
        let ops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = ops.clone();
        let store: SharedStore = Arc::new(crate::store::tap::Tap::new(local).before(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Duration::ZERO
        }));
        let ops = move || ops.load(std::sync::atomic::Ordering::SeqCst);
        let window = Duration::from_millis(400);
        let a = Days::with_mode(store.clone(), P, "a", Mode::Shared).fresh_for(window);
        let b = Days::with_mode(store.clone(), P, "b", Mode::Shared);
        let ix = index("s-0", 0);
        let len = archive(&store, &ix).await;
        a.add(&ix, len).await.unwrap();
        assert_eq!(a.day(&day()).await.unwrap().sessions.len(), 1);
        let before = ops();
        for _ in 0..5 {
            assert_eq!(a.day(&day()).await.unwrap().sessions.len(), 1);
            a.newest(&day()).await.unwrap();
        }
        assert_eq!(
            ops(),
            before,
            "repeats within the window ask storage nothing"
        );
        // This node's own archive: seen by the very next read.
        let ix = index("s-1", 1);
        let len = archive(&store, &ix).await;
        a.add(&ix, len).await.unwrap();
        assert_eq!(a.day(&day()).await.unwrap().sessions.len(), 2);
        // Another node's erase: not seen within the window, seen after it.
        let read = a.day(&day()).await.unwrap();
        b.remove(&day(), "s-0").await.unwrap();
        assert_eq!(
            a.day(&day()).await.unwrap().sessions.len(),
            read.sessions.len()
        );
        tokio::time::sleep(window + Duration::from_millis(200)).await;
        let now = ops();
        assert_eq!(
            a.day(&day())
                .await
                .unwrap()
                .sessions
                .keys()
                .collect::<Vec<_>>(),
            ["s-1"]
        );
        assert!(ops() > now, "after the window storage is asked again");
        // A listing under way while this node writes is not kept as fresh.
        let today = day();
        let (listing, writing) = tokio::join!(a.day(&today), async {
            let ix = index("s-2", 2);
            let len = archive(&store, &ix).await;
            a.add(&ix, len).await
        });
        listing.unwrap();
        writing.unwrap();
        assert_eq!(a.day(&day()).await.unwrap().sessions.len(), 2);
        // Zero: no window, every read asks.
        let c = Days::with_mode(store.clone(), P, "c", Mode::Shared).fresh_for(Duration::ZERO);
        c.day(&day()).await.unwrap();
        let now = ops();
        c.day(&day()).await.unwrap();
        assert!(ops() > now);
    }

    /// Two nodes (two `Days` over one store) add 40 sessions each at once.
    async fn two_nodes_at_once(
        mode: Option<Mode>,
    ) -> (tempfile::TempDir, SharedStore, [Arc<Days>; 2]) {
        let dir = tempfile::tempdir().unwrap();
        let local: SharedStore = Arc::new(LocalStore::open(dir.path()).unwrap());
        let store: SharedStore = Arc::new(Slow(local, Default::default()));
        let make = |node: &str| {
            Arc::new(match mode {
                Some(m) => Days::with_mode(store.clone(), P, node, m),
                None => Days::new(store.clone(), P, node),
            })
        };
        let nodes = [make("node-a"), make("node-b")];
        let mut tasks = Vec::new();
        // Each node archives one session after the other (the index exists
        // after the first), both nodes at once.
        for (n, days) in nodes.iter().enumerate() {
            let (days, store) = (days.clone(), store.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..40 {
                    let ix = index(&format!("c-{n}-{i:02}"), i % 60);
                    let len = archive(&store, &ix).await;
                    days.add(&ix, len).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (dir, store, nodes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_nodes_updating_one_day_at_once_lose_no_session() {
        let (_dir, store, [a, b]) = two_nodes_at_once(None).await;
        assert_eq!(
            a.mode().await.unwrap(),
            Mode::Shared,
            "the local backend honours conditions"
        );
        assert_eq!(b.day(&day()).await.unwrap().sessions.len(), 80);
        // One object, no shards.
        let listed = store
            .list_page(&day().index_prefix(P), None, None)
            .await
            .unwrap();
        let keys: Vec<_> = listed.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, [day().index(P).as_str()]);
        // Erase by either node removes the entry for both.
        b.remove(&day(), "c-0-07").await.unwrap();
        let left = a.day(&day()).await.unwrap();
        assert_eq!(left.sessions.len(), 79);
        assert!(!left.sessions.contains_key("c-0-07"));
        assert_eq!(
            left.newest().unwrap().to_rfc3339(),
            "2026-11-23T10:39:30+00:00"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn per_node_shards_merge_every_session_and_an_erase_by_another_node() {
        let (_dir, store, [a, b]) = two_nodes_at_once(Some(Mode::Shards)).await;
        let listed = store
            .list_page(&day().index_prefix(P), None, None)
            .await
            .unwrap();
        let keys: Vec<_> = listed.objects.iter().map(|o| o.key.clone()).collect();
        assert_eq!(keys, [day().shard(P, "node-a"), day().shard(P, "node-b")]);
        assert_eq!(a.day(&day()).await.unwrap().sessions.len(), 80);
        // Node b erases a session node a listed (objects first, as the
        // tree's erase does).
        let keys = SessionKeys::new(P, "2026", "11", "23", "c-0-03");
        store.delete(&keys.index()).await.unwrap();
        b.remove(&day(), "c-0-03").await.unwrap();
        let merged = a.day(&day()).await.unwrap();
        assert_eq!(merged.sessions.len(), 79);
        assert!(!merged.sessions.contains_key("c-0-03"));
        // A rebuild on b keeps the erase (a's shard still lists it), and
        // one on a drops it from a's shard.
        b.rebuild(&day()).await.unwrap();
        assert_eq!(a.day(&day()).await.unwrap().sessions.len(), 79);
        a.rebuild(&day()).await.unwrap();
        assert_eq!(b.day(&day()).await.unwrap().sessions.len(), 79);
        assert!(
            !b.rebuild(&day()).await.unwrap().changed,
            "a second rebuild changes nothing"
        );
    }

    /// A repeated read of a day whose index has no shard costs a HEAD, not
    /// a LIST, and still sees another node's change at once; with shards
    /// (or a store that ignores conditions) every read lists.
    #[tokio::test]
    async fn a_repeated_read_of_a_day_without_shards_heads_the_index_instead_of_listing() {
        let dir = tempfile::tempdir().unwrap();
        let local: SharedStore = Arc::new(LocalStore::open(dir.path()).unwrap());
        let slow = Arc::new(Slow(local, Default::default()));
        let store: SharedStore = slow.clone();
        let lists = || slow.1.load(std::sync::atomic::Ordering::SeqCst);
        let a = Days::with_mode(store.clone(), P, "a", Mode::Shared);
        for i in 0..3 {
            let ix = index(&format!("s-{i}"), i);
            let len = archive(&store, &ix).await;
            a.add(&ix, len).await.unwrap();
        }
        let before = lists();
        assert_eq!(a.day(&day()).await.unwrap().sessions.len(), 3);
        assert_eq!(lists(), before + 1, "the first read lists the day's parts");
        assert_eq!(a.day(&day()).await.unwrap().sessions.len(), 3);
        assert_eq!(
            a.newest(&day()).await.unwrap().unwrap().to_rfc3339(),
            "2026-11-23T10:02:30+00:00"
        );
        assert_eq!(lists(), before + 1, "repeated reads HEAD the index");
        // Another node's erase: the index's ETag changed, so it is read again.
        let b = Days::with_mode(store.clone(), P, "b", Mode::Shared);
        b.remove(&day(), "s-1").await.unwrap();
        let now = lists();
        let d = a.day(&day()).await.unwrap();
        assert_eq!(d.sessions.keys().collect::<Vec<_>>(), ["s-0", "s-2"]);
        assert_eq!(lists(), now, "no LIST for that either");
        // The index gone (a writer that forgot the day): listed again.
        forget(store.as_ref(), P, &day()).await.unwrap();
        let now = lists();
        assert_eq!(
            a.day(&day()).await.unwrap().sessions.len(),
            3,
            "rebuilt from the sessions"
        );
        assert!(lists() > now);
        // Shards: every read lists.
        let c = Days::with_mode(store.clone(), P, "c", Mode::Shards);
        let now = lists();
        c.day(&day()).await.unwrap();
        c.day(&day()).await.unwrap();
        assert_eq!(lists(), now + 2);
    }

    #[tokio::test]
    async fn a_day_without_an_index_is_built_from_its_sessions_and_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut lens = BTreeMap::new();
        for i in 0..5 {
            let ix = index(&format!("old-{i}"), i);
            lens.insert(format!("old-{i}"), archive(&store, &ix).await);
        }
        let days = Days::new(store.clone(), P, "n");
        assert!(store.head(&day().index(P)).await.unwrap().is_none());
        let d = days.day(&day()).await.unwrap();
        assert_eq!(d.sessions.len(), 5);
        assert_eq!(d.sessions["old-3"].entries["info.json"], lens["old-3"]);
        assert!(
            store.head(&day().index(P)).await.unwrap().is_some(),
            "stored"
        );
        // The next session archived keeps the older ones (the index starts
        // from what it has).
        let ix = index("new", 50);
        let len = archive(&store, &ix).await;
        days.add(&ix, len).await.unwrap();
        assert_eq!(days.day(&day()).await.unwrap().sessions.len(), 6);
        // A rebuild finds the same, and changes nothing.
        let r = days.rebuild(&day()).await.unwrap();
        assert_eq!(
            r,
            Rebuilt {
                sessions: 6,
                changed: false
            }
        );
        // An unreadable index is rebuilt too.
        store
            .put(
                &day().index(P),
                Bytes::from_static(b"{broken"),
                PutOptions::default(),
            )
            .await
            .unwrap();
        // The listing repairs it (rewritten on its ETag).
        assert_eq!(days.day(&day()).await.unwrap().sessions.len(), 6);
        let repaired = crate::store::read_all(store.as_ref(), &day().index(P), MAX_BYTES)
            .await
            .unwrap();
        assert_eq!(DayIndex::parse(&repaired).unwrap().sessions.len(), 6);
        let r = days.rebuild(&day()).await.unwrap();
        assert_eq!(
            r,
            Rebuilt {
                sessions: 6,
                changed: false
            }
        );
        assert_eq!(days.day(&day()).await.unwrap().sessions.len(), 6);
    }

    #[tokio::test]
    async fn an_index_without_a_start_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(LocalStore::open(dir.path()).unwrap());
        let days = Days::new(store, P, "n");
        let e = days
            .add(&SessionIndex::parse(br#"{"session_id":"x"}"#).unwrap(), 1)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("without id, start or end"), "{e}");
    }
}
