//! The store contract on both backends, and what only replicas sharing one database have.
//!
//! The store contract and the console log's scenarios are written here, once, against
//! `&dyn Store`, and run on SQLite and PostgreSQL (`on_both!`: a module per scenario
//! with a `sqlite` and a `postgres` test). Then the PostgreSQL-only tests: two `PgStore`s on one
//! database are two replicas. The server is the harness's throwaway one (`tests/common/pgserver.rs`),
//! a database per test; waits are bounded (a lease test waits for the lease, with a deadline).

use crate::pgserver;

use std::time::{Duration, Instant};

use super::*;
use crate::config::{Durability, PostgresTls};
use crate::domain::{JobKind, NewOutput, Speaker, Trace, TranscriptLine};
use crate::store::sqlite::{ANSWER_BYTES, ATTEMPTS_PER_OUTPUT, HISTORY_PER_ENDPOINT, SqliteStore, TRACES_PER_SESSION};

/// A store under test, with raw SQL on its database beside it (for seeding and counting).
struct Opened {
    store: Box<dyn Store>,
    raw: Raw,
    _dir: Option<TempDir>,
}

enum Raw {
    Sqlite(rusqlite::Connection),
    Postgres(std::cell::RefCell<postgres::Client>),
}

impl Raw {
    fn count(&self, sql: &str) -> i64 {
        match self {
            Raw::Sqlite(c) => c.query_row(sql, [], |r| r.get(0)).unwrap(),
            Raw::Postgres(c) => c.borrow_mut().query_one(sql, &[]).unwrap().get(0),
        }
    }

    fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(c) => c.execute_batch(sql).unwrap(),
            Raw::Postgres(c) => c.borrow_mut().batch_execute(sql).unwrap(),
        }
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn on_sqlite(name: &str) -> Opened {
    let dir = std::env::temp_dir().join(format!("hookflow-contract-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&dir, Durability::Normal).unwrap();
    let raw = rusqlite::Connection::open(dir.join(crate::store::sqlite::STORE_FILE)).unwrap();
    Opened { store: Box::new(store), raw: Raw::Sqlite(raw), _dir: Some(TempDir(dir)) }
}

fn config(url: &str, lease: Duration) -> Postgres {
    Postgres { url: url.to_owned(), pool: 4, lease, tls: PostgresTls::Disable, ca_file: None }
}

fn open(url: &str, lease: Duration) -> PgStore {
    PgStore::open(&config(url, lease)).unwrap()
}

fn raw(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn on_postgres(name: &str) -> Opened {
    let url = pgserver::fresh_db(name);
    let store = open(&url, Duration::from_secs(10));
    Opened { store: Box::new(store), raw: Raw::Postgres(raw(&url).into()), _dir: None }
}

/// A module per scenario, with the scenario run on each backend.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::on_sqlite(stringify!($name)));
            }
            #[test]
            fn postgres() {
                super::$name(&super::on_postgres(stringify!($name)));
            }
        }
    )*};
}

on_both! {
    a_turn_commits_outputs_and_consumes_its_message_atomically, outbox_ids_are_never_reused_after_the_table_empties,
    dead_letters_are_kept_and_replayed_into_the_outbox, forgetting_or_expiring_a_session_keeps_its_output_counter,
    lanes_partition_the_outbox_by_hash, reads_by_endpoint_and_session_stay_within_their_bounds,
    outputs_of_unconfigured_endpoints_become_dead_letters,
    a_turn_that_ends_after_its_session_was_forgotten_keeps_it_forgotten,
    a_replayed_dead_letter_gets_the_next_seq_of_its_session, an_expiry_sweep_works_through_the_table_in_bounded_steps,
    the_log_shows_waiting_retried_delivered_and_dead_outputs_with_their_attempts,
    the_log_is_bounded_per_endpoint_and_attempts_per_output, traces_are_bounded_and_forgotten_with_the_session,
    sessions_are_found_by_part_of_their_ids_and_dead_letters_replayed_by_filter,
    expiry_drops_old_traces_and_log_entries_older_than_a_day,
    a_transcript_is_read_in_the_order_of_its_turns_whatever_their_clocks,
    expiry_keeps_the_counter_of_a_session_with_dead_letters,
}

