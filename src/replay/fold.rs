//! The fold: applies events to the run state one at a time and records
//! every rule an event breaks (REPLAY.md §4).

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::lookup::{chain, Blobs, Parents};
use super::read::{each_event, Step};
use super::{payload, HashCounts, NodeRun, ReplayOptions, ReplayReport, Rule, RunPhase, RunState, SnapshotCheck, Stop, Violation};
use crate::bundle::ReplayBundle;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::event::EventKind;
use crate::format::model::{NodeStatus, RunStatus, Snapshot};

/// Which node an event kind may name (REPLAY.md §2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `Run*`: the nil node.
    Run,
    /// `Node*`, `Tool*`: a DAG node.
    Node,
    /// Everything else: the nil node or a DAG node.
    Either,
}

fn scope(kind: EventKind) -> Scope {
    use EventKind::*;
    match kind {
        RunCreated | RunStarted | RunCompleted | RunFailed => Scope::Run,
        NodeScheduled | NodeStarted | NodeCompleted | NodeFailed | NodeSkipped | ToolInvoked | ToolCompleted | ToolFailed
        | ToolTimedOut => Scope::Node,
        _ => Scope::Either,
    }
}

/// What the fold keeps per node beyond its [`NodeRun`].
#[derive(Clone, Default)]
struct NodeAux {
    /// Tool invocations started and not yet ended.
    open_tools: u32,
    /// The count above is unknown (replay started from a snapshot while the node ran).
    tools_unknown: bool,
    /// An event after the node's end was reported already.
    after_end_reported: bool,
    /// Position of its last lifecycle event (`Node*`) replayed.
    last_lifecycle: Option<u64>,
    /// The last output hash of this node found among the bundle's blobs.
    held_output: Option<Digest>,
}

/// The previous event's post state hash, as far as it is known.
#[derive(Clone, Copy)]
enum Prev {
    /// No previous event.
    None,
    /// The previous event's `post_state_hash`.
    Post(Option<Digest>),
}

/// DAG node ids to their index in `dag.json`, sorted for binary search:
/// a lookup per event costs O(log nodes) whatever ids the DAG holds.
struct NodeIndex(Vec<(u128, usize)>);

impl NodeIndex {
    fn new(index: &HashMap<Uuid, usize>) -> Self {
        let mut sorted: Vec<(u128, usize)> = index.iter().map(|(id, i)| (id.as_u128(), *i)).collect();
        sorted.sort_unstable();
        NodeIndex(sorted)
    }

    fn get(&self, id: &Uuid) -> Option<usize> {
        let key = id.as_u128();
        self.0.binary_search_by_key(&key, |(k, _)| *k).ok().map(|at| self.0[at].1)
    }
}

/// A violation found during the fold, before its chain is followed.
struct Found {
    violation: Violation,
    parent: Option<Uuid>,
}

pub(super) struct Fold<'b> {
    bundle: &'b ReplayBundle,
    strict: bool,
    max: usize,
    nodes: NodeIndex,
    deps: Vec<Vec<usize>>,
    state: RunState,
    aux: Vec<NodeAux>,
    parents: Parents,
    /// Id and position of the last event of each node (the last slot: of the nil node).
    last_of_node: Vec<(Uuid, u64)>,
    blobs: Blobs,
    prev: Prev,
    /// A run-level `Error` event was seen (unknown when started from a snapshot).
    run_error: Option<bool>,
    run_end: Option<(u64, EventKind)>,
    after_run_end_reported: bool,
    last: Option<(u64, Uuid, EventKind, Option<Uuid>)>,
    kinds: [u64; EventKind::ALL.len()],
    hashes: HashCounts,
    found: Vec<Found>,
    total: u64,
    by_rule: BTreeMap<&'static str, u64>,
}

