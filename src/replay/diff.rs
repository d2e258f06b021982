//! Diff: compare two runs (REPLAY.md §7). Events are aligned by node name,
//! kind and occurrence; ids, times and state hashes are ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::Serialize;
use uuid::Uuid;

use super::lookup::chain;
use super::payload::{self, Payload};
use super::{ChainLink, NodeRun};
use crate::bundle::ReplayBundle;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::event::EventKind;

/// Unmatched events held while aligning; past this, an event without a
/// counterpart in the window counts as present on one side only.
const WINDOW: usize = 1 << 20;
/// Divergences kept (the earliest).
const MAX_DIVERGENCES: usize = 20;
/// Blob hashes listed per side.
const MAX_BLOBS: usize = 20;
/// Causal context shown per side of a divergence.
const CONTEXT: usize = 8;

/// A field that differs: its value in A and in B.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDiff {
    /// The field.
    pub field: String,
    /// Its value in A.
    pub a: String,
    /// Its value in B.
    pub b: String,
}

/// DAG differences, by node name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DagDiff {
    /// Nodes only A has.
    pub only_in_a: Vec<String>,
    /// Nodes only B has.
    pub only_in_b: Vec<String>,
    /// Nodes both have whose kind or dependencies differ (`field` is `NAME.kind` or `NAME.depends_on`).
    pub changed: Vec<FieldDiff>,
}

/// Which events are aligned: the `occurrence`-th event (from 0) of `kind`
/// for the node called `node` (none for the nil node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventKey {
    /// The node's name, or none for a run-level event.
    pub node: Option<String>,
    /// The kind.
    pub kind: EventKind,
    /// Which occurrence of that kind for that node.
    pub occurrence: u64,
}

/// One side of a divergence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// Position in that bundle's log.
    pub position: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// Its payload, decoded.
    pub payload: Payload,
    /// Its causal context: its parent, that one's parent, ... (nearest first).
    pub context: Vec<ChainLink>,
}

/// Where the runs' events differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// The aligned event.
    pub key: EventKey,
    /// `payload_differs`, `only_in_a` or `only_in_b`.
    pub what: &'static str,
    /// The event in A, if A has it.
    pub a: Option<Side>,
    /// The event in B, if B has it.
    pub b: Option<Side>,
}

/// The events compared.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventDiff {
    /// Events in A.
    pub a_events: u64,
    /// Events in B.
    pub b_events: u64,
    /// Aligned pairs with equal payloads.
    pub matched: u64,
    /// Aligned pairs whose payloads differ.
    pub payload_differs: u64,
    /// Events of A with no counterpart in B.
    pub only_in_a: u64,
    /// Events of B with no counterpart in A.
    pub only_in_b: u64,
    /// The earliest divergence (by position in either log).
    pub first_divergence: Option<Divergence>,
    /// The earliest divergences, first one included, at most 20.
    pub divergences: Vec<Divergence>,
    /// True when more than 2^20 events waited for a counterpart at once;
    /// events were then counted as on one side only.
    pub window_exceeded: bool,
}

/// One node's outcome in A and in B.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeDiff {
    /// The node's name.
    pub node: String,
    /// Its final state in A (none if A has no such node).
    pub a: Option<NodeRun>,
    /// Its final state in B.
    pub b: Option<NodeRun>,
}

/// The blob sets compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlobDiff {
    /// Blobs in A.
    pub a_count: u64,
    /// Blobs in B.
    pub b_count: u64,
    /// Blobs only A holds.
    pub only_in_a: u64,
    /// Blobs only B holds.
    pub only_in_b: u64,
    /// The first of them, by hash.
    pub first_only_in_a: Vec<Digest>,
    /// The first of them, by hash.
    pub first_only_in_b: Vec<Digest>,
}

/// How two runs differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDiff {
    /// True when nothing below differs (context fields aside).
    pub equivalent: bool,
    /// Metadata that differs: workflow name and version, status, counts.
    pub metadata: Vec<FieldDiff>,
    /// Metadata expected to differ between runs, shown for context: run id,
    /// times, platform, engine version.
    pub context: Vec<FieldDiff>,
    /// True when the workflow sources are identical.
    pub workflow_source_equal: bool,
    /// DAG differences.
    pub dag: DagDiff,
    /// Event differences.
    pub events: EventDiff,
    /// Nodes whose status, output hash or error differ.
    pub nodes: Vec<NodeDiff>,
    /// Blob differences.
    pub blobs: BlobDiff,
}

