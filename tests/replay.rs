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
