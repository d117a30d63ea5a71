//! flows.md `http` node and Execution: what the node stores in `context`, failures, timeouts and
//! `abortOnError`; the node as a checkpoint (outputs before it go out while the call is held;
//! after `kill -9` during the call the turn resumes at the node).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bot::*;
use crate::child::Launch;
use crate::support::*;

fn say(text: &str) -> Value {
    json!({ "type": "say", "text": text })
}

/// The mock API of these tests: `/json/{id}` answers JSON with an `X-Mock` header, `/text`
/// answers 201 with plain text, `/fail` answers 500, `/slow` answers `{"v": 42}`.
fn api() -> Mock {
    Mock::new(|hit| {
        let path = hit.url.split('?').next().unwrap_or("");
        match path {
            p if p.starts_with("/json/") => {
                MockReply::json(200, json!({ "id": &p["/json/".len()..], "ok": true })).header("X-Mock", "yes")
            }
            "/text" => MockReply::text(201, "plain text"),
            "/fail" => MockReply::json(500, json!({ "error": "down" })),
            "/slow" => MockReply::json(200, json!({ "v": 42 })),
            _ => MockReply::json(404, json!({ "error": "no such thing" })),
        }
    })
}

#[test]
fn the_http_node_stores_status_headers_and_body_and_sends_its_templated_request() {
    let mock = api();
    let f = json!({ "name": "http", "nodes": [
        { "type": "http", "method": "GET", "contextKey": "api.json",
          "url": format!("{}/json/{{{{input.text}}}}?n={{{{input.execution}}}}", mock.base) },
        { "type": "http", "method": "POST", "url": mock.url("/text"),
          "headers": { "X-Token": "t-{{input.text}}" },
          "body": { "q": "{{input.text}}", "n": "{{input.execution}}", "fixed": [1, "two"] },
          "contextKey": "txt" },
        { "type": "say", "text": "got {{context.api.json.body.id}} {{context.txt.status}}",
          "data": { "json": "{{context.api.json}}", "txt": "{{context.txt}}" } }
    ]});
    let bot = Bot::start("http-node", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "abc");

    let get = mock.recv(WAIT);
    assert_eq!((get.method.as_str(), get.url.as_str()), ("GET", "/json/abc?n=1"));
    let post = mock.recv(WAIT);
    assert_eq!((post.method.as_str(), post.url.as_str()), ("POST", "/text"));
    assert_eq!(post.header("X-Token"), Some("t-abc"), "templated header: {:?}", post.headers);
    assert!(post.header("Content-Type").is_some_and(|c| c.starts_with("application/json")), "{:?}", post.headers);
    assert_eq!(post.json, json!({ "q": "abc", "n": 1, "fixed": [1, "two"] }), "templated body: {}", post.body);

    let h = bot.expect1("s", "got abc 201");
    let data = &h.body["AIOutput"]["data"];
    assert_eq!(data["json"]["status"], 200, "{data}");
    assert_eq!(data["json"]["body"], json!({ "id": "abc", "ok": true }), "a JSON body is parsed: {data}");
    let headers = data["json"]["headers"].as_object().unwrap_or_else(|| panic!("headers is not an object: {data}"));
    let mock_header = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-mock")).map(|(_, v)| v);
    assert_eq!(mock_header, Some(&json!("yes")), "{data}");
    assert_eq!(data["txt"]["status"], 201, "{data}");
    assert_eq!(data["txt"]["body"], "plain text", "a text body stays text: {data}");
    let session = bot.session("u", "s");
    assert_eq!(session["context"]["api"]["json"]["body"]["id"], "abc", "stored in context[contextKey]: {session}");
}

#[test]
fn a_refused_or_timed_out_call_stores_an_error_and_the_turn_goes_on() {
    let mock = api();
    let closed = CLOSED_PORT;
    let f = json!({ "name": "errors", "nodes": [
        { "type": "lookup", "mode": "text", "cases": {
            "closed": [
              { "type": "http", "method": "GET", "url": format!("http://127.0.0.1:{closed}/x"), "contextKey": "r" }
            ],
            "slow": [
              { "type": "http", "method": "GET", "url": mock.url("/slow"), "timeoutMs": 300, "contextKey": "r" }
            ],
            "fail": [ { "type": "http", "method": "GET", "url": mock.url("/fail"), "contextKey": "r" } ]
          } },
        { "type": "say", "text": "after {{input.text}}", "data": { "r": "{{context.r}}" } }
    ]});
    let bot = Bot::start("http-errors", &[("flow.json", &f)], |_| {});

    bot.text("u", "s", "closed");
    let r = bot.expect1("s", "after closed").body["AIOutput"]["data"]["r"].clone();
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "a refused connection stores {{error}}: {r}");
    assert!(r.get("status").is_none(), "{r}");

    mock.hold();
    bot.text("u", "s", "slow");
    let call = mock.recv(WAIT);
    assert_eq!(call.url, "/slow");
    let r = bot.expect1("s", "after slow").body["AIOutput"]["data"]["r"].clone();
    let waited = call.at.elapsed();
    mock.release();
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "a timed out call stores {{error}}: {r}");
    assert!(waited >= Duration::from_millis(250), "the call gave up after {waited:?}, before timeoutMs 300");
    assert!(waited < Duration::from_secs(5), "the call gave up only after {waited:?} (timeoutMs 300)");

    // A 500 is an answer, not an error: it is stored as such.
    bot.text("u", "s", "fail");
    let r = bot.expect1("s", "after fail").body["AIOutput"]["data"]["r"].clone();
    assert_eq!((r["status"].clone(), r["body"].clone()), (json!(500), json!({ "error": "down" })), "{r}");
}

