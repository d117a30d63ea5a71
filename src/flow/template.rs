//! CognigyScript templates and conditions, parsed once when the Flow is loaded.
//!
//! `{{input.text}}` and other dotted paths (and simple comparisons of them) are resolved
//! directly on the JSON values: most Flows are made only of those, and they must not pay for a
//! script engine. Anything else is `Expr::Script`, JavaScript handed to a `Scripts` evaluator
//! (QuickJS in production, see `script.rs`). An expression that throws renders as nothing; the
//! error is collected by the `Evaluator` for the caller to log with the node id.

use std::borrow::Cow;

use serde_json::Value;

/// The memory a template or condition sees (flows.md, Memory).
pub struct Scope<'a> {
    pub input: &'a Value,
    pub context: &'a Value,
    pub profile: &'a Value,
}

/// Runs JavaScript against the memory; implemented by `script::Engine`.
pub trait Scripts {
    /// The expression's value; `Ok(None)` is `undefined`.
    fn eval(&mut self, src: &str, scope: &Scope<'_>) -> Result<Option<Value>, String>;
    /// Runs a Code node body, writing changes back; returns its `api.output` calls.
    fn code(
        &mut self,
        src: &str,
        input: &mut Value,
        context: &mut Value,
        profile: &mut Value,
    ) -> Result<Vec<(String, Value)>, CodeFailure>;
    /// Set once the turn's scripts are stopped (`limits.turnScriptMs` used up, or the shutdown):
    /// why, for the interpreter to end the turn with.
    fn stopped(&self) -> Option<String> {
        None
    }
}

/// A `Scripts` plus the errors met while rendering, for the caller to log.
pub struct Evaluator<'a> {
    pub scripts: &'a mut dyn Scripts,
    pub errors: Vec<String>,
}

impl<'a> Evaluator<'a> {
    /// Wraps a script engine.
    pub fn new(scripts: &'a mut dyn Scripts) -> Evaluator<'a> {
        Evaluator { scripts, errors: Vec::new() }
    }

    fn script(&mut self, src: &str, scope: &Scope<'_>) -> Option<Value> {
        match self.scripts.eval(src, scope) {
            Ok(v) => v,
            // A stopped turn is logged once, by the interpreter, not once per expression.
            Err(_) if self.scripts.stopped().is_some() => None,
            Err(e) => {
                self.errors.push(format!("{src:?}: {e}"));
                None
            }
        }
    }
}

/// A dotted path into `input`, `context` or `profile` (or their aliases `ci`, `cc`, `cp`).
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub root: Root,
    pub keys: Vec<String>,
}

/// The three memory objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Input,
    Context,
    Profile,
}

/// A Code node's failure: as logged (`Error: boom (line 1, column 7)`), and the error's own
/// message, for `input.codeNodeError.message` (`boom`).
#[derive(Debug, Clone, PartialEq)]
pub struct CodeFailure {
    pub shown: String,
    pub message: String,
}

/// An expression inside `{{ }}` or a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Path(Path),
    /// `path == literal`, `path != literal`, `===`, `!==`: the same on JSON values, but a
    /// missing path is `undefined`, which is loosely equal to `null` and strictly to nothing.
    Compare {
        path: Path,
        equal: bool,
        strict: bool,
        value: Value,
        /// The expression, for the script engine when JavaScript's answer depends on more than
        /// JSON can say (an object or array compared loosely with a string or number).
        src: String,
    },
    /// `!expr`.
    Not(Box<Expr>),
    /// Anything else: JavaScript, for the script engine.
    Script(String),
}

/// A text with `{{ }}` holes.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Hole(Expr),
}

