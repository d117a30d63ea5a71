//! http-api.md §3: inject (runs the Flow) and notify (straight to the webhook), on the endpoint
//! routes and the older API-service routes, with the admin key as header or query parameter.

use serde_json::{Value, json};

use crate::support::*;

/// Echoes the text and the execution count, so a run of the Flow is visible in the output.
fn counting_flow() -> Value {
    json!({ "name": "count", "nodes": [ { "type": "say", "text": "flow saw {{input.text}} #{{input.execution}}" } ] })
}

fn body(text: Option<&str>, data: Option<Value>, url_token: Option<&str>) -> Value {
    let mut b = json!({ "userId": "u1", "sessionId": "s1" });
    if let Some(t) = text {
        b["text"] = json!(t);
    }
    if let Some(d) = data {
        b["data"] = d;
    }
    if let Some(t) = url_token {
        b["URLToken"] = json!(t);
    }
    b
}

fn post_with(url: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    post(url, &body.to_string(), &h)
}

#[test]
fn inject_runs_the_flow_and_notify_goes_straight_to_the_webhook() {
    let sink = Sink::new();
    let app = App::start("inject", &config(&sink.url), &[("flow.json", &counting_flow())]);
    let key = [("X-API-Key", ADMIN_KEY)];

    // /inject/{token} with the header.
    let (status, answer) = post_with(&app.url(&format!("/inject/{TOKEN}")), &body(Some("hello"), None, None), &key);
    assert_eq!(status, 200, "{answer}");
    let trace = assert_accepted(&answer);
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq(), h.trace_id()), ("flow saw hello #1", 1, trace.as_str()));
    assert_eq!((h.user_id(), h.session_id()), ("u1", "s1"));

    // /notify/{token} with the query parameter: exactly the given text and data, no Flow run.
    let url = app.url(&format!("/notify/{TOKEN}?api_key={ADMIN_KEY}"));
    let (status, answer) = post_with(&url, &body(Some("direct"), Some(json!({"a": 1})), None), &[]);
    assert_eq!(status, 200, "{answer}");
    let trace = assert_accepted(&answer);
    let h = sink.recv(WAIT);
    assert_eq!(h.seq(), 2);
    assert_eq!(
        h.body,
        json!({"userId": "u1", "sessionId": "s1", "AIOutput": {
            "text": "direct", "data": {"a": 1}, "traceId": trace, "disableSensitiveLogging": false, "source": "bot"}})
    );

    // /new/v2.0/endpoint/inject with the token in the body and the key in the query.
    let url = app.url(&format!("/new/v2.0/endpoint/inject?api_key={ADMIN_KEY}"));
    let (status, answer) = post_with(&url, &body(Some("old route"), None, Some(TOKEN)), &[]);
    assert_eq!(status, 200, "{answer}");
    let trace = assert_accepted(&answer);
    let h = sink.recv(WAIT);
    // #2: the notify did not run the Flow or count as a message of the session.
    assert_eq!((h.text(), h.seq(), h.trace_id()), ("flow saw old route #2", 3, trace.as_str()));

    // /new/v2.0/endpoint/notify with the header; data only.
    let url = app.url("/new/v2.0/endpoint/notify");
    let (status, answer) = post_with(&url, &body(None, Some(json!({"b": [2]})), Some(TOKEN)), &key);
    assert_eq!(status, 200, "{answer}");
    let trace = assert_accepted(&answer);
    let h = sink.recv(WAIT);
    assert_eq!(h.seq(), 4);
    assert_eq!(
        h.body["AIOutput"],
        json!({"text": "", "data": {"b": [2]}, "traceId": trace, "disableSensitiveLogging": false, "source": "bot"})
    );

    // A plain message of the same session continues after them.
    app.send("u1", "s1", "normal");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("flow saw normal #3", 5));
}

#[test]
fn inject_and_notify_need_an_admin_key() {
    let sink = Sink::new();
    let app = App::start("inject-auth", &config(&sink.url), &[("flow.json", &counting_flow())]);
    let routes = [
        (format!("/inject/{TOKEN}"), None),
        (format!("/notify/{TOKEN}"), None),
        ("/new/v2.0/endpoint/inject".to_owned(), Some(TOKEN)),
        ("/new/v2.0/endpoint/notify".to_owned(), Some(TOKEN)),
    ];
    for (path, token) in &routes {
        let b = body(Some("sneaky"), None, *token);
        let (status, answer) = post_with(&app.url(path), &b, &[]);
        assert_error(status, &answer, 401, "unauthorized");
        let (status, answer) = post_with(&app.url(path), &b, &[("X-API-Key", "not-the-key")]);
        let message = assert_error(status, &answer, 401, "unauthorized");
        assert!(!message.contains("not-the-key"), "the error echoes the key: {message}");
        let (status, answer) = post_with(&app.url(&format!("{path}?api_key=not-the-key")), &b, &[]);
        assert_error(status, &answer, 401, "unauthorized");
        // An endpoint inbound key or the URL token is not an admin key either.
        let (status, answer) = post_with(&app.url(path), &b, &[("X-API-Key", TOKEN)]);
        assert_error(status, &answer, 401, "unauthorized");
    }
    // None of the refused requests was queued: the session's first output is this message's.
    app.send("u1", "s1", "first");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("flow saw first #1", 1));
}

#[test]
fn old_routes_validate_the_url_token_in_the_body() {
    let sink = Sink::new();
    let app = App::start("inject-token", &config(&sink.url), &[("flow.json", &counting_flow())]);
    let key = [("X-API-Key", ADMIN_KEY)];
    for path in ["/new/v2.0/endpoint/inject", "/new/v2.0/endpoint/notify"] {
        let (status, answer) = post_with(&app.url(path), &body(Some("x"), None, None), &key);
        let message = assert_error(status, &answer, 400, "invalid_request");
        assert!(message.contains("URLToken"), "{message}");
        let (status, answer) = post_with(&app.url(path), &body(Some("x"), None, Some("no-such-token-123")), &key);
        assert_error(status, &answer, 404, "unknown_endpoint");
        let (status, answer) =
            post_with(&app.url(path), &json!({"sessionId": "s", "text": "x", "URLToken": TOKEN}), &key);
        assert_error(status, &answer, 400, "invalid_request");
    }
    let (status, answer) = post_with(&app.url("/inject/no-such-token-123"), &body(Some("x"), None, None), &key);
    assert_error(status, &answer, 404, "unknown_endpoint");
}

#[test]
fn a_notify_before_any_message_is_numbered_in_the_session() {
    let sink = Sink::new();
    let app = App::start("notify-first", &config(&sink.url), &[("flow.json", &counting_flow())]);
    let url = app.url(&format!("/notify/{TOKEN}"));
    let (status, answer) = post_with(&url, &body(Some("proactive"), None, None), &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(status, 200, "{answer}");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("proactive", 1));
    app.send("u1", "s1", "reply");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("flow saw reply #1", 2));
}
