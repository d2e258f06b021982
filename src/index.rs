//! `events.cath-idx`: random access into the event log by position, by
//! `event_id` and by `logical_time`, in O(log n) without reading the log.
//!
//! Layout (see [`crate::format`]): `"CATHIDX" | version u32 | count u32 |
//! log_hash [32] | log_size u64`, then `offsets` (count × u64: where each
//! record's length prefix starts in the log, counted from the log's first
//! byte), `times` (count × u64, in log order), and `ids` (count ×
//! `event_id [16] | position u32`, sorted by event_id, ids unique).

use std::io::{self, Read, Write};

use uuid::Uuid;

use crate::digest::Digest;
use crate::error::Error;
use crate::event::Event;
use crate::format::{self, be_u32, be_u64, INDEX_BYTES_PER_EVENT, INDEX_HEADER_LEN, INDEX_ID_LEN};
use crate::log::{check_exact_len, check_prefix, LogView};

/// A view over the bytes of an index whose header and size were checked.
#[derive(Debug, Clone, Copy)]
pub struct IndexView<'a> {
    bytes: &'a [u8],
    count: u32,
    log_hash: Digest,
    log_size: u64,
}

impl<'a> IndexView<'a> {
    /// Parses the header and checks that the file is exactly as long as its count says.
    pub fn new(bytes: &'a [u8], file: &str) -> Result<Self, Error> {
        check_prefix(bytes, file, format::INDEX_MAGIC, "index header")?;
        let version = be_u32(bytes, format::MAGIC_LEN);
        if version != format::INDEX_VERSION {
            return Err(Error::Unsupported {
                file: file.to_string(),
                what: "index version",
                expected: format::INDEX_VERSION.to_string(),
                found: version.to_string(),
            });
        }
        if bytes.len() < INDEX_HEADER_LEN {
            return Err(Error::truncated(file, "index header", 0, INDEX_HEADER_LEN, bytes.len()));
        }
        let count = be_u32(bytes, format::PREFIX_LEN);
        let log_hash = Digest(bytes[15..47].try_into().expect("32 bytes"));
        let log_size = be_u64(bytes, 47);
        check_exact_len(bytes, file, "index sections", INDEX_HEADER_LEN, count, INDEX_BYTES_PER_EVENT)?;
        Ok(IndexView { bytes, count, log_hash, log_size })
    }

    /// Number of events indexed.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// BLAKE3 of the log this index belongs to.
    pub fn log_hash(&self) -> Digest {
        self.log_hash
    }

    /// Size of the log this index belongs to.
    pub fn log_size(&self) -> u64 {
        self.log_size
    }

    /// Offset in the log of record `position`'s length prefix.
    pub fn offset(&self, position: u32) -> Option<u64> {
        (position < self.count).then(|| be_u64(self.bytes, INDEX_HEADER_LEN + position as usize * 8))
    }

    /// Logical time of event `position`.
    pub fn time(&self, position: u32) -> Option<u64> {
        (position < self.count).then(|| be_u64(self.bytes, self.times_start() + position as usize * 8))
    }

    /// Entry `i` of the id section: `(event_id, position)`.
    pub fn id_entry(&self, i: u32) -> Option<([u8; 16], u32)> {
        (i < self.count).then(|| {
            let at = self.ids_start() + i as usize * INDEX_ID_LEN;
            (self.bytes[at..at + 16].try_into().expect("16 bytes"), be_u32(self.bytes, at + 16))
        })
    }

    /// Position of the event with `id`, by binary search over the id section.
    pub fn position_of_id(&self, id: &Uuid) -> Option<u32> {
        let target = id.as_bytes();
        let (mut lo, mut hi) = (0u32, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (entry, position) = self.id_entry(mid).expect("in range");
            match entry.cmp(target) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(position),
            }
        }
        None
    }

    /// Position of the first event whose logical time is at least `time`
    /// (`count` if there is none). Times are non-decreasing along the log.
    pub fn first_position_at_or_after(&self, time: u64) -> u32 {
        let (mut lo, mut hi) = (0u32, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.time(mid).expect("in range") < time {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn times_start(&self) -> usize {
        INDEX_HEADER_LEN + self.count as usize * 8
    }

    fn ids_start(&self) -> usize {
        INDEX_HEADER_LEN + self.count as usize * 16
    }
}

/// Writes an index: header, then the offsets and times sections (each a
/// stream of `count` big-endian u64s), then the sorted id entries.
pub fn write_index(
    out: &mut impl Write,
    count: u32,
    log_hash: &Digest,
    log_size: u64,
    offsets: &mut impl Read,
    times: &mut impl Read,
    sorted_ids: &[([u8; 16], u32)],
) -> io::Result<()> {
    out.write_all(&format::INDEX_MAGIC)?;
    out.write_all(&format::INDEX_VERSION.to_be_bytes())?;
    out.write_all(&count.to_be_bytes())?;
    out.write_all(log_hash.as_bytes())?;
    out.write_all(&log_size.to_be_bytes())?;
    for (section, reader) in [("offsets", offsets as &mut dyn Read), ("times", times as &mut dyn Read)] {
        let copied = io::copy(reader, out)?;
        if copied != u64::from(count) * 8 {
            return Err(io::Error::other(format!("index {section} section holds {copied} bytes, expected {}", u64::from(count) * 8)));
        }
    }
    for (id, position) in sorted_ids {
        out.write_all(id)?;
        out.write_all(&position.to_be_bytes())?;
    }
    Ok(())
}

/// Builds the index of a log from the log alone. Fails if the log is
/// malformed, event ids repeat, or logical time goes backwards.
pub fn rebuild(log: &LogView<'_>) -> Result<Vec<u8>, Error> {
    let count = log.header().count;
    let mut offsets = Vec::with_capacity(count as usize * 8);
    let mut times = Vec::with_capacity(count as usize * 8);
    let mut ids = Vec::with_capacity(count as usize);
    let mut previous_time = 0;
    for (position, record) in log.records().enumerate() {
        let (offset, bytes) = record?;
        let event = Event::decode(bytes, log.header().encoding, format::EVENTS_FILE, offset)?;
        if event.logical_time < previous_time {
            return Err(Error::malformed(
                format::EVENTS_FILE,
                "logical time",
                offset,
                format!("event {position} goes back in time: {} after {previous_time}", event.logical_time),
            ));
        }
        previous_time = event.logical_time;
        offsets.extend_from_slice(&offset.to_be_bytes());
        times.extend_from_slice(&event.logical_time.to_be_bytes());
        ids.push((*event.event_id.as_bytes(), position as u32));
    }
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::malformed(
            format::EVENTS_FILE,
            "event id",
            0,
            format!("event id {} appears at positions {} and {}", Uuid::from_bytes(pair[0].0), pair[0].1, pair[1].1),
        ));
    }
    let log_hash = Digest::of(log.bytes());
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + count as usize * INDEX_BYTES_PER_EVENT);
    write_index(&mut out, count, &log_hash, log.bytes().len() as u64, &mut offsets.as_slice(), &mut times.as_slice(), &ids)
        .expect("writing to memory");
    Ok(out)
}
