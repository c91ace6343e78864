//! A throwaway PostgreSQL server for tests: its own cluster in a temp dir,
//! a free port on 127.0.0.1, trust authentication, stopped (by its data directory through
//! `pg_ctl stop -m immediate`, then by the PID it wrote if that fails) and deleted on drop.
//! Never stopped by name: other helpers and tests run the same binaries.
//!
//! The binaries are Debian's (`apt-get install -y postgresql`, which `.ci/run` installs);
//! `RINGYARD_PG_BIN` points elsewhere. initdb refuses to run as root, so as root the cluster
//! is made and run as the `postgres` user the package creates.

use super::{free_port, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct PgServer {
    /// Removed (after the server stopped, in `drop`) as the last field dropped.
    dir: TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The uid and gid the server runs as (the `postgres` user when the tests run as root).
    owner: Option<(libc::uid_t, libc::gid_t)>,
}

/// Where the server binaries are, or why the tests cannot run.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("RINGYARD_PG_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    // The newest major version (the directory names are numbers).
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().ok_or_else(|| {
        "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: install them with \
         `apt-get install -y postgresql` (or run .ci/run, which does), or set RINGYARD_PG_BIN"
            .to_string()
    })
}

/// The `postgres` user, when running as root (initdb and the server refuse root).
fn run_as() -> Result<Option<(libc::uid_t, libc::gid_t)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: a valid C string; the returned record is read at once, before any other call
    // that could overwrite it (tests may race here, but only reading the same entry).
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if pw.is_null() {
        return Err(
            "running as root and there is no `postgres` user to run the test server \
                    as: install postgresql (`apt-get install -y postgresql`, or .ci/run)"
                .into(),
        );
    }
    // SAFETY: non-null, points at a passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown(path: &Path, owner: Option<(libc::uid_t, libc::gid_t)>) -> Result<(), String> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

impl PgServer {
    /// Starts a fresh cluster, or fails saying what is missing. Takes a second or two.
    pub fn start() -> Result<PgServer, String> {
        let bin = bin_dir()?;
        let owner = run_as()?;
        let dir = TempDir::new("ringyard-pg")?;
        let mut server = PgServer {
            data: dir.path().join("data"),
            dir,
            bin,
            port: 0,
            owner,
        };
        chown(server.dir.path(), owner)?;
        server.initdb()?;
        let mut last = String::new();
        // The server may lose the race for a free port: another try takes another.
        for _ in 0..3 {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        // The server's own locale, not the caller's (initdb fails on an unknown LANG).
        c.env("LC_ALL", "C").env_remove("LANG");
        c
    }

    fn run(&self, what: &str, mut c: Command) -> Result<Output, String> {
        let out = c
            .output()
            .map_err(|e| format!("{what}: cannot run {}: {e}", self.bin.display()))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn initdb(&self) -> Result<(), String> {
        let mut c = self.command("initdb");
        c.arg("-D")
            .arg(&self.data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        self.run("initdb", c).map(|_| ())
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        // A throwaway cluster: durability against power loss is not what these tests check.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options, "-w", "-t", "30", "start"]);
        self.run("pg_ctl start", c).map(|_| ()).map_err(|e| {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`: the URL form `database.url` takes.
    pub fn uri(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={database}",
            self.port
        )
    }

    /// Creates an empty database (one per test keeps tests on one server apart).
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let mut c = self.command("createdb");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .arg(name);
        self.run("createdb", c)?;
        Ok(self.url(name))
    }

    /// The postmaster's PID, from the file it keeps in its data directory.
    fn pid(&self) -> Option<libc::pid_t> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// Whether `pid` is a running process (a zombie waiting for its parent to reap it is not).
fn alive(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses.
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

impl Drop for PgServer {
    /// `pg_ctl stop -w` returns once the PID file is gone, a moment before the postmaster
    /// exits: the wait below covers that moment, and a stop that failed.
    fn drop(&mut self) {
        let pid = self.pid();
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "10", "stop"]);
        let stopped = self.run("pg_ctl stop", c).is_ok();
        if let Some(pid) = pid {
            if !stopped {
                // SAFETY: signals the PID this cluster recorded for itself.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself: a server starts, takes a database, answers on its port, and is gone
    /// (no process, no directory) after the drop.
    #[test]
    fn a_throwaway_server_starts_and_stops() {
        let server = PgServer::start().expect("start a throwaway PostgreSQL");
        server.create_database("harness").unwrap();
        let mut c = server.command("psql");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", "harness", "-At", "-c", "SELECT 40 + 2"]);
        let out = server.run("psql", c).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
        let pid = server.pid().expect("postmaster.pid");
        let dir = server.dir.path().to_path_buf();
        drop(server);
        assert!(!alive(pid), "server process gone");
        assert!(!dir.exists(), "temp dir removed");
    }
}
