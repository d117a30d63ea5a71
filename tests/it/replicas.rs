//! replicas.md end to end: several `hookflow serve` processes on one PostgreSQL database (a
//! throwaway server started by the tests, `tests/pgserver.rs`), clients spraying messages round
//! robin over them, and what holds when a replica is killed or the database goes away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bot::run_cli;
use crate::child::{Launch, Metrics, Proc};
use crate::pgserver;
use crate::support::*;

#[path = "replicas_handover.rs"]
mod handover;
#[path = "replicas_lanes.rs"]
mod lanes;
#[path = "replicas_partition.rs"]
mod partition;
#[path = "replicas_setup.rs"]
mod setup;

/// The webhook secret of the test endpoint: outputs then carry `webhook-id`, by which a
/// duplicate delivery is recognised.
const SECRET: &str = "whsec_dGhlLXJlcGxpY2EtdGVzdC1zZWNyZXQ=";

/// A config for replicas on `db`: short leases (3 s), so take-over tests are quick.
fn replica_config(dir: &TempDir, webhook: &str, db: &str) -> PathBuf {
    let mut cfg = config(webhook);
    cfg["store"] = json!({"type": "postgres", "url": db, "tls": "disable", "leaseSeconds": 3});
    cfg["endpoints"][0]["webhook"]["secret"] = json!(SECRET);
    cfg["delivery"]["retrySchedule"] = json!(vec![0.1; 30]);
    write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())])
}

fn start(path: &std::path::Path, dir: &TempDir, name: &str) -> Proc {
    Launch::new(path, dir.join(&format!("{name}.log"))).start()
}

/// Sends `per_session` messages to each of `sessions` sessions, message m of session s to
/// replica `(s + m) % n` (so consecutive messages of a session reach different replicas); each
/// session's messages one after another, the sessions in parallel. Returns what was acknowledged,
/// per session, in order (a refused message is not retried and not counted).
fn spray(urls: &[String], sessions: usize, per_session: usize, tag: &str, part: &str) -> HashMap<String, Vec<String>> {
    let clients: Vec<_> = (0..sessions)
        .map(|s| {
            let urls = urls.to_vec();
            let (tag, part) = (tag.to_owned(), part.to_owned());
            std::thread::spawn(move || {
                let session = format!("{tag}{s}");
                let mut acked = Vec::new();
                for m in 0..per_session {
                    let url = &urls[(s + m) % urls.len()];
                    let text = format!("{session}-{part}{m}");
                    let body = json!({"userId": "u", "sessionId": session, "text": text});
                    if let Ok((200, _, _)) = crate::child::try_post(url, &body) {
                        acked.push(text);
                    }
                }
                (session, acked)
            })
        })
        .collect();
    clients.into_iter().map(|c| c.join().expect("a client thread failed")).collect()
}

/// Collects deliveries until every acknowledged text has arrived (or panics at `deadline`);
/// per session: (Seq, text, webhook-id) in arrival order.
fn collect(
    sink: &Sink,
    acked: &HashMap<String, Vec<String>>,
    timeout: Duration,
    db: &str,
) -> HashMap<String, Vec<(u64, String, String)>> {
    let deadline = Instant::now() + timeout;
    let mut got: HashMap<String, Vec<(u64, String, String)>> = HashMap::new();
    let missing = |got: &HashMap<String, Vec<(u64, String, String)>>| -> usize {
        acked
            .iter()
            .map(|(s, texts)| {
                let have =
                    got.get(s).map(|v| v.iter().map(|(_, t, _)| t.as_str()).collect::<Vec<_>>()).unwrap_or_default();
                texts.iter().filter(|t| !have.contains(&t.as_str())).count()
            })
            .sum()
    };
    while missing(&got) > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match sink.rx.recv_timeout(left) {
            Ok(h) if h.answered == 200 => got.entry(h.session_id().to_owned()).or_default().push((
                h.seq(),
                h.text().to_owned(),
                h.header("webhook-id").unwrap_or_default().to_owned(),
            )),
            Ok(_) => {}
            Err(_) => {
                let detail: Vec<String> = acked
                    .iter()
                    .filter_map(|(s, texts)| {
                        let have: Vec<&str> =
                            got.get(s).map(|v| v.iter().map(|(_, t, _)| t.as_str()).collect()).unwrap_or_default();
                        let lost: Vec<&String> = texts.iter().filter(|t| !have.contains(&t.as_str())).collect();
                        (!lost.is_empty()).then(|| format!("{s}: missing {lost:?}; got {:?}", got.get(s)))
                    })
                    .collect();
                panic!(
                    "{} acknowledged message(s) were not delivered within {timeout:?}:\n{}\nwork left in the database:\n{}",
                    missing(&got),
                    detail.join("\n"),
                    work_left(db)
                )
            }
        }
    }
    got
}

