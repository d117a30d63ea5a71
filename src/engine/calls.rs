//! The call threads: outbound calls of parked turns (`http` nodes, Rasa), performed off the
//! workers, so that an API that answers slowly holds a call thread, never a worker.
//!
//! At most `limits.maxConcurrentCalls` calls are in flight; threads are started on demand up
//! to that number and then kept (a Flow without outbound calls starts none). Waiting calls
//! are queued per endpoint and taken round robin, so one endpoint with a slow API cannot
//! occupy every call thread while another endpoint's calls wait behind it. A finished call's
//! answer goes back to the scheduler as a `Resume` job, which any worker picks up.
//!
//! Nothing here is durable: a parked `http` call's turn has its checkpoint in the store, so
//! after a crash (or a shutdown, which does not wait for calls) the turn parks again at the
//! same node and the call is made again; a Rasa call is simply asked again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::Scheduler;
use super::effects::{Call, Parked, perform};
use crate::domain::SessionKey;
use crate::ops::metrics::Metrics;

/// The handle the workers use to hand over a call.
#[derive(Clone)]
pub(crate) struct Calls {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<Pool>,
    work: Condvar,
    /// Signalled when the last call in flight or waiting is done (shutdown waits for it).
    idle: Condvar,
    max: usize,
    agent: ureq::Agent,
    sched: Arc<Scheduler>,
    metrics: Arc<Metrics>,
}

/// One call waiting for a thread.
struct Job {
    key: SessionKey,
    id: i64,
    call: Call,
}

#[derive(Default)]
struct Pool {
    /// Waiting calls by endpoint.
    queues: HashMap<String, VecDeque<Job>>,
    /// Endpoints with waiting calls, in the order they are served.
    turn: VecDeque<String>,
    /// Calls in `queues`.
    waiting: usize,
    /// Calls being made.
    in_flight: usize,
    threads: usize,
    idle: usize,
    stopping: bool,
}

impl Pool {
    /// The next waiting call, round robin over endpoints.
    fn next(&mut self) -> Option<Job> {
        let endpoint = self.turn.pop_front()?;
        let queue = self.queues.get_mut(&endpoint).expect("an endpoint in turn has a queue");
        let job = queue.pop_front().expect("an endpoint in turn has a waiting call");
        self.waiting -= 1;
        if queue.is_empty() {
            self.queues.remove(&endpoint);
        } else {
            self.turn.push_back(endpoint);
        }
        Some(job)
    }
}

impl Calls {
    pub(crate) fn new(max: usize, agent: ureq::Agent, sched: Arc<Scheduler>, metrics: Arc<Metrics>) -> Calls {
        let inner =
            Inner { state: Mutex::default(), work: Condvar::new(), idle: Condvar::new(), max, agent, sched, metrics };
        Calls { inner: Arc::new(inner) }
    }

    /// Queues the call of the parked turn of message `id`; its answer resumes the turn.
    pub(crate) fn submit(&self, key: SessionKey, id: i64, call: Call) {
        let mut pool = self.inner.lock();
        let endpoint = key.endpoint.clone();
        let queue = pool.queues.entry(endpoint.clone()).or_default();
        if queue.is_empty() {
            pool.turn.push_back(endpoint);
        }
        pool.queues.get_mut(&key.endpoint).expect("just made").push_back(Job { key, id, call });
        pool.waiting += 1;
        self.inner.metrics.call_queued();
        // A thread more whenever the idle ones (which may not have woken yet) are fewer than the
        // waiting calls: otherwise a burst would queue behind one idle thread.
        if pool.waiting > pool.idle && pool.threads < self.inner.max {
            let n = pool.threads;
            let inner = self.inner.clone();
            match std::thread::Builder::new().name(format!("call-{n}")).spawn(move || run(&inner)) {
                Ok(_) => pool.threads += 1,
                // The call waits for a thread that exists, or for the next submit to try again.
                Err(e) => log::error!("cannot start a call thread ({e}); {} thread(s) serve the calls", pool.threads),
            }
        } else {
            self.inner.work.notify_one();
        }
    }

    /// Waits until no call is waiting or in flight, or until `deadline`; true when none is.
    /// (At shutdown: parked turns whose calls answer in time finish; the others keep their
    /// checkpoint for the next start.)
    pub(crate) fn wait_idle(&self, deadline: std::time::Instant) -> bool {
        let mut pool = self.inner.lock();
        while pool.waiting + pool.in_flight > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            pool = self.inner.idle.wait_timeout(pool, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// Tells the call threads to end after their current call; waiting calls are dropped (their
    /// turns park again after the next start).
    pub(crate) fn stop(&self) {
        self.inner.lock().stopping = true;
        self.inner.work.notify_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A call thread: takes waiting calls until stopped.
fn run(inner: &Inner) {
    let mut pool = inner.lock();
    loop {
        if pool.stopping {
            return;
        }
        let Some(job) = pool.next() else {
            pool.idle += 1;
            pool = inner.work.wait(pool).unwrap_or_else(|p| p.into_inner());
            pool.idle -= 1;
            continue;
        };
        pool.in_flight += 1;
        drop(pool);
        inner.metrics.call_started();
        let answer = perform(&inner.agent, &job.call);
        inner.metrics.call_done();
        inner.sched.resume(job.key, Parked { id: job.id, answer });
        pool = inner.lock();
        pool.in_flight -= 1;
        if pool.waiting + pool.in_flight == 0 {
            inner.idle.notify_all();
        }
    }
}
