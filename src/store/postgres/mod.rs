//! The PostgreSQL backend: the same tables as SQLite plus per-session claims (`queues`), shared by
//! every replica of a deployment (replicas.md). Every SQL statement of this backend lives in this
//! folder: `schema.rs` (tables, migrations), `connect.rs` (driver config, TLS, `check --connect`),
//! `pool.rs` (connections, prepared statements), `claims.rs` (this replica's side of the
//! claims, the shared counts, the listener), `batch.rs` (accepting messages, committing the writer's batches of turns), `queue.rs`
//! (claiming sessions, loading a turn, renewing and releasing leases), `outbox.rs` (claiming and
//! settling deliveries, dead letters), `sessions.rs` (sessions, expiry, transcripts),
//! `console.rs` (the delivery log and traces), `import.rs` (`store copy`).
//!
//! # Work is claimed by session
//!
//! The design of the PostgreSQL job queues (River, Oban, graphile-worker, pg-boss) applied per
//! session, so that order needs no global lock:
//! - **Accept** numbers a session's messages while holding its `queues` row (`next_msg`), so two
//!   replicas accepting for one session number them in commit order. Nothing is ordered by a
//!   global serial id: such ids are taken before commit, so they commit out of order.
//! - **Claim**: a replica takes runnable sessions (`pending > 0`, no live lease) with
//!   `FOR UPDATE SKIP LOCKED` into a lease (`run_owner`, `run_fence`, `run_until`) and runs their
//!   head message. The turn runs outside any transaction; its commit (state, outputs, inbox row)
//!   is one transaction whose first statement checks the fence: 0 rows means the lease was lost
//!   (the replica was cut off and another took over) and the result is dropped.
//! - **Deliver**: a second lease per session (`dl_*`) on its head output, so only the head of a
//!   session is in flight, from one replica; it is released when the head is delivered, retried
//!   later, or dead.
//! - **Renew**: a heartbeat renews this replica's leases every third of `leaseSeconds`. When it
//!   cannot for longer than two thirds of the lease, the replica stops committing under them
//!   (`valid_until`), before another replica can take them over.
//! - **Wake**: commits `NOTIFY hookflow` with the replica's name; every replica `LISTEN`s on one
//!   connection (ignoring its own name: it wakes its own threads directly) and also polls every
//!   second, so a lost notification costs at most a second.
//! - **Vacuum**: the claims leave old row versions of `queues`, `inbox` and `outbox` behind at
//!   every message; a replica vacuums them, on a connection of its own, once PostgreSQL counts
//!   1,000 more than the last vacuum left (`queue::Vacuumer`), instead of waiting for
//!   autovacuum's once a minute.
//! - **Shortcuts** on the hot path (README, Replicas): accepts are autocommit statements of the
//!   http threads, grouped (`engine/direct.rs`); a turn whose session has more messages keeps
//!   the lease in its commit and its next message runs at once (`batch::chain`); a claim or such
//!   a commit reads the next turn's input too (`queue::heads`, `PgStore::preload`); lanes claim
//!   up to 64 heads at a time (fewer for a slow webhook, `delivery/claimed.rs`).
//! - **Down webhooks**: a head held for a webhook that is down goes back with `last_error`
//!   `HELD` and its hold's end as due time; when a lane sees the webhook answer again, `unhold`
//!   makes them due at once, marked `UNHELD`, and a replica that still counts the webhook down
//!   sends such a head rather than holding it again (`Hold::Answered`).

mod batch;
mod claims;
mod connect;
mod console;
mod import;
mod outbox;
mod pool;
mod queue;
pub mod schema;
mod sessions;

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use connect::{check_connect, driver_config, target_of};
use connect::{replica_name, rustls_config};

/// `store.caFile`, read and parsed as a replica will (`hookflow check`, and `serve` before it
/// opens the store): `Err` names the setting and the file.
pub fn check_ca_file(pg: &crate::config::Postgres) -> std::result::Result<(), String> {
    rustls_config(pg).map(|_| ()).map_err(|e| e.message)
}
pub use import::import;
use pool::Tx;
use pool::{Connector, Pool, Pooled};

