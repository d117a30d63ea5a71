//! Questions answered in later messages, and session state that survives a restart.

use serde_json::{Value, json};

use crate::support::*;

/// Asks a number question (with reprompt), stores it in `context.orderNumber`, confirms it, waits,
/// and then uses the stored value in a later message.
fn order_flow() -> Value {
    json!({
        "name": "orders",
        "nodes": [
            { "id": "ask", "type": "question", "questionType": "number",
              "text": "Which order number?",
              "reprompt": "Order numbers are digits only. Which one is it?",
              "resultLocation": "context.orderNumber" },
            { "type": "say", "text": "Looking up order {{context.orderNumber}} ({{input.result}}).",
              "data": { "order": "{{context.orderNumber}}" } },
            { "type": "waitForInput" },
            { "type": "say", "text": "About order {{context.orderNumber}}: {{input.text}}" }
        ]
    })
}

fn session_url(app: &App, user: &str, session: &str) -> String {
    app.url(&format!("/api/sessions/main/{user}/{session}"))
}

#[test]
fn a_question_is_answered_in_a_later_message_with_reprompt() {
    let sink = Sink::new();
    let app = App::start("question", &config(&sink.url), &[("flow.json", &order_flow())]);

    app.send("u1", "s1", "hello");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("Which order number?", 1));

    app.send("u1", "s1", "no idea");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("Order numbers are digits only. Which one is it?", 2));

    let trace = app.send("u1", "s1", "it's 4711, thanks");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("Looking up order 4711 (4711).", 3));
    assert_eq!(h.body["AIOutput"]["data"], json!({ "order": 4711 }), "a lone {{{{path}}}} keeps the number type");
    assert_eq!(h.trace_id(), trace);

    let s = admin_get(&session_url(&app, "u1", "s1"));
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.json()["context"]["orderNumber"], 4711, "{}", s.body);
    assert_eq!(s.json()["messageCount"], 3, "{}", s.body);

    app.send("u1", "s1", "is it shipped?");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("About order 4711: is it shipped?", 4));

    // Past the last node the next message starts at the top again.
    app.send("u1", "s1", "hi again");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("Which order number?", 5));

    // Another session is independent.
    app.send("u1", "s2", "hello");
    let h = sink.recv(WAIT);
    assert_eq!((h.session_id(), h.text(), h.seq()), ("s2", "Which order number?", 1));
}

#[test]
fn session_state_survives_a_restart_on_the_same_data_dir() {
    let sink = Sink::new();
    let mut app = App::start("restart", &config(&sink.url), &[("flow.json", &order_flow())]);

    // Session A answers the question and waits after it; session B leaves the question open.
    app.send("ua", "sa", "hello");
    app.send("ub", "sb", "hello");
    let mut first = sink.recv_n(2, WAIT);
    first.sort_by(|a, b| a.session_id().cmp(b.session_id()));
    assert!(first.iter().all(|h| h.text() == "Which order number?"));
    app.send("ua", "sa", "42");
    let h = sink.recv(WAIT);
    assert_eq!((h.session_id(), h.text(), h.seq()), ("sa", "Looking up order 42 (42).", 2));

    let data_dir = app.dir.join("data");
    app.restart();
    if default_store() == Backend::Sqlite {
        assert!(data_dir.is_dir(), "the store lives in the configured dataDir");
    }

    app.send("ua", "sa", "thanks");
    let h = sink.recv(WAIT);
    assert_eq!((h.session_id(), h.text(), h.seq()), ("sa", "About order 42: thanks", 3));

    app.send("ub", "sb", "7");
    let h = sink.recv(WAIT);
    assert_eq!((h.session_id(), h.text(), h.seq()), ("sb", "Looking up order 7 (7).", 2));

    let s = admin_get(&session_url(&app, "ua", "sa"));
    assert_eq!(s.json()["context"]["orderNumber"], 42, "{}", s.body);
    assert_eq!(s.json()["messageCount"], 3, "{}", s.body);
}

