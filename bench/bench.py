#!/usr/bin/env python3
"""Benchmarks cathedral side by side with the tools users would otherwise
pick, in one run, and reports each comparison as a ratio.

Run through bench/run.sh, which installs the reference tools and builds.
    bench/run.sh            full suite (about 10 minutes on 2 cores)
    bench/run.sh --smoke    tiny sizes: checks that the harness works
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = str(ROOT / "target/release/cathedral")
GEN = str(ROOT / "target/release/examples/bench_gen")
MIB = 1 << 20

FULL = dict(large_count=64, large_size=16 * MIB, small_count=100_000, create_count=100_000,
            big_events=1_000_000, big_blobs=10_000, codec_events=1_000_000,
            access_sizes=[100_000, 1_000_000, 10_000_000], mix_blobs=3_000, repeat=3,
            replay_sizes=[1_000_000, 10_000_000], replay_rounds=5, shared_count=1_000, shared_size=256 << 10,
            capture_sizes=[1_000_000, 10_000_000])
SMOKE = dict(large_count=2, large_size=1 * MIB, small_count=500, create_count=500,
             big_events=5_000, big_blobs=50, codec_events=10_000,
             access_sizes=[1_000, 10_000], mix_blobs=30, repeat=1,
             replay_sizes=[20_000], replay_rounds=1, shared_count=20, shared_size=4 << 10,
             capture_sizes=[5_000, 20_000])


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


# A child's ru_maxrss counts the memory of the process it was forked from
# (Linux keeps the high-water mark across exec), so peak memory is read
# from GNU time, whose own footprint is small.
GNU_TIME = Path("/usr/bin/time").exists()


def timed(cmd, repeat, cwd=None, stdout=subprocess.DEVNULL):
    """Median wall time and peak RSS of one command; one warm-up run first."""
    times, rss = [], 0
    for i in range(repeat + 1):
        args = cmd
        measure = GNU_TIME and not isinstance(cmd, str)
        if measure:
            fd, rss_file = tempfile.mkstemp()
            os.close(fd)
            args = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + [str(a) for a in cmd]
        start = time.perf_counter()
        p = subprocess.Popen(args, shell=isinstance(args, str), cwd=cwd, stdout=stdout, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        elapsed = time.perf_counter() - start
        err = p.stderr.read().decode(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"command failed ({os.waitstatus_to_exitcode(status)}): {args}\n{err}")
        peak = usage.ru_maxrss * 1024
        if measure:
            peak = int(Path(rss_file).read_text().split()[-1]) * 1024
            os.unlink(rss_file)
        if i > 0:
            times.append(elapsed)
            rss = max(rss, peak)
    return statistics.median(times), rss


def interleaved(sides, repeat):
    """Times several commands side by side: one warm-up each, then `repeat`
    rounds in which every side runs once, in an order that rotates each round,
    so that transient costs (write-back, a busy file system) fall on all sides
    alike. A side is (cmd, cwd) or (fresh, None) where fresh(i) returns the
    command for run i (a new output folder each time). Returns the medians."""
    runs = [[] for _ in sides]
    counter = [0] * len(sides)

    def once(k):
        cmd, cwd = sides[k]
        args = cmd(counter[k]) if callable(cmd) else cmd
        counter[k] += 1
        start = time.perf_counter()
        p = subprocess.run(args, shell=isinstance(args, str), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if p.returncode != 0:
            raise SystemExit(f"command failed ({p.returncode}): {args}\n{p.stderr.decode(errors='replace')}")
        return elapsed

    for k in range(len(sides)):
        once(k)
    for r in range(repeat):
        order = list(range(len(sides)))
        order = order[r % len(order):] + order[:r % len(order)]
        for k in order:
            runs[k].append(once(k))
    return [statistics.median(t) for t in runs]


class Results:
    def __init__(self, judged):
        self.rows = []
        self.judged = judged

    def add(self, figure, ours, reference, ratio, target, passed, unit):
        if not self.judged:
            passed = "smoke"  # tiny sizes: the targets say nothing here
        self.rows.append(dict(figure=figure, ours=ours, reference=reference, ratio=ratio, target=target, passed=passed, unit=unit))
        print(f"  {figure}: ours {fmt(ours, unit)}, reference {fmt(reference, unit)}, ratio {fmt_ratio(ratio)}, target {target or '-'}: {verdict(passed)}", flush=True)


def clean(work, *patterns):
    """Removes what a section made, so that a full run fits the disk."""
    for pattern in patterns:
        for p in work.glob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "B":
        return f"{v / MIB:.1f} MiB"
    if unit == "ev/s":
        return f"{v / 1e6:.2f} M/s"
    return f"{v:.3g}"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def verdict(p):
    return {True: "PASS", False: "FAIL", None: "(no target)", "smoke": "(smoke: not judged)"}[p]


def blob_files(bundle):
    return sorted(glob.glob(f"{bundle}/blobs/*/*"))


def archives(cfg, work, res, rep, section):
    """8. Archives: pack, verify and unpack of a bundle of large blobs and of
    an event-heavy one, against tar, zstd and b3sum on the same data."""
    section("8. archives")
    for label, bundle in (("large blobs", work / "arch-large.cath-bundle"), ("events + blobs", work / "arch-mix.cath-bundle")):
        if label == "large blobs":
            sh([GEN, "blobs-bundle", bundle, str(cfg["large_count"]), str(cfg["large_size"]), str(cfg["large_size"])])
        else:
            store = work / "arch-store"
            run = sh([GEN, "store", store, str(cfg["big_events"]), str(cfg["big_blobs"]), "1024", "16384", "mix"], capture_output=True, text=True).stdout.strip()
            sh([BIN, "bundle", "--quiet", "--store", store, "--run", run, "--output", bundle])
        size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
        what = f"{label}, {size / MIB:.0f} MiB"
        ours, tar = interleaved([
            (lambda i, b=bundle: [BIN, "pack", "--quiet", "--bundle", b, "--output", work / f"p-{b.stem}-{i}.cath-bundle.tar.zst"], None),
            (lambda i, b=bundle: ["tar", "--zstd", "-cf", work / f"t-{b.stem}-{i}.tar.zst", "-C", b.parent, b.name], None),
        ], rep)
        res.add(f"pack ({what}) vs tar --zstd -cf", ours, tar, ours / tar, "<= 1.1x", ours / tar <= 1.1, "s")
        archive = work / f"v-{bundle.name}.tar.zst"
        sh([BIN, "pack", "--quiet", "--bundle", bundle, "--output", archive])
        ours, ref = interleaved([
            ([BIN, "verify-bundle", "--quiet", "--bundle", archive], None),
            (f"zstd -dc {archive} | b3sum --no-names", None),
        ], rep)
        res.add(f"verify archive ({what}) vs zstd -dc | b3sum", ours, ref, ours / ref, "<= 1.2x", ours / ref <= 1.2, "s")
        ours, ref = interleaved([
            (lambda i, a=archive: [BIN, "unpack", "--quiet", "--bundle", a, "--output", work / f"u-{a.stem}-{i}.cath-bundle"], None),
            (lambda i, a=archive: f"mkdir {work}/x-{a.stem}-{i} && tar --zstd -xf {a} -C {work}/x-{a.stem}-{i} && sync", None),
        ], rep)
        res.add(f"unpack ({what}) vs tar --zstd -xf + sync", ours, ref, ours / ref, "<= 1.2x", ours / ref <= 1.2, "s")
        clean(work, "arch-*", "p-*", "t-*", "v-*", "u-*", "x-*")


def replay(cfg, work, res, rep, section):
    """9. Replay, explain, diff on coherent runs of 1,000 interleaved nodes:
    replay's fold against the log decode alone (in process, alternating),
    the commands' wall time, and peak memory."""
    section("9. replay")
    for n in cfg["replay_sizes"]:
        b = work / f"replay-{n}.cath-bundle"
        sh([GEN, "replay-bundle", b, str(n)])
        m = json.loads(sh([GEN, "replay", b, str(cfg["replay_rounds"])], capture_output=True, text=True).stdout)
        speed, decode = m["replay_events_per_s"], m["decode_events_per_s"]
        res.add(f"replay, {n} events (postcard) vs the log decode alone", speed, decode, speed / decode,
                ">= 5 M/s and >= 0.5x", speed >= 5e6 and speed / decode >= 0.5, "ev/s")
        t, rss = timed([BIN, "replay", "--fast", "--bundle", b], 1)
        res.add(f"cathedral replay --fast, {n} events: wall time", t, None, None, None, None, "s")
        res.add(f"peak RSS, cathedral replay --fast, {n} events", rss, None, None, "< 100 MiB", rss < 100 * MIB, "B")
        t, _ = timed([BIN, "replay", "--bundle", b], 1)
        res.add(f"cathedral replay (verifies first), {n} events: wall time", t, None, None, None, None, "s")
        t, rss = timed([BIN, "explain", "--fast", "--bundle", b], 1)
        res.add(f"cathedral explain --fast, {n} events: wall time", t, None, None, "seconds", None, "s")
        t, rss = timed([BIN, "diff", "--fast", b, b], 1)
        res.add(f"cathedral diff --fast, {n} events against itself: wall time", t, None, None, "seconds", None, "s")
        res.add(f"peak RSS, cathedral diff --fast, {n} events", rss, None, None, None, None, "B")
        clean(work, b.name)


