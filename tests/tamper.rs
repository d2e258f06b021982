//! The tamper matrix: every changed, missing, added or swapped file of a
//! bundle is detected, and the finding names it.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use cathedral_bundle::{BundleLoader, FindingCode, VerifyMode, VerifyReport};
use support::{files_under, fixture, fixture_copy};

const FIXTURE: &str = "snapshot-zstd.cath-bundle";

fn verify(bundle: &Path) -> VerifyReport {
    BundleLoader::new().verify(bundle).unwrap()
}

/// Asserts a finding about exactly `path` with one of `codes`.
fn assert_named(report: &VerifyReport, path: &str, codes: &[FindingCode], case: &str) {
    assert!(!report.is_valid(), "{case}: not detected");
    assert!(
        report.findings.iter().any(|f| f.path == path && codes.contains(&f.code)),
        "{case}: no {codes:?} finding names {path}; findings: {:#?}",
        report.findings
    );
}

#[test]
fn pristine_fixture_is_valid() {
    let report = verify(&fixture(FIXTURE));
    assert!(report.is_valid(), "{:#?}", report.findings);
    assert_eq!(report.stats.blobs, 8);
}

#[test]
fn flipped_byte_in_every_file_and_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(FIXTURE, tmp.path());
    let files = files_under(&bundle);
    assert!(files.len() > 10);
    for file in &files {
        let path = bundle.join(file);
        let original = fs::read(&path).unwrap();
        // (An outboard of a file of one chunk group is empty: nothing to flip.)
        if original.is_empty() {
            continue;
        }
        for at in [0, original.len() / 2, original.len() - 1] {
            let mut bytes = original.clone();
            bytes[at] ^= 0x01;
            fs::write(&path, &bytes).unwrap();
            let report = verify(&bundle);
            let codes: &[FindingCode] = if file == "MANIFEST.json" {
                &[
                    FindingCode::InvalidJson,
                    FindingCode::Unsupported,
                    FindingCode::Malformed,
                    FindingCode::InvalidPath,
                    FindingCode::Missing,
                ]
            } else if file.starts_with("blobs/") {
                // A blob's header is checked field by field before its bytes are hashed.
                &[
                    FindingCode::HashMismatch,
                    FindingCode::BadMagic,
                    FindingCode::Unsupported,
                    FindingCode::Malformed,
                    FindingCode::Inconsistent,
                ]
            } else {
                &[FindingCode::HashMismatch]
            };
            // A flipped manifest byte may instead break a hash it lists: then the file it names is reported.
            if file == "MANIFEST.json" && report.findings.iter().all(|f| f.path != "MANIFEST.json") {
                assert!(!report.is_valid(), "manifest flip at {at} not detected");
            } else {
                assert_named(&report, file, codes, &format!("flip {file}@{at}"));
            }
            fs::write(&path, &original).unwrap();
        }
    }
    assert!(verify(&bundle).is_valid());
}

#[test]
fn deleted_file_or_blob_is_named_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(FIXTURE, tmp.path());
    for file in files_under(&bundle) {
        let path = bundle.join(&file);
        let original = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_named(&verify(&bundle), &file, &[FindingCode::Missing], &format!("delete {file}"));
        fs::write(&path, &original).unwrap();
    }
    assert!(verify(&bundle).is_valid());
}

#[test]
fn added_files_are_named_unlisted() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(FIXTURE, tmp.path());
    let a_blob = files_under(&bundle).into_iter().find(|f| f.starts_with("blobs/")).unwrap();
    let shard = &a_blob[..8];
    let fake_blob_name = format!("{}/{}{}", shard, &a_blob[6..8], "0".repeat(62));
    let cases = [
        "extra.txt".to_string(),
        "blobs/readme".to_string(),
        format!("{shard}/notes"),
        fake_blob_name,
        "blobs/ff/ff00000000000000000000000000000000000000000000000000000000000000".to_string(),
        ".hidden".to_string(),
    ];
    for case in &cases {
        let path = bundle.join(case);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"added").unwrap();
        assert_named(&verify(&bundle), case, &[FindingCode::Unlisted, FindingCode::InvalidPath], &format!("add {case}"));
        fs::remove_file(&path).unwrap();
        let _ = fs::remove_dir(bundle.join("blobs/ff"));
    }
    // A directory nobody listed, even empty.
    fs::create_dir(bundle.join("extra-dir")).unwrap();
    assert_named(&verify(&bundle), "extra-dir", &[FindingCode::Unlisted], "add directory");
    fs::remove_dir(bundle.join("extra-dir")).unwrap();
    assert!(verify(&bundle).is_valid());
}

