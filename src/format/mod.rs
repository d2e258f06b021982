//! Format constants and byte layouts of a `.cath-bundle` (v1), and the
//! readers and writers of each file.
//!
//! This module is the one place where magic numbers, versions, file names and
//! fixed offsets live. `schemas/FORMAT.md` states the same layouts in prose;
//! the two must agree. All integers are big-endian.
//!
//! ```text
//! events.cath-log   magic "CATHLOG" [7] | version u32 | count u32 | count × (len u32 | record [len])
//!                   version 1: records are postcard, version 2: records are CBOR
//! events.cath-idx   magic "CATHIDX" [7] | version u32 | count u32 | log_hash [32] | log_size u64
//!                   | offsets count × u64 | times count × u64 | ids count × (event_id [16] | position u32)
//! blobs.cath-list   magic "CATHBLS" [7] | version u32 | count u32 | count × record [88]
//!                   record: content_hash [32] | stored_hash [32] | stored_size u64 | content_size u64
//!                           | format u8 | compression u8 | reserved [6] = 0
//! blobs/hh/<hash>   magic "CATHBLB" [7] | version u32 | format u8 | compression u8 | reserved [3] = 0
//!                   | content_size u64 | content_hash [32] | data
//! snapshot.cath-snap magic "CATHSNP" [7] | version u32 | postcard snapshot (rest of file)
//! ```

pub mod archive;
pub(crate) mod blob;
pub(crate) mod event;
pub(crate) mod index;
pub(crate) mod json;
pub(crate) mod log;
pub(crate) mod manifest;
pub(crate) mod model;
pub mod outboard;
pub(crate) mod signature;
pub(crate) mod snapshot;

/// What the readers here read from: a file, or bytes in memory.
pub use crate::fsutil::ReadAt;
pub use blob::{decode_blob_to, encode_blob, BlobFormat, BlobHeader, BlobList, BlobRecord, Compression, EncodedBlob, ListTotals};
pub use event::{EventJson, EventRules};
pub use index::{rebuild as rebuild_index, IndexHeader, IndexReader, Section};
pub use log::{LogHeader, LogReader, LogWriter, RecordWalk};
pub use manifest::{FileEntry, Manifest, SignatureField};
pub use signature::{signed_message, SIGNING_DOMAIN};

use crate::digest::Digest;
use crate::error::Error;

/// Length of every magic string.
pub const MAGIC_LEN: usize = 7;
/// Length of `magic | version u32` that starts every binary file.
pub const PREFIX_LEN: usize = MAGIC_LEN + 4;

/// The `format` field of the manifest.
pub const BUNDLE_FORMAT: &str = "cath-bundle";
/// The `bundle_version` a writer emits: a 1.1 bundle carries outboards of
/// its log and index (§14).
pub const BUNDLE_VERSION: &str = "1.1";
/// The earlier version, still read: a 1.0 bundle has no outboards, so it is
/// only ever verified in full.
pub const BUNDLE_VERSION_1_0: &str = "1.0";

/// File names inside a bundle.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// Run metadata.
pub const METADATA_FILE: &str = "metadata.json";
/// Workflow source, verbatim.
pub const WORKFLOW_FILE: &str = "workflow.cath";
/// Compiled DAG.
pub const DAG_FILE: &str = "dag.json";
/// Binary event log.
pub const EVENTS_FILE: &str = "events.cath-log";
/// Offset index over the event log.
pub const INDEX_FILE: &str = "events.cath-idx";
/// Sorted list of every blob.
pub const BLOB_LIST_FILE: &str = "blobs.cath-list";
/// Optional starting snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot.cath-snap";
/// Outboard of the event log (§14), in a v1.1 bundle.
pub const LOG_OUTBOARD_FILE: &str = "events.cath-log.obao";
/// Outboard of the index (§14), in a v1.1 bundle.
pub const INDEX_OUTBOARD_FILE: &str = "events.cath-idx.obao";
/// Directory of the sharded blob store.
pub const BLOB_DIR: &str = "blobs";
/// The detached signature: the one file the manifest does not list (§13).
pub const SIGNATURE_FILE: &str = "MANIFEST.sig";

/// Every file a v1 manifest may list, with whether it is optional.
pub const LISTED_FILES: [(&str, bool); 9] = [
    (BLOB_LIST_FILE, false),
    (DAG_FILE, false),
    (INDEX_FILE, false),
    (INDEX_OUTBOARD_FILE, false),
    (EVENTS_FILE, false),
    (LOG_OUTBOARD_FILE, false),
    (METADATA_FILE, false),
    (SNAPSHOT_FILE, true),
    (WORKFLOW_FILE, false),
];

/// The outboard files and the file each one is the outboard of (§14).
pub const OUTBOARDS: [(&str, &str); 2] = [(EVENTS_FILE, LOG_OUTBOARD_FILE), (INDEX_FILE, INDEX_OUTBOARD_FILE)];

