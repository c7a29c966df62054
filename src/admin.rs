//! The admin listener (`[admin] listen`, loopback by default): what an
//! operator's monitoring and a load balancer ask of a node.
//!
//! - `GET /metrics`: [`crate::metrics`] in the Prometheus text format.
//! - `GET /healthz`: 200 while the process runs and answers.
//! - `GET /readyz`: 200 when this node can serve: its listeners are bound
//!   and not stopping, the storage of every tenant on the default profile
//!   (`[storage]`, the operator's) answers a listing (within 5 s), and the
//!   ingest spool's disk has more than `[limits] ingest_min_free_bytes`
//!   free; 503 otherwise. A tenant on a storage profile or bucket of its
//!   own (a customer's account) is checked and reported too, but does not
//!   make the node unready: every node reaches that bucket alike, and a
//!   balancer taking nodes out for one customer's bucket would stop every
//!   other tenant. The JSON body says which
//!   check failed, and each tenant's conditional-write self-test result
//!   (how its day indexes are kept). Results are kept for 2 s, so a flood
//!   of probes costs storage one listing per tenant every 2 s. The tenants
//!   are those of the running configuration (a reload replaces them), and
//!   the listener keeps answering through a stop's drain, with 503
//!   "stopping", so a balancer takes the node out before it goes.
//!
//! Plain HTTP/1.1 with no authentication: keep it on loopback or a
//! management network (the README says so). Its connections pass the
//! same kind of gate as every listener (the defender's bans, a cap of its
//! own: 32 connections, each closed after 4 × `login_grace_secs`); nothing
//! it serves names a tenant's data beyond tenant ids.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tracing::debug;

use crate::auth::defender::Defender;
use crate::http::{error_reply, json_reply, reply, Reply};
use crate::listener::{Admitted, Gate};
use crate::vfs::Tenant;

/// Longest a readiness check waits for one tenant's storage.
const STORAGE_CHECK: Duration = Duration::from_secs(5);
/// How long a readiness result is reused.
const READY_CACHE: Duration = Duration::from_secs(2);

/// What `/readyz` looks at.
pub struct Readiness {
    /// The running configuration's tenants (a reload replaces them).
    tenants: std::sync::RwLock<HashMap<String, Arc<Tenant>>>,
    /// The ingest spool and the free bytes it must keep.
    spool: Option<(PathBuf, u64)>,
    stopping: watch::Receiver<bool>,
    last: Mutex<Option<(Instant, bool, Value)>>,
}

impl Readiness {
    pub fn new(
        tenants: HashMap<String, Arc<Tenant>>,
        spool: Option<(PathBuf, u64)>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            tenants: std::sync::RwLock::new(tenants),
            spool,
            stopping,
            last: Mutex::new(None),
        }
    }

    /// The tenants after a configuration reload.
    pub fn set_tenants(&self, tenants: HashMap<String, Arc<Tenant>>) {
        *self.tenants.write().unwrap_or_else(|e| e.into_inner()) = tenants;
    }

    /// Whether the node is ready, and the checks' results. A stopping node
    /// says so at once (no cached "ready").
    pub async fn check(&self) -> (bool, Value) {
        let mut last = self.last.lock().await;
        if let Some((at, ready, body)) = &*last {
            if at.elapsed() < READY_CACHE && !*self.stopping.borrow() {
                return (*ready, body.clone());
            }
        }
        let (ready, body) = self.check_now().await;
        *last = Some((Instant::now(), ready, body.clone()));
        (ready, body)
    }

    async fn check_now(&self) -> (bool, Value) {
        let mut ready = true;
        let stopping = *self.stopping.borrow();
        if stopping {
            ready = false;
        }
        let tenants: Vec<Arc<Tenant>> = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let checks = tenants.iter().map(|t| async move {
            let storage = match tokio::time::timeout(STORAGE_CHECK, t.check_storage()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "storage did not answer a listing within {} s",
                    STORAGE_CHECK.as_secs()
                )),
            };
            let writes = match t.days.known_mode() {
                Some(crate::days::Mode::Shared) => "honoured (one shared index per day)",
                Some(crate::days::Mode::Shards) => "ignored (one index shard per node and day)",
                None => "not tested yet",
            };
            (t.id.clone(), storage, writes, t.on_default_storage)
        });
        let mut tenants = serde_json::Map::new();
        for (id, storage, writes, counts) in futures::future::join_all(checks).await {
            let mut entry = json!({ "conditional_writes": writes });
            if !counts {
                entry["own_storage"] = json!(true);
            }
            match storage {
                Ok(()) => entry["storage"] = json!("ok"),
                Err(e) => {
                    ready &= !counts;
                    entry["storage"] = json!(e);
                }
            }
            tenants.insert(id, entry);
        }
        let mut body = json!({
            "listeners": if stopping { "stopping" } else { "bound" },
            "tenants": tenants,
        });
        if let Some((dir, floor)) = &self.spool {
            // statvfs blocks: off the runtime, and bounded.
            let d = dir.clone();
            let free = tokio::time::timeout(
                STORAGE_CHECK,
                tokio::task::spawn_blocking(move || fs4::available_space(&d)),
            )
            .await;
            let free = match free {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
                Err(_) => Err(std::io::Error::other("no answer within 5 s")),
            };
            match free {
                Ok(free) => {
                    body["spool"] = json!({ "free_bytes": free, "floor_bytes": floor });
                    if free <= *floor {
                        ready = false;
                        body["spool"]["error"] = json!(
                            "the spool's disk is at its floor ([limits] ingest_min_free_bytes)"
                        );
                    }
                }
                Err(e) => {
                    ready = false;
                    body["spool"] =
                        json!({ "error": format!("cannot read the spool's free space: {e}") });
                }
            }
        }
        body["ready"] = json!(ready);
        (ready, body)
    }
}

