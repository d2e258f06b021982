//! `BundleBuilder`: writes a bundle into a staging directory beside the
//! output and moves it into place only once everything is written and synced.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use uuid::Uuid;

use crate::blob::{encode_blob_with_hash, BlobFormat, BlobRecord};
use crate::digest::Digest;
use crate::error::Error;
use crate::event::{Encoding, Event};
use crate::format;
use crate::fsutil;
use crate::index::write_index;
use crate::limits::Limits;
use crate::log::LogWriter;
use crate::manifest::{FileEntry, Manifest};
use crate::model::{Dag, Metadata, Snapshot};
use crate::signing::{SecretKey, SIGNATURE_FILE};
use std::sync::Arc;

/// Prefix of staging directories: `.<output name>.cath-tmp-<pid>-<nonce>`.
pub const STAGING_MARKER: &str = ".cath-tmp-";

/// How a bundle is built.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Encoding of event records.
    pub encoding: Encoding,
    /// zstd level for blobs; `None` stores every blob uncompressed.
    pub compression_level: Option<i32>,
    /// Bundle id; random when `None`.
    pub bundle_id: Option<Uuid>,
    /// Creation time (RFC 3339 UTC); now when `None`.
    pub created_at: Option<String>,
    /// Replace an existing bundle at the output path.
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

/// What a build wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    options: BuildOptions,
    metadata: Option<Metadata>,
    workflow: Option<String>,
    dag: Option<Dag>,
    snapshot: Option<Snapshot>,
    log: Option<LogWriter>,
    offsets: BufWriter<File>,
    times: BufWriter<File>,
    ids: Vec<([u8; 16], u32)>,
    run_id: Option<Uuid>,
    last_time: u64,
    blobs: BTreeMap<Digest, BlobRecord>,
    blob_bytes: u64,
    shards_made: [bool; 256],
    scratch: Vec<u8>,
    finished: bool,
}

impl BundleBuilder {
    /// Starts a bundle that [`BundleBuilder::build`] will place at `output`.
    /// Fails at once if `output` exists and overwriting was not asked for.
    pub fn create(output: impl AsRef<Path>, options: BuildOptions) -> Result<Self, Error> {
        let output = output.as_ref().to_path_buf();
        check_output(&output, options.overwrite)?;
        let name = output
            .file_name()
            .ok_or_else(|| Error::InvalidInput { what: "output path", detail: format!("{} has no file name", output.display()) })?;
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        remove_stale_staging(&parent, &name.to_string_lossy());
        let nonce = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let staging = parent.join(format!(".{}{}{}-{:08x}", name.to_string_lossy(), STAGING_MARKER, std::process::id(), nonce));
        fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        let mut builder = BundleBuilder {
            output,
            staging: staging.clone(),
            offsets: BufWriter::new(tempfile::tempfile_in(&staging).map_err(|e| Error::io(&staging, e))?),
            times: BufWriter::new(tempfile::tempfile_in(&staging).map_err(|e| Error::io(&staging, e))?),
            options,
            metadata: None,
            workflow: None,
            dag: None,
            snapshot: None,
            log: None,
            ids: Vec::new(),
            run_id: None,
            last_time: 0,
            blobs: BTreeMap::new(),
            blob_bytes: 0,
            shards_made: [false; 256],
            scratch: Vec::new(),
            finished: false,
        };
        fs::create_dir(staging.join(format::BLOB_DIR)).map_err(|e| Error::io(&staging, e))?;
        builder.log = Some(LogWriter::create(&staging.join(format::EVENTS_FILE), builder.options.encoding, &builder.options.limits)?);
        Ok(builder)
    }

