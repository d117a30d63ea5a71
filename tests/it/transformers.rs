//! flows.md Transformers: `handleInput` (a foreign JSON shape, a form post, dropping, throwing,
//! `abortOnError`), `handleOutput` (replacing and dropping outputs), `handleInject` and
//! `handleNotify` on their routes.

use serde_json::{Value, json};

use crate::bot::*;
use crate::support::*;

const TRANSFORMER: &str = r#"
// A chat client that speaks {"user", "conversation", "message"}; an SMS gateway posting forms.
async function handleInput({ endpoint, request }) {
  const b = request.body;
  const type = request.headers['content-type'] || '';
  if (type.startsWith('application/x-www-form-urlencoded')) {
    return { userId: b.From, sessionId: 'sms-' + b.From, text: b.Body,
             data: { via: endpoint.name, method: request.method, src: request.query.src, path: request.path } };
  }
  if (b && b.spin) { while (true) {} }
  if (b && b.probe) {
    return { userId: b.userId, sessionId: b.sessionId,
             text: [typeof require, typeof fetch, typeof process, typeof std, typeof os].join(',') };
  }
  if (b && b.drop) return false;
  if (b && b.boom) throw new Error('handleInput exploded');
  if (b && b.user) return { userId: b.user, sessionId: b.conversation, text: b.message };
  return b;
}
function handleOutput({ output, processedOutput, endpoint, userId, sessionId }) {
  if (output.text === 'secret') return null;
  if (output.text === 'explode') throw new Error('handleOutput exploded');
  return { to: userId, conversation: sessionId, says: output.text, data: output.data, endpoint: endpoint.name,
           trace: processedOutput.AIOutput.traceId };
}
function handleInject({ request }) {
  const b = request.body;
  return { userId: b.who, sessionId: b.where, text: 'injected ' + b.what };
}
function handleNotify({ request }) {
  const b = request.body;
  return { userId: b.who, sessionId: b.where, text: 'notified ' + b.what };
}
"#;

fn say(text: &str) -> Value {
    json!({ "type": "say", "text": text })
}

/// Asks for a name, then greets with it.
fn name_flow() -> Value {
    json!({ "name": "names", "nodes": [
        { "type": "question", "questionType": "text", "text": "Your name?", "resultLocation": "context.name" },
        { "type": "say", "text": "Hi {{context.name}}", "data": "{{input.data}}" }
    ]})
}

/// A bot whose `main` endpoint uses [`TRANSFORMER`] with these settings (`file` is added; the
/// file is beside the config, where transformers must be).
fn bot_with(name: &str, flow: &Value, settings: Value) -> Bot {
    let mut t = settings;
    t["file"] = json!("transformer.js");
    let texts = [("transformer.js", TRANSFORMER)];
    Bot::start_files(name, &[("flow.json", flow)], &texts, |cfg| cfg["endpoints"][0]["transformer"] = t)
}

fn post_json_raw(bot: &Bot, body: &Value) -> (u16, Value) {
    post_json(&bot.app.msg_url(), body)
}

#[test]
fn handle_input_lets_a_foreign_client_format_hold_a_conversation() {
    let bot = bot_with("t-foreign", &name_flow(), json!({ "input": true, "output": false }));
    let (status, answer) = post_json_raw(&bot, &json!({ "user": "ann", "conversation": "c1", "message": "hello" }));
    assert_eq!(status, 200, "{answer}");
    let trace = assert_accepted(&answer);
    let h = bot.expect1("c1", "Your name?");
    assert_eq!((h.user_id(), h.trace_id()), ("ann", trace.as_str()));
    let (status, answer) = post_json_raw(&bot, &json!({ "user": "ann", "conversation": "c1", "message": "Ann" }));
    assert_eq!(status, 200, "{answer}");
    bot.expect1("c1", "Hi Ann");
    // The standard format still passes through.
    bot.text("bob", "c2", "hey");
    bot.expect1("c2", "Your name?");
}

#[test]
fn handle_input_accepts_a_form_post() {
    let bot = bot_with("t-form", &name_flow(), json!({ "input": true, "output": false }));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, answer) = post(&bot.app.msg_url(), "From=%2B4912345&Body=hello+there", &form);
    assert_eq!(status, 200, "{answer}");
    assert_accepted(&answer);
    let h = bot.expect1("sms-+4912345", "Your name?");
    assert_eq!(h.user_id(), "+4912345");
    let (status, answer) = post(&format!("{}?src=gw1", bot.app.msg_url()), "From=%2B4912345&Body=Ann+Lee", &form);
    assert_eq!(status, 200, "{answer}");
    let h = bot.expect1("sms-+4912345", "Hi Ann Lee");
    let path = format!("/{TOKEN}");
    assert_eq!(h.body["AIOutput"]["data"], json!({ "via": "main", "method": "POST", "src": "gw1", "path": path }));
}

#[test]
fn handle_input_returning_a_falsy_value_drops_the_request() {
    let bot = bot_with("t-drop", &name_flow(), json!({ "input": true, "output": false }));
    let (status, answer) =
        post_json_raw(&bot, &json!({ "user": "ann", "conversation": "c1", "message": "dropped", "drop": true }));
    assert_eq!(status, 200, "a dropped request is answered 200 all the same: {answer}");
    // Had it run, it would have asked "Your name?" and this message would be the answer.
    post_json_raw(&bot, &json!({ "user": "ann", "conversation": "c1", "message": "hello" }));
    bot.expect1("c1", "Your name?");
    let session = bot.session("ann", "c1");
    assert_eq!(session["messageCount"], 1, "{session}");
}

