//! `-X`, `-A`: which entries that are otherwise unchanged differ in extended attributes or ACLs.
//!
//! Before planning, every pair of entries of the same type at the same path that will not be
//! written again anyway (a file the quick check calls unchanged, a directory, a symlink with
//! the same target, the same special file) has its attributes read on both sides, all pairs in
//! parallel on the pool. An entry that is copied gets its attributes with the copy, so they are
//! never read twice. On a tree without attributes this costs one `llistxattr` per entry on
//! each side.

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;

use crate::compare::{self, Verdict};
use crate::config::{Compare, Xattrs};
use crate::entry::{merge, Pair, Tag, Tree};
use crate::error::Error;
use crate::fsops::{read_xattrs, Attrs, Base};

/// What differs between a source entry's attributes and its destination's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Differs {
    /// ACLs only.
    Acl,
    /// Other attributes (and maybe ACLs too).
    Xattr,
}

impl Differs {
    /// The reason word of the itemized line.
    pub fn word(self) -> &'static str {
        match self {
            Differs::Acl => "acl",
            Differs::Xattr => "xattr",
        }
    }
}

/// The source entries (by index) whose destination entry differs in the attributes `which`
/// covers, and the source entries whose attributes could not be read (errors of the source
/// listing: they withhold deletions).
pub fn differing(
    src: &Tree,
    dst: &Tree,
    bases: (&Base, &Base),
    which: Xattrs,
    rule: &Compare,
) -> (HashMap<u32, Differs>, Vec<Error>) {
    let kept = |&(i, j): &(u32, u32)| {
        let (a, b) = (&src.entries[i as usize], &dst.entries[j as usize]);
        match (a.tag, b.tag) {
            (Tag::File, Tag::File) => compare::files(a, b, rule, false) == Verdict::Unchanged,
            (Tag::Symlink, Tag::Symlink) => src.target(a) == dst.target(b),
            (x, y) => x == y,
        }
    };
    let mut pairs: Vec<(u32, u32)> = merge(src, dst)
        .filter_map(|pair| match pair {
            Pair::Both(i, j) => Some((i, j)),
            _ => None,
        })
        .filter(kept)
        .collect();
    // The roots are a pair too (`u32::MAX` stands for them).
    if src.root.is_some() && dst.root.is_some() {
        pairs.push((u32::MAX, u32::MAX));
    }
    let root = Path::new("");
    let results: Vec<_> = pairs
        .par_iter()
        .map(|&(i, j)| {
            let (theirs, ours) = match (i, j) {
                (u32::MAX, _) => (root, root),
                (i, j) => (src.origin(i), dst.path_at(j)),
            };
            let a = read_xattrs(bases.0, theirs, which)?;
            // An unreadable destination entry is written again: that reports a real error.
            let b = read_xattrs(bases.1, ours, which).unwrap_or_default();
            Ok::<_, Error>((a != b).then(|| (i, differs(&a, &b))))
        })
        .collect();
    let mut found = HashMap::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(Some((i, what))) => {
                found.insert(i, what);
            }
            Ok(None) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => errors.push(e),
        }
    }
    (found, errors)
}

/// Whether two different sets of attributes differ only in their ACLs.
fn differs(a: &Attrs, b: &Attrs) -> Differs {
    let acl = |name: &[u8]| name.starts_with(b"system.posix_acl_");
    let plain =
        |attrs: &Attrs| -> Attrs { attrs.iter().filter(|(n, _)| !acl(n)).cloned().collect() };
    match plain(a) == plain(b) {
        true => Differs::Acl,
        false => Differs::Xattr,
    }
}
