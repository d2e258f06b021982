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
//!
//! [`RunStore::record`] writes a run ([`RunRecorder`]); [`RunStore::open`]
//! reads one back ([`StoredRun`]); [`bundle_run`] captures one into a bundle.
//! Nothing here follows a symbolic link inside a run.

mod capture;
mod import;
mod recorder;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use uuid::Uuid;

use crate::digest::Digest;
use crate::error::Error;
use crate::format::event::Event;
use crate::format::json;
use crate::format::model::{Dag, Metadata, Platform, Snapshot};
use crate::fsutil::{self, ReadFile};
use crate::limits::Limits;
use crate::text::Timestamp;
pub use capture::bundle_run;
pub use import::ImportSummary;
pub use recorder::RunRecorder;

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
#[non_exhaustive]
pub struct RunStart {
    /// The run's id.
    pub run_id: Uuid,
    /// Workflow name.
    pub workflow_name: String,
    /// Workflow version.
    pub workflow_version: String,
    /// Start time.
    pub started_at: Timestamp,
    /// Engine version.
    pub cathedral_version: String,
    /// Where it runs.
    pub platform: Platform,
}

impl RunStart {
    /// A run starting now, on this platform.
    pub fn new(
        run_id: Uuid,
        workflow_name: impl Into<String>,
        workflow_version: impl Into<String>,
        cathedral_version: impl Into<String>,
    ) -> Self {
        RunStart {
            run_id,
            workflow_name: workflow_name.into(),
            workflow_version: workflow_version.into(),
            started_at: Timestamp::now(),
            cathedral_version: cathedral_version.into(),
            platform: Platform::current(),
        }
    }

    /// Sets the start time.
    pub fn started_at(mut self, at: Timestamp) -> Self {
        self.started_at = at;
        self
    }

    /// Sets the platform.
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }
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
            return Err(Error::input("run store", format!("{} is not a directory", self.root.display())));
        }
        let entries = match fs::read_dir(&runs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&runs, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&runs, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| crate::text::parse_uuid("run id", n).ok()) {
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
            return Err(Error::input("run id", format!("{prefix:?} is not a run id or a prefix of one (hex digits and hyphens)")));
        }
        let matches: Vec<Uuid> = self.runs()?.into_iter().filter(|id| id.hyphenated().to_string().starts_with(&prefix_lower)).collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::NotFound { file: self.root.join("runs").join(format!("{prefix}*")).display().to_string() }),
            many => {
                let list = many.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", ");
                Err(Error::input("run id", format!("prefix {prefix:?} matches {} runs: {list}", many.len())))
            }
        }
    }

    /// Opens run `id` for reading. The run directory must be a real
    /// directory (not a link).
    pub fn open(&self, id: &Uuid) -> Result<StoredRun, Error> {
        let dir = self.run_dir(id);
        let meta = fs::symlink_metadata(&dir).map_err(|e| Error::io(&dir, e))?;
        if !meta.is_dir() {
            let found = fsutil::kind_of(&meta).unwrap_or(crate::error::FileKind::Other);
            return Err(Error::input("run", format!("{} is a {found}, not a run directory", dir.display())));
        }
        Ok(StoredRun { dir, id: *id })
    }
}

/// Whether a run's recorder finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// `finish` ran: the run is complete.
    Complete,
    /// A `.recording` marker is present: recording, or abandoned by a crash.
    Recording,
}

/// A run of the store, read back.
#[derive(Debug, Clone)]
pub struct StoredRun {
    dir: PathBuf,
    id: Uuid,
}

