//! Ed25519 keys, the detached `MANIFEST.sig`, and signature checking.
//!
//! What is signed is `SIGNING_DOMAIN || 0x00 || <the exact bytes of MANIFEST.json>`;
//! never a re-serialisation. Everything about the signature (algorithm, key
//! id, public key, signature) lives in `MANIFEST.sig`, outside the signed
//! bytes. Text layouts are in `schemas/FORMAT.md` §13.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Serialize;
use uuid::Uuid;

use crate::error::Error;

/// Domain-separation string prefixed (with a NUL) to the manifest bytes.
pub const SIGNING_DOMAIN: &str = "cathedral-bundle-manifest-v1";
/// Name of the detached signature file.
pub const SIGNATURE_FILE: &str = "MANIFEST.sig";
/// First line of a signature file.
pub const SIGNATURE_HEADER: &str = "cathedral-bundle-signature v1";
/// First line of a secret key file.
pub const SECRET_KEY_HEADER: &str = "cathedral-ed25519-secret-key v1";
/// First line of a public key file.
pub const PUBLIC_KEY_HEADER: &str = "cathedral-ed25519-public-key v1";
/// Longest key or signature file accepted.
const MAX_TEXT_FILE: u64 = 4096;

/// A key id: the first 8 bytes of BLAKE3 of the 32-byte public key, in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        KeyId(blake3::hash(key.as_bytes()).as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The message an Ed25519 signature covers.
pub fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_DOMAIN.len() + 1 + manifest_bytes.len());
    m.extend_from_slice(SIGNING_DOMAIN.as_bytes());
    m.push(0);
    m.extend_from_slice(manifest_bytes);
    m
}

fn key_error(path: &Path, detail: impl fmt::Display) -> Error {
    Error::InvalidKey { path: path.display().to_string(), detail: detail.to_string() }
}

/// Parses `label: <hex>` into exactly N bytes.
fn field<const N: usize>(line: Option<&str>, label: &str, path: &Path) -> Result<[u8; N], Error> {
    let line = line.ok_or_else(|| key_error(path, format!("missing line `{label}: …`")))?;
    let value = line
        .strip_prefix(label)
        .and_then(|r| r.strip_prefix(": "))
        .ok_or_else(|| key_error(path, format!("expected `{label}: …`, found {line:?}")))?;
    if value.len() != 2 * N || !value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(key_error(path, format!("{label}: expected {} lowercase hex characters, found {} characters", 2 * N, value.len())));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(value, &mut out).map_err(|e| key_error(path, e))?;
    Ok(out)
}

/// Reads a small text file, bounded, as UTF-8 lines.
fn read_text(path: &Path) -> Result<String, Error> {
    let bytes = crate::fsutil::read_bounded(path, &path.display().to_string(), "file size", MAX_TEXT_FILE).map_err(|e| match e {
        Error::LimitExceeded { found, .. } => {
            key_error(path, format!("{found} bytes, larger than any key or signature file ({MAX_TEXT_FILE})"))
        }
        other => other,
    })?;
    String::from_utf8(bytes).map_err(|_| key_error(path, "not UTF-8 text"))
}

/// Splits a text file into exactly its expected lines (each ended by `\n`).
fn lines<'a>(text: &'a str, header: &str, count: usize, path: &Path) -> Result<Vec<&'a str>, Error> {
    let Some(body) = text.strip_suffix('\n') else {
        return Err(key_error(path, "truncated: the file does not end with a newline"));
    };
    let lines: Vec<&str> = body.split('\n').collect();
    if lines[0] != header {
        let what = match lines[0] {
            PUBLIC_KEY_HEADER => "this is a public key file",
            SECRET_KEY_HEADER => "this is a secret key file",
            SIGNATURE_HEADER => "this is a signature file",
            _ => "unknown file type",
        };
        return Err(key_error(path, format!("{what}; expected first line {header:?}, found {:?}", lines[0])));
    }
    if lines.len() != count {
        return Err(key_error(path, format!("expected {count} lines, found {}", lines.len())));
    }
    Ok(lines)
}

/// Reads a key file (§13.4): its header line, `key-id`, and the 32-byte key under `label`.
fn read_key_file(path: &Path, header: &str, label: &str) -> Result<([u8; 8], [u8; 32]), Error> {
    let text = read_text(path)?;
    let lines = lines(&text, header, 3, path)?;
    Ok((field(Some(lines[1]), "key-id", path)?, field(Some(lines[2]), label, path)?))
}

