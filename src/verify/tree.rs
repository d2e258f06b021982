//! The tree walk: every entry of the bundle directory must be part of the
//! layout (FORMAT.md §1, §10 step 3). Blob files are merge-joined with the
//! blob list shard by shard.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use walkdir::WalkDir;

use super::report::{Finding, FindingCode};
use super::Verifier;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::blob::BlobList;
use crate::format::manifest::Manifest;
use crate::format::{self, blob_path, is_shard_name};
use crate::fsutil::kind_of;
use crate::path::BundlePath;

/// A listed top-level file that was found with the right size.
pub(super) struct Present {
    pub path: PathBuf,
}

/// What the walk found.
pub(super) struct Walk {
    /// Listed top-level files present as regular files with the committed size.
    pub present: BTreeMap<String, Present>,
    /// Blob files found.
    pub blobs_found: u64,
    /// Sum of the sizes of every file found (blob files by their committed size
    /// where they are not stat'ed; their size is checked as they are read).
    pub bytes_total: u64,
}

/// Whether the walk enters a directory it just met.
#[derive(Debug, PartialEq, Eq)]
enum Descend {
    Yes,
    No,
}

/// The walk's state between entries.
struct State {
    walk: Walk,
    /// Names met at the top level.
    seen: BTreeSet<String>,
    /// Shard directories entered.
    visited: [bool; 256],
    shard: Shard,
}

/// The shard being walked: its name, and the blobs found in it with their sizes when stat'ed.
#[derive(Default)]
struct Shard {
    name: String,
    found: Vec<(Digest, Option<u64>)>,
}

