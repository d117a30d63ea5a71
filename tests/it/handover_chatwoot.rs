//! handover.md with the Chatwoot provider, against a local stand-in of Chatwoot (a separate
//! server on 127.0.0.1) that implements the routes of Chatwoot's Application API that hookflow
//! uses, as Chatwoot's API documentation (developers.chatwoot.com, the `swagger/` of
//! chatwoot/chatwoot) gives them, authenticated with the `api_access_token` header:
//!
//! - `GET  /api/v1/accounts/{account_id}/contacts/search?q=` → `{meta, payload: [contact]}`
//! - `POST /api/v1/accounts/{account_id}/contacts` `{inbox_id, name, identifier}` →
//!   `{payload: {contact, contact_inbox: {source_id, inbox}}}`
//! - `POST /api/v1/accounts/{account_id}/contacts/{id}/contact_inboxes` `{inbox_id}` →
//!   `{source_id, inbox}`
//! - `POST /api/v1/accounts/{account_id}/conversations` `{source_id, inbox_id, contact_id,
//!   status, additional_attributes}` → `{id, account_id, inbox_id}`
//! - `POST /api/v1/accounts/{account_id}/conversations/{conversation_id}/messages` `{content,
//!   message_type, private}` → the message
//! - `POST /api/v1/accounts/{account_id}/conversations/{conversation_id}/toggle_status`
//!   `{status}` → `{meta, payload: {success, conversation_id, current_status}}`
//!
//! and the webhook events Chatwoot POSTs (docs: "Webhook events"), built by the stand-in from
//! its conversations in the documented shapes: `message_created` (with `message_type`,
//! `private`, `sender`, `conversation` with its `additional_attributes`) and
//! `conversation_status_changed` (the conversation object with `status` and `meta.assignee`).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};
use serde_json::{Value, json};

use crate::handover::desk_flow;
use crate::support::*;

const API_TOKEN: &str = "cw-api-token-91c2";
const HOOK_TOKEN: &str = "cw-hook-token-5e7a";
const ACCOUNT: u64 = 3;
const INBOX: u64 = 7;

/// A request the stand-in answered: method, path (with query) and JSON body.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Value,
}

#[derive(Default)]
struct State {
    /// (id, identifier)
    contacts: Vec<(i64, String)>,
    /// (id, additional_attributes, status)
    conversations: Vec<(i64, Value, String)>,
    next_id: i64,
}

