//! `cathedral inspect`: summary, events, one event, a blob, the snapshot.

use std::path::PathBuf;

use cathedral_bundle::format::{BlobRecord, Compression, Manifest};
use cathedral_bundle::{
    escape_for_terminal, is_archive, ArchiveBundle, BundleLoader, Digest, Encoding, Error, EventKind, LoadError, Metadata, ReplayBundle,
    Snapshot, Uuid, VerifyMode, VerifyReport,
};
use serde_json::json;

use super::event_lines::{event_line, Filter};
use super::output::{human_bytes, Output};
use super::Outcome;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").args(["events", "event", "time", "blob", "snapshot"]))]
pub struct Args {
    /// The bundle: a directory or a .cath-bundle.tar.zst archive (read in one verifying pass).
    #[arg(long)]
    pub(super) bundle: PathBuf,
    /// Print events as JSON lines (the run store's event form).
    #[arg(long)]
    pub(super) events: bool,
    /// With --events: start at this position (0-based).
    #[arg(long, requires = "events", default_value_t = 0)]
    pub(super) from: u32,
    /// With --events: print at most this many events.
    #[arg(long, requires = "events")]
    pub(super) limit: Option<u64>,
    /// With --events: only events of this kind. Repeatable: any of the kinds.
    #[arg(long, requires = "events", value_parser = parse_kind)]
    pub(super) kind: Vec<EventKind>,
    /// With --events: only events of this node, by id or by its name in dag.json.
    #[arg(long, requires = "events", value_name = "NODE")]
    pub(super) node: Option<String>,
    /// With --events, --event or --time: add the payload decoded, as `payload_json` (a JSON payload) or `payload_text` (UTF-8 text).
    #[arg(long)]
    pub(super) decode_payload: bool,
    /// Print the event with this id, found through the index.
    #[arg(long, value_name = "ID", value_parser = parse_uuid)]
    pub(super) event: Option<Uuid>,
    /// Print the first event at this logical time, found through the index.
    #[arg(long, value_name = "T")]
    pub(super) time: Option<u64>,
    /// Write the original content of the blob with this hash, checked against it.
    #[arg(long, value_name = "HASH", value_parser = parse_hash)]
    pub(super) blob: Option<Digest>,
    /// Write the snapshot as JSON.
    #[arg(long)]
    pub(super) snapshot: bool,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub(super) output: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long, requires = "output")]
    pub(super) force: bool,
    /// Print the summary as JSON.
    #[arg(long, conflicts_with_all = ["events", "event", "time", "blob", "snapshot"])]
    pub(super) json: bool,
    /// Do not hash the bundle first. The summary checks structure and sizes only; --event,
    /// --time, --events, --blob and --snapshot of a 1.1 bundle still check what they read
    /// (which costs less than the structure check).
    #[arg(long, conflicts_with = "full")]
    pub(super) fast: bool,
    /// Verify the whole bundle before reading. The summary always does; --event, --time,
    /// --events, --blob and --snapshot otherwise check only what they read, against the
    /// manifest, through the outboards of a 1.1 bundle.
    #[arg(long)]
    pub(super) full: bool,
    #[command(flatten)]
    pub(super) trust: super::trust::TrustArgs,
    #[command(flatten)]
    pub(super) limits: super::limits::LimitArgs,
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    s.parse().map_err(|_| format!("unknown kind {s:?}; one of: {}", EventKind::ALL.map(|k| k.name()).join(", ")))
}

/// The one event `--event` or `--time` found, as a JSON line; when none
/// was found, the error names what was asked for.
pub(super) fn write_found(out: &mut Output, found: Option<(u32, cathedral_bundle::Event)>, args: &Args) -> Result<(), Error> {
    let Some((_, event)) = found else {
        let asked = match (args.event, args.time) {
            (Some(id), _) => format!("event {id}"),
            (None, Some(time)) => format!("event at logical time {time}"),
            (None, None) => "event".to_string(),
        };
        return Err(Error::NotFound { file: asked });
    };
    out.write_bytes(event_line(&event, args.decode_payload).as_bytes())
}

fn parse_uuid(s: &str) -> Result<Uuid, String> {
    cathedral_bundle::parse_uuid("id", s).map_err(|e| e.to_string())
}

fn parse_hash(s: &str) -> Result<Digest, String> {
    Digest::parse(s).map_err(|e| e.to_string())
}

impl Args {
    /// The bundle as a remote URL (`REMOTE/<bundle-id>`), when it is one.
    pub(super) fn remote(&self) -> Option<&str> {
        self.bundle.to_str().filter(|b| cathedral_bundle::remote::Remote::is_remote(b))
    }
}

