//! [`RunRecorder`]: how an engine writes a run into a store, so that a
//! crash leaves a run that is detectably incomplete, never silently wrong.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{RunStart, RunStore, BLOB_DIR, DAG_FILE, EVENTS_FILE, RECORDING_MARKER, RUN_FILE, SNAPSHOT_FILE, WORKFLOW_FILE};
use crate::digest::Digest;
use crate::error::Error;
use crate::format::event::{Event, EventRules};
use crate::format::json;
use crate::format::model::{Dag, Metadata, RunStatus, Snapshot};
use crate::fsutil::{self, Existing};
use crate::text::Timestamp;

impl RunStore {
    /// Starts recording a new run; fails with [`Error::Exists`] if the run
    /// directory exists.
    pub fn record(&self, start: RunStart, workflow: &str, dag: &Dag) -> Result<RunRecorder, Error> {
        dag.validate(DAG_FILE)?;
        let dir = self.run_dir(&start.run_id);
        let runs = self.root.join("runs");
        fs::create_dir_all(&runs).map_err(|e| Error::output(&runs, e))?;
        fs::create_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Exists { file: dir.display().to_string() },
            _ => Error::output(&dir, e),
        })?;
        fsutil::write_new(&dir.join(RECORDING_MARKER), b"")?;
        fs::create_dir(dir.join(BLOB_DIR)).map_err(|e| Error::output(&dir, e))?;
        fsutil::write_new(&dir.join(WORKFLOW_FILE), workflow.as_bytes())?;
        fsutil::write_new(&dir.join(DAG_FILE), &json::to_pretty_bytes(dag))?;
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
        fsutil::write_atomic(&dir.join(RUN_FILE), &json::to_pretty_bytes(&metadata), 0o644, Existing::Replace)?;
        let events_path = dir.join(EVENTS_FILE);
        let events = File::options().append(true).create_new(true).open(&events_path).map_err(|e| Error::output(&events_path, e))?;
        fsutil::sync_dir(&dir)?;
        let nodes = dag.node_ids();
        Ok(RunRecorder {
            dir,
            rules: EventRules::new(Some(metadata.run_id)).with_nodes(nodes.clone()),
            metadata,
            events: BufWriter::new(events),
            seen_ids: HashSet::new(),
            nodes,
            blobs: HashSet::new(),
            last_time: 0,
        })
    }
}

/// Writes a run into a store. Until [`RunRecorder::finish`], the run carries
/// a `.recording` marker and `run.json` says `running` with no events, so a
/// crashed recorder leaves a run that is detectably incomplete.
pub struct RunRecorder {
    dir: PathBuf,
    metadata: Metadata,
    events: BufWriter<File>,
    rules: EventRules,
    seen_ids: HashSet<Uuid>,
    nodes: HashSet<Uuid>,
    blobs: HashSet<Digest>,
    last_time: u64,
}

impl RunRecorder {
    /// The run's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one event line. It must obey the event rules (payload hash,
    /// this run's id, logical time never going back, a node of the DAG or
    /// nil), and its id must be new.
    pub fn append_event(&mut self, event: &Event) -> Result<(), Error> {
        if self.seen_ids.contains(&event.event_id) {
            return Err(Error::rule("event", "event id", format!("event id {} was recorded before", event.event_id)));
        }
        self.rules.check(event)?;
        self.seen_ids.insert(event.event_id);
        let path = self.dir.join(EVENTS_FILE);
        let mut line = event.to_json_line();
        line.push('\n');
        self.events.write_all(line.as_bytes()).map_err(|e| Error::output(&path, e))?;
        self.metadata.event_count += 1;
        self.last_time = event.logical_time;
        Ok(())
    }

    /// Stores a blob under its BLAKE3 name (written to a temporary name and
    /// renamed, so a crash never leaves a partial blob under a real name).
    pub fn put_blob(&mut self, content: &[u8]) -> Result<Digest, Error> {
        let hash = Digest::of(content);
        let path = self.dir.join(BLOB_DIR).join(hash.to_hex());
        if self.blobs.contains(&hash) {
            return Ok(hash);
        }
        match fsutil::write_atomic(&path, content, 0o644, Existing::Keep) {
            Ok(()) | Err(Error::Exists { .. }) => {}
            Err(e) => return Err(e),
        }
        self.blobs.insert(hash);
        Ok(hash)
    }

    /// Sets (or replaces) the snapshot. It must fit the run recorded so far:
    /// its position at most the events appended, at a time not before the
    /// last of them if it is at the end, its nodes those of the DAG, its
    /// output hashes blobs put by this recorder.
    pub fn set_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
        let file = SNAPSHOT_FILE;
        if snapshot.log_position > self.metadata.event_count {
            let detail = format!("log_position {} is past the last event ({})", snapshot.log_position, self.metadata.event_count);
            return Err(Error::rule(file, "log position", detail));
        }
        if snapshot.log_position == self.metadata.event_count && snapshot.log_position > 0 && snapshot.logical_time < self.last_time {
            let detail = format!("{} is before the last event's time {}", snapshot.logical_time, self.last_time);
            return Err(Error::rule(file, "logical time", detail));
        }
        snapshot.check_references(file, &self.nodes, &mut |h| Ok(self.blobs.contains(h)))?;
        fsutil::write_atomic(&self.dir.join(SNAPSHOT_FILE), &json::to_pretty_bytes(snapshot), 0o644, Existing::Replace)
    }

    /// Finishes the run: syncs the events, writes the final `run.json`, and
    /// removes the `.recording` marker.
    pub fn finish(mut self, status: RunStatus, completed_at: Option<Timestamp>) -> Result<Metadata, Error> {
        let path = self.dir.join(EVENTS_FILE);
        self.events.flush().map_err(|e| Error::output(&path, e))?;
        self.events.get_ref().sync_all().map_err(|e| Error::output(&path, e))?;
        self.metadata.status = status;
        self.metadata.completed_at = completed_at;
        fsutil::write_atomic(&self.dir.join(RUN_FILE), &json::to_pretty_bytes(&self.metadata), 0o644, Existing::Replace)?;
        fs::remove_file(self.dir.join(RECORDING_MARKER)).map_err(|e| Error::output(&self.dir, e))?;
        fsutil::sync_dir(&self.dir)?;
        Ok(self.metadata)
    }

    /// Abandons the recording and removes the run directory it created.
    pub fn abort(self) -> Result<(), Error> {
        drop(self.events);
        fs::remove_dir_all(&self.dir).map_err(|e| Error::output(&self.dir, e))
    }
}
