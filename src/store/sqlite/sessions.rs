//! Sessions: reading, forgetting, expiry, and their transcripts.

use rusqlite::{Connection, OptionalExtension, params};

use super::key_from;
use crate::domain::{SessionKey, SessionRow, Speaker, TranscriptLine};
use crate::store::{ErrorKind, Result, StoreError};

/// The user's profile (JSON), if stored.
pub(super) fn profile(conn: &Connection, user_id: &str) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached("SELECT profile FROM profiles WHERE user_id = ?1")?;
    Ok(stmt.query_row([user_id], |r| r.get(0)).optional()?)
}

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

/// Rows looked at per expiry transaction: the store's lock is released between chunks, so
/// expiring a million sessions never holds up the writer for more than one chunk.
pub(super) const EXPIRY_CHUNK: usize = 1000;

/// One chunk of expiry: the next `EXPIRY_CHUNK` sessions after `after` (in key order), of which
/// those untouched since `before_ms` are forgotten and counter-only rows untouched since
/// `purge_before_ms` (with no output queued) are deleted. Returns how many were forgotten and
/// the last key looked at (`None` once the table is done).
///
/// The row of an expired session stays, with only its output counter: a session id used again
/// goes on numbering where it stopped, so receivers that drop outputs by Seq or webhook-id as
/// duplicates do not drop the new conversation's outputs. Such rows (and those of sessions
/// forgotten through the admin API) are deleted once untouched since `purge_before_ms`, so that
/// ids of users are not kept for ever. `messages` stays: a turn running meanwhile (the session
/// is in use after all) then does not take the expiry for a forget, and writes its state back.
pub(super) fn expire_chunk(
    conn: &Connection,
    after: Option<&SessionKey>,
    before_ms: i64,
    purge_before_ms: i64,
) -> Result<(usize, Option<SessionKey>)> {
    type Row = (SessionKey, bool, i64);
    let rows: Vec<Row> = {
        let map = |r: &rusqlite::Row<'_>| Ok((key_from(r, 0)?, r.get::<_, bool>(3)?, r.get(4)?));
        let sql = "SELECT endpoint, user_id, session_id, state = '', updated_ms FROM sessions";
        let order = "ORDER BY endpoint, user_id, session_id LIMIT ?";
        let limit = EXPIRY_CHUNK as i64;
        match after {
            None => conn
                .prepare_cached(&format!("{sql} {order}1"))?
                .query_map([limit], map)?
                .collect::<rusqlite::Result<Vec<Row>>>(),
            Some(k) => conn
                .prepare_cached(&format!("{sql} WHERE (endpoint, user_id, session_id) > (?1, ?2, ?3) {order}4"))?
                .query_map(params![k.endpoint, k.user_id, k.session_id, limit], map)?
                .collect::<rusqlite::Result<Vec<Row>>>(),
        }
    }?;
    let mut forgotten = 0;
    let mut forget = conn.prepare_cached(
        "UPDATE sessions SET state = '' WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3 AND state != ''",
    )?;
    let mut pending = conn.prepare_cached(
        "SELECT 1 FROM outbox WHERE hash = ?1 AND endpoint = ?2 AND user_id = ?3 AND session_id = ?4 LIMIT 1",
    )?;
    // Not while the session has dead letters: a replay is numbered after the session's last
    // Seq, which a purged row forgets (a replay then reused a Seq already delivered).
    let mut delete = conn.prepare_cached(
        "DELETE FROM sessions WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3 AND state = ''
           AND NOT EXISTS (SELECT 1 FROM deadletters d
                           WHERE d.endpoint = ?1 AND d.user_id = ?2 AND d.session_id = ?3)",
    )?;
    for (k, tombstone, updated) in &rows {
        let p = params![k.endpoint, k.user_id, k.session_id];
        if !tombstone && *updated < before_ms {
            forgotten += forget.execute(p)?;
        } else if *tombstone
            && *updated < purge_before_ms
            && !pending.exists(params![k.lane_hash(), k.endpoint, k.user_id, k.session_id])?
        {
            delete.execute(p)?;
        }
    }
    let last = (rows.len() == EXPIRY_CHUNK).then(|| rows.last().map(|r| r.0.clone())).flatten();
    Ok((forgotten, last))
}

/// Drops transcript lines older than `before_ms` among the `EXPIRY_CHUNK` oldest ones; returns
/// how many. Lines are written in time order, so the old ones are at the start: looking only
/// there keeps a call from reading the whole table (there is no index on the time), and the
/// caller stops at the first call that drops fewer than a chunk.
pub(super) fn expire_transcript_chunk(conn: &Connection, before_ms: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM transcripts WHERE id IN (SELECT id FROM transcripts ORDER BY id LIMIT ?2) AND at_ms < ?1",
        )?
        .execute(params![before_ms, EXPIRY_CHUNK as i64])?)
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
        let Some(source) = Speaker::parse(&source) else {
            return Err(StoreError::new(ErrorKind::Data, format!("a transcript line has the source {source:?}")));
        };
        lines.push(TranscriptLine { source, text, data, at_ms });
    }
    Ok(lines)
}
