//! The one-pass reader of the canonical event line: it returns an event for
//! exactly the lines the general path accepts (a strict JSON parse whose
//! event writes back to the same bytes), and the same event.
#![no_main]

use cathedral_bundle::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let general = std::str::from_utf8(line).ok().and_then(|text| Event::from_json_line(text).ok()).filter(|e| e.to_json_line().as_bytes() == line);
    assert_eq!(Event::from_canonical_line(line), general);
});
