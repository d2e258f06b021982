//! The index reader and its lookups.
#![no_main]

use cathedral_bundle::format::IndexReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = IndexReader::new(&data, "events.cath-idx") else { return };
    let n = index.count();
    for p in [0, n / 2, n.saturating_sub(1), n, u32::MAX] {
        let _ = (index.offset(p), index.time(p), index.id_entry(p));
    }
    let _ = index.position_of_id(&uuid::Uuid::nil());
    let _ = index.position_of_id(&uuid::Uuid::max());
    let _ = index.first_position_at_or_after(0);
    let _ = index.first_position_at_or_after(u64::MAX);
});
