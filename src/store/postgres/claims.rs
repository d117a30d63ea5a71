//! This replica's side of the shared work (`Claims`): claiming sessions to run and head
//! outputs to send, renewing, trusting and giving back those leases, holding heads for a down
//! webhook, the shared counts, and hearing other replicas' wake-ups (`Listener`). The lease
//! bookkeeping lives in `PgStore` (`mod.rs`); the SQL in `queue.rs` and `outbox.rs`.

use std::time::{Duration, Instant};

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;

use super::{BACKLOG_FOR, CHANNEL, PgStore, outbox, queue};
use crate::domain::{OutboxRow, SessionKey, TurnRecord};
use crate::store::{Claims, Hold, News, Result, Store, Vacuum};

impl PgStore {
    /// The delivery leases held on outputs `ids`.
    pub(super) fn lease_of(&self, ids: &[i64]) -> Vec<Option<(SessionKey, i64)>> {
        let held = self.deliveries();
        ids.iter().map(|id| held.get(id).cloned()).collect()
    }

    pub(super) fn forget_deliveries(&self, ids: &[i64]) {
        let mut held = self.deliveries();
        for id in ids {
            held.remove(id);
        }
    }
}

impl Claims for PgStore {
    fn replica(&self) -> &str {
        &self.owner
    }

    fn commit_turns(&self, turns: &[&TurnRecord]) -> Result<Vec<(i64, SessionKey)>> {
        Ok(self.commit(&[], turns, Some(self.lease_ms))?.1)
    }

    fn claim_runs(&self, n: usize) -> Result<Vec<(i64, SessionKey)>> {
        if n == 0 || !self.leases_valid() {
            return Ok(Vec::new());
        }
        let claimed = self.in_tx(|tx| queue::claim(tx, &self.owner, self.lease_ms, n))?;
        let mut held = self.runs();
        let mut heads = Vec::with_capacity(claimed.len());
        for (key, fence, head) in claimed {
            held.insert(key.clone(), fence);
            heads.push((head.row.id, key));
            self.preload(head);
        }
        Ok(heads)
    }

    fn trusted(&self) -> bool {
        self.leases_valid()
    }

    fn abandon_head(&self, output_id: i64) {
        self.deliveries().remove(&output_id);
    }

    fn release_run(&self, key: &SessionKey) -> Result<()> {
        let Some(fence) = self.runs().remove(key) else { return Ok(()) };
        self.in_tx(|tx| queue::release(tx, &self.owner, key, fence))
    }

    fn hold_head(&self, id: i64, attempts: i64, until_ms: i64) -> Result<Hold> {
        let answered = self.in_auto(|tx| {
            let error = tx.query_opt("SELECT last_error FROM outbox WHERE id = $1", &[&id])?;
            Ok(error.and_then(|r| r.get::<_, Option<String>>(0)).is_some_and(|e| e == outbox::UNHELD))
        })?;
        if answered {
            return Ok(Hold::Answered);
        }
        Ok(if self.attempt_failed(id, attempts, until_ms, outbox::HELD)? { Hold::Held } else { Hold::Lost })
    }

