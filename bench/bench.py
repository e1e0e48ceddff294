#!/usr/bin/env python3
"""Benchmark syncease against rsync, xcp, cpz, cp -a, tar | tar and a find stat, on generated trees.

One command builds nothing but the trees; build syncease first (cargo build --release):

    python3 bench/bench.py --scratch /dev/shm/syncease-bench
    python3 bench/bench.py --scratch /mnt/ext4 --scenarios small,mixed --rounds 5

Scenarios (seeded, so every run generates the same trees):
  small  100,000 files of 1-16 KiB in 1,000 directories
  large  4 files of 512 MiB of incompressible data
  mixed  ~20,000 files with log-normal sizes, up to 8 levels deep, empty dirs, symlinks
  huge   1,000,000 empty or tiny files

Phases: initial (empty DST), no-op (DST up to date), incremental (after a mutation that modifies
1 % of the files, adds 1 % and deletes 1 %). Tools run interleaved (A B A B ...) for each round
and the median of the rounds is reported; a ratio is the median of the round-by-round ratios
(syncease's time over the other tool's in the same round). cp, tar and xcp cannot delete, so
they only take part in the initial copy; two `find -printf` at once (one per tree) stat every entry of both trees, the floor for a
no-op run. Every result is checked against the source (type, bytes, mode, mtime in nanoseconds,
link target) in the first round: a fast wrong answer is marked, never counted as a win (cpz
keeps no times, so its copies are checked without them: it is a limit for the per-file cost,
not a mirror). Peak RSS comes from GNU time. The page cache is warmed by reading the source
before each timed run; with --cold (root) the page, dentry and inode caches are dropped
instead, as a nightly backup finds them: run it on a real filesystem, such as a fresh ext4 on a
loop device. The report gives the noise, the median spread of the rounds, and says when it is
too high (above 20 %) for the figures to be quoted; when it is, but the round-by-round ratios
spread no more than 20 % (a slow spell of the machine slows every tool of its round), it says
the ratios can still be quoted.

    python3 bench/bench.py --scratch /mnt/ext4-loop --scenarios small --rounds 5 --cold
"""

import argparse
import hashlib
import math
import os
import platform
import random
import shutil
import statistics
import stat
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20


# ---------------------------------------------------------------------------------------------
# Tree generation


def write_file(path, size, rng):
    with open(path, "wb") as f:
        if size <= MIB:
            f.write(rng.randbytes(size))
            return
        while size > 0:  # large files: incompressible bytes, in chunks
            f.write(os.urandom(min(size, 8 * MIB)))
            size -= 8 * MIB


def random_mtime(path, rng, follow=True):
    sec = rng.randrange(1_400_000_000, 1_700_000_000)
    ns = sec * 1_000_000_000 + rng.randrange(1_000_000_000)
    os.utime(path, ns=(ns, ns), follow_symlinks=follow)


def gen_grid(root, rng, per_dir, name, size, with_mtime):
    """1,000 directories in 32 groups, `per_dir` files each."""
    for d in range(1000):
        dir_path = os.path.join(root, f"d{d // 32:02}", f"e{d:04}")
        os.makedirs(dir_path, exist_ok=True)
        for i in range(per_dir):
            path = os.path.join(dir_path, name(i))
            write_file(path, size(rng), rng)
            if with_mtime:
                random_mtime(path, rng)


def gen_small(root, rng):
    size = lambda r: r.randrange(1024, 16 * 1024 + 1)  # noqa: E731
    gen_grid(root, rng, 100, lambda i: f"f{i:03}.dat", size, True)


def gen_large(root, rng):
    os.makedirs(root, exist_ok=True)
    for i in range(4):
        path = os.path.join(root, f"large-{i}.bin")
        write_file(path, 512 * MIB, rng)
        random_mtime(path, rng)


