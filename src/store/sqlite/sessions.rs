//! Sessions: reading, forgetting, expiry, and their transcripts.

use rusqlite::{Connection, OptionalExtension, params};

use super::key_from;
use crate::domain::{SessionKey, SessionRow, Speaker, TranscriptLine};
use crate::store::{ErrorKind, Result, StoreError};

/// A session row; an empty stored state is a session without state (see `SessionRow::state`).
pub(super) fn get(conn: &Connection, key: &SessionKey) -> Result<Option<SessionRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT state, seq, messages, updated_ms FROM sessions
             WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3",
        )?
        .query_row(params![key.endpoint, key.user_id, key.session_id], |r| {
            let state: String = r.get(0)?;
            Ok(SessionRow {
                state: (!state.is_empty()).then_some(state),
                seq: r.get(1)?,
                messages: r.get(2)?,
                updated_ms: r.get(3)?,
            })
        })
        .optional()?)
}

pub(super) fn forget(conn: &Connection, key: &SessionKey) -> Result<bool> {
    conn.prepare_cached("DELETE FROM transcripts WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3")?
        .execute(params![key.endpoint, key.user_id, key.session_id])?;
    let n = conn
        .prepare_cached(
            "UPDATE sessions SET state = '', messages = 0
             WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3 AND state != ''",
        )?
        .execute(params![key.endpoint, key.user_id, key.session_id])?;
    Ok(n > 0)
}

/// The row of an expired session stays, with only its output counter: a session id used again
/// goes on numbering where it stopped, so receivers that drop outputs by Seq or webhook-id as
/// duplicates do not drop the new conversation's outputs. Such rows (and those of sessions
/// forgotten through the admin API) are deleted once untouched since `purge_before_ms`, so that
/// ids of users are not kept for ever.
pub(super) fn expire(conn: &Connection, before_ms: i64, purge_before_ms: i64) -> Result<usize> {
    conn.execute("DELETE FROM transcripts WHERE at_ms < ?1", [before_ms])?;
    purge_tombstones(conn, purge_before_ms)?;
    // `messages` stays: a turn running meanwhile (the session is in use after all) then does not
    // take the expiry for a forget, and writes its state back.
    Ok(conn.execute("UPDATE sessions SET state = '' WHERE updated_ms < ?1 AND state != ''", [before_ms])?)
}

/// Deletes the rows of forgotten sessions untouched since `before_ms`, except those with
/// outputs still in the outbox (their Seq must go on from where it is).
fn purge_tombstones(conn: &Connection, before_ms: i64) -> Result<()> {
    let candidates: Vec<SessionKey> = conn
        .prepare_cached("SELECT endpoint, user_id, session_id FROM sessions WHERE state = '' AND updated_ms < ?1")?
        .query_map([before_ms], |r| key_from(r, 0))?
        .collect::<std::result::Result<_, _>>()?;
    let mut pending = conn.prepare_cached(
        "SELECT 1 FROM outbox WHERE hash = ?1 AND endpoint = ?2 AND user_id = ?3 AND session_id = ?4 LIMIT 1",
    )?;
    let mut delete = conn.prepare_cached(
        "DELETE FROM sessions WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3 AND state = ''",
    )?;
    for k in candidates {
        if !pending.exists(params![k.lane_hash(), k.endpoint, k.user_id, k.session_id])? {
            delete.execute(params![k.endpoint, k.user_id, k.session_id])?;
        }
    }
    Ok(())
}

/// Lines in the order they were written, which is the order of the turns (the writer commits a
/// session's turns one after another), whatever their clock times say.
pub(super) fn transcript(conn: &Connection, key: &SessionKey) -> Result<Vec<TranscriptLine>> {
    let mut stmt = conn.prepare_cached(
        "SELECT source, text, data, at_ms FROM transcripts
         WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![key.endpoint, key.user_id, key.session_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    let mut lines = Vec::new();
    for r in rows {
        let (source, text, data, at_ms) = r?;
        let source = match source.as_str() {
            "user" => Speaker::User,
            "bot" => Speaker::Bot,
            other => {
                return Err(StoreError::new(ErrorKind::Data, format!("a transcript line has the source {other:?}")));
            }
        };
        lines.push(TranscriptLine { source, text, data, at_ms });
    }
    Ok(lines)
}
