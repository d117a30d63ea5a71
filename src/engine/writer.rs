//! The writer: one thread that turns many small writes into few transactions (group commit).
//!
//! - **Accepts.** The http threads hand each validated message over and wait; the writer takes
//!   everything waiting (up to `MAX_BATCH`), inserts it in one transaction, queues it for the
//!   workers, and answers each. One commit — one fsync with `durability: full` — serves every
//!   request that arrived meanwhile, and because one thread inserts and enqueues, a session's
//!   messages enter its queue in the order of their ids.
//! - **Finished turns.** A worker hands over a turn's result (session, outputs, the inbox row to
//!   delete) and goes on with another session at once; the turn is committed with the others of
//!   the batch, and only then is its session released for its next message and its sender lane
//!   woken. So a session never runs against state that is not yet on disk, and workers do not
//!   wait for the disk.
//!
//! At low load there is nothing to gather: while the writer is idle, the thread that has an
//! accept or a turn commits it itself under the same lock (`inline.rs`), and the writer takes
//! what comes while a commit is under way.
//!
//! If a batch cannot be written (disk full), accepts are answered 503 and the batch's turns wait;
//! nothing is lost or reordered. The failure is kept for `/readyz` and the watchdog (an empty
//! transaction would succeed on a full disk, so only a real write tells). The writer then
//! checkpoints the store (cutting SQLite's log to nothing gives back its space) and probes it
//! with a small write every `PROBE_EVERY`; the first write that succeeds, a probe or a commit,
//! ends the failure and the waiting turns run again. While healthy it checkpoints every
//! `CHECKPOINT_EVERY`, so the log never keeps much space.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use super::Scheduler;
pub(crate) use super::direct::Direct;
use super::inline::Pace;
use crate::delivery::Wake;
use crate::domain::{JobKind, NewOutbox, SessionKey, TurnRecord};
use crate::store::{Accept, ErrorKind, Store, StoreError};

/// Most writes committed together.
const MAX_BATCH: usize = 256;
/// How often a failing store is checkpointed and probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often a healthy store is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// Why a message could not be queued.
#[derive(Debug)]
pub(crate) enum AcceptError {
    /// `limits.queueCapacity` messages are already waiting.
    Full,
    /// The store failed (logged here); the message was not stored.
    Store,
    /// The writer has stopped (shutdown).
    Stopped,
}

/// One message waiting to be committed.
pub(crate) struct Pending {
    key: SessionKey,
    kind: JobKind,
    payload: String,
    reply: Sender<Result<i64, AcceptError>>,
}

/// What the writer thread is told.
pub(crate) enum Msg {
    Accept(Pending),
    /// A finished turn of the session `SessionKey`.
    Turn(SessionKey, TurnRecord),
    /// Answer once everything sent before has been committed.
    Flush(Sender<()>),
    /// A commit (the writer's, an inline one, a lane settling deliveries) found the log due for
    /// a checkpoint (`Store::checkpoints_by`): the writer runs it after its next batch, so that
    /// no accept, turn or delivery waits for the copy.
    Checkpoint,
    Stop,
}

/// The other threads' side.
#[derive(Clone)]
pub(crate) struct Writer {
    pub(super) tx: Sender<Msg>,
    pub(super) shared: Arc<Shared>,
    /// Replicas: accepts are written by the calling thread (see `Direct`).
    direct: Option<Arc<Direct>>,
}

/// What the writer thread works with, and (one process) the threads that commit inline.
pub(crate) struct WriterParts {
    pub store: Arc<dyn Store>,
    /// Committed messages are queued here; committed turns release their session here.
    pub sched: Arc<Scheduler>,
    /// Committed outputs wake their sender lane.
    pub wake: Wake,
    /// `limits.queueCapacity`.
    pub capacity: usize,
    /// With a store shared by replicas: committed messages are not queued here but claimed
    /// (`engine::claimer`), which this wakes after every commit.
    pub claimer: Option<Sender<()>>,
}

