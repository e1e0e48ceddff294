//! The planner as tables: (source listing, destination listing) → itemized plan. No disk.

use std::io;
use std::path::Path;

use super::*;
use crate::config::Config;
use crate::entry::{Kind, Links, Mtime, RootMeta, Tag, Tree};
use crate::error::{Error, Op};

/// An entry to put in a test listing.
#[derive(Clone)]
struct Spec {
    path: &'static str,
    tag: Tag,
    size: u64,
    mtime: Mtime,
    mode: u16,
    target: Option<&'static str>,
}

fn entry(path: &'static str, tag: Tag, size: u64, sec: i64) -> Spec {
    Spec {
        path,
        tag,
        size,
        mtime: Mtime { sec, nsec: 0 },
        mode: 0o644,
        target: None,
    }
}
fn file(path: &'static str, size: u64, sec: i64) -> Spec {
    entry(path, Tag::File, size, sec)
}
fn dir(path: &'static str) -> Spec {
    Spec {
        mode: 0o755,
        ..entry(path, Tag::Dir, 0, 100)
    }
}
fn link(path: &'static str, target: &'static str) -> Spec {
    Spec {
        target: Some(target),
        ..entry(path, Tag::Symlink, 0, 100)
    }
}
fn special(path: &'static str) -> Spec {
    // A device node: never made without root.
    entry(path, Tag::Special(Kind::Block), 0, 100)
}
/// A listing that lives as long as the test (plans borrow their listings).
fn tree(specs: Vec<Spec>) -> &'static Tree {
    Box::leak(Box::new(build(specs)))
}
fn build(mut specs: Vec<Spec>) -> Tree {
    specs.sort_by(|a, b| Path::new(a.path).cmp(Path::new(b.path)));
    let mut tree = Tree::default();
    tree.root = Some(RootMeta {
        mtime: Mtime { sec: 100, nsec: 0 },
        mode: 0o755,
        owner: Default::default(),
    });
    for s in specs {
        let target = s.target.map(Path::new);
        tree.push_raw(Path::new(s.path), s.tag, s.size, s.mtime, s.mode, target);
    }
    tree
}
fn config() -> Config {
    Config::new("src", "dst")
}
fn lines(plan: &Plan<'_>) -> Vec<String> {
    plan.items().iter().map(ToString::to_string).collect()
}

/// (name, source entries, destination entries, expected itemized lines)
type Case = (&'static str, Vec<Spec>, Vec<Spec>, Vec<&'static str>);

