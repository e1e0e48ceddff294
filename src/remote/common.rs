//! What the remote backends share: their async runtime, turning a flat remote listing into a
//! [`Tree`], and the pipe that hands a remote file's bytes to whoever reads them.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::entry::{Mtime, RootMeta, Tag, Tree};
use crate::filter::Filter;

/// One entry as a remote listing reports it.
#[derive(Debug)]
pub(crate) struct Listed {
    pub rel: PathBuf,
    pub tag: Tag,
    pub size: u64,
    pub mtime: Mtime,
    pub mode: u16,
    pub target: Option<PathBuf>,
}

impl Listed {
    pub fn dir(rel: PathBuf) -> Listed {
        Listed {
            rel,
            tag: Tag::Dir,
            size: 0,
            mtime: Mtime::default(),
            mode: 0o755,
            target: None,
        }
    }
}

/// The runtime remote calls run on; workers of the rayon pool block on it, each with its own
/// request in flight.
pub(crate) fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("syncease-net")
        .enable_all()
        .build()
}

/// An error from a remote library as an `io::Error` of the given kind, keeping its message.
#[cfg(feature = "sftp")]
pub(crate) fn io_error(kind: io::ErrorKind, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(kind, e.to_string())
}

/// Why a key of a remote listing cannot be a path below the root, if it cannot: a part that
/// is empty (`a//b`), `.` or `..` would name another place, or none, here.
pub(crate) fn unusable(rel: &str) -> Option<&'static str> {
    let odd = |part: &str| part.is_empty() || part == "." || part == "..";
    rel.split('/').any(odd).then_some(
        "a name with an empty, '.' or '..' part cannot be a path below the mirror's root",
    )
}

/// Build a tree from entries in any order: sorted into path order, with every directory that
/// only shows as a prefix of deeper paths added, and what the filter excludes (or lies below an
/// excluded directory) left out (a listing already filtered passes `Filter::default()`).
pub(crate) fn tree_of(mut listed: Vec<Listed>, filter: &Filter, root: RootMeta) -> Tree {
    // Walk up from each entry only until a directory already known: one set lookup for most
    // entries, one allocation per directory that exists only as a prefix.
    let mut known: HashSet<&Path> = listed
        .iter()
        .filter(|l| l.tag == Tag::Dir)
        .map(|l| l.rel.as_path())
        .collect();
    let mut implied = Vec::new();
    for l in &listed {
        for dir in l.rel.ancestors().skip(1) {
            if dir.as_os_str().is_empty() || !known.insert(dir) {
                break;
            }
            implied.push(Listed::dir(dir.to_path_buf()));
        }
    }
    drop(known);
    listed.extend(implied);
    // A directory marker and a prefix name the same directory; a file and a directory of the
    // same name can both exist in a key space, and the file is then shadowed.
    listed.sort_by(|a, b| {
        a.rel
            .cmp(&b.rel)
            .then((b.tag == Tag::Dir).cmp(&(a.tag == Tag::Dir)))
    });
    let mut hidden = Vec::new();
    listed.dedup_by(|later, first| {
        let same = later.rel == first.rel;
        if same && later.tag != Tag::Dir {
            hidden.push(later.rel.clone());
        }
        same
    });
    let mut tree = Tree::default();
    let why = "an object of this name is hidden by a folder of the same name";
    tree.unusable
        .extend(hidden.into_iter().map(|rel| (rel, why)));
    tree.root = Some(root);
    let mut excluded: Option<PathBuf> = None;
    for l in listed {
        // Every part a plain name: nothing outside the root can be named (see `unusable`).
        let plain = l
            .rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            tree.unusable
                .push((l.rel, "a name that leaves the mirror's root"));
            continue;
        }
        if excluded
            .as_deref()
            .is_some_and(|dir| l.rel.starts_with(dir))
        {
            continue;
        }
        if !filter.allows(&l.rel, l.tag == Tag::Dir) {
            if l.tag == Tag::Dir {
                excluded = Some(l.rel);
            }
            continue;
        }
        tree.push_raw(&l.rel, l.tag, l.size, l.mtime, l.mode, l.target.as_deref());
    }
    tree.finish();
    tree
}

/// A remote file's bytes as a blocking reader: a task on the backend's runtime fetches them
/// (several requests in flight, as the backend sees fit) and hands them over in order, at most
/// `depth` chunks ahead of the reader. The reader blocks on a plain channel, so it may be read
/// from anywhere — a worker of the pool, or an upload to another remote running on that
/// remote's runtime. Dropping it stops the fetch.
pub(crate) struct Pipe {
    chunks: std::sync::mpsc::Receiver<io::Result<Option<Vec<u8>>>>,
    room: std::sync::Arc<tokio::sync::Semaphore>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

/// The fetching end of a [`Pipe`].
pub(crate) struct Feed {
    chunks: std::sync::mpsc::Sender<io::Result<Option<Vec<u8>>>>,
    room: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Feed {
    /// Hand over the next chunk (`Ok(None)`: the end, after which nothing more is read), once
    /// the reader has room for it; false when the reader is gone and fetching should stop.
    pub async fn send(&self, chunk: io::Result<Option<Vec<u8>>>) -> bool {
        let Ok(permit) = self.room.acquire().await else {
            return false;
        };
        permit.forget();
        self.chunks.send(chunk).is_ok()
    }
}

/// Start `fetch` on `rt`, feeding a [`Pipe`] that holds at most `depth` chunks.
pub(crate) fn pipe<F>(
    rt: &tokio::runtime::Runtime,
    depth: usize,
    fetch: impl FnOnce(Feed) -> F,
) -> Pipe
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let room = std::sync::Arc::new(tokio::sync::Semaphore::new(depth.max(1)));
    rt.spawn(fetch(Feed {
        chunks: tx,
        room: room.clone(),
    }));
    Pipe {
        chunks: rx,
        room,
        chunk: Vec::new(),
        at: 0,
        ended: false,
    }
}

impl io::Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            let next = self.chunks.recv().unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the transfer stopped before the end of the file",
                ))
            });
            self.room.add_permits(1);
            match next {
                Ok(Some(chunk)) => (self.chunk, self.at) = (chunk, 0),
                Ok(None) => self.ended = true,
                Err(e) => {
                    self.ended = true;
                    return Err(e);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // A fetch waiting for room stops at once.
        self.room.close();
    }
}

/// A path below the root as the `/`-separated text remote protocols use; `None` when it is not
/// valid UTF-8 (such names cannot be sent).
pub(crate) fn text(rel: &Path) -> io::Result<&str> {
    let text = rel.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the name is not valid UTF-8, which this destination cannot store",
        )
    })?;
    // The last guard: no request names a place outside the root (an absolute path, as
    // `--backup-dir` may be, is checked below its `/`).
    let body = text.strip_prefix('/').unwrap_or(text);
    match unusable(body) {
        Some(why) if !body.is_empty() => Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
        _ => Ok(text),
    }
}
