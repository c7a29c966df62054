//! The only commands an SSH `exec` may name: `md5sum`, `sha1sum` and
//! `sha256sum`, bare or of one file, answered from the hashes recvault
//! recorded (rclone's sftp backend and other sync tools compare files with
//! them). Nothing is executed: the line is parsed here, never handed to a
//! shell, and a file is never read to hash it.
//!
//! As rclone expects: a bare command (its probe, with empty input) prints
//! the hash of empty input; a file whose hash is not recorded (a derived
//! entry not made yet, a session archived before the hash was kept) prints
//! nothing and exits 0, which rclone reads as "no hash" (a non-zero exit
//! would make `rclone copy` discard the file as corrupted); a path that
//! names no file exits 1 with md5sum's message.

use tracing::warn;

use crate::layout::index::Hashes;
use crate::vfs::{VPath, Vfs, VfsError};

/// A hash command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Md5,
    Sha1,
    Sha256,
}

impl Algo {
    fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5sum",
            Algo::Sha1 => "sha1sum",
            Algo::Sha256 => "sha256sum",
        }
    }

    /// The hash of empty input.
    fn empty(self) -> &'static str {
        match self {
            Algo::Md5 => "d41d8cd98f00b204e9800998ecf8427e",
            Algo::Sha1 => "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            Algo::Sha256 => "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        }
    }

    fn pick(self, h: Hashes) -> Option<String> {
        match self {
            Algo::Md5 => h.md5,
            Algo::Sha1 => h.sha1,
            Algo::Sha256 => h.sha256,
        }
    }
}

/// What a command prints and its exit status.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: u32,
}

/// Splits a command line into words as a POSIX shell would for the quoting
/// sync tools use (backslash escapes, single and double quotes); `None`
/// for an unterminated quote or a trailing backslash.
fn words(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(w) = word.take() {
                    out.push(w);
                }
            }
            '\\' => word.get_or_insert_default().push(chars.next()?),
            '\'' => {
                let w = word.get_or_insert_default();
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_default();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => w.push(chars.next()?),
                        c => w.push(c),
                    }
                }
            }
            c => word.get_or_insert_default().push(c),
        }
    }
    out.extend(word);
    Some(out)
}

/// The hash command a line asks for, and its file; `None` for anything else.
pub fn parse(line: &str) -> Option<(Algo, Option<String>)> {
    let words = words(line)?;
    let algo = match words.first()?.as_str() {
        "md5sum" => Algo::Md5,
        "sha1sum" => Algo::Sha1,
        "sha256sum" => Algo::Sha256,
        _ => return None,
    };
    match &words[1..] {
        [] => Some((algo, None)),
        [path] => Some((algo, Some(path.clone()))),
        _ => None,
    }
}

/// Answers a hash command over the user's tree.
pub async fn run(vfs: &Vfs, algo: Algo, path: Option<&str>) -> Output {
    let ok = |stdout: String| Output {
        stdout,
        stderr: String::new(),
        status: 0,
    };
    let Some(path) = path else {
        return ok(format!("{}  -\n", algo.empty()));
    };
    let fail = |why: &str| Output {
        stdout: String::new(),
        stderr: format!("{}: {path}: {why}\n", algo.name()),
        status: 1,
    };
    let hashes = match vfs.resolve(&VPath::root(), path) {
        Ok(p) => vfs.hashes(&p).await,
        Err(e) => Err(e),
    };
    match hashes {
        Ok(h) => ok(algo
            .pick(h)
            .map(|hex| format!("{hex}  {path}\n"))
            .unwrap_or_default()),
        Err(VfsError::IsADirectory(_)) => fail("Is a directory"),
        Err(VfsError::PermissionDenied(_)) => fail("Permission denied"),
        Err(VfsError::NotFound(_) | VfsError::NotADirectory(_) | VfsError::InvalidPath(_)) => {
            fail("No such file or directory")
        }
        Err(e @ (VfsError::Storage(_) | VfsError::Producer(_))) => {
            // Unknown for now: "no hash", never a failure that makes a
            // sync tool throw the file away.
            warn!(%path, error = %e, "hash not available");
            ok(String::new())
        }
        Err(VfsError::ReadOnly) => fail("Permission denied"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_as_rclone_and_people_write_them() {
        assert_eq!(parse("md5sum"), Some((Algo::Md5, None)));
        assert_eq!(
            parse(r"sha1sum /2026/11/23/c\ 1/c\ 1.tar.gz"),
            Some((Algo::Sha1, Some("/2026/11/23/c 1/c 1.tar.gz".into())))
        );
        assert_eq!(
            parse("sha256sum '/a b/c'"),
            Some((Algo::Sha256, Some("/a b/c".into())))
        );
        assert_eq!(
            parse(r#"md5sum "/a \"b\"""#),
            Some((Algo::Md5, Some("/a \"b\"".into())))
        );
        assert_eq!(parse("md5sum a b"), None, "one file at a time");
        assert_eq!(parse("md5sum 'open"), None);
        assert_eq!(parse(r"md5sum a\"), None);
        assert_eq!(parse("echo ${ShellId}%ComSpec%"), None);
        assert_eq!(parse("md5sum; rm -rf /"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("df -k /"), None);
    }

    #[test]
    fn empty_input_hashes_are_the_real_ones() {
        use sha2::Digest as _;
        assert_eq!(Algo::Md5.empty(), hex::encode(md5::Md5::digest(b"")));
        assert_eq!(Algo::Sha1.empty(), hex::encode(sha1::Sha1::digest(b"")));
        assert_eq!(Algo::Sha256.empty(), hex::encode(sha2::Sha256::digest(b"")));
    }
}