/// The name of the outboard of `file` (the log or the index), if it has one.
pub fn outboard_of(file: &str) -> Option<&'static str> {
    OUTBOARDS.iter().find(|(data, _)| *data == file).map(|(_, outboard)| *outboard)
}

/// True when a manifest of `version` lists `name` (one of [`LISTED_FILES`]):
/// a 1.0 manifest lists no outboard.
pub fn version_lists(version: &str, name: &str) -> bool {
    version != BUNDLE_VERSION_1_0 || !OUTBOARDS.iter().any(|(_, o)| *o == name)
}

/// Event log magic.
pub const LOG_MAGIC: [u8; MAGIC_LEN] = *b"CATHLOG";
/// Event log version whose records are postcard.
pub const LOG_VERSION_POSTCARD: u32 = 1;
/// Event log version whose records are CBOR.
pub const LOG_VERSION_CBOR: u32 = 2;
/// `magic | version | count`.
pub const LOG_HEADER_LEN: usize = PREFIX_LEN + 4;
/// Offset of the count field in the log header.
pub const LOG_COUNT_OFFSET: usize = PREFIX_LEN;
/// Offset of the version field, in every binary file.
pub const VERSION_OFFSET: usize = MAGIC_LEN;
/// Size of a record's length prefix.
pub const RECORD_PREFIX_LEN: usize = 4;

/// Index magic.
pub const INDEX_MAGIC: [u8; MAGIC_LEN] = *b"CATHIDX";
/// Index version.
pub const INDEX_VERSION: u32 = 1;
/// `magic | version | count | log_hash | log_size`.
pub const INDEX_HEADER_LEN: usize = PREFIX_LEN + 4 + 32 + 8;
/// Offset of the count field in the index header.
pub const INDEX_COUNT_OFFSET: usize = PREFIX_LEN;
/// Offset of the log hash in the index header.
pub const INDEX_LOG_HASH_OFFSET: usize = PREFIX_LEN + 4;
/// Offset of the log size in the index header.
pub const INDEX_LOG_SIZE_OFFSET: usize = INDEX_LOG_HASH_OFFSET + 32;
/// One entry of the offsets section.
pub const INDEX_OFFSET_LEN: usize = 8;
/// One entry of the times section.
pub const INDEX_TIME_LEN: usize = 8;
/// One entry of the id section: `event_id [16] | position u32`.
pub const INDEX_ID_LEN: usize = 16 + 4;
/// Bytes of index per event.
pub const INDEX_BYTES_PER_EVENT: usize = INDEX_OFFSET_LEN + INDEX_TIME_LEN + INDEX_ID_LEN;

/// Blob list magic.
pub const BLOB_LIST_MAGIC: [u8; MAGIC_LEN] = *b"CATHBLS";
/// Blob list version.
pub const BLOB_LIST_VERSION: u32 = 1;
/// `magic | version | count`.
pub const BLOB_LIST_HEADER_LEN: usize = PREFIX_LEN + 4;
/// Offset of the count field in the blob list header.
pub const BLOB_LIST_COUNT_OFFSET: usize = PREFIX_LEN;
/// One blob list record.
pub const BLOB_LIST_RECORD_LEN: usize = 32 + 32 + 8 + 8 + 1 + 1 + 6;
/// Field offsets inside a blob list record.
pub mod record {
    /// `content_hash [32]`.
    pub const CONTENT_HASH: usize = 0;
    /// `stored_hash [32]`.
    pub const STORED_HASH: usize = 32;
    /// `stored_size u64`.
    pub const STORED_SIZE: usize = 64;
    /// `content_size u64`.
    pub const CONTENT_SIZE: usize = 72;
    /// `format u8`.
    pub const FORMAT: usize = 80;
    /// `compression u8`.
    pub const COMPRESSION: usize = 81;
    /// `reserved [6]`, zero.
    pub const RESERVED: usize = 82;
}

/// Blob file magic.
pub const BLOB_MAGIC: [u8; MAGIC_LEN] = *b"CATHBLB";
/// Blob file version.
pub const BLOB_VERSION: u32 = 1;
/// Fixed blob header length; data follows.
pub const BLOB_HEADER_LEN: usize = PREFIX_LEN + 1 + 1 + 3 + 8 + 32;
/// Field offsets inside a blob header.
pub mod blob_header {
    /// `format u8`.
    pub const FORMAT: usize = super::PREFIX_LEN;
    /// `compression u8`.
    pub const COMPRESSION: usize = FORMAT + 1;
    /// `reserved [3]`, zero.
    pub const RESERVED: usize = COMPRESSION + 1;
    /// `content_size u64`.
    pub const CONTENT_SIZE: usize = RESERVED + 3;
    /// `content_hash [32]`.
    pub const CONTENT_HASH: usize = CONTENT_SIZE + 8;
}

