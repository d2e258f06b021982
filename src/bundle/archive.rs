//! The single-file form of a bundle (`schemas/ARCHIVE.md`): pack a bundle
//! into one `.cath-bundle.tar.zst`, unpack one, and read one in a single
//! streaming pass.
//!
//! Nothing unverified is emitted. `pack` checks the directory's structure,
//! then streams the canonical tar both into the compressor and into the
//! archive verifier; the archive is placed only if the stream it holds
//! verifies. `unpack` extracts into a locked staging directory beside the
//! output while it verifies, and moves it into place only if the archive
//! verifies. A failure or a kill leaves nothing at the output.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::loader::{BundleLoader, LoadError, ReplayBundle};
use super::replace;
use crate::digest::Digest;
use crate::error::Error;
use crate::format::archive::{self, ChunkReader, ChunkSender, EntryKind, TarWriter};
use crate::format::blob::{BlobList, BlobRecord};
use crate::format::event::{Encoding, Event};
use crate::format::index::IndexReader;
use crate::format::manifest::Manifest;
use crate::format::model::{Dag, Metadata, Snapshot};
use crate::format::{self, blob_path};
use crate::fsutil::{self, Existing, ReadFile};
use crate::verify::archive::{ArchiveVerified, EntrySink, Taps};
use crate::verify::EventTap;
use crate::verify::{Verifier, VerifyMode, VerifyReport};

/// Tar bytes handed to the compressor and the verifier at a time.
const TEE_CHUNK: usize = 1 << 20;
/// Chunks of the tar stream waiting for the compressor.
const TEE_CHUNKS_IN_FLIGHT: usize = 4;

/// How [`BundleLoader::pack`] writes an archive.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PackOptions {
    /// zstd level (1–19); 3 by default.
    pub level: i32,
    /// Replace an existing output, if it is provably an archive of a bundle.
    pub overwrite: bool,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions { level: archive::DEFAULT_LEVEL, overwrite: false }
    }
}

impl PackOptions {
    /// Sets the zstd level.
    pub fn level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// Allows replacing an existing archive.
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }
}

/// What [`BundleLoader::pack`] wrote.
#[derive(Debug)]
#[non_exhaustive]
pub struct PackSummary {
    /// Size of the archive file.
    pub archive_size: u64,
    /// Size of the tar stream it holds.
    pub tar_size: u64,
    /// The verification of the stream written into the archive.
    pub report: VerifyReport,
}

/// What a caller watches while an archive is read ([`BundleLoader::open_archive`]).
/// Everything seen is unverified until `open_archive` returns `Ok`.
#[derive(Default)]
pub struct ArchiveWatch<'a> {
    on_event: Option<EventTap<'a>>,
    blob: Option<(Digest, &'a mut (dyn Write + Send))>,
}

impl<'a> ArchiveWatch<'a> {
    /// Nothing watched.
    pub fn new() -> Self {
        Self::default()
    }

    /// `f` sees every event (with its position) that passed the event rules.
    pub fn events(mut self, f: &'a (dyn Fn(u32, &Event) + Sync)) -> Self {
        self.on_event = Some(f);
        self
    }

    /// The content of blob `hash` is written to `out` as it is checked.
    pub fn blob(mut self, hash: Digest, out: &'a mut (dyn Write + Send)) -> Self {
        self.blob = Some((hash, out));
        self
    }
}

/// A verified archive: its documents and summaries. Events and blobs
/// stream by only once; watch them with [`ArchiveWatch`], or unpack the
/// archive for random access.
pub struct ArchiveBundle {
    path: PathBuf,
    report: VerifyReport,
    verified: ArchiveVerified,
}

impl ArchiveBundle {
    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The verification report.
    pub fn report(&self) -> &VerifyReport {
        &self.report
    }
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.verified.docs.manifest
    }
    /// The manifest's exact bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.verified.docs.manifest_bytes
    }
    /// The run metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.verified.docs.metadata
    }
    /// The workflow source.
    pub fn workflow(&self) -> &str {
        &self.verified.docs.workflow
    }
    /// The DAG.
    pub fn dag(&self) -> &Dag {
        &self.verified.docs.dag
    }
    /// The snapshot, if the bundle has one.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.verified.docs.snapshot.as_ref()
    }
    /// How the log's records are encoded.
    pub fn encoding(&self) -> Encoding {
        self.verified.encoding
    }
    /// Number of events.
    pub fn event_count(&self) -> u32 {
        self.index().map_or(0, |ix| ix.count())
    }
    /// The logical time of event `position`, from the index.
    pub fn event_time(&self, position: u32) -> Result<Option<u64>, Error> {
        self.index()?.time(position)
    }
    /// The record of blob `hash`, if the bundle holds it.
    pub fn blob_record(&self, hash: &Digest) -> Result<Option<BlobRecord>, Error> {
        BlobList::new(&self.verified.blob_list, format::BLOB_LIST_FILE, u64::MAX)?.find(hash)
    }

    /// Every blob record, in hash order.
    pub fn blob_records(&self) -> impl Iterator<Item = Result<BlobRecord, Error>> + '_ {
        let list = BlobList::new(&self.verified.blob_list, format::BLOB_LIST_FILE, u64::MAX);
        let count = list.as_ref().map_or(0, |l| l.count());
        list.ok().into_iter().flat_map(move |l| l.records(0..count))
    }

    fn index(&self) -> Result<IndexReader<'_>, Error> {
        IndexReader::new(&self.verified.index, format::INDEX_FILE)
    }
}