#[test]
fn abort_on_error_ends_the_turn_at_a_failed_call() {
    let mock = api();
    let closed = CLOSED_PORT;
    let http =
        |url: String| json!({ "type": "http", "method": "GET", "url": url, "contextKey": "r", "abortOnError": true });
    let f = json!({ "name": "abort", "nodes": [
        say("trying"),
        { "type": "lookup", "mode": "text", "cases": {
            "closed": [ http(format!("http://127.0.0.1:{closed}/x")) ],
            "fail": [ http(mock.url("/fail")) ],
            "good": [ http(mock.url("/json/7")) ]
          } },
        { "type": "say", "text": "after", "data": { "r": "{{context.r}}" } }
    ]});
    let bot = Bot::start("http-abort", &[("flow.json", &f)], |_| {});

    // Seq without gaps shows the aborted turns produced nothing after "trying".
    bot.text("u", "s", "closed");
    bot.expect1("s", "trying");
    bot.text("u", "s", "peek");
    let h = bot.expect("s", &["trying", "after"]).remove(1);
    assert!(
        h.body["AIOutput"]["data"]["r"]["error"].is_string(),
        "the error is stored before the turn ends: {}",
        h.raw
    );

    bot.text("u", "s", "fail");
    bot.expect1("s", "trying");
    bot.text("u", "s", "peek");
    let h = bot.expect("s", &["trying", "after"]).remove(1);
    assert_eq!(h.body["AIOutput"]["data"]["r"]["status"], 500, "{}", h.raw);

    bot.text("u", "s", "good");
    let h = bot.expect("s", &["trying", "after"]).remove(1);
    assert_eq!(h.body["AIOutput"]["data"]["r"]["body"]["id"], "7", "{}", h.raw);
}

/// "One moment" before a slow call, the answer after it; anything else is echoed with its
/// execution count.
fn checkpoint_flow(mock: &Mock) -> Value {
    json!({ "name": "checkpoint", "nodes": [
        { "type": "if", "condition": "input.text == 'go'",
          "then": [
            { "type": "setContext", "key": "before", "value": "{{input.text}}-{{input.execution}}" },
            say("One moment"),
            { "type": "http", "method": "GET", "url": mock.url("/slow"), "timeoutMs": 30000, "contextKey": "r" },
            say("done {{context.r.body.v}} {{context.before}} {{input.text}}")
          ],
          "else": [ say("echo {{input.text}} #{{input.execution}}") ] }
    ]})
}

#[test]
fn the_output_before_an_http_node_is_delivered_while_the_call_is_still_held() {
    let mock = api();
    mock.hold();
    let bot = Bot::start("checkpoint", &[("flow.json", &checkpoint_flow(&mock))], |_| {});
    let trace = bot.text("u", "s", "go");
    let call = mock.recv(WAIT);
    assert_eq!(call.url, "/slow");
    // The mock answers only after this output arrived: it cannot be held behind the call.
    let moment = bot.sink.recv(Duration::from_secs(5));
    assert_eq!((moment.text(), moment.seq(), moment.trace_id()), ("One moment", 1, trace.as_str()));
    // What came before the node is saved.
    let session = bot.session("u", "s");
    assert_eq!(session["context"]["before"], "go-1", "{session}");
    assert_eq!(session["messageCount"], 1, "{session}");
    // While the call is held: the same session's next message waits its turn, another
    // session is served by the other worker.
    bot.text("u", "s", "next");
    bot.text("u", "other", "hi");
    let other = bot.sink.recv(WAIT);
    assert_eq!((other.session_id(), other.text()), ("other", "echo hi #1"));
    mock.release();
    let done = bot.sink.recv(WAIT);
    assert_eq!((done.text(), done.seq(), done.trace_id()), ("done 42 go-1 go", 2, trace.as_str()));
    let next = bot.sink.recv(WAIT);
    assert_eq!((next.text(), next.seq()), ("echo next #2", 3));
    assert_eq!(bot.session("u", "s")["context"]["r"]["body"], json!({ "v": 42 }));
}

