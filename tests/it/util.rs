//! The test harness: a fixture with SRC and DST in a temporary directory, a full manifest of a
//! tree (type, bytes, mode, mtime in nanoseconds, link target, inode) to compare before and
//! after, and a way to run the binary as an unprivileged user when the tests run as root.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use filetime::FileTime;

/// A temporary directory holding `src/` (created) and `dst/` (not created).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dst: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("syncease-test-")
            .tempdir()
            .expect("temp dir");
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::create_dir(&src).unwrap();
        Fixture { dir, src, dst }
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write a file below the fixture root (`src/a/b.txt`), creating parents.
    pub fn write(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(&path).unwrap();
        path
    }

    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &path).unwrap();
        path
    }

    /// Run syncease with these arguments (paths are given by the caller).
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::from(syncease().args(args).output().unwrap())
    }

    /// `syncease [extra...] SRC DST`.
    pub fn sync(&self, extra: &[&str]) -> Run {
        let mut args: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
        args.push(self.src.as_os_str());
        args.push(self.dst.as_os_str());
        self.run(args)
    }
}

pub fn syncease() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("syncease"))
}

/// A finished run: exit code and both streams.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn set_mtime(path: &Path, sec: i64, nsec: u32) {
    let t = FileTime::from_unix_time(sec, nsec);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// What one entry of a tree looks like, for comparing trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    File {
        mode: u32,
        hash: String,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: PathBuf,
    },
    /// A FIFO, socket or device: its file type bits and device number.
    Special {
        kind: u32,
        rdev: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub shape: Shape,
    pub mtime: (i64, i64),
    /// Numeric owner and group.
    pub owner: (u32, u32),
}

/// Every entry below a root (the root itself as ""), by relative path.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest(pub BTreeMap<PathBuf, Record>);

impl Manifest {
    pub fn of(root: &Path) -> Manifest {
        Manifest(
            walk(root)
                .map(|(rel, meta, path)| (rel, record(&path, &meta)))
                .collect(),
        )
    }

    /// The same manifest with some paths left out (entries a mirror does not carry).
    pub fn without(mut self, rels: &[&str]) -> Manifest {
        for rel in rels {
            self.0.remove(Path::new(rel));
        }
        self
    }
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (path, record) in &self.0 {
            writeln!(f, "{:?} {:?}", path, record)?;
        }
        Ok(())
    }
}

/// Assert two manifests are equal, listing only the differences.
#[track_caller]
pub fn assert_same(left: &Manifest, right: &Manifest) {
    if left == right {
        return;
    }
    let mut diff = String::new();
    for (path, l) in &left.0 {
        match right.0.get(path) {
            None => diff += &format!("only left:  {path:?} {l:?}\n"),
            Some(r) if r != l => {
                diff += &format!("differs:    {path:?}\n  left  {l:?}\n  right {r:?}\n")
            }
            _ => {}
        }
    }
    for (path, r) in &right.0 {
        if !left.0.contains_key(path) {
            diff += &format!("only right: {path:?} {r:?}\n");
        }
    }
    panic!("trees differ:\n{diff}");
}

/// Contents and identities of a tree: equal snapshots mean nothing below it changed.
pub fn snapshot(root: &Path) -> (Manifest, Identity) {
    (Manifest::of(root), identity(root))
}

/// Per entry: inode, mtime (seconds, nanoseconds) and ctime (seconds, nanoseconds).
pub type Identity = BTreeMap<PathBuf, (u64, i64, i64, i64, i64)>;

/// Identity of every entry: inode, mtime and ctime. Equal snapshots mean nothing was written.
pub fn identity(root: &Path) -> Identity {
    walk(root)
        .map(|(rel, m, _)| {
            (
                rel,
                (
                    m.ino(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                ),
            )
        })
        .collect()
}

fn walk(root: &Path) -> impl Iterator<Item = (PathBuf, fs::Metadata, PathBuf)> + '_ {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .map(move |e| {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            (rel, meta, e.path().to_path_buf())
        })
}

