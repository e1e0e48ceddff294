//! Remote destinations against real servers on loopback: Garage for S3, OpenSSH for SFTP (see
//! [`crate::servers`]: started by the tests themselves when installed). Where a server cannot
//! be had the test says so and is not run — unless `CI=true`, where that is a failure.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::relay::{Bend, Relay};
use crate::servers;
use crate::util::*;

/// The server variable `var` for a `backend` test (`None` after [`not_tested`] when this
/// build has no such backend or no server could be had).
#[track_caller]
pub(crate) fn server_env(backend: &str, built: bool, var: &str) -> Option<String> {
    if !built {
        not_tested(&format!(
            "built without the {backend} feature (--all-features)"
        ));
        return None;
    }
    match servers::var(var) {
        Ok(value) => Some(value),
        Err(why) => {
            not_tested(&why);
            None
        }
    }
}

/// A variable `tests/servers/start` sets along with the one `server_env` found.
pub(crate) fn server_var(var: &str) -> String {
    servers::var(var).unwrap_or_else(|why| panic!("{why}"))
}

/// Run `cmd EXTRA SRC URL`.
pub(crate) fn sync_to(mut cmd: Command, f: &Fixture, url: &str, extra: &[&str]) -> Run {
    Run::from(cmd.args(extra).arg(&f.src).arg(url).output().unwrap())
}

