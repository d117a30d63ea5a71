//! The SQLite backend: the inbound queue (`inbox`), sessions, profiles, the outbox, dead letters
//! and transcripts, in one file in WAL mode. Every SQL statement of this backend lives in this
//! folder: `inbox.rs` (accepting and loading messages), `turns.rs` (a turn's writes, one
//! function per table), `outbox.rs` (delivery and dead letters), `sessions.rs` (sessions,
//! expiry, transcripts); for the console, `history.rs` (the delivery log) and `traces.rs` (turn
//! traces of test sessions).
//!
//! One connection behind a mutex serves every writer: SQLite allows one writer at a time anyway,
//! and waiting on a Rust mutex is far cheaper than SQLite's busy handler, which sleeps in
//! millisecond steps. Each method takes the lock for one short transaction and never across a
//! network call or a Flow step. A second, read-only connection serves the sender's outbox reads:
//! in WAL mode readers do not wait for the writer.
//!
//! Durability (config `durability`): `normal` uses `synchronous=NORMAL`, so a commit is in the
//! OS page cache before the 200 goes out and survives the process dying; `full` adds an fsync
//! per commit (`synchronous=FULL`).
//!
//! One process per data directory: `open` takes an exclusive lock on `hookflow.lock` there
//! (flock, released by the kernel when the process ends, even by `kill -9`) and holds it as long
//! as the store lives. Two processes on one SQLite file would each keep their own per-session
//! order and Seq in memory and interleave (an output delivered twice, a state change lost); a
//! backend made for several processes (PostgreSQL) takes no such lock.

mod export;
mod history;
mod inbox;
mod outbox;
mod sessions;
mod traces;
mod turns;

// The console's bounds and the answer cut, shared with the PostgreSQL backend (one definition).
pub(crate) use history::{ANSWER_BYTES, ATTEMPTS_PER_OUTPUT, HISTORY_MS, HISTORY_PER_ENDPOINT, MAX_NOTED, head};
pub(crate) use traces::TRACES_PER_SESSION;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

use crate::config::Durability;
use crate::domain::{
    AttemptRecord, DeadLetter, EndpointCounts, NewOutbox, OutboxRow, OutputEntry, OutputFilter, OutputState, Replay,
    SessionKey, SessionRow, SessionSummary, TraceRow, TranscriptLine, TurnInput, TurnRecord,
};
use crate::store::{Accept, ErrorKind, Result, Store, StoreError};

pub use export::export;

/// Marks the store in `dir` as copied to PostgreSQL at `to` (shown without its password), so
/// that a single node is not started on it again by mistake (`SqliteStore::open` refuses).
pub fn mark_copied(dir: &Path, to: &str) -> std::io::Result<()> {
    let said = format!(
        "this store was copied to PostgreSQL ({}) by `hookflow store copy` at {}",
        crate::config::shown_url(to),
        crate::util::iso8601(crate::util::now_ms())
    );
    std::fs::write(dir.join(COPIED_MARK), format!("{said}\n"))
}

/// The file name of the store inside the data directory.
pub const STORE_FILE: &str = "hookflow.sqlite3";

/// Left in the data directory by `hookflow store copy` (`mark_copied`): the store was copied to
/// PostgreSQL, and opening it again is refused while the file is there.
pub const COPIED_MARK: &str = "COPIED-TO-POSTGRESQL";
/// The lock file inside the data directory; it holds the pid of the process that has it.
pub const LOCK_FILE: &str = "hookflow.lock";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let kind = match e.sqlite_error_code() {
            Some(C::DiskFull) => ErrorKind::Full,
            Some(C::DatabaseBusy | C::DatabaseLocked) => ErrorKind::Busy,
            Some(C::CannotOpen | C::ReadOnly | C::SystemIoFailure | C::PermissionDenied) => ErrorKind::Io,
            Some(C::DatabaseCorrupt | C::NotADatabase) => ErrorKind::Data,
            _ => ErrorKind::Other,
        };
        StoreError::new(kind, e.to_string())
    }
}

