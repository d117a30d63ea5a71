//! The shared outbox: claiming sessions' head outputs for delivery, settling them (delivered,
//! retried later, dead), the dead letters and their replay.

use std::collections::HashMap;

use super::{Tx, key_at};
use crate::domain::{DeadLetter, OutboxRow, Replay, SessionKey};
use crate::store::Result;

fn row(r: &postgres::Row) -> OutboxRow {
    OutboxRow {
        id: r.get(0),
        key: key_at(r, 1),
        seq: r.get(4),
        body: r.get(5),
        not_before_ms: r.get(6),
        attempts: r.get(7),
    }
}

pub(super) fn max_id(tx: &mut Tx<'_>) -> Result<i64> {
    Ok(tx.query_opt("SELECT max(id) FROM outbox", &[])?.and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0))
}

/// As the SQLite backend's (the contract's) `outbox_after`. Replicas do not read the outbox
/// this way (ids commit out of order across connections); they claim heads (`claim_heads`).
pub(super) fn after(
    tx: &mut Tx<'_>,
    lane: usize,
    lanes: usize,
    endpoint: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>> {
    let (lane, lanes, limit) = (lane as i64, lanes as i64, limit as i64);
    let rows = tx.query(
        "SELECT id, endpoint, user_id, session_id, seq, body, not_before_ms, attempts FROM outbox
         WHERE id > $2 AND id <= $5 AND endpoint = $6 AND hash % $4 = $1 ORDER BY id LIMIT $3",
        &[&lane, &after, &limit, &lanes, &upto, &endpoint],
    )?;
    Ok(rows.iter().map(row).collect())
}

pub(super) fn of_session(
    tx: &mut Tx<'_>,
    key: &SessionKey,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>> {
    let limit = limit as i64;
    let rows = tx.query(
        "SELECT id, endpoint, user_id, session_id, seq, body, not_before_ms, attempts FROM outbox
         WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 AND id > $4 AND id <= $5 ORDER BY id LIMIT $6",
        &[&key.endpoint, &key.user_id, &key.session_id, &after, &upto, &limit],
    )?;
    Ok(rows.iter().map(row).collect())
}

/// Claims up to `n` sessions of `endpoints` whose head output is due (`now_ms`) and not leased
/// for delivery; their heads and the new delivery fences. The heads are read by a second
/// statement, with the rows locked (see `queue::claim`).
pub(super) fn claim_heads(
    tx: &mut Tx<'_>,
    owner: &str,
    lease_ms: i64,
    endpoints: &[String],
    now_ms: i64,
    n: usize,
) -> Result<Vec<(OutboxRow, i64)>> {
    let n = n as i64;
    let rows = tx.query(
        "WITH c AS (
             SELECT endpoint, user_id, session_id FROM queues
             WHERE outputs > 0 AND endpoint = ANY($4) AND out_due <= $5 AND dl_until < hookflow_now_ms()
             ORDER BY out_due LIMIT $3 FOR UPDATE SKIP LOCKED)
         UPDATE queues q SET dl_owner = $1, dl_fence = q.dl_fence + 1, dl_until = hookflow_now_ms() + $2
         FROM c WHERE q.endpoint = c.endpoint AND q.user_id = c.user_id AND q.session_id = c.session_id
         RETURNING q.endpoint, q.user_id, q.session_id, q.dl_fence",
        &[&owner, &lease_ms, &n, &endpoints, &now_ms],
    )?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let claimed: Vec<(SessionKey, i64)> = rows.iter().map(|r| (key_at(r, 0), r.get(3))).collect();
    let (e, u, s) = super::queue::key_arrays(claimed.iter().map(|(k, _)| k));
    let found = tx.query(
        "SELECT DISTINCT ON (o.endpoint, o.user_id, o.session_id)
             o.id, o.endpoint, o.user_id, o.session_id, o.seq, o.body, o.not_before_ms, o.attempts
         FROM outbox o JOIN unnest($1::text[], $2::text[], $3::text[]) AS c(e, u, s)
           ON o.endpoint = c.e AND o.user_id = c.u AND o.session_id = c.s
         ORDER BY o.endpoint, o.user_id, o.session_id, o.seq",
        &[&e, &u, &s],
    )?;
    let mut found: HashMap<SessionKey, OutboxRow> = found.iter().map(|r| (key_at(r, 1), row(r))).collect();
    let mut heads = Vec::with_capacity(claimed.len());
    for (key, fence) in claimed {
        match found.remove(&key) {
            Some(head) => heads.push((head, fence)),
            // The count was off: set it right and let go.
            None => refresh(tx, &key, owner, fence)?,
        }
    }
    Ok(heads)
}

/// Outputs `ids` were delivered: they leave the outbox, their sessions' counts are refreshed and
/// their delivery leases released where this replica holds them (`leases`, by position). Four
/// statements for the whole batch (a lane settles many heads at once). A row already gone
/// (settled by a replica that took over meanwhile) changes nothing.
pub(super) fn settle_delivered(
    tx: &mut Tx<'_>,
    owner: &str,
    ids: &[i64],
    leases: &[Option<(SessionKey, i64)>],
) -> Result<()> {
    // The sessions' `queues` rows are locked first, in key order (see `batch::commit_batch`).
    tx.query(
        "SELECT 1 FROM queues q
         WHERE (q.endpoint, q.user_id, q.session_id) IN
               (SELECT endpoint, user_id, session_id FROM outbox WHERE id = ANY($1))
         ORDER BY q.endpoint, q.user_id, q.session_id FOR UPDATE OF q",
        &[&ids],
    )?;
    let gone = tx.query("DELETE FROM outbox WHERE id = ANY($1) RETURNING endpoint, user_id, session_id", &[&ids])?;
    let fences: HashMap<&SessionKey, i64> = leases.iter().flatten().map(|(k, f)| (k, *f)).collect();
    let mut keys: Vec<SessionKey> = gone.iter().map(|r| key_at(r, 0)).collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    let f: Vec<i64> = keys.iter().map(|k| fences.get(k).copied().unwrap_or(-1)).collect();
    let (e, u, s) = super::queue::key_arrays(keys.iter());
    tx.execute(
        "UPDATE queues q SET
             outputs = (SELECT count(*) FROM outbox o
                        WHERE o.endpoint = q.endpoint AND o.user_id = q.user_id AND o.session_id = q.session_id),
             out_due = coalesce((SELECT o.not_before_ms FROM outbox o
                                 WHERE o.endpoint = q.endpoint AND o.user_id = q.user_id AND o.session_id = q.session_id
                                 ORDER BY o.seq LIMIT 1), 0),
             dl_owner = CASE WHEN q.dl_owner = $1 AND q.dl_fence = h.f THEN NULL ELSE q.dl_owner END,
             dl_until = CASE WHEN q.dl_owner = $1 AND q.dl_fence = h.f THEN 0 ELSE q.dl_until END
         FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) AS h(e, u, s, f)
         WHERE q.endpoint = h.e AND q.user_id = h.u AND q.session_id = h.s",
        &[&owner, &e, &u, &s, &f],
    )?;
    Ok(())
}

