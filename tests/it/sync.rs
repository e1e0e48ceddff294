//! The default mirror: what `syncease SRC DST` does to DST (SPEC section 1).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::util::*;

/// A small tree with one of everything a mirror carries.
fn populate(f: &Fixture) {
    f.write("src/top.txt", "top");
    f.write("src/a/b/deep.txt", "deep");
    f.write("src/a/empty-file", "");
    f.mkdir("src/empty-dir");
    f.symlink("src/a/rel-link", "b/deep.txt");
    f.symlink("src/abs-link", "/etc/hostname");
    f.symlink("src/dangling", "no/such/target");
    set_mtime(&f.path("src/top.txt"), 1_600_000_000, 123_456_789);
}

#[test]
fn first_run_creates_dst_as_an_exact_mirror() {
    let f = Fixture::new();
    populate(&f);
    let run = f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert!(
        run.stdout.is_empty(),
        "nothing on stdout without -v: {run:?}"
    );
    assert!(
        run.stderr
            .contains("6 copied, 0 updated, 0 deleted, 0 unchanged"),
        "{run:?}"
    );
}

#[test]
fn second_run_writes_nothing() {
    let f = Fixture::new();
    populate(&f);
    f.sync(&[]).expect(0);
    let before = identity(&f.dst);
    let run = f.sync(&["-v"]).expect(0);
    assert_eq!(before, identity(&f.dst), "inodes, mtimes or ctimes moved");
    assert_eq!(run.stdout, "", "no action expected");
    assert!(
        run.stderr
            .contains("0 copied, 0 updated, 0 deleted, 6 unchanged"),
        "{run:?}"
    );
}

