//! Read-ahead for one open file, for every protocol.
//!
//! SFTP clients read a file as many pipelined `READ(offset, len)` requests,
//! FTPS sends it whole from an offset. Rather than one storage request per
//! read, a background task keeps one streaming GET open from the current
//! offset and fills a buffer bounded by the file's `read_ahead_bytes` and by
//! the connection's and the server's [`ReadBudget`]; reads at the expected
//! offset are served from it as zero-copy slices of the chunks storage
//! delivered. A read elsewhere (a resumed or random read) starts a new
//! stream there, so sequential readers cost one request per file and
//! seekers one per seek.
//!
//! While a read waits for bytes (none are buffered for it), the task takes
//! its next chunk without waiting for budget, one chunk per wait:
//! read-ahead held by idle clients never starves one that is reading, and
//! what it takes that way is at most the read's length and one chunk.

use std::collections::VecDeque;
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::budget::{Held, ReadBudget};
use crate::vfs::{OpenFile, VfsError};

/// A forward jump up to this many bytes is read through instead of re-requested.
const SKIP_THROUGH: u64 = 1024 * 1024;

/// A chunk in the buffer and the budget it holds until it is consumed.
struct Piece {
    data: Bytes,
    _held: Held,
}

/// A read is waiting for bytes: the prefetch task takes its next chunk
/// without waiting for budget (one chunk per wait).
#[derive(Default)]
struct Demand {
    waiting: AtomicBool,
    notify: Notify,
    /// Bytes taken without budget so far (for tests).
    unbudgeted: std::sync::atomic::AtomicU64,
    /// Times a read found nothing buffered for it.
    waits: std::sync::atomic::AtomicU64,
}

impl Demand {
    /// Marks a read waiting until the guard is dropped (the read is served
    /// or cancelled).
    fn waiting(&self) -> Waiting<'_> {
        self.waiting.store(true, Ordering::Release);
        self.waits.fetch_add(1, Ordering::Relaxed);
        // Stored if the task is not listening yet: no lost wake-up.
        self.notify.notify_one();
        Waiting(self)
    }

    /// Returns once a read waits, taking its demand.
    async fn wait(&self) {
        while !self.waiting.swap(false, Ordering::AcqRel) {
            self.notify.notified().await;
        }
    }
}

struct Waiting<'a>(&'a Demand);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.store(false, Ordering::Release);
    }
}

pub struct ReadAhead {
    file: Arc<OpenFile>,
    /// This file's own read-ahead cap, in bytes.
    cap: usize,
    budget: ReadBudget,
    /// File offset of the first byte in `buf`.
    pos: u64,
    buf: VecDeque<Piece>,
    buffered: u64,
    demand: Arc<Demand>,
    rx: Option<mpsc::UnboundedReceiver<Result<Piece, VfsError>>>,
    task: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// A reader holding at most `cap` bytes ahead, within `budget`.
    pub fn new(file: Arc<OpenFile>, cap: usize, budget: ReadBudget) -> Self {
        Self {
            file,
            cap,
            budget,
            pos: 0,
            buf: VecDeque::new(),
            buffered: 0,
            demand: Arc::default(),
            rx: None,
            task: None,
        }
    }

    /// Starts fetching from `offset` before the first read asks (a
    /// transfer whose client is still connecting).
    pub fn start(&mut self, offset: u64) {
        self.restart(offset);
    }

    pub fn file(&self) -> &OpenFile {
        &self.file
    }

    /// Bytes this reader took without budget (served to a waiting read).
    #[cfg(test)]
    pub(crate) fn unbudgeted_bytes(&self) -> u64 {
        self.demand.unbudgeted.load(Ordering::Relaxed)
    }

