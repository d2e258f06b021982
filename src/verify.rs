//! Verification of a bundle directory: every listed file, every blob, and
//! every file nobody listed. Findings are collected, not returned one by one.
//!
//! Passes:
//! 1. `MANIFEST.json` is read (bounded), parsed strictly and checked.
//! 2. The blob list is read and checked (its hash too, in full mode).
//! 3. The tree is walked in sorted order without following links; each entry
//!    is matched against the manifest or, under `blobs/`, merge-joined with
//!    the sorted blob list. Sizes are compared here, before any hashing.
//! 4. Full mode: listed files and blobs are hashed in parallel.
//! 5. Documents are parsed from the bytes that were hashed; the log and its
//!    index are decoded and checked against each other; counts are compared
//!    across files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;
use walkdir::WalkDir;

use crate::blob::{decode_blob_to, BlobHeader, BlobListView, BlobRecord, Compression};
use crate::digest::Digest;
use crate::error::{Error, Finding, FindingCode};
use crate::event::Encoding;
use crate::format::{self, BLOB_HEADER_LEN};
use crate::fsutil::{self, describe_type, open_regular, FileBytes};
use crate::index::IndexView;
use crate::limits::Limits;
use crate::log::LogView;
use crate::manifest::Manifest;
use crate::model::{Dag, Metadata, Snapshot};
use crate::path::BundlePath;
use crate::signing::{self, PublicKey, SignatureStatus};

/// How much a verification does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Structure, completeness and sizes; nothing is hashed.
    Fast,
    /// Everything: every byte hashed, every record decoded.
    #[default]
    Full,
}

/// Receives progress of long verifications, in bytes.
pub trait Progress: Sync {
    /// The total number of bytes that will be processed.
    fn start(&self, total_bytes: u64);
    /// `bytes` more were processed.
    fn advance(&self, bytes: u64);
}

/// What a verification looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyStats {
    /// Listed files checked (the manifest included).
    pub files: u64,
    /// Blobs checked.
    pub blobs: u64,
    /// Events decoded (full mode) or declared (fast mode).
    pub events: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Sum of the sizes of every file found.
    pub bytes_total: u64,
}

/// The result of verifying a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The bundle path as given.
    pub bundle: String,
    /// Fast or full.
    pub mode: VerifyMode,
    /// Every finding, sorted by path then code.
    pub findings: Vec<Finding>,
    /// Findings beyond the configured limit, counted but not listed.
    pub findings_omitted: u64,
    /// What was checked.
    pub stats: VerifyStats,
    /// The signature's state, checked against the trusted keys given.
    pub signature: SignatureStatus,
    /// Event encoding, when the log header could be read.
    #[serde(serialize_with = "ser_encoding")]
    pub encoding: Option<Encoding>,
}

fn ser_encoding<S: serde::Serializer>(e: &Option<Encoding>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_str(e.name()),
        None => s.serialize_none(),
    }
}

impl VerifyReport {
    /// True when nothing was found.
    pub fn is_valid(&self) -> bool {
        self.findings.is_empty() && self.findings_omitted == 0
    }
}

/// Collects findings from many threads, up to a limit.
pub(crate) struct Findings {
    list: Mutex<Vec<Finding>>,
    omitted: AtomicU64,
    max: usize,
}

impl Findings {
    fn new(max: usize) -> Self {
        Findings { list: Mutex::new(Vec::new()), omitted: AtomicU64::new(0), max }
    }

