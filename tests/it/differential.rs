//! syncease against `rsync -a --delete SRC/ DST/` on seeded random trees: both mirrors must be
//! identical to each other and to the source, after the first sync and after mutations. And, as
//! root, `syncease -X -A` against `rsync -aHAXS --numeric-ids` on what a full backup carries:
//! owners, hard links, holes, extended attributes, ACLs, capabilities and device nodes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

const SEEDS: [u64; 5] = [1, 2, 3, 42, 2026];

/// Names that trip up tools that treat paths as strings.
fn name(rng: &mut Rng, i: u64) -> PathBuf {
    let odd: [&[u8]; 8] = [
        b"with space",
        b"new\nline",
        b"-dash",
        b"\xff\xferaw",
        b"caf\xc3\xa9",
        b"a.b.c",
        b"UPPER",
        b"#hash",
    ];
    match rng.below(10) {
        0 => bytes_path(&[odd[rng.below(8) as usize], format!("-{i}").as_bytes()].concat()),
        1 if rng.chance(10) => PathBuf::from(format!("{i}-{}", "L".repeat(240))),
        _ => PathBuf::from(format!("n{i}")),
    }
}

fn random_mtime(rng: &mut Rng, path: &Path) {
    let sec = rng.below(3_000_000_000) as i64 - 1_000_000_000;
    let nsec = if rng.chance(30) {
        0
    } else {
        rng.below(1_000_000_000) as u32
    };
    set_mtime(path, sec, nsec);
}

fn file_mode(rng: &mut Rng) -> u32 {
    [0o644, 0o600, 0o755, 0o444, 0o640, 0o700, 0o4755][rng.below(7) as usize]
}

fn dir_mode(rng: &mut Rng) -> u32 {
    let modes: &[u32] = if is_root() {
        &[0o755, 0o750, 0o700, 0o775, 0o555, 0o2755]
    } else {
        &[0o755, 0o750, 0o700, 0o775]
    };
    modes[rng.below(modes.len() as u64) as usize]
}

fn write_file(rng: &mut Rng, path: &Path) {
    let size = match rng.below(20) {
        0 => 0,
        1 => 1024 * 1024 + rng.below(3 * 1024 * 1024),
        _ => rng.below(20_000),
    } as usize;
    fs::write(path, rng.bytes(size)).unwrap();
    chmod(path, file_mode(rng));
    random_mtime(rng, path);
}

fn make_link(rng: &mut Rng, path: &Path) {
    let target = match rng.below(3) {
        0 => PathBuf::from("/usr/share"),
        1 => PathBuf::from("../sibling/file"),
        _ => PathBuf::from(format!("dangling-{}", rng.below(1000))),
    };
    std::os::unix::fs::symlink(target, path).unwrap();
    random_mtime(rng, path);
}

/// Fill `dir` with a random subtree; returns the directories made (deepest last).
fn generate(rng: &mut Rng, dir: &Path, depth: u32, counter: &mut u64, dirs: &mut Vec<PathBuf>) {
    let entries = 3 + rng.below(8);
    for _ in 0..entries {
        *counter += 1;
        let path = dir.join(name(rng, *counter));
        match rng.below(10) {
            0..=5 => write_file(rng, &path),
            6 | 7 if depth < 4 => {
                fs::create_dir(&path).unwrap();
                if !rng.chance(20) {
                    generate(rng, &path, depth + 1, counter, dirs);
                }
                dirs.push(path);
            }
            _ => make_link(rng, &path),
        }
    }
}

/// Give directories their modes and times after their contents exist (deepest first).
fn seal_dirs(rng: &mut Rng, dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        chmod(dir, dir_mode(rng));
        random_mtime(rng, dir);
    }
}

/// Open every directory up so the test can change the tree (as root this changes nothing).
fn unseal(root: &Path) {
    for entry in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
    {
        if entry.file_type().is_dir() {
            let mode = entry.metadata().unwrap().permissions();
            use std::os::unix::fs::PermissionsExt;
            chmod(entry.path(), mode.mode() | 0o700);
        }
    }
}