pub fn run(args: Args, quiet: bool) -> Result<Outcome, Error> {
    let targeted = args.events || args.event.is_some() || args.time.is_some() || args.blob.is_some() || args.snapshot;
    // A targeted read checks what it reads (FORMAT.md §14). With --fast too:
    // that costs less than the structure check, which walks every blob; a
    // bundle without outboards then gets the structure check.
    let (mode, without_outboards) = match (args.fast, args.full || !targeted) {
        (true, false) => (VerifyMode::Lazy, VerifyMode::Fast),
        (true, true) => (VerifyMode::Fast, VerifyMode::Fast),
        (false, true) => (VerifyMode::Full, VerifyMode::Full),
        (false, false) => (VerifyMode::Lazy, VerifyMode::Full),
    };
    // The same signature policy as verify-bundle: a bad or untrusted signature is never silent.
    let loader = args.trust.apply(BundleLoader::new().mode(mode).without_outboards(without_outboards).limits(args.limits.limits()))?;
    // A node named rather than given by id needs the DAG before the
    // events: an archive is then opened through a verified unpack.
    if is_archive(&args.bundle) && args.node.as_deref().is_none_or(|n| super::event_lines::node_id(n).is_some()) {
        return archive::run(&args, &loader);
    }
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
        let filter = Filter::new(&args.kind, args.node.as_deref(), Some(bundle.dag()))?;
        let lines = super::event_lines::Lines { from: args.from, limit: args.limit, filter: &filter, decode_payload: args.decode_payload };
        super::event_lines::write(&bundle, &lines, &mut out)?;
    } else if let Some(id) = args.event {
        write_found(&mut out, bundle.event_by_id(&id)?, &args)?;
    } else if let Some(time) = args.time {
        write_found(&mut out, bundle.event_at_time(time)?, &args)?;
    } else if let Some(hash) = args.blob {
        bundle.read_blob(&hash, &mut out)?;
    } else if args.snapshot {
        write_snapshot(&mut out, bundle.snapshot(), &args.bundle)?;
    } else {
        write_summary(&mut out, &Summary::of_bundle(&bundle)?, args.json)?;
    }
    out.commit()?;
    if targeted && !quiet {
        eprintln!("cathedral: {}", checked_note(&bundle));
    }
    Ok(Outcome::Ok)
}

/// What was checked before the output was shown.
fn checked_note(bundle: &ReplayBundle) -> String {
    let signature = match bundle.signature() {
        cathedral_bundle::SignatureStatus::Unsigned => "unsigned".to_string(),
        status => format!("signature {status}"),
    };
    match (bundle.verified(), bundle.groups_checked()) {
        (VerifyMode::Lazy, Some(groups)) => format!(
            "verified lazily ({signature}): manifest and documents hashed; {groups} chunk group(s) of 16 KiB of the log and index \
             checked against the manifest as they were read (and a blob, with the blob list, when one is read); nothing else was read \
             (verify-bundle or --full checks all of it)"
        ),
        (VerifyMode::Fast, _) => format!("NOT verified ({signature}): --fast checked structure and sizes only"),
        _ if bundle.manifest().has_outboards() => format!("verified in full before reading ({signature})"),
        _ => format!(
            "verified in full before reading ({signature}); a {} bundle has no outboards to check reads lazily",
            bundle.manifest().bundle_version
        ),
    }
}

/// The snapshot as JSON; a bundle without one is "not found".
fn write_snapshot(out: &mut Output, snapshot: Option<&Snapshot>, bundle: &std::path::Path) -> Result<(), Error> {
    let snapshot = snapshot.ok_or_else(|| Error::NotFound { file: bundle.join("snapshot.cath-snap").display().to_string() })?;
    out.write_json(snapshot)
}

/// The summary or its JSON form.
fn write_summary(out: &mut Output, summary: &Summary<'_>, json: bool) -> Result<(), Error> {
    if json {
        out.write_json(&summary_json(summary))
    } else {
        out.write_bytes(summary_text(summary).as_bytes())
    }
}

struct BlobTotals {
    count: u64,
    zstd: u64,
    stored: u64,
    content: u64,
}

fn blob_totals(records: impl Iterator<Item = Result<BlobRecord, Error>>) -> Result<BlobTotals, Error> {
    let mut t = BlobTotals { count: 0, zstd: 0, stored: 0, content: 0 };
    for record in records {
        let record = record?;
        t.count += 1;
        t.zstd += u64::from(record.header.compression == Compression::Zstd);
        t.stored += record.stored_size;
        t.content += record.header.size;
    }
    Ok(t)
}

