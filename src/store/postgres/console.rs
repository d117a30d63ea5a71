//! The console's delivery log and traces on PostgreSQL: the same tables, bounds and answers as
//! `sqlite/history.rs` and `sqlite/traces.rs` (read those for what the log is), written for
//! several replicas sharing the tables.
//!
//! What differs from SQLite:
//! - SQLite counts delivered outputs in memory and trims the endpoints that grew. Here several
//!   replicas write the log, so no one process knows what grew: each process counts the outputs
//!   it put into the log (`LOGGED`, a static counter) and, every `BOUND_EVERY` of them, trims
//!   every endpoint that has a log. One process's count is enough to keep the log bounded
//!   whatever the others do: an endpoint's log holds at most `HISTORY_PER_ENDPOINT` plus
//!   `BOUND_EVERY` for each replica writing it. A trim is one cut-off lookup and one `DELETE`
//!   per endpoint, on the `(endpoint, id)` index; the log itself is bounded, so finding its
//!   endpoints is cheap too.
//! - A dead output's log row finds its dead letter by session and Seq (newest first, on the
//!   primary key): the dead letter's id is not handed back by the move, and a session-local
//!   sequence value could belong to another insert when the move found nothing to move (another
//!   replica settled the output first).
//! - `changes` hashes the database's current snapshot (see there).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Tx, key_at};
use crate::domain::{
    AttemptRecord, EndpointCounts, OutputEntry, OutputFilter, OutputState, SessionKey, SessionSummary, Trace, TraceRow,
};
use crate::store::Result;
use crate::store::sqlite::{
    ANSWER_BYTES, ATTEMPTS_PER_OUTPUT, HISTORY_MS, HISTORY_PER_ENDPOINT, TRACES_PER_SESSION, head,
};

/// Outputs this process puts into the log between two trims of every endpoint's log.
pub(super) const BOUND_EVERY: usize = 256;
/// Outputs this process put into the log (delivered or dead), all stores of the process together.
static LOGGED: AtomicUsize = AtomicUsize::new(0);

/// A status as stored (`status` columns are BIGINT).
fn status_col(s: Option<u16>) -> Option<i64> {
    s.map(i64::from)
}

/// A status as read: anything that is not an HTTP status (never written by this module) reads as none.
fn status_of(s: Option<i64>) -> Option<u16> {
    s.and_then(|s| u16::try_from(s).ok())
}

/// Attempts noted (`Store::record_attempt`) that did not deliver an output: into `attempts`.
pub(super) fn write_attempts(tx: &mut Tx<'_>, notes: &[AttemptRecord]) -> Result<()> {
    for a in notes {
        let answer = super::text(head(&a.answer, ANSWER_BYTES));
        // (An update on conflict: after a crash an attempt can be made again under the same number.)
        tx.execute(
            "INSERT INTO attempts (output_id, attempt, at_ms, latency_ms, status, answer, delivered)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (output_id, attempt) DO UPDATE SET at_ms = excluded.at_ms,
                 latency_ms = excluded.latency_ms, status = excluded.status, answer = excluded.answer,
                 delivered = excluded.delivered",
            &[&a.output_id, &a.attempt, &a.at_ms, &a.latency_ms, &status_col(a.status), &answer, &a.delivered],
        )?;
        if a.attempt > ATTEMPTS_PER_OUTPUT {
            let below = a.attempt - ATTEMPTS_PER_OUTPUT;
            tx.execute("DELETE FROM attempts WHERE output_id = $1 AND attempt <= $2", &[&a.output_id, &below])?;
        }
    }
    Ok(())
}

