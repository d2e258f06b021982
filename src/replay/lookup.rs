//! What the fold looks up outside the event at hand, in bounded memory:
//! the position of a parent event, whether the bundle holds a blob, and the
//! causal chain of an event.

use uuid::Uuid;

use super::ChainLink;
use crate::bundle::ReplayBundle;
use crate::digest::Digest;
use crate::error::Error;

/// Blob lists up to this many entries are held in memory (32 bytes each)
/// for membership tests; longer ones are searched on disk.
const BLOBS_IN_MEMORY: u32 = 1 << 20;

/// Slots of the table of recent event ids (a power of two).
const RECENT_SLOTS: usize = 1 << 16;

/// Positions of events by id: recent ones from a direct-mapped table
/// (each id has one slot; a newer id in the same slot replaces it), the rest
/// from the index (a binary search over its sorted id section). The table
/// costs one multiply and one compare per event; ids built to share slots
/// only send more lookups to the index.
pub(super) struct Parents {
    slots: Vec<(Uuid, u64)>,
}

fn slot(id: &Uuid) -> usize {
    let v = id.as_u128();
    let folded = (v as u64) ^ ((v >> 64) as u64);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECENT_SLOTS.trailing_zeros())) as usize
}

impl Parents {
    pub(super) fn new() -> Self {
        Parents { slots: vec![(Uuid::nil(), u64::MAX); RECENT_SLOTS] }
    }

    /// Where the event `id` is in the log, if it is in the log at all.
    pub(super) fn position(&self, bundle: &ReplayBundle, id: &Uuid) -> Result<Option<u64>, Error> {
        let (held, position) = self.slots[slot(id)];
        if held == *id && position != u64::MAX {
            return Ok(Some(position));
        }
        Ok(bundle.position_of_id(id)?.map(u64::from))
    }

    /// Remembers that event `id` is at `position`.
    pub(super) fn record(&mut self, id: Uuid, position: u64) {
        self.slots[slot(&id)] = (id, position);
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
