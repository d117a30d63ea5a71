//! `hookflow try --config FILE --endpoint NAME`: talk to an endpoint's Flow in the terminal.
//! No server, no store, no webhook: each line is a message (a line starting with `{` is sent
//! as `data`), each output is printed. The session lives until `/reset` (or the end of input).
//! An `http` node's request is made directly and its outcome shown (a failure too: otherwise
//! a wrong URL would only be seen as a Flow taking its error branch); `sleep` is shown, not
//! waited for. A `handover` node starts a pretend handover (no provider is called): while it is
//! active the lines go "to the agent", `/agent TEXT` answers as the agent, `/agent-name NAME`
//! names it, and `/agent-end` ends it (the cancel intent too), and the Flow goes on below the
//! node as in the server.

use std::io::{BufRead, Write};

use serde_json::{Map, Value};

use crate::config::{Config, Endpoint};
use crate::domain::{InboxRow, JobKind, SessionKey};
use crate::engine::driver::{Driven, From, Host, drive, understand};
use crate::engine::effects::perform;
use crate::engine::http_node;
use crate::engine::translate;
use crate::engine::turn::build_input;
use crate::flow::script::{Engine, Limits};
use crate::flow::{Flow, HandoverState, HandoverStatus, HttpCall, RunOptions, SessionState, Turn, TurnIo};
use crate::ops::metrics::Metrics;
use crate::store::StoreError;
use crate::tls::outbound;
use crate::util::{now_ms, uuid_v4};
use crate::wire::{Accepted, new_trace_id};

/// The prompt before each line read when `prompt` is set.
pub const PROMPT: &str = "you> ";

