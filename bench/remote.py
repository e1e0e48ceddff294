#!/usr/bin/env python3
"""Time syncease against `rclone sync` to and from the same S3 bucket (Garage), sshd and
WebDAV server (rclone serve webdav).

Start the servers and build syncease with the backends first:

    eval "$(tests/servers/start /tmp/servers)"
    cargo build --release --features s3,sftp,webdav
    python3 bench/remote.py --scratch /dev/shm/remote-bench
    python3 bench/remote.py --scratch /dev/shm/remote-bench --kinds webdav

Trees (seeded): `small`, 10,000 files of 1-16 KiB in 100 directories; `big`, one file of 1 GiB;
`many` (only when asked: --trees many), 100,000 files of 1 KiB in 1,000 directories; `few`
(likewise), 1,000 files of 1-16 KiB in 10 directories, for a distant host (`--rtt 20`: SFTP
through a relay that holds what passes each way for half of that many milliseconds). For each
remote (S3, SFTP, WebDAV) and tree, the tools run interleaved over fresh destinations: an initial
upload, a no-op upload, a restore into an empty local folder, and a no-op restore. rclone runs
as configured by default (4 transfers, 8 checkers) and with as many transfers as syncease has
workers (16); for SFTP both with `--sftp-disable-hashcheck`, as rclone otherwise runs `md5sum`
through a shell on the server for every uploaded file. rclone cannot set times on this WebDAV
server, so it compares WebDAV files by size alone (syncease: by the time its manifest records).
The S3 and WebDAV no-op runs are made once more, untimed, through a counting relay on loopback,
so the table also gives the requests they take. Each upload is read back with `rclone lsjson`
(S3) or compared on disk (SFTP and WebDAV, which write to a local folder), and
each restore compared with the source, before its time counts. Prints a Markdown table of
medians.
"""

import argparse
import json
import os
import platform
import queue
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set: eval \"$(tests/servers/start DIR)\" first")
    return value


def gen_files(root, rng, dirs, per_dir, size):
    """`dirs` directories of `per_dir` files, each of `size()` random bytes and a random time."""
    for d in range(dirs):
        sub = os.path.join(root, f"d{d:04}")
        os.makedirs(sub)
        for i in range(per_dir):
            path = os.path.join(sub, f"f{i:03}.bin")
            with open(path, "wb") as f:
                f.write(rng.randbytes(size()))
            sec = rng.randrange(1_400_000_000, 1_700_000_000)
            os.utime(path, ns=(sec * 10**9, sec * 10**9 + rng.randrange(10**9)))


def gen_small(root, rng):
    gen_files(root, rng, 100, 100, lambda: rng.randrange(1024, 16 * 1024))


def gen_few(root, rng):
    gen_files(root, rng, 10, 100, lambda: rng.randrange(1024, 16 * 1024))


def gen_many(root, rng):
    gen_files(root, rng, 1000, 100, lambda: 1024)


class Counter:
    """A TCP relay in front of the S3 endpoint that counts HTTP requests (request lines)."""

    METHODS = (
        b"GET /", b"HEAD /", b"PUT /", b"POST /", b"DELETE /",
        b"PROPFIND /", b"PROPPATCH /", b"MKCOL /", b"MOVE /", b"COPY /",
    )

    def __init__(self, upstream):
        host, port = upstream.split("://", 1)[1].rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.endpoint = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.count = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def take(self):
        with self.lock:
            n, self.count = self.count, 0
        return n

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self.pump, args=(server, client, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(client, server, True), daemon=True).start()

    def pump(self, source, sink, count):
        tail = b""
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if count:
                    seen = tail + data
                    lines = sum(seen.count(m) for m in self.METHODS)
                    # A request line split across two reads is counted once, in the second.
                    before = sum(tail.count(m) for m in self.METHODS)
                    with self.lock:
                        self.count += lines - before
                    tail = data[-16:]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Delay:
    """A TCP relay in front of sshd that holds every chunk, each way, for half of `rtt_ms`
    before passing it on (in order): a distant host's round trip on loopback."""

    def __init__(self, port, rtt_ms):
        self.upstream = ("127.0.0.1", int(port))
        self.half = rtt_ms / 2000
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.upstream)
            for source, sink in ((client, server), (server, client)):
                held = queue.Queue()
                threading.Thread(target=self.hold, args=(source, held), daemon=True).start()
                threading.Thread(target=self.send, args=(held, sink), daemon=True).start()

    def hold(self, source, held):
        try:
            while True:
                data = source.recv(1 << 16)
                held.put((time.monotonic() + self.half, data))
                if not data:
                    return
        except OSError:
            held.put((0, b""))

    def send(self, held, sink):
        try:
            while True:
                due, data = held.get()
                if not data:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                sink.sendall(data)
        except OSError:
            pass
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def gen_big(root, rng):
    os.makedirs(root)
    path = os.path.join(root, "one.bin")
    with open(path, "wb") as f:
        for _ in range(1024):
            f.write(os.urandom(MIB))
    os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9 + 7))