impl<'p> BundleLoader<'p> {
    /// Verifies the archive at `path` in one pass (always fully: an
    /// archive is read whole) while `taps` watch it.
    pub(crate) fn verify_archive(&self, path: &Path, taps: Taps<'_>) -> Result<(VerifyReport, Option<ArchiveVerified>), Error> {
        let name = path.display().to_string();
        let file = ReadFile::open(path, &name)?;
        let stream = ChunkReader::decompress(file.into_read(), &name);
        Verifier::new(path, VerifyMode::Full, self.limits_ref(), self.trusted_ref(), self.progress_ref())
            .run_archive(Box::new(stream), taps)
    }

    /// Verifies the archive at `path` in one streaming pass, showing events
    /// and a blob to `watch` as they go by, and returns its documents. Any
    /// finding is [`LoadError::Invalid`]; an unacceptable signature is
    /// [`LoadError::Signature`]. What `watch` saw is trusted only on `Ok`.
    pub fn open_archive(&self, path: impl AsRef<Path>, watch: ArchiveWatch<'_>) -> Result<ArchiveBundle, LoadError> {
        let path = path.as_ref();
        let taps = Taps { sink: None, on_event: watch.on_event, blob: watch.blob };
        let (report, verified) = self.verify_archive(path, taps)?;
        let verified = self.accept(path, &report, verified)?;
        Ok(ArchiveBundle { path: path.to_path_buf(), report, verified })
    }

    /// The verdict on a verified archive, under this loader's signature policy.
    fn accept<T>(&self, path: &Path, report: &VerifyReport, verified: Option<T>) -> Result<T, LoadError> {
        let Some(verified) = verified.filter(|_| report.is_valid()) else {
            return Err(LoadError::Invalid { path: path.to_path_buf(), report: Box::new(report.clone()) });
        };
        if self.enforces_signature() && !self.signature_acceptable(report) {
            return Err(LoadError::Signature { path: path.to_path_buf(), report: Box::new(report.clone()) });
        }
        Ok(verified)
    }

