//! The interpreter: one turn of a session, from its entrypoint to the next wait or end.
//!
//! Sans-IO: it takes the session state, the `input` object and the user's profile, and returns
//! the outputs; the worker does the reading, writing and queueing. JavaScript goes through the
//! `Scripts` trait (pure computation). An `http` node does not call out from here: the turn
//! *suspends* with the request (`Turn::suspend`), the worker commits the checkpoint, performs
//! the call, and continues the turn with `resume`. Randomness (for `texts` in random mode) comes
//! in through `RunOptions`, so a turn is reproducible in tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use super::handover::{HandoverRequest, HandoverState, HandoverStatus};
use super::model::{Flow, HttpNode, LookupOn, Op, OpKind, Question, QuestionKind, Say};
use super::template::{DataTemplate, Evaluator, Expr, Root, Scope, Scripts, Template, render};

/// What a session remembers between messages (stored as JSON in the `sessions` table).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionState {
    /// `context`: starts as the Flow's `defaultContext`.
    pub context: Value,
    /// Where the next message starts (0 = the first node).
    #[serde(default)]
    pub entry: usize,
    /// The Question waiting for an answer, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Pending>,
    /// `once` nodes (by op index) that have run in this session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub once: Vec<usize>,
    /// Next index of `texts` in linear mode, by op index.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub linear: BTreeMap<usize, usize>,
    /// Where to go back to when Flows run by `executeFlow` end (innermost last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<usize>,
    /// `Flow::version` these positions refer to.
    #[serde(default)]
    pub version: u64,
    /// The session's handover to a human agent: the active one, or the last one, ended (kept so
    /// that the agent routes can answer 409 `handover_ended`). Kept here, in the state committed
    /// with every turn, so it survives a restart and lives in whatever store holds sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<HandoverState>,
    /// The ids of the session's handovers before that one, oldest first (the last
    /// `ENDED_HANDOVERS_KEPT`): a desk's late call for one of them is answered 409
    /// `handover_ended`, as for the last one, not 404.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended_handovers: Vec<String>,
    /// The user's language, when the endpoint translates (engine/translate): kept with the
    /// session so that a detected or set language survives restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<UserLanguageState>,
}

/// The session's user language for real-time translation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct UserLanguageState {
    /// A language code (`fr`, `pt-BR`).
    pub code: String,
    /// Set by the Flow (`api.setUserLanguage`): detection no longer changes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub set_by_flow: bool,
}

/// A Question waiting at `pc`, with the invalid answers given so far.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    pub pc: usize,
    pub attempts: u32,
}

/// One bot output.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub text: String,
    /// An object; `{}` when the output has no data.
    pub data: Value,
    /// Delivery not before this many ms after the turn (`sleep` nodes before it).
    pub delay_ms: u64,
}

/// Per-turn settings.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub max_nodes: u32,
    /// Seed for `texts` in random mode.
    pub random: u64,
    /// Record the nodes run (`Turn::nodes`), for the console's trace.
    pub trace: bool,
}

/// Most nodes recorded in `Turn::nodes`: a loop cut by `maxNodesPerTurn` would list thousands.
pub const MAX_TRACED_NODES: usize = 200;

/// An HTTP request the turn waits for (an `http` node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCall {
    /// The op to resume at.
    pub pc: usize,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Value>,
    pub timeout_ms: u64,
}

/// What a turn produced.
#[derive(Debug, Default)]
pub struct Turn {
    pub outputs: Vec<Output>,
    /// Set when the turn was cut short (node limit, script budget, shutdown); the outputs so
    /// far are kept.
    pub error: Option<String>,
    /// Problems worth a log line (a throwing expression, a failing Code node), with the node.
    pub warnings: Vec<String>,
    /// The turn waits for this request; call `resume` with its result.
    pub suspend: Option<HttpCall>,
    /// A `handover` node ended the turn: the engine starts a handover (the node's outputs are in
    /// `outputs`; the next message starts below the node once it ends).
    pub handover: Option<HandoverRequest>,
    /// `sleep` time accumulated so far (carried over a suspension).
    pub delay_ms: u64,
    /// Nodes run so far (carried over a suspension, so `maxNodesPerTurn` bounds the whole turn).
    pub steps: u32,
    /// With `RunOptions::trace`: the nodes run in this part of the turn, in order (index into
    /// `Flow::nodes`, and what its step did), at most `MAX_TRACED_NODES`.
    pub nodes: Vec<(usize, &'static str)>,
}

/// Earlier handover ids a session keeps (`SessionState::ended_handovers`).
pub const ENDED_HANDOVERS_KEPT: usize = 10;

impl SessionState {
    /// Makes `next` the session's handover; the one it replaces joins the ended ones.
    pub fn replace_handover(&mut self, next: HandoverState) {
        if let Some(old) = self.handover.replace(next) {
            self.ended_handovers.push(old.id);
            let extra = self.ended_handovers.len().saturating_sub(ENDED_HANDOVERS_KEPT);
            self.ended_handovers.drain(..extra);
        }
    }

