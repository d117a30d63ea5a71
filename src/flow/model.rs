//! The Flow model: a Flow file (flows.md) validated and compiled into a flat list of `Op`s.
//!
//! Why flat: a position in the Flow is then one number (`pc`), which is what a session stores as
//! its entrypoint and what a Question waits at. Nodes with children compile to jumps (an `if`
//! becomes `Branch` + then-block + `Jump` + else-block), so "run the branch, then continue after
//! the node" needs no stack. A new node kind is a new `OpKind` variant plus its compile and run
//! arms; JavaScript sits behind `Expr::Script` and the `Code` op, evaluated through the
//! `Scripts` trait, so the model itself stays free of any engine (it only syntax-checks).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::template::{DataTemplate, Expr, Path as VarPath, Root, Template};
use crate::util::kind_of;

/// A loaded, validated Flow.
#[derive(Debug)]
pub struct Flow {
    pub file: PathBuf,
    pub name: String,
    pub default_context: Value,
    pub intents: Vec<Intent>,
    pub ops: Vec<Op>,
    /// One entry per node, for logs (`Op::node` indexes it).
    pub nodes: Vec<NodeInfo>,
    /// Hash of the file's text: a session saved against another version restarts at the top.
    pub version: u64,
}

/// An intent with its example sentences (for the built-in NLU).
#[derive(Debug, Clone)]
pub struct Intent {
    pub name: String,
    pub examples: Vec<String>,
    /// The examples prepared for the built-in NLU.
    pub prepared: Vec<crate::flow::intents::Example>,
}

/// Where a node came from: its `id`, or its JSON path when it has none.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: Option<String>,
    pub path: String,
}

impl NodeInfo {
    /// How logs name the node.
    pub fn name(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.path)
    }
}

/// One step of the compiled Flow.
#[derive(Debug)]
pub struct Op {
    /// Index into `Flow::nodes`.
    pub node: usize,
    pub kind: OpKind,
}

/// What a step does.
#[derive(Debug)]
pub enum OpKind {
    /// Emit one output.
    Say(Box<Say>),
    /// Emit the question and wait; check the answer on the next message.
    Question(Box<Question>),
    /// Go on at the next op when `cond` holds, else jump to `otherwise`.
    Branch { cond: Expr, otherwise: usize },
    /// Continue at `pc`.
    Jump(usize),
    /// Jump to the case whose value matches, else to `default`.
    Lookup { on: LookupOn, cases: Vec<(String, usize)>, default: usize },
    /// First time in the session: next op; afterwards: jump to `afterwards`.
    Once { afterwards: usize },
    /// Cognigy's Add To Context.
    SetContext { key: VarPath, value: DataTemplate, append: bool },
    /// Cognigy's Remove From Context: the key, or (array mode) `value` from the array at key.
    RemoveContext { key: VarPath, value: Option<DataTemplate> },
    /// A Code node's JavaScript body.
    Code(String),
    /// An HTTP request; a checkpoint (the worker performs it and resumes the turn).
    Http(Box<HttpNode>),
    /// The following outputs of this turn are delivered at least `ms` later.
    Sleep(u64),
    /// Jump; `wait` ends the turn so that the next message starts at `target`.
    GoTo { target: usize, wait: bool },
    /// End the turn; the next message starts at the next op.
    WaitForInput,
    /// End the turn; the next message starts at the top.
    Stop,
    /// Run another Flow (compiled into the same op list at `target`) and come back here.
    Call { target: usize },
    /// Past the last node of a Flow: return to the caller of `executeFlow` if any, else end the
    /// turn with the next message starting at `restart` (the top of this Flow).
    End { restart: usize },
}

/// What a Lookup switches on.
#[derive(Debug)]
pub enum LookupOn {
    /// `input.text`, exactly.
    Text,
    /// `input.intent`.
    Intent,
    /// The value of a script (`value`), as a string.
    Script(Expr),
}

