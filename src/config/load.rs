//! The edges: reading the file and the environment, and putting the sources together for
//! `serve` and `config check`. Everything else in this module is pure.

use super::cli::ServeArgs;
use super::source::{resolve, Assignment, ConfigError, Origin};
use super::{env, file, Config};
use std::path::Path;

/// Exit status for a configuration that cannot be used (as for a bad command line).
pub const EXIT_CONFIG: i32 = 2;
/// Exit status for a failure to start with a valid configuration (port in use, locked root).
pub const EXIT_START: i32 = 1;

/// A configuration, with the file and the variables it came from (flags are on the command
/// line for all to see).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<String>,
    pub env: Vec<String>,
}

impl Loaded {
    /// `ringyard.yaml, RINGYARD_HTTP_LISTEN`; empty when neither was used.
    pub fn sources(&self) -> String {
        let file = self.file.iter().map(String::as_str);
        let vars = self.env.iter().map(String::as_str);
        file.chain(vars).collect::<Vec<_>>().join(", ")
    }
}

/// What `serve` runs with: flags over environment over file over defaults.
pub fn load(args: &ServeArgs) -> Result<Loaded, Vec<ConfigError>> {
    let env = environment();
    let path = args.config.clone().or_else(|| {
        env.0
            .iter()
            .find(|(n, v)| n == "RINGYARD_CONFIG" && !v.is_empty())
            .map(|(_, v)| v.into())
    });
    combine(path.as_deref(), env, args.flags.clone())
}

/// `config check FILE`: the file with the environment, as `serve --config FILE` would see
/// them; the line to print when they are good.
pub fn check(path: &Path) -> Result<String, Vec<ConfigError>> {
    let loaded = combine(Some(path), environment(), Vec::new())?;
    Ok(if loaded.env.is_empty() {
        format!("{}: ok", path.display())
    } else {
        let vars = loaded.env.join(", ");
        format!("{}: ok (with {vars} from the environment)", path.display())
    })
}

fn combine(
    path: Option<&Path>,
    (vars, mut errors): (Vec<(String, String)>, Vec<ConfigError>),
    flags: Vec<Assignment>,
) -> Result<Loaded, Vec<ConfigError>> {
    let mut all = Vec::new();
    let mut sections = Vec::new();
    let file = path.map(|p| p.display().to_string());
    if let (Some(p), Some(name)) = (path, &file) {
        match read(p) {
            Ok(text) => {
                let (a, s, e) = file::parse(name, &text);
                all.extend(a);
                sections = s;
                errors.extend(e);
            }
            Err(e) => errors.push(e),
        }
    }
    let (from_env, e) = env::parse(vars);
    errors.extend(e);
    let env = from_env.iter().map(|a| a.origin.to_string()).collect();
    all.extend(from_env);
    all.extend(flags);
    match resolve(all) {
        Ok(mut config) if errors.is_empty() => {
            for s in &sections {
                s.apply(&mut config);
            }
            Ok(Loaded { config, file, env })
        }
        Ok(_) => Err(sorted(errors)),
        Err(e) => {
            errors.extend(e);
            Err(sorted(errors))
        }
    }
}

/// File problems by line, then variables, then flags.
fn sorted(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by_key(|e| match &e.origin {
        Origin::File { line, .. } => (0, line.unwrap_or(0)),
        Origin::Env(_) => (1, 0),
        Origin::Flag(_) => (2, 0),
    });
    errors
}

fn read(path: &Path) -> Result<String, ConfigError> {
    let at = Origin::File {
        path: path.display().to_string(),
        line: None,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ => e.to_string(),
        };
        ConfigError::new(
            at.clone(),
            None,
            format!("cannot read the configuration: {why}"),
        )
    })?;
    String::from_utf8(bytes)
        .map_err(|_| ConfigError::new(at, None, "not a YAML file: it is not UTF-8 text"))
}

/// The `RINGYARD_*` variables, and an error for each whose value is not UTF-8.
fn environment() -> (Vec<(String, String)>, Vec<ConfigError>) {
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    for (n, v) in std::env::vars_os() {
        let Some(n) = n.to_str().filter(|n| n.starts_with(env::PREFIX)) else {
            continue;
        };
        match v.into_string() {
            Ok(v) => vars.push((n.to_string(), v)),
            Err(_) => errors.push(ConfigError::new(
                Origin::Env(n.to_string()),
                None,
                "the value is not UTF-8 text",
            )),
        }
    }
    (vars, errors)
}
