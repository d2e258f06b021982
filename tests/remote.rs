//! Bundles in object storage, through the real binary. Every test runs
//! against a `file://` remote, and against the S3 server that
//! `scripts/s3-server.sh start` runs when its variables are set
//! (`scripts/test.sh` and CI set them; `CATHEDRAL_REQUIRE_S3=1` makes their
//! absence a failure).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::cli::{code, stderr, stdout};
use support::fixture_gen::{build, fixed_options, noise, sample_run};
use support::{files_under, fixture};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The remotes to test: a fresh prefix in the S3 bucket (when the server
/// runs) and a fresh directory.
fn remotes(tmp: &Path) -> Vec<String> {
    let mut out = vec![format!("file://{}", tmp.join("remote").display())];
    match std::env::var("CATHEDRAL_TEST_BUCKET") {
        Ok(bucket) => out.push(format!("s3://{bucket}/{}", uuid::Uuid::new_v4())),
        Err(_) => assert!(std::env::var_os("CATHEDRAL_REQUIRE_S3").is_none(), "CATHEDRAL_REQUIRE_S3 is set but no S3 server runs"),
    }
    out
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cathedral"));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(code(o), 0, "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    stdout(o)
}

fn bundle_id(bundle: &Path) -> String {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("MANIFEST.json")).unwrap()).unwrap();
    manifest["bundle_id"].as_str().unwrap().to_string()
}

fn push(bundle: &Path, remote: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&run(&["push", "--json", "--bundle", s(bundle), "--remote", remote], &[]))).unwrap()
}

/// The file under a `file://` remote, or the object of the S3 server, as a path to tamper with.
fn object_path(remote: &str, key: &str) -> Option<PathBuf> {
    remote.strip_prefix("file://").map(|root| Path::new(root).join(key))
}

fn assert_same_tree(a: &Path, b: &Path) {
    let files = files_under(a);
    assert_eq!(files, files_under(b), "{} vs {}", a.display(), b.display());
    for f in files {
        assert!(std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(), "{f} differs");
    }
}

#[test]
fn every_fixture_round_trips_byte_for_byte_and_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let names =
        ["small-postcard.cath-bundle", "cbor-events.cath-bundle", "snapshot-zstd.cath-bundle", support::fixture_gen::LEGACY_FIXTURE];
    for remote in remotes(tmp.path()) {
        for name in names {
            let pushed = push(&fixture(name), &remote);
            assert_eq!(pushed["already_present"], false);
            let again = push(&fixture(name), &remote);
            assert_eq!(again["already_present"], true, "a second push of the same bundle uploads nothing");
            let id = bundle_id(&fixture(name));
            let out = tmp.path().join(format!("pulled-{}-{name}", remote.len()));
            ok(&run(&["pull", "--remote", &remote, "--bundle", &id, "--output", s(&out)], &[]));
            assert_same_tree(&fixture(name), &out);
            ok(&run(&["verify-bundle", "--bundle", &format!("{remote}/{id}")], &[]));
            // Remote inspect shows what the local one shows.
            if name.starts_with("snapshot") {
                let local = ok(&run(&["inspect", "--bundle", s(&fixture(name)), "--snapshot"], &[]));
                assert_eq!(ok(&run(&["inspect", "--bundle", &format!("{remote}/{id}"), "--snapshot"], &[])), local);
            }
            let first = ok(&run(&["inspect", "--bundle", s(&fixture(name)), "--events", "--from", "3", "--limit", "2"], &[]));
            assert_eq!(
                ok(&run(&["inspect", "--bundle", &format!("{remote}/{id}"), "--events", "--from", "3", "--limit", "2"], &[])),
                first
            );
            let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
            let by_id = run(&["inspect", "--bundle", &format!("{remote}/{id}"), "--event", line["event_id"].as_str().unwrap()], &[]);
            assert_eq!(ok(&by_id), format!("{}\n", first.lines().next().unwrap()));
            // What was checked is said: events through the outboards of a 1.1 bundle, not at all in a 1.0 one.
            let said = if name == support::fixture_gen::LEGACY_FIXTURE { "not checked" } else { "through their outboards" };
            assert!(stderr(&by_id).contains(said), "the output says what was checked: {}", stderr(&by_id));
        }
        // The archive form pushes as the same bundle.
        let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/archives/small-postcard.cath-bundle.tar.zst");
        assert_eq!(push(&archive, &remote)["already_present"], true);
        let listed: serde_json::Value = serde_json::from_str(&ok(&run(&["ls", "--json", "--remote", &remote], &[]))).unwrap();
        let mut ids: Vec<&str> = listed.as_array().unwrap().iter().map(|e| e["bundle_id"].as_str().unwrap()).collect();
        ids.sort();
        let mut expected: Vec<String> = names.iter().map(|n| bundle_id(&fixture(n))).collect();
        expected.sort();
        assert_eq!(ids, expected);
        assert!(listed.as_array().unwrap().iter().all(|e| e["size"].as_u64().unwrap() > 0 && e["workflow"].is_string()));
    }
}