/// The sessions with queued messages or outputs, and their claims (for failure messages).
fn work_left(db: &str) -> String {
    let mut client = postgres::Client::connect(db, postgres::NoTls).expect("connect to the test database");
    let rows = client
        .query(
            "SELECT session_id, next_msg, pending, coalesce(run_owner, '-'), run_until - hookflow_now_ms(), outputs,
                    coalesce(dl_owner, '-'), dl_until - hookflow_now_ms()
             FROM queues WHERE pending > 0 OR outputs > 0 ORDER BY 1",
            &[],
        )
        .expect("read queues");
    let dead: i64 = client.query_one("SELECT count(*) FROM deadletters", &[]).expect("count").get(0);
    let inbox: i64 = client.query_one("SELECT count(*) FROM inbox", &[]).expect("count").get(0);
    let outbox: i64 = client.query_one("SELECT count(*) FROM outbox", &[]).expect("count").get(0);
    let summary = format!("deadletters={dead} inbox={inbox} outbox={outbox}\n");
    rows.iter()
        .map(|r| {
            format!(
                "{} next={} pending={} run={} ({} ms) outputs={} dl={} ({} ms)",
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, String>(3),
                r.get::<_, i64>(4),
                r.get::<_, i64>(5),
                r.get::<_, String>(6),
                r.get::<_, i64>(7)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
        + &summary
}

/// Every acknowledged message of a session was processed once, in acceptance order, and
/// delivered in Seq order; a repeated delivery (at-least-once) has the same Seq and webhook-id.
fn check_order(acked: &HashMap<String, Vec<String>>, got: &HashMap<String, Vec<(u64, String, String)>>) {
    for (session, texts) in acked {
        let mut outputs = got.get(session).cloned().unwrap_or_default();
        // Duplicates: the same output again (same Seq, text and webhook-id) right after a
        // take-over; drop them once checked.
        let mut seen: HashMap<u64, (String, String)> = HashMap::new();
        outputs.retain(|(seq, text, id)| match seen.get(seq) {
            Some(first) => {
                assert_eq!(
                    first,
                    &(text.clone(), id.clone()),
                    "session {session}: Seq {seq} delivered with two bodies"
                );
                false
            }
            None => {
                seen.insert(*seq, (text.clone(), id.clone()));
                true
            }
        });
        let seqs: Vec<u64> = outputs.iter().map(|o| o.0).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "session {session}: Seq not strictly increasing: {seqs:?}");
        let order: Vec<&str> = outputs.iter().map(|o| o.1.as_str()).collect();
        let want: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert_eq!(
            order,
            want,
            "session {session}: processed or delivered out of acceptance order: {outputs:?} all: {:?}",
            got.get(session)
        );
    }
}

#[test]
fn three_replicas_keep_per_session_order_for_fifty_sessions_of_twenty_messages() {
    let dir = TempDir::new("replicas-order");
    let sink = Sink::new();
    let db = pgserver::fresh_db("order");
    let path = replica_config(&dir, &sink.url, &db);
    let replicas: Vec<Proc> = (0..3).map(|i| start(&path, &dir, &format!("replica{i}"))).collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url(&format!("/{TOKEN}"))).collect();

    let acked = spray(&urls, 50, 20, "s", "m");
    let n: usize = acked.values().map(Vec::len).sum();
    let logs: Vec<String> = replicas.iter().map(Proc::log_text).collect();
    assert_eq!(n, 1000, "every message is acknowledged; logs:\n{}", logs.join("\n---\n"));
    let got = collect(&sink, &acked, Duration::from_secs(90), &db);
    check_order(&acked, &got);
    // Each replica did part of the work: the claims spread the sessions. Each one's metrics
    // name it.
    let mut names = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let text = crate::child::try_get(&r.url("/metrics")).expect("metrics").1;
        let info = text.lines().find(|l| l.starts_with("hookflow_replica_info{replica=\"")).expect("a replica's name");
        assert!(info.ends_with("\"} 1"), "{info}");
        names.push(info.to_owned());
        let metrics = Metrics::parse(&text);
        assert!(
            metrics.sum("hookflow_flow_run_seconds_count", &[]) > 0.0,
            "replica {i} ran no turn:\n{}",
            r.log_text()
        );
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "three names: {names:?}");
}

