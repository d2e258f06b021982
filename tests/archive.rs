//! Archives (`.cath-bundle.tar.zst`): round trips, interoperability with
//! `tar` and `zstd`, and hostile archives. Every hostile archive is refused
//! by `verify-bundle`, `unpack` and `import` with a classified finding,
//! and `unpack`/`import` leave nothing behind: no output, no staging, nothing
//! written outside the output directory.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use cathedral_bundle::store::RunStore;
use cathedral_bundle::{BundleLoader, FindingCode, PackOptions, VerifyReport};
use support::cli::{cathedral, code, stderr, stdout};
use support::{files_under, fixture};

use FindingCode::*;

const FIXTURES: [&str; 3] = ["small-postcard.cath-bundle", "cbor-events.cath-bundle", "snapshot-zstd.cath-bundle"];
const TOP: &str = "x.cath-bundle";

fn pack(bundle: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    BundleLoader::new().pack(bundle, &out, PackOptions::default()).unwrap_or_else(|e| panic!("pack {}: {e}", bundle.display()));
    out
}

fn verify(archive: &Path) -> VerifyReport {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = archive.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(BundleLoader::new().verify(&path).expect("examinable"));
    });
    rx.recv_timeout(std::time::Duration::from_secs(30)).expect("verification hung or panicked")
}

fn tree_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
    files_under(root).into_iter().map(|f| (f.clone(), fs::read(root.join(&f)).unwrap())).collect()
}

#[test]
fn pack_unpack_round_trip_is_exact_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let a = pack(&fixture(name), tmp.path(), &format!("a-{name}.tar.zst"));
        let b = pack(&fixture(name), tmp.path(), &format!("a-{name}.tar.zst").replace("a-", "b-"));
        let (ta, tb) = (decompress(&a), decompress(&b));
        assert_eq!(ta.len(), tb.len());
        // The same bundle, under the same top name, gives the same bytes.
        let again = tmp.path().join("again").join(a.file_name().unwrap());
        BundleLoader::new().pack(fixture(name), &again, PackOptions::default()).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&again).unwrap(), "{name}: archive not reproducible");
        assert!(verify(&a).is_valid(), "{name}: {:#?}", verify(&a).findings);
        let out = tmp.path().join(format!("out-{name}"));
        BundleLoader::new().unpack(&a, &out, false).unwrap();
        assert_eq!(tree_bytes(&fixture(name)), tree_bytes(&out), "{name}: unpacked tree differs");
        assert!(BundleLoader::new().verify(&out).unwrap().is_valid());
    }
}

