//! Sessions: reading, forgetting, expiry (one replica at a time), and transcripts.

use super::{PgStore, Tx, key_at};
use crate::domain::{SessionKey, SessionRow, Speaker, TranscriptLine};
use crate::store::{ErrorKind, Result, StoreError};

/// Rows looked at per expiry transaction (as in SQLite).
const EXPIRY_CHUNK: i64 = 1000;
/// The advisory lock that makes one replica at a time the one that expires ("hookflow-expire").
pub(super) const EXPIRY_LOCK: i64 = 0x6866_6578_7069_7265;

/// The user's profile (JSON), if stored.
pub(super) fn profile(tx: &mut Tx<'_>, user_id: &str) -> Result<Option<String>> {
    Ok(tx.query_opt("SELECT profile FROM profiles WHERE user_id = $1", &[&user_id])?.map(|r| r.get(0)))
}

pub(super) fn get(tx: &mut Tx<'_>, key: &SessionKey) -> Result<Option<SessionRow>> {
    let row = tx.query_opt(
        "SELECT state, seq, messages, updated_ms FROM sessions WHERE endpoint = $1 AND user_id = $2 AND session_id = $3",
        &[&key.endpoint, &key.user_id, &key.session_id],
    )?;
    Ok(row.map(|r| {
        let state: String = r.get(0);
        SessionRow {
            state: (!state.is_empty()).then_some(state),
            seq: r.get(1),
            messages: r.get(2),
            updated_ms: r.get(3),
        }
    }))
}

pub(super) fn forget(tx: &mut Tx<'_>, key: &SessionKey) -> Result<bool> {
    let p: [&(dyn postgres::types::ToSql + Sync); 3] = [&key.endpoint, &key.user_id, &key.session_id];
    tx.execute("DELETE FROM transcripts WHERE endpoint = $1 AND user_id = $2 AND session_id = $3", &p)?;
    tx.execute("DELETE FROM traces WHERE endpoint = $1 AND user_id = $2 AND session_id = $3", &p)?;
    let n = tx.execute(
        "UPDATE sessions SET state = '', messages = 0
         WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 AND state <> ''",
        &p,
    )?;
    Ok(n > 0)
}

/// `Store::expire_step` for replicas: each chunk is a transaction that first takes the expiry
/// lock without waiting; a replica that does not get it skips the step (another one is
/// expiring), so expiry and purges run on one replica at a time.
pub(super) fn expire_step(
    store: &PgStore,
    cursor: Option<&SessionKey>,
    before_ms: i64,
    purge_before_ms: i64,
    rows: usize,
) -> Result<(usize, Option<SessionKey>)> {
    if cursor.is_none() {
        let got = store.in_tx(|tx| {
            if !leader(tx)? {
                return Ok(false);
            }
            tx.execute("DELETE FROM transcripts WHERE at_ms < $1", &[&before_ms])?;
            tx.execute("DELETE FROM traces WHERE at_ms < $1", &[&before_ms])?;
            super::console::expire(tx, crate::util::now_ms())?;
            Ok(true)
        })?;
        if !got {
            return Ok((0, None));
        }
    }
    let (mut forgotten, mut after, mut looked) = (0, cursor.cloned(), 0usize);
    loop {
        let step = store.in_tx(|tx| {
            if !leader(tx)? {
                return Ok(None);
            }
            expire_chunk(tx, after.as_ref(), before_ms, purge_before_ms).map(Some)
        })?;
        // Another replica holds the lock for a moment: the sweep goes on from here next time
        // (starting over would let two replicas that take turns never get past the start).
        let Some((n, last)) = step else { return Ok((forgotten, after)) };
        forgotten += n;
        looked += EXPIRY_CHUNK as usize;
        match last {
            Some(k) if looked < rows => after = Some(k),
            Some(k) => return Ok((forgotten, Some(k))),
            None => return Ok((forgotten, None)),
        }
    }
}

/// Takes the expiry lock for this transaction if no other replica holds it.
fn leader(tx: &mut Tx<'_>) -> Result<bool> {
    Ok(tx.query_opt("SELECT pg_try_advisory_xact_lock($1)", &[&EXPIRY_LOCK])?.is_some_and(|r| r.get(0)))
}

