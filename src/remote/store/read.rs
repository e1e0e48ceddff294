//! A bucket prefix as the side a run reads: a restore, or a copy to another remote.
//!
//! - Listing: the one recursive listing a destination gets too. An object's time is the
//!   source mtime recorded when it was uploaded (the `mtime` metadata, rclone's format): taken
//!   from the manifest (one GET) for objects still as it says, else read with a HEAD each, in
//!   parallel; an object that has none (written by another tool) has its LastModified.
//! - What S3 has no place for is not made up: permission bits and directory times are kept
//!   as the destination has them (see [`Keeps`]); a new file is made with mode 0644, a new
//!   directory with 0755 and the time of the run.
//! - Reading: one ranged GET per part (several parts of a large object in flight, within the
//!   transfer memory budget), conditional on the ETag listed, so an object replaced since is
//!   never mixed into the copy (it is read again as it is now); the bytes are checked against
//!   the object's MD5 where S3 states one (the ETag of a single-part upload, or the
//!   `md5chksum` metadata of a multipart one).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt as _;
use md5::{Digest, Md5};
use opendal::options::ReaderOptions;
use opendal::{ErrorKind, Operator};

use super::manifest::Version;
use super::{part_size, store_error, Head, Store, PARTS_IN_FLIGHT};
use crate::endpoint::{self, Destination, Expected, Keeps, Opened, Origin, Place, Stream};
use crate::entry::{Mtime, Tag, Tree};
use crate::error::{Error, Op, Result};
use crate::filter::Filter;
use crate::remote::common::{self, Feed};

/// What S3 keeps of an entry, whichever side it is on: object times are ours, exact; there are
/// no permission bits and no directory times.
pub(super) const KEEPS: Keeps = Keeps {
    modes: false,
    dir_times: false,
    link_times: true,
    nanoseconds: true,
    seconds: i64::MIN..=i64::MAX,
};

impl Origin for Store {
    fn path(&self, rel: &Path) -> PathBuf {
        Destination::path(self, rel)
    }

    fn scan(&self, filter: &Filter) -> Tree {
        let mut tree = Destination::scan(self, filter);
        if tree.errors.is_empty() {
            self.recorded_times(&mut tree);
        }
        tree
    }

    fn keeps(&self) -> Option<Keeps> {
        Some(KEEPS)
    }

    fn open(&self, rel: &Path, expected: Expected) -> Result<Option<(Opened, Expected)>> {
        let key = self
            .key(rel)
            .map_err(|e| self.fail(Op::OpenSource, rel, e))?;
        let mut expected = expected;
        let listed = rel.to_str().and_then(|r| self.listed().get(r).cloned());
        let (etag, md5) = match listed {
            Some(Version { etag, .. }) if !expected.fresh => {
                let md5 = self
                    .listed_md5(&etag)
                    .or_else(|| self.md5s().get(&key).copied());
                (Some(etag), md5)
            }
            _ => {
                let meta = match self.rt.block_on(self.op.stat(&key)) {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(self.fail(Op::Stat, rel, store_error(e))),
                };
                let head = Head::of(&meta, self.kind);
                expected.size = meta.content_length();
                expected.mtime = head.mtime.unwrap_or_default();
                (meta.etag().map(str::to_string), head.md5)
            }
        };
        let get = Get {
            op: self.op.clone(),
            key,
            etag,
            md5,
            size: expected.size,
            memory: self.memory.clone(),
        };
        let bytes = common::pipe(&self.rt, 2, |feed| get.run(feed));
        let stream = Stream {
            bytes: Box::new(bytes),
            md5,
        };
        Ok(Some((Opened::Stream(stream), expected)))
    }

    fn place(&self) -> Option<Place> {
        Destination::place(self)
    }

