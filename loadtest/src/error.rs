//! The one error type of a request or workload step, classified by kind so the report can
//! say what went wrong (connect, timeout, status, digest ...) and not just how often.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// TCP connect failed or was refused.
    Connect,
    /// A request did not finish within its deadline.
    Timeout,
    /// The socket failed mid-request (reset, broken pipe, early close).
    Io,
    /// The peer sent something that is not valid HTTP/1.1 (or not the expected OCI JSON).
    Protocol,
    /// A non-2xx status.
    Status,
    /// A manifest or blob whose sha256 differs from its digest.
    Digest,
    /// A body whose length differs from the descriptor or Content-Length (short bodies too).
    Size,
    /// A job that never started because the run reached --max-seconds.
    NotRun,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Connect,
        Kind::Timeout,
        Kind::Io,
        Kind::Protocol,
        Kind::Status,
        Kind::Digest,
        Kind::Size,
        Kind::NotRun,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Timeout => "timeout",
            Kind::Io => "io",
            Kind::Protocol => "protocol",
            Kind::Status => "status",
            Kind::Digest => "digest",
            Kind::Size => "size",
            Kind::NotRun => "not_run",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
}

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Error {
        Error {
            kind,
            msg: msg.into(),
        }
    }

    pub fn io(e: std::io::Error) -> Error {
        let kind = if e.kind() == std::io::ErrorKind::TimedOut {
            Kind::Timeout
        } else {
            Kind::Io
        };
        Error::new(kind, e.to_string())
    }

    pub fn protocol(msg: impl Into<String>) -> Error {
        Error::new(Kind::Protocol, msg)
    }

    /// Prefixes the message with what was being done (`GET /v2/...`).
    pub fn context(mut self, what: &str) -> Error {
        self.msg = format!("{what}: {}", self.msg);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.kind.name(), self.msg)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