    /// A new session of `flow`.
    pub fn new(flow: &Flow) -> SessionState {
        SessionState { context: flow.default_context.clone(), version: flow.version, ..Default::default() }
    }
}

/// Memory and engine of one turn.
pub struct TurnIo<'a> {
    pub state: &'a mut SessionState,
    pub input: &'a mut Value,
    pub profile: &'a mut Value,
    pub scripts: &'a mut dyn Scripts,
}

/// Runs one turn. `input` is the message's `input` object; `profile` the user's profile.
pub fn run(flow: &Flow, io: TurnIo<'_>, opts: RunOptions) -> Turn {
    if io.state.version != flow.version {
        // The Flow file changed since this session was saved: its positions may point anywhere
        // now, so it starts again at the top, keeping its context.
        // (A handover in progress goes on: it is the agent desk's, not the Flow's.)
        let context = std::mem::take(&mut io.state.context);
        let language = io.state.language.take();
        let handover = io.state.handover.take();
        let ended_handovers = std::mem::take(&mut io.state.ended_handovers);
        *io.state =
            SessionState { context, language, version: flow.version, handover, ended_handovers, ..Default::default() };
    }
    let mut m = Machine { flow, io, opts, turn: Turn::default(), node: 0 };
    let start = m.io.state.entry;
    m.io.state.entry = 0;
    if let Some(p) = m.io.state.question.take() {
        let next = m.answer(p);
        if !m.cut_if_stopped(0)
            && let Some(pc) = next
        {
            m.exec(pc);
        }
    } else {
        m.exec(start);
    }
    m.turn
}

/// Continues a turn suspended at an `http` node, with the call's result (`{status, headers,
/// body}` or `{error}`).
pub fn resume(flow: &Flow, io: TurnIo<'_>, opts: RunOptions, call: &HttpCall, result: Value, before: &Turn) -> Turn {
    let turn = Turn { delay_ms: before.delay_ms, steps: before.steps, ..Turn::default() };
    let mut m = Machine { flow, io, opts, turn, node: 0 };
    // The Flow changed while the turn waited (a restart with an edited file): the call's
    // position may point at any node now, or past the end. The turn ends here, and the
    // session's next message starts at the top (`run`), as any session of an older version.
    let op = flow.ops.get(call.pc).filter(|_| m.io.state.version == flow.version);
    let Some(Op { node, kind: OpKind::Http(h) }) = op else {
        m.turn.warnings.push(
            "the Flow changed while this turn waited at its http node: the turn ends here, and the \
             session's next message starts at the top"
                .into(),
        );
        return m.turn;
    };
    m.node = *node;
    let failed = result.get("error").is_some() || result["status"].as_u64().is_some_and(|s| s >= 400);
    set_path(&mut m.io.state.context, &h.context_key.keys, result, false);
    if failed && h.abort_on_error {
        m.warn("the HTTP request failed and abortOnError is set: the turn ends here".into());
        return m.turn;
    }
    m.exec(call.pc + 1);
    m.turn
}

struct Machine<'f, 'io> {
    flow: &'f Flow,
    io: TurnIo<'io>,
    opts: RunOptions,
    turn: Turn,
    /// The node being run, for warnings.
    node: usize,
}

/// What an op tells the loop to do next.
enum Next {
    Go(usize),
    /// End the turn; the next message starts at this pc.
    Wait(usize),
    /// End the turn until the HTTP call returns.
    Suspend,
}

