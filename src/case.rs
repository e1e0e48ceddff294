//! Names on destinations that ignore case: FAT, exFAT, NTFS, SMB shares, macOS volumes.
//!
//! There `Photos` and `photos` are one name, spelled either way, so the byte-wise pairing of the
//! two listings goes wrong three ways: a source `Photos/` beside a destination `photos/` is
//! planned as a directory to make (which fails, "File exists", on every run) and one to delete;
//! a new `Foo` over a destination `foo` is written and then deleted under its other spelling;
//! two source names that differ only in case overwrite each other on every run.
//!
//! [`fold`] fixes the pairing before planning. Filesystems do not agree on which letters are
//! one letter in another case (exFAT keeps `ı` apart from `i`; others do not), so the
//! destination decides: a destination entry whose name may be a source name spelled
//! otherwise is listed under the source's spelling — so the planner pairs them, and the
//! executor renames it — only when the destination finds an entry under the source's
//! spelling. Source names that are one name on every filesystem that ignores case (`a.txt`
//! and `A.txt`: upper and lower case letters that map to each other) are left out, each group
//! reported once, and what the destination has under that name is kept.

use std::collections::hash_map::{DefaultHasher, Entry as Slot};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::entry::{is_within, Tree};

/// Source names that are one name on the destination.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// Each group of colliding source paths (two or more), in path order.
    pub collisions: Vec<Vec<PathBuf>>,
    /// Paths (as listed now) left out of the mirror on both sides: the colliding source
    /// names, and the destination entries holding one of their names.
    pub protected: Vec<PathBuf>,
}

/// `path` with each character mapped by `map` (a character it maps to several is kept);
/// bytes that are not UTF-8 stay as they are.
fn mapped(path: &Path, map: fn(char) -> Option<char>) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.as_os_str().len());
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut buf = [0; 4];
            let c = map(c).unwrap_or(c);
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// One character for one, or none.
fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// The names that may be one name somewhere: lower case, then upper case (`ı`, `i` and `I`
/// fold alike; so do `ᾀ` and `ᾈ`). Only a candidate: the destination itself confirms it.
fn wide(c: char) -> Option<char> {
    let lower = single(c.to_lowercase()).unwrap_or(c);
    Some(single(lower.to_uppercase()).unwrap_or(lower))
}

