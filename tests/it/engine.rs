//! flows.md end to end: every node type through the server and the sink, with state across
//! messages and across a restart (shutdown + start on the same data dir), the `input` object,
//! profiles, JS templates, the node limit and sleep; the script sandbox is in `engine_sandbox.rs`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bot::*;
use crate::support::*;

#[path = "engine_sandbox.rs"]
mod sandbox;

fn say(text: &str) -> Value {
    json!({ "type": "say", "text": text })
}

fn flow(nodes: Value) -> Value {
    json!({ "name": "test", "nodes": nodes })
}

/// Intents for the built-in NLU.
fn intents() -> Value {
    json!([
        { "name": "orderStatus", "examples": ["where is my order", "track my order", "order status"] },
        { "name": "greeting", "examples": ["hello", "hi", "good morning"] }
    ])
}

// ---------------------------------------------------------------------------------------------
// say

#[test]
fn say_renders_text_and_data_and_linear_texts_continue_across_messages_and_a_restart() {
    let f = flow(json!([
        { "type": "say", "text": "Hi {{input.text}}",
          "data": { "n": "{{input.execution}}", "fixed": "x", "nested": { "t": "<{{input.text}}>" },
                    "list": ["{{input.text}}", 2, true] } },
        { "type": "say", "texts": ["one", "two", "three"], "textMode": "linear" },
        { "type": "say", "data": { "only": "data" } }
    ]));
    let mut bot = Bot::start("say", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "a");
    let hits = bot.expect("s", &["Hi a", "one", ""]);
    let want = json!({ "n": 1, "fixed": "x", "nested": { "t": "<a>" }, "list": ["a", 2, true] });
    assert_eq!(hits[0].body["AIOutput"]["data"], want);
    assert_eq!(hits[1].body["AIOutput"]["data"], json!({}), "an output without data carries {{}}");
    assert_eq!(hits[2].body["AIOutput"]["data"], json!({ "only": "data" }));
    bot.text("u", "s", "b");
    bot.expect("s", &["Hi b", "two", ""]);
    bot.restart();
    bot.text("u", "s", "c");
    let hits = bot.expect("s", &["Hi c", "three", ""]);
    assert_eq!(hits[0].body["AIOutput"]["data"]["n"], 3, "execution counts on after the restart");
    bot.text("u", "s", "d");
    bot.expect("s", &["Hi d", "one", ""]);
    // Another session has its own position in `texts`.
    bot.text("u", "other", "e");
    bot.expect("other", &["Hi e", "one", ""]);
}

#[test]
fn say_texts_in_random_mode_pick_one_of_the_texts() {
    // Not the first node: the pick must work wherever the node is in the Flow.
    let f = flow(json!([
        say("a"),
        say("b"),
        { "type": "say", "texts": ["heads", "tails"], "textMode": "random" },
        say("after")
    ]));
    let bot = Bot::start("say-random", &[("flow.json", &f)], |_| {});
    for m in 0..3 {
        bot.text("u", "s", &format!("m{m}"));
        let hits = bot.sink.recv_n(4, Duration::from_secs(5));
        let texts: Vec<&str> = hits.iter().map(Hit::text).collect();
        assert_eq!((texts[0], texts[1], texts[3]), ("a", "b", "after"));
        assert!(["heads", "tails"].contains(&texts[2]), "random text {:?} is not one of the texts", texts[2]);
        assert_eq!(hits[3].seq(), 4 * (m + 1));
    }
}

// ---------------------------------------------------------------------------------------------
// NLU

/// Shows what the NLU put into `input`.
fn nlu_flow() -> Value {
    json!({ "name": "nlu", "intents": intents(), "nodes": [
        { "type": "say", "text": "intent={{input.intent}}",
          "data": { "score": "{{input.intentScore}}", "ranking": "{{input.intentRanking}}",
                    "slots": "{{input.slots}}" } }
    ]})
}