    fn restart(&mut self, offset: u64) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.buf.clear();
        self.buffered = 0;
        self.pos = offset;
        let (tx, rx) = mpsc::unbounded_channel();
        self.demand = Arc::default();
        self.task = Some(tokio::spawn(prefetch(
            self.file.clone(),
            offset,
            tx,
            Budgets {
                file: Arc::new(Semaphore::new(self.cap)),
                cap: u32::try_from(self.cap).unwrap_or(u32::MAX),
                shared: self.budget.clone(),
                demand: self.demand.clone(),
            },
        )));
        self.rx = Some(rx);
    }

    /// Pulls one more chunk into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, VfsError> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(false);
        };
        let got = match rx.try_recv() {
            Ok(p) => Some(p),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                // A read waits on this: the task must not wait for budget.
                let _waiting = self.demand.waiting();
                rx.recv().await
            }
        };
        match got {
            Some(Ok(p)) => {
                self.buffered += p.data.len() as u64;
                self.buf.push_back(p);
                Ok(true)
            }
            Some(Err(e)) => {
                self.rx = None;
                Err(e)
            }
            None => {
                self.rx = None;
                Ok(false)
            }
        }
    }

    fn consume(&mut self, mut n: u64) {
        self.pos += n;
        self.buffered -= n.min(self.buffered);
        while n > 0 {
            let Some(front) = self.buf.front_mut() else {
                break;
            };
            if (front.data.len() as u64) <= n {
                n -= front.data.len() as u64;
                // Its budget goes back as the piece is dropped.
                self.buf.pop_front();
            } else {
                let _ = front.data.split_to(n as usize);
                n = 0;
            }
        }
    }

    /// Reads up to `len` bytes at `offset` as slices of the buffer (no copy):
    /// `Ok(None)` at end of file. Fewer than `len` bytes come back only at
    /// the end of the file.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Option<Vec<Bytes>>, VfsError> {
        let size = self.file.entry.size;
        if offset >= size || len == 0 {
            return Ok(None);
        }
        let want = (len as u64).min(size - offset);
        let streaming = self.rx.is_some() || !self.buf.is_empty();
        if !streaming || offset < self.pos || offset - self.pos > SKIP_THROUGH + self.buffered {
            self.restart(offset);
        }
        self.fill_for(offset, want).await?;
        let mut out = Vec::new();
        let mut need = want as usize;
        for p in &self.buf {
            let take = need.min(p.data.len());
            out.push(p.data.slice(..take));
            need -= take;
            if need == 0 {
                break;
            }
        }
        self.consume(want);
        Ok(Some(out))
    }
}

