//! The command line: the only module that knows about clap.
//!
//! [`Cli`] is what the user typed; [`Cli::into_settings`] validates it into the engine's
//! [`Config`] and the front end's [`Output`] settings.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;
use clap_complete::Shell;

use syncease::config::{Compare, Config, Method, Xattrs};
use syncease::filter::{parse_pattern_file, Filter};
use syncease::remote::{self, Url};
use syncease::report::human::Verbosity;

const AFTER_HELP: &str = "\
Exit status:
  0  everything synced
  1  partial: some entries failed or deletions were withheld; the rest synced
  2  refused or invalid usage: nothing was changed
  130, 143, 129  stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP: files written so far are
     whole, nothing was deleted after the signal, no temporary is left; a second signal
     exits at once

Examples:
  syncease ~/photos /mnt/backup/photos       mirror, deleting what ~/photos no longer has
  syncease -n ~/photos /mnt/backup/photos    show what would change, change nothing
  syncease --exclude '*.tmp' --exclude /build/ ~/code /mnt/backup/code
  syncease ~/photos s3://backups/photos      mirror into a bucket prefix (feature s3)
  syncease ~/photos sftp://me@nas/srv/photos mirror to an SSH host (feature sftp)
  syncease s3://backups/photos ~/restored    restore from a bucket prefix (or an SSH host)
  syncease s3://backups/photos sftp://me@nas/srv/photos   from one remote to another";

/// Workers for a run with a remote side when `--jobs` is not given.
const REMOTE_JOBS: usize = 16;

/// Make DST an exact, one-way mirror of SRC: copy new files, update changed ones, delete what
/// SRC no longer has. Files are written under a temporary name and renamed into place.
#[derive(Debug, Parser)]
#[command(
    name = "syncease",
    version,
    about,
    after_help = AFTER_HELP,
    override_usage = "syncease [OPTIONS] SRC DST\n       syncease --completions SHELL | --man"
)]
pub struct Cli {
    /// The folder to mirror (never modified), or s3://BUCKET/PREFIX, or
    /// sftp://[USER@]HOST[:PORT]/PATH
    #[arg(value_name = "SRC", required_unless_present_any = ["completions", "man"])]
    pub src: Option<PathBuf>,

    /// The folder made identical to SRC (created if missing; its parent must exist), or
    /// s3://BUCKET/PREFIX, or sftp://[USER@]HOST[:PORT]/PATH
    #[arg(value_name = "DST", required_unless_present_any = ["completions", "man"])]
    pub dst: Option<PathBuf>,

    /// Plan and print every action, change nothing
    #[arg(short = 'n', long, help_heading = "Run")]
    pub dry_run: bool,

    /// When another run is writing to DST, wait for it to end instead of refusing
    #[arg(long, help_heading = "Run")]
    pub wait_lock: bool,

    /// Worker threads [default: one per CPU to list, at least 8 to write; 16 when SRC or DST is remote]
    #[arg(short, long, value_name = "N", help_heading = "Run")]
    pub jobs: Option<usize>,

    /// Hard-link files unchanged against DIR (an earlier snapshot; relative to DST) instead of copying them; repeatable
    #[arg(long, value_name = "DIR", help_heading = "Snapshots")]
    pub link_dest: Vec<PathBuf>,

    /// Copy files unchanged against DIR from it with shared extents (btrfs, XFS) instead of from SRC; repeatable
    #[arg(long, value_name = "DIR", help_heading = "Snapshots")]
    pub reflink_dest: Vec<PathBuf>,

    /// Do not cross filesystem boundaries: a mount point below SRC is mirrored as an empty directory, and what DST has below it is kept
    #[arg(short = 'x', long, help_heading = "Run")]
    pub one_file_system: bool,

    /// Average at most RATE bytes a second written (KiB/s, or with a suffix: 500K, 2.5M, 1G; 0: no limit), local and remote
    #[arg(long, value_name = "RATE", help_heading = "Run")]
    pub bwlimit: Option<String>,

    /// Make DST's missing parent directories too (DST itself is always made when missing)
    #[arg(long, help_heading = "Run")]
    pub mkpath: bool,