impl Path {
    /// Parses `context.order.status`; `None` when it is not a plain dotted path.
    pub fn parse(src: &str) -> Option<Path> {
        let mut it = src.trim().split('.');
        let root = match it.next()? {
            "input" | "ci" => Root::Input,
            "context" | "cc" => Root::Context,
            "profile" | "cp" => Root::Profile,
            _ => return None,
        };
        let keys: Vec<String> = it.map(str::to_owned).collect();
        let ident = |k: &String| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        keys.iter().all(ident).then_some(Path { root, keys })
    }

    /// The value at the path; `None` when any step is missing (JavaScript's `undefined`). A
    /// final `.length` of a string or array is computed, as in JavaScript.
    pub fn get<'v>(&self, scope: &Scope<'v>) -> Option<Cow<'v, Value>> {
        let mut v = match self.root {
            Root::Input => scope.input,
            Root::Context => scope.context,
            Root::Profile => scope.profile,
        };
        for (i, k) in self.keys.iter().enumerate() {
            v = match v {
                Value::Object(m) => m.get(k)?,
                Value::Array(a) if k == "length" && i + 1 == self.keys.len() => {
                    return Some(Cow::Owned(Value::from(a.len())));
                }
                Value::Array(a) => a.get(k.parse::<usize>().ok()?)?,
                Value::String(s) if k == "length" && i + 1 == self.keys.len() => {
                    // JavaScript counts UTF-16 code units.
                    return Some(Cow::Owned(Value::from(s.encode_utf16().count())));
                }
                _ => return None,
            };
        }
        Some(Cow::Borrowed(v))
    }

    /// Whether JavaScript would throw reading the path: a key read on `undefined` or `null`
    /// (`context.order.id` without `context.order`). A key of a string, number or boolean is
    /// `undefined`, not an error, as are the keys after a `.length`.
    pub fn throws(&self, scope: &Scope<'_>) -> bool {
        /// Stands for a present primitive (a `.length`): its keys are `undefined`.
        static PRIMITIVE: Value = Value::Bool(true);
        let mut v = Some(match self.root {
            Root::Input => scope.input,
            Root::Context => scope.context,
            Root::Profile => scope.profile,
        });
        for k in &self.keys {
            v = match v {
                None | Some(Value::Null) => return true,
                Some(Value::Object(m)) => m.get(k),
                Some(Value::Array(_) | Value::String(_)) if k == "length" => Some(&PRIMITIVE),
                Some(Value::Array(a)) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
                Some(_) => None,
            };
        }
        false
    }
}

impl Expr {
    /// Parses an expression; what is not a path or simple comparison becomes `Script`.
    pub fn parse(src: &str) -> Expr {
        let s = src.trim();
        if let Some(p) = Path::parse(s) {
            return Expr::Path(p);
        }
        // `!path` only: `!a == b` is `(!a) == b` in JavaScript, which the script engine does.
        if let Some(rest) = s.strip_prefix('!').filter(|r| !r.starts_with('='))
            && let e @ Expr::Path(_) = Expr::parse(rest)
        {
            return Expr::Not(Box::new(e));
        }
        for (op, equal, strict) in
            [("!==", false, true), ("===", true, true), ("!=", false, false), ("==", true, false)]
        {
            if let Some((l, r)) = s.split_once(op) {
                if let (Some(path), Some(value)) = (Path::parse(l), literal(r.trim())) {
                    return Expr::Compare { path, equal, strict, value, src: s.to_owned() };
                }
                break;
            }
        }
        Expr::Script(s.to_owned())
    }

    /// The script source, when this expression needs a JavaScript engine.
    pub fn script(&self) -> Option<&str> {
        match self {
            Expr::Script(s) => Some(s),
            Expr::Not(e) => e.script(),
            _ => None,
        }
    }