impl ReadAhead {
    /// Buffers `[offset, offset + want)`.
    async fn fill_for(&mut self, offset: u64, want: u64) -> Result<(), VfsError> {
        // Read through a short forward gap.
        while self.pos < offset {
            if self.buffered == 0 && !self.fill().await? {
                return Err(truncated());
            }
            self.consume((offset - self.pos).min(self.buffered));
        }
        while self.buffered < want {
            if !self.fill().await? {
                // The object ended before the size the listing promised.
                self.rx = None;
                return Err(truncated());
            }
        }
        Ok(())
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn truncated() -> VfsError {
    VfsError::Producer(
        "the stored object is shorter than its listed size; the operator should check storage"
            .into(),
    )
}

/// What one prefetch task may hold: the file's own cap, the shared
/// budgets, and whether a read is waiting.
struct Budgets {
    file: Arc<Semaphore>,
    cap: u32,
    shared: ReadBudget,
    demand: Arc<Demand>,
}

impl Budgets {
    /// Budget for `n` bytes; nothing to hold when a read is waiting.
    async fn hold(&self, n: u32) -> Held {
        let budgeted = async {
            let file = self.file.clone().acquire_many_owned(n.min(self.cap)).await;
            let held = self.shared.hold(n).await;
            match file {
                Ok(p) => held.with(p),
                Err(_) => held,
            }
        };
        self.or_demand(budgeted, n).await
    }

    /// `budgeted`, or nothing held as soon as a read waits.
    async fn or_demand(&self, budgeted: impl std::future::Future<Output = Held>, n: u32) -> Held {
        tokio::select! {
            biased;
            held = budgeted => held,
            () = self.demand.wait() => {
                self.demand
                    .unbudgeted
                    .fetch_add(u64::from(n), Ordering::Relaxed);
                Held::default()
            }
        }
    }
}

/// The storage requests one prefetch made, logged when it ends.
struct Requests {
    name: String,
    from: u64,
    streams: u32,
    ranges: u32,
    retries: u32,
    bytes: u64,
}

impl Drop for Requests {
    fn drop(&mut self) {
        if self.ranges > 0 {
            tracing::info!(
                file = %self.name,
                from = self.from,
                bytes = self.bytes,
                streams = self.streams,
                ranges = self.ranges,
                retries = self.retries,
                "read from storage with ranged GETs"
            );
        } else {
            tracing::debug!(
                file = %self.name,
                from = self.from,
                bytes = self.bytes,
                streams = self.streams,
                "read from storage"
            );
        }
    }
}

/// Reads the file from `offset` into `tx`, each chunk holding its budget.
///
/// It starts with one stream. When that stream has delivered the file's
/// read-ahead and one range more, a read still waited for bytes after the
/// read-ahead's worth had arrived (a client slower than the stream would
/// have found the buffer full: the stream is what this one waits on) and
/// two ranges or more of the file are left, it goes on with up to
/// `range_reads_per_file` concurrent ranged GETs,
/// reassembled in order; when the first `2 × range_reads_per_file` of
/// those turn out no faster than the one stream was (a store that copies
/// the object for each range), it goes back to one stream for the rest.
async fn prefetch(
    file: Arc<OpenFile>,
    offset: u64,
    tx: mpsc::UnboundedSender<Result<Piece, VfsError>>,
    budgets: Budgets,
) {
    let mut log = Requests {
        name: file.entry.name.clone(),
        from: offset,
        streams: 0,
        ranges: 0,
        retries: 0,
        bytes: 0,
    };
    let ranges = budgets.shared.ranges().clone();
    let size = file.entry.size;
    // Long enough for the buffer to fill once if the client is the slower end.
    let probe_end = match ranges.per_file {
        1 => size,
        _ => file.range_boundary(offset.saturating_add(u64::from(budgets.cap) + ranges.bytes)),
    };
    let started = std::time::Instant::now();
    let Some(at) = stream(&file, offset, probe_end, &tx, &budgets, &mut log).await else {
        return;
    };
    let single = (at - offset) as f64 / started.elapsed().as_secs_f64().max(1e-6);
    let Some(at) = ranged(&file, at, single, &tx, &budgets, &ranges, &mut log).await else {
        return;
    };
    stream(&file, at, size, &tx, &budgets, &mut log).await;
}

/// Streams from `offset` with one GET; returns the offset it stopped at
/// when ranged reads should take over at or after `probe_end`, `None` when
/// it is done (the end, an error sent, the reader gone).
async fn stream(
    file: &OpenFile,
    offset: u64,
    probe_end: u64,
    tx: &mpsc::UnboundedSender<Result<Piece, VfsError>>,
    budgets: &Budgets,
    log: &mut Requests,
) -> Option<u64> {
    log.streams += 1;
    let mut stream = match file.stream_from(offset).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(e));
            return None;
        }
    };
    let (size, min_left) = (file.entry.size, 2 * budgets.shared.ranges().bytes);
    // Reads that waited after a slow client would have let the buffer fill.
    let filled = offset.saturating_add(u64::from(budgets.cap));
    let mut waits_then = None;
    let mut at = offset;
    while let Some(chunk) = stream.next().await {
        let data = match chunk {
            Ok(c) if c.is_empty() => continue,
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(e));
                return None;
            }
        };
        at += data.len() as u64;
        log.bytes += data.len() as u64;
        let held = budgets
            .hold(u32::try_from(data.len()).unwrap_or(u32::MAX))
            .await;
        if tx.send(Ok(Piece { data, _held: held })).is_err() {
            return None;
        }
        let waits = budgets.demand.waits.load(Ordering::Relaxed);
        if at >= filled && waits_then.is_none() {
            waits_then = Some(waits);
        }
        if at >= probe_end
            && probe_end < size
            && size - at >= min_left
            && waits_then.is_some_and(|then| waits > then)
        {
            return Some(at);
        }
    }
    None
}

/// Attempts per range before its error reaches the reader.
const RANGE_ATTEMPTS: u32 = 3;

