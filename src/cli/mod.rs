//! Argument parsing, dispatch, and the one place where outcomes become exit codes.

mod bundle;
mod completions;
mod diff;
mod event_lines;
mod explain;
mod import;
mod inspect;
mod inspect_remote;
mod keygen;
mod limits;
mod open;
mod output;
mod pack;
mod progress;
mod remote;
mod replay;
mod trust;
mod unpack;
mod verify;

use std::process::ExitCode;

use cathedral_bundle::Error;
use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success, or the bundle is valid
  1  the bundle is invalid (verification findings), or the run's data is invalid
  2  usage error (bad arguments, unusable key file, output exists or is not ours to replace)
  3  input not found, I/O error reading or writing, or a system failure (zstd, random source)
  4  bad signature, or signed by an untrusted key (or unsigned, with --require-signature)";

const KEYGEN_EXIT_CODES: &str = "\
Exit codes:
  0  the key pair was written
  2  usage error (bad arguments, a key file already exists)
  3  I/O error writing the key files, or the random source failed";

const COMPLETIONS_EXIT_CODES: &str = "\
Exit codes:
  0  the completions were written
  2  usage error (unknown shell)
  3  I/O error writing them";

/// Capture, verify and inspect CATHEDRAL replay bundles.
#[derive(Debug, Parser)]
#[command(name = "cathedral", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture a run from a run store into a bundle.
    #[command(after_help = EXIT_CODES)]
    Bundle(bundle::Args),
    /// Verify a bundle: every file, every blob, every byte.
    #[command(name = "verify-bundle", after_help = EXIT_CODES)]
    VerifyBundle(verify::Args),
    /// Show what a bundle holds: summary, events, one event, a blob, the snapshot.
    #[command(after_help = EXIT_CODES)]
    Inspect(inspect::Args),
    /// Pack a bundle directory into one .cath-bundle.tar.zst archive, verified as it is written.
    #[command(after_help = EXIT_CODES)]
    Pack(pack::Args),
    /// Unpack a .cath-bundle.tar.zst archive into a bundle directory, verified before it is placed.
    #[command(after_help = EXIT_CODES)]
    Unpack(unpack::Args),
    /// Recreate the run a bundle (directory or archive) holds in a run store, after verifying it.
    #[command(after_help = EXIT_CODES)]
    Import(import::Args),
    /// Replay a run: fold its events into its state and report every rule it breaks (exit 1 when it breaks one).
    #[command(after_help = EXIT_CODES)]
    Replay(replay::Args),
    /// Explain a run: its outcome, each failed node with its error, tool calls and causal chain, what did not run.
    #[command(after_help = EXIT_CODES)]
    Explain(explain::Args),
    /// Compare two runs: metadata, DAG, events aligned by node, kind and occurrence, node outcomes, blobs (exit 1 when they differ).
    #[command(after_help = EXIT_CODES)]
    Diff(diff::Args),
    /// Upload a verified bundle to object storage; blobs the remote holds are not sent again.
    #[command(after_help = EXIT_CODES)]
    Push(remote::PushArgs),
    /// Download a bundle from object storage, verified before it is placed.
    #[command(after_help = EXIT_CODES)]
    Pull(remote::PullArgs),
    /// List the bundles in a remote.
    #[command(after_help = EXIT_CODES)]
    Ls(remote::LsArgs),
    /// Remove a bundle from a remote (its blobs stay until gc).
    #[command(after_help = EXIT_CODES)]
    Rm(remote::RmArgs),
    /// Remove blobs no bundle references, and what killed pushes left, from a remote.
    #[command(after_help = EXIT_CODES)]
    Gc(remote::GcArgs),
    /// Create an Ed25519 signing key pair.
    #[command(after_help = KEYGEN_EXIT_CODES)]
    Keygen(keygen::Args),
    /// Print shell completions.
    #[command(after_help = COMPLETIONS_EXIT_CODES)]
    Completions(completions::Args),
}

/// How a command ended, short of an error.
pub enum Outcome {
    /// Success, or a valid bundle.
    Ok,
    /// The bundle is invalid.
    Invalid,
    /// The bundle is intact, but its signature is not acceptable.
    Untrusted,
}

/// Exit code for an error: the one place where errors become codes.
fn exit_code(error: &Error) -> u8 {
    match error {
        Error::NotFound { .. }
        | Error::Io { .. }
        | Error::Output { .. }
        | Error::Changed { .. }
        | Error::Compression { .. }
        | Error::Random { .. }
        | Error::Remote { .. } => 3,
        Error::InvalidInput { .. }
        | Error::Exists { .. }
        | Error::NotReplaceable { .. }
        | Error::InvalidPath { .. }
        | Error::InvalidKey { .. } => 2,
        _ => 1,
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors exit 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Bundle(args) => bundle::run(args, cli.quiet),
        Command::VerifyBundle(args) => verify::run(args, cli.quiet),
        Command::Inspect(args) => match args.remote() {
            Some(url) => inspect_remote::run(&args, url),
            None => inspect::run(args, cli.quiet),
        },
        Command::Pack(args) => pack::run(args, cli.quiet),
        Command::Unpack(args) => unpack::run(args, cli.quiet),
        Command::Import(args) => import::run(args, cli.quiet),
        Command::Replay(args) => replay::run(args, cli.quiet),
        Command::Explain(args) => explain::run(args, cli.quiet),
        Command::Diff(args) => diff::run(args, cli.quiet),
        Command::Push(args) => remote::push(args, cli.quiet),
        Command::Pull(args) => remote::pull(args, cli.quiet),
        Command::Ls(args) => remote::ls(args),
        Command::Rm(args) => remote::rm(args, cli.quiet),
        Command::Gc(args) => remote::gc(args, cli.quiet),
        Command::Keygen(args) => keygen::run(args, cli.quiet),
        Command::Completions(args) => completions::run(args),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid) => ExitCode::from(1),
        Ok(Outcome::Untrusted) => ExitCode::from(4),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cathedral: error: {}", cathedral_bundle::escape_for_terminal(&e.to_string()));
            ExitCode::from(exit_code(&e))
        }
    }
}
