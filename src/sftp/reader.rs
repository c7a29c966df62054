//! Read-ahead for one open file.
//!
//! SFTP clients read a file as many pipelined `READ(offset, len)` requests.
//! Rather than one storage request per READ, a background task keeps one
//! streaming GET open from the current offset and fills a buffer bounded by
//! `read_ahead_bytes` (a byte semaphore); READs at the expected offset are
//! served from it as zero-copy slices of the chunks storage delivered. A READ
//! elsewhere (a resumed or random read) starts a new stream there, so
//! sequential readers cost one request per file and seekers one per seek.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::vfs::{OpenFile, VfsError};

/// A forward jump up to this many bytes is read through instead of re-requested.
const SKIP_THROUGH: u64 = 1024 * 1024;

/// A chunk in the buffer and the budget it holds until it is consumed.
struct Piece {
    data: Bytes,
    charge: u32,
}

pub struct ReadAhead {
    file: Arc<OpenFile>,
    budget: usize,
    /// File offset of the first byte in `buf`.
    pos: u64,
    buf: VecDeque<Piece>,
    buffered: u64,
    budget_sem: Arc<Semaphore>,
    rx: Option<mpsc::UnboundedReceiver<Result<Piece, VfsError>>>,
    task: Option<JoinHandle<()>>,
}

impl ReadAhead {
    pub fn new(file: Arc<OpenFile>, budget: usize) -> Self {
        Self {
            file,
            budget,
            pos: 0,
            buf: VecDeque::new(),
            buffered: 0,
            budget_sem: Arc::new(Semaphore::new(0)),
            rx: None,
            task: None,
        }
    }

    pub fn file(&self) -> &OpenFile {
        &self.file
    }

    fn restart(&mut self, offset: u64) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.buf.clear();
        self.buffered = 0;
        self.pos = offset;
        let (tx, rx) = mpsc::unbounded_channel();
        self.budget_sem = Arc::new(Semaphore::new(self.budget));
        let cap = u32::try_from(self.budget).unwrap_or(u32::MAX);
        self.task = Some(tokio::spawn(prefetch(
            self.file.clone(),
            offset,
            tx,
            self.budget_sem.clone(),
            cap,
        )));
        self.rx = Some(rx);
    }

    /// Pulls one more chunk into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, VfsError> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(false);
        };
        match rx.recv().await {
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
                let charge = front.charge;
                self.buf.pop_front();
                self.budget_sem.add_permits(charge as usize);
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

/// Streams the file from `offset` into `tx`, holding `budget` bytes at most.
async fn prefetch(
    file: Arc<OpenFile>,
    offset: u64,
    tx: mpsc::UnboundedSender<Result<Piece, VfsError>>,
    budget: Arc<Semaphore>,
    cap: u32,
) {
    let mut stream = match file.stream_from(offset).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    while let Some(chunk) = stream.next().await {
        let data = match chunk {
            Ok(c) if c.is_empty() => continue,
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let charge = u32::try_from(data.len()).unwrap_or(u32::MAX).min(cap);
        match budget.acquire_many(charge).await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        if tx.send(Ok(Piece { data, charge })).is_err() {
            return;
        }
    }
}
