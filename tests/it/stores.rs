//! The object-store engine beyond S3, against servers on loopback (see [`crate::servers`]):
//! rclone's WebDAV server and Azurite (Azure Blob Storage). Where a server cannot be had the
//! test says so and is not run — unless `CI=true`, where that is a failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::relay::{Bend, Relay};
use crate::remote::{
    change_remote_tree, json, remote_tree, server_env, server_var, sync_to, unique,
};
use crate::restore::{files, restore};
use crate::util::*;

/// This test's folder on the WebDAV server.
struct Webdav {
    /// `webdav://USER@127.0.0.1:PORT`.
    base: String,
    password: String,
    /// The folder the server serves, as a path here.
    root: PathBuf,
    name: String,
}

impl Webdav {
    fn new(test: &str) -> Option<Webdav> {
        let base = server_env(
            "webdav",
            cfg!(feature = "webdav"),
            "SYNCEASE_TEST_WEBDAV_URL",
        )?;
        Some(Webdav {
            base,
            password: server_var("SYNCEASE_TEST_WEBDAV_PASSWORD"),
            root: PathBuf::from(server_var("SYNCEASE_TEST_WEBDAV_ROOT")),
            name: unique(test),
        })
    }

    fn url(&self) -> String {
        format!("{}/{}", self.base, self.name)
    }

    /// The same folder reached through `relay`.
    fn via(&self, relay: &Relay) -> String {
        let port = relay.endpoint.rsplit_once(':').unwrap().1;
        let user = self.base.split('@').next().unwrap();
        format!("{user}@127.0.0.1:{port}/{}", self.name)
    }

