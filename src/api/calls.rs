//! The call endpoints: `GET /v1/calls` (a search over the day index),
//! `GET /v1/calls/{id}` (one call's index and files) and
//! `DELETE /v1/calls/{id}` (erase).
//!
//! The search reads one listing per month of the range (which days have
//! sessions) and one day index per such day: never a session's
//! `info.json`. Pages are newest first (`order=desc`, the default) or
//! oldest first, cut by an opaque cursor that holds the last call's place
//! (day, start, id), so a page is stable while calls are added or erased.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::route::CallId;
use super::{Answer, ApiError};
use crate::http::{boxed, json_reply};
use crate::layout::day::DayEntry;
use crate::path::VPath;
use crate::shared::Conn;
use crate::vfs::{Kind, VfsError};

/// Most calls on one page.
pub const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;
/// Longest date range of one search, in days.
pub const MAX_DAYS: i64 = 366;
/// The range when none is given: the last 30 days.
const DEFAULT_DAYS: i64 = 30;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Where a page ended: the last call's day, start (ms) and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    d: String,
    s: i64,
    i: String,
    /// Oldest first.
    #[serde(default)]
    a: bool,
}

/// A search, as the query string gives it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    oldest_first: bool,
    agent: Option<String>,
    user: Option<String>,
    queue: Option<String>,
    tags: Vec<(String, String)>,
    session_id: Option<String>,
    limit: usize,
    cursor: Option<Cursor>,
}

/// A page size, `1..=MAX_LIMIT`.
fn limit(v: &str) -> Result<usize, ApiError> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}")))
}

fn date(key: &str, v: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .filter(|d| d.year() >= 1970 && d.year() <= 9999)
        .ok_or_else(|| ApiError::BadRequest(format!("{key} must be a date like 2026-11-23")))
}

impl Query {
    /// Parses a query string; unknown or repeated parameters are refused
    /// (a typo must not widen a search silently).
    pub fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        let mut seen = std::collections::HashSet::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if k != "tag" && !seen.insert(k.to_string()) {
                return Err(ApiError::BadRequest(format!("{k} is given twice")));
            }
            let v = v.to_string();
            match k.as_ref() {
                "from" => q.from = Some(date("from", &v)?),
                "to" => q.to = Some(date("to", &v)?),
                "order" => {
                    q.oldest_first = match v.as_str() {
                        "desc" => false,
                        "asc" => true,
                        _ => return Err(ApiError::BadRequest("order is asc or desc".into())),
                    }
                }
                "agent" => q.agent = Some(v),
                "user" => q.user = Some(v),
                "queue" => q.queue = Some(v),
                "session_id" => q.session_id = Some(v),
                "tag" => {
                    let Some((k, v)) = v.split_once(':') else {
                        return Err(ApiError::BadRequest(
                            "tag must be key:value (for example tag=campaign:spring)".into(),
                        ));
                    };
                    q.tags.push((k.to_string(), v.to_string()));
                }
                "limit" => q.limit = limit(&v)?,
                // An empty cursor is the first page.
                "cursor" if v.is_empty() => {}
                "cursor" => {
                    q.cursor = Some(
                        B64.decode(v.as_bytes())
                            .ok()
                            .and_then(|b| serde_json::from_slice::<Cursor>(&b).ok())
                            .filter(|c| {
                                NaiveDate::parse_from_str(&c.d, "%Y-%m-%d").is_ok()
                                    && crate::path::is_name(&c.i)
                            })
                            .ok_or_else(|| {
                                ApiError::BadRequest(
                                    "cursor is not one this API gave (pass next_cursor as it is)"
                                        .into(),
                                )
                            })?,
                    )
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown parameter {:?} (from, to, order, agent, user, queue, tag, session_id, limit, cursor)",
                        other.chars().take(64).collect::<String>()
                    )))
                }
            }
        }
        if let Some(c) = &q.cursor {
            if c.a != q.oldest_first {
                return Err(ApiError::BadRequest(
                    "the cursor is of the other order; keep order as it was".into(),
                ));
            }
        }
        Ok(q)
    }

    /// The first and last day searched (inclusive).
    fn range(&self, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), ApiError> {
        let to = self.to.unwrap_or(today);
        let from = self
            .from
            .unwrap_or_else(|| to - Duration::days(DEFAULT_DAYS - 1));
        if from > to {
            return Err(ApiError::BadRequest("from is after to".into()));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(ApiError::BadRequest(format!(
                "the range spans more than {MAX_DAYS} days; search in parts"
            )));
        }
        Ok((from, to))
    }

    /// Whether a call matches every filter.
    fn matches(&self, id: &str, e: &DayEntry) -> bool {
        let party = |want: &Option<String>, p: &crate::layout::day::Party| {
            want.as_ref()
                .is_none_or(|w| p.id == *w || p.name.as_deref() == Some(w.as_str()))
        };
        party(&self.agent, &e.agent)
            && party(&self.user, &e.user)
            && self
                .queue
                .as_ref()
                .is_none_or(|q| e.queue.as_deref() == Some(q.as_str()))
            && self.session_id.as_ref().is_none_or(|s| s == id)
            && self
                .tags
                .iter()
                .all(|(k, v)| e.tags.get(k).is_some_and(|t| t == v))
    }

    /// Whether the place (day, start, id) comes after the cursor in this order.
    fn after_cursor(&self, day: &str, start: i64, id: &str) -> bool {
        let Some(c) = &self.cursor else {
            return true;
        };
        let here = (day, start, id);
        let there = (c.d.as_str(), c.s, c.i.as_str());
        if self.oldest_first {
            here > there
        } else {
            here < there
        }
    }
}