/// A store file that cannot be used at start, said with its name and the fix.
fn unusable(path: &std::path::Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    let fix = match e.sqlite_error_code() {
        Some(C::DatabaseCorrupt | C::NotADatabase) => {
            "it is not a hookflow store, or it is damaged: restore it from a backup, or stop hookflow and \
             move it (with its -wal file) away to start with an empty store; `sqlite3 FILE .recover` may \
             save what it holds"
        }
        Some(C::ReadOnly | C::PermissionDenied | C::CannotOpen) => {
            "this user cannot write it or its -wal and -shm files: give them to the user hookflow runs as \
             (chown), writable (chmod u+rw)"
        }
        _ => "",
    };
    let store = StoreError::from(e);
    let message = if fix.is_empty() {
        format!("{}: {}", path.display(), store.message)
    } else {
        format!("{}: {}; {fix}", path.display(), store.message)
    };
    StoreError { message, ..store }
}

/// The SQLite store; cheap to share behind an `Arc`.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    reader: Mutex<Connection>,
    /// Delivery attempts noted and not yet written (see `Store::record_attempt`), and the
    /// delivery log's pending bound.
    notes: Mutex<history::Notes>,
    /// For the checkpoint interval, which follows the database's size.
    durability: Durability,
    /// The log's length and checkpoint interval, shared with the write-ahead-log hook.
    log: Arc<Log>,
    /// Held for the store's life: the exclusive lock on the data directory (see the file doc).
    /// Declared last, so it is released after everything else is closed.
    _lock: File,
}

/// Most log pages after which a commit copies the log into the database (SQLite's automatic
/// checkpoint; its default is 1,000), with `durability: normal`. A checkpoint copies each page
/// once however often the log holds it, and the pages that change most (the sessions in use,
/// the queues' last pages) change in nearly every commit: a longer log copies far fewer pages per
/// message. With a million stored sessions, whose active rows each sit on a page of their own,
/// 1,000 made the checkpoints cost a fifth of the throughput and doubled the acknowledgement p99
/// (docs/performance.md). See `checkpoint_pages` for how long the log may grow.
pub(crate) const CHECKPOINT_PAGES: u32 = 10_000;

/// Fewest log pages between automatic checkpoints: SQLite's default.
pub(crate) const CHECKPOINT_PAGES_MIN: u32 = 1_000;

/// How long a statement waits for another connection's lock (SQLite's busy timeout).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the log-cutting checkpoint waits for readers to leave the log (see `checkpoint`).
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The automatic checkpoint's interval for a database of `page_count` pages: a quarter of the
/// database, between `CHECKPOINT_PAGES_MIN` and `CHECKPOINT_PAGES` (4 to 40 MiB of log).
///
/// Bounded by the database's size because of a full disk: cutting the log (what frees the disk)
/// first copies its pages into the database, which needs room for the pages that are new. A log
/// of 40 MiB on an 8 MiB disk could not be cut after 3 MiB were freed (`tests/it/datadir.rs`),
/// where 1,000 pages could; and a small store gains little from a long log anyway (its hot pages
/// are few). With `durability: full` it stays at the minimum: there every commit is flushed, and
/// a log that grows (rather than being rewound and overwritten) makes each flush also write the
/// file's new size and blocks (10,000 pages took accepted/s from 0.67 to 0.42 of `normal`).
pub(crate) fn checkpoint_pages(page_count: i64, durability: Durability) -> u32 {
    match durability {
        Durability::Full => CHECKPOINT_PAGES_MIN,
        Durability::Normal => {
            (page_count / 4).clamp(i64::from(CHECKPOINT_PAGES_MIN), i64::from(CHECKPOINT_PAGES)) as u32
        }
    }
}

