//! Hostile input: every case ends in a classified finding that names the
//! file; never a panic, a hang, an unbounded allocation or a success.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use cathedral_bundle::format::LogReader;
use cathedral_bundle::{BundleLoader, Digest, Event, EventKind, FindingCode, Limits, Snapshot, Uuid, VerifyReport};
use support::fixture_copy;

use FindingCode::*;

const SMALL: &str = "small-postcard.cath-bundle";
const ZSTD: &str = "snapshot-zstd.cath-bundle";

/// Verifies on another thread; a verification that takes over 30 s is a hang.
fn verify(bundle: &Path) -> VerifyReport {
    let (tx, rx) = mpsc::channel();
    let path = bundle.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(BundleLoader::new().verify(&path).expect("bundle root is examinable"));
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("verification hung or panicked")
}

/// Writes `bytes` as a listed file and updates the manifest's hash and size,
/// so that the deeper checks, not the hash, must catch the problem.
fn relist(bundle: &Path, name: &str, bytes: &[u8]) {
    fs::write(bundle.join(name), bytes).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(bundle.join("MANIFEST.json")).unwrap()).unwrap();
    m["files"][name]["hash"] = Digest::of(bytes).to_hex().into();
    m["files"][name]["size"] = bytes.len().into();
    fs::write(bundle.join("MANIFEST.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

fn read(bundle: &Path, name: &str) -> Vec<u8> {
    fs::read(bundle.join(name)).unwrap()
}

fn blob_paths(bundle: &Path) -> Vec<String> {
    support::files_under(bundle).into_iter().filter(|f| f.starts_with("blobs/")).collect()
}

type Mutate = Box<dyn Fn(&Path) -> String>;

/// Rewrites a file's bytes.
type Rewrite = fn(&[u8]) -> Vec<u8>;

/// A case: what it damages, and which finding codes on the returned path are acceptable.
struct Case {
    name: &'static str,
    fixture: &'static str,
    mutate: Mutate,
    codes: &'static [FindingCode],
}

fn case(name: &'static str, fixture: &'static str, codes: &'static [FindingCode], mutate: impl Fn(&Path) -> String + 'static) -> Case {
    Case { name, fixture, mutate: Box::new(mutate), codes }
}

fn with_record_len(log: &[u8], len: u32) -> Vec<u8> {
    let mut l = log.to_vec();
    l[15..19].copy_from_slice(&len.to_be_bytes());
    l
}

fn set_count(bytes: &[u8], delta: i64) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let count = u32::from_be_bytes(b[11..15].try_into().unwrap()) as i64 + delta;
    b[11..15].copy_from_slice(&(count as u32).to_be_bytes());
    b
}

fn index_offset_at(i: usize) -> usize {
    55 + 8 * i
}

/// Replaces a blob file's bytes and updates its blob-list record (stored hash,
/// stored size, content size) and the manifest, so only decoding can catch it.
fn forge_blob(bundle: &Path, rel: &str, data: &[u8], content_size: u64) {
    let name = Digest::parse(rel.rsplit('/').next().unwrap()).unwrap();
    let old = read(bundle, rel);
    let mut file = old[..56].to_vec();
    file[16..24].copy_from_slice(&content_size.to_be_bytes());
    file.extend_from_slice(data);
    fs::write(bundle.join(rel), &file).unwrap();
    let mut list = read(bundle, "blobs.cath-list");
    let count = u32::from_be_bytes(list[11..15].try_into().unwrap()) as usize;
    let at = (0..count).map(|i| 15 + 88 * i).find(|at| list[*at..*at + 32] == name.0).unwrap();
    list[at + 32..at + 64].copy_from_slice(Digest::of(&file).as_bytes());
    list[at + 64..at + 72].copy_from_slice(&(file.len() as u64).to_be_bytes());
    list[at + 72..at + 80].copy_from_slice(&content_size.to_be_bytes());
    relist(bundle, "blobs.cath-list", &list);
}

fn zstd_blob(bundle: &Path) -> String {
    blob_paths(bundle).into_iter().find(|p| read(bundle, p)[12] == 1).expect("a zstd blob")
}

/// Decodes every event of a bundle's log.
fn events_of(bundle: &Path) -> (Vec<Event>, cathedral_bundle::Encoding) {
    let log = read(bundle, "events.cath-log");
    let reader = LogReader::new(&log, "events.cath-log", &Limits::default()).unwrap();
    let mut walk = reader.walk(false);
    let mut events = Vec::new();
    while let Some((offset, record)) = walk.next_record().unwrap() {
        events.push(Event::decode(record, reader.header().encoding, "l", offset).unwrap());
    }
    (events, reader.header().encoding)
}

/// Writes `events` as the bundle's log, with an index written the way a
/// builder would (but applying no rule, so that forged logs can be
/// indexed), and updates the manifest and `event_count`: only the rules
/// between events and other files can catch what was changed.
fn write_events(bundle: &Path, events: &[Event], encoding: cathedral_bundle::Encoding) {
    let mut log = b"CATHLOG".to_vec();
    log.extend_from_slice(&(if encoding == cathedral_bundle::Encoding::Postcard { 1u32 } else { 2 }).to_be_bytes());
    log.extend_from_slice(&(events.len() as u32).to_be_bytes());
    let (mut offsets, mut times, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for (i, e) in events.iter().enumerate() {
        offsets.extend_from_slice(&(log.len() as u64).to_be_bytes());
        times.extend_from_slice(&e.logical_time.to_be_bytes());
        ids.push((*e.event_id.as_bytes(), i as u32));
        let mut record = Vec::new();
        e.encode(encoding, &mut record).unwrap();
        log.extend_from_slice(&(record.len() as u32).to_be_bytes());
        log.extend_from_slice(&record);
    }
    ids.sort();
    let mut index = b"CATHIDX".to_vec();
    index.extend_from_slice(&1u32.to_be_bytes());
    index.extend_from_slice(&(events.len() as u32).to_be_bytes());
    index.extend_from_slice(Digest::of(&log).as_bytes());
    index.extend_from_slice(&(log.len() as u64).to_be_bytes());
    index.extend_from_slice(&offsets);
    index.extend_from_slice(&times);
    for (id, p) in ids {
        index.extend_from_slice(&id);
        index.extend_from_slice(&p.to_be_bytes());
    }
    relist(bundle, "events.cath-log", &log);
    relist(bundle, "events.cath-idx", &index);
    let mut m: serde_json::Value = serde_json::from_slice(&read(bundle, "metadata.json")).unwrap();
    if m["event_count"] != events.len() {
        m["event_count"] = events.len().into();
        relist(bundle, "metadata.json", &serde_json::to_vec_pretty(&m).unwrap());
    }
}

/// Rewrites the events of a bundle with `f`.
fn rewrite_events(bundle: &Path, f: impl Fn(&mut Vec<Event>)) {
    let (mut events, encoding) = events_of(bundle);
    f(&mut events);
    write_events(bundle, &events, encoding);
}

/// Rewrites the snapshot of a bundle with `f`.
fn rewrite_snapshot(bundle: &Path, f: impl Fn(&mut Snapshot)) {
    let mut s = Snapshot::decode_file(&read(bundle, "snapshot.cath-snap"), "s").unwrap();
    f(&mut s);
    relist(bundle, "snapshot.cath-snap", &s.encode_file());
}

/// The entries of an index's id section: (event id, position).
type IdSection = Vec<([u8; 16], u32)>;

/// Edits an id section.
type EditIds = fn(&mut IdSection);

/// The id section of an index, as (id, position) pairs, and where it starts.
fn id_section(ix: &[u8]) -> (usize, IdSection) {
    let count = u32::from_be_bytes(ix[11..15].try_into().unwrap()) as usize;
    let start = 55 + 16 * count;
    let entries = (0..count)
        .map(|i| {
            let at = start + 20 * i;
            (ix[at..at + 16].try_into().unwrap(), u32::from_be_bytes(ix[at + 16..at + 20].try_into().unwrap()))
        })
        .collect();
    (start, entries)
}

fn with_id_section(ix: &[u8], entries: &[([u8; 16], u32)]) -> Vec<u8> {
    let (start, _) = id_section(ix);
    let mut out = ix[..start].to_vec();
    for (id, p) in entries {
        out.extend_from_slice(id);
        out.extend_from_slice(&p.to_be_bytes());
    }
    out
}

/// Rewrites a blob's file and list record with `f(header and data, record)`,
/// keeping the manifest consistent.
fn rewrite_blob(bundle: &Path, rel: &str, f: impl Fn(&mut Vec<u8>, &mut [u8])) {
    let name = Digest::parse(rel.rsplit('/').next().unwrap()).unwrap();
    let mut file = read(bundle, rel);
    let mut list = read(bundle, "blobs.cath-list");
    let count = u32::from_be_bytes(list[11..15].try_into().unwrap()) as usize;
    let at = (0..count).map(|i| 15 + 88 * i).find(|at| list[*at..*at + 32] == name.0).unwrap();
    f(&mut file, &mut list[at..at + 88]);
    fs::write(bundle.join(rel), &file).unwrap();
    relist(bundle, "blobs.cath-list", &list);
}

fn blob_stored(events: &[Event]) -> usize {
    events.iter().position(|e| e.kind == EventKind::BlobStored).expect("a BlobStored event")
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    // Paths: hostile names listed in the manifest.
    for hostile in support::HOSTILE_NAMES.iter().copied() {
        cases.push(case("manifest lists a hostile path", SMALL, &[InvalidPath], move |b| {
            let mut m: serde_json::Value = serde_json::from_slice(&read(b, "MANIFEST.json")).unwrap();
            m["files"][hostile] = m["files"]["dag.json"].clone();
            fs::write(b.join("MANIFEST.json"), serde_json::to_vec(&m).unwrap()).unwrap();
            "MANIFEST.json".into()
        }));
    }

    // Symlinks.
    cases.push(case("blobs/ is a symlink to a directory", SMALL, &[Symlink], |b| {
        let elsewhere = b.parent().unwrap().join("elsewhere");
        fs::rename(b.join("blobs"), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, b.join("blobs")).unwrap();
        "blobs".into()
    }));
    cases.push(case("a shard is a symlink to the parent", SMALL, &[Symlink], |b| {
        std::os::unix::fs::symlink("..", b.join("blobs/ff")).unwrap();
        "blobs/ff".into()
    }));
    cases.push(case("a listed file is a symlink to /etc/passwd", SMALL, &[Symlink], |b| {
        fs::remove_file(b.join("dag.json")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", b.join("dag.json")).unwrap();
        "dag.json".into()
    }));

    // Special files.
    for (name, target) in
        [("metadata.json is a FIFO", "metadata.json"), ("an extra FIFO", "fifo"), ("MANIFEST.json is a FIFO", "MANIFEST.json")]
    {
        cases.push(case(name, SMALL, &[NotRegularFile], move |b| {
            let _ = fs::remove_file(b.join(target));
            mkfifo(&b.join(target));
            target.into()
        }));
    }
    cases.push(case("a blob is a FIFO", SMALL, &[NotRegularFile], |b| {
        let p = blob_paths(b)[0].clone();
        fs::remove_file(b.join(&p)).unwrap();
        mkfifo(&b.join(&p));
        p
    }));
    cases.push(case("a unix socket", SMALL, &[NotRegularFile], |b| {
        let listener = std::os::unix::net::UnixListener::bind(b.join("sock")).unwrap();
        std::mem::forget(listener);
        "sock".into()
    }));
    cases.push(case("a character device in place of the log", SMALL, &[NotRegularFile], |b| {
        fs::remove_file(b.join("events.cath-log")).unwrap();
        let path = std::ffi::CString::new(b.join("events.cath-log").to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path; the device is /dev/null's (1, 3).
        let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
        if rc != 0 {
            // Without the right to make devices, a FIFO stands in for it.
            mkfifo(&b.join("events.cath-log"));
        }
        "events.cath-log".into()
    }));

    // Blob names.
    cases.push(case("a blob renamed to another hash in its shard", SMALL, &[Unlisted], |b| {
        let p = blob_paths(b)[0].clone();
        let renamed = format!("{}{}", &p[..p.len() - 4], if p.ends_with("0000") { "1111" } else { "0000" });
        fs::rename(b.join(&p), b.join(&renamed)).unwrap();
        renamed
    }));
    cases.push(case("a blob in the wrong shard", SMALL, &[InvalidPath], |b| {
        let p = blob_paths(b)[0].clone();
        let shard = if p.starts_with("blobs/00") { "blobs/01" } else { "blobs/00" };
        fs::create_dir_all(b.join(shard)).unwrap();
        let moved = format!("{shard}/{}", &p[9..]);
        fs::rename(b.join(&p), b.join(&moved)).unwrap();
        moved
    }));
    cases.push(case("an uppercase blob name", SMALL, &[InvalidPath], |b| {
        let p = blob_paths(b)[0].clone();
        let upper = format!("{}{}", &p[..9], p[9..].to_uppercase());
        fs::rename(b.join(&p), b.join(&upper)).unwrap();
        upper
    }));
    cases.push(case("a short blob name", SMALL, &[InvalidPath], |b| {
        let p = blob_paths(b)[0].clone();
        let short = p[..p.len() - 1].to_string();
        fs::rename(b.join(&p), b.join(&short)).unwrap();
        short
    }));
    cases.push(case("an uppercase shard directory", SMALL, &[InvalidPath], |b| {
        let p = blob_paths(b)[0].clone();
        let shard = &p[..8];
        let upper = format!("blobs/{}", shard[6..].to_uppercase());
        if upper == shard {
            fs::create_dir(b.join("blobs/AB")).unwrap();
            return "blobs/AB".into();
        }
        fs::rename(b.join(shard), b.join(&upper)).unwrap();
        upper
    }));

    // Manifest against disk.
    cases.push(case("a file listed twice", SMALL, &[InvalidJson], |b| {
        let text = String::from_utf8(read(b, "MANIFEST.json")).unwrap();
        let entry_start = text.find("\"dag.json\"").unwrap();
        let entry_end = entry_start + text[entry_start..].find('}').unwrap() + 1;
        let entry = text[entry_start..entry_end].to_string();
        fs::write(b.join("MANIFEST.json"), text.replacen(&entry, &format!("{entry},\n    {entry}"), 1)).unwrap();
        "MANIFEST.json".into()
    }));
    cases.push(case("a file differing only in case", SMALL, &[Unlisted], |b| {
        fs::copy(b.join("dag.json"), b.join("DAG.json")).unwrap();
        "DAG.json".into()
    }));
    cases.push(case("the manifest lists a name differing only in case", SMALL, &[InvalidPath], |b| {
        let text = String::from_utf8(read(b, "MANIFEST.json")).unwrap();
        fs::write(b.join("MANIFEST.json"), text.replacen("\"dag.json\"", "\"DAG.json\"", 1)).unwrap();
        "MANIFEST.json".into()
    }));

    // JSON, in the manifest and in a listed document.
    let json_cases: [(&str, Rewrite); 7] = [
        ("duplicate key", |t| String::from_utf8_lossy(t).replacen('{', "{\"x\":1,\"x\":2,", 1).into_bytes()),
        ("huge number", |t| String::from_utf8_lossy(t).replacen('{', "{\"n\":1e400,", 1).into_bytes()),
        ("deep nesting", |_| format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()),
        ("invalid UTF-8", |t| [t, b"\xff\xfe"].concat()),
        ("trailing data", |t| [t, b"{}"].concat()),
        ("empty file", |_| Vec::new()),
        ("a number past u64", |t| {
            let text = String::from_utf8_lossy(t);
            let key = if text.contains("\"event_count\": ") { "\"event_count\": " } else { "\"blob_count\": " };
            text.replacen(key, &format!("{key}1844674407370955161600"), 1).into_bytes()
        }),
    ];
    for (what, f) in json_cases {
        cases.push(case(what, SMALL, &[InvalidJson], move |b| {
            fs::write(b.join("MANIFEST.json"), f(&read(b, "MANIFEST.json"))).unwrap();
            "MANIFEST.json".into()
        }));
        cases.push(case(what, SMALL, &[InvalidJson], move |b| {
            relist(b, "metadata.json", &f(&read(b, "metadata.json")));
            "metadata.json".into()
        }));
    }

    // Event logs.
    let log_cases: [(&str, &'static [FindingCode], Rewrite); 10] = [
        ("record length u32::MAX", &[LimitExceeded], |l| with_record_len(l, u32::MAX)),
        ("record length past the end", &[Truncated], |l| with_record_len(l, (l.len() - 19 + 1) as u32)),
        ("zero-length record", &[Malformed], |l| with_record_len(l, 0)),
        ("count larger than the records", &[Truncated], |l| set_count(l, 1)),
        ("count u32::MAX", &[Truncated], |l| {
            let mut l = l.to_vec();
            l[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
            l
        }),
        ("count smaller than the records", &[TrailingData], |l| set_count(l, -1)),
        ("truncated final record", &[Truncated], |l| l[..l.len() - 3].to_vec()),
        ("trailing bytes", &[TrailingData], |l| [l, &[0u8]].concat()),
        ("six-byte magic", &[BadMagic], |l| [b"CATHLOX".as_slice(), &l[7..]].concat()),
        ("unknown version", &[Unsupported], |l| {
            let mut l = l.to_vec();
            l[10] = 9;
            l
        }),
    ];
    for (what, codes, f) in log_cases {
        cases.push(case(what, SMALL, codes, move |b| {
            relist(b, "events.cath-log", &f(&read(b, "events.cath-log")));
            "events.cath-log".into()
        }));
    }
    cases.push(case("overlong varint", SMALL, &[Malformed], |b| {
        let log = read(b, "events.cath-log");
        let len = u32::from_be_bytes(log[15..19].try_into().unwrap()) as usize;
        let record = &log[19..19 + len];
        assert_eq!(record[48], 0, "first event has no parent");
        let mut forged = record[..49].to_vec();
        forged.extend_from_slice(&[record[49] | 0x80, 0x00]);
        forged.extend_from_slice(&record[50..]);
        let mut out = log[..15].to_vec();
        out.extend_from_slice(&(forged.len() as u32).to_be_bytes());
        out.extend_from_slice(&forged);
        out.extend_from_slice(&log[19 + len..]);
        relist(b, "events.cath-log", &out);
        "events.cath-log".into()
    }));
    cases.push(case("empty log", SMALL, &[Truncated], |b| {
        relist(b, "events.cath-log", &[]);
        "events.cath-log".into()
    }));

    // The index.
    let index_cases: [(&str, &'static [FindingCode], Rewrite); 6] = [
        ("index entry out of range", &[Inconsistent], |ix| {
            let mut ix = ix.to_vec();
            ix[index_offset_at(2)..index_offset_at(3)].copy_from_slice(&u64::MAX.to_be_bytes());
            ix
        }),
        ("index going backwards", &[Inconsistent], |ix| {
            let mut ix = ix.to_vec();
            let (a, c) = (index_offset_at(1), index_offset_at(2));
            let first = ix[a..a + 8].to_vec();
            ix.copy_within(c..c + 8, a);
            ix[c..c + 8].copy_from_slice(&first);
            ix
        }),
        ("index pointing mid-record", &[Inconsistent], |ix| {
            let mut ix = ix.to_vec();
            ix[index_offset_at(1) + 7] += 1;
            ix
        }),
        ("index id position out of range", &[Malformed], |ix| {
            let mut ix = ix.to_vec();
            let count = u32::from_be_bytes(ix[11..15].try_into().unwrap()) as usize;
            let at = 55 + 16 * count + 16;
            ix[at..at + 4].copy_from_slice(&(count as u32).to_be_bytes());
            ix
        }),
        ("truncated index", &[Truncated], |ix| ix[..ix.len() - 1].to_vec()),
        ("index with a huge count", &[Truncated], |ix| {
            let mut ix = ix.to_vec();
            ix[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
            ix
        }),
    ];
    for (what, codes, f) in index_cases {
        cases.push(case(what, SMALL, codes, move |b| {
            relist(b, "events.cath-idx", &f(&read(b, "events.cath-idx")));
            "events.cath-idx".into()
        }));
    }
    cases.push(case("index ids pointing at the wrong events", SMALL, &[Inconsistent], |b| {
        // Swap the positions of the first two id entries: still sorted, still in range.
        let mut ix = read(b, "events.cath-idx");
        let count = u32::from_be_bytes(ix[11..15].try_into().unwrap()) as usize;
        let (a, c) = (55 + 16 * count + 16, 55 + 16 * count + 20 + 16);
        let first = ix[a..a + 4].to_vec();
        ix.copy_within(c..c + 4, a);
        ix[c..c + 4].copy_from_slice(&first);
        relist(b, "events.cath-idx", &ix);
        "events.cath-idx".into()
    }));
    cases.push(case("index taken from another log", SMALL, &[Inconsistent], |b| {
        relist(b, "events.cath-idx", &fs::read(support::fixture(ZSTD).join("events.cath-idx")).unwrap());
        "events.cath-idx".into()
    }));

    // Blob list.
    cases.push(case("blob list unsorted", SMALL, &[Malformed], |b| {
        let mut list = read(b, "blobs.cath-list");
        let (a, c) = (15, 15 + 88);
        let first = list[a..a + 88].to_vec();
        list.copy_within(c..c + 88, a);
        list[c..c + 88].copy_from_slice(&first);
        relist(b, "blobs.cath-list", &list);
        "blobs.cath-list".into()
    }));
    cases.push(case("blob list reserved bytes", SMALL, &[Malformed], |b| {
        let mut list = read(b, "blobs.cath-list");
        list[15 + 87] = 1;
        relist(b, "blobs.cath-list", &list);
        "blobs.cath-list".into()
    }));

    // zstd bombs.
    cases.push(case("blob expanding past its declared size", ZSTD, &[SizeMismatch], |b| {
        let p = zstd_blob(b);
        let declared = u64::from_be_bytes(read(b, &p)[16..24].try_into().unwrap());
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        forge_blob(b, &p, &bomb, declared);
        p
    }));
    cases.push(case("zstd frame asking for a 2 GiB window", ZSTD, &[Malformed], |b| {
        let p = zstd_blob(b);
        let declared = u64::from_be_bytes(read(b, &p)[16..24].try_into().unwrap());
        // Magic, frame header (no single segment, window log 31), one last raw block of 1 byte.
        let frame = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xA8, 0x09, 0x00, 0x00, 0x41];
        forge_blob(b, &p, &frame, declared);
        p
    }));
    cases.push(case("blob header lying about its size", SMALL, &[Inconsistent], |b| {
        // An uncompressed blob: its record's stored hash is its content hash,
        // which the header change leaves as it was; only the comparison of
        // the header with the record can catch it.
        let p = blob_paths(b)[0].clone();
        let mut bytes = read(b, &p);
        assert_eq!(bytes[12], 0, "an uncompressed blob");
        bytes[23] ^= 1;
        fs::write(b.join(&p), &bytes).unwrap();
        p
    }));

    // Sizes.
    cases.push(case("manifest size larger than the file", SMALL, &[SizeMismatch], |b| {
        let mut m: serde_json::Value = serde_json::from_slice(&read(b, "MANIFEST.json")).unwrap();
        m["files"]["dag.json"]["size"] = (m["files"]["dag.json"]["size"].as_u64().unwrap() + 1).into();
        fs::write(b.join("MANIFEST.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        "dag.json".into()
    }));
    cases.push(case("manifest size u64::MAX", SMALL, &[SizeMismatch, LimitExceeded], |b| {
        let mut m: serde_json::Value = serde_json::from_slice(&read(b, "MANIFEST.json")).unwrap();
        m["files"]["events.cath-log"]["size"] = u64::MAX.into();
        fs::write(b.join("MANIFEST.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        "events.cath-log".into()
    }));
    cases.push(case("a listed file emptied", SMALL, &[SizeMismatch], |b| {
        fs::write(b.join("workflow.cath"), b"").unwrap();
        "workflow.cath".into()
    }));
    cases.push(case("zero-byte manifest", SMALL, &[InvalidJson], |b| {
        fs::write(b.join("MANIFEST.json"), b"").unwrap();
        "MANIFEST.json".into()
    }));
    cases.push(case("an empty bundle directory", SMALL, &[Missing], |b| {
        for entry in fs::read_dir(b).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                fs::remove_dir_all(p).unwrap();
            } else {
                fs::remove_file(p).unwrap();
            }
        }
        "MANIFEST.json".into()
    }));

    // The index's id section, checked exactly: any entry that does not name
    // the event at its position is caught, whatever a sum over it would say.
    let id_cases: [(&str, EditIds); 6] = [
        ("an id replaced by a fake one, order kept", |e| {
            let last = e.len() - 1;
            e[last].0[15] = e[last].0[15].wrapping_add(1);
            if last > 0 && e[last].0 <= e[last - 1].0 {
                e[last].0 = [0xff; 16];
            }
        }),
        ("positions rotated by one", |e| {
            let first = e[0].1;
            for i in 0..e.len() - 1 {
                e[i].1 = e[i + 1].1;
            }
            let last = e.len() - 1;
            e[last].1 = first;
        }),
        ("an entry duplicated over its neighbour", |e| e[1] = e[0]),
        ("two ids swapped, positions kept", |e| {
            let (a, b) = (e[0].0, e[1].0);
            e[0].0 = b;
            e[1].0 = a;
        }),
        ("every id replaced, sorted, positions kept", |e| {
            for (i, entry) in e.iter_mut().enumerate() {
                entry.0 = Uuid::from_u128(i as u128 + 1).into_bytes();
            }
        }),
        ("a real id dropped for a fake one in the middle", |e| {
            let mid = e.len() / 2;
            let mut fake = e[mid].0;
            fake[15] ^= 1;
            if e[mid - 1].0 < fake && fake < e[mid + 1].0 {
                e[mid].0 = fake;
            } else {
                e[mid].0 = e[mid - 1].0;
                e[mid].0[15] = e[mid].0[15].wrapping_add(1);
            }
        }),
    ];
    for (what, f) in id_cases {
        cases.push(case(what, SMALL, &[Inconsistent, Malformed], move |b| {
            let ix = read(b, "events.cath-idx");
            let (_, mut entries) = id_section(&ix);
            f(&mut entries);
            relist(b, "events.cath-idx", &with_id_section(&ix, &entries));
            "events.cath-idx".into()
        }));
    }
    cases.push(case("an event id repeated in the log", SMALL, &[Inconsistent, Malformed], |b| {
        rewrite_events(b, |e| e[2].event_id = e[1].event_id);
        "events.cath-idx".into()
    }));

    // References between files.
    cases.push(case("BlobStored naming a blob the bundle does not hold", SMALL, &[Inconsistent], |b| {
        rewrite_events(b, |e| {
            let i = blob_stored(e);
            e[i].payload = Digest::of(b"not stored").to_hex().into_bytes();
            e[i].payload_hash = Digest::of(&e[i].payload);
        });
        "events.cath-log".into()
    }));
    cases.push(case("BlobStored with a payload that is not a hash", SMALL, &[Inconsistent], |b| {
        rewrite_events(b, |e| {
            let i = blob_stored(e);
            e[i].payload = b"see attachment".to_vec();
            e[i].payload_hash = Digest::of(&e[i].payload);
        });
        "events.cath-log".into()
    }));
    cases.push(case("an event naming a node outside the DAG", SMALL, &[Inconsistent], |b| {
        rewrite_events(b, |e| e[3].node_id = Uuid::from_u128(7));
        "events.cath-log".into()
    }));
    cases.push(case("an event of another run", SMALL, &[Inconsistent], |b| {
        rewrite_events(b, |e| e[4].run_id = Uuid::from_u128(9));
        "events.cath-log".into()
    }));
    cases.push(case("a payload hash that lies", SMALL, &[Inconsistent], |b| {
        rewrite_events(b, |e| e[1].payload_hash = Digest::of(b"other"));
        "events.cath-log".into()
    }));
    cases.push(case("snapshot output naming a blob the bundle does not hold", ZSTD, &[Inconsistent], |b| {
        rewrite_snapshot(b, |s| s.nodes[0].output_hash = Some(Digest::of(b"absent")));
        "snapshot.cath-snap".into()
    }));
    cases.push(case("snapshot naming a node outside the DAG", ZSTD, &[Inconsistent], |b| {
        rewrite_snapshot(b, |s| s.nodes[0].node_id = Uuid::from_u128(5));
        "snapshot.cath-snap".into()
    }));
    cases.push(case("snapshot naming a node twice", ZSTD, &[Inconsistent], |b| {
        rewrite_snapshot(b, |s| {
            let first = s.nodes[0].clone();
            s.nodes[1] = first;
        });
        "snapshot.cath-snap".into()
    }));
    cases.push(case("snapshot time after the next event", ZSTD, &[Inconsistent], |b| {
        rewrite_snapshot(b, |s| s.logical_time = u64::MAX);
        "snapshot.cath-snap".into()
    }));
    cases.push(case("snapshot time before the last applied event", ZSTD, &[Inconsistent], |b| {
        rewrite_snapshot(b, |s| s.logical_time = 0);
        "snapshot.cath-snap".into()
    }));

    // Every field of a blob-list record is checked.
    cases.push(case("an uncompressed blob's stored hash lies", SMALL, &[HashMismatch], |b| {
        let p = blob_paths(b)[0].clone();
        rewrite_blob(b, &p, |_, record| record[32] ^= 1);
        p
    }));
    cases.push(case("an uncompressed blob's stored hash is another file's whole-file hash", SMALL, &[HashMismatch], |b| {
        let p = blob_paths(b)[0].clone();
        let other = read(b, &blob_paths(b)[1]);
        rewrite_blob(b, &p, |_, record| record[32..64].copy_from_slice(Digest::of(&other).as_bytes()));
        p
    }));
    cases.push(case("a zstd blob's stored hash lies", ZSTD, &[HashMismatch], |b| {
        let p = zstd_blob(b);
        rewrite_blob(b, &p, |_, record| record[32] ^= 1);
        p
    }));

    // Decompression is bounded by a limit of its own, before any blob is read.
    cases.push(case("a zstd blob declaring a terabyte of content", ZSTD, &[LimitExceeded], |b| {
        let p = zstd_blob(b);
        rewrite_blob(b, &p, |file, record| {
            file[16..24].copy_from_slice(&(1u64 << 40).to_be_bytes());
            record[72..80].copy_from_slice(&(1u64 << 40).to_be_bytes());
            let stored = Digest::of(file);
            record[32..64].copy_from_slice(stored.as_bytes());
        });
        "blobs.cath-list".into()
    }));

    // The layout: blobs/ is required, a shard directory holds a blob.
    cases.push(case("an empty extra shard directory", SMALL, &[Unlisted], |b| {
        let used: Vec<String> = blob_paths(b).iter().map(|p| p[..8].to_string()).collect();
        let free = (0..=255u8).map(|i| format!("blobs/{i:02x}")).find(|s| !used.contains(s)).unwrap();
        fs::create_dir(b.join(&free)).unwrap();
        free
    }));
    cases.push(case("the blob directory removed", SMALL, &[Missing], |b| {
        fs::remove_dir_all(b.join("blobs")).unwrap();
        "blobs".into()
    }));

    // Special files are never opened, wherever they stand.
    cases.push(case("snapshot is a FIFO", ZSTD, &[NotRegularFile], |b| {
        fs::remove_file(b.join("snapshot.cath-snap")).unwrap();
        mkfifo(&b.join("snapshot.cath-snap"));
        "snapshot.cath-snap".into()
    }));
    cases.push(case("blob list is a FIFO", SMALL, &[NotRegularFile], |b| {
        fs::remove_file(b.join("blobs.cath-list")).unwrap();
        mkfifo(&b.join("blobs.cath-list"));
        "blobs.cath-list".into()
    }));
    cases.push(case("an unsigned bundle with a MANIFEST.sig FIFO", SMALL, &[NotRegularFile], |b| {
        mkfifo(&b.join("MANIFEST.sig"));
        "MANIFEST.sig".into()
    }));
    cases.push(case("the index is a directory", SMALL, &[Unlisted, NotRegularFile], |b| {
        fs::remove_file(b.join("events.cath-idx")).unwrap();
        fs::create_dir(b.join("events.cath-idx")).unwrap();
        "events.cath-idx".into()
    }));

    // Hostile names as files inside the bundle are refused as names.
    for name in support::hostile_file_names() {
        cases.push(case("a file with a hostile name", SMALL, &[InvalidPath, Unlisted], move |b| {
            fs::write(b.join(name), b"x").unwrap();
            name.into()
        }));
    }
    cases
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

#[test]
fn every_hostile_case_is_classified_and_named() {
    let cases = cases();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        fs::create_dir(&dir).unwrap();
        let bundle = fixture_copy(c.fixture, &dir);
        let path = (c.mutate)(&bundle);
        let report = verify(&bundle);
        let named = report.findings.iter().any(|f| f.path == path && c.codes.contains(&f.code));
        if report.is_valid() || !named {
            failures.push(format!("case {i} ({}): wanted {:?} on {path:?}, got {:#?}", c.name, c.codes, report.findings));
        }
        // Loading refuses it too.
        assert!(BundleLoader::new().load(&bundle).is_err(), "case {i} ({}) loaded", c.name);
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    eprintln!("hostile cases: {}", cases.len());
}

#[test]
fn a_symlinked_bundle_root_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let real = fixture_copy(SMALL, tmp.path());
    let link: PathBuf = tmp.path().join("link.cath-bundle");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // However it is spelled: a trailing slash or `/.` must not resolve the link first.
    for spelled in [link.clone(), PathBuf::from(format!("{}/", link.display())), link.join(".")] {
        let report = verify(&spelled);
        assert!(report.findings.iter().any(|f| f.path == "." && f.code == Symlink), "{}: {:#?}", spelled.display(), report.findings);
        assert!(BundleLoader::new().load(&spelled).is_err());
    }
    // The real directory, spelled any way, verifies.
    for spelled in [real.clone(), PathBuf::from(format!("{}/", real.display())), real.join(".")] {
        assert!(verify(&spelled).is_valid(), "{}", spelled.display());
    }
}

#[test]
fn bytes_queued_in_a_fifo_are_never_consumed() {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(SMALL, tmp.path());
    for target in [blob_paths(&bundle)[0].clone(), "blobs.cath-list".to_string(), "MANIFEST.json".to_string()] {
        fs::remove_file(bundle.join(&target)).unwrap();
        mkfifo(&bundle.join(&target));
        // Read-write, non-blocking: holds the FIFO open with bytes queued in it.
        let mut fifo = fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(bundle.join(&target)).unwrap();
        fifo.write_all(b"queued").unwrap();
        let report = verify(&bundle);
        assert!(report.findings.iter().any(|f| f.path == target && f.code == NotRegularFile), "{target}: {:#?}", report.findings);
        let mut back = [0u8; 6];
        fifo.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"queued", "{target}: the verifier read from the FIFO");
        drop(fifo);
        fs::remove_file(bundle.join(&target)).unwrap();
        let original = support::fixture(SMALL).join(&target);
        fs::copy(original, bundle.join(&target)).unwrap();
    }
}

/// Truncating files while they are verified or read ends in a classified
/// error or finding, never in a signal: nothing is mapped.
#[test]
fn files_truncated_while_read_are_errors_not_crashes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = support::fixture_gen::sample_run("truncate", 2, false, false);
    let mut run = run;
    let node = run.dag.nodes[0].id;
    let first = run.events[0].clone();
    // A log of a few MiB, so that truncation lands mid-read.
    for i in 0..40_000u64 {
        let e = Event::new(
            support::fixture_gen::uuid_for(&format!("filler/{i}")),
            first.run_id,
            node,
            run.events.last().unwrap().logical_time,
            EventKind::Heartbeat,
            vec![7; 100],
        );
        let last = run.events.len() - 1;
        run.events.insert(last, e);
    }
    run.metadata.event_count = run.events.len() as u64;
    let original = tmp.path().join("original.cath-bundle");
    support::fixture_gen::build(&run, &original, cathedral_bundle::BuildOptions::default());
    for (round, delay_us) in [0u64, 200, 1000, 3000, 8000].into_iter().enumerate() {
        let bundle = tmp.path().join(format!("{round}.cath-bundle"));
        support::copy_tree(&original, &bundle);
        let log = bundle.join("events.cath-log");
        let target = log.clone();
        let cutter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(delay_us));
            fs::OpenOptions::new().write(true).open(&target).unwrap().set_len(1000).unwrap();
        });
        let report = verify(&bundle);
        cutter.join().unwrap();
        // Either the truncation came first (a size finding) or mid-read (a changed-file finding).
        assert!(!report.is_valid() || fs::metadata(&log).unwrap().len() == 1000, "round {round}");
        // Reading events from a bundle opened before the truncation ends in an error.
        support::copy_tree(&original, &tmp.path().join(format!("{round}-read.cath-bundle")));
        let opened = BundleLoader::new().load(tmp.path().join(format!("{round}-read.cath-bundle"))).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(tmp.path().join(format!("{round}-read.cath-bundle/events.cath-log")))
            .unwrap()
            .set_len(100)
            .unwrap();
        let results: Vec<_> = opened.events().collect();
        assert!(results.last().unwrap().is_err(), "round {round}: reading a truncated log succeeded");
        assert!(opened.event(opened.event_count() - 1).is_err());
    }
}

/// Bundles from earlier writers hold the whole-file hash of uncompressed
/// blobs as their stored hash: they still verify, and that hash is checked.
#[test]
fn whole_file_stored_hashes_of_earlier_writers_verify_and_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(SMALL, tmp.path());
    for p in blob_paths(&bundle) {
        let file = read(&bundle, &p);
        if file[12] == 0 {
            rewrite_blob(&bundle, &p, |file, record| record[32..64].copy_from_slice(Digest::of(file).as_bytes()));
        }
    }
    assert!(verify(&bundle).is_valid(), "{:#?}", verify(&bundle).findings);
    let p = blob_paths(&bundle)[0].clone();
    let mut file = read(&bundle, &p);
    assert_eq!(file[12], 0);
    let last = file.len() - 1;
    file[last] ^= 1;
    fs::write(bundle.join(&p), &file).unwrap();
    let report = verify(&bundle);
    assert!(report.findings.iter().any(|f| f.path == p && f.code == HashMismatch), "{:#?}", report.findings);
}

/// A linked `blobs/` is reported, and nothing is read through it: the
/// (changed) blobs it points at are never hashed.
#[test]
fn nothing_is_read_through_a_linked_blob_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = fixture_copy(SMALL, tmp.path());
    let outside = tmp.path().join("outside");
    fs::rename(bundle.join("blobs"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, bundle.join("blobs")).unwrap();
    // Change every blob outside: a verifier that read them through the link would report mismatches.
    for blob in walkdir::WalkDir::new(&outside).into_iter().map(|e| e.unwrap()).filter(|e| e.file_type().is_file()) {
        let mut bytes = fs::read(blob.path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(blob.path(), bytes).unwrap();
    }
    let report = verify(&bundle);
    assert!(report.findings.iter().any(|f| f.path == "blobs" && f.code == Symlink), "{:#?}", report.findings);
    let read_through =
        |f: &&cathedral_bundle::Finding| f.path.starts_with("blobs/") && matches!(f.code, HashMismatch | Malformed | Inconsistent);
    assert!(!report.findings.iter().any(|f| read_through(&f)), "a blob was read through the link: {:#?}", report.findings);
}

#[test]
fn decompression_is_bounded_by_its_own_limit() {
    let bundle = support::fixture(ZSTD);
    let declared: u64 = {
        let list = fs::read(bundle.join("blobs.cath-list")).unwrap();
        let count = u32::from_be_bytes(list[11..15].try_into().unwrap()) as usize;
        (0..count)
            .map(|i| 15 + 88 * i)
            .filter(|at| list[at + 81] == 1)
            .map(|at| u64::from_be_bytes(list[at + 72..at + 80].try_into().unwrap()))
            .sum()
    };
    assert!(declared > 0);
    let at_limit = BundleLoader::new().limits(Limits::default().max_decompressed_size(declared)).verify(&bundle).unwrap();
    assert!(at_limit.is_valid(), "{:#?}", at_limit.findings);
    let below = BundleLoader::new().limits(Limits::default().max_decompressed_size(declared - 1)).verify(&bundle).unwrap();
    assert!(below.findings.iter().any(|f| f.path == "blobs.cath-list" && f.code == LimitExceeded), "{:#?}", below.findings);
    // Refused before any blob was read.
    assert!(below.stats.bytes_hashed <= fs::metadata(bundle.join("blobs.cath-list")).unwrap().len(), "{:?}", below.stats);
}

/// Payloads are hashed many at a time (one per SIMD lane, grouped by length):
/// a lying payload hash is named at its own event whatever its payload's
/// length and whatever shares its group, and the events around it pass.
#[test]
fn a_lying_payload_hash_is_named_at_its_event_for_every_payload_length() {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = support::fixture_gen::sample_run("lanes", 2, false, false);
    let (run_id, time) = (run.metadata.run_id, run.events.last().unwrap().logical_time);
    let last = run.events.pop().unwrap();
    let first = run.events.len();
    // Lengths 0..=1,100 in steps of 13, then two chunks and more: every block
    // count, both sides of each block and chunk boundary, and inputs hashed alone.
    let lengths: Vec<usize> = (0..=1100).step_by(13).chain([63, 64, 65, 1023, 1024, 1025, 2048, 5000]).collect();
    for (i, len) in lengths.iter().enumerate() {
        let id = support::fixture_gen::uuid_for(&format!("lanes/{i}"));
        let payload = support::fixture_gen::noise(&format!("lanes/{i}"), *len);
        run.events.push(Event::new(id, run_id, Uuid::nil(), time, EventKind::Heartbeat, payload));
    }
    run.events.push(last);
    run.metadata.event_count = run.events.len() as u64;
    let clean = tmp.path().join("clean.cath-bundle");
    support::fixture_gen::build(&run, &clean, support::fixture_gen::fixed_options("lanes", cathedral_bundle::Encoding::Postcard, None));
    assert!(verify(&clean).is_valid(), "every length hashes as BLAKE3 does");
    for (k, len) in lengths.iter().enumerate().step_by(5) {
        let bundle = tmp.path().join(format!("lie-{k}"));
        support::copy_tree(&clean, &bundle);
        let position = first + k;
        rewrite_events(&bundle, |e| e[position].payload_hash = Digest::of(b"other"));
        let report = verify(&bundle);
        let wanted = format!("event {position}:");
        assert!(
            report.findings.iter().any(|f| f.path == "events.cath-log" && f.message.contains(&wanted)),
            "a lie at event {position} ({len}-byte payload) is named there: {:#?}",
            report.findings
        );
    }
}

/// A log of several batches (records are framed, decoded and checked 4,096
/// at a time, the next batch decoded while one is checked in order): the
/// first problem in the log is the one reported, wherever it lies against
/// the batches, and a later problem (even in a batch already decoded) is
/// not reported with it.
#[test]
fn the_first_problem_of_a_long_log_is_the_only_one_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = support::fixture_gen::large_run("batches", 12_500, 16);
    let clean = tmp.path().join("clean.cath-bundle");
    support::fixture_gen::build(&run, &clean, support::fixture_gen::fixed_options("batches", cathedral_bundle::Encoding::Postcard, None));
    assert!(verify(&clean).is_valid());
    let count = run.events.len();
    let log_findings = |bundle: &Path| -> Vec<String> {
        verify(bundle).findings.into_iter().filter(|f| f.path == "events.cath-log").map(|f| f.message).collect()
    };
    // Time goes back at `back` (if any); the record at `broken` (if any) does not decode.
    let damage = |name: &str, back: Option<usize>, broken: Option<usize>| {
        let bundle = tmp.path().join(name);
        support::copy_tree(&clean, &bundle);
        rewrite_events(&bundle, |e| {
            if let Some(p) = back {
                e[p].logical_time = e[p - 1].logical_time - 1;
            }
        });
        if let Some(p) = broken {
            let index = read(&bundle, "events.cath-idx");
            let offset = u64::from_be_bytes(index[index_offset_at(p)..index_offset_at(p) + 8].try_into().unwrap()) as usize;
            let mut log = read(&bundle, "events.cath-log");
            let len = u32::from_be_bytes(log[offset..offset + 4].try_into().unwrap()) as usize;
            log[offset + 4..offset + 4 + len].fill(0xFF);
            relist(&bundle, "events.cath-log", &log);
        }
        bundle
    };
    // Earlier events need a logical time to step back from.
    let times_rise = run.events.windows(2).filter(|w| w[1].logical_time > w[0].logical_time).count();
    assert!(times_rise > 0);
    let places = [5, 4095, 4096, 4097, 8191, 8192, 8193, 12_287, 12_288, count - 2];
    for (i, &p) in places.iter().enumerate() {
        let bundle = damage(&format!("back-{i}"), Some(p), None);
        let found = log_findings(&bundle);
        assert!(found.len() == 1 && found[0].contains(&format!("event {p} goes back in time")), "back at {p}: {found:?}");
        // A record after it that does not decode, in the same batch, the next, or one further.
        for later in [p + 1, p + 300, p + 4096, p + 9000].into_iter().filter(|&l| l < count) {
            let bundle = damage(&format!("back-{i}-{later}"), Some(p), Some(later));
            let found = log_findings(&bundle);
            assert!(
                found.len() == 1 && found[0].contains(&format!("event {p} goes back in time")),
                "back at {p}, broken at {later}: {found:?}"
            );
        }
        // The record alone: it is the problem reported, and nothing before it.
        let bundle = damage(&format!("broken-{i}"), None, Some(p));
        let found = log_findings(&bundle);
        assert!(found.len() == 1 && !found[0].contains("goes back in time"), "broken at {p}: {found:?}");
        // A rule checked with the decoding (the payload hash) is named at its own event.
        let bundle = damage(&format!("hash-{i}"), None, None);
        rewrite_events(&bundle, |e| e[p].payload_hash = Digest::of(b"other"));
        let found = log_findings(&bundle);
        assert!(found.len() == 1 && found[0].contains(&format!("event {p}:")), "payload hash at {p}: {found:?}");
    }
}