/// Outputs `ids` were delivered and are about to leave the outbox (called before the delete):
/// copied into `output_log` with the noted attempt that delivered each; the other `notes` into
/// `attempts`; the log trimmed to its bounds.
pub(super) fn delivered(tx: &mut Tx<'_>, ids: &[i64], notes: &[AttemptRecord], now_ms: i64) -> Result<()> {
    let mut finals: HashMap<i64, &AttemptRecord> = HashMap::new();
    let mut others = Vec::new();
    for a in notes {
        if a.delivered && ids.contains(&a.output_id) {
            finals.insert(a.output_id, a);
        } else {
            others.push(a.clone());
        }
    }
    write_attempts(tx, &others)?;
    // One statement for the batch (a lane settles up to 64 outputs at once, and this is on the
    // delivery path): the final attempts go as columns of arrays, joined by output id.
    let mut f = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, a) in &finals {
        f.0.push(*id);
        f.1.push(a.at_ms);
        f.2.push(a.latency_ms);
        f.3.push(status_col(a.status));
        f.4.push(super::text(head(&a.answer, ANSWER_BYTES)));
    }
    // Nothing is copied of a row already gone: another replica settled it and logged it.
    let logged = tx.execute(
        "INSERT INTO output_log
             (id, endpoint, user_id, session_id, seq, body, state, attempts, last_error, done_ms,
              final_at_ms, final_latency_ms, final_status, final_answer)
         SELECT o.id, o.endpoint, o.user_id, o.session_id, o.seq, o.body, 'delivered', o.attempts + 1,
                o.last_error, $2::bigint, f.at_ms, f.latency_ms, f.status, f.answer
         FROM outbox o
         LEFT JOIN unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[])
             AS f (id, at_ms, latency_ms, status, answer) ON f.id = o.id
         WHERE o.id = ANY($1)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
             last_error = excluded.last_error, done_ms = excluded.done_ms, dead_id = NULL, replayed_as = NULL,
             final_at_ms = excluded.final_at_ms, final_latency_ms = excluded.final_latency_ms,
             final_status = excluded.final_status, final_answer = excluded.final_answer",
        &[&ids, &now_ms, &f.0, &f.1, &f.2, &f.3, &f.4],
    )? as usize;
    count_and_trim(tx, logged)
}

/// Counts outputs put into the log and trims every endpoint's log when `BOUND_EVERY` more went
/// in (see the module doc).
fn count_and_trim(tx: &mut Tx<'_>, logged: usize) -> Result<()> {
    if logged == 0 {
        return Ok(());
    }
    let before = LOGGED.fetch_add(logged, Ordering::Relaxed);
    if before / BOUND_EVERY == (before + logged) / BOUND_EVERY {
        return Ok(());
    }
    bound(tx)
}

/// Keeps the last `HISTORY_PER_ENDPOINT` finished outputs of each endpoint.
fn bound(tx: &mut Tx<'_>) -> Result<()> {
    let endpoints: Vec<String> =
        tx.query("SELECT DISTINCT endpoint FROM output_log", &[])?.iter().map(|r| r.get(0)).collect();
    for ep in &endpoints {
        let cutoff = tx.query_opt(
            "SELECT id FROM output_log WHERE endpoint = $1 ORDER BY id DESC LIMIT 1 OFFSET $2",
            &[ep, &HISTORY_PER_ENDPOINT],
        )?;
        if let Some(r) = cutoff {
            let below: i64 = r.get(0);
            let deleted = tx.query_opt(
                "WITH d AS (DELETE FROM output_log WHERE endpoint = $1 AND id <= $2 RETURNING id)
                 SELECT array_agg(id) FROM d",
                &[ep, &below],
            )?;
            drop_attempts(tx, deleted)?;
        }
    }
    Ok(())
}

/// After finished outputs were deleted (`deleted`: their ids), deletes their attempts, and in
/// the range of those ids any attempts of outputs neither in the log nor in the outbox (notes
/// written for an output that was forgotten meanwhile). The deleted ones' attempts go even if
/// the outputs are still in the outbox: a trim in `delivered` runs before their delete.
fn drop_attempts(tx: &mut Tx<'_>, deleted: Option<postgres::Row>) -> Result<()> {
    let Some(ids) = deleted.and_then(|r| r.get::<_, Option<Vec<i64>>>(0)) else { return Ok(()) };
    let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) else { return Ok(()) };
    tx.execute(
        "DELETE FROM attempts a WHERE a.output_id BETWEEN $1 AND $2
           AND (a.output_id = ANY($3)
                OR (NOT EXISTS (SELECT 1 FROM output_log l WHERE l.id = a.output_id)
                    AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = a.output_id)))",
        &[lo, hi, &ids],
    )?;
    Ok(())
}

