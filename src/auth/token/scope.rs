//! Docker token scopes: `repository:team/app:pull,push`, `repository(plugin):name:pull`,
//! `registry:catalog:*`, and the same thing as a JWT `access` entry
//! (`{"type","class","name","actions"}`): one type, [`Scope`], is both, so a grant is written
//! into a token and read back without a conversion that could drift.
//!
//! The grammar is distribution's (docs/spec/auth/scope.md): the name may carry a registry host
//! with a port (`localhost:5000/app`), so a scope is split at its first and last `:`, never
//! naively in three. Unlike distribution's token server, which skips a malformed scope, one
//! is refused here with [`RequestError::InvalidScope`]: a client that asks for something
//! unreadable learns so, instead of receiving a token that silently lacks it.
//!
//! `*` is an action that stands for every action, as in distribution: a token granting `*`
//! satisfies any action on its resource.

use super::error::{truncated, RequestError};
use crate::oci::name::validate_name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// Scopes one request may ask for: docker asks for two or three (a push with a mount), so
/// this bound only stops a request built to make the grant loop and the token large.
pub const MAX_SCOPES: usize = 32;

/// A bound on one scope's text (a 255-character name plus a host and the actions).
const MAX_SCOPE_LEN: usize = 600;

/// The wildcard action.
pub const ANY_ACTION: &str = "*";

/// One resource and actions on it: a requested scope, a granted one, or a JWT `access` entry.
/// `actions` is kept sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The type's class (`plugin` in `repository(plugin)`); carried, never used for matching,
    /// as in distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

impl Scope {
    /// Parses one scope (no spaces: a space separates scopes, see [`parse_scopes`]).
    pub fn parse(text: &str) -> Result<Scope, RequestError> {
        let invalid = |reason| RequestError::InvalidScope {
            scope: truncated(text),
            reason,
        };
        if text.len() > MAX_SCOPE_LEN {
            return Err(invalid("too long"));
        }
        let (type_part, rest) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected type:name:actions"))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected type:name:actions"))?;
        let (resource_type, class) = parse_type(type_part).ok_or_else(|| invalid("bad type"))?;
        if !valid_resource_name(name) {
            return Err(invalid("bad resource name"));
        }
        let mut set = BTreeSet::new();
        for action in actions.split(',') {
            if !valid_action(action) {
                return Err(invalid("bad action"));
            }
            set.insert(action.to_string());
        }
        Ok(Scope {
            resource_type,
            class,
            name: name.to_string(),
            actions: set.into_iter().collect(),
        })
    }

    fn same_resource(&self, resource_type: &str, name: &str) -> bool {
        self.resource_type == resource_type && self.name == name
    }

    /// Whether these actions include `action`, `*` included.
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action || a == ANY_ACTION)
    }
}

/// `type[(class)]:name:action,action`, the inverse of [`Scope::parse`].
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource_type)?;
        if let Some(class) = &self.class {
            write!(f, "({class})")?;
        }
        write!(f, ":{}:{}", self.name, self.actions.join(","))
    }
}

/// `[a-z0-9]+` with an optional `([a-z0-9]+)` class.
fn parse_type(text: &str) -> Option<(String, Option<String>)> {
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match text.split_once('(') {
        None => word(text).then(|| (text.to_string(), None)),
        Some((ty, class)) => {
            let class = class.strip_suffix(')')?;
            (word(ty) && word(class)).then(|| (ty.to_string(), Some(class.to_string())))
        }
    }
}

/// `[a-z]+`, or the wildcard.
fn valid_action(action: &str) -> bool {
    action == ANY_ACTION || (!action.is_empty() && action.bytes().all(|b| b.is_ascii_lowercase()))
}

/// `[hostname '/'] component ['/' component]*`: a repository name as the OCI grammar has it,
/// optionally behind a `host[:port]` component.
fn valid_resource_name(name: &str) -> bool {
    if validate_name(name).is_ok() {
        return true;
    }
    match name.split_once('/') {
        Some((host, rest)) => valid_hostname(host) && validate_name(rest).is_ok(),
        None => false,
    }
}

