//! `cathedral explain`: why the run ended as it did, on one screen.

use std::fmt::Write as _;
use std::path::PathBuf;

use cathedral_bundle::replay::{EventNote, Explanation, Failure};
use cathedral_bundle::{escape_for_terminal, Error, ReplayBundle};
use serde_json::json;

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle: a directory or a .cath-bundle.tar.zst archive.
    #[arg(long)]
    bundle: PathBuf,
    #[command(flatten)]
    report: super::output::ReportArgs,
    #[command(flatten)]
    read: super::open::ReadArgs,
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let loader = args.read.loader()?;
    let bundle = match super::open::open(&loader, &args.bundle, "not explained", quiet)? {
        Ok(b) => b,
        Err(outcome) => return Ok(outcome),
    };
    let explanation = bundle.explain()?;
    let mut out = args.report.open()?;
    if args.report.json {
        let m = bundle.metadata();
        let value = json!({
            "bundle": bundle.manifest().bundle_id,
            "run_id": m.run_id,
            "workflow": { "name": m.workflow_name, "version": m.workflow_version },
            "explanation": explanation,
        });
        out.write_json(&value)?;
    } else {
        out.write_bytes(text(&bundle, &explanation).as_bytes())?;
    }
    out.commit()?;
    Ok(Outcome::Ok)
}

fn esc(s: &str) -> String {
    escape_for_terminal(s).into_owned()
}

fn note(e: &EventNote) -> String {
    format!("#{} {} (time {}): {}", e.position, e.kind, e.logical_time, esc(&cathedral_bundle::clip(&e.payload.to_string(), 200)))
}

fn text(bundle: &ReplayBundle, x: &Explanation) -> String {
    let m = bundle.metadata();
    let mut t = String::new();
    let ended =
        x.ended_by.as_ref().map_or_else(|| "no terminal run event".to_string(), |e| format!("{} at position {}", e.kind, e.position));
    let _ = writeln!(
        t,
        "run {} ({} {}): {}, {ended}",
        m.run_id,
        esc(&m.workflow_name),
        esc(&m.workflow_version),
        m.status.name().to_uppercase()
    );
    if x.coherent {
        let _ = writeln!(t, "replay: coherent");
    } else {
        let _ = writeln!(t, "replay: {} violation(s); `cathedral replay` lists them", x.violations);
    }
    for f in &x.failures {
        write_failure(&mut t, f);
    }
    if !x.more_failures.is_empty() {
        let names = x.more_failures.iter().map(|n| esc(n)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(t, "\n{} more failed node(s): {names}", x.more_failures.len());
    }
    if !x.run_errors.is_empty() {
        let _ = writeln!(t, "\nrun-level errors:");
        for e in &x.run_errors {
            let _ = writeln!(t, "  {}", note(e));
        }
    }
    let _ = writeln!(t, "\nnodes:");
    let width = x.nodes.iter().map(|n| esc(&n.name).chars().count()).max().unwrap_or(0);
    for n in &x.nodes {
        let mut line = format!("  {:width$}  {:9}", esc(&n.name), n.status.name());
        if let Some(h) = n.output_hash {
            let _ = write!(line, "  output {h}");
        }
        if let Some(e) = &n.error {
            let _ = write!(line, "  error: {}", esc(e));
        }
        let _ = writeln!(t, "{}", line.trim_end());
    }
    t
}

fn write_failure(t: &mut String, f: &Failure) {
    let at = f.failed_at.as_ref().map_or_else(String::new, |e| format!(" at position {} (event {})", e.position, e.event_id));
    let _ = writeln!(t, "\nfailed: {}{at}", esc(&f.node));
    let _ = writeln!(t, "  error: {}", f.error.as_deref().map_or_else(|| "(none recorded)".to_string(), esc));
    if !f.calls.is_empty() {
        let more = if f.calls_omitted > 0 { format!(" (the last {}; {} before)", f.calls.len(), f.calls_omitted) } else { String::new() };
        let _ = writeln!(t, "  calls{more}:");
        for c in &f.calls {
            let _ = writeln!(t, "    {}", note(c));
        }
    }
    if !f.chain.is_empty() {
        let start = if f.chain_truncated { "... -> " } else { "" };
        let links = f.chain.iter().map(|l| {
            let node = l.node.as_deref().map(|n| format!(" {}", esc(n))).unwrap_or_default();
            format!("#{} {}{node}", l.position, l.kind)
        });
        let _ = writeln!(t, "  how it got there: {start}{}", links.collect::<Vec<_>>().join(" -> "));
    }
    if !f.blocked.is_empty() {
        let list = f.blocked.iter().map(|b| format!("{} ({})", esc(&b.node), b.status.name())).collect::<Vec<_>>().join(", ");
        let _ = writeln!(t, "  not run because of it: {list}");
    }
}
