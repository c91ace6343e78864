//! Client connections counted per worker. The connection limit applies to their sum, the
//! balancer (crate::server::balance) evens them out, and metrics show them, so that an
//! operator can see whether the cores share the load.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub struct Connections {
    /// Connections assigned to each worker, including those on their way to it.
    per_worker: Box<[AtomicUsize]>,
    /// Connections passed from the worker that accepted them to another.
    moved: AtomicU64,
}

impl Connections {
    pub fn new(workers: usize) -> Connections {
        Connections {
            per_worker: (0..workers.max(1)).map(|_| AtomicUsize::new(0)).collect(),
            moved: AtomicU64::new(0),
        }
    }

    /// Each worker's count, as of now (the counts move while they are read).
    pub fn per_worker(&self) -> Vec<usize> {
        self.per_worker
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// All workers' connections together.
    pub fn open(&self) -> usize {
        self.per_worker
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    pub fn add(&self, worker: usize) {
        self.per_worker[worker].fetch_add(1, Ordering::Relaxed);
    }

    pub fn remove(&self, worker: usize) {
        self.per_worker[worker].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn count_move(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
}
