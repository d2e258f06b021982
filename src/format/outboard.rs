//! Outboards (FORMAT.md §14): the inner nodes of a file's BLAKE3 tree, kept
//! beside the file, so that any byte range of it can be checked against the
//! file's committed hash without reading the rest.
//!
//! ```text
//! <file>.obao   (left CV [32] | right CV [32]) for every parent node of the
//!               BLAKE3 tree of <file> whose leaves are 16 KiB chunk groups,
//!               in post-order; no header; 64 × (max(1, ⌈size / 16384⌉) − 1) bytes
//! ```
//!
//! The tree arithmetic and the checks are the `bao-tree` crate's (the
//! layout is its post-order outboard with a block size of 2^4 chunks); this
//! module adapts it to the bundle's readers and errors.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::io::sync::encode_ranges_validated;
use bao_tree::io::EncodeError;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

use crate::digest::Digest;
use crate::error::Error;
use crate::fsutil::ReadAt;

/// log2 of the chunks (of 1 KiB) in a leaf of the outboard's tree.
pub const GROUP_CHUNK_LOG: u8 = 4;
/// Bytes in a chunk group: the unit a lazy read checks.
pub const GROUP_BYTES: u64 = 1024 << GROUP_CHUNK_LOG;
/// Bytes of one parent node's entry: two chaining values.
pub const PAIR_LEN: u64 = 64;

const BLOCK: BlockSize = BlockSize::from_chunk_log(GROUP_CHUNK_LOG);

/// The tree of a file of `size` bytes.
fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BLOCK)
}

/// The size of the outboard of a file of `size` bytes.
pub fn outboard_size(size: u64) -> u64 {
    tree(size).outboard_size()
}

/// Writes the outboard of `data`, which holds exactly `size` bytes, to
/// `out`; returns the BLAKE3 hash of `data` (the tree's root).
pub fn write(data: impl Read, size: u64, out: impl Write) -> std::io::Result<Digest> {
    let root = bao_tree::io::sync::outboard_post_order(data, tree(size), out)?;
    Ok(Digest(*root.as_bytes()))
}

/// A file read through its outboard: every byte returned belongs to a chunk
/// group that was hashed and checked, through the outboard's parent nodes,
/// against the file's committed hash. The outboard itself need not be
/// trusted: a wrong pair fails the check like a wrong chunk.
pub struct Checked<S> {
    data: S,
    outboard: S,
    root: Digest,
    size: u64,
    name: String,
    outboard_name: String,
    /// The chunk groups checked last, kept for the small reads that follow
    /// (an index search reads a few bytes at a time).
    span: Mutex<Span>,
    groups: AtomicU64,
}

#[derive(Default)]
struct Span {
    start: u64,
    bytes: Vec<u8>,
}

impl<S: ReadAt> Checked<S> {
    /// `data` (named `name`) committed to `root`, and its outboard. Both
    /// sizes are checked here: `data` has `size` bytes and the outboard
    /// exactly the size that implies.
    pub fn new(data: S, outboard: S, root: Digest, size: u64, name: &str, outboard_name: &str) -> Result<Self, Error> {
        if data.len() != size {
            return Err(Error::SizeMismatch { file: name.into(), what: "size", expected: size, found: data.len() });
        }
        if outboard.len() != outboard_size(size) {
            let (expected, found) = (outboard_size(size), outboard.len());
            return Err(Error::SizeMismatch { file: outboard_name.into(), what: "outboard size", expected, found });
        }
        Ok(Checked {
            data,
            outboard,
            root,
            size,
            name: name.to_string(),
            outboard_name: outboard_name.to_string(),
            span: Mutex::new(Span::default()),
            groups: AtomicU64::new(0),
        })
    }

