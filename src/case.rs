//! Names on destinations that ignore case: FAT, exFAT, NTFS, SMB shares, macOS volumes.
//!
//! There `Photos` and `photos` are one name, spelled either way, so the byte-wise pairing of the
//! two listings goes wrong three ways: a source `Photos/` beside a destination `photos/` is
//! planned as a directory to make (which fails, "File exists", on every run) and one to delete;
//! a new `Foo` over a destination `foo` is written and then deleted under its other spelling;
//! two source names that differ only in case overwrite each other on every run.
//!
//! [`fold`] fixes the pairing before planning. Names are compared after Unicode's simple
//! case mapping to upper case, one character for one (as the filesystems' upcase tables do:
//! `ß` stays `ß`). A destination entry whose name matches a source one is listed under the
//! source's spelling — so the planner pairs them — and remembers its own, so the executor
//! renames it when the spelling differs. Source names that collide once case is ignored are
//! left out, each group reported once, and what the destination has under that name is kept.

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

/// The bytes of `path` with every character mapped to upper case where that is one character;
/// bytes that are not UTF-8 stay as they are.
fn folded(path: &Path) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.as_os_str().len());
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut upper = c.to_uppercase();
            let one = match (upper.next(), upper.next()) {
                (Some(u), None) => u,
                _ => c,
            };
            let mut buf = [0; 4];
            out.extend_from_slice(one.encode_utf8(&mut buf).as_bytes());
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Pair the destination's names with the source's as a destination that ignores case does:
/// returns the destination listing with every name that matches a source name spelled like
/// it (in path order again), and what cannot be mirrored there.
pub fn fold(src: &Tree, dst: Tree) -> (Tree, Folded) {
    // Source paths by the hash of their folded form (16 bytes an entry); a rare hash collision
    // between different names is told apart by folding again.
    let mut by_fold: HashMap<u64, u32> = HashMap::with_capacity(src.entries.len());
    let mut colliding: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
    let mut overflow: HashMap<Vec<u8>, u32> = HashMap::new();
    for i in 0..src.entries.len() as u32 {
        let key = folded(src.path_at(i));
        match by_fold.entry(hash(&key)) {
            Slot::Vacant(slot) => {
                slot.insert(i);
            }
            Slot::Occupied(slot) => {
                let first = *slot.get();
                if folded(src.path_at(first)) == key {
                    colliding.entry(key).or_insert_with(|| vec![first]).push(i);
                } else if let Some(&other) = overflow.get(&key) {
                    colliding.entry(key).or_insert_with(|| vec![other]).push(i);
                } else {
                    overflow.insert(key, i);
                }
            }
        }
    }
    let source_of = |key: &[u8]| -> Option<u32> {
        let i = *by_fold.get(&hash(key))?;
        if folded(src.path_at(i)) == key {
            return Some(i);
        }
        overflow.get(key).copied()
    };

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
    let colliding_keys: HashSet<Vec<u8>> = top.iter().map(|p| folded(p)).collect();

    // Destination names that fold alike twice are two entries the destination keeps apart
    // (it is not as case-insensitive as the probe found): neither is paired by case. Counted
    // by hash; a rare clash of hashes only leaves a pair unpaired.
    let mut dst_folds: HashMap<u64, u32> = HashMap::new();
    for j in 0..dst.entries.len() as u32 {
        *dst_folds.entry(hash(&folded(dst.path_at(j)))).or_default() += 1;
    }

    // New paths for the destination entries, parent before child: the source's spelling for
    // a name the source has, else the entry's own name below its (renamed) parent.
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
        let key = folded(path);
        let (up, below_collision) = match parents.last() {
            Some(&(dir, at, below)) if dir == parent => (Some(at), below),
            _ => (None, false),
        };
        let collides = below_collision || colliding_keys.contains(&key);
        let alone = dst_folds.get(&hash(&key)) == Some(&1);
        let new = match source_of(&key) {
            Some(i) if !collides && alone => src.path_at(i).to_path_buf(),
            _ => match up {
                Some(at) => paths[at].join(path.file_name().unwrap_or_default()),
                None => path.to_path_buf(),
            },
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

    #[test]
    fn destination_names_take_the_source_spelling() {
        let src = tree(&["Photos/", "Photos/A.jpg", "Photos/b.jpg", "new"]);
        let dst = tree(&["old", "photos/", "photos/a.jpg", "photos/gone.jpg"]);
        let (dst, folded) = fold(&src, dst);
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
    fn names_the_same_but_for_case_collide_once() {
        let src = tree(&["A.txt", "D/", "D/x", "a.txt", "d/", "d/x", "ok"]);
        let dst = tree(&["a.TXT", "d/", "d/x", "ok"]);
        let (dst, folded) = fold(&src, dst);
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
    }

    #[test]
    fn folding_is_one_character_for_one() {
        assert_eq!(folded(Path::new("straße/Ä")), "STRAßE/Ä".as_bytes());
        assert_eq!(folded(Path::new("\u{3c3}")), "\u{3a3}".as_bytes());
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"a\xff"));
        assert_eq!(folded(odd), b"A\xff");
    }

    #[test]
    fn two_destination_entries_are_never_paired_with_one_name() {
        // A destination that holds both spellings is not case-insensitive for them.
        let src = tree(&["Foo"]);
        let (dst, _) = fold(&src, tree(&["Foo", "foo"]));
        assert_eq!(dst.path_at(0), Path::new("Foo"));
        assert_eq!(dst.path_at(1), Path::new("foo"));
        assert_eq!(dst.origin(1), Path::new("foo"));
    }

    #[test]
    fn an_unchanged_listing_is_returned_as_it_is() {
        let src = tree(&["a", "b/"]);
        let (dst, folded) = fold(&src, tree(&["a", "b/", "c"]));
        assert_eq!(dst.origin(2), Path::new("c"));
        assert!(folded.collisions.is_empty());
    }
}
