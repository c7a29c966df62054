//! Customer-owned storage: tenants on storage profiles of their own (another
//! AWS account: a second moto process, account 222233334444), static keys
//! from files, a role assumed with its external id, `expected_bucket_owner`
//! on every request, and isolation (one tenant's bucket black-holed holds
//! up no other tenant). moto ignores `x-amz-expected-bucket-owner` and
//! checks no trust policy, so the fault proxy in front of the customer's
//! moto enforces both, and these tests fail when recvault omits either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use recvault::ingest::spool::ALLOWED;

use crate::faults::{Fault, FaultProxy, Rule};
use crate::harness::*;
use crate::ingest::{complete, make_session, put_file, wait_status};

const CUSTOMER_ACCOUNT: &str = "222233334444";
const TOKEN_OPS: &str = "token-for-ops-0123456789abcdef00";
const TOKEN_ACME: &str = "token-for-acme-0123456789abcdef0";
const TOKEN_WRONGID: &str = "token-wrongid-0123456789abcdef00";

/// The customer's moto behind a proxy that refuses S3 requests to bucket
/// `customer` without the customer's account as expected owner, and
/// AssumeRole calls without the role's external id.
fn customer_proxy() -> (&'static S3, FaultProxy) {
    let cust = s3_customer();
    assert_eq!(
        cust.account, CUSTOMER_ACCOUNT,
        "moto runs as the customer's account"
    );
    let proxy = FaultProxy::start(&cust.endpoint);
    enforce(&proxy);
    (cust, proxy)
}

fn enforce(proxy: &FaultProxy) {
    proxy.inject(Rule::new(
        None,
        "/customer",
        Fault::RequireHeader("x-amz-expected-bucket-owner", CUSTOMER_ACCOUNT.into()),
    ));
    proxy.inject(Rule::new(
        Some("POST"),
        "",
        Fault::RequireForm("ExternalId", CUSTOMER_EXTERNAL_ID.into()),
    ));
}

/// The customer user's keys as secret files (mode 0600) in `dir`.
fn key_files(dir: &Path, s3: &S3) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let write = |name: &str, value: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    (
        write("customer.access", &s3.access_key),
        write("customer.secret", &s3.secret_key),
    )
}

/// S3 settings of the customer's bucket through `proxy` (no section header).
fn customer_keys(proxy: &FaultProxy, keys: &(PathBuf, PathBuf), owner: &str) -> String {
    format!(
        "backend = \"s3\"\nbucket = \"customer\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\naccess_key_file = \"{}\"\nsecret_key_file = \"{}\"\nexpected_bucket_owner = \"{owner}\"\n",
        proxy.endpoint,
        keys.0.display(),
        keys.1.display()
    )
}

fn tenant(id: &str, prefix: &str, token: &str, storage: &str) -> String {
    format!(
        "\n[[tenants]]\nid = \"{id}\"\nprefix = \"{prefix}{id}/\"\ningest_tokens = [\"sha256:{}\"]\n{storage}\n\n[[tenants.users]]\nname = \"qa-{id}\"\nauthorized_keys = [\"{}\"]\n",
        recvault::ingest::token_hash(token),
        client_key("qa").public
    )
}

/// Waits up to `limit` for session `id` to be archived, and fails the
/// test (saying `what`) when it is not.
fn assert_archived(server: &Server, id: &str, token: &str, limit: Duration, what: &str) {
    let body = wait_status(server, id, token, "archived", limit);
    assert!(
        body.contains("\"status\":\"archived\""),
        "{what}: {id}: {body}\n{}",
        server.log()
    );
}

/// Pushes a session over ingest (PUT every file, complete): 202 = durable in the spool.
fn push_session(server: &Server, work: &Path, id: &str, token: &str, seed: u8) -> PathBuf {
    let dir = make_session(work, id, seed, 80);
    for name in ALLOWED {
        let (code, body) = put_file(server, id, name, token, &dir.join(name));
        assert_eq!(code, 201, "{id} {name}: {body}");
    }
    let (code, body) = complete(server, id, token);
    assert_eq!(code, 202, "{id}: {body}");
    dir
}

fn listing(server: &Server, user: &str, work: &Path) -> (bool, String) {
    let out = sftp_batch(
        server.port,
        user,
        client_key("qa"),
        "ls -1 /2026/11/23\n",
        work,
    );
    (out.status.success(), text(&out))
}