#[test]
fn the_builtin_nlu_threshold_decides_whether_the_best_intent_counts() {
    let bot = Bot::start("nlu-threshold", &[("flow.json", &nlu_flow())], |cfg| {
        cfg["endpoints"][0]["nlu"] = json!({ "type": "builtin", "threshold": 0.9 });
    });
    bot.text("u", "s", "hello");
    let h = bot.expect1("s", "intent=greeting");
    assert_eq!(h.body["AIOutput"]["data"]["score"], 1.0, "{}", h.raw);
    // A partial match is ranked but stays under the threshold.
    bot.text("u", "s", "hello there my friend");
    let h = bot.expect1("s", "intent=");
    let data = &h.body["AIOutput"]["data"];
    assert_eq!(data["score"], Value::Null, "{data}");
    assert_eq!(data["ranking"][0]["name"], "greeting", "{data}");
    assert!(data["ranking"][0]["score"].as_f64().is_some_and(|s| s > 0.0 && s < 0.9), "{data}");

    let none = Bot::start("nlu-none", &[("flow.json", &nlu_flow())], |cfg| {
        cfg["endpoints"][0]["nlu"] = json!({ "type": "none" });
    });
    none.text("u", "s", "hello");
    let h = none.expect1("s", "intent=");
    assert_eq!(h.body["AIOutput"]["data"]["ranking"], json!([]), "{}", h.raw);
}

#[test]
fn rasa_nlu_fills_intent_ranking_and_slots_and_a_failing_nlu_leaves_the_intent_null() {
    let rasa = Mock::new(|hit| {
        if hit.json["text"] == "boom" {
            return MockReply::json(500, json!({ "error": "model not loaded" }));
        }
        MockReply::json(
            200,
            json!({ "intent": { "name": "orderStatus", "confidence": 0.93 },
                    "intent_ranking": [ { "name": "orderStatus", "confidence": 0.93 },
                                        { "name": "greeting", "confidence": 0.05 } ],
                    "entities": [ { "entity": "order", "value": "4711" } ] }),
        )
    });
    let bot = Bot::start("nlu-rasa", &[("flow.json", &nlu_flow())], |cfg| {
        cfg["endpoints"][0]["nlu"] = json!({ "type": "rasa", "url": rasa.base, "token": "tok-1", "timeoutMs": 300 });
    });
    bot.text("u", "s", "where is 4711");
    let call = rasa.recv(WAIT);
    assert_eq!((call.method.as_str(), call.url.as_str()), ("POST", "/model/parse?token=tok-1"));
    assert_eq!(call.json, json!({ "text": "where is 4711" }));
    let h = bot.expect1("s", "intent=orderStatus");
    let data = &h.body["AIOutput"]["data"];
    assert_eq!(data["score"], 0.93, "{data}");
    assert_eq!(data["ranking"][0], json!({ "name": "orderStatus", "score": 0.93 }), "{data}");
    assert_eq!(data["slots"], json!({ "order": "4711" }), "{data}");

    bot.text("u", "s", "boom");
    rasa.recv(WAIT);
    bot.expect1("s", "intent=");

    rasa.hold();
    bot.text("u", "s", "slow");
    rasa.recv(WAIT);
    let h = bot.expect1("s", "intent=");
    rasa.release();
    assert_eq!(h.body["AIOutput"]["data"]["score"], Value::Null, "{}", h.raw);
}

// ---------------------------------------------------------------------------------------------
// if, lookup, once

#[test]
fn if_runs_the_branch_chosen_by_a_javascript_condition_then_continues() {
    let f = flow(json!([
        { "type": "if", "condition": "input.text.trim().toLowerCase().startsWith('yes') && input.execution > 1",
          "then": [ say("yes branch") ], "else": [ say("no branch") ] },
        { "type": "if", "condition": "context.missing.deeper === undefined", "then": [ say("threw: then") ] },
        say("after if")
    ]));
    let bot = Bot::start("if", &[("flow.json", &f)], |_| {});
    // A condition that throws is false (and the turn goes on).
    bot.text("u", "s", "yes please");
    bot.expect("s", &["no branch", "after if"]);
    bot.text("u", "s", "  YES please");
    bot.expect("s", &["yes branch", "after if"]);
    bot.text("u", "s", "no");
    bot.expect("s", &["no branch", "after if"]);
}

