//! Flow tests through one seam: `check(flow, messages, expected outputs per message)`.

use std::path::Path;

use serde_json::{Value, json};

use super::model::Flow;
use super::run::{RunOptions, SessionState, Turn, TurnIo, run};
use crate::flow::script::{Engine, Limits};

fn engine() -> Engine {
    let turn = std::time::Duration::from_secs(5);
    Engine::new(Limits { timeout: std::time::Duration::from_millis(300), memory: 8 << 20, turn })
}

/// One turn with a fresh engine.
fn turn(flow: &Flow, state: &mut SessionState, input: &mut Value, profile: &mut Value, max_nodes: u32) -> Turn {
    let mut e = engine();
    run(flow, TurnIo { state, input, profile, scripts: &mut e }, RunOptions { max_nodes, random: 7, trace: false })
}

fn compile(doc: Value) -> Flow {
    Flow::compile(Path::new("test.json"), Path::new("."), &doc)
        .unwrap_or_else(|e| panic!("flow does not compile: {e:?}"))
}

fn errors(doc: Value) -> Vec<(String, String)> {
    Flow::compile(Path::new("test.json"), Path::new("."), &doc).expect_err("flow should be rejected")
}

/// Runs `messages` (texts) through a fresh session and compares each turn's output texts.
fn check(doc: Value, messages: &[&str], expected: &[&[&str]]) -> SessionState {
    let flow = compile(doc);
    let mut state = SessionState::new(&flow);
    let mut profile = json!({});
    for (i, (text, want)) in messages.iter().zip(expected).enumerate() {
        let mut input = json!({ "text": text, "data": null, "execution": i + 1 });
        let t = turn(&flow, &mut state, &mut input, &mut profile, 100);
        let got: Vec<&str> = t.outputs.iter().map(|o| o.text.as_str()).collect();
        assert_eq!(got, *want, "turn {} (message {text:?})", i + 1);
    }
    state
}

#[test]
fn say_renders_text_and_data_and_continues() {
    let flow = compile(json!({"nodes": [
        {"type": "say", "text": "a {{input.text}}"},
        {"type": "say", "data": {"n": "{{input.execution}}"}}
    ]}));
    let mut state = SessionState::new(&flow);
    let mut input = json!({"text": "x", "execution": 4});
    let turn = turn(&flow, &mut state, &mut input, &mut json!({}), 10);
    assert_eq!(turn.outputs[0].text, "a x");
    assert_eq!(turn.outputs[0].data, json!({}));
    assert_eq!(turn.outputs[1].text, "");
    assert_eq!(turn.outputs[1].data, json!({"n": 4}));
}

#[test]
fn texts_in_linear_mode_rotate_across_turns() {
    let doc = json!({"nodes": [{"type": "say", "texts": ["one", "two"], "textMode": "linear"}]});
    check(doc, &["a", "b", "c"], &[&["one"], &["two"], &["one"]]);
}

#[test]
fn if_runs_one_branch_then_continues_after_the_node() {
    let doc = json!({"nodes": [
        {"type": "if", "condition": "input.text === 'a'", "then": [{"type": "say", "text": "A"}],
         "else": [{"type": "say", "text": "not A"}]},
        {"type": "say", "text": "after"}
    ]});
    check(doc, &["a", "b"], &[&["A", "after"], &["not A", "after"]]);
}

#[test]
fn set_context_simple_and_array_modes() {
    let doc = json!({"nodes": [
        {"type": "setContext", "key": "last", "value": "{{input.text}}"},
        {"type": "setContext", "key": "all.texts", "value": "{{input.text}}", "mode": "array"},
        {"type": "say", "text": "{{context.last}} {{context.all.texts}}"}
    ]});
    let state = check(doc, &["x", "y"], &[&["x [\"x\"]"], &["y [\"x\",\"y\"]"]]);
    assert_eq!(state.context["all"]["texts"], json!(["x", "y"]));
}

