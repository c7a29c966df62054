//! Ingest HTTP handling: routing, bearer-token authentication, admission
//! (declared size, disk floor, upload slots), streaming a body to the spool,
//! and the one mapping from a [`Refusal`] to a status code. Errors are JSON
//! `{"error": "...", "status": N}`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::warn;

use super::session::{self, Committed, Completion, Refusal};
use super::spool::{self, FileRecord, SessionState, ALLOWED};
use super::unpack::{unpack, Part};
use super::Ingest;

use crate::http::Reply;

fn json_reply(code: StatusCode, body: Value) -> Reply {
    crate::http::json_reply(code, &body)
}

/// The one mapping from a refusal to its answer: status, `Retry-After`
/// (soon for a busy server, later for a full disk) and JSON body.
fn refusal_parts(e: Refusal) -> (StatusCode, Option<&'static str>, Bytes) {
    let (code, msg) = match e {
        Refusal::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
        Refusal::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
        Refusal::NotFound(m) => (StatusCode::NOT_FOUND, m),
        Refusal::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, m),
        Refusal::Conflict(m) => (StatusCode::CONFLICT, m),
        Refusal::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
        Refusal::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
        Refusal::Busy(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        Refusal::DiskFull(m) => (StatusCode::INSUFFICIENT_STORAGE, m),
        Refusal::Spool(e) => {
            warn!(error = %e, "ingest: local storage error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the spool could not be written; nothing was acknowledged".to_string(),
            )
        }
    };
    let retry_after = match code {
        StatusCode::SERVICE_UNAVAILABLE => Some("5"),
        StatusCode::INSUFFICIENT_STORAGE => Some("60"),
        _ => None,
    };
    (code, retry_after, crate::http::error_body(code, &msg))
}

