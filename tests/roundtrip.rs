//! Round trips through BundleBuilder and BundleLoader, index lookups, atomic
//! and reproducible builds, and one test per bug of the seed design notes.

mod support;

use std::fs;
use std::path::Path;

use cathedral_bundle::format::{blob_path, rebuild_index as rebuild, BlobFormat, IndexReader, LogReader};
use cathedral_bundle::{BuildOptions, BundleBuilder, BundleLoader, Digest, Encoding, Error, FindingCode, Limits, LoadError};
use support::fixture_gen::{build, fixed_options, noise, sample_run, uuid_for};
use support::{files_under, fixture_copy};
use uuid::Uuid;

#[test]
fn round_trip_every_encoding_and_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("roundtrip", 5, false, true);
    for encoding in [Encoding::Postcard, Encoding::Cbor] {
        for level in [None, Some(1), Some(3), Some(19)] {
            let out = tmp.path().join(format!("{encoding}-{level:?}.cath-bundle"));
            let summary = build(&run, &out, BuildOptions::default().encoding(encoding).compression_level(level));
            assert_eq!(summary.events, run.events.len() as u64);
            let bundle = BundleLoader::new().load(&out).unwrap();
            assert_eq!(bundle.encoding(), encoding);
            assert_eq!(bundle.events().collect::<Result<Vec<_>, _>>().unwrap(), run.events);
            assert_eq!(bundle.snapshot(), run.snapshot.as_ref());
            for (content, _) in &run.blobs {
                let hash = Digest::of(content);
                assert_eq!(&bundle.blob(&hash).unwrap(), content);
                let mut streamed = Vec::new();
                assert_eq!(bundle.read_blob(&hash, &mut streamed).unwrap(), content.len() as u64);
                assert_eq!(&streamed, content);
            }
            assert!(matches!(bundle.blob(&Digest::of(b"not there")), Err(Error::NotFound { .. })));
        }
    }
}

#[test]
fn empty_run_and_empty_blob_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = sample_run("empty", 0, false, false);
    run.events.clear();
    run.metadata.event_count = 0;
    run.blobs = vec![(Vec::new(), BlobFormat::Raw)];
    let out = tmp.path().join("empty.cath-bundle");
    build(&run, &out, BuildOptions::default());
    let bundle = BundleLoader::new().load(&out).unwrap();
    assert_eq!(bundle.event_count(), 0);
    assert!(bundle.event(0).unwrap().is_none());
    assert_eq!(bundle.blob(&Digest::of(b"")).unwrap(), Vec::<u8>::new());
}

#[test]
fn index_lookups_by_position_id_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("lookup", 6, true, false);
    let out = tmp.path().join("b.cath-bundle");
    build(&run, &out, BuildOptions::default());
    let bundle = BundleLoader::new().load(&out).unwrap();
    for (i, e) in run.events.iter().enumerate() {
        assert_eq!(bundle.event(i as u32).unwrap().as_ref(), Some(e));
        assert_eq!(bundle.event_by_id(&e.event_id).unwrap(), Some((i as u32, e.clone())));
        assert_eq!(bundle.event_at_time(e.logical_time).unwrap().map(|(p, _)| p), Some(i as u32));
    }
    assert!(bundle.event(run.events.len() as u32).unwrap().is_none());
    assert!(bundle.event_by_id(&Uuid::from_u128(42)).unwrap().is_none());
    assert!(bundle.event_at_time(0).unwrap().is_none());
    assert_eq!(bundle.position_at_time(0).unwrap(), Some(0));
    assert_eq!(bundle.position_at_time(u64::MAX).unwrap(), None);
    let from: Vec<_> = bundle.events_from(3).collect::<Result<_, _>>().unwrap();
    assert_eq!(from, run.events[3..]);
}

#[test]
fn repeated_logical_times_find_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = sample_run("ties", 2, false, false);
    for (i, e) in run.events.iter_mut().enumerate() {
        e.logical_time = (i / 3) as u64 * 10;
    }
    let out = tmp.path().join("b.cath-bundle");
    build(&run, &out, BuildOptions::default());
    let bundle = BundleLoader::new().load(&out).unwrap();
    assert_eq!(bundle.event_at_time(10).unwrap().map(|(p, _)| p), Some(3));
    assert_eq!(bundle.event_at_time(5).unwrap(), None);
    assert_eq!(bundle.position_at_time(5).unwrap(), Some(3));
}

#[test]
fn rebuilt_index_is_identical_to_the_written_one() {
    for name in ["small-postcard.cath-bundle", "cbor-events.cath-bundle", "snapshot-zstd.cath-bundle"] {
        let dir = support::fixture(name);
        let log = fs::read(dir.join("events.cath-log")).unwrap();
        let view = LogReader::new(&log, "events.cath-log", &Limits::default()).unwrap();
        let rebuilt = rebuild(&view).unwrap();
        assert_eq!(rebuilt, fs::read(dir.join("events.cath-idx")).unwrap(), "{name}");
    }
}

