//! A remote SRC: restores into a local folder, and copies from one remote to another, against
//! the servers on loopback (see [`crate::remote`]). The local side keeps every rule it keeps
//! for a local source: atomic files, deletions last and only after a clean listing, the
//! empty-source refusal.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::relay::{Bend, Relay};
use crate::remote::{
    behind_relay, in_seconds, json, remote_tree, server_var, succeeding, unique, Sftp, S3,
};
use crate::util::*;

/// `syncease EXTRA URL DIR` through `cmd` (the remote's command, with its credentials).
pub(crate) fn restore(mut cmd: Command, url: &str, dir: &Path, extra: &[&str]) -> Run {
    Run::from(cmd.args(extra).arg(url).arg(dir).output().unwrap())
}

/// The files below `root` with their contents and mtimes (seconds, nanoseconds).
pub(crate) fn files(root: &Path) -> Vec<(String, Vec<u8>, (i64, i64))> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let meta = e.metadata().unwrap();
            let rel = e.path().strip_prefix(root).unwrap();
            let rel = rel.to_str().unwrap().to_string();
            (
                rel,
                fs::read(e.path()).unwrap(),
                (meta.mtime(), meta.mtime_nsec()),
            )
        })
        .collect();
    out.sort();
    out
}

/// Each file's path, contents and mtime.
type Files = Vec<(String, Vec<u8>, (i64, i64))>;