use crate::config::Postgres;
use crate::domain::{
    AttemptRecord, DeadLetter, EndpointCounts, OutboxRow, OutputEntry, OutputFilter, OutputState, Replay, SessionKey,
    SessionRow, SessionSummary, TraceRow, TranscriptLine, TurnInput, TurnRecord,
};
use crate::store::{Accept, Claims, ErrorKind, Result, Store, StoreError};

/// How long `open` keeps trying to reach the database before giving up (exit 2; systemd restarts).
const START_WAIT: Duration = Duration::from_secs(15);
/// The channel of wake-ups between replicas.
pub const CHANNEL: &str = "hookflow";

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        let kind = match e.code() {
            Some(c) if *c == SqlState::DISK_FULL => ErrorKind::Full,
            Some(c)
                if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::LOCK_NOT_AVAILABLE =>
            {
                ErrorKind::Busy
            }
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => ErrorKind::Io,
            Some(_) => ErrorKind::Other,
            // No SQL state: the connection failed or closed (the database is unreachable).
            None => ErrorKind::Io,
        };
        let message = match e.as_db_error() {
            Some(db) => format!("PostgreSQL: {}", db.message()),
            None => format!("PostgreSQL: {}", crate::util::with_causes(&e)),
        };
        StoreError::new(kind, message)
    }
}

/// The session key stored in three columns from `at`.
pub(super) fn key_at(r: &postgres::Row, at: usize) -> SessionKey {
    SessionKey { endpoint: r.get(at), user_id: r.get(at + 1), session_id: r.get(at + 2) }
}

/// Free text as a `text` column can hold it. PostgreSQL refuses U+0000 in text (SQLite keeps
/// it), and an answer, an error or a transcript line that holds one would fail the whole
/// statement, with every other row of its batch. So free text stores it as U+FFFD, the
/// replacement character. Ids are refused at intake when they hold one (`store copy` renames those
/// a SQLite store kept from before, `SessionKey::storable_form`), and JSON columns escape it.
pub(super) fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') { s.replace('\0', "\u{fffd}").into() } else { s.into() }
}

/// The PostgreSQL store of one replica; cheap to share behind an `Arc`.
pub struct PgStore {
    pool: Pool,
    /// This replica's name in leases, logs and metrics: host, pid and a random part.
    owner: String,
    lease_ms: i64,
    /// Run leases held: session → fence.
    runs: Mutex<HashMap<SessionKey, i64>>,
    /// Delivery leases held: outbox id of the head being delivered → (session, fence).
    deliveries: Mutex<HashMap<i64, (SessionKey, i64)>>,
    /// Leases are trusted until then: the last successful renewal plus two thirds of the lease.
    valid_until: Mutex<Instant>,
    /// Delivery attempts noted and not yet written (see `Store::record_attempt`).
    notes: Mutex<Vec<AttemptRecord>>,
    /// Turn inputs read with the claim or commit that handed their session to this replica,
    /// by inbox id, until a worker loads them (`load_turn`): one round trip less per message.
    preloaded: Mutex<HashMap<i64, TurnInput>>,
    /// The messages waiting in the database as last counted, when, and plus this replica's
    /// accepts since (see `Claims::queued`).
    backlog: Mutex<Option<(Instant, usize)>>,
    /// Where `host:port` was (for messages).
    pub target: String,
}

/// Most turn inputs kept between a claim and their load (see `PgStore::preload`).
const PRELOADED: usize = 4096;

/// A session's next message: (inbox id, session).
type Head = (i64, SessionKey);

/// How long a count of the waiting messages stands in for a new one (`limits.queueCapacity`):
/// counting is a scan of the inbox, and the http threads ask before every group of accepts.
const BACKLOG_FOR: Duration = Duration::from_millis(100);