def gen_mixed(root, rng):
    os.makedirs(root, exist_ok=True)
    dirs = [root]
    for i in range(2500):
        parent = rng.choice(dirs)
        if parent.count(os.sep) - root.count(os.sep) >= 8:
            parent = root
        path = os.path.join(parent, f"dir{i}")
        os.mkdir(path)
        dirs.append(path)
    for i in range(20_000):
        path = os.path.join(rng.choice(dirs), f"file{i}.bin")
        size = min(int(rng.lognormvariate(8.5, 2.2)), 64 * MIB)
        write_file(path, size, rng)
        random_mtime(path, rng)
    for i in range(500):
        path = os.path.join(rng.choice(dirs), f"link{i}")
        os.symlink(rng.choice(["../file1.bin", "/usr/share", f"dangling-{i}", "dir3"]), path)
        random_mtime(path, rng, follow=False)


def gen_huge(root, rng):
    size = lambda r: r.choice((0, 0, 0, 1, 7, 64))  # noqa: E731
    gen_grid(root, rng, 1000, lambda i: f"{i:04}", size, False)


SCENARIOS = {"small": gen_small, "large": gen_large, "mixed": gen_mixed, "huge": gen_huge}


def all_files(root):
    out = []
    for dirpath, _, files in os.walk(root):
        out.extend(os.path.join(dirpath, f) for f in files)
    out.sort()
    return out


def mutate(src_a, src_b, rng):
    """SRC_B = a copy of SRC_A with 1 % of files modified, 1 % added, 1 % deleted.

    A real copy, not hard links: linked, every file of SRC_A would have a second name, and
    every run would measure the bookkeeping of hard links (about 75 bytes a file more) on a
    tree that is meant to have none."""
    subprocess.run(["cp", "-a", src_a, src_b], check=True)
    files = [f for f in all_files(src_b) if not os.path.islink(f)]
    n = max(1, round(len(files) * 0.01))
    chosen = rng.sample(files, 2 * n)
    for path in chosen[:n]:  # modify: a new inode, so SRC_A keeps its version
        size = os.path.getsize(path)
        tmp = path + ".new"
        write_file(tmp, max(size, 1), rng)
        random_mtime(tmp, rng)
        os.replace(tmp, path)
    sizes = []
    for path in chosen[n:]:
        sizes.append(os.path.getsize(path))
        os.unlink(path)
    for i, size in enumerate(sizes):
        parent = os.path.dirname(rng.choice(files))
        path = os.path.join(parent, f"added-{i}.bin")
        write_file(path, size, rng)
        random_mtime(path, rng)


# ---------------------------------------------------------------------------------------------
# Verification


def manifest(root, mtime_ns=True, times=True):
    """Every entry below root: type, mode, mtime (in whole seconds without `mtime_ns`; left
    out without `times`), size and content hash or link target."""
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        for name in dirnames + files + ([""] if dirpath == root else []):
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mtime = st.st_mtime_ns if mtime_ns else st.st_mtime_ns // 1_000_000_000
            mtime = mtime if times else None
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), mtime)
            else:
                h = hashlib.blake2b()
                with open(path, "rb") as f:
                    while chunk := f.read(4 * MIB):
                        h.update(chunk)
                out[rel] = ("f", stat.S_IMODE(st.st_mode), mtime, st.st_size, h.hexdigest())
    return out


def differences(expected, actual):
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    wrong = sorted(k for k in expected if k in actual and expected[k] != actual[k])
    return missing, extra, wrong


# ---------------------------------------------------------------------------------------------
# Running and timing


OVERHEAD = 0.0  # seconds spent starting a command through run_timed, measured at start-up


def calibrate():
    """Measure the cost of starting a command (Python + GNU time + exec) to subtract it."""
    global OVERHEAD
    OVERHEAD = statistics.median(run_timed(["true"])[0] for _ in range(7))


