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
/// Each key's canonical encoding (its head `0x60 | len`, then its bytes)
/// and that encoding's length.
const ENCODED_KEYS: [([u8; 24], usize); 10] = encode_keys();

const fn encode_keys() -> [([u8; 24], usize); 10] {
    let mut out = [([0u8; 24], 0); 10];
    let mut i = 0;
    while i < KEYS.len() {
        let key = KEYS[i].as_bytes();
        assert!(key.len() < 24, "a key's head is one byte");
        out[i].0[0] = (TEXT << 5) | key.len() as u8;
        let mut j = 0;
        while j < key.len() {
            out[i].0[1 + j] = key[j];
            j += 1;
        }
        out[i].1 = 1 + key.len();
        i += 1;
    }
    out
}

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
            return Err(head_error(what, start, &format!("CBOR major type {}, expected {major}", first >> 5)));
        }
        let (value, shortest_from) = match first & 0x1F {
            ai @ 0..=23 => return Ok(u64::from(ai)),
            24 => (u64::from(self.take(1, what)?[0]), 24),
            25 => (u64::from(u16::from_be_bytes(self.take(2, what)?.try_into().expect("2"))), 0x100),
            26 => (u64::from(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4"))), 0x1_0000),
            27 => (u64::from_be_bytes(self.take(8, what)?.try_into().expect("8")), 0x1_0000_0000),
            _ => return Err(head_error(what, start, "indefinite or reserved length, not the canonical encoding")),
        };
        if value < shortest_from {
            return Err(head_error(what, start, "not the shortest integer encoding, not the canonical encoding"));
        }
        Ok(value)
    }

    /// The `index`th key: a text string shorter than 24 bytes, so its
    /// canonical head is the one byte `0x60 | len`.
    #[inline(always)]
    fn key(&mut self, index: usize) -> Result<(), String> {
        let (start, (encoded, len)) = (self.at, &ENCODED_KEYS[index]);
        if self.bytes.get(start..start + len) != Some(&encoded[..*len]) {
            let expected = KEYS[index];
            return Err(format!("map key at byte {start}: expected {expected:?} (key {index}), the canonical order"));
        }
        self.at = start + len;
        Ok(())
    }

    /// A definite array of `N` byte values, each in its shortest form, into
    /// `out`. The bytes are stored where the caller keeps them, not
    /// returned: a 16- or 32-byte value read back right after its bytes
    /// were stored one at a time waits for those stores to complete.
    fn byte_array<const N: usize>(&mut self, what: &str, out: &mut [u8; N]) -> Result<(), String> {
        let start = self.at;
        // The canonical head of an array of N items, then the items.
        let head: &[u8] = if N < 24 { &[(ARRAY << 5) | N as u8] } else { &[(ARRAY << 5) | 24, N as u8] };
        if self.bytes[start..].starts_with(head) {
            if let Some(used) = items::read(&self.bytes[start + head.len()..], out) {
                self.at = start + head.len() + used;
                return Ok(());
            }
        }
        let len = self.head(ARRAY, what)?;
        if len != N as u64 {
            return Err(format!("{what} at byte {start}: an array of {len} items, expected {N}"));
        }
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
        Ok(())
    }

    /// The `index`th key, then its value as `read` reads it.
    #[inline(always)]
    fn field<T>(&mut self, index: usize, read: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        self.key(index)?;
        read(self)
    }

    /// `kind`: a variant name as a text string.
    fn kind(&mut self) -> Result<EventKind, String> {
        let len = self.head(TEXT, "kind")?;
        let name = self.take(usize::try_from(len).map_err(|_| "kind: length out of range".to_string())?, "kind")?;
        EventKind::from_name(name).ok_or_else(|| format!("unknown event kind {:?}", String::from_utf8_lossy(name)))
    }

    /// `payload`: a definite byte string.
    fn payload(&mut self) -> Result<&'a [u8], String> {
        let len = self.head(BYTES, "payload")?;
        self.take(usize::try_from(len).map_err(|_| format!("payload length {len} is out of range"))?, "payload")
    }

    /// `null`, or a byte array read into `out`: true when present.
    fn optional<const N: usize>(&mut self, what: &str, out: &mut [u8; N]) -> Result<bool, String> {
        if self.peek() == Some(NULL) {
            self.at += 1;
            return Ok(false);
        }
        self.byte_array(what, out).map(|()| true)
    }
}

#[cold]
#[inline(never)]
fn head_error(what: &str, start: usize, problem: &str) -> String {
    format!("{what} at byte {start}: {problem}")
}

