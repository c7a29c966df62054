//! The tree over the local backend: names, sizes, times, scope, isolation.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;

use super::*;
use crate::limits::Limits;
use crate::store::local::LocalStore;
use crate::store::PutOptions;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: SharedStore,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(LocalStore::open(dir.path()).unwrap());
    let s = store.as_ref();
    crate::sample::put_session(
        s,
        "tenants/acme/",
        "call-1",
        t("2026-11-23T09:00:00Z"),
        t("2026-11-23T09:05:00Z"),
        Bytes::from_static(b"raw-1"),
    )
    .await
    .unwrap();
    crate::sample::put_session(
        s,
        "tenants/acme/",
        "call-2",
        t("2026-11-23T10:00:00Z"),
        t("2026-11-23T10:30:00Z"),
        Bytes::from(vec![7u8; 1000]),
    )
    .await
    .unwrap();
    crate::sample::put_session(
        s,
        "tenants/acme/",
        "call-3",
        t("2026-10-01T08:00:00Z"),
        t("2026-10-01T08:01:00Z"),
        Bytes::new(),
    )
    .await
    .unwrap();
    crate::sample::put_session(
        s,
        "tenants/acme2/",
        "secret",
        t("2026-11-23T09:00:00Z"),
        t("2026-11-23T09:05:00Z"),
        Bytes::from_static(b"other tenant"),
    )
    .await
    .unwrap();
    // An unfinished session (no info.json yet) and a hidden derived object.
    s.put(
        "tenants/acme/sessions/2026/11/23/partial/partial.tar.gz",
        Bytes::from_static(b"x"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    s.put(
        "tenants/acme/sessions/2026/11/23/call-1/derived/call-1.mp4",
        Bytes::from_static(b"mp4"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    Fixture { _dir: dir, store }
}

fn vfs(f: &Fixture, prefix: &str, scope: &str, perms: Perms) -> Vfs {
    let tenant = Arc::new(Tenant::new(
        "acme".into(),
        prefix.into(),
        f.store.clone(),
        &Limits::default(),
    ));
    Vfs::new(
        tenant,
        VPath::parse_absolute(scope).unwrap(),
        perms,
        Arc::from(Vec::<Arc<dyn Producer>>::new()),
    )
}

const ALL: Perms = Perms {
    list: true,
    download: true,
    delete: false,
};

fn p(s: &str) -> VPath {
    VPath::parse_absolute(s).unwrap()
}

async fn names(v: &Vfs, path: &str) -> Vec<String> {
    v.list(&p(path))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

async fn read(v: &Vfs, path: &str, offset: u64) -> Vec<u8> {
    let f = v.open(&p(path)).await.unwrap();
    let mut s = f.stream_from(offset).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

#[tokio::test]
async fn tree_shows_dates_sessions_and_files() {
    let f = fixture().await;
    let v = vfs(&f, "tenants/acme/", "/", ALL);
    assert_eq!(names(&v, "/").await, ["2026"]);
    assert_eq!(names(&v, "/2026").await, ["10", "11"]);
    assert_eq!(
        names(&v, "/2026/11/23").await,
        ["call-1", "call-2"],
        "partial sessions stay hidden"
    );
    assert_eq!(
        names(&v, "/2026/11/23/call-1").await,
        ["call-1.tar.gz", "info.json"],
        "derived/ stays hidden"
    );
    assert_eq!(
        read(&v, "/2026/11/23/call-1/call-1.tar.gz", 0).await,
        b"raw-1"
    );
    assert_eq!(read(&v, "/2026/11/23/call-1/call-1.tar.gz", 4).await, b"1");
    assert_eq!(read(&v, "/2026/10/01/call-3/call-3.tar.gz", 0).await, b"");
}

#[tokio::test]
async fn sizes_are_true_and_times_are_the_call_end() {
    let f = fixture().await;
    let v = vfs(&f, "tenants/acme/", "/", ALL);
    let e = v
        .stat(&p("/2026/11/23/call-2/call-2.tar.gz"))
        .await
        .unwrap();
    assert_eq!((e.kind, e.size), (Kind::File, 1000));
    assert_eq!(e.mtime, t("2026-11-23T10:30:00Z"));
    let listed = v
        .list(&p("/2026/11/23/call-2"))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        listed.iter().find(|e| e.name == "call-2.tar.gz"),
        Some(&e),
        "listing and stat agree"
    );
    let info = v.stat(&p("/2026/11/23/call-2/info.json")).await.unwrap();
    assert_eq!(
        read(&v, "/2026/11/23/call-2/info.json", 0).await.len() as u64,
        info.size
    );
}

#[tokio::test]
async fn folder_times_are_the_newest_session_never_the_epoch() {
    let f = fixture().await;
    let v = vfs(&f, "tenants/acme/", "/", ALL);
    let day = v.stat(&p("/2026/11/23")).await.unwrap();
    let sessions = v
        .list(&p("/2026/11/23"))
        .await
        .unwrap()
        .collect_all()
        .await
        .unwrap();
    let newest = sessions.iter().map(|e| e.mtime).max().unwrap();
    assert_eq!(day.mtime, newest);
    // Each session folder shows its call's end, in the listing and in its
    // stat (not when it was archived), as every entry inside it does.
    let ends = [
        ("call-1", "2026-11-23T09:05:00Z"),
        ("call-2", "2026-11-23T10:30:00Z"),
    ];
    for (id, end) in ends {
        let listed = sessions.iter().find(|e| e.name == id).unwrap();
        assert_eq!(listed.mtime, t(end), "{id} listed");
        let folder = format!("/2026/11/23/{id}");
        assert_eq!(
            v.stat(&p(&folder)).await.unwrap().mtime,
            t(end),
            "{id} stat"
        );
        let inside = v
            .list(&p(&folder))
            .await
            .unwrap()
            .collect_all()
            .await
            .unwrap();
        assert!(inside.iter().all(|e| e.mtime == t(end)), "{id}: {inside:?}");
    }
    assert_eq!(day.mtime, t("2026-11-23T10:30:00Z"));
    // A month and a year show the newest call end below them.
    assert_eq!(
        v.stat(&p("/2026/11")).await.unwrap().mtime,
        t("2026-11-23T10:30:00Z")
    );
    assert_eq!(
        v.stat(&p("/2026")).await.unwrap().mtime,
        t("2026-11-23T10:30:00Z")
    );
    assert_eq!(
        v.stat(&p("/2026/10")).await.unwrap().mtime,
        t("2026-10-01T08:01:00Z")
    );
    for path in ["/", "/2026", "/2026/11", "/2026/10/01"] {
        let e = v.stat(&p(path)).await.unwrap();
        assert_eq!(e.kind, Kind::Dir);
        assert!(
            e.mtime > Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap(),
            "{path}: {}",
            e.mtime
        );
    }
}

#[tokio::test]
async fn missing_and_impossible_paths_are_not_found() {
    let f = fixture().await;
    let v = vfs(&f, "tenants/acme/", "/", ALL);
    for path in [
        "/2025",
        "/2026/12",
        "/2026/11/24",
        "/2026/11/23/nope",
        "/2026/11/23/partial",
        "/2026/11/23/call-1/derived",
        "/2026/11/23/call-1/x.mp4",
        "/notadate",
        "/2026/11/23/call-1/info.json/x",
    ] {
        assert!(
            matches!(v.stat(&p(path)).await, Err(VfsError::NotFound(_))),
            "{path}"
        );
    }
    assert!(matches!(
        v.list(&p("/2026/11/23/call-1/info.json")).await,
        Err(VfsError::NotADirectory(_))
    ));
    assert!(matches!(
        v.open(&p("/2026/11/23")).await,
        Err(VfsError::IsADirectory(_))
    ));
}

#[tokio::test]
async fn tenant_with_a_prefix_sharing_a_stem_sees_only_its_own() {
    let f = fixture().await;
    let acme2 = vfs(&f, "tenants/acme2/", "/", ALL);
    assert_eq!(names(&acme2, "/2026/11/23").await, ["secret"]);
    assert!(acme2.stat(&p("/2026/11/23/call-1")).await.is_err());
    let acme = vfs(&f, "tenants/acme/", "/", ALL);
    assert!(acme.stat(&p("/2026/11/23/secret")).await.is_err());
    assert!(acme
        .stat(&p("/../acme2/sessions/2026/11/23/secret"))
        .await
        .is_err());
}

#[tokio::test]
async fn scope_is_the_users_root() {
    let f = fixture().await;
    let v = vfs(&f, "tenants/acme/", "/2026/11", ALL);
    assert_eq!(names(&v, "/").await, ["23"]);
    assert_eq!(
        names(&v, "/../../..").await,
        ["23"],
        "`..` cannot leave the scope"
    );
    assert!(v.stat(&p("/2026")).await.is_err());
    assert!(
        v.stat(&p("/10/01/call-3")).await.is_err(),
        "October is outside the scope"
    );
    assert_eq!(read(&v, "/23/call-1/call-1.tar.gz", 0).await, b"raw-1");
}

#[tokio::test]
async fn permissions_are_enforced() {
    let f = fixture().await;
    let list_only = vfs(
        &f,
        "tenants/acme/",
        "/",
        Perms {
            list: true,
            ..Perms::default()
        },
    );
    assert!(list_only.stat(&p("/2026")).await.is_ok());
    assert!(matches!(
        list_only.open(&p("/2026/11/23/call-1/info.json")).await,
        Err(VfsError::PermissionDenied(_))
    ));
    let download_only = vfs(
        &f,
        "tenants/acme/",
        "/",
        Perms {
            download: true,
            ..Perms::default()
        },
    );
    assert!(matches!(
        download_only.list(&p("/")).await,
        Err(VfsError::PermissionDenied(_))
    ));
}

#[tokio::test]
async fn empty_tenant_root_lists_empty_with_a_real_time() {
    let f = fixture().await;
    let v = vfs(&f, "tenants/nobody/", "/", ALL);
    assert!(names(&v, "/").await.is_empty());
    let root = v.stat(&VPath::root()).await.unwrap();
    assert!(root.mtime.timestamp() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stats_of_one_session_share_one_index_read() {
    let f = fixture().await;
    // Counts the GETs of each key, each slow enough that concurrent
    // callers overlap.
    let counts = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        usize,
    >::new()));
    let seen = counts.clone();
    let counting = crate::store::tap::Tap::new(f.store.clone()).before(move |op| match op {
        crate::store::tap::Op::Get { key, .. } => {
            *seen.lock().unwrap().entry(key.to_string()).or_default() += 1;
            std::time::Duration::from_millis(50)
        }
        _ => std::time::Duration::ZERO,
    });
    let tenant = Arc::new(Tenant::new(
        "acme".into(),
        "tenants/acme/".into(),
        Arc::new(counting),
        &Limits::default(),
    ));
    let v = Vfs::new(
        tenant,
        VPath::root(),
        ALL,
        Arc::from(Vec::<Arc<dyn Producer>>::new()),
    );
    let stats = (0..8).map(|_| {
        let v = v.clone();
        async move { v.stat(&p("/2026/11/23/call-2/call-2.tar.gz")).await }
    });
    for e in futures::future::join_all(stats).await {
        assert_eq!(e.unwrap().size, 1000);
    }
    let gets = counts.lock().unwrap().clone();
    assert_eq!(
        gets.get("tenants/acme/sessions/2026/11/23/call-2/info.json"),
        Some(&1),
        "{gets:?}"
    );
}

#[tokio::test]
async fn a_cache_time_of_forever_is_taken_and_caches() {
    let f = fixture().await;
    let limits = Limits {
        metadata_cache_secs: u64::MAX,
        ..Limits::default()
    };
    let tenant = Arc::new(Tenant::new(
        "acme".into(),
        "tenants/acme/".into(),
        f.store.clone(),
        &limits,
    ));
    let v = Vfs::new(
        tenant,
        VPath::root(),
        ALL,
        Arc::from(Vec::<Arc<dyn Producer>>::new()),
    );
    assert_eq!(
        v.stat(&p("/2026/11/23/call-2/call-2.tar.gz"))
            .await
            .unwrap()
            .size,
        1000
    );
}

#[tokio::test]
async fn read_ahead_stays_within_the_shared_budget_and_idle_readers_never_starve_a_reading_one() {
    use super::budget::ServerBudget;
    use super::reader::ReadAhead;
    let f = fixture().await;
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    crate::sample::put_session(
        f.store.as_ref(),
        "tenants/acme/",
        "call-big",
        t("2026-11-23T11:00:00Z"),
        t("2026-11-23T11:05:00Z"),
        Bytes::from(data.clone()),
    )
    .await
    .unwrap();
    let v = vfs(&f, "tenants/acme/", "/", ALL);
    let path = p("/2026/11/23/call-big/call-big.tar.gz");
    let open = || async { Arc::new(v.open(&path).await.unwrap()) };
    // One MiB for the whole server; each file may read 4 MiB ahead.
    let server = ServerBudget::new(1 << 20);
    let mut idle = ReadAhead::new(open().await, 4 << 20, server.connection(1 << 20));
    assert_eq!(
        idle.read(0, 1000).await.unwrap().unwrap().concat(),
        &data[..1000]
    );
    // Its read-ahead takes the whole server budget, and no more.
    let mut waited = 0;
    while server.available() > 0 && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(server.available(), 0, "the idle reader filled the budget");
    // Beyond the budget it took only what its one read waited for.
    assert!(
        idle.unbudgeted_bytes() <= 1000 + 1024 * 1024,
        "{} bytes unbudgeted",
        idle.unbudgeted_bytes()
    );
    let held_by_idle = idle.unbudgeted_bytes();

    // Another connection still reads the whole file, byte for byte.
    let mut busy = ReadAhead::new(open().await, 4 << 20, server.connection(1 << 20));
    let mut got = Vec::new();
    let whole = async {
        while let Some(chunks) = busy.read(got.len() as u64, 32 * 1024).await.unwrap() {
            for c in chunks {
                got.extend_from_slice(&c);
            }
        }
    };
    // A deadlock bound, not a speed check: the read needs milliseconds.
    tokio::time::timeout(std::time::Duration::from_secs(60), whole)
        .await
        .expect("the reading client is starved by the idle one");
    assert!(got == data, "{} of {} bytes", got.len(), data.len());
    assert_eq!(server.available(), 0, "still nothing beyond the budget");
    assert_eq!(
        idle.unbudgeted_bytes(),
        held_by_idle,
        "the idle one took nothing more"
    );

    // Closing them gives every byte back.
    drop((idle, busy));
    let mut waited = 0;
    while server.available() < 1 << 20 && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(server.available(), 1 << 20);
}

#[tokio::test]
async fn an_erase_removes_the_day_entry_and_a_repeated_erase_removes_a_leftover_one() {
    let f = fixture().await;
    let v = vfs(
        &f,
        "tenants/acme/",
        "/",
        Perms {
            delete: true,
            ..ALL
        },
    );
    let day = p("/2026/11/23");
    assert_eq!(names(&v, "/2026/11/23").await, ["call-1", "call-2"]);
    assert!(v.erase(&p("/2026/11/23/call-1")).await.unwrap() > 0);
    assert_eq!(names(&v, "/2026/11/23").await, ["call-2"]);
    // An erase cut off after the objects went (the index still lists the
    // session): the folder is gone, but still listed; erasing it again
    // removes the entry.
    let keys = crate::layout::SessionKeys::new("tenants/acme/", "2026", "11", "23", "call-2");
    for k in [keys.archive(), keys.index()] {
        f.store.delete(&k).await.unwrap();
    }
    assert_eq!(
        names(&v, "/2026/11/23").await,
        ["call-2"],
        "the leftover entry"
    );
    assert_eq!(v.erase(&p("/2026/11/23/call-2")).await.unwrap(), 0);
    // The day is empty now: it is no longer shown.
    assert!(matches!(v.list(&day).await, Err(VfsError::NotFound(_))));
    assert!(matches!(v.stat(&day).await, Err(VfsError::NotFound(_))));
}