def run_timed(argv, shell=False):
    """Run a command; return (seconds, peak RSS in bytes, exit status).

    GNU time measures the peak RSS: a child forked from this Python process would report
    Python's own high-water mark, which the kernel carries across exec. Dirty pages are
    written back first, so one command's writeback never lands in the next one's time.
    """
    os.sync()
    if shell:
        argv = ["sh", "-c", argv]
    rss_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"syncease-bench-rss-{os.getpid()}")
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", rss_file] + argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    elapsed = max(time.perf_counter() - start - OVERHEAD, 0.0)
    with open(rss_file) as f:
        rss = int(f.read().split()[-1]) * 1024
    os.remove(rss_file)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        print(f"  ! {' '.join(argv)} exited {proc.returncode}: {err[-500:]}")
    return elapsed, rss, proc.returncode


COLD = False


def warm(src):
    """Start every tool alike: from a warm page cache (the source read first), or with --cold
    from none at all (page, dentry and inode caches dropped: a nightly run's first minutes)."""
    if COLD:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return
    subprocess.run(
        f"find '{src}' -type f -print0 | xargs -0 -r cat > /dev/null", shell=True, check=False
    )


def tool_commands(binary, jobs):
    sync = [binary, "-q", "--no-progress"] + (["-j", str(jobs)] if jobs else [])
    cmds = {
        "syncease": lambda s, d: (sync + [s, d], False),
        "rsync": lambda s, d: (["rsync", "-a", "--delete", s + "/", d + "/"], False),
        "cp -a": lambda s, d: (["cp", "-a", s, d], False),
        "tar|tar": lambda s, d: (
            f"mkdir -p '{d}' && tar --format=posix -C '{s}' -cf - . | tar -C '{d}' -xpf -",
            True,
        ),
    }
    if shutil.which("xcp"):
        cmds["xcp"] = lambda s, d: (["xcp", "-r", s, d], False)
    if shutil.which("cpz"):
        cmds["cpz"] = lambda s, d: (["cpz", s, d], False)
    return cmds


MIRRORS = ("syncease", "rsync")
# Copiers that keep no file times: a limit for the per-file cost, not a mirror. Their copies
# are checked without times.
TIMELESS = ("cpz",)


