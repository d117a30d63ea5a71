//! The console's delivery log (console.md): the outputs that left the outbox (`output_log`) and
//! the attempts of every output (`attempts`), bounded.
//!
//! The outbox deletes an output once it is delivered, so the log keeps a copy of each output that
//! leaves it — delivered, dead, or (later) replayed — in the same transaction as the move. What
//! it holds is bounded: the last `HISTORY_PER_ENDPOINT` outputs of each endpoint (trimmed every
//! `BOUND_EVERY` delivered outputs, so up to that many more for a while), none older than
//! `HISTORY_MS` (checked when an expiry sweep starts), and at most `ATTEMPTS_PER_OUTPUT` attempts of one
//! output (the latest). Forgetting a session forgets its part of the log too.
//!
//! The log is on the delivery path (a lane writes it with each batch of delivered outputs), so
//! the common case is kept to one row: the attempt that delivered an output is stored in the
//! output's log row, and only the other attempts get rows of their own.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::key_from;
use crate::domain::{
    AttemptRecord, EndpointCounts, OutputEntry, OutputFilter, OutputState, SessionKey, SessionSummary,
};
use crate::store::Result;

/// Finished outputs kept per endpoint.
pub(crate) const HISTORY_PER_ENDPOINT: i64 = 1000;
/// Finished outputs older than this are dropped, when each expiry sweep starts (every minute on
/// a small store; with a million sessions, every ~100 minutes).
pub(crate) const HISTORY_MS: i64 = 24 * 3600 * 1000;
/// Attempts kept of one output (the latest ones).
pub(crate) const ATTEMPTS_PER_OUTPUT: i64 = 20;
/// Bytes of a webhook's answer (or of a transport error) kept with an attempt.
pub(crate) const ANSWER_BYTES: usize = 256;
/// Delivered outputs between two trims of the log to `HISTORY_PER_ENDPOINT`.
const BOUND_EVERY: usize = 256;
/// Most attempts noted and not yet written; more are left out of the log (with a warning). Each
/// lane writes its outputs' fates within a batch of 64, so this is not reached in practice.
pub(crate) const MAX_NOTED: usize = 4096;

/// What the store holds in memory for the log: attempts noted and not yet written
/// (`Store::record_attempt`), and the endpoints whose log grew since it was last trimmed.
#[derive(Default)]
pub(super) struct Notes {
    attempts: Vec<AttemptRecord>,
    since_bound: usize,
    grown: BTreeSet<String>,
}

impl Notes {
    pub(super) fn note(&mut self, a: AttemptRecord) {
        if self.attempts.len() >= MAX_NOTED {
            log::warn!("store: too many delivery attempts noted and not written; one is left out of the delivery log");
            return;
        }
        self.attempts.push(a);
    }

    pub(super) fn take(&mut self) -> Vec<AttemptRecord> {
        std::mem::take(&mut self.attempts)
    }
}

/// Outputs `ids` were delivered and are about to leave the outbox: into the log, each with the
/// attempt that delivered it, and the other noted attempts into `attempts` (then `trim`).
pub(super) fn delivered(conn: &Connection, ids: &[i64], notes: &Mutex<Notes>, now_ms: i64) -> Result<()> {
    let noted = notes.lock().unwrap_or_else(|p| p.into_inner()).take();
    let mut finals: HashMap<i64, &AttemptRecord> = HashMap::new();
    let mut others = Vec::new();
    for a in &noted {
        if a.delivered && ids.contains(&a.output_id) {
            finals.insert(a.output_id, a);
        } else {
            others.push(a.clone());
        }
    }
    write_attempts(conn, &others)?;
    let mut copy = conn.prepare_cached(
        "INSERT OR REPLACE INTO output_log
             (id, endpoint, user_id, session_id, seq, body, state, attempts, last_error, done_ms,
              final_at_ms, final_latency_ms, final_status, final_answer)
         SELECT id, endpoint, user_id, session_id, seq, body, 'delivered', attempts + 1, last_error, ?2, ?3, ?4, ?5, ?6
         FROM outbox WHERE id = ?1
         RETURNING endpoint",
    )?;
    let mut grown = Vec::new();
    for id in ids {
        let f = finals.get(id);
        let answer = f.map(|a| head(&a.answer, ANSWER_BYTES));
        let p = params![id, now_ms, f.map(|a| a.at_ms), f.map(|a| a.latency_ms), f.and_then(|a| a.status), answer];
        if let Some(ep) = copy.query_row(p, |r| r.get::<_, String>(0)).optional()? {
            grown.push(ep);
        }
    }
    let mut n = notes.lock().unwrap_or_else(|p| p.into_inner());
    n.since_bound += ids.len();
    n.grown.extend(grown);
    Ok(())
}

