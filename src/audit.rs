//! The audit trail: one JSON object per line, a stable stream apart from logs.
//!
//! Events: `login` (success or failure), `download` (bytes served,
//! duration), `erase` (a session removed by a user holding `delete`),
//! `render` (a derived entry rendered by this process: bytes and duration,
//! or the error), `job` (what a job over every session, such as `verify`,
//! found or changed in one session) and `job_end` (its totals, and whether
//! it ran to the end).
//! Field names are a contract for compliance tooling; add fields, never rename.
//!
//! **Tamper-evident.** Every line carries `node` (the host, or `[audit]
//! node`), `seq` (1, 2, 3, … per file, whatever process wrote the line) and
//! `prev`: the SHA-256, in hex, of the previous line's bytes (64 zeros for
//! the first). An edited line no longer matches the `prev` of the line
//! after it; a deleted one leaves a gap in `seq`; swapped lines break both.
//! `recvault audit verify FILE…` ([`verify`]) names the first line that
//! does not follow. Every process appending to one file (the server, a
//! `recvault verify` run beside it) takes the file's lock for each line and
//! chains onto whatever line is last, so there is one chain per file. What
//! a chain alone cannot show, a cut-off tail or a chain recomputed from the
//! start by whoever can write the file, needs a copy of its head elsewhere:
//! [`crate::anchor`] keeps it in the operator's bucket.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

/// `prev` of a chain's first line.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where lines go, and the chain's head as this process last saw it.
enum Sink {
    /// A stream (stdout, stderr): this process is its only writer.
    Stream {
        out: Box<dyn Write + Send>,
        seq: u64,
        prev: String,
    },
    /// A file other processes may append to: the head is read from the file
    /// under its lock whenever someone else wrote since; reopened when
    /// someone rotated it.
    File {
        file: std::fs::File,
        path: PathBuf,
        /// The file's length after this process's last line, with that
        /// line's seq and hash and the chain's id; stale when the length
        /// differs.
        known: Option<(u64, u64, String, String)>,
        /// Rotate before a line would take the file past this size.
        max_bytes: Option<u64>,
    },
}

/// Lines this process wrote and has not copied to the bucket yet, in runs
/// of one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub chain: String,
    pub first: u64,
    pub last: u64,
    pub lines: Vec<u8>,
}

/// Most bytes of lines waiting for their copy (storage down); older ones
/// are dropped past it (the file keeps them; the gap is logged).
const PENDING_MAX: usize = 64 << 20;

pub struct Audit {
    node: String,
    /// Where call and render events go ([`crate::events`]), once set.
    events: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::layout::event::Event>>,
    sink: Mutex<Sink>,
    /// `Some` once copies are asked for ([`Audit::keep_copies`]).
    pending: Mutex<Option<Vec<Batch>>>,
}

/// This host's name (`/proc/sys/kernel/hostname`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn sha256_hex(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// A chain's name: the first 16 hex digits of its first line's SHA-256
/// (that line holds its time, so two chains never share it). The anchors
/// of a chain are filed under it.
pub fn chain_id(first_line_hash: &str) -> String {
    first_line_hash.chars().take(16).collect()
}

/// The first whole line of `file` (`None` when it has none yet).
fn first_line(file: &mut std::fs::File) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::BufRead;
    file.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    std::io::BufReader::new(Read::by_ref(file)).read_until(b'\n', &mut line)?;
    Ok(line.strip_suffix(b"\n").map(<[u8]>::to_vec))
}

/// The [`chain_id`] of the chain `file` holds: named by its first line's
/// hash, or by a rotated file's first line (`"event": "rotated"`, which
/// carries it); `None` before the first line.
fn chain_of(file: &mut std::fs::File) -> std::io::Result<Option<String>> {
    let Some(line) = first_line(file)? else {
        return Ok(None);
    };
    let v: Option<serde_json::Value> = serde_json::from_slice(&line).ok();
    let carried = v
        .as_ref()
        .filter(|v| v["event"] == "rotated")
        .and_then(|v| v["chain"].as_str().map(str::to_string));
    Ok(Some(
        carried.unwrap_or_else(|| chain_id(&sha256_hex(&line))),
    ))
}

