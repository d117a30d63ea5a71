//! The call threads: outbound calls of parked turns (`http` nodes, Rasa, translations), performed off the
//! workers, so that an API that answers slowly holds a call thread, never a worker.
//!
//! At most `limits.maxConcurrentCalls` calls are in flight; threads are started on demand up
//! to that number and then kept (a Flow without outbound calls starts none). Fair between
//! endpoints: waiting calls are queued per endpoint and taken round robin, and while several
//! endpoints are configured one endpoint may hold at most three quarters of the call slots, and
//! no more than its share (slots ÷ endpoints with calls) while another endpoint's calls wait —
//! so one endpoint's slow API cannot take every slot. A finished call's answer goes back to the
//! scheduler as a `Resume` job, which any worker picks up.
//!
//! Nothing here is durable: a parked `http` call's turn has its checkpoint in the store, so
//! after a crash (or a shutdown whose drain ends first) the turn parks again at the same node
//! and the call is made again; a Rasa call is simply asked again.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_json::json;

use super::Scheduler;
use super::effects::{Answer, Call, Parked, perform};
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
    max: usize,
    /// Most calls of one endpoint in flight (three quarters of `max` with several endpoints).
    per_endpoint: usize,
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
    /// Calls in flight by endpoint.
    in_flight: HashMap<String, usize>,
    /// Calls in `queues`.
    waiting: usize,
    threads: usize,
    idle: usize,
    stopping: bool,
}

impl Pool {
    /// The next waiting call, round robin over the endpoints that are within their share.
    fn next(&mut self, max: usize, per_endpoint: usize) -> Option<Job> {
        // Endpoints with calls waiting or in flight share the slots.
        let busy = self.in_flight.iter().filter(|(e, n)| **n > 0 && !self.queues.contains_key(*e)).count();
        let share = max.div_ceil((self.turn.len() + busy).max(1));
        for _ in 0..self.turn.len() {
            let endpoint = self.turn.pop_front().expect("counted");
            let flying = self.in_flight.get(&endpoint).copied().unwrap_or(0);
            // Over its share only matters when others wait; the hard cap always does.
            let others_wait = !self.turn.is_empty();
            if flying >= per_endpoint || (others_wait && flying >= share) {
                self.turn.push_back(endpoint);
                continue;
            }
            let queue = self.queues.get_mut(&endpoint).expect("an endpoint in turn has a queue");
            let job = queue.pop_front().expect("an endpoint in turn has a waiting call");
            if queue.is_empty() {
                self.queues.remove(&endpoint);
            } else {
                self.turn.push_back(endpoint.clone());
            }
            self.waiting -= 1;
            *self.in_flight.entry(endpoint).or_default() += 1;
            return Some(job);
        }
        None
    }
}

impl Calls {
    /// `endpoints`: how many endpoints are configured (for the per-endpoint cap).
    pub(crate) fn new(
        max: usize,
        endpoints: usize,
        agent: ureq::Agent,
        sched: Arc<Scheduler>,
        metrics: Arc<Metrics>,
    ) -> Calls {
        let per_endpoint = if endpoints > 1 { (max - max / 4).max(1) } else { max };
        let inner = Inner { state: Mutex::default(), work: Condvar::new(), max, per_endpoint, agent, sched, metrics };
        Calls { inner: Arc::new(inner) }
    }