/// The blobs every run of `sharing_runs` holds besides the added ones.
const BASE_BLOBS: u64 = 4;

/// Two runs sharing `shared` of `total` added blobs of `size` bytes (and
/// the `BASE_BLOBS` small ones of the sample run).
fn sharing_runs(dir: &Path, total: usize, shared: usize, size: usize) -> (PathBuf, PathBuf) {
    let mut out = Vec::new();
    for (k, label) in ["first", "second"].iter().enumerate() {
        let mut run = sample_run("shared", 2, false, false);
        for i in 0..total {
            let tag = if i < shared { format!("common/{i}") } else { format!("{label}/{i}") };
            run.blobs.push((noise(&tag, size), cathedral_bundle::format::BlobFormat::Raw));
        }
        let path = dir.join(format!("{label}.cath-bundle"));
        build(&run, &path, fixed_options(&format!("{label}{k}"), cathedral_bundle::Encoding::Postcard, None));
        out.push(path);
    }
    (out.remove(0), out.remove(0))
}

#[test]
fn a_second_push_uploads_only_the_blobs_the_remote_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = sharing_runs(tmp.path(), 20, 18, 64 << 10);
    for remote in remotes(tmp.path()) {
        let a = push(&first, &remote);
        let b = push(&second, &remote);
        assert_eq!(
            (a["blobs_uploaded"].as_u64(), b["blobs_uploaded"].as_u64(), b["blobs_present"].as_u64()),
            (Some(20 + BASE_BLOBS), Some(2), Some(18 + BASE_BLOBS))
        );
        let ratio = b["bytes_uploaded"].as_f64().unwrap() / a["bytes_uploaded"].as_f64().unwrap();
        assert!(ratio <= 0.15, "second push sent {ratio:.2} of the first");
        for bundle in [&first, &second] {
            ok(&run(&["verify-bundle", "--bundle", &format!("{remote}/{}", bundle_id(bundle))], &[]));
        }
    }
}

#[test]
fn concurrent_pushes_sharing_blobs_both_land_and_gc_keeps_what_they_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = sharing_runs(tmp.path(), 40, 30, 32 << 10);
    for remote in remotes(tmp.path()) {
        let children: Vec<_> = [&first, &second]
            .iter()
            .map(|b| {
                Command::new(env!("CARGO_BIN_EXE_cathedral"))
                    .args(["push", "--quiet", "--bundle", s(b), "--remote", &remote])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // A gc racing the pushes either finds the remote busy or keeps every blob they reference.
        let gc = run(&["gc", "--remote", &remote], &[]);
        assert!(code(&gc) == 0 || stderr(&gc).contains("busy"), "{}", stderr(&gc));
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        ok(&run(&["gc", "--remote", &remote], &[]));
        for bundle in [&first, &second] {
            ok(&run(&["verify-bundle", "--bundle", &format!("{remote}/{}", bundle_id(bundle))], &[]));
        }
    }
}

#[test]
fn a_killed_push_leaves_nothing_visible_and_a_later_push_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (big, _) = sharing_runs(tmp.path(), 200, 0, 64 << 10);
    let id = bundle_id(&big);
    for remote in remotes(tmp.path()) {
        for delay_ms in [30u64, 120, 400] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_cathedral"))
                .args(["push", "--quiet", "--bundle", s(&big), "--remote", &remote])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = child.kill();
            let _ = child.wait();
            // Either the push committed (and the bundle verifies) or nothing lists or verifies.
            let listed = ok(&run(&["ls", "--json", "--remote", &remote], &[]));
            let verify = run(&["verify-bundle", "--bundle", &format!("{remote}/{id}")], &[]);
            if listed.contains(&id) {
                assert_eq!(code(&verify), 0, "a listed bundle verifies: {}", stderr(&verify));
                ok(&run(&["rm", "--remote", &remote, "--bundle", &id], &[]));
            } else {
                assert_eq!(code(&verify), 3, "an uncommitted push is not a bundle: {}", stderr(&verify));
            }
            // The dead push's lock keeps gc out until it is stale; then gc clears what it left.
            ok(&run(&["gc", "--remote", &remote, "--stale-lock-after", "0"], &[]));
        }
        let resumed = push(&big, &remote);
        assert_eq!(resumed["already_present"], false);
        ok(&run(&["verify-bundle", "--bundle", &format!("{remote}/{id}")], &[]));
    }
}

