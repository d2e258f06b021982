//! `BundleLoader` and `ReplayBundle`: open a bundle only after verifying it,
//! then read events and blobs on demand, through the descriptors that were
//! verified.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::digest::Digest;
use crate::error::Error;
use crate::format::blob::{decode_blob_to, BlobHeader, BlobList, BlobRecord};
use crate::format::event::{Encoding, Event};
use crate::format::index::{IndexHeader, IndexReader};
use crate::format::log::{LogHeader, LogReader};
use crate::format::manifest::Manifest;
use crate::format::model::{Dag, Metadata, Snapshot};
use crate::format::signature::{PublicKey, SignatureStatus};
use crate::format::{self, blob_path, BLOB_HEADER_LEN};
use crate::fsutil::{ReadAt, ReadFile, SeqReader};
use crate::limits::Limits;
use crate::verify::{Progress, Verified, Verifier, VerifyMode, VerifyReport};

/// Why a bundle could not be opened.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bundle failed verification; the report lists every finding.
    #[error("{path}: bundle is invalid ({} finding(s)); first: {}", report.findings.len(),
        report.findings.first().map(|f| f.to_string()).unwrap_or_default(), path = path.display())]
    Invalid {
        /// The bundle.
        path: PathBuf,
        /// All findings.
        report: Box<VerifyReport>,
    },
    /// The bundle is intact but its signature is not acceptable.
    #[error("{path}: signature: {}", report.signature, path = path.display())]
    Signature {
        /// The bundle.
        path: PathBuf,
        /// The report, whose `signature` says what was found.
        report: Box<VerifyReport>,
    },
    /// The bundle could not be examined at all.
    #[error(transparent)]
    Error(#[from] Error),
}

/// Verifies and opens bundles.
#[derive(Clone)]
pub struct BundleLoader<'p> {
    limits: Limits,
    mode: VerifyMode,
    without_outboards: VerifyMode,
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
            without_outboards: VerifyMode::Full,
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
    /// [`VerifyMode::Lazy`] opens after checking the manifest, the signature
    /// and the documents, and checks the log and the index as they are read:
    /// a read of changed bytes is then an [`Error::RangeMismatch`].
    pub fn mode(mut self, mode: VerifyMode) -> Self {
        self.mode = mode;
        self
    }

    /// What [`VerifyMode::Lazy`] does with a bundle that has no outboards
    /// (a 1.0 bundle): [`VerifyMode::Full`] (the default) or
    /// [`VerifyMode::Fast`].
    pub fn without_outboards(mut self, mode: VerifyMode) -> Self {
        self.without_outboards = mode;
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
    /// An archive (a regular file, `.cath-bundle.tar.zst`) is verified in
    /// one streaming pass, always fully.
    pub fn verify(&self, path: impl AsRef<Path>) -> Result<VerifyReport, Error> {
        let path = path.as_ref();
        if is_archive(path) {
            return Ok(self.verify_archive(path, crate::verify::archive::Taps::default())?.0);
        }
        Ok(self.verifier(path).run()?.0)
    }

    fn verifier<'a>(&'a self, path: &'a Path) -> Verifier<'a> {
        Verifier::new(path, self.mode, &self.limits, &self.trusted, self.progress).without_outboards(self.without_outboards)
    }

    pub(crate) fn limits_ref(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn trusted_ref(&self) -> &[PublicKey] {
        &self.trusted
    }

    pub(crate) fn progress_ref(&self) -> Option<&'p dyn Progress> {
        self.progress
    }

    pub(crate) fn enforces_signature(&self) -> bool {
        self.enforce_signature
    }

    /// True when `report` passes this loader's signature policy.
    pub fn signature_acceptable(&self, report: &VerifyReport) -> bool {
        report.signature.is_acceptable(self.require_signature)
    }

    /// Verifies the bundle and opens it. Any finding is a
    /// [`LoadError::Invalid`] carrying the whole report; an intact bundle
    /// whose signature is not acceptable is a [`LoadError::Signature`].
    ///
    /// An archive is unpacked, verified in one streaming pass (always
    /// fully), into a private temporary directory under the system's
    /// temporary directory, which is removed when the bundle is dropped.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<ReplayBundle, LoadError> {
        let path = path.as_ref();
        if is_archive(path) {
            return self.load_archive(path);
        }
        let (report, verified) = self.verifier(path).run()?;
        let Some(verified) = verified else {
            return Err(LoadError::Invalid { path: path.to_path_buf(), report: Box::new(report) });
        };
        if self.enforce_signature && !self.signature_acceptable(&report) {
            return Err(LoadError::Signature { path: path.to_path_buf(), report: Box::new(report) });
        }
        // The mode that ran: a lazy open of a bundle without outboards verified in full.
        ReplayBundle::open(path, self.limits, report.mode, report, verified).map_err(LoadError::from)
    }
}

