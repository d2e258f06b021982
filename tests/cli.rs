//! The `cathedral` binary, tested as a user runs it: every command and flag,
//! every exit code, bad input for every argument.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::cli::*;

fn run_dir(prefix: &str) -> PathBuf {
    std::fs::read_dir(store().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .unwrap()
}

#[test]
fn bundle_verify_inspect_happy_path() {
    let tmp = tempfile::tempdir().unwrap();
    for run in [COMPLETED, FAILED] {
        let b = bundle(tmp.path(), run, &[]);
        let o = cathedral(&["verify-bundle", "--bundle", b.to_str().unwrap()]);
        assert_exit(&o, 0, "");
        assert!(stdout(&o).contains("result   valid"), "{}", stdout(&o));
        assert!(stdout(&o).contains("every file and blob hashed"));
        let o = cathedral(&["inspect", "--bundle", b.to_str().unwrap()]);
        assert_exit(&o, 0, "");
        for key in ["bundle id", "workflow", "status", "events", "blobs", "snapshot", "signature  unsigned", "postcard"] {
            assert!(stdout(&o).contains(key), "summary lacks {key}: {}", stdout(&o));
        }
    }
}

#[test]
fn events_jsonl_round_trips_byte_for_byte_in_both_encodings() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, encoding) in ["postcard", "cbor"].into_iter().enumerate() {
        for run in [COMPLETED, FAILED] {
            let dir = tmp.path().join(format!("{i}"));
            let b = bundle(&dir, run, &["--encoding", encoding, "--compression-level", "0"]);
            let o = cathedral(&["inspect", "--bundle", b.to_str().unwrap(), "--events"]);
            assert_exit(&o, 0, "");
            let original = std::fs::read_to_string(run_dir(run).join("events.jsonl")).unwrap();
            assert_eq!(stdout(&o), original, "{encoding} {run}");
        }
    }
}

#[test]
fn inspect_events_filters_and_output_file() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), FAILED, &[]);
    let b = b.to_str().unwrap();
    let all: Vec<String> = std::fs::read_to_string(run_dir(FAILED).join("events.jsonl")).unwrap().lines().map(String::from).collect();
    let o = cathedral(&["inspect", "--bundle", b, "--events", "--from", "5", "--limit", "3"]);
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), all[5..8].iter().map(String::as_str).collect::<Vec<_>>());
    let o = cathedral(&["inspect", "--bundle", b, "--events", "--kind", "NodeStarted"]);
    assert_eq!(stdout(&o).lines().count(), 4);
    assert!(stdout(&o).lines().all(|l| l.contains("\"kind\":\"NodeStarted\"")));
    let first: serde_json::Value = serde_json::from_str(&all[2]).unwrap();
    let node = first["node_id"].as_str().unwrap();
    let o = cathedral(&["inspect", "--bundle", b, "--events", "--node", node]);
    assert!(stdout(&o).lines().count() >= 5 && stdout(&o).lines().all(|l| l.contains(node)));
    let o = cathedral(&["inspect", "--bundle", b, "--events", "--from", "1000"]);
    assert_exit(&o, 0, "");
    assert_eq!(stdout(&o), "");
    // --output writes the same lines to a file; an existing file needs --force.
    let out = tmp.path().join("events.jsonl");
    assert_exit(&cathedral(&["inspect", "--bundle", b, "--events", "--output", out.to_str().unwrap()]), 0, "");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), all.join("\n") + "\n");
    let o = cathedral(&["inspect", "--bundle", b, "--events", "--limit", "1", "--output", out.to_str().unwrap()]);
    assert_exit(&o, 2, "already exists");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), all.join("\n") + "\n", "existing file untouched");
    assert_exit(&cathedral(&["inspect", "--bundle", b, "--events", "--limit", "1", "--output", out.to_str().unwrap(), "--force"]), 0, "");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("{}\n", all[0]));
}

