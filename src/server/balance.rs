//! Even shares of client connections across workers.
//!
//! Each worker's listener asks the kernel for the connections whose SYN its own CPU processed
//! (SO_INCOMING_CPU, see listen.rs), so a connection's packets, wakeups and server work stay
//! in one core's caches. Nothing in the kernel evens the workers out, though: when every
//! client happens to connect from one CPU, every connection lands on one worker and the other
//! cores idle (measured: manifest p99 4.2 ms instead of 0.3 ms). So a worker that accepts a
//! connection while holding clearly more than the least loaded worker passes the descriptor
//! to that worker, which serves it from then on.

use crate::observe::connections::Connections;
use futures_channel::mpsc;
use std::net::SocketAddr;
use std::sync::Arc;

/// A connection passed from the worker that accepted it to the worker that will serve it.
pub struct Handoff {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub slot: Slot,
}

pub struct Balancer {
    counts: Arc<Connections>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// A connection's place in the counts; dropping it (when the connection ends) gives the
/// place back. It travels with a handed-off connection.
pub struct Slot {
    counts: Arc<Connections>,
    worker: usize,
}

impl Slot {
    /// The worker that serves this connection.
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.remove(self.worker);
    }
}

impl Balancer {
    /// A balancer over the workers `counts` counts, and each worker's inbox of handed-off
    /// connections.
    pub fn new(counts: Arc<Connections>) -> (Arc<Balancer>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let workers = counts.per_worker().len();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| mpsc::unbounded()).unzip();
        let balancer = Balancer {
            counts,
            inboxes: senders.into(),
        };
        (Arc::new(balancer), receivers)
    }

    /// Client connections open across all workers.
    pub fn open(&self) -> usize {
        self.counts.open()
    }

    /// Counts a connection that worker `me` accepted, on the worker that should serve it.
    pub fn admit(&self, me: usize) -> Slot {
        let worker = choose(me, &self.counts.per_worker());
        self.counts.add(worker);
        if worker != me {
            self.counts.count_move();
        }
        Slot {
            counts: self.counts.clone(),
            worker,
        }
    }

    /// Passes a connection to the worker its slot names. If that worker is gone (the process
    /// is stopping), the connection is closed, as an unaccepted one would be.
    pub fn hand_off(&self, handoff: Handoff) {
        let to = handoff.slot.worker;
        let _ = self.inboxes[to].unbounded_send(handoff);
    }
}

/// Where a connection accepted by worker `me` goes, given each worker's load: it stays,
/// keeping the kernel's placement, unless `me` holds more than the least loaded worker by
/// more than the slack; then it goes to the least loaded one. The slack grows with the total
/// (an eighth of it) so that many connections from a few client threads keep most of their
/// placement, and is at least one, so a single connection never moves.
pub fn choose(me: usize, loads: &[usize]) -> usize {
    let total: usize = loads.iter().sum();
    let slack = 1 + total / 8;
    let (least, least_load) = loads
        .iter()
        .copied()
        .enumerate()
        .min_by_key(|&(_, l)| l)
        .unwrap_or((me, 0));
    if loads[me] > least_load + slack {
        least
    } else {
        me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_kernels_placement_while_shares_are_close() {
        assert_eq!(choose(0, &[0, 0]), 0);
        assert_eq!(choose(0, &[1, 0]), 0);
        assert_eq!(choose(1, &[3, 4]), 1);
        assert_eq!(choose(0, &[0]), 0);
    }

    #[test]
    fn moves_a_connection_off_a_worker_holding_more_than_its_share() {
        assert_eq!(choose(0, &[2, 0]), 1);
        assert_eq!(choose(1, &[5, 9, 2]), 2);
        // With 64 connections the slack is 9: 37 against 27 moves, 36 against 28 stays.
        assert_eq!(choose(0, &[37, 27]), 1);
        assert_eq!(choose(0, &[36, 28]), 0);
    }

    #[test]
    fn everything_accepted_on_one_worker_ends_up_nearly_even() {
        let counts = Arc::new(Connections::new(2));
        let (balancer, _inboxes) = Balancer::new(counts.clone());
        let slots: Vec<Slot> = (0..64).map(|_| balancer.admit(0)).collect();
        let on_one = slots.iter().filter(|s| s.worker() == 1).count();
        assert!((24..=32).contains(&on_one), "{on_one} of 64 moved");
        assert_eq!(counts.moved(), on_one as u64);
        assert_eq!(balancer.open(), 64);
        drop(slots);
        assert_eq!(counts.per_worker(), [0, 0]);
    }
}
