//! The archive reader: zstd frame rules, tar framing, canonical headers,
//! entry order and the streaming checks behind them. The first byte picks
//! the form: even, the rest is a tar stream (compressed here, so that the
//! fuzzer works on tar bytes); odd, the rest is the archive file as is.
#![no_main]

use cathedral_bundle::{BundleLoader, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 0 { zstd::bulk::compress(rest, 1).expect("compresses") } else { rest.to_vec() };
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("f.cath-bundle.tar.zst");
    std::fs::write(&path, bytes).expect("written");
    // Small limits keep each run short; the reader must refuse, never hang or panic.
    let limits = Limits::default().max_total_size(64 << 20).max_blob_size(1 << 20).max_events(1 << 16);
    let _ = BundleLoader::new().limits(limits).verify(&path);
});
