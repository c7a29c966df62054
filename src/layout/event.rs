//! The schema of one event (SPEC §13): what the event log's objects hold
//! and webhooks receive. [`crate::events`] records and delivers them; the
//! audit funnel makes them.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::EventRef;

/// The event types.
pub const KINDS: [&str; 7] = [
    "call.archived",
    "call.failed",
    "render.completed",
    "render.failed",
    "call.erased",
    "call.delivered",
    "delivery.failed",
];

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: String,
    pub tenant: String,
    pub session_id: String,
    /// The call's day, `YYYY-MM-DD` (unknown for a session that failed
    /// before its index was read).
    pub day: Option<String>,
    /// A file of the call (render events).
    pub name: Option<String>,
    pub detail: Value,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Event {
    /// A new event of this node (`node`: its audit name).
    pub fn new(
        kind: &str,
        tenant: &str,
        session: &str,
        day: Option<String>,
        name: Option<String>,
        detail: Value,
        node: &str,
    ) -> Event {
        let now = Utc::now();
        let node: String = node
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let node = if node.is_empty() { "node".into() } else { node };
        let id = format!(
            "{}.{node}.{:06}",
            now.format(crate::layout::EVENT_STAMP),
            SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000
        );
        Event {
            id,
            kind: kind.to_string(),
            created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            tenant: tenant.to_string(),
            session_id: session.to_string(),
            day,
            name,
            detail,
        }
    }

    /// An event about the tree path `/YYYY/MM/DD/<id>[/<name>]`.
    pub fn at_path(
        kind: &str,
        tenant: &str,
        path: &str,
        detail: Value,
        node: &str,
    ) -> Option<Event> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (day, session, name) = match parts.as_slice() {
            [y, m, d, s] => (format!("{y}-{m}-{d}"), *s, None),
            [y, m, d, s, n] => (format!("{y}-{m}-{d}"), *s, Some(n.to_string())),
            _ => return None,
        };
        Some(Event::new(
            kind,
            tenant,
            session,
            Some(day),
            name,
            detail,
            node,
        ))
    }

    /// The API's id of the call, when its day is known.
    pub fn call_id(&self) -> Option<String> {
        Some(format!("{}_{}", self.day.as_ref()?, self.session_id))
    }

    /// Its entry in the log, stored at `stored`.
    pub fn reference(&self, stored: DateTime<Utc>) -> EventRef {
        EventRef {
            stored: stored.format(crate::layout::EVENT_STAMP).to_string(),
            id: self.id.clone(),
            kind: self.kind.clone(),
            session: self.session_id.clone(),
            day: self.day.clone(),
            name: self.name.clone(),
        }
    }

    /// The JSON a webhook receives (and the event log's object holds).
    pub fn body(&self) -> Value {
        json!({
            "id": self.id,
            "type": self.kind,
            "created_at": self.created_at,
            "tenant": self.tenant,
            "call": {
                "id": self.call_id(),
                "session_id": self.session_id,
                "path": self.day.as_ref().map(|d| format!("/{}/{}", d.replace('-', "/"), self.session_id)),
            },
            "name": self.name,
            "detail": self.detail,
        })
    }
}

/// An event as the log lists it (from its key alone).
pub fn listed(r: &EventRef) -> Value {
    json!({
        "id": r.id,
        "position": r.position(),
        "type": r.kind,
        "created_at": EventRef::time_of(&r.id).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "call_id": r.day.as_ref().map(|d| format!("{d}_{}", r.session)),
        "session_id": r.session,
        "name": r.name,
    })
}