/// After delivered outputs left the outbox: trims the log when `BOUND_EVERY` more went in.
pub(super) fn trim(conn: &Connection, notes: &Mutex<Notes>) -> Result<()> {
    let due = {
        let mut n = notes.lock().unwrap_or_else(|p| p.into_inner());
        (n.since_bound >= BOUND_EVERY).then(|| {
            n.since_bound = 0;
            std::mem::take(&mut n.grown)
        })
    };
    match due {
        Some(endpoints) => bound(conn, &endpoints),
        None => Ok(()),
    }
}
/// Writes noted attempts (see `Store::record_attempt`).
pub(super) fn write_attempts(conn: &Connection, attempts: &[AttemptRecord]) -> Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    // (A replace: after a crash an attempt can be made again under the same number.)
    let mut ins = conn.prepare_cached(
        "INSERT OR REPLACE INTO attempts (output_id, attempt, at_ms, latency_ms, status, answer, delivered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut trim = conn.prepare_cached("DELETE FROM attempts WHERE output_id = ?1 AND attempt <= ?2")?;
    for a in attempts {
        let answer = head(&a.answer, ANSWER_BYTES);
        ins.execute(params![a.output_id, a.attempt, a.at_ms, a.latency_ms, a.status, answer, a.delivered])?;
        if a.attempt > ATTEMPTS_PER_OUTPUT {
            trim.execute(params![a.output_id, a.attempt - ATTEMPTS_PER_OUTPUT])?;
        }
    }
    Ok(())
}

/// The first `max` bytes of `s`, cut at a character boundary.
pub(crate) fn head(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Copies outputs about to leave the outbox otherwise than delivered into the log, as `state`.
pub(super) fn leaving(
    conn: &Connection,
    ids: &[i64],
    state: OutputState,
    error: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    let mut copy = conn.prepare_cached(
        "INSERT OR REPLACE INTO output_log
             (id, endpoint, user_id, session_id, seq, body, state, attempts, last_error, done_ms)
         SELECT id, endpoint, user_id, session_id, seq, body, ?2, attempts, coalesce(?3, last_error), ?4
         FROM outbox WHERE id = ?1",
    )?;
    for id in ids {
        copy.execute(params![id, state.as_str(), error, now_ms])?;
    }
    Ok(())
}

/// After `outbox::dead` moved output `id`: its log entry points at the new dead letter (the
/// last row inserted) and counts `attempts` (then `trim`).
pub(super) fn died(conn: &Connection, id: i64, attempts: i64, notes: &Mutex<Notes>) -> Result<()> {
    let endpoint: Option<String> = conn
        .prepare_cached(
            "UPDATE output_log SET dead_id = last_insert_rowid(), attempts = ?2 WHERE id = ?1 RETURNING endpoint",
        )?
        .query_row(params![id, attempts], |r| r.get(0))
        .optional()?;
    let mut n = notes.lock().unwrap_or_else(|p| p.into_inner());
    n.since_bound += 1;
    n.grown.extend(endpoint);
    Ok(())
}

/// Before `outbox::dead_unconfigured`: copies the outputs of endpoints not in `endpoints` as dead.
pub(super) fn leaving_unconfigured(conn: &Connection, endpoints: &[&str], now_ms: i64) -> Result<()> {
    let names = serde_json::to_string(endpoints).expect("strings serialize");
    conn.execute(
        "INSERT OR REPLACE INTO output_log
             (id, endpoint, user_id, session_id, seq, body, state, attempts, last_error, done_ms)
         SELECT id, endpoint, user_id, session_id, seq, body, 'dead', attempts, 'endpoint no longer configured', ?2
         FROM outbox WHERE endpoint NOT IN (SELECT value FROM json_each(?1))",
        params![names, now_ms],
    )?;
    Ok(())
}

/// After `outbox::dead_unconfigured`: outputs of endpoints no longer configured, moved in bulk,
/// find their dead letters by session and Seq.
pub(super) fn link_dead(conn: &Connection) -> Result<()> {
    conn.execute(
        "UPDATE output_log SET dead_id = (
             SELECT d.id FROM deadletters d WHERE d.endpoint = output_log.endpoint
               AND d.user_id = output_log.user_id AND d.session_id = output_log.session_id
               AND d.seq = output_log.seq)
         WHERE state = 'dead' AND dead_id IS NULL",
        [],
    )?;
    Ok(())
}

/// A dead letter went back to the outbox as output `new_id`.
pub(super) fn replayed(conn: &Connection, dead_id: i64, new_id: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE output_log SET state = 'replayed', replayed_as = ?2, dead_id = NULL WHERE dead_id = ?1",
    )?
    .execute(params![dead_id, new_id])?;
    Ok(())
}