#[test]
fn changed_files_are_updated_by_size_and_by_time() {
    let f = Fixture::new();
    f.write("src/grows.txt", "a");
    f.write("src/touched.txt", "same");
    f.sync(&[]).expect(0);
    f.write("src/grows.txt", "abc");
    f.write("src/touched.txt", "SAME");
    set_mtime(&f.path("src/touched.txt"), 1_700_000_000, 1);
    let run = f.sync(&["-v"]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert!(run.stdout.contains(">f size   grows.txt"), "{run:?}");
    assert!(run.stdout.contains(">f time   touched.txt"), "{run:?}");
    assert!(run.stderr.contains("0 copied, 2 updated"), "{run:?}");
}

#[test]
fn entries_src_no_longer_has_are_deleted_with_whole_subtrees() {
    let f = Fixture::new();
    populate(&f);
    f.sync(&[]).expect(0);
    fs::remove_dir_all(f.path("src/a")).unwrap();
    fs::remove_file(f.path("src/dangling")).unwrap();
    let run = f.sync(&["-v"]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    let deletions: Vec<_> = run.stdout.lines().filter(|l| l.starts_with('-')).collect();
    assert_eq!(
        deletions,
        [
            "-l gone   dangling",
            "-l gone   a/rel-link",
            "-f gone   a/empty-file",
            "-f gone   a/b/deep.txt",
            "-d gone   a/b/",
            "-d gone   a/",
        ]
    );
}

#[test]
fn every_type_change_is_replaced() {
    let f = Fixture::new();
    let kinds = ["file", "dir", "link"];
    let make = |side: &str, name: &str, kind: &str| match kind {
        "file" => {
            f.write(format!("{side}/{name}"), kind);
        }
        "dir" => {
            f.write(format!("{side}/{name}/inside"), kind);
        }
        _ => {
            f.symlink(format!("{side}/{name}"), "target");
        }
    };
    for from in kinds {
        for to in kinds.iter().filter(|k| **k != from) {
            make("dst", &format!("{from}-to-{to}"), from);
            make("src", &format!("{from}-to-{to}"), to);
        }
    }
    let run = f.sync(&["-v"]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!(
        run.stdout.lines().filter(|l| l.starts_with('~')).count(),
        6,
        "{run:?}"
    );
}

#[test]
fn metadata_is_mirrored_with_nanoseconds_and_modes() {
    let f = Fixture::new();
    let exe = f.write("src/run.sh", "#!/bin/sh\n");
    chmod(&exe, 0o751);
    let secret = f.write("src/secret", "s");
    chmod(&secret, 0o600);
    let ro = f.write("src/ro/file", "r");
    set_mtime(&ro, -86_400 * 365, 999_999_999);
    chmod(&f.path("src/ro"), 0o555);
    set_mtime(&f.path("src/ro"), 1_234_567_890, 42);
    chmod(&f.src, 0o750);
    set_mtime(&f.src, 1_500_000_000, 7);
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    // A read-only directory can still be updated later.
    fs::write(&ro, "r2").unwrap();
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    chmod(&f.path("src/ro"), 0o755);
    chmod(&f.path("dst/ro"), 0o755);
}

#[test]
fn a_mode_change_alone_is_fixed_without_rewriting() {
    let f = Fixture::new();
    let file = f.write("src/f", "x");
    f.sync(&[]).expect(0);
    let ino = fs::metadata(f.dst.join("f")).unwrap().ino();
    chmod(&file, 0o640);
    let run = f.sync(&["-v"]).expect(0);
    assert_eq!(run.stdout, ".f mode   f\n");
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!(ino, fs::metadata(f.dst.join("f")).unwrap().ino());
}

#[test]
fn symlinks_are_never_followed_on_either_side() {
    let f = Fixture::new();
    f.write("outside/secret.txt", "outside");
    f.symlink("src/to-outside", "../outside");
    f.mkdir("dst");
    f.symlink("dst/to-outside", "../outside");
    f.symlink("dst/other", "../outside");
    let outside = Manifest::of(&f.path("outside"));
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_same(&outside, &Manifest::of(&f.path("outside")));
}

/// A FIFO and a socket in SRC.
fn fifo_and_socket(f: &Fixture) -> std::os::unix::net::UnixListener {
    f.write("src/regular", "r");
    let fifo = f.path("src/pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    set_mtime(&fifo, 1_500_000_000, 5);
    std::os::unix::net::UnixListener::bind(f.path("src/sock")).unwrap()
}

#[test]
fn fifos_and_sockets_are_made_again_by_any_user() {
    let f = Fixture::new();
    let _socket = fifo_and_socket(&f);
    chmod(&f.path("src/pipe"), 0o640);
    run_unprivileged(&f, [&f.src, &f.dst]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    // (handing the fixture to the user again changes ctimes: first that, then the snapshot)
    let mut again = unprivileged(&f);
    let before = identity(&f.dst);
    let run = Run::from(again.arg("-v").arg(&f.src).arg(&f.dst).output().unwrap()).expect(0);
    assert_eq!(run.stdout, "");
    assert_eq!(before, identity(&f.dst), "a second run writes nothing");
}

#[test]
fn no_specials_skips_them_with_a_warning() {
    let f = Fixture::new();
    let _socket = fifo_and_socket(&f);
    let run = f.sync(&["--no-specials"]).expect(0);
    // Said once, with how many.
    assert!(
        run.stderr
            .contains("warning: skipping 2 special files (the first: '")
            && run.stderr.contains("src/pipe')"),
        "{run:?}"
    );
    assert_eq!(run.stderr.matches("warning").count(), 1, "{run:?}");
    assert!(run.stderr.contains("2 skipped"), "{run:?}");
    assert_same(
        &Manifest::of(&f.src).without(&["pipe", "sock"]),
        &Manifest::of(&f.dst),
    );
}

#[test]
fn device_nodes_are_made_again_as_root() {
    let f = Fixture::new();
    if !need_root("to make device nodes") {
        return;
    }
    for (name, kind, major, minor) in [("null", "c", "1", "3"), ("loop9", "b", "7", "9")] {
        let made = std::process::Command::new("mknod")
            .arg(f.path(format!("src/{name}")))
            .args([kind, major, minor])
            .status()
            .unwrap();
        assert!(made.success());
    }
    chmod(&f.path("src/null"), 0o666);
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    // Another device number at the same path: replaced.
    fs::remove_file(f.path("src/loop9")).unwrap();
    let made = std::process::Command::new("mknod")
        .arg(f.path("src/loop9"))
        .args(["b", "7", "10"])
        .status()
        .unwrap();
    assert!(made.success());
    let run = f.sync(&["-v"]).expect(0);
    assert_eq!(run.stdout, "~s type   loop9\n");
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    let before = identity(&f.dst);
    f.sync(&[]).expect(0);
    assert_eq!(before, identity(&f.dst), "a second run writes nothing");
}

#[test]
fn odd_names_are_bytes_not_strings() {
    let f = Fixture::new();
    let long = "n".repeat(255);
    let names: Vec<std::path::PathBuf> = vec![
        bytes_path(b"latin1-\xe9t\xe9"),
        "with space".into(),
        "new\nline".into(),
        "-leading-dash".into(),
        "--".into(),
        "caf\u{e9}-\u{1f600}".into(),
        "back\\slash".into(),
        long.clone().into(),
    ];
    for name in &names {
        fs::write(f.src.join(name), name.as_os_str().as_encoded_bytes()).unwrap();
    }
    let mut deep = f.src.clone();
    for _ in 0..30 {
        deep.push("d".repeat(100));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), "b").unwrap();
    let run = f.sync(&["-v"]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert!(run.stdout.contains("+f new    new\\x0aline\n"), "{run:?}");
    assert!(run.stdout.contains("latin1-\\xe9t\\xe9"), "{run:?}");
    f.sync(&[]).expect(0);
}

#[test]
fn src_is_never_written() {
    let f = Fixture::new();
    populate(&f);
    f.write("dst/top.txt", "an older top.txt");
    f.write("dst/extra", "x");
    let before = identity(&f.src);
    f.sync(&[]).expect(0);
    f.write("src/top.txt", "changed");
    let before_second = identity(&f.src);
    f.sync(&[]).expect(0);
    assert_ne!(before, before_second);
    assert_eq!(before_second, identity(&f.src));
}

#[test]
fn updates_replace_the_file_instead_of_writing_into_it() {
    let f = Fixture::new();
    f.write("src/f", "old");
    f.sync(&[]).expect(0);
    // A hard link elsewhere shares the inode: writing in place would change it too.
    fs::hard_link(f.dst.join("f"), f.path("hardlink")).unwrap();
    f.write("src/f", "new!");
    f.sync(&[]).expect(0);
    assert_eq!(fs::read(f.dst.join("f")).unwrap(), b"new!");
    assert_eq!(fs::read(f.path("hardlink")).unwrap(), b"old");
}

#[test]
fn results_are_the_same_with_one_or_many_threads() {
    let f = Fixture::new();
    for i in 0..200 {
        f.write(format!("src/d{}/f{i}", i % 7), format!("{i}").repeat(i));
    }
    let one = f.path("one");
    let many = f.path("many");
    f.run([
        f.src.as_os_str(),
        one.as_os_str(),
        "-j".as_ref(),
        "1".as_ref(),
    ])
    .expect(0);
    f.run([
        f.src.as_os_str(),
        many.as_os_str(),
        "--jobs".as_ref(),
        "8".as_ref(),
    ])
    .expect(0);
    assert_same(&Manifest::of(&one), &Manifest::of(&many));
    assert_same(&Manifest::of(&f.src), &Manifest::of(&many));
}

#[test]
fn an_unreadable_file_fails_alone_and_is_named() {
    let f = Fixture::new();
    f.write("src/ok-1", "1");
    let locked = f.write("src/locked", "secret");
    f.write("src/ok-2", "2");
    chmod(&locked, 0o000);
    let run = Run::from(unprivileged(&f).arg(&f.src).arg(&f.dst).output().unwrap()).expect(1);
    assert!(
        run.stderr.contains(&format!(
            "cannot open the source file '{}'",
            locked.display()
        )) && run.stderr.contains("Permission denied"),
        "{run:?}"
    );
    assert!(f.dst.join("ok-1").exists() && f.dst.join("ok-2").exists());
    assert!(!f.dst.join("locked").exists());
    assert!(run.stderr.contains("2 copied"), "{run:?}");
}

#[test]
fn an_empty_file_is_copied_without_opening_its_source() {
    let f = Fixture::new();
    let empty = f.write("src/sub/empty", "");
    f.write("src/sub/full", "x");
    chmod(&empty, 0o640);
    set_mtime(&empty, 1_500_000_000, 7);
    if !need_strace() {
        return;
    }
    let trace = f.path("openat.trace");
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "trace=openat", "-o"])
        .arg(&trace)
        .arg(assert_cmd::cargo::cargo_bin("syncease"))
        .arg(&f.src)
        .arg(&f.dst);
    Run::from(cmd.output().unwrap()).expect(0);
    let trace = fs::read_to_string(&trace).unwrap();
    assert!(trace.contains("\"full\", O_RDONLY"), "{trace}");
    assert!(!trace.contains("\"empty\""), "{trace}");
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn an_unreadable_empty_file_is_mirrored_all_the_same() {
    let f = Fixture::new();
    let locked = f.write("src/locked", "");
    f.write("src/ok", "1");
    chmod(&locked, 0o000);
    // Nothing in it is hidden from the copy: the listing told all there is.
    let run = run_unprivileged(&f, [&f.src, &f.dst]).expect(0);
    assert!(run.stderr.contains("2 copied"), "{run:?}");
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn missing_dst_parent_is_refused() {
    let f = Fixture::new();
    f.write("src/a", "a");
    let dst = f.path("no/such/parent/dst");
    let run = f.run([f.src.as_os_str(), dst.as_os_str()]).expect(2);
    assert!(run.stderr.contains("parent of destination"), "{run:?}");
    assert!(!f.path("no").exists());
}

#[test]
fn exit_codes_are_documented_in_help() {
    let run = Run::from(syncease().arg("--help").output().unwrap()).expect(0);
    for line in ["0  everything synced", "1  partial", "2  refused"] {
        assert!(run.stdout.contains(line), "{run:?}");
    }
}

#[test]
fn bad_usage_exits_2() {
    let f = Fixture::new();
    f.sync(&["--jobs", "0"]).expect(2);
    f.sync(&["--no-such-option"]).expect(2);
    assert!(!Path::new(&f.dst).exists());
}

#[test]
fn copies_across_filesystems() {
    // copy_file_range refuses most pairs of different filesystems (EXDEV): the copy falls back
    // to reading and writing.
    let f = Fixture::new();
    let Some(other) = OtherFs::new(&f) else {
        return;
    };
    f.write("src/a.bin", vec![7u8; 3 << 20]);
    f.write("src/d/b.txt", "b");
    let target = other.path().join("mirror");
    f.run([f.src.as_os_str(), target.as_os_str()]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&target));
}

#[test]
fn a_directory_or_file_that_cannot_be_made_fails_alone() {
    if !need_root("to hand a directory to another user") {
        return;
    }
    let f = Fixture::new();
    f.write("src/ok.txt", "ok");
    f.write("src/locked/new/file.txt", "x");
    f.write("src/locked/new.txt", "new");
    f.mkdir("dst/locked");
    let mut cmd = unprivileged(&f);
    // DST/locked belongs to root (mode 755): the unprivileged run cannot create anything in it,
    // neither a directory nor a file (unnamed or through a named temporary).
    std::os::unix::fs::lchown(f.path("dst/locked"), Some(0), Some(0)).unwrap();
    let run = Run::from(cmd.arg(&f.src).arg(&f.dst).output().unwrap()).expect(1);
    let locked = f.dst.join("locked");
    let new = locked.join("new");
    let made = format!("cannot create directory '{}'", new.display());
    assert!(run.stderr.contains(&made), "{run:?}");
    let meta = format!("cannot set permissions on '{}'", new.display());
    assert!(
        !run.stderr.contains(&meta),
        "no metadata for a directory never made: {run:?}"
    );
    let temp = format!("cannot create a temporary file in '{}'", locked.display());
    assert!(run.stderr.contains(&temp), "{run:?}");
    assert!(run.stderr.contains("Permission denied"), "{run:?}");
    assert!(!locked.join("new.txt").exists());
    assert_eq!(fs::read(f.dst.join("ok.txt")).unwrap(), b"ok");
}

#[test]
fn sparse_files_keep_their_holes() {
    use std::io::{Seek, SeekFrom, Write};
    let f = Fixture::new();
    let make = |name: &str, data: &[(u64, usize)], len: u64| {
        let path = f.path(format!("src/{name}"));
        let mut file = fs::File::create(&path).unwrap();
        for &(at, n) in data {
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&vec![b'x'; n]).unwrap();
        }
        file.set_len(len).unwrap();
    };
    // 64 MiB holding 1 MiB in the middle and 4 KiB at the end; 64 MiB of nothing.
    make(
        "image.raw",
        &[(16 << 20, 1 << 20), ((64 << 20) - 4096, 4096)],
        64 << 20,
    );
    make("empty.raw", &[], 64 << 20);
    let allocated = |path: &Path| fs::metadata(path).unwrap().blocks() * 512;
    if allocated(&f.path("src/empty.raw")) > 0 {
        not_tested("the temporary directory's filesystem keeps no holes");
        return;
    }
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert!(
        allocated(&f.dst.join("image.raw")) <= 2 << 20,
        "the holes were filled"
    );
    assert_eq!(allocated(&f.dst.join("empty.raw")), 0);
    // --no-sparse writes the holes out (where copying does not share extents instead).
    let filled = f.path("filled");
    f.run([
        "--no-sparse".as_ref(),
        f.src.as_os_str(),
        filled.as_os_str(),
    ])
    .expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&filled));
    let kind = rustix::fs::statfs(&filled).unwrap().f_type as i64;
    // ext4 and tmpfs copy holes as zeros; XFS and btrfs may share extents, holes included.
    if [0xEF53, 0x0102_1994].contains(&kind) {
        assert!(allocated(&filled.join("empty.raw")) >= 32 << 20);
    } else {
        not_tested("--no-sparse on a filesystem that shares extents");
    }
}

#[test]
fn hard_links_stay_hard_links() {
    let f = Fixture::new();
    let a = f.write("src/a", "shared");
    f.mkdir("src/sub");
    fs::hard_link(&a, f.path("src/sub/b")).unwrap();
    fs::hard_link(&a, f.path("src/c")).unwrap();
    f.write("src/d", "shared");
    let ino = |rel: &str| fs::metadata(f.dst.join(rel)).unwrap().ino();
    let run = f.sync(&["-v"]).expect(0);
    assert!(run.stdout.contains("+f link   c => a\n"), "{run:?}");
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!((ino("a"), ino("a")), (ino("sub/b"), ino("c")));
    assert_ne!(ino("a"), ino("d"));
    assert_eq!(fs::metadata(f.dst.join("a")).unwrap().nlink(), 3);
    // A second run writes nothing.
    let before = identity(&f.dst);
    assert_eq!(f.sync(&["-v"]).expect(0).stdout, "");
    assert_eq!(before, identity(&f.dst));
    // New contents (written in place: every name sees them): one copy, the others linked to it.
    fs::write(&a, "shared, version 2").unwrap();
    let run = f.sync(&["-v"]).expect(0);
    assert_eq!(
        run.stdout, ">f size   a\n>f link   c => a\n>f link   sub/b => a\n",
        "{run:?}"
    );
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!((ino("a"), ino("a")), (ino("sub/b"), ino("c")));
    // --no-hard-links: every name its own file.
    let apart = f.path("apart");
    f.run([
        "--no-hard-links",
        f.src.to_str().unwrap(),
        apart.to_str().unwrap(),
    ])
    .expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&apart));
    assert_eq!(fs::metadata(apart.join("a")).unwrap().nlink(), 1);
}

