//! What makes a received session archivable: a well-formed `info.json`
//! naming this session, and MJR streams that scan (each of the kind its
//! name says). Every refusal names the file and, for MJR, the byte offset.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::spool::SessionState;
use crate::media::mjr::{self, Kind, StreamSummary};

/// The largest `info.json` ingest accepts: a gateway's is a few KiB, and
/// the index built from it must stay within what readers load
/// ([`crate::layout::index::MAX_BYTES`]).
pub const MAX_INFO_BYTES: u64 = 256 * 1024;

/// The most bytes ingest accepts for the session file `name`.
pub fn max_file_bytes(name: &str, limit: u64) -> u64 {
    if name == "info.json" {
        limit.min(MAX_INFO_BYTES)
    } else {
        limit
    }
}

/// A parsed `info.json`.
#[derive(Debug, Clone)]
pub struct Info {
    pub original: Value,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
}

fn time(v: &Value, field: &str) -> Result<DateTime<Utc>, String> {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("info.json: `{field}` is missing or not a string"))?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("info.json: `{field}` is not an RFC 3339 time ({e})"))
}

/// Parses and checks `info.json` for session `id`.
pub fn parse_info(id: &str, bytes: &[u8]) -> Result<Info, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("info.json is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("info.json must be a JSON object".into());
    }
    match v.get("session_id").and_then(Value::as_str) {
        Some(s) if s == id => {}
        Some(s) => {
            return Err(format!(
                "info.json: session_id {s:?} does not match the session {id:?}"
            ))
        }
        None => return Err("info.json: `session_id` is missing".into()),
    }
    let started = time(&v, "started_at")?;
    let ended = time(&v, "ended_at")?;
    if ended < started {
        return Err("info.json: `ended_at` is before `started_at`".into());
    }
    for party in ["agent", "user"] {
        let p = v
            .get(party)
            .ok_or_else(|| format!("info.json: `{party}` is missing"))?;
        if !p.is_object() || p.get("id").is_none() {
            return Err(format!(
                "info.json: `{party}` must be an object with an `id`"
            ));
        }
    }
    if let Some(tags) = v.get("tags") {
        if !tags
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
        {
            return Err("info.json: `tags` must map names to strings".into());
        }
    }
    if v.get("recvault").is_some() {
        return Err(
            "info.json: the `recvault` field is reserved for the index recvault writes".into(),
        );
    }
    Ok(Info {
        original: v,
        started,
        ended,
    })
}

/// A session that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub info: Info,
    pub streams: BTreeMap<String, StreamSummary>,
}

/// Validates the spooled files of `state` (blocking: scans every stream).
pub fn validate(files: &Path, state: &SessionState) -> Result<Validated, String> {
    let info_bytes = std::fs::read(files.join("info.json"))
        .map_err(|_| "info.json was not received".to_string())?;
    let info = parse_info(&state.id, &info_bytes)?;
    let mut streams = BTreeMap::new();
    for name in state.files.keys().filter(|n| n.ends_with(".mjr")) {
        let f = std::fs::File::open(files.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let summary = mjr::scan(std::io::BufReader::with_capacity(256 * 1024, f))
            .map_err(|e| format!("{name}: {e}"))?;
        let want = if name.ends_with("-audio.mjr") {
            Kind::Audio
        } else {
            Kind::Video
        };
        if summary.kind != want {
            return Err(format!(
                "{name}: holds {:?} media, not what its name says",
                summary.kind
            ));
        }
        streams.insert(name.clone(), summary);
    }
    if streams.is_empty() {
        return Err("the session has no MJR stream".into());
    }
    Ok(Validated { info, streams })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(extra: &str) -> String {
        format!(
            r#"{{"session_id":"c1","started_at":"2026-11-23T10:00:00Z","ended_at":"2026-11-23T10:05:00Z","agent":{{"id":"a"}},"user":{{"id":"u"}}{extra}}}"#
        )
    }

    #[test]
    fn info_json_rules() {
        assert!(parse_info("c1", info("").as_bytes()).is_ok());
        assert!(parse_info("c1", info(r#","tags":{"q":"sales"}"#).as_bytes()).is_ok());
        for (bad, why) in [
            ("nope", "not JSON"),
            ("[]", "object"),
            (&info("").replace("c1", "c2"), "does not match"),
            (&info("").replace("10:05", "09:05"), "before"),
            (
                &info("").replace("\"2026-11-23T10:00:00Z\"", "\"yesterday\""),
                "RFC 3339",
            ),
            (&info(r#","tags":{"q":1}"#), "tags"),
            (&info(r#","recvault":{}"#), "reserved"),
            (
                &info("").replace(r#""user":{"id":"u"}"#, r#""user":"u""#),
                "user",
            ),
        ] {
            let e = parse_info("c1", bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
