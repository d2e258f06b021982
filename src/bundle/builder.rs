//! `BundleBuilder`: writes a bundle into a staging directory beside the
//! output and moves it into place only once everything is written and synced.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use uuid::Uuid;

use super::idsort::IdSorter;
use super::replace;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::blob::{encode_blob_with, encode_list, BlobFormat, BlobRecord, EncodedBlob};
use crate::format::event::{Encoding, Event, EventRules};
use crate::format::index::{write_index, IndexHeader};
use crate::format::log::LogWriter;
use crate::format::manifest::{FileEntry, Manifest};
use crate::format::model::{Dag, Metadata, Snapshot};
use crate::format::signature::SecretKey;
use crate::format::{self, json};
use crate::fsutil::{self, ReadFile};
use crate::limits::Limits;
use crate::text::Timestamp;

/// How a bundle is built.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// Encoding of event records.
    pub encoding: Encoding,
    /// zstd level for blobs; `None` stores every blob uncompressed.
    pub compression_level: Option<i32>,
    /// Bundle id; random when `None`.
    pub bundle_id: Option<Uuid>,
    /// Creation time; now when `None`.
    pub created_at: Option<Timestamp>,
    /// Replace an existing bundle at the output path (never anything else).
    pub overwrite: bool,
    /// Limits applied to what is written.
    pub limits: Limits,
    /// Signs the manifest with this key, writing `MANIFEST.sig`.
    pub signing_key: Option<Arc<SecretKey>>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            encoding: Encoding::Postcard,
            compression_level: Some(format::DEFAULT_ZSTD_LEVEL),
            bundle_id: None,
            created_at: None,
            overwrite: false,
            limits: Limits::default(),
            signing_key: None,
        }
    }
}

impl BuildOptions {
    /// Sets the event encoding.
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Sets the zstd level (`None`: store blobs uncompressed).
    pub fn compression_level(mut self, level: Option<i32>) -> Self {
        self.compression_level = level;
        self
    }

    /// Sets the bundle id.
    pub fn bundle_id(mut self, id: Uuid) -> Self {
        self.bundle_id = Some(id);
        self
    }

    /// Sets the creation time.
    pub fn created_at(mut self, at: Timestamp) -> Self {
        self.created_at = Some(at);
        self
    }

    /// Replace an existing bundle at the output path.
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Signs the bundle with `key`.
    pub fn signing_key(mut self, key: Option<Arc<SecretKey>>) -> Self {
        self.signing_key = key;
        self
    }
}

/// What a build wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuildSummary {
    /// Where the bundle is.
    pub path: PathBuf,
    /// Its id.
    pub bundle_id: Uuid,
    /// Events written.
    pub events: u64,
    /// Distinct blobs written.
    pub blobs: u64,
    /// Sum of every file's size.
    pub total_bytes: u64,
}

/// Writes a bundle. Events and blobs go to disk as they are added.
pub struct BundleBuilder {
    output: PathBuf,
    staging: PathBuf,
    /// Held (locked) until the builder is done: tells other builds that
    /// this staging directory is alive.
    _lock: File,
    options: BuildOptions,
    metadata: Option<Metadata>,
    workflow: Option<String>,
    dag: Option<Dag>,
    snapshot: Option<Snapshot>,
    log: Option<LogWriter>,
    offsets: BufWriter<File>,
    times: BufWriter<File>,
    ids: IdSorter,
    rules: EventRules,
    first_run: Option<Uuid>,
    /// Blobs named by `BlobStored` events, and node ids named by events:
    /// checked against the blobs and the DAG at build.
    blob_refs: BTreeSet<Digest>,
    node_refs: HashSet<Uuid>,
    blobs: BlobFiles,
    /// The blobs are with a [`BlobWriter`] (see [`BundleBuilder::split_blobs`]).
    blobs_split: bool,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    finished: bool,
}

/// The blob files written so far: their records, their bytes, and which
/// shard directories exist.
pub(crate) struct BlobFiles {
    records: BTreeMap<Digest, BlobRecord>,
    bytes: u64,
    shards_made: [bool; 256],
}

