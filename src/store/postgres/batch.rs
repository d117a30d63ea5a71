//! One writer batch in one transaction: accepted messages and finished turns, written with a
//! handful of statements whatever the batch's size (each statement is a round trip, and the
//! writer's batches are the hot path). The http threads' groups of accepts alone are one
//! autocommit statement (`accept_only`, from `engine/direct.rs`).
//!
//! 1. **Lock** every session the batch touches, in key order, in one statement; it returns each
//!    row's current run lease, so the fence of every turn is checked from it.
//! 2. **Accept**: one statement numbers the batch's messages per session (`next_msg`, under the
//!    locks) and queues them.
//! 3. **Turns**, in rounds (a statement may change a row only once, and a session can have two
//!    turns in one batch: a checkpoint and what followed it): per round one statement each for
//!    the sessions' Seqs, the outputs, the sessions, profiles, transcripts, inbox rows and the
//!    `queues` counts.
//!
//! Rows of `queues` are locked in key order (PostgreSQL's `ORDER BY`, as every statement that
//! waits for such locks does), so two replicas' batches wait for each other instead of
//! deadlocking. Sessions new to the database are inserted by the accept in key order too, after
//! the lock, and a transaction waits for no lock after its inserts: no cycle can form.

use std::collections::HashMap;

use super::queue::{Lease, key_arrays};
use super::{Tx, key_at};
use crate::domain::{SessionKey, TurnInput, TurnRecord};
use crate::store::{Accept, Result};

/// What a batch did.
pub(super) struct Committed {
    /// The ids of the accepted messages, in the batch's order.
    pub ids: Vec<i64>,
    /// The sessions (with the fence) whose run lease the batch released.
    pub released: Vec<Lease>,
    /// Sessions that keep (again) their lease because more messages wait: the fence and the
    /// next message, loaded (see `chain`).
    pub chained: Vec<(SessionKey, i64, TurnInput)>,
    /// Sessions whose turn was not written: this replica no longer holds their lease.
    pub dropped: Vec<SessionKey>,
}

/// Writes a batch.
///
/// A turn is written only if this replica still holds the session's lease with the fence it
/// claimed (`runs`) and while the leases are trusted (`valid`); otherwise it is dropped and the
/// message runs again where the session is claimed next. With `chain_ms` (the lease), sessions
/// whose turn finished and that have more messages keep their lease (`chain`).
pub(super) fn commit_batch(
    tx: &mut Tx<'_>,
    owner: &str,
    accepts: &[Accept<'_>],
    turns: &[&TurnRecord],
    runs: &HashMap<SessionKey, i64>,
    valid: bool,
    chain_ms: Option<i64>,
) -> Result<Committed> {
    let mut keys: Vec<&SessionKey> = accepts.iter().map(|a| a.0).chain(turns.iter().map(|t| &t.key)).collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Ok(Committed { ids: Vec::new(), released: Vec::new(), chained: Vec::new(), dropped: Vec::new() });
    }
    let leases = lock(tx, &keys)?;
    let ids = accept(tx, accepts, None)?;
    let (mut released, mut dropped) = (Vec::new(), Vec::new());
    // A session's turns in batch order, one per round.
    let mut rounds: Vec<Vec<&TurnRecord>> = Vec::new();
    let mut per_key: HashMap<&SessionKey, usize> = HashMap::new();
    for t in turns {
        let fence = runs.get(&t.key).copied().filter(|_| valid);
        if let (None, Some(f)) = (&t.checkpoint, fence) {
            released.push((t.key.clone(), f));
        }
        let holds =
            fence.is_some_and(|f| leases.get(&t.key).is_some_and(|(o, lf)| o.as_deref() == Some(owner) && *lf == f));
        if !holds {
            log::warn!(
                "{}: this replica lost its claim on a session while a message ran; the message runs again where \
                 the session is claimed next",
                t.key.endpoint
            );
            dropped.push(t.key.clone());
            continue;
        }
        let round = per_key.entry(&t.key).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(t);
        *round += 1;
    }
    for round in &rounds {
        write_turns(tx, round)?;
    }
    let chained = match chain_ms {
        Some(lease_ms) if valid => {
            let done: Vec<&SessionKey> = per_key.into_keys().collect();
            chain(tx, owner, lease_ms, &done)?
        }
        _ => Vec::new(),
    };
    // Signed with the replica's name: its own listener ignores it (the writer wakes this
    // replica's claimer and lanes itself).
    tx.execute("SELECT pg_notify($1, $2)", &[&super::CHANNEL, &owner])?;
    Ok(Committed { ids, released, chained, dropped })
}

