//! File-system helpers: opening bundle files without following links or
//! blocking on FIFOs, hashing with bounded memory, durable writes.

use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::digest::Digest;
use crate::error::Error;

/// Files up to this size are read into memory; larger ones are mapped.
pub const READ_THRESHOLD: u64 = 1 << 20;
/// Larger files are hashed through mappings of at most this many bytes at a time.
pub const HASH_WINDOW: u64 = 16 << 20;

/// Describes a file type for messages.
pub fn describe_type(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_file() {
        "regular file"
    } else {
        "unknown file type"
    }
}

/// Opens a file for reading without following a final symbolic link and
/// without blocking if it is a FIFO. The caller bounds what it reads.
pub fn open_no_follow(path: &Path) -> Result<File, Error> {
    File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::FileType { path: path.display().to_string(), found: "symbolic link" }
        } else {
            Error::io(path, e)
        }
    })
}

/// Opens a directory without following a symbolic link.
pub fn open_dir_no_follow(path: &Path) -> Result<std::os::fd::OwnedFd, Error> {
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    Ok(dir.into())
}

/// Opens `name` inside the directory `dir`: a one-component lookup that never
/// follows a final symbolic link and never blocks on a FIFO. `path` names
/// the file in errors.
pub fn open_at_no_follow(dir: &std::os::fd::OwnedFd, name: &str, path: &Path) -> Result<File, Error> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let name = std::ffi::CString::new(name).map_err(|_| Error::InvalidPath { path: path.display().to_string(), reason: "NUL byte" })?;
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string for the duration of the call.
    let fd =
        unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ELOOP) {
            Error::FileType { path: path.display().to_string(), found: "symbolic link" }
        } else {
            Error::io(path, e)
        });
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens a regular file for reading: never follows a final symbolic link,
/// never blocks on a FIFO, and refuses anything that is not a regular file.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), Error> {
    let file = open_no_follow(path)?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::FileType { path: path.display().to_string(), found: describe_type(&meta) });
    }
    Ok((file, meta))
}

/// Maps a whole file read-only, or returns an empty map for an empty file.
pub fn map(file: &File, path: &Path) -> Result<Option<Mmap>, Error> {
    if file.metadata().map_err(|e| Error::io(path, e))?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read-only and private. A bundle must not be modified
    // while it is open; if it is, reads may observe the new bytes (or fault on
    // truncation), which is the documented contract of every mmap-based reader.
    let map = unsafe { MmapOptions::new().map(file) }.map_err(|e| Error::io(path, e))?;
    Ok(Some(map))
}

/// Reads a small file whole, refusing one over `limit` before reading it.
/// `name` and `what` name the file and the limit in errors.
pub fn read_bounded(path: &Path, name: &str, what: &'static str, limit: u64) -> Result<Vec<u8>, Error> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(Error::limit(name, what, limit, meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::limit(name, what, limit, bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads a file expected to hold `size` bytes, asking for one byte more.
/// A regular file returns fewer bytes than asked only at its end, so one
/// `read` usually settles it; a short read below `size` reads on. Returns
/// what was read: more than `size` bytes means the file is larger.
pub fn read_exactly(mut file: File, size: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size + 1];
    let mut filled = 0;
    loop {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled >= size {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Bytes of a file, read into memory or mapped.
pub(crate) enum FileBytes {
    Owned(Vec<u8>),
    Mapped(Mmap),
}

impl FileBytes {
    /// Reads a file whose size was checked to be `size`: small files into
    /// memory, larger ones mapped. `name` names the file in errors.
    pub(crate) fn load(file: File, size: u64, path: &Path, name: &str) -> Result<Self, Error> {
        if size > READ_THRESHOLD {
            return Ok(FileBytes::Mapped(map(&file, path)?.expect("non-empty")));
        }
        let bytes = read_exactly(file, size as usize).map_err(|e| Error::io(path, e))?;
        if bytes.len() as u64 != size {
            let found = if bytes.len() as u64 > size { "more".to_string() } else { bytes.len().to_string() };
            return Err(Error::mismatch(name, "size", size, found));
        }
        Ok(FileBytes::Owned(bytes))
    }

    /// Hashes the bytes from `start` on, in windows, with rayon for large
    /// ones, releasing each window of a mapping once hashed so that memory
    /// stays bounded whatever the file size. `tick` receives each amount hashed.
    pub(crate) fn hash(&self, start: usize, tick: &(dyn Fn(u64) + Sync)) -> Digest {
        let mut hasher = blake3::Hasher::new();
        let window = HASH_WINDOW as usize;
        for (i, chunk) in self[start..].chunks(window).enumerate() {
            if chunk.len() >= 1 << 17 {
                hasher.update_rayon(chunk);
            } else {
                hasher.update(chunk);
            }
            self.release(start + i * window, chunk.len());
            tick(chunk.len() as u64);
        }
        hasher.finalize().into()
    }

    /// Drops this process's resident pages of a mapping, so that walking a
    /// large file keeps memory bounded; pages are re-read from the page cache
    /// if touched again. No-op for bytes held in memory.
    pub(crate) fn release(&self, offset: usize, len: usize) {
        if let FileBytes::Mapped(map) = self {
            let len = len.min(map.len().saturating_sub(offset));
            if len > 0 {
                // SAFETY: the mapping is read-only and file-backed; DONTNEED only
                // drops resident pages, and later reads fault them back in from the
                // file with the same contents.
                let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
            }
        }
    }

    /// Releases every resident page of a mapping.
    pub(crate) fn release_all(&self) {
        self.release(0, self.len());
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Owned(v) => v,
            FileBytes::Mapped(m) => m,
        }
    }
}

/// Writes `bytes` to a new file at `path` and syncs it.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = File::options().write(true).create_new(true).open(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// Syncs a directory so that the entries created in it are durable.
pub fn sync_dir(path: &Path) -> Result<(), Error> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| Error::io(path, e))
}

/// Flushes every dirty page of the file system holding `path` (one `syncfs`).
pub fn sync_filesystem(path: &Path) -> Result<(), Error> {
    let dir = File::open(path).map_err(|e| Error::io(path, e))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `dir` is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(Error::io(path, std::io::Error::last_os_error()));
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        dir.sync_all().map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Atomically swaps two paths where the platform can (Linux `renameat2`
/// with `RENAME_EXCHANGE`); returns false where it cannot.
pub fn exchange(a: &Path, b: &Path) -> Result<bool, Error> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let ca =
            CString::new(a.as_os_str().as_bytes()).map_err(|_| Error::InvalidPath { path: a.display().to_string(), reason: "NUL byte" })?;
        let cb =
            CString::new(b.as_os_str().as_bytes()).map_err(|_| Error::InvalidPath { path: b.display().to_string(), reason: "NUL byte" })?;
        // SAFETY: both pointers are valid NUL-terminated strings for the call.
        let rc = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        if matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Ok(false);
        }
        Err(Error::io(b, err))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Ok(false)
    }
}
