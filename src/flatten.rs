//! `--flatten`: the original SyncEase layout, where every file of SRC lands directly in DST.
//!
//! The source listing is rewritten before planning: each file or symlink, from any depth, is
//! renamed to its bare file name (remembering where it came from); directories disappear. When
//! several files share a name, the one with the newest mtime wins; on equal mtimes the one whose
//! source path sorts first (bytewise) wins, so the result never depends on scan order. The
//! planner then mirrors this flat listing like any other: DST entries with no source of that
//! name, subdirectories included, are deleted.

use std::path::PathBuf;

use crate::entry::{Entry, Kind, Tree};

/// A name that several source files share, and the one that was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub kept: PathBuf,
    pub dropped: PathBuf,
}

/// Rewrite a source listing into its flat form. Returns the listing and the collisions.
pub fn flatten(tree: Tree) -> (Tree, Vec<Collision>) {
    let Tree {
        root,
        entries,
        errors,
        ..
    } = tree;
    let mut flat: Vec<(Entry, PathBuf)> = entries
        .into_iter()
        .filter(|e| e.kind != Kind::Dir)
        .map(|mut e| {
            let origin = std::mem::take(&mut e.path);
            e.path = PathBuf::from(origin.file_name().expect("entries have names"));
            (e, origin)
        })
        .collect();
    // Group by name, best first: newest mtime, then smallest source path.
    flat.sort_by(|(a, a_origin), (b, b_origin)| {
        a.path
            .cmp(&b.path)
            .then(b.mtime.cmp(&a.mtime))
            .then(a_origin.cmp(b_origin))
    });
    let mut collisions = Vec::new();
    let mut kept: Vec<(Entry, PathBuf)> = Vec::with_capacity(flat.len());
    for (entry, origin) in flat {
        match kept.last() {
            Some((last, last_origin)) if last.path == entry.path => collisions.push(Collision {
                kept: last_origin.clone(),
                dropped: origin,
            }),
            _ => kept.push((entry, origin)),
        }
    }
    let (entries, origins) = kept.into_iter().unzip();
    let tree = Tree {
        root,
        entries,
        errors,
        origins,
    };
    (tree, collisions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Mtime;

    fn file(path: &str, sec: i64) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            size: 1,
            mtime: Mtime { sec, nsec: 0 },
            mode: 0o644,
        }
    }

    #[test]
    fn newest_wins_and_ties_go_to_the_first_path() {
        let dir = Entry {
            kind: Kind::Dir,
            ..file("a", 0)
        };
        let tree = Tree {
            entries: vec![
                dir.clone(),
                file("a/x.jpg", 5),
                file("a/y.jpg", 1),
                Entry {
                    path: "b".into(),
                    ..dir
                },
                file("b/x.jpg", 9),
                file("b/y.jpg", 1),
                file("z.jpg", 3),
            ],
            ..Tree::default()
        };
        let (flat, collisions) = flatten(tree);
        let names: Vec<_> = flat.entries.iter().map(|e| e.path.clone()).collect();
        assert_eq!(
            names,
            [PathBuf::from("x.jpg"), "y.jpg".into(), "z.jpg".into()]
        );
        assert_eq!(
            flat.origins,
            [PathBuf::from("b/x.jpg"), "a/y.jpg".into(), "z.jpg".into()]
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
