//! Object stores through Apache OpenDAL: `s3://bucket/prefix` (S3 and S3-compatible stores),
//! `gs://bucket/prefix` (Google Cloud Storage), `az://container/prefix` (Azure Blob Storage)
//! and `webdav://host/path` (a WebDAV server). One engine; where a service differs, its
//! [`Service`] decides (see GCS, Azure and WebDAV at the end of this list).
//!
//! - Listing: one recursive listing of the prefix (size, ETag, LastModified per object).
//! - Comparing: size first; for files of equal size the source mtime stored at upload in the
//!   user metadata `mtime` (rclone's format: seconds with a fractional part, so either tool
//!   reads the other's objects), read with one HEAD per such file, in parallel. `--size-only`
//!   needs no HEAD. `--checksum` compares the local MD5 with the ETag of a single-part upload,
//!   or with the MD5 kept in the metadata `md5chksum` (base64, as rclone does) of a multipart one.
//! - Writing: an object appears whole or not at all. Files up to [`PART`] go up in one PUT,
//!   larger ones as a multipart upload with parts in flight at once; a failed or changed
//!   upload is aborted, and one killed midway leaves no object at the key.
//! - What S3 has no place for: permission bits and directory times are not kept (they are taken
//!   as equal to the source's); every directory is a zero-byte marker object `dir/`, so empty
//!   directories survive; symlinks are skipped with a warning.
//! - `--backup-dir PREFIX`: a key prefix in the same bucket; an object is copied there on the
//!   server before it is overwritten or deleted.
//! - GCS and Azure keep the time as rclone does there (`mtime`, RFC 3339) and state each
//!   object's MD5 (Content-MD5) in the listing.
//! - WebDAV has folders, not keys: a file is uploaded to a temporary name in its folder and
//!   moved over the target when whole (a PUT is not atomic on every server); a folder is
//!   deleted only once it is seen to be empty (a DELETE takes everything below it); there is no
//!   user metadata (servers refuse or drop it), so the source time of each file lives only in
//!   the manifest, and a file the manifest does not vouch for is compared by its
//!   modification time on the server (then it differs, and the file is uploaded again);
//!   `--checksum` reads the file back. No multipart upload: a file goes up in one request.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use futures_util::StreamExt as _;
use md5::{Digest, Md5};
use opendal::options::{ListOptions, WriteOptions};
use opendal::{ErrorKind, Operator};
use rayon::prelude::*;
use tokio::runtime::Runtime;
use tracing::debug;

use self::manifest::{Row, Version};
use super::common::{self, Listed};
use crate::checksum::UntilStop;
use crate::config::{Compare, Method};
use crate::endpoint::{
    self, backup_slot, temp_name, Copied, CopyError, Destination, Expected, Held, Opened, Origin,
    Place, Source,
};
use crate::entry::{same_size_files, Chown, Mtime, RootMeta, Tag, Tree};
use crate::error::{Error, Op, Result};
use crate::filter::Filter;
use crate::remote::Service;

#[cfg(feature = "s3")]
mod between;
mod connect;
mod manifest;
#[cfg(feature = "webdav")]
mod netrc;
mod read;

/// Files up to this size are one PUT; larger ones are uploaded in parts of this size, or
/// larger ones where 10,000 parts would not hold the file (see [`part_size`]).
pub const PART: usize = 8 << 20;
/// S3's limits: parts to an object, and bytes to a part.
const MAX_PARTS: u64 = 10_000;
const MAX_PART: u64 = 5 << 30;
const MIB: u64 = 1 << 20;
/// What all transfers together may hold in memory at once, in MiB: an upload holds its file
/// (one PUT) or the parts in flight and the one being read (multipart) while it runs, a
/// download the parts in flight and the one handed over.
const TRANSFER_MEMORY_MIB: u32 = 256;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// S3 copies objects of up to 5 GiB on the server (larger ones would take a multipart copy):
/// larger ones go through this machine.
const MAX_COPY: u64 = 5 << 30;
/// Keys one DeleteObjects request removes (S3's limit).
const DELETES_PER_REQUEST: usize = 1000;
/// Folders listed at once where the service cannot list a tree itself (WebDAV).
const FOLDERS_IN_FLIGHT: usize = 16;
/// HEAD requests in flight at once while comparing.
const HEADS_IN_FLIGHT: usize = 32;

/// A bucket prefix (a WebDAV folder) as a source or destination.
pub struct Store {
    rt: Runtime,
    op: Operator,
    /// Which service: what it keeps and how it writes.
    kind: Service,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    /// The key prefix of the mirror: empty, or ending in `/`.
    prefix: String,
    /// The key prefix of `--backup-dir`: ending in `/`.
    backup: Option<String>,
    /// Size and ETag of each file the listing found, by path below the prefix.
    listed: Mutex<HashMap<String, Version>>,
    /// The manifest's rows that hold for the objects as they are now (see [`manifest`]).
    rows: Mutex<manifest::Rows>,
    /// The manifest in the bucket no longer says what the prefix holds: written at the end.
    stale: AtomicBool,
    /// Off when the source has an entry at the manifest's key (that file is mirrored there).
    manifest: AtomicBool,
    /// The listing the reachability check started: its first entry, and the rest to come.
    started: Mutex<Option<(Option<opendal::Entry>, opendal::Lister)>>,
    /// The transfer memory budget, in MiB (see [`TRANSFER_MEMORY_MIB`]).
    memory: std::sync::Arc<tokio::sync::Semaphore>,
    /// Buffers of multipart uploads' parts, used again.
    parts: std::sync::Arc<Parts>,
    /// The service and bucket, as a [`Place`] names them.
    service: String,
    /// Copies from another bucket of this S3 service (see [`between`]).
    #[cfg(feature = "s3")]
    between: Option<between::Between>,
    /// The service refused such a copy: the rest go through this machine.
    across_refused: AtomicBool,
    /// The MD5 of multipart objects whose HEAD stated one (`md5chksum`), by key: what a
    /// download from them is checked against.
    md5s: Mutex<HashMap<String, [u8; 16]>>,
    /// New objects get a storage class or encryption of their own (`--s3-storage-class`,
    /// `--s3-sse`), which a copy on the server would not give them: no such copies.
    restyled: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

fn store_error(e: opendal::Error) -> io::Error {
    let kind = match e.kind() {
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, Failure::of(e))
}

/// The buffers of multipart uploads' parts, each given back when the request that sent it is
/// done (OpenDAL drops it), for the next part to fill. Freed and allocated anew instead, glibc
/// keeps many of them in its per-thread arenas, and a run grows well past its transfer budget:
/// 16 uploads of 64 MiB to Garage peaked at 444 MiB, with a budget of 256.
#[derive(Default)]
struct Parts {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl Parts {
    /// Bytes of idle buffers kept at most: the transfer budget.
    const KEPT: usize = (TRANSFER_MEMORY_MIB as usize) << 20;

    /// An empty buffer for a part of `size` bytes: an idle one of that size (parts grow with
    /// the file; a larger one would hold memory the part does not use), else a new one.
    fn take(&self, size: usize) -> Vec<u8> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.iter().position(|buf| buf.capacity() == size) {
            Some(at) => idle.swap_remove(at),
            None => Vec::with_capacity(size),
        }
    }

    /// `buf` as the bytes of a request, back here once the request is done with them.
    fn hand_over(self: &std::sync::Arc<Self>, buf: Vec<u8>) -> opendal::Buffer {
        let part = Part {
            buf,
            parts: self.clone(),
        };
        opendal::Buffer::from(bytes::Bytes::from_owner(part))
    }
}

/// A part's bytes in flight (see [`Parts`]).
struct Part {
    buf: Vec<u8>,
    parts: std::sync::Arc<Parts>,
}

impl AsRef<[u8]> for Part {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut idle = self.parts.idle.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = idle.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= Parts::KEPT {
            idle.push(buf);
        }
    }
}

