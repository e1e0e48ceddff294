//! What a destination filesystem can hold, found by trying it.
//!
//! USB disks (exFAT, FAT), NTFS and SMB shares, and FUSE drivers cannot hold everything a Linux
//! tree has, and some accept a change and drop it silently: exfat-fuse reports every file as
//! mode 0777 whatever `chmod` sets, refuses owners, symlinks and hard links, keeps whole
//! seconds, ignores a time set with the access time left alone, and treats `a` and `A` as one
//! name. A plan made without knowing this rewrites every file on every run, or fails on every
//! file. So a run starts by making one temporary file in DST's root (named like every
//! temporary, so a killed run's is swept), tries each property on it and reads it back, removes
//! it, and puts the root's mtime back. Nothing else is written.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::{new_temp, timespec, Base};
use crate::config::Limits;
use crate::entry::Mtime;

/// The time written to the probe: an odd second with every nanosecond digit set, so what the
/// filesystem keeps of it tells its resolution.
const PROBE_TIME: Mtime = Mtime {
    sec: 1_500_000_001,
    nsec: 123_456_789,
};

/// Probe the filesystem of `base` (DST's root, which exists). `sample` is the name of an entry
/// in the root, if it has one, to look up under another spelling. An error when nothing could
/// be tried there (a read-only or foreign-owned destination, a full disk): then nothing is
/// known.
///
/// Where the filesystem has unnamed files (`O_TMPFILE`: ext4, XFS, btrfs, tmpfs, f2fs — the
/// filesystems that hold everything else a tree has), the probe is an unnamed file, and the
/// root is not touched at all: a no-op run still writes nothing. Elsewhere (FUSE, FAT, exFAT,
/// network filesystems) a named probe file is made and removed, and the root's mtime put back.
pub fn probe(base: &Base, sample: Option<&OsStr>) -> std::io::Result<Limits> {
    let root = base.as_fd();
    let before = rustix::fs::fstat(root)?;
    let filesystem = filesystem_name(root, &before);
    let fuse = rustix::fs::fstatfs(root).is_ok_and(|s| is_fuse(&s));
    let unnamed = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    if let Ok(file) = rustix::fs::openat(root, ".", unnamed, Mode::RUSR | Mode::WUSR) {
        return Ok(Limits {
            filesystem,
            fuse,
            case_sensitive: sample.is_none_or(|name| !same_entry_otherwise_spelled(root, name)),
            modes: keeps_modes(&file),
            owners: keeps_owners(&file),
            xattrs: keeps_xattrs(&file),
            time_resolution_ns: time_resolution(file.as_fd(), OsStr::new("")),
            ..Limits::default()
        });
    }
    let mut file: Option<OwnedFd> = None;
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let named = new_temp('p', |name| {
        file = Some(rustix::fs::openat(
            root,
            name,
            flags,
            Mode::RUSR | Mode::WUSR,
        )?);
        Ok(())
    });
    let name = match named {
        // A root this run may not write in (read-only, or another's) on a filesystem of this
        // kernel's own that holds everything: nothing to try, and nothing unknown but the
        // time resolution (ext2/3 inodes of 128 bytes keep whole seconds), told by the root's
        // own time and its first entry's: both on a whole second are taken as that.
        Err(e) if no_write(&e) && holds_everything(root) => {
            let sample_nsec = sample
                .and_then(|name| rustix::fs::statat(root, name, AtFlags::SYMLINK_NOFOLLOW).ok())
                .map_or(0, |stat| stat.st_mtime_nsec);
            return Ok(Limits {
                filesystem,
                case_sensitive: sample.is_none_or(|name| !same_entry_otherwise_spelled(root, name)),
                time_resolution_ns: match (before.st_mtime_nsec, sample_nsec) {
                    (0, 0) => 1_000_000_000,
                    _ => 1,
                },
                ..Limits::default()
            });
        }
        named => named?,
    };
    let file = file.expect("made with its name");
    let limits = Limits {
        filesystem,
        fuse,
        case_sensitive: case_sensitive(root, &name),
        symlinks: made(root, 'l', |dir, temp| rustix::fs::symlinkat("x", dir, temp)),
        hard_links: made(root, 'h', |dir, temp| {
            rustix::fs::linkat(dir, &name, dir, temp, AtFlags::empty())
        }),
        specials: made(root, 'n', |dir, temp| {
            let fifo = rustix::fs::FileType::Fifo;
            super::mknod_at(dir, temp, fifo, Mode::RUSR | Mode::WUSR, 0)
        }),
        modes: keeps_modes(&file),
        owners: keeps_owners(&file),
        xattrs: keeps_xattrs(&file),
        byte_names: takes_name(root, b"\xff"),
        any_names: takes_name(root, b":"),
        time_resolution_ns: time_resolution(root, &name),
    };
    drop(file);
    let _ = rustix::fs::unlinkat(root, &name, AtFlags::empty());
    // The probe came and went: the root keeps the mtime it had (both times given, as a FUSE
    // driver may ignore one left alone).
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: timespec(Mtime::of_stat(&before)),
    };
    let _ = super::set_times_handle(root, &times);
    Ok(limits)
}

