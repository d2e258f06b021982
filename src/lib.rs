//! Write, verify and inspect CATHEDRAL replay bundles.
//!
//! A bundle is a directory holding everything needed to reproduce a run:
//! metadata, workflow source, compiled DAG, a binary event log with an
//! offset index, an optional snapshot, and a content-addressed blob store.
//! Its byte layout is specified in `schemas/FORMAT.md`.
//!
//! - [`BundleBuilder`] writes a bundle atomically.
//! - [`BundleLoader`] verifies every byte of a bundle before returning a
//!   [`ReplayBundle`], and reports every finding.
#![warn(missing_docs)]

pub mod blob;
mod builder;
mod bundle;
pub mod digest;
mod error;
pub mod event;
pub mod format;
mod fsutil;
pub mod index;
mod json;
mod limits;
pub mod log;
pub mod manifest;
pub mod model;
pub mod path;
pub mod signing;
pub mod store;
mod verify;

pub use builder::{BuildOptions, BuildSummary, BundleBuilder, STAGING_MARKER};
pub use bundle::{BundleLoader, ReplayBundle};
pub use digest::Digest;
pub use error::{Error, Finding, FindingCode, Result};
pub use event::{Encoding, Event, EventKind};
pub use limits::Limits;
pub use model::{Dag, DagEdge, DagNode, Metadata, NodeState, NodeStatus, Platform, RunStatus, Snapshot};
pub use signing::{KeyId, PublicKey, SecretKey, SignatureStatus};
pub use verify::{Progress, VerifyMode, VerifyReport, VerifyStats};
