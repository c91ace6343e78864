use clap::Parser;
use ringyard::config::{Cli, Command, ServeArgs};

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => ServeArgs::default(),
    };
    ringyard::log::set_quiet(args.quiet);
    if let Err(e) = ringyard::server::run(args.into()) {
        ringyard::log::error(format_args!("{e}"));
        std::process::exit(1);
    }
}
