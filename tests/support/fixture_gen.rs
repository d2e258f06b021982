//! Deterministic sample runs and the fixture bundles made from them.
//! Used by `examples/gen_fixtures.rs` (which writes `fixtures/`) and by the
//! test that fails when regenerating would change a byte.
#![allow(dead_code)]

use std::path::Path;

use cathedral_bundle::format::BlobFormat;
use cathedral_bundle::{
    BuildOptions, BuildSummary, BundleBuilder, Dag, DagEdge, DagNode, Digest, Encoding, Event, EventKind, Metadata, NodeState, NodeStatus,
    Platform, RunStatus, Snapshot,
};
use uuid::Uuid;

/// Everything a run consists of, in memory.
#[derive(Debug, Clone)]
pub struct SampleRun {
    pub metadata: Metadata,
    pub workflow: String,
    pub dag: Dag,
    pub events: Vec<Event>,
    pub blobs: Vec<(Vec<u8>, BlobFormat)>,
    pub snapshot: Option<Snapshot>,
}

/// A UUID derived from a label, stable across runs and platforms.
pub fn uuid_for(label: &str) -> Uuid {
    let hash = blake3::hash(label.as_bytes());
    uuid::Builder::from_random_bytes(hash.as_bytes()[..16].try_into().unwrap()).into_uuid()
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn noise(label: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(label.as_bytes()).finalize_xof().fill(&mut out);
    out
}

pub const FIXED_TIME: &str = "2026-03-14T15:09:26Z";

/// A run of `nodes` tool nodes in a chain. A failed run fails at its last node.
pub fn sample_run(name: &str, nodes: usize, failed: bool, with_snapshot: bool) -> SampleRun {
    let run_id = uuid_for(&format!("{name}/run"));
    let node_ids: Vec<Uuid> = (0..nodes).map(|i| uuid_for(&format!("{name}/node/{i}"))).collect();
    let dag = Dag {
        nodes: node_ids
            .iter()
            .enumerate()
            .map(|(i, id)| DagNode {
                id: *id,
                name: format!("step_{i}"),
                kind: if i % 2 == 0 { "tool".into() } else { "task".into() },
                depends_on: if i == 0 { vec![] } else { vec![node_ids[i - 1]] },
            })
            .collect(),
        edges: node_ids.windows(2).map(|w| DagEdge { from: w[0], to: w[1] }).collect(),
        entry_nodes: node_ids.first().copied().into_iter().collect(),
        exit_nodes: node_ids.last().copied().into_iter().collect(),
    };
    let workflow = format!(
        "workflow {name} version \"1.2.0\" {{\n{}}}\n",
        (0..nodes)
            .map(|i| format!(
                "  step step_{i} {{ tool = \"transform\"; after = {} }}\n",
                if i == 0 { "[]".into() } else { format!("[step_{}]", i - 1) }
            ))
            .collect::<String>()
    );
    let mut events = Vec::new();
    let mut blobs = Vec::new();
    let mut time = 0u64;
    let mut parent: Option<Uuid> = None;
    let mut state = Digest::of(name.as_bytes());
    let mut push = |kind: EventKind, node: Uuid, payload: Vec<u8>, events: &mut Vec<Event>| {
        time += 1;
        let id = uuid_for(&format!("{name}/event/{}", events.len()));
        let mut e = Event::new(id, run_id, node, time, kind, payload);
        e.parent_event_id = parent;
        e.prior_state_hash = Some(state);
        state = Digest::of(&[state.as_bytes().as_slice(), id.as_bytes()].concat());
        e.post_state_hash = Some(state);
        parent = Some(id);
        events.push(e);
    };
    push(EventKind::RunCreated, Uuid::nil(), format!("{{\"workflow\":\"{name}\"}}").into_bytes(), &mut events);
    push(EventKind::RunStarted, Uuid::nil(), b"{}".to_vec(), &mut events);
    // Where each node's NodeCompleted ended, for the snapshot.
    let mut completed_at = Vec::new();
    for (i, node) in node_ids.iter().enumerate() {
        let fails = failed && i + 1 == nodes;
        push(EventKind::NodeScheduled, *node, format!("{{\"node\":\"step_{i}\"}}").into_bytes(), &mut events);
        push(EventKind::NodeStarted, *node, b"{}".to_vec(), &mut events);
        push(EventKind::ToolInvoked, *node, format!("{{\"tool\":\"transform\",\"input\":{i}}}").into_bytes(), &mut events);
        // A compressible JSON output and an incompressible binary one per node.
        let json = format!(
            "{{\"node\":{i},\"rows\":[{}]}}",
            (0..40).map(|r| format!("{{\"id\":{r},\"value\":\"row-{r}-of-node-{i}\"}}")).collect::<Vec<_>>().join(",")
        );
        let binary = noise(&format!("{name}/blob/{i}"), 300 + 97 * i);
        let json_hash = Digest::of(json.as_bytes());
        blobs.push((json.into_bytes(), BlobFormat::Json));
        blobs.push((binary, BlobFormat::Raw));
        push(EventKind::BlobStored, *node, json_hash.to_hex().into_bytes(), &mut events);
        if fails {
            push(EventKind::ToolFailed, *node, b"{\"error\":\"exit status 2\"}".to_vec(), &mut events);
            push(EventKind::NodeFailed, *node, b"{\"error\":\"tool transform failed\"}".to_vec(), &mut events);
        } else {
            push(EventKind::ToolCompleted, *node, format!("{{\"output\":\"{json_hash}\"}}").into_bytes(), &mut events);
            push(EventKind::NodeCompleted, *node, b"{}".to_vec(), &mut events);
            completed_at.push((events.len(), json_hash));
        }
        if i == 0 {
            push(EventKind::Heartbeat, Uuid::nil(), vec![], &mut events);
        }
    }
    push(if failed { EventKind::RunFailed } else { EventKind::RunCompleted }, Uuid::nil(), b"{}".to_vec(), &mut events);
    // The same content twice is stored once.
    if let Some((first, _)) = blobs.first().cloned() {
        blobs.push((first, BlobFormat::Json));
    }
    // The state right after the middle node completed: the nodes before it
    // completed with their outputs, the rest pending (REPLAY.md §5).
    let snapshot = with_snapshot.then(|| {
        let done = completed_at.len().div_ceil(2).max(1).min(completed_at.len());
        let position = completed_at.get(done.wrapping_sub(1)).map_or(2, |(p, _)| *p);
        let status = |i: usize| match completed_at.get(i) {
            Some((_, hash)) if i < done => (NodeStatus::Completed, Some(*hash)),
            _ => (NodeStatus::Pending, None),
        };
        Snapshot {
            logical_time: events[position - 1].logical_time,
            log_position: position as u64,
            nodes: node_ids
                .iter()
                .enumerate()
                .map(|(i, id)| NodeState { node_id: *id, status: status(i).0, output_hash: status(i).1, error: None })
                .collect(),
        }
    });
    let metadata = Metadata {
        run_id,
        workflow_name: name.to_string(),
        workflow_version: "1.2.0".into(),
        started_at: "2026-03-14T15:00:00Z".parse().unwrap(),
        completed_at: Some("2026-03-14T15:05:00Z".parse().unwrap()),
        status: if failed { RunStatus::Failed } else { RunStatus::Completed },
        node_count: nodes as u64,
        event_count: events.len() as u64,
        platform: Platform { os: "linux".into(), arch: "x86_64".into() },
        cathedral_version: "0.9.0".into(),
    };
    SampleRun { metadata, workflow, dag, events, blobs, snapshot }
}

/// `sample_run` grown past what a pipe buffers: `extra` heartbeat events of
/// 200-byte payloads before the run's last event, and one incompressible
/// blob of `blob_size` bytes (returned with the run).
pub fn large_run(name: &str, extra: u64, blob_size: usize) -> (SampleRun, Vec<u8>) {
    let mut run = sample_run(name, 2, false, false);
    let run_id = run.metadata.run_id;
    let time = run.events.last().unwrap().logical_time;
    let last = run.events.pop().unwrap();
    for i in 0..extra {
        let id = uuid_for(&format!("{name}/filler/{i}"));
        run.events.push(Event::new(id, run_id, Uuid::nil(), time, EventKind::Heartbeat, noise(&format!("{name}/{i}"), 200)));
    }
    run.events.push(last);
    run.metadata.event_count = run.events.len() as u64;
    let blob = noise(&format!("{name}/blob"), blob_size);
    run.blobs.push((blob.clone(), BlobFormat::Raw));
    (run, blob)
}

/// Builds `run` into a bundle at `out`.
pub fn build(run: &SampleRun, out: &Path, options: BuildOptions) -> BuildSummary {
    let mut b = BundleBuilder::create(out, options).expect("create");
    b.set_metadata(run.metadata.clone()).unwrap();
    b.set_workflow(run.workflow.clone());
    b.set_dag(run.dag.clone()).unwrap();
    if let Some(s) = &run.snapshot {
        b.set_snapshot(s.clone());
    }
    for e in &run.events {
        b.add_event(e).unwrap();
    }
    for (content, format) in &run.blobs {
        b.add_blob_as(content, *format).unwrap();
    }
    b.build().expect("build")
}

/// Options that make a build reproducible.
pub fn fixed_options(name: &str, encoding: Encoding, compression_level: Option<i32>) -> BuildOptions {
    BuildOptions::default()
        .encoding(encoding)
        .compression_level(compression_level)
        .bundle_id(uuid_for(&format!("{name}/bundle")))
        .created_at(FIXED_TIME.parse().unwrap())
        .overwrite(true)
}

/// The fixture bundles: (directory name, run, encoding, compression).
pub fn fixture_specs() -> Vec<(&'static str, SampleRun, Encoding, Option<i32>)> {
    vec![
        ("small-postcard.cath-bundle", sample_run("ingest", 3, false, false), Encoding::Postcard, None),
        ("cbor-events.cath-bundle", sample_run("report", 2, true, false), Encoding::Cbor, None),
        ("snapshot-zstd.cath-bundle", sample_run("train", 4, false, true), Encoding::Postcard, Some(3)),
    ]
}

/// The sample store's runs: (run, final status). One completed, one failed;
/// together they cover blobs and a snapshot.
pub fn store_runs() -> Vec<SampleRun> {
    vec![sample_run("nightly-ingest", 3, false, false), sample_run("model-eval", 4, true, true)]
}

/// What a recorder needs to start `run`.
pub fn run_start(run: &SampleRun) -> cathedral_bundle::store::RunStart {
    let m = &run.metadata;
    cathedral_bundle::store::RunStart::new(m.run_id, &m.workflow_name, &m.workflow_version, &m.cathedral_version)
        .started_at(m.started_at.clone())
        .platform(m.platform.clone())
}

/// Records `run` into the store at `root` through the recorder API.
pub fn record(root: &Path, run: &SampleRun) {
    let m = &run.metadata;
    let mut recorder = cathedral_bundle::store::RunStore::new(root).record(run_start(run), &run.workflow, &run.dag).unwrap();
    for (content, _) in &run.blobs {
        recorder.put_blob(content).unwrap();
    }
    for e in &run.events {
        recorder.append_event(e).unwrap();
    }
    if let Some(s) = &run.snapshot {
        recorder.set_snapshot(s).unwrap();
    }
    recorder.finish(m.status, m.completed_at.clone()).unwrap();
}

/// Writes the sample run store under `dir/store/`.
pub fn write_store(dir: &Path) {
    let store = dir.join("store");
    if store.exists() {
        std::fs::remove_dir_all(&store).unwrap();
    }
    for run in store_runs() {
        record(&store, &run);
    }
}

/// Writes every fixture: bundles and the sample store.
pub fn write_all(dir: &Path) {
    write_bundles(dir);
    write_store(dir);
    write_broken(dir);
}

/// Writes every fixture bundle under `dir/bundles/`.
pub fn write_bundles(dir: &Path) {
    let bundles = dir.join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    for (name, run, encoding, level) in fixture_specs() {
        build(&run, &bundles.join(name), fixed_options(name, encoding, level));
    }
    write_legacy(dir);
    write_archives(dir);
}

/// A bundle as written before outboards (bundle_version 1.0).
pub const LEGACY_FIXTURE: &str = "v1-0-postcard.cath-bundle";

/// The 1.0 fixture: the small postcard bundle without its outboards, its
/// manifest rewritten as a 1.0 writer wrote it (unsigned).
pub fn write_legacy(dir: &Path) {
    let bundles = dir.join("bundles");
    let (from, to) = (bundles.join("small-postcard.cath-bundle"), bundles.join(LEGACY_FIXTURE));
    if to.exists() {
        std::fs::remove_dir_all(&to).unwrap();
    }
    for entry in walkdir::WalkDir::new(&from).sort_by_file_name() {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(&from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else if !entry.file_name().to_string_lossy().ends_with(".obao") {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    let mut manifest = cathedral_bundle::format::Manifest::parse(&std::fs::read(from.join("MANIFEST.json")).unwrap()).unwrap();
    manifest.bundle_version = "1.0".into();
    manifest.files.retain(|name, _| !name.ends_with(".obao"));
    manifest.bundle_id = uuid_for(LEGACY_FIXTURE);
    std::fs::write(to.join("MANIFEST.json"), manifest.to_bytes()).unwrap();
}

/// The shipped archive: `dir/archives/small-postcard.cath-bundle.tar.zst`,
/// packed from the fixture bundle of that name.
pub fn write_archives(dir: &Path) {
    let archives = dir.join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let name = "small-postcard.cath-bundle";
    let out = archives.join(format!("{name}.tar.zst"));
    let options = cathedral_bundle::PackOptions::default().overwrite(true);
    cathedral_bundle::BundleLoader::new().pack(dir.join("bundles").join(name), out, options).expect("the fixture packs");
}

/// A run that breaks exactly one replay rule (REPLAY.md §4), where replay
/// must report it.
pub struct BrokenRun {
    pub name: &'static str,
    pub run: SampleRun,
    /// The rule's code.
    pub rule: &'static str,
    /// Position of the first violation (`None`: about the whole log).
    pub position: Option<u64>,
    /// Replayed with `--strict`.
    pub strict: bool,
}

/// Re-links a run after its events were edited: each event's parent is the
/// one before it, the state hashes chain again (the formula of
/// `sample_run`), and logical times count from 1.
pub fn relink(run: &mut SampleRun) {
    let mut state = Digest::of(run.metadata.workflow_name.as_bytes());
    let mut parent = None;
    for (i, e) in run.events.iter_mut().enumerate() {
        e.logical_time = i as u64 + 1;
        e.parent_event_id = parent;
        e.prior_state_hash = Some(state);
        state = Digest::of(&[state.as_bytes().as_slice(), e.event_id.as_bytes()].concat());
        e.post_state_hash = Some(state);
        parent = Some(e.event_id);
    }
    run.metadata.event_count = run.events.len() as u64;
}

fn set_payload(e: &mut Event, payload: &[u8]) {
    e.payload = payload.to_vec();
    e.payload_hash = Digest::of(payload);
}

/// The broken runs. Each starts from `sample_run("broken", 3, ..)`, whose
/// events are: 0 RunCreated, 1 RunStarted; node 0: 2 NodeScheduled,
/// 3 NodeStarted, 4 ToolInvoked, 5 BlobStored, 6 ToolCompleted,
/// 7 NodeCompleted, 8 Heartbeat (run-level); node 1: 9–14 the same; node 2:
/// 15–20; 21 RunCompleted.
pub fn broken_runs() -> Vec<BrokenRun> {
    let base = || sample_run("broken", 3, false, false);
    let node = |run: &SampleRun, i: usize| run.dag.nodes[i].id;
    let edit = |f: &dyn Fn(&mut SampleRun)| {
        let mut run = base();
        f(&mut run);
        run
    };
    let case = |name, rule, position: Option<u64>, run| BrokenRun { name, run, rule, position, strict: false };
    let mut cases = vec![
        case(
            "first-not-created",
            "run_structure",
            Some(0),
            edit(&|r| {
                r.events.remove(0);
                relink(r);
            }),
        ),
        case("second-not-started", "run_structure", Some(1), edit(&|r| r.events[1].kind = EventKind::Heartbeat)),
        case(
            "event-after-run-end",
            "run_structure",
            Some(22),
            edit(&|r| {
                let id = uuid_for("broken/after-end");
                r.events.push(Event::new(id, r.metadata.run_id, Uuid::nil(), 0, EventKind::Heartbeat, vec![]));
                relink(r);
            }),
        ),
        case("status-disagrees", "run_outcome", Some(21), edit(&|r| r.metadata.status = RunStatus::Failed)),
        case(
            "exit-node-not-completed",
            "run_outcome",
            Some(20),
            edit(&|r| {
                r.events.remove(20);
                relink(r);
            }),
        ),
        case(
            "failed-without-cause",
            "run_outcome",
            Some(21),
            edit(&|r| {
                r.events[21].kind = EventKind::RunFailed;
                r.metadata.status = RunStatus::Failed;
            }),
        ),
        case("run-event-names-node", "node_reference", Some(1), edit(&|r| r.events[1].node_id = node(r, 0))),
        case("node-event-names-nil", "node_reference", Some(8), edit(&|r| r.events[8].kind = EventKind::NodeStarted)),
        case("parent-is-later", "causality", Some(10), edit(&|r| r.events[10].parent_event_id = Some(r.events[12].event_id))),
        case("parent-is-unknown", "causality", Some(5), edit(&|r| r.events[5].parent_event_id = Some(uuid_for("broken/nowhere")))),
        case("state-chain-broken", "state_chain", Some(13), edit(&|r| r.events[13].prior_state_hash = Some(Digest::of(b"elsewhere")))),
        case(
            "started-not-scheduled",
            "node_lifecycle",
            Some(9),
            edit(&|r| {
                r.events.remove(9);
                relink(r);
            }),
        ),
        case("event-after-node-end", "node_lifecycle", Some(8), edit(&|r| r.events[8].node_id = node(r, 0))),
        case(
            "tool-while-pending",
            "tool_lifecycle",
            Some(8),
            edit(&|r| {
                r.events[8].kind = EventKind::ToolInvoked;
                r.events[8].node_id = node(r, 1);
            }),
        ),
        case("tool-end-without-invocation", "tool_lifecycle", Some(6), edit(&|r| r.events[4].kind = EventKind::Heartbeat)),
        case(
            "scheduled-before-dependency",
            "dag_order",
            Some(7),
            edit(&|r| {
                let scheduled = r.events.remove(9);
                r.events.insert(7, scheduled);
                relink(r);
            }),
        ),
        case(
            "skipped-without-cause",
            "dag_order",
            Some(15),
            edit(&|r| {
                let skipped = Event::new(uuid_for("broken/skip"), r.metadata.run_id, node(r, 2), 0, EventKind::NodeSkipped, vec![]);
                r.events.splice(15..21, [skipped]);
                r.dag.exit_nodes = vec![node(r, 1)];
                relink(r);
            }),
        ),
        case(
            "output-not-held",
            "output_reference",
            Some(13),
            edit(&|r| set_payload(&mut r.events[13], format!("{{\"output\":\"{}\"}}", Digest::of(b"never stored")).as_bytes())),
        ),
        case("output-malformed", "output_reference", Some(6), edit(&|r| set_payload(&mut r.events[6], b"{\"output\":\"xyz\"}"))),
    ];
    let mut snapshot = sample_run("broken", 3, false, true);
    snapshot.snapshot.as_mut().unwrap().nodes[0].status = NodeStatus::Running;
    let position = snapshot.snapshot.as_ref().unwrap().log_position;
    cases.push(case("snapshot-disagrees", "snapshot", Some(position), snapshot));
    let mut absent = edit(&|r| r.events[7].post_state_hash = None);
    absent.events[8].prior_state_hash = None;
    cases.push(BrokenRun { name: "state-hash-absent", run: absent, rule: "state_hash_absent", position: Some(7), strict: true });
    cases
}

/// Writes every broken run under `dir/replay/<name>.cath-bundle`, and
/// `dir/replay/expected.json`: for each, the rule and the position of the
/// first violation, and whether it is replayed with `--strict`.
pub fn write_broken(dir: &Path) {
    let out = dir.join("replay");
    std::fs::create_dir_all(&out).unwrap();
    let mut expected = Vec::new();
    for case in broken_runs() {
        let name = format!("{}.cath-bundle", case.name);
        build(&case.run, &out.join(&name), fixed_options(&name, Encoding::Postcard, None));
        expected.push(serde_json::json!({"bundle": name, "rule": case.rule, "position": case.position, "strict": case.strict}));
    }
    let mut text = serde_json::to_vec_pretty(&expected).unwrap();
    text.push(b'\n');
    std::fs::write(out.join("expected.json"), text).unwrap();
}