#[test]
fn a_replica_killed_mid_stream_loses_nothing_acknowledged() {
    let dir = TempDir::new("replicas-kill");
    let sink = Sink::new();
    let db = pgserver::fresh_db("kill");
    let path = replica_config(&dir, &sink.url, &db);
    let mut replicas: Vec<Proc> = (0..3).map(|i| start(&path, &dir, &format!("replica{i}"))).collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url(&format!("/{TOKEN}"))).collect();

    // The first half reaches all three; the killed replica holds claims and queued work then.
    let mut acked = spray(&urls, 20, 10, "k", "m");
    replicas[0].kill9();
    // The second half goes to the survivors only (a load balancer takes the dead one out).
    for (session, texts) in spray(&urls[1..], 20, 10, "k", "n") {
        acked.entry(session).or_default().extend(texts);
    }
    let got = collect(&sink, &acked, Duration::from_secs(60), &db);
    check_order(&acked, &got);
}

#[test]
fn two_replicas_starting_at_once_on_an_empty_database_create_the_schema_once() {
    let dir = TempDir::new("replicas-start");
    let sink = Sink::new();
    let db = pgserver::fresh_db("start");
    let path = replica_config(&dir, &sink.url, &db);
    let starters: Vec<_> = (0..2)
        .map(|i| {
            let (path, log) = (path.clone(), dir.join(&format!("r{i}.log")));
            std::thread::spawn(move || Launch::new(&path, log).start())
        })
        .collect();
    let replicas: Vec<Proc> = starters.into_iter().map(|s| s.join().expect("a replica failed to start")).collect();
    let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let versions: Vec<i64> =
        client.query("SELECT version FROM hookflow_schema", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, [hookflow::store::postgres::schema::VERSION], "one schema row, the current version");
    // Both serve.
    for r in &replicas {
        send_to(&r.url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "both", "text": r.pid.to_string()}));
    }
    let hits = recv_or(&sink, 2, &db, &replicas);
    let mut texts: Vec<String> = hits.iter().map(|h| h.text().to_owned()).collect();
    texts.sort();
    let mut want: Vec<String> = replicas.iter().map(|r| r.pid.to_string()).collect();
    want.sort();
    assert_eq!(texts, want);
}

#[test]
fn a_replica_refuses_a_database_of_a_newer_schema() {
    let dir = TempDir::new("replicas-newer");
    let db = pgserver::fresh_db("newer");
    let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "CREATE TABLE hookflow_schema (version BIGINT NOT NULL); INSERT INTO hookflow_schema VALUES (99)",
        )
        .unwrap();
    let path = replica_config(&dir, "http://127.0.0.1:9/hook", &db);
    let out = run_cli(&["serve", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(out.status.code(), Some(2), "exit 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schema version 99")
            && stderr.contains(&format!("this hookflow's {}", hookflow::store::postgres::schema::VERSION)),
        "{stderr}"
    );
}

/// The next `n` deliveries; on a timeout, panics with the work left and the replicas' logs.
fn recv_or(sink: &Sink, n: usize, db: &str, replicas: &[Proc]) -> Vec<crate::support::Hit> {
    let deadline = Instant::now() + WAIT;
    let mut hits = Vec::new();
    while hits.len() < n {
        match sink.rx.recv_deadline(deadline) {
            Ok(h) => hits.push(h),
            Err(_) => {
                let logs: Vec<String> = replicas.iter().map(Proc::log_text).collect();
                panic!(
                    "{} of {n} deliveries; work left:\n{}\nlogs:\n{}",
                    hits.len(),
                    work_left(db),
                    logs.join("\n---\n")
                );
            }
        }
    }
    hits
}

