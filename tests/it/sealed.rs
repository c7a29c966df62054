//! Encryption at rest end to end (SPEC §10): a tenant with `encryption =
//! "recvault"` stores nothing in clear (checked against a clear tenant in
//! the same run, so the check can fail), Google's Tink decrypts what
//! recvault stored straight from S3, recvault serves what Tink encrypted
//! byte-exact over SFTP and FTPS (whole, `reget`, `REST` at segment
//! boundaries), and a changed object is an error, never bytes.

use std::path::Path;

use bytes::Bytes;
use recvault::store::{ObjectStore, PutOptions};

use crate::crypto::{tink, tink_files};
use crate::harness::*;

const MIB: usize = 1 << 20;
const TOKEN_C: &str = "token-for-clear-0123456789abcdef";

fn aad(tenant: &str, relative: &str) -> String {
    format!("recvault/v1 tenant={tenant} object={relative}")
}

/// Every object under `prefix`: (key, mark, raw bytes).
async fn raw_objects(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Vec<(String, Option<String>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = store.list_page(prefix, None, token).await.unwrap();
        for o in page.objects {
            // Gone since the listing (a render's lease, released): skipped.
            let Some(head) = store.head(&o.key).await.unwrap() else {
                continue;
            };
            match recvault::store::read_all(store, &o.key, 1 << 30).await {
                Ok(body) => out.push((o.key, head.mark, body.to_vec())),
                Err(recvault::store::StoreError::NotFound(_)) => continue,
                Err(e) => panic!("{}: {e}", o.key),
            }
        }
        token = page.next;
        if token.is_none() {
            return out;
        }
    }
}

/// A new keyset `name` in `dir`, made by `recvault keys new`.
fn new_keyset(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    keys_new(&path);
    path
}

