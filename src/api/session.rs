//! The web page's login sessions: `POST /session` with a tenant user's name
//! and password (argon2id, as SFTP) sets a session cookie; `/v1` then
//! accepts the cookie in place of an API key, acting as that user with its
//! own scope and permissions, exactly as SFTP does.
//!
//! - The cookie `rv_session` is 32 random bytes, `HttpOnly`,
//!   `SameSite=Strict`, `Secure` over TLS; the server keeps only its SHA-256.
//! - A session ends after `[api] session_idle_secs` without a request
//!   ([`IDLE`] by default), `session_max_secs` ([`ABSOLUTE`]) after its
//!   login, at `DELETE /session` (logout), and at a reload that removes
//!   the user or gives it another password.
//! - State-changing requests made with the cookie (erase, a link, logout)
//!   must carry the session's CSRF token in `X-CSRF-Token`, and an `Origin`,
//!   when sent, must be the page's own.
//! - A failed login is audited and counted by the shared defender like a
//!   wrong SFTP password.
//!
//! Sessions live in this node's memory: behind a balancer of several nodes
//! the page needs sticky sessions (or logs in again on another node), and a
//! restart logs everyone out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Answer, ApiError};
use crate::http::{boxed, json_reply};
use crate::shared::{Conn, Shared};

/// The session cookie's name.
pub const COOKIE: &str = "rv_session";
pub use crate::config::{
    SessionTimeouts as Timeouts, SESSION_ABSOLUTE as ABSOLUTE, SESSION_IDLE as IDLE,
};

/// Sessions one node keeps at once (ended ones are dropped first).
const MAX_SESSIONS: usize = 10_000;

/// The protocol name of requests made in a session (audit, metrics).
pub const PROTOCOL: &str = "web";

struct Session {
    user: String,
    tenant: String,
    password_tag: Option<String>,
    csrf: String,
    created: Instant,
    last: Instant,
}

impl Session {
    fn ended(&self, now: Instant, t: &Timeouts) -> bool {
        now.duration_since(self.last) > t.idle || now.duration_since(self.created) > t.absolute
    }
}

/// The sessions of this node, by SHA-256 of their cookie.
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
    /// Over TLS: the cookie is `Secure`.
    secure: bool,
    timeouts: Timeouts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    user: String,
    password: String,
}

fn random(n: usize) -> Result<Vec<u8>, ApiError> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(b)
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(req: &'a Parts, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether the method changes state (and so needs the CSRF token).
fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl Sessions {
    pub fn new(secure: bool, timeouts: Timeouts) -> Sessions {
        Sessions {
            by_hash: Mutex::new(HashMap::new()),
            secure,
            timeouts,
        }
    }

    /// How long a session may go without a request.
    pub fn idle(&self) -> Duration {
        self.timeouts.idle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_hash.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the request carries a session cookie at all.
    pub fn has_cookie(req: &Parts) -> bool {
        cookie(req, COOKIE).is_some()
    }

    /// The request's session as a connection of its user, now; checks the
    /// CSRF token (and Origin) of a state-changing request. `base` is the
    /// page's own origin.
    pub fn conn(
        &self,
        shared: &Arc<Shared>,
        req: &Parts,
        peer: SocketAddr,
        base: &str,
    ) -> Result<(Conn, String), ApiError> {
        let expired =
            || ApiError::Unauthorized("not logged in, or the session ended: log in again".into());
        let token = cookie(req, COOKIE).ok_or_else(expired)?;
        let key = crate::secret::token_hash(token);
        let now = Instant::now();
        let (user, csrf) = {
            let mut map = self.lock();
            let Some(s) = map.get_mut(&key) else {
                return Err(expired());
            };
            if s.ended(now, &self.timeouts) {
                map.remove(&key);
                return Err(expired());
            }
            let user = shared
                .users()
                .named(&s.user)
                .filter(|u| u.tenant.id == s.tenant && u.password_tag() == s.password_tag);
            let Some(user) = user else {
                // Removed, moved or given a new password by a reload.
                map.remove(&key);
                return Err(expired());
            };
            s.last = now;
            (user, s.csrf.clone())
        };
        if changes_state(&req.method) {
            let sent = req
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !constant_eq(sent.as_bytes(), csrf.as_bytes()) {
                return Err(ApiError::Forbidden(
                    "this request changes something and needs the page's X-CSRF-Token".into(),
                ));
            }
            if let Some(origin) = req.headers.get(hyper::header::ORIGIN) {
                if origin.as_bytes() != base.as_bytes() {
                    return Err(ApiError::Forbidden(
                        "this request comes from another site's page".into(),
                    ));
                }
            }
        }
        Ok((shared.resumed(PROTOCOL, peer, user), csrf))
    }

    /// `POST /session` with `{"user", "password"}`: a new session and its
    /// cookie; a wrong name or password is a failed login.
    pub async fn login(
        &self,
        shared: &Arc<Shared>,
        req: &Parts,
        body: &[u8],
        peer: SocketAddr,
    ) -> Answer {
        let json_body = req
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim() == "application/json")
            });
        if !json_body {
            return Err(ApiError::BadRequest(
                "log in with Content-Type: application/json and {\"user\", \"password\"}".into(),
            ));
        }
        let form: LoginForm = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body must be JSON {{\"user\": \"...\", \"password\": \"...\"}}: {e}"
            ))
        })?;
        let user = match shared
            .users()
            .check_password(&form.user, &form.password)
            .await
        {
            Ok(u) => u,
            Err(why) => {
                shared.login_failed(PROTOCOL, peer, &form.user, "password", why);
                return Err(ApiError::Unauthorized("wrong user name or password".into()));
            }
        };
        let conn = shared.login_ok(PROTOCOL, peer, user.clone(), "password");
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random(32)?);
        let csrf = hex::encode(random(16)?);
        let now = Instant::now();
        {
            let mut map = self.lock();
            if map.len() >= MAX_SESSIONS {
                map.retain(|_, s| !s.ended(now, &self.timeouts));
            }
            if map.len() >= MAX_SESSIONS {
                // The least recently used goes.
                if let Some(k) = map
                    .iter()
                    .min_by_key(|(_, s)| s.last)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                }
            }
            map.insert(
                crate::secret::token_hash(&token),
                Session {
                    user: user.name.clone(),
                    tenant: user.tenant.id.clone(),
                    password_tag: user.password_tag(),
                    csrf: csrf.clone(),
                    created: now,
                    last: now,
                },
            );
        }
        let mut r = whoami(&conn, &csrf, self.timeouts.idle);
        self.set_cookie(&mut r, &token, self.timeouts.absolute.as_secs());
        Ok(r)
    }

    /// Sets the session cookie to `value` for `max_age` seconds (0: gone).
    fn set_cookie(&self, r: &mut hyper::Response<crate::http::Body>, value: &str, max_age: u64) {
        let cookie = format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
            if self.secure { "; Secure" } else { "" }
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(hyper::header::SET_COOKIE, v);
        }
    }

    /// `DELETE /session`: logs out (the session is checked like any
    /// state-changing request first).
    pub fn logout(&self, req: &Parts) -> Answer {
        if let Some(token) = cookie(req, COOKIE) {
            self.lock().remove(&crate::secret::token_hash(token));
        }
        let mut r = boxed(json_reply(StatusCode::OK, &json!({"logged_out": true})));
        self.set_cookie(&mut r, "", 0);
        Ok(r)
    }
}

