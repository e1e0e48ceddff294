//! S3's CopyObject from another bucket of the same service: the bytes stay on the server.
//!
//! OpenDAL copies within its own bucket only (its `x-amz-copy-source` always names the
//! operator's bucket), so this one request is built and signed here: the URL of the target
//! as OpenDAL would address it (from a presigned write, so endpoint, path style and key
//! encoding are its own), and a signature from the credential chain OpenDAL's S3 service
//! uses (the environment, the AWS profile, SSO, web identity, the container or instance
//! metadata), sent through OpenDAL's HTTP transport.

use std::io;
use std::time::Duration;

use opendal::{Buffer, HttpTransporter, Operator};
use reqsign_aws_v4::{Credential, DefaultCredentialProvider, RequestSigner};
use reqsign_core::{Context, OsEnv, Signer};
use reqsign_file_read_tokio::TokioFileRead;

use super::Refusal;

/// Tries of one copy whose request failed on the way or on the server's side (5xx), and the
/// pause before the first retry (doubled each time): OpenDAL's retry policy.
const TRIES: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_secs(1);

/// Signs and sends CopyObject requests to one bucket of an S3 service.
pub struct Between {
    bucket: String,
    signer: Signer<Credential>,
    http: HttpTransporter,
    /// Each try is given up after this long (`--timeout`).
    timeout: Option<Duration>,
}

impl Between {
    /// For `bucket` of the service in `region`. Credentials are found at the first copy, not
    /// before; `no_imds`: not from the instance metadata service.
    pub fn new(bucket: &str, region: &str, no_imds: bool, timeout: Option<Duration>) -> Between {
        let http = HttpTransporter::default();
        let ctx = Context::new()
            .with_file_read(TokioFileRead)
            .with_env(OsEnv)
            .with_http_send(http.clone());
        let mut chain = DefaultCredentialProvider::builder();
        if no_imds {
            chain = chain.no_imds();
        }
        Between {
            bucket: bucket.to_string(),
            signer: Signer::new(ctx, chain.build(), RequestSigner::new("s3", region)),
            http,
            timeout,
        }
    }

    /// Copy `from_key` of `from`'s bucket to `key` of this bucket (which `op` addresses),
    /// metadata and all (the default `COPY` directive). A refusal of the request as such
    /// (400, 403, 405, 501) is [`Refusal::Unsupported`].
    pub async fn copy(
        &self,
        op: &Operator,
        from: &Between,
        from_key: &str,
        key: &str,
    ) -> Result<(), Refusal> {
        let target = target_url(op, key).await.map_err(Refusal::Failed)?;
        let source = format!(
            "{}/{}",
            from.bucket,
            opendal::raw::percent_encode_path(from_key)
        );
        let mut pause = FIRST_PAUSE;
        for tried in 1..=TRIES {
            match self.try_copy(&target, &source).await {
                Err(Try::Again(e)) if tried < TRIES => {
                    tracing::debug!(key, "copy between buckets failed, tried again: {e}");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(Try::Again(e)) => return Err(Refusal::Failed(e)),
                Err(Try::Refused(refusal)) => return Err(refusal),
                Ok(()) => return Ok(()),
            }
        }
        unreachable!("the last try returns")
    }

    async fn try_copy(&self, target: &str, source: &str) -> Result<(), Try> {
        let request = http::Request::put(target)
            .header("x-amz-copy-source", source)
            .header(http::header::CONTENT_LENGTH, 0)
            .body(())
            .map_err(|e| Try::Refused(Refusal::Failed(io::Error::other(e))))?;
        let (mut head, ()) = request.into_parts();
        self.signer
            .sign(&mut head, None)
            .await
            .map_err(|e| Try::Refused(Refusal::Failed(signing_error(e))))?;
        let request = http::Request::from_parts(head, Buffer::new());
        let sent = self.http.send(request);
        let answer = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| {
                Try::Again(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s (--timeout)", limit.as_secs_f64()),
                ))
            })?,
            None => sent.await,
        };
        let answer = answer.map_err(|e| Try::Again(super::store_error(e)))?;
        let status = answer.status().as_u16();
        let body = String::from_utf8_lossy(&answer.into_body().to_bytes()).into_owned();
        // A copy can fail after its 200 was sent: then the body is an <Error>.
        let failed = !(200..300).contains(&status) || body.contains("<Error>");
        if !failed {
            return Ok(());
        }
        let error = |kind| io::Error::new(kind, said(&body, status));
        Err(match (status, element(&body, "Code")) {
            (404, Some("NoSuchKey")) => Try::Refused(Refusal::Vanished),
            (400 | 403 | 405 | 501, _) => {
                let kind = match status {
                    403 => io::ErrorKind::PermissionDenied,
                    _ => io::ErrorKind::Unsupported,
                };
                Try::Refused(Refusal::Unsupported(error(kind)))
            }
            (s, _) if !(300..500).contains(&s) => Try::Again(error(io::ErrorKind::Other)),
            _ => Try::Refused(Refusal::Failed(error(io::ErrorKind::Other))),
        })
    }
}

enum Try {
    /// Worth another try: the request was lost, or the server failed (5xx, or an error after
    /// its 200).
    Again(io::Error),
    Refused(Refusal),
}

/// The URL of `key` as OpenDAL addresses it, without the signature a presigned write adds.
async fn target_url(op: &Operator, key: &str) -> io::Result<String> {
    let presigned = op
        .presign_write(key, Duration::from_secs(600))
        .await
        .map_err(super::store_error)?;
    let uri = presigned.uri();
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(io::Error::other(format!("no URL for {key}: {uri}")));
    };
    Ok(format!("{scheme}://{authority}{}", uri.path()))
}

fn signing_error(e: reqsign_core::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("cannot sign the request: {e}"),
    )
}

/// The text of the first `<name>` element of an XML body.
fn element<'b>(body: &'b str, name: &str) -> Option<&'b str> {
    let open = format!("<{name}>");
    let at = body.find(&open)? + open.len();
    let len = body[at..].find("</")?;
    Some(body[at..at + len].trim()).filter(|text| !text.is_empty())
}

/// An S3 error answer as a person reads it: `Message (Code)`, with the HTTP status.
fn said(body: &str, status: u16) -> String {
    match (element(body, "Message"), element(body, "Code")) {
        (Some(message), Some(code)) => format!("{message} ({code}, HTTP {status})"),
        (None, Some(code)) => format!("{code} (HTTP {status})"),
        _ => format!("HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_read_as_their_message_and_code() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
                    <Message>Access Denied</Message><RequestId>1</RequestId></Error>";
        assert_eq!(said(body, 403), "Access Denied (AccessDenied, HTTP 403)");
        assert_eq!(
            said("<Error><Code>SlowDown</Code></Error>", 503),
            "SlowDown (HTTP 503)"
        );
        assert_eq!(said("", 502), "HTTP 502");
        assert_eq!(element("<Code></Code>", "Code"), None);
    }
}