/// True when `path` names a regular file (not a link): a bundle archive
/// rather than a bundle directory.
pub fn is_archive(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// Blobs up to this size are checked in memory before they are shown;
/// larger ones in an anonymous temporary file.
const BLOB_MEMORY_LIMIT: u64 = 64 << 20;

/// A verified bundle. Events are decoded from the log on demand and blobs are
/// read from disk on demand; neither is held in memory whole. Headers were
/// parsed once, when the bundle was verified.
pub struct ReplayBundle {
    root: PathBuf,
    limits: Limits,
    mode: VerifyMode,
    report: VerifyReport,
    verified: Verified,
    log_header: LogHeader,
    index_header: IndexHeader,
    /// The blob list, checked; filled on first use after a lazy open.
    blob_list: std::sync::OnceLock<crate::fsutil::Contents>,
    blob_count: u32,
    /// The temporary directory an archive was unpacked into, removed on drop.
    _scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for ReplayBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBundle")
            .field("root", &self.root)
            .field("bundle_id", &self.verified.docs.manifest.bundle_id)
            .finish_non_exhaustive()
    }
}

impl ReplayBundle {
    fn open(root: &Path, limits: Limits, mode: VerifyMode, report: VerifyReport, mut verified: Verified) -> Result<Self, Error> {
        let log_header = LogReader::new(&verified.log, format::EVENTS_FILE, &limits)?.header();
        let index_header = IndexReader::new(&verified.index, format::INDEX_FILE)?.header();
        let blob_list = std::sync::OnceLock::new();
        let blob_count = match verified.blob_list.take() {
            Some(contents) => {
                let count = BlobList::new(&contents, format::BLOB_LIST_FILE, limits.max_blobs)?.count();
                let _ = blob_list.set(contents);
                count
            }
            // Read on first use, and checked then against this count.
            None => u32::try_from(verified.docs.manifest.blob_count)
                .map_err(|_| Error::limit(format::MANIFEST_FILE, "blob_count", u32::MAX.into(), verified.docs.manifest.blob_count))?,
        };
        let (root, _scratch) = (root.to_path_buf(), None);
        Ok(ReplayBundle { root, limits, mode, report, verified, log_header, index_header, blob_list, blob_count, _scratch })
    }

    /// Opens a bundle unpacked (and verified fully) into `scratch`, which
    /// lives as long as the bundle.
    pub(super) fn open_unpacked(
        scratch: tempfile::TempDir,
        limits: Limits,
        report: VerifyReport,
        verified: Verified,
    ) -> Result<Self, Error> {
        let mut bundle = ReplayBundle::open(scratch.path(), limits, VerifyMode::Full, report, verified)?;
        bundle._scratch = Some(scratch);
        Ok(bundle)
    }

    /// The bundle directory (for an archive, the temporary directory it
    /// was unpacked into).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// How it was verified before opening.
    pub fn verified(&self) -> VerifyMode {
        self.mode
    }

