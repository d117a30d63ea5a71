//! The SQLite store: the inbound queue (`inbox`), sessions, profiles, the outbox and dead
//! letters, in one file in WAL mode. Every SQL statement of hookflow lives here.
//!
//! One connection behind a mutex serves every thread: SQLite allows one writer at a time anyway,
//! and waiting on a Rust mutex is far cheaper than SQLite's busy handler, which sleeps in
//! millisecond steps. Each method takes the lock for one short transaction and never across a
//! network call or a Flow step.
//!
//! Durability (config `durability`): `normal` uses `synchronous=NORMAL`, so a commit is in the
//! OS page cache before the 200 goes out and survives the process dying; `full` adds an fsync
//! per commit (`synchronous=FULL`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::Durability;

/// The file name of the store inside the data directory.
pub const STORE_FILE: &str = "hookflow.sqlite3";

/// A store failure; the message comes from SQLite or the file system.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// What a row of the inbound queue asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A user message (`POST /{URLToken}`): runs the Flow.
    Message,
    /// `inject`: runs the Flow as if the user had sent it.
    Inject,
    /// `notify`: one output straight to the webhook; the Flow does not run.
    Notify,
}

impl JobKind {
    fn as_str(self) -> &'static str {
        match self {
            JobKind::Message => "message",
            JobKind::Inject => "inject",
            JobKind::Notify => "notify",
        }
    }

    fn parse(s: &str) -> JobKind {
        match s {
            "inject" => JobKind::Inject,
            "notify" => JobKind::Notify,
            _ => JobKind::Message,
        }
    }
}

/// The conversation a row belongs to: endpoint name, userId, sessionId.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub endpoint: String,
    pub user_id: String,
    pub session_id: String,
}

/// An accepted message, as queued.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub id: i64,
    pub key: SessionKey,
    pub kind: JobKind,
    /// JSON of the accepted input (`wire::Accepted`).
    pub payload: String,
    /// JSON of a turn interrupted at a checkpoint (an `http` node), to resume from.
    pub resume: Option<String>,
}

/// A session as stored.
#[derive(Debug, Clone, Default)]
pub struct SessionRow {
    /// JSON of `flow::SessionState`.
    pub state: String,
    /// The last output sequence number given out (0 = none yet).
    pub seq: i64,
    /// Messages this session has run (inputs of kind message or inject).
    pub messages: i64,
    /// Unix milliseconds of the last change.
    pub updated_ms: i64,
}

/// A finished turn, owned, as the workers hand it to the writer (`writer.rs`).
#[derive(Debug, Clone)]
pub struct TurnRecord {
    pub inbox_id: i64,
    pub key: SessionKey,
    /// New session state; `None` leaves the session as it is (a notify, a dropped message).
    pub session: Option<SessionRow>,
    pub profile: Option<String>,
    pub outputs: Vec<NewOutput>,
    pub lane_hash: u32,
    pub now_ms: i64,
    pub transcript: Vec<TranscriptLine>,
    /// The session's message count when the turn read it (or its checkpoint last wrote it): a
    /// lower count at commit time means the session was forgotten meanwhile through the admin
    /// API, and it stays forgotten. (Expiry keeps the count, see `expire_sessions`.)
    pub loaded_messages: i64,
}

impl TurnRecord {
    /// The borrowed form `write_turn` takes.
    pub fn commit(&self) -> TurnCommit<'_> {
        TurnCommit {
            inbox_id: self.inbox_id,
            key: &self.key,
            session: self.session.as_ref(),
            profile: self.profile.as_deref(),
            outputs: &self.outputs,
            lane_hash: self.lane_hash,
            now_ms: self.now_ms,
            checkpoint: None,
            transcript: &self.transcript,
            loaded_messages: self.loaded_messages,
        }
    }
}

/// What a turn starts from.
#[derive(Debug, Clone)]
pub struct TurnInput {
    pub row: InboxRow,
    pub session: Option<SessionRow>,
    /// JSON of the user's profile, if stored.
    pub profile: Option<String>,
}

/// One output to deliver.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub key: SessionKey,
    pub seq: i64,
    /// The exact body to POST.
    pub body: String,
    /// Unix milliseconds before which it must not go out (the `sleep` node, retries).
    pub not_before_ms: i64,
    pub attempts: i64,
}

