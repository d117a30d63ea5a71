//! The script sandbox and the bounds on what a Flow can build (a child of `engine`, whose
//! helpers it uses): endless loops and memory bombs are contained, scripts reach no module,
//! network or file, and values nested too deeply are cut or kept as text.

use super::*;

fn sandbox_flow() -> Value {
    flow(json!([
        { "type": "lookup", "mode": "text", "cases": {
            "spin": [ { "type": "code", "code": "while (true) {}" } ],
            "spin-template": [ say("t=[{{ (function () { for (;;); })() }}]") ],
            "bomb": [ { "type": "code", "code": "let a = []; while (true) { a.push('x'.repeat(1 << 16)); }" } ],
            "types": [ { "type": "code", "code": concat!(
                "api.output('types', { require: typeof require, fetch: typeof fetch, process: typeof process, ",
                "std: typeof std, os: typeof os, xhr: typeof XMLHttpRequest });"
            ) } ]
          } },
        { "type": "code", "code": "api.output('js ok ' + [1, 2, 3].map(x => x * 2).join(','));" },
        { "type": "say", "text": "error={{input.codeNodeError.message}}" }
    ]))
}

fn sandbox_bot(name: &str) -> Bot {
    Bot::start(name, &[("flow.json", &sandbox_flow())], |cfg| {
        cfg["workers"] = json!(1);
        cfg["limits"] = json!({ "scriptTimeoutMs": 200, "scriptMemoryBytes": 4 * 1024 * 1024 });
    })
}

#[test]
fn an_endless_loop_in_a_code_node_is_stopped_at_the_script_timeout_and_the_worker_goes_on() {
    let bot = sandbox_bot("sandbox-loop");
    let started = Instant::now();
    bot.text("u", "s", "spin");
    let hits = bot.expect("s", &["js ok 2,4,6"]);
    let err = bot.sink.recv(WAIT);
    let took = started.elapsed();
    assert!(err.text().starts_with("error=") && err.text().contains("scriptTimeoutMs"), "{}", err.text());
    assert_eq!(err.seq(), 2);
    assert!(took >= Duration::from_millis(190), "the loop was stopped after {took:?}, before the limit");
    assert!(took < Duration::from_secs(3), "the loop ran {took:?} with scriptTimeoutMs 200");
    assert_eq!(hits[0].trace_id(), err.trace_id());
    // The one worker serves the next message, with a working engine.
    bot.text("u", "s2", "hello");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!((hits[0].text(), hits[1].text()), ("js ok 2,4,6", "error="));
}

#[test]
fn an_endless_loop_in_a_template_renders_as_nothing_at_the_script_timeout() {
    let bot = sandbox_bot("sandbox-template");
    let started = Instant::now();
    bot.text("u", "s", "spin-template");
    bot.expect("s", &["t=[]", "js ok 2,4,6", "error="]);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?} with scriptTimeoutMs 200", started.elapsed());
}

#[test]
fn a_memory_bomb_in_a_code_node_is_contained_and_the_next_message_works() {
    let bot = sandbox_bot("sandbox-memory");
    bot.text("u", "s", "bomb");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!(hits[0].text(), "js ok 2,4,6");
    let err = hits[1].text();
    assert!(err.contains("scriptMemoryBytes") || err.contains("scriptTimeoutMs"), "{err}");
    bot.text("u", "s", "again");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!((hits[0].text(), hits[1].text(), hits[1].seq()), ("js ok 2,4,6", "error=", 4));
}

#[test]
fn code_nodes_have_no_require_fetch_process_std_or_os() {
    let bot = sandbox_bot("sandbox-types");
    bot.text("u", "s", "types");
    let hits = bot.sink.recv_n(3, WAIT);
    assert_eq!(hits[0].text(), "types");
    let undefined = json!("undefined");
    assert_eq!(
        hits[0].body["AIOutput"]["data"],
        json!({ "require": undefined, "fetch": undefined, "process": undefined, "std": undefined, "os": undefined,
                "xhr": undefined })
    );
    assert_eq!(hits[2].text(), "error=");
}

// ---------------------------------------------------------------------------------------------
// Deeply nested values stay out of the stored session

/// `{"a": {"a": ... 1}}` with `levels` objects.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

#[test]
fn a_code_node_building_a_very_deep_context_value_does_not_make_the_session_unreadable() {
    let code = "if (input.text === 'deep') { let o = 1; for (let i = 0; i < 126; i++) o = { a: o }; context.deep = o; }
                context.n = (context.n || 0) + 1;";
    let f = flow(json!([{ "type": "code", "code": code }, say("n={{context.n}}")]));
    let bot = Bot::start("deep-context-126", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "deep");
    bot.expect1("s", "n=1");
    bot.text("u", "s", "again");
    bot.expect1("s", "n=2");
    let deep = &bot.session("u", "s")["context"]["deep"];
    assert!(deep["a"]["a"]["a"].is_object(), "the shallow part is kept: {deep}");
}

#[test]
fn an_http_answer_nested_too_deeply_is_kept_as_text() {
    let mock = Mock::new(|_| MockReply::json(200, nested(100)));
    let f = flow(json!([
        { "type": "code", "code": "context.n = (context.n || 0) + 1;" },
        { "type": "http", "method": "GET", "url": mock.url("/deep"), "contextKey": "api" },
        say("n={{context.n}} {{context.api.status}}")
    ]));
    let bot = Bot::start("deep-answer", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "one");
    bot.expect1("s", "n=1 200");
    bot.text("u", "s", "two");
    bot.expect1("s", "n=2 200");
    let body = &bot.session("u", "s")["context"]["api"]["body"];
    assert!(body.as_str().is_some_and(|t| t.starts_with("{\"a\":{\"a\":")), "the body as text: {body}");
}