/// Why a copy on the server did not happen.
#[derive(Debug)]
enum Refusal {
    /// The source object is gone.
    Vanished,
    /// The service does not make this copy (it refused the request as such): the bytes are to
    /// go through this machine instead. Only copies between buckets are refused so.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    Unsupported(io::Error),
    /// The copy failed.
    Failed(io::Error),
}

/// A failed request as a person reads it — what the service said (its message and code),
/// else OpenDAL's message and cause — with OpenDAL's error, and all its context, as the source.
#[derive(Debug)]
struct Failure {
    text: String,
    cause: opendal::Error,
}

impl Failure {
    fn of(cause: opendal::Error) -> Failure {
        let rendered = cause.to_string();
        let status = rendered
            .split("status: ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .filter(|code| code.len() == 3);
        let text = said(cause.message()).unwrap_or_else(|| {
            // A body's first line, unless it is markup (an HTML error page) or says nothing.
            let mut text: String = cause
                .message()
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .filter(|line| !line.starts_with('<'))
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            match status {
                Some(code) if text.is_empty() => text = format!("{} (HTTP {code})", cause.kind()),
                Some(code) if !text.contains(code) => text = format!("{text} (HTTP {code})"),
                None if text.is_empty() => text = cause.kind().to_string(),
                _ => {}
            }
            if let Some(inner) = std::error::Error::source(&cause) {
                text = format!("{text}: {inner}");
            }
            text
        });
        Failure { text, cause }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// The message and code of an S3 error response, from OpenDAL's rendering of it
/// (`S3Error { code: "AccessDenied", message: "Access Denied", … }`).
fn said(rendered: &str) -> Option<String> {
    let field = |name: &str| {
        let key = format!("{name}: \"");
        let at = rendered.find(&key)? + key.len();
        let rest = &rendered[at..];
        Some(rest[..rest.find('"')?].to_string())
    };
    let code = field("code").filter(|c| !c.is_empty())?;
    Some(match field("message").filter(|m| !m.is_empty()) {
        Some(message) => format!("{message} ({code})"),
        None => code,
    })
}

/// The part size of a multipart upload of `size` bytes: [`PART`], or the smallest whole
/// number of MiB that keeps the file within S3's 10,000 parts (up to its 5 GiB a part).
pub fn part_size(size: u64) -> usize {
    let needed = size.div_ceil(MAX_PARTS).next_multiple_of(MIB);
    needed.clamp(PART as u64, MAX_PART) as usize
}

/// rclone's `mtime` metadata: Unix seconds with nine fractional digits.
pub fn format_mtime(t: Mtime) -> String {
    let nanos = t.sec as i128 * 1_000_000_000 + t.nsec as i128;
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// rclone's `mtime` metadata on GCS and Azure: RFC 3339 with nanoseconds, in UTC.
pub fn format_mtime_rfc3339(t: Mtime) -> Option<String> {
    let stamp = opendal::raw::Timestamp::new(t.sec, t.nsec as i32).ok()?;
    Some(stamp.to_string())
}

/// Read an `mtime` metadata value: seconds (any number of fractional digits, optional sign),
/// or an RFC 3339 time.
pub fn parse_mtime(text: &str) -> Option<Mtime> {
    let text = text.trim();
    if text.contains('T') {
        return text.parse::<opendal::raw::Timestamp>().ok().map(mtime_of);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: i128 = whole.parse::<i128>().ok()? * 1_000_000_000;
    let frac9: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    nanos += frac9.parse::<i128>().ok()?;
    if negative {
        nanos = -nanos;
    }
    Some(Mtime {
        sec: i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?,
        nsec: nanos.rem_euclid(1_000_000_000) as u32,
    })
}

fn mtime_of(t: opendal::raw::Timestamp) -> Mtime {
    let t = t.into_inner();
    let (sec, nsec) = (t.as_second(), t.subsec_nanosecond());
    match nsec < 0 {
        true => Mtime {
            sec: sec - 1,
            nsec: (nsec + 1_000_000_000) as u32,
        },
        false => Mtime {
            sec,
            nsec: nsec as u32,
        },
    }
}

/// An object's version as a listing entry or a HEAD shows it (`None` with neither an ETag nor
/// a modification time: then nothing tells one version from another of the same size).
fn version_of(meta: &opendal::Metadata) -> Option<Version> {
    if meta.etag().is_none() && meta.last_modified().is_none() {
        return None;
    }
    Some(Version {
        size: meta.content_length(),
        etag: meta.etag().unwrap_or_default().to_string(),
        modified: meta.last_modified().map(|t| mtime_of(t).sec),
    })
}

/// The content MD5 a single-part ETag states (32 hex digits; a multipart one is not an MD5).
fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let tag = etag.trim_matches('"').as_bytes();
    if tag.len() != 32 || !tag.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
    let mut md5 = [0; 16];
    for (byte, pair) in md5.iter_mut().zip(tag.chunks(2)) {
        *byte = digit(pair[0]) << 4 | digit(pair[1]);
    }
    Some(md5)
}

/// The content MD5 an object's metadata states: on S3 the ETag of a single-part upload, else
/// Content-MD5 (GCS, Azure); failing those, the `md5chksum` metadata rclone and syncease give a
/// multipart upload. WebDAV states none.
fn stated_md5(meta: &opendal::Metadata, kind: Service) -> Option<[u8; 16]> {
    let base64 = |text: &str| {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        <[u8; 16]>::try_from(raw).ok()
    };
    let stated = match kind {
        Service::S3 => meta.etag().and_then(etag_md5),
        Service::Gcs | Service::Azure => meta.content_md5().and_then(base64),
        Service::Webdav => None,
    };
    stated.or_else(|| {
        let kept = meta.user_metadata()?;
        base64(kept.get("md5chksum")?)
    })
}

/// MD5 of a source file, local or remote, as it is now: read in 64 KiB pieces (`io::copy`
/// alone reads 8 KiB), up to a stop.
fn source_md5(source: Source<'_>) -> io::Result<[u8; 16]> {
    let opened = source.open(Expected::fresh()).map_err(|e| e.source)?;
    let (mut opened, _) = opened.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    let mut hasher = Md5::new();
    let mut reader = io::BufReader::with_capacity(1 << 16, UntilStop(&mut opened));
    io::copy(&mut reader, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// MD5 of a whole local file, read from its start; it is left at its start again.
fn file_md5(file: &mut std::fs::File) -> io::Result<[u8; 16]> {
    use std::io::Seek;
    let mut hasher = Md5::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    file.rewind()?;
    Ok(hasher.finalize().into())
}

impl Store {
    /// The content MD5 a listed ETag states: only S3's (of a single-part upload) is one; other
    /// services' ETags, even where they look like one (Nextcloud's), are not.
    fn listed_md5(&self, etag: &str) -> Option<[u8; 16]> {
        match self.kind {
            Service::S3 => etag_md5(etag),
            _ => None,
        }
    }

    /// How `rel` is named to the user: `s3://bucket/prefix/rel`.
    fn path(&self, rel: &Path) -> PathBuf {
        match rel.as_os_str().is_empty() {
            true => PathBuf::from(&self.url),
            false => PathBuf::from(format!("{}/{}", self.url, rel.display())),
        }
    }

    /// The key prefix `prefix` of this bucket as a [`Place`].
    fn place_of(&self, prefix: &str) -> Place {
        Place::There {
            service: self.service.clone(),
            root: prefix.to_string(),
        }
    }

    /// The source, when its object of `size` bytes can be copied here on the server, metadata
    /// and all: another prefix of this bucket (on this service, with these credentials), or
    /// another bucket of this S3 service (see [`between`]). Not on WebDAV, which keeps no
    /// metadata to copy, nor where new objects are to get a storage class or encryption the
    /// source's do not carry over, nor for objects beyond S3's 5 GiB a copy.
    fn copies_from<'s>(&self, source: Source<'s>, size: u64) -> Option<&'s Store> {
        let from = source.origin.as_any()?.downcast_ref::<Store>()?;
        if !self.keeps_metadata() || self.restyled {
            return None;
        }
        if self.kind == Service::S3 && size > MAX_COPY {
            return None;
        }
        (from.service == self.service || self.across(from)).then_some(from)
    }

    /// Whether objects of `from`, another bucket, are copied on the server: both are S3 (on
    /// one service: a run reaches every bucket through the same endpoint and credentials), and
    /// the service has not refused such a copy yet.
    #[cfg(feature = "s3")]
    fn across(&self, from: &Store) -> bool {
        let refused = self.across_refused.load(Ordering::Relaxed);
        self.between.is_some() && from.between.is_some() && !refused
    }

    #[cfg(not(feature = "s3"))]
    fn across(&self, _: &Store) -> bool {
        false
    }

    /// Copy `from_key` of `from`'s bucket to `key` of this one.
    #[cfg(feature = "s3")]
    async fn copy_across(&self, from: &Store, from_key: &str, key: &str) -> Result<(), Refusal> {
        let (Some(between), Some(source)) = (&self.between, &from.between) else {
            unreachable!("`Store::across` checked both are S3")
        };
        between.copy(&self.op, source, from_key, key).await
    }

    #[cfg(not(feature = "s3"))]
    async fn copy_across(&self, _: &Store, _: &str, _: &str) -> Result<(), Refusal> {
        unreachable!("only S3 copies between buckets (see `Store::across`)")
    }

    /// Whether the service lists a prefix recursively itself (S3, GCS, Azure). OpenDAL
    /// simulates that for the others (WebDAV) by walking the folders, but it skips a folder
    /// it may not read (403) or finds gone, and loses its place when a failed request is
    /// retried: that listing can end early without an error, and a folder missing from a
    /// listing would be deleted. Those are walked by [`Store::walk_folders`] instead.
    fn lists_recursively(&self) -> bool {
        self.op.info().capability().list_with_recursive
    }

    /// List the tree below the prefix folder by folder, [`FOLDERS_IN_FLIGHT`] at a time,
    /// handing each entry (the folder itself included) to `take`. Any failure fails the whole
    /// listing; only a root folder that does not exist yet lists as empty.
    async fn walk_folders(&self, mut take: impl FnMut(opendal::Entry)) -> opendal::Result<()> {
        let root = self.list_root();
        let mut pending = vec![root.clone()];
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.len() < FOLDERS_IN_FLIGHT {
                let Some(dir) = pending.pop() else { break };
                let op = self.op.clone();
                tasks.spawn(async move {
                    let listed = op.list(&dir).await;
                    (dir, listed)
                });
            }
            let Some(done) = tasks.join_next().await else {
                return Ok(());
            };
            // A task only fails by panicking (none is cancelled): pass the panic on.
            let (dir, listed) = done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            let entries = match listed {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound && dir == root => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                if entry.metadata().is_dir() && entry.path() != dir {
                    pending.push(entry.path().to_string());
                }
                take(entry);
            }
        }
    }

    /// Whether objects carry user metadata (the source mtime, `mtime`): not on WebDAV, where
    /// servers refuse or drop it.
    fn keeps_metadata(&self) -> bool {
        self.kind != Service::Webdav
    }

    /// Whether a directory is a folder that holds its entries, so that deleting it deletes
    /// them (WebDAV), rather than a marker object beside them.
    fn folders(&self) -> bool {
        self.kind == Service::Webdav
    }

    /// The `mtime` metadata value for `t`, in rclone's form for this service.
    fn mtime_text(&self, t: Mtime) -> String {
        match self.kind {
            Service::Gcs | Service::Azure => {
                format_mtime_rfc3339(t).unwrap_or_else(|| format_mtime(t))
            }
            _ => format_mtime(t),
        }
    }

    /// Copy the object at `source` (of `from`, see [`Store::copies_from`]) to `key` on the
    /// server: the bytes never pass through here, and its metadata (the recorded mtime, the
    /// MD5 of a multipart upload, the content type) goes with it. S3 makes the copy whole or
    /// not at all. `None`: the service refused a copy between buckets, and room was made at
    /// `key` for the file to be uploaded instead.
    fn copy_on_server(
        &self,
        from: &Store,
        source: Source<'_>,
        rel: &Path,
        key: &str,
        expected: Expected,
        held: Held,
    ) -> std::result::Result<Option<Copied>, CopyError> {
        let src = &source.path();
        let to = &self.path(rel);
        let from_key = from
            .key(source.rel)
            .map_err(|e| Error::new(Op::OpenSource, src, e))?;
        self.rt.block_on(async {
            self.make_room(rel, key, held, src).await?;
            let copied = match from.service == self.service {
                true => match self.op.copy(&from_key, key).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == ErrorKind::NotFound => Err(Refusal::Vanished),
                    Err(e) => Err(Refusal::Failed(store_error(e))),
                },
                false => self.copy_across(from, &from_key, key).await,
            };
            match copied {
                Ok(()) => {}
                Err(Refusal::Vanished) => return Ok(Some(Copied::Vanished)),
                Err(Refusal::Unsupported(e)) => {
                    self.across_refused.store(true, Ordering::Relaxed);
                    debug!(
                        from = from.url,
                        to = self.url,
                        "copies between buckets refused ({e}): copying through this machine"
                    );
                    return Ok(None);
                }
                Err(Refusal::Failed(e)) => return Err(Error::copy(src, to, e).into()),
            }
            // What the copy holds now: its ETag, and the time it carries, for the manifest.
            let meta = self
                .op
                .stat(key)
                .await
                .map_err(|e| Error::new(Op::Stat, to, store_error(e)))?;
            let size = meta.content_length();
            let mtime = Head::of(&meta, self.kind).mtime.unwrap_or(expected.mtime);
            let row = version_of(&meta).map(|version| Row { version, mtime });
            self.record(rel, row);
            debug!(from = %src.display(), to = %to.display(), "copied on the server");
            Ok(Some(Copied::Done(size)))
        })
    }

    /// Before a file is written at `rel` (`key`): the directory it replaces goes (once the
    /// deletions emptied it), or the object it replaces is kept in the backup prefix.
    async fn make_room(
        &self,
        rel: &Path,
        key: &str,
        held: Held,
        src: &Path,
    ) -> std::result::Result<(), Error> {
        let to = &self.path(rel);
        match held {
            Held::Other(Tag::Dir) => self
                .remove_emptied_dir(rel)
                .await
                .map_err(|e| Error::new(Op::Replace, to, e)),
            _ => self
                .keep(rel, key)
                .await
                .map_err(|e| Error::copy(src, to, e)),
        }
    }

    /// Upload the file at `source` to `key` (for `rel`); `held`: what is at `key`, or `None`
    /// when room was made for it already.
    fn upload_file(
        &self,
        source: Source<'_>,
        rel: &Path,
        key: &str,
        expected: Expected,
        held: Option<Held>,
    ) -> std::result::Result<Copied, CopyError> {
        let Some((file, expected)) = source.open(expected)? else {
            return Ok(Copied::Vanished);
        };
        let src = &source.path();
        let to = Destination::path(self, rel);
        self.rt.block_on(async {
            if let Some(held) = held {
                self.make_room(rel, key, held, src).await?;
            }
            match self.upload(file, key, expected).await {
                Ok((size, version)) => {
                    // Its LastModified, where not known yet, is found before the manifest is
                    // written.
                    let row = version.map(|version| Row {
                        version,
                        mtime: expected.mtime,
                    });
                    self.record(rel, row);
                    Ok(Copied::Done(size))
                }
                Err(UploadError::Changed) => Err(CopyError::Changed),
                Err(UploadError::Read(e)) => {
                    Err(CopyError::of_read(&e)
                        .unwrap_or_else(|| Error::new(Op::Read, src, e).into()))
                }
                Err(UploadError::Write(e)) => Err(Error::copy(src, &to, e).into()),
                Err(UploadError::Complete(e)) => Err(Error::copy(src, &to, store_error(e)).into()),
            }
        })
    }

    fn list_root(&self) -> String {
        match self.prefix.as_str() {
            "" => "/".to_string(),
            p => p.to_string(),
        }
    }

    fn listed(&self) -> MutexGuard<'_, HashMap<String, Version>> {
        self.listed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn md5s(&self) -> MutexGuard<'_, HashMap<String, [u8; 16]>> {
        self.md5s.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rows(&self) -> MutexGuard<'_, manifest::Rows> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record what the object at `rel` now is (`None`: gone, or unknown) for the manifest.
    fn record(&self, rel: &Path, row: Option<Row>) {
        let Some(rel) = rel.to_str() else { return };
        match row {
            Some(row) => self.rows().insert(rel.to_string(), row),
            None => self.rows().remove(rel),
        };
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Give the rows of this run's uploads their objects' LastModified, which an upload's
    /// answer does not carry: a HEAD each when that is fewer requests than listing the
    /// prefix again, else one listing. What cannot be found stays unknown: such a row is not
    /// trusted, and the object is read with a HEAD next time.
    fn find_modified(&self) {
        let unknown: Vec<String> = self
            .rows()
            .iter()
            .filter(|(_, row)| row.version.modified.is_none())
            .map(|(rel, _)| rel.clone())
            .collect();
        if unknown.is_empty() {
            return;
        }
        let pages = self.rows().len() / 1000 + 1;
        // A folder walk (WebDAV) costs a request a folder: never cheaper than a stat each.
        let stat_each = unknown.len() <= pages || !self.lists_recursively();
        let found: HashMap<String, Version> = match stat_each {
            true => {
                let keys = unknown.iter().map(|rel| format!("{}{rel}", self.prefix));
                let stats = self.rt.block_on(futures_util::future::join_all(
                    keys.map(|key| async move { self.op.stat(&key).await }),
                ));
                unknown
                    .into_iter()
                    .zip(stats)
                    .filter_map(|(rel, meta)| Some((rel, version_of(&meta.ok()?)?)))
                    .collect()
            }
            false => self.relist().unwrap_or_default(),
        };
        let mut rows = self.rows();
        for (rel, row) in rows.iter_mut() {
            let found = found.get(rel);
            if row.version.modified.is_none()
                && found.is_some_and(|f| f.size == row.version.size && f.etag == row.version.etag)
            {
                row.version.modified = found.and_then(|f| f.modified);
            }
        }
    }

    /// Every object below the prefix with its version, listed again.
    fn relist(&self) -> opendal::Result<HashMap<String, Version>> {
        self.rt.block_on(async {
            let options = ListOptions {
                recursive: true,
                ..ListOptions::default()
            };
            let mut lister = self.op.lister_options(&self.list_root(), options).await?;
            let mut found = HashMap::new();
            while let Some(entry) = lister.next().await {
                let (key, meta) = entry?.into_parts();
                let version = version_of(&meta);
                if let (Some(rel), Some(version)) = (key.strip_prefix(&self.prefix), version) {
                    found.insert(rel.to_string(), version);
                }
            }
            Ok(found)
        })
    }

    /// The manifest's rows, if there is one to read (one GET).
    fn read_manifest(&self) -> Option<manifest::Rows> {
        let key = format!("{}{}", self.prefix, manifest::KEY);
        let bytes = match self.rt.block_on(self.op.read(&key)) {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => {
                debug!(key, error = %e, "no manifest");
                return None;
            }
        };
        manifest::decode(&bytes)
            .inspect_err(|e| debug!(key, error = %e, "manifest not used"))
            .ok()
    }

    fn key(&self, rel: &Path) -> io::Result<String> {
        Ok(format!("{}{}", self.prefix, common::text(rel)?))
    }

    fn fail(&self, op: Op, rel: &Path, e: io::Error) -> Error {
        Error::new(op, self.path(rel), e)
    }

    /// Keep a server-side copy of `key` (an object below the prefix at `rel`) in the backup
    /// prefix, under the first free name; nothing to do when there is no such object.
    async fn keep(&self, rel: &Path, key: &str) -> io::Result<()> {
        let Some(backup) = &self.backup else {
            return Ok(());
        };
        match self.op.stat(key).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(store_error(e)),
        }
        let base = format!("{backup}{}", common::text(rel)?);
        for n in 0.. {
            let slot = backup_slot(&base, n).to_string_lossy().into_owned();
            match self.op.stat(&slot).await {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return self
                        .op
                        .copy(key, &slot)
                        .await
                        .map(|_| ())
                        .map_err(store_error);
                }
                Err(e) => return Err(store_error(e)),
                Ok(_) => {}
            }
        }
        unreachable!("a free name is found before the counter runs out")
    }

    /// Make room for a file at `rel` where a directory was: the deletions removed every object
    /// listed below `rel/`; what is still there was not to be deleted (see
    /// `endpoint::still_holds`) and keeps the directory. Its marker object goes.
    async fn remove_emptied_dir(&self, rel: &Path) -> io::Result<()> {
        let dir = format!("{}/", self.key(rel)?);
        // Its first level tells: anything but the folder (or marker) itself keeps it.
        let holds = async {
            let mut lister: opendal::Lister = self.op.lister(&dir).await?;
            while let Some(entry) = lister.next().await {
                if entry?.path() != dir {
                    return Ok(true);
                }
            }
            Ok::<bool, opendal::Error>(false)
        };
        match holds.await {
            Ok(false) => {}
            Ok(true) => {
                let cause = io::Error::from(io::ErrorKind::DirectoryNotEmpty);
                return Err(crate::endpoint::still_holds(cause));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(store_error(e)),
        }
        self.delete(&dir).await
    }

    /// Delete the file at `key`. On WebDAV a DELETE of a folder takes all it holds, so the key
    /// is first seen to be a file still (a folder put there since the listing is not touched).
    async fn delete_file(&self, key: &str) -> io::Result<()> {
        if self.folders() {
            match self.op.stat(key).await {
                Ok(meta) if meta.is_dir() => {
                    return Err(io::Error::new(
                        io::ErrorKind::IsADirectory,
                        "it is a folder now, not the file listed: left alone",
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(store_error(e)),
            }
        }
        self.delete(key).await
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        match self.op.delete(key).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(store_error(e)),
            _ => Ok(()),
        }
    }

    /// Upload `src` to `key` with the given metadata, checking the source did not change; the
    /// bytes sent, and the object's version where the answer gives it (LastModified is found
    /// later, see [`Store::find_modified`]).
    async fn upload(
        &self,
        mut file: Opened,
        key: &str,
        expected: Expected,
    ) -> std::result::Result<(u64, Option<Version>), UploadError> {
        let mut metadata = HashMap::from([("mtime".to_string(), self.mtime_text(expected.mtime))]);
        let version = |size: u64, meta: &opendal::Metadata| {
            meta.etag().map(|etag| Version {
                size,
                etag: etag.to_string(),
                modified: None,
            })
        };
        // WebDAV has no multipart upload: a file goes in one request whatever its size.
        let one_shot = expected.size <= PART as u64 || self.folders();
        let unchanged = |file: &Opened, read| file.still_holds(&expected, read);
        let content_type = Some(
            mime_guess::from_path(key)
                .first_or_octet_stream()
                .essence_str()
                .to_string(),
        );
        let part = part_size(expected.size);
        // The bytes this upload holds at once, counted against the budget of all uploads.
        let holds = match one_shot {
            true => expected.size.div_ceil(MIB).max(1),
            false => (PARTS_IN_FLIGHT as u64 + 1) * (part as u64 / MIB),
        };
        let _budget = self
            .memory
            .acquire_many(holds.min(u64::from(TRANSFER_MEMORY_MIB)) as u32)
            .await
            .expect("the budget is never closed");
        if one_shot {
            let mut data = Vec::new();
            // WebDAV: a file of any size is held whole; one larger than memory can hold fails
            // here, as an error of this file, rather than the run running out of memory.
            data.try_reserve_exact(expected.size as usize + 1)
                .map_err(|e| {
                    let why = format!(
                        "{} takes a file in one request, held in memory: {e}",
                        self.kind.name()
                    );
                    UploadError::Read(io::Error::new(io::ErrorKind::OutOfMemory, why))
                })?;
            (&mut file)
                .take(expected.size + 1)
                .read_to_end(&mut data)
                .map_err(UploadError::Read)?;
            if !unchanged(&file, data.len() as u64).map_err(UploadError::Read)? {
                return Err(UploadError::Changed);
            }
            // --bwlimit: wait until these bytes are due.
            let wait = crate::bwlimit::delay(data.len() as u64);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let options = WriteOptions {
                user_metadata: self.keeps_metadata().then_some(metadata),
                content_type,
                ..WriteOptions::default()
            };
            if self.folders() {
                return self
                    .staged(key, data, options)
                    .await
                    .map_err(UploadError::Write);
            }
            let written = self
                .op
                .write_options(key, data, options)
                .await
                .map_err(|e| UploadError::Write(store_error(e)))?;
            return Ok((expected.size, version(expected.size, &written)));
        }
        // A multipart ETag is not the content's MD5: keep it in the metadata for --checksum
        // (a stream's only where its server stated it beforehand).
        let md5 = match &mut file {
            Opened::File(file) => Some(file_md5(file).map_err(UploadError::Read)?),
            Opened::Stream(stream) => stream.md5,
            Opened::Empty => Some(Md5::digest([]).into()),
        };
        let md5 = md5.map(|md5| base64::engine::general_purpose::STANDARD.encode(md5));
        if let Some(md5) = &md5 {
            metadata.insert("md5chksum".to_string(), md5.clone());
        }
        let options = WriteOptions {
            user_metadata: Some(metadata),
            content_type,
            concurrent: PARTS_IN_FLIGHT,
            chunk: Some(part),
            ..WriteOptions::default()
        };
        let mut writer = self
            .op
            .writer_options(key, options)
            .await
            .map_err(|e| UploadError::Write(store_error(e)))?;
        debug!(key, size = expected.size, "multipart upload started");
        let mut sent = 0u64;
        let result = async {
            loop {
                // A stop asked for drops the upload rather than wait for the rest of it.
                if sent > 0 {
                    crate::interrupt::check().map_err(UploadError::Read)?;
                }
                let mut buf = self.parts.take(part);
                let n = (&mut file)
                    .take(part as u64)
                    .read_to_end(&mut buf)
                    .map_err(UploadError::Read)?;
                if n == 0 {
                    break;
                }
                sent += n as u64;
                if sent > expected.size {
                    return Err(UploadError::Changed);
                }
                let wait = crate::bwlimit::delay(n as u64);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                writer
                    .write(self.parts.hand_over(buf))
                    .await
                    .map_err(|e| UploadError::Write(store_error(e)))?;
                debug!(key, sent, "multipart part handed over");
            }
            if !unchanged(&file, sent).map_err(UploadError::Read)? {
                return Err(UploadError::Changed);
            }
            writer.close().await.map_err(UploadError::Complete)
        }
        .await;
        match result {
            Ok(written) => Ok((sent, version(sent, &written))),
            Err(UploadError::Complete(e)) => {
                // The answer to Complete may be what was lost, and its retry then finds the
                // upload gone: the object is there, whole, if it carries this upload's size,
                // time and MD5.
                let _ = writer.abort().await;
                match self.op.stat(key).await {
                    Ok(meta)
                        if meta.content_length() == sent
                            && meta.user_metadata().is_some_and(|m| {
                                m.get("mtime") == Some(&self.mtime_text(expected.mtime))
                                    && m.get("md5chksum") == md5.as_deref()
                            }) =>
                    {
                        debug!(key, "multipart upload complete, although its answer failed");
                        Ok((sent, version(sent, &meta)))
                    }
                    _ => Err(UploadError::Write(store_error(e))),
                }
            }
            Err(e) => {
                debug!(key, "multipart upload aborted");
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Write `data` to a temporary name beside `key` and move it over `key` once it is whole
    /// (WebDAV: a PUT cut short can leave a partial file on some servers; a MOVE is atomic);
    /// the object's version as the server then lists it.
    async fn staged(
        &self,
        key: &str,
        data: Vec<u8>,
        options: WriteOptions,
    ) -> io::Result<(u64, Option<Version>)> {
        let size = data.len() as u64;
        let folder = key.rsplit_once('/').map_or("", |(folder, _)| folder);
        let temp = match folder {
            "" => temp_name('s'),
            folder => format!("{folder}/{}", temp_name('s')),
        };
        let placed = async {
            self.op.write_options(&temp, data, options).await?;
            self.op.rename(&temp, key).await
        };
        if let Err(e) = placed.await {
            let _ = self.op.delete(&temp).await;
            return Err(store_error(e));
        }
        let meta = self.op.stat(key).await.map_err(store_error)?;
        Ok((size, version_of(&meta)))
    }

    /// HEAD each object in `keys`, [`HEADS_IN_FLIGHT`] at a time; the answers in the same
    /// order, each reduced at once to the little a comparison needs.
    fn heads(&self, keys: Vec<String>) -> Vec<io::Result<Head>> {
        let kind = self.kind;
        self.each(keys, move |op, key| async move {
            let meta = op.stat(&key).await.map_err(store_error)?;
            Ok(Head::of(&meta, kind))
        })
    }

    /// The MD5 of each object in `keys`, read back whole (where no MD5 is stated), a few at
    /// a time; in the same order.
    fn read_md5s(&self, keys: Vec<String>) -> Vec<io::Result<[u8; 16]>> {
        self.each(keys, |op, key| async move {
            let reader = op.reader(&key).await.map_err(store_error)?;
            let mut bytes = reader.into_bytes_stream(..).await.map_err(store_error)?;
            let mut hasher = Md5::new();
            while let Some(chunk) = bytes.next().await {
                hasher.update(&chunk?);
            }
            Ok(hasher.finalize().into())
        })
    }

    /// `ask` of each key, [`HEADS_IN_FLIGHT`] at a time; the answers in the order of `keys`.
    fn each<T, F, Fut>(&self, keys: Vec<String>, ask: F) -> Vec<io::Result<T>>
    where
        T: Send + 'static,
        F: Fn(Operator, String) -> Fut,
        Fut: std::future::Future<Output = io::Result<T>> + Send + 'static,
    {
        self.rt.block_on(async {
            let mut out: Vec<Option<io::Result<T>>> = keys.iter().map(|_| None).collect();
            let mut tasks = tokio::task::JoinSet::new();
            let mut keys = keys.into_iter().enumerate();
            loop {
                while tasks.len() < HEADS_IN_FLIGHT {
                    let Some((n, key)) = keys.next() else { break };
                    let asked = ask(self.op.clone(), key);
                    tasks.spawn(async move { (n, asked.await) });
                }
                let Some(done) = tasks.join_next().await else {
                    break;
                };
                // A task only fails by panicking (none is cancelled): pass the panic on.
                let (n, answer) =
                    done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                out[n] = Some(answer);
            }
            out.into_iter()
                .map(|a| a.expect("every request was answered"))
                .collect()
        })
    }
}

/// What a HEAD tells about an object: the source mtime kept at upload (else LastModified) and
/// the content's MD5 — the ETag of a single-part upload, else the MD5 kept in the metadata of a
/// multipart one.
#[derive(Default)]
struct Head {
    mtime: Option<Mtime>,
    md5: Option<[u8; 16]>,
}

impl Head {
    fn of(meta: &opendal::Metadata, kind: Service) -> Head {
        let stored = meta.user_metadata();
        Head {
            mtime: stored
                .as_ref()
                .and_then(|m| m.get("mtime"))
                .and_then(parse_mtime)
                .or_else(|| meta.last_modified().map(mtime_of)),
            md5: stated_md5(meta, kind),
        }
    }
}

enum UploadError {
    Changed,
    Read(io::Error),
    Write(io::Error),
    /// Completing a multipart upload failed (or its answer was lost).
    Complete(opendal::Error),
}

/// The key prefix `--backup-dir` names: `SCHEME://SAMEBUCKET/P` or a bare `P`; it must not
/// overlap the mirror's prefix.
fn backup_prefix(url: &super::Url, dir: &Path) -> io::Result<String> {
    let super::Url::Store { prefix, .. } = url else {
        unreachable!("a store's URL")
    };
    let text = dir.to_str().unwrap_or_default();
    let p = match super::Url::parse(text) {
        Ok(Some(other @ super::Url::Store { .. })) if other.overlaps_place(url) => {
            let super::Url::Store { prefix, .. } = other else {
                unreachable!()
            };
            prefix
        }
        Ok(Some(_)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--backup-dir '{text}' must be in the same place: {url}"),
            ))
        }
        _ => text.trim_matches('/').to_string(),
    };
    let inside = |a: &str, b: &str| b.is_empty() || a == b || a.starts_with(&format!("{b}/"));
    if p.is_empty() || inside(&p, prefix) || inside(prefix, &p) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--backup-dir '{text}' overlaps the destination prefix"),
        ));
    }
    Ok(format!("{p}/"))
}

impl Destination for Store {
    fn path(&self, rel: &Path) -> PathBuf {
        Store::path(self, rel)
    }

    fn stores_symlinks(&self) -> bool {
        false
    }

    fn stores_byte_names(&self) -> bool {
        false
    }

    fn scan(&self, filter: &Filter) -> Tree {
        let root = RootMeta {
            mtime: Mtime::default(),
            mode: 0o755,
            owner: Default::default(),
        };
        // One recursive listing, a page (1,000 keys) per request, each entry reduced to what the
        // tree needs as it arrives; the reachability check read its first page.
        let started = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut listed = Vec::new();
        let mut odd = Vec::new();
        let mut etags = HashMap::new();
        let mut md5s = HashMap::new();
        // A WebDAV listing names the folder itself, when there is one.
        let mut found_root = false;
        let mut take = |entry: opendal::Entry| {
            let (key, meta) = entry.into_parts();
            let Some(rel) = key.strip_prefix(&self.prefix) else {
                return;
            };
            let is_dir = rel.ends_with('/');
            if rel == manifest::KEY || rel == manifest::FOLDER {
                return;
            }
            if let (false, Some(version)) = (is_dir, version_of(&meta)) {
                etags.insert(rel.to_string(), version);
            }
            // GCS and Azure list each object's MD5 (S3's is its listed ETag).
            if let (false, false, Some(md5)) = (
                is_dir,
                self.kind == Service::S3,
                stated_md5(&meta, self.kind),
            ) {
                md5s.insert(key.clone(), md5);
            }
            let rel = rel.strip_suffix('/').unwrap_or(rel);
            if rel.is_empty() {
                found_root = true;
                return;
            }
            if let Some(why) = common::unusable(rel) {
                odd.push((PathBuf::from(rel), why));
                return;
            }
            let rel = PathBuf::from(rel);
            listed.push(match is_dir {
                true => Listed::dir(rel),
                false => Listed {
                    rel,
                    tag: Tag::File,
                    size: meta.content_length(),
                    mtime: meta.last_modified().map(mtime_of).unwrap_or_default(),
                    mode: 0o644,
                    target: None,
                },
            });
        };
        let walked: opendal::Result<()> = self.rt.block_on(async {
            if !self.lists_recursively() {
                return self.walk_folders(&mut take).await;
            }
            let (first, mut lister) = match started {
                Some(started) => started,
                None => {
                    let options = ListOptions {
                        recursive: true,
                        ..ListOptions::default()
                    };
                    (
                        None,
                        self.op.lister_options(&self.list_root(), options).await?,
                    )
                }
            };
            let mut first = first.map(Ok);
            while let Some(entry) = match first.take() {
                Some(entry) => Some(entry),
                None => lister.next().await,
            } {
                take(entry?);
            }
            Ok(())
        });
        if let Err(e) = walked {
            // A listing cut short is no listing: nothing of it may decide a deletion.
            let mut tree = common::tree_of(Vec::new(), filter, root);
            tree.errors
                .push(Error::new(Op::ReadDir, &self.url, store_error(e)));
            return tree;
        }
        *self.listed.lock().unwrap_or_else(|e| e.into_inner()) = etags;
        self.md5s().extend(md5s);
        let mut tree = common::tree_of(listed, filter, root);
        tree.unusable.extend(odd);
        if self.folders() && !found_root && !self.prefix.is_empty() {
            // No such folder yet: made before anything is put in it.
            tree.root = None;
        }
        tree
    }

    fn refine(
        &self,
        origin: &dyn Origin,
        src: &Tree,
        dst: &mut Tree,
        compare: &Compare,
    ) -> (HashSet<u32>, Vec<Error>) {
        let mut errors = Vec::new();
        let mut changed = HashSet::new();
        let mut same_size = same_size_files(src, dst);
        let in_source = (0..src.entries.len() as u32).any(|i| src.path_at(i) == manifest::KEY);
        if in_source {
            self.manifest.store(false, Ordering::Relaxed);
        }
        let listed = std::mem::take(&mut *self.listed.lock().unwrap_or_else(|e| e.into_inner()));
        if !in_source {
            // The rows of objects still as the manifest says; the others are read again.
            let manifest = self.read_manifest();
            let had = manifest.as_ref().map_or(0, |rows| rows.len());
            let mut rows = manifest.unwrap_or_default();
            rows.retain(|rel, row| listed.get(rel).is_some_and(|now| row.holds_for(now)));
            if rows.len() != had {
                self.stale.store(true, Ordering::Relaxed);
            }
            if compare.method != Method::SizeOnly {
                // Compared by time: settled by the row. By content: still to be compared.
                same_size.retain(|&(_, j)| {
                    let rel = dst.path_at(j);
                    match rel.to_str().and_then(|r| rows.get(r)) {
                        Some(row) => {
                            dst.entries[j as usize].mtime = row.mtime;
                            compare.method == Method::Checksum
                        }
                        None => true,
                    }
                });
            }
            *self.rows() = rows;
        }
        if compare.method == Method::SizeOnly {
            for &(i, j) in &same_size {
                dst.entries[j as usize].mtime = src.entries[i as usize].mtime;
            }
        } else {
            let keys: Vec<String> = same_size
                .iter()
                .map(|&(_, j)| self.key(dst.path_at(j)).unwrap_or_default())
                .collect();
            let mut heads = match self.keeps_metadata() {
                true => self.heads(keys.clone()),
                // A HEAD would tell nothing the listing did not (no metadata).
                false => keys.iter().map(|_| Ok(Head::default())).collect(),
            };
            if compare.method == Method::Checksum {
                // No MD5 stated (WebDAV, a multipart upload by another tool): read it back.
                let unstated: Vec<usize> = (0..heads.len())
                    .filter(|&n| heads[n].as_ref().is_ok_and(|h| h.md5.is_none()))
                    .collect();
                let read = self.read_md5s(unstated.iter().map(|&n| keys[n].clone()).collect());
                for (n, md5) in unstated.into_iter().zip(read) {
                    match md5 {
                        Ok(md5) => heads[n].as_mut().expect("only answered HEADs").md5 = Some(md5),
                        Err(e) => heads[n] = Err(e),
                    }
                }
            }
            let local_md5s: Vec<Option<io::Result<[u8; 16]>>> = match compare.method {
                Method::Checksum => same_size
                    .par_iter()
                    .map(|&(i, _)| {
                        // Told to stop: nothing is planned on the rest (see `run`).
                        if crate::interrupt::requested().is_some() {
                            return None;
                        }
                        let rel = src.origin(i);
                        Some(source_md5(Source { origin, rel }))
                    })
                    .collect(),
                _ => same_size.iter().map(|_| None).collect(),
            };
            for ((&(i, j), head), local) in same_size.iter().zip(heads).zip(local_md5s) {
                let head = match head {
                    Ok(head) => head,
                    Err(e) => {
                        errors.push(self.fail(Op::Stat, dst.path_at(j), e));
                        continue;
                    }
                };
                if let Some(mtime) = head.mtime {
                    dst.entries[j as usize].mtime = mtime;
                    let rel = dst.path_at(j);
                    if let Some(version) = rel.to_str().and_then(|r| listed.get(r)) {
                        let version = version.clone();
                        self.record(rel, Some(Row { version, mtime }));
                    }
                }
                let Some(local) = local else { continue };
                let local = match local {
                    Ok(md5) => md5,
                    Err(e) => {
                        let path = origin.path(src.origin(i));
                        errors.push(Error::new(Op::Read, path, e));
                        continue;
                    }
                };
                if head.md5 != Some(local) {
                    changed.insert(i);
                }
            }
        }
        endpoint::adopt(src, dst, &read::KEEPS);
        (changed, errors)
    }

    /// Object stores have no folders to make; a WebDAV server needs the mirror's own (its
    /// files are put into folders that exist: see `connect::webdav`).
    fn make_root(&self) -> Result<()> {
        if !self.folders() || self.prefix.is_empty() {
            return Ok(());
        }
        let made = self.rt.block_on(self.op.create_dir(&self.prefix));
        made.map_err(|e| self.fail(Op::MakeDir, Path::new(""), store_error(e)))
    }

    /// A temporary a killed run left: deleted, not kept in the backup prefix.
    fn remove_temp(&self, rel: &Path) -> Result<()> {
        let result = self
            .rt
            .block_on(async { self.delete_file(&self.key(rel)?).await });
        result.map_err(|e| self.fail(Op::Remove, rel, e))
    }

    fn open_dir(&self, _rel: &Path, _mode: u16) -> Result<()> {
        Ok(())
    }

    fn make_dir(&self, rel: &Path, replaces: Option<Tag>) -> Result<()> {
        let result = self.rt.block_on(async {
            let key = self.key(rel)?;
            if replaces.is_some() {
                self.keep(rel, &key).await?;
                self.delete_file(&key).await?;
                self.record(rel, None);
            }
            self.op
                .create_dir(&format!("{key}/"))
                .await
                .map_err(store_error)
        });
        result.map_err(|e| self.fail(Op::MakeDir, rel, e))
    }

    fn write_file(
        &self,
        source: Source<'_>,
        rel: &Path,
        expected: Expected,
        held: Held,
    ) -> std::result::Result<Copied, CopyError> {
        let key = self.key(rel).map_err(|e| self.fail(Op::Copy, rel, e))?;
        if let Some(from) = self.copies_from(source, expected.size) {
            if let Some(copied) = self.copy_on_server(from, source, rel, &key, expected, held)? {
                return Ok(copied);
            }
            return self.upload_file(source, rel, &key, expected, None);
        }
        self.upload_file(source, rel, &key, expected, Some(held))
    }

    fn make_symlink(
        &self,
        rel: &Path,
        _target: &Path,
        _mtime: Mtime,
        _replaces: Option<Tag>,
        _owner: Chown,
    ) -> Result<()> {
        let cause = io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{} cannot store symlinks", self.kind.name()),
        );
        Err(self.fail(Op::Symlink, rel, cause))
    }

    fn fix(
        &self,
        src: Source<'_>,
        rel: &Path,
        tag: Tag,
        _links: u32,
        _mode: Option<u16>,
        mtime: Option<Mtime>,
        _owner: Chown,
    ) -> Result<()> {
        // Object metadata cannot change in place: a new time means writing the object again.
        if tag != Tag::File || mtime.is_none() {
            return Ok(());
        }
        match self.write_file(src, rel, Expected::fresh(), Held::Same) {
            Ok(_) => Ok(()),
            Err(CopyError::Io(e)) => Err(e),
            Err(CopyError::Changed) => {
                let cause = endpoint::changed();
                Err(Error::copy(
                    &src.path(),
                    &Destination::path(self, rel),
                    cause,
                ))
            }
            Err(CopyError::Interrupted) => {
                let cause = endpoint::interrupted();
                Err(Error::copy(
                    &src.path(),
                    &Destination::path(self, rel),
                    cause,
                ))
            }
            Err(CopyError::Stopped) => {
                let cause = crate::interrupt::check().expect_err("a stop was asked for");
                Err(Error::copy(
                    &src.path(),
                    &Destination::path(self, rel),
                    cause,
                ))
            }
        }
    }

    fn remove(&self, rel: &Path, tag: Tag) -> Result<()> {
        let result = self.rt.block_on(async {
            let key = self.key(rel)?;
            match tag {
                // A WebDAV folder is deleted with all it holds: only once it is empty.
                Tag::Dir if self.folders() => self.remove_emptied_dir(rel).await,
                Tag::Dir => self.delete(&format!("{key}/")).await,
                _ => {
                    self.keep(rel, &key).await?;
                    self.delete_file(&key).await?;
                    self.record(rel, None);
                    Ok(())
                }
            }
        });
        result.map_err(|e| self.fail(Op::Remove, rel, e))
    }

    fn batch(&self) -> usize {
        DELETES_PER_REQUEST
    }

    fn place(&self) -> Option<Place> {
        Some(self.place_of(&self.prefix))
    }

    fn backup_place(&self) -> Option<Place> {
        self.backup.as_deref().map(|backup| self.place_of(backup))
    }

    /// A WebDAV server may ignore case (one on Windows, macOS, or over an exFAT disk): then
    /// two source names that differ only in case would overwrite each other there, a different
    /// one each run. `sample`, a name in the root, is looked up spelled otherwise; without one
    /// a probe file is made, looked up so, and removed. Object stores are always
    /// case-sensitive.
    fn probe(&self, sample: Option<&std::ffi::OsStr>) -> io::Result<Option<crate::config::Limits>> {
        if !self.folders() {
            return Ok(None);
        }
        let flip = |name: &str| match name.to_uppercase() {
            upper if upper != name => upper,
            _ => name.to_lowercase(),
        };
        let ignores_case = self.rt.block_on(async {
            let found = |key: String| async move {
                match self.op.stat(&key).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(store_error(e)),
                }
            };
            if let Some(name) = sample.and_then(|s| s.to_str()) {
                return found(format!("{}{}", self.prefix, flip(name))).await;
            }
            let name = temp_name('p');
            let key = format!("{}{name}", self.prefix);
            self.op
                .write(&key, Vec::<u8>::new())
                .await
                .map_err(store_error)?;
            let ignores = found(format!("{}{}", self.prefix, flip(&name))).await;
            self.delete(&key).await?;
            ignores
        })?;
        Ok(ignores_case.then(|| crate::config::Limits {
            filesystem: format!("{} server that ignores case", self.kind.name()),
            case_sensitive: false,
            ..crate::config::Limits::default()
        }))
    }

