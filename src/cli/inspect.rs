//! `cathedral inspect`: summary, events, one event, a blob, the snapshot.

use std::path::PathBuf;

use cathedral_bundle::format::Compression;
use cathedral_bundle::{escape_for_terminal, BundleLoader, Digest, Error, EventKind, LoadError, ReplayBundle, Uuid, VerifyMode};
use serde_json::json;

use super::output::{human_bytes, Output};
use super::Outcome;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").args(["events", "event", "time", "blob", "snapshot"]))]
pub struct Args {
    /// The bundle directory.
    #[arg(long)]
    bundle: PathBuf,
    /// Print events as JSON lines (the run store's event form).
    #[arg(long)]
    events: bool,
    /// With --events: start at this position (0-based).
    #[arg(long, requires = "events", default_value_t = 0)]
    from: u32,
    /// With --events: print at most this many events.
    #[arg(long, requires = "events")]
    limit: Option<u64>,
    /// With --events: only events of this kind.
    #[arg(long, requires = "events", value_parser = parse_kind)]
    kind: Option<EventKind>,
    /// With --events: only events of this node id.
    #[arg(long, requires = "events", value_parser = parse_uuid)]
    node: Option<Uuid>,
    /// Print the event with this id, found through the index.
    #[arg(long, value_name = "ID", value_parser = parse_uuid)]
    event: Option<Uuid>,
    /// Print the first event at this logical time, found through the index.
    #[arg(long, value_name = "T")]
    time: Option<u64>,
    /// Write the original content of the blob with this hash, checked against it.
    #[arg(long, value_name = "HASH", value_parser = parse_hash)]
    blob: Option<Digest>,
    /// Write the snapshot as JSON.
    #[arg(long)]
    snapshot: bool,
    /// Write to this file instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long, requires = "output")]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long, conflicts_with_all = ["events", "event", "time", "blob", "snapshot"])]
    json: bool,
    /// Check structure and sizes only before reading; do not hash the bundle first.
    #[arg(long)]
    fast: bool,
    #[command(flatten)]
    trust: super::trust::TrustArgs,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    s.parse().map_err(|_| format!("unknown kind {s:?}; one of: {}", EventKind::ALL.map(|k| k.name()).join(", ")))
}

fn parse_uuid(s: &str) -> Result<Uuid, String> {
    cathedral_bundle::parse_uuid("id", s).map_err(|e| e.to_string())
}

fn parse_hash(s: &str) -> Result<Digest, String> {
    Digest::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: Args, _quiet: bool) -> Result<Outcome, Error> {
    let mode = if args.fast { VerifyMode::Fast } else { VerifyMode::Full };
    // The same signature policy as verify-bundle: a bad or untrusted signature is never silent.
    let loader = args.trust.apply(BundleLoader::new().mode(mode).limits(args.limits.limits()))?;
    let bundle = match loader.load(&args.bundle) {
        Ok(b) => b,
        Err(LoadError::Invalid { report, .. }) => {
            eprintln!("cathedral: the bundle is invalid; run verify-bundle for details. Findings:");
            for f in &report.findings {
                eprintln!("  {}", escape_for_terminal(&f.to_string()));
            }
            return Ok(Outcome::Invalid);
        }
        Err(LoadError::Signature { report, .. }) => {
            let status = escape_for_terminal(&report.signature.to_string()).into_owned();
            eprintln!("cathedral: refusing to show the bundle: signature {status}{}", super::trust::HINT);
            return Ok(Outcome::Untrusted);
        }
        Err(LoadError::Error(e)) => return Err(e),
        Err(e) => return Err(Error::InvalidInput { what: "bundle", detail: e.to_string() }),
    };
    let mut out = Output::open(args.output.as_deref(), args.force)?;
    if args.events {
        let mut printed = 0u64;
        for event in bundle.events_from(args.from) {
            if args.limit.is_some_and(|l| printed >= l) {
                break;
            }
            let event = event?;
            if args.kind.is_some_and(|k| k != event.kind) || args.node.is_some_and(|n| n != event.node_id) {
                continue;
            }
            let mut line = event.to_json_line();
            line.push('\n');
            out.write_bytes(line.as_bytes())?;
            printed += 1;
        }
    } else if let Some(id) = args.event {
        let (_, event) = bundle.event_by_id(&id)?.ok_or_else(|| Error::NotFound { file: format!("event {id}") })?;
        out.write_bytes(format!("{}\n", event.to_json_line()).as_bytes())?;
    } else if let Some(time) = args.time {
        let (_, event) = bundle.event_at_time(time)?.ok_or_else(|| Error::NotFound { file: format!("event at logical time {time}") })?;
        out.write_bytes(format!("{}\n", event.to_json_line()).as_bytes())?;
    } else if let Some(hash) = args.blob {
        bundle.read_blob(&hash, &mut out)?;
    } else if args.snapshot {
        let snapshot =
            bundle.snapshot().ok_or_else(|| Error::NotFound { file: args.bundle.join("snapshot.cath-snap").display().to_string() })?;
        let mut text = serde_json::to_vec_pretty(snapshot).expect("snapshot serialises");
        text.push(b'\n');
        out.write_bytes(&text)?;
    } else if args.json {
        let mut text = serde_json::to_vec_pretty(&summary_json(&bundle)?).expect("summary serialises");
        text.push(b'\n');
        out.write_bytes(&text)?;
    } else {
        out.write_bytes(summary_text(&bundle)?.as_bytes())?;
    }
    out.commit()?;
    Ok(Outcome::Ok)
}

