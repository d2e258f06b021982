//! `MANIFEST.json`: what the bundle holds, with the hash and size of every
//! listed file. Blobs are committed through `blobs.cath-list`, which the
//! manifest lists like any other file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::digest::Digest;
use crate::error::Error;
use crate::format;
use crate::path::BundlePath;
use crate::text::{uuid_text, Timestamp};

/// One listed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// BLAKE3 of the file, as `b3sum` prints it.
    pub hash: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Whether a bundle may lack this kind of file. A listed file must exist either way.
    pub optional: bool,
}

/// The manifest (`schemas/manifest.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// "1.1" (with outboards) or "1.0" (without).
    pub bundle_version: String,
    /// Unique id of this bundle.
    #[serde(with = "uuid_text")]
    pub bundle_id: Uuid,
    /// RFC 3339 UTC creation time.
    pub created_at: Timestamp,
    /// Always "cath-bundle".
    pub format: String,
    /// Every file of the bundle but the manifest itself and the blobs, by bundle-relative path.
    pub files: BTreeMap<String, FileEntry>,
    /// Number of blobs; equals the blob list's count.
    pub blob_count: u64,
    /// `"MANIFEST.sig"` in a signed bundle; null in an unsigned one.
    pub signature: Option<String>,
}

impl Manifest {
    /// Parses manifest bytes strictly.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        super::json::from_slice_strict(bytes, format::MANIFEST_FILE)
    }

    /// The bytes a builder writes.
    pub fn to_bytes(&self) -> Vec<u8> {
        super::json::to_pretty_bytes(self)
    }

    /// Every rule the schema cannot express; each error is about `MANIFEST.json`.
    pub fn check(&self) -> Vec<Error> {
        let file = format::MANIFEST_FILE;
        let mut problems = Vec::new();
        let unsupported = |what, expected: &str, found: &str| Error::Unsupported {
            file: file.to_string(),
            what,
            expected: expected.to_string(),
            found: found.to_string(),
        };
        if self.format != format::BUNDLE_FORMAT {
            problems.push(unsupported("format", format::BUNDLE_FORMAT, &self.format));
        }
        let supported = [format::BUNDLE_VERSION_1_0, format::BUNDLE_VERSION];
        if !supported.contains(&self.bundle_version.as_str()) {
            problems.push(unsupported("bundle_version", "1.0 or 1.1", &self.bundle_version));
        }
        if let Some(s) = self.signature.as_deref().filter(|s| *s != format::SIGNATURE_FILE) {
            problems.push(Error::inconsistent(file, "signature file name", format::SIGNATURE_FILE, format!("{s:?}")));
        }
        for (name, entry) in &self.files {
            if let Err(e) = BundlePath::parse(name) {
                problems.push(e);
                continue;
            }
            match format::LISTED_FILES.iter().find(|(known, _)| known == name && format::version_lists(&self.bundle_version, known)) {
                None => problems.push(Error::InvalidPath { name: name.clone(), reason: "not a file of a bundle of this version" }),
                Some((_, optional)) if *optional != entry.optional => {
                    problems.push(Error::inconsistent(file, "optional flag", format!("{name}: {optional}"), entry.optional))
                }
                Some(_) => {}
            }
        }
        for (known, optional) in format::LISTED_FILES {
            if !optional && !self.files.contains_key(known) && format::version_lists(&self.bundle_version, known) {
                problems.push(Error::rule(file, "required file", format!("does not list {known}")));
            }
        }
        problems
    }

    /// Each listed outboard whose size is not the one the size of its file
    /// implies (§14): (outboard, the error). Not a rule of the manifest
    /// alone: a finding about the outboard, which does not stop verification.
    pub fn outboard_size_problems(&self) -> Vec<(&'static str, Error)> {
        let mut problems = Vec::new();
        for (data, outboard) in format::OUTBOARDS {
            if let (Some(d), Some(o)) = (self.files.get(data), self.files.get(outboard)) {
                let expected = format::outboard::outboard_size(d.size);
                if o.size != expected {
                    let e = Error::SizeMismatch {
                        file: outboard.into(),
                        what: "outboard size (from the size of the file it covers)",
                        expected,
                        found: o.size,
                    };
                    problems.push((outboard, e));
                }
            }
        }
        problems
    }

    /// The name and committed hash of the outboard of `file`, when listed.
    pub fn outboard_entry(&self, file: &str) -> Option<(&'static str, Digest)> {
        let name = format::outboard_of(file)?;
        self.files.get(name).map(|e| (name, e.hash))
    }

    /// True when the bundle carries outboards of its log and index (§14),
    /// so that reads can be checked lazily.
    pub fn has_outboards(&self) -> bool {
        format::OUTBOARDS.iter().all(|(_, o)| self.files.contains_key(*o))
    }
}

/// What a manifest says about its signature (§13), read even from a
/// manifest that does not parse as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureField {
    /// `"signature": null`.
    Unsigned,
    /// `"signature": "MANIFEST.sig"`.
    Signed,
    /// Any other value.
    Malformed(String),
    /// The manifest is not a JSON object with that field at all.
    Unknown,
}