/// The names that are one name on every filesystem that ignores case: pairs of an upper and a
/// lower case letter that map to each other (`a`/`A`, `ä`/`Ä`, `σ`/`Σ`), not the letters some
/// filesystems keep apart (`ı`, `ſ`, `ς`, `µ`).
fn narrow(c: char) -> Option<char> {
    let upper = single(c.to_uppercase())?;
    let lower = single(upper.to_lowercase())?;
    (single(lower.to_uppercase()) == Some(upper) && single(c.to_lowercase()) == Some(lower))
        .then_some(upper)
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Pair the destination's names with the source's as a destination that ignores case does:
/// returns the destination listing with every name that matches a source name spelled like
/// it (in path order again), and what cannot be mirrored there. `exists` looks a path up in
/// the destination: a name spelled otherwise is only taken for a source name when the
/// destination finds an entry under the source's spelling.
pub fn fold(src: &Tree, dst: Tree, exists: &dyn Fn(&Path) -> bool) -> (Tree, Folded) {
    // Source names that are one name anywhere names ignore case: left out, reported.
    let mut by_narrow: HashMap<u64, u32> = HashMap::new();
    let mut colliding: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
    for i in 0..src.entries.len() as u32 {
        let key = mapped(src.path_at(i), narrow);
        match by_narrow.entry(hash(&key)) {
            Slot::Vacant(slot) => {
                slot.insert(i);
            }
            Slot::Occupied(slot) => {
                let first = *slot.get();
                // A clash of hashes between different names is told apart here.
                if mapped(src.path_at(first), narrow) == key {
                    colliding.entry(key).or_insert_with(|| vec![first]).push(i);
                }
            }
        }
    }
    drop(by_narrow);
    // Candidates: source entries by the hash of their wide form (a few bytes an entry).
    let mut by_wide: HashMap<u64, Vec<u32>> = HashMap::with_capacity(src.entries.len());
    for i in 0..src.entries.len() as u32 {
        by_wide
            .entry(hash(&mapped(src.path_at(i), wide)))
            .or_default()
            .push(i);
    }

    let mut result = Folded::default();
    // Only the outermost collisions: below two colliding directories, everything collides.
    let mut groups: Vec<&Vec<u32>> = colliding.values().collect();
    groups.sort();
    let mut top: Vec<&Path> = Vec::new();
    for group in groups {
        let first = src.path_at(group[0]);
        if top.iter().any(|t| is_within(first, t) && first != *t) {
            continue;
        }
        top.push(first);
        let paths = group.iter().map(|&i| src.path_at(i).to_path_buf());
        result.collisions.push(paths.collect());
        result
            .protected
            .extend(group.iter().map(|&i| src.path_at(i).to_path_buf()));
    }
    let colliding_keys: HashSet<Vec<u8>> = top.iter().map(|p| mapped(p, narrow)).collect();

    // Destination names that fold alike twice are entries the destination keeps apart: neither
    // is paired by case. Counted by hash; a rare clash only leaves a pair unpaired.
    let mut dst_folds: HashMap<u64, u32> = HashMap::new();
    for j in 0..dst.entries.len() as u32 {
        *dst_folds
            .entry(hash(&mapped(dst.path_at(j), wide)))
            .or_default() += 1;
    }

    // New paths for the destination entries, parent before child: the source's spelling for
    // a name the destination confirms is the source's, else the entry's own name below its
    // (renamed) parent.
    let mut respelled = false;
    let mut paths: Vec<PathBuf> = Vec::with_capacity(dst.entries.len());
    // The chain of entries above the current one: (path, index, below a colliding name).
    let mut parents: Vec<(&Path, usize, bool)> = Vec::new();
    for j in 0..dst.entries.len() as u32 {
        let path = dst.path_at(j);
        let parent = path.parent().unwrap_or(Path::new(""));
        while parents
            .last()
            .is_some_and(|(dir, ..)| !is_within(parent, dir))
        {
            parents.pop();
        }
        let (up, below_collision) = match parents.last() {
            Some(&(dir, at, below)) if dir == parent => (Some(at), below),
            _ => (None, false),
        };
        let name = path.file_name().unwrap_or_default();
        let own = match up {
            Some(at) => paths[at].join(name),
            None => path.to_path_buf(),
        };
        let collides = below_collision || colliding_keys.contains(&mapped(path, narrow));
        let key = mapped(path, wide);
        let alone = dst_folds.get(&hash(&key)) == Some(&1);
        let candidates = by_wide.get(&hash(&key)).map_or(&[][..], Vec::as_slice);
        let source = candidates.iter().map(|&i| src.path_at(i)).find(|s| {
            // The same name below the same (paired) directory: spelled alike, or found by
            // the destination under the source's spelling.
            s.parent() == own.parent()
                && mapped(s, wide) == key
                && (*s == own || (alone && exists(s)))
        });
        let new = match source {
            Some(s) if !collides => s.to_path_buf(),
            _ => own,
        };
        if collides && !below_collision {
            result.protected.push(new.clone());
        }
        respelled |= new != path;
        paths.push(new);
        parents.push((path, j as usize, collides));
    }
    if !respelled {
        return (dst, result);
    }
    let mut order: Vec<(u32, &Path)> = paths
        .iter()
        .enumerate()
        .map(|(j, p)| (j as u32, p.as_path()))
        .collect();
    order.sort_by(|a, b| a.1.cmp(b.1));
    (dst.renamed(order), result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Mtime, Tag};

    fn tree(paths: &[&str]) -> Tree {
        let mut tree = Tree::default();
        for p in paths {
            let tag = if p.ends_with('/') {
                Tag::Dir
            } else {
                Tag::File
            };
            let p = p.trim_end_matches('/');
            tree.push_raw(Path::new(p), tag, 0, Mtime::default(), 0o644, None);
        }
        tree
    }

    fn listed(tree: &Tree) -> Vec<(String, String)> {
        (0..tree.entries.len() as u32)
            .map(|j| {
                let show = |p: &Path| p.to_string_lossy().into_owned();
                (show(tree.path_at(j)), show(tree.origin(j)))
            })
            .collect()
    }

    /// A destination that finds names as FAT does: ASCII letters in either case.
    fn ascii_insensitive(dst: &Tree) -> impl Fn(&Path) -> bool + '_ {
        move |p: &Path| {
            (0..dst.entries.len() as u32).any(|j| {
                let (a, b) = (dst.path_at(j).as_os_str(), p.as_os_str());
                a.as_bytes().eq_ignore_ascii_case(b.as_bytes())
            })
        }
    }

    #[test]
    fn destination_names_take_the_source_spelling() {
        let src = tree(&["Photos/", "Photos/A.jpg", "Photos/b.jpg", "new"]);
        let dst = tree(&["old", "photos/", "photos/a.jpg", "photos/gone.jpg"]);
        let probe = tree(&["old", "photos/", "photos/a.jpg", "photos/gone.jpg"]);
        let (dst, folded) = fold(&src, dst, &ascii_insensitive(&probe));
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            listed(&dst),
            [
                pair("Photos", "photos"),
                pair("Photos/A.jpg", "photos/a.jpg"),
                pair("Photos/gone.jpg", "photos/gone.jpg"),
                pair("old", "old"),
            ]
        );
        assert_eq!(folded, Folded::default());
    }

    #[test]
    fn a_name_the_destination_keeps_apart_is_not_taken_for_the_source_one() {
        // exFAT keeps `ı` apart from `i`: it finds no `kirmizi.txt`, so `kırmızı.txt` is its own.
        let src = tree(&["kirmizi.txt"]);
        let (dst, folded) = fold(&src, tree(&["kırmızı.txt"]), &|_| false);
        assert_eq!(dst.path_at(0), Path::new("kırmızı.txt"));
        assert!(folded.collisions.is_empty());
        // Where the destination finds it, it is the source's name spelled otherwise.
        let (dst, _) = fold(&src, tree(&["kırmızı.txt"]), &|_| true);
        assert_eq!(dst.path_at(0), Path::new("kirmizi.txt"));
    }

    #[test]
    fn names_the_same_but_for_case_collide_once() {
        let src = tree(&["A.txt", "D/", "D/x", "a.txt", "d/", "d/x", "ok"]);
        let dst = tree(&["a.TXT", "d/", "d/x", "ok"]);
        let (dst, folded) = fold(&src, dst, &|_| true);
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            folded.collisions,
            [paths(&["A.txt", "a.txt"]), paths(&["D", "d"])]
        );
        // The destination's own spellings stay, and are kept.
        assert_eq!(dst.path_at(0), Path::new("a.TXT"));
        for kept in ["a.TXT", "d", "A.txt", "a.txt", "D"] {
            assert!(folded.protected.contains(&PathBuf::from(kept)), "{kept}");
        }
        // Letters some filesystems keep apart do not collide: each is mirrored.
        let (_, folded) = fold(
            &tree(&["kirmizi", "kırmızı", "σ", "ς"]),
            tree(&[]),
            &|_| true,
        );
        assert!(folded.collisions.is_empty());
    }

    #[test]
    fn folding_is_one_character_for_one() {
        let both = |p: &str| (mapped(Path::new(p), narrow), mapped(Path::new(p), wide));
        assert_eq!(both("straße/Ä").0, "STRAßE/Ä".as_bytes());
        assert_eq!(both("σ").0, "Σ".as_bytes());
        assert_eq!(both("ı").0, "ı".as_bytes());
        assert_eq!(both("ı").1, "I".as_bytes());
        assert_eq!(both("ᾈ").1, both("ᾀ").1);
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"a\xff"));
        assert_eq!(mapped(odd, narrow), b"A\xff");
    }

    #[test]
    fn two_destination_entries_are_never_paired_with_one_name() {
        // A destination that holds both spellings is not case-insensitive for them.
        let src = tree(&["Foo"]);
        let (dst, _) = fold(&src, tree(&["Foo", "foo"]), &|_| true);
        assert_eq!(dst.path_at(0), Path::new("Foo"));
        assert_eq!(dst.path_at(1), Path::new("foo"));
        assert_eq!(dst.origin(1), Path::new("foo"));
    }

    #[test]
    fn an_unchanged_listing_is_returned_as_it_is() {
        let src = tree(&["a", "b/"]);
        let (dst, folded) = fold(&src, tree(&["a", "b/", "c"]), &|_| true);
        assert_eq!(dst.origin(2), Path::new("c"));
        assert!(folded.collisions.is_empty());
    }
}
