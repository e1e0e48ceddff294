//! Validated settings the engine runs with: no clap types past this point.
//!
//! The command line is parsed in `cli.rs` and turned into a [`Config`]; everything below that
//! (preflight, scan, plan, execute) reads only this plain structure, so it can be built by tests
//! without going through argument parsing.

use std::path::PathBuf;

use crate::entry::Owner;
use crate::filter::Filter;
use crate::remote::{self, Url};

/// How two regular files of the same path are judged equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    /// Size and modification time (rsync's quick check).
    #[default]
    Quick,
    /// Size alone.
    SizeOnly,
    /// Size, then content (BLAKE3) when sizes are equal.
    Checksum,
}

/// The comparison rule for regular files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Compare {
    pub method: Method,
    /// Modification times this close (in nanoseconds, either way) count as equal.
    pub modify_window_ns: u128,
    /// Never overwrite a destination file that is newer than the source one.
    pub update: bool,
    /// The range of times the destination can hold (seconds since 1970, both ends in): a time
    /// outside counts as the nearest end (FAT and exFAT keep 1980 to 2107).
    pub range: Option<(i64, i64)>,
}

/// The times FAT and exFAT can hold: 1980-01-01 to 2107-12-31 (in seconds since 1970).
pub const FAT_TIMES: (i64, i64) = (315_532_800, 4_354_819_199);

/// What a destination can hold, found by probing it at the start of a run (see
/// `fsops::probe`); the plan compares within these limits and reports once what they lose.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// The filesystem type, as the mount table names it (`ext4`, `fuseblk`, `vfat`, ...).
    pub filesystem: String,
    /// Mounted through FUSE: times are checked after each file is placed.
    pub fuse: bool,
    /// `a` and `A` are two names (false: one name, spelled either way).
    pub case_sensitive: bool,
    pub symlinks: bool,
    pub hard_links: bool,
    /// FIFOs (and, for root, device nodes) can be made.
    pub specials: bool,
    /// Permission bits are kept as set.
    pub modes: bool,
    /// Owners and groups can be given (as far as the run may give them).
    pub owners: bool,
    /// Extended attributes can be set.
    pub xattrs: bool,
    /// Names that are not UTF-8 can be stored.
    pub byte_names: bool,
    /// Names with the characters FAT and exFAT refuse (`" * / : < > ? \ |`, control
    /// characters) can be stored.
    pub any_names: bool,
    /// The finest modification-time step kept (1 on most Linux filesystems, 2 s on FAT); 0
    /// when times cannot be set at all.
    pub time_resolution_ns: u64,
}

impl Default for Limits {
    /// A destination that holds everything (what is assumed where it cannot be probed).
    fn default() -> Limits {
        Limits {
            filesystem: String::from("unknown"),
            fuse: false,
            case_sensitive: true,
            symlinks: true,
            hard_links: true,
            specials: true,
            modes: true,
            owners: true,
            xattrs: true,
            byte_names: true,
            any_names: true,
            time_resolution_ns: 1,
        }
    }
}

impl Limits {
    /// What of the properties a run asked for the destination cannot hold, in words.
    pub fn lost(&self, config: &Config) -> Vec<&'static str> {
        let mut lost = Vec::new();
        let asked = [
            (self.modes, true, "permission bits"),
            (
                self.owners,
                config.ownership.owner || config.ownership.group,
                "owners",
            ),
            (self.symlinks, true, "symlinks"),
            (self.hard_links, config.hard_links, "hard links"),
            (self.specials, config.specials, "special files"),
            (self.xattrs, config.xattrs.any(), "extended attributes"),
            (self.time_resolution_ns != 0, true, "modification times"),
        ];
        for (holds, wanted, what) in asked {
            if wanted && !holds {
                lost.push(what);
            }
        }
        lost
    }
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub src: PathBuf,
    pub dst: PathBuf,
    /// Worker threads for listing and comparing (at least 1).
    pub jobs: usize,
    /// Worker threads for writing to DST (at least 1): more than CPUs by default, since a
    /// write mostly waits on the disks (see [`WRITERS`]).
    pub writers: usize,
    pub dry_run: bool,
    /// Wait for another run that holds DST's lock instead of refusing.
    pub wait_lock: bool,
    /// Do not cross filesystem boundaries below SRC and DST (`-x`).
    pub one_file_system: bool,
    /// Make DST's missing parent directories too (`--mkpath`).
    pub mkpath: bool,
    /// `--bwlimit`: bytes a second written on average (0: no limit).
    pub bwlimit: u64,
    /// Earlier snapshots whose unchanged files are hard-linked (`--link-dest`) or copied with
    /// shared extents (`--reflink-dest`) instead of copied from SRC: (directory, reflink).
    pub priors: Vec<(PathBuf, bool)>,
    pub compare: Compare,
    /// Remove destination entries the source does not have.
    pub delete: bool,
    /// Delete from DST what the filters exclude too (`--delete-excluded`).
    pub delete_excluded: bool,
    /// Refuse all deletions when more than this many would happen.
    pub max_delete: Option<u64>,
    /// Sync an empty SRC over a non-empty DST (which empties DST).
    pub allow_empty_source: bool,
    /// Sync over a non-empty DST that shares no entry with SRC (which empties it first).
    pub allow_unrelated: bool,
    /// Move overwritten and deleted entries here instead of destroying them.
    pub backup_dir: Option<PathBuf>,
    /// Which paths take part in the mirror (`--exclude`, `--include`).
    pub filter: Filter,
    /// Every file of SRC, from any depth, lands directly in DST.
    pub flatten: bool,
    /// Relative paths left out of the mirror on both sides (the backup directory when it lies
    /// inside DST). Set by preflight.
    pub protected: Vec<PathBuf>,
    /// The mounts there were when preflight began: a folder mounted on since is never
    /// entered. Set by preflight.
    pub mounts: crate::mounts::Present,
    /// Who owns what the run writes, and which owners and groups it keeps.
    pub ownership: Ownership,
    /// Whether the destination can hold symlinks; when not, the source's are skipped with a
    /// warning. Set by `run` from the destination.
    pub symlinks: bool,
    /// Names of one source file are names of one destination file (`--no-hard-links` turns it
    /// off; not with `--flatten` or on remote destinations).
    pub hard_links: bool,
    /// Make FIFOs, sockets and (as root) device nodes (`--no-specials` turns it off; remote
    /// destinations cannot hold them).
    pub specials: bool,
    /// Whether the destination can hold names that are not UTF-8; when not, such source
    /// entries are skipped with a warning. Set by `run` from the destination.
    pub byte_names: bool,
    /// Keep the holes of sparse files (`--no-sparse` writes them out).
    pub sparse: bool,
    /// Extended attributes and ACLs to copy and compare (`-X`, `-A`).
    pub xattrs: Xattrs,
    /// What the destination can hold (probed by `run`; everything until then).
    pub limits: Limits,
    /// SRC as a remote URL (`s3://`, `sftp://`); `src` then holds its text, for messages.
    pub src_url: Option<Url>,
    /// DST as a remote URL; `dst` then holds its text, for messages.
    pub dst_url: Option<Url>,
    /// Settings of remote sources and destinations.
    pub remote_options: remote::Options,
}