/// Who the session is: user, tenant, permissions and the CSRF token the
/// page sends back on state-changing requests.
pub fn whoami(conn: &Conn, csrf: &str, idle: Duration) -> hyper::Response<crate::http::Body> {
    let u = conn.user();
    boxed(json_reply(
        StatusCode::OK,
        &json!({
            "user": u.name,
            "tenant": u.tenant.id,
            "scope": u.scope.to_string(),
            "permissions": {
                "list": u.perms.list,
                "download": u.perms.download,
                "delete": u.perms.delete,
            },
            "csrf": csrf,
            "idle_timeout_secs": idle.as_secs(),
        }),
    ))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = hyper::Request::builder().uri("/v1/calls");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let p = parts(&[("cookie", "a=1; rv_session=tok; b=2")]);
        assert_eq!(cookie(&p, COOKIE), Some("tok"));
        let p = parts(&[("cookie", "a=1"), ("cookie", "rv_session=x")]);
        assert_eq!(cookie(&p, COOKIE), Some("x"));
        assert_eq!(cookie(&parts(&[("cookie", "rv_sessionx=1")]), COOKIE), None);
        assert_eq!(cookie(&parts(&[]), COOKIE), None);
    }

    #[test]
    fn a_session_ends_when_idle_or_old() {
        let t0 = Instant::now();
        let mut s = Session {
            user: "u".into(),
            tenant: "t".into(),
            password_tag: None,
            csrf: String::new(),
            created: t0,
            last: t0,
        };
        let t = Timeouts::default();
        assert!(!s.ended(t0 + Duration::from_secs(60), &t));
        assert!(s.ended(t0 + IDLE + Duration::from_secs(1), &t));
        // Busy all along: the absolute limit still holds.
        s.last = t0 + ABSOLUTE;
        assert!(!s.ended(t0 + ABSOLUTE, &t));
        assert!(s.ended(t0 + ABSOLUTE + Duration::from_secs(1), &t));
        // Configured shorter.
        let short = Timeouts {
            idle: Duration::from_secs(2),
            absolute: Duration::from_secs(10),
        };
        s.last = t0;
        assert!(s.ended(t0 + Duration::from_secs(3), &short));
        assert!(
            constant_eq(b"abc", b"abc")
                && !constant_eq(b"abc", b"abd")
                && !constant_eq(b"ab", b"abc")
        );
    }
}
