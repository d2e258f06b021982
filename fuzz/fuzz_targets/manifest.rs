//! The manifest parser and its checks; the other JSON documents too.
#![no_main]

use cathedral_bundle::format::{Manifest, SignatureField};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::parse(data) {
        let _ = manifest.check();
        let _ = manifest.to_bytes();
    }
    let _ = SignatureField::of(data);
    let _ = serde_json::from_slice::<cathedral_bundle::Metadata>(data);
    if let Ok(dag) = serde_json::from_slice::<cathedral_bundle::Dag>(data) {
        let _ = dag.validate("dag.json");
    }
});
