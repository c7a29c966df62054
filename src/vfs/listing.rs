//! Folder listings that stream page by page.
//!
//! A day folder lists from its day index ([`crate::days`]), a batch of
//! sessions at a time, each at its call's end. Date folders list their
//! children's names with one delimited LIST, then each child's time (the
//! newest call end its day indexes list), a few at a time.

use std::ops::Bound;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::tree::Loc;
use super::{child_loc, meta, Entry, Kind, Tenant, VfsError};
use crate::layout::day::DayIndex;

/// Sessions per batch of a day listing.
const DAY_BATCH: usize = 1000;
/// Children whose times are looked up per batch of a date listing.
const DATE_BATCH: usize = 64;
/// Concurrent time look-ups in a date listing.
const DATE_CONCURRENCY: usize = 8;

pub struct DirLister(State);

enum State {
    Fixed(Option<Vec<Entry>>),
    Day {
        index: Arc<DayIndex>,
        /// The last session id handed out.
        after: Option<String>,
        done: bool,
    },
    Dates {
        tenant: Arc<Tenant>,
        loc: Loc,
        names: Option<Vec<String>>,
        pos: usize,
    },
}

impl DirLister {
    pub(super) fn fixed(entries: Vec<Entry>) -> Self {
        DirLister(State::Fixed(Some(entries)))
    }

    pub(super) fn day(index: Arc<DayIndex>) -> Self {
        DirLister(State::Day {
            index,
            after: None,
            done: false,
        })
    }

    pub(super) fn dates(tenant: Arc<Tenant>, loc: Loc) -> Self {
        DirLister(State::Dates {
            tenant,
            loc,
            names: None,
            pos: 0,
        })
    }

    /// The next batch of entries; `None` once the listing is complete. A
    /// batch may be empty while more follow.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Entry>>, VfsError> {
        match &mut self.0 {
            State::Fixed(entries) => Ok(entries.take()),
            State::Day { index, after, done } => {
                if *done {
                    return Ok(None);
                }
                let rest = match after.take() {
                    Some(a) => index
                        .sessions
                        .range::<str, _>((Bound::Excluded(a.as_str()), Bound::Unbounded)),
                    None => index.sessions.range::<str, _>(..),
                };
                let entries: Vec<Entry> = rest
                    .take(DAY_BATCH)
                    .map(|(id, e)| Entry {
                        name: id.clone(),
                        kind: Kind::Dir,
                        size: 0,
                        mtime: e.ended().or(e.started()).unwrap_or_default(),
                    })
                    .collect();
                *done = entries.len() < DAY_BATCH;
                *after = entries.last().map(|e| e.name.clone());
                Ok(Some(entries))
            }
            State::Dates {
                tenant,
                loc,
                names,
                pos,
            } => {
                if names.is_none() {
                    let prefix = loc.dir_prefix(&tenant.prefix).unwrap_or_default();
                    let depth = match loc {
                        Loc::Root => 0,
                        Loc::Year(_) => 1,
                        _ => 2,
                    };
                    *names = Some(meta::child_dirs(tenant.store.as_ref(), &prefix, depth).await?);
                }
                let all = names.as_deref().unwrap_or_default();
                if *pos >= all.len() {
                    return Ok(None);
                }
                let batch = &all[*pos..(*pos + DATE_BATCH).min(all.len())];
                *pos += batch.len();
                let tenant = tenant.clone();
                let loc = loc.clone();
                let times: Vec<_> = futures::stream::iter(batch.iter().cloned())
                    .map(|name| {
                        let (tenant, child) = (tenant.clone(), child_loc(&loc, &name));
                        async move { tenant.dir_time(&child).await.map(|t| (name, t)) }
                    })
                    .buffered(DATE_CONCURRENCY)
                    .try_collect()
                    .await?;
                // Folders without any archived session are not shown.
                Ok(Some(
                    times
                        .into_iter()
                        .filter_map(|(name, t)| {
                            t.map(|mtime| Entry {
                                name,
                                kind: Kind::Dir,
                                size: 0,
                                mtime,
                            })
                        })
                        .collect(),
                ))
            }
        }
    }

    /// Collects the whole listing (for tests and small folders).
    pub async fn collect_all(mut self) -> Result<Vec<Entry>, VfsError> {
        let mut out = Vec::new();
        while let Some(batch) = self.next_batch().await? {
            out.extend(batch);
        }
        Ok(out)
    }
}

/// An `ls -l` line as OpenSSH's server writes it, also the FTP LIST format (time for recent entries, year otherwise).
pub fn ls_line(e: &Entry, now: DateTime<Utc>) -> String {
    let (mode, links) = match e.kind {
        Kind::Dir => ("dr-xr-xr-x", 2),
        Kind::File => ("-r--r--r--", 1),
    };
    let six_months = chrono::Duration::days(182);
    let when = if e.mtime > now - six_months && e.mtime <= now + chrono::Duration::days(1) {
        e.mtime.format("%b %e %H:%M")
    } else {
        e.mtime.format("%b %e  %Y")
    };
    format!(
        "{mode} {links:>3} recvault recvault {:>8} {when} {}",
        e.size, e.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_line_shows_time_for_recent_and_year_for_old() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut e = Entry {
            name: "a.tar.gz".into(),
            kind: Kind::File,
            size: 1234,
            mtime: DateTime::parse_from_rfc3339("2026-11-23T14:05:00Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        assert_eq!(
            ls_line(&e, now),
            "-r--r--r--   1 recvault recvault     1234 Nov 23 14:05 a.tar.gz"
        );
        e.mtime = DateTime::parse_from_rfc3339("2024-01-02T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            ls_line(&e, now),
            "-r--r--r--   1 recvault recvault     1234 Jan  2  2024 a.tar.gz"
        );
    }
}