/// Whether an error making the probe says the root may not be written in.
fn no_write(e: &std::io::Error) -> bool {
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    matches!(errno, Some(Errno::ACCESS | Errno::PERM | Errno::ROFS))
}

/// Whether the root lies on a filesystem that holds everything a Linux tree has, with
/// nanosecond times and names compared byte for byte (by its `statfs` magic number): ext2/3/4,
/// XFS, btrfs, tmpfs, f2fs.
// The field's type differs between platforms.
#[allow(clippy::unnecessary_cast)]
fn holds_everything(root: BorrowedFd<'_>) -> bool {
    const NATIVE: [i64; 5] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0xF2F5_2010];
    rustix::fs::fstatfs(root).is_ok_and(|s| NATIVE.contains(&(s.f_type as i64)))
}

/// Whether a filesystem is mounted through FUSE (by its `statfs` magic number).
// The field's type differs between platforms.
#[allow(clippy::unnecessary_cast)]
fn is_fuse(stat: &rustix::fs::StatFs) -> bool {
    stat.f_type as i64 == 0x6573_5546
}

/// The filesystem type of the mount `root` lies on, from the mount table (`fuseblk`,
/// `fuse.sshfs`, `ext4`, ...): the line of its mount ID (a btrfs subvolume's device number is
/// not the one the table shows), else of its device.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn filesystem_name(root: BorrowedFd<'_>, stat: &rustix::fs::Stat) -> String {
    let mount_id = crate::mounts::mount_id_at(root, std::path::Path::new(""), AtFlags::EMPTY_PATH);
    let device = format!(
        "{}:{}",
        rustix::fs::major(stat.st_dev),
        rustix::fs::minor(stat.st_dev)
    );
    let table = crate::mounts::Mounts::read();
    mount_id
        .and_then(|id| table.by_id(id))
        .or_else(|| table.by_device(&device))
        .map(|mount| mount.fs_type.clone())
        .unwrap_or_else(|| match rustix::fs::fstatfs(root) {
            Ok(s) if is_fuse(&s) => String::from("fuse"),
            _ => String::from("unknown"),
        })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn filesystem_name(_root: BorrowedFd<'_>, _stat: &rustix::fs::Stat) -> String {
    String::from("unknown")
}

/// The name spelled otherwise: in upper case, or in lower case for one in upper case already.
fn other_spelling(name: &OsStr) -> Option<String> {
    let text = name.to_str()?;
    let upper = text.to_uppercase();
    let other = if upper == text {
        text.to_lowercase()
    } else {
        upper
    };
    (other != text).then_some(other)
}

/// Whether the probe's own file `name` (a fresh temporary: nothing else is spelled like it) is
/// found under another spelling.
fn case_sensitive(root: BorrowedFd<'_>, name: &OsStr) -> bool {
    other_spelling(name).is_none_or(|other| {
        matches!(
            rustix::fs::statat(root, other.as_str(), AtFlags::SYMLINK_NOFOLLOW),
            Err(Errno::NOENT)
        )
    })
}