#[test]
fn gc_refuses_while_a_push_holds_the_remote_and_removes_only_unreferenced_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = sharing_runs(tmp.path(), 10, 6, 4 << 10);
    let remote = format!("file://{}", tmp.path().join("remote").display());
    push(&first, &remote);
    push(&second, &remote);
    // A live push lock: gc is refused, exit 3, naming it.
    let lock = tmp.path().join("remote/locks/push-00000000-0000-4000-8000-000000000001.json");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, b"{}").unwrap();
    let refused = run(&["gc", "--remote", &remote], &[]);
    assert_eq!(code(&refused), 3);
    assert!(stderr(&refused).contains("busy") && stderr(&refused).contains("push-00000000"), "{}", stderr(&refused));
    std::fs::remove_file(&lock).unwrap();
    // Removing the second bundle frees exactly its 4 own blobs.
    let dry = ok(&run(&["rm", "--dry-run", "--remote", &remote, "--bundle", &bundle_id(&second)], &[]));
    assert!(dry.contains("would remove") && dry.contains("MANIFEST.json"));
    ok(&run(&["ls", "--remote", &remote], &[])).contains(&bundle_id(&second)).then_some(()).expect("a dry run removes nothing");
    ok(&run(&["rm", "--remote", &remote, "--bundle", &bundle_id(&second)], &[]));
    let summary: serde_json::Value = serde_json::from_str(&ok(&run(&["gc", "--json", "--dry-run", "--remote", &remote], &[]))).unwrap();
    assert_eq!((summary["blobs_removed"].as_u64(), summary["blobs_kept"].as_u64()), (Some(4), Some(10 + BASE_BLOBS)));
    let summary: serde_json::Value = serde_json::from_str(&ok(&run(&["gc", "--json", "--remote", &remote], &[]))).unwrap();
    assert_eq!(summary["blobs_removed"].as_u64(), Some(4));
    // Released locks are gone for good: a late refresh cannot bring one back.
    for _ in 0..5 {
        ok(&run(&["gc", "--remote", &remote, "--stale-lock-after", "0"], &[]));
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("remote/locks"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "locks left behind: {left:?}");
    }
    ok(&run(&["verify-bundle", "--bundle", &format!("{remote}/{}", bundle_id(&first))], &[]));
    let gone = run(&["verify-bundle", "--bundle", &format!("{remote}/{}", bundle_id(&second))], &[]);
    assert_eq!(code(&gone), 3);
}

/// Overwrites the object `key` of `remote` with `bytes`.
fn put_object(remote: &str, key: &str, bytes: Vec<u8>) {
    use object_store::ObjectStore;
    if let Some(path) = object_path(remote, key) {
        std::fs::write(path, bytes).unwrap();
        return;
    }
    let rest = remote.strip_prefix("s3://").unwrap();
    let (bucket, prefix) = rest.split_once('/').unwrap();
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_endpoint(std::env::var("AWS_ENDPOINT_URL").unwrap())
        .with_allow_http(true)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(store.put(&object_store::path::Path::from(format!("{prefix}/{key}")), bytes.into())).unwrap();
}

