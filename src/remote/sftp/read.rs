//! A folder on an SSH host as the side a run reads: a restore, or a copy to another remote.
//!
//! The listing is the one a destination gets (modes, whole-second times, symlinks and their
//! targets). A file is read with [`READS_IN_FLIGHT`] requests in flight over the worker's
//! connection; the copy is placed only if the file is, at the end, what was listed: the same
//! size (nothing past it) and the same mtime, else it is read again as it is now. A read cut
//! by a lost connection is read again too, once the worker has connected again.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use super::{
    connection_lost, found, mtime_of, sftp_error, until_closed, Live, Sftp, KEEPS, READS_IN_FLIGHT,
};
use crate::endpoint::{self, Destination, Expected, Keeps, Opened, Origin, Place, Stream};
use crate::entry::Tree;
use crate::error::{Op, Result};
use crate::filter::Filter;
use crate::remote::common::{self, Feed};

impl Origin for Sftp {
    fn path(&self, rel: &Path) -> PathBuf {
        Sftp::path(self, rel)
    }

    fn scan(&self, filter: &Filter) -> Tree {
        Destination::scan(self, filter)
    }

    fn keeps(&self) -> Option<Keeps> {
        Some(KEEPS)
    }

    fn place(&self) -> Option<Place> {
        Destination::place(self)
    }

    fn open(&self, rel: &Path, expected: Expected) -> Result<Option<(Opened, Expected)>> {
        let path = self
            .remote(rel)
            .map_err(|e| self.fail(Op::OpenSource, rel, e))?;
        let opened = self.redoing(|| {
            let (live, path) = (self.live(), path.clone());
            async move {
                let sftp = &live.sftp;
                let Some(handle) =
                    found(sftp.open(path, OpenFlags::READ, Default::default()).await)?
                else {
                    return Ok(None);
                };
                let handle = handle.handle;
                match sftp.fstat(handle.clone()).await {
                    Ok(attrs) => Ok(Some((live, handle, attrs.attrs))),
                    Err(e) => {
                        let _ = sftp.close(handle).await;
                        Err(sftp_error(e))
                    }
                }
            }
        });
        let Some((live, handle, attrs)) = opened.map_err(|e| self.fail(Op::OpenSource, rel, e))?
        else {
            return Ok(None);
        };
        let mut expected = expected;
        let now = (attrs.size.unwrap_or(0), mtime_of(&attrs));
        if expected.fresh {
            (expected.size, expected.mtime) = now;
        }
        let read = Read {
            live,
            handle,
            size: expected.size,
            listed: (expected.size, expected.mtime),
            chunk: self.chunk as u32,
        };
        let unchanged = now == read.listed;
        let bytes = common::pipe(&self.rt, READS_IN_FLIGHT, |feed| read.run(feed, unchanged));
        let stream = Stream {
            bytes: Box::new(bytes),
            md5: None,
        };
        Ok(Some((Opened::Stream(stream), expected)))
    }
}

/// One file's download over an open handle.
struct Read {
    /// The session it reads over, and the connection under it: a read cut with it is
    /// noticed at once.
    live: Live,
    handle: String,
    size: u64,
    /// Its size and mtime as listed: the file must still have them when read to the end.
    listed: (u64, crate::entry::Mtime),
    chunk: u32,
}

impl Read {
    /// Read the file into `feed` (nothing, if it already differs from the listing) and close
    /// it, ending with the end marker or the error that stopped the read.
    async fn run(self, feed: Feed, unchanged: bool) {
        let result = match unchanged {
            true => until_closed(self.fetch(&feed), &self.live.ssh).await,
            false => Err(endpoint::changed()),
        };
        // A connection lost under the read: the copy is tried again, on a new connection
        // (opening the file again connects again, as any step does), up to the executor's
        // redos. The reader hears the outcome before the handle is closed, and a handle on a
        // lost connection is not closed at all: that request would wait for an answer that
        // never comes.
        let lost = matches!(&result, Err(e) if connection_lost(e));
        let result = result.map_err(|e| match lost {
            true => {
                tracing::debug!(error = %e, "connection lost while reading; reading again");
                endpoint::interrupted()
            }
            false => e,
        });
        let _ = feed.send(result.map(|()| None)).await;
        if !lost {
            let sftp = &self.live.sftp;
            let close = async { sftp.close(self.handle.clone()).await.map_err(sftp_error) };
            let _ = until_closed(close, &self.live.ssh).await;
        }
    }

    async fn fetch(&self, feed: &Feed) -> std::io::Result<()> {
        let read = |offset: u64, len: u32| {
            let (sftp, handle) = (self.live.sftp.clone(), self.handle.clone());
            tokio::spawn(async move { read_at(&sftp, handle, offset, len).await })
        };
        let joined = |task: tokio::task::JoinHandle<std::io::Result<Vec<u8>>>| async move {
            task.await.map_err(std::io::Error::other)?
        };
        let mut in_flight = VecDeque::new();
        let mut next = 0u64;
        loop {
            while in_flight.len() < READS_IN_FLIGHT && next < self.size {
                let len = self
                    .chunk
                    .min((self.size - next).min(u64::from(u32::MAX)) as u32);
                in_flight.push_back((next, len, read(next, len)));
                next += u64::from(len);
            }
            let Some((offset, len, task)) = in_flight.pop_front() else {
                break;
            };
            let mut data = joined(task).await?;
            // A server may answer with fewer bytes than asked: ask again for the rest.
            while data.len() < len as usize {
                let at = offset + data.len() as u64;
                let more = joined(read(at, len - data.len() as u32)).await?;
                if more.is_empty() {
                    // Shorter than listed: it changed.
                    return Err(endpoint::changed());
                }
                data.extend_from_slice(&more);
            }
            if !feed.send(Ok(Some(data))).await {
                return Ok(());
            }
        }
        // Nothing past the listed size, and the time it was listed with: the same file.
        let past = read_at(&self.live.sftp, self.handle.clone(), self.size, 1).await?;
        let attrs: FileAttributes = self
            .live
            .sftp
            .fstat(self.handle.clone())
            .await
            .map_err(sftp_error)?
            .attrs;
        if !past.is_empty() || (attrs.size.unwrap_or(0), mtime_of(&attrs)) != self.listed {
            return Err(endpoint::changed());
        }
        Ok(())
    }
}

/// Up to `len` bytes at `offset`; none at the end of the file.
async fn read_at(
    sftp: &RawSftpSession,
    handle: String,
    offset: u64,
    len: u32,
) -> std::io::Result<Vec<u8>> {
    match sftp.read(handle, offset, len).await {
        Ok(data) => Ok(data.data),
        Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => Ok(Vec::new()),
        Err(e) => Err(sftp_error(e)),
    }
}
