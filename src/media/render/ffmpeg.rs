//! The one way recvault runs ffmpeg: quiet fixed flags, stdin/stdout piped,
//! stderr drained in the background (a chatty decoder can never block on a
//! full pipe) and kept for the error message, the child killed when its
//! handle is dropped. Also the named pipes an encoder with two inputs reads.

use std::ffi::OsStr;
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct Ffmpeg {
    child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    errors: JoinHandle<String>,
}

impl Ffmpeg {
    /// Starts `ffmpeg -hide_banner -nostdin -loglevel error ARGS`.
    pub fn spawn<I, S>(args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = tokio::process::Command::new("ffmpeg")
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
        Ok(Self {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            errors,
        })
    }

    /// Feeds `input` to stdin in the background and returns stdout; the
    /// process is reaped once it ends (it ends when its reader goes away).
    pub fn decode(mut self, input: Vec<u8>) -> Result<ChildStdout, String> {
        let stdout = self.stdout.take().ok_or("ffmpeg has no stdout")?;
        let mut stdin = self.stdin.take().ok_or("ffmpeg has no stdin")?;
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            let _ = self.child.wait().await;
        });
        Ok(stdout)
    }

    /// Waits for the end; an error carries ffmpeg's own messages.
    pub async fn finish(mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let status = self.child.wait().await.map_err(|e| e.to_string())?;
        let errors = (&mut self.errors).await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(format!("ffmpeg failed: {}", errors.trim()))
        }
    }
}

/// Sends what `r` produces to `out` as it comes; fails once more than
/// `limit` bytes arrive (`what` names the file in the error). Returns the count.
pub async fn pump<R: AsyncRead + Unpin>(
    r: &mut R,
    out: &mpsc::Sender<Bytes>,
    limit: u64,
    what: &str,
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

/// Opens a named pipe for writing (waits until ffmpeg opens it to read).
pub async fn open_pipe(path: &std::path::Path) -> Result<tokio::fs::File, String> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))
}
