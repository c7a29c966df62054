//! One runner for jobs over every session of a tenant (verify today;
//! backfill, re-encryption, reindexing, delivery and sweeps later).
//!
//! The runner walks the tenant's sessions in storage-key order, oldest day
//! first, and hands each to the [`Job`], a few at a time
//! (`[limits] job_concurrency`). What a job finds or changes is a
//! [`Finding`]: audited one by one and reported at the end. Progress is
//! written to a checkpoint file per job kind and tenant
//! (`[jobs] state_dir`), so a job that was stopped, crashed or met a storage
//! fault resumes after the last session it finished; a lock file beside it
//! lets one job of a kind run per tenant at a time. On a terminal the
//! runner shows a progress line; the log gets one every few seconds.

pub mod backfill;
pub mod reencrypt;
pub mod reindex;
pub mod verify;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::audit::Audit;
use crate::layout::{self, SessionKeys};
use crate::store::crypt::Crypt;
use crate::store::SharedStore;
use std::sync::Arc;

/// One session as a job sees it.
pub struct Session {
    /// The tenant's objects (decrypted when the tenant is encrypted).
    pub store: SharedStore,
    /// The tenant's encryption, when it has it (the store below it is
    /// `raw`).
    pub sealed: Option<Arc<Crypt>>,
    /// The objects as stored.
    pub raw: SharedStore,
    pub keys: SessionKeys,
    /// The session folder's path in the tenant's tree (`/YYYY/MM/DD/<id>`).
    pub path: String,
}

/// Rebuilds a day's index after a job rewrote sessions' `info.json`; a
/// finding when it changed.
pub async fn refresh_day(
    days: &crate::days::Days,
    day: &layout::Day,
) -> Result<Vec<String>, String> {
    let r = days.rebuild(day).await.map_err(|e| e.to_string())?;
    Ok(if r.changed {
        vec![format!("day index refreshed: {} sessions", r.sessions)]
    } else {
        Vec::new()
    })
}

/// What a job found or changed in one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The session folder's path in the tenant's tree.
    pub path: String,
    pub what: String,
}

/// A job over every session.
#[async_trait]
pub trait Job: Send + Sync {
    /// Its name: in the checkpoint's and lock's file names and the audit trail.
    fn kind(&self) -> &'static str;

    /// Works on one session and returns what it found or changed. `Err`
    /// stops the job (storage is down, say); the next run resumes with
    /// this session.
    async fn session(&self, s: &Session) -> Result<Vec<String>, String>;

    /// Whether the job rewrites sessions' `info.json`: then the day's
    /// index is rebuilt from the sessions after each day ([`refresh_day`]),
    /// and the job works on whole days (a run that stopped after rewriting
    /// an index redoes its day, and still refreshes the day's index).
    fn rewrites_indexes(&self) -> bool {
        false
    }

    /// Works on a whole day after its sessions (`sessions`: how many the
    /// walk handed to [`Self::session`] this run). What it returns is
    /// recorded under the day's path.
    async fn day_end(
        &self,
        days: &crate::days::Days,
        day: &layout::Day,
        _sessions: u64,
    ) -> Result<Vec<String>, String> {
        if self.rewrites_indexes() {
            refresh_day(days, day).await
        } else {
            Ok(Vec::new())
        }
    }

    /// Whether the job works on whole days: its checkpoint moves only
    /// after [`Self::day_end`], so a stopped run redoes the day it was in.
    fn whole_days(&self) -> bool {
        self.rewrites_indexes()
    }
}

/// The tenant a job runs over.
pub struct Target {
    pub tenant: String,
    pub prefix: String,
    /// The shared store.
    pub raw: SharedStore,
    /// The tenant's encryption over `raw`, when it has it.
    pub sealed: Option<Arc<Crypt>>,
    /// The tenant's day indexes (over [`Self::store`]).
    pub days: Arc<crate::days::Days>,
}

impl Target {
    /// The tenant's view of its objects.
    pub fn store(&self) -> SharedStore {
        crate::store::crypt::tenant_store(self.sealed.as_ref(), &self.raw)
    }
}

pub struct Options {
    /// Only sessions filed on or after this day (the call's start).
    pub since: Option<chrono::NaiveDate>,
    pub concurrency: usize,
    pub state_dir: PathBuf,
}

/// What a job did, over this run and the runs it resumed.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub sessions: u64,
    pub findings: Vec<Finding>,
    /// Where this run started, when it resumed an earlier one.
    pub resumed_after: Option<String>,
}

