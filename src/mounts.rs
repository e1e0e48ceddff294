//! The kernel's table of mounts (`/proc/self/mountinfo`), to tell where a path lies in its
//! filesystem. One folder can be mounted at several places (a bind mount, a second mount of
//! one filesystem, the upper layer of an overlay): a tree seen at two places is one tree, and
//! its device and inode tell only for the folders a listing enters. Linux only; elsewhere the
//! table is empty and nothing is known.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub id: u64,
    /// `MAJOR:MINOR` of the filesystem (a btrfs subvolume's own device number is not this).
    pub device: String,
    /// The folder of the filesystem mounted here ("/" for its top; a file for a file mount).
    pub root: PathBuf,
    /// Where it is mounted.
    pub point: PathBuf,
    pub fs_type: String,
    /// An overlay's upper layer, where everything written through the overlay goes.
    pub upper: Option<PathBuf>,
}

/// A place in a filesystem: its device and the path from the filesystem's top.
#[derive(Clone, Debug, PartialEq)]
pub struct Place {
    device: String,
    path: PathBuf,
}

impl Place {
    /// A place that is not known (an overlay's upper layer given as a relative path): taken
    /// to meet every other.
    fn anywhere() -> Place {
        Place {
            device: String::new(),
            path: PathBuf::from("/"),
        }
    }
}

/// Where a tree reaches: a place, and the path it is seen at below the tree's root.
#[derive(Clone, Debug, PartialEq)]
pub struct Reach {
    pub place: Place,
    pub seen_at: PathBuf,
    /// On another filesystem than the tree's root (not entered with `-x`).
    pub other_fs: bool,
}

impl Reach {
    /// Where this reach and `other` meet, when one's place holds the other's: the folder they
    /// share, as seen from each (this one's path first).
    pub fn meets(&self, other: &Reach) -> Option<(PathBuf, PathBuf)> {
        let (mine, theirs) = (&self.place, &other.place);
        if mine.device.is_empty() || theirs.device.is_empty() {
            return Some((self.seen_at.clone(), other.seen_at.clone()));
        }
        if mine.device != theirs.device {
            return None;
        }
        let join = crate::fsops::joined;
        if let Ok(below) = theirs.path.strip_prefix(&mine.path) {
            return Some((join(&self.seen_at, below), other.seen_at.clone()));
        }
        let below = mine.path.strip_prefix(&theirs.path).ok()?;
        Some((self.seen_at.clone(), join(&other.seen_at, below)))
    }
}

/// The table, in mount order.
#[derive(Debug, Default)]
pub struct Mounts(Vec<Mount>);

impl Mounts {
    /// The table of this process's mount namespace; empty where there is none to read.
    pub fn read() -> Mounts {
        match std::fs::read("/proc/self/mountinfo") {
            Ok(text) => Mounts::parse(&text),
            Err(_) => Mounts::default(),
        }
    }

    /// Parse `ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - TYPE SOURCE SUPER-OPTIONS`
    /// lines; a line that does not parse is left out.
    pub fn parse(text: &[u8]) -> Mounts {
        let line = |line: &[u8]| -> Option<Mount> {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let dash = fields.iter().position(|f| *f == b"-")?;
            let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
            let upper = (fields.get(dash + 3).copied().unwrap_or_default())
                .split(|&b| b == b',')
                .find_map(|option| option.strip_prefix(b"upperdir="))
                .map(|upper| unescape_option(&unescape(upper)));
            Some(Mount {
                id: text(fields.first()?).parse().ok()?,
                device: text(fields.get(2)?),
                root: unescape(fields.get(3)?),
                point: unescape(fields.get(4)?),
                fs_type: text(fields.get(dash + 1)?),
                upper,
            })
        };
        Mounts(text.split(|&b| b == b'\n').filter_map(line).collect())
    }

    /// The mount with this ID.
    pub fn by_id(&self, id: u64) -> Option<&Mount> {
        self.0.iter().find(|m| m.id == id)
    }

    /// The last mount of this device (the one in effect).
    pub fn by_device(&self, device: &str) -> Option<&Mount> {
        self.0.iter().rev().find(|m| m.device == device)
    }

    /// The place of `path` (a real path; the part that does not exist yet is taken as named),
    /// and the mount it lies on; `None` when the table does not tell.
    fn place(&self, path: &Path) -> Option<(Place, &Mount)> {
        let id = path.ancestors().find_map(mount_id)?;
        let mount = self.by_id(id)?;
        let below = path.strip_prefix(&mount.point).ok()?;
        let place = Place {
            device: mount.device.clone(),
            path: mount.root.join(below),
        };
        Some((place, mount))
    }

