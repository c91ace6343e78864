//! A round-robin TCP load balancer in front of several nodes, as an operator would put one
//! (no stickiness: each new connection goes to the next node that accepts it), so that real
//! clients pushing through it spread their connections, and so their requests, over every node.
//! A node that refuses connections (killed) is skipped, as a health-checking balancer would.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub struct RoundRobin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections handed to each node, in the order the nodes were given.
    counts: Arc<Vec<AtomicUsize>>,
    accept: Option<JoinHandle<()>>,
}

impl RoundRobin {
    /// Listens on a free loopback port and spreads connections over `nodes`.
    pub fn start(nodes: Vec<SocketAddr>) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new(nodes.iter().map(|_| AtomicUsize::new(0)).collect());
        let accept = {
            let (stop, counts) = (stop.clone(), counts.clone());
            thread::spawn(move || {
                let mut next = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((c, _)) => c,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Err(_) => continue,
                    };
                    let _ = client.set_nonblocking(false);
                    // The next node that answers; a dead one is passed over.
                    let upstream = (0..nodes.len()).find_map(|k| {
                        let i = (next + k) % nodes.len();
                        let s = TcpStream::connect_timeout(&nodes[i], Duration::from_secs(2));
                        s.ok().map(|s| (i, s))
                    });
                    let Some((i, upstream)) = upstream else {
                        continue;
                    };
                    next = i + 1;
                    counts[i].fetch_add(1, Ordering::SeqCst);
                    splice(client, upstream);
                }
            })
        };
        RoundRobin {
            addr,
            stop,
            counts,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:port`, for clients.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Connections each node has been handed so far.
    pub fn counts(&self) -> Vec<usize> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Copies both ways until either side closes, on two threads of their own.
fn splice(client: TcpStream, upstream: TcpStream) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
    };
    let (c2, u2) = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return,
    };
    pipe(client, upstream);
    pipe(u2, c2);
}
