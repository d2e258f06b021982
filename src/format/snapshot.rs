//! `snapshot.cath-snap`: the binary codec of [`Snapshot`].
//!
//! Layout: `"CATHSNP" | version u32 | postcard snapshot` to the end of the
//! file, in its canonical encoding (FORMAT.md §9).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{NodeState, NodeStatus, Snapshot};
use super::{check_prefix, check_version, PREFIX_LEN};
use crate::digest::Digest;
use crate::error::Error;

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
        out.extend_from_slice(&super::SNAPSHOT_MAGIC);
        out.extend_from_slice(&super::SNAPSHOT_VERSION.to_be_bytes());
        postcard::to_extend(&wire, out).expect("snapshot encodes")
    }

    /// Decodes a whole snapshot file, which must be canonical.
    pub fn decode_file(bytes: &[u8], file: &str) -> Result<Self, Error> {
        let version = check_prefix(bytes, file, super::SNAPSHOT_MAGIC, "snapshot")?;
        check_version(file, "snapshot version", super::SNAPSHOT_VERSION, version)?;
        let body = &bytes[PREFIX_LEN..];
        let (wire, rest) = postcard::take_from_bytes::<WireSnapshot>(body).map_err(|e| Error::Malformed {
            file: file.to_string(),
            what: "snapshot",
            offset: PREFIX_LEN as u64,
            detail: e.to_string(),
            source: Some(Box::new(e)),
        })?;
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
            return Err(Error::malformed(file, "snapshot", PREFIX_LEN as u64, "not the canonical encoding of the snapshot it holds"));
        }
        Ok(snapshot)
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
}
