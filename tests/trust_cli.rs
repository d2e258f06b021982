//! The trust promises as an operator meets them through the binary: nothing
//! is destroyed that the tool did not create, nothing unverified is shown,
//! errors are classified by where they come from, and output is safe to
//! print.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use support::cli::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every kind of thing that is not provably a bundle, at the output path.
fn not_bundles(dir: &Path, real_bundle: &Path) -> Vec<(&'static str, std::path::PathBuf)> {
    let mut out = Vec::new();
    let p = dir.join("manifest-and-notes");
    fs::create_dir(&p).unwrap();
    fs::copy(real_bundle.join("MANIFEST.json"), p.join("MANIFEST.json")).unwrap();
    fs::write(p.join("notes.txt"), b"mine").unwrap();
    out.push(("a directory holding a manifest and other files", p));
    let p = dir.join("foreign-manifest");
    fs::create_dir(&p).unwrap();
    fs::write(p.join("MANIFEST.json"), br#"{"format":"something else"}"#).unwrap();
    out.push(("a directory whose manifest is not ours", p));
    let p = dir.join("link-to-bundle");
    std::os::unix::fs::symlink(real_bundle, &p).unwrap();
    out.push(("a symbolic link to a bundle", p));
    let p = dir.join("manifest-link");
    fs::create_dir(&p).unwrap();
    std::os::unix::fs::symlink(real_bundle.join("MANIFEST.json"), p.join("MANIFEST.json")).unwrap();
    out.push(("a directory whose manifest is a link", p));
    let p = dir.join("bundle-with-extra");
    support::copy_tree(real_bundle, &p);
    fs::write(p.join("blobs").join("README"), b"keep").unwrap();
    out.push(("a bundle with a file of someone else's inside", p));
    let p = dir.join("bundle-with-link");
    support::copy_tree(real_bundle, &p);
    std::os::unix::fs::symlink("/etc", p.join("etc")).unwrap();
    out.push(("a bundle with a link inside", p));
    let p = dir.join("plain-file");
    fs::write(&p, b"precious").unwrap();
    out.push(("a regular file", p));
    let p = dir.join("empty-dir");
    fs::create_dir(&p).unwrap();
    out.push(("an empty directory", p));
    out
}

/// A listing of everything under `p` (not following links), with contents.
fn snapshot_of(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(p)
        .follow_links(false)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let bytes = if e.file_type().is_file() { fs::read(e.path()).unwrap() } else { Vec::new() };
            (e.path().display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn force_replaces_only_what_is_provably_a_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let real = bundle(tmp.path(), COMPLETED, &[]);
    let store = store();
    for (what, target) in not_bundles(tmp.path(), &real) {
        let before = snapshot_of(&target);
        let o = cathedral(&["bundle", "--store", s(&store), "--run", COMPLETED, "--output", s(&target), "--force"]);
        assert_exit(&o, 2, "refusing to replace");
        assert_eq!(snapshot_of(&target), before, "{what} was changed");
    }
    // The bundle a link pointed at is untouched too, and a real bundle is replaced.
    let o = cathedral(&["verify-bundle", "--bundle", s(&real)]);
    assert_exit(&o, 0, "");
    let before = fs::read(real.join("MANIFEST.json")).unwrap();
    assert_exit(&cathedral(&["bundle", "--store", s(&store), "--run", COMPLETED, "--output", s(&real), "--force"]), 0, "");
    assert_ne!(fs::read(real.join("MANIFEST.json")).unwrap(), before);
    assert_exit(&cathedral(&["verify-bundle", "--bundle", s(&real)]), 0, "");
    let leftovers: Vec<String> =
        fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // inspect --output --force replaces a file, never a directory.
    let dir = tmp.path().join("out-dir");
    fs::create_dir(&dir).unwrap();
    let o = cathedral(&["inspect", "--bundle", s(&real), "--json", "--output", s(&dir), "--force"]);
    assert_exit(&o, 2, "refusing to replace");
    assert!(dir.is_dir());
}

#[test]
fn inspect_blob_shows_nothing_before_it_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), FAILED, &[]);
    let blob = largest_blob(&b);
    let hash = blob.rsplit('/').next().unwrap().to_string();
    // Change the content's last byte: the file size and the list stay as they were.
    let mut bytes = fs::read(b.join(&blob)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    fs::write(b.join(&blob), &bytes).unwrap();
    // --fast skips hashing before reading, so the blob is checked only as it is read.
    let o = cathedral(&["inspect", "--bundle", s(&b), "--fast", "--blob", &hash]);
    assert_ne!(code(&o), 0);
    assert!(o.stdout.is_empty(), "{} unverified bytes reached stdout", o.stdout.len());
    let out = tmp.path().join("blob.out");
    let o = cathedral(&["inspect", "--bundle", s(&b), "--fast", "--blob", &hash, "--output", s(&out)]);
    assert_ne!(code(&o), 0);
    assert!(!out.exists());
}

