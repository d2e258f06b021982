//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod fixture_gen;

use std::fs;
use std::path::{Path, PathBuf};

/// Names no bundle path may be: traversal, absolute paths, separators of
/// other systems, NUL, empty components, look-alikes, and control
/// characters built to redraw a terminal. The one table every test of
/// hostile names draws from.
pub const HOSTILE_NAMES: &[&str] = &[
    "..",
    "../metadata.json",
    "/etc/passwd",
    "a\\b",
    "a\u{0}b",
    "a//b",
    "./dag.json",
    "",
    "dag.json/",
    "ｍetadata.json",
    "dag\u{2024}json",
    "blobs/../../x",
    "C:dag.json",
    "x\u{1b}[2K\rresult   valid",
    "a\u{7}b",
    "bidi\u{202e}txt.json",
    "line\nbreak",
];

/// The hostile names that can exist as a file name on this system (one
/// component, no NUL), to create inside a bundle.
pub fn hostile_file_names() -> impl Iterator<Item = &'static str> {
    HOSTILE_NAMES.iter().copied().filter(|n| !n.is_empty() && !n.contains('/') && !n.contains('\0') && *n != "..")
}

/// The shipped fixture bundle called `name`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles").join(name)
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// A writable copy of a fixture bundle inside `tmp`.
pub fn fixture_copy(name: &str, tmp: &Path) -> PathBuf {
    let dst = tmp.join(name);
    copy_tree(&fixture(name), &dst);
    dst
}

/// Every regular file under `root`, as sorted bundle-relative paths.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}
