//! Strict JSON reading: duplicate keys at any depth, trailing data, invalid
//! UTF-8 and unknown fields are errors; nesting is bounded by serde_json's
//! recursion limit (128).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use crate::error::Error;

/// Parses `bytes` as `T`, refusing duplicate object keys anywhere.
pub fn from_slice_strict<T: DeserializeOwned>(bytes: &[u8], file: &str) -> Result<T, Error> {
    let json_err = |e: serde_json::Error| Error::Json { file: file.to_string(), detail: e.to_string() };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    NoDuplicates.deserialize(&mut de).map_err(json_err)?;
    de.end().map_err(json_err)?;
    serde_json::from_slice(bytes).map_err(json_err)
}

/// The pretty form every JSON file of a bundle is written in: two-space
/// indentation, keys in declaration order, one trailing newline.
pub fn to_pretty_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).expect("bundle JSON serialises");
    out.push(b'\n');
    out
}

/// Walks any JSON value and fails on the first repeated key within an object.
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn duplicate_keys_are_refused_at_depth() {
        let err = from_slice_strict::<serde_json::Value>(br#"{"a":{"b":1,"b":2}}"#, "x.json").unwrap_err();
        assert!(err.to_string().contains("duplicate key \"b\""), "{err}");
        assert!(from_slice_strict::<BTreeMap<String, u8>>(br#"{"a":1,"a":1}"#, "x").is_err());
        assert!(from_slice_strict::<BTreeMap<String, u8>>(br#"{"a":1,"b":1}"#, "x").is_ok());
    }

    #[test]
    fn trailing_data_deep_nesting_and_bad_utf8() {
        assert!(from_slice_strict::<serde_json::Value>(b"{} {}", "x").is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(from_slice_strict::<serde_json::Value>(deep.as_bytes(), "x").is_err());
        assert!(from_slice_strict::<serde_json::Value>(b"\"\xff\"", "x").is_err());
        assert!(from_slice_strict::<u64>(b"1e400", "x").is_err());
        assert!(from_slice_strict::<u64>(b"184467440737095516160", "x").is_err());
    }
}
