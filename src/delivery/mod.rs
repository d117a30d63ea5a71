//! Delivery: the outbox → the customer's webhook. `lane.rs` is one sender thread (its window of
//! outbox rows, per-session order, retries by due time, down targets); `attempt.rs` is one POST
//! and how its answer is classified; `history.rs` notes each attempt for the console's delivery
//! log and overview; the signatures are `crypto.rs`'s.
//!
//! This module holds the handles other stages use: `Wake` (the writer and the admin API tell a
//! lane that new rows are in the outbox) and `LaneContext` (what a lane thread is given).

mod attempt;
mod history;
mod lane;

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};

pub(crate) use lane::{DOWN_AFTER, run};

use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::store::Store;

/// Wakes the sender lanes; held by the writer and the admin API.
#[derive(Clone)]
pub(crate) struct Wake {
    lanes: Arc<[Sender<()>]>,
}

impl Wake {
    /// Tells the lane of `hash` (a `SessionKey::lane_hash`) that new rows are in the outbox.
    pub(crate) fn lane_of(&self, hash: u32) {
        let lane = hash as usize % self.lanes.len();
        // A full channel means a wake-up is already pending: nothing to add.
        let _ = self.lanes[lane].try_send(());
    }

    /// Wakes every lane (a dead letter replayed).
    pub(crate) fn all(&self) {
        for w in self.lanes.iter() {
            let _ = w.try_send(());
        }
    }
}

/// Creates the wake channels; returns the handle and one receiver per lane.
pub(crate) fn wake_channels(lanes: usize) -> (Wake, Vec<Receiver<()>>) {
    let (tx, rx): (Vec<_>, Vec<_>) = (0..lanes).map(|_| bounded(1)).unzip();
    (Wake { lanes: tx.into() }, rx)
}

/// What a sender lane thread is given by the wiring.
pub(crate) struct LaneContext {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Outbound TLS settings (public roots plus `delivery.caFile`).
    pub tls: ureq::tls::TlsConfig,
    /// This lane's number, of `delivery.senders`.
    pub lane: usize,
    pub wake: Receiver<()>,
    /// Receives the drain deadline at shutdown.
    pub stop: Receiver<Instant>,
    /// Told once the lane has drained and is about to end.
    pub done: Sender<()>,
    /// Cleared when the lane's thread ends (`/readyz`).
    pub alive: Arc<std::sync::atomic::AtomicBool>,
}