/// Replays `bundle` as `options` say.
pub(super) fn run(bundle: &ReplayBundle, options: &ReplayOptions) -> Result<ReplayReport, Error> {
    let mut fold = Fold::new(bundle, options)?;
    let snapshot = bundle.snapshot();
    let mut check = match snapshot {
        None => SnapshotCheck::Absent,
        Some(_) if options.from_snapshot => {
            fold.start_from(snapshot.expect("present"))?;
            SnapshotCheck::StartedFrom
        }
        Some(_) => SnapshotCheck::NotReached,
    };
    if options.from_snapshot && snapshot.is_none() {
        return Err(Error::NotFound { file: format!("{}: snapshot.cath-snap", bundle.path().display()) });
    }
    let start = fold.state.position;
    let count = u64::from(bundle.event_count());
    let end = stop_position(bundle, options.stop, count)?;
    if end < start {
        let detail = format!("replay starts at the snapshot's position {start}, after the stop at position {end}");
        return Err(Error::input("replay stop", detail));
    }
    let at_snapshot = |fold: &mut Fold<'_>, check: &mut SnapshotCheck| {
        if let (Some(s), SnapshotCheck::NotReached) = (snapshot, *check) {
            if s.log_position == fold.state.position {
                *check = if fold.check_snapshot(s) { SnapshotCheck::Matches } else { SnapshotCheck::Differs };
            }
        }
    };
    let start_u32 = u32::try_from(start).unwrap_or(u32::MAX);
    each_event(bundle, start_u32, end - start, |step| {
        at_snapshot(&mut fold, &mut check);
        fold.apply(step)
    })?;
    at_snapshot(&mut fold, &mut check);
    let complete = options.stop.is_none();
    if complete {
        fold.check_end();
    }
    fold.report(start, complete, check, options.chain_limit)
}

/// The position a replay stops at: `count` without a stop.
fn stop_position(bundle: &ReplayBundle, stop: Option<Stop>, count: u64) -> Result<u64, Error> {
    Ok(match stop {
        None => count,
        Some(Stop::Position(n)) => n.min(count),
        Some(Stop::Time(t)) => match t.checked_add(1) {
            None => count,
            Some(after) => bundle.position_at_time(after)?.map_or(count, u64::from),
        },
    })
}

impl<'b> Fold<'b> {
    fn new(bundle: &'b ReplayBundle, options: &ReplayOptions) -> Result<Self, Error> {
        let dag = bundle.dag();
        let index: HashMap<Uuid, usize> = dag.nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        let deps = dag.nodes.iter().map(|n| n.depends_on.iter().filter_map(|d| index.get(d).copied()).collect()).collect();
        let nodes = dag
            .nodes
            .iter()
            .map(|n| NodeRun { node_id: n.id, name: n.name.clone(), status: NodeStatus::Pending, output_hash: None, error: None })
            .collect::<Vec<_>>();
        Ok(Fold {
            bundle,
            strict: options.strict,
            max: options.max_violations,
            aux: vec![NodeAux::default(); nodes.len()],
            nodes: NodeIndex::new(&index),
            deps,
            state: RunState { position: 0, logical_time: 0, phase: RunPhase::NotCreated, nodes },
            parents: Parents::new(),
            last_of_node: vec![(Uuid::nil(), u64::MAX); dag.nodes.len() + 1],
            blobs: Blobs::new(bundle)?,
            prev: Prev::None,
            run_error: Some(false),
            run_end: None,
            after_run_end_reported: false,
            last: None,
            kinds: [0; EventKind::ALL.len()],
            hashes: HashCounts::default(),
            found: Vec::new(),
            total: 0,
            by_rule: BTreeMap::new(),
        })
    }

    /// Takes the snapshot as the state at its position. What the events
    /// before it said beyond the snapshot (open tool calls, run-level
    /// errors) is unknown, and the checks that need it are not made.
    fn start_from(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
        let position = snapshot.log_position;
        self.state.position = position;
        self.state.logical_time = snapshot.logical_time;
        self.state.phase = match position {
            0 => RunPhase::NotCreated,
            1 => RunPhase::Created,
            _ => RunPhase::Started,
        };
        for node in &snapshot.nodes {
            let Some(i) = self.nodes.get(&node.node_id) else { continue };
            let run = &mut self.state.nodes[i];
            (run.status, run.output_hash, run.error) = (node.status, node.output_hash, node.error.clone());
            self.aux[i].tools_unknown = node.status == NodeStatus::Running;
        }
        self.run_error = None;
        if position > 0 {
            let p = u32::try_from(position - 1).unwrap_or(u32::MAX);
            let before = self.bundle.event(p)?.ok_or_else(|| Error::input("snapshot", "log_position is past the log"))?;
            self.prev = Prev::Post(before.post_state_hash);
        }
        Ok(())
    }

    fn node_name(&self, i: Option<usize>) -> Option<String> {
        i.map(|i| self.state.nodes[i].name.clone())
    }

