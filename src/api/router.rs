//! URL paths to routes. Repository names may contain slashes and even segments named
//! `blobs` or `manifests`, so routes are recognised from the right end of the path.
//! Pure: names, tags and digests are validated by the handlers, before any use.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Tags {
        name: &'a str,
    },
    Manifest {
        name: &'a str,
        reference: &'a str,
    },
    Blob {
        name: &'a str,
        digest: &'a str,
    },
    UploadStart {
        name: &'a str,
    },
    Upload {
        name: &'a str,
        id: &'a str,
    },
    Referrers {
        name: &'a str,
        digest: &'a str,
    },
    /// `/v2/_quota/<name>`: a repository's storage usage and quota (ours; no repository
    /// name can start with `_`, so no OCI route is shadowed).
    Quota {
        name: &'a str,
    },
    /// `/v2/<name>/manifests/<reference>/scan`: a manifest's vulnerability scan (ours).
    Scan {
        name: &'a str,
        reference: &'a str,
    },
    /// `/v2/<name>/scan/summary`: the repository's scan summary (ours).
    ScanSummary {
        name: &'a str,
    },
    NotFound,
}

pub fn route(path: &str) -> Route<'_> {
    if path == "/v2" || path == "/v2/" {
        return Route::Base;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::NotFound;
    };
    if rest == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = rest.strip_prefix("_quota/") {
        return Route::Quota { name };
    }
    if let Some(name) = rest.strip_suffix("/scan/summary") {
        return Route::ScanSummary { name };
    }
    if let Some((name, reference)) = rest
        .strip_suffix("/scan")
        .and_then(|head| head.rsplit_once('/'))
        .and_then(|(head, reference)| Some((head.strip_suffix("/manifests")?, reference)))
    {
        return Route::Scan { name, reference };
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Route::Tags { name };
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Route::UploadStart { name };
    }
    let Some((head, last)) = rest.rsplit_once('/') else {
        return Route::NotFound;
    };
    let Some((name, kind)) = head.rsplit_once('/') else {
        return Route::NotFound;
    };
    match kind {
        "manifests" => Route::Manifest {
            name,
            reference: last,
        },
        "blobs" => Route::Blob { name, digest: last },
        "referrers" => Route::Referrers { name, digest: last },
        "uploads" => match name.strip_suffix("/blobs") {
            Some(name) => Route::Upload { name, id: last },
            None => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2"), Route::Base);
        assert_eq!(route("/v2/_catalog"), Route::Catalog);
        assert_eq!(
            route("/v2/_quota/team/app"),
            Route::Quota { name: "team/app" }
        );
        assert_eq!(route("/v2/a/b/tags/list"), Route::Tags { name: "a/b" });
        assert_eq!(
            route("/v2/a/manifests/latest"),
            Route::Manifest {
                name: "a",
                reference: "latest"
            }
        );
        assert_eq!(
            route("/v2/x/manifests/y/manifests/v1"),
            Route::Manifest {
                name: "x/manifests/y",
                reference: "v1"
            }
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:abc"),
            Route::Blob {
                name: "a",
                digest: "sha256:abc"
            }
        );
        assert_eq!(
            route("/v2/a/b/blobs/uploads/"),
            Route::UploadStart { name: "a/b" }
        );
        assert_eq!(
            route("/v2/a/blobs/uploads"),
            Route::UploadStart { name: "a" }
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/abc"),
            Route::Upload {
                name: "a",
                id: "abc"
            }
        );
        assert_eq!(
            route("/v2/a/referrers/sha256:1"),
            Route::Referrers {
                name: "a",
                digest: "sha256:1"
            }
        );
        assert_eq!(
            route("/v2/a/b/manifests/v1/scan"),
            Route::Scan {
                name: "a/b",
                reference: "v1"
            }
        );
        assert_eq!(
            route("/v2/a/manifests/scan"),
            Route::Manifest {
                name: "a",
                reference: "scan"
            },
            "a tag named scan is still a manifest"
        );
        assert_eq!(
            route("/v2/a/b/scan/summary"),
            Route::ScanSummary { name: "a/b" }
        );
        assert_eq!(route("/v2/a/other/v1/scan"), Route::NotFound);
        assert_eq!(route("/v2/blobs/x"), Route::NotFound);
        assert_eq!(route("/v3/a/blobs/x"), Route::NotFound);
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/v2/a/uploads/x"), Route::NotFound);
        assert_eq!(route("/v2/a/other/x"), Route::NotFound);
    }
}
