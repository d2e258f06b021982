//! `cathedral replay`: fold the event log into the run's state and report
//! every rule the run breaks (schemas/REPLAY.md).

use std::fmt::Write as _;
use std::path::PathBuf;

use cathedral_bundle::replay::{ReplayOptions, ReplayReport, SnapshotCheck, Stop, Violation};
use cathedral_bundle::{escape_for_terminal, Error, ReplayBundle};
use serde_json::json;

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle: a directory or a .cath-bundle.tar.zst archive.
    #[arg(long)]
    bundle: PathBuf,
    /// Absent state hashes are violations, not only counted.
    #[arg(long)]
    strict: bool,
    /// Start from the bundle's snapshot instead of the first event.
    #[arg(long)]
    from_snapshot: bool,
    /// Stop after the events whose logical time is at most T and print the state then (snapshot JSON form).
    #[arg(long, value_name = "T", conflicts_with = "until_position")]
    until_time: Option<u64>,
    /// Stop after N events and print the state then (snapshot JSON form).
    #[arg(long, value_name = "N")]
    until_position: Option<u64>,
    /// Show at most this many violations in full (all are counted).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_violations: usize,
    #[command(flatten)]
    report: super::output::ReportArgs,
    #[command(flatten)]
    read: super::open::ReadArgs,
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let loader = args.read.loader()?;
    let bundle = match super::open::open(&loader, &args.bundle, "not replayed", quiet)? {
        Ok(b) => b,
        Err(outcome) => return Ok(outcome),
    };
    let stop = match (args.until_time, args.until_position) {
        (Some(t), _) => Some(Stop::Time(t)),
        (None, Some(n)) => Some(Stop::Position(n)),
        (None, None) => None,
    };
    let options =
        ReplayOptions::default().strict(args.strict).from_snapshot(args.from_snapshot).stop(stop).max_violations(args.max_violations);
    let report = bundle.replay_with(&options)?;
    let mut out = args.report.open()?;
    if args.report.json {
        out.write_json(&report_json(&bundle, &report))?;
    } else if stop.is_some() {
        out.write_json(&report.state.to_snapshot())?;
        for v in &report.violations {
            eprintln!("cathedral: {}", escape_for_terminal(&v.to_string()));
        }
    } else {
        out.write_bytes(report_text(&bundle, &report).as_bytes())?;
    }
    out.commit()?;
    Ok(if report.is_coherent() { Outcome::Ok } else { Outcome::Invalid })
}

/// The report's JSON form: the run it is about, then the report.
pub fn report_json(bundle: &ReplayBundle, report: &ReplayReport) -> serde_json::Value {
    let m = bundle.metadata();
    json!({
        "bundle": bundle.manifest().bundle_id,
        "run_id": m.run_id,
        "workflow": { "name": m.workflow_name, "version": m.workflow_version },
        "metadata_status": m.status,
        "coherent": report.is_coherent(),
        "report": report,
    })
}

fn report_text(bundle: &ReplayBundle, report: &ReplayReport) -> String {
    let m = bundle.metadata();
    let mut t = String::new();
    let e = |s: &str| escape_for_terminal(s).into_owned();
    let _ =
        writeln!(t, "run:         {} ({} {}), metadata status {}", m.run_id, e(&m.workflow_name), e(&m.workflow_version), m.status.name());
    let from = if report.from_position == 0 {
        "the first event".to_string()
    } else {
        format!("the snapshot at position {}", report.from_position)
    };
    let _ = writeln!(t, "replayed:    {} events from {from}; the run is {}", report.events_replayed, phase_name(report));
    let _ = writeln!(t, "nodes:");
    let width = report.state.nodes.iter().map(|n| e(&n.name).chars().count()).max().unwrap_or(0);
    for n in &report.state.nodes {
        let mut line = format!("  {:width$}  {:9}", e(&n.name), n.status.name());
        if let Some(h) = n.output_hash {
            let _ = write!(line, "  output {h}");
        }
        if let Some(err) = &n.error {
            let _ = write!(line, "  error: {}", e(err));
        }
        let _ = writeln!(t, "{}", line.trim_end());
    }
    let h = &report.state_hashes;
    let _ = writeln!(
        t,
        "state chain: {} of {} events carry their hashes ({} without prior, {} without post)",
        h.complete, report.events_replayed, h.prior_absent, h.post_absent
    );
    let snapshot = match report.snapshot {
        SnapshotCheck::Absent => "none in the bundle".to_string(),
        SnapshotCheck::Matches => "matches the events before its position".to_string(),
        SnapshotCheck::Differs => "differs from the events before its position".to_string(),
        SnapshotCheck::NotReached => "not reached".to_string(),
        SnapshotCheck::StartedFrom => format!("replay started from it (position {})", report.from_position),
    };
    let _ = writeln!(t, "snapshot:    {snapshot}");
    write_violations(&mut t, report);
    t
}

fn phase_name(report: &ReplayReport) -> &'static str {
    use cathedral_bundle::replay::RunPhase;
    match report.state.phase {
        RunPhase::NotCreated => "not created",
        RunPhase::Created => "created, not started",
        RunPhase::Started => "started, not ended",
        RunPhase::Completed => "completed",
        RunPhase::Failed => "failed",
    }
}

fn write_violations(t: &mut String, report: &ReplayReport) {
    if report.is_coherent() {
        let _ = writeln!(t, "coherent:    yes, no rule broken");
        return;
    }
    let by_rule = report.violations_by_rule.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(t, "coherent:    no, {} violation(s): {by_rule}", report.violations_total);
    for v in &report.violations {
        write_violation(t, v);
    }
    let omitted = report.violations_total - report.violations.len() as u64;
    if omitted > 0 {
        let _ = writeln!(t, "  ... and {omitted} more (--max-violations)");
    }
}

/// One violation, then its event and causal chain, nearest cause first.
pub fn write_violation(t: &mut String, v: &Violation) {
    let _ = writeln!(t, "  {}", escape_for_terminal(&v.to_string()));
    if let Some(id) = v.event_id {
        let mut chain = format!("      event {id}");
        if !v.chain.is_empty() {
            let links = v.chain.iter().map(|l| {
                let node = l.node.as_deref().map(|n| format!(" {}", escape_for_terminal(n))).unwrap_or_default();
                format!("#{} {}{node}", l.position, l.kind)
            });
            let _ = write!(chain, ", caused by {}", links.collect::<Vec<_>>().join(" <- "));
            if v.chain_truncated {
                chain.push_str(" <- ...");
            }
        }
        let _ = writeln!(t, "{chain}");
    }
}
