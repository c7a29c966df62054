//! Signed download links: `POST /v1/calls/{id}/media/{name}/links` makes a
//! URL that serves one file without other authentication (for a browser, a
//! ticket, `curl`) until it expires or is used up.
//!
//! A link is `/v1/links/<claims>.<mac>`: the claims (tenant, the key that
//! made it, call, file, expiry, uses, a nonce) as base64url JSON, and an
//! HMAC-SHA256 of them under `[api] link_key_file`. Presigned S3 URLs would
//! hand out ciphertext once recvault encrypts at rest, so recvault signs and
//! serves. Each link acts with the key (or the web page's user) that made
//! it: a key removed (or one that lost `media:read`), a user removed or
//! given a new password, ends its links at the next reload.
//!
//! Uses: every GET counts (HEAD does not); the count is kept by the node
//! that serves the GET, in memory. Behind a balancer of N nodes sharing one
//! `link_key_file`, a link allows up to N × `max_uses` GETs, and a restart
//! forgets the counts (the expiry, at most 7 days, always holds).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chrono::Utc;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::route::CallId;
use super::{Answer, ApiError};
use crate::http::{boxed, json_reply};
use crate::path::VPath;
use crate::shared::{Conn, Shared};

/// How a link names a maker that is a user (not an API key).
const USER_TAG: &str = "user:";

/// What a link records of its maker's credentials: an API key's
/// fingerprint, or `user:` and the user's password tag.
fn maker_tag(u: &crate::auth::User) -> String {
    match &u.key_id {
        Some(k) => k.clone(),
        None => format!("{USER_TAG}{}", u.password_tag().unwrap_or_default()),
    }
}

/// Longest life of a link.
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;
const DEFAULT_TTL_SECS: u64 = 3600;
/// Most GETs one link allows (per node).
pub const MAX_USES: u32 = 1000;
const DEFAULT_USES: u32 = 1;
/// Links whose uses a node counts at once, per tenant (expired ones are
/// dropped first), so one tenant's links never crowd out another's.
const MAX_COUNTED: usize = 20_000;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Tenant.
    t: String,
    /// Who made it: an API key (its user name `apikey:<name>`, and its
    /// fingerprint: a key given a new secret ends its links) or a web page
    /// user (its name, and `user:` with its password's tag: a new
    /// password ends its links).
    k: String,
    h: String,
    /// Call id and file name.
    c: String,
    n: String,
    /// Expiry, Unix seconds.
    e: i64,
    /// GETs allowed.
    u: u32,
    /// Makes every link distinct.
    r: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    ttl_secs: Option<f64>,
    max_uses: Option<f64>,
}

/// A JSON number that is a whole number within `1..=max` (JSON Schema
/// counts `5.0` as an integer).
fn whole(v: Option<f64>, default: u64, max: u64, what: &str) -> Result<u64, ApiError> {
    let Some(v) = v else {
        return Ok(default);
    };
    if v.fract() != 0.0 || v < 1.0 || v > max as f64 {
        return Err(ApiError::BadRequest(format!(
            "{what} must be a whole number from 1 to {max}"
        )));
    }
    Ok(v as u64)
}

/// One GET through a link, counted when its bytes start.
pub struct Use<'a> {
    links: &'a Links,
    token: &'a str,
    claims: Claims,
}

impl Use<'_> {
    /// Counts the use; `Gone` when the link is used up.
    pub fn take(&self) -> Result<(), ApiError> {
        self.links
            .count(self.token, &self.claims, Utc::now().timestamp())
    }
}

/// One tenant's counted links: SHA-256 of a token → (GETs served, expiry).
type Counts = HashMap<[u8; 32], (u32, i64)>;

pub struct Links {
    key: ring::hmac::Key,
    /// Per tenant: SHA-256 of a token → (GETs served, expiry).
    uses: Mutex<HashMap<String, Counts>>,
}

impl Links {
    pub fn new(secret: [u8; 32]) -> Links {
        Links {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            uses: Mutex::new(HashMap::new()),
        }
    }

    fn sign(&self, claims: &str) -> String {
        B64.encode(ring::hmac::sign(&self.key, claims.as_bytes()).as_ref())
    }