#[test]
fn file_replaced_by_symlink_to_identical_copy_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(FIXTURE, tmp.path());
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    for (i, file) in files_under(&bundle).into_iter().enumerate() {
        let path = bundle.join(&file);
        let copy = outside.join(i.to_string());
        fs::rename(&path, &copy).unwrap();
        symlink(&copy, &path).unwrap();
        assert_named(&verify(&bundle), &file, &[FindingCode::Symlink], &format!("symlink {file}"));
        fs::remove_file(&path).unwrap();
        fs::rename(&copy, &path).unwrap();
    }
    assert!(verify(&bundle).is_valid());
}

#[test]
fn swapped_blobs_and_swapped_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(FIXTURE, tmp.path());
    let blobs: Vec<String> = files_under(&bundle).into_iter().filter(|f| f.starts_with("blobs/")).collect();
    let (a, b) = (&blobs[0], &blobs[1]);
    let (ba, bb) = (fs::read(bundle.join(a)).unwrap(), fs::read(bundle.join(b)).unwrap());
    fs::write(bundle.join(a), &bb).unwrap();
    fs::write(bundle.join(b), &ba).unwrap();
    let report = verify(&bundle);
    for name in [a, b] {
        assert_named(&report, name, &[FindingCode::HashMismatch, FindingCode::SizeMismatch, FindingCode::Inconsistent], "swap blobs");
    }
    fs::write(bundle.join(a), &ba).unwrap();
    fs::write(bundle.join(b), &bb).unwrap();

    // Two listed files swapped.
    let (m, d) = (fs::read(bundle.join("metadata.json")).unwrap(), fs::read(bundle.join("dag.json")).unwrap());
    fs::write(bundle.join("metadata.json"), &d).unwrap();
    fs::write(bundle.join("dag.json"), &m).unwrap();
    let report = verify(&bundle);
    assert_named(&report, "metadata.json", &[FindingCode::SizeMismatch, FindingCode::HashMismatch], "swap files");
    assert_named(&report, "dag.json", &[FindingCode::SizeMismatch, FindingCode::HashMismatch], "swap files");
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(FIXTURE, tmp.path());
    let blobs: Vec<String> = files_under(&bundle).into_iter().filter(|f| f.starts_with("blobs/")).collect();
    fs::remove_file(bundle.join(&blobs[0])).unwrap();
    fs::write(bundle.join("extra"), b"x").unwrap();
    let mut wf = fs::read(bundle.join("workflow.cath")).unwrap();
    wf[3] ^= 0x20;
    fs::write(bundle.join("workflow.cath"), &wf).unwrap();
    let report = verify(&bundle);
    assert_named(&report, &blobs[0], &[FindingCode::Missing], "all");
    assert_named(&report, "extra", &[FindingCode::Unlisted], "all");
    assert_named(&report, "workflow.cath", &[FindingCode::HashMismatch], "all");
    assert_eq!(report.findings.len(), 3, "{:#?}", report.findings);
    // Findings carry expected and found values.
    let wf_finding = report.findings.iter().find(|f| f.path == "workflow.cath").unwrap();
    assert!(wf_finding.expected.is_some() && wf_finding.found.is_some());
    // Loading refuses the bundle with the same report.
    match BundleLoader::new().load(&bundle) {
        Err(cathedral_bundle::LoadError::Invalid { report, .. }) => assert_eq!(report.findings.len(), 3),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn fast_mode_catches_structure_but_says_it_hashed_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(FIXTURE, tmp.path());
    let fast = BundleLoader::new().mode(VerifyMode::Fast);
    let report = fast.verify(&bundle).unwrap();
    assert!(report.is_valid());
    assert_eq!(report.stats.bytes_hashed, 0);
    // A same-size change escapes fast mode but not full mode.
    let mut wf = fs::read(bundle.join("workflow.cath")).unwrap();
    wf[0] ^= 0x01;
    fs::write(bundle.join("workflow.cath"), &wf).unwrap();
    assert!(fast.verify(&bundle).unwrap().is_valid());
    assert!(!verify(&bundle).is_valid());
    // A size change is caught by both.
    wf.push(b'\n');
    fs::write(bundle.join("workflow.cath"), &wf).unwrap();
    assert_named(&fast.verify(&bundle).unwrap(), "workflow.cath", &[FindingCode::SizeMismatch], "fast size");
}

