//! The audit trail: one JSON object per line, a stable stream apart from logs.
//!
//! Events: `login` (success or failure), `download` (bytes served,
//! duration), `erase` (a session removed by a user holding `delete`),
//! `render` (a derived entry rendered by this process: bytes and duration,
//! or the error), `job` (what a job over every session, such as `verify`,
//! found or changed in one session) and `job_end` (its totals, and whether
//! it ran to the end).
//! Field names are a contract for compliance tooling; add fields, never rename.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

pub struct Audit {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Audit {
    pub fn stdout() -> Self {
        Self {
            out: Mutex::new(Box::new(std::io::stdout())),
        }
    }

    /// For commands whose standard output is their report.
    pub fn stderr() -> Self {
        Self {
            out: Mutex::new(Box::new(std::io::stderr())),
        }
    }

    pub fn file(path: &Path) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            out: Mutex::new(Box::new(f)),
        })
    }

    fn emit(&self, mut event: serde_json::Value) {
        if let Some(obj) = event.as_object_mut() {
            obj.insert(
                "ts".into(),
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            );
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{event}");
        let _ = out.flush();
    }

    pub fn login(
        &self,
        protocol: &str,
        peer: SocketAddr,
        user: &str,
        tenant: Option<&str>,
        method: &str,
        ok: bool,
    ) {
        // Unknown user names are attacker-chosen: bound them.
        let user: String = user.chars().take(64).collect();
        self.emit(json!({
            "event": "login", "protocol": protocol, "peer": peer.to_string(), "user": user,
            "tenant": tenant, "method": method, "ok": ok,
        }));
    }

    #[allow(clippy::too_many_arguments)]
    pub fn download(
        &self,
        protocol: &str,
        peer: SocketAddr,
        user: &str,
        tenant: &str,
        path: &str,
        bytes: u64,
        size: u64,
        took: Duration,
    ) {
        self.emit(json!({
            "event": "download", "protocol": protocol, "peer": peer.to_string(), "user": user,
            "tenant": tenant, "path": path, "bytes": bytes, "size": size,
            "duration_ms": took.as_millis() as u64,
        }));
    }

    pub fn erase(
        &self,
        protocol: &str,
        peer: SocketAddr,
        user: &str,
        tenant: &str,
        path: &str,
        objects: usize,
    ) {
        self.emit(json!({
            "event": "erase", "protocol": protocol, "peer": peer.to_string(), "user": user,
            "tenant": tenant, "path": path, "objects": objects,
        }));
    }

    /// A derived entry rendered here: its size, or why it failed.
    pub fn render(&self, tenant: &str, path: &str, outcome: Result<u64, &String>, took: Duration) {
        let ms = took.as_millis() as u64;
        self.emit(match outcome {
            Ok(bytes) => json!({
                "event": "render", "tenant": tenant, "path": path, "ok": true,
                "bytes": bytes, "duration_ms": ms,
            }),
            Err(e) => json!({
                "event": "render", "tenant": tenant, "path": path, "ok": false,
                "error": e, "duration_ms": ms,
            }),
        });
    }

    /// What a job over every session found or changed in one session.
    pub fn job_finding(&self, kind: &str, tenant: &str, path: &str, what: &str) {
        self.emit(json!({
            "event": "job", "kind": kind, "tenant": tenant, "path": path, "finding": what,
        }));
    }

    /// A job over every session ended: its totals, and whether it ran to the end.
    pub fn job_end(&self, kind: &str, tenant: &str, sessions: u64, findings: u64, complete: bool) {
        self.emit(json!({
            "event": "job_end", "kind": kind, "tenant": tenant, "sessions": sessions,
            "findings": findings, "complete": complete,
        }));
    }
}