#[test]
fn the_database_stopped_and_started_mid_stream_loses_nothing_and_needs_no_restart() {
    // A server of its own: stopping it must not disturb the other tests. Its commits are
    // durable before they are answered (synchronous_commit on, as PostgreSQL's default): the
    // test servers' `off` trades exactly that for speed, and an immediate stop then forgets
    // the last commits, acknowledged accepts and finished turns among them.
    let server = pgserver::PgServer::start_with("restart", &["synchronous_commit=on"]);
    let dir = TempDir::new("replicas-db-restart");
    let sink = Sink::new();
    let db = server.fresh_db("restart");
    let path = replica_config(&dir, &sink.url, &db);
    let replicas: Vec<Proc> = (0..2).map(|i| start(&path, &dir, &format!("replica{i}"))).collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url(&format!("/{TOKEN}"))).collect();

    let mut acked = spray(&urls, 10, 5, "d", "a");
    server.stop();
    // While it is down: new messages are refused with 503 store_unavailable and Retry-After,
    // and the replicas say they are not ready.
    let (status, headers, answer) =
        crate::child::try_post(&urls[0], &json!({"userId": "u", "sessionId": "down", "text": "x"})).expect("answered");
    assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("store_unavailable")), "{answer}");
    assert!(headers.is_some(), "Retry-After is set");
    for r in &replicas {
        wait_until(Duration::from_secs(15), || {
            crate::child::try_get(&r.url("/readyz")).is_ok_and(|(s, _)| s == 503).then_some(())
        })
        .unwrap_or_else(|| panic!("/readyz stayed 200 while the database was down:\n{}", r.log_text()));
        // The metrics still answer, with the replica's own queue depth (the database's cannot
        // be counted).
        let (status, text) = crate::child::try_get(&r.url("/metrics")).expect("answered");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\nhookflow_inbound_queue_depth "), "{text}");
    }
    server.start_again();
    for r in &replicas {
        wait_until(Duration::from_secs(15), || {
            crate::child::try_get(&r.url("/readyz")).is_ok_and(|(s, _)| s == 200).then_some(())
        })
        .unwrap_or_else(|| panic!("/readyz did not recover:\n{}", r.log_text()));
    }
    for (session, texts) in spray(&urls, 10, 5, "d", "b") {
        acked.entry(session).or_default().extend(texts);
    }
    let got = collect(&sink, &acked, Duration::from_secs(60), &db);
    check_order(&acked, &got);
}

#[test]
fn a_replay_from_one_replica_goes_out_once_in_order_while_another_delivers() {
    let dir = TempDir::new("replicas-replay");
    let sink = Sink::new();
    let db = pgserver::fresh_db("replay");
    let path = replica_config(&dir, &sink.url, &db);
    let replicas: Vec<Proc> = (0..2).map(|i| start(&path, &dir, &format!("replica{i}"))).collect();
    // The first output is refused (a 4xx is final): a dead letter.
    sink.script(&[400]);
    send_to(&replicas[0].url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "r", "text": "first"}));
    assert_eq!(sink.recv(WAIT).answered, 400);
    let dead = wait_until(WAIT, || {
        let r = admin_get(&replicas[1].url("/api/deadletters"));
        r.json()["deadLetters"].as_array().filter(|l| !l.is_empty()).cloned()
    })
    .expect("the refused output is a dead letter, seen from the other replica");
    let id = dead[0]["id"].as_i64().expect("a dead letter id");
    // More messages of the session go through the first replica while the second replays.
    send_to(&replicas[0].url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "r", "text": "second"}));
    let replay =
        request("POST", &replicas[1].url(&format!("/api/deadletters/{id}/replay")), None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(replay.status, 200, "{}\n{}", replay.body, replicas[1].log_text());
    send_to(&replicas[0].url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "r", "text": "third"}));
    let hits = sink.recv_n(3, WAIT);
    let mut got: Vec<(u64, String)> = hits.iter().map(|h| (h.seq(), h.text().to_owned())).collect();
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "Seq strictly increasing: {got:?}");
    got.sort();
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    let mut sorted = texts.clone();
    sorted.sort();
    assert_eq!(sorted, ["first", "second", "third"], "the replay went out once, beside the new outputs");
    assert!(sink.rx.recv_timeout(Duration::from_millis(500)).is_err(), "nothing is sent twice");
}

