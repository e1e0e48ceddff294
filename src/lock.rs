//! One run per destination at a time.
//!
//! Two runs into one DST would sweep each other's temporaries and race on every path. A run
//! that writes holds an exclusive `flock` on the DST directory itself — nothing is created in
//! the mirror for it — taken before anything is written and released by the kernel when the
//! process ends, however it ends: there is never a stale lock to clean up. A second run is
//! refused with the holder's PID, or waits for it with `--wait-lock`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::plan::Escaped;

/// The lock on one destination directory, held while this value lives.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] File);

/// Why a destination could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it (its PID, when the kernel tells).
    Held {
        dst: PathBuf,
        holder: Option<u32>,
    },
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { dst, holder } => {
                let who = match holder {
                    Some(pid) => format!("another syncease run (PID {pid})"),
                    None => "another syncease run".to_string(),
                };
                write!(
                    f,
                    "{who} is writing to destination '{}'; run again when it ends, or pass \
                     --wait-lock to wait for it",
                    Escaped(dst)
                )
            }
            LockError::Io(dst, e) => write!(f, "cannot lock destination '{}': {e}", Escaped(dst)),
        }
    }
}

/// Lock the directory `dst`; with `wait`, wait for a holder to finish (saying so once, through
/// `waiting`).
pub fn lock(dst: &Path, wait: bool, waiting: impl FnOnce(Option<u32>)) -> Result<Lock, LockError> {
    let dir = File::open(dst).map_err(|e| LockError::Io(dst.to_path_buf(), e))?;
    match flock(&dir, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => return Ok(Lock(dir)),
        Err(rustix::io::Errno::WOULDBLOCK) => {}
        Err(e) => return Err(LockError::Io(dst.to_path_buf(), e.into())),
    }
    let holder = holder(&dir);
    if !wait {
        return Err(LockError::Held {
            dst: dst.to_path_buf(),
            holder,
        });
    }
    waiting(holder);
    loop {
        match flock(&dir, FlockOperation::LockExclusive) {
            Ok(()) => return Ok(Lock(dir)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(LockError::Io(dst.to_path_buf(), e.into())),
        }
    }
}

/// The PID holding a `flock` on `dir`, from `/proc/locks` (Linux), where lines read
/// `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`: the device as major:minor in hex, then the
/// inode.
fn holder(dir: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = dir.metadata().ok()?;
    let dev = meta.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A waiting lock is shown as `1: -> FLOCK ...`: only the holder counts.
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, file, ..] if *file == id => pid.parse().ok(),
            _ => None,
        }
    })
}