fn field(diffs: &mut Vec<FieldDiff>, name: &str, a: String, b: String) {
    if a != b {
        diffs.push(FieldDiff { field: name.to_string(), a, b });
    }
}

impl ReplayBundle {
    /// Compares this run (A) with `other` (B).
    pub fn diff(&self, other: &ReplayBundle) -> Result<RunDiff, Error> {
        let (a, b) = (self, other);
        let (ma, mb) = (a.metadata(), b.metadata());
        let mut metadata = Vec::new();
        field(&mut metadata, "workflow_name", ma.workflow_name.clone(), mb.workflow_name.clone());
        field(&mut metadata, "workflow_version", ma.workflow_version.clone(), mb.workflow_version.clone());
        field(&mut metadata, "status", ma.status.name().into(), mb.status.name().into());
        field(&mut metadata, "node_count", ma.node_count.to_string(), mb.node_count.to_string());
        field(&mut metadata, "event_count", ma.event_count.to_string(), mb.event_count.to_string());
        let mut context = Vec::new();
        field(&mut context, "run_id", ma.run_id.to_string(), mb.run_id.to_string());
        field(&mut context, "started_at", ma.started_at.to_string(), mb.started_at.to_string());
        let done = |t: &Option<crate::text::Timestamp>| t.as_ref().map_or("-".to_string(), |t| t.to_string());
        field(&mut context, "completed_at", done(&ma.completed_at), done(&mb.completed_at));
        field(
            &mut context,
            "platform",
            format!("{}/{}", ma.platform.os, ma.platform.arch),
            format!("{}/{}", mb.platform.os, mb.platform.arch),
        );
        field(&mut context, "cathedral_version", ma.cathedral_version.clone(), mb.cathedral_version.clone());
        let dag = dag_diff(a, b);
        let events = align(a, b)?;
        let nodes = node_diff(&a.replay()?.state.nodes, &b.replay()?.state.nodes);
        let blobs = blob_diff(a, b)?;
        let workflow_source_equal = a.workflow() == b.workflow();
        let equivalent = metadata.is_empty()
            && workflow_source_equal
            && dag == DagDiff::default()
            && events.divergences.is_empty()
            && nodes.is_empty()
            && blobs.only_in_a == 0
            && blobs.only_in_b == 0;
        Ok(RunDiff { equivalent, metadata, context, workflow_source_equal, dag, events, nodes, blobs })
    }
}

