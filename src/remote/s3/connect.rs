//! Connecting to a bucket: the service, region, credentials' profile, storage class and
//! encryption from the options and the AWS environment; timeouts and retries; and the check,
//! before anything else, that the prefix can be listed.

use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use futures_util::StreamExt as _;
use opendal::options::ListOptions;
use opendal::Operator;

use super::{backup_prefix, s3_error, S3};
use crate::remote::common;
use crate::remote::Options;

impl S3 {
    /// Connect to `s3://bucket/prefix` and check that the bucket can be listed.
    pub fn open(
        bucket: &str,
        prefix: &str,
        options: &Options,
        backup: Option<&Path>,
    ) -> io::Result<S3> {
        opendal::install_default();
        let mut builder = opendal::services::S3::default().bucket(bucket).root("/");
        if let Some(endpoint) = &options.s3_endpoint {
            builder = builder.endpoint(endpoint);
        }
        let region = options
            .s3_region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
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
        if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        {
            builder = builder.disable_ec2_metadata();
        }
        // Each attempt is timed out on its own, then retried (the order OpenDAL asks for).
        let mut timeouts = opendal::layers::TimeoutLayer::new();
        if let Some(t) = options.timeout {
            timeouts = timeouts.with_timeout(t).with_io_timeout(t);
        } else {
            // No limit: a century stands for forever.
            let forever = std::time::Duration::from_secs(100 * 365 * 86_400);
            timeouts = timeouts.with_timeout(forever).with_io_timeout(forever);
        }
        let op = Operator::new(builder)
            .map_err(s3_error)?
            .layer(timeouts)
            .layer(opendal::layers::RetryLayer::new());
        let url = match prefix {
            "" => format!("s3://{bucket}"),
            p => format!("s3://{bucket}/{p}"),
        };
        let backup = match backup {
            None => None,
            Some(dir) => Some(backup_prefix(bucket, prefix, dir)?),
        };
        let s3 = S3 {
            rt: common::runtime()?,
            op,
            url,
            prefix: match prefix {
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
            bucket: bucket.to_string(),
            service: format!(
                "s3 {} {bucket}",
                options.s3_endpoint.as_deref().unwrap_or("aws")
            ),
            md5s: Mutex::default(),
        };
        // Reachable, with these credentials, before anything else happens.
        s3.reachable(options.connect_timeout)?;
        Ok(s3)
    }

    /// Ask for the first page of the prefix's listing (one request, however many keys there
    /// are): the bucket exists and these credentials may read it. Given up after `limit`.
    ///
    /// That page is the first of the recursive listing the scan goes on with.
    fn reachable(&self, limit: Option<std::time::Duration>) -> io::Result<()> {
        let first = async {
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
        answer.map_err(s3_error)
    }
}

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