    fn push(&self, finding: Finding) {
        let mut list = self.list.lock().expect("findings lock");
        if list.len() < self.max {
            list.push(finding);
        } else {
            self.omitted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn error(&self, path: &str, error: Error) {
        self.push(error.into_finding(path));
    }

    fn is_empty(&self) -> bool {
        self.list.lock().expect("findings lock").is_empty() && self.omitted.load(Ordering::Relaxed) == 0
    }
}

/// Everything a successful verification read, for [`crate::ReplayBundle`].
pub(crate) struct Loaded {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub metadata: Metadata,
    pub workflow: String,
    pub dag: Dag,
    pub snapshot: Option<Snapshot>,
    pub log: FileBytes,
    pub index: FileBytes,
    pub blob_list: FileBytes,
}

/// A listed top-level file that was found with the right size.
struct Present {
    path: PathBuf,
    size: u64,
}

/// Verifies the bundle at `root`. `Err` only when `root` cannot be examined
/// at all; everything wrong inside the bundle is a finding in the report.
pub(crate) fn verify(
    root: &Path,
    mode: VerifyMode,
    limits: &Limits,
    trusted: &[PublicKey],
    progress: Option<&dyn Progress>,
) -> Result<(VerifyReport, Option<Loaded>), Error> {
    let findings = Findings::new(limits.max_findings);
    let mut stats = VerifyStats::default();
    let mut encoding = None;
    let mut signature = SignatureStatus::Unsigned;
    let loaded = run(root, mode, limits, trusted, progress, &findings, &mut stats, &mut encoding, &mut signature)?;
    let mut list = findings.list.into_inner().expect("findings lock");
    list.sort();
    list.dedup();
    let omitted = findings.omitted.into_inner();
    if omitted > 0 {
        list.push(Finding::new(
            ".",
            FindingCode::TooManyFindings,
            format!("{omitted} more findings were not listed (limit {})", limits.max_findings),
        ));
    }
    let report =
        VerifyReport { bundle: root.display().to_string(), mode, findings: list, findings_omitted: omitted, stats, signature, encoding };
    let loaded = if report.is_valid() { loaded } else { None };
    Ok((report, loaded))
}

#[allow(clippy::too_many_arguments)]
fn run(
    root: &Path,
    mode: VerifyMode,
    limits: &Limits,
    trusted: &[PublicKey],
    progress: Option<&dyn Progress>,
    findings: &Findings,
    stats: &mut VerifyStats,
    encoding_out: &mut Option<Encoding>,
    signature_out: &mut SignatureStatus,
) -> Result<Option<Loaded>, Error> {
    let root_meta = std::fs::symlink_metadata(root).map_err(|e| Error::io(root, e))?;
    if root_meta.file_type().is_symlink() {
        findings.push(Finding::new(
            ".",
            FindingCode::Symlink,
            format!("the bundle root {} is a symbolic link; give the real directory", root.display()),
        ));
        return Ok(None);
    }
    if !root_meta.is_dir() {
        return Err(Error::InvalidInput {
            what: "bundle",
            detail: format!("{} is a {}, not a bundle directory", root.display(), describe_type(&root_meta)),
        });
    }

    // 1. The manifest.
    let manifest_path = root.join(format::MANIFEST_FILE);
    let manifest_bytes = match fsutil::read_bounded(&manifest_path, format::MANIFEST_FILE, "file size", limits.max_document_size) {
        Ok(b) => b,
        Err(e) => {
            findings.error(format::MANIFEST_FILE, e);
            return Ok(None);
        }
    };
    stats.files += 1;
    let parsed = Manifest::parse(&manifest_bytes);
    *signature_out = signing::check(root, &manifest_bytes, parsed.as_ref().ok(), trusted);
    let manifest = match parsed {
        Ok(m) => m,
        Err(e) => {
            findings.error(format::MANIFEST_FILE, e);
            return Ok(None);
        }
    };
    let manifest_findings = manifest.check();
    let manifest_ok = manifest_findings.is_empty();
    for f in manifest_findings {
        findings.push(f);
    }
    if !manifest_ok {
        return Ok(None);
    }

    // 2. The blob list, needed to match the blob store while walking.
    let blob_list = read_listed(
        root,
        &manifest,
        format::BLOB_LIST_FILE,
        mode,
        limits.max_blobs.saturating_mul(format::BLOB_LIST_RECORD_LEN as u64).saturating_add(format::BLOB_LIST_HEADER_LEN as u64),
        findings,
        stats,
    );
    let list_view = blob_list.as_ref().and_then(|bytes| {
        match BlobListView::new(bytes, format::BLOB_LIST_FILE, limits.max_blobs).and_then(|v| v.check().map(|_| v)) {
            Ok(v) => Some(v),
            Err(e) => {
                findings.error(format::BLOB_LIST_FILE, e);
                None
            }
        }
    });
    if let Some(view) = &list_view {
        if u64::from(view.count()) != manifest.blob_count {
            findings.push(
                Finding::new(format::MANIFEST_FILE, FindingCode::Inconsistent, "blob_count differs from the blob list")
                    .with_values(view.count(), manifest.blob_count),
            );
        }
    }

    // Committed sizes: refuse an oversized bundle before reading it.
    // Sizes read from the bundle: summed with saturation, never trusted to fit.
    let listed_bytes =
        manifest.files.iter().filter(|(n, _)| n.as_str() != format::BLOB_LIST_FILE).fold(0u64, |sum, (_, e)| sum.saturating_add(e.size));
    let blob_bytes = list_view
        .as_ref()
        .map_or(0, |v| (0..v.count()).filter_map(|i| v.record(i).ok()).fold(0u64, |sum, r| sum.saturating_add(r.stored_size)));
    let committed = listed_bytes.saturating_add(blob_bytes).saturating_add(manifest_bytes.len() as u64);
    if committed > limits.max_total_size {
        for (name, entry) in manifest.files.iter().filter(|(_, e)| e.size > limits.max_total_size) {
            findings.push(
                Finding::new(name, FindingCode::LimitExceeded, "committed size is over the bundle size limit")
                    .with_values(format!("at most {}", limits.max_total_size), entry.size),
            );
        }
        findings.push(
            Finding::new(".", FindingCode::LimitExceeded, "bundle size is over the limit")
                .with_values(format!("at most {}", limits.max_total_size), committed),
        );
        return Ok(None);
    }
    if let Some(p) = progress {
        // Full mode hashes every byte, then walks the log once more to decode it.
        let log_bytes = manifest.files.get(format::EVENTS_FILE).map_or(0, |e| e.size);
        p.start(if mode == VerifyMode::Full { listed_bytes.saturating_add(blob_bytes).saturating_add(log_bytes) } else { 0 });
    }
    let tick = |n: u64| {
        if let Some(p) = progress {
            p.advance(n)
        }
    };

    // 3. Walk the tree and, in full mode, hash every listed blob at the same
    // time: hashing needs only the list, and the walk reports what is absent,
    // linked, or should not be there.
    let (walk, blob_hashed) = rayon::join(
        || walk_tree(root, mode, &manifest, list_view.as_ref(), findings, stats),
        || match (&list_view, mode) {
            (Some(view), VerifyMode::Full) => check_blobs(root, view, limits.max_blob_size, findings, &tick),
            _ => 0,
        },
    );
    let walk = walk?;
    if stats.bytes_total > limits.max_total_size {
        findings.push(
            Finding::new(".", FindingCode::LimitExceeded, "bundle size is over the limit")
                .with_values(format!("at most {}", limits.max_total_size), stats.bytes_total),
        );
        return Ok(None);
    }
    stats.blobs = walk.blobs_found;
    stats.bytes_hashed += blob_hashed;

    // 4. Read the listed files (in parallel) and, in full mode, hash them.
    let mut contents: BTreeMap<&str, FileBytes> = BTreeMap::new();
    let names: Vec<&str> = walk.present.keys().map(String::as_str).filter(|n| *n != format::BLOB_LIST_FILE).collect();
    let read: Vec<(&str, Option<FileBytes>)> = names
        .par_iter()
        .map(|name| {
            let present = &walk.present[*name];
            let limit = match *name {
                format::EVENTS_FILE | format::INDEX_FILE => u64::MAX,
                format::SNAPSHOT_FILE => limits.max_snapshot_size,
                _ => limits.max_document_size,
            };
            let entry = &manifest.files[*name];
            (*name, load_file(&present.path, name, present.size, limit, entry.hash, mode, findings, &tick))
        })
        .collect();
    for (name, bytes) in read {
        stats.files += 1;
        if mode == VerifyMode::Full {
            stats.bytes_hashed += manifest.files[name].size;
        }
        if let Some(b) = bytes {
            contents.insert(name, b);
        }
    }
    if mode == VerifyMode::Full {
        stats.bytes_hashed += blob_list.as_ref().map_or(0, |b| b.len() as u64);
    }

    // 5. Parse and cross-check.
    let metadata = parse_doc::<Metadata>(&contents, format::METADATA_FILE, findings)
        .filter(|m| record(m.validate(format::METADATA_FILE), format::METADATA_FILE, findings));
    let dag = parse_doc::<Dag>(&contents, format::DAG_FILE, findings)
        .filter(|d| record(d.validate(format::DAG_FILE), format::DAG_FILE, findings));
    let workflow = contents.get(format::WORKFLOW_FILE).and_then(|b| match std::str::from_utf8(b) {
        Ok(s) => Some(s.to_string()),
        Err(e) => {
            findings.push(Finding::new(format::WORKFLOW_FILE, FindingCode::Malformed, format!("not UTF-8: {e}")));
            None
        }
    });
    let snapshot = contents.get(format::SNAPSHOT_FILE).and_then(|b| match Snapshot::decode_file(b, format::SNAPSHOT_FILE) {
        Ok(s) => Some(s),
        Err(e) => {
            findings.error(format::SNAPSHOT_FILE, e);
            None
        }
    });

    let empty: &[u8] = &[];
    let log_bytes: &[u8] = contents.get(format::EVENTS_FILE).map_or(empty, |b| b);
    let log_view = contents.get(format::EVENTS_FILE).and_then(|_| match LogView::new(log_bytes, format::EVENTS_FILE, limits) {
        Ok(v) => Some(v),
        Err(e) => {
            findings.error(format::EVENTS_FILE, e);
            None
        }
    });
    let index_view = contents.get(format::INDEX_FILE).and_then(|b| match IndexView::new(b, format::INDEX_FILE) {
        Ok(v) => Some(v),
        Err(e) => {
            findings.error(format::INDEX_FILE, e);
            None
        }
    });
    if let Some(log) = &log_view {
        *encoding_out = Some(log.header().encoding);
        stats.events = log.header().count.into();
    }
    if let (Some(log), Some(index)) = (&log_view, &index_view) {
        let log_hash = manifest.files[format::EVENTS_FILE].hash;
        if mode == VerifyMode::Full {
            let release = || {
                for name in [format::EVENTS_FILE, format::INDEX_FILE] {
                    if let Some(b) = contents.get(name) {
                        b.release_all();
                    }
                }
            };
            check_log(log, index, &log_hash, metadata.as_ref(), findings, &release, &tick);
        } else {
            // Fast: the header fields that bind the index to the log.
            if index.log_hash() != log_hash {
                findings.push(
                    Finding::new(
                        format::INDEX_FILE,
                        FindingCode::Inconsistent,
                        "indexed log hash differs from the manifest's hash of the log",
                    )
                    .with_values(log_hash, index.log_hash()),
                );
            }
            if index.log_size() != log.bytes().len() as u64 || index.count() != log.header().count {
                findings.push(
                    Finding::new(format::INDEX_FILE, FindingCode::Inconsistent, "index does not describe this log (size, count)")
                        .with_values(
                            format!("{} bytes, {} events", log.bytes().len(), log.header().count),
                            format!("{} bytes, {} events", index.log_size(), index.count()),
                        ),
                );
            }
        }
    }
    if let (Some(m), Some(log)) = (&metadata, &log_view) {
        if m.event_count != u64::from(log.header().count) {
            findings.push(
                Finding::new(format::METADATA_FILE, FindingCode::Inconsistent, "event_count differs from the log's count")
                    .with_values(log.header().count, m.event_count),
            );
        }
    }
    if let (Some(m), Some(d)) = (&metadata, &dag) {
        if m.node_count != d.nodes.len() as u64 {
            findings.push(
                Finding::new(format::METADATA_FILE, FindingCode::Inconsistent, "node_count differs from the DAG's nodes")
                    .with_values(d.nodes.len(), m.node_count),
            );
        }
    }
    if let (Some(s), Some(log)) = (&snapshot, &log_view) {
        if s.log_position > u64::from(log.header().count) {
            findings.push(
                Finding::new(format::SNAPSHOT_FILE, FindingCode::Inconsistent, "log_position is past the last event")
                    .with_values(format!("at most {}", log.header().count), s.log_position),
            );
        }
    }

    if !findings.is_empty() {
        return Ok(None);
    }
    let (Some(metadata), Some(dag), Some(workflow), Some(log), Some(index), Some(blob_list)) =
        (metadata, dag, workflow, contents.remove(format::EVENTS_FILE), contents.remove(format::INDEX_FILE), blob_list)
    else {
        return Ok(None);
    };
    Ok(Some(Loaded { manifest, manifest_bytes, metadata, workflow, dag, snapshot, log, index, blob_list }))
}

/// Records a validation failure; returns whether the value is good.
fn record(result: Result<(), Error>, file: &str, findings: &Findings) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            findings.error(file, e);
            false
        }
    }
}

