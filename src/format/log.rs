//! `events.cath-log`: a streaming writer, a positioned reader for random
//! access, and a sequential walk that hashes what it decodes.
//!
//! Layout (see [`crate::format`]): `"CATHLOG" | version u32 | count u32`, then
//! `count` records of `len u32 | encoded event [len]`, and nothing after.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::event::{Encoding, Event};
use super::{be_u32, check_prefix, LOG_HEADER_LEN, RECORD_PREFIX_LEN};
use crate::digest::Digest;
use crate::error::Error;
use crate::fsutil::{ReadAt, SeqReader};
use crate::limits::Limits;

/// The fields of a log header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// Record encoding, from the version field.
    pub encoding: Encoding,
    /// Declared number of records.
    pub count: u32,
}

impl LogHeader {
    /// Parses and checks the header of a log of `len` bytes whose first bytes
    /// are `head`. The count is checked against the limit and against the
    /// bytes that remain (each record takes at least 5 bytes).
    pub fn parse(head: &[u8], len: u64, file: &str, limits: &Limits) -> Result<Self, Error> {
        let version = check_prefix(head, file, super::LOG_MAGIC, "log header")?;
        let encoding = Encoding::from_log_version(version).ok_or_else(|| Error::Unsupported {
            file: file.to_string(),
            what: "log version",
            expected: format!("{} (postcard) or {} (cbor)", super::LOG_VERSION_POSTCARD, super::LOG_VERSION_CBOR),
            found: version.to_string(),
        })?;
        if head.len() < LOG_HEADER_LEN {
            return Err(Error::truncated(file, "log header", 0, LOG_HEADER_LEN as u64, head.len() as u64));
        }
        let count = be_u32(head, super::LOG_COUNT_OFFSET);
        if u64::from(count) > limits.max_events {
            return Err(Error::limit(file, "event count", limits.max_events, count.into()));
        }
        let remaining = len - LOG_HEADER_LEN as u64;
        let needed = u64::from(count) * (RECORD_PREFIX_LEN as u64 + 1);
        if needed > remaining {
            return Err(Error::truncated(file, "event records", LOG_HEADER_LEN as u64, needed, remaining));
        }
        Ok(LogHeader { encoding, count })
    }
}

/// Reads the header bytes of `src`: up to [`LOG_HEADER_LEN`].
fn head(src: &dyn ReadAt) -> Result<Vec<u8>, Error> {
    let mut head = vec![0u8; src.len().min(LOG_HEADER_LEN as u64) as usize];
    src.read_at(0, &mut head)?;
    Ok(head)
}

/// Checks a record length read at `offset` against the limit and the bytes that remain.
fn check_record_len(file: &str, offset: u64, len: u32, available: u64, max_record_len: u64) -> Result<usize, Error> {
    if len == 0 {
        return Err(Error::malformed(file, "record length", offset, "zero-length record"));
    }
    if u64::from(len) > max_record_len {
        return Err(Error::limit(file, "record length", max_record_len, len.into()));
    }
    if u64::from(len) > available - RECORD_PREFIX_LEN as u64 {
        return Err(Error::truncated(file, "record", offset, RECORD_PREFIX_LEN as u64 + u64::from(len), available));
    }
    Ok(len as usize)
}

/// Random access to the records of a log whose header was checked.
#[derive(Clone, Copy)]
pub struct LogReader<'a> {
    src: &'a dyn ReadAt,
    header: LogHeader,
    file: &'a str,
    max_record_len: u64,
}

impl<'a> LogReader<'a> {
    /// Reads and checks the header.
    pub fn new(src: &'a dyn ReadAt, file: &'a str, limits: &Limits) -> Result<Self, Error> {
        let header = LogHeader::parse(&head(src)?, src.len(), file, limits)?;
        Ok(LogReader { src, header, file, max_record_len: limits.max_record_len })
    }

    /// A reader over a log whose header was parsed before (by [`LogReader::new`]).
    pub(crate) fn with_header(src: &'a dyn ReadAt, header: LogHeader, file: &'a str, limits: &Limits) -> Self {
        LogReader { src, header, file, max_record_len: limits.max_record_len }
    }

    /// The header.
    pub fn header(&self) -> LogHeader {
        self.header
    }

    /// The size of the log.
    pub fn len(&self) -> u64 {
        self.src.len()
    }