def remote(cfg, work, res, rep, section):
    """10. Remote: push of a large bundle against rclone uploading the same
    files with the same concurrency, to the loopback S3 server; and the
    bytes a second push sends when 90% of the blobs are shared."""
    section("10. remote")
    env = os.environ
    bucket = env.get("CATHEDRAL_TEST_BUCKET")
    if not bucket:
        raise SystemExit("section 10 needs the S3 server: run bench/run.sh, which starts it")
    env.update(RCLONE_S3_PROVIDER="Other", RCLONE_S3_ENDPOINT=env["AWS_ENDPOINT_URL"], RCLONE_S3_ACCESS_KEY_ID=env["AWS_ACCESS_KEY_ID"],
               RCLONE_S3_SECRET_ACCESS_KEY=env["AWS_SECRET_ACCESS_KEY"], RCLONE_S3_REGION=env["AWS_REGION"], RCLONE_S3_FORCE_PATH_STYLE="true")
    b = work / "remote-large.cath-bundle"
    sh([GEN, "blobs-bundle", b, str(cfg["large_count"]), str(cfg["large_size"]), str(cfg["large_size"])])
    size = sum(f.stat().st_size for f in b.rglob("*") if f.is_file())
    stamp = time.strftime("%H%M%S")
    ours, ref = interleaved([
        (lambda i: [BIN, "push", "--quiet", "--bundle", b, "--remote", f"s3://{bucket}/bench-{stamp}-ours-{i}"], None),
        (lambda i: f"env -u AWS_CA_BUNDLE rclone copy --transfers 16 --s3-upload-concurrency 4 --s3-chunk-size 8M {b} :s3:{bucket}/bench-{stamp}-rclone-{i}", None),
    ], rep)
    res.add(f"push {size / MIB:.0f} MiB bundle vs rclone copy, 16 transfers", ours, ref, ours / ref, "<= 1.0x", ours / ref <= 1.0, "s")
    count = cfg["shared_count"]
    first, second = work / "shared-a.cath-bundle", work / "shared-b.cath-bundle"
    sh([GEN, "shared-bundle", first, str(count), str(cfg["shared_size"]), str(count * 9 // 10), "0"])
    sh([GEN, "shared-bundle", second, str(count), str(cfg["shared_size"]), str(count * 9 // 10), "1"])
    url = f"s3://{bucket}/bench-{stamp}-dedup"
    a = json.loads(sh([BIN, "push", "--json", "--bundle", first, "--remote", url], capture_output=True, text=True).stdout)
    b2 = json.loads(sh([BIN, "push", "--json", "--bundle", second, "--remote", url], capture_output=True, text=True).stdout)
    ratio = b2["bytes_uploaded"] / a["bytes_uploaded"]
    res.add(f"second push sharing 90% of {count} blobs: bytes sent vs the first push", b2["bytes_uploaded"], a["bytes_uploaded"], ratio,
            "<= 0.15x", ratio <= 0.15, "B")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--archives", action="store_true", help="only the archive section (8), at full size")
    ap.add_argument("--replay", action="store_true", help="only the replay section (9), at full size")
    ap.add_argument("--remote", action="store_true", help="only the remote section (10), at full size")
    args = ap.parse_args()
    cfg = SMOKE if args.smoke else FULL
    rep = cfg["repeat"]
    work = ROOT / "bench/work" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    res = Results(judged=not args.smoke)
    began = time.perf_counter()
    print(f"work directory: {work}", flush=True)
    if args.archives or args.replay or args.remote:
        def quick(title):
            os.sync()
            print(title, flush=True)
        (archives if args.archives else replay if args.replay else remote)(cfg, work, res, rep, quick)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        return

    def section(title):
        # Start each section with no dirty pages left over from the previous one.
        os.sync()
        print(title, flush=True)

    # 4. Event log throughput against in-memory encoding and decoding. Run
    # first: measured after the sections that create a million files, log
    # writes were several times slower (file-system writeback state).
    section("4. event log")
    codec = json.loads(sh([GEN, "codec", str(cfg["codec_events"]), work], capture_output=True, text=True).stdout)
    for enc in ("postcard", "cbor"):
        c = codec[enc]
        target = ">= 5 M/s" if enc == "postcard" else None
        for op, raw in (("write", "encode"), ("read", "decode")):
            ours = c[f"log_{op}_per_s"]
            ref = c[f"{raw}_per_s"]
            passed = (ours >= 5e6) if target else None
            res.add(f"{enc} log {op} vs in-memory {raw}", ours, ref, ours / ref, target, passed, "ev/s")
        synced = c["log_write_synced_per_s"]
        res.add(f"{enc} log write including the final fsync vs in-memory encode", synced, c["encode_per_s"], synced / c["encode_per_s"], None, None, "ev/s")


    # 1. Verify, large blobs, against b3sum over the same blob files.
    section("1. verify, large blobs")
    large = work / "large.cath-bundle"
    sh([GEN, "blobs-bundle", large, str(cfg["large_count"]), str(cfg["large_size"]), str(cfg["large_size"])])
    ours, ref = interleaved([([BIN, "verify-bundle", "--quiet", "--bundle", large], None), (["b3sum", "--no-names"] + blob_files(large), None)], rep)
    res.add(f"verify, {cfg['large_count']} x {cfg['large_size'] // MIB} MiB blobs vs b3sum", ours, ref, ours / ref, "<= 1.10x", ours / ref <= 1.10, "s")

    # 2. Verify, small blobs, against b3sum --check of a checksum list.
    section("2. verify, small blobs")
    small = work / "small.cath-bundle"
    sh([GEN, "blobs-bundle", small, str(cfg["small_count"]), "1024", "4096"])
    sh("find blobs -type f -print0 | sort -z | xargs -0 b3sum > ../small.b3", cwd=small)
    ours, fast, ref = interleaved([
        ([BIN, "verify-bundle", "--quiet", "--bundle", small], None),
        ([BIN, "verify-bundle", "--quiet", "--fast", "--bundle", small], None),
        (["b3sum", "--check", "--quiet", "../small.b3"], small),
    ], rep)
    res.add(f"verify, {cfg['small_count']} blobs of 1-4 KiB vs b3sum --check", ours, ref, ours / ref, "<= 0.45x", ours / ref <= 0.45, "s")
    res.add("verify --fast, same bundle vs b3sum --check", fast, ref, fast / ref, None, None, "s")

    # 3. Create: many small blobs against the file-system floor; a large run against tar and cp.
    section("3. create")
    store_small = work / "store-small"
    run_small = sh([GEN, "store", store_small, "4", str(cfg["create_count"]), "1024", "4096"], capture_output=True, text=True).stdout.strip()
    ours, floor = interleaved([
        (lambda i: [BIN, "bundle", "--quiet", "--compression-level", "0", "--store", store_small, "--run", run_small, "--output", work / f"create-{i}.cath-bundle"], None),
        (lambda i: f"{GEN} floor {work}/floor-{i} {cfg['create_count']} 1024 4096 && sync", None),
    ], rep)
    res.add(f"bundle {cfg['create_count']} blobs of 1-4 KiB vs creating the files + sync", ours, floor, ours / floor, "<= 1.3x", ours / floor <= 1.3, "s")

    store_big = work / "store-big"
    run_big = sh([GEN, "store", store_big, str(cfg["big_events"]), str(cfg["big_blobs"]), "1024", "16384", "mix"], capture_output=True, text=True).stdout.strip()
    run_dir = f"runs/{run_big}"
    ours, tar, cp = interleaved([
        (lambda i: [BIN, "bundle", "--quiet", "--store", store_big, "--run", run_big, "--output", work / f"big-{i}.cath-bundle"], None),
        (lambda i: ["tar", "--zstd", "-cf", work / f"big-{i}.tar.zst", "-C", store_big, run_dir], None),
        (lambda i: ["cp", "-r", store_big / run_dir, work / f"big-cp-{i}"], None),
    ], rep)
    res.add(f"bundle {cfg['big_events']} events + {cfg['big_blobs']} blobs vs tar --zstd -cf", ours, tar, ours / tar, None, None, "s")
    res.add(f"bundle {cfg['big_events']} events + {cfg['big_blobs']} blobs vs cp -r", ours, cp, ours / cp, None, None, "s")
    # Both sides durable: the bundle is synced before it appears.
    ours, tar = interleaved([
        (lambda i: [BIN, "bundle", "--quiet", "--store", store_big, "--run", run_big, "--output", work / f"bigs-{i}.cath-bundle"], None),
        (lambda i: f"tar --zstd -cf {work}/bigs-{i}.tar.zst -C {store_big} {run_dir} && sync", None),
    ], rep)
    res.add(f"bundle {cfg['big_events']} events + {cfg['big_blobs']} blobs vs tar --zstd -cf + sync", ours, tar, ours / tar, "<= 1.0x", ours / tar <= 1.0, "s")
    # Memory of capture does not grow with the number of events.
    for n in cfg["capture_sizes"]:
        store_n = work / f"store-{n}"
        run_n = sh([GEN, "store", store_n, str(n), "10", "1024", "2048"], capture_output=True, text=True).stdout.strip()
        _, rss = timed([BIN, "bundle", "--quiet", "--store", store_n, "--run", run_n, "--output", work / f"mem-{n}.cath-bundle", "--force"], 1)
        res.add(f"peak RSS, bundle, {n} events", rss, None, None, "< 100 MiB", rss < 100 * MIB, "B")
        shutil.rmtree(store_n, ignore_errors=True)
        shutil.rmtree(work / f"mem-{n}.cath-bundle", ignore_errors=True)

    clean(work, "store-small", "create-*", "floor-*", "store-big", "big-*", "bigs-*")

    # 5. Random access through inspect, growing log sizes.
    section("5. random access")
    access = {}
    for n in cfg["access_sizes"]:
        b = work / f"events-{n}.cath-bundle"
        sh([GEN, "events-bundle", b, str(n)])
        probes = json.loads(Path(f"{b}.probe.json").read_text())[:5]
        kinds = {
            "position": lambda p: ["--events", "--from", str(p["position"]), "--limit", "1"],
            "id": lambda p: ["--event", p["event_id"]],
            "time": lambda p: ["--time", str(p["logical_time"])],
        }
        for kind, flags in kinds.items():
            times = [timed([BIN, "inspect", "--fast", "--bundle", b] + flags(p), rep)[0] for p in probes]
            access[(kind, n)] = statistics.median(times) * 1000
            # The default: read lazily, every byte shown checked against the manifest.
            times = [timed([BIN, "inspect", "--bundle", b] + flags(p), rep)[0] for p in probes]
            access[(kind, n, "lazy")] = statistics.median(times) * 1000
    smallest, largest = cfg["access_sizes"][0], cfg["access_sizes"][-1]
    for kind in ("position", "id", "time"):
        for n in cfg["access_sizes"]:
            ms = access[(kind, n)]
            res.add(f"event by {kind}, {n} events (inspect --fast)", ms, None, None, "< 10 ms", ms < 10, "ms")
        for n in cfg["access_sizes"]:
            ms = access[(kind, n, "lazy")]
            res.add(f"event by {kind}, {n} events (inspect, verified lazily)", ms, None, None, "< 10 ms", ms < 10, "ms")
        growth = access[(kind, largest)] / access[(kind, smallest)]
        res.add(f"event by {kind}: {largest} vs {smallest} events", access[(kind, largest)], access[(kind, smallest)], growth, "no growth (<= 1.5x)", growth <= 1.5, "ms")

    # One event of a bundle holding many blobs costs what it costs without them.
    few = work / f"events-{smallest}.cath-bundle"
    many_blobs, no_blobs, fast_many = interleaved([
        ([BIN, "inspect", "--bundle", small, "--events", "--from", "1", "--limit", "1"], None),
        ([BIN, "inspect", "--bundle", few, "--events", "--from", "1", "--limit", "1"], None),
        ([BIN, "inspect", "--fast", "--bundle", small, "--events", "--from", "1", "--limit", "1"], None),
    ], rep)
    res.add(f"one event, bundle of {cfg['small_count']} blobs vs of none (inspect)", many_blobs, no_blobs, many_blobs / no_blobs, "<= 1.5x", many_blobs / no_blobs <= 1.5, "s")
    res.add(f"one event, bundle of {cfg['small_count']} blobs vs of none (inspect --fast)", fast_many, no_blobs, fast_many / no_blobs, None, None, "s")

    # 6. Peak memory on the largest bundle.
    section("6. memory")
    biggest = work / f"events-{largest}.cath-bundle"
    _, rss = timed([BIN, "verify-bundle", "--quiet", "--bundle", biggest], 1)
    res.add(f"peak RSS, verify-bundle, {largest} events", rss, None, None, "< 100 MiB", rss < 100 * MIB, "B")
    # Event-heavy verification (hash, decode, event rules, exact index check) against hashing the log alone.
    ours, ref = interleaved([
        ([BIN, "verify-bundle", "--quiet", "--bundle", biggest], None),
        (["b3sum", "--no-names", biggest / "events.cath-log"], None),
    ], rep)
    res.add(f"verify-bundle, {largest} events vs b3sum of the log", ours, ref, ours / ref, "<= 2.0x", ours / ref <= 2.0, "s")
    middle_b = work / f"events-{cfg['access_sizes'][-2] if len(cfg['access_sizes']) > 1 else largest}.cath-bundle"
    every_file = [str(p) for p in sorted(middle_b.rglob("*")) if p.is_file()]
    ours, ref = interleaved([
        ([BIN, "verify-bundle", "--quiet", "--bundle", middle_b], None),
        (["b3sum", "--no-names"] + every_file, None),
    ], rep)
    res.add(f"verify-bundle, {middle_b.name} vs b3sum of every file", ours, ref, ours / ref, "<= 2.0x", ours / ref <= 2.0, "s")
    # inspect --events against decompressing the same JSON lines with zstd, both to /dev/null.
    jsonl = work / "events.jsonl.zst"
    sh(f"{BIN} inspect --fast --bundle {biggest} --events | zstd -q -3 -o {jsonl}")
    ours, fast, ref = interleaved([
        ([BIN, "inspect", "--bundle", biggest, "--events"], None),
        ([BIN, "inspect", "--fast", "--bundle", biggest, "--events"], None),
        (["zstd", "-dc", jsonl], None),
    ], rep)
    res.add(f"inspect --events, {largest} events vs zstd -dc of the JSON lines", ours, ref, ours / ref, "<= 2.0x", ours / ref <= 2.0, "s")
    res.add(f"inspect --fast --events, {largest} events vs zstd -dc of the JSON lines", fast, ref, fast / ref, None, None, "s")
    _, rss = timed([BIN, "inspect", "--bundle", biggest, "--events"], 1)
    res.add(f"peak RSS, inspect --events, {largest} events", rss, None, None, "< 100 MiB", rss < 100 * MIB, "B")
    # The same events in CBOR against postcard.
    middle = cfg["access_sizes"][-2] if len(cfg["access_sizes"]) > 1 else largest
    postcard_b, cbor_b = work / f"events-{middle}.cath-bundle", work / f"events-{middle}-cbor.cath-bundle"
    sh([GEN, "events-bundle", cbor_b, str(middle), "cbor"])
    cbor_v, post_v, cbor_e, post_e = interleaved([
        ([BIN, "verify-bundle", "--quiet", "--bundle", cbor_b], None),
        ([BIN, "verify-bundle", "--quiet", "--bundle", postcard_b], None),
        ([BIN, "inspect", "--bundle", cbor_b, "--events"], None),
        ([BIN, "inspect", "--bundle", postcard_b, "--events"], None),
    ], rep)
    res.add(f"verify-bundle, {middle} events, CBOR vs postcard", cbor_v, post_v, cbor_v / post_v, "<= 1.5x", cbor_v / post_v <= 1.5, "s")
    res.add(f"inspect --events, {middle} events, CBOR vs postcard", cbor_e, post_e, cbor_e / post_e, "<= 1.5x", cbor_e / post_e <= 1.5, "s")
    _, rss = timed([BIN, "verify-bundle", "--quiet", "--bundle", large], 1)
    res.add(f"peak RSS, verify-bundle, {cfg['large_count']} x {cfg['large_size'] // MIB} MiB blobs", rss, None, None, "< 100 MiB", rss < 100 * MIB, "B")

    clean(work, "events-*", "events.jsonl.zst", "small.cath-bundle", "small.b3", "large.cath-bundle")

    # 7. Compression on a realistic mix, and verification that must decompress.
    section("7. compression")
    store_mix = work / "store-mix"
    run_mix = sh([GEN, "store", store_mix, "4", str(cfg["mix_blobs"]), "1024", "65536", "mix"], capture_output=True, text=True).stdout.strip()
    mix_bundle = work / "mix.cath-bundle"
    sh([BIN, "bundle", "--quiet", "--store", store_mix, "--run", run_mix, "--output", mix_bundle])
    raw_dir = store_mix / "runs" / run_mix / "blobs"
    content = sum(f.stat().st_size for f in raw_dir.iterdir())
    stored = sum(os.path.getsize(f) for f in blob_files(mix_bundle))
    zdir = work / "mix-zstd"
    shutil.copytree(raw_dir, zdir)
    sh(["zstd", "-3", "-q", "-r", "--rm", str(zdir)])
    zstd_total = sum(f.stat().st_size for f in zdir.iterdir())
    res.add("blob compression ratio (stored/content) vs zstd -3 per file", stored / content, zstd_total / content, stored / zstd_total, "<= 1.05x", stored / zstd_total <= 1.05, "ratio")
    ours, ref = interleaved([
        ([BIN, "verify-bundle", "--quiet", "--bundle", mix_bundle], None),
        (f"find {zdir} -type f -print0 | sort -z | xargs -0 zstd -d -q -c | b3sum --no-names", None),
    ], rep)
    res.add("verify (decompressing) vs zstd -d piped into b3sum", ours, ref, ours / ref, None, None, "s")

    clean(work, "store-mix", "mix*")
    archives(cfg, work, res, rep, section)
    replay(cfg, work, res, rep, section)
    remote(cfg, work, res, rep, section)

    elapsed = time.perf_counter() - began
    out = dict(smoke=args.smoke, elapsed_s=elapsed, machine=dict(cpus=os.cpu_count()), results=res.rows)
    name = "results-smoke" if args.smoke else "results"
    (ROOT / "bench" / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    table = ["| figure | ours | reference | ratio | target | result |", "|---|---|---|---|---|---|"]
    for r in res.rows:
        table.append(f"| {r['figure']} | {fmt(r['ours'], r['unit'])} | {fmt(r['reference'], r['unit'])} | {fmt_ratio(r['ratio'])} | {r['target'] or '-'} | {verdict(r['passed'])} |")
    text = "\n".join(table)
    (ROOT / "bench" / f"{name}.md").write_text(f"# Benchmark results{' (smoke)' if args.smoke else ''}\n\n{cfg['repeat']} timed runs each (median, after one warm-up), {os.cpu_count()} cores, warm page cache; {elapsed:.0f} s in all.\n\n{text}\n")
    print("\n" + text)
    print(f"\nfinished in {elapsed:.0f} s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
