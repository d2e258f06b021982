//! Blob checks (FORMAT.md §8, §10 step 4): every listed blob is read once,
//! in parallel, through a no-follow descriptor whose type is checked before
//! any read; its header, stored bytes and content are compared with the
//! blob list's record.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;

use super::Verifier;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::blob::{decode_blob_to, BlobHeader, BlobList, BlobRecord, Compression};
use crate::format::{self, blob_path, BLOB_HEADER_LEN};
use crate::fsutil::{self, ReadAt, ReadFile, SeqReader};

/// Read buffer of one blob check.
pub(super) const BLOB_WINDOW: usize = 256 << 10;

/// How many records are read from the list per parallel batch.
const BATCH: usize = 4096;

/// `blobs/` and its shard directories, each opened once with a
/// one-component lookup that never follows a link, so that no blob is read
/// through a linked `blobs/` or shard.
struct ShardDirs {
    blobs: Option<OwnedFd>,
    dirs: Vec<OnceLock<Option<OwnedFd>>>,
}

impl ShardDirs {
    fn new(root: &std::path::Path) -> Self {
        let blobs = fsutil::open_dir(&root.join(format::BLOB_DIR)).ok();
        ShardDirs { blobs, dirs: (0..256).map(|_| OnceLock::new()).collect() }
    }

    /// The shard of `record`; None if it is absent or not a real directory (the walk reports why).
    fn get(&self, record: &BlobRecord) -> Option<&OwnedFd> {
        let blobs = self.blobs.as_ref()?;
        let hex = record.header.hash.to_hex();
        let shard = &hex[..2];
        self.dirs[usize::from(record.header.hash.0[0])].get_or_init(|| fsutil::open_dir_at(blobs, shard, shard).ok()).as_ref()
    }
}

/// Uncompressed blobs of at most this many stored bytes are read whole and
/// their contents hashed together, one per SIMD lane (`digest::hash_each`):
/// hashed one by one, a blob of a few KiB keeps most lanes idle.
const SMALL_BLOB: u64 = (16 << 10) + BLOB_HEADER_LEN as u64;

/// Blobs read per worker before their contents are hashed together.
const GROUP: usize = 64;

impl Verifier<'_> {
    /// Checks every listed blob, in parallel batches; returns the bytes hashed.
    /// Absent files, links and special files are skipped here: the walk reports them.
    pub(super) fn check_blobs(&self, list: &BlobList<'_>, tick: &(dyn Fn(u64) + Sync)) -> u64 {
        let shards = ShardDirs::new(self.root);
        let hashed = AtomicU64::new(0);
        let mut records = list.records(0..list.count());
        loop {
            let batch: Vec<BlobRecord> = records.by_ref().take(BATCH).filter_map(Result::ok).collect();
            if batch.is_empty() {
                break;
            }
            // Each worker reuses its buffers for all the blobs it checks.
            tasks(&batch).par_iter().for_each_init(Buffers::default, |buffers, group| {
                buffers.small.clear();
                buffers.held.clear();
                for record in group.iter() {
                    let rel = blob_path(&record.header.hash);
                    if record.header.size > self.limits.max_blob_size {
                        self.findings.error(&rel, Error::limit(&rel, "blob content size", self.limits.max_blob_size, record.header.size));
                        continue;
                    }
                    let Some(dir) = shards.get(record) else { continue };
                    let checked = if is_small(record) {
                        read_small(dir, record, &rel, &mut buffers.small).map(|range| buffers.held.push((rel.clone(), record, range)))
                    } else {
                        check_blob(dir, record, &rel, &mut buffers.read, tick)
                    };
                    match checked {
                        Ok(()) => {}
                        Err(Error::NotFound { .. } | Error::FileType { .. }) => continue,
                        Err(e) => self.findings.error(&rel, e),
                    }
                    hashed.fetch_add(record.stored_size, Ordering::Relaxed);
                }
                let held: Vec<(&str, &BlobRecord, &[u8])> =
                    buffers.held.iter().map(|(rel, r, range)| (rel.as_str(), *r, &buffers.small[range.clone()])).collect();
                check_in_memory(&held, tick, &|rel, e| self.findings.error(rel, e));
            });
        }
        hashed.into_inner()
    }
}

