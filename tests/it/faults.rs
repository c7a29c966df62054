//! The storage fault proxy: an HTTP proxy in front of moto that passes
//! requests through unchanged (the Host header too, so SigV4 signatures
//! still verify) unless a [`Rule`] matches, and then injects its fault:
//! a black hole (the request is read and never answered), a dropped
//! connection (an endpoint that is down), an S3 error
//! status (`503 SlowDown`, `500 InternalError`), or a body cut off mid-way.
//!
//! It runs on a thread and runtime of its own, so tests that block on
//! command-line clients cannot starve it. Every request is recorded
//! ([`FaultProxy::seen`]) so a test can count what reached storage.
//!
//! It also models the link to real S3 ([`Link`]): each response waits a
//! first-byte delay and its body flows at most at a per-connection rate
//! (S3 serves ~90 MB/s per connection, tens of ms to first byte). One
//! proxy for every concern: benchmarks run the same code as a program
//! (`examples/link_proxy.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The S3 server a proxy stands in front of (the harness's moto).
pub trait S3Endpoint {
    fn endpoint(&self) -> &str;
    /// Its `[storage]` section.
    fn storage_toml(&self) -> String;
}

/// What a matching request gets instead of moto's answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Read the request, never answer (a partition, a stuck proxy).
    BlackHole,
    /// Close the connection without an answer (an endpoint that is down).
    Reset,
    /// Answer with this status and S3 error code (`503`, `SlowDown`).
    Status(u16, &'static str),
    /// Pass moto's answer through (its full Content-Length), then cut the
    /// connection after this many body bytes.
    CutBody(u64),
    /// Answer a refused conditional write (`412 Precondition Failed`) with
    /// `200 OK`, as a store that ignores `If-None-Match` / `If-Match` does.
    IgnoreConditions,
    /// Refuse (`403 AccessDenied`) a request without this header value, as
    /// S3 does `x-amz-expected-bucket-owner` naming another account (moto
    /// ignores the header); pass the others through.
    RequireHeader(&'static str, String),
    /// Hold moto's answer this long before its first byte (a slow GET).
    Delay(Duration),
    /// Refuse (`403 AccessDenied`) a form-encoded request (an STS call)
    /// whose parameter `.0` is not `.1`, as a role's trust policy does an
    /// AssumeRole without its `sts:ExternalId` (moto checks no trust
    /// policy); pass the others through.
    RequireForm(&'static str, String),
}

/// A fault for requests whose method and path-and-query match.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `GET`, `PUT`, `POST`…; `None` for any.
    pub method: Option<&'static str>,
    /// A substring of the path and query (`?list-type=2`, a key); `None` for any.
    pub path_contains: Option<String>,
    pub fault: Fault,
    /// How many matching requests get the fault; `None` for all of them.
    pub times: Option<usize>,
    /// Only a ranged GET whose `Range: bytes=N-` starts at this offset.
    pub range_from: Option<u64>,
}

impl Rule {
    pub fn new(method: Option<&'static str>, path_contains: &str, fault: Fault) -> Rule {
        Rule {
            method,
            path_contains: (!path_contains.is_empty()).then(|| path_contains.to_string()),
            fault,
            times: None,
            range_from: None,
        }
    }

    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }

    /// Only ranged GETs from `offset`.
    pub fn range_from(mut self, offset: u64) -> Rule {
        self.range_from = Some(offset);
        self
    }

    fn matches(&self, method: &str, path: &str, range: Option<u64>) -> bool {
        self.times != Some(0)
            && self.range_from.is_none_or(|r| range == Some(r))
            && self.method.is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

/// One request the proxy saw, and the fault it got (if any).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: hyper::HeaderMap,
    /// The body of a form-encoded request (an STS call).
    pub form: Option<String>,
    pub fault: Option<Fault>,
}

/// The link to storage every response crosses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    /// Most body bytes per second on one connection; `None`: no cap.
    pub bytes_per_sec: Option<f64>,
    /// Wait before the first byte of each response.
    pub first_byte: Duration,
}