#[test]
fn inspect_event_blob_and_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), FAILED, &[]);
    let b = b.to_str().unwrap();
    let all: Vec<String> = std::fs::read_to_string(run_dir(FAILED).join("events.jsonl")).unwrap().lines().map(String::from).collect();
    for line in [&all[0], &all[13], &all[all.len() - 1]] {
        let id = serde_json::from_str::<serde_json::Value>(line).unwrap()["event_id"].as_str().unwrap().to_string();
        let o = cathedral(&["inspect", "--bundle", b, "--event", &id]);
        assert_exit(&o, 0, "");
        assert_eq!(stdout(&o), format!("{line}\n"));
    }
    // By logical time: the first event at that time; none at a time not in the log.
    let o = cathedral(&["inspect", "--bundle", b, "--time", "14"]);
    assert_exit(&o, 0, "");
    assert_eq!(stdout(&o), format!("{}\n", all[13]));
    assert_exit(&cathedral(&["inspect", "--bundle", b, "--time", "999"]), 3, "logical time 999");
    // Every blob comes back as its original content, to a file and to stdout.
    for entry in std::fs::read_dir(run_dir(FAILED).join("blobs")).unwrap() {
        let entry = entry.unwrap();
        let hash = entry.file_name().into_string().unwrap();
        let out = tmp.path().join(format!("{hash}.out"));
        assert_exit(&cathedral(&["inspect", "--bundle", b, "--blob", &hash, "--output", out.to_str().unwrap()]), 0, "");
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(entry.path()).unwrap());
        let o = cathedral(&["inspect", "--bundle", b, "--blob", &hash]);
        assert_eq!(o.stdout, std::fs::read(entry.path()).unwrap());
    }
    // The snapshot as JSON equals the store's snapshot.json.
    let o = cathedral(&["inspect", "--bundle", b, "--snapshot"]);
    assert_exit(&o, 0, "");
    let ours: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let theirs: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir(FAILED).join("snapshot.json")).unwrap()).unwrap();
    assert_eq!(ours, theirs);
    let snap = tmp.path().join("snap.json");
    assert_exit(&cathedral(&["inspect", "--bundle", b, "--snapshot", "--output", snap.to_str().unwrap()]), 0, "");
    assert_eq!(std::fs::read_to_string(&snap).unwrap(), stdout(&o));
    // JSON summary.
    let o = cathedral(&["inspect", "--bundle", b, "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(summary["events"]["count"], all.len());
    assert_eq!(summary["signature"]["state"], "unsigned");
    assert_eq!(summary["metadata"]["status"], "failed");
}

#[test]
fn inspect_lookups_that_find_nothing_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), COMPLETED, &[]);
    let b = b.to_str().unwrap();
    assert_exit(&cathedral(&["inspect", "--bundle", b, "--event", "00000000-0000-4000-8000-000000000000"]), 3, "not found");
    assert_exit(&cathedral(&["inspect", "--bundle", b, "--blob", &"ab".repeat(32)]), 3, "not found");
    assert_exit(&cathedral(&["inspect", "--bundle", b, "--snapshot"]), 3, "snapshot.cath-snap");
    let out = tmp.path().join("never.bin");
    assert_exit(&cathedral(&["inspect", "--bundle", b, "--blob", &"ab".repeat(32), "--output", out.to_str().unwrap()]), 3, "");
    assert!(!out.exists(), "a failed inspect leaves no output file");
    assert!(std::fs::read_dir(tmp.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".cathedral-out")));
}