#[test]
fn stop_and_wait_for_input_set_the_next_entrypoint() {
    let doc = json!({"nodes": [
        {"type": "say", "text": "1"},
        {"type": "waitForInput"},
        {"type": "say", "text": "2"},
        {"type": "stop"},
        {"type": "say", "text": "never"}
    ]});
    check(doc, &["a", "b", "c"], &[&["1"], &["2"], &["1"]]);
}

#[test]
fn go_to_continues_or_waits() {
    let doc = json!({"nodes": [
        {"type": "lookup", "mode": "text", "cases": {"jump": [{"type": "goTo", "target": "end"}],
                                                       "later": [{"type": "goTo", "target": "end", "mode": "waitForInput"}]},
         "default": [{"type": "say", "text": "default"}]},
        {"type": "say", "text": "middle"},
        {"id": "end", "type": "say", "text": "end"}
    ]});
    check(doc, &["x", "jump", "later", "y"], &[&["default", "middle", "end"], &["end"], &[], &["end"]]);
}

#[test]
fn once_runs_then_afterwards() {
    let doc = json!({"nodes": [{"type": "once", "then": [{"type": "say", "text": "first"}],
                                "afterwards": [{"type": "say", "text": "again"}]}]});
    check(doc, &["a", "b", "c"], &[&["first"], &["again"], &["again"]]);
}

#[test]
fn node_limit_stops_an_endless_go_to_loop_and_keeps_outputs() {
    let flow = compile(json!({"nodes": [
        {"id": "top", "type": "say", "text": "tick"},
        {"type": "goTo", "target": "top"}
    ]}));
    let mut state = SessionState::new(&flow);
    let turn = turn(&flow, &mut state, &mut json!({"text": "x"}), &mut json!({}), 10);
    assert_eq!(turn.outputs.len(), 5);
    assert!(turn.error.unwrap().contains("maxNodesPerTurn"));
    assert_eq!(state.entry, 0);
}

#[test]
fn the_turn_script_budget_stops_a_loop_of_slow_templates_and_drops_the_cut_node() {
    let slow = "{{ (() => { const t = Date.now(); while (Date.now() - t < 70) {} return 'ok'; })() }}";
    let flow = compile(json!({"nodes": [
        {"type": "say", "text": "before"},
        {"id": "tick", "type": "say", "text": format!("tick {slow}")},
        {"type": "goTo", "target": "tick"}
    ]}));
    let ms = std::time::Duration::from_millis;
    let mut e = Engine::new(Limits { timeout: ms(100), memory: 8 << 20, turn: ms(300) });
    let mut state = SessionState::new(&flow);
    let opts = RunOptions { max_nodes: 1000, random: 7, trace: false };
    let started = std::time::Instant::now();
    let io = TurnIo { state: &mut state, input: &mut json!({"text": "x"}), profile: &mut json!({}), scripts: &mut e };
    let t = run(&flow, io, opts);
    assert!(started.elapsed() < ms(1500), "the turn took {:?} with turnScriptMs 300", started.elapsed());
    let texts: Vec<&str> = t.outputs.iter().map(|o| o.text.as_str()).collect();
    assert_eq!(texts[0], "before");
    // The Say whose hole was stopped gives no half-rendered "tick ".
    assert!((2..=5).contains(&texts.len()) && texts[1..].iter().all(|t| *t == "tick ok"), "{texts:?}");
    let error = t.error.expect("the turn is stopped with an error");
    assert!(error.contains("limits.turnScriptMs (300 ms)") && error.contains("node tick"), "{error}");
    assert_eq!(state.entry, 0);
    assert!(t.warnings.is_empty(), "one error, not a warning per refused expression: {:?}", t.warnings);
    // The next turn has the whole budget again and starts at the top.
    e.begin_turn();
    let io = TurnIo { state: &mut state, input: &mut json!({"text": "y"}), profile: &mut json!({}), scripts: &mut e };
    let t = run(&flow, io, RunOptions { max_nodes: 3, random: 7, trace: false });
    let texts: Vec<&str> = t.outputs.iter().map(|o| o.text.as_str()).collect();
    assert_eq!(texts, ["before", "tick ok"]);
}