/// Modify, add, delete, rename and change types at random below `src`.
fn mutate(rng: &mut Rng, src: &Path, counter: &mut u64) {
    unseal(src);
    let entries: Vec<_> = walkdir::WalkDir::new(src)
        .min_depth(1)
        .contents_first(true)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    let mut new_dirs = Vec::new();
    for path in entries {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue; // went with a deleted subtree
        };
        match rng.below(100) {
            // same size, new content and time
            0..=4 if meta.is_file() && meta.len() > 0 => {
                let len = meta.len() as usize;
                chmod(&path, 0o644);
                fs::write(&path, rng.bytes(len)).unwrap();
                random_mtime(rng, &path);
            }
            5..=9 if meta.is_file() => write_file(rng, &path),
            10..=13 => {
                if meta.is_dir() {
                    fs::remove_dir_all(&path).unwrap();
                } else {
                    fs::remove_file(&path).unwrap();
                }
            }
            14..=16 => {
                *counter += 1;
                let to = path.with_file_name(format!("renamed-{counter}"));
                fs::rename(&path, to).unwrap();
            }
            17..=19 => {
                // type change
                if meta.is_dir() {
                    fs::remove_dir_all(&path).unwrap();
                    write_file(rng, &path);
                } else {
                    fs::remove_file(&path).unwrap();
                    if meta.file_type().is_symlink() || rng.chance(50) {
                        fs::create_dir(&path).unwrap();
                        write_file(rng, &path.join("inside"));
                        new_dirs.push(path);
                    } else {
                        make_link(rng, &path);
                    }
                }
            }
            20..=22 if !meta.file_type().is_symlink() => {
                let mode = if meta.is_dir() {
                    dir_mode(rng)
                } else {
                    file_mode(rng)
                };
                chmod(&path, mode | if meta.is_dir() { 0o700 } else { 0 });
            }
            23..=25 if meta.is_dir() => {
                *counter += 1;
                write_file(rng, &path.join(format!("added-{counter}")));
            }
            _ => {}
        }
    }
    // A directory made here may have gone with its parent, visited after it.
    new_dirs.retain(|dir| fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()));
    seal_dirs(rng, &new_dirs);
}

fn rsync(src: &Path, dst: &Path, extra: &[&str]) {
    let mut from = src.as_os_str().to_owned();
    from.push("/");
    let mut to = dst.as_os_str().to_owned();
    to.push("/");
    let status = Command::new("rsync")
        .arg("-a")
        .arg("--delete")
        .args(extra)
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "rsync failed: {status}");
}

fn compare_round(f: &Fixture, seed: u64, round: &str) {
    let rsync_dst = f.path("rsync-dst");
    rsync(&f.src, &rsync_dst, &[]);
    // One rsync pass can leave a directory's mtime a fraction of a second late (it sets it
    // while its receiver may still be renaming files into it), and its default quick check
    // compares whole seconds only, so a second pass with exact times puts them right.
    // syncease must be right after one pass.
    rsync(&f.src, &rsync_dst, &["--modify-window=-1"]);
    f.sync(&[]).expect(0);
    let ours = Manifest::of(&f.dst);
    let source = Manifest::of(&f.src);
    eprintln!("seed {seed} {round}: {} entries", source.0.len());
    assert_same(&source, &ours);
    assert_same(&Manifest::of(&rsync_dst), &ours);
}

#[test]
fn mirrors_match_rsync_on_random_trees() {
    if !need("rsync", "rsync") {
        return;
    }
    for seed in SEEDS {
        let f = Fixture::new();
        let mut rng = Rng::new(seed);
        let mut counter = 0;
        let mut dirs = Vec::new();
        generate(&mut rng, &f.src, 0, &mut counter, &mut dirs);
        seal_dirs(&mut rng, &dirs);
        chmod(&f.src, 0o755);
        compare_round(&f, seed, "initial");
        for round in ["first mutation", "second mutation"] {
            mutate(&mut rng, &f.src, &mut counter);
            compare_round(&f, seed, round);
        }
        // No-op: a third sync changes nothing.
        let before = identity(&f.dst);
        f.sync(&[]).expect(0);
        assert_eq!(
            before,
            identity(&f.dst),
            "seed {seed}: no-op run wrote something"
        );
        for root in [&f.src, &f.dst, &f.path("rsync-dst")] {
            unseal(root);
        }
    }
}

