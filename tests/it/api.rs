//! The content API (`/v1`) driven with curl and Python's requests against
//! the real binary and moto: searches over the day index, a call's index,
//! downloads with Range/If-Range/resume equal to the SFTP bytes, signed
//! links, erase, keys and tenants kept apart, the defender, and
//! schemathesis against the served OpenAPI document.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

pub(crate) const KEY_READ: &str = "key-read-0123456789abcdef0123456789abcdef";
const KEY_ERASE: &str = "key-erase-0123456789abcdef0123456789abcd";
const KEY_OTHER: &str = "key-other-tenant-0123456789abcdef0123456";

pub(crate) fn api_toml(dir_hint: &str) -> String {
    format!(
        "\n[api]\nlisten = \"127.0.0.1:0\"\nlink_key_file = \"{}\"\n",
        std::env::temp_dir()
            .join(format!(
                "recvault-it-link-{dir_hint}-{}.key",
                std::process::id()
            ))
            .display()
    )
}

/// The server's audit trail, one JSON value per line.
fn audit_events(server: &Server) -> Vec<Value> {
    server
        .audit()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub(crate) fn key_toml(name: &str, secret: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "\n[[tenants.api_keys]]\nname = \"{name}\"\nkey = \"sha256:{}\"\nscopes = [{}]\n",
        recvault::ingest::token_hash(secret),
        scopes.join(", ")
    )
}

/// Two tenants: acme (user qa, keys `crm` read-only and `ops` with erase)
/// and beta (key `other`).
fn config(prefix: &str, extra: &str) -> String {
    let qa = client_key("qa");
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| recvault::password::hash(crate::ftps::PW).unwrap());
    let password = format!("password = \"{hash}\"");
    let beta = format!(
        "\n[[tenants]]\nid = \"beta\"\nprefix = \"{prefix}beta/\"\n{}",
        key_toml(
            "other",
            KEY_OTHER,
            &["calls:read", "media:read", "calls:erase"]
        )
    );
    format!(
        "{extra}\n{}\n{}\n{}{}{beta}",
        api_toml(&prefix.replace('/', "-")),
        tenant_toml("acme", &format!("{prefix}acme/"), &[("qa", qa, &password)]),
        key_toml("crm", KEY_READ, &["calls:read", "media:read"]),
        key_toml("ops", KEY_ERASE, &["calls:read", "calls:erase"]),
    )
}

/// Stores a session whose RAW archive is `data`, with its own agent,
/// queue and tags in the index.
#[allow(clippy::too_many_arguments)]
async fn seed_call(
    prefix: &str,
    id: &str,
    started: &str,
    ended: &str,
    data: Vec<u8>,
    agent: &str,
    queue: &str,
    tags: &[(&str, &str)],
) {
    let store = s3().store().await;
    seed(store.as_ref(), prefix, id, started, ended, data).await;
    let keys = recvault::layout::SessionKeys::of_call(prefix, t(started), id);
    let bytes = recvault::store::read_all(store.as_ref(), &keys.index(), 1 << 20)
        .await
        .unwrap();
    let mut index = recvault::layout::index::SessionIndex::parse(&bytes).unwrap();
    index.gateway.insert(
        "agent".into(),
        serde_json::json!({"id": agent, "name": format!("Agent {agent}")}),
    );
    index.gateway.insert("queue".into(), queue.into());
    let tags: serde_json::Map<String, Value> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    index.gateway.insert("tags".into(), Value::Object(tags));
    store
        .put(
            &keys.index(),
            bytes::Bytes::from(index.to_bytes()),
            recvault::store::PutOptions::default(),
        )
        .await
        .unwrap();
    recvault::days::forget(
        store.as_ref(),
        prefix,
        &recvault::layout::Day::of_call(t(started)),
    )
    .await
    .unwrap();
}

/// Session c-1 of tenant acme (2026-11-23 09:00–09:10, agent ag-1, queue
/// sales) whose RAW archive is `data`.
async fn seed_one(prefix: &str, data: Vec<u8>) {
    seed_call(
        &format!("{prefix}acme/"),
        "c-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:10:00Z",
        data,
        "ag-1",
        "sales",
        &[],
    )
    .await;
}