#[test]
fn lookup_switches_on_the_builtin_intent_the_exact_text_and_a_script() {
    let f = json!({ "name": "lookup", "intents": intents(), "nodes": [
        { "type": "lookup", "mode": "intent",
          "cases": { "greeting": [ say("intent greeting") ], "orderStatus": [ say("intent order") ] },
          "default": [ say("intent none") ] },
        { "type": "lookup", "mode": "text",
          "cases": { "Hello": [ say("text Hello") ], "hello": [ say("text hello") ] },
          "default": [ say("text other") ] },
        { "type": "lookup", "mode": "script", "value": "input.text.split(' ').length",
          "cases": { "1": [ say("one word") ], "2": [ say("two words") ] },
          "default": [ say("many words") ] },
        { "type": "say", "text": "end", "data": { "intent": "{{input.intent}}", "ranking": "{{input.intentRanking}}" } }
    ]});
    let bot = Bot::start("lookup", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "Hello");
    let hits = bot.expect("s", &["intent greeting", "text Hello", "one word", "end"]);
    let data = &hits[3].body["AIOutput"]["data"];
    assert_eq!(data["intent"], "greeting", "{data}");
    assert_eq!(data["ranking"][0]["name"], "greeting", "ranking best first: {data}");
    bot.text("u", "s", "hello");
    bot.expect("s", &["intent greeting", "text hello", "one word", "end"]);
    // Word order, case, punctuation and typos do not keep the intent from being found.
    bot.text("u", "s", "My ORDR, wehre is it?");
    bot.expect("s", &["intent order", "text other", "many words", "end"]);
    bot.text("u", "s", "purple elephant");
    let hits = bot.expect("s", &["intent none", "text other", "two words", "end"]);
    assert_eq!(hits[3].body["AIOutput"]["data"]["intent"], Value::Null);
}

#[test]
fn once_runs_its_branch_only_the_first_time_per_session_even_across_a_restart() {
    let f = flow(json!([
        { "type": "once", "then": [ say("first time") ], "afterwards": [ say("again") ] },
        say("always")
    ]));
    let mut bot = Bot::start("once", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "a");
    bot.expect("s", &["first time", "always"]);
    bot.restart();
    bot.text("u", "s", "b");
    bot.expect("s", &["again", "always"]);
    bot.text("u", "s", "c");
    bot.expect("s", &["again", "always"]);
    bot.text("u", "s2", "d");
    bot.expect("s2", &["first time", "always"]);
}

// ---------------------------------------------------------------------------------------------
// code

#[test]
fn code_nodes_output_change_context_and_profile_and_survive_errors_and_restarts() {
    let count = [
        "context.count = (context.count || 0) + 1;",
        "profile.visits = (profile.visits || 0) + 1;",
        "api.setContext('last.text', input.text);",
        "cc.viaAlias = ci.text + cp.visits;",
        "api.output('count ' + context.count, { visits: profile.visits, prev: context.prevText || null });",
        "context.prevText = input.text;",
    ]
    .join("\n");
    let maybe_throw = [
        "if (input.text === 'boom') { throw new Error('kaboom'); }",
        "api.say('no error');",
        "input.shout = input.text.toUpperCase();",
    ]
    .join("\n");
    let f = flow(json!([
        { "type": "code", "code": count },
        { "type": "code", "code": maybe_throw },
        { "type": "say", "text": "err={{input.codeNodeError.message}} last={{context.last.text}}{{input.shout}}" }
    ]));
    let mut bot = Bot::start("code", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "a");
    let hits = bot.expect("s", &["count 1", "no error", "err= last=aA"]);
    assert_eq!(hits[0].body["AIOutput"]["data"], json!({ "visits": 1, "prev": null }));
    assert_eq!(hits[1].body["AIOutput"]["data"], json!({}));

    // An exception: input.codeNodeError is set and the turn goes on.
    bot.text("u", "s", "boom");
    let hits = bot.sink.recv_n(2, WAIT);
    assert_eq!(
        (hits[0].text(), hits[0].body["AIOutput"]["data"].clone()),
        ("count 2", json!({ "visits": 2, "prev": "a" }))
    );
    let err = hits[1].text();
    assert!(err.starts_with("err=") && err.contains("kaboom") && err.ends_with(" last=boom"), "{err:?}");
    assert_eq!(hits[1].seq(), 5);

    bot.restart();
    bot.text("u", "s", "c");
    let hits = bot.sink.recv_n(3, WAIT);
    let texts: Vec<&str> = hits.iter().map(Hit::text).collect();
    assert_eq!(texts, ["count 3", "no error", "err= last=cC"]);
    assert_eq!(hits[0].body["AIOutput"]["data"], json!({ "visits": 3, "prev": "boom" }));
    let session = bot.session("u", "s");
    assert_eq!(session["context"]["count"], 3, "{session}");
    assert_eq!(session["context"]["last"], json!({ "text": "c" }), "{session}");
    assert_eq!(session["context"]["viaAlias"], "c3", "cc, ci and cp are the same objects: {session}");

    // The profile belongs to the user: another session of theirs sees it.
    bot.text("u", "s2", "d");
    let hits = bot.sink.recv_n(3, WAIT);
    assert_eq!(hits[0].text(), "count 1");
    assert_eq!(hits[0].body["AIOutput"]["data"], json!({ "visits": 4, "prev": null }));
}

