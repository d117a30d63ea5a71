//! Outbound calls never hold a worker (issue 13, item 1): a turn waiting for an `http` node's
//! answer is parked, its call is made on a call thread (`limits.maxConcurrentCalls`, round
//! robin between endpoints), and the answer resumes it on any worker.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bot::{Mock, MockReply};
use crate::child::{Launch, Metrics};
use crate::support::*;

/// A slow API: every answer is held until the test releases it.
/// (Its threads hold a request at most 30 s: a bound, not a timing assumption.)
fn slow_api() -> Mock {
    let api = Mock::new(|_| MockReply::json(200, json!({ "ok": true })));
    api.hold();
    api
}

/// `fast` answers at once; anything else calls the API first.
fn flow(api: &Mock) -> Value {
    json!({ "name": "parking", "nodes": [
        { "type": "if", "condition": "input.text == 'fast'",
          "then": [ { "type": "say", "text": "fast" } ],
          "else": [
            { "type": "http", "method": "GET", "url": api.url("/slow"), "contextKey": "api", "timeoutMs": 20000 },
            { "type": "say", "text": "slow {{input.text}}" }
          ] }
    ]})
}

fn gauge(app: &App, name: &str) -> f64 {
    let r = request("GET", &app.url("/metrics"), None, &[]);
    Metrics::parse(&r.body).find(name, &[]).first().map_or(f64::NAN, |s| s.value)
}

/// Waits (bounded) until `name` reads `want`.
fn wait_gauge(app: &App, name: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    while gauge(app, name) != want {
        assert!(Instant::now() < deadline, "{name} never reached {want} (now {})", gauge(app, name));
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn four_parked_calls_on_two_workers_do_not_stop_a_fifth_session() {
    let sink = Sink::new();
    let api = slow_api();
    let mut cfg = config(&sink.url);
    cfg["workers"] = json!(2);
    let app = App::start("parking-five", &cfg, &[("flow.json", &flow(&api))]);
    for s in 0..4 {
        app.send("u", &format!("slow{s}"), &format!("m{s}"));
    }
    // All four calls are made at once, on two workers: the turns are parked, not blocking.
    for _ in 0..4 {
        assert_eq!(api.recv(WAIT).url, "/slow");
    }
    app.send("u", "quick", "fast");
    let hit = sink.recv(WAIT);
    assert_eq!((hit.session_id(), hit.text()), ("quick", "fast"), "delivered while four calls are held");
    assert_eq!(gauge(&app, "hookflow_calls_in_flight"), 4.0);
    api.release();
    let mut texts: Vec<String> = sink.recv_n(4, WAIT).iter().map(|h| h.text().to_owned()).collect();
    texts.sort();
    assert_eq!(texts, ["slow m0", "slow m1", "slow m2", "slow m3"]);
    wait_gauge(&app, "hookflow_calls_in_flight", 0.0);
    assert_eq!(gauge(&app, "hookflow_calls_total"), 4.0);
}

#[test]
fn max_concurrent_calls_bounds_the_calls_in_flight_and_the_rest_wait() {
    let sink = Sink::new();
    let api = slow_api();
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "maxConcurrentCalls": 2 });
    let app = App::start("parking-cap", &cfg, &[("flow.json", &flow(&api))]);
    for s in 0..4 {
        app.send("u", &format!("s{s}"), &format!("m{s}"));
    }
    // Both gauges settle there (on the way, a call submitted before a call thread took the one
    // before it shows as waiting: 2 waiting and 1 in flight is a passing state).
    wait_gauge(&app, "hookflow_calls_in_flight", 2.0);
    wait_gauge(&app, "hookflow_calls_waiting", 2.0);
    api.recv(WAIT);
    api.recv(WAIT);
    assert!(api.rx.try_recv().is_err(), "a third call went out past limits.maxConcurrentCalls 2");
    api.release();
    assert_eq!(sink.recv_n(4, WAIT).len(), 4);
    assert_eq!(api.rx.try_iter().count(), 2, "the two waiting calls were made once released");
}

#[test]
fn waiting_calls_are_taken_round_robin_between_endpoints() {
    let sink = Sink::new();
    let api = Mock::new(|_| MockReply::json(200, json!({})));
    api.hold();
    let flow_of = |tag: &str| {
        json!({ "nodes": [
            { "type": "http", "method": "GET", "url": api.url(&format!("/{tag}/{{{{input.text}}}}")), "contextKey": "r" },
            { "type": "say", "text": "{{input.text}}" }
        ]})
    };
    let mut cfg = config(&sink.url);
    cfg["limits"] = json!({ "maxConcurrentCalls": 1 });
    let mut b = endpoint("b", "b-token-0123456789abcdef", &sink.url);
    b["flow"] = json!("b.json");
    cfg["endpoints"].as_array_mut().unwrap().push(b);
    let app = App::start("parking-fair", &cfg, &[("flow.json", &flow_of("a")), ("b.json", &flow_of("b"))]);
    // One at a time, each parked before the next is sent, so the queue order is the send order.
    app.send("u", "a1", "1");
    assert_eq!(api.recv(WAIT).url, "/a/1");
    for (n, waiting) in [(2, 1.0), (3, 2.0)] {
        app.send("u", &format!("a{n}"), &format!("{n}"));
        wait_gauge(&app, "hookflow_calls_waiting", waiting);
    }
    send_to(&app.url("/b-token-0123456789abcdef"), &json!({ "userId": "u", "sessionId": "b1", "text": "1" }));
    wait_gauge(&app, "hookflow_calls_waiting", 3.0);
    // One call at a time from here: A's next, then B's (not after all of A's), then A's last.
    api.release();
    let order: Vec<String> = (0..3).map(|_| api.recv(WAIT).url).collect();
    assert_eq!(order, ["/a/2", "/b/1", "/a/3"]);
    assert_eq!(sink.recv_n(4, WAIT).len(), 4);
}

