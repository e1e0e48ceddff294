//! Never lose data (SPEC section 3): each rule proved by provoking the real failure.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

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
    let before_dst = f
        .dst
        .exists()
        .then(|| (Manifest::of(&f.dst), identity(&f.dst)));
    let before_src = (Manifest::of(&f.src), identity(&f.src));
    let run = f.run(args).expect(2);
    assert!(
        run.stderr.contains("refusing to sync") && run.stderr.contains(expect),
        "{run:?}"
    );
    let after_dst = f
        .dst
        .exists()
        .then(|| (Manifest::of(&f.dst), identity(&f.dst)));
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
    assert_refused(&f, &[&p("dst/extra.txt/.."), &dst], "");
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
    // dst/extra.txt, dst/sub/inner.txt and dst/sub/ make three deletions.
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
    assert!(run.stderr.contains("1 write failed"), "{run:?}");
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
    let outside = (
        Manifest::of(&f.path("outside")),
        identity(&f.path("outside")),
    );
    f.sync(&[]).expect(0);
    assert_eq!(
        outside,
        (
            Manifest::of(&f.path("outside")),
            identity(&f.path("outside"))
        )
    );
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
    f.write("dst/sub/.syncease-AbC123.tmp", "partial");
    f.sync(&["--no-delete"]).expect(0);
    assert!(temporaries(&f.dst).is_empty());
    assert!(f.path("dst/extra.txt").exists());
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
    let shm = Path::new("/dev/shm");
    let f = synced();
    let Ok(meta) = fs::metadata(shm) else {
        eprintln!("no /dev/shm: cross-device backup not tested");
        return;
    };
    if meta.dev() == fs::metadata(&f.dst).unwrap().dev() {
        eprintln!("/dev/shm is on the same filesystem: cross-device backup not tested");
        return;
    }
    let backup = tempfile::Builder::new()
        .prefix("syncease-backup-")
        .tempdir_in(shm)
        .unwrap();
    fs::remove_dir_all(f.path("src/sub")).unwrap();
    f.write("src/keep.txt", "keep 2");
    f.sync(&["--backup-dir", backup.path().to_str().unwrap()])
        .expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!(
        fs::read(backup.path().join("sub/inner.txt")).unwrap(),
        b"inner"
    );
    assert_eq!(fs::read(backup.path().join("keep.txt")).unwrap(), b"keep");
    assert_eq!(
        fs::read(backup.path().join("extra.txt")).unwrap(),
        b"only in dst"
    );
}

#[test]
fn a_file_changing_while_copied_is_never_renamed_into_place() {
    let f = Fixture::new();
    let growing = f.write("src/growing.log", vec![b'x'; 32 << 20]);
    f.write("src/calm.txt", "calm");
    // The writer must land an append inside both copy windows (tens of milliseconds each); on a
    // loaded machine it may be descheduled through one, and the copy then is simply a clean
    // snapshot. Try a few times until the change is caught; a run that caught nothing must still
    // have copied a consistent file.
    for _attempt in 0..5 {
        let _ = fs::remove_dir_all(&f.dst);
        let stop = AtomicBool::new(false);
        let run = std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut file = fs::OpenOptions::new().append(true).open(&growing).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    use std::io::Write;
                    file.write_all(&[b'y'; 4096]).unwrap();
                }
            });
            let run = f.sync(&["-j", "1"]);
            stop.store(true, Ordering::Relaxed);
            run
        });
        assert!(f.dst.join("calm.txt").exists());
        assert!(temporaries(&f.dst).is_empty());
        if run.code == 0 {
            let copied = fs::read(f.dst.join("growing.log")).unwrap();
            let source = fs::read(&growing).unwrap();
            assert!(source.starts_with(&copied), "not a snapshot of the source");
            continue;
        }
        let run = run.expect(1);
        assert!(run.stderr.contains("changed while being copied"), "{run:?}");
        assert!(run.stderr.contains("growing.log"), "{run:?}");
        assert!(!f.dst.join("growing.log").exists());
        return;
    }
    panic!("the source never changed during a copy in five runs");
}

/// Start `syncease -j JOBS SRC DST` in the background.
fn spawn_sync(f: &Fixture, jobs: &str, stderr: Stdio) -> Child {
    let mut cmd = syncease();
    cmd.args(["-j", jobs])
        .arg(&f.src)
        .arg(&f.dst)
        .stderr(stderr);
    cmd.spawn().unwrap()
}