/// Snapshot magic.
pub const SNAPSHOT_MAGIC: [u8; MAGIC_LEN] = *b"CATHSNP";
/// Snapshot version.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Default zstd level for blobs.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Largest zstd window a reader accepts (log2 of bytes): 128 MiB.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Path of the blob with content hash `hash`: `blobs/<hh>/<hash>`.
pub fn blob_path(hash: &Digest) -> String {
    let hex = hash.to_hex();
    format!("{BLOB_DIR}/{}/{hex}", &hex[..2])
}

/// True for a shard directory name: two lowercase hex characters.
pub fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && crate::text::is_lower_hex(name)
}

/// The first `i` in `0..n` for which `pred(i)` is false, given that `pred`
/// is true on a prefix and false after it. The slice method of the same
/// name needs the section in memory; sections here are read with `pread`,
/// one probe at a time, so the search is written once for them.
pub(crate) fn partition_point(n: u32, mut pred: impl FnMut(u32) -> Result<bool, Error>) -> Result<u32, Error> {
    let (mut lo, mut hi) = (0u32, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Reads a big-endian u32 at `offset`; the caller has checked the bounds.
pub(crate) fn be_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

/// Reads a big-endian u64 at `offset`; the caller has checked the bounds.
pub(crate) fn be_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_be_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// Checks the `magic | version` prefix every binary file starts with: the
/// full 7-byte `magic`, then a version that must be `version`.
pub(crate) fn check_prefix(bytes: &[u8], file: &str, magic: [u8; MAGIC_LEN], what: &'static str) -> Result<u32, Error> {
    if bytes.len() < PREFIX_LEN {
        return Err(Error::truncated(file, what, 0, PREFIX_LEN as u64, bytes.len() as u64));
    }
    if bytes[..MAGIC_LEN] != magic {
        return Err(Error::BadMagic {
            file: file.to_string(),
            expected: String::from_utf8_lossy(&magic).into_owned(),
            found: String::from_utf8_lossy(&bytes[..MAGIC_LEN]).into_owned(),
        });
    }
    Ok(be_u32(bytes, VERSION_OFFSET))
}

/// The fixed-size header of a binary file of one known version: `len` bytes
/// read from the start of `src`, their magic and version checked.
pub(crate) struct FixedHeader {
    /// What the header is called in errors, e.g. "index header".
    pub what: &'static str,
    /// The magic.
    pub magic: [u8; MAGIC_LEN],
    /// What the version field is called in errors, e.g. "index version".
    pub version_what: &'static str,
    /// The one version this reader knows.
    pub version: u32,
    /// The header's length.
    pub len: usize,
}

impl FixedHeader {
    /// Reads and checks the header of `src` (named `file` in errors).
    pub fn read(&self, src: &dyn crate::fsutil::ReadAt, file: &str) -> Result<Vec<u8>, Error> {
        let mut head = vec![0u8; src.len().min(self.len as u64) as usize];
        src.read_at(0, &mut head)?;
        let version = check_prefix(&head, file, self.magic, self.what)?;
        check_version(file, self.version_what, self.version, version)?;
        if head.len() < self.len {
            return Err(Error::truncated(file, self.what, 0, self.len as u64, head.len() as u64));
        }
        Ok(head)
    }
}

/// Checks a version field against the one version this reader knows.
pub(crate) fn check_version(file: &str, what: &'static str, expected: u32, found: u32) -> Result<(), Error> {
    if found != expected {
        return Err(Error::Unsupported { file: file.to_string(), what, expected: expected.to_string(), found: found.to_string() });
    }
    Ok(())
}

/// Checks that a file of fixed-size items is exactly `header + count × item`
/// bytes long: shorter is truncated, longer has trailing data.
pub(crate) fn check_exact_len(len: u64, file: &str, what: &'static str, header: usize, count: u32, item: usize) -> Result<(), Error> {
    let expected = header as u64 + u64::from(count) * item as u64;
    if len < expected {
        return Err(Error::truncated(file, what, header as u64, expected - header as u64, len.saturating_sub(header as u64)));
    }
    if len > expected {
        return Err(Error::TrailingData { file: file.to_string(), offset: expected, count: len - expected });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_lengths() {
        assert_eq!(LOG_HEADER_LEN, 15);
        assert_eq!(INDEX_HEADER_LEN, 55);
        assert_eq!(INDEX_BYTES_PER_EVENT, 36);
        assert_eq!(BLOB_LIST_RECORD_LEN, 88);
        assert_eq!(BLOB_HEADER_LEN, 56);
        assert_eq!(INDEX_LOG_SIZE_OFFSET, 47);
        assert_eq!(blob_header::CONTENT_HASH + 32, BLOB_HEADER_LEN);
        assert_eq!(record::RESERVED + 6, BLOB_LIST_RECORD_LEN);
        // The whole magic is compared, all seven bytes.
        assert_eq!(LOG_MAGIC.len(), 7);
    }

    #[test]
    fn blob_path_is_sharded() {
        let h = Digest::of(b"abc");
        let hex = h.to_hex();
        assert_eq!(blob_path(&h), format!("blobs/{}/{hex}", &hex[..2]));
    }
}
