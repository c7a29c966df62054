//! Events for integrations: `call.archived`, `call.failed`,
//! `render.completed`, `render.failed`, `call.erased`, and for tenants
//! delivered to their own storage `call.delivered` and `delivery.failed`,
//! taken from the
//! audit funnel (the one place every protocol reports them), recorded in a
//! durable local outbox, and from there
//!
//! - written to the tenant's event log in storage (one object per event,
//!   under `P/events/YYYY/MM/DD/HH/`, see [`crate::layout::EventRef`]), which
//!   `GET /v1/events` lists through [`crate::vfs::Vfs::events`] — so every
//!   node answers the same;
//! - delivered to the tenant's webhooks (`[[tenants.webhooks]]`): a POST of
//!   the event's JSON, signed with HMAC-SHA256 over `<timestamp>.<body>`
//!   (headers `X-Recvault-Timestamp`, `X-Recvault-Signature: v1=<hex>`,
//!   `X-Recvault-Event-Id` for de-duplication). A failed delivery is
//!   retried with backoff (2 s doubling to 10 min) for 24 hours, then the
//!   event is dead-lettered (`<outbox>/dead/`, counted in metrics).
//!
//! The outbox is a folder of this node (`[api] outbox_dir`): a record is
//! written and fsync'd before anything is delivered, and removed once every
//! target has it, so deliveries survive a restart (at least once; receivers
//! de-duplicate by event id). A node gone for good takes its undelivered
//! records with it unless its folder is moved to another node; the event
//! log in storage still has every event that node had stored. Nothing here
//! waits on ingest or downloads: the funnel hands events over a channel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

pub use crate::layout::event::{listed, Event, KINDS};
use crate::layout::EventRef;
use crate::store::{PutOptions, SharedStore, StoreError};

/// First retry delay of a failed delivery; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long a delivery is retried before the event is dead-lettered.
pub const GIVE_UP: Duration = Duration::from_secs(24 * 3600);
/// Longest time the outbox folder goes unread while nothing is due.
const RESCAN: Duration = Duration::from_secs(60);
/// Longest wait for a webhook receiver's answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1={}", hex::encode(ctx.sign().as_ref()))
}

/// One webhook of a tenant.
#[derive(Clone)]
pub struct Hook {
    pub url: String,
    pub secret: Vec<u8>,
    /// The event types it gets.
    pub kinds: Vec<String>,
}

/// Where a tenant's events go.
#[derive(Clone)]
pub struct Tenant {
    pub store: SharedStore,
    pub prefix: String,
    pub hooks: Vec<Hook>,
}

/// One delivery of a record: the event log (`url` None) or a webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Target {
    url: Option<String>,
    attempts: u32,
    /// Unix ms of the next attempt.
    next_ms: i64,
    #[serde(default)]
    last_error: Option<String>,
}

/// One outbox file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    event: Event,
    targets: Vec<Target>,
}

/// The durable outbox and its delivery.
pub struct Outbox {
    dir: PathBuf,
    tenants: RwLock<Arc<HashMap<String, Tenant>>>,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<Bytes>,
    >,
    wake: tokio::sync::Notify,
}

impl Outbox {
    /// Opens (creates) the outbox folder.
    pub fn open(dir: &Path) -> Result<Arc<Outbox>, String> {
        std::fs::create_dir_all(dir.join("dead"))
            .map_err(|e| format!("cannot create the event outbox {}: {e}", dir.display()))?;
        // Half-written records of a crash (their event was never recorded).
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("no TLS roots for webhooks: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https);
        Ok(Arc::new(Outbox {
            dir: dir.to_path_buf(),
            tenants: RwLock::new(Arc::new(HashMap::new())),
            client,
            wake: tokio::sync::Notify::new(),
        }))
    }

    /// The tenants (stores, webhooks) after a start or a reload.
    pub fn set_tenants(&self, tenants: HashMap<String, Tenant>) {
        *self.tenants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tenants);
        self.wake.notify_one();
    }

