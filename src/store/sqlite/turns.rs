//! A finished turn's writes, inside the writer's transaction: one function per table.

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::{NewOutput, OutboxRow, SessionKey, TranscriptLine, TurnRecord};
use crate::store::Result;

/// Writes one turn: numbered outputs, session, profile, transcript lines, and the inbox row
/// deleted or (at a checkpoint) kept with its resume record.
/// The rows added to the outbox are pushed onto `added` when given.
pub(super) fn write(tx: &Connection, t: &TurnRecord, added: Option<&mut Vec<OutboxRow>>) -> Result<()> {
    let (seq, messages) = counters(tx, &t.key)?;
    // A lower count than the turn read means an admin DELETE forgot the session meanwhile.
    let forgotten = messages < t.loaded_messages;
    let first_seq = seq + 1;
    let seq = outputs(tx, &t.key, seq, &t.outputs, added)?;
    match &t.session {
        Some(_) if forgotten => {
            // Forgotten while the turn ran: its outputs go out, its state does not come back.
            log::info!("{}: the session was forgotten while a message ran; its new state is dropped", t.key.endpoint);
            upsert_session(tx, &t.key, "", seq, 0, t.now_ms, Keep::State)?;
        }
        Some(s) => {
            let state = s.state.as_deref().unwrap_or("");
            upsert_session(tx, &t.key, state, seq, s.messages, t.now_ms, Keep::Nothing)?;
        }
        // A notify has no turn state but still numbers its output in the session.
        None if !t.outputs.is_empty() => upsert_session(tx, &t.key, "{}", seq, 0, t.now_ms, Keep::AllButSeq)?,
        None => {}
    }
    if let Some(p) = &t.profile {
        tx.prepare_cached(
            "INSERT INTO profiles (user_id, profile, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id) DO UPDATE SET profile = excluded.profile, updated_ms = excluded.updated_ms",
        )?
        .execute(params![t.key.user_id, p, t.now_ms])?;
    }
    // The lines of a forgotten session's turn would start the next session's transcript.
    if !(forgotten && t.session.is_some()) {
        transcript(tx, &t.key, &t.transcript)?;
        if let Some(trace) = &t.trace {
            super::traces::write(tx, &t.key, trace, first_seq, seq, t.now_ms)?;
        }
    }
    match &t.checkpoint {
        Some(resume) => {
            tx.prepare_cached("UPDATE inbox SET resume = ?2 WHERE id = ?1")?.execute(params![t.inbox_id, resume])?
        }
        None => tx.prepare_cached("DELETE FROM inbox WHERE id = ?1")?.execute([t.inbox_id])?,
    };
    Ok(())
}

/// The session's last Seq and message count (0, 0 for a new session).
fn counters(tx: &Connection, key: &SessionKey) -> Result<(i64, i64)> {
    Ok(tx
        .prepare_cached("SELECT seq, messages FROM sessions WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3")?
        .query_row(params![key.endpoint, key.user_id, key.session_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

/// Numbers and inserts outputs after `seq` (pushing the new rows onto `added`, when given);
/// returns the session's new last Seq.
pub(super) fn outputs(
    tx: &Connection,
    key: &SessionKey,
    mut seq: i64,
    outputs: &[NewOutput],
    mut added: Option<&mut Vec<OutboxRow>>,
) -> Result<i64> {
    if outputs.is_empty() {
        return Ok(seq);
    }
    let mut ins = tx.prepare_cached(
        "INSERT INTO outbox (hash, endpoint, user_id, session_id, seq, body, not_before_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let hash = key.lane_hash();
    for o in outputs {
        seq += 1;
        ins.execute(params![hash, key.endpoint, key.user_id, key.session_id, seq, o.body, o.not_before_ms])?;
        if let Some(added) = added.as_deref_mut() {
            let (body, not_before_ms) = (o.body.clone(), o.not_before_ms);
            added.push(OutboxRow {
                id: tx.last_insert_rowid(),
                key: key.clone(),
                seq,
                body,
                not_before_ms,
                attempts: 0,
            });
        }
    }
    Ok(seq)
}

/// Which columns of an existing session row an upsert leaves alone.
#[derive(Clone, Copy)]
enum Keep {
    /// Overwrite state, seq, messages and the time.
    Nothing,
    /// A forgotten session: only seq and the time change.
    State,
    /// A notify: only seq changes.
    AllButSeq,
}

fn upsert_session(
    tx: &Connection,
    key: &SessionKey,
    state: &str,
    seq: i64,
    messages: i64,
    now_ms: i64,
    keep: Keep,
) -> Result<()> {
    let update = match keep {
        Keep::Nothing => {
            "state = excluded.state, seq = excluded.seq, messages = excluded.messages, updated_ms = excluded.updated_ms"
        }
        Keep::State => "seq = excluded.seq, updated_ms = excluded.updated_ms",
        Keep::AllButSeq => "seq = excluded.seq",
    };
    let sql = format!(
        "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET {update}"
    );
    tx.prepare_cached(&sql)?.execute(params![
        key.endpoint,
        key.user_id,
        key.session_id,
        state,
        seq,
        messages,
        now_ms
    ])?;
    Ok(())
}

fn transcript(tx: &Connection, key: &SessionKey, lines: &[TranscriptLine]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut ins = tx.prepare_cached(
        "INSERT INTO transcripts (endpoint, user_id, session_id, source, text, data, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for l in lines {
        ins.execute(params![key.endpoint, key.user_id, key.session_id, l.source.as_str(), l.text, l.data, l.at_ms])?;
    }
    Ok(())
}
