//! Verification of a bundle directory: every listed file, every blob, and
//! every file nobody listed. Findings are collected, not returned one by one.
//!
//! Passes (FORMAT.md §10):
//! 1. `MANIFEST.json` is read (bounded), parsed strictly and checked; the
//!    signature is checked against it.
//! 2. The blob list is read, hashed and scanned once (order, totals); the
//!    limits on total size and on decompressed size are applied before any
//!    other file is read.
//! 3. [`tree`]: the tree is walked without following links while, in full
//!    mode, [`blobs`] hashes every listed blob in parallel.
//! 4. The documents are read and parsed from the bytes that were hashed.
//! 5. [`events`]: the log is hashed and decoded in one pass and checked
//!    against the index, exactly; the index is hashed alongside, and
//!    [`outboards`] hashes each outboard and rebuilds it from its file.
//! 6. Cross-file rules: counts, references, the snapshot against the log.

pub(crate) mod archive;
mod blobs;
mod events;
mod lazy;
mod outboards;
pub(crate) mod report;
mod tree;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::digest::Digest;
use crate::error::Error;
use crate::format::blob::{BlobList, ListTotals};
use crate::format::index::IndexReader;
use crate::format::log::LogReader;
use crate::format::manifest::{Manifest, SignatureField};
use crate::format::model::{Dag, Metadata, Snapshot};
use crate::format::signature::{self, PublicKey, SignatureStatus};
use crate::format::{self, json};
use crate::fsutil::{self, Contents, ReadFile};
use crate::limits::Limits;
pub(crate) use events::EventTap;
pub(crate) use lazy::Source;
use report::Findings;
pub use report::{Finding, FindingCode, Progress, VerifyMode, VerifyReport, VerifyStats};

/// The documents of a valid bundle, directory or archive.
pub(crate) struct VerifiedDocs {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub metadata: Metadata,
    pub workflow: String,
    pub dag: Dag,
    pub snapshot: Option<Snapshot>,
}

/// Everything a successful verification read, for `ReplayBundle`. The log
/// and index are the descriptors that were verified: later reads go to the
/// same files even if the paths are replaced.
pub(crate) struct Verified {
    pub docs: VerifiedDocs,
    pub log: Source,
    pub index: Source,
    /// None when a lazy verification left it to be read (and checked) on first use.
    pub blob_list: Option<Contents>,
}

/// One verification: its settings, and the findings it collects.
pub(crate) struct Verifier<'a> {
    root: &'a Path,
    mode: VerifyMode,
    limits: &'a Limits,
    trusted: &'a [PublicKey],
    progress: Option<&'a dyn Progress>,
    findings: Findings,
    /// Event ids held at once by the exact id check ([`events::ID_WINDOW`]).
    id_window: usize,
    /// The mode a lazy verification falls back to.
    without_outboards: VerifyMode,
}

/// The log, the index and their outboards, as opened (None where absent
/// or not as committed).
struct EventFiles<'f> {
    log: Option<&'f ReadFile>,
    index: Option<&'f ReadFile>,
    /// In the order of [`format::OUTBOARDS`].
    outboards: [Option<&'f ReadFile>; 2],
}

/// The parsed documents; each is None where it was absent or had a finding.
struct Documents {
    metadata: Option<Metadata>,
    dag: Option<Dag>,
    workflow: Option<String>,
    snapshot: Option<Snapshot>,
    nodes: Option<HashSet<Uuid>>,
}

impl Documents {
    /// The documents of a bundle that had no finding (each one parsed).
    fn verified(self, manifest: Manifest, manifest_bytes: Vec<u8>) -> Option<VerifiedDocs> {
        let Documents { metadata: Some(metadata), dag: Some(dag), workflow: Some(workflow), snapshot, .. } = self else { return None };
        Some(VerifiedDocs { manifest, manifest_bytes, metadata, workflow, dag, snapshot })
    }
}

/// What the first passes established, for the later ones.
struct Opened {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    blob_list: Option<Contents>,
    totals: ListTotals,
}

