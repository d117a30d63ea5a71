//! The shared inbound queue: accepting messages (numbered per session), claiming runnable
//! sessions, loading a turn, and committing turns under their lease.

use std::collections::HashMap;

use super::{Tx, key_at};
use crate::domain::{InboxRow, JobKind, SessionKey, SessionRow, TurnInput};
use crate::store::{ErrorKind, Result, StoreError, Vacuum};

/// A session and the fence of this replica's lease on it.
pub(super) type Lease = (SessionKey, i64);

/// Every queued message, per session in order.
pub(super) fn pending(tx: &mut Tx<'_>) -> Result<Vec<(i64, SessionKey)>> {
    let rows = tx.query(
        "SELECT id, endpoint, user_id, session_id FROM inbox ORDER BY endpoint, user_id, session_id, msg_no",
        &[],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), key_at(r, 1))).collect())
}

/// Claims up to `n` runnable sessions (queued messages, no live lease), longest waiting first;
/// each with its new fence and its head message.
///
/// The heads are read by a second statement: a row that `FOR UPDATE` had to wait for is
/// claimed in its newest version, but the rest of the claiming statement still reads the
/// snapshot taken before the wait (PostgreSQL's READ COMMITTED), which may lack the message
/// that made the session runnable. A new statement, taken with the rows locked, sees it.
pub(super) fn claim(
    tx: &mut Tx<'_>,
    owner: &str,
    lease_ms: i64,
    n: usize,
) -> Result<Vec<(SessionKey, i64, TurnInput)>> {
    let n = n as i64;
    let rows = tx.query(
        "WITH c AS (
             SELECT endpoint, user_id, session_id FROM queues
             WHERE pending > 0 AND run_until < hookflow_now_ms()
             ORDER BY ready_ms LIMIT $3 FOR UPDATE SKIP LOCKED)
         UPDATE queues q SET run_owner = $1, run_fence = q.run_fence + 1, run_until = hookflow_now_ms() + $2
         FROM c WHERE q.endpoint = c.endpoint AND q.user_id = c.user_id AND q.session_id = c.session_id
         RETURNING q.endpoint, q.user_id, q.session_id, q.run_fence",
        &[&owner, &lease_ms, &n],
    )?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let claimed: Vec<(SessionKey, i64)> = rows.iter().map(|r| (key_at(r, 0), r.get(3))).collect();
    let mut heads = heads(tx, claimed.iter().map(|(k, _)| k))?;
    let mut out = Vec::with_capacity(claimed.len());
    for (key, fence) in claimed {
        match heads.remove(&key) {
            Some(head) => out.push((key, fence, head)),
            // The count was off (cannot happen through this module); set it right and let go.
            None => release(tx, owner, &key, fence)?,
        }
    }
    Ok(out)
}

/// A query of turn inputs (`input_of`'s columns: the message, its session and the user's
/// profile), with `$select` after SELECT and `$rest` after the joins.
macro_rules! input_sql {
    ($select:literal, $rest:literal) => {
        concat!(
            "SELECT ",
            $select,
            " i.id, i.endpoint, i.user_id, i.session_id, i.kind, i.payload, i.resume,
                s.state, s.seq, s.messages, s.updated_ms, p.profile
             FROM inbox i
             LEFT JOIN sessions s ON s.endpoint = i.endpoint AND s.user_id = i.user_id AND s.session_id = i.session_id
             LEFT JOIN profiles p ON p.user_id = i.user_id ",
            $rest
        )
    };
}

/// The head (first queued) message of each of the sessions `keys` that has one, loaded as
/// `load_turn` loads it (with the session and the profile): the claim or commit that hands the
/// session to this replica reads its turn's input in the same statement, so a worker need not.
pub(super) fn heads<'k>(
    tx: &mut Tx<'_>,
    keys: impl Iterator<Item = &'k SessionKey>,
) -> Result<HashMap<SessionKey, TurnInput>> {
    let (e, u, s) = key_arrays(keys);
    let rows = tx.query(
        input_sql!(
            "DISTINCT ON (i.endpoint, i.user_id, i.session_id)",
            "JOIN unnest($1::text[], $2::text[], $3::text[]) AS c(e, u, s)
               ON i.endpoint = c.e AND i.user_id = c.u AND i.session_id = c.s
             ORDER BY i.endpoint, i.user_id, i.session_id, i.msg_no"
        ),
        &[&e, &u, &s],
    )?;
    rows.iter().map(|r| input_of(r).map(|t| (t.row.key.clone(), t))).collect()
}

