//! The storage contract (SPEC §4): every key recvault reads or writes is
//! formatted here, and nowhere else; the session index's schema lives in
//! [`index`]. Other tools read this layout, so a change here needs a
//! migration.
//!
//! ```text
//! P/sessions/                                   a tenant's sessions (P: its prefix)
//! P/sessions/YYYY/MM/DD/                        one day (the call's start, UTC)
//! P/sessions/YYYY/MM/DD/<id>/info.json          the session index, written last
//! P/sessions/YYYY/MM/DD/<id>/<id>.tar.gz        the RAW archive
//! P/sessions/YYYY/MM/DD/<id>/derived/<name>     generated media (hidden from clients)
//! P/sessions/YYYY/MM/DD/<id>/derived/<name>.lease   the render lease of <name>
//! P/sessions/YYYY/MM/DD/<id>/derived/<name>.sums    MD5/SHA-1/SHA-256 of a rendered <name>
//! P/sessions/YYYY/MM/DD/<id>/derived/<path>.staged  a re-encrypted copy being verified (`/` in <path> as `~`)
//! P/index/YYYY/MM/DD.json                       the day index (SPEC §16), see [`day`]
//! P/index/YYYY/MM/DD/<node>.json                a node's shard of it (stores that ignore conditional writes)
//! P/index/selftest-<node>-<random>              the conditional-write self-test's probe (removed after)
//! P/delivery/<id>.json                         a session on its way to the customer's storage (delivery = "customer"; in the operator's backup only)
//! P/events/YYYY/MM/DD/HH/<stored>_<id>/<type>/<session>/<day>/<name>  one event of the tenant's event log (see [`EventRef`])
//! audit/<node>/anchors/<chain>/<ms>-<seq>-<hash>.json  a head of one audit chain of a node (the operator's, no tenant's)
//! audit/<node>/YYYY/MM/DD/<chain>-<first>-<last>.jsonl  a copy of audit lines first..=last (seq), by the day copied
//! ```

pub mod day;
pub mod event;
pub mod index;

use chrono::{DateTime, Utc};

/// One event of a tenant's event log, as its key names it: the listing of
/// an hour's prefix is the log, without reading any object. `stored` is
/// when the event was written to storage (`YYYYMMDDTHHMMSS.ffffffZ`, the
/// writing node's clock) and orders the log, so an event stored late (its
/// node's storage was down) is listed after what clients already read;
/// `id` is `<created stamp>.<node>.<seq>` (for de-duplication), `kind` the
/// event type (`call.archived`, …), `day` the call's day (`YYYY-MM-DD`,
/// when known) and `name` a file of the call (render events). The object's
/// body is the event's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub stored: String,
    pub id: String,
    pub kind: String,
    pub session: String,
    pub day: Option<String>,
    pub name: Option<String>,
}

/// `P/events/YYYY/MM/DD/HH/`: the events stored in one hour (UTC).
pub fn events_hour(tenant_prefix: &str, hour: DateTime<Utc>) -> String {
    format!("{tenant_prefix}events/{}/", hour.format("%Y/%m/%d/%H"))
}

/// The stamp format of event keys and ids.
pub const EVENT_STAMP: &str = "%Y%m%dT%H%M%S%.6fZ";