/// One answer: status, headers (lower-case names), body.
pub(crate) struct Got {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// `curl` of the API with `key` (if any) and extra arguments.
pub(crate) fn call(port: u16, method: &str, path: &str, key: Option<&str>, extra: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("h"), dir.path().join("b"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-X", method, "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"]);
    if method == "HEAD" {
        cmd.arg("-I");
    }
    if let Some(k) = key {
        cmd.args(["-H", &format!("Authorization: Bearer {k}")]);
    }
    cmd.args(extra);
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("curl");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let headers = std::fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        code,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

fn sftp_get(server: &Server, remote: &str, cwd: &Path) -> Vec<u8> {
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("get {remote} got.bin\n"),
        cwd,
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::read(cwd.join("got.bin")).unwrap()
}

fn sftp_ls(server: &Server, remote: &str, cwd: &Path) -> String {
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("ls -l {remote}\n"),
        cwd,
    );
    text(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_searches_calls_from_the_day_index_with_filters_and_cursor_pages() {
    let prefix = unique_prefix("api-search");
    let acme = format!("{prefix}acme/");
    let calls = [
        ("c-1", "2026-11-23T09:00:00Z", "ag-1", "sales", "spring"),
        ("c-2", "2026-11-23T10:00:00Z", "ag-2", "support", "spring"),
        ("c-3", "2026-11-23T11:00:00Z", "ag-1", "sales", "autumn"),
        ("c-4", "2026-11-24T09:00:00Z", "ag-1", "sales", "spring"),
        ("c-5", "2026-12-01T08:00:00Z", "ag-3", "sales", "spring"),
    ];
    for (i, (id, start, agent, queue, campaign)) in calls.iter().enumerate() {
        let end = start.replace(":00:00Z", ":05:00Z");
        seed_call(
            &acme,
            id,
            start,
            &end,
            pseudo_random(1000 + i, i as u64),
            agent,
            queue,
            &[("campaign", campaign)],
        )
        .await;
    }
    let server = Server::start(&config(&prefix, ""));
    let port = server.api_port;
    assert_ne!(port, 0, "{}", server.log());
    let ids = |g: &Got| -> Vec<String> {
        g.json()["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["session_id"].as_str().unwrap().to_string())
            .collect()
    };
    let range = "from=2026-11-20&to=2026-12-05";
    // Newest first by default, across days and months.
    let all = call(
        port,
        "GET",
        &format!("/v1/calls?{range}"),
        Some(KEY_READ),
        &[],
    );
    assert_eq!(all.code, 200, "{}", String::from_utf8_lossy(&all.body));
    assert_eq!(ids(&all), ["c-5", "c-4", "c-3", "c-2", "c-1"]);
    let c1 = &all.json()["calls"][4];
    assert_eq!(c1["id"], "2026-11-23_c-1");
    assert_eq!(c1["agent"]["id"], "ag-1");
    assert_eq!(c1["queue"], "sales");
    assert_eq!(c1["duration_secs"], 300.0);
    assert!(c1["media"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "c-1.tar.gz" && m["size"] == 1000));
    let asc = call(
        port,
        "GET",
        &format!("/v1/calls?{range}&order=asc"),
        Some(KEY_READ),
        &[],
    );
    assert_eq!(ids(&asc), ["c-1", "c-2", "c-3", "c-4", "c-5"]);
    // Filters (agent by id or name, queue, tags together, session id).
    let q = |filter: &str| {
        ids(&call(
            port,
            "GET",
            &format!("/v1/calls?{range}&{filter}"),
            Some(KEY_READ),
            &[],
        ))
    };
    assert_eq!(q("agent=ag-1"), ["c-4", "c-3", "c-1"]);
    assert_eq!(q("agent=Agent%20ag-2"), ["c-2"]);
    assert_eq!(q("queue=sales&tag=campaign:spring"), ["c-5", "c-4", "c-1"]);
    assert_eq!(q("tag=campaign:autumn"), ["c-3"]);
    assert_eq!(q("session_id=c-2"), ["c-2"]);
    assert!(q("agent=nobody").is_empty());
    // A narrower range.
    let one_day = call(
        port,
        "GET",
        "/v1/calls?from=2026-11-24&to=2026-11-24",
        Some(KEY_READ),
        &[],
    );
    assert_eq!(ids(&one_day), ["c-4"]);
    // Pages of two, in both orders, join up to the whole list.
    for (order, want) in [
        ("desc", ["c-5", "c-4", "c-3", "c-2", "c-1"]),
        ("asc", ["c-1", "c-2", "c-3", "c-4", "c-5"]),
    ] {
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v1/calls?{range}&order={order}&limit=2");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = call(port, "GET", &path, Some(KEY_READ), &[]);
            assert_eq!(page.code, 200);
            got.extend(ids(&page));
            pages += 1;
            match page.json()["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(got, want, "{order}");
        assert_eq!(pages, 3, "{order}: 2 + 2 + 1, and no empty last page");
    }
    // Bad queries get a clear 400.
    for bad in [
        "limit=0",
        "limit=5000",
        "from=2026-02-30",
        "from=2024-01-01&to=2026-12-01",
        "cursor=not-ours",
        "agnt=ag-1",
    ] {
        let g = call(
            port,
            "GET",
            &format!("/v1/calls?{bad}"),
            Some(KEY_READ),
            &[],
        );
        assert_eq!(g.code, 400, "{bad}");
        assert_eq!(g.json()["status"], 400);
        assert!(!g.json()["error"].as_str().unwrap().is_empty());
    }
    // The search read no session's info.json: the day index is enough.
    // (The harness can not count requests here; the log says whether an
    // index had to be built from the sessions, which reads every info.json
    // once, and that happens once per day, not per request.)
    let built = server
        .log()
        .matches("day index missing; built from the sessions")
        .count();
    assert!(built <= 3, "{built} days built: {}", server.log());

    // Python's requests, as an integration script would page through.
    let script = format!(
        r#"
import requests
s = requests.Session()
s.headers["Authorization"] = "Bearer {KEY_READ}"
ids, cursor = [], None
while True:
    p = {{"from": "2026-11-20", "to": "2026-12-05", "limit": 1, "agent": "ag-1"}}
    if cursor:
        p["cursor"] = cursor
    r = s.get("http://127.0.0.1:{port}/v1/calls", params=p, timeout=30)
    r.raise_for_status()
    body = r.json()
    ids += [c["session_id"] for c in body["calls"]]
    cursor = body["next_cursor"]
    if not cursor:
        break
print(",".join(ids))
"#
    );
    let out = Command::new(std::env::var("MOTO_PYTHON").unwrap_or("python3".into()))
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "c-4,c-3,c-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_downloads_equal_the_sftp_bytes_with_ranges_if_range_and_resume() {
    let prefix = unique_prefix("api-media");
    let acme = format!("{prefix}acme/");
    let data = pseudo_random(3 * 1024 * 1024 + 17, 11);
    seed_call(
        &acme,
        "c-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:10:00Z",
        data.clone(),
        "ag-1",
        "sales",
        &[],
    )
    .await;
    let server = Server::start(&config(&prefix, ""));
    let port = server.api_port;
    let work = tempfile::tempdir().unwrap();
    let remote = "/2026/11/23/c-1/c-1.tar.gz";
    let sftp_bytes = sftp_get(&server, remote, work.path());
    assert_eq!(sftp_bytes, data);
    let media = "/v1/calls/2026-11-23_c-1/media/c-1.tar.gz";

    // The call's index: the archive with its size and SHA-256.
    let detail = call(port, "GET", "/v1/calls/2026-11-23_c-1", Some(KEY_READ), &[]);
    assert_eq!(
        detail.code,
        200,
        "{}",
        String::from_utf8_lossy(&detail.body)
    );
    let d = detail.json();
    assert_eq!(d["session_id"], "c-1");
    let archive = d["media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "c-1.tar.gz")
        .unwrap()
        .clone();
    assert_eq!(archive["size"], data.len() as u64);
    assert_eq!(archive["sha256"], sha256(&data));
    assert_eq!(archive["derived"], false);
    assert!(d["media"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "info.json"));

    // HEAD agrees with SFTP's stat.
    let head = call(port, "HEAD", media, Some(KEY_READ), &[]);
    assert_eq!(head.code, 200);
    assert_eq!(
        head.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    assert_eq!(head.header("content-type"), Some("application/gzip"));
    // (curl -I writes the headers where the body would go: no body came.)
    assert!(head.body.starts_with(b"HTTP/1.1 200") && head.body.len() < 2048);
    let ls = sftp_ls(&server, remote, work.path());
    assert!(ls.contains(&format!(" {} ", data.len())), "{ls}");
    let etag = head.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");

    // The whole file, and ranges at the SFTP bytes' offsets.
    let whole = call(port, "GET", media, Some(KEY_READ), &[]);
    assert_eq!(whole.code, 200);
    assert_eq!(whole.body, sftp_bytes);
    assert_eq!(whole.header("etag"), Some(etag.as_str()));
    let n = data.len();
    for (range, a, b) in [
        ("bytes=0-0", 0, 0),
        ("bytes=1000-1999", 1000, 1999),
        (&format!("bytes={}-", n - 5) as &str, n - 5, n - 1),
        ("bytes=-17", n - 17, n - 1),
        (&format!("bytes=1048570-{}", n + 1000), 1_048_570, n - 1),
    ] {
        let g = call(
            port,
            "GET",
            media,
            Some(KEY_READ),
            &["-H", &format!("Range: {range}")],
        );
        assert_eq!(g.code, 206, "{range}");
        assert_eq!(g.body, &sftp_bytes[a..=b], "{range}");
        assert_eq!(
            g.header("content-range"),
            Some(format!("bytes {a}-{b}/{n}").as_str()),
            "{range}"
        );
    }
    let past = call(
        port,
        "GET",
        media,
        Some(KEY_READ),
        &["-H", &format!("Range: bytes={n}-")],
    );
    assert_eq!(past.code, 416);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{n}").as_str())
    );
    // If-Range: the range only for this version; another tag gets it all.
    let same = call(
        port,
        "GET",
        media,
        Some(KEY_READ),
        &[
            "-H",
            "Range: bytes=10-19",
            "-H",
            &format!("If-Range: {etag}"),
        ],
    );
    assert_eq!((same.code, same.body.as_slice()), (206, &data[10..20]));
    let other = call(
        port,
        "GET",
        media,
        Some(KEY_READ),
        &[
            "-H",
            "Range: bytes=10-19",
            "-H",
            "If-Range: \"another-version\"",
        ],
    );
    assert_eq!(other.code, 200);
    assert_eq!(other.body, data);
    let cached = call(
        port,
        "GET",
        media,
        Some(KEY_READ),
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(cached.code, 304);
    // Attachment on request.
    let att = call(
        port,
        "HEAD",
        &format!("{media}?disposition=attachment"),
        Some(KEY_READ),
        &[],
    );
    assert_eq!(
        att.header("content-disposition"),
        Some("attachment; filename=\"c-1.tar.gz\"")
    );

    // `curl -C -` resumes a cut-off download.
    let part = work.path().join("resumed.bin");
    std::fs::write(&part, &data[..1_234_567]).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-C", "-", "-H"])
        .arg(format!("Authorization: Bearer {KEY_READ}"))
        .arg("-o")
        .arg(&part)
        .arg(format!("http://127.0.0.1:{port}{media}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha256_file(&part), sha256(&data));

    // Each GET was audited as a download, the ranged ones as partial.
    let audit = server.audit();
    let downloads: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &Value| e["event"] == "download" && e["protocol"] == "api")
        .collect();
    assert!(downloads.iter().any(|e| e["complete"] == true
        && e["bytes"] == n as u64
        && e["user"] == "apikey:crm"
        && e["sha256"] == sha256(&data)));
    assert!(downloads
        .iter()
        .any(|e| e["offset"] == 1000 && e["bytes"] == 1000 && e["complete"] == false));
    assert!(downloads
        .iter()
        .any(|e| e["offset"] == 1_234_567 && e["complete"] == true));
    // The key never reaches the log or the trail.
    assert!(!audit.contains(KEY_READ) && !server.log().contains(KEY_READ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_tenants_are_kept_apart_and_wrong_keys_earn_a_ban() {
    let prefix = unique_prefix("api-keys");
    seed_one(&prefix, pseudo_random(5000, 3)).await;
    let server = Server::start(&config(
        &prefix,
        "[limits]\nban_after_failures = 3\nban_secs = 300\n",
    ));
    let port = server.api_port;
    let detail = "/v1/calls/2026-11-23_c-1";
    let media = "/v1/calls/2026-11-23_c-1/media/c-1.tar.gz";
    assert_eq!(call(port, "GET", detail, Some(KEY_READ), &[]).code, 200);
    // Another tenant's key does not see this tenant's call, by any route.
    assert_eq!(call(port, "GET", detail, Some(KEY_OTHER), &[]).code, 404);
    assert_eq!(call(port, "GET", media, Some(KEY_OTHER), &[]).code, 404);
    assert_eq!(call(port, "DELETE", detail, Some(KEY_OTHER), &[]).code, 404);
    let other = call(
        port,
        "GET",
        "/v1/calls?from=2026-11-01&to=2026-11-30",
        Some(KEY_OTHER),
        &[],
    );
    assert_eq!(other.code, 200);
    assert!(other.json()["calls"].as_array().unwrap().is_empty());
    // Scopes: the erase key has no media:read, the read key no calls:erase.
    assert_eq!(call(port, "GET", media, Some(KEY_ERASE), &[]).code, 403);
    assert_eq!(call(port, "DELETE", detail, Some(KEY_READ), &[]).code, 403);
    // Paths that name nothing, and methods a path does not take.
    for path in [
        "/v1/calls/c-1",
        "/v1/calls/2026-11-23_..",
        "/v1/calls/2026-11-23_c-1/media/..%2f..%2fetc",
        "/v1/calls/2026-11-23_c-1/media/nothing.mp4",
        "/v2/calls",
    ] {
        let g = call(port, "GET", path, Some(KEY_READ), &[]);
        assert_eq!(g.code, 404, "{path}");
        assert_eq!(g.json()["status"], 404, "{path}");
    }
    let put = call(port, "PUT", detail, Some(KEY_READ), &[]);
    assert_eq!(put.code, 405);
    assert_eq!(put.header("allow"), Some("GET, DELETE"));
    // No key: 401 with a challenge, not a failed login.
    let none = call(port, "GET", detail, None, &[]);
    assert_eq!(none.code, 401);
    assert!(none
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    // Wrong keys are failed logins: audited, and the third bans the address.
    for _ in 0..2 {
        assert_eq!(
            call(port, "GET", detail, Some("guessed-key"), &[]).code,
            401
        );
    }
    let failed = audit_events(&server)
        .iter()
        .filter(|e| e["event"] == "login" && e["protocol"] == "api" && e["ok"] == false)
        .count();
    assert_eq!(failed, 2);
    assert_eq!(
        call(port, "GET", detail, Some("guessed-key"), &[]).code,
        401
    );
    assert_eq!(
        call(port, "GET", detail, Some(KEY_READ), &[]).code,
        0,
        "banned: the connection is dropped"
    );
    assert!(!server.audit().contains("guessed-key"));
    // Each key's login is audited once from this address, not per request
    // (KEY_READ alone made several).
    let logins = audit_events(&server)
        .iter()
        .filter(|e| e["event"] == "login" && e["protocol"] == "api" && e["ok"] == true)
        .count();
    assert_eq!(logins, 3, "{}", server.audit());
    // What it did is audited at each request: the search, with its query.
    let searched = audit_events(&server)
        .iter()
        .any(|e| e["event"] == "search" && e["query"] == "from=2026-11-01&to=2026-11-30");
    assert!(searched, "{}", server.audit());
    assert!(server.log_shows("address banned"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_signed_links_work_until_used_up_or_expired_and_an_altered_one_gets_403() {
    let prefix = unique_prefix("api-links");
    let data = pseudo_random(70_000, 5);
    seed_one(&prefix, data.clone()).await;
    let server = Server::start(&config(&prefix, ""));
    let port = server.api_port;
    let make = |body: &str| {
        call(
            port,
            "POST",
            "/v1/calls/2026-11-23_c-1/media/c-1.tar.gz/links",
            Some(KEY_READ),
            &["-H", "Content-Type: application/json", "--data", body],
        )
    };
    let made = make(r#"{"ttl_secs": 600, "max_uses": 2}"#);
    assert_eq!(made.code, 201, "{}", String::from_utf8_lossy(&made.body));
    let url = made.json()["url"].as_str().unwrap().to_string();
    let path = url
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("{url}"))
        .to_string();
    // No other authentication; HEAD is not a use; two GETs are.
    assert_eq!(call(port, "HEAD", &path, None, &[]).code, 200);
    let first = call(port, "GET", &path, None, &[]);
    assert_eq!((first.code, first.body == data), (200, true));
    let second = call(port, "GET", &path, None, &["-H", "Range: bytes=5-9"]);
    assert_eq!((second.code, second.body.as_slice()), (206, &data[5..10]));
    let third = call(port, "GET", &path, None, &[]);
    assert_eq!(third.code, 410, "used up");
    assert!(third.json()["error"].as_str().unwrap().contains("used up"));
    // Altered claims or MAC: 403, counted as a failed login.
    let (claims, mac) = path.rsplit_once('.').unwrap();
    let mut flipped = mac.to_string().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let altered = format!("{claims}.{}", String::from_utf8(flipped).unwrap());
    assert_eq!(call(port, "GET", &altered, None, &[]).code, 403);
    assert_eq!(call(port, "GET", "/v1/links/e30.AAAA", None, &[]).code, 403);
    // Expired.
    let short = make(r#"{"ttl_secs": 1}"#);
    let short_path = short.json()["url"]
        .as_str()
        .unwrap()
        .replace(&format!("http://127.0.0.1:{port}"), "");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(call(port, "GET", &short_path, None, &[]).code, 410);
    // Bad requests.
    assert_eq!(make(r#"{"ttl_secs": 0}"#).code, 400);
    assert_eq!(make(r#"{"ttl_secs": 99999999}"#).code, 400);
    assert_eq!(make(r#"{"max_uses": 0}"#).code, 400);
    assert_eq!(make(r#"{"other": 1}"#).code, 400);
    assert_eq!(make("not json").code, 400);
    // The erase-only key may not hand out downloads.
    let refused = call(
        port,
        "POST",
        "/v1/calls/2026-11-23_c-1/media/c-1.tar.gz/links",
        Some(KEY_ERASE),
        &["--data", "{}"],
    );
    assert_eq!(refused.code, 403);
    // Made links are audited with what they allow.
    let audit = server.audit();
    assert!(
        audit.lines().any(|l| l.contains("\"event\":\"link\"")
            && l.contains("c-1.tar.gz")
            && l.contains("\"max_uses\":2")),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_erase_removes_the_call_from_sftp_ftps_and_the_api() {
    let prefix = unique_prefix("api-erase");
    for id in ["c-1", "c-2"] {
        seed_call(
            &format!("{prefix}acme/"),
            id,
            "2026-11-23T09:00:00Z",
            "2026-11-23T09:10:00Z",
            pseudo_random(4000, 9),
            "ag-1",
            "sales",
            &[],
        )
        .await;
    }
    let server = Server::start(&config(&prefix, ""));
    let port = server.api_port;
    let work = tempfile::tempdir().unwrap();
    assert!(sftp_ls(&server, "/2026/11/23", work.path()).contains("c-1"));
    let erased = call(
        port,
        "DELETE",
        "/v1/calls/2026-11-23_c-1",
        Some(KEY_ERASE),
        &[],
    );
    assert_eq!(
        erased.code,
        200,
        "{}",
        String::from_utf8_lossy(&erased.body)
    );
    assert_eq!(erased.json()["erased"], true);
    assert!(erased.json()["objects"].as_u64().unwrap() >= 2);
    assert_eq!(
        call(port, "GET", "/v1/calls/2026-11-23_c-1", Some(KEY_READ), &[]).code,
        404
    );
    let listed = call(
        port,
        "GET",
        "/v1/calls?from=2026-11-23&to=2026-11-23",
        Some(KEY_READ),
        &[],
    );
    let ids: Vec<&str> = listed.json()["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["session_id"].as_str().unwrap().to_string().leak() as &str)
        .collect();
    assert_eq!(ids, ["c-2"]);
    let ls = sftp_ls(&server, "/2026/11/23", work.path());
    assert!(!ls.contains("c-1") && ls.contains("c-2"), "{ls}");
    let ftps = crate::ftps::curl(&[&format!("ftp://127.0.0.1:{}/2026/11/23/", server.ftps_port)]);
    let names = text(&ftps);
    assert!(!names.contains("c-1") && names.contains("c-2"), "{names}");
    // Again: nothing left to erase.
    assert_eq!(
        call(
            port,
            "DELETE",
            "/v1/calls/2026-11-23_c-1",
            Some(KEY_ERASE),
            &[]
        )
        .code,
        404
    );
    let audit = server.audit();
    assert!(
        audit.lines().any(|l| l.contains("\"event\":\"erase\"")
            && l.contains("\"protocol\":\"api\"")
            && l.contains("apikey:ops")),
        "{audit}"
    );
}

/// schemathesis (PyPI) against the served OpenAPI document, with a valid
/// key and real call ids and file names (otherwise nearly every answer is a
/// 404): no 5xx, every answer as documented (status, content type, headers,
/// body schema). Prints how many requests it made and how many got
/// 2xx/206 (the HAR report of the run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    assert!(
        st.exists(),
        "schemathesis is not installed: scripts/test.sh installs it into .venv"
    );
    let prefix = unique_prefix("api-schemathesis");
    for (i, id) in ["c-1", "c-2"].iter().enumerate() {
        seed_call(
            &format!("{prefix}acme/"),
            id,
            &format!("2026-11-2{}T09:00:00Z", 3 + i),
            &format!("2026-11-2{}T09:10:00Z", 3 + i),
            pseudo_random(20_000, i as u64),
            "ag-1",
            "sales",
            &[("campaign", "spring")],
        )
        .await;
    }
    // No ban: schemathesis sends wrong keys on purpose (ignored_auth).
    let server = Server::start(&config(&prefix, "[defender]\nallow = [\"127.0.0.0/8\"]\n"));
    let port = server.api_port;
    let work = tempfile::tempdir().unwrap();
    let toml = work.path().join("schemathesis.toml");
    std::fs::write(
        &toml,
        r#"
[[operations]]
include-path-regex = "^/v1/calls/\\{id\\}"
parameters = { id = "2026-11-23_c-1" }

[[operations]]
include-path-regex = "/media/\\{name\\}"
parameters = { name = "c-1.tar.gz" }

# A download's body is the file (its schema is "anything"); a range of
# info.json is not JSON, though its Content-Type is the file's (RFC 9110).
[[operations]]
include-path-regex = "^/v1/(links/|calls/\\{id\\}/media/\\{name\\}$)"
checks.response_schema_conformance.enabled = false
# A range past the end is answered 416, a link used up or expired 410, as documented.
checks.positive_data_acceptance.expected-statuses = [200, 206, 304, 401, 403, 404, 410, 416]

# A range over 366 days is refused with 400, as documented (JSON Schema
# cannot say it).
[[operations]]
include-path = "/v1/calls"
checks.positive_data_acceptance.expected-statuses = [200, 400]

# An `after` of the position's shape that names no time (month 13) is refused, as documented.
[[operations]]
include-path = "/v1/events"
checks.positive_data_acceptance.expected-statuses = [200, 400]
"#,
    )
    .unwrap();
    // Two runs: the examples, coverage and fuzzing phases with every check;
    // then the stateful phase (it chains link-making into downloads) with
    // every check but the body schema: it follows links to byte ranges of
    // info.json, whose 206 says application/json (the file's type, RFC
    // 9110) over a slice that is not JSON, and schemathesis 4 applies no
    // per-operation setting in that phase.
    let mut statuses: Vec<u64> = Vec::new();
    for (phases, extra) in [
        ("examples,coverage,fuzzing", None),
        ("stateful", Some("response_schema_conformance")),
    ] {
        let har = work.path().join(format!("{phases}.har"));
        let mut cmd = Command::new(&st);
        cmd.arg("--config-file")
            .arg(&toml)
            .arg("run")
            .arg(format!("http://127.0.0.1:{port}/v1/openapi.json"))
            .args(["-H", &format!("Authorization: Bearer {KEY_READ}")])
            .args(["--checks", "all", "--phases", phases])
            .args(["--max-examples", "40", "--seed", "1", "-w", "1"])
            .args(["--request-timeout", "30", "--no-color", "--report", "har"])
            // Hypothesis's health checks judge the generator, not the
            // server, and "too slow" trips on a busy machine.
            .args([
                "--suppress-health-check",
                "all",
                "--generation-database",
                "none",
            ])
            .arg("--report-har-path")
            .arg(&har)
            .current_dir(work.path());
        if let Some(check) = extra {
            cmd.args(["--exclude-checks", check]);
        }
        let out = cmd.output().expect("run schemathesis");
        let report: Value =
            serde_json::from_slice(&std::fs::read(&har).unwrap_or_default()).unwrap_or(Value::Null);
        let got: Vec<u64> = report["log"]["entries"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|x| x["response"]["status"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        eprintln!("schemathesis {phases}: {} requests", got.len());
        statuses.extend(got);
        assert!(out.status.success(), "{phases}: {}", text(&out));
    }
    let ok = statuses.iter().filter(|s| (200..300).contains(*s)).count();
    let partial = statuses.iter().filter(|s| **s == 206).count();
    let server_errors = statuses.iter().filter(|s| **s >= 500).count();
    eprintln!(
        "schemathesis: {} requests, {ok} answered 2xx ({partial} of them 206), {server_errors} 5xx",
        statuses.len()
    );
    assert!(statuses.len() >= 300, "{} requests", statuses.len());
    assert_eq!(server_errors, 0);
    assert!(ok >= 50, "{ok} of {} answered 2xx", statuses.len());
    // The server still serves.
    assert_eq!(
        call(port, "GET", "/v1/calls/2026-11-23_c-1", Some(KEY_READ), &[]).code,
        200
    );
}

/// A derived MP4 never rendered: the API's first GET starts the render and
/// streams it with the reserved size as its length; the bytes equal what
/// SFTP then reads from the stored render, and a range of it equals the
/// same bytes; the call's index then says it was rendered, with its hash.
/// Prometheus-format metrics count the API's requests by route and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_streams_a_derived_mp4_on_its_first_read_with_the_reserved_size() {
    let prefix = unique_prefix("api-mp4");
    let config = format!(
        "{}{}\n{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        crate::media::media_config(&prefix),
        key_toml("crm", KEY_READ, &["calls:read", "media:read"]),
        api_toml("mp4"),
    );
    let server = Server::start(&config);
    let work = tempfile::tempdir().unwrap();
    let id = "call-api";
    crate::media::push_session(
        &server,
        &crate::media::mp4_session_until(work.path(), id, "2026-11-23T10:00:06Z"),
    );
    let port = server.api_port;
    let call_id = format!("2026-11-23_{id}");
    let detail = call(
        port,
        "GET",
        &format!("/v1/calls/{call_id}"),
        Some(KEY_READ),
        &[],
    );
    assert_eq!(
        detail.code,
        200,
        "{}",
        String::from_utf8_lossy(&detail.body)
    );
    let mp4_entry = |d: &Value| {
        d["media"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == format!("{id}.mp4"))
            .cloned()
            .unwrap_or_else(|| panic!("no mp4 in {d}"))
    };
    let before = mp4_entry(&detail.json());
    assert_eq!(before["derived"], true);
    assert_eq!(before["rendered"], false);
    assert!(detail.json()["streams"].as_object().unwrap().len() >= 3);
    let reserved = before["size"].as_u64().unwrap();
    let media = format!("/v1/calls/{call_id}/media/{id}.mp4");
    let head = call(port, "HEAD", &media, Some(KEY_READ), &[]);
    assert_eq!(
        head.header("content-length"),
        Some(reserved.to_string().as_str())
    );
    assert_eq!(head.header("content-type"), Some("video/mp4"));
    assert!(!server.log_shows("render started"), "HEAD renders nothing");
    let first = call(port, "GET", &media, Some(KEY_READ), &[]);
    assert_eq!(first.code, 200);
    assert_eq!(first.body.len() as u64, reserved);
    assert_eq!(server.log().matches("render started").count(), 1);
    let sftp = crate::media::get_mp4(&server, work.path(), &format!("/2026/11/23/{id}"), id);
    assert_eq!(
        sftp, first.body,
        "the API's streamed render = the stored render"
    );
    let (a, b) = (reserved as usize / 3, reserved as usize / 3 + 65_535);
    let part = call(
        port,
        "GET",
        &media,
        Some(KEY_READ),
        &["-H", &format!("Range: bytes={a}-{b}")],
    );
    assert_eq!(part.code, 206);
    assert_eq!(part.body, &sftp[a..=b]);
    assert_eq!(
        server.log().matches("render started").count(),
        1,
        "rendered once"
    );
    let after = call(
        port,
        "GET",
        &format!("/v1/calls/{call_id}"),
        Some(KEY_READ),
        &[],
    );
    let after = mp4_entry(&after.json());
    assert_eq!(after["rendered"], true);
    assert_eq!(after["sha256"], sha256(&sftp));
    // The API's requests in /metrics, by route pattern and status.
    let metrics = Command::new("curl")
        .args([
            "-sS",
            &format!("http://127.0.0.1:{}/metrics", server.admin_port),
        ])
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&metrics.stdout);
    for line in [
        "recvault_api_requests_total{route=\"/v1/calls/{id}/media/{name}\",status=\"206\"} 1",
        "recvault_api_requests_total{route=\"/v1/calls/{id}\",status=\"200\"} 2",
        "recvault_served_bytes_total{protocol=\"api\"}",
    ] {
        assert!(page.contains(line), "{line} not in:\n{page}");
    }
}

/// A webhook receiver (Python's http.server) that checks each delivery's
/// signature with the README's snippet and records it; answers 503 while
/// `<dir>/down` exists.
const RECEIVER: &str = r#"
import hashlib, hmac, http.server, json, os, sys, time
port, secret, out = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
down = os.path.join(os.path.dirname(out), "down")

def verify(secret, timestamp, body, signature):
    # The README's verification: HMAC-SHA256 over "<timestamp>.<body>",
    # compared in constant time; reject old timestamps (replays).
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest("v1=" + mac, signature)

class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if os.path.exists(down):
            self.send_response(503); self.end_headers(); return
        ok = verify(secret, self.headers["X-Recvault-Timestamp"], body, self.headers["X-Recvault-Signature"])
        event = json.loads(body)
        with open(out, "a") as f:
            f.write(json.dumps({"id": event["id"], "header_id": self.headers["X-Recvault-Event-Id"],
                                "type": event["type"], "call": event["call"]["id"], "sig_ok": ok}) + "\n")
        self.send_response(200 if ok else 400); self.end_headers()
    def log_message(self, *a): pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// A running [`RECEIVER`]: the `[[tenants.webhooks]]` lines that point a
/// tenant at it, and the file of what it received (one JSON line per
/// POST). Answers 503 while [`Self::set_down`]; killed when dropped.
pub struct Receiver {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pub received: std::path::PathBuf,
    pub webhook_toml: String,
}

impl Receiver {
    /// Starts one with its files under `work`.
    pub fn start(work: &std::path::Path) -> Receiver {
        let dir = work.join("hook");
        std::fs::create_dir_all(&dir).unwrap();
        let received = dir.join("received.jsonl");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let secret = "whsec-0123456789abcdef";
        let secret_file = work.join("hook.secret");
        recvault::secret::write_secret_file(&secret_file, secret.as_bytes()).unwrap();
        let child = Command::new(std::env::var("MOTO_PYTHON").unwrap_or("python3".into()))
            .args(["-c", RECEIVER, &port.to_string(), secret])
            .arg(&received)
            .spawn()
            .unwrap();
        Receiver {
            child,
            dir,
            received,
            webhook_toml: format!(
                "\n[[tenants.webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_file = \"{}\"\n",
                secret_file.display()
            ),
        }
    }

    pub fn set_down(&self, down: bool) {
        let flag = self.dir.join("down");
        if down {
            std::fs::write(flag, b"").unwrap();
        } else {
            std::fs::remove_file(flag).unwrap();
        }
    }

    /// What arrived so far, waiting up to `limit` for `n` deliveries.
    pub fn wait_for(&self, n: usize, limit: std::time::Duration) -> Vec<Value> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let lines: Vec<Value> = std::fs::read_to_string(&self.received)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= n || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Webhooks arrive signed, survive a receiver outage and a SIGKILL of
/// recvault (the outbox is on disk), each event delivered once; the event
/// log (`GET /v1/events`) lists the same events from storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_webhooks_survive_a_receiver_outage_and_a_restart_and_the_event_log_agrees() {
    let prefix = unique_prefix("api-hooks");
    let work = tempfile::tempdir().unwrap();
    let hook = Receiver::start(work.path());
    hook.set_down(true);
    let received = hook.received.clone();
    let outbox = work.path().join("outbox");
    let config = format!(
        "{}{}{}{}\noutbox_dir = \"{}\"\n",
        crate::media::media_config(&prefix),
        key_toml(
            "ops",
            KEY_ERASE,
            &["calls:read", "media:read", "calls:erase"]
        ),
        hook.webhook_toml,
        api_toml("hooks"),
        outbox.display(),
    );
    let server = Server::start(&config);
    let id = "call-hook";
    crate::media::push_session(
        &server,
        &crate::media::mp4_session_until(work.path(), id, "2026-11-23T10:00:04Z"),
    );
    let api = server.api_port;
    let call_id = format!("2026-11-23_{id}");
    // A render and an erase: three events in all.
    let mp3 = call(
        api,
        "GET",
        &format!("/v1/calls/{call_id}/media/{id}.mp3"),
        Some(KEY_ERASE),
        &[],
    );
    assert_eq!(mp3.code, 200);
    let erased = call(
        api,
        "DELETE",
        &format!("/v1/calls/{call_id}"),
        Some(KEY_ERASE),
        &[],
    );
    assert_eq!(erased.code, 200);
    // The event log has them (from storage), oldest first, whatever the
    // receiver does.
    let wanted = ["call.archived", "render.completed", "call.erased"];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let logged = loop {
        let page = call(api, "GET", "/v1/events", Some(KEY_ERASE), &[]);
        assert_eq!(page.code, 200, "{}", String::from_utf8_lossy(&page.body));
        let types: Vec<String> = page.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect();
        if types.len() >= 3 || std::time::Instant::now() > deadline {
            break page.json();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let events = logged["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, wanted, "{logged}");
    assert!(events.iter().all(|e| e["call_id"] == call_id.as_str()));
    assert_eq!(events[1]["name"], format!("{id}.mp3"));
    // Paging with after (a position; next_after is the last one's).
    assert_eq!(logged["next_after"], events[2]["position"]);
    let after = events[0]["position"].as_str().unwrap();
    let rest = call(
        api,
        "GET",
        &format!("/v1/events?after={after}"),
        Some(KEY_ERASE),
        &[],
    );
    assert_eq!(rest.json()["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(
            api,
            "GET",
            "/v1/events?after=nonsense",
            Some(KEY_ERASE),
            &[]
        )
        .code,
        400
    );
    // Nothing reached the receiver yet (it answers 503), and the outbox
    // holds the deliveries; then recvault dies hard.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!received.exists() || std::fs::read_to_string(&received).unwrap().is_empty());
    assert!(
        std::fs::read_dir(&outbox).unwrap().count() >= 3,
        "records in the outbox"
    );
    let dir = server.kill9();
    hook.set_down(false);
    let server = Server::start_in(dir, &format!("{}\n{config}", s3().storage_toml()));
    // Delivered after the restart, each event once, signed.
    let got = hook.wait_for(3, std::time::Duration::from_secs(120));
    let mut got_types: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    got_types.sort();
    let mut want_sorted = wanted.to_vec();
    want_sorted.sort();
    assert_eq!(got_types, want_sorted, "{got:?}\n{}", server.log());
    for e in &got {
        assert_eq!(e["sig_ok"], true, "{e}");
        assert_eq!(e["id"], e["header_id"]);
        assert_eq!(e["call"], call_id.as_str());
    }
    let mut ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "each event once");
    let logged_ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, logged_ids, "the same events as the log");
    // Delivered: the outbox is empty again, and stays so.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let left = std::fs::read_dir(&outbox)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(left, 0);
    assert_eq!(
        std::fs::read_to_string(&received).unwrap().lines().count(),
        3
    );
}

/// Over TLS: curl verifies the certificate and gets the same answers; a
/// link made over HTTPS is an https:// URL that works; a client speaking
/// plain HTTP to the TLS port gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_over_tls_serves_the_same_answers_and_https_links() {
    let prefix = unique_prefix("api-tls");
    let data = pseudo_random(10_000, 1);
    seed_one(&prefix, data.clone()).await;
    let (cert, key) = ftps_cert();
    let config = config(&prefix, "").replace(
        "\n[api]\n",
        &format!(
            "\n[api]\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let server = Server::start(&config);
    let port = server.api_port;
    let https = |path: &str, extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "30", "--cacert"])
            .arg(cert)
            .args(["-H", &format!("Authorization: Bearer {KEY_READ}")])
            .args(extra)
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .unwrap()
    };
    let got = https("/v1/calls/2026-11-23_c-1/media/c-1.tar.gz", &[]);
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(got.stdout, data);
    let link = https(
        "/v1/calls/2026-11-23_c-1/media/c-1.tar.gz/links",
        &["--data", "{}"],
    );
    assert!(link.status.success(), "{}", text(&link));
    let url = serde_json::from_slice::<Value>(&link.stdout).unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{port}/v1/links/")),
        "{url}"
    );
    let by_link = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(cert)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(by_link.stdout, data, "{}", text(&by_link));
    // Plain HTTP to the TLS listener: no answer with data.
    let plain = call(port, "GET", "/v1/calls/2026-11-23_c-1", Some(KEY_READ), &[]);
    assert_ne!(plain.code, 200);
}

/// A self-signed pair for localhost and 127.0.0.1 in `dir` (cert, key).
fn self_signed(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    recvault::tls::ensure_self_signed(&cert, &key, &["localhost", "127.0.0.1"]).unwrap();
    (cert, key)
}

/// The SHA-256 fingerprint of the certificate a TLS listener serves
/// (`starttls`: `ftp` for explicit FTPS), or of a PEM file.
fn served_fingerprint(port: u16, starttls: Option<&str>) -> String {
    let starttls = starttls.map_or(String::new(), |p| format!("-starttls {p}"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost {starttls} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn file_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A configuration with TLS on ingest, the API and FTPS (explicit and
/// implicit), all from the pair `live` (cert, key).
fn tls_everywhere(
    prefix: &str,
    dir: &Path,
    live: &(std::path::PathBuf, std::path::PathBuf),
) -> String {
    let (cert, key) = (live.0.display(), live.1.display());
    config(prefix, "").replace(
        "\n[api]\n",
        &format!("\n[api]\ntls_certificate = \"{cert}\"\ntls_private_key = \"{key}\"\n"),
    ) + &format!(
        "\n[ingest]\nlisten = \"127.0.0.1:0\"\nspool_dir = \"{}\"\ntls_certificate = \"{cert}\"\ntls_private_key = \"{key}\"\n\n{}",
        dir.join("spool").display(),
        ftps_toml_with(&live.0, &live.1, "")
    )
}

/// A renewed certificate (certbot's deploy hook, say) is picked up by every
/// TLS listener on SIGHUP without a restart, and a broken renewal keeps the
/// running certificate; fails if a listener keeps its first certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_ingest_the_api_and_ftps() {
    let prefix = unique_prefix("api-tls-reload");
    seed_one(&prefix, pseudo_random(1000, 9)).await;
    let work = tempfile::tempdir().unwrap();
    let old = self_signed(work.path(), "old");
    let new = self_signed(work.path(), "new");
    let live = (work.path().join("live.crt"), work.path().join("live.key"));
    std::fs::copy(&old.0, &live.0).unwrap();
    std::fs::copy(&old.1, &live.1).unwrap();
    let server = Server::start(&tls_everywhere(&prefix, work.path(), &live));
    let listeners = [
        ("ingest", server.ingest_port, None),
        ("api", server.api_port, None),
        ("ftps", server.ftps_port, Some("ftp")),
        ("ftps-implicit", server.ftps_implicit_port, None),
    ];
    let (old_fp, new_fp) = (file_fingerprint(&old.0), file_fingerprint(&new.0));
    assert_ne!(old_fp, new_fp);
    for (what, port, starttls) in listeners {
        assert_eq!(
            served_fingerprint(port, starttls),
            old_fp,
            "{what} at start"
        );
    }

    // SIGHUP, then wait for `logged`; every listener serves `fp` after.
    let hup = |logged: &str, fp: &str, when: &str| {
        server.signal("HUP");
        let seen = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            server.log_shows(logged)
        });
        assert!(seen, "{}", server.log());
        for (what, port, starttls) in listeners {
            assert_eq!(served_fingerprint(port, starttls), fp, "{what} {when}");
        }
    };
    std::fs::copy(&new.0, &live.0).unwrap();
    std::fs::copy(&new.1, &live.1).unwrap();
    hup("reloaded the API TLS certificate", &new_fp, "after SIGHUP");
    // The API still answers over the renewed certificate.
    let ok = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "30", "--cacert"])
        .arg(&new.0)
        .args(["-H", &format!("Authorization: Bearer {KEY_READ}")])
        .arg(format!(
            "https://127.0.0.1:{}/v1/calls/2026-11-23_c-1",
            server.api_port
        ))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok));

    // A broken renewal: refused with the reason; the running pair stays.
    std::fs::write(&live.0, "not a certificate\n").unwrap();
    hup(
        "API TLS certificate not reloaded",
        &new_fp,
        "after a broken renewal",
    );
}

/// The API speaks HTTP/2 (ALPN h2 over TLS, prior knowledge in clear
/// text) with the same answers, Range included, and several downloads
/// multiplexed on one connection; ingest stays HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_http2_with_ranges_and_ingest_stays_http1() {
    let prefix = unique_prefix("api-h2");
    let data = pseudo_random(300_000, 3);
    seed_one(&prefix, data.clone()).await;
    let work = tempfile::tempdir().unwrap();
    let pair = self_signed(work.path(), "h2");
    let server = Server::start(&tls_everywhere(&prefix, work.path(), &pair));
    let media = "/v1/calls/2026-11-23_c-1/media/c-1.tar.gz";
    let curl = |url: String, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60", "--cacert"])
            .arg(&pair.0)
            .args(["-H", &format!("Authorization: Bearer {KEY_READ}")])
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        out.stdout
    };
    let api = format!("https://127.0.0.1:{}", server.api_port);
    // One connection, the whole file, a range and the call's index:
    // `-w` prints each transfer's HTTP version and status.
    let dir = work.path().join("got");
    std::fs::create_dir(&dir).unwrap();
    let (whole, part) = (dir.join("whole"), dir.join("part"));
    let out = curl(
        format!("{api}{media}"),
        &[
            "--http2",
            "-w",
            "%{http_version} %{http_code} %{num_connects}\\n",
            "-o",
            whole.to_str().unwrap(),
            &format!("{api}{media}"),
            "--next",
            "--http2",
            "--cacert",
            pair.0.to_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {KEY_READ}"),
            "-H",
            "Range: bytes=1000-1999",
            "-w",
            "%{http_version} %{http_code} %{num_connects}\\n",
            "-o",
            part.to_str().unwrap(),
        ],
    );
    let lines = String::from_utf8_lossy(&out).to_string();
    assert_eq!(
        lines, "2 200 1\n2 206 0\n",
        "second transfer reuses the connection"
    );
    assert_eq!(std::fs::read(&whole).unwrap(), data);
    assert_eq!(std::fs::read(&part).unwrap(), data[1000..2000]);

    // Multiplexed: eight downloads at once over one HTTP/2 connection.
    let mut args: Vec<String> = vec![
        "--http2".into(),
        "--parallel".into(),
        "--parallel-immediate".into(),
    ];
    args.extend(["-w".into(), "%{http_version} %{http_code}\\n".into()]);
    for i in 0..8 {
        args.extend(["-o".into(), dir.join(format!("p{i}")).display().to_string()]);
        args.push(format!("{api}{media}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (url, rest) = refs.split_last().unwrap();
    let out = curl(url.to_string(), rest);
    assert_eq!(String::from_utf8_lossy(&out).matches("2 200\n").count(), 8);
    for i in 0..8 {
        assert_eq!(
            std::fs::read(dir.join(format!("p{i}"))).unwrap(),
            data,
            "download {i}"
        );
    }

    // Ingest offers no h2: curl falls back to HTTP/1.1.
    let out = curl(
        format!("https://127.0.0.1:{}/healthz", server.ingest_port),
        &[
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out), "1.1 200");
}

/// An HTTP/2 connection (clear text, prior knowledge) gets its answer and
/// is closed once nothing has been in flight for `idle_timeout_secs`, as
/// an idle HTTP/1.1 one is: an idle client cannot hold a connection slot
/// for ever (hyper's HTTP/2 server has no idle limit of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let prefix = unique_prefix("api-h2-idle");
    seed_one(&prefix, pseudo_random(1000, 5)).await;
    let server = Server::start(&config(&prefix, "[limits]\nidle_timeout_secs = 2\n"));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.api_port))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!(
        "http://127.0.0.1:{}/v1/calls/2026-11-23_c-1",
        server.api_port
    ))
    .header("authorization", format!("Bearer {KEY_READ}"))
    .body(http_body_util::Empty::<bytes::Bytes>::new())
    .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["id"],
        "2026-11-23_c-1"
    );
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
    assert!(
        matches!(closed, Ok(Ok(Ok(())))),
        "the idle HTTP/2 connection was not closed cleanly: {closed:?}"
    );
}

/// The web page's login over plain HTTP: the session cookie stands in for
/// a key (as the user, with its permissions), dies at logout even when
/// replayed, needs its CSRF token to log out; a login must be JSON (a
/// cross-site form cannot log a victim in); and guessing passwords earns
/// the address a ban like SFTP's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_login_brute_force_earns_a_ban_and_a_replayed_cookie_dies_at_logout() {
    let prefix = unique_prefix("web-login");
    seed_one(&prefix, pseudo_random(5000, 4)).await;
    let server = Server::start(&config(
        &prefix,
        "[limits]\nban_after_failures = 3\nban_secs = 300\n",
    ));
    let port = server.api_port;
    let json = ["-H", "Content-Type: application/json", "--data"];
    let login = |user: &str, pw: &str| {
        let body = serde_json::json!({"user": user, "password": pw}).to_string();
        call(
            port,
            "POST",
            "/session",
            None,
            &[json[0], json[1], json[2], &body],
        )
    };
    let ok = login("qa", crate::ftps::PW);
    assert_eq!(ok.code, 200, "{}", String::from_utf8_lossy(&ok.body));
    let set = ok.header("set-cookie").unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "no TLS here: {set}");
    let cookie = format!("Cookie: {}", set.split(';').next().unwrap());
    let csrf = ok.json()["csrf"].as_str().unwrap().to_string();
    let with = |method: &str, path: &str, extra: &[&str]| {
        let mut args = vec!["-H", cookie.as_str()];
        args.extend_from_slice(extra);
        call(port, method, path, None, &args)
    };
    assert_eq!(with("GET", "/v1/calls/2026-11-23_c-1", &[]).code, 200);
    assert_eq!(with("GET", "/session", &[]).json()["user"], "qa");
    // A forged cookie is nobody.
    let forged = call(
        port,
        "GET",
        "/v1/calls/2026-11-23_c-1",
        None,
        &["-H", "Cookie: rv_session=AAAA"],
    );
    assert_eq!(forged.code, 401);
    // The page's user makes a signed link (with the CSRF token) that
    // works without the cookie.
    let token = format!("X-CSRF-Token: {csrf}");
    let links = "/v1/calls/2026-11-23_c-1/media/c-1.tar.gz/links";
    let body = ["-H", "Content-Type: application/json", "--data", "{}"];
    assert_eq!(with("POST", links, &body).code, 403, "no CSRF token");
    let mut args = vec!["-H", token.as_str()];
    args.extend_from_slice(&body);
    let made = with("POST", links, &args);
    assert_eq!(made.code, 201, "{}", String::from_utf8_lossy(&made.body));
    let url = made.json()["url"].as_str().unwrap().to_string();
    let path = url
        .split_once(&format!("127.0.0.1:{port}"))
        .unwrap()
        .1
        .to_string();
    let got = call(port, "GET", &path, None, &[]);
    assert_eq!(
        (got.code, got.body.len()),
        (200, 5000),
        "the user's link serves the file"
    );
    // Logout needs the CSRF token; afterwards the same cookie is refused.
    assert_eq!(with("DELETE", "/session", &[]).code, 403);
    assert_eq!(with("DELETE", "/session", &["-H", &token]).code, 200);
    assert_eq!(
        with("GET", "/v1/calls/2026-11-23_c-1", &[]).code,
        401,
        "replayed after logout"
    );
    // A login that is not JSON (what a cross-site form sends) is refused.
    let form = call(
        port,
        "POST",
        "/session",
        None,
        &["--data", "user=qa&password=x"],
    );
    assert_eq!(form.code, 400);
    // Three wrong passwords: banned, even with the right one, and for keys too.
    for _ in 0..3 {
        let bad = login("qa", "guess");
        assert_eq!(bad.code, 401);
        assert_eq!(bad.json()["error"], "wrong user name or password");
    }
    // Banned: the connection is dropped, for the right password and keys too.
    assert_eq!(login("qa", crate::ftps::PW).code, 0, "banned");
    assert_eq!(call(port, "GET", "/v1/calls", Some(KEY_READ), &[]).code, 0);
    assert!(server.log_shows("address banned"), "{}", server.log());
    let audit = server.audit();
    let failed = audit
        .lines()
        .filter(|l| l.contains("\"protocol\":\"web\"") && l.contains("\"ok\":false"))
        .count();
    assert!(failed >= 3, "{audit}");
}
