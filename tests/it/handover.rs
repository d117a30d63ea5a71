//! handover.md with the generic agent-desk provider: the `handover` node, events out to the
//! desk (signed, in order), user messages forwarded instead of running the Flow, agent messages
//! as outputs with `source: "agent"` in Seq order, the end resuming the Flow below the node
//! (`lookup` on `handoverStatus`), the cancel intent, inject and notify during a handover,
//! retries and `error`, a restart in the middle, the admin view and metrics, and bad input on
//! the agent routes with nothing lost.
//!
//! The agent desk is a stand-in on 127.0.0.1 (the recording `Sink`, a separate server) that
//! receives the three documented events: `POST {url}` with `handover.requested`,
//! `user.message` and `handover.cancelled`.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::*;

/// The key the agent desk presents in `X-API-Key`.
pub const AGENT_KEY: &str = "agent-desk-key-7c1d55e0";
/// The handover events' signing key.
const DESK_SECRET: &[u8] = b"desk-secret-0123456789abcdef0123";

/// Says something, hands over, and after the handover says how it ended.
pub fn desk_flow() -> Value {
    json!({
        "name": "desk",
        "intents": [{ "name": "back", "examples": ["back to the bot", "i want the bot again"] }],
        "nodes": [
            { "type": "say", "text": "bot: {{input.text}}" },
            { "id": "h1", "type": "handover", "text": "Let me connect you.", "cancelIntent": "back",
              "cancelText": "Type 'back' to return to the bot." },
            { "type": "lookup", "mode": "handoverStatus", "cases": {
                "completed": [{ "type": "say", "text": "Welcome back ({{input.kind}}, {{input.handover.agentName}})" }],
                "cancelled": [{ "type": "say", "text": "Back with the bot ({{input.handover.provider}})" }],
                "error": [{ "type": "say", "text": "No agent could be reached" }]
            }, "default": [{ "type": "say", "text": "no handover status" }] }
        ]
    })
}

/// `config` with the webhook provider pointing at `desk` and transcripts kept.
pub fn desk_config(sink: &str, desk: &str) -> Value {
    let mut c = config(sink);
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(DESK_SECRET));
    c["endpoints"][0]["handover"] = json!({ "type": "webhook", "url": desk, "user": "hookflow", "password": "pw",
                                            "secret": secret, "agentKeys": [key_digest(AGENT_KEY)] });
    c["endpoints"][0]["dataProtection"] = json!({ "collectConversations": true });
    c
}

/// POSTs to an agent route with the agent key.
pub fn agent_post(app: &App, what: &str, body: &Value) -> (u16, Value) {
    let url = app.url(&format!("/handover/{TOKEN}/{what}"));
    post(&url, &body.to_string(), &[("Content-Type", "application/json"), ("X-API-Key", AGENT_KEY)])
}

/// Starts a handover of u1/s1 and returns its id (the outputs of the first turn are checked).
fn start(app: &App, sink: &Sink, desk: &Sink) -> String {
    app.send("u1", "s1", "I need a human");
    let texts: Vec<String> = sink.recv_n(3, WAIT).iter().map(|h| h.text().to_owned()).collect();
    assert_eq!(texts, ["bot: I need a human", "Let me connect you.", "Type 'back' to return to the bot."]);
    let ev = desk.recv(WAIT);
    assert_eq!(ev.body["event"], "handover.requested", "{}", ev.raw);
    wait_status(app, "u1", "s1", "active");
    ev.body["handoverId"].as_str().expect("a handoverId").to_owned()
}

/// `(source, text)` of each line of a `handover.requested` event's transcript.
pub fn transcript_lines(event: &Value) -> Vec<(&str, &str)> {
    let lines = event["transcript"].as_array().expect("a transcript");
    lines.iter().map(|l| (l["source"].as_str().unwrap(), l["text"].as_str().unwrap())).collect()
}

/// Waits (bounded) until the admin view shows the session's handover with `status`: the desk's
/// answer is committed after the desk received the event.
pub fn wait_status(app: &App, user: &str, session: &str, status: &str) {
    wait_status_of(app, "main", user, session, status);
}

