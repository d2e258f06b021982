//! `cathedral import`: a bundle (directory or archive) back into a run store.

use std::path::PathBuf;

use cathedral_bundle::store::RunStore;
use cathedral_bundle::{BundleLoader, Error};

use super::progress::Bar;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle: a directory or a .cath-bundle.tar.zst archive.
    #[arg(long)]
    bundle: PathBuf,
    /// The run store.
    #[arg(long, env = "CATHEDRAL_STORE", default_value = ".cathedral")]
    store: PathBuf,
    #[command(flatten)]
    trust: super::trust::TrustArgs,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let bar = Bar::new("importing", quiet);
    let loader = args.trust.apply(BundleLoader::new().limits(args.limits.limits()))?.progress(&bar);
    let store = RunStore::new(&args.store);
    let result = store.import(&args.bundle, &loader);
    bar.finish();
    let summary = match result {
        Ok(s) => s,
        Err(e) => return super::trust::refused(e, "not imported"),
    };
    if !quiet {
        eprintln!("imported run {} into {}: {} events, {} blobs", summary.run_id, summary.dir.display(), summary.events, summary.blobs);
    }
    Ok(Outcome::Ok)
}
