//! The command line: `ringyard [serve] [FLAGS]`, `ringyard config check FILE`,
//! `ringyard config defaults`, `ringyard htpasswd add FILE USER`,
//! `ringyard token create|list|revoke`, `ringyard db migrate|status`. The serve flags come from the settings table (each setting's
//! flag, with its doc line, default and variable in the help) plus a few shortcuts; their values
//! are checked by the same parsers as the file's, so `--upload-expiry 90m` and
//! `--upload-expiry 5400` mean the same.

use super::settings::{self, Flag, Setting, SETTINGS};
use super::source::{Assignment, Origin};
use super::Config;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ringyard",
    version,
    about = "An OCI Distribution registry on per-core io_uring event loops.",
    long_about = "An OCI Distribution registry on per-core io_uring event loops.\n\n\
        Without a command it serves on localhost:5000 with its data in ./ringyard-data,\n\
        so `docker push localhost:5000/app:1` works at once and survives restarts.\n\
        The serve flags below may also be given without the word `serve`.\n\n\
        Settings come from flags, then RINGYARD_* environment variables, then the\n\
        --config file, then the defaults (`ringyard config defaults` prints them all).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `ringyard --listen ...` is `ringyard serve --listen ...`: the command is optional, so
    /// its flags are too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the registry (the default when no command is given).
    Serve(ServeArgs),
    /// Check a configuration file, or print one with every default.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage an htpasswd file of bcrypt entries (auth.htpasswd.path).
    #[command(subcommand)]
    Htpasswd(HtpasswdCommand),
    /// Manage robot tokens (for CI) in the data directory's metadata; works while the
    /// registry runs, which sees a change within half a second.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The metadata database's schema (database.url, else the SQLite database in the data
    /// directory).
    #[command(subcommand)]
    Db(DbCommand),
    /// Collect garbage: blobs that no manifest references (and, with gc.delete_untagged,
    /// manifests nothing keeps) idle longer than gc.grace. On a stopped registry's data
    /// directory (SQLite), or on a fleet's PostgreSQL and S3 while nodes run (one collector
    /// at a time).
    Gc(GcArgs),
    /// The vulnerability data scans match against: OSV records imported offline, in the
    /// database `serve` with the same --config/--root uses; works while the registry runs.
    #[command(subcommand)]
    Vulndb(VulndbCommand),
}

