//! Blob files (`blobs/<hh>/<hash>`) and the blob list (`blobs.cath-list`).
//!
//! A blob is named by the BLAKE3 of its uncompressed content. Its file is a
//! 56-byte header followed by the stored data; the blob list commits to the
//! BLAKE3 and size of every blob file, so every byte of the store is covered
//! by the manifest.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::Error;
use crate::format::{self, be_u32, be_u64, BLOB_HEADER_LEN, BLOB_LIST_HEADER_LEN, BLOB_LIST_RECORD_LEN};
use crate::log::{check_exact_len, check_prefix};

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
        [BlobFormat::Raw, BlobFormat::Json, BlobFormat::Cbor, BlobFormat::Postcard].into_iter().find(|f| f.name() == s).ok_or_else(|| {
            Error::InvalidInput { what: "blob format", detail: format!("expected raw, json, cbor or postcard, found {s:?}") }
        })
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
        out[..7].copy_from_slice(&format::BLOB_MAGIC);
        out[7..11].copy_from_slice(&format::BLOB_VERSION.to_be_bytes());
        out[11] = self.format.code();
        out[12] = self.compression.code();
        // 13..16 reserved, zero.
        out[16..24].copy_from_slice(&self.size.to_be_bytes());
        out[24..56].copy_from_slice(self.hash.as_bytes());
        out
    }

    /// Parses the header at the start of `bytes`.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Self, Error> {
        check_prefix(bytes, file, format::BLOB_MAGIC, "blob header")?;
        let version = be_u32(bytes, 7);
        if version != format::BLOB_VERSION {
            return Err(Error::Unsupported {
                file: file.to_string(),
                what: "blob version",
                expected: format::BLOB_VERSION.to_string(),
                found: version.to_string(),
            });
        }
        if bytes.len() < BLOB_HEADER_LEN {
            return Err(Error::truncated(file, "blob header", 0, BLOB_HEADER_LEN, bytes.len()));
        }
        let format = BlobFormat::from_code(bytes[11]).ok_or_else(|| Error::Unsupported {
            file: file.to_string(),
            what: "blob format",
            expected: "0..=3".into(),
            found: bytes[11].to_string(),
        })?;
        let compression = Compression::from_code(bytes[12]).ok_or_else(|| Error::Unsupported {
            file: file.to_string(),
            what: "blob compression",
            expected: "0 or 1".into(),
            found: bytes[12].to_string(),
        })?;
        if bytes[13..16] != [0, 0, 0] {
            return Err(Error::malformed(file, "blob header", 13, "reserved bytes are not zero"));
        }
        Ok(BlobHeader { format, compression, size: be_u64(bytes, 16), hash: Digest(bytes[24..56].try_into().expect("32 bytes")) })
    }
}

/// One record of the blob list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRecord {
    /// The blob's header, as it must appear in its file.
    pub header: BlobHeader,
    /// BLAKE3 of the whole blob file (header and data): what `b3sum` prints for it.
    pub stored_hash: Digest,
    /// Size of the whole blob file.
    pub stored_size: u64,
}

impl BlobRecord {
    /// The record's 88 bytes.
    pub fn encode(&self) -> [u8; BLOB_LIST_RECORD_LEN] {
        let mut out = [0u8; BLOB_LIST_RECORD_LEN];
        out[..32].copy_from_slice(self.header.hash.as_bytes());
        out[32..64].copy_from_slice(self.stored_hash.as_bytes());
        out[64..72].copy_from_slice(&self.stored_size.to_be_bytes());
        out[72..80].copy_from_slice(&self.header.size.to_be_bytes());
        out[80] = self.header.format.code();
        out[81] = self.header.compression.code();
        out
    }

