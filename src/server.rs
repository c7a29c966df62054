//! `recvault serve`: wires storage, tenants, users and listeners together,
//! handles signals (SIGINT/SIGTERM stop and drain, SIGHUP reloads users and
//! keys) and tells systemd when it is ready.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::audit::Audit;
use crate::auth::defender::Defender;
use crate::auth::Users;
use crate::config::Config;
use crate::shared::Shared;
use crate::store::SharedStore;
use crate::vfs::{Producer, Tenant};

/// A tenant with its day indexes, whose shards (on a store that ignores
/// conditional writes) carry this node's name.
fn with_days(t: Tenant, cfg: &Config) -> Tenant {
    let days = days_over(t.store.clone(), &t.prefix, cfg);
    t.with_days(days)
}

/// The day indexes of tenant prefix `prefix` in `store`.
fn days_over(store: SharedStore, prefix: &str, cfg: &Config) -> Arc<crate::days::Days> {
    Arc::new(
        crate::days::Days::new(store, prefix, &cfg.audit.node_name())
            .fresh_for(cfg.limits.listing_fresh()),
    )
}

/// The tenants the configuration names, with their stores: the store of
/// the tenant's storage profile ([`crate::store::Stores`]), or for
/// `encryption = "recvault"` that store under the tenant's keyset
/// ([`crate::store::crypt::Crypt`]). A tenant whose keyset or storage
/// credentials cannot be read is not started (logged as an error): its
/// users cannot log in and its ingest is answered 503; it never falls back
/// to writing clear objects or to another tenant's storage. On a reload
/// (`existing`), a tenant keeps its store and only its keyset is re-read (a
/// rotation; an unreadable one keeps the keyset in use).
async fn build_tenants(
    cfg: &Config,
    stores: &crate::store::Stores,
    existing: &HashMap<String, Arc<Tenant>>,
    audit: &Audit,
) -> HashMap<String, Arc<Tenant>> {
    let mut out = HashMap::new();
    for t in &cfg.tenants {
        let id = t.id.get_ref().clone();
        let prefix = t.prefix.get_ref().clone();
        let encrypted = t.encryption() == crate::config::Encryption::Recvault;
        let Some(place) = cfg.storage_of(t) else {
            continue;
        };
        let old = existing.get(&id).filter(|old| old.prefix == prefix);
        if let Some(old) = old.filter(|old| old.sealed.is_some() != encrypted) {
            // Ingest writes with the stores of the start: a switch on a
            // reload would archive in the old mode.
            error!(tenant = %id, "SIGHUP: encryption of a tenant changes only at a restart; keeping it as it was");
            out.insert(id, old.clone());
            continue;
        }
        if let Some(old) = old.filter(|old| old.storage != place.describe()) {
            error!(tenant = %id, "SIGHUP: the storage of a tenant changes only at a restart; keeping it as it was");
            out.insert(id, old.clone());
            continue;
        }
        let tenant = match old {
            Some(old) => {
                let Some(sealed) = &old.sealed else {
                    out.insert(id, old.clone());
                    continue;
                };
                let before = sealed.primary_id();
                let read = crate::store::crypt::keyset_of(t).await;
                match read.and_then(|keys| sealed.replace_keyset(keys)) {
                    Ok(()) if sealed.primary_id() != before => {
                        info!(tenant = %id, primary = sealed.primary_id(), previous = before, "keyset rotated: new objects are sealed by the new primary key");
                        audit.key_rotation(&id, sealed.primary_id(), before);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        error!(tenant = %id, error = %e, "SIGHUP: keyset not reloaded, keeping the one in use")
                    }
                }
                old.clone()
            }
            None => {
                let (tree, days_raw) = match stores.tree_of(cfg, t).await {
                    Ok(s) => s,
                    Err(e) => {
                        error!(tenant = %id, error = %e, "tenant not started: its storage cannot be opened; its users cannot log in and its ingest is answered 503 (the gateway keeps its recordings) until the storage settings are fixed and recvault restarted");
                        continue;
                    }
                };
                if place.key != crate::config::DEFAULT_STORAGE {
                    info!(tenant = %id, storage = %place.describe(), "the tenant's objects live in a storage of their own");
                }
                // Delivered to its own storage: one tree over it and the
                // operator's backup (read there first, then the backup);
                // archives and day indexes go to the backup.
                let delivered = t.delivery() == crate::config::Delivery::Customer;
                // An encrypted one seals its backup under the same keyset
                // as its tree (one rotation reaches both).
                let built = crate::store::crypt::for_tenant(t, &tree)
                    .await
                    .map(|sealed| {
                        let days_store = delivered
                            .then(|| crate::store::crypt::view_over(sealed.as_ref(), &days_raw));
                        (sealed, days_store)
                    });
                let (sealed, days_store) = match built {
                    Ok(b) => b,
                    Err(e) => {
                        error!(tenant = %id, error = %e, "tenant not started: its keyset cannot be read, and its objects are never written unencrypted; its users cannot log in and its ingest is answered 503 (the gateway keeps its recordings) until the keyset is fixed and recvault restarted");
                        continue;
                    }
                };
                let tenant = match sealed {
                    None => Tenant::new(
                        id.clone(),
                        prefix,
                        crate::store::crypt::tenant_store(None, &tree),
                        &cfg.limits,
                    ),
                    Some(sealed) => {
                        info!(tenant = %id, primary = sealed.primary_id(), "objects of the tenant are encrypted (Tink AES-GCM-HKDF streaming, AES-256)");
                        Tenant::sealed(id.clone(), prefix, sealed, &cfg.limits)
                    }
                }
                .on_storage(&place);
                Arc::new(match days_store {
                    // Its storage is checked itself, not through the fallback.
                    Some(d) => match stores.of_tenant(cfg, t).await {
                        Ok(home) => tenant.checking(home),
                        Err(_) => tenant,
                    }
                    .with_days(days_over(d, t.prefix.get_ref(), cfg)),
                    None => with_days(tenant, cfg),
                })
            }
        };
        out.insert(id, tenant);
    }
    out
}

