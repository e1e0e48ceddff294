//! Connecting to a bucket: the service and its credentials from the options and the
//! environment each service's own tools read; timeouts and retries; and the check, before
//! anything else, that the prefix can be listed.

use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use futures_util::StreamExt as _;
use opendal::options::ListOptions;
use opendal::Operator;

use super::{backup_prefix, store_error, Store};
use crate::remote::common;
use crate::remote::{Options, Service, Url};

/// A service's operator, the endpoint that names its place, and for WebDAV how it logs in
/// (said when the server refuses).
struct Built {
    op: Operator,
    endpoint: String,
    login: Option<String>,
    /// Copies between buckets of this S3 service (see [`super::between`]).
    #[cfg(feature = "s3")]
    between: Option<super::between::Between>,
}

impl Built {
    fn new(op: Operator, endpoint: String) -> Built {
        Built {
            op,
            endpoint,
            login: None,
            #[cfg(feature = "s3")]
            between: None,
        }
    }
}

/// A builder's error (a setting the service refuses) as this run's.
fn config_error(e: opendal::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, super::Failure::of(e))
}

/// An environment variable that is set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// S3: the bucket, with the region, credentials' profile, storage class and encryption from
/// the options and the AWS environment (OpenDAL reads the keys, the profile and the instance
/// metadata itself). Also the endpoint, for naming the place.
#[cfg(feature = "s3")]
fn s3(bucket: &str, options: &Options) -> io::Result<Built> {
    let mut builder = opendal::services::S3::default().bucket(bucket).root("/");
    if let Some(endpoint) = &options.s3_endpoint {
        builder = builder.endpoint(endpoint);
    }
    let region = options
        .s3_region
        .clone()
        .or_else(|| var("AWS_REGION"))
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .or_else(profile_region)
        .unwrap_or_else(|| "us-east-1".to_string());
    builder = builder.region(&region);
    if let Some(class) = &options.s3_storage_class {
        builder = builder.default_storage_class(class);
    }
    builder = match options.s3_sse.as_deref() {
        None => builder,
        Some("AES256") => builder.server_side_encryption("AES256"),
        Some("aws:kms") => builder.server_side_encryption_with_aws_managed_kms_key(),
        Some(other) => match other.strip_prefix("aws:kms:") {
            Some(key) => builder.server_side_encryption_with_customer_managed_kms_key(key),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("--s3-sse {other}: expected AES256, aws:kms or aws:kms:KEY_ID"),
                ))
            }
        },
    };
    let no_imds = var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if no_imds {
        builder = builder.disable_ec2_metadata();
    }
    let endpoint = options.s3_endpoint.as_deref().unwrap_or("aws").to_string();
    Ok(Built {
        between: Some(super::between::Between::new(
            bucket,
            &region,
            no_imds,
            options.timeout,
        )),
        ..Built::new(Operator::new(builder).map_err(config_error)?, endpoint)
    })
}

/// Google Cloud Storage: credentials as Google's tools find them
/// (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application-default file, the VM's metadata
/// server); `STORAGE_EMULATOR_HOST` points at an emulator instead (no credentials), as Google's
/// client libraries take it.
#[cfg(feature = "gcs")]
fn gcs(bucket: &str) -> io::Result<Built> {
    let mut builder = opendal::services::Gcs::default().bucket(bucket).root("/");
    let mut endpoint = "google".to_string();
    if let Some(host) = var("STORAGE_EMULATOR_HOST") {
        endpoint = match host.contains("://") {
            true => host,
            false => format!("http://{host}"),
        };
        builder = builder
            .endpoint(&endpoint)
            .skip_signature()
            .disable_vm_metadata()
            .disable_config_load();
    }
    Ok(Built::new(
        Operator::new(builder).map_err(config_error)?,
        endpoint,
    ))
}

/// Azure Blob Storage: the account as the Azure CLI reads it from the environment —
/// `AZURE_STORAGE_CONNECTION_STRING`, else `AZURE_STORAGE_ACCOUNT` with `AZURE_STORAGE_KEY` or
/// `AZURE_STORAGE_SAS_TOKEN` (else Azure AD: the service principal, workload or managed
/// identity the environment gives).
#[cfg(feature = "azure")]
fn azure(container: &str) -> io::Result<Built> {
    use opendal::services::Azblob;
    let (builder, endpoint) = match var("AZURE_STORAGE_CONNECTION_STRING") {
        Some(text) => (
            Azblob::from_connection_string(&text).map_err(config_error)?,
            connection_endpoint(&text),
        ),
        None => {
            let account = var("AZURE_STORAGE_ACCOUNT").ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "az:// needs the storage account: set AZURE_STORAGE_ACCOUNT (with \
                     AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN) or \
                     AZURE_STORAGE_CONNECTION_STRING",
                )
            })?;
            let endpoint = format!("https://{account}.blob.core.windows.net");
            let mut builder = Azblob::default().account_name(&account).endpoint(&endpoint);
            if let Some(key) = var("AZURE_STORAGE_KEY") {
                builder = builder.account_key(&key);
            }
            if let Some(sas) = var("AZURE_STORAGE_SAS_TOKEN") {
                builder = builder.sas_token(sas.trim_start_matches('?'));
            }
            (builder, endpoint)
        }
    };
    let builder = builder.container(container).root("/");
    Ok(Built::new(
        Operator::new(builder).map_err(config_error)?,
        endpoint,
    ))
}

