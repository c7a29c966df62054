//! The SFTP (version 3) request loop over one channel.
//!
//! russh-sftp provides the packet codec; the loop is ours because russh-sftp's
//! own server answers one request at a time and keeps reading after a packet
//! that is over its length limit. Here:
//! - a packet longer than `limits.sftp_max_packet` closes the channel before
//!   anything is allocated for it;
//! - path requests (stat, realpath, open, …) run concurrently, bounded by
//!   `limits.sftp_max_inflight`, so a slow storage round trip never holds up
//!   the next request;
//! - each open handle has its own worker that serves its requests in arrival
//!   order (reads then come from a read-ahead buffer, see `crate::vfs::reader`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::Utc;
use russh_sftp::protocol::{
    Attrs, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::limits::Limits;
use crate::shared::Conn;
use crate::vfs::reader::ReadAhead;
use crate::vfs::{ls_line, DirLister, Entry, Kind, VPath, Vfs, VfsError};

const SSH_FXP_DATA: u8 = 103;

/// One reply, as the pieces to write one after another.
type Frame = Vec<Bytes>;
/// Entries per READDIR reply (as OpenSSH's server).
const READDIR_BATCH: usize = 100;

/// Replies on their way to the channel, bounded in bytes
/// (`limits.sftp_queued_reply_bytes`), not only in count: a client with 64
/// reads of 255 KiB outstanding must not park 16 MiB of replies per channel
/// in memory while it reads slowly. A reply waits for room before it is
/// queued, so a file's worker stops taking data from its read-ahead.
struct Outbox {
    tx: mpsc::Sender<(Frame, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
    cap: usize,
}

impl Outbox {
    async fn send(&self, frame: Frame) {
        let n: usize = frame.iter().map(Bytes::len).sum();
        // One reply larger than the whole room takes all of it.
        let want = n.clamp(1, self.cap) as u32;
        let Ok(permit) = self.room.clone().acquire_many_owned(want).await else {
            return;
        };
        let _ = self.tx.send((frame, permit)).await;
    }
}

struct Ctx {
    vfs: Vfs,
    limits: Limits,
    /// Who is on the other end, for logs and audit.
    conn: Conn,
    out: Outbox,
    handles: Mutex<HashMap<String, mpsc::Sender<HandleOp>>>,
    next_handle: AtomicU64,
}

enum HandleOp {
    Read { id: u32, offset: u64, len: u32 },
    ReadDir { id: u32 },
    Fstat { id: u32 },
    Close { id: u32 },
}

/// Serves SFTP, reading requests from `rd` and writing replies to `wr`,
/// until the client closes its side (`Ok`) or breaks the protocol (`Err`
/// with the reason, also written to `stderr`: the channel's extended data,
/// which clients print). The channel itself stays with the caller, which
/// sends the exit status before closing it.
pub async fn serve<R, W, E>(mut rd: R, mut wr: W, mut stderr: E, conn: Conn) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    E: AsyncWrite + Unpin,
{
    let limits = conn.limits().clone();
    let (tx, mut out_rx) = mpsc::channel::<(Frame, OwnedSemaphorePermit)>(256);
    let cap = limits.sftp_queued_reply_bytes.max(1);
    let out = Outbox {
        tx,
        room: Arc::new(Semaphore::new(cap)),
        cap,
    };
    let writer = tokio::spawn(async move {
        // Each reply's room is given back once it is written.
        'frames: while let Some((frame, _room)) = out_rx.recv().await {
            for part in frame {
                if wr.write_all(&part).await.is_err() {
                    break 'frames;
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    let inflight = Arc::new(Semaphore::new(limits.sftp_max_inflight));
    let max_packet = limits.sftp_max_packet;
    let ctx = Arc::new(Ctx {
        vfs: conn.vfs(),
        limits,
        conn,
        out,
        handles: Mutex::new(HashMap::new()),
        next_handle: AtomicU64::new(1),
    });
    let mut outcome = Ok(());
    while let Ok(len) = rd.read_u32().await {
        if len == 0 || len > max_packet {
            warn!(user = %ctx.conn.user().name, peer = %ctx.conn.peer(), len, max_packet, "SFTP packet length out of bounds; closing the channel");
            outcome = Err(format!(
                "SFTP packet of {len} bytes is outside 1..={max_packet}; closing the session"
            ));
            break;
        }
        let mut buf = vec![0u8; len as usize];
        if rd.read_exact(&mut buf).await.is_err() {
            outcome = Err("the client closed the channel in the middle of a packet".into());
            break;
        }
        let mut bytes = Bytes::from(buf);
        let request_id = if bytes.len() >= 5 {
            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]])
        } else {
            0
        };
        let packet = match Packet::try_from(&mut bytes) {
            Ok(p) => p,
            Err(e) => {
                debug!(error = %e, "undecodable SFTP packet");
                ctx.reply(status(
                    request_id,
                    StatusCode::BadMessage,
                    "malformed or unknown SFTP request",
                ))
                .await;
                continue;
            }
        };
        if !dispatch(&ctx, &inflight, packet).await {
            outcome = Err("the server is stopping".into());
            break;
        }
    }
    // Before the EOF the writer sends once the replies are out.
    if let Err(why) = &outcome {
        let _ = stderr
            .write_all(format!("recvault: {why}\r\n").as_bytes())
            .await;
    }
    // Closing every handle ends its worker; then the writer drains and stops.
    let workers: Vec<_> = ctx
        .handles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect();
    drop(workers);
    drop(ctx);
    let _ = writer.await;
    outcome
}

/// Routes one request; returns false when the session must end.
async fn dispatch(ctx: &Arc<Ctx>, inflight: &Arc<Semaphore>, packet: Packet) -> bool {
    match packet {
        Packet::Init(_) => {
            let mut v = Version::new();
            v.extensions
                .insert(russh_sftp::extensions::LIMITS.to_string(), "1".to_string());
            v.extensions
                .insert(russh_sftp::extensions::STATVFS.to_string(), "2".to_string());
            ctx.reply(Packet::Version(v)).await;
        }
        Packet::Read(r) => {
            ctx.to_handle(
                &r.handle,
                r.id,
                HandleOp::Read {
                    id: r.id,
                    offset: r.offset,
                    len: r.len,
                },
            )
            .await
        }
        Packet::ReadDir(r) => {
            ctx.to_handle(&r.handle, r.id, HandleOp::ReadDir { id: r.id })
                .await
        }
        Packet::Fstat(r) => {
            ctx.to_handle(&r.handle, r.id, HandleOp::Fstat { id: r.id })
                .await
        }
        Packet::Close(r) => {
            let worker = ctx
                .handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&r.handle);
            match worker {
                Some(tx) => {
                    if tx.send(HandleOp::Close { id: r.id }).await.is_err() {
                        ctx.reply(ok(r.id)).await;
                    }
                }
                None => {
                    ctx.reply(status(r.id, StatusCode::Failure, "invalid handle"))
                        .await
                }
            }
        }
        Packet::SetStat(r) => ctx.reply(ok(r.id)).await,
        Packet::FSetStat(r) => ctx.reply(ok(r.id)).await,
        Packet::Write(r) => ctx.reply(refused(r.id)).await,
        Packet::MkDir(r) => ctx.reply(refused(r.id)).await,
        Packet::Remove(r) => ctx.reply(refused(r.id)).await,
        Packet::Rename(r) => ctx.reply(refused(r.id)).await,
        Packet::Symlink(r) => ctx.reply(refused(r.id)).await,
        Packet::ReadLink(r) => {
            ctx.reply(status(
                r.id,
                StatusCode::Failure,
                "not a symbolic link: this server has none",
            ))
            .await
        }
        Packet::Extended(r) => {
            if r.request == russh_sftp::extensions::LIMITS {
                ctx.reply(limits_reply(r.id, &ctx.limits)).await;
            } else if r.request == russh_sftp::extensions::STATVFS {
                ctx.reply(statvfs_reply(ctx, r.id, &r.data)).await;
            } else {
                ctx.reply(status(
                    r.id,
                    StatusCode::OpUnsupported,
                    "extension not supported",
                ))
                .await;
            }
        }
        Packet::RealPath(_)
        | Packet::Stat(_)
        | Packet::Lstat(_)
        | Packet::Open(_)
        | Packet::OpenDir(_)
        | Packet::RmDir(_) => {
            let Ok(permit) = inflight.clone().acquire_owned().await else {
                return false;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let reply = path_request(&ctx, packet).await;
                ctx.reply(reply).await;
                drop(permit);
            });
        }
        other => {
            let id = other.get_request_id();
            ctx.reply(status(
                id,
                StatusCode::BadMessage,
                "not a request a client may send",
            ))
            .await;
        }
    }
    true
}

async fn path_request(ctx: &Arc<Ctx>, packet: Packet) -> Packet {
    let root = VPath::root();
    match packet {
        Packet::RealPath(r) => match ctx.vfs.resolve(&root, &r.path) {
            Ok(p) => Packet::Name(Name {
                id: r.id,
                files: vec![File::dummy(p.to_string())],
            }),
            Err(e) => error_status(r.id, &e),
        },
        Packet::Stat(r) => stat(ctx, r.id, &r.path).await,
        Packet::Lstat(r) => stat(ctx, r.id, &r.path).await,
        Packet::RmDir(r) => erase(ctx, r.id, &r.path).await,
        Packet::Open(r) => {
            if r.pflags.intersects(
                OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            ) {
                return refused(r.id);
            }
            let opened = async {
                let p = ctx.vfs.resolve(&root, &r.filename)?;
                let f = ctx.vfs.open(&p).await?;
                Ok::<_, VfsError>((p, f))
            };
            match opened.await {
                Ok((p, f)) => {
                    let reader = ReadAhead::new(
                        Arc::new(f),
                        ctx.limits.read_ahead_bytes,
                        ctx.conn.read_budget(),
                    );
                    ctx.new_handle(
                        r.id,
                        Worker::File {
                            reader,
                            path: p,
                            served: 0,
                            reach: None,
                            started: Instant::now(),
                            _flight: crate::metrics::InFlight::start("sftp"),
                        },
                    )
                }
                Err(e) => error_status(r.id, &e),
            }
        }
        Packet::OpenDir(r) => {
            let listed = async {
                let p = ctx.vfs.resolve(&root, &r.path)?;
                let lister = ctx.vfs.list(&p).await?;
                if ctx.vfs.is_session(&p) {
                    ctx.conn.listed(&p.to_string());
                }
                Ok::<_, VfsError>(lister)
            };
            match listed.await {
                Ok(lister) => ctx.new_handle(
                    r.id,
                    Worker::Dir {
                        lister,
                        pending: Vec::new(),
                        done: false,
                    },
                ),
                Err(e) => error_status(r.id, &e),
            }
        }
        other => status(
            other.get_request_id(),
            StatusCode::BadMessage,
            "unexpected request",
        ),
    }
}

async fn stat(ctx: &Ctx, id: u32, raw: &str) -> Packet {
    let res = async {
        let p = ctx.vfs.resolve(&VPath::root(), raw)?;
        ctx.vfs.stat(&p).await
    };
    match res.await {
        Ok(e) => Packet::Attrs(Attrs {
            id,
            attrs: attrs(&e),
        }),
        Err(e) => error_status(id, &e),
    }
}

enum Worker {
    File {
        reader: ReadAhead,
        path: VPath,
        served: u64,
        /// The lowest offset read and the highest end, once a read was served.
        reach: Option<(u64, u64)>,
        started: Instant,
        /// Counts the download in flight while the handle is open.
        _flight: crate::metrics::InFlight,
    },
    Dir {
        lister: DirLister,
        pending: Vec<Entry>,
        done: bool,
    },
}

impl Ctx {
    async fn reply(&self, packet: Packet) {
        match Bytes::try_from(packet) {
            Ok(b) => {
                self.out.send(vec![b]).await;
            }
            Err(e) => warn!(error = %e, "cannot encode SFTP reply"),
        }
    }

    async fn to_handle(&self, handle: &str, id: u32, op: HandleOp) {
        let tx = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(handle)
            .cloned();
        match tx {
            Some(tx) if tx.send(op).await.is_ok() => {}
            _ => {
                self.reply(status(id, StatusCode::Failure, "invalid handle"))
                    .await
            }
        }
    }

    /// Registers a handle and starts its worker; returns the HANDLE reply.
    fn new_handle(self: &Arc<Self>, id: u32, worker: Worker) -> Packet {
        let (tx, rx) = mpsc::channel(128);
        let name = {
            let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            if handles.len() >= self.limits.sftp_max_handles {
                return status(
                    id,
                    StatusCode::Failure,
                    "too many open handles: close some first",
                );
            }
            let name = self.next_handle.fetch_add(1, Ordering::Relaxed).to_string();
            handles.insert(name.clone(), tx);
            name
        };
        tokio::spawn(run_worker(self.clone(), worker, rx));
        Packet::Handle(Handle { id, handle: name })
    }
}

async fn run_worker(ctx: Arc<Ctx>, mut w: Worker, mut rx: mpsc::Receiver<HandleOp>) {
    while let Some(op) = rx.recv().await {
        match op {
            HandleOp::Close { id } => {
                ctx.reply(ok(id)).await;
                break;
            }
            HandleOp::Fstat { id } => {
                let reply = match &w {
                    Worker::File { reader, .. } => Packet::Attrs(Attrs {
                        id,
                        attrs: attrs(&reader.file().entry),
                    }),
                    Worker::Dir { .. } => status(id, StatusCode::Failure, "not a file handle"),
                };
                ctx.reply(reply).await;
            }
            HandleOp::Read { id, offset, len } => match &mut w {
                Worker::File {
                    reader,
                    path,
                    served,
                    reach,
                    ..
                } => {
                    let len = len.min(ctx.limits.sftp_max_read);
                    match reader.read(offset, len).await {
                        Ok(Some(parts)) => {
                            let n: usize = parts.iter().map(Bytes::len).sum();
                            *served += n as u64;
                            let end = offset + n as u64;
                            *reach = Some(reach.map_or((offset, end), |(low, high)| {
                                (low.min(offset), high.max(end))
                            }));
                            let mut frame = Vec::with_capacity(parts.len() + 1);
                            frame.push(data_header(id, n as u32));
                            frame.extend(parts);
                            ctx.out.send(frame).await;
                        }
                        Ok(None) => ctx.reply(status(id, StatusCode::Eof, "end of file")).await,
                        Err(e) => {
                            warn!(user = %ctx.conn.user().name, path = %path, error = %e, "read failed");
                            ctx.reply(error_status(id, &e)).await;
                        }
                    }
                }
                Worker::Dir { .. } => {
                    ctx.reply(status(id, StatusCode::Failure, "not a file handle"))
                        .await
                }
            },
            HandleOp::ReadDir { id } => match &mut w {
                Worker::Dir {
                    lister,
                    pending,
                    done,
                } => {
                    let reply = readdir(lister, pending, done, id).await;
                    ctx.reply(reply).await;
                }
                Worker::File { .. } => {
                    ctx.reply(status(id, StatusCode::Failure, "not a folder handle"))
                        .await
                }
            },
        }
    }
    if let Worker::File {
        reader,
        path,
        served,
        reach,
        started,
        ..
    } = &w
    {
        let file = reader.file();
        let (low, high) = reach.unwrap_or((0, 0));
        let complete = high == file.entry.size && (reach.is_some() || file.entry.size == 0);
        ctx.conn
            .downloaded(
                &path.to_string(),
                file,
                low,
                *served,
                complete,
                started.elapsed(),
            )
            .await;
    }
}

async fn readdir(
    lister: &mut DirLister,
    pending: &mut Vec<Entry>,
    done: &mut bool,
    id: u32,
) -> Packet {
    while pending.len() < READDIR_BATCH && !*done {
        match lister.next_batch().await {
            Ok(Some(batch)) => pending.extend(batch),
            Ok(None) => *done = true,
            Err(e) => return error_status(id, &e),
        }
    }
    if pending.is_empty() {
        return status(id, StatusCode::Eof, "end of folder");
    }
    let n = pending.len().min(READDIR_BATCH);
    let now = Utc::now();
    let files = pending
        .drain(..n)
        .map(|e| File {
            filename: e.name.clone(),
            longname: ls_line(&e, now),
            attrs: attrs(&e),
        })
        .collect();
    Packet::Name(Name { id, files })
}

/// An entry's attributes. No numeric owner: recordings belong to no user
/// of the client's machine, and a uid/gid of 0 would contradict the
/// `recvault` owner the long names show.
fn attrs(e: &Entry) -> FileAttributes {
    let t = e.mtime.timestamp().clamp(0, u32::MAX as i64) as u32;
    FileAttributes {
        size: Some(e.size),
        uid: None,
        user: None,
        gid: None,
        group: None,
        permissions: Some(match e.kind {
            Kind::Dir => 0o040555,
            Kind::File => 0o100444,
        }),
        atime: Some(t),
        mtime: Some(t),
    }
}

/// The header of an SSH_FXP_DATA reply carrying `len` bytes that follow it
/// (sent as separate writes, so data is never copied into a frame).
fn data_header(id: u32, len: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(13);
    b.put_u32(9 + len);
    b.put_u8(SSH_FXP_DATA);
    b.put_u32(id);
    b.put_u32(len);
    b.freeze()
}

fn limits_reply(id: u32, l: &Limits) -> Packet {
    let mut data = BytesMut::with_capacity(32);
    data.put_u64(l.sftp_max_packet as u64);
    data.put_u64(l.sftp_max_read as u64);
    // Writes are refused, but clients size their buffers from this; 0 would mean "no limit".
    data.put_u64(32768);
    data.put_u64(l.sftp_max_handles as u64);
    Packet::ExtendedReply(ExtendedReply {
        id,
        data: data.to_vec(),
    })
}

/// `statvfs@openssh.com` (what `df` in `sftp`, sshfs and `rclone about`
/// ask): a read-only file system with no free space. Its size is not
/// known without listing the whole bucket, so it is reported as 0 rather
/// than a made-up figure.
fn statvfs_reply(ctx: &Ctx, id: u32, data: &[u8]) -> Packet {
    let path = data
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| data.get(4..4usize.checked_add(n)?))
        .and_then(|p| std::str::from_utf8(p).ok());
    let Some(path) = path else {
        return status(id, StatusCode::BadMessage, "statvfs: malformed request");
    };
    if let Err(e) = ctx.vfs.resolve(&VPath::root(), path) {
        return error_status(id, &e);
    }
    const ST_RDONLY: u64 = 0x1;
    const ST_NOSUID: u64 = 0x2;
    let mut out = BytesMut::with_capacity(88);
    out.put_u64(4096); // block size
    out.put_u64(4096); // fragment size
    out.put_u64(0); // blocks
    out.put_u64(0); // free blocks
    out.put_u64(0); // blocks available to users
    out.put_u64(0); // inodes
    out.put_u64(0); // free inodes
    out.put_u64(0); // inodes available to users
    out.put_u64(0); // file system id
    out.put_u64(ST_RDONLY | ST_NOSUID);
    out.put_u64(255); // longest name
    Packet::ExtendedReply(ExtendedReply {
        id,
        data: out.to_vec(),
    })
}

