//! Where a canonical path points in a tenant's tree, and which place of the
//! storage layout ([`crate::layout`]) each one stands for. Paths become keys
//! only through here.
//!
//! ```text
//! /                      P/sessions/
//! /YYYY                  P/sessions/YYYY/
//! /YYYY/MM               P/sessions/YYYY/MM/
//! /YYYY/MM/DD            P/sessions/YYYY/MM/DD/
//! /YYYY/MM/DD/<id>       P/sessions/YYYY/MM/DD/<id>/      (exists once info.json does)
//! /YYYY/MM/DD/<id>/name  the session's stored or derived entry (derived/ is never shown)
//! ```

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::VPath;
use crate::layout::{self, SessionKeys};

/// A place in the tenant tree (paths are tenant-absolute, scope applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    Root,
    Year(String),
    Month(String, String),
    Day(String, String, String),
    Session(SessionRef),
    File(SessionRef, String),
}

/// One session folder: its day and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionRef {
    pub year: String,
    pub month: String,
    pub day: String,
    pub id: String,
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_year(s: &str) -> bool {
    digits(s, 4)
}

fn is_month(s: &str) -> bool {
    digits(s, 2) && (1..=12).contains(&s.parse::<u8>().unwrap_or(0))
}

fn is_day(s: &str) -> bool {
    digits(s, 2) && (1..=31).contains(&s.parse::<u8>().unwrap_or(0))
}

/// Whether `name` is a valid child name of a directory at `depth` (root = 0).
pub fn valid_child(depth: usize, name: &str) -> bool {
    match depth {
        0 => is_year(name),
        1 => is_month(name),
        2 => is_day(name),
        3 => crate::path::is_name(name),
        _ => false,
    }
}

impl Loc {
    /// Classifies a tenant-absolute path; `None` when nothing can live there.
    pub fn of(path: &VPath) -> Option<Loc> {
        let c = path.components();
        let ok = c
            .iter()
            .enumerate()
            .all(|(i, name)| i >= 4 || valid_child(i, name));
        if !ok {
            return None;
        }
        let s = |i: usize| c[i].clone();
        let session = || SessionRef {
            year: s(0),
            month: s(1),
            day: s(2),
            id: s(3),
        };
        Some(match c.len() {
            0 => Loc::Root,
            1 => Loc::Year(s(0)),
            2 => Loc::Month(s(0), s(1)),
            3 => Loc::Day(s(0), s(1), s(2)),
            4 => Loc::Session(session()),
            5 => Loc::File(session(), s(4)),
            _ => return None,
        })
    }

    /// The key prefix of a directory place (ends with `/`); `None` for files.
    pub fn dir_prefix(&self, tenant_prefix: &str) -> Option<String> {
        let dates = |d: &[&str]| layout::dates_prefix(tenant_prefix, d);
        Some(match self {
            Loc::Root => dates(&[]),
            Loc::Year(y) => dates(&[y]),
            Loc::Month(y, m) => dates(&[y, m]),
            Loc::Day(y, m, d) => dates(&[y, m, d]),
            Loc::Session(s) => s.keys(tenant_prefix).prefix().to_string(),
            Loc::File(..) => return None,
        })
    }

    /// The earliest instant a date folder stands for (fallback time when it
    /// holds no readable session).
    pub fn date_floor(&self) -> Option<DateTime<Utc>> {
        let (y, m, d) = match self {
            Loc::Year(y) => (y.as_str(), "01", "01"),
            Loc::Month(y, m) => (y.as_str(), m.as_str(), "01"),
            Loc::Day(y, m, d) => (y.as_str(), m.as_str(), d.as_str()),
            _ => return None,
        };
        let date = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
        Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?))
    }
}

impl SessionRef {
    /// The session's keys in the storage layout.
    pub fn keys(&self, tenant_prefix: &str) -> SessionKeys {
        SessionKeys::new(tenant_prefix, &self.year, &self.month, &self.day, &self.id)
    }

    /// The session folder's path in the tenant's tree.
    pub fn path(&self) -> String {
        format!("/{}/{}/{}/{}", self.year, self.month, self.day, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(p: &str) -> Option<Loc> {
        Loc::of(&VPath::parse_absolute(p).unwrap())
    }

    #[test]
    fn classification() {
        assert_eq!(loc("/"), Some(Loc::Root));
        assert_eq!(loc("/2026"), Some(Loc::Year("2026".into())));
        assert!(loc("/26").is_none());
        assert!(loc("/2026/13").is_none());
        assert!(loc("/2026/11/32").is_none());
        assert!(matches!(loc("/2026/11/23/abc-1"), Some(Loc::Session(_))));
        assert!(matches!(
            loc("/2026/11/23/abc-1/info.json"),
            Some(Loc::File(_, _))
        ));
        assert!(loc("/2026/11/23/abc-1/derived/x").is_none());
    }

    #[test]
    fn keys_are_prefix_plus_canonical_path() {
        let Some(Loc::File(s, name)) = loc("/2026/11/23/abc/abc.tar.gz") else {
            panic!()
        };
        assert_eq!(
            format!("{}{name}", s.keys("tenants/acme/").prefix()),
            "tenants/acme/sessions/2026/11/23/abc/abc.tar.gz"
        );
        assert_eq!(
            loc("/2026/11").unwrap().dir_prefix("t/").unwrap(),
            "t/sessions/2026/11/"
        );
    }
}
