//! Signed bundles, through the real binary: each way a signature can fail
//! has its own classified outcome, and a good signature verifies.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cathedral_bundle::{BundleLoader, PublicKey, SecretKey, SignatureStatus};

const RUN: &str = "ba738917";

fn cathedral(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cathedral")).args(args).env_remove("CATHEDRAL_STORE").output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[track_caller]
fn expect(o: &Output, code: i32, needle: &str) {
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(code), "{all}");
    assert!(all.contains(needle), "output lacks {needle:?}:\n{all}");
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    expect(&cathedral(&["keygen", "--output", s(&key)]), 0, "key id");
    key
}

fn signed_bundle(dir: &Path, name: &str, key: &Path) -> PathBuf {
    let out = dir.join(name);
    let store = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store");
    expect(&cathedral(&["bundle", "--store", s(&store), "--run", RUN, "--output", s(&out), "--sign-key", s(key)]), 0, "signed by key");
    out
}

fn verify(bundle: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["verify-bundle", "--bundle", s(bundle)];
    args.extend_from_slice(extra);
    cathedral(&args)
}

fn key_id(public: &Path) -> String {
    PublicKey::load(public).unwrap().key_id().to_string()
}

#[test]
fn keygen_writes_private_key_0600_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let public = tmp.path().join("k.pub");
    let text = fs::read_to_string(&public).unwrap();
    assert!(text.starts_with("cathedral-ed25519-public-key v1\nkey-id: "));
    let before = fs::read(&key).unwrap();
    expect(&cathedral(&["keygen", "--output", s(&key)]), 2, "already exists");
    assert_eq!(fs::read(&key).unwrap(), before);
    expect(&cathedral(&["keygen", "--output", s(&key), "--force"]), 0, "");
    assert_ne!(fs::read(&key).unwrap(), before);
    // The key id in both files is the first 8 bytes of BLAKE3 of the public key.
    let secret = SecretKey::load(&key).unwrap();
    assert_eq!(secret.key_id(), PublicKey::load(&public).unwrap().key_id());
}

#[test]
fn a_good_signature_verifies_and_is_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let pubfile = tmp.path().join("k.pub");
    let b = signed_bundle(tmp.path(), "b.cath-bundle", &key);
    let id = key_id(&pubfile);
    let o = verify(&b, &["--trusted-key", s(&pubfile)]);
    expect(&o, 0, &format!("valid, by trusted key {id}"));
    let o = verify(&b, &["--trusted-key", s(&pubfile), "--json", "--require-signature"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["signature"]["state"], "trusted");
    assert_eq!(report["signature"]["key_id"], id.as_str());
    assert_eq!(report["trusted"], true);
    // A trust directory works the same.
    let trust = tmp.path().join("trust");
    fs::create_dir(&trust).unwrap();
    fs::copy(&pubfile, trust.join("ops.pub")).unwrap();
    expect(&verify(&b, &["--trust-dir", s(&trust)]), 0, "trusted key");
    // inspect applies the same policy: it refuses an untrusted signer, and shows a trusted one.
    expect(&cathedral(&["inspect", "--bundle", s(&b)]), 4, &format!("untrusted key {id}"));
    expect(&cathedral(&["inspect", "--bundle", s(&b), "--trusted-key", s(&pubfile)]), 0, &format!("trusted key {id}"));
    // The library agrees, and any standard Ed25519 verifier can check it from the documented message.
    let bundle = BundleLoader::new().trusted_keys([PublicKey::load(&pubfile).unwrap()]).require_signature(true).load(&b).unwrap();
    assert!(matches!(bundle.report().signature, SignatureStatus::Trusted { .. }));
    let sig_text = fs::read_to_string(b.join("MANIFEST.sig")).unwrap();
    let lines: Vec<&str> = sig_text.lines().collect();
    let public: [u8; 32] = hex::decode(lines[3].strip_prefix("public-key: ").unwrap()).unwrap().try_into().unwrap();
    let signature: [u8; 64] = hex::decode(lines[5].strip_prefix("signature: ").unwrap()).unwrap().try_into().unwrap();
    let mut message = b"cathedral-bundle-manifest-v1\0".to_vec();
    message.extend_from_slice(&fs::read(b.join("MANIFEST.json")).unwrap());
    ed25519_dalek::VerifyingKey::from_bytes(&public)
        .unwrap()
        .verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&signature))
        .unwrap();
}

