//! Verification of a `.cath-bundle.tar.zst` archive in one streaming pass
//! (ARCHIVE.md §4): nothing is extracted, nothing is read twice. The entry
//! order makes it possible: the manifest (and signature) come first, then
//! the documents, the blob list and the index, which are kept (in memory,
//! or in an anonymous temporary file past 16 MiB); then the log, checked
//! against the kept index as it streams by, exactly as in a directory; then
//! the blobs, in the list's order, merge-joined with it.
//!
//! The checks are the directory verifier's: the same findings, with the
//! same bundle-relative paths. What the tree walk reports for a directory
//! (absent, unlisted, linked, special files) is reported here from the
//! entries, named by the entry.
//!
//! Callers can watch the stream ([`Taps`]): a sink receives every entry
//! that is checked (to extract it), and events and one blob's content can
//! be captured. What they see is trusted only when the report is valid.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use rayon::prelude::*;

use super::blobs::{check_blob_data, check_in_memory, BLOB_WINDOW};
use super::events::{EventTap, LogContext};
use super::report::{Finding, FindingCode};
use super::{Documents, VerifiedDocs, Verifier};
use crate::digest::Digest;
use crate::error::Error;
use crate::format::archive::{EntryHeader, EntryKind, TarReader};
use crate::format::blob::{BlobList, BlobRecord};
use crate::format::event::Encoding;
use crate::format::index::IndexReader;
use crate::format::log::LogReader;
use crate::format::manifest::Manifest;
use crate::format::signature::{self, SignatureStatus};
use crate::format::{self, blob_path, is_shard_name};
use crate::fsutil::{self, Contents, Forward, SeqReader};
use crate::treehash::TreeHasher;

use super::report::{VerifyMode, VerifyReport, VerifyStats};

/// Bytes of entries that are skipped unchecked (unlisted, duplicate) before
/// reading stops: skipping still costs decompression.
const SKIP_LIMIT: u64 = 64 << 20;
/// Largest `MANIFEST.sig` read.
const SIGNATURE_LIMIT: u64 = 64 << 10;
/// Blobs stored in at most this many bytes are read whole as they stream
/// by and checked in parallel batches (decompressing and hashing them is
/// the work; reading them off the stream is a copy). Larger blobs, and the
/// one a caller captures, are checked as they stream by.
const HELD_BLOB_MAX: u64 = 1 << 20;
/// Stored bytes held for one parallel batch of blob checks.
const HELD_BATCH_BYTES: usize = 4 << 20;
/// Blobs held for one parallel batch of blob checks.
const HELD_BATCH_COUNT: usize = 4096;
/// Held blobs checked by one task (the contents of small uncompressed ones
/// hashed side by side).
const HELD_GROUP: usize = 32;

/// Receives every entry that is checked, as it streams by (for `unpack`).
pub(crate) trait EntrySink: Send {
    /// A directory; `rel` is bundle-relative, `""` for the top directory.
    fn dir(&mut self, rel: &str) -> Result<(), Error>;
    /// A file of `size` bytes starts; its bytes follow through [`EntrySink::data`].
    fn begin(&mut self, rel: &str, size: u64) -> Result<(), Error>;
    /// The next bytes of the current file.
    fn data(&mut self, bytes: &[u8]) -> Result<(), Error>;
    /// The current file is complete.
    fn end(&mut self) -> Result<(), Error>;
}

/// What a caller watches during the pass; nothing seen is trusted unless
/// the report is valid.
#[derive(Default)]
pub(crate) struct Taps<'a> {
    /// Receives every checked entry.
    pub sink: Option<&'a mut dyn EntrySink>,
    /// Sees every event that passed the event rules.
    pub on_event: Option<EventTap<'a>>,
    /// Receives the content of this blob.
    pub blob: Option<(Digest, &'a mut (dyn Write + Send))>,
}

/// What a valid archive held, for callers that show or import it.
pub(crate) struct ArchiveVerified {
    pub docs: VerifiedDocs,
    pub encoding: Encoding,
    pub index: Contents,
    pub blob_list: Contents,
}

/// A name of the archive, relative to the top directory.
enum Name {
    Top,
    File(String),
    Dir(String),
}

/// The state of the pass between entries.
struct Pass<'t> {
    tar: TarReader<Box<dyn Read + Send>>,
    top: String,
    sink: Option<&'t mut dyn EntrySink>,
    sink_error: Option<Error>,
    /// Listed files not met yet, in archive order.
    plan: Vec<&'static str>,
    /// Names met (top-level files and directories).
    seen: BTreeSet<String>,
    docs: BTreeMap<&'static str, Vec<u8>>,
    parsed: Option<Documents>,
    /// The blob list, once it passed its checks, and its count.
    list: Option<CheckedList>,
    index: Option<Contents>,
    /// Event count, when the log's header parsed.
    events: Option<(u32, Encoding)>,
    blobs: BlobCursor,
    /// Blobs read whole, not checked yet.
    held: HeldBlobs,
    skipped: u64,
}