fn parse_doc<T: serde::de::DeserializeOwned>(contents: &BTreeMap<&str, FileBytes>, file: &str, findings: &Findings) -> Option<T> {
    let bytes = contents.get(file)?;
    match crate::json::from_slice_strict(bytes, file) {
        Ok(v) => Some(v),
        Err(e) => {
            findings.error(file, e);
            None
        }
    }
}

/// Walks and decodes every record of the log once, checking the event rules
/// (§5.1) and, where the index is bound to this log, every index entry.
/// Reports the first problem of the log and the first of the index.
fn check_log(
    log: &LogView<'_>,
    index: &IndexView<'_>,
    log_hash: &Digest,
    metadata: Option<&Metadata>,
    findings: &Findings,
    release: &dyn Fn(),
    tick: &dyn Fn(u64),
) {
    let log_file = format::EVENTS_FILE;
    let index_file = format::INDEX_FILE;
    let mut index = Some(index);
    let binding = [
        ("indexed log hash", log_hash.to_string(), index.map(|i| i.log_hash().to_string())),
        ("indexed log size", log.bytes().len().to_string(), index.map(|i| i.log_size().to_string())),
        ("event count", log.header().count.to_string(), index.map(|i| i.count().to_string())),
    ];
    for (what, expected, found) in binding {
        if index.is_some() && Some(&expected) != found.as_ref() {
            findings.error(index_file, Error::mismatch(index_file, what, expected, found.unwrap_or_default()));
            index = None;
        }
    }
    let mut index_ids = PairSum::default();
    if let Some(ix) = index {
        match check_id_section(ix, release) {
            Ok(sum) => index_ids = sum,
            Err(e) => {
                findings.error(index_file, e);
                index = None;
            }
        }
    }
    let mut log_ids = PairSum::default();
    let mut walked = 0u64;
    let mut previous_time = 0u64;
    for (position, record) in log.records().enumerate() {
        let position = position as u32;
        if position % RELEASE_EVERY == RELEASE_EVERY - 1 {
            release();
            if let Ok((offset, _)) = &record {
                tick(offset - walked);
                walked = *offset;
            }
        }
        let result = record.and_then(|(offset, bytes)| {
            let event = crate::event::Event::decode(bytes, log.header().encoding, log_file, offset)?;
            let actual = Digest::of(&event.payload);
            if actual != event.payload_hash {
                return Err(Error::mismatch(log_file, "payload hash", format!("{} (event {position})", event.payload_hash), actual));
            }
            if let Some(m) = metadata.filter(|m| m.run_id != event.run_id) {
                return Err(Error::mismatch(log_file, "run id", m.run_id, format!("{} (event {position})", event.run_id)));
            }
            if event.logical_time < previous_time {
                return Err(Error::malformed(
                    log_file,
                    "logical time",
                    offset,
                    format!("event {position} goes back in time: {} after {previous_time}", event.logical_time),
                ));
            }
            previous_time = event.logical_time;
            Ok((offset, event))
        });
        let (offset, event) = match result {
            Ok(v) => v,
            Err(e) => {
                findings.error(log_file, e);
                return;
            }
        };
        log_ids.add(event.event_id.as_bytes(), position);
        if let Some(ix) = index {
            if let Err(e) = check_entry(ix, position, offset, &event) {
                findings.error(index_file, e);
                index = None;
            }
        }
    }
    if index.is_some() && log_ids != index_ids {
        findings.push(Finding::new(
            index_file,
            FindingCode::Inconsistent,
            "the id section does not hold exactly the log's (event id, position) pairs (an id repeats in the log, or the section was changed)",
        ));
    }
}

