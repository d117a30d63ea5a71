//! Group commit of accepted messages: the http threads hand each validated message to the
//! `acceptor` thread and wait; it takes everything waiting (up to `MAX_BATCH`), inserts it in one
//! transaction, queues it for the workers, and answers each. One commit — one fsync with
//! `durability: full` — serves every request that arrived meanwhile, and because one thread
//! inserts and enqueues, a session's messages enter its queue in the order of their ids.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::service::Shared;
use crate::store::{JobKind, SessionKey, StoreError};

/// Most messages committed together.
const MAX_BATCH: usize = 256;

/// Why a message could not be queued.
#[derive(Debug)]
pub(crate) enum AcceptError {
    /// `limits.queueCapacity` messages are already waiting.
    Full,
    /// The store failed (logged here); the message was not stored.
    Store,
    /// The acceptor has stopped (shutdown).
    Stopped,
}

/// One message waiting to be committed.
pub(crate) struct Pending {
    pub key: SessionKey,
    pub kind: JobKind,
    pub payload: String,
    reply: Sender<Result<i64, AcceptError>>,
}

/// What the acceptor thread is told.
pub(crate) enum Msg {
    Accept(Pending),
    Stop,
}

/// The http threads' side.
pub(crate) struct Acceptor {
    tx: Sender<Msg>,
}

impl Acceptor {
    /// Creates the channel; the receiver goes to `run`.
    pub(crate) fn new() -> (Acceptor, Receiver<Msg>) {
        let (tx, rx) = bounded(MAX_BATCH);
        (Acceptor { tx }, rx)
    }

    /// Stores and queues a message; returns its id once it is committed.
    pub(crate) fn accept(&self, key: SessionKey, kind: JobKind, payload: String) -> Result<i64, AcceptError> {
        let (reply, answer) = bounded(1);
        self.tx.send(Msg::Accept(Pending { key, kind, payload, reply })).map_err(|_| AcceptError::Stopped)?;
        answer.recv().unwrap_or(Err(AcceptError::Stopped))
    }

    /// Ends the acceptor thread after what is already waiting.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

/// The acceptor loop: batch, commit, enqueue, answer; until `Stop`.
pub(crate) fn run(shared: Arc<Shared>, rx: Receiver<Msg>) {
    let mut stop = false;
    while !stop {
        let mut batch = Vec::new();
        match rx.recv() {
            Ok(Msg::Accept(p)) => batch.push(p),
            Ok(Msg::Stop) | Err(_) => return,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Accept(p)) => batch.push(p),
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit(&shared, batch);
    }
}

fn commit(shared: &Shared, mut batch: Vec<Pending>) {
    let room = shared.config.limits.queue_capacity.saturating_sub(shared.sched.depth());
    for p in batch.drain(room.min(batch.len())..) {
        let _ = p.reply.send(Err(AcceptError::Full));
    }
    if batch.is_empty() {
        return;
    }
    let rows: Vec<(&SessionKey, JobKind, &str)> = batch.iter().map(|p| (&p.key, p.kind, p.payload.as_str())).collect();
    match shared.store.accept_batch(&rows) {
        Ok(ids) => {
            for (p, id) in batch.into_iter().zip(ids) {
                shared.sched.enqueue(p.key, id);
                let _ = p.reply.send(Ok(id));
            }
        }
        Err(StoreError(e)) => {
            log::error!("cannot store {} accepted message(s): {e}", batch.len());
            for p in batch {
                let _ = p.reply.send(Err(AcceptError::Store));
            }
        }
    }
}
