//! The library's error type and the verification findings it maps onto.

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::Serialize;

use crate::verify::VerifyReport;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the library returns. Variants carry the file (bundle-relative
/// where it is inside a bundle), the offset, and the expected and found values.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file or directory that must exist does not.
    #[error("{path}: not found", path = path.display())]
    NotFound {
        /// What was looked for.
        path: PathBuf,
    },
    /// A file does not start with the magic of its kind.
    #[error("{file}: bad magic: expected {expected:?}, found {found:?}")]
    BadMagic {
        /// The file.
        file: String,
        /// The magic the format requires.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// A version or encoding this reader does not know.
    #[error("{file}: unsupported {what}: expected {expected}, found {found}")]
    Unsupported {
        /// The file.
        file: String,
        /// Which field.
        what: &'static str,
        /// The accepted values.
        expected: String,
        /// The value found.
        found: String,
    },
    /// A structure runs past the end of the file.
    #[error("{file}: truncated {what} at offset {offset}: needs {needed} bytes, {available} remain")]
    Truncated {
        /// The file.
        file: String,
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes that remain.
        available: u64,
    },
    /// Bytes remain after the last structure a file declares.
    #[error("{file}: {count} trailing bytes at offset {offset}")]
    TrailingData {
        /// The file.
        file: String,
        /// Where they start.
        offset: u64,
        /// How many.
        count: u64,
    },
    /// A count or length read from a file, or a size, is over a configured limit.
    #[error("{file}: {what} is {found}, over the limit of {limit}")]
    LimitExceeded {
        /// The file.
        file: String,
        /// Which quantity.
        what: &'static str,
        /// The configured limit.
        limit: u64,
        /// The value found.
        found: u64,
    },
    /// Bytes that do not decode, or decode to something the format forbids.
    #[error("{file}: malformed {what} at offset {offset}: {detail}")]
    Malformed {
        /// The file.
        file: String,
        /// What was being decoded.
        what: &'static str,
        /// Where.
        offset: u64,
        /// Why.
        detail: String,
    },
    /// Two values that must agree do not.
    #[error("{file}: {what} mismatch: expected {expected}, found {found}")]
    Mismatch {
        /// The file.
        file: String,
        /// Which value.
        what: &'static str,
        /// The committed or required value.
        expected: String,
        /// The value found.
        found: String,
    },
    /// A JSON document that does not parse or does not match its schema.
    #[error("{file}: invalid JSON: {detail}")]
    Json {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        detail: String,
    },
    /// A path that is not a safe bundle-relative path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A path that is not a regular file where one is required.
    #[error("{path}: expected a regular file, found a {found}")]
    FileType {
        /// The path.
        path: String,
        /// What it is: "symbolic link", "FIFO", "directory", ...
        found: &'static str,
    },
    /// A key or signature file that cannot be used.
    #[error("invalid key file {path}: {detail}")]
    InvalidKey {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The bundle is intact but its signature is not acceptable.
    #[error("{path}: signature: {status}", path = path.display())]
    Signature {
        /// The bundle.
        path: PathBuf,
        /// What was found.
        status: crate::signing::SignatureStatus,
    },
    /// Invalid input handed to the library (builder arguments, lookups).
    #[error("invalid {what}: {detail}")]
    InvalidInput {
        /// What was invalid.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The output path exists and overwriting was not asked for.
    #[error("{path}: already exists (overwrite with force)", path = path.display())]
    OutputExists {
        /// The output path.
        path: PathBuf,
    },
    /// The bundle failed verification; the report lists every finding.
    #[error("{path}: bundle is invalid ({} finding(s)); first: {}", report.findings.len(),
        report.findings.first().map(|f| f.to_string()).unwrap_or_default(), path = path.display())]
    Invalid {
        /// The bundle.
        path: PathBuf,
        /// All findings.
        report: Box<VerifyReport>,
    },
}

impl Error {
    /// An I/O error on `path`; "not found" becomes [`Error::NotFound`].
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Error::NotFound { path: path.into() }
        } else {
            Error::Io { path: path.into(), source }
        }
    }

    pub(crate) fn malformed(file: &str, what: &'static str, offset: u64, detail: impl fmt::Display) -> Self {
        Error::Malformed { file: file.to_string(), what, offset, detail: detail.to_string() }
    }

    pub(crate) fn mismatch(file: &str, what: &'static str, expected: impl fmt::Display, found: impl fmt::Display) -> Self {
        Error::Mismatch { file: file.to_string(), what, expected: expected.to_string(), found: found.to_string() }
    }

    pub(crate) fn truncated(file: &str, what: &'static str, offset: usize, needed: usize, available: usize) -> Self {
        Error::Truncated { file: file.to_string(), what, offset: offset as u64, needed: needed as u64, available: available as u64 }
    }

    pub(crate) fn limit(file: &str, what: &'static str, limit: u64, found: u64) -> Self {
        Error::LimitExceeded { file: file.to_string(), what, limit, found }
    }

    /// The classification of this error as a verification finding.
    pub fn code(&self) -> FindingCode {
        match self {
            Error::Io { .. } => FindingCode::Io,
            Error::NotFound { .. } => FindingCode::Missing,
            Error::BadMagic { .. } => FindingCode::BadMagic,
            Error::Unsupported { .. } => FindingCode::Unsupported,
            Error::Truncated { .. } => FindingCode::Truncated,
            Error::TrailingData { .. } => FindingCode::TrailingData,
            Error::LimitExceeded { .. } => FindingCode::LimitExceeded,
            Error::Malformed { .. } => FindingCode::Malformed,
            Error::Mismatch { what: "hash" | "stored hash" | "blob content hash", .. } => FindingCode::HashMismatch,
            Error::Mismatch { what: "size" | "blob content size", .. } => FindingCode::SizeMismatch,
            Error::Mismatch { .. } => FindingCode::Inconsistent,
            Error::Json { .. } => FindingCode::InvalidJson,
            Error::InvalidPath { .. } => FindingCode::InvalidPath,
            Error::FileType { found: "symbolic link", .. } => FindingCode::Symlink,
            Error::FileType { .. } => FindingCode::NotRegularFile,
            Error::InvalidInput { .. }
            | Error::OutputExists { .. }
            | Error::Invalid { .. }
            | Error::InvalidKey { .. }
            | Error::Signature { .. } => FindingCode::Malformed,
        }
    }

    /// Turns this error into a finding about `path`.
    pub fn into_finding(self, path: &str) -> Finding {
        let code = self.code();
        let (expected, found) = match &self {
            Error::BadMagic { expected, found, .. }
            | Error::Unsupported { expected, found, .. }
            | Error::Mismatch { expected, found, .. } => (Some(expected.clone()), Some(found.clone())),
            Error::LimitExceeded { limit, found, .. } => (Some(format!("at most {limit}")), Some(found.to_string())),
            Error::Truncated { needed, available, .. } => (Some(format!("{needed} bytes")), Some(format!("{available} bytes"))),
            Error::FileType { found, .. } => (Some("regular file".to_string()), Some(found.to_string())),
            _ => (None, None),
        };
        Finding { path: path.to_string(), code, message: self.to_string(), expected, found }
    }
}