fn key_of(session: &str) -> SessionKey {
    SessionKey { endpoint: "e".into(), user_id: "u".into(), session_id: session.into() }
}

fn key() -> SessionKey {
    key_of("s")
}

/// Takes the run leases a turn's commit needs on a backend shared by replicas (SQLite has
/// none). Every runnable session is claimed; sessions claimed before stay held.
fn claim(store: &dyn Store) {
    if let Some(c) = store.claims() {
        c.claim_runs(1000).unwrap();
    }
}

fn record(key: &SessionKey, inbox_id: i64, session: SessionRow, outputs: Vec<NewOutput>, now_ms: i64) -> TurnRecord {
    TurnRecord {
        inbox_id,
        key: key.clone(),
        session: Some(session),
        profile: None,
        outputs,
        now_ms,
        transcript: vec![],
        loaded_messages: 0,
        checkpoint: None,
        trace: None,
    }
}

/// Issue 9: a user's line takes its accept's time and the bot's lines their commit's, so the
/// clock can go backwards between turns; the transcript follows the turns.
fn a_transcript_is_read_in_the_order_of_its_turns_whatever_their_clocks(o: &Opened) {
    let store = &*o.store;
    let line = |source, text: &str, at_ms| TranscriptLine { source, text: text.into(), data: "{}".into(), at_ms };
    for (n, at) in [(1, 5_000), (2, 1_000)] {
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        claim(store);
        let lines =
            vec![line(Speaker::User, &format!("question {n}"), at), line(Speaker::Bot, &format!("answer {n}"), at - 1)];
        store.commit_turn(&TurnRecord { transcript: lines, ..record(&key(), id, state(), vec![], at) }).unwrap();
    }
    let read: Vec<String> = store.transcript(&key()).unwrap().into_iter().map(|l| l.text).collect();
    assert_eq!(read, ["question 1", "answer 1", "question 2", "answer 2"]);
}

fn outputs_of(bodies: &[&str]) -> Vec<NewOutput> {
    bodies.iter().map(|b| NewOutput { body: (*b).into(), not_before_ms: 0 }).collect()
}

fn state() -> SessionRow {
    SessionRow { state: Some("{\"context\":{}}".into()), seq: 0, messages: 1, updated_ms: 0 }
}

/// Accepts a message for `key` and commits its turn with outputs `bodies` at `now_ms`.
fn message(store: &dyn Store, key: &SessionKey, bodies: &[&str], now_ms: i64) {
    let id = store.accept(key, JobKind::Message, "{}").unwrap();
    claim(store);
    store.commit_turn(&record(key, id, state(), outputs_of(bodies), now_ms)).unwrap();
    assert!(store.pending_inbox().unwrap().iter().all(|(i, _)| *i != id), "the turn was committed");
}

fn all_ids(store: &dyn Store, endpoint: &str, after: i64) -> Vec<i64> {
    store.outbox_after(0, 1, endpoint, after, i64::MAX, 10_000).unwrap().iter().map(|r| r.id).collect()
}

fn a_turn_commits_outputs_and_consumes_its_message_atomically(o: &Opened) {
    let store = &*o.store;
    let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
    assert_eq!(store.pending_inbox().unwrap(), vec![(id, key())]);
    claim(store);
    store.commit_turn(&record(&key(), id, state(), outputs_of(&["a", "b"]), 1)).unwrap();
    assert!(store.pending_inbox().unwrap().is_empty());
    let rows = store.outbox_after(0, 1, "e", 0, i64::MAX, 10).unwrap();
    assert_eq!(rows.iter().map(|r| (r.seq, r.body.as_str())).collect::<Vec<_>>(), vec![(1, "a"), (2, "b")]);
    assert_eq!(store.session(&key()).unwrap().unwrap().seq, 2);
    assert_eq!(store.outbox_len().unwrap(), 2);
}

fn outbox_ids_are_never_reused_after_the_table_empties(o: &Opened) {
    let store = &*o.store;
    message(store, &key(), &["a"], 1);
    let first = all_ids(store, "e", 0)[0];
    store.delivered(&[first]).unwrap();
    message(store, &key(), &["b"], 1);
    let rows = store.outbox_after(0, 1, "e", first, i64::MAX, 10).unwrap();
    assert_eq!(rows.len(), 1, "the new output has an id above the delivered one");
    assert_eq!(rows[0].seq, 2);
}

