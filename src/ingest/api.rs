//! Ingest HTTP handlers: routing, authentication, uploads, completion,
//! status. Errors are JSON `{"error": "...", "status": N}` with one mapping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::spool::{self, FileRecord, SessionState, Status, ALLOWED};
use super::validate::parse_info;
use super::Ingest;

type Reply = Response<Full<Bytes>>;

/// An API error: its HTTP status and a message that says what to do.
struct ApiError(StatusCode, String);

impl ApiError {
    fn new(code: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(code, msg.into())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        warn!(error = %e, "ingest: local storage error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the spool could not be written; nothing was acknowledged",
        )
    }
}

fn json_reply(code: StatusCode, body: Value) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error_reply(e: ApiError) -> Reply {
    json_reply(e.0, json!({"error": e.1, "status": e.0.as_u16()}))
}

pub async fn handle(ingest: Arc<Ingest>, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    match route(&ingest, req, peer).await {
        Ok(r) => r,
        Err(e) => error_reply(e),
    }
}

async fn route(
    ingest: &Arc<Ingest>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Reply, ApiError> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if req.method() == Method::GET && parts == ["healthz"] {
        return Ok(json_reply(StatusCode::OK, json!({"ok": true})));
    }
    if parts.len() < 3 || parts[0] != "v1" || parts[1] != "sessions" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {path}", req.method()),
        ));
    }
    let tenant = authenticate(ingest, &req, peer)?;
    let id = parts[2];
    if !crate::vfs::path::is_name(id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "session id must match [A-Za-z0-9._-]{1,128} (and not be . or ..)",
        ));
    }
    match (req.method().clone(), &parts[3..]) {
        (Method::PUT, ["files", name]) => put_file(ingest, &tenant, id, name, req).await,
        (Method::POST, ["complete"]) => complete(ingest, &tenant, id).await,
        (Method::POST, []) => one_shot(ingest, &tenant, id, req).await,
        (Method::GET, []) => status(ingest, &tenant, id),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {path}", req.method()),
        )),
    }
}

