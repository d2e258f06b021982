//! The snapshot decoder.
#![no_main]

use cathedral_bundle::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = Snapshot::decode_file(data, "snapshot.cath-snap") {
        assert_eq!(snapshot.encode_file(), data, "decoded snapshots re-encode to the same bytes");
    }
});
