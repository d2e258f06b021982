//! Replay: coherent runs report nothing; each broken rule is reported at the
//! right event; any single event removed, reordered or re-parented is caught.

mod support;

use std::path::Path;

use cathedral_bundle::replay::{ReplayOptions, ReplayReport, SnapshotCheck, Stop};
use cathedral_bundle::{BundleLoader, Encoding, Event, ReplayBundle};
use proptest::prelude::*;
use support::cli::{cathedral, code, stdout};
use support::fixture_gen::{self, broken_runs, build, fixed_options, sample_run, SampleRun};

fn built(run: &SampleRun, dir: &Path, encoding: Encoding) -> ReplayBundle {
    let path = dir.join("run.cath-bundle");
    build(run, &path, fixed_options("run", encoding, None));
    BundleLoader::new().load(&path).unwrap()
}

fn replay(run: &SampleRun) -> ReplayReport {
    let tmp = tempfile::tempdir().unwrap();
    built(run, tmp.path(), Encoding::Postcard).replay().unwrap()
}

fn shipped(dir: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(dir)
}

#[test]
fn every_shipped_coherent_run_replays_clean_from_the_start_and_from_its_snapshot() {
    let mut bundles: Vec<_> = fixture_gen::fixture_specs().into_iter().map(|(n, ..)| shipped("bundles").join(n)).collect();
    bundles.push(shipped("archives/small-postcard.cath-bundle.tar.zst"));
    for path in bundles {
        let bundle = BundleLoader::new().load(&path).unwrap();
        let report = bundle.replay().unwrap();
        assert!(report.is_coherent(), "{}: {:?}", path.display(), report.violations);
        assert_eq!(report.events_replayed, u64::from(bundle.event_count()));
        if let Some(snapshot) = bundle.snapshot() {
            assert_eq!(report.snapshot, SnapshotCheck::Matches);
            let from = bundle.replay_with(&ReplayOptions::default().from_snapshot(true)).unwrap();
            assert!(from.is_coherent(), "{:?}", from.violations);
            assert_eq!(from.from_position, snapshot.log_position);
            assert_eq!(from.state, report.state, "{}: from the snapshot, replay reaches another state", path.display());
            let until = bundle.replay_with(&ReplayOptions::default().stop(Some(Stop::Position(snapshot.log_position)))).unwrap();
            assert_eq!(&until.state.to_snapshot(), snapshot);
        }
    }
}

#[test]
fn the_final_state_names_outputs_and_errors() {
    let run = sample_run("report", 2, true, false);
    let report = replay(&run);
    assert!(report.is_coherent());
    let failed = report.state.node("step_1").unwrap();
    assert_eq!(failed.status, cathedral_bundle::NodeStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("tool transform failed"));
    let done = report.state.node("step_0").unwrap();
    assert_eq!(done.output_hash, Some(cathedral_bundle::Digest::of(&run.blobs[0].0)));
    assert_eq!(report.kinds["NodeFailed"], 1);
}

#[test]
fn each_broken_rule_is_reported_at_its_event() {
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(shipped("replay/expected.json")).unwrap()).unwrap();
    let cases = broken_runs();
    assert_eq!(expected.as_array().unwrap().len(), cases.len(), "regenerate fixtures: cargo run --example gen_fixtures");
    let mut rules = std::collections::BTreeSet::new();
    for case in cases {
        let path = shipped("replay").join(format!("{}.cath-bundle", case.name));
        let bundle = BundleLoader::new().load(&path).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let report = bundle.replay_with(&ReplayOptions::default().strict(case.strict)).unwrap();
        let first = report.violations.first().unwrap_or_else(|| panic!("{}: nothing reported", case.name));
        assert_eq!((first.rule.code(), first.position), (case.rule, case.position), "{}: {first}", case.name);
        assert!(report.violations.iter().all(|v| v.rule.code() == case.rule), "{}: other rules too: {:?}", case.name, report.violations);
        if first.event_id.is_some() {
            let event = bundle.event(first.position.unwrap() as u32).unwrap().unwrap();
            assert_eq!((first.event_id, first.kind), (Some(event.event_id), Some(event.kind)), "{}", case.name);
        }
        if case.strict {
            assert!(bundle.replay().unwrap().is_coherent(), "{}: without --strict, absent hashes are only counted", case.name);
        }
        rules.insert(case.rule);
        // The CLI agrees, and exits 1.
        let mut args = vec!["replay", "--json", "--bundle", path.to_str().unwrap()];
        if case.strict {
            args.push("--strict");
        }
        let out = cathedral(&args);
        assert_eq!(code(&out), 1, "{}", case.name);
        let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(json["coherent"], false);
        assert_eq!(json["report"]["violations"][0]["rule"], case.rule);
    }
    assert_eq!(rules.len(), cathedral_bundle::replay::Rule::ALL.len(), "every rule has a broken fixture");
}

