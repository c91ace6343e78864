//! Authentication and access control, below the API and knowing nothing of HTTP: who a request
//! is from ([`Auth::identify`], from the `Authorization` header's [`credentials`]) and what they
//! may do where ([`rules`]). The API asks these before any handler runs (`api::authorize`) and
//! turns their answers into 401 challenges and 403s.
//!
//! Identities come from an htpasswd file ([`htpasswd`]), reloaded while the registry runs. A
//! bcrypt check runs on a pool of its own ([`crate::blocking`]), never on an event loop and
//! never queued behind the filesystem's work; a successful one is remembered ([`cache`]) so a
//! push pays one bcrypt, not one per request. Bearer tokens reach [`Credentials::Bearer`] and
//! are verified by [`token::service`] (our key and the external issuers'), cached per event
//! loop; a token's identity is its `sub` and what it may do is its `access` claim, not the
//! rules (the rules decided when the token was issued).
//!
//! Robot tokens ([`robot`]) are a second kind of identity: a Basic password that starts with
//! `ryt_` is checked against the metadata's robot tokens (never against htpasswd), and the
//! token's scopes are its rules. They need authentication on (`auth.htpasswd.path` or external
//! issuers): without it every request may do everything, and a token would restrict nothing. With the token
//! service on, users and robots alike get refresh tokens ([`Auth::refresh_binding`]), bound
//! to their kind and credential version and checked again when used
//! ([`Auth::refresh_subject`]).
//!
//! Without `auth.htpasswd.path` and without external token issuers there is no [`Auth`] at
//! all, and the API's anonymous path does no work for it. External issuers alone turn it on
//! with no users: tokens, robot secrets and the anonymous rules decide.

pub(crate) mod cache;
pub(crate) mod credentials;
pub mod htpasswd;
mod inflight;
pub(crate) mod robot;
pub mod robot_cmd;
pub(crate) mod rules;
pub mod token;

use crate::blocking::Pool;
use crate::config::Config;
pub use credentials::Credentials;
pub use rules::{Action, Actions, Rules, Who};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use token::challenge::ChallengeError;
use token::jwt::Claims;
use token::refresh::{Binding, RefreshClaims, SubjectKind};
use token::service::TokenService;
use token::settings::TokenSettings;
use token::TokenError;

/// Who a request is from, once its credentials were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    User(Arc<str>),
    /// A verified Bearer token: its `sub`, and its claims, whose `access` decides.
    Token(Rc<Claims>),
    /// A robot token, by its name, with its scopes.
    Robot(Arc<robot::Robot>),
}

impl Identity {
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(u) => Some(u),
            Identity::Token(c) => Some(&c.registered.sub),
            Identity::Robot(r) => Some(&r.name),
        }
    }

    pub fn who(&self) -> Who<'_> {
        match self {
            Identity::Anonymous => Who::Anonymous,
            Identity::User(u) => Who::User(u),
            Identity::Token(c) => Who::User(&c.registered.sub),
            Identity::Robot(r) => Who::Scoped(&r.grants),
        }
    }
}

/// Why a request's credentials were not accepted. Never a silent fallback to anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A user and password that do not match (or an unknown user: the answer is the same).
    WrongCredentials { user: String },
    /// A header that cannot be read as credentials.
    Malformed(&'static str),
    /// A Bearer token without a token service configured.
    Bearer,
    /// A Bearer token that does not verify.
    InvalidToken(TokenError),
    /// The verifying threads are gone (the process is stopping).
    Unavailable,
}

/// Why a refresh token's subject is not let in any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lapsed {
    /// Its credential is gone or changed: the reason, for the operator's log.
    Changed(String),
    /// The robot tokens could not be asked (the process is stopping).
    Unavailable,
}

/// What `/metrics` needs with authentication on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAccess {
    Authenticated,
    Open,
}