impl Verifier<'_> {
    /// Walks the tree without following links. Blob files are collected
    /// shard by shard, sorted, and merge-joined with the list's records for
    /// that shard (a contiguous range of the sorted list), so memory stays
    /// bounded by the largest shard. In full mode blob files are not stat'ed
    /// here: they are sized as they are read.
    pub(super) fn walk_tree(&self, manifest: &Manifest, list: Option<&BlobList<'_>>) -> Result<Walk, Error> {
        let mut state = State {
            walk: Walk { present: BTreeMap::new(), blobs_found: 0, bytes_total: 0 },
            seen: BTreeSet::new(),
            visited: [false; 256],
            shard: Shard::default(),
        };
        let mut it = WalkDir::new(self.root).min_depth(1).follow_links(false).into_iter();
        loop {
            let next = it.next();
            // Leaving a shard: join what it holds with what the list says it holds.
            if !state.shard.name.is_empty() && next.as_ref().is_none_or(|e| e.as_ref().is_ok_and(|e| e.depth() < 3)) {
                self.join_shard(&mut state.shard, list, &mut state.walk);
            }
            let Some(entry) = next else { break };
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let rel = e
                        .path()
                        .and_then(|p| p.strip_prefix(self.root).ok())
                        .map_or_else(|| ".".to_string(), |p| p.to_string_lossy().into_owned());
                    self.findings.push(Finding::new(&rel, FindingCode::Io, e));
                    continue;
                }
            };
            // Skipping applies to directories only: for a file it would skip the rest of its parent.
            if self.visit(&entry, manifest, &mut state) == Descend::No && entry.file_type().is_dir() {
                it.skip_current_dir();
            }
        }
        self.report_absent(manifest, list, &state.visited, &state.seen)?;
        Ok(state.walk)
    }

    /// Places one entry of the tree in the layout, or reports why it has no place.
    fn visit(&self, entry: &walkdir::DirEntry, manifest: &Manifest, state: &mut State) -> Descend {
        let ft = entry.file_type();
        let depth = entry.depth();
        let name = entry.file_name().to_string_lossy();
        let rel = match depth {
            1 => name.to_string(),
            2 => format!("{}/{name}", format::BLOB_DIR),
            _ => format!("{}/{}/{name}", format::BLOB_DIR, state.shard.name),
        };
        if depth == 3 && ft.is_file() {
            self.blob_entry(entry, &name, &rel, &mut state.shard);
            return Descend::Yes;
        }
        if depth == 1 {
            state.seen.insert(rel.clone());
        }
        let name_problem = match entry.file_name().to_str() {
            None => Some(Error::InvalidPath { name: rel.clone(), reason: "name is not UTF-8" }),
            Some(_) => BundlePath::parse(&rel).err(),
        };
        if let Some(problem) = name_problem {
            self.findings.error(&rel, problem);
            return Descend::No;
        }
        if ft.is_symlink() {
            self.findings.push(Finding::new(&rel, FindingCode::Symlink, "symbolic link (never followed)"));
            return Descend::Yes;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.findings.push(Finding::new(&rel, FindingCode::Io, e));
                return Descend::Yes;
            }
        };
        if let Some(kind) = kind_of(&meta).filter(|_| !ft.is_dir()) {
            self.findings.push(Finding::new(&rel, FindingCode::NotRegularFile, format!("{kind} (never opened)")));
            return Descend::Yes;
        }
        if ft.is_file() {
            state.walk.bytes_total = state.walk.bytes_total.saturating_add(meta.len());
        }
        match (depth, ft.is_dir()) {
            (1, true) if rel == format::BLOB_DIR => {}
            (1, false) if rel == format::MANIFEST_FILE || rel == format::BLOB_LIST_FILE => {}
            (1, false) if rel == format::SIGNATURE_FILE && manifest.signature.is_some() => {}
            (1, false) => match manifest.files.get(&rel) {
                Some(e) if e.size != meta.len() => self
                    .findings
                    .push(Finding::new(&rel, FindingCode::SizeMismatch, "size differs from the manifest").with_values(e.size, meta.len())),
                Some(_) => {
                    state.walk.present.insert(rel.clone(), Present { path: entry.path().to_path_buf() });
                }
                None => self.findings.push(Finding::new(&rel, FindingCode::Unlisted, "file is not listed in the manifest")),
            },
            (2, true) if is_shard_name(&name) => {
                state.shard.name = name.to_string();
                state.visited[usize::from(u8::from_str_radix(&name, 16).expect("shard names are hex"))] = true;
            }
            (2, true) => {
                self.findings.push(Finding::new(&rel, FindingCode::InvalidPath, "not a shard directory (two lowercase hex characters)"));
                return Descend::No;
            }
            _ => {
                let what = if ft.is_dir() { "directory is not part of the bundle layout" } else { "file is not part of the bundle layout" };
                self.findings.push(Finding::new(&rel, FindingCode::Unlisted, what));
                return Descend::No;
            }
        }
        Descend::Yes
    }

    /// One file inside a shard directory: its name must be a digest in the right shard.
    fn blob_entry(&self, entry: &walkdir::DirEntry, name: &str, rel: &str, shard: &mut Shard) {
        match Digest::parse(name) {
            Ok(hash) if name.starts_with(shard.name.as_str()) => {
                let size = match self.mode {
                    // (A lazy verification does not walk the tree.)
                    super::VerifyMode::Full | super::VerifyMode::Lazy => None,
                    super::VerifyMode::Fast => match entry.metadata() {
                        Ok(m) => Some(m.len()),
                        Err(e) => {
                            self.findings.push(Finding::new(rel, FindingCode::Io, e));
                            return;
                        }
                    },
                };
                shard.found.push((hash, size));
            }
            Ok(hash) => self.findings.push(
                Finding::new(rel, FindingCode::InvalidPath, "blob is in the wrong shard directory").with_values(blob_path(&hash), rel),
            ),
            Err(_) => self.findings.push(Finding::new(rel, FindingCode::InvalidPath, "blob name is not 64 lowercase hex characters")),
        }
    }

    /// Listed files never seen, the blob directory if absent, and every blob
    /// the list puts in a shard that was never entered.
    fn report_absent(
        &self,
        manifest: &Manifest,
        list: Option<&BlobList<'_>>,
        visited: &[bool; 256],
        seen: &BTreeSet<String>,
    ) -> Result<(), Error> {
        if !seen.contains(format::BLOB_DIR) {
            self.findings.push(Finding::new(
                format::BLOB_DIR,
                FindingCode::Missing,
                "the blob directory is absent (it is required, even empty)",
            ));
        }
        if let Some(list) = list {
            for byte in (0..=255u8).filter(|b| !visited[usize::from(*b)]) {
                for record in list.records(list.range_with_first_byte(byte)?).flatten() {
                    self.findings.push(Finding::new(&blob_path(&record.header.hash), FindingCode::Missing, "listed blob is absent"));
                }
            }
        }
        for name in manifest.files.keys().filter(|n| !seen.contains(*n)) {
            self.findings.push(Finding::new(name, FindingCode::Missing, "listed file is absent"));
        }
        Ok(())
    }

    /// Merge-joins the blobs found in one shard with the list's records for
    /// it. Without a readable list (already a finding) there is nothing to join with.
    fn join_shard(&self, shard: &mut Shard, list: Option<&BlobList<'_>>, walk: &mut Walk) {
        let name = std::mem::take(&mut shard.name);
        let mut found = std::mem::take(&mut shard.found);
        walk.blobs_found += found.len() as u64;
        let (Some(list), Ok(byte)) = (list, u8::from_str_radix(&name, 16)) else { return };
        found.sort_unstable_by_key(|(hash, _)| *hash);
        let records = match list.range_with_first_byte(byte) {
            Ok(range) => list.records(range).filter_map(Result::ok).collect::<Vec<_>>(),
            Err(e) => return self.findings.error(format::BLOB_LIST_FILE, e),
        };
        if found.is_empty() && records.is_empty() {
            // A shard holds at least one blob; one the list expects blobs in is reported through them.
            let rel = format!("{}/{name}", format::BLOB_DIR);
            self.findings.push(Finding::new(&rel, FindingCode::Unlisted, "empty shard directory (a shard holds at least one blob)"));
        }
        let (mut a, mut b) = (found.iter().peekable(), records.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((hash, size)), Some(record)) if *hash == record.header.hash => {
                    match size {
                        Some(size) if *size != record.stored_size => self.findings.push(
                            Finding::new(&blob_path(hash), FindingCode::SizeMismatch, "blob file size differs from the blob list")
                                .with_values(record.stored_size, size),
                        ),
                        Some(size) => walk.bytes_total = walk.bytes_total.saturating_add(*size),
                        // Not stat'ed: the size is checked as the blob is read.
                        None => walk.bytes_total = walk.bytes_total.saturating_add(record.stored_size),
                    }
                    a.next();
                    b.next();
                }
                (Some((hash, _)), Some(record)) if *hash > record.header.hash => {
                    self.findings.push(Finding::new(&blob_path(&record.header.hash), FindingCode::Missing, "listed blob is absent"));
                    b.next();
                }
                (Some((hash, _)), _) => {
                    self.findings.push(Finding::new(&blob_path(hash), FindingCode::Unlisted, "blob is not in the blob list"));
                    a.next();
                }
                (None, Some(record)) => {
                    self.findings.push(Finding::new(&blob_path(&record.header.hash), FindingCode::Missing, "listed blob is absent"));
                    b.next();
                }
            }
        }
    }
}