    /// Evaluates the expression; `None` is `undefined` (also what a throwing script gives, and
    /// what the fast path gives where JavaScript would throw).
    pub fn eval(&self, scope: &Scope<'_>, ev: &mut Evaluator<'_>) -> Option<Value> {
        if self.throws(scope) {
            return None;
        }
        match self {
            Expr::Path(p) => p.get(scope).map(Cow::into_owned),
            Expr::Compare { path, equal, strict, value, src } => {
                let same = match path.get(scope) {
                    Some(got) if *strict => strict_eq(&got, value),
                    // `[1, 'a'] == '1,a'`: JavaScript compares the object's string form.
                    Some(got) if (got.is_array() || got.is_object()) && !value.is_null() => {
                        return ev.script(src, scope);
                    }
                    Some(got) => loose_eq(&got, value),
                    // `undefined == null`, but `undefined === null` is false, as in JavaScript.
                    None => !*strict && value.is_null(),
                };
                Some(Value::Bool(same == *equal))
            }
            Expr::Not(e) => Some(Value::Bool(!truthy(e.eval(scope, ev).as_ref()))),
            Expr::Script(src) => ev.script(src, scope),
        }
    }

    /// Whether the fast path's expression would throw in JavaScript (a script says for itself).
    fn throws(&self, scope: &Scope<'_>) -> bool {
        match self {
            Expr::Path(p) | Expr::Compare { path: p, .. } => p.throws(scope),
            Expr::Not(e) => e.throws(scope),
            Expr::Script(_) => false,
        }
    }

    /// The expression as a condition, with JavaScript truthiness.
    pub fn test(&self, scope: &Scope<'_>, ev: &mut Evaluator<'_>) -> bool {
        truthy(self.eval(scope, ev).as_ref())
    }
}

/// A JSON literal of a primitive (null, a boolean, a number, a string) or a quoted string
/// (`'shipped'`, `"shipped"`). An array or object literal is not one: in JavaScript it is a new
/// object, equal to nothing (`x == []` is for the script engine).
fn literal(s: &str) -> Option<Value> {
    if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        // `'a' || x == 'b'` also starts and ends with a quote: only a quote-free inside is one
        // literal; anything else is JavaScript.
        let inner = &s[1..s.len() - 1];
        return (!inner.contains(['\'', '\\'])).then(|| Value::String(inner.to_owned()));
    }
    serde_json::from_str(s).ok().filter(|v: &Value| !v.is_array() && !v.is_object())
}

/// JavaScript's `===` on JSON values: numbers by value, everything else as it is.
fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// JavaScript's `==` between a JSON value and a literal: a number equals its decimal string
/// (the answer to a number question is often compared with `'3'`) and a boolean its number
/// (`true == 1`). Objects and arrays equal only themselves here (JavaScript would compare their
/// strings; such a comparison goes to the script engine only if written as a script).
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Bool(_), Value::Number(_) | Value::String(_) | Value::Bool(_))
        | (Value::Number(_) | Value::String(_), Value::Bool(_))
        | (Value::Number(_), Value::String(_))
        | (Value::String(_), Value::Number(_)) => match (to_number(a), to_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => strict_eq(a, b),
        },
        _ => strict_eq(a, b),
    }
}

/// JavaScript's `Number(v)` of a primitive, for `==` (`None`: NaN, or not a primitive). Strings:
/// trimmed, empty is 0, decimal, `Infinity`, and `0x`/`0o`/`0b` forms.
fn to_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => {
            let t = s.trim();
            match t {
                "" => Some(0.0),
                "Infinity" | "+Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                _ if t.starts_with("0x") || t.starts_with("0X") => radix_number(&t[2..], 16),
                _ if t.starts_with("0o") || t.starts_with("0O") => radix_number(&t[2..], 8),
                _ if t.starts_with("0b") || t.starts_with("0B") => radix_number(&t[2..], 2),
                // Rust also reads "inf" and "NaN", which JavaScript does not.
                _ if t.bytes().any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') => None,
                _ => t.parse().ok(),
            }
        }
        _ => None,
    }
}

/// The digits of a `0x`/`0o`/`0b` string: of that base only (`0x+5` is NaN, as in JavaScript).
fn radix_number(digits: &str, radix: u32) -> Option<f64> {
    let valid = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    valid.then(|| u64::from_str_radix(digits, radix).ok().map(|n| n as f64)).flatten()
}

