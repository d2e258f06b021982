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

/// Hashes `len` bytes of `file`, calling `progress` with each amount hashed.
/// Small files are read through a buffer; large ones are hashed window by
/// window through mappings with rayon, so memory stays bounded.
pub fn hash_file(file: &mut File, len: u64, path: &Path, progress: &dyn Fn(u64)) -> Result<Digest, Error> {
    let mut hasher = blake3::Hasher::new();
    if len <= READ_THRESHOLD {
        let mut buf = Vec::with_capacity(len as usize);
        file.take(len + 1).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
        if buf.len() as u64 != len {
            return Err(Error::mismatch(&path.display().to_string(), "size while reading", len, buf.len()));
        }
        hasher.update(&buf);
        progress(len);
        return Ok(hasher.finalize().into());
    }
    let mut offset = 0u64;
    while offset < len {
        let window = HASH_WINDOW.min(len - offset);
        // SAFETY: as in `map`; the window lies within the file's size, checked by the caller's fstat.
        let map = unsafe { MmapOptions::new().offset(offset).len(window as usize).map(&*file) }.map_err(|e| Error::io(path, e))?;
        hasher.update_rayon(&map);
        drop(map);
        offset += window;
        progress(window);
    }
    Ok(hasher.finalize().into())
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