#[test]
fn inspect_blob_into_a_closed_pipe_exits_0() {
    // A blob larger than a pipe holds: the writer must meet the closed pipe.
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("large.cath-bundle");
    let (run, blob) = support::fixture_gen::large_run("pipe", 0, 4 << 20);
    support::fixture_gen::build(&run, &b, cathedral_bundle::BuildOptions::default());
    let hash = cathedral_bundle::Digest::of(&blob).to_hex();
    let hash = hash.as_str();
    let out = read_one_byte_then_close(&["inspect", "--bundle", s(&b), "--blob", hash]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn concurrent_keygen_never_overwrites_a_key() {
    for round in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("ops.key");
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_cathedral"))
                    .args(["keygen", "--output", s(&key)])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let codes: Vec<i32> = children.into_iter().map(|c| c.wait_with_output().unwrap().status.code().unwrap()).collect();
        assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "round {round}: {codes:?}");
        assert!(codes.iter().all(|c| *c == 0 || *c == 2), "round {round}: {codes:?}");
        // The pair on disk belongs together.
        let secret = fs::read_to_string(&key).unwrap();
        let public = fs::read_to_string(tmp.path().join("ops.key.pub")).unwrap();
        let id = |text: &str| text.lines().find(|l| l.starts_with("key-id: ")).unwrap().to_string();
        assert_eq!(id(&secret), id(&public), "round {round}");
        let leftovers: Vec<_> =
            fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with('.')).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn key_files_that_cannot_be_used_are_usage_or_io_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), COMPLETED, &[]);
    let dir = tmp.path().join("a-dir");
    fs::create_dir(&dir).unwrap();
    let fifo = tmp.path().join("a-fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let garbage = tmp.path().join("garbage.pub");
    fs::write(&garbage, b"not a key\n").unwrap();
    let missing = tmp.path().join("missing.pub");
    for (flag, path, code) in
        [("--trusted-key", &dir, 2), ("--trusted-key", &fifo, 2), ("--trusted-key", &garbage, 2), ("--trusted-key", &missing, 3)]
    {
        assert_exit(&cathedral(&["verify-bundle", "--bundle", s(&b), flag, s(path)]), code, "");
        assert_exit(&cathedral(&["inspect", "--bundle", s(&b), flag, s(path)]), code, "");
    }
    let trust = tmp.path().join("trust");
    fs::create_dir(&trust).unwrap();
    fs::create_dir(trust.join("x.pub")).unwrap();
    assert_exit(&cathedral(&["verify-bundle", "--bundle", s(&b), "--trust-dir", s(&trust)]), 2, "not a regular file");
    let store = store();
    let out = tmp.path().join("signed.cath-bundle");
    for (path, code) in [(&dir, 2), (&fifo, 2), (&missing, 3)] {
        let o = cathedral(&["bundle", "--store", s(&store), "--run", COMPLETED, "--output", s(&out), "--sign-key", s(path)]);
        assert_exit(&o, code, "");
        assert!(!out.exists());
    }
}

