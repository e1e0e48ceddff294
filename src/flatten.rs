//! `--flatten`: the original SyncEase layout, where every file of SRC lands directly in DST.
//!
//! The source listing is rewritten before planning: each file or symlink, from any depth, is
//! renamed to its bare file name (remembering where it came from); directories disappear. When
//! several files share a name, the one with the newest mtime wins; on equal mtimes the one whose
//! source path sorts first (bytewise) wins, so the result never depends on scan order. The
//! planner then mirrors this flat listing like any other: DST entries with no source of that
//! name, subdirectories included, are deleted.

use std::path::{Path, PathBuf};

use crate::entry::{Tag, Tree};

/// A name that several source files share, and the one that was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub kept: PathBuf,
    pub dropped: PathBuf,
}

/// Rewrite a source listing into its flat form. Returns the listing and the collisions.
pub fn flatten(tree: Tree) -> (Tree, Vec<Collision>) {
    let mut flat: Vec<(u32, &Path)> = (0..tree.entries.len() as u32)
        .filter(|&i| tree.entries[i as usize].tag != Tag::Dir)
        .map(|i| {
            let name = tree.path_at(i).file_name().expect("entries have names");
            (i, Path::new(name))
        })
        .collect();
    // Group by name, best first: newest mtime, then smallest source path.
    let mtime = |i: u32| tree.entries[i as usize].mtime;
    flat.sort_by(|&(a, a_name), &(b, b_name)| {
        a_name
            .cmp(b_name)
            .then(mtime(b).cmp(&mtime(a)))
            .then(tree.path_at(a).cmp(tree.path_at(b)))
    });
    let mut collisions = Vec::new();
    let mut kept: Vec<(u32, &Path)> = Vec::with_capacity(flat.len());
    for (index, name) in flat {
        match kept.last() {
            Some(&(first, last_name)) if last_name == name => collisions.push(Collision {
                kept: tree.path_at(first).to_path_buf(),
                dropped: tree.path_at(index).to_path_buf(),
            }),
            _ => kept.push((index, name)),
        }
    }
    let kept: Vec<(u32, PathBuf)> = kept
        .into_iter()
        .map(|(i, n)| (i, n.to_path_buf()))
        .collect();
    let order = kept.iter().map(|(i, n)| (*i, n.as_path())).collect();
    (tree.renamed(order), collisions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Mtime;

    #[test]
    fn newest_wins_and_ties_go_to_the_first_path() {
        let mut tree = Tree::default();
        let mut add = |path: &str, tag, sec| {
            let time = Mtime { sec, nsec: 0 };
            tree.push_raw(Path::new(path), tag, 1, time, 0o644, None);
        };
        add("a", Tag::Dir, 0);
        add("a/x.jpg", Tag::File, 5);
        add("a/y.jpg", Tag::File, 1);
        add("b", Tag::Dir, 0);
        add("b/x.jpg", Tag::File, 9);
        add("b/y.jpg", Tag::File, 1);
        add("z.jpg", Tag::File, 3);
        let (flat, collisions) = flatten(tree);
        let names: Vec<_> = (0..3).map(|i| flat.path_at(i)).collect();
        assert_eq!(
            names,
            [Path::new("x.jpg"), Path::new("y.jpg"), Path::new("z.jpg")]
        );
        let origins: Vec<_> = (0..3).map(|i| flat.origin(i)).collect();
        assert_eq!(
            origins,
            [
                Path::new("b/x.jpg"),
                Path::new("a/y.jpg"),
                Path::new("z.jpg")
            ]
        );
        assert_eq!(
            collisions,
            [
                Collision {
                    kept: "b/x.jpg".into(),
                    dropped: "a/x.jpg".into()
                },
                Collision {
                    kept: "a/y.jpg".into(),
                    dropped: "b/y.jpg".into()
                },
            ]
        );
    }
}