#[test]
fn archives_from_the_cli_and_import_round_trip_in_both_encodings() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::cli::store();
    for (run, encoding) in [(support::cli::COMPLETED, "postcard"), (support::cli::FAILED, "cbor")] {
        // One step: capture straight into an archive, with a fixed id and time.
        let archive = tmp.path().join(format!("{run}-{encoding}.cath-bundle.tar.zst"));
        let fixed = ["--encoding", encoding, "--bundle-id", "00000000-0000-4000-8000-000000000001", "--created-at", "2026-01-01T00:00:00Z"];
        let mut args = vec!["bundle", "--store", store.to_str().unwrap(), "--run", run, "--output", archive.to_str().unwrap(), "-q"];
        args.extend(fixed);
        let o = cathedral(&args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let first = tmp.path().join(format!("{run}-{encoding}-first.cath-bundle"));
        assert_eq!(code(&cathedral(&["unpack", "--bundle", archive.to_str().unwrap(), "--output", first.to_str().unwrap(), "-q"])), 0);
        // Archive → import into an empty store → bundle again: the same files.
        let other = tmp.path().join(format!("store-{encoding}"));
        let o = cathedral(&["import", "--bundle", archive.to_str().unwrap(), "--store", other.to_str().unwrap(), "-q"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let again = tmp.path().join(format!("{run}-{encoding}-again.cath-bundle"));
        let mut args = vec!["bundle", "--store", other.to_str().unwrap(), "--run", run, "--output", again.to_str().unwrap(), "-q"];
        args.extend(fixed);
        assert_eq!(code(&cathedral(&args)), 0);
        assert_eq!(tree_bytes(&first), tree_bytes(&again), "{run} {encoding}: import round trip changed the bundle");
        // A second import of the same run is refused, and changes nothing.
        let o = cathedral(&["import", "--bundle", first.to_str().unwrap(), "--store", other.to_str().unwrap()]);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
        assert_eq!(fs::read_dir(other.join("runs")).unwrap().count(), 1, "nothing else in the store");
    }
}

#[test]
fn generated_runs_round_trip_through_archive_and_store() {
    use cathedral_bundle::Encoding;
    let tmp = tempfile::tempdir().unwrap();
    for (i, encoding) in [Encoding::Postcard, Encoding::Cbor].into_iter().enumerate() {
        let run = support::fixture_gen::sample_run(&format!("archive-{i}"), 6 + i, i == 1, i == 1);
        let src = tmp.path().join(format!("src-{i}"));
        support::fixture_gen::record(&src, &run);
        let options = || support::fixture_gen::fixed_options(&format!("archive-{i}"), encoding, Some(3));
        let store = RunStore::new(&src);
        let id = run.metadata.run_id;
        let archive = tmp.path().join(format!("g{i}.cath-bundle.tar.zst"));
        cathedral_bundle::store::bundle_run(&store, &id, &archive, options(), &|_| {}).unwrap();
        let dst = RunStore::new(tmp.path().join(format!("dst-{i}")));
        let summary = dst.import(&archive, &BundleLoader::new()).unwrap();
        assert_eq!(summary.run_id, id);
        let a = tmp.path().join(format!("a-{i}.cath-bundle"));
        let b = tmp.path().join(format!("b-{i}.cath-bundle"));
        cathedral_bundle::store::bundle_run(&store, &id, &a, options(), &|_| {}).unwrap();
        cathedral_bundle::store::bundle_run(&dst, &id, &b, options(), &|_| {}).unwrap();
        assert_eq!(tree_bytes(&a), tree_bytes(&b), "encoding {encoding}");
        assert!(matches!(
            dst.import(&archive, &BundleLoader::new()),
            Err(cathedral_bundle::LoadError::Error(cathedral_bundle::Error::Exists { .. }))
        ));
    }
}

#[test]
fn ordinary_tools_read_the_shipped_archive() {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/archives/small-postcard.cath-bundle.tar.zst");
    let shipped = fs::read(&archive).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fresh = pack(&fixture("small-postcard.cath-bundle"), tmp.path(), "small-postcard.cath-bundle.tar.zst");
    assert_eq!(shipped, fs::read(&fresh).unwrap(), "regenerating the shipped archive would change it");
    if Command::new("tar").arg("--version").output().is_err() || Command::new("zstd").arg("--version").output().is_err() {
        eprintln!("tar or zstd is not installed: interoperability not checked here (CI checks it)");
        return;
    }
    let listing = Command::new("sh").arg("-c").arg(format!("zstd -dc '{}' | tar -t", archive.display())).output().unwrap();
    assert!(listing.status.success());
    let listed = String::from_utf8(listing.stdout).unwrap();
    assert!(listed.starts_with("small-postcard.cath-bundle/\nsmall-postcard.cath-bundle/MANIFEST.json\n"), "{listed}");
    let x = Command::new("tar").args(["--zstd", "-xf"]).arg(&archive).arg("-C").arg(tmp.path()).output().unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let out = tmp.path().join("small-postcard.cath-bundle");
    assert_eq!(tree_bytes(&out), tree_bytes(&fixture("small-postcard.cath-bundle")));
    assert_eq!(code(&cathedral(&["verify-bundle", "--bundle", out.to_str().unwrap(), "-q"])), 0);
}

#[test]
fn verify_and_inspect_give_the_same_answers_for_an_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("snapshot-zstd.cath-bundle");
    let archive = pack(&dir, tmp.path(), "s.cath-bundle.tar.zst");
    let (d, a) = (BundleLoader::new().verify(&dir).unwrap(), verify(&archive));
    assert_eq!(
        (d.stats.files, d.stats.blobs, d.stats.events, d.signature.clone()),
        (a.stats.files, a.stats.blobs, a.stats.events, a.signature)
    );
    for args in [&["--events"][..], &["--events", "--from", "3", "--limit", "4"], &["--snapshot"], &["--time", "5"]] {
        let on = |b: &Path| {
            let mut all = vec!["inspect", "--bundle", b.to_str().unwrap()];
            all.extend_from_slice(args);
            cathedral(&all)
        };
        let (x, y) = (on(&dir), on(&archive));
        assert_eq!((code(&x), stdout(&x)), (code(&y), stdout(&y)), "{args:?}");
    }
}

// ---------------------------------------------------------------------------
// Hostile archives

/// One tar entry: its header block (to be re-signed unless `keep_sum`) and data.
#[derive(Clone)]
struct Entry {
    header: [u8; 512],
    data: Vec<u8>,
}

impl Entry {
    fn name(&self) -> String {
        let h = tar::Header::from_byte_slice(&self.header);
        String::from_utf8_lossy(&h.path_bytes()).into_owned()
    }

    fn new(name: &str, typeflag: u8, data: &[u8]) -> Entry {
        let mut h = tar::Header::new_ustar();
        // Names set raw, so that absolute and `..` names can be written.
        h.as_old_mut().name[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        h.set_mode(if typeflag == b'5' { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(946_684_800);
        h.set_size(data.len() as u64);
        h.as_old_mut().linkflag = [typeflag];
        let mut e = Entry { header: *h.as_bytes(), data: data.to_vec() };
        e.sign();
        e
    }

    fn sign(&mut self) {
        let mut h = tar::Header::from_byte_slice(&self.header).clone();
        h.set_cksum();
        self.header = *h.as_bytes();
    }

    fn set_size(&mut self, size: u64) {
        let mut h = tar::Header::from_byte_slice(&self.header).clone();
        h.set_size(size);
        self.header = *h.as_bytes();
        self.sign();
    }
}

fn decompress(archive: &Path) -> Vec<u8> {
    zstd::stream::decode_all(fs::File::open(archive).unwrap()).unwrap()
}

/// The entries of a canonical tar stream.
fn entries(tar: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut at = 0;
    while tar[at..at + 512].iter().any(|&b| b != 0) {
        let header: [u8; 512] = tar[at..at + 512].try_into().unwrap();
        let size = tar::Header::from_byte_slice(&header).entry_size().unwrap() as usize;
        out.push(Entry { header, data: tar[at + 512..at + 512 + size].to_vec() });
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

fn serialize(entries: &[Entry]) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        tar.extend_from_slice(&e.header);
        tar.extend_from_slice(&e.data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

fn compress(tar: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(tar, 3).unwrap()
}

/// The canonical entries of a fixture, under the top directory `x.cath-bundle`.
fn base(name: &str) -> Vec<Entry> {
    let tmp = tempfile::tempdir().unwrap();
    entries(&decompress(&pack(&fixture(name), tmp.path(), &format!("{TOP}.tar.zst"))))
}

fn find(entries: &[Entry], suffix: &str) -> usize {
    entries.iter().position(|e| e.name().ends_with(suffix)).unwrap_or_else(|| panic!("no entry {suffix}"))
}

fn first_blob(entries: &[Entry]) -> usize {
    entries.iter().position(|e| e.name().contains("/blobs/") && !e.name().ends_with('/')).unwrap()
}

type Case = (&'static str, Box<dyn Fn() -> Vec<u8>>, FindingCode, &'static str);

fn tar_case(f: impl Fn(&mut Vec<Entry>) + 'static) -> Box<dyn Fn() -> Vec<u8>> {
    Box::new(move || {
        let mut e = base("snapshot-zstd.cath-bundle");
        f(&mut e);
        compress(&serialize(&e))
    })
}

fn raw_case(f: impl Fn(Vec<u8>) -> Vec<u8> + 'static) -> Box<dyn Fn() -> Vec<u8>> {
    Box::new(move || f(compress(&serialize(&base("snapshot-zstd.cath-bundle")))))
}

fn insert_before_blobs(entries: &mut Vec<Entry>, e: Entry) {
    let at = find(entries, "/blobs/");
    entries.insert(at, e);
}

fn cases() -> Vec<Case> {
    let top = |rest: &str| format!("{TOP}/{rest}");
    vec![
        // Names
        ("absolute name", tar_case(|e| insert_before_blobs(e, Entry::new("/tmp/evil", b'0', b"x"))), InvalidPath, "/tmp/evil"),
        ("dot-dot name", tar_case(move |e| insert_before_blobs(e, Entry::new(&format!("{TOP}/../evil"), b'0', b"x"))), InvalidPath, "evil"),
        (
            "outside the top directory",
            tar_case(|e| insert_before_blobs(e, Entry::new("other.cath-bundle/x", b'0', b"x"))),
            InvalidPath,
            "other",
        ),
        (
            "file not in the layout",
            tar_case(move |e| insert_before_blobs(e, Entry::new(&top("notes.txt"), b'0', b"x"))),
            Unlisted,
            "notes.txt",
        ),
        ("backslash name", tar_case(move |e| insert_before_blobs(e, Entry::new(&top("a\\b"), b'0', b"x"))), InvalidPath, "a\\b"),
        ("control character in name", tar_case(move |e| insert_before_blobs(e, Entry::new(&top("a\x1bb"), b'0', b"x"))), InvalidPath, "a"),
        // Entry types
        ("symlink", tar_case(move |e| insert_before_blobs(e, Entry::new(&top("link"), b'2', b""))), Symlink, "link"),
        (
            "symlink in place of a document",
            tar_case(move |e| {
                let i = find(e, "/metadata.json");
                e[i] = Entry::new(&top("metadata.json"), b'2', b"");
            }),
            Symlink,
            "metadata.json",
        ),
        ("hard link", tar_case(move |e| insert_before_blobs(e, Entry::new(&top("hard"), b'1', b""))), NotRegularFile, "hard"),
        ("character device", tar_case(move |e| insert_before_blobs(e, Entry::new(&top("dev"), b'3', b""))), NotRegularFile, "dev"),
        ("block device", tar_case(move |e| insert_before_blobs(e, Entry::new(&top("blk"), b'4', b""))), NotRegularFile, "blk"),
        ("FIFO", tar_case(move |e| insert_before_blobs(e, Entry::new(&top("fifo"), b'6', b""))), NotRegularFile, "fifo"),
        (
            "directory where a file belongs",
            tar_case(move |e| {
                let i = find(e, "/dag.json");
                e[i] = Entry::new(&top("dag.json/"), b'5', b"");
            }),
            Missing,
            "dag.json",
        ),
        (
            "pax header renaming the next entry",
            tar_case(move |e| {
                let i = find(e, "/metadata.json");
                e.insert(i, Entry::new(&top("PaxHeaders/metadata.json"), b'x', b"30 path=x.cath-bundle/evil.txt\n"));
            }),
            Malformed,
            "pax",
        ),
        ("global pax header", tar_case(|e| e.insert(1, Entry::new("pax_global_header", b'g', b"19 comment=hello!\n"))), Malformed, "pax"),
        (
            "GNU long name",
            tar_case(move |e| {
                let i = find(e, "/metadata.json");
                e.insert(i, Entry::new("././@LongLink", b'L', format!("{TOP}/{}\0", "a".repeat(200)).as_bytes()));
            }),
            Malformed,
            "GNU",
        ),
        ("sparse entry", tar_case(move |e| insert_before_blobs(e, Entry::new(&top("sparse"), b'S', b""))), Malformed, "sparse"),
        // Duplicates and order
        (
            "duplicate blob",
            tar_case(|e| {
                let i = first_blob(e);
                let dup = e[i].clone();
                e.insert(i + 1, dup);
            }),
            Malformed,
            "duplicate",
        ),
        (
            "duplicate document",
            tar_case(|e| {
                let i = find(e, "/dag.json");
                let dup = e[i].clone();
                e.insert(i + 1, dup);
            }),
            Malformed,
            "duplicate",
        ),
        (
            "duplicate manifest",
            tar_case(|e| {
                let dup = e[1].clone();
                e.insert(3, dup);
            }),
            Malformed,
            "duplicate",
        ),
        (
            "log before the index",
            tar_case(|e| {
                let (i, l) = (find(e, "/events.cath-idx"), find(e, "/events.cath-log"));
                e.swap(i, l);
            }),
            Missing,
            "events.cath-idx",
        ),
        ("manifest not first", tar_case(|e| e.swap(1, 2)), Missing, "MANIFEST.json"),
        (
            "no top directory entry",
            tar_case(|e| {
                e.remove(0);
            }),
            Inconsistent,
            "top directory",
        ),
        (
            "blob missing",
            tar_case(|e| {
                let i = first_blob(e);
                e.remove(i);
            }),
            Missing,
            "blobs/",
        ),
        (
            "unlisted blob",
            tar_case(move |e| {
                let fake = format!("{TOP}/blobs/ff/{}", "f".repeat(64));
                let last = e.len();
                e.insert(last, Entry::new(&format!("{TOP}/blobs/ff/"), b'5', b""));
                e.push(Entry::new(&fake, b'0', b"CATHBLB"));
            }),
            Unlisted,
            "ffff",
        ),
        ("empty shard directory", tar_case(move |e| e.push(Entry::new(&format!("{TOP}/blobs/fe/"), b'5', b""))), Unlisted, "blobs/fe"),
        // Header bytes
        (
            "non-canonical mode",
            tar_case(|e| {
                let i = find(e, "/dag.json");
                e[i].header[100..108].copy_from_slice(b"0000777\0");
                e[i].sign();
            }),
            Inconsistent,
            "mode",
        ),
        (
            "user name in header",
            tar_case(|e| {
                let i = find(e, "/dag.json");
                e[i].header[265..269].copy_from_slice(b"root");
                e[i].sign();
            }),
            Inconsistent,
            "uname",
        ),
        (
            "bad header checksum",
            tar_case(|e| {
                let i = find(e, "/dag.json");
                e[i].header[148] = b'7';
            }),
            Inconsistent,
            "chksum",
        ),
        (
            "size over the committed size",
            tar_case(|e| {
                let i = find(e, "/dag.json");
                e[i].data.extend_from_slice(b"   ");
                let size = e[i].data.len() as u64;
                e[i].set_size(size);
            }),
            SizeMismatch,
            "dag.json",
        ),
        (
            "base-256 size field",
            tar_case(|e| {
                let i = find(e, "/dag.json");
                let size = e[i].data.len() as u64;
                e[i].header[124..136].fill(0);
                e[i].header[124] = 0x80;
                e[i].header[128..136].copy_from_slice(&size.to_be_bytes());
                e[i].sign();
            }),
            Inconsistent,
            "size",
        ),
        (
            "nonzero padding",
            tar_case(|e| {
                let i = find(e, "/dag.json");
                let len = e[i].data.len();
                let mut tail = vec![0u8; len.div_ceil(512) * 512 - len];
                if let Some(b) = tail.first_mut() {
                    *b = b'!';
                }
                e[i].data.extend_from_slice(&tail);
                // The header keeps the real size: the '!' lands in the padding.
                e[i].data.truncate(len + 1);
            }),
            Malformed,
            "padding",
        ),
        // Content
        (
            "one byte of the log changed",
            tar_case(|e| {
                let i = find(e, "/events.cath-log");
                let n = e[i].data.len();
                e[i].data[n / 2] ^= 1;
            }),
            HashMismatch,
            "events.cath-log",
        ),
        (
            "one byte of a blob changed",
            tar_case(|e| {
                let i = first_blob(e);
                let n = e[i].data.len();
                e[i].data[n - 1] ^= 1;
            }),
            HashMismatch,
            "blobs/",
        ),
        // The stream
        (
            "truncated compressed file",
            raw_case(|mut z| {
                z.truncate(z.len() / 2);
                z
            }),
            Malformed,
            "truncated",
        ),
        (
            "trailing garbage after the frame",
            raw_case(|mut z| {
                z.extend_from_slice(b"garbage");
                z
            }),
            Malformed,
            "follow the zstd frame",
        ),
        (
            "two concatenated frames",
            raw_case(|mut z| {
                let again = z.clone();
                z.extend_from_slice(&again);
                z
            }),
            Malformed,
            "follow the zstd frame",
        ),
        (
            "skippable frame first",
            raw_case(|z| {
                let mut s = vec![0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
                s.extend_from_slice(&z);
                s
            }),
            BadMagic,
            "skippable",
        ),
        (
            "skippable frame after",
            raw_case(|mut z| {
                z.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
                z
            }),
            Malformed,
            "follow the zstd frame",
        ),
        ("not zstd at all", Box::new(|| serialize(&base("snapshot-zstd.cath-bundle"))), BadMagic, "zstd"),
        ("empty file", Box::new(Vec::new), BadMagic, "zstd"),
        (
            "tar stream cut inside an entry",
            Box::new(|| {
                let tar = serialize(&base("snapshot-zstd.cath-bundle"));
                compress(&tar[..tar.len() / 2])
            }),
            Truncated,
            "events.cath-log",
        ),
        (
            "no end-of-archive blocks",
            Box::new(|| {
                let tar = serialize(&base("snapshot-zstd.cath-bundle"));
                compress(&tar[..tar.len() - 1024])
            }),
            Truncated,
            "tar header",
        ),
        (
            "one end block and data",
            Box::new(|| {
                let mut tar = serialize(&base("snapshot-zstd.cath-bundle"));
                let n = tar.len();
                tar[n - 512] = 1;
                compress(&tar)
            }),
            Malformed,
            "end of archive",
        ),
        (
            "zeros after the end of archive",
            Box::new(|| {
                let mut tar = serialize(&base("snapshot-zstd.cath-bundle"));
                tar.extend_from_slice(&[0u8; 4096]);
                compress(&tar)
            }),
            Malformed,
            "after the end-of-archive",
        ),
        (
            "zstd window over 2^27",
            Box::new(|| {
                let tar = serialize(&base("snapshot-zstd.cath-bundle"));
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
                enc.window_log(30).unwrap();
                // Without a content size in the frame header, the window is what is declared.
                enc.include_contentsize(false).unwrap();
                enc.long_distance_matching(true).unwrap();
                enc.write_all(&tar).unwrap();
                enc.finish().unwrap()
            }),
            Unsupported,
            "window",
        ),
        (
            "decompression bomb in an unlisted entry",
            tar_case(move |e| {
                insert_before_blobs(e, Entry::new(&top("bomb"), b'0', &vec![0u8; 80 << 20]));
            }),
            LimitExceeded,
            "not part of the bundle",
        ),
        (
            "header declaring a huge entry",
            tar_case(|e| {
                let i = find(e, "/events.cath-log");
                e[i].set_size(1 << 40);
            }),
            LimitExceeded,
            "archive content",
        ),
    ]
}

#[test]
fn hostile_archives_are_refused_by_every_reader_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (what, make, code_expected, needle)) in cases().into_iter().enumerate() {
        let dir = tmp.path().join(format!("case-{i}"));
        fs::create_dir(&dir).unwrap();
        let archive = dir.join("in.cath-bundle.tar.zst");
        fs::write(&archive, make()).unwrap();
        let report = verify(&archive);
        let named = report.findings.iter().any(|f| f.code == code_expected && (f.path.contains(needle) || f.message.contains(needle)));
        if report.is_valid() || !named {
            failures.push(format!("{what}: expected {code_expected} naming {needle:?}, got {:#?}", report.findings));
            continue;
        }
        let a = archive.to_str().unwrap();
        let out = dir.join("out.cath-bundle");
        let o = cathedral(&["unpack", "--bundle", a, "--output", out.to_str().unwrap(), "-q"]);
        let store = dir.join("store");
        let imported = cathedral(&["import", "--bundle", a, "--store", store.to_str().unwrap(), "-q"]);
        let inspected = cathedral(&["inspect", "--bundle", a, "--events"]);
        for (verb, o) in [("unpack", &o), ("import", &imported), ("inspect", &inspected)] {
            if code(o) != 1 || !stdout(o).is_empty() && verb == "inspect" {
                failures.push(format!("{what}: {verb} exited {} (stdout {} bytes): {}", code(o), o.stdout.len(), stderr(o)));
            }
        }
        // Nothing but the archive and the (empty) store: no output, no staging, nothing outside.
        let mut left: Vec<String> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let runs = store.join("runs");
        let in_store = fs::read_dir(&runs).map(|d| d.count()).unwrap_or(0);
        if left != ["in.cath-bundle.tar.zst", "store"] && left != ["in.cath-bundle.tar.zst"] || in_store != 0 {
            failures.push(format!("{what}: left behind {left:?}, {in_store} entries in the store's runs/"));
        }
        if tmp.path().join("evil").exists() || Path::new("/tmp/evil").exists() {
            failures.push(format!("{what}: wrote outside the output directory"));
        }
    }
    assert!(failures.is_empty(), "{} hostile archive case(s) failed:\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn unpack_refuses_to_overwrite_and_replaces_only_a_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = pack(&fixture("small-postcard.cath-bundle"), tmp.path(), "s.cath-bundle.tar.zst");
    let a = archive.to_str().unwrap();
    let mine = tmp.path().join("mine");
    fs::create_dir(&mine).unwrap();
    fs::write(mine.join("notes.txt"), b"keep me").unwrap();
    let o = cathedral(&["unpack", "--bundle", a, "--output", mine.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = cathedral(&["unpack", "--bundle", a, "--output", mine.to_str().unwrap(), "--force"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(fs::read(mine.join("notes.txt")).unwrap(), b"keep me");
    let out = tmp.path().join("b.cath-bundle");
    assert_eq!(code(&cathedral(&["unpack", "--bundle", a, "--output", out.to_str().unwrap(), "-q"])), 0);
    assert_eq!(code(&cathedral(&["unpack", "--bundle", a, "--output", out.to_str().unwrap(), "-q"])), 2);
    assert_eq!(code(&cathedral(&["unpack", "--bundle", a, "--output", out.to_str().unwrap(), "-q", "--force"])), 0);
    // pack --force replaces an archive, never a file that is not one.
    let text = tmp.path().join("t.cath-bundle.tar.zst");
    fs::write(&text, b"my notes").unwrap();
    let o = cathedral(&["pack", "--bundle", out.to_str().unwrap(), "--output", text.to_str().unwrap(), "--force"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(fs::read(&text).unwrap(), b"my notes");
    let o = cathedral(&["pack", "--bundle", out.to_str().unwrap(), "--output", a, "--force", "-q"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = cathedral(&["pack", "--bundle", out.to_str().unwrap(), "--output", tmp.path().join("bad.tar.zst").to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let mut buf = Vec::new();
    fs::File::open(&archive).unwrap().read_to_end(&mut buf).unwrap();
    assert_eq!(&buf[..4], &[0x28, 0xB5, 0x2F, 0xFD]);
}

/// Each blob of an archive, changed in one byte, is named (and only it),
/// for blobs stored in less and more than the 1 MiB up to which blobs are
/// read whole and checked in parallel batches, compressed or not; and a
/// changed blob read before a framing error is still named.
#[test]
fn a_changed_blob_is_named_whatever_its_size_and_compression() {
    use support::fixture_gen::{build, fixed_options, noise, sample_run};
    let tmp = tempfile::tempdir().unwrap();
    let text = |len: usize| b"the quick brown fox jumps over the lazy dog\n".iter().copied().cycle().take(len).collect::<Vec<u8>>();
    let half = |label: &str, len: usize| [noise(label, len / 2), text(len / 2)].concat();
    for level in [Some(3), None] {
        let mut run = sample_run("held", 2, false, false);
        for content in [noise("a", 3_000), text(50_000), noise("b", 2 << 20), text(3 << 20), half("c", 4 << 20), noise("d", (1 << 20) - 56)]
        {
            run.blobs.push((content, cathedral_bundle::format::BlobFormat::Raw));
        }
        let bundle = tmp.path().join(format!("{level:?}.cath-bundle"));
        build(&run, &bundle, fixed_options("held", cathedral_bundle::Encoding::Postcard, level));
        let entries = base_of(&bundle);
        let blobs: Vec<usize> =
            (0..entries.len()).filter(|&i| entries[i].name().contains("/blobs/") && !entries[i].name().ends_with('/')).collect();
        let sizes: Vec<usize> = blobs.iter().map(|&i| entries[i].data.len()).collect();
        assert!(sizes.iter().any(|&s| s <= 1 << 20) && sizes.iter().any(|&s| s > 1 << 20), "{level:?}: sizes {sizes:?}");
        let archive = tmp.path().join("changed.cath-bundle.tar.zst");
        for &i in &blobs {
            let mut changed = entries.clone();
            let n = changed[i].data.len();
            changed[i].data[n / 2] ^= 0x40;
            fs::write(&archive, compress(&serialize(&changed))).unwrap();
            let report = verify(&archive);
            let rel = changed[i].name().split_once('/').unwrap().1.to_string();
            let named: Vec<_> = report.findings.iter().filter(|f| f.path.starts_with("blobs/")).map(|f| (f.path.clone(), f.code)).collect();
            assert_eq!(named, [(rel.clone(), HashMismatch)], "{level:?}, blob of {n} stored bytes: {:#?}", report.findings);
            // The same change, then the stream cut inside the last blob: both are reported.
            let last = *blobs.last().unwrap();
            if i != last {
                let mut tar = serialize(&changed);
                let cut = tar.len() - 1024 - changed[last].data.len().div_ceil(512) * 512 + 100;
                tar.truncate(cut);
                fs::write(&archive, compress(&tar)).unwrap();
                let report = verify(&archive);
                let has = |path: &str, code: FindingCode| report.findings.iter().any(|f| f.path == path && f.code == code);
                assert!(has(&rel, HashMismatch), "{level:?}, {n} bytes, cut: {:#?}", report.findings);
                assert!(report.findings.iter().any(|f| f.code == Malformed || f.code == Truncated), "{:#?}", report.findings);
            }
        }
    }
}

/// The canonical entries of the bundle at `bundle`, under `x.cath-bundle`.
fn base_of(bundle: &Path) -> Vec<Entry> {
    let tmp = tempfile::tempdir().unwrap();
    entries(&decompress(&pack(bundle, tmp.path(), &format!("{TOP}.tar.zst"))))
}

/// The events a caller watches while an archive is verified arrive once
/// each, in log order, equal to the log's, across many batches of
/// records (decoded while the batch before is checked in order).
#[test]
fn watched_events_of_a_long_archive_arrive_in_order() {
    use support::fixture_gen::{build, fixed_options, large_run};
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = large_run("watched", 10_000, 16);
    let bundle = tmp.path().join("w.cath-bundle");
    build(&run, &bundle, fixed_options("watched", cathedral_bundle::Encoding::Postcard, None));
    let archive = pack(&bundle, tmp.path(), "w.cath-bundle.tar.zst");
    let seen = std::sync::Mutex::new(Vec::new());
    let tap = |position: u32, event: &cathedral_bundle::Event| seen.lock().unwrap().push((position, event.clone()));
    BundleLoader::new().open_archive(&archive, cathedral_bundle::ArchiveWatch::new().events(&tap)).expect("a valid archive");
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), run.events.len());
    for (i, ((position, event), expected)) in seen.iter().zip(&run.events).enumerate() {
        assert_eq!((*position as usize, event), (i, expected), "event {i}");
    }
}

/// `pack` checks what it writes: a bundle changed in a way only hashing
/// finds (a blob's or the log's bytes, same size) is refused with the
/// finding that names it, and nothing is left where the archive would be.
#[test]
fn pack_refuses_a_bundle_whose_bytes_changed_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let source = fixture("snapshot-zstd.cath-bundle");
    let blob = support::files_under(&source).into_iter().find(|f| f.starts_with("blobs/") && !f.ends_with('/')).unwrap();
    for (i, victim) in [blob.as_str(), "events.cath-log"].into_iter().enumerate() {
        let bundle = tmp.path().join(format!("b{i}.cath-bundle"));
        support::copy_tree(&source, &bundle);
        let path = bundle.join(victim);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&path, bytes).unwrap();
        let out_dir = tmp.path().join(format!("out{i}"));
        fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("x.cath-bundle.tar.zst");
        let err = BundleLoader::new().pack(&bundle, &out, PackOptions::default()).expect_err("a changed bundle is refused");
        let text = err.to_string();
        let named = match &err {
            cathedral_bundle::LoadError::Invalid { report, .. } => report.findings.iter().any(|f| f.path == victim),
            _ => false,
        };
        assert!(named, "{victim}: {text}");
        assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0, "{victim}: something was left beside the archive");
    }
}
