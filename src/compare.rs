//! Whether a destination file already matches its source, and if not, why.
//!
//! Every verdict carries a reason so that `-v` and the log can say why an action exists. The rule
//! is rsync's quick check by default: same size and same modification time means unchanged,
//! without reading a byte. `--modify-window` widens "same time" for filesystems with coarse
//! timestamps, `--size-only` ignores time, `--update` keeps destination files that are newer.

use crate::config::{Compare, Method};
use crate::entry::{Entry, Mtime, Tag};

/// Why a file (or link) is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not in the destination.
    New,
    /// Sizes differ.
    Size,
    /// Modification times differ.
    Time,
    /// Contents differ (`--checksum`).
    Content,
    /// The destination path holds another type of entry, which is replaced.
    Type(Tag),
    /// A symlink points elsewhere.
    Target,
    /// A hard link to another name of the same file.
    Link,
}

impl Reason {
    /// The word in the reason column of itemized output.
    pub fn word(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Size => "size",
            Reason::Time => "time",
            Reason::Content => "content",
            Reason::Type(_) => "type",
            Reason::Target => "target",
            Reason::Link => "link",
        }
    }
}

/// The outcome of comparing two regular files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    Write(Reason),
    /// `--update`: the destination is newer, so it is kept.
    KeepNewer,
}

/// True when two times are equal within the window.
pub fn same_time(a: Mtime, b: Mtime, rule: &Compare) -> bool {
    a.held_in(rule.range).abs_diff_nanos(b.held_in(rule.range)) <= rule.modify_window_ns
}

/// Compare a source file with the destination file at the same path. `content_differs` is the
/// result of comparing contents, known only with `--checksum` for files of equal size.
pub fn files(src: &Entry, dst: &Entry, rule: &Compare, content_differs: bool) -> Verdict {
    let time_equal = same_time(src.mtime, dst.mtime, rule);
    if rule.update && !time_equal && dst.mtime > src.mtime {
        return Verdict::KeepNewer;
    }
    if src.size != dst.size {
        return Verdict::Write(Reason::Size);
    }
    match rule.method {
        Method::SizeOnly => Verdict::Unchanged,
        Method::Checksum if content_differs => Verdict::Write(Reason::Content),
        Method::Checksum => Verdict::Unchanged,
        Method::Quick if time_equal => Verdict::Unchanged,
        Method::Quick => Verdict::Write(Reason::Time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn file(size: u64, sec: i64, nsec: u32) -> Entry {
        Entry::detached(Tag::File, size, Mtime { sec, nsec }, 0o644)
    }

    #[test]
    fn table() {
        let quick = Compare::default();
        let window = Compare {
            modify_window_ns: 2_000_000_000,
            ..quick
        };
        let size_only = Compare {
            method: Method::SizeOnly,
            ..quick
        };
        let update = Compare {
            update: true,
            ..quick
        };
        use Verdict::*;
        let cases = [
            ("same", file(1, 10, 5), file(1, 10, 5), quick, Unchanged),
            (
                "nanos differ",
                file(1, 10, 5),
                file(1, 10, 6),
                quick,
                Write(Reason::Time),
            ),
            (
                "size differs",
                file(1, 10, 5),
                file(2, 10, 5),
                quick,
                Write(Reason::Size),
            ),
            (
                "inside window",
                file(1, 10, 0),
                file(1, 12, 0),
                window,
                Unchanged,
            ),
            (
                "outside window",
                file(1, 10, 0),
                file(1, 12, 1),
                window,
                Write(Reason::Time),
            ),
            (
                "size only ignores time",
                file(1, 10, 0),
                file(1, 99, 0),
                size_only,
                Unchanged,
            ),
            (
                "size only sees size",
                file(1, 10, 0),
                file(3, 10, 0),
                size_only,
                Write(Reason::Size),
            ),
            (
                "update keeps newer dst",
                file(1, 10, 0),
                file(2, 11, 0),
                update,
                KeepNewer,
            ),
            (
                "update copies newer src",
                file(1, 12, 0),
                file(2, 11, 0),
                update,
                Write(Reason::Size),
            ),
            (
                "pre-1970",
                file(1, -5, 1),
                file(1, -5, 2),
                quick,
                Write(Reason::Time),
            ),
        ];
        for (name, src, dst, rule, expected) in cases {
            assert_eq!(files(&src, &dst, &rule, false), expected, "{name}");
        }
        // Times before 1980 are held as 1980 on FAT: the same time there.
        let fat = Compare {
            range: Some(crate::config::FAT_TIMES),
            ..quick
        };
        let (old, held) = (file(1, 0, 5), file(1, crate::config::FAT_TIMES.0, 0));
        assert_eq!(files(&old, &held, &fat, false), Unchanged);
        assert_eq!(files(&old, &held, &quick, false), Write(Reason::Time));
        let checksum = Compare {
            method: Method::Checksum,
            ..quick
        };
        let (a, b) = (file(1, 10, 5), file(1, 10, 5));
        assert_eq!(files(&a, &b, &checksum, true), Write(Reason::Content));
        assert_eq!(files(&a, &file(1, 99, 0), &checksum, false), Unchanged);
        assert_eq!(
            files(&a, &file(2, 10, 5), &checksum, false),
            Write(Reason::Size)
        );
    }
}