/// Whether the entry `name` of `root` (from the listing, which has no other spelling of it) is
/// found under another spelling as the same entry: same device and inode. A filesystem that
/// holds `A` beside `a` answers with another entry, or none, and is case-sensitive.
fn same_entry_otherwise_spelled(root: BorrowedFd<'_>, name: &OsStr) -> bool {
    let stat = |n: &OsStr| rustix::fs::statat(root, n, AtFlags::SYMLINK_NOFOLLOW).ok();
    let Some(other) = other_spelling(name) else {
        return false;
    };
    match (stat(name), stat(OsStr::new(&other))) {
        (Some(a), Some(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
        _ => false,
    }
}

/// Whether `make` can make an entry under a temporary name in `root`. What it made is removed,
/// and so is anything a driver left behind on failure (exfat-fuse fails `mknod` with `EIO`
/// after making a regular file).
fn made(
    root: BorrowedFd<'_>,
    kind: char,
    mut make: impl FnMut(BorrowedFd<'_>, &OsStr) -> rustix::io::Result<()>,
) -> bool {
    let mut tried = OsString::new();
    let result = new_temp(kind, |temp| {
        tried = temp.to_os_string();
        make(root, temp)
    });
    let _ = rustix::fs::unlinkat(root, &tried, AtFlags::empty());
    result.is_ok()
}

/// Whether a file can be made under a temporary name holding `odd` (still a temporary's name,
/// so a killed run's is swept); it is removed at once.
fn takes_name(root: BorrowedFd<'_>, odd: &[u8]) -> bool {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let made = new_temp('c', |temp| {
        let mut name = temp.as_bytes().to_vec();
        let at = name.len() - ".tmp".len();
        name.splice(at..at, odd.iter().copied());
        let name = OsString::from_vec(name);
        let made = rustix::fs::openat(root, &name, flags, Mode::RUSR | Mode::WUSR);
        let _ = rustix::fs::unlinkat(root, &name, AtFlags::empty());
        made.map(drop)
    });
    made.is_ok()
}

/// Whether permission bits are kept as set: read back, not trusted from `chmod`'s success.
fn keeps_modes(file: &OwnedFd) -> bool {
    let wanted = 0o640;
    super::chmod_handle(file.as_fd(), wanted).is_ok()
        && rustix::fs::fstat(file).is_ok_and(|s| s.st_mode & 0o7777 == wanted)
}

/// Whether the file can be given an owner and group: as root another owner, as a user its
/// own ids (which a filesystem without owners refuses too).
fn keeps_owners(file: &OwnedFd) -> bool {
    let (uid, gid) = match rustix::process::geteuid().is_root() {
        true => (1, 1),
        false => (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ),
    };
    let ids = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    rustix::fs::fchown(file, ids.0, ids.1).is_ok()
        && rustix::fs::fstat(file).is_ok_and(|s| s.st_uid == uid && s.st_gid == gid)
}

/// Whether a `user.` extended attribute can be set.
fn keeps_xattrs(file: &OwnedFd) -> bool {
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::fsetxattr(file, "user.syncease.probe", b"1", flags).is_ok()
}

/// Set [`PROBE_TIME`] on `name` in `root` (`""`: `root` itself) the way copies are given their
/// time, and read back how much of it the
/// filesystem kept: the step it rounds to (0 when the time did not stick at all).
fn time_resolution(root: BorrowedFd<'_>, name: &OsStr) -> u64 {
    let set = super::set_times_at(root, name, PROBE_TIME, crate::entry::Tag::File);
    let stat = match name.is_empty() {
        true => rustix::fs::fstat(root),
        false => rustix::fs::statat(root, name, AtFlags::SYMLINK_NOFOLLOW),
    };
    let got = match stat {
        Ok(stat) if set.is_ok() => Mtime::of_stat(&stat),
        _ => return 0,
    };
    let off = PROBE_TIME.abs_diff_nanos(got);
    [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000]
        .into_iter()
        .chain([100_000_000, 1_000_000_000, 2_000_000_000])
        .find(|&step| off < u128::from(step))
        .unwrap_or(0)
}