/// Whether `file` is (still) the file at `path`.
fn is_at(file: &std::fs::File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (file.metadata()?, std::fs::metadata(path));
    Ok(b.is_ok_and(|b| a.ino() == b.ino() && a.dev() == b.dev()))
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
}

/// The name a full audit file is rotated to: `<path>.<its first seq, 12
/// digits>`, so the files sort in chain order.
pub fn rotated_name(path: &Path, first_seq: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{first_seq:012}"));
    PathBuf::from(name)
}

/// The seq and hash of the last whole line of `file` (of `len` bytes);
/// `(0, GENESIS)` for an empty file.
fn tail(file: &mut std::fs::File, len: u64) -> std::io::Result<(u64, String)> {
    if len == 0 {
        return Ok((0, GENESIS.to_string()));
    }
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        Read::by_ref(file).take(len - start).read_to_end(&mut buf)?;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        match body.iter().rposition(|b| *b == b'\n') {
            Some(i) => return Ok(line_head(&body[i + 1..])),
            None if start == 0 => return Ok(line_head(body)),
            None => window *= 4,
        }
    }
}

/// A line's own seq (0 when it has none: a line from before the chain, or
/// a torn one) and its hash.
fn line_head(line: &[u8]) -> (u64, String) {
    let seq = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("seq")?.as_u64())
        .unwrap_or(0);
    (seq, sha256_hex(line))
}

impl Audit {
    fn stream(out: Box<dyn Write + Send>, node: Option<&str>) -> Self {
        Self {
            node: node.map_or_else(hostname, str::to_string),
            events: std::sync::OnceLock::new(),
            sink: Mutex::new(Sink::Stream {
                out,
                seq: 0,
                prev: GENESIS.to_string(),
            }),
            pending: Mutex::new(None),
        }
    }

    pub fn stdout() -> Self {
        Self::stream(Box::new(std::io::stdout()), None)
    }

    /// For commands whose standard output is their report.
    pub fn stderr() -> Self {
        Self::stream(Box::new(std::io::stderr()), None)
    }

    pub fn file(path: &Path) -> std::io::Result<Self> {
        Self::file_of_node(path, None)
    }

    /// An audit file whose lines name `node` (the host's name when `None`).
    pub fn file_of_node(path: &Path, node: Option<&str>) -> std::io::Result<Self> {
        Self::rotating(path, node, None)
    }

    /// [`Self::file_of_node`], rotated by size: before a line would take
    /// the file past `max_bytes`, it is renamed [`rotated_name`] and a new
    /// file continues the chain (its first line, `"event": "rotated"`,
    /// follows the old file's last one and names the chain).
    pub fn rotating(
        path: &Path,
        node: Option<&str>,
        max_bytes: Option<u64>,
    ) -> std::io::Result<Self> {
        let file = open_append(path)?;
        Ok(Self {
            node: node.map_or_else(hostname, str::to_string),
            events: std::sync::OnceLock::new(),
            sink: Mutex::new(Sink::File {
                file,
                path: path.to_owned(),
                known: None,
                max_bytes,
            }),
            pending: Mutex::new(None),
        })
    }

