//! Daily snapshots with `--link-dest` and `--reflink-dest`: each snapshot an exact mirror of
//! its day, costing only what changed since the one before.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::util::*;

/// Every regular file below `root`: relative path → (device, inode).
fn inodes(root: &Path) -> HashMap<String, (u64, u64)> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let meta = e.metadata().unwrap();
            let rel = e.path().strip_prefix(root).unwrap();
            (rel.to_string_lossy().into_owned(), (meta.dev(), meta.ino()))
        })
        .collect()
}

#[test]
fn a_week_of_link_dest_snapshots_costs_only_what_changed() {
    let f = Fixture::new();
    f.write("src/stable.bin", big_content(1, 0, 1 << 20));
    f.write("src/docs/notes.txt", "day 0");
    f.write("src/docs/old.txt", "goes on day 3");
    fs::create_dir_all(f.path("snaps")).unwrap();
    let mut stored = BTreeSet::new();
    for day in 0..7u64 {
        if day > 0 {
            f.write("src/docs/notes.txt", format!("day {day}"));
            f.write(format!("src/new-{day}.txt"), format!("added on day {day}"));
        }
        if day == 3 {
            fs::remove_file(f.path("src/docs/old.txt")).unwrap();
        }
        let snap = f.path(format!("snaps/day{day}"));
        let mut args = vec!["--json".to_string()];
        if day > 0 {
            // Relative to the new snapshot, as rsync takes it.
            args.push(format!("--link-dest=../day{}", day - 1));
        }
        args.extend([f.src.display().to_string(), snap.display().to_string()]);
        let run = f.run(&args).expect(0);
        // Each snapshot is its day's source exactly.
        assert_same(&Manifest::of(&f.src), &Manifest::of(&snap));
        stored.extend(inodes(&snap).into_values());
        // Only what changed was written: notes.txt and the day's new file; the rest are
        // links to the day before, 0 bytes each.
        if day > 0 {
            let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            let written = format!("day {day}").len() + format!("added on day {day}").len();
            assert_eq!(doc["copied"]["bytes"], written as u64, "{run:?}");
        }
    }
    // stable.bin is one file in seven snapshots.
    let stable = fs::metadata(f.path("snaps/day6/stable.bin")).unwrap();
    assert_eq!(stable.nlink(), 7);
    assert_eq!(
        stable.ino(),
        fs::metadata(f.path("snaps/day0/stable.bin")).unwrap().ino()
    );
    // Inodes stored: day 0's three files, then each day a new notes.txt and a new file.
    assert_eq!(stored.len(), 3 + 6 * 2);
}

#[test]
fn a_link_dest_snapshot_is_never_changed_through_a_later_one() {
    let f = Fixture::new();
    let a = f.write("src/a", "linked");
    fs::hard_link(&a, f.path("src/b")).unwrap();
    f.write("src/solo", "alone");
    let (snap1, snap2) = (f.path("snaps/one"), f.path("snaps/two"));
    let args = |snap: &Path| {
        [
            "-v".to_string(),
            "--link-dest=../one".to_string(),
            f.src.display().to_string(),
            snap.display().to_string(),
        ]
    };
    f.mkdir("snaps");
    f.run([f.src.as_os_str(), snap1.as_os_str()]).expect(0);
    f.run(args(&snap2)).expect(0);
    // Run again: nothing to do, and no temporary left beside a name already linked.
    assert_eq!(f.run(args(&snap2)).expect(0).stdout, "");
    assert!(temporaries(&snap2).is_empty(), "{:?}", temporaries(&snap2));
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&snap1.join("solo")), ino(&snap2.join("solo")));
    // A mode changed in SRC: the new snapshot's copy is written anew, the old one untouched.
    chmod(&a, 0o600);
    let run = f.run(args(&snap2)).expect(0);
    assert_eq!(run.stdout, ">f link   a\n>f link   b => a\n", "{run:?}");
    assert_eq!(fs::metadata(snap1.join("a")).unwrap().mode() & 0o777, 0o644);
    assert_same(&Manifest::of(&f.src), &Manifest::of(&snap2));
    assert_eq!(ino(&snap2.join("a")), ino(&snap2.join("b")));
    assert!(temporaries(&snap2).is_empty(), "{:?}", temporaries(&snap2));
    assert_eq!(f.run(args(&snap2)).expect(0).stdout, "");
}