/// `batch` cut into the tasks the workers share: runs of up to [`GROUP`]
/// small blobs (their contents hashed together), and every other blob
/// alone (a large one is as much work as many small ones).
fn tasks(batch: &[BlobRecord]) -> Vec<&[BlobRecord]> {
    let (mut tasks, mut start) = (Vec::new(), 0);
    for (i, record) in batch.iter().enumerate() {
        if !is_small(record) {
            if start < i {
                tasks.push(&batch[start..i]);
            }
            tasks.push(&batch[i..=i]);
            start = i + 1;
        } else if i + 1 - start == GROUP {
            tasks.push(&batch[start..=i]);
            start = i + 1;
        }
    }
    if start < batch.len() {
        tasks.push(&batch[start..]);
    }
    tasks
}

/// One worker's buffers: the read buffer of a blob checked alone, and the
/// small blobs of a group, each with where its stored bytes lie.
#[derive(Default)]
struct Buffers<'r> {
    read: Vec<u8>,
    small: Vec<u8>,
    held: Vec<(String, &'r BlobRecord, std::ops::Range<usize>)>,
}

/// A blob checked in a group: uncompressed, its record's stored hash being
/// its content hash (so the content is the only thing hashed), and small.
fn is_small(record: &BlobRecord) -> bool {
    !record.hashes_whole_file() && record.stored_size <= SMALL_BLOB
}

/// Opens a blob file in its shard (no link followed, a regular file) and
/// compares its size with the record's before anything is read.
fn open_blob(dir: &OwnedFd, record: &BlobRecord, rel: &str) -> Result<ReadFile, Error> {
    let file = ReadFile::open_at(dir, &rel[format::BLOB_DIR.len() + 4..], rel)?;
    if file.size() != record.stored_size {
        return Err(Error::SizeMismatch { file: rel.to_string(), what: "size", expected: record.stored_size, found: file.size() });
    }
    Ok(file)
}

/// Reads a small blob whole to the end of `buf`, its size checked first as
/// [`check_blob`] does; returns where its stored bytes lie in `buf`
/// (checked by [`check_in_memory`]).
fn read_small(dir: &OwnedFd, record: &BlobRecord, rel: &str, buf: &mut Vec<u8>) -> Result<std::ops::Range<usize>, Error> {
    let file = open_blob(dir, record, rel)?;
    let start = buf.len();
    // At most SMALL_BLOB bytes (the size was just compared with the record's).
    buf.resize(start + file.size() as usize, 0);
    if let Err(e) = file.read_at(0, &mut buf[start..]) {
        buf.truncate(start);
        return Err(e);
    }
    Ok(start..buf.len())
}

/// Checks blobs whose stored bytes are in memory (`rel`, record, stored
/// bytes of the record's size) as a blob file is checked; the contents of
/// the uncompressed ones hashed side by side. `report` gets each problem.
pub(super) fn check_in_memory(blobs: &[(&str, &BlobRecord, &[u8])], tick: &(dyn Fn(u64) + Sync), report: &dyn Fn(&str, Error)) {
    let (mut held, mut contents) = (Vec::with_capacity(blobs.len()), Vec::with_capacity(blobs.len()));
    for &(rel, record, stored) in blobs {
        if is_small(record) {
            match check_header(&stored[..BLOB_HEADER_LEN.min(stored.len())], record, rel) {
                Ok(_) => {
                    tick(record.stored_size);
                    held.push((rel, record));
                    contents.push(&stored[BLOB_HEADER_LEN..]);
                }
                Err(e) => report(rel, e),
            }
            continue;
        }
        let mut reader = SeqReader::new(&stored, rel, 0, record.hashes_whole_file()).with_window(BLOB_WINDOW);
        if let Err(e) = check_blob_data(&mut reader, record, rel, tick, None) {
            report(rel, e);
        }
    }
    let mut actual = Vec::with_capacity(contents.len());
    crate::digest::hash_each(&contents, &mut actual);
    for ((rel, record), actual) in held.into_iter().zip(actual) {
        if actual != record.header.hash {
            report(rel, content_mismatch(rel, record.header.hash, actual));
        }
    }
}

/// Decodes a blob's header, which checks every one of its 56 bytes against
/// a fixed value or a field; the fields must equal the record's.
fn check_header(bytes: &[u8], record: &BlobRecord, rel: &str) -> Result<BlobHeader, Error> {
    let header = BlobHeader::decode(bytes, rel)?;
    if header != record.header {
        return Err(Error::inconsistent(rel, "blob header", format!("{:?}", record.header), format!("{header:?}")));
    }
    Ok(header)
}

fn content_mismatch(rel: &str, expected: Digest, found: Digest) -> Error {
    Error::HashMismatch { file: rel.to_string(), what: "content hash", expected, found }
}

