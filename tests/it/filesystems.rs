//! One tree mirrored onto each filesystem people back up to: ext4, XFS, Btrfs, tmpfs, exFAT
//! (through its FUSE driver) and FAT. Each holds what its row of [`HOLDS`] says, and the run
//! reports that row in its JSON `destination`; what a destination cannot hold is a warning once
//! per run, never an error per file; and on every one of them a second run writes nothing.
//! FAT and exFAT fold the case of names: the mirror takes the source's spelling and never
//! loses a file to a name that differs only in case.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use serde_json::Value;

use crate::util::*;

/// What a destination can hold, as a run must report it in its JSON `destination`.
#[derive(Clone, Copy, Debug)]
struct Holds {
    filesystem: &'static str,
    case_sensitive: bool,
    symlinks: bool,
    hard_links: bool,
    specials: bool,
    modes: bool,
    owners: bool,
    xattrs: bool,
    time_resolution_ns: u64,
    fuse: bool,
}

impl Holds {
    /// Holds every property a POSIX tree has.
    fn everything(&self) -> bool {
        self.case_sensitive
            && self.symlinks
            && self.hard_links
            && self.specials
            && self.modes
            && self.owners
            && self.time_resolution_ns == 1
    }

    /// How many properties of a tree this destination loses (each is at most one warning).
    fn limits(&self) -> usize {
        let lost = [
            !self.case_sensitive,
            !self.symlinks,
            !self.hard_links,
            !self.specials,
            !self.modes,
            !self.owners,
            self.time_resolution_ns > 1,
        ];
        lost.iter().filter(|&&lost| lost).count()
    }
}

const SECOND: u64 = 1_000_000_000;

#[rustfmt::skip]
const HOLDS: [Holds; 6] = [
    //  filesystem  case   symlinks hard   specials modes  owners xattrs time (ns)    fuse
    row("ext4",     true,  true,    true,  true,    true,  true,  true,  1,           false),
    row("xfs",      true,  true,    true,  true,    true,  true,  true,  1,           false),
    row("btrfs",    true,  true,    true,  true,    true,  true,  true,  1,           false),
    // user.* xattrs on tmpfs need Linux 6.6 or later: the test checks what the kernel does.
    row("tmpfs",    true,  true,    true,  true,    true,  true,  true,  1,           false),
    // The exFAT format keeps 10 ms, but the FUSE driver (exfat-fuse 1.3) keeps whole seconds.
    row("exfat",    false, false,   false, false,   false, false, false, SECOND,      true),
    // FAT keeps modification times in 2-second steps.
    row("vfat",     false, false,   false, false,   false, false, false, 2 * SECOND,  false),
];

#[allow(clippy::too_many_arguments)]
const fn row(
    filesystem: &'static str,
    case_sensitive: bool,
    symlinks: bool,
    hard_links: bool,
    specials: bool,
    modes: bool,
    owners: bool,
    xattrs: bool,
    time_resolution_ns: u64,
    fuse: bool,
) -> Holds {
    Holds {
        filesystem,
        case_sensitive,
        symlinks,
        hard_links,
        specials,
        modes,
        owners,
        xattrs,
        time_resolution_ns,
        fuse,
    }
}

fn holds(filesystem: &str) -> Holds {
    *HOLDS
        .iter()
        .find(|row| row.filesystem == filesystem)
        .unwrap()
}

/// Where a test mirrors to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Image(Fs),
    Tmpfs,
}

/// A mounted destination, unmounted when dropped.
enum Mount<'f> {
    Image(Mounted<'f>),
    Tmpfs(OtherFs),
}

impl Mount<'_> {
    fn new(f: &Fixture, dest: Dest) -> Option<Mount<'_>> {
        match dest {
            Dest::Image(fs) => Mounted::new(f, fs).map(Mount::Image),
            Dest::Tmpfs => OtherFs::new(f).map(Mount::Tmpfs),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Mount::Image(m) => m.path(),
            Mount::Tmpfs(t) => t.path(),
        }
    }
}

