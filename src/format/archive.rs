//! The single-file form of a bundle: `<name>.cath-bundle.tar.zst`
//! (`schemas/ARCHIVE.md`). One zstd frame holding a ustar stream whose
//! every header byte is fixed by the entry's name, kind and size, so that
//! the same bundle always gives the same archive and a reader can compare
//! each header with the one it would have written.
//!
//! ```text
//! archive   one zstd frame (window ≤ 2^27), nothing before or after it
//! tar       entry* | 2 × 512 zero bytes | end of the frame
//! entry     ustar header [512] | data [size] | zero padding to a multiple of 512
//! header    name [100] | mode [8] | uid [8] | gid [8] | size [12] | mtime [12] | chksum [8]
//!           | typeflag [1] | linkname [100] | "ustar\0" | "00" | uname [32] | gname [32]
//!           | devmajor [8] | devminor [8] | prefix [155] | pad [12]
//! ```
//!
//! The readers here check framing only (zstd frame, header bytes, padding,
//! end of archive); which entries must appear, in which order, is checked
//! by the verifier against the manifest and the blob list.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::error::{Error, FileKind};
use crate::path::BundlePath;

/// How an archive's file name ends; the top directory is the name without `.tar.zst`.
pub const ARCHIVE_SUFFIX: &str = ".cath-bundle.tar.zst";
/// How the top directory's name ends.
pub const TOP_SUFFIX: &str = ".cath-bundle";
/// Longest top directory name, so that every directory name fits the
/// 100-byte `name` field and every file name splits at its parent.
pub const MAX_TOP_LEN: usize = 90;
/// The tar block.
pub const BLOCK: usize = 512;
/// `mtime` of every entry: 2000-01-01T00:00:00Z.
pub const MTIME: u64 = 946_684_800;
/// `mode` of every file entry.
pub const FILE_MODE: u32 = 0o644;
/// `mode` of every directory entry.
pub const DIR_MODE: u32 = 0o755;
/// The first four bytes of a zstd frame (magic 0xFD2FB528, little-endian).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Largest zstd window a reader accepts: 2^27 bytes (128 MiB).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// zstd level `pack` uses unless told otherwise.
pub const DEFAULT_LEVEL: i32 = 3;

/// The listed files, in the order they follow `MANIFEST.json` (and
/// `MANIFEST.sig`): the documents, then the blob list and the index, which
/// a streaming reader keeps, then the log it checks against them, then the
/// outboards (of a 1.1 bundle), which it rebuilds from the log and index.
pub const FILE_ORDER: [&str; 9] = [
    super::METADATA_FILE,
    super::WORKFLOW_FILE,
    super::DAG_FILE,
    super::SNAPSHOT_FILE,
    super::BLOB_LIST_FILE,
    super::INDEX_FILE,
    super::EVENTS_FILE,
    super::LOG_OUTBOARD_FILE,
    super::INDEX_OUTBOARD_FILE,
];

/// Header fields, for naming the first one that differs from the canonical header.
const FIELDS: [(&str, usize, usize); 17] = [
    ("name", 0, 100),
    ("mode", 100, 8),
    ("uid", 108, 8),
    ("gid", 116, 8),
    ("size", 124, 12),
    ("mtime", 136, 12),
    ("chksum", 148, 8),
    ("typeflag", 156, 1),
    ("linkname", 157, 100),
    ("magic", 257, 6),
    ("version", 263, 2),
    ("uname", 265, 32),
    ("gname", 297, 32),
    ("devmajor", 329, 8),
    ("devminor", 337, 8),
    ("prefix", 345, 155),
    ("padding", 500, 12),
];
const TYPEFLAG: usize = 156;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`typeflag` `0`).
    File,
    /// A directory (`typeflag` `5`).
    Dir,
}

/// A header that passed the framing checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// The full name as stored (`prefix/name`); directories end with `/`.
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Bytes of data that follow the header.
    pub size: u64,
    /// Offset of the header in the tar stream.
    pub offset: u64,
}

/// The top directory for an archive file name: the name without `.tar.zst`.
pub fn top_for_archive(file_name: &str) -> Result<String, Error> {
    let top = file_name.strip_suffix(".tar.zst").filter(|_| file_name.ends_with(ARCHIVE_SUFFIX));
    let top = top.ok_or_else(|| Error::input("archive name", format!("{file_name:?} does not end with {ARCHIVE_SUFFIX}")))?;
    check_top(top)?;
    Ok(top.to_string())
}

