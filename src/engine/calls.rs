//! The call threads: outbound calls of parked turns (`http` nodes, Rasa, translations, handover
//! providers), performed off the workers, so that an API that answers slowly holds a call thread,
//! never a worker.
//!
//! At most `limits.maxConcurrentCalls` calls are in flight; threads are started on demand up
//! to that number and then kept (a Flow without outbound calls starts none). Fair between
//! endpoints: waiting calls are queued per endpoint and taken round robin, and while several
//! endpoints are configured one endpoint may hold at most three quarters of the call slots, and
//! no more than its share (slots ÷ endpoints with calls) while another endpoint's calls wait —
//! so one endpoint's slow API cannot take every slot. A finished call's answer goes back to the
//! scheduler as a `Resume` job, which any worker picks up.
//!
//! A call with a due time (a handover provider's retry) waits in `Pool::delayed`, not on a
//! thread: the threads sleep until the earliest is due, then queue it like a new call.
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
    /// Calls waiting for their due time (Unix ms), not yet in `queues`.
    delayed: Vec<(i64, Job)>,
    threads: usize,
    idle: usize,
    stopping: bool,
}

impl Pool {
    /// Queues a call for the threads.
    fn queue(&mut self, job: Job) {
        let queue = self.queues.entry(job.key.endpoint.clone()).or_default();
        let first = queue.is_empty();
        let endpoint = job.key.endpoint.clone();
        queue.push_back(job);
        if first {
            self.turn.push_back(endpoint);
        }
        self.waiting += 1;
    }

    /// Moves the delayed calls that are due into the queues; the wait until the next one.
    fn promote_due(&mut self, now_ms: i64, metrics: &Metrics) -> Option<std::time::Duration> {
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now_ms {
                let (_, job) = self.delayed.swap_remove(i);
                self.queue(job);
                metrics.call_queued();
            } else {
                i += 1;
            }
        }
        let next = self.delayed.iter().map(|(due, _)| *due).min()?;
        Some(std::time::Duration::from_millis((next - now_ms).max(1) as u64))
    }
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
        let due = call.due_ms();
        if due > crate::util::now_ms() {
            // A retry's wait: no thread holds it; a thread wakes for it when it is due (one is
            // started if none exists yet).
            pool.delayed.push((due, Job { key, id, call }));
            if pool.threads == 0 {
                let _ = self.spawn(&mut pool);
            }
            drop(pool);
            self.inner.work.notify_all();
            return;
        }
        pool.queue(Job { key, id, call });
        self.inner.metrics.call_queued();
        // A thread more whenever the idle ones (which may not have woken yet) are fewer than the
        // waiting calls: otherwise a burst would queue behind one idle thread.
        if pool.waiting > pool.idle
            && pool.threads < self.inner.max
            && let Err(e) = self.spawn(&mut pool)
        {
            if pool.threads == 0 {
                // No thread at all would ever take it: make the call here, on the worker,
                // rather than leave the session waiting for ever.
                log::error!("cannot start a call thread ({e}); the worker makes the call itself");
                let job = pool.next(self.inner.max, self.inner.per_endpoint).expect("just queued");
                drop(pool);
                self.inner.make(job);
                return;
            }
            // The call waits for one of the threads that exist.
            log::error!("cannot start a call thread ({e}); {} thread(s) serve the calls", pool.threads);
        }
        self.inner.work.notify_one();
    }

    /// Starts one more call thread.
    fn spawn(&self, pool: &mut MutexGuard<'_, Pool>) -> std::io::Result<()> {
        let n = pool.threads;
        let inner = self.inner.clone();
        std::thread::Builder::new().name(format!("call-{n}")).spawn(move || run(&inner))?;
        pool.threads += 1;
        Ok(())
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
                Call::Handover(h) => {
                    let failure = super::handover::Failure::new(false, "the call failed inside hookflow");
                    Answer::Handover(h, Err(failure))
                }
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
        let next_due = pool.promote_due(crate::util::now_ms(), &inner.metrics);
        let Some(job) = pool.next(inner.max, inner.per_endpoint) else {
            pool.idle += 1;
            pool = match next_due {
                Some(wait) => inner.work.wait_timeout(pool, wait).unwrap_or_else(|p| p.into_inner()).0,
                None => inner.work.wait(pool).unwrap_or_else(|p| p.into_inner()),
            };
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
    fn a_delayed_call_waits_in_its_list_until_it_is_due() {
        let mut pool = Pool::default();
        let metrics = Metrics::new();
        pool.delayed.push((1_000, job("a", 1)));
        pool.delayed.push((3_000, job("a", 2)));
        // Not due: nothing to take, and the wait is until the earliest one.
        assert_eq!(pool.promote_due(500, &metrics), Some(std::time::Duration::from_millis(500)));
        assert!(pool.next(4, 4).is_none());
        assert_eq!(pool.promote_due(1_000, &metrics), Some(std::time::Duration::from_millis(2_000)));
        assert_eq!(pool.next(4, 4).map(|j| j.id), Some(1));
        assert_eq!(pool.promote_due(5_000, &metrics), None);
        assert_eq!(pool.next(4, 4).map(|j| j.id), Some(2));
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
