//! Tests of the script engine (a child of `script.rs`).

use super::*;
use serde_json::json;

fn engine() -> Engine {
    Engine::new(Limits { timeout: Duration::from_millis(200), memory: 8 << 20, turn: Duration::from_secs(5) })
}

fn eval(e: &mut Engine, src: &str) -> Result<Option<Value>, ScriptError> {
    let (input, context, profile) =
        (json!({"text": "Hi there"}), json!({"n": 2, "order": {"status": "shipped"}}), json!({"name": "Ann"}));
    e.eval(src, &Scope { input: &input, context: &context, profile: &profile })
}

#[test]
fn expressions_see_memory_and_aliases() {
    let mut e = engine();
    assert_eq!(eval(&mut e, "input.text.toUpperCase()").unwrap(), Some(json!("HI THERE")));
    assert_eq!(eval(&mut e, "cc.n * 21").unwrap(), Some(json!(42)));
    assert_eq!(eval(&mut e, "context.order.status === 'shipped' && cp.name").unwrap(), Some(json!("Ann")));
    assert_eq!(eval(&mut e, "{a: [1, 2]}").unwrap(), Some(json!({"a": [1, 2]})));
    assert_eq!(eval(&mut e, "context.missing").unwrap(), None);
}

#[test]
fn errors_carry_the_message() {
    let mut e = engine();
    let err = eval(&mut e, "context.missing.deeper").unwrap_err();
    assert!(matches!(&err, ScriptError::Thrown(m, _) if m.contains("TypeError")), "{err:?}");
}

