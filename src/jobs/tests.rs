use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{TimeZone, Utc};

use super::*;
use crate::store::local::LocalStore;
use sha2::Sha256;

/// Records the sessions it is given; fails at `fail_at` (once).
struct Recorder {
    seen: Mutex<Vec<String>>,
    fail_at: Mutex<Option<String>>,
}

#[async_trait]
impl Job for Recorder {
    fn kind(&self) -> &'static str {
        "record"
    }

    async fn session(&self, s: &Session) -> Result<Vec<String>, String> {
        let mut fail = self.fail_at.lock().unwrap();
        if fail.as_deref() == Some(s.path.as_str()) {
            *fail = None;
            return Err("storage went away".into());
        }
        self.seen.lock().unwrap().push(s.path.clone());
        Ok(if s.keys.id().ends_with('3') {
            vec!["odd one".into()]
        } else {
            Vec::new()
        })
    }
}

async fn seeded() -> (tempfile::TempDir, Target) {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(LocalStore::open(&dir.path().join("objects")).unwrap());
    // Ids chosen so that id order and key order differ ("a" < "a-1", but
    // "a-1/info.json" < "a/info.json").
    let calls = [
        ((2025, 12, 31), "z"),
        ((2026, 1, 2), "a"),
        ((2026, 1, 2), "a-1"),
        ((2026, 1, 2), "c3"),
        ((2026, 2, 1), "b"),
    ];
    for ((y, m, d), id) in calls {
        let started = Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap();
        crate::sample::put_session(
            store.as_ref(),
            "t/",
            id,
            started,
            started + chrono::Duration::minutes(1),
            Bytes::from_static(b"raw"),
        )
        .await
        .unwrap();
    }
    // Not a session: no index.
    store
        .put(
            &SessionKeys::new("t/", "2026", "01", "02", "partial").archive(),
            Bytes::from_static(b"x"),
            Default::default(),
        )
        .await
        .unwrap();
    let target = Target {
        tenant: "t".into(),
        prefix: "t/".into(),
        days: Arc::new(crate::days::Days::new(store.clone(), "t/", "test")),
        raw: store,
        sealed: None,
    };
    (dir, target)
}

fn options(dir: &tempfile::TempDir, since: Option<chrono::NaiveDate>) -> Options {
    Options {
        since,
        concurrency: 3,
        state_dir: dir.path().join("jobs"),
    }
}

#[tokio::test]
async fn a_job_stopped_by_a_fault_resumes_after_the_last_session_it_finished() {
    let (dir, target) = seeded().await;
    let audit = Audit::stderr();
    let job = Recorder {
        seen: Mutex::new(Vec::new()),
        fail_at: Mutex::new(Some("/2026/01/02/c3".into())),
    };
    let err = run(&job, &target, &options(&dir, None), &audit)
        .await
        .unwrap_err();
    assert!(err.contains("/2026/01/02/c3: storage went away"), "{err}");
    assert!(err.contains("resumes after 2026/01/02/a"), "{err}");
    let first: Vec<String> = job.seen.lock().unwrap().drain(..).collect();
    assert_eq!(first, ["/2025/12/31/z", "/2026/01/02/a-1", "/2026/01/02/a"]);

    let report = run(&job, &target, &options(&dir, None), &audit)
        .await
        .unwrap();
    let second: Vec<String> = job.seen.lock().unwrap().drain(..).collect();
    assert_eq!(
        second,
        ["/2026/01/02/c3", "/2026/02/01/b"],
        "only what was left"
    );
    assert_eq!(report.sessions, 5, "totals cover both runs");
    assert_eq!(report.resumed_after.as_deref(), Some("2026/01/02/a/"));
    assert_eq!(
        report.findings,
        [Finding {
            path: "/2026/01/02/c3".into(),
            what: "odd one".into()
        }]
    );

    // A finished job leaves no checkpoint: the next run starts afresh.
    let again = run(&job, &target, &options(&dir, None), &audit)
        .await
        .unwrap();
    assert_eq!(again.sessions, 5);
    assert!(again.resumed_after.is_none());
}

