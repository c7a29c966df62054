//! The day index (SPEC §16): one object per tenant and day listing what a
//! listing and a filter need of each session, so that neither reads every
//! session's `info.json`. One reader ([`DayIndex::parse`]) and one writer
//! ([`DayIndex::to_bytes`]); the keys are in [`super::day_index`].
//!
//! ```json
//! {"v":1,"day":"2026-11-23",
//!  "sessions":{"c-1":{"started_at":"…","ended_at":"…","ingested_at":"…",
//!     "agent":{"id":"a-7","name":"Ann"},"user":{"id":"u-42"},
//!     "queue":"sales","tags":{"k":"v"},
//!     "entries":{"c-1.mp4":31415926,"c-1.tar.gz":1234,"info.json":2048}}},
//!  "erased":{"c-0":"2026-11-23T12:00:00Z"}}
//! ```
//!
//! Every entry of a session folder shows the call's end as its time, so an
//! entry carries only its size. `erased` appears only in a node's own shard
//! (the mode for stores that ignore conditional writes): a session erased by
//! one node that another node's shard still lists.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::index::SessionIndex;

/// The version this code writes.
pub const VERSION: u32 = 1;

/// Largest day index read (10,000 sessions take about 4 MB); a larger one
/// is rebuilt from the sessions rather than held in memory.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// One day's index, or one node's shard of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DayIndex {
    #[serde(default)]
    pub v: u32,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub day: String,
    #[serde(default)]
    pub sessions: BTreeMap<String, DayEntry>,
    /// Sessions erased (id → when), in a node's shard only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub erased: BTreeMap<String, String>,
}

/// What the day index keeps of one session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DayEntry {
    pub started_at: String,
    pub ended_at: String,
    /// When ingest accepted it (orders an entry against an erase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_at: Option<String>,
    #[serde(default)]
    pub agent: Party,
    #[serde(default)]
    pub user: Party,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Every entry the session folder shows: name → size in bytes.
    #[serde(default)]
    pub entries: BTreeMap<String, u64>,
}

/// A party of a call as the gateway named it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A JSON value as text: a string as it is, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl DayEntry {
    /// The entry of a session, from its index (`info_len`: the size of the
    /// stored `info.json`) and the derived entries its folder shows.
    /// `None` for an index without start and end (it cannot be placed).
    pub fn of(index: &SessionIndex, info_len: u64) -> Option<DayEntry> {
        let (started, ended) = (index.started()?, index.ended()?);
        let party = |role: &str| {
            let p = index.gateway.get(role);
            Party {
                id: p.and_then(|p| p.get("id")).map(text).unwrap_or_default(),
                name: p.and_then(|p| p.get("name")).map(text),
            }
        };
        let tags = index
            .gateway
            .get("tags")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default();
        let mut entries: BTreeMap<String, u64> = index
            .recvault
            .objects
            .iter()
            .map(|(n, d)| (n.clone(), d.size))
            .collect();
        entries.insert(super::INDEX.to_string(), info_len);
        for (name, size) in index.shown_derived() {
            entries.entry(name).or_insert(size);
        }
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        Some(DayEntry {
            started_at: stamp(started),
            ended_at: stamp(ended),
            ingested_at: index.recvault.ingested_at.clone(),
            agent: party("agent"),
            user: party("user"),
            queue: index.gateway.get("queue").map(text),
            tags,
            entries,
        })
    }

    /// The call's end: the time of the session folder and of every entry in it.
    pub fn ended(&self) -> Option<DateTime<Utc>> {
        time(&self.ended_at)
    }

    pub fn started(&self) -> Option<DateTime<Utc>> {
        time(&self.started_at)
    }
}

impl DayIndex {
    pub fn new(day: &str) -> Self {
        DayIndex {
            v: VERSION,
            day: day.to_string(),
            ..DayIndex::default()
        }
    }

    /// Reads a stored day index. Sessions and entries whose names are not
    /// plain names are left out: what storage holds is not trusted to name
    /// keys or listing lines.
    pub fn parse(bytes: &[u8]) -> Result<DayIndex, String> {
        let mut d: DayIndex =
            serde_json::from_slice(bytes).map_err(|e| format!("day index unreadable: {e}"))?;
        d.sessions.retain(|id, _| crate::path::is_name(id));
        d.erased.retain(|id, _| crate::path::is_name(id));
        for e in d.sessions.values_mut() {
            e.entries.retain(|name, _| crate::path::is_name(name));
        }
        Ok(d)
    }

    /// The stored form: compact JSON, keys in order (the same sessions
    /// always give the same bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The newest call end of the day; `None` when it lists no session.
    pub fn newest(&self) -> Option<DateTime<Utc>> {
        self.sessions.values().filter_map(DayEntry::ended).max()
    }

