//! Every node kind of flows.md, described once: its `type`, the keys it takes (besides `type`,
//! `id` and `label`) and the function that checks them and emits its ops. Adding a node kind is
//! one entry in [`NODE_KINDS`] and its function here (plus its `OpKind` and run arm).

use serde_json::Value;

use super::compile::Compiler;
use super::model::{
    DEFAULT_HTTP_TIMEOUT_MS, HandoverNode, HttpNode, LookupOn, MAX_HTTP_TIMEOUT_MS, MAX_SLEEP_MS, OpKind, Question,
    QuestionKind, Say,
};
use super::template::{DataTemplate, Path as VarPath, Root, Template};
use crate::config::checks;
use crate::config::walk::{Obj, Walk, index, join};

/// One node kind.
pub(super) struct NodeKind {
    /// The node's `type`.
    pub name: &'static str,
    /// Its keys besides `type`, `id` and `label`; any other is an error.
    pub keys: &'static [&'static str],
    /// Checks the node (`Obj`, its keys already checked) and emits its ops; `usize` is the node's
    /// index in `Flow::nodes`.
    pub compile: fn(&mut Compiler, &Obj, usize),
}

/// The node kinds, in the order `hookflow check` lists them.
#[rustfmt::skip]
pub(super) const NODE_KINDS: &[NodeKind] = &[
    NodeKind { name: "say", keys: &["text", "data", "texts", "textMode"], compile: Compiler::say },
    NodeKind {
        name: "question",
        keys: &["text", "data", "questionType", "reprompt", "resultLocation", "maxAttempts", "pattern", "intents",
                "validation"],
        compile: Compiler::question,
    },
    NodeKind { name: "if", keys: &["condition", "then", "else"], compile: Compiler::if_node },
    NodeKind { name: "lookup", keys: &["mode", "cases", "default", "value"], compile: Compiler::lookup },
    NodeKind { name: "once", keys: &["then", "afterwards"], compile: Compiler::once },
    NodeKind { name: "code", keys: &["code"], compile: Compiler::code },
    NodeKind { name: "setContext", keys: &["key", "value", "mode"], compile: Compiler::set_context },
    NodeKind { name: "removeContext", keys: &["key", "value", "mode"], compile: Compiler::remove_context },
    NodeKind {
        name: "http",
        keys: &["method", "url", "headers", "body", "contextKey", "timeoutMs", "abortOnError"],
        compile: Compiler::http,
    },
    NodeKind { name: "goTo", keys: &["target", "mode"], compile: Compiler::goto },
    NodeKind { name: "executeFlow", keys: &["flow", "target"], compile: Compiler::execute_flow },
    NodeKind { name: "waitForInput", keys: &[], compile: |c, _, node| { c.push(node, OpKind::WaitForInput); } },
    NodeKind { name: "stop", keys: &[], compile: |c, _, node| { c.push(node, OpKind::Stop); } },
    NodeKind { name: "sleep", keys: &["ms"], compile: Compiler::sleep },
    NodeKind { name: "handover", keys: &["text", "data", "cancelIntent", "cancelText"], compile: Compiler::handover },
];

const QUESTION_TYPES: &[&str] = &["text", "number", "yesNo", "email", "regex", "intent", "data", "custom"];
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

impl Compiler {
    fn say(&mut self, o: &Obj, node: usize) {
        let text = self.template(o, "text");
        let data = self.data_template(o, "data");
        let mut texts = Vec::new();
        if let Some((path, list)) = o.get("texts") {
            match list.as_array() {
                Some(items) if !items.is_empty() => {
                    texts =
                        items.iter().enumerate().filter_map(|(i, t)| self.template_at(&index(&path, i), t)).collect();
                }
                _ => self.error(&path, "expected a non-empty array of strings"),
            }
        }
        let random = self.opt_choice(o, "textMode", &["random", "linear"]) != Some("linear");
        if text.is_none() && data.is_none() && texts.is_empty() {
            self.error(&o.path, "a say node needs \"text\", \"texts\" or \"data\"");
        }
        self.push(node, OpKind::Say(Box::new(Say { text, data, texts, random })));
    }

    fn question(&mut self, o: &Obj, node: usize) {
        self.needs(o, "text", "the question to ask");
        let text = self.template(o, "text");
        let kind = match self.opt_choice(o, "questionType", QUESTION_TYPES).unwrap_or("text") {
            "number" => QuestionKind::Number,
            "yesNo" => QuestionKind::YesNo,
            "email" => QuestionKind::Email,
            "data" => QuestionKind::Data,
            "regex" => self.regex(o),
            "intent" => QuestionKind::Intent(self.opt(o, "intents", Self::strings).unwrap_or_default()),
            "custom" if o.value("validation").is_some() => QuestionKind::Custom(self.condition(o, "validation")),
            "custom" => {
                self.needs(o, "validation", "a condition, for questionType \"custom\"");
                QuestionKind::Text
            }
            _ => QuestionKind::Text,
        };
        let reprompt = self.template(o, "reprompt");
        let result_location = self.opt(o, "resultLocation", |c, path, v| match v.as_str().and_then(VarPath::parse) {
            Some(p) if p.root != Root::Input && !p.keys.is_empty() => Some(p),
            _ => {
                c.error(path, "expected a path like \"context.orderNumber\" or \"profile.email\"");
                None
            }
        });
        let max_attempts = self.opt(o, "maxAttempts", |c, p, v| c.integer(p, v, 1..=u64::MAX));
        let max_attempts = max_attempts.map(|n| n.min(u32::MAX.into()) as u32);
        let data = self.data_template(o, "data");
        let text = text.unwrap_or_else(|| Template::parse("").expect("an empty template parses"));
        let q = Question { text, data, kind, reprompt, result_location, max_attempts };
        self.push(node, OpKind::Question(Box::new(q)));
    }