    fn tenants(&self) -> Arc<HashMap<String, Tenant>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records an event durably (its file written and fsync'd): the event
    /// log and every webhook of the tenant that wants its type.
    async fn record(&self, event: Event) {
        let tenants = self.tenants();
        let now = Utc::now().timestamp_millis();
        let target = |url: Option<String>| Target {
            url,
            attempts: 0,
            next_ms: now,
            last_error: None,
        };
        let mut targets = vec![target(None)];
        if let Some(t) = tenants.get(&event.tenant) {
            for h in &t.hooks {
                if h.kinds.contains(&event.kind) {
                    targets.push(target(Some(h.url.clone())));
                }
            }
        }
        let rec = Record { event, targets };
        match self.write(&rec).await {
            Ok(()) => {
                crate::metrics::get().events_pending.inc();
            }
            Err(e) => {
                warn!(event = %rec.event.id, error = %e, "event not recorded in the outbox: it is lost for webhooks and the event log");
                crate::metrics::webhook("lost");
            }
        }
    }

    async fn write(&self, rec: &Record) -> std::io::Result<()> {
        self.write_as(&self.dir, &rec.event.id, rec).await
    }

    /// Writes `rec` as `<dir>/<name>.json`, durably (temporary file,
    /// fsync, rename, fsync of the folder).
    async fn write_as(&self, dir: &Path, name: &str, rec: &Record) -> std::io::Result<()> {
        let path = dir.join(format!("{name}.json"));
        let tmp = dir.join(format!(".{name}.tmp"));
        let bytes = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The records waiting, oldest first.
    async fn pending(&self) -> Vec<PathBuf> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| {
                            p.extension().is_some_and(|x| x == "json")
                                && !p
                                    .file_name()
                                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.sort();
            out
        })
        .await
        .unwrap_or_default()
    }

    /// One pass over the outbox: every target that is due gets one attempt;
    /// a target that fails is skipped for the rest of the pass. Returns when
    /// the next target is due (Unix ms), or `None` when nothing waits.
    async fn deliver_due(&self) -> Option<i64> {
        let tenants = self.tenants();
        // A target failing in this pass, and when it is tried again.
        let mut failing: HashMap<Option<String>, i64> = HashMap::new();
        let mut due: Option<i64> = None;
        let files = self.pending().await;
        crate::metrics::get().events_pending.set(files.len() as i64);
        let now = Utc::now().timestamp_millis();
        for path in files {
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            let Ok(mut rec) = serde_json::from_slice::<Record>(&bytes) else {
                warn!(file = %path.display(), "unreadable outbox record moved to dead/");
                let _ = tokio::fs::rename(
                    &path,
                    self.dir
                        .join("dead")
                        .join(path.file_name().unwrap_or_default()),
                )
                .await;
                continue;
            };
            let mut changed = false;
            let mut kept = Vec::new();
            for mut t in std::mem::take(&mut rec.targets) {
                if t.next_ms > now {
                    due = Some(due.map_or(t.next_ms, |d| d.min(t.next_ms)));
                    kept.push(t);
                    continue;
                }
                if let Some(&again) = failing.get(&t.url) {
                    due = Some(due.map_or(again, |d| d.min(again)));
                    kept.push(t);
                    continue;
                }
                changed = true;
                let outcome = self.attempt(&tenants, &rec.event, t.url.as_deref()).await;
                match outcome {
                    Ok(()) => {
                        if t.url.is_some() {
                            crate::metrics::webhook("delivered");
                        }
                    }
                    Err(e) => {
                        t.attempts += 1;
                        let backoff = FIRST_BACKOFF
                            .saturating_mul(1u32 << t.attempts.min(16))
                            .min(MAX_BACKOFF);
                        t.next_ms = now + backoff.as_millis() as i64;
                        failing.insert(t.url.clone(), t.next_ms);
                        t.last_error = Some(e.chars().take(300).collect());
                        let age = EventRef::time_of(&rec.event.id)
                            .map(|at| Utc::now() - at)
                            .and_then(|a| a.to_std().ok())
                            .unwrap_or_default();
                        let what = t.url.as_deref().unwrap_or("the event log");
                        if age > GIVE_UP {
                            warn!(event = %rec.event.id, target = %what, error = %e, attempts = t.attempts, "event dead-lettered: not delivered within 24 hours");
                            crate::metrics::webhook("dead");
                            self.dead_letter(&rec, &t).await;
                        } else {
                            debug!(event = %rec.event.id, target = %what, error = %e, "delivery failed; retried later");
                            if t.url.is_some() {
                                crate::metrics::webhook("failed");
                            }
                            due = Some(due.map_or(t.next_ms, |d| d.min(t.next_ms)));
                            kept.push(t);
                        }
                    }
                }
            }
            rec.targets = kept;
            if rec.targets.is_empty() {
                let _ = tokio::fs::remove_file(&path).await;
            } else if changed {
                if let Err(e) = self.write(&rec).await {
                    warn!(event = %rec.event.id, error = %e, "cannot update an outbox record");
                }
            }
        }
        due
    }

