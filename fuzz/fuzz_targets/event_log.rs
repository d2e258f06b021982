//! The event-log reader: header, record walk, record decoding, index rebuild.
#![no_main]

use cathedral_bundle::log::LogView;
use cathedral_bundle::{Event, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_record_len: 1 << 20, ..Limits::default() };
    let Ok(view) = LogView::new(data, "events.cath-log", &limits) else { return };
    for record in view.records() {
        let Ok((offset, bytes)) = record else { break };
        let _ = Event::decode(bytes, view.header().encoding, "events.cath-log", offset);
    }
    let _ = cathedral_bundle::index::rebuild(&view);
});