    /// `questionType: "regex"`: the `pattern` (`^\\d{5}$`, or in Cognigy's `/^\\d{5}$/i` form),
    /// checked by the JavaScript engine that will run it.
    fn regex(&mut self, o: &Obj) -> QuestionKind {
        self.needs(o, "pattern", "a regular expression, for questionType \"regex\"");
        let Some(pattern) = self.opt(o, "pattern", |c, p, v| c.str(p, v)) else {
            return QuestionKind::Text;
        };
        let src = regex_source(pattern);
        if let Err(e) = crate::flow::script::check_regex(&src) {
            self.error(&o.at("pattern"), format!("not a valid regular expression: {e}"));
        }
        QuestionKind::Regex(pattern.to_owned())
    }

    fn if_node(&mut self, o: &Obj, node: usize) {
        let cond = self.condition(o, "condition");
        let branch = self.push(node, OpKind::Branch { cond, otherwise: 0 });
        self.child_block(o, "then", true);
        let jump = self.push(node, OpKind::Jump(0));
        self.patch(branch, self.here());
        self.child_block(o, "else", false);
        self.patch(jump, self.here());
    }

    fn once(&mut self, o: &Obj, node: usize) {
        let at = self.push(node, OpKind::Once { afterwards: 0 });
        self.child_block(o, "then", true);
        let jump = self.push(node, OpKind::Jump(0));
        self.patch(at, self.here());
        self.child_block(o, "afterwards", false);
        self.patch(jump, self.here());
    }

    fn lookup(&mut self, o: &Obj, node: usize) {
        let on = match self.req(o, "mode", |c, p, v| c.choice(p, v, &["intent", "text", "script", "handoverStatus"])) {
            Some("intent") => LookupOn::Intent,
            Some("handoverStatus") => LookupOn::HandoverStatus,
            Some("script") => LookupOn::Script(self.condition(o, "value")),
            _ => LookupOn::Text,
        };
        let at = self.push(node, OpKind::Lookup { on, cases: vec![], default: 0 });
        let mut cases = Vec::new();
        let mut jumps = Vec::new();
        let what = "an object from case value to an array of nodes";
        self.needs(o, "cases", what);
        if let Some(all) = self.opt(o, "cases", |c, p, v| c.typed(p, v, what, Value::as_object)) {
            for (value, nodes) in all {
                cases.push((value.clone(), self.here()));
                let path = join(&o.at("cases"), value);
                if let Some(nodes) = self.node_list(&path, nodes) {
                    self.block(nodes, &path);
                }
                jumps.push(self.push(node, OpKind::Jump(0)));
            }
        }
        let default = self.here();
        self.child_block(o, "default", false);
        let end = self.here();
        for j in jumps {
            self.patch(j, end);
        }
        self.patch_lookup(at, cases, default);
    }

    fn set_context(&mut self, o: &Obj, node: usize) {
        self.needs(o, "key", "a dotted key such as \"order.number\"");
        let key = self.opt(o, "key", Self::context_key);
        let value = self.data_template(o, "value").unwrap_or(DataTemplate::Plain(Value::Null));
        let append = self.opt_choice(o, "mode", &["simple", "array"]) == Some("array");
        let key = key.unwrap_or(VarPath { root: Root::Context, keys: vec![] });
        self.push(node, OpKind::SetContext { key, value, append });
    }

    fn remove_context(&mut self, o: &Obj, node: usize) {
        self.needs(o, "key", "a dotted key such as \"order.number\"");
        let Some(key) = self.opt(o, "key", Self::context_key) else { return };
        let value = match self.opt_choice(o, "mode", &["simple", "array"]) {
            Some("array") => {
                self.needs(o, "value", "the value to remove, in array mode");
                self.data_template(o, "value")
            }
            _ => None,
        };
        self.push(node, OpKind::RemoveContext { key, value });
    }

    fn code(&mut self, o: &Obj, node: usize) {
        self.needs(o, "code", "the JavaScript to run");
        let Some(code) = self.opt(o, "code", |c, p, v| c.str(p, v)) else { return };
        if let Err(e) = crate::flow::script::check_syntax(code, false) {
            self.error(&o.at("code"), format!("the code does not compile: {e}"));
        }
        self.push(node, OpKind::Code(code.to_owned()));
    }