fn dag_diff(a: &ReplayBundle, b: &ReplayBundle) -> DagDiff {
    let shape = |bundle: &ReplayBundle| {
        let dag = bundle.dag();
        let names: HashMap<Uuid, &str> = dag.nodes.iter().map(|n| (n.id, n.name.as_str())).collect();
        dag.nodes
            .iter()
            .map(|n| {
                let deps: BTreeSet<String> = n.depends_on.iter().map(|d| names.get(d).copied().unwrap_or("?").to_string()).collect();
                (n.name.clone(), (n.kind.clone(), deps.into_iter().collect::<Vec<_>>().join(", ")))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let (sa, sb) = (shape(a), shape(b));
    let mut diff = DagDiff::default();
    for (name, (kind, deps)) in &sa {
        match sb.get(name) {
            None => diff.only_in_a.push(name.clone()),
            Some((kb, db)) => {
                field(&mut diff.changed, &format!("{name}.kind"), kind.clone(), kb.clone());
                field(&mut diff.changed, &format!("{name}.depends_on"), format!("[{deps}]"), format!("[{db}]"));
            }
        }
    }
    diff.only_in_b = sb.keys().filter(|n| !sa.contains_key(*n)).cloned().collect();
    diff
}

fn node_diff(a: &[NodeRun], b: &[NodeRun]) -> Vec<NodeDiff> {
    let by_name = |nodes: &[NodeRun]| nodes.iter().map(|n| (n.name.clone(), n.clone())).collect::<BTreeMap<_, _>>();
    let (mut na, mut nb) = (by_name(a), by_name(b));
    let names: BTreeSet<String> = na.keys().chain(nb.keys()).cloned().collect();
    let mut out = Vec::new();
    for name in names {
        let (x, y) = (na.remove(&name), nb.remove(&name));
        let same = match (&x, &y) {
            (Some(x), Some(y)) => (x.status, x.output_hash, &x.error) == (y.status, y.output_hash, &y.error),
            _ => false,
        };
        if !same {
            out.push(NodeDiff { node: name, a: x, b: y });
        }
    }
    out
}

fn blob_diff(a: &ReplayBundle, b: &ReplayBundle) -> Result<BlobDiff, Error> {
    let mut diff = BlobDiff { a_count: a.blob_count().into(), b_count: b.blob_count().into(), ..BlobDiff::default() };
    let (mut ia, mut ib) = (a.blob_records(), b.blob_records());
    let (mut x, mut y) = (ia.next().transpose()?.map(|r| r.header.hash), ib.next().transpose()?.map(|r| r.header.hash));
    // Both lists are sorted by hash: one merge pass.
    loop {
        match (x, y) {
            (None, None) => return Ok(diff),
            (Some(h), Some(k)) if h == k => {
                x = ia.next().transpose()?.map(|r| r.header.hash);
                y = ib.next().transpose()?.map(|r| r.header.hash);
            }
            (Some(h), k) if k.is_none_or(|k| h < k) => {
                diff.only_in_a += 1;
                if diff.first_only_in_a.len() < MAX_BLOBS {
                    diff.first_only_in_a.push(h);
                }
                x = ia.next().transpose()?.map(|r| r.header.hash);
            }
            (_, Some(k)) => {
                diff.only_in_b += 1;
                if diff.first_only_in_b.len() < MAX_BLOBS {
                    diff.first_only_in_b.push(k);
                }
                y = ib.next().transpose()?.map(|r| r.header.hash);
            }
            (Some(_), None) => unreachable!("covered above"),
        }
    }
}

/// An event waiting for its counterpart.
struct Waiting {
    from_a: bool,
    position: u64,
    payload_hash: Digest,
}

/// Where an aligned or unaligned event was found, for the report.
struct Found {
    key: (u32, EventKind, u64),
    what: &'static str,
    a: Option<u64>,
    b: Option<u64>,
}

impl Found {
    fn first(&self) -> u64 {
        self.a.unwrap_or(u64::MAX).min(self.b.unwrap_or(u64::MAX))
    }
}

/// The alignment of two logs, read in lock step.
struct Aligner {
    names: Vec<String>,
    ids_a: HashMap<Uuid, u32>,
    ids_b: HashMap<Uuid, u32>,
    occurrences: [HashMap<(u32, EventKind), u64>; 2],
    waiting: HashMap<(u32, EventKind), VecDeque<(u64, Waiting)>>,
    held: usize,
    found: Vec<Found>,
    diff: EventDiff,
}

const NIL: u32 = u32::MAX;

impl Aligner {
    fn new(a: &ReplayBundle, b: &ReplayBundle) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut ids = |bundle: &ReplayBundle| {
            bundle
                .dag()
                .nodes
                .iter()
                .map(|n| {
                    let i = *index.entry(n.name.clone()).or_insert_with(|| {
                        names.push(n.name.clone());
                        names.len() as u32 - 1
                    });
                    (n.id, i)
                })
                .collect::<HashMap<_, _>>()
        };
        let (ids_a, ids_b) = (ids(a), ids(b));
        Aligner {
            names,
            ids_a,
            ids_b,
            occurrences: [HashMap::new(), HashMap::new()],
            waiting: HashMap::new(),
            held: 0,
            found: Vec::new(),
            diff: EventDiff::default(),
        }
    }

    fn record(&mut self, found: Found) {
        self.found.push(found);
        if self.found.len() >= 4 * MAX_DIVERGENCES {
            self.found.sort_by_key(Found::first);
            self.found.truncate(MAX_DIVERGENCES);
        }
    }

    fn one_sided(&mut self, key: (u32, EventKind, u64), from_a: bool, position: u64) {
        if from_a {
            self.diff.only_in_a += 1;
            self.record(Found { key, what: "only_in_a", a: Some(position), b: None });
        } else {
            self.diff.only_in_b += 1;
            self.record(Found { key, what: "only_in_b", a: None, b: Some(position) });
        }
    }

    fn push(&mut self, from_a: bool, position: u64, node: Uuid, kind: EventKind, payload_hash: Digest) {
        let ids = if from_a { &self.ids_a } else { &self.ids_b };
        let node = if node.is_nil() { NIL } else { ids.get(&node).copied().unwrap_or(NIL - 1) };
        let group = (node, kind);
        let occurrence = {
            let n = self.occurrences[usize::from(!from_a)].entry(group).or_default();
            *n += 1;
            *n - 1
        };
        let queue = self.waiting.entry(group).or_default();
        let counterpart = if queue.front().is_some_and(|(_, w)| w.from_a != from_a) { queue.pop_front() } else { None };
        if let Some((occ, other)) = counterpart {
            self.held -= 1;
            let (pa, pb) = if from_a { (position, other.position) } else { (other.position, position) };
            if other.payload_hash == payload_hash {
                self.diff.matched += 1;
            } else {
                self.diff.payload_differs += 1;
                self.record(Found { key: (node, kind, occ), what: "payload_differs", a: Some(pa), b: Some(pb) });
            }
        } else if self.held >= WINDOW {
            self.diff.window_exceeded = true;
            self.one_sided((node, kind, occurrence), from_a, position);
        } else {
            self.waiting.entry(group).or_default().push_back((occurrence, Waiting { from_a, position, payload_hash }));
            self.held += 1;
        }
    }

    fn finish(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        for ((node, kind), queue) in waiting {
            for (occ, w) in queue {
                self.one_sided((node, kind, occ), w.from_a, w.position);
            }
        }
        self.found.sort_by_key(Found::first);
        self.found.truncate(MAX_DIVERGENCES);
    }
}

/// Aligns the two logs, reading both once, in lock step.
fn align(a: &ReplayBundle, b: &ReplayBundle) -> Result<EventDiff, Error> {
    let mut aligner = Aligner::new(a, b);
    let (mut ea, mut eb) = (a.events(), b.events());
    let (mut pa, mut pb) = (0u64, 0u64);
    loop {
        let (x, y) = (ea.next().transpose()?, eb.next().transpose()?);
        if x.is_none() && y.is_none() {
            break;
        }
        if let Some(e) = x {
            aligner.push(true, pa, e.node_id, e.kind, e.payload_hash);
            pa += 1;
        }
        if let Some(e) = y {
            aligner.push(false, pb, e.node_id, e.kind, e.payload_hash);
            pb += 1;
        }
    }
    aligner.finish();
    let mut diff = std::mem::take(&mut aligner.diff);
    (diff.a_events, diff.b_events) = (pa, pb);
    let names = |bundle: &ReplayBundle| -> HashMap<Uuid, String> { bundle.dag().nodes.iter().map(|n| (n.id, n.name.clone())).collect() };
    let (names_a, names_b) = (names(a), names(b));
    for found in &aligner.found {
        let (node, kind, occurrence) = found.key;
        let node = aligner.names.get(node as usize).cloned();
        diff.divergences.push(Divergence {
            key: EventKey { node, kind, occurrence },
            what: found.what,
            a: found.a.map(|p| side(a, &names_a, p)).transpose()?,
            b: found.b.map(|p| side(b, &names_b, p)).transpose()?,
        });
    }
    diff.first_divergence = diff.divergences.first().cloned();
    Ok(diff)
}

/// The event at `position` of `bundle`, with its causal context.
fn side(bundle: &ReplayBundle, names: &HashMap<Uuid, String>, position: u64) -> Result<Side, Error> {
    let p = u32::try_from(position).unwrap_or(u32::MAX);
    let event = bundle.event(p)?.ok_or_else(|| Error::input("diff", format!("no event at position {position}")))?;
    let name = |id: &Uuid| names.get(id).cloned();
    let (context, _) = chain(bundle, event.parent_event_id, position, CONTEXT, &name)?;
    Ok(Side { position, event_id: event.event_id, payload: payload::decode(&event.payload), context })
}
