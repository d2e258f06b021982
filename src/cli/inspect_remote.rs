//! `inspect` of a bundle in object storage (`REMOTE/<bundle-id>`): only
//! what is asked for is fetched, by ranged GETs through the index and the
//! blob list; the output says what was checked against the manifest.

use cathedral_bundle::remote::{Remote, RemoteBundle};
use cathedral_bundle::{escape_for_terminal, Error};

use super::event_lines::{event_line, Filter};
use super::inspect::{write_found, Args};
use super::output::Output;
use super::Outcome;

/// Events shown by `--events` without `--limit`.
const DEFAULT_LIMIT: u32 = 1000;

pub fn run(args: &Args, url: &str) -> Result<Outcome, Error> {
    let (remote, id) = Remote::open_bundle_url(url)?;
    let (keys, require) = args.trust.keys()?;
    let bundle = remote.open_bundle(&id, &keys, args.limits.limits())?;
    if !bundle.signature().is_acceptable(require) {
        let status = escape_for_terminal(&bundle.signature().to_string()).into_owned();
        eprintln!("cathedral: refusing to show the bundle: signature {status}{}", super::trust::HINT);
        return Ok(Outcome::Untrusted);
    }
    let mut out = Output::open(args.output.as_deref(), args.force)?;
    let checked = format!("MANIFEST.json (signature {}), metadata.json, dag.json", bundle.signature());
    let unchecked = "the events shown: read by range from events.cath-idx and events.cath-log of a 1.0 bundle, which has no outboards; their hashes cover whole files (verify-bundle checks them)";
    let note = if (args.events || args.event.is_some() || args.time.is_some()) && bundle.checks_reads() {
        format!("checked against the manifest: {checked}, and every 16 KiB of events.cath-idx and events.cath-log read, through their outboards")
    } else if args.events || args.event.is_some() || args.time.is_some() {
        format!("checked against the manifest: {checked}; not checked: {unchecked}")
    } else if args.blob.is_some() {
        format!("checked: {checked}, and the blob's content against its hash")
    } else if args.snapshot {
        format!("checked against the manifest: {checked}, snapshot.cath-snap")
    } else {
        format!("checked against the manifest: {checked}")
    };
    show(args, &bundle, &mut out)?;
    out.commit()?;
    eprintln!("cathedral: {}", escape_for_terminal(&note));
    Ok(Outcome::Ok)
}

fn show(args: &Args, bundle: &RemoteBundle<'_>, out: &mut Output) -> Result<(), Error> {
    if args.events {
        let filter = Filter::new(&args.kind, args.node.as_deref(), Some(bundle.dag()))?;
        let limit = args.limit.map_or(DEFAULT_LIMIT, |l| u32::try_from(l).unwrap_or(u32::MAX));
        for event in bundle.events(args.from, limit)?.iter().filter(|e| filter.wants(e)) {
            out.write_bytes(event_line(event, args.decode_payload).as_bytes())?;
        }
    } else if let Some(id) = args.event {
        write_found(out, bundle.event_by_id(&id)?, args)?;
    } else if let Some(time) = args.time {
        write_found(out, bundle.event_at_time(time)?, args)?;
    } else if let Some(hash) = args.blob {
        let content = bundle.blob(&hash)?.ok_or_else(|| Error::NotFound { file: format!("blob {hash}") })?;
        out.write_bytes(&content)?;
    } else if args.snapshot {
        let snapshot = bundle.snapshot()?.ok_or_else(|| Error::NotFound { file: format!("{}: snapshot.cath-snap", bundle.location()) })?;
        out.write_json(&snapshot)?;
    } else {
        let m = bundle.metadata();
        let summary = serde_json::json!({
            "bundle": bundle.location(),
            "bundle_id": bundle.manifest().bundle_id,
            "created_at": bundle.manifest().created_at,
            "signature": bundle.signature().to_string(),
            "run_id": m.run_id,
            "workflow": { "name": m.workflow_name, "version": m.workflow_version },
            "status": m.status,
            "events": bundle.event_count()?,
            "nodes": bundle.dag().nodes.len(),
            "blobs": bundle.manifest().blob_count,
        });
        if args.json {
            return out.write_json(&summary);
        }
        let line = |(k, v): (&String, &serde_json::Value)| format!("{k:10} {}\n", escape_for_terminal(v.to_string().trim_matches('"')));
        out.write_bytes(summary.as_object().expect("object").iter().map(line).collect::<String>().as_bytes())?;
    }
    Ok(())
}
