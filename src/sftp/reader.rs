//! Read-ahead for one open file.
//!
//! SFTP clients read a file as many pipelined `READ(offset, len)` requests.
//! Rather than one storage request per READ, a background task keeps one
//! streaming GET open from the current offset and fills a bounded buffer
//! (`read_ahead_bytes`); READs at the expected offset are served from it. A
//! READ elsewhere (a resumed or random read) starts a new stream there, so
//! sequential readers cost one request per file and seekers one per seek.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::vfs::{OpenFile, VfsError};

/// Pieces the prefetcher hands over; the buffer holds `budget / PIECE` of them.
const PIECE: usize = 64 * 1024;
/// A forward jump up to this many bytes is read through instead of re-requested.
const SKIP_THROUGH: u64 = 1024 * 1024;

pub struct ReadAhead {
    file: Arc<OpenFile>,
    budget: usize,
    /// File offset of the first byte in `buf`.
    pos: u64,
    buf: VecDeque<Bytes>,
    rx: Option<mpsc::Receiver<Result<Bytes, VfsError>>>,
    task: Option<JoinHandle<()>>,
}

impl ReadAhead {
    pub fn new(file: Arc<OpenFile>, budget: usize) -> Self {
        Self {
            file,
            budget,
            pos: 0,
            buf: VecDeque::new(),
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
        self.pos = offset;
        let (tx, rx) = mpsc::channel((self.budget / PIECE).max(2));
        let file = self.file.clone();
        self.task = Some(tokio::spawn(prefetch(file, offset, tx)));
        self.rx = Some(rx);
    }

    fn buffered(&self) -> u64 {
        self.buf.iter().map(|b| b.len() as u64).sum()
    }

    /// Pulls one more piece into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, VfsError> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(false);
        };
        match rx.recv().await {
            Some(Ok(b)) => {
                self.buf.push_back(b);
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
        while n > 0 {
            let Some(front) = self.buf.front_mut() else {
                break;
            };
            if (front.len() as u64) <= n {
                n -= front.len() as u64;
                self.buf.pop_front();
            } else {
                let _ = front.split_to(n as usize);
                n = 0;
            }
        }
    }

    /// Reads up to `len` bytes at `offset`: `Ok(None)` at end of file. Fewer
    /// than `len` bytes come back only at the end of the file.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Option<Bytes>, VfsError> {
        let size = self.file.entry.size;
        if offset >= size || len == 0 {
            return Ok(None);
        }
        let want = (len as u64).min(size - offset) as usize;
        let streaming = self.rx.is_some() || !self.buf.is_empty();
        if !streaming || offset < self.pos || offset - self.pos > SKIP_THROUGH + self.buffered() {
            self.restart(offset);
        }
        // Read through a short forward gap.
        while self.pos < offset {
            if self.buf.is_empty() && !self.fill().await? {
                return Err(truncated());
            }
            let skip = (offset - self.pos).min(self.buffered());
            self.consume(skip);
        }
        while self.buffered() < want as u64 {
            if !self.fill().await? {
                break;
            }
        }
        let have = (self.buffered() as usize).min(want);
        if have < want {
            // The object ended before the size the listing promised.
            self.rx = None;
            return Err(truncated());
        }
        let out = if self.buf.front().is_some_and(|b| b.len() >= want) {
            let front = self.buf.front().cloned().unwrap_or_default();
            front.slice(..want)
        } else {
            let mut out = BytesMut::with_capacity(want);
            for b in &self.buf {
                let take = (want - out.len()).min(b.len());
                out.extend_from_slice(&b[..take]);
                if out.len() == want {
                    break;
                }
            }
            out.freeze()
        };
        self.consume(want as u64);
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

async fn prefetch(file: Arc<OpenFile>, offset: u64, tx: mpsc::Sender<Result<Bytes, VfsError>>) {
    let mut stream = match file.stream_from(offset).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    let mut acc = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if acc.is_empty() {
            // Large chunks are split without copying.
            while chunk.len() >= PIECE {
                if tx.send(Ok(chunk.split_to(PIECE))).await.is_err() {
                    return;
                }
            }
        }
        acc.extend_from_slice(&chunk);
        while acc.len() >= PIECE {
            if tx.send(Ok(acc.split_to(PIECE).freeze())).await.is_err() {
                return;
            }
        }
    }
    if !acc.is_empty() {
        let _ = tx.send(Ok(acc.freeze())).await;
    }
}