#[test]
fn inspect_applies_the_signature_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("k.key");
    assert_exit(&cathedral(&["keygen", "--output", s(&key)]), 0, "");
    let public = tmp.path().join("k.key.pub");
    let b = bundle(tmp.path(), FAILED, &["--sign-key", s(&key)]);
    assert_exit(&cathedral(&["inspect", "--bundle", s(&b), "--trusted-key", s(&public)]), 0, "");
    // A bad signature is refused by inspect exactly as by verify-bundle, whatever is asked.
    let sig = fs::read_to_string(b.join("MANIFEST.sig")).unwrap();
    let mut lines: Vec<String> = sig.lines().map(String::from).collect();
    let last = lines.len() - 1;
    lines[last] = format!("signature: {}", "0".repeat(128));
    fs::write(b.join("MANIFEST.sig"), lines.join("\n") + "\n").unwrap();
    for what in [&["--json"][..], &["--events"], &["--snapshot"], &[]] {
        let mut args = vec!["inspect", "--bundle", s(&b), "--trusted-key", s(&public)];
        args.extend_from_slice(what);
        let o = cathedral(&args);
        assert_exit(&o, 4, "signature");
        assert!(o.stdout.is_empty(), "{what:?}");
    }
    assert_exit(&cathedral(&["verify-bundle", "--bundle", s(&b), "--trusted-key", s(&public)]), 4, "");
    // An unsigned bundle is shown unless a signature is required.
    let u = bundle(tmp.path(), COMPLETED, &[]);
    assert_exit(&cathedral(&["inspect", "--bundle", s(&u)]), 0, "");
    assert_exit(&cathedral(&["inspect", "--bundle", s(&u), "--require-signature"]), 4, "unsigned");
}

#[test]
fn write_failures_name_the_output_and_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store();
    let out = tmp.path().join("big.cath-bundle");
    // A file-size limit makes every write past 1 KiB fail with EFBIG, as a full disk would.
    let script = format!(
        "trap '' XFSZ; ulimit -f 1; exec {} bundle --store {} --run {FAILED} --output {}",
        env!("CARGO_BIN_EXE_cathedral"),
        s(&store),
        s(&out)
    );
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_exit(&o, 3, "cannot write");
    assert!(!stderr(&o).contains("invalid JSON"), "{}", stderr(&o));
    assert!(stderr(&o).contains("big.cath-bundle"), "{}", stderr(&o));
    assert!(!out.exists());
    let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert!(leftovers.is_empty());
    // A limit is reported as a limit, naming the line where it was hit.
    let o = cathedral(&["bundle", "--store", s(&store), "--run", FAILED, "--output", s(&out), "--max-events", "3"]);
    assert_exit(&o, 1, "events.jsonl:4: event count is 4, over the limit of 3");
    assert!(!stderr(&o).contains("invalid JSON"));
}

#[test]
fn names_and_strings_from_a_bundle_cannot_redraw_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), COMPLETED, &[]);
    fs::write(b.join("evil\u{1b}[2K\r\u{1b}[32mresult   valid\u{1b}[0m"), b"x").unwrap();
    let o = cathedral(&["verify-bundle", "--bundle", s(&b)]);
    assert_exit(&o, 1, "");
    let out = stdout(&o);
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
    assert!(out.contains("INVALID"));
    // JSON output carries the name exactly, escaped the JSON way.
    let o = cathedral(&["verify-bundle", "--bundle", s(&b), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["findings"].as_array().unwrap().iter().any(|f| f["path"].as_str().unwrap().contains('\u{1b}')));
    // Strings inside documents are escaped in the summary too.
    let c = bundle(tmp.path(), FAILED, &[]);
    let m = fs::read_to_string(c.join("metadata.json")).unwrap().replace("\"model-eval\"", "\"model\\u001b[2Keval\"");
    fs::write(c.join("metadata.json"), &m).unwrap();
    let o = cathedral(&["inspect", "--bundle", s(&c), "--fast"]);
    assert!(!stdout(&o).contains('\u{1b}'), "{}", stdout(&o));
    assert!(!stderr(&o).contains('\u{1b}'), "{}", stderr(&o));
}

#[test]
fn quiet_verification_prints_only_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bundle(tmp.path(), COMPLETED, &[]);
    let o = cathedral(&["verify-bundle", "-q", "--bundle", s(&b)]);
    assert_exit(&o, 0, "");
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    fs::write(b.join("stray"), b"x").unwrap();
    let o = cathedral(&["verify-bundle", "-q", "--bundle", s(&b)]);
    assert_exit(&o, 1, "");
    assert!(stdout(&o).contains("[unlisted] stray") && !stdout(&o).contains("checked"), "{}", stdout(&o));
}