#[test]
fn files_whose_other_names_lie_outside_the_source_are_copied_as_files_of_their_own() {
    // A snapshot taken with --link-dest, as a source: every file has a name in another tree.
    let f = Fixture::new();
    let a = f.write("src/a", "one");
    let b = f.write("src/sub/b", "two");
    let c = f.write("src/c", "three");
    f.mkdir("elsewhere");
    fs::hard_link(&a, f.path("elsewhere/a")).unwrap();
    fs::hard_link(&b, f.path("elsewhere/b")).unwrap();
    fs::hard_link(&b, f.path("elsewhere/b2")).unwrap();
    // Two names in SRC and one outside: still a group of two to keep.
    fs::hard_link(&c, f.path("src/sub/c")).unwrap();
    fs::hard_link(&c, f.path("elsewhere/c")).unwrap();
    let run = f.sync(&["-v"]).expect(0);
    assert_eq!(
        run.stdout,
        "+d new    sub/\n+f new    a\n+f new    c\n+f new    sub/b\n+f link   sub/c => c\n",
        "{run:?}"
    );
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    for rel in ["a", "sub/b"] {
        assert_eq!(fs::metadata(f.dst.join(rel)).unwrap().nlink(), 1, "{rel}");
    }
    let ino = |rel: &str| fs::metadata(f.dst.join(rel)).unwrap().ino();
    assert_eq!(ino("c"), ino("sub/c"));
    assert_eq!(fs::metadata(f.dst.join("c")).unwrap().nlink(), 2);
    assert_eq!(f.sync(&["-v"]).expect(0).stdout, "");
}