/// The writer's parts, shared with the threads that commit inline (see `inline.rs`).
pub(super) struct Shared {
    pub(super) parts: WriterParts,
    /// Where the writer reports a failing store (`Writer::status`).
    pub(super) status: Arc<StoreStatus>,
    /// Held by whoever commits and releases: the writer thread for a batch, or a thread
    /// committing its own accept or turn. Commits and their releases thus never interleave, so
    /// a session's messages still enter its queue in the order of their ids.
    pub(super) commit: Mutex<Pace>,
    /// `Writer::stop` was called: nothing more is committed inline.
    pub(super) stopped: AtomicBool,
    /// A thread committing inline holds `commit` (not the writer's batch).
    pub(super) inline_held: AtomicBool,
    /// A thread waits for `commit` to commit inline (at most one does).
    pub(super) inline_waiting: AtomicBool,
}

/// The writer's last outcome, read by `/readyz` and the watchdog; set only by the writer thread.
#[derive(Default)]
pub(crate) struct StoreStatus {
    failure: Mutex<Option<StoreFailure>>,
    /// Replicas: the leases could not be renewed (the database is unreachable); set by the
    /// renewer (`engine::claimer`), apart from the writer's own outcome, which drives its retries.
    unreachable: Mutex<Option<StoreFailure>>,
    /// Replicas: when the leases were last renewed, and how long that may go on not happening
    /// before the database counts as not answering (set by the renewer).
    renewed: Mutex<Option<(Instant, Duration)>>,
}

/// The store has failed to take the writer's writes since `since`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreFailure {
    pub kind: ErrorKind,
    pub since: Instant,
}

impl StoreFailure {
    /// Why the service is not ready, for `/readyz` (README, Troubleshoot).
    pub(crate) fn reason(&self) -> &'static str {
        match self.kind {
            ErrorKind::Full => "the disk is full: the store cannot be written",
            ErrorKind::Busy => "the store is locked: it cannot be written",
            ErrorKind::Io => "the store cannot be written: I/O error (PostgreSQL: the database cannot be reached)",
            ErrorKind::Data => "the store is damaged: it cannot be written",
            ErrorKind::Lost => "this replica lost its claims: it cannot write under them",
            ErrorKind::Unanswered => "the database has not answered for two thirds of store.leaseSeconds",
            ErrorKind::Other => "the store cannot be written",
        }
    }
}

impl StoreStatus {
    pub(crate) fn get(&self) -> Option<StoreFailure> {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set(&self, failure: Option<StoreFailure>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }

    /// The renewer's outcome (see `unreachable`).
    pub(crate) fn set_unreachable(&self, failure: Option<StoreFailure>) {
        *self.unreachable.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }

    /// The renewer's outcome, or, when its renewal has not come back for longer than allowed
    /// (a statement that hangs is no error), `Unanswered`.
    pub(crate) fn unreachable(&self) -> Option<StoreFailure> {
        self.renewal_failed().or_else(|| self.stale())
    }

    /// The renewer's own outcome: its last renewal failed.
    pub(crate) fn renewal_failed(&self) -> Option<StoreFailure> {
        *self.unreachable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// No renewal has come back for longer than allowed, whatever else is known (a renewal
    /// may have failed before, and the one after hang).
    pub(crate) fn stale(&self) -> Option<StoreFailure> {
        let (at, allowed) = (*self.renewed.lock().unwrap_or_else(|p| p.into_inner()))?;
        (at.elapsed() > allowed).then(|| StoreFailure { kind: ErrorKind::Unanswered, since: at + allowed })
    }

    /// The leases were renewed at `at`; without another renewal within `allowed` the database
    /// counts as not answering.
    pub(crate) fn renewed(&self, at: Instant, allowed: Duration) {
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, allowed));
    }

    /// The database is known not to answer: accepts are refused at once instead of waiting.
    pub(crate) fn unanswered(&self) -> bool {
        self.stale().is_some()
    }
}