impl Dest {
    fn name(self) -> &'static str {
        match self {
            Dest::Image(fs) => fs.name(),
            Dest::Tmpfs => "tmpfs",
        }
    }
}

const MIB: u64 = 1 << 20;

/// The tree every filesystem is given: nested and empty directories, times with nanoseconds
/// and on odd seconds, modes (setuid too), another owner's file (as root), symlinks, two names
/// of one file, a sparse file, FIFOs, a non-ASCII name, and names whose case matters (`Sub`,
/// `readme.TXT`).
fn build_tree(f: &Fixture) {
    let file = |rel: &str, content: &str, mode: u32, sec: i64, nsec: u32| {
        let path = f.write(Path::new("src").join(rel), content);
        chmod(&path, mode);
        set_mtime(&path, sec, nsec);
    };
    file("dir/nested/deep.txt", "deep", 0o644, 1_500_000_000, 0);
    file("nanoseconds.txt", "ns", 0o644, 1_600_000_000, 123_456_789);
    file("odd-second.txt", "odd", 0o644, 1_600_000_001, 0);
    file(
        "odd-second-and-ns.txt",
        "odd+ns",
        0o644,
        1_600_000_003,
        999_999_999,
    );
    file("mode-644", "644", 0o644, 1_500_000_010, 10);
    file("mode-600", "600", 0o600, 1_500_000_020, 20);
    file("dir/tool", "#!/bin/sh\n", 0o755, 1_500_000_030, 30);
    file("setuid", "#!/bin/sh\n", 0o4755, 1_500_000_040, 40);
    file(
        "caf\u{e9}-\u{fc}n\u{ef}c\u{f8}d\u{e9}-\u{65e5}\u{672c}.txt",
        "utf-8 name",
        0o644,
        1_500_000_050,
        50,
    );
    file("Sub/inside.txt", "in Sub", 0o644, 1_500_000_060, 60);
    file("readme.TXT", "read me", 0o644, 1_500_000_070, 70);
    file("hard-one", "one file, two names", 0o644, 1_500_000_080, 80);
    fs::hard_link(f.path("src/hard-one"), f.path("src/dir/hard-two")).unwrap();
    if is_root() {
        file("owned", "someone else's", 0o640, 1_500_000_090, 90);
        std::os::unix::fs::lchown(f.path("src/owned"), Some(1234), Some(5678)).unwrap();
    }
    // Several links and FIFOs: where they cannot be held, that is still one warning.
    for (i, (rel, target)) in [
        ("link", "dir/nested/deep.txt"),
        ("dir/link-up", "../odd-second.txt"),
        ("dangling", "nowhere"),
    ]
    .into_iter()
    .enumerate()
    {
        let link = f.symlink(Path::new("src").join(rel), target);
        set_mtime(&link, 1_500_000_100 + i as i64, 100);
    }
    // 4 MiB, one 4 KiB block of data in the middle, holes around it.
    let sparse = fs::File::create(f.path("src/sparse")).unwrap();
    sparse.set_len(4 * MIB).unwrap();
    sparse.write_all_at(&[0xA5; 4096], 2 * MIB).unwrap();
    drop(sparse);
    set_mtime(&f.path("src/sparse"), 1_500_000_110, 110);
    for (i, rel) in ["fifo", "dir/nested/fifo"].into_iter().enumerate() {
        let fifo = f.src.join(rel);
        let mode = rustix::fs::Mode::from_raw_mode(0o644);
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, mode, 0).unwrap();
        set_mtime(&fifo, 1_500_000_120 + i as i64, 120);
    }
    f.mkdir("src/empty");
    // Directories last, deepest first: their times are what the entries made them otherwise.
    for (i, dir) in ["dir/nested", "dir", "Sub", "empty", ""].iter().enumerate() {
        let path = f.src.join(dir);
        chmod(&path, if *dir == "empty" { 0o700 } else { 0o755 });
        set_mtime(&path, 1_400_000_001 + i as i64, 200_000_000 * i as u32 + 7);
    }
}