impl Machine<'_, '_> {
    /// Runs `f` with the memory as a `Scope` and an evaluator; logs what the scripts threw.
    fn with_scope<T>(&mut self, f: impl FnOnce(&Scope<'_>, &mut Evaluator<'_>) -> T) -> T {
        let (value, errors) = {
            let scope = Scope { input: self.io.input, context: &self.io.state.context, profile: self.io.profile };
            let mut ev = Evaluator::new(&mut *self.io.scripts);
            let v = f(&scope, &mut ev);
            (v, ev.errors)
        };
        for e in errors {
            self.warn(format!("expression failed, rendered as empty: {e}"));
        }
        value
    }

    fn warn(&mut self, msg: String) {
        let node = self.flow.nodes[self.node].name();
        self.turn.warnings.push(format!("node {node}: {msg}"));
    }

    fn render(&mut self, t: &Template) -> String {
        self.with_scope(|s, ev| t.render(s, ev))
    }

    fn render_data(&mut self, d: &DataTemplate) -> Value {
        self.with_scope(|s, ev| d.render(s, ev))
    }

    fn test(&mut self, e: &Expr) -> bool {
        self.with_scope(|s, ev| e.test(s, ev))
    }

    /// The loop: runs ops from `pc` until one ends the turn or the node limit is reached.
    fn exec(&mut self, mut pc: usize) {
        let flow = self.flow;
        loop {
            let op = &flow.ops[pc];
            self.node = op.node;
            if !matches!(op.kind, OpKind::Jump(_)) {
                // The end of a Flow is no node of the file.
                if self.opts.trace && !matches!(op.kind, OpKind::End { .. }) {
                    self.trace(op);
                }
                self.turn.steps += 1;
                if self.turn.steps > self.opts.max_nodes {
                    let node = self.flow.nodes[op.node].name();
                    self.turn.error = Some(format!(
                        "the turn ran more than {} nodes (limits.maxNodesPerTurn) and was stopped at node {node}",
                        self.opts.max_nodes
                    ));
                    return;
                }
            }
            let emitted = self.turn.outputs.len();
            let next = self.step(op, pc);
            if self.cut_if_stopped(emitted) {
                return;
            }
            match next {
                Next::Go(next) => pc = next,
                Next::Wait(entry) => {
                    self.io.state.entry = entry;
                    return;
                }
                Next::Suspend => return,
            }
        }
    }

    /// Ends the turn if its scripts were stopped (`limits.turnScriptMs`, shutdown) during the
    /// node just run: that node's outputs (from `emitted` on), its question and its request are
    /// dropped, as its expressions did not run; the next message starts at the top, as after
    /// `maxNodesPerTurn`.
    fn cut_if_stopped(&mut self, emitted: usize) -> bool {
        let Some(why) = self.io.scripts.stopped() else { return false };
        self.turn.outputs.truncate(emitted);
        self.turn.suspend = None;
        self.turn.handover = None;
        self.io.state.question = None;
        self.io.state.entry = 0;
        let node = self.flow.nodes[self.node].name();
        self.turn.error = Some(format!("{why}; the turn was stopped at node {node}"));
        true
    }

    /// Records a step of a node other than the one before (a node may compile to several ops).
    fn trace(&mut self, op: &Op) {
        let nodes = &mut self.turn.nodes;
        if nodes.len() < MAX_TRACED_NODES && nodes.last().is_none_or(|(n, _)| *n != op.node) {
            nodes.push((op.node, op_label(&op.kind)));
        }
    }

