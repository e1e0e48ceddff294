//! Sources and destinations on another machine: object stores (`s3://bucket/prefix`,
//! `gs://bucket/prefix`, `az://container/prefix`), WebDAV servers (`webdav://host/path`) and
//! SSH hosts (`sftp://user@host[:port]/path`).
//!
//! The URL forms are always understood, so a build without a backend can say which cargo
//! feature it lacks instead of writing into a local folder named `s3:`. Each backend lives
//! behind its feature (`s3`, `gcs`, `azure`, `webdav`: one engine over Apache OpenDAL;
//! `sftp`: russh + russh-sftp) and implements both [`Origin`] and [`Destination`]; everything
//! before and after the executor is the same code as for a local folder.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::endpoint::{Destination, Origin};

#[cfg(any(feature = "store", feature = "sftp"))]
mod common;
#[cfg(feature = "sftp")]
pub mod sftp;
#[cfg(feature = "store")]
pub mod store;

/// Connect to the destination `url` names, with the remote options and the backup directory
/// (`--backup-dir`: a prefix or path on the same remote), or say why not (refused before any
/// change).
pub fn open(
    url: &Url,
    options: &Options,
    backup: Option<&Path>,
) -> io::Result<Box<dyn Destination>> {
    let _ = (options, backup);
    match url {
        #[cfg(feature = "store")]
        Url::Store { .. } if url.built() => Ok(Box::new(store::Store::open(url, options, backup)?)),
        #[cfg(feature = "sftp")]
        Url::Sftp { .. } => Ok(Box::new(sftp::Sftp::open(url, options, backup)?)),
        #[allow(unreachable_patterns)]
        other => Err(without(other)),
    }
}

/// Connect to the source `url` names, with the remote options, or say why not (refused before
/// any change).
pub fn open_origin(url: &Url, options: &Options) -> io::Result<Box<dyn Origin>> {
    let _ = options;
    match url {
        #[cfg(feature = "store")]
        Url::Store { .. } if url.built() => Ok(Box::new(store::Store::open(url, options, None)?)),
        #[cfg(feature = "sftp")]
        Url::Sftp { .. } => Ok(Box::new(sftp::Sftp::open(url, options, None)?)),
        #[allow(unreachable_patterns)]
        other => Err(without(other)),
    }
}

/// The error for a URL whose backend this build lacks.
#[allow(dead_code)]
fn without(url: &Url) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "this syncease was built without {0} support (build it with --features {0})",
            url.feature()
        ),
    )
}

/// The services of the object-store engine (see [`Url::Store`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// Amazon S3 and S3-compatible stores.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A WebDAV server (a folder tree over HTTP).
    Webdav,
}

/// The URL schemes of the object-store engine, with the service each names.
const SCHEMES: [(&str, Service); 7] = [
    ("s3", Service::S3),
    ("gs", Service::Gcs),
    ("az", Service::Azure),
    ("webdav", Service::Webdav),
    ("webdavs", Service::Webdav),
    ("http", Service::Webdav),
    ("https", Service::Webdav),
];

impl Service {
    /// The cargo feature that builds this service.
    pub fn feature(self) -> &'static str {
        match self {
            Service::S3 => "s3",
            Service::Gcs => "gcs",
            Service::Azure => "azure",
            Service::Webdav => "webdav",
        }
    }

    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Service::S3 => "S3",
            Service::Gcs => "Google Cloud Storage",
            Service::Azure => "Azure Blob Storage",
            Service::Webdav => "WebDAV",
        }
    }
}

/// The `HOST[:PORT]` of a `[USER@]HOST[:PORT]` (any other bucket name as it is).
pub fn without_user(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// A parsed remote source or destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    /// A place of the object-store engine: `SCHEME://BUCKET/PREFIX`.
    Store {
        /// As written (`s3`, `gs`, `az`, `webdav`, `webdavs`, `http`, `https`): for WebDAV
        /// it says whether TLS is used (`webdavs`, `https`).
        scheme: &'static str,
        service: Service,
        /// The bucket (S3, GCS) or container (Azure); for WebDAV the server's
        /// `[USER@]HOST[:PORT]`.
        bucket: String,
        /// Key prefix (WebDAV: the folder's path) without leading or trailing slash; empty for
        /// the whole bucket (the server's root).
        prefix: String,
    },
    Sftp {
        user: Option<String>,
        host: String,
        /// As written; else the SSH configuration's, else 22.
        port: Option<u16>,
        /// Absolute, or relative to the login directory when the URL path starts with `/~/`.
        path: String,
    },
}

