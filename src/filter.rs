//! `--exclude` / `--include`: which paths take part in the mirror at all.
//!
//! Patterns are gitignore-style globs matched on the path relative to SRC (and, identically, to
//! DST): a pattern without a slash matches a name at any depth (`*.tmp`), a leading slash anchors
//! it to the root (`/build`), a slash inside anchors it too (`docs/*.pdf`), a trailing slash
//! matches directories only (`cache/`), and `**` spans directories (`**/cache/**`). A path is
//! left out when an exclude pattern matches it and no include pattern does. A left-out
//! directory is not even listed, so nothing below it is copied or deleted (an include cannot
//! reach below an excluded directory, as in rsync and git).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// One side of the rules (excludes or includes), split by whether they apply to dirs only.
#[derive(Debug, Clone, Default)]
struct Rules {
    any: GlobSet,
    dirs_only: GlobSet,
}

impl Rules {
    fn build(patterns: &[String]) -> Result<Rules, FilterError> {
        let mut any = GlobSetBuilder::new();
        let mut dirs_only = GlobSetBuilder::new();
        for pattern in patterns {
            let (glob, dir_only) = compile(pattern)?;
            if dir_only {
                dirs_only.add(glob);
            } else {
                any.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| FilterError::new("", e));
        Ok(Rules {
            any: build(any)?,
            dirs_only: build(dirs_only)?,
        })
    }

    fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        self.any.is_match(rel) || (is_dir && self.dirs_only.is_match(rel))
    }
}

/// The compiled filter; the default lets everything through.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    exclude: Rules,
    include: Rules,
    active: bool,
    /// `--files-from`: only these paths take part (with what is below them, and the
    /// directories above them, as containers only).
    only: Option<Arc<Listed>>,
}

/// The paths `--files-from` names, and the directories above them.
#[derive(Debug, Default)]
struct Listed {
    paths: HashSet<PathBuf>,
    above: HashSet<PathBuf>,
}

impl Listed {
    fn allows(&self, rel: &Path) -> bool {
        self.above.contains(rel) || rel.ancestors().any(|a| self.paths.contains(a))
    }
}

/// Read a `--files-from` list: one path (relative to SRC) per line, or per NUL byte with
/// `--from0`; blank lines, and lines starting with `#` or `;` (not with `--from0`), skipped. A
/// leading `/` or `./` is dropped; a `..` component is an error.
pub fn parse_file_list(bytes: &[u8], nul: bool) -> Result<Vec<PathBuf>, String> {
    use std::os::unix::ffi::OsStrExt;
    let separator = if nul { b'\0' } else { b'\n' };
    let mut paths = Vec::new();
    for line in bytes.split(|&b| b == separator) {
        let line = if nul {
            line
        } else {
            line.strip_suffix(b"\r").unwrap_or(line)
        };
        if line.is_empty() || (!nul && (line[0] == b'#' || line[0] == b';')) {
            continue;
        }
        let mut clean = PathBuf::new();
        for part in Path::new(std::ffi::OsStr::from_bytes(line)).components() {
            match part {
                std::path::Component::Normal(name) => clean.push(name),
                std::path::Component::ParentDir => {
                    let shown = String::from_utf8_lossy(line);
                    return Err(format!("--files-from: '{shown}' leaves the source ('..')"));
                }
                _ => {}
            }
        }
        if !clean.as_os_str().is_empty() {
            paths.push(clean);
        }
    }
    Ok(paths)
}

/// A pattern that is not a valid glob.
#[derive(Debug)]
pub struct FilterError {
    pattern: String,
    message: String,
}

impl FilterError {
    fn new(pattern: &str, e: globset::Error) -> FilterError {
        FilterError {
            pattern: pattern.to_string(),
            message: e.kind().to_string(),
        }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pattern '{}': {}", self.pattern, self.message)
    }
}

impl std::error::Error for FilterError {}