/// [`files`] with times in whole seconds (what SFTP carries).
fn files_in_seconds(root: &Path) -> Files {
    let mut out = files(root);
    for (_, _, mtime) in &mut out {
        mtime.1 = 0;
    }
    out
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn s3_restore_is_byte_and_time_exact_and_a_second_run_writes_nothing() {
    let Some(mut s3) = S3::new("restore") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    remote_tree(&f);
    chmod(&f.path("src/docs/b.txt"), 0o600);
    s3.sync(&f, &[]).expect(0);
    let restored = f.path("restored");

    relay.take();
    let run = json(&restore(s3.command(), &s3.url(), &restored, &["--json"]).expect(0));
    assert_eq!(
        run["copied"]["files"], 4,
        "the symlink was never stored: {run}"
    );
    // The times came from the manifest: one listing, no HEAD.
    let requests = relay.take();
    assert_eq!(requests.get("HEAD"), None, "{requests:?}");
    assert_eq!(requests.get("LIST"), Some(&1), "{requests:?}");
    let stored = |p: &Path| {
        let mut all = files(p);
        all.retain(|(rel, ..)| rel != "docs/link");
        all
    };
    assert_eq!(files(&restored), stored(&f.src), "contents and times");
    // S3 keeps no permission bits: new files and directories get the defaults.
    assert_eq!(mode(&restored.join("docs/b.txt")), 0o644);
    assert_eq!(mode(&restored.join("docs")), 0o755);
    assert!(
        restored.join("empty").is_dir(),
        "empty directories come back"
    );

    let before = identity(&restored);
    let again = json(&restore(s3.command(), &s3.url(), &restored, &["--json"]).expect(0));
    assert_eq!(again["unchanged"]["files"], 4, "{again}");
    assert_eq!(
        identity(&restored),
        before,
        "a no-op restore wrote something"
    );

    // A mode set here is kept (S3 has none to give); a damaged copy is mended; what the
    // prefix does not hold is deleted, or kept with --no-delete.
    chmod(&restored.join("a.txt"), 0o640);
    f.write("restored/docs/b.txt", "BRAVO");
    set_mtime(&restored.join("docs/b.txt"), 1_000_000, 0);
    f.write("restored/extra.txt", "not in the bucket");
    let kept = f.path("kept");
    let backup = ["--no-delete", "--backup-dir", kept.to_str().unwrap()];
    restore(s3.command(), &s3.url(), &restored, &backup).expect(0);
    assert_eq!(fs::read(restored.join("docs/b.txt")).unwrap(), b"bravo");
    assert_eq!(fs::read(kept.join("docs/b.txt")).unwrap(), b"BRAVO");
    assert!(restored.join("extra.txt").exists());
    let limited = restore(s3.command(), &s3.url(), &restored, &["--max-delete", "0"]).expect(1);
    assert!(restored.join("extra.txt").exists(), "{limited:?}");
    let last = json(&restore(s3.command(), &s3.url(), &restored, &["--json"]).expect(0));
    assert_eq!(last["deleted"], 1, "{last}");
    assert_eq!(mode(&restored.join("a.txt")), 0o640);
    assert_eq!(files(&restored), stored(&f.src));
}

#[test]
fn s3_restore_reads_the_times_rclone_recorded_and_rclone_finds_the_copy_equal() {
    let Some(mut s3) = S3::new("restore-rclone") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    remote_tree(&f);
    // Uploaded by rclone: its `mtime` metadata, and no manifest of ours.
    let remote = format!("garage:{}/{}", s3.bucket, s3.prefix);
    succeeding(
        s3.rclone()
            .args(["copy", "--links"])
            .arg(&f.src)
            .arg(&remote),
    );
    let restored = f.path("restored");
    relay.take();
    restore(s3.command(), &s3.url(), &restored, &[]).expect(0);
    let requests = relay.take();
    // No manifest: each object's time is read with a HEAD (rclone stores the link as a
    // `.rclonelink` file, an object like any other).
    assert_eq!(requests.get("HEAD"), Some(&5), "{requests:?}");
    let mut want = files(&f.src);
    want.retain(|(rel, ..)| rel != "docs/link");
    let mut got = files(&restored);
    got.retain(|(rel, ..)| rel != "docs/link.rclonelink");
    assert_eq!(got, want, "rclone's recorded times, to the nanosecond");
    // rclone sees the restored folder as what the prefix holds.
    succeeding(
        s3.rclone()
            .args(["check", "--one-way"])
            .arg(&restored)
            .arg(&remote),
    );
    let noop = json(&restore(s3.command(), &s3.url(), &restored, &["--json"]).expect(0));
    assert_eq!(noop["copied"]["files"], 0, "{noop}");
    assert_eq!(noop["updated"]["files"], 0, "{noop}");
}

#[test]
fn s3_a_time_changed_by_rclone_after_the_upload_is_not_taken_from_the_manifest() {
    let Some(s3) = S3::new("manifest-touch") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/a.txt", "alpha");
    set_mtime(&f.path("src/a.txt"), 1_600_000_000, 0);
    s3.sync(&f, &[]).expect(0);
    // rclone sets a time by copying the object onto itself with new metadata: the ETag stays,
    // LastModified moves (to a later second).
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let object = format!("garage:{}/{}/a.txt", s3.bucket, s3.prefix);
    succeeding(
        s3.rclone()
            .args(["touch", "--timestamp", "2009-02-13T23:31:30"])
            .arg(&object),
    );
    let restored = f.path("restored");
    restore(s3.command(), &s3.url(), &restored, &[]).expect(0);
    assert_eq!(
        files(&restored)[0].2,
        (1_234_567_890, 0),
        "the time rclone set"
    );
    let run = json(&s3.sync(&f, &["--json"]).expect(0));
    assert_eq!(
        run["updated"]["files"], 1,
        "the time differs from the source's: {run}"
    );
}

#[test]
fn s3_restore_with_checksum_compares_md5s_without_downloading_what_is_equal() {
    let Some(mut s3) = S3::new("restore-checksum") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    for name in ["a", "b", "c"] {
        f.write(format!("src/{name}.txt"), format!("file {name}"));
    }
    s3.sync(&f, &[]).expect(0);
    let restored = f.path("restored");
    restore(s3.command(), &s3.url(), &restored, &[]).expect(0);
    // Same size, same time, other bytes: only a content check finds it.
    let b = restored.join("b.txt");
    let mtime = fs::metadata(&b).unwrap().modified().unwrap();
    f.write("restored/b.txt", "FILE B");
    fs::File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    relay.take();
    let run = json(
        &restore(
            s3.command(),
            &s3.url(),
            &restored,
            &["--json", "--checksum"],
        )
        .expect(0),
    );
    assert_eq!(run["updated"]["files"], 1, "{run}");
    assert_eq!(fs::read(&b).unwrap(), b"file b");
    // The manifest and b.txt: a.txt and c.txt were compared by their ETags' MD5.
    let requests = relay.take();
    assert_eq!(requests.get("GET"), Some(&2), "{requests:?}");
}

#[test]
fn s3_restore_of_an_empty_prefix_over_a_full_folder_is_refused() {
    let Some(s3) = S3::new("restore-empty") else {
        return;
    };
    let f = Fixture::new();
    f.write("restored/keep.txt", "mine");
    let run = restore(s3.command(), &s3.url(), &f.path("restored"), &[]).expect(2);
    assert!(run.stderr.contains("is empty"), "{run:?}");
    assert_eq!(fs::read(f.path("restored/keep.txt")).unwrap(), b"mine");
}

#[test]
fn sftp_restore_keeps_modes_times_and_symlinks() {
    let Some(sftp) = Sftp::new("restore") else {
        return;
    };
    let f = Fixture::new();
    remote_tree(&f);
    chmod(&f.path("src/docs/b.txt"), 0o640);
    chmod(&f.path("src/docs"), 0o750);
    sftp.sync(&f, &[]).expect(0);
    let restored = f.path("restored");
    let run = json(&restore(sftp.command(), &sftp.url, &restored, &["--json"]).expect(0));
    assert_eq!(run["copied"]["files"], 5, "4 files and a link: {run}");
    // Before 1970 has no SFTP v3 form: c.txt is compared apart.
    let without = |root: &Path| in_seconds(Manifest::of(root).without(&["docs/deep/c.txt"]));
    assert_same(&without(&f.src), &without(&restored));
    assert_eq!(
        fs::read(restored.join("docs/deep/c.txt")).unwrap(),
        b"charlie"
    );
    let before = identity(&restored);
    let again = json(&restore(sftp.command(), &sftp.url, &restored, &["--json"]).expect(0));
    assert_eq!(again["copied"]["files"], 0, "{again}");
    assert_eq!(again["updated"]["files"], 0, "{again}");
    assert_eq!(
        identity(&restored),
        before,
        "a no-op restore wrote something"
    );
}

#[test]
fn a_killed_restore_leaves_old_or_new_files_and_a_rerun_converges() {
    let Some(sftp) = Sftp::new("restore-killed") else {
        return;
    };
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    let size = 16 << 20;
    let hash = |p: &Path| blake3::hash(&fs::read(p).unwrap());
    f.write("src/huge.bin", big_content(9, 1, size));
    sftp.sync(&f, &[]).expect(0);
    let restored = f.path("restored");
    restore(sftp.command(), &sftp.url, &restored, &[]).expect(0);
    let old = hash(&restored.join("huge.bin"));
    let huge = f.write("src/huge.bin", big_content(9, 2, size));
    set_mtime(&huge, 2_000_000, 0);
    sftp.sync(&f, &[]).expect(0);
    // Killed at the 8th write into the local copy (1 MiB each): half of it written.
    let args = [
        "--ssh-key".as_ref(),
        sftp.key.as_ref(),
        "--known-hosts".as_ref(),
        sftp.known_hosts.as_ref(),
        sftp.url.as_ref(),
        restored.as_os_str(),
    ];
    let run = killed_at("write", 8, None, &args);
    assert_eq!(run.code, -1, "the run ended before the kill point: {run:?}");
    assert_eq!(
        hash(&restored.join("huge.bin")),
        old,
        "the target is untouched"
    );
    restore(sftp.command(), &sftp.url, &restored, &[]).expect(0);
    assert!(
        temporaries(&restored).is_empty(),
        "the rerun sweeps temporaries"
    );
    assert_eq!(hash(&restored.join("huge.bin")), hash(&huge));
}

#[test]
fn sftp_a_restore_cut_by_a_lost_connection_reads_again_and_ends_exact() {
    let Some(sftp) = Sftp::new("restore-cut") else {
        return;
    };
    let f = Fixture::new();
    for n in 0..60u64 {
        f.write(
            format!("src/d{}/f{n}.bin", n % 3),
            big_content(n, 1, 256 << 10),
        );
    }
    sftp.sync(&f, &[]).expect(0);
    let (relay, url, login) = behind_relay(&sftp, &f);
    // Cut every connection once the requests sent reach this many bytes: well into the reads.
    relay.bend(crate::relay::Bend::Cut {
        after: 12000,
        then_refuse: false,
    });
    let restored = f.path("restored");
    let mut cmd = syncease();
    cmd.args(&login)
        .args([
            "--sftp-connections",
            "2",
            "-j",
            "4",
            "--json",
            "--timeout",
            "120",
        ])
        .arg(&url)
        .arg(&restored);
    let started = std::time::Instant::now();
    let run = Run::from(cmd.output().unwrap()).expect(0);
    // A read whose connection is cut is noticed at once, not when --timeout runs out.
    assert!(started.elapsed() < Duration::from_secs(100), "{run:?}");
    assert_eq!(json(&run)["errors"].as_array().unwrap().len(), 0, "{run:?}");
    assert!(relay.cut() > 0, "the cut happened: {run:?}");
    assert_eq!(files_in_seconds(&restored), files_in_seconds(&f.src));
    assert!(temporaries(&restored).is_empty());
}

#[test]
fn sftp_a_checksum_restore_cut_by_a_lost_connection_reads_again_and_withholds_nothing() {
    let Some(sftp) = Sftp::new("checksum-cut") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/big.bin", big_content(4, 1, 64 << 20));
    sftp.sync(&f, &[]).expect(0);
    let restored = f.path("restored");
    let (relay, url, login) = behind_relay(&sftp, &f);
    let restore = |extra: &[&str]| {
        let mut cmd = syncease();
        cmd.args(&login)
            .args(["--sftp-connections", "1", "--json", "--timeout", "120"])
            .args(extra)
            .arg(&url)
            .arg(&restored);
        Run::from(cmd.output().unwrap())
    };
    restore(&[]).expect(0);
    f.write("restored/extra.txt", "not on the host");
    // The read-back that compares contents is cut well into the file.
    relay.bend(crate::relay::Bend::Cut {
        after: 12000,
        then_refuse: false,
    });
    let before = relay.connections();
    // Read again, found equal; the deletion is not withheld.
    let run = restore(&["--checksum"]).expect(0);
    assert!(
        relay.connections() > before + 1,
        "the cut happened: {run:?}"
    );
    let report = json(&run);
    assert_eq!(report["errors"].as_array().unwrap().len(), 0, "{run:?}");
    assert_eq!(report["unchanged"]["files"], 1, "{run:?}");
    assert!(!restored.join("extra.txt").exists(), "{run:?}");
}

#[test]
fn sftp_a_restore_cut_again_while_read_again_still_ends_exact() {
    let Some(sftp) = Sftp::new("restore-recut") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/big.bin", big_content(3, 1, 64 << 20));
    sftp.sync(&f, &[]).expect(0);
    let (relay, url, login) = behind_relay(&sftp, &f);
    let cut = crate::relay::Bend::Cut {
        after: 12000,
        then_refuse: false,
    };
    relay.bend(cut);
    let restored = f.path("restored");
    let mut cmd = syncease();
    cmd.args(&login)
        .args(["--sftp-connections", "1", "-j", "1", "--json"])
        .args(["--timeout", "120"])
        .arg(&url)
        .arg(&restored)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The first cut made and a new connection up, reading the file again: cut that one too.
    let started = std::time::Instant::now();
    while relay.connections() < 2 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    relay.bend(cut);
    let run = Run::from(child.wait_with_output().unwrap());
    assert!(relay.connections() >= 3, "cut twice: {run:?}");
    // Two cuts of one file's reads are not a change of the file, and not yet a host gone.
    let run = run.expect(0);
    assert_eq!(json(&run)["errors"].as_array().unwrap().len(), 0, "{run:?}");
    assert_eq!(files_in_seconds(&restored), files_in_seconds(&f.src));
    assert!(temporaries(&restored).is_empty());
}

/// Restore 400 folders of one file each from the SFTP server into a copy that already holds
/// every file and one more the source does not have (`d7/gone.txt`), through a relay that
/// cuts every connection a few folders into the listing (and, with `then_refuse`, lets no
/// new one through). Returns the fixture, the restore, its files before, and the run.
fn restore_cut_in_the_listing(
    name: &str,
    then_refuse: bool,
) -> Option<(Fixture, std::path::PathBuf, Files, Run)> {
    let sftp = Sftp::new(name)?;
    let f = Fixture::new();
    for n in 0..400u64 {
        f.write(format!("src/d{n}/f.txt"), format!("file {n}"));
    }
    sftp.sync(&f, &[]).expect(0);
    let restored = f.path("restored");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&f.src)
        .arg(&restored)
        .status();
    assert!(copied.unwrap().success());
    f.write("restored/d7/gone.txt", "not in the source");
    let before = files_in_seconds(&restored);
    let (relay, url, login) = behind_relay(&sftp, &f);
    relay.bend(crate::relay::Bend::Cut {
        after: 12000,
        then_refuse,
    });
    let mut cmd = syncease();
    cmd.env("SYNCEASE_LOG", "syncease::remote=debug")
        .args(&login)
        .args(["--sftp-connections", "2", "--json", "--timeout", "120"])
        .arg(&url)
        .arg(&restored);
    let run = Run::from(cmd.output().unwrap());
    Some((f, restored, before, run))
}

