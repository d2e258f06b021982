//! `events.cath-log`: a streaming writer and a bounds-checked reader.
//!
//! Layout (see [`crate::format`]): `"CATHLOG" | version u32 | count u32`, then
//! `count` records of `len u32 | encoded event [len]`, and nothing after.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::event::{Encoding, Event};
use crate::format::{self, be_u32, LOG_HEADER_LEN, RECORD_PREFIX_LEN};
use crate::limits::Limits;

/// Checks that `bytes` starts with the full 7-byte `magic` and a version field.
pub(crate) fn check_prefix(bytes: &[u8], file: &str, magic: [u8; format::MAGIC_LEN], what: &'static str) -> Result<(), Error> {
    if bytes.len() < format::PREFIX_LEN {
        return Err(Error::truncated(file, what, 0, format::PREFIX_LEN, bytes.len()));
    }
    if bytes[..format::MAGIC_LEN] != magic {
        return Err(Error::BadMagic {
            file: file.to_string(),
            expected: String::from_utf8_lossy(&magic).into_owned(),
            found: String::from_utf8_lossy(&bytes[..format::MAGIC_LEN]).into_owned(),
        });
    }
    Ok(())
}

/// Checks that a file of fixed-size items is exactly `header + count × item`
/// bytes long: shorter is truncated, longer has trailing data.
pub(crate) fn check_exact_len(bytes: &[u8], file: &str, what: &'static str, header: usize, count: u32, item: usize) -> Result<(), Error> {
    let expected = header as u64 + u64::from(count) * item as u64;
    let found = bytes.len() as u64;
    if found < expected {
        return Err(Error::Truncated {
            file: file.to_string(),
            what,
            offset: header as u64,
            needed: expected - header as u64,
            available: found - header as u64,
        });
    }
    if found > expected {
        return Err(Error::TrailingData { file: file.to_string(), offset: expected, count: found - expected });
    }
    Ok(())
}

/// The fields of a log header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// Record encoding, from the version field.
    pub encoding: Encoding,
    /// Declared number of records.
    pub count: u32,
}

/// A verified-header view over the bytes of a whole event log.
#[derive(Debug, Clone, Copy)]
pub struct LogView<'a> {
    bytes: &'a [u8],
    header: LogHeader,
    file: &'a str,
    max_record_len: u64,
}

impl<'a> LogView<'a> {
    /// Parses the header. The count is checked against the limit and against
    /// the bytes that remain (each record takes at least 5 bytes).
    pub fn new(bytes: &'a [u8], file: &'a str, limits: &Limits) -> Result<Self, Error> {
        check_prefix(bytes, file, format::LOG_MAGIC, "log header")?;
        if bytes.len() < LOG_HEADER_LEN {
            return Err(Error::truncated(file, "log header", 0, LOG_HEADER_LEN, bytes.len()));
        }
        let version = be_u32(bytes, format::MAGIC_LEN);
        let encoding = Encoding::from_log_version(version).ok_or_else(|| Error::Unsupported {
            file: file.to_string(),
            what: "log version",
            expected: format!("{} (postcard) or {} (cbor)", format::LOG_VERSION_POSTCARD, format::LOG_VERSION_CBOR),
            found: version.to_string(),
        })?;
        let count = be_u32(bytes, format::LOG_COUNT_OFFSET);
        if u64::from(count) > limits.max_events {
            return Err(Error::limit(file, "event count", limits.max_events, count.into()));
        }
        let remaining = (bytes.len() - LOG_HEADER_LEN) as u64;
        if u64::from(count) * (RECORD_PREFIX_LEN as u64 + 1) > remaining {
            return Err(Error::Truncated {
                file: file.to_string(),
                what: "event records",
                offset: LOG_HEADER_LEN as u64,
                needed: u64::from(count) * 5,
                available: remaining,
            });
        }
        Ok(LogView { bytes, header: LogHeader { encoding, count }, file, max_record_len: limits.max_record_len })
    }

    /// The header.
    pub fn header(&self) -> LogHeader {
        self.header
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The record whose length prefix starts at `offset`, and the offset after it.
    pub fn record_at(&self, offset: u64) -> Result<(&'a [u8], u64), Error> {
        let file = self.file;
        let start = usize::try_from(offset).ok().filter(|o| *o >= LOG_HEADER_LEN && *o <= self.bytes.len()).ok_or_else(|| {
            Error::malformed(file, "record offset", offset, format!("outside the records area {}..{}", LOG_HEADER_LEN, self.bytes.len()))
        })?;
        let available = self.bytes.len() - start;
        if available < RECORD_PREFIX_LEN {
            return Err(Error::truncated(file, "record length", start, RECORD_PREFIX_LEN, available));
        }
        let len = be_u32(self.bytes, start);
        if len == 0 {
            return Err(Error::malformed(file, "record length", offset, "zero-length record"));
        }
        if u64::from(len) > self.max_record_len {
            return Err(Error::limit(file, "record length", self.max_record_len, len.into()));
        }
        let body = start + RECORD_PREFIX_LEN;
        let len = len as usize;
        if len > available - RECORD_PREFIX_LEN {
            return Err(Error::truncated(file, "record", start, RECORD_PREFIX_LEN + len, available));
        }
        Ok((&self.bytes[body..body + len], (body + len) as u64))
    }

    /// Decodes the event whose record starts at `offset`.
    pub fn event_at(&self, offset: u64) -> Result<Event, Error> {
        let (record, _) = self.record_at(offset)?;
        Event::decode(record, self.header.encoding, self.file, offset)
    }

    /// Walks every record in order: `(offset, record)`. After the last declared
    /// record, the iterator yields a [`Error::TrailingData`] if bytes remain.
    pub fn records(&self) -> Records<'a> {
        Records { view: *self, position: 0, offset: LOG_HEADER_LEN as u64, done: false }
    }
}