    /// Objects go a thousand a request (DeleteObjects). Where each is first kept in the backup
    /// prefix, or a batch fails (the answer names no key), they go one by one, each with its
    /// own result.
    fn remove_files(&self, entries: &[(&Path, Tag)]) -> Vec<Result<()>> {
        let one_by_one = || {
            entries
                .iter()
                .map(|&(rel, tag)| self.remove(rel, tag))
                .collect()
        };
        if self.backup.is_some() || entries.len() < 2 || self.folders() {
            return one_by_one();
        }
        let keys: Vec<io::Result<String>> = entries.iter().map(|(rel, _)| self.key(rel)).collect();
        let sent = keys.iter().flatten().cloned();
        if let Err(e) = self.rt.block_on(self.op.delete_iter(sent)) {
            debug!(error = %e, "batch delete failed; deleting one by one");
            return one_by_one();
        }
        entries
            .iter()
            .zip(keys)
            .map(|(&(rel, _), key)| match key {
                Ok(_) => {
                    self.record(rel, None);
                    Ok(())
                }
                Err(e) => Err(self.fail(Op::Remove, rel, e)),
            })
            .collect()
    }

    fn set_dir_meta(
        &self,
        _rel: &Path,
        _mode: Option<u16>,
        _mtime: Mtime,
        _owner: Chown,
    ) -> Result<()> {
        Ok(())
    }