/// [`Recorder`] on whole days, with a finding per day; the end of day
/// `.2` fails (once).
struct DayRecorder(Recorder, Mutex<Vec<String>>, Mutex<Option<String>>);

#[async_trait]
impl Job for DayRecorder {
    fn kind(&self) -> &'static str {
        "dayrecord"
    }

    async fn session(&self, s: &Session) -> Result<Vec<String>, String> {
        self.0.session(s).await
    }

    async fn day_end(
        &self,
        _days: &crate::days::Days,
        day: &layout::Day,
        sessions: u64,
    ) -> Result<Vec<String>, String> {
        let mut fail = self.2.lock().unwrap();
        if fail.as_deref() == Some(day.label().as_str()) {
            *fail = None;
            return Err("storage went away".into());
        }
        self.1.lock().unwrap().push(day.label());
        Ok(vec![format!("{sessions} sessions")])
    }

    fn whole_days(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_whole_day_job_stopped_mid_day_redoes_that_day_and_reports_it_once() {
    let (dir, target) = seeded().await;
    let audit = Audit::stderr();
    let job = DayRecorder(
        Recorder {
            seen: Mutex::new(Vec::new()),
            fail_at: Mutex::new(None),
        },
        Mutex::new(Vec::new()),
        // After all of the day's sessions (c3's finding recorded).
        Mutex::new(Some("2026-01-02".into())),
    );
    let err = run(&job, &target, &options(&dir, None), &audit)
        .await
        .unwrap_err();
    // The finished day is kept; the day in progress is not.
    assert!(err.contains("/2026/01/02: storage went away"), "{err}");
    assert!(err.contains("resumes after 2025/12/31/z"), "{err}");
    assert_eq!(*job.1.lock().unwrap(), ["2025-12-31"]);
    job.0.seen.lock().unwrap().clear();
    let report = run(&job, &target, &options(&dir, None), &audit)
        .await
        .unwrap();
    let second: Vec<String> = job.0.seen.lock().unwrap().drain(..).collect();
    assert_eq!(
        second,
        [
            "/2026/01/02/a-1",
            "/2026/01/02/a",
            "/2026/01/02/c3",
            "/2026/02/01/b"
        ],
        "the stopped day whole, then the rest"
    );
    assert_eq!(report.sessions, 5);
    let days: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.what.ends_with(" sessions"))
        .map(|f| (f.path.as_str(), f.what.as_str()))
        .collect();
    assert_eq!(
        days,
        [
            ("/2025/12/31", "1 sessions"),
            ("/2026/01/02", "3 sessions"),
            ("/2026/02/01", "1 sessions")
        ]
    );
    // The day's session finding appears once, not once per attempt.
    let odd = report
        .findings
        .iter()
        .filter(|f| f.what == "odd one")
        .count();
    assert_eq!(odd, 1, "{:?}", report.findings);
}

#[tokio::test]
async fn since_skips_earlier_days_and_one_job_of_a_kind_runs_per_tenant() {
    let (dir, target) = seeded().await;
    let audit = Audit::stderr();
    let job = Recorder {
        seen: Mutex::new(Vec::new()),
        fail_at: Mutex::new(None),
    };
    let since = chrono::NaiveDate::from_ymd_opt(2026, 1, 3);
    let report = run(&job, &target, &options(&dir, since), &audit)
        .await
        .unwrap();
    assert_eq!(report.sessions, 1);
    assert_eq!(*job.seen.lock().unwrap(), ["/2026/02/01/b"]);

    let _held = State::open(&dir.path().join("jobs"), "record", "t").unwrap();
    let err = run(&job, &target, &options(&dir, None), &audit)
        .await
        .unwrap_err();
    assert!(err.contains("another record job is running"), "{err}");
}