    fn record(&mut self, violation: Violation, parent: Option<Uuid>) {
        self.total += 1;
        *self.by_rule.entry(violation.rule.code()).or_default() += 1;
        if self.found.len() < self.max {
            self.found.push(Found { violation, parent });
        }
    }

    /// Records that event `e` at the current position breaks `rule`.
    fn violate(&mut self, rule: Rule, e: &Step, node: Option<usize>, detail: String) {
        let violation = Violation {
            rule,
            position: Some(self.state.position),
            event_id: Some(e.event_id),
            kind: Some(e.kind),
            node: self.node_name(node),
            detail,
            chain: Vec::new(),
            chain_truncated: false,
        };
        self.record(violation, e.parent_event_id);
    }

    /// Applies one event: the event at the current position.
    fn apply(&mut self, step: &Step) -> Result<(), Error> {
        let e = step;
        let pos = self.state.position;
        self.kinds[e.kind as usize] += 1;
        // In the order of REPLAY.md §4.1–4.4, then the node's rules.
        self.check_run(e);
        let node = self.node_of(e);
        self.check_parent(e, node)?;
        self.check_hashes(e);
        match node {
            Some(n) => self.apply_to_node(step, n)?,
            None if e.kind == EventKind::Error && e.node_id.is_nil() => self.run_error = self.run_error.map(|_| true),
            None => {}
        }
        match e.stored {
            Some(Some(hash)) if !self.blobs.holds(self.bundle, &hash)? => {
                self.violate(Rule::OutputReference, e, node, format!("BlobStored names blob {hash}, which the bundle does not hold"))
            }
            Some(None) => self.violate(Rule::OutputReference, e, node, "a BlobStored payload must be a 64-hex content hash".into()),
            _ => {}
        }
        self.parents.record(e.event_id, pos);
        let slot = node.unwrap_or(self.state.nodes.len());
        self.last_of_node[slot] = (e.event_id, pos);
        self.last = Some((pos, e.event_id, e.kind, e.parent_event_id));
        self.state.position = pos + 1;
        self.state.logical_time = e.logical_time;
        Ok(())
    }

    /// Causality (§4.3). Most parents are the previous event, or the
    /// previous event of the same node: those are compared first.
    fn check_parent(&mut self, e: &Step, node: Option<usize>) -> Result<(), Error> {
        let Some(parent) = e.parent_event_id else { return Ok(()) };
        let pos = self.state.position;
        let same_node = self.last_of_node[node.unwrap_or(self.state.nodes.len())];
        let found = match self.last {
            Some((p, id, ..)) if id == parent => Some(p),
            _ if same_node.0 == parent && same_node.1 != u64::MAX => Some(same_node.1),
            _ => self.parents.position(self.bundle, &parent)?,
        };
        let detail = match found {
            Some(p) if p < pos => return Ok(()),
            Some(p) if p == pos => format!("parent_event_id {parent} names the event itself"),
            Some(p) => format!("parent_event_id {parent} names the later event at position {p}; a parent precedes its child"),
            None => format!("parent_event_id {parent} names no event of this log"),
        };
        self.violate(Rule::Causality, e, None, detail);
        Ok(())
    }

    fn check_hashes(&mut self, e: &Step) {
        let first = matches!(self.prev, Prev::None);
        if let (Prev::Post(Some(before)), Some(prior)) = (self.prev, e.prior_state_hash) {
            if before != prior {
                let detail = format!(
                    "prior_state_hash {prior} is not the previous event's post_state_hash {before}: an event is missing, added or out of order"
                );
                self.violate(Rule::StateChain, e, None, detail);
            }
        }
        let prior_absent = !first && e.prior_state_hash.is_none();
        let post_absent = e.post_state_hash.is_none();
        self.hashes.prior_absent += u64::from(prior_absent);
        self.hashes.post_absent += u64::from(post_absent);
        self.hashes.complete += u64::from(!prior_absent && !post_absent);
        if self.strict && (prior_absent || post_absent) {
            let which = match (prior_absent, post_absent) {
                (true, true) => "prior_state_hash and post_state_hash",
                (true, false) => "prior_state_hash",
                _ => "post_state_hash",
            };
            self.violate(Rule::StateHashAbsent, e, None, format!("{which} absent (strict replay requires both)"));
        }
        self.prev = Prev::Post(e.post_state_hash);
    }