def bench_scenario(name, args, binary, scratch, results):
    base = os.path.join(scratch, name)
    src_a, src_b = os.path.join(base, "src-a"), os.path.join(base, "src-b")
    if not os.path.isdir(src_a):
        print(f"[{name}] generating ...", flush=True)
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        SCENARIOS[name](src_a, random.Random(name))
        mutate(src_a, src_b, random.Random(name + "-mutate"))
    print(f"[{name}] manifests ...", flush=True)
    expected_a = manifest(src_a)
    expected_b = manifest(src_b)
    entries = len(expected_a)
    tools = tool_commands(binary, args.jobs)
    dst = {t: os.path.join(base, "dst-" + t.replace(" ", "").replace("|", "")) for t in tools}

    def record(phase, tool, secs, rss, ok):
        results.setdefault((name, phase, tool), []).append((secs, rss, ok))

    expected_timeless = manifest(src_a, times=False)

    def check(tool, target, expected):
        # tar's POSIX format and xcp keep sub-second times; the check is exact for everyone
        # but the copiers that keep no times.
        if tool in TIMELESS:
            expected, found = expected_timeless, manifest(target, times=False)
        else:
            found = manifest(target)
        missing, extra, wrong = differences(expected, found)
        if missing or extra or wrong:
            print(
                f"  ! {tool}: {len(missing)} missing, {len(extra)} extra, {len(wrong)} wrong"
                f" {(missing + extra + wrong)[:3]}"
            )
            return False
        return True

    for r in range(args.rounds):
        print(f"[{name}] round {r + 1}: initial", flush=True)
        for tool, make in tools.items():
            shutil.rmtree(dst[tool], ignore_errors=True)
            warm(src_a)
            argv, shell = make(src_a, dst[tool])
            secs, rss, code = run_timed(argv, shell)
            ok = code == 0 and (r > 0 or check(tool, dst[tool], expected_a))
            record("initial", tool, secs, rss, ok)
            if tool not in MIRRORS:
                shutil.rmtree(dst[tool], ignore_errors=True)
    for r in range(args.rounds):
        print(f"[{name}] round {r + 1}: no-op", flush=True)
        for tool in MIRRORS:
            warm(src_a)
            argv, shell = tools[tool](src_a, dst[tool])
            secs, rss, code = run_timed(argv, shell)
            ok = code == 0 and (r > 0 or check(tool, dst[tool], expected_a))
            record("no-op", tool, secs, rss, ok)
        # The floor of a no-op: stat both trees, one find each, both at once.
        warm(src_a)
        each = "find '{}' -printf '%s %T@ %m\\n' >/dev/null"
        secs, rss, code = run_timed(
            each.format(src_a) + " & " + each.format(dst["syncease"]) + " & wait", shell=True
        )
        record("no-op", "find", secs, rss, code == 0)
    for r in range(args.rounds):
        print(f"[{name}] round {r + 1}: incremental", flush=True)
        for tool in MIRRORS:
            argv, shell = tools[tool](src_a, dst[tool])
            run_timed(argv, shell)  # back to a mirror of SRC_A, untimed
            warm(src_b)
            argv, shell = tools[tool](src_b, dst[tool])
            secs, rss, code = run_timed(argv, shell)
            ok = code == 0 and (r > 0 or check(tool, dst[tool], expected_b))
            record("incremental", tool, secs, rss, ok)
    for tool in MIRRORS:
        shutil.rmtree(dst[tool], ignore_errors=True)
    return entries


# ---------------------------------------------------------------------------------------------
# Report


def median(values):
    return statistics.median(values) if values else math.nan


def noise(results, scenarios):
    """The median, over every (scenario, phase, tool) of the scenarios given, of the spread
    of its rounds ((max - min) / median): how far one round is from another on this machine
    now."""
    spreads = []
    for (name, _, _), runs in results.items():
        if name not in scenarios:
            continue
        times = [s for s, _, _ in runs]
        if len(times) > 1 and median(times) > 0:
            spreads.append((max(times) - min(times)) / median(times))
    return median(spreads)


def others(times):
    """Of the tools timed in one phase (tool -> median seconds), the fastest that is neither
    syncease nor rsync: what "best other" is compared with."""
    rest = {k: v for k, v in times.items() if k not in ("syncease", "rsync")}
    return min(rest, key=rest.get) if rest else None


def paired(results, name, phase, tool):
    """syncease's time over `tool`'s, round by round (the tools of a round run one after the
    other, so a slow spell of the machine that lasts a round slows both alike): the ratios."""
    mine = results.get((name, phase, "syncease"), [])
    theirs = results.get((name, phase, tool), [])
    return [a[0] / b[0] for a, b in zip(mine, theirs) if b[0] > 0]


def paired_noise(results, scenarios):
    """The median, over every (scenario, phase) and every ratio the report gives, of the
    spread of the round-by-round ratios: how far the ratios are from one round to the next,
    the machine's slow spells mostly cancelled."""
    spreads = []
    for name in scenarios:
        for phase in ("initial", "no-op", "incremental"):
            times = {
                tool: median([s for s, _, _ in runs])
                for (n, p, tool), runs in results.items()
                if n == name and p == phase
            }
            for tool in ("rsync", others(times)):
                ratios = paired(results, name, phase, tool) if tool else []
                if len(ratios) > 1 and median(ratios) > 0:
                    spreads.append((max(ratios) - min(ratios)) / median(ratios))
    return median(spreads)


def percent(x):
    """A spread as a percentage, to a tenth (so that one just over the 20 % line does not read
    as 20 %); unknown after one round."""
    return "unknown" if math.isnan(x) else f"{x * 100:.1f} %"


