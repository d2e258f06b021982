//! File-system helpers: opening files without following links or blocking,
//! positioned reads that turn a file changing underneath into an error,
//! bounded hashing, and the one atomic-write primitive.
//!
//! Nothing here maps files: a mapping of a file someone else can truncate
//! turns their truncation into SIGBUS in this process. Every read is a
//! `pread` into a bounded buffer instead, and a short read is
//! [`Error::Changed`].

use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::digest::Digest;
use crate::error::{Error, FileKind};

/// Largest read buffer of a sequential reader, and the hashing window.
pub const WINDOW: usize = 8 << 20;

/// What a file is, from its metadata.
pub fn kind_of(meta: &Metadata) -> Option<FileKind> {
    let t = meta.file_type();
    Some(if t.is_file() {
        return None;
    } else if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Directory
    } else if t.is_fifo() {
        FileKind::Fifo
    } else if t.is_socket() {
        FileKind::Socket
    } else if t.is_block_device() {
        FileKind::BlockDevice
    } else if t.is_char_device() {
        FileKind::CharDevice
    } else {
        FileKind::Other
    })
}

const READ_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::NOFOLLOW).union(OFlags::NONBLOCK).union(OFlags::CLOEXEC);

fn open_error(name: &str, e: rustix::io::Errno) -> Error {
    if e == rustix::io::Errno::LOOP {
        Error::FileType { file: name.to_string(), found: FileKind::Symlink }
    } else {
        Error::io(name, e.into())
    }
}

/// A regular file opened for reading, and the size it had when opened.
#[derive(Debug)]
pub struct ReadFile {
    file: File,
    size: u64,
    name: String,
}

impl ReadFile {
    /// Opens `path` without following a final link and without blocking,
    /// then checks on that descriptor, before any read, that it is a regular
    /// file. `name` names it in errors.
    pub fn open(path: &Path, name: &str) -> Result<Self, Error> {
        let fd = rustix::fs::open(path, READ_FLAGS, Mode::empty()).map_err(|e| open_error(name, e))?;
        Self::from_fd(fd, name)
    }

    /// [`ReadFile::open`] for the one-component `leaf` inside the directory `dir`.
    pub fn open_at(dir: &OwnedFd, leaf: &str, name: &str) -> Result<Self, Error> {
        let fd = rustix::fs::openat(dir, leaf, READ_FLAGS, Mode::empty()).map_err(|e| open_error(name, e))?;
        Self::from_fd(fd, name)
    }

    fn from_fd(fd: OwnedFd, name: &str) -> Result<Self, Error> {
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| Error::io(name, e))?;
        if let Some(found) = kind_of(&meta) {
            return Err(Error::FileType { file: name.to_string(), found });
        }
        Ok(ReadFile { file, size: meta.len(), name: name.to_string() })
    }

    /// The size when opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads the file from its start to the size it had when opened, in
    /// order; a file cut short underneath ends early.
    pub fn into_read(self) -> std::io::Take<File> {
        let size = self.size;
        self.file.take(size)
    }

    /// Reads the whole file, refusing one over `limit` bytes before reading.
    pub fn read_all(&self, what: &'static str, limit: u64) -> Result<Vec<u8>, Error> {
        if self.size > limit {
            return Err(Error::limit(&self.name, what, limit, self.size));
        }
        let mut bytes = vec![0u8; self.size as usize];
        self.read_at(0, &mut bytes)?;
        Ok(bytes)
    }
}

