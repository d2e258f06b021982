//! `cathedral unpack`: an archive back into a bundle directory, verified.

use std::path::PathBuf;

use cathedral_bundle::{BundleLoader, Error};

use super::progress::Bar;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The archive (.cath-bundle.tar.zst).
    #[arg(long)]
    bundle: PathBuf,
    /// The bundle directory to create.
    #[arg(long)]
    output: PathBuf,
    /// Replace an existing bundle at the output (only a bundle: anything else is refused and left untouched).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    trust: super::trust::TrustArgs,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let bar = Bar::new("unpacking", quiet);
    let loader = args.trust.apply(BundleLoader::new().limits(args.limits.limits()))?.progress(&bar);
    let result = loader.unpack(&args.bundle, &args.output, args.force);
    bar.finish();
    let report = match result {
        Ok(r) => r,
        Err(e) => return super::trust::refused(e, "not unpacked"),
    };
    if !quiet {
        eprintln!(
            "unpacked {} into {}: {} files, {} blobs, {} events, verified; signature {}",
            args.bundle.display(),
            args.output.display(),
            report.stats.files,
            report.stats.blobs,
            report.stats.events,
            cathedral_bundle::escape_for_terminal(&report.signature.to_string()),
        );
    }
    Ok(Outcome::Ok)
}
