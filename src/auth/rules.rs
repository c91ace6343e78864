//! Who may do what in which repository: access rules modelled on zot's `accessControl`. Pure:
//! built once from the configuration's records, then asked per request without allocating.
//!
//! A repository is governed by the one pattern that matches it most specifically
//! ([`Specificity`]): an exact name before any pattern, then the pattern with more literal
//! characters, then the one with fewer `**`, then fewer `*`, then the earlier in the file. So
//! `team/app` is governed by `team/app`, else `team/*`, else `team/**`, else `**`; a repository
//! that no pattern matches allows nothing. Within its pattern a user gets the actions of every
//! policy naming them or one of their groups, the pattern's `default` (any user with valid
//! credentials) and its `anonymous` actions (a user may always do what anyone may). Admins may
//! do everything everywhere.
//!
//! With no rules at all, every user with valid credentials may do everything and anonymous
//! requests nothing: turning on htpasswd alone closes the registry to strangers and changes
//! nothing for the team.

use crate::config::auth::{AccessRule, Group};
use std::collections::{HashMap, HashSet};

/// The actions of Docker token scopes (`repository:NAME:pull,push,delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    /// The word in a token scope and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(word: &str) -> Option<Action> {
        match word {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const ALL: Actions = Actions(0b111);

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn with(self, a: Action) -> Actions {
        Actions(self.0 | a.bit())
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// The configuration's words; they were checked when the file was read, so an unknown one
    /// is left out rather than reported twice.
    fn from_words(words: &[String]) -> Actions {
        words
            .iter()
            .filter_map(|w| Action::parse(w))
            .fold(Actions::NONE, Actions::with)
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who<'a> {
    Anonymous,
    User(&'a str),
    /// A caller whose grants are its own rules (a robot token): the configuration's rules
    /// are not consulted for it.
    Scoped(&'a Grants),
}

/// Actions granted by pattern, as a robot token's scopes are: in a repository, what every
/// matching pattern grants together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants(Vec<(Pattern, Actions)>);

impl Grants {
    pub fn new(grants: Vec<(Pattern, Actions)>) -> Grants {
        Grants(grants)
    }

    pub fn allowed(&self, repository: &str) -> Actions {
        self.0
            .iter()
            .filter(|(p, _)| p.matches(repository))
            .fold(Actions::NONE, |all, (_, a)| all.union(*a))
    }
}

/// Of `items`, the one whose pattern (`pattern`) governs `repository`: the most specific that
/// matches, the first of equals (as `auth.access` rules are chosen; also retention rules and
/// quotas).
pub fn governing<'a, T>(
    items: &'a [T],
    pattern: impl Fn(&T) -> &Pattern,
    repository: &str,
) -> Option<&'a T> {
    let mut best: Option<&T> = None;
    for item in items.iter().filter(|i| pattern(i).matches(repository)) {
        if best.is_none_or(|b| pattern(item).specificity() > pattern(b).specificity()) {
            best = Some(item);
        }
    }
    best
}

/// How specific a pattern is; greater wins. Compared field by field: exact names first, then
/// literal characters, then fewer `**`, then fewer `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    exact: bool,
    literals: usize,
    fewer_double: std::cmp::Reverse<usize>,
    fewer_single: std::cmp::Reverse<usize>,
}

/// A repository pattern: `*` stands for any characters but `/`, `**` for any characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Checks the syntax beyond the characters the configuration reader allows: no empty
    /// path component, no `***`.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("the pattern is empty".into());
        }
        if text.contains("***") {
            return Err(format!("{text:?}: *** means nothing more than **"));
        }
        if text.split('/').any(str::is_empty) {
            return Err(format!("{text:?} has an empty path component"));
        }
        Ok(Pattern(text.to_string()))
    }

    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }

    pub fn specificity(&self) -> Specificity {
        let doubles = self.0.matches("**").count();
        let stars = self.0.bytes().filter(|&b| b == b'*').count();
        Specificity {
            exact: stars == 0,
            literals: self.0.len() - stars,
            fewer_double: std::cmp::Reverse(doubles),
            fewer_single: std::cmp::Reverse(stars - 2 * doubles),
        }
    }
}

/// Whether `name` matches `pat`; backtracking, fine for the short patterns of a configuration.
fn glob(pat: &[u8], name: &[u8]) -> bool {
    match pat {
        [] => name.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        [b'*', rest @ ..] => {
            let run = name.iter().position(|&b| b == b'/').unwrap_or(name.len());
            (0..=run).any(|i| glob(rest, &name[i..]))
        }
        [p, rest @ ..] => name.first() == Some(p) && glob(rest, &name[1..]),
    }
}

/// The policies of one pattern, merged from every record naming it.
#[derive(Debug)]
struct PatternRule {
    pattern: Pattern,
    anonymous: Actions,
    default: Actions,
    /// Per user, the actions that name them directly or through a group.
    users: HashMap<String, Actions>,
}

/// The rules of the configuration, ready to answer.
#[derive(Debug)]
pub struct Rules {
    /// Most specific first; empty: no rules (see the module doc).
    patterns: Vec<PatternRule>,
    admins: HashSet<String>,
}

