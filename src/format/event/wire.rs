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
    #[inline]
    fn varint(&mut self, what: &str, max_bytes: usize, max: u64) -> Result<u64, String> {
        let start = self.at;
        let mut value = 0u64;
        for (i, &byte) in self.bytes[start..].iter().take(max_bytes).enumerate() {
            let bits = u64::from(byte & 0x7F);
            if i == max_bytes - 1 && bits > (max >> (7 * i)) {
                return Err(varint_error(what, start, "varint out of range"));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(varint_error(what, start, "overlong varint, not the canonical encoding"));
                }
                if value > max {
                    return Err(varint_error(what, start, "varint out of range"));
                }
                self.at = start + i + 1;
                return Ok(value);
            }
        }
        if self.bytes.len() - start < max_bytes {
            // Every byte left continues the varint: it needs one more.
            self.at = self.bytes.len();
            return Err(self.short(1, what));
        }
        Err(varint_error(what, start, &format!("varint longer than {max_bytes} bytes")))
    }
}

#[cold]
#[inline(never)]
fn varint_error(what: &str, start: usize, problem: &str) -> String {
    format!("{what} at byte {start}: {problem}")
}

/// Decodes a record into `out`, without copying its payload.
#[inline]
pub fn decode_into<'a>(record: &'a [u8], out: &mut EventRef<'a>) -> Result<(), String> {
    let mut r = Reader { bytes: record, at: 0 };
    out.event_id = Uuid::from_bytes(r.array("event_id")?);
    out.run_id = Uuid::from_bytes(r.array("run_id")?);
    out.node_id = Uuid::from_bytes(r.array("node_id")?);
    out.parent_event_id = r.option("parent_event_id")?.map(Uuid::from_bytes);
    out.logical_time = r.varint("logical_time", 10, u64::MAX)?;
    let kind = r.varint("kind", 5, u64::from(u32::MAX))?;
    out.kind = *EventKind::ALL.get(kind as usize).ok_or_else(|| format!("unknown event kind {kind}"))?;
    let len = r.varint("payload length", 10, u64::MAX)?;
    let len = usize::try_from(len).map_err(|_| format!("payload length {len} is out of range"))?;
    out.payload = r.take(len, "payload")?;
    out.payload_hash = Digest(r.array("payload_hash")?);
    out.prior_state_hash = r.option("prior_state_hash")?.map(Digest);
    out.post_state_hash = r.option("post_state_hash")?.map(Digest);
    super::end_of_record(record, r.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], max_bytes: usize, max: u64) -> Result<(u64, usize), String> {
        let mut r = Reader { bytes, at: 0 };
        r.varint("v", max_bytes, max).map(|v| (v, r.at))
    }

    /// Every value's canonical encoding reads back, and every other
    /// spelling of it is refused with the reason.
    #[test]
    fn varints_read_exactly_their_canonical_form() {
        let values = [0, 1, 0x7F, 0x80, 0x3FFF, 0x4000, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX - 1, u64::MAX];
        for value in values {
            let mut bytes = Vec::new();
            varint(&mut bytes, value);
            let mut padded = bytes.clone();
            padded.extend_from_slice(&[0xAA, 0x01]);
            assert_eq!(read(&padded, 10, u64::MAX), Ok((value, bytes.len())), "{value}");
            // Every proper prefix is short by one byte.
            for cut in 0..bytes.len() {
                assert_eq!(read(&bytes[..cut], 10, u64::MAX), Err(format!("v at byte {cut} needs 1 bytes, 0 remain")));
            }
            // An overlong spelling: a continuation bit and a zero byte.
            if bytes.len() < 10 {
                let mut overlong = bytes.clone();
                *overlong.last_mut().unwrap() |= 0x80;
                overlong.push(0);
                assert_eq!(read(&overlong, 10, u64::MAX), Err("v at byte 0: overlong varint, not the canonical encoding".into()));
            }
            let fits = value <= u64::from(u32::MAX);
            let as_u32 = read(&bytes, 5, u64::from(u32::MAX));
            assert_eq!(as_u32.is_ok(), fits, "{value} as a u32");
            if !fits {
                // Out of range once the fifth byte holds more than the
                // top 4 bits of a u32; else the varint goes on too long.
                let expected =
                    if bytes.len() > 5 && bytes[4] & 0x7F <= 0x0F { "varint longer than 5 bytes" } else { "varint out of range" };
                assert_eq!(as_u32, Err(format!("v at byte 0: {expected}")));
            }
        }
        assert_eq!(read(&[0xFF; 11], 10, u64::MAX), Err("v at byte 0: varint out of range".into()));
        assert_eq!(read(&[0x80; 11], 10, u64::MAX), Err("v at byte 0: varint longer than 10 bytes".into()));
        assert_eq!(read(&[0x80, 0x80, 0x80, 0x80, 0x10], 5, u64::from(u32::MAX)), Err("v at byte 0: varint out of range".into()));
        assert_eq!(read(&[], 10, u64::MAX), Err("v at byte 0 needs 1 bytes, 0 remain".into()));
    }
}