#[test]
fn the_cli_replays_archives_and_prints_the_state_at_a_point() {
    let archive = shipped("archives/small-postcard.cath-bundle.tar.zst");
    let out = cathedral(&["replay", "--bundle", archive.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", support::cli::stderr(&out));
    assert!(stdout(&out).contains("coherent:    yes"));
    let dir = shipped("bundles/snapshot-zstd.cath-bundle");
    let bundle = BundleLoader::new().load(&dir).unwrap();
    let snapshot = bundle.snapshot().unwrap();
    let out = cathedral(&["replay", "--bundle", dir.to_str().unwrap(), "--until-position", &snapshot.log_position.to_string()]);
    assert_eq!(code(&out), 0);
    let shown: cathedral_bundle::Snapshot = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(&shown, snapshot);
    let out = cathedral(&["replay", "--bundle", dir.to_str().unwrap(), "--until-time", &snapshot.logical_time.to_string()]);
    let shown: cathedral_bundle::Snapshot = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(&shown, snapshot, "the events up to the snapshot's time give the snapshot");
    let out = cathedral(&["replay", "--bundle", shipped("bundles/small-postcard.cath-bundle").to_str().unwrap(), "--from-snapshot"]);
    assert_eq!(code(&out), 3, "no snapshot to start from");
    // inspect --node takes a name (directory and archive alike); an unknown one is a usage error.
    for bundle in [shipped("bundles/small-postcard.cath-bundle"), archive.clone()] {
        let b = bundle.to_str().unwrap();
        let out =
            cathedral(&["inspect", "--bundle", b, "--events", "--node", "step_1", "--kind", "NodeStarted", "--kind", "NodeCompleted"]);
        assert_eq!(code(&out), 0, "{}", support::cli::stderr(&out));
        let kinds: Vec<String> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["NodeStarted", "NodeCompleted"]);
        let out = cathedral(&["inspect", "--bundle", b, "--events", "--node", "nope"]);
        assert_eq!(code(&out), 2);
        assert!(support::cli::stderr(&out).contains("step_0, step_1, step_2"));
        let out = cathedral(&["inspect", "--bundle", b, "--events", "--kind", "ToolCompleted", "--decode-payload", "--limit", "1"]);
        let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert!(line["payload_json"]["output"].is_string(), "{line}");
    }
}

/// Breaks `run` by `edit` and expects replay to report it.
fn assert_caught(run: &SampleRun, what: &str, edit: impl Fn(&mut Vec<Event>)) {
    let mut broken = run.clone();
    edit(&mut broken.events);
    broken.metadata.event_count = broken.events.len() as u64;
    let report = replay(&broken);
    assert!(!report.is_coherent(), "{what} was not reported");
}

#[test]
fn any_single_event_removed_reordered_or_reparented_is_reported() {
    for run in [sample_run("chain", 3, false, false), sample_run("fails", 2, true, false)] {
        let n = run.events.len();
        for i in 0..n {
            assert_caught(&run, &format!("removing event {i}"), |e| {
                e.remove(i);
            });
        }
        for i in 0..n - 1 {
            for j in [i + 1, n - 1] {
                if j <= i {
                    continue;
                }
                // Move event j's content to position i; times stay in log order.
                assert_caught(&run, &format!("moving event {j} before {i}"), |e| {
                    let times: Vec<u64> = e.iter().map(|x| x.logical_time).collect();
                    let moved = e.remove(j);
                    e.insert(i, moved);
                    for (x, t) in e.iter_mut().zip(times) {
                        x.logical_time = t;
                    }
                });
            }
        }
        for i in 0..n {
            let later = (i + 1 < n).then(|| run.events[n - 1].event_id);
            let targets = [Some(run.events[i].event_id), later, Some(fixture_gen::uuid_for("nowhere"))];
            for target in targets.into_iter().flatten() {
                assert_caught(&run, &format!("re-parenting event {i}"), |e| e[i].parent_event_id = Some(target));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn generated_coherent_runs_replay_clean(nodes in 1usize..6, failed: bool, snapshot: bool, cbor: bool) {
        let run = sample_run("prop", nodes, failed, snapshot);
        let tmp = tempfile::tempdir().unwrap();
        let bundle = built(&run, tmp.path(), if cbor { Encoding::Cbor } else { Encoding::Postcard });
        let report = bundle.replay_with(&ReplayOptions::default().strict(true)).unwrap();
        prop_assert!(report.is_coherent(), "{:?}", report.violations);
        if snapshot {
            let from = bundle.replay_with(&ReplayOptions::default().from_snapshot(true)).unwrap();
            prop_assert_eq!(from.state, report.state);
        }
    }
}

/// A four-node chain that fails at step_1: step_2 is skipped because of it
/// and step_3 never runs.
fn failing_pipeline() -> SampleRun {
    use cathedral_bundle::{DagEdge, DagNode, EventKind, Uuid};
    let mut run = sample_run("pipeline", 2, true, false);
    let ids = [fixture_gen::uuid_for("pipeline/node/2"), fixture_gen::uuid_for("pipeline/node/3")];
    for (i, id) in ids.iter().enumerate() {
        let before = run.dag.nodes.last().unwrap().id;
        run.dag.nodes.push(DagNode { id: *id, name: format!("step_{}", i + 2), kind: "task".into(), depends_on: vec![before] });
        run.dag.edges.push(DagEdge { from: before, to: *id });
    }
    run.dag.exit_nodes = vec![ids[1]];
    run.metadata.node_count = 4;
    let skip = Event::new(fixture_gen::uuid_for("pipeline/skip"), run.metadata.run_id, ids[0], 0, EventKind::NodeSkipped, vec![]);
    let end = run.events.len() - 1;
    run.events.insert(end, skip);
    let error = Event::new(Uuid::from_u128(7), run.metadata.run_id, Uuid::nil(), 0, EventKind::Error, b"worker lost".to_vec());
    run.events.insert(end, error);
    fixture_gen::relink(&mut run);
    run
}

fn schema(name: &str) -> jsonschema::Validator {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(shipped("../schemas").join(name)).unwrap()).unwrap();
    jsonschema::draft202012::options().build(&value).unwrap()
}

fn assert_schema(name: &str, text: &str) {
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    let errors: Vec<String> = schema(name).iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}");
}

#[test]
fn explain_names_the_failure_its_calls_its_chain_and_what_did_not_run() {
    use cathedral_bundle::{EventKind, NodeStatus};
    let tmp = tempfile::tempdir().unwrap();
    let bundle = built(&failing_pipeline(), tmp.path(), Encoding::Postcard);
    assert!(bundle.replay().unwrap().is_coherent(), "{:?}", bundle.replay().unwrap().violations);
    let x = bundle.explain().unwrap();
    assert_eq!(x.failures.len(), 1);
    let f = &x.failures[0];
    assert_eq!((f.node.as_str(), f.error.as_deref()), ("step_1", Some("tool transform failed")));
    assert_eq!(f.calls.iter().map(|c| c.kind).collect::<Vec<_>>(), [EventKind::ToolInvoked, EventKind::ToolFailed]);
    assert_eq!(f.chain.first().map(|l| l.kind), Some(EventKind::RunCreated), "the chain starts at the run's start");
    assert_eq!(f.chain.last().map(|l| l.kind), Some(EventKind::NodeFailed));
    assert!(f.chain.windows(2).all(|w| w[0].position < w[1].position));
    let blocked: Vec<_> = f.blocked.iter().map(|b| (b.node.as_str(), b.status)).collect();
    assert_eq!(blocked, [("step_2", NodeStatus::Skipped), ("step_3", NodeStatus::Pending)]);
    assert_eq!(x.run_errors.len(), 1);
    assert_eq!(x.run_errors[0].payload, cathedral_bundle::replay::Payload::Text("worker lost".into()));
    // The CLI: one screen, and JSON that matches its schema.
    let path = tmp.path().join("run.cath-bundle");
    let out = cathedral(&["explain", "--bundle", path.to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for needle in [
        "FAILED",
        "failed: step_1",
        "error: tool transform failed",
        "ToolFailed",
        "not run because of it: step_2 (skipped), step_3 (pending)",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let out = cathedral(&["explain", "--json", "--bundle", path.to_str().unwrap()]);
    assert_schema("explain.schema.json", &stdout(&out));
    // A completed run: every node with its output.
    let done = BundleLoader::new().load(shipped("bundles/small-postcard.cath-bundle")).unwrap().explain().unwrap();
    assert!(done.failures.is_empty());
    assert!(done.nodes.iter().all(|n| n.status == NodeStatus::Completed && n.output_hash.is_some()));
}

#[test]
fn replay_json_matches_its_schema_for_clean_and_broken_runs() {
    for path in [
        shipped("bundles/snapshot-zstd.cath-bundle"),
        shipped("replay/parent-is-later.cath-bundle"),
        shipped("replay/snapshot-disagrees.cath-bundle"),
    ] {
        let out = cathedral(&["replay", "--json", "--bundle", path.to_str().unwrap()]);
        assert_schema("replay-report.schema.json", &stdout(&out));
    }
}

#[test]
fn diff_finds_where_two_runs_of_one_workflow_part() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, run: &SampleRun, encoding| {
        let path = tmp.path().join(name);
        build(run, &path, fixed_options(name, encoding, None));
        path
    };
    let good = sample_run("nightly", 3, false, false);
    let bad = sample_run("nightly", 3, true, false);
    let a = write("good.cath-bundle", &good, Encoding::Postcard);
    let a_cbor = write("good-cbor.cath-bundle", &good, Encoding::Cbor);
    let b = write("bad.cath-bundle", &bad, Encoding::Postcard);
    let load = |p: &Path| BundleLoader::new().load(p).unwrap();
    // The same run, in another encoding and bundle id: equivalent.
    let same = load(&a).diff(&load(&a_cbor)).unwrap();
    assert!(same.equivalent, "{same:#?}");
    // Yesterday's good run against today's failed one.
    let d = load(&a).diff(&load(&b)).unwrap();
    assert!(!d.equivalent);
    assert_eq!(d.metadata.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), ["status"]);
    let first = d.events.first_divergence.as_ref().unwrap();
    assert_eq!(first.key.node.as_deref(), Some("step_2"));
    let position =
        good.events.iter().position(|e| e.kind == cathedral_bundle::EventKind::ToolCompleted && e.node_id == good.dag.nodes[2].id);
    assert_eq!(first.a.as_ref().map(|s| s.position).or(first.b.as_ref().map(|s| s.position)), position.map(|p| p as u64));
    assert_eq!(d.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), ["step_2"]);
    assert_eq!(d.nodes[0].b.as_ref().unwrap().error.as_deref(), Some("tool transform failed"));
    // An event moved between nodes' interleaving is not a difference; an added one is.
    let mut moved = good.clone();
    let heartbeat = moved.events.iter().position(|e| e.kind == cathedral_bundle::EventKind::Heartbeat).unwrap();
    let h = moved.events.remove(heartbeat);
    moved.events.insert(heartbeat + 3, h);
    fixture_gen::relink(&mut moved);
    let m = write("moved.cath-bundle", &moved, Encoding::Postcard);
    assert!(load(&a).diff(&load(&m)).unwrap().events.divergences.is_empty());
    let mut added = good.clone();
    let extra = Event::new(
        fixture_gen::uuid_for("extra"),
        good.metadata.run_id,
        cathedral_bundle::Uuid::nil(),
        0,
        cathedral_bundle::EventKind::Heartbeat,
        vec![],
    );
    added.events.insert(5, extra);
    fixture_gen::relink(&mut added);
    let plus = write("added.cath-bundle", &added, Encoding::Postcard);
    let d = load(&a).diff(&load(&plus)).unwrap();
    assert_eq!((d.events.only_in_a, d.events.only_in_b, d.events.first_divergence.unwrap().what), (0, 1, "only_in_b"));
    // The CLI: exit 0 for a bundle and its own archive, 1 for different runs, JSON per its schema.
    let dir = shipped("bundles/small-postcard.cath-bundle");
    let archive = shipped("archives/small-postcard.cath-bundle.tar.zst");
    assert_eq!(code(&cathedral(&["diff", dir.to_str().unwrap(), archive.to_str().unwrap()])), 0);
    let out = cathedral(&["diff", "--json", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert_schema("diff.schema.json", &stdout(&out));
    assert!(stdout(&cathedral(&["diff", a.to_str().unwrap(), b.to_str().unwrap()])).contains("first divergence: step_2"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Arbitrary runs (any kinds, nodes, parents, hashes and payloads, in
    /// any order) never make replay, explain or diff fail or panic: each
    /// rule broken is a violation at a position inside the log.
    #[test]
    fn arbitrary_runs_are_reported_never_crash(
        steps in proptest::collection::vec((0usize..23, 0usize..5, 0usize..4, proptest::option::of(0usize..40), proptest::bool::ANY, 0usize..4), 0..40),
        status in 0usize..4,
    ) {
        use cathedral_bundle::{Digest, EventKind, RunStatus, Uuid};
        let mut run = sample_run("arbitrary", 3, false, false);
        let nodes: Vec<Uuid> = run.dag.nodes.iter().map(|n| n.id).collect();
        let blob = Digest::of(&run.blobs[0].0);
        let payloads = [b"{}".to_vec(), format!("{{\"output\":\"{blob}\"}}").into_bytes(), b"{\"output\":\"zz\"}".to_vec(), b"\xff\xfe".to_vec()];
        let ids: Vec<Uuid> = (0..steps.len()).map(|i| fixture_gen::uuid_for(&format!("arbitrary/{i}"))).collect();
        run.events = steps.iter().enumerate().map(|(i, (kind, node, payload, parent, hashed, _))| {
            let kind = EventKind::ALL[*kind];
            let payload = if kind == EventKind::BlobStored { blob.to_hex().into_bytes() } else { payloads[*payload % payloads.len()].clone() };
            let node = if *node >= nodes.len() { Uuid::nil() } else { nodes[*node] };
            let mut e = Event::new(ids[i], run.metadata.run_id, node, i as u64, kind, payload);
            e.parent_event_id = parent.map(|p| if p < ids.len() { ids[p] } else { fixture_gen::uuid_for("nowhere") });
            if *hashed {
                e.prior_state_hash = Some(Digest::of(&[i as u8]));
                e.post_state_hash = Some(Digest::of(&[i as u8 + 1]));
            }
            e
        }).collect();
        run.metadata.event_count = run.events.len() as u64;
        run.metadata.status = [RunStatus::Running, RunStatus::Completed, RunStatus::Failed, RunStatus::Cancelled][status];
        let tmp = tempfile::tempdir().unwrap();
        let bundle = built(&run, tmp.path(), Encoding::Postcard);
        for strict in [false, true] {
            let report = bundle.replay_with(&ReplayOptions::default().strict(strict)).unwrap();
            prop_assert_eq!(report.events_replayed, run.events.len() as u64);
            prop_assert_eq!(report.violations_total, report.violations.len() as u64);
            for v in &report.violations {
                prop_assert!(v.position.is_none_or(|p| p <= run.events.len() as u64), "{v}");
                prop_assert!(v.chain.windows(2).all(|w| w[0].position > w[1].position), "chains go back in the log: {v:?}");
            }
        }
        bundle.explain().unwrap();
        let other = built(&sample_run("arbitrary", 3, false, false), &tmp.path().join("b"), Encoding::Postcard);
        bundle.diff(&other).unwrap();
    }
}