    /// Sets `metadata.json`.
    pub fn set_metadata(&mut self, metadata: Metadata) -> Result<&mut Self, Error> {
        metadata.validate(format::METADATA_FILE)?;
        if let Some(run) = self.run_id {
            check_run_id(metadata.run_id, run)?;
        }
        self.metadata = Some(metadata);
        Ok(self)
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

    /// Appends an event to the log on disk. Its payload hash must match, its
    /// run id must be the run's, and logical time must not go backwards.
    pub fn add_event(&mut self, event: &Event) -> Result<u32, Error> {
        event.check_payload_hash()?;
        let run = *self.run_id.get_or_insert(event.run_id);
        check_run_id(run, event.run_id)?;
        if let Some(m) = &self.metadata {
            check_run_id(m.run_id, event.run_id)?;
        }
        if event.logical_time < self.last_time {
            return Err(Error::InvalidInput {
                what: "event",
                detail: format!("event {} goes back in logical time: {} after {}", event.event_id, event.logical_time, self.last_time),
            });
        }
        let log = self.log.as_mut().expect("log is open until build");
        let position = log.count();
        let offset = log.append(event)?;
        self.check_total()?;
        let staging = &self.staging;
        self.offsets.write_all(&offset.to_be_bytes()).map_err(|e| Error::io(staging, e))?;
        self.times.write_all(&event.logical_time.to_be_bytes()).map_err(|e| Error::io(staging, e))?;
        self.ids.push((*event.event_id.as_bytes(), position));
        self.last_time = event.logical_time;
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
        debug_assert_eq!(hash, Digest::of(content));
        let limits = &self.options.limits;
        if content.len() as u64 > limits.max_blob_size {
            return Err(Error::limit("blob", "blob size", limits.max_blob_size, content.len() as u64));
        }
        if self.blobs.contains_key(&hash) {
            return Ok(hash);
        }
        if self.blobs.len() as u64 >= limits.max_blobs.min(u32::MAX as u64) {
            return Err(Error::limit("blob", "blob count", limits.max_blobs, self.blobs.len() as u64 + 1));
        }
        let blob = encode_blob_with_hash(content, hash, blob_format, self.options.compression_level)?;
        let path = self.staging.join(hash.blob_path());
        let shard = usize::from(hash.0[0]);
        if !self.shards_made[shard] {
            let dir = path.parent().expect("blob path has a shard");
            fs::create_dir(dir).map_err(|e| Error::io(dir, e))?;
            self.shards_made[shard] = true;
        }
        // One write of header and data, through a reused buffer.
        self.scratch.clear();
        self.scratch.extend_from_slice(&blob.header);
        self.scratch.extend_from_slice(&blob.data);
        let mut out = File::options().write(true).create_new(true).open(&path).map_err(|e| Error::io(&path, e))?;
        out.write_all(&self.scratch).map_err(|e| Error::io(&path, e))?;
        self.blob_bytes += blob.record.stored_size;
        self.blobs.insert(hash, blob.record);
        self.check_total()?;
        Ok(hash)
    }

    /// Refuses a bundle growing past the total size limit.
    fn check_total(&self) -> Result<(), Error> {
        let total = self.blob_bytes + self.log.as_ref().map_or(0, LogWriter::len);
        let limit = self.options.limits.max_total_size;
        if total > limit {
            return Err(Error::limit("bundle", "total size", limit, total));
        }
        Ok(())
    }

    /// Events added so far.
    pub fn event_count(&self) -> u32 {
        self.log.as_ref().map_or(0, |l| l.count())
    }

    /// Writes the remaining files, syncs everything and moves the bundle into place.
    pub fn build(mut self) -> Result<BuildSummary, Error> {
        let missing = |what| Error::InvalidInput { what: "bundle", detail: format!("{what} was not set") };
        let metadata = self.metadata.take().ok_or_else(|| missing("metadata"))?;
        let workflow = self.workflow.take().ok_or_else(|| missing("workflow"))?;
        let dag = self.dag.take().ok_or_else(|| missing("dag"))?;
        let event_count = self.event_count();
        if metadata.event_count != u64::from(event_count) {
            return Err(Error::InvalidInput {
                what: "metadata",
                detail: format!("event_count says {}, but {} events were added", metadata.event_count, event_count),
            });
        }
        if metadata.node_count != dag.nodes.len() as u64 {
            return Err(Error::InvalidInput {
                what: "metadata",
                detail: format!("node_count says {}, but the DAG has {} nodes", metadata.node_count, dag.nodes.len()),
            });
        }
        if let Some(s) = &self.snapshot {
            if s.log_position > u64::from(event_count) {
                return Err(Error::InvalidInput {
                    what: "snapshot",
                    detail: format!("log_position {} is past the last event ({event_count})", s.log_position),
                });
            }
        }
        let staging = self.staging.clone();
        let mut files = BTreeMap::new();
        let mut put = |name: &str, bytes: &[u8], optional: bool| -> Result<(), Error> {
            fsutil::write_new(&staging.join(name), bytes)?;
            files.insert(name.to_string(), FileEntry { hash: Digest::of(bytes), size: bytes.len() as u64, optional });
            Ok(())
        };
        put(format::METADATA_FILE, &crate::json::to_pretty_bytes(&metadata), false)?;
        put(format::WORKFLOW_FILE, workflow.as_bytes(), false)?;
        put(format::DAG_FILE, &crate::json::to_pretty_bytes(&dag), false)?;
        if let Some(snapshot) = &self.snapshot {
            put(format::SNAPSHOT_FILE, &snapshot.encode_file(), true)?;
        }
        let mut list = Vec::with_capacity(format::BLOB_LIST_HEADER_LEN + self.blobs.len() * format::BLOB_LIST_RECORD_LEN);
        list.extend_from_slice(&format::BLOB_LIST_MAGIC);
        list.extend_from_slice(&format::BLOB_LIST_VERSION.to_be_bytes());
        list.extend_from_slice(&(self.blobs.len() as u32).to_be_bytes());
        for record in self.blobs.values() {
            list.extend_from_slice(&record.encode());
        }
        put(format::BLOB_LIST_FILE, &list, false)?;

        // The log, then the index that carries the log's hash.
        let log_size = self.log.take().expect("log is open until build").finish()?;
        let log_path = staging.join(format::EVENTS_FILE);
        let (log_file, _) = fsutil::open_regular(&log_path)?;
        let log_hash = fsutil::FileBytes::load(log_file, log_size, &log_path, format::EVENTS_FILE)?.hash(0, &|_| {});
        files.insert(format::EVENTS_FILE.to_string(), FileEntry { hash: log_hash, size: log_size, optional: false });
        self.ids.sort_unstable();
        if let Some(pair) = self.ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::InvalidInput {
                what: "event",
                detail: format!("event id {} was added twice (events {} and {})", Uuid::from_bytes(pair[0].0), pair[0].1, pair[1].1),
            });
        }
        let index_path = staging.join(format::INDEX_FILE);
        let index_file = File::options().write(true).create_new(true).open(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let mut index_out =
            HashingWriter { inner: BufWriter::with_capacity(1 << 20, index_file), hasher: blake3::Hasher::new(), written: 0 };
        let mut offsets = rewind(&mut self.offsets, &staging)?;
        let mut times = rewind(&mut self.times, &staging)?;
        write_index(&mut index_out, event_count, &log_hash, log_size, &mut offsets, &mut times, &self.ids)
            .map_err(|e| Error::io(&index_path, e))?;
        let index_file = index_out.inner.into_inner().map_err(|e| Error::io(&index_path, e.into_error()))?;
        index_file.sync_all().map_err(|e| Error::io(&index_path, e))?;
        files.insert(
            format::INDEX_FILE.to_string(),
            FileEntry { hash: index_out.hasher.finalize().into(), size: index_out.written, optional: false },
        );

        let created_at = match self.options.created_at.clone() {
            Some(t) => {
                crate::model::check_timestamp("options", "created_at", &t)?;
                t
            }
            None => humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let bundle_id = self.options.bundle_id.unwrap_or_else(Uuid::new_v4);
        let total_bytes = files.values().map(|f| f.size).sum::<u64>() + self.blob_bytes;
        let manifest = Manifest {
            bundle_version: format::BUNDLE_VERSION.to_string(),
            bundle_id,
            created_at,
            format: format::BUNDLE_FORMAT.to_string(),
            files,
            blob_count: self.blobs.len() as u64,
            signature: self.options.signing_key.as_ref().map(|_| SIGNATURE_FILE.to_string()),
        };
        let manifest_bytes = manifest.to_bytes();
        fsutil::write_new(&staging.join(format::MANIFEST_FILE), &manifest_bytes)?;
        let mut signature_bytes = 0;
        if let Some(key) = &self.options.signing_key {
            let text = key.sign_manifest(&manifest_bytes, &bundle_id);
            signature_bytes = text.len() as u64;
            fsutil::write_new(&staging.join(SIGNATURE_FILE), text.as_bytes())?;
        }

        // Blob files were written without a sync each; one syncfs makes them
        // (and every directory entry) durable before the bundle appears.
        fsutil::sync_filesystem(&staging)?;
        self.move_into_place()?;
        self.finished = true;
        Ok(BuildSummary {
            path: self.output.clone(),
            bundle_id,
            events: event_count.into(),
            blobs: self.blobs.len() as u64,
            total_bytes: total_bytes + manifest_bytes.len() as u64 + signature_bytes,
        })
    }

    fn move_into_place(&self) -> Result<(), Error> {
        let parent = self.staging.parent().expect("staging has a parent").to_path_buf();
        // Drop the temporary index sections before the directory becomes the bundle.
        match fs::symlink_metadata(&self.output) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::rename(&self.staging, &self.output).map_err(|e| Error::io(&self.output, e))?;
            }
            Err(e) => return Err(Error::io(&self.output, e)),
            Ok(_) => {
                check_output(&self.output, self.options.overwrite)?;
                // The old bundle and the new one trade places atomically where
                // the platform allows; the old one is then removed from the staging path.
                if !fsutil::exchange(&self.staging, &self.output)? {
                    let old = parent.join(format!(
                        ".{}.cath-old-{}",
                        self.output.file_name().expect("checked").to_string_lossy(),
                        std::process::id()
                    ));
                    fs::rename(&self.output, &old).map_err(|e| Error::io(&self.output, e))?;
                    fs::rename(&self.staging, &self.output).map_err(|e| Error::io(&self.output, e))?;
                    fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
                } else {
                    fs::remove_dir_all(&self.staging).map_err(|e| Error::io(&self.staging, e))?;
                }
            }
        }
        fsutil::sync_dir(&parent)
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

/// Removes staging directories of earlier builds of the same output whose
/// process no longer exists (a build that was killed). Best effort: a
/// directory that cannot be removed is left for the next build.
fn remove_stale_staging(parent: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&format!(".{name}"))) else { continue };
        let Some(pid) = rest
            .strip_prefix(STAGING_MARKER)
            .or_else(|| rest.strip_prefix(".cath-old-"))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32 && !process_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Refuses an existing output unless `overwrite`, and even then refuses to
/// replace anything that is not a bundle directory.
fn check_output(output: &Path, overwrite: bool) -> Result<(), Error> {
    match fs::symlink_metadata(output) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(output, e)),
        Ok(_) if !overwrite => Err(Error::OutputExists { path: output.to_path_buf() }),
        Ok(meta) if meta.is_dir() && output.join(format::MANIFEST_FILE).is_file() => Ok(()),
        Ok(_) => Err(Error::InvalidInput {
            what: "output path",
            detail: format!("{} exists and is not a bundle; refusing to replace it", output.display()),
        }),
    }
}

fn check_run_id(expected: Uuid, found: Uuid) -> Result<(), Error> {
    if expected != found {
        return Err(Error::InvalidInput { what: "event", detail: format!("run id mismatch: expected {expected}, found {found}") });
    }
    Ok(())
}

fn rewind(section: &mut BufWriter<File>, staging: &Path) -> Result<std::io::BufReader<File>, Error> {
    section.flush().map_err(|e| Error::io(staging, e))?;
    let mut file = section.get_ref().try_clone().map_err(|e| Error::io(staging, e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(staging, e))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, file))
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