/// JavaScript truthiness of a JSON value (`None` is `undefined`).
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// How a value prints inside a text: strings as they are, `undefined`/`null` as nothing,
/// objects and arrays as JSON; numbers as JavaScript prints them (a whole `10.0` from an API's
/// answer as `10`, not serde's `10.0`).
pub fn render(v: Option<&Value>, out: &mut String) {
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push_str(s),
        Some(other) if has_whole_float(other) => out.push_str(&as_javascript(other).to_string()),
        Some(other) => out.push_str(&other.to_string()),
    }
}

/// A float with no fraction that JavaScript prints as an integer (within ±2^53, where every
/// integer is exact).
fn whole(n: &serde_json::Number) -> Option<i64> {
    let f = n.as_f64().filter(|_| n.is_f64())?;
    (f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0).then_some(f as i64)
}

fn has_whole_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => whole(n).is_some(),
        Value::Array(a) => a.iter().any(has_whole_float),
        Value::Object(m) => m.values().any(has_whole_float),
        _ => false,
    }
}

/// `v` with its whole floats as integers (`JSON.stringify` prints `2.0` as `2`).
fn as_javascript(v: &Value) -> Value {
    match v {
        Value::Number(n) => whole(n).map_or_else(|| v.clone(), Value::from),
        Value::Array(a) => Value::Array(a.iter().map(as_javascript).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), as_javascript(v))).collect()),
        _ => v.clone(),
    }
}

impl Template {
    /// Parses `Hello {{input.text}}!`; `Err` names an unclosed `{{`.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed '{{{{' at character {}", src.len() - rest.len() + start))?;
            parts.push(Part::Hole(Expr::parse(&after[..end])));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// True when the template has no holes.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// The single expression when the template is exactly `{{expr}}` (keeps its type in data).
    pub fn single(&self) -> Option<&Expr> {
        match self.parts.as_slice() {
            [Part::Hole(e)] => Some(e),
            _ => None,
        }
    }

    /// Every expression that needs the script engine.
    pub fn scripts(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Hole(e) => e.script(),
            Part::Lit(_) => None,
        })
    }

    /// The rendered text.
    pub fn render(&self, scope: &Scope<'_>, ev: &mut Evaluator<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Hole(e) => render(e.eval(scope, ev).as_ref(), &mut out),
            }
        }
        out
    }
}

/// The `type` of a `$cs` value: what the script's value is made into. `string`: the text a
/// `{{ }}` prints (objects as JSON, null as empty); `number`: `Number(v)` of a primitive (null and
/// undefined as 0, NaN as null); `boolean`: its truthiness; `object` keeps it as it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CsType {
    Object,
    String,
    Number,
    Boolean,
}

impl CsType {
    fn parse(s: &str) -> Option<CsType> {
        Some(match s {
            "object" => CsType::Object,
            "string" => CsType::String,
            "number" => CsType::Number,
            "boolean" => CsType::Boolean,
            _ => return None,
        })
    }