    fn check_run(&mut self, e: &Step) {
        let pos = self.state.position;
        if let Some((end, kind)) = self.run_end {
            if !self.after_run_end_reported {
                self.after_run_end_reported = true;
                self.violate(Rule::RunStructure, e, None, format!("the run ended with {kind} at position {end}; nothing may follow"));
            }
        }
        match (pos, e.kind) {
            (0, EventKind::RunCreated) => self.state.phase = RunPhase::Created,
            (0, kind) => self.violate(Rule::RunStructure, e, None, format!("the first event is {kind}; a run starts with RunCreated")),
            (1, EventKind::RunStarted) => self.state.phase = RunPhase::Started,
            (1, kind) => self.violate(Rule::RunStructure, e, None, format!("the second event is {kind}; RunStarted follows RunCreated")),
            (_, kind @ (EventKind::RunCreated | EventKind::RunStarted)) => self.violate(
                Rule::RunStructure,
                e,
                None,
                format!("{kind} again at position {pos}; it occurs once, at position {}", usize::from(kind == EventKind::RunStarted)),
            ),
            _ => {}
        }
        if matches!(e.kind, EventKind::RunCompleted | EventKind::RunFailed) {
            self.end_run(e);
        }
    }

    /// A terminal run event: the run's end must agree with its nodes.
    fn end_run(&mut self, e: &Step) {
        if self.run_end.is_some() {
            return;
        }
        self.run_end = Some((self.state.position, e.kind));
        if e.kind == EventKind::RunCompleted {
            self.state.phase = RunPhase::Completed;
            let exits: Vec<usize> = self.bundle.dag().exit_nodes.iter().filter_map(|id| self.nodes.get(id)).collect();
            for n in exits {
                let status = self.state.nodes[n].status;
                if status != NodeStatus::Completed {
                    let detail = format!("the run completed, but its exit node is {}", status.name());
                    self.violate(Rule::RunOutcome, e, Some(n), detail);
                }
            }
        } else {
            self.state.phase = RunPhase::Failed;
            let node_failed = self.state.nodes.iter().any(|n| n.status == NodeStatus::Failed);
            if !node_failed && self.run_error == Some(false) {
                let detail = "the run failed, but no node failed and no run-level Error event was recorded".to_string();
                self.violate(Rule::RunOutcome, e, None, detail);
            }
        }
    }

    /// The DAG node `e` names, after checking that its kind may name it.
    fn node_of(&mut self, e: &Step) -> Option<usize> {
        let nil = e.node_id.is_nil();
        let found = self.nodes.get(&e.node_id);
        let detail = match (scope(e.kind), nil, found) {
            (Scope::Run, true, _) | (Scope::Either, true, _) => return None,
            (Scope::Run, false, _) => format!("a run event names node {}; run events use the nil node id", e.node_id),
            (Scope::Node, true, _) => "a node or tool event must name a DAG node, found the nil node id".to_string(),
            (_, false, Some(n)) => return Some(n),
            (_, false, None) => format!("node_id {} is not a node of dag.json", e.node_id),
        };
        self.violate(Rule::NodeReference, e, None, detail);
        None
    }

    /// Applies a node's event to the node.
    fn apply_to_node(&mut self, step: &Step, n: usize) -> Result<(), Error> {
        use EventKind::*;
        let e = step;
        let status = self.state.nodes[n].status;
        if status.is_terminal() {
            if !self.aux[n].after_end_reported {
                self.aux[n].after_end_reported = true;
                let at = self.aux[n].last_lifecycle.map_or_else(String::new, |p| format!(" at position {p}"));
                self.violate(Rule::NodeLifecycle, e, Some(n), format!("{} after the node ended ({}{at})", e.kind, status.name()));
            }
            return Ok(());
        }
        match e.kind {
            NodeScheduled => {
                self.transition(e, n, &[NodeStatus::Pending], NodeStatus::Scheduled);
                self.check_dependencies_completed(e, n);
            }
            NodeStarted => self.transition(e, n, &[NodeStatus::Scheduled], NodeStatus::Running),
            NodeCompleted => {
                self.transition(e, n, &[NodeStatus::Running], NodeStatus::Completed);
                self.take_output(step, n)?;
            }
            NodeFailed => {
                self.transition(e, n, &[NodeStatus::Running], NodeStatus::Failed);
                self.state.nodes[n].error = payload::error_text(e.payload());
            }
            NodeSkipped => {
                self.transition(e, n, &[NodeStatus::Pending, NodeStatus::Scheduled], NodeStatus::Skipped);
                self.check_skip_cause(e, n);
            }
            ToolInvoked | ToolCompleted | ToolFailed | ToolTimedOut => self.apply_tool(step, n)?,
            _ => {}
        }
        Ok(())
    }

