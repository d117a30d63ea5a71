//! The sender lanes of replicas (replicas.md): instead of reading the outbox by id (ids commit
//! out of order across replicas), a lane claims sessions whose head output is due and that no
//! replica is delivering (`Claims::claim_heads`), sends each head once, and records its fate,
//! which ends the claim. So only the head of a session is ever in flight, from one replica, and
//! output n+1 goes out only after output n was delivered or became a dead letter — also when
//! the replica that was sending n died (its claim expires after `leaseSeconds`).
//!
//! What a lane does with one head is what the single-process lane does (`lane.rs`): the URL's
//! shared health (`target.rs`) decides whether to send, hold or probe; the answer is classified
//! and noted (`attempt.rs`, `history.rs`); a failed head waits for its retry in the database
//! (`attempt_failed` sets its due time), not in memory.
//!
//! A claim holds as many heads as the URL's recent POSTs send in `CLAIM_TIME` (64 to a fast
//! webhook: one claim transaction per 64 outputs), and one still being sent after
//! `CLAIM_OVERDUE` gives back the heads it has not sent and wakes the group's other lanes. So
//! a slow webhook's outputs go out through all of its lanes at once. (A POST that hangs holds
//! the rest of its claim until `timeoutMs`; after `DOWN_AFTER` such failures the URL is down and
//! the rest are held in the database at once.)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::select;

use super::LaneContext;
use super::attempt::{Outcome, agent, attempt, retry_wait};
use super::target::Gate;
use crate::domain::OutboxRow;
use crate::store::{Claims, Hold};
use crate::util::now_ms;

/// Most heads claimed at once by one lane.
const CLAIM: usize = 64;
/// How long the heads of one claim should take to send. A lane claims as many as the URL's POSTs
/// of late send in that time (`Target::claim_size`): 64 to a fast webhook (one claim per 64
/// outputs), one to a slow one, so that a slow webhook's outputs spread over the group's lanes
/// instead of waiting in one lane's claim while the others idle.
const CLAIM_TIME: Duration = Duration::from_millis(100);
/// A claim still being sent after this long (its webhook became slow) gives back the heads it
/// has not sent, for idle lanes to take.
const CLAIM_OVERDUE: Duration = Duration::from_millis(500);
/// The longest a lane goes without looking for due heads (retries come due in the database).
const POLL: Duration = Duration::from_secs(1);

/// The lane loop for a store shared by replicas; ends at shutdown once nothing due is left or
/// the drain deadline has passed.
pub(crate) fn run(cx: LaneContext) {
    let claims = cx.store.claims().expect("claimed lanes run only on a store with claims");
    let agent = agent(&cx.config, cx.tls.clone());
    let endpoints = cx.plan.group.endpoints.clone();
    let lane = cx.lane;
    let mut drain_until: Option<Instant> = None;
    let mut failing = false;
    loop {
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let heads = match claims.claim_heads(&endpoints, cx.plan.group.target.claim_size(CLAIM_TIME, CLAIM)) {
            Ok(h) => {
                failing = false;
                h
            }
            Err(e) => {
                if !failing {
                    log::error!("sender-{lane}: cannot claim outputs: {e}; trying again every {POLL:?}");
                }
                failing = true;
                Vec::new()
            }
        };
        let claimed = !heads.is_empty();
        // Delivered heads are settled together, in one transaction for the claim: until then
        // their claims stay with this replica, so nothing else sends them (at-least-once: a
        // crash before the settle sends them again, with the same webhook-id).
        let delivered = send_claim(&cx, claims, &agent, heads, drain_until);
        if !delivered.is_empty()
            && let Err(e) = cx.store.delivered(&delivered)
        {
            // At-least-once: the heads stay in the outbox, and once their claims expire they are sent again.
            log::error!("sender-{lane}: cannot record {} delivered output(s): {e}", delivered.len());
        }
        if claimed {
            continue;
        }
        if drain_until.is_some() && !failing {
            // Draining and nothing is due: what waits for a retry stays for the other replicas.
            break;
        }
        select! {
            recv(cx.plan.wake) -> _ => {}
            recv(cx.stop) -> d => drain_until = Some(d.unwrap_or_else(|_| Instant::now())),
            default(POLL) => {}
        }
    }
    cx.alive.store(false, Ordering::SeqCst);
    let _ = cx.done.send(());
    log::debug!("sender-{lane}: stopped");
}

