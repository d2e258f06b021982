//! `cathedral diff A B`: how two runs differ (exit 1 when they do).

use std::fmt::Write as _;
use std::path::PathBuf;

use cathedral_bundle::replay::{Divergence, NodeRun, RunDiff, Side};
use cathedral_bundle::{escape_for_terminal, Error, ReplayBundle};
use serde_json::json;

use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The first bundle (directory or archive), typically the good run.
    a: PathBuf,
    /// The second bundle, typically the run to explain.
    b: PathBuf,
    #[command(flatten)]
    report: super::output::ReportArgs,
    #[command(flatten)]
    read: super::open::ReadArgs,
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let loader = args.read.loader()?;
    let a = match super::open::open(&loader, &args.a, "not compared", quiet)? {
        Ok(b) => b,
        Err(outcome) => return Ok(outcome),
    };
    let b = match super::open::open(&loader, &args.b, "not compared", quiet)? {
        Ok(b) => b,
        Err(outcome) => return Ok(outcome),
    };
    let diff = a.diff(&b)?;
    let mut out = args.report.open()?;
    if args.report.json {
        let value = json!({
            "a": { "path": args.a, "bundle": a.manifest().bundle_id, "run_id": a.metadata().run_id },
            "b": { "path": args.b, "bundle": b.manifest().bundle_id, "run_id": b.metadata().run_id },
            "diff": diff,
        });
        out.write_json(&value)?;
    } else {
        out.write_bytes(text(&args, &a, &b, &diff).as_bytes())?;
    }
    out.commit()?;
    Ok(if diff.equivalent { Outcome::Ok } else { Outcome::Invalid })
}

fn esc(s: &str) -> String {
    escape_for_terminal(s).into_owned()
}

fn text(args: &Args, a: &ReplayBundle, b: &ReplayBundle, d: &RunDiff) -> String {
    let mut t = String::new();
    for (label, path, bundle) in [("A", &args.a, a), ("B", &args.b, b)] {
        let m = bundle.metadata();
        let _ = writeln!(
            t,
            "{label}: {} run {} ({} {}), {}, {} events",
            esc(&path.display().to_string()),
            m.run_id,
            esc(&m.workflow_name),
            esc(&m.workflow_version),
            m.status.name(),
            bundle.event_count()
        );
    }
    for f in &d.metadata {
        let _ = writeln!(t, "metadata {}: A {}, B {}", f.field, esc(&f.a), esc(&f.b));
    }
    let _ = writeln!(t, "workflow source: {}", if d.workflow_source_equal { "same" } else { "differs" });
    if d.dag.only_in_a.is_empty() && d.dag.only_in_b.is_empty() && d.dag.changed.is_empty() {
        let _ = writeln!(t, "dag: same nodes and dependencies");
    }
    for (side, names) in [("A", &d.dag.only_in_a), ("B", &d.dag.only_in_b)] {
        if !names.is_empty() {
            let _ = writeln!(t, "dag: only in {side}: {}", names.iter().map(|n| esc(n)).collect::<Vec<_>>().join(", "));
        }
    }
    for f in &d.dag.changed {
        let _ = writeln!(t, "dag {}: A {}, B {}", esc(&f.field), esc(&f.a), esc(&f.b));
    }
    write_events(&mut t, d);
    for n in &d.nodes {
        let _ = writeln!(t, "node {}: A {}; B {}", esc(&n.node), outcome(n.a.as_ref()), outcome(n.b.as_ref()));
    }
    let bl = &d.blobs;
    let _ = writeln!(t, "blobs: {} in A, {} in B; {} only in A, {} only in B", bl.a_count, bl.b_count, bl.only_in_a, bl.only_in_b);
    let _ = writeln!(t, "{}", if d.equivalent { "equivalent: yes" } else { "equivalent: no, the runs differ" });
    t
}

fn outcome(n: Option<&NodeRun>) -> String {
    let Some(n) = n else { return "no such node".into() };
    let mut s = n.status.name().to_string();
    if let Some(h) = n.output_hash {
        let _ = write!(s, ", output {h}");
    }
    if let Some(e) = &n.error {
        let _ = write!(s, ", error: {}", esc(e));
    }
    s
}

fn write_events(t: &mut String, d: &RunDiff) {
    let e = &d.events;
    let _ = writeln!(
        t,
        "events: {} in A, {} in B; {} aligned and equal, {} with different payloads, {} only in A, {} only in B",
        e.a_events, e.b_events, e.matched, e.payload_differs, e.only_in_a, e.only_in_b
    );
    if e.window_exceeded {
        let _ = writeln!(t, "  (more than 2^20 events waited for a counterpart; some were counted as on one side only)");
    }
    if let Some(first) = &e.first_divergence {
        write_divergence(t, first);
    }
}

fn write_divergence(t: &mut String, d: &Divergence) {
    let node = d.key.node.as_deref().map_or_else(|| "run".to_string(), esc);
    let _ = writeln!(t, "first divergence: {node} {} #{} ({})", d.key.kind, d.key.occurrence, d.what.replace('_', " "));
    for (label, side) in [("A", &d.a), ("B", &d.b)] {
        match side {
            None => {
                let _ = writeln!(t, "  {label}: no such event");
            }
            Some(s) => write_side(t, label, s),
        }
    }
}

fn write_side(t: &mut String, label: &str, s: &Side) {
    let payload = esc(&cathedral_bundle::clip(&s.payload.to_string(), 200));
    let _ = writeln!(t, "  {label}: #{} event {}: {payload}", s.position, s.event_id);
    if !s.context.is_empty() {
        let links = s.context.iter().map(|l| {
            let node = l.node.as_deref().map(|n| format!(" {}", esc(n))).unwrap_or_default();
            format!("#{} {}{node}", l.position, l.kind)
        });
        let _ = writeln!(t, "     after {}", links.collect::<Vec<_>>().join(" <- "));
    }
}