impl StoredRun {
    /// The run's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The run's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Complete, or still (or abandoned while) recording. Any entry named
    /// `.recording`, even a dangling link, counts as the marker.
    pub fn state(&self) -> Result<RunState, Error> {
        let marker = self.dir.join(RECORDING_MARKER);
        match fs::symlink_metadata(&marker) {
            Ok(_) => Ok(RunState::Recording),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RunState::Complete),
            Err(e) => Err(Error::io(&marker, e)),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads one of the run's small files: regular, not a link, bounded.
    pub(crate) fn read_doc(&self, name: &str, limits: &Limits) -> Result<Vec<u8>, Error> {
        let path = self.path(name);
        fsutil::read_bounded(&path, &path.display().to_string(), "file size", limits.max_document_size)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, name: &str, limits: &Limits) -> Result<T, Error> {
        json::from_slice_strict(&self.read_doc(name, limits)?, &self.path(name).display().to_string())
    }

    /// `run.json`.
    pub fn metadata(&self, limits: &Limits) -> Result<Metadata, Error> {
        self.parse(RUN_FILE, limits)
    }

    /// `dag.json`, validated.
    pub fn dag(&self, limits: &Limits) -> Result<Dag, Error> {
        let dag: Dag = self.parse(DAG_FILE, limits)?;
        dag.validate(&self.path(DAG_FILE).display().to_string())?;
        Ok(dag)
    }

    /// `workflow.cath`.
    pub fn workflow(&self, limits: &Limits) -> Result<String, Error> {
        let path = self.path(WORKFLOW_FILE);
        String::from_utf8(self.read_doc(WORKFLOW_FILE, limits)?)
            .map_err(|e| Error::malformed(&path.display().to_string(), "workflow source", e.utf8_error().valid_up_to() as u64, "not UTF-8"))
    }

    /// `snapshot.json`, if the run has one.
    pub fn snapshot(&self, limits: &Limits) -> Result<Option<Snapshot>, Error> {
        match fs::symlink_metadata(self.path(SNAPSHOT_FILE)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => self.parse(SNAPSHOT_FILE, &Limits { max_document_size: limits.max_snapshot_size, ..*limits }).map(Some),
        }
    }

    /// The run's events, one line at a time, in order. Each line must be
    /// the canonical JSON form of its event (what the recorder writes:
    /// compact, fields in schema order), so that a bundle gives back the
    /// identical bytes; errors name the file and line.
    pub fn events(&self, limits: &Limits) -> Result<EventLines, Error> {
        let path = self.path(EVENTS_FILE);
        let file = ReadFile::open(&path, &path.display().to_string())?;
        // A JSON line is at most about 4/3 of its record (base64 payload) plus the other fields.
        let max_line = limits.max_record_len.saturating_mul(2).saturating_add(1024);
        Ok(EventLines { reader: BufReader::with_capacity(1 << 20, file.into_read()), path, line: Vec::new(), number: 0, max_line })
    }

    /// The content hashes of the run's blobs, sorted. The blob directory
    /// must be a real directory; names must be 64 lowercase hex characters.
    pub fn blobs(&self) -> Result<Vec<Digest>, Error> {
        let dir = self.path(BLOB_DIR);
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
            Ok(m) if !m.is_dir() => {
                let found = fsutil::kind_of(&m).unwrap_or(crate::error::FileKind::Other);
                return Err(Error::FileType { file: dir.display().to_string(), found });
            }
            Ok(_) => {}
        }
        let mut hashes = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let hash = name.to_str().and_then(|n| Digest::parse(n).ok()).ok_or_else(|| Error::InvalidPath {
                name: entry.path().display().to_string(),
                reason: "blob file name is not 64 lowercase hex characters",
            })?;
            hashes.push(hash);
        }
        hashes.sort();
        Ok(hashes)
    }

    /// The size of a blob file, from `lstat` (not followed), for planning reads.
    pub fn blob_size(&self, hash: &Digest) -> Result<u64, Error> {
        let path = self.path(BLOB_DIR).join(hash.to_hex());
        fs::symlink_metadata(&path).map(|m| m.len()).map_err(|e| Error::io(&path, e))
    }

    /// [`StoredRun::blob_size`] of each of `hashes`, in order, on every core
    /// (a run may hold many thousands of blobs).
    pub fn blob_sizes(&self, hashes: &[Digest]) -> Result<Vec<u64>, Error> {
        hashes.par_iter().map(|hash| self.blob_size(hash)).collect()
    }

    /// A blob's content, checked against its name: a regular file, not a link.
    pub fn read_blob(&self, hash: &Digest, limits: &Limits) -> Result<Vec<u8>, Error> {
        self.read_blobs(std::slice::from_ref(hash), limits).pop().expect("one result per blob")
    }

    /// [`StoredRun::read_blob`] of each of `hashes`, in order; the contents
    /// are hashed side by side (`digest::hash_each`: one by one, a blob of a
    /// few KiB keeps most SIMD lanes idle).
    pub fn read_blobs(&self, hashes: &[Digest], limits: &Limits) -> Vec<Result<Vec<u8>, Error>> {
        let path = |hash: &Digest| self.path(BLOB_DIR).join(hash.to_hex());
        let mut read: Vec<Result<Vec<u8>, Error>> = hashes
            .iter()
            .map(|hash| {
                let name = path(hash).display().to_string();
                ReadFile::open(&path(hash), &name)?.read_all("blob size", limits.max_blob_size)
            })
            .collect();
        let contents: Vec<&[u8]> = read.iter().filter_map(|r| r.as_deref().ok()).collect();
        let mut actual = Vec::with_capacity(contents.len());
        crate::digest::hash_each(&contents, &mut actual);
        let mut actual = actual.into_iter();
        for (content, hash) in read.iter_mut().zip(hashes) {
            if content.is_ok() {
                let found = actual.next().expect("one hash per blob read");
                if found != *hash {
                    let file = path(hash).display().to_string();
                    *content = Err(Error::HashMismatch { file, what: "content hash", expected: *hash, found });
                }
            }
        }
        read
    }
}