fn dead_letters_are_kept_and_replayed_into_the_outbox(o: &Opened) {
    let store = &*o.store;
    message(store, &key(), &["a"], 1);
    let out = all_ids(store, "e", 0)[0];
    store.dead(out, 3, "HTTP 400", 5).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 0);
    let dead = store.dead_letters().unwrap();
    assert_eq!((dead[0].attempts, dead[0].last_error.as_str(), dead[0].body.as_str()), (3, "HTTP 400", "a"));
    assert_eq!(store.replay_dead_letter(dead[0].id, 6, &|_| true).unwrap(), Replay::Queued { id: out + 1, seq: 2 });
    assert_eq!(store.replay_dead_letter(dead[0].id, 6, &|_| true).unwrap(), Replay::Unknown);
    assert_eq!(store.outbox_after(0, 1, "e", out, i64::MAX, 10).unwrap()[0].body, "a");
}

/// A replay is numbered after its session's last Seq: the purge of a forgotten session's
/// counter waits for its dead letters (found by a replica audit: a replay after the purge reused
/// Seq 3, delivered long before with another webhook-id).
fn expiry_keeps_the_counter_of_a_session_with_dead_letters(o: &Opened) {
    let store = &*o.store;
    message(store, &key(), &["a", "b", "c"], 1_000);
    let ids = all_ids(store, "e", 0);
    store.dead(ids[0], 3, "HTTP 400", 1_100).unwrap();
    store.delivered(&ids[1..]).unwrap();
    assert_eq!(store.expire_sessions(2_000, 0).unwrap(), 1);
    assert_eq!(store.expire_sessions(9_000, 8_000).unwrap(), 0);
    let row = store.session(&key()).unwrap().expect("the counter stays while a dead letter may be replayed");
    assert_eq!((row.state, row.seq), (None, 3));
    let dead = store.dead_letters().unwrap();
    let Replay::Queued { id, seq } = store.replay_dead_letter(dead[0].id, 9_100, &|_| true).unwrap() else {
        panic!("the dead letter is replayed");
    };
    assert_eq!(seq, 4, "after the last Seq delivered, not the dead letter's 1 + 1");
    // Once no dead letter is left and the replay is delivered, the counter goes as before.
    store.delivered(&[id]).unwrap();
    store.expire_sessions(99_000, 98_000).unwrap();
    assert!(store.session(&key()).unwrap().is_none(), "purged once nothing may come back");
}

fn forgetting_or_expiring_a_session_keeps_its_output_counter(o: &Opened) {
    let store = &*o.store;
    message(store, &key(), &["a"], 1_000);
    assert!(store.delete_session(&key()).unwrap());
    assert!(!store.delete_session(&key()).unwrap());
    let row = store.session(&key()).unwrap().unwrap();
    assert_eq!((row.state.as_deref(), row.seq), (None, 1));
    message(store, &key(), &["b"], 1_000);
    assert_eq!(store.expire_sessions(500, 0).unwrap(), 0);
    assert_eq!(store.expire_sessions(2_000, 0).unwrap(), 1);
    assert_eq!(store.expire_sessions(2_000, 0).unwrap(), 0, "already forgotten");
    let row = store.session(&key()).unwrap().unwrap();
    assert_eq!((row.state.as_deref(), row.seq, row.messages), (None, 2, 1), "expiry keeps the count");
    message(store, &key(), &["c"], 3_000);
    let last = store.outbox_after(0, 1, "e", 0, i64::MAX, 10).unwrap().pop().unwrap();
    assert_eq!((last.body.as_str(), last.seq), ("c", 3), "numbering goes on after expiry");
    assert_eq!(store.expire_sessions(4_000, 3_500).unwrap(), 1);
    assert!(store.session(&key()).unwrap().is_some(), "expiry first keeps the counter");
    assert_eq!(store.expire_sessions(9_000, 3_500).unwrap(), 0);
    assert!(store.session(&key()).unwrap().is_some(), "outputs are pending");
    store.delivered(&all_ids(store, "e", 0)).unwrap();
    assert_eq!(store.expire_sessions(9_000, 3_500).unwrap(), 0);
    assert!(store.session(&key()).unwrap().is_none(), "a counter-only row with nothing waiting is purged");
}