/// Run a helper tool (rclone) that must succeed; its standard output.
pub(crate) fn succeeding(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("rclone (installed by .ci/run)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub(crate) fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

/// A name no other test (or earlier run) uses.
pub(crate) fn unique(name: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-28T10:15:54.123456789Z` as Unix seconds and nanoseconds.
fn parse_utc(text: &str) -> (i64, u32) {
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let days = days_from_civil(n(0..4), n(5..7), n(8..10));
    let sec = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    let frac = text[19..].trim_start_matches('.').trim_end_matches('Z');
    let nsec = format!("{frac:0<9}")[..9].parse::<u32>().unwrap();
    (sec, nsec)
}

/// Path, and for a file its size, mtime and MD5 (directories: `None`), sorted by path.
type Listing = Vec<(String, Option<(u64, (i64, u32), String)>)>;

// --- S3 -----------------------------------------------------------------------------------

pub(crate) struct S3 {
    pub(crate) endpoint: String,
    pub(crate) bucket: String,
    pub(crate) key_id: String,
    pub(crate) secret: String,
    pub(crate) region: String,
    /// This test's key prefix.
    pub(crate) prefix: String,
}

impl S3 {
    pub(crate) fn new(test: &str) -> Option<S3> {
        let endpoint = server_env("s3", cfg!(feature = "s3"), "SYNCEASE_TEST_S3_ENDPOINT")?;
        // The tests read what was uploaded back through another client.
        if !need("rclone", "rclone") {
            return None;
        }
        Some(S3 {
            endpoint,
            bucket: server_var("SYNCEASE_TEST_S3_BUCKET"),
            key_id: server_var("SYNCEASE_TEST_S3_KEY_ID"),
            secret: server_var("SYNCEASE_TEST_S3_SECRET"),
            region: server_var("SYNCEASE_TEST_S3_REGION"),
            prefix: unique(test),
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// syncease with static test keys, no config files, no metadata service, and a CA bundle
    /// variable pointing nowhere (the client must not trip over it).
    pub(crate) fn command(&self) -> Command {
        let mut cmd = syncease();
        self.configure(&mut cmd);
        cmd
    }

    fn configure(&self, cmd: &mut Command) {
        cmd.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws-credentials",
            )
            .env("AWS_CA_BUNDLE", "/nonexistent/ca-bundle.pem")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .args(["--s3-endpoint", &self.endpoint, "--s3-region", &self.region]);
    }

    /// [`S3::configure`] but for the region, which the environment is to give.
    fn configure_without_region(&self, cmd: &mut Command) {
        self.configure(cmd);
        let args: Vec<std::ffi::OsString> = cmd.get_args().map(Into::into).collect();
        let region = args.iter().position(|a| a == "--s3-region").unwrap();
        let mut rebuilt = syncease();
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => rebuilt.env(key, v),
                None => rebuilt.env_remove(key),
            };
        }
        rebuilt.args(args[..region].iter().chain(&args[region + 2..]));
        *cmd = rebuilt;
    }

    pub(crate) fn sync(&self, f: &Fixture, extra: &[&str]) -> Run {
        sync_to(self.command(), f, &self.url(), extra)
    }

    /// rclone, configured for the test store through its environment.
    pub(crate) fn rclone(&self) -> Command {
        let mut cmd = Command::new("rclone");
        cmd.env("RCLONE_CONFIG", "/nonexistent/rclone.conf")
            .env("RCLONE_CONFIG_GARAGE_TYPE", "s3")
            .env("RCLONE_CONFIG_GARAGE_PROVIDER", "Other")
            .env("RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID", &self.key_id)
            .env("RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY", &self.secret)
            .env("RCLONE_CONFIG_GARAGE_ENDPOINT", &self.endpoint)
            .env("RCLONE_CONFIG_GARAGE_REGION", &self.region)
            .env("RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE", "true")
            .env("TZ", "UTC")
            // rclone (1.60) fails on any AWS_CA_BUNDLE with its own transport.
            .env_remove("AWS_CA_BUNDLE");
        cmd
    }

    /// What rclone sees below `prefix`: for each file its size, mtime (from our metadata) and
    /// MD5 (from the ETag, or our md5chksum for multipart objects); directories as `None`.
    fn listing(&self, prefix: &str) -> Listing {
        let out = succeeding(
            self.rclone()
                .args(["lsjson", "-R", "--hash"])
                .arg(format!("garage:{}/{prefix}", self.bucket)),
        );
        let doc: Value = serde_json::from_slice(&out).unwrap();
        let mut entries: Vec<_> = doc
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let path = e["Path"].as_str().unwrap().to_string();
                let file = (!e["IsDir"].as_bool().unwrap()).then(|| {
                    (
                        e["Size"].as_u64().unwrap(),
                        parse_utc(e["ModTime"].as_str().unwrap()),
                        e["Hashes"]["md5"].as_str().unwrap_or("").to_string(),
                    )
                });
                (path, file)
            })
            // The manifest is syncease's own (see s3_manifest_…).
            .filter(|(path, _)| path != ".syncease" && !path.starts_with(".syncease/"))
            .collect();
        entries.sort();
        entries
    }

    /// What the listing should be for the local tree `root` (symlinks are not stored; rclone
    /// shows only directories that hold files, not our markers for empty ones).
    fn expected(root: &Path) -> Listing {
        let mut entries = Vec::new();
        for e in walkdir::WalkDir::new(root).min_depth(1) {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                let has_file = walkdir::WalkDir::new(e.path())
                    .into_iter()
                    .any(|d| d.unwrap().file_type().is_file());
                if has_file {
                    entries.push((rel, None));
                }
            } else if meta.is_file() {
                let digest = md5_hex(&fs::read(e.path()).unwrap());
                let mtime = (meta.mtime(), meta.mtime_nsec() as u32);
                entries.push((rel, Some((meta.len(), mtime, digest))));
            }
        }
        entries.sort();
        entries
    }
}

fn md5_hex(data: &[u8]) -> String {
    let out = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

/// A source tree with nesting, an empty directory, a symlink and a file over the part size.
pub(crate) fn remote_tree(f: &Fixture) {
    f.write("src/a.txt", "alpha");
    f.write("src/docs/b.txt", "bravo");
    f.write("src/docs/deep/c.txt", "charlie");
    f.mkdir("src/empty");
    f.symlink("src/docs/link", "b.txt");
    f.write("src/big.bin", big_content(7, 1, (20 << 20) + 12_345));
    set_mtime(&f.path("src/a.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&f.path("src/docs/deep/c.txt"), -86_400 * 400, 5);
}

/// Change a [`remote_tree`]: one file changed (same size, new time), one added, a subtree
/// gone, a directory turned into a file.
pub(crate) fn change_remote_tree(f: &Fixture) {
    f.write("src/a.txt", "ALPHA");
    set_mtime(&f.path("src/a.txt"), 1_600_000_001, 0);
    f.write("src/new.txt", "new");
    fs::remove_dir_all(f.path("src/docs/deep")).unwrap();
    fs::remove_dir(f.path("src/empty")).unwrap();
    f.write("src/empty", "now a file");
}

#[test]
fn s3_mirror_initial_noop_incremental_and_deletes() {
    let Some(mut s3) = S3::new("mirror") else {
        return;
    };
    let counter = Relay::start(&s3.endpoint);
    s3.endpoint = counter.endpoint.clone();
    let f = Fixture::new();
    remote_tree(&f);

    let first = json(&s3.sync(&f, &["--json"]).expect(0));
    let initial = counter.take();
    assert_eq!(
        initial.get("HEAD"),
        None,
        "no same-size pair, no HEAD: {initial:?}"
    );
    assert_eq!(first["copied"]["files"], 4, "{first}");
    assert_eq!(first["skipped"], 1, "the symlink: {first}");
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));
    // The empty directory is there as a marker: a dry run has nothing to create.
    let dry = s3.sync(&f, &["-n"]).expect(0);
    assert!(!dry.stdout.contains("empty"), "{dry:?}");

    // No-op: nothing uploaded; the objects are the very same (LastModified unchanged).
    let before = s3.rclone_raw_times();
    counter.take();
    let noop = json(&s3.sync(&f, &["--json"]).expect(0));
    let requests = counter.take();
    // One listing (its first page is the reachability check) and the manifest: no HEAD.
    let only_reads = BTreeMap::from([("GET".to_string(), 1), ("LIST".to_string(), 1)]);
    assert_eq!(requests, only_reads);
    let sized = json(&s3.sync(&f, &["--json", "--size-only"]).expect(0));
    assert_eq!(sized["unchanged"]["files"], 4, "{sized}");
    assert_eq!(counter.take(), only_reads, "--size-only");
    assert_eq!(noop["copied"]["files"], 0, "{noop}");
    assert_eq!(noop["updated"]["files"], 0, "{noop}");
    assert_eq!(noop["deleted"], 0, "{noop}");
    assert_eq!(noop["unchanged"]["files"], 4, "{noop}");
    assert_eq!(s3.rclone_raw_times(), before);

    // Incremental: one changed (same size, new time), one added, one removed, a subtree gone,
    // a file turned into a directory.
    change_remote_tree(&f);
    let inc = json(&s3.sync(&f, &["--json"]).expect(0));
    assert_eq!(
        inc["updated"]["files"], 2,
        "a.txt and the type change: {inc}"
    );
    assert_eq!(inc["copied"]["files"], 1, "{inc}");
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));
    counter.take();
    let again = json(&s3.sync(&f, &["--json"]).expect(0));
    assert_eq!(again["copied"]["files"], 0, "{again}");
    assert_eq!(again["updated"]["files"], 0, "{again}");
    assert_eq!(
        counter.take().get("HEAD"),
        None,
        "the manifest was kept up to date"
    );
}

#[test]
fn s3_manifest_rows_are_trusted_only_for_the_object_version_they_describe() {
    let Some(mut s3) = S3::new("manifest") else {
        return;
    };
    let counter = Relay::start(&s3.endpoint);
    s3.endpoint = counter.endpoint.clone();
    let f = Fixture::new();
    for n in 0..5 {
        f.write(format!("src/f{n}.txt"), format!("file {n}"));
        set_mtime(&f.path(format!("src/f{n}.txt")), 1_600_000_000 + n, 0);
    }
    s3.sync(&f, &[]).expect(0);
    assert!(s3.object_exists(".syncease/manifest"));
    counter.take();
    s3.sync(&f, &[]).expect(0);
    assert_eq!(counter.take().get("HEAD"), None);

    // Someone else rewrites f1 with the same size and an older time: its row no longer
    // matches its ETag, so it is read with a HEAD and mended; the others are not.
    let other = f.write("other/f1.txt", "FILE 1");
    set_mtime(&other, 1_500_000_000, 0);
    succeeding(
        s3.rclone()
            .args(["copyto"])
            .arg(&other)
            .arg(format!("garage:{}/{}/f1.txt", s3.bucket, s3.prefix)),
    );
    counter.take();
    let mended = json(&s3.sync(&f, &["--json"]).expect(0));
    assert_eq!(mended["updated"]["files"], 1, "{mended}");
    // One HEAD to compare it, one to learn the new upload's LastModified for its row.
    assert_eq!(counter.take().get("HEAD"), Some(&2));
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));

    // Without the manifest, every same-size object is read with a HEAD, and the manifest is
    // written again.
    succeeding(s3.rclone().args(["deletefile"]).arg(format!(
        "garage:{}/{}/.syncease/manifest",
        s3.bucket, s3.prefix
    )));
    counter.take();
    let noop = json(&s3.sync(&f, &["--json"]).expect(0));
    assert_eq!(noop["unchanged"]["files"], 5, "{noop}");
    assert_eq!(counter.take().get("HEAD"), Some(&5));
    s3.sync(&f, &[]).expect(0);
    assert_eq!(counter.take().get("HEAD"), None);

    // A manifest that is not one (garbage at its key) is not used, and is replaced.
    let junk = f.write("junk", "not a manifest");
    succeeding(s3.rclone().args(["copyto"]).arg(&junk).arg(format!(
        "garage:{}/{}/.syncease/manifest",
        s3.bucket, s3.prefix
    )));
    counter.take();
    s3.sync(&f, &[]).expect(0);
    assert_eq!(counter.take().get("HEAD"), Some(&5));
    s3.sync(&f, &[]).expect(0);
    assert_eq!(counter.take().get("HEAD"), None);
    // The manifest is never taken for a mirrored file, nor deleted.
    assert!(s3.object_exists(".syncease/manifest"));
}

impl S3 {
    /// Whether the object `rel` below the test's prefix exists.
    fn object_exists(&self, rel: &str) -> bool {
        let out = succeeding(
            self.rclone()
                .args(["lsf", "--files-only"])
                .arg(format!("garage:{}/{}/{rel}", self.bucket, self.prefix)),
        );
        !out.is_empty()
    }

    /// Every object's server-side LastModified, to see that nothing was rewritten (directories
    /// are left out: rclone gives them the current time).
    fn rclone_raw_times(&self) -> Vec<String> {
        let out = succeeding(
            self.rclone()
                .args(["lsf", "-R", "--files-only", "--format", "pt"])
                .arg("--use-server-modtime")
                .arg(format!("garage:{}/{}", self.bucket, self.prefix)),
        );
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }
}

#[test]
fn s3_objects_uploaded_by_rclone_are_seen_as_unchanged() {
    let Some(s3) = S3::new("rclone") else { return };
    let f = Fixture::new();
    remote_tree(&f);
    succeeding(
        s3.rclone()
            .args(["sync"])
            .arg(&f.src)
            .arg(format!("garage:{}/{}", s3.bucket, s3.prefix)),
    );
    let run = json(&s3.sync(&f, &["--json"]).expect(0));
    assert_eq!(run["copied"]["files"], 0, "{run}");
    assert_eq!(run["updated"]["files"], 0, "{run}");
    assert_eq!(run["unchanged"]["files"], 4, "{run}");
    let checked = json(&s3.sync(&f, &["--json", "--checksum"]).expect(0));
    assert_eq!(checked["updated"]["files"], 0, "{checked}");
}

#[test]
fn s3_checksum_size_only_and_dry_run() {
    let Some(s3) = S3::new("compare") else { return };
    let f = Fixture::new();
    remote_tree(&f);
    s3.sync(&f, &[]).expect(0);

    // Same size and mtime, other bytes: only --checksum sees it (small file: the ETag; big
    // file: the md5chksum kept at upload, its ETag being a multipart one).
    let a = f.write("src/a.txt", "ALPHA");
    set_mtime(&a, 1_600_000_000, 123_456_789);
    let b = f.path("src/big.bin");
    let meta = fs::metadata(&b).unwrap();
    let mut big = fs::read(&b).unwrap();
    big[5] ^= 1;
    fs::write(&b, &big).unwrap();
    set_mtime(&b, meta.mtime(), meta.mtime_nsec() as u32);
    for extra in [&[][..], &["--size-only"][..]] {
        let run = json(&s3.sync(&f, &[&["--json"][..], extra].concat()).expect(0));
        assert_eq!(run["updated"]["files"], 0, "{extra:?}: {run}");
    }

    // A dry run changes nothing and says what a real run would do.
    let before = s3.listing(&s3.prefix);
    let dry = json(&s3.sync(&f, &["--json", "-c", "-n"]).expect(0));
    assert_eq!(dry["updated"]["files"], 2, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(s3.listing(&s3.prefix), before);

    let checked = json(&s3.sync(&f, &["--json", "-c"]).expect(0));
    assert_eq!(checked["updated"]["files"], 2, "{checked}");
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));
    let settled = json(&s3.sync(&f, &["--json", "-c"]).expect(0));
    assert_eq!(settled["updated"]["files"], 0, "{settled}");
}

#[test]
fn s3_a_stop_during_a_checksum_compare_stops_the_hashing_and_uploads_nothing() {
    let Some(s3) = S3::new("stopped-checksum") else {
        return;
    };
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    // Same size and time, other content: only --checksum tells them apart.
    let big = f.write("src/big", big_content(10, 1, 16 << 20));
    set_mtime(&big, 1_000_000, 0);
    s3.sync(&f, &[]).expect(0);
    f.write("src/big", big_content(10, 2, 16 << 20));
    set_mtime(&big, 1_000_000, 0);
    let before = s3.listing(&s3.prefix);
    let url = s3.url();
    let args = ["--json".as_ref(), "--checksum".as_ref()];
    let args = args.into_iter().chain([f.src.as_os_str(), url.as_ref()]);
    // Stopped at the first read of the source file; the stop is asked for meanwhile.
    stopped_while_hashing(&big, |cmd| s3.configure(cmd), args);
    assert_eq!(s3.listing(&s3.prefix), before, "uploaded after the stop");
    let checked = json(&s3.sync(&f, &["--json", "-c"]).expect(0));
    assert_eq!(checked["updated"]["files"], 1, "{checked}");
}

#[test]
fn s3_refusals_and_deletion_limits() {
    let Some(s3) = S3::new("refuse") else { return };
    let f = Fixture::new();
    remote_tree(&f);
    s3.sync(&f, &[]).expect(0);
    let before = s3.listing(&s3.prefix);

    // An empty (unmounted?) source never empties the destination.
    let empty = f.mkdir("empty");
    let run = Run::from(s3.command().arg(&empty).arg(s3.url()).output().unwrap()).expect(2);
    assert!(run.stderr.contains("empty"), "{run:?}");
    assert_eq!(s3.listing(&s3.prefix), before);

    // Wrong credentials: refused before anything, naming the destination.
    let run = Run::from(
        s3.command()
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .arg(&f.src)
            .arg(s3.url())
            .output()
            .unwrap(),
    )
    .expect(2);
    assert!(run.stderr.contains(&s3.url()), "{run:?}");

    // A backup prefix inside the mirror is refused.
    let inside = format!("{}/old", s3.prefix);
    s3.sync(&f, &["--backup-dir", &inside]).expect(2);

    // Over the deletion limit: copies happen, deletions do not, exit 1.
    fs::remove_dir_all(f.path("src/docs")).unwrap();
    f.write("src/added.txt", "added");
    let run = s3.sync(&f, &["--json", "--max-delete", "1"]).expect(1);
    let doc = json(&run);
    assert_eq!(doc["copied"]["files"], 1, "{doc}");
    assert_eq!(doc["deleted"], 0, "{doc}");
    let listed = s3.listing(&s3.prefix);
    assert!(listed.iter().any(|(p, _)| p == "docs/b.txt"), "{listed:?}");
    s3.sync(&f, &[]).expect(0);
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));
}

#[test]
fn s3_credentials_come_from_a_profile_file() {
    let Some(s3) = S3::new("profile") else { return };
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let credentials = f.write(
        "aws/credentials",
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n\
             [backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.key_id, s3.secret
        ),
    );
    let run = |profile: Option<&str>| {
        let mut cmd = s3.command();
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials);
        if let Some(profile) = profile {
            cmd.env("AWS_PROFILE", profile);
        }
        Run::from(cmd.arg(&f.src).arg(s3.url()).output().unwrap())
    };
    let refused = run(None).expect(2);
    assert!(refused.stderr.contains(&s3.url()), "{refused:?}");
    run(Some("backup")).expect(0);
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));
}

#[test]
fn s3_deletions_are_withheld_after_a_source_read_error() {
    let Some(s3) = S3::new("withheld") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/ok.txt", "ok");
    f.write("src/old.txt", "old");
    let secret = f.write("src/secret.txt", "secret");
    s3.sync(&f, &[]).expect(0);
    fs::remove_file(f.path("src/old.txt")).unwrap();
    f.write("src/secret.txt", "secret, longer");
    f.write("src/new.txt", "new");
    // Unreadable for the user the run has (as root, the run drops to nobody).
    let mut cmd = unprivileged(&f);
    chmod(&secret, 0o000);
    s3.configure(&mut cmd);
    let run = Run::from(cmd.arg(&f.src).arg(s3.url()).output().unwrap()).expect(1);
    assert!(run.stderr.contains("secret.txt"), "{run:?}");
    assert!(run.stderr.contains("deleting nothing"), "{run:?}");
    let listed: Vec<String> = s3.listing(&s3.prefix).into_iter().map(|(p, _)| p).collect();
    assert_eq!(listed, ["new.txt", "ok.txt", "old.txt", "secret.txt"]);
}

#[test]
fn s3_backup_prefix_keeps_overwritten_and_deleted_objects() {
    let Some(s3) = S3::new("backup") else { return };
    let f = Fixture::new();
    f.write("src/keep.txt", "v1");
    f.write("src/gone.txt", "doomed");
    s3.sync(&f, &[]).expect(0);
    let backup = format!("{}-old", s3.prefix);
    f.write("src/keep.txt", "v2!");
    fs::remove_file(f.path("src/gone.txt")).unwrap();
    s3.sync(&f, &["--backup-dir", &backup]).expect(0);
    f.write("src/keep.txt", "v3!!");
    s3.sync(&f, &["--backup-dir", &backup]).expect(0);
    let kept: Vec<(String, u64)> = s3
        .listing(&backup)
        .into_iter()
        .filter_map(|(p, file)| file.map(|(size, _, _)| (p, size)))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("gone.txt".to_string(), 6),
            ("keep.txt".to_string(), 2),
            ("keep.txt.~1~".to_string(), 3),
        ]
    );
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));
}

#[test]
fn s3_killed_multipart_upload_leaves_no_partial_object() {
    let Some(s3) = S3::new("killed") else { return };
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    let size = 48 << 20;
    for version in 1..=2u64 {
        let huge = f.write("src/huge.bin", big_content(3, version, size));
        set_mtime(&huge, 1_000_000 * version as i64, 0);
        let before = s3.listing(&s3.prefix);
        // One worker reads the file whole for its MD5 (48 reads of 1 MiB and one at the end),
        // then part by part (8 MiB a read): killed as it reads the fourth part, with three
        // handed over and the upload not complete.
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=read"])
            .args(["-e", "inject=read:signal=SIGKILL:when=53", "-P"])
            .arg(&huge)
            .arg(assert_cmd::cargo::cargo_bin("syncease"));
        s3.configure(&mut cmd);
        let run = Run::from(
            cmd.args(["-j", "1"])
                .arg(&f.src)
                .arg(s3.url())
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, -1, "the run ended before the kill point: {run:?}");
        // The first time there is no object at all; the second, still the first version.
        assert_eq!(s3.listing(&s3.prefix), before, "round {version}");
    }
    s3.sync(&f, &[]).expect(0);
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));
}

#[test]
fn s3_a_stop_aborts_a_multipart_upload_between_its_parts() {
    let Some(s3) = S3::new("stopped") else { return };
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    let huge = f.write("src/huge.bin", big_content(4, 1, 48 << 20));
    f.write("src/small.txt", "after it");
    // Stopped as it reads the fourth part (as in the kill test above); the stop is asked for
    // meanwhile.
    let url = s3.url();
    let args = ["--json".as_ref(), "-j".as_ref(), "1".as_ref()];
    let args = args.into_iter().chain([f.src.as_os_str(), url.as_ref()]);
    let mut run = Paused::start_with("read", &huge, "53", |cmd| s3.configure(cmd), args);
    assert!(run.stopped(), "huge.bin was never read");
    run.signal("-INT");
    run.resume();
    let run = run.finish().expect(130);
    let doc = json(&run);
    assert_eq!(doc["status"], "interrupted", "{run:?}");
    assert_eq!(doc["copied"]["files"], 0, "{run:?}");
    assert_eq!(doc["errors"], serde_json::json!([]), "a stop is no error");
    assert!(
        s3.listing(&s3.prefix)
            .iter()
            .all(|(k, _)| !k.starts_with("huge")),
        "the upload was finished: {:?}",
        s3.listing(&s3.prefix)
    );
    s3.sync(&f, &[]).expect(0);
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));
}

#[test]
fn s3_a_stop_gives_up_a_download_between_its_pieces() {
    let Some(s3) = S3::new("stopped-download") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/big.bin", big_content(7, 1, 8 << 20));
    s3.sync(&f, &[]).expect(0);
    // What is restored into holds an older version: the new one goes to a named temporary
    // beside it, at 1 MiB a second.
    let restored = f.path("restored");
    let old = f.write("restored/big.bin", "old");
    set_mtime(&old, 1_000_000, 0);
    let mut child = s3
        .command()
        .args(["--bwlimit", "1M"])
        .arg(s3.url())
        .arg(&restored)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !temporaries(&restored)
        .iter()
        .any(|t| fs::metadata(restored.join(t)).is_ok_and(|m| m.len() > 0))
    {
        assert!(child.try_wait().unwrap().is_none(), "ended before writing");
        assert!(started.elapsed().as_secs() < 60, "no temporary with data");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 130, "{run:?}");
    assert!(
        fs::read(&old).unwrap() == b"old",
        "the download was finished"
    );
    assert!(
        temporaries(&restored).is_empty(),
        "its temporary is removed"
    );
}

#[test]
fn s3_listing_takes_one_request_per_thousand_keys_flat_or_nested() {
    let Some(mut s3) = S3::new("pages") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    for (layout, dirs) in [("flat", 1), ("nested", 100)] {
        let f = Fixture::new();
        for n in 0..10_000 {
            let rel = match dirs {
                1 => format!("src/f{n}"),
                d => format!("src/d{}/f{n}", n % d),
            };
            f.write(rel, "x");
        }
        s3.prefix = unique(layout);
        s3.sync(&f, &["-q"]).expect(0);
        relay.take();
        let noop = json(&s3.sync(&f, &["--json"]).expect(0));
        assert_eq!(noop["unchanged"]["files"], 10_000, "{layout}: {noop}");
        let requests = relay.take();
        // One listing in pages of 1,000 keys (11 pages for 10,000 files and the manifest, or
        // 10,100 with the directory markers) and the manifest: no HEAD.
        let lists = requests.get("LIST").copied().unwrap_or(0);
        assert_eq!(lists, 11, "{layout}: {requests:?}");
        assert_eq!(requests.get("GET"), Some(&1), "{layout}: {requests:?}");
        assert_eq!(requests.len(), 2, "{layout}: only these: {requests:?}");
    }
}

#[test]
fn s3_deletions_go_a_thousand_keys_a_request() {
    let Some(mut s3) = S3::new("batch-delete") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    for n in 0..2_501 {
        f.write(format!("src/f{n}"), "x");
    }
    s3.sync(&f, &["-q"]).expect(0);
    for n in 1..2_501 {
        fs::remove_file(f.path(format!("src/f{n}"))).unwrap();
    }
    relay.take();
    let run = json(&s3.sync(&f, &["--json"]).expect(0));
    assert_eq!(run["deleted"], 2_500, "{run}");
    let requests = relay.take();
    // DeleteObjects is a POST: 1,000 + 1,000 + 500 keys; the manifest is the one PUT.
    assert_eq!(requests.get("POST"), Some(&3), "{requests:?}");
    assert_eq!(requests.get("DELETE"), None, "{requests:?}");
    let listed = s3.listing(&s3.prefix);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0, "f0");
}

#[test]
fn s3_a_batch_delete_that_fails_is_done_key_by_key() {
    let Some(mut s3) = S3::new("batch-fails") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    for n in 0..5 {
        f.write(format!("src/f{n}"), "x");
    }
    s3.sync(&f, &["-q"]).expect(0);
    for n in 1..5 {
        fs::remove_file(f.path(format!("src/f{n}"))).unwrap();
    }
    // DeleteObjects is `POST /bucket?delete`; every one fails (and is retried, and fails).
    relay.bend(Bend::Fail(|line| {
        line.starts_with("POST ") && line.contains("?delete")
    }));
    relay.take();
    let run = json(&s3.sync(&f, &["--json", "--timeout", "5"]).expect(0));
    assert_eq!(run["deleted"], 4, "{run}");
    let requests = relay.take();
    assert_eq!(requests.get("DELETE"), Some(&4), "one by one: {requests:?}");
    assert_eq!(s3.listing(&s3.prefix).len(), 1);
}

#[test]
fn s3_a_lost_answer_to_complete_a_multipart_upload_is_checked_not_failed() {
    let Some(mut s3) = S3::new("lost-answer") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    f.write("src/big.bin", big_content(5, 1, (20 << 20) + 7));
    // The Complete request is the only POST with an upload id (starting one is `?uploads`).
    relay.bend(Bend::LoseAnswer(|line| {
        line.starts_with("POST ") && line.contains("uploadId=")
    }));
    let run = json(&s3.sync(&f, &["--json"]).expect(0));
    assert_eq!(run["copied"]["files"], 1, "{run}");
    assert_eq!(run["errors"].as_array().unwrap().len(), 0, "{run}");
    assert_eq!(s3.listing(&s3.prefix), S3::expected(&f.src));
    let again = json(&s3.sync(&f, &["--json"]).expect(0));
    assert_eq!(again["unchanged"]["files"], 1, "{again}");
}

#[test]
fn s3_uploads_carry_content_type_storage_class_and_encryption_as_asked() {
    let Some(mut s3) = S3::new("headers") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    f.write("src/page.html", "<p>hi</p>");
    f.write("src/photo.JPG", "jpeg");
    f.write("src/notes", "no extension");
    s3.sync(&f, &["--s3-storage-class", "STANDARD"]).expect(0);
    let puts: Vec<String> = relay
        .heads()
        .into_iter()
        .filter(|h| h.starts_with("PUT ") && !h.contains(".syncease"))
        .map(|h| h.to_ascii_lowercase())
        .collect();
    assert_eq!(puts.len(), 3, "{puts:?}");
    for (name, kind) in [
        ("page.html", "text/html"),
        ("photo.jpg", "image/jpeg"),
        ("notes", "application/octet-stream"),
    ] {
        let head = puts.iter().find(|h| h.contains(name)).unwrap();
        assert!(head.contains(&format!("content-type: {kind}")), "{head}");
        assert!(head.contains("x-amz-storage-class: standard"), "{head}");
    }
    // Within the bucket, a copy on the server would keep the source object's class (and
    // encryption): with either asked for, the objects are uploaded again instead.
    let mut cmd = s3.command();
    cmd.args(["--s3-storage-class", "STANDARD"])
        .arg(s3.url())
        .arg(format!("{}-copy", s3.url()));
    Run::from(cmd.output().unwrap()).expect(0);
    let copies: Vec<String> = relay
        .heads()
        .into_iter()
        .filter(|h| h.starts_with("PUT ") && !h.contains(".syncease"))
        .map(|h| h.to_ascii_lowercase())
        .collect();
    assert_eq!(copies.len(), 3, "{copies:?}");
    for head in &copies {
        assert!(!head.contains("x-amz-copy-source"), "{head}");
        assert!(head.contains("x-amz-storage-class: standard"), "{head}");
    }
    // Encryption is asked of the server with every upload (Garage refuses SSE-S3 and says so).
    f.write("src/new.txt", "new");
    let run = s3.sync(&f, &["--s3-sse", "AES256"]);
    let put = relay
        .heads()
        .into_iter()
        .find(|h| h.starts_with("PUT ") && h.contains("new.txt"))
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        put.contains("x-amz-server-side-encryption: aes256"),
        "{put}"
    );
    if run.code != 0 {
        assert!(run.stderr.contains("new.txt"), "{run:?}");
    }
    let run = s3.sync(&f, &["--s3-sse", "rot13"]).expect(2);
    assert!(run.stderr.contains("--s3-sse rot13"), "{run:?}");
}

#[test]
fn s3_the_region_of_the_aws_profile_is_used() {
    let Some(mut s3) = S3::new("profile-region") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let config = f.write(
        "aws-config",
        format!(
            "[default]\nregion = nowhere-1\n[profile backup]\nregion = {}\n",
            s3.region
        ),
    );
    let run = |profile: &str| {
        let mut cmd = syncease();
        s3.configure_without_region(&mut cmd);
        cmd.env("AWS_CONFIG_FILE", &config)
            .env("AWS_PROFILE", profile)
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION");
        Run::from(cmd.arg(&f.src).arg(s3.url()).output().unwrap())
    };
    run("backup").expect(0);
    let heads = relay.heads();
    assert!(
        heads
            .iter()
            .any(|h| h.contains(&format!("/{}/s3/aws4_request", s3.region))),
        "{heads:?}"
    );
    // The default profile's region is not the server's: refused, and nothing was written.
    run("default").expect(2);
}

/// Run `cmd`, failing the test if it has not ended after `limit`.
fn within(mut cmd: Command, limit: std::time::Duration) -> (Run, std::time::Duration) {
    let started = std::time::Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {:?}", Run::from(out));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (
        Run::from(child.wait_with_output().unwrap()),
        started.elapsed(),
    )
}

#[test]
fn s3_a_request_left_unanswered_fails_after_the_timeout() {
    let Some(mut s3) = S3::new("timeout") else {
        return;
    };
    let relay = Relay::start(&s3.endpoint);
    s3.endpoint = relay.endpoint.clone();
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    relay.bend(Bend::GoSilent(|line| line.starts_with("PUT ")));
    let mut cmd = s3.command();
    cmd.args(["--timeout", "1", "--json"])
        .arg(&f.src)
        .arg(s3.url());
    let (run, took) = within(cmd, std::time::Duration::from_secs(120));
    let run = run.expect(1);
    assert_eq!(json(&run)["errors"].as_array().unwrap().len(), 1, "{run:?}");
    assert!(run.stderr.contains("a.txt"), "{run:?}");
    // Four attempts of a second each and the back-off between them.
    assert!(took.as_secs() < 60, "{took:?}: {run:?}");
}

#[cfg(feature = "s3")]
#[test]
fn an_s3_endpoint_that_never_answers_is_refused_after_the_connect_timeout() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let endpoint = format!("http://127.0.0.1:{}", crate::relay::silent_port());
    let mut cmd = syncease();
    cmd.env("AWS_ACCESS_KEY_ID", "id")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["--s3-endpoint", &endpoint, "--s3-region", "x"])
        .args(["--contimeout", "1"])
        .arg(&f.src)
        .arg("s3://bucket/p");
    let (run, took) = within(cmd, std::time::Duration::from_secs(60));
    let run = run.expect(2);
    assert!(run.stderr.contains("--contimeout"), "{run:?}");
    assert!(took.as_secs() < 10, "{took:?}");
}

#[cfg(feature = "sftp")]
#[test]
fn an_ssh_host_that_never_answers_is_refused_after_the_connect_timeout() {
    if !need("ssh-keygen", "openssh-client") {
        return;
    }
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let key = f.path("key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let url = format!("sftp://me@127.0.0.1:{}/x", crate::relay::silent_port());
    let mut cmd = syncease();
    cmd.args([
        "--contimeout",
        "1",
        "--known-hosts",
        "/dev/null",
        "--ssh-key",
    ])
    .arg(&key)
    .arg(&f.src)
    .arg(url);
    let (run, took) = within(cmd, std::time::Duration::from_secs(60));
    let run = run.expect(2);
    assert!(run.stderr.contains("--contimeout"), "{run:?}");
    assert!(took.as_secs() < 10, "{took:?}");
}

// --- SFTP ---------------------------------------------------------------------------------

pub(crate) struct Sftp {
    /// sftp://user@127.0.0.1:PORT/ROOT/NAME
    pub(crate) url: String,
    /// The same folder seen locally (the server runs on this machine).
    pub(crate) local: PathBuf,
    pub(crate) key: String,
    pub(crate) known_hosts: String,
}

impl Sftp {
    pub(crate) fn new(test: &str) -> Option<Sftp> {
        let base = server_env("sftp", cfg!(feature = "sftp"), "SYNCEASE_TEST_SFTP_URL")?;
        let name = unique(test);
        Some(Sftp {
            url: format!("{base}/{name}"),
            local: PathBuf::from(server_var("SYNCEASE_TEST_SFTP_ROOT")).join(name),
            key: server_var("SYNCEASE_TEST_SSH_KEY"),
            known_hosts: server_var("SYNCEASE_TEST_KNOWN_HOSTS"),
        })
    }

    pub(crate) fn command(&self) -> Command {
        let mut cmd = syncease();
        cmd.args(["--ssh-key", &self.key, "--known-hosts", &self.known_hosts]);
        cmd
    }

    pub(crate) fn sync(&self, f: &Fixture, extra: &[&str]) -> Run {
        sync_to(self.command(), f, &self.url, extra)
    }
}

/// A manifest as SFTP can carry it: whole-second times, and no time for symlinks.
pub(crate) fn in_seconds(m: Manifest) -> Manifest {
    Manifest(
        m.0.into_iter()
            .map(|(path, mut r)| {
                r.mtime = match r.shape {
                    Shape::Symlink { .. } => (0, 0),
                    _ => (r.mtime.0, 0),
                };
                (path, r)
            })
            .collect(),
    )
}

#[test]
fn sftp_mirror_initial_noop_incremental_and_deletes() {
    let Some(sftp) = Sftp::new("mirror") else {
        return;
    };
    let f = Fixture::new();
    remote_tree(&f);
    chmod(&f.path("src/docs/b.txt"), 0o640);
    chmod(&f.path("src/docs"), 0o750);

    let first = json(&sftp.sync(&f, &["--json"]).expect(0));
    assert_eq!(first["copied"]["files"], 5, "4 files and a link: {first}");
    let src = |f: &Fixture| in_seconds(Manifest::of(&f.src).without(&["docs/deep/c.txt"]));
    let dst = || in_seconds(Manifest::of(&sftp.local).without(&["docs/deep/c.txt"]));
    // Before 1970 has no SFTP v3 form: c.txt is compared apart.
    assert_same(&src(&f), &dst());

    let before = identity(&sftp.local);
    let noop = json(&sftp.sync(&f, &["--json"]).expect(0));
    assert_eq!(noop["copied"]["files"], 0, "{noop}");
    assert_eq!(noop["updated"]["files"], 0, "{noop}");
    assert_eq!(identity(&sftp.local), before, "a no-op run wrote something");

    f.write("src/a.txt", "ALPHA!");
    f.write("src/new.txt", "new");
    fs::remove_dir_all(f.path("src/docs/deep")).unwrap();
    fs::remove_dir(f.path("src/empty")).unwrap();
    f.write("src/empty", "now a file");
    fs::remove_file(f.path("src/docs/link")).unwrap();
    f.mkdir("src/docs/link");
    let inc = json(&sftp.sync(&f, &["--json"]).expect(0));
    assert_eq!(
        inc["updated"]["files"], 2,
        "a.txt and the type change: {inc}"
    );
    assert_eq!(inc["copied"]["files"], 1, "{inc}");
    assert_same(&in_seconds(Manifest::of(&f.src)), &dst());
    assert!(temporaries(&sftp.local).is_empty());
}

#[test]
fn sftp_unknown_or_changed_host_keys_are_refused() {
    let Some(sftp) = Sftp::new("hostkey") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let line = fs::read_to_string(&sftp.known_hosts).unwrap();
    let host = line.split_whitespace().next().unwrap().to_string();

    let with_known_hosts = |file: &Path| {
        let out = syncease()
            .args(["--ssh-key", &sftp.key, "--known-hosts"])
            .arg(file)
            .arg(&f.src)
            .arg(&sftp.url)
            .output()
            .unwrap();
        Run::from(out).expect(2)
    };
    let run = with_known_hosts(&f.write("known_hosts_empty", ""));
    assert!(run.stderr.contains("not in"), "{run:?}");

    let other = f.path("other_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let public = fs::read_to_string(other.with_extension("pub")).unwrap();
    let fields: Vec<&str> = public.split_whitespace().take(2).collect();
    let wrong = f.write(
        "known_hosts_wrong",
        format!("{host} {}\n", fields.join(" ")),
    );
    let run = with_known_hosts(&wrong);
    assert!(run.stderr.contains("does not match"), "{run:?}");
    assert!(!sftp.local.exists(), "nothing may be written");
}

fn hash(path: &Path) -> blake3::Hash {
    blake3::hash(&fs::read(path).unwrap())
}

/// A 16 MiB `src/huge.bin` (made from `seed`) uploaded to `sftp`, then changed in SRC (content
/// and time): its path, and the hash of the copy the server holds.
fn uploaded_then_changed(f: &Fixture, sftp: &Sftp, seed: u64) -> (PathBuf, blake3::Hash) {
    let size = 16 << 20;
    let huge = f.write("src/huge.bin", big_content(seed, 1, size));
    sftp.sync(f, &[]).expect(0);
    let old = hash(&sftp.local.join("huge.bin"));
    f.write("src/huge.bin", big_content(seed, 2, size));
    set_mtime(&huge, 2_000_000, 0);
    (huge, old)
}

#[test]
fn sftp_killed_upload_leaves_old_or_new_and_a_rerun_converges() {
    let Some(sftp) = Sftp::new("killed") else {
        return;
    };
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    let (huge, old) = uploaded_then_changed(&f, &sftp, 5);
    // Killed at the 48th read of the source (chunks of 32 to 255 KiB, at most 32 writes in
    // flight): well into the upload, with data in the temporary and the rest not yet sent.
    let mut args = vec![
        "--ssh-key".as_ref(),
        sftp.key.as_ref(),
        "--known-hosts".as_ref(),
    ];
    args.extend([
        sftp.known_hosts.as_ref(),
        f.src.as_os_str(),
        sftp.url.as_ref(),
    ]);
    let run = killed_at("read", 48, Some(&huge), &args);
    assert_eq!(run.code, -1, "the run ended before the kill point: {run:?}");
    let partial = temporaries(&sftp.local);
    assert!(
        partial
            .iter()
            .any(|t| fs::metadata(sftp.local.join(t)).is_ok_and(|m| m.len() > 0)),
        "a temporary with data: {partial:?}"
    );
    assert_eq!(
        hash(&sftp.local.join("huge.bin")),
        old,
        "the target is untouched"
    );
    sftp.sync(&f, &[]).expect(0);
    assert!(
        temporaries(&sftp.local).is_empty(),
        "the rerun sweeps temporaries"
    );
    assert_same(
        &in_seconds(Manifest::of(&f.src)),
        &in_seconds(Manifest::of(&sftp.local)),
    );
}

#[test]
fn sftp_a_stop_gives_up_an_upload_between_its_chunks() {
    let Some(sftp) = Sftp::new("stopped") else {
        return;
    };
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    let (huge, old) = uploaded_then_changed(&f, &sftp, 6);
    // Stopped as it reads its first chunk; the stop is asked for meanwhile.
    let args = [
        "--json",
        "--ssh-key",
        &sftp.key,
        "--known-hosts",
        &sftp.known_hosts,
    ];
    let args = args
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([f.src.as_os_str(), sftp.url.as_ref()]);
    let mut run = Paused::start("read", &huge, "1", args);
    assert!(run.stopped(), "huge.bin was never read");
    run.signal("-INT");
    run.resume();
    let run = run.finish().expect(130);
    let doc = json(&run);
    assert_eq!(doc["status"], "interrupted", "{run:?}");
    assert_eq!(doc["copied"]["files"], 0, "{run:?}");
    assert_eq!(
        hash(&sftp.local.join("huge.bin")),
        old,
        "the upload was finished"
    );
    assert!(
        temporaries(&sftp.local).is_empty(),
        "its temporary is removed"
    );
    sftp.sync(&f, &[]).expect(0);
    assert_eq!(hash(&sftp.local.join("huge.bin")), hash(&huge));
}

#[test]
fn sftp_a_stop_during_a_checksum_compare_stops_the_hashing_and_uploads_nothing() {
    let Some(sftp) = Sftp::new("stopped-checksum") else {
        return;
    };
    if !need_strace() {
        return;
    }
    let f = Fixture::new();
    // Same size and time, other content: only --checksum tells them apart.
    let big = f.write("src/big", big_content(9, 1, 16 << 20));
    set_mtime(&big, 1_000_000, 0);
    sftp.sync(&f, &[]).expect(0);
    f.write("src/big", big_content(9, 2, 16 << 20));
    set_mtime(&big, 1_000_000, 0);
    let old = hash(&sftp.local.join("big"));
    let args = [
        "--json",
        "--checksum",
        "--ssh-key",
        &sftp.key,
        "--known-hosts",
        &sftp.known_hosts,
    ];
    let args = args
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([f.src.as_os_str(), sftp.url.as_ref()]);
    // Stopped at the first read of the source file; the stop is asked for meanwhile.
    stopped_while_hashing(&big, |_| {}, args);
    assert_eq!(
        hash(&sftp.local.join("big")),
        old,
        "uploaded after the stop"
    );
}

#[test]
fn sftp_backup_dir_keeps_overwritten_and_deleted_files() {
    let Some(sftp) = Sftp::new("backup") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/keep.txt", "v1");
    f.write("src/gone.txt", "doomed");
    sftp.sync(&f, &[]).expect(0);
    let backup = sftp.local.with_extension("old");
    let backup_arg = backup.to_str().unwrap();
    f.write("src/keep.txt", "v2!");
    fs::remove_file(f.path("src/gone.txt")).unwrap();
    sftp.sync(&f, &["--backup-dir", backup_arg]).expect(0);
    f.write("src/keep.txt", "v3!!");
    sftp.sync(&f, &["--backup-dir", backup_arg]).expect(0);
    let read = |name: &str| fs::read_to_string(backup.join(name)).unwrap();
    assert_eq!(read("gone.txt"), "doomed");
    assert_eq!(read("keep.txt"), "v1");
    assert_eq!(read("keep.txt.~1~"), "v2!");
    assert_same(
        &in_seconds(Manifest::of(&f.src)),
        &in_seconds(Manifest::of(&sftp.local)),
    );
    let inside = sftp.local.join("old");
    sftp.sync(&f, &["--backup-dir", inside.to_str().unwrap()])
        .expect(2);
}

#[test]
fn sftp_checksum_reads_back_files_whose_size_and_time_match() {
    let Some(sftp) = Sftp::new("checksum") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/same.txt", "same");
    f.write("src/edited.txt", "before");
    f.write("src/big.bin", big_content(9, 1, (3 << 20) + 5));
    for rel in ["src/same.txt", "src/edited.txt", "src/big.bin"] {
        set_mtime(&f.path(rel), 1_600_000_000, 0);
    }
    sftp.sync(&f, &[]).expect(0);
    // Edited behind our back on the server, size and time kept.
    fs::write(sftp.local.join("edited.txt"), "BEFORE").unwrap();
    let mut big = big_content(9, 1, (3 << 20) + 5);
    big[3 << 20] ^= 1;
    fs::write(sftp.local.join("big.bin"), big).unwrap();
    for rel in ["edited.txt", "big.bin"] {
        set_mtime(&sftp.local.join(rel), 1_600_000_000, 0);
    }
    let quick = json(&sftp.sync(&f, &["--json"]).expect(0));
    assert_eq!(
        quick["unchanged"]["files"], 3,
        "size and time say equal: {quick}"
    );
    let checked = json(&sftp.sync(&f, &["--json", "--checksum"]).expect(0));
    assert_eq!(checked["updated"]["files"], 2, "{checked}");
    assert_eq!(fs::read(sftp.local.join("edited.txt")).unwrap(), b"before");
    assert_eq!(
        fs::read(sftp.local.join("big.bin")).unwrap(),
        big_content(9, 1, (3 << 20) + 5)
    );
    let again = json(&sftp.sync(&f, &["--json", "--checksum"]).expect(0));
    assert_eq!(again["unchanged"]["files"], 3, "{again}");
}

impl Sftp {
    /// The test server's user, port and this test's folder, from its URL
    /// (`sftp://USER@127.0.0.1:PORT/PATH`).
    pub(crate) fn parts(&self) -> (String, u16, String) {
        let rest = self.url.strip_prefix("sftp://").unwrap();
        let (user, rest) = rest.split_once('@').unwrap();
        let (hostport, path) = rest.split_at(rest.find('/').unwrap());
        let port = hostport.rsplit_once(':').unwrap().1.parse().unwrap();
        (user.to_string(), port, path.to_string())
    }
}

/// `ssh-keygen ARGS`, which must succeed.
fn ssh_keygen(args: &[&std::ffi::OsStr]) {
    let status = Command::new("ssh-keygen")
        .arg("-q")
        .args(args)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sftp_host_aliases_come_from_the_ssh_configuration() {
    let Some(sftp) = Sftp::new("alias") else {
        return;
    };
    if !need("ssh", "openssh-client") {
        return;
    }
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let (user, port, path) = sftp.parts();
    let config = f.write(
        "ssh_config",
        format!(
            "Host backup-box\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
             IdentityFile {}\n  UserKnownHostsFile {}\n",
            sftp.key, sftp.known_hosts
        ),
    );
    let run = Run::from(
        syncease()
            .arg("--ssh-config")
            .arg(&config)
            .arg(&f.src)
            .arg(format!("sftp://backup-box{path}"))
            .output()
            .unwrap(),
    );
    run.expect(0);
    assert_eq!(fs::read(sftp.local.join("a.txt")).unwrap(), b"a");

    let jump = f.write(
        "jump_config",
        "Host via-jump\n  HostName 127.0.0.1\n  ProxyJump someone@bastion\n",
    );
    let run = Run::from(
        syncease()
            .arg("--ssh-config")
            .arg(&jump)
            .arg(&f.src)
            .arg("sftp://via-jump/srv/x")
            .output()
            .unwrap(),
    )
    .expect(2);
    assert!(
        run.stderr.contains("ProxyJump 'someone@bastion'"),
        "{run:?}"
    );
}

/// The test sshd behind a [`Relay`]: the relay, the URL of the test's folder through it, and
/// the options that log in there (its host key listed for the relay's port).
pub(crate) fn behind_relay(sftp: &Sftp, f: &Fixture) -> (Relay, String, Vec<std::ffi::OsString>) {
    let (user, port, path) = sftp.parts();
    let relay = Relay::start(&format!("127.0.0.1:{port}"));
    let relay_port = relay.endpoint.rsplit_once(':').unwrap().1.to_string();
    let line = fs::read_to_string(&sftp.known_hosts).unwrap();
    let key: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
    let known = f.write(
        "known_hosts",
        format!("[127.0.0.1]:{relay_port} {}\n", key.join(" ")),
    );
    let url = format!("sftp://{user}@127.0.0.1:{relay_port}{path}");
    let login = [
        "--ssh-key",
        &sftp.key,
        "--ssh-config",
        "/dev/null",
        "--known-hosts",
    ];
    let mut login: Vec<std::ffi::OsString> = login.iter().map(Into::into).collect();
    login.push(known.into());
    (relay, url, login)
}

/// The test sshd behind a [`Relay`]: the relay, and a command to sync to the test's folder
/// through it.
fn relayed(sftp: &Sftp, f: &Fixture) -> (Relay, impl Fn(&[&str]) -> Run) {
    let (relay, url, login) = behind_relay(sftp, f);
    let src = f.src.clone();
    let run = move |extra: &[&str]| {
        let mut cmd = syncease();
        // A cut connection is noticed at once, not after --timeout (300 s): a run that waited
        // for it would miss the deadline.
        cmd.args(&login).args(extra).arg(&src).arg(&url);
        within(cmd, std::time::Duration::from_secs(240)).0
    };
    (relay, run)
}

/// Forty small files in four directories: work for several workers.
fn forty_files(f: &Fixture) {
    for n in 0..40 {
        f.write(format!("src/d{}/f{n}", n % 4), format!("file {n}"));
    }
}

#[test]
fn sftp_workers_spread_over_several_ssh_connections_made_only_when_there_is_work() {
    let Some(sftp) = Sftp::new("connections") else {
        return;
    };
    let f = Fixture::new();
    forty_files(&f);
    let (relay, run) = relayed(&sftp, &f);
    let done = run(&["--sftp-connections", "3", "-j", "6"]).expect(0);
    let made = relay.connections();
    assert!((2..=3).contains(&made), "{made} connections: {done:?}");
    // Nothing to do: listed over the first connection, and no other is made.
    let noop = run(&["--sftp-connections", "3", "-j", "6", "--json"]).expect(0);
    assert_eq!(json(&noop)["unchanged"]["files"], 40, "{noop:?}");
    assert_eq!(relay.connections(), made + 1, "{noop:?}");
    assert_same(
        &in_seconds(Manifest::of(&f.src)),
        &in_seconds(Manifest::of(&sftp.local)),
    );
}

#[test]
fn sftp_connections_the_server_refuses_beyond_the_first_leave_the_work_to_it() {
    let Some(sftp) = Sftp::new("refused-connections") else {
        return;
    };
    let f = Fixture::new();
    forty_files(&f);
    let (relay, run) = relayed(&sftp, &f);
    relay.accept_only(1);
    let done = run(&["--sftp-connections", "4", "-j", "8", "--json"]).expect(0);
    assert_eq!(json(&done)["copied"]["files"], 40, "{done:?}");
    assert_eq!(relay.connections(), 1, "{done:?}");
    assert_same(
        &in_seconds(Manifest::of(&f.src)),
        &in_seconds(Manifest::of(&sftp.local)),
    );
}

/// Sixty files of 256 KiB: enough bytes for a connection to be cut midway.
fn many_files(f: &Fixture) {
    for n in 0..60u64 {
        f.write(
            format!("src/d{}/f{n}.bin", n % 3),
            big_content(n, 1, 256 << 10),
        );
    }
}

#[test]
fn sftp_a_dropped_connection_is_made_again_and_the_files_in_flight_redone() {
    let Some(sftp) = Sftp::new("reconnect") else {
        return;
    };
    let f = Fixture::new();
    many_files(&f);
    let (relay, run) = relayed(&sftp, &f);
    relay.bend(Bend::Cut {
        after: 4 << 20,
        then_refuse: false,
    });
    let done = run(&["--sftp-connections", "2", "-j", "4", "--json"]).expect(0);
    assert_eq!(
        json(&done)["errors"].as_array().unwrap().len(),
        0,
        "{done:?}"
    );
    assert!(relay.cut() > 0, "the cut happened: {done:?}");
    // What the cut uploads left behind is swept by the next run, which has nothing else to do.
    let again = json(&run(&["--json"]).expect(0));
    assert_eq!(again["copied"]["files"], 0, "{again}");
    assert!(temporaries(&sftp.local).is_empty());
    assert_same(
        &in_seconds(Manifest::of(&f.src)),
        &in_seconds(Manifest::of(&sftp.local)),
    );
}

#[test]
fn sftp_a_host_that_stays_gone_stops_the_run_once_and_loses_nothing() {
    let Some(sftp) = Sftp::new("gone") else {
        return;
    };
    let f = Fixture::new();
    many_files(&f);
    let (relay, run) = relayed(&sftp, &f);
    // A first version everywhere, then a second one cut off midway.
    run(&[]).expect(0);
    for n in 0..60u64 {
        let rel = format!("src/d{}/f{n}.bin", n % 3);
        f.write(&rel, big_content(n, 2, 256 << 10));
        // Another second than the first version's, which SFTP's whole seconds could not tell.
        set_mtime(&f.path(&rel), 1_700_000_000, 0);
    }
    relay.bend(Bend::Cut {
        after: 4 << 20,
        then_refuse: true,
    });
    let stopped = run(&["-j", "4", "--sftp-connections", "2"]).expect(1);
    assert!(stopped.stderr.contains("stopped writing"), "{stopped:?}");
    assert!(
        stopped.stderr.contains("3 tries to connect again failed"),
        "{stopped:?}"
    );
    // One error per file in flight at the cut (4 workers), not one per file.
    let errors = stopped
        .stderr
        .lines()
        .filter(|l| l.starts_with("syncease: error: cannot copy"))
        .count();
    assert!((1..=4).contains(&errors), "{stopped:?}");
    // Every file is the first version or the second, whole.
    for n in 0..60u64 {
        let got = fs::read(sftp.local.join(format!("d{}/f{n}.bin", n % 3))).unwrap();
        assert!(
            got == big_content(n, 1, 256 << 10) || got == big_content(n, 2, 256 << 10),
            "f{n} is torn"
        );
    }
}

/// An ssh-agent on a socket in the fixture, stopped when dropped.
struct SshAgent(std::process::Child, PathBuf);

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sftp_logs_in_with_a_key_held_by_ssh_agent() {
    let Some(sftp) = Sftp::new("agent") else {
        return;
    };
    if !need("ssh-agent", "openssh-client") || !need("ssh-add", "openssh-client") {
        return;
    }
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let sock = f.path("agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let agent = SshAgent(child, sock);
    for _ in 0..200 {
        if agent.1.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let added = Command::new("ssh-add")
        .env("SSH_AUTH_SOCK", &agent.1)
        .arg(&sftp.key)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    // No key file anywhere: a home without ~/.ssh, and no configuration.
    let home = f.mkdir("home");
    let login = |sock: Option<&Path>| {
        let mut cmd = syncease();
        cmd.env("HOME", &home).env_remove("SSH_AUTH_SOCK").args([
            "--ssh-config",
            "/dev/null",
            "--known-hosts",
            &sftp.known_hosts,
        ]);
        if let Some(sock) = sock {
            cmd.env("SSH_AUTH_SOCK", sock);
        }
        Run::from(cmd.arg(&f.src).arg(&sftp.url).output().unwrap())
    };
    login(Some(&agent.1)).expect(0);
    assert_eq!(fs::read(sftp.local.join("a.txt")).unwrap(), b"a");
    let run = login(None).expect(2);
    assert!(run.stderr.contains("no key to log in with"), "{run:?}");
}

#[test]
fn sftp_an_encrypted_key_is_opened_with_ssh_askpass_and_failures_say_what_was_tried() {
    let Some(sftp) = Sftp::new("passphrase") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let locked = f.path("locked_key");
    fs::copy(&sftp.key, &locked).unwrap();
    chmod(&locked, 0o600);
    ssh_keygen(&[
        "-p".as_ref(),
        "-P".as_ref(),
        "".as_ref(),
        "-N".as_ref(),
        "correct horse".as_ref(),
        "-f".as_ref(),
        locked.as_os_str(),
    ]);
    let askpass = |name: &str, answer: &str| {
        let text = f.write(
            format!("{name}.txt"),
            format!("#!/bin/sh\necho '{answer}'\n"),
        );
        let script = f.path(name);
        install_executable(&text, &script);
        script
    };
    let login = |key: &Path, askpass: Option<&Path>| {
        let mut cmd = syncease();
        cmd.env_remove("SSH_ASKPASS")
            .env_remove("SSH_AUTH_SOCK")
            .args([
                "--ssh-config",
                "/dev/null",
                "--known-hosts",
                &sftp.known_hosts,
            ])
            .arg("--ssh-key")
            .arg(key)
            .stdin(Stdio::null());
        if let Some(program) = askpass {
            cmd.env("SSH_ASKPASS", program)
                .env("SSH_ASKPASS_REQUIRE", "force");
        }
        Run::from(cmd.arg(&f.src).arg(&sftp.url).output().unwrap())
    };
    login(&locked, Some(&askpass("right", "correct horse"))).expect(0);
    assert_eq!(fs::read(sftp.local.join("a.txt")).unwrap(), b"a");

    let run = login(&locked, None).expect(2);
    assert!(
        run.stderr.contains("locked_key") && run.stderr.contains("encrypted"),
        "{run:?}"
    );
    let run = login(&locked, Some(&askpass("wrong", "battery staple"))).expect(2);
    assert!(run.stderr.contains("cannot decrypt"), "{run:?}");
    let stranger = f.path("stranger_key");
    ssh_keygen(&[
        "-t".as_ref(),
        "ed25519".as_ref(),
        "-N".as_ref(),
        "".as_ref(),
        "-f".as_ref(),
        stranger.as_os_str(),
    ]);
    let run = login(&stranger, None).expect(2);
    assert!(
        run.stderr.contains("refused the login")
            && run.stderr.contains("stranger_key' (not accepted)"),
        "{run:?}"
    );
}

// --- Without servers ----------------------------------------------------------------------

#[test]
fn malformed_remote_urls_are_usage_errors() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    for (url, says) in [
        ("sftp://host-without-path", "expected sftp://"),
        ("sftp://h:99999/x", "bad port"),
        ("s3:///no-bucket", "no bucket"),
        ("s3://b/a/../c", "not allowed"),
        ("ftp://h/x", "ftp:// is not a place"),
        ("gs:///x", "no bucket"),
        ("webdav://h:0/x", "expected webdav://"),
        ("garage:backups", "NAME:PATH"),
        ("me@host:backups", "HOST:PATH"),
    ] {
        let run = f.run([f.src.as_os_str(), url.as_ref()]).expect(2);
        assert!(run.stderr.contains(says), "{url}: {run:?}");
    }
}

#[test]
fn a_remote_name_is_never_taken_for_a_local_folder() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let run = Run::from(
        syncease()
            .current_dir(f.path(""))
            .args(["src", "garage:backups"])
            .output()
            .unwrap(),
    )
    .expect(2);
    assert!(run.stderr.contains("./garage:backups"), "{run:?}");
    assert!(!f.path("garage:backups").exists());
    // Written as a path, it is one.
    Run::from(
        syncease()
            .current_dir(f.path(""))
            .args(["src", "./garage:backups"])
            .output()
            .unwrap(),
    )
    .expect(0);
    assert_eq!(fs::read(f.path("garage:backups/a.txt")).unwrap(), b"a");
}

#[cfg(not(feature = "s3"))]
#[test]
fn a_build_without_s3_names_the_feature_to_enable() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let run = f
        .run([f.src.as_os_str(), "s3://bucket/x".as_ref()])
        .expect(2);
    assert!(run.stderr.contains("--features s3"), "{run:?}");
}

#[cfg(not(all(feature = "gcs", feature = "azure", feature = "webdav")))]
#[test]
fn a_build_without_a_store_names_the_feature_to_enable() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    for (url, feature, built) in [
        ("gs://bucket/x", "gcs", cfg!(feature = "gcs")),
        ("az://container/x", "azure", cfg!(feature = "azure")),
        ("webdav://host/x", "webdav", cfg!(feature = "webdav")),
    ] {
        if built {
            continue;
        }
        let run = f.run([f.src.as_os_str(), url.as_ref()]).expect(2);
        assert!(
            run.stderr.contains(&format!("--features {feature}")),
            "{run:?}"
        );
        // Nothing was made of it here.
        assert!(!f.path(url.split('/').next().unwrap()).exists(), "{url}");
    }
}

#[cfg(not(feature = "sftp"))]
#[test]
fn a_build_without_sftp_names_the_feature_to_enable() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let run = f
        .run([f.src.as_os_str(), "sftp://me@host/x".as_ref()])
        .expect(2);
    assert!(run.stderr.contains("--features sftp"), "{run:?}");
}