/// Gives back delivery leases held by `owner` without a fate: the heads stay as they are, due,
/// for any lane of any replica to claim.
pub(super) fn release_heads(tx: &mut Tx<'_>, owner: &str, leases: &[(SessionKey, i64)]) -> Result<()> {
    super::queue::lock_all(tx, leases.iter().map(|(k, _)| k))?;
    let (e, u, s) = super::queue::key_arrays(leases.iter().map(|(k, _)| k));
    let f: Vec<i64> = leases.iter().map(|(_, f)| *f).collect();
    tx.execute(
        "UPDATE queues q SET dl_owner = NULL, dl_until = 0
         FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) AS h(e, u, s, f)
         WHERE q.endpoint = h.e AND q.user_id = h.u AND q.session_id = h.s AND q.dl_owner = $1 AND q.dl_fence = h.f",
        &[&owner, &e, &u, &s, &f],
    )?;
    Ok(())
}

/// What a held head's `last_error` says (`Claims::hold_head`), by which `unhold` finds it.
pub(super) const HELD: &str = "held: the webhook is down";
/// What an unheld head's `last_error` says, by which another replica's `hold_head` knows that
/// the webhook answers again.
pub(super) const UNHELD: &str = "due again: the webhook answered after it was down";

/// Makes the heads held for a down webhook (`HELD`) of `endpoints` due at `now_ms`, with their
/// sessions' due times; returns how many.
pub(super) fn unhold(tx: &mut Tx<'_>, endpoints: &[String], now_ms: i64) -> Result<usize> {
    // The sessions' `queues` rows are locked first, in key order (see `settle_delivered`), and
    // only those sessions change: a head held after this lock is left to the lane that held it
    // (`claimed.rs` unholds again when it finds the webhook up after its hold).
    let locked = tx.query(
        "SELECT q.endpoint, q.user_id, q.session_id FROM queues q
         WHERE (q.endpoint, q.user_id, q.session_id) IN
               (SELECT endpoint, user_id, session_id FROM outbox
                WHERE endpoint = ANY($1) AND last_error = $2 AND not_before_ms > $3)
         ORDER BY q.endpoint, q.user_id, q.session_id FOR UPDATE OF q",
        &[&endpoints, &HELD, &now_ms],
    )?;
    let keys: Vec<SessionKey> = locked.iter().map(|r| key_at(r, 0)).collect();
    if keys.is_empty() {
        return Ok(0);
    }
    let (e, u, s) = super::queue::key_arrays(keys.iter());
    let n = tx.execute(
        "UPDATE outbox o SET not_before_ms = $5, last_error = $6
         FROM unnest($1::text[], $2::text[], $3::text[]) AS k(e, u, s)
         WHERE o.endpoint = k.e AND o.user_id = k.u AND o.session_id = k.s
           AND o.last_error = $4 AND o.not_before_ms > $5",
        &[&e, &u, &s, &HELD, &now_ms, &UNHELD],
    )?;
    tx.execute(
        "UPDATE queues q SET out_due = $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS k(e, u, s)
         WHERE q.endpoint = k.e AND q.user_id = k.u AND q.session_id = k.s AND q.out_due > $4",
        &[&e, &u, &s, &now_ms],
    )?;
    Ok(n as usize)
}