/// What the summary shows, from a bundle directory or an archive.
pub(super) struct Summary<'a> {
    path: &'a std::path::Path,
    manifest: &'a Manifest,
    manifest_len: u64,
    report: &'a VerifyReport,
    verified: VerifyMode,
    metadata: &'a Metadata,
    events: u32,
    encoding: Encoding,
    range: Option<(u64, u64)>,
    nodes: usize,
    blobs: BlobTotals,
    snapshot: Option<&'a Snapshot>,
}

impl<'a> Summary<'a> {
    fn of_bundle(b: &'a ReplayBundle) -> Result<Self, Error> {
        let n = b.event_count();
        let range = match n {
            0 => None,
            n => Some((b.event(0)?.expect("in range").logical_time, b.event(n - 1)?.expect("in range").logical_time)),
        };
        Ok(Summary {
            path: b.path(),
            manifest: b.manifest(),
            manifest_len: b.manifest_bytes().len() as u64,
            report: b.report(),
            verified: b.verified(),
            metadata: b.metadata(),
            events: n,
            encoding: b.encoding(),
            range,
            nodes: b.dag().nodes.len(),
            blobs: blob_totals(b.blob_records())?,
            snapshot: b.snapshot(),
        })
    }

    pub(super) fn of_archive(b: &'a ArchiveBundle) -> Result<Self, Error> {
        let n = b.event_count();
        let range = match n {
            0 => None,
            n => Some((b.event_time(0)?.expect("in range"), b.event_time(n - 1)?.expect("in range"))),
        };
        Ok(Summary {
            path: b.path(),
            manifest: b.manifest(),
            manifest_len: b.manifest_bytes().len() as u64,
            report: b.report(),
            verified: VerifyMode::Full,
            metadata: b.metadata(),
            events: n,
            encoding: b.encoding(),
            range,
            nodes: b.dag().nodes.len(),
            blobs: blob_totals(b.blob_records())?,
            snapshot: b.snapshot(),
        })
    }

    fn size(&self) -> u64 {
        self.manifest.files.values().map(|f| f.size).sum::<u64>() + self.blobs.stored + self.manifest_len
    }
}

fn summary_json(s: &Summary<'_>) -> serde_json::Value {
    let m = s.manifest;
    json!({
        "bundle": s.path.display().to_string(),
        "bundle_id": m.bundle_id.to_string(),
        "created_at": m.created_at,
        "bundle_version": m.bundle_version,
        "signature": s.report.signature,
        "verified": s.verified,
        "metadata": s.metadata,
        "events": {
            "count": s.events,
            "encoding": s.encoding.name(),
            "first_logical_time": s.range.map(|r| r.0),
            "last_logical_time": s.range.map(|r| r.1),
        },
        "nodes": s.nodes,
        "blobs": { "count": s.blobs.count, "zstd": s.blobs.zstd, "stored_bytes": s.blobs.stored, "content_bytes": s.blobs.content },
        "snapshot": s.snapshot.map(|s| json!({ "logical_time": s.logical_time, "log_position": s.log_position, "nodes": s.nodes.len() })),
        "size_bytes": s.size(),
    })
}

fn summary_text(s: &Summary<'_>) -> String {
    let (m, md, blobs) = (s.manifest, s.metadata, &s.blobs);
    let mut t = String::new();
    // Values come from the bundle: escaped, so that a name cannot redraw the screen.
    let mut line = |k: &str, v: String| t += &format!("{k:<10} {}\n", escape_for_terminal(&v));
    line("bundle", s.path.display().to_string());
    line("bundle id", m.bundle_id.to_string());
    line("created", m.created_at.to_string());
    line("format", format!("{} {}", m.format, m.bundle_version));
    line("signature", s.report.signature.to_string());
    line(
        "verified",
        match s.verified {
            VerifyMode::Full => "full: every byte hashed before reading".into(),
            VerifyMode::Fast => "fast: structure and sizes only, contents NOT hashed".into(),
            VerifyMode::Lazy => "lazy: manifest, signature and documents hashed; the rest checked as read".into(),
        },
    );
    line("run", md.run_id.to_string());
    line("workflow", format!("{} {}", md.workflow_name, md.workflow_version));
    line("status", md.status.name().into());
    line("started", md.started_at.to_string());
    line("completed", md.completed_at.as_ref().map_or_else(|| "-".into(), |t| t.to_string()));
    line("platform", format!("{}/{}", md.platform.os, md.platform.arch));
    line("engine", format!("cathedral {}", md.cathedral_version));
    let events = match s.range {
        Some((a, b)) => format!("{} ({}), logical time {a}..{b}", s.events, s.encoding),
        None => format!("0 ({})", s.encoding),
    };
    line("events", events);
    line("nodes", s.nodes.to_string());
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
        match s.snapshot {
            Some(s) => format!("at logical time {}, log position {}, {} nodes", s.logical_time, s.log_position, s.nodes.len()),
            None => "none".into(),
        },
    );
    line("size", format!("{} in {} files", human_bytes(s.size()), m.files.len() as u64 + 1 + blobs.count));
    t
}