    fn decode(bytes: &[u8], file: &str, offset: usize) -> Result<Self, Error> {
        let bad = |detail: String| Error::malformed(file, "blob record", offset as u64, detail);
        let format = BlobFormat::from_code(bytes[80]).ok_or_else(|| bad(format!("unknown format {}", bytes[80])))?;
        let compression = Compression::from_code(bytes[81]).ok_or_else(|| bad(format!("unknown compression {}", bytes[81])))?;
        if bytes[82..88] != [0; 6] {
            return Err(bad("reserved bytes are not zero".into()));
        }
        let stored_size = be_u64(bytes, 64);
        let size = be_u64(bytes, 72);
        if stored_size < BLOB_HEADER_LEN as u64 {
            return Err(bad(format!("stored size {stored_size} is smaller than the {BLOB_HEADER_LEN}-byte header")));
        }
        if compression == Compression::None && stored_size != BLOB_HEADER_LEN as u64 + size {
            return Err(bad(format!(
                "uncompressed blob of {size} bytes must be stored in {} bytes, record says {stored_size}",
                size + BLOB_HEADER_LEN as u64
            )));
        }
        Ok(BlobRecord {
            header: BlobHeader { format, compression, size, hash: Digest(bytes[..32].try_into().expect("32 bytes")) },
            stored_hash: Digest(bytes[32..64].try_into().expect("32 bytes")),
            stored_size,
        })
    }
}

/// A view over the bytes of a blob list whose header and size were checked.
#[derive(Debug, Clone, Copy)]
pub struct BlobListView<'a> {
    bytes: &'a [u8],
    count: u32,
    file: &'a str,
}

impl<'a> BlobListView<'a> {
    /// Parses the header; the file must hold exactly `count` records.
    pub fn new(bytes: &'a [u8], file: &'a str, max_blobs: u64) -> Result<Self, Error> {
        check_prefix(bytes, file, format::BLOB_LIST_MAGIC, "blob list header")?;
        let version = be_u32(bytes, 7);
        if version != format::BLOB_LIST_VERSION {
            return Err(Error::Unsupported {
                file: file.to_string(),
                what: "blob list version",
                expected: format::BLOB_LIST_VERSION.to_string(),
                found: version.to_string(),
            });
        }
        if bytes.len() < BLOB_LIST_HEADER_LEN {
            return Err(Error::truncated(file, "blob list header", 0, BLOB_LIST_HEADER_LEN, bytes.len()));
        }
        let count = be_u32(bytes, format::PREFIX_LEN);
        if u64::from(count) > max_blobs {
            return Err(Error::limit(file, "blob count", max_blobs, count.into()));
        }
        check_exact_len(bytes, file, "blob records", BLOB_LIST_HEADER_LEN, count, BLOB_LIST_RECORD_LEN)?;
        Ok(BlobListView { bytes, count, file })
    }

    /// Number of blobs.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Record `i`, decoded and checked.
    pub fn record(&self, i: u32) -> Result<BlobRecord, Error> {
        let at = self.record_offset(i);
        BlobRecord::decode(&self.bytes[at..at + BLOB_LIST_RECORD_LEN], self.file, at)
    }

    fn record_offset(&self, i: u32) -> usize {
        assert!(i < self.count, "record index in range");
        BLOB_LIST_HEADER_LEN + i as usize * BLOB_LIST_RECORD_LEN
    }

    fn hash_at(&self, i: u32) -> &[u8] {
        let at = self.record_offset(i);
        &self.bytes[at..at + 32]
    }

    /// Finds the record of the blob named `hash` by binary search.
    pub fn find(&self, hash: &Digest) -> Result<Option<BlobRecord>, Error> {
        let (mut lo, mut hi) = (0u32, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.hash_at(mid).cmp(hash.as_bytes().as_slice()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.record(mid).map(Some),
            }
        }
        Ok(None)
    }