    /// Queues the call of the parked turn of message `id`; its answer resumes the turn.
    pub(crate) fn submit(&self, key: SessionKey, id: i64, call: Call) {
        let mut pool = self.inner.lock();
        let queue = pool.queues.entry(key.endpoint.clone()).or_default();
        let first = queue.is_empty();
        queue.push_back(Job { key: key.clone(), id, call });
        if first {
            pool.turn.push_back(key.endpoint);
        }
        pool.waiting += 1;
        self.inner.metrics.call_queued();
        // A thread more whenever the idle ones (which may not have woken yet) are fewer than the
        // waiting calls: otherwise a burst would queue behind one idle thread.
        if pool.waiting > pool.idle && pool.threads < self.inner.max {
            let n = pool.threads;
            let inner = self.inner.clone();
            match std::thread::Builder::new().name(format!("call-{n}")).spawn(move || run(&inner)) {
                Ok(_) => pool.threads += 1,
                Err(e) if pool.threads == 0 => {
                    // No thread at all would ever take it: make the call here, on the worker,
                    // rather than leave the session waiting for ever.
                    log::error!("cannot start a call thread ({e}); the worker makes the call itself");
                    let job = pool.next(self.inner.max, self.inner.per_endpoint).expect("just queued");
                    drop(pool);
                    self.inner.make(job);
                    return;
                }
                // The call waits for one of the threads that exist.
                Err(e) => log::error!("cannot start a call thread ({e}); {} thread(s) serve the calls", pool.threads),
            }
        }
        self.inner.work.notify_one();
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

    /// Makes one call and hands its answer to the scheduler, whatever happens: a panic in the
    /// call costs that call (answered as a failure), never the session.
    fn make(&self, job: Job) {
        self.metrics.call_started();
        let answer = catch_unwind(AssertUnwindSafe(|| perform(&self.agent, &job.call))).unwrap_or_else(|_| {
            log::error!("{}: an outbound call panicked; the turn goes on with a failed call", job.key.endpoint);
            match job.call {
                Call::Http(_) => Answer::Http(json!({ "error": "the call failed inside hookflow" })),
                Call::Rasa(_) => Answer::Rasa(None),
                Call::Translate(j) => Answer::Translate(Box::new(j.failed("the call failed inside hookflow"))),
            }
        });
        self.metrics.call_done();
        let endpoint = job.key.endpoint.clone();
        self.sched.resume(job.key, Parked { id: job.id, answer });
        let mut pool = self.lock();
        if let Some(n) = pool.in_flight.get_mut(&endpoint) {
            *n -= 1;
        }
        drop(pool);
        // A slot came free: a call held back by its endpoint's share may go now.
        self.work.notify_one();
    }
}

/// A call thread: takes waiting calls until stopped.
fn run(inner: &Inner) {
    let mut pool = inner.lock();
    loop {
        if pool.stopping {
            return;
        }
        let Some(job) = pool.next(inner.max, inner.per_endpoint) else {
            pool.idle += 1;
            pool = inner.work.wait(pool).unwrap_or_else(|p| p.into_inner());
            pool.idle -= 1;
            continue;
        };
        drop(pool);
        inner.make(job);
        pool = inner.lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(endpoint: &str, n: i64) -> Job {
        let key = SessionKey { endpoint: endpoint.into(), user_id: "u".into(), session_id: format!("s{n}") };
        let call = Call::Http(crate::flow::HttpCall {
            pc: 0,
            method: "GET".into(),
            url: "http://127.0.0.1:9/".into(),
            headers: vec![],
            body: None,
            timeout_ms: 1,
        });
        Job { key, id: n, call }
    }

    fn queue(pool: &mut Pool, j: Job) {
        let e = j.key.endpoint.clone();
        if !pool.queues.contains_key(&e) {
            pool.turn.push_back(e.clone());
        }
        pool.queues.entry(e).or_default().push_back(j);
        pool.waiting += 1;
    }

    #[test]
    fn an_endpoint_never_takes_every_slot_while_another_has_calls() {
        let mut pool = Pool::default();
        for n in 0..8 {
            queue(&mut pool, job("a", n));
        }
        // 8 slots, two endpoints configured: "a" alone may take 6.
        let taken: Vec<i64> = std::iter::from_fn(|| pool.next(8, 6)).map(|j| j.id).collect();
        assert_eq!(taken.len(), 6);
        queue(&mut pool, job("b", 100));
        assert_eq!(pool.next(8, 6).map(|j| j.id), Some(100), "b's call finds a free slot at once");
    }

    #[test]
    fn waiting_endpoints_share_the_slots() {
        let mut pool = Pool::default();
        for n in 0..4 {
            queue(&mut pool, job("a", n));
            queue(&mut pool, job("b", 10 + n));
        }
        // 4 slots: 2 each, alternating.
        let taken: Vec<i64> = std::iter::from_fn(|| pool.next(4, 3)).map(|j| j.id).collect();
        assert_eq!(taken, [0, 10, 1, 11]);
    }
}