fn keys_new(path: &Path) {
    let out = recvault_command()
        .args(["keys", "new"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

fn primary_of(keyset: &Path) -> u32 {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keyset).unwrap()).unwrap();
    v["primaryKeyId"].as_u64().unwrap() as u32
}

/// What shows that bytes are in clear: a session index's fields, a gzip,
/// MP4 or WebM start.
fn clear_signs(key: &str, body: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for needle in [&b"\"queue\""[..], b"\"session_id\"", b"\"recvault\""] {
        if body.windows(needle.len()).any(|w| w == needle) {
            found.push(format!("{key}: {}", String::from_utf8_lossy(needle)));
        }
    }
    if body.starts_with(&[0x1f, 0x8b]) {
        found.push(format!("{key}: gzip magic"));
    }
    if body.get(4..8) == Some(b"ftyp") {
        found.push(format!("{key}: MP4 ftyp"));
    }
    if body.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        found.push(format!("{key}: WebM/EBML magic"));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_an_encrypted_tenant_is_stored_in_clear_and_tink_decrypts_it_all() {
    let base = unique_prefix("sealed");
    let keys = tempfile::tempdir().unwrap();
    let keyset = new_keyset(&keys, "acme.keyset.json");
    let hash = recvault::ingest::token_hash;
    let config = format!(
        "[[tenants]]\nid = \"acme\"\nprefix = \"{base}acme/\"\ningest_tokens = [\"sha256:{}\"]\nencryption = \"recvault\"\nkeyset = \"{}\"\n\n[[tenants.users]]\nname = \"qa\"\nauthorized_keys = [\"{}\"]\n\n[[tenants]]\nid = \"clear\"\nprefix = \"{base}clear/\"\ningest_tokens = [\"sha256:{}\"]\n\n[[tenants.users]]\nname = \"qc\"\nauthorized_keys = [\"{}\"]\n",
        hash(crate::ingest::TOKEN_A),
        keyset.display(),
        client_key("qa").public,
        hash(TOKEN_C),
        client_key("qa").public,
    );
    let server = Server::start(&config);
    let calls = tempfile::tempdir().unwrap();
    let session = crate::ingest::make_session(calls.path(), "call-sealed-1", 3, 150);
    for token in [crate::ingest::TOKEN_A, TOKEN_C] {
        let out = crate::ingest::push(&server, &session, token);
        assert!(out.status.success(), "{}", text(&out));
    }
    // Both tenants' files over SFTP: the index, the archive, the MP4
    // (rendered now, stored encrypted) and the party files.
    let dir = "/2026/11/23/call-sealed-1";
    let mut got = std::collections::BTreeMap::new();
    for user in ["qa", "qc"] {
        let cwd = tempfile::tempdir().unwrap();
        let out = sftp_batch(
            server.port,
            user,
            client_key("qa"),
            &format!("cd {dir}\nls -l\nget *\n"),
            cwd.path(),
        );
        assert!(out.status.success(), "{user}: {}", text(&out));
        for e in std::fs::read_dir(cwd.path()).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            got.insert((user, name), std::fs::read(&p).unwrap());
        }
        std::mem::forget(cwd);
    }
    let names: Vec<_> = got
        .keys()
        .filter(|(u, _)| *u == "qa")
        .map(|(_, n)| n.clone())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".mp4")) && names.contains(&"info.json".to_string()),
        "{names:?}"
    );
    let store = s3().store().await;
    // The MP4 is stored once its render ends, after it was served: wait.
    for tenant in ["acme", "clear"] {
        let key = recvault::layout::SessionKeys::new(
            &format!("{base}{tenant}/"),
            "2026",
            "11",
            "23",
            "call-sealed-1",
        )
        .derived("call-sealed-1.mp4");
        let mut stored = false;
        for _ in 0..600 {
            if store.head(&key).await.unwrap().is_some() {
                stored = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(stored, "{key} was not stored");
    }
    let clear = raw_objects(store.as_ref(), &format!("{base}clear/")).await;
    let sealed = raw_objects(store.as_ref(), &format!("{base}acme/")).await;
    assert!(
        sealed.len() >= 4,
        "{:?}",
        sealed.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    // The check can fail: the clear tenant's objects show every sign.
    let signs: Vec<String> = clear
        .iter()
        .flat_map(|(k, _, b)| clear_signs(k, b))
        .collect();
    for sign in ["\"queue\"", "gzip magic", "MP4 ftyp", "WebM/EBML magic"] {
        assert!(
            signs.iter().any(|s| s.ends_with(sign)),
            "clear tenant lacks {sign}: {signs:?}"
        );
    }
    let signs: Vec<String> = sealed
        .iter()
        .flat_map(|(k, _, b)| clear_signs(k, b))
        .collect();
    assert!(signs.is_empty(), "in clear at rest: {signs:?}");

    // Tink decrypts every object straight from S3 with the tenant's keyset
    // and the documented associated data; what SFTP served is among them.
    let work = tempfile::tempdir().unwrap();
    let primary = primary_of(&keyset);
    let mut decrypted = Vec::new();
    for (i, (key, mark, body)) in sealed.iter().enumerate() {
        assert_eq!(
            mark.as_deref(),
            Some(format!("tink-aes-gcm-hkdf-streaming key={primary}").as_str()),
            "{key}"
        );
        let relative = key.strip_prefix(&format!("{base}acme/")).unwrap();
        let (ct, pt) = (
            work.path().join(format!("{i}.ct")),
            work.path().join(format!("{i}.pt")),
        );
        std::fs::write(&ct, body).unwrap();
        let out = tink_files("dec", &keyset, &aad("acme", relative), &[(ct, pt.clone())]);
        assert!(out.status.success(), "{key}: {}", text(&out));
        decrypted.push((relative.to_string(), std::fs::read(&pt).unwrap()));
    }
    for ((_, name), body) in got.iter().filter(|((u, _), _)| *u == "qa") {
        assert!(
            decrypted
                .iter()
                .any(|(_, d)| !d.is_empty() && body.starts_with(d)),
            "{name} ({} bytes) is no stored object decrypted by Tink",
            body.len()
        );
    }
    // The README's script for customers does the same.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let script = readme
        .split("<!-- decrypt.py -->")
        .nth(1)
        .and_then(|r| r.split("<!-- /decrypt.py -->").next())
        .and_then(|r| r.split("```python").nth(1))
        .and_then(|r| r.split("```").next())
        .expect("README has the decrypt.py script");
    let (archive_key, _, archive_ct) = sealed
        .iter()
        .find(|(k, _, _)| k.ends_with("/call-sealed-1.tar.gz"))
        .expect("the archive");
    let relative = archive_key.strip_prefix(&format!("{base}acme/")).unwrap();
    std::fs::write(work.path().join("decrypt.py"), script).unwrap();
    std::fs::write(work.path().join("archive.ct"), archive_ct).unwrap();
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    let out = std::process::Command::new(python)
        .arg(work.path().join("decrypt.py"))
        .arg(&keyset)
        .arg("acme")
        .arg(relative)
        .arg(work.path().join("archive.ct"))
        .arg(work.path().join("archive.tar.gz"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read(work.path().join("archive.tar.gz")).unwrap()
            == got[&("qa", "call-sealed-1.tar.gz".to_string())],
        "the README's script decrypts the archive to what SFTP serves"
    );
    let index = decrypted
        .iter()
        .find(|(k, _)| k.ends_with("/info.json"))
        .expect("the index");
    let v: serde_json::Value = serde_json::from_slice(&index.1).unwrap();
    let sealed_mark = &v["recvault"]["objects"]["call-sealed-1.tar.gz"]["sealed"];
    assert_eq!(
        sealed_mark.as_str(),
        Some(format!("tink-aes-gcm-hkdf-streaming key={primary}").as_str()),
        "the index records the key of the archive"
    );
}

/// A session whose archive Tink encrypted, for every size around the
/// segment boundaries; served over SFTP (`get`, `reget`) and FTPS (`REST`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recvault_serves_what_tink_encrypted_byte_exact_whole_and_resumed() {
    let prefix = unique_prefix("tink-served");
    let keys = tempfile::tempdir().unwrap();
    let keyset = keys.path().join("tink.keyset.json");
    let out = tink(&["gen", keyset.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keyset, std::fs::Permissions::from_mode(0o600)).unwrap();
    let set = recvault::crypto::read_keyset(&keyset).unwrap();
    let mark = format!("tink-aes-gcm-hkdf-streaming key={}", set.primary);
    let raw = s3().store().await;
    let sealed = recvault::store::crypt::Crypt::new(raw.clone(), "acme", &prefix, set).unwrap();
    let sizes = [0, 1, MIB - 57, MIB - 56, MIB - 55, 3 * MIB + 4321];
    let work = tempfile::tempdir().unwrap();
    let mut plains = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let id = format!("t-{n}");
        let plain = pseudo_random(n, i as u64 + 5);
        // The index (encrypted by recvault), then the archive replaced by
        // Tink's encryption of the same bytes.
        let key = recvault::sample::put_session(
            &sealed,
            &prefix,
            &id,
            t("2026-11-23T09:00:00Z"),
            t("2026-11-23T09:05:00Z"),
            Bytes::from(plain.clone()),
        )
        .await
        .unwrap();
        let (pt, ct) = (
            work.path().join(format!("{n}.pt")),
            work.path().join(format!("{n}.ct")),
        );
        std::fs::write(&pt, &plain).unwrap();
        let relative = key.strip_prefix(&prefix).unwrap();
        let out = tink_files("enc", &keyset, &aad("acme", relative), &[(pt, ct.clone())]);
        assert!(out.status.success(), "{}", text(&out));
        let opts = PutOptions {
            if_absent: false,
            mark: Some(mark.clone()),
            if_match: None,
        };
        raw.put(&key, Bytes::from(std::fs::read(&ct).unwrap()), opts)
            .await
            .unwrap();
        plains.push((id, plain));
    }
    let config = format!(
        "[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}\"\nencryption = \"recvault\"\nkeyset = \"{}\"\n{}",
        keyset.display(),
        crate::ftps::user_toml_pub("qa")
    );
    let server = Server::start(&config);
    let cwd = tempfile::tempdir().unwrap();
    // Whole files, then resumed from partial copies cut inside, at and
    // across segment boundaries.
    let (s1, s2) = (MIB - 56, MIB - 56 + MIB - 16);
    let big = &plains.last().unwrap().1;
    let cuts = [1, s1 - 1, s1, s1 + 1, s2 - 1, s2, s2 + 1, big.len() - 1];
    let mut batch = String::new();
    for (id, _) in &plains {
        batch.push_str(&format!("get /2026/11/23/{id}/{id}.tar.gz {id}\n"));
    }
    let (big_id, _) = plains.last().unwrap();
    for (i, cut) in cuts.iter().enumerate() {
        std::fs::write(cwd.path().join(format!("part-{i}")), &big[..*cut]).unwrap();
        batch.push_str(&format!(
            "reget /2026/11/23/{big_id}/{big_id}.tar.gz part-{i}\n"
        ));
    }
    let out = sftp_batch(server.port, "qa", client_key("qa"), &batch, cwd.path());
    assert!(out.status.success(), "{}", text(&out));
    for (id, plain) in &plains {
        let got = std::fs::read(cwd.path().join(id)).unwrap();
        assert!(
            got == *plain,
            "{id}: {} bytes served, {} stored",
            got.len(),
            plain.len()
        );
    }
    for (i, cut) in cuts.iter().enumerate() {
        let got = std::fs::read(cwd.path().join(format!("part-{i}"))).unwrap();
        assert!(got == *big, "reget from {cut}");
    }
    // FTPS REST at the same offsets (curl -C), and a 0-byte file.
    for cut in cuts.iter().chain([&0usize]) {
        let file = cwd.path().join(format!("ftps-{cut}"));
        let url = format!(
            "ftp://127.0.0.1:{}/2026/11/23/{big_id}/{big_id}.tar.gz",
            server.ftps_port
        );
        let out = crate::ftps::curl(&["-C", &cut.to_string(), "-o", file.to_str().unwrap(), &url]);
        assert!(out.status.success(), "REST {cut}: {}", text(&out));
        assert!(std::fs::read(&file).unwrap() == big[*cut..], "REST {cut}");
    }
    let empty = cwd.path().join("ftps-empty");
    let url = format!(
        "ftp://127.0.0.1:{}/2026/11/23/t-0/t-0.tar.gz",
        server.ftps_port
    );
    let out = crate::ftps::curl(&["-o", empty.to_str().unwrap(), &url]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
}

/// A flipped byte, a cut object, an object swapped in from another session
/// and a wrong keyset: the client gets an error, never the bytes, and the
/// server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_objects_and_wrong_keys_are_errors_and_the_server_keeps_serving() {
    let prefix = unique_prefix("sealed-tamper");
    let keys = tempfile::tempdir().unwrap();
    let keyset = new_keyset(&keys, "k.json");
    let raw = s3().store().await;
    let sealed = recvault::store::crypt::Crypt::new(
        raw.clone(),
        "acme",
        &prefix,
        recvault::crypto::read_keyset(&keyset).unwrap(),
    )
    .unwrap();
    let mut keys_of = Vec::new();
    for (i, id) in ["good", "flipped", "cut", "swapped", "stripped"]
        .iter()
        .enumerate()
    {
        let key = recvault::sample::put_session(
            &sealed,
            &prefix,
            id,
            t("2026-11-23T09:00:00Z"),
            t("2026-11-23T09:05:00Z"),
            Bytes::from(pseudo_random(3 * MIB, i as u64 + 1)),
        )
        .await
        .unwrap();
        keys_of.push(key);
    }
    let stored = |k: &str| {
        let raw = raw.clone();
        let k = k.to_string();
        async move {
            let head = raw.head(&k).await.unwrap().unwrap();
            let body = recvault::store::read_all(raw.as_ref(), &k, 1 << 30)
                .await
                .unwrap();
            (body.to_vec(), head.mark)
        }
    };
    let put_raw = |k: String, body: Vec<u8>, mark: Option<String>| {
        let raw = raw.clone();
        async move {
            raw.put(
                &k,
                Bytes::from(body),
                PutOptions {
                    if_absent: false,
                    mark,
                    if_match: None,
                },
            )
            .await
            .unwrap()
        }
    };
    let (mut body, mark) = stored(&keys_of[1]).await;
    body[MIB + 77] ^= 0x20;
    put_raw(keys_of[1].clone(), body, mark).await;
    let (body, mark) = stored(&keys_of[2]).await;
    put_raw(keys_of[2].clone(), body[..2 * MIB].to_vec(), mark).await;
    let (body, mark) = stored(&keys_of[0]).await;
    put_raw(keys_of[3].clone(), body, mark).await;
    // Its mark removed (as a copy without metadata would): not served as clear.
    let (body, _) = stored(&keys_of[4]).await;
    put_raw(keys_of[4].clone(), body, None).await;

    let config = format!(
        "[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}\"\nencryption = \"recvault\"\nkeyset = \"{}\"\n{}",
        keyset.display(),
        crate::ftps::user_toml_pub("qa")
    );
    let server = Server::start(&config);
    let cwd = tempfile::tempdir().unwrap();
    for id in ["flipped", "cut", "swapped", "stripped"] {
        let out = sftp_batch(
            server.port,
            "qa",
            client_key("qa"),
            &format!("get /2026/11/23/{id}/{id}.tar.gz\n"),
            cwd.path(),
        );
        assert!(!out.status.success(), "{id}: served");
        let local = cwd.path().join(format!("{id}.tar.gz"));
        let served = std::fs::read(&local).unwrap_or_default();
        assert!(
            served.len() <= MIB,
            "{id}: {} bytes served; at most the segments before the changed one",
            served.len()
        );
        // The one that is intact is served whole, on the same server.
        let out = sftp_batch(
            server.port,
            "qa",
            client_key("qa"),
            "get /2026/11/23/good/good.tar.gz\n",
            cwd.path(),
        );
        assert!(out.status.success(), "after {id}: {}", text(&out));
        assert_eq!(
            std::fs::read(cwd.path().join("good.tar.gz")).unwrap(),
            pseudo_random(3 * MIB, 1)
        );
    }
    let log = server.log();
    assert!(
        log.contains("failed authentication") || log.contains("truncated"),
        "the log names the cause: {log}"
    );
    assert!(
        log.contains("without the encryption mark its index records"),
        "the stripped archive is named: {log}"
    );
    // recvault verify reports the stripped mark too.
    let out = recvault_command()
        .args(["verify", "--tenant", "acme", "--config"])
        .arg(server.dir.path().join("recvault.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("stripped.tar.gz is stored without the encryption mark"),
        "{}",
        text(&out)
    );
    drop(server);

    // The wrong keyset: the tenant's files are errors, with the key named.
    let other = new_keyset(&keys, "other.json");
    let config = config.replace(&keyset.display().to_string(), &other.display().to_string());
    let server = Server::start(&config);
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        "get /2026/11/23/good/good.tar.gz\n",
        cwd.path(),
    );
    assert!(!out.status.success(), "served with another keyset");
    assert!(server.log().contains("does not hold"), "{}", server.log());
    drop(server);

    // Encryption switched off for the tenant: its sealed objects are not
    // served as if they were clear.
    let config = config
        .replace("encryption = \"recvault\"\n", "")
        .replace(&format!("keyset = \"{}\"\n", other.display()), "");
    let server = Server::start(&config);
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        "get /2026/11/23/good/good.tar.gz\n",
        cwd.path(),
    );
    assert!(!out.status.success(), "ciphertext served as the file");
    assert!(
        server.log().contains("the tenant has no keyset configured"),
        "{}",
        server.log()
    );
}

/// A server's audit files in chain order: its rotations, then the current one.
fn trail(server: &Server) -> Vec<std::path::PathBuf> {
    let current = server.dir.path().join("audit.log");
    let mut files: Vec<_> = std::fs::read_dir(server.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit.log.") && !n.contains("rotating"))
        })
        .collect();
    files.sort();
    files.push(current);
    files
}

