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

/// Patterns without wildcards, looked up in hash sets: a name (matching at any depth) or a
/// path from the root. Lists of many thousand literal names and paths cost a few bytes each
/// this way, where a glob set would compile each into an automaton.
#[derive(Debug, Clone, Default)]
struct Literals {
    names: HashSet<Vec<u8>>,
    paths: HashSet<Vec<u8>>,
}

impl Literals {
    fn matches(&self, rel: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let name = rel.file_name().map(|n| n.as_bytes());
        (!self.names.is_empty() && name.is_some_and(|n| self.names.contains(n)))
            || (!self.paths.is_empty() && self.paths.contains(rel.as_os_str().as_bytes()))
    }
}

/// Name globs (`*.tmp`, `report-??.pdf`), each compiled once however many patterns use it,
/// matched on an entry's name: at any depth, or in one literal directory
/// (`docs/2024/*.pdf`). The glob crate matches most name globs by extension, prefix or suffix
/// rather than by a regex each, so many thousand patterns stay cheap.
#[derive(Debug, Clone, Default)]
struct Names {
    /// The distinct name globs that apply at any depth.
    anywhere: GlobSet,
    /// The distinct name globs that apply in some literal directory.
    set: GlobSet,
    /// Directory (relative path bytes) → indices in `set` of the globs for its entries.
    dirs: std::collections::HashMap<Vec<u8>, Vec<usize>>,
}

impl Names {
    fn matches(&self, rel: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Some(name) = rel.file_name().map(Path::new) else {
            return false;
        };
        if !self.anywhere.is_empty() && self.anywhere.is_match(name) {
            return true;
        }
        if self.dirs.is_empty() {
            return false;
        }
        let dir = rel.parent().unwrap_or(Path::new(""));
        match self.dirs.get(dir.as_os_str().as_bytes()) {
            Some(here) => self.set.matches(name).iter().any(|i| here.contains(i)),
            None => false,
        }
    }
}

/// Collects the name globs of one side while the patterns are read.
#[derive(Default)]
struct NamesBuilder {
    anywhere: std::collections::HashMap<String, Glob>,
    globs: Vec<Glob>,
    index: std::collections::HashMap<String, usize>,
    dirs: std::collections::HashMap<Vec<u8>, Vec<usize>>,
}

impl NamesBuilder {
    /// Add the name glob `name` (from `pattern`), in `dir` or (`None`) anywhere.
    fn add(&mut self, pattern: &str, name: &str, dir: Option<String>) -> Result<(), FilterError> {
        // Matched on a name, which holds no `/`: `*` need not stop at one, and the glob crate
        // can then match `*.tmp` and `*-old.txt` by extension and suffix.
        let compile = || {
            GlobBuilder::new(name)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| FilterError::new(pattern, e))
        };
        let Some(dir) = dir else {
            if !self.anywhere.contains_key(name) {
                self.anywhere.insert(name.to_string(), compile()?);
            }
            return Ok(());
        };
        let at = match self.index.get(name) {
            Some(&at) => at,
            None => {
                self.globs.push(compile()?);
                self.index.insert(name.to_string(), self.globs.len() - 1);
                self.globs.len() - 1
            }
        };
        self.dirs.entry(dir.into_bytes()).or_default().push(at);
        Ok(())
    }

    fn build(self) -> Result<Names, FilterError> {
        let set = |globs: &mut dyn Iterator<Item = Glob>| {
            let mut set = GlobSetBuilder::new();
            for glob in globs {
                set.add(glob);
            }
            set.build().map_err(|e| FilterError::new("", e))
        };
        Ok(Names {
            anywhere: set(&mut self.anywhere.into_values())?,
            set: set(&mut self.globs.into_iter())?,
            dirs: self.dirs,
        })
    }
}

/// One side of the rules (excludes or includes), split by whether they apply to dirs only.
#[derive(Debug, Clone, Default)]
struct Rules {
    any: GlobSet,
    dirs_only: GlobSet,
    literal_any: Literals,
    literal_dirs: Literals,
    names_any: Names,
    names_dirs: Names,
}

