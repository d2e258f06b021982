//! Log and index checks (FORMAT.md §5.1, §6, §10 step 5). One sequential
//! pass over the log hashes every byte as it decodes it, applies the event
//! rules, and compares each event with the index's `offsets` and `times`
//! entries (read side by side). The `ids` section is then checked exactly:
//! ids strictly increasing, every position in range, and for every entry
//! the log record at its position carries that id. With equal counts that
//! is a bijection between the section and the log's events.
//!
//! Exactness in bounded memory: event ids are kept for a window of
//! [`ID_WINDOW`] positions at a time (16 bytes each); after each window
//! the id section is scanned once and every entry whose position falls in
//! the window is compared. A log of n events costs ⌈n / ID_WINDOW⌉
//! sequential scans of the id section (20 bytes per event).

use std::collections::HashSet;

use rayon::prelude::*;
use uuid::Uuid;

use super::report::Finding;
use super::report::FindingCode;
use super::Verifier;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::blob::BlobList;
use crate::format::event::{Event, EventKind, EventRules};
use crate::format::index::{decode_id_entry, IndexReader, Section};
use crate::format::log::LogReader;
use crate::format::{self, be_u64, INDEX_ID_LEN};

/// Positions whose event ids are held at once: 2 Mi × 16 bytes = 32 MiB.
pub(crate) const ID_WINDOW: usize = 1 << 21;
/// Events decoded before their payloads are hashed, in parallel.
const HASH_BATCH: usize = 4096;
/// Events decoded, then payload-hashed side by side, by one task.
const LANE_BATCH: usize = 256;
/// Buffer of each index section read side by side with the log.
const SECTION_WINDOW: usize = 1 << 20;

const LOG: &str = format::EVENTS_FILE;
const INDEX: &str = format::INDEX_FILE;

/// Sees every event that passed the event rules, with its position.
pub(crate) type EventTap<'a> = &'a (dyn Fn(u32, &Event) + Sync);

/// What the log check needs from the other files.
pub(super) struct LogContext<'a> {
    /// The manifest's hash of the log.
    pub log_hash: Digest,
    /// The manifest's hash of the log's outboard, in a 1.1 bundle: the
    /// outboard is then hashed in the same pass and compared (§10 step 6).
    pub log_outboard: Option<Digest>,
    /// The run id from `metadata.json`, when it parsed.
    pub run_id: Option<Uuid>,
    /// The DAG's node ids, when it parsed.
    pub nodes: Option<&'a HashSet<Uuid>>,
    /// The blob list, when it is usable.
    pub list: Option<&'a BlobList<'a>>,
    /// Sees every event that passed the event rules, with its position.
    pub on_event: Option<EventTap<'a>>,
}

/// The index while it is still trusted: the first problem found in it stops
/// its comparison (one finding is enough to name it).
struct IndexCheck<'a> {
    index: IndexReader<'a>,
    offsets: crate::fsutil::SeqReader<'a>,
    times: crate::fsutil::SeqReader<'a>,
}

