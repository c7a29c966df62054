//! The memory readers may hold ahead of their clients: bytes fetched from
//! storage before a client asked for them.
//!
//! One [`ServerBudget`] (`[limits] read_ahead_total_bytes`) for the whole
//! process, and from it one [`ReadBudget`] per logged-in connection
//! (`read_ahead_connection_bytes`, shared by all its channels and handles);
//! each open file adds its own cap (`read_ahead_bytes`, in
//! [`super::reader::ReadAhead`]). Every reader (SFTP handles, FTPS
//! transfers, and later the API and parallel ranged reads) holds a chunk
//! only with bytes of all three, so 1,024 connections × 8 channels × 64
//! handles cannot hold more than the server's budget.
//!
//! Read-ahead is a speed-up, never a condition: a client waiting for bytes
//! is served even when every budget is held by others (see
//! [`super::reader`]), so idle readers cannot starve active ones.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The process-wide read-ahead budget.
pub struct ServerBudget {
    sem: Arc<Semaphore>,
    bytes: usize,
    ranges: Ranges,
}

/// How far a sequential reader may fetch ahead with ranged GETs when one
/// stream from storage is slower than its client (see [`super::reader`]):
/// the size of one range, how many one file keeps in flight, and the
/// server's cap on all of them together.
#[derive(Clone)]
pub struct Ranges {
    pub bytes: u64,
    pub per_file: usize,
    pub total: Arc<Semaphore>,
}

impl Ranges {
    /// One stream per file, never ranged reads.
    pub fn off() -> Self {
        Self {
            bytes: 4 * 1024 * 1024,
            per_file: 1,
            total: Arc::new(Semaphore::new(1)),
        }
    }

    /// From `[limits]`.
    pub fn of(limits: &crate::limits::Limits) -> Self {
        Self {
            bytes: limits.range_read_bytes as u64,
            per_file: limits.range_reads_per_file,
            total: Arc::new(Semaphore::new(limits.range_reads_total)),
        }
    }
}

impl ServerBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(bytes)),
            bytes,
            ranges: Ranges::off(),
        }
    }

    /// Lets its readers fetch ahead with ranged GETs.
    pub fn with_ranges(mut self, ranges: Ranges) -> Self {
        self.ranges = ranges;
        self
    }

    /// A connection's budget of `bytes`, drawing on this one as well.
    pub fn connection(&self, bytes: usize) -> ReadBudget {
        ReadBudget {
            levels: Arc::new([
                Level::new(Arc::new(Semaphore::new(bytes)), bytes),
                Level::new(self.sem.clone(), self.bytes),
            ]),
            ranges: self.ranges.clone(),
        }
    }

    /// Bytes currently free (for tests and metrics).
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }
}

struct Level {
    sem: Arc<Semaphore>,
    cap: u32,
}

impl Level {
    fn new(sem: Arc<Semaphore>, bytes: usize) -> Self {
        Self {
            sem,
            cap: u32::try_from(bytes).unwrap_or(u32::MAX),
        }
    }
}

/// A connection's read-ahead budget (cheap to clone; clones share it).
#[derive(Clone)]
pub struct ReadBudget {
    /// The connection's, then the server's.
    levels: Arc<[Level; 2]>,
    ranges: Ranges,
}

/// Bytes held from budgets; dropping it gives them back.
#[derive(Default)]
pub struct Held(Vec<OwnedSemaphorePermit>);

impl ReadBudget {
    /// A budget of its own (a job, a test): `bytes` for this reader alone.
    pub fn standalone(bytes: usize) -> Self {
        ServerBudget::new(bytes).connection(bytes)
    }

    /// Waits until `n` bytes (at most each budget's size) are free in the
    /// connection's budget and the server's, in that order, and holds them.
    /// Cancel-safe: dropped half-way, it holds nothing.
    pub async fn hold(&self, n: u32) -> Held {
        let n = self.levels.iter().fold(n, |n, l| n.min(l.cap));
        let mut held = Held::default();
        for level in self.levels.iter() {
            // Never closed; if it were, reading on unbudgeted would be safe.
            if let Ok(p) = level.sem.clone().acquire_many_owned(n).await {
                held.0.push(p);
            }
        }
        held
    }
}

impl ReadBudget {
    /// How this connection's readers may use ranged GETs.
    pub fn ranges(&self) -> &Ranges {
        &self.ranges
    }

    /// Holds `n` bytes (at most each budget's size) if both budgets have
    /// them free now; never waits.
    pub fn try_hold(&self, n: u32) -> Option<Held> {
        let n = self.levels.iter().fold(n, |n, l| n.min(l.cap));
        let mut held = Held::default();
        for level in self.levels.iter() {
            held.0
                .push(level.sem.clone().try_acquire_many_owned(n).ok()?);
        }
        Some(held)
    }
}

impl Held {
    /// Adds bytes held from another budget (a file's own cap).
    pub fn with(mut self, permit: OwnedSemaphorePermit) -> Self {
        self.0.push(permit);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_draw_on_the_server_budget_and_give_it_back() {
        let server = ServerBudget::new(1000);
        let (a, b) = (server.connection(600), server.connection(600));
        let ha = a.hold(600).await;
        assert_eq!(server.available(), 400);
        // b fits only what the server has left.
        let hb = tokio::time::timeout(std::time::Duration::from_millis(50), b.hold(500)).await;
        assert!(hb.is_err(), "the server budget is the limit");
        let hb = b.hold(400).await;
        assert_eq!(server.available(), 0);
        drop(ha);
        assert_eq!(server.available(), 600);
        drop(hb);
        assert_eq!(server.available(), 1000);
        // More than a budget's size holds the whole budget, not forever.
        let all = a.hold(5000).await;
        assert_eq!(server.available(), 400);
        drop(all);
    }
}