/// The events of a run, line by line; see [`StoredRun::events`].
pub struct EventLines {
    reader: BufReader<std::io::Take<std::fs::File>>,
    path: PathBuf,
    line: Vec<u8>,
    number: usize,
    max_line: u64,
}

impl EventLines {
    /// `path:LINE` of the line read last.
    pub fn location(&self) -> String {
        self.location_of(self.number)
    }

    /// `path:LINE` of line `number` (1-based).
    pub fn location_of(&self, number: usize) -> String {
        format!("{}:{}", self.path.display(), number)
    }

    /// Lines read so far.
    pub fn lines(&self) -> usize {
        self.number
    }

    /// The next event and its line's length in bytes, or None at the end.
    pub fn next_event(&mut self) -> Result<Option<(Event, usize)>, Error> {
        let mut line = std::mem::take(&mut self.line);
        let read = self.next_line(&mut line);
        let parsed = match read {
            Ok(true) => parse_line(&line, &|| self.location()).map(|e| Some((e, line.len() + 1))),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        self.line = line;
        parsed
    }

    /// Reads up to `max` lines into `batch` (its buffers reused), each
    /// without its newline, for [`parse_line`] elsewhere (on other threads);
    /// the first is line `lines() - batch.len() + 1`. An empty batch is the end.
    pub fn next_batch(&mut self, max: usize, batch: &mut Vec<Vec<u8>>) -> Result<(), Error> {
        let mut spare: Vec<Vec<u8>> = std::mem::take(batch);
        spare.reverse();
        while batch.len() < max {
            let mut line = spare.pop().unwrap_or_default();
            if !self.next_line(&mut line)? {
                break;
            }
            batch.push(line);
        }
        Ok(())
    }

    /// One line, bounded, without its newline; false at the end.
    fn next_line(&mut self, line: &mut Vec<u8>) -> Result<bool, Error> {
        line.clear();
        let n = (&mut self.reader).take(self.max_line).read_until(b'\n', line).map_err(|e| Error::io(&self.path, e))?;
        if n == 0 {
            return Ok(false);
        }
        self.number += 1;
        if line.pop() != Some(b'\n') {
            let at = self.location();
            if n as u64 == self.max_line {
                return Err(Error::limit(&at, "event line length", self.max_line, n as u64 + 1));
            }
            return Err(Error::rule(&at, "incomplete run", "the last line has no newline: the recorder stopped mid-line"));
        }
        Ok(true)
    }
}

/// One event line (without its newline): the canonical JSON form of an
/// event, or an error located at `at()`. One strict parse (unknown and
/// repeated fields refused), then the event is written back and compared
/// byte for byte: only the canonical form is accepted, so no other
/// spelling (a duplicate key, an escape, another order) gets through.
pub fn parse_line(text: &[u8], at: &dyn Fn() -> String) -> Result<Event, Error> {
    // The canonical line, read in one pass; any other line takes the general
    // path below, which accepts nothing more and says what is wrong.
    if let Some(event) = Event::from_canonical_line(text) {
        return Ok(event);
    }
    let json: crate::format::event::EventJsonRef<'_> =
        serde_json::from_slice(text).map_err(|e| Error::Json { file: at(), detail: e.to_string() })?;
    let event = json.to_event().map_err(|e| match e {
        Error::InvalidInput { what, detail } => Error::Json { file: at(), detail: format!("{what}: {detail}") },
        other => other.located(&at()),
    })?;
    let mut canonical = Vec::with_capacity(text.len());
    event.write_json_line(&mut canonical);
    if canonical != text {
        let detail = "the line is not the canonical JSON form of its event (compact, fields in schema order, null fields present, no optional escapes)";
        return Err(Error::rule(&at(), "canonical form", detail));
    }
    Ok(event)
}