impl Verifier<'_> {
    /// Checks that the index header binds it to this log (hash, size, count);
    /// reports what differs. True when it does.
    pub(super) fn check_binding(&self, log: &LogReader<'_>, index: &IndexReader<'_>, log_hash: &Digest) -> bool {
        let h = index.header();
        let binding = [
            ("indexed log hash", log_hash.to_string(), h.log_hash.to_string()),
            ("indexed log size", log.len().to_string(), h.log_size.to_string()),
            ("event count", log.header().count.to_string(), h.count.to_string()),
        ];
        let mut bound = true;
        for (what, expected, found) in binding {
            if expected != found {
                self.findings.error(INDEX, Error::inconsistent(INDEX, what, expected, found));
                bound = false;
            }
        }
        bound
    }

    /// The full check of the log, and of the index where it is bound to the log.
    /// Returns the number of events decoded.
    pub(super) fn check_log(&self, log: &LogReader<'_>, index: Option<&IndexReader<'_>>, cx: &LogContext<'_>, tick: &dyn Fn(u64)) -> u64 {
        let mut index = index.filter(|ix| self.check_binding(log, ix, &cx.log_hash)).map(|ix| IndexCheck {
            index: *ix,
            offsets: ix.section(Section::Offsets, SECTION_WINDOW),
            times: ix.section(Section::Times, SECTION_WINDOW),
        });
        let mut rules = EventRules::new(cx.run_id);
        if let Some(nodes) = cx.nodes {
            rules = rules.with_nodes(nodes.clone());
        }
        let count = log.header().count;
        let mut window: Vec<[u8; 16]> = Vec::with_capacity((count as usize).min(self.id_window));
        let mut window_start = 0u32;
        let mut ids_checked = false;
        let mut walk = if cx.log_outboard.is_some() { log.walk_with_outboard() } else { log.walk(true) };
        let mut walked = 0u64;
        let mut batch = Batch::default();
        let mut complete = false;
        let mut stopped = false;
        while !stopped && !complete {
            // Frame a batch in order, decode it and hash its payloads on
            // every core, then apply the order-dependent checks in order.
            match decode_batch(&mut walk, log.header().encoding, &mut batch) {
                Ok(done) => complete = done,
                Err(e) => {
                    self.findings.error(LOG, e);
                    stopped = true;
                }
            }
            for ((offset, event), hashed) in batch.events() {
                let position = rules.count() as u32;
                if let Err(e) = self.check_event(&mut rules, event, hashed, cx) {
                    self.findings.error(LOG, e);
                    stopped = true;
                    complete = false;
                    break;
                }
                if let Some(on_event) = cx.on_event {
                    on_event(position, event);
                }
                if let Some(ix) = &mut index {
                    if let Err(e) = check_entry(ix, position, *offset, event) {
                        self.findings.error(INDEX, e);
                        index = None;
                    }
                }
                window.push(*event.event_id.as_bytes());
                if window.len() == self.id_window {
                    if let Some(ix) = &index {
                        if !self.check_id_window(&ix.index, window_start, &window, !ids_checked) {
                            index = None;
                        }
                        ids_checked = true;
                    }
                    window_start += window.len() as u32;
                    window.clear();
                }
            }
            if walk.position() - walked >= 1 << 24 {
                tick(walk.position() - walked);
                walked = walk.position();
            }
        }
        if let Some(ix) = index.as_ref().filter(|_| complete && (!window.is_empty() || !ids_checked)) {
            self.check_id_window(&ix.index, window_start, &window, !ids_checked);
        }
        tick(log.len().saturating_sub(walked));
        match walk.finish_with_outboard() {
            Ok((Some(actual), outboard)) => {
                if self.committed(LOG, cx.log_hash, actual) {
                    if let (Some(committed), Some(found)) = (cx.log_outboard, outboard) {
                        self.outboard_agrees(LOG, format::LOG_OUTBOARD_FILE, found, committed);
                    }
                }
            }
            Ok((None, _)) => {}
            Err(e) => self.findings.error(LOG, e),
        }
        rules.count()
    }

    /// The event rules (its payload hash checked already: `hashed`), and the
    /// blob a `BlobStored` event names must be held.
    fn check_event(&self, rules: &mut EventRules, event: &Event, hashed: Result<(), Error>, cx: &LogContext<'_>) -> Result<(), Error> {
        let referenced = rules.check_hashed(event, hashed).map_err(|e| e.located(LOG))?;
        if let (Some(hash), Some(list)) = (referenced, cx.list) {
            if list.find(&hash)?.is_none() {
                let detail = format!("event {} (BlobStored) names blob {hash}, which the bundle does not hold", rules.count() - 1);
                return Err(Error::rule(LOG, "blob reference", detail));
            }
        }
        Ok(())
    }

    /// Scans the whole id section once. Every entry whose position lies in
    /// `start .. start + ids.len()` must carry the id the log has there.
    /// With `structure`, also checks that ids strictly increase and that
    /// every position is in range. Parts of the section are scanned on
    /// every core; the first problem in section order is reported. True if none.
    fn check_id_window(&self, index: &IndexReader<'_>, start: u32, ids: &[[u8; 16]], structure: bool) -> bool {
        let count = index.count();
        let parts: Vec<u32> = (0..count).step_by(ID_PART as usize).collect();
        let problem = parts
            .par_iter()
            .map_init(Vec::new, |buf, &from| scan_ids(index, from, from.saturating_add(ID_PART).min(count), start, ids, structure, buf))
            .find_first(Option::is_some)
            .flatten();
        let Some(problem) = problem else { return true };
        match problem {
            IdProblem::Read(e) => self.findings.error(INDEX, e),
            IdProblem::Malformed(i, detail) => {
                let at = index.section_start(Section::Ids) + u64::from(i) * INDEX_ID_LEN as u64;
                self.findings.error(INDEX, Error::malformed(INDEX, "id entry", at, detail));
            }
            IdProblem::Mismatch { i, position, log, entry } => self.findings.push(
                Finding::new(INDEX, FindingCode::Inconsistent, format!("id entry {i} points at event {position}, which has another id"))
                    .with_values(Uuid::from_bytes(log), Uuid::from_bytes(entry)),
            ),
        }
        false
    }
}

/// Entries of the id section scanned as one part.
const ID_PART: u32 = 1 << 16;

/// The first problem in a part of the id section.
enum IdProblem {
    Read(Error),
    Malformed(u32, String),
    Mismatch { i: u32, position: u32, log: [u8; 16], entry: [u8; 16] },
}