    /// From now on, every line this process writes is also kept for
    /// [`Self::take_copies`] (the bucket's copy of the trail).
    pub fn keep_copies(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(Vec::new());
        }
    }

    /// The lines written since the last call, in runs of one chain.
    pub fn take_copies(&self) -> Vec<Batch> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Puts back batches that could not be copied (before newer ones).
    pub fn return_copies(&self, mut batches: Vec<Batch>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pending) = p.as_mut() {
            batches.append(pending);
            let mut total: usize = batches.iter().map(|b| b.lines.len()).sum();
            while total > PENDING_MAX && batches.len() > 1 {
                let dropped = batches.remove(0);
                total -= dropped.lines.len();
                tracing::error!(chain = %dropped.chain, first = dropped.first, last = dropped.last, "audit lines dropped from the bucket copy (storage unreachable too long); the file keeps them");
            }
            *pending = batches;
        }
    }

    fn keep(&self, chain: &str, seq: u64, line: &[u8]) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pending) = p.as_mut() else { return };
        match pending.last_mut() {
            Some(b) if b.chain == chain && b.last + 1 == seq && b.lines.len() < 4 << 20 => {
                b.last = seq;
                b.lines.extend_from_slice(line);
            }
            _ => pending.push(Batch {
                chain: chain.to_string(),
                first: seq,
                last: seq,
                lines: line.to_vec(),
            }),
        }
        let mut total: usize = pending.iter().map(|b| b.lines.len()).sum();
        while total > PENDING_MAX && pending.len() > 1 {
            let dropped = pending.remove(0);
            total -= dropped.lines.len();
            tracing::error!(chain = %dropped.chain, first = dropped.first, last = dropped.last, "audit lines dropped from the bucket copy (not copied in time); the file keeps them");
        }
    }

    /// The name the lines carry as `node`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The head of a file's chain: its [`chain_id`], the last line's seq
    /// and SHA-256 (`None` for a stream, or before the first line). Read
    /// from the file under its lock, so it is the head whichever process
    /// wrote last.
    pub fn head(&self) -> std::io::Result<Option<(String, u64, String)>> {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let Sink::File { file, path, .. } = &mut *sink else {
            return Ok(None);
        };
        lock_current(file, path)?;
        let head = (|| {
            let Some(chain) = chain_of(file)? else {
                return Ok(None);
            };
            let (seq, hash) = tail(file, file.metadata()?.len())?;
            Ok(Some((chain, seq, hash)))
        })();
        let _ = file.unlock();
        head
    }

    /// One chained line: `seq`, `node`, `prev`, the event's fields and `ts`.
    fn line(&self, event: &serde_json::Value, seq: u64, prev: &str) -> Vec<u8> {
        let mut obj = serde_json::Map::new();
        obj.insert("seq".into(), json!(seq));
        obj.insert("node".into(), json!(self.node));
        obj.insert("prev".into(), json!(prev));
        if let Some(fields) = event.as_object() {
            for (k, v) in fields {
                obj.insert(k.clone(), v.clone());
            }
        }
        obj.insert(
            "ts".into(),
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        serde_json::Value::Object(obj).to_string().into_bytes()
    }

    fn emit(&self, event: serde_json::Value) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Stream { out, seq, prev } => {
                *seq += 1;
                let line = self.line(&event, *seq, prev);
                *prev = sha256_hex(&line);
                let _ = out.write_all(&line);
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            }
            Sink::File {
                file,
                path,
                known,
                max_bytes,
            } => {
                let written = (|| -> std::io::Result<()> {
                    if lock_current(file, path)? {
                        // Another file now: what this process knew is of the old one.
                        *known = None;
                    }
                    let result = (|| {
                        let mut len = file.metadata()?.len();
                        let (mut seq, mut prev, chain) = match known.take() {
                            Some((at, seq, hash, chain)) if at == len => (seq, hash, chain),
                            _ => {
                                let (seq, hash) = tail(file, len)?;
                                (seq, hash, chain_of(file)?.unwrap_or_default())
                            }
                        };
                        let mut line = self.line(&event, seq + 1, &prev);
                        let mut chain = chain;
                        if let Some(max) = *max_bytes {
                            if len > 0 && len + line.len() as u64 + 1 > max {
                                let (new, rotated) = self.rotate(file, path, seq, &prev, &chain)?;
                                let _ = file.unlock();
                                *file = new;
                                self.keep(&chain, seq + 1, &[rotated.as_slice(), b"\n"].concat());
                                len = rotated.len() as u64 + 1;
                                seq += 1;
                                prev = sha256_hex(&rotated);
                                line = self.line(&event, seq + 1, &prev);
                            }
                        }
                        let mut bytes = line.clone();
                        bytes.push(b'\n');
                        file.write_all(&bytes)?;
                        if chain.is_empty() {
                            // The first line of a chain names it.
                            chain = chain_id(&sha256_hex(&line));
                        }
                        self.keep(&chain, seq + 1, &bytes);
                        *known =
                            Some((len + bytes.len() as u64, seq + 1, sha256_hex(&line), chain));
                        Ok(())
                    })();
                    let _ = file.unlock();
                    result
                })();
                if let Err(e) = written {
                    tracing::error!(error = %e, "cannot write the audit trail");
                }
            }
        }
    }

    /// Rotates the full file `file` (locked; its last line has `seq` and
    /// hash `prev`): a new file, locked, whose first line continues the
    /// chain, takes its place at `path`; the full one is renamed
    /// [`rotated_name`]. Returns the new file and its first line.
    fn rotate(
        &self,
        file: &mut std::fs::File,
        path: &Path,
        seq: u64,
        prev: &str,
        chain: &str,
    ) -> std::io::Result<(std::fs::File, Vec<u8>)> {
        let first_seq = first_line(file)?
            .map(|l| line_head(&l).0)
            .filter(|s| *s > 0)
            .unwrap_or(1);
        let rotated = rotated_name(path, first_seq);
        let from = rotated
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".rotating-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let mut new = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&tmp)?;
        new.lock()?;
        let line = self.line(
            &json!({"event": "rotated", "chain": chain, "from": from}),
            seq + 1,
            prev,
        );
        new.write_all(&[line.as_slice(), b"\n"].concat())?;
        new.sync_all()?;
        // The full file gets its second name first (never over another:
        // a rotated file is history), then the new one takes the path in
        // one rename, so the path always names a file of the chain.
        match std::fs::hard_link(path, &rotated) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                use std::os::unix::fs::MetadataExt;
                let (a, b) = (std::fs::metadata(path)?, std::fs::metadata(&rotated)?);
                if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(std::io::Error::other(format!(
                        "cannot rotate the audit file: {} exists and is another file",
                        rotated.display()
                    )));
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        std::fs::rename(&tmp, path)?;
        tracing::info!(rotated = %rotated.display(), "audit file rotated; the chain continues in a new file");
        Ok((new, line))
    }

    /// Sends the call and render events of this trail to `tx` from now on.
    pub fn send_events_to(
        &self,
        tx: tokio::sync::mpsc::UnboundedSender<crate::layout::event::Event>,
    ) {
        let _ = self.events.set(tx);
    }

    fn event(&self, e: Option<crate::layout::event::Event>) {
        if let (Some(tx), Some(e)) = (self.events.get(), e) {
            let _ = tx.send(e);
        }
    }

    pub fn login(
        &self,
        protocol: &str,
        peer: SocketAddr,
        user: &str,
        tenant: Option<&str>,
        method: &str,
        ok: bool,
    ) {
        // Unknown user names are attacker-chosen: bound them.
        let user: String = user.chars().take(64).collect();
        crate::metrics::login(protocol, ok);
        self.emit(json!({
            "event": "login", "protocol": protocol, "peer": peer.to_string(), "user": user,
            "tenant": tenant, "method": method, "ok": ok,
        }));
    }

    /// A download ended, complete or not.
    pub fn download(
        &self,
        protocol: &str,
        peer: SocketAddr,
        user: &str,
        tenant: &str,
        path: &str,
        d: &Download,
    ) {
        crate::metrics::download(protocol, d.bytes, d.complete);
        self.emit(json!({
            "event": "download", "protocol": protocol, "peer": peer.to_string(), "user": user,
            "tenant": tenant, "path": path, "offset": d.offset, "bytes": d.bytes, "size": d.size,
            "complete": d.complete, "sha256": d.sha256, "duration_ms": d.took.as_millis() as u64,
        }));
    }

    /// A session folder was listed (who looked at which call).
    pub fn listing(&self, protocol: &str, peer: SocketAddr, user: &str, tenant: &str, path: &str) {
        crate::metrics::listing(protocol);
        self.emit(json!({
            "event": "listing", "protocol": protocol, "peer": peer.to_string(), "user": user,
            "tenant": tenant, "path": path,
        }));
    }

    /// Calls were searched (the API's `GET /v1/calls`; `query` as asked).
    pub fn search(&self, protocol: &str, peer: SocketAddr, user: &str, tenant: &str, query: &str) {
        self.emit(json!({
            "event": "search", "protocol": protocol, "peer": peer.to_string(), "user": user,
            "tenant": tenant, "query": query,
        }));
    }

    /// Ingest: a session's files were all received (`complete`), it was
    /// archived, or it failed for good (quarantined).
    pub fn ingest(&self, tenant: &str, session: &str, stage: &str, detail: serde_json::Value) {
        crate::metrics::ingest(stage);
        let kind = match stage {
            "archived" => Some("call.archived"),
            "failed" => Some("call.failed"),
            "delivered" => Some("call.delivered"),
            "delivery_failed" => Some("delivery.failed"),
            _ => None,
        };
        if let Some(kind) = kind {
            let day = detail["day"].as_str().map(str::to_string);
            self.event(Some(crate::layout::event::Event::new(
                kind,
                tenant,
                session,
                day,
                None,
                detail.clone(),
                &self.node,
            )));
        }
        self.emit(json!({
            "event": "ingest", "tenant": tenant, "session": session, "stage": stage,
            "detail": detail,
        }));
    }

    pub fn erase(
        &self,
        protocol: &str,
        peer: SocketAddr,
        user: &str,
        tenant: &str,
        path: &str,
        objects: usize,
    ) {
        crate::metrics::erase(protocol);
        self.event(crate::layout::event::Event::at_path(
            "call.erased",
            tenant,
            path,
            json!({"objects": objects, "by": user, "protocol": protocol}),
            &self.node,
        ));
        self.emit(json!({
            "event": "erase", "protocol": protocol, "peer": peer.to_string(), "user": user,
            "tenant": tenant, "path": path, "objects": objects,
        }));
    }

    /// A signed download link was made (who may hand out which file, until when).
    #[allow(clippy::too_many_arguments)]
    pub fn link(
        &self,
        protocol: &str,
        peer: SocketAddr,
        user: &str,
        tenant: &str,
        path: &str,
        expires: i64,
        uses: u32,
    ) {
        self.emit(json!({
            "event": "link", "protocol": protocol, "peer": peer.to_string(), "user": user,
            "tenant": tenant, "path": path, "expires": expires, "max_uses": uses,
        }));
    }

    /// A derived entry rendered here: its size, or why it failed.
    pub fn render(&self, tenant: &str, path: &str, outcome: Result<u64, &String>, took: Duration) {
        let ms = took.as_millis() as u64;
        crate::metrics::render(outcome.is_ok(), took);
        self.event(crate::layout::event::Event::at_path(
            if outcome.is_ok() {
                "render.completed"
            } else {
                "render.failed"
            },
            tenant,
            path,
            match outcome {
                Ok(bytes) => json!({"bytes": bytes}),
                Err(e) => json!({"error": e}),
            },
            &self.node,
        ));
        self.emit(match outcome {
            Ok(bytes) => json!({
                "event": "render", "tenant": tenant, "path": path, "ok": true,
                "bytes": bytes, "duration_ms": ms,
            }),
            Err(e) => json!({
                "event": "render", "tenant": tenant, "path": path, "ok": false,
                "error": e, "duration_ms": ms,
            }),
        });
    }

    /// A tenant's keyset got a new primary key (`recvault keys rotate`, then a reload).
    pub fn key_rotation(&self, tenant: &str, primary: u32, previous: u32) {
        self.emit(json!({
            "event": "key_rotation", "tenant": tenant, "primary": primary, "previous": previous,
        }));
    }

    /// A reload of the configuration (SIGHUP): applied, or why not.
    pub fn config_reload(&self, outcome: Result<(), &str>) {
        self.emit(match outcome {
            Ok(()) => json!({"event": "config_reload", "ok": true}),
            Err(e) => json!({"event": "config_reload", "ok": false, "error": e}),
        });
    }

    /// What a job over every session found or changed in one session.
    pub fn job_finding(&self, kind: &str, tenant: &str, path: &str, what: &str) {
        self.emit(json!({
            "event": "job", "kind": kind, "tenant": tenant, "path": path, "finding": what,
        }));
    }

    /// A job over every session ended: its totals, and whether it ran to the end.
    pub fn job_end(&self, kind: &str, tenant: &str, sessions: u64, findings: u64, complete: bool) {
        self.emit(json!({
            "event": "job_end", "kind": kind, "tenant": tenant, "sessions": sessions,
            "findings": findings, "complete": complete,
        }));
    }
}

