//! JavaScript across turns: each turn and each transformer call starts with pristine globals and
//! built-ins (nothing leaks between sessions on one worker), `limits.turnScriptMs` bounds a
//! whole turn's script time, and the shutdown interrupts a running script, leaving its message
//! queued for the next start (the binary, for the log and the signal).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bot::*;
use crate::child::Launch;
use crate::support::*;

/// What a script sees of the changes [`DIRTY`] makes: `typeof` of each.
const SEEN: &str = "[typeof globalThis.leak, typeof ({}).polluted].join()";
/// A Code node body that changes the global object and a built-in prototype.
const DIRTY: &str = "globalThis.leak = 1; Object.prototype.polluted = 1;";

/// "dirty" runs [`DIRTY`]; every message then says what its turn sees.
fn leak_flow() -> Value {
    json!({ "name": "leak", "nodes": [
        { "type": "lookup", "mode": "text", "cases": { "dirty": [ { "type": "code", "code": DIRTY } ] } },
        { "type": "say", "text": format!("seen={{{{ {SEEN} }}}}") }
    ]})
}

#[test]
fn a_later_turn_of_another_session_on_the_same_worker_sees_no_global_or_prototype_change() {
    let bot = Bot::start("js-leak", &[("flow.json", &leak_flow())], |cfg| cfg["workers"] = json!(1));
    bot.text("a", "A", "dirty");
    // Within its own turn the Code node's changes are visible, as in one Cognigy execution.
    bot.expect1("A", "seen=number,number");
    bot.text("b", "B", "look");
    bot.expect1("B", "seen=undefined,undefined");
    // Nor does a later turn of the same session see them.
    bot.text("a", "A", "look");
    bot.expect1("A", "seen=undefined,undefined");
}

#[test]
fn every_output_transformer_call_starts_with_pristine_globals() {
    let source = format!(
        "function handleOutput({{ output, sessionId }}) {{ const seen = {SEEN}; {DIRTY} \
         return {{ session: sessionId, says: output.text, seen }}; }}"
    );
    let transformer = json!({ "file": "transformer.js", "output": true });
    let texts = [("transformer.js", source.as_str())];
    let bot = Bot::start_files("js-leak-transformer", &[("flow.json", &leak_flow())], &texts, |cfg| {
        cfg["workers"] = json!(1);
        cfg["endpoints"][0]["transformer"] = transformer;
    });
    bot.text("a", "A", "dirty");
    let first = bot.sink.recv(WAIT);
    // The Flow's own changes do not reach the transformer, which runs in a context of its own.
    assert_eq!(first.body, json!({ "session": "A", "says": "seen=number,number", "seen": "undefined,undefined" }));
    bot.text("b", "B", "look");
    let second = bot.sink.recv(WAIT);
    assert_eq!(
        second.body,
        json!({ "session": "B", "says": "seen=undefined,undefined", "seen": "undefined,undefined" })
    );
}

#[test]
fn an_input_transformer_and_the_turn_it_feeds_share_no_globals_on_their_http_thread() {
    // At low load the http thread that ran the input transformer also runs the message's turn,
    // on the same engine (`intake/routes.rs`, `with_engine`): each starts with pristine globals.
    let source = format!(
        "function handleInput({{ request }}) {{ const b = request.body; const seen = {SEEN}; {DIRTY} \
         return {{ userId: b.userId, sessionId: b.sessionId, text: b.text, data: {{ seen }} }}; }}"
    );
    let flow = json!({ "name": "seen", "nodes": [
        { "type": "say", "text": format!("turn={{{{ {SEEN} }}}} transformer={{{{input.data.seen}}}}") },
        { "type": "code", "code": DIRTY }
    ]});
    let transformer = json!({ "file": "transformer.js", "input": true });
    let texts = [("transformer.js", source.as_str())];
    let bot = Bot::start_files("js-leak-input", &[("flow.json", &flow)], &texts, |cfg| {
        cfg["endpoints"][0]["transformer"] = transformer;
    });
    for (user, session) in [("a", "A"), ("b", "B"), ("a", "A")] {
        bot.text(user, session, "look");
        bot.expect1(session, "turn=undefined,undefined transformer=undefined,undefined");
    }
}

/// A condition that takes `ms` of JavaScript time and is true.
fn slow_condition(ms: u64) -> String {
    format!("(() => {{ const t = Date.now(); while (Date.now() - t < {ms}) {{}} return true; }})()")
}