/// One output of a turn, before it is numbered.
#[derive(Debug, Clone)]
pub struct NewOutput {
    pub body: String,
    pub not_before_ms: i64,
}

/// A dead letter, as listed by the admin API.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub key: SessionKey,
    pub seq: i64,
    pub body: String,
    pub attempts: i64,
    pub last_error: String,
    pub died_at_ms: i64,
}

/// What a finished turn writes, in one transaction.
pub struct TurnCommit<'a> {
    pub inbox_id: i64,
    pub key: &'a SessionKey,
    /// New session state; `None` leaves the session as it is (a notify).
    pub session: Option<&'a SessionRow>,
    /// New profile of the user, when contact profiles are on and the turn changed it.
    pub profile: Option<&'a str>,
    pub outputs: &'a [NewOutput],
    /// Stable hash of the session key; the sender lane is `hash % senders` (`sender::lane_hash`).
    pub lane_hash: u32,
    pub now_ms: i64,
    /// Keep the inbox row with this resume state instead of deleting it (a checkpoint).
    pub checkpoint: Option<&'a str>,
    /// Transcript lines to keep (`collectConversations`).
    pub transcript: &'a [TranscriptLine],
    /// See [`TurnRecord::loaded_messages`].
    pub loaded_messages: i64,
}

/// One line of a conversation transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptLine {
    /// `user` or `bot`.
    pub source: &'static str,
    pub text: String,
    /// JSON of the data object, `{}` when none.
    pub data: String,
    pub at_ms: i64,
}

/// What a dead-letter replay did.
#[derive(Debug, PartialEq)]
pub enum Replay {
    Queued,
    /// No dead letter has this id.
    Unknown,
    /// Its endpoint (named) is not configured: no sender would read it.
    EndpointGone(String),
}

/// The store handle; cheap to share behind an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
    /// A second, read-only connection for the sender's outbox reads: in WAL mode readers do not
    /// wait for the writer, so the sender is not held up by workers committing turns.
    reader: Mutex<Connection>,
    path: PathBuf,
}

/// Outbox ids must never be reused: a sender lane reads rows above the highest id it has seen,
/// and SQLite would otherwise hand out `max(id) + 1` again once the table is empty.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    kind TEXT NOT NULL, payload TEXT NOT NULL, resume TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    state TEXT NOT NULL, seq INTEGER NOT NULL, messages INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (endpoint, user_id, session_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profiles (
    user_id TEXT PRIMARY KEY, profile TEXT NOT NULL, updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash INTEGER NOT NULL,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    seq INTEGER NOT NULL, body TEXT NOT NULL,
    not_before_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