/// Every audit event type appears, each line as the issue names it, and
/// the trail verifies against its anchors afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audit_event_type_appears_and_the_trail_verifies() {
    let base = unique_prefix("audit-all");
    let keys = tempfile::tempdir().unwrap();
    let keyset = new_keyset(&keys, "acme.keyset.json");
    let audit_keyset = new_keyset(&keys, "audit.keyset.json");
    let node = format!("it-audit-{}", std::process::id());
    let hash = recvault::ingest::token_hash;
    let config = format!(
        "# audit: node = \"{node}\"\n# audit: keyset = \"{}\"\n# audit: anchor_secs = 1\n# audit: max_bytes = 4096\n[[tenants]]\nid = \"acme\"\nprefix = \"{base}\"\ningest_tokens = [\"sha256:{}\"]\nencryption = \"recvault\"\nkeyset = \"{}\"\n\n[[tenants.users]]\nname = \"qa\"\npassword = \"{}\"\nauthorized_keys = [\"{}\"]\npermissions = [\"list\", \"download\", \"delete\"]\n",
        audit_keyset.display(),
        hash(crate::ingest::TOKEN_A),
        keyset.display(),
        crate::ftps::pw_hash(),
        client_key("qa").public,
    );
    let server = Server::start(&config);
    let calls = tempfile::tempdir().unwrap();
    for id in ["call-audit-1", "call-audit-2"] {
        let dir = crate::ingest::make_session(calls.path(), id, 4, 100);
        let out = crate::ingest::push(&server, &dir, crate::ingest::TOKEN_A);
        assert!(out.status.success(), "{}", text(&out));
    }
    // A session whose stream is no MJR: the archiver fails it.
    let bad = crate::ingest::make_session(calls.path(), "call-audit-bad", 4, 10);
    std::fs::write(bad.join("agent-audio.mjr"), vec![7u8; 4096]).unwrap();
    let _ = crate::ingest::push(&server, &bad, crate::ingest::TOKEN_A);
    // A wrong password, then a listing, downloads (one resumed) and a render.
    let cwd = tempfile::tempdir().unwrap();
    let out = sftp_batch_password(server.port, "qa", "wrong-password", "ls\n", cwd.path());
    assert!(!out.status.success());
    let day = "/2026/11/23";
    std::fs::write(cwd.path().join("call-audit-1.tar.gz"), b"x").unwrap();
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        &format!("cd {day}/call-audit-1\nls -l\nget info.json\nreget call-audit-1.tar.gz\nget call-audit-1.mp4\nrmdir {day}/call-audit-2\n"),
        cwd.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    // A key rotation, picked up by a reload.
    let out = recvault_command()
        .args(["keys", "rotate"])
        .arg(&keyset)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    server.reload(&config);
    let mut events = Vec::new();
    // The render's line comes once its upload is stored, after the download.
    for _ in 0..300 {
        events = trail(&server)
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if events.iter().any(|e| e["event"] == "config_reload")
            && events.iter().any(|e| e["event"] == "render")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let find = |what: &dyn Fn(&serde_json::Value) -> bool, name: &str| {
        assert!(
            events.iter().any(what),
            "no {name} event in {}",
            server.audit()
        );
    };
    find(
        &|e| e["event"] == "login" && e["ok"] == false && e["user"] == "qa",
        "failed login",
    );
    find(
        &|e| e["event"] == "login" && e["ok"] == true && e["method"] == "publickey",
        "login",
    );
    find(
        &|e| e["event"] == "listing" && e["path"] == format!("{day}/call-audit-1"),
        "listing",
    );
    find(
        &|e| {
            e["event"] == "download"
                && e["path"] == format!("{day}/call-audit-1/info.json")
                && e["complete"] == true
                && e["offset"] == 0
        },
        "download",
    );
    find(
        &|e| {
            e["event"] == "download"
                && e["path"] == format!("{day}/call-audit-1/call-audit-1.tar.gz")
                && e["offset"] == 1
                && e["complete"] == true
                && e["sha256"].as_str().is_some_and(|h| h.len() == 64)
        },
        "resumed download with its SHA-256",
    );
    find(&|e| e["event"] == "render" && e["ok"] == true, "render");
    find(
        &|e| e["event"] == "erase" && e["path"] == format!("{day}/call-audit-2"),
        "erase",
    );
    find(
        &|e| e["event"] == "ingest" && e["stage"] == "received",
        "ingest received",
    );
    find(
        &|e| {
            e["event"] == "ingest" && e["stage"] == "archived" && e["detail"]["sealed"].is_string()
        },
        "ingest archived",
    );
    find(
        &|e| e["event"] == "ingest" && e["stage"] == "failed" && e["session"] == "call-audit-bad",
        "ingest failed",
    );
    find(
        &|e| e["event"] == "key_rotation" && e["tenant"] == "acme",
        "key rotation",
    );
    find(
        &|e| e["event"] == "config_reload" && e["ok"] == true,
        "config reload",
    );
    // Stopped, the head is anchored; the trail verifies against it.
    server.signal("TERM");
    let mut server = server;
    for _ in 0..100 {
        if !server.is_running() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!server.is_running(), "recvault did not stop");
    // Every line is also in the bucket, encrypted, under the day it was copied.
    let log: Vec<u8> = trail(&server)
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    let first = log.split(|b| *b == b'\n').next().unwrap();
    let chain = recvault::audit::chain_id(&sha256(first));
    let raw = s3().store().await;
    let copies = recvault::store::crypt::Crypt::new(
        raw.clone(),
        &format!("audit@{node}"),
        &recvault::layout::audit_node(&node),
        recvault::crypto::read_keyset(&audit_keyset).unwrap(),
    )
    .unwrap();
    let day = chrono::Utc::now().format("%Y/%m/%d").to_string();
    let day_prefix = format!("{}{day}/", recvault::layout::audit_node(&node));
    let mut parts = Vec::new();
    for (key, mark, body) in raw_objects(raw.as_ref(), &day_prefix).await {
        let Some((c, first, last)) = recvault::layout::audit_copy_of(&day_prefix, &key) else {
            continue;
        };
        if c != chain {
            continue;
        }
        assert!(mark.is_some(), "{key} is not encrypted");
        assert!(
            !body.windows(7).any(|w| w == b"\"login\""),
            "{key} in clear"
        );
        let plain = recvault::store::read_all(&copies, &key, 1 << 30)
            .await
            .unwrap();
        parts.push((first, last, plain.to_vec()));
    }
    parts.sort();
    assert!(
        parts.windows(2).all(|w| w[1].0 == w[0].1 + 1),
        "copies follow each other: {:?}",
        parts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>()
    );
    let copied: Vec<u8> = parts.into_iter().flat_map(|p| p.2).collect();
    assert!(
        copied == log,
        "the copies hold the whole log ({} of {} bytes)",
        copied.len(),
        log.len()
    );
    let files = trail(&server);
    assert!(files.len() >= 2, "the trail was rotated: {files:?}");
    let out = recvault_command()
        .args(["audit", "verify", "--config"])
        .arg(server.dir.path().join("recvault.toml"))
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// A tenant whose keyset is missing or readable by others is not started
/// (a clear error in the log; its users cannot log in; its ingest is
/// answered 503 and nothing is stored); every other tenant is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_keyset_cannot_be_read_is_not_started_and_the_others_are_served() {
    let base = unique_prefix("sealed-refused");
    let store = s3().store().await;
    seed(
        store.as_ref(),
        &format!("{base}ok/"),
        "call-ok",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        b"fine".to_vec(),
    )
    .await;
    let keys = tempfile::tempdir().unwrap();
    let open_keyset = new_keyset(&keys, "open.json");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open_keyset, std::fs::Permissions::from_mode(0o644)).unwrap();
    let hash = recvault::ingest::token_hash;
    let user = |name: &str| {
        format!(
            "\n[[tenants.users]]\nname = \"{name}\"\nauthorized_keys = [\"{}\"]\n",
            client_key("qa").public
        )
    };
    let config = format!(
        "[[tenants]]\nid = \"gone\"\nprefix = \"{base}gone/\"\ningest_tokens = [\"sha256:{}\"]\nencryption = \"recvault\"\nkeyset = \"{}\"\n{}\n[[tenants]]\nid = \"open\"\nprefix = \"{base}open/\"\nencryption = \"recvault\"\nkeyset = \"{}\"\n{}\n[[tenants]]\nid = \"ok\"\nprefix = \"{base}ok/\"\n{}",
        hash(crate::ingest::TOKEN_A),
        keys.path().join("missing.json").display(),
        user("qg"),
        open_keyset.display(),
        user("qo"),
        user("qk"),
    );
    let server = Server::start(&config);
    let log = server.log();
    for (tenant, why) in [("gone", "missing.json"), ("open", "chmod 600")] {
        assert!(
            log.lines()
                .any(|l| l.contains("tenant not started") && l.contains(tenant) && l.contains(why)),
            "{tenant}: {log}"
        );
    }
    let cwd = tempfile::tempdir().unwrap();
    for refused in ["qg", "qo"] {
        let out = sftp_batch(server.port, refused, client_key("qa"), "ls /\n", cwd.path());
        assert!(!out.status.success(), "{refused} logged in");
    }
    let out = sftp_batch(
        server.port,
        "qk",
        client_key("qa"),
        "ls /2026/11/23\n",
        cwd.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("call-ok"), "{}", text(&out));
    // Ingest for the tenant that is not started: 503, nothing kept.
    let calls = tempfile::tempdir().unwrap();
    let session = crate::ingest::make_session(calls.path(), "call-gone-1", 1, 10);
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", crate::ingest::TOKEN_A))
        .arg("--data-binary")
        .arg(format!("@{}", session.join("info.json").display()))
        .arg(format!(
            "{}/v1/sessions/call-gone-1/files/info.json",
            server.ingest_url()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503");
    assert!(
        !server.dir.path().join("spool/gone/call-gone-1").exists(),
        "nothing of the tenant is in the spool"
    );
    assert!(store
        .list_page(&format!("{base}gone/"), None, None)
        .await
        .unwrap()
        .objects
        .is_empty());
}

/// A tenant switching encryption on: its clear objects keep reading, and
/// `recvault reencrypt` seals every one (a small index, a 20 MiB archive
/// through a staged copy, rendered media), checked against the index's
/// SHA-256; an archive that does not match its index is left and reported;
/// a second run seals nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reencrypt_seals_a_tenants_clear_objects_and_they_read_the_same() {
    let base = unique_prefix("reencrypt");
    let store = s3().store().await;
    let big = pseudo_random(20 * MIB + 17, 9);
    seed(
        store.as_ref(),
        &base,
        "big",
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:05:00Z",
        big.clone(),
    )
    .await;
    seed(
        store.as_ref(),
        &base,
        "small",
        "2026-11-23T10:00:00Z",
        "2026-11-23T10:05:00Z",
        b"small one".to_vec(),
    )
    .await;
    seed(
        store.as_ref(),
        &base,
        "changed",
        "2026-11-23T11:00:00Z",
        "2026-11-23T11:05:00Z",
        b"original".to_vec(),
    )
    .await;
    // Changed behind the index's back: its SHA-256 no longer matches.
    let changed =
        recvault::layout::SessionKeys::new(&base, "2026", "11", "23", "changed").archive();
    store
        .put(
            &changed,
            Bytes::from_static(b"tampered"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let hash = recvault::ingest::token_hash;
    let clear = format!(
        "[[tenants]]\nid = \"acme\"\nprefix = \"{base}\"\ningest_tokens = [\"sha256:{}\"]\n\n[[tenants.users]]\nname = \"qa\"\nauthorized_keys = [\"{}\"]\n",
        hash(crate::ingest::TOKEN_A),
        client_key("qa").public,
    );
    let server = Server::start(&clear);
    let calls = tempfile::tempdir().unwrap();
    let dir = crate::ingest::make_session(calls.path(), "call-re-1", 5, 100);
    let out = crate::ingest::push(&server, &dir, crate::ingest::TOKEN_A);
    assert!(out.status.success(), "{}", text(&out));
    let before = tempfile::tempdir().unwrap();
    let batch = "get -r /2026/11/23\n";
    let out = sftp_batch(server.port, "qa", client_key("qa"), batch, before.path());
    assert!(out.status.success(), "{}", text(&out));
    drop(server);

    let keys = tempfile::tempdir().unwrap();
    let keyset = new_keyset(&keys, "acme.json");
    let sealed_cfg = clear.replace(
        "ingest_tokens",
        &format!(
            "encryption = \"recvault\"\nkeyset = \"{}\"\ningest_tokens",
            keyset.display()
        ),
    );
    let server = Server::start(&sealed_cfg);
    let reencrypt = |server: &Server| {
        recvault_command()
            .args(["reencrypt", "--tenant", "acme", "--config"])
            .arg(server.dir.path().join("recvault.toml"))
            .output()
            .unwrap()
    };
    let out = reencrypt(&server);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    assert!(
        report.contains("/2026/11/23/changed: changed.tar.gz: its SHA-256")
            && report.contains("not the index's"),
        "{report}"
    );
    assert!(report.contains("sealed big.tar.gz (was clear)"), "{report}");
    let primary = primary_of(&keyset);
    let want = format!("tink-aes-gcm-hkdf-streaming key={primary}");
    for (key, mark, body) in raw_objects(store.as_ref(), &base).await {
        if key == changed {
            assert_eq!(mark, None, "left as it is");
            continue;
        }
        if recvault::layout::is_lease(&key) {
            continue;
        }
        assert!(
            !recvault::layout::is_staged(&key),
            "{key}: staged copy left"
        );
        assert_eq!(mark.as_deref(), Some(want.as_str()), "{key}");
        assert!(
            clear_signs(&key, &body).is_empty(),
            "{key}: {:?}",
            clear_signs(&key, &body)
        );
    }
    // Every file reads as it did (a fresh server: no cached metadata).
    drop(server);
    let server = Server::start(&sealed_cfg);
    let after = tempfile::tempdir().unwrap();
    let out = sftp_batch(server.port, "qa", client_key("qa"), batch, after.path());
    assert!(out.status.success(), "{}", text(&out));
    let files = |d: &Path| {
        let mut v = Vec::new();
        let mut stack = vec![d.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if !p.ends_with("info.json") {
                    v.push((p.strip_prefix(d).unwrap().to_path_buf(), sha256_file(&p)));
                }
            }
        }
        v.sort();
        v
    };
    let (b, a) = (files(before.path()), files(after.path()));
    assert!(b.len() >= 5, "{b:?}");
    assert_eq!(a, b);
    assert_eq!(
        std::fs::read(after.path().join("23/big/big.tar.gz")).unwrap(),
        big
    );
    let out = reencrypt(&server);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(": sealed "),
        "a second run seals nothing: {}",
        text(&out)
    );
}