#[test]
fn sftp_a_listing_cut_by_a_lost_connection_is_listed_again_and_deletes_only_what_is_gone() {
    let Some((f, restored, _, run)) = restore_cut_in_the_listing("listing-cut", false) else {
        return;
    };
    let run = run.expect(0);
    assert!(
        run.stderr.contains("connection lost while listing"),
        "the cut fell in the listing: {run:?}"
    );
    assert_eq!(json(&run)["errors"].as_array().unwrap().len(), 0, "{run:?}");
    assert_eq!(files_in_seconds(&restored), files_in_seconds(&f.src));
}

#[test]
fn sftp_a_host_gone_during_the_listing_fails_the_run_and_deletes_nothing() {
    let Some((_f, restored, before, run)) = restore_cut_in_the_listing("listing-gone", true) else {
        return;
    };
    // A source that cannot be read is refused, naming it and why.
    let run = run.expect(2);
    assert!(run.stderr.contains("cannot read source"), "{run:?}");
    assert!(run.stderr.contains("was lost"), "{run:?}");
    assert_eq!(files_in_seconds(&restored), before, "nothing deleted");
}

#[test]
fn s3_to_sftp_and_back_carry_contents_and_times() {
    let (Some(s3), Some(sftp)) = (S3::new("s3-to-sftp"), Sftp::new("s3-to-sftp")) else {
        return;
    };
    let f = Fixture::new();
    remote_tree(&f);
    s3.sync(&f, &[]).expect(0);
    let mut cmd = s3.command();
    cmd.args(["--ssh-key", &sftp.key, "--known-hosts", &sftp.known_hosts]);
    let across = |cmd: &mut Command, from: &str, to: &str| {
        json(&Run::from(cmd.args(["--json", from, to]).output().unwrap()).expect(0))
    };
    let run = across(&mut cmd, &s3.url(), &sftp.url);
    assert_eq!(run["copied"]["files"], 4, "{run}");
    let mut want = files_in_seconds(&f.src);
    want.retain(|(rel, ..)| rel != "docs/link" && rel != "docs/deep/c.txt");
    let mut got = files_in_seconds(&sftp.local);
    got.retain(|(rel, ..)| rel != "docs/deep/c.txt");
    assert_eq!(got, want, "SFTP holds whole seconds, from 1970 on");
    let mut cmd = s3.command();
    cmd.args(["--ssh-key", &sftp.key, "--known-hosts", &sftp.known_hosts]);
    let noop = across(&mut cmd, &s3.url(), &sftp.url);
    assert_eq!(noop["unchanged"]["files"], 4, "{noop}");

    // And back, into another prefix: what SFTP kept comes back.
    let back = S3 {
        prefix: unique("sftp-to-s3"),
        ..s3
    };
    let mut cmd = back.command();
    cmd.args(["--ssh-key", &sftp.key, "--known-hosts", &sftp.known_hosts]);
    across(&mut cmd, &sftp.url, &back.url());
    let restored = f.path("restored");
    restore(back.command(), &back.url(), &restored, &[]).expect(0);
    assert_eq!(files(&restored), files(&sftp.local));
}

