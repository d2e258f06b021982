//! Format constants and byte layouts of a `.cath-bundle` (v1).
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

/// Length of every magic string.
pub const MAGIC_LEN: usize = 7;
/// Length of `magic | version u32` that starts every binary file.
pub const PREFIX_LEN: usize = MAGIC_LEN + 4;

/// The `format` field of the manifest.
pub const BUNDLE_FORMAT: &str = "cath-bundle";
/// The `bundle_version` field of the manifest.
pub const BUNDLE_VERSION: &str = "1.0";

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
/// Directory of the sharded blob store.
pub const BLOB_DIR: &str = "blobs";

/// Every file a v1 manifest may list, with whether it is optional.
pub const LISTED_FILES: [(&str, bool); 7] = [
    (BLOB_LIST_FILE, false),
    (DAG_FILE, false),
    (INDEX_FILE, false),
    (EVENTS_FILE, false),
    (METADATA_FILE, false),
    (SNAPSHOT_FILE, true),
    (WORKFLOW_FILE, false),
];

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
/// Size of a record's length prefix.
pub const RECORD_PREFIX_LEN: usize = 4;

/// Index magic.
pub const INDEX_MAGIC: [u8; MAGIC_LEN] = *b"CATHIDX";
/// Index version.
pub const INDEX_VERSION: u32 = 1;
/// `magic | version | count | log_hash | log_size`.
pub const INDEX_HEADER_LEN: usize = PREFIX_LEN + 4 + 32 + 8;
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
/// One blob list record.
pub const BLOB_LIST_RECORD_LEN: usize = 32 + 32 + 8 + 8 + 1 + 1 + 6;

/// Blob file magic.
pub const BLOB_MAGIC: [u8; MAGIC_LEN] = *b"CATHBLB";
/// Blob file version.
pub const BLOB_VERSION: u32 = 1;
/// Fixed blob header length; data follows.
pub const BLOB_HEADER_LEN: usize = PREFIX_LEN + 1 + 1 + 3 + 8 + 32;

/// Snapshot magic.
pub const SNAPSHOT_MAGIC: [u8; MAGIC_LEN] = *b"CATHSNP";
/// Snapshot version.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Default zstd level for blobs.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Largest zstd window a reader accepts (log2 of bytes): 128 MiB.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Reads a big-endian u32 at `offset`; the caller has checked the bounds.
pub(crate) fn be_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

/// Reads a big-endian u64 at `offset`; the caller has checked the bounds.
pub(crate) fn be_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_be_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
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
        // The whole magic is compared, all seven bytes.
        assert_eq!(LOG_MAGIC.len(), 7);
    }
}
