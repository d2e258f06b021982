//! Verified random access (FORMAT.md §14): a lazily opened bundle checks
//! every chunk group it reads against the manifest, through the outboards.
//! A flipped byte in a group that is read is caught; a flipped byte
//! elsewhere is not read, and the output says that only what was read was
//! checked. Full verification catches both, and a wrong outboard.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use cathedral_bundle::format::{outboard, Manifest};
use cathedral_bundle::{BundleLoader, Encoding, Error, FindingCode, LoadError, ReplayBundle, VerifyMode};
use support::cli::{cathedral, code, stderr, stdout};
use support::fixture_gen::{build, fixed_options, large_run};

const GROUP: u64 = outboard::GROUP_BYTES;

/// A bundle whose log spans many chunk groups (and whose index spans several).
fn many_groups(dir: &Path, encoding: Encoding) -> PathBuf {
    let out = dir.join(format!("many-{encoding:?}.cath-bundle"));
    let (run, _) = large_run("lazy", 3_000, 100);
    build(&run, &out, fixed_options("lazy", encoding, None));
    let log = fs::metadata(out.join("events.cath-log")).unwrap().len();
    assert!(log > 20 * GROUP, "the log spans many groups ({log} bytes)");
    out
}

fn lazy(bundle: &Path) -> Result<ReplayBundle, LoadError> {
    BundleLoader::new().mode(VerifyMode::Lazy).load(bundle)
}

/// Byte range of each record of the log (length prefix included), from a full open.
fn record_ranges(bundle: &Path) -> Vec<std::ops::Range<u64>> {
    let full = BundleLoader::new().load(bundle).unwrap();
    let n = full.event_count();
    let log_len = fs::metadata(bundle.join("events.cath-log")).unwrap().len();
    let ix = fs::read(bundle.join("events.cath-idx")).unwrap();
    let offsets = |p: u32| u64::from_be_bytes(ix[55 + 8 * p as usize..63 + 8 * p as usize].try_into().unwrap());
    (0..n).map(|p| offsets(p)..if p + 1 < n { offsets(p + 1) } else { log_len }).collect()
}

fn overlaps(range: &std::ops::Range<u64>, group: u64) -> bool {
    range.start < (group + 1) * GROUP && group * GROUP < range.end
}

fn flip(path: &Path, at: u64) -> Vec<u8> {
    let original = fs::read(path).unwrap();
    let mut bytes = original.clone();
    bytes[at as usize] ^= 0x10;
    fs::write(path, bytes).unwrap();
    original
}

#[test]
fn reads_are_checked_exactly_where_they_land() {
    let tmp = tempfile::tempdir().unwrap();
    for encoding in [Encoding::Postcard, Encoding::Cbor] {
        let bundle = many_groups(tmp.path(), encoding);
        let ranges = record_ranges(&bundle);
        let log = bundle.join("events.cath-log");
        let groups = fs::metadata(&log).unwrap().len().div_ceil(GROUP);
        // Pristine: every event reads, lazily, and only a few groups were checked for one.
        let pristine = lazy(&bundle).unwrap();
        assert_eq!(pristine.verified(), VerifyMode::Lazy);
        assert!(pristine.event(1500).unwrap().is_some());
        assert!(pristine.groups_checked().unwrap() <= 4, "{:?}", pristine.groups_checked());
        for group in 0..groups {
            let at = (group * GROUP + 1_234).min(fs::metadata(&log).unwrap().len() - 1);
            let original = flip(&log, at);
            match lazy(&bundle) {
                // The log's header is in group 0, read when the bundle is opened.
                Err(LoadError::Invalid { report, .. }) => {
                    assert_eq!(group, 0, "{encoding:?} group {group}: {:#?}", report.findings);
                    assert!(report.findings.iter().any(|f| f.path == "events.cath-log"), "{:#?}", report.findings);
                }
                Err(e) => panic!("{encoding:?} group {group}: {e}"),
                Ok(b) => {
                    assert_ne!(group, 0);
                    for (p, range) in ranges.iter().enumerate() {
                        let read = b.event(p as u32);
                        if overlaps(range, group) {
                            let err = read.expect_err("a changed event read lazily is caught");
                            assert!(matches!(err, Error::RangeMismatch { ref file, .. } if file == "events.cath-log"), "{err}");
                        } else {
                            assert!(read.is_ok(), "{encoding:?} group {group} event {p}: {:?}", read.err());
                        }
                    }
                    // Reading everything reaches the flipped group.
                    assert!(b.events().any(|e| e.is_err()));
                }
            }
            // Full verification catches it wherever it is.
            assert!(!BundleLoader::new().verify(&bundle).unwrap().is_valid());
            fs::write(&log, original).unwrap();
        }
    }
}

