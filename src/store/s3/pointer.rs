//! A blob pushed in parts stays where its upload session assembled it,
//! `<prefix>assembled/<session id>`, and the blob's key holds an empty object that points
//! there (user metadata: where, and the blob's size). S3 cannot rename, and the copy that
//! would move the object to the blob's key costs as much as the push itself on a busy S3
//! server (and needs UploadPartCopy past 5 GiB), so none is made: the digest is known only
//! once the last byte is in, after the multipart upload had to be named.
//!
//! Everything that reaches a blob through its key follows the pointer: [`S3Backend::locate`]
//! is one HEAD either way, and says where the bytes are and how many. A blob stored whole
//! (a manifest, a layer pushed in one request) is its own object, as before.
//!
//! Removal goes pointer first, then the bytes: a crash between the two leaves an object no
//! pointer names (garbage a sweep finds under `assembled/`), never a pointer to nothing.

use super::{Body, Head, Req, S3Backend};
use crate::oci::digest::Digest;
use crate::store::error::{Error, Result};

/// The user metadata a pointer carries: the key of the bytes, under the prefix.
const LOCATION: &str = "x-amz-meta-ringyard-location";
/// The blob's size (the pointer's own Content-Length is 0).
const SIZE: &str = "x-amz-meta-ringyard-size";
/// Where sessions assemble their multipart uploads, under the prefix.
const ASSEMBLED: &str = "assembled/";

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Located {
    /// The object holding them: the blob's own key, or the assembled object a pointer names.
    pub key: String,
    pub size: u64,
    /// Reached through a pointer at the blob's key.
    pub pointed: bool,
}

/// What a HEAD of the blob's key at `blob_key` answered, read: the object itself, or the
/// object its pointer names (only our own shape of key is followed). Pure.
pub(super) fn located(prefix: &str, blob_key: &str, head: &Head) -> Result<Located> {
    let Some(location) = head.header(LOCATION) else {
        let size = head
            .content_length
            .ok_or_else(|| Error::Io(format!("S3 HEAD {blob_key}: no content-length")))?;
        return Ok(Located {
            key: blob_key.to_string(),
            size,
            pointed: false,
        });
    };
    let bad = |what: &str| Error::Corrupt(format!("the S3 pointer at {blob_key}: {what}"));
    let id = location
        .strip_prefix(ASSEMBLED)
        .filter(|id| crate::store::uploads::valid_id(id))
        .ok_or_else(|| bad(&format!("names {location:?}, not an assembled upload")))?;
    let size = head
        .header(SIZE)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad("no size"))?;
    Ok(Located {
        key: format!("{prefix}{}", location_of(id)),
        size,
        pointed: true,
    })
}

/// Where session `id` assembles its upload, under the prefix: what a pointer names.
fn location_of(id: &str) -> String {
    format!("{ASSEMBLED}{id}")
}

impl S3Backend {
    /// The key where session `id` assembles its multipart upload: a blob's bytes once
    /// published.
    pub(super) fn assembled_key(&self, id: &str) -> String {
        format!("{}{}", self.prefix, location_of(id))
    }

    /// Where the blob `digest` is; None when the bucket does not hold it.
    pub(super) async fn locate(&self, digest: &Digest) -> Result<Option<Located>> {
        let key = self.key(digest);
        match self.object_head(&key).await? {
            Some(head) => located(&self.prefix, &key, &head).map(Some),
            None => Ok(None),
        }
    }

    /// Makes the blob `digest` (`size` bytes) the object session `id` assembled: an empty
    /// object at the blob's key naming it. Safe to repeat.
    pub(super) async fn point(&self, digest: &Digest, id: &str, size: u64) -> Result<()> {
        let key = self.key(digest);
        let (location, size) = (location_of(id), size.to_string());
        // Signed with the request, as S3 wants every x-amz- header.
        let meta = [(LOCATION, location.as_str()), (SIZE, size.as_str())];
        let url = self.sign_with(rusty_s3::Method::Put, &key, &[], &meta);
        let sent = [(LOCATION, location.clone()), (SIZE, size.clone())];
        let req = Req {
            headers: &sent,
            body: Some(Body::Bytes(b"")),
            ..Req::new("put pointer", "PUT", &url)
        };
        self.call(&req).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)], len: Option<u64>) -> Head {
        Head {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: crate::http::response_head::BodyKind::None,
            content_length: len,
            keep_alive: true,
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_pointer_is_followed_and_an_object_is_itself() {
        let plain = located("p/", "p/blobs/sha256/ab", &head(&[], Some(7))).unwrap();
        assert_eq!(
            plain,
            Located {
                key: "p/blobs/sha256/ab".into(),
                size: 7,
                pointed: false
            }
        );
        let loc = format!("assembled/{ID}");
        let h = head(&[(LOCATION, &loc), (SIZE, "12345")], Some(0));
        let pointed = located("p/", "p/blobs/sha256/ab", &h).unwrap();
        assert_eq!(pointed.key, format!("p/assembled/{ID}"));
        assert_eq!((pointed.size, pointed.pointed), (12345, true));
    }

    #[test]
    fn only_our_shape_of_pointer_is_followed() {
        for (location, size) in [
            ("assembled/../blobs/x", "1"),
            ("uploads/0123", "1"),
            ("/etc/passwd", "1"),
            (&*format!("assembled/{ID}"), "-1"),
            (&*format!("assembled/{ID}"), ""),
        ] {
            let h = head(&[(LOCATION, location), (SIZE, size)], Some(0));
            let got = located("p/", "p/blobs/sha256/ab", &h);
            assert!(matches!(got, Err(Error::Corrupt(_))), "{location} {size}");
        }
        let got = located("p/", "k", &head(&[], None));
        assert!(matches!(got, Err(Error::Io(_))));
    }
}