/// [`wait_status`] for a session of `endpoint`.
pub fn wait_status_of(app: &App, endpoint: &str, user: &str, session: &str, status: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = admin_get(&app.url(&format!("/api/sessions/{endpoint}/{user}/{session}"))).json();
        if s["handover"]["status"] == status {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the handover did not become {status}: {s}");
        std::thread::yield_now();
    }
}

fn verify_signature(h: &Hit) {
    let id = h.header("webhook-id").expect("webhook-id");
    let ts = h.header("webhook-timestamp").expect("webhook-timestamp");
    let mac = hmac_sha256(DESK_SECRET, format!("{id}.{ts}.{}", h.raw).as_bytes());
    let want = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac));
    assert_eq!(h.header("webhook-signature"), Some(want.as_str()), "the event's signature does not verify");
    let basic = base64::engine::general_purpose::STANDARD.encode("hookflow:pw");
    assert_eq!(h.header("Authorization"), Some(format!("Basic {basic}").as_str()));
}

#[test]
fn a_handover_runs_from_the_node_to_the_agent_and_back_to_the_flow() {
    let (sink, desk) = (Sink::new(), Sink::new());
    let app = App::start("handover-flow", &desk_config(&sink.url, &desk.url), &[("flow.json", &desk_flow())]);
    app.send("u1", "s1", "I need a human");
    let hits = sink.recv_n(3, WAIT);
    assert_eq!(hits.iter().map(|h| h.seq()).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(hits[1].text(), "Let me connect you.");

    // The start: signed like an output, with the transcript (collectConversations) and context.
    let ev = desk.recv(WAIT);
    verify_signature(&ev);
    let id = ev.body["handoverId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ho_"), "{id}");
    assert_eq!(
        (&ev.body["event"], &ev.body["endpoint"], &ev.body["userId"], &ev.body["sessionId"], &ev.body["text"]),
        (&json!("handover.requested"), &json!("main"), &json!("u1"), &json!("s1"), &json!("Let me connect you."))
    );
    let lines = transcript_lines(&ev.body);
    assert_eq!(lines[0], ("user", "I need a human"));
    assert_eq!(lines.len(), 4, "the user's line and the three outputs: {lines:?}");
    assert_eq!(ev.body["context"], json!({}));

    // While it is active, the user's message goes to the desk, not through the Flow.
    app.send("u1", "s1", "where is my order?");
    let ev = desk.recv(WAIT);
    verify_signature(&ev);
    assert_eq!(ev.body, json!({"event": "user.message", "handoverId": id, "text": "where is my order?", "data": null}));

    // The admin session view.
    wait_status(&app, "u1", "s1", "active");
    let s = admin_get(&app.url("/api/sessions/main/u1/s1")).json();
    assert_eq!((&s["handover"]["status"], &s["handover"]["provider"]), (&json!("active"), &json!("webhook")));
    assert_eq!(s["handover"]["handoverId"], json!(id));
    assert!(s["handover"]["since"].as_str().is_some_and(|t| t.ends_with('Z')), "{s}");

    // An agent's message: the session's next output (so the forwarded message made none).
    let (status, answer) =
        agent_post(&app, "messages", &json!({"handoverId": id, "text": "Hi, I am Ann.", "agentName": "Ann"}));
    assert_eq!((status, &answer), (200, &json!({"status": "accepted"})));
    let h = sink.recv(WAIT);
    assert_eq!(h.seq(), 4);
    assert_eq!((&h.body["AIOutput"]["source"], &h.body["AIOutput"]["agentName"]), (&json!("agent"), &json!("Ann")));
    assert_eq!((h.text(), h.user_id(), h.session_id()), ("Hi, I am Ann.", "u1", "s1"));
    // The transcript has the forwarded message and the agent's line.
    let s = admin_get(&app.url("/api/sessions/main/u1/s1")).json();
    let lines: Vec<(&str, &str)> = s["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["source"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(lines[4..], [("user", "where is my order?"), ("agent", "Hi, I am Ann.")], "{s}");
    // A later message that names no agent still carries the name the agent gave.
    let (status, _) = agent_post(&app, "messages", &json!({"handoverId": id, "text": "One moment."}));
    assert_eq!(status, 200);
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text(), &h.body["AIOutput"]["agentName"]), (5, "One moment.", &json!("Ann")));

    // The end: the Flow goes on below the node at once, with input.kind and input.handover.
    let (status, answer) = agent_post(&app, "end", &json!({"handoverId": id, "status": "completed"}));
    assert_eq!((status, &answer), (200, &json!({"status": "accepted"})));
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (6, "Welcome back (handover, Ann)"));
    assert_eq!(h.body["AIOutput"]["source"], "bot");

    // Ended: the agent routes say so, and the bot has the session again.
    let (status, answer) = agent_post(&app, "messages", &json!({"handoverId": id, "text": "late"}));
    assert_error(status, &answer, 409, "handover_ended");
    app.send("u1", "s1", "hello again");
    assert_eq!(sink.recv_n(3, WAIT)[0].text(), "bot: hello again");
    let ev = desk.recv(WAIT);
    assert_eq!(ev.body["event"], "handover.requested", "a new handover, with a new id");
    assert_ne!(ev.body["handoverId"], json!(id));
    wait_status(&app, "u1", "s1", "active");
    // The first handover's id is still known as ended, though the session has a newer one.
    let (status, answer) = agent_post(&app, "messages", &json!({"handoverId": id, "text": "later still"}));
    assert_error(status, &answer, 409, "handover_ended");

    let metrics = request("GET", &app.url("/metrics"), None, &[]).body;
    assert!(metrics.contains("hookflow_handovers_started_total 2"), "{metrics}");
    assert!(metrics.contains("hookflow_handovers_ended_total{status=\"completed\"} 1"), "{metrics}");
    assert!(metrics.contains("hookflow_handovers_active 1"), "{metrics}");
}

