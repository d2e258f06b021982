//! Replay: fold a verified bundle's event log into the run's state and
//! check that the run it records is coherent (`schemas/REPLAY.md`); explain
//! a run's outcome; compare two runs.
//!
//! Replay reads the log once, in order, keeping state per node, not per
//! event: parents are found among the most recent events or through the
//! index, blobs through the blob list.

mod diff;
mod explain;
mod fold;
mod lookup;
pub mod payload;
mod read;

pub use diff::{BlobDiff, DagDiff, Divergence, EventDiff, EventKey, FieldDiff, NodeDiff, RunDiff, Side};
pub use explain::{Blocked, EventNote, Explanation, Failure};
pub use payload::Payload;

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use crate::bundle::ReplayBundle;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::event::EventKind;
use crate::format::model::{NodeState, NodeStatus, Snapshot};

/// A rule of REPLAY.md §4 that a run can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `RunCreated` first, `RunStarted` second, nothing after the run's end.
    RunStructure,
    /// The run's end agrees with `metadata.json` and with its nodes.
    RunOutcome,
    /// Run events name the nil node; node and tool events a DAG node.
    NodeReference,
    /// A parent is an earlier event of the log.
    Causality,
    /// Each prior state hash is the previous event's post state hash.
    StateChain,
    /// A state hash is absent (a violation only with `strict`).
    StateHashAbsent,
    /// pending → scheduled → running → completed | failed; skipped from
    /// pending or scheduled; nothing after a node's end.
    NodeLifecycle,
    /// Tool events only while their node runs; each end has an invocation.
    ToolLifecycle,
    /// Scheduling and skipping agree with the DAG's dependencies.
    DagOrder,
    /// Output and `BlobStored` hashes name blobs the bundle holds.
    OutputReference,
    /// The snapshot is the state the events before its position give.
    Snapshot,
}

impl Rule {
    /// Every rule, in REPLAY.md order.
    pub const ALL: [Rule; 11] = [
        Rule::RunStructure,
        Rule::RunOutcome,
        Rule::NodeReference,
        Rule::Causality,
        Rule::StateChain,
        Rule::StateHashAbsent,
        Rule::NodeLifecycle,
        Rule::ToolLifecycle,
        Rule::DagOrder,
        Rule::OutputReference,
        Rule::Snapshot,
    ];

    /// The rule's code, as in JSON.
    pub fn code(self) -> &'static str {
        match self {
            Rule::RunStructure => "run_structure",
            Rule::RunOutcome => "run_outcome",
            Rule::NodeReference => "node_reference",
            Rule::Causality => "causality",
            Rule::StateChain => "state_chain",
            Rule::StateHashAbsent => "state_hash_absent",
            Rule::NodeLifecycle => "node_lifecycle",
            Rule::ToolLifecycle => "tool_lifecycle",
            Rule::DagOrder => "dag_order",
            Rule::OutputReference => "output_reference",
            Rule::Snapshot => "snapshot",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// One event of a causal chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainLink {
    /// Its position in the log.
    pub position: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its kind.
    pub kind: EventKind,
    /// The name of the DAG node it names, if any.
    pub node: Option<String>,
}

/// A place where the run breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// Position of the event that breaks it (for the snapshot rule, the
    /// snapshot's position; none for a rule about the whole log).
    pub position: Option<u64>,
    /// That event's id.
    pub event_id: Option<Uuid>,
    /// That event's kind.
    pub kind: Option<EventKind>,
    /// The DAG node concerned, by name.
    pub node: Option<String>,
    /// What is wrong: what was expected and what was found.
    pub detail: String,
    /// The event's causal chain: its parent, that one's parent, ... to the root.
    pub chain: Vec<ChainLink>,
    /// True when `chain` was cut at the chain limit.
    pub chain_truncated: bool,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]", self.rule)?;
        if let Some(p) = self.position {
            write!(f, " at position {p}")?;
        }
        if let Some(k) = self.kind {
            write!(f, " {k}")?;
        }
        if let Some(n) = &self.node {
            write!(f, " node {n}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// Where the run as a whole is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    /// No `RunCreated` yet.
    NotCreated,
    /// Created, not started.
    Created,
    /// Started, not ended.
    Started,
    /// Ended with `RunCompleted`.
    Completed,
    /// Ended with `RunFailed`.
    Failed,
}

/// One node's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRun {
    /// The node's id.
    pub node_id: Uuid,
    /// Its name in `dag.json`.
    pub name: String,
    /// Its status.
    pub status: NodeStatus,
    /// The output hash its completed tool calls or completion named last.
    pub output_hash: Option<Digest>,
    /// Its error, once it failed.
    pub error: Option<String>,
}