/// The access key a request was signed with (`Credential=<key>/…`).
fn signer(headers: &hyper::HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// Tenant "ops" on the operator's `[storage]` and tenant "acme" on profile
/// "eu" (the customer's account, its keys from files): each is archived
/// into its own bucket and sees only its own calls; every request to the
/// customer's bucket names its owner and is signed with the customer's
/// key, never the operator's; and while the customer's bucket is a black
/// hole, ops keeps listing, downloading and archiving (the archiver's one
/// worker is not held by acme's retries) while acme's session waits in the
/// spool, archived once its bucket answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_on_two_accounts_see_only_their_own_calls_and_a_black_holed_bucket_holds_up_no_other_tenant(
) {
    let (cust, proxy) = customer_proxy();
    let work = tempfile::tempdir().unwrap();
    let keys = key_files(work.path(), cust);
    let prefix = unique_prefix("customer-two-accounts");
    let config = format!(
        "{}\n[[storages]]\nname = \"eu\"\n{}\n[limits]\narchive_concurrency = 1\nstorage_timeout_secs = 4\nstorage_attempt_secs = 2\nstorage_attempts = 1\n{}{}{}",
        s3().storage_toml(),
        customer_keys(&proxy, &keys, CUSTOMER_ACCOUNT),
        tenant("ops", &prefix, TOKEN_OPS, ""),
        crate::admin::ADMIN,
        tenant("acme", &prefix, TOKEN_ACME, "storage = \"eu\""),
    );
    let server = Server::start_with(&config);
    push_session(&server, work.path(), "call-ops-1", TOKEN_OPS, 1);
    push_session(&server, work.path(), "call-acme-1", TOKEN_ACME, 2);
    for (id, token) in [("call-ops-1", TOKEN_OPS), ("call-acme-1", TOKEN_ACME)] {
        assert_archived(
            &server,
            id,
            token,
            Duration::from_secs(90),
            "each into its own bucket",
        );
    }
    // Each bucket holds its own tenant's objects and nothing of the other's.
    let (operator, customer) = (s3().store().await, cust.store().await);
    let keys_under = |store: std::sync::Arc<dyn recvault::store::ObjectStore>, p: String| async move {
        let (mut keys, mut next) = (Vec::new(), None);
        loop {
            let page = store.list_page(&p, None, next).await.expect("list");
            keys.extend(page.objects.into_iter().map(|o| o.key));
            next = page.next;
            if next.is_none() {
                return keys;
            }
        }
    };
    let acme_in_customer = keys_under(customer.clone(), format!("{prefix}acme/")).await;
    assert!(
        acme_in_customer
            .iter()
            .any(|k| k.ends_with("call-acme-1/call-acme-1.tar.gz")),
        "{acme_in_customer:?}"
    );
    assert!(keys_under(operator.clone(), format!("{prefix}acme/"))
        .await
        .is_empty());
    assert!(keys_under(customer, format!("{prefix}ops/"))
        .await
        .is_empty());
    let (ok, ops) = listing(&server, "qa-ops", work.path());
    assert!(
        ok && ops.contains("call-ops-1") && !ops.contains("call-acme-1"),
        "{ops}"
    );
    let (ok, acme) = listing(&server, "qa-acme", work.path());
    assert!(
        ok && acme.contains("call-acme-1") && !acme.contains("call-ops-1"),
        "{acme}"
    );

    let seen = proxy.seen();
    let to_bucket: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/customer"))
        .collect();
    assert!(!to_bucket.is_empty());
    for s in &to_bucket {
        assert_eq!(
            s.headers
                .get("x-amz-expected-bucket-owner")
                .map(|v| v.to_str().unwrap()),
            Some(CUSTOMER_ACCOUNT),
            "{} {} without the expected owner",
            s.method,
            s.path
        );
        assert_eq!(
            signer(&s.headers),
            cust.access_key,
            "{} {}",
            s.method,
            s.path
        );
        assert!(s.fault.is_none(), "{} {} refused", s.method, s.path);
    }

    // The customer's bucket stops answering.
    proxy.clear();
    proxy.inject(Rule::new(None, "/customer", Fault::BlackHole));
    push_session(&server, work.path(), "call-acme-2", TOKEN_ACME, 3);
    // Give acme's session the one archiving worker first.
    std::thread::sleep(Duration::from_millis(500));
    push_session(&server, work.path(), "call-ops-2", TOKEN_OPS, 4);
    assert_archived(
        &server,
        "call-ops-2",
        TOKEN_OPS,
        Duration::from_secs(60),
        "ops archives while acme's bucket is a black hole",
    );
    let get = sftp_batch(
        server.port,
        "qa-ops",
        client_key("qa"),
        "get /2026/11/23/call-ops-2/call-ops-2.tar.gz ops2.tgz\n",
        work.path(),
    );
    assert!(get.status.success(), "{}", text(&get));
    // The node stays ready: every node reaches acme's bucket alike, and a
    // balancer taking them out would stop ops too. /readyz says why acme fails.
    let (code, ready) = crate::admin::get(server.admin_port, "/readyz");
    assert_eq!(code, 200, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["tenants"]["ops"]["storage"], "ok", "{ready}");
    assert_eq!(ready["tenants"]["acme"]["own_storage"], true, "{ready}");
    assert_ne!(ready["tenants"]["acme"]["storage"], "ok", "{ready}");
    let body = wait_status(
        &server,
        "call-acme-2",
        TOKEN_ACME,
        "archived",
        Duration::ZERO,
    );
    assert!(
        body.contains("\"status\":\"queued\"") || body.contains("\"status\":\"archiving\""),
        "acme's session waits while its bucket is down: {body}"
    );

    proxy.clear();
    enforce(&proxy);
    assert_archived(
        &server,
        "call-acme-2",
        TOKEN_ACME,
        Duration::from_secs(120),
        "archived once the bucket answers",
    );
    let (ok, acme) = listing(&server, "qa-acme", work.path());
    assert!(ok && acme.contains("call-acme-2"), "{acme}");
}