#[test]
fn a_changed_flow_restarts_sessions_at_the_top_keeping_context() {
    let doc = json!({"nodes": [{"type": "question", "text": "q?"}, {"type": "say", "text": "done"}]});
    let flow = compile(doc.clone());
    let mut state = SessionState::new(&flow);
    state.context = json!({"kept": true});
    turn(&flow, &mut state, &mut json!({"text": "a"}), &mut json!({}), 10);
    assert!(state.question.is_some());
    let edited = json!({"nodes": [{"type": "question", "text": "q?"}, {"type": "say", "text": "done!"}]});
    let changed = compile(edited);
    let turn = turn(&changed, &mut state, &mut json!({"text": "b"}), &mut json!({}), 10);
    assert_eq!(turn.outputs[0].text, "q?");
    assert_eq!(state.context, json!({"kept": true}));
}

#[test]
fn profile_result_location_writes_the_profile() {
    let flow = compile(json!({"nodes": [{"type": "question", "text": "mail?", "resultLocation": "profile.email"}]}));
    let mut state = SessionState::new(&flow);
    let mut profile = json!({});
    turn(&flow, &mut state, &mut json!({"text": "hi"}), &mut profile, 10);
    turn(&flow, &mut state, &mut json!({"text": "a@b.c"}), &mut profile, 10);
    assert_eq!(profile, json!({"email": "a@b.c"}));
}

#[test]
fn invalid_flows_are_rejected_with_the_place_and_the_fix() {
    let e = errors(json!({"nodes": [{"type": "sya", "text": "x"}]}));
    assert_eq!(e[0].0, "nodes[0].type");
    assert!(e[0].1.contains("did you mean \"say\""), "{e:?}");
    let e = errors(json!({"nodes": [{"type": "say", "txt": "x", "text": "y"}]}));
    assert!(e.iter().any(|(p, m)| p == "nodes[0].txt" && m.contains("did you mean \"text\"")), "{e:?}");
    let e = errors(json!({"nodes": [{"id": "a", "type": "stop"}, {"id": "a", "type": "stop"}]}));
    assert!(e.iter().any(|(p, m)| p == "nodes[1].id" && m.contains("duplicate")), "{e:?}");
    let e = errors(json!({"nodes": [{"type": "goTo", "target": "nowhere"}]}));
    assert!(e.iter().any(|(p, m)| p == "nodes[0].target" && m.contains("nowhere")), "{e:?}");
    let e = errors(json!({"nodes": [{"type": "if", "condition": "context.x.length >", "then": []}]}));
    assert!(e.iter().any(|(p, m)| p == "nodes[0].condition" && m.contains("SyntaxError")), "{e:?}");
    let e = errors(json!({"nodes": [{"type": "code", "code": "let x = ;"}]}));
    assert!(e.iter().any(|(p, m)| p == "nodes[0].code" && m.contains("SyntaxError") && m.contains("line 1")), "{e:?}");
    let e = errors(json!({"nodes": [{"type": "executeFlow", "flow": "x.json"}]}));
    assert!(e[0].1.contains("cannot read the Flow file"), "{e:?}");
    let e = errors(json!({"nodes": [{"type": "question", "questionType": "number"}]}));
    assert!(e.iter().any(|(p, m)| p == "nodes[0].text" && m.contains("required")), "{e:?}");
    let e = errors(json!({"nodes": [{"type": "if", "condition": "context.ok",
                                      "then": [{"type": "say"}]}]}));
    assert!(e.iter().any(|(p, _)| p == "nodes[0].then[0]"), "{e:?}");
}