#[test]
fn a_changed_index_or_outboard_is_caught_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = many_groups(tmp.path(), Encoding::Postcard);
    let index = bundle.join("events.cath-idx");
    let count = record_ranges(&bundle).len() as u64;
    // An offsets entry: reading its event is caught, reading another's in another group is not.
    for position in [0u64, 3000, count - 1] {
        let at = 55 + 8 * position + 3;
        let original = flip(&index, at);
        if at < GROUP {
            // The index's header shares group 0, read when the bundle is opened.
            let Err(LoadError::Invalid { report, .. }) = lazy(&bundle) else { panic!("group 0 of the index is read at open") };
            assert!(
                report.findings.iter().any(|f| f.path == "events.cath-idx" && f.code == FindingCode::HashMismatch),
                "{:#?}",
                report.findings
            );
            fs::write(&index, original).unwrap();
            continue;
        }
        let b = lazy(&bundle).unwrap();
        assert!(matches!(b.event(position as u32), Err(Error::RangeMismatch { ref file, .. }) if file == "events.cath-idx"));
        let far = (0..count).find(|p| (55 + 8 * p) / GROUP != at / GROUP).unwrap();
        assert!(b.event(far as u32).is_ok());
        fs::write(&index, original).unwrap();
    }
    // An id entry: looking up that id is caught.
    let b = lazy(&bundle).unwrap();
    let (_, event) = b.event_by_id(&b.event(2000).unwrap().unwrap().event_id).unwrap().unwrap();
    drop(b);
    let ids_start = 55 + 16 * count;
    let ix = fs::read(&index).unwrap();
    let sorted =
        (0..count).position(|i| ix[(ids_start + 20 * i) as usize..(ids_start + 20 * i + 16) as usize] == *event.event_id.as_bytes());
    let original = flip(&index, ids_start + 20 * sorted.expect("the id is in the id section") as u64 + 5);
    let b = lazy(&bundle).unwrap();
    assert!(matches!(b.event_by_id(&event.event_id), Err(Error::RangeMismatch { .. })));
    fs::write(&index, original).unwrap();

    // Every pair of the log's outboard is on the path of some read: reading
    // the whole log lazily catches a flip in any of them; reading one event
    // passes or is caught, never wrong.
    let obao = bundle.join("events.cath-log.obao");
    let pairs = fs::metadata(&obao).unwrap().len() / 64;
    assert!(pairs > 10);
    for pair in 0..pairs {
        let original = flip(&obao, pair * 64 + 17);
        match lazy(&bundle) {
            // A pair on the path to group 0 (the log's header, read at open).
            Err(LoadError::Invalid { report, .. }) => {
                assert!(report.findings.iter().any(|f| f.path == "events.cath-log" && f.code == FindingCode::HashMismatch), "pair {pair}")
            }
            Err(e) => panic!("pair {pair}: {e}"),
            Ok(b) => assert!(b.events().any(|e| matches!(e, Err(Error::RangeMismatch { .. }))), "pair {pair}"),
        }
        let full = BundleLoader::new().verify(&bundle).unwrap();
        assert!(full.findings.iter().any(|f| f.path == "events.cath-log.obao" && f.code == FindingCode::HashMismatch));
        fs::write(&obao, original).unwrap();
    }
}

/// An outboard the manifest commits to, but not the outboard of its file:
/// full verification rebuilds it and says so; lazy reads fail, never pass
/// wrong bytes.
#[test]
fn a_committed_wrong_outboard_is_found_by_full_verification() {
    let tmp = tempfile::tempdir().unwrap();
    for (data, name) in [("events.cath-log", "events.cath-log.obao"), ("events.cath-idx", "events.cath-idx.obao")] {
        let bundle = many_groups(tmp.path(), Encoding::Postcard);
        let obao = bundle.join(name);
        let mut bytes = fs::read(&obao).unwrap();
        bytes[100] ^= 1;
        fs::write(&obao, &bytes).unwrap();
        let manifest_path = bundle.join("MANIFEST.json");
        let mut manifest = Manifest::parse(&fs::read(&manifest_path).unwrap()).unwrap();
        manifest.files.get_mut(name).unwrap().hash = cathedral_bundle::Digest::of(&bytes);
        fs::write(&manifest_path, manifest.to_bytes()).unwrap();
        for report in [BundleLoader::new().verify(&bundle).unwrap(), archive_report(&bundle, tmp.path())] {
            assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
            let named = &report.findings[0];
            assert_eq!((named.path.as_str(), named.code), (name, FindingCode::Inconsistent), "{named:?}");
            assert!(named.message.contains(&format!("not the outboard of {data}")), "{}", named.message);
        }
        // Read lazily, the wrong pair fails the reads that use it; it never passes wrong bytes.
        let b = lazy(&bundle).unwrap();
        if data == "events.cath-log" {
            assert!(b.events().any(|e| matches!(e, Err(Error::RangeMismatch { .. }))));
        } else {
            // Positions, times and ids together read every group of the index.
            let mismatch = |r: Result<Option<(u32, cathedral_bundle::Event)>, Error>| matches!(r, Err(Error::RangeMismatch { .. }));
            let caught = (0..b.event_count()).any(|p| match b.event(p) {
                Ok(Some(e)) => mismatch(b.event_by_id(&e.event_id)) || mismatch(b.event_at_time(e.logical_time)),
                other => matches!(other, Err(Error::RangeMismatch { .. })),
            });
            assert!(caught);
        }
        drop(b);
        fs::remove_dir_all(&bundle).unwrap();
    }
}

