//! http-api.md §2 "Delivery rules": retries keep the Seq and the order, final failures become
//! dead letters, visible and replayable through the admin API.

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

    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.answered), (1, 200));
    assert_eq!(h.raw, hits[0].raw, "the replay sends the same output again");

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
