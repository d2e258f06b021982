//! The reading stage of replay: a second thread decodes records into the
//! compact steps the fold needs while the fold applies the ones before
//! (both cores busy; memory bounded by a few batches in flight). A step
//! keeps its payload only for the kinds whose payload replay reads.
//! Parsing `output` members is shared: the reader does it for a batch when
//! the fold is behind (the channel is full), the fold does it otherwise.

use std::sync::mpsc::{self, TrySendError};

use uuid::Uuid;

use super::payload;
use crate::bundle::ReplayBundle;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::event::{Event, EventKind, EventRef};
use crate::format::EVENTS_FILE;

/// Steps per batch handed from the reader to the fold.
const BATCH: usize = 1024;
/// Batches in flight.
const IN_FLIGHT: usize = 4;

/// The `output` member of a `ToolCompleted` or `NodeCompleted` payload
/// (REPLAY.md §3): none for other kinds.
pub(super) type Output = Option<Result<Option<Digest>, String>>;

/// What the fold needs of one event.
pub(super) struct Step {
    pub event_id: Uuid,
    pub node_id: Uuid,
    pub parent_event_id: Option<Uuid>,
    pub logical_time: u64,
    pub kind: EventKind,
    pub prior_state_hash: Option<Digest>,
    pub post_state_hash: Option<Digest>,
    /// For `BlobStored`: the blob it names, or `None` for a malformed payload.
    pub stored: Option<Option<Digest>>,
    /// The payload of `ToolCompleted`, `NodeCompleted` and `NodeFailed`.
    payload: Option<Box<[u8]>>,
    output: Option<Output>,
}

impl Step {
    fn new(e: EventRef<'_>) -> Self {
        let keep = matches!(e.kind, EventKind::ToolCompleted | EventKind::NodeCompleted | EventKind::NodeFailed);
        Step {
            event_id: e.event_id,
            node_id: e.node_id,
            parent_event_id: e.parent_event_id,
            logical_time: e.logical_time,
            kind: e.kind,
            prior_state_hash: e.prior_state_hash,
            post_state_hash: e.post_state_hash,
            stored: e.stored_blob().map(Result::ok),
            payload: keep.then(|| e.payload.into()),
            output: None,
        }
    }

    /// The payload, where it was kept (empty otherwise).
    pub(super) fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }

    /// Parses the payload's `output` member, once.
    pub(super) fn parse(&mut self) {
        if self.output.is_none() {
            let wanted = matches!(self.kind, EventKind::ToolCompleted | EventKind::NodeCompleted);
            self.output = Some(wanted.then(|| payload::output_hash(self.payload())));
        }
    }

    /// The `output` member; [`Step::parse`] was called.
    pub(super) fn output(&self) -> &Output {
        self.output.as_ref().unwrap_or(&None)
    }
}

/// Calls `apply` on the `count` events from position `start`, in order,
/// decoded on another thread. Stops at the first error of either side.
pub(super) fn each_event(
    bundle: &ReplayBundle,
    start: u32,
    count: u64,
    mut apply: impl FnMut(&Step) -> Result<(), Error>,
) -> Result<(), Error> {
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<Step>, Error>>(IN_FLIGHT);
    // Spent batches go back to the reader, which frees what it allocated
    // (freeing on the thread that allocated keeps the allocator uncontended)
    // and reuses their space.
    let (spent_tx, spent_rx) = mpsc::channel::<Vec<Step>>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Err(e) = read(bundle, start, count, &tx, &spent_rx) {
                let _ = tx.send(Err(e));
            }
        });
        for batch in rx {
            let mut batch = batch?;
            for step in &mut batch {
                step.parse();
                apply(step)?;
            }
            let _ = spent_tx.send(batch);
        }
        Ok(())
    })
}

/// The reader: sends batches of steps until `count` were sent or the fold
/// hung up.
fn read(
    bundle: &ReplayBundle,
    start: u32,
    count: u64,
    tx: &mpsc::SyncSender<Result<Vec<Step>, Error>>,
    spent: &mpsc::Receiver<Vec<Step>>,
) -> Result<(), Error> {
    let Some(mut walk) = bundle.records_from(start)? else { return Ok(()) };
    let encoding = bundle.encoding();
    let mut left = count;
    let mut batch = Vec::with_capacity(BATCH);
    while left > 0 {
        let Some((offset, record)) = walk.next_record()? else { break };
        batch.push(Event::with_decoded(record, encoding, EVENTS_FILE, offset, Step::new)?);
        left -= 1;
        if batch.len() == BATCH || left == 0 {
            let next = match spent.try_recv() {
                Ok(mut old) => {
                    old.clear();
                    old
                }
                Err(_) => Vec::with_capacity(BATCH),
            };
            let full = std::mem::replace(&mut batch, next);
            let sent = match tx.try_send(Ok(full)) {
                Ok(()) => Ok(()),
                // The fold is behind: do its parsing here while it catches up.
                Err(TrySendError::Full(Ok(mut full))) => {
                    full.iter_mut().for_each(Step::parse);
                    tx.send(Ok(full)).map_err(|_| ())
                }
                Err(_) => Err(()),
            };
            if sent.is_err() {
                return Ok(()); // the fold stopped
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
    Ok(())
}
