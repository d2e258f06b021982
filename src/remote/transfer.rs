//! Push and pull (REMOTE.md §3): blobs first and only when missing, the
//! bundle's files next, its manifest last; a pull downloads into a staging
//! directory and places the bundle only once it verified.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use uuid::Uuid;

use rayon::prelude::*;

use super::{blob_key, bundle_key, manifest_key, parse_locator, LockKind, Remote, CONCURRENCY, LOCATOR_FILE, MAX_MANIFEST};
use crate::bundle::{BundleLoader, LoadError};
use crate::digest::Digest;
use crate::error::Error;
use crate::format::{self, blob_path, BlobList, Manifest};
use crate::fsutil::ReadFile;
use crate::path::BundlePath;
use crate::verify::VerifyReport;

/// Bytes of blob files a push holds in memory at once, at most (objects
/// below the multipart size are sent from memory in one PUT).
const UPLOAD_BUDGET: u64 = 128 << 20;

/// What a push did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushSummary {
    /// The bundle pushed.
    pub bundle_id: Uuid,
    /// Blobs uploaded.
    pub blobs_uploaded: u64,
    /// Blobs the remote held already (not uploaded).
    pub blobs_present: u64,
    /// Bytes uploaded (blobs and files).
    pub bytes_uploaded: u64,
    /// True when the remote held this exact bundle already.
    pub already_present: bool,
}