    /// Makes a link to `path` (entry `name` of call `id`) for `conn`'s key.
    pub async fn make(
        &self,
        conn: &Conn,
        id: &str,
        name: &str,
        path: &VPath,
        body: &[u8],
        base: &str,
    ) -> Answer {
        let ask: Ask = if body.iter().all(u8::is_ascii_whitespace) {
            Ask {
                ttl_secs: None,
                max_uses: None,
            }
        } else {
            serde_json::from_slice(body).map_err(|e| {
                ApiError::BadRequest(format!(
                    "the body must be JSON {{\"ttl_secs\": N, \"max_uses\": N}} (both optional): {e}"
                ))
            })?
        };
        let ttl = whole(ask.ttl_secs, DEFAULT_TTL_SECS, MAX_TTL_SECS, "ttl_secs")?;
        let uses = whole(
            ask.max_uses,
            DEFAULT_USES.into(),
            MAX_USES.into(),
            "max_uses",
        )? as u32;
        // The key must be able to download the file now.
        conn.vfs().open(path).await?;
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
        let expires = Utc::now().timestamp() + ttl as i64;
        let claims = Claims {
            t: conn.user().tenant.id.clone(),
            k: conn.user().name.clone(),
            h: maker_tag(conn.user()),
            c: id.to_string(),
            n: name.to_string(),
            e: expires,
            u: uses,
            r: hex::encode(nonce),
        };
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let token = format!("{payload}.{}", self.sign(&payload));
        let expires_at = chrono::DateTime::from_timestamp(expires, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        conn.linked(&path.to_string(), expires, uses);
        Ok(boxed(json_reply(
            StatusCode::CREATED,
            &json!({
                "url": format!("{base}/v1/links/{token}"),
                "expires_at": expires_at,
                "max_uses": uses,
                "call": id,
                "name": name,
            }),
        )))
    }

    /// The login and file of a link, and the use to count once its bytes
    /// start ([`Use::take`]: a refused or failed request uses nothing).
    pub fn open<'a>(
        &'a self,
        shared: &Arc<Shared>,
        token: &'a str,
        peer: SocketAddr,
    ) -> Result<(Conn, VPath, Use<'a>), ApiError> {
        super::refuse_banned(shared, peer)?;
        let claims = self.verify(token).ok_or_else(|| {
            shared.login_failed("api", peer, "", "signed-link", crate::auth::Denied::BadLink);
            ApiError::Forbidden("this link is not valid (altered, or not made here)".into())
        })?;
        let now = Utc::now().timestamp();
        if now >= claims.e {
            return Err(ApiError::Gone("this link has expired".into()));
        }
        let users = shared.users();
        let maker = if claims.h.starts_with(USER_TAG) {
            users.named(&claims.k).filter(|u| u.tenant.id == claims.t)
        } else {
            users.api_key_named(&claims.t, &claims.k)
        };
        let user = maker
            .filter(|u| u.perms.download && maker_tag(u) == claims.h)
            .ok_or_else(|| {
                ApiError::Gone(
                    "the key or user that made this link no longer exists, has new credentials or may not download".into(),
                )
            })?;
        let path = CallId::parse(&claims.c)
            .and_then(|c| c.entry(&claims.n))
            .ok_or_else(|| ApiError::Forbidden("this link names no file".into()))?;
        let conn = shared.login_ok("api", peer, user, "signed-link");
        Ok((
            conn,
            path,
            Use {
                links: self,
                token,
                claims,
            },
        ))
    }

    /// The claims of a token whose MAC is right.
    fn verify(&self, token: &str) -> Option<Claims> {
        let (payload, mac) = token.split_once('.')?;
        let mac = B64.decode(mac).ok()?;
        ring::hmac::verify(&self.key, payload.as_bytes(), &mac).ok()?;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }

    fn count(&self, token: &str, claims: &Claims, now: i64) -> Result<(), ApiError> {
        use sha2::Digest as _;
        let id: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut all = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        let uses = all.entry(claims.t.clone()).or_default();
        if uses.len() >= MAX_COUNTED && !uses.contains_key(&id) {
            uses.retain(|_, (_, e)| *e > now);
            if uses.len() >= MAX_COUNTED {
                return Err(ApiError::Unavailable(format!(
                    "this tenant has {MAX_COUNTED} links in use on this node; try again when some expire"
                )));
            }
        }
        let used = uses.entry(id).or_insert((0, claims.e));
        if used.0 >= claims.u {
            return Err(ApiError::Gone(format!(
                "this link is used up ({} downloads)",
                claims.u
            )));
        }
        used.0 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(e: i64, u: u32) -> Claims {
        Claims {
            t: "acme".into(),
            k: "apikey:crm".into(),
            h: "0123456789abcdef".into(),
            c: "2026-11-23_c-1".into(),
            n: "c-1.mp4".into(),
            e,
            u,
            r: "00".into(),
        }
    }

    fn token(links: &Links, c: &Claims) -> String {
        let payload = B64.encode(serde_json::to_vec(c).unwrap());
        format!("{payload}.{}", links.sign(&payload))
    }

    #[test]
    fn a_link_verifies_only_unaltered_and_under_its_own_key() {
        let links = Links::new([7; 32]);
        let t = token(&links, &claims(10, 1));
        assert_eq!(links.verify(&t).unwrap().n, "c-1.mp4");
        // Another claim under the same MAC.
        let (_, mac) = t.split_once('.').unwrap();
        let forged = B64.encode(serde_json::to_vec(&claims(i64::MAX, 1000)).unwrap());
        assert!(links.verify(&format!("{forged}.{mac}")).is_none());
        // One changed character of the MAC.
        let mut bad = t.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(links.verify(&String::from_utf8(bad).unwrap()).is_none());
        // Another node's key.
        assert!(Links::new([8; 32]).verify(&t).is_none());
        for junk in ["", ".", "a.b", "...", "%%.%%"] {
            assert!(links.verify(junk).is_none(), "{junk}");
        }
    }

    #[test]
    fn uses_are_counted_to_the_limit() {
        let links = Links::new([7; 32]);
        let c = claims(i64::MAX, 2);
        let t = token(&links, &c);
        assert!(links.count(&t, &c, 0).is_ok());
        assert!(links.count(&t, &c, 0).is_ok());
        assert!(matches!(links.count(&t, &c, 0), Err(ApiError::Gone(_))));
    }
}
