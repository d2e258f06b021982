//! Writing and reading bundles: [`BundleBuilder`] writes one atomically,
//! [`BundleLoader`] verifies one and opens it as a [`ReplayBundle`].

mod builder;
mod loader;
mod replace;

pub use builder::{BuildOptions, BuildSummary, BundleBuilder};
pub use loader::{BundleLoader, LoadError, ReplayBundle};