#[test]
fn a_link_the_source_broke_is_not_made_again_from_a_snapshot() {
    let f = Fixture::new();
    let a = f.write("src/a", "linked");
    fs::hard_link(&a, f.path("src/b")).unwrap();
    f.mkdir("snaps");
    let (snap1, snap2) = (f.path("snaps/one"), f.path("snaps/two"));
    let args = [
        "-v".to_string(),
        "--link-dest=../one".to_string(),
        f.src.display().to_string(),
        snap2.display().to_string(),
    ];
    f.run([f.src.as_os_str(), snap1.as_os_str()]).expect(0);
    f.run(&args).expect(0);
    // SRC breaks the link, same contents, time and mode: b becomes a file of its own.
    let b = f.path("src/b");
    fs::remove_file(&b).unwrap();
    fs::copy(&a, &b).unwrap();
    let time = fs::metadata(&a).unwrap();
    set_mtime(&b, time.mtime(), time.mtime_nsec() as u32);
    f.run(&args).expect(0);
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_ne!(
        ino(&snap2.join("a")),
        ino(&snap2.join("b")),
        "linked again from the snapshot"
    );
    assert_same(&Manifest::of(&f.src), &Manifest::of(&snap2));
    assert_eq!(f.run(&args).expect(0).stdout, "", "the runs never settle");
    assert_eq!(fs::metadata(snap1.join("a")).unwrap().nlink(), 2);
}

#[test]
fn checksum_never_takes_a_snapshot_file_whose_contents_differ() {
    let f = Fixture::new();
    let a = f.write("src/a", "one");
    set_mtime(&a, 1_600_000_000, 0);
    f.write("src/b", "same");
    f.mkdir("snaps");
    let (snap1, snap2) = (f.path("snaps/one"), f.path("snaps/two"));
    f.run([f.src.as_os_str(), snap1.as_os_str()]).expect(0);
    // Same size and time as the snapshot's, other contents: only --checksum tells.
    f.write("src/a", "ONE");
    set_mtime(&a, 1_600_000_000, 0);
    let args = [
        "-c".to_string(),
        "--link-dest=../one".to_string(),
        f.src.display().to_string(),
        snap2.display().to_string(),
    ];
    f.run(&args).expect(0);
    assert_eq!(fs::read(snap2.join("a")).unwrap(), b"ONE");
    assert_eq!(fs::read(snap1.join("a")).unwrap(), b"one");
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_ne!(ino(&snap1.join("a")), ino(&snap2.join("a")));
    // What is the same is still linked.
    assert_eq!(ino(&snap1.join("b")), ino(&snap2.join("b")));
    assert_same(&Manifest::of(&f.src), &Manifest::of(&snap2));
}

#[test]
fn reflink_dest_copies_share_extents_with_the_earlier_snapshot() {
    for fs_kind in [Fs::Btrfs, Fs::Xfs] {
        let f = Fixture::new();
        let Some(mount) = Mounted::new(&f, fs_kind) else {
            return;
        };
        if !need("filefrag", "e2fsprogs") {
            return;
        }
        f.write("src/big.bin", big_content(2, 0, 8 << 20));
        f.write("src/small.txt", "s");
        let (day0, day1) = (mount.path().join("day0"), mount.path().join("day1"));
        let sync = |extra: &[&str], to: &Path| {
            let mut args: Vec<std::ffi::OsString> = extra.iter().map(Into::into).collect();
            args.extend([f.src.clone().into_os_string(), to.as_os_str().to_owned()]);
            f.run(args).expect(0)
        };
        sync(&[], &day0);
        sync(&["--reflink-dest=../day0"], &day1);
        assert_same(&Manifest::of(&f.src), &Manifest::of(&day1));
        // A file of its own (changing it leaves day0 alone), on the same extents.
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_ne!(ino(&day0.join("big.bin")), ino(&day1.join("big.bin")));
        let out = std::process::Command::new("filefrag")
            .arg("-v")
            .arg(day1.join("big.bin"))
            .output()
            .unwrap();
        let map = String::from_utf8_lossy(&out.stdout);
        assert!(map.contains("shared"), "{fs_kind:?}: not reflinked:\n{map}");
    }
}