impl Rules {
    /// Every problem at once, each naming its record (`auth.access[2] (line 14): ...`).
    pub fn new(access: &[AccessRule], groups: &[Group]) -> Result<Rules, Vec<String>> {
        let mut errors = Vec::new();
        let members: HashMap<&str, &Group> = groups.iter().map(|g| (g.name.as_str(), g)).collect();
        let admins = groups
            .iter()
            .filter(|g| g.admin)
            .flat_map(|g| g.users.iter().cloned())
            .collect();
        let mut patterns: Vec<PatternRule> = Vec::new();
        for rule in access {
            let pattern = match Pattern::parse(&rule.repository) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("{}: repository: {e}", rule.at));
                    continue;
                }
            };
            let i = match patterns.iter().position(|p| p.pattern == pattern) {
                Some(i) => i,
                None => {
                    patterns.push(PatternRule {
                        pattern,
                        anonymous: Actions::NONE,
                        default: Actions::NONE,
                        users: HashMap::new(),
                    });
                    patterns.len() - 1
                }
            };
            let p = &mut patterns[i];
            p.anonymous = p.anonymous.union(Actions::from_words(&rule.anonymous));
            p.default = p.default.union(Actions::from_words(&rule.default));
            let actions = Actions::from_words(&rule.actions);
            let mut grant = |user: &str| {
                let a = p.users.entry(user.to_string()).or_default();
                *a = a.union(actions);
            };
            rule.users.iter().for_each(|u| grant(u));
            for g in &rule.groups {
                match members.get(g.as_str()) {
                    Some(group) => group.users.iter().for_each(|u| grant(u)),
                    None => errors.push(format!(
                        "{}: groups: no group {g:?} in auth.groups",
                        rule.at
                    )),
                }
            }
        }
        // stable: among equals the earlier record's pattern wins
        patterns.sort_by_key(|p| std::cmp::Reverse(p.pattern.specificity()));
        if errors.is_empty() {
            Ok(Rules { patterns, admins })
        } else {
            Err(errors)
        }
    }

    /// Whether there are no rules: users may do everything, anonymous requests nothing.
    pub fn is_open(&self) -> bool {
        self.patterns.is_empty()
    }

    /// What `who` may do in `repository`.
    pub fn allowed(&self, who: Who<'_>, repository: &str) -> Actions {
        if let Who::Scoped(grants) = who {
            return grants.allowed(repository);
        }
        if let Who::User(u) = who {
            if self.is_open() || self.admins.contains(u) {
                return Actions::ALL;
            }
        }
        let Some(rule) = self.patterns.iter().find(|p| p.pattern.matches(repository)) else {
            return Actions::NONE;
        };
        match who {
            Who::Anonymous | Who::Scoped(_) => rule.anonymous,
            Who::User(u) => {
                let own = rule.users.get(u).copied().unwrap_or_default();
                own.union(rule.default).union(rule.anonymous)
            }
        }
    }

    /// Whether an anonymous request may pull anything anywhere: the catalog is then open to
    /// it (showing only what it may pull), else it is asked for credentials.
    pub fn anonymous_pulls_somewhere(&self) -> bool {
        self.patterns
            .iter()
            .any(|p| p.anonymous.contains(Action::Pull))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repository: &str, users: &[&str], actions: &[&str]) -> AccessRule {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        AccessRule {
            repository: repository.into(),
            users: words(users),
            groups: vec![],
            actions: words(actions),
            anonymous: vec![],
            default: vec![],
            at: format!("auth.access[?] ({repository})"),
        }
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    fn pat(p: &str) -> Pattern {
        Pattern::parse(p).unwrap()
    }

    #[test]
    fn patterns_match_by_path_component() {
        let cases = [
            ("**", "a", true),
            ("**", "a/b/c", true),
            ("team/*", "team/app", true),
            ("team/*", "team/app/x", false),
            ("team/*", "team", false),
            ("team/**", "team/app/x", true),
            ("team/**", "team", false),
            ("team/**", "teams/app", false),
            ("team", "team", true),
            ("team", "team2", false),
            ("*/app", "x/app", true),
            ("*/app", "x/y/app", false),
            ("**/app", "x/y/app", true),
            ("lib-*", "lib-core", true),
            ("lib-*", "lib-core/x", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY/c", false),
        ];
        for (p, name, want) in cases {
            assert_eq!(pat(p).matches(name), want, "{p} ~ {name}");
        }
    }

    #[test]
    fn pattern_syntax() {
        assert!(Pattern::parse("a/***").unwrap_err().contains("***"));
        assert!(Pattern::parse("a//b").unwrap_err().contains("empty path"));
        assert!(Pattern::parse("/a").is_err());
        assert!(Pattern::parse("").is_err());
    }

    /// The order the module doc promises, checked pairwise on a ladder from most to least
    /// specific.
    #[test]
    fn specificity_orders_exact_then_literals_then_fewer_stars() {
        let ladder = [
            "team/app", // exact
            "team/ap*", // 7 literals
            "team/a*",  // 6 literals
            "team/*",   // 5 literals, one *
            "team/**",  // 5 literals, one **
            "t*/**",    // 2 literals
            "*/*",      // 1 literal, two *
            "**/*",     // 1 literal, one ** and one *
            "**/**",    // 1 literal, two **
            "**",       // nothing literal
        ];
        for w in ladder.windows(2) {
            assert!(
                pat(w[0]).specificity() > pat(w[1]).specificity(),
                "{} before {}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn the_most_specific_matching_pattern_decides() {
        let rules = Rules::new(
            &[
                rule("**", &["carol"], &["pull"]),
                rule("team/**", &["bob"], &["pull", "push"]),
                rule("team/*", &["alice"], &["pull"]),
                rule("team/secret", &["dave"], &["pull"]),
            ],
            &[],
        )
        .unwrap();
        let a = |u: &str, r: &str| rules.allowed(Who::User(u), r);
        let pull = Actions::NONE.with(Action::Pull);
        // team/x is governed by team/*: bob's team/** grant does not reach it, carol's ** not
        assert_eq!(a("alice", "team/x"), pull);
        assert_eq!(a("bob", "team/x"), Actions::NONE);
        assert_eq!(a("carol", "team/x"), Actions::NONE);
        // deeper: team/**
        assert_eq!(a("bob", "team/x/y"), pull.with(Action::Push));
        assert_eq!(a("alice", "team/x/y"), Actions::NONE);
        // exact
        assert_eq!(a("dave", "team/secret"), pull);
        assert_eq!(a("alice", "team/secret"), Actions::NONE);
        // elsewhere: **
        assert_eq!(a("carol", "other"), pull);
        assert_eq!(rules.allowed(Who::Anonymous, "other"), Actions::NONE);
    }

    /// A table of users x repositories x actions over groups, defaults, anonymous policies
    /// and admins.
    #[test]
    fn rules_table() {
        let mut public = rule("public/**", &[], &[]);
        public.anonymous = words(&["pull"]);
        public.default = words(&["pull"]);
        let mut team = rule("team/*", &["erin"], &["pull"]);
        team.groups = words(&["dev"]);
        team.actions = words(&["pull", "push"]);
        let mut team_reader = rule("team/*", &["frank"], &["pull"]);
        team_reader.default = words(&[]);
        let mut public_writer = rule("public/**", &[], &["push"]);
        public_writer.groups = words(&["dev"]);
        let groups = [
            Group {
                name: "dev".into(),
                users: words(&["bob", "carol"]),
                admin: false,
                at: "auth.groups.dev".into(),
            },
            Group {
                name: "ops".into(),
                users: words(&["root"]),
                admin: true,
                at: "auth.groups.ops".into(),
            },
        ];
        let rules = Rules::new(&[public, team, team_reader, public_writer], &groups).unwrap();
        let s = |a: Actions| {
            [Action::Pull, Action::Push, Action::Delete]
                .iter()
                .map(|&x| if a.contains(x) { x.as_str() } else { "-" })
                .collect::<Vec<_>>()
                .join(",")
        };
        let table = [
            // who, repository, allowed
            (None, "public/a", "pull,-,-"),
            (None, "team/a", "-,-,-"),
            (None, "private", "-,-,-"),
            (Some("bob"), "public/a/b", "pull,push,-"),
            (Some("bob"), "team/a", "pull,push,-"),
            (Some("carol"), "team/a", "pull,push,-"),
            (Some("erin"), "team/a", "pull,push,-"),
            (Some("frank"), "team/a", "pull,-,-"),
            (Some("frank"), "public/x", "pull,-,-"),
            (Some("frank"), "team/a/b", "-,-,-"),
            (Some("zed"), "team/a", "-,-,-"),
            (Some("zed"), "public/x", "pull,-,-"),
            (Some("root"), "private", "pull,push,delete"),
            (Some("root"), "team/a", "pull,push,delete"),
        ];
        for (who, repo, want) in table {
            let w = who.map_or(Who::Anonymous, Who::User);
            assert_eq!(s(rules.allowed(w, repo)), want, "{who:?} {repo}");
        }
        assert!(rules.anonymous_pulls_somewhere());
    }

    #[test]
    fn no_rules_let_users_do_everything_and_anonymous_nothing() {
        let rules = Rules::new(&[], &[]).unwrap();
        assert!(rules.is_open());
        assert_eq!(rules.allowed(Who::User("anyone"), "x/y"), Actions::ALL);
        assert_eq!(rules.allowed(Who::Anonymous, "x/y"), Actions::NONE);
        assert!(!rules.anonymous_pulls_somewhere());
    }

    #[test]
    fn problems_name_their_record() {
        let mut r = rule("team/*", &[], &["pull"]);
        r.groups = words(&["nobody"]);
        let errors = Rules::new(&[r, rule("a//b", &[], &[])], &[]).unwrap_err();
        assert_eq!(
            errors,
            [
                "auth.access[?] (team/*): groups: no group \"nobody\" in auth.groups",
                "auth.access[?] (a//b): repository: \"a//b\" has an empty path component",
            ]
        );
    }
}
