//! What the user sees (SPEC section 4): dry runs, itemized lines, quiet, JSON, progress, logs.

use std::fs;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// A destination that needs one copy, one update and one deletion.
fn pending() -> Fixture {
    let f = Fixture::new();
    f.write("src/same.txt", "same");
    f.write("src/changed.txt", "v1");
    f.sync(&[]).expect(0);
    f.write("src/changed.txt", "version 2");
    f.write("src/new/file.txt", "new");
    f.write("dst/gone.txt", "gone");
    f
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let f = pending();
    let before = (Manifest::of(&f.dst), identity(&f.dst));
    let dry = f.sync(&["--dry-run"]).expect(0);
    assert!(
        before == (Manifest::of(&f.dst), identity(&f.dst)),
        "dry run changed DST"
    );
    assert!(
        dry.stderr
            .contains("dry run: would copy 1 file (3 B), update 1 (9 B), delete 1; 1 unchanged"),
        "{dry:?}"
    );
    let real = f.sync(&["-v"]).expect(0);
    assert_eq!(
        dry.stdout, real.stdout,
        "a dry run prints what the run does"
    );
    assert_eq!(
        real.stdout.lines().collect::<Vec<_>>(),
        [
            "+d new    new/",
            ">f size   changed.txt",
            "+f new    new/file.txt",
            "-f gone   gone.txt",
        ]
    );
}

#[test]
fn quiet_prints_only_errors() {
    let f = pending();
    let run = f.sync(&["-q"]).expect(0);
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    let locked = f.write("src/locked", "x");
    chmod(&locked, 0o000);
    let args = ["-q".as_ref(), f.src.as_os_str(), f.dst.as_os_str()];
    let run = run_unprivileged(&f, args).expect(1);
    let lines: Vec<_> = run.stderr.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with("syncease: error:")),
        "{run:?}"
    );
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