    fn transition(&mut self, e: &Step, n: usize, from: &[NodeStatus], to: NodeStatus) {
        let status = self.state.nodes[n].status;
        if !from.contains(&status) {
            let expected = from.iter().map(|s| s.name()).collect::<Vec<_>>().join(" or ");
            let detail = format!("{} while the node is {}; it must be {expected}", e.kind, status.name());
            self.violate(Rule::NodeLifecycle, e, Some(n), detail);
        }
        self.state.nodes[n].status = to;
        self.aux[n].last_lifecycle = Some(self.state.position);
    }

    fn check_dependencies_completed(&mut self, e: &Step, n: usize) {
        for i in 0..self.deps[n].len() {
            let d = self.deps[n][i];
            let status = self.state.nodes[d].status;
            if status != NodeStatus::Completed {
                let detail = format!(
                    "scheduled while its dependency {} is {}; a node is scheduled only after every dependency completed",
                    self.state.nodes[d].name,
                    status.name()
                );
                self.violate(Rule::DagOrder, e, Some(n), detail);
            }
        }
    }

    fn check_skip_cause(&mut self, e: &Step, n: usize) {
        let cause = self.deps[n].iter().any(|&d| matches!(self.state.nodes[d].status, NodeStatus::Failed | NodeStatus::Skipped));
        if !cause {
            let detail = "skipped, but no dependency failed or was skipped".to_string();
            self.violate(Rule::DagOrder, e, Some(n), detail);
        }
    }

    fn apply_tool(&mut self, step: &Step, n: usize) -> Result<(), Error> {
        let e = step;
        let status = self.state.nodes[n].status;
        if status != NodeStatus::Running {
            let detail = format!("{} while the node is {}; tool events occur only while it runs", e.kind, status.name());
            self.violate(Rule::ToolLifecycle, e, Some(n), detail);
        }
        let aux = &mut self.aux[n];
        if e.kind == EventKind::ToolInvoked {
            aux.open_tools = aux.open_tools.saturating_add(1);
            return Ok(());
        }
        if aux.open_tools == 0 && !aux.tools_unknown {
            let detail = format!("{} with no open ToolInvoked of this node", e.kind);
            self.violate(Rule::ToolLifecycle, e, Some(n), detail);
        }
        let aux = &mut self.aux[n];
        aux.open_tools = aux.open_tools.saturating_sub(1);
        if e.kind == EventKind::ToolCompleted {
            self.take_output(step, n)?;
        }
        Ok(())
    }

    /// A completion's `output` member becomes the node's output hash.
    fn take_output(&mut self, step: &Step, n: usize) -> Result<(), Error> {
        let e = step;
        match step.output() {
            None | Some(Ok(None)) => {}
            Some(Ok(Some(hash))) => {
                // A node names the same output again and again: look a held one up once.
                if self.aux[n].held_output != Some(*hash) {
                    if self.blobs.holds(self.bundle, hash)? {
                        self.aux[n].held_output = Some(*hash);
                    } else {
                        self.violate(Rule::OutputReference, e, Some(n), format!("output {hash} names no blob the bundle holds"));
                    }
                }
                self.state.nodes[n].output_hash = Some(*hash);
            }
            Some(Err(found)) => {
                let detail = format!("output member {:?} is not a 64-hex content hash", crate::text::clip(found, 80));
                self.violate(Rule::OutputReference, e, Some(n), detail);
            }
        }
        Ok(())
    }