/// The items of a CBOR byte array read 64 bytes at a time, with AVX-512
/// (BW and VBMI2) and BMI2, instead of item by item: the next item's
/// place depends on the byte before it, which keeps a byte-by-byte reader
/// to one item per load and compare. Canonically, a byte below 24 is the
/// one-byte item `v`, and any other is the pair `0x18 v`; so in each run
/// of bytes of 24 or more the pairs alternate marker, value from the run's
/// first byte, and every byte below 24 is an item of its own. Bit masks
/// give the runs, the parity of each place within its run (one addition
/// carries through each run starting at an even place), and so the value
/// places; one compress instruction gathers the values. The unit tests
/// compare it with the byte-by-byte reader on every kind of input.
mod items {
    /// The `N` items at the start of `bytes`, if all are canonical byte
    /// items and end within its first 64 bytes: the bytes they take.
    /// `None` otherwise (the caller reads them one by one, for the error).
    #[inline]
    pub(super) fn read<const N: usize>(bytes: &[u8], out: &mut [u8; N]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has the features `read_x86` is compiled for.
            return unsafe { read_x86(bytes, out) };
        }
        let _ = (bytes, out);
        None
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi2")
            && std::arch::is_x86_feature_detected!("bmi2")
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,bmi2")]
    pub(super) fn read_x86<const N: usize>(bytes: &[u8], out: &mut [u8; N]) -> Option<usize> {
        use std::arch::x86_64::*;
        const EVEN: u64 = 0x5555_5555_5555_5555;
        let held = bytes.len().min(64);
        let loaded: u64 = if held == 64 { !0 } else { (1 << held) - 1 };
        // SAFETY: only the first `held` bytes, all within `bytes`, are
        // read; masked-off bytes are not accessed (and cannot fault).
        let v = unsafe { _mm512_maskz_loadu_epi8(loaded, bytes.as_ptr().cast()) };
        let big = _mm512_cmpge_epu8_mask(v, _mm512_set1_epi8(24)) & loaded;
        let marker_byte = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(0x18));
        let starts = big & !(big << 1);
        let even_runs = (big.wrapping_add(starts & EVEN) ^ big) & big;
        let values = (even_runs & !EVEN) | (big & !even_runs & EVEN);
        let markers = big & !values;
        let items = values | (!big & loaded);
        if (items.count_ones() as usize) < N {
            return None;
        }
        // The place of the N-th item, and every place up to it.
        let last = _pdep_u64(1 << (N - 1), items);
        let used = last.trailing_zeros() as usize + 1;
        let region = if used == 64 { !0 } else { (1u64 << used) - 1 };
        // Each marker is 0x18 and followed by its value.
        if markers & region & !marker_byte != 0 || ((markers & region) << 1) & !values != 0 {
            return None;
        }
        let packed = _mm512_maskz_compress_epi8(items & region, v);
        // One store of the whole array, so that reading it back is fast.
        const { assert!(N == 16 || N == 32, "ids and hashes: 16 or 32 bytes") };
        // SAFETY: `out` is N bytes and N bytes are written.
        unsafe {
            if N == 16 {
                _mm_storeu_si128(out.as_mut_ptr().cast(), _mm512_castsi512_si128(packed));
            } else {
                _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm512_castsi512_si256(packed));
            }
        }
        Some(used)
    }
}