/// `hostcomponent ('.' hostcomponent)* [':' port]`, a host component being letters, digits and
/// inner hyphens.
fn valid_hostname(host: &str) -> bool {
    let (labels, port) = match host.split_once(':') {
        Some((labels, port)) => (labels, Some(port)),
        None => (host, None),
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host.len() <= 255 && labels.split('.').all(label_ok) && port_ok
}

/// Parses the `scope` values of a request: each value may hold several scopes separated by
/// spaces (the POST form's one `scope`; some clients do it on GET too). Scopes naming the
/// same resource are merged, in the order they first appear.
pub fn parse_scopes<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Scope>, RequestError> {
    let mut scopes: Vec<Scope> = Vec::new();
    let mut count = 0;
    for text in values.into_iter().flat_map(|v| v.split(' ')) {
        if text.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_SCOPES {
            return Err(RequestError::TooManyScopes);
        }
        let scope = Scope::parse(text)?;
        match scopes
            .iter_mut()
            .find(|s| s.same_resource(&scope.resource_type, &scope.name))
        {
            Some(existing) => merge_actions(&mut existing.actions, scope.actions),
            None => scopes.push(scope),
        }
    }
    Ok(scopes)
}

fn merge_actions(into: &mut Vec<String>, more: Vec<String>) {
    into.extend(more);
    into.sort();
    into.dedup();
}

/// Scopes as one space-separated string: the `scope` of a challenge or a POST response.
pub fn format_scopes(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(Scope::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What to grant: for each requested scope, the requested actions that `allowed(type, name)`
/// permits. A resource with nothing allowed is left out, which is a partial grant, not an
/// error (docker then meets 401 `insufficient_scope` at the registry, as with distribution).
///
/// `*` on either side: asked `*`, the grant is everything allowed; allowed `*`, the grant is
/// everything asked.
pub fn grant<F, I>(requested: &[Scope], mut allowed: F) -> Vec<Scope>
where
    F: FnMut(&str, &str) -> I,
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    requested
        .iter()
        .filter_map(|scope| {
            let allowed: BTreeSet<String> = allowed(&scope.resource_type, &scope.name)
                .into_iter()
                .map(|a| a.as_ref().to_string())
                .collect();
            let actions: Vec<String> = if scope.actions.iter().any(|a| a == ANY_ACTION) {
                allowed.into_iter().collect()
            } else if allowed.contains(ANY_ACTION) {
                scope.actions.clone()
            } else {
                scope
                    .actions
                    .iter()
                    .filter(|a| allowed.contains(*a))
                    .cloned()
                    .collect()
            };
            (!actions.is_empty()).then(|| Scope {
                actions,
                ..scope.clone()
            })
        })
        .collect()
}

/// One action a request needs on one resource (a mount needs two: push on the target, pull
/// on the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need<'a> {
    pub resource_type: &'a str,
    pub name: &'a str,
    pub action: &'a str,
}

impl<'a> Need<'a> {
    pub fn repository(name: &'a str, action: &'a str) -> Self {
        Need {
            resource_type: "repository",
            name,
            action,
        }
    }
}

/// A verified token lacks something the request needs. `scope` is what to put into the
/// challenge's `scope` (every need, merged per resource), so that docker asks for all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsufficientScope {
    pub scope: String,
}

/// Whether a verified token's `access` covers every need.
pub fn authorize(needs: &[Need<'_>], access: &[Scope]) -> Result<(), InsufficientScope> {
    let covered = |need: &Need<'_>| {
        access
            .iter()
            .any(|s| s.same_resource(need.resource_type, need.name) && s.allows(need.action))
    };
    if needs.iter().all(covered) {
        return Ok(());
    }
    Err(InsufficientScope {
        scope: format_scopes(&needed_scopes(needs)),
    })
}