#[test]
fn an_endless_loop_is_stopped_at_the_time_limit_and_the_engine_still_works() {
    let mut e = engine();
    let started = Instant::now();
    let mut input = json!({});
    let err = e.run_code("while (true) {}", &mut input, &mut json!({}), &mut json!({})).unwrap_err();
    assert_eq!(err, ScriptError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(eval(&mut e, "1 + 1").unwrap(), Some(json!(2)));
}

#[test]
fn a_memory_bomb_is_contained() {
    let mut e = engine();
    // Big strings, then many small ones: QuickJS throws `null` when even its error object
    // cannot be allocated, which must still read as memory, not as a thrown value.
    for bomb in [
        "let a = []; while (true) { a.push('x'.repeat(1 << 16)); }",
        "let a = []; while (true) a.push('x' + a.length);",
    ] {
        let err = e.run_code(bomb, &mut json!({}), &mut json!({}), &mut json!({})).unwrap_err();
        assert!(matches!(err, ScriptError::Memory | ScriptError::Timeout), "{bomb}: {err:?}");
    }
    assert_eq!(eval(&mut e, "'still ' + 'alive'").unwrap(), Some(json!("still alive")));
}

#[test]
fn code_changes_memory_and_emits_outputs() {
    let mut e = engine();
    let (mut input, mut context, mut profile) = (json!({"text": "x"}), json!({"n": 1}), json!({}));
    let code =
        "context.n += 1; profile.seen = true; api.setContext('a.b', 5); api.output('hello', {k: 1}); api.say('bye');";
    let r = e.run_code(code, &mut input, &mut context, &mut profile).unwrap();
    assert_eq!(context, json!({"n": 2, "a": {"b": 5}}));
    assert_eq!(profile, json!({"seen": true}));
    assert_eq!(r.outputs, vec![("hello".to_owned(), json!({"k": 1})), ("bye".to_owned(), json!({}))]);
}

#[test]
fn scripts_have_no_file_or_network_access() {
    let mut e = engine();
    for src in ["typeof require", "typeof fetch", "typeof XMLHttpRequest", "typeof process", "typeof std", "typeof os"]
    {
        assert_eq!(eval(&mut e, src).unwrap(), Some(json!("undefined")), "{src}");
    }
}

#[test]
fn syntax_errors_are_found_without_running_and_give_a_position() {
    assert!(check_syntax("while (true) {}", false).is_ok(), "checking must not run the code");
    let err = check_syntax("let x = ;", false).unwrap_err();
    assert!(err.contains("SyntaxError") && err.contains("(line 1, column 9)"), "{err}");
    assert!(check_syntax("input.text.length > 3", true).is_ok());
    assert!(check_syntax("input.text.length >", true).is_err());
}

#[test]
fn transformers_are_called_and_promises_awaited() {
    let mut e = engine();
    let file =
        "async function handleInput({ request }) { return { userId: request.body.user, text: request.body.message }; }";
    let out = e.call_transformer(file, "handleInput", &json!({"request": {"body": {"user": "u", "message": "m"}}}));
    assert_eq!(out.unwrap(), Called::Returned(Some(json!({"userId": "u", "text": "m"}))));
    assert_eq!(e.call_transformer(file, "handleOutput", &json!({})).unwrap(), Called::Undefined);
}

#[test]
fn a_new_turn_sees_none_of_the_globals_and_builtins_the_last_one_changed() {
    let mut e = engine();
    let dirty = "globalThis.leak = 1; Object.prototype.polluted = 1; Array.prototype.last = function () { return this[this.length - 1]; };";
    e.run_code(dirty, &mut json!({}), &mut json!({}), &mut json!({})).unwrap();
    let seen = "[typeof leak, typeof ({}).polluted, typeof [].last, typeof api].join()";
    // Within the turn, later scripts share the context (as later lines of one Code node would).
    assert_eq!(eval(&mut e, seen).unwrap(), Some(json!("number,number,function,object")));
    e.begin_turn();
    assert_eq!(eval(&mut e, seen).unwrap(), Some(json!("undefined,undefined,undefined,undefined")));
    let mut context = json!({});
    e.run_code(
        "context.seen = [typeof leak, typeof ({}).polluted].join();",
        &mut json!({}),
        &mut context,
        &mut json!({}),
    )
    .unwrap();
    assert_eq!(context, json!({"seen": "undefined,undefined"}));
}

#[test]
fn every_transformer_call_starts_clean() {
    let mut e = engine();
    let file = "globalThis.calls = (globalThis.calls || 0) + 1; \
                function handleOutput() { const was = typeof ({}).polluted; Object.prototype.polluted = 1; return { calls, was }; }";
    for _ in 0..2 {
        let out = e.call_transformer(file, "handleOutput", &json!({})).unwrap();
        assert_eq!(out, Called::Returned(Some(json!({"calls": 1, "was": "undefined"}))));
    }
    // Nor does a transformer's change reach the turn's scripts, or theirs a transformer.
    assert_eq!(eval(&mut e, "typeof ({}).polluted").unwrap(), Some(json!("undefined")));
}

/// Promise callbacks run when the script that queued them ends, as a JavaScript host runs them:
/// they used to stay in the runtime's job queue and run in a later call of any session.
#[test]
fn promise_callbacks_run_with_their_node_and_never_in_another_call() {
    let mut e = engine();
    let (mut input, mut context) = (json!({}), json!({}));
    let code = "Promise.all([1, 2]).then(r => { context.sum = r[0] + r[1]; api.output('then'); });";
    let out = e.run_code(code, &mut input, &mut context, &mut json!({})).unwrap();
    assert_eq!(context, json!({"sum": 3}), "the callback is part of the node");
    assert_eq!(out.outputs.len(), 1);
    // A callback queued by a node that then throws runs too, not in the next call.
    let code = "Promise.resolve().then(() => { globalThis.late = 1; }); throw new Error('boom');";
    assert!(e.run_code(code, &mut json!({}), &mut json!({}), &mut json!({})).is_err());
    e.begin_turn();
    let transformer = "globalThis.seen = typeof late; async function handleInput() { await null; return 'ok'; }";
    assert_eq!(
        e.call_transformer(transformer, "handleInput", &json!({})).unwrap(),
        Called::Returned(Some(json!("ok")))
    );
    assert!(!e.rt.is_job_pending(), "nothing is left for the next call");

    // Callbacks that queue more for ever: stopped at the call's time limit, and none is left
    // to eat the time of the next call (an async transformer took 1 s more each, for good).
    let endless = "function f() { Promise.resolve().then(f); } f();";
    let err = e.run_code(endless, &mut json!({}), &mut json!({}), &mut json!({})).unwrap_err();
    assert_eq!(err, ScriptError::Timeout);
    assert!(!e.rt.is_job_pending(), "the queue went with the runtime");
    e.begin_turn();
    assert_eq!(
        e.call_transformer(transformer, "handleInput", &json!({})).unwrap(),
        Called::Returned(Some(json!("ok")))
    );
    // The same chain started by a transformer, with an endless loop in each callback.
    let hostile = "function f() { Promise.resolve().then(() => { f(); for (;;) {} }); } \
                   async function handleInput() { f(); await null; return 'never'; }";
    assert_eq!(e.call_transformer(hostile, "handleInput", &json!({})).unwrap_err(), ScriptError::Timeout);
    assert_eq!(
        e.call_transformer(transformer, "handleInput", &json!({})).unwrap(),
        Called::Returned(Some(json!("ok")))
    );
}

/// A promise that nothing will ever settle ends the call with a clear error, not a hang.
#[test]
fn a_transformer_promise_that_never_settles_is_an_error() {
    let mut e = engine();
    let file = "function handleInput() { return new Promise(() => {}); }";
    let err = e.call_transformer(file, "handleInput", &json!({})).unwrap_err();
    assert!(err.to_string().contains("never settles"), "{err}");
}

/// What one turn kept alive is collected before the next: it took the memory limit from later
/// turns of any session (a 9 MB array held by the last turn's globals, then 10 MB refused).
#[test]
fn a_turn_gets_the_whole_memory_limit_whatever_the_last_one_kept() {
    let limits = Limits { timeout: Duration::from_secs(2), memory: 16 << 20, turn: Duration::from_secs(10) };
    let mut e = Engine::new(limits);
    let keep = "globalThis.keep = []; for (let i = 0; i < 9000; i++) keep.push('q'.repeat(1000) + i);";
    e.run_code(keep, &mut json!({}), &mut json!({}), &mut json!({})).unwrap();
    for _ in 0..3 {
        e.begin_turn();
        let mut context = json!({});
        e.run_code("context.n = new Uint8Array(10e6).length;", &mut json!({}), &mut context, &mut json!({})).unwrap();
        assert_eq!(context, json!({"n": 10_000_000}));
    }
    // And by a transformer's context, which lives for one call.
    let file = "globalThis.keep = []; for (let i = 0; i < 9000; i++) keep.push('q'.repeat(1000) + i); \
                function handleOutput() { return keep.length; }";
    assert_eq!(e.call_transformer(file, "handleOutput", &json!({})).unwrap(), Called::Returned(Some(json!(9000))));
    e.begin_turn();
    e.run_code("context.n = new Uint8Array(10e6).length;", &mut json!({}), &mut json!({}), &mut json!({})).unwrap();
}

/// A memory limit too small for a context's built-ins is the script's failure (a panic of the
/// thread lost the message).
#[test]
fn a_context_that_does_not_fit_is_a_memory_error() {
    let mut e = Engine::new(Limits { timeout: Duration::from_secs(1), memory: 64 << 10, turn: Duration::from_secs(5) });
    assert_eq!(eval(&mut e, "1").unwrap_err(), ScriptError::Memory);
    assert_eq!(
        e.call_transformer("function handleInput() {}", "handleInput", &json!({})).unwrap_err(),
        ScriptError::Memory
    );
}

#[test]
fn the_turn_budget_stops_the_call_that_reaches_it_and_refuses_the_rest_until_the_next_turn() {
    let limits = Limits { timeout: Duration::from_millis(300), memory: 8 << 20, turn: Duration::from_millis(500) };
    let mut e = Engine::new(limits);
    let slow = "(() => { const t = Date.now(); while (Date.now() - t < 150) {} return 'ok'; })()";
    let started = Instant::now();
    let results: Vec<_> = (0..6).map(|_| eval(&mut e, slow)).collect();
    let took = started.elapsed();
    assert_eq!(results[..3], [Ok(Some(json!("ok"))), Ok(Some(json!("ok"))), Ok(Some(json!("ok")))]);
    assert_eq!(
        results[3..],
        [Err(ScriptError::TurnBudget), Err(ScriptError::TurnBudget), Err(ScriptError::TurnBudget)]
    );
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(e.stopped(), Some(Stopped::Budget));
    assert!(!e.interrupted());
    e.begin_turn();
    assert_eq!(eval(&mut e, slow).unwrap(), Some(json!("ok")));
    assert_eq!(e.stopped(), None);
}

#[test]
fn the_stop_flag_interrupts_a_running_script_and_refuses_the_next() {
    let stop = Arc::new(AtomicBool::new(false));
    let limits = Limits { timeout: Duration::from_secs(30), memory: 8 << 20, turn: Duration::from_secs(60) };
    let mut e = Engine::with_stop(limits, Some(stop.clone()));
    assert_eq!(eval(&mut e, "1 + 1").unwrap(), Some(json!(2)));
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
    });
    let started = Instant::now();
    let err = e.run_code("while (true) {}", &mut json!({}), &mut json!({}), &mut json!({})).unwrap_err();
    setter.join().unwrap();
    assert_eq!(err, ScriptError::Interrupted);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(e.interrupted());
    assert_eq!(eval(&mut e, "1 + 1").unwrap_err(), ScriptError::Interrupted);
}