struct Chatwoot {
    base: String,
    calls: Receiver<Call>,
    state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Chatwoot {
    fn start() -> Chatwoot {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the stand-in"));
        let port = server.server_addr().to_ip().unwrap().port();
        let state = Arc::new(Mutex::new(State { next_id: 100, ..State::default() }));
        let (tx, calls) = unbounded();
        let (s, st) = (server.clone(), state.clone());
        let thread = std::thread::spawn(move || serve(&s, &st, &tx));
        Chatwoot { base: format!("http://127.0.0.1:{port}"), calls, state, server, thread: Some(thread) }
    }

    fn recv(&self) -> Call {
        self.calls.recv_timeout(WAIT).expect("a call to the Chatwoot stand-in")
    }

    /// The `message_created` event of an agent's (or a private note's) message in `conversation`.
    fn message_created(&self, conversation: i64, content: &str, private: bool) -> Value {
        let attrs = self.attributes(conversation);
        json!({
            "id": 118, "content": content, "created_at": "2021-07-23T18:02:48.000Z", "message_type": "outgoing",
            "content_type": "text", "private": private, "content_attributes": {}, "source_id": null,
            "sender": { "id": 1, "name": "John", "avatar": "", "type": "user" },
            "inbox": { "id": INBOX, "name": "Bot handover" },
            "conversation": { "additional_attributes": attrs, "can_reply": true, "channel": "Channel::Api",
                              "id": conversation, "inbox_id": INBOX, "status": "open", "unread_count": 0 },
            "account": { "id": ACCOUNT, "name": "Acme Inc" },
            "event": "message_created"
        })
    }

    /// The `conversation_status_changed` event of `conversation` becoming `status`.
    fn status_changed(&self, conversation: i64, status: &str) -> Value {
        json!({
            "additional_attributes": self.attributes(conversation), "can_reply": true, "channel": "Channel::Api",
            "id": conversation, "inbox_id": INBOX, "messages": [],
            "meta": { "sender": { "id": 12, "type": "contact" },
                      "assignee": { "id": 1, "name": "John", "available_name": "John", "type": "user" } },
            "status": status, "unread_count": 0, "timestamp": 1627063369, "event": "conversation_status_changed"
        })
    }

    fn attributes(&self, conversation: i64) -> Value {
        let st = self.state.lock().unwrap();
        st.conversations.iter().find(|c| c.0 == conversation).map(|c| c.1.clone()).expect("a known conversation")
    }
}

impl Drop for Chatwoot {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, state: &Mutex<State>, tx: &Sender<Call>) {
    while let Ok(mut req) = server.recv() {
        let mut raw = String::new();
        let _ = std::io::Read::read_to_string(req.as_reader(), &mut raw);
        let token = req.headers().iter().find(|h| h.field.equiv("api_access_token")).map(|h| h.value.to_string());
        let call = Call {
            method: req.method().as_str().to_owned(),
            path: req.url().to_owned(),
            body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        };
        let (status, answer) = if token.as_deref() != Some(API_TOKEN) {
            (401, json!({"error": "You need to sign in or sign up before continuing."}))
        } else {
            route(state, &call)
        };
        let _ = tx.send(call);
        let resp = tiny_http::Response::from_string(answer.to_string())
            .with_status_code(status)
            .with_header(tiny_http::Header::from_bytes("Content-Type", "application/json; charset=utf-8").unwrap());
        let _ = req.respond(resp);
    }
}

fn route(state: &Mutex<State>, call: &Call) -> (u16, Value) {
    let mut st = state.lock().unwrap();
    let prefix = format!("/api/v1/accounts/{ACCOUNT}/");
    let Some(rest) = call.path.strip_prefix(&prefix) else { return (404, json!({"error": "not found"})) };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let parts: Vec<&str> = path.split('/').collect();
    let contact = |id: i64, identifier: &str| {
        json!({"id": id, "name": identifier, "identifier": identifier,
                                                     "email": null, "phone_number": null, "custom_attributes": {}})
    };
    let inbox = json!({"id": INBOX, "name": "Bot handover", "channel_type": "Channel::Api"});
    match (call.method.as_str(), parts.as_slice()) {
        ("GET", ["contacts", "search"]) => {
            let q = query.strip_prefix("q=").unwrap_or("").replace("%2F", "/");
            let found: Vec<Value> = st.contacts.iter().filter(|c| c.1 == q).map(|c| contact(c.0, &c.1)).collect();
            (200, json!({"meta": {"count": found.len(), "current_page": 1}, "payload": found}))
        }
        ("POST", ["contacts"]) => {
            st.next_id += 1;
            let id = st.next_id;
            let identifier = call.body["identifier"].as_str().unwrap_or("").to_owned();
            st.contacts.push((id, identifier.clone()));
            let ci = json!({"source_id": format!("src-{id}"), "inbox": inbox});
            (200, json!({"payload": {"contact": contact(id, &identifier), "contact_inbox": ci}}))
        }
        ("POST", ["contacts", id, "contact_inboxes"]) => {
            (200, json!({"source_id": format!("src-{id}-2"), "inbox": inbox}))
        }
        ("POST", ["conversations"]) => {
            st.next_id += 1;
            let id = st.next_id;
            st.conversations.push((id, call.body["additional_attributes"].clone(), "open".into()));
            (200, json!({"id": id, "account_id": ACCOUNT, "inbox_id": INBOX}))
        }
        ("POST", ["conversations", id, "messages"]) => {
            let id: i64 = id.parse().unwrap_or(0);
            if !st.conversations.iter().any(|c| c.0 == id) {
                return (404, json!({"error": "Resource could not be found"}));
            }
            st.next_id += 1;
            (
                200,
                json!({"id": st.next_id, "content": call.body["content"], "conversation_id": id,
                         "message_type": call.body["message_type"], "private": call.body["private"]}),
            )
        }
        ("POST", ["conversations", id, "toggle_status"]) => {
            let id: i64 = id.parse().unwrap_or(0);
            let status = call.body["status"].as_str().unwrap_or("open").to_owned();
            if let Some(c) = st.conversations.iter_mut().find(|c| c.0 == id) {
                c.2 = status.clone();
            }
            (200, json!({"meta": {}, "payload": {"success": true, "conversation_id": id, "current_status": status}}))
        }
        _ => (404, json!({"error": "not found"})),
    }
}

fn chatwoot_config(sink: &str, chatwoot: &str) -> Value {
    let mut c = config(sink);
    c["endpoints"][0]["handover"] = json!({ "type": "chatwoot", "baseUrl": format!("{chatwoot}/"),
        "accountId": ACCOUNT, "inboxId": INBOX, "apiToken": "${CW_TOKEN}", "webhookToken": "${CW_HOOK}" });
    c["endpoints"][0]["dataProtection"] = json!({ "collectConversations": true });
    c
}

fn start_app(name: &str, sink: &Sink, cw: &Chatwoot) -> App {
    let env = [("CW_TOKEN", API_TOKEN), ("CW_HOOK", HOOK_TOKEN)];
    App::start_env(name, &chatwoot_config(&sink.url, &cw.base), &[("flow.json", &desk_flow())], &env)
}

fn hook(app: &App, token: &str, body: &Value) -> (u16, Value) {
    let url = app.url(&format!("/handover/{TOKEN}/chatwoot?token={token}"));
    post(&url, &body.to_string(), &[("Content-Type", "application/json")])
}

/// Starts a handover for `user`/`session`; returns the conversation id.
fn start(app: &App, sink: &Sink, cw: &Chatwoot, user: &str, session: &str, new_contact: bool) -> i64 {
    app.send(user, session, "I need a human");
    assert_eq!(sink.recv_n(3, WAIT).len(), 3);
    let search = cw.recv();
    assert_eq!(
        (search.method.as_str(), search.path.as_str()),
        ("GET", format!("/api/v1/accounts/{ACCOUNT}/contacts/search?q={user}").as_str())
    );
    let made = cw.recv();
    let source = if new_contact {
        assert_eq!(made.path, format!("/api/v1/accounts/{ACCOUNT}/contacts"));
        assert_eq!(made.body, json!({"inbox_id": INBOX, "name": user, "identifier": user}));
        "src-"
    } else {
        assert!(made.path.ends_with("/contact_inboxes"), "{made:?}");
        assert_eq!(made.body, json!({"inbox_id": INBOX}));
        "-2"
    };
    let conv = cw.recv();
    assert_eq!(
        (conv.method.as_str(), conv.path.as_str()),
        ("POST", format!("/api/v1/accounts/{ACCOUNT}/conversations").as_str())
    );
    assert!(conv.body["source_id"].as_str().unwrap().contains(source), "{conv:?}");
    assert_eq!((&conv.body["inbox_id"], &conv.body["status"]), (&json!(INBOX), &json!("open")));
    assert!(conv.body["additional_attributes"]["hookflow_handover_id"].as_str().unwrap().starts_with("ho_"));
    let note = cw.recv();
    assert!(note.path.ends_with("/messages"), "{note:?}");
    assert_eq!((&note.body["private"], &note.body["message_type"]), (&json!(true), &json!("outgoing")));
    assert!(note.body["content"].as_str().unwrap().contains("user: I need a human"), "the transcript: {note:?}");
    let id = cw.state.lock().unwrap().conversations.last().unwrap().0;
    crate::handover::wait_status(app, user, session, "active");
    id
}

#[test]
fn a_chatwoot_handover_creates_the_conversation_relays_both_ways_and_ends_when_resolved() {
    let (sink, cw) = (Sink::new(), Chatwoot::start());
    let app = start_app("chatwoot-flow", &sink, &cw);
    let conv = start(&app, &sink, &cw, "u1", "s1", true);

    // A user's message becomes an incoming message of the conversation.
    app.send("u1", "s1", "my parcel is late");
    let m = cw.recv();
    assert_eq!(m.path, format!("/api/v1/accounts/{ACCOUNT}/conversations/{conv}/messages"));
    assert_eq!(m.body, json!({"content": "my parcel is late", "message_type": "incoming", "private": false}));

    // Chatwoot's webhook: a private note and the echo of an incoming message are not for the user.
    let (status, answer) = hook(&app, HOOK_TOKEN, &cw.message_created(conv, "internal remark", true));
    assert_eq!((status, &answer), (200, &json!({"status": "ignored"})));
    let mut incoming = cw.message_created(conv, "my parcel is late", false);
    incoming["message_type"] = json!("incoming");
    assert_eq!(hook(&app, HOOK_TOKEN, &incoming).1, json!({"status": "ignored"}));
    // An agent's reply: the session's next output, source "agent".
    let (status, answer) = hook(&app, HOOK_TOKEN, &cw.message_created(conv, "Sorry! It ships today.", false));
    assert_eq!((status, &answer), (200, &json!({"status": "accepted"})));
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (4, "Sorry! It ships today."));
    assert_eq!((&h.body["AIOutput"]["source"], &h.body["AIOutput"]["agentName"]), (&json!("agent"), &json!("John")));

