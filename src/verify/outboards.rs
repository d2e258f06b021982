//! The outboards of a 1.1 bundle (FORMAT.md §14): each is hashed against the
//! manifest like any listed file, and the outboard made from the file it
//! covers, in the pass that hashes that file, must hash the same: it is
//! that file's outboard, not merely a committed one.

use crate::digest::Digest;
use crate::format::{self, outboard, Manifest};
use crate::fsutil::{self, ReadAt};

use super::{EventFiles, Finding, FindingCode, Verifier};

impl Verifier<'_> {
    /// Hashes each present outboard against the manifest. (That it is the
    /// outboard of its file is checked where the file is hashed, in the
    /// same pass: [`Verifier::outboard_agrees`].)
    pub(super) fn check_outboards(&self, manifest: &Manifest, files: &EventFiles<'_>, tick: &(dyn Fn(u64) + Sync)) {
        for ((_, outboard_name), file) in format::OUTBOARDS.into_iter().zip(files.outboards) {
            if let Some(file) = file {
                self.check_hash(outboard_name, file, manifest.files[outboard_name].hash, tick);
            }
        }
    }

    /// Compares the hash of the outboard made from a file that is as
    /// committed with the outboard's committed hash.
    pub(super) fn outboard_agrees(&self, data_name: &str, outboard_name: &str, made: Digest, committed: Digest) {
        if made != committed {
            let message = format!("not the outboard of {data_name}: the outboard made from it hashes differently");
            self.findings.push(Finding::new(outboard_name, FindingCode::Inconsistent, message).with_values(made, committed));
        }
    }

    /// Hashes a listed file (the index) against the manifest, and, when its
    /// outboard is listed, the outboard made from it in the same pass.
    pub(super) fn check_hash_and_outboard(&self, manifest: &Manifest, name: &str, src: &dyn ReadAt, tick: &(dyn Fn(u64) + Sync)) {
        let Some((outboard_name, committed)) = manifest.outboard_entry(name) else {
            return self.check_hash(name, src, manifest.files[name].hash, tick);
        };
        match fsutil::hash_with_outboard(src, name, tick, outboard::GROUP_CHUNK_LOG) {
            Ok((root, made)) => {
                if self.committed(name, manifest.files[name].hash, root) {
                    self.outboard_agrees(name, outboard_name, made, committed);
                }
            }
            Err(e) => self.findings.error(name, e),
        }
    }
}
