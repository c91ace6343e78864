//! A throwaway Redis: `redis-server` on a free 127.0.0.1 port with its files in a temp dir,
//! nothing persisted, stopped by its PID when dropped. Debian's `redis-server` package
//! (`apt-get install -y redis-server`, which `.ci/run` installs); `RINGYARD_REDIS_SERVER`
//! names another binary.

use super::{find_program, free_port, wait_for_port, TempDir};
use std::process::{Child, Command, Stdio};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
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
        let dir = TempDir::new("ringyard-redis")?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut child = Command::new(&bin)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .arg("--dir")
                .arg(dir.path())
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bin.display()))?;
            match wait_for_port(port, "redis-server", || {
                child.try_wait().ok().flatten().map(|s| s.to_string())
            }) {
                Ok(()) => {
                    return Ok(RedisServer {
                        child,
                        port,
                        _dir: dir,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The starter itself: the server answers PING on its port, and is gone after the drop.
    #[test]
    fn a_throwaway_redis_starts_and_stops() {
        let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
        let port = server.port;
        drop(server);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