    /// Write the manifest, after every upload, when it no longer says what the prefix holds.
    fn finish(&self) -> Result<()> {
        if !self.manifest.load(Ordering::Relaxed) || !self.stale.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.find_modified();
        let rel = Path::new(manifest::KEY);
        let key = format!("{}{}", self.prefix, manifest::KEY);
        let bytes = manifest::encode(&self.rows()).map_err(|e| self.fail(Op::Write, rel, e))?;
        let written = self.rt.block_on(async {
            if self.folders() {
                let folder = format!("{}{}", self.prefix, manifest::FOLDER);
                self.op.create_dir(&folder).await?;
            }
            self.op.write(&key, bytes).await
        });
        written
            .map(drop)
            .map_err(|e| self.fail(Op::Write, rel, store_error(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_text_round_trips_in_rclone_format() {
        let cases = [
            (Mtime { sec: 0, nsec: 0 }, "0.000000000"),
            (
                Mtime {
                    sec: 1_700_000_000,
                    nsec: 123_456_789,
                },
                "1700000000.123456789",
            ),
            (
                Mtime {
                    sec: -2,
                    nsec: 500_000_000,
                },
                "-1.500000000",
            ),
        ];
        for (t, text) in cases {
            assert_eq!(format_mtime(t), text);
            assert_eq!(parse_mtime(text), Some(t));
        }
        assert_eq!(
            parse_mtime("1700000000.5"),
            Some(Mtime {
                sec: 1_700_000_000,
                nsec: 500_000_000
            })
        );
        assert_eq!(
            parse_mtime("1700000000"),
            Some(Mtime {
                sec: 1_700_000_000,
                nsec: 0
            })
        );
        for bad in ["", "x", "1.2.3", "-", ".5", "1e9"] {
            assert_eq!(parse_mtime(bad), None, "{bad}");
        }
    }

    #[test]
    fn parts_grow_so_that_any_object_s3_takes_fits_in_10000() {
        assert_eq!(part_size(0), PART);
        assert_eq!(part_size(78 << 30), PART);
        let big = 100u64 << 30;
        let part = part_size(big) as u64;
        assert!(part > PART as u64 && part % MIB == 0);
        assert!(big.div_ceil(part) <= MAX_PARTS);
        assert!(
            big.div_ceil(part - MIB) > MAX_PARTS,
            "the smallest that fits"
        );
        let five_tib = 5u64 << 40;
        assert!(five_tib.div_ceil(part_size(five_tib) as u64) <= MAX_PARTS);
    }

    #[test]
    fn service_errors_read_as_what_the_service_said() {
        let rendered = r#"S3Error { code: "AccessDenied", message: "Access Denied", resource: "/b", request_id: "x" }"#;
        assert_eq!(
            said(rendered).as_deref(),
            Some("Access Denied (AccessDenied)")
        );
        let empty = opendal::Error::new(ErrorKind::Unexpected, "")
            .with_context("response", "Parts { status: 501, version: HTTP/1.0 }");
        assert_eq!(Failure::of(empty).to_string(), "Unexpected (HTTP 501)");
        let bare = r#"S3Error { code: "NoSuchBucket", message: "", resource: "" }"#;
        assert_eq!(said(bare).as_deref(), Some("NoSuchBucket"));
        assert_eq!(said("connection refused"), None);
        let e = store_error(opendal::Error::new(ErrorKind::PermissionDenied, rendered));
        assert_eq!(e.to_string(), "Access Denied (AccessDenied)");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        let inner = e.get_ref().and_then(std::error::Error::source);
        assert!(inner.is_some_and(|s| s.to_string().contains("AccessDenied")));
    }

    #[test]
    fn etags_give_an_md5_only_for_single_part_uploads() {
        let empty = [
            0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8,
            0x42, 0x7e,
        ];
        assert_eq!(
            etag_md5("\"D41D8CD98F00B204E9800998ECF8427E\""),
            Some(empty)
        );
        assert_eq!(
            etag_md5("\"d41d8cd98f00b204e9800998ecf8427e\""),
            Some(empty)
        );
        assert_eq!(etag_md5("\"d41d8cd98f00b204e9800998ecf8427e-3\""), None);
    }

    #[test]
    fn backup_prefixes_must_not_overlap_the_mirror() {
        let p = |dir: &str, prefix: &str| {
            let url = crate::remote::Url::parse(&format!("s3://b/{prefix}"))
                .unwrap()
                .unwrap();
            backup_prefix(&url, Path::new(dir)).ok()
        };
        assert_eq!(p("old", "data").as_deref(), Some("old/"));
        assert_eq!(p("s3://b/old/x/", "data").as_deref(), Some("old/x/"));
        assert_eq!(p("s3://other/old", "data"), None);
        assert_eq!(p("data/old", "data"), None);
        assert_eq!(p("data", "data/x"), None);
        assert_eq!(p("old", ""), None);
        assert_eq!(p("database", "data").as_deref(), Some("database/"));
    }
}
