use clap::Parser;
use ringyard::config::cli::Cli;
use ringyard::config::Config;

fn main() {
    let cfg: Config = Cli::parse().serve_args().into();
    ringyard::log::configure(cfg.log_level, cfg.log_format);
    if let Err(e) = ringyard::server::run(cfg) {
        ringyard::log::error(format_args!("{e}"));
        std::process::exit(1);
    }
}