// Root's full backup: owners, hard links, holes, xattrs, ACLs, capabilities, devices ----------

const MIB: u64 = 1 << 20;

/// A file with `content`, owner, mode and mtime, in that order (chown clears setuid bits).
fn owned_file(path: &Path, content: &[u8], owner: (u32, u32), mode: u32, mtime: (i64, u32)) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).unwrap();
    chmod(path, mode);
    set_mtime(path, mtime.0, mtime.1);
}

/// A file of `len` bytes that holds `data` at each offset and holes everywhere else.
fn sparse_file(path: &Path, len: u64, data: &[(u64, usize)]) {
    use std::os::unix::fs::FileExt;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = fs::File::create(path).unwrap();
    file.set_len(len).unwrap();
    for &(at, size) in data {
        file.write_all_at(&Rng::new(at).bytes(size), at).unwrap();
    }
}

fn setfacl(path: &Path, args: &[&str]) {
    let out = Command::new("setfacl")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setfacl {args:?}: {:?}",
        Run::from(out)
    );
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// `security.capability` for `cap_net_raw+ep`: a version 2 blob (revision 2, effective flag),
/// then permitted and inheritable sets, low and high words.
const CAP_NET_RAW_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // magic: VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x20, 0x00, 0x00, // permitted, bits 0-31: CAP_NET_RAW is 13
    0x00, 0x00, 0x00, 0x00, // inheritable, bits 0-31
    0x00, 0x00, 0x00, 0x00, // permitted, bits 32-63
    0x00, 0x00, 0x00, 0x00, // inheritable, bits 32-63
];