/// Tink's side of AWS KMS, against moto's KMS: `mkkey` prints a new key's
/// ARN; `wrap WRAPPED URI` writes a new keyset wrapped by it;
/// `enc|dec WRAPPED URI AAD IN OUT` uses a wrapped keyset.
const TINK_KMS: &str = r#"
import io, os, sys, boto3, tink
from tink import streaming_aead
from tink.integration import awskms
streaming_aead.register()
kms = boto3.client("kms", endpoint_url=os.environ["KMS"], region_name="us-east-1",
                   aws_access_key_id=os.environ["AK"], aws_secret_access_key=os.environ["SK"])
mode = sys.argv[1]
if mode == "mkkey":
    print(kms.create_key(Description="recvault test")["KeyMetadata"]["Arn"])
    sys.exit(0)
path, uri = sys.argv[2], sys.argv[3]
remote = awskms.new_client(boto3_client=kms, key_uri=uri).get_aead(uri)
if mode == "wrap":
    h = tink.new_keyset_handle(streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB)
    open(path, "w").write(tink.json_proto_keyset_format.serialize_encrypted(h, remote, b""))
    print(h.keyset_info().primary_key_id)
    sys.exit(0)
h = tink.json_proto_keyset_format.parse_encrypted(open(path).read(), remote, b"")
p = h.primitive(streaming_aead.StreamingAead)
aad, src, dst = sys.argv[4].encode(), sys.argv[5], sys.argv[6]
data = open(src, "rb").read()
if mode == "enc":
    class Keep(io.BytesIO):
        def close(self):
            pass
    out = Keep()
    with p.new_encrypting_stream(out, aad) as e:
        e.write(data)
    open(dst, "wb").write(out.getvalue())