/// Where the listeners are bound, once they are.
#[derive(Clone)]
pub struct Listening {
    pub sftp: std::net::SocketAddr,
    /// The explicit FTPS listener, when `[ftps]` is configured.
    pub ftps: Option<std::net::SocketAddr>,
    /// The ingest listener, when `[ingest]` is configured.
    pub ingest: Option<std::net::SocketAddr>,
    /// The content API and web page, when `[api]` is configured.
    pub api: Option<std::net::SocketAddr>,
}

/// Called once the listeners are bound.
pub type OnReady = Box<dyn FnOnce(&Listening) + Send>;

/// Runs the server until SIGINT/SIGTERM. `config_path` is re-read on SIGHUP.
pub async fn serve(
    cfg: Config,
    config_path: Option<PathBuf>,
    on_ready: Option<OnReady>,
) -> Result<(), String> {
    let swept = crate::media::render::ffmpeg::sweep_dead_renders();
    if swept > 0 {
        info!(
            folders = swept,
            "removed what renders of a stopped recvault left behind"
        );
    }
    let stores = crate::store::Stores::open(&cfg).await?;
    let store: SharedStore = stores.default_store();
    let audit = Arc::new(match &cfg.audit.path {
        Some(p) => Audit::rotating(p, cfg.audit.node.as_deref(), Some(cfg.audit.max_bytes()))
            .map_err(|e| format!("cannot open audit log {}: {e}", p.display()))?,
        None => Audit::stdout(),
    });
    let mut tenants = build_tenants(&cfg, &stores, &HashMap::new(), &audit).await;
    let mut places = Vec::new();
    for t in cfg
        .tenants
        .iter()
        .filter(|t| tenants.contains_key(t.id.get_ref()))
    {
        // Opened by build_tenants: the raw store, under any encryption.
        if let Ok(s) = stores.of_tenant(&cfg, t).await {
            places.push((s, t.prefix.get_ref().clone()));
        }
        // Its archives are uploaded into the operator's backup first.
        if t.delivery() == crate::config::Delivery::Customer {
            places.push((stores.default_store(), t.prefix.get_ref().clone()));
        }
    }
    tokio::spawn(sweep_orphan_uploads(
        places,
        Duration::from_secs(cfg.limits.orphan_upload_age_secs),
    ));
    // In the background: storage that does not answer must not keep the
    // listeners from binding (its errors are logged; requests fail clearly).
    tokio::spawn(probe_storage(tenants.clone()));
    let users = Users::from_config(&cfg, &tenants)?;
    if users.is_empty() {
        warn!("no users are configured: nobody can log in");
    }
    // The chain's head goes to the bucket, away from the log's disk.
    // The audit lines are copied there too (encrypted with [audit] keyset).
    let copies = crate::anchor::copies_store(&cfg, &store, &audit).await?;
    if cfg.audit.path.is_some() {
        audit.keep_copies();
    }
    let anchoring = cfg.audit.path.is_some().then(|| {
        let every = Duration::from_secs(cfg.audit.anchor_secs.unwrap_or(60).max(1));
        tokio::spawn(crate::anchor::keep(
            store.clone(),
            copies.clone(),
            audit.clone(),
            every,
        ))
    });
    let host_key = crate::hostkey::load_or_generate(&cfg.sftp.host_key)?;
    crate::media::render::ffmpeg::set_memory_limit(
        cfg.limits.render_memory_mib.saturating_mul(1 << 20),
    );
    let media = crate::media::producer::MediaProducer::new(
        cfg.limits.render_concurrency,
        cfg.limits.render_threads(),
        Duration::from_secs(cfg.limits.render_timeout_secs),
        audit.clone(),
    );
    let allow = cfg
        .defender
        .allow
        .iter()
        .filter_map(|n| crate::net::Net::parse(n.get_ref()))
        .collect();
    let proxies = cfg
        .listeners
        .trusted_proxies
        .iter()
        .filter_map(|n| crate::net::Net::parse(n.get_ref()))
        .collect();
    let defender = Arc::new(Defender::with_allow(&cfg.limits, allow).with_proxies(proxies));
    let producers: Arc<[Arc<dyn Producer>]> = Arc::from(vec![Arc::new(media) as Arc<dyn Producer>]);
    let shared = Arc::new(Shared::new(
        users,
        defender.clone(),
        cfg.limits.clone(),
        audit.clone(),
        producers.clone(),
    ));
    let (listener, bound) = crate::listener::bind(cfg.sftp.listen.get_ref(), "SFTP").await?;
    let ssh_config = Arc::new(crate::sftp::ssh_config(host_key, &cfg.limits));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let drain = cfg.limits.drain();
    // Events are taken from the audit funnel before anything can make one
    // (the archiver resumes spooled sessions at once); the channel keeps
    // them until the outbox runs.
    let mut events_rx = cfg.api.as_ref().map(|_| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        audit.send_events_to(tx);
        rx
    });
    // Every listener's certificate, re-read on SIGHUP.
    let mut certs: Vec<Arc<crate::tls::ServerTls>> = Vec::new();
    let delivery = deliverer(&cfg, &stores, &tenants, &audit).await;
    if let Some(d) = &delivery {
        tokio::spawn(d.clone().run());
    }
    let ingest = match &cfg.ingest {
        Some(i) => {
            let (l, addr) = crate::listener::bind(i.listen.get_ref(), "ingest").await?;
            let days = tenants
                .iter()
                .map(|(id, t)| (id.clone(), t.days.clone()))
                .collect();
            let state = crate::ingest::Ingest::start(
                &cfg,
                &days,
                delivery.clone(),
                defender.clone(),
                audit.clone(),
            )?;
            let tls = https(
                &i.tls_certificate,
                &i.tls_private_key,
                crate::ingest::ALPN,
                "ingest TLS",
            )?;
            if tls.is_none() && !addr.ip().is_loopback() {
                warn!(%addr, "ingest listens without TLS on a non-loopback address: tokens travel in clear text");
            }
            let task = tokio::spawn(crate::ingest::run(
                l,
                state.clone(),
                tls.clone(),
                stop_rx.clone(),
                drain,
            ));
            // Fixed lines scripts and tests can wait for, whatever the log format.
            eprintln!("recvault: ingest listening on {addr}");
            info!(%addr, "ingest listening");
            certs.extend(tls);
            Some((task, state, addr))
        }
        None => None,
    };
    let ftps = match &cfg.ftps {
        Some(f) => Some(start_ftps(f, shared.clone(), &stop_rx, drain).await?),
        None => None,
    };
    if let Some((_, f, _)) = &ftps {
        certs.push(f.tls.clone());
    }
    // Stopped after the drain and clean-up (like the admin listener), so
    // the events of the stop itself are recorded.
    let (admin_stop, admin_stop_rx) = tokio::sync::watch::channel(false);
    let events = match &cfg.api {
        Some(a) => {
            let outbox = crate::events::Outbox::open(&a.outbox_dir)?;
            outbox.set_tenants(crate::events::tenants_of(&cfg, &tenants)?);
            let rx = events_rx.take().ok_or("the events channel was not made")?;
            let task = tokio::spawn(crate::events::run(
                outbox.clone(),
                rx,
                admin_stop_rx.clone(),
            ));
            Some((task, outbox))
        }
        None => None,
    };
    let api = match &cfg.api {
        Some(a) => {
            let (l, addr) = crate::listener::bind(a.listen.get_ref(), "api").await?;
            let tls = https(
                &a.tls_certificate,
                &a.tls_private_key,
                crate::api::ALPN,
                "API TLS",
            )?;
            if tls.is_none() && !addr.ip().is_loopback() {
                warn!(%addr, "the content API listens without TLS on a non-loopback address: API keys and recordings travel in clear text");
            }
            let link_key = crate::api::link_key(&a.link_key_file)?;
            let state = Arc::new(crate::api::Api::new(
                shared.clone(),
                link_key,
                a.public_url.as_ref().map(|u| u.get_ref().clone()),
                tls.is_some(),
                a.session_timeouts(),
            ));
            let task = tokio::spawn(crate::api::run(
                l,
                state,
                tls.clone(),
                stop_rx.clone(),
                drain,
            ));
            certs.extend(tls);
            eprintln!("recvault: api listening on {addr}");
            info!(%addr, "content API listening");
            Some((task, addr))
        }
        None => None,
    };
    // The admin listener outlives the others' drain, so a balancer sees
    // "stopping" (503) rather than a refused connection; it has its own stop.
    let admin = match &cfg.admin {
        Some(a) => {
            let (l, addr) = crate::listener::bind(a.listen.get_ref(), "admin").await?;
            if !addr.ip().is_loopback() {
                warn!(%addr, "the admin listener (metrics, health) is not on loopback: it has no authentication");
            }
            let spool = cfg
                .ingest
                .as_ref()
                .map(|i| (i.spool_dir.clone(), cfg.limits.ingest_min_free_bytes));
            let ready = Arc::new(crate::admin::Readiness::new(
                tenants.clone(),
                spool,
                stop_rx.clone(),
            ));
            let task = tokio::spawn(crate::admin::run(
                l,
                ready.clone(),
                defender.clone(),
                Duration::from_secs(cfg.limits.login_grace_secs),
                admin_stop_rx,
            ));
            eprintln!("recvault: admin listening on {addr}");
            info!(%addr, "admin listening");
            Some((task, ready))
        }
        None => None,
    };
    let sftp = tokio::spawn(crate::sftp::run(
        listener,
        shared.clone(),
        ssh_config,
        stop_rx,
        drain,
    ));
    eprintln!("recvault: sftp listening on {bound}");
    info!(%bound, tenants = tenants.len(), users = shared.users().len(), "SFTP listening");
    notify_systemd("READY=1");
    if let Some(f) = on_ready {
        f(&Listening {
            sftp: bound,
            ftps: ftps.as_ref().and_then(|(_, _, a)| *a),
            ingest: ingest.as_ref().map(|(_, _, a)| *a),
            api: api.as_ref().map(|(_, a)| *a),
        });
    }

    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                let Some(path) = &config_path else {
                    warn!("SIGHUP: no config file to reload (demo mode)");
                    continue;
                };
                match crate::config::load(path) {
                    Ok(new_cfg) => {
                        let new_tenants = build_tenants(&new_cfg, &stores, &tenants, &audit).await;
                        match Users::from_config(&new_cfg, &new_tenants) {
                            Ok(users) => {
                                let n = users.len();
                                shared.set_users(users);
                                if let Some((_, state, _)) = &ingest {
                                    state.reload_tokens(&new_cfg);
                                }
                                for tls in &certs {
                                    match tls.reload() {
                                        Ok(()) => info!("reloaded the {} certificate", tls.what()),
                                        Err(e) => error!(error = %e, "SIGHUP: {} certificate not reloaded, keeping the running one", tls.what()),
                                    }
                                }
                                tenants = new_tenants;
                                if let Some((_, ready)) = &admin {
                                    ready.set_tenants(tenants.clone());
                                }
                                if let Some((_, outbox)) = &events {
                                    match crate::events::tenants_of(&new_cfg, &tenants) {
                                        Ok(t) => outbox.set_tenants(t),
                                        Err(e) => error!(error = %e, "SIGHUP: webhooks not reloaded, keeping the running ones"),
                                    }
                                }
                                audit.config_reload(Ok(()));
                                info!(users = n, tenants = tenants.len(), "reloaded users and keys; open connections keep running");
                            }
                            Err(e) => {
                                audit.config_reload(Err(&e));
                                error!(error = %e, "SIGHUP: reload refused, keeping the running configuration");
                            }
                        }
                    }
                    Err(e) => {
                        audit.config_reload(Err(&e.to_string()));
                        error!(error = %e, "SIGHUP: reload refused, keeping the running configuration");
                    }
                }
            }
        }
    }
    info!(
        "stopping: no new connections; waiting up to {}s for open ones",
        drain.as_secs()
    );
    notify_systemd("STOPPING=1");
    let _ = stop_tx.send(true);
    let _ = sftp.await;
    if let Some((task, _, _)) = ingest {
        let _ = task.await;
    }
    if let Some((task, _)) = api {
        let _ = task.await;
    }
    if let Some((tasks, _, _)) = ftps {
        for t in tasks {
            let _ = t.await;
        }
    }
    // Nothing half-made left in storage: renders stop (deleting their
    // leases), then every upload still open is aborted (an archive cut off
    // stays queued in the spool and is archived at the next start).
    // Bounded as a whole, so the stop fits systemd's TimeoutStopSec
    // (drain + goodbye + this); what a dead storage leaves, the orphan sweep
    // and the leases' expiry handle.
    let clean_up = async {
        for p in producers.iter() {
            p.stop().await;
        }
        // The last head, after the last line (renders cut above wrote theirs).
        if let Some(task) = anchoring {
            task.abort();
            if let Err(e) = crate::anchor::write(store.as_ref(), &audit, None).await {
                warn!(error = %e, "the audit chain's last head was not anchored");
            }
            if let Err(e) = crate::anchor::copy_lines(copies.as_ref(), &audit).await {
                warn!(error = %e, "the last audit lines were not copied to the bucket");
            }
        }
        stores.close().await
    };
    match tokio::time::timeout(CLEAN_UP, clean_up).await {
        Ok(0) => {}
        Ok(aborted) => info!(
            uploads = aborted,
            "aborted the uploads still under way; their sessions are archived at the next start"
        ),
        Err(_) => warn!(
            "storage clean-up not finished within {} s; leftover uploads are aborted by the orphan sweep",
            CLEAN_UP.as_secs()
        ),
    }
    let _ = admin_stop.send(true);
    if let Some((task, _)) = admin {
        let _ = task.await;
    }
    if let Some((task, _)) = events {
        let _ = task.await;
    }
    info!("stopped");
    Ok(())
}