/// Mirror a [`remote_tree`] to `s3` (put behind a relay), then copy it to a new prefix of
/// `bucket` (another, or `s3`'s own) in one run, whose requests are returned: the copy
/// restores exact (the recorded times came along), and a second run writes nothing.
fn s3_to_s3(mut s3: S3, bucket: &str, bend: Option<Bend>) -> (S3, S3, Vec<String>) {
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    remote_tree(&f);
    s3.sync(&f, &[]).expect(0);
    let copy = S3 {
        prefix: format!("{}-copy", s3.prefix),
        bucket: bucket.to_string(),
        endpoint: s3.endpoint.clone(),
        key_id: s3.key_id.clone(),
        secret: s3.secret.clone(),
        region: s3.region.clone(),
    };
    relay.heads();
    if let Some(bend) = bend {
        relay.bend(bend);
    }
    let mut cmd = s3.command();
    Run::from(cmd.args([&s3.url(), &copy.url()]).output().unwrap()).expect(0);
    let heads = relay.heads();
    let restored = f.path("restored");
    restore(copy.command(), &copy.url(), &restored, &[]).expect(0);
    let mut want = files(&f.src);
    want.retain(|(rel, ..)| rel != "docs/link");
    assert_eq!(files(&restored), want, "the recorded times came along");
    let mut cmd = s3.command();
    let noop = Run::from(
        cmd.args(["--json", &s3.url(), &copy.url()])
            .output()
            .unwrap(),
    );
    let noop = json(&noop.expect(0));
    assert_eq!(noop["unchanged"]["files"], 4, "{noop}");
    (s3, copy, heads)
}

