//! Writing and reading bundles: [`BundleBuilder`] writes one atomically,
//! [`BundleLoader`] verifies one and opens it as a [`ReplayBundle`].

mod archive;
mod builder;
mod idsort;
mod loader;
mod replace;

pub use archive::{ArchiveBundle, ArchiveWatch, PackOptions, PackSummary};
pub(crate) use builder::BlobWriter;
pub use builder::{BuildOptions, BuildSummary, BundleBuilder};
pub use loader::{is_archive, BundleLoader, LoadError, ReplayBundle};
#[cfg(feature = "remote")]
pub(crate) use replace::place_staged;
pub(crate) use replace::staging_dir;
