//! The one way recvault runs ffmpeg: quiet fixed flags, stdin/stdout piped,
//! stderr drained in the background (a chatty decoder can never block on a
//! full pipe) and kept for the error message. A supervisor task owns each
//! child: it kills it when its handle is dropped, and when its resident
//! memory passes the limit (`[limits] render_memory_mib`, checked in
//! `/proc` twice a second). Also the named pipes an encoder with two inputs
//! reads.

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Resident memory one ffmpeg may use, in bytes (set once from the limits).
static MEMORY_LIMIT: AtomicU64 = AtomicU64::new(1 << 30);

/// Sets the memory limit of every ffmpeg started from now on.
pub fn set_memory_limit(bytes: u64) {
    MEMORY_LIMIT.store(bytes, Ordering::Relaxed);
}

/// How often the supervisor looks at a child's memory.
const MEMORY_CHECK: Duration = Duration::from_millis(500);

pub struct Ffmpeg {
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    /// The child's end: its status, or why the supervisor killed it.
    ended: oneshot::Receiver<Result<ExitStatus, String>>,
    /// Dropping it tells the supervisor to kill the child.
    _keep: oneshot::Sender<()>,
    errors: JoinHandle<String>,
}

impl Ffmpeg {
    /// Starts `ffmpeg -hide_banner -nostdin -loglevel error ARGS`.
    pub fn spawn<I, S>(args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_limited(args, MEMORY_LIMIT.load(Ordering::Relaxed))
    }

    /// [`Ffmpeg::spawn`] with its own memory limit in bytes.
    pub fn spawn_limited<I, S>(args: I, memory_limit: u64) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = command()
            .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start ffmpeg: {e}"))?;
        let mut stderr = child.stderr.take().ok_or("ffmpeg has no stderr")?;
        let errors = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (keep, dropped) = oneshot::channel();
        let (end_tx, ended) = oneshot::channel();
        tokio::spawn(supervise(child, memory_limit, dropped, end_tx));
        Ok(Self {
            stdin,
            stdout,
            ended,
            _keep: keep,
            errors,
        })
    }

    /// Feeds `input` to stdin in the background and returns stdout; the
    /// process is reaped once it ends (it ends when its reader goes away).
    pub fn decode(self, input: Vec<u8>) -> Result<ChildStdout, String> {
        self.decode_from(std::io::Cursor::new(input))
    }

    /// [`Ffmpeg::decode`] with its input read from `file` (from where it
    /// stands) as the decoder takes it, never whole in memory.
    pub fn decode_file(self, file: std::fs::File) -> Result<ChildStdout, String> {
        self.decode_from(tokio::fs::File::from_std(file))
    }

    fn decode_from(
        mut self,
        mut input: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> Result<ChildStdout, String> {
        let stdout = self.stdout.take().ok_or("ffmpeg has no stdout")?;
        let mut stdin = self.stdin.take().ok_or("ffmpeg has no stdin")?;
        // The task holds `keep` until the end: dropping it kills the child.
        let Ffmpeg {
            ended, _keep: keep, ..
        } = self;
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut input, &mut stdin).await;
            drop(stdin);
            let _ = ended.await;
            drop(keep);
        });
        Ok(stdout)
    }

    /// Waits for the end; an error carries ffmpeg's own messages.
    pub async fn finish(mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let status = (&mut self.ended)
            .await
            .map_err(|_| "ffmpeg supervisor ended".to_string())??;
        let errors = (&mut self.errors).await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(format!("ffmpeg failed: {}", errors.trim()))
        }
    }
}

