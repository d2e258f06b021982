//! The outboards of a 1.1 bundle (FORMAT.md §14): each is hashed against the
//! manifest like any listed file, and rebuilt from the file it covers, to
//! prove that it is that file's outboard and not merely a committed one.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender};

use crate::digest::Digest;
use crate::format::{self, outboard, Manifest};
use crate::fsutil::{ReadAt, SeqReader};

use super::{EventFiles, Finding, FindingCode, Verifier};

impl Verifier<'_> {
    /// Hashes each present outboard and compares it with the outboard
    /// rebuilt from its file. A file that is not as committed is reported
    /// by its own check, so its outboard is then not compared.
    pub(super) fn check_outboards(&self, manifest: &Manifest, files: &EventFiles<'_>, tick: &(dyn Fn(u64) + Sync)) {
        for ((data_name, outboard_name), file) in format::OUTBOARDS.into_iter().zip(files.outboards) {
            let Some(file) = file else { continue };
            self.check_hash(outboard_name, file, manifest.files[outboard_name].hash, tick);
            let data = if data_name == format::EVENTS_FILE { files.log } else { files.index };
            if let Some(data) = data {
                self.compare_rebuilt(manifest, data_name, data, outboard_name);
            }
        }
    }

    pub(super) fn compare_rebuilt(&self, manifest: &Manifest, data_name: &str, data: &dyn ReadAt, outboard_name: &str) {
        match rebuild(data, data_name) {
            Ok((root, rebuilt)) => self.compare_outboard(manifest, data_name, outboard_name, root, rebuilt),
            Err(e) => self.findings.error(data_name, e),
        }
    }

    /// Compares an outboard rebuilt from a file whose hash is `root` with the committed one.
    pub(super) fn compare_outboard(&self, manifest: &Manifest, data_name: &str, outboard_name: &str, root: Digest, rebuilt: Digest) {
        let Some(entry) = manifest.files.get(outboard_name) else { return };
        let committed = entry.hash;
        if root == manifest.files[data_name].hash && rebuilt != committed {
            let message = format!("not the outboard of {data_name}: the outboard rebuilt from it hashes differently");
            self.findings.push(Finding::new(outboard_name, FindingCode::Inconsistent, message).with_values(rebuilt, committed));
        }
    }
}

/// The hash of `data` and the hash of its outboard, from one read of it.
pub(super) fn rebuild(data: &dyn ReadAt, name: &str) -> Result<(Digest, Digest), crate::error::Error> {
    let mut hasher = blake3::Hasher::new();
    let reader = SeqReader::new(data, name, 0, false);
    let root = outboard::write(reader, data.len(), &mut hasher).map_err(|e| crate::fsutil::stream_error(name, e))?;
    Ok((root, Digest::finished(&hasher)))
}

/// Calls `f` with a reader of `src` that hands every byte read to a second
/// thread, which rebuilds the outboard of the bytes (`size` of them) as
/// they stream by. Returns what `f` returned, and the hash and outboard hash
/// of the bytes when `f` read all of them.
pub(super) fn rebuild_while<T>(
    src: &mut (dyn Read + Send),
    size: u64,
    f: impl FnOnce(&mut (dyn Read + Send)) -> T,
) -> (T, Option<(Digest, Digest)>) {
    // A few windows in flight: memory stays bounded whatever the size.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::scope(|scope| {
        let builder = scope.spawn(move || {
            let mut hasher = blake3::Hasher::new();
            let root = outboard::write(Received { rx, chunk: Vec::new(), at: 0 }, size, &mut hasher).ok()?;
            Some((root, Digest::finished(&hasher)))
        });
        let mut tee = Tee { src, tx: Some(tx) };
        let out = f(&mut tee);
        drop(tee);
        (out, builder.join().ok().flatten())
    })
}

/// A reader that sends a copy of what it reads.
struct Tee<'a> {
    src: &'a mut (dyn Read + Send),
    tx: Option<SyncSender<Vec<u8>>>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.src.read(buf)?;
        if n > 0 && self.tx.as_ref().is_some_and(|tx| tx.send(buf[..n].to_vec()).is_err()) {
            // The builder stopped (the bytes were more than it was told): stop sending.
            self.tx = None;
        }
        Ok(n)
    }
}

/// The bytes a [`Tee`] sent, as a reader; the end when the sender is gone.
struct Received {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => (self.chunk, self.at) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
