//! `recvault push DIR --url URL --token TOKEN`: uploads a session folder
//! (its MJR streams and `info.json`), completes it and waits until it is
//! archived. Transient failures (connection errors, 5xx, 507) are retried
//! with backoff, as a gateway would.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, StreamBody};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::ingest::spool::ALLOWED;

type Body = BoxBody<Bytes, std::io::Error>;

/// How a push ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Archived,
    Failed(String),
    TimedOut(String),
}

struct Api {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    base: String,
    token: String,
}

impl Api {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        len: Option<u64>,
    ) -> Result<(StatusCode, Value), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if let Some(n) = len {
            req = req.header(hyper::header::CONTENT_LENGTH, n);
        }
        let req = req.body(body).map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("cannot reach {}: {}", self.base, chain(&e)))?;
        let code = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((code, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Retries `f` while it fails transiently, up to `deadline`.
    async fn retrying<F, Fut>(
        &self,
        what: &str,
        deadline: Instant,
        mut f: F,
    ) -> Result<(StatusCode, Value), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(StatusCode, Value), String>>,
    {
        let mut delay = Duration::from_millis(200);
        loop {
            let r = f().await;
            let transient = match &r {
                Err(_) => true,
                Ok((c, _)) => {
                    c.is_server_error()
                        || *c == StatusCode::INSUFFICIENT_STORAGE
                        || *c == StatusCode::REQUEST_TIMEOUT
                }
            };
            if !transient || Instant::now() + delay > deadline {
                return r.map_err(|e| format!("{what}: {e}"));
            }
            eprintln!("recvault push: {what}: {}; retrying", describe(&r));
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// An error and its causes, e.g. "client error (Connect): invalid peer certificate: UnknownIssuer".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn describe(r: &Result<(StatusCode, Value), String>) -> String {
    match r {
        Ok((c, v)) => format!(
            "{c}: {}",
            v.get("error").and_then(Value::as_str).unwrap_or("")
        ),
        Err(e) => e.clone(),
    }
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// An HTTP(S) connector trusting `ca_file` (PEM) if given, else the system roots.
fn connector(ca_file: Option<&Path>) -> Result<HttpsConnector<HttpConnector>, String> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match ca_file {
        Some(path) => {
            use rustls_pki_types::{pem::PemObject, CertificateDer};
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            }
            let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            builder.with_tls_config(tls)
        }
        None => builder
            .with_provider_and_native_roots(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?,
    };
    Ok(builder.https_or_http().enable_http1().build())
}

/// Pushes the session in `dir` and waits up to `wait` for it to be archived.
pub async fn push(
    dir: &Path,
    url: &str,
    token: &str,
    ca_file: Option<&Path>,
    wait: Duration,
) -> Result<Outcome, String> {
    let base = url.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(format!("--url must be http(s)://HOST:PORT (got {url:?})"));
    }
    let info = std::fs::read(dir.join("info.json"))
        .map_err(|e| format!("{}: {e}", dir.join("info.json").display()))?;
    let info: Value =
        serde_json::from_slice(&info).map_err(|e| format!("info.json is not JSON: {e}"))?;
    let id = info
        .get("session_id")
        .and_then(Value::as_str)
        .ok_or("info.json has no session_id")?
        .to_string();
    if !crate::path::is_name(&id) {
        return Err(format!(
            "session_id {id:?} must match [A-Za-z0-9._-]{{1,128}}"
        ));
    }
    let api = Api {
        client: Client::builder(TokioExecutor::new()).build(connector(ca_file)?),
        base,
        token: token.to_string(),
    };
    let deadline = Instant::now() + wait;
    let mut sent = 0;
    for name in ALLOWED {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let (code, body) = api
            .retrying(&format!("upload {name}"), deadline, || {
                let (api, path, id) = (&api, path.clone(), id.clone());
                async move {
                    let f = tokio::fs::File::open(&path)
                        .await
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    let len = f.metadata().await.map_err(|e| e.to_string())?.len();
                    let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024)
                        .map_ok(hyper::body::Frame::data);
                    let body: Body = StreamBody::new(stream).boxed();
                    api.send(
                        Method::PUT,
                        &format!("/v1/sessions/{id}/files/{name}"),
                        body,
                        Some(len),
                    )
                    .await
                }
            })
            .await?;
        if !code.is_success() {
            return Err(format!(
                "upload {name}: {code}: {}",
                body.get("error").and_then(Value::as_str).unwrap_or("")
            ));
        }
        sent += 1;
    }
    if sent == 0 {
        return Err(format!(
            "{} holds none of {}",
            dir.display(),
            ALLOWED.join(", ")
        ));
    }
    let complete_path = format!("/v1/sessions/{id}/complete");
    let status_path = format!("/v1/sessions/{id}");
    let (code, body) = api
        .retrying("complete", deadline, || {
            api.send(Method::POST, &complete_path, empty(), None)
        })
        .await?;
    if !code.is_success() {
        let reason = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        return Ok(Outcome::Failed(format!("complete: {code}: {reason}")));
    }
    loop {
        let (code, body) = api
            .retrying("status", deadline, || {
                api.send(Method::GET, &status_path, empty(), None)
            })
            .await?;
        let status = body.get("status").and_then(Value::as_str).unwrap_or("");
        match (code.is_success(), status) {
            (true, "archived") => return Ok(Outcome::Archived),
            (true, "failed") => {
                return Ok(Outcome::Failed(
                    body.get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                ))
            }
            (false, _) => return Ok(Outcome::Failed(format!("status: {code}"))),
            _ => {}
        }
        if Instant::now() >= deadline {
            return Ok(Outcome::TimedOut(format!(
                "still {status} after {}s",
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