-- Reading back the rest of one session's queue (a sender lane keeps at most a few rows of each
-- session in memory); the integer hash keeps the index small, the session columns filter.
CREATE INDEX IF NOT EXISTS outbox_hash ON outbox (hash, id);
CREATE TABLE IF NOT EXISTS transcripts (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    source TEXT NOT NULL, text TEXT NOT NULL, data TEXT NOT NULL, at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_session ON transcripts (endpoint, user_id, session_id, id);
CREATE TABLE IF NOT EXISTS deadletters (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    seq INTEGER NOT NULL, body TEXT NOT NULL,
    attempts INTEGER NOT NULL, last_error TEXT NOT NULL, died_ms INTEGER NOT NULL
);
";

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create data directory {}: {e}", dir.display())))?;
        let path = dir.join(STORE_FILE);
        let conn = Connection::open(&path).map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=OFF;
             PRAGMA busy_timeout=5000; PRAGMA cache_size=-2000;"
        ))?;
        conn.execute_batch(SCHEMA)?;
        let reader = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        reader.execute_batch("PRAGMA busy_timeout=5000; PRAGMA cache_size=-1000;")?;
        Ok(Store { conn: Mutex::new(conn), reader: Mutex::new(reader), path })
    }

    /// The store file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half done: rusqlite rolls
        // back an open transaction when it is dropped during the unwind.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an accepted message; returns its id once it is committed.
    pub fn accept(&self, key: &SessionKey, kind: JobKind, payload: &str) -> Result<i64> {
        Ok(self.accept_batch(&[(key, kind, payload)])?[0])
    }

    /// Queues several accepted messages in one transaction (group commit); their ids, in order.
    pub fn accept_batch(&self, rows: &[(&SessionKey, JobKind, &str)]) -> Result<Vec<i64>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(rows.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO inbox (endpoint, user_id, session_id, kind, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (key, kind, payload) in rows {
                ins.execute(params![key.endpoint, key.user_id, key.session_id, kind.as_str(), payload])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Every queued message, in acceptance order (for the start-up scan).
    pub fn pending_inbox(&self) -> Result<Vec<(i64, SessionKey)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id, endpoint, user_id, session_id FROM inbox ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, key_from(r, 1)?)))?;
        rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
    }

    /// Reads what a turn needs: the message, the session (if any) and the user's profile.
    pub fn load_turn(&self, inbox_id: i64) -> Result<Option<TurnInput>> {
        let mut conn = self.lock();
        // One read transaction for the three reads: one lock round instead of three.
        let conn = conn.transaction()?;
        let row = conn
            .prepare_cached("SELECT id, endpoint, user_id, session_id, kind, payload, resume FROM inbox WHERE id = ?1")?
            .query_row([inbox_id], |r| {
                Ok(InboxRow {
                    id: r.get(0)?,
                    key: key_from(r, 1)?,
                    kind: JobKind::parse(&r.get::<_, String>(4)?),
                    payload: r.get(5)?,
                    resume: r.get(6)?,
                })
            })
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        let session = session_row(&conn, &row.key)?;
        let profile = conn
            .prepare_cached("SELECT profile FROM profiles WHERE user_id = ?1")?
            .query_row([&row.key.user_id], |r| r.get(0))
            .optional()?;
        conn.commit()?;
        Ok(Some(TurnInput { row, session, profile }))
    }

    /// Writes a turn's result atomically: session, profile, numbered outputs, and the inbox row
    /// deleted (or, at a checkpoint, kept with its resume state). Returns the last output id.
    pub fn commit_turn(&self, c: &TurnCommit<'_>) -> Result<i64> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let last_id = write_turn(&tx, c)?;
        tx.commit()?;
        Ok(last_id)
    }

    /// One transaction for a writer batch: accepted messages (their ids are returned, in order)
    /// and finished turns.
    pub fn commit_batch(&self, accepts: &[(&SessionKey, JobKind, &str)], turns: &[&TurnRecord]) -> Result<Vec<i64>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(accepts.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO inbox (endpoint, user_id, session_id, kind, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (key, kind, payload) in accepts {
                ins.execute(params![key.endpoint, key.user_id, key.session_id, kind.as_str(), payload])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        for t in turns {
            write_turn(&tx, &t.commit())?;
        }
        tx.commit()?;
        Ok(ids)
    }
}

/// The writes of one turn, inside the caller's transaction; returns the last output id.
fn write_turn(tx: &rusqlite::Transaction<'_>, c: &TurnCommit<'_>) -> Result<i64> {
    {
        let (mut seq, messages): (i64, i64) = tx
            .prepare_cached(
                "SELECT seq, messages FROM sessions WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3",
            )?
            .query_row(params![c.key.endpoint, c.key.user_id, c.key.session_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((0, 0));
        let forgotten = messages < c.loaded_messages;
        let mut last_id = 0;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO outbox (hash, endpoint, user_id, session_id, seq, body, not_before_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for o in c.outputs {
                seq += 1;
                ins.execute(params![
                    c.lane_hash,
                    c.key.endpoint,
                    c.key.user_id,
                    c.key.session_id,
                    seq,
                    o.body,
                    o.not_before_ms
                ])?;
                last_id = tx.last_insert_rowid();
            }
        }
        match c.session {
            Some(_) if forgotten => {
                // Forgotten while the turn ran: its outputs go out, its state does not come back.
                log::info!(
                    "{}: the session was forgotten while a message ran; its new state is dropped",
                    c.key.endpoint
                );
                tx.prepare_cached(
                    "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
                     VALUES (?1, ?2, ?3, '', ?4, 0, ?5)
                     ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET
                       seq = excluded.seq, updated_ms = excluded.updated_ms",
                )?
                .execute(params![c.key.endpoint, c.key.user_id, c.key.session_id, seq, c.now_ms])?;
            }
            Some(s) => {
                tx.prepare_cached(
                    "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET
                       state = excluded.state, seq = excluded.seq, messages = excluded.messages,
                       updated_ms = excluded.updated_ms",
                )?
                .execute(params![
                    c.key.endpoint,
                    c.key.user_id,
                    c.key.session_id,
                    s.state,
                    seq,
                    s.messages,
                    c.now_ms
                ])?;
            }
            None if !c.outputs.is_empty() => {
                // A notify has no turn state but still numbers its output in the session.
                tx.prepare_cached(
                    "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
                     VALUES (?1, ?2, ?3, '{}', ?4, 0, ?5)
                     ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET seq = excluded.seq",
                )?
                .execute(params![c.key.endpoint, c.key.user_id, c.key.session_id, seq, c.now_ms])?;
            }
            None => {}
        }
        if let Some(p) = c.profile {
            tx.prepare_cached(
                "INSERT INTO profiles (user_id, profile, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET profile = excluded.profile, updated_ms = excluded.updated_ms",
            )?
            .execute(params![c.key.user_id, p, c.now_ms])?;
        }
        // The lines of a forgotten session's turn would start the next session's transcript.
        let drop_lines = forgotten && c.session.is_some();
        if !c.transcript.is_empty() && !drop_lines {
            let mut ins = tx.prepare_cached(
                "INSERT INTO transcripts (endpoint, user_id, session_id, source, text, data, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for l in c.transcript {
                ins.execute(params![
                    c.key.endpoint,
                    c.key.user_id,
                    c.key.session_id,
                    l.source,
                    l.text,
                    l.data,
                    l.at_ms
                ])?;
            }
        }
        match c.checkpoint {
            Some(resume) => {
                tx.prepare_cached("UPDATE inbox SET resume = ?2 WHERE id = ?1")?.execute(params![c.inbox_id, resume])?
            }
            None => tx.prepare_cached("DELETE FROM inbox WHERE id = ?1")?.execute([c.inbox_id])?,
        };
        Ok(last_id)
    }
}

impl Store {
    /// The highest outbox id so far (0 when none): reads bounded by it see a fixed set of rows,
    /// since ids are handed out in commit order by the one writing connection.
    pub fn outbox_max_id(&self) -> Result<i64> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let max: Option<i64> = conn.prepare_cached("SELECT max(id) FROM outbox")?.query_row([], |r| r.get(0))?;
        Ok(max.unwrap_or(0))
    }

    /// Outputs of `endpoint` for sender `lane` (of `lanes`) with an id in `(after, upto]`, in id
    /// order, at most `limit`. Lanes are computed from the stored hash, so a changed
    /// `delivery.senders` still finds every row.
    pub fn outbox_after(
        &self,
        lane: usize,
        lanes: usize,
        endpoint: &str,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT id, endpoint, user_id, session_id, seq, body, not_before_ms, attempts
             FROM outbox WHERE id > ?2 AND id <= ?5 AND endpoint = ?6 AND hash % ?4 = ?1 ORDER BY id LIMIT ?3",
        )?;
        let rows =
            stmt.query_map(params![lane as i64, after, limit as i64, lanes as i64, upto, endpoint], outbox_row)?;
        rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
    }

    /// Outputs of one session with an id in `(after, upto]`, in id order, at most `limit`.
    pub fn outbox_of_session(&self, key: &SessionKey, after: i64, upto: i64, limit: usize) -> Result<Vec<OutboxRow>> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT id, endpoint, user_id, session_id, seq, body, not_before_ms, attempts
             FROM outbox WHERE hash = ?1 AND id > ?2 AND id <= ?3
               AND endpoint = ?4 AND user_id = ?5 AND session_id = ?6 ORDER BY id LIMIT ?7",
        )?;
        let hash = crate::sender::lane_hash(key);
        let rows = stmt.query_map(
            params![hash, after, upto, key.endpoint, key.user_id, key.session_id, limit as i64],
            outbox_row,
        )?;
        rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
    }

    /// Moves the outputs of endpoints that are no longer configured to the dead letters (they
    /// can be replayed once the endpoint is back); returns how many.
    pub fn dead_unconfigured(&self, endpoints: &[&str], now_ms: i64) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let names = serde_json::to_string(endpoints).expect("strings serialize");
        let unknown = "endpoint NOT IN (SELECT value FROM json_each(?1))";
        let moved = tx.execute(
            &format!(
                "INSERT INTO deadletters (endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms)
                 SELECT endpoint, user_id, session_id, seq, body, attempts, 'endpoint no longer configured', ?2
                 FROM outbox WHERE {unknown} ORDER BY id"
            ),
            params![names, now_ms],
        )?;
        tx.execute(&format!("DELETE FROM outbox WHERE {unknown}"), [names])?;
        tx.commit()?;
        Ok(moved)
    }

    /// Removes delivered outputs, in one transaction.
    pub fn delivered(&self, ids: &[i64]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in ids {
                del.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a failed attempt that will be retried at `next_ms`.
    pub fn attempt_failed(&self, id: i64, attempts: i64, next_ms: i64, error: &str) -> Result<()> {
        self.lock()
            .prepare_cached("UPDATE outbox SET attempts = ?2, not_before_ms = ?3, last_error = ?4 WHERE id = ?1")?
            .execute(params![id, attempts, next_ms, error])?;
        Ok(())
    }

    /// Moves an output to the dead letters.
    pub fn dead(&self, id: i64, attempts: i64, error: &str, now_ms: i64) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO deadletters (endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms)
             SELECT endpoint, user_id, session_id, seq, body, ?2, ?3, ?4 FROM outbox WHERE id = ?1",
        )?
        .execute(params![id, attempts, error, now_ms])?;
        tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?.execute([id])?;
        tx.commit()?;
        Ok(())
    }

    /// Dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, endpoint, user_id, session_id, seq, body, attempts, last_error, died_ms
             FROM deadletters ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
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

    /// Puts a dead letter back in the outbox, as the next output of its session, when
    /// `endpoint_ok` accepts its endpoint (no sender reads outputs of other endpoints).
    pub fn replay_dead_letter(&self, id: i64, now_ms: i64, endpoint_ok: impl Fn(&str) -> bool) -> Result<Replay> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let row = tx
            .prepare_cached("SELECT endpoint, user_id, session_id, seq, body FROM deadletters WHERE id = ?1")?
            .query_row([id], |r| Ok((key_from(r, 0)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?)))
            .optional()?;
        let Some((key, dead_seq, body)) = row else { return Ok(Replay::Unknown) };
        if !endpoint_ok(&key.endpoint) {
            return Ok(Replay::EndpointGone(key.endpoint));
        }
        // A replay is a new output at the end of the session: the next Seq (so that Seq keeps
        // increasing, and a new webhook-id), not the old one.
        let seq: i64 = tx
            .prepare_cached(
                "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms)
                 VALUES (?1, ?2, ?3, '', ?4 + 1, 0, ?5)
                 ON CONFLICT (endpoint, user_id, session_id) DO UPDATE SET seq = seq + 1, updated_ms = ?5
                 RETURNING seq",
            )?
            .query_row(params![key.endpoint, key.user_id, key.session_id, dead_seq, now_ms], |r| r.get(0))?;
        tx.prepare_cached(
            "INSERT INTO outbox (hash, endpoint, user_id, session_id, seq, body, not_before_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            crate::sender::lane_hash(&key),
            key.endpoint,
            key.user_id,
            key.session_id,
            seq,
            body,
            now_ms
        ])?;
        tx.prepare_cached("DELETE FROM deadletters WHERE id = ?1")?.execute([id])?;
        tx.commit()?;
        Ok(Replay::Queued)
    }

    /// The stored session, if any.
    pub fn session(&self, key: &SessionKey) -> Result<Option<SessionRow>> {
        session_row(&self.lock(), key)
    }

    /// Forgets a session's state, so its next message starts fresh; true if it existed. Its
    /// output counter is kept, so `X-Hookflow-Seq` stays strictly increasing for the receiver.
    /// Queued messages and undelivered outputs stay.
    pub fn delete_session(&self, key: &SessionKey) -> Result<bool> {
        let conn = self.lock();
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

    /// Forgets the state of sessions untouched since `before_ms` and drops transcript lines older
    /// than that; returns how many sessions were forgotten.
    ///
    /// The row of an expired session stays, with only its output counter: a session id used
    /// again goes on numbering where it stopped, so receivers that drop outputs by Seq or
    /// webhook-id as duplicates do not drop the new conversation's outputs. Such rows (and those
    /// of sessions forgotten through the admin API) are deleted once untouched since
    /// `purge_before_ms`, so that ids of users are not kept for ever.
    pub fn expire_sessions(&self, before_ms: i64, purge_before_ms: i64) -> Result<usize> {
        let conn = self.lock();
        conn.execute("DELETE FROM transcripts WHERE at_ms < ?1", [before_ms])?;
        purge_tombstones(&conn, purge_before_ms)?;
        // `messages` stays: a turn running meanwhile (the session is in use after all) then
        // does not take the expiry for a forget, and writes its state back.
        Ok(conn.execute("UPDATE sessions SET state = '' WHERE updated_ms < ?1 AND state != ''", [before_ms])?)
    }

    /// The transcript of a session, oldest first.
    pub fn transcript(&self, key: &SessionKey) -> Result<Vec<TranscriptLine>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT source, text, data, at_ms FROM transcripts
             WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![key.endpoint, key.user_id, key.session_id], |r| {
            let source = if r.get::<_, String>(0)? == "user" { "user" } else { "bot" };
            Ok(TranscriptLine { source, text: r.get(1)?, data: r.get(2)?, at_ms: r.get(3)? })
        })?;
        rows.collect::<std::result::Result<_, _>>().map_err(Into::into)
    }

    /// Number of outputs waiting in the outbox.
    pub fn outbox_len(&self) -> Result<i64> {
        Ok(self.lock().query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?)
    }

    /// True when a write transaction can be started and committed (for `/readyz`).
    pub fn writable(&self) -> bool {
        self.lock().execute_batch("BEGIN IMMEDIATE; COMMIT;").is_ok()
    }
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
        let hash = crate::sender::lane_hash(&k);
        if !pending.exists(params![hash, k.endpoint, k.user_id, k.session_id])? {
            delete.execute(params![k.endpoint, k.user_id, k.session_id])?;
        }
    }
    Ok(())
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        key: key_from(r, 1)?,
        seq: r.get(4)?,
        body: r.get(5)?,
        not_before_ms: r.get(6)?,
        attempts: r.get(7)?,
    })
}