/// Uncompressed blobs of up to 16 KiB are read whole and their contents
/// hashed together, many at once: a change to any of them is named, and
/// only it, whatever its size (either side of every BLAKE3 chunk boundary
/// and of 16 KiB) and its place among the blobs checked with it.
#[test]
fn changed_small_blobs_are_named_each_alone() {
    use support::fixture_gen::{build, fixed_options, noise, sample_run};
    let tmp = tempfile::tempdir().unwrap();
    let mut run = sample_run("small-blobs", 2, false, false);
    let sizes = [0, 1, 63, 64, 1023, 1024, 1025, 2048, 3000, 16 << 10, (16 << 10) + 1, 20_000];
    for i in 0..150 {
        let content = noise(&format!("blob/{i}"), sizes[i % sizes.len()]);
        run.blobs.push((content, cathedral_bundle::format::BlobFormat::Raw));
    }
    let bundle = tmp.path().join("b.cath-bundle");
    build(&run, &bundle, fixed_options("small-blobs", cathedral_bundle::Encoding::Postcard, None));
    assert!(verify(&bundle).is_valid());
    let blobs: Vec<String> = files_under(&bundle).into_iter().filter(|f| f.starts_with("blobs/")).collect();
    // (Empty blobs are one blob.)
    assert!(blobs.len() >= 130, "{}", blobs.len());
    let blob_findings = |report: &VerifyReport| {
        let mut named: Vec<(String, FindingCode)> =
            report.findings.iter().filter(|f| f.path.starts_with("blobs/")).map(|f| (f.path.clone(), f.code)).collect();
        named.sort();
        named
    };
    let header_codes = [FindingCode::BadMagic, FindingCode::Unsupported, FindingCode::Malformed, FindingCode::Inconsistent];
    for (n, name) in blobs.iter().enumerate() {
        let path = bundle.join(name);
        let original = fs::read(&path).unwrap();
        let content = original.len() - 56;
        // The last content byte, a byte of the header's content hash, the header's first byte; then one byte less.
        let mut changes: Vec<Vec<u8>> = Vec::new();
        if content > 0 {
            let mut b = original.clone();
            b[56 + content - 1] ^= 0x80;
            changes.push(b);
        }
        for at in [0, 40] {
            let mut b = original.clone();
            b[at] ^= 0x01;
            changes.push(b);
        }
        changes.push(original[..original.len() - 1].to_vec());
        for (k, bytes) in changes.iter().enumerate() {
            fs::write(&path, bytes).unwrap();
            let named = blob_findings(&verify(&bundle));
            assert_eq!(named.len(), 1, "blob {n} ({content} bytes), change {k}: {named:?}");
            let code = named[0].1;
            let expected = code == FindingCode::HashMismatch || code == FindingCode::SizeMismatch || header_codes.contains(&code);
            assert!(named[0].0 == *name && expected, "blob {n} ({content} bytes), change {k}: {named:?}");
            if k == 0 && content > 0 {
                assert_eq!(code, FindingCode::HashMismatch, "a changed content byte is a content hash mismatch");
            }
        }
        fs::write(&path, &original).unwrap();
        // Every 7th blob, the next blob changed too: both named, each once.
        if n % 7 == 0 && n + 1 < blobs.len() {
            let other = bundle.join(&blobs[n + 1]);
            let kept = fs::read(&other).unwrap();
            for (p, o) in [(&path, &original), (&other, &kept)] {
                let mut b = o.clone();
                let last = b.len() - 1;
                b[last] ^= 0x80;
                fs::write(p, b).unwrap();
            }
            let named = blob_findings(&verify(&bundle));
            let names: Vec<&str> = named.iter().map(|(p, _)| p.as_str()).collect();
            let mut both = vec![name.as_str(), blobs[n + 1].as_str()];
            both.sort();
            assert_eq!(names, both, "blobs {n} and {}", n + 1);
            fs::write(&path, &original).unwrap();
            fs::write(&other, &kept).unwrap();
        }
    }
    assert!(verify(&bundle).is_valid());
}