/// The months from `from` to `to`, in the search's order.
fn months(from: NaiveDate, to: NaiveDate, oldest_first: bool) -> Vec<(i32, u32)> {
    let mut out = Vec::new();
    let (mut y, mut m) = (from.year(), from.month());
    while (y, m) <= (to.year(), to.month()) {
        out.push((y, m));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    if !oldest_first {
        out.reverse();
    }
    out
}

fn folder(parts: &str) -> Result<VPath, ApiError> {
    VPath::parse_absolute(parts).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The days of month (y, m) that have sessions, within the range.
async fn days_of(
    conn: &Conn,
    (y, m): (i32, u32),
    (from, to): (NaiveDate, NaiveDate),
) -> Result<Vec<NaiveDate>, ApiError> {
    // One day: its index says whether it has calls (no month listing).
    if from == to {
        return Ok(NaiveDate::from_ymd_opt(y, m, from.day())
            .filter(|d| *d == from)
            .into_iter()
            .collect());
    }
    let listing = match conn.vfs().list(&folder(&format!("/{y:04}/{m:02}"))?).await {
        Ok(l) => l.collect_all().await?,
        Err(VfsError::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut days: Vec<NaiveDate> = listing
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .filter_map(|e| e.name.parse::<u32>().ok())
        .filter_map(|d| NaiveDate::from_ymd_opt(y, m, d))
        .filter(|d| (from..=to).contains(d))
        .collect();
    days.sort();
    Ok(days)
}

fn start_ms(e: &DayEntry) -> i64 {
    e.started().map_or(i64::MIN, |t| t.timestamp_millis())
}

/// The files of a call as a listing shows them.
fn media_of(id: &str, entries: &BTreeMap<String, u64>) -> Vec<Value> {
    entries
        .iter()
        .map(|(name, size)| {
            json!({"name": name, "size": size, "url": format!("/v1/calls/{id}/media/{name}")})
        })
        .collect()
}

fn duration_secs(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Option<f64> {
    let (s, e) = (start?, end?);
    Some((e - s).num_milliseconds().max(0) as f64 / 1000.0)
}

fn call_json(day: &str, sid: &str, e: &DayEntry) -> Value {
    let id = CallId::format(day, sid);
    let date = day.replace('-', "/");
    json!({
        "id": id,
        "session_id": sid,
        "day": day,
        "path": format!("/{date}/{sid}"),
        "started_at": e.started_at,
        "ended_at": e.ended_at,
        "duration_secs": duration_secs(e.started(), e.ended()),
        "agent": e.agent,
        "user": e.user,
        "queue": e.queue,
        "tags": e.tags,
        "media": media_of(&id, &e.entries),
    })
}

/// `GET /v1/calls`.
pub async fn list(conn: &Conn, query: Option<&str>) -> Answer {
    let q = Query::parse(query)?;
    let range = q.range(Utc::now().date_naive())?;
    conn.searched(query.unwrap_or(""));
    let vfs = conn.vfs();
    // Each call found, with its place (the cursor after it).
    let mut calls: Vec<(Cursor, Value)> = Vec::new();
    let mut more = false;
    'months: for month in months(range.0, range.1, q.oldest_first) {
        let mut days = days_of(conn, month, range).await?;
        if !q.oldest_first {
            days.reverse();
        }
        for d in days {
            let day = d.format("%Y-%m-%d").to_string();
            if let Some(c) = &q.cursor {
                let passed = if q.oldest_first { day < c.d } else { day > c.d };
                if passed {
                    continue;
                }
            }
            let index = vfs
                .day(&folder(&format!("/{}", day.replace('-', "/")))?)
                .await?;
            // Filtered first, then only the matches sorted; each start time
            // parsed once (not in every comparison).
            let mut entries: Vec<(i64, &String, &DayEntry)> = index
                .sessions
                .iter()
                .filter(|(sid, e)| q.matches(sid, e))
                .map(|(sid, e)| (start_ms(e), sid, e))
                .filter(|(started, sid, _)| q.after_cursor(&day, *started, sid))
                .collect();
            entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            if !q.oldest_first {
                entries.reverse();
            }
            for (started, sid, e) in entries {
                if calls.len() == q.limit {
                    more = true;
                    break 'months;
                }
                let place = Cursor {
                    d: day.clone(),
                    s: started,
                    i: sid.clone(),
                    a: q.oldest_first,
                };
                calls.push((place, call_json(&day, sid, e)));
            }
        }
    }
    let next = more
        .then(|| calls.last())
        .flatten()
        .map(|(c, _)| B64.encode(serde_json::to_vec(c).unwrap_or_default()));
    let (from, to) = range;
    Ok(boxed(json_reply(
        StatusCode::OK,
        &json!({
            "from": from.format("%Y-%m-%d").to_string(),
            "to": to.format("%Y-%m-%d").to_string(),
            "order": if q.oldest_first { "asc" } else { "desc" },
            "calls": calls.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "next_cursor": next,
        }),
    )))
}

/// `GET /v1/events?after=<position>&limit=`: the tenant's event log in the
/// order events were stored, after position `after` (or from the last 24
/// hours); needs `calls:read`. `next_after` is the position to ask after
/// next time.
pub async fn events(conn: &Conn, query: Option<&str>) -> Answer {
    if !conn.vfs().perms().list {
        return Err(ApiError::Forbidden(
            "this key may not do that: the event log needs calls:read".into(),
        ));
    }
    let (mut after, mut page) = (None, DEFAULT_LIMIT);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "after" if v.is_empty() => {}
            "after" => {
                if !crate::layout::EventRef::is_position(&v) {
                    return Err(ApiError::BadRequest(
                        "after must be a position this API gave (next_after, or an event's position)".into(),
                    ));
                }
                after = Some(v.to_string());
            }
            "limit" => page = limit(&v)?,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {:?} (after, limit)",
                    other.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    let (found, next) = conn
        .vfs()
        .events(after.as_deref(), page, Utc::now())
        .await?;
    Ok(boxed(json_reply(
        StatusCode::OK,
        &json!({
            "events": found.iter().map(crate::events::listed).collect::<Vec<_>>(),
            "next_after": next,
        }),
    )))
}

/// The path of entry `name` of call `id`.
pub fn entry_path(id: &str, name: &str) -> Result<VPath, ApiError> {
    CallId::parse(id)
        .ok_or_else(|| no_call(id))?
        .entry(name)
        .ok_or_else(|| ApiError::NotFound(format!("no such file in call {id}: {name}")))
}

fn no_call(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no such call: {:?} (call ids look like 2026-11-23_<session id>)",
        id.chars().take(140).collect::<String>()
    ))
}

/// `GET /v1/calls/{id}`: the call's index, and every file its folder shows
/// with its size, recorded hashes and (for derived media) whether it was
/// rendered yet. Audited like a listing of the session folder.
pub async fn show(conn: &Conn, id: &str) -> Answer {
    let call = CallId::parse(id).ok_or_else(|| no_call(id))?;
    let path = call.folder();
    let vfs = conn.vfs();
    let index = vfs.session_index(&path).await?;
    let entries = vfs.list(&path).await?.collect_all().await?;
    conn.listed(&path.to_string());
    let mut media = Vec::new();
    for e in entries {
        let file = folder(&format!("{path}/{}", e.name))?;
        let h = vfs.hashes(&file).await?;
        let derived = !index.recvault.objects.contains_key(&e.name) && e.name != "info.json";
        media.push(json!({
            "name": e.name,
            "size": e.size,
            "modified_at": e.mtime.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "derived": derived,
            "rendered": !derived || h.sha256.is_some(),
            "sha256": h.sha256,
            "md5": h.md5,
            "url": format!("/v1/calls/{id}/media/{}", e.name),
        }));
    }
    let gw = |k: &str| index.gateway.get(k).cloned().unwrap_or(Value::Null);
    Ok(boxed(json_reply(
        StatusCode::OK,
        &json!({
            "id": id,
            "session_id": call.session,
            "day": call.date(),
            "path": path.to_string(),
            "started_at": index.started_at,
            "ended_at": index.ended_at,
            "duration_secs": duration_secs(index.started(), index.ended()),
            "agent": gw("agent"),
            "user": gw("user"),
            "queue": gw("queue"),
            "direction": gw("direction"),
            "tags": gw("tags"),
            "ingested_at": index.recvault.ingested_at,
            "streams": index.recvault.streams,
            "media": media,
        }),
    )))
}

/// `DELETE /v1/calls/{id}`: erases the call (every object, then its index
/// and its day-index entry), as SFTP's erase does; needs `calls:erase`.
pub async fn erase(conn: &Conn, id: &str) -> Answer {
    let call = CallId::parse(id).ok_or_else(|| no_call(id))?;
    let path = call.folder();
    let objects = conn.vfs().erase(&path).await?;
    conn.erased(&path.to_string(), objects);
    Ok(boxed(json_reply(
        StatusCode::OK,
        &json!({"id": id, "erased": true, "objects": objects}),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: &str, agent: &str, queue: Option<&str>, tags: &[(&str, &str)]) -> DayEntry {
        DayEntry {
            started_at: start.into(),
            ended_at: start.into(),
            agent: crate::layout::day::Party {
                id: agent.into(),
                name: Some(format!("{agent} name")),
            },
            queue: queue.map(str::to_string),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..DayEntry::default()
        }
    }

    #[test]
    fn a_query_is_read_whole_or_refused() {
        let q = Query::parse(Some(
            "from=2026-11-01&to=2026-11-30&agent=a%201&tag=k:v&tag=x:y%3Az&limit=5&order=asc",
        ))
        .unwrap();
        assert_eq!(q.agent.as_deref(), Some("a 1"));
        assert_eq!(
            q.tags,
            vec![("k".into(), "v".into()), ("x".into(), "y:z".into())]
        );
        assert!(q.oldest_first);
        assert_eq!(q.limit, 5);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "from=2026-13-01",
            "from=yesterday",
            "order=newest",
            "tag=novalue",
            "agnt=x",
            "agent=a&agent=b",
            "cursor=nope",
            "cursor=e30",
        ] {
            assert!(
                matches!(Query::parse(Some(bad)), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
        assert_eq!(Query::parse(None).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn the_range_is_bounded_and_defaults_to_thirty_days() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let (from, to) = Query::parse(None).unwrap().range(today).unwrap();
        assert_eq!((to - from).num_days(), DEFAULT_DAYS - 1);
        assert_eq!(to, today);
        let q = Query::parse(Some("from=2026-12-03&to=2026-12-02")).unwrap();
        assert!(q.range(today).is_err());
        let q = Query::parse(Some("from=2025-01-01&to=2026-12-02")).unwrap();
        assert!(q.range(today).is_err());
        let q = Query::parse(Some("from=2025-12-02&to=2026-12-01")).unwrap();
        assert!(q.range(today).is_ok());
    }

    #[test]
    fn months_run_in_the_search_order() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(
            months(d(2025, 11, 30), d(2026, 2, 1), true),
            vec![(2025, 11), (2025, 12), (2026, 1), (2026, 2)]
        );
        assert_eq!(months(d(2026, 1, 5), d(2026, 1, 6), false), vec![(2026, 1)]);
        assert_eq!(
            months(d(2025, 12, 5), d(2026, 1, 6), false),
            vec![(2026, 1), (2025, 12)]
        );
    }

    #[test]
    fn filters_read_the_day_entry() {
        let e = entry(
            "2026-11-23T09:00:00Z",
            "ag-7",
            Some("sales"),
            &[("campaign", "spring")],
        );
        let m = |qs: &str| Query::parse(Some(qs)).unwrap().matches("c-1", &e);
        assert!(m(""));
        assert!(m("agent=ag-7"));
        assert!(m("agent=ag-7%20name"));
        assert!(!m("agent=ag-8"));
        assert!(m("queue=sales&tag=campaign:spring"));
        assert!(!m("queue=support"));
        assert!(!m("tag=campaign:autumn"));
        assert!(!m("tag=other:spring"));
        assert!(m("session_id=c-1"));
        assert!(!m("session_id=c-2"));
    }

    #[test]
    fn a_cursor_resumes_after_its_place_in_either_order() {
        let c = Cursor {
            d: "2026-11-23".into(),
            s: 100,
            i: "b".into(),
            a: false,
        };
        let token = B64.encode(serde_json::to_vec(&c).unwrap());
        let q = Query::parse(Some(&format!("cursor={token}"))).unwrap();
        assert!(q.after_cursor("2026-11-23", 100, "a"));
        assert!(!q.after_cursor("2026-11-23", 100, "b"));
        assert!(!q.after_cursor("2026-11-23", 100, "c"));
        assert!(q.after_cursor("2026-11-22", 500, "z"));
        assert!(!q.after_cursor("2026-11-24", 0, "a"));
        // A cursor of one order is refused in the other.
        assert!(Query::parse(Some(&format!("cursor={token}&order=asc"))).is_err());
    }
}
