//! Blob files (`blobs/<hh>/<hash>`) and the blob list (`blobs.cath-list`).
//!
//! A blob is named by the BLAKE3 of its uncompressed content. Its file is a
//! 56-byte header followed by the stored data; the blob list commits to the
//! BLAKE3 and size of every blob file, so every byte of the store is covered
//! by the manifest.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use super::{be_u32, be_u64, blob_header as at, check_exact_len, check_prefix, check_version, partition_point, record as rec};
use super::{BLOB_HEADER_LEN, BLOB_LIST_HEADER_LEN, BLOB_LIST_RECORD_LEN};
use crate::digest::Digest;
use crate::error::Error;
use crate::fsutil::{ReadAt, SeqReader};

/// What a blob's content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BlobFormat {
    /// Opaque bytes.
    #[default]
    Raw,
    /// A JSON document.
    Json,
    /// A CBOR item.
    Cbor,
    /// A postcard value.
    Postcard,
}

impl BlobFormat {
    fn code(self) -> u8 {
        match self {
            BlobFormat::Raw => 0,
            BlobFormat::Json => 1,
            BlobFormat::Cbor => 2,
            BlobFormat::Postcard => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => BlobFormat::Raw,
            1 => BlobFormat::Json,
            2 => BlobFormat::Cbor,
            3 => BlobFormat::Postcard,
            _ => return None,
        })
    }

    /// `raw`, `json`, `cbor` or `postcard`.
    pub fn name(self) -> &'static str {
        match self {
            BlobFormat::Raw => "raw",
            BlobFormat::Json => "json",
            BlobFormat::Cbor => "cbor",
            BlobFormat::Postcard => "postcard",
        }
    }
}

impl FromStr for BlobFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        [BlobFormat::Raw, BlobFormat::Json, BlobFormat::Cbor, BlobFormat::Postcard]
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| Error::input("blob format", format!("expected raw, json, cbor or postcard, found {s:?}")))
    }
}

/// How a blob's data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// One or more zstd frames.
    Zstd,
}

impl Compression {
    fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// `none` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 56-byte header at the start of every blob file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// Content format.
    pub format: BlobFormat,
    /// Storage compression.
    pub compression: Compression,
    /// Uncompressed size.
    pub size: u64,
    /// BLAKE3 of the uncompressed content; the blob's name.
    pub hash: Digest,
}

impl BlobHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; BLOB_HEADER_LEN] {
        let mut out = [0u8; BLOB_HEADER_LEN];
        out[..super::MAGIC_LEN].copy_from_slice(&super::BLOB_MAGIC);
        out[super::VERSION_OFFSET..super::PREFIX_LEN].copy_from_slice(&super::BLOB_VERSION.to_be_bytes());
        out[at::FORMAT] = self.format.code();
        out[at::COMPRESSION] = self.compression.code();
        out[at::CONTENT_SIZE..at::CONTENT_SIZE + 8].copy_from_slice(&self.size.to_be_bytes());
        out[at::CONTENT_HASH..at::CONTENT_HASH + 32].copy_from_slice(self.hash.as_bytes());
        out
    }

    /// Parses the header at the start of `bytes`. Every one of its 56 bytes
    /// is checked against a fixed value or read into a field.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Self, Error> {
        let version = check_prefix(bytes, file, super::BLOB_MAGIC, "blob header")?;
        check_version(file, "blob version", super::BLOB_VERSION, version)?;
        if bytes.len() < BLOB_HEADER_LEN {
            return Err(Error::truncated(file, "blob header", 0, BLOB_HEADER_LEN as u64, bytes.len() as u64));
        }
        let unsupported = |what, expected: &str, found: u8| Error::Unsupported {
            file: file.to_string(),
            what,
            expected: expected.into(),
            found: found.to_string(),
        };
        let format = BlobFormat::from_code(bytes[at::FORMAT]).ok_or_else(|| unsupported("blob format", "0..=3", bytes[at::FORMAT]))?;
        let compression = Compression::from_code(bytes[at::COMPRESSION])
            .ok_or_else(|| unsupported("blob compression", "0 or 1", bytes[at::COMPRESSION]))?;
        if bytes[at::RESERVED..at::CONTENT_SIZE] != [0, 0, 0] {
            return Err(Error::malformed(file, "blob header", at::RESERVED as u64, "reserved bytes are not zero"));
        }
        let hash = Digest(bytes[at::CONTENT_HASH..at::CONTENT_HASH + 32].try_into().expect("32 bytes"));
        Ok(BlobHeader { format, compression, size: be_u64(bytes, at::CONTENT_SIZE), hash })
    }
}