#[test]
fn verify_json_report_and_fast_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), FAILED, &[]);
    let b_str = b.to_str().unwrap();
    let o = cathedral(&["verify-bundle", "--bundle", b_str, "--json"]);
    assert_exit(&o, 0, "");
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["report_version"], 1);
    assert_eq!(report["mode"], "full");
    assert_eq!(report["stats"]["blobs"], 8);
    assert_eq!(report["findings"].as_array().unwrap().len(), 0);
    let o = cathedral(&["verify-bundle", "--bundle", b_str, "--fast"]);
    assert_exit(&o, 0, "");
    assert!(stdout(&o).contains("contents were NOT hashed"), "{}", stdout(&o));
    let o = cathedral(&["verify-bundle", "--bundle", b_str, "--fast", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["mode"], "fast");
    assert_eq!(report["stats"]["bytes_hashed"], 0);

    // Tampered: exit 1, every finding listed, in text and JSON.
    std::fs::write(b.join("stray.txt"), b"x").unwrap();
    let mut wf = std::fs::read(b.join("workflow.cath")).unwrap();
    wf[0] ^= 1;
    std::fs::write(b.join("workflow.cath"), wf).unwrap();
    let o = cathedral(&["verify-bundle", "--bundle", b_str]);
    assert_exit(&o, 1, "");
    assert!(stdout(&o).contains("[unlisted] stray.txt") && stdout(&o).contains("[hash_mismatch] workflow.cath"), "{}", stdout(&o));
    assert!(stdout(&o).contains("INVALID: 2 finding(s)"));
    let o = cathedral(&["verify-bundle", "--bundle", b_str, "--json"]);
    assert_exit(&o, 1, "");
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/verify-report.schema.json");
    let schema = jsonschema::validator_for(&serde_json::from_slice(&std::fs::read(schema_path).unwrap()).unwrap()).unwrap();
    let errors: Vec<String> = schema.iter_errors(&report).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(report["valid"], false);
    let codes: Vec<&str> = report["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["unlisted", "hash_mismatch"]);
    assert!(report["findings"][1]["expected"].is_string() && report["findings"][1]["found"].is_string());
    // inspect refuses an invalid bundle with exit 1.
    assert_exit(&cathedral(&["inspect", "--bundle", b_str]), 1, "invalid");
}

#[test]
fn bundle_errors_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store();
    let s = s.to_str().unwrap();
    let out = tmp.path().join("x.cath-bundle");
    let o = out.to_str().unwrap();
    assert_exit(&cathedral(&["bundle", "--store", s, "--run", "ffff", "--output", o]), 3, "not found");
    assert_exit(&cathedral(&["bundle", "--store", s, "--run", "zz!", "--output", o]), 2, "not a run id");
    assert_exit(&cathedral(&["bundle", "--store", "/nonexistent/store", "--run", COMPLETED, "--output", o]), 3, "/nonexistent/store");
    assert_exit(&cathedral(&["bundle", "--store", s, "--run", COMPLETED, "--output", o, "--encoding", "json"]), 2, "invalid value");
    for level in ["23", "-1", "abc"] {
        assert_exit(&cathedral(&["bundle", "--store", s, "--run", COMPLETED, "--output", o, "--compression-level", level]), 2, "");
    }
    assert!(!out.exists());
    // Existing output: refused without --force, replaced with it; a non-bundle is never replaced.
    bundle(tmp.path(), COMPLETED, &[]);
    let existing = tmp.path().join(format!("{COMPLETED}.cath-bundle"));
    let e = existing.to_str().unwrap();
    assert_exit(&cathedral(&["bundle", "--store", s, "--run", COMPLETED, "--output", e]), 2, "already exists");
    assert_exit(&cathedral(&["bundle", "--store", s, "--run", COMPLETED, "--output", e, "--force"]), 0, "");
    let precious = tmp.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("notes"), b"keep").unwrap();
    assert_exit(
        &cathedral(&["bundle", "--store", s, "--run", COMPLETED, "--output", precious.to_str().unwrap(), "--force"]),
        2,
        "refusing to replace",
    );
    assert!(precious.join("notes").exists());
    // CATHEDRAL_STORE is honoured.
    let o = Command::new(env!("CARGO_BIN_EXE_cathedral"))
        .args(["bundle", "--run", FAILED, "--output", tmp.path().join("env.cath-bundle").to_str().unwrap()])
        .env("CATHEDRAL_STORE", s)
        .output()
        .unwrap();
    assert_exit(&o, 0, "bundled run");
    let names: Vec<String> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "leftovers: {names:?}");
}