/// A tenant whose `[tenants.storage]` assumes a role in the customer's
/// account: recvault sends AssumeRole with the role and its external id
/// (seen at the customer's endpoint; without the id the proxy refuses it,
/// as the trust policy would), and S3 requests are signed with the
/// role's temporary key, not the key files' long-lived one. A tenant
/// with the wrong external id and one expecting another bucket owner
/// fail loudly at start, each named with its storage; the one expecting
/// another owner cannot list, and the one with the wrong external id (a
/// delivery tenant) has its call archived into the operator's bucket and
/// its delivery failing with a reason and a log line that name the role;
/// the other tenants carry on. `check-config` reports every tenant's
/// storage on a line of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_is_assumed_with_its_external_id_and_a_wrong_id_or_owner_fails_only_its_tenant() {
    let (cust, proxy) = customer_proxy();
    let work = tempfile::tempdir().unwrap();
    let keys = key_files(work.path(), cust);
    let role = cust
        .role_arn
        .clone()
        .expect("the customer's moto has a role");
    let prefix = unique_prefix("customer-role");
    let own = |external_id: &str, owner: &str| {
        format!(
            "[tenants.storage]\n{}role_arn = \"{role}\"\nexternal_id = \"{external_id}\"\nsts_endpoint = \"{}\"\n",
            customer_keys(&proxy, &keys, owner),
            proxy.endpoint
        )
    };
    let config = format!(
        "{}{}{}{}{}",
        s3().storage_toml(),
        tenant("ops", &prefix, TOKEN_OPS, ""),
        tenant(
            "acme",
            &prefix,
            TOKEN_ACME,
            &own(CUSTOMER_EXTERNAL_ID, CUSTOMER_ACCOUNT)
        ),
        tenant(
            "wrongid",
            &prefix,
            TOKEN_WRONGID,
            &format!(
                "delivery = \"customer\"\n{}",
                own("not-the-id", CUSTOMER_ACCOUNT)
            )
        ),
        tenant(
            "wrongowner",
            &prefix,
            "token-wrongowner-0123456789abcd",
            &own(CUSTOMER_EXTERNAL_ID, "999999999999")
        ),
    );
    let customer = cust.store().await;
    seed(
        customer.as_ref(),
        &format!("{prefix}acme/"),
        "call-role-1",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        pseudo_random(300_000, 7),
    )
    .await;
    let server = Server::start_with(&config);
    let (ok, acme) = listing(&server, "qa-acme", work.path());
    assert!(
        ok && acme.contains("call-role-1"),
        "{acme}\n{}",
        server.log()
    );
    let get = sftp_batch(
        server.port,
        "qa-acme",
        client_key("qa"),
        "get /2026/11/23/call-role-1/call-role-1.tar.gz role.tgz\n",
        work.path(),
    );
    assert!(get.status.success(), "{}", text(&get));
    assert_eq!(
        sha256_file(&work.path().join("role.tgz")),
        sha256(&pseudo_random(300_000, 7))
    );

    let seen = proxy.seen();
    let assumed: Vec<_> = seen
        .iter()
        .filter_map(|s| s.form.as_deref())
        .filter(|f| f.contains("Action=AssumeRole"))
        .map(|f| {
            form_urlencoded::parse(f.as_bytes())
                .into_owned()
                .collect::<std::collections::HashMap<String, String>>()
        })
        .collect();
    assert!(
        assumed
            .iter()
            .any(
                |f| f.get("ExternalId").map(String::as_str) == Some(CUSTOMER_EXTERNAL_ID)
                    && f.get("RoleArn") == Some(&role)
                    && f.get("RoleSessionName")
                        .is_some_and(|n| n.starts_with("recvault"))
            ),
        "AssumeRole with the role and its external id: {assumed:?}"
    );
    let acme_requests: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/customer") && s.path.contains("acme"))
        .collect();
    assert!(!acme_requests.is_empty());
    for s in &acme_requests {
        let key = signer(&s.headers);
        assert!(
            !key.is_empty() && key != cust.access_key && key != s3().access_key,
            "{} {} signed with {key:?}, not the role's temporary key",
            s.method,
            s.path
        );
    }

    // The two misconfigured tenants: loud at start, named with their storage.
    let mut logged = false;
    for _ in 0..200 {
        let log = server.log();
        let failed = |tenant: &str| {
            log.lines().any(|l| {
                l.contains("storage check failed") && l.contains(tenant) && l.contains(&role)
            })
        };
        if failed("wrongid") && failed("wrongowner") {
            logged = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(logged, "{}", server.log());
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("wrongowner") && l.contains("AccessDenied")),
        "{log}"
    );
    let (ok, out) = listing(&server, "qa-wrongowner", work.path());
    assert!(!ok, "qa-wrongowner cannot list: {out}");
    // wrongid is delivered to its own storage: its call is archived into
    // the operator's bucket, and its delivery fails naming the role.
    push_session(&server, work.path(), "call-wrongid-1", TOKEN_WRONGID, 9);
    let d = wait_delivery(
        &server,
        "call-wrongid-1",
        TOKEN_WRONGID,
        Duration::from_secs(90),
        |d| d["state"] == "delivery_failed",
    );
    assert_eq!(d["state"], "delivery_failed", "{d}\n{}", server.log());
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("AssumeRole"),
        "{d}"
    );
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("delivery failed")
            && l.contains("tenant=wrongid")
            && l.contains(&role)),
        "{log}"
    );
    let ops = sftp_batch(
        server.port,
        "qa-ops",
        client_key("qa"),
        "ls /\n",
        work.path(),
    );
    assert!(ops.status.success(), "{}", text(&ops));
    let (ok, acme) = listing(&server, "qa-acme", work.path());
    assert!(ok && acme.contains("call-role-1"), "{acme}");
    assert!(
        proxy
            .seen()
            .iter()
            .any(|s| matches!(s.fault, Some(Fault::RequireForm(..)))),
        "the wrong external id was refused by the trust policy"
    );

    let path = server.dir.path().join("check.toml");
    std::fs::write(&path, &config).unwrap();
    let out = recvault_command()
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("check-config");
    let report = text(&out);
    let line = |t: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("tenant {t}:")))
            .unwrap_or_else(|| panic!("no line for {t}: {report}"))
            .to_string()
    };
    assert!(
        line("ops").contains("storage profile \"default\" (bucket recordings) honours"),
        "{report}"
    );
    assert!(
        line("acme").contains(&format!(
            "its own storage (bucket customer, role {role}) honours"
        )),
        "{report}"
    );
    assert!(line("wrongid").contains("does not answer"), "{report}");
    assert!(line("wrongowner").contains("AccessDenied"), "{report}");
}

