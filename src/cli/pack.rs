//! `cathedral pack`: a bundle directory into one `.cath-bundle.tar.zst`.

use std::path::PathBuf;

use cathedral_bundle::{BundleLoader, Error, PackOptions};

use super::output::human_bytes;
use super::progress::Bar;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle directory.
    #[arg(long)]
    bundle: PathBuf,
    /// The archive to write; its name ends in .cath-bundle.tar.zst.
    #[arg(long)]
    output: PathBuf,
    /// zstd level, 1 to 19.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Replace an existing archive (only an archive of a bundle: anything else is refused and left untouched).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    trust: super::trust::TrustArgs,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let bar = Bar::new("packing", quiet);
    let loader = args.trust.apply(BundleLoader::new().limits(args.limits.limits()))?.progress(&bar);
    let packed = loader.pack(&args.bundle, &args.output, PackOptions::default().level(args.level).overwrite(args.force));
    bar.finish();
    let summary = match packed {
        Ok(s) => s,
        Err(e) => return super::trust::refused(e, "not packed"),
    };
    if !quiet {
        eprintln!(
            "packed {} into {}: {} ({} of tar), verified as written; signature {}",
            args.bundle.display(),
            args.output.display(),
            human_bytes(summary.archive_size),
            human_bytes(summary.tar_size),
            cathedral_bundle::escape_for_terminal(&summary.report.signature.to_string()),
        );
    }
    Ok(Outcome::Ok)
}