/// A top directory name: one bundle path component ending in `.cath-bundle`,
/// not starting with `.`, at most [`MAX_TOP_LEN`] bytes.
pub fn check_top(top: &str) -> Result<(), Error> {
    let path = BundlePath::parse(top)?;
    if path.as_str().contains('/')
        || top.starts_with('.')
        || !top.ends_with(TOP_SUFFIX)
        || top.len() == TOP_SUFFIX.len()
        || top.len() > MAX_TOP_LEN
    {
        return Err(Error::InvalidPath {
            name: top.to_string(),
            reason: "the top directory must be one name ending in .cath-bundle, not starting with '.', at most 90 bytes",
        });
    }
    Ok(())
}

/// The canonical header of an entry: `name` is the full name (`top/...`,
/// directories ending with `/`). A name over 100 bytes is split at its last
/// `/` into `prefix` and `name`.
pub fn header(name: &str, kind: EntryKind, size: u64) -> Result<[u8; BLOCK], Error> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(|e| Error::input("archive entry name", format!("{name:?}: {e}")))?;
    let (mode, entry_type) = match kind {
        EntryKind::File => (FILE_MODE, tar::EntryType::Regular),
        EntryKind::Dir => (DIR_MODE, tar::EntryType::Directory),
    };
    h.set_entry_type(entry_type);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h.set_cksum();
    Ok(*h.as_bytes())
}

/// Decodes a (non-zero) header block at `offset` of the tar stream and
/// requires it to be byte-for-byte the canonical header of its name, kind
/// and size. Links, devices, FIFOs, pax and GNU headers, sparse files and
/// every other type are refused, named by their type.
pub fn parse_header(block: &[u8; BLOCK], offset: u64, archive: &str) -> Result<EntryHeader, Error> {
    let h = tar::Header::from_byte_slice(block);
    let raw_name = String::from_utf8_lossy(&h.path_bytes()).into_owned();
    let at = |name: &str| format!("{archive}: entry {name:?}");
    let kind = match block[TYPEFLAG] {
        b'0' => EntryKind::File,
        b'5' => EntryKind::Dir,
        b'1' => return Err(Error::FileType { file: at(&raw_name), found: FileKind::HardLink }),
        b'2' => return Err(Error::FileType { file: at(&raw_name), found: FileKind::Symlink }),
        b'3' => return Err(Error::FileType { file: at(&raw_name), found: FileKind::CharDevice }),
        b'4' => return Err(Error::FileType { file: at(&raw_name), found: FileKind::BlockDevice }),
        b'6' => return Err(Error::FileType { file: at(&raw_name), found: FileKind::Fifo }),
        other => {
            let what = match other {
                b'x' | b'g' => "a pax extended header",
                b'L' | b'K' => "a GNU long-name header",
                b'S' => "a sparse file",
                b'\0' | b'7' => "an old-style or contiguous file (only typeflag '0' is written)",
                _ => "an unknown entry type",
            };
            let detail = format!("typeflag {:?} is {what}; only files ('0') and directories ('5') are allowed", char::from(other));
            return Err(Error::malformed(&at(&raw_name), "tar header", offset, detail));
        }
    };
    if raw_name.starts_with('/') || raw_name.split('/').any(|c| c == "..") {
        return Err(Error::InvalidPath {
            name: raw_name,
            reason: "absolute or with a '..' component: it could escape the output directory",
        });
    }
    let size = h.entry_size().map_err(|e| Error::malformed(&at(&raw_name), "tar header", offset, format!("size field: {e}")))?;
    let expected = header(&raw_name, kind, size).map_err(|e| Error::malformed(&at(&raw_name), "tar header", offset, e.to_string()))?;
    // The checksum is compared last: a changed field changes it too, and the field says more.
    let differs = |(_, s, l): &(&str, usize, usize)| block[*s..s + l] != expected[*s..s + l];
    let first = FIELDS.iter().copied().filter(|f| f.0 != "chksum").find(differs).or_else(|| FIELDS.iter().copied().find(differs));
    if let Some((field, start, len)) = first {
        let shown = |b: &[u8]| {
            let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
            let text: String = b[..end].escape_ascii().to_string();
            if text.len() > 64 {
                format!("\"{}…\"", &text[..64])
            } else {
                format!("\"{text}\"")
            }
        };
        return Err(Error::Inconsistent {
            file: at(&raw_name),
            what: "tar header field",
            expected: format!("{field} = {}", shown(&expected[start..start + len])),
            found: format!("{field} = {} (header at offset {offset})", shown(&block[start..start + len])),
        });
    }
    Ok(EntryHeader { name: raw_name, kind, size, offset })
}