/// Keeps the last `HISTORY_PER_ENDPOINT` finished outputs of each endpoint in `endpoints`.
fn bound(conn: &Connection, endpoints: &BTreeSet<String>) -> Result<()> {
    let mut cutoff =
        conn.prepare_cached("SELECT id FROM output_log WHERE endpoint = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2")?;
    for ep in endpoints {
        let below: Option<i64> =
            cutoff.query_map(params![ep, HISTORY_PER_ENDPOINT], |r| r.get(0))?.next().transpose()?;
        if let Some(below) = below {
            drop_finished(conn, "endpoint = ?1 AND id <= ?2", params![ep, below])?;
        }
    }
    Ok(())
}

/// Drops finished outputs older than `before_ms`, with their attempts.
pub(super) fn expire(conn: &Connection, before_ms: i64) -> Result<()> {
    drop_finished(conn, "done_ms < ?1", params![before_ms])
}

/// Forgets a session's part of the log (admin DELETE): its finished outputs and the attempts of
/// all its outputs (those still waiting keep being delivered and noted).
pub(super) fn forget(conn: &Connection, key: &SessionKey) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM attempts WHERE output_id IN (
             SELECT id FROM outbox WHERE hash = ?4 AND endpoint = ?1 AND user_id = ?2 AND session_id = ?3)",
    )?
    .execute(params![key.endpoint, key.user_id, key.session_id, key.lane_hash()])?;
    drop_finished(
        conn,
        "endpoint = ?1 AND user_id = ?2 AND session_id = ?3",
        params![key.endpoint, key.user_id, key.session_id],
    )
}

/// Deletes finished outputs matching `cond` and their attempts (in one range: those of outputs
/// still in the outbox or the log stay).
fn drop_finished(conn: &Connection, cond: &str, p: &[&dyn rusqlite::ToSql]) -> Result<()> {
    let ids: Vec<i64> = conn
        .prepare_cached(&format!("DELETE FROM output_log WHERE {cond} RETURNING id"))?
        .query_map(p, |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) else { return Ok(()) };
    conn.prepare_cached(
        "DELETE FROM attempts WHERE output_id BETWEEN ?1 AND ?2
           AND output_id NOT IN (SELECT id FROM output_log) AND output_id NOT IN (SELECT id FROM outbox)",
    )?
    .execute(params![lo, hi])?;
    Ok(())
}

/// The delivery log: the newest matching outputs of the outbox and of the log, merged by id.
pub(super) fn outputs(conn: &Connection, f: &OutputFilter) -> Result<Vec<OutputEntry>> {
    let (waiting, finished) = crate::store::log::sources(f);
    let waiting = if waiting { query(conn, OUTBOX_SELECT, f)? } else { Vec::new() };
    let finished = if finished { query(conn, LOG_SELECT, f)? } else { Vec::new() };
    crate::store::log::assemble(waiting, finished, f, |list| attach_tries(conn, list))
}

/// Waiting outputs: queued until the first attempt failed, then retrying; the time is when due.
const OUTBOX_SELECT: &str = "SELECT id, endpoint, user_id, session_id, seq, body,
        CASE WHEN attempts = 0 THEN 'queued' ELSE 'retrying' END AS state, attempts,
        not_before_ms AS at_ms, last_error, NULL AS dead_id, NULL AS replayed_as,
        NULL AS final_at_ms, NULL AS final_latency_ms, NULL AS final_status, NULL AS final_answer FROM outbox";
/// Finished outputs; the time is when they were delivered or died.
const LOG_SELECT: &str = "SELECT id, endpoint, user_id, session_id, seq, body, state, attempts,
        done_ms AS at_ms, last_error, dead_id, replayed_as,
        final_at_ms, final_latency_ms, final_status, final_answer FROM output_log";