/// The JSON document a run printed: the whole of stdout, so that nothing else (no itemized
/// line) was printed there.
#[track_caller]
fn document(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{run:?}"))
}

/// The run's `destination` is the row of the table.
#[track_caller]
fn assert_destination(doc: &Value, expected: &Holds) {
    let d = &doc["destination"];
    let reported = format!("{d:#}");
    let flag = |name: &str, want: bool| {
        assert_eq!(
            d[name].as_bool(),
            Some(want),
            "destination.{name}: {reported}"
        );
    };
    assert_eq!(
        d["filesystem"].as_str(),
        // A FUSE mount's type is all the mount table says of it.
        Some(if expected.fuse {
            "fuseblk"
        } else {
            expected.filesystem
        }),
        "destination.filesystem: {reported}"
    );
    flag("case_sensitive", expected.case_sensitive);
    flag("symlinks", expected.symlinks);
    flag("hard_links", expected.hard_links);
    flag("specials", expected.specials);
    flag("modes", expected.modes);
    flag("owners", expected.owners);
    flag("xattrs", expected.xattrs);
    flag("fuse", expected.fuse);
    assert_eq!(
        d["time_resolution_ns"].as_u64(),
        Some(expected.time_resolution_ns),
        "destination.time_resolution_ns: {reported}"
    );
}

/// A run that wrote nothing says so in its counts.
#[track_caller]
fn assert_wrote_nothing(doc: &Value) {
    for count in ["/copied/files", "/updated/files", "/deleted", "/fixed"] {
        assert_eq!(
            doc.pointer(count).and_then(Value::as_u64),
            Some(0),
            "{count} in a run that should write nothing:\n{doc:#}"
        );
    }
}

fn nanos((sec, nsec): (i64, i64)) -> i128 {
    sec as i128 * 1_000_000_000 + nsec as i128
}

/// DST holds SRC as far as `holds` allows: every entry it can hold, spelled as in SRC, with the
/// same bytes, type and link target, times within its resolution, and modes and owners where
/// it keeps them; nothing it cannot hold, nothing more.
#[track_caller]
fn assert_holds_tree(src: &Path, dst: &Path, holds: &Holds) {
    let source = Manifest::of(src);
    let mirror = Manifest::of(dst);
    let mut wrong = String::new();
    for (path, s) in &source.0 {
        let held = match s.shape {
            Shape::Symlink { .. } => holds.symlinks,
            Shape::Special { .. } => holds.specials,
            _ => true,
        };
        let Some(d) = mirror.0.get(path) else {
            if held {
                wrong += &format!("missing:       {path:?} {s:?}\n");
            }
            continue;
        };
        if !held {
            wrong += &format!("cannot be held, yet there: {path:?} {d:?}\n");
            continue;
        }
        let same_kind = match (&s.shape, &d.shape) {
            (Shape::File { hash: a, .. }, Shape::File { hash: b, .. }) => a == b,
            (Shape::Dir { .. }, Shape::Dir { .. }) => true,
            (Shape::Symlink { target: a }, Shape::Symlink { target: b }) => a == b,
            (Shape::Special { kind: a, rdev: x }, Shape::Special { kind: b, rdev: y }) => {
                a == b && x == y
            }
            _ => false,
        };
        if !same_kind {
            wrong += &format!("content:       {path:?}\n  src {s:?}\n  dst {d:?}\n");
        }
        let mode = |shape: &Shape| match shape {
            Shape::File { mode, .. } | Shape::Dir { mode } => Some(*mode),
            _ => None,
        };
        if holds.modes && mode(&s.shape) != mode(&d.shape) {
            wrong += &format!("mode:          {path:?}\n  src {s:?}\n  dst {d:?}\n");
        }
        if holds.owners && s.owner != d.owner {
            wrong += &format!("owner:         {path:?}\n  src {s:?}\n  dst {d:?}\n");
        }
        let off = (nanos(s.mtime) - nanos(d.mtime)).unsigned_abs();
        if off >= holds.time_resolution_ns as u128 {
            wrong += &format!(
                "mtime off by {off} ns: {path:?}\n  src {:?}\n  dst {:?}\n",
                s.mtime, d.mtime
            );
        }
    }
    for (path, d) in &mirror.0 {
        if !source.0.contains_key(path) {
            wrong += &format!("only in DST:   {path:?} {d:?}\n");
        }
    }
    assert!(wrong.is_empty(), "DST does not hold SRC:\n{wrong}");
}