/// Of the sessions `keys` whose turns this batch wrote, those whose run lease was released and
/// that have messages waiting are taken again by this replica, with the same fence, in the same
/// transaction (their rows are locked since `lock`): their next message runs here at once,
/// without the claim (a transaction of its own) that would otherwise take the session again a
/// moment later. Returns them with the fence and the next message. A session whose last turn
/// stopped at a checkpoint never released its lease and is not among them.
fn chain(
    tx: &mut Tx<'_>,
    owner: &str,
    lease_ms: i64,
    keys: &[&SessionKey],
) -> Result<Vec<(SessionKey, i64, TurnInput)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (e, u, s) = key_arrays(keys.iter().copied());
    let rows = tx.query(
        "UPDATE queues q SET run_owner = $1, run_until = hookflow_now_ms() + $2
         FROM unnest($3::text[], $4::text[], $5::text[]) AS k(e, u, s)
         WHERE q.endpoint = k.e AND q.user_id = k.u AND q.session_id = k.s AND q.pending > 0 AND q.run_owner IS NULL
         RETURNING q.endpoint, q.user_id, q.session_id, q.run_fence",
        &[&owner, &lease_ms, &e, &u, &s],
    )?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let kept: Vec<(SessionKey, i64)> = rows.iter().map(|r| (key_at(r, 0), r.get(3))).collect();
    let mut heads = super::queue::heads(tx, kept.iter().map(|(k, _)| k))?;
    // `pending` counts the inbox under the row lock, so every kept session has a head.
    Ok(kept.into_iter().filter_map(|(k, fence)| heads.remove(&k).map(|h| (k, fence, h))).collect())
}

/// Locks the `queues` rows of `keys` (those that exist) in key order; their run lease holders
/// and fences, as of now (a row that was waited for is returned in its newest version).
fn lock(tx: &mut Tx<'_>, keys: &[&SessionKey]) -> Result<HashMap<SessionKey, (Option<String>, i64)>> {
    let (e, u, s) = key_arrays(keys.iter().copied());
    let rows = tx.query(
        "SELECT q.endpoint, q.user_id, q.session_id, q.run_owner, q.run_fence FROM queues q
         JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(e, u, s)
           ON q.endpoint = k.e AND q.user_id = k.u AND q.session_id = k.s
         ORDER BY q.endpoint, q.user_id, q.session_id FOR UPDATE OF q",
        &[&e, &u, &s],
    )?;
    Ok(rows.iter().map(|r| (key_at(r, 0), (r.get(3), r.get(4)))).collect())
}

/// Accepted messages without finished turns (replicas accept on the calling thread, one
/// message at a time): numbered and queued by one statement, which also wakes the other
/// replicas. Autocommit: one round trip, and the statement's row locks are all it needs.
pub(super) fn accept_only(tx: &mut Tx<'_>, owner: &str, accepts: &[Accept<'_>]) -> Result<Vec<i64>> {
    let [(key, kind, payload)] = accepts else { return accept(tx, accepts, Some(owner)) };
    // One message (the usual case): a plainer statement than the batch's, cheaper to run.
    let row = tx.query_opt(
        "WITH q AS (
             INSERT INTO queues (endpoint, user_id, session_id, next_msg, pending, ready_ms)
             VALUES ($1, $2, $3, 1, 1, hookflow_now_ms())
             ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET
                 next_msg = queues.next_msg + 1, pending = queues.pending + 1,
                 ready_ms = CASE WHEN queues.pending = 0 THEN excluded.ready_ms ELSE queues.ready_ms END
             RETURNING next_msg)
         INSERT INTO inbox (endpoint, user_id, session_id, msg_no, kind, payload)
         SELECT $1, $2, $3, q.next_msg, $4, $5 FROM q RETURNING id, pg_notify($6, $7) IS NULL",
        &[&key.endpoint, &key.user_id, &key.session_id, &kind.as_str(), payload, &super::CHANNEL, &owner],
    )?;
    Ok(vec![row.expect("INSERT … RETURNING gives a row").get(0)])
}