    /// Copy each name of a hard-linked file as a file of its own
    #[arg(long, help_heading = "Run")]
    pub no_hard_links: bool,

    /// Write the holes of sparse files out as zeros (kept as holes by default)
    #[arg(long, overrides_with = "sparse", help_heading = "Run")]
    pub no_sparse: bool,

    /// Skip FIFOs, sockets and device nodes (made again by default; devices only as root)
    #[arg(long, help_heading = "Run")]
    pub no_specials: bool,

    /// Do not keep owners (as root they are kept by numeric id, as rsync -a --numeric-ids)
    #[arg(long, help_heading = "Run")]
    pub no_owner: bool,

    /// Do not keep groups (kept as root, and as a user for the groups the user is in)
    #[arg(long, help_heading = "Run")]
    pub no_group: bool,

    /// Accepted: rsync's -a is what syncease does anyway (-rlptgoD, and -H and -S too)
    #[arg(short = 'a', long, help_heading = "rsync habits")]
    pub archive: bool,

    /// Accepted: syncease always recurses
    #[arg(short = 'r', long, help_heading = "rsync habits")]
    pub recursive: bool,

    /// Accepted, as -p and -t: links are copied as links, permissions and times kept
    #[arg(short = 'l', long = "links", help_heading = "rsync habits")]
    pub links: bool,

    #[arg(short = 'p', long = "perms", hide = true)]
    pub perms: bool,

    #[arg(short = 't', long = "times", hide = true)]
    pub times: bool,

