//! The endpoint's addresses, looked up when a connection is opened rather than once at start,
//! so that an S3 service that moves (a load balancer's changing addresses, a failover) is
//! followed. A lookup is a blocking call (getaddrinfo), so it runs on a thread of its own
//! (a one-thread [`Pool`]) and the loop awaits it; its answer is kept for a short TTL so that
//! a busy node does not ask the resolver per connection, and forgotten when connecting to it
//! failed. An IP literal is never looked up (no thread at all).

use crate::blocking::Pool;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an answer is used before it is looked up again.
pub const TTL: Duration = Duration::from_secs(30);

/// A lookup of `host` and `port`; the system's by default, another in tests.
pub type Lookup = Arc<dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync>;

pub struct Resolver {
    host: String,
    port: u16,
    how: How,
}

enum How {
    Literal(SocketAddr),
    Lookup {
        lookup: Lookup,
        pool: Pool,
        ttl: Duration,
        /// The last answer and when it came.
        cached: Mutex<Option<(Arc<Vec<SocketAddr>>, Instant)>>,
    },
}

/// The system resolver's answer.
fn system(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

impl Resolver {
    /// For `host` (a name, or an IP literal, with or without brackets) and `port`, through
    /// the system's resolver.
    pub fn new(host: &str, port: u16) -> io::Result<Resolver> {
        Resolver::with(host, port, Arc::new(system), TTL)
    }

    pub fn with(host: &str, port: u16, lookup: Lookup, ttl: Duration) -> io::Result<Resolver> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let how = match bare.parse::<IpAddr>() {
            Ok(ip) => How::Literal(SocketAddr::new(ip, port)),
            Err(_) => How::Lookup {
                lookup,
                pool: Pool::new(1, "s3-dns")?,
                ttl,
                cached: Mutex::new(None),
            },
        };
        Ok(Resolver {
            host: bare.to_string(),
            port,
            how,
        })
    }

    /// The addresses to try, in the resolver's order.
    pub async fn addrs(&self) -> Result<Arc<Vec<SocketAddr>>, String> {
        let (lookup, pool, ttl, cached) = match &self.how {
            How::Literal(addr) => return Ok(Arc::new(vec![*addr])),
            How::Lookup {
                lookup,
                pool,
                ttl,
                cached,
            } => (lookup, pool, ttl, cached),
        };
        if let Some((addrs, at)) = &*cached.lock().expect("resolver cache") {
            if at.elapsed() < *ttl {
                return Ok(addrs.clone());
            }
        }
        let (host, port, lookup) = (self.host.clone(), self.port, lookup.clone());
        let answer = pool
            .run(move || lookup(&host, port))
            .await
            .map_err(|e| e.to_string())?;
        let addrs = match answer {
            Ok(a) if !a.is_empty() => Arc::new(a),
            Ok(_) => return Err(format!("{}: no address", self.host)),
            Err(e) => return Err(format!("looking up {}: {e}", self.host)),
        };
        *cached.lock().expect("resolver cache") = Some((addrs.clone(), Instant::now()));
        Ok(addrs)
    }

    /// Drops the cached answer: connecting to it failed, so the next connection looks again.
    pub fn forget(&self) {
        if let How::Lookup { cached, .. } = &self.how {
            *cached.lock().expect("resolver cache") = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

    #[test]
    fn answers_are_kept_for_the_ttl_and_dropped_after_a_failure() {
        let calls = Arc::new(AtomicUsize::new(0));
        let port = Arc::new(AtomicU16::new(1000));
        let (c, p) = (calls.clone(), port.clone());
        let lookup: Lookup = Arc::new(move |host, _| {
            assert_eq!(host, "s3.example");
            c.fetch_add(1, Ordering::SeqCst);
            Ok(vec![SocketAddr::from((
                [127, 0, 0, 1],
                p.load(Ordering::SeqCst),
            ))])
        });
        let ttl = Duration::from_millis(200);
        let r = Resolver::with("s3.example", 9000, lookup, ttl).unwrap();
        let port_of = |r: &Resolver| crate::testing::s3::run(r.addrs()).unwrap()[0].port();
        assert_eq!(port_of(&r), 1000);
        port.store(2000, Ordering::SeqCst);
        assert_eq!(port_of(&r), 1000, "within the TTL the answer is kept");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        std::thread::sleep(ttl);
        assert_eq!(port_of(&r), 2000, "after it, the name is looked up again");
        port.store(3000, Ordering::SeqCst);
        r.forget();
        assert_eq!(port_of(&r), 3000, "a failed connect forgets the answer");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn literals_are_not_looked_up_and_failures_say_what() {
        let never: Lookup = Arc::new(|_, _| panic!("an IP literal was looked up"));
        for (host, want) in [("127.0.0.1", "127.0.0.1:9"), ("[::1]", "[::1]:9")] {
            let r = Resolver::with(host, 9, never.clone(), TTL).unwrap();
            let got = crate::testing::s3::run(r.addrs()).unwrap();
            assert_eq!(got[0].to_string(), want);
        }
        let none: Lookup = Arc::new(|_, _| Ok(Vec::new()));
        let r = Resolver::with("nowhere.example", 9, none, TTL).unwrap();
        let e = crate::testing::s3::run(r.addrs()).unwrap_err();
        assert!(e.contains("no address"), "{e}");
        let r = Resolver::new("localhost", 9).unwrap();
        let got = crate::testing::s3::run(r.addrs()).unwrap();
        assert!(got.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
    }
}