/// Sends the heads of one claim in turn and returns the delivered ones. The rest are left
/// unsent when this replica's claims can no longer be trusted, or given back once the claim has
/// taken longer than `CLAIM_OVERDUE`.
fn send_claim(
    cx: &LaneContext,
    claims: &dyn Claims,
    agent: &ureq::Agent,
    heads: Vec<OutboxRow>,
    drain_until: Option<Instant>,
) -> Vec<i64> {
    let started = Instant::now();
    let mut delivered = Vec::new();
    let mut heads = heads.into_iter();
    while let Some(row) = heads.next() {
        if !claims.trusted() {
            // Cut off from the database for two thirds of the lease (the other heads of a claim
            // wait behind a slow POST): another replica may take these heads over soon, send
            // them and their sessions' next outputs, and these would then arrive after them.
            // They are left unsent, and no longer renewed: their claims expire. (A POST already
            // under way is not cut short: a healthy replica's POSTs may take `timeoutMs`, longer
            // than a third of the lease; the README says what that leaves.)
            for r in std::iter::once(row).chain(heads) {
                log::warn!(
                    "sender-{}: output {} is not sent: this replica could not renew its claims, so another may deliver it",
                    cx.lane,
                    r.id
                );
                claims.abandon_head(r.id);
            }
            break;
        }
        if started.elapsed() > CLAIM_OVERDUE {
            // The webhook became slow: idle lanes (here or elsewhere) take the rest at once.
            let rest: Vec<i64> = std::iter::once(row.id).chain(heads.map(|r| r.id)).collect();
            match claims.release_heads(&rest) {
                Ok(()) => cx.plan.group.target.wake_lanes(),
                Err(e) => log::warn!(
                    "sender-{}: cannot give back {} claimed output(s), which wait for their claims to expire: {e}",
                    cx.lane,
                    rest.len()
                ),
            }
            break;
        }
        delivered.extend(send(cx, claims, agent, row, drain_until));
    }
    delivered
}

/// Sends one claimed head and records its fate (which releases the claim), except when it was
/// delivered: then its id is returned, for the caller to settle with the others.
fn send(
    cx: &LaneContext,
    claims: &dyn Claims,
    agent: &ureq::Agent,
    row: OutboxRow,
    drain_until: Option<Instant>,
) -> Option<i64> {
    let store = &cx.store;
    let group = &cx.plan.group;
    let Some(ep) = cx.config.endpoint_by_name(&row.key.endpoint) else {
        // Claims are made for the group's endpoints only.
        return None;
    };
    let probe = match group.target.gate(now_ms()) {
        Gate::Go => false,
        Gate::Probe => true,
        Gate::Hold { until_ms, .. } => {
            // The webhook is down: the head waits in the database until the next probe time, or
            // until the webhook answers again (`unhold` below, by whichever lane of whichever
            // replica sees it).
            match claims.hold_head(row.id, row.attempts, until_ms) {
                // Another replica saw it answer: sent, and its answer tells this replica too.
                Ok(Hold::Answered) => false,
                // Another lane here may have seen it answer, and unheld, since the gate said
                // hold: then this head is unheld too, or it would wait out its hold.
                Ok(Hold::Held) if group.target.is_up() => {
                    unhold(cx, claims);
                    return None;
                }
                Ok(_) => return None,
                Err(e) => {
                    log::error!("sender-{}: cannot hold output {}: {e}", cx.lane, row.id);
                    return None;
                }
            }
        }
    };
    let started = Instant::now();
    let limit = drain_until.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
    let tried = attempt(agent, ep, &row, now_ms() / 1000, limit);
    group.target.note_post(started.elapsed());
    let attempts = row.attempts + 1;
    super::history::note(cx, &row, attempts, &tried, started.elapsed());
    let outcome = tried.outcome;
    log::debug!("sender-{}: output {} seq {} attempt {attempts}: {outcome:?}", cx.lane, row.id, row.seq);
    if group.target.record(probe, &outcome, now_ms()) {
        unhold(cx, claims);
    }
    // The fate is counted and logged once written: a replica that lost the claim meanwhile
    // writes nothing (the replica that took the output over decides).
    let (written, dead, why) = match outcome {
        Outcome::Delivered => {
            cx.metrics.delivered(started.elapsed());
            return Some(row.id);
        }
        Outcome::Final(e) => {
            (store.dead(row.id, attempts, &e, now_ms()), true, format!("refused by the webhook ({e})"))
        }
        Outcome::Retry(e, after) => match retry_wait(&cx.config.delivery.retry_schedule, attempts, after) {
            Some(wait) => {
                let written = store.attempt_failed(row.id, attempts, now_ms() + wait.as_millis() as i64, &e);
                (written, false, format!("delivery failed ({e}); retrying in {wait:?}"))
            }
            None => (
                store.dead(row.id, attempts, &e, now_ms()),
                true,
                format!("undeliverable after {attempts} attempts ({e})"),
            ),
        },
    };
    match written {
        Ok(true) if dead => {
            log::warn!("endpoint {}: output {why}; kept as a dead letter", ep.name);
            cx.metrics.dead();
        }
        Ok(true) => {
            // At info, as on a single process (lane.rs).
            log::info!("endpoint {}: {why}", ep.name);
            cx.metrics.retried()
        }
        Ok(false) => log::info!(
            "sender-{}: output {}: {why}, but another replica delivers it now; its fate is that replica's",
            cx.lane,
            row.id
        ),
        // At-least-once: the head stays in the outbox, and once the claim expires it is sent again.
        Err(e) => log::error!("sender-{}: cannot record the fate of output {}: {e}", cx.lane, row.id),
    }
    None
}

/// The group's webhook answers again: the heads held for it wait no longer.
fn unhold(cx: &LaneContext, claims: &dyn Claims) {
    match claims.unhold(&cx.plan.group.endpoints) {
        Ok(n) => log::debug!("sender-{}: the webhook answers again; {n} held output(s) are due now", cx.lane),
        Err(e) => log::warn!(
            "sender-{}: the webhook answers again, but its held outputs wait for their hold to end: {e}",
            cx.lane
        ),
    }
}