#[test]
fn set_context_and_remove_context_in_simple_and_array_mode() {
    let f = flow(json!([
        { "type": "if", "condition": "input.data",
          "then": [ { "type": "removeContext", "key": "list", "mode": "array", "value": "{{input.data.remove}}" } ],
          "else": [
            { "type": "lookup", "mode": "text",
              "cases": { "drop": [ { "type": "removeContext", "key": "a" } ] },
              "default": [
                { "type": "setContext", "key": "a.b", "value": "{{input.text}}" },
                { "type": "setContext", "key": "a.n", "value": "{{input.execution}}", "mode": "simple" },
                { "type": "setContext", "key": "list", "value": "{{input.text}}", "mode": "array" }
              ] }
          ] },
        { "type": "say", "text": "ctx", "data": { "ctx": "{{context}}" } }
    ]));
    let mut bot = Bot::start("set-context", &[("flow.json", &f)], |_| {});
    let ctx = |bot: &Bot, text: Option<&str>, data: Option<Value>| -> Value {
        bot.send("u", "s", text, data);
        bot.expect1("s", "ctx").body["AIOutput"]["data"]["ctx"].clone()
    };
    assert_eq!(ctx(&bot, Some("x"), None), json!({ "a": { "b": "x", "n": 1 }, "list": ["x"] }));
    assert_eq!(ctx(&bot, Some("y"), None), json!({ "a": { "b": "y", "n": 2 }, "list": ["x", "y"] }));
    bot.restart();
    assert_eq!(ctx(&bot, Some("z"), None), json!({ "a": { "b": "z", "n": 3 }, "list": ["x", "y", "z"] }));
    assert_eq!(
        ctx(&bot, None, Some(json!({ "remove": "y" }))),
        json!({ "a": { "b": "z", "n": 3 }, "list": ["x", "z"] })
    );
    assert_eq!(ctx(&bot, Some("drop"), None), json!({ "list": ["x", "z"] }));
    assert_eq!(bot.session("u", "s")["context"], json!({ "list": ["x", "z"] }));
}

// ---------------------------------------------------------------------------------------------
// goTo, executeFlow, waitForInput, stop

#[test]
fn go_to_continues_or_waits_for_input_at_its_target() {
    let f = flow(json!([
        say("top"),
        { "type": "goTo", "target": "later" },
        say("skipped"),
        { "id": "later", "type": "say", "text": "later" },
        { "type": "goTo", "target": "resume", "mode": "waitForInput" },
        say("never"),
        { "id": "resume", "type": "say", "text": "resumed {{input.text}}" }
    ]));
    let mut bot = Bot::start("goto", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "m1");
    bot.expect("s", &["top", "later"]);
    let entry = &bot.session("u", "s")["entrypoint"];
    assert_eq!(entry, "resume", "the session waits at the goTo target, not the top");
    bot.restart();
    bot.text("u", "s", "m2");
    bot.expect1("s", "resumed m2");
    // Past the last node: the next message starts at the top.
    bot.text("u", "s", "m3");
    bot.expect("s", &["top", "later"]);
}