/// Longest the stop spends stopping renders and aborting uploads.
const CLEAN_UP: Duration = Duration::from_secs(10);

/// Binds the FTPS listeners (explicit, and implicit when configured).
async fn start_ftps(
    f: &crate::config::FtpsConfig,
    shared: Arc<Shared>,
    stop: &tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) -> Result<FtpsRunning, String> {
    use crate::ftps::{Ftps, Mode};
    use crate::listener::bind;
    let ftps = Arc::new(Ftps::from_config(f, shared)?);
    let mut listeners = vec![(f.listen.get_ref().clone(), Mode::Explicit)];
    if let Some(l) = &f.implicit_listen {
        listeners.push((l.get_ref().clone(), Mode::Implicit));
    }
    let mut tasks = Vec::new();
    let mut explicit = None;
    for (addr, mode) in listeners {
        let name = mode.name();
        let (l, bound) = bind(&addr, name).await?;
        if mode == Mode::Explicit {
            explicit = Some(bound);
        }
        tasks.push(tokio::spawn(crate::ftps::run(
            l,
            mode,
            ftps.clone(),
            stop.clone(),
            drain,
        )));
        // Fixed lines scripts and tests can wait for, whatever the log format.
        eprintln!("recvault: {name} listening on {bound}");
        info!(%bound, "{name} listening");
    }
    Ok((tasks, ftps, explicit))
}