    async fn dead_letter(&self, rec: &Record, t: &Target) {
        let dead = Record {
            event: rec.event.clone(),
            targets: vec![t.clone()],
        };
        let tag = hex::encode(
            &<sha2::Sha256 as sha2::Digest>::digest(t.url.as_deref().unwrap_or("log").as_bytes())
                [..4],
        );
        if let Err(e) = self
            .write_as(
                &self.dir.join("dead"),
                &format!("{}-{tag}", rec.event.id),
                &dead,
            )
            .await
        {
            warn!(event = %rec.event.id, error = %e, "cannot write a dead letter");
        }
    }

    /// One attempt at one target.
    async fn attempt(
        &self,
        tenants: &HashMap<String, Tenant>,
        event: &Event,
        url: Option<&str>,
    ) -> Result<(), String> {
        let tenant = tenants
            .get(&event.tenant)
            .ok_or_else(|| format!("tenant {:?} is not running", event.tenant))?;
        let body = serde_json::to_vec(&event.body()).unwrap_or_default();
        let Some(url) = url else {
            let key = event
                .reference(Utc::now())
                .key(&tenant.prefix)
                .ok_or("the event cannot be named in storage")?;
            return tenant
                .store
                .put(&key, Bytes::from(body), PutOptions::default())
                .await
                .map_err(|e: StoreError| e.to_string());
        };
        let Some(hook) = tenant.hooks.iter().find(|h| h.url == url) else {
            // Removed from the configuration: nothing to deliver to.
            return Ok(());
        };
        let ts = Utc::now().timestamp();
        let req = hyper::Request::post(url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("recvault/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-recvault-event", &event.kind)
            .header("x-recvault-event-id", &event.id)
            .header("x-recvault-timestamp", ts.to_string())
            .header("x-recvault-signature", signature(&hook.secret, ts, &body))
            .body(http_body_util::Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad webhook request: {e}"))?;
        let answer = tokio::time::timeout(DELIVERY_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {} s", DELIVERY_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot reach the receiver: {e}"))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

/// Records the events sent on `rx` (at once: never behind a delivery) and
/// delivers the outbox, until `stop`.
pub async fn run(
    outbox: Arc<Outbox>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let pending = outbox.pending().await.len();
    if pending > 0 {
        info!(
            records = pending,
            "event outbox: delivering what the last run left"
        );
    }
    let delivery = {
        let (outbox, mut stop) = (outbox.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                // The outbox is read only when something is due, a record
                // was added or the tenants changed (and at least every
                // RESCAN, for records moved in from a node gone for good).
                let due = tokio::select! {
                    due = outbox.deliver_due() => due,
                    _ = async { drop(stop.wait_for(|s| *s).await) } => break,
                };
                let wait = due
                    .map(|d| (d - Utc::now().timestamp_millis()).max(0) as u64)
                    .map_or(RESCAN, Duration::from_millis)
                    .min(RESCAN);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = outbox.wake.notified() => {}
                    _ = async { drop(stop.wait_for(|s| *s).await) } => break,
                }
            }
        })
    };
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    outbox.record(ev).await;
                    outbox.wake.notify_one();
                }
                None => break,
            },
            _ = async { drop(stop.wait_for(|s| *s).await) } => break,
        }
    }
    // Events sent while stopping are recorded; their delivery waits for the
    // next start.
    while let Ok(ev) = rx.try_recv() {
        outbox.record(ev).await;
    }
    let _ = delivery.await;
}

