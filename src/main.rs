use clap::Parser;
use ringyard::config::Cli;

fn main() {
    let args = Cli::parse().serve_args();
    ringyard::log::set_quiet(args.quiet);
    if let Err(e) = ringyard::server::run(args.into()) {
        ringyard::log::error(format_args!("{e}"));
        std::process::exit(1);
    }
}