    /// How many chunk groups were read and checked so far.
    pub fn groups_checked(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Reads the chunk groups covering `start..end` into `span` and checks them.
    fn check_span(&self, span: &mut Span, start: u64, end: u64) -> Result<(), Error> {
        let first = start / GROUP_BYTES * GROUP_BYTES;
        let last = end.div_ceil(GROUP_BYTES).saturating_mul(GROUP_BYTES).min(self.size);
        // The span holds nothing until the new bytes are checked: a failed
        // read or check leaves it empty, never holding unchecked bytes.
        let mut bytes = std::mem::take(&mut span.bytes);
        // Zero-filled only where it grows: the read overwrites every byte.
        let len = (last - first) as usize;
        if bytes.len() < len {
            bytes.resize(len, 0);
        }
        bytes.truncate(len);
        self.data.read_at(first, &mut bytes)?;
        let chunks = ChunkRanges::from(ChunkNum(first / 1024)..ChunkNum(last.div_ceil(1024)));
        let outboard =
            PostOrderOutboard { root: blake3::Hash::from_bytes(self.root.0), tree: tree(self.size), data: Positioned(&self.outboard) };
        let window = Positioned(&Window { start: first, bytes: &bytes });
        let checked = encode_ranges_validated(window, outboard, &chunks, std::io::sink());
        self.groups.fetch_add((last - first).div_ceil(GROUP_BYTES), Ordering::Relaxed);
        checked.map_err(|e| self.mismatch(e, first, last))?;
        *span = Span { start: first, bytes };
        Ok(())
    }

    fn mismatch(&self, e: EncodeError, start: u64, end: u64) -> Error {
        let detail = match e {
            EncodeError::ParentHashMismatch(node) => {
                format!("a parent node's pair (the node split at byte {}) does not hash to its parent", node.mid().to_bytes())
            }
            EncodeError::LeafHashMismatch(chunk) => format!("the chunk group at byte {} does not hash to its tree node", chunk.to_bytes()),
            EncodeError::Io(e) => return io_error(e, &self.outboard_name),
            other => other.to_string(),
        };
        Error::RangeMismatch { file: self.name.clone(), outboard: self.outboard_name.clone(), start, end, detail }
    }
}

/// Our error back from the `std::io::Error` it travelled in.
fn io_error(e: std::io::Error, name: &str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return *e.into_inner().expect("checked above").downcast::<Error>().expect("checked above");
    }
    Error::io(name, e)
}

impl<S: ReadAt> ReadAt for Checked<S> {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.size {
            return Err(Error::Changed { file: self.name.clone(), offset, expected: self.size });
        }
        if buf.is_empty() {
            return Ok(());
        }
        let mut span = self.span.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = span.start..span.start + span.bytes.len() as u64;
        if !(held.start <= offset && end <= held.end) {
            self.check_span(&mut span, offset, end)?;
        }
        let at = (offset - span.start) as usize;
        buf.copy_from_slice(&span.bytes[at..at + buf.len()]);
        Ok(())
    }
}

/// A file read whole (verified before, or not at all), or through its
/// outboard, each read checked.
pub enum Source<S> {
    /// The file itself.
    Whole(S),
    /// The file, each read checked through its outboard.
    Checked(Box<Checked<S>>),
}

impl<S: ReadAt> Source<S> {
    /// Chunk groups checked so far, for a file read through its outboard.
    pub fn groups_checked(&self) -> Option<u64> {
        match self {
            Source::Whole(_) => None,
            Source::Checked(c) => Some(c.groups_checked()),
        }
    }
}

impl<S: ReadAt> ReadAt for Source<S> {
    fn len(&self) -> u64 {
        match self {
            Source::Whole(f) => f.len(),
            Source::Checked(c) => c.len(),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        match self {
            Source::Whole(f) => f.read_at(offset, buf),
            Source::Checked(c) => c.read_at(offset, buf),
        }
    }
}

/// Bytes in memory that stand at `start` in a file.
struct Window<'a> {
    start: u64,
    bytes: &'a [u8],
}

impl ReadAt for Window<'_> {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let at = offset.checked_sub(self.start).map(|a| a as usize).filter(|a| a + buf.len() <= self.bytes.len());
        let at = at.ok_or_else(|| Error::Changed { file: "<chunk groups>".into(), offset, expected: self.len() })?;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }
}

/// One of our sources as the positioned reader `bao-tree` takes.
struct Positioned<'a, S: ?Sized>(&'a S);