/// Most spool entries one scrape walks (a spool is sessions in flight).
const SPOOL_WALK_MAX: usize = 200_000;

/// The bytes of the files under `dir`, walking at most [`SPOOL_WALK_MAX`]
/// entries.
fn bytes_under(dir: &std::path::Path) -> u64 {
    let (mut total, mut seen, mut stack) = (0u64, 0usize, vec![dir.to_path_buf()]);
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > SPOOL_WALK_MAX {
                return total;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// A walk of the spool under way (one at a time, however fast the scrapes).
static WALKING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Readiness {
    /// Gauges read at a scrape: the spool's bytes (bounded in time; one
    /// walk at a time, a scrape during a walk keeps the last value).
    async fn refresh_gauges(&self) {
        use std::sync::atomic::Ordering;
        if let Some((dir, _)) = &self.spool {
            if WALKING.swap(true, Ordering::AcqRel) {
                return;
            }
            let d = dir.clone();
            let walk = tokio::task::spawn_blocking(move || {
                let bytes = bytes_under(&d);
                crate::metrics::get().spool_bytes.set(bytes as i64);
                WALKING.store(false, Ordering::Release);
            });
            // The scrape waits a bounded time; the walk finishes on its own.
            let _ = tokio::time::timeout(STORAGE_CHECK, walk).await;
        }
    }
}

fn wants_open_metrics(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

async fn handle(req: Request<Incoming>, ready: Arc<Readiness>) -> Reply {
    let head = req.method() == Method::HEAD;
    if req.uri().path() == "/metrics" {
        ready.refresh_gauges().await;
    }
    let mut r = match req.uri().path() {
        _ if req.method() != Method::GET && !head => {
            let mut r = error_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served here",
            );
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
            r
        }
        // Prometheus asks for OpenMetrics; anything else gets the classic
        // text format.
        "/metrics" if wants_open_metrics(&req) => reply(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            crate::metrics::encode(),
        ),
        "/metrics" => reply(
            StatusCode::OK,
            crate::metrics::CLASSIC_CONTENT_TYPE,
            crate::metrics::encode_classic(),
        ),
        "/healthz" => json_reply(StatusCode::OK, &json!({ "alive": true })),
        "/readyz" => {
            let (ok, body) = ready.check().await;
            let code = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_reply(code, &body)
        }
        _ => error_reply(
            StatusCode::NOT_FOUND,
            "no such page (try /metrics, /healthz or /readyz)",
        ),
    };
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    if head {
        *r.body_mut() = Full::new(Bytes::new());
    }
    r
}

/// Connections the admin listener holds at once (a scraper and a few
/// probes need a handful).
const MAX_CONNECTIONS: usize = 32;

/// Serves the admin listener until `shutdown` turns true.
pub async fn run(
    listener: TcpListener,
    ready: Arc<Readiness>,
    defender: Arc<Defender>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let gate = Gate::new("admin", MAX_CONNECTIONS);
    while let Some(Admitted { sock, peer, permit }) =
        gate.accept(&listener, &defender, &mut shutdown).await
    {
        let ready = ready.clone();
        tokio::spawn(async move {
            serve(sock, peer, ready, idle).await;
            drop(permit);
        });
    }
}

async fn serve(
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    ready: Arc<Readiness>,
    idle: Duration,
) {
    let service = hyper::service::service_fn(move |req| {
        let ready = ready.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req, ready).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle)
        .serve_connection(TokioIo::new(sock), service);
    // A connection is bounded in time whatever the client does.
    match tokio::time::timeout(idle * 4, conn).await {
        Ok(Err(e)) => debug!(%peer, error = %e, "admin connection ended with an error"),
        Err(_) => debug!(%peer, "admin connection closed: open too long"),
        Ok(Ok(())) => {}
    }
}