#[test]
fn a_fix_in_place_never_reaches_a_name_outside_the_destination() {
    let f = Fixture::new();
    let a = f.write("src/a", "linked");
    fs::hard_link(&a, f.path("src/b")).unwrap();
    let c = f.write("src/c", "alone");
    f.write("src/d", "left alone");
    f.sync(&[]).expect(0);
    // Each copy gets a name outside DST (as a snapshot or another folder gives it).
    f.mkdir("outside");
    for rel in ["a", "c", "d"] {
        fs::hard_link(f.dst.join(rel), f.path(format!("outside/{rel}"))).unwrap();
    }
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    let before: Vec<u32> = ["a", "c", "d"]
        .iter()
        .map(|rel| mode(&f.path(format!("outside/{rel}"))))
        .collect();
    // Same contents, other permission bits: a chmod in place would change the outside names.
    chmod(&a, 0o600);
    chmod(&c, 0o600);
    let run = f.sync(&["-v"]).expect(0);
    assert_eq!(
        run.stdout, ">f link   a\n>f link   c\n>f link   b => a\n",
        "{run:?}"
    );
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    let after: Vec<u32> = ["a", "c", "d"]
        .iter()
        .map(|rel| mode(&f.path(format!("outside/{rel}"))))
        .collect();
    assert_eq!(before, after, "a name outside DST was changed");
    let ino = |p: std::path::PathBuf| fs::metadata(p).unwrap().ino();
    assert_eq!(ino(f.dst.join("a")), ino(f.dst.join("b")));
    assert_ne!(ino(f.dst.join("a")), ino(f.path("outside/a")));
    assert_ne!(ino(f.dst.join("c")), ino(f.path("outside/c")));
    // Nothing to change: the copy keeps its outside name.
    assert_eq!(ino(f.dst.join("d")), ino(f.path("outside/d")));
    assert_eq!(f.sync(&["-v"]).expect(0).stdout, "");
}