/// What to do about a connection the server refused (a login, a database, TLS), when it was
/// that: those are said at once, not retried as an unreachable server is.
fn refusal_fix(e: &StoreError) -> Option<&'static str> {
    let m = e.message.as_str();
    if m.contains("password authentication failed") || m.contains("authentication failed") {
        Some("check the user and password in store.url")
    } else if m.contains("database") && m.contains("does not exist") {
        Some("create the database (createdb NAME), or fix its name in store.url")
    } else if m.contains("role") && m.contains("does not exist") {
        Some("create the role, or fix the user in store.url")
    } else if m.contains("pg_hba.conf") {
        Some("allow this host, user and database in the server's pg_hba.conf")
    } else if m.contains("does not support TLS") {
        // The stricter of store.tls and the URL's sslmode wins: both must ask for less.
        Some(
            "turn TLS on in the server, or ask for less: store.tls and any sslmode in the URL \"prefer\" or \"disable\"",
        )
    } else {
        None
    }
}

impl PgStore {
    /// Connects (trying for up to `START_WAIT`), migrates the schema, and keeps the pool.
    pub fn open(pg: &Postgres) -> Result<PgStore> {
        let (config, tls) = driver_config(pg)?;
        let connector = if tls {
            Connector::Tls(tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config(pg)?))
        } else {
            Connector::Plain
        };
        let target = target_of(&config);
        let pool =
            Pool { config, connector, size: pg.pool, lease: pg.lease, state: Mutex::default(), freed: Condvar::new() };
        let deadline = Instant::now() + START_WAIT;
        let mut first = loop {
            match pool.connect_within(deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1))) {
                Ok(c) => break c,
                // The server answered, and no: waiting will not change its mind.
                Err(e) if let Some(fix) = refusal_fix(&e) => {
                    return Err(StoreError::new(
                        ErrorKind::Io,
                        format!("PostgreSQL at {target} refused this replica: {}; {fix}", e.message),
                    ));
                }
                Err(e) if Instant::now() < deadline => {
                    log::warn!("cannot reach PostgreSQL at {target} yet ({e}); trying again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(StoreError::new(
                        ErrorKind::Io,
                        format!("cannot reach PostgreSQL at {target} within {}s: {}", START_WAIT.as_secs(), e.message),
                    ));
                }
            }
        };
        let before = schema::migrate(&mut first)?;
        if before < schema::VERSION {
            log::info!("PostgreSQL at {target}: schema migrated from version {before} to {}", schema::VERSION);
        }
        drop(first);
        let lease = pg.lease;
        Ok(PgStore {
            pool,
            owner: replica_name(),
            lease_ms: lease.as_millis() as i64,
            runs: Mutex::default(),
            deliveries: Mutex::default(),
            valid_until: Mutex::new(Instant::now() + lease * 2 / 3),
            notes: Mutex::default(),
            backlog: Mutex::default(),
            preloaded: Mutex::default(),
            target,
        })
    }

    fn conn(&self) -> Result<Pooled<'_>> {
        self.pool.get()
    }

    /// True while this replica's leases can be trusted (renewed recently enough).
    fn leases_valid(&self) -> bool {
        Instant::now() < *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<SessionKey, i64>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliveries(&self) -> MutexGuard<'_, HashMap<i64, (SessionKey, i64)>> {
        self.deliveries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a claimed head's input for `load_turn`. Bounded: an input whose turn never loads
    /// it (the session was given back, say) would otherwise stay; past the bound they are all
    /// dropped and loaded from the database.
    fn preload(&self, input: TurnInput) {
        let mut held = self.preloaded.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() >= PRELOADED {
            held.clear();
        }
        held.insert(input.row.id, input);
    }

    fn take_notes(&self) -> Vec<AttemptRecord> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs the reads of `f` on one snapshot (`Conn::snapshot`). (A read-only snapshot is never
    /// aborted for a conflict: nothing to try again.)
    fn in_snapshot<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let mut tx = conn.snapshot()?;
        let v = f(&mut tx)?;
        tx.commit()?;
        Ok(v)
    }

    /// Runs `f` in one transaction, again (up to 3 times) when PostgreSQL aborted it for a
    /// deadlock or a serialization failure: both are transient, and nothing was written.
    fn in_tx<T>(&self, mut f: impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let mut tries = 0;
        loop {
            let mut tx = conn.tx()?;
            let result = f(&mut tx).and_then(|v| tx.commit().map(|()| v));
            match result {
                Err(e) if e.kind == ErrorKind::Busy && tries < 3 => tries += 1,
                other => return other,
            }
        }
    }
}