impl<S: ReadAt + ?Sized> positioned_io::ReadAt for Positioned<'_, S> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.0.len().saturating_sub(pos)) as usize;
        self.0.read_at(pos, &mut buf[..n]).map_err(std::io::Error::other)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outboard as FORMAT.md §14 defines it, written from the definition
    /// with BLAKE3's own tree primitives: leaves of 16 KiB chunk groups, the
    /// left subtree the largest power of two of groups below the total,
    /// parent pairs in post-order.
    fn reference(data: &[u8]) -> (Vec<u8>, [u8; 32]) {
        use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
        /// The largest power of two strictly below `groups` (> 1).
        fn left_groups(groups: u64) -> u64 {
            let mut left = 1;
            while left * 2 < groups {
                left *= 2;
            }
            left
        }
        /// The chaining value of a subtree; its parent pairs appended in post-order.
        fn subtree(data: &[u8], offset: u64, out: &mut Vec<u8>) -> [u8; 32] {
            let groups = (data.len() as u64).div_ceil(GROUP_BYTES);
            if groups == 1 {
                let mut h = blake3::Hasher::new();
                h.set_input_offset(offset);
                h.update(data);
                return h.finalize_non_root();
            }
            let split = (left_groups(groups) * GROUP_BYTES) as usize;
            let l = subtree(&data[..split], offset, out);
            let r = subtree(&data[split..], offset + split as u64, out);
            out.extend_from_slice(&l);
            out.extend_from_slice(&r);
            merge_subtrees_non_root(&l, &r, Mode::Hash)
        }
        let mut out = Vec::new();
        let groups = (data.len() as u64).div_ceil(GROUP_BYTES);
        if groups <= 1 {
            return (out, *blake3::hash(data).as_bytes());
        }
        let split = (left_groups(groups) * GROUP_BYTES) as usize;
        let l = subtree(&data[..split], 0, &mut out);
        let r = subtree(&data[split..], split as u64, &mut out);
        out.extend_from_slice(&l);
        out.extend_from_slice(&r);
        (out, *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
    }

    fn data(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect()
    }

    #[test]
    fn layout_is_the_definition() {
        let g = GROUP_BYTES as usize;
        for size in [0, 1, 1024, g - 1, g, g + 1, 2 * g, 3 * g - 7, 4 * g, 5 * g + 1, 7 * g, 8 * g + 3, 13 * g + 100, 33 * g] {
            let bytes = data(size);
            let mut out = Vec::new();
            let root = write(&bytes[..], size as u64, &mut out).unwrap();
            let (expected, expected_root) = reference(&bytes);
            assert_eq!(root, Digest(*blake3::hash(&bytes).as_bytes()), "size {size}: the root is the file hash");
            assert_eq!(root.0, expected_root, "size {size}");
            assert_eq!(out.len() as u64, outboard_size(size as u64), "size {size}");
            assert_eq!(out.len() as u64, PAIR_LEN * (size as u64).div_ceil(GROUP_BYTES).max(1).saturating_sub(1), "size {size}");
            assert!(out == expected, "size {size}: the pairs differ from the definition");
        }
    }

    /// The one-pass hasher gives the file's hash and the hash of exactly
    /// this outboard, whatever pieces the bytes arrive in.
    #[test]
    fn tree_hasher_agrees_with_the_outboard() {
        let g = GROUP_BYTES as usize;
        for size in [0, 1, g - 1, g, g + 1, 2 * g, 3 * g - 7, 4 * g, 5 * g + 1, 6 * g, 7 * g, 8 * g + 3, 13 * g + 100, 33 * g] {
            let bytes = data(size);
            let mut out = Vec::new();
            let root = write(&bytes[..], size as u64, &mut out).unwrap();
            for piece in [1, 1000, g, g + 3, 1 << 20] {
                let mut h = crate::treehash::TreeHasher::new(size as u64, GROUP_CHUNK_LOG);
                for part in bytes.chunks(piece) {
                    h.update(part);
                }
                assert_eq!(h.finish(), Some((root, Digest::of(&out))), "size {size} piece {piece}");
            }
            let mut short = crate::treehash::TreeHasher::new(size as u64 + 1, GROUP_CHUNK_LOG);
            short.update(&bytes);
            assert_eq!(short.finish(), None, "size {size}: too few bytes");
        }
    }

    fn checked(bytes: &[u8], outboard: &[u8]) -> Checked<Vec<u8>> {
        let root = Digest(*blake3::hash(bytes).as_bytes());
        Checked::new(bytes.to_vec(), outboard.to_vec(), root, bytes.len() as u64, "f", "f.obao").unwrap()
    }

    #[test]
    fn reads_are_checked_where_they_land() {
        let g = GROUP_BYTES as usize;
        let bytes = data(9 * g + 500);
        let mut outboard = Vec::new();
        write(&bytes[..], bytes.len() as u64, &mut outboard).unwrap();
        let clean = checked(&bytes, &outboard);
        for (at, len) in [(0, 1), (g - 3, 10), (5 * g, g), (9 * g + 499, 1), (0, bytes.len())] {
            let mut buf = vec![0; len];
            clean.read_at(at as u64, &mut buf).unwrap();
            assert_eq!(buf, bytes[at..at + len]);
        }
        // A flipped byte in every group in turn: caught by a read of that
        // group, not by a read of another.
        for group in 0..10 {
            let mut bad = bytes.clone();
            let flip = (group * g + 77).min(bad.len() - 1);
            bad[flip] ^= 1;
            let r = checked(&bytes, &outboard);
            let r = Checked { data: bad, ..r };
            let mut buf = [0u8; 4];
            let err = r.read_at(flip as u64, &mut buf).unwrap_err();
            assert!(matches!(err, Error::RangeMismatch { .. }), "{err}");
            // Nothing unchecked is kept for the next read.
            assert!(r.read_at(flip as u64, &mut buf).is_err());
            let other = if group == 0 { g + 1 } else { 0 };
            r.read_at(other as u64, &mut buf).unwrap();
        }
        // A flipped byte in every pair of the outboard: caught by a read
        // whose path uses it.
        for pair in 0..outboard.len() / PAIR_LEN as usize {
            let mut bad = outboard.clone();
            bad[pair * 64 + 5] ^= 0x40;
            let r = Checked { outboard: bad, ..checked(&bytes, &outboard) };
            let mut whole = vec![0; bytes.len()];
            assert!(matches!(r.read_at(0, &mut whole), Err(Error::RangeMismatch { .. })), "pair {pair}");
        }
    }

    proptest::proptest! {
        /// Whatever is changed in the file and its outboard, a read that
        /// succeeds returns exactly the committed bytes.
        #[test]
        fn no_changed_byte_is_ever_returned(
            size in 0usize..(6 * GROUP_BYTES as usize),
            data_flips in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 0..3),
            outboard_flips in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 0..3),
            reads in proptest::collection::vec((proptest::num::usize::ANY, 0usize..40_000), 1..8),
        ) {
            let original = data(size);
            let mut outboard = Vec::new();
            let root = write(&original[..], size as u64, &mut outboard).unwrap();
            let mut changed = original.clone();
            for (at, x) in data_flips.iter().filter(|_| size > 0) {
                changed[at % size] ^= x;
            }
            let n = outboard.len();
            for (at, x) in outboard_flips.iter().filter(|_| n > 0) {
                outboard[at % n] ^= x;
            }
            let r = Checked::new(changed, outboard, root, size as u64, "f", "f.obao").unwrap();
            for (at, len) in reads.into_iter().filter(|_| size > 0) {
                let at = at % size;
                let len = len.min(size - at);
                let mut buf = vec![0; len];
                if r.read_at(at as u64, &mut buf).is_ok() {
                    proptest::prop_assert_eq!(&buf[..], &original[at..at + len]);
                }
            }
        }
    }

    #[test]
    fn sizes_are_checked_first() {
        let bytes = data(3 * GROUP_BYTES as usize);
        let mut outboard = Vec::new();
        write(&bytes[..], bytes.len() as u64, &mut outboard).unwrap();
        let root = Digest::of(&bytes);
        let short = outboard[..outboard.len() - 1].to_vec();
        assert!(Checked::new(bytes.clone(), short, root, bytes.len() as u64, "f", "f.obao").is_err());
        assert!(Checked::new(bytes.clone(), outboard, root, bytes.len() as u64 + 1, "f", "f.obao").is_err());
    }
}