/// The reloadable TLS of an HTTP listener when its certificate and key are
/// both configured (the configuration check refuses one without the other).
fn https(
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
    alpn: &'static [&'static [u8]],
    what: &'static str,
) -> Result<Option<Arc<crate::tls::ServerTls>>, String> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(Arc::new(crate::tls::ServerTls::load(
            c.clone(),
            k.clone(),
            alpn,
            what,
        )?))),
        _ => Ok(None),
    }
}

/// The FTPS listener tasks, their shared state and the explicit address.
type FtpsRunning = (
    Vec<tokio::task::JoinHandle<()>>,
    Arc<crate::ftps::Ftps>,
    Option<std::net::SocketAddr>,
);

/// The deliverer of the tenants with `delivery = "customer"` that were
/// started, when there are any: each from the operator's backup (its day
/// indexes' store) to its own storage, both as the tenant reads them
/// (decrypted when it is encrypted). Tenants added by a SIGHUP are
/// delivered after a restart (their ingest waits for it too).
async fn deliverer(
    cfg: &Config,
    stores: &crate::store::Stores,
    tenants: &HashMap<String, Arc<Tenant>>,
    audit: &Arc<Audit>,
) -> Option<Arc<crate::delivery::Deliverer>> {
    let mut places = Vec::new();
    for t in &cfg.tenants {
        let id = t.id.get_ref();
        let Some(tenant) = tenants.get(id) else {
            continue;
        };
        if t.delivery() != crate::config::Delivery::Customer {
            continue;
        }
        let home = match stores.of_tenant(cfg, t).await {
            Ok(h) => h,
            Err(e) => {
                error!(tenant = %id, error = %e, "no delivery: the tenant's storage cannot be opened");
                continue;
            }
        };
        // Sealed under the tenant's keyset in use (a rotation reaches it).
        let home = crate::store::crypt::view_over(tenant.sealed.as_ref(), &home);
        places.push(crate::delivery::Place {
            tenant: id.clone(),
            prefix: t.prefix.get_ref().clone(),
            backup: tenant.days.store().clone(),
            home,
            keep: t.backup_keep(),
            describe: tenant.storage.clone(),
        });
        info!(tenant = %id, storage = %tenant.storage, backup_hours = t.backup_keep().as_secs_f64() / 3600.0, "sessions are archived into [storage] and delivered to the tenant's own storage");
    }
    (!places.is_empty()).then(|| crate::delivery::Deliverer::new(places, audit.clone()))
}