/// The statement of `accept`: `$returning` is what the final INSERT returns.
macro_rules! accept_sql {
    ($returning:literal) => {
        concat!(
            "WITH m AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                     WITH ORDINALITY AS m(e, u, s, kind, payload, ord)),
             c AS (SELECT e, u, s, count(*) AS n FROM m GROUP BY e, u, s),
             q AS (
                 INSERT INTO queues (endpoint, user_id, session_id, next_msg, pending, ready_ms)
                 SELECT e, u, s, n, n, hookflow_now_ms() FROM c ORDER BY e, u, s
                 ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET
                     next_msg = queues.next_msg + excluded.next_msg, pending = queues.pending + excluded.pending,
                     ready_ms = CASE WHEN queues.pending = 0 THEN excluded.ready_ms ELSE queues.ready_ms END
                 RETURNING endpoint, user_id, session_id, next_msg)
             INSERT INTO inbox (endpoint, user_id, session_id, msg_no, kind, payload)
             SELECT m.e, m.u, m.s, q.next_msg - c.n + row_number() OVER (PARTITION BY m.e, m.u, m.s ORDER BY m.ord),
                    m.kind, m.payload
             FROM m JOIN c ON c.e = m.e AND c.u = m.u AND c.s = m.s
                    JOIN q ON q.endpoint = m.e AND q.user_id = m.u AND q.session_id = m.s
             ORDER BY m.ord
             RETURNING id, endpoint, user_id, session_id, msg_no",
            $returning
        )
    };
}

/// Numbers the messages per session (`next_msg` grows by the session's count in the batch) and
/// queues them; their ids in the batch's order. With `notify` (this replica's name), the same
/// statement wakes the other replicas (identical notifications of one transaction are one).
fn accept(tx: &mut Tx<'_>, accepts: &[Accept<'_>], notify: Option<&str>) -> Result<Vec<i64>> {
    if accepts.is_empty() {
        return Ok(Vec::new());
    }
    let (e, u, s) = key_arrays(accepts.iter().map(|a| a.0));
    let kinds: Vec<&str> = accepts.iter().map(|a| a.1.as_str()).collect();
    let payloads: Vec<&str> = accepts.iter().map(|a| a.2).collect();
    let rows = match notify {
        None => tx.query(accept_sql!(""), &[&e, &u, &s, &kinds, &payloads])?,
        Some(owner) => tx.query(
            accept_sql!(", pg_notify($6, $7) IS NULL"),
            &[&e, &u, &s, &kinds, &payloads, &super::CHANNEL, &owner],
        )?,
    };
    // Per session, its messages' ids by number; they are handed out in the batch's order.
    let mut numbered: HashMap<SessionKey, Vec<(i64, i64)>> = HashMap::new();
    for r in &rows {
        numbered.entry(key_at(r, 1)).or_default().push((r.get(4), r.get(0)));
    }
    for v in numbered.values_mut() {
        v.sort_unstable_by(|a, b| b.cmp(a));
    }
    accepts
        .iter()
        .map(|(key, _, _)| {
            numbered.get_mut(*key).and_then(Vec::pop).map(|(_, id)| id).ok_or_else(|| {
                crate::store::StoreError::new(crate::store::ErrorKind::Other, "a queued message got no id")
            })
        })
        .collect()
}

