//! The replica hot path's shortcuts (a child of `tests::replicas`, whose helpers it uses): a finished
//! turn keeps its session when more messages wait, a replica ignores its own wake-ups, the
//! waiting count is cached briefly, and the tables the claims churn are vacuumed when due.

use super::*;

#[test]
fn a_finished_turn_keeps_the_session_and_hands_over_its_next_message_when_more_wait() {
    let (a, b, url) = pair("chain", Duration::from_secs(10));
    let ids: Vec<i64> =
        (0..3).map(|n| a.accept(&key(), JobKind::Message, &format!("{{\"n\":{n}}}")).unwrap()).collect();
    assert_eq!(a.claim_runs(10).unwrap(), [(ids[0], key())]);
    let owner = || -> Option<String> {
        raw(&url).query_one("SELECT run_owner FROM queues WHERE session_id = 's'", &[]).unwrap().get(0)
    };
    // Two more wait: the commit keeps the lease and names the next message.
    let next = a.commit_turns(&[&record(&key(), ids[0], state(), outputs_of(&["0"]), 1)]).unwrap();
    assert_eq!(next, [(ids[1], key())]);
    assert_eq!(owner().as_deref(), Some(a.replica()), "still a's");
    assert!(b.claim_runs(10).unwrap().is_empty(), "nobody else can claim it meanwhile");
    assert_eq!(a.commit_turns(&[&record(&key(), ids[1], state(), outputs_of(&["1"]), 2)]).unwrap(), [(ids[2], key())]);
    // The last one: nothing waits, the lease is let go.
    assert!(a.commit_turns(&[&record(&key(), ids[2], state(), outputs_of(&["2"]), 3)]).unwrap().is_empty());
    assert_eq!(owner(), None);
    let sent: Vec<(String, i64)> =
        a.outbox_after(0, 1, "e", 0, i64::MAX, 10).unwrap().into_iter().map(|r| (r.body, r.seq)).collect();
    assert_eq!(sent, [("0".to_owned(), 1), ("1".to_owned(), 2), ("2".to_owned(), 3)]);
    // `commit_batch` (the store contract) never keeps a session: nobody would run its next message.
    let more: Vec<i64> = (0..2).map(|_| a.accept(&key(), JobKind::Message, "{}").unwrap()).collect();
    assert_eq!(b.claim_runs(10).unwrap(), [(more[0], key())]);
    b.commit_turn(&record(&key(), more[0], state(), outputs_of(&["3"]), 4)).unwrap();
    assert_eq!(owner(), None);
    assert_eq!(a.claim_runs(10).unwrap(), [(more[1], key())], "claimable again, by anyone");
}

#[test]
fn a_replica_hears_the_others_wake_ups_but_not_its_own() {
    let (a, b, _) = pair("wakeups", Duration::from_secs(10));
    let mut news = a.listen().unwrap();
    a.accept(&key_of("mine"), JobKind::Message, "{}").unwrap();
    assert!(!news.wait(Duration::from_millis(300)).unwrap(), "its own accept wakes nothing (its writer wakes it)");
    b.accept(&key_of("theirs"), JobKind::Message, "{}").unwrap();
    assert!(news.wait(Duration::from_secs(5)).unwrap(), "the other replica's accept wakes it");
}

#[test]
fn the_waiting_count_is_cached_briefly_and_counts_this_replicas_accepts_at_once() {
    let (a, b, _) = pair("backlog", Duration::from_secs(10));
    assert_eq!(a.queued().unwrap(), 0);
    for n in 0..3 {
        a.accept(&key_of(&format!("a{n}")), JobKind::Message, "{}").unwrap();
    }
    assert_eq!(a.queued().unwrap(), 3, "its own accepts count at once");
    for n in 0..2 {
        b.accept(&key_of(&format!("b{n}")), JobKind::Message, "{}").unwrap();
    }
    // The other replica's accepts count once the cached count is older than BACKLOG_FOR.
    eventually(BACKLOG_FOR * 20, "the count includes b's accepts", || (a.queued().unwrap() == 5).then_some(()));
}

#[test]
fn a_claimed_or_kept_sessions_next_turn_is_loaded_with_the_claim_once() {
    let (a, _b, url) = pair("preload", Duration::from_secs(10));
    let ids: Vec<i64> =
        (0..2).map(|n| a.accept(&key(), JobKind::Message, &format!("{{\"n\":{n}}}")).unwrap()).collect();
    assert_eq!(a.claim_runs(10).unwrap(), [(ids[0], key())]);
    // Changed behind the replica's back: the first load is what the claim read, a second load
    // (a resume after a checkpoint) reads the row again.
    raw(&url).execute("UPDATE inbox SET payload = '{\"changed\":true}' WHERE id = $1", &[&ids[0]]).unwrap();
    let first = a.load_turn(ids[0]).unwrap().expect("queued");
    assert_eq!(first.row.payload, "{\"n\":0}", "the claim's read");
    assert_eq!(a.load_turn(ids[0]).unwrap().expect("queued").row.payload, "{\"changed\":true}", "taken once");
    // The next message, handed over by the commit, comes with the state that commit wrote.
    let next = a.commit_turns(&[&record(&key(), ids[0], state(), outputs_of(&["0"]), 1)]).unwrap();
    assert_eq!(next, [(ids[1], key())]);
    raw(&url).execute("UPDATE sessions SET seq = 99", &[]).unwrap();
    let input = a.load_turn(ids[1]).unwrap().expect("queued");
    assert_eq!((input.row.payload.as_str(), input.session.map(|s| s.seq)), ("{\"n\":1}", Some(1)));
}