    fn step(&mut self, op: &Op, pc: usize) -> Next {
        match &op.kind {
            OpKind::Say(say) => {
                self.say(say, pc);
                Next::Go(pc + 1)
            }
            OpKind::Question(q) => {
                self.ask(q, &q.text);
                self.io.state.question = Some(Pending { pc, attempts: 0 });
                Next::Wait(pc)
            }
            OpKind::Branch { cond, otherwise } => Next::Go(if self.test(cond) { pc + 1 } else { *otherwise }),
            OpKind::Jump(to) => Next::Go(*to),
            OpKind::Lookup { on, cases, default } => {
                let key = self.lookup_key(on);
                let hit = cases.iter().find(|(v, _)| Some(v.as_str()) == key.as_deref());
                Next::Go(hit.map_or(*default, |(_, at)| *at))
            }
            OpKind::Once { afterwards } => {
                if self.io.state.once.contains(&pc) {
                    Next::Go(*afterwards)
                } else {
                    self.io.state.once.push(pc);
                    Next::Go(pc + 1)
                }
            }
            OpKind::SetContext { key, value, append } => {
                let v = self.render_data(value);
                set_path(&mut self.io.state.context, &key.keys, v, *append);
                Next::Go(pc + 1)
            }
            OpKind::RemoveContext { key, value } => {
                let v = value.as_ref().map(|d| self.render_data(d));
                remove_path(&mut self.io.state.context, &key.keys, v.as_ref());
                Next::Go(pc + 1)
            }
            OpKind::Code(src) => {
                self.code(src);
                Next::Go(pc + 1)
            }
            OpKind::Http(h) => {
                self.turn.suspend = Some(self.http_call(h, pc));
                Next::Suspend
            }
            OpKind::Sleep(ms) => {
                self.turn.delay_ms += ms;
                Next::Go(pc + 1)
            }
            OpKind::GoTo { target, wait: false } => Next::Go(*target),
            OpKind::GoTo { target, wait: true } => Next::Wait(*target),
            OpKind::WaitForInput => Next::Wait(pc + 1),
            OpKind::Call { target } => {
                self.io.state.stack.push(pc + 1);
                Next::Go(*target)
            }
            OpKind::End { restart } => match self.io.state.stack.pop() {
                Some(back) => Next::Go(back),
                None => Next::Wait(*restart),
            },
            OpKind::Stop => {
                self.io.state.stack.clear();
                Next::Wait(0)
            }
            OpKind::Handover(h) => {
                let text = self.render(&h.text);
                let data = h.data.as_ref().map(|d| self.render_data(d));
                // `text` is optional (flows.md): a node without text or data says nothing.
                if !text.is_empty() || data.is_some() {
                    self.emit(text.clone(), data);
                }
                if let Some(t) = &h.cancel_text {
                    let text = self.render(t);
                    self.emit(text, None);
                }
                self.turn.handover = Some(HandoverRequest { text, cancel_intent: h.cancel_intent.clone() });
                Next::Wait(pc + 1)
            }
        }
    }

    fn lookup_key(&mut self, on: &LookupOn) -> Option<String> {
        match on {
            LookupOn::Text => self.io.input.get("text").and_then(Value::as_str).map(str::to_owned),
            LookupOn::Intent => self.io.input.get("intent").and_then(Value::as_str).map(str::to_owned),
            LookupOn::HandoverStatus => {
                self.io.input.pointer("/handover/status").and_then(Value::as_str).map(str::to_owned)
            }
            LookupOn::Script(e) => {
                let v = self.with_scope(|s, ev| e.eval(s, ev));
                v.map(|v| {
                    let mut out = String::new();
                    render(Some(&v), &mut out);
                    out
                })
            }
        }
    }

    fn code(&mut self, src: &str) {
        let io = &mut self.io;
        match io.scripts.code(src, io.input, &mut io.state.context, io.profile) {
            Ok(outputs) => {
                for (text, data) in outputs {
                    self.emit(text, Some(data));
                }
            }
            // The turn ends here (`cut_if_stopped`); nothing to tell the next nodes.
            Err(_) if io.scripts.stopped().is_some() => {}
            Err(e) => {
                // Cognigy: the error is put into the input, and execution goes on.
                set_input(self.io.input, "codeNodeError", json!({ "message": e.message }));
                self.warn(format!("code node failed: {}", e.shown));
            }
        }
        // A Code node may have replaced the objects wholesale; keep their shapes usable.
        if !self.io.state.context.is_object() {
            self.io.state.context = json!({});
        }
        if !self.io.profile.is_object() {
            *self.io.profile = json!({});
        }
    }

    fn http_call(&mut self, h: &HttpNode, pc: usize) -> HttpCall {
        let url = self.render(&h.url);
        let headers = h.headers.iter().map(|(k, t)| (k.clone(), self.render(t))).collect();
        let body = h.body.as_ref().map(|b| self.render_data(b));
        HttpCall { pc, method: h.method.clone(), url, headers, body, timeout_ms: h.timeout_ms }
    }

