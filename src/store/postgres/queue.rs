//! The shared inbound queue: accepting messages (numbered per session), claiming runnable
//! sessions, loading a turn, and committing turns under their lease.

use std::collections::HashMap;

use super::{Tx, key_at, sessions};
use crate::domain::{InboxRow, JobKind, NewOutput, SessionKey, TranscriptLine, TurnInput, TurnRecord};
use crate::store::{Accept, ErrorKind, Result, StoreError};

/// A session and the fence of this replica's lease on it.
pub(super) type Lease = (SessionKey, i64);

/// One write of a batch, in the order locks are taken (see `commit_batch`).
enum Op<'a> {
    /// The accept at this index of the batch.
    Accept(usize, JobKind, &'a str),
    Turn(&'a TurnRecord),
}

/// One writer batch in one transaction: accepted messages (their ids, in the batch's order) and
/// finished turns; returns the ids and the sessions (with the fence) whose run lease the batch
/// released.
///
/// Rows of `queues` are locked in key order, whoever writes: two replicas' batches that touch
/// the same sessions then wait for each other instead of deadlocking. A turn is written only if
/// this replica still holds the session's lease with the fence it claimed (`runs`), and while
/// the leases are trusted (`valid`); otherwise it is dropped and the message runs again where
/// the session is claimed next.
pub(super) fn commit_batch(
    tx: &mut Tx<'_>,
    owner: &str,
    accepts: &[Accept<'_>],
    turns: &[&TurnRecord],
    runs: &HashMap<SessionKey, i64>,
    valid: bool,
) -> Result<(Vec<i64>, Vec<Lease>)> {
    let mut ops: Vec<(&SessionKey, Op<'_>)> = accepts
        .iter()
        .enumerate()
        .map(|(i, (key, kind, payload))| (*key, Op::Accept(i, *kind, payload)))
        .chain(turns.iter().map(|t| (&t.key, Op::Turn(t))))
        .collect();
    // Stable: a session's accepts keep their order.
    ops.sort_by(|a, b| a.0.cmp(b.0));
    let mut ids = vec![0; accepts.len()];
    let mut released = Vec::new();
    for (key, op) in ops {
        match op {
            Op::Accept(i, kind, payload) => ids[i] = accept(tx, key, kind, payload)?,
            Op::Turn(t) => {
                let fence = runs.get(key).copied().filter(|_| valid);
                if let (None, Some(f)) = (&t.checkpoint, fence) {
                    released.push((key.clone(), f));
                }
                match fence {
                    Some(fence) if guard(tx, owner, key, fence)? => write_turn(tx, t)?,
                    _ => log::warn!(
                        "{}: this replica lost its claim on a session while a message ran; the message runs \
                         again where the session is claimed next",
                        key.endpoint
                    ),
                }
            }
        }
    }
    if !(accepts.is_empty() && turns.is_empty()) {
        tx.execute("SELECT pg_notify($1, '')", &[&super::CHANNEL])?;
    }
    Ok((ids, released))
}

/// Numbers the message in its session (under the `queues` row's lock) and queues it.
fn accept(tx: &mut Tx<'_>, key: &SessionKey, kind: JobKind, payload: &str) -> Result<i64> {
    let row = tx.query_opt(
        "WITH q AS (
             INSERT INTO queues (endpoint, user_id, session_id, next_msg, pending, ready_ms)
             VALUES ($1, $2, $3, 1, 1, hookflow_now_ms())
             ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET
                 next_msg = queues.next_msg + 1, pending = queues.pending + 1,
                 ready_ms = CASE WHEN queues.pending = 0 THEN excluded.ready_ms ELSE queues.ready_ms END
             RETURNING next_msg)
         INSERT INTO inbox (endpoint, user_id, session_id, msg_no, kind, payload)
         SELECT $1, $2, $3, q.next_msg, $4, $5 FROM q RETURNING id",
        &[&key.endpoint, &key.user_id, &key.session_id, &kind.as_str(), &payload],
    )?;
    Ok(row.expect("INSERT … RETURNING gives a row").get(0))
}

/// Locks the session's `queues` row if this replica's lease with `fence` still holds it.
fn guard(tx: &mut Tx<'_>, owner: &str, key: &SessionKey, fence: i64) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM queues WHERE endpoint = $1 AND user_id = $2 AND session_id = $3
               AND run_owner = $4 AND run_fence = $5 FOR UPDATE",
            &[&key.endpoint, &key.user_id, &key.session_id, &owner, &fence],
        )?
        .is_some())
}

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
pub(super) fn claim(tx: &mut Tx<'_>, owner: &str, lease_ms: i64, n: usize) -> Result<Vec<(SessionKey, i64, i64)>> {
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
    let (e, u, s) = key_arrays(claimed.iter().map(|(k, _)| k));
    let heads = tx.query(
        "SELECT DISTINCT ON (i.endpoint, i.user_id, i.session_id) i.endpoint, i.user_id, i.session_id, i.id
         FROM inbox i JOIN unnest($1::text[], $2::text[], $3::text[]) AS c(e, u, s)
           ON i.endpoint = c.e AND i.user_id = c.u AND i.session_id = c.s
         ORDER BY i.endpoint, i.user_id, i.session_id, i.msg_no",
        &[&e, &u, &s],
    )?;
    let heads: HashMap<SessionKey, i64> = heads.iter().map(|r| (key_at(r, 0), r.get(3))).collect();
    let mut out = Vec::with_capacity(claimed.len());
    for (key, fence) in claimed {
        match heads.get(&key) {
            Some(head) => out.push((key, fence, *head)),
            // The count was off (cannot happen through this module); set it right and let go.
            None => release(tx, owner, &key, fence)?,
        }
    }
    Ok(out)
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

/// The message, its session and the user's profile.
pub(super) fn load_turn(tx: &mut Tx<'_>, inbox_id: i64) -> Result<Option<TurnInput>> {
    let row = tx.query_opt(
        "SELECT id, endpoint, user_id, session_id, kind, payload, resume FROM inbox WHERE id = $1",
        &[&inbox_id],
    )?;
    let Some(r) = row else { return Ok(None) };
    let (id, key, kind): (i64, SessionKey, String) = (r.get(0), key_at(&r, 1), r.get(4));
    let kind = JobKind::parse(&kind).ok_or_else(|| {
        StoreError::new(ErrorKind::Data, format!("message {id} has the kind {kind:?}, unknown to this version"))
    })?;
    let row = InboxRow { id, key, kind, payload: r.get(5), resume: r.get(6) };
    let session = sessions::get(tx, &row.key)?;
    let profile =
        tx.query_opt("SELECT profile FROM profiles WHERE user_id = $1", &[&row.key.user_id])?.map(|r| r.get(0));
    Ok(Some(TurnInput { row, session, profile }))
}

/// Writes one turn (as the SQLite backend's `turns::write`): numbered outputs, session, profile,
/// transcript, trace, the inbox row deleted or kept with its resume record; then the session's
/// counts in `queues`, and its run lease released unless this is a checkpoint.
fn write_turn(tx: &mut Tx<'_>, t: &TurnRecord) -> Result<()> {
    let k = &t.key;
    let (seq, messages) = tx
        .query_opt(
            "SELECT seq, messages FROM sessions WHERE endpoint = $1 AND user_id = $2 AND session_id = $3",
            &[&k.endpoint, &k.user_id, &k.session_id],
        )?
        .map_or((0, 0), |r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
    let forgotten = messages < t.loaded_messages;
    let first_seq = seq + 1;
    let seq = outputs(tx, k, seq, &t.outputs)?;
    match &t.session {
        Some(_) if forgotten => {
            log::info!("{}: the session was forgotten while a message ran; its new state is dropped", k.endpoint);
            upsert_session(tx, k, "", seq, 0, t.now_ms, Keep::State)?;
        }
        Some(s) => upsert_session(tx, k, s.state.as_deref().unwrap_or(""), seq, s.messages, t.now_ms, Keep::Nothing)?,
        None if !t.outputs.is_empty() => upsert_session(tx, k, "{}", seq, 0, t.now_ms, Keep::AllButSeq)?,
        None => {}
    }
    if let Some(p) = &t.profile {
        tx.execute(
            "INSERT INTO profiles (user_id, profile, updated_ms) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET profile = excluded.profile, updated_ms = excluded.updated_ms",
            &[&k.user_id, p, &t.now_ms],
        )?;
    }
    if !(forgotten && t.session.is_some()) {
        transcript(tx, k, &t.transcript)?;
        if let Some(trace) = &t.trace {
            super::console::write_trace(tx, k, trace, first_seq, seq, t.now_ms)?;
        }
    }
    match &t.checkpoint {
        Some(resume) => tx.execute("UPDATE inbox SET resume = $2 WHERE id = $1", &[&t.inbox_id, resume])?,
        None => tx.execute("DELETE FROM inbox WHERE id = $1", &[&t.inbox_id])?,
    };
    let n = t.outputs.len() as i64;
    let due = t.outputs.first().map_or(0, |o| o.not_before_ms);
    let keep_lease = t.checkpoint.is_some();
    tx.execute(
        "UPDATE queues SET
             pending = (SELECT count(*) FROM inbox i
                        WHERE i.endpoint = $1 AND i.user_id = $2 AND i.session_id = $3),
             out_due = CASE WHEN outputs = 0 THEN $5 ELSE out_due END,
             outputs = outputs + $4,
             run_owner = CASE WHEN $6 THEN run_owner ELSE NULL END,
             run_until = CASE WHEN $6 THEN run_until ELSE 0 END,
             ready_ms = hookflow_now_ms()
         WHERE endpoint = $1 AND user_id = $2 AND session_id = $3",
        &[&k.endpoint, &k.user_id, &k.session_id, &n, &due, &keep_lease],
    )?;
    Ok(())
}

/// Numbers and inserts outputs after `seq`; returns the session's new last Seq and the first
/// new outbox id (0 when none).
pub(super) fn outputs(tx: &mut Tx<'_>, key: &SessionKey, mut seq: i64, outputs: &[NewOutput]) -> Result<i64> {
    let hash = i64::from(key.lane_hash());
    for o in outputs {
        seq += 1;
        tx.execute(
            "INSERT INTO outbox (hash, endpoint, user_id, session_id, seq, body, not_before_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&hash, &key.endpoint, &key.user_id, &key.session_id, &seq, &o.body, &o.not_before_ms],
        )?;
    }
    Ok(seq)
}

/// Which columns of an existing session row an upsert leaves alone (as in the SQLite backend).
#[derive(Clone, Copy)]
enum Keep {
    Nothing,
    State,
    AllButSeq,
}

fn upsert_session(
    tx: &mut Tx<'_>,
    key: &SessionKey,
    state: &str,
    seq: i64,
    messages: i64,
    now_ms: i64,
    keep: Keep,
) -> Result<()> {
    let sql = match keep {
        Keep::Nothing => {
            "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET state = excluded.state, seq = excluded.seq,
                 messages = excluded.messages, updated_ms = excluded.updated_ms"
        }
        Keep::State => {
            "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET seq = excluded.seq,
                 updated_ms = excluded.updated_ms"
        }
        Keep::AllButSeq => {
            "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET seq = excluded.seq"
        }
    };
    tx.execute(sql, &[&key.endpoint, &key.user_id, &key.session_id, &state, &seq, &messages, &now_ms])?;
    Ok(())
}

fn transcript(tx: &mut Tx<'_>, key: &SessionKey, lines: &[TranscriptLine]) -> Result<()> {
    for l in lines {
        tx.execute(
            "INSERT INTO transcripts (endpoint, user_id, session_id, source, text, data, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&key.endpoint, &key.user_id, &key.session_id, &l.source.as_str(), &l.text, &l.data, &l.at_ms],
        )?;
    }
    Ok(())
}

/// Renews the run leases (or, with `delivery`, the delivery leases) `held` of `owner`.
pub(super) fn renew(
    tx: &mut Tx<'_>,
    owner: &str,
    lease_ms: i64,
    held: &[(SessionKey, i64)],
    delivery: bool,
) -> Result<()> {
    if held.is_empty() {
        return Ok(());
    }
    // Rows are locked in key order, as every batch locks them, so a renewal never deadlocks
    // with a commit.
    let mut held = held.to_vec();
    held.sort();
    let (e, u, s) = key_arrays(held.iter().map(|(k, _)| k));
    let f: Vec<i64> = held.iter().map(|(_, f)| *f).collect();
    tx.query(
        "SELECT 1 FROM queues q JOIN unnest($1::text[], $2::text[], $3::text[]) AS h(e, u, s)
           ON q.endpoint = h.e AND q.user_id = h.u AND q.session_id = h.s
         ORDER BY q.endpoint, q.user_id, q.session_id FOR UPDATE OF q",
        &[&e, &u, &s],
    )?;
    let sql = if delivery {
        "UPDATE queues q SET dl_until = hookflow_now_ms() + $2
         FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[]) AS h(e, u, s, f)
         WHERE q.endpoint = h.e AND q.user_id = h.u AND q.session_id = h.s AND q.dl_owner = $1 AND q.dl_fence = h.f"
    } else {
        "UPDATE queues q SET run_until = hookflow_now_ms() + $2
         FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[]) AS h(e, u, s, f)
         WHERE q.endpoint = h.e AND q.user_id = h.u AND q.session_id = h.s AND q.run_owner = $1 AND q.run_fence = h.f"
    };
    tx.execute(sql, &[&owner, &lease_ms, &e, &u, &s, &f])?;
    Ok(())
}