/// One record of the blob list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRecord {
    /// The blob's header, as it must appear in its file.
    pub header: BlobHeader,
    /// For a zstd blob, BLAKE3 of the whole file (what `b3sum` prints for
    /// it). For an uncompressed blob, the content hash (the data is the
    /// content), as writers emit it; bundles from earlier writers hold the
    /// BLAKE3 of the whole file there instead, which is then checked too.
    pub stored_hash: Digest,
    /// Size of the whole blob file.
    pub stored_size: u64,
}

impl BlobRecord {
    /// Whether `stored_hash` is the BLAKE3 of the whole file (a zstd blob,
    /// or an uncompressed one from earlier writers) rather than the content
    /// hash: a verifier then hashes the whole file too.
    pub fn hashes_whole_file(&self) -> bool {
        self.header.compression == Compression::Zstd || self.stored_hash != self.header.hash
    }

    /// The record's 88 bytes.
    pub fn encode(&self) -> [u8; BLOB_LIST_RECORD_LEN] {
        let mut out = [0u8; BLOB_LIST_RECORD_LEN];
        out[rec::CONTENT_HASH..rec::CONTENT_HASH + 32].copy_from_slice(self.header.hash.as_bytes());
        out[rec::STORED_HASH..rec::STORED_HASH + 32].copy_from_slice(self.stored_hash.as_bytes());
        out[rec::STORED_SIZE..rec::STORED_SIZE + 8].copy_from_slice(&self.stored_size.to_be_bytes());
        out[rec::CONTENT_SIZE..rec::CONTENT_SIZE + 8].copy_from_slice(&self.header.size.to_be_bytes());
        out[rec::FORMAT] = self.header.format.code();
        out[rec::COMPRESSION] = self.header.compression.code();
        out
    }

    /// Decodes one record, checking every rule a record obeys alone (§7).
    pub fn decode(bytes: &[u8], file: &str, offset: u64) -> Result<Self, Error> {
        let bad = |detail: String| Error::malformed(file, "blob record", offset, detail);
        let format = BlobFormat::from_code(bytes[rec::FORMAT]).ok_or_else(|| bad(format!("unknown format {}", bytes[rec::FORMAT])))?;
        let compression = Compression::from_code(bytes[rec::COMPRESSION])
            .ok_or_else(|| bad(format!("unknown compression {}", bytes[rec::COMPRESSION])))?;
        if bytes[rec::RESERVED..BLOB_LIST_RECORD_LEN] != [0; 6] {
            return Err(bad("reserved bytes are not zero".into()));
        }
        let stored_size = be_u64(bytes, rec::STORED_SIZE);
        let size = be_u64(bytes, rec::CONTENT_SIZE);
        let hash = Digest(bytes[rec::CONTENT_HASH..rec::CONTENT_HASH + 32].try_into().expect("32 bytes"));
        let stored_hash = Digest(bytes[rec::STORED_HASH..rec::STORED_HASH + 32].try_into().expect("32 bytes"));
        if stored_size < BLOB_HEADER_LEN as u64 {
            return Err(bad(format!("stored size {stored_size} is smaller than the {BLOB_HEADER_LEN}-byte header")));
        }
        if compression == Compression::None && Some(stored_size) != size.checked_add(BLOB_HEADER_LEN as u64) {
            let detail =
                format!("uncompressed blob of {size} bytes must be stored in {size} + {BLOB_HEADER_LEN} bytes, record says {stored_size}");
            return Err(bad(detail));
        }
        Ok(BlobRecord { header: BlobHeader { format, compression, size, hash }, stored_hash, stored_size })
    }
}

/// What one pass over a blob list found; see [`BlobList::scan`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListTotals {
    /// Sum of `stored_size` (saturating).
    pub stored: u64,
    /// Sum of `content_size` (saturating).
    pub content: u64,
    /// Sum of `content_size` of zstd blobs (saturating): what decompression costs.
    pub decompressed: u64,
    /// Number of zstd blobs.
    pub zstd: u32,
}