fn lanes_partition_the_outbox_by_hash(o: &Opened) {
    let store = &*o.store;
    message(store, &key(), &["a"], 1);
    let h = key().lane_hash() as usize;
    assert_eq!(store.outbox_after(h % 2, 2, "e", 0, i64::MAX, 10).unwrap().len(), 1);
    assert_eq!(store.outbox_after((h + 1) % 2, 2, "e", 0, i64::MAX, 10).unwrap().len(), 0);
    assert_eq!(store.outbox_after(h % 4, 4, "e", 0, i64::MAX, 10).unwrap().len(), 1);
}

fn reads_by_endpoint_and_session_stay_within_their_bounds(o: &Opened) {
    let store = &*o.store;
    message(store, &key(), &["a", "b", "c"], 1);
    let max = store.outbox_max_id().unwrap();
    let all = store.outbox_after(0, 1, "e", 0, max, 10).unwrap();
    assert_eq!(all.len(), 3);
    assert!(store.outbox_after(0, 1, "other", 0, max, 10).unwrap().is_empty());
    assert_eq!(store.outbox_after(0, 1, "e", 0, all[1].id, 10).unwrap().len(), 2, "upto is inclusive");
    let rest = store.outbox_of_session(&key(), all[0].id, max, 10).unwrap();
    assert_eq!(rest.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(store.outbox_of_session(&key(), all[0].id, all[1].id, 10).unwrap().len(), 1);
}

fn outputs_of_unconfigured_endpoints_become_dead_letters(o: &Opened) {
    let store = &*o.store;
    message(store, &key(), &["a"], 1);
    assert_eq!(store.dead_unconfigured(&["e"], 9).unwrap(), 0);
    assert_eq!(store.dead_unconfigured(&["x", "y"], 9).unwrap(), 1);
    assert_eq!(store.outbox_len().unwrap(), 0);
    let dead = store.dead_letters().unwrap();
    assert_eq!((dead[0].last_error.as_str(), dead[0].died_at_ms), ("endpoint no longer configured", 9));
    // The console's log shows it dead, linked to its dead letter.
    let log = store.outputs(&all()).unwrap();
    assert_eq!((log[0].state, log[0].dead_letter), (OutputState::Dead, Some(dead[0].id)));
}

fn a_turn_that_ends_after_its_session_was_forgotten_keeps_it_forgotten(o: &Opened) {
    let store = &*o.store;
    message(store, &key(), &["a"], 1);
    // The next turn reads the session (1 message), then an admin DELETE forgets it.
    let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
    claim(store);
    assert!(store.delete_session(&key()).unwrap());
    let session = SessionRow { state: Some("{\"context\":{\"x\":1}}".into()), seq: 0, messages: 2, updated_ms: 0 };
    let mut t = record(&key(), id, session, outputs_of(&["b"]), 2);
    t.loaded_messages = 1;
    store.commit_turn(&t).unwrap();
    let row = store.session(&key()).unwrap().unwrap();
    assert_eq!((row.state.as_deref(), row.seq, row.messages), (None, 2, 0), "state dropped, output numbered");
    assert_eq!(store.outbox_len().unwrap(), 2, "the turn's output is kept");
}

fn a_replayed_dead_letter_gets_the_next_seq_of_its_session(o: &Opened) {
    let store = &*o.store;
    message(store, &key(), &["a", "b"], 1);
    let first = all_ids(store, "e", 0)[0];
    store.dead(first, 1, "HTTP 400", 2).unwrap();
    let dead = store.dead_letters().unwrap();
    assert_eq!(store.replay_dead_letter(dead[0].id, 3, &|e| e == "x").unwrap(), Replay::EndpointGone("e".into()));
    assert_eq!(store.replay_dead_letter(dead[0].id, 3, &|_| true).unwrap(), Replay::Queued { id: first + 2, seq: 3 });
    let rows = store.outbox_after(0, 1, "e", first, i64::MAX, 10).unwrap();
    assert_eq!(rows.iter().map(|r| (r.body.as_str(), r.seq)).collect::<Vec<_>>(), [("b", 2), ("a", 3)]);
    assert_eq!(store.session(&key()).unwrap().unwrap().seq, 3);
}

/// Both backends look at 1,000 sessions per chunk of expiry (`EXPIRY_CHUNK` in their
/// `sessions.rs`).
fn an_expiry_sweep_works_through_the_table_in_bounded_steps(o: &Opened) {
    let store = &*o.store;
    const CHUNK: usize = 1000;
    let n = 2 * CHUNK + 517;
    let mut values = Vec::new();
    for i in 0..n {
        // Every third session was touched recently; the rest are old. Every fifth old one is a
        // counter-only row already (forgotten before), old enough to be purged.
        let (state, updated) = match i {
            i if i % 3 == 0 => ("{}", 5_000),
            i if i % 5 == 0 => ("", 10),
            _ => ("{}", 10),
        };
        values.push(format!("('e', 'u{i:05}', 's', '{state}', 1, 1, {updated})"));
    }
    for part in values.chunks(400) {
        o.raw.exec(&format!(
            "INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms) VALUES {}",
            part.join(", ")
        ));
    }
    let (mut forgotten, mut cursor, mut steps) = (0, None, 0);
    loop {
        let (f, next) = store.expire_step(cursor.as_ref(), 1_000, 100, CHUNK).unwrap();
        assert!(f <= CHUNK, "a step forgot {f}, more than it may look at");
        forgotten += f;
        steps += 1;
        match next {
            Some(k) => cursor = Some(k),
            None => break,
        }
    }
    let old_with_state = (0..n).filter(|i| i % 3 != 0 && i % 5 != 0).count();
    assert_eq!((forgotten, steps), (old_with_state, 3), "three steps of 1,000 sweep 2,517 sessions");
    let purged = (0..n).filter(|i| i % 3 != 0 && i % 5 == 0).count();
    let left = o.raw.count("SELECT count(*) FROM sessions");
    assert_eq!(left as usize, n - purged, "old counter-only rows are purged, all others kept");
    let recent = o.raw.count("SELECT count(*) FROM sessions WHERE state <> ''");
    assert_eq!(recent as usize, (0..n).filter(|i| i % 3 == 0).count(), "recent sessions keep their state");
}

// --- the console's log (the scenarios of sqlite/history.rs) -----------------------------------

/// Commits a turn of `session` with `n` outputs (and a trace when `trace`); their outbox ids.
fn turn(store: &dyn Store, session: &str, n: usize, trace: bool) -> Vec<i64> {
    let k = key_of(session);
    let inbox_id = store.accept(&k, JobKind::Message, "{}").unwrap();
    claim(store);
    let before = store.outbox_max_id().unwrap();
    let outputs = (0..n).map(|i| NewOutput { body: format!("{{\"n\":{i}}}"), not_before_ms: 0 }).collect();
    let mut t = record(
        &k,
        inbox_id,
        SessionRow { state: Some("{}".into()), seq: 0, messages: 1, updated_ms: 0 },
        outputs,
        1_000,
    );
    t.trace = trace.then(|| Box::new(Trace { trace_id: "t".into(), body: "{\"nodes\":[]}".into() }));
    store.commit_turn(&t).unwrap();
    all_ids(store, "e", before)
}

fn attempt(id: i64, n: i64, status: u16) -> AttemptRecord {
    AttemptRecord {
        output_id: id,
        key: key(),
        seq: 0,
        attempt: n,
        at_ms: 2_000 + n,
        latency_ms: 3,
        status: Some(status),
        answer: "é".repeat(200),
        delivered: (200..300).contains(&status),
    }
}

fn all() -> OutputFilter {
    OutputFilter { limit: 100, ..OutputFilter::default() }
}

fn the_log_shows_waiting_retried_delivered_and_dead_outputs_with_their_attempts(o: &Opened) {
    let store = &*o.store;
    let ids = turn(store, "s", 3, false);
    store.record_attempt(attempt(ids[0], 1, 500));
    store.attempt_failed(ids[0], 1, 9_000, "HTTP 500").unwrap();
    store.record_attempt(attempt(ids[0], 2, 200));
    // Delivered, not yet written by its lane: the log already says so.
    let log = store.outputs(&all()).unwrap();
    assert_eq!(
        log.iter().map(|e| e.state).collect::<Vec<_>>(),
        [OutputState::Queued, OutputState::Queued, OutputState::Delivered]
    );
    store.delivered(&[ids[0]]).unwrap();
    store.record_attempt(attempt(ids[1], 1, 400));
    store.dead(ids[1], 1, "HTTP 400", 3_000).unwrap();
    let log = store.outputs(&all()).unwrap();
    let states: Vec<_> = log.iter().map(|e| (e.id, e.state, e.attempts)).collect();
    assert_eq!(
        states,
        [(ids[2], OutputState::Queued, 0), (ids[1], OutputState::Dead, 1), (ids[0], OutputState::Delivered, 2)]
    );
    let delivered = &log[2];
    assert_eq!(delivered.tries.iter().map(|t| t.status).collect::<Vec<_>>(), [Some(500), Some(200)]);
    assert!(delivered.tries[0].answer.len() <= ANSWER_BYTES, "the answer is cut to its first bytes");
    assert_eq!((delivered.tries[1].latency_ms, delivered.tries[1].at_ms), (3, 2_002), "the final attempt is kept");
    assert_eq!(delivered.body, "{\"n\":0}");
    let dead = &log[1];
    assert_eq!((dead.last_error.as_deref(), dead.at_ms), (Some("HTTP 400"), 3_000));
    let dead_id = dead.dead_letter.expect("a dead output names its dead letter");
    assert_eq!(store.dead_letters().unwrap()[0].id, dead_id);

    let Replay::Queued { id: new_id, .. } = store.replay_dead_letter(dead_id, 4_000, &|_| true).unwrap() else {
        panic!("replayed")
    };
    let log = store.outputs(&all()).unwrap();
    assert_eq!((log[0].id, log[0].state), (new_id, OutputState::Queued));
    let old = log.iter().find(|e| e.id == ids[1]).unwrap();
    assert_eq!((old.state, old.replayed_as, old.dead_letter), (OutputState::Replayed, Some(new_id), None));

    let only = |state| OutputFilter { state: Some(state), ..all() };
    assert_eq!(store.outputs(&only(OutputState::Delivered)).unwrap().len(), 1);
    assert_eq!(store.outputs(&only(OutputState::Queued)).unwrap().len(), 2);
    assert_eq!(store.outputs(&only(OutputState::Replayed)).unwrap().len(), 1);
    let page = store.outputs(&OutputFilter { before_id: Some(ids[2]), limit: 1, ..all() }).unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[1]]);
    let window = store.outputs(&OutputFilter { since_ms: Some(2_500), until_ms: Some(3_500), ..all() }).unwrap();
    assert_eq!(window.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[1]], "times filter the log");
    let other = store.outputs(&OutputFilter { session_id: Some("other".into()), ..all() }).unwrap();
    assert!(other.is_empty(), "the session filter applies");
}

