//! Listing, removing and garbage-collecting (REMOTE.md §5–6).

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use uuid::Uuid;

use super::{bundle_key, manifest_key, parse_locator, LockKind, Remote, CONCURRENCY, LOCATOR_FILE, MAX_MANIFEST};
use crate::digest::Digest;
use crate::error::Error;
use crate::format::model::Metadata;
use crate::format::signature::SignatureFile;
use crate::format::{self, BlobList, Manifest, SignatureField};
use crate::fsutil::Contents;

/// One committed bundle of a remote.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteEntry {
    /// The bundle id.
    pub bundle_id: Uuid,
    /// The run it holds.
    pub run_id: Uuid,
    /// Workflow name.
    pub workflow: String,
    /// Workflow version.
    pub workflow_version: String,
    /// The run's status.
    pub status: String,
    /// When the bundle was created.
    pub created_at: String,
    /// Bytes of its files and blobs.
    pub size: u64,
    /// The signing key's id, if signed.
    pub signer: Option<String>,
}

/// What a gc removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcSummary {
    /// Committed bundles whose blobs were kept.
    pub bundles: u64,
    /// Blobs referenced and kept.
    pub blobs_kept: u64,
    /// Blobs no bundle references, removed.
    pub blobs_removed: u64,
    /// Bytes of those blobs.
    pub bytes_removed: u64,
    /// Objects of bundles never committed (killed pushes), removed.
    pub orphans_removed: u64,
    /// Stale locks removed.
    pub stale_locks_removed: u64,
    /// Nothing was removed.
    pub dry_run: bool,
}

/// The blob hash a key under `blobs/` names, if it is one.
fn blob_of(rel: &str) -> Option<Digest> {
    let name = rel.strip_prefix("blobs/")?;
    let (shard, hash) = name.split_once('/')?;
    let digest = Digest::parse(hash).ok()?;
    (shard.len() == 2 && hash.starts_with(shard)).then_some(digest)
}

impl Remote {
    /// The ids of committed bundles (those whose manifest exists).
    pub fn bundle_ids(&self) -> Result<Vec<Uuid>, Error> {
        let store = &self.store;
        let dirs = store.runtime.block_on(store.subdirs("bundles"))?;
        let ids: Vec<Uuid> = dirs.iter().filter_map(|d| crate::text::parse_uuid("bundle id", d).ok()).collect();
        let committed = store.runtime.block_on(
            futures::stream::iter(
                ids.into_iter().map(|id| async move { Ok::<_, Error>(store.head(&manifest_key(&id)).await?.map(|_| id)) }),
            )
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>(),
        )?;
        let mut ids: Vec<Uuid> = committed.into_iter().flatten().collect();
        ids.sort();
        Ok(ids)
    }

    /// A committed bundle's manifest and its checked blob list (the list's
    /// hash must be the one the manifest commits to).
    fn manifest_and_list(&self, id: &Uuid) -> Result<(Manifest, Vec<u8>, Contents), Error> {
        let store = &self.store;
        let bytes = store.runtime.block_on(store.get(&manifest_key(id), MAX_MANIFEST))?;
        let manifest = Manifest::parse(&bytes).map_err(|e| e.located(&format!("{}/{}", store.url, manifest_key(id))))?;
        let key = bundle_key(id, format::BLOB_LIST_FILE);
        let size = manifest.files.get(format::BLOB_LIST_FILE).map_or(0, |f| f.size);
        let list = store.runtime.block_on(store.get(&key, size))?;
        let expected = manifest.files.get(format::BLOB_LIST_FILE).map(|f| f.hash);
        let found = Digest::of(&list);
        if expected != Some(found) {
            let file = format!("{}/{key}", store.url);
            return Err(Error::HashMismatch { file, what: "content hash", expected: expected.unwrap_or_default(), found });
        }
        Ok((manifest, bytes, Contents::Memory(list)))
    }

