//! Never lose data (SPEC section 3): each rule proved by provoking the real failure.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::*;

/// A fixture whose DST already mirrors a small tree, with one extra entry in DST.
fn synced() -> Fixture {
    let f = Fixture::new();
    f.write("src/keep.txt", "keep");
    f.write("src/sub/inner.txt", "inner");
    f.sync(&[]).expect(0);
    f.write("dst/extra.txt", "only in dst");
    f
}

#[track_caller]
fn assert_refused(f: &Fixture, args: &[&std::ffi::OsStr], expect: &str) {
    let before_dst = f.dst.exists().then(|| snapshot(&f.dst));
    let before_src = (Manifest::of(&f.src), identity(&f.src));
    let run = f.run(args).expect(2);
    assert!(
        run.stderr.contains("refusing to sync") && run.stderr.contains(expect),
        "{run:?}"
    );
    let after_dst = f.dst.exists().then(|| snapshot(&f.dst));
    assert!(before_dst == after_dst, "DST changed by a refused run");
    assert!(
        before_src == (Manifest::of(&f.src), identity(&f.src)),
        "SRC changed"
    );
}

#[test]
fn refusals_change_nothing() {
    let f = synced();
    let p = |rel: &str| f.path(rel).into_os_string();
    let (src, dst) = (p("src"), p("dst"));
    assert_refused(&f, &[&p("missing"), &dst], "does not exist");
    assert_refused(&f, &[&p("src/keep.txt"), &dst], "is not a directory");
    assert_refused(&f, &[&src, &p("dst/extra.txt")], "is not a directory");
    assert_refused(&f, &[&src, &src], "the same directory");
    assert_refused(&f, &[&src, &p("src/../src")], "the same directory");
    f.symlink("alias", "src");
    assert_refused(&f, &[&src, &p("alias")], "the same directory");
    assert_refused(&f, &[&src, &p("src/sub")], "is inside source");
    assert_refused(&f, &[&src, &p("src/new-dir")], "is inside source");
    assert_refused(&f, &[&p("dst/extra.txt/.."), &dst], "Not a directory");
    f.mkdir("dst/inner-src");
    assert_refused(&f, &[&p("dst/inner-src"), &dst], "is inside destination");
    assert_refused(
        &f,
        &[&src, &dst, "--backup-dir".as_ref(), &p("src/bak")],
        "inside the source",
    );
    assert_refused(
        &f,
        &[&src, &dst, "--backup-dir".as_ref(), &p("")],
        "contains the source",
    );
    assert!(!f.path("src/bak").exists() && !f.path("src/new-dir").exists());
}

#[test]
fn empty_source_over_a_full_destination_is_refused() {
    let f = synced();
    fs::remove_dir_all(&f.src).unwrap();
    fs::create_dir(&f.src).unwrap();
    let args = [f.src.as_os_str(), f.dst.as_os_str()];
    assert_refused(&f, &args, "is empty");
    f.sync(&["--allow-empty-source"]).expect(0);
    assert_eq!(fs::read_dir(&f.dst).unwrap().count(), 0);
}

