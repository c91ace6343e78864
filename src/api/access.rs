//! The access a request needs, worked out from its route and method alone, before anything is
//! read or written: the one place where authorization decides (`api::authorize` asks the
//! access rules of [`crate::auth`] whether the caller may, then the registry's own modes:
//! read-only refuses changes, `storage.delete: false` refuses deletes). The actions are those of Docker token scopes
//! (`repository:NAME:pull,push,delete`, `registry:catalog:*`), so a token's grant maps onto
//! them one to one. Pure: unit-tested here.

use super::router::Route;
use crate::auth::token::scope::Need;
use crate::http::query::query_get;
use crate::http::request::Method;

/// The actions live with the rules that grant them.
pub use crate::auth::Action;

/// What answering a request requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needed<'a> {
    /// Nothing beyond reaching the registry (`/v2/`, the probes, unknown routes, methods an
    /// endpoint does not take: those are answered without touching any repository).
    Nothing,
    /// The list of every repository (`registry:catalog:*`).
    Catalog,
    Repository {
        name: &'a str,
        action: Action,
        /// A cross-repository mount also reads the source: pull on `from`, or no mount
        /// (distribution then answers with an ordinary upload session, and so do we).
        mount_from: Option<String>,
    },
}

impl Needed<'_> {
    pub fn action(&self) -> Option<Action> {
        match self {
            Needed::Repository { action, .. } => Some(*action),
            _ => None,
        }
    }
}

/// The same access as token scope needs: what a Bearer token's `access` must cover, and
/// (`with_mount`) what a challenge asks for, which includes pull on a mount's source so that
/// docker asks for it too.
pub fn token_needs<'a>(needed: &'a Needed<'a>, with_mount: bool) -> Vec<Need<'a>> {
    match needed {
        Needed::Nothing => Vec::new(),
        Needed::Catalog => vec![Need {
            resource_type: "registry",
            name: "catalog",
            action: crate::auth::token::scope::ANY_ACTION,
        }],
        Needed::Repository {
            name,
            action,
            mount_from,
        } => {
            let mut needs = vec![Need::repository(name, action.as_str())];
            if let (true, Some(from)) = (with_mount, mount_from) {
                needs.push(Need::repository(from, Action::Pull.as_str()));
            }
            needs
        }
    }
}

pub fn needed<'a>(route: &Route<'a>, method: Method, query: &str) -> Needed<'a> {
    use Method::*;
    let repo = |name: &'a str, action| Needed::Repository {
        name,
        action,
        mount_from: None,
    };
    match (route, method) {
        (Route::Catalog, Get | Head) => Needed::Catalog,
        (Route::Tags { name }, Get | Head)
        | (Route::Manifest { name, .. }, Get | Head)
        | (Route::Blob { name, .. }, Get | Head)
        | (Route::Referrers { name, .. }, Get | Head)
        | (Route::Quota { name }, Get | Head)
        | (Route::Scan { name, .. }, Get | Head)
        | (Route::ScanSummary { name }, Get | Head) => repo(name, Action::Pull),
        (Route::Scan { name, .. }, Post) => repo(name, Action::Push),
        (Route::Manifest { name, .. }, Put) => repo(name, Action::Push),
        (Route::Manifest { name, .. }, Delete) | (Route::Blob { name, .. }, Delete) => {
            repo(name, Action::Delete)
        }
        (Route::UploadStart { name }, Post) => Needed::Repository {
            name,
            action: Action::Push,
            mount_from: query_get(query, "mount").and(query_get(query, "from")),
        },
        // Status, chunks, completion and cancel of a session all belong to pushing.
        (Route::Upload { name, .. }, Get | Patch | Put | Delete) => repo(name, Action::Push),
        _ => Needed::Nothing,
    }
}