    /// True for an empty file (never a valid log).
    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
    }

    /// The record whose length prefix starts at `offset`, and the offset after it.
    pub fn record_at(&self, offset: u64) -> Result<(Vec<u8>, u64), Error> {
        let (file, len) = (self.file, self.src.len());
        if offset < LOG_HEADER_LEN as u64 || offset > len {
            return Err(Error::malformed(file, "record offset", offset, format!("outside the records area {LOG_HEADER_LEN}..{len}")));
        }
        let available = len - offset;
        if available < RECORD_PREFIX_LEN as u64 {
            return Err(Error::truncated(file, "record length", offset, RECORD_PREFIX_LEN as u64, available));
        }
        let mut prefix = [0u8; RECORD_PREFIX_LEN];
        self.src.read_at(offset, &mut prefix)?;
        let n = check_record_len(file, offset, u32::from_be_bytes(prefix), available, self.max_record_len)?;
        let mut record = vec![0u8; n];
        let body = offset + RECORD_PREFIX_LEN as u64;
        self.src.read_at(body, &mut record)?;
        Ok((record, body + n as u64))
    }

    /// Decodes the event whose record starts at `offset`.
    pub fn event_at(&self, offset: u64) -> Result<Event, Error> {
        let (record, _) = self.record_at(offset)?;
        Event::decode(&record, self.header.encoding, self.file, offset)
    }

    /// A sequential walk over every record, in order; with `hash`, every
    /// byte of the file is hashed as it is read.
    pub fn walk(&self, hash: bool) -> RecordWalk<'a> {
        self.walk_reading(SeqReader::new(self.src, self.file, 0, hash))
    }

    /// [`LogReader::walk`], hashing the file and its outboard (FORMAT.md §14).
    pub fn walk_with_outboard(&self) -> RecordWalk<'a> {
        self.walk_reading(SeqReader::new(self.src, self.file, 0, true).with_outboard(super::outboard::GROUP_CHUNK_LOG))
    }

    fn walk_reading(&self, mut reader: SeqReader<'a>) -> RecordWalk<'a> {
        // The header was checked; read it so that it is hashed too.
        let _ = reader.next_bytes(LOG_HEADER_LEN);
        RecordWalk { reader, header: self.header, file: self.file, max_record_len: self.max_record_len, position: 0, failed: false }
    }

    /// A sequential walk (not hashing) from record `position`, whose length
    /// prefix is at `offset` (from the index).
    pub fn walk_from(&self, offset: u64, position: u32) -> RecordWalk<'a> {
        let reader = SeqReader::new(self.src, self.file, offset, false).with_window(1 << 20);
        RecordWalk { reader, header: self.header, file: self.file, max_record_len: self.max_record_len, position, failed: false }
    }
}

/// A sequential walk over the records of a log; see [`LogReader::walk`].
pub struct RecordWalk<'a> {
    reader: SeqReader<'a>,
    header: LogHeader,
    file: &'a str,
    max_record_len: u64,
    position: u32,
    failed: bool,
}

