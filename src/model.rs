//! The JSON documents of a bundle (`metadata.json`, `dag.json`) and the
//! snapshot, with the checks a reader applies beyond their schemas.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::digest::Digest;
use crate::error::Error;
use crate::format;

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
    pub started_at: String,
    /// RFC 3339 UTC end time; null while running.
    pub completed_at: Option<String>,
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

impl Metadata {
    /// Checks what the schema cannot: timestamps are RFC 3339 UTC, and the run id is lowercase hyphenated.
    pub fn validate(&self, file: &str) -> Result<(), Error> {
        check_timestamp(file, "started_at", &self.started_at)?;
        if let Some(t) = &self.completed_at {
            check_timestamp(file, "completed_at", t)?;
        }
        Ok(())
    }
}

/// Checks an RFC 3339 UTC timestamp such as `2026-01-02T03:04:05Z`.
pub fn check_timestamp(file: &str, field: &'static str, text: &str) -> Result<(), Error> {
    if !text.ends_with('Z') || humantime::parse_rfc3339(text).is_err() {
        return Err(Error::Json {
            file: file.to_string(),
            detail: format!("{field}: expected an RFC 3339 UTC timestamp like 2026-01-02T03:04:05Z, found {text:?}"),
        });
    }
    Ok(())
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
#[allow(missing_docs)]
pub enum NodeStatus {
    Pending,
    Scheduled,
    Running,
    Completed,
    Failed,
    Skipped,
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

/// The snapshot's postcard wire form: UUIDs and digests as raw bytes.
#[derive(Serialize, Deserialize)]
struct WireSnapshot {
    logical_time: u64,
    log_position: u64,
    nodes: Vec<WireNodeState>,
}

#[derive(Serialize, Deserialize)]
struct WireNodeState {
    node_id: [u8; 16],
    status: NodeStatus,
    output_hash: Option<[u8; 32]>,
    error: Option<String>,
}

impl Snapshot {
    /// Encodes the whole file: `magic | version | postcard snapshot`.
    pub fn encode_file(&self) -> Vec<u8> {
        let wire = WireSnapshot {
            logical_time: self.logical_time,
            log_position: self.log_position,
            nodes: self
                .nodes
                .iter()
                .map(|n| WireNodeState {
                    node_id: *n.node_id.as_bytes(),
                    status: n.status,
                    output_hash: n.output_hash.map(|d| d.0),
                    error: n.error.clone(),
                })
                .collect(),
        };
        let mut out = Vec::new();
        out.extend_from_slice(&format::SNAPSHOT_MAGIC);
        out.extend_from_slice(&format::SNAPSHOT_VERSION.to_be_bytes());
        postcard::to_extend(&wire, out).expect("snapshot encodes")
    }

    /// Decodes a whole snapshot file, which must be canonical.
    pub fn decode_file(bytes: &[u8], file: &str) -> Result<Self, Error> {
        crate::log::check_prefix(bytes, file, format::SNAPSHOT_MAGIC, "snapshot")?;
        let version = format::be_u32(bytes, format::MAGIC_LEN);
        if version != format::SNAPSHOT_VERSION {
            return Err(Error::Unsupported {
                file: file.to_string(),
                what: "snapshot version",
                expected: format::SNAPSHOT_VERSION.to_string(),
                found: version.to_string(),
            });
        }
        let body = &bytes[format::PREFIX_LEN..];
        let (wire, rest) = postcard::take_from_bytes::<WireSnapshot>(body)
            .map_err(|e| Error::malformed(file, "snapshot", format::PREFIX_LEN as u64, e))?;
        if !rest.is_empty() {
            return Err(Error::TrailingData {
                file: file.to_string(),
                offset: (bytes.len() - rest.len()) as u64,
                count: rest.len() as u64,
            });
        }
        let snapshot = Snapshot {
            logical_time: wire.logical_time,
            log_position: wire.log_position,
            nodes: wire
                .nodes
                .into_iter()
                .map(|n| NodeState {
                    node_id: Uuid::from_bytes(n.node_id),
                    status: n.status,
                    output_hash: n.output_hash.map(Digest),
                    error: n.error,
                })
                .collect(),
        };
        if snapshot.encode_file() != bytes {
            return Err(Error::malformed(
                file,
                "snapshot",
                format::PREFIX_LEN as u64,
                "not the canonical encoding of the snapshot it holds",
            ));
        }
        Ok(snapshot)
    }
}

/// UUIDs in JSON: only the hyphenated lowercase form is accepted.
pub(crate) mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(u: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&u.hyphenated())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let text = String::deserialize(d)?;
        crate::event::parse_uuid("uuid", &text).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod uuid_text_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(v: &[Uuid], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|u| u.hyphenated().to_string()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Uuid>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts.iter().map(|t| crate::event::parse_uuid("uuid", t).map_err(serde::de::Error::custom)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip_and_canonical() {
        let s = Snapshot {
            logical_time: 7,
            log_position: 3,
            nodes: vec![NodeState {
                node_id: Uuid::from_u128(9),
                status: NodeStatus::Failed,
                output_hash: Some(Digest::of(b"o")),
                error: Some("boom".into()),
            }],
        };
        let bytes = s.encode_file();
        assert_eq!(&bytes[..7], b"CATHSNP");
        assert_eq!(Snapshot::decode_file(&bytes, "s").unwrap(), s);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(Snapshot::decode_file(&trailing, "s"), Err(Error::TrailingData { .. })));
        assert!(Snapshot::decode_file(&bytes[..6], "s").is_err());
    }

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

    #[test]
    fn timestamps_must_be_utc() {
        assert!(check_timestamp("m", "t", "2026-01-02T03:04:05Z").is_ok());
        assert!(check_timestamp("m", "t", "2026-01-02T03:04:05+01:00").is_err());
        assert!(check_timestamp("m", "t", "yesterday").is_err());
    }
}
