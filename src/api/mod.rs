//! The content API (`[api] listen`): HTTP `/v1` for integrations, a third
//! thin adapter over the same tree, users, permissions and audit trail as
//! SFTP and FTPS.
//!
//! - Authentication: `Authorization: Bearer <key>` with a per-tenant API key
//!   (`[[tenants.api_keys]]`, stored as a SHA-256 hash). Its scopes are the
//!   tree's permissions: `calls:read` = list, `media:read` = download,
//!   `calls:erase` = delete. A wrong key is a failed login (audited, counted
//!   by the shared defender); a right key's login is audited once per
//!   address every 5 minutes (what each request does is audited always);
//!   another tenant's call is not found (404).
//! - `GET /v1/calls` (day index: date range, agent, queue, tag, session
//!   filters; cursor pages), `GET /v1/calls/{id}`, `DELETE /v1/calls/{id}`
//!   (erase), `GET|HEAD /v1/calls/{id}/media/{name}` (single Range, ETag,
//!   If-Range), signed links (`POST …/links`, `GET /v1/links/{token}`), and
//!   the OpenAPI document (`GET /v1/openapi.json`, `docs/openapi.json`).
//! - Errors are `{"error": "...", "status": N}`, mapped from the tree's
//!   errors in one place ([`ApiError`]).
//!
//! `route` parses paths and call ids, `calls` answers the call endpoints,
//! `media` the downloads and `link` the signed links.

mod calls;
mod link;
mod media;
pub mod page;
pub mod route;
pub mod session;

/// The API's parsers of outside input, for `crate::fuzz`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// A search's query string.
    pub fn query(q: &str) {
        let _ = super::calls::Query::parse(Some(q));
    }

    /// A `Range` header against a file of `size` bytes; a range served
    /// lies inside the file.
    pub fn range(header: &str, size: u64) {
        if let super::media::Ask::Part(a, b) = super::media::ask(Some(header), size) {
            assert!(a <= b && b < size, "{header:?} of {size}: {a}-{b}");
        }
    }
}

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tracing::warn;

use crate::http::{boxed, error_reply, json_reply, Body};
use crate::listener::PreAuthSlot;
use crate::shared::{Conn, Shared};
use crate::vfs::VfsError;
use route::{NoRoute, Route};

/// The OpenAPI 3.1 document of the API, as checked in.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Largest request body the API reads (a link request is a few bytes).
const MAX_BODY: usize = 16 * 1024;

/// The link-signing secret of `[api] link_key_file`: read, or created
/// (32 random bytes, hex, mode 0600) when the file does not exist.
pub fn link_key(path: &std::path::Path) -> Result<[u8; 32], String> {
    if !path.exists() {
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
        crate::secret::write_secret_file(path, format!("{}\n", hex::encode(raw)).as_bytes())?;
        tracing::info!(path = %path.display(), "created the API's link-signing key (copy it to every node behind one balancer)");
    }
    let text = crate::secret::read_secret_file(path)?;
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            format!(
                "{}: the link key must be 64 hex digits (32 random bytes)",
                path.display()
            )
        })?;
    Ok(bytes)
}

/// What the API offers by ALPN over TLS: HTTP/2, then HTTP/1.1.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Serves the API (HTTP/1.1 and HTTP/2) until `shutdown` turns true, then
/// drains like ingest.
pub async fn run(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    drain: std::time::Duration,
) {
    let bounds = Arc::new(crate::http::serve::Bounds {
        header_timeout: std::time::Duration::from_secs(api.shared.limits.idle_timeout_secs),
        limits: api.shared.limits.clone(),
        defender: api.shared.defender.clone(),
        audit: api.shared.audit.clone(),
        http2: true,
    });
    crate::http::serve::run(listener, api, tls, bounds, shutdown, drain).await;
}

/// What the API's handlers share.
pub struct Api {
    shared: Arc<Shared>,
    links: link::Links,
    sessions: session::Sessions,
    /// The base of the links it makes, when configured.
    public_url: Option<String>,
    tls: bool,
    /// When each key last had its login audited, per address.
    key_logins: Mutex<HashMap<(String, IpAddr), Instant>>,
}

/// A key's login is audited once per address this long: an integration
/// polling every second would otherwise write a login line per request
/// (what each request did is audited either way).
const KEY_LOGIN_AUDIT: Duration = Duration::from_secs(300);

/// Key logins remembered at most; beyond it the stale ones are forgotten.
const KEY_LOGINS_KEPT: usize = 10_000;

impl Api {
    pub fn new(
        shared: Arc<Shared>,
        link_key: [u8; 32],
        public_url: Option<String>,
        tls: bool,
        timeouts: session::Timeouts,
    ) -> Api {
        Api {
            shared,
            links: link::Links::new(link_key),
            sessions: session::Sessions::new(tls, timeouts),
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            tls,
            key_logins: Mutex::new(HashMap::new()),
        }
    }
}

/// The errors of the API, each with its status; the one mapping from the
/// tree's errors is `From<VfsError>`.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Gone(String),
    NoMethod(&'static str),
    TooLarge(String),
    /// A range past the end of a file of this size.
    Unsatisfiable(u64),
    /// Try again later (storage, a render).
    Unavailable(String),
    Internal(String),
}

