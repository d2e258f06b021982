//! Log and index checks (FORMAT.md §5.1, §6, §10 step 5). One sequential
//! pass over the log hashes every byte as it decodes it, applies the event
//! rules, and compares each event with the index's `offsets` and `times`
//! entries (read side by side). Records are framed in batches where the
//! reader holds them; each batch is decoded in place, its payloads hashed
//! and the rules that need no earlier event checked on every core; then
//! the rest (run id, time order, index entries, ids) in log order, so that
//! the first problem in the log is the one reported.
//!
//! The `ids` section is checked exactly: ids strictly increasing, every
//! position in range, and for every entry the log record at its position
//! carries that id. With equal counts that is a bijection between the
//! section and the log's events.
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
use crate::format::event::{payload_hashed_to, CheckedAlone, Event, EventRef, EventRules};
use crate::format::index::{decode_id_entry, IndexReader, Section};
use crate::format::log::LogReader;
use crate::format::{self, be_u32, be_u64, INDEX_ID_LEN};

/// Positions whose event ids are held at once: 2 Mi × 16 bytes = 32 MiB.
pub(crate) const ID_WINDOW: usize = 1 << 21;
/// Records framed, then decoded and checked on every core, at a time.
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

/// The checks of one pass over the log that run in log order, one event
/// after the other.
struct InOrder<'a> {
    rules: EventRules,
    /// The index, while it is still trusted.
    index: Option<IndexCheck<'a>>,
    /// The ids of the events at `window_start ..`, for the exact id check.
    window: Vec<[u8; 16]>,
    window_start: u32,
    ids_checked: bool,
    /// The event handed to the tap, its payload buffer reused.
    tap_event: Option<Event>,
}

