//! The load generator of `bench/load.sh`: many SSH/SFTP sessions from one
//! process, with exact control over what each has in flight, which OpenSSH's
//! `sftp` cannot give at this scale. It speaks SFTP with hand-built packets
//! over russh, checks every byte it reads against a local copy of the file,
//! and samples the server's resident memory (`/proc/PID/status`) as it goes.
//!
//! Every line it prints on stdout is `key=value` pairs (one phase each) for
//! the script to read; errors go to stderr, the first few of each kind in
//! full. It exits non-zero when any operation failed.
//!
//! ```text
//! cargo run --release --example load -- sessions --port P --user U --key K \
//!     --path /2026/11/23/s/file --expect file --server-pid PID
//! cargo run --release --example load -- cycles --port P --user U --key K --server-pid PID
//! ```
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::{Args, Parser, Subcommand};
use futures::stream::{self, StreamExt};
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

const FXP_INIT: u8 = 1;
const FXP_OPEN: u8 = 3;
const FXP_READ: u8 = 5;
const FXP_REALPATH: u8 = 16;
const FXP_VERSION: u8 = 2;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_NAME: u8 = 104;

/// Longest wait for any one reply before it counts as an error.
const REPLY_WAIT: Duration = Duration::from_secs(120);

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Opens SESSIONS authenticated SFTP sessions, each with the file open;
    /// then every session keeps READS reads of SIZE bytes in flight, all at
    /// once, for ROUNDS rounds; then all close.
    Sessions {
        #[command(flatten)]
        target: Target,
        /// The file's path in the tree.
        #[arg(long)]
        path: String,
        /// A local copy of the file, to check every byte read.
        #[arg(long)]
        expect: PathBuf,
        #[arg(long, default_value_t = 500)]
        sessions: usize,
        #[arg(long, default_value_t = 64)]
        reads: usize,
        #[arg(long, default_value_t = 32 * 1024)]
        size: u32,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Sessions connecting at once.
        #[arg(long, default_value_t = 32)]
        connect_concurrency: usize,
    },
    /// CYCLES times: connect, authenticate, start SFTP, REALPATH ".", disconnect.
    Cycles {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        cycles: usize,
        /// Cycles running at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

#[derive(Args, Clone)]
struct Target {
    #[arg(long)]
    port: u16,
    #[arg(long)]
    user: String,
    /// The user's private key (OpenSSH format).
    #[arg(long)]
    key: PathBuf,
    /// The server's pid, whose memory is sampled.
    #[arg(long)]
    server_pid: u32,
    /// How the server's memory is measured.
    #[arg(long, value_enum, default_value = "rss")]
    memory: Memory,
}

struct AnyHost;

impl client::Handler for AnyHost {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A server's VmRSS or VmHWM in KiB (0 when it cannot be read).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The memory of a server: its process's VmRSS, or for a server that runs
/// a process per connection (OpenSSH's sshd) the proportional set size of
/// the process and all its descendants (shared pages counted once overall).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Memory {
    Rss,
    PssTree,
}

impl Memory {
    fn kib(self, pid: u32) -> u64 {
        match self {
            Memory::Rss => proc_kib(pid, "VmRSS"),
            Memory::PssTree => descendants(pid)
                .into_iter()
                .map(|p| {
                    let s = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                        .unwrap_or_default();
                    s.lines()
                        .find_map(|l| l.strip_prefix("Pss:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                        .unwrap_or(0)
                })
                .sum(),
        }
    }

    /// How often a sample is taken (reading 1000 processes' smaps costs CPU).
    fn every(self) -> Duration {
        match self {
            Memory::Rss => Duration::from_millis(20),
            Memory::PssTree => Duration::from_millis(250),
        }
    }
}

/// `pid` and every process below it.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // The command name may hold spaces: fields start after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// Samples a server's memory until stopped; returns the highest.
struct Sampler {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32, memory: Memory) -> Self {
        let peak = Arc::new(AtomicU64::new(memory.kib(pid)));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                let m = tokio::task::spawn_blocking(move || memory.kib(pid))
                    .await
                    .unwrap_or(0);
                p.fetch_max(m, Ordering::Relaxed);
                tokio::time::sleep(memory.every()).await;
            }
        });
        Self { peak, task }
    }

    fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Errors by kind: counted, the first three of each printed in full.
#[derive(Default)]
struct Errors {
    seen: std::sync::Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

impl Errors {
    fn add(&self, kind: &str, detail: impl std::fmt::Display) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry(kind.to_string()).or_insert(0);
        *n += 1;
        if *n <= 3 {
            eprintln!("load: error ({kind}): {detail}");
        }
    }

    fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

struct Sftp {
    ssh: Handle<AnyHost>,
    rx: ReadHalf<russh::ChannelStream<client::Msg>>,
    tx: WriteHalf<russh::ChannelStream<client::Msg>>,
    next_id: u32,
}

fn put_string(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(s.len() as u32);
    b.put_slice(s);
}

fn frame(payload: BytesMut) -> BytesMut {
    let mut b = BytesMut::with_capacity(payload.len() + 4);
    b.put_u32(payload.len() as u32);
    b.put_slice(&payload);
    b
}

/// A reply's type, id and the rest.
struct Reply {
    ty: u8,
    id: u32,
    body: Bytes,
}

impl Reply {
    fn describe(&self) -> String {
        if self.ty == FXP_STATUS && self.body.len() >= 8 {
            let mut b = self.body.clone();
            let code = b.get_u32();
            let n = (b.get_u32() as usize).min(b.len());
            return format!("status {code}: {}", String::from_utf8_lossy(&b[..n]));
        }
        format!("reply type {}", self.ty)
    }
}

impl Sftp {
    /// Connects, authenticates with the key and starts SFTP (INIT/VERSION).
    async fn open(t: &Target, key: &Arc<PrivateKey>) -> Result<Sftp, String> {
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            ..Default::default()
        });
        let mut ssh = client::connect(config, ("127.0.0.1", t.port), AnyHost)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let auth = ssh
            .authenticate_publickey(&t.user, PrivateKeyWithHashAlg::new(key.clone(), None))
            .await
            .map_err(|e| format!("authenticate: {e}"))?;
        if !auth.success() {
            return Err("authentication refused".into());
        }
        let ch = ssh
            .channel_open_session()
            .await
            .map_err(|e| format!("open channel: {e}"))?;
        ch.request_subsystem(true, "sftp")
            .await
            .map_err(|e| format!("sftp subsystem: {e}"))?;
        let (rx, tx) = tokio::io::split(ch.into_stream());
        let mut s = Sftp {
            ssh,
            rx,
            tx,
            next_id: 1,
        };
        let mut init = BytesMut::new();
        init.put_u8(FXP_INIT);
        init.put_u32(3);
        s.send(frame(init)).await?;
        let v = s.recv().await?;
        if v.ty != FXP_VERSION {
            return Err(format!("expected VERSION, got {}", v.describe()));
        }
        Ok(s)
    }

    async fn send(&mut self, bytes: BytesMut) -> Result<(), String> {
        self.tx
            .write_all(&bytes)
            .await
            .map_err(|e| format!("send: {e}"))?;
        self.tx.flush().await.map_err(|e| format!("send: {e}"))
    }

    async fn recv(&mut self) -> Result<Reply, String> {
        let read = async {
            let len = self.rx.read_u32().await?;
            let mut buf = vec![0u8; len as usize];
            self.rx.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::time::timeout(REPLY_WAIT, read)
            .await
            .map_err(|_| format!("no reply within {} s", REPLY_WAIT.as_secs()))?
            .map_err(|e| format!("receive: {e}"))?;
        let mut b = Bytes::from(buf);
        if b.is_empty() {
            return Err("empty packet".into());
        }
        let ty = b.get_u8();
        let id = if ty == FXP_VERSION || b.len() < 4 {
            0
        } else {
            b.get_u32()
        };
        Ok(Reply { ty, id, body: b })
    }

    fn request(&mut self, ty: u8, body: impl FnOnce(&mut BytesMut)) -> (u32, BytesMut) {
        let id = self.next_id;
        self.next_id += 1;
        let mut b = BytesMut::new();
        b.put_u8(ty);
        b.put_u32(id);
        body(&mut b);
        (id, frame(b))
    }

    async fn call(&mut self, ty: u8, body: impl FnOnce(&mut BytesMut)) -> Result<Reply, String> {
        let (id, bytes) = self.request(ty, body);
        self.send(bytes).await?;
        let r = self.recv().await?;
        if r.id != id {
            return Err(format!("reply to request {} instead of {id}", r.id));
        }
        Ok(r)
    }

    async fn open_file(&mut self, path: &str) -> Result<Bytes, String> {
        let r = self
            .call(FXP_OPEN, |b| {
                put_string(b, path.as_bytes());
                b.put_u32(1); // READ
                b.put_u32(0);
            })
            .await?;
        if r.ty != FXP_HANDLE {
            return Err(format!("open {path}: {}", r.describe()));
        }
        let mut b = r.body;
        let n = (b.get_u32() as usize).min(b.len());
        Ok(b.split_to(n))
    }

    /// Sends `reads` READs of `size` bytes from `start` at once, then takes
    /// their replies in whatever order they come, checking every byte.
    async fn read_burst(
        &mut self,
        handle: &[u8],
        start: u64,
        reads: usize,
        size: u32,
        expect: &[u8],
    ) -> Result<u64, String> {
        let mut pending = HashMap::new();
        let mut burst = BytesMut::new();
        for i in 0..reads {
            let offset = (start + i as u64 * size as u64) % expect.len() as u64;
            let (id, bytes) = self.request(FXP_READ, |b| {
                put_string(b, handle);
                b.put_u64(offset);
                b.put_u32(size);
            });
            pending.insert(id, offset);
            burst.extend_from_slice(&bytes);
        }
        self.send(burst).await?;
        let mut got = 0u64;
        while !pending.is_empty() {
            let r = self.recv().await?;
            let Some(offset) = pending.remove(&r.id) else {
                return Err(format!("reply to unknown request {}", r.id));
            };
            if r.ty != FXP_DATA {
                return Err(format!("read at {offset}: {}", r.describe()));
            }
            let mut b = r.body;
            let n = (b.get_u32() as usize).min(b.len());
            let want_len = (size as u64).min(expect.len() as u64 - offset) as usize;
            let want = &expect[offset as usize..offset as usize + want_len];
            if n != want_len {
                return Err(format!("read at {offset}: {n} bytes instead of {want_len}"));
            }
            if &b[..n] != want {
                return Err(format!("read at {offset}: bytes differ from the file"));
            }
            got += n as u64;
        }
        Ok(got)
    }

    async fn realpath(&mut self) -> Result<(), String> {
        let r = self.call(FXP_REALPATH, |b| put_string(b, b".")).await?;
        if r.ty != FXP_NAME {
            return Err(format!("realpath: {}", r.describe()));
        }
        Ok(())
    }

    async fn close(self) -> Result<(), String> {
        drop((self.rx, self.tx));
        self.ssh
            .disconnect(russh::Disconnect::ByApplication, "bye", "en")
            .await
            .map_err(|e| format!("disconnect: {e}"))
    }
}

