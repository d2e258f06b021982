//! What a verification reports: [`VerifyReport`], its [`Finding`]s and their
//! [`FindingCode`]s, and the classification of library errors as findings.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::error::Error;
use crate::format::event::Encoding;
use crate::format::signature::SignatureStatus;

/// How much a verification does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Structure, completeness and sizes; nothing is hashed.
    Fast,
    /// Everything: every byte hashed, every record decoded.
    #[default]
    Full,
    /// Only what is read (FORMAT.md §14): the manifest, the signature and
    /// the documents are hashed when the bundle is opened; the log and the
    /// index are checked chunk group by chunk group, through their
    /// outboards, as they are read; the blob list when a blob is first read,
    /// and the blob then. A bundle without outboards (1.0) is verified in
    /// full instead, and says so.
    Lazy,
}

/// Receives progress of long verifications, in bytes.
pub trait Progress: Sync {
    /// The total number of bytes that will be processed.
    fn start(&self, total_bytes: u64);
    /// `bytes` more were processed.
    fn advance(&self, bytes: u64);
}

/// What a verification looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VerifyStats {
    /// Listed files checked (the manifest included).
    pub files: u64,
    /// Blobs checked.
    pub blobs: u64,
    /// Events decoded (full mode) or declared (fast mode).
    pub events: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Sum of the sizes of every file found.
    pub bytes_total: u64,
}

/// The result of verifying a bundle.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The bundle path as given.
    pub bundle: String,
    /// Fast or full.
    pub mode: VerifyMode,
    /// Every finding, sorted by path then code.
    pub findings: Vec<Finding>,
    /// Findings beyond the configured limit, counted but not listed.
    pub findings_omitted: u64,
    /// What was checked.
    pub stats: VerifyStats,
    /// The signature's state, checked against the trusted keys given.
    pub signature: SignatureStatus,
    /// Event encoding, when the log header could be read.
    #[serde(serialize_with = "ser_encoding")]
    pub encoding: Option<Encoding>,
}

fn ser_encoding<S: serde::Serializer>(e: &Option<Encoding>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_str(e.name()),
        None => s.serialize_none(),
    }
}

impl VerifyReport {
    /// True when nothing was found.
    pub fn is_valid(&self) -> bool {
        self.findings.is_empty() && self.findings_omitted == 0
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
    /// Two files, or two fields, that must agree and do not; or a rule
    /// between files (references, event rules) that does not hold.
    Inconsistent,
    /// An I/O error while reading, or a file that changed while being read.
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

    /// The class of an error met while verifying.
    pub fn of(error: &Error) -> Self {
        use crate::error::FileKind;
        match error {
            Error::Io { .. } | Error::Changed { .. } | Error::Output { .. } => FindingCode::Io,
            Error::NotFound { .. } => FindingCode::Missing,
            Error::BadMagic { .. } => FindingCode::BadMagic,
            Error::Unsupported { .. } => FindingCode::Unsupported,
            Error::Truncated { .. } => FindingCode::Truncated,
            Error::TrailingData { .. } => FindingCode::TrailingData,
            Error::LimitExceeded { .. } => FindingCode::LimitExceeded,
            Error::HashMismatch { .. } | Error::RangeMismatch { .. } => FindingCode::HashMismatch,
            Error::SizeMismatch { .. } => FindingCode::SizeMismatch,
            Error::Inconsistent { .. } | Error::Rule { .. } => FindingCode::Inconsistent,
            Error::Json { .. } => FindingCode::InvalidJson,
            Error::InvalidPath { .. } => FindingCode::InvalidPath,
            Error::FileType { found: FileKind::Symlink, .. } => FindingCode::Symlink,
            Error::FileType { .. } => FindingCode::NotRegularFile,
            _ => FindingCode::Malformed,
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
#[non_exhaustive]
pub struct Finding {
    /// Bundle-relative path of the file or blob concerned.
    pub path: String,
    /// Classification.
    pub code: FindingCode,
    /// Human-readable description. Names come from the bundle: escape them
    /// before printing to a terminal.
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

    /// The finding an error met while verifying `path` stands for.
    pub fn from_error(path: &str, error: &Error) -> Self {
        let code = FindingCode::of(error);
        let values: Option<(String, String)> = match error {
            Error::BadMagic { expected, found, .. }
            | Error::Unsupported { expected, found, .. }
            | Error::Inconsistent { expected, found, .. } => Some((expected.clone(), found.clone())),
            Error::HashMismatch { expected, found, .. } => Some((expected.to_string(), found.to_string())),
            Error::SizeMismatch { expected, found, .. } => Some((expected.to_string(), found.to_string())),
            Error::LimitExceeded { limit, found, .. } => Some((format!("at most {limit}"), found.to_string())),
            Error::Truncated { needed, available, .. } => Some((format!("{needed} bytes"), format!("{available} bytes"))),
            Error::Changed { offset, expected, .. } => Some((format!("{expected} bytes"), format!("{offset} bytes"))),
            Error::FileType { found, .. } => Some(("regular file".to_string(), found.to_string())),
            _ => None,
        };
        let (expected, found) = values.map_or((None, None), |(e, f)| (Some(e), Some(f)));
        Finding { path: path.to_string(), code, message: error.to_string(), expected, found }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

/// Collects findings from many threads, up to a limit.
pub(crate) struct Findings {
    list: Mutex<Vec<Finding>>,
    omitted: AtomicU64,
    max: usize,
}

impl Findings {
    pub fn new(max: usize) -> Self {
        Findings { list: Mutex::new(Vec::new()), omitted: AtomicU64::new(0), max }
    }

    pub fn push(&self, finding: Finding) {
        let mut list = self.list.lock().expect("findings lock");
        if list.len() < self.max {
            list.push(finding);
        } else {
            self.omitted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records `error` as a finding about `path`.
    pub fn error(&self, path: &str, error: Error) {
        self.push(Finding::from_error(path, &error));
    }

    /// Records the error of `result`, if any; returns the value otherwise.
    pub fn ok<T>(&self, path: &str, result: Result<T, Error>) -> Option<T> {
        result.map_err(|e| self.error(path, e)).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.list.lock().expect("findings lock").is_empty() && self.omitted.load(Ordering::Relaxed) == 0
    }

    /// The sorted, deduplicated list and the number omitted.
    pub fn into_sorted(self) -> (Vec<Finding>, u64) {
        let mut list = self.list.into_inner().expect("findings lock");
        list.sort();
        list.dedup();
        let omitted = self.omitted.into_inner();
        if omitted > 0 {
            list.push(Finding::new(
                ".",
                FindingCode::TooManyFindings,
                format!("{omitted} more findings were not listed (limit {})", self.max),
            ));
        }
        (list, omitted)
    }
}
