//! Ranged reads of [`super::reader`] through a store that serves each
//! request at a capped rate, as one S3 connection does: byte-exact data at
//! any offset, a slow range and a failing one, and one stream where ranges
//! would not help.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::budget::{Ranges, ServerBudget};
use super::reader::ReadAhead;
use super::*;
use crate::limits::Limits;
use crate::store::local::LocalStore;
use crate::store::{Got, SharedStore, StoreError};

const RANGE: u64 = 256 * 1024;
const SIZE: usize = 6 << 20;
const KEY_PART: &str = "call-big.tar.gz";

/// What the link did: every GET of the archive, and the ranges a test
/// makes slow or failing.
#[derive(Default)]
struct Link {
    /// (offset, len) of every GET of the archive.
    gets: Mutex<Vec<(u64, Option<u64>)>>,
    /// A range starting here fails mid-body this many times.
    fail: Mutex<Option<(u64, u32)>>,
}

impl Link {
    fn ranged(&self) -> Vec<(u64, u64)> {
        let gets = self.gets.lock().unwrap();
        gets.iter().filter_map(|(o, l)| Some((*o, (*l)?))).collect()
    }

    /// A GET of the archive as it crosses the link: at `rate` bytes/s,
    /// waiting `slow` first when its range is the slow one, cut when it is
    /// the failing one.
    fn cross(
        &self,
        offset: u64,
        len: Option<u64>,
        mut got: Got,
        rate: f64,
        slow: Option<(Option<u64>, Duration)>,
    ) -> Got {
        self.gets.lock().unwrap().push((offset, len));
        let fail = {
            let mut f = self.fail.lock().unwrap();
            match f.as_mut() {
                Some((at, n)) if *at == offset && *n > 0 && len.is_some() => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        let delay = match slow {
            Some((at, d)) if at.is_none_or(|a| a == offset) && len.is_some() => d,
            _ => Duration::ZERO,
        };
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let body = got.body.then(move |c| {
            let sent = sent.clone();
            async move {
                let c = c?;
                use std::sync::atomic::Ordering::Relaxed;
                if sent.load(Relaxed) == 0 {
                    tokio::time::sleep(delay).await;
                }
                let sent = sent.fetch_add(c.len() as u64, Relaxed) + c.len() as u64;
                if fail && sent > RANGE / 2 {
                    return Err(StoreError::Transient("link cut mid-range".into()));
                }
                tokio::time::sleep(Duration::from_secs_f64(c.len() as f64 / rate)).await;
                Ok(c)
            }
        });
        got.body = Box::pin(body);
        got
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    link: Arc<Link>,
    vfs: Vfs,
    data: Vec<u8>,
}

/// A 6 MiB archive behind a link of `rate` bytes/s per request.
async fn setup(rate: f64, slow: Option<(Option<u64>, Duration)>) -> Setup {
    setup_with(rate, slow, false).await
}

/// [`setup`], encrypted at rest when `sealed` (the link then sees
/// ciphertext offsets).
async fn setup_with(rate: f64, slow: Option<(Option<u64>, Duration)>, sealed: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let inner = LocalStore::open(dir.path()).unwrap();
    let link = Arc::new(Link::default());
    let seen = link.clone();
    let tap: SharedStore = Arc::new(crate::store::tap::Tap::new(Arc::new(inner)).on_get(
        move |key, offset, len, got| {
            if key.ends_with(KEY_PART) {
                seen.cross(offset, len, got, rate, slow)
            } else {
                got
            }
        },
    ));
    let store: SharedStore = if sealed {
        let keys = crate::crypto::keyset::Keyset::generate().unwrap();
        Arc::new(crate::store::crypt::Crypt::new(tap, "acme", "tenants/acme/", keys).unwrap())
    } else {
        tap
    };
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    crate::sample::put_session(
        store.as_ref(),
        "tenants/acme/",
        "call-big",
        at("2026-11-23T11:00:00Z"),
        at("2026-11-23T11:05:00Z"),
        Bytes::from(data.clone()),
    )
    .await
    .unwrap();
    link.gets.lock().unwrap().clear();
    let tenant = Arc::new(Tenant::new(
        "acme".into(),
        "tenants/acme/".into(),
        store,
        &Limits::default(),
    ));
    let vfs = Vfs::new(
        tenant,
        VPath::parse_absolute("/").unwrap(),
        Perms {
            list: true,
            download: true,
            delete: false,
        },
        Arc::from(Vec::<Arc<dyn Producer>>::new()),
    );
    Setup {
        _dir: dir,
        link,
        vfs,
        data,
    }
}

fn budget(per_file: usize) -> super::budget::ReadBudget {
    ServerBudget::new(64 << 20)
        .with_ranges(Ranges {
            bytes: RANGE,
            per_file,
            total: Arc::new(tokio::sync::Semaphore::new(16)),
        })
        .connection(64 << 20)
}

/// Reads `[from, end)` in 32 KiB reads, sleeping `pause` after each.
async fn read_from(
    s: &Setup,
    per_file: usize,
    from: u64,
    pause: Duration,
) -> Result<Vec<u8>, VfsError> {
    let file = s
        .vfs
        .open(&VPath::parse_absolute("/2026/11/23/call-big/call-big.tar.gz").unwrap())
        .await?;
    let mut r = ReadAhead::new(Arc::new(file), 1 << 20, budget(per_file));
    let mut got = Vec::new();
    let whole = async {
        while let Some(chunks) = r.read(from + got.len() as u64, 32 * 1024).await? {
            for c in chunks {
                got.extend_from_slice(&c);
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Ok::<_, VfsError>(())
    };
    // A deadlock bound, not a speed check.
    tokio::time::timeout(Duration::from_secs(60), whole)
        .await
        .expect("the read finished")?;
    Ok(got)
}

#[tokio::test]
async fn a_starved_reader_fetches_ahead_with_ranges_and_gets_every_byte_at_any_offset() {
    // 32 MB/s per request: the in-memory client reads far faster.
    let s = setup(32e6, None).await;
    // From the start, from inside a range, from just before a boundary.
    for from in [0, RANGE / 3, 5 * RANGE - 7, (SIZE as u64) - 10 * RANGE + 1] {
        s.link.gets.lock().unwrap().clear();
        let got = read_from(&s, 4, from, Duration::ZERO).await.unwrap();
        assert!(
            got == s.data[from as usize..],
            "bytes from {from} differ ({} of {})",
            got.len(),
            s.data.len() - from as usize
        );
        let ranged = s.link.ranged();
        assert!(
            !ranged.is_empty(),
            "from {from}: no ranged GETs in {:?}",
            s.link.gets.lock().unwrap()
        );
        // The ranges cover what the stream left, each at most one range long.
        assert!(ranged.iter().all(|(_, l)| *l <= RANGE), "{ranged:?}");
        let mut sorted = ranged.clone();
        sorted.sort();
        for w in sorted.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0, "contiguous ranges: {sorted:?}");
        }
        assert_eq!(
            sorted.last().map(|(o, l)| o + l),
            Some(SIZE as u64),
            "the ranges reach the end"
        );
    }
}

#[tokio::test]
async fn a_slow_range_and_a_range_cut_mid_body_still_give_every_byte_in_order() {
    let slow_at = 16 * RANGE;
    let s = setup(32e6, Some((Some(slow_at), Duration::from_millis(400)))).await;
    let cut_at = 20 * RANGE;
    *s.link.fail.lock().unwrap() = Some((cut_at, 1));
    let got = read_from(&s, 4, 0, Duration::ZERO).await.unwrap();
    assert!(got == s.data, "{} of {} bytes", got.len(), s.data.len());
    let ranged = s.link.ranged();
    assert!(ranged.contains(&(slow_at, RANGE)), "{ranged:?}");
    assert_eq!(
        ranged.iter().filter(|(o, _)| *o == cut_at).count(),
        2,
        "the cut range was asked for again: {ranged:?}"
    );
}

#[tokio::test]
async fn a_range_that_keeps_failing_is_an_error_not_wrong_bytes() {
    let s = setup(32e6, None).await;
    *s.link.fail.lock().unwrap() = Some((12 * RANGE, 99));
    let err = read_from(&s, 4, 0, Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(&err, VfsError::Storage(f) if f.is_transient()),
        "{err}"
    );
}

#[tokio::test]
async fn one_stream_when_the_client_is_the_slower_end_or_ranges_are_off() {
    // The client reads ~16 MB/s, slower than the link's 64 MB/s.
    let s = setup(64e6, None).await;
    let got = read_from(&s, 4, 0, Duration::from_millis(2)).await.unwrap();
    assert!(got == s.data);
    assert_eq!(*s.link.gets.lock().unwrap(), [(0, None)]);
    // A starved client with ranges off (range_reads_per_file = 1).
    let s = setup(32e6, None).await;
    let got = read_from(&s, 1, RANGE, Duration::ZERO).await.unwrap();
    assert!(got == s.data[RANGE as usize..]);
    assert_eq!(*s.link.gets.lock().unwrap(), [(RANGE, None)]);
}

#[tokio::test]
async fn ranges_no_faster_than_one_stream_give_way_to_one_stream() {
    // Every range waits 300 ms for its first byte: four of them in flight
    // move less than one stream does.
    let s = setup(32e6, Some((None, Duration::from_millis(300)))).await;
    let got = read_from(&s, 4, 0, Duration::ZERO).await.unwrap();
    assert!(got == s.data);
    let gets = s.link.gets.lock().unwrap().clone();
    let ranged = gets.iter().filter(|(_, l)| l.is_some()).count();
    // The judgement comes after 2 × 4 ranges (in flight: at most 4 more).
    assert!((8..=12).contains(&ranged), "{gets:?}");
    let streams: Vec<_> = gets.iter().filter(|(_, l)| l.is_none()).collect();
    assert_eq!(streams.len(), 2, "one stream, then one again: {gets:?}");
    assert!(streams[1].0 > 0 && streams[1].0 < SIZE as u64);
}

#[tokio::test]
async fn ranges_of_an_encrypted_file_end_on_its_segments_and_fetch_each_segment_once() {
    let s = setup_with(32e6, None, true).await;
    for from in [0, 3 * RANGE + 11] {
        s.link.gets.lock().unwrap().clear();
        let got = read_from(&s, 4, from, Duration::ZERO).await.unwrap();
        assert!(got == s.data[from as usize..], "bytes from {from} differ");
        // Ranged GETs of segments: not the 40-byte headers before them,
        // nor the stream's GET to the end of the object (cut short when
        // the ranges took over).
        let layout = crate::crypto::streaming::Layout { segment: 1 << 20 };
        let whole = layout.ciphertext_len(SIZE as u64);
        let header = crate::crypto::streaming::HEADER as u64;
        let segments: Vec<(u64, u64)> = s
            .link
            .ranged()
            .into_iter()
            .filter(|(o, l)| {
                let is_header = *o == 0 && *l == header;
                let is_stream = o + l == whole && *l > 2 << 20;
                !(is_header || is_stream)
            })
            .collect();
        assert!(segments.len() >= 2, "from {from}: {segments:?}");
        let seg = 1u64 << 20;
        assert!(
            segments.iter().all(|(o, _)| o % seg == 0),
            "each range starts on a segment: {segments:?}"
        );
        // Each range is whole segments, so no segment is fetched twice by
        // ranges: together at most the ciphertext, and none overlaps another.
        let mut sorted = segments.clone();
        sorted.sort();
        assert!(
            sorted.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0),
            "overlapping ranges: {sorted:?}"
        );
        let fetched: u64 = segments.iter().map(|(_, l)| l).sum();
        assert!(
            fetched <= whole,
            "{fetched} bytes fetched in ranges, {whole} stored: {segments:?}"
        );
    }
}
