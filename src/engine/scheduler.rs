//! The per-session scheduler: which sessions have queued messages, and in which order they run.
//!
//! The scheduler keeps, in memory, the ids of queued messages per session and a FIFO of sessions
//! that have work and are not running. A worker takes a session from that FIFO and runs one
//! message of it (in one go, or in parts when it parks at outbound calls: the answer comes back
//! through the same FIFO as a `Resume`); once that turn is committed the session goes back to
//! the *end* of the FIFO if it has more.
//! So messages of one session run one at a time and in acceptance order, different sessions run
//! in parallel, no worker ever waits for another session, and a session flooded with a thousand
//! messages gets one turn per round like everybody else.
//!
//! The queue is on disk (the `inbox` table); the in-memory part is rebuilt from it at start-up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::effects::Parked;
use crate::domain::SessionKey;

/// What a worker is told to do next.
pub(crate) enum Job {
    /// Run the next message of this session.
    Run(SessionKey),
    /// Go on with the parked turn of this session's head message, with its call's answer.
    Resume(SessionKey, Parked),
    /// Exit the loop.
    Stop,
}

/// Per-session queues of message ids, and the FIFO of runnable sessions.
pub(crate) struct Scheduler {
    state: Mutex<Sched>,
    /// Signalled when the last started turn is done (shutdown waits for it).
    idle: Condvar,
    ready_tx: Sender<Job>,
    ready_rx: Receiver<Job>,
}

#[derive(Default)]
struct Sched {
    sessions: HashMap<SessionKey, VecDeque<i64>>,
    /// Messages queued or running, all sessions together.
    queued: usize,
    /// Sessions whose head message has started (running, parked, or its answer queued) and is
    /// not done yet.
    started: HashSet<SessionKey>,
}

impl Scheduler {
    pub(crate) fn new() -> Scheduler {
        // A session is in the FIFO at most once and has at least one queued message, so the
        // FIFO is bounded by `limits.queueCapacity` (the writer refuses beyond it) plus one Stop
        // per worker. Unbounded rather than `bounded(capacity)`, which would allocate every
        // slot of a large capacity up front.
        let (ready_tx, ready_rx) = unbounded();
        Scheduler { state: Mutex::default(), idle: Condvar::new(), ready_tx, ready_rx }
    }

    fn lock(&self) -> MutexGuard<'_, Sched> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an already stored message (start-up recovery, or the writer). Ids of one
    /// session must arrive in increasing order.
    pub(crate) fn enqueue(&self, key: SessionKey, id: i64) {
        if self.push(&key, id) {
            self.announce(key);
        }
    }

    /// `enqueue` without the wake-up, for a thread that holds a lock the woken worker may want
    /// (`inline.rs`): true if the session became runnable, and the caller then `announce`s it.
    pub(crate) fn push(&self, key: &SessionKey, id: i64) -> bool {
        let mut s = self.lock();
        s.queued += 1;
        let q = s.sessions.entry(key.clone()).or_default();
        q.push_back(id);
        q.len() == 1
    }

    /// Hands a session that `push` made runnable to the workers.
    pub(crate) fn announce(&self, key: SessionKey) {
        self.ready_tx.try_send(Job::Run(key)).expect("the ready FIFO has room for every session");
    }

    /// Messages queued or running.
    pub(crate) fn depth(&self) -> usize {
        self.lock().queued
    }

    /// Sessions with queued or running messages.
    pub(crate) fn active_sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    pub(crate) fn head(&self, key: &SessionKey) -> Option<i64> {
        self.lock().sessions.get(key).and_then(|q| q.front().copied())
    }

    /// The head message of `key` starts (a worker runs it): until it is done, shutdown waits
    /// for it (see `wait_started`).
    pub(crate) fn start(&self, key: &SessionKey) {
        self.lock().started.insert(key.clone());
    }

    /// Waits until every started turn is done, or until `deadline`; true when none is left.
    /// (At shutdown: a turn parked at an `http` node finishes if its calls answer in time.)
    pub(crate) fn wait_started(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        while !s.started.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.idle.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// Runs the head message of `key` again (its turn could not be written).
    pub(crate) fn retry(&self, key: SessionKey) {
        self.ready_tx.try_send(Job::Run(key)).expect("the ready FIFO has room for every session");
    }

    /// The head message of `key` is done (committed): drop it, and requeue the session if it
    /// has more.
    pub(crate) fn done(&self, key: SessionKey) {
        let mut s = self.lock();
        s.queued -= 1;
        if s.started.remove(&key) && s.started.is_empty() {
            self.idle.notify_all();
        }
        let q = s.sessions.get_mut(&key).expect("a running session has a queue");
        q.pop_front();
        if q.is_empty() {
            s.sessions.remove(&key);
        } else {
            self.ready_tx.try_send(Job::Run(key)).expect("the ready FIFO has room for every session");
        }
    }

    /// Hands a parked turn's answer to the workers. The session stays busy meanwhile: it is not
    /// in the FIFO while its head is parked, so this is its only entry.
    pub(crate) fn resume(&self, key: SessionKey, parked: Parked) {
        let _ = self.ready_tx.send(Job::Resume(key, parked));
    }

    /// Tells `n` workers to stop after their current turn.
    pub(crate) fn stop(&self, n: usize) {
        for _ in 0..n {
            // Room for one Stop per worker is reserved in `new`.
            let _ = self.ready_tx.try_send(Job::Stop);
        }
    }

    /// The FIFO of runnable sessions, for a worker to take from.
    pub(crate) fn ready(&self) -> Receiver<Job> {
        self.ready_rx.clone()
    }
}
