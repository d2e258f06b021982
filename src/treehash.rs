//! BLAKE3 of a byte stream and, from the same pass, the hash of its
//! outboard (FORMAT.md §14): the chaining values of its chunk groups are
//! merged as BLAKE3 merges them, and each parent's pair is hashed as it is
//! made, which is post-order.
//!
//! `bao-tree` builds the same outboard from a reader it pulls; here the
//! bytes are pushed by the pass that decodes them, so that a verifier
//! hashes each byte once and still proves both the file and its outboard.
//! Tested equal to `bao-tree`'s outboard (`format::outboard` tests).

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};
use rayon::prelude::*;

use crate::digest::Digest;

/// Whole groups in one piece of input from which their chaining values are
/// computed on every core (a 1 MiB read holds 64).
const PARALLEL_GROUPS: usize = 16;

/// BLAKE3's non-root chaining value of the chunk group at `offset`.
fn chaining_value(offset: u64, group: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(group);
    h.finalize_non_root()
}

/// Hashes a stream of known size; see the module documentation.
pub struct TreeHasher {
    size: u64,
    group: usize,
    /// Bytes consumed so far.
    consumed: u64,
    /// The chunk group being filled (only when input arrives in pieces).
    partial: Vec<u8>,
    /// Complete subtrees not yet merged: (chaining value, groups under it).
    stack: Vec<(ChainingValue, u64)>,
    /// The outboard's bytes, hashed as they are made.
    outboard: blake3::Hasher,
    /// For a file of one group: the plain hash.
    whole: Option<blake3::Hasher>,
    root: Option<Digest>,
}

impl TreeHasher {
    /// For `size` bytes, with chunk groups of `2^group_chunk_log` chunks of 1 KiB.
    pub fn new(size: u64, group_chunk_log: u8) -> Self {
        let group = 1024usize << group_chunk_log;
        let whole = (size <= group as u64).then(blake3::Hasher::new);
        let root = (size == 0).then(|| Digest::of(b""));
        TreeHasher { size, group, consumed: 0, partial: Vec::new(), stack: Vec::new(), outboard: blake3::Hasher::new(), whole, root }
    }

    /// The next bytes of the stream (at most `size` in all).
    pub fn update(&mut self, mut bytes: &[u8]) {
        let take = bytes.len().min((self.size - self.consumed) as usize);
        bytes = &bytes[..take];
        if let Some(h) = &mut self.whole {
            h.update(bytes);
            self.consumed += bytes.len() as u64;
            if self.consumed == self.size {
                self.root = Some(Digest(*h.finalize().as_bytes()));
            }
            return;
        }
        while !bytes.is_empty() {
            let group_start = self.consumed - self.partial.len() as u64;
            let group_len = (self.size - group_start).min(self.group as u64) as usize;
            // Many whole groups at once: their chaining values on every core.
            let whole = bytes.len() / self.group;
            if self.partial.is_empty() && whole >= PARALLEL_GROUPS && self.size - group_start > (whole * self.group) as u64 {
                let (groups, rest) = bytes.split_at(whole * self.group);
                let cvs: Vec<ChainingValue> = groups
                    .par_chunks(self.group)
                    .enumerate()
                    .map(|(i, g)| chaining_value(group_start + (i * self.group) as u64, g))
                    .collect();
                for cv in cvs {
                    self.consumed += self.group as u64;
                    self.push_cv(cv);
                }
                bytes = rest;
                continue;
            }
            if self.partial.is_empty() && bytes.len() >= group_len {
                let (group, rest) = bytes.split_at(group_len);
                self.consumed += group_len as u64;
                self.push_group(group_start, group);
                bytes = rest;
                continue;
            }
            let n = (group_len - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..n]);
            self.consumed += n as u64;
            bytes = &bytes[n..];
            if self.partial.len() == group_len {
                let group = std::mem::take(&mut self.partial);
                self.push_group(group_start, &group);
                self.partial = group;
                self.partial.clear();
            }
        }
    }

    fn push_group(&mut self, offset: u64, group: &[u8]) {
        self.push_cv(chaining_value(offset, group));
    }

    /// The chaining value of the group just consumed.
    fn push_cv(&mut self, cv: ChainingValue) {
        self.stack.push((cv, 1));
        let last = self.consumed == self.size;
        // Merge equal complete subtrees as they form; at the end, merge what
        // is left from the right, the last merge being the root.
        while self.stack.len() >= 2 {
            let n = self.stack.len();
            let ((left, l), (right, r)) = (self.stack[n - 2], self.stack[n - 1]);
            if !last && l != r {
                break;
            }
            self.outboard.update(&left);
            self.outboard.update(&right);
            self.stack.truncate(n - 2);
            if last && self.stack.is_empty() {
                self.root = Some(Digest(*merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()));
                return;
            }
            self.stack.push((merge_subtrees_non_root(&left, &right, Mode::Hash), l + r));
        }
    }

    /// The hash of the stream and the hash of its outboard; None unless
    /// exactly `size` bytes were given.
    pub fn finish(&self) -> Option<(Digest, Digest)> {
        self.root.map(|root| (root, Digest(*self.outboard.finalize().as_bytes())))
    }
}
