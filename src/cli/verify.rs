//! `cathedral verify-bundle`.

use std::path::PathBuf;

use cathedral_bundle::{escape_for_terminal, BundleLoader, Error, SignatureStatus, VerifyMode, VerifyReport};
use serde::Serialize;

use super::output::{human_bytes, Output};
use super::progress::Bar;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle: a directory or a .cath-bundle.tar.zst archive (verified in one streaming pass, always fully).
    #[arg(long)]
    bundle: PathBuf,
    /// Print one JSON report (schemas/verify-report.schema.json).
    #[arg(long)]
    json: bool,
    /// Check structure, completeness and sizes only; hash nothing.
    #[arg(long)]
    fast: bool,
    #[command(flatten)]
    trust: super::trust::TrustArgs,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

/// Verifies `REMOTE/<bundle-id>`: every object downloaded once and checked.
fn verify_remote(url: &str, loader: &BundleLoader<'_>, bar: &Bar) -> Result<VerifyReport, Error> {
    let (remote, id) = cathedral_bundle::remote::Remote::open_bundle_url(url)?;
    remote.verify(loader, &id, &|n| bar.add(n))
}

/// The stable JSON report.
#[derive(Serialize)]
struct JsonReport<'a> {
    report_version: u32,
    valid: bool,
    /// The signature passes the trust options given.
    trusted: bool,
    #[serde(flatten)]
    report: &'a VerifyReport,
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let mode = if args.fast { VerifyMode::Fast } else { VerifyMode::Full };
    let bar = Bar::new("verifying", quiet);
    let loader = args.trust.apply(BundleLoader::new().mode(mode).limits(args.limits.limits()))?.progress(&bar);
    let report = match args.bundle.to_str().filter(|b| cathedral_bundle::remote::Remote::is_remote(b)) {
        Some(url) => verify_remote(url, &loader, &bar),
        None => loader.verify(&args.bundle),
    };
    bar.finish();
    let report = report?;
    let mut out = Output::open(None, false)?;
    if args.json {
        let json =
            JsonReport { report_version: 1, valid: report.is_valid(), trusted: loader.signature_acceptable(&report), report: &report };
        out.write_json(&json)?;
    } else {
        out.write_bytes(human(&report, loader.signature_acceptable(&report), quiet).as_bytes())?;
    }
    out.commit()?;
    Ok(if !report.is_valid() {
        Outcome::Invalid
    } else if !loader.signature_acceptable(&report) {
        Outcome::Untrusted
    } else {
        Outcome::Ok
    })
}

/// The human report. Paths and messages come from the bundle and are
/// escaped. With `quiet`, only failures are printed.
fn human(report: &VerifyReport, signature_ok: bool, quiet: bool) -> String {
    let s = &report.stats;
    let mut head = format!("bundle   {}\n", escape_for_terminal(&report.bundle));
    head += match report.mode {
        VerifyMode::Full => "mode     full: every file and blob hashed, every event decoded\n",
        VerifyMode::Fast => "mode     fast: structure, completeness and sizes only; contents were NOT hashed\n",
        VerifyMode::Lazy => {
            "mode     lazy: manifest, signature, documents and blob list hashed; the log and the index are checked as they are read\n"
        }
    };
    head += &format!(
        "checked  {} files, {} blobs, {} events, {} hashed of {}\n",
        s.files,
        s.blobs,
        s.events,
        human_bytes(s.bytes_hashed),
        human_bytes(s.bytes_total)
    );
    head += &format!("signature {}\n", escape_for_terminal(&report.signature.to_string()));
    let mut text = String::new();
    if report.is_valid() && !signature_ok {
        text += match report.signature {
            SignatureStatus::Unsigned => "result   REFUSED: the bundle is intact but unsigned, and a signature is required\n",
            SignatureStatus::Untrusted { .. } => {
                "result   REFUSED: the bundle is intact, but its signer is not trusted (give --trusted-key or --trust-dir)\n"
            }
            _ => "result   REFUSED: the bundle's contents are intact, but its signature is not valid\n",
        };
    } else if report.is_valid() {
        if quiet {
            return String::new();
        }
        text += "result   valid\n";
    } else {
        text += &format!("findings ({})\n", report.findings.len());
        for f in &report.findings {
            text += &format!("  {}\n", escape_for_terminal(&f.to_string()));
        }
        text += &format!("result   INVALID: {} finding(s)\n", report.findings.len() as u64 + report.findings_omitted);
    }
    if quiet {
        return format!("bundle   {}\n{text}", escape_for_terminal(&report.bundle));
    }
    head + &text
}