#[test]
fn messages_injects_and_notifies_of_a_session_keep_their_order_across_replicas() {
    let dir = TempDir::new("replicas-inject");
    let sink = Sink::new();
    let db = pgserver::fresh_db("inject");
    let path = replica_config(&dir, &sink.url, &db);
    let replicas: Vec<Proc> = (0..2).map(|i| start(&path, &dir, &format!("replica{i}"))).collect();
    // Message, inject, notify, in turn, each to the other replica than the one before.
    let mut sent = Vec::new();
    for i in 0..12 {
        let route = ["", "inject/", "notify/"][i % 3];
        let url = replicas[i % 2].url(&format!("/{route}{TOKEN}?api_key={ADMIN_KEY}"));
        let text = format!("t{i}");
        let got = crate::child::try_post(&url, &json!({"userId": "u", "sessionId": "s", "text": text}));
        assert!(matches!(got, Ok((200, _, _))), "{route}: {got:?}");
        sent.push(text);
    }
    // The echo Flow says a message's and an inject's text; a notify is its text as given.
    let got: Vec<(u64, String)> =
        sink.recv_n(12, Duration::from_secs(30)).iter().map(|h| (h.seq(), h.text().to_owned())).collect();
    let want: Vec<(u64, String)> = sent.into_iter().enumerate().map(|(i, t)| (i as u64 + 1, t)).collect();
    assert_eq!(got, want);
}

/// Polls `f` until it gives `Some` or `timeout` passes.
fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T>
where
    T: Sized,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn store_copy_moves_a_stopped_sqlite_store_into_postgres_and_replicas_go_on_from_it() {
    let dir = TempDir::new("replicas-copy");
    let refusing = Sink::with_status(503);
    // A single-node hookflow on SQLite: a conversation with state and a transcript, an output
    // still undelivered (the webhook refuses), then stopped.
    let mut cfg = on_sqlite(config(&refusing.url));
    cfg["endpoints"][0]["dataProtection"] = json!({"collectConversations": true});
    cfg["delivery"]["retrySchedule"] = json!(vec![1; 5]);
    let counter = json!({"name": "count", "nodes": [
        {"type": "setContext", "key": "n", "value": "{{ (context.n || 0) + 1 }}"},
        {"type": "say", "text": "{{input.text}} #{{context.n}}"}
    ]});
    let path = write_files(&dir.path, &cfg, &[("flow.json", &counter)]);
    let mut single = Launch::new(&path, dir.join("single.log")).start();
    send_to(&single.url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "c", "text": "one"}));
    assert_eq!(refusing.recv(WAIT).answered, 503, "the output waits in the outbox");
    single.signal("TERM");
    single.wait_exit(WAIT).expect("the single node stops");

    let db = pgserver::fresh_db("copy");
    // Bad input first: an unknown action, a URL that is not PostgreSQL's, a data dir with no store.
    let out = run_cli(&["store", "cpy"], &[], "", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean \"copy\"?"), "{out:?}");
    let out = run_cli(&["store", "copy", "--config", path.to_str().unwrap(), "--to", "mysql://x"], &[], "", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to expects a URL like postgres://"), "{out:?}");
    // The URL is checked as store.url is, and the message names --to (it said store.url).
    let verify = "postgres://h@127.0.0.1:1/x?sslmode=verify-full";
    let out = run_cli(&["store", "copy", "--config", path.to_str().unwrap(), "--to", verify], &[], "", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--to: sslmode=verify-ca and verify-full are libpq's"),
        "{out:?}"
    );
    let empty = dir.join("nowhere");
    let out = run_cli(
        &["store", "copy", "--config", path.to_str().unwrap(), "--data-dir", empty.to_str().unwrap(), "--to", &db],
        &[],
        "",
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SQLite store at"), "{out:?}");
    let out = run_cli(&["store", "copy", "--config", path.to_str().unwrap(), "--to", &db], &[], "", None);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("copied 1 session(s)") && said.contains("1 undelivered output(s)"), "{said}");
    // The single node's store is marked: starting on it (which sent every copied output a
    // second time) and copying it again are refused, naming the mark.
    assert!(said.contains("now refuses to start a single node"), "{said}");
    for args in [
        &["serve", "--config", path.to_str().unwrap()][..],
        &["store", "copy", "--config", path.to_str().unwrap(), "--to", &db],
    ] {
        let out = run_cli(args, &[], "", None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("this store was copied to PostgreSQL (postgres://…@127.0.0.1:"), "{stderr}");
        assert!(stderr.contains("To start on it anyway, delete "), "{stderr}");
    }
    std::fs::remove_file(dir.join("data").join(hookflow::store::sqlite::COPIED_MARK)).unwrap();
    // A second copy into the same (no longer empty) database is refused, naming the table.
    let again = run_cli(&["store", "copy", "--config", path.to_str().unwrap(), "--to", &db], &[], "", None);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"), "{:?}", again);

    // A replica on the copy: the waiting output goes out, the session goes on where it was
    // (context and Seq), and the transcript came along.
    let sink = Sink::new();
    let replica_path = replica_config(&dir, &sink.url, &db);
    let mut rcfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&replica_path).unwrap()).unwrap();
    rcfg["endpoints"][0]["dataProtection"] = json!({"collectConversations": true});
    std::fs::write(&replica_path, rcfg.to_string()).unwrap();
    std::fs::write(dir.join("flow.json"), counter.to_string()).unwrap();
    let replica = start(&replica_path, &dir, "replica");
    let first = sink.recv(WAIT);
    assert_eq!((first.seq(), first.text()), (1, "one #1"));
    send_to(&replica.url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "c", "text": "two"}));
    let second = sink.recv(WAIT);
    assert_eq!((second.seq(), second.text()), (2, "two #2"), "Seq and context go on from the copy");
    let session = admin_get(&replica.url("/api/sessions/main/u/c")).json();
    let lines: Vec<&str> =
        session["transcript"].as_array().expect("a transcript").iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(lines, ["one", "one #1", "two", "two #2"], "{session}");
}

