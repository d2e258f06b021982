//! `BundleLoader` and `ReplayBundle`: open a bundle only after verifying it,
//! then read events and blobs lazily.

use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::blob::{decode_blob_to, BlobHeader, BlobListView, BlobRecord};
use crate::digest::Digest;
use crate::error::Error;
use crate::event::{Encoding, Event};
use crate::format::{self, BLOB_HEADER_LEN};
use crate::fsutil::open_regular;
use crate::index::IndexView;
use crate::limits::Limits;
use crate::log::LogView;
use crate::manifest::Manifest;
use crate::model::{Dag, Metadata, Snapshot};
use crate::signing::PublicKey;
use crate::verify::{self, Progress, VerifyMode, VerifyReport};

/// Verifies and opens bundles.
#[derive(Clone)]
pub struct BundleLoader<'p> {
    limits: Limits,
    mode: VerifyMode,
    progress: Option<&'p dyn Progress>,
    trusted: Vec<PublicKey>,
    require_signature: bool,
    enforce_signature: bool,
}

impl Default for BundleLoader<'_> {
    fn default() -> Self {
        BundleLoader {
            limits: Limits::default(),
            mode: VerifyMode::Full,
            progress: None,
            trusted: Vec::new(),
            require_signature: false,
            enforce_signature: true,
        }
    }
}

impl<'p> BundleLoader<'p> {
    /// A loader with default limits that verifies fully.
    pub fn new() -> Self {
        BundleLoader::default()
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the verification mode. [`VerifyMode::Fast`] skips hashing: the
    /// bundle's structure and sizes are checked, its bytes are not.
    pub fn mode(mut self, mode: VerifyMode) -> Self {
        self.mode = mode;
        self
    }

    /// Keys whose signatures are trusted.
    pub fn trusted_keys(mut self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        self.trusted.extend(keys);
        self
    }

    /// Refuse unsigned bundles too.
    pub fn require_signature(mut self, require: bool) -> Self {
        self.require_signature = require;
        self
    }

    /// Whether [`BundleLoader::load`] refuses a bundle whose signature is not
    /// acceptable (default true). With false, the status is only reported.
    pub fn enforce_signature(mut self, enforce: bool) -> Self {
        self.enforce_signature = enforce;
        self
    }

    /// Reports progress of hashing to `progress`.
    pub fn progress(mut self, progress: &'p dyn Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Verifies the bundle at `path` and reports every finding. `Err` only
    /// when `path` cannot be examined at all (absent, not a directory).
    pub fn verify(&self, path: impl AsRef<Path>) -> Result<VerifyReport, Error> {
        Ok(verify::verify(path.as_ref(), self.mode, &self.limits, &self.trusted, self.progress)?.0)
    }

    /// True when `report` passes this loader's signature policy.
    pub fn signature_acceptable(&self, report: &VerifyReport) -> bool {
        report.signature.is_acceptable(self.require_signature)
    }

    /// Verifies the bundle and opens it. Any finding is an [`Error::Invalid`]
    /// carrying the whole report; an intact bundle whose signature is not
    /// acceptable is an [`Error::Signature`].
    pub fn load(&self, path: impl AsRef<Path>) -> Result<ReplayBundle, Error> {
        let path = path.as_ref();
        let (report, loaded) = verify::verify(path, self.mode, &self.limits, &self.trusted, self.progress)?;
        let Some(loaded) = loaded else {
            return Err(Error::Invalid { path: path.to_path_buf(), report: Box::new(report) });
        };
        if self.enforce_signature && !self.signature_acceptable(&report) {
            return Err(Error::Signature { path: path.to_path_buf(), status: report.signature });
        }
        Ok(ReplayBundle { root: path.to_path_buf(), limits: self.limits, mode: self.mode, report, loaded })
    }
}

/// A verified bundle. Events are decoded from the log on demand and blobs are
/// read from disk on demand; neither is held in memory whole.
pub struct ReplayBundle {
    root: PathBuf,
    limits: Limits,
    mode: VerifyMode,
    report: VerifyReport,
    loaded: verify::Loaded,
}

impl std::fmt::Debug for ReplayBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBundle").field("root", &self.root).field("bundle_id", &self.loaded.manifest.bundle_id).finish_non_exhaustive()
    }
}

impl ReplayBundle {
    /// The bundle directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// How it was verified before opening.
    pub fn verified(&self) -> VerifyMode {
        self.mode
    }

    /// The verification report (with no findings).
    pub fn report(&self) -> &VerifyReport {
        &self.report
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.loaded.manifest
    }