#[test]
fn json_reports_counts_and_bytes() {
    let f = pending();
    let run = f.sync(&["--json", "-v"]).expect(0);
    let doc = json(&run);
    assert_eq!(doc["status"], "synced");
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["copied"]["files"], 1);
    assert_eq!(doc["copied"]["bytes"], 3);
    assert_eq!(doc["updated"]["bytes"], 9);
    assert_eq!(doc["deleted"], 1);
    assert_eq!(doc["unchanged"]["files"], 1);
    assert_eq!(doc["dry_run"], false);
    assert!(doc["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(doc["errors"], Value::Array(vec![]));
    // Every action counted by its reason word, as -v itemizes it.
    let reasons = &doc["reasons"];
    assert_eq!(
        (reasons["new"].as_u64(), reasons["size"].as_u64()),
        (Some(2), Some(1)),
        "{reasons}"
    );
    assert_eq!(reasons["gone"], 1);
    // What the destination was found to hold.
    let holds = &doc["destination"];
    assert_eq!(holds["case_sensitive"], true, "{holds}");
    assert_eq!(holds["modes"], true, "{holds}");
    assert!(holds["filesystem"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(holds["time_resolution_ns"]
        .as_u64()
        .is_some_and(|ns| ns > 0));
}

#[test]
fn json_is_valid_on_every_exit_path() {
    let f = pending();
    let dry = json(&f.sync(&["--json", "-n"]).expect(0));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["copied"]["files"], 1);

    let locked = f.write("src/locked", "x");
    chmod(&locked, 0o000);
    let args = ["--json".as_ref(), f.src.as_os_str(), f.dst.as_os_str()];
    let partial = json(&run_unprivileged(&f, args).expect(1));
    assert_eq!(partial["status"], "partial");
    assert_eq!(partial["errors"][0]["path"], locked.to_str().unwrap());
    assert!(partial["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("Permission denied"));

    let missing = f.path("missing");
    let refused = json(
        &f.run(["--json".as_ref(), missing.as_os_str(), f.dst.as_os_str()])
            .expect(2),
    );
    assert_eq!(refused["status"], "refused");
    assert_eq!(refused["exit_code"], 2);
    assert!(refused["refused"]
        .as_str()
        .unwrap()
        .contains("does not exist"));

    for bad in [&["--jobs", "0"][..], &["--no-such-flag"][..]] {
        let run = f.sync(&[&["--json"][..], bad].concat()).expect(2);
        assert_eq!(json(&run)["status"], "refused", "{bad:?}");
    }
}

#[test]
fn no_progress_bar_when_stderr_is_not_a_terminal() {
    let f = pending();
    let run = f.sync(&["--progress"]).expect(0);
    assert!(!run.stderr.contains("ETA"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "only the summary: {run:?}");
}

/// Run a shell command with a pseudo-terminal as its stdout and stderr (util-linux `script`):
/// everything it drew, once it succeeded.
#[cfg(target_os = "linux")]
fn on_a_terminal(command: &str) -> String {
    let out = Command::new("script")
        .args(["-qfec", command, "/dev/null"])
        .output()
        .expect("script (util-linux) runs");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{screen}");
    screen
}

#[test]
#[cfg(target_os = "linux")] // util-linux `script` gives the pseudo-terminal
fn progress_bar_on_a_terminal() {
    let f = pending();
    for i in 0..20 {
        f.write(format!("src/many/{i}"), vec![b'p'; 100_000]);
    }
    let bin = assert_cmd::cargo::cargo_bin("syncease");
    let command = format!(
        "'{}' '{}' '{}'",
        bin.display(),
        f.src.display(),
        f.dst.display()
    );
    let screen = on_a_terminal(&command);
    assert!(
        screen.contains("ETA") && screen.contains("/22 files"),
        "{screen}"
    );
    assert!(
        screen.contains("21 copied, 1 updated, 1 deleted"),
        "{screen}"
    );
}

#[test]
fn log_file_records_every_decision_and_action() {
    let f = pending();
    let log = f.path("sync.log");
    let run = f.sync(&["--log-file", log.to_str().unwrap()]).expect(0);
    assert!(
        run.stderr.contains("1 copied, 1 updated, 1 deleted"),
        "normal output too: {run:?}"
    );
    let text = fs::read_to_string(&log).unwrap();
    for expected in [
        "same.txt",
        "unchanged",
        ">f size   changed.txt",
        "+f new    new/file.txt",
        "-f gone   gone.txt",
        "1 copied, 1 updated, 1 deleted",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from the log:\n{text}"
        );
    }
    let bad = f.path("no/such/dir/log");
    let run = f.sync(&["--log-file", bad.to_str().unwrap()]).expect(2);
    assert!(run.stderr.contains("cannot open log file"), "{run:?}");
}

#[test]
fn help_is_grouped_and_completions_and_man_page_are_generated() {
    let help = Run::from(syncease().arg("--help").output().unwrap()).expect(0);
    for heading in [
        "Run:",
        "Compare:",
        "Filter:",
        "Layout:",
        "Deletion:",
        "Output:",
        "Help:",
    ] {
        assert!(help.stdout.contains(heading), "{heading}: {help:?}");
    }
    let bash = Run::from(syncease().args(["--completions", "bash"]).output().unwrap()).expect(0);
    assert!(bash.stdout.contains("_syncease()") && bash.stdout.contains("--dry-run"));
    let zsh = Run::from(syncease().args(["--completions", "zsh"]).output().unwrap()).expect(0);
    assert!(zsh.stdout.contains("#compdef syncease"));
    let man = Run::from(syncease().arg("--man").output().unwrap()).expect(0);
    assert!(man.stdout.contains(".TH syncease") && man.stdout.contains("backup\\-dir"));
    // The whole manual, as rsync(1) has it: not only the options.
    for section in [
        "FILTERS",
        "SNAPSHOTS",
        "ITEMIZED OUTPUT",
        "JSON REPORT",
        "DESTINATIONS",
        "REMOTES",
        "SAFETY",
        "EXIT STATUS",
    ] {
        assert!(man.stdout.contains(&format!(".SH {section}")), "{section}");
    }
    assert!(man.stdout.contains("deletions_withheld") && man.stdout.contains("130, 143, 129"));
    if have("man") {
        // It renders without a complaint from the formatter.
        let page = std::env::temp_dir().join(format!("syncease-{}.1", std::process::id()));
        fs::write(&page, &man.stdout).unwrap();
        let out = Command::new("man").arg("-l").arg(&page).output().unwrap();
        let _ = fs::remove_file(&page);
        assert!(
            String::from_utf8_lossy(&out.stderr).trim().is_empty(),
            "{out:?}"
        );
    }
}

#[test]
fn itemized_lines_come_in_plan_order_whatever_the_workers_do() {
    let f = Fixture::new();
    for side in ["src", "dst"] {
        let shared = f.write(format!("{side}/shared"), "in both");
        set_mtime(&shared, 1_700_000_000, 0);
    }
    for i in 0..300 {
        f.write(format!("src/d{}/f{i:03}", i % 5), format!("{i}"));
        f.write(format!("dst/old{}/g{i:03}", i % 3), "stale");
    }
    // Big files are copied first, whatever their place in the plan.
    for name in ["d2/big-a", "d4/big-b", "m-big"] {
        f.write(format!("src/{name}"), vec![b'b'; 2 << 20]);
    }
    let dry = f.sync(&["-n", "-j", "8"]).expect(0);
    let real = f.sync(&["-v", "-j", "8"]).expect(0);
    assert_eq!(real.stdout.lines().count(), 5 + 303 + 303);
    assert_eq!(dry.stdout, real.stdout);
}

#[test]
fn diagnostics_written_to_a_file_hold_no_colour_codes() {
    let f = pending();
    let out = syncease()
        .env("SYNCEASE_LOG", "debug")
        .arg(&f.src)
        .arg(&f.dst)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEBUG"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in: {stderr}");
}

#[test]
#[cfg(target_os = "linux")] // util-linux `script` gives the pseudo-terminal
fn progress_shows_the_scan_while_a_slow_tree_is_listed() {
    let f = pending();
    if !need_strace() {
        return;
    }
    let bin = assert_cmd::cargo::cargo_bin("syncease");
    // Each listing of SRC takes a third of a second, as on a slow disk: the scan line shows.
    let command = format!(
        "strace -f -qq -o /dev/null -e trace=getdents64 \
         -e inject=getdents64:delay_enter=300000 -P '{src}' '{bin}' '{src}' '{dst}'",
        bin = bin.display(),
        src = f.src.display(),
        dst = f.dst.display()
    );
    let screen = on_a_terminal(&command);
    assert!(screen.contains("scanning: "), "{screen}");
    assert!(screen.contains("entries listed"), "{screen}");
    assert!(
        screen.contains("1 copied, 1 updated, 1 deleted"),
        "{screen}"
    );
}

/// A tmux server of the test's own, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Run `command` in a terminal (tmux) until it prints `finished`; every distinct screen seen.
fn screens_of(command: &str) -> Vec<String> {
    // A server of its own: tests run in parallel.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmux = Tmux(format!("syncease-test-{}-{n}", std::process::id()));
    let started = tmux.run(&["new-session", "-d", "-x", "150", "-y", "8", command]);
    assert!(started.status.success(), "{started:?}");
    let mut screens: Vec<String> = Vec::new();
    let begun = std::time::Instant::now();
    loop {
        let shot = tmux.run(&["capture-pane", "-p"]);
        let screen = String::from_utf8_lossy(&shot.stdout).into_owned();
        let done = screen.contains("finished");
        if screens.last() != Some(&screen) {
            screens.push(screen);
        }
        if done {
            return screens;
        }
        assert!(begun.elapsed().as_secs() < 120, "{screens:#?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_progress_bar_moves_while_a_large_file_is_on_its_way() {
    let f = Fixture::new();
    f.write("src/large.bin", vec![b'x'; 3 << 20]);
    if !need("tmux", "tmux") {
        return;
    }
    let bin = assert_cmd::cargo::cargo_bin("syncease");
    // Three seconds for the one file.
    let command = format!(
        "'{bin}' --bwlimit 1M '{src}' '{dst}'; echo finished; sleep 30",
        bin = bin.display(),
        src = f.src.display(),
        dst = f.dst.display()
    );
    let screens = screens_of(&command);
    // Bytes shown on their way while no file is done yet: neither none nor all of them.
    let moving: Vec<&String> = screens
        .iter()
        .filter(|s| s.contains("0/1 files") && !s.contains(" 0 B/") && !s.contains(" 3.00 MiB/"))
        .collect();
    assert!(!moving.is_empty(), "{screens:#?}");
    assert!(screens.last().unwrap().contains("1 copied"), "{screens:#?}");
}

#[test]
fn the_progress_bar_in_a_real_terminal_counts_up_to_the_end() {
    let f = Fixture::new();
    for i in 0..12 {
        f.write(format!("src/f{i:02}"), vec![b'x'; 200_000]);
    }
    if !need("tmux", "tmux") || !need_strace() {
        return;
    }
    let bin = assert_cmd::cargo::cargo_bin("syncease");
    // Each copy takes a fifth of a second, as on a slow disk, so the screen can be read while
    // the copy goes on.
    let command = format!(
        "strace -f -qq -o /dev/null -e trace=copy_file_range \
         -e inject=copy_file_range:delay_enter=200000 '{bin}' -j 1 '{src}' '{dst}'; \
         echo finished; sleep 30",
        bin = bin.display(),
        src = f.src.display(),
        dst = f.dst.display()
    );
    let screens = screens_of(&command);
    // The bar was read at several moments, counting files up with an ETA.
    let counts: Vec<u64> = screens
        .iter()
        .filter(|s| s.contains("ETA"))
        .filter_map(|s| {
            let at = s.find("/12 files")?;
            s[..at].rsplit(' ').next()?.parse().ok()
        })
        .collect();
    assert!(counts.len() >= 3, "{screens:#?}");
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(counts.first() < counts.last(), "{counts:?}");
    // Then the bar is gone and the summary stays.
    let last = screens.last().unwrap();
    assert!(
        last.contains("12 copied") && !last.contains("ETA"),
        "{last}"
    );
}