else:
    with p.new_decrypting_stream(io.BytesIO(data), aad) as d:
        open(dst, "wb").write(d.read())
"#;

fn tink_kms(args: &[&str]) -> std::process::Output {
    let s3 = s3();
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    std::process::Command::new(python)
        .arg("-c")
        .arg(TINK_KMS)
        .args(args)
        .env("KMS", &s3.endpoint)
        .env("AK", &s3.access_key)
        .env("SK", &s3.secret_key)
        .output()
        .unwrap()
}

/// A keyset wrapped by an AWS KMS key (moto's KMS): recvault wraps it as
/// Tink does, so Python Tink unwraps it and decrypts what the server stored
/// under it; a keyset Python Tink wrapped is read, rotated and served by
/// recvault; a wrapped keyset without its KMS key is refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_wrapped_keysets_interoperate_with_tink_both_ways() {
    let out = tink_kms(&["mkkey"]);
    assert!(out.status.success(), "{}", text(&out));
    let arn = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let uri = format!("aws-kms://{arn}");
    let keys = tempfile::tempdir().unwrap();
    let ours = keys.path().join("ours.json");
    let out = recvault_command()
        .args(["keys", "new", "--kms", &uri])
        .arg(&ours)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let wrapped = std::fs::read_to_string(&ours).unwrap();
    assert!(
        wrapped.contains("encryptedKeyset") && !wrapped.contains("keyData"),
        "{wrapped}"
    );
    // The server runs on it; what it stores, Tink decrypts with the keyset it unwraps.
    let prefix = unique_prefix("kms");
    let hash = recvault::ingest::token_hash;
    let config = format!(
        "[[tenants]]\nid = \"acme\"\nprefix = \"{prefix}\"\ningest_tokens = [\"sha256:{}\"]\nencryption = \"recvault\"\nkeyset = \"{}\"\nkeyset_kms_key = \"{uri}\"\n\n[[tenants.users]]\nname = \"qa\"\nauthorized_keys = [\"{}\"]\n",
        hash(crate::ingest::TOKEN_A),
        ours.display(),
        client_key("qa").public,
    );
    let server = Server::start(&config);
    let calls = tempfile::tempdir().unwrap();
    let dir = crate::ingest::make_session(calls.path(), "call-kms-1", 6, 50);
    let out = crate::ingest::push(&server, &dir, crate::ingest::TOKEN_A);
    assert!(out.status.success(), "{}", text(&out));
    let cwd = tempfile::tempdir().unwrap();
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        "get /2026/11/23/call-kms-1/call-kms-1.tar.gz\n",
        cwd.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let served = std::fs::read(cwd.path().join("call-kms-1.tar.gz")).unwrap();
    let store = s3().store().await;
    let key =
        recvault::layout::SessionKeys::new(&prefix, "2026", "11", "23", "call-kms-1").archive();
    let ct = recvault::store::read_all(store.as_ref(), &key, 1 << 30)
        .await
        .unwrap();
    std::fs::write(cwd.path().join("archive.ct"), &ct).unwrap();
    let relative = key.strip_prefix(&prefix).unwrap();
    let out = tink_kms(&[
        "dec",
        ours.to_str().unwrap(),
        &uri,
        &aad("acme", relative),
        cwd.path().join("archive.ct").to_str().unwrap(),
        cwd.path().join("archive.pt").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::read(cwd.path().join("archive.pt")).unwrap() == served);
    drop(server);

    // Tink wraps; recvault reads it, rotates it (Tink still reads it) and
    // serves what Tink encrypted under it.
    let theirs = keys.path().join("theirs.json");
    let out = tink_kms(&["wrap", theirs.to_str().unwrap(), &uri]);
    assert!(out.status.success(), "{}", text(&out));
    let primary = String::from_utf8_lossy(&out.stdout).trim().to_string();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = recvault_command()
        .args(["keys", "show", "--kms", &uri])
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("primary key: {primary}")),
        "{}",
        text(&out)
    );
    let out = recvault_command()
        .args(["keys", "rotate", "--kms", &uri])
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(cwd.path().join("plain"), b"recorded by tink").unwrap();
    let object = "sessions/2026/11/23/t-1/t-1.tar.gz";
    let out = tink_kms(&[
        "enc",
        theirs.to_str().unwrap(),
        &uri,
        &aad("acme", object),
        cwd.path().join("plain").to_str().unwrap(),
        cwd.path().join("plain.ct").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "Tink reads the keyset recvault rotated: {}",
        text(&out)
    );
    let prefix2 = unique_prefix("kms-theirs");
    let sealed_cfg = format!(
        "[[tenants]]\nid = \"acme\"\nprefix = \"{prefix2}\"\nencryption = \"recvault\"\nkeyset = \"{}\"\nkeyset_kms_key = \"{uri}\"\n\n[[tenants.users]]\nname = \"qa\"\nauthorized_keys = [\"{}\"]\n",
        theirs.display(),
        client_key("qa").public,
    );
    recvault::sample::put_session(
        store.as_ref(),
        &prefix2,
        "t-1",
        t("2026-11-23T09:00:00Z"),
        t("2026-11-23T09:05:00Z"),
        Bytes::from_static(b"recorded by tink"),
    )
    .await
    .unwrap();
    // The index in clear (a tenant switching on), the archive Tink's.
    let ct = std::fs::read(cwd.path().join("plain.ct")).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&theirs).unwrap()).unwrap();
    let mut ids: Vec<u64> = v["keysetInfo"]["keyInfo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keyId"].as_u64().unwrap())
        .collect();
    ids.retain(|id| v["keysetInfo"]["primaryKeyId"] != *id);
    assert_eq!(ids.len(), 1, "rotated: the old key is still there");
    let old_primary: u64 = primary.parse().unwrap();
    assert_eq!(ids[0], old_primary);
    // Tink sealed it with the new primary (recvault's rotation).
    let new_primary = v["keysetInfo"]["primaryKeyId"].as_u64().unwrap();
    let opts = PutOptions {
        mark: Some(format!("tink-aes-gcm-hkdf-streaming key={new_primary}")),
        ..PutOptions::default()
    };
    store
        .put(&format!("{prefix2}{object}"), Bytes::from(ct), opts)
        .await
        .unwrap();
    let server = Server::start(&sealed_cfg);
    let out = sftp_batch(
        server.port,
        "qa",
        client_key("qa"),
        "get /2026/11/23/t-1/t-1.tar.gz\n",
        cwd.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(cwd.path().join("t-1.tar.gz")).unwrap(),
        b"recorded by tink"
    );
    drop(server);

    // A wrapped keyset named without its KMS key: refused, with the reason.
    let out = recvault_command()
        .args(["keys", "show"])
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("keyset_kms_key"), "{}", text(&out));
}