def report(results, scenarios, entries, machine):
    tools = ["syncease", "rsync", "xcp", "cpz", "cp -a", "tar|tar", "find"]
    spread, ratio_spread = noise(results, scenarios), paired_noise(results, scenarios)
    own = {name: noise(results, [name]) for name in scenarios}
    if math.isnan(spread):
        verdict = "Noise: unknown with one round: not to be quoted."
    elif spread <= 0.2:
        verdict = (
            f"Noise: the median spread of the rounds is {percent(spread)} (of the ratios,"
            f" paired round by round, {percent(ratio_spread)}): quotable."
        )
    elif ratio_spread <= 0.2:
        verdict = (
            f"Noise: the median spread of the rounds is {percent(spread)}: the times are too"
            f" noisy to quote; that of the ratios, paired round by round, is"
            f" {percent(ratio_spread)}: the ratios are quotable."
        )
    else:
        verdict = (
            f"Noise: the median spread of the rounds is {percent(spread)}, that of the ratios"
            f" paired round by round {percent(ratio_spread)}: too noisy to quote."
        )
    if len(scenarios) > 1 and not math.isnan(spread):
        quiet = [name for name in scenarios if own[name] <= 0.2]
        verdict += (
            " Scenarios whose own noise is at most 20 %, quotable by themselves: "
            + (", ".join(quiet) if quiet else "none")
            + "."
        )
    lines = [
        machine,
        verdict
        + (" Caches dropped before every timed command (--cold)." if COLD else "")
        + " cpz keeps no file times (a limit for the per-file cost, not a mirror).",
        "",
        "| scenario | phase | " + " | ".join(t.replace("|", "\\|") for t in tools)
        + " | syncease / rsync | syncease / best other |"
        " peak RSS syncease | peak RSS rsync |",
        "|---" * (len(tools) + 6) + "|",
    ]
    for name in scenarios:
        for phase in ("initial", "no-op", "incremental"):
            cells, times = [], {}
            for tool in tools:
                runs = results.get((name, phase, tool))
                if not runs:
                    cells.append("—")
                    continue
                t = median([s for s, _, _ in runs])
                ok = all(ok for _, _, ok in runs)
                times[tool] = t
                cells.append(f"{t:.3f} s" + ("" if ok else " ✗"))
            best_tool = others(times)
            ratio = median(paired(results, name, phase, "rsync"))
            best = median(paired(results, name, phase, best_tool)) if best_tool else math.nan

            def rss(tool):
                runs = results.get((name, phase, tool))
                return f"{max(r for _, r, _ in runs) / MIB:.1f} MiB" if runs else "—"

            def times_cell(x):
                return "—" if math.isnan(x) else f"{x:.2f} ×"

            lines.append(
                f"| {name} ({entries[name]:,} entries; noise {percent(own[name])})"
                + f" | {phase} | " + " | ".join(cells)
                + f" | {times_cell(ratio)} | {times_cell(best)} | {rss('syncease')}"
                + f" | {rss('rsync')} |"
            )
    return "\n".join(lines)