fn mirror_onto(dest: Dest) {
    let f = Fixture::new();
    let Some(mount) = Mount::new(&f, dest) else {
        return;
    };
    build_tree(&f);
    let dst = mount.path().join("dst");
    let mut expected = holds(dest.name());
    if dest == Dest::Tmpfs {
        expected.xattrs = user_xattrs_work(mount.path());
    }
    let args = |json: bool| {
        let mut args = vec![f.src.as_os_str(), dst.as_os_str(), "-v".as_ref()];
        if json {
            args.push("--json".as_ref());
        }
        args
    };

    // The mirror holds what the destination can hold.
    let first = f.run(args(true));
    let report = document(&first);
    let first = first.expect(0);
    assert_holds_tree(&f.src, &dst, &expected);
    if expected.everything() {
        assert_same(&Manifest::of(&f.src), &Manifest::of(&dst));
        assert_eq!(link_groups(&f.src), link_groups(&dst), "hard links");
        let blocks = fs::metadata(dst.join("sparse")).unwrap().blocks();
        assert!(
            blocks * 512 < MIB,
            "the sparse file's holes were filled: {blocks} blocks"
        );
    } else {
        assert_eq!(link_groups(&dst), BTreeSet::new());
    }

    // What it cannot hold is no error, and one warning for the destination, not one per entry.
    assert_eq!(report["errors"], Value::Array(vec![]), "{first:?}");
    assert!(
        !first.stderr.contains("error:"),
        "what a destination cannot hold is no error:\n{first:?}"
    );
    let warnings = report["warnings"].as_array().unwrap();
    if expected.everything() && is_root() {
        assert!(warnings.is_empty(), "{first:?}");
    } else {
        // Entries of a kind it cannot hold: one warning may name one of them as an example,
        // no more.
        let source = Manifest::of(&f.src);
        for (kind, held) in [
            ("symlink", expected.symlinks),
            ("special", expected.specials),
        ] {
            let names: Vec<String> = source
                .0
                .iter()
                .filter(|(_, record)| match record.shape {
                    Shape::Symlink { .. } => kind == "symlink",
                    Shape::Special { .. } => kind == "special",
                    _ => false,
                })
                .map(|(path, _)| format!("'{}'", f.src.join(path).display()))
                .collect();
            let naming = warnings
                .iter()
                .filter(|w| names.iter().any(|name| w.as_str().unwrap().contains(name)))
                .count();
            assert!(
                held || naming <= 1,
                "{naming} warnings name a {kind} the destination cannot hold, not one:\n{first:?}"
            );
        }
        // At most one for each property it cannot hold (and one for setuid bits).
        assert!(
            warnings.len() <= expected.limits() + 1,
            "{} warnings for {} limits:\n{first:?}",
            warnings.len(),
            expected.limits()
        );
    }

    // A second run writes nothing: no itemized line, no count, no inode or time moved.
    let before = snapshot(&dst);
    let second = f.run(args(true));
    let doc = document(&second);
    let second = second.expect(0);
    assert_wrote_nothing(&doc);
    assert_unchanged(&before, &dst, &second);
    let third = f.run(args(false)).expect(0);
    assert_eq!(
        third.stdout, "",
        "a run with nothing to do itemizes nothing"
    );
    assert_unchanged(&before, &dst, &third);

    // And the report says what the destination holds.
    assert_destination(&report, &expected);
}

/// Whether `dir`'s filesystem takes `user.` extended attributes.
fn user_xattrs_work(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, "").unwrap();
    let works =
        rustix::fs::lsetxattr(&probe, "user.probe", b"1", rustix::fs::XattrFlags::empty()).is_ok();
    fs::remove_file(&probe).unwrap();
    works
}

