//! Downloads over the API: `GET|HEAD` of any entry a session folder shows,
//! with one `Range` (206, or 416 past the end), a stable `ETag` and
//! `If-Range`, `If-None-Match`, and the bytes streamed as the tree produces
//! them (a derived entry not yet rendered starts its render and streams;
//! its `Content-Length` is the reserved size, known in advance). Each GET
//! is audited as a download (bytes, offset, completeness, hash) when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};

use super::{Answer, ApiError};
use crate::http::Body;
use crate::path::VPath;
use crate::shared::Conn;
use crate::vfs::{ByteStream, OpenFile};

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ask {
    /// The whole file (no range, or one this server does not serve as a
    /// range: several, or not in bytes; RFC 9110 lets it answer 200).
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Past the end: 416.
    Unsatisfiable,
}

/// The one `Range` a request names, against a file of `size` bytes.
pub fn ask(range: Option<&str>, size: u64) -> Ask {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Ask::Whole;
    };
    if spec.contains(',') {
        return Ask::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ask::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            // The last n bytes.
            Some(0) => Ask::Unsatisfiable,
            Some(_) if size == 0 => Ask::Unsatisfiable,
            Some(n) => Ask::Part(size.saturating_sub(n), size - 1),
            None => Ask::Whole,
        },
        (a, "") => match num(a) {
            Some(a) if a >= size => Ask::Unsatisfiable,
            Some(a) => Ask::Part(a, size - 1),
            None => Ask::Whole,
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a > b => Ask::Whole,
            (Some(a), Some(_)) if a >= size => Ask::Unsatisfiable,
            (Some(a), Some(b)) => Ask::Part(a, b.min(size - 1)),
            _ => Ask::Whole,
        },
    }
}

/// The HTTP date of `t` (IMF-fixdate).
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Whether the validator of an `If-Range` (an ETag or an HTTP date) names
/// this version of the file; a range is served only then.
fn if_range_holds(value: Option<&str>, etag: &str, mtime: DateTime<Utc>) -> bool {
    match value.map(str::trim) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        // A weak tag never matches (RFC 9110 §13.1.5).
        Some(v) if v.starts_with("W/") => false,
        Some(v) => DateTime::parse_from_rfc2822(v)
            .map(|d| d.with_timezone(&Utc).timestamp() == mtime.timestamp())
            .unwrap_or(false),
    }
}

/// Whether an `If-None-Match` names this version.
fn none_match_hits(value: Option<&str>, etag: &str) -> bool {
    value.is_some_and(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag)
    })
}

/// The media type of an entry, by its name.
pub fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "webm" => "video/webm",
        "json" => "application/json",
        "gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// The value of query parameter `key` (decoded as the search's are).
fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find_map(|(k, v)| (k == key).then(|| v.into_owned()))
}

/// Serves the file at `path` to `conn`. A signed link's `one_use` is
/// counted only when a body is about to be sent (not for HEAD, 304, 416 or
/// a request refused or failed before its first byte).
pub async fn serve(
    conn: &Conn,
    path: &VPath,
    head: bool,
    req: &Parts,
    one_use: Option<&super::link::Use<'_>>,
) -> Answer {
    let disposition = match query_value(req.uri.query(), "disposition").as_deref() {
        None | Some("inline") => "inline",
        Some("attachment") => "attachment",
        Some(_) => {
            return Err(ApiError::BadRequest(
                "disposition is \"inline\" or \"attachment\"".into(),
            ))
        }
    };
    let file = conn.vfs().open(path).await?;
    let (size, mtime) = (file.entry.size, file.entry.mtime);
    let etag = format!("\"{}\"", file.version());
    let header = |h: hyper::header::HeaderName| req.headers.get(h).and_then(|v| v.to_str().ok());
    let mut r = Response::builder()
        .header("accept-ranges", "bytes")
        .header("etag", etag.as_str())
        .header("last-modified", http_date(mtime))
        .header("content-type", content_type(&file.entry.name))
        .header(
            "content-disposition",
            format!("{disposition}; filename=\"{}\"", file.entry.name),
        )
        // Recordings are personal data: private caches only.
        .header("cache-control", "private, max-age=0, must-revalidate");
    if none_match_hits(header(hyper::header::IF_NONE_MATCH), &etag) {
        return Ok(empty(r.status(StatusCode::NOT_MODIFIED)));
    }
    let wanted = if if_range_holds(header(hyper::header::IF_RANGE), &etag, mtime) {
        ask(header(hyper::header::RANGE), size)
    } else {
        Ask::Whole
    };
    let (start, len) = match wanted {
        Ask::Unsatisfiable => return Err(ApiError::Unsatisfiable(size)),
        Ask::Whole => {
            r = r.status(StatusCode::OK);
            (0, size)
        }
        Ask::Part(a, b) => {
            r = r
                .status(StatusCode::PARTIAL_CONTENT)
                .header("content-range", format!("bytes {a}-{b}/{size}"));
            (a, b - a + 1)
        }
    };
    r = r.header("content-length", len);
    if head {
        return Ok(empty(r));
    }
    let path = path.to_string();
    let stream = file.stream_from(start).await?;
    if let Some(u) = one_use {
        u.take()?;
    }
    let body = Counted {
        inner: stream,
        left: len,
        download: Download {
            conn: conn.clone(),
            path,
            file: Arc::new(file),
            offset: start,
            sent: 0,
            began: Instant::now(),
            _flight: crate::metrics::InFlight::start("api"),
        },
    };
    r.body(StreamBody::new(body).boxed_unsync())
        .map_err(|e| ApiError::Internal(format!("cannot build the answer: {e}")))
}