    fn unhold(&self, endpoints: &[String]) -> Result<usize> {
        let now = crate::util::now_ms();
        self.in_tx(|tx| {
            let n = outbox::unhold(tx, endpoints, now)?;
            if n > 0 {
                tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])?;
            }
            Ok(n)
        })
    }

    fn release_heads(&self, ids: &[i64]) -> Result<()> {
        let leases: Vec<(SessionKey, i64)> = self.lease_of(ids).into_iter().flatten().collect();
        // Forgotten whatever the outcome: a release that failed leaves the claims to expire.
        self.forget_deliveries(ids);
        if leases.is_empty() {
            return Ok(());
        }
        self.in_tx(|tx| {
            outbox::release_heads(tx, &self.owner, &leases)?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).map(drop)
        })
    }

    fn claim_heads(&self, endpoints: &[String], n: usize) -> Result<Vec<OutboxRow>> {
        if n == 0 || !self.leases_valid() {
            return Ok(Vec::new());
        }
        let now = crate::util::now_ms();
        let claimed = self.in_tx(|tx| outbox::claim_heads(tx, &self.owner, self.lease_ms, endpoints, now, n))?;
        let mut held = self.deliveries();
        Ok(claimed
            .into_iter()
            .map(|(row, fence)| {
                held.insert(row.id, (row.key.clone(), fence));
                row
            })
            .collect())
    }

    fn renew(&self) -> Result<()> {
        let started = Instant::now();
        let lease = self.lease_ms;
        // Only the leases this replica tracks: one it gave up on (a turn dropped under a lost
        // lease) is left to expire, so that another claim can take the session.
        let runs: Vec<(SessionKey, i64)> = self.runs().iter().map(|(k, f)| (k.clone(), *f)).collect();
        let deliveries: Vec<(SessionKey, i64)> = self.deliveries().values().cloned().collect();
        self.in_tx(|tx| queue::renew(tx, &self.owner, lease, &runs, &deliveries))?;
        // Counted from before the renewal was sent: the database may have applied it at once.
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) =
            started + Duration::from_millis(lease as u64 * 2 / 3);
        Ok(())
    }

    fn release_all(&self) -> Result<()> {
        self.runs().clear();
        self.preloaded.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.deliveries().clear();
        self.in_tx(|tx| {
            tx.execute(
                "UPDATE queues SET run_owner = NULL, run_until = 0, ready_ms = hookflow_now_ms() WHERE run_owner = $1",
                &[&self.owner],
            )?;
            tx.execute("UPDATE queues SET dl_owner = NULL, dl_until = 0 WHERE dl_owner = $1", &[&self.owner])?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).map(drop)
        })
    }

    fn queued(&self) -> Result<usize> {
        // A count younger than BACKLOG_FOR, plus this replica's accepts since: other replicas'
        // accepts of the last 100 ms may be missing, so the cap can be passed by that much.
        if let Some((at, n)) = *self.backlog.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < BACKLOG_FOR
        {
            return Ok(n);
        }
        let at = Instant::now();
        let n = self.in_auto(|tx| {
            let n: i64 = tx.query_opt("SELECT count(*) FROM inbox", &[])?.map_or(0, |r| r.get(0));
            Ok(n as usize)
        })?;
        *self.backlog.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, n));
        Ok(n)
    }

    fn backlog(&self) -> Result<(usize, usize)> {
        self.in_auto(|tx| {
            let r = tx.query_opt("SELECT count(*), count(DISTINCT (endpoint, user_id, session_id)) FROM inbox", &[])?;
            Ok(r.map_or((0, 0), |r| (r.get::<_, i64>(0) as usize, r.get::<_, i64>(1) as usize)))
        })
    }

    fn vacuumer(&self) -> Result<Option<Box<dyn Vacuum>>> {
        Ok(queue::Vacuumer::new(self.pool.connect()?)?.map(|v| Box::new(v) as Box<dyn Vacuum>))
    }

    fn listen(&self) -> Result<Box<dyn News>> {
        let mut client = self.pool.connect()?;
        client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        Ok(Box::new(Listener { client, owner: self.owner.clone() }))
    }
}

/// A connection that `LISTEN`s for other replicas' wake-ups.
struct Listener {
    client: Client,
    /// This replica's name: the payload of its own commits' notifications, which it ignores.
    owner: String,
}

impl News for Listener {
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let mut n = self.client.notifications();
        // Waits up to `timeout` for the first wake-up from elsewhere; those already there with it
        // are taken too.
        let deadline = Instant::now() + timeout;
        let mut any = false;
        while !any {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            match n.timeout_iter(left).next()? {
                Some(note) => any = note.payload() != self.owner,
                None => return Ok(false),
            }
        }
        while n.iter().next()?.is_some() {}
        Ok(any)
    }
}