#[test]
fn killed_runs_leave_old_or_new_files_and_a_rerun_converges() {
    const FILES: u64 = 8;
    const SIZE: usize = 64 << 20;
    let f = Fixture::new();
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
    // Each round makes every source file new again, then kills the run at a later point: as soon
    // as a temporary exists, then once 2, then 5 targets have been renamed into place.
    for (round, renamed_before_kill) in [(2, 0), (3, 2), (4, 5)] {
        write_version(round);
        let old = hashes(&f.dst);
        let new = hashes(&f.src);
        let mut child = spawn_sync(&f, "2", Stdio::null());
        wait_for(&mut child, "the kill point", || {
            let renamed = (0..FILES)
                .filter(|i| {
                    fs::metadata(f.dst.join(format!("big-{i}")))
                        .is_ok_and(|m| m.mtime() >= round as i64 * 1_000_000)
                })
                .count();
            renamed >= renamed_before_kill && !temporaries(&f.dst).is_empty()
        });
        let _ = child.kill();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the run ended before the kill point"
        );
        for (i, hash) in hashes(&f.dst).into_iter().enumerate() {
            assert!(
                hash == old[i] || hash == new[i],
                "big-{i} is neither version"
            );
        }
    }
    f.sync(&[]).expect(0);
    assert!(temporaries(&f.dst).is_empty());
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn a_killed_first_copy_leaves_only_complete_files_and_no_temporaries() {
    const FILES: u64 = 6;
    const SIZE: usize = 48 << 20;
    let f = Fixture::new();
    for i in 0..FILES {
        f.write(format!("src/big-{i}"), big_content(i, 1, SIZE));
    }
    // New files are written unnamed and linked into place when complete: kill the run once
    // some are in place while others are being written. On a loaded machine this thread may
    // wake too late (the run done, or every file in place): try again.
    let placed = || {
        (0..FILES)
            .filter(|i| f.dst.join(format!("big-{i}")).exists())
            .count()
    };
    let killed_midway = (0..5).any(|_| {
        let _ = fs::remove_dir_all(&f.dst);
        let mut child = spawn_sync(&f, "2", Stdio::null());
        while placed() == 0 && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let _ = child.kill();
        use std::os::unix::process::ExitStatusExt;
        child.wait().unwrap().signal() == Some(9) && placed() < FILES as usize
    });
    assert!(killed_midway, "never killed a run midway in five tries");
    for i in 0..FILES {
        let path = f.dst.join(format!("big-{i}"));
        if let Ok(copied) = fs::read(&path) {
            assert!(copied == big_content(i, 1, SIZE), "big-{i} is incomplete");
        }
    }
    assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

/// Run `syncease -j 1 EXTRA SRC DST` over SRC's big file and `late.txt`, calling `put` on
/// DST/late.txt as soon as DST exists: one worker copies the big file first, and DST is created
/// only after the scan, so what `put` makes there was not there when DST was listed. `None`
/// when `put` failed (the run had already written late.txt): try again.
fn put_during_the_run(
    f: &Fixture,
    extra: &[&std::ffi::OsStr],
    put: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Option<Run> {
    let _ = fs::remove_dir_all(&f.dst);
    let mut child = syncease()
        .args(["-j", "1"])
        .args(extra)
        .arg(&f.src)
        .arg(&f.dst)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut child, "DST made", || f.dst.is_dir());
    let put = put(&f.dst.join("late.txt"));
    let run = Run::from(child.wait_with_output().unwrap());
    put.ok().map(|()| run)
}

fn big_and_late(f: &Fixture) {
    f.write("src/a-big.bin", vec![b'b'; 256 << 20]);
    f.write("src/late.txt", "from the source");
}

#[test]
fn a_file_put_at_a_new_path_during_the_run_is_replaced_and_kept_in_the_backup() {
    let f = Fixture::new();
    big_and_late(&f);
    // On a loaded machine this thread may wake only after the run wrote late.txt (then it
    // overwrote the copy): try again.
    for _attempt in 0..5 {
        let backup = tempfile::tempdir().unwrap();
        let args = ["--backup-dir".as_ref(), backup.path().as_os_str()];
        let put = |path: &Path| fs::write(path, "put there meanwhile");
        let Some(run) = put_during_the_run(&f, &args, put) else {
            continue;
        };
        run.expect(0);
        let now = fs::read(f.dst.join("late.txt")).unwrap();
        if now == b"put there meanwhile" {
            continue; // written after the run's copy
        }
        assert_eq!(now, b"from the source");
        assert_eq!(
            fs::read(backup.path().join("late.txt")).unwrap(),
            b"put there meanwhile"
        );
        assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
        return;
    }
    panic!("the file was never put in place before the run reached it, in five runs");
}

#[test]
fn a_directory_put_at_a_new_path_during_the_run_fails_that_file_alone() {
    let f = Fixture::new();
    big_and_late(&f);
    for _attempt in 0..5 {
        // Making the directory fails when the run already wrote late.txt: try again.
        let Some(run) = put_during_the_run(&f, &[], |path| fs::create_dir(path)) else {
            continue;
        };
        let run = run.expect(1);
        let late = f.dst.join("late.txt");
        let cause = format!("cannot rename into place '{}'", late.display());
        assert!(run.stderr.contains(&cause), "{run:?}");
        assert!(late.is_dir(), "what was put there stays");
        assert_eq!(
            fs::metadata(f.dst.join("a-big.bin")).unwrap().len(),
            256 << 20
        );
        assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
        return;
    }
    panic!("the directory was never made before the run reached late.txt, in five runs");
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
    assert!(
        run.stderr.contains("huge.bin") && run.stderr.contains("existing.txt"),
        "{run:?}"
    );
    assert_eq!(fs::read(f.dst.join("existing.txt")).unwrap(), b"version 1");
    assert_eq!(fs::read(f.dst.join("small.txt")).unwrap(), before);
    assert!(temporaries(&f.dst).is_empty(), "{:?}", temporaries(&f.dst));
    drop(mounted);
}

#[test]
fn a_file_vanishing_during_the_run_is_a_warning_and_deletions_go_ahead() {
    let f = Fixture::new();
    f.write("src/big.bin", vec![b'b'; 256 << 20]);
    f.sync(&[]).expect(0);
    f.write("src/big.bin", vec![b'B'; 256 << 20]);
    let small = f.write("src/small.txt", "here at scan time");
    f.write("src/new.txt", "new");
    f.write("dst/extra.txt", "to be deleted");
    // One worker copies the largest file first; delete the small one while that copy runs.
    let mut child = spawn_sync(&f, "1", Stdio::piped());
    wait_for(&mut child, "the big copy", || {
        !temporaries(&f.dst).is_empty()
    });
    fs::remove_file(&small).unwrap();
    let run = Run::from(child.wait_with_output().unwrap()).expect(0);
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
    assert!(f.dst.join("new.txt").exists());
}