    /// The folder as the server keeps it.
    fn served(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    /// syncease with the password from the environment and no netrc file.
    fn command(&self) -> Command {
        let mut cmd = syncease();
        cmd.env("SYNCEASE_WEBDAV_PASSWORD", &self.password)
            .env("NETRC", "/nonexistent/netrc")
            .env_remove("SYNCEASE_WEBDAV_TOKEN");
        cmd
    }

    fn sync(&self, f: &Fixture, extra: &[&str]) -> Run {
        sync_to(self.command(), f, &self.url(), extra)
    }
}

/// The files below `root` and their contents, without syncease's manifest (times are the
/// server's own on a WebDAV server's disk).
fn contents(root: &Path) -> Vec<(String, Vec<u8>)> {
    files(root)
        .into_iter()
        .filter(|(rel, ..)| !rel.starts_with(".syncease/"))
        .map(|(rel, data, _)| (rel, data))
        .collect()
}

/// [`files`] of a source tree made by [`remote_tree`], without the symlink no store keeps.
fn stored(root: &Path) -> Vec<(String, Vec<u8>, (i64, i64))> {
    let mut all = files(root);
    all.retain(|(rel, ..)| rel != "docs/link");
    all
}

#[test]
fn webdav_mirror_and_restore_are_exact_and_a_noop_writes_nothing() {
    let Some(dav) = Webdav::new("dav-mirror") else {
        return;
    };
    let host = dav.base.rsplit_once('@').unwrap().1;
    let relay = Relay::start(host);
    let url = dav.via(&relay);
    let f = Fixture::new();
    remote_tree(&f);
    let first = json(&sync_to(dav.command(), &f, &url, &["--json"]).expect(0));
    assert_eq!(first["copied"]["files"], 4, "{first}");
    assert_eq!(first["skipped"], 1, "the symlink: {first}");
    let sent = |f: &Fixture| {
        let mut want = stored(&f.src);
        want.iter_mut().for_each(|e| e.2 = (0, 0));
        want.into_iter()
            .map(|(rel, data, _)| (rel, data))
            .collect::<Vec<_>>()
    };
    assert_eq!(contents(&dav.served()), sent(&f));
    assert!(
        dav.served().join("empty").is_dir(),
        "empty folders are made"
    );
    assert_eq!(temporaries(&dav.served()), Vec::<PathBuf>::new());

    // No-op: the manifest gives every time; nothing is written.
    let before = identity(&dav.served());
    relay.take();
    let noop = json(&sync_to(dav.command(), &f, &url, &["--json"]).expect(0));
    assert_eq!(noop["unchanged"]["files"], 4, "{noop}");
    assert_eq!(noop["copied"]["files"], 0, "{noop}");
    let requests = relay.take();
    assert!(
        requests.contains_key("PROPFIND"),
        "the relay sees WebDAV: {requests:?}"
    );
    for write in ["PUT", "MOVE", "COPY", "DELETE", "MKCOL", "PROPPATCH"] {
        assert_eq!(
            requests.get(write),
            None,
            "{write} in a no-op: {requests:?}"
        );
    }
    assert_eq!(identity(&dav.served()), before, "a no-op wrote something");

    // Incremental: a same-size change with a new time, an addition, a subtree gone, a folder
    // turned into a file.
    change_remote_tree(&f);
    let inc = json(&dav.sync(&f, &["--json"]).expect(0));
    assert_eq!(
        inc["updated"]["files"], 2,
        "a.txt and the type change: {inc}"
    );
    assert_eq!(inc["copied"]["files"], 1, "{inc}");
    assert_eq!(contents(&dav.served()), sent(&f));

    // Restore: bytes and times (to the nanosecond, from the manifest) as the source has them.
    let restored = f.path("restored");
    let run = json(&restore(dav.command(), &dav.url(), &restored, &["--json"]).expect(0));
    assert_eq!(run["copied"]["files"], 5, "{run}");
    assert_eq!(files(&restored), stored(&f.src));
    let again = identity(&restored);
    let noop = json(&restore(dav.command(), &dav.url(), &restored, &["--json"]).expect(0));
    assert_eq!(noop["unchanged"]["files"], 5, "{noop}");
    assert_eq!(
        identity(&restored),
        again,
        "a no-op restore wrote something"
    );
}

#[test]
fn webdav_a_folder_whose_listing_fails_withholds_every_deletion() {
    let Some(dav) = Webdav::new("dav-unlisted") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    f.write("src/unlisted-folder/inside.txt", "inside");
    f.write("src/unlisted-folder/deeper/more.txt", "more");
    dav.sync(&f, &[]).expect(0);
    let restored = f.path("restored");
    restore(dav.command(), &dav.url(), &restored, &[]).expect(0);
    f.write("restored/extra.txt", "not on the server");
    let host = dav.base.rsplit_once('@').unwrap().1;
    let relay = Relay::start(host);
    // Every listing of that folder fails, retries included.
    relay.bend(Bend::Fail(|line| {
        line.starts_with("PROPFIND") && line.contains("/unlisted-folder/")
    }));
    let run = restore(dav.command(), &dav.via(&relay), &restored, &[]);
    assert_ne!(run.code, 0, "{run:?}");
    // A listing without the folder would have deleted all of it here.
    for kept in [
        "unlisted-folder/inside.txt",
        "unlisted-folder/deeper/more.txt",
        "extra.txt",
    ] {
        assert!(restored.join(kept).exists(), "{kept}: {run:?}");
    }
}

#[test]
fn webdav_a_folder_still_holding_an_excluded_file_is_not_deleted() {
    let Some(dav) = Webdav::new("dav-excluded") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    f.write("src/logs/today.txt", "t");
    dav.sync(&f, &[]).expect(0);
    // Written on the server by someone else, and excluded from the mirror.
    fs::write(dav.served().join("logs/keep.log"), "precious").unwrap();
    fs::remove_dir_all(f.path("src/logs")).unwrap();
    let run = dav.sync(&f, &["--exclude", "*.log"]).expect(0);
    // A DELETE of the folder would have taken the excluded file with it.
    assert_eq!(
        fs::read(dav.served().join("logs/keep.log")).unwrap(),
        b"precious",
        "{run:?}"
    );
    assert!(!dav.served().join("logs/today.txt").exists());
    assert!(run.stderr.contains("not empty"), "{run:?}");
}

#[test]
fn webdav_a_file_turned_into_a_folder_during_the_run_is_not_deleted_with_its_contents() {
    let Some(dav) = Webdav::new("dav-swap") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    f.write("src/victim.txt", "to be deleted");
    dav.sync(&f, &[]).expect(0);
    fs::remove_file(f.path("src/victim.txt")).unwrap();
    // The upload is held back for seconds; deletions come after it.
    f.write("src/slow.bin", vec![7u8; 256 << 10]);
    let host = dav.base.rsplit_once('@').unwrap().1;
    let relay = Relay::start(host);
    let mut cmd = dav.command();
    cmd.args(["--bwlimit", "64K"])
        .arg(&f.src)
        .arg(dav.via(&relay))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Once listed (the manifest is read after both listings), the file becomes a folder with
    // something in it.
    let started = std::time::Instant::now();
    while !relay
        .heads()
        .iter()
        .any(|h| h.starts_with("GET ") && h.contains(".syncease/manifest"))
    {
        assert!(started.elapsed() < Duration::from_secs(60), "never listed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let victim = dav.served().join("victim.txt");
    fs::remove_file(&victim).unwrap();
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("precious"), "precious").unwrap();
    let run = Run::from(child.wait_with_output().unwrap()).expect(1);
    assert_eq!(
        fs::read(victim.join("precious")).unwrap(),
        b"precious",
        "{run:?}"
    );
    assert!(run.stderr.contains("is a folder now"), "{run:?}");
    assert_eq!(
        fs::read(dav.served().join("slow.bin")).unwrap().len(),
        256 << 10
    );
}

#[test]
fn webdav_an_upload_cut_short_never_leaves_a_partial_file_at_its_name() {
    let Some(dav) = Webdav::new("dav-cut") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/big.bin", big_content(1, 1, 4 << 20));
    dav.sync(&f, &[]).expect(0);
    let host = dav.base.rsplit_once('@').unwrap().1;
    let relay = Relay::start(host);
    f.write("src/big.bin", big_content(1, 2, 6 << 20));
    // Cut two MiB into the new upload, and the host stays gone.
    relay.bend(Bend::Cut {
        after: 2 << 20,
        then_refuse: true,
    });
    let mut cmd = dav.command();
    cmd.args(["--timeout", "20", "--contimeout", "5"]);
    let run = sync_to(cmd, &f, &dav.via(&relay), &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert_eq!(
        fs::read(dav.served().join("big.bin")).unwrap(),
        big_content(1, 1, 4 << 20),
        "the old file stays whole: {run:?}"
    );
    // With the host back, the next run puts the new file in place and sweeps what was left.
    dav.sync(&f, &[]).expect(0);
    assert_eq!(
        fs::read(dav.served().join("big.bin")).unwrap(),
        big_content(1, 2, 6 << 20)
    );
    assert_eq!(temporaries(&dav.served()), Vec::<PathBuf>::new());
}

#[test]
fn webdav_a_file_larger_than_memory_allows_fails_alone_and_nothing_else() {
    let Some(dav) = Webdav::new("dav-huge") else {
        return;
    };
    if !need("prlimit", "util-linux") {
        return;
    }
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    // Sparse: 6 GiB that cost nothing, against 4 GiB of address space.
    fs::File::create(f.path("src/huge.bin"))
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={}", 4u64 << 30))
        .arg("--")
        .arg(dav.command().get_program())
        .envs(dav.command().get_envs().filter_map(|(k, v)| Some((k, v?))));
    let run = sync_to(cmd, &f, &dav.url(), &[]).expect(1);
    assert!(run.stderr.contains("held in memory"), "{run:?}");
    assert!(run.stderr.contains("huge.bin"), "{run:?}");
    assert_eq!(fs::read(dav.served().join("a.txt")).unwrap(), b"a");
    assert!(!dav.served().join("huge.bin").exists());
    assert_eq!(temporaries(&dav.served()), Vec::<PathBuf>::new());
}

#[test]
fn webdav_checksum_reads_back_and_finds_a_same_size_change() {
    let Some(dav) = Webdav::new("dav-checksum") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/a.txt", "alpha");
    f.write("src/b.txt", "bravo");
    set_mtime(&f.path("src/a.txt"), 1_600_000_000, 0);
    dav.sync(&f, &[]).expect(0);
    // Changed on the server, same size, its time put back: the listing cannot tell.
    let served = dav.served().join("a.txt");
    let mtime = fs::metadata(&served).unwrap().modified().unwrap();
    fs::write(&served, "ALPHA").unwrap();
    fs::File::options()
        .write(true)
        .open(&served)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let quick = json(&dav.sync(&f, &["--json"]).expect(0));
    assert_eq!(quick["unchanged"]["files"], 2, "{quick}");
    let checked = json(&dav.sync(&f, &["--json", "--checksum"]).expect(0));
    assert_eq!(checked["updated"]["files"], 1, "{checked}");
    assert_eq!(fs::read(&served).unwrap(), b"alpha");
}

#[test]
fn webdav_logins_come_from_the_environment_or_netrc_and_a_refusal_says_so() {
    let Some(dav) = Webdav::new("dav-login") else {
        return;
    };
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let mut wrong = dav.command();
    wrong.env("SYNCEASE_WEBDAV_PASSWORD", "not-the-password");
    let refused = sync_to(wrong, &f, &dav.url(), &[]).expect(2);
    assert!(refused.stderr.contains(&dav.url()), "{refused:?}");
    assert!(refused.stderr.contains("401"), "{refused:?}");
    assert!(!dav.served().exists(), "{refused:?}");

    let netrc = f.write(
        "netrc",
        format!(
            "machine 127.0.0.1\n  login syncease\n  password {}\n",
            dav.password
        ),
    );
    let mut cmd = syncease();
    cmd.env("NETRC", &netrc)
        .env_remove("SYNCEASE_WEBDAV_PASSWORD")
        .env_remove("SYNCEASE_WEBDAV_TOKEN");
    let without_user = dav.url().replace("syncease@", "");
    sync_to(cmd, &f, &without_user, &[]).expect(0);
    assert_eq!(fs::read(dav.served().join("a.txt")).unwrap(), b"a");
}

/// This test's prefix in the Azurite container.
struct Azure {
    connection: String,
    container: String,
    prefix: String,
}

impl Azure {
    fn new(test: &str) -> Option<Azure> {
        let connection = server_env(
            "azure",
            cfg!(feature = "azure"),
            "SYNCEASE_TEST_AZURE_CONNECTION_STRING",
        )?;
        Some(Azure {
            connection,
            container: server_var("SYNCEASE_TEST_AZURE_CONTAINER"),
            prefix: unique(test),
        })
    }

    fn url(&self) -> String {
        format!("az://{}/{}", self.container, self.prefix)
    }

    fn command(&self) -> Command {
        let mut cmd = syncease();
        cmd.env("AZURE_STORAGE_CONNECTION_STRING", &self.connection);
        cmd
    }
}

#[test]
fn azure_mirror_and_restore_are_exact_and_a_noop_uploads_nothing() {
    let Some(az) = Azure::new("az-mirror") else {
        return;
    };
    let f = Fixture::new();
    remote_tree(&f);
    let first = json(&sync_to(az.command(), &f, &az.url(), &["--json"]).expect(0));
    assert_eq!(first["copied"]["files"], 4, "{first}");
    for extra in [&["--json"][..], &["--json", "--checksum"]] {
        let noop = json(&sync_to(az.command(), &f, &az.url(), extra).expect(0));
        assert_eq!(noop["unchanged"]["files"], 4, "{extra:?}: {noop}");
        assert_eq!(noop["copied"]["bytes"], 0, "{extra:?}: {noop}");
    }
    f.write("src/a.txt", "ALPHA");
    set_mtime(&f.path("src/a.txt"), 1_600_000_001, 0);
    fs::remove_dir_all(f.path("src/docs/deep")).unwrap();
    let inc = json(&sync_to(az.command(), &f, &az.url(), &["--json"]).expect(0));
    assert_eq!(inc["updated"]["files"], 1, "{inc}");
    assert_eq!(inc["deleted"], 2, "c.txt and its folder: {inc}");

    let restored = f.path("restored");
    let run = json(&restore(az.command(), &az.url(), &restored, &["--json"]).expect(0));
    assert_eq!(run["copied"]["files"], 3, "{run}");
    assert_eq!(files(&restored), stored(&f.src), "bytes and times");
    assert!(restored.join("empty").is_dir());
}

#[cfg(feature = "azure")]
#[test]
fn azure_without_an_account_names_the_variables_to_set() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let mut cmd = syncease();
    for var in [
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    let run = sync_to(cmd, &f, "az://container/x", &[]).expect(2);
    assert!(run.stderr.contains("AZURE_STORAGE_ACCOUNT"), "{run:?}");
}

#[cfg(feature = "webdav")]
#[test]
fn s3_options_given_for_another_store_are_refused() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let run = f
        .run([
            "--s3-storage-class".as_ref(),
            "GLACIER".as_ref(),
            f.src.as_os_str(),
            "webdav://127.0.0.1:9/x".as_ref(),
        ])
        .expect(2);
    assert!(run.stderr.contains("applies to s3:// only"), "{run:?}");
}

#[cfg(all(feature = "gcs", feature = "azure", feature = "webdav"))]
#[test]
fn a_store_that_cannot_be_reached_is_refused_before_anything() {
    let f = Fixture::new();
    f.write("src/a.txt", "a");
    let port = crate::remote::closed_port();
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=AAAA;\
         BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    );
    for (url, var, value) in [
        (
            "gs://bucket/x".to_string(),
            "STORAGE_EMULATOR_HOST",
            format!("127.0.0.1:{port}"),
        ),
        (
            "az://container/x".to_string(),
            "AZURE_STORAGE_CONNECTION_STRING",
            connection,
        ),
        (
            format!("webdav://127.0.0.1:{port}/x"),
            "SYNCEASE_WEBDAV_PASSWORD",
            "x".to_string(),
        ),
    ] {
        let mut cmd = syncease();
        cmd.env(var, value)
            .env("NETRC", "/nonexistent/netrc")
            .args(["--contimeout", "20"]);
        let run = sync_to(cmd, &f, &url, &[]).expect(2);
        assert!(run.stderr.contains("refusing to sync"), "{url}: {run:?}");
        assert!(run.stderr.contains(&url), "{url}: {run:?}");
    }
}

/// A process of this test's, stopped (and waited for) when dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn webdav_on_a_server_that_ignores_case_names_one_in_case_are_one_error_and_lose_nothing() {
    use crate::util::{Fs, Mounted};
    let f = Fixture::new();
    if !cfg!(feature = "webdav") {
        not_tested("built without the webdav feature (--all-features)");
        return;
    }
    if !need("rclone", "rclone") {
        return;
    }
    // exFAT ignores case; rclone's server, told so, looks names up that way too.
    let Some(mount) = Mounted::new(&f, Fs::Exfat) else {
        return;
    };
    let port = crate::remote::closed_port();
    let server = Command::new("rclone")
        .args([
            "serve",
            "webdav",
            "--config",
            "/dev/null",
            "--vfs-case-insensitive",
        ])
        .args(["--dir-cache-time", "0s", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(mount.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Stopped(server);
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no WebDAV server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    f.write("src/A.txt", "upper");
    f.write("src/a.txt", "lower");
    f.write("src/keep.txt", "keep");
    let url = format!("webdav://127.0.0.1:{port}/m");
    let sync = || {
        let mut cmd = syncease();
        cmd.env("NETRC", "/nonexistent/netrc")
            .env_remove("SYNCEASE_WEBDAV_PASSWORD");
        sync_to(cmd, &f, &url, &["--json"])
    };
    // A fresh folder (probed with a file of its own) and then one with entries (probed with
    // one of them): the pair is an error each time, and neither overwrites the other.
    for round in 0..2 {
        let run = sync().expect(1);
        assert!(run.stderr.contains("ignores case"), "{round}: {run:?}");
        assert_eq!(json(&run)["errors"].as_array().unwrap().len(), 1, "{run:?}");
        let names: Vec<_> = fs::read_dir(mount.path().join("m"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != ".syncease")
            .collect();
        assert_eq!(names, ["keep.txt"], "{round}: {run:?}");
    }
    // What the server had under that name is kept.
    fs::write(mount.path().join("m/a.TXT"), "theirs").unwrap();
    sync().expect(1);
    assert_eq!(fs::read(mount.path().join("m/a.TXT")).unwrap(), b"theirs");
}
