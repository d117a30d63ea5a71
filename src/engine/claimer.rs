//! Replicas (replicas.md): the threads that connect this process's in-memory scheduler to work
//! claimed from the shared database. Only started when the store has `Claims` (PostgreSQL).
//!
//! - `claimer`: claims runnable sessions (each with its head message) while the scheduler has
//!   room, and queues them for the workers as the writer does with SQLite; woken by the writer
//!   after every commit, by other replicas (`listener`), and every `POLL` in any case.
//! - `renewer`: renews this replica's leases every third of `leaseSeconds`; while it cannot, the
//!   store is reported failing (`/readyz` 503), and after two thirds of the lease the backend
//!   stops claiming and committing under the old leases.
//! - `listener`: `LISTEN`s for other replicas' commits and wakes the claimer and the sender
//!   lanes; it reconnects every `POLL` while the database is away.
//! - `vacuum`: every `POLL`, vacuums the tables the claims churn once they hold enough dead
//!   rows (`Claims::vacuumer`, a connection of its own): autovacuum looks only once a minute by
//!   default.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use super::Scheduler;
use super::writer::{StoreFailure, StoreStatus};
use crate::delivery::Wake;
use crate::ops::health::Health;
use crate::store::{ErrorKind, Store};

/// The longest a replica goes without looking for work, whatever it heard.
const POLL: Duration = Duration::from_secs(1);

/// What the claimer thread is given by the wiring.
pub(crate) struct ClaimerContext {
    pub store: Arc<dyn Store>,
    pub sched: Arc<Scheduler>,
    /// Wake-ups from the writer and the listener.
    pub wake: Receiver<()>,
    pub health: Arc<Health>,
    /// Sessions this replica holds at most (running, parked or waiting for a worker): enough to
    /// keep the workers busy, few enough to leave the rest to the other replicas.
    pub max_active: usize,
}

/// Claims runnable sessions into the scheduler until shutdown.
pub(crate) fn run(cx: ClaimerContext) {
    let claims = cx.store.claims().expect("the claimer runs only on a store with claims");
    let mut failing = false;
    while !cx.health.stopping() {
        let room = cx.max_active.saturating_sub(cx.sched.active_sessions());
        let mut full = false;
        if room > 0 {
            match claims.claim_runs(room) {
                Ok(heads) => {
                    full = heads.len() == room;
                    failing = false;
                    for (id, key) in heads {
                        cx.sched.enqueue(key, id);
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    log::error!("cannot claim sessions: {e}; trying again every {POLL:?}");
                }
                Err(_) => {}
            }
        }
        if full {
            continue;
        }
        // A timeout, a wake-up or (at shutdown) a closed channel: look again either way.
        if cx.wake.recv_timeout(POLL).is_err() {
            continue;
        }
    }
}

/// What the renewer thread is given by the wiring.
pub(crate) struct RenewerContext {
    pub store: Arc<dyn Store>,
    /// `store.leaseSeconds`.
    pub lease: Duration,
    /// Where an unreachable database is reported (`/readyz`).
    pub status: Arc<StoreStatus>,
    /// Closed (or sent to) at shutdown.
    pub stop: Receiver<()>,
}

/// Renews the leases every third of the lease until shutdown.
pub(crate) fn renew(cx: RenewerContext) {
    let claims = cx.store.claims().expect("the renewer runs only on a store with claims");
    let every = cx.lease / 3;
    // A renewal that does not come back (a frozen database) is no error: counted from here,
    // two thirds of a lease without one make `/readyz` and the accepts say so (`StoreStatus`).
    let allowed = cx.lease * 2 / 3;
    cx.status.renewed(Instant::now(), allowed);
    loop {
        let started = Instant::now();
        let result = claims.renew();
        // A renewal that took longer than allowed: the database did not answer meanwhile.
        if started.elapsed() > allowed {
            log::error!(
                "the database did not answer this replica's renewal for {:.1}s; /readyz said not ready meanwhile",
                started.elapsed().as_secs_f64()
            );
        }
        match result {
            Ok(()) => {
                cx.status.renewed(Instant::now(), allowed);
                if cx.status.renewal_failed().is_some() {
                    cx.status.set_unreachable(None);
                    log::info!("the database is reachable again");
                }
            }
            Err(e) => {
                if cx.status.renewal_failed().is_none() {
                    log::error!("cannot renew this replica's claims: {e}; /readyz says not ready until it can");
                    cx.status.set_unreachable(Some(StoreFailure { kind: ErrorKind::Io, since: Instant::now() }));
                }
            }
        }
        select! {
            recv(cx.stop) -> _ => return,
            default(every) => {}
        }
    }
}

/// What the vacuum thread is given by the wiring.
pub(crate) struct VacuumContext {
    pub store: Arc<dyn Store>,
    /// Closed at shutdown.
    pub stop: Receiver<()>,
}

/// Vacuums the churned tables when due, every `POLL`, until shutdown.
pub(crate) fn vacuum(cx: VacuumContext) {
    let claims = cx.store.claims().expect("the vacuum thread runs only on a store with claims");
    let mut vacuumer = None;
    loop {
        if vacuumer.is_none() {
            match claims.vacuumer() {
                Ok(Some(v)) => vacuumer = Some(v),
                Ok(None) => {
                    log::info!(
                        "this replica's database role does not own the tables queues, inbox and outbox, so it \
                         leaves their old row versions to autovacuum; under load, have the role that created \
                         them run hookflow, or set autovacuum_naptime to 1s"
                    );
                    return;
                }
                // The renewer reports an unreachable database; this thread tries again.
                Err(e) => log::debug!("cannot connect to vacuum yet: {e}"),
            }
        }
        if let Some(v) = &mut vacuumer {
            match v.step() {
                Ok(true) => log::debug!("vacuumed the claims' tables"),
                Ok(false) => {}
                Err(e) => {
                    log::debug!("lost the connection that vacuums: {e}");
                    vacuumer = None;
                }
            }
        }
        select! {
            recv(cx.stop) -> _ => return,
            default(POLL) => {}
        }
    }
}

/// What the listener thread is given by the wiring.
pub(crate) struct ListenerContext {
    pub store: Arc<dyn Store>,
    /// The claimer's wake-up channel.
    pub claimer: Sender<()>,
    /// The sender lanes.
    pub lanes: Wake,
    pub health: Arc<Health>,
}

/// Hears other replicas' commits and wakes the claimer and the lanes, until shutdown.
pub(crate) fn listen(cx: ListenerContext) {
    let claims = cx.store.claims().expect("the listener runs only on a store with claims");
    while !cx.health.stopping() {
        let mut news = match claims.listen() {
            Ok(n) => n,
            Err(e) => {
                log::debug!("cannot listen for other replicas yet: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        while !cx.health.stopping() {
            match news.wait(POLL) {
                Ok(true) => {
                    let _ = cx.claimer.try_send(());
                    cx.lanes.all();
                }
                Ok(false) => {}
                Err(e) => {
                    log::debug!("lost the connection that listens for other replicas: {e}");
                    break;
                }
            }
        }
    }
}
