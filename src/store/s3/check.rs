//! The bucket, reached once at start: a wrong endpoint, refused credentials or a missing
//! bucket stop the start with one line naming the bucket, the endpoint and what to check,
//! instead of surfacing as the first push's 503. Also the one bucket administration the tests
//! need (creating it on moto).

use super::{S3Backend, SIGNED_FOR};
use crate::store::error::{Error, Result};
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::S3Action;

impl S3Backend {
    /// Lists at most one key under the prefix: the cheapest signed request that needs the
    /// endpoint up, the credentials accepted (with read rights) and the bucket there. The
    /// answer is the operator's line when it fails.
    pub async fn check(&self) -> std::result::Result<(), String> {
        let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
        let prefix = format!("{}blobs/", self.prefix);
        action.with_prefix(prefix.as_str());
        action.with_max_keys(1);
        let url = action.sign(SIGNED_FOR);
        let what = "ListObjectsV2";
        let outcome = self.call_for_body(what, "GET", &url, None).await;
        outcome.map(|_| ()).map_err(|e| {
            let base = self.bucket.base_url();
            let hint = hint(&e);
            format!(
                "S3 bucket {:?} at {base} cannot be used: {}; {hint}",
                self.bucket.name(),
                describe(&e)
            )
        })
    }

    /// [`check`](Self::check) from a thread without an event loop (start-up): on a loop of
    /// its own, whose pooled connections are closed after.
    pub fn check_now(&self) -> std::result::Result<(), String> {
        on_own_loop(self.check())
            .map_err(|e| format!("S3 check: cannot start an event loop: {e}"))?
    }

    /// Creates the bucket (tests: moto starts without one).
    pub(crate) async fn create_bucket(&self) -> Result<()> {
        let url = self
            .bucket
            .create_bucket(&self.credentials)
            .sign(SIGNED_FOR);
        self.call_for_body("create bucket", "PUT", &url, Some(super::Body::Bytes(b"")))
            .await
            .map(|_| ())
    }
}

/// Runs `f` on a monoio loop of its own, like the server's (io_uring where available, timers
/// on), and closes the S3 connections it pooled before the loop goes away.
pub(crate) fn on_own_loop<F: std::future::Future>(f: F) -> std::io::Result<F::Output> {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()?;
    Ok(rt.block_on(async {
        let out = f.await;
        super::conn::close_idle();
        out
    }))
}

fn describe(e: &Error) -> String {
    match e {
        Error::Unavailable { cause, .. } => cause.clone(),
        Error::NotFound => "not found".into(),
        other => other.to_string(),
    }
}

/// What the operator should look at, from the failure. Pure.
fn hint(e: &Error) -> &'static str {
    let text = describe(e);
    if text.contains("NoSuchBucket") || matches!(e, Error::NotFound) {
        "create the bucket or fix storage.s3.bucket"
    } else if text.contains(" 401 ")
        || text.contains(" 403 ")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("AccessDenied")
        || text.contains("InvalidAccessKeyId")
    {
        "check the credentials (storage.s3.access_key and secret_key, AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, or the shared credentials file) and storage.s3.region"
    } else if matches!(e, Error::Unavailable { retry: true, .. }) {
        "check storage.s3.endpoint (is the S3 service up and reachable from here?)"
    } else {
        "check storage.s3.endpoint, storage.s3.bucket and storage.s3.path_style"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_follow_the_failure() {
        let no_bucket = super::super::status_error(
            "ListObjectsV2",
            404,
            b"<Error><Code>NoSuchBucket</Code></Error>",
        );
        assert!(hint(&no_bucket).contains("create the bucket"));
        let denied = super::super::status_error(
            "ListObjectsV2",
            403,
            b"<Error><Code>SignatureDoesNotMatch</Code></Error>",
        );
        assert!(hint(&denied).contains("credentials"));
        let down = super::super::down("ListObjectsV2", "connection refused".into());
        assert!(hint(&down).contains("storage.s3.endpoint"));
    }
}
