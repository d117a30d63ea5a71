//! Operations: shutdown on SIGTERM/SIGINT (http-api.md §5), `/metrics` as Prometheus text (§4),
//! several sender lanes, `Retry-After`, probing a failing target, backpressure (503
//! `overloaded`), and memory under a flood while the receiver is down.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::child::*;
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Shutdown

#[test]
fn sigterm_refuses_new_messages_drains_exits_0_and_leaves_the_rest_for_the_next_start() {
    const N: usize = 5;
    const DRAIN_S: u64 = 2;
    let sink = Sink::new();
    sink.hold();
    let dir = TempDir::new("sigterm");
    let mut cfg = config(&sink.url);
    // The held attempt would last 6 s: longer than the drain.
    cfg["delivery"]["drainSeconds"] = json!(DRAIN_S);
    cfg["delivery"]["timeoutMs"] = json!(6_000);
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let mut first = Launch::new(&path, dir.join("first.log")).start();
    let url = first.url(&format!("/{TOKEN}"));
    for m in 0..N {
        send_to(&url, &json!({"userId": "u", "sessionId": "s", "text": format!("m{m}")}));
    }
    // Output 1 is being delivered: the sink has it and holds its answer.
    let held = sink.recv(WAIT);
    assert_eq!((held.seq(), held.text()), (1, "m0"));

    let signalled = Instant::now();
    first.signal("TERM");
    // Nothing tells when the signal has been handled: poll /readyz until it says 503.
    let deadline = signalled + Duration::from_secs(DRAIN_S);
    let ready = loop {
        let r = try_get(&first.url("/readyz")).expect("/readyz answers while draining");
        if r.0 == 503 {
            break r;
        }
        assert!(Instant::now() < deadline, "/readyz still answers {} after SIGTERM", r.0);
    };
    let body: serde_json::Value = serde_json::from_str(&ready.1).expect("a JSON answer");
    assert_eq!(body["error"]["code"], "not_ready", "the error shape: {}", ready.1);
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains("shutting")),
        "/readyz while draining: {}",
        ready.1
    );
    let (status, retry_after, answer) =
        try_post(&url, &json!({"userId": "u", "sessionId": "s", "text": "late"})).expect("POST while draining");
    assert_error(status, &answer, 503, "shutting_down");
    assert!(retry_after.as_deref().is_some_and(|v| v.parse::<u64>().is_ok()), "Retry-After: {retry_after:?}");
    let health = try_get(&first.url("/healthz")).expect("/healthz while draining");
    assert_eq!(health.0, 200, "/healthz while draining: {}", health.1);
    assert!(signalled.elapsed() < Duration::from_secs(DRAIN_S), "the checks above took the whole drain");

    // Wait for the exit, long enough to see it even if the held attempt is waited for.
    let status = first.wait_exit(Duration::from_secs(15)).expect("hookflow did not exit after SIGTERM");
    let took = signalled.elapsed();
    println!("SIGTERM with a held delivery: exited {status} after {took:?} (drainSeconds {DRAIN_S})");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM:\n{}", first.log_text());

    // Undelivered outputs go out after the next start, in order, with their Seq.
    sink.release();
    let second = Launch::new(&path, dir.join("second.log")).start();
    let hits = sink.recv_n(N, WAIT);
    let got: Vec<(u64, &str)> = hits.iter().map(|h| (h.seq(), h.text())).collect();
    let want: Vec<(u64, String)> = (0..N).map(|m| (m as u64 + 1, format!("m{m}"))).collect();
    let want: Vec<(u64, &str)> = want.iter().map(|(s, t)| (*s, t.as_str())).collect();
    assert_eq!(got, want, "second run:\n{}", second.log_text());
    assert!(
        took <= Duration::from_millis(DRAIN_S * 1000 + 1500),
        "SIGTERM took {took:?} to exit, more than drainSeconds ({DRAIN_S} s) + 1.5 s: the delivery in flight was \
         waited for past the drain deadline"
    );
}