/// One listing per tenant at start, so that wrong credentials, a missing
/// bucket, a bucket of another owner or an unreachable endpoint show in
/// the log at once, not at the first login. Not fatal: storage may come
/// back while we run. The tenants are checked side by side, so one that
/// does not answer delays no other's check.
async fn probe_storage(tenants: HashMap<String, Arc<Tenant>>) {
    let checks = tenants.into_values().map(|t| async move {
        if let Err(e) = t.check_storage().await {
            error!(tenant = %t.id, storage = %t.storage, error = %e, "storage check failed: listings and downloads will fail until storage answers");
        }
        // Logs what it finds (and how day indexes are kept there).
        if let Err(e) = t.days.mode().await {
            warn!(tenant = %t.id, error = %e, "conditional-write self-test could not run; it runs again at the first day index update");
        }
    });
    futures::future::join_all(checks).await;
}

/// At start and then daily: aborts the tenants' multipart uploads left
/// unfinished for longer than `age` (see [`crate::store::abort_orphan_uploads`]),
/// each in its tenant's store.
async fn sweep_orphan_uploads(places: Vec<(SharedStore, String)>, age: Duration) {
    loop {
        for (store, p) in &places {
            match crate::store::abort_orphan_uploads(store.as_ref(), p, age).await {
                Ok(0) => {}
                Ok(n) => info!(prefix = %p, uploads = n, "aborted unfinished multipart uploads"),
                Err(e) => {
                    warn!(prefix = %p, error = %e, "cannot sweep unfinished multipart uploads; next try in a day")
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    }
}

/// Sends a state line to systemd when started with `Type=notify`.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let path = PathBuf::from(path);
    if path.as_os_str().as_encoded_bytes().first() == Some(&b'@') {
        // Abstract sockets need platform-specific addressing; systemd uses a path by default.
        return;
    }
    let _ = sock.send_to(state.as_bytes(), &path);
}