fn event_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 140
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl EventRef {
    /// The time of a stamp, or of the stamp an event id starts with.
    pub fn time_of(id: &str) -> Option<DateTime<Utc>> {
        let stamp = id.get(..23)?;
        chrono::NaiveDateTime::parse_from_str(stamp, EVENT_STAMP)
            .ok()
            .map(|t| t.and_utc())
    }

    /// Whether `s` has the shape of an event id
    /// (`<YYYYMMDDTHHMMSS.ffffffZ>.<node>.<seq: 6 digits>`) and a real time.
    pub fn is_id(s: &str) -> bool {
        let Some(rest) = s.get(23..).and_then(|r| r.strip_prefix('.')) else {
            return false;
        };
        let Some((node, seq)) = rest.rsplit_once('.') else {
            return false;
        };
        Self::time_of(s).is_some()
            && (1..=40).contains(&node.len())
            && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && seq.len() == 6
            && seq.bytes().all(|b| b.is_ascii_digit())
    }

    /// Where the event is in the log: `<stored>_<id>` (what `after` takes).
    pub fn position(&self) -> String {
        format!("{}_{}", self.stored, self.id)
    }

    /// Whether `s` is a position of the log ([`EventRef::position`]).
    pub fn is_position(s: &str) -> bool {
        s.get(23..24) == Some("_")
            && Self::time_of(s).is_some()
            && s.get(24..).is_some_and(Self::is_id)
    }

    /// Its key; `None` when a part is not a plain name.
    pub fn key(&self, tenant_prefix: &str) -> Option<String> {
        let at = Self::time_of(&self.stored)?;
        let day = self.day.as_deref().unwrap_or("-");
        let name = self.name.as_deref().unwrap_or("-");
        (Self::is_id(&self.id)
            && [self.kind.as_str(), &self.session, day, name]
                .iter()
                .all(|s| *s == "-" || event_segment(s)))
        .then(|| {
            format!(
                "{}{}/{}/{}/{day}/{name}",
                events_hour(tenant_prefix, at),
                self.position(),
                self.kind,
                self.session
            )
        })
    }

    /// The event a key of hour prefix `hour_prefix` names.
    pub fn of_key(hour_prefix: &str, key: &str) -> Option<EventRef> {
        let rest = key.strip_prefix(hour_prefix)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [position, kind, session, day, name] = parts.as_slice() else {
            return None;
        };
        if !Self::is_position(position) || !event_segment(kind) || !event_segment(session) {
            return None;
        }
        let opt = |s: &str| (s != "-").then(|| s.to_string());
        Some(EventRef {
            stored: position[..23].to_string(),
            id: position[24..].to_string(),
            kind: kind.to_string(),
            session: session.to_string(),
            day: opt(day),
            name: opt(name),
        })
    }
}

/// The index's name inside a session folder.
pub const INDEX: &str = "info.json";
/// The folder of generated media inside a session folder.
const DERIVED: &str = "derived/";

/// recvault's own keys, outside every tenant's prefix.
pub const AUDIT: &str = "audit/";

/// `audit/<node>/anchors/<chain>/`: the heads of one audit chain of a node
/// (`chain`: the start of its first line's SHA-256, see
/// [`crate::audit::chain_id`]).
pub fn audit_anchors(node: &str, chain: &str) -> String {
    format!("{AUDIT}{node}/anchors/{chain}/")
}

/// One head of an audit chain, named so that keys sort by time and a
/// listing alone tells every anchor (no read per anchor):
/// `audit/<node>/anchors/<chain>/<unix ms, 13 digits>-<seq>-<line's SHA-256>.json`.
pub fn audit_anchor(node: &str, chain: &str, unix_ms: i64, seq: u64, hash: &str) -> String {
    format!(
        "{}{unix_ms:013}-{seq}-{hash}.json",
        audit_anchors(node, chain)
    )
}

/// The (unix ms, seq, hash) an [`audit_anchor`] key below `prefix` names.
pub fn audit_anchor_of<'a>(prefix: &str, key: &'a str) -> Option<(i64, u64, &'a str)> {
    let name = key.strip_prefix(prefix)?.strip_suffix(".json")?;
    let mut parts = name.splitn(3, '-');
    let ms = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let hash = parts.next()?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some((ms, seq, hash))
}

/// `audit/<node>/`: a node's audit copies (date folders) and anchors.
pub fn audit_node(node: &str) -> String {
    format!("{AUDIT}{node}/")
}

/// A copy of audit lines `first..=last` of chain `chain` of a node, filed
/// under the day it was copied:
/// `audit/<node>/YYYY/MM/DD/<chain>-<first, 12 digits>-<last, 12 digits>.jsonl`.
pub fn audit_copy(node: &str, day: &str, chain: &str, first: u64, last: u64) -> String {
    format!(
        "{}{day}/{chain}-{first:012}-{last:012}.jsonl",
        audit_node(node)
    )
}

/// The (chain, first, last) an [`audit_copy`] key below the day folder
/// `day_prefix` names.
pub fn audit_copy_of<'a>(day_prefix: &str, key: &'a str) -> Option<(&'a str, u64, u64)> {
    let name = key.strip_prefix(day_prefix)?.strip_suffix(".jsonl")?;
    let mut parts = name.rsplitn(3, '-');
    let last = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    Some((parts.next()?, first, last))
}