/// What one download served.
#[derive(Debug, Clone)]
pub struct Download {
    /// Where it started (FTP `REST`; the lowest offset an SFTP client read).
    pub offset: u64,
    pub bytes: u64,
    /// The file's size.
    pub size: u64,
    /// Whether the file was served to its end (from `offset`).
    pub complete: bool,
    /// The file's SHA-256 as recorded (the index, a render's sums); `None`
    /// when none is recorded.
    pub sha256: Option<String>,
    pub took: Duration,
}

/// Locks `file`, reopening `path` first while `file` is no longer the file
/// there (another process rotated it).
fn lock_current(file: &mut std::fs::File, path: &Path) -> std::io::Result<bool> {
    let mut reopened = false;
    loop {
        file.lock()?;
        if is_at(file, path)? {
            return Ok(reopened);
        }
        let _ = file.unlock();
        *file = open_append(path)?;
        reopened = true;
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every line follows the one before: how many lines, per node's chain
    /// start and end.
    Intact { lines: u64, last_seq: u64 },
    /// The first line that does not follow, and why.
    Broken {
        file: String,
        line: u64,
        why: String,
    },
}

/// Checks audit files, oldest first, as one chain: each line's `seq` one
/// more than the line before it and its `prev` the SHA-256 of that line.
pub fn verify(files: &[std::path::PathBuf]) -> Result<Verdict, String> {
    read_chain(files).map(|c| c.verdict)
}

/// A chain as [`read_chain`] found it.
pub struct Chain {
    pub verdict: Verdict,
    /// The SHA-256 of the line with seq `i + 1`, for every line that followed.
    pub hashes: Vec<String>,
    /// The `node` names the lines carry.
    pub nodes: std::collections::BTreeSet<String>,
    /// The chain's [`chain_id`] (`None` when the files hold no line).
    pub id: Option<String>,
}

/// [`verify`], keeping each line's hash (to check the chain's heads kept
/// elsewhere against it) and the nodes named.
pub fn read_chain(files: &[std::path::PathBuf]) -> Result<Chain, String> {
    // Rotated files in chain order, whatever order they were named in.
    let mut files = files.to_vec();
    files.sort_by_key(|p| {
        std::fs::File::open(p)
            .ok()
            .and_then(|mut f| first_line(&mut f).ok().flatten())
            .map_or(u64::MAX, |l| line_head(&l).0)
    });
    let files = &files[..];
    let mut hashes: Vec<String> = Vec::new();
    let mut nodes = std::collections::BTreeSet::new();
    let verdict = follow(files, &mut hashes, &mut nodes)?;
    Ok(Chain {
        verdict,
        id: hashes.first().map(|h| chain_id(h)),
        hashes,
        nodes,
    })
}

fn follow(
    files: &[std::path::PathBuf],
    hashes: &mut Vec<String>,
    nodes: &mut std::collections::BTreeSet<String>,
) -> Result<Verdict, String> {
    use std::io::BufRead;
    let mut last: Option<(u64, String)> = None;
    let mut lines = 0u64;
    for path in files {
        let f = std::fs::File::open(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut reader = std::io::BufReader::new(f);
        let mut number = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            number += 1;
            let file = path.display().to_string();
            let broken = |why: String| Verdict::Broken {
                file: file.clone(),
                line: number,
                why,
            };
            let Some(line) = buf.strip_suffix(b"\n") else {
                return Ok(broken(
                    "the last line is incomplete (cut off while being written, or truncated)"
                        .into(),
                ));
            };
            let v: serde_json::Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(_) => return Ok(broken("not a JSON line".into())),
            };
            let (Some(seq), Some(prev)) = (
                v.get("seq").and_then(|s| s.as_u64()),
                v.get("prev").and_then(|p| p.as_str()),
            ) else {
                return Ok(broken("no seq or prev: not a chained audit line".into()));
            };
            match &last {
                None if seq != 1 => {
                    return Ok(broken(format!(
                        "the chain starts at seq {seq}: give the older files first, or lines 1 to {} are missing",
                        seq - 1
                    )))
                }
                None if prev != GENESIS => {
                    return Ok(broken("the first line's prev is not the chain's start".into()))
                }
                Some((s, _)) if seq <= *s => {
                    return Ok(broken(format!(
                        "seq {seq} after seq {s}: lines reordered or repeated"
                    )))
                }
                Some((s, _)) if seq > s + 1 => {
                    return Ok(broken(format!(
                        "seq {seq} after seq {s}: {} line(s) missing before it",
                        seq - s - 1
                    )))
                }
                Some((_, h)) if prev != h => {
                    return Ok(broken(
                        "its prev is not the SHA-256 of the line before it: that line was edited or replaced".into(),
                    ))
                }
                _ => {}
            }
            let hash = sha256_hex(line);
            if let Some(node) = v.get("node").and_then(|n| n.as_str()) {
                nodes.insert(node.to_string());
            }
            hashes.push(hash.clone());
            last = Some((seq, hash));
            lines += 1;
        }
    }
    Ok(Verdict::Intact {
        lines,
        last_seq: last.map_or(0, |(s, _)| s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_events(audit: &Audit, n: usize) {
        for i in 0..n {
            audit.job_finding("verify", "acme", &format!("/2026/11/23/call-{i}"), "ok");
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Every file of a rotated trail: the current one and its rotations.
    fn trail(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("audit.log"))
            .collect();
        // Named in the wrong order on purpose: verify puts them in chain order.
        files.sort();
        files.reverse();
        files
    }

    #[test]
    fn rotation_by_size_keeps_one_chain_across_files_and_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let a = Audit::rotating(&path, Some("n"), Some(4096)).unwrap();
        let b = Audit::rotating(&path, Some("n"), Some(4096)).unwrap();
        a.keep_copies();
        b.keep_copies();
        let chain = {
            write_events(&a, 1);
            a.head().unwrap().unwrap().0
        };
        for _ in 0..40 {
            write_events(&a, 3);
            write_events(&b, 2);
        }
        let files = trail(dir.path());
        assert!(files.len() >= 5, "rotated: {files:?}");
        for f in &files {
            assert!(
                std::fs::metadata(f).unwrap().len() <= 4096,
                "{f:?} is past the limit"
            );
        }
        let rotations = files.len() as u64 - 1;
        assert_eq!(
            verify(&files).unwrap(),
            Verdict::Intact {
                lines: 201 + rotations,
                last_seq: 201 + rotations
            }
        );
        assert_eq!(
            a.head().unwrap().unwrap().0,
            chain,
            "the chain keeps its name"
        );
        assert_eq!(b.head().unwrap().unwrap().0, chain);
        // Each writer's copies, together, are every line once, as written.
        let mut batches = a.take_copies();
        batches.extend(b.take_copies());
        batches.sort_by_key(|b| b.first);
        assert!(batches.iter().all(|b| b.chain == chain));
        assert!(batches.windows(2).all(|w| w[1].first == w[0].last + 1));
        let copied: Vec<u8> = batches.into_iter().flat_map(|b| b.lines).collect();
        // Chain order: the rotations (oldest first), then the current file.
        let mut files: Vec<PathBuf> = files.into_iter().filter(|f| *f != path).collect();
        files.sort();
        files.push(path.clone());
        let written: Vec<u8> = files
            .iter()
            .flat_map(|f| std::fs::read(f).unwrap())
            .collect();
        assert!(copied == written, "the copies are the trail");
        // One file missing from the middle: named.
        std::fs::remove_file(&files[2]).unwrap();
        let files = trail(dir.path());
        assert!(
            matches!(verify(&files).unwrap(), Verdict::Broken { why, .. } if why.contains("missing"))
        );
    }

    #[test]
    fn two_writers_on_one_file_make_one_chain_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let server = Audit::file_of_node(&path, Some("node-a")).unwrap();
        let job = Audit::file_of_node(&path, Some("node-a")).unwrap();
        write_events(&server, 3);
        write_events(&job, 2);
        write_events(&server, 2);
        drop((server, job));
        // A restart continues the chain.
        write_events(&Audit::file_of_node(&path, Some("node-a")).unwrap(), 1);
        let got = lines(&path);
        assert_eq!(got.len(), 8);
        let v: serde_json::Value = serde_json::from_str(&got[7]).unwrap();
        assert_eq!(v["seq"], 8);
        assert_eq!(v["node"], "node-a");
        assert_eq!(v["event"], "job");
        assert_eq!(
            verify(&[path]).unwrap(),
            Verdict::Intact {
                lines: 8,
                last_seq: 8
            }
        );
    }

    #[test]
    fn an_edited_deleted_or_swapped_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write_events(&Audit::file_of_node(&path, Some("n")).unwrap(), 6);
        let good = lines(&path);
        let check = |edit: &dyn Fn(&mut Vec<String>)| {
            let mut l = good.clone();
            edit(&mut l);
            let p = dir.path().join("edited.log");
            std::fs::write(&p, l.join("\n") + "\n").unwrap();
            verify(&[p]).unwrap()
        };
        // Line 3 edited: line 4's prev no longer matches.
        let v = check(&|l| l[2] = l[2].replace("call-2", "call-9"));
        assert!(
            matches!(&v, Verdict::Broken { line: 4, why, .. } if why.contains("edited")),
            "{v:?}"
        );
        // Line 3 deleted: a gap at what is now line 3.
        let v = check(&|l| {
            l.remove(2);
        });
        assert!(
            matches!(&v, Verdict::Broken { line: 3, why, .. } if why.contains("1 line(s) missing")),
            "{v:?}"
        );
        // Lines 3 and 4 swapped.
        let v = check(&|l| l.swap(2, 3));
        assert!(matches!(&v, Verdict::Broken { line: 3, .. }), "{v:?}");
        // The first line removed: the chain does not start at 1.
        let v = check(&|l| {
            l.remove(0);
        });
        assert!(
            matches!(&v, Verdict::Broken { line: 1, why, .. } if why.contains("starts at seq 2")),
            "{v:?}"
        );
        // A line that is not the audit's.
        let v = check(&|l| l.insert(5, "{\"event\":\"login\"}".into()));
        assert!(
            matches!(&v, Verdict::Broken { line: 6, why, .. } if why.contains("not a chained")),
            "{v:?}"
        );
        // Untouched.
        assert_eq!(
            check(&|_| {}),
            Verdict::Intact {
                lines: 6,
                last_seq: 6
            }
        );
    }
}