def rclone_env():
    e = dict(os.environ)
    e.pop("AWS_CA_BUNDLE", None)  # rclone 1.60 cannot use it with its own transport
    e.update(
        RCLONE_CONFIG="/nonexistent/rclone.conf",
        RCLONE_CONFIG_GARAGE_TYPE="s3",
        RCLONE_CONFIG_GARAGE_PROVIDER="Other",
        RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID=env("SYNCEASE_TEST_S3_KEY_ID"),
        RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY=env("SYNCEASE_TEST_S3_SECRET"),
        RCLONE_CONFIG_GARAGE_ENDPOINT=env("SYNCEASE_TEST_S3_ENDPOINT"),
        RCLONE_CONFIG_GARAGE_REGION=env("SYNCEASE_TEST_S3_REGION"),
        RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE="true",
        RCLONE_CONFIG_SSH_TYPE="sftp",
        RCLONE_CONFIG_SSH_HOST="127.0.0.1",
        RCLONE_CONFIG_SSH_PORT=sftp_port(),
        RCLONE_CONFIG_SSH_USER=sftp_user(),
        RCLONE_CONFIG_SSH_KEY_FILE=env("SYNCEASE_TEST_SSH_KEY"),
        RCLONE_CONFIG_SSH_KNOWN_HOSTS_FILE=known_hosts(),
        TZ="UTC",
    )
    if os.environ.get("SYNCEASE_TEST_WEBDAV_URL"):
        obscured = subprocess.run(
            ["rclone", "obscure", env("SYNCEASE_TEST_WEBDAV_PASSWORD")],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        e.update(
            RCLONE_CONFIG_DAV_TYPE="webdav",
            RCLONE_CONFIG_DAV_URL="http://" + webdav_hostport(),
            RCLONE_CONFIG_DAV_VENDOR="other",
            RCLONE_CONFIG_DAV_USER="syncease",
            RCLONE_CONFIG_DAV_PASS=obscured,
        )
    return e


def webdav_hostport():
    return env("SYNCEASE_TEST_WEBDAV_URL").split("@", 1)[1]


def sshd_port():
    return env("SYNCEASE_TEST_SFTP_URL").split("@", 1)[1].split("/", 1)[0].split(":")[1]


# With --rtt, SFTP goes through a `Delay`: its port, and a known_hosts file naming it.
DELAYED = {}


def sftp_port():
    return str(DELAYED["port"]) if DELAYED else sshd_port()


def known_hosts():
    return DELAYED["known_hosts"] if DELAYED else env("SYNCEASE_TEST_KNOWN_HOSTS")


def sftp_url():
    url = env("SYNCEASE_TEST_SFTP_URL")
    return url.replace(f":{sshd_port()}/", f":{sftp_port()}/", 1)


def delay_sftp(rtt_ms, scratch):
    """Send SFTP through a `Delay` of `rtt_ms` from now on."""
    relay = Delay(sshd_port(), rtt_ms)
    path = os.path.join(scratch, "known_hosts-delayed")
    with open(env("SYNCEASE_TEST_KNOWN_HOSTS")) as f:
        entries = f.read().replace(f"]:{sshd_port()} ", f"]:{relay.port} ")
    with open(path, "w") as f:
        f.write(entries)
    DELAYED.update(port=relay.port, known_hosts=path)


def sftp_user():
    return env("SYNCEASE_TEST_SFTP_URL").split("://", 1)[1].split("@", 1)[0]


def syncease_env():
    e = dict(os.environ)
    e.update(
        AWS_ACCESS_KEY_ID=env("SYNCEASE_TEST_S3_KEY_ID"),
        AWS_SECRET_ACCESS_KEY=env("SYNCEASE_TEST_S3_SECRET"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    if os.environ.get("SYNCEASE_TEST_WEBDAV_PASSWORD"):
        e["SYNCEASE_WEBDAV_PASSWORD"] = env("SYNCEASE_TEST_WEBDAV_PASSWORD")
    return e


def commands(binary, tool, local, kind, name, restore=False, endpoint=None):
    """argv and environment of one tool mirroring `local` to destination `name` of `kind`, or
    (`restore`) that destination back into `local`."""
    bucket = env("SYNCEASE_TEST_S3_BUCKET")
    sftp_root = env("SYNCEASE_TEST_SFTP_ROOT")
    if tool == "syncease":
        args = [binary, "-q"]
        if kind == "s3":
            args += ["--s3-endpoint", endpoint or env("SYNCEASE_TEST_S3_ENDPOINT")]
            args += ["--s3-region", env("SYNCEASE_TEST_S3_REGION")]
            remote = f"s3://{bucket}/{name}"
        elif kind == "webdav":
            hostport = endpoint.split("://", 1)[1] if endpoint else webdav_hostport()
            remote = f"webdav://syncease@{hostport}/{name}"
        else:
            args += ["--ssh-key", env("SYNCEASE_TEST_SSH_KEY")]
            args += ["--known-hosts", known_hosts()]
            remote = sftp_url() + "/" + name
        args += [remote, local] if restore else [local, remote]
        return args, syncease_env()
    remote = {
        "s3": f"garage:{bucket}/{name}",
        "sftp": f"ssh:{sftp_root}/{name}",
        "webdav": f"dav:{name}",
    }[kind]
    args = ["rclone", "sync", "-q"] + ([remote, local] if restore else [local, remote])
    if kind == "sftp":
        # By default rclone runs md5sum on the server through a shell for every file it
        # uploads (minutes for 10,000 files); syncease does not hash either.
        args += ["--sftp-disable-hashcheck"]
    if tool == "rclone-16":
        args += ["--transfers", "16", "--checkers", "16"]
    environment = rclone_env()
    if endpoint:
        environment["RCLONE_CONFIG_GARAGE_ENDPOINT"] = endpoint
        environment["RCLONE_CONFIG_DAV_URL"] = endpoint
    return args, environment


def timed(argv, environment):
    start = time.perf_counter()
    proc = subprocess.run(argv, env=environment, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def sizes(root):
    """Every file below root, by relative path, with its size."""
    found = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            found[os.path.relpath(p, root)] = os.path.getsize(p)
    return found


def verify(kind, src, name):
    """The destination holds every file of src with its size."""
    expected = sizes(src)
    if kind == "s3":
        out = subprocess.run(
            ["rclone", "lsjson", "-R", "--files-only", f"garage:{env('SYNCEASE_TEST_S3_BUCKET')}/{name}"],
            env=rclone_env(), capture_output=True, text=True, check=True,
        ).stdout
        # syncease's manifest is not part of the mirror.
        actual = {
            e["Path"]: e["Size"]
            for e in json.loads(out)
            if not e["Path"].startswith(".syncease/")
        }
    else:
        actual = sizes(os.path.join(served_root(kind), name))
        actual = {p: n for p, n in actual.items() if not p.startswith(".syncease/")}
    if actual != expected:
        missing = len(set(expected) - set(actual))
        sys.exit(f"{name}: wrong result ({missing} missing, {len(actual)} present)")


def remove(kind, name):
    """Drop a destination once measured, so the store does not fill up."""
    if kind == "s3":
        subprocess.run(
            ["rclone", "purge", f"garage:{env('SYNCEASE_TEST_S3_BUCKET')}/{name}"],
            env=rclone_env(), capture_output=True, check=True,
        )
    else:
        shutil.rmtree(os.path.join(served_root(kind), name))


def served_root(kind):
    """The local folder an SFTP or WebDAV server writes to."""
    return env("SYNCEASE_TEST_WEBDAV_ROOT" if kind == "webdav" else "SYNCEASE_TEST_SFTP_ROOT")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trees", default="small,big")
    parser.add_argument("--kinds", default="s3,sftp")
    parser.add_argument(
        "--tools", default="syncease,rclone,rclone-16",
        help="of syncease, rclone, rclone-16 (rclone with 16 transfers)",
    )
    parser.add_argument(
        "--rtt", type=float, default=0,
        help="milliseconds of round trip added to every SFTP connection (a distant host)",
    )
    args = parser.parse_args()
    binary = os.path.join(REPO, "target", "release", "syncease")
    if shutil.which("rclone") is None:
        sys.exit("rclone is not installed")
    rclone_version = subprocess.run(
        ["rclone", "version"], capture_output=True, text=True
    ).stdout.split("\n")[0]
    os.makedirs(args.scratch, exist_ok=True)
    if args.rtt:
        delay_sftp(args.rtt, args.scratch)
    rng = random.Random(42)
    trees = {}
    for tree in args.trees.split(","):
        root = os.path.join(args.scratch, tree)
        if not os.path.exists(root):
            {"small": gen_small, "big": gen_big, "many": gen_many, "few": gen_few}[tree](root, rng)
        trees[tree] = root
    tools = args.tools.split(",")
    phases = ("initial", "no-op", "restore", "no-op restore")
    results = {}
    requests = {}
    counters = {}
    if "s3" in args.kinds:
        counters["s3"] = Counter(env("SYNCEASE_TEST_S3_ENDPOINT"))
    if "webdav" in args.kinds:
        counters["webdav"] = Counter("http://" + webdav_hostport())
    stamp = int(time.time())
    for kind in args.kinds.split(","):
        for tree, src in trees.items():
            for r in range(args.rounds):
                for tool in tools:
                    name = f"bench-{stamp}-{kind}-{tree}-{tool}-{r}"
                    restored = os.path.join(args.scratch, f"restored-{name}")
                    for phase in phases:
                        back = phase.endswith("restore")
                        local = restored if back else src
                        argv, environment = commands(binary, tool, local, kind, name, restore=back)
                        secs = timed(argv, environment)
                        if phase == "initial" and r == 0:
                            verify(kind, src, name)
                        if phase == "restore" and sizes(restored) != sizes(src):
                            sys.exit(f"{name}: the restore differs from the source")
                        results.setdefault((kind, tree, phase, tool), []).append(secs)
                        print(f"[{kind} {tree}] round {r + 1} {tool} {phase}: {secs:.2f} s",
                              file=sys.stderr)
                    # The no-op runs once more through the counting relay, untimed (the relay
                    # slows what passes through it).
                    for phase in ("no-op", "no-op restore"):
                        counter = counters.get(kind)
                        if not counter or r > 0:
                            continue
                        back = phase.endswith("restore")
                        argv, environment = commands(
                            binary, tool, restored if back else src, kind, name,
                            restore=back, endpoint=counter.endpoint,
                        )
                        counter.take()
                        timed(argv, environment)
                        requests[(kind, tree, phase, tool)] = [counter.take()]
                    remove(kind, name)
                    shutil.rmtree(restored)
    print()
    print(
        "| remote | tree | phase | syncease | rclone | rclone --transfers 16 "
        "| syncease / rclone | requests: syncease / rclone |"
    )
    print("|---|---|---|---|---|---|---|---|")
    labels = {
        "small": "10,000 × 1–16 KiB",
        "big": "1 × 1 GiB",
        "many": "100,000 × 1 KiB",
        "few": "1,000 × 1–16 KiB",
    }
    for kind in args.kinds.split(","):
        for tree in trees:
            for phase in phases:
                med = {t: statistics.median(results[(kind, tree, phase, t)]) for t in tools}
                for t in ("syncease", "rclone", "rclone-16"):
                    med.setdefault(t, float("nan"))
                # Against rclone as configured by default, else with 16 transfers.
                versus = med["rclone"] if med["rclone"] == med["rclone"] else med["rclone-16"]
                counted = ""
                if (kind, tree, phase, "syncease") in requests:
                    n = {t: int(statistics.median(requests[(kind, tree, phase, t)])) for t in tools}
                    other = n.get("rclone", n.get("rclone-16", 0))
                    counted = f"{n['syncease']:,} / {other:,}"
                print(
                    f"| {kind.upper()} | {labels[tree]} | {phase} | {med['syncease']:.2f} s "
                    f"| {med['rclone']:.2f} s | {med['rclone-16']:.2f} s "
                    f"| {med['syncease'] / versus:.2f} × | {counted} |".replace("nan s", "—")
                )
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print()
    print(
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}; servers on "
        f"127.0.0.1 (Garage 2.5.0, OpenSSH sshd, rclone serve webdav); {rclone_version}; "
        f"medians of {args.rounds} rounds, each on a fresh destination; S3 and WebDAV requests "
        "counted by a relay in front of the server (rclone's default settings)."
        + (f" SFTP through a relay adding {args.rtt:g} ms of round trip." if args.rtt else "")
    )


if __name__ == "__main__":
    main()
