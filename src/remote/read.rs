//! Reading one remote bundle without downloading it (REMOTE.md §7): small
//! files whole (each checked against the manifest), large ones by ranged
//! GETs through the index and the blob list.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use super::store::Store;
use super::{blob_key, bundle_key, manifest_key, parse_locator, Remote, LOCATOR_FILE};
use crate::digest::Digest;
use crate::error::Error;
use crate::format::blob::decode_blob_to;
use crate::format::event::Event;
use crate::format::model::{Dag, Metadata, Snapshot};
use crate::format::outboard::Checked;
use crate::format::signature::{self, SignatureSource};
use crate::format::{self, BlobHeader, BlobList, IndexReader, LogReader, Manifest, SignatureField};
use crate::fsutil::ReadAt;
use crate::limits::Limits;
use crate::{PublicKey, SignatureStatus};

/// Bytes fetched per ranged GET; pages are kept for the life of the reader
/// (at most `MAX_PAGES` of them).
const PAGE: u64 = 16 << 10;
const MAX_PAGES: usize = 256;

/// A remote object seen as [`ReadAt`]: reads become ranged GETs of whole
/// pages, so a binary search ends inside pages already fetched.
struct Ranged<'r> {
    store: &'r Store,
    key: String,
    size: u64,
    pages: Mutex<HashMap<u64, bytes::Bytes>>,
}

/// The log or the index of a remote bundle, read by range.
type EventsFile<'r> = crate::format::outboard::Source<Ranged<'r>>;

impl<'r> Ranged<'r> {
    fn new(store: &'r Store, key: String, size: u64) -> Self {
        Ranged { store, key, size, pages: Mutex::new(HashMap::new()) }
    }

    fn page(&self, n: u64) -> Result<bytes::Bytes, Error> {
        if let Some(p) = self.pages.lock().unwrap_or_else(|p| p.into_inner()).get(&n) {
            return Ok(p.clone());
        }
        let range = n * PAGE..((n + 1) * PAGE).min(self.size);
        let expected = range.end - range.start;
        let bytes = self.store.runtime.block_on(self.store.get_range(&self.key, range))?;
        if bytes.len() as u64 != expected {
            let file = format!("{}/{}", self.store.url, self.key);
            return Err(Error::SizeMismatch { file, what: "ranged read", expected, found: bytes.len() as u64 });
        }
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        if pages.len() >= MAX_PAGES {
            pages.clear();
        }
        pages.insert(n, bytes.clone());
        Ok(bytes)
    }
}

impl ReadAt for Ranged<'_> {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let page = self.page(at / PAGE)?;
            let start = (at % PAGE) as usize;
            let n = (buf.len() - done).min(page.len().saturating_sub(start));
            if n == 0 {
                return Err(Error::truncated(&self.key, "ranged read", at, (buf.len() - done) as u64, 0));
            }
            buf[done..done + n].copy_from_slice(&page[start..start + n]);
            done += n;
        }
        Ok(())
    }
}

/// A remote bundle opened for reading: its manifest, signature and small
/// documents were fetched and checked; events and blobs are read on demand.
pub struct RemoteBundle<'r> {
    remote: &'r Remote,
    id: Uuid,
    manifest: Manifest,
    signature: SignatureStatus,
    metadata: Metadata,
    dag: Dag,
    limits: Limits,
}