fn record(path: &Path, meta: &fs::Metadata) -> Record {
    let ft = meta.file_type();
    let mode = meta.mode() & 0o7777;
    let shape = if ft.is_file() {
        Shape::File {
            mode,
            hash: blake3::hash(&fs::read(path).unwrap()).to_hex().to_string(),
        }
    } else if ft.is_dir() {
        Shape::Dir { mode }
    } else if ft.is_symlink() {
        Shape::Symlink {
            target: fs::read_link(path).unwrap(),
        }
    } else {
        Shape::Special {
            kind: meta.mode() & 0o170000,
            rdev: meta.rdev(),
        }
    };
    Record {
        shape,
        mtime: (meta.mtime(), meta.mtime_nsec()),
        owner: (meta.uid(), meta.gid()),
    }
}

/// A path made of raw bytes (for non-UTF-8 names).
pub fn bytes_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A command that runs the binary as an unprivileged user when the tests run as root, so that
/// permission checks apply. The binary is copied into the fixture (the build directory may not
/// be reachable by that user) and the fixture is handed to that user.
pub fn unprivileged(fixture: &Fixture) -> Command {
    if !is_root() {
        return syncease();
    }
    let bin = handed_to(fixture, NOBODY);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin);
    cmd
}

/// Give the fixture's whole tree to `uid` (and its group of the same number), with a copy of
/// syncease it can run, whose path is returned (run as root).
pub fn handed_to(fixture: &Fixture, uid: u32) -> PathBuf {
    let bin = fixture.path("syncease-bin");
    install_executable(&assert_cmd::cargo::cargo_bin("syncease"), &bin);
    chmod(fixture.dir.path(), 0o755);
    for (_, _, path) in walk(fixture.dir.path()).collect::<Vec<_>>() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(uid)).unwrap();
    }
    bin
}

/// Copy `from` to `to` as an executable (mode 755) that can be run at once.
///
/// The copy is made by a child process (`install`), so no handle open for writing the new file
/// ever exists in this process. If one did, a child that another test forks meanwhile would
/// inherit it until its own exec, and running the file in that window fails with "Text file
/// busy" (ETXTBSY): the tests run in parallel threads of one process.
pub fn install_executable(from: &Path, to: &Path) {
    let status = Command::new("install")
        .args(["-m", "755"])
        .arg(from)
        .arg(to)
        .status()
        .expect("install(1) runs");
    assert!(status.success(), "install {from:?} {to:?}: {status}");
}

pub const NOBODY: u32 = 65534;

/// A small deterministic random number generator (xorshift64*), so generated trees are
/// reproducible from a seed without another dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Run `syncease ARGS...` as an unprivileged user (see [`unprivileged`]).
pub fn run_unprivileged<I, S>(fixture: &Fixture, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Run::from(unprivileged(fixture).args(args).output().unwrap())
}

/// The temporaries a run left below `root`.
pub fn temporaries(root: &Path) -> Vec<PathBuf> {
    walk(root)
        .map(|(rel, _, _)| rel)
        .filter(|rel| {
            rel.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b".syncease-"))
        })
        .collect()
}

/// Content of big file `i` in version `v`: a repeated random block, distinct per file and version.
pub fn big_content(i: u64, v: u64, len: usize) -> Vec<u8> {
    let block = Rng::new(i * 1000 + v).bytes(1 << 20);
    let mut content = Vec::with_capacity(len);
    while content.len() < len {
        let n = block.len().min(len - content.len());
        content.extend_from_slice(&block[..n]);
    }
    content
}

/// True when the tests run under CI (`CI=true`), where a test that cannot run is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Say that the calling test cannot run here, and why. Under `CI=true` that fails the test;
/// elsewhere one line names the test and the reason on the terminal (written past the test
/// harness's capture, so it is seen even though the test then passes), and the caller returns.
#[track_caller]
pub fn not_tested(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(!in_ci(), "CI=true, and {test} cannot run: {why}");
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "not tested: {test}: {why}");
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(tool)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}

/// `have(tool)`, or [`not_tested`] naming it.
#[track_caller]
pub fn need(tool: &str, package: &str) -> bool {
    have(tool) || {
        not_tested(&format!("needs {tool} (package {package})"));
        false
    }
}