/// A private copy of the sample store, to damage.
fn store_copy(tmp: &Path) -> PathBuf {
    let dst = tmp.join("store");
    support::copy_tree(&store(), &dst);
    dst
}

#[test]
fn malformed_runs_are_refused_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store_copy(tmp.path());
    let s_str = s.to_str().unwrap();
    let run =
        std::fs::read_dir(s.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains(COMPLETED)).unwrap();
    let events = run.join("events.jsonl");
    let original = std::fs::read_to_string(&events).unwrap();
    let out = tmp.path().join("x.cath-bundle");
    let o = out.to_str().unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let damaged = [
        (lines[..3].join("\n") + "\n{not json\n" + &lines[3..].join("\n") + "\n", "events.jsonl:4"),
        (original.replacen("\"logical_time\":2,", "\"logical_time\":99,", 1), "events.jsonl:3"),
        (original.replacen("\"payload\":\"e30=\"", "\"payload\":\"e31=\"", 1), "events.jsonl:"),
        (original[..original.len() - 20].to_string(), "no newline"),
        (lines[..lines.len() - 1].join("\n") + "\n", "event_count"),
    ];
    for (text, needle) in damaged {
        std::fs::write(&events, &text).unwrap();
        let r = cathedral(&["bundle", "--store", s_str, "--run", COMPLETED, "--output", o]);
        assert_exit(&r, 1, needle);
        assert!(!out.exists());
    }
    std::fs::write(&events, &original).unwrap();
    // A recorder that did not finish.
    std::fs::write(run.join(".recording"), b"").unwrap();
    assert_exit(&cathedral(&["bundle", "--store", s_str, "--run", COMPLETED, "--output", o]), 1, "incomplete");
    std::fs::remove_file(run.join(".recording")).unwrap();
    // A blob whose content does not match its name, and a missing blob.
    let blob = std::fs::read_dir(run.join("blobs")).unwrap().next().unwrap().unwrap().path();
    let content = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, b"tampered").unwrap();
    assert_exit(&cathedral(&["bundle", "--store", s_str, "--run", COMPLETED, "--output", o]), 1, "content hash mismatch");
    std::fs::remove_file(&blob).unwrap();
    let r = cathedral(&["bundle", "--store", s_str, "--run", COMPLETED, "--output", o]);
    assert_ne!(code(&r), 0);
    std::fs::write(&blob, content).unwrap();
    assert_exit(&cathedral(&["bundle", "--store", s_str, "--run", COMPLETED, "--output", o]), 0, "");
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["bundle"],
        &["bundle", "--run", "x"],
        &["verify-bundle"],
        &["verify-bundle", "--bundle"],
        &["verify-bundle", "--bundle", "x", "--unknown"],
        &["inspect"],
        &["inspect", "--bundle", "x", "--from", "3"],
        &["inspect", "--bundle", "x", "--events", "--from", "-1"],
        &["inspect", "--bundle", "x", "--events", "--limit", "many"],
        &["inspect", "--bundle", "x", "--events", "--kind", "Nope"],
        &["inspect", "--bundle", "x", "--event", "00000000-0000-4000-8000-00000000000A"],
        &["inspect", "--bundle", "x", "--blob", "abc"],
        &["inspect", "--bundle", "x", "--blob", &"AB".repeat(32)],
        &["inspect", "--bundle", "x", "--events", "--snapshot"],
        &["inspect", "--bundle", "x", "--force"],
        &["inspect", "--bundle", "x", "--json", "--events"],
        &["completions", "tcsh-9000"],
    ];
    for args in cases {
        let o = cathedral(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?}: no message");
    }
}

#[test]
fn missing_bundle_exits_3_and_a_file_that_is_not_an_archive_exits_1() {
    assert_exit(&cathedral(&["verify-bundle", "--bundle", "/nonexistent/b.cath-bundle"]), 3, "not found");
    assert_exit(&cathedral(&["inspect", "--bundle", "/nonexistent/b.cath-bundle"]), 3, "not found");
    let file = tempfile::NamedTempFile::new().unwrap();
    // A regular file is read as an archive: one that is not a zstd frame is a finding.
    let o = cathedral(&["verify-bundle", "--bundle", file.path().to_str().unwrap()]);
    assert_exit(&o, 1, "");
    assert!(stdout(&o).contains("bad_magic") && stdout(&o).contains("zstd"), "{}", stdout(&o));
}

