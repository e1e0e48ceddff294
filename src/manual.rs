//! The manual page's sections beyond the options (`--man`), as `rsync(1)` has them: what a
//! filter matches, the itemized codes, the JSON report, what destinations keep, the safety
//! rules and the exit status. Written as plain text (paragraphs, `- ` items) and turned into
//! roff here, so the text reads the same in the source as on the page.

use std::io::{self, Write};

/// (section title, text): paragraphs separated by blank lines; a line starting with `- ` is
/// an item of a list; a line starting with two spaces is shown as typed.
const SECTIONS: &[(&str, &str)] = &[
    (
        "FILTERS",
        "Patterns are gitignore-style globs matched on the path relative to SRC, and identically \
to DST: an excluded path is neither copied nor deleted, and an excluded directory is not even \
listed.

- A pattern without a slash matches a name at any depth (*.tmp).
- A leading slash anchors it to the root (/build); a slash inside anchors it too (docs/*.pdf).
- A trailing slash matches directories only (cache/); ** spans directories (**/cache/**).
- A path is left out when an --exclude matches it and no --include does.
- --exclude-from FILE: one pattern per line, blank lines and # comments skipped, !GLOB an include.
- --files-from FILE: only the listed paths (relative to SRC, one per line, or NUL-separated \
with --from0), each with everything below it; the directories above them only hold them.
- --delete-excluded deletes what the filters leave out from DST too.",
    ),
    (
        "SNAPSHOTS",
        "--link-dest DIR hard-links each file unchanged against DIR (same size, modification time, \
permission bits, owner and group, and attributes with -X/-A) instead of copying it; \
--reflink-dest DIR copies it from DIR with shared extents (btrfs, XFS). A relative DIR is \
relative to DST, as in rsync:

  syncease --link-dest=../latest ~/data /backup/$(date +%F)",
    ),
    (
        "ITEMIZED OUTPUT",
        "-v and --dry-run print one line per action: a two-character code, a reason, the path \
relative to DST (directories end in /, symlinks show -> target, hard links => first name).

- First character: + created, > updated, ~ replaced an entry of another type, . metadata \
fixed, - deleted.
- Second character: f file, d directory, l symlink, s FIFO, socket or device.
- Reasons: new, size, time, content (--checksum), target, type, link, mode, owner, group, \
xattr, acl, case, meta, gone, stale (a leftover temporary removed).",
    ),
    (
        "JSON REPORT",
        "--json prints one JSON document on stdout when the run ends, on every exit path: version, \
status (synced, partial, refused, interrupted), exit_code, dry_run, refused (the reason, or \
null), copied and updated ({files, bytes}), deleted, unchanged ({files, bytes}), fixed, skipped, \
kept_newer, vanished, not_written, deletions_withheld (the reason, or null), interrupted (the \
signal, or null), reasons (actions by reason word), destination (what the probe found DST \
holds: filesystem, fuse, case_sensitive, symlinks, hard_links, specials, modes, owners, xattrs, \
byte_names, any_names, time_resolution_ns), seconds, errors ([{path, message}]) and warnings.",
    ),
    (
        "DESTINATIONS",
        "Every run first probes what DST can hold (an unnamed file where the filesystem has them, \
else one temporary file in DST's root, removed at once) and plans within it: times are compared \
within the destination's resolution (2 s on FAT, 1 s through exfat-fuse); what it cannot hold \
(permission bits, owners, symlinks, hard links, special files, attributes) is one warning per \
run, not an error per file; names it cannot store are skipped with a warning; on a destination \
that ignores case, a name spelled otherwise is renamed to the source's spelling, and source \
names that are one name there are one error, with nothing lost.",
    ),
    (
        "REMOTES",
        "Built with the s3, gcs, azure, webdav and sftp features, SRC and DST may each be \
s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX, webdav[s]://[USER@]HOST[:PORT]/PATH \
or sftp://[USER@]HOST[:PORT]/PATH, in any pairing: a backup is restored by naming it as SRC. On a \
local side every rule above holds. Times come from the remote (the mtime metadata recorded at \
upload on S3, GCS and Azure; the manifest on WebDAV; whole seconds over SFTP); object stores and \
WebDAV keep no permission bits and no directory times, so new files are 0644, new directories \
0755. Within one bucket objects are copied on the server. WebDAV passwords come from \
SYNCEASE_WEBDAV_PASSWORD or ~/.netrc. See the README for credentials, the manifest, timeouts and reconnection.",
    ),
    (
        "SAFETY",
        "- Every file is written under a temporary name (or unnamed) and renamed into place when \
complete: a killed run leaves the old or the new version, never a mix; the next run sweeps \
leftover temporaries.
- Deletions run last, and not at all when any part of SRC could not be read, DST could not be \
listed or probed, a write failed, or --max-delete would be exceeded.
- An empty SRC over a non-empty DST is refused (--allow-empty-source), and so is a DST that \
shares no entry with SRC (--allow-unrelated).
- SRC and DST may not be one inside the other, judged by device and inode (bind mounts too).
- Every write goes through directory handles opened without following links: nothing is \
written outside DST, even when a symlink is swapped in during the run. One run per DST at a \
time (a lock; --wait-lock to wait).
- SIGINT, SIGTERM, SIGHUP: no new work, files in flight finished, nothing deleted after the \
signal, no temporary left, the summary and JSON printed; a second signal exits at once.
- A full, over-quota or read-only DST stops the writes at the first failure: one error.",
    ),
    (
        "EXIT STATUS",
        "- 0: everything synced.
- 1: partial: some entries failed, or deletions were withheld; the rest synced.
- 2: refused, or invalid usage: nothing was changed.
- 130, 143, 129: stopped by SIGINT, SIGTERM or SIGHUP.",
    ),
];

/// Text for roff: a backslash doubled, a line that starts with `.` or `'` guarded.
fn escape(line: &str) -> String {
    let line = line.replace('\\', "\\e").replace('-', "\\-");
    match line.starts_with('.') || line.starts_with('\'') {
        true => format!("\\&{line}"),
        false => line,
    }
}

/// Write the sections in roff, to follow the page clap renders.
pub fn write_sections(w: &mut dyn Write) -> io::Result<()> {
    for (title, text) in SECTIONS {
        writeln!(w, ".SH {title}")?;
        for paragraph in text.split("\n\n") {
            for line in paragraph.lines() {
                if let Some(item) = line.strip_prefix("- ") {
                    writeln!(w, ".IP \\(bu 2\n{}", escape(item))?;
                } else if let Some(typed) = line.strip_prefix("  ") {
                    writeln!(w, ".PP\n.nf\n{}\n.fi", escape(typed))?;
                } else {
                    writeln!(w, ".PP\n{}", escape(line))?;
                }
            }
        }
    }
    Ok(())
}