impl RecordWalk<'_> {
    /// The next record, `(offset of its length prefix, record)`, or None
    /// after the last declared one. Bytes after it are
    /// [`Error::TrailingData`]. After an error the walk is over: it
    /// returns None.
    pub fn next_record(&mut self) -> Result<Option<(u64, &[u8])>, Error> {
        Ok(self.step_once()?.map(|(offset, len)| (offset, self.reader.last(len))))
    }

    /// Frames up to `max` records, pushing `(offset of its length prefix,
    /// place in [`RecordWalk::buffer`], length)` for each; true when the
    /// log ended. Only the first record may need more of the file read;
    /// the batch stops before any other that is not wholly read already,
    /// so that every record framed stays where it is until the next call.
    /// On an error, the records before it are in `framed`.
    pub fn next_batch(&mut self, max: usize, framed: &mut Vec<(u64, usize, usize)>) -> Result<bool, Error> {
        while framed.len() < max {
            if !self.failed && !framed.is_empty() && !self.next_is_read() {
                return Ok(false);
            }
            match self.step_once()? {
                Some((offset, len)) => framed.push((offset, self.reader.buffer_position() - len, len)),
                None => return Ok(true),
            }
        }
        Ok(false)
    }

    /// The bytes the records of the last [`RecordWalk::next_batch`] are in.
    pub fn buffer(&self) -> &[u8] {
        self.reader.buffer()
    }

    /// Bytes read beyond the last record framed.
    pub fn buffered_len(&self) -> usize {
        self.reader.buffered().len()
    }

    /// Hands over the buffer the records of the last
    /// [`RecordWalk::next_batch`] are in, and goes on with `fresh`
    /// ([`SeqReader::swap_buffer`]).
    pub fn swap_buffer(&mut self, fresh: Vec<u8>) -> Vec<u8> {
        self.reader.swap_buffer(fresh)
    }

    /// Whether the next step reads nothing from the file: the log's end,
    /// or a record whose prefix and bytes are all buffered.
    fn next_is_read(&self) -> bool {
        if self.position == self.header.count {
            return true;
        }
        let buffered = self.reader.buffered();
        buffered.len() >= RECORD_PREFIX_LEN && buffered.len() - RECORD_PREFIX_LEN >= be_u32(buffered, 0) as usize
    }

    /// [`RecordWalk::step`], once the walk is not over: None after an
    /// error, which ends it.
    fn step_once(&mut self) -> Result<Option<(u64, usize)>, Error> {
        if self.failed {
            return Ok(None);
        }
        let step = self.step();
        self.failed = step.is_err();
        step
    }

    /// Reads the next record into the buffer; returns its offset and length.
    fn step(&mut self) -> Result<Option<(u64, usize)>, Error> {
        let offset = self.reader.position();
        let available = self.reader.remaining();
        if self.position == self.header.count {
            if available > 0 {
                return Err(Error::TrailingData { file: self.file.to_string(), offset, count: available });
            }
            return Ok(None);
        }
        if available < RECORD_PREFIX_LEN as u64 {
            return Err(Error::truncated(self.file, "record length", offset, RECORD_PREFIX_LEN as u64, available));
        }
        let len = be_u32(self.reader.next_bytes(RECORD_PREFIX_LEN)?, 0);
        let n = check_record_len(self.file, offset, len, available, self.max_record_len)?;
        self.position += 1;
        self.reader.next_bytes(n)?;
        Ok(Some((offset, n)))
    }

    /// Where the walk is: the offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// Reads whatever was not walked (after an error, or trailing bytes) and
    /// returns the hash of the whole file, when hashing.
    pub fn finish(mut self) -> Result<Option<Digest>, Error> {
        self.reader.skip_to_end()?;
        Ok(self.reader.finish())
    }

    /// [`RecordWalk::finish`], and the hash of the file's outboard when the
    /// walk was [`LogReader::walk_with_outboard`].
    pub fn finish_with_outboard(mut self) -> Result<(Option<Digest>, Option<Digest>), Error> {
        self.reader.skip_to_end()?;
        Ok((self.reader.hash_so_far(), self.reader.outboard_hash()))
    }
}

