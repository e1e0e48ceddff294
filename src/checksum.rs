//! `--checksum`: which files of equal size differ in content.
//!
//! Before planning, every pair of regular files with the same path and size on both sides is
//! hashed with BLAKE3, both files of a pair at once and all pairs in parallel on the pool. Only
//! same-size pairs are read: a size difference already decides. The result is a set of
//! destination paths whose contents differ, which the planner turns into `content` updates.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::entry::{Kind, Tree};
use crate::error::{Context, Error, Op};

/// The DST paths (relative) of same-size files whose contents differ, and the source files that
/// could not be read (errors of the source listing: they withhold deletions).
pub fn differing(
    src: &Tree,
    dst: &Tree,
    src_root: &Path,
    dst_root: &Path,
) -> (HashSet<PathBuf>, Vec<Error>) {
    let mut pairs = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < src.entries.len() && j < dst.entries.len() {
        let (a, b) = (&src.entries[i], &dst.entries[j]);
        match a.path.cmp(&b.path) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                if a.kind == Kind::File && b.kind == Kind::File && a.size == b.size {
                    pairs.push((src.origin(i), &b.path));
                }
                i += 1;
                j += 1;
            }
        }
    }
    let results: Vec<_> = pairs
        .par_iter()
        .map(|(origin, path)| {
            let (a, b) = rayon::join(
                || hash(&src_root.join(origin)),
                || hash(&dst_root.join(path)),
            );
            match (a, b) {
                (Err(e), _) => Err(e),
                // An unreadable destination file is rewritten: the copy reports any real error.
                (Ok(a), b) => Ok((b.ok() != Some(a)).then(|| path.to_path_buf())),
            }
        })
        .collect();
    let mut changed = HashSet::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(Some(path)) => {
                changed.insert(path);
            }
            Ok(None) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => errors.push(e),
        }
    }
    (changed, errors)
}

fn hash(path: &Path) -> Result<blake3::Hash, Error> {
    let mut file = File::open(path).at(Op::Open, path)?;
    let mut hasher = blake3::Hasher::new();
    io::copy(&mut file, &mut hasher).at(Op::Read, path)?;
    Ok(hasher.finalize())
}
