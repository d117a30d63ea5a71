//! The Flow model: a Flow file (flows.md) validated and compiled into a flat list of `Op`s.
//!
//! Why flat: a position in the Flow is then one number (`pc`), which is what a session stores as
//! its entrypoint and what a Question waits at. Nodes with children compile to jumps (an `if`
//! becomes `Branch` + then-block + `Jump` + else-block), so "run the branch, then continue after
//! the node" needs no stack. JavaScript sits behind `Expr::Script` and the `Code` op, evaluated
//! through the `Scripts` trait, so the model itself stays free of any engine (it only
//! syntax-checks).
//!
//! Here: the compiled types, loading, and the version. `compile.rs` walks the files (with the
//! config's JSON walker) and `nodes.rs` describes each node kind once: a new node kind is an
//! entry in `nodes::NODE_KINDS`, its compile function, an `OpKind` variant and its run arm.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::template::{DataTemplate, Expr, Path as VarPath, Template};
use crate::config::files;
use crate::config::walk::syntax_error;

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
    /// The first 8 bytes of the SHA-256 of the canonical Flow (every file, see [`version`]): a
    /// session saved against another version restarts at the top.
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
    /// Say the node's text and end the turn with a handover request; the Flow goes on at the
    /// next op when the handover ends.
    Handover(Box<HandoverNode>),
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
    /// `input.handover.status` (the turn that runs when a handover ends).
    HandoverStatus,
}

/// A `handover` node.
#[derive(Debug)]
pub struct HandoverNode {
    pub text: Template,
    pub data: Option<DataTemplate>,
    /// An intent (or a text equal to its name) that ends the handover as `cancelled`.
    pub cancel_intent: Option<String>,
    /// Said after `text`: how to get back to the bot.
    pub cancel_text: Option<Template>,
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

/// How the message about a Flow file that cannot be read begins (`check` says it at the
/// config's key when it is the endpoint's own Flow file).
pub const UNREADABLE: &str = "cannot read the Flow file";

impl Flow {
    /// Reads and compiles a Flow file and every Flow file it goes to or executes, all of which
    /// must be inside `root`, the config file's folder (see `config/files.rs`); `Err` has every
    /// problem found, with its JSON path.
    pub fn load(file: &Path, root: &Path) -> Result<Flow, FlowErrors> {
        let text = files::read(root, file).map_err(|e| vec![(String::new(), format!("{UNREADABLE}: {e}"))])?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| vec![syntax_error(&e)])?;
        Flow::compile(file, root, &doc)
    }

    /// Compiles an already parsed Flow document, and every Flow file it goes to or executes
    /// (read from disk, relative to `file`, inside `root`), into one op list.
    pub fn compile(file: &Path, root: &Path, doc: &Value) -> Result<Flow, FlowErrors> {
        super::compile::compile(file, root, doc)
    }
}

/// Names the op layout: change it whenever the same Flow would compile to other ops, so that the
/// positions stored in sessions are not read against a layout they were not made for.
const OPS_LAYOUT: &str = "hookflow ops 1";

/// The version of a Flow from the canonical text of its documents (main file first, as
/// [`canonical`] writes them, one per line): SHA-256, which unlike `DefaultHasher` stays the
/// same across Rust releases, so an upgrade does not restart every session. Only the first 8
/// bytes are kept: sessions store it as a number, and 64 bits are plenty to tell versions apart.
pub fn version(documents: &str) -> u64 {
    let digest = crate::crypto::sha256(format!("{OPS_LAYOUT}\n{documents}").as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// Appends `v` as canonical JSON: no whitespace, object keys sorted, so that reformatting a Flow
/// file or reordering its keys is not a new version. (Not relying on serde_json's map order,
/// which a feature of another crate could change.)
pub fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

impl Flow {
    /// Whether any node of the Flow (or of the Flows it reaches) is a `handover` node.
    pub fn has_handover(&self) -> bool {
        self.ops.iter().any(|op| matches!(op.kind, OpKind::Handover(_)))
    }
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