impl<'a> Verifier<'a> {
    pub fn new(root: &'a Path, mode: VerifyMode, limits: &'a Limits, trusted: &'a [PublicKey], progress: Option<&'a dyn Progress>) -> Self {
        let (findings, id_window) = (Findings::new(limits.max_findings), events::ID_WINDOW);
        Verifier { root, mode, limits, trusted, progress, findings, id_window, without_outboards: VerifyMode::Full }
    }

    /// What a lazy verification of a bundle without outboards does instead
    /// (default: a full verification).
    pub fn without_outboards(mut self, mode: VerifyMode) -> Self {
        self.without_outboards = mode;
        self
    }

    /// Verifies the bundle. `Err` only when the root cannot be examined at
    /// all; everything wrong inside the bundle is a finding in the report.
    pub fn run(self) -> Result<(VerifyReport, Option<Verified>), Error> {
        let mut stats = VerifyStats::default();
        let mut signature = SignatureStatus::Unsigned;
        let mut encoding = None;
        let verified = if self.mode == VerifyMode::Lazy {
            match self.verify_lazy(&mut stats, &mut signature, &mut encoding)? {
                lazy::LazyOpen::Lazily(verified) => verified,
                // Nothing to check reads against: verify everything instead.
                lazy::LazyOpen::NoOutboards => {
                    let mode = if self.without_outboards == VerifyMode::Lazy { VerifyMode::Full } else { self.without_outboards };
                    return Verifier { mode, findings: Findings::new(self.limits.max_findings), ..self }.run();
                }
            }
        } else {
            self.verify(&mut stats, &mut signature, &mut encoding)?
        };
        let (findings, omitted) = self.findings.into_sorted();
        let report = VerifyReport {
            bundle: self.root.display().to_string(),
            mode: self.mode,
            findings,
            findings_omitted: omitted,
            stats,
            signature,
            encoding,
        };
        let verified = if report.is_valid() { verified } else { None };
        Ok((report, verified))
    }

