//! Lazy verification (FORMAT.md §14): the bundle is opened after checking
//! only what every read depends on (the manifest, the signature and the
//! documents); the log and the index are then checked through their
//! outboards, chunk group by chunk group, as they are read, and the blob
//! list whole when a blob is first read.

use crate::error::Error;
use crate::format::event::Encoding;
use crate::format::index::IndexReader;
use crate::format::log::LogReader;
use crate::format::outboard::Checked;
use crate::format::signature::SignatureStatus;
use crate::format::{self, Manifest};
use crate::fsutil::ReadFile;

use super::{Documents, Verified, Verifier, VerifyStats};

/// What the log or the index of an open bundle is read through.
pub(crate) type Source = crate::format::outboard::Source<ReadFile>;

/// The outcome of opening lazily.
// (Returned once per open and matched at once: boxing would gain nothing.)
#[allow(clippy::large_enum_variant)]
pub(super) enum LazyOpen {
    /// Opened (Some) or refused with findings (None).
    Lazily(Option<Verified>),
    /// The bundle has no outboards: it must be verified in full.
    NoOutboards,
}

impl Verifier<'_> {
    /// Opens the bundle lazily: no walk of the tree, no hash of the log,
    /// the index or the blobs. `Err` only when the root cannot be examined.
    pub(super) fn verify_lazy(
        &self,
        stats: &mut VerifyStats,
        signature: &mut SignatureStatus,
        encoding: &mut Option<Encoding>,
    ) -> Result<LazyOpen, Error> {
        if !self.check_root()? {
            return Ok(LazyOpen::Lazily(None));
        }
        let Some((manifest, manifest_bytes)) = self.open_manifest(stats, signature) else { return Ok(LazyOpen::Lazily(None)) };
        if !manifest.has_outboards() {
            return Ok(LazyOpen::NoOutboards);
        }
        // The blob list is read and checked when a blob is first asked for:
        // opening costs the same whatever the number of blobs.
        let docs = self.parse_documents(&self.read_documents(&manifest, None, stats));
        let [log, index] = format::OUTBOARDS.map(|(data, outboard)| self.open_checked(&manifest, data, outboard));
        stats.files += 2 * [&log, &index].into_iter().filter(|s| s.is_some()).count() as u64;
        let log_reader =
            log.as_ref().and_then(|l| self.findings.ok(format::EVENTS_FILE, LogReader::new(l, format::EVENTS_FILE, self.limits)));
        let index_reader = index.as_ref().and_then(|i| self.findings.ok(format::INDEX_FILE, IndexReader::new(i, format::INDEX_FILE)));
        if let Some(l) = &log_reader {
            *encoding = Some(l.header().encoding);
            stats.events = l.header().count.into();
            if let Some(ix) = &index_reader {
                self.check_binding(l, ix, &manifest.files[format::EVENTS_FILE].hash);
            }
        }
        self.check_cross_file(&docs, log_reader.as_ref(), index_reader.as_ref(), None);
        Ok(LazyOpen::Lazily(self.lazily_verified(manifest, manifest_bytes, docs, log, index)))
    }

    /// The log or the index, opened with its outboard; sizes checked.
    fn open_checked(&self, manifest: &Manifest, data: &'static str, outboard: &'static str) -> Option<Source> {
        let (entry, outboard_entry) = (&manifest.files[data], &manifest.files[outboard]);
        let file = self.open_committed(&self.root.join(data), data, entry.size)?;
        let outboard_file = self.open_committed(&self.root.join(outboard), outboard, outboard_entry.size)?;
        let checked = Checked::new(file, outboard_file, entry.hash, entry.size, data, outboard);
        self.findings.ok(outboard, checked).map(|c| Source::Checked(Box::new(c)))
    }

    fn lazily_verified(
        &self,
        manifest: Manifest,
        manifest_bytes: Vec<u8>,
        docs: Documents,
        log: Option<Source>,
        index: Option<Source>,
    ) -> Option<Verified> {
        if !self.findings.is_empty() {
            return None;
        }
        let docs = docs.verified(manifest, manifest_bytes)?;
        Some(Verified { docs, log: log?, index: index?, blob_list: None })
    }
}
