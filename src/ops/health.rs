//! The process's health flags: shutdown phases, the sender lanes' liveness, and the channel of
//! failures after which the process must be restarted. Read by `/readyz`, the systemd watchdog
//! and the wiring.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by the http threads, the workers and the wiring.
pub(crate) struct Health {
    /// Set when shutdown begins: new messages are refused and workers take no new turns.
    stopping: AtomicBool,
    /// Set when the http threads must end (after the drain).
    http_stop: AtomicBool,
    /// Set by the shutdown: the workers' running scripts are interrupted (their turns stay
    /// queued), so a long script cannot hold the exit.
    scripts_stop: Arc<AtomicBool>,
    /// One flag per sender lane, false once the lane's thread has ended.
    lanes_alive: Vec<Arc<AtomicBool>>,
    /// A failure after which the process cannot go on serving (the listener died): the command
    /// line shuts down and exits with status 2, so the service manager restarts it.
    fatal: crossbeam_channel::Sender<String>,
}

impl Health {
    pub(crate) fn new(lanes: usize, fatal: crossbeam_channel::Sender<String>) -> Health {
        Health {
            stopping: AtomicBool::new(false),
            http_stop: AtomicBool::new(false),
            scripts_stop: Arc::new(AtomicBool::new(false)),
            lanes_alive: (0..lanes).map(|_| Arc::new(AtomicBool::new(true))).collect(),
            fatal,
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub(crate) fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The flag the workers' script engines stop on.
    pub(crate) fn scripts_stop(&self) -> Arc<AtomicBool> {
        self.scripts_stop.clone()
    }

    pub(crate) fn interrupt_scripts(&self) {
        self.scripts_stop.store(true, Ordering::SeqCst);
    }

    pub(crate) fn http_stopping(&self) -> bool {
        self.http_stop.load(Ordering::SeqCst)
    }

    pub(crate) fn stop_http(&self) {
        self.http_stop.store(true, Ordering::SeqCst);
    }

    /// The liveness flag of sender lane `lane`, for its thread to clear.
    pub(crate) fn lane_flag(&self, lane: usize) -> Arc<AtomicBool> {
        self.lanes_alive[lane].clone()
    }

    pub(crate) fn lanes_alive(&self) -> bool {
        self.lanes_alive.iter().all(|a| a.load(Ordering::SeqCst))
    }

    /// Reports a failure that needs a restart (the first one is kept).
    pub(crate) fn fatal(&self, why: String) {
        let _ = self.fatal.try_send(why);
    }
}