    // Another status than resolved changes nothing; resolved ends it: the Flow goes on.
    assert_eq!(hook(&app, HOOK_TOKEN, &cw.status_changed(conv, "pending")).1, json!({"status": "ignored"}));
    assert_eq!(hook(&app, HOOK_TOKEN, &cw.status_changed(conv, "resolved")).0, 200);
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (5, "Welcome back (handover, John)"));
    let (status, answer) = hook(&app, HOOK_TOKEN, &cw.message_created(conv, "too late", false));
    assert_error(status, &answer, 409, "handover_ended");

    // The same user in a new session: the contact is found, not created again.
    start(&app, &sink, &cw, "u1", "s2", false);
}

#[test]
fn cancelling_a_chatwoot_handover_resolves_the_conversation() {
    let (sink, cw) = (Sink::new(), Chatwoot::start());
    let app = start_app("chatwoot-cancel", &sink, &cw);
    let conv = start(&app, &sink, &cw, "u9", "s9", true);
    app.send("u9", "s9", "back");
    let note = cw.recv();
    assert_eq!((&note.body["private"], note.path.ends_with("/messages")), (&json!(true), true));
    let toggle = cw.recv();
    assert_eq!(toggle.path, format!("/api/v1/accounts/{ACCOUNT}/conversations/{conv}/toggle_status"));
    assert_eq!(toggle.body, json!({"status": "resolved"}));
    assert_eq!(sink.recv(WAIT).text(), "Back with the bot (chatwoot)");
    assert_eq!(cw.state.lock().unwrap().conversations.last().unwrap().2, "resolved");
}

