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