    fn sleep(&mut self, o: &Obj, node: usize) {
        self.needs(o, "ms", "milliseconds to wait");
        if let Some(ms) = self.opt(o, "ms", |c, p, v| c.integer(p, v, 0..=MAX_SLEEP_MS)) {
            self.push(node, OpKind::Sleep(ms));
        }
    }

    fn http(&mut self, o: &Obj, node: usize) {
        let method = self.opt(o, "method", |c, path, v| {
            let method = c.str(path, v)?.to_ascii_uppercase();
            let known = HTTP_METHODS.contains(&method.as_str());
            if !known {
                c.error(path, format!("expected GET, POST, PUT, PATCH, DELETE or HEAD, got {method:?}"));
            }
            known.then_some(method)
        });
        self.needs(o, "url", "the URL to call (templates allowed)");
        let url = self.template(o, "url");
        // A URL without a template is checked now, not at each call.
        if let (Some(_), Some((path, Value::String(fixed)))) = (&url, o.get("url"))
            && !fixed.contains("{{")
            && let Err(why) = checks::check_http_url(fixed)
        {
            self.error(&path, format!("not a URL hookflow can call: {why}"));
        }
        let mut headers = Vec::new();
        let what = "an object of header names to strings (templates allowed)";
        if let Some((path, all)) = o.get("headers")
            && let Some(all) = self.typed(&path, all, what, Value::as_object)
        {
            for (name, value) in all {
                let at = join(&path, name);
                if !checks::is_header_name(name) {
                    self.error(&at, "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)");
                } else if let Some(why) = checks::reserved_header(name, false) {
                    self.error(&at, why);
                } else if let Some(t) = self.template_at(&at, value) {
                    headers.push((name.clone(), t));
                }
            }
        }
        let body = self.data_template(o, "body");
        self.needs(o, "contextKey", "where in context the answer goes, e.g. \"order\"");
        let context_key = self.opt(o, "contextKey", Self::context_key);
        let timeout_ms = self.opt_int(o, "timeoutMs", DEFAULT_HTTP_TIMEOUT_MS, 1..=MAX_HTTP_TIMEOUT_MS);
        let node_spec = HttpNode {
            method: method.unwrap_or_else(|| "GET".to_owned()),
            url: url.unwrap_or_else(|| Template::parse("").expect("an empty template parses")),
            headers,
            body,
            context_key: context_key.unwrap_or(VarPath { root: Root::Context, keys: vec![] }),
            timeout_ms,
            abort_on_error: self.opt_bool(o, "abortOnError", false),
        };
        self.push(node, OpKind::Http(Box::new(node_spec)));
    }

    /// `handover`: says `text` (and `cancelText`) when it has them, asks the engine to start a
    /// handover, and ends the turn; the Flow goes on below the node when the handover ends.
    fn handover(&mut self, o: &Obj, node: usize) {
        let text = self.template(o, "text").unwrap_or_else(|| Template::parse("").expect("an empty template parses"));
        let data = self.data_template(o, "data");
        let cancel_intent = self.opt(o, "cancelIntent", |c, p, v| c.str(p, v)).map(str::to_owned);
        let cancel_text = self.template(o, "cancelText");
        self.push(node, OpKind::Handover(Box::new(HandoverNode { text, data, cancel_intent, cancel_text })));
    }

    fn goto(&mut self, o: &Obj, node: usize) {
        let wait = self.opt_choice(o, "mode", &["continue", "waitForInput"]) == Some("waitForInput");
        let at = self.push(node, OpKind::GoTo { target: 0, wait });
        self.needs(o, "target", "a node id, \"flow.json#nodeId\" or \"flow.json\"");
        if let Some(target) = self.opt(o, "target", |c, p, v| c.str(p, v)) {
            self.jump_to(at, target, &o.at("target"));
        }
    }

    fn execute_flow(&mut self, o: &Obj, node: usize) {
        let at = self.push(node, OpKind::Call { target: 0 });
        self.needs(o, "flow", "the Flow file to run, e.g. \"orders.json\"");
        let Some(file) = self.opt(o, "flow", |c, p, v| c.str(p, v)) else { return };
        let id = self.opt(o, "target", |c, p, v| c.str(p, v)).map(str::to_owned);
        self.jump(at, Some(file), id, &o.at("flow"));
    }
}

/// The JavaScript that builds a question's regular expression: `pattern` as the source, or, in
/// the `/source/flags` form Cognigy authors write, its source and flags.
pub(super) fn regex_source(pattern: &str) -> String {
    let literal = pattern
        .strip_prefix('/')
        .and_then(|rest| rest.rsplit_once('/'))
        .filter(|(_, flags)| flags.chars().all(|c| "dgimsuyv".contains(c)));
    match literal {
        Some((source, flags)) => format!("new RegExp({}, {})", Value::from(source), Value::from(flags)),
        None => format!("new RegExp({})", Value::from(pattern)),
    }
}
