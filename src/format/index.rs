//! `events.cath-idx`: random access into the event log by position, by
//! `event_id` and by `logical_time`, in O(log n) reads of the index alone.
//!
//! Layout (see [`crate::format`]): `"CATHIDX" | version u32 | count u32 |
//! log_hash [32] | log_size u64`, then `offsets` (count × u64: where each
//! record's length prefix starts in the log, counted from the log's first
//! byte), `times` (count × u64, in log order), and `ids` (count ×
//! `event_id [16] | position u32`, sorted by event_id, ids unique).

use std::io::{self, Read, Write};

use uuid::Uuid;

use super::{be_u32, be_u64, check_exact_len, partition_point};
use super::{INDEX_BYTES_PER_EVENT, INDEX_HEADER_LEN, INDEX_ID_LEN, INDEX_OFFSET_LEN, INDEX_TIME_LEN};
use crate::digest::Digest;
use crate::error::Error;
use crate::fsutil::{ReadAt, SeqReader};

/// The fields of an index header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// Number of events indexed.
    pub count: u32,
    /// BLAKE3 of the log this index belongs to.
    pub log_hash: Digest,
    /// Size of the log this index belongs to.
    pub log_size: u64,
}

/// Which section of the index a sequential read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `offsets`: one u64 per event, in log order.
    Offsets,
    /// `times`: one u64 per event, in log order.
    Times,
    /// `ids`: one `event_id [16] | position u32` per event, sorted by id.
    Ids,
}

/// Random access to an index whose header and size were checked.
#[derive(Clone, Copy)]
pub struct IndexReader<'a> {
    src: &'a dyn ReadAt,
    file: &'a str,
    header: IndexHeader,
}

impl<'a> IndexReader<'a> {
    /// Parses the header and checks that the file is exactly as long as its count says.
    pub fn new(src: &'a dyn ReadAt, file: &'a str) -> Result<Self, Error> {
        let head = super::FixedHeader {
            what: "index header",
            magic: super::INDEX_MAGIC,
            version_what: "index version",
            version: super::INDEX_VERSION,
            len: INDEX_HEADER_LEN,
        }
        .read(src, file)?;
        let count = be_u32(&head, super::INDEX_COUNT_OFFSET);
        let at = super::INDEX_LOG_HASH_OFFSET;
        let log_hash = Digest(head[at..at + 32].try_into().expect("32 bytes"));
        let log_size = be_u64(&head, super::INDEX_LOG_SIZE_OFFSET);
        check_exact_len(src.len(), file, "index sections", INDEX_HEADER_LEN, count, INDEX_BYTES_PER_EVENT)?;
        Ok(IndexReader { src, file, header: IndexHeader { count, log_hash, log_size } })
    }

    /// A reader over an index whose header was parsed before (by [`IndexReader::new`]).
    pub(crate) fn with_header(src: &'a dyn ReadAt, file: &'a str, header: IndexHeader) -> Self {
        IndexReader { src, file, header }
    }

    /// The header.
    pub fn header(&self) -> IndexHeader {
        self.header
    }

    /// Number of events indexed.
    pub fn count(&self) -> u32 {
        self.header.count
    }

    /// Where `section` starts in the file.
    pub fn section_start(&self, section: Section) -> u64 {
        let n = u64::from(self.header.count);
        INDEX_HEADER_LEN as u64
            + match section {
                Section::Offsets => 0,
                Section::Times => n * INDEX_OFFSET_LEN as u64,
                Section::Ids => n * (INDEX_OFFSET_LEN + INDEX_TIME_LEN) as u64,
            }
    }

