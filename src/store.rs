//! The run store: where the engine keeps runs, and the input of
//! `cathedral bundle`. Layout (`schemas/STORE.md`):
//!
//! ```text
//! <store>/runs/<run_id>/run.json        metadata (schemas/metadata.schema.json)
//!                       workflow.cath
//!                       dag.json
//!                       events.jsonl    one event per line (schemas/event.schema.json)
//!                       blobs/<hash>    raw content, flat, named by BLAKE3 hex
//!                       snapshot.json   optional (schemas/snapshot.schema.json)
//!                       .recording      present while a recorder has not finished
//! ```

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::blob::BlobFormat;
use crate::builder::{BuildOptions, BuildSummary, BundleBuilder};
use crate::digest::Digest;
use crate::error::Error;
use crate::event::{Event, EventKind};
use crate::fsutil;
use crate::model::{Dag, Metadata, Platform, RunStatus, Snapshot};

/// File names inside a run directory.
pub const RUN_FILE: &str = "run.json";
/// Workflow source.
pub const WORKFLOW_FILE: &str = "workflow.cath";
/// Compiled DAG.
pub const DAG_FILE: &str = "dag.json";
/// Events, one JSON object per line.
pub const EVENTS_FILE: &str = "events.jsonl";
/// Flat blob directory.
pub const BLOB_DIR: &str = "blobs";
/// Optional snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot.json";
/// Marker of a run whose recorder has not finished.
pub const RECORDING_MARKER: &str = ".recording";

/// A run store directory.
#[derive(Debug, Clone)]
pub struct RunStore {
    root: PathBuf,
}

/// What a recorder needs to start a run.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// The run's id.
    pub run_id: Uuid,
    /// Workflow name.
    pub workflow_name: String,
    /// Workflow version.
    pub workflow_version: String,
    /// RFC 3339 UTC start time.
    pub started_at: String,
    /// Engine version.
    pub cathedral_version: String,
    /// Where it runs.
    pub platform: Platform,
}

impl RunStore {
    /// A store at `root` (which need not exist yet for recording).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunStore { root: root.into() }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of run `id`.
    pub fn run_dir(&self, id: &Uuid) -> PathBuf {
        self.root.join("runs").join(id.hyphenated().to_string())
    }

    /// Every run id in the store, sorted.
    pub fn runs(&self) -> Result<Vec<Uuid>, Error> {
        let runs = self.root.join("runs");
        let meta = fs::metadata(&self.root).map_err(|e| Error::io(&self.root, e))?;
        if !meta.is_dir() {
            return Err(Error::InvalidInput { what: "run store", detail: format!("{} is not a directory", self.root.display()) });
        }
        let entries = match fs::read_dir(&runs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&runs, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&runs, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| crate::event::parse_uuid("run id", n).ok()) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Resolves a full run id or a unique prefix of one.
    pub fn resolve(&self, prefix: &str) -> Result<Uuid, Error> {
        let prefix_lower = prefix.to_ascii_lowercase();
        if prefix.is_empty() || !prefix_lower.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(Error::InvalidInput {
                what: "run id",
                detail: format!("{prefix:?} is not a run id or a prefix of one (hex digits and hyphens)"),
            });
        }
        let matches: Vec<Uuid> = self.runs()?.into_iter().filter(|id| id.hyphenated().to_string().starts_with(&prefix_lower)).collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::NotFound { path: self.root.join("runs").join(format!("{prefix}*")) }),
            many => Err(Error::InvalidInput {
                what: "run id",
                detail: format!(
                    "prefix {prefix:?} matches {} runs: {}",
                    many.len(),
                    many.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }

    /// Starts recording a new run.
    pub fn record(&self, start: RunStart, workflow: &str, dag: &Dag) -> Result<RunRecorder, Error> {
        dag.validate(DAG_FILE)?;
        crate::model::check_timestamp(RUN_FILE, "started_at", &start.started_at)?;
        let dir = self.run_dir(&start.run_id);
        fs::create_dir_all(self.root.join("runs")).map_err(|e| Error::io(&self.root, e))?;
        fs::create_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::OutputExists { path: dir.clone() },
            _ => Error::io(&dir, e),
        })?;
        fsutil::write_new(&dir.join(RECORDING_MARKER), b"")?;
        fs::create_dir(dir.join(BLOB_DIR)).map_err(|e| Error::io(&dir, e))?;
        fsutil::write_new(&dir.join(WORKFLOW_FILE), workflow.as_bytes())?;
        fsutil::write_new(&dir.join(DAG_FILE), &crate::json::to_pretty_bytes(dag))?;
        let metadata = Metadata {
            run_id: start.run_id,
            workflow_name: start.workflow_name,
            workflow_version: start.workflow_version,
            started_at: start.started_at,
            completed_at: None,
            status: RunStatus::Running,
            node_count: dag.nodes.len() as u64,
            event_count: 0,
            platform: start.platform,
            cathedral_version: start.cathedral_version,
        };
        write_replace(&dir.join(RUN_FILE), &crate::json::to_pretty_bytes(&metadata))?;
        let events_path = dir.join(EVENTS_FILE);
        let events = File::options().append(true).create_new(true).open(&events_path).map_err(|e| Error::io(&events_path, e))?;
        fsutil::sync_dir(&dir)?;
        Ok(RunRecorder { dir, metadata, events: BufWriter::new(events), last_time: 0, seen_ids: HashSet::new() })
    }
}

