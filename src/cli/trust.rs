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
        let (keys, require) = self.keys()?;
        Ok(loader.trusted_keys(keys).require_signature(require))
    }

    /// The trusted keys, and whether a signature is required.
    pub fn keys(&self) -> Result<(Vec<PublicKey>, bool), Error> {
        let mut keys = Vec::new();
        for path in &self.trusted_key {
            keys.push(PublicKey::load(path)?);
        }
        if let Some(dir) = &self.trust_dir {
            keys.extend(PublicKey::load_dir(dir)?);
        }
        Ok((keys, self.require_signature))
    }
}

/// The outcome of a command refused by verification: findings are printed
/// (escaped) and exit 1; an unacceptable signature exits 4.
pub fn refused(error: cathedral_bundle::LoadError, refusing: &str) -> Result<super::Outcome, Error> {
    use cathedral_bundle::{escape_for_terminal, LoadError};
    match error {
        LoadError::Invalid { report, .. } => {
            eprintln!("cathedral: {refusing}: the bundle is invalid. Findings:");
            for f in &report.findings {
                eprintln!("  {}", escape_for_terminal(&f.to_string()));
            }
            if report.findings_omitted > 0 {
                eprintln!("  ... and {} more", report.findings_omitted);
            }
            Ok(super::Outcome::Invalid)
        }
        LoadError::Signature { report, .. } => {
            let status = escape_for_terminal(&report.signature.to_string()).into_owned();
            eprintln!("cathedral: {refusing}: signature {status}{HINT}");
            Ok(super::Outcome::Untrusted)
        }
        LoadError::Error(e) => Err(e),
        other => Err(Error::InvalidInput { what: "bundle", detail: other.to_string() }),
    }
}