impl Link {
    /// S3 as AWS describes one connection: ~90 MB/s, ~30 ms to first byte.
    pub fn s3() -> Link {
        Link {
            bytes_per_sec: Some(90e6),
            first_byte: Duration::from_millis(30),
        }
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    link: Link,
}

pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`, to use as the S3 endpoint.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (moto's endpoint).
    pub fn start(upstream: &str) -> FaultProxy {
        Self::start_on("127.0.0.1:0", upstream, Link::default())
    }

    /// A proxy on `listen` in front of `upstream`, across `link`.
    pub fn start_on(listen: &str, upstream: &str, link: Link) -> FaultProxy {
        let upstream = upstream.trim_end_matches('/').to_string();
        let state = Arc::new(Mutex::new(State {
            link,
            ..State::default()
        }));
        let listener = std::net::TcpListener::bind(listen).expect("bind the fault proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fault proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        continue;
                    };
                    let (client, state, upstream) =
                        (client.clone(), shared.clone(), upstream.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let (client, state, upstream) =
                                (client.clone(), state.clone(), upstream.clone());
                            // An `Err` makes hyper close the connection unanswered.
                            async move { Self::respond(&client, &state, &upstream, req).await }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(conn), service)
                            .await;
                    });
                }
            });
        });
        FaultProxy { endpoint, state }
    }

    /// Adds a rule (rules are tried in the order they were added).
    pub fn inject(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    /// Removes every rule: storage answers normally again.
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// How many requests were seen so far.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// How many requests got a fault.
    pub fn faulted(&self) -> usize {
        self.seen().iter().filter(|s| s.fault.is_some()).count()
    }

    /// The `[storage]` section of a server that reaches moto through this proxy.
    pub fn storage_toml(&self, s3: &impl S3Endpoint) -> String {
        s3.storage_toml().replace(s3.endpoint(), &self.endpoint)
    }

    async fn respond(
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
        state: &Mutex<State>,
        upstream: &str,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, &'static str> {
        let method = req.method().as_str().to_string();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let form_encoded = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let headers = req.headers().clone();
        let range = headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok());
        // A form (small: an STS call) is read here, so it can be seen and checked.
        let (req, form) = if form_encoded {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map_err(|_| "body")?.to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body: Body = Full::new(bytes).map_err(|e| match e {}).boxed();
            (Request::from_parts(parts, body), Some(text))
        } else {
            let (parts, body) = req.into_parts();
            (
                Request::from_parts(parts, body.map_err(|e| e.into()).boxed()),
                None,
            )
        };
        let refused = |fault: &Fault| match fault {
            Fault::RequireHeader(name, value) => {
                headers.get(*name).and_then(|v| v.to_str().ok()) != Some(value.as_str())
            }
            Fault::RequireForm(key, value) => form.as_deref().is_some_and(|f| {
                !form_urlencoded::parse(f.as_bytes()).any(|(k, v)| k == *key && v == *value)
            }),
            _ => true,
        };
        let (fault, link) = {
            let mut st = state.lock().unwrap();
            // A requirement that holds lets the request on to the next rules.
            let fault = st
                .rules
                .iter_mut()
                .find(|r| r.matches(&method, &path, range) && refused(&r.fault))
                .map(|r| {
                    if let Some(n) = r.times.as_mut() {
                        *n -= 1;
                    }
                    r.fault.clone()
                });
            st.seen.push(Seen {
                method,
                path: path.clone(),
                headers: headers.clone(),
                form: form.clone(),
                fault: fault.clone(),
            });
            (fault, st.link)
        };
        Ok(match fault {
            Some(Fault::Reset) => return Err("fault proxy: connection dropped"),
            Some(Fault::BlackHole) => {
                // Take the whole request, as a stuck peer would, and never answer.
                let _ = req.into_body().collect().await;
                futures::future::pending::<()>().await;
                unreachable!()
            }
            Some(Fault::RequireHeader(name, _)) => {
                let _ = req.into_body().collect().await;
                answer(403, "application/xml", format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied ({name} does not match the bucket's owner)</Message><RequestId>fault</RequestId></Error>"
                ))
            }
            Some(Fault::RequireForm(key, _)) => {
                answer(403, "text/xml", format!(
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized to perform: sts:AssumeRole ({key} does not match the trust policy)</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
                ))
            }
            Some(Fault::Status(code, s3_code)) => {
                let _ = req.into_body().collect().await;
                answer(code, "application/xml", format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{s3_code}</Code><Message>injected by the test fault proxy</Message><RequestId>fault</RequestId></Error>"
                ))
            }
            forward => {
                let (mut parts, body) = req.into_parts();
                parts.uri = format!("{upstream}{path}").parse().expect("upstream uri");
                let upstream_answer = match client.request(Request::from_parts(parts, body)).await {
                    Ok(a) => a,
                    Err(e) => {
                        return Ok(Response::builder()
                            .status(502)
                            .body(
                                Full::new(Bytes::from(format!("fault proxy: upstream: {e}")))
                                    .map_err(|e| match e {})
                                    .boxed(),
                            )
                            .expect("response"))
                    }
                };
                let (mut parts, body) = upstream_answer.into_parts();
                let delay = match forward {
                    Some(Fault::Delay(d)) => d,
                    _ => Duration::ZERO,
                };
                tokio::time::sleep(link.first_byte + delay).await;
                if matches!(forward, Some(Fault::IgnoreConditions)) && parts.status == 412 {
                    parts.status = hyper::StatusCode::OK;
                    parts.headers.remove("content-length");
                    let empty: Body = Full::new(Bytes::new()).map_err(|e| match e {}).boxed();
                    return Ok(Response::from_parts(parts, empty));
                }
                let body: Body = match forward {
                    Some(Fault::CutBody(after)) => {
                        let mut left = after;
                        let frames = body.into_data_stream().map(move |chunk| {
                            let chunk = chunk?;
                            if left == 0 {
                                return Err("fault proxy: body cut".into());
                            }
                            let keep = chunk.len().min(left as usize);
                            left -= keep as u64;
                            Ok(Frame::data(chunk.slice(..keep)))
                        });
                        // After the last kept byte, the next chunk (or the
                        // end) cuts the connection short of Content-Length.
                        let cut = frames.chain(futures::stream::once(async {
                            Err::<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>(
                                "fault proxy: body cut".into(),
                            )
                        }));
                        BodyExt::boxed(StreamBody::new(cut))
                    }
                    _ => body.map_err(|e| e.into()).boxed(),
                };
                let body = match link.bytes_per_sec {
                    Some(rate) => paced(body, rate),
                    None => body,
                };
                Response::from_parts(parts, body)
            }
        })
    }
}

/// `body` at most `rate` bytes per second: each chunk goes when the bytes
/// before it would have crossed the link. A chunk less than 2 ms ahead of
/// that goes at once (fewer, longer waits: the proxy's own cost stays
/// small beside what it models).
fn paced(body: Body, rate: f64) -> Body {
    let start = Instant::now();
    let mut sent = 0u64;
    let frames = body.into_data_stream().then(move |chunk| {
        let due = chunk.as_ref().map_or(0, |c| c.len() as u64);
        let at = start + Duration::from_secs_f64((sent + due) as f64 / rate);
        sent += due;
        async move {
            if at > Instant::now() + Duration::from_millis(2) {
                tokio::time::sleep_until(at.into()).await;
            }
            chunk.map(Frame::data)
        }
    });
    BodyExt::boxed(StreamBody::new(frames))
}

/// An error answer of the proxy's own: `status`, an XML body.
fn answer(status: u16, content_type: &str, xml: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(xml)).map_err(|e| match e {}).boxed())
        .expect("response")
}