#[test]
fn go_to_another_flow_file_and_execute_flow_as_a_subroutine_that_waits_across_a_restart() {
    let main = flow(json!([
        { "type": "if", "condition": "input.text == 'jump'", "then": [ { "type": "goTo", "target": "other.json" } ] },
        { "type": "if", "condition": "input.text == 'mid'",
          "then": [
            { "type": "executeFlow", "flow": "sub.json", "target": "subMid" }, say("back from mid"), { "type": "stop" }
          ] },
        say("main start"),
        { "type": "executeFlow", "flow": "sub.json" },
        say("back in main with {{context.subAnswer}}"),
        { "type": "goTo", "target": "other.json#target" },
        say("never")
    ]));
    let sub = flow(json!([
        say("sub asks"),
        { "type": "question", "questionType": "text", "text": "Sub question?", "resultLocation": "context.subAnswer" },
        { "id": "subMid", "type": "say", "text": "sub done" }
    ]));
    let other = flow(json!([ say("top of other"), { "id": "target", "type": "say", "text": "in other" } ]));
    let mut bot =
        Bot::start("execute-flow", &[("flow.json", &main), ("sub.json", &sub), ("other.json", &other)], |_| {});
    bot.text("u", "s", "go");
    bot.expect("s", &["main start", "sub asks", "Sub question?"]);
    bot.restart();
    bot.text("u", "s", "forty-two");
    bot.expect("s", &["sub done", "back in main with forty-two", "in other"]);
    // The session now lives in other.json: past its end, the next message starts at its top.
    bot.text("u", "s", "again");
    bot.expect("s", &["top of other", "in other"]);

    // executeFlow with a target node, returning within the turn.
    bot.text("u", "s2", "mid");
    bot.expect("s2", &["sub done", "back from mid"]);
    bot.text("u", "s2", "x");
    bot.expect("s2", &["main start", "sub asks", "Sub question?"]);
    // goTo a Flow file: its first node.
    bot.text("u", "s3", "jump");
    bot.expect("s3", &["top of other", "in other"]);
}

#[test]
fn wait_for_input_resumes_after_itself_and_stop_starts_over() {
    let f = flow(json!([
        say("a"),
        { "type": "waitForInput" },
        say("b {{input.text}}"),
        { "type": "if", "condition": "input.text == 'halt'", "then": [ { "type": "stop" } ] },
        say("c")
    ]));
    let mut bot = Bot::start("wait-stop", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "1");
    bot.expect1("s", "a");
    bot.restart();
    bot.text("u", "s", "x");
    bot.expect("s", &["b x", "c"]);
    bot.text("u", "s", "2");
    bot.expect1("s", "a");
    bot.text("u", "s", "halt");
    bot.expect1("s", "b halt");
    bot.text("u", "s", "3");
    bot.expect1("s", "a");
}

// ---------------------------------------------------------------------------------------------
// sleep, limits

#[test]
fn sleep_delays_the_following_outputs_without_holding_a_worker() {
    let f = flow(json!([
        { "type": "if", "condition": "input.text == 'go'",
          "then": [ say("before"), { "type": "sleep", "ms": 1000 }, say("after") ],
          "else": [ say("quick {{input.text}}") ] }
    ]));
    let bot = Bot::start("sleep", &[("flow.json", &f)], |cfg| cfg["workers"] = json!(1));
    let sent = Instant::now();
    bot.text("u", "slow", "go");
    let before = bot.sink.recv(WAIT);
    let before_at = Instant::now();
    assert_eq!((before.session_id(), before.text()), ("slow", "before"));
    // Sent after the slow session's turn has run: with one worker, they are answered at once
    // only if that worker is not sleeping.
    bot.text("u", "fast", "ping");
    bot.text("u", "slow", "second");
    let next = bot.sink.recv(WAIT);
    assert_eq!((next.session_id(), next.text()), ("fast", "quick ping"), "the delayed output held another session");
    let after = bot.sink.recv(WAIT);
    let (waited, since_sent) = (before_at.elapsed(), sent.elapsed());
    assert_eq!((after.session_id(), after.text(), after.seq()), ("slow", "after", 2));
    // The turn ran after the message was sent (timestamps are whole ms); the gap between the two
    // receipts also allows for the delivery time of "before".
    // The sleep is long (1 s) so that "fast" wins by a wide margin even on a loaded CI machine.
    assert!(since_sent >= Duration::from_millis(995), "\"after\" came {since_sent:?} after the message");
    assert!(waited >= Duration::from_millis(900), "\"after\" came {waited:?} after \"before\", not ~1 s");
    assert!(waited < Duration::from_secs(5), "\"after\" took {waited:?}");
    assert_eq!(after.trace_id(), before.trace_id());
    // The session's next output does not overtake the delayed one.
    let second = bot.sink.recv(WAIT);
    assert_eq!((second.session_id(), second.text(), second.seq()), ("slow", "quick second", 3));
}

