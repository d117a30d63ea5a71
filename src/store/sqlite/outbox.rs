//! The outbox (what the sender lanes deliver) and the dead letters.

use rusqlite::{Connection, OptionalExtension, params};

use super::{key_from, turns};
use crate::domain::{DeadLetter, NewOutput, OutboxRow, Replay, SessionKey};
use crate::store::Result;

const COLUMNS: &str = "id, endpoint, user_id, session_id, seq, body, not_before_ms, attempts";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        key: key_from(r, 1)?,
        seq: r.get(4)?,
        body: r.get(5)?,
        not_before_ms: r.get(6)?,
        attempts: r.get(7)?,
    })
}

/// The highest outbox id so far: reads bounded by it see a fixed set of rows, since ids are
/// handed out in commit order by the one writing connection.
pub(super) fn max_id(conn: &Connection) -> Result<i64> {
    let max: Option<i64> = conn.prepare_cached("SELECT max(id) FROM outbox")?.query_row([], |r| r.get(0))?;
    Ok(max.unwrap_or(0))
}

/// Lanes are computed from the stored hash, so a changed `delivery.senders` still finds every row.
pub(super) fn after(
    conn: &Connection,
    lane: usize,
    lanes: usize,
    endpoint: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM outbox
         WHERE id > ?2 AND id <= ?5 AND endpoint = ?6 AND hash % ?4 = ?1 ORDER BY id LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![lane as i64, after, limit as i64, lanes as i64, upto, endpoint], row)?;
    rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
}

pub(super) fn of_session(
    conn: &Connection,
    key: &SessionKey,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE hash = ?1 AND id > ?2 AND id <= ?3
           AND endpoint = ?4 AND user_id = ?5 AND session_id = ?6 ORDER BY id LIMIT ?7"
    ))?;
    let params = params![key.lane_hash(), after, upto, key.endpoint, key.user_id, key.session_id, limit as i64];
    let rows = stmt.query_map(params, row)?;
    rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
}

pub(super) fn delete(conn: &Connection, ids: &[i64]) -> Result<()> {
    let mut del = conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
    for id in ids {
        del.execute([id])?;
    }
    Ok(())
}

pub(super) fn attempt_failed(conn: &Connection, id: i64, attempts: i64, next_ms: i64, error: &str) -> Result<()> {
    conn.prepare_cached("UPDATE outbox SET attempts = ?2, not_before_ms = ?3, last_error = ?4 WHERE id = ?1")?
        .execute(params![id, attempts, next_ms, error])?;
    Ok(())
}

pub(super) fn dead(conn: &Connection, id: i64, attempts: i64, error: &str, now_ms: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO deadletters (endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms)
         SELECT endpoint, user_id, session_id, seq, body, ?2, ?3, ?4 FROM outbox WHERE id = ?1",
    )?
    .execute(params![id, attempts, error, now_ms])?;
    delete(conn, &[id])
}

pub(super) fn dead_unconfigured(conn: &Connection, endpoints: &[&str], now_ms: i64) -> Result<usize> {
    let names = serde_json::to_string(endpoints).expect("strings serialize");
    let unknown = "endpoint NOT IN (SELECT value FROM json_each(?1))";
    let moved = conn.execute(
        &format!(
            "INSERT INTO deadletters (endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms)
             SELECT endpoint, user_id, session_id, seq, body, attempts, 'endpoint no longer configured', ?2
             FROM outbox WHERE {unknown} ORDER BY id"
        ),
        params![names, now_ms],
    )?;
    conn.execute(&format!("DELETE FROM outbox WHERE {unknown}"), [names])?;
    Ok(moved)
}

pub(super) fn dead_letters(conn: &Connection, after: i64, limit: usize) -> Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare(
        "SELECT id, endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms
         FROM deadletters WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![after, limit], |r| {
        Ok(DeadLetter {
            id: r.get(0)?,
            key: key_from(r, 1)?,
            seq: r.get(4)?,
            body: r.get(5)?,
            attempts: r.get(6)?,
            last_error: r.get(7)?,
            died_at_ms: r.get(8)?,
        })
    })?;
    rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
}

/// A replay is a new output at the end of the session: the next Seq (so that Seq keeps
/// increasing, and a new webhook-id), not the old one.
pub(super) fn replay(conn: &Connection, id: i64, now_ms: i64, endpoint_ok: &dyn Fn(&str) -> bool) -> Result<Replay> {
    let dead = conn
        .prepare_cached("SELECT endpoint, user_id, session_id, seq, body FROM deadletters WHERE id = ?1")?
        .query_row([id], |r| Ok((key_from(r, 0)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?)))
        .optional()?;
    let Some((key, dead_seq, body)) = dead else { return Ok(Replay::Unknown) };
    if !endpoint_ok(&key.endpoint) {
        return Ok(Replay::EndpointGone(key.endpoint));
    }
    // The session row may be gone (purged); its counter then goes on from the dead letter's Seq.
    let seq: i64 = conn
        .prepare_cached(
            "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
             VALUES (?1, ?2, ?3, '', ?4, 0, ?5)
             ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET updated_ms = ?5
             RETURNING seq",
        )?
        .query_row(params![key.endpoint, key.user_id, key.session_id, dead_seq, now_ms], |r| r.get(0))?;
    let seq = turns::outputs(conn, &key, seq, &[NewOutput { body, not_before_ms: now_ms }], None)?;
    let out_id = conn.last_insert_rowid();
    conn.prepare_cached("UPDATE sessions SET seq = ?4 WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3")?
        .execute(params![key.endpoint, key.user_id, key.session_id, seq])?;
    conn.prepare_cached("DELETE FROM deadletters WHERE id = ?1")?.execute([id])?;
    Ok(Replay::Queued { id: out_id, seq })
}
