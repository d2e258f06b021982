//! Configurable bounds applied to every count, length and size read from a
//! bundle before anything is allocated.

/// Limits a reader or writer enforces. Defaults are documented in `schemas/FORMAT.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest `MANIFEST.json`, `metadata.json` or `dag.json`, and largest `workflow.cath`.
    pub max_document_size: u64,
    /// Largest snapshot file.
    pub max_snapshot_size: u64,
    /// Most events in one log.
    pub max_events: u64,
    /// Longest single encoded event record.
    pub max_record_len: u64,
    /// Most blobs in one bundle.
    pub max_blobs: u64,
    /// Largest uncompressed blob.
    pub max_blob_size: u64,
    /// Largest bundle: sum of every file's size.
    pub max_total_size: u64,
    /// Largest sum of the declared content sizes of zstd-compressed blobs:
    /// bounds the decompression work of a verification, whatever the
    /// compression ratio a bundle claims.
    pub max_decompressed_size: u64,
    /// Most findings listed in a report; the rest are counted.
    pub max_findings: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_document_size: 64 << 20,
            max_snapshot_size: 256 << 20,
            max_events: u32::MAX as u64,
            max_record_len: 16 << 20,
            max_blobs: 100_000_000,
            max_blob_size: 4 << 30,
            max_total_size: 1 << 40,
            max_decompressed_size: 64 << 30,
            max_findings: 10_000,
        }
    }
}

/// A chainable setter for each limit: `Limits::default().max_events(10)`.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        impl Limits {
            $($(#[$doc])* pub fn $field(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            })*
        }
    };
}

setters! {
    /// Sets `max_document_size`.
    max_document_size: u64,
    /// Sets `max_snapshot_size`.
    max_snapshot_size: u64,
    /// Sets `max_events`.
    max_events: u64,
    /// Sets `max_record_len`.
    max_record_len: u64,
    /// Sets `max_blobs`.
    max_blobs: u64,
    /// Sets `max_blob_size`.
    max_blob_size: u64,
    /// Sets `max_total_size`.
    max_total_size: u64,
    /// Sets `max_decompressed_size`.
    max_decompressed_size: u64,
    /// Sets `max_findings`.
    max_findings: usize,
}