/// A loopback port nothing listens on (bound, then released).
pub(crate) fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[cfg(feature = "s3")]
#[test]
fn an_unreachable_s3_endpoint_is_refused_before_anything() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let run = Run::from(
        syncease()
            .env("AWS_ACCESS_KEY_ID", "id")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["--json", "--s3-endpoint", &endpoint, "--s3-region", "x"])
            .arg(&f.src)
            .arg("s3://bucket/p")
            .output()
            .unwrap(),
    )
    .expect(2);
    assert_eq!(json(&run)["status"], "refused", "{run:?}");
    assert!(run.stdout.contains("s3://bucket/p"), "{run:?}");
}

#[cfg(feature = "sftp")]
#[test]
fn an_unreachable_or_unusable_sftp_host_is_refused() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let url = format!("sftp://me@127.0.0.1:{}/x", closed_port());
    let with_key = |key: &Path| {
        let out = syncease()
            .arg("--ssh-key")
            .arg(key)
            .arg("--known-hosts")
            .arg(f.path("known_hosts"))
            .arg(&f.src)
            .arg(&url)
            .output()
            .unwrap();
        Run::from(out).expect(2)
    };
    let run = with_key(&f.path("no-such-key"));
    assert!(run.stderr.contains("cannot load key"), "{run:?}");
    let key = f.path("key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        not_tested("needs ssh-keygen (package openssh-client)");
        return;
    }
    let run = with_key(&key);
    assert!(run.stderr.contains("cannot connect"), "{run:?}");
}