/// One chunk of expiry, as in SQLite (`sqlite/sessions.rs`): forget sessions untouched since
/// `before_ms`, delete counter-only rows untouched since `purge_before_ms` with nothing queued.
fn expire_chunk(
    tx: &mut Tx<'_>,
    after: Option<&SessionKey>,
    before_ms: i64,
    purge_before_ms: i64,
) -> Result<(usize, Option<SessionKey>)> {
    let empty = String::new();
    let (e, u, s) = match after {
        Some(k) => (&k.endpoint, &k.user_id, &k.session_id),
        None => (&empty, &empty, &empty),
    };
    let rows = tx.query(
        "SELECT endpoint, user_id, session_id, state = '', updated_ms FROM sessions
         WHERE (endpoint, user_id, session_id) > ($1, $2, $3)
         ORDER BY endpoint, user_id, session_id LIMIT $4",
        &[e, u, s, &EXPIRY_CHUNK],
    )?;
    let mut forgotten = 0;
    for r in &rows {
        let k = key_at(r, 0);
        let (tombstone, updated): (bool, i64) = (r.get(3), r.get(4));
        let p: [&(dyn postgres::types::ToSql + Sync); 3] = [&k.endpoint, &k.user_id, &k.session_id];
        if !tombstone && updated < before_ms {
            // `updated_ms` again: the row was read without a lock, and a turn of another replica
            // may have saved the session since (its state would be wiped); PostgreSQL checks the
            // condition again on the row as that turn left it.
            forgotten += tx.execute(
                "UPDATE sessions SET state = '' WHERE endpoint = $1 AND user_id = $2 AND session_id = $3
                   AND state <> '' AND updated_ms < $4",
                &[&k.endpoint, &k.user_id, &k.session_id, &before_ms],
            )? as usize;
        } else if tombstone && updated < purge_before_ms {
            // Only when nothing is queued or claimed: the queues row numbers the next message.
            let idle = tx.execute(
                "DELETE FROM queues WHERE endpoint = $1 AND user_id = $2 AND session_id = $3
                   AND pending = 0 AND outputs = 0 AND run_until = 0 AND dl_until = 0",
                &p,
            )?;
            let none_left = tx
                .query_opt("SELECT 1 FROM queues WHERE endpoint = $1 AND user_id = $2 AND session_id = $3", &p)?
                .is_none();
            // Nor while it has dead letters: a replay is numbered after the session's last Seq,
            // which a purged row forgets (a replay then reused a Seq already delivered).
            if idle > 0 || none_left {
                tx.execute(
                    "DELETE FROM sessions WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 AND state = ''
                       AND NOT EXISTS (SELECT 1 FROM deadletters d
                                       WHERE d.endpoint = $1 AND d.user_id = $2 AND d.session_id = $3)",
                    &p,
                )?;
            }
        }
    }
    let last = (rows.len() as i64 == EXPIRY_CHUNK).then(|| rows.last().map(|r| key_at(r, 0))).flatten();
    Ok((forgotten, last))
}

/// Lines in the order they were written: a session's turns commit one after another (under its
/// lease), so ids follow the turns.
pub(super) fn transcript(tx: &mut Tx<'_>, key: &SessionKey) -> Result<Vec<TranscriptLine>> {
    let rows = tx.query(
        "SELECT source, text, data, at_ms FROM transcripts
         WHERE endpoint = $1 AND user_id = $2 AND session_id = $3 ORDER BY id",
        &[&key.endpoint, &key.user_id, &key.session_id],
    )?;
    let mut lines = Vec::with_capacity(rows.len());
    for r in &rows {
        let source: String = r.get(0);
        let source = Speaker::parse(&source)
            .ok_or_else(|| StoreError::new(ErrorKind::Data, format!("a transcript line has the source {source:?}")))?;
        lines.push(TranscriptLine { source, text: r.get(1), data: r.get(2), at_ms: r.get(3) });
    }
    Ok(lines)
}
