//! Bit-flip sweep: single bits flipped at thousands of deterministic
//! positions across every file of a signed bundle; full verification with
//! the signer's key trusted must reject every one.

mod support;

use std::fs;

use cathedral_bundle::{BuildOptions, BundleLoader, Encoding, SecretKey, SignatureStatus};
use support::fixture_gen::{build, sample_run};

/// Flips to try; spread evenly over every bit of every file.
const TARGET_FLIPS: u64 = 6000;

#[test]
fn every_single_bit_flip_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let key = std::sync::Arc::new(SecretKey::from_seed([7; 32]));
    let public = key.public();
    let bundle = tmp.path().join("flip.cath-bundle");
    let run = sample_run("flip", 3, false, true);
    build(&run, &bundle, BuildOptions::default().encoding(Encoding::Postcard).compression_level(Some(3)).signing_key(Some(key)));
    let loader = BundleLoader::new().trusted_keys([public]).require_signature(true);
    let accepted = |loader: &BundleLoader| {
        let report = loader.verify(&bundle).unwrap();
        report.is_valid() && matches!(report.signature, SignatureStatus::Trusted { .. })
    };
    assert!(accepted(&loader), "the pristine bundle verifies");

    let files = support::files_under(&bundle);
    let total_bits: u64 = files.iter().map(|f| fs::metadata(bundle.join(f)).unwrap().len() * 8).sum();
    let step = (total_bits / TARGET_FLIPS).max(1);
    let (mut tried, mut caught, mut missed) = (0u64, 0u64, Vec::new());
    let mut base = 0u64;
    for file in &files {
        let path = bundle.join(file);
        let original = fs::read(&path).unwrap();
        let bits = original.len() as u64 * 8;
        // Positions k·step + jitter, where the jitter walks through the bits of a byte.
        let mut global = base.div_ceil(step) * step;
        while global < base + bits {
            let bit = global - base + (global / step) % 8;
            if bit < bits {
                let mut bytes = original.clone();
                bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
                fs::write(&path, &bytes).unwrap();
                tried += 1;
                if accepted(&loader) {
                    missed.push(format!("{file} bit {bit}"));
                } else {
                    caught += 1;
                }
            }
            global += step;
        }
        fs::write(&path, &original).unwrap();
        base += bits;
    }
    assert!(accepted(&loader), "the restored bundle verifies");
    eprintln!("bit flips: {tried} tried over {} files ({total_bits} bits), {caught} caught", files.len());
    assert!(tried >= 4000, "only {tried} flips");
    assert!(missed.is_empty(), "{} flips were accepted: {:?}", missed.len(), &missed[..missed.len().min(20)]);
}