    /// The manifest's exact bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.loaded.manifest_bytes
    }

    /// Run metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.loaded.metadata
    }

    /// Workflow source.
    pub fn workflow(&self) -> &str {
        &self.loaded.workflow
    }

    /// The compiled DAG.
    pub fn dag(&self) -> &Dag {
        &self.loaded.dag
    }

    /// The snapshot, if the bundle has one.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.loaded.snapshot.as_ref()
    }

    fn log(&self) -> LogView<'_> {
        LogView::new(&self.loaded.log, format::EVENTS_FILE, &self.limits).expect("checked when loading")
    }

    fn index(&self) -> IndexView<'_> {
        IndexView::new(&self.loaded.index, format::INDEX_FILE).expect("checked when loading")
    }

    fn blob_list(&self) -> BlobListView<'_> {
        BlobListView::new(&self.loaded.blob_list, format::BLOB_LIST_FILE, self.limits.max_blobs).expect("checked when loading")
    }

    /// How events are encoded.
    pub fn encoding(&self) -> Encoding {
        self.log().header().encoding
    }

    /// Number of events.
    pub fn event_count(&self) -> u32 {
        self.log().header().count
    }

    /// Number of blobs.
    pub fn blob_count(&self) -> u32 {
        self.blob_list().count()
    }

    /// Every event in log order, decoded one at a time.
    pub fn events(&self) -> impl Iterator<Item = Result<Event, Error>> + '_ {
        self.events_from(0)
    }

    /// Events from `position` on, in log order.
    pub fn events_from(&self, position: u32) -> impl Iterator<Item = Result<Event, Error>> + '_ {
        (position..self.event_count()).map(move |p| {
            // Keep memory bounded on long walks: drop the pages already read.
            if p % verify::RELEASE_EVERY == verify::RELEASE_EVERY - 1 {
                self.loaded.log.release_all();
                self.loaded.index.release_all();
            }
            self.event(p).and_then(|e| e.ok_or_else(|| Error::InvalidInput { what: "event position", detail: p.to_string() }))
        })
    }

    /// The event at `position` (0-based), through the index.
    pub fn event(&self, position: u32) -> Result<Option<Event>, Error> {
        match self.index().offset(position) {
            Some(offset) => self.log().event_at(offset).map(Some),
            None => Ok(None),
        }
    }

    /// The event with `id` and its position, through the index.
    pub fn event_by_id(&self, id: &Uuid) -> Result<Option<(u32, Event)>, Error> {
        match self.index().position_of_id(id) {
            Some(p) => Ok(self.event(p)?.map(|e| (p, e))),
            None => Ok(None),
        }
    }

    /// Position of the first event whose logical time is at least `time`.
    pub fn position_at_time(&self, time: u64) -> Option<u32> {
        let p = self.index().first_position_at_or_after(time);
        (p < self.event_count()).then_some(p)
    }

    /// The first event whose logical time is exactly `time`, and its position.
    pub fn event_at_time(&self, time: u64) -> Result<Option<(u32, Event)>, Error> {
        let Some(p) = self.position_at_time(time) else { return Ok(None) };
        if self.index().time(p) != Some(time) {
            return Ok(None);
        }
        Ok(self.event(p)?.map(|e| (p, e)))
    }

    /// The blob list record for `hash`, if the bundle holds that blob.
    pub fn blob_record(&self, hash: &Digest) -> Result<Option<BlobRecord>, Error> {
        self.blob_list().find(hash)
    }

    /// The record of a blob the bundle must hold; not found otherwise.
    fn listed_blob(&self, hash: &Digest) -> Result<BlobRecord, Error> {
        self.blob_record(hash)?.ok_or_else(|| Error::NotFound { path: PathBuf::from(hash.blob_path()) })
    }

    /// Content hashes of every blob, in order.
    pub fn blob_hashes(&self) -> impl Iterator<Item = Result<Digest, Error>> + '_ {
        let list = self.blob_list();
        (0..list.count()).map(move |i| list.record(i).map(|r| r.header.hash))
    }

    /// Streams a blob's original content into `out`, checking its size and
    /// hash as it goes. On error, `out` may hold a partial prefix.
    pub fn read_blob(&self, hash: &Digest, out: &mut impl Write) -> Result<u64, Error> {
        let record = self.listed_blob(hash)?;
        let rel = hash.blob_path();
        let path = self.root.join(&rel);
        let (file, meta) = open_regular(&path)?;
        if meta.len() != record.stored_size {
            return Err(Error::mismatch(&rel, "size", record.stored_size, meta.len()));
        }
        let mut reader = std::io::BufReader::new(file);
        let mut header = [0u8; BLOB_HEADER_LEN];
        std::io::Read::read_exact(&mut reader, &mut header).map_err(|e| Error::io(&path, e))?;
        let header = BlobHeader::decode(&header, &rel)?;
        if header != record.header {
            return Err(Error::mismatch(&rel, "blob header", format!("{:?}", record.header), format!("{header:?}")));
        }
        decode_blob_to(&header, &mut reader, out, &rel)
    }

    /// A blob's content in memory; refused if larger than the blob size limit.
    pub fn blob(&self, hash: &Digest) -> Result<Vec<u8>, Error> {
        let record = self.listed_blob(hash)?;
        if record.header.size > self.limits.max_blob_size {
            return Err(Error::limit(&hash.blob_path(), "blob size", self.limits.max_blob_size, record.header.size));
        }
        let mut out = Vec::with_capacity(record.header.size as usize);
        self.read_blob(hash, &mut out)?;
        Ok(out)
    }
}
