//! Replacing what is at an output path. `force` may replace only what is
//! provably a bundle: a real directory holding only regular files with
//! bundle names (no links, no special files, nothing else) and a manifest
//! that parses as ours. The old bundle is swapped aside atomically, and
//! removed only once the new one is in place and only if it still proves
//! to be a bundle.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::format::manifest::Manifest;
use crate::format::{self, is_shard_name};
use crate::fsutil::{self, ReadFile};
use crate::limits::Limits;

/// Builds a bundle directory with `fill` in a locked staging directory
/// beside `output`, and moves it to `output` only if `fill` succeeded
/// (`overwrite` replaces only what is provably a bundle). On any failure
/// the staging directory is removed and nothing is left at `output`.
pub(crate) fn place_staged<R, E: From<Error>>(output: &Path, overwrite: bool, fill: impl FnOnce(&Path) -> Result<R, E>) -> Result<R, E> {
    check_output(output, overwrite)?;
    let name = output.file_name().ok_or_else(|| Error::input("output path", format!("{} has no file name", output.display())))?;
    let parent = fsutil::parent_dir(output);
    fs::create_dir_all(&parent).map_err(|e| Error::output(&parent, e))?;
    let (staging, _lock) = staging_dir(&parent, &name.to_string_lossy())?;
    let placed = fill(&staging).and_then(|result| {
        fsutil::sync_filesystem(&staging)?;
        if let Some(kept) = move_into_place(&staging, output, overwrite)? {
            let reason = format!("the old bundle was moved to {} and changed since; it was kept", kept.display());
            return Err(Error::NotReplaceable { file: output.display().to_string(), reason }.into());
        }
        fsutil::sync_dir(&parent)?;
        Ok(result)
    });
    if placed.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    placed
}

/// Refuses an existing `output` unless `overwrite`, and even then unless it
/// is provably a bundle.
pub(crate) fn check_output(output: &Path, overwrite: bool) -> Result<(), Error> {
    match fs::symlink_metadata(output) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(output, e)),
        Ok(_) if !overwrite => Err(Error::Exists { file: output.display().to_string() }),
        Ok(_) => prove_bundle(output),
    }
}

fn refuse(dir: &Path, reason: impl Into<String>) -> Error {
    Error::NotReplaceable { file: dir.display().to_string(), reason: reason.into() }
}

/// Proves that `dir` is a bundle this tool may replace; says why not otherwise.
pub(crate) fn prove_bundle(dir: &Path) -> Result<(), Error> {
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        let kind = fsutil::kind_of(&meta).map_or("regular file", |k| k.name());
        return Err(refuse(dir, format!("it is a {kind}, not a bundle directory")));
    }
    let allowed_file = |name: &str| {
        name == format::MANIFEST_FILE || name == format::SIGNATURE_FILE || format::LISTED_FILES.iter().any(|(n, _)| *n == name)
    };
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
        match (ft.is_file(), ft.is_dir()) {
            (true, _) if allowed_file(&name) => {}
            (_, true) if name == format::BLOB_DIR => prove_blob_dir(dir, &entry.path())?,
            _ => return Err(refuse(dir, format!("it holds {name:?}, which is not part of a bundle"))),
        }
    }
    let manifest_path = dir.join(format::MANIFEST_FILE);
    let bytes = ReadFile::open(&manifest_path, &manifest_path.display().to_string())
        .and_then(|f| f.read_all("file size", Limits::default().max_document_size))
        .map_err(|e| refuse(dir, format!("no readable manifest: {e}")))?;
    let manifest = Manifest::parse(&bytes).map_err(|e| refuse(dir, format!("its manifest is not a bundle manifest: {e}")))?;
    if manifest.format != format::BUNDLE_FORMAT {
        return Err(refuse(dir, format!("its manifest's format is {:?}", manifest.format)));
    }
    Ok(())
}

fn prove_blob_dir(bundle: &Path, blobs: &Path) -> Result<(), Error> {
    for shard in fs::read_dir(blobs).map_err(|e| Error::io(blobs, e))? {
        let shard = shard.map_err(|e| Error::io(blobs, e))?;
        let name = shard.file_name().to_string_lossy().into_owned();
        if !shard.file_type().map_err(|e| Error::io(shard.path(), e))?.is_dir() || !is_shard_name(&name) {
            return Err(refuse(bundle, format!("its blob directory holds {name:?}, which is not a shard directory")));
        }
        for blob in fs::read_dir(shard.path()).map_err(|e| Error::io(shard.path(), e))? {
            let blob = blob.map_err(|e| Error::io(shard.path(), e))?;
            let leaf = blob.file_name().to_string_lossy().into_owned();
            let is_file = blob.file_type().map_err(|e| Error::io(blob.path(), e))?.is_file();
            if !is_file || crate::digest::Digest::parse(&leaf).is_err() || !leaf.starts_with(&name) {
                return Err(refuse(bundle, format!("its shard {name} holds {leaf:?}, which is not a blob file")));
            }
        }
    }
    Ok(())
}