/// Runs the conversation loop over `input`, writing to `out`; `Err` names a bad endpoint.
/// `prompt`: print [`PROMPT`] before each line (the caller sets it when a person types: piped
/// input is not echoed, so prompts would only clutter a script's transcript).
pub fn run(
    config: &Config,
    endpoint: &str,
    input: impl BufRead,
    out: &mut impl Write,
    prompt: bool,
) -> Result<(), String> {
    let ep = config.endpoint_by_name(endpoint).ok_or_else(|| {
        format!("no endpoint is named {endpoint:?}; the config has: {}", config.endpoint_names().join(", "))
    })?;
    let flow = Flow::load(&ep.flow, &config.dir).map_err(|errs| {
        errs.iter().map(|(p, m)| format!("{}: {p}: {m}", ep.flow.display())).collect::<Vec<_>>().join("\n")
    })?;
    let mut engine = Engine::new(Limits::of(config));
    let agent = http_node::agent(outbound(config)?);
    let mut session = Session::new(&flow);
    let _ =
        writeln!(out, "talking to endpoint {} (flow {}); /reset starts over, /quit ends", ep.name, ep.flow.display());
    let mut lines = input.lines();
    loop {
        if prompt {
            let _ = write!(out, "{PROMPT}");
            let _ = out.flush();
        }
        let Some(line) = lines.next() else {
            if prompt {
                // End of input (Ctrl-D): the shell's prompt goes on a line of its own.
                let _ = writeln!(out);
            }
            break;
        };
        let line = line.map_err(|e| e.to_string())?;
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                session = Session::new(&flow);
                let _ = writeln!(out, "(session reset)");
                continue;
            }
            _ => {}
        }
        let active = session.state.handover.as_ref().is_some_and(|h| h.status == HandoverStatus::Active);
        let mut ended = None;
        if let Some(agent_line) = line.strip_prefix("/agent") {
            match (active, agent_line) {
                (false, _) => {
                    let _ = writeln!(out, "(no handover is active: a handover node starts one)");
                    continue;
                }
                (true, "-end") => ended = Some(HandoverStatus::Completed),
                // The agent's name, as a desk sends `agentName`: on its next messages and the end.
                (true, name) if name.starts_with("-name") => {
                    let name = name["-name".len()..].trim();
                    if let Some(h) = session.state.handover.as_mut() {
                        h.agent_name = (!name.is_empty()).then(|| name.to_owned());
                    }
                    let _ = writeln!(out, "(the agent is {})", if name.is_empty() { "unnamed" } else { name });
                    continue;
                }
                (true, text) => {
                    let name = session.state.handover.as_ref().and_then(|h| h.agent_name.as_deref());
                    let _ =
                        writeln!(out, "agent{}: {}", name.map(|n| format!(" {n}")).unwrap_or_default(), text.trim());
                    continue;
                }
            }
        }
        if ended.is_none() && line.starts_with('/') && !line.starts_with("/agent") {
            // Sent all the same (a user may type one), but a mistyped command should not pass
            // for a message without a word.
            let _ = writeln!(
                out,
                "  (sent as text: {} is not a command here; they are /reset, /quit, /agent TEXT, /agent-name NAME, /agent-end)",
                line.split_whitespace().next().unwrap_or(line)
            );
        }
        let (text, data) = if ended.is_some() {
            (None, None)
        } else if line.starts_with('{') {
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(d)) => (None, Some(d)),
                _ => {
                    let _ = writeln!(out, "(not a JSON object; a line starting with {{ is sent as data)");
                    continue;
                }
            }
        } else {
            (Some(line.to_owned()), None)
        };
        session.messages += 1;
        let acc = Accepted { text, data, trace_id: new_trace_id(), ip: None, test_mode: true, at: now_ms() };
        let row =
            InboxRow { id: 0, key: session.key.clone(), kind: JobKind::Message, payload: String::new(), resume: None };
        let mut input = build_input(ep, &row, &acc, session.messages);
        if ended.is_none() {
            understand_now(ep, &flow, &agent, &mut session, &mut input, out);
            if let Some(intent) = input.get("intent").and_then(Value::as_str) {
                let _ = writeln!(out, "  (intent {intent}, score {})", input["intentScore"]);
            }
        }
        if active && ended.is_none() {
            if !session.state.handover.as_ref().is_some_and(|h| h.cancelled_by(&input)) {
                let _ = writeln!(out, "  (to the agent: {line})");
                continue;
            }
            ended = Some(HandoverStatus::Cancelled);
        }
        if let (Some(status), Some(h)) = (ended, session.state.handover.as_mut()) {
            let _ = writeln!(out, "(handover {})", status.as_str());
            h.status = status;
            // The turn that runs when a handover ends, as in the server.
            input["kind"] = "handover".into();
            input["text"] = Value::Null;
            input["handover"] =
                serde_json::json!({ "status": status.as_str(), "provider": h.provider, "agentName": h.agent_name });
            // Its outputs are translated into the session's language, as in the server.
            if let Some(l) = &session.state.language {
                input["language"] = l.code.clone().into();
            }
        }
        let mut host = TryHost {
            ep,
            session: &mut session,
            input,
            agent: &agent,
            out: &mut *out,
            max_nodes: config.limits.max_nodes_per_turn,
        };
        // Each line's JavaScript starts clean, as in the server.
        engine.begin_turn();
        // `try` performs every call right away, so the turn never parks.
        let driven = drive(&mut host, &flow, &mut engine, From::Start).map_err(|e| e.to_string())?;
        if let Driven::Done(Turn { handover: Some(req), .. }) = driven {
            let provider = ep.handover.as_ref().map_or("none", |h| h.name());
            let _ = writeln!(
                out,
                "(handover to an agent started, provider {provider}, which try does not call; /agent TEXT \
                 answers as the agent, /agent-name NAME names it, /agent-end ends it)"
            );
            session.state.handover = Some(HandoverState {
                id: "try".into(),
                status: HandoverStatus::Active,
                provider: provider.into(),
                since_ms: now_ms(),
                cancel_intent: req.cancel_intent,
                agent_name: None,
                conversation: None,
            });
        }
    }
    Ok(())
}

/// The driver's host in the terminal: prints each part of a turn, makes calls right away.
struct TryHost<'a, W: Write> {
    ep: &'a Endpoint,
    session: &'a mut Session,
    input: Value,
    agent: &'a ureq::Agent,
    out: &'a mut W,
    max_nodes: u32,
}