fn empty(r: hyper::http::response::Builder) -> Response<Body> {
    r.body(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
    .unwrap_or_else(|_| {
        let mut r = Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// One download under way; audited when it ends (complete, cut off, or
/// the client gone).
struct Download {
    conn: Conn,
    path: String,
    file: Arc<OpenFile>,
    offset: u64,
    sent: u64,
    began: Instant,
    _flight: crate::metrics::InFlight,
}

impl Drop for Download {
    fn drop(&mut self) {
        let (conn, path, file) = (self.conn.clone(), self.path.clone(), self.file.clone());
        let (offset, sent, took) = (self.offset, self.sent, self.began.elapsed());
        let complete = offset + sent == file.entry.size;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                conn.downloaded(&path, &file, offset, sent, complete, took)
                    .await;
            });
        }
    }
}

/// The file's bytes from the range's start, `left` more of them.
struct Counted {
    inner: ByteStream,
    left: u64,
    download: Download,
}

impl Stream for Counted {
    type Item = Result<Frame<Bytes>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Ok(mut b))) => {
                if b.len() as u64 > self.left {
                    b.truncate(self.left as usize);
                }
                self.left -= b.len() as u64;
                self.download.sent += b.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(path = %self.download.path, error = %e, "api: download cut off");
                self.left = 0;
                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_range_is_served_and_past_the_end_is_unsatisfiable() {
        assert_eq!(ask(None, 100), Ask::Whole);
        assert_eq!(ask(Some("bytes=0-9"), 100), Ask::Part(0, 9));
        assert_eq!(ask(Some("bytes=90-200"), 100), Ask::Part(90, 99));
        assert_eq!(ask(Some("bytes=50-"), 100), Ask::Part(50, 99));
        assert_eq!(ask(Some("bytes=-10"), 100), Ask::Part(90, 99));
        assert_eq!(ask(Some("bytes=-1000"), 100), Ask::Part(0, 99));
        assert_eq!(ask(Some("bytes=99-99"), 100), Ask::Part(99, 99));
        assert_eq!(ask(Some("bytes=100-"), 100), Ask::Unsatisfiable);
        assert_eq!(ask(Some("bytes=100-200"), 100), Ask::Unsatisfiable);
        assert_eq!(ask(Some("bytes=-0"), 100), Ask::Unsatisfiable);
        assert_eq!(ask(Some("bytes=0-"), 0), Ask::Unsatisfiable);
        assert_eq!(ask(Some("bytes=-5"), 0), Ask::Unsatisfiable);
        // Not served as a range: the whole file (RFC 9110 allows it).
        for whole in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
            "bytes",
        ] {
            assert_eq!(ask(Some(whole), 100), Ask::Whole, "{whole}");
        }
    }

    #[test]
    fn if_range_needs_this_version() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T09:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let tag = "\"abc\"";
        assert!(if_range_holds(None, tag, t));
        assert!(if_range_holds(Some("\"abc\""), tag, t));
        assert!(!if_range_holds(Some("\"abd\""), tag, t));
        assert!(!if_range_holds(Some("W/\"abc\""), tag, t));
        assert!(if_range_holds(Some(&http_date(t)), tag, t));
        assert!(!if_range_holds(
            Some("Mon, 23 Nov 2026 09:10:01 GMT"),
            tag,
            t
        ));
        assert!(!if_range_holds(Some("yesterday"), tag, t));
        assert!(none_match_hits(Some("\"x\", \"abc\""), tag));
        assert!(none_match_hits(Some("*"), tag));
        assert!(!none_match_hits(Some("\"x\""), tag));
        assert!(!none_match_hits(None, tag));
    }

    #[test]
    fn queries_and_types() {
        assert_eq!(
            query_value(Some("a=1&disposition=attachment"), "disposition").as_deref(),
            Some("attachment")
        );
        assert_eq!(
            query_value(Some("disposition"), "disposition").as_deref(),
            Some("")
        );
        assert_eq!(query_value(None, "disposition"), None);
        assert_eq!(content_type("c-1.tar.gz"), "application/gzip");
        assert_eq!(content_type("agent.webm"), "video/webm");
        assert_eq!(content_type("c.mp4"), "video/mp4");
        assert_eq!(content_type("c.mp3"), "audio/mpeg");
        assert_eq!(content_type("info.json"), "application/json");
    }
}