impl Writer {
    /// The handle and the writer thread's context (for `run`). `direct`: replicas (see `Direct`).
    pub(crate) fn new(parts: WriterParts, direct: Option<Direct>) -> (Writer, WriterContext) {
        let (tx, rx) = bounded(MAX_BATCH);
        let status: Arc<StoreStatus> = Arc::default();
        let direct = direct.map(|d| d.watching(status.clone()));
        let shared = Arc::new(Shared {
            parts,
            status,
            commit: Mutex::default(),
            stopped: AtomicBool::new(false),
            inline_held: AtomicBool::new(false),
            inline_waiting: AtomicBool::new(false),
        });
        (Writer { tx, shared: shared.clone(), direct: direct.map(Arc::new) }, WriterContext { shared, rx })
    }

    /// The status the writer thread keeps.
    pub(crate) fn status(&self) -> Arc<StoreStatus> {
        self.shared.status.clone()
    }

    /// For `Store::checkpoints_by`: asks the writer thread for a checkpoint; false once it has
    /// stopped. A full queue means a batch is waiting, after which the writer checkpoints
    /// anyway.
    pub(crate) fn checkpoint_asker(&self) -> Box<dyn Fn() -> bool + Send + Sync> {
        let tx = self.tx.clone();
        Box::new(move || !matches!(tx.try_send(Msg::Checkpoint), Err(TrySendError::Disconnected(_))))
    }

    /// Replicas: since when the database has not answered, if it does not (`StoreStatus::stale`).
    pub(crate) fn unanswered(&self) -> Option<StoreFailure> {
        self.shared.status.stale()
    }

    /// Since when the store has refused the writer's writes, if it does now.
    pub(crate) fn store_failure(&self) -> Option<StoreFailure> {
        self.shared.status.get().or_else(|| self.shared.status.unreachable())
    }

    /// Stores and queues a message; returns its id once it is committed.
    pub(crate) fn accept(&self, key: SessionKey, kind: JobKind, payload: String) -> Result<i64, AcceptError> {
        let (id, runnable) = self.accept_here(key, kind, payload)?;
        if let Some(key) = runnable {
            self.shared.parts.sched.announce(key);
        }
        Ok(id)
    }

    /// As `accept`, but a message committed on this thread that made its session runnable is
    /// not announced to the workers: the session is returned, for this thread to run its turn
    /// (`worker::run_job`) once it has answered, or to announce. (Committed by the writer or by
    /// `Direct`, the message is queued or claimed there, and `None` is returned.)
    pub(crate) fn accept_here(
        &self,
        key: SessionKey,
        kind: JobKind,
        payload: String,
    ) -> Result<(i64, Option<SessionKey>), AcceptError> {
        if let Some(direct) = &self.direct {
            return direct.accept(key, kind, payload).map(|id| (id, None));
        }
        if let Some(done) = self.accept_inline(&key, kind, &payload) {
            return done.map(|(id, runnable)| (id, runnable.then_some(key)));
        }
        let (reply, answer) = bounded(1);
        self.tx.send(Msg::Accept(Pending { key, kind, payload, reply })).map_err(|_| AcceptError::Stopped)?;
        answer.recv().unwrap_or(Err(AcceptError::Stopped)).map(|id| (id, None))
    }

    /// Hands over a finished turn; its session is released once it is committed.
    pub(crate) fn turn(&self, key: SessionKey, record: TurnRecord) {
        let Some((key, record)) = self.turn_inline(key, record) else { return };
        // The writer outlives the workers (the wiring stops it last), so this cannot fail
        // while a worker runs.
        let _ = self.tx.send(Msg::Turn(key, record));
    }

    /// Waits until everything handed over so far is committed.
    pub(crate) fn flush(&self) {
        let (reply, done) = bounded(1);
        if self.tx.send(Msg::Flush(reply)).is_ok() {
            let _ = done.recv();
        }
    }

    /// Ends the writer thread after what is already waiting.
    pub(crate) fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Stop);
    }
}

/// One round's work.
#[derive(Default)]
struct Batch {
    accepts: Vec<Pending>,
    turns: Vec<(SessionKey, TurnRecord)>,
    flushes: Vec<Sender<()>>,
    /// A checkpoint was asked for (`Msg::Checkpoint`).
    checkpoint: bool,
}

/// What the writer thread is given (`Writer::new`).
pub(crate) struct WriterContext {
    shared: Arc<Shared>,
    pub(super) rx: Receiver<Msg>,
}