/// Where each running tenant's events go, from the configuration: its
/// store and prefix, and its webhooks with their secrets (read here).
pub fn tenants_of(
    cfg: &crate::config::Config,
    running: &HashMap<String, Arc<crate::vfs::Tenant>>,
) -> Result<HashMap<String, Tenant>, String> {
    let mut out = HashMap::new();
    for t in &cfg.tenants {
        let Some(run) = running.get(t.id.get_ref()) else {
            continue;
        };
        let mut hooks = Vec::new();
        for w in &t.webhooks {
            let secret = crate::secret::read_secret_file(w.secret_file.get_ref())?;
            let kinds = if w.events.is_empty() {
                KINDS.iter().map(|k| k.to_string()).collect()
            } else {
                w.events.iter().map(|e| e.get_ref().clone()).collect()
            };
            hooks.push(Hook {
                url: w.url.get_ref().clone(),
                secret: secret.trim().as_bytes().to_vec(),
                kinds,
            });
        }
        out.insert(
            run.id.clone(),
            Tenant {
                // Where its day indexes live: its storage, or for
                // delivery = "customer" the operator's (so an event of a
                // customer bucket that is down is still logged).
                store: run.days.store().clone(),
                prefix: run.prefix.clone(),
                hooks,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_key_names_the_event_and_reads_back() {
        let e = Event::at_path(
            "render.completed",
            "acme",
            "/2026/11/23/c-1/c-1.mp4",
            json!({}),
            "node-a",
        )
        .unwrap();
        assert_eq!(e.call_id().as_deref(), Some("2026-11-23_c-1"));
        let stored = Utc::now();
        let key = e.reference(stored).key("tenants/acme/").unwrap();
        let hour = crate::layout::events_hour("tenants/acme/", stored);
        assert!(key.starts_with(&hour), "{key}");
        assert_eq!(EventRef::of_key(&hour, &key), Some(e.reference(stored)));
        assert!(EventRef::is_position(&e.reference(stored).position()));
        let failed = Event::new(
            "call.failed",
            "acme",
            "c-9",
            None,
            None,
            json!({"reason": "x"}),
            "n",
        );
        let key = failed.reference(Utc::now()).key("p/").unwrap();
        assert!(key.ends_with("/call.failed/c-9/-/-"), "{key}");
        assert_eq!(failed.call_id(), None);
        // Ids of one node are ordered by time, then sequence.
        let a = Event::new("call.erased", "t", "s", None, None, json!({}), "n");
        let b = Event::new("call.erased", "t", "s", None, None, json!({}), "n");
        assert!(a.id < b.id);
        assert!(EventRef::is_id(&a.id), "{}", a.id);
        for bad in [
            "",
            "x",
            "20261302T000000.000000Z.n.000001",
            "20261202T000000.000000Z.n.1",
            "20261202T000000.000000Z..000001",
            "20261202T000000.000000Z.n/x.000001",
        ] {
            assert!(!EventRef::is_id(bad), "{bad}");
        }
        assert!(Event::at_path("call.erased", "t", "/2026/11", json!({}), "n").is_none());
    }

    /// A delivery failing for more than a day is dead-lettered (and counted);
    /// a younger one waits for its backoff, and the pass says when.
    #[tokio::test]
    async fn a_delivery_failing_for_a_day_is_dead_lettered_and_a_young_one_waits() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox")).unwrap();
        let store: SharedStore =
            Arc::new(crate::store::local::LocalStore::open(&dir.path().join("store")).unwrap());
        // A port nothing listens on: every attempt fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let hook = Hook {
            url: url.clone(),
            secret: b"s".to_vec(),
            kinds: KINDS.iter().map(|k| k.to_string()).collect(),
        };
        let tenant = Tenant {
            store,
            prefix: "p/".into(),
            hooks: vec![hook],
        };
        outbox.set_tenants(HashMap::from([("t".to_string(), tenant)]));
        let mut old = Event::new("call.erased", "t", "s1", None, None, json!({}), "n");
        let day_ago = Utc::now() - chrono::Duration::hours(25);
        old.id = format!("{}.n.000001", day_ago.format(crate::layout::EVENT_STAMP));
        let young = Event::new("call.erased", "t", "s2", None, None, json!({}), "n");
        for event in [old.clone(), young.clone()] {
            let target = Target {
                url: Some(url.clone()),
                attempts: 3,
                next_ms: 0,
                last_error: None,
            };
            outbox
                .write(&Record {
                    event,
                    targets: vec![target],
                })
                .await
                .unwrap();
        }
        let dead_before = crate::metrics::get()
            .webhooks
            .get_or_create(&crate::metrics::Outcome {
                outcome: "dead".into(),
            })
            .get();
        let before = Utc::now().timestamp_millis();
        let due = outbox.deliver_due().await.expect("the young record waits");
        let dead: Vec<String> = std::fs::read_dir(dir.path().join("outbox/dead"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert!(dead[0].starts_with(&old.id), "{dead:?}");
        let waiting = outbox.pending().await;
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        assert!(waiting[0].ends_with(format!("{}.json", young.id)));
        // Failed for the fourth time: 2 s doubled four times.
        assert!(due >= before + 32_000 && due <= Utc::now().timestamp_millis() + 32_000);
        let dead_after = crate::metrics::get()
            .webhooks
            .get_or_create(&crate::metrics::Outcome {
                outcome: "dead".into(),
            })
            .get();
        assert!(dead_after > dead_before);
    }

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let s = signature(b"secret", 1_700_000_000, b"{\"a\":1}");
        assert!(s.starts_with("v1=") && s.len() == 3 + 64);
        assert_ne!(s, signature(b"secret", 1_700_000_001, b"{\"a\":1}"));
        assert_ne!(s, signature(b"secret", 1_700_000_000, b"{\"a\":2}"));
        assert_ne!(s, signature(b"other", 1_700_000_000, b"{\"a\":1}"));
    }
}