/// Columns of a set-based statement, one vector per column.
#[derive(Default)]
struct Sessions<'a> {
    e: Vec<&'a str>,
    u: Vec<&'a str>,
    s: Vec<&'a str>,
    state: Vec<&'a str>,
    seq: Vec<i64>,
    messages: Vec<i64>,
    at: Vec<i64>,
}

impl<'a> Sessions<'a> {
    fn push(&mut self, k: &'a SessionKey, state: &'a str, seq: i64, messages: i64, at: i64) {
        self.e.push(&k.endpoint);
        self.u.push(&k.user_id);
        self.s.push(&k.session_id);
        self.state.push(state);
        self.seq.push(seq);
        self.messages.push(messages);
        self.at.push(at);
    }

    /// Upserts the rows with `sql` (`upsert_sessions!`).
    fn write(&self, tx: &mut Tx<'_>, sql: &'static str) -> Result<()> {
        if !self.e.is_empty() {
            tx.execute(sql, &[&self.e, &self.u, &self.s, &self.state, &self.seq, &self.messages, &self.at])?;
        }
        Ok(())
    }
}

/// The upsert of `Sessions`; `$set` is what an existing row takes from the new one.
macro_rules! upsert_sessions {
    ($set:literal) => {
        concat!(
            "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])
             ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET ",
            $set
        )
    };
}

