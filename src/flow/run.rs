//! The interpreter: one turn of a session, from its entrypoint to the next wait or end.
//!
//! Sans-IO: it takes the session state, the `input` object and the user's profile, and returns
//! the outputs; the worker does the reading, writing and queueing. Randomness (for `texts` in
//! random mode) comes in through `RunOptions`, so a turn is reproducible in tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::model::{Flow, Op, OpKind, Question, QuestionKind, Say};
use super::template::{Root, Scope};

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
    /// `Flow::version` these positions refer to.
    #[serde(default)]
    pub version: u64,
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
}

/// Per-turn settings.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub max_nodes: u32,
    /// Seed for `texts` in random mode.
    pub random: u64,
}

/// What a turn produced.
#[derive(Debug, Default)]
pub struct Turn {
    pub outputs: Vec<Output>,
    /// Set when the turn was cut short (node limit); the outputs so far are kept.
    pub error: Option<String>,
}

impl SessionState {
    /// A new session of `flow`.
    pub fn new(flow: &Flow) -> SessionState {
        SessionState { context: flow.default_context.clone(), version: flow.version, ..Default::default() }
    }
}

/// Runs one turn. `input` is the message's `input` object; `profile` the user's profile.
pub fn run(flow: &Flow, state: &mut SessionState, input: &mut Value, profile: &mut Value, opts: RunOptions) -> Turn {
    if state.version != flow.version {
        // The Flow file changed since this session was saved: its positions may point anywhere
        // now, so it starts again at the top, keeping its context.
        *state =
            SessionState { context: std::mem::take(&mut state.context), version: flow.version, ..Default::default() };
    }
    let mut m = Machine { flow, state, input, profile, opts, turn: Turn::default() };
    let start = m.state.entry;
    m.state.entry = 0;
    if let Some(p) = m.state.question.take() {
        if let Some(pc) = m.answer(p) {
            m.exec(pc);
        }
    } else {
        m.exec(start);
    }
    m.turn
}

struct Machine<'a> {
    flow: &'a Flow,
    state: &'a mut SessionState,
    input: &'a mut Value,
    profile: &'a mut Value,
    opts: RunOptions,
    turn: Turn,
}

/// What an op tells the loop to do next.
enum Next {
    Go(usize),
    /// End the turn; the next message starts at this pc.
    Wait(usize),
}