/// The three key columns of `keys` as arrays (for `unnest`).
pub(super) fn key_arrays<'k>(keys: impl Iterator<Item = &'k SessionKey>) -> (Vec<&'k str>, Vec<&'k str>, Vec<&'k str>) {
    let (mut e, mut u, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for k in keys {
        e.push(k.endpoint.as_str());
        u.push(k.user_id.as_str());
        s.push(k.session_id.as_str());
    }
    (e, u, s)
}

/// Locks a session's `queues` row. Counting its rows afterwards, in a new statement, sees every
/// change committed before the lock was granted (see `claim`); an UPDATE that counts in a
/// subquery while it waits for the lock would count from its older snapshot.
pub(super) fn lock(tx: &mut Tx<'_>, key: &SessionKey) -> Result<()> {
    tx.query(
        "SELECT 1 FROM queues WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 FOR UPDATE",
        &[&key.endpoint, &key.user_id, &key.session_id],
    )?;
    Ok(())
}

/// Locks the `queues` rows of `keys` in key order, as every statement that locks several of them
/// does, so that two such transactions never wait for each other in a circle.
pub(super) fn lock_all<'k>(tx: &mut Tx<'_>, keys: impl Iterator<Item = &'k SessionKey>) -> Result<()> {
    let mut keys: Vec<&SessionKey> = keys.collect();
    keys.sort();
    keys.dedup();
    let (e, u, s) = key_arrays(keys.into_iter());
    tx.query(
        "SELECT 1 FROM queues q JOIN unnest($1::text[], $2::text[], $3::text[]) AS h(e, u, s)
           ON q.endpoint = h.e AND q.user_id = h.u AND q.session_id = h.s
         ORDER BY q.endpoint, q.user_id, q.session_id FOR UPDATE OF q",
        &[&e, &u, &s],
    )?;
    Ok(())
}

/// Lets go of a session's run lease, counting its queued messages anew.
pub(super) fn release(tx: &mut Tx<'_>, owner: &str, key: &SessionKey, fence: i64) -> Result<()> {
    lock(tx, key)?;
    tx.execute(
        "UPDATE queues SET run_owner = NULL, run_until = 0, ready_ms = hookflow_now_ms(),
             pending = (SELECT count(*) FROM inbox i
                        WHERE i.endpoint = $1 AND i.user_id = $2 AND i.session_id = $3)
         WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 AND run_owner = $4 AND run_fence = $5",
        &[&key.endpoint, &key.user_id, &key.session_id, &owner, &fence],
    )?;
    Ok(())
}

/// The message, its session and the user's profile, in one statement (a turn's load is on the
/// hot path; it needs no transaction: under the run lease nothing else writes the session).
pub(super) fn load_turn(tx: &mut Tx<'_>, inbox_id: i64) -> Result<Option<TurnInput>> {
    let row = tx.query_opt(input_sql!("", "WHERE i.id = $1"), &[&inbox_id])?;
    row.as_ref().map(input_of).transpose()
}

/// A turn's input from a row of `load_turn`'s columns.
fn input_of(r: &postgres::Row) -> Result<TurnInput> {
    let (id, key, kind): (i64, SessionKey, String) = (r.get(0), key_at(r, 1), r.get(4));
    let kind = JobKind::parse(&kind).ok_or_else(|| {
        StoreError::new(ErrorKind::Data, format!("message {id} has the kind {kind:?}, unknown to this version"))
    })?;
    let session = r.get::<_, Option<String>>(7).map(|state| SessionRow {
        state: (!state.is_empty()).then_some(state),
        seq: r.get(8),
        messages: r.get(9),
        updated_ms: r.get(10),
    });
    let profile = r.get(11);
    let row = InboxRow { id, key, kind, payload: r.get(5), resume: r.get(6) };
    Ok(TurnInput { row, session, profile })
}

