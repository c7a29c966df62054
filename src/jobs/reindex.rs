//! `recvault reindex`: rebuilds the day indexes (SPEC §16) from the
//! sessions themselves, day by day: one read of each session's `info.json`,
//! then the day's index written when it differs from what the scan found
//! (sessions archived while the scan ran are kept; see
//! [`crate::days::Days::rebuild`]). Each day rewritten is a finding. A day
//! is the unit of progress: a stopped run redoes the day it was in.

use async_trait::async_trait;

use super::{Job, Session};
use crate::days::Days;
use crate::layout::Day;

pub struct Reindex;

#[async_trait]
impl Job for Reindex {
    fn kind(&self) -> &'static str {
        "reindex"
    }

    async fn session(&self, _s: &Session) -> Result<Vec<String>, String> {
        // The day's scan reads every session at its end.
        Ok(Vec::new())
    }

    async fn day_end(&self, days: &Days, day: &Day, _sessions: u64) -> Result<Vec<String>, String> {
        let r = days.rebuild(day).await.map_err(|e| e.to_string())?;
        Ok(if r.changed {
            vec![format!(
                "day index rebuilt: {} sessions ({})",
                r.sessions,
                day.label()
            )]
        } else {
            Vec::new()
        })
    }

    fn whole_days(&self) -> bool {
        true
    }
}

/// `recvault reindex`: prints each tenant's days rebuilt.
pub async fn run_cli(
    cfg: &crate::config::Config,
    tenant: Option<&str>,
    since: Option<chrono::NaiveDate>,
) -> Result<usize, String> {
    super::run_cli(cfg, tenant, since, &Reindex, |id, report, resumed| {
        println!(
            "tenant {id}: {} sessions in {} rebuilt day indexes{resumed}",
            report.sessions,
            report.findings.len()
        );
        for f in &report.findings {
            println!("  {}: {}", f.path, f.what);
        }
    })
    .await
}