/// An `http` node.
#[derive(Debug)]
pub struct HttpNode {
    pub method: String,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Option<DataTemplate>,
    /// Where `{status, headers, body}` or `{error}` goes, in `context`.
    pub context_key: VarPath,
    pub timeout_ms: u64,
    pub abort_on_error: bool,
}

/// A Say node.
#[derive(Debug)]
pub struct Say {
    pub text: Option<Template>,
    pub data: Option<DataTemplate>,
    /// `texts` with `textMode`: one of them per output.
    pub texts: Vec<Template>,
    pub random: bool,
}

/// A Question node.
#[derive(Debug)]
pub struct Question {
    pub text: Template,
    pub data: Option<DataTemplate>,
    pub kind: QuestionKind,
    pub reprompt: Option<Template>,
    pub result_location: Option<VarPath>,
    pub max_attempts: Option<u32>,
}

/// The answer a Question accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum QuestionKind {
    Text,
    Number,
    YesNo,
    Email,
    /// A JavaScript regular expression the text must match; the match is the result.
    Regex(String),
    /// An intent (of these, when given) must be recognised; its name is the result.
    Intent(Vec<String>),
    /// The message must carry a non-empty `data` object; it is the result.
    Data,
    /// A condition (JavaScript or path) that must hold; the text is the result.
    Custom(Expr),
}

/// Longest `sleep` (flows.md).
pub const MAX_SLEEP_MS: u64 = 10_000;
/// `http` node timeout when none is given (flows.md).
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 8_000;
/// Longest `http` node timeout accepted.
pub const MAX_HTTP_TIMEOUT_MS: u64 = 120_000;

/// Problems found in a Flow file: `(place, message)`.
pub type FlowErrors = Vec<(String, String)>;

/// Node types of flows.md that this version does not run yet; named so the error says so.
const PLANNED_TYPES: &[&str] = &[];
const NODE_TYPES: &[&str] = &[
    "say",
    "question",
    "if",
    "lookup",
    "once",
    "code",
    "setContext",
    "removeContext",
    "http",
    "goTo",
    "executeFlow",
    "waitForInput",
    "stop",
    "sleep",
];

impl Flow {
    /// Reads and compiles a Flow file; `Err` has every problem found, with its JSON path.
    pub fn load(file: &Path) -> Result<Flow, FlowErrors> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| vec![(String::new(), format!("cannot read the Flow file: {e}"))])?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| vec![(format!("line {}, column {}", e.line(), e.column()), format!("invalid JSON: {e}"))])?;
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        Flow::compile(file, &value, h.finish())
    }

    /// Compiles an already parsed Flow document, and every Flow file it goes to or executes
    /// (read from disk, relative to `file`), into one op list.
    pub fn compile(file: &Path, doc: &Value, version: u64) -> Result<Flow, FlowErrors> {
        let mut c = Compiler { files: vec![file.to_owned()], version, ..Compiler::default() };
        let top = c.object(doc, "");
        c.known_keys(top, "", &["name", "defaultContext", "intents", "nodes", "description"]);
        let name = top.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("flow").to_owned();
        let default_context = match top.and_then(|m| m.get("defaultContext")) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                c.err("defaultContext", "expected an object");
                Value::Null
            }
        };
        let intents = c.intents(top.and_then(|m| m.get("intents")));
        let mut intents = intents;
        c.starts.push(0);
        match top.and_then(|m| m.get("nodes")) {
            Some(Value::Array(nodes)) => c.block(nodes, "nodes"),
            _ => c.err("nodes", "required: an array of nodes"),
        }
        c.push(0, OpKind::End { restart: 0 });
        // Flow files reached by goTo / executeFlow, each compiled once after the main one.
        let mut next = 1;
        while next < c.files.len() {
            intents.extend(c.sub_flow(next));
            next += 1;
        }
        c.resolve_gotos();
        if !c.errors.is_empty() {
            return Err(c.errors);
        }
        Ok(Flow {
            file: file.to_owned(),
            name,
            default_context,
            intents,
            ops: c.ops,
            nodes: c.nodes,
            version: c.version,
        })
    }
}

