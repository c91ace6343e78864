//! One bcrypt per credentials at a time. A client that opens many connections at once (docker
//! pulls layers in parallel; a load generator opens 64) sends the same Basic credentials on
//! each before any check has finished and filled the cache: without this, every one of them
//! pays its own bcrypt (at cost 10, the first requests of 64 connections waited up to 3 s on
//! two cores). The first check of a fingerprint leads; the others wait for its answer.

use super::cache::Fingerprint;
use futures_channel::oneshot;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

#[derive(Default)]
pub struct Inflight {
    waiting: Mutex<HashMap<Fingerprint, Vec<oneshot::Sender<bool>>>>,
}

/// What a check of some credentials does: run bcrypt itself, or wait for the one running.
pub enum Turn<'a> {
    Lead(Leader<'a>),
    /// The leader's answer (whether the credentials are right); `Canceled` if the leader went
    /// away without one (its request was dropped): then check alone.
    Wait(oneshot::Receiver<bool>),
}

impl Inflight {
    pub fn join(&self, fp: Fingerprint) -> Turn<'_> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.get_mut(&fp) {
            Some(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Turn::Wait(rx)
            }
            None => {
                waiting.insert(fp, Vec::new());
                Turn::Lead(Leader {
                    set: self,
                    fp,
                    answered: false,
                })
            }
        }
    }

    fn take(&self, fp: &Fingerprint) -> Vec<oneshot::Sender<bool>> {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(fp)
            .unwrap_or_default()
    }
}

/// The check that runs bcrypt for a fingerprint. Dropped without [`Leader::answer`], its
/// waiters are told `Canceled`, never left waiting.
pub struct Leader<'a> {
    set: &'a Inflight,
    fp: Fingerprint,
    answered: bool,
}

impl Leader<'_> {
    /// Tells every waiter the answer. Call it after a right answer is in the cache, so that
    /// a check starting now finds it there rather than leading again.
    pub fn answer(mut self, ok: bool) {
        self.answered = true;
        for waiter in self.set.take(&self.fp) {
            let _ = waiter.send(ok);
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.answered {
            drop(self.set.take(&self.fp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocking::block_on;

    #[test]
    fn the_first_leads_and_the_others_get_its_answer() {
        let set = Inflight::default();
        let Turn::Lead(leader) = set.join([1; 32]) else {
            panic!("the first check leads")
        };
        let Turn::Wait(a) = set.join([1; 32]) else {
            panic!("the same credentials wait")
        };
        let Turn::Wait(b) = set.join([1; 32]) else {
            panic!("the same credentials wait")
        };
        let Turn::Lead(other) = set.join([2; 32]) else {
            panic!("other credentials lead on their own")
        };
        leader.answer(true);
        assert_eq!(block_on(a), Ok(true));
        assert_eq!(block_on(b), Ok(true));
        assert!(
            matches!(set.join([1; 32]), Turn::Lead(_)),
            "answered: a new check leads"
        );
        other.answer(false);
    }

    #[test]
    fn a_leader_gone_without_an_answer_cancels_its_waiters() {
        let set = Inflight::default();
        let leader = set.join([3; 32]);
        let Turn::Wait(waiter) = set.join([3; 32]) else {
            panic!("waits")
        };
        drop(leader);
        assert!(block_on(waiter).is_err());
        assert!(matches!(set.join([3; 32]), Turn::Lead(_)));
    }
}