/// The blob endpoint an Azure connection string names (`BlobEndpoint`, else its
/// `AccountName`), to tell one account from another.
#[cfg(feature = "azure")]
fn connection_endpoint(text: &str) -> String {
    let field = |name: &str| {
        text.split(';')
            .filter_map(|part| part.split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_string())
    };
    field("BlobEndpoint")
        .or_else(|| field("AccountName"))
        .unwrap_or_default()
}

/// A WebDAV server: `webdavs://` and `https://` over TLS. The user is the URL's, else
/// `~/.netrc`'s for the host (`NETRC` names another file, as for curl); the password
/// `SYNCEASE_WEBDAV_PASSWORD`, else the netrc's; or a bearer token `SYNCEASE_WEBDAV_TOKEN`.
#[cfg(feature = "webdav")]
fn webdav(scheme: &str, authority: &str) -> io::Result<Built> {
    let tls = matches!(scheme, "webdavs" | "https");
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_string()), host),
        None => (None, authority),
    };
    let endpoint = format!("{}://{host}", if tls { "https" } else { "http" });
    // Folders are made before the files in them: no PROPFIND of the parent before each PUT.
    let mut builder = opendal::services::Webdav::default()
        .endpoint(&endpoint)
        .root("/")
        .disable_create_dir(true);
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    let login = super::netrc::login(name, user.as_deref());
    let netrc = login.is_some();
    let user = user.or_else(|| login.as_ref().map(|l| l.user.clone()));
    let from_env = var("SYNCEASE_WEBDAV_PASSWORD");
    let password = from_env.clone().or_else(|| login.map(|l| l.password));
    let token = var("SYNCEASE_WEBDAV_TOKEN");
    if let Some(user) = &user {
        builder = builder.username(user);
    }
    if let Some(password) = &password {
        builder = builder.password(password);
    }
    if let Some(token) = &token {
        builder = builder.token(token);
    }
    let tried = match (&user, &token) {
        (_, Some(_)) => "tried the bearer token in SYNCEASE_WEBDAV_TOKEN".to_string(),
        (None, None) => "tried no login: name a user (webdav://USER@HOST/PATH) and set \
                         SYNCEASE_WEBDAV_PASSWORD, or add the host to ~/.netrc"
            .to_string(),
        (Some(user), None) => {
            let source = match (from_env.is_some(), netrc) {
                (true, _) => "the password in SYNCEASE_WEBDAV_PASSWORD",
                (false, true) => "the password in the netrc file",
                (false, false) => {
                    "no password (set SYNCEASE_WEBDAV_PASSWORD, or add the host to ~/.netrc)"
                }
            };
            format!("tried user '{user}' with {source}")
        }
    };
    Ok(Built {
        login: Some(tried),
        ..Built::new(Operator::new(builder).map_err(config_error)?, endpoint)
    })
}

/// The error for a service this build lacks (never reached: see `Url::built`).
#[allow(dead_code)]
fn not_built(what: &str) -> io::Result<Built> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("this syncease was built without {what} support"),
    ))
}

#[cfg(not(feature = "s3"))]
fn s3(_: &str, _: &Options) -> io::Result<Built> {
    not_built("s3")
}

#[cfg(not(feature = "gcs"))]
fn gcs(_: &str) -> io::Result<Built> {
    not_built("gcs")
}

#[cfg(not(feature = "azure"))]
fn azure(_: &str) -> io::Result<Built> {
    not_built("azure")
}

#[cfg(not(feature = "webdav"))]
fn webdav(_: &str, _: &str) -> io::Result<Built> {
    not_built("webdav")
}