#[test]
fn signed_by_another_key_is_untrusted() {
    let tmp = tempfile::tempdir().unwrap();
    keygen(tmp.path(), "ours");
    let theirs = keygen(tmp.path(), "theirs");
    let b = signed_bundle(tmp.path(), "b.cath-bundle", &theirs);
    let o = verify(&b, &["--trusted-key", s(&tmp.path().join("ours.pub"))]);
    expect(&o, 4, &format!("valid, but by untrusted key {}", key_id(&tmp.path().join("theirs.pub"))));
    expect(&o, 4, "signer is not trusted");
    // No trusted keys at all: still refused, with a hint.
    expect(&verify(&b, &[]), 4, "--trusted-key");
    assert!(
        matches!(BundleLoader::new().load(&b), Err(cathedral_bundle::LoadError::Signature { report, .. }) if matches!(report.signature, SignatureStatus::Untrusted { .. }))
    );
}

fn trusted_args(tmp: &Path) -> Vec<String> {
    vec!["--trusted-key".into(), tmp.join("k.pub").to_str().unwrap().into()]
}

fn verify_trusted(tmp: &Path, b: &Path) -> Output {
    let args = trusted_args(tmp);
    verify(b, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn flipped_manifest_byte_is_a_bad_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let b = signed_bundle(tmp.path(), "b.cath-bundle", &key);
    // Flip the lowest bit of the last digit of created_at's seconds: still valid JSON and a valid time.
    let mut bytes = fs::read(b.join("MANIFEST.json")).unwrap();
    let at = String::from_utf8_lossy(&bytes).find("Z\",\n  \"format\"").unwrap() - 1;
    bytes[at] ^= 1;
    fs::write(b.join("MANIFEST.json"), &bytes).unwrap();
    let o = verify_trusted(tmp.path(), &b);
    expect(&o, 4, "BAD SIGNATURE");
    expect(&o, 4, "are not the bytes that were signed");
}

#[test]
fn reformatted_manifest_is_a_bad_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let b = signed_bundle(tmp.path(), "b.cath-bundle", &key);
    let value: serde_json::Value = serde_json::from_slice(&fs::read(b.join("MANIFEST.json")).unwrap()).unwrap();
    fs::write(b.join("MANIFEST.json"), serde_json::to_vec(&value).unwrap()).unwrap();
    expect(&verify_trusted(tmp.path(), &b), 4, "reformatted or edited after signing");
}

#[test]
fn missing_and_truncated_signatures_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let b = signed_bundle(tmp.path(), "b.cath-bundle", &key);
    let sig = fs::read(b.join("MANIFEST.sig")).unwrap();
    fs::remove_file(b.join("MANIFEST.sig")).unwrap();
    expect(&verify_trusted(tmp.path(), &b), 4, "MANIFEST.sig is absent");
    fs::write(b.join("MANIFEST.sig"), &sig[..sig.len() - 10]).unwrap();
    expect(&verify_trusted(tmp.path(), &b), 4, "malformed MANIFEST.sig");
    fs::write(b.join("MANIFEST.sig"), &sig[..40]).unwrap();
    expect(&verify_trusted(tmp.path(), &b), 4, "malformed MANIFEST.sig");
    fs::write(b.join("MANIFEST.sig"), &sig).unwrap();
    expect(&verify_trusted(tmp.path(), &b), 0, "trusted key");
}

#[test]
fn signature_moved_from_another_bundle_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let a = signed_bundle(tmp.path(), "a.cath-bundle", &key);
    let b = signed_bundle(tmp.path(), "b.cath-bundle", &key);
    fs::copy(a.join("MANIFEST.sig"), b.join("MANIFEST.sig")).unwrap();
    expect(&verify_trusted(tmp.path(), &b), 4, "made for another bundle");
}