#[derive(Subcommand, Debug)]
pub enum VulndbCommand {
    /// Import OSV records from a directory of .json files (searched recursively) or an
    /// osv.dev all.zip, replacing the current data at once when done; the registry then
    /// re-evaluates stored scan results.
    Import {
        /// A directory, a .zip or a .json file.
        path: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
    /// What is loaded: version, record count, ecosystems, newest modification.
    Status {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Apply the schema migrations this binary knows (a start does too) and print the schema
    /// version; safe while other nodes run.
    Migrate {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Print the schema version, the versions this binary knows and whether a migration is
    /// needed; changes nothing. Exit 0 when up to date, 1 when not (or unreachable).
    Status {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Args, Debug, Clone)]
#[group(id = "mode", required = true, multiple = false)]
pub struct GcArgs {
    /// Print what would be deleted; change nothing.
    #[arg(long, group = "mode")]
    pub dry_run: bool,
    /// Delete it.
    #[arg(long, group = "mode")]
    pub delete: bool,
    /// List each manifest and blob.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

impl DbCommand {
    pub fn data(&self) -> &DataArgs {
        match self {
            DbCommand::Migrate { data } | DbCommand::Status { data } => data,
        }
    }
}

/// Where the data directory is, found as `serve` finds it: `--root`, else the configuration
/// file's `storage.root` (`--config` or RINGYARD_CONFIG), else RINGYARD_ROOT, else the
/// default.
#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Configuration file (YAML), as for serve [env: RINGYARD_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (storage.root), as for serve
    #[arg(long, value_name = "DIR")]
    pub root: Option<String>,
}

impl DataArgs {
    /// The same settings as `serve --config FILE --root DIR` would read.
    pub fn serve_args(&self) -> ServeArgs {
        let setting = settings::find("storage.root").expect("storage.root is a setting");
        ServeArgs {
            config: self.config.clone(),
            flags: self
                .root
                .iter()
                .map(|root| Assignment {
                    setting,
                    text: root.clone(),
                    origin: Origin::Flag("root".into()),
                })
                .collect(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a robot token and print its secret on standard output, once (only its SHA-256
    /// is stored). Use it as the password of NAME: `docker login -u NAME --password-stdin`.
    Create {
        /// The token's name: the user name of its Basic credentials.
        #[arg(long)]
        name: String,
        /// What it may do: `repository:PATTERN:ACTIONS`, PATTERN as in auth.access
        /// (`ci/*`, `team/**`), ACTIONS from pull, push, delete, * (repeatable).
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// How long it is valid (30d, 12h), or `never`.
        #[arg(long, value_name = "DURATION", default_value = "90d")]
        expires: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List the robot tokens: name, state, times and scopes (never a secret).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke NAME's token: refused from the next check on (within half a second by a
    /// running registry).
    Revoke {
        name: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum HtpasswdCommand {
    /// Write USER's entry into FILE (created if missing; an existing entry is replaced, other
    /// lines are kept), with the password read from standard input (one line; prompted for
    /// without echo on a terminal). The file is replaced atomically, so a running registry
    /// reloads either the old file or the new one.
    Add {
        file: PathBuf,
        user: String,
        /// bcrypt cost: each step doubles the time of a check (10: about 50 ms).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check FILE (with the RINGYARD_* environment variables) without starting; prints
    /// `FILE: ok`, or every problem with its line, and exits 2.
    Check { file: PathBuf },
    /// Print a configuration file with every setting at its default, each with its doc line,
    /// environment variable and flag.
    Defaults,
}

impl Cli {
    /// The serve flags, whichever way they were given (`ringyard serve ...` or `ringyard ...`).
    pub fn serve_args(self) -> ServeArgs {
        match self.command {
            Some(Command::Serve(a)) => a,
            _ => self.serve,
        }
    }
}

/// A flag that is not one setting's own: it sets several, or one to a fixed value.
struct Shortcut {
    name: &'static str,
    /// `None`: a switch that sets `fixed`.
    value_name: Option<&'static str>,
    help: &'static str,
    sets: &'static [&'static str],
    fixed: &'static str,
    conflicts: &'static [&'static str],
}

const SHORTCUTS: &[Shortcut] = &[
    Shortcut {
        name: "request-timeout",
        value_name: Some("DURATION"),
        help: "Both --head-timeout and --body-timeout.",
        sets: &["http.timeouts.head", "http.timeouts.body"],
        fixed: "",
        conflicts: &["head-timeout", "body-timeout"],
    },
    Shortcut {
        name: "quiet",
        value_name: None,
        help: "Log only warnings and errors (--log-level warn).",
        sets: &["log.level"],
        fixed: "warn",
        conflicts: &["log-level"],
    },
];

/// The serve flags as given: the configuration file and the settings' values, still text.
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// One per setting a flag gives, shortcuts first (they conflict with the flags they
    /// stand for, so the order never decides anything).
    pub flags: Vec<Assignment>,
}

/// `defaults` is computed once by the caller: each computation asks the system for the
/// core count, and clap builds these flags twice per run.
fn setting_arg(s: &'static Setting, flag: Flag, defaults: &Config) -> Arg {
    match flag {
        Flag::Value(name) => {
            let default = match s.show(defaults).trim_matches('"') {
                "" => String::new(),
                v => format!(" [default: {v}]"),
            };
            Arg::new(name)
                .long(name)
                .value_name(s.value_name())
                .allow_negative_numbers(true)
                .help(format!("{}{default} [env: {}]", s.doc, s.env()))
        }
        Flag::Switch { name, help, .. } => Arg::new(name)
            .long(name)
            .action(ArgAction::SetTrue)
            .help(format!("{help} [env: {}]", s.env())),
    }
}

fn shortcut_arg(sc: &Shortcut) -> Arg {
    let arg = Arg::new(sc.name)
        .long(sc.name)
        .help(sc.help)
        .conflicts_with_all(sc.conflicts);
    match sc.value_name {
        Some(v) => arg.value_name(v).allow_negative_numbers(true),
        None => arg.action(ArgAction::SetTrue),
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "Configuration file (YAML); `ringyard config defaults` prints one with \
                     every setting [env: RINGYARD_CONFIG]",
                ),
        );
        let defaults = Config::default();
        let cmd = SETTINGS
            .iter()
            .filter_map(|s| Some(setting_arg(s, s.flag?, &defaults)))
            .fold(cmd, |cmd, arg| cmd.arg(arg));
        SHORTCUTS
            .iter()
            .fold(cmd, |cmd, sc| cmd.arg(shortcut_arg(sc)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

fn text(m: &ArgMatches, id: &str) -> Option<String> {
    m.try_get_one::<String>(id).ok().flatten().cloned()
}

fn switch(m: &ArgMatches, id: &str) -> bool {
    m.try_get_one::<bool>(id)
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false)
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Vec::new();
        let mut push = |setting, text: String, name: &str| {
            flags.push(Assignment {
                setting,
                text,
                origin: Origin::Flag(name.to_string()),
            })
        };
        for sc in SHORTCUTS {
            let given = match sc.value_name {
                Some(_) => text(m, sc.name),
                None => switch(m, sc.name).then(|| sc.fixed.to_string()),
            };
            if let Some(v) = given {
                for key in sc.sets {
                    let s = settings::find(key).expect("shortcut to a known setting");
                    push(s, v.clone(), sc.name);
                }
            }
        }
        for s in SETTINGS {
            let given = match s.flag {
                Some(Flag::Value(name)) => text(m, name).map(|v| (v, name)),
                Some(Flag::Switch { name, sets, .. }) => {
                    switch(m, name).then(|| (sets.to_string(), name))
                }
                None => None,
            };
            if let Some((v, name)) = given {
                push(s, v, name);
            }
        }
        Ok(ServeArgs {
            config: m.try_get_one::<PathBuf>("config").ok().flatten().cloned(),
            flags,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::resolve;
    use std::path::Path;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<Config, Vec<String>> {
        let cli = Cli::try_parse_from(std::iter::once("ringyard").chain(args.iter().copied()))
            .map_err(|e| vec![e.to_string()])?;
        resolve(cli.serve_args().flags).map_err(|es| es.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn old_flags_keep_their_meaning() {
        let cfg = parse(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--root",
            "/tmp/r",
            "--workers",
            "2",
            "--upload-expiry",
            "90",
            "--max-manifest-bytes",
            "2048",
            "--no-delete",
            "--request-timeout",
            "7",
            "--idle-timeout",
            "8",
            "--shutdown-grace",
            "0",
            "--quiet",
        ])
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:0");
        assert_eq!(cfg.root, PathBuf::from("/tmp/r"));
        assert_eq!(cfg.workers, 2);
        assert_eq!(cfg.upload_expiry, Duration::from_secs(90));
        assert_eq!(cfg.max_manifest_bytes, 2048);
        assert!(!cfg.delete_enabled);
        assert_eq!(cfg.head_timeout, Duration::from_secs(7));
        assert_eq!(cfg.body_timeout, Duration::from_secs(7));
        assert_eq!(cfg.idle_timeout, Duration::from_secs(8));
        assert_eq!(cfg.shutdown_grace, Duration::ZERO);
        assert_eq!(cfg.log_level, crate::config::LogLevel::Warn);
    }

    #[test]
    fn new_flags_and_units() {
        let cfg = parse(&[
            "--read-only",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--max-connections",
            "50",
            "--metrics-listen",
            "127.0.0.1:9090",
            "--head-timeout",
            "1500ms",
            "--body-timeout",
            "2m",
            "--max-header-size",
            "16KiB",
            "--max-manifest-bytes",
            "1MiB",
            "--upload-expiry",
            "1h30m",
            "--no-access-log",
            "--no-metrics",
        ])
        .unwrap();
        assert!(cfg.read_only);
        assert_eq!(cfg.log_level, crate::config::LogLevel::Debug);
        assert_eq!(cfg.log_format, crate::config::LogFormat::Json);
        assert_eq!(cfg.max_connections, 50);
        assert_eq!(cfg.metrics_listen.as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(cfg.head_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.body_timeout, Duration::from_secs(120));
        assert_eq!(cfg.max_header_bytes, 16 * 1024);
        assert_eq!(cfg.max_manifest_bytes, 1 << 20);
        assert_eq!(cfg.upload_expiry, Duration::from_secs(5400));
        assert!(!cfg.access_log && !cfg.metrics_enabled);
    }

    #[test]
    fn bad_flag_values_name_the_flag() {
        assert_eq!(
            parse(&["--workers", "-3"]).unwrap_err(),
            [r#"--workers: "-3" is not a whole number"#]
        );
        assert_eq!(
            parse(&["--request-timeout", "x1"]).unwrap_err(),
            [r#"--request-timeout: "x1" is not a duration (use 30s, 5m, 1h)"#]
        );
        assert_eq!(
            parse(&["serve", "--head-timeout", "0"]).unwrap_err(),
            [r#"--head-timeout: "0" is zero; this must be longer"#]
        );
        let conflict = parse(&["--request-timeout", "5", "--head-timeout", "6"]).unwrap_err();
        assert!(conflict[0].contains("cannot be used with"), "{conflict:?}");
        assert!(parse(&["--quiet", "--log-level", "debug"]).is_err());
    }

    #[test]
    fn config_commands() {
        let cli = Cli::try_parse_from(["ringyard", "config", "check", "x.yaml"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Config(ConfigCommand::Check { file })) if file == Path::new("x.yaml")
        ));
        let cli = Cli::try_parse_from(["ringyard", "--config", "y.yaml"]).unwrap();
        assert_eq!(cli.serve_args().config, Some(PathBuf::from("y.yaml")));
        let cli = Cli::try_parse_from(["ringyard", "serve", "--config", "z.yaml"]).unwrap();
        assert_eq!(cli.serve_args().config, Some(PathBuf::from("z.yaml")));
        assert!(Cli::try_parse_from(["ringyard", "config", "check"]).is_err());
    }

    #[test]
    fn htpasswd_commands() {
        let cli = Cli::try_parse_from(["ringyard", "htpasswd", "add", "f", "alice"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Htpasswd(HtpasswdCommand::Add { file, user, cost: 10 }))
                if file == Path::new("f") && user == "alice"
        ));
        let args = ["ringyard", "htpasswd", "add", "f", "bob", "--cost", "12"];
        let cli = Cli::try_parse_from(args).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Htpasswd(HtpasswdCommand::Add { cost: 12, .. }))
        ));
        let args = ["ringyard", "htpasswd", "add", "f", "bob", "--cost", "3"];
        assert!(Cli::try_parse_from(args).is_err());
        assert!(Cli::try_parse_from(["ringyard", "htpasswd", "add", "f"]).is_err());
    }

    #[test]
    fn db_commands() {
        let cli = Cli::try_parse_from(["ringyard", "db", "status", "--root", "/tmp/r"]).unwrap();
        let Some(Command::Db(cmd @ DbCommand::Status { .. })) = cli.command else {
            panic!("not db status");
        };
        let cfg = resolve(cmd.data().serve_args().flags).unwrap();
        assert_eq!(cfg.root, PathBuf::from("/tmp/r"));
        let cli = Cli::try_parse_from(["ringyard", "db", "migrate", "--config", "c.yaml"]);
        assert!(matches!(
            cli.unwrap().command,
            Some(Command::Db(DbCommand::Migrate { data })) if data.config.is_some()
        ));
        assert!(Cli::try_parse_from(["ringyard", "db"]).is_err());
    }

    #[test]
    fn token_commands_find_the_data_directory_as_serve_does() {
        let args = [
            "ringyard",
            "token",
            "create",
            "--name",
            "ci",
            "--scope",
            "repository:ci/*:pull",
            "--scope",
            "repository:b:push",
            "--root",
            "/tmp/r",
        ];
        let cli = Cli::try_parse_from(args).unwrap();
        let Some(Command::Token(TokenCommand::Create {
            name,
            scopes,
            expires,
            data,
        })) = cli.command
        else {
            panic!("not token create");
        };
        assert_eq!((name.as_str(), expires.as_str()), ("ci", "90d"));
        assert_eq!(scopes, ["repository:ci/*:pull", "repository:b:push"]);
        let cfg = resolve(data.serve_args().flags).unwrap();
        assert_eq!(cfg.root, PathBuf::from("/tmp/r"));
        let no_scope = ["ringyard", "token", "create", "--name", "ci"];
        assert!(Cli::try_parse_from(no_scope).is_err());
        let cli = Cli::try_parse_from(["ringyard", "token", "list", "--config", "c.yaml"]);
        assert!(matches!(
            cli.unwrap().command,
            Some(Command::Token(TokenCommand::List { data })) if data.config.is_some()
        ));
        let cli = Cli::try_parse_from(["ringyard", "token", "revoke", "ci"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Token(TokenCommand::Revoke { name, .. })) if name == "ci"
        ));
    }
}