/// Writes blob files apart from the builder (on another thread while events
/// are added); given back with [`BundleBuilder::join_blobs`].
pub(crate) struct BlobWriter {
    files: BlobFiles,
    staging: PathBuf,
    options: BuildOptions,
}

impl BlobWriter {
    /// Encodes a blob with the caller's zstd context, so that blobs can be
    /// compressed on every core.
    pub(crate) fn encode(
        &self,
        zstd: &mut Option<zstd::bulk::Compressor<'static>>,
        content: &[u8],
        hash: Digest,
        blob_format: BlobFormat,
    ) -> Result<EncodedBlob<'static>, Error> {
        encode_checked(&self.options, zstd, content, hash, blob_format).map(EncodedBlob::into_owned)
    }

    /// Stores encoded blobs (see [`BlobFiles::add`]); the total size limit
    /// counts the blobs alone here, and the whole bundle when joined.
    pub(crate) fn add(&mut self, blobs: Vec<EncodedBlob<'_>>) -> Result<(), Error> {
        self.files.add(&self.staging, &self.options.limits, 0, blobs)
    }
}

impl BlobFiles {
    fn new() -> Self {
        BlobFiles { records: BTreeMap::new(), bytes: 0, shards_made: [false; 256] }
    }

    /// Stores encoded blobs, their files written on every core; identical
    /// content is stored once. The count limit, and the total size limit
    /// (with `other_bytes` of the rest of the bundle), are checked before any
    /// file is written.
    fn add(&mut self, staging: &Path, limits: &Limits, other_bytes: u64, blobs: Vec<EncodedBlob<'_>>) -> Result<(), Error> {
        let mut new: Vec<(PathBuf, EncodedBlob<'_>)> = Vec::with_capacity(blobs.len());
        let mut seen = HashSet::new();
        let mut bytes = self.bytes;
        for blob in blobs {
            let hash = blob.record.header.hash;
            if self.records.contains_key(&hash) || !seen.insert(hash) {
                continue;
            }
            let count = (self.records.len() + new.len()) as u64;
            if count >= limits.max_blobs.min(u32::MAX as u64) {
                return Err(Error::limit("blob", "blob count", limits.max_blobs, count + 1));
            }
            bytes += blob.record.stored_size;
            let path = staging.join(format::blob_path(&hash));
            let shard = usize::from(hash.0[0]);
            if !self.shards_made[shard] {
                let dir = path.parent().expect("blob path has a shard");
                fs::create_dir(dir).map_err(|e| Error::output(dir, e))?;
                self.shards_made[shard] = true;
            }
            new.push((path, blob));
        }
        check_total(limits, bytes + other_bytes)?;
        // One write of header and data per file, through a buffer per thread.
        new.par_iter().try_for_each_init(Vec::new, |scratch, (path, blob)| {
            scratch.clear();
            scratch.extend_from_slice(&blob.header);
            scratch.extend_from_slice(&blob.data);
            let mut out = File::options().write(true).create_new(true).open(path).map_err(|e| Error::output(path, e))?;
            out.write_all(scratch).map_err(|e| Error::output(path, e))
        })?;
        self.bytes = bytes;
        for (_, blob) in new {
            self.records.insert(blob.record.header.hash, blob.record);
        }
        Ok(())
    }
}

/// Refuses a bundle of `total` bytes past the total size limit.
fn check_total(limits: &Limits, total: u64) -> Result<(), Error> {
    if total > limits.max_total_size {
        return Err(Error::limit("bundle", "total size", limits.max_total_size, total));
    }
    Ok(())
}

impl BundleBuilder {
    /// Starts a bundle that [`BundleBuilder::build`] will place at `output`.
    /// Fails at once if `output` exists and is not provably a bundle that
    /// overwriting was asked for.
    pub fn create(output: impl AsRef<Path>, options: BuildOptions) -> Result<Self, Error> {
        let output = output.as_ref().to_path_buf();
        replace::check_output(&output, options.overwrite)?;
        let name = output.file_name().ok_or_else(|| Error::input("output path", format!("{} has no file name", output.display())))?;
        let name = name.to_string_lossy().into_owned();
        let parent = fsutil::parent_dir(&output);
        fs::create_dir_all(&parent).map_err(|e| Error::output(&parent, e))?;
        let (staging, lock) = replace::staging_dir(&parent, &name)?;
        let mut builder = BundleBuilder {
            output,
            staging: staging.clone(),
            _lock: lock,
            offsets: BufWriter::new(tempfile::tempfile_in(&staging).map_err(|e| Error::output(&staging, e))?),
            times: BufWriter::new(tempfile::tempfile_in(&staging).map_err(|e| Error::output(&staging, e))?),
            options,
            metadata: None,
            workflow: None,
            dag: None,
            snapshot: None,
            log: None,
            ids: IdSorter::new(),
            rules: EventRules::new(None),
            first_run: None,
            blob_refs: BTreeSet::new(),
            node_refs: HashSet::new(),
            blobs: BlobFiles::new(),
            blobs_split: false,
            zstd: None,
            finished: false,
        };
        fs::create_dir(staging.join(format::BLOB_DIR)).map_err(|e| Error::output(&staging, e))?;
        builder.log = Some(LogWriter::create(&staging.join(format::EVENTS_FILE), builder.options.encoding, &builder.options.limits)?);
        Ok(builder)
    }

