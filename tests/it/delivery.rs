//! http-api.md §2 "Delivery rules": retries keep the Seq and the order, final failures become
//! dead letters, visible and replayable through the admin API.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn app(name: &str, sink: &Sink) -> App {
    App::start(name, &config(&sink.url), &[("flow.json", &echo_flow())])
}

fn summary(hits: &[Hit]) -> Vec<(u64, String, u16)> {
    hits.iter().map(|h| (h.seq(), h.text().to_owned(), h.answered)).collect()
}

fn s(seq: u64, text: &str, answered: u16) -> (u64, String, u16) {
    (seq, text.to_owned(), answered)
}

fn dead_letters(app: &App) -> Vec<Value> {
    let r = admin_get(&app.url("/api/deadletters"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["deadLetters"].as_array().unwrap_or_else(|| panic!("no deadLetters array: {}", r.body)).clone()
}

#[test]
fn a_failed_delivery_is_retried_with_the_same_seq_and_holds_back_the_next() {
    let sink = Sink::new();
    sink.script(&[500, 500]);
    let app = app("retry", &sink);
    app.send("u", "s", "one");
    app.send("u", "s", "two");
    let hits = sink.recv_n(4, WAIT);
    assert_eq!(summary(&hits), [s(1, "one", 500), s(1, "one", 500), s(1, "one", 200), s(2, "two", 200)]);
    assert!(hits[..3].iter().all(|h| h.raw == hits[0].raw), "a retry sends the same body");
}

#[test]
fn timeouts_429_408_and_5xx_are_retried() {
    let sink = Sink::new();
    sink.script(&[429, 408, 503]);
    let mut cfg = config(&sink.url);
    cfg["delivery"]["retrySchedule"] = json!([0.05, 0.05, 0.05]);
    let app = App::start("retry-classes", &cfg, &[("flow.json", &echo_flow())]);
    app.send("u", "s", "x");
    let hits = sink.recv_n(4, WAIT);
    assert_eq!(summary(&hits), [s(1, "x", 429), s(1, "x", 408), s(1, "x", 503), s(1, "x", 200)]);
}

#[test]
fn a_4xx_answer_makes_a_dead_letter_that_can_be_replayed() {
    let sink = Sink::new();
    sink.script(&[400]);
    let app = app("deadletter", &sink);
    let trace = app.send("u", "s", "doomed");
    app.send("u", "s", "after");
    // A 400 is final: no retry; the next output goes out once the first is a dead letter.
    let hits = sink.recv_n(2, WAIT);
    assert_eq!(summary(&hits), [s(1, "doomed", 400), s(2, "after", 200)]);

    let r = request("GET", &app.url("/api/deadletters"), None, &[]);
    assert_error(r.status, &r.json(), 401, "unauthorized");

    let list = dead_letters(&app);
    assert_eq!(list.len(), 1, "{list:?}");
    let d = &list[0];
    assert_eq!(
        (d["endpoint"].as_str(), d["userId"].as_str(), d["sessionId"].as_str()),
        (Some("main"), Some("u"), Some("s"))
    );
    assert_eq!(d["seq"], 1);
    assert_eq!(d["attempts"], 1);
    assert!(d["lastError"].as_str().is_some_and(|e| e.contains("400")), "{d}");
    assert_eq!(d["body"], hits[0].body);
    assert_eq!(d["body"]["AIOutput"]["traceId"], trace);

    let id = d["id"].as_i64().expect("a numeric dead letter id");
    let replay = app.url(&format!("/api/deadletters/{id}/replay"));
    let r = request("POST", &replay, None, &[]);
    assert_error(r.status, &r.json(), 401, "unauthorized");
    let r = request("POST", &replay, None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(r.status, 200, "{}", r.body);
    // The answer names the new output and its Seq.
    let queued = r.json();
    assert_eq!((&queued["status"], &queued["seq"]), (&json!("queued"), &json!(3)), "{queued}");
    let new_id = queued["outputId"].as_i64().expect("the new output's id");
    assert_ne!(new_id, id, "a new output, not the dead letter's id");
    // A second replay of the same dead letter: it is gone.
    let again = request("POST", &replay, None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(again.status, 404, "{}", again.body);

    // The same output again, as the session's next output: Seq keeps increasing, so receivers
    // that drop outputs with a Seq they have seen do not drop the replay.
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.answered), (3, 200));
    assert_eq!(h.raw, hits[0].raw, "the replay sends the same output again");
    app.send("u", "s", "next");
    assert_eq!(sink.recv(WAIT).seq(), 4);

    let r = request("POST", &app.url("/api/deadletters/987654/replay"), None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn an_output_that_keeps_failing_becomes_a_dead_letter_after_the_schedule() {
    let sink = Sink::new();
    sink.script(&[500, 502, 503]);
    let app = app("exhausted", &sink);
    app.send("u", "s", "never");
    app.send("u", "s", "later");
    // Schedule [0.05, 0.1]: three attempts, then a dead letter, then the next output.
    let hits = sink.recv_n(4, WAIT);
    assert_eq!(summary(&hits), [s(1, "never", 500), s(1, "never", 502), s(1, "never", 503), s(2, "later", 200)]);
    let list = dead_letters(&app);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!((list[0]["seq"].as_i64(), list[0]["attempts"].as_i64()), (Some(1), Some(3)));
    assert!(list[0]["lastError"].as_str().is_some_and(|e| e.contains("503")), "{}", list[0]);
}

/// The queued outputs of the endpoint `main`, as the store counts them (`/api/stats`).
fn queued(app: &App) -> i64 {
    let r = admin_get(&app.url("/api/stats"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["endpoints"][0]["queued"].as_i64().unwrap_or_else(|| panic!("no queued count: {}", r.body))
}

#[test]
fn an_output_committed_during_a_post_goes_out_before_the_delivered_one_is_written_down() {
    // Two clients' outputs arrive together; the second should not wait for the commit that
    // removes the first from the outbox (the low-load tail, docs/performance.md).
    // SQLite's lanes (delivery/lane.rs); with replicas a lane settles each claim of heads.
    let sink = Sink::new();
    sink.hold();
    let app = App::start("send-before-write", &on_sqlite(config(&sink.url)), &[("flow.json", &echo_flow())]);
    app.send("u", "a", "first");
    assert_eq!(sink.recv(WAIT).text(), "first");
    app.send("u", "b", "second");
    wait_for_turns(&app);
    assert_eq!(queued(&app), 2, "both outputs are in the outbox while the first POST is held");
    sink.release_one();
    // The second POST is recorded on arrival and held: the lane sent it right after the first's
    // answer, before it removed the first from the store.
    assert_eq!(sink.recv(WAIT).text(), "second");
    assert_eq!(queued(&app), 2, "the first output is written down only after the second went out");
    sink.release();
    let deadline = std::time::Instant::now() + WAIT;
    while queued(&app) != 0 {
        assert!(std::time::Instant::now() < deadline, "the delivered outputs were never removed from the outbox");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_sessions_retries_do_not_hold_up_another_session() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    // A long wait before the retry: the other session's output must not wait for it.
    cfg["delivery"]["retrySchedule"] = json!([1]);
    let app = App::start("retry-other", &cfg, &[("flow.json", &echo_flow())]);
    sink.script(&[503]);
    app.send("u1", "stuck", "first");
    let first = sink.recv(WAIT);
    assert_eq!((first.session_id(), first.answered), ("stuck", 503));
    app.send("u2", "free", "second");
    let next = sink.recv(WAIT);
    assert_eq!((next.session_id(), next.text(), next.answered), ("free", "second", 200));
    // ...and the retry of the first still comes, later.
    let retry = sink.recv(WAIT);
    assert_eq!((retry.session_id(), retry.seq(), retry.answered), ("stuck", 1, 200));
}

/// A Flow that says `data.n` numbered outputs in one turn.
fn burst_flow() -> Value {
    json!({ "name": "burst", "nodes": [
        { "type": "code", "code": "for (let i = 0; i < input.data.n; i++) api.say('o' + i);" }
    ] })
}

/// Waits until every accepted message has run its turn (the outputs are in the outbox).
fn wait_for_turns(app: &App) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let m = admin_get(&app.url("/metrics")).body;
        if m.lines().any(|l| l == "hookflow_inbound_queue_depth 0") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the turns did not finish:\n{m}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_down_target_with_a_long_backlog_does_not_hold_up_other_endpoints() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    // Nothing listens there: every attempt fails, and the next is a minute away.
    let down = format!("http://127.0.0.1:{CLOSED_PORT}/hook");
    cfg["delivery"]["retrySchedule"] = json!([60]);
    let mut other = endpoint("down", "down-token-0123456789", &down);
    other["flow"] = json!("burst.json");
    cfg["endpoints"].as_array_mut().unwrap().push(other);
    let app = App::start("down-backlog", &cfg, &[("flow.json", &echo_flow()), ("burst.json", &burst_flow())]);
    // More rows than a sender keeps in memory (4096), over more sessions than it keeps per
    // session (64 rows each): only the per-endpoint share lets the other endpoint through.
    for s in 0..100 {
        let msg = json!({ "userId": "u", "sessionId": format!("s{s}"), "data": { "n": 50 } });
        send_to(&app.url("/down-token-0123456789"), &msg);
    }
    wait_for_turns(&app);
    app.send("u", "healthy", "still delivered");
    let hit = sink.recv(WAIT);
    assert_eq!((hit.session_id(), hit.text()), ("healthy", "still delivered"));
}

#[test]
fn a_session_with_a_long_backlog_and_a_failing_head_does_not_hold_up_other_sessions() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["delivery"]["retrySchedule"] = json!([60]);
    cfg["endpoints"][0]["flow"] = json!("burst.json");
    let app = App::start("session-backlog", &cfg, &[("burst.json", &burst_flow())]);
    sink.script(&[503]);
    // Several windows' worth: reading past it takes several reads that each take in nothing new.
    send_to(&app.msg_url(), &json!({ "userId": "u", "sessionId": "flood", "data": { "n": 30_000 } }));
    let first = sink.recv(WAIT);
    assert_eq!((first.session_id(), first.text(), first.answered), ("flood", "o0", 503));
    send_to(&app.msg_url(), &json!({ "userId": "u", "sessionId": "free", "data": { "n": 1 } }));
    let hit = sink.recv(WAIT);
    assert_eq!((hit.session_id(), hit.text(), hit.answered), ("free", "o0", 200));
}

#[test]
fn a_session_longer_than_the_memory_window_is_delivered_whole_and_in_order() {
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["endpoints"][0]["flow"] = json!("burst.json");
    let app = App::start("session-spill", &cfg, &[("burst.json", &burst_flow())]);
    // 300 outputs: read back from the store in several rounds of 64, interleaved with another
    // session's outputs, and a failed attempt in the middle.
    sink.script(&[200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 500]);
    send_to(&app.msg_url(), &json!({ "userId": "u", "sessionId": "long", "data": { "n": 300 } }));
    send_to(&app.msg_url(), &json!({ "userId": "u", "sessionId": "short", "data": { "n": 100 } }));
    let hits = sink.recv_n(401, WAIT);
    for session in ["long", "short"] {
        let got: Vec<(u64, String)> = hits
            .iter()
            .filter(|h| h.session_id() == session && h.answered == 200)
            .map(|h| (h.seq(), h.text().to_owned()))
            .collect();
        let n = if session == "long" { 300 } else { 100 };
        let want: Vec<(u64, String)> = (0..n).map(|i| (i as u64 + 1, format!("o{i}"))).collect();
        assert_eq!(got, want, "session {session}");
    }
}

#[test]
fn many_long_sessions_are_delivered_whole_and_in_order_within_the_memory_window() {
    // 80 sessions × 80 outputs: more sessions than fit the window at 64 rows each, more rows
    // than the window. Debug builds check that no endpoint ever holds more than its share.
    const SESSIONS: usize = 80;
    const EACH: usize = 80;
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["endpoints"][0]["flow"] = json!("burst.json");
    let app = App::start("many-long", &cfg, &[("burst.json", &burst_flow())]);
    for s in 0..SESSIONS {
        send_to(&app.msg_url(), &json!({ "userId": "u", "sessionId": format!("s{s}"), "data": { "n": EACH } }));
    }
    let hits = sink.recv_n(SESSIONS * EACH, Duration::from_secs(60));
    let mut next = std::collections::HashMap::new();
    for h in &hits {
        let seq = next.entry(h.session_id().to_owned()).or_insert(1u64);
        assert_eq!((h.seq(), h.text()), (*seq, format!("o{}", *seq - 1).as_str()), "session {}", h.session_id());
        *seq += 1;
    }
    assert!(next.values().all(|&n| n == EACH as u64 + 1), "every session complete");
}

#[test]
fn a_long_session_goes_on_within_the_memory_window_while_delayed_outputs_fill_it() {
    // `long` has 200 outputs; its first attempt is held while 64 other sessions commit 64
    // delayed outputs each, which then fill the rest of the window while they wait. `long` reads
    // the rest of its rows into the room its delivered rows free, never over the window (debug
    // builds check the bound), so it goes on while the delayed outputs wait, and everything
    // arrives whole and in order.
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["endpoints"][0]["flow"] = json!("burst.json");
    let flow = json!({ "name": "burst", "nodes": [
        { "type": "if", "condition": "input.data.wait", "then": [ { "type": "sleep", "ms": 1500 } ] },
        { "type": "code", "code": "for (let i = 0; i < input.data.n; i++) api.say('o' + i);" }
    ] });
    let app = App::start("window-bound", &cfg, &[("burst.json", &flow)]);
    sink.hold();
    send_to(&app.msg_url(), &json!({ "userId": "u", "sessionId": "long", "data": { "n": 200 } }));
    sink.recv(WAIT);
    for s in 0..64 {
        let msg = json!({ "userId": "u", "sessionId": format!("w{s}"), "data": { "n": 64, "wait": true } });
        send_to(&app.msg_url(), &msg);
    }
    wait_for_turns(&app);
    sink.release();
    let hits = sink.recv_n(199 + 64 * 64, Duration::from_secs(60));
    let last_long = hits.iter().rposition(|h| h.session_id() == "long").expect("outputs of long");
    let first_delayed = hits.iter().position(|h| h.session_id() != "long").expect("delayed outputs");
    assert!(last_long < first_delayed, "long waited for the delayed outputs (its last at {last_long})");
    let mut next = std::collections::HashMap::from([("long".to_owned(), 2u64)]);
    for h in &hits {
        let seq = next.entry(h.session_id().to_owned()).or_insert(1u64);
        assert_eq!((h.seq(), h.text()), (*seq, format!("o{}", *seq - 1).as_str()), "session {}", h.session_id());
        *seq += 1;
    }
}

#[test]
fn outputs_of_a_removed_endpoint_become_dead_letters_that_replay_only_once_it_is_back() {
    let sink = Sink::new();
    sink.set_status(503);
    let mut cfg = config(&sink.url);
    cfg["delivery"]["retrySchedule"] = json!([60]);
    let mut app = App::start("removed-endpoint", &cfg, &[("flow.json", &echo_flow())]);
    app.send("u", "s", "orphan");
    assert_eq!(sink.recv(WAIT).answered, 503);
    app.shutdown();

    // Restart with the endpoint renamed: its output has no lane to go through.
    let mut renamed = cfg.clone();
    renamed["endpoints"][0]["name"] = json!("renamed");
    write_files(&app.dir.path, &renamed, &[("flow.json", &echo_flow())]);
    app.boot();
    let list = dead_letters(&app);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["endpoint"], "main");
    assert_eq!(list[0]["lastError"], "endpoint no longer configured");
    let path = format!("/api/deadletters/{}/replay", list[0]["id"]);
    let r = request("POST", &app.url(&path), None, &[("X-API-Key", ADMIN_KEY)]);
    let message = assert_error(r.status, &r.json(), 409, "endpoint_not_configured");
    assert!(message.contains("\"main\""), "{message}");
    app.shutdown();

    // With the endpoint back, the replay goes out.
    sink.set_status(200);
    write_files(&app.dir.path, &cfg, &[("flow.json", &echo_flow())]);
    app.boot();
    let r = request("POST", &app.url(&path), None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq(), h.answered), ("orphan", 2, 200));
}

#[test]
fn a_redirect_is_not_followed_but_retried_and_then_a_dead_letter() {
    // http-api.md §2: redirects are not followed (the output must not go to another URL).
    let elsewhere = Sink::new();
    let webhook = crate::child::Mock::with_status(200);
    let location: &'static str = Box::leak(elsewhere.url.clone().into_boxed_str());
    webhook.script(vec![(302, vec![("Location", location)]); 3]);
    let mut cfg = config(&webhook.url);
    cfg["delivery"]["retrySchedule"] = json!([0.05, 0.05]);
    let app = App::start("redirect", &cfg, &[("flow.json", &echo_flow())]);
    app.send("u", "s", "stay here");
    for _ in 0..3 {
        let (_, hit) = webhook.recv(WAIT);
        assert_eq!((hit.answered, hit.text()), (302, "stay here"));
    }
    let deadline = std::time::Instant::now() + WAIT;
    while admin_get(&app.url("/api/deadletters")).json()["deadLetters"].as_array().map_or(0, Vec::len) == 0 {
        assert!(std::time::Instant::now() < deadline, "no dead letter after three redirects");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(elsewhere.rx.try_recv().is_err(), "the redirect was followed");
}

#[test]
fn a_retried_delivery_failure_is_logged_at_the_default_level() {
    // README, Logs: RUST_LOG=info logs failed deliveries, not only dead letters.
    let sink = Sink::with_status(503);
    let dir = TempDir::new("retry-log");
    let mut cfg = config(&sink.url);
    cfg["delivery"]["retrySchedule"] = json!([60]);
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let p = crate::child::Launch::new(&path, dir.join("run.log")).start();
    send_to(&p.url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "s", "text": "x"}));
    assert_eq!(sink.recv(WAIT).answered, 503);
    let deadline = std::time::Instant::now() + WAIT;
    while !p.log_text().contains("endpoint main: delivery failed (HTTP 503); retrying in 60s") {
        assert!(std::time::Instant::now() < deadline, "no info line for the failed attempt:\n{}", p.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}