/// Everything root's backup has to carry, below `src`.
fn rich_tree(src: &Path) {
    let at = |rel: &str| src.join(rel);
    fs::create_dir_all(src).unwrap();
    // Owners by number, accounts or not; a setuid program that is not root's.
    owned_file(&at("owned/one"), b"1", (1, 1), 0o644, (1_500_000_001, 1));
    owned_file(&at("owned/two"), b"2", (2, 3), 0o640, (1_500_000_002, 2));
    owned_file(
        &at("owned/nobody"),
        b"n",
        (NOBODY, NOBODY),
        0o600,
        (1_500_000_003, 3),
    );
    owned_file(
        &at("owned/setuid"),
        b"#!/bin/sh\n",
        (2, 2),
        0o4755,
        (1_500_000_004, 4),
    );
    owned_file(
        &at("owned/setgid"),
        b"#!/bin/sh\n",
        (0, 3),
        0o2755,
        (1_500_000_005, 5),
    );
    std::os::unix::fs::symlink("one", at("owned/link")).unwrap();
    std::os::unix::fs::lchown(at("owned/link"), Some(1), Some(2)).unwrap();
    set_mtime(&at("owned/link"), 1_500_000_006, 6);
    std::os::unix::fs::lchown(at("owned"), Some(1234), Some(5678)).unwrap();
    // Hard links: three names across two directories, and two.
    owned_file(
        &at("links/three-a"),
        b"three names",
        (0, 0),
        0o644,
        (1_500_000_010, 10),
    );
    fs::hard_link(at("links/three-a"), at("links/three-b")).unwrap();
    fs::create_dir_all(at("other")).unwrap();
    fs::hard_link(at("links/three-a"), at("other/three-c")).unwrap();
    owned_file(
        &at("links/two-a"),
        b"two names",
        (1, 1),
        0o600,
        (1_500_000_011, 11),
    );
    fs::hard_link(at("links/two-a"), at("other/two-b")).unwrap();
    // Holes in the middle, at the end, and nothing but a hole.
    sparse_file(
        &at("sparse/middle"),
        8 * MIB,
        &[(0, 4096), (4 * MIB, 64 * 1024)],
    );
    sparse_file(&at("sparse/tail-hole"), 6 * MIB, &[(0, MIB as usize)]);
    sparse_file(&at("sparse/all-hole"), 16 * MIB, &[]);
    for (i, name) in ["middle", "tail-hole", "all-hole"].iter().enumerate() {
        set_mtime(&at(&format!("sparse/{name}")), 1_500_000_020 + i as i64, 20);
    }
    // Extended attributes on files and directories, text and binary.
    owned_file(&at("xattr/file"), b"x", (0, 0), 0o644, (1_500_000_030, 30));
    set_xattr(&at("xattr/file"), "user.comment", b"hello");
    set_xattr(&at("xattr/file"), "user.binary", &[0, 1, 2, 255]);
    set_xattr(&at("xattr"), "user.dir", b"on a directory");
    // A file capability (set after chown, which clears it).
    owned_file(
        &at("caps/ping"),
        b"\x7fELF",
        (0, 0),
        0o755,
        (1_500_000_040, 40),
    );
    set_xattr(&at("caps/ping"), "security.capability", &CAP_NET_RAW_EP);
    // POSIX ACLs: named users and groups on a file, a default ACL on a directory and a file
    // that inherited it.
    owned_file(&at("acl/file"), b"acl", (0, 0), 0o640, (1_500_000_050, 50));
    setfacl(&at("acl/file"), &["-m", "u:1:rwx,g:2:r-x"]);
    fs::create_dir_all(at("acl/dir")).unwrap();
    setfacl(&at("acl/dir"), &["-m", "u:1:rwx"]);
    setfacl(&at("acl/dir"), &["-d", "-m", "u:2:r-x,g:3:rwx"]);
    fs::write(at("acl/dir/inherited"), "inherits the default").unwrap();
    set_mtime(&at("acl/dir/inherited"), 1_500_000_051, 51);
    // FIFOs and device nodes.
    fs::create_dir_all(at("special")).unwrap();
    use rustix::fs::FileType::{BlockDevice, CharacterDevice, Fifo};
    for (name, kind, dev) in [
        ("fifo", Fifo, 0),
        ("null", CharacterDevice, rustix::fs::makedev(1, 3)),
        ("block", BlockDevice, rustix::fs::makedev(7, 200)),
    ] {
        let path = at(&format!("special/{name}"));
        let mode = rustix::fs::Mode::from_raw_mode(0o640);
        rustix::fs::mknodat(rustix::fs::CWD, &path, kind, mode, dev).unwrap();
        std::os::unix::fs::lchown(&path, Some(1), Some(2)).unwrap();
        set_mtime(&path, 1_500_000_060, 60);
    }
    // Directories last, deepest first.
    let dirs = [
        "acl/dir", "acl", "caps", "xattr", "sparse", "other", "links", "owned", "special", "",
    ];
    for (i, dir) in dirs.iter().enumerate() {
        set_mtime(&at(dir), 1_400_000_000 + i as i64, 123_000_000 + i as u32);
    }
}

/// The source changes in what only metadata shows: xattrs, ACL entries, an owner, and a hard
/// link broken into a copy with the same bytes and time.
fn change_metadata(src: &Path) {
    let at = |rel: &str| src.join(rel);
    set_xattr(&at("xattr/file"), "user.comment", b"changed");
    rustix::fs::lremovexattr(at("xattr/file"), "user.binary").unwrap();
    set_xattr(&at("xattr/file"), "user.added", b"new");
    set_xattr(&at("xattr"), "user.dir", b"changed too");
    setfacl(&at("acl/file"), &["-x", "u:1"]);
    setfacl(&at("acl/dir"), &["-d", "-x", "g:3"]);
    std::os::unix::fs::lchown(at("owned/one"), Some(2), Some(2)).unwrap();
    let mtime = fs::metadata(at("links/three-b")).unwrap().mtime();
    fs::copy(at("links/three-b"), at("links/copy")).unwrap();
    fs::rename(at("links/copy"), at("links/three-b")).unwrap();
    set_mtime(&at("links/three-b"), mtime, 10);
}

/// A tree as far as root's backup must carry it.
#[derive(Debug, PartialEq)]
struct Full {
    manifest: Manifest,
    links: std::collections::BTreeSet<Vec<PathBuf>>,
    xattrs: std::collections::BTreeMap<PathBuf, std::collections::BTreeMap<String, Vec<u8>>>,
    /// `getfacl` of every entry, one block each, sorted.
    acls: Vec<String>,
}