/// [`Verifier::check_id_window`] over entries `from..to`; with `structure`,
/// the entry before `from` is read too, to check the order across parts.
fn scan_ids(
    index: &IndexReader<'_>,
    from: u32,
    to: u32,
    start: u32,
    ids: &[[u8; 16]],
    structure: bool,
    buf: &mut Vec<u8>,
) -> Option<IdProblem> {
    let count = index.count();
    let first = if structure { from.saturating_sub(1) } else { from };
    let bytes = match index.id_entries(first, to, buf) {
        Ok(b) => b,
        Err(e) => return Some(IdProblem::Read(e)),
    };
    // Ids compared as big-endian integers: the same order as their bytes.
    let id_key = |entry: &[u8]| u128::from_be_bytes(decode_id_entry(entry).0);
    let mut previous = (first < from).then(|| id_key(&bytes[..INDEX_ID_LEN]));
    for (i, entry) in (first..to).zip(bytes.chunks_exact(INDEX_ID_LEN)).skip((from - first) as usize) {
        let position = decode_id_entry(entry).1;
        if structure {
            if position >= count {
                return Some(IdProblem::Malformed(i, format!("entry {i}: position {position} is past the last event ({count})")));
            }
            let id = id_key(entry);
            if previous.is_some_and(|p| p >= id) {
                return Some(IdProblem::Malformed(
                    i,
                    format!("entry {i}: ids are not strictly increasing (duplicate or unsorted event id)"),
                ));
            }
            previous = Some(id);
        }
        // Only entries whose position falls in this window are compared.
        let k = position.wrapping_sub(start) as usize;
        if k < ids.len() {
            let (id, _) = decode_id_entry(entry);
            if ids[k] != id {
                return Some(IdProblem::Mismatch { i, position, log: ids[k], entry: id });
            }
        }
    }
    None
}

/// One batch of records: framed in order, then decoded and payload-hashed
/// on every core. The buffers, and the events' payload buffers, are reused
/// from batch to batch.
#[derive(Default)]
struct Batch {
    /// (offset in the log, place in the walk's buffer, length) of each record.
    framed: Vec<(u64, usize, usize)>,
    /// The events decoded: the first `decoded` are this batch's.
    events: Vec<(u64, Event)>,
    decoded: usize,
    /// The payload hash check of each event decoded.
    hashed: Vec<Result<(), Error>>,
}

impl Batch {
    /// This batch's events, each with its payload hash check.
    fn events(&mut self) -> impl Iterator<Item = (&(u64, Event), Result<(), Error>)> {
        self.events[..self.decoded].iter().zip(self.hashed.drain(..))
    }
}

/// Frames up to [`HASH_BATCH`] records (in place, in the walk's buffer),
/// then decodes them and checks their payload hashes on every core; true
/// when the log ended. On an error, `batch` holds the events before it.
fn decode_batch(
    walk: &mut crate::format::log::RecordWalk<'_>,
    encoding: crate::format::event::Encoding,
    batch: &mut Batch,
) -> Result<bool, Error> {
    batch.framed.clear();
    batch.decoded = 0;
    batch.hashed.clear();
    let framing = walk.next_batch(HASH_BATCH, &mut batch.framed);
    let n = batch.framed.len();
    if batch.events.len() < n {
        batch.events.resize_with(n, || (0, Event::new(Uuid::nil(), Uuid::nil(), Uuid::nil(), 0, EventKind::Heartbeat, Vec::new())));
    }
    let bytes = walk.buffer();
    let checked: Vec<Vec<Result<Result<(), Error>, Error>>> = batch.events[..n]
        .par_chunks_mut(LANE_BATCH)
        .zip(batch.framed.par_chunks(LANE_BATCH))
        .map(|(events, framed)| {
            let decoded: Vec<Result<&Event, Error>> = events
                .iter_mut()
                .zip(framed)
                .map(|((at, event), &(offset, start, len))| {
                    *at = offset;
                    Event::with_decoded(&bytes[start..start + len], encoding, LOG, offset, |e| e.fill(event))?;
                    Ok(&*event)
                })
                .collect();
            Event::with_payload_checks(decoded, |e| e).into_iter().map(|c| c.map(|(_, hashed)| hashed)).collect()
        })
        .collect();
    for c in checked.into_iter().flatten() {
        batch.hashed.push(c?);
        batch.decoded += 1;
    }
    framing
}

/// The index's `offsets` and `times` entries for event `position` match the
/// record walked at `offset`.
fn check_entry(ix: &mut IndexCheck<'_>, position: u32, offset: u64, event: &Event) -> Result<(), Error> {
    let indexed = be_u64(ix.offsets.next_bytes(8)?, 0);
    if indexed != offset {
        return Err(Error::inconsistent(INDEX, "record offset", offset, format!("{indexed} (event {position})")));
    }
    let time = be_u64(ix.times.next_bytes(8)?, 0);
    if time != event.logical_time {
        return Err(Error::inconsistent(INDEX, "logical time", event.logical_time, format!("{time} (event {position})")));
    }
    Ok(())
}