#[test]
fn a_file_a_symlink_replaced_during_the_run_is_never_fixed_through_it() {
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    let a = f.write("src/a", "same contents");
    f.sync(&[]).expect(0);
    chmod(&a, 0o600);
    let outside = f.write("outside", "not DST's");
    let run = between_listing_and_fixes(&f, || {
        fs::remove_file(f.dst.join("a")).unwrap();
        std::os::unix::fs::symlink(&outside, f.dst.join("a")).unwrap();
    });
    let run = run.expect(1);
    assert!(run.stderr.contains("took the file's place"), "{run:?}");
    assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o644);
    // The next run replaces the link with the file.
    f.sync(&[]).expect(0);
    assert!(fs::symlink_metadata(f.dst.join("a")).unwrap().is_file());
}

#[test]
fn a_file_linked_elsewhere_during_the_run_is_never_fixed_through_the_link() {
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    let a = f.write("src/a", "same contents");
    f.write("src/b", "b");
    // A first name fixed while a new name is linked to it: no reason to leave it alone.
    let p = f.write("src/p", "pair");
    f.sync(&[]).expect(0);
    fs::hard_link(&p, f.path("src/q")).unwrap();
    chmod(&p, 0o600);
    chmod(&a, 0o600);
    let outside = f.path("outside");
    let run = between_listing_and_fixes(&f, || fs::hard_link(f.dst.join("a"), &outside).unwrap());
    let run = run.expect(1);
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    assert!(run.stderr.contains("hard-linked elsewhere"), "{run:?}");
    assert_eq!(mode(&outside), 0o644, "{run:?}");
    assert_eq!(mode(&f.dst.join("p")), 0o600, "{run:?}");
    assert_eq!(mode(&f.dst.join("q")), 0o600, "{run:?}");
    // The next run knows of the outside name: the file is written anew.
    let again = f.sync(&["-v"]).expect(0);
    assert_eq!(again.stdout, ">f link   a\n", "{again:?}");
    assert_eq!(mode(&outside), 0o644);
    assert_eq!(mode(&f.dst.join("a")), 0o600);
}