    /// The MD5 the listing's ETag states (a single-part upload) or a HEAD found in the
    /// metadata (`md5chksum`), against the local file's.
    fn same_content(&self, rel: &Path, local: &mut std::fs::File) -> Option<io::Result<bool>> {
        let text = rel.to_str()?;
        let md5 = match self
            .listed()
            .get(text)
            .and_then(|v| self.listed_md5(&v.etag))
        {
            Some(md5) => md5,
            None => *self.md5s().get(&self.key(rel).ok()?)?,
        };
        Some(super::file_md5(local).map(|local| local == md5))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl Store {
    /// Give each listed file the time recorded when it was uploaded, and each directory (S3
    /// keeps no times of theirs) the time of the run. A HEAD that fails is an error of the
    /// listing: it withholds deletions, as an unreadable local file would.
    fn recorded_times(&self, tree: &mut Tree) {
        let now = Mtime::now();
        if let Some(root) = tree.root.as_mut() {
            root.mtime = now;
        }
        let listed = self.listed().clone();
        let rows = self.read_manifest().unwrap_or_default();
        let mut asked = Vec::new();
        for j in 0..tree.entries.len() as u32 {
            let rel = tree.path_at(j).to_str().unwrap_or_default().to_string();
            let entry = &mut tree.entries[j as usize];
            if entry.tag == Tag::Dir {
                entry.mtime = now;
                continue;
            }
            let row = rows
                .get(&rel)
                .filter(|row| listed.get(&rel).is_some_and(|now| row.holds_for(now)));
            match row {
                Some(row) => entry.mtime = row.mtime,
                None => asked.push(j),
            }
        }
        if !self.keeps_metadata() {
            // No metadata to ask for (WebDAV): the rest keep the time the server lists.
            return;
        }
        let keys = asked
            .iter()
            .map(|&j| self.key(tree.path_at(j)).unwrap_or_default())
            .collect::<Vec<_>>();
        let heads = self.heads(keys.clone());
        let mut md5s = self.md5s();
        for ((j, key), head) in asked.into_iter().zip(keys).zip(heads) {
            match head {
                Ok(head) => {
                    if let Some(mtime) = head.mtime {
                        tree.entries[j as usize].mtime = mtime;
                    }
                    if let Some(md5) = head.md5 {
                        md5s.insert(key, md5);
                    }
                }
                Err(e) => {
                    let path = Destination::path(self, tree.path_at(j));
                    tree.errors.push(Error::new(Op::Stat, path, e));
                }
            }
        }
    }
}

/// One object's download: what to ask for and what the bytes must be.
struct Get {
    op: Operator,
    key: String,
    /// The ETag listed: an object with another is not read (it changed since).
    etag: Option<String>,
    md5: Option<[u8; 16]>,
    size: u64,
    /// The transfer memory budget, in MiB, shared with uploads.
    memory: Arc<tokio::sync::Semaphore>,
}

impl Get {
    /// Fetch the object into `feed`, ending with the end marker or the error that stopped it.
    async fn run(self, feed: Feed) {
        let result = self.fetch(&feed).await;
        let _ = feed.send(result.map(|()| None)).await;
    }

    async fn fetch(&self, feed: &Feed) -> io::Result<()> {
        if self.size == 0 {
            return Ok(());
        }
        let part = part_size(self.size);
        let parts = match self.size > part as u64 {
            true => PARTS_IN_FLIGHT,
            false => 1,
        };
        // The parts in flight and the one handed over.
        let holds = (parts as u64 + 1) * self.size.min(part as u64).div_ceil(super::MIB);
        let _budget = self
            .memory
            .acquire_many(holds.min(u64::from(super::TRANSFER_MEMORY_MIB)) as u32)
            .await
            .expect("the budget is never closed");
        let options = ReaderOptions {
            if_match: self.etag.clone(),
            concurrent: parts,
            chunk: Some(part),
            content_length_hint: Some(self.size),
            ..ReaderOptions::default()
        };
        let reader = self
            .op
            .reader_options(&self.key, options)
            .await
            .map_err(read_error)?;
        let mut bytes = reader
            .into_bytes_stream(0..self.size)
            .await
            .map_err(read_error)?;
        let mut hasher = self.md5.map(|_| Md5::new());
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(stream_error)?;
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            if !feed.send(Ok(Some(chunk.to_vec()))).await {
                return Ok(());
            }
        }
        if let (Some(hasher), Some(md5)) = (hasher, self.md5) {
            if <[u8; 16]>::from(hasher.finalize()) != md5 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the bytes received do not match the object's MD5",
                ));
            }
        }
        Ok(())
    }
}

/// A failed read of a part, as the byte stream reports it: see [`read_error`].
fn stream_error(e: io::Error) -> io::Error {
    let inner = e.get_ref().and_then(|e| e.downcast_ref::<opendal::Error>());
    match inner.map(opendal::Error::kind) {
        Some(ErrorKind::ConditionNotMatch | ErrorKind::NotFound) => endpoint::changed(),
        _ => e,
    }
}

/// A failed read: an object replaced or removed since it was listed is a change (read again
/// as it is now), anything else an error of the transfer.
fn read_error(e: opendal::Error) -> io::Error {
    match e.kind() {
        ErrorKind::ConditionNotMatch | ErrorKind::NotFound => endpoint::changed(),
        _ => store_error(e),
    }
}