#[test]
fn the_cancel_intent_ends_the_handover_and_inject_and_notify_keep_working() {
    let (sink, desk) = (Sink::new(), Sink::new());
    let mut cfg = desk_config(&sink.url, &desk.url);
    cfg["endpoints"][0]["dataProtection"] = json!({ "collectConversations": false });
    let app = App::start("handover-cancel", &cfg, &[("flow.json", &desk_flow())]);
    app.send("u1", "s1", "I need a human");
    assert_eq!(sink.recv_n(3, WAIT).len(), 3);
    let ev = desk.recv(WAIT);
    // Without collectConversations no transcript goes to the desk.
    assert_eq!(ev.body["transcript"], json!([]), "{}", ev.raw);
    let id = ev.body["handoverId"].as_str().unwrap().to_owned();
    wait_status(&app, "u1", "s1", "active");

    // Inject is forwarded like a message; notify goes to the user.
    let key = [("Content-Type", "application/json"), ("X-API-Key", ADMIN_KEY)];
    let body = json!({"userId": "u1", "sessionId": "s1", "text": "injected"}).to_string();
    assert_eq!(post(&app.url(&format!("/inject/{TOKEN}")), &body, &key).0, 200);
    let ev = desk.recv(WAIT);
    assert_eq!((&ev.body["event"], &ev.body["text"]), (&json!("user.message"), &json!("injected")));
    let body = json!({"userId": "u1", "sessionId": "s1", "text": "your parcel left"}).to_string();
    assert_eq!(post(&app.url(&format!("/notify/{TOKEN}")), &body, &key).0, 200);
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text(), &h.body["AIOutput"]["source"]), (4, "your parcel left", &json!("bot")));

    // The cancel intent (by NLU): the desk is told, the Flow goes on with "cancelled".
    app.send("u1", "s1", "back to the bot please");
    let ev = desk.recv(WAIT);
    assert_eq!(ev.body, json!({"event": "handover.cancelled", "handoverId": id}));
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (5, "Back with the bot (webhook)"));
    let (status, answer) = agent_post(&app, "end", &json!({"handoverId": id}));
    assert_error(status, &answer, 409, "handover_ended");
    let metrics = request("GET", &app.url("/metrics"), None, &[]).body;
    assert!(metrics.contains("hookflow_handovers_ended_total{status=\"cancelled\"} 1"), "{metrics}");
}

