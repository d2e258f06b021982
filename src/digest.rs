//! BLAKE3 digests as a validated type: parsed once, from exactly 64 lowercase
//! hex characters, and printed the way `b3sum` prints them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::InvalidText;

mod many;

pub(crate) use many::hash_each;

/// A 32-byte BLAKE3 hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// The digest a BLAKE3 hasher finished with.
    pub(crate) fn finished(hasher: &blake3::Hasher) -> Self {
        Digest(*hasher.finalize().as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        let mut out = Vec::with_capacity(64);
        crate::text::push_hex(&mut out, &self.0);
        String::from_utf8(out).expect("hex is ASCII")
    }

    /// Parses exactly 64 lowercase hex characters.
    pub fn parse(text: &str) -> Result<Self, InvalidText> {
        crate::text::decode_hex(text).map(Digest).ok_or_else(|| InvalidText {
            what: "hash",
            detail: format!("expected 64 lowercase hex characters, found {:?}", crate::text::escape_for_terminal(text)),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = InvalidText;
    fn from_str(s: &str) -> Result<Self, InvalidText> {
        Digest::parse(s)
    }
}

/// Binary formats (postcard, CBOR) carry the 32 raw bytes; JSON carries hex.
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Digest::parse(&text).map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Digest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_lowercase_64_hex() {
        let h = Digest::of(b"abc");
        assert_eq!(Digest::parse(&h.to_hex()).unwrap(), h);
        assert!(Digest::parse(&h.to_hex().to_uppercase()).is_err());
        assert!(Digest::parse(&h.to_hex()[..63]).is_err());
        assert!(Digest::parse(&format!("{}0", h.to_hex())).is_err());
        assert!(Digest::parse(&"g".repeat(64)).is_err());
        // A multi-byte character must not be sliced into.
        assert!(Digest::parse(&format!("é{}", &h.to_hex()[..62])).is_err());
    }

    #[test]
    fn matches_b3sum_known_answer() {
        // b3sum of the empty input.
        assert_eq!(Digest::of(b"").to_hex(), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    }
}
