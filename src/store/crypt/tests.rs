use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::store::local::LocalStore;

const SEG: u64 = 1 << 20;

fn keys() -> Keyset {
    Keyset::generate().unwrap()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn read(
    store: &dyn ObjectStore,
    key: &str,
    off: u64,
    len: Option<u64>,
) -> Result<Vec<u8>, StoreError> {
    let mut body = store.get(key, off, len).await?;
    let mut out = Vec::new();
    while let Some(c) = body.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

/// What reached the store under the encryption: GETs, and the sizes of
/// the parts uploaded, in order.
#[derive(Default)]
struct Counting {
    gets: AtomicUsize,
    parts: std::sync::Mutex<Vec<usize>>,
}

struct Fixture {
    dir: tempfile::TempDir,
    raw: SharedStore,
    counting: Arc<Counting>,
    sealed: Crypt,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let raw: SharedStore = Arc::new(LocalStore::open(dir.path()).unwrap());
    let counting = Arc::new(Counting::default());
    let seen = counting.clone();
    let tap = crate::store::tap::Tap::new(raw.clone()).before(move |op| {
        match op {
            crate::store::tap::Op::Get { .. } => {
                seen.gets.fetch_add(1, Ordering::SeqCst);
            }
            crate::store::tap::Op::Part { len, .. } => seen.parts.lock().unwrap().push(*len),
            _ => {}
        }
        std::time::Duration::ZERO
    });
    let sealed = Crypt::new(Arc::new(tap), "acme", "t/", keys()).unwrap();
    Fixture {
        dir,
        raw,
        counting,
        sealed,
    }
}

#[tokio::test]
async fn the_decorator_meets_the_storage_contract() {
    let f = fixture();
    crate::store::contract::run(&f.sealed, "t/").await;
}

#[tokio::test]
async fn every_size_round_trips_and_every_range_reads_back() {
    let f = fixture();
    let first = (SEG - 56) as usize;
    for n in [
        0,
        1,
        first - 1,
        first,
        first + 1,
        first + (SEG as usize - 16) * 2 + 5,
    ] {
        let plain = pattern(n);
        let key = format!("t/s/{n}");
        f.sealed
            .put(&key, Bytes::from(plain.clone()), PutOptions::default())
            .await
            .unwrap();
        let stored = f.raw.head(&key).await.unwrap().unwrap();
        assert_eq!(
            stored.size,
            Layout {
                segment: SEG as usize
            }
            .ciphertext_len(n as u64)
        );
        assert_eq!(f.sealed.head(&key).await.unwrap().unwrap().size, n as u64);
        assert_eq!(
            read(&f.sealed, &key, 0, None).await.unwrap(),
            plain,
            "size {n}"
        );
        // Offsets inside, at and across segment boundaries.
        let s1 = first as u64;
        let s2 = s1 + SEG - 16;
        for off in [
            1,
            s1 - 1,
            s1,
            s1 + 1,
            s2 - 1,
            s2,
            s2 + 1,
            n as u64,
            n as u64 + 3,
        ] {
            for len in [None, Some(0), Some(1), Some(2), Some(SEG + 7)] {
                let start = (off as usize).min(n);
                let end = len.map_or(n, |l| (start + l as usize).min(n));
                let got = read(&f.sealed, &key, off, len).await.unwrap();
                assert_eq!(got, plain[start..end], "size {n} offset {off} len {len:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_sequential_read_is_one_request_and_a_seek_two_of_at_most_two_segments() {
    let f = fixture();
    let plain = pattern(5 * SEG as usize);
    f.sealed
        .put("t/big", Bytes::from(plain.clone()), PutOptions::default())
        .await
        .unwrap();
    f.counting.gets.store(0, Ordering::SeqCst);
    assert_eq!(read(&f.sealed, "t/big", 0, None).await.unwrap(), plain);
    assert_eq!(f.counting.gets.load(Ordering::SeqCst), 1);
    f.counting.gets.store(0, Ordering::SeqCst);
    let off = 3 * SEG - 10;
    let got = read(&f.sealed, "t/big", off, Some(20)).await.unwrap();
    assert_eq!(got, plain[off as usize..off as usize + 20]);
    assert_eq!(
        f.counting.gets.load(Ordering::SeqCst),
        2,
        "header, then the range"
    );
}

#[tokio::test]
async fn multipart_uploads_stream_in_parts_s3_accepts() {
    let f = fixture();
    let plain = pattern(19 * SEG as usize + 12345);
    let mut up = crate::store::Multipart::start(&f.sealed, "t/mp")
        .await
        .unwrap();
    // Parts of S3's smallest size: their ciphertext, one segment held back, is smaller.
    for part in plain.chunks(5 * SEG as usize) {
        up.part(Bytes::copy_from_slice(part)).await.unwrap();
    }
    up.complete().await.unwrap();
    let parts = f.counting.parts.lock().unwrap().clone();
    assert!(parts.len() >= 3, "{parts:?}");
    assert!(
        parts[..parts.len() - 1].iter().all(|p| *p >= 5 << 20),
        "every part but the last is at least 5 MiB: {parts:?}"
    );
    assert_eq!(read(&f.sealed, "t/mp", 0, None).await.unwrap(), plain);
    let stored = f.raw.head("t/mp").await.unwrap().unwrap();
    assert_eq!(
        stored.size,
        Layout {
            segment: SEG as usize
        }
        .ciphertext_len(plain.len() as u64)
    );
    // The same bytes as a whole put would give (up to salt and nonce).
    let whole = crate::crypto::streaming::decrypt(
        f.sealed.keyset().primary().unwrap().material(),
        &associated_data("acme", "mp"),
        Layout {
            segment: SEG as usize,
        },
        &read(f.raw.as_ref(), "t/mp", 0, None).await.unwrap(),
    )
    .unwrap();
    assert_eq!(whole, plain);
}

#[tokio::test]
async fn nothing_is_stored_in_clear_and_clear_objects_stay_readable() {
    let f = fixture();
    let marker = b"MARKER-info-json-agent-name".repeat(100);
    f.sealed
        .put(
            "t/i.json",
            Bytes::from(marker.clone()),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let on_disk = std::fs::read(f.dir.path().join("t/i.json")).unwrap();
    assert!(!on_disk.windows(27).any(|w| w == &marker[..27]));
    // A clear object (written before encryption was switched on) reads as it is.
    f.raw
        .put(
            "t/old",
            Bytes::from_static(b"clear bytes"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        read(&f.sealed, "t/old", 0, None).await.unwrap(),
        b"clear bytes"
    );
    assert_eq!(read(&f.sealed, "t/old", 6, Some(3)).await.unwrap(), b"byt");
    assert_eq!(f.sealed.head("t/old").await.unwrap().unwrap().size, 11);
}

#[tokio::test]
async fn tampering_truncation_swaps_and_wrong_keys_give_errors_never_bytes() {
    let f = fixture();
    let plain = pattern(3 * SEG as usize);
    for key in ["t/a/x", "t/b/x"] {
        f.sealed
            .put(key, Bytes::from(plain.clone()), PutOptions::default())
            .await
            .unwrap();
    }
    let path = f.dir.path().join("t/a/x");
    let good = std::fs::read(&path).unwrap();
    let rewrite = |bytes: &[u8]| {
        // Written in place: the inode, and so the mark, stay.
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(bytes).unwrap();
    };
    let fails = |r: Result<Vec<u8>, StoreError>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(
            e.contains("t/a/x") && (e.contains("authentication") || e.contains("truncated")),
            "{what}: {e}"
        );
    };
    // A flipped byte in segment 1.
    let mut flipped = good.clone();
    flipped[SEG as usize + 100] ^= 1;
    rewrite(&flipped);
    let mut body = f.sealed.get("t/a/x", 0, None).await.unwrap();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(first.len(), (SEG - 56) as usize, "segment 0 is intact");
    assert!(
        body.next().await.unwrap().is_err(),
        "segment 1 is not passed on"
    );
    fails(
        read(&f.sealed, "t/a/x", SEG + 5, Some(1)).await,
        "flipped, ranged",
    );
    // Cut at a segment boundary: the new last segment was not sealed as last.
    rewrite(&good[..2 * SEG as usize]);
    fails(read(&f.sealed, "t/a/x", 0, None).await, "cut at a boundary");
    rewrite(&good[..2 * SEG as usize + 5]);
    assert!(f.sealed.head("t/a/x").await.is_err(), "cut inside a tag");
    // Another session's object copied over this one.
    rewrite(&std::fs::read(f.dir.path().join("t/b/x")).unwrap());
    fails(read(&f.sealed, "t/a/x", 0, None).await, "swapped");
    rewrite(&good);
    assert_eq!(read(&f.sealed, "t/a/x", 0, None).await.unwrap(), plain);
    // Another keyset.
    let other = Crypt::new(f.raw.clone(), "acme", "t/", keys()).unwrap();
    let e = read(&other, "t/a/x", 0, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not hold"), "{e}");
    // The same keyset under another tenant's name.
    let renamed = Crypt::new(
        f.raw.clone(),
        "other",
        "t/",
        Keyset::from_json(&f.sealed.keyset().to_json()).unwrap(),
    )
    .unwrap();
    fails(read(&renamed, "t/a/x", 0, None).await, "another tenant");
}

#[tokio::test]
async fn rotation_seals_new_objects_with_the_new_key_and_old_ones_still_read() {
    let f = fixture();
    f.sealed
        .put("t/old", Bytes::from_static(b"old"), PutOptions::default())
        .await
        .unwrap();
    let first = f.sealed.primary_id();
    let mut rotated = Keyset::from_json(&f.sealed.keyset().to_json()).unwrap();
    let second = rotated.add_primary().unwrap();
    f.sealed.replace_keyset(rotated).unwrap();
    f.sealed
        .put("t/new", Bytes::from_static(b"new"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        f.raw.head("t/old").await.unwrap().unwrap().mark,
        Some(mark(first))
    );
    assert_eq!(
        f.raw.head("t/new").await.unwrap().unwrap().mark,
        Some(mark(second))
    );
    assert_eq!(read(&f.sealed, "t/old", 0, None).await.unwrap(), b"old");
    assert_eq!(read(&f.sealed, "t/new", 0, None).await.unwrap(), b"new");
    // A keyset missing a key in use is refused.
    let e = f.sealed.replace_keyset(keys()).unwrap_err();
    assert!(e.contains("lacks key"), "{e}");
}

#[tokio::test]
async fn a_rotation_reaches_every_view_of_the_tenant_over_other_stores() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let other_raw: SharedStore = Arc::new(LocalStore::open(dir.path()).unwrap());
    let other = f.sealed.over(other_raw.clone());
    let first = f.sealed.primary_id();
    let mut rotated = Keyset::from_json(&f.sealed.keyset().to_json()).unwrap();
    let second = rotated.add_primary().unwrap();
    // Rotated through the tree's view; the other view seals with it too.
    f.sealed.replace_keyset(rotated).unwrap();
    assert_eq!(other.primary_id(), second);
    other
        .put("t/x", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        other_raw.head("t/x").await.unwrap().unwrap().mark,
        Some(mark(second))
    );
    // Same tenant and prefix: each view reads what the other sealed.
    let moved = read(other_raw.as_ref(), "t/x", 0, None).await.unwrap();
    f.raw
        .put(
            "t/x",
            Bytes::from(moved),
            PutOptions {
                mark: Some(mark(second)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(read(&f.sealed, "t/x", 0, None).await.unwrap(), b"x");
    assert_ne!(first, second);
}

#[tokio::test]
async fn objects_outside_the_tenant_are_refused_not_written_in_clear() {
    let f = fixture();
    let e = f
        .sealed
        .put(
            "elsewhere/x",
            Bytes::from_static(b"x"),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("refusing"), "{e}");
    assert!(f.raw.head("elsewhere/x").await.unwrap().is_none());
}
