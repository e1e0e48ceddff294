//! The servers the remote tests run against, on 127.0.0.1 only: Garage for S3, OpenSSH's sshd
//! for SFTP, rclone's WebDAV server, Azurite for Azure Blob Storage.
//!
//! When their environment is already set (`eval "$(tests/servers/start DIR)"`), the tests use
//! those servers. Otherwise the first remote test to ask starts them, once for the whole test
//! binary, with `tests/servers/start DIR --stop-at-eof`: its standard input is a pipe this
//! process holds open, so the servers stop (and their files go) when the test binary ends,
//! however it ends. A server that cannot be had is reported by [`var`], naming why.

use std::collections::HashMap;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// What `tests/servers/start` printed (`export NAME='value'` lines), and what it said on
/// stderr about servers it could not start.
struct Servers {
    env: HashMap<String, String>,
    notes: String,
}

/// The write end of the watcher's pipe, held until the process exits.
static KEEP_ALIVE: Mutex<Option<ChildStdin>> = Mutex::new(None);

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let set: HashMap<String, String> = std::env::vars()
            .filter(|(name, _)| name.starts_with("SYNCEASE_TEST_"))
            .collect();
        if set.contains_key("SYNCEASE_TEST_PIDS") {
            let notes = "servers given by the environment".to_string();
            return Servers { env: set, notes };
        }
        start()
    })
}

fn start() -> Servers {
    let dir = tempfile::Builder::new()
        .prefix("syncease-servers-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/start");
    let child = Command::new("bash")
        .arg(script)
        .arg(&dir)
        .arg("--stop-at-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let notes = format!("cannot run tests/servers/start: {e}");
            return Servers {
                env: HashMap::new(),
                notes,
            };
        }
    };
    *KEEP_ALIVE.lock().unwrap() = child.stdin.take();
    let out = child.wait_with_output().expect("tests/servers/start");
    // What it says about servers it started is of no interest here.
    let mut notes: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|line| !line.contains(" on 127.0.0.1:"))
        .map(|line| format!("{line}\n"))
        .collect();
    if !out.status.success() {
        notes = format!("tests/servers/start failed ({}): {notes}", out.status);
    }
    let env = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.strip_prefix("export ")?.split_once('=')?;
            let value = value.trim_matches('\'');
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    Servers { env, notes }
}

/// A variable of the servers' environment (`SYNCEASE_TEST_S3_ENDPOINT`, ...), or why there is
/// none.
pub fn var(name: &str) -> Result<String, String> {
    let servers = servers();
    servers
        .env
        .get(name)
        .cloned()
        .ok_or_else(|| format!("no {name}: {}", servers.notes.trim().replace('\n', "; ")))
}
