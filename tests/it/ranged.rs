//! Downloads through an S3-like link (the fault proxy's link model: a
//! capped rate per connection, a delay before each first byte): a reader
//! that one stream cannot feed fetches ahead with ranged GETs, and every
//! byte arrives in order, whole and resumed at any offset, over SFTP and
//! FTPS, with one range slow and one cut mid-body.

use std::time::Duration;

use crate::faults::{Fault, FaultProxy, Link, Rule};
use crate::harness::*;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_through_an_s3_like_link_fetch_ahead_in_ranges_byte_exact_at_any_offset() {
    let prefix = unique_prefix("ranged");
    let id = "ranged-call";
    let data = pseudo_random(24 * MIB + 4321, 77);
    seed(
        s3().store().await.as_ref(),
        &prefix,
        id,
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        data.clone(),
    )
    .await;
    // 30 MB/s per connection, 30 ms to the first byte of every answer.
    let proxy = FaultProxy::start_on(
        "127.0.0.1:0",
        &s3().endpoint,
        Link {
            bytes_per_sec: Some(30e6),
            ..Link::s3()
        },
    );
    // One range answers 700 ms late, another is cut mid-body once.
    let (slow, cut) = (12 * MIB as u64, 16 * MIB as u64);
    proxy.inject(
        Rule::new(Some("GET"), id, Fault::Delay(Duration::from_millis(700))).range_from(slow),
    );
    proxy.inject(
        Rule::new(Some("GET"), id, Fault::CutBody(100_000))
            .range_from(cut)
            .times(1),
    );
    let config = format!(
        "{}\n[limits]\nrange_read_bytes = 1048576\nrange_reads_per_file = 6\n[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}\"\n{}",
        proxy.storage_toml(s3()),
        crate::ftps::user_toml_pub("qa")
    );
    let server = Server::start_with(&config);
    let cwd = tempfile::tempdir().unwrap();
    let path = format!("/2026/11/23/{id}/{id}.tar.gz");
    // Resumed inside a range, at a boundary, just before one.
    let cuts = [5 * MIB + 123, 8 * MIB, 20 * MIB - 1];
    let mut batch = format!("get {path} whole\n");
    for (i, c) in cuts.iter().enumerate() {
        std::fs::write(cwd.path().join(format!("part-{i}")), &data[..*c]).unwrap();
        batch.push_str(&format!("reget {path} part-{i}\n"));
    }
    let out = sftp_batch(server.port, "qa", client_key("qa"), &batch, cwd.path());
    assert!(out.status.success(), "{}", text(&out));
    let whole = std::fs::read(cwd.path().join("whole")).unwrap();
    assert!(
        whole == data,
        "SFTP get: {} of {} bytes",
        whole.len(),
        data.len()
    );
    for (i, c) in cuts.iter().enumerate() {
        let got = std::fs::read(cwd.path().join(format!("part-{i}"))).unwrap();
        assert!(got == data, "SFTP reget from {c}");
    }
    // FTPS, whole and from an offset (REST).
    for from in [0, 3 * MIB + 7] {
        let file = cwd.path().join(format!("ftps-{from}"));
        let url = format!("ftp://127.0.0.1:{}{path}", server.ftps_port);
        let out = crate::ftps::curl(&["-C", &from.to_string(), "-o", file.to_str().unwrap(), &url]);
        assert!(out.status.success(), "REST {from}: {}", text(&out));
        assert!(
            std::fs::read(&file).unwrap() == data[from..],
            "FTPS from {from}"
        );
    }

    // What reached storage: ranged GETs of the archive beside the streams.
    let gets: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path.contains(&format!("{id}.tar.gz")))
        .collect();
    let ranged = gets
        .iter()
        .filter_map(|s| s.headers.get("range")?.to_str().ok().map(str::to_string))
        .filter(|r| !r.ends_with('-'))
        .count();
    assert!(ranged >= 20, "{ranged} ranged GETs of {} GETs", gets.len());
    let faulted: Vec<_> = gets.iter().filter_map(|s| s.fault.clone()).collect();
    assert!(
        faulted.iter().any(|f| matches!(f, Fault::Delay(_))),
        "{faulted:?}"
    );
    assert!(
        faulted.iter().any(|f| matches!(f, Fault::CutBody(_))),
        "{faulted:?}"
    );
    let from_cut = gets
        .iter()
        .filter(|s| {
            s.headers
                .get("range")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes={cut}-")))
        })
        .count();
    assert!(
        from_cut >= 2,
        "the cut range was asked for again ({from_cut})"
    );
    assert!(
        server.log_shows("read from storage with ranged GETs"),
        "{}",
        server.log()
    );
    eprintln!(
        "{} GETs of the archive, {ranged} of them ranged ({} requests in all)",
        gets.len(),
        proxy.requests()
    );
}