impl Remote {
    /// Opens bundle `id` for reading: fetches its manifest and signature
    /// (checked against `trusted`), `metadata.json` and `dag.json` (each
    /// checked against the manifest's hash).
    pub fn open_bundle(&self, id: &Uuid, trusted: &[PublicKey], limits: Limits) -> Result<RemoteBundle<'_>, Error> {
        let store = &self.store;
        let bytes = store.runtime.block_on(store.get(&manifest_key(id), super::MAX_MANIFEST)).map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound { file: format!("bundle {id} in {}", store.url) },
            other => other,
        })?;
        let manifest = Manifest::parse(&bytes).map_err(|e| e.located(&format!("{}/{}", store.url, manifest_key(id))))?;
        let sig = match store.runtime.block_on(store.get(&bundle_key(id, format::SIGNATURE_FILE), 4096)) {
            Ok(b) => Some(b),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let declared = SignatureField::of(&bytes);
        let signature =
            signature::check(&SignatureSource::Entry(sig.as_deref()), &bytes, &declared, Some((manifest.bundle_id, false)), trusted);
        let metadata = json(store, id, &manifest, format::METADATA_FILE)?;
        let dag = json(store, id, &manifest, format::DAG_FILE)?;
        Ok(RemoteBundle { remote: self, id: *id, manifest, signature, metadata, dag, limits })
    }
}

/// A bundle's whole file, checked against the manifest's hash.
fn checked_file(store: &Store, id: &Uuid, manifest: &Manifest, file: &str) -> Result<Vec<u8>, Error> {
    let location = format!("{}/{id}/{file}", store.url);
    let entry = manifest.files.get(file).ok_or_else(|| Error::NotFound { file: location.clone() })?;
    let bytes = store.runtime.block_on(store.get(&bundle_key(id, file), entry.size))?;
    let found = Digest::of(&bytes);
    if found != entry.hash {
        return Err(Error::HashMismatch { file: location, what: "content hash", expected: entry.hash, found });
    }
    Ok(bytes)
}

fn json<T: serde::de::DeserializeOwned>(store: &Store, id: &Uuid, manifest: &Manifest, file: &str) -> Result<T, Error> {
    let bytes = checked_file(store, id, manifest, file)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Json { file: format!("{}/{id}/{file}", store.url), detail: e.to_string() })
}