impl SignatureField {
    /// Reads the `signature` field of manifest bytes.
    pub fn of(manifest_bytes: &[u8]) -> Self {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(manifest_bytes) else {
            return SignatureField::Unknown;
        };
        match map.get("signature") {
            None => SignatureField::Unknown,
            Some(serde_json::Value::Null) => SignatureField::Unsigned,
            Some(serde_json::Value::String(s)) if s == format::SIGNATURE_FILE => SignatureField::Signed,
            Some(other) => SignatureField::Malformed(format!(
                "the manifest's signature field must be null or \"{}\", found {other}",
                format::SIGNATURE_FILE
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json(files: &str) -> String {
        format!(
            r#"{{"bundle_version":"1.0","bundle_id":"00000000-0000-0000-0000-000000000001","created_at":"2026-01-01T00:00:00Z",
            "format":"cath-bundle","files":{{{files}}},"blob_count":0,"signature":null}}"#
        )
    }

    #[test]
    fn duplicate_file_names_are_refused() {
        let h = Digest::of(b"").to_hex();
        let entry = format!(r#""dag.json":{{"hash":"{h}","size":0,"optional":false}}"#);
        assert!(Manifest::parse(manifest_json(&entry).as_bytes()).is_ok());
        assert!(Manifest::parse(manifest_json(&format!("{entry},{entry}")).as_bytes()).is_err());
    }

    #[test]
    fn hostile_and_unknown_names_are_findings() {
        let h = Digest::of(b"").to_hex();
        for name in ["../dag.json", "/dag.json", "blobs/../x", "Dag.json", "dag.json\\x"] {
            let entry = format!(r#"{:?}:{{"hash":"{h}","size":0,"optional":false}}"#, name);
            let m = Manifest::parse(manifest_json(&entry).as_bytes()).unwrap();
            let problems = m.check();
            assert!(problems.iter().any(|e| matches!(e, Error::InvalidPath { .. })), "{name}: {problems:?}");
        }
    }

    #[test]
    fn signature_field_is_read_even_when_the_manifest_does_not_parse() {
        assert_eq!(SignatureField::of(br#"{"signature":null}"#), SignatureField::Unsigned);
        assert_eq!(SignatureField::of(br#"{"signature":"MANIFEST.sig"}"#), SignatureField::Signed);
        assert!(matches!(SignatureField::of(br#"{"signature":7}"#), SignatureField::Malformed(_)));
        assert!(matches!(SignatureField::of(br#"{"signature":"x.sig"}"#), SignatureField::Malformed(_)));
        assert_eq!(SignatureField::of(b"not json"), SignatureField::Unknown);
    }

    /// Outboards are listed in a 1.1 manifest, never in a 1.0 one, and their
    /// sizes follow from the sizes of the files they cover.
    #[test]
    fn outboards_follow_the_version() {
        let h = Digest::of(b"").to_hex();
        let entry = |name: &str, size: u64| format!(r#""{name}":{{"hash":"{h}","size":{size},"optional":false}}"#);
        let required = ["blobs.cath-list", "dag.json", "events.cath-idx", "metadata.json", "workflow.cath"].map(|n| entry(n, 0)).join(",");
        let log = entry("events.cath-log", 20_000);
        let obao = |size| format!("{},{}", entry("events.cath-log.obao", size), entry("events.cath-idx.obao", 0));
        let v = |version: &str, files: String| {
            let text = manifest_json(&files).replace(r#""bundle_version":"1.0""#, &format!(r#""bundle_version":"{version}""#));
            Manifest::parse(text.as_bytes()).unwrap().check()
        };
        assert!(v("1.0", format!("{required},{log}")).is_empty());
        assert!(v("1.1", format!("{required},{log},{}", obao(64))).is_empty());
        assert!(v("1.0", format!("{required},{log},{}", obao(64))).iter().any(|e| matches!(e, Error::InvalidPath { .. })));
        assert!(v("1.1", format!("{required},{log}")).iter().any(|e| matches!(e, Error::Rule { .. })));
        let wrong = format!("{required},{log},{}", obao(128));
        let text = manifest_json(&wrong).replace(r#""bundle_version":"1.0""#, r#""bundle_version":"1.1""#);
        let problems = Manifest::parse(text.as_bytes()).unwrap().outboard_size_problems();
        assert!(matches!(problems.as_slice(), [("events.cath-log.obao", Error::SizeMismatch { expected: 64, found: 128, .. })]));
        assert!(v("1.2", format!("{required},{log},{}", obao(64))).iter().any(|e| matches!(e, Error::Unsupported { .. })));
    }

    #[test]
    fn uppercase_hash_is_refused() {
        let h = Digest::of(b"").to_hex().to_uppercase();
        let entry = format!(r#""dag.json":{{"hash":"{h}","size":0,"optional":false}}"#);
        assert!(Manifest::parse(manifest_json(&entry).as_bytes()).is_err());
    }
}