/// Checks one blob file in one sequential read: its size and header against
/// the record; for an uncompressed blob, its data against the content hash
/// (and the whole file against the stored hash where the record holds a
/// whole-file hash); for a zstd blob, the whole file against the stored hash
/// and, decompressed (bounded), the content against its name.
fn check_blob(dir: &OwnedFd, record: &BlobRecord, rel: &str, buffer: &mut Vec<u8>, tick: &(dyn Fn(u64) + Sync)) -> Result<(), Error> {
    let file = open_blob(dir, record, rel)?;
    // The whole file is hashed for a zstd blob, and for an uncompressed one
    // whose record holds the whole-file hash (earlier writers).
    let whole = record.hashes_whole_file();
    // A window that stays in the core's cache: blobs are checked in parallel
    // already, and data copied into a cache-resident buffer is hashed from there.
    let mut reader = SeqReader::new(&file, rel, 0, whole).with_window(BLOB_WINDOW).with_buffer(std::mem::take(buffer));
    let result = check_blob_data(&mut reader, record, rel, tick, None);
    *buffer = reader.into_buffer();
    result
}

/// The part of [`check_blob`] after opening: header, then data. The
/// content is also written to `out`, when given (the caller trusts it only
/// if this returns Ok).
pub(super) fn check_blob_data<'w>(
    reader: &mut SeqReader<'_>,
    record: &BlobRecord,
    rel: &str,
    tick: &(dyn Fn(u64) + Sync),
    mut out: Option<&mut (dyn std::io::Write + Send + 'w)>,
) -> Result<(), Error> {
    let compressed = record.header.compression == Compression::Zstd;
    let header = check_header(reader.next_bytes(BLOB_HEADER_LEN)?, record, rel)?;
    tick(record.stored_size);
    if !compressed {
        // The data is the content (its size was checked with the file's):
        // hash it straight from the read buffer.
        let mut hasher = blake3::Hasher::new();
        while reader.remaining() > 0 {
            let bytes = reader.next_bytes(reader.remaining().min(BLOB_WINDOW as u64) as usize)?;
            hasher.update(bytes);
            if let Some(out) = out.as_mut() {
                out.write_all(bytes).map_err(|e| Error::output("blob content", e))?;
            }
        }
        let actual = crate::digest::Digest::finished(&hasher);
        if actual != header.hash {
            return Err(content_mismatch(rel, header.hash, actual));
        }
        return match reader.hash_so_far() {
            Some(file_hash) if file_hash != record.stored_hash => {
                Err(Error::HashMismatch { file: rel.to_string(), what: "stored hash", expected: record.stored_hash, found: file_hash })
            }
            _ => Ok(()),
        };
    }
    let decoded = match out {
        Some(mut out) => decode_blob_to(&header, reader, &mut out, rel),
        None => decode_blob_to(&header, reader, &mut std::io::sink(), rel),
    };
    // Pin the stored bytes first: a changed file is a hash mismatch,
    // whatever its data decodes to.
    reader.skip_to_end()?;
    let actual = reader.hash_so_far().expect("hashing reader");
    if actual != record.stored_hash {
        return Err(Error::HashMismatch { file: rel.to_string(), what: "stored hash", expected: record.stored_hash, found: actual });
    }
    decoded.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32, small: bool) -> BlobRecord {
        let hash = Digest::of(&n.to_le_bytes());
        let compression = if small { Compression::None } else { Compression::Zstd };
        let header = BlobHeader { format: crate::format::BlobFormat::Raw, compression, size: 100, hash };
        BlobRecord { header, stored_hash: hash, stored_size: 156 }
    }

    /// Every blob in one task, in order; small ones in runs of at most
    /// GROUP, every other one alone.
    #[test]
    fn tasks_keep_large_blobs_alone_and_small_ones_in_groups() {
        for pattern in [0u64, u64::MAX, 0b1, 0b1000_0000_0001, 0xF0F0_0000_FFFF_0001, 0x8000_0000_0000_0000] {
            for len in [0usize, 1, 63, 64, 65, 130, 200] {
                let batch: Vec<BlobRecord> = (0..len).map(|i| record(i as u32, pattern >> (i % 64) & 1 == 0)).collect();
                let tasks = tasks(&batch);
                let flat: Vec<&BlobRecord> = tasks.iter().flat_map(|t| t.iter()).collect();
                assert_eq!(flat, batch.iter().collect::<Vec<_>>(), "{pattern:x}, {len}");
                for task in &tasks {
                    assert!(!task.is_empty() && task.len() <= GROUP);
                    assert!(task.len() == 1 || task.iter().all(is_small), "{pattern:x}, {len}: a large blob shares a task");
                }
            }
        }
    }
}