#[test]
fn a_tampered_object_is_named_by_verify_and_pull_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture("snapshot-zstd.cath-bundle");
    let id = bundle_id(&bundle);
    for remote in remotes(tmp.path()) {
        push(&bundle, &remote);
        // Flip one byte of the log.
        let mut log = std::fs::read(bundle.join("events.cath-log")).unwrap();
        let at = log.len() / 2;
        log[at] ^= 1;
        put_object(&remote, &format!("bundles/{id}/events.cath-log"), log);
        let verify = run(&["verify-bundle", "--bundle", &format!("{remote}/{id}")], &[]);
        assert_eq!(code(&verify), 1, "{}", stdout(&verify));
        assert!(stdout(&verify).contains("events.cath-log"), "{}", stdout(&verify));
        // Events read by range are checked through the outboard: the changed group is refused.
        let events = run(&["inspect", "--bundle", &format!("{remote}/{id}"), "--events"], &[]);
        assert_eq!(code(&events), 1, "{}", stderr(&events));
        assert!(stdout(&events).is_empty());
        assert!(
            stderr(&events).contains("events.cath-log") && stderr(&events).contains("not what the manifest commits to"),
            "{}",
            stderr(&events)
        );
        let out = tmp.path().join(format!("pulled-{}", remote.len()));
        let pulled = run(&["pull", "--remote", &remote, "--bundle", &id, "--output", s(&out)], &[]);
        assert_eq!(code(&pulled), 1, "{}", stderr(&pulled));
        assert!(stderr(&pulled).contains("events.cath-log"));
        assert!(!out.exists());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("cath-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
        // A changed document is refused by remote inspect too.
        put_object(&remote, &format!("bundles/{id}/metadata.json"), b"{}".to_vec());
        let inspect = run(&["inspect", "--bundle", &format!("{remote}/{id}")], &[]);
        assert_eq!(code(&inspect), 1, "{}", stderr(&inspect));
        assert!(stderr(&inspect).contains("metadata.json"));
        // An object larger than the manifest declares is refused before it is read whole.
        put_object(&remote, &format!("bundles/{id}/metadata.json"), vec![b' '; 8 << 20]);
        let inspect = run(&["inspect", "--bundle", &format!("{remote}/{id}")], &[]);
        assert_eq!(code(&inspect), 1, "{}", stderr(&inspect));
        assert!(stderr(&inspect).contains("object size"), "{}", stderr(&inspect));
        put_object(&remote, &format!("bundles/{id}/blobs.cath-remote"), vec![b'0'; 8 << 20]);
        let listed = run(&["ls", "--remote", &remote], &[]);
        assert_eq!(code(&listed), 1, "{}", stderr(&listed));
    }
}

#[test]
fn bad_credentials_and_unreachable_endpoints_are_network_errors_without_secrets() {
    let Ok(bucket) = std::env::var("CATHEDRAL_TEST_BUCKET") else { return };
    let remote = format!("s3://{bucket}/creds");
    let secret = "wrong-secret-0123456789abcdefghijklmnopqrst";
    let wrong = run(&["ls", "--remote", &remote], &[("AWS_SECRET_ACCESS_KEY", secret)]);
    assert_eq!(code(&wrong), 3, "{}", stderr(&wrong));
    assert!(!stderr(&wrong).contains(secret), "the secret leaked: {}", stderr(&wrong));
    let start = std::time::Instant::now();
    let unreachable = run(&["ls", "--remote", &remote], &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")]);
    assert_eq!(code(&unreachable), 3, "{}", stderr(&unreachable));
    assert!(start.elapsed().as_secs() < 60, "retries are bounded");
    let plain = run(&["ls", "--remote", &remote], &[("AWS_ENDPOINT_URL", "http://s3.example.invalid:9000"), ("AWS_ALLOW_HTTP", "")]);
    assert_eq!(code(&plain), 2, "plain HTTP off loopback needs AWS_ALLOW_HTTP: {}", stderr(&plain));
}

#[test]
fn a_signed_bundle_still_verifies_as_signed_after_a_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    ok(&run(&["keygen", "--output", s(&key)], &[]));
    let bundle = tmp.path().join("signed.cath-bundle");
    let store = support::cli::store();
    ok(&run(&["bundle", "--store", s(&store), "--run", support::cli::FAILED, "--output", s(&bundle), "--sign-key", s(&key)], &[]));
    let public = tmp.path().join("key.pub");
    assert!(public.exists());
    for remote in remotes(tmp.path()) {
        // Push verifies first, under the same signature policy as verify-bundle.
        let refused = run(&["push", "--bundle", s(&bundle), "--remote", &remote], &[]);
        assert_eq!(code(&refused), 4, "an untrusted signer is not pushed: {}", stderr(&refused));
        ok(&run(&["push", "--bundle", s(&bundle), "--remote", &remote, "--trusted-key", s(&public)], &[]));
        let id = bundle_id(&bundle);
        let listed: serde_json::Value = serde_json::from_str(&ok(&run(&["ls", "--json", "--remote", &remote], &[]))).unwrap();
        assert!(listed[0]["signer"].is_string(), "ls names the signer: {listed}");
        let out = tmp.path().join(format!("pulled-{}.cath-bundle", remote.len()));
        ok(&run(
            &["pull", "--remote", &remote, "--bundle", &id, "--output", s(&out), "--trusted-key", s(&public), "--require-signature"],
            &[],
        ));
        assert_same_tree(&bundle, &out);
        let untrusted = run(&["inspect", "--bundle", &format!("{remote}/{id}"), "--require-signature"], &[]);
        assert_eq!(code(&untrusted), 4, "an untrusted signer is refused: {}", stderr(&untrusted));
        ok(&run(&["inspect", "--bundle", &format!("{remote}/{id}"), "--trusted-key", s(&public), "--require-signature"], &[]));
    }
}