impl From<VfsError> for ApiError {
    fn from(e: VfsError) -> Self {
        match e {
            VfsError::NotFound(p) | VfsError::NotADirectory(p) | VfsError::IsADirectory(p) => {
                ApiError::NotFound(format!("no such call or file: {p}"))
            }
            VfsError::InvalidPath(e) => ApiError::NotFound(format!("no such call or file: {e}")),
            VfsError::PermissionDenied(m) => ApiError::Forbidden(format!("not allowed: {m}")),
            VfsError::ReadOnly => ApiError::Forbidden(VfsError::ReadOnly.to_string()),
            VfsError::Storage(f) => {
                // The fault's text (keys, bucket) is for the log only.
                warn!(error = %f, "api: storage fault");
                ApiError::Unavailable("storage unavailable, try again later".into())
            }
            VfsError::Producer(m) => ApiError::Unavailable(m),
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::NoMethod(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unsatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn reply(self) -> Response<Body> {
        let code = self.status();
        let msg = match &self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Gone(m)
            | ApiError::TooLarge(m)
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => m.clone(),
            ApiError::NoMethod(allow) => format!("this path takes {allow}"),
            ApiError::Unsatisfiable(size) => {
                format!("the range starts past the end of the file ({size} bytes)")
            }
        };
        let mut r = error_reply(code, &msg);
        let h = r.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                h.insert(
                    "www-authenticate",
                    HeaderValue::from_static("Bearer realm=\"recvault\""),
                );
            }
            ApiError::NoMethod(allow) => {
                h.insert("allow", HeaderValue::from_static(allow));
            }
            ApiError::Unsatisfiable(size) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert("content-range", v);
                }
            }
            ApiError::Unavailable(_) => {
                h.insert(
                    "retry-after",
                    HeaderValue::from_static(crate::http::BUSY_RETRY_SECS),
                );
            }
            _ => {}
        }
        boxed(r)
    }
}

pub type Answer = Result<Response<Body>, ApiError>;

#[async_trait]
impl crate::http::serve::Service for Api {
    fn protocol(&self) -> &'static str {
        "api"
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        slot: PreAuthSlot,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let (pattern, answer) = match Route::of(&parts.method, &path) {
            Ok(route) => (
                route.pattern(),
                self.route(route, &parts, body, peer, &slot).await,
            ),
            Err(NoRoute::Method(allow)) => ("other", Err(ApiError::NoMethod(allow))),
            Err(NoRoute::NotFound) => (
                "other",
                Err(ApiError::NotFound(format!(
                    "no such endpoint: {} {} (see /v1/openapi.json)",
                    parts.method,
                    path.chars().take(200).collect::<String>()
                ))),
            ),
        };
        let mut r = answer.unwrap_or_else(ApiError::reply);
        crate::metrics::api_request(pattern, r.status().as_u16());
        r.headers_mut()
            .entry("cache-control")
            .or_insert(HeaderValue::from_static("no-store"));
        r.headers_mut().insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        r
    }

    fn internal_error(&self) -> Response<Body> {
        ApiError::Internal("the request failed on the server; nothing was changed".into()).reply()
    }
}

impl Api {
    async fn route(
        &self,
        route: Route<'_>,
        req: &Parts,
        body: Incoming,
        peer: SocketAddr,
        slot: &PreAuthSlot,
    ) -> Answer {
        match route {
            Route::Page(p) => {
                slot.requested();
                Ok(page::serve(p, false))
            }
            Route::Login => {
                refuse_banned(&self.shared, peer)?;
                let body = read_body(body).await?;
                let r = self.sessions.login(&self.shared, req, &body, peer).await;
                if r.is_ok() {
                    slot.authenticated();
                } else {
                    slot.requested();
                }
                r
            }
            Route::Session => {
                let (conn, csrf) = self.session(req, peer)?;
                slot.authenticated();
                Ok(session::whoami(&conn, &csrf, self.sessions.idle()))
            }
            Route::Logout => {
                self.session(req, peer)?;
                slot.authenticated();
                self.sessions.logout(req)
            }
            Route::Health => {
                slot.requested();
                Ok(boxed(json_reply(StatusCode::OK, &json!({"ok": true}))))
            }
            Route::OpenApi => {
                slot.requested();
                Ok(boxed(crate::http::reply(
                    StatusCode::OK,
                    "application/json",
                    OPENAPI,
                )))
            }
            Route::Link { token, head } => {
                let (conn, path, one_use) = self.links.open(&self.shared, token, peer)?;
                slot.authenticated();
                media::serve(&conn, &path, head, req, Some(&one_use)).await
            }
            Route::Calls => calls::list(&self.key(req, peer, slot)?, req.uri.query()).await,
            Route::Events => calls::events(&self.key(req, peer, slot)?, req.uri.query()).await,
            Route::Call(id) => calls::show(&self.key(req, peer, slot)?, id).await,
            Route::Erase(id) => calls::erase(&self.key(req, peer, slot)?, id).await,
            Route::Media { id, name, head } => {
                let conn = self.key(req, peer, slot)?;
                let path = calls::entry_path(id, name)?;
                media::serve(&conn, &path, head, req, None).await
            }
            Route::MakeLink { id, name } => {
                let conn = self.key(req, peer, slot)?;
                let path = calls::entry_path(id, name)?;
                let body = read_body(body).await?;
                let base = self.base_url(req);
                self.links.make(&conn, id, name, &path, &body, &base).await
            }
        }
    }

