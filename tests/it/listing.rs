//! Large folders list completely, in order, page by page.

use futures::StreamExt;

use crate::harness::*;
use crate::rawsftp::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_with_5000_sessions_lists_completely_and_in_order() {
    let prefix = unique_prefix("fivethousand");
    let store = s3().store().await;
    let ids: Vec<String> = (0..5000).map(|i| format!("sess-{i:05}")).collect();
    futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let (store, prefix) = (store.clone(), prefix.clone());
            async move {
                seed(
                    store.as_ref(),
                    &prefix,
                    &id,
                    "2026-11-23T08:00:00Z",
                    "2026-11-23T08:03:00Z",
                    Vec::new(),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let key = client_key("qa");
    let server = Server::start(&tenant_toml("acme", &prefix, &[("qa", key, "")]));

    // The server's own order, through READDIR.
    let mut h = connect(server.port).await;
    assert!(auth_key(&mut h, "qa", key).await);
    let (mut s, _) = RawSftp::start(&h).await;
    let names = s.list(b"/2026/11/23").await.unwrap();
    assert_eq!(names, ids, "every session once, in order");

    // And OpenSSH's client sees all of them.
    let work = tempfile::tempdir().unwrap();
    let out = sftp_batch(server.port, "qa", key, "ls -1 /2026/11/23\n", work.path());
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("sess-"))
        .count();
    assert_eq!(listed, 5000);
}