    /// Every place the tree at the real path `root` reaches: its own, where an overlay it lies
    /// on writes, and each mount below it (with the overlay each writes to).
    pub fn reach(&self, root: &Path) -> Vec<Reach> {
        let Some((own, on)) = self.place(root) else {
            return Vec::new();
        };
        let mut reach = Vec::new();
        let mut add = |place: Place, seen_at: &Path, mount: &Mount| {
            let other_fs = mount.device != on.device;
            // Written through an overlay, a path lands in its upper layer. The table shows it
            // as it was given when mounted: resolved here, and where that cannot be done
            // (a relative path, one through /proc), taken to be anywhere.
            let upper = (mount.upper.as_deref()).map(|upper| {
                let resolved = (upper.is_absolute() && !upper.starts_with("/proc"))
                    .then(|| std::fs::canonicalize(upper).ok())
                    .flatten();
                let top = resolved.and_then(|upper| Some(self.place(&upper)?.0));
                let inside = place.path.strip_prefix(&mount.root).ok();
                match (top, inside) {
                    (Some(top), Some(inside)) => Place {
                        path: top.path.join(inside),
                        ..top
                    },
                    _ => Place::anywhere(),
                }
            });
            for place in std::iter::once(place).chain(upper) {
                let seen_at = seen_at.to_path_buf();
                reach.push(Reach {
                    place,
                    seen_at,
                    other_fs,
                });
            }
        };
        add(own, root, on);
        // A mount hidden by a later one over it (or over a folder above it) is out of reach:
        // what is seen at its place is another mount.
        let visible = |mount: &Mount| mount_id(&mount.point) == Some(mount.id);
        for mount in &self.0 {
            if mount.point != root && mount.point.starts_with(root) && visible(mount) {
                let place = Place {
                    device: mount.device.clone(),
                    path: mount.root.clone(),
                };
                add(place, &mount.point, mount);
            }
        }
        reach
    }
}

/// The mounts there were when a run began, by [`KEY`]. A folder on any other was mounted
/// during the run, over what the run had listed: the run never goes into it (its deletions
/// would reach whatever was mounted there, a source folder bound there among them). Empty
/// where the table cannot be read: then nothing is known and nothing is refused.
#[derive(Clone, Debug, Default)]
pub struct Present(Arc<[u64]>);

impl Present {
    /// The mounts in `table` that can be reached (seen at their mount point), each by the key
    /// read there: the table's IDs are given again once a mount is gone, so a mount made
    /// during the run could take the ID of one unmounted meanwhile.
    pub fn of(table: &Mounts) -> Present {
        use rustix::fs::{AtFlags, CWD};
        let key = |m: &Mount| {
            let seen = mount_id(&m.point) == Some(m.id);
            seen.then(|| key_at(CWD, &m.point, AtFlags::SYMLINK_NOFOLLOW))?
        };
        let mut ids: Vec<u64> = table.0.iter().filter_map(key).collect();
        ids.sort_unstable();
        Present(ids.into())
    }

    /// Whether a folder on the mount keyed `id` ([`KEY`]) may be entered: it was there when
    /// the run began, or the kernel does not tell mounts apart (`id` 0), or the table was not
    /// read.
    pub fn allows(&self, id: u64) -> bool {
        id == 0 || self.0.is_empty() || self.0.binary_search(&id).is_ok()
    }
}

/// The mount a path lies on (not following a final symlink); `None` where it does not exist
/// or the kernel does not tell.
pub fn mount_id(path: &Path) -> Option<u64> {
    use rustix::fs::{AtFlags, CWD};
    mount_id_at(CWD, path, AtFlags::SYMLINK_NOFOLLOW)
}

/// [`mount_id`] of `path` relative to `dir` (`""` with `AT_EMPTY_PATH`: `dir` itself).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn mount_id_at(
    dir: impl std::os::fd::AsFd,
    path: &Path,
    flags: rustix::fs::AtFlags,
) -> Option<u64> {
    use rustix::fs::{statx, StatxFlags};
    told(&statx(dir, path, flags, StatxFlags::MNT_ID).ok()?)
}