/// `rmdir` of a session folder erases the session (users holding `delete`);
/// anything else is refused with the reason.
async fn erase(ctx: &Ctx, id: u32, path: &str) -> Packet {
    let p = match ctx.vfs.resolve(&VPath::root(), path) {
        Ok(p) => p,
        Err(e) => return error_status(id, &e),
    };
    match ctx.vfs.erase(&p).await {
        Ok(n) => {
            ctx.conn.erased(&p.to_string(), n);
            ok(id)
        }
        Err(e) => error_status(id, &e),
    }
}

fn status(id: u32, code: StatusCode, msg: &str) -> Packet {
    Packet::Status(Status {
        id,
        status_code: code,
        error_message: msg.to_string(),
        language_tag: "en-US".to_string(),
    })
}

fn ok(id: u32) -> Packet {
    status(id, StatusCode::Ok, "ok")
}

fn refused(id: u32) -> Packet {
    error_status(id, &VfsError::ReadOnly)
}

/// The one mapping from tree errors to SFTP status codes. Storage details
/// (keys, buckets) are logged, never sent.
fn error_status(id: u32, e: &VfsError) -> Packet {
    match e {
        VfsError::NotFound(_) | VfsError::InvalidPath(crate::vfs::PathError::InvalidName) => {
            status(id, StatusCode::NoSuchFile, &e.to_string())
        }
        VfsError::InvalidPath(_) => status(id, StatusCode::Failure, &e.to_string()),
        VfsError::PermissionDenied(_) | VfsError::ReadOnly => {
            status(id, StatusCode::PermissionDenied, &e.to_string())
        }
        VfsError::NotADirectory(_) | VfsError::IsADirectory(_) | VfsError::Producer(_) => {
            status(id, StatusCode::Failure, &e.to_string())
        }
        VfsError::Storage(inner) => {
            warn!(error = %inner, "storage error");
            let msg = if inner.is_transient() {
                "storage is unavailable right now; try again later"
            } else {
                "storage refused the request; the operator's log has details"
            };
            status(id, StatusCode::Failure, msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_headers_are_well_formed() {
        let h = data_header(7, 3);
        assert_eq!(&h[..], &[0, 0, 0, 12, 103, 0, 0, 0, 7, 0, 0, 0, 3]);
    }

    #[test]
    fn storage_errors_do_not_leak_keys() {
        let e = VfsError::Storage(crate::vfs::Fault::refused(
            "tenants/acme/sessions/x: HTTP 403",
        ));
        let Packet::Status(s) = error_status(1, &e) else {
            panic!()
        };
        assert!(!s.error_message.contains("tenants/"), "{}", s.error_message);
    }
}
