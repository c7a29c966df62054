//! The web page for QA analysts, served at `/`: plain HTML, CSS and
//! JavaScript embedded in the binary (no build step, no CDN, nothing
//! fetched from the internet). The page is a client of `/v1` with its
//! session cookie ([`super::session`]).
//!
//! Every answer carries a strict Content-Security-Policy: scripts and
//! styles only from this origin (no inline code), media from this origin
//! or the page's own Media Source blobs, no frames, no plugins.

use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use crate::http::{boxed, reply, Body};

const INDEX: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

/// The page's policy: nothing but this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
media-src 'self' blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The files of the page: path, content type, body.
const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", INDEX),
    ("/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/app.css", "text/css; charset=utf-8", APP_CSS),
];

/// The asset at `path`, if it is one (its path, as [`serve`] takes it).
pub fn asset(path: &str) -> Option<&'static str> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(p, _, _)| *p)
}

/// Serves asset `path` (one [`asset`] gave).
pub fn serve(path: &str, head: bool) -> Response<Body> {
    let (_, kind, body) = ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .copied()
        .unwrap_or(ASSETS[0]);
    let mut r = reply(StatusCode::OK, kind, if head { "" } else { body });
    let h = r.headers_mut();
    if head {
        h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    boxed(r)
}