fn full(root: &Path) -> Full {
    let out = Command::new("getfacl")
        .args(["-R", "-P", "-n", "."])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "getfacl: {:?}", Run::from(out));
    let mut acls: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| block.trim().to_string())
        .collect();
    acls.sort();
    Full {
        manifest: Manifest::of(root),
        links: link_groups(root),
        xattrs: tree_xattrs(root),
        acls,
    }
}

#[track_caller]
fn assert_full_same(what: &str, left: &Full, right: &Full) {
    assert_same(&left.manifest, &right.manifest);
    assert_eq!(left.links, right.links, "{what}: hard-link groups");
    assert_eq!(left.xattrs, right.xattrs, "{what}: extended attributes");
    assert_eq!(left.acls, right.acls, "{what}: ACLs (getfacl)");
}

fn blocks(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().blocks()
}

/// Mirror `src` both ways and compare: each mirror with the source, and the space they take.
fn compare_with_rsync(
    src: &Path,
    ours: &Path,
    theirs: &Path,
    round: &str,
    rsync_keeps_broken_links: bool,
) {
    let mut from = src.as_os_str().to_owned();
    from.push("/");
    let mut to = theirs.as_os_str().to_owned();
    to.push("/");
    let status = Command::new("rsync")
        .args(["-aHAXS", "--delete", "--numeric-ids"])
        .arg(&from)
        .arg(&to)
        .status()
        .unwrap();
    assert!(status.success(), "rsync: {status}");
    // rsync's mirror is the source's: the test sees what it means to see. Except that rsync
    // keeps a hard link that the source broke, when its quick check finds both names unchanged.
    let source = full(src);
    let mut rsyncs = full(theirs);
    if rsync_keeps_broken_links {
        assert_ne!(
            rsyncs.links, source.links,
            "{round}: rsync learnt to break links"
        );
        rsyncs.links = source.links.clone();
    }
    assert_full_same(&format!("{round}: rsync's mirror"), &source, &rsyncs);
    let run = syncease()
        .args(["-X", "-A"])
        .arg(src)
        .arg(ours)
        .output()
        .unwrap();
    let run = Run::from(run).expect(0);
    assert!(!run.stderr.contains("warning"), "{round}: {run:?}");
    assert_full_same(&format!("{round}: syncease's mirror"), &source, &full(ours));
    for name in ["middle", "tail-hole", "all-hole"] {
        let rel = Path::new("sparse").join(name);
        let (ours, theirs) = (blocks(&ours.join(&rel)), blocks(&theirs.join(&rel)));
        // Slack: one 4 KiB block more than rsync (in 512-byte units).
        assert!(
            ours <= theirs + 8,
            "{round}: {rel:?} takes {ours} blocks, rsync's copy {theirs}"
        );
    }
}

#[test]
fn owners_links_holes_xattrs_acls_and_devices_match_rsync_as_root() {
    let f = Fixture::new();
    if !need_root("to give files away, set capabilities and make devices")
        || !need("rsync", "rsync")
        || !need("setfacl", "acl")
        || !need("getfacl", "acl")
    {
        return;
    }
    // All three on ext4, which has user xattrs and ACLs on every kernel.
    let (Some(source_fs), Some(ours_fs), Some(theirs_fs)) = (
        Mounted::new(&f, Fs::Ext4),
        Mounted::new(&f, Fs::Ext4),
        Mounted::new(&f, Fs::Ext4),
    ) else {
        return;
    };
    let src = source_fs.path().join("src");
    let ours = ours_fs.path().join("dst");
    let theirs = theirs_fs.path().join("dst");
    rich_tree(&src);
    compare_with_rsync(&src, &ours, &theirs, "first sync", false);
    change_metadata(&src);
    compare_with_rsync(&src, &ours, &theirs, "after metadata changes", true);
    // Nothing left to do: nothing written, nothing itemized.
    let before = (snapshot(&ours), full(&ours));
    let run = syncease()
        .args(["-X", "-A", "-v"])
        .arg(&src)
        .arg(&ours)
        .output()
        .unwrap();
    let run = Run::from(run).expect(0);
    assert_eq!(run.stdout, "", "a third run has nothing to do");
    assert_unchanged(&before.0, &ours, &run);
    assert_eq!(before.1, full(&ours));
}