#[test]
fn max_delete_deletes_nothing_but_still_copies() {
    let f = synced();
    fs::remove_dir_all(f.path("src/sub")).unwrap();
    f.write("src/new.txt", "new");
    // dst/extra.txt, dst/sub/inner.txt and dst/sub/ make three deletions. A dry run says so
    // as the real run does.
    let dry = f.sync(&["-n", "--max-delete", "2"]).expect(1);
    assert!(
        dry.stderr
            .contains("3 deletions planned, more than --max-delete 2"),
        "{dry:?}"
    );
    let run = f.sync(&["--max-delete", "2"]).expect(1);
    assert!(
        run.stderr
            .contains("3 deletions planned, more than --max-delete 2"),
        "{run:?}"
    );
    assert!(f.path("dst/new.txt").exists());
    assert!(f.path("dst/extra.txt").exists() && f.path("dst/sub/inner.txt").exists());
    f.sync(&["--max-delete", "3"]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn unreadable_source_directory_withholds_all_deletions() {
    let f = synced();
    f.write("src/locked/a.txt", "a");
    f.write("src/new.txt", "new");
    f.write("dst/locked/a.txt", "a");
    chmod(&f.path("src/locked"), 0o000);
    let run = run_unprivileged(&f, [&f.src, &f.dst]).expect(1);
    chmod(&f.path("src/locked"), 0o755);
    let locked = f.path("src/locked");
    assert!(
        run.stderr
            .contains(&format!("cannot read directory '{}'", locked.display())),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("deleting nothing") && run.stderr.contains("could not be read"),
        "{run:?}"
    );
    assert!(f.path("dst/new.txt").exists(), "copies still happen");
    assert!(f.path("dst/extra.txt").exists(), "nothing deleted");
    assert!(
        f.path("dst/locked/a.txt").exists(),
        "the unread part is kept"
    );
}

#[test]
fn unreadable_source_file_withholds_deletions() {
    let f = synced();
    let secret = f.write("src/secret.txt", "s");
    chmod(&secret, 0o000);
    let run = run_unprivileged(&f, [&f.src, &f.dst]).expect(1);
    assert!(
        run.stderr
            .contains("deleting nothing (1 entry kept): 1 entry could not be mirrored"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("cannot open the source file"),
        "{run:?}"
    );
    assert!(f.path("dst/extra.txt").exists());
}

#[test]
fn a_symlink_in_dst_is_replaced_never_written_through() {
    let f = Fixture::new();
    f.write("outside/precious.txt", "do not touch");
    f.write("src/sub/file.txt", "mirror me");
    f.write("src/sub/deeper/f", "x");
    f.mkdir("dst");
    f.symlink("dst/sub", f.path("outside"));
    let outside = snapshot(&f.path("outside"));
    f.sync(&[]).expect(0);
    assert_eq!(outside, snapshot(&f.path("outside")));
    assert!(fs::symlink_metadata(f.path("dst/sub")).unwrap().is_dir());
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn symlink_loops_in_src_are_copied_as_links() {
    let f = Fixture::new();
    f.symlink("src/self", "self");
    f.symlink("src/a", "b");
    f.symlink("src/b", "a");
    f.symlink("src/up", "..");
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn read_only_destination_directory_is_updated_and_stays_read_only() {
    let f = Fixture::new();
    f.write("src/ro/old.txt", "old");
    f.sync(&[]).expect(0);
    f.write("src/ro/new.txt", "new");
    fs::remove_file(f.path("src/ro/old.txt")).unwrap();
    chmod(&f.path("src/ro"), 0o555);
    chmod(&f.path("dst/ro"), 0o555);
    run_unprivileged(&f, [&f.src, &f.dst]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    chmod(&f.path("src/ro"), 0o755);
    chmod(&f.path("dst/ro"), 0o755);
}

#[test]
fn leftover_temporaries_are_swept_even_without_deletion() {
    let f = synced();
    f.write("dst/sub/.syncease-AbC123.tmp", "half a file");
    f.write("dst/.syncease-l1a2.tmp", "");
    f.sync(&["--no-delete"]).expect(0);
    assert!(temporaries(&f.dst).is_empty());
    assert!(f.path("dst/extra.txt").exists());
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn backup_dir_keeps_what_is_overwritten_or_deleted() {
    let f = synced();
    let backup = f.path("backup");
    let arg = backup.to_str().unwrap();
    f.write("src/keep.txt", "keep, version 2");
    fs::remove_dir_all(f.path("src/sub")).unwrap();
    f.sync(&["--backup-dir", arg]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!(fs::read(backup.join("keep.txt")).unwrap(), b"keep");
    assert_eq!(fs::read(backup.join("extra.txt")).unwrap(), b"only in dst");
    assert_eq!(fs::read(backup.join("sub/inner.txt")).unwrap(), b"inner");
    // A later run never overwrites an earlier backup.
    f.write("src/keep.txt", "keep, version 3");
    f.sync(&["--backup-dir", arg]).expect(0);
    assert_eq!(fs::read(backup.join("keep.txt")).unwrap(), b"keep");
    assert_eq!(
        fs::read(backup.join("keep.txt.~1~")).unwrap(),
        b"keep, version 2"
    );
}

#[test]
fn backup_dir_inside_dst_is_left_out_of_the_mirror() {
    let f = synced();
    let backup = f.dst.join(".versions");
    f.write("dst/.versions/from-before.txt", "older backup");
    fs::remove_file(f.path("src/keep.txt")).unwrap();
    f.sync(&["--backup-dir", backup.to_str().unwrap()])
        .expect(0);
    assert_eq!(fs::read(backup.join("keep.txt")).unwrap(), b"keep");
    assert!(backup.join("from-before.txt").exists());
    let backups = [
        ".versions",
        ".versions/keep.txt",
        ".versions/extra.txt",
        ".versions/from-before.txt",
    ];
    assert_same(
        &Manifest::of(&f.src),
        &Manifest::of(&f.dst).without(&backups),
    );
}

#[test]
fn backup_dir_on_another_filesystem_is_copied_then_removed() {
    let f = synced();
    let Some(other) = OtherFs::new(&f) else {
        return;
    };
    let backup = other.path().join("backup");
    fs::remove_dir_all(f.path("src/sub")).unwrap();
    f.write("src/keep.txt", "keep 2");
    f.sync(&["--backup-dir", backup.to_str().unwrap()])
        .expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!(fs::read(backup.join("sub/inner.txt")).unwrap(), b"inner");
    assert_eq!(fs::read(backup.join("keep.txt")).unwrap(), b"keep");
    assert_eq!(fs::read(backup.join("extra.txt")).unwrap(), b"only in dst");
}

#[test]
fn a_file_changed_during_its_copy_is_copied_again() {
    let f = Fixture::new();
    let changing = f.write("src/changing.log", vec![b'x'; 64 << 10]);
    f.write("src/calm.txt", "calm");
    if !need_strace() {
        return;
    }
    // The run stops as it copies changing.log (before the copy, or right after it where the
    // filesystem does not interrupt it); the file grows; the run goes on, sees the size move
    // and copies again.
    let mut run = Paused::start("copy_file_range", &changing, "1", [&f.src, &f.dst]);
    assert!(run.stopped(), "changing.log was never copied");
    append(&changing, b"more");
    run.resume();
    let run = run.finish().expect(0);
    assert!(run.stderr.contains("2 copied"), "{run:?}");
    assert_eq!(
        fs::read(f.dst.join("changing.log")).unwrap(),
        fs::read(&changing).unwrap()
    );
    assert!(temporaries(&f.dst).is_empty());
}

#[test]
fn a_file_that_keeps_changing_is_never_renamed_into_place() {
    let f = Fixture::new();
    let changing = f.write("src/changing.log", vec![b'x'; 64 << 10]);
    f.write("src/calm.txt", "calm");
    if !need_strace() {
        return;
    }
    // Stop as the first try copies changing.log, and once the second try has taken its fresh
    // look at it (its second stat: the first is the first try's check after copying): each
    // time the file grows before that try checks it.
    let stops_at = [("copy_file_range", "1"), ("statx", "2")];
    let mut run = Paused::start_at(&stops_at, &changing, [&f.src, &f.dst]);
    let mut stops = 0;
    while run.stopped() {
        stops += 1;
        append(&changing, b"more");
        run.resume();
    }
    let run = run.finish().expect(1);
    assert_eq!(stops, 2, "copied once, then once more: {run:?}");
    assert!(run.stderr.contains("changed while being copied"), "{run:?}");
    assert!(run.stderr.contains("changing.log"), "{run:?}");
    assert!(!f.dst.join("changing.log").exists());
    assert_eq!(fs::read(f.dst.join("calm.txt")).unwrap(), b"calm");
    assert!(temporaries(&f.dst).is_empty());
}

fn append(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(data).unwrap();
}

#[test]
fn killed_runs_leave_old_or_new_files_and_a_rerun_converges() {
    const FILES: u64 = 8;
    const SIZE: usize = 1 << 20;
    let f = Fixture::new();
    if !need_strace() {
        return;
    }
    let write_version = |v: u64| {
        for i in 0..FILES {
            let path = f.write(format!("src/big-{i}"), big_content(i, v, SIZE));
            set_mtime(&path, v as i64 * 1_000_000 + i as i64, 0);
        }
    };
    let hashes = |root: &Path| -> Vec<blake3::Hash> {
        (0..FILES)
            .map(|i| blake3::hash(&fs::read(root.join(format!("big-{i}"))).unwrap()))
            .collect()
    };
    write_version(1);
    f.sync(&[]).expect(0);
    // Each round makes every source file new again, then kills the run (one worker) as it
    // starts copying the first, the third and the sixth file: by then exactly 0, 2 and 5
    // files are in place, and one temporary is being written.
    for (round, nth) in [(2, 1), (3, 3), (4, 6)] {
        write_version(round);
        let old = hashes(&f.dst);
        let new = hashes(&f.src);
        let args = [
            "-j".as_ref(),
            "1".as_ref(),
            f.src.as_os_str(),
            f.dst.as_os_str(),
        ];
        let run = killed_at("copy_file_range", nth, None, &args);
        assert_eq!(run.code, -1, "the run ended before the kill point: {run:?}");
        let now = hashes(&f.dst);
        for (i, hash) in now.iter().enumerate() {
            assert!(
                *hash == old[i] || *hash == new[i],
                "big-{i} is neither version"
            );
        }
        let placed = (0..FILES as usize).filter(|&i| now[i] == new[i]).count();
        assert_eq!(placed, nth as usize - 1, "round {round}");
        assert_eq!(temporaries(&f.dst).len(), 1, "round {round}");
    }
    f.sync(&[]).expect(0);
    assert!(temporaries(&f.dst).is_empty());
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn a_killed_first_copy_leaves_only_complete_files_and_no_temporaries() {
    const FILES: u64 = 6;
    const SIZE: usize = 1 << 20;
    let f = Fixture::new();
    if !need_strace() {
        return;
    }
    for i in 0..FILES {
        f.write(format!("src/big-{i}"), big_content(i, 1, SIZE));
    }
    // New files are written unnamed and linked into place when complete: kill the run (one
    // worker) as it starts on the fourth, with three in place and nothing else named.
    let args = [
        "-j".as_ref(),
        "1".as_ref(),
        f.src.as_os_str(),
        f.dst.as_os_str(),
    ];
    let run = killed_at("copy_file_range", 4, None, &args);
    assert_eq!(run.code, -1, "the run ended before the kill point: {run:?}");
    let mut placed = 0;
    for i in 0..FILES {
        if let Ok(copied) = fs::read(f.dst.join(format!("big-{i}"))) {
            assert!(copied == big_content(i, 1, SIZE), "big-{i} is incomplete");
            placed += 1;
        }
    }
    assert_eq!(placed, 3);
    assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

/// Run `syncease EXTRA SRC DST` over SRC's `a.txt` and `late.txt`, stopped as it copies
/// late.txt (DST was listed long before), while `put` makes something at DST/late.txt.
fn put_during_the_run(f: &Fixture, extra: &[&std::ffi::OsStr], put: impl FnOnce(&Path)) -> Run {
    f.write("src/a.txt", "a");
    let late = f.write("src/late.txt", "from the source");
    let mut args = extra.to_vec();
    args.extend([f.src.as_os_str(), f.dst.as_os_str()]);
    let mut run = Paused::start("copy_file_range", &late, "1", args);
    assert!(run.stopped(), "late.txt was never copied");
    put(&f.dst.join("late.txt"));
    run.resume();
    run.finish()
}

#[test]
fn a_file_put_at_a_new_path_during_the_run_is_replaced_and_kept_in_the_backup() {
    let f = Fixture::new();
    if !need_strace() {
        return;
    }
    let backup = f.path("backup");
    let args = ["--backup-dir".as_ref(), backup.as_os_str()];
    let put = |path: &Path| fs::write(path, "put there meanwhile").unwrap();
    put_during_the_run(&f, &args, put).expect(0);
    assert_eq!(
        fs::read(f.dst.join("late.txt")).unwrap(),
        b"from the source"
    );
    assert_eq!(
        fs::read(backup.join("late.txt")).unwrap(),
        b"put there meanwhile"
    );
    assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
}

#[test]
fn a_directory_put_at_a_new_path_during_the_run_fails_that_file_alone() {
    let f = Fixture::new();
    if !need_strace() {
        return;
    }
    let run = put_during_the_run(&f, &[], |path| fs::create_dir(path).unwrap()).expect(1);
    let late = f.dst.join("late.txt");
    let cause = format!("cannot rename into place '{}'", late.display());
    assert!(run.stderr.contains(&cause), "{run:?}");
    assert!(late.is_dir(), "what was put there stays");
    assert_eq!(fs::read(f.dst.join("a.txt")).unwrap(), b"a");
    assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
}

/// A small filesystem mounted for one test, unmounted when dropped.
#[cfg(target_os = "linux")]
struct SmallFs(std::path::PathBuf);

#[cfg(target_os = "linux")]
impl SmallFs {
    fn mount(at: &Path, size: &str) -> Option<SmallFs> {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs(at.to_path_buf()))
    }
}

#[cfg(target_os = "linux")]
impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
#[cfg(target_os = "linux")] // tmpfs, or util-linux prlimit
fn a_full_destination_fails_the_file_and_keeps_what_was_there() {
    let f = Fixture::new();
    f.write("src/small.txt", "small");
    f.write("src/existing.txt", "version 1");
    let mounted = SmallFs::mount(&f.dst, "1m");
    f.sync(&[]).expect(0);
    f.write("src/existing.txt", vec![b'2'; 3 << 20]);
    f.write("src/huge.bin", vec![b'h'; 3 << 20]);
    let before = fs::read(f.dst.join("small.txt")).unwrap();
    let run = match &mounted {
        Some(_) => f.sync(&[]),
        None => {
            // No mount allowed: a file-size limit gives EFBIG instead of ENOSPC.
            let script = "trap '' XFSZ; exec prlimit --fsize=1048576 -- \"$@\"";
            let bin = assert_cmd::cargo::cargo_bin("syncease");
            Run::from(
                Command::new("sh")
                    .args(["-c", script, "sh"])
                    .arg(bin)
                    .arg(&f.src)
                    .arg(&f.dst)
                    .output()
                    .unwrap(),
            )
        }
    }
    .expect(1);
    let cause = if mounted.is_some() {
        "No space left on device"
    } else {
        "File too large"
    };
    assert!(run.stderr.contains(cause), "{run:?}");
    if mounted.is_some() {
        // A full disk fails every write after it: no write is started after the first error
        // (the other worker may have had its write in flight already).
        assert!(run.stderr.contains("stopped writing"), "{run:?}");
        let errors = run.stderr.matches("error:").count();
        let rest = run.stderr.contains("1 more entry not written");
        assert!((errors == 1 && rest) || (errors == 2 && !rest), "{run:?}");
    } else {
        // A file too large fails that file alone.
        assert!(
            run.stderr.contains("huge.bin") && run.stderr.contains("existing.txt"),
            "{run:?}"
        );
    }
    assert_eq!(fs::read(f.dst.join("existing.txt")).unwrap(), b"version 1");
    assert_eq!(fs::read(f.dst.join("small.txt")).unwrap(), before);
    assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
    drop(mounted);
}

#[test]
fn a_file_vanishing_during_the_run_is_a_warning_and_deletions_go_ahead() {
    let f = Fixture::new();
    f.write("src/kept.txt", "kept");
    f.sync(&[]).expect(0);
    let first = f.write("src/a-first.txt", "copied first");
    let small = f.write("src/small.txt", "here at scan time");
    f.write("dst/extra.txt", "to be deleted");
    if !need_strace() {
        return;
    }
    // One worker copies small files in path order: stopped while it copies a-first.txt, long
    // after the scan listed small.txt, and before small.txt is opened.
    let args = [
        "-j".as_ref(),
        "1".as_ref(),
        f.src.as_os_str(),
        f.dst.as_os_str(),
    ];
    let mut run = Paused::start("copy_file_range", &first, "1", args);
    assert!(run.stopped(), "a-first.txt was never copied");
    fs::remove_file(&small).unwrap();
    run.resume();
    let run = run.finish().expect(0);
    assert!(
        run.stderr
            .contains("small.txt' vanished before it was copied"),
        "{run:?}"
    );
    assert!(run.stderr.contains("1 vanished"), "{run:?}");
    assert!(
        !f.dst.join("extra.txt").exists(),
        "deletions are not withheld"
    );
    assert!(f.dst.join("a-first.txt").exists());
}

/// Six new files in SRC, and an entry only DST has, for the interrupt tests.
fn interruptible() -> Fixture {
    let f = Fixture::new();
    for i in 0..6 {
        f.write(format!("src/f{i}"), big_content(i, 0, 256 << 10));
    }
    f.write("dst/gone", "only in dst");
    // Something in common, or the run is refused as over an unrelated destination.
    f.write("dst/f5", "an old f5");
    f
}

/// `syncease -j 1 [--json] SRC DST` on an [`interruptible`] fixture, stopped as it copies f2
/// (one worker copies in path order: f0 and f1 are done).
fn stopped_at_f2(f: &Fixture, json: bool) -> Paused {
    let mut args = vec![
        "-j".as_ref(),
        "1".as_ref(),
        f.src.as_os_str(),
        f.dst.as_os_str(),
    ];
    if json {
        args.insert(0, "--json".as_ref());
    }
    let mut run = Paused::start("copy_file_range", &f.path("src/f2"), "1", args);
    assert!(run.stopped(), "f2 was never copied");
    run
}

/// Every file DST has under a source name is the whole source file.
fn only_whole_files(f: &Fixture) -> usize {
    let mut whole = 0;
    for i in 0..6 {
        let name = format!("f{i}");
        let copy = fs::read(f.dst.join(&name)).ok();
        if let Some(copy) = copy.filter(|c| c != b"an old f5") {
            assert_eq!(
                copy,
                fs::read(f.src.join(&name)).unwrap(),
                "{name} is partial"
            );
            whole += 1;
        }
    }
    whole
}

#[test]
fn a_signal_ends_the_run_cleanly_with_its_exit_code() {
    for (signal, name, code) in [
        ("-INT", "SIGINT", 130),
        ("-TERM", "SIGTERM", 143),
        ("-HUP", "SIGHUP", 129),
    ] {
        let f = interruptible();
        if !need_strace() {
            return;
        }
        let run = stopped_at_f2(&f, true);
        run.signal(signal);
        run.resume();
        let run = run.finish().expect(code);
        let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(doc["status"], "interrupted", "{run:?}");
        assert_eq!(doc["interrupted"], name);
        assert_eq!(doc["exit_code"], code);
        // The file being copied was finished, none was started after it, nothing was deleted.
        assert_eq!(only_whole_files(&f), 3, "{run:?}");
        assert_eq!(doc["copied"]["files"], 3);
        assert!(f.dst.join("gone").exists(), "deleted after {name}");
        assert!(temporaries(&f.dst).is_empty());
        f.sync(&[]).expect(0);
        assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    }
}

#[test]
fn a_stop_gives_up_a_file_between_its_pieces_instead_of_finishing_it() {
    use std::io::{Seek, SeekFrom, Write};
    // Two ways a file goes in pieces: its data extents (a hole between them), and --bwlimit's
    // pieces of a tenth of a second's worth.
    for (paced, flags) in [(false, &[][..]), (true, &["--bwlimit", "2M"][..])] {
        let f = interruptible();
        if !need_strace() {
            return;
        }
        // "big" sorts first: one worker copies it before any other file.
        let big = f.path("src/big");
        let mut file = fs::File::create(&big).unwrap();
        file.write_all(&big_content(9, 0, 256 << 10)).unwrap();
        if !paced {
            file.seek(SeekFrom::Start(32 << 20)).unwrap();
            file.write_all(&big_content(9, 1, 256 << 10)).unwrap();
        }
        drop(file);
        let mut args = vec!["--json", "-j", "1"];
        args.extend(flags);
        let args = args
            .iter()
            .map(std::ffi::OsStr::new)
            .chain([f.src.as_os_str(), f.dst.as_os_str()]);
        // Stopped as its first piece starts; the stop is asked for meanwhile.
        let mut run = Paused::start("copy_file_range", &big, "1", args);
        assert!(run.stopped(), "big was never copied");
        run.signal("-INT");
        run.resume();
        let run = run.finish().expect(130);
        let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(doc["status"], "interrupted", "{run:?}");
        assert!(
            !f.dst.join("big").exists(),
            "paced {paced}: the rest was copied"
        );
        assert_eq!(doc["copied"]["files"], 0, "{run:?}");
        assert_eq!(doc["errors"], serde_json::json!([]), "a stop is no error");
        assert!(temporaries(&f.dst).is_empty());
        assert!(f.dst.join("gone").exists());
        f.sync(&[]).expect(0);
        assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    }
}

#[test]
fn a_second_signal_exits_at_once_leaving_no_partial_file() {
    let f = interruptible();
    if !need_strace() {
        return;
    }
    let run = stopped_at_f2(&f, false);
    run.signal("-INT");
    run.signal("-INT");
    run.resume();
    run.finish().expect(130);
    only_whole_files(&f);
    assert!(f.dst.join("gone").exists());
    // The next run sweeps whatever the abrupt end left and converges.
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert!(temporaries(&f.dst).is_empty());
}

#[test]
fn a_signal_during_the_scan_changes_nothing() {
    let f = interruptible();
    if !need_strace() {
        return;
    }
    let before = snapshot(&f.dst);
    let args = ["--json".as_ref(), f.src.as_os_str(), f.dst.as_os_str()];
    let mut run = Paused::start("getdents64", &f.src, "1", args);
    assert!(run.stopped(), "SRC was never listed");
    run.signal("-INT");
    run.resume();
    let run = run.finish().expect(130);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["status"], "interrupted", "{run:?}");
    assert_eq!(
        before,
        snapshot(&f.dst),
        "DST changed by a run stopped while scanning"
    );
}

#[test]
fn a_signal_during_a_checksum_compare_stops_the_hashing_and_changes_nothing() {
    let f = interruptible();
    if !need_strace() {
        return;
    }
    // A pair of same-size files that differ: only their contents tell.
    let big = f.write("src/big", big_content(8, 1, 16 << 20));
    f.write("dst/big", big_content(8, 2, 16 << 20));
    let before = snapshot(&f.dst);
    let args = [
        "--json".as_ref(),
        "--checksum".as_ref(),
        f.src.as_os_str(),
        f.dst.as_os_str(),
    ];
    // Stopped at the first read of SRC's big file; the stop is asked for meanwhile.
    stopped_while_hashing(&big, |_| {}, args);
    assert_eq!(
        before,
        snapshot(&f.dst),
        "DST changed by a run stopped while comparing"
    );
}

#[test]
fn a_full_destination_stops_the_writes_with_one_error() {
    for (errno, message) in [
        ("ENOSPC", "No space left on device"),
        ("EDQUOT", "Disk quota exceeded"),
        ("EROFS", "Read-only file system"),
    ] {
        let f = interruptible();
        if !need_strace() {
            return;
        }
        // One worker; its third copy fails as every one after it would.
        let fault = format!("error={errno}:when=3+");
        let args = [
            "--json".as_ref(),
            "-j".as_ref(),
            "1".as_ref(),
            f.src.as_os_str(),
            f.dst.as_os_str(),
        ];
        let run = with_fault("copy_file_range", &fault, args).expect(1);
        let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(
            doc["errors"].as_array().unwrap().len(),
            1,
            "{errno}: {run:?}"
        );
        assert!(run.stderr.contains(message), "{run:?}");
        // The destination is the cause, and the error says so: the write failed.
        assert!(run.stderr.contains("cannot write '"), "{run:?}");
        assert!(run.stderr.contains("stopped writing"), "{run:?}");
        assert_eq!(doc["copied"]["files"], 2, "{run:?}");
        assert_eq!(doc["not_written"], 3, "{run:?}");
        assert!(doc["deletions_withheld"].is_string());
        assert!(f.dst.join("gone").exists());
        assert_eq!(only_whole_files(&f), 2);
        assert!(temporaries(&f.dst).is_empty());
        // Once writes work again, the next run completes the mirror.
        f.sync(&[]).expect(0);
        assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    }
}

#[test]
fn a_run_that_displaces_nothing_makes_no_backup_folder() {
    let f = Fixture::new();
    f.write("src/a", "a");
    f.sync(&["--backup-dir=.old"]).expect(0);
    f.write("src/b", "b");
    f.sync(&["--backup-dir=../old"]).expect(0);
    assert!(!f.dst.join(".old").exists());
    assert!(!f.path("old").exists());
}

#[test]
fn a_backup_folder_below_a_folder_the_run_makes_is_made_with_it() {
    let f = Fixture::new();
    f.write("src/f", "new");
    set_mtime(&f.path("src/f"), 1_600_000_000, 0);
    f.write("dst/f", "old");
    f.write("src/sub/x", "x");
    set_mtime(&f.path("src/sub"), 1_500_000_000, 0);
    let run = f.sync(&["-v", "--backup-dir=sub/.old"]).expect(0);
    assert_eq!(
        fs::read(f.dst.join("sub/.old/f")).unwrap(),
        b"old",
        "{run:?}"
    );
    assert_eq!(fs::read(f.dst.join("sub/x")).unwrap(), b"x", "{run:?}");
    let mtime = |p: &Path| fs::metadata(p).unwrap().mtime();
    assert_eq!(mtime(&f.dst.join("sub")), 1_500_000_000, "{run:?}");
    assert_eq!(
        f.sync(&["-v", "--backup-dir=sub/.old"]).expect(0).stdout,
        ""
    );
}

#[test]
fn the_folders_on_the_way_to_a_backup_folder_keep_their_times_and_stay() {
    let f = Fixture::new();
    f.write("src/f", "one");
    f.mkdir("src/x");
    f.sync(&[]).expect(0);
    f.write("src/f", "two, longer");
    set_mtime(&f.path("src/x"), 1_500_000_000, 0);
    set_mtime(&f.src, 1_500_000_000, 0);
    // x/y is made by the run, on the way to the backup folder: x's time is the source's.
    let run = f.sync(&["-v", "--backup-dir=x/y/.old"]).expect(0);
    assert_eq!(
        fs::read(f.dst.join("x/y/.old/f")).unwrap(),
        b"one",
        "{run:?}"
    );
    let mtime = |p: &Path| fs::metadata(p).unwrap().mtime();
    assert_eq!(mtime(&f.dst.join("x")), 1_500_000_000, "{run:?}");
    // SRC has no x/y: it holds the backup folder, so it is never planned as gone.
    let dry = f.sync(&["-n", "--backup-dir=x/y/.old"]).expect(0);
    assert!(!dry.stdout.contains("gone"), "{dry:?}");
    let again = f.sync(&["-v", "--backup-dir=x/y/.old"]).expect(0);
    assert_eq!(again.stdout, "", "{again:?}");
    assert!(!again.stderr.contains("warning"), "{again:?}");
    assert!(f.dst.join("x/y/.old/f").exists());
}

#[test]
fn a_backup_folder_inside_the_destination_is_never_made_through_a_link_swapped_in() {
    let f = interruptible();
    if !need_strace() {
        return;
    }
    // DST has the folder the backup folder goes in; SRC has not (it is left alone).
    f.mkdir("dst/keep");
    let outside = f.path("outside");
    fs::create_dir(&outside).unwrap();
    let args = [
        "-j".as_ref(),
        "1".as_ref(),
        "--backup-dir=keep/.old".as_ref(),
        f.src.as_os_str(),
        f.dst.as_os_str(),
    ];
    // Stopped as f2 is copied: f5, overwritten later, is the first entry kept.
    let mut run = Paused::start("copy_file_range", &f.path("src/f2"), "1", args.to_vec());
    assert!(run.stopped(), "f2 was never copied");
    fs::rename(f.dst.join("keep"), f.path("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, f.dst.join("keep")).unwrap();
    run.resume();
    let run = run.finish().expect(1);
    assert!(run.stderr.contains("no longer a directory"), "{run:?}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{run:?}");
    // What could not be kept was not overwritten.
    assert_eq!(fs::read(f.dst.join("f5")).unwrap(), b"an old f5", "{run:?}");
}

#[test]
fn a_backup_folder_named_below_the_destination_never_follows_a_symlink_out_of_it() {
    let f = Fixture::new();
    f.write("src/k", "k");
    f.write("dst/k", "k");
    f.write("dst/del", "to be kept in the backup");
    let outside = f.mkdir("outside");
    // DST has a link to elsewhere on the backup folder's way (SRC has nothing there).
    std::os::unix::fs::symlink(&outside, f.dst.join("a")).unwrap();
    let run = f.sync(&["-v", "--backup-dir=a/b/.old"]).expect(1);
    assert!(run.stderr.contains("no longer a directory"), "{run:?}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{run:?}");
    assert_eq!(
        fs::read(f.dst.join("del")).unwrap(),
        b"to be kept in the backup"
    );
}

#[test]
fn a_source_file_on_the_backup_folders_way_is_an_error_in_a_dry_run_too() {
    // DST has nothing there, or a file of its own.
    for dst_has in [None, Some("DST's a")] {
        let f = Fixture::new();
        f.write("src/k", "k");
        f.write("dst/k", "k");
        f.write("src/a", "a file where the backup folder's path goes");
        f.write("dst/del", "to be kept in the backup");
        if let Some(content) = dst_has {
            f.write("dst/a", content);
        }
        for arg in ["-n", "-v"] {
            let run = f.sync(&[arg, "--backup-dir=a/b/.old"]).expect(1);
            assert!(run.stderr.contains("path goes through it"), "{run:?}");
            assert!(!run.stdout.contains("gone"), "{run:?}");
        }
        assert_eq!(fs::read(f.dst.join("a")).ok(), dst_has.map(|c| c.into()));
        assert!(f.dst.join("del").exists());
    }
}

#[test]
fn a_backup_folder_is_never_emptied_into_itself() {
    let f = Fixture::new();
    // SRC has a file where the backup folder's path goes through a folder.
    f.write("src/x", "a file");
    f.write("src/a", "a");
    f.write("dst/x/y/.old/precious", "kept");
    f.write("dst/x/z", "z");
    for dry in [true, false] {
        let args = [if dry { "-n" } else { "-v" }, "--backup-dir=x/y/.old"];
        let run = f.sync(&args).expect(1);
        assert!(run.stderr.contains("path goes through it"), "{run:?}");
        assert!(!run.stdout.contains("gone"), "{run:?}");
    }
    assert_eq!(fs::read(f.dst.join("x/y/.old/precious")).unwrap(), b"kept");
    assert_eq!(fs::read(f.dst.join("x/z")).unwrap(), b"z");
    assert!(!f.dst.join("x/y/.old/x").exists());
    assert_eq!(fs::read(f.dst.join("a")).unwrap(), b"a");
}

#[test]
fn a_relative_backup_dir_is_relative_to_the_destination_as_in_rsync() {
    let f = synced();
    f.write("src/keep.txt", "keep, version 2");
    // Run from the fixture's root, where `.old` would land if taken from the current directory.
    let out = syncease()
        .current_dir(f.path(""))
        .args([
            "--backup-dir".as_ref(),
            ".old".as_ref(),
            f.src.as_os_str(),
            f.dst.as_os_str(),
        ])
        .output()
        .unwrap();
    let run = Run::from(out).expect(0);
    assert_eq!(
        fs::read(f.dst.join(".old/keep.txt")).unwrap(),
        b"keep",
        "{run:?}"
    );
    assert!(!f.path(".old").exists());
    // Inside DST it is left out of the mirror: a second run keeps it.
    f.sync(&["--backup-dir", ".old"]).expect(0);
    assert!(f.dst.join(".old/keep.txt").exists());
    f.write("src/keep.txt", "keep, version 3");
    f.sync(&["--backup-dir", "../old"]).expect(0);
    assert_eq!(
        fs::read(f.path("old/keep.txt")).unwrap(),
        b"keep, version 2"
    );
}

#[test]
fn a_destination_that_vanishes_stops_the_writes_with_one_error() {
    let f = interruptible();
    if !need_strace() {
        return;
    }
    let run = stopped_at_f2(&f, true);
    // The disk goes (unplugged, unmounted, removed) while f2 is copied.
    fs::remove_dir_all(&f.dst).unwrap();
    run.resume();
    let run = run.finish().expect(1);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(run.stderr.contains("the destination is gone"), "{run:?}");
    assert_eq!(doc["errors"].as_array().unwrap().len(), 1, "{run:?}");
    assert!(doc["not_written"].as_u64().unwrap() >= 2, "{run:?}");
    assert!(!f.dst.exists(), "nothing was made again where DST was");
}
