//! One process (SQLite): an accept or a finished turn is committed by the thread that has it
//! (an http thread, a worker) when the writer has nothing to do, instead of being handed over.
//!
//! At low load the writer's group commit gathers nothing: each batch is one message, and the
//! hand-over costs two thread wake-ups (to the writer and back) per accept and per turn. On a
//! virtual machine a wake-up of an idle CPU is tens to hundreds of microseconds, a large part of
//! the acknowledgement's tail (docs/performance.md). Committing inline, an accept is answered
//! with no wake-up, and an output goes from the client's thread to a worker to its sender lane:
//! the bare pipeline's shape.
//!
//! A thread commits inline only while the writer is idle and its queue empty (otherwise group
//! commit serves it better), while the load is low (`Pace`), while the store takes writes
//! (otherwise the writer's retries and probes handle it), and never after `Writer::stop`. It
//! holds the lock of the writer's batches while it commits and puts an accepted message in its
//! session's queue, so the ids in a session's queue stay in order; the worker or lane it wakes
//! is woken after the lock is let go. If its commit fails, the message or turn goes to the
//! writer as before, which tries again and reports the failure: nothing is lost, and a failed
//! commit changed nothing. An accept committed inline through `Writer::accept_here` does not
//! wake a worker for the session it made runnable: the http thread runs that turn itself once
//! it has answered (the same hand-over saved once more).

use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::writer::{AcceptError, Shared, Writer, released};
use crate::domain::{JobKind, SessionKey, TurnRecord};

/// The span over which commits are counted (`Pace`).
const PACE_WINDOW: Duration = Duration::from_millis(10);
/// Most accepts and turns committed in a `PACE_WINDOW` (about 500 messages a second) for a
/// thread to commit inline; past it the writer's group commit does more for throughput than
/// saving wake-ups does for latency (committed one by one, the echo load lost a fifth to a third
/// of its delivered/s).
const PACE_INLINE: u32 = 10;

/// How many accepts and turns were committed lately, kept under the commit lock: tells a low
/// load (commit inline) from a high one (hand over, group commit).
#[derive(Default)]
pub(crate) struct Pace {
    since: Option<Instant>,
    count: u32,
}

impl Pace {
    /// Counts `n` commits (accepts and turns).
    pub(super) fn note(&mut self, n: usize) {
        let now = Instant::now();
        if self.since.is_none_or(|s| now.duration_since(s) >= PACE_WINDOW) {
            (self.since, self.count) = (Some(now), 0);
        }
        self.count = self.count.saturating_add(n as u32);
    }

    /// Whether one more commit would keep the load low.
    fn low(&mut self) -> bool {
        self.note(0);
        self.count < PACE_INLINE
    }
}

impl Shared {
    /// The commit lock, waited for (the writer thread).
    pub(super) fn lock(&self) -> MutexGuard<'_, Pace> {
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The commit lock, held by a thread committing inline.
struct Held<'a> {
    shared: &'a Shared,
    _lock: MutexGuard<'a, Pace>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Before the lock itself is let go (the fields are dropped after this).
        self.shared.inline_held.store(false, Ordering::SeqCst);
    }
}

impl Writer {
    /// The commit lock if this thread may commit inline now (see the module's doc).
    fn inline_lock(&self) -> Option<Held<'_>> {
        let cx = &*self.shared;
        if cx.parts.claimer.is_some() || cx.stopped.load(Ordering::SeqCst) || !self.tx.is_empty() {
            return None;
        }
        let mut lock = match cx.commit.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // Held by a thread committing inline: its commit is one message or turn, shorter
            // than a hand-over to the writer, so one thread waits for it (the two clients'
            // messages that arrive together). Any more hand over, and so does anyone who finds
            // the writer's batch in the way: group commit serves a crowd better.
            Err(TryLockError::WouldBlock) => {
                if !cx.inline_held.load(Ordering::SeqCst) || cx.inline_waiting.swap(true, Ordering::SeqCst) {
                    return None;
                }
                let lock = cx.lock();
                cx.inline_waiting.store(false, Ordering::SeqCst);
                lock
            }
        };
        if cx.status.get().is_some() || !lock.low() {
            return None;
        }
        lock.note(1);
        cx.inline_held.store(true, Ordering::SeqCst);
        Some(Held { shared: cx, _lock: lock })
    }

    /// Commits and queues an accepted message on this thread if it may (`None`: hand it to the
    /// writer): its id, and whether it made its session runnable. The caller runs the session
    /// or announces it to the workers (`Writer::accept_here`), after the lock is let go: a
    /// worker woken on this CPU while it is held would preempt this thread, find the lock taken
    /// for its own turn, and hand that to the writer.
    pub(super) fn accept_inline(
        &self,
        key: &SessionKey,
        kind: JobKind,
        payload: &str,
    ) -> Option<Result<(i64, bool), AcceptError>> {
        let commit = self.inline_lock()?;
        let cx = &self.shared.parts;
        if cx.sched.depth() >= cx.capacity {
            return Some(Err(AcceptError::Full));
        }
        let id = match cx.store.commit_batch_rows(&[(key, kind, payload)], &[]) {
            Ok((ids, _)) => match ids.first() {
                Some(id) => *id,
                // Committed, so never handed to the writer again (it would be stored twice).
                None => return Some(Err(AcceptError::Store)),
            },
            Err(e) => {
                log::debug!("an inline commit of a message failed ({e}); the writer tries again");
                return None;
            }
        };
        let runnable = cx.sched.push(key, id);
        drop(commit);
        Some(Ok((id, runnable)))
    }

    /// Commits a finished turn on this thread if it may, and releases its session; gives it
    /// back otherwise (for the writer).
    pub(super) fn turn_inline(&self, key: SessionKey, record: TurnRecord) -> Option<(SessionKey, TurnRecord)> {
        let Some(commit) = self.inline_lock() else { return Some((key, record)) };
        match self.shared.parts.store.commit_batch_rows(&[], &[&record]) {
            Ok((_, new)) => {
                // Released after the lock is let go (see `accept_inline`). The session is still
                // this worker's until `released` gives it back, and a lane takes pushed rows
                // only in order (it reads the outbox when they come out of order).
                drop(commit);
                released(&self.shared, Vec::new(), vec![(key, record)], Vec::new(), Vec::new(), new);
                None
            }
            Err(e) => {
                log::debug!("an inline commit of a turn failed ({e}); the writer tries again");
                Some((key, record))
            }
        }
    }
}

#[cfg(test)]
#[path = "inline_tests.rs"]
mod tests;