/// The configured authentication: users, rules and what answers need.
pub struct Auth {
    users: Arc<htpasswd::Store>,
    cache: Arc<cache::Cache>,
    /// Concurrent checks of the same credentials share one bcrypt.
    inflight: inflight::Inflight,
    pub rules: Rules,
    /// bcrypt's threads.
    pool: Pool,
    /// A request with wrong credentials waits this long for its 401.
    pub fail_delay: Duration,
    pub metrics: MetricsAccess,
    /// Tokens (`auth.token.*`): None, Basic challenges and no Bearer.
    pub token: Option<TokenService>,
    /// None until [`Auth::use_robot_tokens`]: robot secrets are then wrong credentials.
    robots: Option<robot::Robots>,
    /// None without an htpasswd file (external issuers only).
    _watcher: Option<htpasswd::Watcher>,
}

/// The `WWW-Authenticate` value of a 401: docker sends stored credentials only after one.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"ringyard\"";

impl Auth {
    /// The configured authentication: None without `auth.htpasswd.path` and without external
    /// token issuers. Reads the htpasswd file (a broken one stops the start with its line
    /// named) and starts its watcher. With external issuers alone there are no users: a team
    /// behind its own token server needs no password file, and requests come with its tokens
    /// (or robot secrets, or nothing, as the anonymous rules allow).
    pub fn start(cfg: &Config) -> Result<Option<Auth>, String> {
        if cfg.htpasswd.is_none() {
            if cfg.token_enabled {
                return Err(
                    "auth.token.enabled needs auth.htpasswd.path (--htpasswd FILE): the token \
                     service checks the credentials of its users there"
                        .into(),
                );
            }
            if cfg.token_external.is_empty() {
                if let Some(at) = cfg
                    .access
                    .iter()
                    .map(|r| &r.at)
                    .chain(cfg.groups.iter().map(|g| &g.at))
                    .next()
                {
                    return Err(format!(
                        "{at}: access rules need auth.htpasswd.path (--htpasswd FILE) or \
                         auth.token.external: without either every request is anonymous and \
                         nothing could be granted to anyone"
                    ));
                }
                return Ok(None);
            }
        }
        let rules = Rules::new(&cfg.access, &cfg.groups).map_err(|e| e.join("; "))?;
        let cache = Arc::new(cache::Cache::new(cache::TTL, cache::CAPACITY));
        let (users, watcher, source) = match cfg.htpasswd.as_deref() {
            Some(path) => {
                let path = PathBuf::from(path);
                let users = htpasswd::load(&path)?;
                let source = format!("{} users from {}", users.len(), path.display());
                let users = Arc::new(htpasswd::Store::new(users));
                let forget = cache.clone();
                let watcher = htpasswd::Watcher::start(path, users.clone(), move || forget.clear())
                    .map_err(|e| format!("cannot start threads: {e}"))?;
                (users, Some(watcher), source)
            }
            None => (
                Arc::new(htpasswd::Store::new(htpasswd::Users::new(Vec::new()))),
                None,
                "no htpasswd file (tokens of the external issuers, robot tokens)".to_string(),
            ),
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = Pool::new(threads, "ringyard-auth")
            .map_err(|e| format!("cannot start threads: {e}"))?;
        let ruled = if rules.is_open() {
            "no auth.access rules: every user may do everything, anonymous requests nothing"
        } else {
            "access by auth.access"
        };
        crate::log::info(format_args!("authentication: {source}; {ruled}"));
        Ok(Some(Auth {
            users,
            cache,
            inflight: inflight::Inflight::default(),
            rules,
            pool,
            fail_delay: cfg.auth_fail_delay,
            metrics: match cfg.auth_metrics.as_str() {
                "open" => MetricsAccess::Open,
                _ => MetricsAccess::Authenticated,
            },
            token: None,
            robots: None,
            _watcher: watcher,
        }))
    }

    /// Starts the token service of `auth.token.*`, if configured: loads or creates our key
    /// under `data_dir` (blocking: at start-up, before the event loops). `listen` (the
    /// configured host with the bound port) and `tls` give the default realm.
    pub fn start_tokens(
        &mut self,
        cfg: &Config,
        data_dir: &Path,
        listen: &str,
        tls: bool,
    ) -> Result<(), String> {
        let Some(settings) = TokenSettings::from_config(cfg) else {
            return Ok(());
        };
        let mut service = TokenService::start(settings, cfg.token_enabled, data_dir)
            .map_err(|e| format!("auth.token: {e}"))?;
        service.default_realm(listen, tls);
        let (realm, name) = service.settings.challenge_target();
        crate::log::info(format_args!(
            "token authentication: challenges name realm {realm} service {name}{}",
            match service.settings.external.as_slice() {
                [] => String::new(),
                ext => {
                    let names: Vec<&str> = ext.iter().map(|e| e.issuer.as_str()).collect();
                    format!("; tokens of external issuers {} trusted", names.join(", "))
                }
            }
        ));
        self.token = Some(service);
        Ok(())
    }

    /// The `WWW-Authenticate` of a 401 for a request that needs `scope` (Bearer with the
    /// token service on, else Basic, which has no scope).
    pub fn challenge(&self, scope: Option<&str>, error: Option<ChallengeError>) -> String {
        match &self.token {
            Some(t) => t.challenge(scope, error),
            None => BASIC_CHALLENGE.to_string(),
        }
    }

    /// Checks a password as Basic credentials would be (a robot secret against the robot
    /// tokens, else bcrypt on the auth pool, cached): the token service's password grant.
    pub async fn password(&self, user: String, password: String) -> Result<Identity, Refused> {
        match robot::looks_like(&password) {
            true => self.robot(user, &password).await,
            false => self.basic(user, password).await,
        }
    }

    /// What a refresh token for `caller` is bound to now; None for callers that cannot have
    /// one (anonymous, a Bearer token) and for a user removed since the check.
    pub fn refresh_binding(&self, caller: &Identity) -> Option<Binding> {
        match caller {
            Identity::User(user) => Some(Binding {
                kind: SubjectKind::User,
                cred: self.users.snapshot().1.credential_version(user)?,
                not_after: None,
            }),
            Identity::Robot(r) => Some(Binding {
                kind: SubjectKind::Robot,
                cred: r.stamp.credential_version(),
                not_after: r.stamp.expires_secs(),
            }),
            Identity::Anonymous | Identity::Token(_) => None,
        }
    }

    /// Who a verified refresh token's subject is now, and the binding of the one that
    /// replaces it: the user, if its htpasswd entry is unchanged; the robot with its current
    /// scopes, if its token is the same record, neither revoked nor expired (asked of the
    /// metadata as a secret's check is, so a revocation ends it as soon).
    pub async fn refresh_subject(
        &self,
        claims: &RefreshClaims,
    ) -> Result<(Identity, Binding), Lapsed> {
        let name = claims.registered.sub.as_str();
        let identity = match claims.kind {
            SubjectKind::User => Identity::User(name.into()),
            SubjectKind::Robot => {
                let robots = self.robots.as_ref().ok_or_else(|| {
                    Lapsed::Changed(format!("robot {name:?}: robot tokens are off"))
                })?;
                match robots.current(name, &claims.cred).await {
                    Ok(r) => Identity::Robot(Arc::new(r)),
                    Err(robot::Refusal::Unavailable) => return Err(Lapsed::Unavailable),
                    Err(why) => return Err(Lapsed::Changed(format!("robot {name:?}: {why:?}"))),
                }
            }
        };
        match self.refresh_binding(&identity) {
            Some(binding) if binding.cred == claims.cred => Ok((identity, binding)),
            _ => Err(Lapsed::Changed(format!(
                "user {name:?} removed or its password changed"
            ))),
        }
    }

    /// Accepts the robot tokens of this metadata (once it is open, after [`Auth::start`]).
    pub fn use_robot_tokens(&mut self, meta: crate::meta::Meta) {
        self.robots = Some(robot::Robots::new(meta));
    }

    /// Who sent a request with this `Authorization` header (None: no header, anonymous).
    pub async fn identify(&self, authorization: Option<&str>) -> Result<Identity, Refused> {
        let Some(header) = authorization else {
            return Ok(Identity::Anonymous);
        };
        match credentials::parse(header).map_err(|m| Refused::Malformed(m.0))? {
            Credentials::Bearer(token) => match &self.token {
                Some(service) => service
                    .verify(token, token::service::now())
                    .map(Identity::Token)
                    .map_err(Refused::InvalidToken),
                None => Err(Refused::Bearer),
            },
            Credentials::Basic { user, password } if robot::looks_like(&password) => {
                self.robot(user, &password).await
            }
            Credentials::Basic { user, password } => self.basic(user, password).await,
        }
    }

    /// A robot secret: SHA-256 and a lookup in memory, on the event loop (no bcrypt, no pool).
    async fn robot(&self, user: String, secret: &str) -> Result<Identity, Refused> {
        let checked = match &self.robots {
            Some(robots) => robots.verify(&user, secret).await,
            None => Err(robot::Refusal::Unknown),
        };
        match checked {
            Ok(r) => Ok(Identity::Robot(Arc::new(r))),
            Err(robot::Refusal::Unavailable) => Err(Refused::Unavailable),
            Err(_) => Err(Refused::WrongCredentials { user }),
        }
    }

    async fn basic(&self, user: String, password: String) -> Result<Identity, Refused> {
        let generation = self.users.generation();
        let fp = self.cache.fingerprint(generation, &user, &password);
        if let Some(known) = self.cache.get(&fp, Instant::now()) {
            return Ok(Identity::User(known));
        }
        // The users and their generation together: an entry is cached under the generation
        // of the users it was checked against.
        let (checked_in, users) = self.users.snapshot();
        let fp = if checked_in == generation {
            fp
        } else {
            self.cache.fingerprint(checked_in, &user, &password)
        };
        let leader = match self.inflight.join(fp) {
            inflight::Turn::Lead(leader) => Some(leader),
            inflight::Turn::Wait(answer) => match answer.await {
                Ok(true) => return Ok(Identity::User(user.into())),
                Ok(false) => return Err(Refused::WrongCredentials { user }),
                Err(_) => None,
            },
        };
        let (ok, user) = self
            .pool
            .run(move || (users.verify(&user, &password), user))
            .await
            .map_err(|_| Refused::Unavailable)?;
        let user: Arc<str> = user.into();
        if ok {
            self.cache.put(fp, user.clone(), Instant::now());
        }
        if let Some(leader) = leader {
            leader.answer(ok);
        }
        match ok {
            true => Ok(Identity::User(user)),
            false => Err(Refused::WrongCredentials {
                user: user.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{file, source};

    /// The example of the README's Authentication section is a valid file, and its rules
    /// decide as the prose around it says.
    #[test]
    fn readme_example_is_valid_and_decides_as_described() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Authentication").expect("the section")..];
        let start = section.find("```yaml\n").expect("a yaml example") + 8;
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let (assignments, filled, errors) = file::parse("README.md", example);
        assert!(errors.is_empty(), "{errors:?}");
        let mut cfg = source::resolve(assignments).unwrap();
        filled.iter().for_each(|f| f.apply(&mut cfg));
        assert_eq!(
            cfg.htpasswd.as_deref(),
            Some(std::path::Path::new("/etc/ringyard/htpasswd"))
        );
        let rules = Rules::new(&cfg.access, &cfg.groups).unwrap();
        let can = |who: Who, repo: &str, a: Action| rules.allowed(who, repo).contains(a);
        use Action::*;
        assert!(can(Who::User("bob"), "team/app", Push));
        assert!(!can(Who::User("bob"), "team/a/b", Push));
        assert!(
            can(Who::User("bob"), "team/a/b", Pull),
            "** gives every user pull"
        );
        assert!(can(Who::User("ci-bot"), "team/app", Delete));
        assert!(!can(Who::User("bob"), "team/secret", Pull));
        assert!(can(Who::User("carol"), "team/secret", Pull));
        assert!(can(Who::User("alice"), "team/secret", Delete), "admin");
        assert!(can(Who::Anonymous, "public/x", Pull));
        assert!(!can(Who::Anonymous, "team/app", Pull));
    }
}
