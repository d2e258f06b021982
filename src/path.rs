//! Bundle-relative paths as a validated type. A name read from a manifest
//! becomes a [`BundlePath`] before it touches the file system.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A path inside a bundle: `/`-separated, relative, each component a
/// non-empty name of ASCII letters, digits, `.`, `-` and `_`, neither `.` nor `..`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundlePath(String);

/// Longest accepted bundle path, in bytes.
pub const MAX_PATH_LEN: usize = 255;

impl BundlePath {
    /// Validates `text`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let refuse = |reason| Err(Error::InvalidPath { name: text.to_string(), reason });
        if text.is_empty() {
            return refuse("empty path");
        }
        if text.len() > MAX_PATH_LEN {
            return refuse("longer than 255 bytes");
        }
        if text.starts_with('/') {
            return refuse("absolute path");
        }
        for component in text.split('/') {
            if component.is_empty() {
                return refuse("empty component");
            }
            if component == "." || component == ".." {
                return refuse("'.' or '..' component");
            }
            for c in component.chars() {
                match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                    '\0' => return refuse("NUL byte"),
                    '\\' => return refuse("backslash"),
                    ':' => return refuse("drive or stream separator ':'"),
                    c if c.is_control() => return refuse("control character"),
                    c if !c.is_ascii() => return refuse("non-ASCII character"),
                    _ => return refuse("character outside [A-Za-z0-9._-]"),
                }
            }
        }
        Ok(BundlePath(text.to_string()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Joins this path to a bundle root. Safe: every component was validated.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut out = root.to_path_buf();
        out.extend(self.0.split('/'));
        out
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundlePath({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names that must never become paths.
    pub(crate) const HOSTILE: &[&str] = &[
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/./b",
        ".",
        "..",
        "a//b",
        "a/",
        "/",
        "a\\..\\b",
        "C:\\x",
        "c:x",
        "a\0b",
        "a\nb",
        "ａ.json",
        "metadata\u{2024}json",
        "\u{202e}nosj.atad",
        "․․/x",
    ];

    #[test]
    fn refuses_hostile_names() {
        for name in HOSTILE {
            assert!(BundlePath::parse(name).is_err(), "accepted {name:?}");
        }
        assert!(BundlePath::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn accepts_bundle_names() {
        for name in ["metadata.json", "blobs/ab/abcdef", "events.cath-log", "x_y-z.1"] {
            assert_eq!(BundlePath::parse(name).unwrap().as_str(), name);
        }
        let p = BundlePath::parse("blobs/ab/cd").unwrap();
        assert_eq!(p.under(Path::new("/r")), PathBuf::from("/r/blobs/ab/cd"));
    }
}
