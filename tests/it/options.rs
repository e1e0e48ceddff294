//! The options of SPEC section 2: each one's effect, and how it meets deletion.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::util::*;

#[test]
fn checksum_catches_a_change_the_quick_check_misses() {
    let f = Fixture::new();
    let file = f.write("src/data.bin", "AAAA");
    set_mtime(&file, 1_600_000_000, 5);
    f.sync(&[]).expect(0);
    fs::write(&file, "BBBB").unwrap();
    set_mtime(&file, 1_600_000_000, 5);
    f.sync(&[]).expect(0);
    assert_eq!(
        fs::read(f.dst.join("data.bin")).unwrap(),
        b"AAAA",
        "quick check trusts size+time"
    );
    let run = f.sync(&["-c", "-v"]).expect(0);
    assert_eq!(run.stdout, ">f content data.bin\n");
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn checksum_fixes_only_the_time_when_contents_match() {
    let f = Fixture::new();
    let file = f.write("src/same.txt", "same");
    f.sync(&[]).expect(0);
    let ino = fs::metadata(f.dst.join("same.txt")).unwrap().ino();
    set_mtime(&file, 1_000, 0);
    let run = f.sync(&["--checksum", "-v"]).expect(0);
    assert_eq!(run.stdout, ".f time   same.txt\n");
    assert_eq!(ino, fs::metadata(f.dst.join("same.txt")).unwrap().ino());
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn size_only_and_modify_window_loosen_the_time_check() {
    let f = Fixture::new();
    let file = f.write("src/a", "x");
    set_mtime(&file, 1_000_000, 0);
    f.sync(&[]).expect(0);
    set_mtime(&file, 1_000_001, 500_000_000);
    // The same size is the same file: its time is fixed, not the file copied (as rsync does).
    assert_eq!(
        f.sync(&["--size-only", "-v"]).expect(0).stdout,
        ".f time   a\n"
    );
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    set_mtime(&file, 1_000_003, 0);
    assert_eq!(f.sync(&["--modify-window", "2", "-v"]).expect(0).stdout, "");
    assert_eq!(
        f.sync(&["--modify-window", "1", "-v"]).expect(0).stdout,
        ">f time   a\n"
    );
    fs::write(&file, "xy").unwrap();
    assert_eq!(
        f.sync(&["--size-only", "-v"]).expect(0).stdout,
        ">f size   a\n"
    );
}

#[test]
fn no_delete_copies_and_updates_but_keeps_extras() {
    let f = Fixture::new();
    f.write("src/a", "1");
    f.sync(&[]).expect(0);
    f.write("dst/extra/file", "mine");
    f.write("src/a", "22");
    f.write("src/b", "new");
    let run = f.sync(&["--no-delete", "-v"]).expect(0);
    assert!(
        run.stdout.contains(">f size   a") && run.stdout.contains("+f new    b"),
        "{run:?}"
    );
    assert_eq!(fs::read(f.dst.join("extra/file")).unwrap(), b"mine");
}

/// The original SyncEase scenario: three folders synced in turn into one backup.
fn animals(f: &Fixture, folder: &str, files: &[(&str, &str, i64)]) {
    let dir = f.path(folder);
    for (name, content, mtime) in files {
        let path = f.write(format!("{folder}/{name}"), content);
        set_mtime(&path, *mtime, 0);
    }
    set_mtime(&dir, 1_700_000_000, 0);
}

fn three_folders(f: &Fixture) {
    const OLD: i64 = 1_600_000_000;
    const NEW: i64 = 1_650_000_000;
    let first = [
        ("bunny.jpg", "bunny", OLD),
        ("dog.jpg", "dog", OLD),
        ("elephant.jpg", "elephant v1", OLD),
        ("film.png", "film v1", OLD),
        ("fox.jpg", "fox", OLD),
    ];
    animals(f, "folder1", &first);
    let mut second = first.to_vec();
    second[2] = ("elephant.jpg", "elephant v2, newer", NEW);
    second[3] = ("film.png", "film v2, newer", NEW);
    second.extend([
        ("lion.jpg", "lion", NEW),
        ("meerkat.jpg", "meerkat", NEW),
        ("orangutan.jpeg", "orangutan", NEW),
        ("panda/cub.jpg", "cub", NEW),
    ]);
    animals(f, "folder2", &second);
    animals(
        f,
        "folder3",
        &[
            ("elephant.jpg", "elephant v1", OLD),
            ("film.png", "film v1", OLD),
            ("panda.jpg", "panda", OLD),
            ("tiger.jpg", "tiger", OLD),
            ("wolf.jpg", "wolf", OLD),
            ("zebra.jpg", "zebra", OLD),
        ],
    );
}

#[test]
fn without_update_the_backup_follows_each_folder() {
    let f = Fixture::new();
    three_folders(&f);
    let backup = f.path("backup");
    for folder in ["folder1", "folder2", "folder3"] {
        f.run([f.path(folder), backup.clone()]).expect(0);
        assert_same(&Manifest::of(&f.path(folder)), &Manifest::of(&backup));
    }
}

#[test]
fn with_update_newer_backup_files_survive_an_older_folder() {
    let f = Fixture::new();
    three_folders(&f);
    let backup = f.path("backup");
    for folder in ["folder1", "folder2"] {
        f.run([
            f.path(folder).as_os_str(),
            backup.as_os_str(),
            "-u".as_ref(),
        ])
        .expect(0);
    }
    let run = f
        .run([
            f.path("folder3").as_os_str(),
            backup.as_os_str(),
            "--update".as_ref(),
        ])
        .expect(0);
    assert!(run.stderr.contains("2 kept newer"), "{run:?}");
    assert_eq!(
        fs::read(backup.join("elephant.jpg")).unwrap(),
        b"elephant v2, newer"
    );
    assert_eq!(
        fs::read(backup.join("film.png")).unwrap(),
        b"film v2, newer"
    );
    let kept = ["elephant.jpg", "film.png", ""];
    assert_same(
        &Manifest::of(&f.path("folder3")).without(&kept),
        &Manifest::of(&backup).without(&kept),
    );
}

#[test]
fn excluded_paths_are_neither_copied_nor_deleted() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    f.write("src/a.tmp", "new tmp");
    f.write("src/build/out.o", "o");
    f.write("src/sub/build/keep.o", "k");
    f.write("src/x/cache/y.bin", "y");
    f.write("src/logs/today", "l");
    f.write("src/sub/logs", "a file named logs");
    f.write("dst/a.tmp", "old tmp");
    f.write("dst/build/old.o", "old");
    f.write("dst/x/cache/z.bin", "z");
    let rules = [
        "--exclude",
        "*.tmp",
        "--exclude",
        "/build/",
        "--exclude",
        "**/cache/**",
    ];
    f.sync(&rules).expect(0);
    // Excluding a directory that DST already has keeps it there.
    f.sync(&[&rules[..], &["--exclude", "logs/"]].concat())
        .expect(0);
    assert_eq!(fs::read(f.dst.join("a.tmp")).unwrap(), b"old tmp");
    assert_eq!(fs::read(f.dst.join("build/old.o")).unwrap(), b"old");
    assert!(!f.dst.join("build/out.o").exists());
    assert!(
        f.dst.join("sub/build/keep.o").exists(),
        "/build/ is anchored"
    );
    assert!(!f.dst.join("x/cache/y.bin").exists() && f.dst.join("x/cache/z.bin").exists());
    assert!(
        f.dst.join("sub/logs").is_file(),
        "logs/ matches directories only"
    );
    assert!(
        f.dst.join("logs/today").exists(),
        "copied by the first run, then excluded: kept"
    );
}

#[test]
fn include_overrides_exclude_and_patterns_come_from_files() {
    let f = Fixture::new();
    f.write("src/drop.log", "d");
    f.write("src/keep.log", "k");
    f.write("src/notes/secret.txt", "s");
    f.write("src/notes/public.txt", "p");
    let rules = f.write(
        "rules",
        "# log files\n*.log\n!keep.log\n\nnotes/secret.txt\n",
    );
    f.sync(&["--exclude-from", rules.to_str().unwrap()])
        .expect(0);
    assert!(!f.dst.join("drop.log").exists() && f.dst.join("keep.log").exists());
    assert!(!f.dst.join("notes/secret.txt").exists() && f.dst.join("notes/public.txt").exists());
}

#[test]
fn bad_filters_are_refused() {
    let f = Fixture::new();
    f.write("src/a", "a");
    let run = f.sync(&["--exclude", "a["]).expect(2);
    assert!(run.stderr.contains("invalid pattern 'a['"), "{run:?}");
    let missing = f.path("no-such-rules");
    let run = f
        .sync(&["--exclude-from", missing.to_str().unwrap()])
        .expect(2);
    assert!(run.stderr.contains("cannot read exclude file"), "{run:?}");
    assert!(!f.dst.exists());
}

#[test]
fn flatten_puts_every_file_at_the_top_and_the_newest_wins() {
    let f = Fixture::new();
    let mtime = |rel: &str, sec| set_mtime(&f.path(rel), sec, 0);
    f.write("src/a/x.jpg", "x from a");
    mtime("src/a/x.jpg", 100);
    f.write("src/b/x.jpg", "x from b, newer");
    mtime("src/b/x.jpg", 200);
    f.write("src/a/y.jpg", "y from a");
    mtime("src/a/y.jpg", 50);
    f.write("src/b/y.jpg", "y from b");
    mtime("src/b/y.jpg", 50);
    f.write("src/c/d/z.png", "z");
    f.write("src/top.txt", "top");
    f.symlink("src/a/link", "x.jpg");
    f.mkdir("src/empty");
    f.write("dst/top.txt", "top, from an earlier backup");
    f.write("dst/old.jpg", "old");
    f.write("dst/sub/file", "in a subfolder");
    let run = f.sync(&["--flatten"]).expect(0);
    assert!(
        run.stderr.contains("a/x.jpg' has the same name as"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("b/y.jpg' has the same name as"),
        "{run:?}"
    );
    let names: Vec<_> = fs::read_dir(&f.dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, ["link", "top.txt", "x.jpg", "y.jpg", "z.png"]);
    assert_eq!(fs::read(f.dst.join("x.jpg")).unwrap(), b"x from b, newer");
    assert_eq!(fs::read(f.dst.join("y.jpg")).unwrap(), b"y from a");
    let before = identity(&f.dst);
    let run = f.sync(&["--flatten", "-v"]).expect(0);
    assert_eq!(run.stdout, "");
    assert_eq!(before, identity(&f.dst));
}

#[test]
fn jobs_do_not_change_the_result() {
    let f = Fixture::new();
    for i in 0..50 {
        f.write(format!("src/{}/{i}", i % 5), vec![b'x'; i * 100]);
    }
    for jobs in ["1", "2", "7"] {
        let dst = f.path(format!("dst-{jobs}"));
        f.run([
            f.src.as_os_str(),
            dst.as_os_str(),
            "-j".as_ref(),
            jobs.as_ref(),
        ])
        .expect(0);
        assert_same(&Manifest::of(&f.src), &Manifest::of(&dst));
    }
    assert!(Path::new(&f.path("dst-1")).exists());
}

#[test]
fn writers_outnumber_cpus_by_default_and_jobs_sets_every_pool() {
    let f = Fixture::new();
    f.write("src/a", "a");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let log = f.path("log");
    let counts = |dst: &str, args: &[&str]| {
        let _ = fs::remove_file(&log);
        let mut argv = vec![f.src.clone().into_os_string(), f.path(dst).into_os_string()];
        argv.extend(["--log-file".into(), log.clone().into_os_string()]);
        argv.extend(args.iter().map(Into::into));
        f.run(argv).expect(0);
        let text = fs::read_to_string(&log).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("writing"))
            .unwrap()
            .to_owned();
        line.split_once("listed_by=").unwrap().1.to_owned()
    };
    assert_eq!(
        counts("dst-default", &[]),
        format!("{cpus} writers={}", cpus.max(8))
    );
    assert_eq!(counts("dst-j3", &["-j", "3"]), "3 writers=3");
    assert_eq!(Manifest::of(&f.src), Manifest::of(&f.path("dst-j3")));
}

#[test]
fn writers_that_cannot_start_leave_the_writing_to_the_listing_workers() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !is_root() {
        return not_tested("needs root, to run as a user of its own under a process limit");
    }
    let f = Fixture::new();
    for i in 0..40 {
        f.write(format!("src/{}/{i}", i % 4), vec![b'x'; i * 10]);
    }
    // A user no other process runs as, allowed the main thread and the listing's workers.
    let uid = 3_000_000 + std::process::id();
    let bin = handed_to(&f, uid);
    let (dst, log) = (f.path("dst"), f.path("log"));
    let run = Run::from(
        Command::new("setpriv")
            .args([format!("--reuid={uid}"), format!("--regid={uid}")])
            .args(["--clear-groups", "--", "prlimit"])
            .arg(format!("--nproc={}", cpus + 1))
            .arg("--")
            .arg(&bin)
            .args([
                f.src.as_os_str(),
                dst.as_os_str(),
                "--log-file".as_ref(),
                log.as_os_str(),
            ])
            .output()
            .unwrap(),
    );
    run.expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&dst));
    let text = fs::read_to_string(&log).unwrap();
    let fell_back = text.contains("writing with the listing's workers");
    if cpus >= 8 {
        // One worker per CPU lists and writes: there is no second pool to fail.
        assert!(!fell_back && text.contains(&format!("listed_by={cpus} writers={cpus}")));
    } else {
        assert!(
            fell_back,
            "the writers' pool started under the limit: {text}"
        );
    }
}

