//! Ed25519 keys, the detached `MANIFEST.sig`, and signature checking.
//!
//! What is signed is `SIGNING_DOMAIN || 0x00 || <the exact bytes of MANIFEST.json>`;
//! never a re-serialisation. Everything about the signature (algorithm, key
//! id, public key, signature) lives in `MANIFEST.sig`, outside the signed
//! bytes. Text layouts are in `schemas/FORMAT.md` §13.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Serialize;
use uuid::Uuid;

use super::manifest::SignatureField;
use super::SIGNATURE_FILE;
use crate::error::Error;
use crate::fsutil::{self, Existing};

/// Domain-separation string prefixed (with a NUL) to the manifest bytes.
pub const SIGNING_DOMAIN: &str = "cathedral-bundle-manifest-v1";
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
    fn of(key: &VerifyingKey) -> Self {
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
    Error::InvalidKey { file: path.display().to_string(), detail: detail.to_string() }
}

/// Parses `label: <hex>` into exactly N bytes.
fn field<const N: usize>(line: Option<&str>, label: &str, path: &Path) -> Result<[u8; N], Error> {
    let line = line.ok_or_else(|| key_error(path, format!("missing line `{label}: …`")))?;
    let value = line
        .strip_prefix(label)
        .and_then(|r| r.strip_prefix(": "))
        .ok_or_else(|| key_error(path, format!("expected `{label}: …`, found {:?}", crate::text::escape_for_terminal(line))))?;
    crate::text::decode_hex(value)
        .ok_or_else(|| key_error(path, format!("{label}: expected {} lowercase hex characters, found {} characters", 2 * N, value.len())))
}