/// The statistics' count of dead rows in the churned tables, and which have been vacuumed by a
/// `VACUUM` command (autovacuum sets `last_autovacuum` instead).
fn vacuum_stats(url: &str) -> (i64, Vec<(String, bool)>) {
    let rows = raw(url)
        .query(
            "SELECT relname::text, last_vacuum IS NOT NULL, n_dead_tup FROM pg_stat_user_tables
             WHERE relname IN ('queues', 'inbox', 'outbox') ORDER BY relname",
            &[],
        )
        .unwrap();
    (rows.iter().map(|r| r.get::<_, i64>(2)).sum(), rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Runs `n` messages through `store`: accepted, claimed, the turn committed with one output, the
/// output delivered; each leaves old versions of the session's `queues` row and of its inbox and
/// outbox rows.
fn churn(store: &PgStore, n: usize) {
    for i in 0..n {
        let id = store.accept(&key(), JobKind::Message, "{}").unwrap();
        assert_eq!(store.claim_runs(1).unwrap(), [(id, key())]);
        store.commit_turn(&record(&key(), id, state(), outputs_of(&["x"]), i as i64)).unwrap();
        let heads = store.claim_heads(&endpoints(), 1).unwrap();
        store.delivered(&heads.iter().map(|r| r.id).collect::<Vec<_>>()).unwrap();
    }
}

/// Two replicas on a fresh database whose churned tables autovacuum leaves alone (it would run
/// at random moments of the test and take the count down or hold a table).
fn without_autovacuum(name: &str) -> (PgStore, PgStore, String) {
    // A long lease: no renewer runs in these tests, and a store stops claiming two thirds of a
    // lease after its last renewal (its open here). With 10 s, a churn after a slow wait for a
    // vacuum (a busy machine) claimed nothing.
    let (a, b, url) = pair(name, Duration::from_secs(600));
    raw(&url)
        .batch_execute(
            "ALTER TABLE queues SET (autovacuum_enabled = false); ALTER TABLE inbox SET (autovacuum_enabled = false);
             ALTER TABLE outbox SET (autovacuum_enabled = false);",
        )
        .unwrap();
    (a, b, url)
}

#[test]
fn the_churned_tables_are_vacuumed_once_they_hold_enough_dead_rows() {
    let (a, _b, url) = without_autovacuum("vacuum");
    let mut v = a.vacuumer().unwrap().expect("the role that created the tables may vacuum them");
    churn(&a, 5);
    assert!(!v.step().unwrap(), "a few dead rows are left to autovacuum");
    churn(&a, queue::VACUUM_AFTER as usize / 3);
    // A backend's table statistics reach the others within a second while it works, and within
    // ten when it went idle just after a report.
    eventually(Duration::from_secs(30), "a vacuum once the dead rows are counted", || v.step().unwrap().then_some(()));
    let want: Vec<(String, bool)> = ["inbox", "outbox", "queues"].iter().map(|t| (t.to_string(), true)).collect();
    assert_eq!(vacuum_stats(&url).1, want);
}

#[test]
fn dead_rows_an_open_transaction_holds_back_are_not_vacuumed_again_and_again() {
    let (a, _b, url) = without_autovacuum("vacuum_held");
    let mut v = a.vacuumer().unwrap().expect("the role that created the tables may vacuum them");
    // A transaction with a snapshot older than the churn: no vacuum may remove what it can see.
    let mut reader = raw(&url);
    let mut old = reader.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).start().unwrap();
    old.query_one("SELECT count(*) FROM queues", &[]).unwrap();
    churn(&a, queue::VACUUM_AFTER as usize / 3);
    eventually(Duration::from_secs(30), "a first vacuum", || v.step().unwrap().then_some(()));
    let (dead, _) = vacuum_stats(&url);
    assert!(dead > queue::VACUUM_AFTER, "the old snapshot kept the dead rows ({dead})");
    assert!(!v.step().unwrap(), "nothing new to remove: no second vacuum");
    // Once the transaction ends, the next churn's vacuum removes them all.
    old.commit().unwrap();
    churn(&a, queue::VACUUM_AFTER as usize / 3);
    eventually(Duration::from_secs(30), "a vacuum of the new dead rows", || v.step().unwrap().then_some(()));
    let (dead, _) = vacuum_stats(&url);
    assert!(dead < queue::VACUUM_AFTER, "{dead} dead rows left");
}

#[test]
fn a_role_that_does_not_own_the_tables_leaves_them_to_autovacuum() {
    let (_a, _b, url) = pair("vacuum_role", Duration::from_secs(10));
    let mut admin = raw(&url);
    admin
        .batch_execute(
            "CREATE ROLE hookflow_guest LOGIN; GRANT CREATE ON SCHEMA public TO hookflow_guest;
             GRANT ALL ON ALL TABLES IN SCHEMA public TO hookflow_guest;
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO hookflow_guest;",
        )
        .unwrap();
    let guest = open(&url.replacen("postgres://hookflow@", "postgres://hookflow_guest@", 1), Duration::from_secs(10));
    assert!(guest.vacuumer().unwrap().is_none());
}

#[test]
fn the_server_ends_a_replicas_transaction_left_idle_for_a_lease() {
    // (A replica cut off mid-transaction would otherwise hold its row locks for hours.)
    let (a, _b, _) = pair("idle_tx", Duration::from_secs(7));
    let set: String = a
        .in_tx(|tx| Ok(tx.query_opt("SHOW idle_in_transaction_session_timeout", &[])?.expect("a row").get(0)))
        .unwrap();
    assert_eq!(set, "7s");
}
