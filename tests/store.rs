//! The run store and its recorder: what a crash leaves, and how runs are found.

mod support;

use cathedral_bundle::store::{bundle_run, RunStore};
use cathedral_bundle::{BuildOptions, BundleLoader, Error, RunStatus};
use support::fixture_gen::{record, run_start, sample_run};
use uuid::Uuid;

#[test]
fn recorded_run_bundles_and_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("rec", 3, false, true);
    record(tmp.path(), &run);
    let store = RunStore::new(tmp.path());
    let out = tmp.path().join("b.cath-bundle");
    bundle_run(&store, &run.metadata.run_id, &out, BuildOptions::default(), &|_| {}).unwrap();
    let bundle = BundleLoader::new().load(&out).unwrap();
    assert_eq!(bundle.metadata(), &run.metadata);
    assert_eq!(bundle.events().collect::<Result<Vec<_>, _>>().unwrap(), run.events);
    assert_eq!(bundle.snapshot(), run.snapshot.as_ref());
}

#[test]
fn a_crashed_recorder_leaves_a_detectably_incomplete_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("crash", 2, false, false);
    let store = RunStore::new(tmp.path());
    {
        let mut recorder = store.record(run_start(&run), &run.workflow, &run.dag).unwrap();
        for e in &run.events[..5] {
            recorder.append_event(e).unwrap();
        }
        recorder.put_blob(b"partial").unwrap();
        // Dropped without finish(): as if the process died.
    }
    let out = tmp.path().join("b.cath-bundle");
    let err = bundle_run(&store, &run.metadata.run_id, &out, BuildOptions::default(), &|_| {}).unwrap_err();
    assert!(err.to_string().contains("incomplete"), "{err}");
    assert!(!out.exists());
    // Even with the marker gone, run.json still says running.
    std::fs::remove_file(store.run_dir(&run.metadata.run_id).join(".recording")).unwrap();
    let err = bundle_run(&store, &run.metadata.run_id, &out, BuildOptions::default(), &|_| {}).unwrap_err();
    assert!(err.to_string().contains("running"), "{err}");
    assert!(!out.exists());
}

#[test]
fn recorder_refuses_bad_events_and_duplicate_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("refuse", 2, false, false);
    let store = RunStore::new(tmp.path());
    let mut recorder = store.record(run_start(&run), &run.workflow, &run.dag).unwrap();
    recorder.append_event(&run.events[1]).unwrap();
    assert!(recorder.append_event(&run.events[0]).is_err(), "backwards in time");
    assert!(recorder.append_event(&run.events[1]).is_err(), "duplicate id");
    let mut bad = run.events[2].clone();
    bad.payload_hash = cathedral_bundle::Digest::of(b"other");
    assert!(recorder.append_event(&bad).is_err(), "payload hash");
    let mut foreign = run.events[2].clone();
    foreign.run_id = Uuid::from_u128(7);
    assert!(recorder.append_event(&foreign).is_err(), "run id");
    let metadata = recorder.finish(RunStatus::Cancelled, Some("2026-03-14T15:01:00Z".parse().unwrap())).unwrap();
    assert_eq!(metadata.event_count, 1);
    assert!(matches!(store.record(run_start(&run), &run.workflow, &run.dag), Err(Error::Exists { .. })));
}

#[test]
fn run_ids_resolve_by_unique_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let store = RunStore::new(tmp.path());
    let mut a = sample_run("a", 1, false, false);
    let mut b = sample_run("b", 1, false, false);
    a.metadata.run_id = Uuid::parse_str("12345678-0000-4000-8000-000000000001").unwrap();
    b.metadata.run_id = Uuid::parse_str("12345678-0000-4000-8000-000000000002").unwrap();
    for run in [&mut a, &mut b] {
        let id = run.metadata.run_id;
        run.events.iter_mut().for_each(|e| e.run_id = id);
        record(tmp.path(), run);
    }
    assert_eq!(store.resolve("12345678-0000-4000-8000-000000000001").unwrap(), a.metadata.run_id);
    assert_eq!(store.resolve("12345678-0000-4000-8000-000000000002").unwrap(), b.metadata.run_id);
    assert!(store.resolve("12345678-0000-4000-8000-0000000000").unwrap_err().to_string().contains("matches 2 runs"));
    assert!(matches!(store.resolve("9"), Err(Error::NotFound { .. })));
    assert!(matches!(store.resolve("../x"), Err(Error::InvalidInput { .. })));
    assert!(matches!(store.resolve(""), Err(Error::InvalidInput { .. })));
    assert_eq!(store.runs().unwrap().len(), 2);
}
