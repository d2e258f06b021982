//! Limit options shared by every command that reads or writes a bundle.

use cathedral_bundle::Limits;

#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Most events in one log.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_events)]
    max_events: u64,
    /// Longest encoded event record, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_record_len)]
    max_record_len: u64,
    /// Largest blob (uncompressed), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_blob_size)]
    max_blob_size: u64,
    /// Largest bundle (sum of all files), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_total_size)]
    max_total_size: u64,
    /// Largest sum of the declared content sizes of compressed blobs, in
    /// bytes: bounds the work of decompressing a bundle.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_decompressed_size)]
    max_decompressed_size: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        limits.max_events = self.max_events;
        limits.max_record_len = self.max_record_len;
        limits.max_blob_size = self.max_blob_size;
        limits.max_total_size = self.max_total_size;
        limits.max_decompressed_size = self.max_decompressed_size;
        limits
    }
}