    /// Accepted, as -S, -o, -g, -D and --numeric-ids: hard links, holes, owners and groups (by number), special files kept
    #[arg(
        short = 'H',
        long,
        overrides_with = "no_hard_links",
        help_heading = "rsync habits"
    )]
    pub hard_links: bool,

    #[arg(short = 'S', long, overrides_with = "no_sparse", hide = true)]
    pub sparse: bool,

    #[arg(short = 'o', long, overrides_with = "no_owner", hide = true)]
    pub owner: bool,

    #[arg(short = 'g', long, overrides_with = "no_group", hide = true)]
    pub group: bool,

    #[arg(short = 'D', long, overrides_with = "no_specials", hide = true)]
    pub specials: bool,

    #[arg(long, hide = true)]
    pub numeric_ids: bool,

    /// Accepted, as --delete-after and --delete-during: deletion is the default, after copies
    #[arg(long, overrides_with = "no_delete", help_heading = "rsync habits")]
    pub delete: bool,

    #[arg(long, alias = "delete-during", hide = true)]
    pub delete_after: bool,

    /// Copy and compare extended attributes (user., trusted., security.; as root, file capabilities)
    #[arg(short = 'X', long)]
    pub xattrs: bool,

    /// Copy and compare POSIX ACLs
    #[arg(short = 'A', long)]
    pub acls: bool,

    /// Compare files of equal size by content (BLAKE3) instead of modification time
    #[arg(short, long, help_heading = "Compare", conflicts_with = "size_only")]
    pub checksum: bool,

    /// Never overwrite a destination file that is newer than the source one
    #[arg(short, long, help_heading = "Compare")]
    pub update: bool,

    /// Treat files of equal size as unchanged, whatever their times
    #[arg(long, help_heading = "Compare")]
    pub size_only: bool,

    /// Treat modification times this many seconds apart as equal (2 for FAT)
    #[arg(long, value_name = "SECS", help_heading = "Compare")]
    pub modify_window: Option<f64>,

    /// Leave out paths matching GLOB (gitignore-style, relative to SRC); repeatable
    #[arg(long, value_name = "GLOB", help_heading = "Filter")]
    pub exclude: Vec<String>,

    /// Keep paths matching GLOB even when an --exclude matches them; repeatable
    #[arg(long, value_name = "GLOB", help_heading = "Filter")]
    pub include: Vec<String>,

    /// Read exclude patterns from FILE (one per line, '#' comments, '!GLOB' includes)
    #[arg(long, value_name = "FILE", help_heading = "Filter")]
    pub exclude_from: Vec<PathBuf>,

    /// Mirror only the paths listed in FILE ('-': stdin), relative to SRC, with what is below them
    #[arg(long, value_name = "FILE", help_heading = "Filter")]
    pub files_from: Option<PathBuf>,

    /// --files-from names are separated by NUL bytes (as find -print0 writes them)
    #[arg(short = '0', long, help_heading = "Filter")]
    pub from0: bool,

    /// Put every file of SRC, from any depth, directly in DST (newest wins on equal names)
    #[arg(long, help_heading = "Layout")]
    pub flatten: bool,

    /// Copy and update only; keep destination entries SRC does not have
    #[arg(long, help_heading = "Deletion")]
    pub no_delete: bool,

    /// Delete nothing when more than N entries would be deleted (and exit 1)
    #[arg(long, value_name = "N", help_heading = "Deletion")]
    pub max_delete: Option<u64>,

    /// Sync even when SRC is empty and DST is not (empties DST)
    #[arg(long, help_heading = "Deletion")]
    pub allow_empty_source: bool,

    /// Delete from DST what the filters exclude, too (excluded paths are left alone by default)
    #[arg(long, help_heading = "Deletion", conflicts_with = "no_delete")]
    pub delete_excluded: bool,

    /// Sync even when DST shares no entry with SRC, so that everything in it would be deleted
    #[arg(long, help_heading = "Deletion")]
    pub allow_unrelated: bool,

    /// Move files that would be overwritten or deleted into DIR (same relative path; a relative DIR is relative to DST) instead
    #[arg(long, value_name = "DIR", help_heading = "Deletion")]
    pub backup_dir: Option<PathBuf>,

    /// S3-compatible service to use instead of AWS (e.g. http://127.0.0.1:3900)
    #[arg(long, value_name = "URL", help_heading = "Remote")]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, the AWS_PROFILE's region, else us-east-1]
    #[arg(long, value_name = "REGION", help_heading = "Remote")]
    pub s3_region: Option<String>,

    /// Storage class of uploaded objects (e.g. STANDARD_IA, GLACIER_IR, DEEP_ARCHIVE) [default: the bucket's]
    #[arg(long, value_name = "CLASS", help_heading = "Remote")]
    pub s3_storage_class: Option<String>,

    /// Server-side encryption of uploaded objects: AES256, aws:kms or aws:kms:KEY_ID
    #[arg(long, value_name = "MODE", help_heading = "Remote")]
    pub s3_sse: Option<String>,

    /// Fail a remote request left unanswered this long (it is retried a few times first; 0: wait forever)
    #[arg(long, value_name = "SECONDS", default_value_t = remote::TIMEOUT.as_secs_f64(), help_heading = "Remote")]
    pub timeout: f64,

    /// Give up connecting and logging in to a remote after this long (0: wait forever)
    #[arg(long, value_name = "SECONDS", default_value_t = remote::CONNECT_TIMEOUT.as_secs_f64(), help_heading = "Remote")]
    pub contimeout: f64,

    /// Private key for SFTP logins, the only one tried [default: ssh-agent's keys, then the SSH configuration's IdentityFile or ~/.ssh/id_ed25519, id_ecdsa, id_rsa]
    #[arg(long, value_name = "FILE", help_heading = "Remote")]
    pub ssh_key: Option<PathBuf>,

    /// SSH connections to an SFTP host; the workers spread over them (1-64)
    #[arg(long, value_name = "N", default_value_t = remote::SFTP_CONNECTIONS as u8, value_parser = clap::value_parser!(u8).range(1..=64), help_heading = "Remote")]
    pub sftp_connections: u8,

    /// SSH configuration for SFTP hosts (Host aliases, HostName, User, Port, IdentityFile), read by `ssh -G` [default: ~/.ssh/config]
    #[arg(long, value_name = "FILE", help_heading = "Remote")]
    pub ssh_config: Option<PathBuf>,

    /// known_hosts file the SFTP host key must be in [default: the SSH configuration's UserKnownHostsFile, ~/.ssh/known_hosts]
    #[arg(long, value_name = "FILE", help_heading = "Remote")]
    pub known_hosts: Option<PathBuf>,

    /// Print one line per action on stdout (itemized)
    #[arg(short, long, conflicts_with = "quiet", help_heading = "Output")]
    pub verbose: bool,

    /// Print errors only
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,

    /// Print a JSON report on stdout at the end (schema in the README)
    #[arg(long, help_heading = "Output")]
    pub json: bool,

    /// Show a progress bar (the default when stderr is a terminal; never otherwise)
    #[arg(long, overrides_with = "no_progress", help_heading = "Output")]
    pub progress: bool,

    /// Never show a progress bar
    #[arg(long, help_heading = "Output")]
    pub no_progress: bool,

    /// Also write a detailed log of every decision and action to FILE
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub log_file: Option<PathBuf>,

    /// Print a shell completion script and exit
    #[arg(long, value_name = "SHELL", exclusive = true, help_heading = "Help")]
    pub completions: Option<Shell>,

    /// Print the manual page (roff) and exit
    #[arg(long, exclusive = true, help_heading = "Help")]
    pub man: bool,
}

