//! Events as JSON lines, for `inspect` of local, archived and remote
//! bundles: which events `--events` selects, how one is written, and the
//! writer of `inspect --events` for a bundle directory.
//!
//! That writer reads the records in log order on one thread while the batch
//! before is decoded and written as lines on the others, then writes the
//! lines out in order. Batches start small and double, so that `--limit 1`
//! decodes one record (the log reader below still reads, and in lazy mode
//! checks, whole buffers) and a whole log goes in large batches; the output is
//! exactly what one event at a time would give, including where a bad
//! record stops it (a record past the `--limit` is never reported).

use std::sync::mpsc::{Receiver, SyncSender};

use cathedral_bundle::format::{RecordWalk, EVENTS_FILE};
use cathedral_bundle::{Error, EventKind, EventRef, ReplayBundle, Uuid};
use rayon::prelude::*;

use super::output::Output;

/// Which events `--events` prints.
pub(super) struct Filter {
    kinds: Vec<EventKind>,
    nodes: Option<std::collections::HashSet<Uuid>>,
}

impl Filter {
    /// Events of any of `kinds` (all when none) at `node` (an id, or a
    /// name looked up in `dag`, which must then be given).
    pub(super) fn new(kinds: &[EventKind], node: Option<&str>, dag: Option<&cathedral_bundle::Dag>) -> Result<Self, Error> {
        let nodes = match (node, dag) {
            (None, _) => None,
            (Some(spec), _) if node_id(spec).is_some() => node_id(spec).map(|id| [id].into()),
            (Some(name), Some(dag)) => {
                let ids: std::collections::HashSet<Uuid> = dag.nodes.iter().filter(|n| n.name == name).map(|n| n.id).collect();
                if ids.is_empty() {
                    let known = dag.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
                    let detail = format!("no node is named {name:?} in dag.json; its nodes: {}", cathedral_bundle::clip(&known, 400));
                    return Err(Error::InvalidInput { what: "--node", detail });
                }
                Some(ids)
            }
            (Some(_), None) => unreachable!("a node name is resolved with the DAG"),
        };
        Ok(Filter { kinds: kinds.to_vec(), nodes })
    }

    /// True when every event is wanted.
    pub(super) fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.nodes.is_none()
    }

    pub(super) fn wants(&self, event: &cathedral_bundle::Event) -> bool {
        self.wants_ref(event.kind, &event.node_id)
    }

    pub(super) fn wants_ref(&self, kind: EventKind, node: &Uuid) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind)) && self.nodes.as_ref().is_none_or(|n| n.contains(node))
    }
}

/// `spec` as a node id, if it is one.
pub(super) fn node_id(spec: &str) -> Option<Uuid> {
    cathedral_bundle::parse_uuid("node", spec).ok()
}

/// One event as a JSON line; with `decode`, its payload decoded as well.
pub(super) fn event_line(event: &cathedral_bundle::Event, decode: bool) -> String {
    let mut line = Vec::new();
    write_event_line(event, decode, &mut line);
    String::from_utf8(line).expect("JSON is UTF-8")
}

/// Appends [`event_line`] to `out`, a buffer the caller reuses.
pub(super) fn write_event_line(event: &cathedral_bundle::Event, decode: bool, out: &mut Vec<u8>) {
    use cathedral_bundle::replay::payload::{decode as decode_payload, Payload};
    event.write_json_line(out);
    if decode {
        let extra = match decode_payload(&event.payload) {
            Payload::Json(value) => Some(("payload_json", value)),
            Payload::Text(text) => Some(("payload_text", serde_json::Value::String(text))),
            Payload::Empty | Payload::Binary(_) => None,
        };
        if let Some((key, value)) = extra {
            out.pop();
            out.extend_from_slice(format!(",\"{key}\":{value}}}").as_bytes());
        }
    }
    out.push(b'\n');
}

/// The largest batch of records decoded together.
const MAX_BATCH: usize = 8192;
/// Records one task decodes and writes.
const CHUNK: usize = 512;

/// What to write: from which position, how many events at most, which ones,
/// with decoded payloads or not.
pub(super) struct Lines<'a> {
    pub from: u32,
    pub limit: Option<u64>,
    pub filter: &'a Filter,
    pub decode_payload: bool,
}

/// Records framed in order: their bytes, and (offset in the log, start in
/// `bytes`, length) of each.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    records: Vec<(u64, usize, usize)>,
}

/// The lines of one chunk of records, where each ends, and the error of the
/// record that stopped it, if one did.
#[derive(Default)]
struct Written {
    text: Vec<u8>,
    ends: Vec<usize>,
    error: Option<Error>,
}