#[test]
fn a_desk_that_keeps_failing_is_retried_on_the_schedule_then_the_handover_ends_as_error() {
    let (sink, desk) = (Sink::new(), Sink::with_status(503));
    let app = App::start("handover-error", &desk_config(&sink.url, &desk.url), &[("flow.json", &desk_flow())]);
    app.send("u1", "s1", "I need a human");
    assert_eq!(sink.recv_n(3, WAIT).len(), 3);
    // retrySchedule [0.05, 0.1]: the first attempt and two retries, all of the same event.
    let tries = desk.recv_n(3, WAIT);
    assert!(tries.iter().all(|t| t.body["event"] == "handover.requested" && t.answered == 503));
    let ids: Vec<&str> = tries.iter().map(|t| t.header("webhook-id").unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one webhook-id for every attempt of an event: {ids:?}");
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (4, "No agent could be reached"));
    wait_status(&app, "u1", "s1", "error");
    // A final refusal (4xx) is not retried.
    desk.set_status(400);
    app.send("u1", "s2", "I need a human");
    assert_eq!(sink.recv_n(3, WAIT).len(), 3);
    assert_eq!(desk.recv(WAIT).answered, 400);
    assert_eq!(sink.recv(WAIT).text(), "No agent could be reached");
    let metrics = request("GET", &app.url("/metrics"), None, &[]).body;
    assert!(metrics.contains("hookflow_handovers_ended_total{status=\"error\"} 2"), "{metrics}");
    assert!(metrics.contains("hookflow_handovers_started_total 0"), "{metrics}");
}

#[test]
fn a_restart_in_the_middle_of_a_handover_keeps_it() {
    let (sink, desk) = (Sink::new(), Sink::new());
    let mut app = App::start("handover-restart", &desk_config(&sink.url, &desk.url), &[("flow.json", &desk_flow())]);
    let id = start(&app, &sink, &desk);
    app.restart();
    app.send("u1", "s1", "still there?");
    let ev = desk.recv(WAIT);
    assert_eq!((&ev.body["event"], &ev.body["handoverId"]), (&json!("user.message"), &json!(id)));
    let (status, _) = agent_post(&app, "messages", &json!({"handoverId": id, "text": "Yes!"}));
    assert_eq!(status, 200);
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text(), &h.body["AIOutput"]["source"]), (4, "Yes!", &json!("agent")));
    // A handover started after the restart is counted as active; the end of the one started
    // before it does not take it off.
    app.send("u2", "s2", "I need a human too");
    sink.recv_n(3, WAIT);
    assert_eq!(desk.recv(WAIT).body["event"], "handover.requested");
    wait_status(&app, "u2", "s2", "active");
    let active = || crate::child::Metrics::parse(&request("GET", &app.url("/metrics"), None, &[]).body);
    assert_eq!(active().value("hookflow_handovers_active"), 1.0);
    assert_eq!(agent_post(&app, "end", &json!({"handoverId": id})).0, 200);
    assert_eq!(sink.recv(WAIT).text(), "Welcome back (handover, )");
    assert_eq!(active().value("hookflow_handovers_active"), 1.0, "the other handover is still active");
}

#[test]
fn a_restart_while_the_start_is_retried_makes_the_start_again() {
    let (sink, desk) = (Sink::new(), Sink::with_status(503));
    let mut cfg = desk_config(&sink.url, &desk.url);
    // Long waits: the start is still being retried when the process stops.
    cfg["delivery"]["retrySchedule"] = json!([600]);
    let mut app = App::start("handover-restart-start", &cfg, &[("flow.json", &desk_flow())]);
    app.send("u1", "s1", "I need a human");
    assert_eq!(sink.recv_n(3, WAIT).len(), 3);
    let first = desk.recv(WAIT);
    desk.set_status(200);
    app.restart();
    // The start is made again after the restart (its checkpoint is in the store), same handover.
    let again = desk.recv(WAIT);
    assert_eq!(again.body["event"], "handover.requested");
    assert_eq!(again.body["handoverId"], first.body["handoverId"]);
    let id = again.body["handoverId"].as_str().unwrap().to_owned();
    wait_status(&app, "u1", "s1", "active");
    // It is active now: the outputs of the first turn were not sent twice.
    assert_eq!(agent_post(&app, "messages", &json!({"handoverId": id, "text": "Hello"})).0, 200);
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (4, "Hello"));
}

