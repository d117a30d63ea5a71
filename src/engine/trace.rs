//! The trace of a test-mode turn (`input.testMode`, the console's interaction panel): the nodes
//! that ran, the NLU result, the context before and after with what changed, the `http` calls
//! with their status and time, and the errors of expressions and Code nodes. Collected beside the
//! turn (`turn.rs` calls in at each step) and committed with it (`TurnRecord::trace`).
//!
//! A turn that waits at an `http` node is committed in parts, and each part has its trace: the
//! first ends with the call made, the next starts with its answer and the time it took (from the
//! checkpoint's commit to the answer's resume, so a wait for a free call thread counts too).

use std::time::Instant;

use serde_json::Value;

use crate::domain::Trace;
use crate::flow::{Flow, HttpCall, Output, Turn};
use crate::util::obj;

/// Largest trace kept; a bigger one (a huge context) keeps the changes only, then less.
const MAX_TRACE_BYTES: usize = 64 * 1024;
/// Most context changes listed.
const MAX_CHANGES: usize = 100;

/// A trace being collected.
pub(crate) struct TraceBuilder {
    started: Instant,
    /// When the part before (ended at an `http` node) was committed, for a resumed part.
    resumed_after_ms: Option<i64>,
    context_before: Value,
    nlu: Value,
    nodes: Vec<Value>,
    http: Vec<Value>,
    errors: Vec<String>,
}

impl TraceBuilder {
    /// Starts a trace at `context`; `resumed_after_ms` for a part that resumes at an `http` node.
    pub(crate) fn new(context: &Value, resumed_after_ms: Option<i64>) -> TraceBuilder {
        TraceBuilder {
            started: Instant::now(),
            resumed_after_ms,
            context_before: context.clone(),
            nlu: Value::Null,
            nodes: Vec::new(),
            http: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The NLU result, as written into `input` (nothing when no intent was looked for).
    pub(crate) fn nlu(&mut self, input: &Value) {
        let get = |k: &str| input.get(k).cloned().unwrap_or(Value::Null);
        let ranking = get("intentRanking");
        if !get("intent").is_null() || ranking.as_array().is_some_and(|r| !r.is_empty()) {
            self.nlu = obj(vec![
                ("intent", get("intent")),
                ("score", get("intentScore")),
                ("ranking", ranking),
                ("slots", get("slots")),
            ]);
        }
    }

    /// A part of the turn ran: its nodes and problems.
    pub(crate) fn part(&mut self, flow: &Flow, turn: &Turn) {
        for (node, kind) in &turn.nodes {
            self.nodes.push(obj(vec![("node", flow.nodes[*node].name().into()), ("type", (*kind).into())]));
        }
        self.errors.extend(turn.warnings.iter().cloned());
        self.errors.extend(turn.error.iter().cloned());
    }

    /// The turn stops at an `http` node: the request, to be answered in the next part.
    pub(crate) fn call(&mut self, call: &HttpCall) {
        self.http.push(obj(vec![
            ("method", call.method.as_str().into()),
            ("url", call.url.as_str().into()),
            ("state", "waiting".into()),
        ]));
    }

    /// The answer a resumed part starts from, at `now_ms`.
    pub(crate) fn answer(&mut self, call: &HttpCall, answer: &Value, now_ms: i64) {
        let ms = self.resumed_after_ms.map(|at| (now_ms - at).max(0));
        let get = |k: &str| answer.get(k).cloned().unwrap_or(Value::Null);
        self.http.push(obj(vec![
            ("method", call.method.as_str().into()),
            ("url", call.url.as_str().into()),
            ("state", "answered".into()),
            ("status", get("status")),
            ("error", get("error")),
            ("ms", ms.into()),
        ]));
    }

    /// The trace of the turn so far, ending at `context`, with its outputs.
    pub(crate) fn finish(&self, trace_id: &str, input: &Value, context: &Value, outputs: &[Output]) -> Trace {
        let mut outs = Vec::with_capacity(outputs.len());
        for o in outputs {
            outs.push(obj(vec![("text", o.text.as_str().into()), ("data", o.data.clone())]));
        }
        let mut changes = Vec::new();
        diff("", &self.context_before, context, &mut changes);
        let get = |k: &str| input.get(k).cloned().unwrap_or(Value::Null);
        let mut body = obj(vec![
            ("part", if self.resumed_after_ms.is_some() { "resumed" } else { "start" }.into()),
            ("input", obj(vec![("text", get("text")), ("data", get("data")), ("kind", get("kind"))])),
            ("nlu", self.nlu.clone()),
            ("nodes", self.nodes.clone().into()),
            ("http", self.http.clone().into()),
            ("errors", self.errors.clone().into()),
            ("outputs", outs.into()),
            ("contextChanges", changes.into()),
            ("contextBefore", self.context_before.clone()),
            ("contextAfter", context.clone()),
            ("ms", (self.started.elapsed().as_secs_f64() * 1000.0).into()),
        ]);
        let mut text = body.to_string();
        for cut in ["contextBefore", "contextAfter", "contextChanges", "outputs"] {
            if text.len() <= MAX_TRACE_BYTES {
                break;
            }
            body[cut] = Value::Null;
            body["truncated"] = true.into();
            text = body.to_string();
        }
        Trace { trace_id: trace_id.to_owned(), body: text }
    }
}

/// The paths (`a.b`) whose values differ between two contexts: objects are compared key by key,
/// anything else as a whole.
fn diff(path: &str, before: &Value, after: &Value, out: &mut Vec<Value>) {
    if out.len() >= MAX_CHANGES || before == after {
        return;
    }
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, bv) in b {
                diff(&join(path, k), bv, a.get(k).unwrap_or(&Value::Null), out);
            }
            for (k, av) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
                diff(&join(path, k), &Value::Null, av, out);
            }
        }
        _ => out.push(obj(vec![("path", path.into()), ("before", before.clone()), ("after", after.clone())])),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn context_changes_name_the_paths_that_differ() {
        let mut out = Vec::new();
        let before = json!({ "a": 1, "b": { "c": 2, "d": [1] }, "gone": true });
        let after = json!({ "a": 1, "b": { "c": 3, "d": [1, 2] }, "new": "x" });
        diff("", &before, &after, &mut out);
        let paths: Vec<&str> = out.iter().map(|c| c["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["b.c", "b.d", "gone", "new"]);
        assert_eq!(out[0], json!({ "path": "b.c", "before": 2, "after": 3 }));
        assert_eq!(out[2]["after"], Value::Null);
    }

    #[test]
    fn a_huge_trace_keeps_its_bounded_parts() {
        let big = json!({ "blob": "x".repeat(MAX_TRACE_BYTES) });
        let t = TraceBuilder::new(&json!({}), None);
        let trace = t.finish("t", &json!({ "text": "hi" }), &big, &[]);
        assert!(trace.body.len() <= MAX_TRACE_BYTES, "{}", trace.body.len());
        let body: Value = serde_json::from_str(&trace.body).unwrap();
        assert_eq!(body["truncated"], true);
        assert_eq!(body["input"]["text"], "hi");
    }
}
