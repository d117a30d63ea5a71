//! Reading a whole SQLite store out, for `hookflow store copy` (SQLite → PostgreSQL).

use std::path::Path;

use rusqlite::Connection;

use super::{SqliteStore, key_from};
use crate::domain::{JobKind, SessionKey, Speaker, TranscriptLine};
use crate::store::{ErrorKind, Export, ExportedOutput, Result, StoreError};

/// Everything `store copy` moves, read from the store in `dir` while holding its lock (so no
/// hookflow is running on it). Console history and traces are not part of it.
/// Also gives the store, opened: its data-directory lock keeps a hookflow from starting on it
/// until the caller has marked it copied (`mark_copied`) and dropped it.
pub fn export(dir: &Path) -> Result<(Export, SqliteStore)> {
    let file = dir.join(super::STORE_FILE);
    if !file.exists() {
        return Err(StoreError::new(
            ErrorKind::Io,
            format!("no SQLite store at {}: check the config's dataDir (or --data-dir)", file.display()),
        ));
    }
    // Held by the caller: a hookflow started meanwhile waits (and one running makes this fail).
    let store = SqliteStore::open(dir, crate::config::Durability::Normal)?;
    let conn = Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok((read(&conn)?, store))
}

fn read(conn: &Connection) -> Result<Export> {
    let mut e = Export::default();
    let mut st = conn.prepare("SELECT endpoint, user_id, session_id, kind, payload, resume FROM inbox ORDER BY id")?;
    let rows: Vec<(SessionKey, String, String, Option<String>)> = st
        .query_map([], |r| Ok((key_from(r, 0)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (key, kind, payload, resume) in rows {
        let kind = JobKind::parse(&kind).ok_or_else(|| unknown("a queued message of the kind", &kind))?;
        e.inbox.push((key, kind, payload, resume));
    }
    let mut st =
        conn.prepare("SELECT endpoint, user_id, session_id, state, seq, messages, updated_ms FROM sessions")?;
    e.sessions = st
        .query_map([], |r| {
            // An empty state is a forgotten session (its Seq and counts are kept).
            let state: String = r.get(3)?;
            Ok((key_from(r, 0)?, (!state.is_empty()).then_some(state), r.get(4)?, r.get(5)?, r.get(6)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare("SELECT user_id, profile, updated_ms FROM profiles")?;
    e.profiles = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare(
        "SELECT endpoint, user_id, session_id, seq, body, not_before_ms, attempts, last_error FROM outbox ORDER BY id",
    )?;
    e.outbox = st
        .query_map([], |r| {
            Ok(ExportedOutput {
                key: key_from(r, 0)?,
                seq: r.get(3)?,
                body: r.get(4)?,
                not_before_ms: r.get(5)?,
                attempts: r.get(6)?,
                last_error: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare(
        "SELECT endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms FROM deadletters ORDER BY id",
    )?;
    e.dead_letters = st
        .query_map([], |r| {
            Ok((
                ExportedOutput {
                    key: key_from(r, 0)?,
                    seq: r.get(3)?,
                    body: r.get(4)?,
                    not_before_ms: 0,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                },
                r.get(7)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st =
        conn.prepare("SELECT endpoint, user_id, session_id, source, text, data, at_ms FROM transcripts ORDER BY id")?;
    let rows: Vec<(SessionKey, String, String, String, i64)> = st
        .query_map([], |r| Ok((key_from(r, 0)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (key, source, text, data, at_ms) in rows {
        let source = Speaker::parse(&source).ok_or_else(|| unknown("a transcript line of the speaker", &source))?;
        e.transcripts.push((key, TranscriptLine { source, text, data, at_ms }));
    }
    Ok(e)
}

/// A value this version does not know: written by a newer hookflow.
fn unknown(what: &str, value: &str) -> StoreError {
    StoreError::new(
        ErrorKind::Data,
        format!("the store holds {what} {value:?}, unknown to this version: copy it with the hookflow that wrote it"),
    )
}
