//! Data generator and in-process measurements for `bench/run.sh`.
//!
//! ```text
//! bench_gen blobs-bundle OUT COUNT MIN MAX         bundle of COUNT incompressible blobs of MIN..=MAX bytes
//! bench_gen shared-bundle OUT COUNT SIZE SHARED SEED  COUNT blobs of SIZE bytes, the first SHARED the same for every SEED
//! bench_gen events-bundle OUT EVENTS [cbor]        bundle of EVENTS events (~200-byte payloads); writes OUT.probe.json
//! bench_gen store DIR EVENTS BLOBS MIN MAX [mix]   run store with one run; blobs of MIN..=MAX bytes (mix: realistic content)
//! bench_gen floor DIR COUNT MIN MAX                COUNT plain files of MIN..=MAX bytes (the file-system floor)
//! bench_gen codec EVENTS DIR                       events/s: in-memory encode/decode and log write/read, both encodings
//! bench_gen replay-bundle OUT EVENTS                a coherent run of EVENTS events over 1,000 interleaved nodes
//! bench_gen replay BUNDLE ROUNDS                   events/s of the log decode alone and of replay, alternating, medians
//! ```

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use cathedral_bundle::format::{LogReader, LogWriter};
use cathedral_bundle::store::{RunStart, RunStore};
use cathedral_bundle::{BuildOptions, BundleBuilder, Dag, DagNode, Encoding, Event, EventKind, Limits, Metadata, Platform, RunStatus};
use uuid::Uuid;

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, min: u64, max: u64) -> u64 {
        min + self.next() % (max - min + 1)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new().update(&self.next().to_le_bytes()).finalize_xof().fill(&mut out);
        out
    }
    fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(((u128::from(self.next()) << 64) | u128::from(self.next())).to_le_bytes()).into_uuid()
    }
}

fn run_id() -> Uuid {
    Uuid::from_u128(0x0be4_c4e0_0000_4000_8000_0000_0000_0001)
}

fn dag(rng: &mut Rng) -> Dag {
    let id = rng.uuid();
    Dag {
        nodes: vec![DagNode { id, name: "step".into(), kind: "tool".into(), depends_on: vec![] }],
        edges: vec![],
        entry_nodes: vec![id],
        exit_nodes: vec![id],
    }
}

fn metadata(events: u64) -> Metadata {
    Metadata {
        run_id: run_id(),
        workflow_name: "bench".into(),
        workflow_version: "1".into(),
        started_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        completed_at: Some("2026-01-01T01:00:00Z".parse().unwrap()),
        status: RunStatus::Completed,
        node_count: 1,
        event_count: events,
        platform: Platform::current(),
        cathedral_version: "bench".into(),
    }
}

/// Event `i`: ~200-byte JSON-like payload, time advancing every 4 events.
fn event(rng: &mut Rng, node: Uuid, i: u64) -> Event {
    let payload = format!("{{\"step\":{i},\"tool\":\"transform\",\"rows\":{},\"note\":\"{}\"}}", rng.range(0, 1 << 20), "x".repeat(150));
    let kinds = [EventKind::NodeStarted, EventKind::ToolInvoked, EventKind::ToolCompleted, EventKind::NodeCompleted];
    Event::new(rng.uuid(), run_id(), node, i / 4, kinds[(i % 4) as usize], payload.into_bytes())
}

/// Realistic blob content: JSON outputs, log text and binary, by turns.
fn mixed_blob(rng: &mut Rng, i: u64, len: usize) -> Vec<u8> {
    match i % 3 {
        0 => {
            let mut s = String::from("{\"rows\":[");
            while s.len() < len {
                s += &format!(
                    "{{\"id\":{},\"name\":\"item-{}\",\"score\":{}.{},\"tags\":[\"a\",\"b\"]}},",
                    rng.range(0, 1 << 30),
                    rng.range(0, 9999),
                    rng.range(0, 99),
                    rng.range(0, 999)
                );
            }
            s.truncate(len);
            s.into_bytes()
        }
        1 => {
            let mut s = String::new();
            while s.len() < len {
                s += &format!(
                    "2026-01-01T00:{:02}:{:02}Z INFO worker-{} processed batch {} in {} ms\n",
                    rng.range(0, 59),
                    rng.range(0, 59),
                    rng.range(0, 7),
                    rng.range(0, 1 << 20),
                    rng.range(1, 999)
                );
            }
            s.truncate(len);
            s.into_bytes()
        }
        _ => rng.bytes(len),
    }
}