#[test]
fn the_flags_rsync_users_type_are_accepted_or_refused_precisely() {
    let f = Fixture::new();
    f.write("src/a", "a");
    f.write("src/sub/b", "b");
    f.write("dst/a", "old a");
    f.write("dst/gone", "only in dst");
    let run = f
        .sync(&["-avH", "--delete", "--delete-after", "-rlptgoDS"])
        .expect(0);
    assert!(run.stdout.contains("-f gone   gone"), "{run:?}");
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    f.sync(&["--delete-during", "--archive", "--recursive"])
        .expect(0);
    // The last of a pair wins, as in rsync.
    f.write("dst/kept", "extra");
    f.sync(&["--delete", "--no-delete"]).expect(0);
    assert!(f.dst.join("kept").exists());
    f.sync(&["--no-delete", "--delete"]).expect(0);
    assert!(!f.dst.join("kept").exists());
    // The whole of rsync's backup spelling.
    for flags in [&["-aHAXS", "--numeric-ids"][..], &["-X"], &["--acls"]] {
        f.sync(flags).expect(0);
    }
    // What is not done is refused, never silently ignored.
    let run = f.sync(&["--xattrs", "--bogus"]).expect(2);
    assert!(run.stderr.contains("--bogus"), "{run:?}");
}

#[test]
fn the_rsync_form_of_a_no_flag_is_accepted_never_answered_with_its_opposite() {
    let f = Fixture::new();
    f.write("src/a", "a");
    for (typed, opposite) in [
        ("--delete", "--no-delete"),
        ("--owner", "--no-owner"),
        ("--hard-links", "--no-hard-links"),
    ] {
        let run = f.sync(&[typed]).expect(0);
        assert!(!run.stderr.contains(opposite), "{typed}: {run:?}");
    }
}

