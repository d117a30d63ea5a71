//! Writing an [`Export`] (a SQLite store read out) into an empty PostgreSQL database, in one
//! transaction, for `hookflow store copy`.

use std::collections::{HashMap, HashSet};

use super::PgStore;
use crate::config::Postgres;
use crate::domain::SessionKey;
use crate::store::{ErrorKind, Export, Result, StoreError};

/// The tables that must be empty before a copy.
const TABLES: &[&str] = &["queues", "inbox", "sessions", "profiles", "outbox", "deadletters", "transcripts"];

/// Creates the schema if needed, refuses a database that holds anything, and copies `e` in one
/// transaction (all or nothing). Returns a line saying what was copied.
pub fn import(pg: &Postgres, mut e: Export) -> Result<String> {
    let (renamed, renamed_profiles) = storable_ids(&mut e)?;
    let e = &e;
    let store = PgStore::open(pg)?;
    store.in_tx(|tx| {
        for table in TABLES {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {table})");
            if tx.query_text(&sql, &[])?[0].get::<_, bool>(0) {
                return Err(StoreError::new(
                    ErrorKind::Data,
                    format!(
                        "the PostgreSQL database at {} is not empty (table {table} has rows): copy into an empty \
                         database, so nothing of another deployment is mixed in",
                        store.target
                    ),
                ));
            }
        }
        // Queued messages, numbered per session in their order; each session's queue counts.
        let mut queues: HashMap<&SessionKey, (i64, i64, i64)> = HashMap::new();
        for (key, kind, payload, resume) in &e.inbox {
            let q = queues.entry(key).or_default();
            q.0 += 1;
            tx.execute(
                "INSERT INTO inbox (endpoint, user_id, session_id, msg_no, kind, payload, resume)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&key.endpoint, &key.user_id, &key.session_id, &q.0, &kind.as_str(), payload, resume],
            )?;
        }
        for o in &e.outbox {
            let q = queues.entry(&o.key).or_default();
            if q.1 == 0 {
                q.2 = o.not_before_ms;
            }
            q.1 += 1;
            let k = &o.key;
            tx.execute(
                "INSERT INTO outbox (hash, endpoint, user_id, session_id, seq, body, not_before_ms, attempts, last_error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &i64::from(k.lane_hash()),
                    &k.endpoint,
                    &k.user_id,
                    &k.session_id,
                    &o.seq,
                    &o.body,
                    &o.not_before_ms,
                    &o.attempts,
                    &o.last_error.as_deref().map(super::text),
                ],
            )?;
        }
        for (key, (messages, outputs, due)) in &queues {
            tx.execute(
                "INSERT INTO queues (endpoint, user_id, session_id, next_msg, pending, ready_ms, outputs, out_due)
                 VALUES ($1, $2, $3, $4, $4, hookflow_now_ms(), $5, $6)",
                &[&key.endpoint, &key.user_id, &key.session_id, messages, outputs, due],
            )?;
        }
        for (k, state, seq, messages, updated) in &e.sessions {
            // Both backends store a forgotten session's state as an empty text.
            let state = state.as_deref().unwrap_or("");
            tx.execute(
                "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&k.endpoint, &k.user_id, &k.session_id, &state, seq, messages, updated],
            )?;
        }
        for (user, profile, updated) in &e.profiles {
            tx.execute(
                "INSERT INTO profiles (user_id, profile, updated_ms) VALUES ($1, $2, $3)",
                &[user, profile, updated],
            )?;
        }
        for (d, died) in &e.dead_letters {
            let k = &d.key;
            let error = super::text(d.last_error.as_deref().unwrap_or_default());
            tx.execute(
                "INSERT INTO deadletters (endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&k.endpoint, &k.user_id, &k.session_id, &d.seq, &d.body, &d.attempts, &error, died],
            )?;
        }
        for (k, l) in &e.transcripts {
            tx.execute(
                "INSERT INTO transcripts (endpoint, user_id, session_id, source, text, data, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&k.endpoint, &k.user_id, &k.session_id, &l.source.as_str(), &super::text(&l.text), &l.data, &l.at_ms],
            )?;
        }
        Ok(())
    })?;
    let mut said = format!(
        "copied {} session(s), {} profile(s), {} queued message(s), {} undelivered output(s), {} dead letter(s), \
         {} transcript line(s) to PostgreSQL at {} (the delivery log and traces of the console are not copied)",
        e.sessions.len(),
        e.profiles.len(),
        e.inbox.len(),
        e.outbox.len(),
        e.dead_letters.len(),
        e.transcripts.len(),
        store.target
    );
    if renamed + renamed_profiles > 0 {
        said.push_str(&format!(
            "; {renamed} session(s) and {renamed_profiles} profile(s) had U+0000 in an id, which PostgreSQL cannot \
             store: copied with U+FFFD in its place (their outputs go out as they were made; new messages with such \
             ids are refused since this version)"
        ));
    }
    Ok(said)
}