fn authenticate(
    ingest: &Ingest,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<String, ApiError> {
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>`",
        ));
    };
    match ingest.tenant_of(token.trim()) {
        Some(t) => Ok(t),
        None => {
            if let Some(ban) = ingest.shared.defender.failure(peer.ip()) {
                warn!(%peer, secs = ban.as_secs(), "ingest: address banned after repeated bad tokens");
            }
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown ingest token",
            ))
        }
    }
}

fn status(ingest: &Ingest, tenant: &str, id: &str) -> Result<Reply, ApiError> {
    let st = ingest
        .spool
        .load(tenant, id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no session {id:?}")))?;
    Ok(json_reply(StatusCode::OK, state_json(&st)))
}

fn state_json(st: &SessionState) -> Value {
    json!({
        "session": st.id,
        "status": st.status,
        "reason": st.reason,
        "files": st.files,
        "status_url": format!("/v1/sessions/{}", st.id),
    })
}

async fn put_file(
    ingest: &Arc<Ingest>,
    tenant: &str,
    id: &str,
    name: &str,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    if !ALLOWED.contains(&name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("file name must be one of {}", ALLOWED.join(", ")),
        ));
    }
    let limits = &ingest.shared.limits;
    let (_slot, part) = admit(
        ingest,
        tenant,
        &req,
        limits.ingest_max_file_bytes,
        "a file",
        1,
        &format!("{id}.{name}"),
    )
    .await?;
    let received = receive(ingest, req, &part, limits.ingest_max_file_bytes).await;
    let (size, sha) = match received {
        Ok(x) => x,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    let result = commit(ingest, tenant, id, name, &part, size, &sha).await;
    let _ = tokio::fs::remove_file(&part).await;
    result
}

/// Admits an upload: its declared size within `max`, room on the spool disk
/// for `room` times that size, a free upload slot; returns the slot and a
/// fresh part path in the tenant's incoming folder.
async fn admit(
    ingest: &Ingest,
    tenant: &str,
    req: &Request<Incoming>,
    max: u64,
    what: &str,
    room: u64,
    stem: &str,
) -> Result<(tokio::sync::OwnedSemaphorePermit, std::path::PathBuf), ApiError> {
    let declared: Option<u64> = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} may hold at most {max} bytes"),
        ));
    }
    check_disk(ingest, declared.unwrap_or(0).saturating_mul(room))?;
    let Ok(slot) = ingest.uploads.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many uploads in progress; retry shortly",
        ));
    };
    let incoming = ingest.spool.root().join(tenant).join(".incoming");
    tokio::fs::create_dir_all(&incoming).await?;
    Ok((
        slot,
        incoming.join(format!("{stem}.{:016x}", rand::random::<u64>())),
    ))
}

fn check_disk(ingest: &Ingest, incoming: u64) -> Result<(), ApiError> {
    let floor = ingest.shared.limits.ingest_min_free_bytes;
    let free = spool::free_bytes(ingest.spool.root())?;
    if free < floor.saturating_add(incoming) {
        warn!(
            free,
            floor, "ingest: refusing an upload, the spool disk is at its floor"
        );
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "the spool disk is full; retry later (earlier sessions are safe)",
        ));
    }
    Ok(())
}

/// Streams the request body (at most `max` bytes) into `part` and fsyncs
/// it; returns size and SHA-256.
async fn receive(
    ingest: &Ingest,
    req: Request<Incoming>,
    part: &std::path::Path,
    max: u64,
) -> Result<(u64, String), ApiError> {
    let limits = &ingest.shared.limits;
    let idle = Duration::from_secs(limits.ingest_idle_timeout_secs);
    let mut file = tokio::fs::File::create(part).await?;
    let mut body = req.into_body();
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let mut next_disk_check = 64 * 1024 * 1024u64;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("no data for {}s; upload abandoned", idle.as_secs()),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("upload broken off: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("this upload may hold at most {max} bytes"),
            ));
        }
        if size >= next_disk_check {
            check_disk(ingest, 0)?;
            next_disk_check += 64 * 1024 * 1024;
        }
        sha.update(&data);
        file.write_all(&data).await?;
    }
    file.sync_all().await?;
    Ok((size, hex::encode(sha.finalize())))
}

/// Makes a received file part of the session (or compares it with what
/// the session already holds, once it is complete).
async fn commit(
    ingest: &Arc<Ingest>,
    tenant: &str,
    id: &str,
    name: &str,
    part: &std::path::Path,
    size: u64,
    sha: &str,
) -> Result<Reply, ApiError> {
    let lock = ingest.lock_for(tenant, id);
    let _guard = lock.lock().await;
    let mut st = ingest
        .spool
        .load(tenant, id)?
        .unwrap_or_else(|| SessionState::new(tenant, id));
    let record = FileRecord {
        size,
        sha256: sha.to_string(),
    };
    if st.status != Status::Receiving {
        return match st.files.get(name) {
            Some(r) if *r == record && st.status != Status::Failed => Ok(json_reply(
                StatusCode::OK,
                json!({"name": name, "size": size, "sha256": sha, "unchanged": true}),
            )),
            _ if st.status == Status::Failed => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "session {id:?} failed: {}",
                    st.reason.clone().unwrap_or_default()
                ),
            )),
            _ => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("session {id:?} is already complete with a different {name}"),
            )),
        };
    }
    let previous = st.files.get(name).map_or(0, |r| r.size);
    let total = st.bytes() - previous + size;
    let max = ingest.shared.limits.ingest_max_session_bytes;
    if total > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a session may hold at most {max} bytes"),
        ));
    }
    let files = ingest.spool.files_dir(tenant, id);
    std::fs::create_dir_all(&files)?;
    std::fs::rename(part, files.join(name))?;
    spool::sync_dir(&files)?;
    let replaced = st.files.insert(name.to_string(), record).is_some();
    ingest.spool.save(&st)?;
    let code = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_reply(
        code,
        json!({"name": name, "size": size, "sha256": sha}),
    ))
}

async fn complete(ingest: &Arc<Ingest>, tenant: &str, id: &str) -> Result<Reply, ApiError> {
    let lock = ingest.lock_for(tenant, id);
    let _guard = lock.lock().await;
    let Some(mut st) = ingest.spool.load(tenant, id)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no files were received for session {id:?}"),
        ));
    };
    match st.status {
        Status::Archived => return Ok(json_reply(StatusCode::OK, state_json(&st))),
        Status::Queued | Status::Archiving => {
            return Ok(json_reply(StatusCode::ACCEPTED, state_json(&st)))
        }
        Status::Failed => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("session {id:?} failed: {}", st.reason.unwrap_or_default()),
            ))
        }
        Status::Receiving => {}
    }
    let files = ingest.spool.files_dir(tenant, id);
    let Ok(info_bytes) = std::fs::read(files.join("info.json")) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "info.json was not received; send it, then complete again",
        ));
    };
    let info = match parse_info(id, &info_bytes) {
        Ok(i) => i,
        Err(reason) => {
            st.status = Status::Failed;
            st.reason = Some(reason.clone());
            ingest.spool.quarantine(&st)?;
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reason));
        }
    };
    // A re-delivery of an archived session: settle it now when storage answers.
    match ingest
        .archiver
        .settle_if_stored(st.clone(), info.started)
        .await
    {
        Ok(Some(done)) if done.status == Status::Archived => {
            return Ok(json_reply(StatusCode::OK, state_json(&done)))
        }
        Ok(Some(done)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                done.reason.unwrap_or_default(),
            ))
        }
        Ok(None) => {}
        Err(e) => return Err(std::io::Error::other(e).into()),
    }
    st.status = Status::Queued;
    st.completed_at = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    ingest.spool.save(&st)?;
    ingest.archiver.enqueue(tenant, id);
    info!(
        tenant,
        session = id,
        files = st.files.len(),
        bytes = st.bytes(),
        "session complete; queued for archiving"
    );
    Ok(json_reply(StatusCode::ACCEPTED, state_json(&st)))
}

/// `POST /v1/sessions/{id}` with a tar of the session's files: each entry is
/// spooled like a PUT, then the session is completed.
async fn one_shot(
    ingest: &Arc<Ingest>,
    tenant: &str,
    id: &str,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let limits = &ingest.shared.limits;
    // The tar is spooled, then unpacked beside it: room for twice its size.
    let (_slot, tar_path) = admit(
        ingest,
        tenant,
        &req,
        limits.ingest_max_session_bytes,
        "a session",
        2,
        &format!("{id}.tar"),
    )
    .await?;
    let incoming = tar_path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let received = receive(ingest, req, &tar_path, limits.ingest_max_session_bytes).await;
    let result = match received {
        Ok(_) => {
            let (tar, dir, id2, max) = (
                tar_path.clone(),
                incoming.clone(),
                id.to_string(),
                limits.ingest_max_file_bytes,
            );
            match tokio::task::spawn_blocking(move || unpack(&tar, &dir, &id2, max)).await {
                Ok(Ok(parts)) => commit_all(ingest, tenant, id, parts).await,
                Ok(Err(e)) => Err(e),
                Err(e) => Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.to_string(),
                )),
            }
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&tar_path).await;
    result?;
    complete(ingest, tenant, id).await
}

/// A spooled file waiting to be committed: name, part path, size, SHA-256.
type Part = (String, std::path::PathBuf, u64, String);

async fn commit_all(
    ingest: &Arc<Ingest>,
    tenant: &str,
    id: &str,
    parts: Vec<Part>,
) -> Result<(), ApiError> {
    let mut result = Ok(());
    for (name, path, size, sha) in &parts {
        if result.is_ok() {
            result = commit(ingest, tenant, id, name, path, *size, sha)
                .await
                .map(|_| ());
        }
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

/// Unpacks a session tar into part files, refusing anything but the allowed
/// regular files (no links, no paths, no duplicates, no oversize entries).
fn unpack(
    tar_path: &std::path::Path,
    dir: &std::path::Path,
    id: &str,
    max: u64,
) -> Result<Vec<Part>, ApiError> {
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, msg);
    let file = std::fs::File::open(tar_path)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut parts: Vec<Part> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("the body is not a tar archive: {e}")))?;
    let cleanup = |parts: &Vec<Part>| parts.iter().for_each(|p| drop(std::fs::remove_file(&p.1)));
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                cleanup(&parts);
                return Err(bad(format!("the tar archive is damaged: {e}")));
            }
        };
        let kind = entry.header().entry_type();
        let raw = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = raw.trim_start_matches("./").to_string();
        if kind.is_dir() && (name.is_empty() || name == ".") {
            continue;
        }
        let refuse = if !kind.is_file() {
            Some(format!("tar entry {raw:?} is not a regular file"))
        } else if !ALLOWED.contains(&name.as_str()) {
            Some(format!(
                "tar entry {raw:?}: names must be one of {}",
                ALLOWED.join(", ")
            ))
        } else if parts.iter().any(|p| p.0 == name) {
            Some(format!("tar entry {name:?} appears twice"))
        } else if entry.size() > max {
            Some(format!("tar entry {name:?} is larger than {max} bytes"))
        } else {
            None
        };
        if let Some(msg) = refuse {
            cleanup(&parts);
            return Err(bad(msg));
        }
        let path = dir.join(format!("{id}.{name}.{:016x}", rand::random::<u64>()));
        let mut out = std::fs::File::create(&path)?;
        let mut hasher = HashingWriter {
            inner: &mut out,
            sha: Sha256::new(),
            n: 0,
        };
        std::io::copy(&mut entry, &mut hasher)?;
        let (size, sha) = (hasher.n, hex::encode(hasher.sha.finalize()));
        out.sync_all()?;
        parts.push((name, path, size, sha));
    }
    if parts.is_empty() {
        return Err(bad("the tar archive holds no session files".into()));
    }
    Ok(parts)
}

struct HashingWriter<'a> {
    inner: &'a mut std::fs::File,
    sha: Sha256,
    n: u64,
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