    /// Packs the bundle directory `bundle` into the archive `output`
    /// (whose name ends in `.cath-bundle.tar.zst`). The directory's layout
    /// is checked first; every byte written is then verified as it streams
    /// into the archive, and the archive is placed only if it verifies and
    /// its signature passes this loader's policy.
    pub fn pack(&self, bundle: impl AsRef<Path>, output: impl AsRef<Path>, options: PackOptions) -> Result<PackSummary, LoadError> {
        let (bundle, output) = (bundle.as_ref(), output.as_ref());
        let file_name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let top = archive::top_for_archive(&file_name)?;
        check_archive_output(output, options.overwrite)?;
        let (structure, _) = Verifier::new(bundle, VerifyMode::Fast, self.limits_ref(), self.trusted_ref(), None).run()?;
        if !structure.is_valid() {
            return Err(LoadError::Invalid { path: bundle.to_path_buf(), report: Box::new(structure) });
        }
        let parent = fsutil::parent_dir(output);
        fs::create_dir_all(&parent).map_err(|e| Error::output(&parent, e))?;
        let tmp = replace::staging_file(&parent, &file_name)?;
        let (tx, stream) = ChunkReader::channel();
        let (written, verdict) = std::thread::scope(|scope| {
            let verifier = scope.spawn(|| {
                Verifier::new(output, VerifyMode::Full, self.limits_ref(), self.trusted_ref(), self.progress_ref())
                    .run_archive(Box::new(stream), Taps::default())
            });
            let written = write_archive(bundle, &top, tmp.as_file(), options.level, self.limits_ref().max_document_size, tx);
            (written, verifier.join().expect("the verifier does not panic"))
        });
        let (report, verified) = verdict?;
        // A stream the verifier refused is the better explanation than the
        // producer's "nobody reads any more".
        self.accept(output, &report, verified.map(|_| ()))?;
        let tar_size = written?;
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644)).map_err(|e| Error::output(tmp.path(), e))?;
        tmp.as_file().sync_all().map_err(|e| Error::output(tmp.path(), e))?;
        let existing = if options.overwrite { Existing::Replace } else { Existing::Keep };
        let placed = fsutil::persist(tmp, output, existing)?;
        fsutil::sync_dir(&parent)?;
        let archive_size = placed.metadata().map_err(|e| Error::io(output, e))?.len();
        Ok(PackSummary { archive_size, tar_size, report })
    }

    /// Verifies the archive at `archive` while extracting it beside
    /// `output`, and moves the result to `output` only if it verifies and
    /// passes the signature policy. `overwrite` replaces only what is
    /// provably a bundle.
    pub fn unpack(&self, archive: impl AsRef<Path>, output: impl AsRef<Path>, overwrite: bool) -> Result<VerifyReport, LoadError> {
        let (archive, output) = (archive.as_ref(), output.as_ref());
        replace::place_staged(output, overwrite, |staging| self.unpack_into(archive, staging))
    }

    /// Unpacks the archive at `path` into a fresh temporary directory,
    /// verifying it, and opens the result.
    pub(super) fn load_archive(&self, path: &Path) -> Result<ReplayBundle, LoadError> {
        let tmp = std::env::temp_dir();
        let scratch = tempfile::Builder::new().prefix(".cath-open-").tempdir_in(&tmp).map_err(|e| Error::output(&tmp, e))?;
        let report = self.unpack_into(path, scratch.path())?;
        let (_, verified) = Verifier::new(scratch.path(), VerifyMode::Fast, self.limits_ref(), self.trusted_ref(), None).run()?;
        let verified = verified.ok_or_else(|| Error::input("archive", "the unpacked archive does not open"))?;
        ReplayBundle::open_unpacked(scratch, *self.limits_ref(), report, verified).map_err(LoadError::from)
    }

    fn unpack_into(&self, archive: &Path, staging: &Path) -> Result<VerifyReport, LoadError> {
        let mut sink = DirSink { root: staging.to_path_buf(), file: None };
        let (report, verified) = self.verify_archive(archive, Taps { sink: Some(&mut sink), ..Taps::default() })?;
        self.accept(archive, &report, verified)?;
        Ok(report)
    }
}

/// Refuses an existing archive output unless `overwrite`, and even then
/// unless it is provably an archive of a bundle: a regular file (not a
/// link) whose stream starts with a canonical top directory entry.
fn check_archive_output(output: &Path, overwrite: bool) -> Result<(), Error> {
    let refuse = |reason: String| Error::NotReplaceable { file: output.display().to_string(), reason };
    match fs::symlink_metadata(output) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(output, e)),
        Ok(_) if !overwrite => return Err(Error::Exists { file: output.display().to_string() }),
        Ok(meta) if !meta.is_file() => {
            let kind = fsutil::kind_of(&meta).map_or("special file", |k| k.name());
            return Err(refuse(format!("it is a {kind}, not an archive")));
        }
        Ok(_) => {}
    }
    let name = output.display().to_string();
    let file = ReadFile::open(output, &name)?;
    let mut head = [0u8; archive::BLOCK];
    let mut stream = ChunkReader::decompress(file.into_read(), &name);
    stream.read_exact(&mut head).map_err(|e| refuse(format!("it is not a zstd-compressed tar: {e}")))?;
    match archive::parse_header(&head, 0, &name) {
        Ok(h) if h.kind == EntryKind::Dir && h.name.strip_suffix('/').is_some_and(|t| archive::check_top(t).is_ok()) => Ok(()),
        _ => Err(refuse("it does not start like a bundle archive".into())),
    }
}

/// Sends the tar stream in chunks to the compressing thread.
struct Tee {
    compressor: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    written: u64,
}

impl Tee {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(TEE_CHUNK));
        // The compressor stopped: its error says why.
        self.compressor.send(chunk).map_err(|_| std::io::Error::other("the archive compressor stopped"))
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        self.written += buf.len() as u64;
        if self.buf.len() >= TEE_CHUNK {
            self.flush_chunk()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_chunk()
    }
}

/// Writes the canonical tar of the bundle at `bundle` into `out`,
/// compressed, and into `verifier`; returns the tar's size. The tar is
/// read and written on this thread and compressed on another (compression
/// is most of the work; the two overlap, as `tar | zstd` do).
fn write_archive(bundle: &Path, top: &str, out: &File, level: i32, max_document_size: u64, verifier: ChunkSender) -> Result<u64, Error> {
    let (tx, chunks) = sync_channel(TEE_CHUNKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        let compressing = scope.spawn(move || compress_chunks(chunks, out, level, verifier));
        let written = write_tar(bundle, top, max_document_size, Tee { compressor: tx, buf: Vec::with_capacity(TEE_CHUNK), written: 0 });
        // A compressor that failed explains a tar that could not be handed over.
        compressing.join().expect("the compressor does not panic")?;
        written
    })
}