#[test]
fn help_version_exit_codes_and_completions() {
    let o = cathedral(&["--help"]);
    assert_exit(&o, 0, "");
    for needle in ["bundle", "verify-bundle", "inspect", "completions", "Exit codes", "3  input not found"] {
        assert!(stdout(&o).contains(needle), "--help lacks {needle}");
    }
    for sub in ["bundle", "verify-bundle", "inspect"] {
        assert!(stdout(&cathedral(&[sub, "--help"])).contains("Exit codes"), "{sub} --help");
    }
    assert!(stdout(&cathedral(&["--version"])).starts_with("cathedral "));
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = cathedral(&["completions", shell]);
        assert_exit(&o, 0, "");
        assert!(stdout(&o).contains("verify-bundle"), "{shell}");
    }
}

#[test]
fn closed_pipe_is_not_an_error() {
    // More events than a pipe holds: the writer must meet the closed pipe.
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("large.cath-bundle");
    let (run, _) = support::fixture_gen::large_run("pipe", 2_000, 16);
    support::fixture_gen::build(&run, &b, cathedral_bundle::BuildOptions::default());
    let out = read_one_byte_then_close(&["inspect", "--bundle", b.to_str().unwrap(), "--events"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn quiet_non_terminal_runs_print_no_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("q.cath-bundle");
    let s = store();
    let o = cathedral(&["bundle", "--quiet", "--store", s.to_str().unwrap(), "--run", COMPLETED, "--output", b.to_str().unwrap()]);
    assert_exit(&o, 0, "");
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let o = cathedral(&["--quiet", "verify-bundle", "--bundle", b.to_str().unwrap()]);
    assert_exit(&o, 0, "");
    assert!(stderr(&o).is_empty());
}

#[test]
fn limits_apply_in_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), FAILED, &[]);
    let b = b.to_str().unwrap();
    // Verification with a tiny record limit names the log.
    let o = cathedral(&["verify-bundle", "--bundle", b, "--max-record-len", "16"]);
    assert_exit(&o, 1, "");
    assert!(stdout(&o).contains("[limit_exceeded] events.cath-log"), "{}", stdout(&o));
    let o = cathedral(&["verify-bundle", "--bundle", b, "--max-events", "3"]);
    assert_exit(&o, 1, "");
    assert!(stdout(&o).contains("event count is 28, over the limit of 3"), "{}", stdout(&o));
    let o = cathedral(&["verify-bundle", "--bundle", b, "--max-total-size", "1000"]);
    assert_exit(&o, 1, "");
    assert!(stdout(&o).contains("[limit_exceeded] ."), "{}", stdout(&o));
    assert_exit(&cathedral(&["inspect", "--bundle", b, "--max-events", "3"]), 1, "over the limit");
    let o = cathedral(&["verify-bundle", "--bundle", b, "--max-blob-size", "100"]);
    assert_exit(&o, 1, "");
    assert!(stdout(&o).contains("[limit_exceeded] blobs/"), "{}", stdout(&o));
    // Bundling applies them too, and leaves nothing behind.
    let s = store();
    let out = tmp.path().join("limited.cath-bundle");
    for (flag, value) in [("--max-events", "3"), ("--max-record-len", "50"), ("--max-blob-size", "100"), ("--max-total-size", "2000")] {
        let o = cathedral(&["bundle", "--store", s.to_str().unwrap(), "--run", FAILED, "--output", out.to_str().unwrap(), flag, value]);
        assert_exit(&o, 1, "over the limit");
        assert!(!out.exists(), "{flag}");
    }
    assert_exit(&cathedral(&["verify-bundle", "--bundle", b, "--max-events", "lots"]), 2, "invalid value");
}