/// `--timeout`'s default: how long one request may go unanswered.
pub const TIMEOUT: Duration = Duration::from_secs(300);
/// `--contimeout`'s default: how long connecting and logging in may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// `--sftp-connections`' default: enough for a distant host's round trips to overlap
/// (one connection's flow window and server process bound its throughput).
pub const SFTP_CONNECTIONS: usize = 4;

/// Settings only remote destinations use.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--timeout`: a request unanswered this long fails (and is retried); `None`: wait forever.
    pub timeout: Option<Duration>,
    /// `--contimeout`: reaching the server and logging in; `None`: wait forever.
    pub connect_timeout: Option<Duration>,
    /// `--s3-endpoint`: an S3-compatible service's address (path-style requests).
    pub s3_endpoint: Option<String>,
    /// `--s3-region`.
    pub s3_region: Option<String>,
    /// `--s3-storage-class`: the class new objects are stored in.
    pub s3_storage_class: Option<String>,
    /// `--s3-sse`: server-side encryption (`AES256`, `aws:kms`, `aws:kms:KEY_ID`).
    pub s3_sse: Option<String>,
    /// `--ssh-key`: the private key to log in with (else ssh-agent and the identity files the
    /// SSH configuration names).
    pub ssh_key: Option<PathBuf>,
    /// `--ssh-config`: the SSH configuration to read (else `ssh`'s own: ~/.ssh/config).
    pub ssh_config: Option<PathBuf>,
    /// `--sftp-connections`: SSH connections to the host, the workers spread over them.
    pub sftp_connections: usize,
    /// `--known-hosts`: the known_hosts file to verify the host key against.
    pub known_hosts: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: Some(TIMEOUT),
            connect_timeout: Some(CONNECT_TIMEOUT),
            s3_endpoint: None,
            s3_region: None,
            s3_storage_class: None,
            s3_sse: None,
            ssh_key: None,
            ssh_config: None,
            sftp_connections: SFTP_CONNECTIONS,
            known_hosts: None,
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Url::Store {
                scheme,
                bucket,
                prefix,
                ..
            } if prefix.is_empty() => write!(f, "{scheme}://{bucket}"),
            Url::Store {
                scheme,
                bucket,
                prefix,
                ..
            } => write!(f, "{scheme}://{bucket}/{prefix}"),
            Url::Sftp {
                user,
                host,
                port,
                path,
            } => {
                write!(f, "sftp://")?;
                if let Some(user) = user {
                    write!(f, "{user}@")?;
                }
                let host = match host.contains(':') {
                    true => format!("[{host}]"),
                    false => host.clone(),
                };
                match port {
                    None => write!(f, "{host}")?,
                    Some(port) => write!(f, "{host}:{port}")?,
                }
                match path.strip_prefix('/') {
                    Some(_) => write!(f, "{path}"),
                    None => write!(f, "/~/{path}"),
                }
            }
        }
    }
}

