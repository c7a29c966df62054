//! The answers every HTTP listener gives (ingest, admin): a body with its
//! content type, and errors as `{"error": "...", "status": N}`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

pub type Reply = Response<Full<Bytes>>;

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