    /// Merges node shards (and the day's shared index) into one view: every
    /// session any of them lists, unless a shard erased it after it was
    /// ingested.
    pub fn merge(day: &str, parts: impl IntoIterator<Item = DayIndex>) -> DayIndex {
        let mut out = DayIndex::new(day);
        let mut erased: BTreeMap<String, String> = BTreeMap::new();
        for part in parts {
            for (id, e) in part.sessions {
                // The latest ingest of a session id wins (one erased and
                // delivered again).
                match out.sessions.get(&id) {
                    Some(had)
                        if had.ingested_at.as_deref().and_then(time)
                            >= e.ingested_at.as_deref().and_then(time) => {}
                    _ => {
                        out.sessions.insert(id, e);
                    }
                }
            }
            for (id, when) in part.erased {
                let newest = erased.entry(id).or_default();
                if time(&when) > time(newest) {
                    *newest = when;
                }
            }
        }
        for (id, when) in erased {
            let erased_at = time(&when);
            let ingested = out
                .sessions
                .get(&id)
                .and_then(|e| e.ingested_at.as_deref().and_then(time));
            if erased_at.is_some() && ingested <= erased_at {
                out.sessions.remove(&id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(id: &str, extra: &str) -> SessionIndex {
        SessionIndex::parse(format!(
            r#"{{"session_id":"{id}","started_at":"2026-11-23T10:00:00Z","ended_at":"2026-11-23T10:05:00.5Z",
            "agent":{{"id":"a-7","name":"Ann"}},"user":{{"id":42}},"queue":"sales","tags":{{"k":"v"}}{extra},
            "recvault":{{"v":1,"ingested_at":"2026-11-23T10:06:00Z","objects":{{"{id}.tar.gz":{{"size":5,"sha256":"ab"}}}},
              "derived":{{"{id}.mp3":{{"size":384}},"{id}.mp4.lease":{{"size":1}}}}}}}}"#
        ).as_bytes())
        .unwrap()
    }

    #[test]
    fn an_entry_keeps_what_listings_and_filters_need() {
        let e = DayEntry::of(&index("c-1", ""), 777).unwrap();
        assert_eq!(e.agent.id, "a-7");
        assert_eq!(e.agent.name.as_deref(), Some("Ann"));
        assert_eq!(e.user.id, "42");
        assert_eq!(e.queue.as_deref(), Some("sales"));
        assert_eq!(e.tags["k"], "v");
        assert_eq!(
            e.entries
                .iter()
                .map(|(n, s)| (n.as_str(), *s))
                .collect::<Vec<_>>(),
            [("c-1.mp3", 384), ("c-1.tar.gz", 5), ("info.json", 777)]
        );
        assert_eq!(
            e.ended().unwrap().to_rfc3339(),
            "2026-11-23T10:05:00.500+00:00"
        );
        let no_times = SessionIndex::parse(br#"{"session_id":"x"}"#).unwrap();
        assert!(DayEntry::of(&no_times, 1).is_none());
    }

    #[test]
    fn names_that_are_not_plain_names_are_left_out_when_read() {
        let stored = br#"{"v":1,"day":"2026-11-23","sessions":{
            "ok":{"started_at":"x","ended_at":"y","entries":{"a.mp4":1,"../b":2}},
            "bad/id":{"started_at":"x","ended_at":"y"},
            "two\r\nlines":{"started_at":"x","ended_at":"y"}}}"#;
        let d = DayIndex::parse(stored).unwrap();
        assert_eq!(d.sessions.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(
            d.sessions["ok"].entries.keys().collect::<Vec<_>>(),
            ["a.mp4"]
        );
    }

    #[test]
    fn the_stored_form_reads_back_and_is_the_same_for_the_same_sessions() {
        let mut a = DayIndex::new("2026-11-23");
        let mut b = DayIndex::new("2026-11-23");
        for id in ["c-1", "c-2"] {
            a.sessions
                .insert(id.into(), DayEntry::of(&index(id, ""), 1).unwrap());
        }
        for id in ["c-2", "c-1"] {
            b.sessions
                .insert(id.into(), DayEntry::of(&index(id, ""), 1).unwrap());
        }
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(DayIndex::parse(&a.to_bytes()).unwrap(), a);
        assert!(DayIndex::parse(b"{not json").is_err());
    }

    #[test]
    fn a_merge_keeps_every_shard_s_sessions_and_honours_later_erases() {
        let entry = |id: &str| DayEntry::of(&index(id, ""), 1).unwrap();
        let mut one = DayIndex::new("2026-11-23");
        one.sessions.insert("c-1".into(), entry("c-1"));
        one.sessions.insert("c-2".into(), entry("c-2"));
        let mut two = DayIndex::new("2026-11-23");
        two.sessions.insert("c-3".into(), entry("c-3"));
        // Erased after its ingest: gone. Erased before (re-ingested since): kept.
        two.erased
            .insert("c-1".into(), "2026-11-23T11:00:00Z".into());
        two.erased
            .insert("c-2".into(), "2026-11-23T09:00:00Z".into());
        let merged = DayIndex::merge("2026-11-23", [one, two]);
        assert_eq!(merged.sessions.keys().collect::<Vec<_>>(), ["c-2", "c-3"]);
        assert!(merged.erased.is_empty());
    }
}