/// How many events are walked between releases of the mapped log and index.
pub(crate) const RELEASE_EVERY: u32 = 1 << 16;

/// A multiset hash: lane-wise wrapping sums of BLAKE3(`event_id || position`).
/// Equal sums over the log's (id, position) pairs and over the index's id
/// section show that the two hold the same pairs, with sequential reads only
/// (a binary search per event would touch the whole id section).
#[derive(Default, PartialEq, Eq)]
struct PairSum([u64; 4]);

impl PairSum {
    fn add(&mut self, id: &[u8; 16], position: u32) {
        let mut input = [0u8; 20];
        input[..16].copy_from_slice(id);
        input[16..].copy_from_slice(&position.to_be_bytes());
        let hash = blake3::hash(&input);
        for (lane, bytes) in self.0.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
            *lane = lane.wrapping_add(u64::from_le_bytes(bytes.try_into().expect("8 bytes")));
        }
    }
}

/// The id section is strictly increasing and its positions are in range;
/// returns the multiset hash of its entries.
fn check_id_section(index: &IndexView<'_>, release: &dyn Fn()) -> Result<PairSum, Error> {
    let mut sum = PairSum::default();
    let mut previous: Option<[u8; 16]> = None;
    for i in 0..index.count() {
        if i % RELEASE_EVERY == RELEASE_EVERY - 1 {
            release();
        }
        let (id, position) = index.id_entry(i).expect("in range");
        if position >= index.count() {
            return Err(Error::malformed(
                format::INDEX_FILE,
                "id entry",
                i.into(),
                format!("position {position} is past the last event ({})", index.count()),
            ));
        }
        if previous.is_some_and(|p| p >= id) {
            return Err(Error::malformed(
                format::INDEX_FILE,
                "id entry",
                i.into(),
                "ids are not strictly increasing (duplicate or unsorted event id)",
            ));
        }
        previous = Some(id);
        sum.add(&id, position);
    }
    Ok(sum)
}