/// Owns the child until it ends: kills it when its handle is dropped or
/// when it holds more than `limit` bytes of memory, and reports the end.
async fn supervise(
    mut child: Child,
    limit: u64,
    mut dropped: oneshot::Receiver<()>,
    end: oneshot::Sender<Result<ExitStatus, String>>,
) {
    let mut tick = tokio::time::interval(MEMORY_CHECK);
    let result = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| format!("ffmpeg: {e}")),
            _ = &mut dropped => {
                let _ = child.kill().await;
                return;
            }
            _ = tick.tick() => {
                let used = child.id().and_then(resident_bytes).unwrap_or(0);
                if used > limit {
                    let _ = child.kill().await;
                    break Err(format!(
                        "ffmpeg used more than {} MiB of memory and was stopped \
                         ([limits] render_memory_mib)",
                        limit >> 20
                    ));
                }
            }
        }
    };
    let _ = end.send(result);
}

/// A process's resident memory from `/proc/<pid>/status` (`None` without /proc).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The error to report when a render step failed with `e`: an encoder's
/// own message if one of them failed (it usually is the cause: its output
/// ended), else `e`. Encoders still running are killed.
pub async fn explain(e: String, encoders: impl IntoIterator<Item = Ffmpeg>) -> String {
    for mut enc in encoders {
        // A failed encoder has exited (or is exiting); a running one is
        // killed when its handle is dropped.
        let ended = tokio::time::timeout(Duration::from_millis(500), &mut enc.ended).await;
        match ended {
            Ok(Ok(Ok(status))) if !status.success() => {
                let errors = (&mut enc.errors).await.unwrap_or_default();
                return format!("ffmpeg failed: {}", errors.trim());
            }
            // Stopped by its supervisor (memory).
            Ok(Ok(Err(why))) => return why,
            _ => {}
        }
    }
    e
}

/// Sends what `r` produces to `out` as it comes; fails once more than
/// `limit` bytes arrive (`what` names the file in the error). Returns the count.
pub async fn pump<R: AsyncRead + Unpin>(
    r: &mut R,
    out: &mpsc::Sender<Bytes>,
    limit: u64,
    what: &str,
    mut sent: impl FnMut(&[u8]),
) -> Result<u64, String> {
    let mut n = 0u64;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let k = r
            .read(&mut chunk)
            .await
            .map_err(|e| format!("encoder output: {e}"))?;
        if k == 0 {
            return Ok(n);
        }
        n += k as u64;
        if n > limit {
            return Err(format!("the {what} outgrew its reserved size"));
        }
        out.send(Bytes::copy_from_slice(&chunk[..k]))
            .await
            .map_err(|_| "no reader".to_string())?;
        sent(&chunk[..k]);
    }
}

/// Sends exactly the first `n` bytes `r` produces to `out`; fails if it
/// ends sooner. Returns `n`.
pub async fn pump_exact<R: AsyncRead + Unpin>(
    r: &mut R,
    out: &mpsc::Sender<Bytes>,
    n: u64,
    what: &str,
) -> Result<u64, String> {
    let mut left = n;
    let mut chunk = vec![0u8; 256 * 1024];
    while left > 0 {
        let max = chunk.len().min(left as usize);
        let k = r
            .read(&mut chunk[..max])
            .await
            .map_err(|e| format!("encoder output: {e}"))?;
        if k == 0 {
            return Err(format!("the {what} encoder stopped {left} bytes short"));
        }
        left -= k as u64;
        out.send(Bytes::copy_from_slice(&chunk[..k]))
            .await
            .map_err(|_| "no reader".to_string())?;
    }
    Ok(n)
}

/// Reads `r` to its end, discarding what it produces.
pub async fn drain<R: AsyncRead + Unpin>(r: &mut R) {
    let _ = tokio::io::copy(r, &mut tokio::io::sink()).await;
}