/// Reads a tar stream entry by entry. Data left unread when the next header
/// is asked for is skipped (read and discarded); padding must be zeros; the
/// end is two zero blocks and then the end of the stream.
pub struct TarReader<R: Read> {
    src: R,
    archive: String,
    /// Offset in the tar stream of the next unread byte.
    offset: u64,
    /// Data of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
}

impl<R: Read> TarReader<R> {
    /// A reader of `src`; `archive` names it in errors.
    pub fn new(src: R, archive: &str) -> Self {
        TarReader { src, archive: archive.to_string(), offset: 0, remaining: 0, padding: 0 }
    }

    /// Offset of the next unread byte of the tar stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next entry's header, or None at a valid end of archive.
    pub fn next_entry(&mut self) -> Result<Option<EntryHeader>, Error> {
        self.skip_rest()?;
        let mut block = [0u8; BLOCK];
        let got = self.fill(&mut block)?;
        if got < BLOCK {
            return Err(self.truncated("tar header", BLOCK as u64, got as u64, self.offset - got as u64));
        }
        if block.iter().all(|&b| b == 0) {
            let start = self.offset - BLOCK as u64;
            let got = self.fill(&mut block)?;
            if got < BLOCK || block.iter().any(|&b| b != 0) {
                let detail = "one zero block must be followed by a second (end of archive), and nothing else";
                return Err(Error::malformed(&self.archive, "end of archive", start, detail));
            }
            let mut probe = [0u8; 1];
            if self.fill(&mut probe)? > 0 {
                let extra = 1 + io::copy(&mut (&mut self.src).take(1 << 20), &mut io::sink()).map_err(|e| self.io(e))?;
                let count = if extra > 1 << 20 { format!("at least {extra}") } else { extra.to_string() };
                let detail = format!("{count} bytes after the end-of-archive blocks");
                return Err(Error::malformed(&self.archive, "end of archive", self.offset - 1, detail));
            }
            return Ok(None);
        }
        let header = parse_header(&block, self.offset - BLOCK as u64, &self.archive)?;
        self.remaining = header.size;
        self.padding = (BLOCK as u64 - header.size % BLOCK as u64) % BLOCK as u64;
        Ok(Some(header))
    }