/// Index entries for event `position` match the record walked at `offset`.
fn check_entry(index: &IndexView<'_>, position: u32, offset: u64, event: &crate::event::Event) -> Result<(), Error> {
    let file = format::INDEX_FILE;
    let indexed = index.offset(position).expect("count checked");
    if indexed != offset {
        return Err(Error::mismatch(file, "record offset", offset, format!("{indexed} (event {position})")));
    }
    let time = index.time(position).expect("count checked");
    if time != event.logical_time {
        return Err(Error::mismatch(file, "logical time", event.logical_time, format!("{time} (event {position})")));
    }
    Ok(())
}

/// Reads or maps a listed file, and in full mode checks its hash against the
/// manifest. Bytes are returned only when they are the committed bytes.
#[allow(clippy::too_many_arguments)]
fn load_file(
    path: &Path,
    name: &str,
    size: u64,
    limit: u64,
    expected: Digest,
    mode: VerifyMode,
    findings: &Findings,
    tick: &(dyn Fn(u64) + Sync),
) -> Option<FileBytes> {
    if size > limit {
        findings.error(name, Error::limit(name, "file size", limit, size));
        return None;
    }
    let result = (|| -> Result<FileBytes, Error> {
        let (file, meta) = open_regular(path)?;
        if meta.len() != size {
            return Err(Error::mismatch(name, "size", size, meta.len()));
        }
        let bytes = FileBytes::load(file, size, path, name)?;
        if mode == VerifyMode::Full {
            let actual = bytes.hash(0, tick);
            if actual != expected {
                return Err(Error::mismatch(name, "hash", expected, actual));
            }
        }
        Ok(bytes)
    })();
    match result {
        Ok(b) => Some(b),
        Err(e) => {
            findings.error(name, e);
            None
        }
    }
}

