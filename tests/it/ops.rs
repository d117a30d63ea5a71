//! http-api.md §4: health, readiness, metrics, and the admin API for endpoints and sessions.

use serde_json::{Value, json};

use crate::support::*;

const PASSWORD: &str = "webhook-pw-c0ffee";

fn welcome_flow() -> Value {
    json!({
        "name": "welcome",
        "nodes": [
            { "type": "once",
              "then": [ { "type": "say", "text": "welcome" } ],
              "afterwards": [ { "type": "say", "text": "welcome back" } ] },
            { "type": "setContext", "key": "last", "value": "{{input.text}}" }
        ]
    })
}

fn app(name: &str, sink: &Sink) -> App {
    let mut cfg = config(&sink.url);
    cfg["endpoints"][0]["webhook"] = json!({ "url": sink.url, "user": "bot", "password": PASSWORD });
    App::start(name, &cfg, &[("flow.json", &welcome_flow())])
}

#[test]
fn healthz_readyz_and_metrics() {
    let sink = Sink::new();
    let app = app("health", &sink);
    let r = request("GET", &app.url("/healthz"), None, &[]);
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = request("GET", &app.url("/readyz"), None, &[]);
    assert_eq!(r.status, 200, "{}", r.body);

    app.send("u", "s", "one");
    app.send("u", "s", "two");
    let _ = post_json(&app.url("/no-such-token-0000"), &json!({"userId": "u", "sessionId": "s", "text": "x"}));
    // Output 2 is sent only after output 1 was delivered, so once it arrives, 1 is counted.
    assert_eq!(sink.recv_n(2, WAIT).iter().map(Hit::seq).collect::<Vec<_>>(), [1, 2]);
    // A test message (the console's) is counted apart from the users' (http-api.md §1).
    let _ = post_json(&app.url(&format!("/test/{TOKEN}")), &json!({"userId": "u", "sessionId": "t", "text": "x"}));
    sink.recv(WAIT);

    let r = request("GET", &app.url("/metrics"), None, &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.headers);
    let metric = |name: &str| -> Option<f64> {
        r.body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    assert!(r.body.contains("hookflow_requests_total"), "{}", r.body);
    // The two accepted messages, counted by endpoint and status (whatever other labels there are).
    let accepted: f64 = r
        .body
        .lines()
        .filter(|l| l.starts_with("hookflow_requests_total{"))
        .filter(|l| l.contains(r#"endpoint="main""#) && l.contains(r#"status="200""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(accepted, 3.0, "{}", r.body);
    let m = crate::child::Metrics::parse(&r.body);
    let by_route =
        |route| m.sum("hookflow_requests_total", &[("endpoint", "main"), ("route", route), ("status", "200")]);
    assert_eq!((by_route("message"), by_route("test")), (2.0, 1.0), "{}", r.body);
    assert!(
        r.body.lines().any(|l| l.starts_with("hookflow_requests_total{") && l.contains("status=\"404\"")),
        "{}",
        r.body
    );
    let delivered =
        metric("hookflow_outputs_delivered_total").unwrap_or_else(|| panic!("no delivered counter:\n{}", r.body));
    assert!(delivered >= 1.0, "{}", r.body);
}

#[test]
fn admin_api_shows_and_forgets_sessions() {
    let sink = Sink::new();
    let app = app("sessions", &sink);
    let (user, session) = ("a b@x", "s/1?");
    let url = app.url("/api/sessions/main/a%20b%40x/s%2F1%3F");
    send_to(&app.msg_url(), &json!({"userId": user, "sessionId": session, "text": "first"}));
    send_to(&app.msg_url(), &json!({"userId": user, "sessionId": session, "text": "second"}));
    let hits = sink.recv_n(2, WAIT);
    assert_eq!(hits.iter().map(|h| (h.seq(), h.text())).collect::<Vec<_>>(), [(1, "welcome"), (2, "welcome back")]);

    let r = request("GET", &url, None, &[]);
    assert_error(r.status, &r.json(), 401, "unauthorized");
    // HEAD is GET without the body, on every admin route that answers GET.
    for path in [url.clone(), app.url("/api/endpoints"), app.url("/api/stats")] {
        let r = request("HEAD", &path, None, &[("X-API-Key", ADMIN_KEY)]);
        assert_eq!((r.status, r.body.as_str()), (200, ""), "HEAD {path}");
    }
    let r = admin_get(&url);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["context"]["last"], "second", "{v}");
    assert_eq!(v["messageCount"], 2, "{v}");
    let r = admin_get(&app.url("/api/sessions/main/nobody/none"));
    assert_eq!(r.status, 404, "{}", r.body);

    let r = request("DELETE", &url, None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(r.status, 200, "{}", r.body);

    // The next message starts fresh, and the Seq keeps increasing for the receiver.
    send_to(&app.msg_url(), &json!({"userId": user, "sessionId": session, "text": "third"}));
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (3, "welcome"));
    let r = admin_get(&url);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["context"]["last"], "third", "{}", r.body);
    assert_eq!(r.json()["messageCount"], 1, "{}", r.body);
}

#[test]
fn admin_endpoints_lists_endpoints_without_secrets() {
    let sink = Sink::new();
    let app = app("endpoints", &sink);
    let r = request("GET", &app.url("/api/endpoints"), None, &[]);
    assert_error(r.status, &r.json(), 401, "unauthorized");
    let r = request("GET", &app.url("/api/endpoints"), None, &[("X-API-Key", "wrong")]);
    assert_error(r.status, &r.json(), 401, "unauthorized");

    for r in [
        admin_get(&app.url("/api/endpoints")),
        request("GET", &app.url(&format!("/api/endpoints?api_key={ADMIN_KEY}")), None, &[]),
    ] {
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.json()["endpoints"].as_array().is_some_and(|e| e.len() == 1 && e[0]["name"] == "main"), "{}", r.body);
        assert!(!r.body.contains(PASSWORD), "the webhook password leaks: {}", r.body);
        assert!(!r.body.contains(ADMIN_KEY), "{}", r.body);
    }
}