fn the_log_is_bounded_per_endpoint_and_attempts_per_output(o: &Opened) {
    let store = &*o.store;
    let ids = turn(store, "s", HISTORY_PER_ENDPOINT as usize + 300, false);
    for n in 1..=ATTEMPTS_PER_OUTPUT + 3 {
        store.record_attempt(attempt(ids[0], n, 500));
    }
    // (More than either backend lets in between two trims, so a trim runs with this batch.)
    store.delivered(&ids).unwrap();
    let log = store.outputs(&OutputFilter { limit: 10_000, ..all() }).unwrap();
    assert_eq!(log.len() as i64, HISTORY_PER_ENDPOINT);
    assert_eq!(log.last().unwrap().id, ids[300], "the oldest ones went");
    assert_eq!(o.raw.count("SELECT count(*) FROM attempts"), 0, "the attempts of dropped outputs went with them");
    let ids = turn(store, "s", 1, false);
    for n in 1..=ATTEMPTS_PER_OUTPUT + 3 {
        store.record_attempt(attempt(ids[0], n, 500));
    }
    let log = store.outputs(&OutputFilter { limit: 1, ..all() }).unwrap();
    assert_eq!(log[0].tries.len() as i64, ATTEMPTS_PER_OUTPUT);
    assert_eq!(log[0].tries[0].attempt, 4, "the latest attempts are kept");
}