#[test]
fn a_throwing_handle_input_falls_back_to_the_untransformed_body() {
    let bot = bot_with("t-throw", &name_flow(), json!({ "input": true, "output": false }));
    let (status, answer) =
        post_json_raw(&bot, &json!({ "userId": "u", "sessionId": "s", "text": "plain", "boom": true }));
    assert_eq!(status, 200, "{answer}");
    assert_accepted(&answer);
    bot.expect1("s", "Your name?");
}

#[test]
fn a_transformer_is_limited_like_any_script() {
    let texts = [("transformer.js", TRANSFORMER)];
    let bot = Bot::start_files("t-limits", &[("flow.json", &name_flow())], &texts, |cfg| {
        cfg["limits"] = json!({ "scriptTimeoutMs": 200 });
        cfg["endpoints"][0]["transformer"] = json!({ "file": "transformer.js", "input": true, "output": false });
    });
    // An endless loop is stopped at scriptTimeoutMs and the request falls back to its body.
    let started = std::time::Instant::now();
    let (status, answer) =
        post_json_raw(&bot, &json!({ "userId": "u", "sessionId": "s", "text": "hello", "spin": true }));
    let took = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert!(took < std::time::Duration::from_secs(3), "the request took {took:?} with scriptTimeoutMs 200");
    bot.expect1("s", "Your name?");
    // The same http threads go on transforming; there is no I/O in there either.
    let (status, answer) = post_json_raw(&bot, &json!({ "userId": "u", "sessionId": "s", "probe": true }));
    assert_eq!(status, 200, "{answer}");
    bot.expect1("s", "Hi undefined,undefined,undefined,undefined,undefined");
}

#[test]
fn a_throwing_handle_input_with_abort_on_error_is_answered_400() {
    let bot = bot_with("t-abort", &name_flow(), json!({ "input": true, "output": false, "abortOnError": true }));
    let (status, answer) =
        post_json_raw(&bot, &json!({ "userId": "u", "sessionId": "s", "text": "plain", "boom": true }));
    let message = assert_error(status, &answer, 400, "transformer_error");
    assert!(message.contains("handleInput"), "{message}");
    // Nothing ran: the next message is the session's first.
    bot.text("u", "s", "hello");
    let h = bot.expect1("s", "Your name?");
    assert_eq!(h.seq(), 1);
}

#[test]
fn handle_output_replaces_the_posted_body_and_a_falsy_result_drops_that_output() {
    let f = json!({ "name": "three", "nodes": [
        { "type": "say", "text": "first", "data": { "k": 1 } }, say("secret"), say("third")
    ]});
    let bot = bot_with("t-output", &f, json!({ "input": false, "output": true }));
    let trace = bot.text("u", "s", "go");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!(
        hits[0].body,
        json!({ "to": "u", "conversation": "s", "says": "first", "data": { "k": 1 }, "endpoint": "main",
                "trace": trace })
    );
    assert_eq!(
        hits[1].body,
        json!({ "to": "u", "conversation": "s", "says": "third", "data": {}, "endpoint": "main", "trace": trace })
    );
    assert!(hits[0].seq() < hits[1].seq());
    // The dropped output is not sent later either: the next turn's first output comes next.
    bot.text("u", "s", "again");
    assert_eq!(bot.sink.recv(WAIT).body["says"], "first");
}

#[test]
fn a_throwing_handle_output_falls_back_to_the_standard_payload_or_with_abort_on_error_drops_it() {
    let f = json!({ "name": "three", "nodes": [ say("first"), say("explode"), say("third") ] });
    let bot = bot_with("t-output-throw", &f, json!({ "input": false, "output": true }));
    bot.text("u", "s", "go");
    let hits = bot.sink.recv_n(3, WAIT);
    assert_eq!(hits[0].body["says"], "first", "{}", hits[0].raw);
    assert_eq!(hits[1].body["AIOutput"]["text"], "explode", "the standard payload: {}", hits[1].raw);
    assert_eq!(hits[2].body["says"], "third", "{}", hits[2].raw);

    let bot = bot_with("t-output-abort", &f, json!({ "input": false, "output": true, "abortOnError": true }));
    bot.text("u", "s", "go");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!((hits[0].body["says"].as_str(), hits[1].body["says"].as_str()), (Some("first"), Some("third")));
    bot.text("u", "s", "again");
    assert_eq!(bot.sink.recv(WAIT).body["says"], "first", "the dropped output is not sent later");
}

#[test]
fn handle_inject_and_handle_notify_transform_their_routes() {
    let f = json!({ "name": "echo", "nodes": [ { "type": "say", "text": "flow: {{input.text}}" } ] });
    let settings = json!({ "input": false, "output": false, "inject": true, "notify": true });
    let bot = bot_with("t-inject", &f, settings);
    let headers = [("Content-Type", "application/json"), ("X-API-Key", ADMIN_KEY)];
    let body = json!({ "who": "u", "where": "s", "what": "x" }).to_string();

    let (status, answer) = post(&bot.app.url(&format!("/inject/{TOKEN}")), &body, &headers);
    assert_eq!(status, 200, "{answer}");
    assert_accepted(&answer);
    bot.expect1("s", "flow: injected x");

    let (status, answer) = post(&bot.app.url(&format!("/notify/{TOKEN}")), &body, &headers);
    assert_eq!(status, 200, "{answer}");
    assert_accepted(&answer);
    bot.expect1("s", "notified x");
}
