//! Replicas sharing one database (a child of `tests`, whose helpers it uses): two `PgStore`s on
//! one database are two replicas; claims, numbering, fences, delivery claims, replays,
//! migrations, change counts and the trimmed log.

use super::*;
use crate::store::Hold;

#[path = "hot_path_tests.rs"]
mod hot_path;

/// Two replicas (stores) on one fresh database, and its URL.
fn pair(name: &str, lease: Duration) -> (PgStore, PgStore, String) {
    let url = pgserver::fresh_db(name);
    (open(&url, lease), open(&url, lease), url)
}

fn endpoints() -> Vec<String> {
    vec!["e".into()]
}

/// Polls `f` until it gives something, for at most `within`.
fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Some(v) => return v,
            None => assert!(Instant::now() < deadline, "{what}: not within {within:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_replicas_claiming_at_once_never_get_one_session_both() {
    let (a, b, _) = pair("claims", Duration::from_secs(10));
    for i in 0..40 {
        a.accept(&key_of(&format!("s{i}")), JobKind::Message, "{}").unwrap();
    }
    let claim_all = |s: &PgStore| (0..4).flat_map(|_| s.claim_runs(7).unwrap()).collect::<Vec<_>>();
    let (ga, gb) = std::thread::scope(|t| {
        let (ha, hb) = (t.spawn(|| claim_all(&a)), t.spawn(|| claim_all(&b)));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let keys: std::collections::HashSet<_> = ga.iter().chain(&gb).map(|(_, k)| k.clone()).collect();
    assert_eq!((ga.len() + gb.len(), keys.len()), (40, 40), "every session claimed once: {ga:?} {gb:?}");
    assert!(a.claim_runs(100).unwrap().is_empty() && b.claim_runs(100).unwrap().is_empty(), "the leases hold");
    // One given back is claimed by the other replica, with the same head message.
    let (holder, other, given) = if ga.is_empty() { (&b, &a, gb[0].clone()) } else { (&a, &b, ga[0].clone()) };
    holder.release_run(&given.1).unwrap();
    assert_eq!(other.claim_runs(100).unwrap(), [given]);
}

#[test]
fn accepts_from_two_replicas_into_one_session_are_numbered_in_commit_order() {
    let (a, b, url) = pair("numbering", Duration::from_secs(10));
    let send = |s: &PgStore, from: &str| {
        for n in 0..30 {
            s.accept(&key(), JobKind::Message, &format!("{{\"from\":\"{from}\",\"n\":{n}}}")).unwrap();
        }
    };
    std::thread::scope(|t| {
        t.spawn(|| send(&a, "a"));
        t.spawn(|| send(&b, "b"));
    });
    let rows = raw(&url).query("SELECT id, msg_no, payload FROM inbox ORDER BY msg_no", &[]).unwrap();
    let numbers: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(numbers, (1..=60).collect::<Vec<_>>(), "one number each, no gaps");
    for from in ["a", "b"] {
        let sent: Vec<i64> = rows
            .iter()
            .map(|r| serde_json::from_str::<serde_json::Value>(r.get(2)).unwrap())
            .filter(|v| v["from"] == from)
            .map(|v| v["n"].as_i64().unwrap())
            .collect();
        assert_eq!(sent, (0..30).collect::<Vec<_>>(), "{from}'s messages are numbered in the order it sent them");
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(a.pending_inbox().unwrap().iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert_eq!(b.claim_runs(10).unwrap(), [(ids[0], key())], "the head is the first numbered");
}

#[test]
fn a_turn_committed_under_a_lost_lease_changes_nothing() {
    let lease = Duration::from_secs(2);
    let (a, b, _) = pair("lost_lease", lease);
    let id = a.accept(&key(), JobKind::Message, "{}").unwrap();
    assert_eq!(a.claim_runs(10).unwrap(), [(id, key())]);
    // While a renews, b cannot take the session, for longer than the lease.
    let renewed_until = Instant::now() + lease + Duration::from_secs(1);
    while Instant::now() < renewed_until {
        // (b renews too, as its heartbeat would: a replica whose own renewals lapsed claims nothing.)
        a.renew().unwrap();
        b.renew().unwrap();
        assert!(b.claim_runs(10).unwrap().is_empty(), "a renewed lease is not taken over");
        std::thread::sleep(Duration::from_millis(200));
    }
    // a stops renewing (cut off, say): once its lease ran out, b takes the session over.
    let taken = eventually(lease * 3, "b takes over the expired lease", || {
        b.renew().unwrap();
        Some(b.claim_runs(10).unwrap()).filter(|g| !g.is_empty())
    });
    assert_eq!(taken, [(id, key())]);
    // a renews again (it thinks its leases good): only the fence stands between it and the session.
    a.renew().unwrap();
    // A turn written on its own (a checkpoint, before an http node's call) says so: the worker
    // must not go on with the turn (make the call) while b runs the session.
    let lost = a.commit_turn(&record(&key(), id, state(), outputs_of(&["from a"]), 1)).unwrap_err();
    assert_eq!(lost.kind, ErrorKind::Lost, "{lost:?}");
    assert_eq!(a.outbox_len().unwrap(), 0, "a's outputs were dropped");
    assert!(a.session(&key()).unwrap().is_none(), "a's state was dropped");
    assert_eq!(a.pending_inbox().unwrap(), [(id, key())], "the message waits for b");
    b.commit_turn(&record(&key(), id, state(), outputs_of(&["from b"]), 1)).unwrap();
    let rows = b.outbox_after(0, 1, "e", 0, i64::MAX, 10).unwrap();
    assert_eq!(rows.iter().map(|r| (r.body.as_str(), r.seq)).collect::<Vec<_>>(), [("from b", 1)]);
    assert!(b.pending_inbox().unwrap().is_empty());
}

#[test]
fn delivery_claims_give_only_the_head_of_a_session_and_only_to_one_replica() {
    let (a, b, _) = pair("heads", Duration::from_secs(10));
    message(&a, &key_of("s1"), &["1", "2", "3"], 1);
    message(&a, &key_of("s2"), &["x"], 1);
    let (ha, hb) = (a.claim_heads(&endpoints(), 1).unwrap(), b.claim_heads(&endpoints(), 10).unwrap());
    assert_eq!((ha.len(), hb.len()), (1, 1), "one head per session, each to one replica");
    assert_ne!(ha[0].key, hb[0].key);
    assert!(ha.iter().chain(&hb).all(|h| h.seq == 1), "only heads");
    assert!(a.claim_heads(&endpoints(), 10).unwrap().is_empty() && b.claim_heads(&endpoints(), 10).unwrap().is_empty());
    let (holder, other, head) =
        if ha[0].key == key_of("s1") { (&a, &b, ha[0].clone()) } else { (&b, &a, hb[0].clone()) };
    // The head delivered, the next one goes out (to whichever replica asks).
    holder.delivered(&[head.id]).unwrap();
    let next = other.claim_heads(&endpoints(), 10).unwrap();
    assert_eq!(next.iter().map(|h| (h.key.clone(), h.seq)).collect::<Vec<_>>(), [(key_of("s1"), 2)]);
    // Retried later: it stays the head, and nobody takes it before it is due.
    other.attempt_failed(next[0].id, 1, crate::util::now_ms() + 60_000, "HTTP 500").unwrap();
    assert!(a.claim_heads(&endpoints(), 10).unwrap().is_empty() && b.claim_heads(&endpoints(), 10).unwrap().is_empty());
    let log = a.outputs(&OutputFilter { session_id: Some("s1".into()), ..all() }).unwrap();
    let states: Vec<_> = log.iter().map(|e| (e.seq, e.state)).collect();
    assert_eq!(states, [(3, OutputState::Queued), (2, OutputState::Retrying), (1, OutputState::Delivered)]);
}

#[test]
fn heads_held_for_a_down_webhook_are_due_once_it_answers_and_other_waits_keep_their_time() {
    let (a, b, _) = pair("unhold", Duration::from_secs(10));
    for s in ["s1", "s2", "s3"] {
        message(&a, &key_of(s), &["1"], 1);
    }
    let mut heads = a.claim_heads(&endpoints(), 10).unwrap();
    heads.sort_by_key(|h| h.key.clone());
    let later = crate::util::now_ms() + 60_000;
    // Two are held for the webhook, which is down; one waits for its retry (a 429's Retry-After).
    assert_eq!(a.hold_head(heads[0].id, 0, later).unwrap(), Hold::Held);
    assert_eq!(a.hold_head(heads[1].id, 0, later).unwrap(), Hold::Held);
    assert!(a.attempt_failed(heads[2].id, 1, later, "HTTP 429").unwrap());
    assert!(b.claim_heads(&endpoints(), 10).unwrap().is_empty(), "nothing is due");
    assert_eq!(a.unhold(&["other".into()]).unwrap(), 0, "another endpoint's webhook changes nothing here");
    // The webhook answers again (seen by a): b may send the two held heads now, not the retry.
    assert_eq!(a.unhold(&endpoints()).unwrap(), 2);
    let mut due = b.claim_heads(&endpoints(), 10).unwrap();
    due.sort_by_key(|h| h.key.clone());
    let keys: Vec<_> = due.iter().map(|h| (h.key.clone(), h.attempts)).collect();
    assert_eq!(keys, [(key_of("s1"), 0), (key_of("s2"), 0)], "held heads keep their attempts");
    assert_eq!(a.unhold(&endpoints()).unwrap(), 0, "nothing is held any more");
    // b still counts the webhook down, but a saw it answer: b is told to send them, not hold them.
    assert_eq!(b.hold_head(due[0].id, 0, later).unwrap(), Hold::Answered);
    b.delivered(&[due[0].id]).unwrap();
    // After a failed attempt a head is no longer "due again": held, it is held.
    b.attempt_failed(due[1].id, 1, crate::util::now_ms(), "HTTP 503").unwrap();
    let again = eventually(Duration::from_secs(5), "the retried head is claimed", || {
        b.claim_heads(&endpoints(), 10).unwrap().pop()
    });
    assert_eq!(b.hold_head(again.id, 1, later).unwrap(), Hold::Held);
}

#[test]
fn a_replay_from_one_replica_while_the_other_delivers_goes_to_the_end_of_the_session() {
    let (a, b, _) = pair("replay", Duration::from_secs(10));
    let now = crate::util::now_ms();
    message(&a, &key(), &["1", "2"], 1);
    let first = a.claim_heads(&endpoints(), 10).unwrap().remove(0);
    a.dead(first.id, 1, "HTTP 400", now).unwrap();
    let second = a.claim_heads(&endpoints(), 10).unwrap().remove(0);
    assert_eq!(second.seq, 2);
    // b replays the dead letter while a holds the session's delivery lease.
    let dead = b.dead_letters().unwrap()[0].id;
    let Replay::Queued { id: again, seq } = b.replay_dead_letter(dead, now, &|_| true).unwrap() else {
        panic!("replayed")
    };
    assert_eq!(seq, 3, "the replay is the session's next output");
    assert!(b.claim_heads(&endpoints(), 10).unwrap().is_empty(), "a still delivers the head");
    a.delivered(&[second.id]).unwrap();
    let third = b.claim_heads(&endpoints(), 10).unwrap();
    assert_eq!(third.iter().map(|h| (h.id, h.seq, h.body.as_str())).collect::<Vec<_>>(), [(again, 3, "1")]);
    b.delivered(&[again]).unwrap();
    let log: Vec<_> = a.outputs(&all()).unwrap().iter().map(|e| (e.id, e.state, e.replayed_as)).collect();
    let (delivered, replayed) = (OutputState::Delivered, OutputState::Replayed);
    assert_eq!(log, [(again, delivered, None), (second.id, delivered, None), (first.id, replayed, Some(again))]);
}

#[test]
fn a_replica_whose_delivery_claims_were_taken_over_writes_no_fate_for_their_outputs() {
    let (a, b, _) = pair("stale_fate", Duration::from_secs(1));
    // (a trusts its claims for two thirds of a second after each renewal.)
    for (s, body) in [("s1", "1"), ("s2", "2")] {
        a.renew().unwrap();
        message(&a, &key_of(s), &[body], 1);
    }
    a.renew().unwrap();
    let mut heads = a.claim_heads(&endpoints(), 10).unwrap();
    heads.sort_by_key(|h| h.id);
    assert_eq!(heads.len(), 2);
    // a is cut off (no renewals); once its claims have expired, b takes the heads over.
    let mut taken = Vec::new();
    eventually(Duration::from_secs(10), "b takes both heads over", || {
        b.renew().unwrap();
        taken.extend(b.claim_heads(&endpoints(), 10).unwrap());
        (taken.len() == 2).then_some(())
    });
    assert!(!a.trusted(), "a's claims are no longer to be trusted");
    // a's POSTs failed meanwhile; what it writes of them now changes nothing: b is sending them.
    assert!(!a.attempt_failed(heads[0].id, 1, crate::util::now_ms() + 60_000, "HTTP 500").unwrap());
    assert!(!a.dead(heads[1].id, 1, "HTTP 400", crate::util::now_ms()).unwrap(), "nothing written, and a says so");
    assert!(b.dead_letters().unwrap().is_empty(), "not a dead letter");
    b.delivered(&[heads[0].id, heads[1].id]).unwrap();
    let mut log: Vec<_> = b.outputs(&all()).unwrap().iter().map(|e| (e.id, e.state, e.attempts)).collect();
    log.sort_by_key(|e| e.0);
    // One attempt each: b's delivery (a's failed attempt was not counted in).
    assert_eq!(log, [(heads[0].id, OutputState::Delivered, 1), (heads[1].id, OutputState::Delivered, 1)]);
}

#[test]
fn a_dead_letter_replayed_from_two_replicas_at_once_goes_out_once() {
    let (a, b, url) = pair("replay_twice", Duration::from_secs(10));
    let now = crate::util::now_ms();
    message(&a, &key(), &["1"], 1);
    let head = a.claim_heads(&endpoints(), 10).unwrap().remove(0);
    a.dead(head.id, 1, "HTTP 400", now).unwrap();
    let dead = a.dead_letters().unwrap()[0].id;
    // The session's row held elsewhere: both replays get as far as they can before either
    // commits, as two replays arriving together do.
    let mut holder = raw(&url);
    let mut held = holder.transaction().unwrap();
    held.execute("SELECT 1 FROM queues WHERE session_id = 's' FOR UPDATE", &[]).unwrap();
    let results = std::thread::scope(|t| {
        let replays: Vec<_> =
            [&a, &b].map(|s| t.spawn(move || s.replay_dead_letter(dead, now, &|_| true).unwrap())).into();
        let mut watch = raw(&url);
        eventually(Duration::from_secs(10), "both replays wait", || {
            let waiting: i64 = watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .unwrap()
                .get(0);
            (waiting == 2).then_some(())
        });
        held.rollback().unwrap();
        replays.into_iter().map(|r| r.join().unwrap()).collect::<Vec<_>>()
    });
    let queued = results.iter().filter(|r| matches!(r, Replay::Queued { .. })).count();
    assert_eq!(queued, 1, "one replay queues it, the other finds it gone: {results:?}");
    assert!(results.iter().any(|r| matches!(r, Replay::Unknown)), "{results:?}");
    let outbox: i64 = raw(&url).query_one("SELECT count(*) FROM outbox", &[]).unwrap().get(0);
    assert_eq!(outbox, 1);
}

#[test]
fn a_second_open_of_a_migrated_database_changes_nothing_and_a_newer_schema_is_refused() {
    let url = pgserver::fresh_db("migrations");
    let first = open(&url, Duration::from_secs(10));
    first.accept(&key(), JobKind::Message, "{}").unwrap();
    let second = open(&url, Duration::from_secs(10));
    let mut c = raw(&url);
    let r = c.query_one("SELECT count(*), max(version) FROM hookflow_schema", &[]).unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, Option<i64>>(1)), (1, Some(schema::VERSION)));
    assert_eq!(second.pending_inbox().unwrap().len(), 1, "the data is kept");
    let newer = schema::VERSION + 1;
    c.execute("UPDATE hookflow_schema SET version = $1", &[&newer]).unwrap();
    let err = PgStore::open(&config(&url, Duration::from_secs(10))).err().expect("a newer schema is refused");
    assert_eq!(err.kind, ErrorKind::Data);
    let (found, ours) = (format!("schema version {newer}"), format!("hookflow's {}", schema::VERSION));
    assert!(err.message.contains(&found) && err.message.contains(&ours), "both versions named: {err}");
}

#[test]
fn replicas_starting_at_once_on_an_empty_database_create_the_schema_once() {
    let url = pgserver::fresh_db("start_at_once");
    std::thread::scope(|t| {
        let started: Vec<_> = (0..3).map(|_| t.spawn(|| open(&url, Duration::from_secs(10)))).collect();
        for s in started {
            s.join().unwrap().accept(&key(), JobKind::Message, "{}").unwrap();
        }
    });
    let r = raw(&url).query_one("SELECT count(*), (SELECT count(*) FROM inbox) FROM hookflow_schema", &[]).unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (1, 3));
}

#[test]
fn changes_differ_after_any_commit_on_another_connection() {
    let (a, b, url) = pair("changes", Duration::from_secs(10));
    let before = a.changes().unwrap();
    b.accept(&key(), JobKind::Message, "{}").unwrap();
    assert_ne!(a.changes().unwrap(), before, "a commit by another replica");
    // A write that had its transaction id before the poll and commits after it, while a later
    // one committed before the poll: the snapshot's xmax alone would not change.
    let mut c = raw(&url);
    let mut tx = c.transaction().unwrap();
    tx.execute("INSERT INTO probe (id, at_ms) VALUES (7, 1)", &[]).unwrap();
    b.accept(&key(), JobKind::Message, "{}").unwrap();
    let during = a.changes().unwrap();
    tx.commit().unwrap();
    assert_ne!(a.changes().unwrap(), during, "a commit of a transaction running at the last poll");
}

#[test]
fn the_log_is_trimmed_as_outputs_go_out_in_small_batches() {
    let o = on_postgres("trim_batches");
    let ids = turn(&*o.store, "s", HISTORY_PER_ENDPOINT as usize + 3 * super::console::BOUND_EVERY, false);
    for batch in ids.chunks(64) {
        o.store.delivered(batch).unwrap();
        // (Other tests of this process count towards the next trim too: it comes sooner, never later.)
        let kept = o.raw.count("SELECT count(*) FROM output_log");
        assert!(kept as usize <= HISTORY_PER_ENDPOINT as usize + super::console::BOUND_EVERY, "{kept} kept");
    }
    assert_eq!(o.store.outbox_len().unwrap(), 0);
}

#[test]
fn a_replica_that_finds_the_expiry_lock_taken_keeps_its_place_in_the_sweep() {
    let (a, _, url) = pair("expiry-lock", Duration::from_secs(10));
    a.accept(&key_of("s1"), JobKind::Message, "{}").unwrap();
    let cursor = key_of("s0");
    // Another replica's sweep holds the lock for a moment.
    let mut other = raw(&url);
    other.execute("SELECT pg_advisory_lock($1)", &[&super::sessions::EXPIRY_LOCK]).unwrap();
    let (forgotten, next) = a.expire_step(Some(&cursor), i64::MAX, 0, 10_000).unwrap();
    assert_eq!((forgotten, next), (0, Some(cursor)), "the sweep goes on from its place next time");
    other.execute("SELECT pg_advisory_unlock($1)", &[&super::sessions::EXPIRY_LOCK]).unwrap();
}