fn error_reply(e: Refusal) -> Reply {
    let (code, retry_after, body) = refusal_parts(e);
    let mut reply = Response::builder()
        .status(code)
        .header("content-type", "application/json");
    if let Some(secs) = retry_after {
        reply = reply.header(hyper::header::RETRY_AFTER, secs);
    }
    reply
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The answer when a handler itself failed (it panicked): nothing was
/// acknowledged.
pub fn internal_error() -> Reply {
    error_reply(Refusal::Spool(std::io::Error::other(
        "request handler failed",
    )))
}

pub async fn handle(
    ingest: Arc<Ingest>,
    req: Request<Incoming>,
    peer: SocketAddr,
    slot: crate::listener::PreAuthSlot,
) -> Reply {
    match route(&ingest, req, peer, &slot).await {
        Ok(r) => r,
        Err(e) => error_reply(e),
    }
}

/// What a request asks for, from its method and path alone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Endpoint<'a> {
    Health,
    /// Something about session `id` (not yet checked: see [`session_id`]).
    Session {
        id: &'a str,
        action: Action<'a>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action<'a> {
    PutFile(&'a str),
    Complete,
    OneShot,
    Status,
}

impl<'a> Endpoint<'a> {
    /// The endpoint of `method` and `path`, or 404 for no such endpoint.
    /// Nothing is trusted: any bytes give an answer.
    pub(crate) fn of(method: &Method, path: &'a str) -> Result<Endpoint<'a>, Refusal> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if method == Method::GET && parts == ["healthz"] {
            return Ok(Endpoint::Health);
        }
        let no_endpoint = || Refusal::NotFound(format!("no such endpoint: {method} {path}"));
        if parts.len() < 3 || parts[0] != "v1" || parts[1] != "sessions" {
            return Err(no_endpoint());
        }
        let action = match (method.clone(), &parts[3..]) {
            (Method::PUT, ["files", name]) => Action::PutFile(name),
            (Method::POST, ["complete"]) => Action::Complete,
            (Method::POST, []) => Action::OneShot,
            (Method::GET, []) => Action::Status,
            _ => return Err(no_endpoint()),
        };
        Ok(Endpoint::Session {
            id: parts[2],
            action,
        })
    }
}

/// A session id from a path, checked: a leading dot is refused too, since
/// the spool keeps its own folders (`.archived`, `.quarantine`, `.trash-…`)
/// beside the sessions.
pub(crate) fn session_id(id: &str) -> Result<&str, Refusal> {
    if !crate::path::is_name(id) || id.starts_with('.') {
        return Err(Refusal::BadRequest(
            "session id must match [A-Za-z0-9._-]{1,128} and not start with a dot".into(),
        ));
    }
    Ok(id)
}

async fn route(
    ingest: &Arc<Ingest>,
    req: Request<Incoming>,
    peer: SocketAddr,
    slot: &crate::listener::PreAuthSlot,
) -> Result<Reply, Refusal> {
    let path = req.uri().path().to_string();
    let (id, action) = match Endpoint::of(req.method(), &path)? {
        Endpoint::Health => {
            // A load balancer's check: not a login, not a slow-loris either.
            slot.requested();
            return Ok(json_reply(StatusCode::OK, json!({"ok": true})));
        }
        Endpoint::Session { id, action } => (id, action),
    };
    let tenant = authenticate(ingest, &req, peer)?;
    slot.authenticated();
    let id = session_id(id)?;
    match action {
        Action::PutFile(name) => put_file(ingest, &tenant, id, name, req).await,
        Action::Complete => complete(ingest, &tenant, id).await,
        Action::OneShot => one_shot(ingest, &tenant, id, req).await,
        Action::Status => {
            let st = session::status(ingest, &tenant, id).await?;
            let mut body = state_json(&st);
            // Archived into the backup: where its delivery stands.
            if let Some(d) = ingest
                .delivery
                .as_ref()
                .filter(|_| st.status == super::spool::Status::Archived)
            {
                if let Some(state) = d.state(&tenant, id, st.index_key.as_deref()).await {
                    body["delivery"] = state;
                }
            }
            Ok(json_reply(StatusCode::OK, body))
        }
    }
}

/// The tenant of the request's bearer token. A wrong token is a failed
/// login: audited, and counted by the defender like a bad password.
fn authenticate(
    ingest: &Ingest,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<String, Refusal> {
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(Refusal::Unauthorized(
            "missing `Authorization: Bearer <token>`".into(),
        ));
    };
    match ingest.tenant_of(token.trim()) {
        // Its keyset could not be read at the start: nothing is taken in
        // that could not be archived encrypted; the gateway keeps it and
        // sends it again.
        Some(t) if !ingest.serves(&t) => Err(Refusal::Busy(format!(
            "tenant {t:?} is not started (see the server's log); nothing was stored, send again later"
        ))),
        Some(t) => Ok(t),
        None => {
            crate::shared::login_failed(
                &ingest.audit,
                &ingest.defender,
                "ingest",
                peer,
                "",
                "bearer-token",
                crate::auth::Denied::BadToken,
            );
            Err(Refusal::Unauthorized("unknown ingest token".into()))
        }
    }
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
) -> Result<Reply, Refusal> {
    if !ALLOWED.contains(&name) {
        return Err(Refusal::BadRequest(format!(
            "file name must be one of {}",
            ALLOWED.join(", ")
        )));
    }
    let max = super::validate::max_file_bytes(name, ingest.limits.ingest_max_file_bytes);
    let (_slot, part) = admit(ingest, tenant, &req, max, name, 1, &format!("{id}.{name}")).await?;
    let result = match receive(ingest, req, &part, max).await {
        Ok(record) => {
            let body = json!({"name": name, "size": record.size, "sha256": record.sha256});
            session::commit(ingest, tenant, id, name, &part, record)
                .await
                .map(|c| match c {
                    Committed::Created => json_reply(StatusCode::CREATED, body),
                    Committed::Replaced => json_reply(StatusCode::OK, body),
                    Committed::Unchanged => {
                        let mut body = body;
                        body["unchanged"] = json!(true);
                        json_reply(StatusCode::OK, body)
                    }
                })
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&part).await;
    result
}

async fn complete(ingest: &Arc<Ingest>, tenant: &str, id: &str) -> Result<Reply, Refusal> {
    let (done, st) = session::complete(ingest, tenant, id).await?;
    let code = match done {
        Completion::Archived => StatusCode::OK,
        Completion::Queued => StatusCode::ACCEPTED,
    };
    Ok(json_reply(code, state_json(&st)))
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
) -> Result<(tokio::sync::OwnedSemaphorePermit, PathBuf), Refusal> {
    let declared: Option<u64> = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(Refusal::TooLarge(format!(
            "{what} may hold at most {max} bytes"
        )));
    }
    check_disk(ingest, declared.unwrap_or(0).saturating_mul(room))?;
    let Ok(slot) = ingest.uploads.clone().try_acquire_owned() else {
        return Err(Refusal::Busy(
            "too many uploads in progress; retry shortly".into(),
        ));
    };
    let incoming = ingest.spool.root().join(tenant).join(".incoming");
    tokio::fs::create_dir_all(&incoming).await?;
    Ok((
        slot,
        incoming.join(format!("{stem}.{:016x}", rand::random::<u64>())),
    ))
}

fn check_disk(ingest: &Ingest, incoming: u64) -> Result<(), Refusal> {
    let floor = ingest.limits.ingest_min_free_bytes;
    let free = spool::free_bytes(ingest.spool.root())?;
    if free < floor.saturating_add(incoming) {
        warn!(
            free,
            floor, "ingest: refusing an upload, the spool disk is at its floor"
        );
        return Err(Refusal::DiskFull(
            "the spool disk is full; retry later (earlier sessions are safe)".into(),
        ));
    }
    Ok(())
}

/// Streams the request body (at most `max` bytes) into `part` and fsyncs
/// it; returns its size and SHA-256.
async fn receive(
    ingest: &Ingest,
    req: Request<Incoming>,
    part: &Path,
    max: u64,
) -> Result<FileRecord, Refusal> {
    let idle = Duration::from_secs(ingest.limits.ingest_idle_timeout_secs);
    let mut file = tokio::fs::File::create(part).await?;
    let mut body = req.into_body();
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let mut next_disk_check = 64 * 1024 * 1024u64;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(Refusal::Timeout(format!(
                    "no data for {}s; upload abandoned",
                    idle.as_secs()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Refusal::BadRequest(format!("upload broken off: {e}"))),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > max {
            return Err(Refusal::TooLarge(format!(
                "this upload may hold at most {max} bytes"
            )));
        }
        if size >= next_disk_check {
            check_disk(ingest, 0)?;
            next_disk_check += 64 * 1024 * 1024;
        }
        sha.update(&data);
        file.write_all(&data).await?;
    }
    file.sync_all().await?;
    Ok(FileRecord::new(size, hex::encode(sha.finalize())))
}

/// `POST /v1/sessions/{id}` with a tar of the session's files: each entry is
/// spooled like a PUT, then the session is completed.
async fn one_shot(
    ingest: &Arc<Ingest>,
    tenant: &str,
    id: &str,
    req: Request<Incoming>,
) -> Result<Reply, Refusal> {
    let limits = &ingest.limits;
    // The tar is spooled, then unpacked beside it: room for twice its size.
    let max = limits.ingest_max_session_bytes;
    let (_slot, tar_path) = admit(
        ingest,
        tenant,
        &req,
        max,
        "a session",
        2,
        &format!("{id}.tar"),
    )
    .await?;
    let result = match receive(ingest, req, &tar_path, max).await {
        Ok(_) => {
            let (tar, id2, max) = (
                tar_path.clone(),
                id.to_string(),
                limits.ingest_max_file_bytes,
            );
            let dir = tar_path.parent().map(Path::to_path_buf).unwrap_or_default();
            match tokio::task::spawn_blocking(move || unpack(&tar, &dir, &id2, max)).await {
                Ok(Ok(parts)) => commit_all(ingest, tenant, id, parts).await,
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Refusal::Spool(std::io::Error::other(e))),
            }
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&tar_path).await;
    result?;
    complete(ingest, tenant, id).await
}

async fn commit_all(
    ingest: &Arc<Ingest>,
    tenant: &str,
    id: &str,
    parts: Vec<Part>,
) -> Result<(), Refusal> {
    let mut result = Ok(());
    for p in parts {
        if result.is_ok() {
            result = session::commit(ingest, tenant, id, &p.name, &p.path, p.record)
                .await
                .map(drop);
        }
        let _ = tokio::fs::remove_file(&p.path).await;
    }
    result
}