    fn tick(&self) -> impl Fn(u64) + Sync + '_ {
        move |n| {
            if let Some(p) = self.progress {
                p.advance(n)
            }
        }
    }

    fn verify(
        &self,
        stats: &mut VerifyStats,
        signature: &mut SignatureStatus,
        encoding: &mut Option<crate::format::event::Encoding>,
    ) -> Result<Option<Verified>, Error> {
        if !self.check_root()? {
            return Ok(None);
        }
        let Some(opened) = self.open_manifest_and_list(stats, signature) else { return Ok(None) };
        let Opened { manifest, manifest_bytes, blob_list, totals } = opened;
        let list = blob_list
            .as_ref()
            .and_then(|c| self.findings.ok(format::BLOB_LIST_FILE, BlobList::new(c, format::BLOB_LIST_FILE, self.limits.max_blobs)));
        if let Some(p) = self.progress {
            let listed: u64 = manifest.files.values().fold(0u64, |sum, e| sum.saturating_add(e.size));
            p.start(if self.mode == VerifyMode::Full { listed.saturating_add(totals.stored) } else { 0 });
        }
        let tick = self.tick();

        // Walk the tree and, in full mode, check every listed blob at the
        // same time: checking needs only the list; the walk reports what is
        // absent, linked, special, or should not be there.
        let (walk, blob_hashed) = rayon::join(
            || self.walk_tree(&manifest, list.as_ref()),
            || match (&list, self.mode) {
                (Some(list), VerifyMode::Full) => self.check_blobs(list, &tick),
                _ => 0,
            },
        );
        let walk = walk?;
        stats.blobs = walk.blobs_found;
        stats.bytes_total = walk.bytes_total.saturating_add(manifest_bytes.len() as u64);
        stats.bytes_hashed += blob_hashed;
        if stats.bytes_total > self.limits.max_total_size {
            self.findings.push(
                Finding::new(".", FindingCode::LimitExceeded, "bundle size is over the limit")
                    .with_values(format!("at most {}", self.limits.max_total_size), stats.bytes_total),
            );
            return Ok(None);
        }

        let docs = self.documents(&manifest, &walk.present, stats);
        let log_file = self.open_present(&manifest, &walk.present, format::EVENTS_FILE);
        let index_file = self.open_present(&manifest, &walk.present, format::INDEX_FILE);
        let outboards = format::OUTBOARDS.map(|(_, o)| self.open_present(&manifest, &walk.present, o));
        stats.files += [&log_file, &index_file].into_iter().chain(&outboards).filter(|f| f.is_some()).count() as u64;
        let files = EventFiles { log: log_file.as_ref(), index: index_file.as_ref(), outboards: outboards.each_ref().map(Option::as_ref) };
        let (log, index) = self.events_pass(&manifest, &files, &docs, list.as_ref(), stats, encoding);
        self.check_cross_file(&docs, log.as_ref(), index.as_ref(), list.as_ref());
        if !self.findings.is_empty() {
            return Ok(None);
        }
        let Some(docs) = docs.verified(manifest, manifest_bytes) else { return Ok(None) };
        let (Some(log), Some(index), Some(blob_list)) = (log_file, index_file, blob_list) else { return Ok(None) };
        Ok(Some(Verified { docs, log: Source::Whole(log), index: Source::Whole(index), blob_list: Some(blob_list) }))
    }

    /// The documents, parsed from the bytes that were hashed.
    fn documents(&self, manifest: &Manifest, present: &BTreeMap<String, tree::Present>, stats: &mut VerifyStats) -> Documents {
        self.parse_documents(&self.read_documents(manifest, Some(present), stats))
    }

    /// Parses the documents that were read and hashed.
    fn parse_documents(&self, docs: &BTreeMap<&'static str, Vec<u8>>) -> Documents {
        let metadata = docs.get(format::METADATA_FILE).and_then(|b| self.parse_doc::<Metadata>(format::METADATA_FILE, b));
        let dag = docs
            .get(format::DAG_FILE)
            .and_then(|b| self.parse_doc::<Dag>(format::DAG_FILE, b))
            .filter(|d| self.findings.ok(format::DAG_FILE, d.validate(format::DAG_FILE)).is_some());
        let workflow = docs.get(format::WORKFLOW_FILE).and_then(|b| match std::str::from_utf8(b) {
            Ok(s) => Some(s.to_string()),
            Err(e) => {
                self.findings.push(Finding::new(format::WORKFLOW_FILE, FindingCode::Malformed, format!("not UTF-8: {e}")));
                None
            }
        });
        let snapshot = docs
            .get(format::SNAPSHOT_FILE)
            .and_then(|b| self.findings.ok(format::SNAPSHOT_FILE, Snapshot::decode_file(b, format::SNAPSHOT_FILE)));
        let nodes = dag.as_ref().map(Dag::node_ids);
        Documents { metadata, dag, workflow, snapshot, nodes }
    }

    /// Pass 5: the log and its index. Full mode hashes and decodes the log in
    /// one pass, checking the index against it, while the index is hashed
    /// alongside; fast mode checks only that the index is bound to the log.
    fn events_pass<'f>(
        &self,
        manifest: &Manifest,
        files: &EventFiles<'f>,
        docs: &Documents,
        list: Option<&BlobList<'_>>,
        stats: &mut VerifyStats,
        encoding: &mut Option<crate::format::event::Encoding>,
    ) -> (Option<LogReader<'f>>, Option<IndexReader<'f>>) {
        let (log_file, index_file) = (files.log, files.index);
        let log = log_file.and_then(|f| self.findings.ok(format::EVENTS_FILE, LogReader::new(f, format::EVENTS_FILE, self.limits)));
        let index = index_file.and_then(|f| self.findings.ok(format::INDEX_FILE, IndexReader::new(f, format::INDEX_FILE)));
        if let Some(log) = &log {
            *encoding = Some(log.header().encoding);
            stats.events = log.header().count.into();
        }
        let log_hash = manifest.files.get(format::EVENTS_FILE).map_or(Digest::default(), |e| e.hash);
        if self.mode == VerifyMode::Fast {
            if let (Some(log), Some(index)) = (&log, &index) {
                self.check_binding(log, index, &log_hash);
            }
            return (log, index);
        }
        let tick = self.tick();
        let cx = events::LogContext {
            log_hash,
            log_outboard: manifest.files.get(format::LOG_OUTBOARD_FILE).map(|e| e.hash),
            run_id: docs.metadata.as_ref().map(|m| m.run_id),
            nodes: docs.nodes.as_ref(),
            list,
            on_event: None,
        };
        let (decoded, _) = rayon::join(
            || match (&log, log_file) {
                (Some(l), _) => Some(self.check_log(l, index.as_ref(), &cx, &tick)),
                // A log whose header does not parse is still hashed, to say whether it is the committed one.
                (None, Some(f)) => {
                    self.check_hash(format::EVENTS_FILE, f, log_hash, &tick);
                    None
                }
                (None, None) => None,
            },
            || {
                if let Some(f) = index_file {
                    self.check_hash_and_outboard(manifest, format::INDEX_FILE, f, &tick);
                }
                self.check_outboards(manifest, files, &tick);
            },
        );
        stats.events = decoded.unwrap_or(stats.events);
        stats.bytes_hashed += [log_file, index_file].into_iter().chain(files.outboards).flatten().map(|f| f.size()).sum::<u64>();
        (log, index)
    }

    /// The root must be a real directory, not a link to one, however it is
    /// spelled (`link`, `link/`, `link/.` all name the link).
    fn check_root(&self) -> Result<bool, Error> {
        // Components drop a trailing `/` and `.`: lstat then sees the link itself.
        let mut spelled: PathBuf = self.root.components().collect();
        if spelled.as_os_str().is_empty() {
            spelled = PathBuf::from(".");
        }
        let meta = std::fs::symlink_metadata(&spelled).map_err(|e| Error::io(self.root, e))?;
        if meta.file_type().is_symlink() {
            let message = format!("the bundle root {} is a symbolic link; give the real directory", self.root.display());
            self.findings.push(Finding::new(".", FindingCode::Symlink, message));
            return Ok(false);
        }
        if !meta.is_dir() {
            let found = fsutil::kind_of(&meta).map_or("regular file", |k| k.name());
            return Err(Error::input("bundle", format!("{} is a {found}, not a bundle directory", self.root.display())));
        }
        Ok(true)
    }

    /// Passes 1 and 2: the manifest, the signature, the blob list and the limits.
    fn open_manifest_and_list(&self, stats: &mut VerifyStats, signature: &mut SignatureStatus) -> Option<Opened> {
        let (manifest, manifest_bytes) = self.open_manifest(stats, signature)?;

        let list_limit =
            self.limits.max_blobs.saturating_mul(format::BLOB_LIST_RECORD_LEN as u64).saturating_add(format::BLOB_LIST_HEADER_LEN as u64);
        let blob_list = self.load_listed(&manifest, format::BLOB_LIST_FILE, list_limit);
        stats.files += u64::from(blob_list.is_some());
        if self.mode != VerifyMode::Fast {
            stats.bytes_hashed += blob_list.as_ref().map_or(0, fsutil::ReadAt::len);
        }
        let totals = blob_list.as_ref().and_then(|c| self.check_list(&manifest, c)).map(|(_, totals)| totals);
        let blob_list = blob_list.filter(|_| totals.is_some());
        let totals = totals.unwrap_or_default();
        if !self.within_limits(&manifest, &manifest_bytes, &totals) {
            return None;
        }
        Some(Opened { manifest, manifest_bytes, blob_list, totals })
    }

    /// Pass 1: the manifest, read (bounded) and checked, and the signature over it.
    fn open_manifest(&self, stats: &mut VerifyStats, signature: &mut SignatureStatus) -> Option<(Manifest, Vec<u8>)> {
        let name = format::MANIFEST_FILE;
        let bytes = ReadFile::open(&self.root.join(name), name).and_then(|f| f.read_all("file size", self.limits.max_document_size));
        let manifest_bytes = self.findings.ok(name, bytes)?;
        stats.files += 1;
        let manifest = self.check_manifest(&manifest_bytes, &signature::SignatureSource::Dir(self.root), signature)?;
        Some((manifest, manifest_bytes))
    }

    /// The manifest's bytes, parsed strictly and checked (§2), and the
    /// signature over them (§13). None when nothing else can be trusted.
    fn check_manifest(
        &self,
        manifest_bytes: &[u8],
        source: &signature::SignatureSource<'_>,
        signature: &mut SignatureStatus,
    ) -> Option<Manifest> {
        let name = format::MANIFEST_FILE;
        let parsed = Manifest::parse(manifest_bytes);
        let identity = parsed.as_ref().ok().map(|m| (m.bundle_id, m.to_bytes() != manifest_bytes));
        *signature = signature::check(source, manifest_bytes, &SignatureField::of(manifest_bytes), identity, self.trusted);
        let manifest = self.findings.ok(name, parsed)?;
        let problems = manifest.check();
        if !problems.is_empty() {
            problems.into_iter().for_each(|e| self.findings.error(name, e));
            return None;
        }
        for (outboard, e) in manifest.outboard_size_problems() {
            self.findings.error(outboard, e);
        }
        Some(manifest)
    }

    /// The blob list's layout, order and count (§7); its count, and its totals for the limits.
    fn check_list(&self, manifest: &Manifest, contents: &Contents) -> Option<(u32, ListTotals)> {
        let list = self.findings.ok(format::BLOB_LIST_FILE, BlobList::new(contents, format::BLOB_LIST_FILE, self.limits.max_blobs))?;
        if u64::from(list.count()) != manifest.blob_count {
            self.findings.push(
                Finding::new(format::MANIFEST_FILE, FindingCode::Inconsistent, "blob_count differs from the blob list")
                    .with_values(list.count(), manifest.blob_count),
            );
        }
        self.findings.ok(format::BLOB_LIST_FILE, list.scan()).map(|totals| (list.count(), totals))
    }

    /// Committed sizes and declared content, against the limits, before any
    /// blob is read: the work that follows is bounded by what they allow.
    fn within_limits(&self, manifest: &Manifest, manifest_bytes: &[u8], totals: &ListTotals) -> bool {
        let limits = self.limits;
        let listed = manifest.files.values().fold(0u64, |sum, e| sum.saturating_add(e.size));
        let committed = listed.saturating_add(totals.stored).saturating_add(manifest_bytes.len() as u64);
        let mut ok = true;
        if committed > limits.max_total_size {
            for (name, entry) in manifest.files.iter().filter(|(_, e)| e.size > limits.max_total_size) {
                self.findings.error(name, Error::limit(name, "committed size", limits.max_total_size, entry.size));
            }
            self.findings.error(".", Error::limit(".", "bundle size", limits.max_total_size, committed));
            ok = false;
        }
        if totals.decompressed > limits.max_decompressed_size {
            let file = format::BLOB_LIST_FILE;
            self.findings
                .error(file, Error::limit(file, "declared content of compressed blobs", limits.max_decompressed_size, totals.decompressed));
            ok = false;
        }
        ok
    }

    /// Opens a listed file found by the walk; its size was compared there.
    fn open_present(&self, manifest: &Manifest, present: &BTreeMap<String, tree::Present>, name: &str) -> Option<ReadFile> {
        self.open_committed(&present.get(name)?.path, name, manifest.files[name].size)
    }

    /// Opens a listed file and checks, on the descriptor, that it has its committed size.
    fn open_committed(&self, path: &Path, name: &str, size: u64) -> Option<ReadFile> {
        let file = self.findings.ok(name, ReadFile::open(path, name))?;
        if file.size() != size {
            return self
                .findings
                .ok(name, Err(Error::SizeMismatch { file: name.into(), what: "size", expected: size, found: file.size() }));
        }
        Some(file)
    }

    /// Reads a listed file (the blob list) before the walk, checks its size,
    /// and in full mode its hash. Contents are returned only when they are the
    /// committed bytes.
    fn load_listed(&self, manifest: &Manifest, name: &str, limit: u64) -> Option<Contents> {
        let entry = manifest.files.get(name)?;
        if entry.size > limit {
            return self.findings.ok(name, Err(Error::limit(name, "file size", limit, entry.size)));
        }
        let file = self.open_committed(&self.root.join(name), name, entry.size)?;
        let contents = self.findings.ok(name, Contents::load(file))?;
        if self.mode != VerifyMode::Fast {
            let actual = self.findings.ok(name, fsutil::hash(&contents, name, &|_| {}))?;
            if !self.committed(name, entry.hash, actual) {
                return None;
            }
        }
        Some(contents)
    }

    /// Compares a listed file's hash with the committed one; reports a
    /// mismatch. True when they agree.
    fn committed(&self, name: &str, expected: Digest, actual: Digest) -> bool {
        if actual != expected {
            self.findings.error(name, Error::HashMismatch { file: name.into(), what: "hash", expected, found: actual });
        }
        actual == expected
    }

    /// Hashes all of a listed file against its committed hash; reports a
    /// mismatch or a failed read.
    fn check_hash(&self, name: &str, src: &dyn fsutil::ReadAt, expected: Digest, tick: &(dyn Fn(u64) + Sync)) {
        match fsutil::hash(src, name, tick) {
            Ok(actual) => {
                self.committed(name, expected, actual);
            }
            Err(e) => self.findings.error(name, e),
        }
    }

    /// A document's bytes, hashed (counted and shown as progress) against
    /// the committed hash; None, with a finding, when they differ.
    fn hashed_document(&self, name: &str, expected: Digest, bytes: Vec<u8>, stats: &mut VerifyStats) -> Option<Vec<u8>> {
        stats.bytes_hashed += bytes.len() as u64;
        (self.tick())(bytes.len() as u64);
        self.committed(name, expected, Digest::of(&bytes)).then_some(bytes)
    }

    /// Reads the small listed documents whole (bounded), hashing them in full mode.
    /// Documents are opened where the walk found them (`present`), or,
    /// without a walk, where the manifest lists them.
    fn read_documents(
        &self,
        manifest: &Manifest,
        present: Option<&BTreeMap<String, tree::Present>>,
        stats: &mut VerifyStats,
    ) -> BTreeMap<&'static str, Vec<u8>> {
        let mut docs = BTreeMap::new();
        for name in [format::METADATA_FILE, format::DAG_FILE, format::WORKFLOW_FILE, format::SNAPSHOT_FILE] {
            let file = match present {
                Some(present) => self.open_present(manifest, present, name),
                None => manifest.files.get(name).and_then(|e| self.open_committed(&self.root.join(name), name, e.size)),
            };
            let Some(file) = file else { continue };
            stats.files += 1;
            let limit = if name == format::SNAPSHOT_FILE { self.limits.max_snapshot_size } else { self.limits.max_document_size };
            let Some(mut bytes) = self.findings.ok(name, file.read_all("file size", limit)) else { continue };
            if self.mode != VerifyMode::Fast {
                let Some(hashed) = self.hashed_document(name, manifest.files[name].hash, bytes, stats) else { continue };
                bytes = hashed;
            }
            docs.insert(name, bytes);
        }
        docs
    }

    fn parse_doc<T: serde::de::DeserializeOwned>(&self, file: &str, bytes: &[u8]) -> Option<T> {
        self.findings.ok(file, json::from_slice_strict(bytes, file))
    }

    /// Counts across files, and the snapshot's references and place in the log.
    fn check_cross_file(
        &self,
        docs: &Documents,
        log: Option<&LogReader<'_>>,
        index: Option<&IndexReader<'_>>,
        list: Option<&BlobList<'_>>,
    ) {
        self.cross_file_counts(docs, log.map(|l| l.header().count), index, list);
    }

    /// [`Verifier::check_cross_file`] given the log's count.
    fn cross_file_counts(&self, docs: &Documents, count: Option<u32>, index: Option<&IndexReader<'_>>, list: Option<&BlobList<'_>>) {
        let (metadata, dag, nodes, snapshot) = (docs.metadata.as_ref(), docs.dag.as_ref(), docs.nodes.as_ref(), docs.snapshot.as_ref());
        if let (Some(m), Some(count)) = (metadata, count) {
            if m.event_count != u64::from(count) {
                self.findings.error(format::METADATA_FILE, Error::inconsistent(format::METADATA_FILE, "event_count", count, m.event_count));
            }
        }
        if let (Some(m), Some(d)) = (metadata, dag) {
            if m.node_count != d.nodes.len() as u64 {
                self.findings
                    .error(format::METADATA_FILE, Error::inconsistent(format::METADATA_FILE, "node_count", d.nodes.len(), m.node_count));
            }
        }
        let (Some(s), Some(count)) = (snapshot, count) else { return };
        let file = format::SNAPSHOT_FILE;
        if s.log_position > u64::from(count) {
            let detail = format!("log_position {} is past the last event ({count})", s.log_position);
            return self.findings.error(file, Error::rule(file, "log position", detail));
        }
        if let (Some(nodes), Some(list)) = (nodes, list) {
            self.findings.ok(file, s.check_references(file, nodes, &mut |h| list.find(h).map(|r| r.is_some())));
        }
        if let Some(index) = index.filter(|ix| ix.count() == count) {
            self.findings.ok(file, check_snapshot_time(s, index));
        }
    }
}

