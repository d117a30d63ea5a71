//! The SQLite backend against the store contract (`store/mod.rs`).
use std::path::PathBuf;

use super::*;
use crate::domain::{JobKind, NewOutput, Replay, SessionKey, SessionRow, TurnRecord};
use crate::store::Store;

fn temp_store(name: &str) -> (SqliteStore, PathBuf) {
    let dir = std::env::temp_dir().join(format!("hookflow-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (SqliteStore::open(&dir, Durability::Normal).unwrap(), dir)
}

fn key() -> SessionKey {
    SessionKey { endpoint: "e".into(), user_id: "u".into(), session_id: "s".into() }
}

fn turn(inbox_id: i64, session: SessionRow, outputs: Vec<NewOutput>, now_ms: i64, loaded: i64) -> TurnRecord {
    TurnRecord {
        inbox_id,
        key: key(),
        session: Some(session),
        profile: None,
        outputs,
        now_ms,
        transcript: vec![],
        loaded_messages: loaded,
        checkpoint: None,
        trace: None,
    }
}

fn commit(store: &SqliteStore, inbox_id: i64, bodies: &[&str], now_ms: i64) {
    let outputs: Vec<NewOutput> = bodies.iter().map(|b| NewOutput { body: (*b).into(), not_before_ms: 0 }).collect();
    let session = SessionRow { state: Some("{\"context\":{}}".into()), seq: 0, messages: 1, updated_ms: 0 };
    store.commit_turn(&turn(inbox_id, session, outputs, now_ms, 0)).unwrap();
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
    assert_eq!(store.replay_dead_letter(dead[0].id, 6, &|_| true).unwrap(), Replay::Queued { id: 2, seq: 2 });
    assert_eq!(store.replay_dead_letter(dead[0].id, 6, &|_| true).unwrap(), Replay::Unknown);
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
    assert_eq!((row.state.as_deref(), row.seq), (None, 1));
    let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
    commit(&store, id, &["b"], 1_000);
    assert_eq!(store.expire_sessions(500, 0).unwrap(), 0);
    assert_eq!(store.expire_sessions(2_000, 0).unwrap(), 1);
    assert_eq!(store.expire_sessions(2_000, 0).unwrap(), 0, "already forgotten");
    let row = store.session(&key()).unwrap().unwrap();
    assert_eq!((row.state.as_deref(), row.seq, row.messages), (None, 2, 1), "expiry keeps the count");
    let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
    commit(&store, id, &["c"], 3_000);
    let last = store.outbox_after(0, 1, "e", 0, i64::MAX, 10).unwrap().pop().unwrap();
    assert_eq!((last.body.as_str(), last.seq), ("c", 3), "numbering goes on after expiry");
    // A forgotten session untouched since the purge time is deleted entirely.
    assert_eq!(store.expire_sessions(4_000, 3_500).unwrap(), 1);
    assert!(store.session(&key()).unwrap().is_some(), "expiry first keeps the counter");
    // Not while outputs of the session wait in the outbox (rows stored with the key's hash).
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
    let h = key().lane_hash() as usize;
    assert_eq!(store.outbox_after(h % 2, 2, &key().endpoint, 0, i64::MAX, 10).unwrap().len(), 1);
    assert_eq!(store.outbox_after((h + 1) % 2, 2, &key().endpoint, 0, i64::MAX, 10).unwrap().len(), 0);
    assert_eq!(store.outbox_after(h % 4, 4, &key().endpoint, 0, i64::MAX, 10).unwrap().len(), 1);
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
    let session = SessionRow { state: Some("{\"context\":{\"x\":1}}".into()), seq: 0, messages: 2, updated_ms: 0 };
    let outputs = vec![NewOutput { body: "b".into(), not_before_ms: 0 }];
    store.commit_turn(&turn(id, session, outputs, 2, 1)).unwrap();
    let row = store.session(&key()).unwrap().unwrap();
    assert_eq!((row.state.as_deref(), row.seq, row.messages), (None, 2, 0), "state dropped, output numbered");
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
    assert_eq!(store.replay_dead_letter(dead[0].id, 3, &|e| e == "x").unwrap(), Replay::EndpointGone("e".into()));
    assert_eq!(store.replay_dead_letter(dead[0].id, 3, &|_| true).unwrap(), Replay::Queued { id: 3, seq: 3 });
    let rows = store.outbox_after(0, 1, "e", first, i64::MAX, 10).unwrap();
    assert_eq!(rows.iter().map(|r| (r.body.as_str(), r.seq)).collect::<Vec<_>>(), [("b", 2), ("a", 3)]);
    assert_eq!(store.session(&key()).unwrap().unwrap().seq, 3);
    std::fs::remove_dir_all(dir).unwrap();
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