    fn say(&mut self, say: &Say, pc: usize) {
        let text = if say.texts.is_empty() {
            say.text.as_ref().map(|t| self.render(t)).unwrap_or_default()
        } else {
            let n = say.texts.len();
            let i = if say.random {
                (self.opts.random.wrapping_add((pc as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % n as u64) as usize
            } else {
                let next = self.io.state.linear.entry(pc).or_default();
                let i = *next % n;
                *next = (i + 1) % n;
                i
            };
            self.render(&say.texts[i])
        };
        let data = say.data.as_ref().map(|d| self.render_data(d));
        self.emit(text, data);
    }

    fn ask(&mut self, q: &Question, text: &Template) {
        let text = self.render(text);
        let data = q.data.as_ref().map(|d| self.render_data(d));
        self.emit(text, data);
    }

    fn emit(&mut self, text: String, data: Option<Value>) {
        let data = match data {
            Some(v @ Value::Object(_)) => v,
            // Outputs always carry an object; other values are wrapped rather than lost.
            Some(Value::Null) | None => Value::Object(Map::new()),
            Some(other) => json!({ "value": other }),
        };
        self.turn.outputs.push(Output { text, data, delay_ms: self.turn.delay_ms });
    }

    /// Checks the answer to a pending Question; `Some(pc)` to continue there, `None` when the
    /// turn ends waiting again.
    fn answer(&mut self, p: Pending) -> Option<usize> {
        let flow = self.flow;
        let OpKind::Question(q) = &flow.ops[p.pc].kind else {
            return Some(0);
        };
        self.node = self.flow.ops[p.pc].node;
        // The question takes (or asks again for) the answer: it ran in this turn.
        if self.opts.trace {
            self.trace(&flow.ops[p.pc]);
        }
        let node = &self.flow.nodes[self.node];
        let active = json!({ "nodeId": node.name(), "type": kind_name(&q.kind), "attempts": p.attempts });
        set_input(self.io.input, "activeQuestion", active);
        let result = match self.check(&q.kind) {
            Some(v) => v,
            None if q.max_attempts.is_some_and(|max| p.attempts + 1 >= max) => Value::Null,
            None => {
                self.ask(q, q.reprompt.as_ref().unwrap_or(&q.text));
                self.io.state.question = Some(Pending { pc: p.pc, attempts: p.attempts + 1 });
                self.io.state.entry = p.pc;
                return None;
            }
        };
        if let Some(loc) = &q.result_location {
            let target = match loc.root {
                Root::Profile => &mut *self.io.profile,
                _ => &mut self.io.state.context,
            };
            set_path(target, &loc.keys, result.clone(), false);
        }
        set_input(self.io.input, "result", result);
        Some(p.pc + 1)
    }

    /// The answer's value when it is valid for the question type.
    fn check(&mut self, kind: &QuestionKind) -> Option<Value> {
        let text = self.io.input.get("text").and_then(Value::as_str).unwrap_or("").to_owned();
        match kind {
            QuestionKind::Regex(pattern) => {
                let src = format!(
                    "(function () {{ const m = {}.exec(String(input.text ?? '')); return m ? m[0] : undefined; }})()",
                    super::nodes::regex_source(pattern)
                );
                self.with_scope(|s, ev| Expr::Script(src).eval(s, ev)).filter(|v| !v.is_null())
            }
            QuestionKind::Custom(cond) => self.test(cond).then(|| Value::String(text.trim().to_owned())),
            QuestionKind::Intent(allowed) => {
                let intent = self.io.input.get("intent").and_then(Value::as_str)?;
                (allowed.is_empty() || allowed.iter().any(|a| a == intent)).then(|| Value::String(intent.to_owned()))
            }
            QuestionKind::Data => match self.io.input.get("data") {
                Some(Value::Object(d)) if !d.is_empty() => Some(Value::Object(d.clone())),
                _ => None,
            },
            simple => check(simple, &text),
        }
    }
}

/// What a step does, in the words of the Flow file's node types.
fn op_label(k: &OpKind) -> &'static str {
    match k {
        OpKind::Say(_) => "say",
        OpKind::Question(_) => "question",
        OpKind::Branch { .. } => "if",
        OpKind::Jump(_) => "jump",
        OpKind::Lookup { .. } => "lookup",
        OpKind::Once { .. } => "once",
        OpKind::SetContext { .. } => "setContext",
        OpKind::RemoveContext { .. } => "removeContext",
        OpKind::Code(_) => "code",
        OpKind::Http(_) => "http",
        OpKind::Sleep(_) => "sleep",
        OpKind::GoTo { .. } => "goTo",
        OpKind::WaitForInput => "waitForInput",
        OpKind::Stop => "stop",
        OpKind::Call { .. } => "executeFlow",
        OpKind::End { .. } => "end",
        OpKind::Handover(_) => "handover",
    }
}

fn kind_name(k: &QuestionKind) -> &'static str {
    match k {
        QuestionKind::Text => "text",
        QuestionKind::Number => "number",
        QuestionKind::YesNo => "yesNo",
        QuestionKind::Email => "email",
        QuestionKind::Regex(_) => "regex",
        QuestionKind::Intent(_) => "intent",
        QuestionKind::Data => "data",
        QuestionKind::Custom(_) => "custom",
    }
}