#[test]
fn the_chatwoot_webhook_refuses_a_wrong_token_and_bad_events_and_loses_nothing() {
    let (sink, cw) = (Sink::new(), Chatwoot::start());
    let app = start_app("chatwoot-errors", &sink, &cw);
    let conv = start(&app, &sink, &cw, "u1", "s1", true);
    let reply = cw.message_created(conv, "hello from John", false);
    let (status, answer) = hook(&app, "wrong", &reply);
    assert_error(status, &answer, 401, "unauthorized");
    let url = app.url(&format!("/handover/{TOKEN}/chatwoot"));
    let (status, answer) = post(&url, &reply.to_string(), &[("Content-Type", "application/json")]);
    assert_error(status, &answer, 401, "unauthorized");
    let url = app.url(&format!("/handover/{TOKEN}/chatwoot?token={HOOK_TOKEN}"));
    let (status, answer) = post(&url, "{\"event\":", &[("Content-Type", "application/json")]);
    assert_error(status, &answer, 400, "invalid_json");
    let (status, answer) = hook(&app, HOOK_TOKEN, &json!({"id": 1}));
    assert!(assert_error(status, &answer, 400, "invalid_request").contains("event"));
    let mut unknown = reply.clone();
    unknown["conversation"]["additional_attributes"]["hookflow_handover_id"] =
        json!("ho_WyJtYWluIiwidTEiLCJzMSJd.000000000000000000000000");
    let (status, answer) = hook(&app, HOOK_TOKEN, &unknown);
    assert_error(status, &answer, 404, "unknown_handover");
    // A conversation hookflow did not start (no handover id): not ours, ignored.
    let mut foreign = reply.clone();
    foreign["conversation"]["additional_attributes"] = json!({});
    assert_eq!(hook(&app, HOOK_TOKEN, &foreign).1, json!({"status": "ignored"}));
    // The agent desk's routes are not open on a Chatwoot endpoint.
    let (status, answer) =
        post(&app.url(&format!("/handover/{TOKEN}/messages")), "{}", &[("Content-Type", "application/json")]);
    assert_error(status, &answer, 404, "not_found");

    assert_eq!(hook(&app, HOOK_TOKEN, &reply).0, 200);
    let h = sink.recv(WAIT);
    assert_eq!((h.seq(), h.text()), (4, "hello from John"));
}

#[test]
fn a_wrong_chatwoot_api_token_ends_the_handover_as_error() {
    let (sink, cw) = (Sink::new(), Chatwoot::start());
    let env = [("CW_TOKEN", "not-the-token"), ("CW_HOOK", HOOK_TOKEN)];
    let app =
        App::start_env("chatwoot-401", &chatwoot_config(&sink.url, &cw.base), &[("flow.json", &desk_flow())], &env);
    app.send("u1", "s1", "I need a human");
    assert_eq!(sink.recv_n(3, WAIT).len(), 3);
    // 401 is final: one search, no retries, and the Flow goes on with "error".
    assert!(cw.recv().path.contains("/contacts/search"));
    assert_eq!(sink.recv(WAIT).text(), "No agent could be reached");
    assert!(cw.calls.try_recv().is_err(), "a refused start is not retried");
}