/// Outputs `ids` leave the outbox in `state` (called before they are moved).
pub(super) fn leaving(
    tx: &mut Tx<'_>,
    ids: &[i64],
    state: OutputState,
    error: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    for id in ids {
        tx.execute(
            "INSERT INTO output_log
                 (id, endpoint, user_id, session_id, seq, body, state, attempts, last_error, done_ms)
             SELECT id, endpoint, user_id, session_id, seq, body, $2::text, attempts, coalesce($3::text, last_error),
                    $4::bigint
             FROM outbox WHERE id = $1
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
                 last_error = excluded.last_error, done_ms = excluded.done_ms, dead_id = NULL, replayed_as = NULL,
                 final_at_ms = NULL, final_latency_ms = NULL, final_status = NULL, final_answer = NULL",
            &[id, &state.as_str(), &error, &now_ms],
        )?;
    }
    Ok(())
}

/// Output `id` became a dead letter (called after the move): its log row links the dead letter.
pub(super) fn died(tx: &mut Tx<'_>, id: i64, attempts: i64) -> Result<()> {
    let n = tx.execute(
        "UPDATE output_log l SET attempts = $2, dead_id = (
             SELECT d.id FROM deadletters d
             WHERE d.endpoint = l.endpoint AND d.user_id = l.user_id AND d.session_id = l.session_id
               AND d.seq = l.seq
             ORDER BY d.id DESC LIMIT 1)
         WHERE l.id = $1 AND l.state = 'dead' AND l.dead_id IS NULL",
        &[&id, &attempts],
    )?;
    count_and_trim(tx, n as usize)
}

/// Before `outbox::dead_unconfigured`: copies the outputs of endpoints not in `endpoints` as dead.
pub(super) fn leaving_unconfigured(tx: &mut Tx<'_>, endpoints: &[String], now_ms: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO output_log
             (id, endpoint, user_id, session_id, seq, body, state, attempts, last_error, done_ms)
         SELECT id, endpoint, user_id, session_id, seq, body, 'dead', attempts, 'endpoint no longer configured',
                $2::bigint
         FROM outbox WHERE endpoint <> ALL($1)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
             last_error = excluded.last_error, done_ms = excluded.done_ms, dead_id = NULL, replayed_as = NULL,
             final_at_ms = NULL, final_latency_ms = NULL, final_status = NULL, final_answer = NULL",
        &[&endpoints, &now_ms],
    )?;
    Ok(())
}

/// After `outbox::dead_unconfigured`: outputs of endpoints no longer configured, moved in bulk,
/// find their dead letters by session and Seq.
pub(super) fn link_dead(tx: &mut Tx<'_>) -> Result<()> {
    tx.execute(
        "UPDATE output_log l SET dead_id = (
             SELECT d.id FROM deadletters d
             WHERE d.endpoint = l.endpoint AND d.user_id = l.user_id AND d.session_id = l.session_id
               AND d.seq = l.seq
             ORDER BY d.id DESC LIMIT 1)
         WHERE l.state = 'dead' AND l.dead_id IS NULL",
        &[],
    )?;
    Ok(())
}

/// A dead letter went back to the outbox as output `new_id`.
pub(super) fn replayed(tx: &mut Tx<'_>, dead_id: i64, new_id: i64) -> Result<()> {
    tx.execute(
        "UPDATE output_log SET state = 'replayed', replayed_as = $2, dead_id = NULL WHERE dead_id = $1",
        &[&dead_id, &new_id],
    )?;
    Ok(())
}

