use clap::Parser;
use ringyard::config::cli::{Cli, Command, ConfigCommand, ServeArgs};
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