#[test]
fn a_name_a_run_keeps_beside_the_mirror_is_never_fixed_through_a_link() {
    let mode = |p: std::path::PathBuf| fs::metadata(p).unwrap().mode() & 0o777;
    // Deleted into a backup folder outside DST, then inside it; withheld by --max-delete.
    for (case, extra) in [
        ("backup", &["--backup-dir=../bk"][..]),
        ("backup inside", &["--backup-dir=.old"][..]),
        ("withheld", &["--max-delete=1"][..]),
    ] {
        let f = Fixture::new();
        let a = f.write("src/a", "linked");
        fs::hard_link(&a, f.path("src/b")).unwrap();
        f.write("src/c", "c");
        f.write("src/d", "d");
        f.sync(&[]).expect(0);
        fs::remove_file(f.path("src/b")).unwrap();
        fs::remove_file(f.path("src/c")).unwrap();
        fs::remove_file(f.path("src/d")).unwrap();
        chmod(&a, 0o600);
        let code = if case == "withheld" { 1 } else { 0 };
        let run = f.sync(&[&["-v"][..], extra].concat()).expect(code);
        let kept = match case {
            "backup" => f.path("bk/b"),
            "backup inside" => f.dst.join(".old/b"),
            _ => f.dst.join("b"),
        };
        assert_eq!(mode(kept), 0o644, "{case}: what was kept changed: {run:?}");
        assert_eq!(mode(f.dst.join("a")), 0o600, "{case}: {run:?}");
        // The next run has nothing to do (the backup folder inside DST is no cause).
        let again = f.sync(&[&["-v"][..], extra].concat()).expect(code);
        assert!(!again.stdout.contains(" a\n"), "{case}: {again:?}");
    }
}

/// SRC's a and b linked, mirrored; then DST's a replaced by a newer file of its own (which
/// -u keeps), returned.
fn linked_pair_with_a_newer_first_name(f: &Fixture) -> std::path::PathBuf {
    let a = f.write("src/a", "aa");
    fs::hard_link(&a, f.path("src/b")).unwrap();
    set_mtime(&a, 1_600_000_000, 0);
    f.sync(&[]).expect(0);
    let kept = f.dst.join("a");
    fs::remove_file(&kept).unwrap();
    fs::write(&kept, "NEWER").unwrap();
    set_mtime(&kept, 1_700_000_000, 0);
    kept
}

#[test]
fn update_never_links_a_name_to_a_newer_file_it_kept() {
    let f = Fixture::new();
    let kept = linked_pair_with_a_newer_first_name(&f);
    let run = f.sync(&["-u", "-v"]).expect(0);
    assert_eq!(fs::read(&kept).unwrap(), b"NEWER", "{run:?}");
    assert_eq!(fs::read(f.dst.join("b")).unwrap(), b"aa", "{run:?}");
    assert_eq!(f.sync(&["-u", "-v"]).expect(0).stdout, "");
    // Without -u the group is one file again.
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    let ino = |rel: &str| fs::metadata(f.dst.join(rel)).unwrap().ino();
    assert_eq!(ino("a"), ino("b"));
}

#[test]
fn update_never_links_a_name_in_place_of_a_symlink_to_a_newer_file_it_kept() {
    let f = Fixture::new();
    let kept = linked_pair_with_a_newer_first_name(&f);
    // DST has a symlink where the later name goes.
    fs::remove_file(f.dst.join("b")).unwrap();
    std::os::unix::fs::symlink("a", f.dst.join("b")).unwrap();
    let run = f.sync(&["-u", "-v"]).expect(0);
    assert_eq!(fs::read(&kept).unwrap(), b"NEWER", "{run:?}");
    let b = f.dst.join("b");
    assert!(fs::symlink_metadata(&b).unwrap().is_file(), "{run:?}");
    assert_eq!(fs::read(&b).unwrap(), b"aa", "{run:?}");
    assert_eq!(f.sync(&["-u", "-v"]).expect(0).stdout, "");
}

