//! A throwaway Redis: `redis-server` on a free 127.0.0.1 port with its files in a temp dir,
//! nothing persisted, stopped by its PID when dropped, and stopped and started again on the
//! same port and directory when a test needs an outage. Debian's `redis-server` package
//! (`apt-get install -y redis-server`, which `.ci/run` installs); `RINGYARD_REDIS_SERVER`
//! names another binary.

use super::{find_program, free_port, wait_for_port, TempDir};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct RedisServer {
    bin: PathBuf,
    /// None while stopped.
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts one, or says what is missing.
    pub fn start() -> Result<RedisServer, String> {
        let bin = find_program(
            "RINGYARD_REDIS_SERVER",
            "redis-server",
            &["/usr/bin", "/usr/sbin"],
            "apt-get install -y redis-server",
        )?;
        let mut server = RedisServer {
            bin,
            child: None,
            port: free_port()?,
            dir: TempDir::new("ringyard-redis")?,
        };
        // The free port may be taken before the server binds it: another one then.
        let mut tries = 0;
        loop {
            match server.run() {
                Ok(()) => return Ok(server),
                Err(e) if tries == 2 => return Err(e),
                Err(_) => {
                    tries += 1;
                    server.port = free_port()?;
                }
            }
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server by its PID and waits for it to exit; its port then refuses
    /// connections until [`restart`](Self::restart). Stopping a stopped server does nothing.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (stopping it first if it
    /// runs), and waits until it accepts connections. What it held is gone: nothing is
    /// persisted.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.run()
    }

    /// Spawns the server on `self.port` and waits for it to listen.
    fn run(&mut self) -> Result<(), String> {
        let mut child = Command::new(&self.bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        let ready = wait_for_port(self.port, "redis-server", || {
            child.try_wait().ok().flatten().map(|s| s.to_string())
        });
        match ready {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Whether the server on `port` answers PING.
    fn pongs(port: u16) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// The starter itself: the server answers PING on its port; stopped, the port refuses;
    /// restarted, the same port answers again (twice, and a stop of a stopped server is
    /// harmless); after the drop it is gone, and so is its directory.
    #[test]
    fn a_throwaway_redis_starts_stops_and_restarts() {
        let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
        let (port, dir) = (server.port, server.dir.path().to_path_buf());
        assert!(pongs(port));
        for _ in 0..2 {
            server.stop();
            server.stop();
            assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
            server.restart().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(server.port, port);
            assert!(pongs(port));
        }
        server.restart().unwrap_or_else(|e| panic!("{e}"));
        assert!(pongs(port), "a restart of a running server");
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        assert!(!dir.exists());
    }
}