/// What the write-ahead-log hook (run after each commit of the writing connection) and the
/// writer share.
#[derive(Default)]
struct Log {
    /// Pages in the log after the last commit.
    pages: AtomicU32,
    /// Past this, the log is copied into the database (`checkpoint_pages`).
    interval: AtomicU32,
    /// Asks the writer thread for a due checkpoint (`Store::checkpoints_by`); true if it will
    /// run it (`checkpoint_if_due`). Every commit that finds the log past its interval asks
    /// instead of copying the log itself, so no accept, turn or delivery waits for the copy.
    /// Unset (no writer: tools, tests), or false (the writer has stopped): the commit copies it,
    /// as SQLite's own automatic checkpoint would.
    ask: std::sync::OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

/// The checkpoint interval for the database's size now (`checkpoint_pages`).
fn interval_now(conn: &Connection, durability: Durability) -> Result<u32> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok(checkpoint_pages(pages, durability))
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
-- One row, rewritten by `probe` to learn whether writes succeed again.
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deadletters (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    seq INTEGER NOT NULL, body TEXT NOT NULL,
    attempts INTEGER NOT NULL, last_error TEXT NOT NULL, died_ms INTEGER NOT NULL
);
-- The expiry's purge asks whether a session has dead letters (their replays are numbered after
-- the session's last Seq, which it keeps).
CREATE INDEX IF NOT EXISTS deadletters_session ON deadletters (endpoint, user_id, session_id);
-- The console (history.rs, traces.rs). output_log.id is the outbox id of the output; the
-- attempt that delivered it is kept in the row (most outputs have no other), failed ones in
-- attempts.
CREATE TABLE IF NOT EXISTS output_log (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    seq INTEGER NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    last_error TEXT, done_ms INTEGER NOT NULL, dead_id INTEGER, replayed_as INTEGER,
    final_at_ms INTEGER, final_latency_ms INTEGER, final_status INTEGER, final_answer TEXT
);
CREATE INDEX IF NOT EXISTS output_log_endpoint ON output_log (endpoint, id);
CREATE INDEX IF NOT EXISTS output_log_dead ON output_log (dead_id) WHERE dead_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    output_id INTEGER NOT NULL, attempt INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL, status INTEGER, answer TEXT NOT NULL, delivered INTEGER NOT NULL,
    PRIMARY KEY (output_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traces (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL, trace_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_session ON traces (endpoint, user_id, session_id, id);
";

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| {
            let why = match dir.exists() && !dir.is_dir() {
                true => "it is a file, not a directory: point dataDir (or --data-dir) at a directory".to_owned(),
                false => e.to_string(),
            };
            StoreError::new(ErrorKind::Io, format!("cannot create data directory {}: {why}", dir.display()))
        })?;
        let lock = lock_dir(dir)?;
        let mark = dir.join(COPIED_MARK);
        if mark.exists() {
            // Its words for the message; the file's being there is what counts.
            let said = std::fs::read_to_string(&mark)
                .unwrap_or_else(|_| "this store was copied to PostgreSQL by `hookflow store copy`".into());
            return Err(StoreError::new(
                ErrorKind::Data,
                format!(
                    "{}: {}; the replicas own its sessions and outputs now, and a hookflow started on \
                     this copy would send its undelivered outputs a second time. To start on it anyway, \
                     delete {}",
                    dir.display(),
                    said.trim(),
                    mark.display()
                ),
            ));
        }
        let path = dir.join(STORE_FILE);
        let mut conn = Connection::open(&path)
            .map_err(|e| StoreError::new(ErrorKind::Io, format!("cannot open {}: {e}", path.display())))?;
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        let file = |e: rusqlite::Error| unusable(&path, e);
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=OFF;
             PRAGMA cache_size=-2000;
"
        ))
        .map_err(file)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(SCHEMA).map_err(file)?;
        // A write now, so that a file this user may read but not write is said at the start, by
        // name, and not by the first accept.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(file)?;
        conn.execute_batch(&format!("PRAGMA user_version = {version}")).map_err(file)?;
        let log = Arc::new(Log::default());
        log.interval.store(interval_now(&conn, durability)?, Ordering::Relaxed);
        // SQLite's automatic checkpoint, but handed to the writer thread: SQLite's own runs
        // inside the commit that passes the interval, so that commit's accept, turn or
        // delivery would wait for the copy.
        let hook = log.clone();
        conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            let pages = pages.max(0) as u32;
            hook.pages.store(pages, Ordering::Relaxed);
            if pages >= hook.interval.load(Ordering::Relaxed) {
                let asked = hook.ask.get().is_some_and(|ask| ask());
                // As SQLite's default hook: a checkpoint that fails leaves the commit done.
                if !asked && wal.checkpoint().is_ok() {
                    hook.pages.store(0, Ordering::Relaxed);
                }
            }
            Ok(())
        }))?;
        let read_only = || -> Result<Mutex<Connection>> {
            let c = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            c.execute_batch("PRAGMA busy_timeout=5000; PRAGMA cache_size=-1000;")?;
            Ok(Mutex::new(c))
        };
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            reader: read_only()?,
            notes: Mutex::default(),
            durability,
            log,
            _lock: lock,
        })
    }

    /// One transaction of accepts and turns; with `tell`, the outbox rows it adds.
    fn write_batch(
        &self,
        accepts: &[Accept<'_>],
        turns: &[&TurnRecord],
        tell: bool,
    ) -> Result<(Vec<i64>, Option<NewOutbox>)> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ids = inbox::insert(&tx, accepts)?;
        // Every outbox insert goes through this connection, under its lock: the rows above
        // `after` when this transaction commits are exactly the ones it adds.
        let mut new = match tell && turns.iter().any(|t| !t.outputs.is_empty()) {
            true => Some(NewOutbox { after: outbox::max_id(&tx)?, ..NewOutbox::default() }),
            false => None,
        };
        for t in turns {
            turns::write(&tx, t, new.as_mut().map(|n| &mut n.rows))?;
        }
        tx.commit()?;
        if let Some(n) = &mut new {
            n.last = n.rows.last().map_or(n.after, |r| r.id);
        }
        Ok((ids, new))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half done: rusqlite rolls
        // back an open transaction when it is dropped during the unwind.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the noted attempts inside the caller's transaction.
    fn write_attempts(&self, tx: &Connection) -> Result<()> {
        let noted = self.notes().take();
        history::write_attempts(tx, &noted)
    }

    fn notes(&self) -> MutexGuard<'_, history::Notes> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for SqliteStore {
    fn commit_batch(&self, accepts: &[Accept<'_>], turns: &[&TurnRecord]) -> Result<Vec<i64>> {
        Ok(self.write_batch(accepts, turns, false)?.0)
    }

    fn commit_batch_rows(
        &self,
        accepts: &[Accept<'_>],
        turns: &[&TurnRecord],
    ) -> Result<(Vec<i64>, Option<NewOutbox>)> {
        self.write_batch(accepts, turns, true)
    }

    fn pending_inbox(&self) -> Result<Vec<(i64, SessionKey)>> {
        inbox::pending(&self.lock())
    }

    fn load_turn(&self, inbox_id: i64) -> Result<Option<TurnInput>> {
        let mut conn = self.lock();
        // One read transaction for the three reads: one lock round instead of three.
        let tx = conn.transaction()?;
        let input = inbox::load_turn(&tx, inbox_id)?;
        tx.commit()?;
        Ok(input)
    }

    fn outbox_max_id(&self) -> Result<i64> {
        outbox::max_id(&self.read())
    }

    fn outbox_after(
        &self,
        lane: usize,
        lanes: usize,
        endpoint: &str,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        outbox::after(&self.read(), lane, lanes, endpoint, after, upto, limit)
    }

    fn outbox_of_session(&self, key: &SessionKey, after: i64, upto: i64, limit: usize) -> Result<Vec<OutboxRow>> {
        outbox::of_session(&self.read(), key, after, upto, limit)
    }

    fn outbox_len(&self) -> Result<i64> {
        Ok(self.lock().query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?)
    }

    fn delivered(&self, ids: &[i64]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        history::delivered(&tx, ids, &self.notes, crate::util::now_ms())?;
        outbox::delete(&tx, ids)?;
        history::trim(&tx, &self.notes)?;
        Ok(tx.commit()?)
    }

    fn attempt_failed(&self, id: i64, attempts: i64, next_ms: i64, error: &str) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        self.write_attempts(&tx)?;
        outbox::attempt_failed(&tx, id, attempts, next_ms, error)?;
        tx.commit()?;
        Ok(true)
    }

    fn dead(&self, id: i64, attempts: i64, error: &str, now_ms: i64) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        self.write_attempts(&tx)?;
        history::leaving(&tx, &[id], OutputState::Dead, Some(error), now_ms)?;
        outbox::dead(&tx, id, attempts, error, now_ms)?;
        history::died(&tx, id, attempts, &self.notes)?;
        history::trim(&tx, &self.notes)?;
        tx.commit()?;
        Ok(true)
    }

    fn dead_unconfigured(&self, endpoints: &[&str], now_ms: i64) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        history::leaving_unconfigured(&tx, endpoints, now_ms)?;
        let moved = outbox::dead_unconfigured(&tx, endpoints, now_ms)?;
        history::link_dead(&tx)?;
        tx.commit()?;
        Ok(moved)
    }

    fn dead_letters_page(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>> {
        // The reading connection: a page of large bodies must not hold the writer's.
        outbox::dead_letters(&self.read(), after, limit)
    }

    fn replay_dead_letter(&self, id: i64, now_ms: i64, endpoint_ok: &dyn Fn(&str) -> bool) -> Result<Replay> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let replay = replay_logged(&tx, id, now_ms, endpoint_ok)?;
        tx.commit()?;
        Ok(replay)
    }

    fn session(&self, key: &SessionKey) -> Result<Option<SessionRow>> {
        sessions::get(&self.lock(), key)
    }

    fn profile(&self, user_id: &str) -> Result<Option<String>> {
        sessions::profile(&self.read(), user_id)
    }

    fn delete_session(&self, key: &SessionKey) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let had = sessions::forget(&tx, key)?;
        traces::forget(&tx, key)?;
        history::forget(&tx, key)?;
        tx.commit()?;
        Ok(had)
    }

    fn expire_step(
        &self,
        cursor: Option<&SessionKey>,
        before_ms: i64,
        purge_before_ms: i64,
        rows: usize,
    ) -> Result<(usize, Option<SessionKey>)> {
        if cursor.is_none() {
            traces::expire(&self.lock(), before_ms)?;
            history::expire(&self.lock(), crate::util::now_ms() - history::HISTORY_MS)?;
            while sessions::expire_transcript_chunk(&self.lock(), before_ms)? == sessions::EXPIRY_CHUNK {}
        }
        // In chunks, each its own transaction: the writer waits at most one chunk.
        let (mut forgotten, mut after, mut looked) = (0, cursor.cloned(), 0);
        loop {
            let (n, last) = sessions::expire_chunk(&self.lock(), after.as_ref(), before_ms, purge_before_ms)?;
            forgotten += n;
            looked += sessions::EXPIRY_CHUNK;
            match last {
                Some(k) if looked < rows => after = Some(k),
                Some(k) => return Ok((forgotten, Some(k))),
                None => return Ok((forgotten, None)),
            }
        }
    }

    fn transcript(&self, key: &SessionKey) -> Result<Vec<TranscriptLine>> {
        sessions::transcript(&self.lock(), key)
    }

    fn probe(&self) -> Result<()> {
        // One row rewritten: a page appended to the WAL, as any commit does.
        let sql = "INSERT OR REPLACE INTO probe (id, at_ms) VALUES (1, ?1)";
        self.lock().execute(sql, [crate::util::now_ms()])?;
        Ok(())
    }

    fn record_attempt(&self, attempt: AttemptRecord) {
        self.notes().note(attempt);
    }

    fn outputs(&self, filter: &OutputFilter) -> Result<Vec<OutputEntry>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        self.write_attempts(&tx)?;
        let list = history::outputs(&tx, filter)?;
        tx.commit()?;
        Ok(list)
    }

    fn endpoint_counts(&self) -> Result<Vec<EndpointCounts>> {
        history::endpoint_counts(&self.read())
    }

    fn find_sessions(&self, endpoint: Option<&str>, q: &str, limit: usize) -> Result<Vec<SessionSummary>> {
        history::find_sessions(&self.lock(), endpoint, q, limit)
    }

    fn traces(&self, key: &SessionKey) -> Result<Vec<TraceRow>> {
        traces::list(&self.lock(), key)
    }

    fn replay_matching(
        &self,
        filter: &OutputFilter,
        now_ms: i64,
        endpoint_ok: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(i64, Replay)>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut done = Vec::new();
        for id in history::dead_letter_ids(&tx, filter)? {
            done.push((id, replay_logged(&tx, id, now_ms, endpoint_ok)?));
        }
        tx.commit()?;
        Ok(done)
    }

    fn changes(&self) -> Result<i64> {
        // Differs after a commit of any other connection; every write goes through `conn`.
        Ok(self.read().query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    fn checkpoints_by(&self, ask: Box<dyn Fn() -> bool + Send + Sync>) {
        let _ = self.log.ask.set(ask);
    }

    fn checkpoint_if_due(&self) -> Result<()> {
        if self.log.pages.load(Ordering::Relaxed) < self.log.interval.load(Ordering::Relaxed) {
            return Ok(());
        }
        // PASSIVE, as SQLite's own: copies what no reader still needs; the next commit then
        // starts the log again from its beginning.
        self.lock().query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        self.log.pages.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn checkpoint(&self) -> Result<()> {
        // TRUNCATE: copy every frame into the database, wait for readers to leave the log, then
        // cut the -wal file to zero bytes. The automatic checkpoint (PASSIVE) only rewinds the
        // log for reuse, so a log that grew large keeps its space; on a full disk that space is
        // what the next commits need. `busy` = 1 means a reader kept the log from being cut
        // (within busy_timeout); the next checkpoint tries again.
        // It holds the writer's lock, so it waits for readers (another process's: an operator's
        // `sqlite3`, a backup) a moment only, not the busy timeout: every accept would wait too.
        let conn = self.lock();
        conn.busy_timeout(CHECKPOINT_WAIT)?;
        let cut = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?)));
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let (busy, frames): (i64, i64) = cut?;
        // Every 30 s (the writer's check): the interval follows the database as it grows.
        self.log.interval.store(interval_now(&conn, self.durability)?, Ordering::Relaxed);
        self.log.pages.store(0, Ordering::Relaxed);
        if busy != 0 {
            log::debug!("store: the checkpoint could not cut the log ({frames} frames); a reader held it");
        }
        Ok(())
    }
}