/// Root, or [`not_tested`] saying what root is needed for.
#[track_caller]
pub fn need_root(for_what: &str) -> bool {
    is_root() || {
        not_tested(&format!("needs root {for_what}"));
        false
    }
}

/// A syncease run under strace that stops itself (SIGSTOP, injected by strace) when a chosen
/// system call is made on a chosen path: the test then changes the tree at exactly that point
/// of the run and lets it go on. No timing is involved: the run waits for the test.
pub struct Paused {
    strace: Child,
    log: PathBuf,
    stops: usize,
}

/// Whether strace can trace here (it needs ptrace, which some containers forbid).
pub fn need_strace() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let works = *WORKS.get_or_init(|| {
        have("strace")
            && Command::new("strace")
                .args(["-qq", "-o", "/dev/null", "true"])
                .status()
                .is_ok_and(|s| s.success())
    });
    works || {
        not_tested("needs strace (package strace) and permission to trace");
        false
    }
}

impl Paused {
    /// Start `syncease ARGS` under strace, to be stopped when `syscall` is made on `path` for
    /// the `when`-th time by a thread (strace counts per thread: `1` for the first time only,
    /// `1+` for every time).
    ///
    /// A stop is injected as the call starts: a call the kernel can interrupt (a
    /// `copy_file_range` on tmpfs) is then restarted when the run goes on, and the restart
    /// counts as a call, while one it cannot (`openat`, or `copy_file_range` as a reflink on
    /// XFS) completes first and the run stops right after it.
    pub fn start<I, S>(syscall: &str, path: &Path, when: &str, args: I) -> Paused
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Paused::start_at(&[(syscall, when)], path, args)
    }

    /// [`Paused::start`] with several stops: `(syscall, when)` each.
    pub fn start_at<I, S>(stops: &[(&str, &str)], path: &Path, args: I) -> Paused
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Paused::spawn(stops, path, |_| {}, args)
    }

    /// [`Paused::start`], the command given its environment and first options by `configure`.
    pub fn start_with<I, S>(
        syscall: &str,
        path: &Path,
        when: &str,
        configure: impl FnOnce(&mut Command),
        args: I,
    ) -> Paused
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Paused::spawn(&[(syscall, when)], path, configure, args)
    }

    fn spawn<I, S>(
        stops: &[(&str, &str)],
        path: &Path,
        configure: impl FnOnce(&mut Command),
        args: I,
    ) -> Paused
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = tempfile::Builder::new()
            .prefix("syncease-strace-")
            .tempfile()
            .unwrap()
            .into_temp_path()
            .keep()
            .unwrap();
        let mut strace = Command::new("strace");
        strace.args(["-f", "-qq", "-o"]).arg(&log);
        let traced: Vec<&str> = stops.iter().map(|(syscall, _)| *syscall).collect();
        strace.args(["-e", &format!("trace={}", traced.join(","))]);
        for (syscall, when) in stops {
            strace.args([
                "-e",
                &format!("inject={syscall}:signal=SIGSTOP:when={when}"),
            ]);
        }
        strace
            .arg("-P")
            .arg(path)
            .arg(assert_cmd::cargo::cargo_bin("syncease"));
        configure(&mut strace);
        let strace = strace
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("strace");
        Paused {
            strace,
            log,
            stops: 0,
        }
    }

    /// Wait until the run stops at the next chosen point: `true`, or `false` when it ended
    /// without stopping again.
    pub fn stopped(&mut self) -> bool {
        let started = Instant::now();
        loop {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            // A signal line for each stop (the call is interrupted, to be restarted once the
            // run goes on), then a "stopped" line for each thread: once one is there, the stop
            // has taken hold and a SIGCONT ends it.
            let signalled: Vec<usize> = log
                .match_indices("--- SIGSTOP {")
                .map(|(at, _)| at)
                .collect();
            if let Some(&last) = signalled.get(self.stops) {
                if log[last..].contains("stopped by SIGSTOP") {
                    self.stops += 1;
                    // A thread in the middle of a call completes it before it stops too.
                    while !self.all_stopped() {
                        assert!(
                            started.elapsed() < Duration::from_secs(120),
                            "never stopped"
                        );
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    return true;
                }
            }
            if self.strace.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the run neither stopped nor ended:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The PID of the syncease process (strace's child).
    /// Whether every thread of the run is stopped (the state after the name in each
    /// `/proc/PID/task/TID/stat`: `t` or `T`).
    fn all_stopped(&self) -> bool {
        let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return true;
        };
        tasks.flatten().all(|task| {
            let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.trim_start().chars().next());
            state.is_none_or(|c| c == 't' || c == 'T')
        })
    }

    pub fn pid(&self) -> u32 {
        let children = format!("/proc/{0}/task/{0}/children", self.strace.id());
        fs::read_to_string(children)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Send `signal` (`-CONT`, `-KILL`, ...) to the run.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Let the stopped run go on.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Wait for the end of the run.
    pub fn finish(self) -> Run {
        self.finish_traced().0
    }

    /// [`Paused::finish`], with strace's log of the traced calls.
    pub fn finish_traced(self) -> (Run, String) {
        let out = self.strace.wait_with_output().unwrap();
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        (Run::from(out), log)
    }
}

/// Run a `--checksum` comparison `args` (given its environment by `configure`) stopped at its
/// first read of `big`, a 16 MiB source file, ask it to stop meanwhile, and check that it ended
/// interrupted, with no error, without reading the rest of `big`.
pub fn stopped_while_hashing<I, S>(big: &Path, configure: impl FnOnce(&mut Command), args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut run = Paused::start_with("read", big, "1", configure, args);
    assert!(run.stopped(), "big was never read");
    run.signal("-INT");
    run.resume();
    let (run, log) = run.finish_traced();
    let run = run.expect(130);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["status"], "interrupted", "{run:?}");
    assert_eq!(doc["errors"], serde_json::json!([]), "a stop is no error");
    // The rest of its 256 reads of 64 KiB is not made. The signal may be taken by another
    // thread than the reader, which sets the stop only once it is scheduled: under load the
    // reader may make a few reads more meanwhile.
    let reads = log.matches("read(").count();
    assert!(reads < 32, "{reads} reads of big in all:\n{log}");
}

/// Run `syncease ARGS` under strace, killed (SIGKILL) the `nth` time it makes `syscall`
/// (optionally only on `path`): a kill at a point fixed by the count of calls, not by time.
pub fn killed_at(syscall: &str, nth: u32, path: Option<&Path>, args: &[&OsStr]) -> Run {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", &format!("trace={syscall}")])
        .args(["-e", &format!("inject={syscall}:signal=SIGKILL:when={nth}")]);
    if let Some(path) = path {
        cmd.arg("-P").arg(path);
    }
    let out = cmd
        .arg(assert_cmd::cargo::cargo_bin("syncease"))
        .args(args)
        .output()
        .expect("strace");
    Run::from(out)
}

/// Run `syncease ARGS` under strace with a fault on `syscall`: `fault` is what strace's
/// `-e inject=SYSCALL:` takes (`error=ENOSPC:when=3+`): a failure at a point the count of calls
/// fixes (per thread), not the clock.
pub fn with_fault<I, S>(syscall: &str, fault: &str, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", &format!("trace={syscall}")])
        .args(["-e", &format!("inject={syscall}:{fault}")])
        .arg(assert_cmd::cargo::cargo_bin("syncease"))
        .args(args)
        .output()
        .expect("strace");
    Run::from(out)
}

/// A directory on another filesystem than the fixture's, for copies and backups across
/// filesystems: a small tmpfs mounted for the test as root, else `/dev/shm` when that is
/// another filesystem; `None` (after [`not_tested`]) when neither is at hand.
pub struct OtherFs {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl OtherFs {
    pub fn new(f: &Fixture) -> Option<OtherFs> {
        let here = fs::metadata(f.dir.path()).unwrap().dev();
        if is_root() {
            let dir = tempfile::Builder::new()
                .prefix("syncease-otherfs-")
                .tempdir()
                .unwrap();
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if mounted {
                return Some(OtherFs { dir, mounted });
            }
        }
        match tempfile::Builder::new()
            .prefix("syncease-otherfs-")
            .tempdir_in("/dev/shm")
        {
            Ok(dir) if fs::metadata(dir.path()).unwrap().dev() != here => Some(OtherFs {
                dir,
                mounted: false,
            }),
            _ => {
                not_tested("needs another filesystem: root (to mount a tmpfs) or /dev/shm");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OtherFs {
    fn drop(&mut self) {
        if self.mounted {
            // Lazily: a busy mount is detached all the same, never left behind.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Filesystem images: a destination (or source) on a real filesystem of a chosen kind.
// ---------------------------------------------------------------------------------------------

/// A kind of filesystem that [`Mounted`] can make and mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    Ext4,
    Xfs,
    Btrfs,
    /// exFAT through its FUSE driver (`mount.exfat-fuse`), never the kernel's.
    Exfat,
    Vfat,
    /// ext4 with inodes of 128 bytes (as ext2/3 made them): whole seconds only.
    Ext4Seconds,
}

impl Fs {
    pub const ALL: [Fs; 5] = [Fs::Ext4, Fs::Xfs, Fs::Btrfs, Fs::Exfat, Fs::Vfat];

    pub fn name(self) -> &'static str {
        match self {
            Fs::Ext4 | Fs::Ext4Seconds => "ext4",
            Fs::Xfs => "xfs",
            Fs::Btrfs => "btrfs",
            Fs::Exfat => "exfat",
            Fs::Vfat => "vfat",
        }
    }

    /// Size of the image file, which is sparse: it costs what is written, not this.
    fn image_size(self) -> u64 {
        const MIB: u64 = 1 << 20;
        match self {
            // mkfs.xfs refuses anything smaller than 300 MiB.
            Fs::Xfs => 300 * MIB,
            // Well above mkfs.btrfs's minimum, with room for its metadata profiles.
            Fs::Btrfs => 256 * MIB,
            Fs::Ext4 | Fs::Ext4Seconds | Fs::Exfat | Fs::Vfat => 64 * MIB,
        }
    }

    /// The mkfs command (tool, its Debian package, arguments before the image).
    fn mkfs(self) -> (&'static str, &'static str, &'static [&'static str]) {
        match self {
            // 256-byte inodes: small ext4 filesystems otherwise may get 128-byte ones, which
            // keep whole seconds only.
            Fs::Ext4 => ("mkfs.ext4", "e2fsprogs", &["-q", "-F", "-I", "256"]),
            Fs::Ext4Seconds => ("mkfs.ext4", "e2fsprogs", &["-q", "-F", "-I", "128"]),
            Fs::Xfs => ("mkfs.xfs", "xfsprogs", &["-q", "-f"]),
            Fs::Btrfs => ("mkfs.btrfs", "btrfs-progs", &["-q", "-f"]),
            Fs::Exfat => ("mkfs.exfat", "exfatprogs", &[]),
            Fs::Vfat => ("mkfs.vfat", "dosfstools", &[]),
        }
    }

    /// The name the kernel must list in /proc/filesystems to mount it.
    fn kernel_name(self) -> &'static str {
        match self {
            Fs::Exfat => "fuseblk",
            other => other.name(),
        }
    }
}

/// A filesystem image made in a sparse file inside the fixture, attached to a loop device
/// (`losetup --find --show`) and mounted on a directory of the fixture. Dropping it unmounts
/// (lazily when it is busy) and detaches the loop device: nothing is left behind, even when the
/// test fails. It borrows the fixture, so it always goes before the fixture's directory does.
pub struct Mounted<'f> {
    fs: Fs,
    image: PathBuf,
    dir: PathBuf,
    device: String,
    _fixture: std::marker::PhantomData<&'f Fixture>,
}

impl fmt::Debug for Mounted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} at {}",
            self.fs.name(),
            self.device,
            self.dir.display()
        )
    }
}