/// Discards the first `skip` bytes `r` produces and hands the rest to
/// `keep` as they come. Returns the bytes kept.
pub async fn skip_then<R: AsyncRead + Unpin>(
    r: &mut R,
    mut skip: u64,
    keep: impl Fn(&[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let mut kept = 0u64;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let k = r
            .read(&mut chunk)
            .await
            .map_err(|e| format!("encoder output: {e}"))?;
        if k == 0 {
            return if skip == 0 {
                Ok(kept)
            } else {
                Err("the encoder ended inside the overlap".to_string())
            };
        }
        let from = (skip.min(k as u64)) as usize;
        skip -= from as u64;
        if from < k {
            keep(&chunk[from..k])?;
            kept += (k - from) as u64;
        }
    }
}

/// A private folder holding named pipes `video` and `audio` for an
/// encoder's two inputs (made with `mkfifo`, so no unsafe code here);
/// removed when dropped.
pub struct PipeDir(std::path::PathBuf);

impl PipeDir {
    pub async fn new() -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!(
            "recvault-render-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let pipes = PipeDir(dir);
        for name in ["video", "audio"] {
            let st = tokio::process::Command::new("mkfifo")
                .arg("-m")
                .arg("600")
                .arg(pipes.0.join(name))
                .status()
                .await
                .map_err(|e| format!("mkfifo: {e}"))?;
            if !st.success() {
                return Err(format!("mkfifo in {} failed", pipes.0.display()));
            }
        }
        Ok(pipes)
    }

    pub fn video(&self) -> std::path::PathBuf {
        self.0.join("video")
    }

    pub fn audio(&self) -> std::path::PathBuf {
        self.0.join("audio")
    }

    /// A regular file in the same private folder (removed with it), for an
    /// output the muxer must be able to seek in.
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for PipeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The arguments of one input read from a named pipe: format options, then `-i PIPE`.
pub fn pipe_input<'a>(pipe: &'a std::path::Path, format: &'a [&'a str]) -> Vec<&'a OsStr> {
    let mut a = vec![OsStr::new("-protocol_whitelist"), OsStr::new("file,pipe")];
    a.extend(format.iter().map(OsStr::new));
    a.extend([OsStr::new("-i"), pipe.as_os_str()]);
    a
}

/// Bytes a frame pipe holds (a composed 1280x480 frame is 921,600): with
/// Linux's default of 64 KiB each frame crossed a pipe in 15 writes, each
/// waking the reader, and the context switches cost more CPU than the
/// copies (perf, two-encoder render). 1 MiB is the most an unprivileged
/// process may set by default (`/proc/sys/fs/pipe-max-size`).
const FRAME_PIPE: usize = 1 << 20;

/// Widens a pipe that carries raw frames to [`FRAME_PIPE`]. Only speed
/// depends on it: when the system refuses (a user over its pipe-buffer
/// quota), the pipe keeps its size.
pub fn widen_frame_pipe(fd: impl std::os::fd::AsFd) {
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(fd, FRAME_PIPE) {
        tracing::debug!(error = %e, "frame pipe kept its size");
    }
}

