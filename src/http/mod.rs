//! What every HTTP listener shares (ingest, admin, the content API): the
//! answers (a body with its content type; errors as `{"error": "...",
//! "status": N}`; the 503 of a busy listener) and, in [`serve`], the accept
//! loop of the listeners that authenticate.

pub mod serve;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

pub type Reply = Response<Full<Bytes>>;

/// The body of an answer that may stream (a download).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A whole-body answer as a streaming one.
pub fn boxed(r: Reply) -> Response<Body> {
    r.map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

/// `body` with status `code` and `content_type`.
pub fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A JSON answer.
pub fn json_reply(code: StatusCode, body: &Value) -> Reply {
    reply(code, "application/json", body.to_string())
}

/// The body of an error answer.
pub fn error_body(code: StatusCode, msg: &str) -> Bytes {
    Bytes::from(json!({"error": msg, "status": code.as_u16()}).to_string())
}

/// An error answer.
pub fn error_reply(code: StatusCode, msg: &str) -> Reply {
    reply(code, "application/json", error_body(code, msg))
}

/// Seconds a client is asked to wait before retrying a busy listener.
pub const BUSY_RETRY_SECS: &str = "5";

/// The answer of a busy listener (a connection over its pre-authentication
/// cap): 503 with the reason and `Retry-After`.
pub fn busy_reply(reason: &str) -> Response<Body> {
    let mut r = error_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{reason}; retry shortly"),
    );
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static(BUSY_RETRY_SECS),
    );
    boxed(r)
}

/// [`busy_reply`] as the bytes of a whole HTTP/1.1 response that closes the
/// connection, for a connection turned away before any request is read.
pub fn busy_bytes(reason: &str) -> Vec<u8> {
    let code = StatusCode::SERVICE_UNAVAILABLE;
    let body = error_body(code, &format!("{reason}; retry shortly"));
    let mut out = format!(
        "HTTP/1.1 {code}\r\ncontent-type: application/json\r\nretry-after: {BUSY_RETRY_SECS}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}
