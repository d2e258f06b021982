//! The reading stage of replay: a second thread decodes events while the
//! fold applies the ones before (both cores busy; memory bounded by a few
//! batches in flight). Parsing payload members is shared: the reader does
//! it for a batch when the fold is behind (the channel is full), the fold
//! does it for the events the reader handed over unparsed.

use std::sync::mpsc::{self, TrySendError};

use super::payload;
use crate::bundle::ReplayBundle;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::event::{Event, EventKind};

/// Events per batch handed from the reader to the fold.
const BATCH: usize = 1024;
/// Batches in flight.
const IN_FLIGHT: usize = 4;

/// The `output` member of a `ToolCompleted` or `NodeCompleted` payload
/// (REPLAY.md §3), as far as it was parsed.
pub(super) type Output = Option<Result<Option<Digest>, String>>;

/// An event, with its payload's `output` member parsed or not yet.
pub(super) struct Prepared {
    pub event: Event,
    output: Option<Output>,
}

impl Prepared {
    fn new(event: Event) -> Self {
        Prepared { event, output: None }
    }

    /// Parses the payload's `output` member, once.
    pub(super) fn parse(&mut self) {
        if self.output.is_none() {
            let kind = self.event.kind;
            let wanted = matches!(kind, EventKind::ToolCompleted | EventKind::NodeCompleted);
            self.output = Some(wanted.then(|| payload::output_hash(&self.event.payload)));
        }
    }

    /// The `output` member (none for other kinds); [`Prepared::parse`] was called.
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
    mut apply: impl FnMut(&Prepared) -> Result<(), Error>,
) -> Result<(), Error> {
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<Prepared>, Error>>(IN_FLIGHT);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let mut events = bundle.events_from(start).take(usize::try_from(count).unwrap_or(usize::MAX)).peekable();
            while let Some(event) = events.next() {
                match event {
                    Ok(e) => batch.push(Prepared::new(e)),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
                if batch.len() == BATCH || events.peek().is_none() {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    let sent = match tx.try_send(Ok(full)) {
                        Ok(()) => Ok(()),
                        // The fold is behind: do its parsing here while it catches up.
                        Err(TrySendError::Full(Ok(mut full))) => {
                            full.iter_mut().for_each(Prepared::parse);
                            tx.send(Ok(full)).map_err(|_| ())
                        }
                        Err(_) => Err(()),
                    };
                    if sent.is_err() {
                        return; // the fold stopped
                    }
                }
            }
        });
        for batch in rx {
            for prepared in &mut batch? {
                prepared.parse();
                apply(prepared)?;
            }
        }
        Ok(())
    })
}
