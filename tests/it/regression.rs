//! One test per data-loss bug found by attacking the tool, named after the behaviour it keeps.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::util::*;

/// DST as it is now: contents and identities, to prove a run changed nothing.
fn state(f: &Fixture) -> (Manifest, Identity) {
    snapshot(&f.dst)
}

/// A backup with two files in it.
fn backup(f: &Fixture) {
    f.write("dst/a", "1");
    f.write("dst/b", "2");
}

#[test]
fn a_source_whose_every_entry_is_excluded_does_not_wipe_the_backup() {
    let f = Fixture::new();
    f.write("src/.Trash-1000/f", "x");
    backup(&f);
    let before = state(&f);
    let run = f.sync(&["--exclude", ".*"]).expect(2);
    assert!(run.stderr.contains("is empty"), "{run:?}");
    assert!(before == state(&f), "DST changed");
}

#[test]
fn a_flattened_source_without_files_does_not_wipe_the_backup() {
    let f = Fixture::new();
    f.mkdir("src/only/empty/folders");
    backup(&f);
    let before = state(&f);
    let run = f.sync(&["--flatten"]).expect(2);
    assert!(run.stderr.contains("is empty"), "{run:?}");
    assert!(before == state(&f), "DST changed");
}

#[test]
fn a_fresh_filesystem_at_the_source_holding_only_lost_and_found_is_empty() {
    let f = Fixture::new();
    f.mkdir("src/lost+found");
    backup(&f);
    let before = state(&f);
    let run = f.sync(&[]).expect(2);
    assert!(run.stderr.contains("is empty"), "{run:?}");
    assert!(before == state(&f), "DST changed");
    // What is in lost+found is data: then the source is not empty.
    f.write("src/lost+found/#1234", "recovered");
    f.write("src/a", "1");
    f.sync(&[]).expect(0);
}

#[test]
fn an_empty_source_is_allowed_when_asked_and_over_an_empty_destination() {
    let f = Fixture::new();
    f.mkdir("dst");
    f.sync(&[]).expect(0);
    backup(&f);
    f.sync(&["--allow-empty-source"]).expect(0);
    assert_eq!(fs::read_dir(&f.dst).unwrap().count(), 0);
}

#[test]
fn a_source_that_vanishes_after_the_checks_is_a_refusal_not_an_empty_tree() {
    let f = Fixture::new();
    f.write("src/a", "1");
    backup(&f);
    if !need_strace() {
        return;
    }
    let before = state(&f);
    // strace stops each thread at its first stat of the source: the checks' thread first,
    // then the scan's, which looks at the root before it lists it: the source goes then.
    let mut run = Paused::start("statx", &f.src, "1", [&f.src, &f.dst]);
    assert!(run.stopped(), "the checks never looked at the source");
    run.resume();
    assert!(run.stopped(), "the scan never looked at the source");
    fs::rename(&f.src, f.path("moved-away")).unwrap();
    run.resume();
    let run = run.finish().expect(2);
    let cause = format!("cannot read source '{}'", f.src.display());
    assert!(run.stderr.contains(&cause), "{run:?}");
    assert!(run.stderr.contains("No such file or directory"), "{run:?}");
    assert!(before == state(&f), "DST changed");
}

#[test]
fn a_source_root_that_cannot_be_opened_is_a_refusal_not_an_empty_tree() {
    let f = Fixture::new();
    f.write("src/a", "1");
    backup(&f);
    if !need_strace() {
        return;
    }
    let before = state(&f);
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=openat"])
        .args(["-e", "inject=openat:error=ENOENT:when=1", "-P"])
        .arg(&f.src)
        .arg(assert_cmd::cargo::cargo_bin("syncease"))
        .arg(&f.src)
        .arg(&f.dst);
    let run = Run::from(cmd.output().unwrap()).expect(2);
    assert!(run.stderr.contains("refusing to sync"), "{run:?}");
    assert!(before == state(&f), "DST changed");
}

/// Run syncease on the fixture with the first `getdents64` on `dir` failing with ENOENT, as a
/// filesystem may answer for a directory that is still there.
fn with_dir_read_failing(f: &Fixture, dir: &std::path::Path, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=getdents64"])
        .args(["-e", "inject=getdents64:error=ENOENT:when=1", "-P"])
        .arg(dir)
        .arg(assert_cmd::cargo::cargo_bin("syncease"))
        .args(args)
        .arg(&f.src)
        .arg(&f.dst);
    Run::from(cmd.output().unwrap())
}

#[test]
fn a_source_root_whose_reading_fails_is_never_taken_for_empty() {
    let f = Fixture::new();
    f.write("src/a", "1");
    f.write("src/sub/b", "2");
    f.sync(&[]).expect(0);
    if !need_strace() {
        return;
    }
    let before = state(&f);
    // Even told that an empty source may empty DST.
    let run = with_dir_read_failing(&f, &f.src, &["--allow-empty-source"]).expect(2);
    let cause = format!("cannot read source '{}'", f.src.display());
    assert!(run.stderr.contains(&cause), "{run:?}");
    assert!(before == state(&f), "DST changed");
}

#[test]
fn a_folder_whose_reading_fails_but_still_exists_keeps_its_copy() {
    let f = Fixture::new();
    f.write("src/a", "1");
    f.write("src/sub/b", "2");
    f.sync(&[]).expect(0);
    if !need_strace() {
        return;
    }
    // Its files, modes and times (the folder's own time is set again, to the same value).
    let before = Manifest::of(&f.dst);
    let run = with_dir_read_failing(&f, &f.path("src/sub"), &[]).expect(1);
    assert!(run.stderr.contains("sub"), "{run:?}");
    assert!(run.stderr.contains("No such file or directory"), "{run:?}");
    assert!(before == Manifest::of(&f.dst), "DST changed");
}