/// Whether this replica (`owner`) still holds the delivery lease `lease` (session, fence), with
/// the session's `queues` row locked until the end of the transaction; true without a lease (an
/// output settled by hand, not claimed). A replica cut off from the database past its lease
/// finds it taken over: the output's fate is then the other replica's to write.
pub(super) fn still_held(tx: &mut Tx<'_>, owner: &str, lease: &Option<(SessionKey, i64)>) -> Result<bool> {
    let Some((k, fence)) = lease else { return Ok(true) };
    let row = tx.query_opt(
        "SELECT dl_owner = $4 AND dl_fence = $5 FROM queues
         WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 FOR UPDATE",
        &[&k.endpoint, &k.user_id, &k.session_id, &owner, fence],
    )?;
    Ok(row.and_then(|r| r.get::<_, Option<bool>>(0)).unwrap_or(false))
}

/// What became of a head output that was not delivered.
pub(super) enum Fate<'a> {
    Retry { attempts: i64, next_ms: i64, error: &'a str },
    Dead { attempts: i64, error: &'a str, now_ms: i64 },
}

/// Records the fate of outputs `ids` that were not delivered (those are `settle_delivered`'s) and
/// releases their sessions' delivery leases where this replica holds them (`leases`, by
/// position). A row already gone (settled by a replica that took over meanwhile) changes nothing.
pub(super) fn settle(
    tx: &mut Tx<'_>,
    owner: &str,
    ids: &[i64],
    leases: &[Option<(SessionKey, i64)>],
    fate: Fate<'_>,
) -> Result<()> {
    for (id, lease) in ids.iter().zip(leases) {
        // The session's `queues` row is locked before anything changes (see `refresh`).
        let Some(owner_row) = tx.query_opt("SELECT endpoint, user_id, session_id FROM outbox WHERE id = $1", &[id])?
        else {
            continue;
        };
        super::queue::lock(tx, &key_at(&owner_row, 0))?;
        let found = match fate {
            Fate::Retry { attempts, next_ms, error } => tx.query_opt(
                "UPDATE outbox SET attempts = $2, not_before_ms = $3, last_error = $4 WHERE id = $1
                 RETURNING endpoint, user_id, session_id",
                &[id, &attempts, &next_ms, &error],
            )?,
            Fate::Dead { attempts, error, now_ms } => {
                tx.execute(
                    "INSERT INTO deadletters (endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms)
                     SELECT endpoint, user_id, session_id, seq, body, $2, $3, $4 FROM outbox WHERE id = $1",
                    &[id, &attempts, &error, &now_ms],
                )?;
                tx.query_opt("DELETE FROM outbox WHERE id = $1 RETURNING endpoint, user_id, session_id", &[id])?
            }
        };
        if let Some(r) = found {
            let key = key_at(&r, 0);
            let fence = lease.as_ref().filter(|(k, _)| *k == key).map_or(-1, |(_, f)| *f);
            refresh(tx, &key, owner, fence)?;
        }
    }
    Ok(())
}

/// Counts the session's outputs anew, sets its due time to its head's, and releases its delivery
/// lease if `owner` holds it with `fence`. The caller holds the row's lock (`queue::lock`), or
/// has just claimed it: the counts are then of everything committed.
fn refresh(tx: &mut Tx<'_>, key: &SessionKey, owner: &str, fence: i64) -> Result<()> {
    tx.execute(
        "UPDATE queues SET
             outputs = (SELECT count(*) FROM outbox o
                        WHERE o.endpoint = $1 AND o.user_id = $2 AND o.session_id = $3),
             out_due = coalesce((SELECT o.not_before_ms FROM outbox o
                                 WHERE o.endpoint = $1 AND o.user_id = $2 AND o.session_id = $3
                                 ORDER BY o.seq LIMIT 1), 0),
             dl_owner = CASE WHEN dl_owner = $4 AND dl_fence = $5 THEN NULL ELSE dl_owner END,
             dl_until = CASE WHEN dl_owner = $4 AND dl_fence = $5 THEN 0 ELSE dl_until END
         WHERE endpoint = $1 AND user_id = $2 AND session_id = $3",
        &[&key.endpoint, &key.user_id, &key.session_id, &owner, &fence],
    )?;
    Ok(())
}

pub(super) fn dead_unconfigured(tx: &mut Tx<'_>, endpoints: &[String], now_ms: i64) -> Result<usize> {
    let moved = tx.execute(
        "INSERT INTO deadletters (endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms)
         SELECT endpoint, user_id, session_id, seq, body, attempts, 'endpoint no longer configured', $2
         FROM outbox WHERE endpoint <> ALL($1) ORDER BY id",
        &[&endpoints, &now_ms],
    )?;
    tx.execute("DELETE FROM outbox WHERE endpoint <> ALL($1)", &[&endpoints])?;
    tx.execute("UPDATE queues SET outputs = 0, out_due = 0 WHERE endpoint <> ALL($1) AND outputs > 0", &[&endpoints])?;
    Ok(moved as usize)
}

pub(super) fn dead_letters(tx: &mut Tx<'_>, after: i64, limit: usize) -> Result<Vec<DeadLetter>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = tx.query(
        "SELECT id, endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms
         FROM deadletters WHERE id > $1 ORDER BY id LIMIT $2",
        &[&after, &limit],
    )?;
    Ok(rows
        .iter()
        .map(|r| DeadLetter {
            id: r.get(0),
            key: key_at(r, 1),
            seq: r.get(4),
            body: r.get(5),
            attempts: r.get(6),
            last_error: r.get(7),
            died_at_ms: r.get(8),
        })
        .collect())
}