    /// Sets `metadata.json`.
    pub fn set_metadata(&mut self, metadata: Metadata) -> Result<&mut Self, Error> {
        if let Some(run) = self.first_run {
            check_run_id(metadata.run_id, run)?;
        }
        self.metadata = Some(metadata);
        Ok(self)
    }

    fn metadata_run(&self) -> Option<Uuid> {
        self.metadata.as_ref().map(|m| m.run_id)
    }

    /// Sets `workflow.cath`.
    pub fn set_workflow(&mut self, source: impl Into<String>) -> &mut Self {
        self.workflow = Some(source.into());
        self
    }

    /// Sets `dag.json`.
    pub fn set_dag(&mut self, dag: Dag) -> Result<&mut Self, Error> {
        dag.validate(format::DAG_FILE)?;
        self.dag = Some(dag);
        Ok(self)
    }

    /// Sets the optional snapshot.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) -> &mut Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// Appends an event to the log on disk. It must obey the event rules
    /// (payload hash, the run's id, logical time never going back); its
    /// node and any blob it names are checked against the DAG and the blobs
    /// at [`BundleBuilder::build`].
    pub fn add_event(&mut self, event: &Event) -> Result<u32, Error> {
        self.add_event_hashed(event, event.check_payload_hash())
    }

    /// [`BundleBuilder::add_event`] for an event whose payload hash was
    /// checked already (`hashed` is that check's result): callers check
    /// many on other threads and add them in order.
    pub(crate) fn add_event_hashed(&mut self, event: &Event, hashed: Result<(), Error>) -> Result<u32, Error> {
        if let Some(run) = self.metadata_run() {
            check_run_id(run, event.run_id)?;
        }
        self.first_run.get_or_insert(event.run_id);
        if let Some(blob) = self.rules.check_hashed(event, hashed)? {
            self.blob_refs.insert(blob);
        }
        if !event.node_id.is_nil() {
            self.node_refs.insert(event.node_id);
        }
        let log = self.log.as_mut().expect("log is open until build");
        let position = log.count();
        let offset = log.append(event)?;
        self.check_total()?;
        let staging = &self.staging;
        self.offsets.write_all(&offset.to_be_bytes()).map_err(|e| Error::output(staging, e))?;
        self.times.write_all(&event.logical_time.to_be_bytes()).map_err(|e| Error::output(staging, e))?;
        self.ids.push(*event.event_id.as_bytes(), position, &self.staging)?;
        Ok(position)
    }

    /// Stores a raw blob; returns its content hash. Identical content is stored once.
    pub fn add_blob(&mut self, content: &[u8]) -> Result<Digest, Error> {
        self.add_blob_as(content, BlobFormat::Raw)
    }

    /// Stores a blob of the given format; returns its content hash.
    pub fn add_blob_as(&mut self, content: &[u8], blob_format: BlobFormat) -> Result<Digest, Error> {
        self.add_blob_hashed(content, Digest::of(content), blob_format)
    }