#[test]
fn javascript_in_templates_conditions_and_cs_data() {
    let doc = json!({"nodes": [
        {"type": "if", "condition": "input.text.length > 3",
         "then": [{"type": "say", "text": "long: {{input.text.toUpperCase()}}",
                   "data": {"n": "{{input.text.length}}", "cs": {"$cs": {"script": "({k: cc.visits + 1})", "type": "object"}}}}],
         "else": [{"type": "say", "text": "short {{ undefinedThing.x }}!"}]}
    ], "defaultContext": {"visits": 4}});
    let flow = compile(doc);
    let mut state = SessionState::new(&flow);
    let t = turn(&flow, &mut state, &mut json!({"text": "hello"}), &mut json!({}), 10);
    assert_eq!(t.outputs[0].text, "long: HELLO");
    assert_eq!(t.outputs[0].data, json!({"n": 5, "cs": {"k": 5}}));
    let t = turn(&flow, &mut state, &mut json!({"text": "hi"}), &mut json!({}), 10);
    assert_eq!(t.outputs[0].text, "short !", "a throwing expression renders as nothing");
    assert!(t.warnings[0].contains("nodes[0].else[0]") && t.warnings[0].contains("ReferenceError"), "{:?}", t.warnings);
}

#[test]
fn code_node_changes_memory_emits_outputs_and_survives_exceptions() {
    let doc = json!({"nodes": [
        {"type": "code", "code": "context.count = (context.count || 0) + 1; profile.name = 'Ann'; api.say('n=' + context.count, {c: context.count});"},
        {"id": "boom", "type": "code", "code": "if (context.count > 1) throw new Error('too many');"},
        {"type": "say", "text": "error: {{input.codeNodeError.message}}"}
    ]});
    let flow = compile(doc);
    let mut state = SessionState::new(&flow);
    let mut profile = json!({});
    let t = turn(&flow, &mut state, &mut json!({"text": "a"}), &mut profile, 10);
    assert_eq!(t.outputs.iter().map(|o| o.text.as_str()).collect::<Vec<_>>(), ["n=1", "error: "]);
    assert_eq!(t.outputs[0].data, json!({"c": 1}));
    assert_eq!(profile, json!({"name": "Ann"}));
    let t = turn(&flow, &mut state, &mut json!({"text": "b"}), &mut profile, 10);
    assert_eq!(t.outputs[1].text, "error: too many", "the error's own message, as a Flow compares it");
    assert!(t.warnings.iter().any(|w| w.contains("node boom")), "{:?}", t.warnings);
    assert_eq!(state.context["count"], 2);
}

#[test]
fn remove_context_simple_and_array() {
    let doc = json!({"defaultContext": {"a": {"b": 1, "c": 2}, "list": ["x", "y", "x"]}, "nodes": [
        {"type": "removeContext", "key": "a.b"},
        {"type": "removeContext", "key": "list", "mode": "array", "value": "{{input.text}}"}
    ]});
    let state = check(doc, &["x"], &[&[]]);
    assert_eq!(state.context, json!({"a": {"c": 2}, "list": ["y"]}));
}

#[test]
fn sleep_delays_the_following_outputs() {
    let flow = compile(json!({"nodes": [
        {"type": "say", "text": "now"}, {"type": "sleep", "ms": 300}, {"type": "say", "text": "later"},
        {"type": "sleep", "ms": 200}, {"type": "say", "text": "latest"}
    ]}));
    let t = turn(&flow, &mut SessionState::new(&flow), &mut json!({"text": "a"}), &mut json!({}), 10);
    assert_eq!(t.outputs.iter().map(|o| o.delay_ms).collect::<Vec<_>>(), [0, 300, 500]);
}

#[test]
fn lookup_by_script_value() {
    let doc = json!({"nodes": [{"type": "lookup", "mode": "script", "value": "input.text.length % 2 === 0 ? 'even' : 'odd'",
        "cases": {"even": [{"type": "say", "text": "E"}], "odd": [{"type": "say", "text": "O"}]}}]});
    check(doc, &["ab", "abc"], &[&["E"], &["O"]]);
}