/// The answer's value for the question types that need no script or NLU.
pub fn check(kind: &QuestionKind, text: &str) -> Option<Value> {
    let t = text.trim();
    match kind {
        QuestionKind::Number => {
            first_number(t).map(|n| if n.fract() == 0.0 && n.abs() < 9e15 { Value::from(n as i64) } else { json!(n) })
        }
        QuestionKind::YesNo => {
            // The first word decides (`Yes please`, `no, thanks`), its punctuation aside.
            let first = t.split(|c: char| c.is_whitespace() || ",.!?;:".contains(c)).find(|w| !w.is_empty());
            let w = first.unwrap_or("").to_lowercase();
            match w.as_str() {
                "yes" | "y" | "yeah" | "yep" | "true" | "sure" | "ok" => Some(Value::Bool(true)),
                "no" | "n" | "nope" | "nah" | "false" => Some(Value::Bool(false)),
                _ => None,
            }
        }
        QuestionKind::Email => find_email(t).map(|e| Value::String(e.to_owned())),
        _ => (!t.is_empty()).then(|| Value::String(t.to_owned())),
    }
}

/// The first word that looks like an e-mail address: `local@domain.tld`.
fn find_email(t: &str) -> Option<&str> {
    t.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| matches!(c, ',' | ';' | '.' | '!' | '?' | '<' | '>' | '(' | ')' | '"' | '\''))
        })
        .find(|w| {
            let Some((local, domain)) = w.split_once('@') else { return false };
            let ok = |c: char| c.is_alphanumeric() || "._%+-".contains(c);
            !local.is_empty()
                && local.chars().all(ok)
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-')
        })
}

/// The first number in a text: `"it's 4711, thanks"` → 4711; `"-2.5"` → -2.5.
fn first_number(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    let start = b.iter().position(u8::is_ascii_digit)?;
    let mut s = start;
    // `.5` and `-.5` are a half; a full stop after a word is not (`No.5` is 5).
    if s > 0 && b[s - 1] == b'.' && (s == 1 || !b[s - 2].is_ascii_alphanumeric()) {
        s -= 1;
    }
    if s > 0 && b[s - 1] == b'-' {
        s -= 1;
    }
    let mut end = start;
    while end < b.len() && b[end].is_ascii_digit() {
        end += 1;
    }
    if end + 1 < b.len() && (b[end] == b'.' || b[end] == b',') && b[end + 1].is_ascii_digit() {
        end += 1;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
    }
    t[s..end].replace(',', ".").parse().ok()
}

fn set_input(input: &mut Value, key: &str, v: Value) {
    if let Value::Object(m) = input {
        m.insert(key.to_owned(), v);
    }
}

/// Sets `keys` inside `root`, creating objects on the way; `append` adds to an array there
/// (Cognigy's array mode: a missing value becomes `[v]`, a single value `[old, v]`).
pub fn set_path(root: &mut Value, keys: &[String], v: Value, append: bool) {
    let mut cur = root;
    for k in keys {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur.as_object_mut().expect("made an object above").entry(k.clone()).or_insert(Value::Null);
    }
    if !append {
        *cur = v;
        return;
    }
    match cur {
        Value::Array(a) => a.push(v),
        Value::Null => *cur = Value::Array(vec![v]),
        old => *old = Value::Array(vec![old.take(), v]),
    }
}

/// Removes `keys` from `root`; with `value`, removes that value from the array there instead.
pub fn remove_path(root: &mut Value, keys: &[String], value: Option<&Value>) {
    let Some((last, parents)) = keys.split_last() else { return };
    let Some(parent) = parents.iter().try_fold(root, |v, k| v.get_mut(k)) else { return };
    let Some(obj) = parent.as_object_mut() else { return };
    match value {
        None => {
            obj.remove(last);
        }
        Some(v) => {
            if let Some(Value::Array(a)) = obj.get_mut(last) {
                a.retain(|x| x != v);
            }
        }
    }
}