/// Takes the exclusive lock on `dir` and writes our pid into the lock file, or says which
/// process has it. The file is never deleted: removing it while another process waits to lock
/// it would let two processes each lock a different file.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let io = |what: &str, e: std::io::Error| {
        StoreError::new(ErrorKind::Io, format!("cannot {what} {}: {e}", path.display()))
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io("open the lock file", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = match pid.trim() {
                "" => "pid unknown".to_owned(),
                p => format!("pid {p}"),
            };
            return Err(StoreError::new(
                ErrorKind::Busy,
                format!(
                    "the data directory {} is in use by another hookflow process ({pid}); one data \
                     directory serves one process: stop the other one first (for `store copy`, or to \
                     serve from it), or give this one another dataDir",
                    dir.display()
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", e)),
    }
    // Our pid, for the message above in the next process that tries. Written over the old one
    // before cutting the rest, so that it needs no new space on a full disk; best effort: the
    // lock, not the pid, is what keeps a second process out.
    let pid = format!("{}\n", std::process::id());
    let written =
        file.rewind().and_then(|()| file.write_all(pid.as_bytes())).and_then(|()| file.set_len(pid.len() as u64));
    if let Err(e) = written {
        log::warn!("cannot write the pid into {}: {e}", path.display());
    }
    Ok(file)
}

/// Replays a dead letter and notes in the delivery log which output took its place.
fn replay_logged(conn: &Connection, id: i64, now_ms: i64, endpoint_ok: &dyn Fn(&str) -> bool) -> Result<Replay> {
    let replay = outbox::replay(conn, id, now_ms, endpoint_ok)?;
    if let Replay::Queued { id: new_id, .. } = replay {
        history::replayed(conn, id, new_id)?;
    }
    Ok(replay)
}

/// The session key stored in three columns from `at`.
fn key_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SessionKey> {
    Ok(SessionKey { endpoint: r.get(at)?, user_id: r.get(at + 1)?, session_id: r.get(at + 2)? })
}

#[cfg(test)]
mod tests;