/// Reads a small text file, bounded, as UTF-8 lines. A file that is not a
/// regular file is an invalid key file (never opened for reading).
fn read_text(path: &Path) -> Result<String, Error> {
    let bytes = fsutil::read_bounded(path, &path.display().to_string(), "file size", MAX_TEXT_FILE).map_err(|e| match e {
        Error::LimitExceeded { found, .. } => {
            key_error(path, format!("{found} bytes, larger than any key or signature file ({MAX_TEXT_FILE})"))
        }
        Error::FileType { found, .. } => key_error(path, format!("not a regular file but a {found}")),
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
        let found = crate::text::escape_for_terminal(lines[0]);
        return Err(key_error(path, format!("{what}; expected first line {header:?}, found {found:?}")));
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
        getrandom::fill(&mut seed).map_err(|e| Error::Random { detail: e.to_string() })?;
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

    /// Writes this key to `path` (mode 0600) and its public key to
    /// `<path>.pub`. Each file is written whole under a temporary name and
    /// renamed into place; without `force`, the rename refuses to clobber,
    /// so concurrent writers cannot overwrite each other's keys, and a
    /// public key that cannot be placed takes its secret key back out.
    pub fn write_files(&self, path: &Path, force: bool) -> Result<PathBuf, Error> {
        let public_path = PathBuf::from(format!("{}.pub", path.display()));
        let existing = if force { Existing::Replace } else { Existing::Keep };
        if !force && fs::symlink_metadata(&public_path).is_ok() {
            return Err(Error::Exists { file: public_path.display().to_string() });
        }
        fsutil::write_atomic(path, self.to_file_text().as_bytes(), 0o600, existing)?;
        if let Err(e) = fsutil::write_atomic(&public_path, self.public().to_file_text().as_bytes(), 0o644, existing) {
            // The secret key was created by this call, so it may be removed.
            let _ = fs::remove_file(path);
            return Err(e);
        }
        Ok(public_path)
    }
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
pub(crate) struct SignatureFile {
    /// Signer's key id.
    pub key_id: KeyId,
    /// Signer's public key.
    pub public_key: PublicKey,
    /// The bundle the signer signed: must be the manifest's `bundle_id`.
    pub bundle_id: Uuid,
    /// The signature.
    pub signature: Signature,
}

impl SignatureFile {
    /// Parses the text of `MANIFEST.sig`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let lines = lines(text, SIGNATURE_HEADER, 6, path)?;
        if lines[1] != "algorithm: ed25519" {
            let found = crate::text::escape_for_terminal(lines[1]);
            return Err(key_error(path, format!("unsupported algorithm line {found:?}; expected \"algorithm: ed25519\"")));
        }
        let key_id = KeyId(field(Some(lines[2]), "key-id", path)?);
        let public = field::<32>(Some(lines[3]), "public-key", path)?;
        let public_key =
            PublicKey { key: VerifyingKey::from_bytes(&public).map_err(|e| key_error(path, format!("not an Ed25519 public key: {e}")))? };
        check_key_id(path, key_id.0, public_key.key_id())?;
        let bundle_id =
            lines[4].strip_prefix("bundle-id: ").and_then(|t| crate::text::parse_uuid("bundle-id", t).ok()).ok_or_else(|| {
                key_error(path, format!("expected `bundle-id: <uuid>`, found {:?}", crate::text::escape_for_terminal(lines[4])))
            })?;
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

/// Where `MANIFEST.sig` is read from: a bundle directory, or the bytes of
/// an archive entry (None when the archive has none).
pub(crate) enum SignatureSource<'a> {
    /// `MANIFEST.sig` in this bundle directory.
    Dir(&'a Path),
    /// The archive entry's text, if it had one.
    Entry(Option<&'a [u8]>),
}

impl SignatureSource<'_> {
    /// The file's text; [`Error::NotFound`] when there is none.
    fn read(&self) -> Result<String, Error> {
        match self {
            SignatureSource::Dir(root) => read_text(&root.join(SIGNATURE_FILE)),
            SignatureSource::Entry(None) => Err(Error::NotFound { file: SIGNATURE_FILE.into() }),
            SignatureSource::Entry(Some(bytes)) => {
                let path = Path::new(SIGNATURE_FILE);
                if bytes.len() as u64 > MAX_TEXT_FILE {
                    return Err(key_error(path, format!("{} bytes, larger than any key or signature file ({MAX_TEXT_FILE})", bytes.len())));
                }
                String::from_utf8(bytes.to_vec()).map_err(|_| key_error(path, "not UTF-8 text"))
            }
        }
    }

    fn path(&self) -> PathBuf {
        match self {
            SignatureSource::Dir(root) => root.join(SIGNATURE_FILE),
            SignatureSource::Entry(_) => PathBuf::from(SIGNATURE_FILE),
        }
    }
}

/// Checks the signature of a bundle whose manifest bytes have been read.
/// `declared` is what the manifest says (read even if it does not parse);
/// `bundle_id` is the manifest's, when it parses. `reformatted` says whether
/// the manifest re-serialises to other bytes (only for the message).
pub(crate) fn check(
    source: &SignatureSource<'_>,
    manifest_bytes: &[u8],
    declared: &SignatureField,
    bundle_id: Option<(Uuid, bool)>,
    trusted: &[PublicKey],
) -> SignatureStatus {
    let path = source.path();
    match declared {
        SignatureField::Unsigned => return SignatureStatus::Unsigned,
        SignatureField::Malformed(detail) => return SignatureStatus::Malformed { detail: detail.clone() },
        SignatureField::Unknown | SignatureField::Signed => {}
    }
    let text = match source.read() {
        Ok(t) => t,
        Err(Error::NotFound { .. }) if *declared == SignatureField::Unknown => return SignatureStatus::Unsigned,
        Err(Error::NotFound { .. }) => return SignatureStatus::Missing,
        Err(Error::InvalidKey { detail, .. }) => return SignatureStatus::Malformed { detail },
        Err(e) => return SignatureStatus::Malformed { detail: e.to_string() },
    };
    let sig = match SignatureFile::parse(&text, &path) {
        Ok(s) => s,
        Err(Error::InvalidKey { detail, .. }) => return SignatureStatus::Malformed { detail },
        Err(e) => return SignatureStatus::Malformed { detail: e.to_string() },
    };
    // Every byte of MANIFEST.sig is bound: its bundle-id line must name this bundle (§13.2).
    if let Some((id, _)) = bundle_id.filter(|(id, _)| *id != sig.bundle_id) {
        return SignatureStatus::Invalid {
            key_id: sig.key_id,
            detail: format!("the signature was made for another bundle ({}), not this one ({id})", sig.bundle_id),
        };
    }
    if sig.public_key.key.verify_strict(&signed_message(manifest_bytes), &sig.signature).is_err() {
        let detail = if bundle_id.is_some_and(|(_, reformatted)| reformatted) {
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
