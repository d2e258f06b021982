//! The blob decoder (header, bounded decompression, content hash) and the blob list.
#![no_main]

use cathedral_bundle::format::{decode_blob_to, BlobHeader, BlobList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = BlobHeader::decode(data, "blob") {
        // The verifier bounds content sizes by max_blob_size; keep runs short here.
        if header.size <= 1 << 20 {
            let _ = decode_blob_to(&header, &mut &data[56..], &mut std::io::sink(), "blob");
        }
    }
    if let Ok(list) = BlobList::new(&data, "blobs.cath-list", 1 << 20) {
        let _ = list.scan();
        for record in list.records(0..list.count().min(4096)).flatten() {
            let _ = list.find(&record.header.hash);
        }
    }
});