    /// Data of the current entry not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Reads data of the current entry; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.read_some(&mut buf[..want])?;
        if n == 0 {
            return Err(self.truncated("entry data", self.remaining, 0, self.offset));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// The stream, for the checks that follow the end of the archive.
    pub fn into_inner(self) -> R {
        self.src
    }

    /// Reads the rest of the current entry and its padding (which must be zero).
    fn skip_rest(&mut self) -> Result<(), Error> {
        let mut scratch = [0u8; 8192];
        while self.remaining > 0 {
            let n = scratch.len().min(self.remaining as usize);
            self.read_data(&mut scratch[..n])?;
        }
        if self.padding > 0 {
            let pad = self.padding as usize;
            let start = self.offset;
            let got = self.fill(&mut scratch[..pad])?;
            if got < pad {
                return Err(self.truncated("entry padding", pad as u64, got as u64, start));
            }
            if scratch[..pad].iter().any(|&b| b != 0) {
                return Err(Error::malformed(&self.archive, "entry padding", start, "padding after an entry's data must be zero bytes"));
            }
            self.padding = 0;
        }
        Ok(())
    }

    /// Reads until `buf` is full or the stream ends; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_some(&mut buf[done..])? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    }

    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        loop {
            match self.src.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    fn io(&self, e: io::Error) -> Error {
        crate::fsutil::stream_error(&self.archive, e)
    }

    fn truncated(&self, what: &'static str, needed: u64, available: u64, offset: u64) -> Error {
        Error::truncated(&format!("{} (tar stream)", self.archive), what, offset, needed, available)
    }
}

/// Decompressed chunks handed from the decompressing thread.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the threads.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A stream produced on another thread, in chunks: the decompressed tar
/// stream of an archive (so that decompression and the checks run side by
/// side, like `zstd -dc | b3sum`), or the tar stream `pack` writes. An error
/// sent by the producer is returned once, as an [`io::Error`] carrying it.
pub struct ChunkReader {
    rx: Receiver<Result<Vec<u8>, Error>>,
    chunk: Vec<u8>,
    at: usize,
    done: bool,
}

/// The producing side of a [`ChunkReader`].
pub type ChunkSender = SyncSender<Result<Vec<u8>, Error>>;

impl ChunkReader {
    /// A reader and the sender that feeds it.
    pub fn channel() -> (ChunkSender, Self) {
        let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
        (tx, ChunkReader { rx, chunk: Vec::new(), at: 0, done: false })
    }

    /// Starts decompressing the archive `src` (named `archive` in errors) on
    /// its own thread, enforcing the frame rules: the input starts with a
    /// zstd frame (not a skippable one), the window is at most 2^27, and
    /// nothing follows the first frame.
    pub fn decompress(src: impl Read + Send + 'static, archive: &str) -> Self {
        let (tx, reader) = Self::channel();
        let archive = archive.to_string();
        std::thread::spawn(move || {
            let result = decompress(src, &archive, &mut |chunk| tx.send(Ok(chunk)).is_ok());
            if let Err(e) = result {
                let _ = tx.send(Err(e));
            }
        });
        reader
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(io::Error::other(e));
                }
                // The sender finished: the frame ended and nothing followed it.
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Decompresses the one frame of `src`, handing chunks to `emit` (which
/// returns false when nobody reads any more), then requires the end of `src`.
fn decompress(src: impl Read, archive: &str, emit: &mut dyn FnMut(Vec<u8>) -> bool) -> Result<(), Error> {
    let mut input = BufReader::with_capacity(1 << 20, src);
    let head = input.fill_buf().map_err(|e| Error::io(archive, e))?;
    if head.len() < 4 || head[..4] != ZSTD_MAGIC {
        let found = head.iter().take(4).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
        let skippable = head.len() >= 4 && head[0] & 0xF0 == 0x50 && head[1..4] == [0x2A, 0x4D, 0x18];
        let expected =
            if skippable { "a zstd frame (28 b5 2f fd); skippable frames are not allowed" } else { "a zstd frame (28 b5 2f fd)" };
        return Err(Error::BadMagic { file: archive.to_string(), expected: expected.into(), found });
    }
    let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(|e| Error::io(archive, e))?.single_frame();
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| Error::io(archive, e))?;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match decoder.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(zstd_error(archive, e)),
            }
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        if !emit(chunk) {
            return Ok(());
        }
    }
    let mut rest = decoder.finish();
    let trailing = io::copy(&mut rest, &mut io::sink()).map_err(|e| Error::io(archive, e))?;
    if trailing > 0 {
        let detail =
            format!("{trailing} bytes follow the zstd frame (a second frame, a skippable frame or garbage); an archive is one frame");
        return Err(Error::malformed(archive, "zstd stream", 0, detail));
    }
    Ok(())
}

/// A decompression error, classified: an over-large window, a truncated
/// frame, or corrupt data.
fn zstd_error(archive: &str, e: io::Error) -> Error {
    let text = e.to_string();
    if text.contains("too much memory") || text.contains("window") {
        return Error::Unsupported {
            file: archive.to_string(),
            what: "zstd window",
            expected: format!("at most 2^{ZSTD_WINDOW_LOG_MAX} bytes"),
            found: "a larger window".into(),
        };
    }
    if e.kind() == io::ErrorKind::UnexpectedEof || text.contains("incomplete") {
        return Error::malformed(archive, "zstd stream", 0, "the file ends inside the zstd frame (truncated archive)");
    }
    Error::Malformed { file: archive.to_string(), what: "zstd stream", offset: 0, detail: text, source: Some(Box::new(e)) }
}

/// Writes a canonical tar stream into `out` (compression is the caller's
/// layer). Entries are written in the order they are given.
pub struct TarWriter<W: Write> {
    out: W,
    top: String,
    /// Data still owed by the current file entry.
    owed: u64,
    padding: usize,
}

impl<W: Write> TarWriter<W> {
    /// A writer whose entries sit under `top` (checked with [`check_top`]).
    pub fn new(out: W, top: &str) -> Result<Self, Error> {
        check_top(top)?;
        Ok(TarWriter { out, top: top.to_string(), owed: 0, padding: 0 })
    }

    /// A directory entry; `rel` is bundle-relative, `""` for the top directory.
    pub fn dir(&mut self, rel: &str) -> Result<(), Error> {
        let name = if rel.is_empty() { format!("{}/", self.top) } else { format!("{}/{rel}/", self.top) };
        self.write_header(&name, EntryKind::Dir, 0)
    }

    /// Starts a file entry of `size` bytes; its data follows through [`Write`].
    pub fn file(&mut self, rel: &str, size: u64) -> Result<(), Error> {
        let name = format!("{}/{rel}", self.top);
        self.write_header(&name, EntryKind::File, size)?;
        self.owed = size;
        self.padding = ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize;
        if size == 0 {
            self.end_file()?;
        }
        Ok(())
    }