/// A key file's `key-id` line must name the key it holds.
fn check_key_id(path: &Path, claimed: [u8; 8], actual: KeyId) -> Result<(), Error> {
    if claimed != actual.0 {
        return Err(key_error(path, format!("key-id {} does not match the key, whose id is {actual}", hex::encode(claimed))));
    }
    Ok(())
}

/// A secret key loaded from a key file.
pub struct SecretKey {
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.key_id())
    }
}

impl SecretKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::InvalidInput { what: "key generation", detail: e.to_string() })?;
        Ok(SecretKey { key: SigningKey::from_bytes(&seed) })
    }

    /// A key from a 32-byte seed (for tests and reproducible fixtures).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey { key: SigningKey::from_bytes(&seed) }
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey { key: self.key.verifying_key() }
    }

    /// Its key id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.key.verifying_key())
    }

    /// Signs manifest bytes; returns the text of `MANIFEST.sig`.
    pub fn sign_manifest(&self, manifest_bytes: &[u8], bundle_id: &Uuid) -> String {
        let signature = self.key.sign(&signed_message(manifest_bytes));
        format!(
            "{SIGNATURE_HEADER}\nalgorithm: ed25519\nkey-id: {}\npublic-key: {}\nbundle-id: {}\nsignature: {}\n",
            self.key_id(),
            hex::encode(self.key.verifying_key().as_bytes()),
            bundle_id.hyphenated(),
            hex::encode(signature.to_bytes())
        )
    }

    /// The text of a secret key file.
    pub fn to_file_text(&self) -> String {
        format!("{SECRET_KEY_HEADER}\nkey-id: {}\nsecret-key: {}\n", self.key_id(), hex::encode(self.key.to_bytes()))
    }

    /// Loads a secret key file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let (id, seed) = read_key_file(path, SECRET_KEY_HEADER, "secret-key")?;
        let key = SecretKey::from_seed(seed);
        check_key_id(path, id, key.key_id())?;
        Ok(key)
    }

    /// Writes this key to `path` (mode 0600) and its public key to `<path>.pub`.
    /// Existing files are refused unless `force`.
    pub fn write_files(&self, path: &Path, force: bool) -> Result<PathBuf, Error> {
        let public_path = PathBuf::from(format!("{}.pub", path.display()));
        if !force {
            for p in [path, public_path.as_path()] {
                if fs::symlink_metadata(p).is_ok() {
                    return Err(Error::OutputExists { path: p.to_path_buf() });
                }
            }
        }
        write_file(path, self.to_file_text().as_bytes(), 0o600)?;
        write_file(&public_path, self.public().to_file_text().as_bytes(), 0o644)?;
        Ok(public_path)
    }
}

/// Writes a file through a temporary name with `mode`, then renames it.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(), std::process::id()));
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = file.write_all(bytes).and_then(|_| file.sync_all()).and_then(|_| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// A public key, as trusted by a verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// Its key id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.key)
    }

    /// The text of a public key file.
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_KEY_HEADER}\nkey-id: {}\npublic-key: {}\n", self.key_id(), hex::encode(self.key.as_bytes()))
    }

    /// Loads a public key file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let (id, bytes) = read_key_file(path, PUBLIC_KEY_HEADER, "public-key")?;
        let key =
            PublicKey { key: VerifyingKey::from_bytes(&bytes).map_err(|e| key_error(path, format!("not an Ed25519 public key: {e}")))? };
        check_key_id(path, id, key.key_id())?;
        Ok(key)
    }

    /// Loads every `*.pub` file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, Error> {
        let mut keys = Vec::new();
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        paths.sort();
        for p in paths {
            keys.push(PublicKey::load(&p)?);
        }
        Ok(keys)
    }
}

/// The parsed `MANIFEST.sig`.
#[derive(Debug, Clone)]
pub struct SignatureFile {
    /// Signer's key id.
    pub key_id: KeyId,
    /// Signer's public key.
    pub public_key: PublicKey,
    /// The bundle the signer signed (a hint for messages; the manifest bytes are what is verified).
    pub bundle_id: Uuid,
    /// The signature.
    pub signature: Signature,
}

impl SignatureFile {
    /// Parses the text of `MANIFEST.sig`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let lines = lines(text, SIGNATURE_HEADER, 6, path)?;
        if lines[1] != "algorithm: ed25519" {
            return Err(key_error(path, format!("unsupported algorithm line {:?}; expected \"algorithm: ed25519\"", lines[1])));
        }
        let key_id = KeyId(field(Some(lines[2]), "key-id", path)?);
        let public = field::<32>(Some(lines[3]), "public-key", path)?;
        let public_key =
            PublicKey { key: VerifyingKey::from_bytes(&public).map_err(|e| key_error(path, format!("not an Ed25519 public key: {e}")))? };
        check_key_id(path, key_id.0, public_key.key_id())?;
        let bundle_id = lines[4]
            .strip_prefix("bundle-id: ")
            .and_then(|t| crate::event::parse_uuid("bundle-id", t).ok())
            .ok_or_else(|| key_error(path, format!("expected `bundle-id: <uuid>`, found {:?}", lines[4])))?;
        let signature = Signature::from_bytes(&field::<64>(Some(lines[5]), "signature", path)?);
        Ok(SignatureFile { key_id, public_key, bundle_id, signature })
    }
}

