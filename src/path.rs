//! `VPath`: the one canonical path type, built only by [`VPath::resolve`].
//!
//! A `VPath` is absolute, has no `.`/`..`/empty components, and each
//! component is a name of `[A-Za-z0-9._-]{1,128}` other than `.` and `..`.
//! Every name the tree can show fits that alphabet, so a path holding any other
//! byte (NUL, `\`, `%`, control characters, non-ASCII) names nothing and is
//! refused here, before it can reach a storage key. `..` at the root stays at
//! the root, as in a chroot: a client can never climb above its tree.

use std::fmt;

/// Longest raw path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Deepest path accepted (the tree itself is five levels deep).
pub const MAX_DEPTH: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VPath(Vec<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("path is deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("no such file: names hold only A-Z a-z 0-9 . _ - (at most {MAX_NAME_BYTES} bytes)")]
    InvalidName,
}

/// Whether `s` can be the name of an entry in the tree.
pub fn is_name(s: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl VPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Resolves `raw` against `cwd` (when relative) into a canonical path.
    pub fn resolve(cwd: &VPath, raw: &str) -> Result<VPath, PathError> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let mut parts = if raw.starts_with('/') {
            Vec::new()
        } else {
            cwd.0.clone()
        };
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name if is_name(name) => {
                    if parts.len() == MAX_DEPTH {
                        return Err(PathError::TooDeep);
                    }
                    parts.push(name.to_string());
                }
                _ => return Err(PathError::InvalidName),
            }
        }
        Ok(VPath(parts))
    }

    /// Parses a path relative to the root (a leading `/` is optional).
    pub fn parse_absolute(raw: &str) -> Result<VPath, PathError> {
        Self::resolve(&VPath::root(), raw)
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last component, `None` at the root.
    pub fn name(&self) -> Option<&str> {
        self.0.last().map(String::as_str)
    }

    /// `self` followed by `other` (a scope and a path inside it).
    pub fn join(&self, other: &VPath) -> VPath {
        let mut v = self.0.clone();
        v.extend(other.0.iter().cloned());
        VPath(v)
    }
}

impl fmt::Display for VPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for p in &self.0 {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(raw: &str) -> Result<String, PathError> {
        VPath::parse_absolute(raw).map(|p| p.to_string())
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(r("").unwrap(), "/");
        assert_eq!(r("/").unwrap(), "/");
        assert_eq!(r("//").unwrap(), "/");
        assert_eq!(r("/2026/11/").unwrap(), "/2026/11");
        assert_eq!(r("2026/./11").unwrap(), "/2026/11");
        assert_eq!(r("/a/b/../c").unwrap(), "/a/c");
    }

    #[test]
    fn dotdot_never_climbs_above_the_root() {
        assert_eq!(r("..").unwrap(), "/");
        assert_eq!(r("../../x").unwrap(), "/x");
        assert_eq!(r("/a/../../b").unwrap(), "/b");
        let cwd = VPath::parse_absolute("/2026").unwrap();
        assert_eq!(
            VPath::resolve(&cwd, "../../../etc").unwrap().to_string(),
            "/etc"
        );
        assert_eq!(VPath::resolve(&cwd, "11").unwrap().to_string(), "/2026/11");
    }

    #[test]
    fn foreign_bytes_are_refused() {
        for bad in [
            "a\\..\\b",
            "%2e%2e/x",
            "a\0b",
            "a b",
            "caf\u{e9}",
            "x\ny",
            "~root",
        ] {
            assert_eq!(r(bad), Err(PathError::InvalidName), "{bad:?}");
        }
    }

    #[test]
    fn long_and_deep_paths_are_refused() {
        assert_eq!(r(&"a".repeat(129)), Err(PathError::InvalidName));
        assert!(r(&"a".repeat(128)).is_ok());
        assert_eq!(r(&"/a".repeat(3000)), Err(PathError::TooLong));
        assert_eq!(r(&"/a".repeat(17)), Err(PathError::TooDeep));
    }
}
