//! The library's error type. Ground floor: it depends only on [`Digest`].
//!
//! One convention for locations: `file` names the file (bundle-relative
//! inside a bundle, a display path elsewhere, with `:LINE` for a line of a
//! text file); `offset` is a byte offset inside it where the format is binary.

use std::fmt;
use std::io;
use std::path::Path;

use crate::digest::Digest;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed underlying error, kept as the `source` of a variant.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a path turned out to be, where a regular file was required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A symbolic link (never followed).
    Symlink,
    /// A directory.
    Directory,
    /// A FIFO (never opened for reading: it could block).
    Fifo,
    /// A Unix socket.
    Socket,
    /// A hard link (an archive entry that names another entry).
    HardLink,
    /// A block device.
    BlockDevice,
    /// A character device.
    CharDevice,
    /// Anything else.
    Other,
}

impl FileKind {
    /// "symbolic link", "FIFO", ...
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Symlink => "symbolic link",
            FileKind::Directory => "directory",
            FileKind::Fifo => "FIFO",
            FileKind::Socket => "socket",
            FileKind::HardLink => "hard link",
            FileKind::BlockDevice => "block device",
            FileKind::CharDevice => "character device",
            FileKind::Other => "special file",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every error the library returns. Variants say what was compared and carry
/// typed expected and found values; callers match on variants, never on text.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an input failed.
    #[error("{file}: {source}")]
    Io {
        /// The file or directory.
        file: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing an output failed (full disk, closed pipe, ...).
    #[error("{file}: cannot write: {source}")]
    Output {
        /// The output.
        file: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file or directory that must exist does not.
    #[error("{file}: not found")]
    NotFound {
        /// What was looked for.
        file: String,
    },
    /// A file changed while it was being read: it ended before the size it
    /// had when opened (truncated by someone else).
    #[error("{file}: changed while being read: ended at offset {offset}, expected {expected} bytes")]
    Changed {
        /// The file.
        file: String,
        /// Where reading stopped.
        offset: u64,
        /// The size it had when opened.
        expected: u64,
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
    /// A count, length or size is over a configured limit.
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
        /// The decoder's error, where there is one.
        #[source]
        source: Option<Source>,
    },
    /// A BLAKE3 hash differs from the committed one.
    #[error("{file}: {what} mismatch: expected {expected}, found {found}")]
    HashMismatch {
        /// The file.
        file: String,
        /// Which hash ("hash", "stored hash", "content hash", "payload hash").
        what: &'static str,
        /// The committed hash.
        expected: Digest,
        /// The hash of what is there.
        found: Digest,
    },
    /// Bytes read on demand are not the bytes the manifest commits to: their
    /// chunk groups, checked through the file's outboard (FORMAT.md §14),
    /// do not lead to the file's committed hash.
    #[error("{file}: bytes {start}..{end} are not what the manifest commits to (checked through {outboard}: {detail})")]
    RangeMismatch {
        /// The file read.
        file: String,
        /// Its outboard.
        outboard: String,
        /// First byte of the chunk groups checked.
        start: u64,
        /// End of the chunk groups checked.
        end: u64,
        /// Which tree node or chunk failed.
        detail: String,
    },
    /// A size differs from the committed one.
    #[error("{file}: {what} mismatch: expected {expected}, found {found}")]
    SizeMismatch {
        /// The file.
        file: String,
        /// Which size ("size", "content size").
        what: &'static str,
        /// The committed size.
        expected: u64,
        /// The size found.
        found: u64,
    },
    /// Two values that must agree do not (across files, or across fields).
    #[error("{file}: {what} mismatch: expected {expected}, found {found}")]
    Inconsistent {
        /// The file holding the value found.
        file: String,
        /// Which value.
        what: &'static str,
        /// The required value.
        expected: String,
        /// The value found.
        found: String,
    },
    /// A value breaks a rule of the format or of the run store (event rules,
    /// references between files).
    #[error("{file}: {rule}: {detail}")]
    Rule {
        /// The file, with `:LINE` for a line of a text file.
        file: String,
        /// Which rule ("logical time", "event id", "blob reference", ...).
        rule: &'static str,
        /// What breaks it.
        detail: String,
    },
    /// A JSON document that does not parse or does not match its schema.
    #[error("{file}: invalid JSON: {detail}")]
    Json {
        /// The file, with `:LINE` for a line of a JSON-lines file.
        file: String,
        /// The parser's message, with line and column.
        detail: String,
    },
    /// A name that is not a safe bundle-relative path.
    #[error("invalid path {name:?}: {reason}")]
    InvalidPath {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Something that is not a regular file where one is required.
    #[error("{file}: expected a regular file, found a {found}")]
    FileType {
        /// The path.
        file: String,
        /// What it is.
        found: FileKind,
    },
    /// A key or signature file that cannot be used.
    #[error("{file}: invalid key file: {detail}")]
    InvalidKey {
        /// The file.
        file: String,
        /// Why.
        detail: String,
    },
    /// Invalid arguments handed to the library (builder input, lookups).
    #[error("invalid {what}: {detail}")]
    InvalidInput {
        /// What was invalid.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The output path exists and replacing it was not asked for.
    #[error("{file}: already exists")]
    Exists {
        /// The output path.
        file: String,
    },
    /// Replacing was asked for, but what is there is not provably ours to replace.
    #[error("{file}: refusing to replace: {reason}")]
    NotReplaceable {
        /// The output path.
        file: String,
        /// Why it is not provably a bundle (or a file this tool wrote).
        reason: String,
    },
    /// zstd failed while compressing.
    #[error("{file}: zstd: {source}")]
    Compression {
        /// What was being compressed.
        file: String,
        /// zstd's error.
        #[source]
        source: io::Error,
    },
    /// The operating system's random source failed.
    #[error("random source: {detail}")]
    Random {
        /// Why.
        detail: String,
    },
    /// Object storage could not be reached or refused a request (network,
    /// credentials, permissions), after retries. Never a statement about a
    /// bundle's validity. Credentials never appear in it.
    #[error("{location}: {detail}")]
    Remote {
        /// The remote, and the object when there is one.
        location: String,
        /// What failed.
        detail: String,
    },
}

impl From<crate::text::InvalidText> for Error {
    fn from(e: crate::text::InvalidText) -> Self {
        Error::InvalidInput { what: e.what, detail: e.detail }
    }
}

impl Error {
    /// An error reading `path`; "not found" becomes [`Error::NotFound`].
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        let file = path.as_ref().display().to_string();
        if source.kind() == io::ErrorKind::NotFound {
            Error::NotFound { file }
        } else {
            Error::Io { file, source }
        }
    }

    /// An error writing the output `path`.
    pub fn output(path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Output { file: path.as_ref().display().to_string(), source }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when a write to a closed pipe caused this error, anywhere in its
    /// source chain (`| head` is not a failure).
    pub fn is_broken_pipe(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe) {
                return true;
            }
            next = e.source();
        }
        false
    }

    pub(crate) fn malformed(file: &str, what: &'static str, offset: u64, detail: impl fmt::Display) -> Self {
        Error::Malformed { file: file.to_string(), what, offset, detail: detail.to_string(), source: None }
    }

    pub(crate) fn inconsistent(file: &str, what: &'static str, expected: impl fmt::Display, found: impl fmt::Display) -> Self {
        Error::Inconsistent { file: file.to_string(), what, expected: expected.to_string(), found: found.to_string() }
    }

    pub(crate) fn truncated(file: &str, what: &'static str, offset: u64, needed: u64, available: u64) -> Self {
        Error::Truncated { file: file.to_string(), what, offset, needed, available }
    }

    pub(crate) fn limit(file: &str, what: &'static str, limit: u64, found: u64) -> Self {
        Error::LimitExceeded { file: file.to_string(), what, limit, found }
    }

    pub(crate) fn rule(file: &str, rule: &'static str, detail: impl fmt::Display) -> Self {
        Error::Rule { file: file.to_string(), rule, detail: detail.to_string() }
    }

    pub(crate) fn input(what: &'static str, detail: impl fmt::Display) -> Self {
        Error::InvalidInput { what, detail: detail.to_string() }
    }

    /// The same error about another file: used where a checker that names a
    /// generic source ("event") reports into a real file or line.
    pub(crate) fn located(self, at: &str) -> Self {
        match self {
            Error::Rule { rule, detail, .. } => Error::Rule { file: at.to_string(), rule, detail },
            Error::Json { detail, .. } => Error::Json { file: at.to_string(), detail },
            Error::HashMismatch { what, expected, found, .. } => Error::HashMismatch { file: at.to_string(), what, expected, found },
            Error::LimitExceeded { what, limit, found, .. } => Error::LimitExceeded { file: at.to_string(), what, limit, found },
            Error::Inconsistent { what, expected, found, .. } => Error::Inconsistent { file: at.to_string(), what, expected, found },
            other => other,
        }
    }
}