fn blobs_bundle(out: &Path, count: u64, min: u64, max: u64) {
    blobs_bundle_sharing(out, count, min, max, 0, 1);
}

/// A bundle of `count` incompressible blobs of which the first `shared`
/// are the same for every `seed` and the rest differ by `seed`.
fn blobs_bundle_sharing(out: &Path, count: u64, min: u64, max: u64, shared: u64, seed: u64) {
    let mut rng = Rng(1);
    let mut own = Rng(seed.wrapping_mul(0x9E37_79B9));
    let dag = dag(&mut rng);
    let node = dag.nodes[0].id;
    let mut b = BundleBuilder::create(out, BuildOptions::default().compression_level(None).overwrite(true)).unwrap();
    for i in 0..4 {
        b.add_event(&event(&mut rng, node, i)).unwrap();
    }
    for i in 0..count {
        let len = rng.range(min, max) as usize;
        let content = if i < shared || seed == 1 { rng.bytes(len) } else { own.bytes(len) };
        b.add_blob(&content).unwrap();
    }
    let mut m = metadata(4);
    m.workflow_version = format!("seed-{seed}");
    b.set_metadata(m).unwrap();
    b.set_workflow("workflow bench {}\n");
    b.set_dag(dag).unwrap();
    b.build().unwrap();
}

fn events_bundle(out: &Path, events: u64, encoding: Encoding) {
    let mut rng = Rng(2);
    let dag = dag(&mut rng);
    let node = dag.nodes[0].id;
    let limits = Limits::default();
    let options = BuildOptions::default().compression_level(None).overwrite(true).limits(limits).encoding(encoding);
    let mut b = BundleBuilder::create(out, options).unwrap();
    let mut probes = Vec::new();
    let stride = (events / 16).max(1);
    for i in 0..events {
        let e = event(&mut rng, node, i);
        if i % stride == stride / 2 {
            probes.push(serde_json::json!({"position": i, "event_id": e.event_id.to_string(), "logical_time": e.logical_time}));
        }
        b.add_event(&e).unwrap();
    }
    b.set_metadata(metadata(events)).unwrap();
    b.set_workflow("workflow bench {}\n");
    b.set_dag(dag).unwrap();
    b.build().unwrap();
    std::fs::write(format!("{}.probe.json", out.display()), serde_json::to_vec_pretty(&probes).unwrap()).unwrap();
}

fn store(dir: &Path, events: u64, blobs: u64, min: u64, max: u64, mix: bool) {
    let mut rng = Rng(3);
    let dag = dag(&mut rng);
    let node = dag.nodes[0].id;
    let m = metadata(0);
    let start = RunStart::new(m.run_id, m.workflow_name, m.workflow_version, m.cathedral_version).started_at(m.started_at);
    let mut rec = RunStore::new(dir).record(start, "workflow bench {}\n", &dag).unwrap();
    for i in 0..events {
        rec.append_event(&event(&mut rng, node, i)).unwrap();
    }
    for i in 0..blobs {
        let len = rng.range(min, max) as usize;
        let content = if mix { mixed_blob(&mut rng, i, len) } else { rng.bytes(len) };
        rec.put_blob(&content).unwrap();
    }
    rec.finish(RunStatus::Completed, Some("2026-01-01T01:00:00Z".parse().unwrap())).unwrap();
    println!("{}", run_id());
}

fn floor(dir: &Path, count: u64, min: u64, max: u64) {
    let mut rng = Rng(4);
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let len = rng.range(min, max) as usize;
        let shard = dir.join(format!("{:02x}", i % 256));
        if i < 256 {
            std::fs::create_dir_all(&shard).unwrap();
        }
        let mut f = std::fs::File::create(shard.join(i.to_string())).unwrap();
        f.write_all(&rng.bytes(len)).unwrap();
    }
}