/// Reads from `offset` with concurrent ranged GETs, delivered in order;
/// returns the offset to go on from with one stream (ranges no faster than
/// `single` bytes/s, the server's cap on ranges reached, a derived file
/// that cannot be read in ranges), `None` when done.
async fn ranged(
    file: &Arc<OpenFile>,
    offset: u64,
    single: f64,
    tx: &mpsc::UnboundedSender<Result<Piece, VfsError>>,
    budgets: &Budgets,
    ranges: &super::budget::Ranges,
    log: &mut Requests,
) -> Option<u64> {
    let size = file.entry.size;
    let (mut next, mut done) = (offset, offset);
    let mut inflight = futures::stream::FuturesOrdered::new();
    let started = std::time::Instant::now();
    let mut judged = false;
    loop {
        while inflight.len() < ranges.per_file && next < size {
            // Ranges end on multiples of the range size (then on a unit
            // of storage), so every download asks for the same ranges.
            let end = file
                .range_boundary((next / ranges.bytes + 1).saturating_mul(ranges.bytes))
                .max(next + 1)
                .min(size);
            let len = end - next;
            let Ok(permit) = ranges.total.clone().try_acquire_owned() else {
                break;
            };
            let n = u32::try_from(len).unwrap_or(u32::MAX);
            let held = if inflight.is_empty() {
                budgets.or_demand(budgets.shared.hold(n), n).await
            } else {
                match budgets.shared.try_hold(n) {
                    Some(h) => h,
                    None => break,
                }
            };
            inflight.push_back(fetch_range(file.clone(), next, len, held, permit));
            next = end;
        }
        let Some(got) = inflight.next().await else {
            // Nothing in flight: the end, or no range could start.
            return (done < size).then_some(done);
        };
        let (chunks, held, retries) = match got {
            Ok(Some(r)) => r,
            Ok(None) => return Some(done),
            Err(e) => {
                let _ = tx.send(Err(e));
                return None;
            }
        };
        log.ranges += 1;
        log.retries += retries;
        let last = chunks.len().saturating_sub(1);
        let mut held = Some(held);
        for (i, data) in chunks.into_iter().enumerate() {
            done += data.len() as u64;
            log.bytes += data.len() as u64;
            // The range's budget goes back when its last byte is read.
            let held = if i == last { held.take() } else { None };
            let piece = Piece {
                data,
                _held: held.unwrap_or_default(),
            };
            if tx.send(Ok(piece)).is_err() {
                return None;
            }
        }
        if !judged && log.ranges as usize >= 2 * ranges.per_file && done < size {
            judged = true;
            let rate = (done - offset) as f64 / started.elapsed().as_secs_f64().max(1e-6);
            if rate < 1.2 * single {
                tracing::debug!(
                    file = %file.entry.name,
                    ranged = rate,
                    single,
                    "ranged reads are no faster than one stream here"
                );
                return Some(done);
            }
        }
    }
}

/// One ranged GET of `[at, at + len)`, whole, retried on a transient
/// error or a short body; `None` when the file cannot be read in ranges.
async fn fetch_range(
    file: Arc<OpenFile>,
    at: u64,
    len: u64,
    held: Held,
    _permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<Option<(Vec<Bytes>, Held, u32)>, VfsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let err = match file.range(at, len).await {
            Ok(None) => return Ok(None),
            Ok(Some(mut body)) => {
                let (mut chunks, mut got) = (Vec::new(), 0u64);
                let mut failed = None;
                while let Some(c) = body.next().await {
                    match c {
                        Ok(c) => {
                            got += c.len() as u64;
                            chunks.push(c);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    None if got == len => return Ok(Some((chunks, held, attempt - 1))),
                    None if got > len => {
                        return Err(VfsError::Producer(format!(
                            "storage answered a range of {len} bytes with {got}"
                        )))
                    }
                    None => truncated(),
                    Some(e) => e,
                }
            }
            Err(e) => e,
        };
        if attempt >= RANGE_ATTEMPTS || !retryable(&err) {
            return Err(err);
        }
    }
}

/// A range worth asking for again: storage's transient faults, a short body.
fn retryable(e: &VfsError) -> bool {
    match e {
        VfsError::Storage(f) => f.is_transient(),
        VfsError::Producer(_) => true,
        _ => false,
    }
}