    /// The key id `MANIFEST.sig` claims (checked only by verification).
    fn claimed_signer(&self, id: &Uuid) -> Result<Option<String>, Error> {
        let store = &self.store;
        let key = bundle_key(id, format::SIGNATURE_FILE);
        let bytes = match store.runtime.block_on(store.get(&key, 4096)) {
            Ok(bytes) => bytes,
            Err(Error::NotFound { .. } | Error::LimitExceeded { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let parsed = std::str::from_utf8(&bytes).ok().and_then(|t| SignatureFile::parse(t, std::path::Path::new(&key)).ok());
        Ok(parsed.map(|sig| sig.key_id.to_string()))
    }

    /// One line per committed bundle.
    pub fn list(&self) -> Result<Vec<RemoteEntry>, Error> {
        let store = &self.store;
        let mut out = Vec::new();
        for id in self.bundle_ids()? {
            let (manifest, manifest_bytes, list) = self.manifest_and_list(&id)?;
            let metadata_key = bundle_key(&id, format::METADATA_FILE);
            let metadata_size = manifest.files.get(format::METADATA_FILE).map_or(0, |f| f.size);
            let metadata_bytes = store.runtime.block_on(store.get(&metadata_key, metadata_size))?;
            let metadata: Metadata = serde_json::from_slice(&metadata_bytes)
                .map_err(|e| Error::Json { file: format!("{}/{metadata_key}", store.url), detail: e.to_string() })?;
            let blobs = BlobList::new(&list, format::BLOB_LIST_FILE, u64::from(u32::MAX))?;
            let mut size = manifest.files.values().map(|f| f.size).sum::<u64>() + manifest_bytes.len() as u64;
            for record in blobs.records(0..blobs.count()) {
                size += record?.stored_size;
            }
            let signer = match SignatureField::of(&manifest_bytes) {
                SignatureField::Signed => self.claimed_signer(&id)?,
                _ => None,
            };
            out.push(RemoteEntry {
                bundle_id: id,
                run_id: metadata.run_id,
                workflow: metadata.workflow_name,
                workflow_version: metadata.workflow_version,
                status: metadata.status.name().to_string(),
                created_at: manifest.created_at.to_string(),
                size,
                signer,
            });
        }
        Ok(out)
    }

    /// Removes bundle `id`: its manifest first (it stops being a bundle at
    /// once), then its other files. Its blobs stay until a gc finds them
    /// unreferenced. Returns the keys removed (or that would be).
    pub fn remove(&self, id: &Uuid, dry_run: bool) -> Result<Vec<String>, Error> {
        let store = &self.store;
        if store.runtime.block_on(store.head(&manifest_key(id)))?.is_none() {
            return Err(Error::NotFound { file: format!("bundle {id} in {}", store.url) });
        }
        let mut keys = vec![manifest_key(id)];
        let dir = format!("bundles/{}", id.hyphenated());
        keys.extend(store.runtime.block_on(store.list(&dir))?.into_iter().map(|m| m.rel).filter(|k| *k != manifest_key(id)));
        if !dry_run {
            for key in &keys {
                store.runtime.block_on(store.delete(key))?;
            }
        }
        Ok(keys)
    }

    /// Removes blobs no committed bundle references, objects of bundles
    /// never committed, and stale locks, under a gc lock (no push runs
    /// meanwhile; a running push makes gc fail with "busy").
    pub fn gc(&self, dry_run: bool) -> Result<GcSummary, Error> {
        let lock = self.acquire(LockKind::Gc)?;
        let result = self.collect(dry_run, &lock);
        let released = self.release(lock);
        let summary = result?;
        released?;
        Ok(summary)
    }

    fn collect(&self, dry_run: bool, lock: &super::lock::Held) -> Result<GcSummary, Error> {
        let store = &self.store;
        let mut summary = GcSummary { dry_run, ..GcSummary::default() };
        let committed = self.bundle_ids()?;
        let mut referenced = HashSet::new();
        for id in &committed {
            let (_, _, list) = self.manifest_and_list(id)?;
            let count = BlobList::new(&list, format::BLOB_LIST_FILE, u64::from(u32::MAX))?.count();
            let key = bundle_key(id, LOCATOR_FILE);
            let locator = store.runtime.block_on(store.get(&key, u64::from(count) * 65))?;
            referenced.extend(parse_locator(&locator, count, &format!("{}/{key}", store.url))?);
        }
        summary.bundles = committed.len() as u64;
        let mut doomed = Vec::new();
        for meta in store.runtime.block_on(store.list("blobs"))? {
            match blob_of(&meta.rel) {
                Some(hash) if referenced.contains(&hash) => summary.blobs_kept += 1,
                _ => {
                    summary.blobs_removed += 1;
                    summary.bytes_removed += meta.size;
                    doomed.push(meta.rel);
                }
            }
        }
        let live: HashSet<String> = committed.iter().map(|id| format!("bundles/{}/", id.hyphenated())).collect();
        for meta in store.runtime.block_on(store.list("bundles"))? {
            if !live.iter().any(|dir| meta.rel.starts_with(dir.as_str())) {
                summary.orphans_removed += 1;
                doomed.push(meta.rel);
            }
        }
        let stale = self.stale_locks(lock)?;
        summary.stale_locks_removed = stale.len() as u64;
        doomed.extend(stale);
        if !dry_run {
            store.runtime.block_on(
                futures::stream::iter(doomed.iter().map(|k| store.delete(k))).buffer_unordered(CONCURRENCY).try_collect::<Vec<()>>(),
            )?;
        }
        Ok(summary)
    }
}