fn codec(events: u64, dir: &Path) {
    let mut rng = Rng(5);
    let node = rng.uuid();
    let all: Vec<Event> = (0..events).map(|i| event(&mut rng, node, i)).collect();
    let mut report = serde_json::Map::new();
    for encoding in [Encoding::Postcard, Encoding::Cbor] {
        // In memory: encode into a reused buffer; decode from one contiguous buffer.
        let mut buf = Vec::new();
        let t = Instant::now();
        for e in &all {
            buf.clear();
            e.encode(encoding, &mut buf).unwrap();
            std::hint::black_box(&buf);
        }
        let encode = events as f64 / t.elapsed().as_secs_f64();
        let mut packed = Vec::new();
        let mut spans = Vec::with_capacity(all.len());
        for e in &all {
            let start = packed.len();
            e.encode(encoding, &mut packed).unwrap();
            spans.push(start..packed.len());
        }
        let t = Instant::now();
        for span in &spans {
            std::hint::black_box(Event::decode(&packed[span.clone()], encoding, "bench", 0).unwrap());
        }
        let decode = events as f64 / t.elapsed().as_secs_f64();
        drop(packed);

        // Through the library's log writer and reader, on disk.
        let path = dir.join(format!("codec-{encoding}.cath-log"));
        let _ = std::fs::remove_file(&path);
        let t = Instant::now();
        let mut w = LogWriter::create(&path, encoding, &Limits::default()).unwrap();
        for e in &all {
            w.append(e).unwrap();
        }
        let appended = t.elapsed().as_secs_f64();
        w.finish().unwrap();
        let synced = t.elapsed().as_secs_f64();
        let bytes = std::fs::read(&path).unwrap();
        let t = Instant::now();
        let view = LogReader::new(&bytes, "bench", &Limits::default()).unwrap();
        let mut walk = view.walk(false);
        while let Some((offset, rec)) = walk.next_record().unwrap() {
            std::hint::black_box(Event::decode(rec, encoding, "bench", offset).unwrap());
        }
        let read = events as f64 / t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&path);
        report.insert(
            encoding.name().into(),
            serde_json::json!({
                "encode_per_s": encode,
                "decode_per_s": decode,
                "log_write_per_s": events as f64 / appended,
                "log_write_synced_per_s": events as f64 / synced,
                "log_read_per_s": read,
                "log_bytes": bytes.len(),
            }),
        );
    }
    println!("{}", serde_json::Value::Object(report));
}

