//! Crash safety: `cathedral bundle` killed at many points of a large build
//! leaves either nothing or a complete, verifying bundle at the output path,
//! and the next successful build leaves no temporary files behind.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cathedral_bundle::store::RunStore;
use cathedral_bundle::{BundleLoader, Event, EventKind, RunStatus};
use support::fixture_gen::{noise, run_start, sample_run, uuid_for};

/// Kill points and run size: a quick default for the suite; the long version
/// (`CATHEDRAL_CRASH_POINTS=30 CATHEDRAL_CRASH_BLOBS=2000`) runs from
/// `scripts/soak.sh`. Each point kills one build at a fraction of the time an
/// uninterrupted one takes, alternating builds from scratch and replacements.
fn setting(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Records a run with many events and blobs into `store`.
fn record_large_run(store: &Path, blobs: usize) -> String {
    let base = sample_run("crash-large", 2, false, false);
    let m = &base.metadata;
    let mut recorder = RunStore::new(store).record(run_start(&base), &base.workflow, &base.dag).unwrap();
    for i in 0..(blobs as u64 * 10) {
        let e = Event::new(
            uuid_for(&format!("crash/{i}")),
            m.run_id,
            base.dag.nodes[(i % 2) as usize].id,
            i,
            EventKind::Heartbeat,
            noise(&format!("p{i}"), 200),
        );
        recorder.append_event(&e).unwrap();
    }
    for i in 0..blobs {
        recorder.put_blob(&noise(&format!("blob{i}"), 1024 + (i * 37) % 3072)).unwrap();
    }
    recorder.finish(RunStatus::Completed, Some("2026-03-14T16:00:00Z".parse().unwrap())).unwrap();
    m.run_id.to_string()
}

fn bundle_cmd(store: &Path, run: &str, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cathedral"));
    c.args(["bundle", "--quiet", "--force", "--run", run, "--output"]).arg(out).arg("--store").arg(store);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".cath-tmp-") || n.contains(".cath-old-"))
        .collect()
}

#[test]
fn killed_builds_leave_nothing_or_a_complete_bundle() {
    let points = setting("CATHEDRAL_CRASH_POINTS", 12);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let run = record_large_run(&store, setting("CATHEDRAL_CRASH_BLOBS", 300) as usize);
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("large.cath-bundle");

    // How long an uninterrupted build takes, to spread the kill points over it.
    let started = Instant::now();
    assert!(bundle_cmd(&store, &run, &out).status().unwrap().success());
    let full = started.elapsed();
    std::fs::remove_dir_all(&out).unwrap();

    let (mut killed, mut complete_after_kill, mut empty_after_kill) = (0, 0, 0);
    for point in 0..points {
        // Even points build from scratch; odd points replace an existing bundle.
        if point % 2 == 0 && out.exists() {
            std::fs::remove_dir_all(&out).unwrap();
        } else if point % 2 == 1 && !out.exists() {
            assert!(bundle_cmd(&store, &run, &out).status().unwrap().success());
        }
        let delay = full.mul_f64(f64::from(point) / f64::from(points)) + Duration::from_millis(2);
        let mut child = bundle_cmd(&store, &run, &out).spawn().unwrap();
        std::thread::sleep(delay);
        let was_running = child.try_wait().unwrap().is_none();
        child.kill().ok();
        child.wait().unwrap();
        if was_running {
            killed += 1;
        }
        if out.exists() {
            let report = BundleLoader::new().verify(&out).unwrap();
            assert!(report.is_valid(), "kill point {point}: output exists but does not verify: {:#?}", report.findings);
            complete_after_kill += 1;
        } else {
            empty_after_kill += 1;
        }
    }
    // The next successful build cleans up whatever the killed ones left.
    assert!(bundle_cmd(&store, &run, &out).status().unwrap().success());
    assert!(BundleLoader::new().verify(&out).unwrap().is_valid());
    assert_eq!(leftovers(&outdir), Vec::<String>::new());
    eprintln!(
        "crash points: {points} tried over a {:?} build, {killed} killed mid-build; afterwards {complete_after_kill} complete, {empty_after_kill} empty",
        full
    );
    assert!(killed >= points / 2, "too few kills landed mid-build: {killed}");
    assert!(empty_after_kill > 0, "no kill interrupted a build from scratch");
}
