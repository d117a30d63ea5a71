//! The store seam: everything the data path asks of durable storage, as one trait, and the
//! backends behind it (`sqlite`, the embedded default; `postgres`, shared by replicas, which
//! also implements [`Claims`]).
//!
//! A trait object (`Arc<dyn Store>`) rather than an enum of backends: the threads hold the
//! store through this one interface and never name a backend, a backend is a folder of its own
//! that can be compiled in or out, and a test can run the same scenario on any backend by
//! choosing it in one place. The cost is one indirect call per storage operation, nothing
//! beside a transaction.
//!
//! The contract every backend keeps (the invariants of `lib.rs` rest on it):
//! - `commit_batch` is atomic: accepted messages, and each turn's state, outputs and inbox row,
//!   are all on disk or none are.
//! - Outputs of a session are numbered `seq + 1, seq + 2, …` in commit order, and outbox ids
//!   grow in commit order and are never reused.
//! - Reads of the outbox bounded by `outbox_max_id` see a fixed set of rows.

mod log;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use crate::config::{Config, StoreKind};
use crate::domain::{
    AttemptRecord, DeadLetter, EndpointCounts, JobKind, NewOutbox, OutboxRow, OutputEntry, OutputFilter, Replay,
    SessionKey, SessionRow, SessionSummary, TraceRow, TranscriptLine, TurnInput, TurnRecord,
};

/// Opens the store the config names: the one place that picks a backend (SQLite in `dataDir`,
/// or PostgreSQL at `store.url`).
pub fn open(config: &Config) -> Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreKind::Sqlite => Arc::new(sqlite::SqliteStore::open(&config.data_dir, config.durability)?),
        StoreKind::Postgres(pg) => Arc::new(postgres::PgStore::open(pg)?),
    })
}

/// A whole store's durable contents, as `hookflow store copy` moves them from SQLite to
/// PostgreSQL (read by `sqlite::export`, written by `postgres::import`). Rows are in their
/// store's id order, which is each session's order.
#[derive(Debug, Default)]
pub struct Export {
    /// Queued messages: session, kind, payload, resume record.
    pub inbox: Vec<(SessionKey, JobKind, String, Option<String>)>,
    /// Sessions: key, state (`None`: forgotten, only the Seq and counts kept), seq, messages,
    /// updated_ms.
    pub sessions: Vec<(SessionKey, Option<String>, i64, i64, i64)>,
    /// Profiles: userId, profile, updated_ms.
    pub profiles: Vec<(String, String, i64)>,
    /// Undelivered outputs.
    pub outbox: Vec<ExportedOutput>,
    /// Dead letters and when they died.
    pub dead_letters: Vec<(ExportedOutput, i64)>,
    /// Transcript lines, each with its session.
    pub transcripts: Vec<(SessionKey, TranscriptLine)>,
}

/// An output or dead letter in an [`Export`].
#[derive(Debug)]
pub struct ExportedOutput {
    pub key: SessionKey,
    pub seq: i64,
    pub body: String,
    pub not_before_ms: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// What kind of failure a store operation had, so callers can tell a full disk from a busy one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The disk (or quota) is full: writes fail until space is freed.
    Full,
    /// Another process or connection holds the store.
    Busy,
    /// The store cannot be opened, read or written (permissions, I/O error, a missing file).
    Io,
    /// The data is not what this version expects (corrupt, or written by a newer version).
    Data,
    /// Replicas: this replica no longer holds the session's claim (another took it over while
    /// it was cut off or stalled), so the turn was not written; it runs where the session is
    /// claimed now.
    Lost,
    /// Replicas: the database has not answered for two thirds of a lease (a frozen server, or a
    /// network that drops packets without a reset): nothing failed, statements just wait.
    Unanswered,
    /// Anything else.
    Other,
}