#[test]
fn decisions() {
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("new file", vec![file("a", 1, 1)], vec![], vec!["+f new    a"]),
        ("new dir before its file", vec![dir("d"), file("d/a", 1, 1)], vec![],
            vec!["+d new    d/", "+f new    d/a"]),
        ("new symlink", vec![link("l", "../x")], vec![], vec!["+l new    l -> ../x"]),
        ("unchanged file", vec![file("a", 1, 1)], vec![file("a", 1, 1)], vec![]),
        ("size differs", vec![file("a", 2, 1)], vec![file("a", 1, 1)], vec![">f size   a"]),
        ("time differs", vec![file("a", 1, 2)], vec![file("a", 1, 1)], vec![">f time   a"]),
        ("mode differs only", vec![file("a", 1, 1)], vec![Spec { mode: 0o600, ..file("a", 1, 1) }],
            vec![".f mode   a"]),
        ("unchanged symlink", vec![link("l", "t")], vec![link("l", "t")], vec![]),
        ("symlink retargeted", vec![link("l", "new")], vec![link("l", "old")],
            vec![">l target l -> new"]),
        ("symlink time", vec![link("l", "t")], vec![Spec { mtime: Mtime { sec: 5, nsec: 0 }, ..link("l", "t") }],
            vec![".l time   l"]),
        ("file deleted", vec![], vec![file("a", 1, 1)], vec!["-f gone   a"]),
        ("subtree deleted deepest first", vec![], vec![dir("d"), dir("d/e"), file("d/e/f", 1, 1), link("d/l", "x")],
            vec!["-l gone   d/l", "-f gone   d/e/f", "-d gone   d/e/", "-d gone   d/"]),
        ("file becomes dir", vec![dir("x"), file("x/a", 1, 1)], vec![file("x", 1, 1)],
            vec!["~d type   x/", "+f new    x/a"]),
        ("dir becomes file: its contents are deleted first", vec![file("x", 1, 1)],
            vec![dir("x"), dir("x/d"), file("x/d/a", 1, 1)],
            vec!["-f gone   x/d/a", "-d gone   x/d/", "~f type   x"]),
        ("symlink becomes dir", vec![dir("x")], vec![link("x", "/elsewhere")], vec!["~d type   x/"]),
        ("dir becomes symlink", vec![link("x", "t")], vec![dir("x")], vec!["~l type   x -> t"]),
        ("file becomes symlink", vec![link("x", "t")], vec![file("x", 1, 1)], vec!["~l type   x -> t"]),
        ("symlink becomes file", vec![file("x", 1, 1)], vec![link("x", "t")], vec!["~f type   x"]),
        ("special in dst replaced", vec![file("x", 1, 1)], vec![special("x")], vec!["~f type   x"]),
        ("special in src skipped, dst entry kept", vec![special("p")], vec![file("p", 1, 1)], vec![]),
        ("stale temporary swept", vec![], vec![file(".syncease-abc123.tmp", 1, 1)],
            vec!["-f stale  .syncease-abc123.tmp"]),
        ("sibling order is bytes, children follow parents", vec![dir("a"), file("a/z", 1, 1), file("a-b", 1, 1)],
            vec![file("a-b", 1, 1)], vec!["+d new    a/", "+f new    a/z"]),
    ];
    for (name, src, dst, expected) in cases {
        let plan = plan(tree(src), tree(dst), &config());
        assert_eq!(lines(&plan), expected, "case: {name}");
    }
}

#[test]
fn missing_destination_is_created_and_given_the_source_root_metadata() {
    let dst = Tree::default();
    let plan = plan(tree(vec![file("a", 1, 1)]), &dst, &config());
    assert!(plan.make_root);
    let root = plan.dir_meta.last().expect("root metadata");
    assert_eq!(plan.dir_meta_path(root), Path::new(""));
    assert_eq!(plan.dir_meta_values(root).0, 0o755);
}

#[test]
fn unchanged_tree_plans_nothing_at_all() {
    let entries = || vec![dir("d"), file("d/a", 3, 1), link("l", "d/a")];
    let plan = plan(tree(entries()), tree(entries()), &config());
    assert!(plan.items().is_empty());
    assert!(plan.dir_meta.is_empty(), "{:?}", plan.dir_meta);
    assert_eq!(plan.unchanged, Tally { files: 2, bytes: 3 });
}

#[test]
fn directories_get_metadata_deepest_first_after_writes() {
    let plan = plan(
        tree(vec![dir("d"), dir("d/e"), file("d/e/f", 1, 1)]),
        tree(vec![]),
        &config(),
    );
    let order: Vec<_> = plan
        .dir_meta
        .iter()
        .map(|d| plan.dir_meta_path(d))
        .collect();
    assert_eq!(order, [Path::new("d/e"), Path::new("d"), Path::new("")]);
}

#[test]
fn read_only_destination_dir_is_unlocked_before_writing_in_it() {
    let ro = Spec {
        mode: 0o555,
        ..dir("d")
    };
    let plan = plan(
        tree(vec![ro.clone(), file("d/a", 1, 1)]),
        tree(vec![ro]),
        &config(),
    );
    let d = plan
        .dir_meta
        .iter()
        .find(|d| plan.dir_meta_path(d) == Path::new("d"))
        .unwrap();
    assert!(d.unlock);
    assert_eq!(plan.dir_meta_values(d).0, 0o555);
}

#[test]
fn drifted_directory_metadata_is_fixed() {
    let src = Spec {
        mode: 0o700,
        ..dir("d")
    };
    let plan = plan(tree(vec![src]), tree(vec![dir("d")]), &config());
    assert_eq!(lines(&plan), [".d meta   d/"]);
}