/// How the front end reports.
#[derive(Debug)]
pub struct Output {
    pub verbosity: Verbosity,
    pub json: bool,
    pub progress: bool,
    pub log_file: Option<PathBuf>,
}

impl Cli {
    /// Print what `--completions` or `--man` asks for, and the exit code; `None` for a run.
    pub fn print_extras(&self) -> Option<std::process::ExitCode> {
        use clap::CommandFactory;
        let mut stdout = std::io::stdout();
        if let Some(shell) = self.completions {
            clap_complete::generate(shell, &mut Cli::command(), "syncease", &mut stdout);
            return Some(std::process::ExitCode::SUCCESS);
        }
        if self.man {
            let page = clap_mangen::Man::new(Cli::command());
            let rendered = page
                .render(&mut stdout)
                .and_then(|()| crate::manual::write_sections(&mut stdout));
            return Some(match rendered {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(_) => std::process::ExitCode::from(2),
            });
        }
        None
    }

    /// Validate into the engine's settings; `Err` is a usage message (exit 2).
    pub fn into_settings(self) -> Result<(Config, Output), String> {
        let (Some(src), Some(dst)) = (self.src, self.dst) else {
            return Err("SRC and DST are required".into());
        };
        let url = |path: &PathBuf| match path.to_str() {
            Some(text) => Url::parse(text),
            None => Ok(None),
        };
        let (src_url, dst_url) = (url(&src)?, url(&dst)?);
        let mut config = Config::new(src, dst);
        if src_url.is_some() || dst_url.is_some() {
            // Network round trips, not CPUs, bound a remote run: keep many requests in flight.
            config.jobs = REMOTE_JOBS;
            config.writers = REMOTE_JOBS;
        }
        config.src_url = src_url;
        config.dst_url = dst_url;
        let seconds = |name: &str, secs: f64| match secs {
            0.0 => Ok(None),
            s if s.is_finite() && s > 0.0 => Ok(Some(std::time::Duration::from_secs_f64(s))),
            s => Err(format!("--{name} {s}: must be 0 (no limit) or more")),
        };
        config.remote_options = remote::Options {
            timeout: seconds("timeout", self.timeout)?,
            connect_timeout: seconds("contimeout", self.contimeout)?,
            s3_endpoint: self.s3_endpoint,
            s3_region: self.s3_region,
            s3_storage_class: self.s3_storage_class,
            s3_sse: self.s3_sse,
            ssh_key: self.ssh_key,
            ssh_config: self.ssh_config,
            sftp_connections: usize::from(self.sftp_connections),
            known_hosts: self.known_hosts,
        };
        if let Some(jobs) = self.jobs {
            if jobs == 0 {
                return Err("--jobs must be at least 1".into());
            }
            (config.jobs, config.writers) = (jobs, jobs);
        }
        let modify_window_ns = match self.modify_window {
            None => 0,
            Some(secs) if secs.is_finite() && secs >= 0.0 => (secs * 1e9).round() as u128,
            Some(secs) => return Err(format!("--modify-window {secs}: must be 0 or more")),
        };
        config.compare = Compare {
            range: None,
            method: if self.checksum {
                Method::Checksum
            } else if self.size_only {
                Method::SizeOnly
            } else {
                Method::Quick
            },
            modify_window_ns,
            update: self.update,
        };
        let (mut excludes, mut includes) = (self.exclude, self.include);
        for file in &self.exclude_from {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read exclude file '{}': {e}", file.display()))?;
            let (ex, inc) = parse_pattern_file(&text);
            excludes.extend(ex);
            includes.extend(inc);
        }
        config.filter = Filter::new(&excludes, &includes).map_err(|e| e.to_string())?;
        if let Some(list) = &self.files_from {
            let bytes = match list.as_os_str() == "-" {
                true => {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map(|_| bytes)
                }
                false => std::fs::read(list),
            }
            .map_err(|e| format!("cannot read --files-from '{}': {e}", list.display()))?;
            let paths = syncease::filter::parse_file_list(&bytes, self.from0)?;
            config.filter = config.filter.only(paths);
        } else if self.from0 {
            return Err("--from0 needs --files-from".into());
        }
        config.flatten = self.flatten;
        config.dry_run = self.dry_run;
        config.wait_lock = self.wait_lock;
        config.mkpath = self.mkpath;
        if let Some(rate) = &self.bwlimit {
            config.bwlimit = syncease::bwlimit::parse(rate)?;
        }
        config.one_file_system = self.one_file_system;
        if config.dst_url.is_some() && !(self.link_dest.is_empty() && self.reflink_dest.is_empty())
        {
            return Err("--link-dest and --reflink-dest need a local destination".into());
        }
        // Relative to DST, as in rsync.
        let dirs = |list: Vec<PathBuf>, reflink: bool| {
            let dst = config.dst.clone();
            list.into_iter()
                .map(move |dir| (below_dst(&dst, &dir), reflink))
        };
        config.priors = dirs(self.link_dest, false)
            .chain(dirs(self.reflink_dest, true))
            .collect();
        config.ownership.owner = !self.no_owner;
        config.specials &= !self.no_specials;
        config.hard_links = !self.no_hard_links && !self.flatten;
        config.sparse = !self.no_sparse;
        config.xattrs = Xattrs {
            plain: self.xattrs,
            acls: self.acls,
            privileged: false,
        };
        config.ownership.group = !self.no_group;
        config.delete = !self.no_delete;
        config.delete_excluded = self.delete_excluded;
        config.max_delete = self.max_delete;
        config.allow_empty_source = self.allow_empty_source;
        config.allow_unrelated = self.allow_unrelated;
        // A relative backup directory is relative to DST, as in rsync (a remote one is a
        // prefix or path on that side already).
        config.backup_dir = match self.backup_dir {
            Some(dir) if dir.is_relative() && config.dst_url.is_none() => {
                Some(below_dst(&config.dst, &dir))
            }
            other => other,
        };
        let verbosity = if self.quiet {
            Verbosity::Quiet
        } else if self.verbose || self.dry_run {
            Verbosity::Itemize
        } else {
            Verbosity::Normal
        };
        let wanted = self.progress || (verbosity == Verbosity::Normal && !self.no_progress);
        let output = Output {
            verbosity,
            json: self.json,
            progress: wanted
                && !self.no_progress
                && !self.dry_run
                && verbosity != Verbosity::Quiet
                && std::io::stderr().is_terminal(),
            log_file: self.log_file,
        };
        Ok((config, output))
    }
}

/// A directory given relative to DST (as rsync takes `--backup-dir` and `--link-dest`), with
/// `..` taken by name: DST may not exist yet, so `DST/../old` cannot be resolved through it.
fn below_dst(dst: &std::path::Path, dir: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let joined = std::path::absolute(dst)
        .unwrap_or_else(|_| dst.to_path_buf())
        .join(dir);
    let mut clean = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    clean
}