    /// Stores a blob whose BLAKE3 the caller has computed.
    pub(crate) fn add_blob_hashed(&mut self, content: &[u8], hash: Digest, blob_format: BlobFormat) -> Result<Digest, Error> {
        if self.blobs.records.contains_key(&hash) {
            return Ok(hash);
        }
        let blob = encode_checked(&self.options, &mut self.zstd, content, hash, blob_format)?;
        self.add_encoded_blob(blob)
    }

    /// Stores an encoded blob; identical content is stored once.
    pub(crate) fn add_encoded_blob(&mut self, blob: EncodedBlob<'_>) -> Result<Digest, Error> {
        let hash = blob.record.header.hash;
        self.add_encoded_blobs(vec![blob])?;
        Ok(hash)
    }

    /// Stores encoded blobs (see [`BlobFiles::add`]).
    pub(crate) fn add_encoded_blobs(&mut self, blobs: Vec<EncodedBlob<'_>>) -> Result<(), Error> {
        if self.blobs_split {
            return Err(Error::input("blob", "the blobs are being written by a BlobWriter; join it first"));
        }
        let log_bytes = self.log.as_ref().map_or(0, LogWriter::len);
        self.blobs.add(&self.staging, &self.options.limits, log_bytes, blobs)
    }

    /// Hands the blob files to a [`BlobWriter`], so that blobs can be written
    /// while events are added; until [`BundleBuilder::join_blobs`], this
    /// builder refuses blobs, and the total size limit counts the events alone.
    pub(crate) fn split_blobs(&mut self) -> BlobWriter {
        self.blobs_split = true;
        let files = std::mem::replace(&mut self.blobs, BlobFiles::new());
        BlobWriter { files, staging: self.staging.clone(), options: self.options.clone() }
    }

    /// Takes the blob files back from `writer`; checks the total size of the whole bundle.
    pub(crate) fn join_blobs(&mut self, writer: BlobWriter) -> Result<(), Error> {
        self.blobs = writer.files;
        self.blobs_split = false;
        self.check_total()
    }

    /// Refuses a bundle growing past the total size limit.
    fn check_total(&self) -> Result<(), Error> {
        check_total(&self.options.limits, self.blobs.bytes + self.log.as_ref().map_or(0, LogWriter::len))
    }

    /// Events added so far.
    pub fn event_count(&self) -> u32 {
        self.log.as_ref().map_or(0, |l| l.count())
    }

    /// The cross-file rules, checked before anything more is written.
    fn check_references(&mut self, metadata: &Metadata, dag: &Dag) -> Result<(), Error> {
        let event_count = self.event_count();
        if metadata.event_count != u64::from(event_count) {
            let detail = format!("event_count says {}, but {event_count} events were added", metadata.event_count);
            return Err(Error::input("metadata", detail));
        }
        if metadata.node_count != dag.nodes.len() as u64 {
            let detail = format!("node_count says {}, but the DAG has {} nodes", metadata.node_count, dag.nodes.len());
            return Err(Error::input("metadata", detail));
        }
        let nodes = dag.node_ids();
        if let Some(node) = self.node_refs.iter().find(|n| !nodes.contains(n)) {
            return Err(Error::rule("event", "node reference", format!("an event names node {node}, which is not in the DAG")));
        }
        if let Some(blob) = self.blob_refs.iter().find(|h| !self.blobs.records.contains_key(h)) {
            return Err(Error::rule("event", "blob reference", format!("a BlobStored event names blob {blob}, which was not added")));
        }
        let Some(s) = &self.snapshot else { return Ok(()) };
        s.check_references(format::SNAPSHOT_FILE, &nodes, &mut |h| Ok(self.blobs.records.contains_key(h)))?;
        if s.log_position > u64::from(event_count) {
            let detail = format!("log_position {} is past the last event ({event_count})", s.log_position);
            return Err(Error::rule(format::SNAPSHOT_FILE, "log position", detail));
        }
        self.times.flush().map_err(|e| Error::output(&self.staging, e))?;
        let time_at = |p: u64| -> Result<u64, Error> {
            let mut b = [0u8; 8];
            self.times.get_ref().read_exact_at(&mut b, p * 8).map_err(|e| Error::io(&self.staging, e))?;
            Ok(u64::from_be_bytes(b))
        };
        let before = s.log_position.checked_sub(1).map(time_at).transpose()?;
        let after = (s.log_position < u64::from(event_count)).then(|| time_at(s.log_position)).transpose()?;
        if before.is_some_and(|t| s.logical_time < t) || after.is_some_and(|t| s.logical_time > t) {
            let detail = format!("logical_time {} is not between the events around log_position {}", s.logical_time, s.log_position);
            return Err(Error::rule(format::SNAPSHOT_FILE, "logical time", detail));
        }
        Ok(())
    }

