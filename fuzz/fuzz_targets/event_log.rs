//! The event-log reader: header, record walk, record decoding, index rebuild.
#![no_main]

use cathedral_bundle::format::{rebuild_index, LogReader};
use cathedral_bundle::{Event, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default().max_record_len(1 << 20);
    let Ok(log) = LogReader::new(&data, "events.cath-log", &limits) else { return };
    let mut walk = log.walk(true);
    while let Ok(Some((offset, bytes))) = walk.next_record() {
        let _ = Event::decode(bytes, log.header().encoding, "events.cath-log", offset);
    }
    let _ = walk.finish();
    let _ = log.record_at(15);
    let _ = rebuild_index(&log);
});