/// A store failure: its kind and a message from the backend or the file system.
#[derive(Debug, Clone)]
pub struct StoreError {
    pub kind: ErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StoreError {
        StoreError { kind, message: message.into() }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One accepted message to queue: its session, kind and payload (JSON of `wire::Accepted`).
pub type Accept<'a> = (&'a SessionKey, JobKind, &'a str);

/// Durable storage of the data path: the inbound queue, sessions and profiles, the outbox, dead
/// letters and transcripts.
pub trait Store: Send + Sync {
    // --- the inbound queue and turns -----------------------------------------------------------

    /// One transaction for a writer batch: accepted messages (their ids are returned, in order)
    /// and finished turns (see [`TurnRecord`]).
    fn commit_batch(&self, accepts: &[Accept<'_>], turns: &[&TurnRecord]) -> Result<Vec<i64>>;

    /// As `commit_batch`, for the writer and inline commits: with the outbox rows the batch
    /// added when the backend can tell them exactly (they go to the sender lanes, which need
    /// not read them back).
    fn commit_batch_rows(
        &self,
        accepts: &[Accept<'_>],
        turns: &[&TurnRecord],
    ) -> Result<(Vec<i64>, Option<NewOutbox>)> {
        Ok((self.commit_batch(accepts, turns)?, None))
    }

    /// Queues an accepted message on its own; returns its id once it is committed.
    fn accept(&self, key: &SessionKey, kind: JobKind, payload: &str) -> Result<i64> {
        Ok(self.commit_batch(&[(key, kind, payload)], &[])?[0])
    }

    /// Writes one turn (a checkpoint) in its own transaction.
    fn commit_turn(&self, turn: &TurnRecord) -> Result<()> {
        self.commit_batch(&[], &[turn]).map(drop)
    }

    /// Every queued message, in acceptance order (for the start-up scan).
    fn pending_inbox(&self) -> Result<Vec<(i64, SessionKey)>>;

    /// What a turn needs: the message, its session (if any) and the user's profile.
    fn load_turn(&self, inbox_id: i64) -> Result<Option<TurnInput>>;

    // --- the outbox ----------------------------------------------------------------------------

    /// The highest outbox id so far (0 when none).
    fn outbox_max_id(&self) -> Result<i64>;

    /// Outputs of `endpoint` for sender `lane` (of `lanes`, by `SessionKey::lane_hash`) with an
    /// id in `(after, upto]`, in id order, at most `limit`.
    fn outbox_after(
        &self,
        lane: usize,
        lanes: usize,
        endpoint: &str,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>>;

    /// Outputs of one session with an id in `(after, upto]`, in id order, at most `limit`.
    fn outbox_of_session(&self, key: &SessionKey, after: i64, upto: i64, limit: usize) -> Result<Vec<OutboxRow>>;

    /// Number of outputs waiting.
    fn outbox_len(&self) -> Result<i64>;

    /// Removes delivered outputs, in one transaction.
    fn delivered(&self, ids: &[i64]) -> Result<()>;

    /// Records a failed attempt that will be retried at `next_ms`. False when nothing was
    /// written: replicas, another replica took the output's delivery over meanwhile.
    fn attempt_failed(&self, id: i64, attempts: i64, next_ms: i64, error: &str) -> Result<bool>;

    // --- dead letters --------------------------------------------------------------------------

    /// Moves an output to the dead letters. False when nothing was written, as for
    /// `attempt_failed`.
    fn dead(&self, id: i64, attempts: i64, error: &str, now_ms: i64) -> Result<bool>;

    /// Moves the outputs of endpoints that are not in `endpoints` to the dead letters (they can
    /// be replayed once the endpoint is back); returns how many.
    fn dead_unconfigured(&self, endpoints: &[&str], now_ms: i64) -> Result<usize>;

    /// Dead letters with an id above `after`, oldest first, at most `limit`.
    fn dead_letters_page(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>>;

    /// All dead letters, oldest first.
    fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.dead_letters_page(0, i64::MAX as usize)
    }

    /// Puts a dead letter back in the outbox as the next output of its session (a new Seq),
    /// when `endpoint_ok` accepts its endpoint (no sender reads outputs of other endpoints).
    fn replay_dead_letter(&self, id: i64, now_ms: i64, endpoint_ok: &dyn Fn(&str) -> bool) -> Result<Replay>;

    // --- sessions and transcripts --------------------------------------------------------------

    /// The stored session, if any.
    fn session(&self, key: &SessionKey) -> Result<Option<SessionRow>>;

    /// The user's stored profile (JSON), if any (`contactProfiles`).
    fn profile(&self, user_id: &str) -> Result<Option<String>>;

    /// Forgets a session's state and transcript, so its next message starts fresh; true if it
    /// had state. Its output counter is kept, so `X-Hookflow-Seq` stays strictly increasing.
    /// Queued messages and undelivered outputs stay.
    fn delete_session(&self, key: &SessionKey) -> Result<bool>;

    /// One bounded step of expiry: of the sessions after `cursor` (in key order; `None` starts a
    /// sweep, and also drops transcript lines and console records older than `before_ms`), at
    /// most about `rows` are looked at; those untouched since `before_ms` are forgotten, and
    /// counter-only rows untouched since `purge_before_ms` (with no output queued) are deleted.
    /// Returns how many were forgotten and the cursor to go on from (`None`: the sweep is done).
    /// Steps keep the cost of expiry flat however large the store: a sweep is spread over time.
    fn expire_step(
        &self,
        cursor: Option<&SessionKey>,
        before_ms: i64,
        purge_before_ms: i64,
        rows: usize,
    ) -> Result<(usize, Option<SessionKey>)>;

    /// A whole sweep of `expire_step`s at once (for tests and tools); returns how many sessions
    /// were forgotten.
    fn expire_sessions(&self, before_ms: i64, purge_before_ms: i64) -> Result<usize> {
        let (mut forgotten, mut cursor) = (0, None);
        loop {
            let (n, next) = self.expire_step(cursor.as_ref(), before_ms, purge_before_ms, usize::MAX)?;
            forgotten += n;
            match next {
                Some(k) => cursor = Some(k),
                None => return Ok(forgotten),
            }
        }
    }

    /// The transcript of a session, in the order of its turns.
    fn transcript(&self, key: &SessionKey) -> Result<Vec<TranscriptLine>>;

    // --- the console's history (console.md) -----------------------------------------------------

    /// Notes a delivery attempt for the delivery log. It costs no transaction of its own: it is
    /// written with the lane's next write of that output's fate (`delivered`, `attempt_failed`,
    /// `dead`) or before the next read of the log, so a crash may lose the last few notes (the
    /// outputs themselves are not affected).
    fn record_attempt(&self, attempt: AttemptRecord);

    /// The delivery log, newest first: outputs waiting in the outbox, and those delivered, dead
    /// or replayed that the bounded history still holds, with their attempts.
    fn outputs(&self, filter: &OutputFilter) -> Result<Vec<OutputEntry>>;

    /// Outputs waiting and dead letters, per endpoint that has any.
    fn endpoint_counts(&self) -> Result<Vec<EndpointCounts>>;

    /// Sessions (with state or not) whose userId or sessionId contains `q` (any, when empty),
    /// most recently changed first, at most `limit`.
    fn find_sessions(&self, endpoint: Option<&str>, q: &str, limit: usize) -> Result<Vec<SessionSummary>>;

    /// The traces kept of the session's last turns, oldest first.
    fn traces(&self, key: &SessionKey) -> Result<Vec<TraceRow>>;

    /// Replays (as `replay_dead_letter`) the dead letters matching `filter`'s endpoint, userId and
    /// sessionId, oldest first, at most `filter.limit`, in one transaction; each with its result.
    fn replay_matching(
        &self,
        filter: &OutputFilter,
        now_ms: i64,
        endpoint_ok: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(i64, Replay)>>;

    /// A value that differs after any commit of the store: the console polls it to know when
    /// to read again.
    fn changes(&self) -> Result<i64>;

    // --- health --------------------------------------------------------------------------------

    /// A small real write, to learn whether the store takes writes again after a failure (an
    /// empty transaction would succeed on a full disk: it writes nothing).
    fn probe(&self) -> Result<()>;

    /// Gives back the space a write-ahead log holds and cuts it to nothing, where the backend
    /// has one (called after a failed write and from time to time); a no-op otherwise.
    fn checkpoint(&self) -> Result<()> {
        Ok(())
    }

    /// Copies the write-ahead log into the database if it has grown past its interval; run by
    /// the writer thread when a commit asked for it (`checkpoints_by`), so that no accept, turn
    /// or delivery waits inside its own commit for the copy. A no-op where there is no such log.
    fn checkpoint_if_due(&self) -> Result<()> {
        Ok(())
    }

    /// Lets every commit hand a due checkpoint to the writer thread (`ask` returns true if it
    /// will run it) instead of running it inside the commit. A no-op where there is no such log.
    fn checkpoints_by(&self, _ask: Box<dyn Fn() -> bool + Send + Sync>) {}

    /// The claims of a store shared by replicas (`None`: this process is the only one, and the
    /// engine and delivery keep their queues in memory).
    fn claims(&self) -> Option<&dyn Claims> {
        None
    }

    /// Whether an id with U+0000 can be stored and looked up. SQLite's text holds it;
    /// PostgreSQL's cannot, and a statement with one fails. New messages with one are refused
    /// on every store (`wire`), but a SQLite store may keep sessions from before, which its
    /// admin API still finds.
    fn holds_nul(&self) -> bool {
        true
    }
}

/// What replicas sharing one database need beyond [`Store`] (replicas.md): work is claimed per
/// session with a lease, so that a session runs, and its outputs go out, from one replica at a
/// time. The leases themselves (fences, renewal) stay inside the backend: `commit_batch` and
/// the delivery writes (`delivered`, `attempt_failed`, `dead`) of a session whose lease was lost
/// change nothing.
pub trait Claims: Send + Sync {
    /// This replica's name (logs, metrics).
    fn replica(&self) -> &str;

    /// Claims up to `n` sessions with queued messages that no live replica holds, oldest first;
    /// their head messages (id, session). The lease is released by the commit of the message's
    /// turn (or by `release_run`).
    fn claim_runs(&self, n: usize) -> Result<Vec<(i64, SessionKey)>>;

    /// Commits finished turns as `Store::commit_batch` does, except that a session whose turn
    /// finished and that has more messages waiting keeps this replica's lease: its next message
    /// (id, session) is returned, to be run here without a claim.
    fn commit_turns(&self, turns: &[&TurnRecord]) -> Result<Vec<(i64, SessionKey)>>;

    /// Gives up a claimed session without a commit (its head message was gone).
    fn release_run(&self, key: &SessionKey) -> Result<()>;

    /// Stops renewing the claim on a head output (`claim_heads`) that will not be sent, without
    /// asking the database (which may be out of reach): the claim expires and another replica
    /// takes the output.
    fn abandon_head(&self, output_id: i64);

    /// Puts a claimed head back, unsent, to wait until `until_ms` for its webhook, which this
    /// replica counts down (as `Store::attempt_failed`, with the attempts unchanged); ends the
    /// claim. Unless another replica saw that webhook answer again since (`unhold`): then nothing
    /// is written and the head is this replica's to send.
    fn hold_head(&self, output_id: i64, attempts: i64, until_ms: i64) -> Result<Hold>;

    /// The webhook of `endpoints` answers again: the heads held for it (`hold_head`) are due
    /// now rather than at the end of their hold. Returns how many.
    fn unhold(&self, endpoints: &[String]) -> Result<usize>;

    /// Gives back the claims on head outputs (`claim_heads`) that will not be sent by this lane
    /// after all, at once, so that another lane or replica can take them (their attempts and
    /// due times are unchanged).
    fn release_heads(&self, output_ids: &[i64]) -> Result<()>;

    /// Claims up to `n` sessions of `endpoints` whose head output is due and not being
    /// delivered by anybody; their head outputs. The lease ends with the head's fate
    /// (`delivered`, `attempt_failed`, `dead`).
    fn claim_heads(&self, endpoints: &[String], n: usize) -> Result<Vec<OutboxRow>>;

    /// Renews this replica's leases; an error means they could not be renewed. After two thirds
    /// of `leaseSeconds` without a renewal the backend stops claiming and committing.
    fn renew(&self) -> Result<()>;

    /// True while this replica's leases can be trusted: renewed within two thirds of
    /// `leaseSeconds`. Past that, another replica may take its sessions over a third of the
    /// lease later, so work under them must not start: a POST of a claimed output (a turn's
    /// commit is refused then, and an `http` node calls only after a commit).
    fn trusted(&self) -> bool;

    /// Gives back every claim this replica holds (at shutdown), so others need not wait for
    /// the leases to expire.
    fn release_all(&self) -> Result<()>;

    /// Messages waiting, all replicas together (`limits.queueCapacity`).
    fn queued(&self) -> Result<usize>;

    /// Messages accepted and not yet finished (queued or running), and the sessions they are
    /// of, all replicas together, counted now: the queue depth that `/metrics` and `/api/stats`
    /// show. (A replica's own scheduler sees only the sessions it holds, and not the messages
    /// waiting behind their running turns.)
    fn backlog(&self) -> Result<(usize, usize)>;

    /// A connection that hears other replicas' wake-ups.
    fn listen(&self) -> Result<Box<dyn News>>;

    /// A connection that cleans out the old row versions the claims leave behind, or `None`
    /// when this replica's database role may not (autovacuum alone does it then).
    fn vacuumer(&self) -> Result<Option<Box<dyn Vacuum>>>;
}

/// What `Claims::hold_head` did with a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Put back, to wait for the webhook.
    Held,
    /// Nothing written: the claim had been lost (another replica delivers the head now).
    Lost,
    /// Nothing written: another replica saw the webhook answer again and made the head due
    /// (`Claims::unhold`). Send it (its answer tells this replica the webhook is back) rather
    /// than hold it until this replica's own next probe, which may be minutes away.
    Answered,
}

/// Cleans out the old row versions that the claims leave behind (`Claims::vacuumer`).
pub trait Vacuum: Send {
    /// Cleans them when there are enough new ones to slow the claims down; true when it did.
    /// An error: the connection broke.
    fn step(&mut self) -> Result<bool>;
}

/// Wake-ups from other replicas (a message queued, a session released, an output committed).
pub trait News: Send {
    /// Waits up to `timeout`; true when something happened. An error: the connection broke.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool>;
}
