//! The worker pool: each `worker-N` thread takes a runnable session from the scheduler and runs its
//! head message (`turn.rs`) until the turn ends — then the writer commits it and releases the
//! session — or parks at an outbound call (the call goes to `calls.rs`; its answer comes back as a
//! `Resume` job, which any worker runs). Expiry of old sessions runs here too, between turns and on
//! an idle worker's tick. `run_job` is one job; an http thread runs it too, for the session its
//! accept made runnable at low load (`intake/routes.rs`, one http thread at a time), so the pool
//! is the floor of the threads running turns, not the ceiling: at most `workers` plus one run at
//! once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use super::calls::Calls;
use super::scheduler::Job;
use super::turn::{Step, Turns};
use super::{Scheduler, Writer};
use crate::flow::script::LazyEngine;
use crate::ops::health::Health;
use crate::store::ErrorKind;
use crate::util::now_ms;

/// What a worker thread is given by the wiring.
pub(crate) struct WorkerContext {
    pub turns: Arc<Turns>,
    pub sched: Arc<Scheduler>,
    pub writer: Writer,
    /// Where a parked turn's call goes.
    pub calls: Calls,
    pub health: Arc<Health>,
    /// The expiry sweep, shared by the workers.
    pub expiry: Arc<Expiry>,
}

/// The worker loop: takes a runnable session, runs its next message, repeats until `Stop`.
pub(crate) fn run(cx: WorkerContext) {
    let rx = cx.sched.ready();
    let mut engine = LazyEngine::new(&cx.turns.config).stop_on(cx.health.scripts_stop());
    // An idle worker still sweeps (`expire_sessions`): sessions are forgotten on time also
    // when no message comes.
    let tick = Duration::from_millis(expiry_every(&cx) as u64);
    loop {
        match rx.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => expire_sessions(&cx),
            Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(job) => {
                if !run_job(&cx, &mut engine, job) {
                    break;
                }
            }
        }
    }
}

/// Runs one job: a runnable session's head message or a parked turn's answer, until the turn
/// ends or parks again. False when the worker must stop (the shutdown interrupted a script).
/// Also run by an http thread for the session its accept made runnable (`Writer::accept_here`);
/// a store failure then holds that thread for the second before the retry, as it would a
/// worker (the message was just committed, so the store failing now is rare).
pub(crate) fn run_job(cx: &WorkerContext, engine: &mut LazyEngine, job: Job) -> bool {
    let (key, id, answer) = match job {
        // Shutting down: only turns already running (or parked, whose calls answer within
        // the drain) finish; queued messages stay on disk and run after the next start.
        Job::Run(_) if cx.health.stopping() => return true,
        Job::Run(key) => {
            let Some(id) = cx.sched.head(&key) else { return true };
            cx.sched.start(&key);
            (key, id, None)
        }
        Job::Resume(key, parked) => (key, parked.id, Some(parked.answer)),
        Job::Stop => return false,
    };
    expire_sessions(cx);
    match super::turn::handle(&cx.turns, engine, id, answer) {
        Ok(Step::Done(_) | Step::Parked(_)) if engine.interrupted() => {
            // The shutdown stopped a script of this turn: it did not run as written, so it
            // is not committed; the message stays in the inbox (from its last checkpoint, if
            // any) and runs after the next start.
            log::warn!("message {id} was interrupted by the shutdown; it stays queued for the next start");
            return false;
        }
        // The writer releases the session once the turn is on disk.
        Ok(Step::Done(record)) => cx.writer.turn(key, record),
        // The session stays busy until the call's answer resumes it.
        Ok(Step::Parked(call)) => cx.calls.submit(key, id, call),
        Ok(Step::Gone) => {
            // Replicas: the claim on the session ends with its (vanished) head message.
            if let Some(Err(e)) = cx.turns.store.claims().map(|c| c.release_run(&key)) {
                log::warn!("cannot give back the claim on a session: {e}; it expires after store.leaseSeconds");
            }
            cx.sched.done(key)
        }
        Err(e) if e.kind == ErrorKind::Lost => {
            // Replicas: another replica took the session over (this one was cut off or stalled
            // past its lease) before a checkpoint could be written; the turn goes no further
            // here (its call is not made) and runs there.
            log::warn!("message {id} stops here: {}", e.message);
            cx.sched.done(key)
        }
        Err(e) => {
            // The store failed (disk full, I/O error): the message stays queued, on disk and
            // here, and is tried again shortly (a parked turn's call is made again); nothing
            // is lost or reordered.
            log::error!("cannot run message {id}: {e}; retrying in 1s");
            std::thread::sleep(Duration::from_secs(1));
            cx.sched.retry(key);
        }
    }
    true
}

/// How often a step of expiry runs (or once a `sessions.ttlSeconds`, when that is shorter).
const EXPIRY_EVERY_MS: i64 = 60 * 1000;
/// Sessions looked at per step: a million stored sessions are swept in 100 minutes, at a few
/// milliseconds of work a minute (the expiry of a 7-day TTL comes at most that late).
const EXPIRY_ROWS: usize = 10_000;

/// Where the expiry sweep stands, shared by the workers.
#[derive(Default)]
pub(crate) struct Expiry {
    /// When the next step runs (Unix ms; 0: at the first message after start).
    next_ms: AtomicI64,
    /// The session the sweep goes on after (`None`: a new sweep).
    cursor: std::sync::Mutex<Option<crate::domain::SessionKey>>,
}

/// The time between steps of expiry: a minute, or the TTL when that is shorter, so that a
/// session of a short TTL is not forgotten a minute late.
fn expiry_every(cx: &WorkerContext) -> i64 {
    EXPIRY_EVERY_MS.min(cx.turns.config.session_ttl.as_millis() as i64).max(1)
}

/// Runs a step of expiry of sessions older than `sessions.ttlSeconds`, at most once per
/// `expiry_every` across all workers; between turns, and from an idle worker's tick.
fn expire_sessions(cx: &WorkerContext) {
    let now = now_ms();
    let next = cx.expiry.next_ms.load(Ordering::Relaxed);
    if now < next
        || cx
            .expiry
            .next_ms
            .compare_exchange(next, now + expiry_every(cx), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let ttl = cx.turns.config.session_ttl.as_millis() as i64;
    let mut cursor = cx.expiry.cursor.lock().unwrap_or_else(|p| p.into_inner());
    // A forgotten session's output counter is kept for one more ttl (see `Store::expire_step`).
    match cx.turns.store.expire_step(cursor.as_ref(), now - ttl, now - 2 * ttl, EXPIRY_ROWS) {
        Ok((n, next)) => {
            if n > 0 {
                log::info!("forgot {n} session(s) untouched for longer than sessions.ttlSeconds");
            }
            *cursor = next;
        }
        Err(e) => log::error!("cannot expire sessions: {e}"),
    }
}