#[test]
fn bad_input_on_the_agent_routes_gets_clear_errors_and_loses_nothing() {
    let (sink, desk) = (Sink::new(), Sink::new());
    let app = App::start("handover-errors", &desk_config(&sink.url, &desk.url), &[("flow.json", &desk_flow())]);
    let id = start(&app, &sink, &desk);
    let url = app.url(&format!("/handover/{TOKEN}/messages"));
    let good = json!({"handoverId": id, "text": "from the agent"}).to_string();
    let json_ct = ("Content-Type", "application/json");

    let (status, answer) = post(&url, &good, &[json_ct, ("X-API-Key", "wrong-key")]);
    assert_error(status, &answer, 401, "unauthorized");
    let (status, answer) = post(&url, &good, &[json_ct]);
    assert_error(status, &answer, 401, "unauthorized");
    let (status, answer) = agent_post(&app, "messages", &json!({"handoverId": "ho_bogus.0123", "text": "x"}));
    assert_error(status, &answer, 404, "unknown_handover");
    // A well-formed id of this session but not its handover.
    let other = format!("{}.{}", id.rsplit_once('.').unwrap().0, "0".repeat(24));
    let (status, answer) = agent_post(&app, "messages", &json!({"handoverId": other, "text": "x"}));
    assert_error(status, &answer, 404, "unknown_handover");
    let (status, answer) = post(&url, "{not json", &[json_ct, ("X-API-Key", AGENT_KEY)]);
    assert_error(status, &answer, 400, "invalid_json");
    let (status, answer) = agent_post(&app, "messages", &json!({"text": "x"}));
    assert!(assert_error(status, &answer, 400, "invalid_request").contains("handoverId"));
    let (status, answer) = agent_post(&app, "messages", &json!({"handoverId": id}));
    assert!(assert_error(status, &answer, 400, "invalid_request").contains("text"));
    let (status, answer) = agent_post(&app, "end", &json!({"handoverId": id, "status": "maybe"}));
    assert!(assert_error(status, &answer, 400, "invalid_request").contains("completed"));
    let (status, answer) = agent_post(&app, "elsewhere", &json!({"handoverId": id}));
    assert_error(status, &answer, 404, "not_found");
    let r = request("GET", &url, None, &[("X-API-Key", AGENT_KEY)]);
    assert_error(r.status, &r.json(), 405, "method_not_allowed");
    let (status, answer) = post(&app.url("/handover/no-such-token-123/messages"), &good, &[json_ct]);
    assert_error(status, &answer, 404, "unknown_endpoint");
    // Chatwoot's route on an endpoint with the webhook provider.
    let (status, answer) = agent_post(&app, "chatwoot", &json!({"event": "message_created"}));
    assert_error(status, &answer, 404, "not_found");

    // Nothing was queued by any of them, and the handover goes on.
    assert_eq!(post(&url, &good, &[json_ct, ("X-API-Key", AGENT_KEY)]).0, 200);
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (4, "from the agent"));
}

#[test]
fn a_flow_with_a_handover_node_needs_a_handover_provider() {
    let sink = Sink::new();
    let dir = TempDir::new("handover-no-provider");
    let path = write_files(&dir.path, &config(&sink.url), &[("flow.json", &desk_flow())]);
    let cfg = load(&path, &[]);
    let e = hookflow::Service::start(cfg).err().expect("the start is refused").to_string();
    assert!(e.contains("endpoints[0]") && e.contains("handover") && e.contains("hookflow.json"), "{e}");
    assert!(e.contains("add \"handover\""), "the message says the fix: {e}");
}