/// A blob list whose header and size were checked, read with positioned reads.
#[derive(Clone, Copy)]
pub struct BlobList<'a> {
    src: &'a dyn ReadAt,
    count: u32,
    file: &'a str,
}

impl<'a> BlobList<'a> {
    /// Parses the header; the file must hold exactly `count` records.
    pub fn new(src: &'a dyn ReadAt, file: &'a str, max_blobs: u64) -> Result<Self, Error> {
        let head = super::FixedHeader {
            what: "blob list header",
            magic: super::BLOB_LIST_MAGIC,
            version_what: "blob list version",
            version: super::BLOB_LIST_VERSION,
            len: BLOB_LIST_HEADER_LEN,
        }
        .read(src, file)?;
        let count = be_u32(&head, super::BLOB_LIST_COUNT_OFFSET);
        if u64::from(count) > max_blobs {
            return Err(Error::limit(file, "blob count", max_blobs, count.into()));
        }
        check_exact_len(src.len(), file, "blob records", BLOB_LIST_HEADER_LEN, count, BLOB_LIST_RECORD_LEN)?;
        Ok(BlobList { src, count, file })
    }

    /// A list whose header was checked before (by [`BlobList::new`]).
    pub(crate) fn with_count(src: &'a dyn ReadAt, file: &'a str, count: u32) -> Self {
        BlobList { src, count, file }
    }

    /// Number of blobs.
    pub fn count(&self) -> u32 {
        self.count
    }

    fn record_offset(&self, i: u32) -> u64 {
        BLOB_LIST_HEADER_LEN as u64 + u64::from(i) * BLOB_LIST_RECORD_LEN as u64
    }

    /// Record `i`, decoded and checked.
    pub fn record(&self, i: u32) -> Result<BlobRecord, Error> {
        let mut b = [0u8; BLOB_LIST_RECORD_LEN];
        let at = self.record_offset(i);
        self.src.read_at(at, &mut b)?;
        BlobRecord::decode(&b, self.file, at)
    }

    fn hash_at(&self, i: u32) -> Result<[u8; 32], Error> {
        let mut b = [0u8; 32];
        self.src.read_at(self.record_offset(i), &mut b)?;
        Ok(b)
    }

    /// Finds the record of the blob named `hash` by binary search.
    pub fn find(&self, hash: &Digest) -> Result<Option<BlobRecord>, Error> {
        Ok(self.find_with_position(hash)?.map(|(_, record)| record))
    }

    /// [`BlobList::find`], with the record's position in the list.
    pub fn find_with_position(&self, hash: &Digest) -> Result<Option<(u32, BlobRecord)>, Error> {
        let i = partition_point(self.count, |i| Ok(self.hash_at(i)? < hash.0))?;
        if i < self.count && self.hash_at(i)? == hash.0 {
            return self.record(i).map(|r| Some((i, r)));
        }
        Ok(None)
    }

    /// The records whose content hash starts with `byte`: a contiguous range,
    /// since records are sorted (checked by [`BlobList::scan`]).
    pub fn range_with_first_byte(&self, byte: u8) -> Result<std::ops::Range<u32>, Error> {
        let start = partition_point(self.count, |i| Ok(self.hash_at(i)?[0] < byte))?;
        let end = partition_point(self.count, |i| Ok(self.hash_at(i)?[0] <= byte))?;
        Ok(start..end)
    }

