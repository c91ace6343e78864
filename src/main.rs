use clap::Parser;
use ringyard::config::cli::{Cli, Command, ConfigCommand, HtpasswdCommand, ServeArgs};
use ringyard::config::{self, ConfigError, EXIT_CONFIG, EXIT_START};

fn main() {
    let cli = Cli::parse();
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