/// Renews `owner`'s run leases `runs` and delivery leases `deliveries` (session, fence).
pub(super) fn renew(
    tx: &mut Tx<'_>,
    owner: &str,
    lease_ms: i64,
    runs: &[(SessionKey, i64)],
    deliveries: &[(SessionKey, i64)],
) -> Result<()> {
    if runs.is_empty() && deliveries.is_empty() {
        return Ok(());
    }
    // Every row is locked first, all at once, so a renewal never deadlocks with a commit.
    // (Locking the run leases' rows and then the delivery leases' did: the second set has keys
    // below the first's, and an accept of many sessions waited for one while holding the other.)
    lock_all(tx, runs.iter().chain(deliveries).map(|(k, _)| k))?;
    for (held, sql) in [
        (
            runs,
            "UPDATE queues q SET run_until = hookflow_now_ms() + $2
             FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[]) AS h(e, u, s, f)
             WHERE q.endpoint = h.e AND q.user_id = h.u AND q.session_id = h.s AND q.run_owner = $1 AND q.run_fence = h.f",
        ),
        (
            deliveries,
            "UPDATE queues q SET dl_until = hookflow_now_ms() + $2
             FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[]) AS h(e, u, s, f)
             WHERE q.endpoint = h.e AND q.user_id = h.u AND q.session_id = h.s AND q.dl_owner = $1 AND q.dl_fence = h.f",
        ),
    ] {
        if held.is_empty() {
            continue;
        }
        let (e, u, s) = key_arrays(held.iter().map(|(k, _)| k));
        let f: Vec<i64> = held.iter().map(|(_, f)| *f).collect();
        tx.execute(sql, &[&owner, &lease_ms, &e, &u, &s, &f])?;
    }
    Ok(())
}

/// Dead row versions in the tables every message churns, beyond those the last vacuum could not
/// remove, past which `Vacuumer` cleans them.
pub(super) const VACUUM_AFTER: i64 = 1000;

/// Whether the connection's role may vacuum the tables `Vacuumer` cleans: it owns them (or is
/// a member of the role that does). The schema must exist.
pub(super) fn may_vacuum(client: &mut impl postgres::GenericClient) -> Result<bool> {
    let row = client.query_one(
        "SELECT bool_and(pg_has_role(relowner, 'USAGE')) FROM pg_class
         WHERE oid IN ('queues'::regclass, 'inbox'::regclass, 'outbox'::regclass)",
        &[],
    )?;
    Ok(row.get(0))
}

/// Vacuums `queues`, `inbox` and `outbox`, on a connection of its own, when they hold more than
/// `VACUUM_AFTER` new dead row versions (PostgreSQL's statistics, fed by every replica).
///
/// Every message updates its session's `queues` row about five times and inserts and deletes a
/// row in `inbox` and in `outbox`; PostgreSQL keeps each old version until a vacuum. With
/// autovacuum's defaults (it looks once a minute) those tables held tens of thousands of dead
/// versions for a few hundred live rows under the bench's load, and every claim, lock and count
/// walked them.
pub(super) struct Vacuumer {
    client: postgres::Client,
    /// Dead versions counted just after the last vacuum: those an open transaction still
    /// needed. They stay counted until a later vacuum removes them; vacuuming again for them
    /// alone would scan the tables every second for nothing.
    left: i64,
}

impl Vacuumer {
    /// A vacuumer on `client`, or `None` when the connection's role may not vacuum the tables
    /// (it does not own them: PostgreSQL would skip them with a warning each time).
    pub(super) fn new(mut client: postgres::Client) -> Result<Option<Vacuumer>> {
        if !may_vacuum(&mut client)? {
            return Ok(None);
        }
        // A table skipped because another replica vacuums it is the point of SKIP_LOCKED, not
        // news: PostgreSQL's WARNING for it reached the log at info, looking like a problem.
        client.batch_execute("SET client_min_messages = error")?;
        Ok(Some(Vacuumer { client, left: 0 }))
    }

    fn dead(&mut self) -> Result<i64> {
        // The functions behind `pg_stat_user_tables`, without its joins: this runs every second
        // on every replica, busy or idle.
        let row = self.client.query_one(
            "SELECT pg_stat_get_dead_tuples('queues'::regclass) + pg_stat_get_dead_tuples('inbox'::regclass)
                    + pg_stat_get_dead_tuples('outbox'::regclass)",
            &[],
        )?;
        Ok(row.get(0))
    }
}

impl Vacuum for Vacuumer {
    fn step(&mut self) -> Result<bool> {
        if self.dead()? <= self.left + VACUUM_AFTER {
            return Ok(false);
        }
        // SKIP_LOCKED: a table another replica (or autovacuum) is vacuuming is left to it.
        // TRUNCATE false: cutting the tables' empty tail pages (inbox and outbox empty out all
        // the time) would take a lock that stops every replica's statements on them meanwhile.
        self.client.batch_execute("VACUUM (SKIP_LOCKED, TRUNCATE false) queues, inbox, outbox")?;
        // A vacuum's own count reaches the statistics as it ends.
        self.left = self.dead()?;
        Ok(true)
    }
}