/// Drops finished outputs older than `HISTORY_MS` before `now_ms`.
pub(super) fn expire(tx: &mut Tx<'_>, now_ms: i64) -> Result<()> {
    let before = now_ms - HISTORY_MS;
    let deleted = tx.query_opt(
        "WITH d AS (DELETE FROM output_log WHERE done_ms < $1 RETURNING id) SELECT array_agg(id) FROM d",
        &[&before],
    )?;
    drop_attempts(tx, deleted)
}

/// Forgets a session's part of the log: its finished outputs and the attempts of all its
/// outputs (those still waiting keep being delivered and noted).
pub(super) fn forget(tx: &mut Tx<'_>, key: &SessionKey) -> Result<()> {
    let p: [&(dyn postgres::types::ToSql + Sync); 3] = [&key.endpoint, &key.user_id, &key.session_id];
    tx.execute(
        "DELETE FROM attempts WHERE output_id IN (
             SELECT id FROM outbox WHERE endpoint = $1 AND user_id = $2 AND session_id = $3)",
        &p,
    )?;
    let deleted = tx.query_opt(
        "WITH d AS (DELETE FROM output_log WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 RETURNING id)
         SELECT array_agg(id) FROM d",
        &p,
    )?;
    drop_attempts(tx, deleted)
}

/// Waiting outputs: queued until the first attempt failed, then retrying; the time is when due.
macro_rules! outbox_select {
    () => {
        "SELECT id, endpoint, user_id, session_id, seq, body,
            CASE WHEN attempts = 0 THEN 'queued' ELSE 'retrying' END AS state, attempts,
            not_before_ms AS at_ms, last_error, NULL::bigint AS dead_id, NULL::bigint AS replayed_as,
            NULL::bigint AS final_at_ms, NULL::bigint AS final_latency_ms, NULL::bigint AS final_status,
            NULL::text AS final_answer FROM outbox"
    };
}

/// Finished outputs; the time is when they were delivered or died.
macro_rules! log_select {
    () => {
        "SELECT id, endpoint, user_id, session_id, seq, body, state, attempts,
            done_ms AS at_ms, last_error, dead_id, replayed_as,
            final_at_ms, final_latency_ms, final_status, final_answer FROM output_log"
    };
}

/// The filter of the delivery log over one of the selects above (a static statement, so it is
/// prepared once per connection).
macro_rules! filtered {
    ($select:expr) => {
        concat!(
            "SELECT * FROM (",
            $select,
            ") AS o WHERE id < $1
               AND ($2::text IS NULL OR endpoint = $2) AND ($3::text IS NULL OR user_id = $3)
               AND ($4::text IS NULL OR session_id = $4)
               AND ($5::bigint IS NULL OR at_ms >= $5) AND ($6::bigint IS NULL OR at_ms <= $6)
               AND ($7::text IS NULL OR state = $7
                    OR ($7 = 'delivered' AND state <> 'replayed' AND state <> 'dead'))
             ORDER BY id DESC LIMIT $8"
        )
    };
}

/// The delivery log: the newest matching outputs of the outbox and of the log, merged by id.
pub(super) fn outputs(tx: &mut Tx<'_>, f: &OutputFilter) -> Result<Vec<OutputEntry>> {
    let (waiting, finished) = crate::store::log::sources(f);
    let waiting = if waiting { query(tx, filtered!(outbox_select!()), f)? } else { Vec::new() };
    let finished = if finished { query(tx, filtered!(log_select!()), f)? } else { Vec::new() };
    crate::store::log::assemble(waiting, finished, f, |list| attach_tries(tx, list))
}