    /// Compares the state with the snapshot taken at this position; true when equal.
    fn check_snapshot(&mut self, snapshot: &Snapshot) -> bool {
        let mut details = Vec::new();
        if snapshot.logical_time != self.state.logical_time {
            details.push((
                None,
                format!("logical_time: the snapshot says {}, the events say {}", snapshot.logical_time, self.state.logical_time),
            ));
        }
        let recorded: HashMap<Uuid, _> = snapshot.nodes.iter().map(|n| (n.node_id, n)).collect();
        for (i, node) in self.state.nodes.iter().enumerate() {
            let (status, output, error) = match recorded.get(&node.node_id) {
                Some(s) => (s.status, s.output_hash, s.error.as_deref()),
                None => (NodeStatus::Pending, None, None),
            };
            let mut differs = Vec::new();
            if status != node.status {
                differs.push(format!("status: the snapshot says {}, the events say {}", status.name(), node.status.name()));
            }
            if output != node.output_hash {
                let show = |o: Option<Digest>| o.map_or("none".to_string(), |d| d.to_hex());
                differs.push(format!("output: the snapshot says {}, the events say {}", show(output), show(node.output_hash)));
            }
            if error != node.error.as_deref() {
                let show = |e: Option<&str>| e.map_or("none".to_string(), |e| format!("{:?}", crate::text::clip(e, 80)));
                differs.push(format!("error: the snapshot says {}, the events say {}", show(error), show(node.error.as_deref())));
            }
            if !differs.is_empty() {
                details.push((Some(i), differs.join("; ")));
            }
        }
        let matches = details.is_empty();
        for (node, detail) in details {
            let violation = Violation {
                rule: Rule::Snapshot,
                position: Some(self.state.position),
                event_id: None,
                kind: None,
                node: self.node_name(node),
                detail,
                chain: Vec::new(),
                chain_truncated: false,
            };
            self.record(violation, None);
        }
        matches
    }

    /// The checks of the log's end (REPLAY.md §4.1): its last event agrees
    /// with `metadata.json`'s status.
    fn check_end(&mut self) {
        let status = self.bundle.metadata().status;
        let ended = self.run_end.map(|(_, k)| k);
        let expected = match status {
            RunStatus::Completed => Some(EventKind::RunCompleted),
            RunStatus::Failed => Some(EventKind::RunFailed),
            RunStatus::Running | RunStatus::Cancelled => None,
        };
        let problem = match (status, ended) {
            (RunStatus::Completed | RunStatus::Failed, e) if e != expected => Some(format!(
                "metadata.json says {}, so the log ends with {}; found {}",
                status.name(),
                expected.expect("set"),
                e.map_or("no terminal run event".to_string(), |k| k.to_string())
            )),
            (RunStatus::Running, Some(k)) => Some(format!("metadata.json says running, but the run ended with {k}")),
            (RunStatus::Cancelled, Some(EventKind::RunCompleted)) => Some("metadata.json says cancelled, but the run completed".into()),
            _ => None,
        };
        let problem = if self.last.is_none() { Some("a run starts with RunCreated".to_string()) } else { problem };
        let Some(detail) = problem else { return };
        let violation = match self.last {
            Some((position, id, kind, parent)) => Found {
                violation: Violation {
                    rule: Rule::RunOutcome,
                    position: Some(position),
                    event_id: Some(id),
                    kind: Some(kind),
                    node: None,
                    detail,
                    chain: Vec::new(),
                    chain_truncated: false,
                },
                parent,
            },
            None => Found {
                violation: Violation {
                    rule: Rule::RunStructure,
                    position: None,
                    event_id: None,
                    kind: None,
                    node: None,
                    detail: format!("the log holds no events; {detail}"),
                    chain: Vec::new(),
                    chain_truncated: false,
                },
                parent: None,
            },
        };
        self.record(violation.violation, violation.parent);
    }

    /// The report, with each kept violation's causal chain followed.
    fn report(self, start: u64, complete: bool, snapshot: SnapshotCheck, chain_limit: usize) -> Result<ReplayReport, Error> {
        let names: HashMap<Uuid, String> = self.state.nodes.iter().map(|n| (n.node_id, n.name.clone())).collect();
        let name = |id: &Uuid| names.get(id).cloned();
        let mut violations = Vec::with_capacity(self.found.len());
        for Found { mut violation, parent } in self.found {
            if let Some(p) = violation.position.filter(|_| violation.event_id.is_some()) {
                (violation.chain, violation.chain_truncated) = chain(self.bundle, parent, p, chain_limit, &name)?;
            }
            violations.push(violation);
        }
        let kinds = EventKind::ALL.iter().zip(self.kinds).filter(|(_, n)| *n > 0).map(|(k, n)| (k.name(), n)).collect();
        Ok(ReplayReport {
            from_position: start,
            events_replayed: self.state.position - start,
            complete,
            state: self.state,
            kinds,
            state_hashes: self.hashes,
            snapshot,
            violations,
            violations_total: self.total,
            violations_by_rule: self.by_rule,
        })
    }
}