/// Compresses the tar stream's `chunks` into `out`, in order, handing each
/// to `verifier` once it is compressed; the verifier sees the end of the
/// stream when the chunks end.
fn compress_chunks(chunks: Receiver<Vec<u8>>, out: &File, level: i32, verifier: ChunkSender) -> Result<(), Error> {
    let compression = |e| Error::Compression { file: "archive".into(), source: e };
    let mut compressor = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 20, out), level).map_err(compression)?;
    compressor.include_checksum(true).map_err(compression)?;
    for chunk in chunks {
        compressor.write_all(&chunk).map_err(|e| Error::output("archive", e))?;
        if verifier.send(Ok(chunk)).is_err() {
            // The verifier stopped: its report says why.
            return Err(Error::output("archive", std::io::Error::other("the archive verifier stopped reading")));
        }
    }
    drop(verifier);
    let mut buffered = compressor.finish().map_err(compression)?;
    buffered.flush().map_err(|e| Error::output("archive", e))
}

/// Writes the canonical tar of the bundle at `bundle` into `tee`; returns
/// its size.
fn write_tar(bundle: &Path, top: &str, max_document_size: u64, tee: Tee) -> Result<u64, Error> {
    let mut tar = TarWriter::new(tee, top)?;
    tar.dir("")?;
    // The manifest is read whole: the writer needs it to know what follows.
    let name = format::MANIFEST_FILE;
    let manifest_bytes = ReadFile::open(&bundle.join(name), name)?.read_all("file size", max_document_size)?;
    tar.file(name, manifest_bytes.len() as u64)?;
    tar.write_all(&manifest_bytes).map_err(|e| Error::output("archive", e))?;
    let manifest = Manifest::parse(&manifest_bytes)?;
    if manifest.signature.is_some() {
        match copy_file(&mut tar, bundle, format::SIGNATURE_FILE) {
            Err(Error::NotFound { .. }) => {}
            other => {
                other?;
            }
        }
    }
    for name in archive::FILE_ORDER {
        if manifest.files.contains_key(name) {
            copy_file(&mut tar, bundle, name)?;
        }
    }
    tar.dir(format::BLOB_DIR)?;
    let list_file = ReadFile::open(&bundle.join(format::BLOB_LIST_FILE), format::BLOB_LIST_FILE)?;
    let list = BlobList::new(&list_file, format::BLOB_LIST_FILE, u64::MAX)?;
    let mut shard = None;
    for record in list.records(0..list.count()) {
        let record = record?;
        let rel = blob_path(&record.header.hash);
        if shard != Some(record.header.hash.0[0]) {
            shard = Some(record.header.hash.0[0]);
            tar.dir(&rel[..format::BLOB_DIR.len() + 3])?;
        }
        copy_file(&mut tar, bundle, &rel)?;
    }
    let mut tee = tar.finish()?;
    tee.flush().map_err(|e| Error::output("archive", e))?;
    Ok(tee.written)
}

/// Copies one file of the bundle into the tar (no link followed).
fn copy_file<W: Write>(tar: &mut TarWriter<W>, bundle: &Path, rel: &str) -> Result<(), Error> {
    let file = ReadFile::open(&bundle.join(rel), rel)?;
    let size = file.size();
    tar.file(rel, size)?;
    let copied = std::io::copy(&mut file.into_read(), tar).map_err(|e| Error::output("archive", e))?;
    if copied != size {
        return Err(Error::Changed { file: rel.to_string(), offset: copied, expected: size });
    }
    Ok(())
}

/// Writes checked entries into a fresh staging directory. Names were
/// checked as bundle paths before they reach the sink, the directory is
/// new and private, and files are created exclusively: nothing outside it
/// is touched and nothing in it is overwritten.
struct DirSink {
    root: PathBuf,
    file: Option<(BufWriter<File>, PathBuf)>,
}

impl EntrySink for DirSink {
    fn dir(&mut self, rel: &str) -> Result<(), Error> {
        if rel.is_empty() {
            return Ok(());
        }
        let path = self.root.join(rel);
        fs::create_dir(&path).map_err(|e| Error::output(&path, e))
    }

    fn begin(&mut self, rel: &str, _size: u64) -> Result<(), Error> {
        let path = self.root.join(rel);
        let file = File::options().write(true).create_new(true).open(&path).map_err(|e| Error::output(&path, e))?;
        self.file = Some((BufWriter::with_capacity(256 << 10, file), path));
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Some((file, path)) = &mut self.file {
            file.write_all(bytes).map_err(|e| Error::output(&*path, e))?;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), Error> {
        if let Some((mut file, path)) = self.file.take() {
            file.flush().map_err(|e| Error::output(&path, e))?;
        }
        Ok(())
    }
}