fn key_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SessionKey> {
    Ok(SessionKey { endpoint: r.get(at)?, user_id: r.get(at + 1)?, session_id: r.get(at + 2)? })
}

fn session_row(conn: &Connection, key: &SessionKey) -> Result<Option<SessionRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT state, seq, messages, updated_ms FROM sessions
             WHERE endpoint = ?1 AND user_id = ?2 AND session_id = ?3",
        )?
        .query_row(params![key.endpoint, key.user_id, key.session_id], |r| {
            Ok(SessionRow { state: r.get(0)?, seq: r.get(1)?, messages: r.get(2)?, updated_ms: r.get(3)? })
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("hookflow-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open(&dir, Durability::Normal).unwrap(), dir)
    }

    fn key() -> SessionKey {
        SessionKey { endpoint: "e".into(), user_id: "u".into(), session_id: "s".into() }
    }

    fn commit(store: &Store, inbox_id: i64, bodies: &[&str], now_ms: i64) {
        let outputs: Vec<NewOutput> =
            bodies.iter().map(|b| NewOutput { body: (*b).into(), not_before_ms: 0 }).collect();
        let session = SessionRow { state: "{\"context\":{}}".into(), seq: 0, messages: 1, updated_ms: 0 };
        store
            .commit_turn(&TurnCommit {
                inbox_id,
                key: &key(),
                session: Some(&session),
                profile: None,
                outputs: &outputs,
                lane_hash: 7,
                now_ms,
                checkpoint: None,
                transcript: &[],
                loaded_messages: 0,
            })
            .unwrap();
    }

    #[test]
    fn a_turn_commits_outputs_and_consumes_its_message_atomically() {
        let (store, dir) = temp_store("turn");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        assert_eq!(store.pending_inbox().unwrap(), vec![(id, key())]);
        commit(&store, id, &["a", "b"], 1);
        assert!(store.pending_inbox().unwrap().is_empty());
        let rows = store.outbox_after(0, 1, &key().endpoint, 0, i64::MAX, 10).unwrap();
        assert_eq!(rows.iter().map(|r| (r.seq, r.body.as_str())).collect::<Vec<_>>(), vec![(1, "a"), (2, "b")]);
        assert_eq!(store.session(&key()).unwrap().unwrap().seq, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn outbox_ids_are_never_reused_after_the_table_empties() {
        let (store, dir) = temp_store("ids");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["a"], 1);
        let first = store.outbox_after(0, 1, &key().endpoint, 0, i64::MAX, 10).unwrap()[0].id;
        store.delivered(&[first]).unwrap();
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["b"], 1);
        let rows = store.outbox_after(0, 1, &key().endpoint, first, i64::MAX, 10).unwrap();
        assert_eq!(rows.len(), 1, "the new output has an id above the delivered one");
        assert_eq!(rows[0].seq, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dead_letters_are_kept_and_replayed_into_the_outbox() {
        let (store, dir) = temp_store("dead");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["a"], 1);
        let out = store.outbox_after(0, 1, &key().endpoint, 0, i64::MAX, 10).unwrap()[0].id;
        store.dead(out, 3, "HTTP 400", 5).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 0);
        let dead = store.dead_letters().unwrap();
        assert_eq!((dead[0].attempts, dead[0].last_error.as_str(), dead[0].body.as_str()), (3, "HTTP 400", "a"));
        assert_eq!(store.replay_dead_letter(dead[0].id, 6, |_| true).unwrap(), Replay::Queued);
        assert_eq!(store.replay_dead_letter(dead[0].id, 6, |_| true).unwrap(), Replay::Unknown);
        assert_eq!(store.outbox_after(0, 1, &key().endpoint, out, i64::MAX, 10).unwrap()[0].body, "a");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn forgetting_or_expiring_a_session_keeps_its_output_counter() {
        let (store, dir) = temp_store("forget");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["a"], 1_000);
        assert!(store.delete_session(&key()).unwrap());
        assert!(!store.delete_session(&key()).unwrap());
        let row = store.session(&key()).unwrap().unwrap();
        assert_eq!((row.state.as_str(), row.seq), ("", 1));
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["b"], 1_000);
        assert_eq!(store.expire_sessions(500, 0).unwrap(), 0);
        assert_eq!(store.expire_sessions(2_000, 0).unwrap(), 1);
        assert_eq!(store.expire_sessions(2_000, 0).unwrap(), 0, "already forgotten");
        let row = store.session(&key()).unwrap().unwrap();
        assert_eq!((row.state.as_str(), row.seq, row.messages), ("", 2, 1), "expiry keeps the count");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["c"], 3_000);
        let last = store.outbox_after(0, 1, "e", 0, i64::MAX, 10).unwrap().pop().unwrap();
        assert_eq!((last.body.as_str(), last.seq), ("c", 3), "numbering goes on after expiry");
        // A forgotten session untouched since the purge time is deleted entirely.
        assert_eq!(store.expire_sessions(4_000, 3_500).unwrap(), 1);
        assert!(store.session(&key()).unwrap().is_some(), "expiry first keeps the counter");
        // Not while outputs of the session wait in the outbox (rows stored with the key's hash).
        store.lock().execute("UPDATE outbox SET hash = ?1", [crate::sender::lane_hash(&key())]).unwrap();
        assert_eq!(store.expire_sessions(9_000, 3_500).unwrap(), 0);
        assert!(store.session(&key()).unwrap().is_some(), "outputs are pending");
        let ids: Vec<i64> = store.outbox_after(0, 1, "e", 0, i64::MAX, 10).unwrap().iter().map(|r| r.id).collect();
        store.delivered(&ids).unwrap();
        assert_eq!(store.expire_sessions(9_000, 3_500).unwrap(), 0);
        assert!(store.session(&key()).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lanes_partition_the_outbox_by_hash() {
        let (store, dir) = temp_store("lanes");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["a"], 1);
        // lane_hash 7: lane 1 of 2, lane 3 of 4.
        assert_eq!(store.outbox_after(1, 2, &key().endpoint, 0, i64::MAX, 10).unwrap().len(), 1);
        assert_eq!(store.outbox_after(0, 2, &key().endpoint, 0, i64::MAX, 10).unwrap().len(), 0);
        assert_eq!(store.outbox_after(3, 4, &key().endpoint, 0, i64::MAX, 10).unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reads_by_endpoint_and_session_stay_within_their_bounds() {
        let (store, dir) = temp_store("bounds");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["a", "b", "c"], 1);
        let max = store.outbox_max_id().unwrap();
        let all = store.outbox_after(0, 1, "e", 0, max, 10).unwrap();
        assert_eq!(all.len(), 3);
        assert!(store.outbox_after(0, 1, "other", 0, max, 10).unwrap().is_empty());
        assert_eq!(store.outbox_after(0, 1, "e", 0, all[1].id, 10).unwrap().len(), 2, "upto is inclusive");
        // The session read looks rows up by the key's own hash, as the writer stores it.
        let conn = store.lock();
        conn.execute("UPDATE outbox SET hash = ?1", [crate::sender::lane_hash(&key())]).unwrap();
        drop(conn);
        let rest = store.outbox_of_session(&key(), all[0].id, max, 10).unwrap();
        assert_eq!(rest.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(store.outbox_of_session(&key(), all[0].id, all[1].id, 10).unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn outputs_of_unconfigured_endpoints_become_dead_letters() {
        let (store, dir) = temp_store("unconfigured");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["a"], 1);
        assert_eq!(store.dead_unconfigured(&["e"], 9).unwrap(), 0);
        assert_eq!(store.dead_unconfigured(&["x", "y"], 9).unwrap(), 1);
        assert_eq!(store.outbox_len().unwrap(), 0);
        let dead = store.dead_letters().unwrap();
        assert_eq!((dead[0].last_error.as_str(), dead[0].died_at_ms), ("endpoint no longer configured", 9));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_turn_that_ends_after_its_session_was_forgotten_keeps_it_forgotten() {
        let (store, dir) = temp_store("forgotten-mid-turn");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["a"], 1);
        // The next turn reads the session (1 message), then an admin DELETE forgets it.
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        assert!(store.delete_session(&key()).unwrap());
        let session = SessionRow { state: "{\"context\":{\"x\":1}}".into(), seq: 0, messages: 2, updated_ms: 0 };
        let outputs = [NewOutput { body: "b".into(), not_before_ms: 0 }];
        store
            .commit_turn(&TurnCommit {
                inbox_id: id,
                key: &key(),
                session: Some(&session),
                profile: None,
                outputs: &outputs,
                lane_hash: 7,
                now_ms: 2,
                checkpoint: None,
                transcript: &[],
                loaded_messages: 1,
            })
            .unwrap();
        let row = store.session(&key()).unwrap().unwrap();
        assert_eq!((row.state.as_str(), row.seq, row.messages), ("", 2, 0), "state dropped, output numbered");
        assert_eq!(store.outbox_len().unwrap(), 2, "the turn's output is kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_replayed_dead_letter_gets_the_next_seq_of_its_session() {
        let (store, dir) = temp_store("replay-seq");
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        commit(&store, id, &["a", "b"], 1);
        let first = store.outbox_after(0, 1, "e", 0, i64::MAX, 10).unwrap()[0].id;
        store.dead(first, 1, "HTTP 400", 2).unwrap();
        let dead = store.dead_letters().unwrap();
        assert_eq!(store.replay_dead_letter(dead[0].id, 3, |e| e == "x").unwrap(), Replay::EndpointGone("e".into()));
        assert_eq!(store.replay_dead_letter(dead[0].id, 3, |_| true).unwrap(), Replay::Queued);
        let rows = store.outbox_after(0, 1, "e", first, i64::MAX, 10).unwrap();
        assert_eq!(rows.iter().map(|r| (r.body.as_str(), r.seq)).collect::<Vec<_>>(), [("b", 2), ("a", 3)]);
        assert_eq!(store.session(&key()).unwrap().unwrap().seq, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