/// What `statx` is asked for to key a mount: the ID no other mount is ever given (Linux 6.8,
/// `STATX_MNT_ID_UNIQUE`), or where the kernel has none, the table's.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const KEY: rustix::fs::StatxFlags =
    rustix::fs::StatxFlags::MNT_ID.union(rustix::fs::StatxFlags::from_bits_retain(0x4000));

/// The [`KEY`] of the mount `path` relative to `dir` lies on.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn key_at(dir: impl std::os::fd::AsFd, path: &Path, flags: rustix::fs::AtFlags) -> Option<u64> {
    told(&rustix::fs::statx(dir, path, flags, KEY).ok()?)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn key_at(
    _dir: impl std::os::fd::AsFd,
    _path: &Path,
    _flags: rustix::fs::AtFlags,
) -> Option<u64> {
    None
}

/// The mount ID (or [`KEY`]) a `statx` that asked for it got, when the kernel told it.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn told(stat: &rustix::fs::Statx) -> Option<u64> {
    use rustix::fs::StatxFlags;
    StatxFlags::from_bits_retain(stat.stx_mask)
        .intersects(KEY)
        .then_some(stat.stx_mnt_id)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn mount_id_at(
    _dir: impl std::os::fd::AsFd,
    _path: &Path,
    _flags: rustix::fs::AtFlags,
) -> Option<u64> {
    None
}

/// An overlay's option value: a comma or backslash in a path is written after a backslash.
fn unescape_option(value: &Path) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    let mut bytes = value.as_os_str().as_bytes().iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.extend(bytes.next()),
            _ => out.push(b),
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// A path field of the table: space, tab, newline and backslash are written `\ooo`.
fn unescape(field: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[u8] = b"\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /dev/shm rw,nosuid - tmpfs tmpfs rw,size=100k
41 22 8:1 /home/a/photos /mnt/with\\040space rw - ext4 /dev/sda1 rw
42 22 0:50 / /srv/merged rw - overlay overlay rw,lowerdir=/lo,upperdir=/home/a/up\\134\\054x,workdir=/w
bad line
";

    #[test]
    fn a_table_line_gives_its_device_paths_type_and_upper_layer() {
        let mounts = Mounts::parse(TABLE);
        assert_eq!(mounts.0.len(), 4);
        let bind = mounts.by_id(41).unwrap();
        assert_eq!(
            (
                bind.device.as_str(),
                bind.root.as_path(),
                bind.point.as_path()
            ),
            (
                "8:1",
                Path::new("/home/a/photos"),
                Path::new("/mnt/with space")
            )
        );
        assert_eq!(mounts.by_device("0:35").unwrap().fs_type, "tmpfs");
        let overlay = mounts.by_id(42).unwrap();
        // A comma in an overlay's path is escaped twice: for the option, then for the table.
        assert_eq!(overlay.upper.as_deref(), Some(Path::new("/home/a/up,x")));
        assert_eq!(mounts.by_id(22).unwrap().upper, None);
    }

    #[test]
    fn reaches_meet_where_one_place_holds_the_other_on_one_device() {
        let at = |device: &str, path: &str, seen_at: &str| Reach {
            place: Place {
                device: device.into(),
                path: path.into(),
            },
            seen_at: seen_at.into(),
            other_fs: false,
        };
        let src = at("8:1", "/home/a", "/home/a");
        let meet = |a: &Reach, b: &Reach| {
            a.meets(b)
                .map(|(x, y)| (x.into_os_string(), y.into_os_string()))
        };
        // DST/x is SRC/photos mounted again; DST/y is SRC's parent.
        let x = at("8:1", "/home/a/photos", "/mnt/dst/x");
        assert_eq!(
            meet(&src, &x),
            Some(("/home/a/photos".into(), "/mnt/dst/x".into()))
        );
        let y = at("8:1", "/home", "/mnt/dst/y");
        assert_eq!(
            meet(&src, &y),
            Some(("/home/a".into(), "/mnt/dst/y/a".into()))
        );
        assert_eq!(meet(&src, &at("8:1", "/home/ab", "/d")), None);
        assert_eq!(meet(&src, &at("8:2", "/home/a", "/d")), None);
    }

    #[test]
    fn escaped_paths_come_back_as_bytes() {
        assert_eq!(unescape(b"a\\040b\\134c\\011"), Path::new("a b\\c\t"));
        assert_eq!(unescape(b"trailing\\04"), Path::new("trailing\\04"));
    }
}
