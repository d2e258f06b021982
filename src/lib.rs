//! Write, verify and inspect CATHEDRAL replay bundles.
//!
//! A bundle is a directory holding everything needed to reproduce a run:
//! metadata, workflow source, compiled DAG, a binary event log with an
//! offset index, an optional snapshot, and a content-addressed blob store.
//! Its byte layout is specified in `schemas/FORMAT.md`.
//!
//! The data path, and where each part lives:
//!
//! - [`store`]: the run store an engine records into ([`store::RunStore`],
//!   [`store::RunRecorder`]) and reads back ([`store::StoredRun`]);
//!   [`store::bundle_run`] captures a run into a bundle in one call.
//! - [`BundleBuilder`] writes a bundle atomically.
//! - [`BundleLoader`] verifies every byte of a bundle, reports every
//!   finding ([`VerifyReport`]), and opens it as a [`ReplayBundle`].
//! - [`replay`]: folds a bundle's events into the run's state and checks
//!   that the run is coherent ([`ReplayBundle::replay`]), explains its
//!   outcome ([`ReplayBundle::explain`]) and compares two runs
//!   ([`ReplayBundle::diff`]) (`schemas/REPLAY.md`).
//! - [`format`]: every byte layout, with its reader and writer.
//!
//! ```
//! use cathedral_bundle::store::{bundle_run, RunStart, RunStore};
//! use cathedral_bundle::{BuildOptions, BundleLoader, Dag, DagNode, Event, EventKind, RunStatus, Timestamp, Uuid};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let store = RunStore::new(tmp.path().join("store"));
//! let run_id = Uuid::from_u128(1);
//! let node = Uuid::from_u128(2);
//! let dag = Dag {
//!     nodes: vec![DagNode { id: node, name: "train".into(), kind: "task".into(), depends_on: vec![] }],
//!     edges: vec![],
//!     entry_nodes: vec![node],
//!     exit_nodes: vec![node],
//! };
//!
//! // An engine records a run...
//! let mut recorder = store.record(RunStart::new(run_id, "demo", "1.0", "0.9.0"), "workflow demo {}", &dag)?;
//! let output = recorder.put_blob(b"{\"accuracy\": 0.93}")?;
//! for (i, (kind, node_id, payload)) in [
//!     (EventKind::RunCreated, Uuid::nil(), Vec::new()),
//!     (EventKind::RunStarted, Uuid::nil(), Vec::new()),
//!     (EventKind::NodeScheduled, node, Vec::new()),
//!     (EventKind::NodeStarted, node, Vec::new()),
//!     (EventKind::BlobStored, node, output.to_hex().into_bytes()),
//!     (EventKind::NodeCompleted, node, format!("{{\"output\":\"{output}\"}}").into_bytes()),
//!     (EventKind::RunCompleted, Uuid::nil(), Vec::new()),
//! ]
//! .into_iter()
//! .enumerate()
//! {
//!     let event = Event::new(Uuid::from_u128(100 + i as u128), run_id, node_id, i as u64, kind, payload);
//!     recorder.append_event(&event)?;
//! }
//! recorder.finish(RunStatus::Completed, Some(Timestamp::now()))?;
//!
//! // ...an operator captures it...
//! let bundle = tmp.path().join("demo.cath-bundle");
//! bundle_run(&store, &run_id, &bundle, BuildOptions::default(), &|_bytes| {})?;
//!
//! // ...and anyone can verify and read it.
//! let replay = BundleLoader::new().load(&bundle)?;
//! assert_eq!(replay.event_count(), 7);
//! assert_eq!(replay.blob(&output)?, b"{\"accuracy\": 0.93}");
//! let last = replay.events().last().unwrap()?;
//! assert_eq!(last.kind, EventKind::RunCompleted);
//!
//! // ...and replay it: the run is coherent, and its node's output is known.
//! let report = replay.replay()?;
//! assert!(report.is_coherent(), "{:?}", report.violations);
//! assert_eq!(report.state.node("train").unwrap().output_hash, Some(output));
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

// The README's examples are compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod bundle;
mod digest;
mod error;
pub mod format;
mod fsutil;
mod limits;
mod path;
#[cfg(feature = "remote")]
pub mod remote;
pub mod replay;
pub mod store;
mod text;
mod treehash;
mod verify;

pub use bundle::{
    is_archive, ArchiveBundle, ArchiveWatch, BuildOptions, BuildSummary, BundleBuilder, BundleLoader, LoadError, PackOptions, PackSummary,
    ReplayBundle,
};
pub use digest::Digest;
pub use error::{Error, FileKind, Result};
pub use format::event::{Encoding, Event, EventKind, EventRef};
pub use format::model::{Dag, DagEdge, DagNode, Metadata, NodeState, NodeStatus, Platform, RunStatus, Snapshot};
pub use format::signature::{KeyId, PublicKey, SecretKey, SignatureStatus};
pub use limits::Limits;
pub use path::BundlePath;
pub use text::{clip, escape_for_terminal, parse_uuid, InvalidText, Timestamp};
pub use uuid::Uuid;
pub use verify::{Finding, FindingCode, Progress, VerifyMode, VerifyReport, VerifyStats};
