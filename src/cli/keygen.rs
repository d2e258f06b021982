//! `cathedral keygen`: a new Ed25519 signing key.

use std::path::PathBuf;

use cathedral_bundle::{Error, SecretKey};

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Secret key file to write (mode 0600); the public key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let key = SecretKey::generate()?;
    let public = key.write_files(&args.output, args.force)?;
    if !quiet {
        eprintln!("wrote secret key {} and public key {} (key id {})", args.output.display(), public.display(), key.key_id());
    }
    Ok(Outcome::Ok)
}
