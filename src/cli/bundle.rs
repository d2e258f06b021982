//! `cathedral bundle`: capture a run from a run store.

use std::path::PathBuf;

use cathedral_bundle::store::{bundle_run, RunStore, EVENTS_FILE};
use cathedral_bundle::{BuildOptions, Encoding, Error, SecretKey};

use super::output::human_bytes;
use super::progress::Bar;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id, in full or as a unique prefix.
    #[arg(long)]
    run: String,
    /// Where to write the bundle: a directory (NAME.cath-bundle), or an
    /// archive when the name ends in .cath-bundle.tar.zst.
    #[arg(long)]
    output: PathBuf,
    /// The run store.
    #[arg(long, env = "CATHEDRAL_STORE", default_value = ".cathedral")]
    store: PathBuf,
    /// Encoding of event records.
    #[arg(long, value_parser = ["postcard", "cbor"], default_value = "postcard")]
    encoding: String,
    /// zstd level for blobs, 1 to 22; 0 stores every blob uncompressed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..=22))]
    compression_level: i32,
    /// Sign the bundle with this secret key file (from `cathedral keygen`).
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Replace an existing bundle at the output path (only a bundle: anything
    /// else there is refused and left untouched).
    #[arg(long)]
    force: bool,
    /// The bundle id to record (default: a random UUID); with --created-at, captures are reproducible.
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    bundle_id: Option<cathedral_bundle::Uuid>,
    /// The creation time to record, RFC 3339 UTC (default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    created_at: Option<cathedral_bundle::Timestamp>,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

fn parse_uuid(s: &str) -> Result<cathedral_bundle::Uuid, String> {
    cathedral_bundle::parse_uuid("bundle id", s).map_err(|e| e.to_string())
}

fn parse_time(s: &str) -> Result<cathedral_bundle::Timestamp, String> {
    cathedral_bundle::Timestamp::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let signing_key = args.sign_key.as_deref().map(SecretKey::load).transpose()?.map(std::sync::Arc::new);
    let store = RunStore::new(&args.store);
    let run_id = store.resolve(&args.run)?;
    let mut options = BuildOptions::default();
    if let Some(id) = args.bundle_id {
        options = options.bundle_id(id);
    }
    if let Some(at) = args.created_at.clone() {
        options = options.created_at(at);
    }
    let options = options
        .encoding(args.encoding.parse::<Encoding>()?)
        .compression_level((args.compression_level > 0).then_some(args.compression_level))
        .overwrite(args.force)
        .signing_key(signing_key.clone())
        .limits(args.limits.limits());
    let bar = Bar::new("bundling", quiet);
    if !quiet {
        bar.set_total(input_bytes(&store, &run_id));
    }
    let summary = bundle_run(&store, &run_id, &args.output, options, &|n| bar.add(n));
    bar.finish();
    let summary = summary?;
    if !quiet {
        eprintln!(
            "bundled run {run_id} into {}: {} events, {} blobs, {} (bundle {}), {}",
            summary.path.display(),
            summary.events,
            summary.blobs,
            human_bytes(summary.total_bytes),
            summary.bundle_id,
            match &signing_key {
                Some(k) => format!("signed by key {}", k.key_id()),
                None => "unsigned".to_string(),
            }
        );
    }
    Ok(Outcome::Ok)
}

/// The bytes a run's capture reads (its event lines and blobs), for the
/// progress bar; what cannot be listed counts as nothing (the capture
/// reports it).
fn input_bytes(store: &RunStore, run_id: &uuid::Uuid) -> u64 {
    let events = std::fs::metadata(store.run_dir(run_id).join(EVENTS_FILE)).map_or(0, |m| m.len());
    let run = store.open(run_id).ok();
    let blobs = run.as_ref().and_then(|r| r.blobs().ok()).unwrap_or_default();
    let sizes = run.and_then(|r| r.blob_sizes(&blobs).ok()).unwrap_or_default();
    events + sizes.iter().sum::<u64>()
}