/// Writes the selected events of `bundle` to `out`. One thread reads and
/// frames the records (and checks what it reads, in lazy mode) while the
/// batch before is decoded and written on the others.
pub(super) fn write(bundle: &ReplayBundle, lines: &Lines<'_>, out: &mut Output) -> Result<(), Error> {
    let mut remaining = lines.limit.unwrap_or(u64::MAX);
    if remaining == 0 {
        return Ok(());
    }
    // Framed batches (at most one waiting), and emptied ones coming back for reuse.
    let (framed_tx, framed_rx) = std::sync::mpsc::sync_channel::<Result<Batch, Error>>(1);
    let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Batch>();
    std::thread::scope(|s| {
        s.spawn(move || frame(bundle, lines, &framed_tx, &spent_rx));
        let mut written = Vec::new();
        for batch in &framed_rx {
            let batch = batch?;
            if !flush(bundle, lines, &batch, &mut written, &mut remaining, out)? {
                break;
            }
            let _ = spent_tx.send(batch);
        }
        // Dropping the receiver stops the framing thread at its next batch.
        drop(framed_rx);
        Ok(())
    })
}

/// Frames the records from `lines.from` on into batches that start small
/// and double (without a filter, never more records than events still
/// wanted), and sends them in order; a read error follows the records
/// before it.
fn frame(bundle: &ReplayBundle, lines: &Lines<'_>, framed: &SyncSender<Result<Batch, Error>>, spent: &Receiver<Batch>) {
    let mut wanted = if lines.filter.is_empty() { lines.limit.unwrap_or(u64::MAX) } else { u64::MAX };
    let mut walk = match bundle.records_from(lines.from) {
        Ok(Some(walk)) => walk,
        Ok(None) => return,
        Err(e) => {
            let _ = framed.send(Err(e));
            return;
        }
    };
    let mut size = 1usize;
    loop {
        let mut batch = spent.try_recv().unwrap_or_default();
        batch.records.clear();
        let end = walk.next_batch(size.min(usize::try_from(wanted).unwrap_or(usize::MAX)), &mut batch.records);
        take_records(&mut walk, &mut batch);
        wanted -= batch.records.len() as u64;
        size = (size * 2).min(MAX_BATCH);
        // A closed channel: the writer has stopped.
        if !batch.records.is_empty() && framed.send(Ok(batch)).is_err() {
            return;
        }
        match end {
            Ok(false) if wanted > 0 => {}
            Ok(_) => return,
            Err(e) => {
                let _ = framed.send(Err(e));
                return;
            }
        }
    }
}

/// Moves the records just framed (in the walk's buffer) into `batch`: the
/// whole buffer is handed over when they are most of it (no copy of the
/// records), else their bytes are copied.
fn take_records(walk: &mut RecordWalk<'_>, batch: &mut Batch) {
    let (Some(first), Some(last)) = (batch.records.first(), batch.records.last()) else { return };
    if walk.buffered_len() <= walk.buffer().len() / 4 {
        batch.bytes = walk.swap_buffer(std::mem::take(&mut batch.bytes));
        return;
    }
    let (from, to) = (first.1, last.1 + last.2);
    batch.bytes.clear();
    batch.bytes.extend_from_slice(&walk.buffer()[from..to]);
    for record in &mut batch.records {
        record.1 -= from;
    }
}

/// Decodes and writes `batch` on every core (into `written`, reused from
/// batch to batch), then writes its lines in order up to `remaining`; false
/// once `remaining` reaches 0. A bad record is an error only if the limit
/// was not reached before it.
fn flush(
    bundle: &ReplayBundle,
    lines: &Lines<'_>,
    batch: &Batch,
    written: &mut Vec<Written>,
    remaining: &mut u64,
    out: &mut Output,
) -> Result<bool, Error> {
    let encoding = bundle.encoding();
    let chunks = batch.records.len().div_ceil(CHUNK);
    if written.len() < chunks {
        written.resize_with(chunks, Written::default);
    }
    written[..chunks].par_iter_mut().zip(batch.records.par_chunks(CHUNK)).for_each(|(w, records)| {
        w.text.clear();
        w.ends.clear();
        w.error = None;
        // Each record decoded into the same place (no copy of each event).
        let mut e = EventRef::EMPTY;
        for &(offset, start, len) in records {
            if let Err(error) = EventRef::decode_into(&batch.bytes[start..start + len], encoding, EVENTS_FILE, offset, &mut e) {
                w.error = Some(error);
                break;
            }
            if lines.filter.wants_ref(e.kind, &e.node_id) {
                if lines.decode_payload {
                    write_event_line(&e.to_event(), true, &mut w.text);
                } else {
                    e.write_json_line(&mut w.text);
                    w.text.push(b'\n');
                }
                w.ends.push(w.text.len());
            }
        }
    });
    for w in &mut written[..chunks] {
        let take = w.ends.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
        out.write_bytes(&w.text[..take.checked_sub(1).map_or(0, |last| w.ends[last])])?;
        *remaining -= take as u64;
        if *remaining == 0 {
            return Ok(false);
        }
        if let Some(e) = w.error.take() {
            return Err(e);
        }
    }
    Ok(true)
}