/// Reads the blob list (a listed file) for the structure pass.
fn read_listed(
    root: &Path,
    manifest: &Manifest,
    name: &str,
    mode: VerifyMode,
    limit: u64,
    findings: &Findings,
    stats: &mut VerifyStats,
) -> Option<FileBytes> {
    let entry = manifest.files.get(name)?;
    let path = root.join(name);
    stats.files += 1;
    load_file(&path, name, entry.size, limit, entry.hash, mode, findings, &|_| {})
}

/// What the walk found.
struct Walk {
    /// Listed top-level files present as regular files with the committed size.
    present: BTreeMap<String, Present>,
    /// Blob files found.
    blobs_found: u64,
    /// Every name found at the top level.
    seen: std::collections::BTreeSet<String>,
}

/// Walks the tree without following links. Every entry must be part of the
/// layout. Blob files are collected shard by shard, sorted, and merge-joined
/// with the list's records for that shard (a contiguous range of the sorted
/// list), so memory stays bounded by the largest shard. In full mode blob
/// files are not stat'ed here: they are sized as they are read.
fn walk_tree(
    root: &Path,
    mode: VerifyMode,
    manifest: &Manifest,
    list: Option<&BlobListView<'_>>,
    findings: &Findings,
    stats: &mut VerifyStats,
) -> Result<Walk, Error> {
    let mut walk = Walk { present: BTreeMap::new(), blobs_found: 0, seen: Default::default() };
    let mut visited = [false; 256];
    // The shard being walked: its name, and the blobs found in it with their sizes when stat'ed.
    let mut shard = String::new();
    let mut in_shard: Vec<(Digest, Option<u64>)> = Vec::new();
    let mut it = WalkDir::new(root).min_depth(1).follow_links(false).into_iter();
    loop {
        let next = it.next();
        // Leaving a shard: join what it holds with what the list says it holds.
        if !shard.is_empty() && next.as_ref().is_none_or(|e| e.as_ref().is_ok_and(|e| e.depth() < 3)) {
            join_shard(&shard, &mut in_shard, list, findings, stats);
            shard.clear();
        }
        let Some(entry) = next else { break };
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let rel =
                    e.path().and_then(|p| p.strip_prefix(root).ok()).map_or_else(|| ".".to_string(), |p| p.to_string_lossy().into_owned());
                findings.push(Finding::new(&rel, FindingCode::Io, e.to_string()));
                continue;
            }
        };
        let ft = entry.file_type();
        let is_dir = ft.is_dir();
        let depth = entry.depth();
        let name = entry.file_name().to_string_lossy();
        let rel = || match depth {
            1 => name.to_string(),
            2 => format!("{}/{name}", format::BLOB_DIR),
            _ => format!("{}/{shard}/{name}", format::BLOB_DIR),
        };
        let blob_file = depth == 3 && ft.is_file();
        if blob_file {
            // The common case, kept lean: a digest name in the right shard.
            match Digest::parse(&name) {
                Ok(hash) if name.starts_with(shard.as_str()) => {
                    let size = match mode {
                        VerifyMode::Full => None,
                        VerifyMode::Fast => match entry.metadata() {
                            Ok(m) => Some(m.len()),
                            Err(e) => {
                                findings.push(Finding::new(&rel(), FindingCode::Io, e.to_string()));
                                continue;
                            }
                        },
                    };
                    walk.blobs_found += 1;
                    in_shard.push((hash, size));
                }
                Ok(hash) => findings.push(
                    Finding::new(&rel(), FindingCode::InvalidPath, "blob is in the wrong shard directory")
                        .with_values(hash.blob_path(), rel()),
                ),
                Err(_) => findings.push(Finding::new(&rel(), FindingCode::InvalidPath, "blob name is not 64 lowercase hex characters")),
            }
            continue;
        }
        let rel = rel();
        if depth == 1 {
            walk.seen.insert(rel.clone());
        }
        let name_problem = match entry.file_name().to_str() {
            None => Some("name is not UTF-8".to_string()),
            Some(_) => BundlePath::parse(&rel).err().map(|e| e.to_string()),
        };
        if let Some(problem) = name_problem {
            findings.push(Finding::new(&rel, FindingCode::InvalidPath, problem));
            if is_dir {
                it.skip_current_dir();
            }
            continue;
        }
        if ft.is_symlink() {
            findings.push(Finding::new(&rel, FindingCode::Symlink, "symbolic link (never followed)"));
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                findings.push(Finding::new(&rel, FindingCode::Io, e.to_string()));
                continue;
            }
        };
        if !is_dir && !ft.is_file() {
            findings.push(Finding::new(&rel, FindingCode::NotRegularFile, format!("{} (not read)", describe_type(&meta))));
            continue;
        }
        if ft.is_file() {
            stats.bytes_total += meta.len();
        }
        match (depth, is_dir) {
            (1, true) if rel == format::BLOB_DIR => {}
            (1, false) if rel == format::MANIFEST_FILE || rel == format::BLOB_LIST_FILE => {}
            (1, false) if rel == signing::SIGNATURE_FILE && manifest.signature.is_some() => {}
            (1, false) => match manifest.files.get(&rel) {
                Some(e) if e.size != meta.len() => {
                    findings.push(
                        Finding::new(&rel, FindingCode::SizeMismatch, "size differs from the manifest").with_values(e.size, meta.len()),
                    );
                }
                Some(_) => {
                    walk.present.insert(rel.clone(), Present { path: entry.path().to_path_buf(), size: meta.len() });
                }
                None => findings.push(Finding::new(&rel, FindingCode::Unlisted, "file is not listed in the manifest")),
            },
            (2, true) if is_shard_name(&name) => {
                shard = name.to_string();
                visited[usize::from(u8::from_str_radix(&shard, 16).expect("shard names are hex"))] = true;
            }
            (2, true) => {
                findings.push(Finding::new(&rel, FindingCode::InvalidPath, "not a shard directory (two lowercase hex characters)"));
                it.skip_current_dir();
            }
            _ => {
                findings.push(Finding::new(
                    &rel,
                    FindingCode::Unlisted,
                    if is_dir { "directory is not part of the bundle layout" } else { "file is not part of the bundle layout" },
                ));
                if is_dir {
                    it.skip_current_dir();
                }
            }
        }
    }
    // Shards never entered: everything the list puts there is missing.
    if let Some(list) = list {
        for byte in (0..=255u8).filter(|b| !visited[usize::from(*b)]) {
            for i in list.range_with_first_byte(byte) {
                if let Ok(record) = list.record(i) {
                    findings.push(Finding::new(&record.header.hash.blob_path(), FindingCode::Missing, "listed blob is absent"));
                }
            }
        }
    }
    for name in manifest.files.keys() {
        if !walk.seen.contains(name) {
            findings.push(Finding::new(name, FindingCode::Missing, "listed file is absent"));
        }
    }
    Ok(walk)
}