#[test]
fn the_test_route_runs_the_flow_with_test_mode() {
    let sink = Sink::new();
    let flow =
        json!({ "name": "mode", "nodes": [ { "type": "say", "text": "{{input.text}} test={{input.testMode}}" } ] });
    let app = App::start("test-route", &config(&sink.url), &[("flow.json", &flow)]);
    let trace = send_to(&app.url(&format!("/test/{TOKEN}")), &json!({"userId": "u", "sessionId": "s", "text": "a"}));
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.trace_id()), ("a test=true", trace.as_str()));
    app.send("u", "s", "b");
    assert_eq!(sink.recv(WAIT).text(), "b test=false");
    let (status, answer) =
        post_json(&app.url("/test/no-such-token-123"), &json!({"userId": "u", "sessionId": "s", "text": "c"}));
    assert_error(status, &answer, 404, "unknown_endpoint");
}

/// Sets `context.last`, calls `api` (a checkpoint: the turn is running while the call is held),
/// then says "done <text>".
fn held_call_flow(api: &str) -> Value {
    json!({ "name": "held", "nodes": [
        { "type": "setContext", "key": "last", "value": "{{input.text}}" },
        { "type": "http", "method": "GET", "url": api, "contextKey": "api", "timeoutMs": 30000 },
        { "type": "say", "text": "done {{input.text}}" }
    ]})
}

#[test]
fn a_session_forgotten_while_its_message_runs_stays_forgotten() {
    let sink = Sink::new();
    let api = Sink::new();
    let app = App::start("forget-mid-turn", &config(&sink.url), &[("flow.json", &held_call_flow(&api.url))]);
    app.send("u", "s", "m1");
    assert_eq!(sink.recv(WAIT).text(), "done m1");
    api.recv(WAIT);
    api.hold();
    app.send("u", "s", "m2");
    // The second turn is in its http call, its state so far committed at the checkpoint.
    api.recv(WAIT);
    let r = request("DELETE", &session_url(&app, "u", "s"), None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(r.status, 200, "{}", r.body);
    api.release();
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("done m2", 2), "the running turn's output still goes out");
    let s = admin_get(&session_url(&app, "u", "s"));
    assert_eq!(s.status, 404, "the end of the turn brought the forgotten session back: {}", s.body);
    app.send("u", "s", "m3");
    let h = sink.recv(WAIT);
    assert_eq!((h.text(), h.seq()), ("done m3", 3));
    assert_eq!(admin_get(&session_url(&app, "u", "s")).json()["messageCount"], 1, "a fresh session");
}

#[test]
fn a_first_message_forgotten_during_its_http_call_leaves_no_state_and_no_transcript() {
    let sink = Sink::new();
    let api = Sink::new();
    let mut cfg = config(&sink.url);
    cfg["endpoints"][0]["dataProtection"] = json!({ "collectConversations": true });
    let app = App::start("forget-first-turn", &cfg, &[("flow.json", &held_call_flow(&api.url))]);
    api.hold();
    // The session's very first message: its checkpoint creates the session, then the call waits.
    app.send("u", "s", "secret");
    api.recv(WAIT);
    let r = request("DELETE", &session_url(&app, "u", "s"), None, &[("X-API-Key", ADMIN_KEY)]);
    assert_eq!(r.status, 200, "{}", r.body);
    api.release();
    assert_eq!(sink.recv(WAIT).text(), "done secret");
    let s = admin_get(&session_url(&app, "u", "s"));
    assert_eq!(s.status, 404, "the end of the turn brought the forgotten session back: {}", s.body);

    app.send("u", "s", "fresh");
    api.recv(WAIT);
    assert_eq!(sink.recv(WAIT).text(), "done fresh");
    let s = admin_get(&session_url(&app, "u", "s")).json();
    let lines: Vec<&str> =
        s["transcript"].as_array().expect("a transcript").iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(lines, ["fresh", "done fresh"], "nothing of the forgotten turn is kept");
    assert_eq!(s["context"]["last"], "fresh");
}
