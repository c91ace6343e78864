//! Minimal line logging to stderr. One line per event, written with a single `write` so lines
//! from different workers do not interleave. Structured logs and levels arrive with the
//! operations issue; until then this is the only place that formats log output.

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Sets the level and format of everything logged from here on; called once at startup.
pub fn configure(level: crate::config::LogLevel, _format: crate::config::LogFormat) {
    QUIET.store(level < crate::config::LogLevel::Info, Ordering::Relaxed);
}

fn emit(level: &str, args: Arguments<'_>) {
    let line = format!("ringyard {level}: {args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn info(args: Arguments<'_>) {
    if !QUIET.load(Ordering::Relaxed) {
        emit("info", args);
    }
}

pub fn warn(args: Arguments<'_>) {
    emit("warn", args);
}

pub fn error(args: Arguments<'_>) {
    emit("error", args);
}