/// A source tree with a name that is not UTF-8 (a file, and a directory with a file in it).
fn tree_with_a_latin1_name(f: &Fixture) {
    f.write("src/plain.txt", "plain");
    fs::write(f.src.join(bytes_path(b"caf\xe9.txt")), "latin-1").unwrap();
    let dir = f.src.join(bytes_path(b"r\xe9sum\xe9s"));
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("cv.txt"), "cv").unwrap();
}

#[test]
fn sftp_names_that_are_not_utf8_are_skipped_with_a_warning_and_deletions_go_ahead() {
    let Some(sftp) = Sftp::new("latin1") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/plain.txt", "plain");
    sftp.sync(&f, &[]).expect(0);
    fs::write(sftp.local.join("extra.txt"), "only there").unwrap();
    tree_with_a_latin1_name(&f);
    let run = sftp.sync(&f, &[]).expect(0);
    assert!(
        run.stderr
            .contains("caf\\xe9.txt': the destination cannot store"),
        "{run:?}"
    );
    assert!(run.stderr.contains("r\\xe9sum\\xe9s/cv.txt'"), "{run:?}");
    assert!(run.stderr.contains("3 skipped"), "{run:?}");
    assert!(!sftp.local.join("extra.txt").exists(), "deletions go ahead");
    assert!(sftp.local.join("plain.txt").exists());
}

