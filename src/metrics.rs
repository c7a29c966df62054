//! The process's Prometheus metrics, served by the admin listener
//! (`/metrics`, see [`crate::admin`]).
//!
//! One registry per process, fed where the events are already accounted
//! for, so a protocol adapter adds nothing of its own:
//! - the audit funnel ([`crate::audit::Audit`]): logins, downloads and their
//!   bytes, session listings, erases, renders, ingest stages;
//! - the listeners' gate ([`crate::listener::Gate`]): connections admitted
//!   or refused;
//! - the defender: bans;
//! - the storage timeout decorator ([`crate::store::timeout`]), which every
//!   storage request passes: requests by operation and outcome, and their
//!   latency;
//! - the render pool: renders waiting and running.
//!
//! Label values come from fixed sets (protocol names, operation names,
//! outcomes): nothing a client sends becomes a label, so a client cannot
//! grow the registry.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Protocol {
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolResult {
    pub protocol: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationOutcome {
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Stage {
    pub stage: String,
}

fn latency() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn render_time() -> Histogram {
    // 0.5 s to about 2.3 h.
    Histogram::new(exponential_buckets(0.5, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    pub connections: Family<ProtocolResult, Counter>,
    pub logins: Family<ProtocolResult, Counter>,
    pub bans: Counter,
    pub downloads: Family<ProtocolResult, Counter>,
    pub served_bytes: Family<Protocol, Counter>,
    pub downloads_in_flight: Family<Protocol, Gauge>,
    pub listings: Family<Protocol, Counter>,
    pub erases: Family<Protocol, Counter>,
    pub storage_requests: Family<OperationOutcome, Counter>,
    pub storage_seconds: Family<Operation, Histogram, fn() -> Histogram>,
    pub ingest: Family<Stage, Counter>,
    pub renders: Family<Outcome, Counter>,
    pub render_seconds: Histogram,
    pub renders_waiting: Gauge,
    pub renders_running: Gauge,
    pub api_requests: Family<RouteStatus, Counter>,
    pub webhooks: Family<Outcome, Counter>,
    pub events_pending: Gauge,
    pub spool_bytes: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("recvault");
        let m = Metrics {
            connections: Family::default(),
            logins: Family::default(),
            bans: Counter::default(),
            downloads: Family::default(),
            served_bytes: Family::default(),
            downloads_in_flight: Family::default(),
            listings: Family::default(),
            erases: Family::default(),
            storage_requests: Family::default(),
            storage_seconds: Family::new_with_constructor(latency),
            ingest: Family::default(),
            renders: Family::default(),
            render_seconds: render_time(),
            renders_waiting: Gauge::default(),
            renders_running: Gauge::default(),
            api_requests: Family::default(),
            webhooks: Family::default(),
            events_pending: Gauge::default(),
            spool_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Connections accepted (admitted) or refused (banned, over_limit), by listener",
            m.connections.clone(),
        );
        registry.register(
            "logins",
            "Login attempts by protocol and result (ok, failed)",
            m.logins.clone(),
        );
        registry.register(
            "bans",
            "Addresses banned by the defender after repeated failed logins",
            m.bans.clone(),
        );
        registry.register(
            "downloads",
            "Downloads ended, by protocol and result (complete, partial)",
            m.downloads.clone(),
        );
        registry.register(
            "served_bytes",
            "Bytes of files served to clients, by protocol",
            m.served_bytes.clone(),
        );
        registry.register(
            "downloads_in_flight",
            "Downloads open now, by protocol",
            m.downloads_in_flight.clone(),
        );
        registry.register(
            "listings",
            "Session folders listed, by protocol",
            m.listings.clone(),
        );
        registry.register("erases", "Sessions erased, by protocol", m.erases.clone());
        registry.register(
            "storage_requests",
            "Storage requests by operation and outcome (ok, not_found, exists, changed, transient, permanent, corrupt)",
            m.storage_requests.clone(),
        );
        registry.register(
            "storage_request_seconds",
            "Storage request latency (to the answer's headers for reads), by operation",
            m.storage_seconds.clone(),
        );
        registry.register(
            "ingest_sessions",
            "Ingested sessions reaching a stage (received, archived, failed; delivered, delivery_failed, backup_deleted for tenants delivered to their own storage)",
            m.ingest.clone(),
        );
        registry.register(
            "renders",
            "Derived-media renders finished, by outcome (ok, failed)",
            m.renders.clone(),
        );
        registry.register(
            "render_seconds",
            "Derived-media render durations",
            m.render_seconds.clone(),
        );
        registry.register(
            "renders_waiting",
            "Renders waiting for the render pool",
            m.renders_waiting.clone(),
        );
        registry.register(
            "renders_running",
            "Renders running",
            m.renders_running.clone(),
        );
        registry.register(
            "api_requests",
            "Content API requests answered, by route (its pattern) and status code",
            m.api_requests.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed: retried later, dead: given up after 24 h, lost: not recorded)",
            m.webhooks.clone(),
        );
        registry.register(
            "events_pending",
            "Events in this node's outbox not yet delivered everywhere",
            m.events_pending.clone(),
        );
        registry.register(
            "ingest_spool_bytes",
            "Bytes in the ingest spool (sessions received and not yet archived, and the quarantine), read at each scrape",
            m.spool_bytes.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Everything in the Prometheus text format (OpenMetrics 1.0, which
/// Prometheus reads; the content type is [`CONTENT_TYPE`]).
pub fn encode() -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut s, &get().registry);
    s
}

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The classic Prometheus text format (0.0.4), for clients that do not ask
/// for OpenMetrics (curl, `promtool check metrics`, older scrapers).
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// [`encode`] in the classic text format: a counter's HELP and TYPE name
/// its samples' `_total` name, and there is no `# EOF`.
pub fn encode_classic() -> String {
    classic(&encode())
}

fn classic(open_metrics: &str) -> String {
    let lines: Vec<&str> = open_metrics.lines().collect();
    let counters: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for l in lines {
        if l == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = l.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(r) => out.push_str(&r),
            None => out.push_str(l),
        }
        out.push('\n');
    }
    out
}

fn pr(protocol: &str, result: &str) -> ProtocolResult {
    ProtocolResult {
        protocol: protocol.to_string(),
        result: result.to_string(),
    }
}

fn p(protocol: &str) -> Protocol {
    Protocol {
        protocol: protocol.to_string(),
    }
}

pub fn connection(protocol: &str, result: &str) {
    get().connections.get_or_create(&pr(protocol, result)).inc();
}

pub fn login(protocol: &str, ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    get().logins.get_or_create(&pr(protocol, result)).inc();
}

pub fn ban() {
    get().bans.inc();
}

pub fn download(protocol: &str, bytes: u64, complete: bool) {
    let m = get();
    let result = if complete { "complete" } else { "partial" };
    m.downloads.get_or_create(&pr(protocol, result)).inc();
    m.served_bytes.get_or_create(&p(protocol)).inc_by(bytes);
}

pub fn listing(protocol: &str) {
    get().listings.get_or_create(&p(protocol)).inc();
}

pub fn erase(protocol: &str) {
    get().erases.get_or_create(&p(protocol)).inc();
}

/// A content API request was answered: `route` is its pattern
/// (`/v1/calls/{id}`), never the path asked for, so the labels stay few.
pub fn api_request(route: &'static str, status: u16) {
    get()
        .api_requests
        .get_or_create(&RouteStatus {
            route: route.to_string(),
            status: status.to_string(),
        })
        .inc();
}

pub fn webhook(outcome: &str) {
    get()
        .webhooks
        .get_or_create(&Outcome {
            outcome: outcome.to_string(),
        })
        .inc();
}

pub fn ingest(stage: &str) {
    get()
        .ingest
        .get_or_create(&Stage {
            stage: stage.to_string(),
        })
        .inc();
}

pub fn render(ok: bool, took: Duration) {
    let m = get();
    let outcome = if ok { "ok" } else { "failed" };
    m.renders
        .get_or_create(&Outcome {
            outcome: outcome.to_string(),
        })
        .inc();
    m.render_seconds.observe(took.as_secs_f64());
}

/// One storage request: `operation` as the timeout decorator names it,
/// `outcome` one of the storage errors' names (or `ok`).
pub fn storage(operation: &str, outcome: &str, took: Duration) {
    let m = get();
    m.storage_requests
        .get_or_create(&OperationOutcome {
            operation: operation.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
    m.storage_seconds
        .get_or_create(&Operation {
            operation: operation.to_string(),
        })
        .observe(took.as_secs_f64());
}

/// A download in progress over `protocol`; the gauge goes down when it is
/// dropped.
pub struct InFlight(Gauge);

impl InFlight {
    pub fn start(protocol: &str) -> Self {
        let g = get()
            .downloads_in_flight
            .get_or_create(&p(protocol))
            .clone();
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A gauge held up while this lives (renders waiting, running).
pub struct Held(&'static Gauge);

impl Held {
    pub fn new(g: &'static Gauge) -> Self {
        g.inc();
        Held(g)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_events_show_in_the_text_format_with_their_labels() {
        download("sftp", 1234, true);
        storage("GET", "not_found", Duration::from_millis(3));
        let text = encode();
        assert!(
            text.contains("recvault_downloads_total{protocol=\"sftp\",result=\"complete\"}"),
            "{text}"
        );
        assert!(
            text.contains("recvault_served_bytes_total{protocol=\"sftp\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "recvault_storage_requests_total{operation=\"GET\",outcome=\"not_found\"}"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "recvault_storage_request_seconds_bucket{le=\"0.004\",operation=\"GET\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_has_no_eof() {
        let om = "# HELP x_bans Bans.\n# TYPE x_bans counter\nx_bans_total 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP x_bans_total Bans.\n# TYPE x_bans_total counter\nx_bans_total 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }

    #[test]
    fn a_gauge_held_goes_back_down_when_dropped() {
        let before = get().renders_waiting.get();
        {
            let _w = Held::new(&get().renders_waiting);
        }
        assert_eq!(get().renders_waiting.get(), before);
    }
}