impl PgStore {
    /// `commit_batch`, and with `chain_ms` `commit_turns`: the accept ids, the chained heads and
    /// the sessions whose turns were dropped (a lost lease).
    fn commit(
        &self,
        accepts: &[Accept<'_>],
        turns: &[&TurnRecord],
        chain_ms: Option<i64>,
    ) -> Result<(Vec<i64>, Vec<Head>, Vec<SessionKey>)> {
        let valid = self.leases_valid();
        let runs = self.runs().clone();
        let done = self.in_tx(|tx| batch::commit_batch(tx, &self.owner, accepts, turns, &runs, valid, chain_ms))?;
        self.count_accepted(accepts.len());
        // Only the lease that was released: the claimer may have claimed the session anew
        // (a new fence) between the commit and here.
        let mut held = self.runs();
        for (key, fence) in done.released {
            if held.get(&key) == Some(&fence) {
                held.remove(&key);
            }
        }
        // A turn dropped under a lost lease is forgotten here too: a lease this replica does not
        // track is not renewed, so it expires and the session is claimed again.
        for t in turns {
            if t.checkpoint.is_none() && !valid {
                held.remove(&t.key);
            }
        }
        let mut next = Vec::with_capacity(done.chained.len());
        for (key, fence, head) in done.chained {
            held.insert(key.clone(), fence);
            next.push((head.row.id, key));
            self.preload(head);
        }
        Ok((done.ids, next, done.dropped))
    }

    /// Writes the fate of output `id`, which was not delivered (`write`, given its lease), with its
    /// attempt notes, if this replica still holds its delivery claim; the notes of other outputs
    /// are written either way. False when the claim was taken over: the fate is the other
    /// replica's to write.
    fn settle_failed(
        &self,
        id: i64,
        write: impl Fn(&mut Tx<'_>, &[Option<(SessionKey, i64)>]) -> Result<()>,
    ) -> Result<bool> {
        let leases = self.lease_of(&[id]);
        let (mine, others): (Vec<_>, Vec<_>) = self.take_notes().into_iter().partition(|n| n.output_id == id);
        let result = self.in_tx(|tx| {
            console::write_attempts(tx, &others)?;
            if !outbox::still_held(tx, &self.owner, &leases[0])? {
                return Ok(false);
            }
            console::write_attempts(tx, &mine)?;
            write(tx, &leases)?;
            Ok(true)
        });
        self.forget_deliveries(&[id]);
        result
    }

    /// Adds this replica's own accepts to the cached count of waiting messages (`queued`).
    fn count_accepted(&self, n: usize) {
        if let Some((_, waiting)) = self.backlog.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            *waiting += n;
        }
    }

    /// Runs `f` on a connection without a transaction (`Conn::auto`): for one statement, or
    /// reads that need no common snapshot.
    fn in_auto<T>(&self, mut f: impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        // As `in_tx`: a statement aborted for a deadlock or a serialization failure wrote nothing.
        let mut tries = 0;
        loop {
            match f(&mut conn.auto()) {
                Err(e) if e.kind == ErrorKind::Busy && tries < 3 => tries += 1,
                other => return other,
            }
        }
    }
}

impl Store for PgStore {
    fn commit_batch(&self, accepts: &[Accept<'_>], turns: &[&TurnRecord]) -> Result<Vec<i64>> {
        if turns.is_empty() {
            let ids = self.in_auto(|tx| batch::accept_only(tx, &self.owner, accepts))?;
            self.count_accepted(accepts.len());
            return Ok(ids);
        }
        let (ids, _, _) = self.commit(accepts, turns, None)?;
        Ok(ids)
    }

    fn commit_turn(&self, turn: &TurnRecord) -> Result<()> {
        let fence = self.runs().get(&turn.key).copied();
        let (_, _, dropped) = self.commit(&[], &[turn], None)?;
        if dropped.is_empty() {
            return Ok(());
        }
        // A checkpoint (the turn then calls out) or a turn written on its own: another replica
        // runs the session now, so this one must not go on with it, nor renew the lease (the
        // one it had: the claimer may have claimed the session anew meanwhile, a new fence).
        let mut held = self.runs();
        if held.get(&turn.key).copied() == fence {
            held.remove(&turn.key);
        }
        drop(held);
        Err(StoreError::new(
            ErrorKind::Lost,
            format!("{}: this replica lost its claim on the session; another replica runs it now", turn.key.endpoint),
        ))
    }

    fn pending_inbox(&self) -> Result<Vec<(i64, SessionKey)>> {
        self.in_tx(queue::pending)
    }

    fn load_turn(&self, inbox_id: i64) -> Result<Option<TurnInput>> {
        // Taken once: a later load of the same message (a resume after a checkpoint) reads the
        // row as the checkpoint left it.
        if let Some(input) = self.preloaded.lock().unwrap_or_else(|p| p.into_inner()).remove(&inbox_id) {
            return Ok(Some(input));
        }
        self.in_auto(|tx| queue::load_turn(tx, inbox_id))
    }

    fn outbox_max_id(&self) -> Result<i64> {
        self.in_auto(outbox::max_id)
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
        self.in_tx(|tx| outbox::after(tx, lane, lanes, endpoint, after, upto, limit))
    }

    fn outbox_of_session(&self, key: &SessionKey, after: i64, upto: i64, limit: usize) -> Result<Vec<OutboxRow>> {
        self.in_tx(|tx| outbox::of_session(tx, key, after, upto, limit))
    }

    fn outbox_len(&self) -> Result<i64> {
        self.in_auto(|tx| Ok(tx.query_opt("SELECT count(*) FROM outbox", &[])?.map_or(0, |r| r.get(0))))
    }

    fn delivered(&self, ids: &[i64]) -> Result<()> {
        let notes = self.take_notes();
        let leases = self.lease_of(ids);
        let now = crate::util::now_ms();
        let result = self.in_tx(|tx| {
            console::delivered(tx, ids, &notes, now)?;
            outbox::settle_delivered(tx, &self.owner, ids, &leases)
        });
        // Whatever the outcome: a lease whose write failed is left to expire (not renewed), and
        // the head is then claimed and sent again.
        self.forget_deliveries(ids);
        result
    }

    fn attempt_failed(&self, id: i64, attempts: i64, next_ms: i64, error: &str) -> Result<bool> {
        self.settle_failed(id, |tx, leases| {
            let error = &text(error);
            outbox::settle(tx, &self.owner, &[id], leases, outbox::Fate::Retry { attempts, next_ms, error })
        })
    }

    fn dead(&self, id: i64, attempts: i64, error: &str, now_ms: i64) -> Result<bool> {
        self.settle_failed(id, |tx, leases| {
            let error = &text(error);
            console::leaving(tx, &[id], OutputState::Dead, Some(error), now_ms)?;
            outbox::settle(tx, &self.owner, &[id], leases, outbox::Fate::Dead { attempts, error, now_ms })?;
            console::died(tx, id, attempts)
        })
    }

    fn dead_unconfigured(&self, endpoints: &[&str], now_ms: i64) -> Result<usize> {
        let names: Vec<String> = endpoints.iter().map(|s| (*s).to_owned()).collect();
        self.in_tx(|tx| {
            console::leaving_unconfigured(tx, &names, now_ms)?;
            let moved = outbox::dead_unconfigured(tx, &names, now_ms)?;
            console::link_dead(tx)?;
            Ok(moved)
        })
    }

    fn dead_letters_page(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>> {
        self.in_tx(|tx| outbox::dead_letters(tx, after, limit))
    }

    fn replay_dead_letter(&self, id: i64, now_ms: i64, endpoint_ok: &dyn Fn(&str) -> bool) -> Result<Replay> {
        self.in_tx(|tx| replay_logged(tx, id, now_ms, endpoint_ok))
    }

    fn session(&self, key: &SessionKey) -> Result<Option<SessionRow>> {
        self.in_auto(|tx| sessions::get(tx, key))
    }

    fn profile(&self, user_id: &str) -> Result<Option<String>> {
        self.in_auto(|tx| sessions::profile(tx, user_id))
    }

    fn delete_session(&self, key: &SessionKey) -> Result<bool> {
        self.in_tx(|tx| {
            let had = sessions::forget(tx, key)?;
            console::forget(tx, key)?;
            Ok(had)
        })
    }

    fn expire_step(
        &self,
        cursor: Option<&SessionKey>,
        before_ms: i64,
        purge_before_ms: i64,
        rows: usize,
    ) -> Result<(usize, Option<SessionKey>)> {
        sessions::expire_step(self, cursor, before_ms, purge_before_ms, rows)
    }

    fn transcript(&self, key: &SessionKey) -> Result<Vec<TranscriptLine>> {
        self.in_tx(|tx| sessions::transcript(tx, key))
    }

    fn record_attempt(&self, attempt: AttemptRecord) {
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        // The same bound as SQLite's: every fate written takes the notes along, so this is not
        // reached unless the database refuses writes for long.
        if notes.len() >= crate::store::sqlite::MAX_NOTED {
            log::warn!("store: too many delivery attempts noted and not written; one is left out of the delivery log");
            return;
        }
        notes.push(attempt);
    }

    fn outputs(&self, filter: &OutputFilter) -> Result<Vec<OutputEntry>> {
        let notes = self.take_notes();
        if !notes.is_empty() {
            self.in_tx(|tx| console::write_attempts(tx, &notes))?;
        }
        self.in_snapshot(|tx| console::outputs(tx, filter))
    }

    fn endpoint_counts(&self) -> Result<Vec<EndpointCounts>> {
        self.in_tx(console::endpoint_counts)
    }

    fn find_sessions(&self, endpoint: Option<&str>, q: &str, limit: usize) -> Result<Vec<SessionSummary>> {
        self.in_tx(|tx| console::find_sessions(tx, endpoint, q, limit))
    }

    fn traces(&self, key: &SessionKey) -> Result<Vec<TraceRow>> {
        self.in_tx(|tx| console::traces(tx, key))
    }

    fn replay_matching(
        &self,
        filter: &OutputFilter,
        now_ms: i64,
        endpoint_ok: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(i64, Replay)>> {
        self.in_tx(|tx| {
            let mut done = Vec::new();
            for id in console::dead_letter_ids(tx, filter)? {
                done.push((id, replay_logged(tx, id, now_ms, endpoint_ok)?));
            }
            // Oldest first, as the SQLite backend answers.
            done.sort_by_key(|(id, _)| *id);
            Ok(done)
        })
    }

    fn changes(&self) -> Result<i64> {
        self.in_tx(console::changes)
    }

    fn probe(&self) -> Result<()> {
        let now = crate::util::now_ms();
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO probe (id, at_ms) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at_ms = $1",
                &[&now],
            )
            .map(drop)
        })
    }

    fn claims(&self) -> Option<&dyn Claims> {
        Some(self)
    }

    fn holds_nul(&self) -> bool {
        false
    }
}

/// Replays a dead letter and notes in the delivery log which output took its place.
fn replay_logged(tx: &mut Tx<'_>, id: i64, now_ms: i64, endpoint_ok: &dyn Fn(&str) -> bool) -> Result<Replay> {
    let replay = outbox::replay(tx, id, now_ms, endpoint_ok)?;
    if let Replay::Queued { id: new_id, .. } = replay {
        console::replayed(tx, id, new_id)?;
    }
    Ok(replay)
}

#[cfg(test)]
mod tests;