#[test]
fn a_link_group_with_a_name_in_the_backup_folder_is_mirrored_by_its_other_names() {
    let f = Fixture::new();
    // SRC has the backup folder's path too; its names are left alone on both sides.
    let a = f.write("src/z/a", "linked");
    f.mkdir("src/.old");
    fs::hard_link(&a, f.path("src/.old/b")).unwrap();
    fs::hard_link(&a, f.path("src/z/c")).unwrap();
    set_mtime(&a, 1_600_000_000, 0);
    f.sync(&["--backup-dir=.old"]).expect(0);
    assert_eq!(fs::read(f.dst.join("z/a")).unwrap(), b"linked");
    let ino = |rel: &str| fs::metadata(f.dst.join(rel)).unwrap().ino();
    assert_eq!(ino("z/a"), ino("z/c"));
    assert!(!f.dst.join(".old/b").exists());
    // A name DST has in the backup folder, linked to the mirror's copy, keeps its mode.
    fs::create_dir_all(f.dst.join(".old")).unwrap();
    fs::hard_link(f.dst.join("z/a"), f.dst.join(".old/b")).unwrap();
    chmod(&a, 0o600);
    let run = f.sync(&["-v", "--backup-dir=.old"]).expect(0);
    let mode = |rel: &str| fs::metadata(f.dst.join(rel)).unwrap().mode() & 0o777;
    assert_eq!((mode("z/a"), mode("z/c")), (0o600, 0o600), "{run:?}");
    assert_eq!(mode(".old/b"), 0o644, "{run:?}");
    assert_eq!(ino("z/a"), ino("z/c"));
    assert_eq!(f.sync(&["-v", "--backup-dir=.old"]).expect(0).stdout, "");
}

#[test]
fn a_backup_folder_made_inside_the_destination_leaves_its_parent_time_as_the_source_has_it() {
    let f = Fixture::new();
    f.write("src/x/a", "one");
    set_mtime(&f.path("src/x"), 1_600_000_000, 0);
    set_mtime(&f.src, 1_600_000_000, 0);
    f.sync(&[]).expect(0);
    f.write("src/x/a", "changed");
    set_mtime(&f.path("src/x"), 1_600_000_000, 0);
    let run = f.sync(&["-v", "--backup-dir=.old"]).expect(0);
    assert_eq!(fs::read(f.dst.join(".old/x/a")).unwrap(), b"one", "{run:?}");
    assert_eq!(
        fs::metadata(&f.dst).unwrap().mtime(),
        1_600_000_000,
        "{run:?}"
    );
    assert_eq!(f.sync(&["-v", "--backup-dir=.old"]).expect(0).stdout, "");
}

#[test]
fn a_link_whose_first_name_cannot_replace_a_kept_directory_is_left_or_written_as_a_file() {
    let f = Fixture::new();
    let a = f.write("src/a", "aaaa");
    fs::hard_link(&a, f.path("src/b")).unwrap();
    fs::hard_link(&a, f.path("src/c")).unwrap();
    fs::hard_link(&a, f.path("src/n")).unwrap();
    // DST has a folder where the first name goes: it is kept, deletions being withheld. b and
    // c are there, linked together; n is not.
    f.write("dst/a/x", "kept");
    f.write("dst/b", "old!");
    fs::hard_link(f.dst.join("b"), f.dst.join("c")).unwrap();
    let args = ["-v", "--max-delete=0", "--backup-dir=.old"];
    let dry = f.sync(&[&["-n"][..], &args].concat()).expect(1);
    let run = f.sync(&args).expect(1);
    assert_eq!(dry.stdout, run.stdout, "the dry run said otherwise");
    assert_eq!(run.stdout, "+f new    n\n", "{run:?}");
    assert!(!run.stderr.contains("hard link"), "{run:?}");
    assert!(run.stderr.contains("not replacing directory"), "{run:?}");
    assert_eq!(fs::read(f.dst.join("a/x")).unwrap(), b"kept");
    assert_eq!(fs::read(f.dst.join("n")).unwrap(), b"aaaa");
    // What DST has is left as it is, run after run: no rewrite, no backup.
    assert_eq!(f.sync(&args).expect(1).stdout, "");
    let ino = |rel: &str| fs::metadata(f.dst.join(rel)).unwrap().ino();
    assert_eq!(ino("b"), ino("c"));
    assert!(!f.dst.join(".old/b").exists() && !f.dst.join(".old/c").exists());
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    let ino = |rel: &str| fs::metadata(f.dst.join(rel)).unwrap().ino();
    assert_eq!(ino("a"), ino("b"));
}

