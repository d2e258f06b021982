//! The canonical JSON line of an event (the form
//! [`EventRef::write_json_line`](super::EventRef::write_json_line) writes,
//! which the run store requires), read in one pass.
//!
//! The canonical line has one layout: the keys in schema order, no spaces,
//! every `null` present, ids as lowercase hyphenated UUIDs, hashes as 64
//! lowercase hex digits, the time as decimal digits without a leading zero,
//! the kind by name and the payload as padded standard base64. This reader
//! checks each part against that layout as it reads and returns the event
//! only when the line is exactly its canonical form; anything else gives
//! `None`, and the caller then takes the general path (a JSON parser, then
//! the canonical form written back and compared), which names what is wrong.
//! It accepts no line the general path refuses and returns the same event;
//! the tests hold it to that against the general path on changed lines.

use base64::Engine as _;
use uuid::Uuid;

use super::{Event, EventKind};
use crate::digest::Digest;

/// The event whose canonical line is exactly `line`, or `None`.
pub(crate) fn read_canonical(line: &[u8]) -> Option<Event> {
    let mut r = Line { line, at: 0 };
    r.literal(b"{\"event_id\":")?;
    let event_id = r.uuid()?;
    r.literal(b",\"run_id\":")?;
    let run_id = r.uuid()?;
    r.literal(b",\"node_id\":")?;
    let node_id = r.uuid()?;
    r.literal(b",\"parent_event_id\":")?;
    let parent_event_id = r.or_null(Line::uuid)?;
    r.literal(b",\"logical_time\":")?;
    let logical_time = r.number()?;
    r.literal(b",\"kind\":")?;
    let kind = r.kind()?;
    r.literal(b",\"payload\":")?;
    let payload = r.base64()?;
    r.literal(b",\"payload_hash\":")?;
    let payload_hash = r.digest()?;
    r.literal(b",\"prior_state_hash\":")?;
    let prior_state_hash = r.or_null(Line::digest)?;
    r.literal(b",\"post_state_hash\":")?;
    let post_state_hash = r.or_null(Line::digest)?;
    r.literal(b"}")?;
    (r.at == line.len()).then_some(Event {
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
    })
}

struct Line<'a> {
    line: &'a [u8],
    at: usize,
}

impl<'a> Line<'a> {
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        let found = self.line.get(self.at..self.at + expected.len())?;
        self.at += expected.len();
        (found == expected).then_some(())
    }

    /// A string's contents: the bytes up to the next quote (none of the
    /// canonical values contains a quote or a backslash).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.literal(b"\"")?;
        let len = self.line[self.at..].iter().position(|&b| b == b'"')?;
        let text = &self.line[self.at..self.at + len];
        self.at += len + 1;
        Some(text)
    }

    /// `null`, or what `read` reads.
    fn or_null<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.line[self.at..].starts_with(b"null") {
            self.at += 4;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// A lowercase hyphenated UUID (8-4-4-4-12 hex digits).
    fn uuid(&mut self) -> Option<Uuid> {
        crate::text::decode_uuid(self.string()?)
    }

    /// 64 lowercase hex digits.
    fn digest(&mut self) -> Option<Digest> {
        crate::text::decode_hex_bytes(self.string()?).map(Digest)
    }

    /// Decimal digits of a u64, no leading zero (but `0` itself).
    fn number(&mut self) -> Option<u64> {
        let digits = self.line[self.at..].iter().take_while(|b| b.is_ascii_digit()).count();
        let text = &self.line[self.at..self.at + digits];
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        self.at += digits;
        text.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    }

    fn kind(&mut self) -> Option<EventKind> {
        let name = self.string()?;
        EventKind::from_name(name)
    }

    /// Padded standard base64 in its one canonical spelling: the decoder
    /// refuses missing or extra padding, non-zero trailing bits and any
    /// byte outside the alphabet.
    fn base64(&mut self) -> Option<Vec<u8>> {
        let text = self.string()?;
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }
}