fn query(tx: &mut Tx<'_>, sql: &'static str, f: &OutputFilter) -> Result<Vec<OutputEntry>> {
    let state = f.state.map(OutputState::as_str);
    let limit = f.limit.min(i64::MAX as usize) as i64;
    let rows = tx.query(
        sql,
        &[
            &f.before_id.unwrap_or(i64::MAX),
            &f.endpoint,
            &f.user_id,
            &f.session_id,
            &f.since_ms,
            &f.until_ms,
            &state,
            &limit,
        ],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let state: String = r.get(6);
            let (id, key, seq, attempts): (i64, SessionKey, i64, i64) = (r.get(0), key_at(r, 1), r.get(4), r.get(7));
            // The attempt that delivered it, kept in the row.
            let last = r.get::<_, Option<i64>>(12).map(|at_ms| AttemptRecord {
                output_id: id,
                key: key.clone(),
                seq,
                attempt: attempts,
                at_ms,
                latency_ms: r.get::<_, Option<i64>>(13).unwrap_or(0),
                status: status_of(r.get(14)),
                answer: r.get::<_, Option<String>>(15).unwrap_or_default(),
                delivered: true,
            });
            OutputEntry {
                id,
                key,
                seq,
                body: r.get(5),
                // Written by this module only; an unknown name reads as the nearest safe one.
                state: OutputState::parse(&state).unwrap_or(OutputState::Dead),
                attempts,
                at_ms: r.get(8),
                last_error: r.get(9),
                dead_letter: r.get(10),
                replayed_as: r.get(11),
                tries: last.into_iter().collect(),
            }
        })
        .collect())
}

fn attach_tries(tx: &mut Tx<'_>, list: &mut [OutputEntry]) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = list.iter().map(|e| e.id).collect();
    let rows = tx.query(
        "SELECT output_id, attempt, at_ms, latency_ms, status, answer, delivered FROM attempts
         WHERE output_id = ANY($1) ORDER BY output_id, attempt",
        &[&ids],
    )?;
    for r in &rows {
        let (id, attempt): (i64, i64) = (r.get(0), r.get(1));
        if let Some(e) = list.iter_mut().find(|e| e.id == id) {
            let t = AttemptRecord {
                output_id: id,
                key: e.key.clone(),
                seq: e.seq,
                attempt,
                at_ms: r.get(2),
                latency_ms: r.get(3),
                status: status_of(r.get(4)),
                answer: r.get(5),
                delivered: r.get(6),
            };
            // Rows come in attempt order; the one kept in the log row, if any, is the last.
            match e.tries.last() {
                Some(last) if last.attempt == attempt => {}
                Some(last) if last.attempt > attempt => {
                    let at = e.tries.len() - 1;
                    e.tries.insert(at, t);
                }
                _ => e.tries.push(t),
            }
        }
    }
    Ok(())
}

pub(super) fn endpoint_counts(tx: &mut Tx<'_>) -> Result<Vec<EndpointCounts>> {
    // (`sum` of bigints is a numeric in PostgreSQL: cast back.)
    let rows = tx.query(
        "SELECT endpoint, sum(q)::bigint, sum(d)::bigint FROM (
             SELECT endpoint, count(*) AS q, 0::bigint AS d FROM outbox GROUP BY endpoint
             UNION ALL SELECT endpoint, 0::bigint, count(*) FROM deadletters GROUP BY endpoint) AS c
         GROUP BY endpoint ORDER BY endpoint",
        &[],
    )?;
    Ok(rows.iter().map(|r| EndpointCounts { endpoint: r.get(0), queued: r.get(1), dead_letters: r.get(2) }).collect())
}

/// A substring search over the session table (no index helps a substring; the admin search is
/// rare and bounded by `limit`).
pub(super) fn find_sessions(
    tx: &mut Tx<'_>,
    endpoint: Option<&str>,
    q: &str,
    limit: usize,
) -> Result<Vec<SessionSummary>> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = tx.query(
        "SELECT endpoint, user_id, session_id, seq, messages, updated_ms, state <> '' FROM sessions
         WHERE ($1::text IS NULL OR endpoint = $1)
           AND ($2 = '' OR strpos(lower(user_id), $2) > 0 OR strpos(lower(session_id), $2) > 0)
         ORDER BY updated_ms DESC LIMIT $3",
        &[&endpoint, &q.to_lowercase(), &limit],
    )?;
    Ok(rows
        .iter()
        .map(|r| SessionSummary {
            key: key_at(r, 0),
            seq: r.get(3),
            messages: r.get(4),
            updated_ms: r.get(5),
            has_state: r.get(6),
        })
        .collect())
}