/// The snapshot's time lies between the last event it applied and the next
/// one (FORMAT.md §9).
fn check_snapshot_time(s: &Snapshot, index: &IndexReader<'_>) -> Result<(), Error> {
    let file = format::SNAPSHOT_FILE;
    let position = s.log_position as u32;
    if let Some(before) = position.checked_sub(1).map(|p| index.time(p)).transpose()?.flatten() {
        if s.logical_time < before {
            return Err(Error::rule(file, "logical time", format!("{} is before event {}'s time {before}", s.logical_time, position - 1)));
        }
    }
    if let Some(after) = index.time(position)? {
        if s.logical_time > after {
            return Err(Error::rule(file, "logical time", format!("{} is after event {position}'s time {after}", s.logical_time)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles").join(name)
    }

    fn verify_with_window(bundle: &Path, window: usize) -> VerifyReport {
        let limits = Limits::default();
        let mut v = Verifier::new(bundle, VerifyMode::Full, &limits, &[], None);
        v.id_window = window;
        v.run().unwrap().0
    }

    /// The id check gives the same verdict whatever the window: one scan of
    /// the id section per window, each entry compared in exactly one.
    #[test]
    fn exact_id_check_across_windows() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["small-postcard.cath-bundle", "cbor-events.cath-bundle"] {
            for window in [1, 2, 3, 7, 1 << 21] {
                assert!(verify_with_window(&fixture(name), window).is_valid(), "{name} window {window}");
            }
            // Rotate the positions of the id section: every entry names another
            // event. (The copy has no blobs: only the index finding matters here.)
            let copy = tmp.path().join(name);
            std::fs::create_dir_all(&copy).unwrap();
            for entry in std::fs::read_dir(fixture(name)).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_file() {
                    std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
                }
            }
            let mut ix = std::fs::read(copy.join(format::INDEX_FILE)).unwrap();
            let count = u32::from_be_bytes(ix[11..15].try_into().unwrap()) as usize;
            let ids = 55 + 16 * count;
            let last = ids + 20 * (count - 1) + 16;
            let first_position = ix[ids + 16..ids + 20].to_vec();
            for i in 0..count - 1 {
                let (at, next) = (ids + 20 * i + 16, ids + 20 * (i + 1) + 16);
                let p = ix[next..next + 4].to_vec();
                ix[at..at + 4].copy_from_slice(&p);
            }
            ix[last..last + 4].copy_from_slice(&first_position);
            std::fs::write(copy.join(format::INDEX_FILE), &ix).unwrap();
            for window in [1, 2, 3, 7, 1 << 21] {
                let report = verify_with_window(&copy, window);
                assert!(
                    report.findings.iter().any(|f| f.path == format::INDEX_FILE && f.code == FindingCode::Inconsistent),
                    "{name} window {window}: {:#?}",
                    report.findings
                );
            }
        }
    }
}