/// The requests among `heads` that copy an object on the server (to any bucket).
fn server_copies(heads: &[String]) -> Vec<String> {
    heads
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .filter(|h| h.starts_with("put ") && h.contains("x-amz-copy-source:"))
        .collect()
}

/// Whether no object's bytes were read: the two manifests are the only objects fetched
/// (besides the listings).
fn only_manifests_read(heads: &[String]) -> bool {
    let gets: Vec<_> = heads
        .iter()
        .filter(|h| h.starts_with("GET ") && !h.contains("?list-type="))
        .collect();
    gets.len() == 2 && gets.iter().all(|h| h.contains("/.syncease/manifest "))
}

#[test]
fn s3_to_s3_in_one_bucket_copies_on_the_server() {
    let Some(s3) = S3::new("copy-in-bucket") else {
        return;
    };
    let bucket = s3.bucket.clone();
    let (_, _, heads) = s3_to_s3(s3, &bucket, None);
    assert!(only_manifests_read(&heads), "{heads:#?}");
    assert_eq!(server_copies(&heads).len(), 4, "{heads:#?}");
}

#[test]
fn s3_to_another_bucket_of_the_service_copies_on_the_server() {
    let Some(s3) = S3::new("copy-across") else {
        return;
    };
    let (from, to) = (s3.bucket.clone(), server_var("SYNCEASE_TEST_S3_BUCKET2"));
    let (s3, copy, heads) = s3_to_s3(s3, &to, None);
    assert!(only_manifests_read(&heads), "{heads:#?}");
    let copies = server_copies(&heads);
    assert_eq!(copies.len(), 4, "{heads:#?}");
    for head in &copies {
        let source = format!("x-amz-copy-source: {from}/{}/", s3.prefix);
        assert!(head.contains(&source), "{head}");
        assert!(
            head.starts_with(&format!("put /{to}/{}/", copy.prefix)),
            "{head}"
        );
    }
}