    /// Writes the remaining files, syncs everything and moves the bundle into place.
    pub fn build(mut self) -> Result<BuildSummary, Error> {
        let missing = |what| Error::input("bundle", format!("{what} was not set"));
        let metadata = self.metadata.take().ok_or_else(|| missing("metadata"))?;
        let workflow = self.workflow.take().ok_or_else(|| missing("workflow"))?;
        let dag = self.dag.take().ok_or_else(|| missing("dag"))?;
        self.check_references(&metadata, &dag)?;
        let event_count = self.event_count();
        let staging = self.staging.clone();
        let mut files = BTreeMap::new();
        let mut put = |name: &str, bytes: &[u8], optional: bool| -> Result<(), Error> {
            fsutil::write_new(&staging.join(name), bytes)?;
            files.insert(name.to_string(), FileEntry { hash: Digest::of(bytes), size: bytes.len() as u64, optional });
            Ok(())
        };
        put(format::METADATA_FILE, &json::to_pretty_bytes(&metadata), false)?;
        put(format::WORKFLOW_FILE, workflow.as_bytes(), false)?;
        put(format::DAG_FILE, &json::to_pretty_bytes(&dag), false)?;
        if let Some(snapshot) = &self.snapshot {
            put(format::SNAPSHOT_FILE, &snapshot.encode_file(), true)?;
        }
        put(format::BLOB_LIST_FILE, &encode_list(self.blobs.records.values()), false)?;

        // The log, then the index that carries the log's hash.
        for (name, entry) in self.write_log_and_index(event_count)? {
            files.insert(name.to_string(), entry);
        }

        let bundle_id = self.options.bundle_id.unwrap_or_else(Uuid::new_v4);
        let total_bytes = files.values().map(|f| f.size).sum::<u64>() + self.blobs.bytes;
        let manifest = Manifest {
            bundle_version: format::BUNDLE_VERSION.to_string(),
            bundle_id,
            created_at: self.options.created_at.clone().unwrap_or_else(Timestamp::now),
            format: format::BUNDLE_FORMAT.to_string(),
            files,
            blob_count: self.blobs.records.len() as u64,
            signature: self.options.signing_key.as_ref().map(|_| format::SIGNATURE_FILE.to_string()),
        };
        let manifest_bytes = manifest.to_bytes();
        fsutil::write_new(&staging.join(format::MANIFEST_FILE), &manifest_bytes)?;
        let mut signature_bytes = 0;
        if let Some(key) = &self.options.signing_key {
            let text = key.sign_manifest(&manifest_bytes, &bundle_id);
            signature_bytes = text.len() as u64;
            fsutil::write_new(&staging.join(format::SIGNATURE_FILE), text.as_bytes())?;
        }

        // Blob files were written without a sync each; one syncfs makes them
        // (and every directory entry) durable before the bundle appears.
        fsutil::sync_filesystem(&staging)?;
        if let Some(kept) = replace::move_into_place(&staging, &self.output, self.options.overwrite)? {
            // The old output changed after it was proved to be a bundle: it is kept, not removed.
            return Err(Error::NotReplaceable {
                file: self.output.display().to_string(),
                reason: format!("the new bundle is in place; what was there changed while building and was kept at {}", kept.display()),
            });
        }
        fsutil::sync_dir(&fsutil::parent_dir(&self.output))?;
        self.finished = true;
        Ok(BuildSummary {
            path: self.output.clone(),
            bundle_id,
            events: event_count.into(),
            blobs: self.blobs.records.len() as u64,
            total_bytes: total_bytes + manifest_bytes.len() as u64 + signature_bytes,
        })
    }