fn traces_are_bounded_and_forgotten_with_the_session(o: &Opened) {
    let store = &*o.store;
    turn(store, "s", 0, true);
    turn(store, "s", 2, true);
    turn(store, "other", 1, false);
    let traces = store.traces(&key()).unwrap();
    assert_eq!(traces.iter().map(|t| (t.first_seq, t.last_seq)).collect::<Vec<_>>(), [(1, 0), (1, 2)]);
    assert!(store.traces(&key_of("other")).unwrap().is_empty(), "only turns with a trace keep one");
    for _ in 0..TRACES_PER_SESSION {
        turn(store, "s", 1, true);
    }
    assert_eq!(store.traces(&key()).unwrap().len() as i64, TRACES_PER_SESSION);
    store.delete_session(&key()).unwrap();
    assert!(store.traces(&key()).unwrap().is_empty());
    let left = store.outputs(&all()).unwrap();
    assert!(left.iter().all(|e| e.key.session_id == "other" || e.state == OutputState::Queued));
}

fn sessions_are_found_by_part_of_their_ids_and_dead_letters_replayed_by_filter(o: &Opened) {
    let store = &*o.store;
    let a = turn(store, "Alpha-1", 1, false);
    let b = turn(store, "beta-2", 1, false);
    let found = |q: &str| -> Vec<String> {
        store.find_sessions(Some("e"), q, 10).unwrap().into_iter().map(|s| s.key.session_id).collect()
    };
    assert_eq!(found("alpha"), ["Alpha-1"]);
    assert_eq!(found("").len(), 2);
    assert!(store.find_sessions(Some("other"), "", 10).unwrap().is_empty());
    assert_eq!(store.find_sessions(None, "BETA", 10).unwrap().len(), 1, "any endpoint, any case");
    store.dead(a[0], 1, "HTTP 400", 1).unwrap();
    store.dead(b[0], 1, "HTTP 400", 1).unwrap();
    let f = OutputFilter { session_id: Some("beta-2".into()), limit: 10, ..OutputFilter::default() };
    let done = store.replay_matching(&f, 2, &|_| true).unwrap();
    assert_eq!(done.len(), 1);
    assert!(matches!(done[0].1, Replay::Queued { .. }));
    assert_eq!(store.dead_letters().unwrap()[0].key.session_id, "Alpha-1");
    let counts = store.endpoint_counts().unwrap();
    assert_eq!(counts, [EndpointCounts { endpoint: "e".into(), queued: 1, dead_letters: 1 }]);
}