#[test]
fn ext4_holds_the_whole_tree_and_a_second_run_writes_nothing() {
    mirror_onto(Dest::Image(Fs::Ext4));
}

#[test]
fn xfs_holds_the_whole_tree_and_a_second_run_writes_nothing() {
    mirror_onto(Dest::Image(Fs::Xfs));
}

#[test]
fn btrfs_holds_the_whole_tree_and_a_second_run_writes_nothing() {
    mirror_onto(Dest::Image(Fs::Btrfs));
}

#[test]
fn tmpfs_holds_the_whole_tree_and_a_second_run_writes_nothing() {
    mirror_onto(Dest::Tmpfs);
}

#[test]
fn exfat_fuse_holds_what_it_can_warns_once_and_a_second_run_writes_nothing() {
    mirror_onto(Dest::Image(Fs::Exfat));
}

#[test]
fn vfat_holds_what_it_can_warns_once_and_a_second_run_writes_nothing() {
    mirror_onto(Dest::Image(Fs::Vfat));
}

// Case-insensitive destinations ----------------------------------------------------------------

/// A time on an even second: exactly what FAT and exFAT keep.
const EVEN: i64 = 1_600_000_000;

fn put(path: &Path, content: &str, sec: i64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    set_mtime(path, sec, 0);
}

/// The names in `dir`, as the filesystem spells them.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Run `syncease --json SRC DST`, returning the run and its document.
fn sync_json(f: &Fixture, dst: &Path) -> (Run, Value) {
    let run = f.run([
        f.src.as_os_str(),
        dst.as_os_str(),
        "--json".as_ref(),
        "-v".as_ref(),
    ]);
    let doc = document(&run);
    (run, doc)
}

/// DST's `photos/a.jpg` is SRC's `Photos/a.jpg`: the folder takes SRC's spelling, and the file
/// in it is not copied again.
fn a_folder_spelled_differently_is_renamed_not_copied_again(fs: Fs) {
    let f = Fixture::new();
    let Some(mount) = Mounted::new(&f, fs) else {
        return;
    };
    let dst = mount.path().join("dst");
    put(&f.src.join("Photos/a.jpg"), "jpeg", EVEN);
    put(&f.src.join("common.txt"), "common", EVEN);
    put(&dst.join("photos/a.jpg"), "jpeg", EVEN);
    put(&dst.join("common.txt"), "common", EVEN);
    let (run, doc) = sync_json(&f, &dst);
    let run = run.expect(0);
    for count in ["/copied/files", "/updated/files", "/deleted"] {
        assert_eq!(
            doc.pointer(count).and_then(Value::as_u64),
            Some(0),
            "{count}: {run:?}"
        );
    }
    assert_eq!(names(&dst), ["Photos", "common.txt"], "{run:?}");
    assert_eq!(names(&dst.join("Photos")), ["a.jpg"]);
    assert_eq!(fs::read(dst.join("Photos/a.jpg")).unwrap(), b"jpeg");
    assert_holds_tree(&f.src, &dst, &holds(fs.name()));
    let before = snapshot(&dst);
    let (again, doc) = sync_json(&f, &dst);
    let again = again.expect(0);
    assert_wrote_nothing(&doc);
    assert_unchanged(&before, &dst, &again);
}