/// A writer that refuses to grow past what the manifest or list declared,
/// so a hostile remote cannot fill the disk.
struct Bounded<W: Write> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other("the object is larger than the size the bundle declares"));
        }
        self.left -= buf.len() as u64;
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Remote {
    /// Verifies the bundle at `bundle` (directory or archive) with `loader`
    /// and uploads it: blobs the remote does not hold, then its files, then
    /// its manifest, which makes it visible. `sent` is told of every byte
    /// uploaded.
    pub fn push(&self, loader: &BundleLoader<'_>, bundle: &Path, sent: &(dyn Fn(u64) + Sync)) -> Result<PushSummary, LoadError> {
        let local = loader.load(bundle)?;
        let id = local.manifest().bundle_id;
        let store = &self.store;
        let mut summary = PushSummary { bundle_id: id, ..PushSummary::default() };
        if let Ok(existing) = store.runtime.block_on(store.get(&manifest_key(&id), MAX_MANIFEST)) {
            if existing == local.manifest_bytes() {
                summary.already_present = true;
                return Ok(summary);
            }
            return Err(Error::Exists { file: format!("{}/{}", store.url, manifest_key(&id)) }.into());
        }
        let lock = self.acquire(LockKind::Push)?;
        let result = self.upload_all(&local, &mut summary, sent);
        let released = self.release(lock);
        result?;
        released?;
        Ok(summary)
    }

    fn upload_all(&self, local: &crate::ReplayBundle, summary: &mut PushSummary, sent: &(dyn Fn(u64) + Sync)) -> Result<(), Error> {
        let store = &self.store;
        let root = local.path();
        let id = local.manifest().bundle_id;
        let bytes = AtomicU64::new(0);
        let count = |n: u64| {
            bytes.fetch_add(n, Ordering::Relaxed);
            sent(n);
        };
        let records = local.blob_records().collect::<Result<Vec<_>, _>>()?;
        // Name each blob by its stored bytes (see the module docs).
        let stored: Vec<Digest> = records
            .par_iter()
            .map(|r| {
                let rel = blob_path(&r.header.hash);
                let file = ReadFile::open(&root.join(&rel), &rel)?;
                crate::fsutil::hash(&file, &rel, &|_| {})
            })
            .collect::<Result<_, Error>>()?;
        // Objects in flight, so that the bytes held in memory stay within the budget.
        let biggest = records.iter().map(|r| r.stored_size.min(super::store::MULTIPART_FROM)).max().unwrap_or(1).max(1);
        let in_flight = usize::try_from(UPLOAD_BUDGET / biggest).unwrap_or(CONCURRENCY).clamp(2, CONCURRENCY);
        let uploaded = store.runtime.block_on(
            futures::stream::iter(records.iter().zip(&stored).map(|(r, s)| {
                let (rel, key, count) = (blob_path(&r.header.hash), blob_key(s), &count);
                async move {
                    if store.head(&key).await? == Some(r.stored_size) {
                        return Ok::<bool, Error>(false);
                    }
                    store.upload(&key, &root.join(&rel), count).await?;
                    Ok(true)
                }
            }))
            .buffer_unordered(in_flight)
            .try_collect::<Vec<bool>>(),
        )?;
        summary.blobs_uploaded = uploaded.iter().filter(|u| **u).count() as u64;
        summary.blobs_present = uploaded.len() as u64 - summary.blobs_uploaded;
        let locator: Vec<u8> = stored.iter().flat_map(|d| format!("{d}\n").into_bytes()).collect();
        count(locator.len() as u64);
        store.runtime.block_on(store.put(&bundle_key(&id, LOCATOR_FILE), locator))?;
        let mut files: Vec<&str> = local.manifest().files.keys().map(String::as_str).collect();
        if root.join(format::SIGNATURE_FILE).exists() {
            files.push(format::SIGNATURE_FILE);
        }
        store.runtime.block_on(
            futures::stream::iter(files.iter().map(|f| {
                let (key, path, count) = (bundle_key(&id, f), root.join(f), &count);
                async move { store.upload(&key, &path, count).await }
            }))
            .buffer_unordered(4)
            .try_collect::<Vec<()>>(),
        )?;
        // The commit point: the bundle is visible from here on.
        store.runtime.block_on(store.put(&manifest_key(&id), local.manifest_bytes().to_vec()))?;
        count(local.manifest_bytes().len() as u64);
        summary.bytes_uploaded = bytes.load(Ordering::Relaxed);
        Ok(())
    }

    /// Downloads every object of bundle `id` into the empty directory
    /// `dir`, each no larger than the bundle declares it. Nothing is
    /// verified here.
    pub(crate) fn fetch(&self, id: &Uuid, dir: &Path, got: &(dyn Fn(u64) + Sync)) -> Result<(), Error> {
        let store = &self.store;
        let manifest_bytes = store.runtime.block_on(store.get(&manifest_key(id), MAX_MANIFEST)).map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound { file: format!("bundle {id} in {}", store.url) },
            other => other,
        })?;
        fs::write(dir.join(format::MANIFEST_FILE), &manifest_bytes).map_err(|e| Error::output(dir, e))?;
        let Ok(manifest) = Manifest::parse(&manifest_bytes) else { return Ok(()) }; // verification names the problem
        let mut wanted: Vec<(String, String, u64)> = Vec::new();
        for (name, entry) in &manifest.files {
            if BundlePath::parse(name).is_ok() && !name.contains('/') {
                wanted.push((bundle_key(id, name), name.clone(), entry.size));
            }
        }
        let sig = bundle_key(id, format::SIGNATURE_FILE);
        if let Some(size) = store.runtime.block_on(store.head(&sig))? {
            wanted.push((sig, format::SIGNATURE_FILE.to_string(), size.min(1 << 16)));
        }
        self.download_all(&wanted, dir, got)?;
        let list_path = dir.join(format::BLOB_LIST_FILE);
        let Ok(file) = ReadFile::open(&list_path, format::BLOB_LIST_FILE) else { return Ok(()) };
        let Ok(list) = BlobList::new(&file, format::BLOB_LIST_FILE, u64::from(u32::MAX)) else { return Ok(()) };
        let locator_key = bundle_key(id, LOCATOR_FILE);
        let locator = store.runtime.block_on(store.get(&locator_key, u64::from(list.count()) * 65))?;
        let stored = parse_locator(&locator, list.count(), &format!("{}/{locator_key}", store.url))?;
        let mut blobs = Vec::with_capacity(list.count() as usize);
        for (record, stored) in list.records(0..list.count()).zip(stored) {
            let record = record?;
            blobs.push((blob_key(&stored), blob_path(&record.header.hash), record.stored_size));
        }
        self.download_all(&blobs, dir, got)
    }

    /// Downloads `wanted` (key, local name, declared size) into `dir`. An
    /// object that is missing, or larger than declared, is left absent or
    /// cut at its declared size, for verification to name; any other
    /// failure stops the download.
    fn download_all(&self, wanted: &[(String, String, u64)], dir: &Path, got: &(dyn Fn(u64) + Sync)) -> Result<(), Error> {
        let store = &self.store;
        store.runtime.block_on(
            futures::stream::iter(wanted.iter().map(|(key, name, size)| async move {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| Error::output(parent, e))?;
                }
                let file = fs::File::create_new(&path).map_err(|e| Error::output(&path, e))?;
                let mut out = Bounded { inner: std::io::BufWriter::new(file), left: *size };
                let result = store.download(key, &mut out, &path.display().to_string()).await;
                out.flush().map_err(|e| Error::output(&path, e))?;
                match result {
                    Ok(n) => got(n),
                    Err(Error::NotFound { .. }) => fs::remove_file(&path).map_err(|e| Error::output(&path, e))?,
                    Err(Error::Output { source, .. }) if source.kind() == std::io::ErrorKind::Other => {}
                    Err(e) => return Err(e),
                }
                Ok::<(), Error>(())
            }))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }

    /// Verifies bundle `id` as [`BundleLoader::verify`] does: every object
    /// is downloaded once (in parallel, streamed to a private temporary
    /// directory under TMPDIR, removed afterwards) and checked. A missing or
    /// oversized object is a finding, not an error.
    pub fn verify(&self, loader: &BundleLoader<'_>, id: &Uuid, got: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport, Error> {
        let tmp = std::env::temp_dir();
        let scratch = tempfile::Builder::new().prefix(".cath-remote-").tempdir_in(&tmp).map_err(|e| Error::output(&tmp, e))?;
        self.fetch(id, scratch.path(), got)?;
        loader.verify(scratch.path())
    }

    /// Downloads bundle `id` into `output`, verified with `loader` before it
    /// is moved into place; `overwrite` replaces only what is provably a
    /// bundle. A bundle that does not verify leaves nothing at `output`.
    pub fn pull(
        &self,
        loader: &BundleLoader<'_>,
        id: &Uuid,
        output: &Path,
        overwrite: bool,
        got: &(dyn Fn(u64) + Sync),
    ) -> Result<VerifyReport, LoadError> {
        let placed = crate::bundle::place_staged(output, overwrite, |staging| {
            self.fetch(id, staging, got)?;
            Ok(loader.load(staging)?.report().clone())
        });
        placed.map_err(|e| match e {
            // Findings name the staging directory's files; say which remote bundle they are.
            LoadError::Invalid { report, .. } => LoadError::Invalid { path: format!("{}/{}", self.url(), id).into(), report },
            LoadError::Signature { report, .. } => LoadError::Signature { path: format!("{}/{}", self.url(), id).into(), report },
            other => other,
        })
    }
}