/// Small blobs read off the stream, waiting for their parallel check.
#[derive(Default)]
struct HeldBlobs {
    blobs: Vec<HeldBlob>,
    bytes: usize,
}

struct HeldBlob {
    rel: String,
    record: BlobRecord,
    stored: Vec<u8>,
}

impl HeldBlobs {
    fn is_full(&self) -> bool {
        self.bytes >= HELD_BATCH_BYTES || self.blobs.len() >= HELD_BATCH_COUNT
    }
}

/// A blob list that passed its checks (layout, order, count, limits):
/// read without parsing its header again.
struct CheckedList {
    contents: Contents,
    count: u32,
}

impl CheckedList {
    fn reader(&self) -> BlobList<'_> {
        BlobList::with_count(&self.contents, format::BLOB_LIST_FILE, self.count)
    }
}

/// The merge-join of blob entries with the blob list.
#[derive(Default)]
struct BlobCursor {
    next: u32,
    shard: Option<u8>,
    last: Option<Digest>,
    dir_seen: bool,
    found: u64,
}

/// Reading stops: the rest of the archive cannot be trusted to be framed.
struct Stop;

/// The data of the current entry, copied to the sink as it is read.
struct Body<'p, 's> {
    tar: &'p mut TarReader<Box<dyn Read + Send>>,
    sink: Option<&'p mut (dyn EntrySink + 's)>,
    sink_error: &'p mut Option<Error>,
}

impl Read for Body<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.tar.read_data(buf).map_err(std::io::Error::other)?;
        if let (Some(sink), None) = (self.sink.as_mut(), self.sink_error.as_ref()) {
            if let Err(e) = sink.data(&buf[..n]) {
                *self.sink_error = Some(e);
            }
        }
        Ok(n)
    }
}

impl<'t> Pass<'t> {
    fn body(&mut self) -> Body<'_, 't> {
        Body { tar: &mut self.tar, sink: self.sink.as_deref_mut(), sink_error: &mut self.sink_error }
    }

    /// Calls the sink, keeping its first error.
    fn with_sink(&mut self, f: impl FnOnce(&mut dyn EntrySink) -> Result<(), Error>) {
        if let (Some(sink), None) = (self.sink.as_deref_mut(), self.sink_error.as_ref()) {
            if let Err(e) = f(sink) {
                self.sink_error = Some(e);
            }
        }
    }
}