/// Opens a named pipe for writing (waits until ffmpeg opens it to read).
pub async fn open_pipe(path: &std::path::Path) -> Result<tokio::net::unix::pipe::Sender, String> {
    // Opened without blocking: a FIFO has no writer end until ffmpeg opens
    // its reader, and an ffmpeg that died first would leave a blocking
    // open (and its thread) waiting forever. So try until it is there.
    let deadline = tokio::time::Instant::now() + PIPE_OPEN_WAIT;
    loop {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(path) {
            Ok(s) => return Ok(s),
            // ENXIO: no reader yet.
            Err(e) if e.raw_os_error() == Some(6) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) if e.raw_os_error() == Some(6) => {
                return Err(format!(
                    "ffmpeg did not open its input {} within {} s",
                    path.display(),
                    PIPE_OPEN_WAIT.as_secs()
                ))
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
}

/// How long ffmpeg may take to open an input pipe after it starts.
const PIPE_OPEN_WAIT: Duration = Duration::from_secs(60);

/// The command that starts ffmpeg. Where util-linux's `setpriv` exists it
/// runs ffmpeg with a parent-death signal (SIGKILL), so an ffmpeg never
/// outlives a recvault that was killed (SIGKILL, OOM) without unsafe code in
/// recvault; the sweep at start ([`sweep_dead_renders`]) is the backstop.
pub fn command() -> tokio::process::Command {
    static SETPRIV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let setpriv = *SETPRIV.get_or_init(|| {
        std::process::Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if setpriv {
        let mut c = tokio::process::Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "ffmpeg"]);
        c
    } else {
        tokio::process::Command::new("ffmpeg")
    }
}

/// Removes what renders of recvault processes that no longer run left in
/// the temporary folder (their `recvault-render-<pid>-…` folders; spill
/// files are unlinked at creation) and stops any ffmpeg still reading from
/// one. Returns how many folders were removed.
pub fn sweep_dead_renders() -> usize {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return 0;
    };
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let mut dead_dirs = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("recvault-render-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) {
            dead_dirs.push(e.path());
        }
    }
    if dead_dirs.is_empty() {
        return 0;
    }
    // An ffmpeg naming one of those folders on its command line belongs to
    // a dead instance.
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with("ffmpeg\0")
                && dead_dirs
                    .iter()
                    .any(|d| cmdline.contains(&*d.to_string_lossy()))
            {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
    let mut removed = 0;
    for d in dead_dirs {
        if std::fs::remove_dir_all(&d).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// This node's encoder build, `ffmpeg <version>; x264 core <n> r<rev>`
/// (what a session's MP4 bytes depend on besides its RAW and recipe),
/// asked of ffmpeg once; `unknown (why)` when it cannot say.
pub async fn encoder_build() -> &'static str {
    static BUILD: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    BUILD
        .get_or_init(|| async {
            probe_build()
                .await
                .unwrap_or_else(|e| format!("unknown ({e})"))
        })
        .await
}

async fn probe_build() -> Result<String, String> {
    async fn run(args: &[&str]) -> Result<Vec<u8>, String> {
        let out = tokio::process::Command::new("ffmpeg")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(std::time::Duration::from_secs(20), out).await {
            Ok(Ok(o)) if o.status.success() => Ok(o.stdout),
            Ok(Ok(o)) => Err(format!("ffmpeg exited with {}", o.status)),
            Ok(Err(e)) => Err(format!("cannot start ffmpeg: {e}")),
            Err(_) => Err("ffmpeg did not answer in 20 s".into()),
        }
    }
    let version = run(&["-hide_banner", "-version"]).await?;
    let version = String::from_utf8_lossy(&version);
    let ffmpeg = version
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .ok_or("no version in `ffmpeg -version`")?
        .to_string();
    // x264 names itself in the SEI of every stream it writes.
    let h264 = run(&[
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "color=s=16x16:r=10:d=0.1",
        "-frames:v",
        "1",
        "-c:v",
        "libx264",
        "-f",
        "h264",
        "pipe:1",
    ])
    .await?;
    let sei = String::from_utf8_lossy(&h264);
    let core = sei
        .split("x264 - core ")
        .nth(1)
        .map(|rest| {
            rest.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .ok_or("libx264 wrote no version")?;
    Ok(format!("ffmpeg {ffmpeg}; x264 core {core}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ffmpeg_over_its_memory_limit_is_stopped_with_a_clear_error() {
        // A generator that would run for an hour; 1 MiB is less than ffmpeg needs to start.
        let mut f = Ffmpeg::spawn_limited(
            [
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:duration=3600",
                "-f",
                "null",
                "-",
            ],
            1 << 20,
        )
        .unwrap();
        let mut out = f.stdout.take().unwrap();
        let e = f.finish().await.unwrap_err();
        assert!(e.contains("more than 1 MiB of memory"), "{e}");
        let mut rest = Vec::new();
        let _ = out.read_to_end(&mut rest).await;
    }

    #[tokio::test]
    async fn ffmpeg_within_its_limit_ends_normally() {
        let f = Ffmpeg::spawn_limited(
            ["-f", "lavfi", "-i", "sine=duration=0.1", "-f", "null", "-"],
            1 << 30,
        )
        .unwrap();
        f.finish().await.unwrap();
    }

    #[test]
    fn this_process_has_a_resident_size() {
        assert!(resident_bytes(std::process::id()).unwrap() > 0);
    }
}