/// The outcome of checking a bundle's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SignatureStatus {
    /// The manifest's `signature` is null.
    Unsigned,
    /// Valid, by one of the trusted keys.
    Trusted {
        /// Signer.
        key_id: KeyId,
    },
    /// Valid, but the signer's key is not among the trusted keys.
    Untrusted {
        /// Signer.
        key_id: KeyId,
    },
    /// The manifest says it is signed, but `MANIFEST.sig` is absent.
    Missing,
    /// `MANIFEST.sig` cannot be parsed (truncated, malformed, wrong algorithm).
    Malformed {
        /// Why.
        detail: String,
    },
    /// The signature does not verify over these manifest bytes.
    Invalid {
        /// Claimed signer.
        key_id: KeyId,
        /// The most likely cause.
        detail: String,
    },
}

impl SignatureStatus {
    /// True when the bundle passes given `require_signature`.
    pub fn is_acceptable(&self, require_signature: bool) -> bool {
        match self {
            SignatureStatus::Trusted { .. } => true,
            SignatureStatus::Unsigned => !require_signature,
            _ => false,
        }
    }
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureStatus::Unsigned => f.write_str("unsigned"),
            SignatureStatus::Trusted { key_id } => write!(f, "valid, by trusted key {key_id}"),
            SignatureStatus::Untrusted { key_id } => write!(f, "valid, but by untrusted key {key_id}"),
            SignatureStatus::Missing => write!(f, "missing: the manifest says the bundle is signed, but {SIGNATURE_FILE} is absent"),
            SignatureStatus::Malformed { detail } => write!(f, "malformed {SIGNATURE_FILE}: {detail}"),
            SignatureStatus::Invalid { key_id, detail } => write!(f, "BAD SIGNATURE (claimed key {key_id}): {detail}"),
        }
    }
}

/// Checks the signature of a bundle whose manifest has been read.
/// `manifest` is None when the manifest bytes do not parse; the signature
/// file, if any, is then still checked against them.
pub(crate) fn check(
    root: &Path,
    manifest_bytes: &[u8],
    manifest: Option<&crate::manifest::Manifest>,
    trusted: &[PublicKey],
) -> SignatureStatus {
    let path = root.join(SIGNATURE_FILE);
    let signed = match manifest {
        Some(m) => m.signature.is_some(),
        None => fs::symlink_metadata(&path).is_ok(),
    };
    if !signed {
        return SignatureStatus::Unsigned;
    }
    let text = match read_text(&path) {
        Ok(t) => t,
        Err(Error::NotFound { .. }) => return SignatureStatus::Missing,
        Err(e) => return SignatureStatus::Malformed { detail: e.to_string() },
    };
    let sig = match SignatureFile::parse(&text, &path) {
        Ok(s) => s,
        Err(Error::InvalidKey { detail, .. }) => return SignatureStatus::Malformed { detail },
        Err(e) => return SignatureStatus::Malformed { detail: e.to_string() },
    };
    // Every byte of MANIFEST.sig is bound: its bundle-id line must name this bundle.
    if let Some(m) = manifest.filter(|m| m.bundle_id != sig.bundle_id) {
        return SignatureStatus::Invalid {
            key_id: sig.key_id,
            detail: format!("the signature was made for another bundle ({}), not this one ({})", sig.bundle_id, m.bundle_id),
        };
    }
    if sig.public_key.key.verify_strict(&signed_message(manifest_bytes), &sig.signature).is_err() {
        let detail = if manifest.is_some_and(|m| m.to_bytes() != manifest_bytes) {
            "MANIFEST.json is not byte-for-byte as written: it was reformatted or edited after signing".to_string()
        } else {
            "MANIFEST.json's bytes are not the bytes that were signed (changed after signing, or signed by another key)".to_string()
        };
        return SignatureStatus::Invalid { key_id: sig.key_id, detail };
    }
    if trusted.iter().any(|k| k.key == sig.public_key.key) {
        SignatureStatus::Trusted { key_id: sig.key_id }
    } else {
        SignatureStatus::Untrusted { key_id: sig.key_id }
    }
}