impl RemoteBundle<'_> {
    fn store(&self) -> &Store {
        &self.remote.store
    }

    fn size_of(&self, file: &str) -> Result<u64, Error> {
        self.manifest.files.get(file).map(|f| f.size).ok_or_else(|| Error::NotFound { file: format!("{}: {file}", self.location()) })
    }

    /// `URL/<bundle-id>`.
    pub fn location(&self) -> String {
        format!("{}/{}", self.store().url, self.id)
    }

    /// A whole file, checked against the manifest's hash.
    pub fn file(&self, file: &str) -> Result<Vec<u8>, Error> {
        checked_file(self.store(), &self.id, &self.manifest, file)
    }

    fn ranged(&self, file: &str) -> Result<Ranged<'_>, Error> {
        Ok(Ranged::new(self.store(), bundle_key(&self.id, file), self.size_of(file)?))
    }

    /// The log or the index by range: each page read is checked through
    /// the file's outboard (also read by range) in a 1.1 bundle
    /// (FORMAT.md §14); unchecked in a 1.0 bundle.
    fn events_file(&self, file: &'static str) -> Result<EventsFile<'_>, Error> {
        let data = self.ranged(file)?;
        let Some((outboard, _)) = self.manifest.outboard_entry(file) else {
            return Ok(EventsFile::Whole(data));
        };
        let entry = &self.manifest.files[file];
        let checked = Checked::new(data, self.ranged(outboard)?, entry.hash, entry.size, file, outboard)?;
        Ok(EventsFile::Checked(Box::new(checked)))
    }

    /// True when the events read are checked against the manifest as they
    /// are read (a 1.1 bundle, which has outboards).
    pub fn checks_reads(&self) -> bool {
        self.manifest.has_outboards()
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The signature's state against the trusted keys given.
    pub fn signature(&self) -> &SignatureStatus {
        &self.signature
    }

    /// `metadata.json` (checked).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// `dag.json` (checked).
    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    /// The snapshot (checked), if the bundle has one.
    pub fn snapshot(&self) -> Result<Option<Snapshot>, Error> {
        if !self.manifest.files.contains_key(format::SNAPSHOT_FILE) {
            return Ok(None);
        }
        let bytes = self.file(format::SNAPSHOT_FILE)?;
        Snapshot::decode_file(&bytes, format::SNAPSHOT_FILE).map(Some)
    }

    /// Events `from..from + limit`, read by range through the index, their
    /// bytes checked as they are read where [`RemoteBundle::checks_reads`].
    pub fn events(&self, from: u32, limit: u32) -> Result<Vec<Event>, Error> {
        self.with_log(|index, log| {
            let end = from.saturating_add(limit).min(index.count());
            (from..end).map(|p| log.event_at(index.offset(p)?.expect("in range"))).collect()
        })
    }

    /// The event with `id` and its position, through the index.
    pub fn event_by_id(&self, id: &Uuid) -> Result<Option<(u32, Event)>, Error> {
        self.with_log(|index, log| {
            index.position_of_id(id)?.map(|p| Ok((p, log.event_at(index.offset(p)?.expect("in range"))?))).transpose()
        })
    }

    /// The first event at logical time `time`.
    pub fn event_at_time(&self, time: u64) -> Result<Option<(u32, Event)>, Error> {
        self.with_log(|index, log| {
            index.position_of_time(time)?.map(|p| Ok((p, log.event_at(index.offset(p)?.expect("in range"))?))).transpose()
        })
    }

    /// Calls `f` with the index and the log, read by range.
    fn with_log<T>(&self, f: impl FnOnce(&IndexReader<'_>, &LogReader<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let (idx, log) = (self.events_file(format::INDEX_FILE)?, self.events_file(format::EVENTS_FILE)?);
        let index = IndexReader::new(&idx, format::INDEX_FILE)?;
        let log = LogReader::new(&log, format::EVENTS_FILE, &self.limits)?;
        f(&index, &log)
    }

    /// A blob's content, found through the list and the locator, and
    /// checked against its content hash before it is returned.
    pub fn blob(&self, hash: &Digest) -> Result<Option<Vec<u8>>, Error> {
        let list_file = self.ranged(format::BLOB_LIST_FILE)?;
        let list = BlobList::new(&list_file, format::BLOB_LIST_FILE, self.limits.max_blobs)?;
        let Some((lo, record)) = list.find_with_position(hash)? else { return Ok(None) };
        if record.header.size > self.limits.max_blob_size {
            return Err(Error::limit(&format::blob_path(hash), "blob content size", self.limits.max_blob_size, record.header.size));
        }
        let store = self.store();
        let locator_key = bundle_key(&self.id, LOCATOR_FILE);
        let line = store.runtime.block_on(store.get_range(&locator_key, u64::from(lo) * 65..u64::from(lo) * 65 + 65))?;
        let stored = parse_locator(&line, 1, &format!("{}/{locator_key}", store.url))?[0];
        let file = store.runtime.block_on(store.get(&blob_key(&stored), record.stored_size))?;
        let rel = format::blob_path(hash);
        if file.len() as u64 != record.stored_size || file.len() < format::BLOB_HEADER_LEN {
            let found = file.len() as u64;
            return Err(Error::SizeMismatch {
                file: format!("{}/{rel}", self.location()),
                what: "size",
                expected: record.stored_size,
                found,
            });
        }
        let header = BlobHeader::decode(&file[..format::BLOB_HEADER_LEN], &rel)?;
        if header != record.header {
            return Err(Error::inconsistent(&rel, "blob header", format!("{:?}", record.header), format!("{header:?}")));
        }
        let mut content = Vec::with_capacity(record.header.size as usize);
        decode_blob_to(&header, &mut &file[format::BLOB_HEADER_LEN..], &mut content, &rel)?;
        Ok(Some(content))
    }

    /// Number of events (from the index header).
    pub fn event_count(&self) -> Result<u32, Error> {
        let idx = self.events_file(format::INDEX_FILE)?;
        Ok(IndexReader::new(&idx, format::INDEX_FILE)?.count())
    }
}