#[test]
fn http_node_suspends_then_resumes_with_the_answer_in_context() {
    use super::run::resume;
    let flow = compile(json!({"nodes": [
        {"type": "say", "text": "one moment"},
        {"type": "http", "method": "POST", "url": "http://127.0.0.1:9/orders/{{input.text}}",
         "headers": {"X-Id": "{{input.text}}"}, "body": {"q": "{{input.text}}"}, "contextKey": "order"},
        {"type": "say", "text": "status {{context.order.body.status}} ({{context.order.status}})"}
    ]}));
    let (mut state, mut input, mut profile) = (SessionState::new(&flow), json!({"text": "42"}), json!({}));
    let t = turn(&flow, &mut state, &mut input, &mut profile, 10);
    assert_eq!(t.outputs[0].text, "one moment");
    let call = t.suspend.expect("the turn waits for the request");
    assert_eq!((call.method.as_str(), call.url.as_str()), ("POST", "http://127.0.0.1:9/orders/42"));
    assert_eq!(call.headers, vec![("X-Id".to_owned(), "42".to_owned())]);
    assert_eq!(call.body, Some(json!({"q": "42"})));
    let answer = json!({"status": 200, "headers": {}, "body": {"status": "shipped"}});
    let mut e = engine();
    let io = TurnIo { state: &mut state, input: &mut input, profile: &mut profile, scripts: &mut e };
    let t = resume(&flow, io, RunOptions { max_nodes: 10, random: 0, trace: false }, &call, answer, &Turn::default());
    assert_eq!(t.outputs[0].text, "status shipped (200)");
}

#[test]
fn http_node_abort_on_error_ends_the_turn() {
    use super::run::resume;
    let flow = compile(json!({"nodes": [
        {"type": "http", "url": "http://x/", "contextKey": "r", "abortOnError": true},
        {"type": "say", "text": "not reached"}
    ]}));
    let (mut state, mut input, mut profile) = (SessionState::new(&flow), json!({"text": "a"}), json!({}));
    let call = turn(&flow, &mut state, &mut input, &mut profile, 10).suspend.unwrap();
    let mut e = engine();
    let io = TurnIo { state: &mut state, input: &mut input, profile: &mut profile, scripts: &mut e };
    let t = resume(
        &flow,
        io,
        RunOptions { max_nodes: 10, random: 0, trace: false },
        &call,
        json!({"error": "refused"}),
        &Turn::default(),
    );
    assert!(t.outputs.is_empty());
    assert_eq!(state.context["r"], json!({"error": "refused"}));
}

#[test]
fn a_turn_parked_under_an_older_flow_ends_instead_of_resuming_at_another_node() {
    use super::run::resume;
    let old = compile(json!({"nodes": [
        {"type": "http", "url": "http://x/", "contextKey": "r"},
        {"type": "say", "text": "old: after the call"}
    ]}));
    let (mut state, mut input, mut profile) = (SessionState::new(&old), json!({"text": "a"}), json!({}));
    let call = turn(&old, &mut state, &mut input, &mut profile, 10).suspend.unwrap();
    // Edited while the call was out: another http node now sits where the old one was.
    let new = compile(json!({"nodes": [
        {"type": "http", "url": "http://y/", "contextKey": "other"},
        {"type": "say", "text": "new: a different place"}
    ]}));
    let mut e = engine();
    let io = TurnIo { state: &mut state, input: &mut input, profile: &mut profile, scripts: &mut e };
    let opts = RunOptions { max_nodes: 10, random: 0, trace: false };
    let t = resume(&new, io, opts, &call, json!({"status": 200, "body": {}}), &Turn::default());
    assert!(t.outputs.is_empty(), "{:?}", t.outputs);
    assert!(t.warnings[0].contains("the Flow changed while this turn waited"), "{:?}", t.warnings);
    assert_eq!(state.context.get("other"), None, "the answer went into no node's contextKey");
    // The next message starts at the top of the new Flow.
    let t = turn(&new, &mut state, &mut input, &mut profile, 10);
    assert_eq!(t.suspend.map(|c| c.url), Some("http://y/".to_owned()));
}

