//! Large folders list completely, in order, page by page.

use futures::StreamExt;

use crate::harness::*;
use crate::rawsftp::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_with_10000_sessions_lists_completely_and_in_order_over_sftp_and_ftps_from_its_index()
{
    let prefix = unique_prefix("tenthousand");
    let store = s3().store().await;
    let ids: Vec<String> = (0..10_000).map(|i| format!("sess-{i:05}")).collect();
    // Only each session's info.json, written straight into storage (a
    // listing reads nothing else), with no day index: as sessions archived
    // before the index existed.
    futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let store = store.clone();
            let keys = recvault::layout::SessionKeys::new(&prefix, "2026", "11", "23", &id);
            async move {
                let info = format!(
                    r#"{{"session_id":"{id}","started_at":"2026-11-23T08:00:00Z","ended_at":"2026-11-23T08:03:00Z","agent":{{"id":"a"}},"user":{{"id":"u"}},"recvault":{{"v":1}}}}"#
                );
                store
                    .put(&keys.index(), info.into(), Default::default())
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let day = recvault::layout::Day::new("2026", "11", "23");
    assert!(store.head(&day.index(&prefix)).await.unwrap().is_none());
    let key = client_key("qa");
    let hash = recvault::password::hash("ftp-pw-10k").unwrap();
    let users = format!(
        "\n[[tenants.users]]\nname = \"qf\"\npassword = \"{hash}\"\npermissions = [\"list\"]\n"
    );
    let tenant = tenant_toml("acme", &prefix, &[("qa", key, "")]) + &users;

    // `recvault reindex`, as after an upgrade, builds the day's index.
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("recvault.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[jobs]\nstate_dir = \"{}\"\n{tenant}",
            s3().storage_toml(),
            config.path().display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = recvault_command()
        .args(["reindex", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "reindex of 10,000 sessions: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let stored = recvault::store::read_all(store.as_ref(), &day.index(&prefix), 64 << 20)
        .await
        .unwrap();
    let index = recvault::layout::day::DayIndex::parse(&stored).unwrap();
    assert_eq!(index.sessions.keys().cloned().collect::<Vec<_>>(), ids);

    // A new process lists from the index alone: no session's info.json is read.
    let proxy = crate::faults::FaultProxy::start(&s3().endpoint);
    let server = Server::start_with(&format!("{}\n{tenant}", proxy.storage_toml(s3())));
    let mut h = connect(server.port).await;
    assert!(auth_key(&mut h, "qa", key).await);
    let (mut s, _) = RawSftp::start(&h).await;
    // The start's self-test is done (its requests are not the listing's).
    assert!(
        server.log_shows("day indexes are shared"),
        "{}",
        server.log()
    );
    let before = proxy.seen().len();
    let names = s.list(b"/2026/11/23").await.unwrap();
    assert_eq!(names, ids, "every session once, in order, from the index");
    let during: Vec<_> = proxy.seen()[before..].to_vec();
    assert!(
        !during.iter().any(|r| r.path.contains("info.json")),
        "the listing read sessions: {:?}",
        during
            .iter()
            .filter(|r| r.path.contains("info.json"))
            .take(3)
            .collect::<Vec<_>>()
    );
    assert!(
        during.len() <= 4,
        "a listing of one day took {} requests: {during:?}",
        during.len()
    );

    // OpenSSH's client sees all of them, each at the call's end.
    let work = tempfile::tempdir().unwrap();
    let out = sftp_batch(server.port, "qa", key, "ls -l /2026/11/23\n", work.path());
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("sess-")).collect();
    assert_eq!(lines.len(), 10_000);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("Nov 23  2026") || l.contains("Nov 23 08:03")),
        "{}",
        lines[0]
    );

    // And FTPS MLSD, in order.
    let mut ftp = crate::rawftp::RawFtp::login(server.ftps_port, "qf", "ftp-pw-10k").await;
    let (listing, reply) = ftp.data_cmd("MLSD /2026/11/23").await;
    assert_eq!(reply.code, 226, "{reply:?}");
    let listed: Vec<String> = String::from_utf8_lossy(&listing)
        .lines()
        .filter_map(|l| l.rsplit_once("; ").map(|(_, n)| n.to_string()))
        .collect();
    assert_eq!(listed, ids, "MLSD lists every session once, in order");
}

// ------------------------------------------- the day index, two processes --

const TOKEN: &str = "day-index-ingest-token-0123456789";

/// A tenant both processes serve: ingest with [`TOKEN`], a user who may
/// erase; jobs keep their state in `jobs`. Each listing asks storage
/// (`listing_fresh_ms = 0`): these tests check what the index holds after
/// the other node's writes, not how long a node may answer from its last
/// read (the day-index unit tests hold that window).
fn shared_tenant(prefix: &str, node: &str, jobs: &std::path::Path) -> String {
    format!(
        "# audit: node = \"{node}\"\n[limits]\nlisting_fresh_ms = 0\n[jobs]\nstate_dir = \"{}\"\n[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}\"\ningest_tokens = [\"sha256:{}\"]\n\n[[tenants.users]]\nname = \"qa\"\nauthorized_keys = [\"{}\"]\npermissions = [\"list\", \"download\", \"delete\"]\n",
        jobs.display(),
        recvault::ingest::token_hash(TOKEN),
        client_key("qa").public
    )
}

/// Pushes `each` sessions of one day to each server at the same time (four
/// pushes at once per server) and returns their ids, sorted.
fn push_to_both(servers: [&Server; 2], root: &std::path::Path, each: usize) -> Vec<String> {
    let mut ids = Vec::new();
    std::thread::scope(|scope| {
        let mut pushes = Vec::new();
        for (n, server) in servers.iter().enumerate() {
            for lane in 0..4 {
                let mine: Vec<String> = (0..each)
                    .filter(|i| i % 4 == lane)
                    .map(|i| format!("call-{}-{i:03}", ["a", "b"][n]))
                    .collect();
                ids.extend(mine.iter().cloned());
                let dirs: Vec<_> = mine
                    .iter()
                    .map(|id| crate::ingest::make_session(root, id, (n * 7 + lane) as u8, 20))
                    .collect();
                pushes.push(scope.spawn(move || {
                    for dir in dirs {
                        let out = crate::ingest::push(server, &dir, TOKEN);
                        assert!(
                            out.status.success(),
                            "push {}: {}",
                            dir.display(),
                            text(&out)
                        );
                    }
                }));
            }
        }
        for p in pushes {
            p.join().expect("a push thread failed");
        }
    });
    ids.sort();
    ids
}

/// The sessions a day listing over OpenSSH's sftp shows.
fn listed_sessions(server: &Server, work: &std::path::Path) -> Vec<String> {
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        "ls -1 /2026/11/23\n",
        work,
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .filter(|n| n.starts_with("call-"))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_archiving_50_sessions_each_into_one_day_at_once_list_all_100() {
    // moto answering one request at a time, as S3 serialises the condition
    // and the write of one key (moto's threaded server does not).
    let moto = s3_single_threaded();
    let prefix = unique_prefix("two-nodes");
    let jobs = tempfile::tempdir().unwrap();
    let a = Server::start_on(moto, &shared_tenant(&prefix, "node-a", jobs.path()));
    let b = Server::start_on(moto, &shared_tenant(&prefix, "node-b", jobs.path()));
    assert!(a.log_shows("day indexes are shared"), "{}", a.log());
    let root = tempfile::tempdir().unwrap();
    let ids = push_to_both([&a, &b], root.path(), 50);
    assert_eq!(ids.len(), 100);

    let store = moto.store().await;
    let day = recvault::layout::Day::new("2026", "11", "23");
    let kept = recvault::store::read_all(store.as_ref(), &day.index(&prefix), 16 << 20)
        .await
        .unwrap();
    let index = recvault::layout::day::DayIndex::parse(&kept).unwrap();
    assert_eq!(index.sessions.keys().cloned().collect::<Vec<_>>(), ids);
    let e = &index.sessions["call-a-007"];
    assert_eq!(
        (e.agent.name.as_deref(), e.queue.as_deref()),
        (Some("Ann"), Some("sales"))
    );
    assert_eq!(e.tags["lang"], "en");
    assert!(
        e.entries.contains_key("call-a-007.tar.gz") && e.entries.contains_key("call-a-007.mp4")
    );
    let work = tempfile::tempdir().unwrap();
    assert_eq!(listed_sessions(&a, work.path()), ids);
    assert_eq!(listed_sessions(&b, work.path()), ids);

    // `reindex` rebuilds, from the sessions, the very bytes the archivers kept.
    store.delete(&day.index(&prefix)).await.unwrap();
    let out = recvault_command_for(moto)
        .arg("reindex")
        .arg("--config")
        .arg(a.dir.path().join("recvault.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("100 sessions in 1 rebuilt day indexes"),
        "{}",
        text(&out)
    );
    let rebuilt = recvault::store::read_all(store.as_ref(), &day.index(&prefix), 16 << 20)
        .await
        .unwrap();
    assert!(
        rebuilt == kept,
        "reindex wrote another index than the archivers kept"
    );
    // A second run finds nothing to change.
    let out = recvault_command_for(moto)
        .arg("reindex")
        .arg("--config")
        .arg(b.dir.path().join("recvault.toml"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("100 sessions in 0 rebuilt"),
        "{}",
        text(&out)
    );

    // An erase on one node leaves the index and both nodes' listings.
    let out = sftp_batch(
        b.port,
        "qa",
        client_key("qa"),
        "rmdir /2026/11/23/call-a-013\n",
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let after = recvault::layout::day::DayIndex::parse(
        &recvault::store::read_all(store.as_ref(), &day.index(&prefix), 16 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(after.sessions.len(), 99);
    assert!(!after.sessions.contains_key("call-a-013"));
    let left: Vec<String> = ids.iter().filter(|i| *i != "call-a-013").cloned().collect();
    assert_eq!(listed_sessions(&a, work.path()), left);
    assert_eq!(listed_sessions(&b, work.path()), left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_store_that_ignores_conditional_writes_two_processes_keep_per_node_shards_and_list_all_100(
) {
    let moto = s3_single_threaded();
    let prefix = unique_prefix("two-nodes-ignoring");
    // Every refused conditional write is answered 200, as Garage does.
    let proxy = crate::faults::FaultProxy::start(&moto.endpoint);
    proxy.inject(crate::faults::Rule::new(
        Some("PUT"),
        "",
        crate::faults::Fault::IgnoreConditions,
    ));
    let storage = proxy.storage_toml(moto);
    let jobs = tempfile::tempdir().unwrap();
    let a = Server::start_on(
        moto,
        &format!(
            "{storage}\n{}",
            shared_tenant(&prefix, "node-a", jobs.path())
        ),
    );
    let b = Server::start_on(
        moto,
        &format!(
            "{storage}\n{}",
            shared_tenant(&prefix, "node-b", jobs.path())
        ),
    );
    for s in [&a, &b] {
        assert!(
            s.log_shows("storage IGNORES conditional writes"),
            "{}",
            s.log()
        );
        assert!(s.log_shows("one shard per node"), "{}", s.log());
    }
    let root = tempfile::tempdir().unwrap();
    let ids = push_to_both([&a, &b], root.path(), 50);

    let work = tempfile::tempdir().unwrap();
    assert_eq!(listed_sessions(&a, work.path()), ids);
    assert_eq!(listed_sessions(&b, work.path()), ids);
    let store = moto.store().await;
    let day = recvault::layout::Day::new("2026", "11", "23");
    let listed = store
        .list_page(&day.index_prefix(&prefix), None, None)
        .await
        .unwrap();
    let parts: Vec<_> = listed.objects.iter().map(|o| o.key.clone()).collect();
    assert_eq!(
        parts,
        [day.shard(&prefix, "node-a"), day.shard(&prefix, "node-b")],
        "each node writes only its own shard"
    );

    // Node a erases a session node b archived (and b's shard lists).
    let out = sftp_batch(
        a.port,
        "qa",
        client_key("qa"),
        "rmdir /2026/11/23/call-b-021\n",
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let left: Vec<String> = ids.iter().filter(|i| *i != "call-b-021").cloned().collect();
    assert_eq!(listed_sessions(&b, work.path()), left);
    assert_eq!(listed_sessions(&a, work.path()), left);
}