/// What the writer remembers between rounds.
struct Health {
    /// Sessions whose finished turn could not be written: they run again once the store takes
    /// writes (their message is still in the inbox, on disk and at the head of their queue).
    waiting: Vec<SessionKey>,
    /// When the next checkpoint (healthy) or probe (failing) is due.
    next_check: Instant,
}

/// The writer loop: gather, commit, release, answer; until `Stop`. Between rounds, the store is
/// checkpointed (and probed while it fails) when due.
pub(crate) fn run(context: WriterContext) {
    let (cx, rx) = (&*context.shared, &context.rx);
    let mut health = Health { waiting: Vec::new(), next_check: Instant::now() + CHECKPOINT_EVERY };
    let mut stop = false;
    while !stop {
        let mut batch = Batch::default();
        match rx.recv_timeout(health.next_check.saturating_duration_since(Instant::now())) {
            Ok(msg) => stop = batch.add(msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => stop = batch.add(msg),
                Err(_) => break,
            }
        }
        let checkpoint = batch.checkpoint;
        commit(cx, batch, &mut health);
        if checkpoint && let Err(e) = cx.parts.store.checkpoint_if_due() {
            log::debug!("store: the checkpoint a commit asked for failed: {e}");
        }
        if Instant::now() >= health.next_check {
            check(cx, &mut health);
        }
    }
}

impl Batch {
    /// Adds a message; true for `Stop`.
    fn add(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Accept(p) => self.accepts.push(p),
            Msg::Turn(key, record) => self.turns.push((key, record)),
            Msg::Flush(reply) => self.flushes.push(reply),
            Msg::Checkpoint => self.checkpoint = true,
            Msg::Stop => return true,
        }
        false
    }

    fn len(&self) -> usize {
        self.accepts.len() + self.turns.len()
    }
}

fn commit(cx: &Shared, mut batch: Batch, health: &mut Health) {
    let mut pace = cx.lock();
    pace.note(batch.len());
    let room = cx.parts.capacity.saturating_sub(queued(cx, batch.accepts.len()));
    for p in batch.accepts.drain(room.min(batch.accepts.len())..) {
        let _ = p.reply.send(Err(AcceptError::Full));
    }
    if batch.len() > 0 {
        let rows: Vec<Accept<'_>> = batch.accepts.iter().map(|p| (&p.key, p.kind, p.payload.as_str())).collect();
        let turns: Vec<&TurnRecord> = batch.turns.iter().map(|(_, r)| r).collect();
        // Replicas accept on the http threads (`Direct`): their batches are turns, whose
        // sessions may go on here with their next message (`Claims::commit_turns`).
        let written = match cx.parts.store.claims() {
            Some(claims) if rows.is_empty() => claims.commit_turns(&turns).map(|next| (Vec::new(), next, None)),
            _ => cx.parts.store.commit_batch_rows(&rows, &turns).map(|(ids, new)| (ids, Vec::new(), new)),
        };
        match written {
            Ok((ids, next, new)) => {
                released(cx, batch.accepts, batch.turns, ids, next, new);
                recovered(cx, health);
            }
            Err(e) => {
                // One line per failed batch; the logger folds repeats into one summary a minute.
                log::error!(
                    "cannot write {} accepted message(s) and {} finished turn(s): {e}",
                    batch.accepts.len(),
                    batch.turns.len()
                );
                for p in batch.accepts {
                    let _ = p.reply.send(Err(AcceptError::Store));
                }
                health.waiting.extend(batch.turns.into_iter().map(|(key, _)| key));
                failed(cx, health, &e);
            }
        }
    }
    for f in batch.flushes {
        let _ = f.send(());
    }
}

/// Messages waiting: in memory, or (replicas) in the shared database. If the database cannot
/// say, the batch is let through: its commit will fail the same way and answer 503.
fn queued(cx: &Shared, accepts: usize) -> usize {
    match cx.parts.store.claims() {
        None => cx.parts.sched.depth(),
        Some(_) if accepts == 0 => 0,
        Some(claims) => claims.queued().unwrap_or(0),
    }
}

