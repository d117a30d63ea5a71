//! The worker pool: each `worker-N` thread takes a runnable session from the scheduler and runs
//! its head message (`turn.rs`) until the turn ends — then the writer commits it and releases
//! the session — or parks at an outbound call (the call goes to `calls.rs`; its answer comes
//! back as a `Resume` job, which any worker runs). Expiry of old sessions runs here too, between turns.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::calls::Calls;
use super::scheduler::Job;
use super::turn::{Step, Turns};
use super::{Scheduler, Writer};
use crate::flow::script::LazyEngine;
use crate::ops::health::Health;
use crate::util::now_ms;

/// What a worker thread is given by the wiring.
pub(crate) struct WorkerContext {
    pub turns: Arc<Turns>,
    pub sched: Arc<Scheduler>,
    pub writer: Writer,
    /// Where a parked turn's call goes.
    pub calls: Calls,
    pub health: Arc<Health>,
    /// When session expiry next runs (Unix ms), shared by the workers.
    pub next_expiry_ms: Arc<AtomicI64>,
}

/// The worker loop: takes a runnable session, runs its next message, repeats until `Stop`.
pub(crate) fn run(cx: WorkerContext) {
    let rx = cx.sched.ready();
    let mut engine = LazyEngine::new(&cx.turns.config).stop_on(cx.health.scripts_stop());
    loop {
        let (key, id, answer) = match rx.recv() {
            // Shutting down: only turns already running (or parked, whose calls answer within
            // the drain) finish; queued messages stay on disk and run after the next start.
            Ok(Job::Run(_)) if cx.health.stopping() => continue,
            Ok(Job::Run(key)) => {
                let Some(id) = cx.sched.head(&key) else { continue };
                cx.sched.start(&key);
                (key, id, None)
            }
            Ok(Job::Resume(key, parked)) => (key, parked.id, Some(parked.answer)),
            Ok(Job::Stop) | Err(_) => break,
        };
        expire_sessions(&cx);
        match super::turn::handle(&cx.turns, &mut engine, id, answer) {
            Ok(Step::Done(_) | Step::Parked(_)) if engine.interrupted() => {
                // The shutdown stopped a script of this turn: it did not run as written, so it
                // is not committed; the message stays in the inbox (from its last checkpoint, if
                // any) and runs after the next start.
                log::warn!("message {id} was interrupted by the shutdown; it stays queued for the next start");
                break;
            }
            // The writer releases the session once the turn is on disk.
            Ok(Step::Done(record)) => cx.writer.turn(key, record),
            // The session stays busy until the call's answer resumes it.
            Ok(Step::Parked(call)) => cx.calls.submit(key, id, call),
            Ok(Step::Gone) => cx.sched.done(key),
            Err(e) => {
                // The store failed (disk full, I/O error): the message stays queued, on disk and
                // here, and is tried again shortly (a parked turn's call is made again); nothing
                // is lost or reordered.
                log::error!("cannot run message {id}: {e}; retrying in 1s");
                std::thread::sleep(Duration::from_secs(1));
                cx.sched.retry(key);
            }
        }
    }
}

/// How often sessions older than `sessions.ttlSeconds` are removed from the store.
const EXPIRY_EVERY_MS: i64 = 10 * 60 * 1000;

/// Removes expired sessions, at most once per `EXPIRY_EVERY_MS` across all workers (and at the
/// first message after start).
fn expire_sessions(cx: &WorkerContext) {
    let now = now_ms();
    let next = cx.next_expiry_ms.load(Ordering::Relaxed);
    if now < next
        || cx
            .next_expiry_ms
            .compare_exchange(next, now + EXPIRY_EVERY_MS, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let ttl = cx.turns.config.session_ttl.as_millis() as i64;
    // A forgotten session's output counter is kept for one more ttl (see `Store::expire_sessions`).
    match cx.turns.store.expire_sessions(now - ttl, now - 2 * ttl) {
        Ok(0) => {}
        Ok(n) => log::info!("forgot {n} session(s) untouched for longer than sessions.ttlSeconds"),
        Err(e) => log::error!("cannot expire sessions: {e}"),
    }
}
