//! Running the `cathedral` binary as a user does.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const COMPLETED: &str = "0ac5e1f5"; // nightly-ingest, completed
pub const FAILED: &str = "ba738917"; // model-eval, failed, with snapshot

pub fn store() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store")
}

pub fn cathedral(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cathedral")).args(args).env_remove("CATHEDRAL_STORE").stdin(Stdio::null()).output().unwrap()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally, not by a signal")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
pub fn assert_exit(o: &Output, expected: i32, stderr_has: &str) {
    assert_eq!(code(o), expected, "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    assert!(stderr(o).contains(stderr_has), "stderr lacks {stderr_has:?}: {}", stderr(o));
}

/// Runs `cathedral ARGS`, reads one byte of its stdout, then closes the
/// pipe as `| head -c1` does, and returns how it ended.
pub fn read_one_byte_then_close(args: &[&str]) -> Output {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cathedral")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap();
    drop(stdout);
    child.wait_with_output().unwrap()
}

/// The largest blob file of a bundle, as a bundle-relative path.
pub fn largest_blob(bundle: &Path) -> String {
    super::files_under(bundle)
        .into_iter()
        .filter(|f| f.starts_with("blobs/"))
        .max_by_key(|f| std::fs::metadata(bundle.join(f)).unwrap().len())
        .unwrap()
}

/// Bundles a sample run into `dir/<name>` and returns the path.
pub fn bundle(dir: &Path, run: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{run}.cath-bundle"));
    let store = store();
    let mut args = vec!["bundle", "--store", store.to_str().unwrap(), "--run", run, "--output", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = cathedral(&args);
    assert_exit(&o, 0, "bundled run");
    out
}