#[test]
fn two_source_link_groups_merged_in_the_destination_are_split() {
    let f = Fixture::new();
    let a = f.write("src/a", "same bytes");
    for rel in ["b", "c", "d"] {
        fs::hard_link(&a, f.path(format!("src/{rel}"))).unwrap();
    }
    set_mtime(&a, 1_600_000_000, 0);
    f.sync(&[]).expect(0);
    // SRC splits into {a, b} and {c, d}: same contents, time and mode, two inodes.
    let c = f.path("src/c");
    fs::remove_file(&c).unwrap();
    fs::remove_file(f.path("src/d")).unwrap();
    fs::copy(&a, &c).unwrap();
    set_mtime(&c, 1_600_000_000, 0);
    fs::hard_link(&c, f.path("src/d")).unwrap();
    f.sync(&[]).expect(0);
    let ino = |rel: &str| fs::metadata(f.dst.join(rel)).unwrap().ino();
    assert_eq!(ino("a"), ino("b"));
    assert_eq!(ino("c"), ino("d"));
    assert_ne!(ino("a"), ino("c"), "two source files left one inode");
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    // A fix on one group now reaches only its names, and the next run settles.
    chmod(&a, 0o600);
    assert_eq!(f.sync(&["-v"]).expect(0).stdout, ".f mode   a\n");
    assert_eq!(fs::metadata(f.dst.join("c")).unwrap().mode() & 0o777, 0o644);
    assert_eq!(f.sync(&["-v"]).expect(0).stdout, "");
}

#[test]
fn a_hard_link_whose_first_name_cannot_be_copied_fails_with_it() {
    let f = Fixture::new();
    f.write("src/other", "o");
    let a = f.write("src/a", "secret");
    fs::hard_link(&a, f.path("src/b")).unwrap();
    let mut cmd = unprivileged(&f);
    // After the fixture is handed to the user: neither name can be read then.
    chmod(&a, 0o000);
    let run = Run::from(cmd.arg(&f.src).arg(&f.dst).output().unwrap()).expect(1);
    assert!(run.stderr.contains("cannot open"), "{run:?}");
    let link = format!("cannot make hard link '{}'", f.dst.join("b").display());
    assert!(run.stderr.contains(&link), "{run:?}");
    assert!(!f.dst.join("a").exists() && !f.dst.join("b").exists());
    assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
    assert_eq!(fs::read(f.dst.join("other")).unwrap(), b"o");
}

#[test]
fn a_later_name_of_a_linked_file_takes_the_place_of_a_symlink_or_fifo_as_a_link() {
    let f = Fixture::new();
    let a = f.write("src/a", "linked");
    fs::hard_link(&a, f.path("src/b")).unwrap();
    fs::hard_link(&a, f.path("src/e")).unwrap();
    let target = f.write("outside", "not to be written");
    f.mkdir("dst");
    std::os::unix::fs::symlink(&target, f.dst.join("b")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(f.dst.join("e"))
        .status()
        .unwrap();
    assert!(made.success());
    let run = f.sync(&["-v"]).expect(0);
    assert_eq!(
        run.stdout, "+f new    a\n>f link   b => a\n>f link   e => a\n",
        "{run:?}"
    );
    let ino = |rel: &str| fs::symlink_metadata(f.dst.join(rel)).unwrap().ino();
    assert_eq!((ino("a"), ino("a")), (ino("b"), ino("e")));
    assert_eq!(fs::read(&target).unwrap(), b"not to be written");
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!(f.sync(&["-v"]).expect(0).stdout, "");
}

#[test]
fn a_name_already_linked_to_a_leader_that_failed_leaves_no_temporary() {
    if !need_root("a folder another user owns") {
        return;
    }
    let f = Fixture::new();
    let a = f.write("src/d1/a", "old");
    f.mkdir("src/d2");
    fs::hard_link(&a, f.path("src/d2/b")).unwrap();
    f.sync(&[]).expect(0);
    let mut cmd = unprivileged(&f);
    // The leader's folder is root's: its new copy fails, and b is linked to the copy it is a
    // name of already.
    std::os::unix::fs::chown(f.dst.join("d1"), Some(0), Some(0)).unwrap();
    fs::write(&a, "new").unwrap();
    let run = Run::from(cmd.arg(&f.src).arg(&f.dst).output().unwrap()).expect(1);
    assert!(
        run.stderr.contains("cannot create a temporary file"),
        "{run:?}"
    );
    assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
    assert_eq!(fs::read(f.dst.join("d2/b")).unwrap(), b"old");
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn a_refused_setuid_bit_costs_the_bits_not_the_data() {
    if !need_root("a setuid file that keeps its owner") || !need_strace() {
        return;
    }
    let f = Fixture::new();
    let tool = f.write("src/tool", "#!/bin/sh\n");
    chmod(&tool, 0o4755);
    f.write("src/plain", "plain");
    // The first fchmod of the copying thread fails as a FUSE driver's may: EPERM.
    let args = [
        "-j".as_ref(),
        "1".as_ref(),
        f.src.as_os_str(),
        f.dst.as_os_str(),
    ];
    let run = with_fault("fchmod", "error=EPERM:when=1", args).expect(0);
    assert_eq!(run.stderr.matches("warning").count(), 1, "{run:?}");
    assert!(run.stderr.contains("refused setuid"), "{run:?}");
    assert_eq!(fs::read(f.dst.join("tool")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(
        fs::metadata(f.dst.join("tool")).unwrap().mode() & 0o7777,
        0o755
    );
    // Where the bit can be set, the next run sets it.
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}