/// Iterator over the records of a log; see [`LogView::records`].
pub struct Records<'a> {
    view: LogView<'a>,
    position: u32,
    offset: u64,
    done: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(u64, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.position == self.view.header.count {
            self.done = true;
            let len = self.view.bytes.len() as u64;
            if self.offset != len {
                return Some(Err(Error::TrailingData { file: self.view.file.to_string(), offset: self.offset, count: len - self.offset }));
            }
            return None;
        }
        match self.view.record_at(self.offset) {
            Ok((record, next)) => {
                let offset = self.offset;
                self.offset = next;
                self.position += 1;
                Some(Ok((offset, record)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Streams events into a new log file. The count is patched in by [`LogWriter::finish`].
pub struct LogWriter {
    path: PathBuf,
    out: BufWriter<File>,
    encoding: Encoding,
    count: u32,
    offset: u64,
    max_events: u64,
    max_record_len: u64,
    scratch: Vec<u8>,
}

impl LogWriter {
    /// Creates `path` (which must not exist) and writes a header with count 0.
    pub fn create(path: &Path, encoding: Encoding, limits: &Limits) -> Result<Self, Error> {
        let file = File::options().write(true).create_new(true).open(path).map_err(|e| Error::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::with_capacity(LOG_HEADER_LEN);
        header.extend_from_slice(&format::LOG_MAGIC);
        header.extend_from_slice(&encoding.log_version().to_be_bytes());
        header.extend_from_slice(&0u32.to_be_bytes());
        out.write_all(&header).map_err(|e| Error::io(path, e))?;
        Ok(LogWriter {
            path: path.to_path_buf(),
            out,
            encoding,
            count: 0,
            offset: LOG_HEADER_LEN as u64,
            max_events: limits.max_events.min(u32::MAX as u64),
            max_record_len: limits.max_record_len.min(u32::MAX as u64),
            scratch: Vec::new(),
        })
    }

    /// Appends one event; returns the offset of its record (its length prefix).
    pub fn append(&mut self, event: &Event) -> Result<u64, Error> {
        if u64::from(self.count) >= self.max_events {
            return Err(Error::limit(format::EVENTS_FILE, "event count", self.max_events, u64::from(self.count) + 1));
        }
        self.scratch.clear();
        event.encode(self.encoding, &mut self.scratch)?;
        let len = self.scratch.len() as u64;
        if len > self.max_record_len {
            return Err(Error::limit(format::EVENTS_FILE, "record length", self.max_record_len, len));
        }
        let offset = self.offset;
        self.out.write_all(&(len as u32).to_be_bytes()).map_err(|e| Error::io(&self.path, e))?;
        self.out.write_all(&self.scratch).map_err(|e| Error::io(&self.path, e))?;
        self.offset += RECORD_PREFIX_LEN as u64 + len;
        self.count += 1;
        Ok(offset)
    }

    /// Events written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes written so far, header included.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// True when no event was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Patches the count, flushes and syncs; returns the file size.
    pub fn finish(self) -> Result<u64, Error> {
        let path = self.path;
        let mut file = self.out.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        file.seek(SeekFrom::Start(format::LOG_COUNT_OFFSET as u64)).map_err(|e| Error::io(&path, e))?;
        file.write_all(&self.count.to_be_bytes()).map_err(|e| Error::io(&path, e))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        Ok(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32, count: u32) -> Vec<u8> {
        let mut b = b"CATHLOG".to_vec();
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b
    }

    #[test]
    fn six_byte_magic_is_not_enough() {
        let mut b = header(1, 0);
        b[6] = b'X'; // "CATHLOX": a reader comparing six bytes would accept it.
        assert!(matches!(LogView::new(&b, "l", &Limits::default()), Err(Error::BadMagic { .. })));
    }

    #[test]
    fn count_is_bounded_by_remaining_bytes() {
        let b = header(1, u32::MAX);
        assert!(matches!(LogView::new(&b, "l", &Limits::default()), Err(Error::Truncated { .. })));
        let limits = Limits { max_events: 2, ..Limits::default() };
        let mut b = header(1, 3);
        b.extend_from_slice(&[0; 64]);
        assert!(matches!(LogView::new(&b, "l", &limits), Err(Error::LimitExceeded { .. })));
    }

    #[test]
    fn huge_record_length_is_refused_before_allocation() {
        let mut b = header(1, 1);
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        b.push(0);
        let view = LogView::new(&b, "l", &Limits::default()).unwrap();
        let err = view.records().next().unwrap().unwrap_err();
        assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
        let limits = Limits { max_record_len: u64::MAX, ..Limits::default() };
        let view = LogView::new(&b, "l", &limits).unwrap();
        assert!(matches!(view.records().next().unwrap(), Err(Error::Truncated { .. })));
    }

    #[test]
    fn unknown_version_and_trailing_bytes() {
        assert!(matches!(LogView::new(&header(3, 0), "l", &Limits::default()), Err(Error::Unsupported { .. })));
        let mut b = header(1, 0);
        b.push(7);
        let view = LogView::new(&b, "l", &Limits::default()).unwrap();
        assert!(matches!(view.records().next(), Some(Err(Error::TrailingData { offset: 15, count: 1, .. }))));
    }
}