/// Needs as scopes, merged per resource in order of appearance.
pub fn needed_scopes(needs: &[Need<'_>]) -> Vec<Scope> {
    let mut scopes: Vec<Scope> = Vec::new();
    for need in needs {
        let action = vec![need.action.to_string()];
        match scopes
            .iter_mut()
            .find(|s| s.same_resource(need.resource_type, need.name))
        {
            Some(existing) => merge_actions(&mut existing.actions, action),
            None => scopes.push(Scope {
                resource_type: need.resource_type.to_string(),
                class: None,
                name: need.name.to_string(),
                actions: action,
            }),
        }
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> Scope {
        Scope::parse(text).unwrap()
    }

    #[test]
    fn parses_and_formats_the_common_scopes() {
        let s = scope("repository:team/app:push,pull");
        assert_eq!(s.resource_type, "repository");
        assert_eq!(s.class, None);
        assert_eq!(s.name, "team/app");
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_string(), "repository:team/app:pull,push");

        let catalog = scope("registry:catalog:*");
        assert_eq!(catalog.actions, ["*"]);
        assert_eq!(catalog.to_string(), "registry:catalog:*");

        let plugin = scope("repository(plugin):vieux/sshfs:pull");
        assert_eq!(plugin.resource_type, "repository");
        assert_eq!(plugin.class.as_deref(), Some("plugin"));
        assert_eq!(plugin.to_string(), "repository(plugin):vieux/sshfs:pull");
    }

    #[test]
    fn a_host_with_a_port_stays_in_the_name() {
        let s = scope("repository:localhost:5000/team/app:pull");
        assert_eq!(s.name, "localhost:5000/team/app");
        assert_eq!(s.actions, ["pull"]);
        let s = scope("repository:Registry.example.com/app:pull,delete");
        assert_eq!(s.name, "Registry.example.com/app");
        assert_eq!(s.actions, ["delete", "pull"]);
    }

    #[test]
    fn refuses_what_the_grammar_does_not_allow() {
        for bad in [
            "",
            "repository",
            "repository:app",
            ":app:pull",
            "Repository:app:pull",
            "repository(:app:pull",
            "repository()app:pull",
            "repository(plugin:app:pull",
            "repository:App:pull",
            "repository:app/:pull",
            "repository:/app:pull",
            "repository:a//b:pull",
            "repository:../etc:pull",
            "repository:app:",
            "repository:app:pull,",
            "repository:app:Pull",
            "repository:app:pu-ll",
            "repository:host:/app:pull",
            "repository:host:port/app:pull",
            "repository:-host/app:pull",
            "repository:localhost:5000:pull",
            "repository:app\n:pull",
        ] {
            assert!(
                matches!(Scope::parse(bad), Err(RequestError::InvalidScope { .. })),
                "{bad:?} accepted"
            );
        }
        let long = format!("repository:{}:pull", "a".repeat(700));
        assert!(Scope::parse(&long).is_err());
    }

    #[test]
    fn several_scopes_split_merge_and_are_bounded() {
        let scopes = parse_scopes([
            "repository:a:pull",
            "repository:b:push repository:a:push",
            "  registry:catalog:*",
        ])
        .unwrap();
        assert_eq!(
            format_scopes(&scopes),
            "repository:a:pull,push repository:b:push registry:catalog:*"
        );
        assert_eq!(parse_scopes([]).unwrap(), vec![]);
        let many: Vec<String> = (0..=MAX_SCOPES)
            .map(|i| format!("repository:r{i}:pull"))
            .collect();
        assert_eq!(
            parse_scopes(many.iter().map(String::as_str)),
            Err(RequestError::TooManyScopes)
        );
        assert!(parse_scopes(["repository:a:pull", "bad"]).is_err());
    }

    #[test]
    fn grant_is_the_intersection_and_partial_grants_are_fine() {
        let requested = parse_scopes([
            "repository:mine:pull,push",
            "repository:theirs:pull,push",
            "repository:secret:pull",
        ])
        .unwrap();
        let granted = grant(&requested, |ty, name| {
            assert_eq!(ty, "repository");
            match name {
                "mine" => vec!["pull", "push", "delete"],
                "theirs" => vec!["pull"],
                _ => vec![],
            }
        });
        assert_eq!(
            format_scopes(&granted),
            "repository:mine:pull,push repository:theirs:pull"
        );
    }

    #[test]
    fn grant_handles_the_wildcard_on_both_sides() {
        let all = parse_scopes(["registry:catalog:*", "repository:a:*"]).unwrap();
        let granted = grant(&all, |ty, _| match ty {
            "registry" => vec!["*"],
            _ => vec!["pull"],
        });
        assert_eq!(
            format_scopes(&granted),
            "registry:catalog:* repository:a:pull"
        );

        let asked = parse_scopes(["repository:a:pull,push"]).unwrap();
        let granted = grant(&asked, |_, _| ["*"]);
        assert_eq!(format_scopes(&granted), "repository:a:pull,push");
        assert!(grant(&all, |_, _| Vec::<String>::new()).is_empty());
    }

    #[test]
    fn access_entries_are_the_jwt_shape() {
        let s = scope("repository(plugin):a/b:pull");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"type":"repository","class":"plugin","name":"a/b","actions":["pull"]}"#
        );
        let plain: Scope =
            serde_json::from_str(r#"{"type":"repository","name":"a","actions":["push"]}"#).unwrap();
        assert_eq!(plain.class, None);
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"type":"repository","name":"a","actions":["push"]}"#
        );
    }

    #[test]
    fn authorize_says_what_is_missing() {
        let access = parse_scopes([
            "repository:a:pull,push",
            "repository:b:pull",
            "registry:catalog:*",
        ])
        .unwrap();
        assert_eq!(authorize(&[Need::repository("a", "push")], &access), Ok(()));
        assert_eq!(
            authorize(
                &[Need::repository("a", "push"), Need::repository("b", "pull")],
                &access
            ),
            Ok(())
        );
        let catalog = Need {
            resource_type: "registry",
            name: "catalog",
            action: "*",
        };
        assert_eq!(authorize(&[catalog], &access), Ok(()));
        // A mount from a repository the token may not pull: both needs go into the scope.
        let err = authorize(
            &[Need::repository("a", "push"), Need::repository("c", "pull")],
            &access,
        )
        .unwrap_err();
        assert_eq!(err.scope, "repository:a:push repository:c:pull");
        let err = authorize(
            &[Need::repository("b", "push"), Need::repository("b", "pull")],
            &access,
        )
        .unwrap_err();
        assert_eq!(err.scope, "repository:b:pull,push");
        // Same name, another type: not covered.
        let err = authorize(
            &[Need {
                resource_type: "registry",
                name: "a",
                action: "pull",
            }],
            &access,
        );
        assert!(err.is_err());
        assert!(authorize(&[Need::repository("a", "delete")], &access).is_err());
        assert!(authorize(&[], &[]).is_ok());
    }
}