#[test]
fn mkpath_makes_the_missing_parents_of_the_destination() {
    let f = Fixture::new();
    f.write("src/a", "a");
    let deep = f.path("not/yet/there/dst");
    let args = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = extra.iter().map(Into::into).collect();
        args.extend([
            f.src.clone().into_os_string(),
            deep.clone().into_os_string(),
        ]);
        args
    };
    let run = f.run(args(&[])).expect(2);
    assert!(run.stderr.contains("--mkpath"), "{run:?}");
    assert!(!f.path("not").exists());
    f.run(args(&["--mkpath"])).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&deep));
}

#[test]
fn delete_excluded_removes_from_the_destination_what_the_filters_leave_out() {
    let f = Fixture::new();
    f.write("src/keep.txt", "k");
    f.write("src/cache/big.bin", "b");
    f.sync(&[]).expect(0);
    // Excluded: left alone in DST by default...
    f.sync(&["--exclude", "cache/"]).expect(0);
    assert!(f.dst.join("cache/big.bin").exists());
    // ... and deleted with --delete-excluded (and not copied again).
    let run = f
        .sync(&["--exclude", "cache/", "--delete-excluded", "-v"])
        .expect(0);
    assert!(run.stdout.contains("-d gone   cache/"), "{run:?}");
    assert!(!f.dst.join("cache").exists());
    assert!(f.dst.join("keep.txt").exists());
    f.sync(&["--no-delete", "--delete-excluded"]).expect(2);
}