/// The key prefix of a tenant's sessions, or of a date folder below it:
/// `P/sessions/` followed by each of `dates` (year, month, day) and `/`.
pub fn dates_prefix(tenant_prefix: &str, dates: &[&str]) -> String {
    let mut p = format!("{tenant_prefix}sessions/");
    for d in dates {
        p.push_str(d);
        p.push('/');
    }
    p
}

/// One day of a tenant's tree: `YYYY`, `MM`, `DD` (digits, as in keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day {
    pub year: String,
    pub month: String,
    pub day: String,
}

impl Day {
    pub fn new(year: &str, month: &str, day: &str) -> Self {
        Day {
            year: year.to_string(),
            month: month.to_string(),
            day: day.to_string(),
        }
    }

    /// The day a call that started at `started` is filed under.
    pub fn of_call(started: DateTime<Utc>) -> Self {
        Day {
            year: started.format("%Y").to_string(),
            month: started.format("%m").to_string(),
            day: started.format("%d").to_string(),
        }
    }

    /// `YYYY-MM-DD`, as the day index names it.
    pub fn label(&self) -> String {
        format!("{}-{}-{}", self.year, self.month, self.day)
    }

    /// `P/sessions/YYYY/MM/DD/`: the day's session folders.
    pub fn sessions_prefix(&self, tenant_prefix: &str) -> String {
        dates_prefix(tenant_prefix, &[&self.year, &self.month, &self.day])
    }

    /// `P/index/YYYY/MM/DD`: a listing of it finds the day's index and
    /// every node's shard of it (nothing else shares the prefix).
    pub fn index_prefix(&self, tenant_prefix: &str) -> String {
        format!(
            "{tenant_prefix}{INDEXES}{}/{}/{}",
            self.year, self.month, self.day
        )
    }

    /// `P/index/YYYY/MM/DD.json`: the day index all nodes update with
    /// conditional writes.
    pub fn index(&self, tenant_prefix: &str) -> String {
        format!("{}.json", self.index_prefix(tenant_prefix))
    }

    /// `P/index/YYYY/MM/DD/<node>.json`: the part of the day's index one
    /// node writes alone, on a store that ignores conditional writes.
    pub fn shard(&self, tenant_prefix: &str, node: &str) -> String {
        format!("{}/{node}.json", self.index_prefix(tenant_prefix))
    }

    /// Whether `key` (from a listing of [`Self::index_prefix`]) is the
    /// day's index or one of its shards.
    pub fn is_index_part(&self, tenant_prefix: &str, key: &str) -> bool {
        let Some(rest) = key.strip_prefix(&self.index_prefix(tenant_prefix)) else {
            return false;
        };
        rest == ".json"
            || rest
                .strip_prefix('/')
                .and_then(|n| n.strip_suffix(".json"))
                .is_some_and(crate::path::is_name)
    }
}

/// Where day indexes live below a tenant prefix.
const INDEXES: &str = "index/";

/// The conditional-write self-test's probe in a tenant's storage:
/// `P/index/selftest-<node>-<random>`, removed after the test.
pub fn index_selftest_probe(tenant_prefix: &str, node: &str, random: &str) -> String {
    format!("{tenant_prefix}{INDEXES}selftest-{node}-{random}")
}

/// The session folder (`…sessions/YYYY/MM/DD/<id>/`) a key is in, when it
/// is in one: the key's text up to and including the folder.
pub fn session_folder_of(key: &str) -> Option<&str> {
    let at = key.rfind("sessions/")? + "sessions/".len();
    let mut end = at;
    for n in 0..4 {
        let len = key[end..].find('/')?;
        let part = &key[end..end + len];
        let date = n < 3 && !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !(date || (n == 3 && crate::path::is_name(part))) {
            return None;
        }
        end += len + 1;
    }
    Some(&key[..end])
}

/// Where the delivery ledger lives below a tenant prefix (in the
/// operator's backup storage of a tenant with `delivery = "customer"`).
const DELIVERIES: &str = "delivery/";