/// The checkpoint file's content. The findings so far are lines of a file
/// beside it (appended as they come), so a checkpoint stays small.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Checkpoint {
    /// The walk position (`YYYY/MM/DD/<id>/`) of the last session done;
    /// every session at or before it is done.
    after: String,
    since: Option<chrono::NaiveDate>,
    sessions: u64,
    findings: u64,
}

/// Where a session stands in the walk; compares like its keys.
fn position(keys: &SessionKeys, day: &str) -> String {
    format!("{day}{}/", keys.id())
}

/// Whether a whole date folder at walk position `folder` (`YYYY/`,
/// `YYYY/MM/`, …) lies before `bound` and can be skipped.
fn before(folder: &str, bound: &str) -> bool {
    folder < bound && !bound.starts_with(folder)
}

/// A job's checkpoint, findings and lock files.
struct State {
    checkpoint: PathBuf,
    findings: PathBuf,
    _lock: std::fs::File,
}

impl State {
    fn open(dir: &Path, kind: &str, tenant: &str) -> Result<State, String> {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the jobs folder {} ([jobs] state_dir): {e}",
                dir.display()
            )
        })?;
        let lock_path = dir.join(format!("{kind}-{tenant}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another {kind} job is running for tenant {tenant:?} ({} is locked); wait for it to end",
                    lock_path.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", lock_path.display()))
            }
        }
        Ok(State {
            checkpoint: dir.join(format!("{kind}-{tenant}.json")),
            findings: dir.join(format!("{kind}-{tenant}.findings.jsonl")),
            _lock: lock,
        })
    }

    /// Appends one finding to the findings file.
    fn record(&self, f: &Finding) -> Result<(), String> {
        let line = serde_json::to_string(f).map_err(|e| e.to_string())? + "\n";
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.findings)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", self.findings.display()))
    }

    /// Keeps only the first `n` findings in the findings file.
    fn keep_findings(&self, n: u64) -> Result<(), String> {
        let Ok(text) = std::fs::read_to_string(&self.findings) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .take(n as usize)
            .map(|l| format!("{l}\n"))
            .collect();
        if kept.len() == text.len() {
            return Ok(());
        }
        std::fs::write(&self.findings, kept)
            .map_err(|e| format!("cannot write {}: {e}", self.findings.display()))
    }

    /// The findings recorded so far, at most `n` of them (a run that
    /// stopped may have written one past its checkpoint).
    fn findings(&self, n: u64) -> Vec<Finding> {
        let text = std::fs::read_to_string(&self.findings).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .take(n as usize)
            .collect()
    }

    fn load(&self) -> Option<Checkpoint> {
        let bytes = std::fs::read(&self.checkpoint).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save(&self, c: &Checkpoint) -> Result<(), String> {
        let tmp = self.checkpoint.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(c).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &self.checkpoint))
            .map_err(|e| format!("cannot write {}: {e}", self.checkpoint.display()))
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.checkpoint);
        let _ = std::fs::remove_file(&self.findings);
    }
}

/// Shows progress on a terminal (rewriting one line) and in the log.
struct Progress {
    kind: &'static str,
    tenant: String,
    terminal: bool,
    last_log: Instant,
}