#[test]
fn hookflow_check_names_the_file_place_and_fix_of_handover_mistakes() {
    let dir = TempDir::new("handover-check");
    // A handover node on an endpoint without a provider.
    let path = write_files(&dir.path, &config("http://127.0.0.1:9/hook"), &[("flow.json", &desk_flow())]);
    let o = crate::bot::run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.contains("endpoints[0]")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("hookflow.json") && line.contains("\"handover\" node") && line.contains("add \"handover\""));
    // An unknown provider type and missing keys.
    let mut cfg = config("http://127.0.0.1:9/hook");
    cfg["endpoints"][0]["handover"] = json!({"type": "zendesk"});
    let path = write_files(&dir.path, &cfg, &[]);
    let o = crate::bot::run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("endpoints[0].handover.type: expected \"webhook\" or \"chatwoot\", got \"zendesk\""), "{err}");
    cfg["endpoints"][0]["handover"] = json!({"type": "chatwoot", "baseUrl": "https://cw.example.com"});
    let path = write_files(&dir.path, &cfg, &[]);
    let o = crate::bot::run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    for key in ["accountId", "inboxId", "apiToken", "webhookToken"] {
        assert!(err.contains(&format!("hookflow.json: endpoints[0].handover.{key}: missing required key")), "{err}");
    }
    // And a good one passes.
    cfg = desk_config("http://127.0.0.1:9/hook", "http://127.0.0.1:9/desk");
    let path = write_files(&dir.path, &cfg, &[]);
    let o = crate::bot::run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The steps of the README's worked example (its block is skipped by `readme.rs`, see there).
