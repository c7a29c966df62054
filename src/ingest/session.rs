//! The session state machine, beside the spool: a received file is
//! committed into its session (or compared with it once complete), a
//! session is completed (queued for the archiver, or settled at once when
//! it is a re-delivery), and its state is read. One session changes under
//! its own lock; the spool's fsync, rename and remove work runs on blocking
//! threads, off the async workers.
//!
//! Requests are handled in tasks of their own (see `serve_connection`), so
//! a client that hangs up mid-request cannot stop a state change half-way
//! (a state saved as queued but never handed to the archiver, a file
//! renamed into place but not recorded).
//!
//! What can go wrong is a [`Refusal`]; the HTTP layer maps each kind to a
//! status code in one place.

use std::path::Path;
use std::sync::Arc;

use tracing::info;

use super::spool::{FileRecord, SessionState, Status};
use super::validate::parse_info;
use super::Ingest;

/// Why a request was not done: each kind has one HTTP status.
#[derive(Debug)]
pub enum Refusal {
    BadRequest(String),
    Unauthorized(String),
    NotFound(String),
    Timeout(String),
    Conflict(String),
    TooLarge(String),
    Unprocessable(String),
    Busy(String),
    DiskFull(String),
    /// The spool could not be written: nothing was acknowledged.
    Spool(std::io::Error),
}

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Self {
        Refusal::Spool(e)
    }
}

/// What committing a received file did.
pub enum Committed {
    /// A new file of the session.
    Created,
    /// A file of the same name received again before completion.
    Replaced,
    /// The session is complete and already holds exactly this file.
    Unchanged,
}

/// Where a completed session stands.
pub enum Completion {
    /// Archived (now, as an identical re-delivery, or before).
    Archived,
    /// Queued for (or being worked on by) the archiver.
    Queued,
}

/// The state of a session the tenant sent.
pub async fn status(ingest: &Ingest, tenant: &str, id: &str) -> Result<SessionState, Refusal> {
    ingest
        .spool
        .load(tenant, id)
        .await?
        .ok_or_else(|| Refusal::NotFound(format!("no session {id:?}")))
}

/// Makes the received file at `part` (fsync'd; its size and SHA-256 in
/// `record`) the session's `name`, or compares it with what the session
/// holds once it is complete. The caller removes `part` when it is left over.
pub async fn commit(
    ingest: &Arc<Ingest>,
    tenant: &str,
    id: &str,
    name: &str,
    part: &Path,
    record: FileRecord,
) -> Result<Committed, Refusal> {
    let lock = ingest.lock_for(tenant, id);
    let _guard = lock.lock().await;
    let mut st = ingest
        .spool
        .load(tenant, id)
        .await?
        .unwrap_or_else(|| SessionState::new(tenant, id));
    if st.status != Status::Receiving {
        return match st.files.get(name) {
            Some(r) if *r == record && st.status != Status::Failed => Ok(Committed::Unchanged),
            _ if st.status == Status::Failed => Err(Refusal::Conflict(format!(
                "session {id:?} failed: {}",
                st.reason.clone().unwrap_or_default()
            ))),
            _ => Err(Refusal::Conflict(format!(
                "session {id:?} is already complete with a different {name}"
            ))),
        };
    }
    let previous = st.files.get(name).map_or(0, |r| r.size);
    let total = st.bytes() - previous + record.size;
    let max = ingest.limits.ingest_max_session_bytes;
    if total > max {
        return Err(Refusal::TooLarge(format!(
            "a session may hold at most {max} bytes"
        )));
    }
    ingest.spool.adopt(tenant, id, name, part).await?;
    let replaced = st.files.insert(name.to_string(), record).is_some();
    ingest.spool.save(&st).await?;
    Ok(if replaced {
        Committed::Replaced
    } else {
        Committed::Created
    })
}

/// The call is over: validates `info.json`, settles a re-delivery of an
/// archived session at once, or queues the session for the archiver.
pub async fn complete(
    ingest: &Arc<Ingest>,
    tenant: &str,
    id: &str,
) -> Result<(Completion, SessionState), Refusal> {
    let lock = ingest.lock_for(tenant, id);
    let _guard = lock.lock().await;
    let Some(mut st) = ingest.spool.load(tenant, id).await? else {
        return Err(Refusal::NotFound(format!(
            "no files were received for session {id:?}"
        )));
    };
    match st.status {
        Status::Archived => return Ok((Completion::Archived, st)),
        Status::Queued | Status::Archiving => return Ok((Completion::Queued, st)),
        Status::Failed => {
            return Err(Refusal::Conflict(format!(
                "session {id:?} failed: {}",
                st.reason.unwrap_or_default()
            )))
        }
        Status::Receiving => {}
    }
    let info_path = ingest.spool.files_dir(tenant, id).join("info.json");
    let Ok(info_bytes) = tokio::fs::read(info_path).await else {
        return Err(Refusal::Unprocessable(
            "info.json was not received; send it, then complete again".into(),
        ));
    };
    let info = match parse_info(id, &info_bytes) {
        Ok(i) => i,
        Err(reason) => {
            st.status = Status::Failed;
            st.reason = Some(reason.clone());
            ingest.spool.quarantine(&st).await?;
            ingest
                .audit
                .ingest(tenant, id, "failed", serde_json::json!({"reason": reason}));
            return Err(Refusal::Unprocessable(reason));
        }
    };
    // A re-delivery of an archived session: settle it now when storage answers.
    match ingest
        .archiver
        .settle_if_stored(st.clone(), info.started)
        .await
    {
        Ok(Some(done)) if done.status == Status::Archived => {
            return Ok((Completion::Archived, done))
        }
        Ok(Some(done)) => return Err(Refusal::Conflict(done.reason.unwrap_or_default())),
        Ok(None) => {}
        Err(e) => return Err(Refusal::Spool(std::io::Error::other(e))),
    }
    st.status = Status::Queued;
    st.completed_at = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    ingest.spool.save(&st).await?;
    ingest.archiver.enqueue(tenant, id);
    ingest.audit.ingest(
        tenant,
        id,
        "received",
        serde_json::json!({"files": st.files.len(), "bytes": st.bytes()}),
    );
    info!(
        tenant,
        session = id,
        files = st.files.len(),
        bytes = st.bytes(),
        "session complete; queued for archiving"
    );
    Ok((Completion::Queued, st))
}