#[test]
fn a_syntax_error_is_placed_in_the_authors_text() {
    let e = check_syntax("input.text +", true).unwrap_err();
    assert!(e.contains("(at the end: something is missing before it)") && !e.contains("line 2"), "{e}");
    let e = check_syntax("let a = ;", false).unwrap_err();
    assert!(e.contains("(line 1, column 9)"), "{e}");
}

/// Scripts run in strict mode (rquickjs's default, README: Choices): an assignment to a name
/// never declared is an error, not a new global.
#[test]
fn scripts_run_in_strict_mode() {
    let mut e = engine();
    let err = e.run_code("counter = 1;", &mut json!({}), &mut json!({}), &mut json!({})).unwrap_err();
    assert!(matches!(&err, ScriptError::Thrown(m, _) if m.starts_with("ReferenceError")), "{err:?}");
}

/// A collection may queue a `FinalizationRegistry`'s callback: it must never run in a later
/// call, where it would eat that call's time (found in a review: a collection after a
/// transformer call queued the turn's callback after the turn's last script).
#[test]
fn finalization_callbacks_of_a_turn_never_run_in_the_next() {
    let mut e = engine();
    let code = "globalThis.reg = new FinalizationRegistry(() => { for (;;) {} }); \
                (function () { const a = {}; a.me = a; reg.register(a, 1); })();";
    e.run_code(code, &mut json!({}), &mut json!({}), &mut json!({})).unwrap();
    let file = "function handleOutput() { return 1; }";
    assert_eq!(e.call_transformer(file, "handleOutput", &json!({})).unwrap(), Called::Returned(Some(json!(1))));
    e.begin_turn();
    assert!(!e.rt.is_job_pending(), "nothing is left for the next turn");
    assert_eq!(eval(&mut e, "1 + 1").unwrap(), Some(json!(2)));
}