    fn convert(self, v: Value) -> Value {
        match self {
            CsType::Object => v,
            CsType::String => {
                let mut out = String::new();
                render(Some(&v), &mut out);
                Value::String(out)
            }
            CsType::Number => match to_number(&v).or(v.is_null().then_some(0.0)) {
                // A whole number as an integer, as JavaScript prints it.
                Some(n) if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 => Value::from(n as i64),
                Some(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
                None => Value::Null,
            },
            CsType::Boolean => Value::Bool(truthy(Some(&v))),
        }
    }
}

/// A JSON value whose strings are templates (a Say node's `data`, setContext's `value`).
#[derive(Debug, Clone, PartialEq)]
pub enum DataTemplate {
    Plain(Value),
    Text(Template),
    /// Cognigy's `{"$cs": {"script": "...", "type": "object"}}`: the script's value, as `type`
    /// says (`None`: as it is).
    Script(Expr, Option<CsType>),
    Array(Vec<DataTemplate>),
    Object(Vec<(String, DataTemplate)>),
}

impl DataTemplate {
    /// Parses every string of `v` as a template. An error comes with where in `v` it is
    /// (`.deep.k`, `[2]`; empty at the top), so that `check` names the very place.
    pub fn parse(v: &Value) -> Result<DataTemplate, (String, String)> {
        let here = |e: String| (String::new(), e);
        Ok(match v {
            Value::String(s) => {
                let t = Template::parse(s).map_err(here)?;
                if t.is_literal() { DataTemplate::Plain(v.clone()) } else { DataTemplate::Text(t) }
            }
            Value::Object(m) if m.len() == 1 && m.contains_key("$cs") => {
                let cs = &m["$cs"];
                let script = cs.get("script").and_then(Value::as_str);
                let script = script.ok_or_else(|| here("\"$cs\" needs {\"script\": \"<expression>\"}".into()))?;
                if let Some(extra) = cs.as_object().and_then(|o| o.keys().find(|k| *k != "script" && *k != "type")) {
                    return Err(here(format!("\"$cs\" takes \"script\" and \"type\", not {extra:?}")));
                }
                let kind = match cs.get("type") {
                    None | Some(Value::Null) => None,
                    Some(t) => Some(t.as_str().and_then(CsType::parse).ok_or_else(|| {
                        here(format!("\"$cs\".type must be one of object, string, number, boolean, got {t}"))
                    })?),
                };
                DataTemplate::Script(Expr::parse(script), kind)
            }
            Value::Array(a) => DataTemplate::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| DataTemplate::parse(v).map_err(|(at, e)| (format!("[{i}]{at}"), e)))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => DataTemplate::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), DataTemplate::parse(v).map_err(|(at, e)| (format!(".{k}{at}"), e))?)))
                    .collect::<Result<_, (String, String)>>()?,
            ),
            other => DataTemplate::Plain(other.clone()),
        })
    }

    /// Every expression that needs the script engine, with where it is (as `parse` says it).
    pub fn scripts(&self) -> Vec<(String, &str)> {
        match self {
            DataTemplate::Plain(_) => vec![],
            DataTemplate::Text(t) => t.scripts().map(|s| (String::new(), s)).collect(),
            DataTemplate::Script(e, _) => e.script().into_iter().map(|s| (String::new(), s)).collect(),
            DataTemplate::Array(a) => a
                .iter()
                .enumerate()
                .flat_map(|(i, v)| v.scripts().into_iter().map(move |(at, s)| (format!("[{i}]{at}"), s)))
                .collect(),
            DataTemplate::Object(m) => m
                .iter()
                .flat_map(|(k, v)| v.scripts().into_iter().map(move |(at, s)| (format!(".{k}{at}"), s)))
                .collect(),
        }
    }

    /// The rendered value; a string that is exactly one `{{expr}}` keeps the value's type.
    pub fn render(&self, scope: &Scope<'_>, ev: &mut Evaluator<'_>) -> Value {
        match self {
            DataTemplate::Plain(v) => v.clone(),
            DataTemplate::Text(t) => match t.single() {
                Some(e) => e.eval(scope, ev).unwrap_or(Value::Null),
                None => Value::String(t.render(scope, ev)),
            },
            DataTemplate::Script(e, kind) => {
                let v = e.eval(scope, ev).unwrap_or(Value::Null);
                kind.map_or(v.clone(), |k| k.convert(v))
            }
            DataTemplate::Array(a) => Value::Array(a.iter().map(|d| d.render(scope, ev)).collect()),
            DataTemplate::Object(m) => Value::Object(m.iter().map(|(k, d)| (k.clone(), d.render(scope, ev))).collect()),
        }
    }
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
