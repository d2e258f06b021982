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

#[test]
fn a_run_can_be_read_back_from_the_store() {
    use cathedral_bundle::store::RunState;
    use cathedral_bundle::Limits;
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("readback", 3, true, true);
    record(tmp.path(), &run);
    let store = RunStore::new(tmp.path());
    let stored = store.open(&run.metadata.run_id).unwrap();
    let limits = Limits::default();
    assert_eq!(stored.state().unwrap(), RunState::Complete);
    assert_eq!(stored.metadata(&limits).unwrap(), run.metadata);
    assert_eq!(stored.dag(&limits).unwrap(), run.dag);
    assert_eq!(stored.workflow(&limits).unwrap(), run.workflow);
    assert_eq!(stored.snapshot(&limits).unwrap(), run.snapshot);
    let mut lines = stored.events(&limits).unwrap();
    let mut events = Vec::new();
    while let Some((e, _)) = lines.next_event().unwrap() {
        events.push(e);
    }
    assert_eq!(events, run.events);
    let blobs = stored.blobs().unwrap();
    assert!(!blobs.is_empty());
    for hash in &blobs {
        assert_eq!(cathedral_bundle::Digest::of(&stored.read_blob(hash, &limits).unwrap()), *hash);
    }
    // A recording in progress is told apart, and can be abandoned.
    let other = sample_run("abandoned", 2, false, false);
    let recorder = store.record(run_start(&other), &other.workflow, &other.dag).unwrap();
    assert_eq!(store.open(&other.metadata.run_id).unwrap().state().unwrap(), RunState::Recording);
    recorder.abort().unwrap();
    assert!(store.open(&other.metadata.run_id).unwrap_err().is_not_found());
}

#[test]
fn the_recorder_checks_a_snapshot_when_it_is_set() {
    use cathedral_bundle::{NodeState, NodeStatus, Snapshot};
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("snap", 2, false, false);
    let store = RunStore::new(tmp.path());
    let mut recorder = store.record(run_start(&run), &run.workflow, &run.dag).unwrap();
    for e in &run.events[..3] {
        recorder.append_event(e).unwrap();
    }
    let node = run.dag.nodes[0].id;
    let ok = Snapshot {
        logical_time: run.events[2].logical_time,
        log_position: 3,
        nodes: vec![NodeState { node_id: node, status: NodeStatus::Running, output_hash: None, error: None }],
    };
    recorder.set_snapshot(&ok).unwrap();
    let past_the_end = Snapshot { log_position: 4, ..ok.clone() };
    let unknown_node = Snapshot {
        nodes: vec![NodeState { node_id: Uuid::from_u128(77), status: NodeStatus::Running, output_hash: None, error: None }],
        ..ok.clone()
    };
    let unknown_blob = Snapshot {
        nodes: vec![NodeState {
            node_id: node,
            status: NodeStatus::Completed,
            output_hash: Some(cathedral_bundle::Digest::of(b"never put")),
            error: None,
        }],
        ..ok.clone()
    };
    for (what, bad) in [("position", past_the_end), ("node", unknown_node), ("blob", unknown_blob)] {
        let err = recorder.set_snapshot(&bad).unwrap_err();
        assert!(matches!(err, Error::Rule { .. }), "{what}: {err}");
    }
    let put = recorder.put_blob(b"output").unwrap();
    let with_output =
        Snapshot { nodes: vec![NodeState { node_id: node, status: NodeStatus::Completed, output_hash: Some(put), error: None }], ..ok };
    recorder.set_snapshot(&with_output).unwrap();
}

/// Blobs read together are each checked against their name, and each read
/// fails alone: a changed, missing or linked blob is named at its place,
/// and the others around it (sizes either side of the chunk boundaries,
/// hashed side by side) read back exactly.
#[test]
fn blobs_read_together_are_checked_each_against_its_name() {
    use cathedral_bundle::{Digest, Limits};
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("together", 2, false, false);
    record(tmp.path(), &run);
    let stored = RunStore::new(tmp.path()).open(&run.metadata.run_id).unwrap();
    let dir = stored.dir().join("blobs");
    let mut contents = Vec::new();
    for (i, len) in [0usize, 1, 64, 1023, 1024, 1025, 3000, 16 << 10, (16 << 10) + 1, 40_000].iter().cycle().take(45).enumerate() {
        let content = support::fixture_gen::noise(&format!("together/{i}"), *len);
        std::fs::write(dir.join(Digest::of(&content).to_hex()), &content).unwrap();
        contents.push(content);
    }
    contents.sort_by_key(|c| Digest::of(c));
    contents.dedup();
    let hashes: Vec<Digest> = contents.iter().map(|c| Digest::of(c)).collect();
    let limits = Limits::default();
    let read = stored.read_blobs(&hashes, &limits);
    for (i, (r, content)) in read.iter().zip(&contents).enumerate() {
        assert_eq!(r.as_ref().unwrap(), content, "blob {i}");
    }
    // Damage three, at the start, the middle and the end.
    let (changed, missing, linked) = (hashes[0], hashes[hashes.len() / 2], hashes[hashes.len() - 1]);
    std::fs::write(dir.join(changed.to_hex()), b"changed").unwrap();
    std::fs::remove_file(dir.join(missing.to_hex())).unwrap();
    std::fs::remove_file(dir.join(linked.to_hex())).unwrap();
    std::os::unix::fs::symlink(dir.join(hashes[1].to_hex()), dir.join(linked.to_hex())).unwrap();
    let read = stored.read_blobs(&hashes, &limits);
    for (i, (r, hash)) in read.iter().zip(&hashes).enumerate() {
        match r {
            Err(Error::HashMismatch { expected, .. }) if *hash == changed => assert_eq!(*expected, changed),
            Err(e) if *hash == missing => assert!(e.is_not_found(), "{e}"),
            Err(Error::FileType { .. }) if *hash == linked => {}
            Ok(content) if *hash != changed && *hash != missing && *hash != linked => assert_eq!(content, &contents[i]),
            other => panic!("blob {i}: {other:?}"),
        }
    }
}