/// Moves the finished directory `new` to `output`. An existing `output` is
/// proved to be a bundle again, swapped aside atomically where the file
/// system can (`RENAME_EXCHANGE`) or renamed aside first, and removed only
/// after the new one is in place, and only if it still proves to be a bundle
/// (otherwise it is left at the returned path).
pub(crate) fn move_into_place(new: &Path, output: &Path, overwrite: bool) -> Result<Option<PathBuf>, Error> {
    match fs::symlink_metadata(output) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No-replace: an empty directory that appeared since is not clobbered.
            fsutil::rename_noreplace(new, output)?;
            return Ok(None);
        }
        Err(e) => return Err(Error::io(output, e)),
        Ok(_) => check_output(output, overwrite)?,
    }
    let aside = if fsutil::exchange(new, output)? {
        new.to_path_buf()
    } else {
        let aside = aside_path(output);
        fs::rename(output, &aside).map_err(|e| Error::output(output, e))?;
        fs::rename(new, output).map_err(|e| Error::output(output, e))?;
        aside
    };
    if prove_bundle(&aside).is_ok() {
        fs::remove_dir_all(&aside).map_err(|e| Error::output(&aside, e))?;
        return Ok(None);
    }
    Ok(Some(aside))
}

/// Marks a directory or file being written beside its output:
/// `.<output name>.cath-tmp-<random>`.
pub(crate) const STAGING_MARKER: &str = ".cath-tmp-";

/// A fresh staging directory beside the output `name` in `parent`, locked
/// while it is in use; stale ones of killed writers are removed first.
pub(crate) fn staging_dir(parent: &Path, name: &str) -> Result<(PathBuf, fs::File), Error> {
    remove_stale_staging(parent, name);
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}{STAGING_MARKER}"))
        .tempdir_in(parent)
        .map_err(|e| Error::output(parent, e))?
        .keep();
    let lock = fs::File::open(&staging).map_err(|e| Error::output(&staging, e))?;
    fsutil::try_lock(&lock);
    Ok((staging, lock))
}

/// A fresh staging file beside the output `name` in `parent`, locked while
/// it is in use, removed when dropped.
pub(crate) fn staging_file(parent: &Path, name: &str) -> Result<tempfile::NamedTempFile, Error> {
    remove_stale_staging(parent, name);
    let tmp =
        tempfile::Builder::new().prefix(&format!(".{name}{STAGING_MARKER}")).tempfile_in(parent).map_err(|e| Error::output(parent, e))?;
    fsutil::try_lock(tmp.as_file());
    Ok(tmp)
}

/// Removes what killed builds of the same output left beside it: staging
/// directories that no live build holds (each live builder holds an advisory
/// lock on its staging directory), and old bundles swapped aside but not yet
/// removed, if they still prove to be bundles. Only names this tool gives
/// are considered. Best effort.
fn remove_stale_staging(parent: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    let staging = format!(".{name}{STAGING_MARKER}");
    let aside = format!(".{name}{}", ASIDE_MARKER);
    for entry in entries.flatten() {
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let path = entry.path();
        if file_name.starts_with(&staging) {
            // A directory (bundle, unpack) or a file (pack); both are locked while in use.
            let Ok(held) = fs::File::open(&path) else { continue };
            if fsutil::try_lock(&held) {
                let _ = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            }
        } else if file_name.starts_with(&aside) && prove_bundle(&path).is_ok() {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Marks an old bundle renamed aside: `.<output name>.cath-old-<pid>-<nonce>`.
pub(crate) const ASIDE_MARKER: &str = ".cath-old-";

fn aside_path(output: &Path) -> PathBuf {
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nonce: u32 = rand_u32();
    fsutil::parent_dir(output).join(format!(".{name}{ASIDE_MARKER}{}-{nonce:08x}", std::process::id()))
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bundle_is_replaceable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("x");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("MANIFEST.json"), b"{}").unwrap();
        assert!(matches!(prove_bundle(&dir), Err(Error::NotReplaceable { .. })));
        fs::write(dir.join("notes.txt"), b"mine").unwrap();
        let err = prove_bundle(&dir).unwrap_err();
        assert!(err.to_string().contains("notes.txt"), "{err}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(prove_bundle(&link), Err(Error::NotReplaceable { .. })));
    }
}