    /// Ends the archive (two zero blocks) and returns the output.
    pub fn finish(mut self) -> Result<W, Error> {
        if self.owed > 0 {
            return Err(Error::input("archive entry", format!("{} bytes of data are missing", self.owed)));
        }
        self.out.write_all(&[0u8; 2 * BLOCK]).map_err(|e| Error::output("archive", e))?;
        Ok(self.out)
    }

    /// The output.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn write_header(&mut self, name: &str, kind: EntryKind, size: u64) -> Result<(), Error> {
        if self.owed > 0 {
            return Err(Error::input("archive entry", format!("{} bytes of data are missing before {name:?}", self.owed)));
        }
        let block = header(name, kind, size)?;
        self.out.write_all(&block).map_err(|e| Error::output("archive", e))
    }

    fn end_file(&mut self) -> Result<(), Error> {
        let padding = std::mem::take(&mut self.padding);
        self.out.write_all(&[0u8; BLOCK][..padding]).map_err(|e| Error::output("archive", e))
    }
}

impl<W: Write> Write for TarWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(usize::try_from(self.owed).unwrap_or(usize::MAX));
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "more data than the entry's size"));
        }
        self.out.write_all(&buf[..n])?;
        self.owed -= n as u64;
        if self.owed == 0 {
            self.end_file().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_parent_when_long() {
        let top = format!("{}{TOP_SUFFIX}", "a".repeat(MAX_TOP_LEN - TOP_SUFFIX.len()));
        let blob = format!("{top}/blobs/ab/{}", "ab".repeat(32));
        let h = header(&blob, EntryKind::File, 7).unwrap();
        assert_eq!(&h[345..345 + top.len() + 9], format!("{top}/blobs/ab").as_bytes());
        assert_eq!(&h[..64], "ab".repeat(32).as_bytes());
        for dir in [format!("{top}/"), format!("{top}/blobs/ab/")] {
            let h = header(&dir, EntryKind::Dir, 0).unwrap();
            assert_eq!(&h[..dir.len()], dir.as_bytes(), "directories fit the name field");
            assert!(h[345..500].iter().all(|&b| b == 0));
            let parsed = parse_header(&h, 0, "a").unwrap();
            assert_eq!((parsed.kind, parsed.name), (EntryKind::Dir, dir));
        }
        let parsed = parse_header(&h, 0, "a").unwrap();
        assert_eq!((parsed.kind, parsed.name, parsed.size), (EntryKind::File, blob, 7));
    }

    /// The header bytes ARCHIVE.md §2 states, field by field.
    #[test]
    fn header_bytes_are_the_documented_ones() {
        let h = header("x.cath-bundle/dag.json", EntryKind::File, 916).unwrap();
        assert_eq!(&h[..22], b"x.cath-bundle/dag.json");
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(&h[108..124], b"0000000\x000000000\0");
        assert_eq!(&h[124..136], b"00000001624\0");
        assert_eq!(&h[136..148], b"07033241600\0");
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        assert!(h[157..257].iter().chain(&h[265..345]).chain(&h[345..512]).all(|&b| b == 0));
        let sum: u32 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
        assert_eq!(&h[148..156], format!("{sum:07o}\0").as_bytes());
        let d = header("x.cath-bundle/", EntryKind::Dir, 0).unwrap();
        assert_eq!((&d[100..108], d[156]), (&b"0000755\0"[..], b'5'));
    }

    #[test]
    fn top_names() {
        assert!(top_for_archive("run.cath-bundle.tar.zst").is_ok());
        for bad in ["run.tar.zst", ".cath-bundle.tar.zst", "a/b.cath-bundle.tar.zst", "..cath-bundle.tar.zst"] {
            assert!(top_for_archive(bad).is_err(), "{bad}");
        }
        let long = format!("{}{ARCHIVE_SUFFIX}", "a".repeat(MAX_TOP_LEN));
        assert!(top_for_archive(&long).is_err());
    }

    #[test]
    fn every_other_field_value_is_refused_by_name() {
        let good = header("x.cath-bundle/MANIFEST.json", EntryKind::File, 10).unwrap();
        for (field, start, _) in FIELDS {
            if field == "typeflag" || field == "chksum" {
                continue;
            }
            let mut bad = good;
            bad[start] = if bad[start] == b'1' { b'2' } else { b'1' };
            // Re-sign the header so that only the field differs.
            let sum: u32 = bad.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
            bad[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            assert!(parse_header(&bad, 0, "a").is_err(), "{field}");
        }
    }
}