#[test]
fn max_nodes_per_turn_cuts_an_endless_loop_and_keeps_what_came_before() {
    let f = flow(json!([
        say("start {{input.text}}"),
        { "type": "if", "condition": "input.text == 'loop'", "then": [
            { "type": "setContext", "key": "looped", "value": true },
            { "id": "spin", "type": "setContext", "key": "x", "value": "{{input.execution}}" },
            { "type": "goTo", "target": "spin" }
        ] },
        say("end")
    ]));
    let bot = Bot::start("max-nodes", &[("flow.json", &f)], |cfg| cfg["limits"] = json!({ "maxNodesPerTurn": 50 }));
    let started = Instant::now();
    bot.text("u", "s", "loop");
    bot.expect1("s", "start loop");
    bot.text("u", "s", "ok");
    bot.expect("s", &["start ok", "end"]);
    assert!(started.elapsed() < Duration::from_secs(3));
    let ctx = &bot.session("u", "s")["context"];
    assert_eq!(
        (ctx["looped"].clone(), ctx["x"].clone()),
        (json!(true), json!(1)),
        "context of the cut turn is kept: {ctx}"
    );
}

// ---------------------------------------------------------------------------------------------
// templates, input, profiles

#[test]
fn javascript_templates_in_text_and_data_and_cs_scripts() {
    let f = flow(json!([
        { "type": "say", "text": "{{input.text.toUpperCase()}}! [{{context.missing.deeper}}] {{ 6 * 7 }}",
          "data": {
            "upper": "{{input.text.toUpperCase()}}",
            "len": "{{input.text.length * 2}}",
            "yes": "{{input.text.startsWith('he')}}",
            "obj": { "$cs": { "script": "({ word: input.text, n: input.execution })", "type": "object" } },
            "mixed": "x {{1 + 1}} y",
            "thrown": "{{context.missing.deeper}}"
          } }
    ]));
    let bot = Bot::start("templates", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "hello");
    let h = bot.expect1("s", "HELLO! [] 42");
    assert_eq!(
        h.body["AIOutput"]["data"],
        json!({ "upper": "HELLO", "len": 10, "yes": true, "obj": { "word": "hello", "n": 1 }, "mixed": "x 2 y",
                "thrown": null })
    );
}

#[test]
fn conditions_and_templates_joining_single_quoted_comparisons_are_evaluated_as_javascript() {
    // Both look like `path == '...'` to a fast path, but are JavaScript with two comparisons.
    let f = flow(json!([
        { "type": "if", "condition": "input.text == 'a' || input.text == 'b'",
          "then": [ say("a or b") ], "else": [ say("neither") ] },
        say("{{input.text === 'a' ? 'yes' : 'no'}}")
    ]));
    let bot = Bot::start("quoted-conditions", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "a");
    bot.expect("s", &["a or b", "yes"]);
    bot.text("u", "s", "b");
    bot.expect("s", &["a or b", "no"]);
    bot.text("u", "s", "c");
    bot.expect("s", &["neither", "no"]);
}

#[test]
fn a_code_node_storing_a_deeply_nested_value_does_not_wipe_the_context() {
    let f = json!({ "name": "deep", "defaultContext": { "keep": "kept" }, "nodes": [
        { "type": "code",
          "code": "let o = { leaf: true };\nfor (let i = 0; i < 200; i++) { o = { o }; }\ncontext.deep = o;" },
        { "type": "say", "text": "keep={{context.keep}}", "data": { "error": "{{input.codeNodeError}}" } }
    ]});
    let bot = Bot::start("deep-context", &[("flow.json", &f)], |_| {});
    bot.text("u", "s", "go");
    let h = bot.sink.recv(WAIT);
    assert_eq!(h.text(), "keep=kept", "the Code node never touched context.keep; data: {}", h.body["AIOutput"]["data"]);
    let session = bot.session("u", "s");
    assert_eq!(session["context"]["keep"], "kept", "{session}");
}