#[test]
fn the_session_view_names_nodes_not_op_indexes() {
    let sink = Sink::new();
    let flow = json!({ "name": "positions", "nodes": [
        { "id": "greet", "type": "say", "text": "hello" },
        { "type": "if", "condition": "input.text == 'wait'",
          "then": [ { "type": "say", "text": "waiting" }, { "type": "waitForInput" } ] },
        { "type": "say", "text": "after the if" },
        { "id": "askAge", "type": "question", "questionType": "number", "text": "How old are you?",
          "reprompt": "A number, please." },
        { "type": "say", "text": "thanks" },
        { "type": "waitForInput" }
    ]});
    let app = App::start("positions", &config(&sink.url), &[("flow.json", &flow)]);
    let view = |session: &str| {
        let r = admin_get(&app.url(&format!("/api/sessions/main/u/{session}")));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };

    app.send("u", "s1", "hi");
    assert_eq!(sink.recv_n(3, WAIT).last().map(|h| h.text().to_owned()).as_deref(), Some("How old are you?"));
    assert_eq!(view("s1")["pendingQuestion"], json!({"node": "askAge", "attempts": 0}));
    app.send("u", "s1", "old");
    assert_eq!(sink.recv(WAIT).text(), "A number, please.");
    assert_eq!(view("s1")["pendingQuestion"], json!({"node": "askAge", "attempts": 1}));
    app.send("u", "s1", "42");
    assert_eq!(sink.recv(WAIT).text(), "thanks");
    let v = view("s1");
    assert_eq!(v["pendingQuestion"], Value::Null, "{v}");
    // A waitForInput as the last node: the next message starts past the end of the Flow.
    assert_eq!(v["entrypoint"], "(end of the Flow)", "{v}");

    // Waiting at the end of an `if` branch: the next message goes on after the `if`, a node
    // without an id, named by its path.
    app.send("u", "s2", "wait");
    assert_eq!(sink.recv_n(2, WAIT).last().map(|h| h.text().to_owned()).as_deref(), Some("waiting"));
    let v = view("s2");
    assert_eq!((&v["entrypoint"], &v["pendingQuestion"]), (&json!("nodes[2]"), &Value::Null), "{v}");
}