def describe_machine(scratch):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    fs = subprocess.run(
        ["df", "--output=fstype", scratch], capture_output=True, text=True
    ).stdout.split()[-1]
    rsync = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout
    has_xcp = shutil.which("xcp")
    xcp = has_xcp and subprocess.run(["xcp", "--version"], capture_output=True, text=True).stdout.strip()
    has_cpz = shutil.which("cpz")
    cpz = has_cpz and subprocess.run(["cpz", "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, scratch on {fs}; "
        f"{rsync.splitlines()[0].strip()}; {xcp or 'no xcp'}; {cpz or 'no cpz'}; medians of the rounds (ratios: of the rounds' ratios), "
        f"start-up overhead ({OVERHEAD * 1000:.1f} ms) subtracted"
    )


def bench_filters(count, binary, scratch, rounds):
    """Time and peak memory of a run given COUNT exclude patterns (a quarter each: literal
    names, literal paths, name globs at any depth, name globs in a directory), syncease against
    rsync, on a small tree: what a long exclude list costs by itself."""
    base = os.path.join(scratch, "filters")
    shutil.rmtree(base, ignore_errors=True)
    src = os.path.join(base, "src")
    gen_grid(src, random.Random("filters"), 10, lambda i: f"f{i}", lambda rng: 1024, True)
    patterns = os.path.join(base, "patterns")
    with open(patterns, "w") as f:
        for i in range(count):
            f.write(
                [f"name{i}.tmp", f"/dir{i % 100}/file{i}", f"*{i}.bak", f"dir{i}/*.log"][i % 4]
                + "\n"
            )
    rows = []
    for tool, argv in (
        ("syncease", lambda d: [binary, "-q", "--no-progress", "--exclude-from", patterns, src, d]),
        ("rsync", lambda d: ["rsync", "-a", "--delete", "--exclude-from", patterns, src + "/", d + "/"]),
    ):
        runs = []
        for _ in range(rounds):
            dst = os.path.join(base, "dst-" + tool)
            shutil.rmtree(dst, ignore_errors=True)
            secs, rss, _ = run_timed(argv(dst))
            runs.append((secs, rss))
        rows.append((tool, median([r[0] for r in runs]), max(r[1] for r in runs)))
    shutil.rmtree(base, ignore_errors=True)
    lines = [f"{count:,} exclude patterns, first copy of a small tree:", "| tool | seconds | peak RSS |", "|---|---|---|"]
    lines += [f"| {t} | {s:.2f} | {r / 2**20:.0f} MiB |" for t, s, r in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scratch", required=True, help="directory for trees (e.g. /dev/shm/x)")
    parser.add_argument("--scenarios", default="small,large,mixed,huge")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=0, help="syncease -j (default: its own)")
    parser.add_argument(
        "--binary", default=os.path.join(REPO, "target", "release", "syncease")
    )
    parser.add_argument("--keep", action="store_true", help="keep generated trees for next time")
    parser.add_argument(
        "--cold", action="store_true",
        help="drop the page, dentry and inode caches before every timed command (root only; "
        "use a scratch on a real filesystem, e.g. ext4 on a loop device)",
    )
    parser.add_argument(
        "--filters", type=int, default=0, metavar="N",
        help="also time a run given N exclude patterns, against rsync (e.g. 100000)",
    )
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} not found: run cargo build --release first")
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    global COLD
    COLD = args.cold
    if COLD and os.geteuid() != 0:
        sys.exit("--cold drops the kernel's caches: run as root")
    os.makedirs(args.scratch, exist_ok=True)
    if not shutil.which("cpz"):
        print("cpz not found (cargo install cpz): its column stays empty")
    if not shutil.which("xcp"):
        print("xcp not found (cargo install xcp): its column stays empty")
    calibrate()
    print(f"command start-up overhead: {OVERHEAD * 1000:.1f} ms (subtracted from every time)")
    results, entries = {}, {}
    for name in scenarios:
        entries[name] = bench_scenario(name, args, args.binary, args.scratch, results)
        print(report(results, [name], entries, ""), flush=True)
        if not args.keep:
            shutil.rmtree(os.path.join(args.scratch, name), ignore_errors=True)
    print()
    print(report(results, scenarios, entries, describe_machine(args.scratch)))
    print()
    print("Every round, in order (seconds):")
    for (name, phase, tool), runs in results.items():
        print(f"  {name} {phase} {tool}: " + " ".join(f"{s:.3f}" for s, _, _ in runs))
    if args.filters:
        print()
        print(bench_filters(args.filters, args.binary, args.scratch, args.rounds))


if __name__ == "__main__":
    main()