#[test]
fn s3_copies_between_buckets_the_service_refuses_are_uploaded_instead() {
    let Some(s3) = S3::new("copy-refused") else {
        return;
    };
    let to = server_var("SYNCEASE_TEST_S3_BUCKET2");
    let refuse = Bend::Refuse(|head| head.contains("x-amz-copy-source:"));
    let (_, _, heads) = s3_to_s3(s3, &to, Some(refuse));
    // Once refused, the rest are not asked for (files already on their way may be).
    let refused = server_copies(&heads).len();
    assert!((1..=4).contains(&refused), "{heads:#?}");
    let uploads = heads
        .iter()
        .filter(|h| h.starts_with(&format!("PUT /{to}/")))
        .filter(|h| !h.to_ascii_lowercase().contains("x-amz-copy-source"))
        .count();
    assert!(uploads >= 4, "every file was uploaded: {heads:#?}");
    assert!(
        !only_manifests_read(&heads),
        "the objects were read: {heads:#?}"
    );
}

#[test]
fn s3_a_copy_between_buckets_that_keeps_failing_is_tried_four_times_then_reported() {
    let Some(mut s3) = S3::new("copy-failing") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    f.write("src/a.txt", "alpha");
    s3.sync(&f, &[]).expect(0);
    let from = s3.url();
    let copy = S3 {
        prefix: unique("copy-failing-copy"),
        bucket: server_var("SYNCEASE_TEST_S3_BUCKET2"),
        ..s3
    };
    relay.heads();
    // Every write to the other bucket fails (500): the copy, and the manifest after it.
    relay.bend(Bend::Fail(|line| line.starts_with("PUT /syncease-test-2/")));
    let mut cmd = copy.command();
    let run = Run::from(cmd.args([&from, &copy.url()]).output().unwrap()).expect(1);
    let tries = server_copies(&relay.heads()).len();
    assert_eq!(tries, 4, "{run:?}");
    assert!(
        run.stderr.contains("cannot copy") && run.stderr.contains("a.txt"),
        "{run:?}"
    );
    assert!(run.stderr.contains("HTTP 500"), "{run:?}");
}

