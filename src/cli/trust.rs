//! Trust options shared by the commands that check signatures.

use std::path::PathBuf;

use cathedral_bundle::{BundleLoader, Error, PublicKey};

/// What to say after a refused signature.
pub const HINT: &str = " (trust the signer with --trusted-key or --trust-dir)";

#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// A public key file (from keygen) whose signatures are trusted. Repeatable.
    #[arg(long, value_name = "PUBFILE")]
    trusted_key: Vec<PathBuf>,
    /// A directory whose *.pub files are all trusted.
    #[arg(long, value_name = "DIR")]
    trust_dir: Option<PathBuf>,
    /// Fail on unsigned bundles too.
    #[arg(long)]
    require_signature: bool,
}

impl TrustArgs {
    /// Applies these options to a loader.
    pub fn apply<'p>(&self, loader: BundleLoader<'p>) -> Result<BundleLoader<'p>, Error> {
        let mut keys = Vec::new();
        for path in &self.trusted_key {
            keys.push(PublicKey::load(path)?);
        }
        if let Some(dir) = &self.trust_dir {
            keys.extend(PublicKey::load_dir(dir)?);
        }
        Ok(loader.trusted_keys(keys).require_signature(self.require_signature))
    }
}