/// `P/delivery/`: every session not yet delivered, or whose backup copy is
/// not yet deleted, has an entry below it.
pub fn deliveries(tenant_prefix: &str) -> String {
    format!("{tenant_prefix}{DELIVERIES}")
}

/// `P/delivery/<id>.json`: the delivery state of session `id`.
pub fn delivery(tenant_prefix: &str, id: &str) -> String {
    format!("{tenant_prefix}{DELIVERIES}{id}.json")
}

/// The session id of a ledger entry's key, when it is one.
pub fn delivery_of<'a>(tenant_prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(tenant_prefix)?
        .strip_prefix(DELIVERIES)?
        .strip_suffix(".json")
        .filter(|id| crate::path::is_name(id))
}

/// The name of a child folder from a delimited listing's common prefix
/// (`<prefix><name>/`).
pub fn child_name<'a>(prefix: &str, common_prefix: &'a str) -> Option<&'a str> {
    common_prefix
        .strip_prefix(prefix)
        .map(|n| n.trim_end_matches('/'))
}

/// If `key` (below the day folder `day_prefix`) is a session's index, the
/// session id.
pub fn session_of_index_key<'a>(day_prefix: &str, key: &'a str) -> Option<&'a str> {
    let rest = key.strip_prefix(day_prefix)?;
    let id = rest.strip_suffix(INDEX)?.strip_suffix('/')?;
    crate::path::is_name(id).then_some(id)
}

/// Whether `key` is a render lease (kept clear: a lock, not a recording).
pub fn is_lease(key: &str) -> bool {
    key.contains("/derived/") && key.ends_with(".lease")
}

/// Whether `key` is a staged copy ([`SessionKeys::staged`]).
pub fn is_staged(key: &str) -> bool {
    key.contains("/derived/") && key.ends_with(".staged")
}

/// The keys of one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKeys {
    prefix: String,
    id: String,
}

impl SessionKeys {
    /// The session `id` filed under the day `year`/`month`/`day`.
    pub fn new(tenant_prefix: &str, year: &str, month: &str, day: &str, id: &str) -> Self {
        Self {
            prefix: format!("{}{id}/", dates_prefix(tenant_prefix, &[year, month, day])),
            id: id.to_string(),
        }
    }