impl Progress {
    fn show(&mut self, cp: &Checkpoint) {
        let at = cp.after.trim_end_matches('/');
        if self.terminal {
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r{} {}: {} sessions, {} findings, at {:<40}",
                self.kind, self.tenant, cp.sessions, cp.findings, at
            );
            let _ = err.flush();
        }
        if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            info!(job = self.kind, tenant = %self.tenant, sessions = cp.sessions, findings = cp.findings, at, "job progress");
        }
    }

    fn end(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// Runs `job` over every session of `target` (resuming an unfinished run).
/// `Err` when the job stopped before the end; its checkpoint is kept.
pub async fn run(
    job: &dyn Job,
    target: &Target,
    opts: &Options,
    audit: &Audit,
) -> Result<Report, String> {
    let kind = job.kind();
    let state = State::open(&opts.state_dir, kind, &target.tenant)?;
    let mut cp = match state.load() {
        Some(c) if c.since == opts.since => c,
        _ => {
            state.clear();
            Checkpoint {
                since: opts.since,
                ..Checkpoint::default()
            }
        }
    };
    // Findings a stopped run recorded past its checkpoint (the day a
    // whole-day job redoes) are dropped, so the report is this run's truth.
    state.keep_findings(cp.findings)?;
    let resumed_after = (!cp.after.is_empty()).then(|| cp.after.clone());
    if let Some(after) = &resumed_after {
        info!(job = kind, tenant = %target.tenant, %after, "resuming an unfinished job");
    }
    let mut progress = Progress {
        kind,
        tenant: target.tenant.clone(),
        terminal: std::io::stderr().is_terminal(),
        last_log: Instant::now(),
    };
    let since = opts
        .since
        .map(|d| d.format("%Y/%m/%d/").to_string())
        .unwrap_or_default();
    let result = walk(
        job,
        target,
        opts,
        &since,
        &mut cp,
        &state,
        &mut progress,
        audit,
    )
    .await;
    progress.end();
    let complete = result.is_ok();
    audit.job_end(kind, &target.tenant, cp.sessions, cp.findings, complete);
    match result {
        Ok(()) => {
            let report = Report {
                sessions: cp.sessions,
                findings: state.findings(cp.findings),
                resumed_after,
            };
            state.clear();
            Ok(report)
        }
        Err(e) => {
            state.save(&cp)?;
            Err(format!(
                "{e}; {} sessions done, the next run resumes after {}",
                cp.sessions,
                if cp.after.is_empty() {
                    "nothing"
                } else {
                    cp.after.trim_end_matches('/')
                }
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn walk(
    job: &dyn Job,
    target: &Target,
    opts: &Options,
    since: &str,
    cp: &mut Checkpoint,
    state: &State,
    progress: &mut Progress,
    audit: &Audit,
) -> Result<(), String> {
    let tenant_store = target.store();
    let store = tenant_store.as_ref();
    let err = |e: crate::store::StoreError| e.to_string();
    let skip = |folder: &str, after: &str| before(folder, since) || before(folder, after);
    let years_prefix = layout::dates_prefix(&target.prefix, &[]);
    for y in crate::vfs::meta::child_dirs(store, &years_prefix, 0)
        .await
        .map_err(err)?
    {
        if skip(&format!("{y}/"), &cp.after) {
            continue;
        }
        let months_prefix = layout::dates_prefix(&target.prefix, &[&y]);
        for m in crate::vfs::meta::child_dirs(store, &months_prefix, 1)
            .await
            .map_err(err)?
        {
            if skip(&format!("{y}/{m}/"), &cp.after) {
                continue;
            }
            let days_prefix = layout::dates_prefix(&target.prefix, &[&y, &m]);
            for d in crate::vfs::meta::child_dirs(store, &days_prefix, 2)
                .await
                .map_err(err)?
            {
                let day = format!("{y}/{m}/{d}/");
                if skip(&day, &cp.after) {
                    continue;
                }
                let done_before = cp.clone();
                let the_day = layout::Day::new(&y, &m, &d);
                if let Err(e) =
                    walk_day(job, target, opts, &the_day, cp, state, progress, audit).await
                {
                    // A whole-day job redoes the day it was in.
                    if job.whole_days() {
                        *cp = done_before;
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// One day of [`walk`]: its sessions, then the job's [`Job::day_end`].
#[allow(clippy::too_many_arguments)]
async fn walk_day(
    job: &dyn Job,
    target: &Target,
    opts: &Options,
    the_day: &layout::Day,
    cp: &mut Checkpoint,
    state: &State,
    progress: &mut Progress,
    audit: &Audit,
) -> Result<(), String> {
    let tenant_store = target.store();
    let store = tenant_store.as_ref();
    let err = |e: crate::store::StoreError| e.to_string();
    let day_prefix = the_day.sessions_prefix(&target.prefix);
    // Its walk position, `YYYY/MM/DD/`.
    let day = &format!("{}/{}/{}/", the_day.year, the_day.month, the_day.day);
    let mut in_day = 0u64;
    let mut token = None;
    loop {
        let page = store
            .list_page(&day_prefix, None, token)
            .await
            .map_err(err)?;
        let sessions: Vec<Session> = page
            .objects
            .iter()
            .filter_map(|o| layout::session_of_index_key(&day_prefix, &o.key))
            .map(|id| {
                let keys = SessionKeys::new(
                    &target.prefix,
                    &the_day.year,
                    &the_day.month,
                    &the_day.day,
                    id,
                );
                Session {
                    store: tenant_store.clone(),
                    sealed: target.sealed.clone(),
                    raw: target.raw.clone(),
                    path: format!("/{day}{id}"),
                    keys,
                }
            })
            .filter(|s| position(&s.keys, day) > cp.after)
            .collect();
        let mut done = futures::stream::iter(sessions.iter())
            .map(|s| async move { (s, job.session(s).await) })
            .buffered(opts.concurrency.max(1));
        while let Some((s, outcome)) = done.next().await {
            let found = match outcome {
                Ok(f) => f,
                Err(e) => return Err(format!("{}: {e}", s.path)),
            };
            for what in found {
                audit.job_finding(job.kind(), &target.tenant, &s.path, &what);
                state.record(&Finding {
                    path: s.path.clone(),
                    what,
                })?;
                cp.findings += 1;
            }
            cp.sessions += 1;
            in_day += 1;
            cp.after = position(&s.keys, day);
            progress.show(cp);
            // After every session: a stop or crash redoes only
            // the sessions that were in flight.
            if !job.whole_days() {
                state.save(cp)?;
            }
        }
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    if in_day > 0 || !job.whole_days() {
        let found = match job.day_end(&target.days, the_day, in_day).await {
            Ok(f) => f,
            Err(e) => return Err(format!("/{}: {e}", day.trim_end_matches('/'))),
        };
        let path = format!("/{}", day.trim_end_matches('/'));
        for what in found {
            audit.job_finding(job.kind(), &target.tenant, &path, &what);
            state.record(&Finding {
                path: path.clone(),
                what,
            })?;
            cp.findings += 1;
        }
        state.save(cp)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// Runs `job` over every configured tenant (or the one named) for a
/// command-line job: opens the storage and the audit trail, runs, and calls
/// `print` with each tenant's report (and " (resumed after …)" when it
/// resumed). Returns the number of findings; `Err` when a run could not
/// finish (its checkpoint is kept: the next run resumes).
pub async fn run_cli(
    cfg: &crate::config::Config,
    tenant: Option<&str>,
    since: Option<chrono::NaiveDate>,
    job: &dyn Job,
    mut print: impl FnMut(&str, &Report, &str),
) -> Result<usize, String> {
    let tenants: Vec<_> = cfg
        .tenants
        .iter()
        .filter(|t| tenant.is_none_or(|id| t.id.get_ref() == id))
        .collect();
    if let (Some(id), true) = (tenant, tenants.is_empty()) {
        let known: Vec<&str> = cfg
            .tenants
            .iter()
            .map(|t| t.id.get_ref().as_str())
            .collect();
        return Err(format!(
            "no tenant {id:?} in the configuration (tenants: {})",
            known.join(", ")
        ));
    }
    let stores = crate::store::Stores::open(cfg).await?;
    let store = stores.default_store();
    let audit = match &cfg.audit.path {
        Some(p) => Audit::rotating(p, cfg.audit.node.as_deref(), Some(cfg.audit.max_bytes()))
            .map_err(|e| format!("cannot open audit log {}: {e}", p.display()))?,
        None => Audit::stderr(),
    };
    // The job's own audit lines go to the bucket's copy of the trail too.
    let copies = match &cfg.audit.path {
        Some(_) => {
            audit.keep_copies();
            Some(crate::anchor::copies_store(cfg, &store, &audit).await?)
        }
        None => None,
    };
    let opts = Options {
        since,
        concurrency: cfg.limits.job_concurrency,
        state_dir: cfg.jobs.state_dir.clone(),
    };
    let mut total = 0;
    for t in tenants {
        let id = t.id.get_ref();
        // Its sessions (for delivery = "customer", its storage over the
        // operator's backup) and where its day indexes live.
        let (store, days_raw) = stores.tree_of(cfg, t).await?;
        let sealed = crate::store::crypt::for_tenant(t, &store)
            .await
            .map_err(|e| format!("tenant {id:?} cannot be read: {e}"))?;
        let days_store = if t.delivery() == crate::config::Delivery::Customer {
            crate::store::crypt::view_over(sealed.as_ref(), &days_raw)
        } else {
            crate::store::crypt::tenant_store(sealed.as_ref(), &store)
        };
        let prefix = t.prefix.get_ref().clone();
        // Its own shard name (on a store that ignores conditional writes):
        // a server of the same node may be writing the node's shard.
        let days = Arc::new(crate::days::Days::new(
            days_store,
            &prefix,
            &format!("{}-{}", cfg.audit.node_name(), job.kind()),
        ));
        let target = Target {
            tenant: id.clone(),
            prefix,
            raw: store.clone(),
            sealed,
            days,
        };
        let report = run(job, &target, &opts, &audit)
            .await
            .map_err(|e| format!("tenant {id:?}: {e}"))?;
        let resumed = report
            .resumed_after
            .as_deref()
            .map(|a| format!(" (resumed after {})", a.trim_end_matches('/')))
            .unwrap_or_default();
        print(id, &report, &resumed);
        total += report.findings.len();
    }
    if let Some(copies) = copies {
        if let Err(e) = crate::anchor::copy_lines(copies.as_ref(), &audit).await {
            tracing::warn!(error = %e, "the job's audit lines were not copied to the bucket (the file keeps them)");
        }
    }
    Ok(total)
}
