//! Bundles in S3-compatible object storage (`schemas/REMOTE.md`): push,
//! pull, list, remove, garbage-collect, and the locks that keep garbage
//! collection from racing a push.
//!
//! Layout under the remote's prefix:
//!
//! ```text
//! blobs/<hh>/<stored-hash>             blob files, byte-identical to a bundle's, named by the
//!                                       BLAKE3 of their stored bytes, shared by every bundle
//! bundles/<bundle-id>/<file>            the bundle's other files (MANIFEST.sig, documents, list, log, index)
//! bundles/<bundle-id>/blobs.cath-remote the stored hash of each blob, in blob-list order
//! bundles/<bundle-id>/MANIFEST.json     written last: the commit point
//! locks/<kind>-<uuid>.json              push and gc locks
//! ```
//!
//! Blobs are named by their *stored* bytes, not their content hash: two
//! bundles may store the same content differently (raw, or zstd at another
//! level), and each must get back exactly the bytes its list commits to.

mod admin;
mod lock;
mod read;
mod store;
mod transfer;

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

pub use admin::{GcSummary, RemoteEntry};
pub use read::RemoteBundle;
pub use transfer::PushSummary;

use crate::error::Error;
use crate::format;

/// The largest manifest a remote reader fetches (FORMAT.md's document limit).
const MAX_MANIFEST: u64 = 64 << 20;

/// Requests in flight at once for blobs.
const CONCURRENCY: usize = 16;

/// A lock not refreshed for this long belongs to a process that died.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// The key of a bundle's file.
fn bundle_key(id: &Uuid, file: &str) -> String {
    format!("bundles/{}/{file}", id.hyphenated())
}

/// The locator file: one stored hash per blob-list record.
const LOCATOR_FILE: &str = "blobs.cath-remote";

/// The key of a stored blob.
fn blob_key(stored: &crate::digest::Digest) -> String {
    let hex = stored.to_hex();
    format!("blobs/{}/{hex}", &hex[..2])
}

/// Parses a locator of `count` lines, each 64 lowercase hex digits and `\n`.
fn parse_locator(bytes: &[u8], count: u32, name: &str) -> Result<Vec<crate::digest::Digest>, Error> {
    let expected = u64::from(count) * 65;
    if bytes.len() as u64 != expected {
        return Err(Error::SizeMismatch { file: name.to_string(), what: "locator size", expected, found: bytes.len() as u64 });
    }
    bytes
        .chunks_exact(65)
        .enumerate()
        .map(|(i, line)| {
            let text = std::str::from_utf8(&line[..64]).ok().filter(|_| line[64] == b'\n');
            text.and_then(|t| crate::digest::Digest::parse(t).ok())
                .ok_or_else(|| Error::malformed(name, "locator line", i as u64 * 65, "expected 64 lowercase hex digits and a newline"))
        })
        .collect()
}

/// The key of a bundle's manifest: it exists exactly when the bundle is committed.
fn manifest_key(id: &Uuid) -> String {
    bundle_key(id, format::MANIFEST_FILE)
}

/// What a lock is for. Push locks exclude gc; gc locks exclude push and gc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum LockKind {
    Push,
    Gc,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Push => "push",
            LockKind::Gc => "gc",
        }
    }

    fn excludes(self, other: LockKind) -> bool {
        self == LockKind::Gc || other == LockKind::Gc
    }
}

/// A remote home for bundles: `s3://bucket/prefix` (credentials, region and
/// endpoint from the standard `AWS_*` environment variables) or
/// `file:///path`.
pub struct Remote {
    store: store::Store,
    stale_after: Duration,
}

impl Remote {
    /// Connects to the remote at `url`. Nothing is requested yet.
    pub fn open(url: &str) -> Result<Self, Error> {
        Ok(Remote { store: store::Store::open(url)?, stale_after: DEFAULT_STALE_AFTER })
    }

    /// Locks older than this (not refreshed) are treated as left by dead
    /// processes. Held locks are refreshed every third of it.
    pub fn stale_after(mut self, after: Duration) -> Self {
        self.stale_after = after;
        self
    }

    /// The remote's URL, as given (it never holds credentials).
    pub fn url(&self) -> &str {
        &self.store.url
    }

    /// Splits `url/<bundle-id>` into the remote and the bundle id, when its
    /// last path segment is a bundle id.
    pub fn split_bundle_url(url: &str) -> Option<(String, Uuid)> {
        let trimmed = url.trim_end_matches('/');
        let (remote, last) = trimmed.rsplit_once('/')?;
        let id = crate::text::parse_uuid("bundle id", last).ok()?;
        (remote.contains("://")).then(|| (remote.to_string(), id))
    }

    /// Connects to the remote of a bundle address `REMOTE/<bundle-id>` and
    /// returns it with the bundle id.
    pub fn open_bundle_url(url: &str) -> Result<(Self, Uuid), Error> {
        let (remote, id) = Remote::split_bundle_url(url).ok_or_else(|| Error::InvalidInput {
            what: "bundle address",
            detail: format!("{url}: a remote bundle is REMOTE/<bundle-id>"),
        })?;
        Ok((Remote::open(&remote)?, id))
    }

    /// True when `text` names a remote rather than a local path.
    pub fn is_remote(text: &str) -> bool {
        text.starts_with("s3://") || text.starts_with("file://")
    }
}
