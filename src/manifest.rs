//! `MANIFEST.json`: what the bundle holds, with the hash and size of every
//! listed file. Blobs are committed through `blobs.cath-list`, which the
//! manifest lists like any other file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::digest::Digest;
use crate::error::{Error, Finding, FindingCode};
use crate::format;
use crate::path::BundlePath;

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
    /// Always "1.0" for this format.
    pub bundle_version: String,
    /// Unique id of this bundle.
    #[serde(with = "crate::model::uuid_text")]
    pub bundle_id: Uuid,
    /// RFC 3339 UTC creation time.
    pub created_at: String,
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
        crate::json::from_slice_strict(bytes, format::MANIFEST_FILE)
    }

    /// The bytes a builder writes.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::json::to_pretty_bytes(self)
    }

    /// Every rule the schema cannot express, as findings against `MANIFEST.json`.
    pub fn check(&self) -> Vec<Finding> {
        let file = format::MANIFEST_FILE;
        let mut findings = Vec::new();
        if self.format != format::BUNDLE_FORMAT {
            findings
                .push(Finding::new(file, FindingCode::Unsupported, "unsupported format").with_values(format::BUNDLE_FORMAT, &self.format));
        }
        if self.bundle_version != format::BUNDLE_VERSION {
            findings.push(
                Finding::new(file, FindingCode::Unsupported, "unsupported bundle_version")
                    .with_values(format::BUNDLE_VERSION, &self.bundle_version),
            );
        }
        if let Err(e) = crate::model::check_timestamp(file, "created_at", &self.created_at) {
            findings.push(e.into_finding(file));
        }
        if let Some(s) = self.signature.as_deref().filter(|s| *s != crate::signing::SIGNATURE_FILE) {
            findings.push(
                Finding::new(file, FindingCode::Malformed, "signature must be null or name the signature file")
                    .with_values(crate::signing::SIGNATURE_FILE, s),
            );
        }
        for (name, entry) in &self.files {
            if let Err(e) = BundlePath::parse(name) {
                findings.push(e.into_finding(file));
                continue;
            }
            match format::LISTED_FILES.iter().find(|(known, _)| known == name) {
                None => findings.push(Finding::new(
                    file,
                    FindingCode::InvalidPath,
                    format!("lists {name:?}, which is not a file of a v1 bundle"),
                )),
                Some((_, optional)) if *optional != entry.optional => findings.push(
                    Finding::new(file, FindingCode::Malformed, format!("{name}: wrong optional flag"))
                        .with_values(optional, entry.optional),
                ),
                Some(_) => {}
            }
        }
        for (known, optional) in format::LISTED_FILES {
            if !optional && !self.files.contains_key(known) {
                findings.push(Finding::new(file, FindingCode::Missing, format!("does not list required file {known}")));
            }
        }
        findings
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
            let findings = m.check();
            assert!(findings.iter().any(|f| f.code == FindingCode::InvalidPath), "{name}: {findings:?}");
        }
    }

    #[test]
    fn uppercase_hash_is_refused() {
        let h = Digest::of(b"").to_hex().to_uppercase();
        let entry = format!(r#""dag.json":{{"hash":"{h}","size":0,"optional":false}}"#);
        assert!(Manifest::parse(manifest_json(&entry).as_bytes()).is_err());
    }
}