/// `inspect` on an archive: one verifying pass that captures what was
/// asked for, shown only once the whole archive verified.
mod archive {
    use std::io::{Seek, Write};
    use std::sync::Mutex;

    use cathedral_bundle::{ArchiveWatch, BundleLoader, Error, Event};

    use super::super::event_lines::{event_line, Filter};
    use super::{write_summary, Args, Outcome, Output, Summary};

    /// Captured output past this size waits in an anonymous temporary file.
    const MEMORY: usize = 64 << 20;

    pub fn run(args: &Args, loader: &BundleLoader<'_>) -> Result<Outcome, Error> {
        let spool = Mutex::new(tempfile::spooled_tempfile(MEMORY));
        let found: Mutex<Option<Event>> = Mutex::new(None);
        let failed: Mutex<Option<std::io::Error>> = Mutex::new(None);
        let printed = Mutex::new(0u64);
        let filter = Filter::new(&args.kind, args.node.as_deref(), None)?;
        let select = |position: u32, event: &Event| {
            if args.events {
                let mut n = printed.lock().unwrap_or_else(|p| p.into_inner());
                let wanted = position >= args.from && args.limit.is_none_or(|l| *n < l) && filter.wants(event);
                if wanted {
                    *n += 1;
                    let line = event_line(event, args.decode_payload);
                    if let Err(e) = spool.lock().unwrap_or_else(|p| p.into_inner()).write_all(line.as_bytes()) {
                        failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    }
                }
                return;
            }
            let hit = args.event.is_some_and(|id| id == event.event_id) || args.time.is_some_and(|t| event.logical_time >= t);
            let mut slot = found.lock().unwrap_or_else(|p| p.into_inner());
            if hit && slot.is_none() {
                *slot = Some(event.clone());
            }
        };
        let mut blob_out = tempfile::spooled_tempfile(MEMORY);
        let mut watch = ArchiveWatch::new();
        if args.events || args.event.is_some() || args.time.is_some() {
            watch = watch.events(&select);
        }
        if let Some(hash) = args.blob {
            watch = watch.blob(hash, &mut blob_out);
        }
        let bundle = match loader.open_archive(&args.bundle, watch) {
            Ok(b) => b,
            Err(e) => return super::super::trust::refused(e, "refusing to show the bundle"),
        };
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(Error::Output { file: "temporary file".into(), source: e });
        }
        let mut out = Output::open(args.output.as_deref(), args.force)?;
        if args.events {
            copy_spool(spool.into_inner().unwrap_or_else(|p| p.into_inner()), &mut out)?;
        } else if args.event.is_some() || args.time.is_some() {
            let what = match (args.event, args.time) {
                (Some(id), _) => format!("event {id}"),
                (_, time) => format!("event at logical time {}", time.unwrap_or_default()),
            };
            let event = found.into_inner().unwrap_or_else(|p| p.into_inner()).ok_or(Error::NotFound { file: what })?;
            out.write_bytes(event_line(&event, args.decode_payload).as_bytes())?;
        } else if let Some(hash) = args.blob {
            if bundle.blob_record(&hash)?.is_none() {
                return Err(Error::NotFound { file: format!("blob {hash}") });
            }
            copy_spool(blob_out, &mut out)?;
        } else if args.snapshot {
            super::write_snapshot(&mut out, bundle.snapshot(), &args.bundle)?;
        } else {
            write_summary(&mut out, &Summary::of_archive(&bundle)?, args.json)?;
        }
        out.commit()?;
        Ok(Outcome::Ok)
    }

    fn copy_spool(mut spool: tempfile::SpooledTempFile, out: &mut Output) -> Result<(), Error> {
        spool.rewind().map_err(|e| Error::Output { file: "temporary file".into(), source: e })?;
        std::io::copy(&mut spool, out).map_err(|e| Error::Output { file: "output".into(), source: e })?;
        Ok(())
    }
}
