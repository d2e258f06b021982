//! The remote commands: `push`, `pull`, `ls`, `rm`, `gc` (schemas/REMOTE.md).

use std::path::PathBuf;
use std::time::Duration;

use cathedral_bundle::remote::Remote;
use cathedral_bundle::{escape_for_terminal, BundleLoader, Error, Uuid};

use super::output::{human_bytes, Output};
use super::progress::Bar;
use super::Outcome;

fn parse_uuid(s: &str) -> Result<Uuid, String> {
    cathedral_bundle::parse_uuid("bundle id", s).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The bundle to upload: a directory or a .cath-bundle.tar.zst archive. It is verified first.
    #[arg(long)]
    bundle: PathBuf,
    /// The remote: s3://bucket/prefix (credentials and endpoint from AWS_* variables) or file:///path.
    #[arg(long)]
    remote: String,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    trust: super::trust::TrustArgs,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The remote.
    #[arg(long)]
    remote: String,
    /// The bundle id.
    #[arg(long, value_parser = parse_uuid)]
    bundle: Uuid,
    /// The bundle directory to create.
    #[arg(long)]
    output: PathBuf,
    /// Replace an existing bundle at the output (only a directory that proves to be a bundle).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    trust: super::trust::TrustArgs,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The remote.
    #[arg(long)]
    remote: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The remote.
    #[arg(long)]
    remote: String,
    /// The bundle id.
    #[arg(long, value_parser = parse_uuid)]
    bundle: Uuid,
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// The remote.
    #[arg(long)]
    remote: String,
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Treat locks not refreshed for this many seconds as left by dead processes.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    stale_lock_after: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn print(text: &str) -> Result<(), Error> {
    let mut out = Output::open(None, false)?;
    out.write_bytes(text.as_bytes())?;
    out.commit()
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Error> {
    let mut out = Output::open(None, false)?;
    out.write_json(value)?;
    out.commit()
}

pub fn push(args: PushArgs, quiet: bool) -> Result<Outcome, Error> {
    let remote = Remote::open(&args.remote)?;
    let loader = args.trust.apply(BundleLoader::new().limits(args.limits.limits()))?;
    let bar = Bar::new("pushing", quiet);
    let result = remote.push(&loader, &args.bundle, &|n| bar.add(n));
    bar.finish();
    let summary = match result {
        Ok(s) => s,
        Err(e) => return super::trust::refused(e, "not pushed"),
    };
    if args.json {
        print_json(&summary)?;
    } else if !quiet {
        let what = if summary.already_present {
            "already in the remote; nothing uploaded".to_string()
        } else {
            format!(
                "{} blobs uploaded, {} already there, {} sent",
                summary.blobs_uploaded,
                summary.blobs_present,
                human_bytes(summary.bytes_uploaded)
            )
        };
        eprintln!("pushed bundle {} to {}: {what}", summary.bundle_id, escape_for_terminal(remote.url()));
    }
    Ok(Outcome::Ok)
}

pub fn pull(args: PullArgs, quiet: bool) -> Result<Outcome, Error> {
    let remote = Remote::open(&args.remote)?;
    let loader = args.trust.apply(BundleLoader::new().limits(args.limits.limits()))?;
    let bar = Bar::new("pulling", quiet);
    let result = remote.pull(&loader, &args.bundle, &args.output, args.force, &|n| bar.add(n));
    bar.finish();
    match result {
        Ok(_) => {
            if !quiet {
                eprintln!("pulled bundle {} into {}, verified", args.bundle, escape_for_terminal(&args.output.display().to_string()));
            }
            Ok(Outcome::Ok)
        }
        Err(e) => super::trust::refused(e, "not pulled"),
    }
}

pub fn ls(args: LsArgs) -> Result<Outcome, Error> {
    let entries = Remote::open(&args.remote)?.list()?;
    if args.json {
        return print_json(&entries).map(|()| Outcome::Ok);
    }
    let mut text = String::from(
        "BUNDLE                                RUN                                   WORKFLOW  STATUS  CREATED  SIZE  SIGNER\n",
    );
    for e in &entries {
        text.push_str(&format!(
            "{}  {}  {} {}  {}  {}  {}  {}\n",
            e.bundle_id,
            e.run_id,
            escape_for_terminal(&e.workflow),
            escape_for_terminal(&e.workflow_version),
            e.status,
            e.created_at,
            human_bytes(e.size),
            e.signer.as_deref().unwrap_or("unsigned")
        ));
    }
    print(&text).map(|()| Outcome::Ok)
}

pub fn rm(args: RmArgs, quiet: bool) -> Result<Outcome, Error> {
    let remote = Remote::open(&args.remote)?;
    let keys = remote.remove(&args.bundle, args.dry_run)?;
    let verb = if args.dry_run { "would remove" } else { "removed" };
    let mut text = String::new();
    for key in &keys {
        text.push_str(&format!("{verb} {}\n", escape_for_terminal(key)));
    }
    if !quiet || args.dry_run {
        print(&text)?;
    }
    Ok(Outcome::Ok)
}

pub fn gc(args: GcArgs, quiet: bool) -> Result<Outcome, Error> {
    let remote = Remote::open(&args.remote)?.stale_after(Duration::from_secs(args.stale_lock_after));
    let summary = remote.gc(args.dry_run)?;
    if args.json {
        print_json(&summary)?;
    } else if !quiet || args.dry_run {
        let verb = if args.dry_run { "would remove" } else { "removed" };
        print(&format!(
            "{} bundles; {} blobs kept; {verb} {} unreferenced blobs ({}), {} objects of uncommitted pushes, {} stale locks\n",
            summary.bundles,
            summary.blobs_kept,
            summary.blobs_removed,
            human_bytes(summary.bytes_removed),
            summary.orphans_removed,
            summary.stale_locks_removed
        ))?;
    }
    Ok(Outcome::Ok)
}