/// A write failed: report it and, the first time, checkpoint at once (the log's space may be
/// all the next commit needs); then probe every `PROBE_EVERY`.
fn failed(cx: &Shared, health: &mut Health, e: &StoreError) {
    if cx.status.get().is_some() {
        return;
    }
    cx.status.set(Some(StoreFailure { kind: e.kind, since: Instant::now() }));
    log::error!(
        "the store does not take writes ({e}): messages get 503 store_unavailable, /readyz says not ready, \
         finished turns wait; checking again every {PROBE_EVERY:?}"
    );
    if let Err(e) = cx.parts.store.checkpoint() {
        log::debug!("store: checkpoint after a failed write: {e}");
    }
    health.next_check = Instant::now() + PROBE_EVERY;
}

/// A write succeeded: if the store was failing, it is healthy again and the waiting turns run.
fn recovered(cx: &Shared, health: &mut Health) {
    let Some(failure) = cx.status.get() else { return };
    cx.status.set(None);
    log::info!(
        "the store takes writes again after {:.1}s; {} waiting turn(s) run again",
        failure.since.elapsed().as_secs_f64(),
        health.waiting.len()
    );
    for key in health.waiting.drain(..) {
        cx.parts.sched.retry(key);
    }
    health.next_check = Instant::now() + CHECKPOINT_EVERY;
}

/// Due maintenance: a checkpoint, and while the store fails, a probe write after it.
fn check(cx: &Shared, health: &mut Health) {
    let checkpoint = cx.parts.store.checkpoint();
    if cx.status.get().is_none() {
        if let Err(e) = checkpoint {
            log::warn!("store: the periodic checkpoint failed: {e}");
        }
        health.next_check = Instant::now() + CHECKPOINT_EVERY;
        return;
    }
    health.next_check = Instant::now() + PROBE_EVERY;
    match cx.parts.store.probe() {
        Ok(()) => recovered(cx, health),
        Err(e) => log::debug!("store: still failing: {e}"),
    }
}

/// After a commit: queue the accepted messages and the next messages of sessions this replica
/// kept (`next`), release the sessions, wake the sender lanes.
pub(super) fn released(
    cx: &Shared,
    accepts: Vec<Pending>,
    turns: Vec<(SessionKey, TurnRecord)>,
    ids: Vec<i64>,
    next: Vec<(i64, SessionKey)>,
    new: Option<NewOutbox>,
) {
    // Before `done` below: the session's queue then still holds the finished message, so the
    // next one waits behind it and `done` hands the session to a worker again.
    for (id, key) in next {
        cx.parts.sched.enqueue(key, id);
    }
    for (p, id) in accepts.into_iter().zip(ids) {
        if cx.parts.claimer.is_none() {
            cx.parts.sched.enqueue(p.key, id);
        }
        let _ = p.reply.send(Ok(id));
    }
    if let Some(claimer) = &cx.parts.claimer {
        // A full channel means a wake-up is already pending.
        let _ = claimer.try_send(());
    }
    // The new rows go to their lanes as they are: a lane need not read back what was just
    // written (SQLite; otherwise the lanes are woken to read).
    let pushed = new.map(|new| cx.parts.wake.pushed(new)).is_some();
    for (key, record) in turns {
        if !pushed && !record.outputs.is_empty() {
            cx.parts.wake.session(&key);
        }
        cx.parts.sched.done(key);
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    /// A renewal that failed (a reset connection) and the next one that hangs (the server froze):
    /// the failure was all that was said, so accepts and the admin API still went to the
    /// database and waited on it.
    #[test]
    fn a_renewal_that_hangs_is_seen_after_one_that_failed() {
        let status = StoreStatus::default();
        assert!(!status.unanswered(), "before the first renewal nothing is known");
        let long_ago = Instant::now() - Duration::from_secs(10);
        status.renewed(long_ago, Duration::from_secs(2));
        status.set_unreachable(Some(StoreFailure { kind: ErrorKind::Io, since: long_ago }));
        assert!(status.unanswered());
        assert_eq!(status.unreachable().map(|f| f.kind), Some(ErrorKind::Io), "/readyz gives the failure");
        status.renewed(Instant::now(), Duration::from_secs(2));
        assert!(!status.unanswered());
    }
}