/// Whether the request would change what the registry stores: a push or a delete, except an
/// upload's status, which only reads. Read-only mode refuses these (starting an upload
/// counts, so that a client learns of read-only mode before it sends any bytes).
pub fn changes(needed: &Needed<'_>, method: Method) -> bool {
    matches!(needed.action(), Some(Action::Push | Action::Delete))
        && !matches!(method, Method::Get | Method::Head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::route;

    fn need(method: Method, path: &str, query: &str) -> Needed<'static> {
        let path: &'static str = Box::leak(path.to_string().into_boxed_str());
        needed(&route(path), method, query)
    }

    fn repo(name: &'static str, action: Action) -> Needed<'static> {
        Needed::Repository {
            name,
            action,
            mount_from: None,
        }
    }

    #[test]
    fn each_route_and_method_needs_its_action() {
        use Method::*;
        let d = "sha256:0000";
        let cases = [
            (Get, "/v2/".to_string(), Needed::Nothing),
            (Get, "/v2/_catalog".into(), Needed::Catalog),
            (Get, "/v2/a/b/tags/list".into(), repo("a/b", Action::Pull)),
            (Head, "/v2/a/manifests/v1".into(), repo("a", Action::Pull)),
            (Put, "/v2/a/manifests/v1".into(), repo("a", Action::Push)),
            (
                Delete,
                "/v2/a/manifests/v1".into(),
                repo("a", Action::Delete),
            ),
            (Get, format!("/v2/a/blobs/{d}"), repo("a", Action::Pull)),
            (
                Delete,
                format!("/v2/a/blobs/{d}"),
                repo("a", Action::Delete),
            ),
            (Put, format!("/v2/a/blobs/{d}"), Needed::Nothing),
            (Post, "/v2/a/blobs/uploads/".into(), repo("a", Action::Push)),
            (Get, "/v2/a/blobs/uploads/x".into(), repo("a", Action::Push)),
            (
                Patch,
                "/v2/a/blobs/uploads/x".into(),
                repo("a", Action::Push),
            ),
            (Put, "/v2/a/blobs/uploads/x".into(), repo("a", Action::Push)),
            (
                Delete,
                "/v2/a/blobs/uploads/x".into(),
                repo("a", Action::Push),
            ),
            (Get, format!("/v2/a/referrers/{d}"), repo("a", Action::Pull)),
            (Post, "/v2/a/manifests/v1".into(), Needed::Nothing),
            (
                Get,
                "/v2/a/b/manifests/v1/scan".into(),
                repo("a/b", Action::Pull),
            ),
            (
                Head,
                "/v2/a/manifests/v1/scan".into(),
                repo("a", Action::Pull),
            ),
            (
                Post,
                "/v2/a/manifests/v1/scan".into(),
                repo("a", Action::Push),
            ),
            (Delete, "/v2/a/manifests/v1/scan".into(), Needed::Nothing),
            (
                Get,
                "/v2/a/b/scan/summary".into(),
                repo("a/b", Action::Pull),
            ),
            (Get, "/nowhere".into(), Needed::Nothing),
        ];
        for (method, path, want) in cases {
            assert_eq!(need(method, &path, ""), want, "{method:?} {path}");
        }
    }

    #[test]
    fn a_mount_also_reads_its_source() {
        let n = need(
            Method::Post,
            "/v2/to/blobs/uploads/",
            "mount=sha256%3A00&from=lib%2Fsrc",
        );
        assert_eq!(
            n,
            Needed::Repository {
                name: "to",
                action: Action::Push,
                mount_from: Some("lib/src".into())
            }
        );
        // `from` without `mount` is no mount.
        let n = need(Method::Post, "/v2/to/blobs/uploads/", "from=lib");
        assert_eq!(n, repo("to", Action::Push));
    }

    #[test]
    fn token_needs_name_the_scopes_a_challenge_asks_for() {
        use crate::auth::token::scope::{format_scopes, needed_scopes};
        let show = |n: &Needed<'_>, m| format_scopes(&needed_scopes(&token_needs(n, m)));
        assert_eq!(show(&Needed::Nothing, true), "");
        assert_eq!(show(&Needed::Catalog, true), "registry:catalog:*");
        let mount = need(
            Method::Post,
            "/v2/to/blobs/uploads/",
            "mount=sha256%3A00&from=lib%2Fsrc",
        );
        assert_eq!(show(&mount, false), "repository:to:push");
        assert_eq!(
            show(&mount, true),
            "repository:to:push repository:lib/src:pull"
        );
    }

    #[test]
    fn only_pushes_and_deletes_that_are_not_reads_change_things() {
        let upload = need(Method::Get, "/v2/a/blobs/uploads/x", "");
        assert!(!changes(&upload, Method::Get));
        let patch = need(Method::Patch, "/v2/a/blobs/uploads/x", "");
        assert!(changes(&patch, Method::Patch));
        let start = need(Method::Post, "/v2/a/blobs/uploads/", "");
        assert!(changes(&start, Method::Post));
        let pull = need(Method::Get, "/v2/a/manifests/v1", "");
        assert!(!changes(&pull, Method::Get));
        assert!(!changes(&Needed::Nothing, Method::Delete));
    }
}