#[derive(Default)]
struct Compiler {
    ops: Vec<Op>,
    nodes: Vec<NodeInfo>,
    /// Node id → pc, per file (index into `files`).
    ids: HashMap<(usize, String), usize>,
    /// Jumps to resolve once every file is compiled: (op index, file, node id or None for the
    /// top of the file, place).
    gotos: Vec<(usize, usize, Option<String>, String)>,
    errors: FlowErrors,
    /// The Flow files, main first; `file` is the one being compiled.
    files: Vec<PathBuf>,
    file: usize,
    /// First pc of each file.
    starts: Vec<usize>,
    /// Hash of every file's text.
    version: u64,
}

impl Compiler {
    fn err(&mut self, place: &str, msg: impl Into<String>) {
        self.errors.push((place.to_owned(), msg.into()));
    }

    fn object<'v>(&mut self, v: &'v Value, place: &str) -> Option<&'v Map<String, Value>> {
        let m = v.as_object();
        if m.is_none() {
            self.err(place, format!("expected an object, got {}", kind_of(v)));
        }
        m
    }

    fn known_keys(&mut self, m: Option<&Map<String, Value>>, place: &str, known: &[&str]) {
        for k in m.into_iter().flat_map(|m| m.keys()) {
            if !known.contains(&k.as_str()) {
                let hint = crate::util::suggest(k, known);
                self.err(&join(place, k), format!("unknown key \"{k}\"{hint}"));
            }
        }
    }

    fn push(&mut self, node: usize, kind: OpKind) -> usize {
        self.ops.push(Op { node, kind });
        self.ops.len() - 1
    }

    fn intents(&mut self, v: Option<&Value>) -> Vec<Intent> {
        let Some(v) = v.filter(|v| !v.is_null()) else { return vec![] };
        let Some(list) = v.as_array() else {
            self.err("intents", "expected an array of {\"name\", \"examples\"}");
            return vec![];
        };
        let mut out = Vec::new();
        for (i, it) in list.iter().enumerate() {
            let place = format!("intents[{i}]");
            let m = self.object(it, &place);
            self.known_keys(m, &place, &["name", "examples"]);
            let name = m.and_then(|m| m.get("name")).and_then(Value::as_str);
            let examples: Option<Vec<String>> = m
                .and_then(|m| m.get("examples"))
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|e| e.as_str().map(str::to_owned)).collect());
            match (name, examples) {
                (Some(n), Some(ex)) => {
                    out.push(Intent { name: n.to_owned(), prepared: crate::flow::intents::prepare(&ex), examples: ex })
                }
                _ if m.is_some() => {
                    self.err(&place, "needs \"name\" (a string) and \"examples\" (an array of strings)")
                }
                _ => {}
            }
        }
        out
    }

    fn block(&mut self, nodes: &[Value], place: &str) {
        for (i, n) in nodes.iter().enumerate() {
            self.node(n, &format!("{place}[{i}]"));
        }
    }

    fn child_block(&mut self, m: &Map<String, Value>, key: &str, place: &str, required: bool) {
        match m.get(key) {
            Some(Value::Array(nodes)) => self.block(nodes, &join(place, key)),
            None | Some(Value::Null) if !required => {}
            _ => self.err(&join(place, key), "required: an array of nodes"),
        }
    }

    fn node(&mut self, v: &Value, place: &str) {
        let Some(m) = self.object(v, place) else { return };
        let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
        let node = self.nodes.len();
        let id = m.get("id").and_then(Value::as_str).map(str::to_owned);
        if let Some(id) = &id
            && self.ids.insert((self.file, id.clone()), self.ops.len()).is_some()
        {
            self.err(&join(place, "id"), format!("duplicate node id \"{id}\": ids must be unique in a Flow"));
        }
        self.nodes.push(NodeInfo { id, path: place.to_owned() });
        let common = ["type", "id", "label"];
        let keys: &[&str] = match ty {
            "say" => &["text", "data", "texts", "textMode"],
            "question" => &[
                "text",
                "data",
                "questionType",
                "reprompt",
                "resultLocation",
                "maxAttempts",
                "pattern",
                "intents",
                "validation",
            ],
            "code" => &["code"],
            "removeContext" => &["key", "value", "mode"],
            "http" => &["method", "url", "headers", "body", "contextKey", "timeoutMs", "abortOnError"],
            "sleep" => &["ms"],
            "executeFlow" => &["flow", "target"],
            "if" => &["condition", "then", "else"],
            "lookup" => &["mode", "cases", "default", "value"],
            "once" => &["then", "afterwards"],
            "setContext" => &["key", "value", "mode"],
            "goTo" => &["target", "mode"],
            "waitForInput" | "stop" => &[],
            t if PLANNED_TYPES.contains(&t) => {
                return self.err(
                    &join(place, "type"),
                    format!("node type \"{t}\" is not supported by this version of hookflow yet"),
                );
            }
            t => {
                let hint = crate::util::suggest(t, NODE_TYPES);
                let msg = format!("unknown node type \"{t}\"{hint}; known types: {}", NODE_TYPES.join(", "));
                return self.err(&join(place, "type"), msg);
            }
        };
        let all: Vec<&str> = common.iter().chain(keys).copied().collect();
        self.known_keys(Some(m), place, &all);
        match ty {
            "say" => self.say(m, node, place),
            "question" => self.question(m, node, place),
            "if" => self.if_node(m, node, place),
            "lookup" => self.lookup(m, node, place),
            "once" => self.once(m, node, place),
            "setContext" => self.set_context(m, node, place),
            "removeContext" => self.remove_context(m, node, place),
            "code" => self.code(m, node, place),
            "http" => self.http(m, node, place),
            "sleep" => self.sleep(m, node, place),
            "goTo" => self.goto(m, node, place),
            "executeFlow" => self.execute_flow(m, node, place),
            "waitForInput" => drop(self.push(node, OpKind::WaitForInput)),
            _ => drop(self.push(node, OpKind::Stop)),
        }
    }

    fn template(&mut self, m: &Map<String, Value>, key: &str, place: &str) -> Option<Template> {
        match m.get(key)? {
            Value::String(s) => match Template::parse(s) {
                Ok(t) => {
                    self.check_scripts(t.scripts(), &join(place, key));
                    Some(t)
                }
                Err(e) => {
                    self.err(&join(place, key), e);
                    None
                }
            },
            Value::Null => None,
            other => {
                self.err(&join(place, key), format!("expected a string, got {}", kind_of(other)));
                None
            }
        }
    }

    fn data_template(&mut self, v: Option<&Value>, place: &str) -> Option<DataTemplate> {
        let v = v.filter(|v| !v.is_null())?;
        match DataTemplate::parse(v) {
            Ok(d) => {
                self.check_scripts(d.scripts().into_iter(), place);
                Some(d)
            }
            Err(e) => {
                self.err(place, e);
                None
            }
        }
    }

    /// JavaScript expressions are compiled (not run) so that syntax errors are found here.
    fn check_scripts<'s>(&mut self, scripts: impl Iterator<Item = &'s str>, place: &str) {
        for s in scripts {
            if let Err(e) = crate::flow::script::check_syntax(s, true) {
                self.err(place, format!("the expression {s:?} does not compile: {e}"));
            }
        }
    }

    fn say(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let text = self.template(m, "text", place);
        let data = self.data_template(m.get("data"), &join(place, "data"));
        let mut texts = Vec::new();
        if let Some(list) = m.get("texts").filter(|v| !v.is_null()) {
            match list.as_array() {
                Some(a) if !a.is_empty() => {
                    for (i, t) in a.iter().enumerate() {
                        match t.as_str().map(Template::parse) {
                            Some(Ok(t)) => {
                                self.check_scripts(t.scripts(), &format!("{place}.texts[{i}]"));
                                texts.push(t);
                            }
                            _ => self.err(&format!("{place}.texts[{i}]"), "expected a template string"),
                        }
                    }
                }
                _ => self.err(&join(place, "texts"), "expected a non-empty array of strings"),
            }
        }
        let random = match m.get("textMode").and_then(Value::as_str) {
            None | Some("random") => true,
            Some("linear") => false,
            Some(o) => {
                self.err(&join(place, "textMode"), format!("\"{o}\" is not a text mode; use \"random\" or \"linear\""));
                true
            }
        };
        if text.is_none() && data.is_none() && texts.is_empty() {
            self.err(place, "a say node needs \"text\", \"texts\" or \"data\"");
        }
        self.push(node, OpKind::Say(Box::new(Say { text, data, texts, random })));
    }

    fn question(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let text = self.template(m, "text", place);
        if text.is_none() {
            self.err(&join(place, "text"), "required: the question to ask");
        }
        let kind = match m.get("questionType").and_then(Value::as_str).unwrap_or("text") {
            "text" => QuestionKind::Text,
            "number" => QuestionKind::Number,
            "yesNo" => QuestionKind::YesNo,
            "email" => QuestionKind::Email,
            "data" => QuestionKind::Data,
            "regex" => match m.get("pattern").and_then(Value::as_str) {
                Some(p) => {
                    let src = format!("new RegExp({})", Value::String(p.to_owned()));
                    if let Err(e) = crate::flow::script::check_regex(&src) {
                        self.err(&join(place, "pattern"), format!("not a valid regular expression: {e}"));
                    }
                    QuestionKind::Regex(p.to_owned())
                }
                None => {
                    self.err(&join(place, "pattern"), "required for questionType \"regex\": a regular expression");
                    QuestionKind::Text
                }
            },
            "intent" => {
                let intents = m.get("intents").and_then(Value::as_array);
                let names = intents.map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect());
                QuestionKind::Intent(names.unwrap_or_default())
            }
            "custom" => match m.get("validation") {
                Some(v) => QuestionKind::Custom(self.condition(Some(v), &join(place, "validation"))),
                None => {
                    self.err(&join(place, "validation"), "required for questionType \"custom\": a condition");
                    QuestionKind::Text
                }
            },
            t => {
                let kinds = ["text", "number", "yesNo", "email", "regex", "intent", "data", "custom"];
                let hint = crate::util::suggest(t, &kinds);
                self.err(
                    &join(place, "questionType"),
                    format!("\"{t}\" is not a question type{hint}; use one of {}", kinds.join(", ")),
                );
                QuestionKind::Text
            }
        };
        let reprompt = self.template(m, "reprompt", place);
        let result_location = m.get("resultLocation").and_then(|v| match v.as_str().and_then(VarPath::parse) {
            Some(p) if p.root != Root::Input && !p.keys.is_empty() => Some(p),
            _ => {
                self.err(
                    &join(place, "resultLocation"),
                    "expected a path like \"context.orderNumber\" or \"profile.email\"",
                );
                None
            }
        });
        let max_attempts = m.get("maxAttempts").and_then(|v| match v.as_u64() {
            Some(n) if n >= 1 => Some(n.min(u32::MAX as u64) as u32),
            _ => {
                self.err(&join(place, "maxAttempts"), "expected a whole number of at least 1");
                None
            }
        });
        let data = self.data_template(m.get("data"), &join(place, "data"));
        let text = text.unwrap_or_else(|| Template::parse("").expect("an empty template parses"));
        let q = Question { text, data, kind, reprompt, result_location, max_attempts };
        self.push(node, OpKind::Question(Box::new(q)));
    }

    fn condition(&mut self, v: Option<&Value>, place: &str) -> Expr {
        match v {
            Some(Value::String(s)) => {
                let e = Expr::parse(s);
                self.check_scripts(e.script().into_iter(), place);
                e
            }
            Some(Value::Bool(b)) => {
                Expr::Compare { path: VarPath { root: Root::Input, keys: vec![] }, equal: !*b, value: Value::Null }
            }
            _ => {
                self.err(place, "required: a condition such as \"context.ok\" or \"input.text == 'yes'\"");
                Expr::Script(String::new())
            }
        }
    }

    fn if_node(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let cond = self.condition(m.get("condition"), &join(place, "condition"));
        let branch = self.push(node, OpKind::Branch { cond, otherwise: 0 });
        self.child_block(m, "then", place, true);
        let jump = self.push(node, OpKind::Jump(0));
        self.patch(branch, self.ops.len());
        self.child_block(m, "else", place, false);
        self.patch(jump, self.ops.len());
    }

    fn once(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let at = self.push(node, OpKind::Once { afterwards: 0 });
        self.child_block(m, "then", place, true);
        let jump = self.push(node, OpKind::Jump(0));
        self.patch(at, self.ops.len());
        self.child_block(m, "afterwards", place, false);
        self.patch(jump, self.ops.len());
    }

    fn lookup(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let on = match m.get("mode").and_then(Value::as_str) {
            Some("text") => LookupOn::Text,
            Some("intent") => LookupOn::Intent,
            Some("script") => LookupOn::Script(self.condition(m.get("value"), &join(place, "value"))),
            _ => {
                self.err(&join(place, "mode"), "expected \"intent\", \"text\" or \"script\"");
                LookupOn::Text
            }
        };
        let at = self.push(node, OpKind::Lookup { on, cases: vec![], default: 0 });
        let mut cases = Vec::new();
        let mut jumps = Vec::new();
        match m.get("cases") {
            Some(Value::Object(cs)) => {
                for (value, nodes) in cs {
                    cases.push((value.clone(), self.ops.len()));
                    let cplace = format!("{place}.cases.{value}");
                    match nodes.as_array() {
                        Some(nodes) => self.block(nodes, &cplace),
                        None => self.err(&cplace, "expected an array of nodes"),
                    }
                    jumps.push(self.push(node, OpKind::Jump(0)));
                }
            }
            _ => self.err(&join(place, "cases"), "required: an object from case value to an array of nodes"),
        }
        let default = self.ops.len();
        self.child_block(m, "default", place, false);
        let end = self.ops.len();
        for j in jumps {
            self.patch(j, end);
        }
        if let OpKind::Lookup { cases: c, default: d, .. } = &mut self.ops[at].kind {
            *c = cases;
            *d = default;
        }
    }

    fn set_context(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let key = match m.get("key").and_then(Value::as_str) {
            Some(k) => VarPath::parse(&format!("context.{k}")),
            None => None,
        };
        if key.is_none() {
            self.err(&join(place, "key"), "required: a dotted key such as \"order.number\"");
        }
        let value =
            self.data_template(m.get("value"), &join(place, "value")).unwrap_or(DataTemplate::Plain(Value::Null));
        let append = match m.get("mode").and_then(Value::as_str) {
            None | Some("simple") => false,
            Some("array") => true,
            Some(o) => {
                self.err(&join(place, "mode"), format!("\"{o}\" is not a mode; use \"simple\" or \"array\""));
                false
            }
        };
        let key = key.unwrap_or(VarPath { root: Root::Context, keys: vec![] });
        self.push(node, OpKind::SetContext { key, value, append });
    }

    fn remove_context(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let key = m.get("key").and_then(Value::as_str).and_then(|k| VarPath::parse(&format!("context.{k}")));
        let Some(key) = key else {
            return self.err(&join(place, "key"), "required: a dotted key such as \"order.number\"");
        };
        let value = match m.get("mode").and_then(Value::as_str) {
            None | Some("simple") => None,
            Some("array") => {
                let v = self.data_template(m.get("value"), &join(place, "value"));
                if v.is_none() {
                    self.err(&join(place, "value"), "required in array mode: the value to remove");
                }
                v
            }
            Some(o) => {
                self.err(&join(place, "mode"), format!("\"{o}\" is not a mode; use \"simple\" or \"array\""));
                None
            }
        };
        self.push(node, OpKind::RemoveContext { key, value });
    }

    fn code(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let Some(code) = m.get("code").and_then(Value::as_str) else {
            return self.err(&join(place, "code"), "required: the JavaScript to run");
        };
        if let Err(e) = crate::flow::script::check_syntax(code, false) {
            self.err(&join(place, "code"), format!("the code does not compile: {e}"));
        }
        self.push(node, OpKind::Code(code.to_owned()));
    }

    fn sleep(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        match m.get("ms").and_then(Value::as_u64) {
            Some(ms) if ms <= MAX_SLEEP_MS => drop(self.push(node, OpKind::Sleep(ms))),
            _ => self.err(&join(place, "ms"), format!("required: milliseconds, at most {MAX_SLEEP_MS}")),
        }
    }

    fn http(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let method = m.get("method").and_then(Value::as_str).unwrap_or("GET").to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
            self.err(
                &join(place, "method"),
                format!("\"{method}\" is not a method; use GET, POST, PUT, PATCH, DELETE or HEAD"),
            );
        }
        let url = self.template(m, "url", place);
        if url.is_none() {
            self.err(&join(place, "url"), "required: the URL to call (templates allowed)");
        }
        let mut headers = Vec::new();
        match m.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) => {
                for (k, v) in h {
                    match v.as_str().map(Template::parse) {
                        Some(Ok(t)) => {
                            self.check_scripts(t.scripts(), &format!("{place}.headers.{k}"));
                            headers.push((k.clone(), t));
                        }
                        _ => self.err(&format!("{place}.headers.{k}"), "expected a string (templates allowed)"),
                    }
                }
            }
            Some(_) => self.err(&join(place, "headers"), "expected an object of header names to strings"),
        }
        let body = self.data_template(m.get("body"), &join(place, "body"));
        let context_key =
            m.get("contextKey").and_then(Value::as_str).and_then(|k| VarPath::parse(&format!("context.{k}")));
        if context_key.is_none() {
            self.err(&join(place, "contextKey"), "required: where in context the answer goes, e.g. \"order\"");
        }
        let timeout_ms = match m.get("timeoutMs") {
            None | Some(Value::Null) => DEFAULT_HTTP_TIMEOUT_MS,
            Some(v) => v.as_u64().filter(|t| (1..=MAX_HTTP_TIMEOUT_MS).contains(t)).unwrap_or_else(|| {
                self.err(&join(place, "timeoutMs"), format!("expected milliseconds from 1 to {MAX_HTTP_TIMEOUT_MS}"));
                DEFAULT_HTTP_TIMEOUT_MS
            }),
        };
        let abort_on_error = m.get("abortOnError").and_then(Value::as_bool).unwrap_or(false);
        let node_spec = HttpNode {
            method,
            url: url.unwrap_or_else(|| Template::parse("").expect("an empty template parses")),
            headers,
            body,
            context_key: context_key.unwrap_or(VarPath { root: Root::Context, keys: vec![] }),
            timeout_ms,
            abort_on_error,
        };
        self.push(node, OpKind::Http(Box::new(node_spec)));
    }

    fn goto(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let wait = match m.get("mode").and_then(Value::as_str) {
            None | Some("continue") => false,
            Some("waitForInput") => true,
            Some(o) => {
                self.err(&join(place, "mode"), format!("\"{o}\" is not a mode; use \"continue\" or \"waitForInput\""));
                false
            }
        };
        let at = self.push(node, OpKind::GoTo { target: 0, wait });
        match m.get("target").and_then(Value::as_str) {
            Some(t) => self.jump_to(at, t, &join(place, "target")),
            None => self.err(&join(place, "target"), "required: a node id, \"flow.json#nodeId\" or \"flow.json\""),
        }
    }

    fn execute_flow(&mut self, m: &Map<String, Value>, node: usize, place: &str) {
        let at = self.push(node, OpKind::Call { target: 0 });
        let Some(file) = m.get("flow").and_then(Value::as_str) else {
            return self.err(&join(place, "flow"), "required: the Flow file to run, e.g. \"orders.json\"");
        };
        let target = match m.get("target").and_then(Value::as_str) {
            Some(id) => format!("{file}#{id}"),
            None => file.to_owned(),
        };
        self.jump_to(at, &target, &join(place, "flow"));
    }

    /// Records a jump to `target`: `nodeId` in this file, `file.json#nodeId` or `file.json`.
    fn jump_to(&mut self, at: usize, target: &str, place: &str) {
        let (file, id) = match target.split_once('#') {
            Some((f, id)) => (Some(f), Some(id.to_owned())),
            None if target.ends_with(".json") => (Some(target), None),
            None => (None, Some(target.to_owned())),
        };
        let file = match file {
            None => self.file,
            Some(f) => self.file_index(f),
        };
        self.gotos.push((at, file, id, place.to_owned()));
    }

    /// The index of a Flow file named relative to the current one, adding it to the queue.
    fn file_index(&mut self, name: &str) -> usize {
        let dir = self.files[self.file].parent().map(Path::to_path_buf).unwrap_or_default();
        let path = dir.join(name);
        if let Some(i) = self.files.iter().position(|f| *f == path) {
            return i;
        }
        self.files.push(path);
        self.files.len() - 1
    }

    /// Compiles the Flow file `index` (reached by goTo / executeFlow); returns its intents.
    fn sub_flow(&mut self, index: usize) -> Vec<Intent> {
        self.file = index;
        self.starts.push(self.ops.len());
        let path = self.files[index].clone();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.err(&name, format!("cannot read the Flow file {}: {e}", path.display()));
                return vec![];
            }
        };
        let mut h = DefaultHasher::new();
        (self.version, &text).hash(&mut h);
        self.version = h.finish();
        let doc: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                self.err(&format!("{name} line {}, column {}", e.line(), e.column()), format!("invalid JSON: {e}"));
                return vec![];
            }
        };
        let top = self.object(&doc, &name);
        self.known_keys(top, &name, &["name", "defaultContext", "intents", "nodes", "description"]);
        let intents = self.intents(top.and_then(|m| m.get("intents")));
        match top.and_then(|m| m.get("nodes")) {
            Some(Value::Array(nodes)) => self.block(nodes, &format!("{name} nodes")),
            _ => self.err(&format!("{name} nodes"), "required: an array of nodes"),
        }
        let start = self.starts[index];
        let node = self.nodes.len().saturating_sub(1);
        self.push(node, OpKind::End { restart: start });
        intents
    }

    fn resolve_gotos(&mut self) {
        for (at, file, id, place) in std::mem::take(&mut self.gotos) {
            let Some(&start) = self.starts.get(file) else { continue };
            let pc = match &id {
                None => Some(start),
                Some(id) => self.ids.get(&(file, id.clone())).copied(),
            };
            let Some(pc) = pc else {
                let id = id.unwrap_or_default();
                self.err(&place, format!("no node has the id \"{id}\""));
                continue;
            };
            match &mut self.ops[at].kind {
                OpKind::GoTo { target, .. } | OpKind::Call { target } => *target = pc,
                _ => unreachable!("only goTo and executeFlow are resolved"),
            }
        }
    }

    /// Sets the jump target of a `Branch`, `Jump` or `Once` emitted earlier.
    fn patch(&mut self, at: usize, to: usize) {
        match &mut self.ops[at].kind {
            OpKind::Branch { otherwise, .. } => *otherwise = to,
            OpKind::Once { afterwards } => *afterwards = to,
            OpKind::Jump(t) => *t = to,
            _ => unreachable!("only jumps are patched"),
        }
    }
}

fn join(place: &str, key: &str) -> String {
    if place.is_empty() { key.to_owned() } else { format!("{place}.{key}") }
}

/// Counts of node kinds, for `hookflow check`'s summary.
pub fn summary(flow: &Flow) -> String {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &flow.ops {
        let k = match op.kind {
            OpKind::Say(_) => "say",
            OpKind::Question(_) => "question",
            _ => continue,
        };
        *n.entry(k).or_default() += 1;
    }
    format!(
        "{} nodes ({} say, {} question), {} intents",
        flow.nodes.len(),
        n.get("say").unwrap_or(&0),
        n.get("question").unwrap_or(&0),
        flow.intents.len()
    )
}