/// A replay is a new output at the end of the session, with the next Seq (as in SQLite). The
/// session's `queues` row is locked first, as a turn's commit does, so that a replay and a turn
/// committing on another replica number their outputs one after the other; then the dead letter
/// is taken (deleted): a second replay of it (a double click behind a round-robin balancer)
/// waits for the first and then finds it gone, instead of queueing it twice. (In that order,
/// `queues` row then dead letter, as every statement that locks both.)
pub(super) fn replay(tx: &mut Tx<'_>, id: i64, now_ms: i64, endpoint_ok: &dyn Fn(&str) -> bool) -> Result<Replay> {
    let dead = tx.query_opt("SELECT endpoint, user_id, session_id FROM deadletters WHERE id = $1", &[&id])?;
    let Some(d) = dead else { return Ok(Replay::Unknown) };
    let key = key_at(&d, 0);
    if !endpoint_ok(&key.endpoint) {
        return Ok(Replay::EndpointGone(key.endpoint));
    }
    super::queue::lock(tx, &key)?;
    let taken = tx.query_opt("DELETE FROM deadletters WHERE id = $1 RETURNING seq, body", &[&id])?;
    let Some(d) = taken else { return Ok(Replay::Unknown) };
    let (dead_seq, body): (i64, String) = (d.get(0), d.get(1));
    let k = &key;
    tx.execute(
        "INSERT INTO queues (endpoint, user_id, session_id, outputs, out_due) VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET
             out_due = CASE WHEN queues.outputs = 0 THEN excluded.out_due ELSE queues.out_due END,
             outputs = queues.outputs + 1",
        &[&k.endpoint, &k.user_id, &k.session_id, &now_ms],
    )?;
    let seq: i64 = tx
        .query_opt(
            "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
             VALUES ($1, $2, $3, '', $4::bigint + 1, 0, $5)
             ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET seq = sessions.seq + 1, updated_ms = $5
             RETURNING seq",
            &[&k.endpoint, &k.user_id, &k.session_id, &dead_seq, &now_ms],
        )?
        .expect("INSERT … RETURNING gives a row")
        .get(0);
    let hash = i64::from(k.lane_hash());
    let out_id: i64 = tx
        .query_opt(
            "INSERT INTO outbox (hash, endpoint, user_id, session_id, seq, body, not_before_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[&hash, &k.endpoint, &k.user_id, &k.session_id, &seq, &body, &now_ms],
        )?
        .expect("INSERT … RETURNING gives a row")
        .get(0);
    tx.execute("SELECT pg_notify($1, '')", &[&super::CHANNEL])?;
    Ok(Replay::Queued { id: out_id, seq })
}
