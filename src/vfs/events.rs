//! The tenant's event log as the tree reads it: the events the outbox
//! ([`crate::events`]) stored under `P/events/YYYY/MM/DD/HH/` (see
//! [`crate::layout::EventRef`]), listed by hour, never by reading an event.

use std::time::Duration;

use chrono::{DateTime, Timelike as _, Utc};

use super::{Vfs, VfsError};
use crate::layout::EventRef;
use crate::store::{SharedStore, StoreError};

/// Hours of the log one call reads at most.
pub const MAX_HOURS: i64 = 7 * 24;

impl Vfs {
    /// The events of this user's tenant stored after position `after` (or
    /// in the last 24 hours), at most `limit`, and the position to ask
    /// after next. Needs the list permission.
    pub async fn events(
        &self,
        after: Option<&str>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<(Vec<EventRef>, Option<String>), VfsError> {
        self.need_list()?;
        // Where the event log is written: beside the day indexes.
        Ok(list(
            self.tenant.days.store(),
            &self.tenant.prefix,
            after,
            limit,
            now,
        )
        .await?)
    }
}

/// How long a stored event waits before the log lists it: a write under
/// way on another node (and a little clock skew between nodes) lands
/// before readers pass its place.
pub const SETTLE: Duration = Duration::from_secs(5);

/// The tenant's events stored after position `after` (or in the last 24
/// hours), at most `limit`, in the order they were stored, and the
/// position to ask after next (the last event's, or the end of the hours
/// read when they held none). Reads one listing per hour (at most
/// [`MAX_HOURS`]), never an event's object, and lists only events stored
/// [`SETTLE`] ago or more.
async fn list(
    store: &SharedStore,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<(Vec<EventRef>, Option<String>), StoreError> {
    let settled = now - chrono::Duration::from_std(SETTLE).unwrap_or_default();
    let start = after
        .and_then(EventRef::time_of)
        .unwrap_or(now - chrono::Duration::hours(24));
    let mut hour = start
        .with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(start);
    let mut out = Vec::new();
    let mut hours = 0;
    let mut read_to = None;
    while hour <= settled && hours < MAX_HOURS && out.len() < limit {
        let hp = crate::layout::events_hour(prefix, hour);
        let mut next = None;
        let mut found = Vec::new();
        loop {
            let page = store.list_page(&hp, None, next).await?;
            found.extend(
                page.objects
                    .iter()
                    .filter_map(|o| EventRef::of_key(&hp, &o.key)),
            );
            next = page.next;
            if next.is_none() {
                break;
            }
        }
        found.sort_by_key(EventRef::position);
        out.extend(found.into_iter().filter(|e| {
            after.is_none_or(|a| e.position().as_str() > a)
                && EventRef::time_of(&e.stored).is_some_and(|t| t <= settled)
        }));
        hour += chrono::Duration::hours(1);
        hours += 1;
        // A whole hour read, and settled: nothing more will land in it.
        if hour <= settled {
            read_to = Some(hour - chrono::Duration::microseconds(1));
        }
    }
    out.truncate(limit);
    let next = match out.last() {
        Some(e) => Some(e.position()),
        // Nothing in the hours read: go on from their end (an empty week
        // is not read again), never past what has settled.
        None => match read_to {
            Some(t) if after.is_none_or(|a| EventRef::time_of(a).is_some_and(|at| at < t)) => {
                let stamp = t.format(crate::layout::EVENT_STAMP).to_string();
                Some(format!("{stamp}_{stamp}.end.999999"))
            }
            _ => after.map(str::to_string),
        },
    };
    Ok((out, next))
}