#[test]
fn sigint_exits_0() {
    let sink = Sink::new();
    let dir = TempDir::new("sigint");
    let path = write_files(&dir.path, &config(&sink.url), &[("flow.json", &echo_flow())]);
    let mut p = Launch::new(&path, dir.join("run.log")).start();
    send_to(&p.url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "s", "text": "hi"}));
    assert_eq!(sink.recv(WAIT).text(), "hi");
    let signalled = Instant::now();
    p.signal("INT");
    let status = p.wait_exit(Duration::from_secs(5)).expect("hookflow did not exit after SIGINT");
    assert_eq!(status.code(), Some(0), "{}", p.log_text());
    println!("SIGINT: exited after {:?}", signalled.elapsed());
    assert!(p.log_text().contains("SIGINT"), "the log does not say why it stopped:\n{}", p.log_text());
}

// ---------------------------------------------------------------------------------------------
// /metrics

#[test]
fn shutdown_lets_running_turns_finish_and_leaves_queued_messages_for_the_next_start() {
    let sink = Sink::new();
    let api = Sink::new();
    api.hold();
    let flow = json!({ "name": "call", "nodes": [
        { "type": "http", "method": "GET", "url": api.url, "contextKey": "api", "timeoutMs": 30000 },
        { "type": "say", "text": "done {{input.text}}" }
    ]});
    let mut cfg = config(&sink.url);
    cfg["workers"] = json!(1);
    // A parked turn may finish within the drain (its call answers in time); without one it is
    // left at its checkpoint like a queued message.
    cfg["delivery"]["drainSeconds"] = json!(10);
    let mut app = App::start("shutdown-queue", &cfg, &[("flow.json", &flow)]);
    // One session: its first turn parks in its http call, the other four wait behind it (a
    // parked turn frees the worker, so messages of other sessions would all start).
    for m in 0..5 {
        app.send("u", "s", &format!("m{m}"));
    }
    api.recv(WAIT);
    let readyz = app.url("/readyz");
    std::thread::scope(|scope| {
        let stopping = scope.spawn(|| app.shutdown());
        // Shutdown has begun once /readyz says so; only then may the held turn end.
        let deadline = Instant::now() + WAIT;
        while try_get(&readyz).is_ok_and(|r| r.0 == 200) {
            assert!(Instant::now() < deadline, "/readyz never reported the shutdown");
        }
        api.release();
        stopping.join().expect("shutdown");
    });
    assert_eq!(sink.recv(WAIT).text(), "done m0", "the parked turn finished within the drain and was delivered");
    // The workers have been joined: any call a queued message made would be recorded by now.
    assert!(api.rx.try_recv().is_err(), "a queued message ran during the shutdown");
    app.boot();
    let texts: Vec<String> = sink.recv_n(4, WAIT).iter().map(|h| h.text().to_owned()).collect();
    assert_eq!(texts, ["done m1", "done m2", "done m3", "done m4"], "after the restart, in order");
}