#[test]
fn s3_names_that_are_not_utf8_are_skipped_with_a_warning() {
    let Some(s3) = S3::new("latin1") else { return };
    let f = Fixture::new();
    tree_with_a_latin1_name(&f);
    let run = s3.sync(&f, &[]).expect(0);
    assert!(
        run.stderr
            .contains("caf\\xe9.txt': the destination cannot store"),
        "{run:?}"
    );
    assert!(run.stderr.contains("3 skipped"), "{run:?}");
    let listed: Vec<_> = s3.listing(&s3.prefix).into_iter().map(|(p, _)| p).collect();
    assert_eq!(listed, ["plain.txt"]);
}

#[test]
fn sftp_a_directory_that_keeps_excluded_entries_is_a_warning() {
    let Some(sftp) = Sftp::new("notempty") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/keep.txt", "k");
    f.write("src/old/a.txt", "a");
    sftp.sync(&f, &[]).expect(0);
    fs::write(sftp.local.join("old/notes.keep"), "excluded").unwrap();
    fs::remove_dir_all(f.path("src/old")).unwrap();
    let run = sftp.sync(&f, &["--exclude", "*.keep"]).expect(0);
    assert!(
        run.stderr.contains("is not empty, so it was not deleted"),
        "{run:?}"
    );
    assert!(sftp.local.join("old/notes.keep").exists());
    assert!(!sftp.local.join("old/a.txt").exists());
}