impl<W: Write> Host for TryHost<'_, W> {
    type Scripts = Engine;

    fn io<'s>(&'s mut self, scripts: &'s mut Engine) -> TurnIo<'s> {
        TurnIo { state: &mut self.session.state, input: &mut self.input, profile: &mut self.session.profile, scripts }
    }

    fn opts(&mut self) -> RunOptions {
        RunOptions { max_nodes: self.max_nodes, random: self.session.messages as u64, trace: false }
    }

    fn part_done(&mut self, turn: &Turn) {
        if self.ep.translation.is_none() {
            return print_turn(self.out, turn, None);
        }
        // What the user would get, each line with the Flow's own text under it.
        let mut shown = Turn { outputs: turn.outputs.clone(), ..Turn::default() };
        shown.warnings.clone_from(&turn.warnings);
        shown.error.clone_from(&turn.error);
        let state = &mut self.session.state;
        match translate::outputs_now(self.agent, self.ep, state, &self.input, &mut shown.outputs) {
            Ok(true) => return print_turn(self.out, &shown, Some(turn)),
            Ok(false) => {}
            Err(e) => {
                let _ = writeln!(self.out, "  (translation failed: {e}; the outputs go untranslated)");
            }
        }
        print_turn(self.out, &shown, None);
    }

    fn checkpoint(&mut self, _: &mut Engine, _: &Turn, _: &HttpCall) -> Result<(), StoreError> {
        Ok(())
    }

    /// Made right away, its outcome shown (a failure too).
    fn perform(&mut self, call: &HttpCall) -> Option<Value> {
        let result = http_node::perform(self.agent, call);
        let _ = writeln!(self.out, "  {}", describe_call(call, &result));
        Some(result)
    }
}

/// The one conversation of a `try` run.
struct Session {
    key: SessionKey,
    state: SessionState,
    profile: Value,
    messages: i64,
}

impl Session {
    fn new(flow: &Flow) -> Session {
        let key = SessionKey { endpoint: "try".into(), user_id: "try-user".into(), session_id: uuid_v4() };
        Session { key, state: SessionState::new(flow), profile: Value::Object(Map::new()), messages: 0 }
    }
}

/// One line about an `http` node's request and how it went: `(http GET url -> 200)`, or
/// `(http GET url failed: ...)` for a transport error or an HTTP error status (what the Flow
/// also counts as failed, see `abortOnError`).
fn describe_call(call: &HttpCall, result: &Value) -> String {
    let status = result.get("status").and_then(Value::as_u64);
    match (result.get("error"), status) {
        (Some(e), _) => format!("(http {} {} failed: {})", call.method, call.url, e.as_str().unwrap_or_default()),
        (None, Some(s)) if s >= 400 => format!("(http {} {} failed: HTTP {s})", call.method, call.url),
        (None, s) => format!("(http {} {} -> {})", call.method, call.url, s.unwrap_or_default()),
    }
}

/// What the server does before the Flow (`driver::understand`: translation, NLU), with each
/// call made at once; prints both texts when the line was translated.
fn understand_now(
    ep: &Endpoint,
    flow: &Flow,
    agent: &ureq::Agent,
    session: &mut Session,
    input: &mut Value,
    out: &mut impl Write,
) {
    let metrics = Metrics::new();
    let (state, n) = (&mut session.state, session.messages);
    let mut answer = None;
    while let Err(call) = understand(ep, flow, &metrics, state, input, n, answer.take()) {
        answer = Some(perform(agent, &call));
    }
    let original = input["originalText"].as_str().unwrap_or_default();
    if let Some(e) = input["translationError"].as_str() {
        let _ = writeln!(out, "  (translation failed: {e}; the Flow reads the text as written)");
    } else if input["originalText"].is_string() && input["text"].as_str() != Some(original) {
        let (lang, text) = (input["language"].as_str().unwrap_or("?"), input["text"].as_str().unwrap_or_default());
        let _ = writeln!(out, "  (you wrote {original:?} in {lang}; the Flow reads {text:?})");
    }
}

