//! Opening a bundle for reading, shared by the commands that read runs
//! (replay, explain, diff): verification options and what a refusal prints.

use std::path::Path;

use cathedral_bundle::{BundleLoader, Error, ReplayBundle, VerifyMode};

use super::progress::Bar;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Check structure and sizes only before reading; do not hash the bundle first.
    #[arg(long)]
    fast: bool,
    #[command(flatten)]
    trust: super::trust::TrustArgs,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

impl ReadArgs {
    /// A loader with these options.
    pub fn loader(&self) -> Result<BundleLoader<'static>, Error> {
        let mode = if self.fast { VerifyMode::Fast } else { VerifyMode::Full };
        self.trust.apply(BundleLoader::new().mode(mode).limits(self.limits.limits()))
    }
}

/// Verifies and opens the bundle (directory or archive) at `path`, with a
/// progress bar on long verifications; a bundle refused by verification or
/// by the signature policy becomes the command's outcome, its findings
/// printed.
pub fn open(loader: &BundleLoader<'_>, path: &Path, refusing: &str, quiet: bool) -> Result<Result<ReplayBundle, Outcome>, Error> {
    let bar = Bar::new("verifying", quiet);
    let loaded = loader.clone().progress(&bar).load(path);
    bar.finish();
    match loaded {
        Ok(bundle) => Ok(Ok(bundle)),
        Err(e) => super::trust::refused(e, refusing).map(Err),
    }
}
