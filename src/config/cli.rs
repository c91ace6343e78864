//! The command line.

use super::{Config, LogLevel};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "ringyard",
    version,
    about = "An OCI Distribution registry on per-core io_uring event loops.",
    long_about = "An OCI Distribution registry on per-core io_uring event loops.\n\n\
        Without a command it serves on localhost:5000 with its data in ./ringyard-data,\n\
        so `docker push localhost:5000/app:1` works at once and survives restarts.\n\
        The serve flags below may also be given without the word `serve`.",
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
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT. A host name listens on every address it resolves to
    /// (localhost: 127.0.0.1 and ::1); port 0 picks a free port.
    #[arg(long, default_value = "localhost:5000")]
    pub listen: String,
    /// Data directory: blobs, upload sessions and the metadata database.
    #[arg(long, default_value = "./ringyard-data")]
    pub root: PathBuf,
    /// Worker threads, each with its own event loop and listener [default: number of cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Seconds of inactivity after which an upload session and its data are removed.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_expiry: u64,
    /// Largest manifest accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    pub max_manifest_bytes: u64,
    /// Refuse every DELETE with 405 UNSUPPORTED.
    #[arg(long)]
    pub no_delete: bool,
    /// Seconds a request head may take to arrive, and a body or a response may go without
    /// progress, before the connection is closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Seconds to let requests in flight finish after SIGTERM or SIGINT.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Log only warnings and errors.
    #[arg(long)]
    pub quiet: bool,
}

impl Cli {
    /// The serve settings, whichever way they were given.
    pub fn serve_args(self) -> ServeArgs {
        match self.command {
            Some(Command::Serve(a)) => a,
            None => self.serve,
        }
    }
}

impl From<ServeArgs> for Config {
    fn from(a: ServeArgs) -> Config {
        let d = Config::default();
        Config {
            listen: a.listen,
            root: a.root,
            workers: a.workers.map_or(d.workers, usize::from),
            upload_expiry: Duration::from_secs(a.upload_expiry),
            max_manifest_bytes: a.max_manifest_bytes as usize,
            delete_enabled: !a.no_delete,
            head_timeout: Duration::from_secs(a.request_timeout),
            body_timeout: Duration::from_secs(a.request_timeout),
            idle_timeout: Duration::from_secs(a.idle_timeout),
            shutdown_grace: Duration::from_secs(a.shutdown_grace),
            log_level: if a.quiet { LogLevel::Warn } else { d.log_level },
            ..d
        }
    }
}
