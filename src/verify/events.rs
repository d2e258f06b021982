//! Log and index checks (FORMAT.md §5.1, §6, §10 step 5). One sequential
//! pass over the log hashes every byte as it decodes it, applies the event
//! rules, and compares each event with the index's `offsets` and `times`
//! entries (read side by side). Records are framed in batches where the
//! reader holds them; each batch is decoded in place, its payloads hashed
//! and the rules that need no earlier event checked on every core; then
//! the rest (run id, time order, index entries, ids) in log order, so that
//! the first problem in the log is the one reported. A batch is checked in
//! order while the next one is framed and decoded: decoding keeps of each
//! event only what the checks in order need ([`Seen`]).
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
}

/// What the checks in log order need of an event. The decoded event
/// borrows the reader's buffer, which framing the next batch reuses.
struct Seen {
    offset: u64,
    logical_time: u64,
    run_id: Uuid,
    event_id: Uuid,
}

/// One chunk of a decoded batch: what the checks in order need of each
/// event, what the checks alone found of each, with a tap the events
/// themselves (their payload buffers reused from batch to batch), and the
/// error of the record that ended the chunk early, if one did.
#[derive(Default)]
struct Decoded {
    seen: Vec<Seen>,
    alone: Vec<Option<Box<Alone>>>,
    events: Vec<Event>,
    failed: Option<Error>,
}

/// A decoded batch, its chunks in log order, and how it ended: true when
/// the log ended, or the first error (decoding, or framing after the
/// events framed).
struct Batch {
    chunks: Vec<Decoded>,
    end: Result<bool, Error>,
}