impl Rules {
    fn build(patterns: &[String]) -> Result<Rules, FilterError> {
        let mut any = GlobSetBuilder::new();
        let mut dirs_only = GlobSetBuilder::new();
        let (mut literal_any, mut literal_dirs) = (Literals::default(), Literals::default());
        // Name globs, for either kind (any entry, directories only).
        let mut names: [NamesBuilder; 2] = Default::default();
        for pattern in patterns {
            let dir_only = pattern.len() > 1 && pattern.ends_with('/');
            if let Some((literal, anchored)) = literal(pattern) {
                let set = if dir_only {
                    &mut literal_dirs
                } else {
                    &mut literal_any
                };
                match anchored {
                    true => set.paths.insert(literal.into_bytes()),
                    false => set.names.insert(literal.into_bytes()),
                };
                continue;
            }
            // A name glob at any depth (`*.tmp`), or in a literal directory: matched on names.
            let body = pattern.trim_end_matches('/');
            if !body.contains('/') && !body.contains("**") {
                names[usize::from(dir_only)].add(pattern, body, None)?;
                continue;
            }
            if let Some((dir, name)) = in_literal_dir(pattern) {
                names[usize::from(dir_only)].add(pattern, name, Some(dir))?;
                continue;
            }
            let (glob, dir_only) = compile(pattern)?;
            if dir_only {
                dirs_only.add(glob);
            } else {
                any.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| FilterError::new("", e));
        let [names_any, names_dirs] = names;
        Ok(Rules {
            any: build(any)?,
            dirs_only: build(dirs_only)?,
            literal_any,
            literal_dirs,
            names_any: names_any.build()?,
            names_dirs: names_dirs.build()?,
        })
    }

    fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        self.literal_any.matches(rel)
            || (is_dir && self.literal_dirs.matches(rel))
            || self.names_any.matches(rel)
            || (is_dir && self.names_dirs.matches(rel))
            || self.any.is_match(rel)
            || (is_dir && self.dirs_only.is_match(rel))
    }
}

/// An anchored pattern whose directories are literal and whose last component alone is a
/// glob without `**` (`docs/2024/*.pdf`): (the directory, the name glob).
fn in_literal_dir(pattern: &str) -> Option<(String, &str)> {
    let body = pattern.trim_end_matches('/').trim_start_matches('/');
    let (dir, name) = body.rsplit_once('/')?;
    let meta = |s: &str| s.contains(['*', '?', '[', ']', '{', '}', '\\']);
    let odd_dir = dir
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..");
    (!meta(dir) && !odd_dir && !name.contains("**") && !name.is_empty())
        .then(|| (dir.to_string(), name))
}

/// A pattern without wildcards or escapes, as the text it matches: a path from the root when
/// it is anchored (a slash at its start or inside), else a name; `None` for a real glob.
fn literal(pattern: &str) -> Option<(String, bool)> {
    let body = pattern.trim_end_matches('/');
    if body.is_empty() || body.contains(['*', '?', '[', ']', '{', '}', '\\']) {
        return None;
    }
    let anchored = body.starts_with('/') || body.contains('/');
    let body = body.trim_start_matches('/');
    // `a//b` or `./a` are not how listing paths are spelled: leave them to the glob.
    if body
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return None;
    }
    Some((body.to_string(), anchored))
}

/// The compiled filter; the default lets everything through.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Shared: the settings that hold a filter are copied a few times in a run, and a list of
    /// a hundred thousand patterns is not.
    exclude: Arc<Rules>,
    include: Arc<Rules>,
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
            exclude: Arc::new(Rules::build(excludes)?),
            include: Arc::new(Rules::build(includes)?),
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
    fn patterns_match_as_their_globs_do_whichever_way_they_are_kept() {
        #[rustfmt::skip]
        let patterns = [
            "name", "/build", "docs/x.pdf", "cache/", "/top/dir/", "a.b", "./odd", "*.tmp",
            "docs/*.pdf", "a?c", "cache*/", "/top/x*", "**/deep", "d/**/e",
        ];
        #[rustfmt::skip]
        let paths = [
            "name", "x/name", "namex", "build", "src/build", "docs/x.pdf", "a/docs/x.pdf",
            "cache", "x/cache", "top/dir", "x/top/dir", "a.b", "x/a.b", "odd", "a.tmp",
            "x/y/a.tmp", "docs/b.pdf", "x/docs/b.pdf", "docs/x/b.pdf", "abc", "x/axc",
            "cache1", "top/x1", "x/top/x1", "deep", "x/deep", "d/e", "d/x/e",
        ];
        for pattern in patterns {
            let fast = Rules::build(&[pattern.to_string()]).unwrap();
            let (glob, dir_only) = compile(pattern).unwrap();
            let set = GlobSetBuilder::new().add(glob).build().unwrap();
            for path in paths {
                for is_dir in [false, true] {
                    let by_glob = set.is_match(path) && (is_dir || !dir_only);
                    let got = fast.matches(Path::new(path), is_dir);
                    assert_eq!(got, by_glob, "{pattern} on {path} (dir: {is_dir})");
                }
            }
        }
        // Literals go to hash sets, a name glob is compiled once for all its uses, only other
        // globs go to the path glob set.
        let patterns = ["name", "/a/b", "*.tmp", "x/*.tmp", "y/*.tmp", "a*/b"];
        let rules = Rules::build(&patterns.map(String::from)).unwrap();
        assert_eq!(rules.any.len(), 1);
        assert_eq!(
            (rules.names_any.anywhere.len(), rules.names_any.set.len()),
            (1, 1)
        );
        assert!(rules.matches(Path::new("y/c.tmp"), false));
        assert!(rules.matches(Path::new("deep/c.tmp"), false));
        assert!(rules.matches(Path::new("ab/b"), false));
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