/// Merge-joins the blobs found in one shard with the list's records for it.
/// Without a readable list (already a finding) there is nothing to join with.
fn join_shard(
    shard: &str,
    found: &mut Vec<(Digest, Option<u64>)>,
    list: Option<&BlobListView<'_>>,
    findings: &Findings,
    stats: &mut VerifyStats,
) {
    let (Some(list), Ok(byte)) = (list, u8::from_str_radix(shard, 16)) else {
        found.clear();
        return;
    };
    found.sort_unstable_by_key(|(hash, _)| *hash);
    let records: Vec<BlobRecord> = list.range_with_first_byte(byte).filter_map(|i| list.record(i).ok()).collect();
    let (mut a, mut b) = (found.iter().peekable(), records.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((hash, _)), Some(record)) if *hash == record.header.hash => {
                let (_, size) = a.next().expect("peeked");
                match size {
                    Some(size) if *size != record.stored_size => findings.push(
                        Finding::new(&hash.blob_path(), FindingCode::SizeMismatch, "blob file size differs from the blob list")
                            .with_values(record.stored_size, size),
                    ),
                    Some(size) => stats.bytes_total += size,
                    // Not stat'ed: the size is checked as the blob is read.
                    None => stats.bytes_total = stats.bytes_total.saturating_add(record.stored_size),
                }
                b.next();
            }
            (Some((hash, _)), Some(record)) if *hash > record.header.hash => {
                findings.push(Finding::new(&record.header.hash.blob_path(), FindingCode::Missing, "listed blob is absent"));
                b.next();
            }
            (Some((hash, _)), _) => {
                findings.push(Finding::new(&hash.blob_path(), FindingCode::Unlisted, "blob is not in the blob list"));
                a.next();
            }
            (None, Some(record)) => {
                findings.push(Finding::new(&record.header.hash.blob_path(), FindingCode::Missing, "listed blob is absent"));
                b.next();
            }
        }
    }
    found.clear();
}

fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Shard directories opened once each, without following links, so that
/// blob files are opened with a one-component `openat`.
struct ShardDirs {
    root: PathBuf,
    dirs: Vec<std::sync::OnceLock<Option<std::os::fd::OwnedFd>>>,
}

impl ShardDirs {
    fn new(root: &Path) -> Self {
        ShardDirs { root: root.join(format::BLOB_DIR), dirs: (0..256).map(|_| std::sync::OnceLock::new()).collect() }
    }

    /// The shard of `hash`; None if it is absent or not a real directory (the walk reports why).
    fn get(&self, hash: &Digest) -> Option<&std::os::fd::OwnedFd> {
        let index = usize::from(hash.0[0]);
        self.dirs[index].get_or_init(|| fsutil::open_dir_no_follow(&self.root.join(&hash.to_hex()[..2])).ok()).as_ref()
    }
}

/// Checks every listed blob, in parallel batches; returns the bytes hashed.
/// Absent files and links are skipped here: the walk reports them.
fn check_blobs(root: &Path, list: &BlobListView<'_>, max_blob_size: u64, findings: &Findings, tick: &(dyn Fn(u64) + Sync)) -> u64 {
    const BATCH: u32 = 4096;
    let shards = ShardDirs::new(root);
    let hashed = AtomicU64::new(0);
    let mut start = 0u32;
    while start < list.count() {
        let end = (start + BATCH).min(list.count());
        (start..end).into_par_iter().for_each(|i| {
            let Ok(record) = list.record(i) else { return };
            if record.header.size > max_blob_size {
                let rel = record.header.hash.blob_path();
                findings.error(&rel, Error::limit(&rel, "blob content size", max_blob_size, record.header.size));
                return;
            }
            let Some(dir) = shards.get(&record.header.hash) else { return };
            match check_blob(dir, &record, tick) {
                Ok(()) => {}
                Err(Error::NotFound { .. } | Error::FileType { .. }) => return,
                Err(e) => findings.error(&record.header.hash.blob_path(), e),
            }
            hashed.fetch_add(record.stored_size, Ordering::Relaxed);
        });
        start = end;
    }
    hashed.into_inner()
}

/// Checks one blob file: its bytes against the stored hash, its header
/// against the list record, and its content against its name.
fn check_blob(dir: &std::os::fd::OwnedFd, record: &BlobRecord, tick: &(dyn Fn(u64) + Sync)) -> Result<(), Error> {
    let rel = &record.header.hash.blob_path();
    let name = &rel[format::BLOB_DIR.len() + 4..];
    let file = fsutil::open_at_no_follow(dir, name, Path::new(rel))?;
    // Small blobs are read with one bounded read and no fstat: reading a byte
    // more than committed detects a larger file, and O_NOFOLLOW | O_NONBLOCK
    // keep a link or FIFO swapped in since the walk from being followed or
    // blocking (the walk reports what it is). Large ones are mapped, which
    // needs their type and size first.
    if record.stored_size > fsutil::READ_THRESHOLD {
        let meta = file.metadata().map_err(|e| Error::io(rel, e))?;
        if !meta.is_file() {
            return Err(Error::FileType { path: rel.clone(), found: describe_type(&meta) });
        }
        if meta.len() != record.stored_size {
            return Err(Error::mismatch(rel, "size", record.stored_size, meta.len()));
        }
    }
    let bytes = FileBytes::load(file, record.stored_size, Path::new(rel), rel)?;
    // Decoding the header checks every one of its 56 bytes against a fixed
    // value or a field, and the fields must equal the record's: the header is
    // then exactly the committed one.
    let header = BlobHeader::decode(&bytes, rel)?;
    if header != record.header {
        return Err(Error::mismatch(rel, "blob header", format!("{:?}", record.header), format!("{header:?}")));
    }
    match header.compression {
        // The data is the content: one hash covers every remaining byte (FORMAT.md §10).
        Compression::None => {
            let actual = bytes.hash(BLOB_HEADER_LEN, tick);
            if actual != header.hash {
                return Err(Error::mismatch(rel, "blob content hash", header.hash, actual));
            }
        }
        // Compressed data can encode the same content in many ways: pin the
        // stored bytes, then check the content they decompress to.
        Compression::Zstd => {
            let actual = bytes.hash(0, tick);
            if actual != record.stored_hash {
                return Err(Error::mismatch(rel, "stored hash", record.stored_hash, actual));
            }
            decode_blob_to(&header, &mut &bytes[BLOB_HEADER_LEN..], &mut std::io::sink(), rel)?;
        }
    }
    Ok(())
}