    /// Finishes the log, hashes it, and writes the index that binds to it.
    fn write_log_and_index(&mut self, event_count: u32) -> Result<[(&'static str, FileEntry); 4], Error> {
        let staging = self.staging.clone();
        let log_size = self.log.take().expect("log is open until build").finish()?;
        // One pass over the log gives its hash (the root of its tree) and its outboard.
        let (log_hash, log_outboard) = write_outboard(&staging, format::EVENTS_FILE, log_size, format::LOG_OUTBOARD_FILE)?;
        let mut ids = std::mem::replace(&mut self.ids, IdSorter::new()).finish(&staging)?;
        let index_path = staging.join(format::INDEX_FILE);
        let index_file = File::options().write(true).create_new(true).open(&index_path).map_err(|e| Error::output(&index_path, e))?;
        let mut out = HashingWriter { inner: BufWriter::with_capacity(1 << 20, index_file), hasher: blake3::Hasher::new(), written: 0 };
        let mut offsets = rewind(&mut self.offsets, &staging)?;
        let mut times = rewind(&mut self.times, &staging)?;
        let header = IndexHeader { count: event_count, log_hash, log_size };
        write_index(&mut out, &header, &mut offsets, &mut times, &mut ids).map_err(|e| Error::output(&index_path, e))?;
        // Equal ids meet in the merge, which stops there.
        if let Some((a, b)) = ids.duplicate() {
            let detail = format!("event id {} was added twice (events {} and {})", Uuid::from_bytes(a.0), a.1, b.1);
            return Err(Error::rule("event", "event id", detail));
        }
        let index_file = out.inner.into_inner().map_err(|e| Error::output(&index_path, e.into_error()))?;
        index_file.sync_all().map_err(|e| Error::output(&index_path, e))?;
        let log = FileEntry { hash: log_hash, size: log_size, optional: false };
        let index = FileEntry { hash: Digest::finished(&out.hasher), size: out.written, optional: false };
        let (_, index_outboard) = write_outboard(&staging, format::INDEX_FILE, index.size, format::INDEX_OUTBOARD_FILE)?;
        Ok([
            (format::EVENTS_FILE, log),
            (format::LOG_OUTBOARD_FILE, log_outboard),
            (format::INDEX_FILE, index),
            (format::INDEX_OUTBOARD_FILE, index_outboard),
        ])
    }
}

impl Drop for BundleBuilder {
    fn drop(&mut self) {
        if !self.finished {
            // A build that did not finish leaves nothing behind.
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

fn check_run_id(expected: Uuid, found: Uuid) -> Result<(), Error> {
    if expected != found {
        return Err(Error::rule("event", "run id", format!("expected {expected}, found {found}")));
    }
    Ok(())
}

fn rewind(section: &mut BufWriter<File>, staging: &Path) -> Result<std::io::BufReader<File>, Error> {
    section.flush().map_err(|e| Error::output(staging, e))?;
    let mut file = section.get_ref().try_clone().map_err(|e| Error::output(staging, e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::output(staging, e))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, file))
}

/// A blob's size checked against the limit, then encoded with the build's compression level.
fn encode_checked<'c>(
    options: &BuildOptions,
    zstd: &mut Option<zstd::bulk::Compressor<'static>>,
    content: &'c [u8],
    hash: Digest,
    blob_format: BlobFormat,
) -> Result<EncodedBlob<'c>, Error> {
    debug_assert_eq!(hash, Digest::of(content));
    let limit = options.limits.max_blob_size;
    if content.len() as u64 > limit {
        return Err(Error::limit("blob", "blob size", limit, content.len() as u64));
    }
    encode_blob_with(zstd, content, hash, blob_format, options.compression_level)
}

/// Writes the outboard of the staged file `name` (`size` bytes) as
/// `outboard_name`, synced; returns the file's hash and the outboard's entry.
fn write_outboard(staging: &Path, name: &str, size: u64, outboard_name: &str) -> Result<(Digest, FileEntry), Error> {
    let data = ReadFile::open(&staging.join(name), name)?;
    let path = staging.join(outboard_name);
    let file = File::options().write(true).create_new(true).open(&path).map_err(|e| Error::output(&path, e))?;
    let mut out = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hasher: blake3::Hasher::new(), written: 0 };
    let reader = std::io::BufReader::with_capacity(1 << 20, data.into_read());
    let hash = format::outboard::write(reader, size, &mut out).map_err(|e| fsutil::stream_error(name, e))?;
    let file = out.inner.into_inner().map_err(|e| Error::output(&path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::output(&path, e))?;
    Ok((hash, FileEntry { hash: Digest::finished(&out.hasher), size: out.written, optional: false }))
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(builder: &BundleBuilder, contents: &[&[u8]]) -> Vec<EncodedBlob<'static>> {
        let encode = |c: &&[u8]| encode_checked(&builder.options, &mut None, c, Digest::of(c), BlobFormat::Raw).unwrap().into_owned();
        contents.iter().map(encode).collect()
    }

