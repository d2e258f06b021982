//! [`bundle_run`]: one call from a run in a store to a bundle.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use uuid::Uuid;

use super::{parse_line, EventLines, RunState, RunStore, StoredRun, RUN_FILE, SNAPSHOT_FILE};
use crate::bundle::{BlobWriter, BuildOptions, BuildSummary, BundleBuilder, BundleLoader, LoadError, PackOptions};
use crate::digest::Digest;
use crate::error::Error;
use crate::format::blob::{BlobFormat, EncodedBlob};
use crate::format::event::{Event, PayloadChecked};
use crate::format::model::RunStatus;
use crate::limits::Limits;

/// Validates run `id` of `store` and writes it into a bundle at `output`:
/// a directory, or, when the name ends in `.cath-bundle.tar.zst`, an
/// archive (built beside it, then packed and verified; the directory is
/// removed whatever happens).
///
/// Validation: `run.json`, `dag.json` and `snapshot.json` parse strictly; the
/// run is finished (no `.recording` marker, status not `running`); every
/// event line is the canonical JSON form of an event that obeys the event
/// rules (FORMAT.md §5.1), ids unique; the number of lines equals
/// `run.json`'s `event_count`; every blob file's content matches its name;
/// every blob named by a `BlobStored` event or a snapshot output hash
/// exists; every event's node is in the DAG. On any error nothing is left at
/// `output`. `progress` receives the number of input bytes read (event
/// lines and blob contents) as they are read.
pub fn bundle_run(
    store: &RunStore,
    id: &Uuid,
    output: impl AsRef<Path>,
    options: BuildOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BuildSummary, Error> {
    let output = output.as_ref();
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.ends_with(crate::format::archive::ARCHIVE_SUFFIX) {
        crate::format::archive::top_for_archive(&name)?;
        let parent = crate::fsutil::parent_dir(output);
        std::fs::create_dir_all(&parent).map_err(|e| Error::output(&parent, e))?;
        let (scratch, _lock) = crate::bundle::staging_dir(&parent, &name)?;
        let (overwrite, limits) = (options.overwrite, options.limits);
        let result = bundle_dir(store, id, &scratch.join("run.cath-bundle"), options.overwrite(false), progress).and_then(|mut summary| {
            let loader = BundleLoader::new().limits(limits).enforce_signature(false);
            let packed = loader.pack(scratch.join("run.cath-bundle"), output, PackOptions::default().overwrite(overwrite));
            packed.map_err(|e| match e {
                LoadError::Error(e) => e,
                other => Error::input("bundle", other.to_string()),
            })?;
            summary.path = output.to_path_buf();
            Ok(summary)
        });
        let _ = std::fs::remove_dir_all(&scratch);
        return result;
    }
    bundle_dir(store, id, output, options, progress)
}

/// [`bundle_run`] into a bundle directory.
fn bundle_dir(
    store: &RunStore,
    id: &Uuid,
    output: &Path,
    options: BuildOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BuildSummary, Error> {
    let run = store.open(id)?;
    let dir = run.dir().display().to_string();
    if run.state()? == RunState::Recording {
        return Err(Error::rule(&dir, "incomplete run", "its recorder did not finish (.recording marker present)"));
    }
    let limits = options.limits;
    let run_file = run.dir().join(RUN_FILE).display().to_string();
    let metadata = run.metadata(&limits)?;
    if metadata.run_id != *id {
        return Err(Error::inconsistent(&run_file, "run_id", id, metadata.run_id));
    }
    if metadata.status == RunStatus::Running {
        return Err(Error::rule(&run_file, "incomplete run", "status is \"running\""));
    }
    let dag = run.dag(&limits)?;
    let workflow = run.workflow(&limits)?;
    let snapshot = run.snapshot(&limits)?;
    let blobs = run.blobs()?;

    let mut builder = BundleBuilder::create(output, options)?;
    builder.set_metadata(metadata.clone())?;
    builder.set_workflow(workflow);
    builder.set_dag(dag)?;
    if let Some(s) = snapshot {
        builder.set_snapshot(s);
    }
    // Events are added on this thread while blob files are written on
    // another (each side on every core); the first failure stops both.
    let mut events = run.events(&limits)?;
    let mut writer = builder.split_blobs();
    let stop = AtomicBool::new(false);
    let (added, written) = std::thread::scope(|s| {
        let writing = s.spawn(|| stopping(&stop, add_blobs(&run, &blobs, &mut writer, &limits, progress, &stop)));
        let added = stopping(&stop, add_events(&mut builder, &mut events, progress, &stop));
        (added, writing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    // A side that saw the other fail stopped without an error of its own.
    added?;
    written?;
    builder.join_blobs(writer)?;
    if events.lines() as u64 != metadata.event_count {
        let detail = format!(
            "holds {} events, but run.json says event_count {}: the run is incomplete or was changed",
            events.lines(),
            metadata.event_count
        );
        return Err(Error::rule(&run.dir().join(super::EVENTS_FILE).display().to_string(), "event count", detail));
    }
    builder.build().map_err(|e| match e {
        Error::Rule { file, rule, detail } if file == "event" => {
            Error::Rule { file: format!("{dir}/{}", super::EVENTS_FILE), rule, detail }
        }
        Error::Rule { file, rule, detail } if file == crate::format::SNAPSHOT_FILE => {
            Error::Rule { file: run.dir().join(SNAPSHOT_FILE).display().to_string(), rule, detail }
        }
        other => other,
    })
}

/// Lines parsed, then payload-hashed side by side, by one task.
const LANE_BATCH: usize = 256;

/// Event lines parsed and checked per batch, on every core.
const EVENT_BATCH: usize = 4096;
/// Blobs read and encoded per batch, on every core: at most this many, and
/// at most [`BLOB_BATCH_BYTES`] of them (a single larger blob is a batch of
/// its own), so memory stays bounded whatever the blob sizes.
const BLOB_BATCH: usize = 256;
const BLOB_BATCH_BYTES: u64 = 64 << 20;
/// Blobs of a batch read and hashed together by one task.
const BLOB_GROUP: usize = 32;

/// `items` cut into batches of at most [`BLOB_BATCH`] items and at most
/// [`BLOB_BATCH_BYTES`] by their `sizes` (an item larger alone is a batch
/// of its own).
fn batches<'a, T>(items: &'a [T], sizes: &[u64]) -> Vec<&'a [T]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, &size) in sizes.iter().enumerate().take(items.len()) {
        if i > start && (i - start == BLOB_BATCH || bytes.saturating_add(size) > BLOB_BATCH_BYTES) {
            batches.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(size);
    }
    if start < items.len() {
        batches.push(&items[start..]);
    }
    batches
}

/// `result`; an error also sets `stop`, for the other side.
fn stopping(stop: &AtomicBool, result: Result<(), Error>) -> Result<(), Error> {
    if result.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    result
}

/// Writes every blob of the run (`hashes`): read, checked and encoded on
/// every core a batch at a time, each batch's files then written on every
/// core. Returns early, without an error, once `stop` is set.
fn add_blobs(
    run: &StoredRun,
    hashes: &[Digest],
    writer: &mut BlobWriter,
    limits: &Limits,
    progress: &(dyn Fn(u64) + Sync),
    stop: &AtomicBool,
) -> Result<(), Error> {
    let sizes = run.blob_sizes(hashes)?;
    for batch in batches(hashes, &sizes) {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Groups of blobs read, hashed side by side and encoded on every core.
        let encoded: Vec<Vec<Result<(u64, EncodedBlob), Error>>> = batch
            .par_chunks(BLOB_GROUP)
            .map_init(
                || None,
                |zstd, group| {
                    let contents = run.read_blobs(group, limits);
                    let encode = |(content, hash): (Result<Vec<u8>, Error>, &Digest)| {
                        let content = content?;
                        Ok((content.len() as u64, writer.encode(zstd, &content, *hash, BlobFormat::Raw)?))
                    };
                    contents.into_iter().zip(group).map(encode).collect()
                },
            )
            .collect();
        let (sizes, blobs): (Vec<u64>, Vec<EncodedBlob>) =
            encoded.into_iter().flatten().collect::<Result<Vec<_>, Error>>()?.into_iter().unzip();
        writer.add(blobs)?;
        progress(sizes.iter().sum());
    }
    Ok(())
}

/// Adds every event of `events` in order. Lines are read in batches; each
/// batch is parsed, checked for canonical form and payload hash on every
/// core, then added in order (the order-dependent rules are the builder's).
/// Returns early, without an error, once `stop` is set.
fn add_events(
    builder: &mut BundleBuilder,
    events: &mut EventLines,
    progress: &(dyn Fn(u64) + Sync),
    stop: &AtomicBool,
) -> Result<(), Error> {
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        events.next_batch(EVENT_BATCH, &mut batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let first = events.lines() - batch.len() + 1;
        let parsed: Vec<Vec<PayloadChecked<Event>>> = batch
            .par_chunks(LANE_BATCH)
            .enumerate()
            .map(|(c, lines)| {
                let at = first + c * LANE_BATCH;
                let events: Vec<Result<Event, Error>> =
                    lines.iter().enumerate().map(|(i, line)| parse_line(line, &|| events.location_of(at + i))).collect();
                Event::with_payload_checks(events, |e| e)
            })
            .collect();
        for (i, (parsed, line)) in parsed.into_iter().flatten().zip(&batch).enumerate() {
            let (event, hashed) = parsed?;
            builder.add_event_hashed(&event, hashed).map_err(|e| e.located(&events.location_of(first + i)))?;
            progress(line.len() as u64 + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_batches_are_bounded_by_count_and_bytes() {
        const M: u64 = 1 << 20;
        for sizes in [vec![], vec![5], vec![1; 1000], vec![40 * M, 40 * M, 1, 200 * M, 3], vec![63 * M, M, M, 64 * M, 65 * M, 0]] {
            let got = batches(&sizes, &sizes);
            assert_eq!(got.concat(), sizes, "every item once, in order");
            for b in &got {
                assert!(!b.is_empty() && b.len() <= BLOB_BATCH);
                assert!(b.len() == 1 || b.iter().sum::<u64>() <= BLOB_BATCH_BYTES, "{b:?}");
            }
        }
    }
}