impl<'f> Mounted<'f> {
    /// Make and mount a fresh `fs` for this test: `None` (after saying why) where root, loop
    /// devices, the mkfs tool or the kernel's support are missing.
    #[track_caller]
    pub fn new(f: &'f Fixture, fs: Fs) -> Option<Mounted<'f>> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = fs.name();
        if !need_root(&format!("to mount a {name} image")) {
            return None;
        }
        if !Path::new("/dev/loop-control").exists() {
            not_tested("needs loop devices (/dev/loop-control)");
            return None;
        }
        if !kernel_has(fs.kernel_name()) {
            let why = format!(
                "the kernel has no {} filesystem (not in /proc/filesystems, and it cannot be loaded)",
                fs.kernel_name()
            );
            if fs == Fs::Vfat {
                // Some kernels are built without FAT: that is the machine, not a missing
                // install step, so it is no failure under CI either.
                say_not_tested(&why);
            } else {
                not_tested(&why);
            }
            return None;
        }
        let (mkfs, package, args) = fs.mkfs();
        if !need(mkfs, package) {
            return None;
        }
        if fs == Fs::Exfat
            && !(need("mount.exfat-fuse", "exfat-fuse") && need("fusermount", "fuse"))
        {
            return None;
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let image = f.path(format!("{name}-{n}.img"));
        let dir = f.path(format!("{name}-{n}"));
        fs::File::create(&image)
            .and_then(|file| file.set_len(fs.image_size()))
            .unwrap();
        fs::create_dir(&dir).unwrap();
        let made = Command::new(mkfs).args(args).arg(&image).output().unwrap();
        assert!(made.status.success(), "{mkfs}: {}", Run::from(made).stderr);
        let attached = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        if !attached.status.success() {
            not_tested(&format!(
                "no loop device could be attached: {}",
                Run::from(attached).stderr.trim()
            ));
            return None;
        }
        let device = String::from_utf8(attached.stdout)
            .unwrap()
            .trim()
            .to_string();
        let mut mount = match fs {
            Fs::Exfat => Command::new("mount.exfat-fuse"),
            Fs::Vfat => {
                // As desktop automounters mount it: names in UTF-8.
                let mut mount = Command::new("mount");
                mount.args(["-t", "vfat", "-o", "utf8"]);
                mount
            }
            _ => {
                let mut mount = Command::new("mount");
                mount.args(["-t", name]);
                mount
            }
        };
        let mounted = mount.arg(&device).arg(&dir).output().unwrap();
        if !mounted.status.success() {
            let _ = Command::new("losetup").arg("-d").arg(&device).status();
            panic!(
                "cannot mount {name} ({device}): {}",
                Run::from(mounted).stderr
            );
        }
        Some(Mounted {
            fs,
            image,
            dir,
            device,
            _fixture: std::marker::PhantomData,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn fs(&self) -> Fs {
        self.fs
    }

    /// The image file (it outlives the mount, for checks after the drop).
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// Mount it again read-only (a FUSE driver cannot remount: unmounted and mounted anew).
    pub fn remount_read_only(&self) {
        let done = match self.fs {
            Fs::Exfat => {
                let unmounted = Command::new("fusermount")
                    .arg("-u")
                    .arg(&self.dir)
                    .status()
                    .is_ok_and(|s| s.success());
                unmounted
                    && Command::new("mount.exfat-fuse")
                        .args(["-o", "ro"])
                        .arg(&self.device)
                        .arg(&self.dir)
                        .status()
                        .is_ok_and(|s| s.success())
            }
            _ => Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success()),
        };
        assert!(done, "cannot mount {self:?} read-only");
    }

    /// The loop device (`/dev/loopN`).
    pub fn device(&self) -> &str {
        &self.device
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let quiet = |cmd: &mut Command| {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let unmounted = if self.fs == Fs::Exfat {
            quiet(Command::new("fusermount").arg("-u").arg(&self.dir))
                || quiet(Command::new("umount").arg(&self.dir))
        } else {
            quiet(Command::new("umount").arg(&self.dir))
        };
        if !unmounted {
            // Busy: detached from the tree now, gone when its last user lets go.
            quiet(Command::new("umount").arg("-l").arg(&self.dir));
        }
        // On a device still open (a lazy unmount, a FUSE driver still closing it) the kernel
        // marks it to be detached when it is last closed: it never stays attached.
        quiet(Command::new("losetup").arg("-d").arg(&self.device));
    }
}

/// Whether the running kernel can mount `fs` (loading its module when it is one).
pub fn kernel_has(fs: &str) -> bool {
    let listed = || {
        fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .lines()
            .any(|line| line.split_whitespace().last() == Some(fs))
    };
    listed()
        || (have("modprobe")
            && Command::new("modprobe")
                .args(["-q", fs])
                .status()
                .is_ok_and(|s| s.success())
            && listed())
}

/// The line [`not_tested`] writes, without failing under CI: for what the machine itself
/// lacks, not what an install step could bring.
pub fn say_not_tested(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "not tested: {test}: {why}");
}

/// Whether `path` is a mount point now (as /proc/self/mountinfo lists it).
pub fn is_mounted(path: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    // Field 5 is the mount point, with spaces and the like escaped as octal.
    let wanted = path
        .to_str()
        .unwrap()
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\n', "\\012")
        .replace('\t', "\\011");
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// The loop devices attached to `image` now (`losetup -j`).
pub fn loop_devices_of(image: &Path) -> Vec<String> {
    let out = Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split(':').next())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Comparing trees beyond the manifest: what moved in a run that should write nothing,
// hard-link groups, extended attributes.
// ---------------------------------------------------------------------------------------------

/// Nothing below `dst` changed since `before` was taken: no content, inode or time.
#[track_caller]
pub fn assert_unchanged(before: &(Manifest, Identity), dst: &Path, run: &Run) {
    let (manifest, identity) = snapshot(dst);
    assert_same(&before.0, &manifest);
    let mut moved = String::new();
    for (path, was) in &before.1 {
        match identity.get(path) {
            Some(now) if now != was => {
                moved += &format!("{path:?}: (ino, mtime s, ns, ctime s, ns) {was:?} -> {now:?}\n")
            }
            _ => {}
        }
    }
    assert!(
        moved.is_empty(),
        "a run with nothing to do wrote:\n{moved}{run:?}"
    );
}

/// The names below `root` that share an inode, one sorted group per inode (groups of one
/// are left out).
pub fn link_groups(root: &Path) -> std::collections::BTreeSet<Vec<PathBuf>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for (rel, meta, _) in walk(root) {
        if !meta.is_dir() && meta.nlink() > 1 {
            by_inode
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(rel);
        }
    }
    by_inode
        .into_values()
        .filter(|names| names.len() > 1)
        .map(|mut names| {
            names.sort();
            names
        })
        .collect()
}

/// Every extended attribute of `path` (not following a link), every namespace: `user.`,
/// `security.`, and the ACLs as `system.posix_acl_*`.
pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 64 * 1024];
    let len = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(len) => len,
        Err(rustix::io::Errno::NOTSUP) => return BTreeMap::new(),
        Err(e) => panic!("llistxattr {}: {e}", path.display()),
    };
    names[..len]
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let name = String::from_utf8_lossy(name).into_owned();
            let mut value = vec![0u8; 64 * 1024];
            let n = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..])
                .unwrap_or_else(|e| panic!("lgetxattr {} {name}: {e}", path.display()));
            value.truncate(n);
            (name, value)
        })
        .collect()
}

/// [`xattrs`] of every entry below `root` that has any, by relative path.
pub fn tree_xattrs(root: &Path) -> BTreeMap<PathBuf, BTreeMap<String, Vec<u8>>> {
    walk(root)
        .map(|(rel, _, path)| (rel, xattrs(&path)))
        .filter(|(_, attrs)| !attrs.is_empty())
        .collect()
}

/// `syncease -v -j 1 SRC DST` with `meanwhile` done after DST was listed and before the
/// fixes and deletions: while a new file z (added here) is copied.
pub fn between_listing_and_fixes(f: &Fixture, meanwhile: impl FnOnce()) -> Run {
    f.write("src/z", big_content(1, 0, 256 << 10));
    let args = ["-v", "-j", "1"].map(std::ffi::OsStr::new);
    let args = [&args[..], &[f.src.as_os_str(), f.dst.as_os_str()]].concat();
    let mut run = Paused::start("copy_file_range", &f.path("src/z"), "1", args);
    assert!(run.stopped(), "z was never copied");
    meanwhile();
    run.resume();
    run.finish()
}