    /// A sequential reader over `section`, with a buffer of `window` bytes.
    pub fn section(&self, section: Section, window: usize) -> SeqReader<'a> {
        SeqReader::new(self.src, self.file, self.section_start(section), false).with_window(window)
    }

    fn u64_at(&self, at: u64) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        self.src.read_at(at, &mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    /// Offset in the log of record `position`'s length prefix.
    pub fn offset(&self, position: u32) -> Result<Option<u64>, Error> {
        if position >= self.header.count {
            return Ok(None);
        }
        self.u64_at(self.section_start(Section::Offsets) + u64::from(position) * 8).map(Some)
    }

    /// Logical time of event `position`.
    pub fn time(&self, position: u32) -> Result<Option<u64>, Error> {
        if position >= self.header.count {
            return Ok(None);
        }
        self.u64_at(self.section_start(Section::Times) + u64::from(position) * 8).map(Some)
    }

    /// Entry `i` of the id section: `(event_id, position)`.
    pub fn id_entry(&self, i: u32) -> Result<([u8; 16], u32), Error> {
        let mut b = [0u8; INDEX_ID_LEN];
        self.src.read_at(self.section_start(Section::Ids) + u64::from(i) * INDEX_ID_LEN as u64, &mut b)?;
        Ok(decode_id_entry(&b))
    }

    /// The raw entries `from..to` of the id section, read into `buf`.
    pub fn id_entries<'b>(&self, from: u32, to: u32, buf: &'b mut Vec<u8>) -> Result<&'b [u8], Error> {
        let len = (to.saturating_sub(from) as usize) * INDEX_ID_LEN;
        // Grown (zero-filled) only when too short: the read overwrites it.
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let buf = &mut buf[..len];
        self.src.read_at(self.section_start(Section::Ids) + u64::from(from) * INDEX_ID_LEN as u64, buf)?;
        Ok(buf)
    }

    /// Position of the event with `id`, by binary search over the id section.
    pub fn position_of_id(&self, id: &Uuid) -> Result<Option<u32>, Error> {
        let target = id.as_bytes();
        let i = partition_point(self.header.count, |i| Ok(self.id_entry(i)?.0 < *target))?;
        if i == self.header.count {
            return Ok(None);
        }
        let (found, position) = self.id_entry(i)?;
        Ok((found == *target).then_some(position))
    }

    /// Position of the first event whose logical time is exactly `time`.
    pub fn position_of_time(&self, time: u64) -> Result<Option<u32>, Error> {
        let p = self.first_position_at_or_after(time)?;
        Ok((self.time(p)? == Some(time)).then_some(p))
    }

    /// Position of the first event whose logical time is at least `time`
    /// (`count` if there is none). Times are non-decreasing along the log.
    pub fn first_position_at_or_after(&self, time: u64) -> Result<u32, Error> {
        partition_point(self.header.count, |p| Ok(self.time(p)?.expect("in range") < time))
    }
}

/// Decodes one entry of the id section.
pub fn decode_id_entry(bytes: &[u8]) -> ([u8; 16], u32) {
    (bytes[..16].try_into().expect("16 bytes"), be_u32(bytes, 16))
}

/// Writes a whole index: header, the offsets and times sections (copied from
/// readers holding exactly `count` u64s each), then the sorted id entries.
pub(crate) fn write_index(
    out: &mut impl Write,
    header: &IndexHeader,
    offsets: &mut impl Read,
    times: &mut impl Read,
    sorted_ids: impl Iterator<Item = io::Result<([u8; 16], u32)>>,
) -> io::Result<()> {
    out.write_all(&super::INDEX_MAGIC)?;
    out.write_all(&super::INDEX_VERSION.to_be_bytes())?;
    out.write_all(&header.count.to_be_bytes())?;
    out.write_all(header.log_hash.as_bytes())?;
    out.write_all(&header.log_size.to_be_bytes())?;
    let expected = u64::from(header.count) * 8;
    for (section, reader) in [("offsets", offsets as &mut dyn Read), ("times", times as &mut dyn Read)] {
        let copied = io::copy(reader, out)?;
        if copied != expected {
            return Err(io::Error::other(format!("index {section} section holds {copied} bytes, expected {expected}")));
        }
    }
    for entry in sorted_ids {
        let (id, position) = entry?;
        out.write_all(&id)?;
        out.write_all(&position.to_be_bytes())?;
    }
    Ok(())
}

/// Builds the index of a log from the log alone, applying the event rules
/// (§5.1). A rebuilt index is byte-identical to the one a builder writes.
pub fn rebuild(log: &super::log::LogReader<'_>) -> Result<Vec<u8>, Error> {
    let file = super::EVENTS_FILE;
    let count = log.header().count;
    let mut offsets = Vec::with_capacity(count as usize * 8);
    let mut times = Vec::with_capacity(count as usize * 8);
    let mut ids = Vec::with_capacity(count as usize);
    let mut rules = super::event::EventRules::new(None);
    let mut walk = log.walk(true);
    while let Some((offset, record)) = walk.next_record()? {
        let event = super::event::Event::decode(record, log.header().encoding, file, offset)?;
        rules.check(&event).map_err(|e| e.located(file))?;
        offsets.extend_from_slice(&offset.to_be_bytes());
        times.extend_from_slice(&event.logical_time.to_be_bytes());
        ids.push((*event.event_id.as_bytes(), ids.len() as u32));
    }
    let log_hash = walk.finish()?.expect("hashing walk");
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
        let detail = format!("event id {} appears at positions {} and {}", Uuid::from_bytes(pair[0].0), pair[0].1, pair[1].1);
        return Err(Error::rule(file, "event id", detail));
    }
    let header = IndexHeader { count, log_hash, log_size: log.len() };
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + count as usize * INDEX_BYTES_PER_EVENT);
    write_index(&mut out, &header, &mut offsets.as_slice(), &mut times.as_slice(), ids.iter().map(|e| Ok(*e))).expect("writing to memory");
    Ok(out)
}