#[test]
fn unsigned_bundles_fail_only_when_a_signature_is_required() {
    let tmp = tempfile::tempdir().unwrap();
    keygen(tmp.path(), "k");
    let store = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store");
    let b = tmp.path().join("u.cath-bundle");
    expect(&cathedral(&["bundle", "--store", s(&store), "--run", RUN, "--output", s(&b)]), 0, "unsigned");
    expect(&verify(&b, &[]), 0, "signature unsigned");
    expect(&verify(&b, &["--require-signature"]), 4, "unsigned, and a signature is required");
    // A stray MANIFEST.sig in an unsigned bundle is an unlisted file.
    fs::write(b.join("MANIFEST.sig"), b"x").unwrap();
    expect(&verify(&b, &[]), 1, "[unlisted] MANIFEST.sig");
}

#[test]
fn malformed_key_files_are_refused_with_their_own_message() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let pubfile = tmp.path().join("k.pub");
    let store = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store");
    let out = tmp.path().join("x.cath-bundle");
    // A public key where a secret key is expected.
    expect(
        &cathedral(&["bundle", "--store", s(&store), "--run", RUN, "--output", s(&out), "--sign-key", s(&pubfile)]),
        2,
        "this is a public key file",
    );
    // A secret key where a public key is expected.
    let b = signed_bundle(tmp.path(), "b.cath-bundle", &key);
    expect(&verify(&b, &["--trusted-key", s(&key)]), 2, "this is a secret key file");
    // Garbage, truncation, a wrong key id, uppercase hex, a missing file.
    let good = fs::read_to_string(&pubfile).unwrap();
    let bad = tmp.path().join("bad.pub");
    let cases = [
        ("garbage\n".to_string(), "unknown file type"),
        (good[..good.len() - 5].to_string(), "does not end with a newline"),
        (good.replacen(&good.lines().nth(1).unwrap()[8..], &"0".repeat(16), 1), "does not match the key"),
        (good.lines().take(2).collect::<Vec<_>>().join("\n") + "\npublic-key: " + &"AB".repeat(32) + "\n", "lowercase hex"),
    ];
    for (text, needle) in cases {
        fs::write(&bad, text).unwrap();
        expect(&verify(&b, &["--trusted-key", s(&bad)]), 2, needle);
    }
    expect(&verify(&b, &["--trusted-key", s(&tmp.path().join("nope.pub"))]), 3, "not found");
    expect(&cathedral(&["bundle", "--store", s(&store), "--run", RUN, "--output", s(&out), "--sign-key", s(&bad)]), 2, "invalid key file");
    assert!(!out.exists());
}

#[test]
fn a_signature_field_that_names_no_signature_file_is_malformed() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "k");
    let b = signed_bundle(tmp.path(), "b.cath-bundle", &key);
    let original = fs::read_to_string(b.join("MANIFEST.json")).unwrap();
    for value in ["7", "true", "\"other.sig\"", "{}", "[]"] {
        fs::write(b.join("MANIFEST.json"), original.replace("\"signature\": \"MANIFEST.sig\"", &format!("\"signature\": {value}")))
            .unwrap();
        let report = BundleLoader::new().verify(&b).unwrap();
        assert!(matches!(report.signature, SignatureStatus::Malformed { .. }), "{value}: {:?}", report.signature);
        assert!(!report.is_valid(), "{value}");
    }
    // The bundle-id line of MANIFEST.sig is bound (FORMAT.md §13.2): changing only it is a bad signature.
    fs::write(b.join("MANIFEST.json"), &original).unwrap();
    let sig = fs::read_to_string(b.join("MANIFEST.sig")).unwrap();
    let changed: String = sig
        .lines()
        .map(|l| if l.starts_with("bundle-id: ") { "bundle-id: 00000000-0000-4000-8000-000000000000".to_string() } else { l.to_string() })
        .map(|l| l + "\n")
        .collect();
    fs::write(b.join("MANIFEST.sig"), changed).unwrap();
    expect(&verify_trusted(tmp.path(), &b), 4, "another bundle");
}