/// Turn one gitignore-style pattern into a glob on relative paths.
fn compile(pattern: &str) -> Result<(Glob, bool), FilterError> {
    let dir_only = pattern.len() > 1 && pattern.ends_with('/');
    let body = pattern.trim_end_matches('/');
    let anchored = body.starts_with('/') || body.contains('/');
    let body = body.trim_start_matches('/');
    let glob = if anchored || body.starts_with("**") {
        body.to_string()
    } else {
        format!("**/{body}")
    };
    let glob = GlobBuilder::new(&glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| FilterError::new(pattern, e))?;
    Ok((glob, dir_only))
}

impl Filter {
    pub fn new(excludes: &[String], includes: &[String]) -> Result<Filter, FilterError> {
        Ok(Filter {
            exclude: Rules::build(excludes)?,
            include: Rules::build(includes)?,
            active: !excludes.is_empty(),
            only: None,
        })
    }

    /// Let only `paths` (from `--files-from`) take part, with what is below them; the
    /// directories above them are listed to hold them, and nothing else of theirs is touched.
    pub fn only(mut self, paths: Vec<PathBuf>) -> Filter {
        let mut listed = Listed::default();
        for path in paths {
            let above = path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty());
            listed.above.extend(above.map(Path::to_path_buf));
            listed.paths.insert(path);
        }
        self.only = Some(Arc::new(listed));
        self
    }

    /// True when the path (relative to its root) takes part in the mirror.
    pub fn allows(&self, rel: &Path, is_dir: bool) -> bool {
        self.only.as_ref().is_none_or(|only| only.allows(rel))
            && (!self.active
                || !self.exclude.matches(rel, is_dir)
                || self.include.matches(rel, is_dir))
    }
}

/// Read patterns from an `--exclude-from` file: one per line, blank lines and `#` comments
/// skipped, `!pattern` is an include (as in .gitignore). Returns (excludes, includes).
pub fn parse_pattern_file(text: &str) -> (Vec<String>, Vec<String>) {
    let mut excludes = Vec::new();
    let mut includes = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_prefix('!') {
            Some(include) => includes.push(include.to_string()),
            None => excludes.push(line.to_string()),
        }
    }
    (excludes, includes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(ex: &[&str], inc: &[&str]) -> Filter {
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        Filter::new(&s(ex), &s(inc)).unwrap()
    }

    #[test]
    fn gitignore_style_matching() {
        #[rustfmt::skip]
        let cases = [
            ("*.tmp", "a.tmp", false, false),
            ("*.tmp", "deep/er/a.tmp", false, false),
            ("*.tmp", "a.tmpx", false, true),
            ("/build/", "build", true, false),
            ("/build/", "build", false, true),
            ("/build/", "src/build", true, true),
            ("build/", "src/build", true, false),
            ("docs/*.pdf", "docs/a.pdf", false, false),
            ("docs/*.pdf", "docs/x/a.pdf", false, true),
            ("docs/*.pdf", "other/docs/a.pdf", false, true),
            ("**/cache/**", "a/cache/b", false, false),
            ("**/cache/**", "cache/b/c", false, false),
            ("node_modules", "web/node_modules", true, false),
            ("a[bc]", "ab", false, false),
        ];
        for (pattern, path, is_dir, allowed) in cases {
            let f = filter(&[pattern], &[]);
            assert_eq!(
                f.allows(Path::new(path), is_dir),
                allowed,
                "{pattern} on {path}"
            );
        }
    }

    #[test]
    fn include_overrides_exclude() {
        let f = filter(&["*.log"], &["keep.log"]);
        assert!(!f.allows(Path::new("x/drop.log"), false));
        assert!(f.allows(Path::new("x/keep.log"), false));
    }

    #[test]
    fn invalid_pattern_is_named() {
        let err = Filter::new(&["a[".into()], &[]).unwrap_err();
        assert!(err.to_string().starts_with("invalid pattern 'a['"), "{err}");
    }

    #[test]
    fn pattern_file() {
        let (ex, inc) = parse_pattern_file("# comment\n\n*.tmp\n!keep.tmp\r\n/build/\n");
        assert_eq!(ex, ["*.tmp", "/build/"]);
        assert_eq!(inc, ["keep.tmp"]);
    }
}