#[test]
fn no_delete_keeps_extra_entries_but_still_sweeps_temporaries() {
    let config = Config {
        delete: false,
        ..config()
    };
    let dst = tree(vec![
        file("extra", 1, 1),
        file(".syncease-x1y2z3.tmp", 1, 1),
    ]);
    let plan = plan(tree(vec![file("a", 1, 1)]), dst, &config);
    assert_eq!(
        lines(&plan),
        ["-f stale  .syncease-x1y2z3.tmp", "+f new    a"]
    );
}

#[test]
fn source_errors_withhold_every_deletion_and_directory_replacement() {
    let mut src = build(vec![file("x", 1, 1), dir("unread")]);
    src.errors.push(Error::new(
        Op::ReadDir,
        "src/unread",
        io::Error::from_raw_os_error(13),
    ));
    let dst = tree(vec![
        dir("x"),
        file("x/keep", 1, 1),
        dir("unread"),
        file("unread/f", 1, 1),
    ]);
    let plan = plan(&src, dst, &config());
    assert_eq!(plan.withheld, Some(Withheld::SourceErrors(1)));
    let held: Vec<_> = plan.held_back.iter().map(|&i| plan.src_path(i)).collect();
    assert_eq!(held, [Path::new("x")]);
    assert!(plan.transfers.is_empty());
    assert!(
        lines(&plan).iter().all(|l| !l.starts_with('-')),
        "{:?}",
        lines(&plan)
    );
}

#[test]
fn max_delete_counts_every_entry_including_replaced_subtrees() {
    let src = tree(vec![file("x", 1, 1)]);
    let dst = tree(vec![dir("x"), file("x/a", 1, 1), file("gone", 1, 1)]);
    let at = |max| {
        let config = Config {
            max_delete: Some(max),
            ..config()
        };
        plan(src, dst, &config).withheld
    };
    assert_eq!(at(3), None);
    assert_eq!(at(2), Some(Withheld::MaxDelete { planned: 3, max: 2 }));
}

#[test]
fn protected_paths_are_left_alone_on_both_sides() {
    let config = Config {
        protected: vec!["backup".into()],
        ..config()
    };
    let src = tree(vec![file("backup", 1, 1), file("a", 1, 1)]);
    let dst = tree(vec![
        dir("backup"),
        file("backup/old", 1, 1),
        file("a", 1, 1),
    ]);
    assert!(lines(&plan(src, dst, &config)).is_empty());
}

#[test]
fn update_keeps_a_newer_destination_file() {
    let config = Config {
        compare: crate::config::Compare {
            update: true,
            ..Default::default()
        },
        ..config()
    };
    let plan = plan(
        tree(vec![file("a", 1, 1)]),
        tree(vec![file("a", 2, 9)]),
        &config,
    );
    assert!(plan.items().is_empty());
    let kept: Vec<_> = plan.kept.iter().map(|&i| plan.src_path(i)).collect();
    assert_eq!(kept, [Path::new("a")]);
}

#[test]
fn escaped_paths_stay_on_one_line() {
    use std::os::unix::ffi::OsStrExt;
    let raw = std::ffi::OsStr::from_bytes(b"a\nb\\c\xff");
    assert_eq!(Escaped(Path::new(raw)).to_string(), "a\\x0ab\\x5cc\\xff");
    assert_eq!(Escaped(Path::new("caf\u{e9} x")).to_string(), "caf\u{e9} x");
}

#[test]
fn symlinks_are_skipped_where_the_destination_cannot_hold_them() {
    let config = Config {
        symlinks: false,
        ..config()
    };
    let src = tree(vec![
        file("a", 1, 1),
        link("new-link", "a"),
        link("old-link", "a"),
        special("fifo"),
    ]);
    let dst = tree(vec![file("a", 1, 1), file("old-link", 1, 1)]);
    let plan = plan(src, dst, &config);
    assert!(lines(&plan).is_empty(), "{:?}", lines(&plan));
    let skipped: Vec<_> = plan.skipped.iter().map(|&i| plan.src_path(i)).collect();
    assert_eq!(skipped.len(), 3);
    assert!(
        plan.deletes.is_empty(),
        "a skipped path is not deleted either"
    );
}