#[test]
fn folders_before_a_bound_are_skipped_whole() {
    assert!(before("2025/", "2026/01/02/a/"));
    assert!(!before("2026/", "2026/01/02/a/"), "the bound lies inside");
    assert!(!before("2026/01/02/", "2026/01/02/a/"));
    assert!(before("2026/01/01/", "2026/01/02/a/"));
    assert!(!before("2026/02/", "2026/01/02/a/"));
    assert!(!before("2026/", ""), "no bound");
}

#[tokio::test]
async fn verify_finds_changed_missing_and_unreadable_objects_and_passes_the_rest() {
    let (dir, target) = seeded().await;
    let store = target.store();
    let keys = |d: &str, id: &str| {
        let (y, rest) = d.split_at(4);
        SessionKeys::new("t/", y, &rest[1..3], &rest[4..6], id)
    };
    let put = |key: String, body: &'static [u8]| {
        let store = store.clone();
        async move {
            store
                .put(&key, Bytes::from_static(body), Default::default())
                .await
                .unwrap()
        }
    };
    // Same size, other bytes.
    put(keys("2025/12/31", "z").archive(), b"rax").await;
    store
        .delete(&keys("2026/01/02", "a").archive())
        .await
        .unwrap();
    put(keys("2026/01/02", "c3").index(), b"{not json").await;
    // A WebM the index says is stored, and a rendered MP3 of the wrong size.
    let b = keys("2026/02/01", "b");
    let raw = crate::store::read_all(store.as_ref(), &b.index(), 1 << 20)
        .await
        .unwrap();
    let mut index = crate::layout::index::SessionIndex::parse(&raw).unwrap();
    let derived = |size, stored| crate::layout::index::Derived {
        size,
        stored,
        ..Default::default()
    };
    index
        .recvault
        .derived
        .insert("agent.webm".into(), derived(10, true));
    index
        .recvault
        .derived
        .insert("b.mp3".into(), derived(512, false));
    index
        .recvault
        .derived
        .insert("b.mp4".into(), derived(900, false));
    store
        .put(
            &b.index(),
            Bytes::from(index.to_bytes()),
            Default::default(),
        )
        .await
        .unwrap();
    put(b.derived("b.mp3"), b"short").await;
    // An index entry this version cannot read is named, not skipped.
    let a1 = keys("2026/01/02", "a-1");
    let raw = crate::store::read_all(store.as_ref(), &a1.index(), 1 << 20)
        .await
        .unwrap();
    let mut odd: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    odd["recvault"]["derived"]["a-1.mp3"] = serde_json::json!({"size": "large"});
    store
        .put(
            &a1.index(),
            Bytes::from(odd.to_string()),
            Default::default(),
        )
        .await
        .unwrap();

    let audit = Audit::stderr();
    let report = run(&verify::Verify, &target, &options(&dir, None), &audit)
        .await
        .unwrap();
    assert_eq!(report.sessions, 5);
    let found: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{} {}", f.path, f.what))
        .collect();
    let sha_raw = hex::encode(<Sha256 as sha2::Digest>::digest(b"raw"));
    let sha_rax = hex::encode(<Sha256 as sha2::Digest>::digest(b"rax"));
    assert_eq!(
        found,
        [
            format!("/2025/12/31/z z.tar.gz: SHA-256 is {sha_rax}, the index records {sha_raw}"),
            "/2026/01/02/a-1 info.json: recvault.derived.a-1.mp3 has a shape this version cannot read (left out)".to_string(),
            "/2026/01/02/a a.tar.gz is missing from storage".to_string(),
            "/2026/01/02/c3 info.json: the session index is malformed: key must be a string at line 1 column 2".to_string(),
            "/2026/02/01/b agent.webm is missing from storage".to_string(),
            "/2026/02/01/b b.mp3 holds 5 bytes, the index reserves 512".to_string(),
        ],
        "a-1's archive is intact; b's MP4 is not rendered yet, which is fine"
    );
}