struct BlobTotals {
    count: u64,
    zstd: u64,
    stored: u64,
    content: u64,
}

fn blob_totals(bundle: &ReplayBundle) -> Result<BlobTotals, Error> {
    let mut t = BlobTotals { count: 0, zstd: 0, stored: 0, content: 0 };
    for record in bundle.blob_records() {
        let record = record?;
        t.count += 1;
        t.zstd += u64::from(record.header.compression == Compression::Zstd);
        t.stored += record.stored_size;
        t.content += record.header.size;
    }
    Ok(t)
}

fn time_range(bundle: &ReplayBundle) -> Result<Option<(u64, u64)>, Error> {
    let n = bundle.event_count();
    if n == 0 {
        return Ok(None);
    }
    let first = bundle.event(0)?.expect("in range").logical_time;
    let last = bundle.event(n - 1)?.expect("in range").logical_time;
    Ok(Some((first, last)))
}

fn summary_json(bundle: &ReplayBundle) -> Result<serde_json::Value, Error> {
    let m = bundle.manifest();
    let blobs = blob_totals(bundle)?;
    let range = time_range(bundle)?;
    let size: u64 = m.files.values().map(|f| f.size).sum::<u64>() + blobs.stored + bundle.manifest_bytes().len() as u64;
    Ok(json!({
        "bundle": bundle.path().display().to_string(),
        "bundle_id": m.bundle_id.to_string(),
        "created_at": m.created_at,
        "bundle_version": m.bundle_version,
                "signature": bundle.report().signature,
        "verified": bundle.verified(),
        "metadata": bundle.metadata(),
        "events": {
            "count": bundle.event_count(),
            "encoding": bundle.encoding().name(),
            "first_logical_time": range.map(|r| r.0),
            "last_logical_time": range.map(|r| r.1),
        },
        "nodes": bundle.dag().nodes.len(),
        "blobs": { "count": blobs.count, "zstd": blobs.zstd, "stored_bytes": blobs.stored, "content_bytes": blobs.content },
        "snapshot": bundle.snapshot().map(|s| json!({ "logical_time": s.logical_time, "log_position": s.log_position, "nodes": s.nodes.len() })),
        "size_bytes": size,
    }))
}

fn summary_text(bundle: &ReplayBundle) -> Result<String, Error> {
    let m = bundle.manifest();
    let md = bundle.metadata();
    let blobs = blob_totals(bundle)?;
    let size: u64 = m.files.values().map(|f| f.size).sum::<u64>() + blobs.stored + bundle.manifest_bytes().len() as u64;
    let mut t = String::new();
    // Values come from the bundle: escaped, so that a name cannot redraw the screen.
    let mut line = |k: &str, v: String| t += &format!("{k:<10} {}\n", escape_for_terminal(&v));
    line("bundle", bundle.path().display().to_string());
    line("bundle id", m.bundle_id.to_string());
    line("created", m.created_at.to_string());
    line("format", format!("{} {}", m.format, m.bundle_version));
    line("signature", bundle.report().signature.to_string());
    line(
        "verified",
        match bundle.verified() {
            VerifyMode::Full => "full: every byte hashed before reading".into(),
            VerifyMode::Fast => "fast: structure and sizes only, contents NOT hashed".into(),
        },
    );
    line("run", md.run_id.to_string());
    line("workflow", format!("{} {}", md.workflow_name, md.workflow_version));
    line("status", md.status.name().into());
    line("started", md.started_at.to_string());
    line("completed", md.completed_at.as_ref().map_or_else(|| "-".into(), |t| t.to_string()));
    line("platform", format!("{}/{}", md.platform.os, md.platform.arch));
    line("engine", format!("cathedral {}", md.cathedral_version));
    let events = match time_range(bundle)? {
        Some((a, b)) => format!("{} ({}), logical time {a}..{b}", bundle.event_count(), bundle.encoding()),
        None => format!("0 ({})", bundle.encoding()),
    };
    line("events", events);
    line("nodes", bundle.dag().nodes.len().to_string());
    line(
        "blobs",
        format!(
            "{} ({} zstd, {} raw), {} stored, {} content",
            blobs.count,
            blobs.zstd,
            blobs.count - blobs.zstd,
            human_bytes(blobs.stored),
            human_bytes(blobs.content)
        ),
    );
    line(
        "snapshot",
        match bundle.snapshot() {
            Some(s) => format!("at logical time {}, log position {}, {} nodes", s.logical_time, s.log_position, s.nodes.len()),
            None => "none".into(),
        },
    );
    line("size", format!("{} in {} files", human_bytes(size), m.files.len() as u64 + 1 + blobs.count));
    Ok(t)
}