#[test]
fn one_file_system_leaves_mounts_below_src_out_and_keeps_what_dst_has_there() {
    if !need_root("a filesystem mounted below SRC") {
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let f = Fixture::new();
    f.write("src/a", "a");
    let mnt = f.mkdir("src/mnt");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _unmount = Unmount(mnt.clone());
    f.write("src/mnt/inside", "on another filesystem");
    f.write("dst/a", "a");
    f.write("dst/mnt/old", "copied by an earlier run without -x");
    let run = f.sync(&["-x", "-v"]).expect(0);
    // The mount point is mirrored as a directory; nothing below it is copied or deleted.
    assert!(f.dst.join("mnt").is_dir(), "{run:?}");
    assert!(!f.dst.join("mnt/inside").exists(), "{run:?}");
    assert!(f.dst.join("mnt/old").exists(), "{run:?}");
    // Without -x the mount is part of the tree.
    f.sync(&[]).expect(0);
    assert_eq!(
        fs::read(f.dst.join("mnt/inside")).unwrap(),
        b"on another filesystem"
    );
    assert!(!f.dst.join("mnt/old").exists());
}

#[test]
fn files_from_mirrors_the_listed_paths_and_leaves_the_rest_alone() {
    let f = Fixture::new();
    for name in [
        "a.txt",
        "other.txt",
        "docs/x.md",
        "docs/y.md",
        "photos/p1",
        "photos/p2",
    ] {
        f.write(format!("src/{name}"), name);
    }
    f.write("dst/a.txt", "a.txt");
    f.write("dst/old.txt", "not listed: kept");
    f.write("dst/docs/keep.md", "beside a listed file: kept");
    f.write("dst/photos/gone", "below a listed directory: deleted");
    let list = f.write("list", "a.txt\n# a comment\n./docs/x.md\n/photos/\n\n");
    let files_from = format!("--files-from={}", list.display());
    let run = f.sync(&[&files_from, "-v"]).expect(0);
    let has = |p: &str| f.dst.join(p).exists();
    assert!(
        has("a.txt") && has("docs/x.md") && has("photos/p1") && has("photos/p2"),
        "{run:?}"
    );
    assert!(!has("other.txt") && !has("docs/y.md"), "{run:?}");
    assert!(has("old.txt") && has("docs/keep.md"), "{run:?}");
    assert!(!has("photos/gone"), "{run:?}");
    // --from0, from standard input.
    let mut cmd = syncease();
    cmd.args(["--files-from=-", "--from0"])
        .arg(&f.src)
        .arg(&f.dst);
    let run = Run::from(
        assert_cmd::Command::from_std(cmd)
            .write_stdin(b"other.txt\0docs/y.md\0".as_slice())
            .output()
            .unwrap(),
    )
    .expect(0);
    assert!(has("other.txt") && has("docs/y.md"), "{run:?}");
    // A path that leaves the source is refused before anything happens.
    let bad = f.write("bad-list", "../outside\n");
    let run = f
        .sync(&[&format!("--files-from={}", bad.display())])
        .expect(2);
    assert!(run.stderr.contains("leaves the source"), "{run:?}");
}

#[test]
fn bwlimit_paces_the_writes_in_small_pieces() {
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    f.write("src/a.bin", big_content(3, 0, 40 << 10));
    f.write("src/b.bin", big_content(4, 0, 100 << 10));
    // 40 KiB a second: pieces of 4 KiB, and waits between them (when they are, not how long:
    // no test here depends on the clock).
    let log = f.path("trace");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=copy_file_range,pwrite64,clock_nanosleep,nanosleep",
        ])
        .arg("-o")
        .arg(&log)
        .arg(assert_cmd::cargo::cargo_bin("syncease"))
        .args(["--bwlimit=40K"])
        .arg(&f.src)
        .arg(&f.dst)
        .output()
        .unwrap();
    Run::from(out).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    let trace = fs::read_to_string(&log).unwrap();
    let pieces: Vec<u64> = trace
        .lines()
        // Two files are written at once: a call may show as `<unfinished ...>`, its result
        // on a `<... resumed>` line of its own.
        .filter(|l| l.contains("copy_file_range") || l.contains("pwrite64"))
        .filter_map(|l| l.rsplit(" = ").next()?.trim().parse().ok())
        .collect();
    assert!(pieces.len() >= 35, "{trace}");
    assert!(pieces.iter().all(|&n| n <= 4096), "{pieces:?}");
    assert!(trace.contains("nanosleep("), "{trace}");
    let run = f.sync(&["--bwlimit=fast"]).expect(2);
    assert!(run.stderr.contains("--bwlimit fast"), "{run:?}");
}