impl InOrder<'_> {
    /// Checks a decoded batch in order ([`InOrder::event`]); then, if its
    /// events all passed, reports how it ended if that was an error (a
    /// record that did not frame or decode comes after them in the log).
    /// Returns whether the pass goes on, whether the log ended with this
    /// batch, and the chunks for reuse.
    fn batch(&mut self, verifier: &Verifier<'_>, batch: Batch, cx: &LogContext<'_>) -> (bool, bool, Vec<Decoded>) {
        let Batch { mut chunks, end } = batch;
        let passed = chunks.iter_mut().all(|chunk| {
            let tapped = chunk.events.iter().map(Some).chain(std::iter::repeat(None));
            chunk
                .seen
                .iter()
                .zip(chunk.alone.drain(..))
                .zip(tapped)
                .all(|((seen, alone), event)| self.event(verifier, seen, alone, event, cx))
        });
        match end {
            _ if !passed => (false, false, chunks),
            Ok(done) => (true, done, chunks),
            Err(e) => {
                verifier.findings.error(LOG, e);
                (false, false, chunks)
            }
        }
    }

    /// Checks the next event in order: the event rules (and `alone`, what
    /// the checks that need no event before it found), the index's entries
    /// for it, and its id, once its window is full. The tap sees `event`
    /// once it passed the rules. False when it broke a rule: the pass stops
    /// there.
    fn event(
        &mut self,
        verifier: &Verifier<'_>,
        seen: &Seen,
        alone: Option<Box<Alone>>,
        event: Option<&Event>,
        cx: &LogContext<'_>,
    ) -> bool {
        let position = self.rules.count() as u32;
        if let Err(e) = check_in_order(&mut self.rules, seen, alone) {
            verifier.findings.error(LOG, e);
            return false;
        }
        if let (Some(on_event), Some(event)) = (cx.on_event, event) {
            on_event(position, event);
        }
        if let Some(ix) = &mut self.index {
            if let Err(e) = check_entry(ix, position, seen.offset, seen.logical_time) {
                verifier.findings.error(INDEX, e);
                self.index = None;
            }
        }
        self.window.push(*seen.event_id.as_bytes());
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
        let mut pass = InOrder { rules, index, window: Vec::with_capacity(count.min(self.id_window)), window_start: 0, ids_checked: false };
        // The checks alone read only the rules' settings (run id, nodes).
        let alone_rules = pass.rules.clone();
        let tapping = cx.on_event.is_some();
        let mut walk = if cx.log_outboard.is_some() { log.walk_with_outboard() } else { log.walk(true) };
        let (mut walked, mut framed, mut decoded) = (0u64, Vec::new(), 0u64);
        let (mut pending, mut spare): (Option<Batch>, Vec<Decoded>) = (None, Vec::new());
        let (mut more, mut complete, mut stopped) = (true, false, false);
        while !stopped && (more || pending.is_some()) {
            // Frame and decode the next batch (payload hashes and the
            // checks alone on every core) while the one before is checked
            // in order. The first problem in log order is reported, and
            // the pass stops there: a record that does not frame or decode
            // is reported once the events before it passed.
            let first = decoded;
            let alone = |i: usize, event: &EventRef<'_>, hashed| check_alone(&alone_rules, cx.list, first + i as u64, event, hashed);
            let reuse = std::mem::take(&mut spare);
            let (next, checked) = rayon::join(
                || more.then(|| decode_batch(&mut walk, log.header().encoding, &mut framed, &alone, tapping, reuse)),
                || pending.take().map(|batch| pass.batch(self, batch, cx)),
            );
            if let Some((go_on, done, chunks)) = checked {
                (stopped, complete, spare) = (!go_on, done, chunks);
            }
            if let Some(batch) = next {
                decoded += batch.chunks.iter().map(|c| c.seen.len() as u64).sum::<u64>();
                more = matches!(batch.end, Ok(false));
                pending = Some(batch);
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
fn check_in_order(rules: &mut EventRules, seen: &Seen, alone: Option<Box<Alone>>) -> Result<(), Error> {
    let Alone { rules: checked, held } = alone.map_or(Alone { rules: Ok(None), held: Ok(()) }, |a| *a);
    rules.check_in_order(seen.run_id, seen.logical_time, checked).map_err(|e| e.located(LOG))?;
    held
}

/// The checks alone of the event at a place in the batch, given its
/// payload hash check ([`check_alone`] with the batch's first position).
type CheckAlone<'a> = &'a (dyn Fn(usize, &EventRef<'_>, Result<(), Error>) -> Option<Box<Alone>> + Sync);

/// Frames up to [`HASH_BATCH`] records in place, in the walk's buffer;
/// then, on every core, decodes them, checks their payload hashes (side
/// by side), runs `alone` on each (with its place in the batch) and keeps
/// what the checks in order need (and, with `tapping`, the event). The
/// chunks end at the first record that did not decode. `reuse`: chunks of
/// an earlier batch, for their buffers.
fn decode_batch(
    walk: &mut crate::format::log::RecordWalk<'_>,
    encoding: crate::format::event::Encoding,
    framed: &mut Vec<(u64, usize, usize)>,
    alone: CheckAlone<'_>,
    tapping: bool,
    mut chunks: Vec<Decoded>,
) -> Batch {
    framed.clear();
    let end = walk.next_batch(HASH_BATCH, framed);
    let bytes = walk.buffer();
    chunks.resize_with(framed.len().div_ceil(LANE_BATCH), Decoded::default);
    chunks.par_iter_mut().zip(framed.par_chunks(LANE_BATCH)).enumerate().for_each(|(chunk, (out, framed))| {
        out.seen.clear();
        out.alone.clear();
        out.failed = None;
        let mut events = Vec::with_capacity(framed.len());
        for &(offset, start, len) in framed {
            // Decoded where it is kept (no copy of each event).
            events.push(EventRef::EMPTY);
            let slot = events.last_mut().expect("just pushed");
            if let Err(e) = EventRef::decode_into(&bytes[start..start + len], encoding, LOG, offset, slot) {
                events.pop();
                out.failed = Some(e);
                break;
            }
        }
        let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload).collect();
        let mut digests = Vec::with_capacity(payloads.len());
        crate::digest::hash_each(&payloads, &mut digests);
        let first = chunk * LANE_BATCH;
        for (i, ((event, digest), &(offset, _, _))) in events.iter().zip(digests).zip(framed).enumerate() {
            out.alone.push(alone(first + i, event, payload_hashed_to(event.payload_hash, digest)));
            out.seen.push(Seen { offset, logical_time: event.logical_time, run_id: event.run_id, event_id: event.event_id });
        }
        if tapping {
            out.events.resize_with(events.len(), || EventRef::EMPTY.to_event());
            for (event, kept) in events.iter().zip(&mut out.events) {
                event.fill(kept);
            }
        }
    });
    match chunks.iter().position(|c| c.failed.is_some()) {
        Some(at) => {
            chunks.truncate(at + 1);
            let e = chunks[at].failed.take().expect("found");
            Batch { chunks, end: Err(e) }
        }
        None => Batch { chunks, end },
    }
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