#[test]
fn a_go_to_loop_with_a_slow_condition_is_stopped_at_turn_script_ms_and_logged() {
    const TURN_MS: u64 = 600;
    let sink = Sink::new();
    let dir = TempDir::new("turn-budget");
    let mut cfg = config(&sink.url);
    // Each call (80 ms) is well under scriptTimeoutMs; only the sum is too much. Without the
    // budget, maxNodesPerTurn would let the loop run for minutes.
    cfg["limits"] = json!({ "scriptTimeoutMs": 300, "turnScriptMs": TURN_MS, "maxNodesPerTurn": 1_000_000 });
    let f = json!({ "name": "slow-loop", "nodes": [
        { "type": "say", "text": "before {{input.text}}" },
        { "id": "loop", "type": "if", "condition": slow_condition(80), "then": [ { "type": "goTo", "target": "loop" } ] },
        { "type": "say", "text": "never" }
    ]});
    let path = write_files(&dir.path, &cfg, &[("flow.json", &f)]);
    let p = Launch::new(&path, dir.join("run.log")).start();
    let url = p.url(&format!("/{TOKEN}"));
    let sent = Instant::now();
    send_to(&url, &json!({ "userId": "u", "sessionId": "s", "text": "one" }));
    let hit = sink.recv(WAIT);
    let took = sent.elapsed();
    assert_eq!((hit.seq(), hit.text()), (1, "before one"));
    assert!(took < Duration::from_millis(TURN_MS + 2500), "the turn's outputs came after {took:?}");
    // The worker is free again: the session's next message runs (from the top, as after
    // maxNodesPerTurn).
    send_to(&url, &json!({ "userId": "u", "sessionId": "s", "text": "two" }));
    let hit = sink.recv(WAIT);
    assert_eq!((hit.seq(), hit.text()), (2, "before two"));
    let deadline = Instant::now() + WAIT;
    let wanted = "limits.turnScriptMs (600 ms) in all; the turn was stopped at node loop";
    while !p.log_text().contains(wanted) {
        assert!(Instant::now() < deadline, "no log line about the budget:\n{}", p.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system, in clock ticks) of the process's thread named `name`.
fn thread_ticks(pid: u32, name: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/<pid>/task");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is the 3rd field, utime the 14th.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let tick = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        return tick(14) + tick(15);
    }
    0
}

#[test]
fn sigterm_interrupts_a_long_script_exits_quickly_and_the_message_runs_after_the_restart() {
    let sink = Sink::new();
    let api = Mock::new(|_| MockReply::json(200, json!({ "ok": true })));
    let dir = TempDir::new("sigterm-script");
    let mut cfg = config(&sink.url);
    cfg["workers"] = json!(1);
    cfg["limits"] = json!({ "scriptTimeoutMs": 60_000, "turnScriptMs": 120_000 });
    // The http node is a checkpoint: "started" goes out before it, and the call tells the test
    // that the turn has reached the endless Code node.
    let f = json!({ "name": "long-script", "nodes": [
        { "type": "say", "text": "started" },
        { "type": "http", "method": "GET", "url": api.url("/go"), "contextKey": "r" },
        { "type": "code", "code": "while (true) {}" },
        { "type": "say", "text": "after: {{input.codeNodeError.message}}" }
    ]});
    let path = write_files(&dir.path, &cfg, &[("flow.json", &f)]);
    let mut first = Launch::new(&path, dir.join("first.log")).start();
    send_to(&first.url(&format!("/{TOKEN}")), &json!({ "userId": "u", "sessionId": "s", "text": "go" }));
    assert_eq!(sink.recv(WAIT).text(), "started");
    api.recv(WAIT);
    // The script spins: wait until the worker has burnt 300 ms of CPU since the call.
    let deadline = Instant::now() + WAIT;
    while thread_ticks(first.pid, "worker-0") < 30 {
        assert!(Instant::now() < deadline, "the worker does not run the script");
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(5));
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("no exit 5 s after SIGTERM:\n{}", first.log_text()));
    assert_eq!(status.code(), Some(0), "{}", first.log_text());
    println!("SIGTERM during a 60 s script: exited after {took:?}");
    assert!(first.log_text().contains("interrupted by the shutdown; it stays queued"), "{}", first.log_text());

    // The message was neither dropped nor committed: the next start resumes it at its http node,
    // and now (scriptTimeoutMs 200) the Code node is stopped and the Flow goes on.
    cfg["limits"] = json!({ "scriptTimeoutMs": 200 });
    write_files(&dir.path, &cfg, &[]);
    let second = Launch::new(&path, dir.join("second.log")).start();
    api.recv(WAIT);
    let hit = sink.recv(WAIT);
    assert_eq!(hit.seq(), 2, "{}", second.log_text());
    assert!(hit.text().starts_with("after: ") && hit.text().contains("scriptTimeoutMs"), "{}", hit.text());
}
