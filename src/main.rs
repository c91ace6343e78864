use clap::Parser;
use ringyard::config::cli::{
    Cli, Command, ConfigCommand, DataArgs, DbCommand, GcArgs, HtpasswdCommand, ServeArgs,
    TokenCommand, VulndbCommand,
};
use ringyard::config::{self, ConfigError, EXIT_CONFIG, EXIT_START};

fn main() {
    let cli = Cli::parse();
    if cli
        .command
        .as_ref()
        .is_some_and(|c| !matches!(c, Command::Serve(_)))
    {
        // A command's output piped into `head` ends quietly when the pipe closes, as other
        // tools do (Rust ignores SIGPIPE, so a write would fail and `println!` panic). The
        // server keeps ignoring it: a client closing its socket is not a reason to stop.
        // SAFETY: restores the default disposition of one signal before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let code = match &cli.command {
        Some(Command::Config(ConfigCommand::Check { file })) => match config::check(file) {
            Ok(line) => {
                println!("{line}");
                0
            }
            Err(errors) => report(&errors),
        },
        Some(Command::Config(ConfigCommand::Defaults)) => {
            print!("{}", config::settings::defaults_file());
            0
        }
        Some(Command::Htpasswd(HtpasswdCommand::Add { file, user, cost })) => {
            htpasswd_add(file, user, *cost)
        }
        Some(Command::Token(cmd)) => token(cmd),
        Some(Command::Db(cmd)) => db(cmd),
        Some(Command::Gc(args)) => gc(args),
        Some(Command::Vulndb(cmd)) => vulndb(cmd),
        _ => serve(&cli.serve_args()),
    };
    std::process::exit(code);
}

fn serve(args: &ServeArgs) -> i32 {
    let loaded = match config::load(args) {
        Ok(l) => l,
        Err(errors) => return report(&errors),
    };
    let sources = loaded.sources();
    let cfg = loaded.config;
    ringyard::log::configure(cfg.log_level, cfg.log_format);
    if !sources.is_empty() {
        ringyard::log::info(format_args!("configuration from {sources}"));
    }
    match ringyard::server::run(cfg) {
        Ok(()) => 0,
        Err(e) => {
            ringyard::log::error(format_args!("{e}"));
            EXIT_START
        }
    }
}

/// Every problem on its own line, as clap reports a bad command line; then exit status 2.
fn report(errors: &[ConfigError]) -> i32 {
    for e in errors {
        eprintln!("error: {e}");
    }
    EXIT_CONFIG
}

