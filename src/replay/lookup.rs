//! What the fold looks up outside the event at hand, in bounded memory:
//! the position of a parent event, whether the bundle holds a blob, and the
//! causal chain of an event.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

use super::ChainLink;
use crate::bundle::ReplayBundle;
use crate::digest::Digest;
use crate::error::Error;

/// Ids of this many most recent events are remembered; older parents are
/// found through the index's sorted id section.
const RECENT_EVENTS: usize = 1 << 16;

/// Blob lists up to this many entries are held in memory (32 bytes each)
/// for membership tests; longer ones are searched on disk.
const BLOBS_IN_MEMORY: u32 = 1 << 20;

/// Positions of events by id: the recent ones from memory, the rest from the
/// index (a binary search over its id section).
pub(super) struct Parents {
    recent: HashMap<Uuid, u64>,
    order: VecDeque<Uuid>,
}

impl Parents {
    pub(super) fn new() -> Self {
        Parents { recent: HashMap::with_capacity(RECENT_EVENTS), order: VecDeque::with_capacity(RECENT_EVENTS) }
    }

    /// Where the event `id` is in the log, if it is in the log at all.
    pub(super) fn position(&self, bundle: &ReplayBundle, id: &Uuid) -> Result<Option<u64>, Error> {
        if let Some(p) = self.recent.get(id) {
            return Ok(Some(*p));
        }
        Ok(bundle.position_of_id(id)?.map(u64::from))
    }

    /// Remembers that event `id` is at `position`.
    pub(super) fn record(&mut self, id: Uuid, position: u64) {
        if self.order.len() == RECENT_EVENTS {
            if let Some(old) = self.order.pop_front() {
                self.recent.remove(&old);
            }
        }
        self.order.push_back(id);
        self.recent.insert(id, position);
    }
}

/// Whether the bundle holds a blob.
pub(super) enum Blobs {
    /// Every listed hash, sorted (the list's own order).
    Memory(Vec<Digest>),
    /// Too many to hold: binary search in `blobs.cath-list`.
    List,
}

impl Blobs {
    pub(super) fn new(bundle: &ReplayBundle) -> Result<Self, Error> {
        if bundle.blob_count() > BLOBS_IN_MEMORY {
            return Ok(Blobs::List);
        }
        let hashes = bundle.blob_records().map(|r| r.map(|r| r.header.hash)).collect::<Result<Vec<_>, _>>()?;
        Ok(Blobs::Memory(hashes))
    }

    pub(super) fn holds(&self, bundle: &ReplayBundle, hash: &Digest) -> Result<bool, Error> {
        match self {
            Blobs::Memory(hashes) => Ok(hashes.binary_search(hash).is_ok()),
            Blobs::List => Ok(bundle.blob_record(hash)?.is_some()),
        }
    }
}

/// The causal chain above an event whose parent is `parent`: the parent,
/// its parent, and so on to a root (an event with no parent), nearest
/// first, at most `limit` links. The bool is true when the chain was cut at
/// `limit`. The walk stops where a parent is missing or not earlier than
/// its child (a causality violation), so it always ends.
pub(super) fn chain(
    bundle: &ReplayBundle,
    parent: Option<Uuid>,
    below: u64,
    limit: usize,
    name: &dyn Fn(&Uuid) -> Option<String>,
) -> Result<(Vec<ChainLink>, bool), Error> {
    let mut links = Vec::new();
    let (mut next, mut below) = (parent, below);
    while let Some(id) = next {
        let Some((position, event)) = bundle.event_by_id(&id)? else { break };
        let position = u64::from(position);
        if position >= below {
            break;
        }
        if links.len() == limit {
            return Ok((links, true));
        }
        links.push(ChainLink { position, event_id: id, kind: event.kind, node: name(&event.node_id) });
        (next, below) = (event.parent_event_id, position);
    }
    Ok((links, false))
}
