//! The JSON documents of a bundle (`metadata.json`, `dag.json`) and the
//! snapshot, with the checks a reader applies beyond their schemas.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::digest::Digest;
use crate::error::Error;
use crate::text::{uuid_text, uuid_text_vec, Timestamp};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still running when captured.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with a failure.
    Failed,
    /// Stopped before finishing.
    Cancelled,
}

impl RunStatus {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// Where the run executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `x86_64`.
    pub arch: String,
}

impl Platform {
    /// The platform this program runs on.
    pub fn current() -> Self {
        Platform { os: std::env::consts::OS.to_string(), arch: std::env::consts::ARCH.to_string() }
    }
}

/// `metadata.json` (`schemas/metadata.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The run's id.
    #[serde(with = "uuid_text")]
    pub run_id: Uuid,
    /// Workflow name.
    pub workflow_name: String,
    /// Workflow version.
    pub workflow_version: String,
    /// RFC 3339 UTC start time.
    pub started_at: Timestamp,
    /// RFC 3339 UTC end time; null while running.
    pub completed_at: Option<Timestamp>,
    /// How the run ended.
    pub status: RunStatus,
    /// Nodes in the DAG.
    pub node_count: u64,
    /// Events in the log.
    pub event_count: u64,
    /// Where it ran.
    pub platform: Platform,
    /// Engine version that ran it.
    pub cathedral_version: String,
}

/// One node of the compiled DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DagNode {
    /// Node id; events name it in `node_id`.
    #[serde(with = "uuid_text")]
    pub id: Uuid,
    /// Human-readable name.
    pub name: String,
    /// Node kind, e.g. `task` or `tool`.
    pub kind: String,
    /// Nodes that must complete first.
    #[serde(with = "uuid_text_vec")]
    pub depends_on: Vec<Uuid>,
}

/// One edge of the compiled DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DagEdge {
    /// Upstream node.
    #[serde(with = "uuid_text")]
    pub from: Uuid,
    /// Downstream node.
    #[serde(with = "uuid_text")]
    pub to: Uuid,
}

/// `dag.json` (`schemas/dag.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Dag {
    /// Every node.
    pub nodes: Vec<DagNode>,
    /// Every edge.
    pub edges: Vec<DagEdge>,
    /// Nodes with no dependencies where execution starts.
    #[serde(with = "uuid_text_vec")]
    pub entry_nodes: Vec<Uuid>,
    /// Nodes nothing depends on.
    #[serde(with = "uuid_text_vec")]
    pub exit_nodes: Vec<Uuid>,
}

impl Dag {
    /// The set of node ids.
    pub fn node_ids(&self) -> HashSet<Uuid> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Checks that node ids are unique and every reference names a node.
    pub fn validate(&self, file: &str) -> Result<(), Error> {
        let bad = |detail: String| Err(Error::Json { file: file.to_string(), detail });
        let mut ids = HashSet::with_capacity(self.nodes.len());
        for node in &self.nodes {
            if !ids.insert(node.id) {
                return bad(format!("duplicate node id {}", node.id));
            }
        }
        let refs = self.nodes.iter().flat_map(|n| n.depends_on.iter().map(move |d| ("depends_on", *d)));
        let refs = refs
            .chain(self.edges.iter().flat_map(|e| [("edges.from", e.from), ("edges.to", e.to)]))
            .chain(self.entry_nodes.iter().map(|n| ("entry_nodes", *n)))
            .chain(self.exit_nodes.iter().map(|n| ("exit_nodes", *n)));
        for (field, id) in refs {
            if !ids.contains(&id) {
                return bad(format!("{field} names {id}, which is not a node"));
            }
        }
        Ok(())
    }
}

/// A node's state in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Waiting for its dependencies.
    Pending,
    /// Its dependencies completed; it may start.
    Scheduled,
    /// Started, not finished.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with a failure.
    Failed,
    /// Will not run.
    Skipped,
}

impl NodeStatus {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            NodeStatus::Pending => "pending",
            NodeStatus::Scheduled => "scheduled",
            NodeStatus::Running => "running",
            NodeStatus::Completed => "completed",
            NodeStatus::Failed => "failed",
            NodeStatus::Skipped => "skipped",
        }
    }

    /// True for completed, failed and skipped: nothing follows them.
    pub fn is_terminal(self) -> bool {
        matches!(self, NodeStatus::Completed | NodeStatus::Failed | NodeStatus::Skipped)
    }
}

/// One node in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeState {
    /// The node.
    #[serde(with = "uuid_text")]
    pub node_id: Uuid,
    /// Its status.
    pub status: NodeStatus,
    /// Hash of its output, once it has one.
    pub output_hash: Option<Digest>,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// The run state at a point of the log (`snapshot.cath-snap`, JSON form in
/// `schemas/snapshot.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Logical time the snapshot was taken at.
    pub logical_time: u64,
    /// Number of log events applied to reach this state.
    pub log_position: u64,
    /// Per-node state.
    pub nodes: Vec<NodeState>,
}

impl Snapshot {
    /// The referential rules of a snapshot (FORMAT.md §9): each node is a
    /// DAG node, at most once, and each output hash names a held blob
    /// (`holds` answers that). Position and time against the log are checked
    /// where the log is read.
    pub fn check_references(
        &self,
        file: &str,
        nodes: &HashSet<Uuid>,
        holds: &mut dyn FnMut(&Digest) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut seen = HashSet::with_capacity(self.nodes.len());
        for node in &self.nodes {
            if !nodes.contains(&node.node_id) {
                return Err(Error::rule(file, "node reference", format!("node {} is not in the DAG", node.node_id)));
            }
            if !seen.insert(node.node_id) {
                return Err(Error::rule(file, "node reference", format!("node {} appears twice", node.node_id)));
            }
            if let Some(h) = node.output_hash {
                if !holds(&h)? {
                    let detail = format!("output hash {h} of node {} names no blob of the bundle", node.node_id);
                    return Err(Error::rule(file, "blob reference", detail));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dag_references_are_checked() {
        let a = Uuid::from_u128(1);
        let mut dag = Dag {
            nodes: vec![DagNode { id: a, name: "a".into(), kind: "task".into(), depends_on: vec![] }],
            entry_nodes: vec![a],
            exit_nodes: vec![a],
            edges: vec![],
        };
        dag.validate("d").unwrap();
        dag.edges.push(DagEdge { from: a, to: Uuid::from_u128(2) });
        assert!(dag.validate("d").is_err());
    }

    #[test]
    fn json_uuids_must_be_lowercase_hyphenated() {
        let ok = r#"{"from":"00000000-0000-0000-0000-00000000000a","to":"00000000-0000-0000-0000-00000000000b"}"#;
        assert!(serde_json::from_str::<DagEdge>(ok).is_ok());
        assert!(serde_json::from_str::<DagEdge>(&ok.replace("0a", "0A")).is_err());
        assert!(serde_json::from_str::<DagEdge>(&ok.replace("00000000-0000-0000-0000-00000000000a", "0000000000000000000000000000000a"))
            .is_err());
    }
}