fn scrape(app: &App) -> (Metrics, String) {
    let r = request("GET", &app.url("/metrics"), None, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("Content-Type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.headers);
    (Metrics::parse(&r.body), r.body)
}

/// Checks a histogram family: cumulative buckets ending in `+Inf` equal to `_count`, a `_sum`.
fn check_histogram(m: &Metrics, name: &str, text: &str) -> f64 {
    assert_eq!(m.types.get(name).map(String::as_str), Some("histogram"), "{name} is not a histogram:\n{text}");
    let buckets = m.find(&format!("{name}_bucket"), &[]);
    assert!(buckets.len() >= 2, "{name} has too few buckets:\n{text}");
    let mut last = (f64::NEG_INFINITY, 0.0);
    for b in &buckets {
        let le = b.labels.get("le").unwrap_or_else(|| panic!("a {name} bucket without le:\n{text}"));
        let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("a numeric le") };
        assert!(le > last.0 && b.value >= last.1, "{name} buckets are not cumulative:\n{text}");
        last = (le, b.value);
    }
    assert_eq!(last.0, f64::INFINITY, "{name} has no +Inf bucket:\n{text}");
    let count = m.value(&format!("{name}_count"));
    assert_eq!(last.1, count, "{name}: +Inf bucket differs from _count:\n{text}");
    assert!(m.value(&format!("{name}_sum")) >= 0.0);
    count
}

#[test]
fn metrics_are_prometheus_text_with_the_documented_families_and_count_failures() {
    let sink = Sink::new();
    let app = App::start("metrics4", &config(&sink.url), &[("flow.json", &echo_flow())]);
    let (m, text) = scrape(&app);
    for (name, kind) in [
        ("hookflow_requests_total", "counter"),
        ("hookflow_inbound_queue_depth", "gauge"),
        ("hookflow_sessions_active", "gauge"),
        ("hookflow_outputs_delivered_total", "counter"),
        ("hookflow_outputs_retried_total", "counter"),
        ("hookflow_outputs_dead_total", "counter"),
    ] {
        assert_eq!(m.types.get(name).map(String::as_str), Some(kind), "{name}:\n{text}");
    }
    assert_eq!(check_histogram(&m, "hookflow_flow_run_seconds", &text), 0.0);
    assert_eq!(check_histogram(&m, "hookflow_delivery_seconds", &text), 0.0);
    for name in ["hookflow_outputs_retried_total", "hookflow_outputs_dead_total", "hookflow_outputs_delivered_total"] {
        assert_eq!(m.value(name), 0.0, "{name} at start:\n{text}");
    }

    // Output 1 fails three times (schedule [0.05, 0.1]: two retries, then a dead letter);
    // outputs 2 and 3 succeed. Output 3 arriving means 1 is dead and 2 delivered.
    sink.script(&[500, 502, 503]);
    app.send("u", "s", "doomed");
    app.send("u", "s", "two");
    app.send("u", "s", "three");
    let bad = post_json(&app.url("/no-such-token-0000"), &json!({"userId": "u", "sessionId": "s", "text": "x"}));
    assert_eq!(bad.0, 404);
    let hits = sink.recv_n(5, WAIT);
    let got: Vec<(u64, u16)> = hits.iter().map(|h| (h.seq(), h.answered)).collect();
    assert_eq!(got, [(1, 500), (1, 502), (1, 503), (2, 200), (3, 200)]);

    // The worker updates its bookkeeping just after the commit that lets the output go out:
    // nothing signals it, so scrape until the queue is seen empty.
    let deadline = Instant::now() + WAIT;
    let (m, text) = loop {
        let (m, text) = scrape(&app);
        if m.value("hookflow_inbound_queue_depth") == 0.0 {
            break (m, text);
        }
        assert!(Instant::now() < deadline, "the queue never emptied:\n{text}");
    };
    assert_eq!(m.value("hookflow_outputs_retried_total"), 2.0, "{text}");
    assert_eq!(m.value("hookflow_outputs_dead_total"), 1.0, "{text}");
    let delivered = m.value("hookflow_outputs_delivered_total");
    assert!((1.0..=2.0).contains(&delivered), "delivered {delivered}:\n{text}");
    assert!(check_histogram(&m, "hookflow_delivery_seconds", &text) >= 1.0, "{text}");
    assert_eq!(check_histogram(&m, "hookflow_flow_run_seconds", &text), 3.0, "three turns ran:\n{text}");
    assert_eq!(m.value("hookflow_sessions_active"), 0.0, "{text}");
    // Requests by endpoint and status.
    assert_eq!(m.sum("hookflow_requests_total", &[("endpoint", "main"), ("status", "200")]), 3.0, "{text}");
    assert!(m.sum("hookflow_requests_total", &[("status", "404")]) >= 1.0, "{text}");
    assert!(m.sum("hookflow_requests_total", &[("status", "200")]) >= 4.0, "the first scrape counts too:\n{text}");
}

#[test]
fn metrics_show_queue_depth_and_active_sessions_while_a_turn_waits() {
    // A Flow that waits for an API (the mock holds its answer) with one worker: messages queue.
    let api = Sink::new();
    api.hold();
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["workers"] = json!(1);
    let app = App::start("metrics-depth", &cfg, &[("flow.json", &waiting_flow(&api.url))]);
    app.send("u1", "a", "a1");
    api.recv(WAIT);
    app.send("u1", "a", "a2");
    app.send("u2", "b", "b1");
    let (m, text) = scrape(&app);
    // Two queued (and one running, which may count or not).
    let depth = m.value("hookflow_inbound_queue_depth");
    assert!((2.0..=3.0).contains(&depth), "queue depth {depth}:\n{text}");
    assert_eq!(m.value("hookflow_sessions_active"), 2.0, "{text}");
    api.release();
    assert_eq!(sink.recv_n(3, WAIT).len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Delivery

#[test]
fn four_sender_lanes_keep_per_session_order_and_seq() {
    const SESSIONS: usize = 20;
    const PER: usize = 10;
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["delivery"]["senders"] = json!(4);
    cfg["workers"] = json!(4);
    let app = App::start("senders4", &cfg, &[("flow.json", &echo_flow())]);
    let url = app.msg_url();
    std::thread::scope(|scope| {
        for c in 0..4 {
            let url = &url;
            scope.spawn(move || {
                for m in 0..PER {
                    for s in (c..SESSIONS).step_by(4) {
                        let body = json!({"userId": format!("u{s}"), "sessionId": "s", "text": format!("{s}:{m}")});
                        send_to(url, &body);
                    }
                }
            });
        }
    });
    let hits = sink.recv_n(SESSIONS * PER, WAIT);
    let mut per: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for h in &hits {
        per.entry(h.user_id().to_owned()).or_default().push((h.seq(), h.text().to_owned()));
    }
    assert_eq!(per.len(), SESSIONS);
    for s in 0..SESSIONS {
        let want: Vec<(u64, String)> = (0..PER).map(|m| (m as u64 + 1, format!("{s}:{m}"))).collect();
        assert_eq!(per[&format!("u{s}")], want, "session u{s}");
    }
    assert!(sink.rx.try_recv().is_err(), "an extra output arrived");
}

#[test]
fn retry_after_delays_the_next_attempt_beyond_the_schedule() {
    let mock = Mock::with_status(200);
    mock.script(vec![(429, vec![("Retry-After", "1")])]);
    let mut cfg = config(&mock.url);
    cfg["delivery"]["retrySchedule"] = json!([0.05]);
    let app = App::start("retry-after", &cfg, &[("flow.json", &echo_flow())]);
    app.send("u", "s", "patience");
    let (t0, first) = mock.recv(WAIT);
    let (t1, second) = mock.recv(WAIT);
    let gap = t1 - t0;
    println!("429 with Retry-After: 1 and retrySchedule [0.05]: next attempt after {gap:?}");
    assert_eq!((first.answered, second.answered), (429, 200));
    assert_eq!((second.seq(), second.raw.as_str()), (1, first.raw.as_str()), "the retry sends the same output");
    assert!(gap >= Duration::from_millis(950), "the retry came {gap:?} after a 429 with Retry-After: 1");
    assert!(gap < Duration::from_secs(3), "the retry came only {gap:?} later");
}

#[test]
fn a_failing_target_is_probed_at_the_retry_pace_not_once_per_output() {
    const SESSIONS: usize = 30;
    const WINDOW: Duration = Duration::from_millis(1500);
    const STEP_S: f64 = 0.2;
    let mock = Mock::with_status(503);
    let mut cfg = config(&mock.url);
    // Longer than the window, so no output runs out of attempts while we watch.
    cfg["delivery"]["retrySchedule"] = json!(vec![STEP_S; 12]);
    let app = App::start("probe", &cfg, &[("flow.json", &echo_flow())]);
    for s in 0..SESSIONS {
        send_to(&app.msg_url(), &json!({"userId": "u", "sessionId": format!("s{s}"), "text": format!("t{s}")}));
    }
    let (t0, _) = mock.recv(WAIT);
    let mut attempts = 1;
    while let Ok((at, hit)) = mock.rx.recv_deadline(t0 + WINDOW) {
        assert!(at < t0 + WINDOW + Duration::from_millis(50));
        assert_eq!(hit.answered, 503);
        attempts += 1;
    }
    // Without probing every output is tried at once and again every 0.2 s: 30 × (1 + 1.5/0.2)
    // ≈ 240 attempts in the window. Probing allows the few failures that reveal the outage plus
    // one probe per 0.2 s (≈ 3 + 8). The bound: fewer attempts than queued outputs.
    let unguarded = SESSIONS * (1 + (WINDOW.as_secs_f64() / STEP_S) as usize);
    println!("failing target: {attempts} attempts in {WINDOW:?} for {SESSIONS} outputs (unguarded ≈ {unguarded})");
    assert!(attempts <= SESSIONS, "{attempts} attempts in {WINDOW:?}: the failing target is hammered");

    // The target recovers: every output arrives.
    mock.set_status(200);
    let deadline = Instant::now() + WAIT;
    let mut delivered = BTreeMap::new();
    while delivered.len() < SESSIONS {
        let (_, hit) = mock
            .rx
            .recv_deadline(deadline)
            .unwrap_or_else(|_| panic!("only {} of {SESSIONS} outputs arrived after recovery", delivered.len()));
        if hit.answered == 200 {
            let prev = delivered.insert(hit.session_id().to_owned(), (hit.seq(), hit.text().to_owned()));
            assert!(prev.is_none(), "{} delivered twice", hit.session_id());
        }
    }
    for s in 0..SESSIONS {
        assert_eq!(delivered[&format!("s{s}")], (1, format!("t{s}")));
    }
    let r = admin_get(&app.url("/api/deadletters"));
    assert_eq!(r.json()["deadLetters"], json!([]), "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// Backpressure and memory

/// Calls `api_url` (an `http` node: the turn waits for the answer), then echoes the text.
fn waiting_flow(api_url: &str) -> Value {
    json!({
        "name": "waits",
        "nodes": [
            { "type": "http", "method": "GET", "url": api_url, "contextKey": "api" },
            { "type": "say", "text": "{{input.text}}" }
        ]
    })
}

#[test]
fn a_full_inbound_queue_answers_503_overloaded_and_keeps_what_it_accepted() {
    const CAPACITY: usize = 20;
    let api = Sink::new();
    api.hold();
    let sink = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["workers"] = json!(1);
    cfg["limits"] = json!({ "queueCapacity": CAPACITY });
    let app = App::start("overload", &cfg, &[("flow.json", &waiting_flow(&api.url))]);
    let msg = |m: usize| json!({"userId": "u", "sessionId": "s", "text": format!("m{m}")});
    send_to(&app.msg_url(), &msg(0));
    // The only worker now waits in the http node of m0.
    api.recv(WAIT);
    let mut accepted = 1;
    let refusal = loop {
        let r =
            request("POST", &app.msg_url(), Some(&msg(accepted).to_string()), &[("Content-Type", "application/json")]);
        if r.status != 200 {
            break r;
        }
        accepted += 1;
        assert!(accepted <= CAPACITY + 1, "{accepted} messages accepted with queueCapacity {CAPACITY}");
    };
    println!("queueCapacity {CAPACITY}: {accepted} accepted (one of them running), then 503");
    assert!(accepted >= CAPACITY, "refused after only {accepted} messages with queueCapacity {CAPACITY}");
    assert_error(refusal.status, &refusal.json(), 503, "overloaded");
    assert!(refusal.header("Retry-After").is_some_and(|v| v.parse::<u64>().is_ok()), "{:?}", refusal.headers);
    // Still full.
    let (status, answer) = post_json(&app.msg_url(), &msg(999));
    assert_error(status, &answer, 503, "overloaded");

    api.release();
    let hits = sink.recv_n(accepted, WAIT);
    let got: Vec<(u64, String)> = hits.iter().map(|h| (h.seq(), h.text().to_owned())).collect();
    let want: Vec<(u64, String)> = (0..accepted).map(|m| (m as u64 + 1, format!("m{m}"))).collect();
    assert_eq!(got, want);
    // Room again.
    app.send("u", "s", "after");
    assert_eq!(sink.recv(WAIT).text(), "after");
}

#[test]
fn memory_stays_bounded_under_a_flood_while_the_receiver_is_down() {
    // 8,192 messages of about 1 KiB (8 MiB of text, twice a sender lane's in-memory window of
    // 4,096 outputs). The debug build takes about 0.4 ms of server CPU per message, so 20,000
    // would take this test well over 5 s on two cores.
    const MESSAGES: usize = 8_192;
    const SESSIONS: usize = 100;
    const CLIENTS: usize = 4;
    const BOUND_KIB: u64 = 60 * 1024;
    let dir = TempDir::new("flood");
    // Nothing listens there: every delivery fails to connect; the next try is minutes away.
    let closed = format!("http://127.0.0.1:{CLOSED_PORT}/hook");
    let mut cfg = config(&closed);
    cfg["delivery"]["retrySchedule"] = json!([300]);
    cfg["delivery"]["connectTimeoutMs"] = json!(500);
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let p = Launch::new(&path, dir.join("run.log")).start();
    let url = p.url(&format!("/{TOKEN}"));
    let baseline = p.rss_kib();
    let started = Instant::now();
    let results: Vec<(usize, usize, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (url, p) = (&url, &p);
                scope.spawn(move || {
                    let (mut ok, mut overloaded, mut max_rss) = (0, 0, 0);
                    for i in (c..MESSAGES).step_by(CLIENTS) {
                        let s = i % SESSIONS;
                        let text = format!("flood message {i} {}", "x".repeat(1000));
                        let body = json!({"userId": format!("user-{s}"), "sessionId": format!("session-{s}"),
                                          "text": text, "data": {"i": i}});
                        match try_post(url, &body).expect("POST during the flood") {
                            (200, _, _) => ok += 1,
                            (503, _, a) if a["error"]["code"] == "overloaded" => overloaded += 1,
                            (status, _, a) => panic!("unexpected answer {status} {a}"),
                        }
                        if c == 0 && i % 500 == 0 {
                            max_rss = max_rss.max(p.rss_kib());
                        }
                    }
                    (ok, overloaded, max_rss)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a client panicked")).collect()
    });
    let took = started.elapsed();
    let ok: usize = results.iter().map(|r| r.0).sum();
    let overloaded: usize = results.iter().map(|r| r.1).sum();
    let end = p.rss_kib();
    let max = results.iter().map(|r| r.2).max().unwrap_or(0).max(end);
    println!(
        "flood: {ok} accepted, {overloaded} overloaded in {took:?}; VmRSS {baseline} KiB at start, max {max} KiB, \
         {end} KiB at the end (bound {BOUND_KIB} KiB)"
    );
    assert_eq!(ok + overloaded, MESSAGES);
    assert!(ok >= MESSAGES / 2, "only {ok} of {MESSAGES} accepted");
    assert!(max <= BOUND_KIB, "VmRSS reached {max} KiB under the flood (bound {BOUND_KIB} KiB)");
}
