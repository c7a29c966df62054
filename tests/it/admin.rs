//! The admin listener: /healthz, /readyz and /metrics, scraped by a real
//! Prometheus and checked by promtool.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

pub(crate) const ADMIN: &str = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";

/// `curl` of `http://127.0.0.1:port{path}`: (status, body).
pub(crate) fn get(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = s.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_string())
}

/// The value of the sample `name` (its whole `name{labels}` text) in a
/// Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_metrics_count_a_download_and_prometheus_scrapes_them() {
    let prefix = unique_prefix("admin");
    let store = s3().store().await;
    let data = pseudo_random(300_000, 7);
    seed(
        store.as_ref(),
        &prefix,
        "c-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:10:00Z",
        data.clone(),
    )
    .await;
    let key = client_key("qa");
    let server = Server::start(&format!(
        "{}{ADMIN}",
        tenant_toml("acme", &prefix, &[("qa", key, "")])
    ));
    assert_ne!(server.admin_port, 0, "{}", server.log());
    let admin = server.admin_port;

    assert_eq!(get(admin, "/healthz").0, 200);
    let (code, body) = get(admin, "/readyz");
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true, "{body}");
    assert_eq!(ready["tenants"]["acme"]["storage"], "ok", "{body}");
    assert_eq!(get(admin, "/nothing").0, 404);

    let work = tempfile::tempdir().unwrap();
    let out = sftp_batch(
        server.port,
        "qa",
        key,
        "get /2026/11/23/c-1/c-1.tar.gz got\n",
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(work.path().join("got")).unwrap(), data);

    // The download is counted once its handle is closed (the audit line).
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let (code, page) = get(admin, "/metrics");
        assert_eq!(code, 200);
        let served = sample(&page, "recvault_served_bytes_total{protocol=\"sftp\"}");
        if served.is_some_and(|b| b >= data.len() as f64) || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let served = sample(&page, "recvault_served_bytes_total{protocol=\"sftp\"}");
    assert_eq!(served, Some(data.len() as f64), "{page}");
    for name in [
        "recvault_downloads_total{protocol=\"sftp\",result=\"complete\"}",
        "recvault_logins_total{protocol=\"sftp\",result=\"ok\"}",
        "recvault_connections_total{protocol=\"ssh\",result=\"admitted\"}",
        "recvault_storage_requests_total{operation=\"GET\",outcome=\"ok\"}",
    ] {
        assert!(
            sample(&page, name).is_some_and(|v| v >= 1.0),
            "{name}:\n{page}"
        );
    }
    assert_eq!(
        sample(&page, "recvault_downloads_in_flight{protocol=\"sftp\"}"),
        Some(0.0),
        "{page}"
    );
    // The spool's bytes, read at the scrape (the harness's spool exists).
    assert!(
        sample(&page, "recvault_ingest_spool_bytes").is_some(),
        "{page}"
    );

    // promtool's own check of the page.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian prometheus)");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(checked.status.success(), "promtool: {}", text(&checked));

    // A real Prometheus scrapes the listener, and a query over its HTTP API
    // returns the bytes served.
    let prom = tempfile::tempdir().unwrap();
    let web = free_port();
    std::fs::write(
        prom.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: recvault\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            prom.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian prometheus)");
    let query = "recvault_served_bytes_total%7Bprotocol%3D%22sftp%22%7D";
    let deadline = Instant::now() + Duration::from_secs(90);
    let answer = loop {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{web}/api/v1/query?query={query}"))
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        if body.contains("\"value\"") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let v: serde_json::Value = serde_json::from_str(&answer).expect(&answer);
    let value = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or_default();
    assert_eq!(value, data.len().to_string(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_a_tenants_storage_does_not_answer_and_health_stays_up() {
    let prefix = unique_prefix("admin-dead");
    let key = client_key("qa");
    // Nothing listens on port 9 (discard) on loopback: every request fails.
    let storage = "[storage]\nbackend = \"s3\"\nbucket = \"none\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\nforce_path_style = true\n";
    let server = Server::start_with(&format!(
        "{storage}\n[limits]\nstorage_attempts = 1\n{ADMIN}{}",
        tenant_toml("acme", &prefix, &[("qa", key, "")])
    ));
    assert_eq!(get(server.admin_port, "/healthz").0, 200);
    let (code, body) = get(server.admin_port, "/readyz");
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false, "{body}");
    let storage = ready["tenants"]["acme"]["storage"]
        .as_str()
        .unwrap_or_default();
    assert!(!storage.is_empty() && storage != "ok", "{body}");
    // Failed storage requests are counted by outcome.
    let (_, page) = get(server.admin_port, "/metrics");
    assert!(
        page.lines().any(|l| l.starts_with(
            "recvault_storage_requests_total{operation=\"LIST\",outcome=\"transient\"}"
        )),
        "{page}"
    );
}

/// `curl` of the admin page: `None` when nothing answers.
fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = s.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_reload_and_says_stopping_through_the_drain() {
    use crate::rawsftp::{auth_key, connect};
    let (a, b) = (unique_prefix("admin-a"), unique_prefix("admin-b"));
    let (qa, qb) = (client_key("qa"), client_key("qb"));
    let limits = "\n[limits]\ndrain_secs = 10\n";
    let one = format!(
        "{limits}{ADMIN}{}",
        tenant_toml("acme", &a, &[("qa", qa, "")])
    );
    let server = Server::start(&one);
    let admin = server.admin_port;
    let (code, body) = get(admin, "/readyz");
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(ready["tenants"].get("beta").is_none(), "{body}");

    // A reload that adds a tenant: readiness checks it too (once its 2 s
    // cache has passed).
    server.reload(&format!(
        "{one}{}",
        tenant_toml("beta", &b, &[("qb", qb, "")])
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (_, body) = get(admin, "/readyz");
        if body.contains("\"beta\"") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["tenants"]["beta"]["storage"], "ok", "{body}");

    // An open SFTP connection holds the drain after SIGTERM: meanwhile the
    // admin listener answers, and says the node is stopping.
    let mut h = connect(server.port).await;
    assert!(auth_key(&mut h, "qa", qa).await);
    server.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(8);
    let seen = loop {
        match try_get(admin, "/readyz") {
            Some((503, body)) => break Some(body),
            _ if Instant::now() > deadline => break None,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let body = seen.unwrap_or_else(|| panic!("no 503 during the drain; log:\n{}", server.log()));
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["listeners"], "stopping", "{body}");
    assert_eq!(ready["ready"], false, "{body}");
    assert_eq!(try_get(admin, "/healthz").map(|(c, _)| c), Some(200));
    drop(h);
}