impl Machine<'_> {
    fn scope(&self) -> Scope<'_> {
        Scope { input: self.input, context: &self.state.context, profile: self.profile }
    }

    /// The loop: runs ops from `pc` until one ends the turn or the node limit is reached.
    fn exec(&mut self, mut pc: usize) {
        let mut steps = 0u32;
        loop {
            let op = &self.flow.ops[pc];
            if !matches!(op.kind, OpKind::Jump(_)) {
                steps += 1;
                if steps > self.opts.max_nodes {
                    let node = self.flow.nodes[op.node].name();
                    self.turn.error = Some(format!(
                        "the turn ran more than {} nodes (limits.maxNodesPerTurn) and was stopped at node {node}",
                        self.opts.max_nodes
                    ));
                    return;
                }
            }
            match self.step(op, pc) {
                Next::Go(next) => pc = next,
                Next::Wait(entry) => {
                    self.state.entry = entry;
                    return;
                }
            }
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
                self.state.question = Some(Pending { pc, attempts: 0 });
                Next::Wait(pc)
            }
            OpKind::Branch { cond, otherwise } => {
                if cond.test(&self.scope()) {
                    Next::Go(pc + 1)
                } else {
                    Next::Go(*otherwise)
                }
            }
            OpKind::Jump(to) => Next::Go(*to),
            OpKind::Lookup { on, cases, default } => {
                let key = match on {
                    super::model::LookupOn::Text => self.input.get("text"),
                    super::model::LookupOn::Intent => self.input.get("intent"),
                };
                let key = key.and_then(Value::as_str);
                let hit = cases.iter().find(|(v, _)| Some(v.as_str()) == key);
                Next::Go(hit.map_or(*default, |(_, at)| *at))
            }
            OpKind::Once { afterwards } => {
                if self.state.once.contains(&pc) {
                    Next::Go(*afterwards)
                } else {
                    self.state.once.push(pc);
                    Next::Go(pc + 1)
                }
            }
            OpKind::SetContext { key, value, append } => {
                let v = value.render(&self.scope());
                set_path(&mut self.state.context, &key.keys, v, *append);
                Next::Go(pc + 1)
            }
            OpKind::GoTo { target, wait: false } => Next::Go(*target),
            OpKind::GoTo { target, wait: true } => Next::Wait(*target),
            OpKind::WaitForInput => Next::Wait(pc + 1),
            OpKind::Stop | OpKind::End => Next::Wait(0),
        }
    }

    fn say(&mut self, say: &Say, pc: usize) {
        let text = if say.texts.is_empty() {
            say.text.as_ref().map(|t| t.render(&self.scope())).unwrap_or_default()
        } else {
            let n = say.texts.len();
            let i = if say.random {
                (self.opts.random.wrapping_add(pc as u64 * 0x9E37_79B9_7F4A_7C15) % n as u64) as usize
            } else {
                let next = self.state.linear.entry(pc).or_default();
                let i = *next % n;
                *next = (i + 1) % n;
                i
            };
            say.texts[i].render(&self.scope())
        };
        let data = say.data.as_ref().map(|d| d.render(&self.scope()));
        self.emit(text, data);
    }

    fn ask(&mut self, q: &Question, text: &super::template::Template) {
        let text = text.render(&self.scope());
        let data = q.data.as_ref().map(|d| d.render(&self.scope()));
        self.emit(text, data);
    }

    fn emit(&mut self, text: String, data: Option<Value>) {
        let data = match data {
            Some(v @ Value::Object(_)) => v,
            // Outputs always carry an object; other values are wrapped rather than lost.
            Some(Value::Null) | None => Value::Object(Map::new()),
            Some(other) => serde_json::json!({ "value": other }),
        };
        self.turn.outputs.push(Output { text, data });
    }

    /// Checks the answer to a pending Question; `Some(pc)` to continue there, `None` when the
    /// turn ends waiting again.
    fn answer(&mut self, p: Pending) -> Option<usize> {
        let OpKind::Question(q) = &self.flow.ops[p.pc].kind else {
            return Some(0);
        };
        let node = &self.flow.nodes[self.flow.ops[p.pc].node];
        set_input(
            self.input,
            "activeQuestion",
            serde_json::json!({ "nodeId": node.name(), "type": kind_name(q.kind) }),
        );
        let text = self.input.get("text").and_then(Value::as_str).unwrap_or("");
        let result = match check(q.kind, text) {
            Some(v) => v,
            None if q.max_attempts.is_some_and(|max| p.attempts + 1 >= max) => Value::Null,
            None => {
                self.ask(q, q.reprompt.as_ref().unwrap_or(&q.text));
                self.state.question = Some(Pending { pc: p.pc, attempts: p.attempts + 1 });
                self.state.entry = p.pc;
                return None;
            }
        };
        if let Some(loc) = &q.result_location {
            let target = match loc.root {
                Root::Profile => &mut *self.profile,
                _ => &mut self.state.context,
            };
            set_path(target, &loc.keys, result.clone(), false);
        }
        set_input(self.input, "result", result);
        Some(p.pc + 1)
    }
}

fn kind_name(k: QuestionKind) -> &'static str {
    match k {
        QuestionKind::Text => "text",
        QuestionKind::Number => "number",
        QuestionKind::YesNo => "yesNo",
    }
}

/// The answer's value when it is valid for the question type.
pub fn check(kind: QuestionKind, text: &str) -> Option<Value> {
    let t = text.trim();
    match kind {
        QuestionKind::Text => (!t.is_empty()).then(|| Value::String(t.to_owned())),
        QuestionKind::Number => first_number(t).map(|n| {
            serde_json::Number::from_f64(n).map_or(Value::Null, |num| {
                if n.fract() == 0.0 && n.abs() < 9e15 { Value::from(n as i64) } else { Value::Number(num) }
            })
        }),
        QuestionKind::YesNo => {
            let w = t.trim_end_matches(['.', '!', '?']).to_lowercase();
            match w.as_str() {
                "yes" | "y" | "yeah" | "yep" | "true" | "sure" | "ok" => Some(Value::Bool(true)),
                "no" | "n" | "nope" | "nah" | "false" => Some(Value::Bool(false)),
                _ => None,
            }
        }
    }
}

/// The first number in a text: `"it's 4711, thanks"` → 4711; `"-2.5"` → -2.5.
fn first_number(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    let start = b.iter().position(u8::is_ascii_digit)?;
    let mut s = start;
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