/// Streams events into a new log file: the writer of the layout above. The
/// count is patched in by [`LogWriter::finish`]. It applies the limits, not
/// the event rules: [`crate::BundleBuilder`] writes whole bundles.
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
        let file = File::options().write(true).create_new(true).open(path).map_err(|e| Error::output(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::with_capacity(LOG_HEADER_LEN);
        header.extend_from_slice(&super::LOG_MAGIC);
        header.extend_from_slice(&encoding.log_version().to_be_bytes());
        header.extend_from_slice(&0u32.to_be_bytes());
        out.write_all(&header).map_err(|e| Error::output(path, e))?;
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
            return Err(Error::limit(super::EVENTS_FILE, "event count", self.max_events, u64::from(self.count) + 1));
        }
        self.scratch.clear();
        event.encode(self.encoding, &mut self.scratch)?;
        let len = self.scratch.len() as u64;
        if len > self.max_record_len {
            return Err(Error::limit(super::EVENTS_FILE, "record length", self.max_record_len, len));
        }
        let offset = self.offset;
        self.out.write_all(&(len as u32).to_be_bytes()).map_err(|e| Error::output(&self.path, e))?;
        self.out.write_all(&self.scratch).map_err(|e| Error::output(&self.path, e))?;
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
        let mut file = self.out.into_inner().map_err(|e| Error::output(&path, e.into_error()))?;
        file.seek(SeekFrom::Start(super::LOG_COUNT_OFFSET as u64)).map_err(|e| Error::output(&path, e))?;
        file.write_all(&self.count.to_be_bytes()).map_err(|e| Error::output(&path, e))?;
        file.sync_all().map_err(|e| Error::output(&path, e))?;
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
        assert!(matches!(LogReader::new(&b, "l", &Limits::default()), Err(Error::BadMagic { .. })));
    }

    #[test]
    fn count_is_bounded_by_remaining_bytes() {
        let b = header(1, u32::MAX);
        assert!(matches!(LogReader::new(&b, "l", &Limits::default()), Err(Error::Truncated { .. })));
        let limits = Limits { max_events: 2, ..Limits::default() };
        let mut b = header(1, 3);
        b.extend_from_slice(&[0; 64]);
        assert!(matches!(LogReader::new(&b, "l", &limits), Err(Error::LimitExceeded { .. })));
    }

    #[test]
    fn huge_record_length_is_refused_before_allocation() {
        let mut b = header(1, 1);
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        b.push(0);
        let log = LogReader::new(&b, "l", &Limits::default()).unwrap();
        let err = log.walk(false).next_record().unwrap_err();
        assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
        assert!(matches!(log.record_at(15), Err(Error::LimitExceeded { .. })));
        let limits = Limits { max_record_len: u64::MAX, ..Limits::default() };
        let log = LogReader::new(&b, "l", &limits).unwrap();
        assert!(matches!(log.walk(false).next_record(), Err(Error::Truncated { .. })));
    }

    #[test]
    fn unknown_version_and_trailing_bytes() {
        assert!(matches!(LogReader::new(&header(3, 0), "l", &Limits::default()), Err(Error::Unsupported { .. })));
        let mut b = header(1, 0);
        b.push(7);
        let log = LogReader::new(&b, "l", &Limits::default()).unwrap();
        let mut walk = log.walk(true);
        assert!(matches!(walk.next_record(), Err(Error::TrailingData { offset: 15, count: 1, .. })));
        assert_eq!(walk.finish().unwrap(), Some(Digest::of(&b)));
    }

    /// Records with their offsets, and the error that ended the walk.
    type Walked = (Vec<(u64, Vec<u8>)>, Option<String>);

    /// Every record, or the error that ended the walk, by `next_record`.
    fn one_by_one(log: &LogReader<'_>, window: usize) -> Walked {
        let mut walk = log.walk_reading(SeqReader::new(log.src, log.file, 0, true).with_window(window));
        let mut out = Vec::new();
        loop {
            match walk.next_record() {
                Ok(Some((offset, record))) => out.push((offset, record.to_vec())),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    /// The same, framed `max` at a time by `next_batch` and read from the
    /// walk's buffer after each batch; and the file's hash.
    fn in_batches(log: &LogReader<'_>, window: usize, max: usize) -> (Walked, Option<Digest>) {
        let mut walk = log.walk_reading(SeqReader::new(log.src, log.file, 0, true).with_window(window));
        let (mut out, mut framed) = (Vec::new(), Vec::new());
        loop {
            framed.clear();
            let result = walk.next_batch(max, &mut framed);
            assert!(framed.len() <= max);
            for &(offset, start, len) in &framed {
                out.push((offset, walk.buffer()[start..start + len].to_vec()));
            }
            match result {
                Ok(true) => return ((out, None), walk.finish().unwrap()),
                Ok(false) => assert!(!framed.is_empty(), "a batch that does not end the log frames a record"),
                Err(e) => return ((out, Some(e.to_string())), None),
            }
        }
    }

    #[test]
    fn batches_frame_the_records_one_by_one_frames() {
        let mut b = header(1, 40);
        for i in 0..40u32 {
            let len = 1 + (i * 37 % 300) as usize;
            b.extend_from_slice(&(len as u32).to_be_bytes());
            b.extend((0..len).map(|j| (i as usize * 7 + j) as u8));
        }
        let whole = b.len();
        let mut cases: Vec<Vec<u8>> = vec![b.clone()];
        // Cut anywhere; a byte too many; a length past the end.
        cases.extend([16, 200, 1000, whole / 2, whole - 1].map(|cut| b[..cut].to_vec()));
        let mut trailing = b.clone();
        trailing.push(1);
        cases.push(trailing);
        let mut long = b.clone();
        long[15..19].copy_from_slice(&4000u32.to_be_bytes());
        cases.push(long);
        for bytes in &cases {
            let Ok(log) = LogReader::new(bytes, "l", &Limits::default()) else { continue };
            for window in [64, 100, 333, 1000, 1 << 20] {
                let expected = one_by_one(&log, window);
                for max in [1, 3, 7, 100] {
                    let (walked, hash) = in_batches(&log, window, max);
                    assert_eq!(walked, expected, "{} bytes, window {window}, batches of {max}", bytes.len());
                    if walked.1.is_none() {
                        assert_eq!(hash, Some(Digest::of(bytes)));
                    }
                }
            }
        }
        let full = one_by_one(&LogReader::new(&b, "l", &Limits::default()).unwrap(), 64);
        assert_eq!((full.0.len(), full.1), (40, None), "the undamaged log: every record, no error");
    }
}
