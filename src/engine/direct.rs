//! Replicas (a store with `Claims`): accepts are written by the http threads themselves, not by
//! the writer thread, whose batches of finished turns are each about ten round trips to the
//! database; an accept waiting behind one would wait for all of them. The http threads commit
//! together: the first to come writes what is waiting (its own message and any that arrived
//! meanwhile) in one autocommit statement while the others wait for it, then the next one
//! writes what queued up meanwhile. Alone, a message costs one round trip; under load, one
//! statement and one transaction serve many. Nothing is queued in this process afterwards: the
//! claimer, woken, claims the sessions from the database.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crossbeam_channel::Sender;

use super::writer::{AcceptError, StoreStatus};
use crate::domain::{JobKind, SessionKey};
use crate::store::{Accept, Store};

/// How often an accept waiting for the group being written looks whether the database answers.
const WAIT_STEP: std::time::Duration = std::time::Duration::from_millis(100);

pub(crate) struct Direct {
    store: Arc<dyn Store>,
    /// The claimer's wake-up channel.
    claimer: Sender<()>,
    /// `limits.queueCapacity`, counted in the database (`Claims::queued`).
    capacity: usize,
    group: Mutex<Group>,
    /// Told when a group's answers are in.
    answered: Condvar,
    /// The database's state as the renewer sees it: while it does not answer, accepts are
    /// refused at once (503) rather than left waiting on an http thread.
    status: Arc<StoreStatus>,
}

/// The messages waiting to be written, and the answers not yet taken.
#[derive(Default)]
struct Group {
    waiting: Vec<Waiting>,
    /// A thread is writing a group now.
    writing: bool,
    answers: HashMap<u64, Result<i64, AcceptError>>,
    next_ticket: u64,
}

struct Waiting {
    ticket: u64,
    key: SessionKey,
    kind: JobKind,
    payload: String,
}

impl Direct {
    pub(crate) fn new(store: Arc<dyn Store>, claimer: Sender<()>, capacity: usize) -> Direct {
        Direct { store, claimer, capacity, group: Mutex::default(), answered: Condvar::new(), status: Arc::default() }
    }

    /// The same, refusing accepts while `status` says the database does not answer.
    pub(crate) fn watching(self, status: Arc<StoreStatus>) -> Direct {
        Direct { status, ..self }
    }

    fn lock(&self) -> MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a message; its id once it is committed.
    pub(crate) fn accept(&self, key: SessionKey, kind: JobKind, payload: String) -> Result<i64, AcceptError> {
        if self.status.unanswered() {
            return Err(AcceptError::Store);
        }
        let mut group = self.lock();
        let ticket = group.next_ticket;
        group.next_ticket += 1;
        group.waiting.push(Waiting { ticket, key, kind, payload });
        loop {
            if let Some(answer) = group.answers.remove(&ticket) {
                return answer;
            }
            if group.writing {
                group = self.answered.wait_timeout(group, WAIT_STEP).unwrap_or_else(|p| p.into_inner()).0;
                // The group being written waits on a database that does not answer: a message
                // not in it yet is refused (never written), so its http thread is free again.
                if self.status.unanswered()
                    && let Some(i) = group.waiting.iter().position(|w| w.ticket == ticket)
                {
                    group.waiting.remove(i);
                    return Err(AcceptError::Store);
                }
                continue;
            }
            group.writing = true;
            let batch = std::mem::take(&mut group.waiting);
            drop(group);
            // A panic in the store must not leave the group marked as being written (every
            // accept would wait for ever): the batch is answered 503 instead.
            let answers = catch_unwind(AssertUnwindSafe(|| self.write(&batch)))
                .unwrap_or_else(|_| batch.iter().map(|_| None).collect());
            group = self.lock();
            for (w, a) in batch.iter().zip(answers) {
                group.answers.insert(w.ticket, a.ok_or(AcceptError::Store).and_then(|r| r));
            }
            group.writing = false;
            self.answered.notify_all();
        }
    }

    /// Writes a group in one statement; an answer for each (`None`: the store failed).
    fn write(&self, batch: &[Waiting]) -> Vec<Option<Result<i64, AcceptError>>> {
        let claims = self.store.claims().expect("direct accepts are for stores with claims");
        // If the database cannot say, the accepts go ahead: they will fail the same way (503).
        let room = self.capacity.saturating_sub(claims.queued().unwrap_or(0)).min(batch.len());
        let rows: Vec<Accept<'_>> = batch[..room].iter().map(|w| (&w.key, w.kind, w.payload.as_str())).collect();
        let mut answers: Vec<Option<Result<i64, AcceptError>>> = Vec::with_capacity(batch.len());
        if !rows.is_empty() {
            match self.store.commit_batch(&rows, &[]) {
                Ok(ids) => {
                    // A full channel means a wake-up is already pending.
                    let _ = self.claimer.try_send(());
                    answers.extend(ids.into_iter().map(|id| Some(Ok(id))));
                }
                Err(e) => {
                    // The logger folds repeats into one summary a minute.
                    log::error!("cannot write {} accepted message(s): {e}", rows.len());
                    answers.extend(rows.iter().map(|_| None));
                }
            }
        }
        answers.resize_with(batch.len(), || Some(Err(AcceptError::Full)));
        answers
    }
}

#[cfg(test)]
#[path = "direct_tests.rs"]
mod tests;