fn line(pairs: &[(&str, String)]) {
    let s: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", s.join(" "));
}

#[allow(clippy::too_many_arguments)]
async fn sessions(
    t: Target,
    key: Arc<PrivateKey>,
    path: String,
    expect: Vec<u8>,
    count: usize,
    reads: usize,
    size: u32,
    rounds: usize,
    connect_concurrency: usize,
) -> usize {
    let errors = Arc::new(Errors::default());
    let (pid, memory) = (t.server_pid, t.memory);
    let base = memory.kib(pid);
    line(&[("phase", "start".into()), ("rss_kib", base.to_string())]);

    // Phase 1: every session connected, authenticated, with the file open.
    let began = Instant::now();
    let sampler = Sampler::start(pid, memory);
    let opened: Vec<(Sftp, Bytes)> = stream::iter(0..count)
        .map(|_| {
            let (t, key, path, errors) = (t.clone(), key.clone(), path.clone(), errors.clone());
            async move {
                let mut s = match Sftp::open(&t, &key).await {
                    Ok(s) => s,
                    Err(e) => {
                        errors.add("connect", e);
                        return None;
                    }
                };
                match s.open_file(&path).await {
                    Ok(h) => Some((s, h)),
                    Err(e) => {
                        errors.add("open", e);
                        None
                    }
                }
            }
        })
        .buffer_unordered(connect_concurrency.max(1))
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let connect_peak = sampler.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = memory.kib(pid);
    let n = opened.len();
    line(&[
        ("phase", "connected".into()),
        ("sessions", n.to_string()),
        ("secs", format!("{:.2}", began.elapsed().as_secs_f64())),
        ("rss_kib", idle.to_string()),
        ("peak_rss_kib", connect_peak.to_string()),
        (
            "per_session_kib",
            format!(
                "{:.1}",
                (idle.saturating_sub(base)) as f64 / n.max(1) as f64
            ),
        ),
        ("errors", errors.total().to_string()),
    ]);

    // Phase 2: all sessions with `reads` reads in flight at once, `rounds` times.
    let expect = Arc::new(expect);
    let began = Instant::now();
    let sampler = Sampler::start(pid, memory);
    let bytes = Arc::new(AtomicU64::new(0));
    let burst = (reads as u64) * size as u64;
    let done: Vec<Sftp> = stream::iter(opened.into_iter().enumerate())
        .map(|(i, (mut s, h))| {
            let (expect, errors, bytes) = (expect.clone(), errors.clone(), bytes.clone());
            async move {
                for round in 0..rounds {
                    // Sessions start at different places of the file.
                    let start = (i as u64 * 7 + round as u64) * burst;
                    match s.read_burst(&h, start, reads, size, &expect).await {
                        Ok(n) => {
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.add("read", e);
                            return Some(s);
                        }
                    }
                }
                Some(s)
            }
        })
        .buffer_unordered(count.max(1))
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let secs = began.elapsed().as_secs_f64();
    let read_peak = sampler.stop();
    let moved = bytes.load(Ordering::Relaxed);
    line(&[
        ("phase", "reads".into()),
        ("sessions", n.to_string()),
        ("reads_in_flight", reads.to_string()),
        ("read_size", size.to_string()),
        ("rounds", rounds.to_string()),
        ("bytes", moved.to_string()),
        ("secs", format!("{secs:.2}")),
        (
            "mb_per_s",
            format!("{:.1}", moved as f64 / 1e6 / secs.max(1e-9)),
        ),
        ("peak_rss_kib", read_peak.to_string()),
        ("errors", errors.total().to_string()),
    ]);

    // Phase 3: every session closes; memory should come back.
    let began = Instant::now();
    let closes: Vec<Result<(), String>> = stream::iter(done)
        .map(|s| s.close())
        .buffer_unordered(64)
        .collect()
        .await;
    for e in closes.into_iter().filter_map(Result::err) {
        errors.add("close", e);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    line(&[
        ("phase", "closed".into()),
        ("secs", format!("{:.2}", began.elapsed().as_secs_f64())),
        ("rss_kib", memory.kib(pid).to_string()),
        ("hwm_kib", proc_kib(pid, "VmHWM").to_string()),
        ("errors", errors.total().to_string()),
    ]);
    errors.total()
}

async fn cycles(t: Target, key: Arc<PrivateKey>, count: usize, concurrency: usize) -> usize {
    let errors = Arc::new(Errors::default());
    let pid = t.server_pid;
    let base = proc_kib(pid, "VmRSS");
    line(&[
        ("phase", "cycles-start".into()),
        ("rss_kib", base.to_string()),
    ]);
    let began = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    // The memory curve: RSS after every tenth of the cycles.
    let step = (count / 10).max(1);
    stream::iter(0..count)
        .map(|_| {
            let (t, key, errors, done) = (t.clone(), key.clone(), errors.clone(), done.clone());
            async move {
                let cycle = async {
                    let mut s = Sftp::open(&t, &key).await?;
                    s.realpath().await?;
                    s.close().await
                };
                if let Err(e) = cycle.await {
                    errors.add("cycle", e);
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    line(&[
                        ("phase", "cycles".into()),
                        ("done", n.to_string()),
                        ("secs", format!("{:.2}", began.elapsed().as_secs_f64())),
                        ("rss_kib", proc_kib(t.server_pid, "VmRSS").to_string()),
                        ("errors", errors.total().to_string()),
                    ]);
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<()>()
        .await;
    let secs = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    line(&[
        ("phase", "cycles-end".into()),
        ("cycles", count.to_string()),
        ("secs", format!("{secs:.2}")),
        ("per_s", format!("{:.0}", count as f64 / secs.max(1e-9))),
        ("rss_kib", proc_kib(pid, "VmRSS").to_string()),
        ("hwm_kib", proc_kib(pid, "VmHWM").to_string()),
        ("errors", errors.total().to_string()),
    ]);
    errors.total()
}

fn read_key(path: &PathBuf) -> Arc<PrivateKey> {
    match PrivateKey::read_openssh_file(path) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            eprintln!("load: cannot read the key {}: {e}", path.display());
            std::process::exit(2);
        }
    }
}

#[tokio::main]
async fn main() {
    let errors = match Cli::parse().cmd {
        Cmd::Sessions {
            target,
            path,
            expect,
            sessions: count,
            reads,
            size,
            rounds,
            connect_concurrency,
        } => {
            let key = read_key(&target.key);
            let expect = match std::fs::read(&expect) {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => {
                    eprintln!("load: {} is empty", expect.display());
                    std::process::exit(2);
                }
                Err(e) => {
                    eprintln!("load: cannot read {}: {e}", expect.display());
                    std::process::exit(2);
                }
            };
            sessions(
                target,
                key,
                path,
                expect,
                count,
                reads,
                size,
                rounds,
                connect_concurrency,
            )
            .await
        }
        Cmd::Cycles {
            target,
            cycles: count,
            concurrency,
        } => {
            let key = read_key(&target.key);
            cycles(target, key, count, concurrency).await
        }
    };
    if errors > 0 {
        eprintln!("load: {errors} errors");
        std::process::exit(1);
    }
}