#[test]
fn kill_9_with_parked_calls_makes_them_again_and_every_turn_ends_once() {
    let dir = TempDir::new("parking-kill");
    let sink = Sink::new();
    let api = slow_api();
    let write = |port: u16| {
        let mut cfg = config(&sink.url);
        cfg["listen"] = json!(format!("127.0.0.1:{port}"));
        write_files(&dir.path, &cfg, &[("flow.json", &flow(&api))])
    };
    let mut first = Launch::new(&write(free_port()), dir.join("first.log")).start();
    for s in 0..3 {
        send_to(
            &format!("{}/{TOKEN}", first.base),
            &json!({ "userId": "u", "sessionId": format!("s{s}"), "text": format!("m{s}") }),
        );
    }
    for _ in 0..3 {
        api.recv(WAIT);
    }
    first.kill9();
    let second = Launch::new(&write(free_port()), dir.join("second.log")).start();
    for _ in 0..3 {
        assert_eq!(api.recv(WAIT).url, "/slow", "a parked call is made again after the restart");
    }
    api.release();
    let mut texts: Vec<String> = sink.recv_n(3, WAIT).iter().map(|h| h.text().to_owned()).collect();
    texts.sort();
    assert_eq!(texts, ["slow m0", "slow m1", "slow m2"], "{}", second.log_text());
    for s in 0..3 {
        let r = admin_get(&format!("{}/api/sessions/main/u/s{s}", second.base));
        assert_eq!(r.json()["messageCount"], 1, "each message counted once: {}", r.body);
    }
}

#[test]
fn at_shutdown_a_turn_parked_at_two_http_nodes_finishes_within_the_drain() {
    let sink = Sink::new();
    let api = slow_api();
    let flow = json!({ "nodes": [
        { "type": "http", "method": "GET", "url": api.url("/one"), "contextKey": "a", "timeoutMs": 30000 },
        { "type": "http", "method": "POST", "url": api.url("/two"), "contextKey": "b", "timeoutMs": 30000 },
        { "type": "say", "text": "done {{input.text}}" }
    ]});
    let mut cfg = config(&sink.url);
    cfg["workers"] = json!(1);
    cfg["delivery"]["drainSeconds"] = json!(10);
    let mut app = App::start("parking-shutdown", &cfg, &[("flow.json", &flow)]);
    app.send("u", "s", "m0");
    assert_eq!(api.recv(WAIT).url, "/one");
    let readyz = app.url("/readyz");
    std::thread::scope(|scope| {
        let stopping = scope.spawn(|| app.shutdown());
        // Shutdown has begun once /readyz says so; only then are the calls answered.
        let deadline = Instant::now() + WAIT;
        while request("GET", &readyz, None, &[]).status == 200 {
            assert!(Instant::now() < deadline, "/readyz never reported the shutdown");
        }
        api.release();
        stopping.join().expect("shutdown");
    });
    // The turn parked again at its second node during the shutdown, and still finished.
    assert_eq!(api.rx.try_iter().map(|h| h.url).collect::<Vec<_>>(), ["/two"]);
    assert_eq!(sink.recv(WAIT).text(), "done m0");
    app.boot();
    let s = admin_get(&app.url("/api/sessions/main/u/s"));
    assert_eq!(s.json()["messageCount"], 1, "{}", s.body);
    assert!(api.rx.try_recv().is_err(), "no call was made again after the restart");
}

#[test]
fn a_session_forgotten_while_its_turn_is_parked_ends_that_turn_on_its_own_context() {
    let sink = Sink::new();
    let api = slow_api();
    let flow = json!({ "nodes": [
        { "type": "code", "code": "context.x = 'kept';" },
        { "type": "http", "method": "GET", "url": api.url("/one"), "contextKey": "a", "timeoutMs": 30000 },
        { "type": "say", "text": "x={{context.x}}" }
    ]});
    let app = App::start("parking-forget", &config(&sink.url), &[("flow.json", &flow)]);
    app.send("u", "s", "m0");
    api.recv(WAIT);
    let r = request("DELETE", &app.url("/api/sessions/main/u/s"), None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(r.status, 200, "{}", r.body);
    api.release();
    assert_eq!(sink.recv(WAIT).text(), "x=kept", "the rest of the turn runs on the turn's own context");
    // ... and the forget holds: the turn's new state was not written back.
    let s = admin_get(&app.url("/api/sessions/main/u/s"));
    assert_eq!(s.status, 404, "{}", s.body);
}
