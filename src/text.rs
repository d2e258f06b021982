//! The text rules of the format, in one place: lowercase hex, UUIDs,
//! timestamps (FORMAT.md, "Conventions"), and escaping untrusted text for
//! a terminal.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Text that breaks one of the rules here. Converts into
/// [`crate::Error::InvalidInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidText {
    /// What was being parsed.
    pub what: &'static str,
    /// Why it is refused.
    pub detail: String,
}

impl fmt::Display for InvalidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.what, self.detail)
    }
}

impl std::error::Error for InvalidText {}

fn invalid(what: &'static str, detail: String) -> InvalidText {
    InvalidText { what, detail }
}

/// True when `text` is made only of `0-9a-f`.
pub fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Appends `bytes` as lowercase hex, one table lookup per byte (on the hot
/// path of `inspect --events`, where the `hex` crate's per-nibble work showed).
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0F)]);
    }
}

/// Nibble values of `0-9a-f`; 0xFF for every other byte.
const NIBBLE: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Decodes exactly `2 × N` lowercase hex characters. One table lookup per
/// character validates and decodes at once (the `hex` crate also accepts
/// uppercase and needs a second validating pass; hashes are parsed once
/// per replayed event, so this is on a hot path).
pub fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode_hex_bytes(text.as_bytes())
}

/// [`decode_hex`] of bytes that need not be text.
pub fn decode_hex_bytes<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[pair[0] as usize], NIBBLE[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0F);
    }
    // Valid nibbles are below 16; 0xFF sets the high bits.
    (bad < 16).then_some(out)
}

/// The UUID whose hyphenated lowercase form is exactly `bytes`.
pub fn decode_uuid(bytes: &[u8]) -> Option<Uuid> {
    if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
        return None;
    }
    let mut hex = [0u8; 32];
    for (to, from) in [(0..8, 0..8), (8..12, 9..13), (12..16, 14..18), (16..20, 19..23), (20..32, 24..36)] {
        hex[to].copy_from_slice(&bytes[from]);
    }
    decode_hex_bytes(&hex).map(Uuid::from_bytes)
}

/// Parses a UUID in its one accepted text form: hyphenated lowercase.
pub fn parse_uuid(what: &'static str, text: &str) -> Result<Uuid, InvalidText> {
    let uuid = Uuid::try_parse(text).map_err(|e| invalid(what, format!("{text:?}: {e}")))?;
    if uuid.hyphenated().to_string() != text {
        return Err(invalid(what, format!("{text:?}: expected a hyphenated lowercase UUID")));
    }
    Ok(uuid)
}

/// An RFC 3339 UTC timestamp such as `2026-01-02T03:04:05Z` (fractional
/// seconds allowed). Holds the validated text, so a document round-trips
/// byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(String);

impl Timestamp {
    /// The current time, to the second.
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<Self, InvalidText> {
        if !text.ends_with('Z') || humantime::parse_rfc3339(text).is_err() {
            return Err(invalid("timestamp", format!("expected an RFC 3339 UTC timestamp like 2026-01-02T03:04:05Z, found {text:?}")));
        }
        Ok(Timestamp(text.to_string()))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The point in time.
    pub fn to_system_time(&self) -> SystemTime {
        humantime::parse_rfc3339(&self.0).expect("validated when parsed")
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp(humantime::format_rfc3339_seconds(t).to_string())
    }
}

impl std::str::FromStr for Timestamp {
    type Err = InvalidText;
    fn from_str(s: &str) -> Result<Self, InvalidText> {
        Timestamp::parse(s)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// At most `max` characters of `text`, with `…` when cut.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..at])),
    }
}

/// Untrusted text made safe for a terminal: control characters (escape
/// sequences included) are shown as `\u{..}` escapes, so a name read from a
/// bundle cannot redraw the screen. JSON output does not need this.
pub fn escape_for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    // C0 and C1 controls, DEL, and the bidirectional overrides that reorder a line.
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// UUIDs in JSON: only the hyphenated lowercase form is accepted.
pub(crate) mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(u: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&u.hyphenated())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_uuid("uuid", &text).map_err(serde::de::Error::custom)
    }
}

/// Lists of UUIDs in JSON.
pub(crate) mod uuid_text_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(v: &[Uuid], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|u| u.hyphenated().to_string()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Uuid>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts.iter().map(|t| super::parse_uuid("uuid", t).map_err(serde::de::Error::custom)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_must_be_utc() {
        assert!(Timestamp::parse("2026-01-02T03:04:05Z").is_ok());
        assert!(Timestamp::parse("2026-01-02T03:04:05.25Z").is_ok());
        assert!(Timestamp::parse("2026-01-02T03:04:05+01:00").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::now().as_str().ends_with('Z'));
    }

    #[test]
    fn hex_is_lowercase_and_exact() {
        assert_eq!(decode_hex::<2>("0aff"), Some([0x0a, 0xff]));
        assert_eq!(decode_hex::<2>("0AFF"), None);
        assert_eq!(decode_hex::<2>("0af"), None);
    }

    #[test]
    fn uuids_decode_only_from_their_hyphenated_lowercase_form() {
        for n in [0u128, 1, 0xab, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let id = Uuid::from_u128(n);
            let text = id.hyphenated().to_string();
            assert_eq!(decode_uuid(text.as_bytes()), Some(id));
            assert_eq!(parse_uuid("id", &text).ok(), Some(id));
            for other in [text.to_uppercase(), id.simple().to_string(), id.braced().to_string(), text.replacen('-', "", 1) + "0"] {
                if other != text {
                    assert_eq!(decode_uuid(other.as_bytes()), None, "{other}");
                }
            }
        }
        // Every byte that is not a lowercase hex digit, in every digit place.
        let text = Uuid::from_u128(7).hyphenated().to_string().into_bytes();
        for at in (0..36).filter(|i| ![8, 13, 18, 23].contains(i)) {
            for b in 0..=255u8 {
                let mut t = text.clone();
                t[at] = b;
                assert_eq!(decode_uuid(&t).is_some(), b.is_ascii_digit() || (b'a'..=b'f').contains(&b), "byte {b} at {at}");
            }
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_for_terminal("plain.json"), "plain.json");
        let hostile = "x\u{1b}[2K\rresult   valid\u{202e}";
        let shown = escape_for_terminal(hostile);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(shown.contains("\\u{1b}"));
    }
}
