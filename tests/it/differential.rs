//! syncease against `rsync -a --delete SRC/ DST/` on seeded random trees: both mirrors must be
//! identical to each other and to the source, after the first sync and after mutations.

use std::fs;
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