#[test]
fn killing_the_replica_that_retries_a_failing_head_output_hands_it_over_in_order() {
    let dir = TempDir::new("replicas-kill-head");
    let sink = Sink::with_status(503);
    let db = pgserver::fresh_db("killhead");
    let path = replica_config(&dir, &sink.url, &db);
    let mut replicas: Vec<Proc> = (0..2).map(|i| start(&path, &dir, &format!("replica{i}"))).collect();
    let url = replicas[0].url(&format!("/{TOKEN}"));
    for m in 0..3 {
        send_to(&url, &json!({"userId": "u", "sessionId": "h", "text": format!("h{m}")}));
    }
    // The head is being retried (503) by one replica; the next outputs wait behind it.
    let first = sink.recv(WAIT);
    assert_eq!((first.seq(), first.text()), (1, "h0"));
    // Hold the next attempt in the middle of its POST: the replica making it holds the head's
    // delivery lease until the answer (which it will never get). Only once the first attempt
    // has its 503: held, it would be the attempt in the middle of its POST, already received.
    wait_until(WAIT, || (sink.responded() >= 1).then_some(())).expect("the first attempt is answered");
    sink.hold();
    sink.set_status(200);
    let held = sink.rx.recv_timeout(WAIT).unwrap_or_else(|_| {
        let logs: Vec<String> = replicas.iter().map(Proc::log_text).collect();
        panic!("the head was not tried again within {WAIT:?}:\n{}", logs.join("\n---\n"))
    });
    assert_eq!(held.seq(), 1, "the retry of the head");
    let mut c = postgres::Client::connect(&db, postgres::NoTls).expect("connect to the test database");
    let holder: String = c
        .query_one("SELECT dl_owner FROM queues WHERE session_id = 'h'", &[])
        .expect("the session's claims")
        .get::<_, Option<String>>(0)
        .expect("a replica holds the head's delivery lease while its POST waits");
    let i = replicas.iter().position(|r| holder.contains(&format!("-{}-", r.pid))).expect("the holder is a replica");
    replicas[i].kill9();
    sink.release();
    // The other replica takes the head over after the lease (3 s) and sends all three in order;
    // h0 may have been tried more than once (same Seq and webhook-id).
    let mut got: Vec<(u64, String, String)> = Vec::new();
    while got.iter().filter(|h| h.1 != "h0").count() < 2 || !got.iter().any(|h| h.1 == "h0") {
        let h = sink.recv(Duration::from_secs(15));
        if h.answered == 200 {
            got.push((h.seq(), h.text().to_owned(), h.header("webhook-id").unwrap_or_default().to_owned()));
        }
    }
    // A repeat of h0 is the same output (Seq and webhook-id), and only before h1.
    let h1_at = got.iter().position(|h| h.1 == "h1").expect("h1 arrived");
    assert!(got[h1_at..].iter().all(|h| h.1 != "h0"), "h0 again after h1: {got:?}");
    assert!(got.iter().filter(|h| h.1 == "h0").all(|h| h.0 == 1 && h.2 == first.header("webhook-id").unwrap()));
    got.dedup_by(|a, b| a.0 == b.0);
    let order: Vec<(u64, &str)> = got.iter().map(|h| (h.0, h.1.as_str())).collect();
    assert_eq!(order, [(1, "h0"), (2, "h1"), (3, "h2")], "in order after the take-over");
}
