//! The postcard record layout of FORMAT.md §5.2, coded by hand: serde
//! would emit the 144 bytes of ids and hashes one call per byte. Tests prove
//! the output byte-identical to `postcard::to_allocvec`. The decoder accepts
//! exactly the canonical encodings (minimal varints, option tags 0 or 1).

use uuid::Uuid;

use super::{Event, EventKind, EventRef, Reader};
use crate::digest::Digest;

pub fn encode(e: &Event, out: &mut Vec<u8>) {
    out.reserve(48 + 17 + 10 + 5 + 10 + e.payload.len() + 32 + 66);
    out.extend_from_slice(e.event_id.as_bytes());
    out.extend_from_slice(e.run_id.as_bytes());
    out.extend_from_slice(e.node_id.as_bytes());
    option(out, e.parent_event_id.as_ref().map(Uuid::as_bytes));
    varint(out, e.logical_time);
    varint(out, e.kind as u64);
    varint(out, e.payload.len() as u64);
    out.extend_from_slice(&e.payload);
    out.extend_from_slice(e.payload_hash.as_bytes());
    option(out, e.prior_state_hash.as_ref().map(Digest::as_bytes));
    option(out, e.post_state_hash.as_ref().map(Digest::as_bytes));
}

fn option<const N: usize>(out: &mut Vec<u8>, value: Option<&[u8; N]>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(bytes);
        }
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    fn option<const N: usize>(&mut self, what: &str) -> Result<Option<[u8; N]>, String> {
        match self.take(1, what)?[0] {
            0 => Ok(None),
            1 => self.array(what).map(Some),
            tag => Err(format!("{what}: option tag {tag} at byte {}, expected 0 or 1", self.at - 1)),
        }
    }

    /// LEB128 of at most `max_bytes` bytes and at most `max`, canonical (no overlong form).
    fn varint(&mut self, what: &str, max_bytes: usize, max: u64) -> Result<u64, String> {
        let start = self.at;
        let mut value = 0u64;
        for i in 0..max_bytes {
            let byte = self.take(1, what)?[0];
            let bits = u64::from(byte & 0x7F);
            if i == max_bytes - 1 && bits > (max >> (7 * i)) {
                return Err(format!("{what} at byte {start}: varint out of range"));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(format!("{what} at byte {start}: overlong varint, not the canonical encoding"));
                }
                if value > max {
                    return Err(format!("{what} at byte {start}: varint out of range"));
                }
                return Ok(value);
            }
        }
        Err(format!("{what} at byte {start}: varint longer than {max_bytes} bytes"))
    }
}

/// Decodes a record without copying its payload.
pub fn decode_ref(record: &[u8]) -> Result<EventRef<'_>, String> {
    let mut r = Reader { bytes: record, at: 0 };
    let event_id = Uuid::from_bytes(r.array("event_id")?);
    let run_id = Uuid::from_bytes(r.array("run_id")?);
    let node_id = Uuid::from_bytes(r.array("node_id")?);
    let parent_event_id = r.option("parent_event_id")?.map(Uuid::from_bytes);
    let logical_time = r.varint("logical_time", 10, u64::MAX)?;
    let kind = r.varint("kind", 5, u64::from(u32::MAX))?;
    let kind = *EventKind::ALL.get(kind as usize).ok_or_else(|| format!("unknown event kind {kind}"))?;
    let len = r.varint("payload length", 10, u64::MAX)?;
    let len = usize::try_from(len).map_err(|_| format!("payload length {len} is out of range"))?;
    let payload = r.take(len, "payload")?;
    let payload_hash = Digest(r.array("payload_hash")?);
    let prior_state_hash = r.option("prior_state_hash")?.map(Digest);
    let post_state_hash = r.option("post_state_hash")?.map(Digest);
    let event = EventRef {
        event_id,
        run_id,
        node_id,
        parent_event_id,
        logical_time,
        kind,
        payload,
        payload_hash,
        prior_state_hash,
        post_state_hash,
    };
    super::read_to_end(record, r.at, event)
}