/// Ids of the dead letters matching the filter's endpoint, session and time: the oldest `limit` of
/// them, in session-key order (as they are replayed: each replay locks its session's `queues`
/// row, and every statement takes those in key order, so that none deadlocks another).
pub(super) fn dead_letter_ids(tx: &mut Tx<'_>, f: &OutputFilter) -> Result<Vec<i64>> {
    let limit = f.limit.min(i64::MAX as usize) as i64;
    let rows = tx.query(
        "SELECT id FROM (
             SELECT id, endpoint, user_id, session_id FROM deadletters
             WHERE ($1::text IS NULL OR endpoint = $1) AND ($2::text IS NULL OR user_id = $2)
               AND ($3::text IS NULL OR session_id = $3)
               AND ($5::bigint IS NULL OR died_ms >= $5) AND ($6::bigint IS NULL OR died_ms <= $6)
             ORDER BY id LIMIT $4) d
         ORDER BY endpoint, user_id, session_id, id",
        &[&f.endpoint, &f.user_id, &f.session_id, &limit, &f.since_ms, &f.until_ms],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The session's kept traces, oldest first.
pub(super) fn traces(tx: &mut Tx<'_>, key: &SessionKey) -> Result<Vec<TraceRow>> {
    let rows = tx.query(
        "SELECT at_ms, trace_id, first_seq, last_seq, body FROM traces
         WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 ORDER BY id",
        &[&key.endpoint, &key.user_id, &key.session_id],
    )?;
    Ok(rows
        .iter()
        .map(|r| TraceRow {
            at_ms: r.get(0),
            trace_id: r.get(1),
            first_seq: r.get(2),
            last_seq: r.get(3),
            body: r.get(4),
        })
        .collect())
}

/// Keeps a turn's trace, inside the turn's transaction (under the session's lease, so one turn
/// of a session at a time); its outputs are `first_seq..=last_seq`. The last
/// `TRACES_PER_SESSION` are kept.
pub(super) fn write_trace(
    tx: &mut Tx<'_>,
    key: &SessionKey,
    t: &Trace,
    first_seq: i64,
    last_seq: i64,
    now_ms: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO traces (endpoint, user_id, session_id, at_ms, trace_id, first_seq, last_seq, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&key.endpoint, &key.user_id, &key.session_id, &now_ms, &t.trace_id, &first_seq, &last_seq, &t.body],
    )?;
    tx.execute(
        "DELETE FROM traces WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 AND id <= (
             SELECT id FROM traces WHERE endpoint = $1 AND user_id = $2 AND session_id = $3
             ORDER BY id DESC LIMIT 1 OFFSET $4)",
        &[&key.endpoint, &key.user_id, &key.session_id, &TRACES_PER_SESSION],
    )?;
    Ok(())
}

/// A value that differs after any commit, by any replica (the console polls it).
///
/// A hash of the current snapshot, `xmin:xmax:xip`: `xmax` is one past the highest completed
/// transaction id, `xip` the ids below it still running. A write that commits after a poll
/// either had an id at or above that poll's `xmax` (then `xmax` is past it now) or was listed in
/// its `xip` (and is not now): the snapshot differs either way. `xmax` alone would not do: a
/// write still running at the poll, with a later one already committed, leaves it as it was
/// when it commits (tested). Read-only transactions take no id, so reads do not change it; a
/// change with nothing new for the console costs it one read.
pub(super) fn changes(tx: &mut Tx<'_>) -> Result<i64> {
    let r = tx.query_opt("SELECT hashtextextended(pg_current_snapshot()::text, 0)", &[])?;
    Ok(r.map_or(0, |r| r.get(0)))
}