#[test]
fn index_offsets_point_at_length_prefixes_after_the_header() {
    // Seed bug: offsets that ignore the 15-byte header and the 4-byte length prefixes.
    let dir = support::fixture("small-postcard.cath-bundle");
    let log = fs::read(dir.join("events.cath-log")).unwrap();
    let idx = fs::read(dir.join("events.cath-idx")).unwrap();
    let view = LogReader::new(&log, "events.cath-log", &Limits::default()).unwrap();
    let index = IndexReader::new(&idx, "events.cath-idx").unwrap();
    assert_eq!(index.offset(0).unwrap(), Some(15));
    let mut expected = 15u64;
    for p in 0..index.count() {
        assert_eq!(index.offset(p).unwrap(), Some(expected));
        let len = u32::from_be_bytes(log[expected as usize..expected as usize + 4].try_into().unwrap());
        view.event_at(expected).unwrap();
        expected += 4 + u64::from(len);
    }
    assert_eq!(expected, log.len() as u64);
}

#[test]
fn index_from_another_log_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = fixture_copy("small-postcard.cath-bundle", tmp.path());
    let other = support::fixture("snapshot-zstd.cath-bundle");
    // Swap in the other bundle's index and fix the manifest entry so only the binding can catch it.
    let idx = fs::read(other.join("events.cath-idx")).unwrap();
    fs::write(a.join("events.cath-idx"), &idx).unwrap();
    let manifest = fs::read_to_string(a.join("MANIFEST.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    m["files"]["events.cath-idx"] = serde_json::json!({"hash": Digest::of(&idx).to_hex(), "size": idx.len(), "optional": false});
    fs::write(a.join("MANIFEST.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let report = BundleLoader::new().verify(&a).unwrap();
    assert!(report.findings.iter().any(|f| f.path == "events.cath-idx" && f.code == FindingCode::Inconsistent), "{:#?}", report.findings);
}

#[test]
fn builds_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("repro", 4, false, true);
    let (a, b) = (tmp.path().join("a.cath-bundle"), tmp.path().join("b.cath-bundle"));
    build(&run, &a, fixed_options("x", Encoding::Postcard, Some(3)));
    build(&run, &b, fixed_options("x", Encoding::Postcard, Some(3)));
    let files = files_under(&a);
    assert_eq!(files, files_under(&b));
    for f in files {
        assert_eq!(fs::read(a.join(&f)).unwrap(), fs::read(b.join(&f)).unwrap(), "{f}");
    }
}

#[test]
fn existing_output_is_kept_unless_overwrite_and_only_bundles_are_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("exists", 2, false, false);
    let out = tmp.path().join("b.cath-bundle");
    build(&run, &out, BuildOptions::default());
    let before = fs::read(out.join("MANIFEST.json")).unwrap();
    assert!(matches!(BundleBuilder::create(&out, BuildOptions::default()), Err(Error::Exists { .. })));
    assert_eq!(fs::read(out.join("MANIFEST.json")).unwrap(), before);
    // Overwrite replaces it with a complete new bundle.
    build(&run, &out, BuildOptions::default().overwrite(true));
    assert_ne!(fs::read(out.join("MANIFEST.json")).unwrap(), before);
    BundleLoader::new().load(&out).unwrap();
    // A directory that is not a bundle is never replaced, even with overwrite.
    let precious = tmp.path().join("precious");
    fs::create_dir(&precious).unwrap();
    fs::write(precious.join("thesis.txt"), b"years of work").unwrap();
    assert!(matches!(BundleBuilder::create(&precious, BuildOptions::default().overwrite(true)), Err(Error::NotReplaceable { .. })));
    assert!(precious.join("thesis.txt").exists());
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect()
}

#[test]
fn failed_or_abandoned_build_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("abandon", 2, false, false);
    let out = tmp.path().join("b.cath-bundle");
    {
        let mut b = BundleBuilder::create(&out, BuildOptions::default()).unwrap();
        b.add_event(&run.events[0]).unwrap();
        b.add_blob(b"data").unwrap();
        assert!(!leftovers(tmp.path()).is_empty(), "staging directory exists while building");
    }
    assert!(!out.exists());
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());

    // Rejected input: time going backwards, a bad payload hash, a foreign run, a duplicate id.
    let mut b = BundleBuilder::create(&out, BuildOptions::default()).unwrap();
    b.add_event(&run.events[1]).unwrap();
    assert!(b.add_event(&run.events[0]).is_err(), "time went backwards");
    let mut bad = run.events[2].clone();
    bad.payload.push(b'!');
    assert!(b.add_event(&bad).is_err(), "payload hash");
    let mut foreign = run.events[2].clone();
    foreign.run_id = uuid_for("other run");
    assert!(b.add_event(&foreign).is_err(), "run id");
    let mut dup = run.events[2].clone();
    dup.event_id = run.events[1].event_id;
    b.add_event(&dup).unwrap();
    b.set_metadata(cathedral_bundle::Metadata { event_count: 2, ..run.metadata.clone() }).unwrap();
    b.set_workflow("w");
    b.set_dag(run.dag.clone()).unwrap();
    let err = b.build().unwrap_err();
    assert!(err.to_string().contains("added twice"), "{err}");
    assert!(!out.exists());
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