/// The turns of one round (distinct sessions), as the SQLite backend's `turns::write` writes
/// one: numbered outputs, session, profile, transcript, trace, the inbox row deleted or kept
/// with its resume record; then the sessions' counts in `queues`, and their run leases released
/// unless a turn is a checkpoint.
fn write_turns(tx: &mut Tx<'_>, round: &[&TurnRecord]) -> Result<()> {
    let (e, u, s) = key_arrays(round.iter().map(|t| &t.key));
    // A new statement, after the locks: the Seqs as committed (see `queue::claim`).
    let found = tx.query(
        "SELECT x.endpoint, x.user_id, x.session_id, x.seq, x.messages FROM sessions x
         JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(e, u, s)
           ON x.endpoint = k.e AND x.user_id = k.u AND x.session_id = k.s",
        &[&e, &u, &s],
    )?;
    let stored: HashMap<SessionKey, (i64, i64)> = found.iter().map(|r| (key_at(r, 0), (r.get(3), r.get(4)))).collect();
    let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut full, mut keep_state, mut seq_only) = (Sessions::default(), Sessions::default(), Sessions::default());
    let mut profiles: HashMap<&str, (&str, i64)> = HashMap::new();
    let mut lines = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut done, mut resumed, mut resumes) = (Vec::new(), Vec::new(), Vec::new());
    let mut counts = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in round {
        let k = &t.key;
        let (mut seq, messages) = stored.get(k).copied().unwrap_or((0, 0));
        let forgotten = messages < t.loaded_messages;
        let first_seq = seq + 1;
        let hash = i64::from(k.lane_hash());
        for o in &t.outputs {
            seq += 1;
            out.0.push(hash);
            out.1.push(k.endpoint.as_str());
            out.2.push(k.user_id.as_str());
            out.3.push(k.session_id.as_str());
            out.4.push(seq);
            out.5.push(o.body.as_str());
            out.6.push(o.not_before_ms);
        }
        match &t.session {
            Some(_) if forgotten => {
                log::info!("{}: the session was forgotten while a message ran; its new state is dropped", k.endpoint);
                keep_state.push(k, "", seq, 0, t.now_ms);
            }
            Some(x) => full.push(k, x.state.as_deref().unwrap_or(""), seq, x.messages, t.now_ms),
            None if !t.outputs.is_empty() => seq_only.push(k, "{}", seq, 0, t.now_ms),
            None => {}
        }
        if let Some(p) = &t.profile {
            profiles.insert(&k.user_id, (p, t.now_ms));
        }
        if !(forgotten && t.session.is_some()) {
            for l in &t.transcript {
                lines.0.push(k.endpoint.as_str());
                lines.1.push(k.user_id.as_str());
                lines.2.push(k.session_id.as_str());
                lines.3.push(l.source.as_str());
                lines.4.push(super::text(&l.text));
                lines.5.push(l.data.as_str());
                lines.6.push(l.at_ms);
            }
            if let Some(trace) = &t.trace {
                super::console::write_trace(tx, k, trace, first_seq, seq, t.now_ms)?;
            }
        }
        match &t.checkpoint {
            Some(resume) => {
                resumed.push(t.inbox_id);
                resumes.push(resume.as_str());
            }
            None => done.push(t.inbox_id),
        }
        counts.0.push(k.endpoint.as_str());
        counts.1.push(k.user_id.as_str());
        counts.2.push(k.session_id.as_str());
        counts.3.push(t.outputs.len() as i64);
        counts.4.push(t.outputs.first().map_or(0, |o| o.not_before_ms));
        counts.5.push(t.checkpoint.is_some());
    }
    if !out.0.is_empty() {
        tx.execute(
            "INSERT INTO outbox (hash, endpoint, user_id, session_id, seq, body, not_before_ms)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[])",
            &[&out.0, &out.1, &out.2, &out.3, &out.4, &out.5, &out.6],
        )?;
    }
    // Which columns of an existing row each kind of turn leaves alone, as in the SQLite backend.
    full.write(
        tx,
        upsert_sessions!(
            "state = excluded.state, seq = excluded.seq, messages = excluded.messages, updated_ms = excluded.updated_ms"
        ),
    )?;
    keep_state.write(tx, upsert_sessions!("seq = excluded.seq, updated_ms = excluded.updated_ms"))?;
    seq_only.write(tx, upsert_sessions!("seq = excluded.seq"))?;
    if !profiles.is_empty() {
        let (users, rest): (Vec<&str>, Vec<(&str, i64)>) = profiles.into_iter().unzip();
        let (bodies, at): (Vec<&str>, Vec<i64>) = rest.into_iter().unzip();
        tx.execute(
            "INSERT INTO profiles (user_id, profile, updated_ms) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (user_id) DO UPDATE SET profile = excluded.profile, updated_ms = excluded.updated_ms",
            &[&users, &bodies, &at],
        )?;
    }
    if !lines.0.is_empty() {
        tx.execute(
            "INSERT INTO transcripts (endpoint, user_id, session_id, source, text, data, at_ms)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])",
            &[&lines.0, &lines.1, &lines.2, &lines.3, &lines.4, &lines.5, &lines.6],
        )?;
    }
    if !done.is_empty() {
        tx.execute("DELETE FROM inbox WHERE id = ANY($1)", &[&done])?;
    }
    if !resumed.is_empty() {
        tx.execute(
            "UPDATE inbox i SET resume = r.resume FROM unnest($1::bigint[], $2::text[]) AS r(id, resume) WHERE i.id = r.id",
            &[&resumed, &resumes],
        )?;
    }
    tx.execute(
        "UPDATE queues q SET
             pending = (SELECT count(*) FROM inbox i
                        WHERE i.endpoint = q.endpoint AND i.user_id = q.user_id AND i.session_id = q.session_id),
             out_due = CASE WHEN q.outputs = 0 THEN h.due ELSE q.out_due END,
             outputs = q.outputs + h.n,
             run_owner = CASE WHEN h.keep THEN q.run_owner ELSE NULL END,
             run_until = CASE WHEN h.keep THEN q.run_until ELSE 0 END,
             ready_ms = hookflow_now_ms()
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bool[]) AS h(e, u, s, n, due, keep)
         WHERE q.endpoint = h.e AND q.user_id = h.u AND q.session_id = h.s",
        &[&counts.0, &counts.1, &counts.2, &counts.3, &counts.4, &counts.5],
    )?;
    Ok(())
}