/// Writes a run into a store. Until [`RunRecorder::finish`], the run carries
/// a `.recording` marker and `run.json` says `running` with no events, so a
/// crashed recorder leaves a run that is detectably incomplete.
pub struct RunRecorder {
    dir: PathBuf,
    metadata: Metadata,
    events: BufWriter<File>,
    last_time: u64,
    seen_ids: HashSet<Uuid>,
}

impl RunRecorder {
    /// The run's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one event line. The payload hash must match, the run id must
    /// be this run's, logical time must not go backwards, ids must be unique.
    pub fn append_event(&mut self, event: &Event) -> Result<(), Error> {
        event.check_payload_hash()?;
        if event.run_id != self.metadata.run_id {
            return Err(Error::InvalidInput {
                what: "event",
                detail: format!("run id mismatch: expected {}, found {}", self.metadata.run_id, event.run_id),
            });
        }
        if event.logical_time < self.last_time {
            return Err(Error::InvalidInput {
                what: "event",
                detail: format!("logical time goes backwards: {} after {}", event.logical_time, self.last_time),
            });
        }
        if !self.seen_ids.insert(event.event_id) {
            return Err(Error::InvalidInput { what: "event", detail: format!("event id {} was recorded before", event.event_id) });
        }
        let path = self.dir.join(EVENTS_FILE);
        let mut line = event.to_json_line();
        line.push('\n');
        self.events.write_all(line.as_bytes()).map_err(|e| Error::io(&path, e))?;
        self.last_time = event.logical_time;
        self.metadata.event_count += 1;
        Ok(())
    }

    /// Stores a blob under its BLAKE3 name (written to a temporary name and
    /// renamed, so a crash never leaves a partial blob under a real name).
    pub fn put_blob(&mut self, content: &[u8]) -> Result<Digest, Error> {
        let hash = Digest::of(content);
        let path = self.dir.join(BLOB_DIR).join(hash.to_hex());
        if path.exists() {
            return Ok(hash);
        }
        write_replace(&path, content)?;
        Ok(hash)
    }