/// `ringyard token create|list|revoke`, on the metadata of the data directory that `serve`
/// with the same `--config`/`--root` would use (see `auth::robot_cmd`). Exit 2 for a bad
/// command line or configuration, 1 when the operation fails.
fn token(cmd: &TokenCommand) -> i32 {
    use ringyard::auth::robot_cmd;
    use ringyard::blocking::block_on;
    let data = match cmd {
        TokenCommand::Create { data, .. }
        | TokenCommand::List { data }
        | TokenCommand::Revoke { data, .. } => data,
    };
    let cfg = match command_config(data) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let expires = match cmd {
        TokenCommand::Create { expires, .. } if expires != "never" => {
            match config::value::parse_duration(expires) {
                Ok(d) => Some(d),
                Err(e) => {
                    eprintln!("error: --expires: {e}");
                    return EXIT_CONFIG;
                }
            }
        }
        _ => None,
    };
    let meta = match open_meta(&cfg) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let now = ringyard::meta::now_millis();
    let code = match cmd {
        TokenCommand::Create { name, scopes, .. } => {
            match block_on(robot_cmd::create(&meta, name, scopes, expires, now)) {
                Ok((secret, token)) => {
                    println!("{secret}");
                    let until = token.expires.map_or("never expires".into(), |e| {
                        format!("expires {}", robot_cmd::time(Some(e)))
                    });
                    eprintln!(
                        "created robot token {name} ({}), {until}; the secret above is shown \
                         this once: use it as {name}'s password",
                        scopes.join(" ")
                    );
                    if cfg.htpasswd.is_none() && cfg.token_external.is_empty() {
                        eprintln!(
                            "note: robot tokens are checked only with authentication on \
                             (auth.htpasswd.path / --htpasswd, or auth.token.external); without \
                             it every request is let in"
                        );
                    }
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        TokenCommand::List { .. } => match block_on(meta.robot_tokens()) {
            Ok(tokens) => {
                print!("{}", robot_cmd::table(&tokens, now));
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        TokenCommand::Revoke { name, .. } => match block_on(robot_cmd::revoke(&meta, name)) {
            Ok(true) => {
                eprintln!("revoked robot token {name}");
                0
            }
            Ok(false) => {
                eprintln!("error: no active robot token named {name:?} (`ringyard token list`)");
                1
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
    };
    meta.close();
    code
}

/// The configuration of a command on the registry's data (`token`, `db`), found as `serve`
/// finds it; the exit code when it cannot be used.
fn command_config(data: &DataArgs) -> Result<config::Config, i32> {
    let cfg = match config::load(&data.serve_args()) {
        Ok(l) => l.config,
        Err(errors) => return Err(report(&errors)),
    };
    // The metadata's start-up lines are for a server's log, not this command's output.
    ringyard::log::configure(config::LogLevel::Warn, cfg.log_format);
    Ok(cfg)
}

/// The metadata engine `serve` would use: PostgreSQL at database.url (one connection), else
/// SQLite in the data directory. Errors never show the database's password.
fn open_meta(cfg: &config::Config) -> Result<ringyard::meta::Meta, String> {
    if let Some(url) = cfg.database() {
        return ringyard::server::open_postgres(url, 1, None);
    }
    data_dir(cfg)?;
    ringyard::meta::Meta::open_sqlite(&cfg.root.join("meta.db"))
}

fn data_dir(cfg: &config::Config) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.root)
        .map_err(|e| format!("data directory {}: {e}", cfg.root.display()))
}

/// `ringyard db migrate|status` on the database `serve` would use. Exit 2 for a bad
/// configuration; status exits 1 when a migration is needed (or the database is newer).
fn db(cmd: &DbCommand) -> i32 {
    use ringyard::meta::schema;
    let cfg = match command_config(cmd.data()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (name, answer) = match (cmd, cfg.database()) {
        (DbCommand::Status { .. }, Some(url)) => {
            (config::redact_url(url), schema::postgres_status(url))
        }
        (DbCommand::Migrate { .. }, Some(url)) => {
            (config::redact_url(url), schema::postgres_migrate(url))
        }
        (cmd, None) => {
            let path = cfg.root.join("meta.db");
            let answer = match cmd {
                DbCommand::Status { .. } => schema::sqlite_status(&path),
                DbCommand::Migrate { .. } => {
                    data_dir(&cfg).and_then(|()| schema::sqlite_migrate(&path))
                }
            };
            (format!("SQLite {}", path.display()), answer)
        }
    };
    match (cmd, answer) {
        (_, Err(e)) => {
            eprintln!("error: {} ({name})", config::redact_url(&e));
            1
        }
        (DbCommand::Migrate { .. }, Ok(s)) => {
            println!("{name}: schema version {}", s.current);
            0
        }
        (DbCommand::Status { .. }, Ok(s)) => {
            println!("{name}: {}", s.describe());
            i32::from(s.needs_migration() || s.too_new())
        }
    }
}

/// `ringyard gc --dry-run|--delete [--verbose]`: one collection over the data `serve` with
/// the same `--config`/`--root` uses, with gc.grace and gc.delete_untagged from there; a
/// progress bar on a terminal. Exit 2 for a bad configuration, 1 when the collection fails.
fn gc(args: &GcArgs) -> i32 {
    use ringyard::lifecycle::gc::{self, Options, Progress, Report};
    let cfg = match command_config(&args.data) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rules = (
        ringyard::lifecycle::retention::Retention::new(&cfg.retention),
        ringyard::lifecycle::ImmutableTags::new(&cfg.immutable_tags),
    );
    let (retention, immutable) = match rules {
        (Ok(r), Ok(i)) => (r, i),
        (r, i) => {
            for e in r.err().into_iter().chain(i.err()).flatten() {
                eprintln!("error: {e}");
            }
            return config::EXIT_CONFIG;
        }
    };
    let rules = gc::Rules {
        retention: &retention,
        immutable: &immutable,
    };
    let bar = ProgressBar::new();
    // A running registry on this data directory collects when asked through its socket.
    let outcome: Result<Report, String> = match ask_registry(&cfg, args.dry_run, args.verbose, &bar)
    {
        Some(answer) => answer,
        None => match ringyard::server::open_collectable(&cfg) {
            Ok(target) => {
                let opts = Options {
                    grace: cfg.gc_grace,
                    delete_untagged: cfg.gc_delete_untagged,
                    dry_run: args.dry_run,
                    verbose: args.verbose,
                };
                let out = gc::collect(&target.meta, &target.blobs, opts, rules, &|p: Progress| {
                    bar.show(p)
                });
                target.meta.close();
                out
            }
            Err(e) => Err(config::redact_url(&e)),
        },
    };
    bar.clear();
    match outcome {
        Ok(report) => {
            if args.verbose {
                for item in &report.items {
                    println!("{item}");
                }
            }
            println!("{}", report.summary());
            if report.raced > 0 {
                eprintln!(
                    "note: {} item(s) found garbage were kept: a push referenced them meanwhile",
                    report.raced
                );
            }
            0
        }
        Err(e) => {
            eprintln!("error: garbage collection: {e}");
            1
        }
    }
}

/// `ringyard vulndb import PATH | status`, on the scan store `serve` with the same
/// `--config`/`--root` uses. Exit 2 for a bad configuration, 1 when the import fails.
fn vulndb(cmd: &VulndbCommand) -> i32 {
    use ringyard::scan::vulndb;
    let data = match cmd {
        VulndbCommand::Import { data, .. } | VulndbCommand::Status { data } => data,
    };
    let cfg = match command_config(data) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match vulndb::open_store(cfg.database(), &cfg.root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", config::redact_url(&e));
            return 1;
        }
    };
    match cmd {
        VulndbCommand::Status { .. } => match store.status() {
            Ok(status) => {
                print!("{}", vulndb::describe(status.as_ref()));
                0
            }
            Err(e) => {
                eprintln!("error: {}", config::redact_url(&e.to_string()));
                1
            }
        },
        VulndbCommand::Import { path, .. } => {
            let bar = ProgressBar::new();
            let started = std::time::Instant::now();
            let outcome = vulndb::import_path(&store, path, ringyard::meta::now_millis(), |p| {
                bar.show(ringyard::lifecycle::gc::Progress {
                    phase: "import",
                    done: p.done,
                    total: p.total.unwrap_or(0),
                })
            });
            bar.clear();
            match outcome {
                Ok((summary, status)) => {
                    for e in &summary.errors {
                        eprintln!("skipped {e}");
                    }
                    if summary.failed > summary.errors.len() as u64 {
                        eprintln!(
                            "skipped {} more file(s)",
                            summary.failed - summary.errors.len() as u64
                        );
                    }
                    println!(
                        "imported {} records from {} file(s) in {:.1}s",
                        summary.records,
                        summary.files,
                        started.elapsed().as_secs_f64()
                    );
                    print!("{}", vulndb::describe(Some(&status)));
                    0
                }
                Err(e) => {
                    eprintln!("error: {}", config::redact_url(&e));
                    1
                }
            }
        }
    }
}

/// The collection of the registry running on `cfg`'s data directory, through its admin
/// socket; None when no registry answers there (stopped, or killed and its socket stale).
fn ask_registry(
    cfg: &config::Config,
    dry_run: bool,
    verbose: bool,
    bar: &ProgressBar,
) -> Option<Result<ringyard::lifecycle::gc::Report, String>> {
    use ringyard::server::admin::{self, Line};
    use std::io::{BufRead, BufReader, Write};
    let path = cfg.root.join(admin::SOCKET);
    let mut conn = std::os::unix::net::UnixStream::connect(&path).ok()?;
    let failed = |e: std::io::Error| format!("asking the registry at {}: {e}", path.display());
    if let Err(e) = writeln!(conn, "{}", admin::request(dry_run, verbose)) {
        return Some(Err(failed(e)));
    }
    for line in BufReader::new(&conn).lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(failed(e))),
        };
        match admin::parse_line(&line) {
            Some(Line::Progress(p)) => bar.show(p),
            Some(Line::Report(r)) => return Some(Ok(r)),
            Some(Line::Error(e)) => return Some(Err(e)),
            None => return Some(Err(format!("the registry answered {line:?}"))),
        }
    }
    Some(Err(format!(
        "the registry at {} closed the connection before its report",
        path.display()
    )))
}

/// A one-line progress bar on standard error, drawn only on a terminal.
struct ProgressBar {
    tty: bool,
}

impl ProgressBar {
    fn new() -> ProgressBar {
        use std::io::IsTerminal;
        ProgressBar {
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, p: ringyard::lifecycle::gc::Progress) {
        use std::io::Write;
        if !self.tty || p.total == 0 {
            return;
        }
        const WIDTH: u64 = 30;
        let filled = (p.done.min(p.total) * WIDTH / p.total) as usize;
        eprint!(
            "\r{:<9} [{}{}] {}/{}",
            p.phase,
            "#".repeat(filled),
            " ".repeat(WIDTH as usize - filled),
            p.done,
            p.total
        );
        let _ = std::io::stderr().flush();
    }

    fn clear(&self) {
        if self.tty {
            eprint!("\r{:60}\r", "");
        }
    }
}

/// `ringyard htpasswd add FILE USER`: the password from standard input, never from the
/// command line (where `ps` and shell history would show it).
fn htpasswd_add(file: &std::path::Path, user: &str, cost: u32) -> i32 {
    use ringyard::auth::htpasswd;
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: reading the password from standard input: {e}");
            return EXIT_CONFIG;
        }
    };
    match htpasswd::add(file, user, &password, cost) {
        Ok(replaced) => {
            let what = if replaced { "updated" } else { "added" };
            eprintln!("{what} user {user} in {}", file.display());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_CONFIG
        }
    }
}

/// One line of standard input without its line end; on a terminal, prompted for with echo
/// off.
fn read_password() -> std::io::Result<String> {
    use std::io::BufRead;
    let fd = libc::STDIN_FILENO;
    // SAFETY: isatty and tcgetattr only read the descriptor's state into `saved`.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let tty = unsafe { libc::isatty(fd) == 1 && libc::tcgetattr(fd, &mut saved) == 0 };
    if tty {
        eprint!("Password: ");
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: sets the terminal's flags from a copy of its own; restored below.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if tty {
        // SAFETY: restores the state read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
        eprintln!();
    }
    read?;
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}