fn print_turn(out: &mut impl Write, turn: &Turn, flow_said: Option<&Turn>) {
    for w in &turn.warnings {
        let _ = writeln!(out, "  (warning: {w})");
    }
    if let Some(e) = &turn.error {
        let _ = writeln!(out, "  (error: {e})");
    }
    for (i, o) in turn.outputs.iter().enumerate() {
        let delay = if o.delay_ms > 0 { format!(" (after {} ms)", o.delay_ms) } else { String::new() };
        let _ = writeln!(out, "bot{delay}: {}", o.text);
        if let Some(f) = flow_said.and_then(|t| t.outputs.get(i)).filter(|f| f.text != o.text) {
            let _ = writeln!(out, "     (flow: {})", f.text);
        }
        if o.data.as_object().is_some_and(|d| !d.is_empty()) {
            let _ = writeln!(out, "     data: {}", o.data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_in_the_terminal() {
        let dir = std::env::temp_dir().join(format!("hookflow-try-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let flow = serde_json::json!({"nodes": [
            {"type": "question", "questionType": "number", "text": "How many?", "reprompt": "A number, please."},
            {"type": "say", "text": "You said {{input.result}}", "data": {"echo": "{{input.data}}"}},
        ]});
        std::fs::write(dir.join("flow.json"), flow.to_string()).unwrap();
        let config = serde_json::json!({"endpoints": [{"name": "demo", "urlToken": "try-token-123", "flow": "flow.json",
            "webhook": {"url": "http://127.0.0.1:9/"}}]});
        let path = dir.join("config.json");
        let config = crate::config::parse(&config.to_string(), &path, &|_| None).unwrap();
        let script = "hi\nmany\n3\n/reset\nhello\n{\"k\": 1}\n";
        let mut out = Vec::new();
        run(&config, "demo", script.as_bytes(), &mut out, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        let bot: Vec<&str> = out.lines().filter(|l| l.starts_with("bot")).collect();
        assert_eq!(
            bot,
            ["bot: How many?", "bot: A number, please.", "bot: You said 3", "bot: How many?", "bot: A number, please."]
        );
        assert!(out.contains("(session reset)"));
        assert!(!out.contains(PROMPT), "no prompt unless asked: {out}");
        assert!(run(&config, "nope", "".as_bytes(), &mut Vec::new(), false).unwrap_err().contains("demo"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_handover_in_the_terminal() {
        let dir = std::env::temp_dir().join(format!("hookflow-try-handover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let flow = serde_json::json!({"nodes": [
            {"type": "handover", "text": "Connecting.", "cancelIntent": "back"},
            {"type": "say", "text": "bot again ({{input.handover.status}}{{input.handover.agentName}})"},
        ]});
        std::fs::write(dir.join("flow.json"), flow.to_string()).unwrap();
        let config = serde_json::json!({"endpoints": [{"name": "demo", "urlToken": "try-token-123", "flow": "flow.json",
            "webhook": {"url": "http://127.0.0.1:9/"}, "handover": {"type": "webhook", "url": "http://127.0.0.1:9/",
            "agentKeys": [format!("sha256:{}", "0".repeat(64))]}}]});
        let config = crate::config::parse(&config.to_string(), &dir.join("config.json"), &|_| None).unwrap();
        let script = "/agent nobody\nhelp\nwhere is it?\n/agent-name Ann\n/agent On its way.\n/agent-end\nhi\nback\n";
        let mut out = Vec::new();
        run(&config, "demo", script.as_bytes(), &mut out, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(lines[0], "(no handover is active: a handover node starts one)", "{out}");
        assert_eq!(lines[1], "bot: Connecting.", "{out}");
        assert!(lines[2].starts_with("(handover to an agent started, provider webhook"), "{out}");
        assert_eq!(
            &lines[3..8],
            [
                "  (to the agent: where is it?)",
                "(the agent is Ann)",
                "agent Ann: On its way.",
                "(handover completed)",
                "bot: bot again (completedAnn)"
            ],
            "{out}"
        );
        assert_eq!(lines[8], "bot: Connecting.", "a new handover: {out}");
        assert_eq!(&lines[10..], ["(handover cancelled)", "bot: bot again (cancelled)"], "{out}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_prompt_before_each_line_and_a_failed_http_call_shown() {
        let dir = std::env::temp_dir().join(format!("hookflow-try-prompt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A port nothing listens on: the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/orders/1");
        let flow = serde_json::json!({"nodes": [
            {"type": "say", "text": "checking"},
            {"type": "http", "method": "GET", "url": url, "contextKey": "r", "timeoutMs": 2000},
            {"type": "say", "text": "failed: {{context.r.error != null}}"},
        ]});
        std::fs::write(dir.join("flow.json"), flow.to_string()).unwrap();
        let config = serde_json::json!({"endpoints": [{"name": "demo", "urlToken": "try-token-123", "flow": "flow.json",
            "webhook": {"url": "http://127.0.0.1:9/"}}]});
        let config = crate::config::parse(&config.to_string(), &dir.join("config.json"), &|_| None).unwrap();
        let mut out = Vec::new();
        run(&config, "demo", "hi\n\n/reset\n".as_bytes(), &mut out, true).unwrap();
        let out = String::from_utf8(out).unwrap();
        // One prompt per line read (three) and one before the end of input, which ends the line.
        assert_eq!(out.matches(PROMPT).count(), 4, "{out}");
        assert!(out.ends_with(&format!("{PROMPT}\n")), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[1], format!("{PROMPT}bot: checking"), "{out}");
        let failed = format!("  (http GET {url} failed: ");
        assert!(lines[2].starts_with(&failed) && lines[2].len() > failed.len() + 1, "the error is shown: {out}");
        assert_eq!(lines[3], "bot: failed: true", "{out}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