/// A coherent run (REPLAY.md): 1,000 independent nodes run side by side,
/// each scheduled, started, calling a tool repeatedly (every call's result
/// names the node's output blob), and completed; parents and state hashes
/// chain every event.
fn replay_bundle(out: &Path, events: u64) {
    const NODES: u64 = 1000;
    let mut rng = Rng(5);
    let ids: Vec<Uuid> = (0..NODES).map(|_| rng.uuid()).collect();
    let dag = Dag {
        nodes: ids
            .iter()
            .enumerate()
            .map(|(i, id)| DagNode { id: *id, name: format!("node_{i}"), kind: "tool".into(), depends_on: vec![] })
            .collect(),
        edges: vec![],
        entry_nodes: ids.clone(),
        exit_nodes: ids.clone(),
    };
    let mut b = BundleBuilder::create(out, BuildOptions::default().compression_level(None).overwrite(true)).unwrap();
    let outputs: Vec<cathedral_bundle::Digest> = (0..NODES).map(|i| b.add_blob(format!("{{\"node\":{i}}}").as_bytes()).unwrap()).collect();
    let per_node = (events.saturating_sub(3) / NODES).max(4) & !1;
    let mut state = cathedral_bundle::Digest::of(b"bench");
    let mut last: Vec<Option<Uuid>> = vec![None; NODES as usize];
    let (mut time, mut count, mut previous) = (0u64, 0u64, None);
    let mut id_rng = Rng(6);
    let mut push = |b: &mut BundleBuilder, node: Uuid, kind: EventKind, payload: Vec<u8>, parent: Option<Uuid>| {
        let mut e = Event::new(id_rng.uuid(), run_id(), node, time, kind, payload);
        e.parent_event_id = parent;
        e.prior_state_hash = Some(state);
        state = cathedral_bundle::Digest::of(&[state.as_bytes().as_slice(), e.event_id.as_bytes()].concat());
        e.post_state_hash = Some(state);
        b.add_event(&e).unwrap();
        time += 1;
        count += 1;
        e.event_id
    };
    let created = push(&mut b, Uuid::nil(), EventKind::RunCreated, b"{}".to_vec(), None);
    let started = push(&mut b, Uuid::nil(), EventKind::RunStarted, b"{}".to_vec(), Some(created));
    for step in 0..per_node {
        for (n, node) in ids.iter().enumerate() {
            let kind = match step {
                0 => EventKind::NodeScheduled,
                1 => EventKind::NodeStarted,
                s if s + 1 == per_node => EventKind::NodeCompleted,
                s if s % 2 == 0 => EventKind::ToolInvoked,
                _ => EventKind::ToolCompleted,
            };
            let payload = match kind {
                EventKind::ToolCompleted | EventKind::NodeCompleted => {
                    format!("{{\"output\":\"{}\",\"rows\":{step},\"took_ms\":{}}}", outputs[n], rng.range(1, 900))
                }
                _ => format!("{{\"tool\":\"transform\",\"step\":{step},\"args\":\"{}\"}}", "x".repeat(60)),
            };
            let parent = last[n].or(Some(started));
            last[n] = Some(push(&mut b, *node, kind, payload.into_bytes(), parent));
            previous = last[n];
        }
    }
    push(&mut b, Uuid::nil(), EventKind::RunCompleted, b"{}".to_vec(), previous);
    let mut m = metadata(count);
    m.node_count = NODES;
    b.set_metadata(m).unwrap();
    b.set_workflow("workflow bench {}\n");
    b.set_dag(dag).unwrap();
    b.build().unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times the log decode alone against replay on one loaded bundle,
/// alternating, and prints medians as JSON.
fn replay(bundle: &Path, rounds: u64) {
    let bundle = cathedral_bundle::BundleLoader::new().mode(cathedral_bundle::VerifyMode::Fast).load(bundle).unwrap();
    let n = f64::from(bundle.event_count());
    let (mut decode, mut fold) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let mut kinds = 0u64;
        for e in bundle.events() {
            kinds += e.unwrap().kind as u64;
        }
        std::hint::black_box(kinds);
        decode.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let report = bundle.replay().unwrap();
        fold.push(t.elapsed().as_secs_f64());
        assert!(report.is_coherent(), "{:?}", report.violations.first());
    }
    let (d, f) = (median(decode), median(fold));
    let report = serde_json::json!({
        "events": n, "rounds": rounds,
        "decode_s": d, "replay_s": f,
        "decode_events_per_s": n / d, "replay_events_per_s": n / f,
        "replay_over_decode_speed": d / f,
    });
    println!("{report}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = |i: usize| args[i].parse::<u64>().unwrap();
    match args.get(1).map(String::as_str) {
        Some("blobs-bundle") => blobs_bundle(Path::new(&args[2]), n(3), n(4), n(5)),
        Some("events-bundle") => {
            let encoding = if args.get(4).is_some_and(|a| a == "cbor") { Encoding::Cbor } else { Encoding::Postcard };
            events_bundle(Path::new(&args[2]), n(3), encoding)
        }
        Some("store") => store(Path::new(&args[2]), n(3), n(4), n(5), n(6), args.get(7).is_some_and(|a| a == "mix")),
        Some("floor") => floor(Path::new(&args[2]), n(3), n(4), n(5)),
        Some("codec") => codec(n(2), Path::new(&args[3])),
        Some("shared-bundle") => blobs_bundle_sharing(Path::new(&args[2]), n(3), n(4), n(4), n(5), n(6) + 2),
        Some("replay-bundle") => replay_bundle(Path::new(&args[2]), n(3)),
        Some("replay") => replay(Path::new(&args[2]), n(3)),
        _ => {
            eprintln!("usage: see the doc comment of examples/bench_gen.rs");
            std::process::exit(2);
        }
    }
}
