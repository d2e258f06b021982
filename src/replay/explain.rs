//! Explain: why a run ended as it did, from its replayed state and one more
//! pass over the events of its failed nodes (REPLAY.md §6).

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;
use uuid::Uuid;

use super::lookup::chain;
use super::payload::{self, Payload};
use super::{ChainLink, NodeRun, ReplayReport, RunPhase};
use crate::bundle::ReplayBundle;
use crate::error::Error;
use crate::format::event::{Event, EventKind};
use crate::format::model::{NodeStatus, RunStatus};

/// Failed nodes explained in full; the rest are named.
const MAX_FAILURES: usize = 20;
/// Tool and decision events kept per failed node (the last ones).
const MAX_CALLS: usize = 50;
/// Run-level errors kept (the last ones).
const MAX_RUN_ERRORS: usize = 20;
/// Links of the causal chain shown from the failure back towards the start.
const CHAIN_LIMIT: usize = 64;

/// One event, as explain shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventNote {
    /// Position in the log.
    pub position: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its kind.
    pub kind: EventKind,
    /// Its logical time.
    pub logical_time: u64,
    /// Its payload, decoded.
    pub payload: Payload,
}

impl EventNote {
    fn of(position: u64, e: &Event) -> Self {
        EventNote { position, event_id: e.event_id, kind: e.kind, logical_time: e.logical_time, payload: payload::decode(&e.payload) }
    }
}

/// A node downstream of a failure that did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// Its name.
    pub node: String,
    /// Its status at the end: skipped, or never run (pending, scheduled).
    pub status: NodeStatus,
}

/// One failed node and how it got there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The node's name.
    pub node: String,
    /// The node's id.
    pub node_id: Uuid,
    /// Its error, decoded from the `NodeFailed` payload.
    pub error: Option<String>,
    /// The `NodeFailed` event (absent if replay started after it).
    pub failed_at: Option<EventNote>,
    /// Its tool calls, capability checks, policy decisions and task
    /// events, in log order (the last ones, if there were many).
    pub calls: Vec<EventNote>,
    /// Calls left out before the first one shown.
    pub calls_omitted: u64,
    /// The causal chain from the run's start to the failure, start first.
    pub chain: Vec<ChainLink>,
    /// True when the chain was cut before reaching the start.
    pub chain_truncated: bool,
    /// Nodes downstream of this one that did not complete.
    pub blocked: Vec<Blocked>,
}

/// The answer to "what happened in this run, and why did it fail?".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// What `metadata.json` says.
    pub status: RunStatus,
    /// Where the replayed run ended.
    pub phase: RunPhase,
    /// The terminal run event, if any.
    pub ended_by: Option<EventNote>,
    /// Whether replay found the run coherent.
    pub coherent: bool,
    /// Replay violations, counted (see `replay` for them).
    pub violations: u64,
    /// Failed nodes, in the order they failed (at most 20 in full).
    pub failures: Vec<Failure>,
    /// Failed nodes beyond those explained in full, by name.
    pub more_failures: Vec<String>,
    /// Run-level `Error` events (the last ones).
    pub run_errors: Vec<EventNote>,
    /// Every node's final state, in DAG order.
    pub nodes: Vec<NodeRun>,
}

/// What the second pass keeps per explained failed node.
#[derive(Default)]
struct Trail {
    failed: Option<(EventNote, Option<Uuid>)>,
    calls: VecDeque<EventNote>,
    omitted: u64,
}

fn is_call(kind: EventKind) -> bool {
    use EventKind::*;
    matches!(
        kind,
        ToolInvoked
            | ToolCompleted
            | ToolFailed
            | ToolTimedOut
            | CapabilityCheck
            | PolicyDecision
            | TaskAssigned
            | TaskAccepted
            | TaskRejected
    )
}

