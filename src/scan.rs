//! Listing one side: every entry below a root, with one `lstat` each, and every error.
//!
//! Symlinks are recorded as links (target text read, never followed). An entry that cannot be
//! listed or stat'ed becomes an error in [`Tree::errors`], never an empty directory: the planner
//! withholds deletions when the source listing is incomplete. An entry that disappears between
//! being listed and being stat'ed is simply not there.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use tracing::debug;
use walkdir::WalkDir;

use crate::entry::{Mtime, RootMeta, Tag, Tree};
use crate::error::{Error, Op};
use crate::filter::Filter;

/// List everything below `root` that the filter allows (a directory it leaves out is not
/// entered). A missing root gives an empty tree with `root: None`.
pub fn scan(root: &Path, filter: &Filter) -> Tree {
    let mut tree = Tree::default();
    let root_meta = match fs::metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return tree,
        Err(e) => {
            tree.errors.push(Error::new(Op::Stat, root, e));
            return tree;
        }
    };
    use std::os::unix::fs::MetadataExt;
    tree.root = Some(RootMeta {
        mtime: Mtime::of(&root_meta),
        mode: (root_meta.mode() & 0o7777) as u16,
    });
    let walk = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| match e.path().strip_prefix(root) {
            Ok(rel) => filter.allows(rel, e.file_type().is_dir()),
            Err(_) => true,
        });
    for item in walk {
        let dirent = match item {
            Ok(dirent) => dirent,
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("filesystem loop"));
                if source.kind() == io::ErrorKind::NotFound {
                    continue;
                }
                tree.errors.push(Error::new(Op::ReadDir, path, source));
                continue;
            }
        };
        let path = dirent.path();
        let meta = match dirent.metadata() {
            Ok(meta) => meta,
            Err(e) => {
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("filesystem loop"));
                if source.kind() != io::ErrorKind::NotFound {
                    tree.errors.push(Error::new(Op::Stat, path, source));
                }
                continue;
            }
        };
        let file_type = meta.file_type();
        let mut target = None;
        let tag = if file_type.is_file() {
            Tag::File
        } else if file_type.is_dir() {
            Tag::Dir
        } else if file_type.is_symlink() {
            match fs::read_link(path) {
                Ok(link) => {
                    target = Some(link);
                    Tag::Symlink
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tree.errors.push(Error::new(Op::ReadLink, path, e));
                    continue;
                }
            }
        } else {
            debug_assert!(
                file_type.is_fifo()
                    || file_type.is_socket()
                    || file_type.is_block_device()
                    || file_type.is_char_device()
            );
            Tag::Special
        };
        let rel = path
            .strip_prefix(root)
            .expect("walkdir yields paths below its root");
        tree.push(rel, &meta, tag, target.as_deref());
    }
    tree.shrink();
    debug!(
        root = %root.display(),
        entries = tree.entries.len(),
        errors = tree.errors.len(),
        "scanned"
    );
    tree
}