/// Put `data` at `key` in the test bucket exactly as written (`..` and `//` kept): curl signs
/// the request; no S3 client this test has would send such a key.
fn put_raw(s3: &S3, key: &str, data: &str) {
    let out = Command::new("curl")
        .args(["-sS", "-f", "--path-as-is", "--aws-sigv4"])
        .arg(format!("aws:amz:{}:s3", s3.region))
        .arg("--user")
        .arg(format!("{}:{}", s3.key_id, s3.secret))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-X", "PUT"])
        .args(["--data-binary", data])
        .arg(format!("{}/{}/{}/{key}", s3.endpoint, s3.bucket, s3.prefix))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{key}: {out:?}");
}

#[test]
fn s3_keys_that_would_leave_the_root_are_left_out_with_a_warning() {
    let Some(s3) = S3::new("odd-keys") else {
        return;
    };
    if !need("curl", "curl") {
        return;
    }
    let odd = ["../../outside/", "../escaped", "c//d", "b/.", "a"];
    for key in ["ok", "a/b"].iter().chain(&odd) {
        put_raw(&s3, key, "data");
    }
    let f = Fixture::new();
    let restored = f.path("deep/x/restored");
    fs::create_dir_all(f.path("deep/x")).unwrap();
    let run = restore(s3.command(), &s3.url(), &restored, &[]).expect(0);
    assert_eq!(
        run.stderr.matches("leaving out").count(),
        odd.len(),
        "{run:?}"
    );
    assert!(run.stderr.contains("hidden by a folder"), "{run:?}");
    let names = |p: &Path| {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&f.path("deep")), ["x"], "nothing written outside DST");
    assert_eq!(
        names(&f.path("deep/x")),
        ["restored"],
        "nothing written outside DST"
    );
    assert_eq!(names(&restored), ["a", "ok"]);
    assert_eq!(fs::read(restored.join("a/b")).unwrap(), b"data");
    // Into an SFTP folder: nothing above its root is made or changed either.
    if let Some(sftp) = Sftp::new("odd-keys") {
        let mut cmd = s3.command();
        cmd.args(["--ssh-key", &sftp.key, "--known-hosts", &sftp.known_hosts]);
        let run = Run::from(cmd.args([&s3.url(), &sftp.url]).output().unwrap()).expect(0);
        let root = sftp.local.parent().unwrap();
        assert!(!root.join("escaped").exists(), "{run:?}");
        assert!(!root.parent().unwrap().join("outside").exists(), "{run:?}");
        assert_eq!(names(&sftp.local), ["a", "ok"]);
    }
}