/// SRC has `A.txt` and `a.txt`: DST can hold only one of them. The run says so once, keeps the
/// one DST has, syncs everything else and exits 1, run after run.
fn two_names_differing_only_in_case_are_one_error_and_lose_nothing(fs: Fs) {
    let f = Fixture::new();
    let Some(mount) = Mounted::new(&f, fs) else {
        return;
    };
    let dst = mount.path().join("dst");
    put(&f.src.join("A.txt"), "upper", EVEN);
    put(&f.src.join("a.txt"), "lower", EVEN + 2);
    put(&f.src.join("other.txt"), "other", EVEN);
    put(&f.src.join("dir/x"), "x", EVEN);
    // DST has the copy of `a.txt` an earlier run made.
    put(&dst.join("a.txt"), "lower", EVEN + 2);
    for round in ["first", "second"] {
        let (run, doc) = sync_json(&f, &dst);
        let run = run.expect(1);
        let errors = doc["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{round} run: {errors:#?}");
        let error = errors[0].to_string();
        assert!(
            error.contains("A.txt") && error.contains("a.txt"),
            "{round} run: the error names both: {error}"
        );
        let on_stderr = run.stderr.lines().filter(|l| l.contains("error")).count();
        assert_eq!(on_stderr, 1, "{round} run: {run:?}");
        assert_eq!(names(&dst), ["a.txt", "dir", "other.txt"], "{round} run");
        assert_eq!(
            fs::read(dst.join("a.txt")).unwrap(),
            b"lower",
            "{round} run"
        );
        assert_eq!(fs::read(dst.join("other.txt")).unwrap(), b"other");
        assert_eq!(fs::read(dst.join("dir/x")).unwrap(), b"x");
    }
}

/// DST has only `foo`, SRC only `Foo`: DST ends with exactly `Foo`, holding SRC's bytes.
fn a_name_whose_case_changed_takes_the_source_spelling(fs: Fs) {
    let f = Fixture::new();
    let Some(mount) = Mounted::new(&f, fs) else {
        return;
    };
    let dst = mount.path().join("dst");
    put(&f.src.join("Foo"), "new content", EVEN + 10);
    put(&dst.join("foo"), "old", EVEN);
    let (run, _) = sync_json(&f, &dst);
    let run = run.expect(0);
    assert_eq!(names(&dst), ["Foo"], "{run:?}");
    assert_eq!(fs::read(dst.join("Foo")).unwrap(), b"new content");
    assert_holds_tree(&f.src, &dst, &holds(fs.name()));
    let before = snapshot(&dst);
    let (again, doc) = sync_json(&f, &dst);
    let again = again.expect(0);
    assert_wrote_nothing(&doc);
    assert_unchanged(&before, &dst, &again);
}

#[test]
fn exfat_a_folder_spelled_differently_is_renamed_not_copied_again() {
    a_folder_spelled_differently_is_renamed_not_copied_again(Fs::Exfat);
}

#[test]
fn vfat_a_folder_spelled_differently_is_renamed_not_copied_again() {
    a_folder_spelled_differently_is_renamed_not_copied_again(Fs::Vfat);
}

#[test]
fn exfat_two_names_differing_only_in_case_are_one_error_and_lose_nothing() {
    two_names_differing_only_in_case_are_one_error_and_lose_nothing(Fs::Exfat);
}

#[test]
fn vfat_two_names_differing_only_in_case_are_one_error_and_lose_nothing() {
    two_names_differing_only_in_case_are_one_error_and_lose_nothing(Fs::Vfat);
}

#[test]
fn exfat_a_name_whose_case_changed_takes_the_source_spelling() {
    a_name_whose_case_changed_takes_the_source_spelling(Fs::Exfat);
}

#[test]
fn vfat_a_name_whose_case_changed_takes_the_source_spelling() {
    a_name_whose_case_changed_takes_the_source_spelling(Fs::Vfat);
}

// The fixture itself --------------------------------------------------------------------------

