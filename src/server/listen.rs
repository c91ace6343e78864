//! Listening sockets: one SO_REUSEPORT listener per worker and address, so the kernel places
//! connections on the cores without a shared accept queue (and balance.rs evens out what it
//! places unevenly). SO_REUSEPORT would also let a
//! second process silently share the port, so every address is first probed with a plain
//! bind: if anyone listens there, we refuse to start.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};

pub struct Bound {
    /// The addresses actually served (port 0 resolved to the chosen port).
    pub addrs: Vec<SocketAddr>,
    /// `per_worker[w]` holds worker w's listeners, one per address.
    pub per_worker: Vec<Vec<TcpListener>>,
}

/// `localhost` means both loopback addresses whatever /etc/hosts says (many hosts files list
/// only 127.0.0.1), so that clients resolving it to ::1 find the registry too.
fn resolve(listen: &str) -> Result<Vec<SocketAddr>, String> {
    if let Some(port) = listen.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in listen address {listen:?}"))?;
        return Ok(vec![
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        ]);
    }
    let mut addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve listen address {listen:?}: {e}"))?
        .collect();
    addrs.dedup();
    Ok(addrs)
}

/// Binds `listen` for `workers` workers; `flag` names the setting in error messages.
pub fn bind(listen: &str, workers: usize, flag: &str) -> Result<Bound, String> {
    let addrs = resolve(listen)?;
    if addrs.is_empty() {
        return Err(format!("listen address {listen:?} resolves to nothing"));
    }
    let several = addrs.len() > 1;
    let mut served = Vec::new();
    let mut port = addrs[0].port();
    for mut addr in addrs {
        if port != 0 {
            addr.set_port(port);
        }
        match probe_bind(addr) {
            Ok(probe) => {
                let local = probe.local_addr().map_err(|e| e.to_string())?;
                port = local.port();
                served.push(local);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(format!(
                    "address {addr} is already in use by another process; \
                     stop it or choose another port with {flag}"
                ));
            }
            Err(e) if several && addr.is_ipv6() => {
                crate::log::info(format_args!(
                    "not listening on {addr}: {e} (no IPv6 on this machine?)"
                ));
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
        // The probe closes here; the reuseport listeners below take its place at once.
    }
    if served.is_empty() {
        return Err(format!("no usable address for {listen:?}"));
    }
    let mut per_worker = Vec::with_capacity(workers);
    for w in 0..workers {
        let mut mine = Vec::with_capacity(served.len());
        for addr in &served {
            mine.push(
                reuseport_listener(*addr, super::worker::cpu_of(w))
                    .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
            );
        }
        per_worker.push(mine);
    }
    Ok(Bound {
        addrs: served,
        per_worker,
    })
}

/// How long an address in use is retried before giving up. A process that has just died can
/// hold its listening socket for some milliseconds more: io_uring tears a ring down
/// asynchronously, and a pending accept keeps the socket open until then (measured: ~20 ms
/// after SIGKILL). A restart right after a crash must not take that for another registry.
const IN_USE_RETRY: Duration = Duration::from_millis(500);

/// A plain bind of `addr`, retried while it is in use for up to [`IN_USE_RETRY`].
fn probe_bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + IN_USE_RETRY;
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A listener of the worker pinned to `cpu`. SO_INCOMING_CPU makes the kernel (6.1 and later)
/// hand a new connection to the listener of the CPU that processed its SYN: the worker then
/// runs where the connection's packets are handled (the NIC queue's CPU; on loopback, the
/// client's), so its socket, its wakeups and the kernel's network work stay on one core.
/// Nothing makes that placement even (one NIC queue, or clients that all connect from one
/// CPU, put every connection on one worker); the balancer (balance.rs) moves connections off
/// a worker that holds clearly more than its share. Measured on a 2-core VM, with the
/// balancer, against hash placement in the same rounds: manifest GETs at 64 connections
/// 248-261k -> 239-314k req/s with p99 0.34 -> 0.28-0.30 ms in three of four rounds; a
/// streamed 1 GiB push 678-806 -> 981-1,151 MB/s; blob GETs within noise. Older kernels
/// ignore the option and spread by hash.
fn reuseport_listener(addr: SocketAddr, cpu: usize) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Placement only; a kernel without the option still serves correctly.
    let _ = socket.set_cpu_affinity(cpu);
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_means_both_loopbacks() {
        let a = resolve("localhost:5000").unwrap();
        assert_eq!(a[0].to_string(), "127.0.0.1:5000");
        assert_eq!(a[1].to_string(), "[::1]:5000");
        assert!(resolve("localhost:x").is_err());
    }

    #[test]
    fn refuses_a_port_someone_listens_on() {
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        let err = bind(&addr.to_string(), 1, "--listen")
            .err()
            .expect("must refuse");
        assert!(err.contains("already in use"), "{err}");
    }

    #[test]
    fn port_zero_gives_every_worker_the_same_port() {
        let b = bind("127.0.0.1:0", 3, "--listen").unwrap();
        let port = b.addrs[0].port();
        assert_ne!(port, 0);
        for w in &b.per_worker {
            assert_eq!(w[0].local_addr().unwrap().port(), port);
        }
        // Each worker's listener asks for the connections arriving on that worker's CPU.
        for (w, listeners) in b.per_worker.iter().enumerate() {
            let sock = socket2::SockRef::from(&listeners[0]);
            assert_eq!(
                sock.cpu_affinity().unwrap(),
                crate::server::worker::cpu_of(w)
            );
        }
        // And a second registry cannot join it.
        assert!(bind(&format!("127.0.0.1:{port}"), 1, "--listen").is_err());
    }
}
