//! The CBOR record of FORMAT.md §5.3, written and read by hand. Only one
//! encoding of an event is valid (definite lengths, shortest integers, the
//! ten keys in order); this reader accepts exactly that one as it reads,
//! byte by byte, where a general CBOR decoder (ciborium, kept as the tests'
//! reference) reads ids and hashes element by element through serde and
//! must re-encode every event to prove its form.

use uuid::Uuid;

use super::{EventKind, EventRef, Reader};
use crate::digest::Digest;

const MAP_OF_10: u8 = 0xA0 | 10;
const NULL: u8 = 0xF6;
const KEYS: [&str; 10] = [
    "event_id",
    "run_id",
    "node_id",
    "parent_event_id",
    "logical_time",
    "kind",
    "payload",
    "payload_hash",
    "prior_state_hash",
    "post_state_hash",
];
const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;

/// A data item's head: major type and argument, in the shortest form.
fn head(out: &mut Vec<u8>, major: u8, value: u64) {
    let m = major << 5;
    match value {
        0..=23 => out.push(m | value as u8),
        24..=0xFF => out.extend_from_slice(&[m | 24, value as u8]),
        0x100..=0xFFFF => {
            out.push(m | 25);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.push(m | 26);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn byte_array(out: &mut Vec<u8>, bytes: &[u8]) {
    head(out, ARRAY, bytes.len() as u64);
    for b in bytes {
        head(out, UINT, u64::from(*b));
    }
}

fn optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => byte_array(out, b),
        None => out.push(NULL),
    }
}

pub fn encode(e: &EventRef<'_>, out: &mut Vec<u8>) {
    out.reserve(200 + 3 * 16 * 2 + 3 * 32 * 2 + e.payload.len());
    out.push(MAP_OF_10);
    let mut key = 0;
    let mut next = |out: &mut Vec<u8>| {
        text(out, KEYS[key]);
        key += 1;
    };
    next(out);
    byte_array(out, e.event_id.as_bytes());
    next(out);
    byte_array(out, e.run_id.as_bytes());
    next(out);
    byte_array(out, e.node_id.as_bytes());
    next(out);
    optional(out, e.parent_event_id.as_ref().map(|u| u.as_bytes().as_slice()));
    next(out);
    head(out, UINT, e.logical_time);
    next(out);
    text(out, e.kind.name());
    next(out);
    head(out, BYTES, e.payload.len() as u64);
    out.extend_from_slice(e.payload);
    next(out);
    byte_array(out, e.payload_hash.as_bytes());
    next(out);
    optional(out, e.prior_state_hash.as_ref().map(|d| d.as_bytes().as_slice()));
    next(out);
    optional(out, e.post_state_hash.as_ref().map(|d| d.as_bytes().as_slice()));
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// A head of `major` type, its argument in the shortest form.
    #[inline]
    fn head(&mut self, major: u8, what: &str) -> Result<u64, String> {
        let start = self.at;
        let first = self.take(1, what)?[0];
        if first >> 5 != major {
            return Err(format!("{what} at byte {start}: CBOR major type {}, expected {major}", first >> 5));
        }
        let (value, shortest_from) = match first & 0x1F {
            ai @ 0..=23 => return Ok(u64::from(ai)),
            24 => (u64::from(self.take(1, what)?[0]), 24),
            25 => (u64::from(u16::from_be_bytes(self.take(2, what)?.try_into().expect("2"))), 0x100),
            26 => (u64::from(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4"))), 0x1_0000),
            27 => (u64::from_be_bytes(self.take(8, what)?.try_into().expect("8")), 0x1_0000_0000),
            _ => return Err(format!("{what} at byte {start}: indefinite or reserved length, not the canonical encoding")),
        };
        if value < shortest_from {
            return Err(format!("{what} at byte {start}: not the shortest integer encoding, not the canonical encoding"));
        }
        Ok(value)
    }

    /// The `index`th key: a text string shorter than 24 bytes, so its
    /// canonical head is the one byte `0x60 | len`.
    fn key(&mut self, index: usize) -> Result<(), String> {
        let (start, expected) = (self.at, KEYS[index]);
        let head = [(TEXT << 5) | expected.len() as u8];
        let end = start + 1 + expected.len();
        if self.bytes.get(start..start + 1) != Some(&head[..]) || self.bytes.get(start + 1..end) != Some(expected.as_bytes()) {
            return Err(format!("map key at byte {start}: expected {expected:?} (key {index}), the canonical order"));
        }
        self.at = end;
        Ok(())
    }

    fn byte_array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let start = self.at;
        let len = self.head(ARRAY, what)?;
        if len != N as u64 {
            return Err(format!("{what} at byte {start}: an array of {len} items, expected {N}"));
        }
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            // The two canonical forms of a byte, read directly; anything
            // else goes through the general reader for its error.
            match self.bytes.get(self.at..self.at + 2) {
                Some(&[v, _]) if v < 24 => (*b, self.at) = (v, self.at + 1),
                Some(&[0x18, v]) if v >= 24 => (*b, self.at) = (v, self.at + 2),
                _ => {
                    let v = self.head(UINT, what)?;
                    *b = u8::try_from(v).map_err(|_| format!("{what}: item {i} is {v}, not a byte"))?;
                }
            }
        }
        Ok(out)
    }

    /// The `index`th key, then its value as `read` reads it.
    fn field<T>(&mut self, index: usize, read: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        self.key(index)?;
        read(self)
    }

    /// `kind`: a variant name as a text string.
    fn kind(&mut self) -> Result<EventKind, String> {
        let len = self.head(TEXT, "kind")?;
        let name = self.take(usize::try_from(len).map_err(|_| "kind: length out of range".to_string())?, "kind")?;
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.name().as_bytes() == name)
            .ok_or_else(|| format!("unknown event kind {:?}", String::from_utf8_lossy(name)))
    }

    /// `payload`: a definite byte string.
    fn payload(&mut self) -> Result<&'a [u8], String> {
        let len = self.head(BYTES, "payload")?;
        self.take(usize::try_from(len).map_err(|_| format!("payload length {len} is out of range"))?, "payload")
    }

    fn optional<const N: usize>(&mut self, what: &str) -> Result<Option<[u8; N]>, String> {
        if self.peek() == Some(NULL) {
            self.at += 1;
            return Ok(None);
        }
        self.byte_array(what).map(Some)
    }
}