/// The report of the archive verifier on the stream of `bundle`: pack
/// checks only the layout of its source, then verifies every byte it writes
/// as an archive stream, and refuses to place an archive that fails.
fn archive_report(bundle: &Path, tmp: &Path) -> cathedral_bundle::VerifyReport {
    let out = tmp.join("packed.cath-bundle.tar.zst");
    match BundleLoader::new().pack(bundle, &out, cathedral_bundle::PackOptions::default()) {
        Err(LoadError::Invalid { report, .. }) => *report,
        other => panic!("the archive stream must be refused: {other:?}"),
    }
}

#[test]
fn inspect_says_which_mode_ran() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = many_groups(tmp.path(), Encoding::Postcard);
    let b = lazy(&bundle).unwrap();
    let event = b.event(2500).unwrap().unwrap();
    let far = b.event(10).unwrap().unwrap();
    drop(b);
    let path = bundle.to_str().unwrap();
    let id = event.event_id.to_string();
    let o = cathedral(&["inspect", "--bundle", path, "--event", &id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&id));
    assert!(stderr(&o).contains("verified lazily"), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing else was read"), "{}", stderr(&o));

    // A flipped byte inside the event shown: refused, the file named.
    let ranges = record_ranges(&bundle);
    let log = bundle.join("events.cath-log");
    let original = flip(&log, ranges[2500].start + 10);
    let o = cathedral(&["inspect", "--bundle", path, "--event", &id]);
    assert_ne!(code(&o), 0);
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("events.cath-log") && stderr(&o).contains("not what the manifest commits to"), "{}", stderr(&o));
    // --fast does not make a targeted read unchecked: it reads lazily too.
    let o = cathedral(&["inspect", "--bundle", path, "--event", &id, "--fast"]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("not what the manifest commits to"), "{}", stderr(&o));
    // Elsewhere: the event shows, and the note says what was not read; --full refuses.
    let far_id = far.event_id.to_string();
    let o = cathedral(&["inspect", "--bundle", path, "--event", &far_id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing else was read"));
    let o = cathedral(&["inspect", "--bundle", path, "--event", &far_id, "--full"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    fs::write(&log, original).unwrap();

    // The blob list is checked when a blob is read, not before an event is shown.
    let list = bundle.join("blobs.cath-list");
    let original = flip(&list, 20);
    let o = cathedral(&["inspect", "--bundle", path, "--event", &far_id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let blob = cathedral_bundle::Digest::of(&large_run("lazy", 3_000, 100).1).to_string();
    let o = cathedral(&["inspect", "--bundle", path, "--blob", &blob]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("blobs.cath-list") && stderr(&o).contains("hash mismatch"), "{}", stderr(&o));
    fs::write(&list, original).unwrap();
    assert_eq!(code(&cathedral(&["inspect", "--bundle", path, "--blob", &blob])), 0);

    // A 1.0 bundle has no outboards: verified in full, and said so.
    let legacy = support::fixture(support::fixture_gen::LEGACY_FIXTURE);
    let b = lazy(&legacy).unwrap();
    assert_eq!(b.verified(), VerifyMode::Full);
    let id = b.event(0).unwrap().unwrap().event_id.to_string();
    let o = cathedral(&["inspect", "--bundle", legacy.to_str().unwrap(), "--event", &id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("1.0 bundle has no outboards"), "{}", stderr(&o));
    let o = cathedral(&["inspect", "--bundle", legacy.to_str().unwrap(), "--event", &id, "--fast"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("NOT verified"), "{}", stderr(&o));
}

/// `inspect --events` reads the log in batches decoded on every core: its
/// lines are still the events in log order, a changed chunk group stops it
/// with an error after the events before it, and the events after it read
/// from their own groups on.
#[test]
fn inspect_events_stops_at_a_changed_group_after_the_events_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    for encoding in [Encoding::Postcard, Encoding::Cbor] {
        let bundle = many_groups(tmp.path(), encoding);
        let path = bundle.to_str().unwrap();
        let o = cathedral(&["inspect", "--bundle", path, "--events"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let all: Vec<String> = stdout(&o).lines().map(String::from).collect();
        let ranges = record_ranges(&bundle);
        assert_eq!(all.len(), ranges.len());
        // Every window of --from and --limit gives exactly those lines.
        for (from, limit) in [(0, 1), (1, 1), (7, 100), (1000, 2000), (2990, 50)] {
            let o = cathedral(&["inspect", "--bundle", path, "--events", "--from", &from.to_string(), "--limit", &limit.to_string()]);
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            let end = (from + limit).min(all.len());
            assert_eq!(
                stdout(&o).lines().collect::<Vec<_>>(),
                all[from..end].iter().map(String::as_str).collect::<Vec<_>>(),
                "{from} {limit}"
            );
        }
        let log = bundle.join("events.cath-log");
        let group = (ranges[2000].start / GROUP) + 1;
        let first_hit = ranges.iter().position(|r| overlaps(r, group)).unwrap();
        let original = flip(&log, group * GROUP + 7);
        let o = cathedral(&["inspect", "--bundle", path, "--events"]);
        assert_eq!(code(&o), 1, "{encoding:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("events.cath-log") && stderr(&o).contains("not what the manifest commits to"), "{}", stderr(&o));
        let shown = stdout(&o);
        let shown: Vec<&str> = shown.lines().collect();
        assert!(shown.len() <= first_hit, "no event of the changed group is shown ({} > {first_hit})", shown.len());
        assert_eq!(
            shown,
            all[..shown.len()].iter().map(String::as_str).collect::<Vec<_>>(),
            "what is shown is the events before it, in order"
        );
        // Events after the changed group are read from their own groups on.
        let after = ranges.iter().position(|r| r.start >= (group + 1) * GROUP).unwrap();
        let o = cathedral(&["inspect", "--bundle", path, "--events", "--from", &after.to_string()]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), all[after..].iter().map(String::as_str).collect::<Vec<_>>());
        fs::write(&log, original).unwrap();
    }
}

/// `inspect --events` over a log of several read windows: every event once,
/// in order, whatever range is asked for (the records of a read window are
/// handed to the writers with the window, or copied out when few of them
/// were taken), in both encodings and with filters.
#[test]
fn inspect_events_gives_every_event_once_in_order_across_read_windows() {
    let tmp = tempfile::tempdir().unwrap();
    for encoding in [Encoding::Postcard, Encoding::Cbor] {
        let (run, _) = large_run("windows", 12_000, 200);
        let bundle = tmp.path().join(format!("w-{encoding:?}.cath-bundle"));
        build(&run, &bundle, fixed_options("windows", encoding, None));
        assert!(fs::metadata(bundle.join("events.cath-log")).unwrap().len() > 3 << 20, "several 1 MiB windows");
        let b = bundle.to_str().unwrap();
        let all = stdout(&cathedral(&["inspect", "--bundle", b, "--events"]));
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), run.events.len());
        for (line, event) in lines.iter().zip(&run.events) {
            assert!(line.contains(&event.event_id.to_string()), "{encoding:?}: {line} is not event {}", event.event_id);
        }
        for (from, limit) in [(0, 1), (1, 3), (2_999, 4_000), (4_500, 7_000), (11_000, 5_000), (run.events.len() - 1, 10)] {
            let part =
                stdout(&cathedral(&["inspect", "--bundle", b, "--events", "--from", &from.to_string(), "--limit", &limit.to_string()]));
            let expected: Vec<&str> = lines.iter().skip(from).take(limit).copied().collect();
            let found: Vec<&str> = part.lines().collect();
            assert!(
                found == expected,
                "{encoding:?}: --from {from} --limit {limit} gave {} lines, {} expected",
                found.len(),
                expected.len()
            );
        }
        let heartbeats = stdout(&cathedral(&["inspect", "--bundle", b, "--events", "--kind", "Heartbeat"]));
        let expected: Vec<&str> = lines.iter().filter(|l| l.contains("\"kind\":\"Heartbeat\"")).copied().collect();
        let found: Vec<&str> = heartbeats.lines().collect();
        assert!(expected.len() >= 12_000);
        assert!(found == expected, "{encoding:?}: --kind Heartbeat gave {} lines, {} expected", found.len(), expected.len());
    }
}