    /// For a bundle opened lazily, the chunk groups of the log and the index
    /// read and checked so far (FORMAT.md §14); None when it was verified
    /// before opening.
    pub fn groups_checked(&self) -> Option<u64> {
        let (log, index) = (self.verified.log.groups_checked()?, self.verified.index.groups_checked()?);
        Some(log + index)
    }

    /// The verification report (with no findings).
    pub fn report(&self) -> &VerifyReport {
        &self.report
    }

    /// The signature's state.
    pub fn signature(&self) -> &SignatureStatus {
        &self.report.signature
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.verified.docs.manifest
    }

    /// The manifest's exact bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.verified.docs.manifest_bytes
    }

    /// Run metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.verified.docs.metadata
    }

    /// Workflow source.
    pub fn workflow(&self) -> &str {
        &self.verified.docs.workflow
    }

    /// The compiled DAG.
    pub fn dag(&self) -> &Dag {
        &self.verified.docs.dag
    }

    /// The snapshot, if the bundle has one.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.verified.docs.snapshot.as_ref()
    }

    fn log(&self) -> LogReader<'_> {
        LogReader::with_header(&self.verified.log, self.log_header, format::EVENTS_FILE, &self.limits)
    }

    fn index(&self) -> IndexReader<'_> {
        IndexReader::with_header(&self.verified.index, format::INDEX_FILE, self.index_header)
    }

    fn blob_list(&self) -> Result<BlobList<'_>, Error> {
        let contents = match self.blob_list.get() {
            Some(contents) => contents,
            None => {
                let _ = self.blob_list.set(self.load_blob_list()?);
                self.blob_list.get().expect("set above")
            }
        };
        Ok(BlobList::with_count(contents, format::BLOB_LIST_FILE, self.blob_count))
    }

    /// The blob list of a lazily opened bundle: size, hash, count and order
    /// checked (FORMAT.md §7), as a full verification checks them.
    fn load_blob_list(&self) -> Result<crate::fsutil::Contents, Error> {
        let name = format::BLOB_LIST_FILE;
        let entry = &self.manifest().files[name];
        let limit =
            self.limits.max_blobs.saturating_mul(format::BLOB_LIST_RECORD_LEN as u64).saturating_add(format::BLOB_LIST_HEADER_LEN as u64);
        if entry.size > limit {
            return Err(Error::limit(name, "file size", limit, entry.size));
        }
        let file = ReadFile::open(&self.root.join(name), name)?;
        if file.size() != entry.size {
            return Err(Error::SizeMismatch { file: name.into(), what: "size", expected: entry.size, found: file.size() });
        }
        let contents = crate::fsutil::Contents::load(file)?;
        let actual = crate::fsutil::hash(&contents, name, &|_| {})?;
        if actual != entry.hash {
            return Err(Error::HashMismatch { file: name.into(), what: "hash", expected: entry.hash, found: actual });
        }
        let list = BlobList::new(&contents, name, self.limits.max_blobs)?;
        if list.count() != self.blob_count {
            return Err(Error::inconsistent(name, "count (the manifest's blob_count)", self.blob_count, list.count()));
        }
        list.scan()?;
        Ok(contents)
    }

    /// How events are encoded.
    pub fn encoding(&self) -> Encoding {
        self.log_header.encoding
    }

    /// Number of events.
    pub fn event_count(&self) -> u32 {
        self.log_header.count
    }

    /// Number of blobs.
    pub fn blob_count(&self) -> u32 {
        self.blob_count
    }

    /// Every event in log order, decoded one at a time.
    pub fn events(&self) -> impl Iterator<Item = Result<Event, Error>> + '_ {
        self.events_from(0)
    }

    /// A walk over the records from `position` on (none past the end), for
    /// callers that frame records in batches where the reader holds them
    /// ([`RecordWalk::next_batch`](crate::format::RecordWalk::next_batch)).
    pub fn records_from(&self, position: u32) -> Result<Option<crate::format::RecordWalk<'_>>, Error> {
        Ok(self.index().offset(position)?.map(|offset| self.log().walk_from(offset, position)))
    }

    /// Calls `f` with each record from `position` on, undecoded (its offset
    /// in the log and its bytes, borrowed from the read buffer), in log
    /// order, until `f` returns `Ok(false)` or the log ends.
    pub fn visit_records(&self, position: u32, mut f: impl FnMut(u64, &[u8]) -> Result<bool, Error>) -> Result<(), Error> {
        let Some(mut walk) = self.records_from(position)? else { return Ok(()) };
        while let Some((offset, record)) = walk.next_record()? {
            if !f(offset, record)? {
                break;
            }
        }
        Ok(())
    }

    /// Calls `f` with each event from `position` on, in log order, its
    /// payload borrowed from the read buffer (no copy for postcard logs),
    /// until `f` returns `Ok(false)` or the log ends.
    pub fn visit_events(
        &self,
        position: u32,
        mut f: impl FnMut(u32, crate::format::event::EventRef<'_>) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let encoding = self.encoding();
        let mut at = position;
        self.visit_records(position, |offset, record| {
            let more = Event::with_decoded(record, encoding, format::EVENTS_FILE, offset, |e| f(at, e))??;
            at += 1;
            Ok(more)
        })
    }

    /// Events from `position` on, in log order, read sequentially.
    pub fn events_from(&self, position: u32) -> impl Iterator<Item = Result<Event, Error>> + '_ {
        let (mut walk, mut failed) = (None, None);
        match self.index().offset(position) {
            Ok(Some(offset)) => walk = Some(self.log().walk_from(offset, position)),
            Ok(None) => {}
            Err(e) => failed = Some(e),
        }
        let encoding = self.log_header.encoding;
        std::iter::from_fn(move || {
            if let Some(e) = failed.take() {
                return Some(Err(e));
            }
            let next = walk.as_mut()?.next_record();
            match next {
                Ok(Some((offset, record))) => Some(Event::decode(record, encoding, format::EVENTS_FILE, offset)),
                Ok(None) => {
                    walk = None;
                    None
                }
                Err(e) => {
                    walk = None;
                    Some(Err(e))
                }
            }
        })
    }

    /// The event at `position` (0-based), through the index.
    pub fn event(&self, position: u32) -> Result<Option<Event>, Error> {
        match self.index().offset(position)? {
            Some(offset) => self.log().event_at(offset).map(Some),
            None => Ok(None),
        }
    }

    /// The event with `id` and its position, through the index. The event
    /// read must carry `id` (a lazily opened bundle's index was not checked
    /// against the log as a whole).
    pub fn event_by_id(&self, id: &Uuid) -> Result<Option<(u32, Event)>, Error> {
        let Some(p) = self.index().position_of_id(id)? else { return Ok(None) };
        let event =
            self.event(p)?.ok_or_else(|| Error::inconsistent(format::INDEX_FILE, "indexed position", "below the event count", p))?;
        if event.event_id != *id {
            return Err(Error::inconsistent(
                format::INDEX_FILE,
                "id of the event at the indexed position",
                id,
                format!("{} (position {p})", event.event_id),
            ));
        }
        Ok(Some((p, event)))
    }

    /// Position of the event with `id`, through the index, without reading the log.
    pub fn position_of_id(&self, id: &Uuid) -> Result<Option<u32>, Error> {
        self.index().position_of_id(id)
    }

    /// Position of the first event whose logical time is at least `time`.
    pub fn position_at_time(&self, time: u64) -> Result<Option<u32>, Error> {
        let p = self.index().first_position_at_or_after(time)?;
        Ok((p < self.event_count()).then_some(p))
    }

    /// The first event whose logical time is exactly `time`, and its position.
    pub fn event_at_time(&self, time: u64) -> Result<Option<(u32, Event)>, Error> {
        let Some(p) = self.index().position_of_time(time)? else { return Ok(None) };
        let event =
            self.event(p)?.ok_or_else(|| Error::inconsistent(format::INDEX_FILE, "indexed position", "below the event count", p))?;
        if event.logical_time != time {
            let found = format!("{} (position {p})", event.logical_time);
            return Err(Error::inconsistent(format::INDEX_FILE, "logical time of the event at the indexed position", time, found));
        }
        Ok(Some((p, event)))
    }

    /// The blob list record for `hash`, if the bundle holds that blob.
    pub fn blob_record(&self, hash: &Digest) -> Result<Option<BlobRecord>, Error> {
        self.blob_list()?.find(hash)
    }

    /// Every blob list record, in order.
    pub fn blob_records(&self) -> impl Iterator<Item = Result<BlobRecord, Error>> + '_ {
        let (list, failed) = match self.blob_list() {
            Ok(list) => (Some(list), None),
            Err(e) => (None, Some(Err(e))),
        };
        failed.into_iter().chain(list.into_iter().flat_map(move |l| l.records(0..self.blob_count)))
    }

    /// Streams a blob's original content into `out`. Nothing reaches `out`
    /// before the content's size and hash are checked: the content is
    /// decoded into memory (up to 64 MiB) or an anonymous temporary file
    /// first. Errors writing to `out` are [`Error::Output`].
    pub fn read_blob(&self, hash: &Digest, out: &mut impl Write) -> Result<u64, Error> {
        let record = self.blob_record(hash)?.ok_or_else(|| Error::NotFound { file: blob_path(hash) })?;
        if record.header.size > self.limits.max_blob_size {
            return Err(Error::limit(&blob_path(hash), "blob content size", self.limits.max_blob_size, record.header.size));
        }
        if record.header.size <= BLOB_MEMORY_LIMIT {
            let mut content = Vec::with_capacity(record.header.size as usize);
            let n = self.decode_blob(&record, &mut content)?;
            out.write_all(&content).map_err(|e| Error::output("<output>", e))?;
            return Ok(n);
        }
        let mut spool = tempfile::tempfile().map_err(|e| Error::output(std::env::temp_dir(), e))?;
        let n = self.decode_blob(&record, &mut std::io::BufWriter::new(&mut spool))?;
        spool.rewind().map_err(|e| Error::output("<temporary file>", e))?;
        std::io::copy(&mut spool, out).map_err(|e| Error::output("<output>", e))?;
        Ok(n)
    }

    /// Decodes a blob into `sink`, checked against its record; `sink` holds
    /// unverified bytes until this returns `Ok`.
    fn decode_blob(&self, record: &BlobRecord, sink: &mut impl Write) -> Result<u64, Error> {
        let rel = blob_path(&record.header.hash);
        let file = ReadFile::open(&self.root.join(&rel), &rel)?;
        if file.size() != record.stored_size {
            return Err(Error::SizeMismatch { file: rel, what: "size", expected: record.stored_size, found: file.size() });
        }
        let mut head = [0u8; BLOB_HEADER_LEN];
        file.read_at(0, &mut head)?;
        let header = BlobHeader::decode(&head, &rel)?;
        if header != record.header {
            return Err(Error::inconsistent(&rel, "blob header", format!("{:?}", record.header), format!("{header:?}")));
        }
        let mut data = SeqReader::new(&file, &rel, BLOB_HEADER_LEN as u64, false).with_window(1 << 20);
        let n = decode_blob_to(&header, &mut data, sink, &rel)?;
        sink.flush().map_err(|e| Error::output("<temporary file>", e))?;
        Ok(n)
    }

    /// A blob's content in memory; refused if larger than the blob size limit.
    pub fn blob(&self, hash: &Digest) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.read_blob(hash, &mut out)?;
        Ok(out)
    }
}