impl InOrder<'_> {
    /// Checks the next event, at `offset`, in order: the event rules (and
    /// `alone`, what the checks that need no event before it found), the
    /// index's entries for it, and its id, once its window is full. False
    /// when it broke a rule: the pass stops there.
    fn event(
        &mut self,
        verifier: &Verifier<'_>,
        offset: u64,
        event: &EventRef<'_>,
        alone: Option<Box<Alone>>,
        cx: &LogContext<'_>,
    ) -> bool {
        let position = self.rules.count() as u32;
        if let Err(e) = check_in_order(&mut self.rules, event, alone) {
            verifier.findings.error(LOG, e);
            return false;
        }
        if let Some(on_event) = cx.on_event {
            let tap = self.tap_event.get_or_insert_with(|| EventRef::EMPTY.to_event());
            event.fill(tap);
            on_event(position, tap);
        }
        if let Some(ix) = &mut self.index {
            if let Err(e) = check_entry(ix, position, offset, event.logical_time) {
                verifier.findings.error(INDEX, e);
                self.index = None;
            }
        }
        self.window.push(*event.event_id.as_bytes());
        if self.window.len() == verifier.id_window {
            if let Some(ix) = &self.index {
                if !verifier.check_id_window(&ix.index, self.window_start, &self.window, !self.ids_checked) {
                    self.index = None;
                }
                self.ids_checked = true;
            }
            self.window_start += self.window.len() as u32;
            self.window.clear();
        }
        true
    }
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
        let index = index.filter(|ix| self.check_binding(log, ix, &cx.log_hash)).map(|ix| IndexCheck {
            index: *ix,
            offsets: ix.section(Section::Offsets, SECTION_WINDOW),
            times: ix.section(Section::Times, SECTION_WINDOW),
        });
        let mut rules = EventRules::new(cx.run_id);
        if let Some(nodes) = cx.nodes {
            rules = rules.with_nodes(nodes.clone());
        }
        let count = log.header().count as usize;
        let mut pass = InOrder {
            rules,
            index,
            window: Vec::with_capacity(count.min(self.id_window)),
            window_start: 0,
            ids_checked: false,
            tap_event: None,
        };
        let mut walk = if cx.log_outboard.is_some() { log.walk_with_outboard() } else { log.walk(true) };
        let (mut walked, mut framed) = (0u64, Vec::new());
        let (mut complete, mut stopped) = (false, false);
        while !stopped && !complete {
            // Frame a batch in order; decode it, hash its payloads and check
            // each event alone on every core; then check it in order. A
            // problem in decoding or framing is reported first, as found.
            let first = pass.rules.count();
            let rules = &pass.rules;
            let alone = |i: usize, event: &EventRef<'_>, hashed| check_alone(rules, cx.list, first + i as u64, event, hashed);
            let (chunks, end) = decode_batch(&mut walk, log.header().encoding, &mut framed, &alone);
            match end {
                Ok(done) => complete = done,
                Err(e) => {
                    self.findings.error(LOG, e);
                    stopped = true;
                }
            }
            'events: for (events, found) in chunks {
                for ((offset, event), alone) in events.iter().zip(found) {
                    if !pass.event(self, *offset, event, alone, cx) {
                        (stopped, complete) = (true, false);
                        break 'events;
                    }
                }
            }
            if walk.position() - walked >= 1 << 24 {
                tick(walk.position() - walked);
                walked = walk.position();
            }
        }
        if let Some(ix) = pass.index.as_ref().filter(|_| complete && (!pass.window.is_empty() || !pass.ids_checked)) {
            self.check_id_window(&ix.index, pass.window_start, &pass.window, !pass.ids_checked);
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
        pass.rules.count()
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
    let entries = bytes.len() / INDEX_ID_LEN;
    for (j, (i, entry)) in (first..to).zip(bytes.chunks_exact(INDEX_ID_LEN)).enumerate().skip((from - first) as usize) {
        if j + PREFETCH_AHEAD < entries {
            let ahead = be_u32(bytes, (j + PREFETCH_AHEAD) * INDEX_ID_LEN + 16);
            if let Some(id) = ids.get(ahead.wrapping_sub(start) as usize) {
                prefetch(id);
            }
        }
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

/// Entries ahead whose window slot is fetched while this one is compared:
/// the slots are spread over the window in random order, so each compare
/// would otherwise wait for memory.
const PREFETCH_AHEAD: usize = 256;

#[inline(always)]
fn prefetch(id: &[u8; 16]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(id.as_ptr().cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = id;
}

/// What the checks that need no event before it found of one event that
/// did not pass them all: the event rules checked alone, and whether the
/// blob it names is held. Most events pass, and are kept as `None`.
struct Alone {
    rules: CheckedAlone,
    held: Result<(), Error>,
}

/// The checks of the event at `position` that any thread may run: the
/// event rules that need no event before it, and that the blob a
/// `BlobStored` event names is held. `None` when all pass.
fn check_alone(
    rules: &EventRules,
    list: Option<&BlobList<'_>>,
    position: u64,
    event: &EventRef<'_>,
    hashed: Result<(), Error>,
) -> Option<Box<Alone>> {
    let checked = rules.check_alone(event, hashed, position);
    let held = match (&checked, list) {
        (Ok(Some(hash)), Some(list)) => list.find(hash).and_then(|found| match found {
            Some(_) => Ok(()),
            None => {
                let detail = format!("event {position} (BlobStored) names blob {hash}, which the bundle does not hold");
                Err(Error::rule(LOG, "blob reference", detail))
            }
        }),
        _ => Ok(()),
    };
    (checked.is_err() || held.is_err()).then(|| Box::new(Alone { rules: checked, held }))
}

/// The rest of the event rules, in log order, then the blob check: the
/// first problem of the event, in the order of the rules.
fn check_in_order(rules: &mut EventRules, event: &EventRef<'_>, alone: Option<Box<Alone>>) -> Result<(), Error> {
    let Alone { rules: checked, held } = alone.map_or(Alone { rules: Ok(None), held: Ok(()) }, |a| *a);
    rules.check_in_order(event, checked).map_err(|e| e.located(LOG))?;
    held
}

/// One chunk of a batch: each event with its offset (the event borrowed
/// from the log reader's buffer), and what the checks alone found of each.
type Chunk<'w> = (Vec<(u64, EventRef<'w>)>, Vec<Option<Box<Alone>>>);

/// The checks alone of the event at a place in the batch, given its
/// payload hash check ([`check_alone`] with the batch's first position).
type CheckAlone<'a> = &'a (dyn Fn(usize, &EventRef<'_>, Result<(), Error>) -> Option<Box<Alone>> + Sync);

/// Frames up to [`HASH_BATCH`] records in place, in the walk's buffer;
/// then, on every core, decodes them, checks their payload hashes (side
/// by side) and runs `alone` on each (with its place in the batch). Returns
/// the events in chunks, in order, up to the first that did not decode, and how the
/// batch ended: true when the log ended, or the first error (decoding, or
/// framing after the events framed).
fn decode_batch<'w>(
    walk: &'w mut crate::format::log::RecordWalk<'_>,
    encoding: crate::format::event::Encoding,
    framed: &mut Vec<(u64, usize, usize)>,
    alone: CheckAlone<'_>,
) -> (Vec<Chunk<'w>>, Result<bool, Error>) {
    framed.clear();
    let framing = walk.next_batch(HASH_BATCH, framed);
    let bytes: &'w [u8] = walk.buffer();
    let chunks: Vec<(Chunk<'w>, Option<Error>)> = framed
        .par_chunks(LANE_BATCH)
        .enumerate()
        .map(|(chunk, framed)| {
            let mut events = Vec::with_capacity(framed.len());
            let mut failed = None;
            for &(offset, start, len) in framed {
                // Decoded where it is kept (no copy of each event).
                events.push((offset, EventRef::EMPTY));
                let (_, slot) = events.last_mut().expect("just pushed");
                if let Err(e) = EventRef::decode_into(&bytes[start..start + len], encoding, LOG, offset, slot) {
                    events.pop();
                    failed = Some(e);
                    break;
                }
            }
            let payloads: Vec<&[u8]> = events.iter().map(|(_, e)| e.payload).collect();
            let mut digests = Vec::with_capacity(payloads.len());
            crate::digest::hash_each(&payloads, &mut digests);
            let first = chunk * LANE_BATCH;
            let found = (events.iter().zip(digests).enumerate())
                .map(|(i, ((_, event), digest))| alone(first + i, event, payload_hashed_to(event.payload_hash, digest)))
                .collect();
            ((events, found), failed)
        })
        .collect();
    let mut events = Vec::with_capacity(chunks.len());
    for (chunk, failed) in chunks {
        events.push(chunk);
        if let Some(e) = failed {
            return (events, Err(e));
        }
    }
    (events, framing)
}

/// The index's `offsets` and `times` entries for event `position` match the
/// record walked at `offset`.
fn check_entry(ix: &mut IndexCheck<'_>, position: u32, offset: u64, logical_time: u64) -> Result<(), Error> {
    let indexed = be_u64(ix.offsets.next_bytes(8)?, 0);
    if indexed != offset {
        return Err(Error::inconsistent(INDEX, "record offset", offset, format!("{indexed} (event {position})")));
    }
    let time = be_u64(ix.times.next_bytes(8)?, 0);
    if time != logical_time {
        return Err(Error::inconsistent(INDEX, "logical time", logical_time, format!("{time} (event {position})")));
    }
    Ok(())
}