/// The run's state after some prefix of its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunState {
    /// Number of events applied.
    pub position: u64,
    /// Logical time of the last event applied (0 before any).
    pub logical_time: u64,
    /// The run's phase.
    pub phase: RunPhase,
    /// Every DAG node, in `dag.json` order.
    pub nodes: Vec<NodeRun>,
}

impl RunState {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeRun> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The state in the snapshot's form: every node, in DAG order.
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            logical_time: self.logical_time,
            log_position: self.position,
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeState { node_id: n.node_id, status: n.status, output_hash: n.output_hash, error: n.error.clone() })
                .collect(),
        }
    }
}

/// Where a replay stops early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many events.
    Position(u64),
    /// After every event whose logical time is at most this.
    Time(u64),
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    strict: bool,
    from_snapshot: bool,
    stop: Option<Stop>,
    max_violations: usize,
    chain_limit: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions { strict: false, from_snapshot: false, stop: None, max_violations: 1000, chain_limit: 32 }
    }
}

impl ReplayOptions {
    /// Absent state hashes are violations, not only counted.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Start from the bundle's snapshot instead of the first event.
    pub fn from_snapshot(mut self, from_snapshot: bool) -> Self {
        self.from_snapshot = from_snapshot;
        self
    }

    /// Stop early; the checks of the log's end are then not made.
    pub fn stop(mut self, stop: Option<Stop>) -> Self {
        self.stop = stop;
        self
    }

    /// Keep at most this many violations in full (all are counted).
    pub fn max_violations(mut self, max: usize) -> Self {
        self.max_violations = max;
        self
    }

    /// Follow causal chains for at most this many links.
    pub fn chain_limit(mut self, limit: usize) -> Self {
        self.chain_limit = limit;
        self
    }
}

/// How many events carry state hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HashCounts {
    /// Events with both hashes (the first event needs only its post hash).
    pub complete: u64,
    /// Events after the first without a prior state hash.
    pub prior_absent: u64,
    /// Events without a post state hash.
    pub post_absent: u64,
}

/// What became of the snapshot check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotCheck {
    /// The bundle has no snapshot.
    Absent,
    /// The events before its position give exactly the snapshot.
    Matches,
    /// They do not (see the `snapshot` violations).
    Differs,
    /// The replay stopped before the snapshot's position.
    NotReached,
    /// The replay started from the snapshot.
    StartedFrom,
}

/// The result of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The position replay started at (0, or the snapshot's).
    pub from_position: u64,
    /// Events applied.
    pub events_replayed: u64,
    /// True when replay went to the end of the log (no stop).
    pub complete: bool,
    /// The state reached.
    pub state: RunState,
    /// Events applied, by kind.
    pub kinds: BTreeMap<&'static str, u64>,
    /// State hash presence.
    pub state_hashes: HashCounts,
    /// The snapshot check.
    pub snapshot: SnapshotCheck,
    /// Violations, in the order found, at most the options' maximum.
    pub violations: Vec<Violation>,
    /// Every violation found, counted.
    pub violations_total: u64,
    /// Violations found, by rule.
    pub violations_by_rule: BTreeMap<&'static str, u64>,
}

impl ReplayReport {
    /// True when no rule is broken.
    pub fn is_coherent(&self) -> bool {
        self.violations_total == 0
    }
}

impl ReplayBundle {
    /// Replays the whole log from its first event with default options.
    pub fn replay(&self) -> Result<ReplayReport, Error> {
        self.replay_with(&ReplayOptions::default())
    }

    /// Replays with `options`. `Err` only when the bundle cannot be read
    /// (or `from_snapshot` is asked of a bundle without one); broken rules
    /// are violations in the report.
    pub fn replay_with(&self, options: &ReplayOptions) -> Result<ReplayReport, Error> {
        fold::run(self, options)
    }
}