    /// Records `range`, read sequentially.
    pub fn records(&self, range: std::ops::Range<u32>) -> impl Iterator<Item = Result<BlobRecord, Error>> + 'a {
        let (src, file) = (self.src, self.file);
        let window = (range.len() * BLOB_LIST_RECORD_LEN).clamp(BLOB_LIST_RECORD_LEN, 1 << 20);
        let mut reader = SeqReader::new(src, file, self.record_offset(range.start), false).with_window(window);
        range.map(move |_| {
            let at = reader.position();
            BlobRecord::decode(reader.next_bytes(BLOB_LIST_RECORD_LEN)?, file, at)
        })
    }

    /// One pass over the whole list: every record decodes, records are
    /// strictly increasing by content hash, and the totals.
    pub fn scan(&self) -> Result<ListTotals, Error> {
        let mut totals = ListTotals::default();
        let mut previous: Option<Digest> = None;
        for (i, record) in self.records(0..self.count).enumerate() {
            let record = record?;
            if previous.is_some_and(|p| p >= record.header.hash) {
                return Err(Error::malformed(
                    self.file,
                    "blob record",
                    self.record_offset(i as u32),
                    "records are not strictly increasing by content hash (duplicate or unsorted blob)",
                ));
            }
            previous = Some(record.header.hash);
            totals.stored = totals.stored.saturating_add(record.stored_size);
            totals.content = totals.content.saturating_add(record.header.size);
            if record.header.compression == Compression::Zstd {
                totals.decompressed = totals.decompressed.saturating_add(record.header.size);
                totals.zstd += 1;
            }
        }
        Ok(totals)
    }
}

/// Encodes a blob list holding `records`, which must be sorted by content hash.
pub(crate) fn encode_list<'r>(records: impl ExactSizeIterator<Item = &'r BlobRecord>) -> Vec<u8> {
    let mut list = Vec::with_capacity(BLOB_LIST_HEADER_LEN + records.len() * BLOB_LIST_RECORD_LEN);
    list.extend_from_slice(&super::BLOB_LIST_MAGIC);
    list.extend_from_slice(&super::BLOB_LIST_VERSION.to_be_bytes());
    list.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        list.extend_from_slice(&record.encode());
    }
    list
}

/// A blob file ready to be written: its header, then its data.
#[derive(Debug, Clone)]
pub struct EncodedBlob<'a> {
    /// The 56 header bytes.
    pub header: [u8; BLOB_HEADER_LEN],
    /// The stored data: the content itself, or its zstd compression.
    pub data: std::borrow::Cow<'a, [u8]>,
    /// The blob-list record describing this file.
    pub record: BlobRecord,
}

impl EncodedBlob<'_> {
    /// The same blob owning its data (a raw blob's content is copied).
    pub fn into_owned(self) -> EncodedBlob<'static> {
        EncodedBlob { header: self.header, data: std::borrow::Cow::Owned(self.data.into_owned()), record: self.record }
    }

    /// The whole file.
    pub fn to_vec(&self) -> Vec<u8> {
        [self.header.as_slice(), &self.data].concat()
    }
}

/// Encodes a whole blob file from its content: compressed with zstd at
/// `level` when that makes it smaller, stored raw otherwise (or when `level` is None).
pub fn encode_blob(content: &[u8], format: BlobFormat, level: Option<i32>) -> Result<EncodedBlob<'_>, Error> {
    encode_blob_with(&mut None, content, Digest::of(content), format, level)
}

/// [`encode_blob`] with a reusable compression context, for a caller that
/// has already hashed `content` (the hash becomes the blob's name, so it
/// must be BLAKE3 of `content`).
pub(crate) fn encode_blob_with<'c>(
    context: &mut Option<zstd::bulk::Compressor<'static>>,
    content: &'c [u8],
    hash: Digest,
    format: BlobFormat,
    level: Option<i32>,
) -> Result<EncodedBlob<'c>, Error> {
    let zstd_error = |source| Error::Compression { file: super::blob_path(&hash), source };
    let compressed = match level {
        Some(level) => {
            if context.is_none() {
                *context = Some(zstd::bulk::Compressor::new(level).map_err(zstd_error)?);
            }
            Some(context.as_mut().expect("created").compress(content).map_err(zstd_error)?)
        }
        None => None,
    };
    let (compression, data) = match compressed {
        Some(c) if c.len() < content.len() => (Compression::Zstd, std::borrow::Cow::Owned(c)),
        _ => (Compression::None, std::borrow::Cow::Borrowed(content)),
    };
    let header = BlobHeader { format, compression, size: content.len() as u64, hash };
    let header_bytes = header.encode();
    let stored_hash = match compression {
        Compression::None => hash,
        Compression::Zstd => Digest::finished(blake3::Hasher::new().update(&header_bytes).update(&data)),
    };
    let record = BlobRecord { header, stored_hash, stored_size: (BLOB_HEADER_LEN + data.len()) as u64 };
    Ok(EncodedBlob { header: header_bytes, data, record })
}