/// Header names are never templates, and a URL without one can be checked at load: these
/// passed `check` and then failed every call ("invalid HTTP header name", "unknown scheme").
#[test]
fn an_http_nodes_fixed_url_and_header_names_are_checked_at_load() {
    let e = errors(json!({"nodes": [
        {"type": "http", "url": "ftp://example.com/x", "contextKey": "a"},
        {"type": "http", "url": "not a url", "contextKey": "b"},
        {"type": "http", "url": "http://x/{{input.text}}", "contextKey": "c",
         "headers": {"X Bad": "v", "Content-Length": "3", "X-Good": "{{input.text}}"}}
    ]}));
    let find = |place: &str| {
        e.iter().find(|(p, _)| p == place).map(|(_, m)| m.as_str()).unwrap_or_else(|| panic!("{place}: {e:?}"))
    };
    assert!(find("nodes[0].url").contains("does not start with http:// or https://"));
    assert!(find("nodes[1].url").contains("not a URL hookflow can call"));
    assert!(find("nodes[2].headers[\"X Bad\"]").contains("not a valid header name"));
    assert!(find("nodes[2].headers.Content-Length").contains("remove it"));
    assert_eq!(e.len(), 4, "the templated URL and header are fine: {e:?}");
}

/// Found by a config audit: `"condition": 5` was called missing ("required"). (A pattern like
/// `/abc/zz` stays a pattern matching that text: `zz` are no flags; see question_tests.rs.)
#[test]
fn a_condition_of_the_wrong_type_is_named_as_such() {
    let e = errors(json!({"nodes": [
        {"type": "if", "condition": 5, "then": []},
        {"type": "question", "questionType": "regex", "text": "?", "pattern": "/abc/zz"},
        {"type": "question", "questionType": "regex", "text": "?", "pattern": "/^a\\/b$/i"}
    ]}));
    let find = |place: &str| {
        e.iter().find(|(p, _)| p == place).map(|(_, m)| m.as_str()).unwrap_or_else(|| panic!("{place}: {e:?}"))
    };
    assert!(
        find("nodes[0].condition")
            .contains("expected a condition (a string such as \"context.ok\", or true or false), got a number")
    );
    assert_eq!(e.len(), 1, "the patterns are fine: {e:?}");
}

#[test]
fn a_traced_turn_lists_the_nodes_it_ran_once_each_and_bounded() {
    let flow = compile(json!({ "name": "t", "nodes": [
        { "id": "greet", "type": "say", "text": "hi" },
        { "type": "if", "condition": "input.text == 'x'", "then": [ { "id": "yes", "type": "say", "text": "x" } ],
          "else": [ { "id": "no", "type": "setContext", "key": "k", "value": "v" } ] },
        { "id": "loop", "type": "goTo", "target": "loop" }
    ]}));
    let mut state = SessionState::new(&flow);
    let (mut input, mut profile) = (json!({ "text": "y" }), json!({}));
    let mut e = engine();
    let io = TurnIo { state: &mut state, input: &mut input, profile: &mut profile, scripts: &mut e };
    let t = run(&flow, io, RunOptions { max_nodes: 1000, random: 0, trace: true });
    let names: Vec<(&str, &str)> = t.nodes.iter().map(|(n, kind)| (flow.nodes[*n].name(), *kind)).collect();
    assert_eq!(names[0], ("greet", "say"));
    assert_eq!(names[2], ("no", "setContext"));
    assert_eq!(names[3], ("loop", "goTo"));
    assert_eq!(names.len(), 4, "the goTo loop is one node repeated: listed once: {names:?}");
    let untraced = turn(&flow, &mut SessionState::new(&flow), &mut json!({ "text": "y" }), &mut json!({}), 1000);
    assert!(untraced.nodes.is_empty());
}