/// Ids with U+0000, which a SQLite store may hold from before intake refused them, with U+FFFD
/// in its place (PostgreSQL's text cannot hold it). New messages with such ids are refused; the
/// session's queued messages still run and its outputs still go out (the ones already made with
/// their bodies unchanged, new ones under the renamed ids). Returns the sessions and profiles
/// renamed; refuses the copy when a renamed id would be another session's or profile's.
fn storable_ids(e: &mut Export) -> Result<(usize, usize)> {
    let keys = e.inbox.iter().map(|i| &i.0).chain(e.outbox.iter().map(|o| &o.key));
    let keys = keys.chain(e.sessions.iter().map(|s| &s.0)).chain(e.dead_letters.iter().map(|d| &d.0.key));
    let keys: HashSet<&SessionKey> = keys.chain(e.transcripts.iter().map(|t| &t.0)).collect();
    let mut renamed: HashMap<SessionKey, SessionKey> = HashMap::new();
    let mut taken: HashSet<SessionKey> = keys.iter().filter(|k| k.storable()).map(|k| (*k).clone()).collect();
    for k in keys.iter().filter(|k| !k.storable()) {
        let new = k.storable_form();
        if !taken.insert(new.clone()) {
            return Err(clash(&format!(
                "the session (endpoint {:?}, userId {:?}, sessionId {:?})",
                k.endpoint, k.user_id, k.session_id
            )));
        }
        renamed.insert((*k).clone(), new);
    }
    let users: HashSet<String> = e.profiles.iter().map(|p| p.0.clone()).collect();
    let mut profiles = 0;
    for p in &mut e.profiles {
        if p.0.contains('\0') {
            let new = super::text(&p.0).into_owned();
            if users.contains(&new) {
                return Err(clash(&format!("the profile of userId {:?}", p.0)));
            }
            p.0 = new;
            profiles += 1;
        }
    }
    let fix = |k: &mut SessionKey| {
        if let Some(new) = renamed.get(k) {
            *k = new.clone();
        }
    };
    e.inbox.iter_mut().for_each(|i| fix(&mut i.0));
    e.outbox.iter_mut().for_each(|o| fix(&mut o.key));
    e.sessions.iter_mut().for_each(|s| fix(&mut s.0));
    e.dead_letters.iter_mut().for_each(|d| fix(&mut d.0.key));
    e.transcripts.iter_mut().for_each(|t| fix(&mut t.0));
    Ok((renamed.len(), profiles))
}

/// The copy refused: `what` has U+0000 in an id, and with U+FFFD in its place it would be
/// another's.
fn clash(what: &str) -> StoreError {
    StoreError::new(
        ErrorKind::Data,
        format!(
            "{what} has U+0000 in an id, which PostgreSQL cannot store, and with U+FFFD in its place it would be \
             another's: remove one of the two from the SQLite file first (its rows in inbox, outbox, sessions, \
             deadletters, transcripts and profiles); nothing was copied"
        ),
    )
}
