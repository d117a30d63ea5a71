//! Turn traces (console.md): what the console shows next to a test message's outputs. Kept for
//! test-mode turns only (`TurnRecord::trace` is `None` for the others), the last
//! `TRACES_PER_SESSION` of each session, and forgotten with the session (admin DELETE, expiry).

use rusqlite::{Connection, params};

use crate::domain::{SessionKey, Trace, TraceRow};
use crate::store::Result;

/// Traces kept per session (its last turns; a turn with `http` nodes writes one per part).
pub(crate) const TRACES_PER_SESSION: i64 = 20;

/// Keeps a turn's trace, inside the turn's transaction; its outputs are `first_seq..=last_seq`.
pub(super) fn write(
    tx: &Connection,
    key: &SessionKey,
    t: &Trace,
    first_seq: i64,
    last_seq: i64,
    now_ms: i64,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO traces (endpoint, user_id, session_id, at_ms, trace_id, first_seq, last_seq, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        key.endpoint,
        key.user_id,
        key.session_id,
        now_ms,
        t.trace_id,
        first_seq,
        last_seq,
        t.body
    ])?;
    tx.prepare_cached(
        "DELETE FROM traces WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3 AND id <= (
             SELECT id FROM traces WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3
             ORDER BY id DESC LIMIT 1 OFFSET ?4)",
    )?
    .execute(params![key.endpoint, key.user_id, key.session_id, TRACES_PER_SESSION])?;
    Ok(())
}

/// The session's kept traces, oldest first.
pub(super) fn list(conn: &Connection, key: &SessionKey) -> Result<Vec<TraceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, trace_id, first_seq, last_seq, body FROM traces
         WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![key.endpoint, key.user_id, key.session_id], |r| {
        Ok(TraceRow {
            at_ms: r.get(0)?,
            trace_id: r.get(1)?,
            first_seq: r.get(2)?,
            last_seq: r.get(3)?,
            body: r.get(4)?,
        })
    })?;
    rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
}

/// Forgets a session's traces (admin DELETE).
pub(super) fn forget(conn: &Connection, key: &SessionKey) -> Result<()> {
    conn.prepare_cached("DELETE FROM traces WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3")?
        .execute(params![key.endpoint, key.user_id, key.session_id])?;
    Ok(())
}

/// Drops traces older than `before_ms` (with session expiry: the turns of an expired session are
/// older than that).
pub(super) fn expire(conn: &Connection, before_ms: i64) -> Result<()> {
    conn.execute("DELETE FROM traces WHERE at_ms < ?1", [before_ms])?;
    Ok(())
}