#[test]
fn manifest_paths_are_validated_before_touching_the_file_system() {
    // Seed bug: files joined to the bundle path without checks.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy("small-postcard.cath-bundle", tmp.path());
    fs::write(tmp.path().join("secret"), b"outside").unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(bundle.join("MANIFEST.json")).unwrap()).unwrap();
    for hostile in ["../secret", "/etc/passwd", "blobs/../../secret", "a\\b", "ｍetadata.json"] {
        let mut m = m.clone();
        m["files"][hostile] = serde_json::json!({"hash": Digest::of(b"outside").to_hex(), "size": 7, "optional": false});
        fs::write(bundle.join("MANIFEST.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        let report = BundleLoader::new().verify(&bundle).unwrap();
        assert!(report.findings.iter().any(|f| f.code == FindingCode::InvalidPath), "{hostile}: {:#?}", report.findings);
    }
    m["files"]["metadata.json"]["size"] = serde_json::json!(u64::MAX);
    fs::write(bundle.join("MANIFEST.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let report = BundleLoader::new().verify(&bundle).unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.path == "metadata.json" && matches!(f.code, FindingCode::SizeMismatch | FindingCode::LimitExceeded)),
        "{:#?}",
        report.findings
    );
}

#[test]
fn log_counts_and_lengths_are_not_trusted() {
    // Seed bugs: a 6-byte magic check, and counts/lengths trusted for allocation.
    let log = fs::read(support::fixture("small-postcard.cath-bundle").join("events.cath-log")).unwrap();
    let limits = Limits::default();
    let mut bad = log.clone();
    bad[6] = b'X';
    assert!(matches!(LogReader::new(&bad, "l", &limits), Err(Error::BadMagic { .. })));
    let mut bad = log.clone();
    bad[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(LogReader::new(&bad, "l", &limits), Err(Error::Truncated { .. })));
    let mut bad = log.clone();
    bad[15..19].copy_from_slice(&u32::MAX.to_be_bytes());
    let view = LogReader::new(&bad, "l", &limits).unwrap();
    assert!(matches!(view.walk(false).next_record(), Err(Error::LimitExceeded { .. })));
    // One record fewer than declared: the walk ends in a truncation, not a panic.
    let mut bad = log.clone();
    let count = u32::from_be_bytes(bad[11..15].try_into().unwrap());
    bad[11..15].copy_from_slice(&(count + 1).to_be_bytes());
    let view = LogReader::new(&bad, "l", &limits).unwrap();
    let mut walk = view.walk(false);
    assert!(std::iter::from_fn(|| walk.next_record().map(|r| r.map(|_| ())).transpose()).any(|r| r.is_err()));
    // One fewer declared than present: trailing data.
    let mut bad = log;
    bad[11..15].copy_from_slice(&(count - 1).to_be_bytes());
    let view = LogReader::new(&bad, "l", &limits).unwrap();
    let mut walk = view.walk(false);
    let last = std::iter::from_fn(|| walk.next_record().map(|r| r.map(|_| ())).transpose()).last();
    assert!(matches!(last, Some(Err(Error::TrailingData { .. }))));
}

#[test]
fn large_blob_streams_through_windowed_hashing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run("large", 1, false, false);
    let out = tmp.path().join("b.cath-bundle");
    let mut b = BundleBuilder::create(&out, BuildOptions::default()).unwrap();
    b.set_metadata(run.metadata.clone()).unwrap();
    b.set_workflow(run.workflow.clone());
    b.set_dag(run.dag.clone()).unwrap();
    for e in &run.events {
        b.add_event(e).unwrap();
    }
    for (content, format) in &run.blobs {
        b.add_blob_as(content, *format).unwrap();
    }
    let big = noise("big", 3 << 20);
    let hash = b.add_blob(&big).unwrap();
    b.build().unwrap();
    let bundle = BundleLoader::new().load(&out).unwrap();
    assert_eq!(bundle.blob(&hash).unwrap(), big);
    // A blob over the configured limit is refused by verification, naming it.
    let small = BundleLoader::new().limits(Limits::default().max_blob_size(1 << 20));
    match small.load(&out) {
        Err(LoadError::Invalid { report, .. }) => {
            assert!(report.findings.iter().any(|f| f.path == blob_path(&hash) && f.code == cathedral_bundle::FindingCode::LimitExceeded))
        }
        other => panic!("expected a limit finding, got {other:?}"),
    }
}
