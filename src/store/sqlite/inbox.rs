//! The inbound queue: accepting messages, the start-up scan, and what a turn reads.

use rusqlite::{Connection, OptionalExtension, params};

use super::{key_from, sessions};
use crate::domain::{InboxRow, JobKind, SessionKey, TurnInput};
use crate::store::{Accept, ErrorKind, Result, StoreError};

/// Inserts accepted messages inside the caller's transaction; their ids, in order.
pub(super) fn insert(conn: &Connection, rows: &[Accept<'_>]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    if rows.is_empty() {
        return Ok(ids);
    }
    let mut ins = conn.prepare_cached(
        "INSERT INTO inbox (endpoint, user_id, session_id, kind, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (key, kind, payload) in rows {
        ins.execute(params![key.endpoint, key.user_id, key.session_id, kind.as_str(), payload])?;
        ids.push(conn.last_insert_rowid());
    }
    Ok(ids)
}

/// Every queued message, in acceptance order.
pub(super) fn pending(conn: &Connection) -> Result<Vec<(i64, SessionKey)>> {
    let mut stmt = conn.prepare("SELECT id, endpoint, user_id, session_id FROM inbox ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, key_from(r, 1)?)))?;
    rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
}

/// The message, its session and the user's profile (inside the caller's read transaction).
pub(super) fn load_turn(conn: &Connection, inbox_id: i64) -> Result<Option<TurnInput>> {
    let row = conn
        .prepare_cached("SELECT id, endpoint, user_id, session_id, kind, payload, resume FROM inbox WHERE id = ?1")?
        .query_row([inbox_id], |r| {
            Ok((r.get::<_, i64>(0)?, key_from(r, 1)?, r.get::<_, String>(4)?, r.get(5)?, r.get(6)?))
        })
        .optional()?;
    let Some((id, key, kind, payload, resume)) = row else { return Ok(None) };
    let kind = JobKind::parse(&kind).ok_or_else(|| {
        StoreError::new(ErrorKind::Data, format!("message {id} has the kind {kind:?}, unknown to this version"))
    })?;
    let row = InboxRow { id, key, kind, payload, resume };
    let session = sessions::get(conn, &row.key)?;
    let profile = conn
        .prepare_cached("SELECT profile FROM profiles WHERE user_id = ?1")?
        .query_row([&row.key.user_id], |r| r.get(0))
        .optional()?;
    Ok(Some(TurnInput { row, session, profile }))
}