#[test]
fn a_code_node_sees_every_field_of_the_input_object() {
    let f = flow(json!([ { "type": "code", "code": "api.output('dump', { input: input });" } ]));
    let bot = Bot::start("input", &[("flow.json", &f)], |_| {});
    let keys = [
        "text",
        "data",
        "userId",
        "sessionId",
        "URLToken",
        "channel",
        "endpointName",
        "traceId",
        "mode",
        "execution",
        "currentTime",
        "ip",
        "intent",
        "intentScore",
        "intentRanking",
        "slots",
        "result",
        "activeQuestion",
        "codeNodeError",
        "testMode",
    ];
    let dump = |trace: &str| -> Value {
        let h = bot.sink.recv(WAIT);
        assert_eq!(h.text(), "dump");
        assert_eq!(h.trace_id(), trace);
        let input = h.body["AIOutput"]["data"]["input"].clone();
        let obj = input.as_object().unwrap_or_else(|| panic!("no input object in {}", h.raw));
        for k in keys {
            assert!(obj.contains_key(k), "input.{k} is missing: {input}");
        }
        let t = input["currentTime"].as_str().unwrap_or_else(|| panic!("currentTime is not a string: {input}"));
        let ms = parse_iso8601_utc(t).unwrap_or_else(|| panic!("currentTime {t:?} is not ISO 8601 UTC"));
        assert!((now_unix_ms() - ms).abs() < 60_000, "currentTime {t} is not now");
        assert_eq!(input["channel"], "webhook");
        assert_eq!(input["URLToken"], TOKEN);
        assert_eq!(input["endpointName"], "main");
        assert_eq!((input["userId"].as_str(), input["sessionId"].as_str()), (Some("u1"), Some("s1")));
        assert_eq!(input["traceId"], trace, "input.traceId is the traceId of the 200");
        assert_eq!(input["ip"], "127.0.0.1");
        assert_eq!(input["codeNodeError"], Value::Null);
        assert_eq!(input["result"], Value::Null);
        input
    };

    let trace = bot.text("u1", "s1", "hello");
    let i = dump(&trace);
    assert_eq!(
        (i["mode"].clone(), i["execution"].clone(), i["text"].clone()),
        (json!("TextOnly"), json!(1), json!("hello"))
    );
    assert_eq!((i["data"].clone(), i["testMode"].clone()), (Value::Null, json!(false)));

    let trace = bot.send("u1", "s1", None, Some(json!({ "a": 1 })));
    let i = dump(&trace);
    assert_eq!(
        (i["mode"].clone(), i["execution"].clone(), i["data"].clone()),
        (json!("DataOnly"), json!(2), json!({ "a": 1 }))
    );

    let trace = bot.send("u1", "s1", Some("both"), Some(json!({ "b": 2 })));
    let i = dump(&trace);
    assert_eq!(
        (i["mode"].clone(), i["execution"].clone(), i["text"].clone()),
        (json!("TextData"), json!(3), json!("both"))
    );

    let trace =
        send_to(&bot.app.url(&format!("/test/{TOKEN}")), &json!({ "userId": "u1", "sessionId": "s1", "text": "t" }));
    let i = dump(&trace);
    assert_eq!((i["testMode"].clone(), i["execution"].clone()), (json!(true), json!(4)));
}

fn profile_flow() -> Value {
    flow(json!([ { "type": "code", "code": "profile.n = (profile.n || 0) + 1; api.output('n=' + profile.n);" } ]))
}

#[test]
fn profiles_follow_the_user_across_sessions_when_contact_profiles_is_on() {
    let bot = Bot::start("profiles-on", &[("flow.json", &profile_flow())], |_| {});
    bot.text("ann", "s1", "a");
    bot.expect1("s1", "n=1");
    bot.text("ann", "s2", "b");
    bot.expect1("s2", "n=2");
    bot.text("bob", "s3", "c");
    bot.expect1("s3", "n=1");
    bot.text("ann", "s1", "d");
    bot.expect1("s1", "n=3");
    // The admin session view (and so the console) shows the user's profile with the session.
    let s = admin_get(&bot.app.url("/api/sessions/main/ann/s2")).json();
    assert_eq!(s["profile"], json!({"n": 3}), "{s}");
}

#[test]
fn profiles_are_not_kept_when_contact_profiles_is_off() {
    let bot = Bot::start("profiles-off", &[("flow.json", &profile_flow())], |cfg| {
        cfg["endpoints"][0]["dataProtection"] = json!({ "contactProfiles": false });
    });
    bot.text("ann", "s1", "a");
    bot.expect1("s1", "n=1");
    bot.text("ann", "s2", "b");
    bot.expect1("s2", "n=1");
    bot.text("ann", "s1", "c");
    bot.expect1("s1", "n=1");
    let s = admin_get(&bot.app.url("/api/sessions/main/ann/s1")).json();
    assert_eq!(s.get("profile"), None, "no profile is kept, so none is shown: {s}");
}

// ---------------------------------------------------------------------------------------------
// the sandbox