    /// [`Api::authenticate`], and the connection's pre-auth slot given up.
    fn key(&self, req: &Parts, peer: SocketAddr, slot: &PreAuthSlot) -> Result<Conn, ApiError> {
        let conn = self.authenticate(req, peer)?;
        slot.authenticated();
        Ok(conn)
    }

    /// The request's web session (cookie), checked as [`session::Sessions::conn`] does.
    fn session(&self, req: &Parts, peer: SocketAddr) -> Result<(Conn, String), ApiError> {
        refuse_banned(&self.shared, peer)?;
        self.sessions
            .conn(&self.shared, req, peer, &self.base_url(req))
    }

    /// The key of the request, or its web session when it has no key but
    /// the session cookie. A wrong key is a failed login: audited and
    /// counted by the defender like a bad password.
    fn authenticate(&self, req: &Parts, peer: SocketAddr) -> Result<Conn, ApiError> {
        refuse_banned(&self.shared, peer)?;
        let header = req
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        if header.is_none() && session::Sessions::has_cookie(req) {
            return self.session(req, peer).map(|(conn, _)| conn);
        }
        let Some(secret) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(ApiError::Unauthorized(
                "missing `Authorization: Bearer <API key>`".into(),
            ));
        };
        match self.shared.users().check_api_key(secret.trim()) {
            Ok(user) if self.key_login_is_new(&user, peer) => {
                Ok(self.shared.login_ok("api", peer, user, "api-key"))
            }
            Ok(user) => Ok(self.shared.resumed("api", peer, user)),
            Err(why) => {
                self.shared.login_failed("api", peer, "", "api-key", why);
                Err(ApiError::Unauthorized("unknown API key".into()))
            }
        }
    }

    /// Whether `user`'s key logging in from `peer` is to be audited: not
    /// when it was within [`KEY_LOGIN_AUDIT`].
    fn key_login_is_new(&self, user: &crate::auth::User, peer: SocketAddr) -> bool {
        let now = Instant::now();
        let key = (
            user.key_id.clone().unwrap_or_else(|| user.name.clone()),
            peer.ip(),
        );
        let mut seen = self.key_logins.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < KEY_LOGIN_AUDIT)
        {
            return false;
        }
        if seen.len() >= KEY_LOGINS_KEPT {
            seen.retain(|_, at| now.duration_since(*at) < KEY_LOGIN_AUDIT);
            if seen.len() >= KEY_LOGINS_KEPT {
                seen.clear();
            }
        }
        seen.insert(key, now);
        true
    }

    /// Where clients reach this API: `public_url`, or the request's `Host`
    /// (HTTP/2: its `:authority`).
    fn base_url(&self, req: &Parts) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = req
            .headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}")
    }
}

/// 403 for an address the defender banned while its connection was open
/// (a new connection is refused at accept).
fn refuse_banned(shared: &Shared, peer: SocketAddr) -> Result<(), ApiError> {
    match shared.defender.banned(peer.ip()) {
        Some(left) => Err(ApiError::Forbidden(format!(
            "this address is banned for {} s after repeated failed logins",
            left.as_secs().max(1)
        ))),
        None => Ok(()),
    }
}

/// A request's body, up to [`MAX_BODY`] bytes.
async fn read_body(body: Incoming) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    match tokio::time::timeout(
        BODY_WAIT,
        http_body_util::Limited::new(body, MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::TooLarge(format!(
                "the request body is over {MAX_BODY} bytes"
            )))
        }
        Ok(Err(e)) => Err(ApiError::BadRequest(format!(
            "the request body was cut off: {e}"
        ))),
        Err(_) => Err(ApiError::BadRequest(format!(
            "the request body did not arrive within {} s",
            BODY_WAIT.as_secs()
        ))),
    }
}

/// Longest wait for a request body.
const BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in document and the router name the same operations.
    #[test]
    fn the_openapi_document_has_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if method != "parameters" {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut routed: Vec<(String, String)> = route::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
        // Every operation documents its errors or says it has none.
        for (method, path) in &documented {
            let op = &doc["paths"][path][method.to_lowercase()];
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn every_vfs_error_maps_to_a_client_status() {
        use crate::vfs::Fault;
        let cases = [
            (VfsError::NotFound("/x".into()), 404),
            (VfsError::NotADirectory("/x".into()), 404),
            (VfsError::PermissionDenied("no".into()), 403),
            (VfsError::ReadOnly, 403),
            (VfsError::Storage(Fault::refused("bucket secret-name")), 503),
            (VfsError::Producer("render failed".into()), 503),
        ];
        for (e, code) in cases {
            let r = ApiError::from(e).reply();
            assert_eq!(r.status().as_u16(), code);
        }
    }
}