/// Which extended attributes a run copies and compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Xattrs {
    /// `-X`: the `user.` namespace, and as root `trusted.` and `security.` too.
    pub plain: bool,
    /// `-A`: POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`).
    pub acls: bool,
    /// The run is root's: the namespaces only root can set are copied.
    pub privileged: bool,
}

impl Xattrs {
    pub fn any(self) -> bool {
        self.plain || self.acls
    }

    /// Whether the attribute `name` is one the run copies.
    pub fn covers(self, name: &[u8]) -> bool {
        let acl = name == b"system.posix_acl_access" || name == b"system.posix_acl_default";
        let plain = name.starts_with(b"user.")
            || (self.privileged
                && (name.starts_with(b"trusted.") || name.starts_with(b"security.")));
        (self.acls && acl) || (self.plain && plain)
    }
}

/// Who owns what a run writes in DST, and what of the source's ownership it keeps.
#[derive(Clone, Debug, Default)]
pub struct Ownership {
    /// The process's effective ids: the owner and group of what it creates (set by `run` for a
    /// local folder; `None` where they are not known, as on remote destinations, which then
    /// keep no owners).
    pub creator: Option<Owner>,
    /// Keep owners (asked: `--no-owner` turns it off); only root can give files away.
    pub owner: bool,
    /// Keep groups (asked: `--no-group` turns it off): any group as root, otherwise the groups
    /// the process belongs to.
    pub group: bool,
    /// The process's groups (supplementary and effective), for a run that is not root's.
    pub groups: Vec<u32>,
    /// The destination holds no owners at all (FAT, exFAT): none is kept or compared.
    pub lost: bool,
}

impl Ownership {
    /// Whether the copy of an entry owned by `uid` gets that owner.
    pub fn keeps_owner(&self, uid: u32) -> bool {
        !self.lost
            && self
                .creator
                .is_some_and(|c| c.uid == uid || (self.owner && c.uid == 0))
    }

    /// Whether the copy of an entry of group `gid` gets that group.
    pub fn keeps_group(&self, gid: u32) -> bool {
        !self.lost
            && self.creator.is_some_and(|c| {
                c.gid == gid || (self.group && (c.uid == 0 || self.groups.contains(&gid)))
            })
    }
}

/// Fewest workers that write to a local DST by default. A worker copying small files waits on
/// the disks for most of each file when the caches are cold (inodes and data read from SRC,
/// blocks allocated in DST): with 8 writers on 2 CPUs a cold first copy of 100,000 small files
/// took two thirds of the time it took with 2, and warm copies were no slower. Listing keeps
/// one worker per CPU, where more workers made a cold no-op run slower.
pub const WRITERS: usize = 8;

impl Config {
    /// The defaults of `syncease SRC DST`.
    pub fn new(src: impl Into<PathBuf>, dst: impl Into<PathBuf>) -> Config {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            src: src.into(),
            dst: dst.into(),
            jobs: cpus,
            writers: cpus.max(WRITERS),
            dry_run: false,
            wait_lock: false,
            mkpath: false,
            bwlimit: 0,
            one_file_system: false,
            priors: Vec::new(),
            compare: Compare::default(),
            delete: true,
            delete_excluded: false,
            max_delete: None,
            allow_empty_source: false,
            allow_unrelated: false,
            backup_dir: None,
            filter: Filter::default(),
            flatten: false,
            protected: Vec::new(),
            mounts: crate::mounts::Present::default(),
            ownership: Ownership::default(),
            symlinks: true,
            byte_names: true,
            hard_links: true,
            // No `mknodat` on macOS.
            specials: !cfg!(target_vendor = "apple"),
            sparse: true,
            xattrs: Xattrs::default(),
            limits: Limits::default(),
            src_url: None,
            dst_url: None,
            remote_options: remote::Options::default(),
        }
    }
}