#[test]
fn a_traced_turn_lists_the_question_that_took_or_asked_again_for_the_answer() {
    let flow = compile(json!({ "name": "t", "nodes": [
        { "id": "askAge", "type": "question", "questionType": "number", "text": "Age?", "reprompt": "A number, please" },
        { "id": "thanks", "type": "say", "text": "ok" }
    ]}));
    let mut state = SessionState::new(&flow);
    let mut traced = |text: &str| {
        let (mut input, mut profile) = (json!({ "text": text }), json!({}));
        let mut e = engine();
        let io = TurnIo { state: &mut state, input: &mut input, profile: &mut profile, scripts: &mut e };
        let t = run(&flow, io, RunOptions { max_nodes: 100, random: 0, trace: true });
        t.nodes.iter().map(|(n, kind)| format!("{} {kind}", flow.nodes[*n].name())).collect::<Vec<_>>()
    };
    assert_eq!(traced("hi"), ["askAge question"]);
    assert_eq!(traced("thirty"), ["askAge question"], "the reprompt is the question's");
    assert_eq!(traced("30"), ["askAge question", "thanks say"], "the answer is taken by the question");
}

#[test]
fn a_handover_node_says_its_text_asks_for_a_handover_and_waits_below_itself() {
    let doc = json!({"nodes": [
        {"type": "handover", "text": "Connecting {{input.text}}", "cancelIntent": "back", "cancelText": "Say back"},
        {"type": "lookup", "mode": "handoverStatus", "cases": {"completed": [{"type": "say", "text": "done"}]},
         "default": [{"type": "say", "text": "other"}]}
    ]});
    let flow = compile(doc);
    assert!(flow.has_handover());
    let mut state = SessionState::new(&flow);
    let mut input = json!({"text": "you"});
    let t = turn(&flow, &mut state, &mut input, &mut json!({}), 100);
    let texts: Vec<&str> = t.outputs.iter().map(|o| o.text.as_str()).collect();
    assert_eq!(texts, ["Connecting you", "Say back"]);
    let req = t.handover.expect("a handover request");
    assert_eq!((req.text.as_str(), req.cancel_intent.as_deref()), ("Connecting you", Some("back")));
    // The engine runs the next turn with input.handover when the handover ends.
    let mut input = json!({"text": null, "kind": "handover", "handover": {"status": "completed"}});
    let t = turn(&flow, &mut state, &mut input, &mut json!({}), 100);
    assert_eq!(t.outputs.iter().map(|o| o.text.as_str()).collect::<Vec<_>>(), ["done"]);
    assert!(t.handover.is_none());
}

#[test]
fn a_handover_node_without_text_says_nothing_and_knows_its_keys() {
    // `text?` in flows.md: a silent handover is allowed.
    let flow = compile(json!({"nodes": [{"type": "handover"}]}));
    let t = turn(&flow, &mut SessionState::new(&flow), &mut json!({"text": "x"}), &mut json!({}), 10);
    assert!(t.outputs.is_empty(), "{:?}", t.outputs);
    assert_eq!(t.handover.map(|h| h.text), Some(String::new()));
    let e = errors(json!({"nodes": [{"type": "handover", "text": "x", "cancelIntents": "a"}]}));
    assert!(e.iter().any(|(p, m)| p == "nodes[0].cancelIntents" && m.contains("cancelIntent")), "{e:?}");
}

#[test]
fn a_session_keeps_the_ids_of_its_last_ten_earlier_handovers() {
    use super::run::{ENDED_HANDOVERS_KEPT, HandoverState, HandoverStatus};
    let mut state = SessionState::default();
    let handover = |n: usize| HandoverState {
        id: format!("ho_{n}"),
        status: HandoverStatus::Active,
        provider: "webhook".into(),
        since_ms: 0,
        cancel_intent: None,
        agent_name: None,
        conversation: None,
    };
    for n in 0..=12 {
        state.replace_handover(handover(n));
    }
    assert_eq!(state.handover.map(|h| h.id), Some("ho_12".to_owned()));
    assert_eq!(state.ended_handovers.len(), ENDED_HANDOVERS_KEPT);
    assert_eq!((state.ended_handovers[0].as_str(), state.ended_handovers[9].as_str()), ("ho_2", "ho_11"));
}

#[path = "question_tests.rs"]
mod questions;

#[path = "files_tests.rs"]
mod files;