/// A private copy of the sample store.
fn store_copy(tmp: &Path) -> std::path::PathBuf {
    let dst = tmp.join("store");
    support::copy_tree(&store(), &dst);
    dst
}

fn completed_run(store: &Path) -> std::path::PathBuf {
    fs::read_dir(store.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains(COMPLETED)).unwrap()
}

#[test]
fn the_run_store_is_read_without_following_links() {
    let tmp = tempfile::tempdir().unwrap();
    let st = store_copy(tmp.path());
    let run = completed_run(&st);
    let out = tmp.path().join("x.cath-bundle");
    let attempt = || cathedral(&["bundle", "--store", s(&st), "--run", COMPLETED, "--output", s(&out)]);
    // blobs/ as a link to a directory outside the store.
    let outside = tmp.path().join("outside");
    fs::rename(run.join("blobs"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, run.join("blobs")).unwrap();
    assert_ne!(code(&attempt()), 0);
    assert!(!out.exists());
    fs::remove_file(run.join("blobs")).unwrap();
    fs::rename(&outside, run.join("blobs")).unwrap();
    // One blob file as a link.
    let blob = fs::read_dir(run.join("blobs")).unwrap().next().unwrap().unwrap().path();
    let moved = tmp.path().join("moved-blob");
    fs::rename(&blob, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &blob).unwrap();
    let o = attempt();
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    fs::remove_file(&blob).unwrap();
    fs::rename(&moved, &blob).unwrap();
    // events.jsonl as a link.
    let events = run.join("events.jsonl");
    let moved = tmp.path().join("moved-events");
    fs::rename(&events, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &events).unwrap();
    assert_ne!(code(&attempt()), 0);
    fs::remove_file(&events).unwrap();
    fs::rename(&moved, &events).unwrap();
    // A dangling .recording link still marks the run as incomplete.
    std::os::unix::fs::symlink("/nonexistent", run.join(".recording")).unwrap();
    assert_exit(&attempt(), 1, "incomplete");
    fs::remove_file(run.join(".recording")).unwrap();
    assert_exit(&attempt(), 0, "");
}

#[test]
fn only_canonical_event_lines_are_captured() {
    let tmp = tempfile::tempdir().unwrap();
    let st = store_copy(tmp.path());
    let run = completed_run(&st);
    let events = run.join("events.jsonl");
    let original = fs::read_to_string(&events).unwrap();
    let first = original.lines().next().unwrap().to_string();
    let value: serde_json::Value = serde_json::from_str(&first).unwrap();
    let mut reordered = serde_json::Map::new();
    for key in ["run_id", "event_id"] {
        reordered.insert(key.into(), value[key].clone());
    }
    for (k, v) in value.as_object().unwrap() {
        reordered.entry(k.clone()).or_insert(v.clone());
    }
    let mut without_null = value.as_object().unwrap().clone();
    let null_key = without_null.iter().find(|(_, v)| v.is_null()).map(|(k, _)| k.clone()).expect("a null field");
    without_null.remove(&null_key);
    let variants = [
        ("reordered fields", serde_json::to_string(&reordered).unwrap()),
        ("extra whitespace", first.replacen(":", ": ", 1)),
        ("a \\u escape", first.replacen("\"kind\"", "\"\\u006bind\"", 1)),
        ("an omitted null field", serde_json::to_string(&without_null).unwrap()),
        ("trailing space", format!("{first} ")),
    ];
    let out = tmp.path().join("x.cath-bundle");
    for (what, line) in variants {
        fs::write(&events, original.replacen(&first, &line, 1)).unwrap();
        let o = cathedral(&["bundle", "--store", s(&st), "--run", COMPLETED, "--output", s(&out)]);
        assert_eq!(code(&o), 1, "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains("events.jsonl:1"), "{what}: {}", stderr(&o));
        assert!(!out.exists());
    }
    fs::write(&events, &original).unwrap();
    let o = cathedral(&["bundle", "--store", s(&st), "--run", COMPLETED, "--output", s(&out)]);
    assert_exit(&o, 0, "");
    let shown = cathedral(&["inspect", "--bundle", s(&out), "--events"]);
    assert_eq!(stdout(&shown), original);
}
