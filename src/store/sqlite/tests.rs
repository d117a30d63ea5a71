//! What only the SQLite backend has (the data-directory lock, checkpoints, expiry in chunks);
//! the store contract itself runs on both backends (`postgres/tests.rs`, `on_both!`).
use std::path::PathBuf;

use super::*;
use crate::domain::{JobKind, OutboxRow, Replay, SessionKey};
use crate::store::Store;

fn temp_store(name: &str) -> (SqliteStore, PathBuf) {
    let dir = std::env::temp_dir().join(format!("hookflow-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (SqliteStore::open(&dir, Durability::Normal).unwrap(), dir)
}

fn key() -> SessionKey {
    SessionKey { endpoint: "e".into(), user_id: "u".into(), session_id: "s".into() }
}

#[test]
fn expiry_works_through_the_table_in_chunks() {
    let (store, dir) = temp_store("expiry-chunks");
    let n = 2 * super::sessions::EXPIRY_CHUNK + 17;
    {
        let conn = store.lock();
        let mut ins = conn.prepare("INSERT INTO sessions VALUES ('e', ?1, 's', ?2, 1, 1, ?3)").unwrap();
        for i in 0..n {
            // Every third session was touched recently; the rest are old. Every fifth old one
            // is a counter-only row already (forgotten before), old enough to be purged.
            let (state, updated) = match i {
                i if i % 3 == 0 => ("{}", 5_000),
                i if i % 5 == 0 => ("", 10),
                _ => ("{}", 10),
            };
            ins.execute(rusqlite::params![format!("u{i:05}"), state, updated]).unwrap();
        }
    }
    let old_with_state = (0..n).filter(|i| i % 3 != 0 && i % 5 != 0).count();
    assert_eq!(store.expire_sessions(1_000, 100).unwrap(), old_with_state);
    let left: i64 = store.lock().query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)).unwrap();
    let purged = (0..n).filter(|i| i % 3 != 0 && i % 5 == 0).count();
    assert_eq!(left as usize, n - purged, "old counter-only rows are purged, all others kept");
    let recent: i64 =
        store.lock().query_row("SELECT count(*) FROM sessions WHERE state != ''", [], |r| r.get(0)).unwrap();
    assert_eq!(recent as usize, (0..n).filter(|i| i % 3 == 0).count(), "recent sessions keep their state");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_second_open_of_a_data_directory_fails_naming_the_first_process() {
    let (store, dir) = temp_store("lock");
    let err = SqliteStore::open(&dir, Durability::Normal).err().expect("a second open while the first lives");
    assert_eq!(err.kind, ErrorKind::Busy);
    let pid = format!("pid {}", std::process::id());
    assert!(err.message.contains("in use by another hookflow process") && err.message.contains(&pid), "{err}");
    // The lock goes with the store.
    drop(store);
    let again = SqliteStore::open(&dir, Durability::Normal).expect("open after the first store is gone");
    drop(again);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_checkpoint_cuts_the_log_and_a_probe_writes() {
    let (store, dir) = temp_store("checkpoint");
    for n in 0..50 {
        store.accept(&key(), JobKind::Message, &format!("{{\"n\":{n}}}")).unwrap();
    }
    let wal = dir.join(format!("{STORE_FILE}-wal"));
    assert!(std::fs::metadata(&wal).unwrap().len() > 0, "the commits are in the log");
    store.checkpoint().unwrap();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "TRUNCATE leaves an empty log");
    store.probe().unwrap();
    assert!(std::fs::metadata(&wal).unwrap().len() > 0, "a probe is a real write");
    assert_eq!(store.pending_inbox().unwrap().len(), 50, "nothing was lost by the checkpoint");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The 30-second checkpoint holds the writer's lock: with another process reading the store
/// (an operator's `sqlite3`, a `.backup`), it waited out the whole busy timeout (5 s) for that
/// reader, and every accept behind it waited as long.
#[test]
fn a_checkpoint_does_not_wait_long_for_a_reader_of_another_process() {
    let (store, dir) = temp_store("checkpoint-reader");
    for n in 0..50 {
        store.accept(&key(), JobKind::Message, &format!("{{\"n\":{n}}}")).unwrap();
    }
    let reader = rusqlite::Connection::open(dir.join(STORE_FILE)).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader.query_row("SELECT count(*) FROM inbox", [], |r| r.get(0)).unwrap();
    store.accept(&key(), JobKind::Message, "{}").unwrap();
    let t = std::time::Instant::now();
    store.checkpoint().unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(2), "the checkpoint waited {:?} for the reader", t.elapsed());
    reader.execute_batch("COMMIT").unwrap();
    store.checkpoint().unwrap();
    assert_eq!(std::fs::metadata(dir.join(format!("{STORE_FILE}-wal"))).unwrap().len(), 0, "cut once the reader left");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A store file that is not a database (damaged, or something else put there) was refused as
/// "file is not a database", naming neither the file nor what to do.
#[test]
fn a_store_file_that_is_not_a_database_is_refused_by_name_with_the_fix() {
    let dir = std::env::temp_dir().join(format!("hookflow-store-garbage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(STORE_FILE), vec![0x5a; 8192]).unwrap();
    let e = SqliteStore::open(&dir, Durability::Normal).err().expect("refused");
    assert!(e.message.contains(&dir.join(STORE_FILE).display().to_string()), "{}", e.message);
    assert!(e.message.contains("restore it from a backup"), "{}", e.message);
    assert!(matches!(e.kind, ErrorKind::Data), "{e:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_expiry_step_looks_at_a_bounded_number_of_sessions_and_says_where_to_go_on() {
    let (store, dir) = temp_store("expiry-steps");
    let n = 2 * super::sessions::EXPIRY_CHUNK + 500;
    {
        let conn = store.lock();
        let mut ins = conn.prepare("INSERT INTO sessions VALUES ('e', ?1, 's', '{}', 1, 1, 10)").unwrap();
        for i in 0..n {
            ins.execute([format!("u{i:05}")]).unwrap();
        }
    }
    let (mut forgotten, mut cursor, mut steps) = (0, None, 0);
    loop {
        let (f, next) = store.expire_step(cursor.as_ref(), 1_000, 0, super::sessions::EXPIRY_CHUNK).unwrap();
        forgotten += f;
        steps += 1;
        assert!(f <= super::sessions::EXPIRY_CHUNK, "a step forgot {f}, more than it may look at");
        match next {
            Some(k) => cursor = Some(k),
            None => break,
        }
    }
    assert_eq!((forgotten, steps), (n, 3), "three steps of 1,000 sweep 2,500 sessions");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Who takes the checkpoints that the commits of `log_bytes` ask for.
#[derive(Clone, Copy, PartialEq)]
enum Committer {
    /// A running writer: it takes them (`checkpoints_by`) and runs each (`checkpoint_if_due`)
    /// after the commit that asked.
    Writer,
    /// A writer that takes them and has not run them yet.
    WriterBusy,
    /// A writer that has stopped: it says so, and the commit copies the log itself.
    WriterStopped,
    /// No writer to ask (tools, tests): the commit copies the log itself, as SQLite does.
    NoWriter,
}

/// A turn of session `key` with one output of a page: each commit adds at least a log page.
fn page_turn(i: usize) -> crate::domain::TurnRecord {
    use crate::domain::{NewOutput, SessionRow, TurnRecord};
    TurnRecord {
        inbox_id: -1,
        key: key(),
        session: Some(SessionRow { state: Some("{}".into()), seq: 0, messages: 1, updated_ms: 0 }),
        profile: None,
        outputs: vec![NewOutput { body: "x".repeat(PAGE), not_before_ms: 0 }],
        now_ms: i as i64,
        transcript: vec![],
        loaded_messages: 0,
        checkpoint: None,
        trace: None,
    }
}

/// Opens a store in a new directory whose database already holds about `pages` pages, makes
/// `commits` commits of at least one new log page each as `who`, and returns the log's size.
fn log_bytes(name: &str, durability: Durability, pages: usize, commits: usize, who: Committer) -> usize {
    let dir = std::env::temp_dir().join(format!("hookflow-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let insert = |conn: &Connection, i: usize| {
        conn.execute(
            "INSERT INTO transcripts (endpoint, user_id, session_id, source, text, data, at_ms)
             VALUES ('e', 'u', 's', 'user', ?1, '{}', ?2)",
            rusqlite::params!["x".repeat(PAGE), i as i64],
        )
        .unwrap();
    };
    if pages > 0 {
        // Written and closed first: the store opened next finds a database of that size.
        let store = SqliteStore::open(&dir, durability).unwrap();
        let mut conn = store.lock();
        let tx = conn.transaction().unwrap();
        (0..pages).for_each(|i| insert(&tx, i));
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(&dir, durability).unwrap();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if who != Committer::NoWriter {
        let (asked, takes) = (asked.clone(), who != Committer::WriterStopped);
        store.checkpoints_by(Box::new(move || {
            asked.fetch_add(1, Ordering::Relaxed);
            takes
        }));
    }
    for i in 0..commits {
        let before = asked.load(Ordering::Relaxed);
        store.commit_batch_rows(&[], &[&page_turn(i)]).unwrap();
        if who == Committer::Writer && asked.load(Ordering::Relaxed) > before {
            store.checkpoint_if_due().unwrap();
        }
    }
    let log = std::fs::metadata(dir.join(format!("{STORE_FILE}-wal"))).unwrap().len() as usize;
    if who == Committer::WriterBusy {
        assert!(asked.load(Ordering::Relaxed) > 0, "{name}: no commit asked for the checkpoint");
        // The writer's side, later: the checkpoint asked for copies the log, which the next
        // commit then starts again from its beginning.
        store.checkpoint_if_due().unwrap();
        store.commit_batch_rows(&[], &[&page_turn(commits)]).unwrap();
        let pages = store.log.pages.load(Ordering::Relaxed);
        assert!(pages < 10, "{name}: the log holds {pages} pages after the writer's checkpoint");
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    log
}

const PAGE: usize = 4096;

#[test]
fn the_checkpoint_interval_is_a_quarter_of_the_database_within_bounds() {
    assert_eq!(checkpoint_pages(0, Durability::Normal), CHECKPOINT_PAGES_MIN);
    assert_eq!(checkpoint_pages(12_000, Durability::Normal), 3_000);
    assert_eq!(checkpoint_pages(1_000_000, Durability::Normal), CHECKPOINT_PAGES);
    assert_eq!(checkpoint_pages(1_000_000, Durability::Full), CHECKPOINT_PAGES_MIN);
}

#[test]
fn a_large_store_copies_its_log_into_the_database_less_often() {
    // About 12,000 pages: the interval is 3,000, so 2,500 commits of a page stay in the log,
    // where SQLite's default (1,000) would have rewound it and kept it at about 1,000 pages.
    let commits = 2_500;
    for who in [Committer::Writer, Committer::NoWriter] {
        let log = log_bytes("checkpoint-large", Durability::Normal, 12_000, commits, who);
        assert!(log > commits * PAGE, "the log is {log} bytes after {commits} commits of a page: checkpointed early");
    }
}

#[test]
fn no_commit_copies_the_log_itself_while_a_writer_takes_the_checkpoints() {
    // SQLite's own checkpoint runs inside the commit that passes the interval: that commit's
    // accept, turn or delivery would wait for the copy. With a writer, every commit asks it.
    let commits = 1_500;
    let log = log_bytes("checkpoint-asked", Durability::Normal, 0, commits, Committer::WriterBusy);
    assert!(log > commits * PAGE, "the log is {log} bytes after {commits} commits: one copied it itself");
    // Without a writer, or once it has stopped, the commits copy it as SQLite would: the log
    // stays bounded.
    for (name, who) in [("checkpoint-none", Committer::NoWriter), ("checkpoint-gone", Committer::WriterStopped)] {
        let log = log_bytes(name, Durability::Normal, 0, commits, who);
        assert!(log < commits * PAGE, "{name}: the log is {log} bytes after {commits} commits: never checkpointed");
    }
}

#[test]
fn a_small_store_and_durability_full_keep_sqlites_default() {
    // A long log would make a full disk harder to recover from (and each flushed commit dearer).
    let commits = 1_500;
    for (name, durability) in [("checkpoint-small", Durability::Normal), ("checkpoint-full", Durability::Full)] {
        let log = log_bytes(name, durability, 0, commits, Committer::Writer);
        assert!(
            log < commits * PAGE && log > CHECKPOINT_PAGES_MIN as usize * PAGE,
            "{name}: the log is {log} bytes after {commits} commits of a page: not rewound at {CHECKPOINT_PAGES_MIN} pages"
        );
    }
}

#[test]
fn a_batch_tells_the_outbox_rows_it_added_exactly_as_a_lane_reads_them() {
    use crate::domain::{NewOutput, SessionRow, TurnRecord};
    let (store, dir) = temp_store("batch-rows");
    let turn = |key: &SessionKey, bodies: &[&str]| {
        let inbox_id = store.accept(key, JobKind::Message, "{}").unwrap();
        TurnRecord {
            inbox_id,
            key: key.clone(),
            session: Some(SessionRow { state: Some("{}".into()), seq: 0, messages: 1, updated_ms: 0 }),
            profile: None,
            outputs: bodies.iter().map(|b| NewOutput { body: (*b).into(), not_before_ms: 0 }).collect(),
            now_ms: 1,
            transcript: vec![],
            loaded_messages: 0,
            checkpoint: None,
            trace: None,
        }
    };
    let other = SessionKey { session_id: "t".into(), ..key() };
    let (a, b) = (turn(&key(), &["a1", "a2"]), turn(&other, &["b1"]));
    let (_, new) = store.commit_batch_rows(&[], &[&a, &b]).unwrap();
    let new = new.expect("a batch with outputs tells its rows");
    let read = store.outbox_after(0, 1, "e", 0, i64::MAX, 10).unwrap();
    let shape = |rows: &[OutboxRow]| -> Vec<(i64, String, i64, String)> {
        rows.iter().map(|r| (r.id, r.key.session_id.clone(), r.seq, r.body.clone())).collect()
    };
    assert_eq!(shape(&new.rows), shape(&read));
    assert_eq!((new.after, new.last), (0, read[2].id));

    // A row added outside the writer's batches (a replayed dead letter) moves the next batch's
    // start past it, so that a lane that has not read it reads the outbox instead.
    store.dead(read[0].id, 1, "HTTP 400", 2).unwrap();
    let dead = store.dead_letters().unwrap()[0].id;
    let Replay::Queued { id: replayed, .. } = store.replay_dead_letter(dead, 3, &|_| true).unwrap() else {
        panic!("replayed")
    };
    let (_, next) = store.commit_batch_rows(&[], &[&turn(&key(), &["a3"])]).unwrap();
    let next = next.unwrap();
    assert_eq!(next.after, replayed);
    assert_eq!(next.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [replayed + 1]);
    // A batch without outputs has nothing to tell.
    let (_, none) = store.commit_batch_rows(&[], &[&turn(&key(), &[])]).unwrap();
    assert!(none.is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn store_copy_reads_kinds_states_and_speakers_as_types_and_refuses_what_it_does_not_know() {
    let (store, dir) = temp_store("export");
    store.accept(&key(), JobKind::Inject, "{}").unwrap();
    {
        let conn = store.lock();
        conn.execute_batch(
            "INSERT INTO sessions VALUES ('e', 'u', 'gone', '', 4, 0, 10);
             INSERT INTO transcripts (endpoint, user_id, session_id, source, text, data, at_ms)
                 VALUES ('e', 'u', 's', 'agent', 'hello', '{}', 20);",
        )
        .unwrap();
    }
    drop(store);
    let (e, held) = export(&dir).unwrap();
    assert_eq!(e.inbox.iter().map(|m| m.1).collect::<Vec<_>>(), [JobKind::Inject]);
    assert_eq!(e.sessions.iter().map(|s| (s.0.session_id.as_str(), s.1.clone())).collect::<Vec<_>>(), [("gone", None)]);
    assert_eq!(e.transcripts[0].1.source, crate::domain::Speaker::Agent);
    // The store stays locked while the caller holds it (until it is marked copied).
    assert_eq!(SqliteStore::open(&dir, Durability::Normal).err().map(|e| e.kind), Some(ErrorKind::Busy));
    drop(held);
    // A kind written by a newer version: the copy stops, naming it.
    let store = SqliteStore::open(&dir, Durability::Normal).unwrap();
    store.lock().execute("UPDATE inbox SET kind = 'future_kind'", []).unwrap();
    drop(store);
    let Err(err) = export(&dir) else { panic!("a message of an unknown kind is exported") };
    assert!(err.message.contains("\"future_kind\", unknown to this version"), "{}", err.message);
    let _ = std::fs::remove_dir_all(&dir);
}