/// Decodes a record without copying its payload; only the canonical
/// encoding is accepted.
pub fn decode_ref(record: &[u8]) -> Result<EventRef<'_>, String> {
    let mut r = Reader { bytes: record, at: 0 };
    if r.take(1, "event")?[0] != MAP_OF_10 {
        return Err("not a definite map of 10 entries (0xAA), as the canonical encoding starts".to_string());
    }
    // Fields are read in the order they are written, each after its key.
    let event = EventRef {
        event_id: Uuid::from_bytes(r.field(0, |r| r.byte_array("event_id"))?),
        run_id: Uuid::from_bytes(r.field(1, |r| r.byte_array("run_id"))?),
        node_id: Uuid::from_bytes(r.field(2, |r| r.byte_array("node_id"))?),
        parent_event_id: r.field(3, |r| r.optional("parent_event_id"))?.map(Uuid::from_bytes),
        logical_time: r.field(4, |r| r.head(UINT, "logical_time"))?,
        kind: r.field(5, Reader::kind)?,
        payload: r.field(6, Reader::payload)?,
        payload_hash: Digest(r.field(7, |r| r.byte_array("payload_hash"))?),
        prior_state_hash: r.field(8, |r| r.optional("prior_state_hash"))?.map(Digest),
        post_state_hash: r.field(9, |r| r.optional("post_state_hash"))?.map(Digest),
    };
    super::read_to_end(record, r.at, event)
}