/// The class of a verification finding. Stable names, used in `--json` reports.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingCode {
    /// A listed file or blob is absent.
    Missing,
    /// A file or directory no manifest or blob list names.
    Unlisted,
    /// A symbolic link inside the bundle.
    Symlink,
    /// A FIFO, socket, device or other non-regular file.
    NotRegularFile,
    /// A name that is not a safe bundle path, or not the right name for its content.
    InvalidPath,
    /// A file whose size differs from the committed size.
    SizeMismatch,
    /// A file whose BLAKE3 hash differs from the committed hash.
    HashMismatch,
    /// A binary file with the wrong magic.
    BadMagic,
    /// An unknown version or encoding.
    Unsupported,
    /// A structure that runs past the end of its file.
    Truncated,
    /// Bytes after the last declared structure.
    TrailingData,
    /// A count, length or size over a configured limit.
    LimitExceeded,
    /// Bytes that do not decode as the format requires.
    Malformed,
    /// A JSON file that does not parse or breaks its schema.
    InvalidJson,
    /// Two files, or two fields, that must agree and do not.
    Inconsistent,
    /// An I/O error while reading.
    Io,
    /// More findings than the configured limit; the rest are counted, not listed.
    TooManyFindings,
}

impl FindingCode {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingCode::Missing => "missing",
            FindingCode::Unlisted => "unlisted",
            FindingCode::Symlink => "symlink",
            FindingCode::NotRegularFile => "not_regular_file",
            FindingCode::InvalidPath => "invalid_path",
            FindingCode::SizeMismatch => "size_mismatch",
            FindingCode::HashMismatch => "hash_mismatch",
            FindingCode::BadMagic => "bad_magic",
            FindingCode::Unsupported => "unsupported",
            FindingCode::Truncated => "truncated",
            FindingCode::TrailingData => "trailing_data",
            FindingCode::LimitExceeded => "limit_exceeded",
            FindingCode::Malformed => "malformed",
            FindingCode::InvalidJson => "invalid_json",
            FindingCode::Inconsistent => "inconsistent",
            FindingCode::Io => "io",
            FindingCode::TooManyFindings => "too_many_findings",
        }
    }
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// Bundle-relative path of the file or blob concerned.
    pub path: String,
    /// Classification.
    pub code: FindingCode,
    /// Human-readable description.
    pub message: String,
    /// The committed or required value, where there is one.
    pub expected: Option<String>,
    /// The value found, where there is one.
    pub found: Option<String>,
}

impl Finding {
    /// A finding about `path`; the message is prefixed with the path.
    pub fn new(path: &str, code: FindingCode, message: impl fmt::Display) -> Self {
        Finding { path: path.to_string(), code, message: format!("{path}: {message}"), expected: None, found: None }
    }

    /// Sets the expected and found values.
    pub fn with_values(mut self, expected: impl fmt::Display, found: impl fmt::Display) -> Self {
        self.expected = Some(expected.to_string());
        self.found = Some(found.to_string());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}
