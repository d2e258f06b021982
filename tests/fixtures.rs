//! The shipped fixtures load, and regenerating them changes no byte.

mod support;

use cathedral_bundle::{BundleLoader, Encoding};
use support::{files_under, fixture, fixture_gen};

#[test]
fn regenerating_fixtures_changes_no_byte() {
    let tmp = tempfile::tempdir().unwrap();
    fixture_gen::write_all(tmp.path());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let names: Vec<String> = fixture_gen::fixture_specs()
        .into_iter()
        .map(|(n, ..)| format!("bundles/{n}"))
        .chain([format!("bundles/{}", fixture_gen::LEGACY_FIXTURE), "store".to_string(), "replay".to_string()])
        .collect();
    for name in &names {
        let shipped = root.join(name);
        let fresh = tmp.path().join(name);
        let shipped_files = files_under(&shipped);
        assert_eq!(shipped_files, files_under(&fresh), "{name}: file sets differ; run `cargo run --example gen_fixtures`");
        for file in shipped_files {
            let a = std::fs::read(shipped.join(&file)).unwrap();
            let b = std::fs::read(fresh.join(&file)).unwrap();
            assert!(a == b, "{name}/{file} would change on regeneration; run `cargo run --example gen_fixtures`");
        }
    }
}

#[test]
fn every_fixture_verifies_and_loads() {
    for (name, run, encoding, level) in fixture_gen::fixture_specs() {
        let bundle = BundleLoader::new().load(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(bundle.encoding(), encoding);
        assert_eq!(bundle.metadata(), &run.metadata);
        assert_eq!(bundle.dag(), &run.dag);
        assert_eq!(bundle.workflow(), run.workflow);
        assert_eq!(bundle.snapshot(), run.snapshot.as_ref());
        let events: Vec<_> = bundle.events().collect::<Result<_, _>>().unwrap();
        assert_eq!(events, run.events);
        let report = bundle.report();
        assert_eq!(report.stats.events, run.events.len() as u64);
        assert!(report.stats.bytes_hashed > 0);
        // Blobs: the duplicate was stored once; zstd shows up only where asked for.
        let distinct: std::collections::BTreeSet<_> = run.blobs.iter().map(|(c, _)| cathedral_bundle::Digest::of(c)).collect();
        assert_eq!(bundle.blob_count() as usize, distinct.len());
        let mut compressed = 0;
        for hash in &distinct {
            let record = bundle.blob_record(hash).unwrap().unwrap();
            if record.header.compression == cathedral_bundle::format::Compression::Zstd {
                compressed += 1;
            }
        }
        assert_eq!(compressed > 0, level.is_some(), "{name}");
        if encoding == Encoding::Cbor {
            assert_eq!(&std::fs::read(fixture(name).join("events.cath-log")).unwrap()[7..11], &2u32.to_be_bytes());
        }
    }
}