fn expiry_drops_old_traces_and_log_entries_older_than_a_day(o: &Opened) {
    let store = &*o.store;
    let ids = turn(store, "s", 2, true);
    // Died long ago (now_ms 3_000), and delivered just now.
    store.dead(ids[0], 1, "HTTP 400", 3_000).unwrap();
    store.delivered(&[ids[1]]).unwrap();
    store.expire_sessions(2_000, 0).unwrap();
    assert!(store.traces(&key()).unwrap().is_empty(), "the trace (at 1_000) is older than the expiry");
    let left: Vec<i64> = store.outputs(&all()).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(left, [ids[1]], "the log keeps a day");
}

// --- PostgreSQL only: `store copy` of what PostgreSQL's text cannot hold ------------------------

#[test]
fn a_copy_stores_a_nul_as_u_fffd_in_free_text_and_in_the_ids_of_old_sessions() {
    // A SQLite store may hold a session whose id has a NUL (taken before intake refused them).
    let line = |text: &str| TranscriptLine { source: Speaker::User, text: text.into(), data: "{}".into(), at_ms: 1 };
    let url = pgserver::fresh_db("copy_nul");
    let mut e = crate::store::Export::default();
    e.transcripts.push((key(), line("a\0b")));
    e.transcripts.push((key_of("s\0"), line("hi")));
    e.sessions.push((key_of("s\0"), Some("{}".into()), 1, 1, 1));
    e.outbox.push(crate::store::ExportedOutput {
        key: key_of("s\0"),
        seq: 1,
        body: r#"{"sessionId":"s\u0000"}"#.into(),
        not_before_ms: 1,
        attempts: 0,
        last_error: None,
    });
    let said = import(&config(&url, Duration::from_secs(10)), e).unwrap();
    assert!(said.contains("1 session(s) and 0 profile(s) had U+0000 in an id"), "{said}");
    let store = open(&url, Duration::from_secs(10));
    assert_eq!(store.transcript(&key()).unwrap()[0].text, "a\u{fffd}b");
    let renamed = key_of("s\u{fffd}");
    assert_eq!(store.transcript(&renamed).unwrap()[0].text, "hi");
    assert!(store.session(&renamed).unwrap().is_some());
    let head = store.claim_heads(&["e".into()], 10).unwrap();
    assert_eq!((head[0].key.clone(), head[0].body.as_str()), (renamed, r#"{"sessionId":"s\u0000"}"#), "sent as it was");

    // Renamed, it would be another session: refused, nothing copied.
    let url = pgserver::fresh_db("copy_nul_clash");
    let mut e = crate::store::Export::default();
    e.transcripts.push((key_of("s\0"), line("one")));
    e.transcripts.push((key_of("s\u{fffd}"), line("another")));
    let err = import(&config(&url, Duration::from_secs(10)), e).unwrap_err().to_string();
    assert!(err.contains("would be another's") && err.contains("nothing was copied"), "{err}");
    let tables = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'transcripts'";
    assert_eq!(raw(&url).query_one(tables, &[]).unwrap().get::<_, i64>(0), 0, "refused before the database is touched");
}

#[test]
fn a_snapshot_read_sees_one_state_while_others_commit() {
    // What a page of the delivery log reads with (`PgStore::outputs`): the outbox and the log
    // of one state, so that an output delivered meanwhile is in one of them, not in both.
    let url = pgserver::fresh_db("snapshot");
    let store = open(&url, Duration::from_secs(10));
    let count = |tx: &mut Tx<'_>| -> i64 { tx.query_opt("SELECT count(*) FROM probe", &[]).unwrap().unwrap().get(0) };
    let mut conn = store.conn().unwrap();
    let mut tx = conn.snapshot().unwrap();
    let before = count(&mut tx);
    raw(&url).execute("INSERT INTO probe (id, at_ms) VALUES (42, 1)", &[]).unwrap();
    assert_eq!(count(&mut tx), before, "the second read sees the first one's state");
    tx.commit().unwrap();
    let mut tx = conn.snapshot().unwrap();
    assert_eq!(count(&mut tx), before + 1, "a new snapshot sees the commit");
}

// --- PostgreSQL only: replicas sharing one database ----------------------------------------------

/// The expiry sweep reads sessions without locks; a turn of another replica that saves a session
/// after that read, and before the sweep's update of its row, keeps what it saved (the sweep
/// wiped it: a replica audit lost the state of up to 22 sessions of 50 in one sweep).
#[test]
fn the_expiry_sweep_keeps_a_state_saved_after_it_read_the_row() {
    let url = pgserver::fresh_db("expiry-race");
    let store = open(&url, Duration::from_secs(10));
    message(&store, &key(), &["a"], 1_000);
    // Another replica's turn has saved the session, and its commit is not made yet.
    let mut turn = raw(&url);
    let mut tx = turn.transaction().unwrap();
    tx.execute("UPDATE sessions SET state = '{\"n\":2}', updated_ms = 5000 WHERE session_id = 's'", &[]).unwrap();
    let sweep = std::thread::spawn(move || {
        let forgot = store.expire_sessions(2_000, 0).unwrap();
        (forgot, store)
    });
    // The sweep has read the old row (updated at 1,000, before 2,000) and waits for the row lock.
    let mut watch = raw(&url);
    let deadline = Instant::now() + Duration::from_secs(20);
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    while watch.query_one(waiting, &[]).unwrap().get::<_, i64>(0) == 0 {
        assert!(Instant::now() < deadline, "the sweep never waited for the turn's row");
        std::thread::sleep(Duration::from_millis(10));
    }
    tx.commit().unwrap();
    let (forgot, store) = sweep.join().unwrap();
    assert_eq!(forgot, 0, "the session was saved in the meantime");
    assert_eq!(store.session(&key()).unwrap().unwrap().state.as_deref(), Some("{\"n\":2}"));
}

#[path = "replica_tests.rs"]
mod replicas;