#[test]
fn no_delete_blocks_a_file_that_would_replace_a_directory_holding_entries() {
    let config = Config {
        delete: false,
        ..config()
    };
    let src = tree(vec![file("empty", 1, 1), file("full", 1, 1)]);
    let dst = tree(vec![dir("empty"), dir("full"), file("full/a", 1, 1)]);
    let plan = plan(src, dst, &config);
    // An empty directory loses nothing: it is replaced.
    assert_eq!(lines(&plan), ["~f type   empty"]);
    let blocked: Vec<_> = plan.blocked.iter().map(|&i| plan.src_path(i)).collect();
    assert_eq!(blocked, [Path::new("full")]);
    assert!(plan.deletes.is_empty());
}

#[test]
fn a_skipped_source_entry_keeps_the_destination_directory_at_its_path() {
    let src = tree(vec![special("p"), file("q", 1, 1)]);
    let dst = tree(vec![
        dir("p"),
        file("p/a", 1, 1),
        dir("p/d"),
        file("q", 1, 1),
    ]);
    let plan = plan(src, dst, &config());
    assert_eq!(lines(&plan), Vec::<String>::new());
    assert_eq!(plan.skipped.len(), 1);
}

#[test]
fn a_hard_link_the_source_broke_is_broken_in_the_destination() {
    let src = tree(vec![file("a", 1, 100), file("b", 1, 100)]);
    let mut dst = build(vec![file("a", 1, 100), file("b", 1, 100)]);
    // DST's `a` and `b` are one inode; SRC's are two.
    dst.links = Links::grouped(vec![vec![(0, 2, 7), (1, 2, 7)]]);
    let dst: &'static Tree = Box::leak(Box::new(dst));
    let plan = plan(src, dst, &config());
    assert_eq!(lines(&plan), [">f link   a", ">f link   b"]);
    let off = Config {
        hard_links: false,
        ..config()
    };
    assert!(lines(&super::plan(src, dst, &off)).is_empty());
}

#[test]
fn a_destination_without_modes_or_fine_times_is_compared_within_what_it_holds() {
    let src = tree(vec![Spec {
        mode: 0o4755,
        mtime: Mtime {
            sec: 100,
            nsec: 900_000_000,
        },
        ..file("a", 1, 100)
    }]);
    let dst = tree(vec![Spec {
        mode: 0o777,
        ..file("a", 1, 100)
    }]);
    let mut exfat = config();
    exfat.limits.modes = false;
    exfat.compare.modify_window_ns = 999_999_999;
    let plan = plan(src, dst, &exfat);
    assert!(lines(&plan).is_empty(), "{:?}", lines(&plan));
    // What is set there has no setuid bit to refuse.
    assert_eq!(plan.mode_for(0), 0o755);
    assert!(!lines(&super::plan(src, dst, &config())).is_empty());
}

#[test]
fn differing_attributes_are_fixed_with_their_reason() {
    let src = tree(vec![dir("d"), file("d/a", 1, 100), file("d/b", 1, 100)]);
    let dst = tree(vec![dir("d"), file("d/a", 1, 100), file("d/b", 1, 100)]);
    let known = Known {
        xattrs: [
            (1, Differs::Acl),
            (2, Differs::Xattr),
            (u32::MAX, Differs::Xattr),
        ]
        .into_iter()
        .collect(),
        ..Known::default()
    };
    let plan = plan_with(src, dst, &config(), &known);
    assert_eq!(
        lines(&plan),
        [".f acl    d/a", ".f xattr  d/b", ".d meta   ./"]
    );
    assert!(plan.dir_meta.iter().any(|d| d.src.is_none() && d.xattrs));
}

#[test]
fn a_destination_name_spelled_otherwise_is_renamed_not_replaced() {
    let src = tree(vec![dir("Photos"), file("Photos/a", 1, 100)]);
    let dst = build(vec![
        dir("photos"),
        file("photos/a", 1, 100),
        file("photos/z", 1, 1),
    ]);
    let (dst, folded) = crate::case::fold(src, dst, &|_| true);
    let dst: &'static Tree = Box::leak(Box::new(dst));
    assert!(folded.collisions.is_empty());
    let plan = plan(src, dst, &config());
    assert_eq!(lines(&plan), [".d case   Photos/", "-f gone   Photos/z"]);
}