/// Decodes a record into `out`, without copying its payload; only the canonical
/// encoding is accepted.
#[inline]
pub fn decode_into<'a>(record: &'a [u8], out: &mut EventRef<'a>) -> Result<(), String> {
    let mut r = Reader { bytes: record, at: 0 };
    if r.take(1, "event")?[0] != MAP_OF_10 {
        return Err("not a definite map of 10 entries (0xAA), as the canonical encoding starts".to_string());
    }
    // Fields are read in the order they are written, each after its key;
    // ids and hashes into arrays held here (see `byte_array`).
    let mut ids = [[0u8; 16]; 4];
    let mut hashes = [[0u8; 32]; 3];
    let [event_id, run_id, node_id, parent] = &mut ids;
    r.field(0, |r| r.byte_array("event_id", event_id))?;
    r.field(1, |r| r.byte_array("run_id", run_id))?;
    r.field(2, |r| r.byte_array("node_id", node_id))?;
    let has_parent = r.field(3, |r| r.optional("parent_event_id", parent))?;
    let logical_time = r.field(4, |r| r.head(UINT, "logical_time"))?;
    let kind = r.field(5, Reader::kind)?;
    let payload = r.field(6, Reader::payload)?;
    let [payload_hash, prior, post] = &mut hashes;
    r.field(7, |r| r.byte_array("payload_hash", payload_hash))?;
    let has_prior = r.field(8, |r| r.optional("prior_state_hash", prior))?;
    let has_post = r.field(9, |r| r.optional("post_state_hash", post))?;
    *out = EventRef {
        event_id: Uuid::from_bytes(ids[0]),
        run_id: Uuid::from_bytes(ids[1]),
        node_id: Uuid::from_bytes(ids[2]),
        parent_event_id: has_parent.then(|| Uuid::from_bytes(ids[3])),
        logical_time,
        kind,
        payload,
        payload_hash: Digest(hashes[0]),
        prior_state_hash: has_prior.then(|| Digest(hashes[1])),
        post_state_hash: has_post.then(|| Digest(hashes[2])),
    };
    super::end_of_record(record, r.at)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// The `N` canonical byte items at the start of `bytes`, item by item.
    fn one_by_one<const N: usize>(bytes: &[u8]) -> Option<([u8; N], usize)> {
        let (mut out, mut at) = ([0u8; N], 0);
        for b in &mut out {
            match bytes.get(at..) {
                Some(&[v, ..]) if v < 24 => (*b, at) = (v, at + 1),
                Some(&[0x18, v, ..]) if v >= 24 => (*b, at) = (v, at + 2),
                _ => return None,
            }
        }
        Some((out, at))
    }

    fn same_as_one_by_one(bytes: &[u8]) -> Result<(), TestCaseError> {
        let mut out16 = [0u8; 16];
        let got16 = super::items::read(bytes, &mut out16).map(|used| (out16, used));
        let mut out32 = [0u8; 32];
        let got32 = super::items::read(bytes, &mut out32).map(|used| (out32, used));
        #[cfg(target_arch = "x86_64")]
        if super::items::available() {
            prop_assert_eq!(got16, one_by_one::<16>(bytes), "{:02x?}", bytes);
            prop_assert_eq!(got32, one_by_one::<32>(bytes), "{:02x?}", bytes);
            return Ok(());
        }
        prop_assert_eq!((got16, got32), (None, None));
        Ok(())
    }

    /// Bytes around the boundaries that matter: small values, 23, 24 (the
    /// marker's own value), the marker, and large values.
    fn byte() -> impl Strategy<Value = u8> {
        prop_oneof![Just(0u8), Just(7), Just(23), Just(24), Just(0x18), Just(25), Just(0x80), Just(0xFF), any::<u8>()]
    }

    /// The canonical items of `values`, then `tail`.
    fn encoded(values: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &v in values {
            if v >= 24 {
                out.push(0x18);
            }
            out.push(v);
        }
        out.extend_from_slice(tail);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Canonical arrays of every length up to and past 32 items, each
        /// cut short or changed at one byte, read as the item-by-item
        /// reader reads them.
        #[test]
        fn canonical_items_read_as_one_by_one(values in proptest::collection::vec(byte(), 0..40), tail in proptest::collection::vec(byte(), 0..70), cut in any::<prop::sample::Index>(), change in any::<prop::sample::Index>(), to in byte()) {
            let bytes = encoded(&values, &tail);
            same_as_one_by_one(&bytes)?;
            same_as_one_by_one(&bytes[..cut.index(bytes.len() + 1)])?;
            if !bytes.is_empty() {
                let mut changed = bytes.clone();
                changed[change.index(bytes.len())] = to;
                same_as_one_by_one(&changed)?;
                let mut removed = bytes.clone();
                removed.remove(change.index(bytes.len()));
                same_as_one_by_one(&removed)?;
            }
        }

        /// Any bytes over the boundary values: lone markers, markers
        /// before small values, odd runs, runs across the 64-byte window.
        #[test]
        fn any_bytes_read_as_one_by_one(bytes in proptest::collection::vec(byte(), 0..80)) {
            same_as_one_by_one(&bytes)?;
        }
    }

    #[test]
    fn the_longest_arrays_fill_the_window_exactly() {
        // 32 two-byte items: 64 bytes, the whole window; one more byte
        // taken or missing changes the outcome.
        let big = encoded(&[0xAB; 32], &[]);
        assert_eq!(one_by_one::<32>(&big), Some(([0xAB; 32], 64)));
        same_as_one_by_one(&big).unwrap();
        same_as_one_by_one(&big[..63]).unwrap();
        let mut marker_last = encoded(&[0xAB; 31], &[0x18]);
        same_as_one_by_one(&marker_last).unwrap();
        marker_last.push(24);
        same_as_one_by_one(&marker_last).unwrap();
        assert_eq!(one_by_one::<32>(&marker_last).map(|(_, used)| used), Some(64));
    }
}