#[test]
fn a_mounted_image_leaves_no_mount_and_no_loop_device_behind() {
    let f = Fixture::new();
    for kind in Fs::ALL {
        let (dir, image, busy) = {
            let Some(mount) = Mounted::new(&f, kind) else {
                continue;
            };
            fs::write(mount.path().join("file"), "x").unwrap();
            assert!(is_mounted(mount.path()), "{mount:?}");
            assert_eq!(loop_devices_of(mount.image()), [mount.device()]);
            // Still in use when it is dropped: the unmount has to be lazy.
            let busy = fs::File::open(mount.path().join("file")).unwrap();
            (
                mount.path().to_path_buf(),
                mount.image().to_path_buf(),
                busy,
            )
        };
        assert!(!is_mounted(&dir), "{kind:?} still mounted at {dir:?}");
        drop(busy);
        // The loop device goes once its last user (the lazy mount, a FUSE driver that is
        // still exiting) lets go of it.
        let started = std::time::Instant::now();
        while !loop_devices_of(&image).is_empty() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{kind:?}: {:?} still attached to {image:?}",
                loop_devices_of(&image)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn names_it_cannot_store_are_skipped_and_deletions_go_ahead(fs: Fs) {
    let f = Fixture::new();
    let Some(mount) = Mounted::new(&f, fs) else {
        return;
    };
    let dst = mount.path().join("dst");
    put(&f.src.join("ok"), "ok", EVEN);
    put(&f.src.join("a:b"), "a colon", EVEN);
    fs::write(f.src.join(bytes_path(b"bad\xff")), "not UTF-8").unwrap();
    put(&dst.join("ok"), "ok", EVEN);
    put(&dst.join("gone"), "only in DST", EVEN);
    let (run, doc) = sync_json(&f, &dst);
    let run = run.expect(0);
    assert_eq!(names(&dst), ["ok"], "{run:?}");
    assert_eq!(
        run.stderr.matches("cannot store this name").count(),
        2,
        "{run:?}"
    );
    assert_eq!(doc["destination"]["any_names"], false);
    let before = snapshot(&dst);
    let (again, doc) = sync_json(&f, &dst);
    let again = again.expect(0);
    assert_wrote_nothing(&doc);
    assert_unchanged(&before, &dst, &again);
}

#[test]
fn exfat_names_it_cannot_store_are_skipped_and_deletions_go_ahead() {
    names_it_cannot_store_are_skipped_and_deletions_go_ahead(Fs::Exfat);
}

#[test]
fn vfat_names_it_cannot_store_are_skipped_and_deletions_go_ahead() {
    names_it_cannot_store_are_skipped_and_deletions_go_ahead(Fs::Vfat);
}

#[test]
fn exfat_a_name_it_keeps_apart_is_never_renamed_over() {
    // exFAT keeps `ı` apart from `i`: DST's own `kırmızı.txt` is not the source's `kirmizi.txt`.
    let f = Fixture::new();
    let Some(mount) = Mounted::new(&f, Fs::Exfat) else {
        return;
    };
    let dst = mount.path().join("dst");
    put(&f.src.join("kirmizi.txt"), "from the source", EVEN);
    put(&dst.join("kırmızı.txt"), "the user's own", EVEN);
    let (run, _) = {
        let out = syncease()
            .args(["--no-delete", "--json"])
            .arg(&f.src)
            .arg(&dst)
            .output()
            .unwrap();
        let run = Run::from(out);
        let doc = document(&run);
        (run, doc)
    };
    run.expect(0);
    assert_eq!(
        fs::read(dst.join("kırmızı.txt")).unwrap(),
        b"the user's own"
    );
    assert_eq!(
        fs::read(dst.join("kirmizi.txt")).unwrap(),
        b"from the source"
    );
}

#[test]
fn exfat_times_it_cannot_hold_are_compared_as_it_holds_them() {
    let f = Fixture::new();
    let Some(mount) = Mounted::new(&f, Fs::Exfat) else {
        return;
    };
    let dst = mount.path().join("dst");
    put(&f.src.join("1970.txt"), "epoch", 0);
    put(&f.src.join("2110.txt"), "far", 4_418_000_000);
    put(&f.src.join("ok.txt"), "ok", EVEN);
    let (run, _) = sync_json(&f, &dst);
    run.expect(0);
    // What the disk shows once remounted: the nearest time it can hold.
    set_mtime(&dst.join("1970.txt"), 315_532_800, 0);
    set_mtime(&dst.join("2110.txt"), 4_354_819_199, 0);
    let (again, doc) = sync_json(&f, &dst);
    again.expect(0);
    assert_wrote_nothing(&doc);
}