    /// Sets (or replaces) the snapshot.
    pub fn set_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
        write_replace(&self.dir.join(SNAPSHOT_FILE), &crate::json::to_pretty_bytes(snapshot))
    }

    /// Finishes the run: syncs the events, writes the final `run.json`, and
    /// removes the `.recording` marker.
    pub fn finish(mut self, status: RunStatus, completed_at: Option<String>) -> Result<Metadata, Error> {
        if let Some(t) = &completed_at {
            crate::model::check_timestamp(RUN_FILE, "completed_at", t)?;
        }
        let path = self.dir.join(EVENTS_FILE);
        self.events.flush().map_err(|e| Error::io(&path, e))?;
        self.events.get_ref().sync_all().map_err(|e| Error::io(&path, e))?;
        self.metadata.status = status;
        self.metadata.completed_at = completed_at;
        write_replace(&self.dir.join(RUN_FILE), &crate::json::to_pretty_bytes(&self.metadata))?;
        fs::remove_file(self.dir.join(RECORDING_MARKER)).map_err(|e| Error::io(&self.dir, e))?;
        fsutil::sync_dir(&self.dir)?;
        Ok(self.metadata)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().expect("has a parent");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// A problem with a run in the store, naming the file and, for events, the line.
fn store_error(path: &Path, line: Option<usize>, detail: impl std::fmt::Display) -> Error {
    let file = match line {
        Some(n) => format!("{}:{n}", path.display()),
        None => path.display().to_string(),
    };
    Error::Json { file, detail: detail.to_string() }
}

/// Validates the run `id` and writes it into a bundle at `output`.
///
/// Validation: `run.json`, `dag.json` and `snapshot.json` parse strictly; the
/// run is finished (no `.recording` marker); every event line parses, has a
/// matching payload hash and run id, and logical time never goes backwards;
/// the number of lines equals `run.json`'s `event_count`; every blob file's
/// content matches its name; every blob named by a `BlobStored` event or a
/// snapshot output hash exists. On any error nothing is left at `output`.
pub fn bundle_run(
    store: &RunStore,
    id: &Uuid,
    output: &Path,
    options: BuildOptions,
    progress: &dyn Fn(u64),
) -> Result<BuildSummary, Error> {
    let dir = store.run_dir(id);
    let meta = fs::symlink_metadata(&dir).map_err(|e| Error::io(&dir, e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidInput { what: "run", detail: format!("{} is not a directory", dir.display()) });
    }
    if dir.join(RECORDING_MARKER).exists() {
        return Err(store_error(&dir, None, "run is incomplete: its recorder did not finish (.recording marker present)"));
    }
    let limits = options.limits;
    let read_doc = |name: &str| {
        let path = dir.join(name);
        fsutil::read_bounded(&path, &path.display().to_string(), "file size", limits.max_document_size)
    };
    let run_path = dir.join(RUN_FILE);
    let metadata: Metadata = crate::json::from_slice_strict(&read_doc(RUN_FILE)?, &run_path.display().to_string())?;
    metadata.validate(&run_path.display().to_string())?;
    if metadata.run_id != *id {
        return Err(store_error(&run_path, None, format!("run_id is {}, but the run's directory is {id}", metadata.run_id)));
    }
    if metadata.status == RunStatus::Running {
        return Err(store_error(&run_path, None, "run is incomplete: status is \"running\""));
    }
    let dag_path = dir.join(DAG_FILE);
    let dag: Dag = crate::json::from_slice_strict(&read_doc(DAG_FILE)?, &dag_path.display().to_string())?;
    dag.validate(&dag_path.display().to_string())?;
    let workflow =
        String::from_utf8(read_doc(WORKFLOW_FILE)?).map_err(|e| store_error(&dir.join(WORKFLOW_FILE), None, format!("not UTF-8: {e}")))?;
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let snapshot: Option<Snapshot> = match fs::symlink_metadata(&snapshot_path) {
        Ok(_) => Some(crate::json::from_slice_strict(&read_doc(SNAPSHOT_FILE)?, &snapshot_path.display().to_string())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&snapshot_path, e)),
    };

    // Blobs: names must be hashes, contents must match.
    let blob_dir = dir.join(BLOB_DIR);
    let mut blob_files = Vec::new();
    match fs::read_dir(&blob_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&blob_dir, e))?;
                let name = entry.file_name();
                let hash = name
                    .to_str()
                    .and_then(|n| Digest::parse(n).ok())
                    .ok_or_else(|| store_error(&entry.path(), None, "blob file name is not 64 lowercase hex characters"))?;
                blob_files.push(hash);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&blob_dir, e)),
    }
    blob_files.sort();
    let known: HashSet<Digest> = blob_files.iter().copied().collect();
    if let Some(s) = &snapshot {
        for node in &s.nodes {
            if let Some(h) = node.output_hash.filter(|h| !known.contains(h)) {
                return Err(store_error(
                    &snapshot_path,
                    None,
                    format!("output hash {h} of node {} names no blob in {}", node.node_id, blob_dir.display()),
                ));
            }
        }
    }

    let mut builder = BundleBuilder::create(output, options)?;
    builder.set_metadata(metadata.clone()).map_err(|e| store_error(&run_path, None, e))?;
    builder.set_workflow(workflow);
    builder.set_dag(dag)?;
    if let Some(s) = snapshot {
        if s.log_position > metadata.event_count {
            return Err(store_error(
                &snapshot_path,
                None,
                format!("log_position {} is past the last event ({})", s.log_position, metadata.event_count),
            ));
        }
        builder.set_snapshot(s);
    }
    let events_path = dir.join(EVENTS_FILE);
    let (events_file, _) = fsutil::open_regular(&events_path)?;
    let mut reader = BufReader::with_capacity(1 << 20, events_file);
    let mut line = String::new();
    let mut number = 0usize;
    let mut seen = HashSet::new();
    // A JSON line is at most about 4/3 of its record (base64 payload) plus the other fields.
    let max_line = limits.max_record_len.saturating_mul(2).saturating_add(1024);
    loop {
        line.clear();
        let n = (&mut reader).take(max_line).read_line(&mut line).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => store_error(&events_path, Some(number + 1), "line is not UTF-8"),
            _ => Error::io(&events_path, e),
        })?;
        if n == 0 {
            break;
        }
        number += 1;
        progress(n as u64);
        let Some(text) = line.strip_suffix('\n') else {
            if n as u64 == max_line {
                return Err(Error::limit(&format!("{}:{number}", events_path.display()), "event line length", max_line, n as u64 + 1));
            }
            return Err(store_error(&events_path, Some(number), "last line has no newline: the recorder stopped mid-line"));
        };
        let event = Event::from_json_line(text).map_err(|e| store_error(&events_path, Some(number), strip_file(&e)))?;
        if !seen.insert(event.event_id) {
            return Err(store_error(&events_path, Some(number), format!("event id {} appears twice", event.event_id)));
        }
        if event.kind == EventKind::BlobStored {
            let named = std::str::from_utf8(&event.payload).ok().and_then(|t| Digest::parse(t).ok());
            match named {
                Some(h) if known.contains(&h) => {}
                Some(h) => {
                    return Err(store_error(
                        &events_path,
                        Some(number),
                        format!("BlobStored names blob {h}, which is not in {}", blob_dir.display()),
                    ))
                }
                None => return Err(store_error(&events_path, Some(number), "BlobStored payload is not a 64-hex blob hash")),
            }
        }
        builder.add_event(&event).map_err(|e| store_error(&events_path, Some(number), strip_file(&e)))?;
    }
    if number as u64 != metadata.event_count {
        return Err(store_error(
            &events_path,
            None,
            format!("holds {number} events, but run.json says event_count {}: the run is incomplete or was changed", metadata.event_count),
        ));
    }
    for hash in &blob_files {
        let path = blob_dir.join(hash.to_hex());
        let content = fsutil::read_bounded(&path, &path.display().to_string(), "blob size", limits.max_blob_size)?;
        let actual = Digest::of(&content);
        if actual != *hash {
            return Err(Error::mismatch(&path.display().to_string(), "blob content hash", hash, actual));
        }
        builder.add_blob_hashed(&content, actual, BlobFormat::Raw)?;
        progress(content.len() as u64);
    }
    builder.build()
}

/// The detail of an error without a repeated file prefix.
fn strip_file(e: &Error) -> String {
    match e {
        Error::InvalidInput { what, detail } => format!("{what}: {detail}"),
        Error::Json { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}