impl Verifier<'_> {
    /// Verifies the archive streamed by `src` (decompressed by the caller's
    /// reader). `Err` only for a failure of the caller's sink; everything
    /// wrong with the archive is a finding.
    pub(crate) fn run_archive(self, src: Box<dyn Read + Send>, taps: Taps<'_>) -> Result<(VerifyReport, Option<ArchiveVerified>), Error> {
        let mut stats = VerifyStats::default();
        let mut signature = SignatureStatus::Unsigned;
        let name = self.root.display().to_string();
        let Taps { sink, on_event, blob } = taps;
        let mut pass = Pass {
            tar: TarReader::new(src, &name),
            top: String::new(),
            sink,
            sink_error: None,
            plan: Vec::new(),
            seen: BTreeSet::new(),
            docs: BTreeMap::new(),
            parsed: None,
            list: None,
            index: None,
            events: None,
            blobs: BlobCursor::default(),
            held: HeldBlobs::default(),
            skipped: 0,
        };
        let mut blob = blob;
        let manifest = self.archive_pass(&mut pass, &mut stats, &mut signature, on_event, &mut blob);
        if let Some(e) = pass.sink_error.take() {
            return Err(e);
        }
        let verified = manifest.and_then(|(manifest, manifest_bytes)| self.archive_result(&mut pass, manifest, manifest_bytes));
        let (findings, omitted) = self.findings.into_sorted();
        let report = VerifyReport {
            bundle: name,
            mode: VerifyMode::Full,
            findings,
            findings_omitted: omitted,
            stats,
            signature,
            encoding: pass.events.map(|(_, e)| e),
        };
        let verified = if report.is_valid() { verified } else { None };
        Ok((report, verified))
    }

    /// The whole pass; the manifest when it was usable.
    fn archive_pass(
        &self,
        pass: &mut Pass<'_>,
        stats: &mut VerifyStats,
        signature: &mut SignatureStatus,
        on_event: Option<EventTap<'_>>,
        blob: &mut Option<(Digest, &mut (dyn Write + Send))>,
    ) -> Option<(Manifest, Vec<u8>)> {
        let (manifest, manifest_bytes, next) = self.archive_head(pass, stats, signature).ok()?;
        let manifest = manifest?;
        pass.plan = format::archive::FILE_ORDER.into_iter().filter(|n| manifest.files.contains_key(*n)).collect();
        let mut entry = next;
        let mut complete = true;
        while let Some(header) = entry {
            if self.archive_entry(pass, &manifest, &manifest_bytes, header, stats, on_event, blob).is_err() {
                complete = false;
                break;
            }
            entry = match pass.tar.next_entry() {
                Ok(e) => e,
                Err(e) => {
                    self.findings.error(".", e);
                    complete = false;
                    break;
                }
            };
        }
        // Blobs read before the end (or a stop) are checked either way, as
        // they would have been had they been checked as they streamed by.
        self.check_held(&mut pass.held);
        if !complete {
            return None;
        }
        self.archive_end(pass);
        stats.blobs = pass.blobs.found;
        Some((manifest, manifest_bytes))
    }

    /// The top directory, `MANIFEST.json` and `MANIFEST.sig`: the manifest
    /// (None if it is unusable), its bytes, and the entry after them.
    #[allow(clippy::type_complexity)]
    fn archive_head(
        &self,
        pass: &mut Pass<'_>,
        stats: &mut VerifyStats,
        signature: &mut SignatureStatus,
    ) -> Result<(Option<Manifest>, Vec<u8>, Option<EntryHeader>), Stop> {
        let first = self.next_or_stop(pass)?;
        let top = first.as_ref().filter(|h| h.kind == EntryKind::Dir).and_then(|h| h.name.strip_suffix('/'));
        match top.map(|t| (t, format::archive::check_top(t))) {
            Some((t, Ok(()))) => pass.top = t.to_string(),
            Some((_, Err(e))) => return Err(self.stop(".", e)),
            None => {
                let found = first.map_or("the end of the archive".to_string(), |h| format!("{:?}", h.name));
                return Err(self.stop(".", Error::inconsistent(".", "first archive entry", "the top directory <name>.cath-bundle/", found)));
            }
        }
        pass.with_sink(|s| s.dir(""));
        let manifest_entry = self.next_or_stop(pass)?;
        let expected = format!("{}/{}", pass.top, format::MANIFEST_FILE);
        let Some(h) = manifest_entry.filter(|h| h.name == expected && h.kind == EntryKind::File) else {
            let e = Error::NotFound { file: format!("{} (it must be the archive's second entry)", format::MANIFEST_FILE) };
            return Err(self.stop(format::MANIFEST_FILE, e));
        };
        let manifest_bytes = self.read_entry(pass, format::MANIFEST_FILE, h.size, self.limits.max_document_size).ok_or(Stop)?;
        stats.files += 1;
        stats.bytes_hashed += manifest_bytes.len() as u64;
        stats.bytes_total += h.size;
        let mut next = self.next_or_stop(pass)?;
        let mut sig = None;
        if let Some(h) = next.as_ref().filter(|h| h.name == format!("{}/{}", pass.top, format::SIGNATURE_FILE) && h.kind == EntryKind::File)
        {
            sig = Some(self.read_entry(pass, format::SIGNATURE_FILE, h.size, SIGNATURE_LIMIT).ok_or(Stop)?);
            stats.bytes_total += h.size;
            next = self.next_or_stop(pass)?;
        }
        let source = signature::SignatureSource::Entry(sig.as_deref());
        let manifest = self.check_manifest(&manifest_bytes, &source, signature);
        if manifest.as_ref().is_some_and(|m| m.signature.is_none()) && sig.is_some() {
            let message = "the manifest does not name a signature, but the archive holds one";
            self.findings.push(Finding::new(format::SIGNATURE_FILE, FindingCode::Unlisted, message));
        }
        Ok((manifest, manifest_bytes, next))
    }

    /// One entry after the head.
    #[allow(clippy::too_many_arguments)]
    fn archive_entry(
        &self,
        pass: &mut Pass<'_>,
        manifest: &Manifest,
        manifest_bytes: &[u8],
        header: EntryHeader,
        stats: &mut VerifyStats,
        on_event: Option<EventTap<'_>>,
        blob: &mut Option<(Digest, &mut (dyn Write + Send))>,
    ) -> Result<(), Stop> {
        stats.bytes_total = stats.bytes_total.saturating_add(header.size);
        if stats.bytes_total > self.limits.max_total_size {
            return Err(self.stop(".", Error::limit(".", "archive content", self.limits.max_total_size, stats.bytes_total)));
        }
        let name = match self.classify(pass, &header) {
            Some(n) => n,
            None => return self.skip(pass, &header),
        };
        match name {
            Name::File(rel) if format::LISTED_FILES.iter().any(|(n, _)| *n == rel) => {
                self.listed_entry(pass, manifest, manifest_bytes, &rel, &header, stats, on_event)
            }
            Name::Dir(rel) if rel == format::BLOB_DIR => {
                self.missing_from_plan(pass, pass.plan.len());
                if std::mem::replace(&mut pass.blobs.dir_seen, true) {
                    self.findings.push(Finding::new(format::BLOB_DIR, FindingCode::Malformed, "duplicate directory entry"));
                } else {
                    pass.with_sink(|s| s.dir(format::BLOB_DIR));
                }
                Ok(())
            }
            Name::Dir(rel) if rel.starts_with("blobs/") => self.shard_entry(pass, &rel),
            Name::File(rel) if rel.starts_with("blobs/") => self.archive_blob(pass, &rel, &header, stats, blob),
            Name::Top | Name::Dir(_) | Name::File(_) => {
                let rel = match name {
                    Name::Top => ".".to_string(),
                    Name::Dir(r) | Name::File(r) => r,
                };
                let known = rel == format::MANIFEST_FILE || rel == format::SIGNATURE_FILE || rel == ".";
                let (code, message) = if known {
                    (FindingCode::Malformed, "duplicate or misplaced entry: it must appear once, at the start of the archive")
                } else {
                    (FindingCode::Unlisted, "an entry that is not part of the bundle layout")
                };
                self.findings.push(Finding::new(&rel, code, message));
                self.skip(pass, &header)
            }
        }
    }

    /// The entry's name relative to the top directory, checked as a bundle
    /// path; None (with a finding) when it is not one.
    fn classify(&self, pass: &Pass<'_>, header: &EntryHeader) -> Option<Name> {
        let Some(rest) = header.name.strip_prefix(&pass.top).and_then(|r| r.strip_prefix('/')) else {
            let e = Error::InvalidPath { name: header.name.clone(), reason: "outside the archive's top directory" };
            self.findings.error(&header.name, e);
            return None;
        };
        let (rel, is_dir) = match rest.strip_suffix('/') {
            Some(r) => (r, true),
            None => (rest, false),
        };
        if rel.is_empty() && is_dir {
            return Some(Name::Top);
        }
        if is_dir != (header.kind == EntryKind::Dir) {
            let e = Error::InvalidPath { name: header.name.clone(), reason: "a directory's name must end with '/', a file's must not" };
            self.findings.error(&header.name, e);
            return None;
        }
        if let Err(e) = crate::path::BundlePath::parse(rel) {
            self.findings.error(&header.name, e);
            return None;
        }
        Some(if is_dir { Name::Dir(rel.to_string()) } else { Name::File(rel.to_string()) })
    }

    /// Skips an entry that is not checked, within [`SKIP_LIMIT`].
    fn skip(&self, pass: &mut Pass<'_>, header: &EntryHeader) -> Result<(), Stop> {
        pass.skipped = pass.skipped.saturating_add(header.size);
        if pass.skipped > SKIP_LIMIT {
            return Err(self.stop(".", Error::limit(".", "bytes of entries that are not part of the bundle", SKIP_LIMIT, pass.skipped)));
        }
        Ok(())
    }

    /// Records a finding that ends the pass.
    fn stop(&self, path: &str, e: Error) -> Stop {
        self.findings.error(path, e);
        Stop
    }

    fn next_or_stop(&self, pass: &mut Pass<'_>) -> Result<Option<EntryHeader>, Stop> {
        pass.tar.next_entry().map_err(|e| self.stop(".", e))
    }

    /// Reads a whole small entry (at most `limit` bytes), through the sink.
    fn read_entry(&self, pass: &mut Pass<'_>, rel: &str, size: u64, limit: u64) -> Option<Vec<u8>> {
        if size > limit {
            return self.findings.ok(rel, Err(Error::limit(rel, "file size", limit, size)));
        }
        pass.with_sink(|s| s.begin(rel, size));
        let mut bytes = Vec::with_capacity(size as usize);
        let read = pass.body().read_to_end(&mut bytes).map_err(|e| fsutil::stream_error(rel, e));
        let bytes = self.findings.ok(rel, read.map(|_| bytes))?;
        pass.with_sink(|s| s.end());
        Some(bytes)
    }

    /// Reports the planned files before `upto` as missing and drops them from the plan.
    fn missing_from_plan(&self, pass: &mut Pass<'_>, upto: usize) {
        for name in pass.plan.drain(..upto) {
            let message = "listed in the manifest, absent from the archive (or out of order)";
            self.findings.push(Finding::new(name, FindingCode::Missing, message));
        }
    }

    /// After the last entry: whatever was planned and not met is missing.
    fn archive_end(&self, pass: &mut Pass<'_>) {
        self.missing_from_plan(pass, pass.plan.len());
        if !pass.blobs.dir_seen {
            self.findings.push(Finding::new(format::BLOB_DIR, FindingCode::Missing, "the blobs/ directory entry is absent"));
        }
        if let Some(list) = pass.list.as_ref().map(CheckedList::reader) {
            self.missing_blobs(&list, pass.blobs.next, list.count());
        }
        // Cross-file rules need the log's count; without a log there is nothing to compare.
        if let (Some(docs), Some((count, _))) = (pass.parsed.as_ref(), pass.events) {
            let list = pass.list.as_ref().map(CheckedList::reader);
            self.archive_cross_file(docs, count, pass.index.as_ref(), list.as_ref());
        }
    }

    /// Reports the listed blobs `from..to` as missing.
    fn missing_blobs(&self, list: &BlobList<'_>, from: u32, to: u32) {
        for record in list.records(from..to).flatten() {
            let rel = blob_path(&record.header.hash);
            self.findings.push(Finding::new(&rel, FindingCode::Missing, "listed in blobs.cath-list, absent from the archive"));
        }
    }

    /// A listed file (one of [`format::LISTED_FILES`]).
    #[allow(clippy::too_many_arguments)]
    fn listed_entry(
        &self,
        pass: &mut Pass<'_>,
        manifest: &Manifest,
        manifest_bytes: &[u8],
        rel: &str,
        header: &EntryHeader,
        stats: &mut VerifyStats,
        on_event: Option<EventTap<'_>>,
    ) -> Result<(), Stop> {
        let Some(at) = pass.plan.iter().position(|n| *n == rel) else {
            let (code, message) = if manifest.files.contains_key(rel) {
                (FindingCode::Malformed, "duplicate or out-of-order entry")
            } else {
                (FindingCode::Unlisted, "the manifest does not list this file")
            };
            self.findings.push(Finding::new(rel, code, message));
            return self.skip(pass, header);
        };
        self.missing_from_plan(pass, at);
        let name: &'static str = pass.plan.remove(0);
        pass.seen.insert(name.to_string());
        let entry = &manifest.files[name];
        if header.size != entry.size {
            let e = Error::SizeMismatch { file: name.into(), what: "size", expected: entry.size, found: header.size };
            self.findings.error(name, e);
            return self.skip(pass, header);
        }
        stats.files += 1;
        match name {
            format::BLOB_LIST_FILE => self.list_entry(pass, manifest, manifest_bytes, header, stats),
            format::INDEX_FILE => {
                pass.index = self.spool_entry(pass, manifest, name, stats);
                Ok(())
            }
            format::EVENTS_FILE => {
                self.log_entry(pass, manifest, header, stats, on_event);
                Ok(())
            }
            format::LOG_OUTBOARD_FILE | format::INDEX_OUTBOARD_FILE => {
                self.hashed_entry(pass, name, entry.hash, stats);
                Ok(())
            }
            _ => {
                let limit = if name == format::SNAPSHOT_FILE { self.limits.max_snapshot_size } else { self.limits.max_document_size };
                let bytes = self.read_entry(pass, name, header.size, limit);
                if let Some(bytes) = bytes.and_then(|b| self.hashed_document(name, entry.hash, b, stats)) {
                    pass.docs.insert(name, bytes);
                }
                Ok(())
            }
        }
    }

    /// Keeps an entry (in memory or a temporary file) while hashing it;
    /// the contents only when they are the committed bytes.
    fn spool_entry(&self, pass: &mut Pass<'_>, manifest: &Manifest, name: &'static str, stats: &mut VerifyStats) -> Option<Contents> {
        let size = pass.tar.remaining();
        pass.with_sink(|s| s.begin(name, size));
        let mut spool = Contents::spool();
        // The index's outboard (in a 1.1 bundle) is made in the same pass.
        let outboard = manifest.outboard_entry(name);
        let mut hasher = blake3::Hasher::new();
        let mut tree = outboard.map(|_| TreeHasher::new(size, format::outboard::GROUP_CHUNK_LOG));
        let mut buf = vec![0u8; 1 << 20];
        let tick = self.tick();
        loop {
            let n = match pass.body().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return self.findings.ok(name, Err(fsutil::stream_error(name, e))),
            };
            match &mut tree {
                Some(t) => t.update(&buf[..n]),
                None => {
                    hasher.update(&buf[..n]);
                }
            }
            self.findings.ok(name, spool.write_all(&buf[..n]).map_err(|e| Error::output("temporary file", e)))?;
            tick(n as u64);
        }
        pass.with_sink(|s| s.end());
        stats.bytes_hashed += size;
        let (root, made) = match tree.map(|t| t.finish()) {
            // Fewer bytes than the header said: the archive reader reports it.
            Some(None) => return None,
            Some(Some((root, made))) => (root, Some(made)),
            None => (Digest::finished(&hasher), None),
        };
        if !self.committed(name, manifest.files[name].hash, root) {
            return None;
        }
        if let (Some((outboard_name, committed)), Some(made)) = (outboard, made) {
            self.outboard_agrees(name, outboard_name, made, committed);
        }
        self.findings.ok(name, Contents::from_spool(spool, name))
    }

    /// The blob list: kept, hashed, checked, and the limits applied.
    fn list_entry(
        &self,
        pass: &mut Pass<'_>,
        manifest: &Manifest,
        manifest_bytes: &[u8],
        header: &EntryHeader,
        stats: &mut VerifyStats,
    ) -> Result<(), Stop> {
        let limit =
            self.limits.max_blobs.saturating_mul(format::BLOB_LIST_RECORD_LEN as u64).saturating_add(format::BLOB_LIST_HEADER_LEN as u64);
        if header.size > limit {
            self.findings.error(format::BLOB_LIST_FILE, Error::limit(format::BLOB_LIST_FILE, "file size", limit, header.size));
            return self.skip(pass, header);
        }
        let Some(contents) = self.spool_entry(pass, manifest, format::BLOB_LIST_FILE, stats) else { return Ok(()) };
        let Some((count, totals)) = self.check_list(manifest, &contents) else { return Ok(()) };
        if !self.within_limits(manifest, manifest_bytes, &totals) {
            return Err(Stop);
        }
        if let Some(p) = self.progress {
            let listed: u64 = manifest.files.values().fold(0u64, |sum, e| sum.saturating_add(e.size));
            p.start(listed.saturating_add(totals.stored));
            p.advance(stats.bytes_hashed);
        }
        pass.list = Some(CheckedList { contents, count });
        Ok(())
    }

    /// The log, checked against the kept index as it streams by; in a 1.1
    /// bundle, the outboards of both are rebuilt on the way.
    fn log_entry(
        &self,
        pass: &mut Pass<'_>,
        manifest: &Manifest,
        header: &EntryHeader,
        stats: &mut VerifyStats,
        on_event: Option<EventTap<'_>>,
    ) {
        let name = format::EVENTS_FILE;
        if pass.parsed.is_none() {
            pass.parsed = Some(self.parse_documents(&pass.docs));
        }
        pass.with_sink(|s| s.begin(name, header.size));
        let Pass { tar, sink, sink_error, parsed, list, index, events, .. } = pass;
        let mut body = Body { tar, sink: sink.as_deref_mut(), sink_error };
        let list = list.as_ref().map(CheckedList::reader);
        let index_reader = index.as_ref().and_then(|c| self.findings.ok(format::INDEX_FILE, IndexReader::new(c, format::INDEX_FILE)));
        let cx = LogContext {
            log_hash: manifest.files[name].hash,
            log_outboard: manifest.files.get(format::LOG_OUTBOARD_FILE).map(|e| e.hash),
            run_id: parsed.as_ref().and_then(|d| d.metadata.as_ref()).map(|m| m.run_id),
            nodes: parsed.as_ref().and_then(|d| d.nodes.as_ref()),
            list: list.as_ref(),
            on_event,
        };
        self.streamed_log(&mut body, header.size, index_reader.as_ref(), &cx, events, stats);
        pass.with_sink(|s| s.end());
    }

    /// Decodes and checks the log read from `src` (all `size` bytes of it).
    fn streamed_log(
        &self,
        src: &mut (dyn Read + Send),
        size: u64,
        index: Option<&IndexReader<'_>>,
        cx: &LogContext<'_>,
        events: &mut Option<(u32, Encoding)>,
        stats: &mut VerifyStats,
    ) {
        let name = format::EVENTS_FILE;
        let Some(stream) = self.findings.ok(name, Forward::new(src, size, name)) else { return };
        let tick = self.tick();
        match LogReader::new(&stream, name, self.limits) {
            Ok(log) => {
                *events = Some((log.header().count, log.header().encoding));
                stats.events = self.check_log(&log, index, cx, &tick);
            }
            Err(e) => {
                self.findings.error(name, e);
                // A log whose header does not parse is still hashed, to say whether it is the committed one.
                self.check_hash(name, &stream, cx.log_hash, &tick);
            }
        }
        stats.bytes_hashed += size;
        if let Err(e) = stream.drain() {
            self.findings.error(name, e);
        }
    }

    /// An entry only hashed as it streams by (an outboard, which may be
    /// larger than a document and is checked against its file elsewhere).
    fn hashed_entry(&self, pass: &mut Pass<'_>, name: &'static str, expected: Digest, stats: &mut VerifyStats) {
        let size = pass.tar.remaining();
        pass.with_sink(|s| s.begin(name, size));
        let tick = self.tick();
        let mut body = pass.body();
        if let Some(stream) = self.findings.ok(name, Forward::new(&mut body, size, name)) {
            self.check_hash(name, &stream, expected, &tick);
            if let Err(e) = stream.drain() {
                self.findings.error(name, e);
            }
        }
        stats.bytes_hashed += size;
        pass.with_sink(|s| s.end());
    }

    /// A shard directory `blobs/<hh>`: it must hold at least one listed
    /// blob, and shards come in order.
    fn shard_entry(&self, pass: &mut Pass<'_>, rel: &str) -> Result<(), Stop> {
        let shard = &rel[format::BLOB_DIR.len() + 1..];
        if !is_shard_name(shard) {
            self.findings.push(Finding::new(rel, FindingCode::Unlisted, "not a shard directory (two lowercase hex characters)"));
            return Ok(());
        }
        let byte = u8::from_str_radix(shard, 16).expect("checked shard name");
        if !pass.blobs.dir_seen {
            self.findings.push(Finding::new(format::BLOB_DIR, FindingCode::Missing, "the blobs/ directory entry must precede its shards"));
            pass.blobs.dir_seen = true;
            self.missing_from_plan(pass, pass.plan.len());
        }
        if pass.blobs.shard.is_some_and(|s| s >= byte) {
            self.findings.push(Finding::new(rel, FindingCode::Malformed, "duplicate or out-of-order shard directory entry"));
            return Ok(());
        }
        let holds = pass.list.as_ref().map(|list| list.reader().range_with_first_byte(byte).map(|r| !r.is_empty()).unwrap_or(false));
        if holds == Some(false) {
            self.findings.push(Finding::new(rel, FindingCode::Unlisted, "a shard directory that holds no listed blob"));
        }
        pass.blobs.shard = Some(byte);
        pass.with_sink(|s| s.dir(rel));
        Ok(())
    }

    /// A blob entry, merge-joined with the list.
    fn archive_blob(
        &self,
        pass: &mut Pass<'_>,
        rel: &str,
        header: &EntryHeader,
        stats: &mut VerifyStats,
        blob: &mut Option<(Digest, &mut (dyn Write + Send))>,
    ) -> Result<(), Stop> {
        let hash = rel.strip_prefix("blobs/").and_then(|r| r.split_once('/')).and_then(|(shard, leaf)| {
            let h = Digest::parse(leaf).ok().filter(|h| blob_path(h) == rel)?;
            Some(h).filter(|_| shard.len() == 2)
        });
        let Some(hash) = hash else {
            let e = Error::InvalidPath { name: rel.to_string(), reason: "not blobs/<hh>/<64 lowercase hex> in the right shard" };
            self.findings.error(rel, e);
            return self.skip(pass, header);
        };
        if pass.blobs.shard != Some(hash.0[0]) {
            self.findings.push(Finding::new(rel, FindingCode::Malformed, "blob entry not preceded by its shard directory entry"));
        }
        // Taken out for the join, which needs the pass mutably; put back after.
        let checked = pass.list.take();
        let result = match &checked {
            Some(list) => self.join_blob(pass, &list.reader(), rel, hash, header, stats, blob),
            // Without a usable list nothing can be checked (the list's finding says why).
            None => self.skip(pass, header),
        };
        pass.list = checked;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn join_blob(
        &self,
        pass: &mut Pass<'_>,
        list: &BlobList<'_>,
        rel: &str,
        hash: Digest,
        header: &EntryHeader,
        stats: &mut VerifyStats,
        blob: &mut Option<(Digest, &mut (dyn Write + Send))>,
    ) -> Result<(), Stop> {
        let mut next = pass.blobs.next;
        let mut record: Option<BlobRecord> = None;
        while next < list.count() {
            let r = match list.record(next) {
                Ok(r) => r,
                Err(e) => return Err(self.stop(format::BLOB_LIST_FILE, e)),
            };
            if r.header.hash >= hash {
                record = Some(r).filter(|r| r.header.hash == hash);
                break;
            }
            next += 1;
        }
        self.missing_blobs(list, pass.blobs.next, next);
        pass.blobs.next = next;
        let Some(record) = record else {
            let (code, message) = if pass.blobs.last.is_some_and(|l| l >= hash) {
                (FindingCode::Malformed, "duplicate or out-of-order blob entry")
            } else {
                (FindingCode::Unlisted, "a blob that blobs.cath-list does not list")
            };
            self.findings.push(Finding::new(rel, code, message));
            return self.skip(pass, header);
        };
        pass.blobs.next += 1;
        pass.blobs.last = Some(hash);
        pass.blobs.found += 1;
        if header.size != record.stored_size {
            let e = Error::SizeMismatch { file: rel.to_string(), what: "size", expected: record.stored_size, found: header.size };
            self.findings.error(rel, e);
            return self.skip(pass, header);
        }
        if record.header.size > self.limits.max_blob_size {
            self.findings.error(rel, Error::limit(rel, "blob content size", self.limits.max_blob_size, record.header.size));
            return self.skip(pass, header);
        }
        let out = blob.as_mut().filter(|(h, _)| *h == hash).map(|(_, w)| &mut **w);
        if out.is_none() && header.size <= HELD_BLOB_MAX {
            return self.hold_blob(pass, rel, record, header.size, stats);
        }
        pass.with_sink(|s| s.begin(rel, header.size));
        let mut body = pass.body();
        let stream = match Forward::new(&mut body, header.size, rel) {
            Ok(s) => s,
            Err(e) => return Err(self.stop(rel, e)),
        };
        let mut reader = SeqReader::new(&stream, rel, 0, record.hashes_whole_file()).with_window(BLOB_WINDOW);
        if let Err(e) = check_blob_data(&mut reader, &record, rel, &self.tick(), out) {
            self.findings.error(rel, e);
        }
        drop(reader);
        let drained = stream.drain();
        drop(stream);
        stats.bytes_hashed += header.size;
        if let Err(e) = drained {
            return Err(self.stop(rel, e));
        }
        pass.with_sink(|s| s.end());
        Ok(())
    }

    /// Reads a small blob whole (through the sink) and holds it for a
    /// parallel check; checks the held blobs once there are enough.
    fn hold_blob(&self, pass: &mut Pass<'_>, rel: &str, record: BlobRecord, size: u64, stats: &mut VerifyStats) -> Result<(), Stop> {
        pass.with_sink(|s| s.begin(rel, size));
        // `size` is at most HELD_BLOB_MAX.
        let mut stored = Vec::with_capacity(size as usize);
        if let Err(e) = pass.body().read_to_end(&mut stored) {
            return Err(self.stop(rel, fsutil::stream_error(rel, e)));
        }
        if stored.len() as u64 != size {
            return Err(self.stop(rel, Error::truncated(rel, "blob entry", 0, size, stored.len() as u64)));
        }
        pass.with_sink(|s| s.end());
        stats.bytes_hashed += size;
        pass.held.bytes += stored.len();
        pass.held.blobs.push(HeldBlob { rel: rel.to_string(), record, stored });
        if pass.held.is_full() {
            self.check_held(&mut pass.held);
        }
        Ok(())
    }

    /// Checks the held blobs on every core, exactly as a blob streamed by
    /// is checked, and empties the batch.
    fn check_held(&self, held: &mut HeldBlobs) {
        let tick = self.tick();
        held.blobs.par_chunks(HELD_GROUP).for_each(|group| {
            let blobs: Vec<(&str, &BlobRecord, &[u8])> = group.iter().map(|b| (b.rel.as_str(), &b.record, b.stored.as_slice())).collect();
            check_in_memory(&blobs, &tick, &|rel, e| self.findings.error(rel, e));
        });
        held.blobs.clear();
        held.bytes = 0;
    }

    /// The cross-file rules, with the log's count from its header.
    fn archive_cross_file(&self, docs: &Documents, count: u32, index: Option<&Contents>, list: Option<&BlobList<'_>>) {
        let index = index.and_then(|c| IndexReader::new(c, format::INDEX_FILE).ok());
        self.cross_file_counts(docs, Some(count), index.as_ref(), list);
    }

    /// A valid archive's contents, for the caller.
    fn archive_result(&self, pass: &mut Pass<'_>, manifest: Manifest, manifest_bytes: Vec<u8>) -> Option<ArchiveVerified> {
        if !self.findings.is_empty() {
            return None;
        }
        let docs = pass.parsed.take()?.verified(manifest, manifest_bytes)?;
        let (_, encoding) = pass.events?;
        Some(ArchiveVerified { docs, encoding, index: pass.index.take()?, blob_list: pass.list.take()?.contents })
    }
}