/// Streams the content of a blob file's data (after the header) into `out`,
/// decompressing if needed, and checks its size and hash against `header`.
/// Decompression stops one byte past the declared size, so a blob that
/// expands beyond it is refused without unbounded output. `out` receives
/// bytes before they are checked: callers that show content buffer it
/// until this returns `Ok` (see `ReplayBundle::read_blob`).
pub fn decode_blob_to(header: &BlobHeader, data: &mut impl Read, out: &mut impl Write, file: &str) -> Result<u64, Error> {
    let bad_data = |e: io::Error| Error::Malformed {
        file: file.to_string(),
        what: "blob data",
        offset: BLOB_HEADER_LEN as u64,
        detail: e.to_string(),
        source: Some(Box::new(e)),
    };
    let limit = header.size.saturating_add(1);
    let mut reader: Box<dyn Read + '_> = match header.compression {
        Compression::None => Box::new(data.take(limit)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(data).map_err(bad_data)?;
            decoder.window_log_max(super::ZSTD_WINDOW_LOG_MAX).map_err(bad_data)?;
            Box::new(decoder.take(limit))
        }
    };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; limit.min(1 << 16) as usize];
    let mut written = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad_data(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::output(file, e))?;
        written += n as u64;
    }
    if written != header.size {
        return Err(Error::SizeMismatch { file: file.to_string(), what: "content size", expected: header.size, found: written });
    }
    let actual = Digest::finished(&hasher);
    if actual != header.hash {
        return Err(Error::HashMismatch { file: file.to_string(), what: "content hash", expected: header.hash, found: actual });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_only_when_it_pays() {
        let text = b"abcabcabc".repeat(100);
        let blob = encode_blob(&text, BlobFormat::Json, Some(3)).unwrap();
        let (file, record) = (blob.to_vec(), blob.record);
        assert_eq!(record.header.compression, Compression::Zstd);
        assert!(file.len() < text.len());
        assert_eq!(BlobHeader::decode(&file, "b").unwrap(), record.header);
        let mut out = Vec::new();
        decode_blob_to(&record.header, &mut &file[BLOB_HEADER_LEN..], &mut out, "b").unwrap();
        assert_eq!(out, text);

        let record = encode_blob(b"x", BlobFormat::Raw, Some(3)).unwrap().record;
        assert_eq!(record.header.compression, Compression::None);
        assert_eq!(record.stored_size, 57);
    }

    #[test]
    fn expansion_past_declared_size_is_refused() {
        let content = vec![0u8; 1 << 20];
        let blob = encode_blob(&content, BlobFormat::Raw, Some(3)).unwrap();
        let (file, record) = (blob.to_vec(), blob.record);
        let lying = BlobHeader { size: 1000, ..record.header };
        let mut out = Vec::new();
        let err = decode_blob_to(&lying, &mut &file[BLOB_HEADER_LEN..], &mut out, "b").unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { what: "content size", .. }), "{err}");
        assert!(out.len() <= 1001);
    }

    #[test]
    fn list_record_round_trip() {
        let record = encode_blob(b"hello", BlobFormat::Raw, None).unwrap().record;
        let mut list = Vec::new();
        list.extend_from_slice(b"CATHBLS");
        list.extend_from_slice(&1u32.to_be_bytes());
        list.extend_from_slice(&1u32.to_be_bytes());
        list.extend_from_slice(&record.encode());
        let view = BlobList::new(&list, "l", 10).unwrap();
        assert_eq!(view.find(&record.header.hash).unwrap(), Some(record));
        assert_eq!(view.find(&Digest::of(b"other")).unwrap(), None);
        assert_eq!(view.scan().unwrap().content, 5);
        list.push(0);
        assert!(matches!(BlobList::new(&list, "l", 10), Err(Error::TrailingData { .. })));
    }

    #[test]
    fn writers_give_an_uncompressed_blob_its_content_hash_as_stored_hash() {
        let record = encode_blob(b"hello", BlobFormat::Raw, None).unwrap().record;
        assert_eq!(record.stored_hash, record.header.hash);
    }
}