    fn blob_files(builder: &BundleBuilder) -> usize {
        walkdir::WalkDir::new(builder.staging.join("blobs")).into_iter().filter(|e| e.as_ref().unwrap().file_type().is_file()).count()
    }

    #[test]
    fn blob_limits_hold_for_batches_and_nothing_is_written_past_them() {
        let tmp = tempfile::tempdir().unwrap();
        let options = BuildOptions::default().limits(Limits::default().max_blobs(3));
        let mut b = BundleBuilder::create(tmp.path().join("b.cath-bundle"), options).unwrap();
        // A batch with a repeat inside it and a blob already held: stored once each.
        b.add_blob(b"one").unwrap();
        b.add_encoded_blobs(encoded(&b, &[b"one", b"two", b"two"])).unwrap();
        assert_eq!((b.blobs.records.len(), blob_files(&b)), (2, 2));
        // A batch that would pass the count limit is refused whole.
        let err = b.add_encoded_blobs(encoded(&b, &[b"three", b"four"])).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
        assert_eq!((b.blobs.records.len(), blob_files(&b)), (2, 2), "no file of a refused batch is written");
        b.add_encoded_blobs(encoded(&b, &[b"three"])).unwrap();
        assert!(b.add_blob(b"four").is_err());
        assert_eq!((b.blobs.records.len(), blob_files(&b)), (3, 3));
    }

    #[test]
    fn split_blobs_are_written_apart_and_joined_with_the_whole_size_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let options = BuildOptions::default().compression_level(None).limits(Limits::default().max_total_size(600));
        let mut b = BundleBuilder::create(tmp.path().join("b.cath-bundle"), options).unwrap();
        b.add_blob(b"before").unwrap();
        let mut writer = b.split_blobs();
        // While split, the builder refuses blobs; the writer takes them.
        assert!(b.add_blob(b"refused").is_err());
        let blobs: Vec<EncodedBlob<'static>> =
            [&b"one"[..], b"two", b"before"].iter().map(|c| writer.encode(&mut None, c, Digest::of(c), BlobFormat::Raw).unwrap()).collect();
        writer.add(blobs).unwrap();
        b.join_blobs(writer).unwrap();
        assert_eq!((b.blobs.records.len(), blob_files(&b)), (3, 3), "held once each, the refused one not written");
        b.add_blob(b"after").unwrap();
        // The writer alone is under the limit; joined with the events it is not.
        let mut writer = b.split_blobs();
        let big = vec![7u8; 150];
        writer.add(vec![writer.encode(&mut None, &big, Digest::of(&big), BlobFormat::Raw).unwrap()]).unwrap();
        let run = Uuid::from_u128(1);
        b.add_event(&Event::new(Uuid::from_u128(2), run, Uuid::nil(), 0, crate::format::event::EventKind::RunCreated, vec![0; 100]))
            .unwrap();
        let err = b.join_blobs(writer).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
    }

    #[test]
    fn the_total_size_limit_is_checked_before_a_batch_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let options = BuildOptions::default().compression_level(None).limits(Limits::default().max_total_size(200));
        let mut b = BundleBuilder::create(tmp.path().join("b.cath-bundle"), options).unwrap();
        let (small, large) = (vec![1u8; 50], vec![2u8; 120]);
        b.add_encoded_blobs(encoded(&b, &[&small])).unwrap();
        let err = b.add_encoded_blobs(encoded(&b, &[&large, &[3u8; 10]])).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
        assert_eq!((b.blobs.records.len(), blob_files(&b)), (1, 1));
    }
}
