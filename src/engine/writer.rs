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
//! If a batch cannot be written (disk full), accepts are answered 503 and the sessions of the
//! turns are run again a second later; nothing is lost or reordered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use super::Scheduler;
use crate::delivery::Wake;
use crate::domain::{JobKind, SessionKey, TurnRecord};
use crate::store::{Accept, Store};

/// Most writes committed together.
const MAX_BATCH: usize = 256;
/// How long the turns of a failed batch wait before they run again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

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
    Stop,
}

/// The other threads' side.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: Sender<Msg>,
}

impl Writer {
    /// Creates the channel; the receiver goes to `run`.
    pub(crate) fn new() -> (Writer, Receiver<Msg>) {
        let (tx, rx) = bounded(MAX_BATCH);
        (Writer { tx }, rx)
    }

    /// Stores and queues a message; returns its id once it is committed.
    pub(crate) fn accept(&self, key: SessionKey, kind: JobKind, payload: String) -> Result<i64, AcceptError> {
        let (reply, answer) = bounded(1);
        self.tx.send(Msg::Accept(Pending { key, kind, payload, reply })).map_err(|_| AcceptError::Stopped)?;
        answer.recv().unwrap_or(Err(AcceptError::Stopped))
    }

    /// Hands over a finished turn; its session is released once it is committed.
    pub(crate) fn turn(&self, key: SessionKey, record: TurnRecord) {
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
        let _ = self.tx.send(Msg::Stop);
    }
}

/// One round's work.
#[derive(Default)]
struct Batch {
    accepts: Vec<Pending>,
    turns: Vec<(SessionKey, TurnRecord)>,
    flushes: Vec<Sender<()>>,
}

/// What the writer thread is given by the wiring.
pub(crate) struct WriterContext {
    pub store: Arc<dyn Store>,
    /// Committed messages are queued here; committed turns release their session here.
    pub sched: Arc<Scheduler>,
    /// Committed outputs wake their sender lane.
    pub wake: Wake,
    /// `limits.queueCapacity`.
    pub capacity: usize,
    pub rx: Receiver<Msg>,
}

/// The writer loop: gather, commit, release, answer; until `Stop`.
pub(crate) fn run(cx: WriterContext) {
    let (shared, rx) = (&cx, &cx.rx);
    let mut retry: Vec<(Instant, SessionKey)> = Vec::new();
    let mut stop = false;
    while !stop {
        let mut batch = Batch::default();
        let first = match retry.iter().map(|(t, _)| *t).min() {
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match first {
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
        commit(shared, batch, &mut retry);
        let now = Instant::now();
        retry.retain(|(t, key)| {
            let due = *t <= now;
            if due {
                shared.sched.retry(key.clone());
            }
            !due
        });
    }
}

impl Batch {
    /// Adds a message; true for `Stop`.
    fn add(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Accept(p) => self.accepts.push(p),
            Msg::Turn(key, record) => self.turns.push((key, record)),
            Msg::Flush(reply) => self.flushes.push(reply),
            Msg::Stop => return true,
        }
        false
    }

    fn len(&self) -> usize {
        self.accepts.len() + self.turns.len()
    }
}

fn commit(shared: &WriterContext, mut batch: Batch, retry: &mut Vec<(Instant, SessionKey)>) {
    let room = shared.capacity.saturating_sub(shared.sched.depth());
    for p in batch.accepts.drain(room.min(batch.accepts.len())..) {
        let _ = p.reply.send(Err(AcceptError::Full));
    }
    if batch.len() > 0 {
        let rows: Vec<Accept<'_>> = batch.accepts.iter().map(|p| (&p.key, p.kind, p.payload.as_str())).collect();
        let turns: Vec<&TurnRecord> = batch.turns.iter().map(|(_, r)| r).collect();
        match shared.store.commit_batch(&rows, &turns) {
            Ok(ids) => released(shared, batch.accepts, batch.turns, ids),
            Err(e) => {
                log::error!(
                    "cannot write {} accepted message(s) and {} finished turn(s): {e}; the turns run again in {RETRY_AFTER:?}",
                    batch.accepts.len(),
                    batch.turns.len()
                );
                for p in batch.accepts {
                    let _ = p.reply.send(Err(AcceptError::Store));
                }
                let at = Instant::now() + RETRY_AFTER;
                retry.extend(batch.turns.into_iter().map(|(key, _)| (at, key)));
            }
        }
    }
    for f in batch.flushes {
        let _ = f.send(());
    }
}

/// After a commit: queue the accepted messages, release the sessions, wake the sender lanes.
fn released(shared: &WriterContext, accepts: Vec<Pending>, turns: Vec<(SessionKey, TurnRecord)>, ids: Vec<i64>) {
    for (p, id) in accepts.into_iter().zip(ids) {
        shared.sched.enqueue(p.key, id);
        let _ = p.reply.send(Ok(id));
    }
    for (key, record) in turns {
        if !record.outputs.is_empty() {
            shared.wake.session(&key);
        }
        shared.sched.done(key);
    }
}