impl Url {
    /// `Ok(None)` for a local path. Another scheme (`ftp://`) and the `NAME:PATH` form of
    /// rclone remotes and scp hosts are errors: taken as a path, they would quietly become a
    /// local folder of that name. `./NAME:PATH` is the local folder.
    pub fn parse(text: &str) -> Result<Option<Url>, String> {
        const KNOWN: &str = "local folders, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, \
                             az://CONTAINER/PREFIX, webdav[s]://[USER@]HOST[:PORT]/PATH and \
                             sftp://[USER@]HOST[:PORT]/PATH";
        if let Some((scheme, _)) = text.split_once("://") {
            let word = !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b));
            let known = scheme == "sftp" || SCHEMES.iter().any(|(s, _)| *s == scheme);
            if word && !known {
                return Err(format!(
                    "'{text}': {scheme}:// is not a place syncease knows (it syncs {KNOWN})"
                ));
            }
        } else if let Some((name, _)) = text.split_once(':') {
            let word = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b));
            if word {
                return Err(format!(
                    "'{text}' is a remote in rclone's NAME:PATH or scp's HOST:PATH form, which \
                     syncease does not read: write one of {KNOWN}, or './{text}' for a local \
                     folder of that name"
                ));
            }
        }
        for (scheme, service) in SCHEMES {
            let Some(rest) = text
                .strip_prefix(scheme)
                .and_then(|r| r.strip_prefix("://"))
            else {
                continue;
            };
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(match service {
                    Service::Webdav => format!("'{text}': no host ({scheme}://[USER@]HOST/PATH)"),
                    _ => format!("'{text}': no bucket name ({scheme}://BUCKET/PREFIX)"),
                });
            }
            if service == Service::Webdav {
                let user = bucket.rsplit_once('@').map_or("", |(user, _)| user);
                if user.contains(':') {
                    return Err(format!(
                        "'{text}': a password in the URL would show in the process list: \
                         give it in SYNCEASE_WEBDAV_PASSWORD or ~/.netrc"
                    ));
                }
                let host = without_user(bucket);
                let port = match host.strip_prefix('[') {
                    Some(v6) => v6.split_once("]:").map(|(_, port)| port),
                    None => host.split_once(':').map(|(_, port)| port),
                };
                let good = |p: &str| p.parse::<u16>().is_ok_and(|p| p > 0);
                if host.is_empty() || bucket.starts_with('@') || port.is_some_and(|p| !good(p)) {
                    return Err(format!(
                        "'{text}': expected {scheme}://[USER@]HOST[:PORT]/PATH"
                    ));
                }
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
                return Err(format!(
                    "'{text}': '.', '..' and empty parts are not allowed"
                ));
            }
            return Ok(Some(Url::Store {
                scheme,
                service,
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            }));
        }
        let Some(rest) = text.strip_prefix("sftp://") else {
            return Ok(None);
        };
        let usage = || format!("'{text}': expected sftp://[USER@]HOST[:PORT]/PATH");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(usage()),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) if !user.is_empty() => (Some(user.to_string()), hostport),
            Some(_) => return Err(usage()),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(usage)?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("'{text}': bad port '{p}'"))?,
            ),
        };
        if host.is_empty() {
            return Err(usage());
        }
        let path = match path.strip_prefix("/~") {
            Some("") => String::new(),
            Some(rest) if rest.starts_with('/') => rest.trim_matches('/').to_string(),
            _ => match path.trim_end_matches('/') {
                "" => "/".to_string(),
                p => p.to_string(),
            },
        };
        if path.split('/').any(|p| p == "." || p == "..") {
            return Err(format!(
                "'{text}': '.' and '..' are not allowed in the path"
            ));
        }
        Ok(Some(Url::Sftp {
            user,
            host: host.to_string(),
            port,
            path,
        }))
    }

    /// Whether `self` and `other` are places of one remote of which one holds the other (or
    /// they are the same): the same bucket and nested prefixes, the same host and nested
    /// paths. An SFTP path relative to the login directory is compared only with relative
    /// ones.
    pub fn overlaps(&self, other: &Url) -> bool {
        let nests = |a: &str, b: &str| {
            let (a, b) = (a.trim_matches('/'), b.trim_matches('/'));
            let holds = |outer: &str, inner: &str| {
                outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
            };
            holds(a, b) || holds(b, a)
        };
        match (self, other) {
            (Url::Store { prefix, .. }, Url::Store { prefix: p, .. }) => {
                self.overlaps_place(other) && nests(prefix, p)
            }
            (
                Url::Sftp { host, path, .. },
                Url::Sftp {
                    host: h, path: p, ..
                },
            ) => host == h && path.starts_with('/') == p.starts_with('/') && nests(path, p),
            _ => false,
        }
    }

    /// Whether `self` and `other` are in the same bucket of the same service (the same
    /// WebDAV server, whoever logs in to it), whatever their prefixes.
    pub fn overlaps_place(&self, other: &Url) -> bool {
        match (self, other) {
            (
                Url::Store {
                    service, bucket, ..
                },
                Url::Store {
                    service: s,
                    bucket: b,
                    ..
                },
            ) => service == s && without_user(bucket) == without_user(b),
            _ => false,
        }
    }

    /// The cargo feature that builds this backend.
    pub fn feature(&self) -> &'static str {
        match self {
            Url::Store { service, .. } => service.feature(),
            Url::Sftp { .. } => "sftp",
        }
    }

    /// Whether this build has the backend for this URL.
    pub fn built(&self) -> bool {
        match self.feature() {
            "s3" => cfg!(feature = "s3"),
            "gcs" => cfg!(feature = "gcs"),
            "azure" => cfg!(feature = "azure"),
            "webdav" => cfg!(feature = "webdav"),
            _ => cfg!(feature = "sftp"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let store = |scheme: &'static str, service, b: &str, p: &str| {
            Some(Url::Store {
                scheme,
                service,
                bucket: b.into(),
                prefix: p.into(),
            })
        };
        let s3 = |b: &str, p: &str| store("s3", Service::S3, b, p);
        assert_eq!(Url::parse("s3://b").unwrap(), s3("b", ""));
        assert_eq!(Url::parse("s3://b/").unwrap(), s3("b", ""));
        assert_eq!(Url::parse("s3://b/x/y/").unwrap(), s3("b", "x/y"));
        assert!(Url::parse("s3:///x").is_err());
        assert!(Url::parse("s3://b/x/../y").is_err());
        assert_eq!(Url::parse("/tmp/s3").unwrap(), None);
        assert_eq!(Url::parse("./s3:/x").unwrap(), None);
        assert_eq!(Url::parse("./garage:backups").unwrap(), None);
        assert_eq!(Url::parse("/srv/a:b").unwrap(), None);
        assert_eq!(Url::parse("dir/a:b").unwrap(), None);
        for remote in [
            "s3:/x",
            "garage:backups",
            "me@host:path",
            "ftp://h/x",
            "FTP://h/x",
            "gs:///x",
            "az://",
            "webdav://h:0/x",
            "webdavs://h:99999/x",
            "https://@h/x",
            "webdav:///x",
            "webdav://me:secret@h/x",
        ] {
            let e = Url::parse(remote).unwrap_err();
            assert!(e.contains(remote), "{e}");
        }
        let sftp = |u: Option<&str>, h: &str, port: Option<u16>, p: &str| {
            Some(Url::Sftp {
                user: u.map(Into::into),
                host: h.into(),
                port,
                path: p.into(),
            })
        };
        assert_eq!(
            Url::parse("sftp://me@h:2222/srv/x/").unwrap(),
            sftp(Some("me"), "h", Some(2222), "/srv/x")
        );
        assert_eq!(Url::parse("sftp://h/").unwrap(), sftp(None, "h", None, "/"));
        assert_eq!(
            Url::parse("sftp://h/~/b").unwrap(),
            sftp(None, "h", None, "b")
        );
        assert_eq!(
            Url::parse("sftp://[::1]:22/a").unwrap(),
            sftp(None, "::1", Some(22), "/a")
        );
        assert_eq!(
            Url::parse("gs://b/x/").unwrap(),
            store("gs", Service::Gcs, "b", "x")
        );
        assert_eq!(
            Url::parse("az://c").unwrap(),
            store("az", Service::Azure, "c", "")
        );
        assert_eq!(
            Url::parse("webdavs://me@dav.example:8443/backup/").unwrap(),
            store("webdavs", Service::Webdav, "me@dav.example:8443", "backup")
        );
        assert_eq!(
            Url::parse("https://[::1]:8080/a/b").unwrap(),
            store("https", Service::Webdav, "[::1]:8080", "a/b")
        );
        assert_eq!(
            Url::parse("webdav://h").unwrap(),
            store("webdav", Service::Webdav, "h", "")
        );
        assert!(Url::parse("sftp://h").is_err());
        assert!(Url::parse("sftp://h:0/x").is_err());
        assert!(Url::parse("sftp://h:x/x").is_err());
        assert!(Url::parse("sftp://@h/x").is_err());
        let url = |text: &str| Url::parse(text).unwrap().unwrap();
        for (a, b, overlap) in [
            ("s3://b/x", "s3://b/x/y", true),
            ("s3://b", "s3://b/x", true),
            ("s3://b/x", "s3://b/xy", false),
            ("s3://b/x", "s3://c/x", false),
            ("sftp://h/srv", "sftp://me@h:22/srv/a", true),
            ("sftp://h/", "sftp://h/srv", true),
            ("sftp://h/srv/a", "sftp://h/srv/b", false),
            ("sftp://h/~/a", "sftp://h/a", false),
            ("sftp://h/~/", "sftp://h/~/a", true),
            ("sftp://h/a", "sftp://g/a", false),
            ("s3://h/a", "sftp://h/a", false),
            ("s3://b/x", "gs://b/x", false),
            ("webdav://me@h/x", "webdav://you@h/x/y", true),
            ("webdav://h:81/x", "webdav://h:82/x", false),
        ] {
            assert_eq!(url(a).overlaps(&url(b)), overlap, "{a} {b}");
            assert_eq!(url(b).overlaps(&url(a)), overlap, "{b} {a}");
        }
        for text in [
            "s3://b/x/y",
            "sftp://me@h:2222/srv/x",
            "sftp://h/~/b",
            "sftp://[::1]/a",
            "gs://b/x",
            "az://c",
            "webdavs://me@h:8443/x/y",
            "http://h/x",
        ] {
            assert_eq!(Url::parse(text).unwrap().unwrap().to_string(), text);
        }
    }
}