#[test]
fn sftp_roots_that_nest_under_another_spelling_are_refused_and_the_source_kept() {
    let Some(sftp) = Sftp::new("nest") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/real/inner/keep.txt", "source");
    f.write("src/real/other.txt", "x");
    sftp.sync(&f, &[]).expect(0);
    // On the host, `lnk` leads to `real`: `lnk/inner` is inside `real`.
    std::os::unix::fs::symlink("real", sftp.local.join("lnk")).unwrap();
    let nested = format!("{}/lnk/inner", sftp.url);
    let outer = format!("{}/real", sftp.url);
    let mut cmd = sftp.command();
    let run = Run::from(cmd.args([&nested, &outer]).output().unwrap()).expect(2);
    assert!(run.stderr.contains("overlap"), "{run:?}");
    let mut cmd = sftp.command();
    let run = Run::from(cmd.args([&outer, &nested]).output().unwrap()).expect(2);
    assert!(run.stderr.contains("overlap"), "{run:?}");
    // The host is this machine: its folder is a local folder too.
    let local = sftp.local.join("real");
    let run = restore(sftp.command(), &format!("{outer}/inner"), &local, &[]).expect(2);
    assert!(run.stderr.contains("overlap"), "{run:?}");
    // A backup directory inside the source, from one remote to another.
    let elsewhere = format!("{}/copy", sftp.url);
    let backup = sftp.local.join("real/inner/kept");
    let backup = ["--backup-dir", backup.to_str().unwrap()];
    let run = restore(sftp.command(), &outer, Path::new(&elsewhere), &backup).expect(2);
    assert!(run.stderr.contains("inside the source"), "{run:?}");
    assert_eq!(
        fs::read(sftp.local.join("real/inner/keep.txt")).unwrap(),
        b"source"
    );
    assert!(!sftp.local.join("copy").exists());
}

#[test]
fn s3_a_backup_prefix_inside_the_source_prefix_is_refused() {
    let Some(s3) = S3::new("backup-in-source") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    s3.sync(&f, &[]).expect(0);
    let copy = format!("s3://{}/{}", s3.bucket, unique("copy"));
    let backup = format!("{}/kept", s3.url());
    let mut cmd = s3.command();
    let run = Run::from(
        cmd.args(["--backup-dir", &backup, &s3.url(), &copy])
            .output()
            .unwrap(),
    )
    .expect(2);
    assert!(run.stderr.contains("inside the source"), "{run:?}");
}

#[test]
fn remote_roots_that_are_one_or_nest_are_refused_before_connecting() {
    let f = Fixture::new();
    for (src, dst, says) in [
        ("s3://b/x", "s3://b/x", "same"),
        ("s3://b/x", "s3://b/x/y", "overlap"),
        ("s3://b", "s3://b/y", "overlap"),
        ("sftp://h/srv/a/b", "sftp://me@h/srv/a", "overlap"),
    ] {
        let run = f.run([src, dst]).expect(2);
        assert!(run.stderr.contains(says), "{src} {dst}: {run:?}");
    }
}