impl ReplayBundle {
    /// Explains the run: replays it, then reads the events of its failed
    /// nodes once more.
    pub fn explain(&self) -> Result<Explanation, Error> {
        let report = self.replay()?;
        let failed: Vec<&NodeRun> = report.state.nodes.iter().filter(|n| n.status == NodeStatus::Failed).collect();
        let explained: HashMap<Uuid, usize> = failed.iter().take(MAX_FAILURES).enumerate().map(|(i, n)| (n.node_id, i)).collect();
        let mut trails: Vec<Trail> = (0..explained.len()).map(|_| Trail::default()).collect();
        let mut run_errors = VecDeque::new();
        let mut ended_by = None;
        for (position, event) in self.events().enumerate() {
            let event = event?;
            let position = position as u64;
            if matches!(event.kind, EventKind::RunCompleted | EventKind::RunFailed) && ended_by.is_none() {
                ended_by = Some(EventNote::of(position, &event));
            }
            if event.kind == EventKind::Error && event.node_id.is_nil() {
                if run_errors.len() == MAX_RUN_ERRORS {
                    run_errors.pop_front();
                }
                run_errors.push_back(EventNote::of(position, &event));
            }
            let Some(&i) = explained.get(&event.node_id) else { continue };
            let trail = &mut trails[i];
            if event.kind == EventKind::NodeFailed && trail.failed.is_none() {
                trail.failed = Some((EventNote::of(position, &event), event.parent_event_id));
            } else if is_call(event.kind) && trail.failed.is_none() {
                if trail.calls.len() == MAX_CALLS {
                    trail.calls.pop_front();
                    trail.omitted += 1;
                }
                trail.calls.push_back(EventNote::of(position, &event));
            }
        }
        let graph = Graph::of(self, &report);
        let mut failures = Vec::with_capacity(trails.len());
        for (node, trail) in failed.iter().zip(trails) {
            failures.push(self.failure(&report, &graph, node, trail)?);
        }
        failures.sort_by_key(|f| f.failed_at.as_ref().map_or(u64::MAX, |e| e.position));
        Ok(Explanation {
            status: self.metadata().status,
            phase: report.state.phase,
            ended_by,
            coherent: report.is_coherent(),
            violations: report.violations_total,
            failures,
            more_failures: failed.iter().skip(MAX_FAILURES).map(|n| n.name.clone()).collect(),
            run_errors: run_errors.into(),
            nodes: report.state.nodes,
        })
    }

    fn failure(&self, report: &ReplayReport, graph: &Graph<'_>, node: &NodeRun, trail: Trail) -> Result<Failure, Error> {
        let name = |id: &Uuid| graph.names.get(id).map(|n| n.to_string());
        let (mut links, mut truncated) = (Vec::new(), false);
        if let Some((at, parent)) = &trail.failed {
            (links, truncated) = chain(self, *parent, at.position, CHAIN_LIMIT, &name)?;
            links.reverse();
            links.push(ChainLink { position: at.position, event_id: at.event_id, kind: at.kind, node: Some(node.name.clone()) });
        }
        Ok(Failure {
            node: node.name.clone(),
            node_id: node.node_id,
            error: node.error.clone(),
            failed_at: trail.failed.map(|(note, _)| note),
            calls: trail.calls.into(),
            calls_omitted: trail.omitted,
            chain: links,
            chain_truncated: truncated,
            blocked: graph.blocked_by(report, node.node_id),
        })
    }
}

/// Node names and dependents, built once per explanation.
struct Graph<'a> {
    names: HashMap<Uuid, &'a str>,
    dependents: HashMap<Uuid, Vec<Uuid>>,
}

impl<'a> Graph<'a> {
    fn of(bundle: &ReplayBundle, report: &'a ReplayReport) -> Self {
        let mut dependents: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for node in &bundle.dag().nodes {
            for dep in &node.depends_on {
                dependents.entry(*dep).or_default().push(node.id);
            }
        }
        Graph { names: report.state.nodes.iter().map(|n| (n.node_id, n.name.as_str())).collect(), dependents }
    }

    /// The nodes downstream of `failed` (through `depends_on`) that did not complete.
    fn blocked_by(&self, report: &ReplayReport, failed: Uuid) -> Vec<Blocked> {
        let mut seen = HashSet::from([failed]);
        let mut queue = VecDeque::from([failed]);
        while let Some(id) = queue.pop_front() {
            for next in self.dependents.get(&id).into_iter().flatten() {
                if seen.insert(*next) {
                    queue.push_back(*next);
                }
            }
        }
        report
            .state
            .nodes
            .iter()
            .filter(|n| n.node_id != failed && seen.contains(&n.node_id))
            .filter(|n| matches!(n.status, NodeStatus::Skipped | NodeStatus::Pending | NodeStatus::Scheduled))
            .map(|n| Blocked { node: n.name.clone(), status: n.status })
            .collect()
    }
}