/// Bytes that can be read at any offset: a file, or bytes in memory.
pub trait ReadAt: Sync {
    /// Total length.
    fn len(&self) -> u64;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`. Reading past [`ReadAt::len`] is
    /// [`Error::Changed`] for a file (it shrank) and a bug otherwise.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error>;
    /// Whether reads at different offsets may run at once, on several
    /// threads, in any order: true for a file and for bytes in memory; not
    /// for a stream read once in order ([`Forward`]), nor by default.
    fn concurrent_reads(&self) -> bool {
        false
    }
}

impl ReadAt for ReadFile {
    fn concurrent_reads(&self) -> bool {
        true
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(Error::Changed { file: self.name.clone(), offset: offset + done as u64, expected: self.size }),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.name, e)),
            }
        }
        Ok(())
    }
}

impl ReadAt for [u8] {
    fn concurrent_reads(&self) -> bool {
        true
    }

    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let start = usize::try_from(offset).ok().filter(|s| s.checked_add(buf.len()).is_some_and(|e| e <= <[u8]>::len(self)));
        let start = start.ok_or(Error::Changed { file: "<memory>".into(), offset, expected: ReadAt::len(self) })?;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }
}

impl ReadAt for &[u8] {
    fn concurrent_reads(&self) -> bool {
        true
    }

    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        (**self).read_at(offset, buf)
    }
}

impl ReadAt for Vec<u8> {
    fn concurrent_reads(&self) -> bool {
        true
    }

    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.as_slice().read_at(offset, buf)
    }
}

/// A file's contents: small files are read into memory, larger ones are
/// read from their descriptor as needed.
#[derive(Debug)]
pub enum Contents {
    /// Held in memory.
    Memory(Vec<u8>),
    /// Read with `pread` when needed.
    File(ReadFile),
}

impl Contents {
    /// Files up to this size are read into memory.
    pub const MEMORY_LIMIT: u64 = 16 << 20;

    /// A spool for bytes that arrive as a stream (the blob list and index of
    /// an archive): in memory up to [`Contents::MEMORY_LIMIT`], in an
    /// anonymous temporary file beyond, removed when closed whatever happens.
    pub fn spool() -> tempfile::SpooledTempFile {
        tempfile::spooled_tempfile(Self::MEMORY_LIMIT as usize)
    }

    /// What was written to a [`Contents::spool`], to be read at any offset.
    pub fn from_spool(spool: tempfile::SpooledTempFile, name: &str) -> Result<Self, Error> {
        match spool.into_inner() {
            tempfile::SpooledData::InMemory(cursor) => Ok(Contents::Memory(cursor.into_inner())),
            tempfile::SpooledData::OnDisk(file) => Ok(Contents::File(ReadFile::from_fd(OwnedFd::from(file), name)?)),
        }
    }

    /// Reads `file` into memory if it is small; keeps the descriptor otherwise.
    pub fn load(file: ReadFile) -> Result<Self, Error> {
        if file.size() <= Self::MEMORY_LIMIT {
            return Ok(Contents::Memory(file.read_all("file size", Self::MEMORY_LIMIT)?));
        }
        Ok(Contents::File(file))
    }
}

impl ReadAt for Contents {
    fn concurrent_reads(&self) -> bool {
        true
    }

    fn len(&self) -> u64 {
        match self {
            Contents::Memory(v) => ReadAt::len(v),
            Contents::File(f) => f.len(),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        match self {
            Contents::Memory(v) => v.read_at(offset, buf),
            Contents::File(f) => f.read_at(offset, buf),
        }
    }
}

/// A stream read once, in order, seen as [`ReadAt`] so that the readers
/// built on it ([`SeqReader`], the log walk) work on archive entries too.
/// Reads must move forward: the first bytes are kept (headers are parsed
/// before the walk that hashes them re-reads them), a gap is skipped, and a
/// read behind the stream's position is a bug reported as an error.
pub struct Forward<'a> {
    name: String,
    len: u64,
    state: std::sync::Mutex<ForwardState<'a>>,
}

struct ForwardState<'a> {
    src: &'a mut (dyn Read + Send),
    head: Vec<u8>,
    position: u64,
}

/// Bytes kept from the start of a [`Forward`] stream.
const FORWARD_HEAD: u64 = 64;

impl<'a> Forward<'a> {
    /// `src` holds exactly `len` bytes; `name` names it in errors.
    pub fn new(src: &'a mut (dyn Read + Send), len: u64, name: &str) -> Result<Self, Error> {
        let mut head = vec![0u8; len.min(FORWARD_HEAD) as usize];
        read_stream(src, &mut head, name, 0, len)?;
        let position = head.len() as u64;
        Ok(Forward { name: name.to_string(), len, state: std::sync::Mutex::new(ForwardState { src, head, position }) })
    }

    /// Reads and discards what was not read yet.
    pub fn drain(&self) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let left = self.len - state.position;
        let copied = std::io::copy(&mut (&mut *state.src).take(left), &mut std::io::sink()).map_err(|e| stream_error(&self.name, e))?;
        state.position += copied;
        if copied < left {
            return Err(Error::Changed { file: self.name.clone(), offset: state.position, expected: self.len });
        }
        Ok(())
    }
}

impl ReadAt for Forward<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = 0usize;
        if offset < state.head.len() as u64 {
            let from = offset as usize;
            done = buf.len().min(state.head.len() - from);
            buf[..done].copy_from_slice(&state.head[from..from + done]);
        }
        if done == buf.len() {
            return Ok(());
        }
        let at = offset + done as u64;
        if at < state.position {
            return Err(Error::io(&self.name, std::io::Error::other(format!("read at {at} behind the stream ({})", state.position))));
        }
        let gap = at - state.position;
        let skipped = std::io::copy(&mut (&mut *state.src).take(gap), &mut std::io::sink()).map_err(|e| stream_error(&self.name, e))?;
        state.position += skipped;
        let position = state.position;
        read_stream(state.src, &mut buf[done..], &self.name, position, self.len)?;
        state.position += (buf.len() - done) as u64;
        Ok(())
    }
}

/// Fills `buf` from a stream at `offset`; an early end is [`Error::Changed`].
fn read_stream(src: &mut (dyn Read + Send), buf: &mut [u8], name: &str, offset: u64, len: u64) -> Result<(), Error> {
    let mut done = 0;
    while done < buf.len() {
        match src.read(&mut buf[done..]) {
            Ok(0) => return Err(Error::Changed { file: name.to_string(), offset: offset + done as u64, expected: len }),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(name, e)),
        }
    }
    Ok(())
}

/// A stream's error: the library error it carries, or an I/O error.
pub fn stream_error(name: &str, e: std::io::Error) -> Error {
    match e.downcast::<Error>() {
        Ok(inner) => inner,
        Err(e) => Error::io(name, e),
    }
}

/// A sequential reader over [`ReadAt`] bytes with a bounded buffer, that
/// can hash every byte it reads exactly once, in order: the bytes checked
/// are the bytes hashed. The buffer only grows (to the window, or to the
/// largest item taken) and can be handed from one reader to the next, so
/// that reading many files does not allocate and zero a buffer for each.
pub struct SeqReader<'a> {
    src: &'a dyn ReadAt,
    name: &'a str,
    /// File offset of `buf[0]`.
    base: u64,
    buf: Vec<u8>,
    /// Consumed bytes at the front of `buf`.
    start: usize,
    /// End of the bytes read into `buf`.
    end: usize,
    hasher: Option<Hashing>,
    window: usize,
}

/// How a [`SeqReader`] hashes what it reads.
enum Hashing {
    Plain(Box<blake3::Hasher>),
    /// The hash and, in the same pass, the hash of the outboard.
    Tree(Box<crate::treehash::TreeHasher>),
}

/// A sequential reader is an [`std::io::Read`] too (for decoders); a file
/// that changed underneath is then an [`std::io::Error`] whose source is
/// [`Error::Changed`].
impl std::io::Read for SeqReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.remaining().min(buf.len() as u64).min(1 << 16) as usize;
        let bytes = self.next_bytes(n).map_err(std::io::Error::other)?;
        buf[..n].copy_from_slice(bytes);
        Ok(n)
    }
}

impl<'a> SeqReader<'a> {
    /// Reads `src` (named `name` in errors) from `offset` on; hashes what it
    /// reads when `hash` is set (then `offset` must be 0 for the hash to be
    /// the file's).
    pub fn new(src: &'a dyn ReadAt, name: &'a str, offset: u64, hash: bool) -> Self {
        let hasher = hash.then(|| Hashing::Plain(Box::new(blake3::Hasher::new())));
        SeqReader { src, name, base: offset, buf: Vec::new(), start: 0, end: 0, hasher, window: WINDOW }
    }

    /// A hashing reader that also hashes the outboard of what it reads
    /// (FORMAT.md §14; chunk groups of `2^group_chunk_log` chunks), read
    /// from the start of the source.
    pub fn with_outboard(mut self, group_chunk_log: u8) -> Self {
        if self.hasher.is_some() {
            let tree = crate::treehash::TreeHasher::new(self.src.len(), group_chunk_log);
            self.hasher = Some(Hashing::Tree(Box::new(tree)));
        }
        self
    }

    /// A reader with a smaller buffer, for sections read side by side.
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.max(64);
        self
    }

    /// Reads into `buffer`'s allocation (its contents are overwritten).
    pub fn with_buffer(mut self, buffer: Vec<u8>) -> Self {
        self.buf = buffer;
        self
    }

    /// The buffer, for the next reader.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Offset of the next unconsumed byte.
    pub fn position(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Bytes left in the source.
    pub fn remaining(&self) -> u64 {
        self.src.len().saturating_sub(self.position())
    }

    /// The next `n` bytes, consumed. The caller has checked that they exist
    /// (`n <= remaining()`), and bounds `n` (it is buffered whole).
    pub fn next_bytes(&mut self, n: usize) -> Result<&[u8], Error> {
        if self.end - self.start < n {
            self.refill(n)?;
        }
        let at = self.start;
        self.start += n;
        Ok(&self.buf[at..at + n])
    }

    /// The bytes read and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Everything in the buffer, consumed or not: bytes stay at their place
    /// in it until the next read that needs more than is buffered.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[..self.end]
    }

    /// The place in [`SeqReader::buffer`] of the next unconsumed byte.
    pub fn buffer_position(&self) -> usize {
        self.start
    }

    /// Hands the buffer over, the bytes read at the places
    /// [`SeqReader::buffer`] showed (valid up to its length then), and goes
    /// on reading into `fresh`, which gets the unconsumed bytes. A `fresh`
    /// buffer that was handed over before keeps its length, so reads into
    /// it fill nothing first.
    pub fn swap_buffer(&mut self, mut fresh: Vec<u8>) -> Vec<u8> {
        let tail = self.end - self.start;
        if fresh.len() < tail {
            fresh.resize(tail, 0);
        }
        fresh[..tail].copy_from_slice(&self.buf[self.start..self.end]);
        let old = std::mem::replace(&mut self.buf, fresh);
        self.base += self.start as u64;
        (self.start, self.end) = (0, tail);
        old
    }

    /// The `n` bytes consumed last (by the latest [`SeqReader::next_bytes`] of at least `n`).
    pub fn last(&self, n: usize) -> &[u8] {
        &self.buf[self.start - n..self.start]
    }

    /// Reads and hashes (when hashing) everything left, discarding it.
    pub fn skip_to_end(&mut self) -> Result<(), Error> {
        while self.remaining() > 0 {
            let n = self.remaining().min(self.window as u64) as usize;
            self.next_bytes(n)?;
        }
        Ok(())
    }

    /// The hash of every byte read; call after [`SeqReader::skip_to_end`].
    pub fn finish(self) -> Option<Digest> {
        self.hash_so_far()
    }

    /// The hash of every byte read so far (with an outboard: once all were read).
    pub fn hash_so_far(&self) -> Option<Digest> {
        match self.hasher.as_ref()? {
            Hashing::Plain(h) => Some(Digest::finished(h)),
            Hashing::Tree(t) => t.finish().map(|(root, _)| root),
        }
    }

    /// The hash of the outboard of everything read, once all was read
    /// ([`SeqReader::with_outboard`]).
    pub fn outboard_hash(&self) -> Option<Digest> {
        match self.hasher.as_ref()? {
            Hashing::Plain(_) => None,
            Hashing::Tree(t) => t.finish().map(|(_, outboard)| outboard),
        }
    }

    fn refill(&mut self, need: usize) -> Result<(), Error> {
        // Keep the unconsumed tail at the front, then fill what follows it.
        self.buf.copy_within(self.start..self.end, 0);
        self.base += self.start as u64;
        self.end -= self.start;
        self.start = 0;
        let file_left = self.src.len().saturating_sub(self.base + self.end as u64);
        let wanted = need.max(self.window.min(self.end + file_left.min(self.window as u64) as usize));
        if self.buf.len() < wanted {
            self.buf.resize(wanted, 0);
        }
        let read = ((self.buf.len() - self.end) as u64).min(file_left) as usize;
        if self.end + read < need {
            let offset = self.base + (self.end + read) as u64;
            return Err(Error::Changed { file: self.name.to_string(), offset, expected: self.src.len() });
        }
        let fresh = self.end..self.end + read;
        let at = self.base + self.end as u64;
        if read >= 2 << 20 && self.src.concurrent_reads() {
            // A large read in two halves on two cores: copying out of the
            // page cache is CPU work too. Only where reads may run at once:
            // a stream must be read in order.
            let (first, second) = self.buf[fresh.clone()].split_at_mut(read / 2);
            let src = self.src;
            let (a, b) = rayon::join(|| src.read_at(at, first), || src.read_at(at + (read / 2) as u64, second));
            a.and(b)?;
        } else {
            self.src.read_at(at, &mut self.buf[fresh.clone()])?;
        }
        match &mut self.hasher {
            // Both cores for a large window; small windows are hashed where they were read.
            Some(Hashing::Plain(h)) if read >= 1 << 20 => {
                h.update_rayon(&self.buf[fresh]);
            }
            Some(Hashing::Plain(h)) => {
                h.update(&self.buf[fresh]);
            }
            Some(Hashing::Tree(t)) => t.update(&self.buf[fresh]),
            None => {}
        }
        self.end += read;
        Ok(())
    }
}

/// BLAKE3 of the whole of `src` (named `name` in errors), read in bounded
/// windows. `tick` receives each amount hashed.
pub fn hash(src: &dyn ReadAt, name: &str, tick: &(dyn Fn(u64) + Sync)) -> Result<Digest, Error> {
    let mut reader = SeqReader::new(src, name, 0, true);
    while reader.remaining() > 0 {
        let n = reader.remaining().min(WINDOW as u64) as usize;
        reader.next_bytes(n)?;
        tick(n as u64);
    }
    Ok(reader.finish().expect("a hashing reader"))
}

/// [`hash`], and the hash of the outboard of `src` (FORMAT.md §14), in one read.
pub fn hash_with_outboard(
    src: &dyn ReadAt,
    name: &str,
    tick: &(dyn Fn(u64) + Sync),
    group_chunk_log: u8,
) -> Result<(Digest, Digest), Error> {
    let mut reader = SeqReader::new(src, name, 0, true).with_outboard(group_chunk_log);
    while reader.remaining() > 0 {
        let n = reader.remaining().min(WINDOW as u64) as usize;
        reader.next_bytes(n)?;
        tick(n as u64);
    }
    let root = reader.hash_so_far().expect("everything was read");
    Ok((root, reader.outboard_hash().expect("everything was read")))
}

/// Reads a small file whole: regular files only, refused over `limit` before reading.
pub fn read_bounded(path: &Path, name: &str, what: &'static str, limit: u64) -> Result<Vec<u8>, Error> {
    ReadFile::open(path, name)?.read_all(what, limit)
}

/// Opens a directory without following a symbolic link.
pub fn open_dir(path: &Path) -> Result<OwnedFd, Error> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::empty()).map_err(|e| open_error(&path.display().to_string(), e))
}

/// Opens the directory `leaf` inside the directory `dir` without following a link.
pub fn open_dir_at(dir: &OwnedFd, leaf: &str, name: &str) -> Result<OwnedFd, Error> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::openat(dir, leaf, flags, Mode::empty()).map_err(|e| open_error(name, e))
}

/// The directory holding `path` ("." for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// How [`write_atomic`] treats an existing file at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail with [`Error::Exists`]: checked by the rename itself, so two
    /// writers racing for one path cannot both succeed.
    Keep,
    /// Replace it atomically.
    Replace,
}

/// The one atomic write: `bytes` go to a temporary file beside `path`
/// (created with `mode`), are synced, and the file is renamed into place;
/// a failure leaves nothing behind.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, existing: Existing) -> Result<(), Error> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".cathedral-tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(&dir)
        .map_err(|e| Error::output(&dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::output(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::output(path, e))?;
    persist(tmp, path, existing)?;
    Ok(())
}

/// Renames a finished temporary file into place, without clobbering unless asked.
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path, existing: Existing) -> Result<File, Error> {
    let result = match existing {
        Existing::Replace => tmp.persist(path),
        Existing::Keep => tmp.persist_noclobber(path),
    };
    result.map_err(|e| match e.error.kind() {
        std::io::ErrorKind::AlreadyExists => Error::Exists { file: path.display().to_string() },
        _ => Error::output(path, e.error),
    })
}

/// Creates `path` (which must not exist), writes `bytes` and syncs it.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = File::options().write(true).create_new(true).open(path).map_err(|e| Error::output(path, e))?;
    file.write_all(bytes).map_err(|e| Error::output(path, e))?;
    file.sync_all().map_err(|e| Error::output(path, e))
}

/// Syncs a directory so that the entries created in it are durable.
pub fn sync_dir(path: &Path) -> Result<(), Error> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| Error::output(path, e))
}

/// Flushes every dirty page of the file system holding `path` (one `syncfs`).
pub fn sync_filesystem(path: &Path) -> Result<(), Error> {
    let dir = File::open(path).map_err(|e| Error::output(path, e))?;
    rustix::fs::syncfs(&dir).map_err(|e| Error::output(path, e.into()))
}

/// Atomically swaps two paths (`renameat2` with `RENAME_EXCHANGE`); false
/// where the file system cannot.
pub fn exchange(a: &Path, b: &Path) -> Result<bool, Error> {
    use rustix::fs::{RenameFlags, CWD};
    match rustix::fs::renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => Ok(false),
        Err(e) => Err(Error::output(b, e.into())),
    }
}

/// Renames `from` to `to`, failing with [`Error::Exists`] if `to` exists
/// (`RENAME_NOREPLACE`; a plain rename where the file system cannot).
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<(), Error> {
    use rustix::fs::{RenameFlags, CWD};
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::EXIST => Err(Error::Exists { file: to.display().to_string() }),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            std::fs::rename(from, to).map_err(|e| Error::output(to, e))
        }
        Err(e) => Err(Error::output(to, e.into())),
    }
}

/// Takes an exclusive advisory lock on `file` without waiting; false if
/// another process holds it. The lock lasts as long as the descriptor.
pub fn try_lock(file: &impl AsFd) -> bool {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_reader_hashes_every_byte_once() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut r = SeqReader::new(&data, "d", 0, true).with_window(1000);
        let mut got = Vec::new();
        for n in [1usize, 999, 1500, 7, 3000] {
            got.extend_from_slice(r.next_bytes(n).unwrap());
        }
        r.skip_to_end().unwrap();
        assert_eq!(got, data[..got.len()]);
        assert_eq!(r.finish().unwrap(), Digest::of(&data));
    }

    /// A buffer handed over holds what was read at the places `buffer`
    /// showed; reading goes on in the fresh one (short, empty or recycled)
    /// with every byte in order, hashed once.
    #[test]
    fn a_buffer_handed_over_keeps_what_was_read_and_reading_goes_on() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
        let mut r = SeqReader::new(&data, "d", 0, true).with_window(1000);
        let (mut got, mut spare) = (Vec::new(), Vec::new());
        for (k, n) in [1usize, 999, 1500, 7, 3000, 1, 1000, 250].into_iter().cycle().take(40).enumerate() {
            let bytes = r.next_bytes(n).unwrap().to_vec();
            let at = r.buffer_position() - n;
            got.extend_from_slice(&bytes);
            if k % 3 != 2 {
                let fresh = if k % 2 == 0 { std::mem::take(&mut spare) } else { vec![9u8; k] };
                let old = r.swap_buffer(fresh);
                assert_eq!(old[at..at + n], bytes[..], "step {k}");
                spare = old;
            }
        }
        r.skip_to_end().unwrap();
        assert_eq!(got, data[..got.len()]);
        assert_eq!(r.finish().unwrap(), Digest::of(&data));
    }

    #[test]
    fn reading_past_the_end_is_an_error_not_a_panic() {
        let data = vec![1u8; 10];
        let mut r = SeqReader::new(&data, "d", 0, false);
        assert!(matches!(r.next_bytes(11), Err(Error::Changed { .. })));
        let mut buf = [0u8; 4];
        assert!(data.read_at(8, &mut buf).is_err());
        assert!(data.read_at(u64::MAX, &mut buf).is_err());
    }

    /// Large windows are read in two halves at once: every byte arrives in
    /// order and is hashed once, and a source shorter than it said is an
    /// error whichever half it ends in.
    #[test]
    fn large_windows_read_in_halves_keep_every_byte_in_order() {
        struct Claims<'d>(&'d [u8], u64);
        impl ReadAt for Claims<'_> {
            fn len(&self) -> u64 {
                self.1
            }
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
                self.0.read_at(offset, buf)
            }
            fn concurrent_reads(&self) -> bool {
                true
            }
        }
        let data: Vec<u8> = (0..(11 << 20) + 12_345u32).map(|i| (i % 251) as u8).collect();
        let whole = Claims(&data, data.len() as u64);
        let mut r = SeqReader::new(&whole, "d", 0, true);
        let mut got = Vec::new();
        for n in [3usize, 5 << 20, 1, 4 << 20, 77] {
            got.extend_from_slice(r.next_bytes(n).unwrap());
        }
        r.skip_to_end().unwrap();
        assert_eq!(got, data[..got.len()]);
        assert_eq!(r.finish().unwrap(), Digest::of(&data));
        // Shorter than claimed, the end falling in the first or second half
        // of the last window, or at its very end.
        for missing in [1, 1000, 3 << 20] {
            let short = Claims(&data[..data.len() - missing], data.len() as u64);
            let mut r = SeqReader::new(&short, "d", 0, true);
            assert!(matches!(r.skip_to_end(), Err(Error::Changed { .. })), "{missing} bytes missing");
        }
    }

    /// A source that does not allow reads at once (a stream read once, in
    /// order: [`Forward`], an archive entry) is read one window per read,
    /// never in halves on two threads (whichever half came first, the other
    /// would find the stream past it); one that allows them is.
    #[test]
    fn only_sources_that_allow_it_are_read_in_halves() {
        struct Recording<'d>(&'d [u8], bool, std::sync::Mutex<Vec<usize>>);
        impl ReadAt for Recording<'_> {
            fn len(&self) -> u64 {
                self.0.len() as u64
            }
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
                self.2.lock().unwrap().push(buf.len());
                self.0.read_at(offset, buf)
            }
            fn concurrent_reads(&self) -> bool {
                self.1
            }
        }
        let data: Vec<u8> = (0..(11 << 20) + 777u32).map(|i| (i % 241) as u8).collect();
        for concurrent in [false, true] {
            let source = Recording(&data, concurrent, std::sync::Mutex::new(Vec::new()));
            let mut r = SeqReader::new(&source, "d", 0, true);
            r.skip_to_end().unwrap();
            assert_eq!(r.finish().unwrap(), Digest::of(&data));
            let reads = source.2.into_inner().unwrap();
            assert_eq!(reads.len(), if concurrent { 4 } else { 2 }, "{reads:?}");
        }
        let mut stream = std::io::Cursor::new(&data[..]);
        let forward = Forward::new(&mut stream, data.len() as u64, "stream").unwrap();
        assert!(!forward.concurrent_reads() && data.as_slice().concurrent_reads());
        let mut r = SeqReader::new(&forward, "stream", 0, true);
        r.skip_to_end().unwrap();
        assert_eq!(r.finish().unwrap(), Digest::of(&data));
    }
}