/// The ingest status's `delivery` object of an archived session.
fn delivery_of(server: &Server, id: &str, token: &str) -> serde_json::Value {
    let body = wait_status(server, id, token, "archived", Duration::ZERO);
    serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()["delivery"].clone()
}

/// Polls until `pred` holds of the session's delivery state (or `limit`).
fn wait_delivery(
    server: &Server,
    id: &str,
    token: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let d = delivery_of(server, id, token);
        if pred(&d) || start.elapsed() > limit {
            return d;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The session's objects the index names (key, size, SHA-256), read from
/// `store`'s copy of the index.
async fn indexed_objects(
    store: &dyn recvault::store::ObjectStore,
    index_key: &str,
) -> Vec<(String, u64, String)> {
    let bytes = recvault::store::read_all(store, index_key, 1 << 20)
        .await
        .expect("index");
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let folder = index_key.trim_end_matches("info.json");
    let mut out = Vec::new();
    for (name, d) in v["recvault"]["objects"].as_object().unwrap() {
        out.push((
            format!("{folder}{name}"),
            d["size"].as_u64().unwrap(),
            d["sha256"].as_str().unwrap().to_string(),
        ));
    }
    for (name, d) in v["recvault"]["derived"].as_object().unwrap() {
        if d["stored"] == true {
            out.push((
                format!("{folder}derived/{name}"),
                d["size"].as_u64().unwrap(),
                d["sha256"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// Every object of `objects` (key, size, SHA-256) is in `store` with those bytes.
async fn assert_identical(
    store: &dyn recvault::store::ObjectStore,
    objects: &[(String, u64, String)],
) {
    for (key, size, sha) in objects {
        let bytes = recvault::store::read_all(store, key, 1 << 30)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(
            (bytes.len() as u64, sha256(&bytes)),
            (*size, sha.clone()),
            "{key}"
        );
    }
}

/// Waits up to `limit` for the backup's copy of the index to go; fails the test when it stays.
async fn backup_goes(
    operator: &dyn recvault::store::ObjectStore,
    index_key: &str,
    limit: Duration,
    server: &Server,
) {
    let start = std::time::Instant::now();
    while operator.head(index_key).await.unwrap().is_some() && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        operator.head(index_key).await.unwrap().is_none(),
        "the backup stays:\n{}",
        server.log()
    );
}

fn delivery_config(
    proxy: &FaultProxy,
    keys: &(PathBuf, PathBuf),
    prefix: &str,
    hours: &str,
) -> String {
    format!(
        "{}\n[[storages]]\nname = \"eu\"\n{}{}",
        s3().storage_toml(),
        customer_keys(proxy, keys, CUSTOMER_ACCOUNT),
        tenant(
            "acme",
            prefix,
            TOKEN_ACME,
            &format!("storage = \"eu\"\ndelivery = \"customer\"\nbackup_hours = {hours}"),
        ),
    )
}

/// `delivery = "customer"`: a pushed call is archived into the operator's
/// bucket (the backup), then delivered to the customer's bucket, where
/// every object the index names is byte-identical to it; the operator's
/// copy is kept through the deliverer's next passes (one every 10 s) while
/// `backup_hours` (here 0.01 h, 36 s) have not passed since the verified
/// delivery, then deleted, audited with what was verified; SFTP serves the
/// call byte for byte before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_call_is_verified_in_the_customers_bucket_and_the_backup_goes_after_backup_hours(
) {
    let (cust, proxy) = customer_proxy();
    let work = tempfile::tempdir().unwrap();
    let keys = key_files(work.path(), cust);
    let prefix = unique_prefix("customer-delivery");
    let api_key = "key-delivery-0123456789abcdef0123456789ab";
    let hook = crate::api::Receiver::start(work.path());
    let server = Server::start_with(&format!(
        "{}{}{}outbox_dir = \"{}\"\n{}",
        delivery_config(&proxy, &keys, &prefix, "0.01"),
        hook.webhook_toml,
        crate::api::api_toml("customer-delivery"),
        work.path().join("outbox").display(),
        crate::api::key_toml("crm", api_key, &["calls:read"]),
    ));
    push_session(&server, work.path(), "call-del-1", TOKEN_ACME, 5);
    assert_archived(
        &server,
        "call-del-1",
        TOKEN_ACME,
        Duration::from_secs(90),
        "archived into the backup",
    );
    let get = |name: &str| {
        let out = sftp_batch(
            server.port,
            "qa-acme",
            client_key("qa"),
            &format!("get /2026/11/23/call-del-1/call-del-1.tar.gz {name}\n"),
            work.path(),
        );
        assert!(out.status.success(), "{}\n{}", text(&out), server.log());
        sha256_file(&work.path().join(name))
    };
    let first = get("first.tgz");
    let d = wait_delivery(
        &server,
        "call-del-1",
        TOKEN_ACME,
        Duration::from_secs(60),
        |d| d["state"] == "delivered",
    );
    assert_eq!(d["state"], "delivered", "{d}\n{}", server.log());

    let index_key = format!("{prefix}acme/sessions/2026/11/23/call-del-1/info.json");
    let (operator, customer) = (s3().store().await, cust.store().await);
    // Still in the backup: 36 s have not passed since the delivery.
    let objects = indexed_objects(operator.as_ref(), &index_key).await;
    assert!(
        objects.len() >= 2,
        "the archive and the party files: {objects:?}"
    );
    assert!(objects
        .iter()
        .any(|(k, _, _)| k.ends_with("call-del-1.tar.gz")));
    for (key, size, sha) in &objects {
        let bytes = recvault::store::read_all(customer.as_ref(), key, 1 << 30)
            .await
            .unwrap_or_else(|e| panic!("{key} in the customer's bucket: {e}"));
        assert_eq!(bytes.len() as u64, *size, "{key}");
        assert_eq!(&sha256(&bytes), sha, "{key}");
    }
    assert_eq!(
        recvault::store::read_all(customer.as_ref(), &index_key, 1 << 20)
            .await
            .unwrap(),
        recvault::store::read_all(operator.as_ref(), &index_key, 1 << 20)
            .await
            .unwrap(),
        "the index is delivered as it is"
    );
    assert_eq!(
        first,
        objects
            .iter()
            .find(|(k, _, _)| k.ends_with(".tar.gz"))
            .unwrap()
            .2
    );
    // Past at least one more pass (12 s), well before backup_hours: kept.
    let delivered_at = chrono::DateTime::parse_from_rfc3339(d["delivered_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let since = (chrono::Utc::now() - delivered_at)
        .to_std()
        .unwrap_or_default();
    std::thread::sleep(Duration::from_secs(12).saturating_sub(since));
    assert!(
        operator.head(&index_key).await.unwrap().is_some(),
        "the backup is kept until backup_hours have passed since the delivery"
    );

    // The backup goes once backup_hours have passed.
    backup_goes(
        operator.as_ref(),
        &index_key,
        Duration::from_secs(90),
        &server,
    )
    .await;
    assert!(
        chrono::Utc::now() - delivered_at >= chrono::Duration::seconds(36),
        "deleted no sooner than backup_hours after the delivery"
    );
    for (key, _, _) in &objects {
        assert!(
            operator.head(key).await.unwrap().is_none(),
            "{key} is left in the backup"
        );
        assert!(
            customer.head(key).await.unwrap().is_some(),
            "{key} stays with the customer"
        );
    }
    let ledger = format!("{prefix}acme/delivery/call-del-1.json");
    let start = std::time::Instant::now();
    while operator.head(&ledger).await.unwrap().is_some()
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        operator.head(&ledger).await.unwrap().is_none(),
        "the ledger entry goes with the backup"
    );
    let audit = server.audit();
    let deleted = audit
        .lines()
        .find(|l| l.contains("\"backup_deleted\""))
        .unwrap_or_else(|| panic!("no backup_deleted line: {audit}"));
    assert!(
        deleted.contains("call-del-1.tar.gz") && deleted.contains("verified"),
        "{deleted}"
    );
    assert!(
        audit.lines().any(|l| l.contains("\"delivered\"")),
        "{audit}"
    );
    let d = delivery_of(&server, "call-del-1", TOKEN_ACME);
    assert_eq!(d["state"], "delivered", "{d}");
    assert_eq!(d["backup"], "deleted", "{d}");
    // The event log (what webhooks are sent) has the delivery.
    let page = crate::api::call(server.api_port, "GET", "/v1/events", Some(api_key), &[]);
    assert_eq!(page.code, 200, "{}", String::from_utf8_lossy(&page.body));
    let events = page.json();
    let delivered: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "call.delivered")
        .collect();
    assert_eq!(delivered.len(), 1, "{events}");
    assert_eq!(delivered[0]["session_id"], "call-del-1", "{events}");
    // And POSTed to the tenant's webhook, signed, once.
    let posted = hook.wait_for(2, Duration::from_secs(30));
    let mut types: Vec<_> = posted
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    types.sort();
    assert_eq!(types, ["call.archived", "call.delivered"], "{posted:?}");
    assert!(posted.iter().all(|e| e["sig_ok"] == true), "{posted:?}");
    let hooked = posted.iter().find(|e| e["type"] == "call.delivered");
    assert_eq!(
        hooked.map(|e| &e["id"]),
        Some(&delivered[0]["id"]),
        "the same event as the log"
    );
    // Served from the customer's bucket now, byte for byte.
    assert_eq!(get("after.tgz"), first);
}

/// The customer's bucket refuses writes: the call stays in the backup,
/// the status says why (`delivery_failed` with the reason), SFTP serves it
/// from the backup (its MP3 rendered there, beside the RAW), and the
/// backup outlives `backup_hours` (no verified delivery). Then the bucket swallows requests mid-copy and the server is
/// SIGKILLed; restarted with the bucket well again, it delivers the call
/// and its render, every object verified, and only then deletes the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_customer_bucket_keeps_the_backup_and_delivery_completes_after_it_returns_and_a_sigkill(
) {
    let (cust, proxy) = customer_proxy();
    proxy.inject(Rule::new(
        Some("PUT"),
        "/customer",
        Fault::Status(403, "AccessDenied"),
    ));
    let work = tempfile::tempdir().unwrap();
    let keys = key_files(work.path(), cust);
    let prefix = unique_prefix("customer-refusing");
    let config = delivery_config(&proxy, &keys, &prefix, "0.0005");
    let server = Server::start_with(&config);
    push_session(&server, work.path(), "call-ref-1", TOKEN_ACME, 6);
    assert_archived(
        &server,
        "call-ref-1",
        TOKEN_ACME,
        Duration::from_secs(90),
        "archived into the backup",
    );
    let d = wait_delivery(
        &server,
        "call-ref-1",
        TOKEN_ACME,
        Duration::from_secs(60),
        |d| d["state"] == "delivery_failed",
    );
    assert_eq!(d["state"], "delivery_failed", "{d}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("403") && reason.contains("AccessDenied"),
        "{d}"
    );
    let get = |server: &Server, name: &str| {
        let out = sftp_batch(
            server.port,
            "qa-acme",
            client_key("qa"),
            &format!("get /2026/11/23/call-ref-1/call-ref-1.tar.gz {name}\n"),
            work.path(),
        );
        assert!(out.status.success(), "{}", text(&out));
        sha256_file(&work.path().join(name))
    };
    let from_backup = get(&server, "backup.tgz");
    // A first read renders the MP3 beside the RAW, in the backup (the
    // customer's bucket refuses writes), and it is delivered with the call.
    let mp3 = |server: &Server, name: &str| {
        let out = sftp_batch(
            server.port,
            "qa-acme",
            client_key("qa"),
            &format!("get /2026/11/23/call-ref-1/call-ref-1.mp3 {name}\n"),
            work.path(),
        );
        assert!(out.status.success(), "{}\n{}", text(&out), server.log());
        sha256_file(&work.path().join(name))
    };
    let rendered = mp3(&server, "backup.mp3");
    // Past backup_hours (1.8 s) with no verified delivery: the backup stays.
    std::thread::sleep(Duration::from_secs(3));
    let index_key = format!("{prefix}acme/sessions/2026/11/23/call-ref-1/info.json");
    let (operator, customer) = (s3().store().await, cust.store().await);
    assert!(operator.head(&index_key).await.unwrap().is_some());
    assert!(customer.head(&index_key).await.unwrap().is_none());
    assert!(
        server.audit().contains("\"delivery_failed\""),
        "{}",
        server.audit()
    );

    // Now every request to the bucket hangs; the server dies mid-copy.
    proxy.clear();
    proxy.inject(Rule::new(None, "/customer", Fault::BlackHole));
    std::thread::sleep(Duration::from_secs(7));
    let dir = server.kill9();
    proxy.clear();
    enforce(&proxy);
    let server = Server::start_in(dir, &config);
    let d = wait_delivery(
        &server,
        "call-ref-1",
        TOKEN_ACME,
        Duration::from_secs(90),
        |d| d["state"] == "delivered",
    );
    assert_eq!(d["state"], "delivered", "{d}\n{}", server.log());
    assert_identical(
        customer.as_ref(),
        &indexed_objects(customer.as_ref(), &index_key).await,
    )
    .await;
    backup_goes(
        operator.as_ref(),
        &index_key,
        Duration::from_secs(60),
        &server,
    )
    .await;
    assert_eq!(get(&server, "delivered.tgz"), from_backup);
    let folder = index_key.trim_end_matches("info.json");
    let delivered_mp3 = format!("{folder}derived/call-ref-1.mp3");
    let bytes = recvault::store::read_all(customer.as_ref(), &delivered_mp3, 1 << 30)
        .await
        .unwrap_or_else(|e| panic!("the render was delivered with the call: {e}"));
    assert_eq!(sha256(&bytes), rendered);
    assert_eq!(mp3(&server, "delivered.mp3"), rendered);
}

/// SIGKILL at three points of one delivery: while a party file is being
/// written to the customer's bucket (the archive is there, verified),
/// while its index is being written (every object is there), and just
/// after a start. Each restart resumes from the ledger; the last one
/// delivers the call with every object byte-identical to the index, leaves
/// no unfinished upload in the customer's bucket, and only then deletes
/// the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_each_step_of_a_delivery_loses_nothing_and_a_restart_finishes_it() {
    let (cust, proxy) = customer_proxy();
    let work = tempfile::tempdir().unwrap();
    let keys = key_files(work.path(), cust);
    let prefix = unique_prefix("customer-sigkill");
    let config = delivery_config(&proxy, &keys, &prefix, "0.0005");
    let index_key = format!("{prefix}acme/sessions/2026/11/23/call-kill-1/info.json");
    let (operator, customer) = (s3().store().await, cust.store().await);
    let mut dir = None;
    for (step, hang) in [
        ("a party file", "call-kill-1/derived/"),
        ("the index", "call-kill-1/info.json"),
    ] {
        proxy.clear();
        enforce(&proxy);
        proxy.inject(Rule::new(Some("PUT"), hang, Fault::BlackHole));
        let before = proxy.faulted();
        let server = match dir.take() {
            None => {
                let s = Server::start_with(&config);
                push_session(&s, work.path(), "call-kill-1", TOKEN_ACME, 11);
                s
            }
            Some(d) => Server::start_in(d, &config),
        };
        let start = std::time::Instant::now();
        while proxy.faulted() == before && start.elapsed() < Duration::from_secs(90) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            proxy.faulted() > before,
            "{step}: the copy reached it\n{}",
            server.log()
        );
        assert!(
            customer.head(&index_key).await.unwrap().is_none(),
            "{step}: not delivered yet"
        );
        assert!(
            operator.head(&index_key).await.unwrap().is_some(),
            "{step}: the backup is whole"
        );
        dir = Some(server.kill9());
    }
    // Killed just after a start, then started for good.
    proxy.clear();
    enforce(&proxy);
    let server = Server::start_in(dir.take().unwrap(), &config);
    let dir = server.kill9();
    let server = Server::start_in(dir, &config);
    let d = wait_delivery(
        &server,
        "call-kill-1",
        TOKEN_ACME,
        Duration::from_secs(90),
        |d| d["state"] == "delivered" || d["backup"] == "deleted",
    );
    assert!(d["state"] == "delivered", "{d}\n{}", server.log());
    let objects = indexed_objects(customer.as_ref(), &index_key).await;
    assert!(objects.len() >= 2, "{objects:?}");
    assert_identical(customer.as_ref(), &objects).await;
    backup_goes(
        operator.as_ref(),
        &index_key,
        Duration::from_secs(60),
        &server,
    )
    .await;
    let open = customer
        .multipart_list(&format!("{prefix}acme/"))
        .await
        .expect("list uploads");
    assert!(
        open.is_empty(),
        "unfinished uploads left in the customer's bucket: {open:?}"
    );
}

/// A call whose archive is larger than one part (12 MiB) is delivered as
/// a multipart upload, every write to the customer's bucket carrying the
/// customer's server-side encryption (`sse = "aws:kms"`), and it arrives
/// byte-identical. The session is put into the backup with its ledger
/// entry as the archiver leaves them, before the server starts: the first
/// pass of the deliverer finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_call_is_delivered_in_parts_under_the_customers_encryption() {
    let (cust, proxy) = customer_proxy();
    let work = tempfile::tempdir().unwrap();
    let keys = key_files(work.path(), cust);
    let prefix = unique_prefix("customer-large");
    let (operator, customer) = (s3().store().await, cust.store().await);
    let tenant_prefix = format!("{prefix}acme/");
    let archive = pseudo_random(12 << 20, 13);
    let archive_key = recvault::sample::put_session(
        operator.as_ref(),
        &tenant_prefix,
        "call-big-1",
        t("2026-11-23T08:00:00Z"),
        t("2026-11-23T08:30:00Z"),
        bytes::Bytes::from(archive.clone()),
    )
    .await
    .expect("seed the backup");
    let index_key = archive_key.replace("call-big-1.tar.gz", "info.json");
    let ledger = format!("{tenant_prefix}delivery/call-big-1.json");
    operator
        .put(
            &ledger,
            bytes::Bytes::from(format!(r#"{{"index":"{index_key}","state":"delivering"}}"#)),
            recvault::store::PutOptions::default(),
        )
        .await
        .unwrap();
    let config = delivery_config(&proxy, &keys, &prefix, "24").replace(
        "[[storages]]\nname = \"eu\"\n",
        "[[storages]]\nname = \"eu\"\nsse = \"aws:kms\"\n",
    );
    let server = Server::start_with(&config);
    let start = std::time::Instant::now();
    let state = loop {
        let entry = recvault::store::read_all(operator.as_ref(), &ledger, 1 << 20)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .unwrap_or_default();
        if entry["state"] == "delivered" || start.elapsed() > Duration::from_secs(120) {
            break entry;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(state["state"], "delivered", "{state}\n{}", server.log());
    let got = recvault::store::read_all(customer.as_ref(), &archive_key, 1 << 30)
        .await
        .unwrap();
    assert_eq!((got.len(), sha256(&got)), (archive.len(), sha256(&archive)));
    let seen = proxy.seen();
    let writes: Vec<_> = seen
        .iter()
        .filter(|s| s.path.contains("call-big-1") && (s.method == "PUT" || s.method == "POST"))
        .collect();
    let started: Vec<_> = writes
        .iter()
        .copied()
        .filter(|s| s.method == "POST" && s.path.contains("?uploads"))
        .collect();
    let parts = writes
        .iter()
        .filter(|s| s.path.contains("partNumber="))
        .count();
    assert!(
        !started.is_empty() && parts >= 2,
        "a multipart upload of 2 parts or more: {writes:?}"
    );
    for s in started
        .iter()
        .chain(writes.iter().filter(|s| s.path.ends_with("info.json")))
    {
        assert_eq!(
            s.headers
                .get("x-amz-server-side-encryption")
                .map(|v| v.to_str().unwrap()),
            Some("aws:kms"),
            "{} {}",
            s.method,
            s.path
        );
    }
    // Served from there over SFTP, whole.
    let out = sftp_batch(
        server.port,
        "qa-acme",
        client_key("qa"),
        "get /2026/11/23/call-big-1/call-big-1.tar.gz big.tgz\n",
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha256_file(&work.path().join("big.tgz")), sha256(&archive));
}

/// An encrypted delivery tenant after `recvault keys rotate` and a SIGHUP:
/// a new call is sealed by the new primary key in every place the tenant
/// writes — the operator's backup and the customer's bucket — while the
/// call delivered before keeps the old key and still reads; both are
/// delivered byte-identical to their indexes and served over SFTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_reaches_the_backup_and_the_customers_copies_of_an_encrypted_tenant() {
    use recvault::store::crypt::{mark, Crypt};
    let (cust, proxy) = customer_proxy();
    let work = tempfile::tempdir().unwrap();
    let keys = key_files(work.path(), cust);
    let keyset = work.path().join("acme.keyset.json");
    let keys_cmd = |verb: &str| {
        let out = recvault_command()
            .args(["keys", verb])
            .arg(&keyset)
            .output()
            .unwrap();
        assert!(out.status.success(), "keys {verb}: {}", text(&out));
    };
    keys_cmd("new");
    let primary = || recvault::crypto::read_keyset(&keyset).unwrap().primary;
    let prefix = unique_prefix("customer-rotation");
    let rest = format!(
        "[[storages]]\nname = \"eu\"\n{}{}",
        customer_keys(&proxy, &keys, CUSTOMER_ACCOUNT),
        tenant(
            "acme",
            &prefix,
            TOKEN_ACME,
            &format!(
                "storage = \"eu\"\ndelivery = \"customer\"\nbackup_hours = 1\nencryption = \"recvault\"\nkeyset = \"{}\"",
                keyset.display()
            ),
        ),
    );
    let server = Server::start_with(&format!("{}\n{rest}", s3().storage_toml()));
    let deliver = |id: &str, seed: u8| {
        push_session(&server, work.path(), id, TOKEN_ACME, seed);
        assert_archived(&server, id, TOKEN_ACME, Duration::from_secs(90), id);
        let d = wait_delivery(&server, id, TOKEN_ACME, Duration::from_secs(60), |d| {
            d["state"] == "delivered"
        });
        assert_eq!(d["state"], "delivered", "{id}: {d}\n{}", server.log());
    };
    deliver("call-rot-1", 11);
    let first = primary();
    keys_cmd("rotate");
    let second = primary();
    assert_ne!(first, second);
    server.reload(&rest);
    assert!(
        server.log_shows("keyset rotated"),
        "the reload rotated the keyset:\n{}",
        server.log()
    );
    deliver("call-rot-2", 12);

    let (operator, customer) = (s3().store().await, cust.store().await);
    let tenant_prefix = format!("{prefix}acme/");
    let opened = Crypt::new(
        customer.clone(),
        "acme",
        &tenant_prefix,
        recvault::crypto::read_keyset(&keyset).unwrap(),
    )
    .unwrap();
    for (id, key_id) in [("call-rot-1", first), ("call-rot-2", second)] {
        let folder = format!("{tenant_prefix}sessions/2026/11/23/{id}/");
        let objects = indexed_objects(&opened, &format!("{folder}info.json")).await;
        assert!(
            objects.len() >= 3,
            "{id}: the archive and party files: {objects:?}"
        );
        // Every delivered object decrypts to the bytes its index names.
        assert_identical(&opened, &objects).await;
        let archive = format!("{folder}{id}.tar.gz");
        for (place, store) in [("customer's bucket", &customer), ("backup", &operator)] {
            for key in [archive.clone(), format!("{folder}info.json")] {
                let meta = store.head(&key).await.unwrap();
                assert_eq!(
                    meta.and_then(|m| m.mark),
                    Some(mark(key_id)),
                    "{id}: {key} in the {place} is sealed by key {key_id}"
                );
            }
        }
        let out = sftp_batch(
            server.port,
            "qa-acme",
            client_key("qa"),
            &format!("get /2026/11/23/{id}/{id}.tar.gz {id}.tgz\n"),
            work.path(),
        );
        assert!(out.status.success(), "{}\n{}", text(&out), server.log());
        let (_, size, sha) = objects.iter().find(|o| o.0 == archive).unwrap();
        let got = std::fs::read(work.path().join(format!("{id}.tgz"))).unwrap();
        assert_eq!(
            (got.len() as u64, sha256(&got)),
            (*size, sha.clone()),
            "{id}"
        );
    }
}