#[test]
fn max_nodes_per_turn_also_bounds_a_loop_through_an_http_node() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // After 100 calls the mock fails, and abortOnError ends even an unbounded loop.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let mock = Mock::new(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if n > 100 { MockReply::json(500, json!({ "n": n })) } else { MockReply::json(200, json!({ "n": n })) }
    });
    let f = json!({ "name": "http-loop", "nodes": [
        { "type": "if", "condition": "input.text == 'loop'", "then": [
            say("looping"),
            { "id": "call", "type": "http", "method": "GET", "url": mock.url("/ping"), "contextKey": "r",
              "abortOnError": true },
            { "type": "goTo", "target": "call" }
          ] },
        say("ok {{input.text}}")
    ]});
    let bot = Bot::start("http-loop", &[("flow.json", &f)], |cfg| cfg["limits"] = json!({ "maxNodesPerTurn": 20 }));
    bot.text("u", "s", "loop");
    bot.expect1("s", "looping");
    bot.text("u", "s", "after");
    bot.expect1("s", "ok after");
    let n = calls.load(Ordering::SeqCst);
    assert!(n <= 20, "one turn made {n} HTTP calls with limits.maxNodesPerTurn 20");
}

#[test]
fn after_kill_9_during_the_call_the_turn_resumes_at_the_http_node() {
    let dir = TempDir::new("checkpoint-crash");
    let sink = Sink::new();
    let mock = api();
    let flow = checkpoint_flow(&mock);
    let write = |port: u16| {
        let mut cfg = config(&sink.url);
        cfg["listen"] = json!(format!("127.0.0.1:{port}"));
        write_files(&dir.path, &cfg, &[("flow.json", &flow)])
    };

    mock.hold();
    let port = free_port();
    let mut first = Launch::new(&write(port), dir.join("first.log")).env("RUST_LOG", "debug").start();
    let trace = send_to(&format!("{}/{TOKEN}", first.base), &json!({ "userId": "u", "sessionId": "s", "text": "go" }));
    let call = mock.recv(WAIT);
    assert_eq!(call.url, "/slow");
    let moment = sink.recv(WAIT);
    assert_eq!((moment.text(), moment.seq()), ("One moment", 1));
    first.kill9();
    // The held answer now goes to a dead connection; later calls are answered at once.
    mock.release();

    let port = free_port();
    let second = Launch::new(&write(port), dir.join("second.log")).env("RUST_LOG", "debug").start();
    let again = mock.recv(WAIT);
    assert_eq!(again.url, "/slow", "the resumed turn makes the call again");

    let mut hits = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !hits.iter().any(|h: &Hit| h.seq() == 2) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sink.rx.recv_timeout(left) {
            Ok(h) => hits.push(h),
            Err(_) => panic!("no final output after the restart; got {:?}\n{}", texts(&hits), second.log_text()),
        }
    }
    send_to(&format!("{}/{TOKEN}", second.base), &json!({ "userId": "u", "sessionId": "s", "text": "next" }));
    loop {
        let h = sink.recv(WAIT);
        let last = h.seq() == 3;
        hits.push(h);
        if last {
            break;
        }
    }
    // At-least-once: "One moment" may come again, but only as the same output (Seq 1).
    for h in &hits {
        let want = match h.seq() {
            1 => "One moment",
            2 => "done 42 go-1 go",
            3 => "echo next #2",
            n => panic!("unexpected Seq {n} ({:?}); all: {:?}", h.text(), texts(&hits)),
        };
        assert_eq!(h.text(), want, "Seq {} carries another output; all: {:?}", h.seq(), texts(&hits));
    }
    let done = hits.iter().find(|h| h.seq() == 2).expect("the final output");
    assert_eq!(done.trace_id(), trace, "the resumed turn keeps the message's traceId");
    assert_eq!(hits.iter().filter(|h| h.seq() == 2).count(), 1, "{:?}", texts(&hits));
    assert!(mock.rx.try_recv().is_err(), "the call was made once per run, no more");
    let s = admin_get(&format!("{}/api/sessions/main/u/s", second.base));
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.json()["messageCount"], 2, "the resumed message is counted once: {}", s.body);
}

fn texts(hits: &[Hit]) -> Vec<(u64, String)> {
    hits.iter().map(|h| (h.seq(), h.text().to_owned())).collect()
}
