//! `--checksum`: which files of equal size differ in content.
//!
//! Before planning, every pair of regular files with the same path and size on both sides is
//! hashed with BLAKE3, both files of a pair at once and all pairs in parallel on the pool. Only
//! same-size pairs are read: a size difference already decides. The result is a set of
//! source entries whose contents differ, which the planner turns into `content` updates.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;

use rayon::prelude::*;

use crate::entry::{Tag, Tree};
use crate::error::{Context, Error, Op};

/// The source entries (by index) whose same-size destination file differs in content, and the
/// source files that could not be read (errors of the source listing: they withhold deletions).
pub fn differing(
    src: &Tree,
    dst: &Tree,
    src_root: &Path,
    dst_root: &Path,
) -> (HashSet<u32>, Vec<Error>) {
    let mut pairs = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < src.entries.len() && j < dst.entries.len() {
        let (a, b) = (&src.entries[i], &dst.entries[j]);
        match src.path(a).cmp(dst.path(b)) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                if a.tag == Tag::File && b.tag == Tag::File && a.size == b.size {
                    pairs.push((i as u32, j as u32));
                }
                i += 1;
                j += 1;
            }
        }
    }
    let results: Vec<_> = pairs
        .par_iter()
        .map(|&(i, j)| {
            let (a, b) = rayon::join(
                || hash(&src_root.join(src.origin(i))),
                || hash(&dst_root.join(dst.path_at(j))),
            );
            match (a, b) {
                (Err(e), _) => Err(e),
                // An unreadable destination file is rewritten: the copy reports any real error.
                (Ok(a), b) => Ok((b.ok() != Some(a)).then_some(i)),
            }
        })
        .collect();
    let mut changed = HashSet::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(Some(i)) => {
                changed.insert(i);
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