impl Store {
    /// Connect to the place `url` names (a [`Url::Store`]) and check that it can be listed.
    pub fn open(url: &Url, options: &Options, backup: Option<&Path>) -> io::Result<Store> {
        let Url::Store {
            scheme,
            service: kind,
            bucket,
            prefix,
        } = url
        else {
            unreachable!("only object-store URLs are opened here")
        };
        let kind = *kind;
        opendal::install_default();
        if kind != Service::S3 {
            let s3_only = [
                ("--s3-endpoint", options.s3_endpoint.is_some()),
                ("--s3-region", options.s3_region.is_some()),
                ("--s3-storage-class", options.s3_storage_class.is_some()),
                ("--s3-sse", options.s3_sse.is_some()),
            ];
            if let Some((option, _)) = s3_only.iter().find(|(_, given)| *given) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{option} applies to s3:// only, not to {url}"),
                ));
            }
        }
        let Built {
            op,
            endpoint,
            login,
            #[cfg(feature = "s3")]
            between,
        } = match kind {
            Service::S3 => s3(bucket, options)?,
            Service::Gcs => gcs(bucket)?,
            Service::Azure => azure(bucket)?,
            Service::Webdav => webdav(scheme, bucket)?,
        };
        // Each attempt is timed out on its own, then retried (the order OpenDAL asks for).
        let mut timeouts = opendal::layers::TimeoutLayer::new();
        if let Some(t) = options.timeout {
            timeouts = timeouts.with_timeout(t).with_io_timeout(t);
        } else {
            // No limit: a century stands for forever.
            let forever = std::time::Duration::from_secs(100 * 365 * 86_400);
            timeouts = timeouts.with_timeout(forever).with_io_timeout(forever);
        }
        let op = op.layer(timeouts).layer(opendal::layers::RetryLayer::new());
        let backup = match backup {
            None => None,
            Some(dir) => Some(backup_prefix(url, dir)?),
        };
        let store = Store {
            rt: common::runtime()?,
            op,
            kind,
            url: url.to_string(),
            prefix: match prefix.as_str() {
                "" => String::new(),
                p => format!("{p}/"),
            },
            backup,
            listed: Mutex::default(),
            rows: Mutex::default(),
            stale: AtomicBool::new(false),
            manifest: AtomicBool::new(true),
            started: Mutex::default(),
            memory: std::sync::Arc::new(tokio::sync::Semaphore::new(
                super::TRANSFER_MEMORY_MIB as usize,
            )),
            parts: std::sync::Arc::default(),
            service: format!(
                "{} {endpoint} {}",
                kind.feature(),
                crate::remote::without_user(bucket)
            ),
            #[cfg(feature = "s3")]
            between,
            across_refused: AtomicBool::new(false),
            md5s: Mutex::default(),
            restyled: options.s3_storage_class.is_some() || options.s3_sse.is_some(),
        };
        // Reachable, with these credentials, before anything else happens.
        store.reachable(options.connect_timeout).map_err(|e| {
            let refused = e.to_string().contains("HTTP 401") || e.to_string().contains("HTTP 403");
            match login {
                Some(login) if refused => io::Error::new(e.kind(), format!("{e}; {login}")),
                _ => e,
            }
        })?;
        Ok(store)
    }

    /// Ask for the first page of the prefix's listing (one request, however many keys there
    /// are): the bucket exists and these credentials may read it. Given up after `limit`.
    ///
    /// That page is the first of the recursive listing the scan goes on with.
    fn reachable(&self, limit: Option<std::time::Duration>) -> io::Result<()> {
        let first = async {
            if !self.lists_recursively() {
                // The first folder listed alone: the scan walks the folders (see
                // `Store::walk_folders`); a root not there yet is a fresh mirror.
                return match self.op.list(&self.list_root()).await {
                    Err(e) if e.kind() != opendal::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            let options = ListOptions {
                recursive: true,
                ..ListOptions::default()
            };
            let mut lister = self.op.lister_options(&self.list_root(), options).await?;
            let first = lister.next().await.transpose()?;
            *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Some((first, lister));
            Ok(())
        };
        let answer = self.rt.block_on(async {
            match limit {
                Some(limit) => tokio::time::timeout(limit, first).await.map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {} s (--contimeout)", limit.as_secs_f64()),
                    )
                }),
                None => Ok(first.await),
            }
        })?;
        answer.map_err(store_error)
    }
}

#[cfg_attr(not(feature = "s3"), allow(dead_code))]
/// The region of the AWS profile in use (`AWS_PROFILE`, else `default`), from the AWS config
/// file (`AWS_CONFIG_FILE`, else `~/.aws/config`), as the AWS CLI reads it.
fn profile_region() -> Option<String> {
    let file = std::env::var_os("AWS_CONFIG_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws/config")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    region_in(&text, &profile)
}

/// The `region` of `profile` in the text of an AWS config file (`[default]`, `[profile NAME]`).
fn region_in(text: &str, profile: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            inside = section == profile
                || section
                    .strip_prefix("profile ")
                    .is_some_and(|name| name.trim() == profile);
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "region" && !value.trim().is_empty() {
                return Some(value.trim().to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_profile_in_use() {
        let text = "[default]\nregion = eu-west-1\n\n[profile backup]\n# comment\n\
                    output=json\nregion=ap-south-2\n[profile empty]\nregion =\n";
        assert_eq!(region_in(text, "default").as_deref(), Some("eu-west-1"));
        assert_eq!(region_in(text, "backup").as_deref(), Some("ap-south-2"));
        assert_eq!(region_in(text, "empty"), None);
        assert_eq!(region_in(text, "missing"), None);
    }
}