#[test]
fn naming_the_source_folder_itself_as_rsync_users_do_is_refused() {
    // `syncease photos backup/`, meant as "into backup/": nothing in backup/ is in photos/.
    let f = Fixture::new();
    f.write("src/2026/img.jpg", "photo");
    f.write("dst/documents/cv.pdf", "cv");
    f.write("dst/music/song.ogg", "song");
    let before = state(&f);
    let run = f.sync(&[]).expect(2);
    let hint = format!("Did you mean '{}'?", f.dst.join("src").display());
    assert!(run.stderr.contains(&hint), "{run:?}");
    assert!(run.stderr.contains("all 2 entries"), "{run:?}");
    assert!(run.stderr.contains("--allow-unrelated"), "{run:?}");
    assert!(before == state(&f), "DST changed");
    // A dry run is refused the same way; --no-delete deletes nothing, so it goes ahead.
    f.sync(&["-n"]).expect(2);
    f.sync(&["--no-delete"]).expect(0);
    assert!(f.path("dst/music/song.ogg").exists());
    fs::remove_dir_all(f.path("dst/2026")).unwrap();
    f.sync(&["--allow-unrelated"]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn no_delete_never_empties_a_directory_that_a_file_would_replace() {
    let f = Fixture::new();
    f.write("src/x", "new");
    f.write("dst/x/user-only.txt", "precious");
    let run = f.sync(&["--no-delete"]).expect(1);
    let error = format!(
        "cannot replace directory '{}': --no-delete keeps",
        f.dst.join("x").display()
    );
    assert!(run.stderr.contains(&error), "{run:?}");
    assert_eq!(
        fs::read(f.dst.join("x/user-only.txt")).unwrap(),
        b"precious"
    );
    // A dry run says the same.
    let dry = f.sync(&["--no-delete", "-n"]).expect(1);
    assert!(dry.stderr.contains(&error), "{dry:?}");
}

#[test]
fn an_excluded_entry_keeps_the_directory_a_file_would_replace() {
    let f = Fixture::new();
    f.write("src/x", "new");
    f.write("src/other", "o");
    f.write("dst/x/notes.keep", "keep");
    f.write("dst/x/stale.txt", "stale");
    f.write("dst/other", "o");
    let run = f.sync(&["--exclude", "*.keep"]).expect(1);
    assert!(run.stderr.contains("still holds entries"), "{run:?}");
    assert_eq!(fs::read(f.dst.join("x/notes.keep")).unwrap(), b"keep");
    assert!(!f.dst.join("x/stale.txt").exists(), "not excluded: deleted");
}

#[test]
fn a_directory_replaced_by_a_file_goes_to_the_backup_entry_by_entry() {
    let f = Fixture::new();
    f.write("src/x", "new");
    f.write("dst/x/a/deep.txt", "deep");
    f.write("dst/x/b.txt", "b");
    let backup = f.path("backup");
    f.sync(&["--backup-dir", backup.to_str().unwrap()])
        .expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!(fs::read(backup.join("x/a/deep.txt")).unwrap(), b"deep");
    assert_eq!(fs::read(backup.join("x/b.txt")).unwrap(), b"b");
}

#[test]
fn max_delete_counts_what_a_replaced_directory_holds() {
    let f = Fixture::new();
    f.write("src/x", "new");
    f.write("dst/x/a", "1");
    f.write("dst/x/b", "2");
    // x/a, x/b and x itself.
    let run = f.sync(&["--max-delete", "2"]).expect(1);
    assert!(run.stderr.contains("3 deletions planned"), "{run:?}");
    assert!(f.dst.join("x/a").exists() && f.dst.join("x/b").exists());
    f.sync(&["--max-delete", "3"]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn a_source_entry_that_is_skipped_never_deletes_the_directory_at_its_path() {
    let f = Fixture::new();
    if !need_root("to make a device node") {
        return;
    }
    let made = std::process::Command::new("mknod")
        .arg(f.path("src/x"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    f.write("src/other", "o");
    f.write("dst/x/inside.txt", "kept");
    f.write("dst/other", "o");
    // A user cannot make a device node: it is skipped, and what DST has at its path stays.
    let run = run_unprivileged(&f, [&f.src, &f.dst]).expect(0);
    assert!(run.stderr.contains("skipping"), "{run:?}");
    assert_eq!(fs::read(f.dst.join("x/inside.txt")).unwrap(), b"kept");
}

/// A bind mount made for one test, undone when dropped.
struct Bind(std::path::PathBuf);

impl Bind {
    /// Mount `from` (a folder or a file) at `at`, made as a folder where nothing is.
    fn mount(from: &std::path::Path, at: &std::path::Path) -> Bind {
        if fs::symlink_metadata(at).is_err() {
            fs::create_dir_all(at).unwrap();
        }
        let made = std::process::Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(at)
            .status()
            .unwrap();
        assert!(made.success(), "mount --bind");
        Bind(at.to_path_buf())
    }
}

impl Bind {
    /// Mount a small tmpfs at `at` (made where nothing is), undone when dropped.
    fn tmpfs(at: &std::path::Path) -> Bind {
        fs::create_dir_all(at).unwrap();
        let made = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(made.success(), "mount -t tmpfs");
        Bind(at.to_path_buf())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_backup_folder_named_below_the_destination_is_refused_where_a_bind_mount_leads_into_the_source()
{
    let f = Fixture::new();
    if !need_root("to bind-mount a directory") {
        return;
    }
    f.write("src/k", "k");
    f.write("dst/k", "k");
    f.write("dst/del", "to be kept in the backup");
    // DST/x is SRC, seen through a bind mount: a backup folder there would be inside SRC.
    let _bind = Bind::mount(&f.src, &f.dst.join("x"));
    let src_before = snapshot(&f.src);
    let run = f.sync(&["--backup-dir=x/.old"]).expect(2);
    assert!(run.stderr.contains("mounted twice"), "{run:?}");
    assert_eq!(src_before, snapshot(&f.src));
    assert!(f.dst.join("del").exists());
}

#[test]
fn a_bind_mount_of_the_source_inside_the_destination_never_deletes_from_the_source() {
    let f = Fixture::new();
    if !need_root("to bind-mount a directory") {
        return;
    }
    f.write("src/k", "k");
    f.write("src/sub/photo.jpg", "photo");
    f.write("dst/k", "k");
    f.write("dst/old", "old");
    // DST/x is SRC, and DST/sub/y is SRC/sub: listed in DST, their entries are ones SRC has
    // not got at those paths, so deleting them would delete SRC's own files.
    let _whole = Bind::mount(&f.src, &f.dst.join("x"));
    let _part = Bind::mount(&f.src.join("sub"), &f.dst.join("nested/y"));
    let src_before = snapshot(&f.src);
    let dst_before = snapshot(&f.dst);
    for options in [&[][..], &["--no-delete"], &["-x"], &["--delete-excluded"]] {
        let run = f.sync(options).expect(2);
        assert!(run.stderr.contains("mounted twice"), "{options:?}: {run:?}");
        assert!(
            run.stderr
                .contains(&format!("'{}'", f.dst.join("x").display())),
            "{options:?}: {run:?}"
        );
        assert_eq!(src_before, snapshot(&f.src), "{options:?}");
        assert_eq!(dst_before, snapshot(&f.dst), "{options:?}");
    }
}

#[test]
fn a_bind_mount_of_a_source_folder_the_filters_leave_out_is_never_emptied() {
    let f = Fixture::new();
    if !need_root("to bind-mount a directory") {
        return;
    }
    f.write("src/k", "k");
    f.write("src/a/f2", "new");
    f.write("src/cache/blob", "not to be mirrored, not to be lost");
    let old = f.write("src/cache/f2", "older, in the source");
    set_mtime(&old, 1_500_000_000, 0);
    f.write("dst/k", "k");
    let src_before = snapshot(&f.src);
    let refused = |run: Run, dst: &std::path::Path| {
        assert!(run.stderr.contains("mounted twice"), "{run:?}");
        let (src, dst) = (f.src.join("cache"), dst.display());
        assert!(
            run.stderr.contains(&format!(
                "'{}' and destination folder '{dst}'",
                src.display()
            )),
            "{run:?}"
        );
        assert_eq!(src_before, snapshot(&f.src));
    };
    // SRC/cache is left out of the mirror; DST/x shows it again under a name not left out,
    // whose entries would be deleted.
    {
        let _bind = Bind::mount(&f.src.join("cache"), &f.dst.join("x"));
        refused(f.sync(&["--exclude=/cache"]).expect(2), &f.dst.join("x"));
    }
    // DST/a shows it where SRC has a folder: SRC/a/f2 would be written over SRC/cache/f2,
    // even without deletions.
    {
        let _bind = Bind::mount(&f.src.join("cache"), &f.dst.join("a"));
        let run = f.sync(&["--no-delete", "--exclude=/cache"]).expect(2);
        refused(run, &f.dst.join("a"));
    }
    // The destination root itself is SRC/cache.
    let alias = f.path("alias");
    let _bind = Bind::mount(&f.src.join("cache"), &alias);
    let exclude = std::ffi::OsStr::new("--exclude=/cache");
    let run = f.run([f.src.as_os_str(), alias.as_os_str(), exclude]);
    refused(run.expect(2), &alias);
}

#[test]
fn a_backup_folder_mounted_from_a_source_folder_is_refused() {
    let f = Fixture::new();
    if !need_root("to bind-mount a directory") {
        return;
    }
    f.write("src/f1", "v1");
    f.write("src/c/x", "the source's own");
    f.sync(&[]).expect(0);
    f.write("src/f1", "v2, longer");
    let src_before = snapshot(&f.src);
    // Outside DST, and inside it (where the filters leave SRC/c out of the listing).
    let outside = f.path("bk");
    for (at, option) in [
        (outside.clone(), outside.clone()),
        (f.dst.join("bk"), "bk".into()),
    ] {
        let _bind = Bind::mount(&f.src.join("c"), &at);
        let option = format!("--backup-dir={}", option.display());
        let run = f.sync(&[option.as_str(), "--exclude=/c"]).expect(2);
        // Inside DST, the mount is found there first.
        let why = [
            "is inside the source, mounted a second time",
            "mounted twice",
        ];
        assert!(why.iter().any(|w| run.stderr.contains(w)), "{run:?}");
        assert_eq!(src_before, snapshot(&f.src));
    }
}

#[test]
fn a_source_file_mounted_over_a_destination_file_is_never_changed() {
    let f = Fixture::new();
    if !need_root("to bind-mount a file") {
        return;
    }
    let h = f.write("src/h", "same");
    chmod(&h, 0o600);
    set_mtime(&h, 1_500_000_000, 0);
    let other = f.write("src/other", "same");
    std::os::unix::fs::chown(&other, Some(1234), Some(1234)).unwrap();
    set_mtime(&other, 1_600_000_000, 0);
    f.sync(&[]).expect(0);
    // DST/h is SRC/other: a mode, owner or time fix of h would change SRC/other.
    let _bind = Bind::mount(&other, &f.dst.join("h"));
    let src_before = snapshot(&f.src);
    let run = f.sync(&["-c"]).expect(2);
    assert!(run.stderr.contains("mounted twice"), "{run:?}");
    assert_eq!(src_before, snapshot(&f.src));
    let meta = fs::metadata(&other).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o644, 1234));
}

#[test]
fn an_overlay_in_the_destination_that_writes_into_the_source_is_refused() {
    let f = Fixture::new();
    if !need_root("to mount an overlay") {
        return;
    }
    f.write("src/f1", "1");
    f.write("src/a/f2", "the source's own");
    f.mkdir("lower");
    f.sync(&[]).expect(0);
    std::os::unix::fs::symlink(&f.src, f.path("alias")).unwrap();
    // DST/yN is an overlay whose upper layer, where every change goes, is SRC/a. The table of
    // mounts shows that path as it was given: plain, relative, or through a symlink.
    let src = f.src.display().to_string();
    for (n, upper) in [format!("{src}/a"), "src/a".into(), "alias/a".into()]
        .iter()
        .enumerate()
    {
        f.mkdir(format!("work{n}"));
        let y = f.dst.join(format!("y{n}"));
        fs::create_dir(&y).unwrap();
        let options = format!("lowerdir=lower,upperdir={upper},workdir=work{n}");
        let mounted = std::process::Command::new("mount")
            .current_dir(f.path(""))
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&y)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount -t overlay -o {options}");
        let overlay = Bind(y.clone());
        let src_before = snapshot(&f.src);
        let run = f.sync(&[]).expect(2);
        assert!(run.stderr.contains("mounted twice"), "{upper}: {run:?}");
        assert!(
            run.stderr.contains(&format!("'{}'", y.display())),
            "{upper}: {run:?}"
        );
        drop(overlay);
        assert_eq!(src_before, snapshot(&f.src), "{upper}");
    }
}

#[test]
fn a_mount_hidden_under_a_later_one_is_no_reason_to_refuse() {
    let f = Fixture::new();
    if !need_root("to mount a tmpfs") {
        return;
    }
    // SRC/m is DST, bound there and then hidden: a tmpfs mounted over SRC itself.
    fs::create_dir_all(&f.dst).unwrap();
    let _bind = Bind::mount(&f.dst, &f.src.join("m"));
    let _over = Bind::tmpfs(&f.src);
    f.write("src/f1", "1");
    f.sync(&[]).expect(0);
    assert_eq!(fs::read(f.dst.join("f1")).unwrap(), b"1");
}

#[test]
fn a_mount_x_leaves_out_of_the_source_is_never_emptied_through_the_destination() {
    let f = Fixture::new();
    if !need_root("to mount a tmpfs") {
        return;
    }
    // SRC/m is another filesystem, which -x does not enter; DST/y shows a folder of it again.
    let other = f.path("other");
    let _other = Bind::tmpfs(&other);
    f.write("other/data/sub/kept", "precious");
    f.write("src/k", "k");
    let _m = Bind::mount(&other.join("data"), &f.src.join("m"));
    // DST is on that filesystem too, so -x enters DST/y.
    let dst = other.join("dst");
    let args = ["-x", "-q"].map(std::ffi::OsStr::new);
    let run =
        |dst: &std::path::Path| f.run([&args[..], &[f.src.as_os_str(), dst.as_os_str()]].concat());
    run(&dst).expect(0);
    let _y = Bind::mount(&other.join("data/sub"), &dst.join("y"));
    let run = run(&dst).expect(2);
    assert!(run.stderr.contains("mounted twice"), "{run:?}");
    assert_eq!(fs::read(other.join("data/sub/kept")).unwrap(), b"precious");
}

#[test]
fn one_mount_at_the_same_place_on_both_sides_is_left_alone_with_x() {
    let f = Fixture::new();
    if !need_root("to mount a tmpfs") {
        return;
    }
    let shared = f.path("shared");
    let _shared = Bind::tmpfs(&shared);
    f.write("shared/inside", "neither side's");
    f.write("src/f1", "1");
    f.sync(&[]).expect(0);
    // Two chroots with one filesystem bound in at the same place: -x enters neither.
    let _in_src = Bind::mount(&shared, &f.src.join("m"));
    let _in_dst = Bind::mount(&shared, &f.dst.join("m"));
    let run = f.sync(&["-x", "-v"]).expect(0);
    assert!(!run.stdout.contains("inside"), "{run:?}");
    assert_eq!(fs::read(shared.join("inside")).unwrap(), b"neither side's");
    // Without -x both are entered: one folder on both sides.
    f.sync(&[]).expect(2);
}

#[test]
fn a_bind_mount_made_after_the_checks_is_refused_before_anything_changes() {
    if !need_root("to bind-mount a directory") || !need_strace() {
        return;
    }
    let f = Fixture::new();
    f.write("src/k", "k");
    f.write("src/sub/photo.jpg", "photo");
    f.write("dst/k", "k");
    let src_before = snapshot(&f.src);
    // Stopped when DST is opened to be locked, after the table of mounts was read.
    let args = [f.src.as_os_str(), f.dst.as_os_str()];
    let mut run = Paused::start("openat", &f.dst, "1", args);
    assert!(run.stopped(), "DST was never opened");
    let _bind = Bind::mount(&f.src.join("sub"), &f.dst.join("x"));
    // Each thread stops at its first opening of DST: the listing's too.
    run.resume();
    while run.stopped() {
        run.resume();
    }
    let run = run.finish().expect(2);
    assert!(run.stderr.contains("mounted twice"), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("'{}'", f.dst.join("x").display())),
        "{run:?}"
    );
    assert_eq!(src_before, snapshot(&f.src));
}

#[test]
fn a_mount_made_during_the_run_is_never_deleted_through() {
    if !need_root("to bind-mount a directory") || !need_strace() {
        return;
    }
    let f = Fixture::new();
    f.write("src/photos/old.jpg", "precious");
    f.write("src/k", "k");
    f.write("dst/k", "k");
    // Listed in DST alone: x and x/old.jpg are to be deleted.
    f.write("dst/x/old.jpg", "stale");
    let mut bind = None;
    let mut src_before = None;
    let run = between_listing_and_fixes(&f, || {
        src_before = Some(snapshot(&f.src));
        bind = Some(Bind::mount(&f.src.join("photos"), &f.dst.join("x")));
    });
    let run = run.expect(1);
    assert_eq!(src_before.unwrap(), snapshot(&f.src), "{run:?}");
    assert!(
        run.stderr
            .contains("a filesystem was mounted on 'x' during the run"),
        "{run:?}"
    );
    assert!(f.dst.join("photos/old.jpg").is_file());
    drop(bind);
    // Once the mount is gone, the next run deletes what was listed there.
    f.sync(&[]).expect(0);
    assert!(!f.dst.join("x").exists());
}

#[test]
fn a_file_or_folder_mounted_on_during_the_run_never_gets_its_fixes() {
    if !need_root("to bind-mount a file") || !need_strace() {
        return;
    }
    let f = Fixture::new();
    let a = f.write("src/a", "same contents");
    let d = f.mkdir("src/d");
    f.sync(&[]).expect(0);
    chmod(&a, 0o600);
    chmod(&d, 0o700);
    let outside_file = f.write("outside/file", "not DST's");
    let outside_dir = f.mkdir("outside/dir");
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().mode() & 0o7777;
    let before = (mode(&outside_file), mode(&outside_dir));
    let mut binds = Vec::new();
    let run = between_listing_and_fixes(&f, || {
        binds.push(Bind::mount(&outside_file, &f.dst.join("a")));
        binds.push(Bind::mount(&outside_dir, &f.dst.join("d")));
    });
    let run = run.expect(1);
    for name in ["a", "d"] {
        let said = format!("a filesystem was mounted on '{name}' during the run");
        assert!(run.stderr.contains(&said), "{run:?}");
    }
    assert_eq!(before, (mode(&outside_file), mode(&outside_dir)));
}

#[test]
fn a_bind_mount_of_the_destination_inside_the_source_is_refused() {
    let f = Fixture::new();
    if !need_root("to bind-mount a directory") {
        return;
    }
    f.write("src/k", "new");
    f.write("dst/k", "old");
    f.write("dst/only", "kept");
    // SRC/x is DST: its copy would be written into DST while DST is read as SRC.
    let _bind = Bind::mount(&f.dst, &f.src.join("x"));
    let dst_before = snapshot(&f.dst);
    let run = f.sync(&[]).expect(2);
    assert!(run.stderr.contains("mounted twice"), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("'{}'", f.src.join("x").display())),
        "{run:?}"
    );
    assert_eq!(dst_before, snapshot(&f.dst));
}

#[test]
fn one_tree_seen_through_a_bind_mount_is_refused_like_the_same_path() {
    let f = Fixture::new();
    if !need_root("to bind-mount a directory") {
        return;
    }
    f.write("outer/src/photo.jpg", "photo");
    f.write("outer/unrelated.txt", "kept");
    let _bind = Bind::mount(&f.path("outer"), &f.path("alias"));
    let src = f.path("outer/src");
    let src_before = snapshot(&src);
    // DST is SRC's parent seen through the bind mount: the mirror would delete SRC.
    let run = f
        .run([src.as_os_str(), f.path("alias").as_os_str()])
        .expect(2);
    assert!(run.stderr.contains("is inside destination"), "{run:?}");
    // DST below SRC, reached through the bind mount.
    let inside = f.path("alias/src/backup");
    let run = f.run([src.as_os_str(), inside.as_os_str()]).expect(2);
    assert!(run.stderr.contains("is inside source"), "{run:?}");
    // The same directory by two paths.
    let same = f.path("alias/src");
    let run = f.run([src.as_os_str(), same.as_os_str()]).expect(2);
    assert!(run.stderr.contains("the same directory"), "{run:?}");
    // A backup directory inside SRC through the bind mount.
    let run = f
        .run([
            src.as_os_str(),
            f.path("dst").as_os_str(),
            "--backup-dir".as_ref(),
            f.path("alias/src/old").as_os_str(),
        ])
        .expect(2);
    assert!(run.stderr.contains("is inside the source"), "{run:?}");
    assert!(src_before == snapshot(&src), "SRC changed");
    assert!(f.path("outer/unrelated.txt").exists());
}

#[test]
fn the_log_file_is_appended_to_and_a_refused_run_leaves_its_reason_there() {
    let f = Fixture::new();
    f.write("src/a", "1");
    let log = f.write("sync.log", "an earlier run's line\n");
    let arg = log.to_str().unwrap();
    f.sync(&["--log-file", arg]).expect(0);
    let missing = f.path("missing");
    f.run([
        "--log-file",
        arg,
        missing.to_str().unwrap(),
        f.dst.to_str().unwrap(),
    ])
    .expect(2);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("an earlier run's line\n"), "{text}");
    assert!(text.contains("1 copied"), "{text}");
    assert!(
        text.contains("refusing to sync") && text.contains("does not exist"),
        "{text}"
    );
}

#[test]
fn a_log_file_inside_the_source_or_the_destination_is_refused() {
    let f = Fixture::new();
    f.write("src/a", "1");
    f.sync(&[]).expect(0);
    let before = (state(&f), Manifest::of(&f.src));
    for inside in ["src/sync.log", "dst/sync.log", "dst/new/dir/sync.log"] {
        let log = f.path(inside);
        let run = f.sync(&["--log-file", log.to_str().unwrap()]).expect(2);
        assert!(run.stderr.contains("log file"), "{run:?}");
        assert!(!log.exists(), "{inside} was created");
    }
    assert!(
        before == (state(&f), Manifest::of(&f.src)),
        "a tree changed"
    );
}

#[test]
fn a_directory_named_like_a_temporary_is_mirrored_not_swept() {
    let f = Fixture::new();
    f.write("src/.syncease-x.tmp/inside", "data");
    f.write("src/plain", "p");
    f.sync(&[]).expect(0);
    f.write("dst/stale-dir/.syncease-y.tmp/kept-by-nobody", "old");
    let run = f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    f.sync(&[]).expect(0);
    assert!(!run.stderr.contains("error"), "{run:?}");
}

#[test]
fn a_destination_directory_that_cannot_be_listed_withholds_deletions() {
    let f = Fixture::new();
    f.write("src/keep", "k");
    f.write("dst/keep", "k");
    f.write("dst/extra", "only in dst");
    f.write("dst/locked/unknown", "never listed");
    chmod(&f.path("dst/locked"), 0o000);
    let run = run_unprivileged(&f, [&f.src, &f.dst]).expect(1);
    chmod(&f.path("dst/locked"), 0o755);
    let locked = f.dst.join("locked");
    let cause = format!("cannot read directory '{}'", locked.display());
    assert!(run.stderr.contains(&cause), "{run:?}");
    assert!(
        run.stderr
            .contains("the destination could not be listed completely"),
        "{run:?}"
    );
    assert!(f.dst.join("extra").exists() && f.dst.join("locked/unknown").exists());
}

#[test]
fn a_read_only_directory_that_only_the_destination_has_is_deleted() {
    let f = Fixture::new();
    f.write("src/keep", "k");
    f.write("dst/keep", "k");
    f.write("dst/ro/inner/f", "x");
    f.write("dst/ro/g", "y");
    chmod(&f.path("dst/ro/inner"), 0o500);
    chmod(&f.path("dst/ro"), 0o555);
    run_unprivileged(&f, [&f.src, &f.dst]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn a_users_setuid_program_never_becomes_roots() {
    use std::os::unix::fs::{lchown, MetadataExt};
    let f = Fixture::new();
    if !need_root("to copy another user's files") {
        return;
    }
    // (chown clears the bits: it comes first)
    let theirs = f.write("src/theirs", "#!/bin/sh\n");
    lchown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&theirs, 0o4755);
    let group = f.write("src/group", "#!/bin/sh\n");
    lchown(&group, Some(0), Some(NOBODY)).unwrap();
    chmod(&group, 0o2755);
    let own = f.write("src/own", "#!/bin/sh\n");
    chmod(&own, 0o6755);
    let meta = |dst: &std::path::Path, name: &str| {
        let m = fs::metadata(dst.join(name)).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    // Owners kept (root's default): every copy is its source's, bits and all.
    f.sync(&[]).expect(0);
    assert_eq!(meta(&f.dst, "theirs"), (0o4755, NOBODY, NOBODY));
    assert_eq!(meta(&f.dst, "group"), (0o2755, 0, NOBODY));
    assert_eq!(meta(&f.dst, "own"), (0o6755, 0, 0));
    // Owners not kept: the copies are root's, and others' programs lose their bits.
    let bare = f.path("bare");
    let args = [
        "--no-owner",
        "--no-group",
        f.src.to_str().unwrap(),
        bare.to_str().unwrap(),
    ];
    let run = f.run(args).expect(0);
    assert_eq!(meta(&bare, "theirs"), (0o755, 0, 0));
    assert_eq!(meta(&bare, "group"), (0o755, 0, 0));
    assert_eq!(
        meta(&bare, "own"),
        (0o6755, 0, 0),
        "root's own program keeps its bits"
    );
    for name in ["theirs", "group"] {
        let warning = format!(
            "setuid/setgid bits off the copy of '{}'",
            f.src.join(name).display()
        );
        assert!(run.stderr.contains(&warning), "{run:?}");
    }
    // The mirror converges: nothing to write, nothing to warn about.
    let before = identity(&bare);
    let again = f.run(args).expect(0);
    assert!(!again.stderr.contains("warning"), "{again:?}");
    assert_eq!(before, identity(&bare));
}

#[test]
fn owners_and_groups_are_kept_by_number_as_root() {
    use std::os::unix::fs::{lchown, MetadataExt};
    let f = Fixture::new();
    if !need_root("to give files away") {
        return;
    }
    f.write("src/theirs.txt", "t");
    f.write("src/sub/deep.txt", "d");
    f.symlink("src/link", "theirs.txt");
    // Ids no account has: kept by number.
    for (rel, uid, gid) in [
        ("theirs.txt", 1234, 5678),
        ("sub", 4321, 8765),
        ("sub/deep.txt", NOBODY, 0),
    ] {
        lchown(f.src.join(rel), Some(uid), Some(gid)).unwrap();
    }
    lchown(f.src.join("link"), Some(1234), Some(1234)).unwrap();
    lchown(&f.src, Some(NOBODY), Some(NOBODY)).unwrap();
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    let before = identity(&f.dst);
    let noop = f.sync(&["-v"]).expect(0);
    assert_eq!(noop.stdout, "", "a second run writes nothing");
    assert_eq!(before, identity(&f.dst));
    // An owner or group changed alone is fixed in place, with its reason.
    lchown(f.src.join("theirs.txt"), Some(1), None).unwrap();
    lchown(f.src.join("sub/deep.txt"), None, Some(42)).unwrap();
    lchown(f.src.join("link"), Some(7), None).unwrap();
    let ino = fs::metadata(f.dst.join("theirs.txt")).unwrap().ino();
    let run = f.sync(&["-v"]).expect(0);
    assert_eq!(
        run.stdout,
        ".l owner  link\n.f group  sub/deep.txt\n.f owner  theirs.txt\n"
    );
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert_eq!(ino, fs::metadata(f.dst.join("theirs.txt")).unwrap().ino());
    // --no-owner and --no-group leave DST's owners alone.
    lchown(f.src.join("theirs.txt"), Some(2), Some(3)).unwrap();
    let run = f.sync(&["-v", "--no-owner", "--no-group"]).expect(0);
    assert_eq!(run.stdout, "");
    assert_eq!(fs::metadata(f.dst.join("theirs.txt")).unwrap().uid(), 1);
}

#[test]
fn a_user_keeps_the_groups_it_is_in_and_no_others() {
    use std::os::unix::fs::{lchown, MetadataExt};
    let f = Fixture::new();
    if !need_root("to run as a user with a supplementary group") {
        return;
    }
    let bin = f.path("syncease-bin");
    install_executable(&assert_cmd::cargo::cargo_bin("syncease"), &bin);
    f.write("src/users.txt", "in group 100");
    f.write("src/roots.txt", "in group 0");
    chmod(f.dir.path(), 0o755);
    for path in [f.dir.path(), &f.src, &bin] {
        lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    lchown(f.src.join("users.txt"), Some(NOBODY), Some(100)).unwrap();
    lchown(f.src.join("roots.txt"), Some(NOBODY), Some(0)).unwrap();
    let run = || {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--groups=100", "--"])
            .arg(&bin)
            .arg(&f.src)
            .arg(&f.dst)
            .output()
            .unwrap();
        Run::from(out)
    };
    run().expect(0);
    let gid = |name: &str| fs::metadata(f.dst.join(name)).unwrap().gid();
    assert_eq!(gid("users.txt"), 100, "a group the user is in is kept");
    assert_eq!(gid("roots.txt"), NOBODY, "another group cannot be given");
    let before = identity(&f.dst);
    run().expect(0);
    assert_eq!(before, identity(&f.dst), "and the mirror converges");
}

#[test]
fn a_user_leaves_the_owner_and_group_of_entries_another_user_owns() {
    use std::os::unix::fs::lchown;
    let f = Fixture::new();
    if !need_root("to run as a user over entries root owns") {
        return;
    }
    f.write("src/a", "same");
    f.write("dst/a", "same");
    let bin = handed_to(&f, NOBODY);
    // DST and its file are root's (DST open to all, as a shared folder is); SRC is the user's.
    for path in [&f.dst, &f.dst.join("a")] {
        lchown(path, Some(0), Some(0)).unwrap();
    }
    for root in [&f.src, &f.dst] {
        chmod(root, 0o777);
    }
    for path in [
        f.src.join("a"),
        f.dst.join("a"),
        f.src.clone(),
        f.dst.clone(),
    ] {
        set_mtime(&path, 1_600_000_000, 0);
    }
    let run = || {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .arg("-v")
            .arg(&f.src)
            .arg(&f.dst)
            .output()
            .unwrap();
        Run::from(out)
    };
    // Only root could change them: nothing to do, and no error run after run.
    for _ in 0..2 {
        let run = run().expect(0);
        assert_eq!(run.stdout, "", "{run:?}");
    }
}

#[test]
fn a_users_own_setuid_program_keeps_its_bits() {
    use std::os::unix::fs::MetadataExt;
    let f = Fixture::new();
    let own = f.write("src/own", "#!/bin/sh\n");
    let mut cmd = unprivileged(&f);
    // After the fixture is handed to the user: chown clears the bit.
    chmod(&own, 0o4755);
    Run::from(cmd.arg(&f.src).arg(&f.dst).output().unwrap()).expect(0);
    assert_eq!(
        fs::metadata(f.dst.join("own")).unwrap().mode() & 0o7777,
        0o4755
    );
}

/// SRC with a file the first run stops at (under strace), and a few others.
fn stopped_first_run(f: &Fixture) -> Paused {
    f.write("src/a.txt", "a");
    let stop_here = f.write("src/b.txt", "b");
    f.write("src/c.txt", "c");
    f.write("dst/a.txt", "older a");
    let mut first = Paused::start("copy_file_range", &stop_here, "1", [&f.src, &f.dst]);
    assert!(first.stopped(), "the first run never copied b.txt");
    first
}

#[test]
fn a_second_run_into_the_same_destination_is_refused_naming_the_first() {
    let f = Fixture::new();
    if !need_strace() {
        return;
    }
    let first = stopped_first_run(&f);
    let before = state(&f);
    let second = f.sync(&[]).expect(2);
    let holder = format!("another syncease run (PID {})", first.pid());
    assert!(second.stderr.contains(&holder), "{second:?}");
    assert!(second.stderr.contains("--wait-lock"), "{second:?}");
    assert!(before == state(&f), "the refused run changed DST");
    first.resume();
    first.finish().expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn wait_lock_waits_for_the_run_that_holds_the_destination() {
    use std::io::BufRead;
    let f = Fixture::new();
    if !need_strace() {
        return;
    }
    let first = stopped_first_run(&f);
    let mut second = syncease()
        .arg("--wait-lock")
        .arg(&f.src)
        .arg(&f.dst)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(second.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let waiting = format!(
        "waiting for the run (PID {}) that is writing to",
        first.pid()
    );
    assert!(line.contains(&waiting), "{line}");
    first.resume();
    first.finish().expect(0);
    assert!(second.wait().unwrap().success());
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn a_killed_run_leaves_no_lock_behind() {
    let f = Fixture::new();
    if !need_strace() {
        return;
    }
    let first = stopped_first_run(&f);
    first.signal("-KILL");
    assert_eq!(first.finish().code, -1);
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
}

#[test]
fn an_error_about_a_name_with_a_newline_stays_on_one_line() {
    let f = Fixture::new();
    let odd = f.write("src/bad\nname", "x");
    chmod(&odd, 0o000);
    let run = run_unprivileged(&f, [&f.src, &f.dst]).expect(1);
    let error = format!(
        "cannot open the source file '{}/bad\\x0aname'",
        f.src.display()
    );
    assert!(run.stderr.contains(&error), "{run:?}");
    assert!(
        run.stderr
            .lines()
            .all(|l| l.starts_with("syncease: ") || l.contains(" copied, ")),
        "{run:?}"
    );
}

#[test]
fn a_destination_directory_swapped_for_a_symlink_mid_run_is_never_written_through() {
    let f = Fixture::new();
    f.write("src/a-first.txt", "first");
    for i in 0..50 {
        f.write(format!("src/sub/f{i:02}"), format!("{i}"));
    }
    f.write("src/sub/deeper/g", "g");
    chmod(&f.path("src/sub"), 0o777);
    f.write("dst/sub/old", "old");
    f.write("dst/sub/deeper/old", "old");
    f.write("outside/precious.txt", "do not touch");
    chmod(&f.path("outside"), 0o700);
    if !need_strace() {
        return;
    }
    let outside = snapshot(&f.path("outside"));
    // One worker, files in path order: stopped while it copies a-first.txt, with sub/ listed
    // as a directory; then sub/ is swapped for a link to a directory outside DST.
    let first = f.path("src/a-first.txt");
    let args = [
        "-j".as_ref(),
        "1".as_ref(),
        f.src.as_os_str(),
        f.dst.as_os_str(),
    ];
    let mut run = Paused::start("copy_file_range", &first, "1", args);
    assert!(run.stopped(), "a-first.txt was never copied");
    fs::rename(f.dst.join("sub"), f.path("moved-away")).unwrap();
    std::os::unix::fs::symlink(f.path("outside"), f.dst.join("sub")).unwrap();
    run.resume();
    let run = run.finish().expect(1);
    assert!(run.stderr.contains("no longer a directory"), "{run:?}");
    assert!(
        outside == snapshot(&f.path("outside")),
        "something was written outside DST:\n{run:?}"
    );
    assert!(fs::symlink_metadata(f.dst.join("sub"))
        .unwrap()
        .is_symlink());
    // The next run replaces the link by a directory and converges.
    f.sync(&[]).expect(0);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&f.dst));
    assert!(outside == snapshot(&f.path("outside")));
}

/// `find`'s view of a tree that paths cannot reach (deeper than `PATH_MAX`): type, mode, size,
/// mtime and depth of every entry, in find's order (both trees are made the same way).
fn deep_listing(root: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("find")
        .args([".", "-printf", "%y %m %s %T@ %d %f\\n"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Below `root`, a chain of `depth` directories named `d`, each holding a file `f` with its
/// level, and a file `bottom` in the last: made through handles, since no path reaches it.
fn deep_chain(root: &std::path::Path, depth: u32) {
    use rustix::fs::{mkdirat, openat, Mode, OFlags};
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let file_flags = OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o755);
    let mut dir = rustix::fs::open(root, dir_flags, Mode::empty()).unwrap();
    for level in 1..=depth {
        mkdirat(&dir, "d", mode).unwrap();
        let file = openat(&dir, "f", file_flags, Mode::from_raw_mode(0o644)).unwrap();
        rustix::io::write(&file, format!("{level}\n").as_bytes()).unwrap();
        dir = openat(&dir, "d", dir_flags, Mode::empty()).unwrap();
    }
    let file = openat(&dir, "bottom", file_flags, Mode::from_raw_mode(0o644)).unwrap();
    rustix::io::write(&file, b"bottom\n").unwrap();
}

/// Remove the chain below `root`'s `levels`-th `d` (all of it for 0), one handle at a time.
fn cut_chain(root: &std::path::Path, levels: u32) {
    use rustix::fs::{openat, unlinkat, AtFlags, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, flags, Mode::empty()).unwrap();
    for _ in 0..levels {
        dir = openat(&dir, "d", flags, Mode::empty()).unwrap();
    }
    let mut depth = 0;
    while let Ok(next) = openat(&dir, "d", flags, Mode::empty()) {
        dir = next;
        depth += 1;
    }
    for _ in 0..depth {
        for name in ["f", "bottom"] {
            let _ = unlinkat(&dir, name, AtFlags::empty());
        }
        dir = openat(&dir, "..", flags, Mode::empty()).unwrap();
        unlinkat(&dir, "d", AtFlags::REMOVEDIR).unwrap();
    }
}

#[test]
fn a_tree_ten_thousand_directories_deep_is_mirrored_and_pruned() {
    let f = Fixture::new();
    // Its deepest paths are 20,000 bytes long, five times PATH_MAX.
    deep_chain(&f.src, 10_000);
    let run = f.sync(&[]).expect(0);
    assert!(run.stderr.contains("10,001 copied"), "{run:?}");
    assert_eq!(deep_listing(&f.src), deep_listing(&f.dst));
    let noop = f.sync(&["-v"]).expect(0);
    assert_eq!(noop.stdout, "", "a second run writes nothing");
    // Contents compared too: read through handles on both sides, at any depth.
    let checked = f.sync(&["-v", "--checksum"]).expect(0);
    assert_eq!(checked.stdout, "", "{checked:?}");
    // The deeper half goes: 5,000 directories and 5,000 files, deepest first.
    cut_chain(&f.src, 5_000);
    let run = f.sync(&[]).expect(0);
    assert!(run.stderr.contains("10,000 deleted"), "{run:?}");
    assert_eq!(deep_listing(&f.src), deep_listing(&f.dst));
    // The fixture's own clean-up recurses on depth: leave it nothing deep.
    cut_chain(&f.src, 0);
    cut_chain(&f.dst, 0);
}

#[test]
fn a_symlink_that_an_earlier_run_moved_into_the_backup_is_never_followed() {
    let f = Fixture::new();
    let backup = f.path("backup");
    let arg = backup.to_str().unwrap();
    f.write("src/keep", "k");
    f.write("dst/keep", "k");
    f.write("outside/existing", "outside");
    // Run 1: DST's link `a` (to a directory outside) is deleted, so it moves into the backup.
    f.symlink("dst/a", f.path("outside"));
    f.sync(&["--backup-dir", arg]).expect(0);
    assert!(fs::symlink_metadata(backup.join("a")).unwrap().is_symlink());
    // Run 2: DST has a directory `a` whose file goes: its backup slot is below the link.
    f.write("dst/a/f", "to back up");
    let outside = snapshot(&f.path("outside"));
    let run = f.sync(&["--backup-dir", arg]).expect(1);
    assert!(run.stderr.contains("no longer a directory"), "{run:?}");
    assert!(
        outside == snapshot(&f.path("outside")),
        "the backup went through the link: {run:?}"
    );
    assert_eq!(
        fs::read(f.dst.join("a/f")).unwrap(),
        b"to back up",
        "kept in place"
    );
}

#[test]
fn a_destination_that_holds_two_spellings_is_never_taken_as_case_insensitive() {
    let f = Fixture::new();
    f.write("src/A", "1");
    f.write("src/a", "2");
    f.sync(&[]).expect(0);
    // A file of the user's own in DST, and a new source name that differs from it in case.
    f.write("dst/notes", "the user's own notes");
    f.write("src/Notes", "a new file");
    let run = f.sync(&["--no-delete", "-v", "--json"]).expect(0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["destination"]["case_sensitive"], true, "{run:?}");
    assert_eq!(
        fs::read(f.dst.join("notes")).unwrap(),
        b"the user's own notes"
    );
    assert_eq!(fs::read(f.dst.join("Notes")).unwrap(), b"a new file");
    // The twin left out by a filter still tells: another file answers the other spelling.
    let run = f.sync(&["--exclude", "a", "--json"]).expect(0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["destination"]["case_sensitive"], true, "{run:?}");
    assert_eq!(fs::read(f.dst.join("a")).unwrap(), b"2");
}

#[test]
fn a_copy_never_keeps_an_acl_its_destination_directory_would_give_it() {
    if !need("setfacl", "acl") {
        return;
    }
    let f = Fixture::new();
    let shared = f.mkdir("src/shared");
    f.write("src/shared/plain", "a");
    let setfacl = |args: &[&str], path: &std::path::Path| {
        let ok = std::process::Command::new("setfacl")
            .args(args)
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success());
    };
    // The directory's default ACL lets nobody in; the file's own ACL does not.
    setfacl(&["-d", "-m", "u:nobody:rwx"], &shared);
    setfacl(&["-b"], &f.path("src/shared/plain"));
    f.sync(&["-A"]).expect(0);
    let secret = f.write("src/shared/secret", "TOPSECRET");
    chmod(&secret, 0o640);
    setfacl(&["-b"], &secret);
    f.sync(&["-A"]).expect(0);
    let acl = std::process::Command::new("getfacl")
        .args(["-p", "-c"])
        .arg(f.dst.join("shared/secret"))
        .output()
        .unwrap();
    let acl = String::from_utf8_lossy(&acl.stdout);
    assert!(!acl.contains("nobody"), "the copy inherited an ACL:\n{acl}");
    assert_eq!(f.sync(&["-A", "-v"]).expect(0).stdout, "");
}

#[test]
fn an_attribute_the_destination_refuses_costs_the_attribute_not_the_file() {
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    let file = f.write("src/report.txt", "version 1");
    if xattr_set(&file, "user.comment", b"kept").is_err() {
        not_tested("the temporary directory's filesystem has no user attributes");
        return;
    }
    f.write("src/other.txt", "o");
    f.write("dst/other.txt", "o");
    f.write("dst/gone.txt", "only in dst");
    // The destination refuses the copy's attribute (as one too large for it, or not allowed);
    // the one worker's first fsetxattr is the probe's, which is let through.
    let args = [
        "-X".as_ref(),
        "-j".as_ref(),
        "1".as_ref(),
        f.src.as_os_str(),
        f.dst.as_os_str(),
    ];
    let run = with_fault("fsetxattr", "error=EPERM:when=2+", args).expect(0);
    assert!(
        run.stderr.contains("refused some extended attributes"),
        "{run:?}"
    );
    assert_eq!(fs::read(f.dst.join("report.txt")).unwrap(), b"version 1");
    assert!(
        !f.dst.join("gone.txt").exists(),
        "deletions go ahead: {run:?}"
    );
}

fn xattr_set(path: &std::path::Path, name: &str, value: &[u8]) -> rustix::io::Result<()> {
    rustix::fs::setxattr(path, name, value, rustix::fs::XattrFlags::empty())
}

#[test]
fn a_destination_root_that_cannot_be_written_is_known_by_its_filesystem() {
    if !need_root("an immutable destination root") {
        return;
    }
    let f = Fixture::new();
    f.write("src/sub/keep", "k");
    f.write("dst/sub/keep", "k");
    f.write(
        "dst/sub/gone",
        "deletable: DST is of a kind that compares names byte for byte",
    );
    // The roots as the mirror has them: a root whose time differs would be fixed, which an
    // immutable root refuses (their times came from the clock's tick, one apart under load).
    set_mtime(&f.src, 1_600_000_000, 123_456_789);
    set_mtime(&f.dst, 1_600_000_000, 123_456_789);
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(&f.dst)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        not_tested("chattr +i on the temporary directory's filesystem");
        return;
    }
    // Nothing can be made in the root, so no probe file can: the filesystem (tmpfs, ext4,
    // XFS, btrfs) holds everything, and the dry run and the real run agree.
    let (dry, run) = (f.sync(&["-n"]), f.sync(&["-v"]));
    chattr("-i");
    let (dry, run) = (dry.expect(0), run.expect(0));
    assert!(
        dry.stdout.contains("gone") && run.stdout.contains("gone"),
        "{dry:?} {run:?}"
    );
    assert!(!f.dst.join("sub/gone").exists());
    assert!(!run.stderr.contains("probe"), "{run:?}");
}

#[test]
fn a_root_that_cannot_be_written_on_a_filesystem_of_whole_seconds_is_compared_so() {
    let f = Fixture::new();
    f.write("src/sub/a", "a");
    set_mtime(&f.path("src/sub/a"), 1_600_000_000, 123_456_789);
    set_mtime(&f.path("src/sub"), 1_600_000_000, 0);
    if !is_root() {
        not_tested("needs root to mount an image and hand folders to another user");
        return;
    }
    let bin = handed_to(&f, NOBODY);
    let Some(disk) = Mounted::new(&f, Fs::Ext4Seconds) else {
        return;
    };
    // Both roots are read-only (the run opens one up only to write in it): the user may
    // write in sub only.
    let dst = disk.path().join("dst");
    fs::create_dir_all(dst.join("sub")).unwrap();
    for dir in [&dst, &dst.join("sub")] {
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    chmod(&f.src, 0o555);
    chmod(&dst, 0o555);
    set_mtime(&dst, 1_600_000_000, 0);
    set_mtime(&f.src, 1_600_000_000, 0);
    let sync = || {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .arg("-v")
            .arg(&f.src)
            .arg(&dst)
            .output()
            .unwrap();
        Run::from(out)
    };
    let first = sync().expect(0);
    assert_eq!(first.stdout, "+f new    sub/a\n", "{first:?}");
    // The copy kept whole seconds: the next run has nothing to do.
    let again = sync().expect(0);
    assert_eq!(again.stdout, "", "{again:?}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&dst).unwrap().mode() & 0o777, 0o555);
}

#[test]
fn a_destination_that_cannot_be_probed_has_nothing_deleted_and_a_dry_run_says_so() {
    let f = Fixture::new();
    let Some(disk) = Mounted::new(&f, Fs::Exfat) else {
        return;
    };
    let dst = disk.path().join("dst");
    f.write("src/keep", "k");
    fs::create_dir(&dst).unwrap();
    fs::write(dst.join("keep"), "k").unwrap();
    fs::write(
        dst.join("gone"),
        "to delete, were it known how DST compares names",
    )
    .unwrap();
    let sync = |extra: &str| f.run([extra.as_ref(), f.src.as_os_str(), dst.as_os_str()]);
    sync("-v").expect(0);
    fs::write(dst.join("gone"), "again").unwrap();
    disk.remount_read_only();
    // exFAT through FUSE, read-only: nothing can be tried there and nothing is known of it.
    for arg in ["-n", "-v"] {
        let run = sync(arg).expect(1);
        assert!(run.stderr.contains("cannot probe"), "{run:?}");
        assert!(run.stderr.contains("deleting nothing"), "{run:?}");
        assert!(!run.stdout.contains("gone"), "{run:?}");
    }
    assert!(dst.join("gone").exists());
}