    /// The records whose content hash starts with `byte`: a contiguous range,
    /// since records are sorted (checked by [`BlobListView::check`]).
    pub fn range_with_first_byte(&self, byte: u8) -> std::ops::Range<u32> {
        let first = |lo: u32, hi: u32, below: &dyn Fn(u8) -> bool| {
            let (mut lo, mut hi) = (lo, hi);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if below(self.hash_at(mid)[0]) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        let start = first(0, self.count, &|b| b < byte);
        let end = first(start, self.count, &|b| b <= byte);
        start..end
    }

    /// Checks the whole list: every record decodes, and records are strictly
    /// increasing by content hash.
    pub fn check(&self) -> Result<(), Error> {
        for i in 0..self.count {
            self.record(i)?;
        }
        for i in 1..self.count {
            if self.hash_at(i - 1) >= self.hash_at(i) {
                return Err(Error::malformed(
                    self.file,
                    "blob record",
                    self.record_offset(i) as u64,
                    "records are not strictly increasing by content hash (duplicate or unsorted blob)",
                ));
            }
        }
        Ok(())
    }
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
    /// The whole file.
    pub fn to_vec(&self) -> Vec<u8> {
        [self.header.as_slice(), &self.data].concat()
    }
}

/// Encodes a whole blob file from its content: compressed with zstd at
/// `level` when that makes it smaller, stored raw otherwise (or when `level` is None).
pub fn encode_blob(content: &[u8], format: BlobFormat, level: Option<i32>) -> Result<EncodedBlob<'_>, Error> {
    encode_blob_with_hash(content, Digest::of(content), format, level)
}

/// [`encode_blob`] for a caller that has already hashed `content` (the hash
/// becomes the blob's name, so it must be BLAKE3 of `content`).
pub(crate) fn encode_blob_with_hash(
    content: &[u8],
    hash: Digest,
    format: BlobFormat,
    level: Option<i32>,
) -> Result<EncodedBlob<'_>, Error> {
    let compressed = match level {
        Some(level) => {
            Some(zstd::bulk::compress(content, level).map_err(|e| Error::InvalidInput { what: "blob", detail: format!("zstd: {e}") })?)
        }
        None => None,
    };
    let (compression, data) = match compressed {
        Some(c) if c.len() < content.len() => (Compression::Zstd, std::borrow::Cow::Owned(c)),
        _ => (Compression::None, std::borrow::Cow::Borrowed(content)),
    };
    let header = BlobHeader { format, compression, size: content.len() as u64, hash };
    let header_bytes = header.encode();
    let stored_hash = blake3::Hasher::new().update(&header_bytes).update(&data).finalize().into();
    let record = BlobRecord { header, stored_hash, stored_size: (BLOB_HEADER_LEN + data.len()) as u64 };
    Ok(EncodedBlob { header: header_bytes, data, record })
}

/// Streams the content of a blob file's data (after the header) into `out`,
/// decompressing if needed, and checks its size and hash against `header`.
/// Decompression stops one byte past the declared size, so a blob that
/// expands beyond it is refused without unbounded output.
pub fn decode_blob_to(header: &BlobHeader, data: &mut impl Read, out: &mut impl Write, file: &str) -> Result<u64, Error> {
    let mut hasher = blake3::Hasher::new();
    let mut sink = HashingWriter { inner: out, hasher: &mut hasher };
    let io_err = |e: io::Error| Error::malformed(file, "blob data", BLOB_HEADER_LEN as u64, e);
    let written = match header.compression {
        Compression::None => io::copy(&mut data.take(header.size.saturating_add(1)), &mut sink).map_err(io_err)?,
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(data).map_err(io_err)?;
            decoder.window_log_max(format::ZSTD_WINDOW_LOG_MAX).map_err(io_err)?;
            io::copy(&mut decoder.take(header.size.saturating_add(1)), &mut sink).map_err(io_err)?
        }
    };
    if written != header.size {
        return Err(Error::mismatch(file, "blob content size", header.size, written));
    }
    let actual = Digest::from(hasher.finalize());
    if actual != header.hash {
        return Err(Error::mismatch(file, "blob content hash", header.hash, actual));
    }
    Ok(written)
}

struct HashingWriter<'a, W> {
    inner: &'a mut W,
    hasher: &'a mut blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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
        assert!(matches!(err, Error::Mismatch { what: "blob content size", .. }), "{err}");
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
        let view = BlobListView::new(&list, "l", 10).unwrap();
        assert_eq!(view.find(&record.header.hash).unwrap(), Some(record));
        assert_eq!(view.find(&Digest::of(b"other")).unwrap(), None);
        view.check().unwrap();
        list.push(0);
        assert!(matches!(BlobListView::new(&list, "l", 10), Err(Error::TrailingData { .. })));
    }
}