#[test]
fn the_handover_example_passes_check_and_hands_over_to_the_sink() {
    let cfg = crate::bot::examples_dir().join("handover.json");
    let o = crate::bot::run_cli(&["check", "--config", cfg.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ok  helpdesk -> http://127.0.0.1:9000/hook"));
    // The example's Flow, with the README's steps, against a sink standing in for both URLs.
    let (sink, desk) = (Sink::new(), Sink::new());
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["listen"] = json!("127.0.0.1:0");
    c["dataDir"] = json!("./data");
    c["adminKeys"] = json!([key_digest(ADMIN_KEY)]);
    c["endpoints"][0]["webhook"]["url"] = json!(sink.url);
    c["endpoints"][0]["handover"]["url"] = json!(desk.url);
    let flow: Value =
        serde_json::from_str(&std::fs::read_to_string(crate::bot::examples_dir().join("flows/handover.json")).unwrap())
            .unwrap();
    c["endpoints"][0]["flow"] = json!("flow.json");
    let app = App::start("handover-example", &c, &[("flow.json", &flow)]);
    let url = app.url("/helpdesk-8a41c07d2e9b5f36");
    send_to(&url, &json!({"userId": "u1", "sessionId": "s1", "text": "talk to a human"}));
    assert_eq!(sink.recv_n(2, WAIT)[0].text(), "Let me connect you with a colleague.");
    let id = desk.recv(WAIT).body["handoverId"].as_str().unwrap().to_owned();
    wait_status_of(&app, "helpdesk", "u1", "s1", "active");
    send_to(&url, &json!({"userId": "u1", "sessionId": "s1", "text": "my parcel is late"}));
    assert_eq!(desk.recv(WAIT).body["text"], "my parcel is late");
    let agent = |what: &str, body: Value| {
        let url = app.url(&format!("/handover/helpdesk-8a41c07d2e9b5f36/{what}"));
        post(&url, &body.to_string(), &[("Content-Type", "application/json"), ("X-API-Key", "demo-agent-key")]).0
    };
    assert_eq!(agent("messages", json!({"handoverId": id, "text": "Hi, Ann here.", "agentName": "Ann"})), 200);
    assert_eq!(sink.recv(WAIT).text(), "Hi, Ann here.");
    assert_eq!(agent("end", json!({"handoverId": id, "status": "completed"})), 200);
    assert_eq!(sink.recv(WAIT).text(), "I'm back. Thanks for waiting, Ann helped you.");
}

/// The binary killed (`kill -9`) while the desk holds the start, and again with an agent's
/// message acknowledged but not yet delivered: after each restart nothing is lost.
#[test]
fn kill_9_in_the_middle_of_a_handover_loses_nothing() {
    use crate::child::Launch;
    let dir = TempDir::new("handover-kill9");
    let desk = Sink::new();
    let write = |sink: &str, port: u16| {
        let mut cfg = desk_config(sink, &desk.url);
        cfg["listen"] = json!(format!("127.0.0.1:{port}"));
        cfg["delivery"]["retrySchedule"] = json!(vec![0.2; 20]);
        write_files(&dir.path, &cfg, &[("flow.json", &desk_flow())])
    };
    let sink = Sink::new();
    desk.hold();
    let path = write(&sink.url, free_port());
    let mut first = Launch::new(&path, dir.join("first.log")).start();
    send_to(&first.url(&format!("/{TOKEN}")), &json!({"userId": "u1", "sessionId": "s1", "text": "I need a human"}));
    assert_eq!(sink.recv_n(3, WAIT).len(), 3);
    let held = desk.recv(WAIT);
    first.kill9();
    desk.release();

    let refusing = Sink::with_status(503);
    let path = write(&refusing.url, free_port());
    let mut second = Launch::new(&path, dir.join("second.log")).start();
    let again = desk.recv(WAIT);
    assert_eq!((&again.body["event"], &again.body["handoverId"]), (&held.body["event"], &held.body["handoverId"]));
    let id = again.body["handoverId"].as_str().unwrap().to_owned();
    let base = second.url("");
    let agent_url = format!("{base}/handover/{TOKEN}/messages");
    let post_agent = |url: &str| {
        let body = json!({"handoverId": id, "text": "Ann here"}).to_string();
        post(url, &body, &[("Content-Type", "application/json"), ("X-API-Key", AGENT_KEY)])
    };
    // Accepted also while the start's answer is being committed: it runs after it, in order.
    let (status, answer) = post_agent(&agent_url);
    assert_eq!(status, 200, "{answer}\n{}", second.log_text());
    assert_eq!(refusing.recv(WAIT).answered, 503, "the agent's output was tried and refused");
    second.kill9();

    let sink = Sink::new();
    let path = write(&sink.url, free_port());
    let third = Launch::new(&path, dir.join("third.log")).start();
    // The first process may have been killed between the 200s of the first three outputs and
    // their removal from the outbox: they may come again first (at-least-once, same Seqs).
    let mut h = sink.recv(WAIT);
    while h.seq() < 4 {
        h = sink.recv(WAIT);
    }
    assert_eq!(
        (h.seq(), h.text(), &h.body["AIOutput"]["source"]),
        (4, "Ann here", &json!("agent")),
        "{}",
        third.log_text()
    );
}

#[test]
fn a_desk_asking_to_wait_with_retry_after_gets_its_wait_beyond_the_schedule() {
    // handover.md: provider failures are retried like deliveries, and deliveries honour
    // Retry-After (http-api.md §2).
    let sink = Sink::new();
    let desk = crate::child::Mock::with_status(200);
    desk.script(vec![(503, vec![("Retry-After", "1")])]);
    let mut cfg = desk_config(&sink.url, &desk.url);
    cfg["delivery"]["retrySchedule"] = json!([0.05]);
    let app = App::start("handover-retry-after", &cfg, &[("flow.json", &desk_flow())]);
    app.send("u1", "s1", "I need a human");
    let (t0, first) = desk.recv(WAIT);
    let (t1, second) = desk.recv(WAIT);
    let gap = t1 - t0;
    assert_eq!((first.answered, second.answered), (503, 200));
    assert_eq!(second.body["event"], "handover.requested");
    assert!(gap >= std::time::Duration::from_millis(950), "the start was made again {gap:?} after Retry-After: 1");
    wait_status(&app, "u1", "s1", "active");
}

#[test]
fn the_start_carries_the_last_20_lines_of_the_transcript() {
    let (sink, desk) = (Sink::new(), Sink::new());
    let flow = json!({ "nodes": [
        { "type": "lookup", "mode": "text", "cases": {
            "human": [{ "type": "handover", "text": "Connecting." }]
        }, "default": [{ "type": "say", "text": "echo {{input.text}}" }] }
    ]});
    let app = App::start("handover-transcript", &desk_config(&sink.url, &desk.url), &[("flow.json", &flow)]);
    for i in 1..=12 {
        app.send("u1", "s1", &format!("m{i}"));
        sink.recv(WAIT);
    }
    app.send("u1", "s1", "human");
    let ev = desk.recv(WAIT);
    let lines = transcript_lines(&ev.body);
    // 26 lines in all (12 messages and their echoes, then "human" and "Connecting."): the last 20.
    assert_eq!(lines.len(), 20, "{lines:?}");
    assert_eq!(lines[0], ("user", "m4"));
    assert_eq!(lines[18..], [("user", "human"), ("bot", "Connecting.")]);
}
