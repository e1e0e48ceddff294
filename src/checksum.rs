//! `--checksum`: which files of equal size differ in content.
//!
//! Before planning, every pair of regular files with the same path and size on both sides is
//! hashed with BLAKE3, both files of a pair at once and all pairs in parallel on the pool. Only
//! same-size pairs are read: a size difference already decides. The result is a set of
//! source entries whose contents differ, which the planner turns into `content` updates.
//! Files are read in 64 KiB pieces (BLAKE3's own reader loop): `io::copy`'s 8 KiB pieces are
//! narrower than the 16 KiB an AVX-512 hasher takes at once, and cost eight times the reads.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use rayon::prelude::*;

use crate::endpoint::{is_interrupted, Expected, Origin, Source, READS_CUT};
use crate::entry::{same_size_files, Tree};
use crate::error::{Error, Op};
use crate::fsops::{open_read, Base};

/// The source entries (by index) whose same-size destination file differs in content, and the
/// source files that could not be read (errors of the source listing: they withhold deletions).
pub fn differing(
    src: &Tree,
    dst: &Tree,
    origin: &dyn Origin,
    dst_base: &Base,
) -> (HashSet<u32>, Vec<Error>) {
    let pairs = same_size_files(src, dst);
    let results: Vec<_> = pairs
        .par_iter()
        .map(|&(i, j)| {
            // Told to stop: the run plans nothing on what is left.
            if crate::interrupt::requested().is_some() {
                return Ok(None);
            }
            let rel = src.origin(i);
            // A checksum the origin has (an S3 object's MD5) spares reading the source.
            let told = open_read(dst_base, dst.path_at(j))
                .ok()
                .and_then(|mut file| origin.same_content(rel, &mut file));
            match told {
                Some(Ok(same)) => return Ok((!same).then_some(i)),
                // An unreadable destination file is rewritten, as below.
                Some(Err(_)) => return Ok(Some(i)),
                None => {}
            }
            let (a, b) = rayon::join(
                || hash(Source { origin, rel }),
                || hash_file(dst_base, dst.path_at(j)),
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

/// The BLAKE3 of the file `rel` below `base`, read through directory handles.
fn hash_file(base: &Base, rel: &Path) -> Result<blake3::Hash, Error> {
    let path = || base.path(rel);
    let mut file = open_read(base, rel).map_err(|e| Error::new(Op::Open, path(), e))?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(UntilStop(&mut file))
        .map_err(|e| Error::new(Op::Read, path(), e))?;
    Ok(hasher.finalize())
}

/// A reader that ends in [`crate::interrupt::check`]'s error once a stop is asked for, so that
/// hashing a large file does not hold up a stopped run.
pub(crate) struct UntilStop<R>(pub(crate) R);

impl<R: io::Read> io::Read for UntilStop<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::interrupt::check()?;
        self.0.read(buf)
    }
}

/// The BLAKE3 of a source file, local or remote (read as it is now). A remote read cut by a
/// lost connection is read again, as a copy would be (see [`READS_CUT`]).
pub(crate) fn hash(source: Source<'_>) -> Result<blake3::Hash, Error> {
    if let Some(base) = source.origin.folder() {
        return hash_file(base, source.rel);
    }
    let not_found = || Error::new(Op::Open, source.path(), io::ErrorKind::NotFound.into());
    let mut cuts = 0;
    loop {
        let (mut opened, _) = source.open(Expected::fresh())?.ok_or_else(not_found)?;
        let mut hasher = blake3::Hasher::new();
        match hasher.update_reader(UntilStop(&mut opened)) {
            Ok(_) => return Ok(hasher.finalize()),
            Err(e) if is_interrupted(&e) && cuts < READS_CUT => cuts += 1,
            Err(e) => return Err(Error::new(Op::Read, source.path(), e)),
        }
    }
}
