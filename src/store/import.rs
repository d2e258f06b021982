//! [`RunStore::import`]: a bundle (directory or archive) back into a run store.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{RunStore, BLOB_DIR, DAG_FILE, EVENTS_FILE, RUN_FILE, SNAPSHOT_FILE, WORKFLOW_FILE};
use crate::bundle::{is_archive, BundleLoader, LoadError, ReplayBundle};
use crate::error::Error;
use crate::format::json;
use crate::fsutil;

/// What [`RunStore::import`] recreated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImportSummary {
    /// The run's id.
    pub run_id: Uuid,
    /// Its directory in the store.
    pub dir: PathBuf,
    /// Events written to `events.jsonl`.
    pub events: u64,
    /// Blobs written to `blobs/`.
    pub blobs: u64,
}

impl RunStore {
    /// Recreates the run held by `bundle` (a directory or a
    /// `.cath-bundle.tar.zst` archive) in this store, after `loader` has
    /// verified it completely and accepted its signature. The run is
    /// written into a locked staging directory and renamed into place
    /// without replacing anything: a run that already exists is
    /// [`Error::Exists`], and a failure or a kill leaves no partial run.
    pub fn import(&self, bundle: impl AsRef<Path>, loader: &BundleLoader<'_>) -> Result<ImportSummary, LoadError> {
        let bundle = bundle.as_ref();
        let runs = self.root.join("runs");
        fs::create_dir_all(&runs).map_err(|e| Error::output(&runs, e))?;
        if !is_archive(bundle) {
            let replay = loader.load(bundle)?;
            return self.import_verified(&replay);
        }
        // An archive is verified while it is unpacked into the store's own
        // space (removed afterwards, whatever happens), then imported from there.
        let (scratch, _lock) = crate::bundle::staging_dir(&runs, "import")?;
        let unpacked = scratch.join("bundle.cath-bundle");
        let result = loader.unpack(bundle, &unpacked, false).and_then(|_| {
            // Every byte was verified while it was unpacked; the copy is private to this import.
            let replay = loader.clone().mode(crate::VerifyMode::Fast).load(&unpacked)?;
            self.import_verified(&replay)
        });
        let _ = fs::remove_dir_all(&scratch);
        result
    }

    fn import_verified(&self, bundle: &ReplayBundle) -> Result<ImportSummary, LoadError> {
        let run_id = bundle.metadata().run_id;
        let dir = self.run_dir(&run_id);
        if fs::symlink_metadata(&dir).is_ok() {
            return Err(Error::Exists { file: dir.display().to_string() }.into());
        }
        let parent = fsutil::parent_dir(&dir);
        let (staging, _lock) = crate::bundle::staging_dir(&parent, &run_id.to_string())?;
        let written = write_run(bundle, &staging).and_then(|summary| {
            fsutil::sync_filesystem(&staging)?;
            fsutil::rename_noreplace(&staging, &dir).map_err(|e| match e {
                Error::Exists { .. } => Error::Exists { file: dir.display().to_string() },
                other => other,
            })?;
            fsutil::sync_dir(&parent)?;
            Ok(summary)
        });
        match written {
            Ok((events, blobs)) => Ok(ImportSummary { run_id, dir, events, blobs }),
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                Err(e.into())
            }
        }
    }
}

/// Writes the run's files into `dir`; returns the events and blobs written.
fn write_run(bundle: &ReplayBundle, dir: &Path) -> Result<(u64, u64), Error> {
    fsutil::write_new(&dir.join(RUN_FILE), &json::to_pretty_bytes(bundle.metadata()))?;
    fsutil::write_new(&dir.join(WORKFLOW_FILE), bundle.workflow().as_bytes())?;
    fsutil::write_new(&dir.join(DAG_FILE), &json::to_pretty_bytes(bundle.dag()))?;
    if let Some(snapshot) = bundle.snapshot() {
        fsutil::write_new(&dir.join(SNAPSHOT_FILE), &json::to_pretty_bytes(snapshot))?;
    }
    let events_path = dir.join(EVENTS_FILE);
    let file = fs::File::options().write(true).create_new(true).open(&events_path).map_err(|e| Error::output(&events_path, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut events = 0u64;
    for event in bundle.events() {
        let mut line = event?.to_json_line();
        line.push('\n');
        out.write_all(line.as_bytes()).map_err(|e| Error::output(&events_path, e))?;
        events += 1;
    }
    out.flush().map_err(|e| Error::output(&events_path, e))?;
    let blob_dir = dir.join(BLOB_DIR);
    fs::create_dir(&blob_dir).map_err(|e| Error::output(&blob_dir, e))?;
    let mut blobs = 0u64;
    for record in bundle.blob_records() {
        let hash = record?.header.hash;
        let path = blob_dir.join(hash.to_hex());
        let file = fs::File::options().write(true).create_new(true).open(&path).map_err(|e| Error::output(&path, e))?;
        let mut out = std::io::BufWriter::new(file);
        bundle.read_blob(&hash, &mut out)?;
        out.flush().map_err(|e| Error::output(&path, e))?;
        blobs += 1;
    }
    Ok((events, blobs))
}
