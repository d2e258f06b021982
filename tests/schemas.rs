//! The JSON Schemas in `schemas/` accept what the library writes and reject
//! what the library rejects.

mod support;

use std::path::Path;

use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(name);
    let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    jsonschema::draft202012::options().should_validate_formats(true).build(&value).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, value: &Value, what: &str) {
    let errors: Vec<String> = validator.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}");
}

#[test]
fn fixture_documents_match_their_schemas() {
    let (manifest, metadata, dag) = (schema("manifest.schema.json"), schema("metadata.schema.json"), schema("dag.schema.json"));
    for (name, ..) in support::fixture_gen::fixture_specs() {
        let dir = support::fixture(name);
        assert_valid(&manifest, &read_json(&dir.join("MANIFEST.json")), name);
        assert_valid(&metadata, &read_json(&dir.join("metadata.json")), name);
        assert_valid(&dag, &read_json(&dir.join("dag.json")), name);
    }
}

#[test]
fn event_and_snapshot_json_forms_match_their_schemas() {
    let (events, snapshot) = (schema("event.schema.json"), schema("snapshot.schema.json"));
    let run = support::fixture_gen::sample_run("schema", 3, true, true);
    for e in &run.events {
        let line: Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_valid(&events, &line, "event");
    }
    assert_valid(&snapshot, &serde_json::to_value(run.snapshot.as_ref().unwrap()).unwrap(), "snapshot");
}

#[test]
fn sample_store_matches_its_schemas() {
    let (metadata, dag, events, snapshot) =
        (schema("metadata.schema.json"), schema("dag.schema.json"), schema("event.schema.json"), schema("snapshot.schema.json"));
    let runs = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store/runs");
    let mut snapshots = 0;
    for run in std::fs::read_dir(runs).unwrap() {
        let run = run.unwrap().path();
        assert_valid(&metadata, &read_json(&run.join("run.json")), "run.json");
        assert_valid(&dag, &read_json(&run.join("dag.json")), "dag.json");
        for line in std::fs::read_to_string(run.join("events.jsonl")).unwrap().lines() {
            assert_valid(&events, &serde_json::from_str(line).unwrap(), "events.jsonl");
        }
        if run.join("snapshot.json").exists() {
            assert_valid(&snapshot, &read_json(&run.join("snapshot.json")), "snapshot.json");
            snapshots += 1;
        }
    }
    assert_eq!(snapshots, 1);
}

#[test]
fn schemas_reject_what_the_library_rejects() {
    let events = schema("event.schema.json");
    let run = support::fixture_gen::sample_run("schema", 1, false, false);
    let good: Value = serde_json::from_str(&run.events[0].to_json_line()).unwrap();
    let mut bad = good.clone();
    bad["event_id"] = Value::from(good["event_id"].as_str().unwrap().to_uppercase());
    assert!(!events.is_valid(&bad));
    assert!(cathedral_bundle::Event::from_json_line(&bad.to_string()).is_err());
    let mut bad = good.clone();
    bad["kind"] = Value::from("NoSuchKind");
    assert!(!events.is_valid(&bad));
    assert!(cathedral_bundle::Event::from_json_line(&bad.to_string()).is_err());
    let mut bad = good.clone();
    bad["extra"] = Value::from(1);
    assert!(!events.is_valid(&bad));
    assert!(cathedral_bundle::Event::from_json_line(&bad.to_string()).is_err());

    let manifest = schema("manifest.schema.json");
    let mut m = read_json(&support::fixture("small-postcard.cath-bundle").join("MANIFEST.json"));
    m["files"]["../etc"] = m["files"]["dag.json"].clone();
    assert!(!manifest.is_valid(&m));
}