fn query(conn: &Connection, select: &str, f: &OutputFilter) -> Result<Vec<OutputEntry>> {
    let sql = format!(
        "SELECT * FROM ({select}) WHERE id < ?1
           AND (?2 IS NULL OR endpoint = ?2) AND (?3 IS NULL OR user_id = ?3) AND (?4 IS NULL OR session_id = ?4)
           AND (?5 IS NULL OR at_ms >= ?5) AND (?6 IS NULL OR at_ms <= ?6)
           AND (?7 IS NULL OR state = ?7 OR (?7 = 'delivered' AND state != 'replayed' AND state != 'dead'))
         ORDER BY id DESC LIMIT ?8"
    );
    let state = f.state.map(OutputState::as_str);
    let p = params![
        f.before_id.unwrap_or(i64::MAX),
        f.endpoint,
        f.user_id,
        f.session_id,
        f.since_ms,
        f.until_ms,
        state,
        f.limit as i64
    ];
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(p, |r| {
        let state: String = r.get(6)?;
        let (id, key, seq, attempts): (i64, SessionKey, i64, i64) = (r.get(0)?, key_from(r, 1)?, r.get(4)?, r.get(7)?);
        // The attempt that delivered it, kept in the row.
        let last = match r.get::<_, Option<i64>>(12)? {
            Some(at_ms) => Some(AttemptRecord {
                output_id: id,
                key: key.clone(),
                seq,
                attempt: attempts,
                at_ms,
                latency_ms: r.get(13)?,
                status: r.get(14)?,
                answer: r.get(15)?,
                delivered: true,
            }),
            None => None,
        };
        Ok(OutputEntry {
            id,
            key,
            seq,
            body: r.get(5)?,
            // Written by this module only; an unknown name reads as the nearest safe one.
            state: OutputState::parse(&state).unwrap_or(OutputState::Dead),
            attempts,
            at_ms: r.get(8)?,
            last_error: r.get(9)?,
            dead_letter: r.get(10)?,
            replayed_as: r.get(11)?,
            tries: last.into_iter().collect(),
        })
    })?;
    rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
}

fn attach_tries(conn: &Connection, list: &mut [OutputEntry]) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(&list.iter().map(|e| e.id).collect::<Vec<_>>()).expect("numbers serialize");
    let mut stmt = conn.prepare_cached(
        "SELECT output_id, attempt, at_ms, latency_ms, status, answer, delivered FROM attempts
         WHERE output_id IN (SELECT value FROM json_each(?1)) ORDER BY output_id, attempt",
    )?;
    let rows = stmt.query_map([ids], |r| {
        Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
    })?;
    for row in rows {
        let (id, attempt, at_ms, latency_ms, status, answer, delivered) = row?;
        if let Some(e) = list.iter_mut().find(|e| e.id == id) {
            let (key, seq) = (e.key.clone(), e.seq);
            let t = AttemptRecord { output_id: id, key, seq, attempt, at_ms, latency_ms, status, answer, delivered };
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

pub(super) fn endpoint_counts(conn: &Connection) -> Result<Vec<EndpointCounts>> {
    let mut stmt = conn.prepare_cached(
        "SELECT endpoint, sum(q), sum(d) FROM (
             SELECT endpoint, count(*) AS q, 0 AS d FROM outbox GROUP BY endpoint
             UNION ALL SELECT endpoint, 0, count(*) FROM deadletters GROUP BY endpoint)
         GROUP BY endpoint ORDER BY endpoint",
    )?;
    let rows =
        stmt.query_map([], |r| Ok(EndpointCounts { endpoint: r.get(0)?, queued: r.get(1)?, dead_letters: r.get(2)? }))?;
    rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
}

/// A substring search over the session table (no index helps a substring; the admin search is
/// rare and bounded by `limit`).
pub(super) fn find_sessions(
    conn: &Connection,
    endpoint: Option<&str>,
    q: &str,
    limit: usize,
) -> Result<Vec<SessionSummary>> {
    let mut stmt = conn.prepare_cached(
        "SELECT endpoint, user_id, session_id, seq, messages, updated_ms, state != '' FROM sessions
         WHERE (?1 IS NULL OR endpoint = ?1)
           AND (?2 = '' OR instr(lower(user_id), ?2) > 0 OR instr(lower(session_id), ?2) > 0)
         ORDER BY updated_ms DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![endpoint, q.to_lowercase(), limit as i64], |r| {
        Ok(SessionSummary {
            key: key_from(r, 0)?,
            seq: r.get(3)?,
            messages: r.get(4)?,
            updated_ms: r.get(5)?,
            has_state: r.get(6)?,
        })
    })?;
    rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
}

/// Ids of the dead letters matching the filter's endpoint and session, oldest first.
pub(super) fn dead_letter_ids(conn: &Connection, f: &OutputFilter) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM deadletters
         WHERE (?1 IS NULL OR endpoint = ?1) AND (?2 IS NULL OR user_id = ?2) AND (?3 IS NULL OR session_id = ?3)
           AND (?5 IS NULL OR died_ms >= ?5) AND (?6 IS NULL OR died_ms <= ?6)
         ORDER BY id LIMIT ?4",
    )?;
    let args = params![f.endpoint, f.user_id, f.session_id, f.limit as i64, f.since_ms, f.until_ms];
    let rows = stmt.query_map(args, |r| r.get(0))?;
    rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
}