    /// The session `id` of a call that started at `started`.
    pub fn of_call(tenant_prefix: &str, started: DateTime<Utc>, id: &str) -> Self {
        let (y, m, d) = (
            started.format("%Y").to_string(),
            started.format("%m").to_string(),
            started.format("%d").to_string(),
        );
        Self::new(tenant_prefix, &y, &m, &d, id)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `P/sessions/YYYY/MM/DD/<id>/`: every object of the session is below it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `…/<id>/info.json`
    pub fn index(&self) -> String {
        format!("{}{INDEX}", self.prefix)
    }

    /// The RAW archive's name in the session folder: `<id>.tar.gz`.
    pub fn archive_name(&self) -> String {
        format!("{}.tar.gz", self.id)
    }

    /// `…/<id>/<id>.tar.gz`
    pub fn archive(&self) -> String {
        format!("{}{}", self.prefix, self.archive_name())
    }

    /// `…/<id>/derived/<name>`
    pub fn derived(&self, name: &str) -> String {
        format!("{}{DERIVED}{name}", self.prefix)
    }

    /// `…/<id>/<name>`: a stored object the index names, when `name` is a
    /// plain name (an index read back from storage is not trusted).
    pub fn object(&self, name: &str) -> Option<String> {
        crate::path::is_name(name).then(|| format!("{}{name}", self.prefix))
    }

    /// [`Self::derived`] for a name read back from storage: `None` unless
    /// it is a plain name.
    pub fn derived_checked(&self, name: &str) -> Option<String> {
        crate::path::is_name(name).then(|| self.derived(name))
    }

    /// `…/<id>/derived/<name>.sums`: the hashes of a rendered file, written
    /// once the file is stored.
    pub fn sums(&self, name: &str) -> String {
        format!("{}.sums", self.derived(name))
    }

    /// `…/<id>/derived/<name>.lease`: the render lease of a derived file.
    pub fn lease(&self, name: &str) -> String {
        format!("{}.lease", self.derived(name))
    }

    /// `…/<id>/derived/<relative>.staged`: where a re-encrypted copy of the
    /// session's object `…/<id>/<relative>` is verified before it replaces
    /// the object (hidden from clients, like everything under `derived/`).
    pub fn staged(&self, relative: &str) -> String {
        format!("{}.staged", self.derived(&relative.replace('/', "~")))
    }

    /// The stored objects a session folder shows (index and archive), as
    /// (name, key).
    pub fn shown(&self) -> [(String, String); 2] {
        [
            (INDEX.to_string(), self.index()),
            (self.archive_name(), self.archive()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_session_folder_of_a_key() {
        let k = SessionKeys::new("t/a/", "2026", "11", "23", "call-1");
        let folder = k.prefix();
        assert_eq!(session_folder_of(&k.index()), Some(folder));
        assert_eq!(session_folder_of(&k.derived("call-1.mp4")), Some(folder));
        assert_eq!(session_folder_of(&k.lease("call-1.mp4")), Some(folder));
        assert_eq!(session_folder_of("t/a/sessions/2026/11/23/"), None);
        assert_eq!(session_folder_of("t/a/index/2026/11/23.json"), None);
        assert_eq!(
            session_folder_of("t/a/sessions/2026/xx/23/c/info.json"),
            None
        );
    }

    #[test]
    fn the_layout_contract() {
        let k = SessionKeys::new("tenants/acme/", "2026", "11", "23", "c-1");
        assert_eq!(k.prefix(), "tenants/acme/sessions/2026/11/23/c-1/");
        assert_eq!(k.index(), "tenants/acme/sessions/2026/11/23/c-1/info.json");
        assert_eq!(
            k.archive(),
            "tenants/acme/sessions/2026/11/23/c-1/c-1.tar.gz"
        );
        assert_eq!(
            k.derived("c-1.mp4"),
            "tenants/acme/sessions/2026/11/23/c-1/derived/c-1.mp4"
        );
        assert_eq!(
            k.sums("c-1.mp4"),
            "tenants/acme/sessions/2026/11/23/c-1/derived/c-1.mp4.sums"
        );
        assert_eq!(
            k.lease("c-1.mp4"),
            "tenants/acme/sessions/2026/11/23/c-1/derived/c-1.mp4.lease"
        );
        let started = Utc.with_ymd_and_hms(2026, 11, 23, 23, 59, 59).unwrap();
        assert_eq!(SessionKeys::of_call("tenants/acme/", started, "c-1"), k);
        assert_eq!(dates_prefix("t/", &[]), "t/sessions/");
        assert_eq!(dates_prefix("t/", &["2026", "11"]), "t/sessions/2026/11/");
    }

    #[test]
    fn day_index_keys() {
        let d = Day::of_call(Utc.with_ymd_and_hms(2026, 11, 23, 23, 59, 59).unwrap());
        assert_eq!(d, Day::new("2026", "11", "23"));
        assert_eq!(d.label(), "2026-11-23");
        assert_eq!(d.index("t/"), "t/index/2026/11/23.json");
        assert_eq!(d.shard("t/", "node-a"), "t/index/2026/11/23/node-a.json");
        assert_eq!(d.sessions_prefix("t/"), "t/sessions/2026/11/23/");
        assert!(d.is_index_part("t/", "t/index/2026/11/23.json"));
        assert!(d.is_index_part("t/", "t/index/2026/11/23/node-a.json"));
        assert!(!d.is_index_part("t/", "t/index/2026/11/23/a/b.json"));
        assert!(!d.is_index_part("t/", "t/index/2026/11/230.json"));
        assert!(index_selftest_probe("t/", "n", "r").starts_with("t/index/"));
    }

    #[test]
    fn index_keys_name_their_session() {
        let day = dates_prefix("t/", &["2026", "11", "23"]);
        assert_eq!(
            session_of_index_key(&day, &format!("{day}c-1/info.json")),
            Some("c-1")
        );
        assert_eq!(
            session_of_index_key(&day, &format!("{day}c-1/x.json")),
            None
        );
        assert_eq!(
            session_of_index_key(&day, &format!("{day}c-1/derived/info.json")),
            None
        );
        assert_eq!(session_of_index_key(&day, &format!("{day}info.json")), None);
        assert_eq!(child_name("t/sessions/", "t/sessions/2026/"), Some("2026"));
    }
}
