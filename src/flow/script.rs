//! CognigyScript on QuickJS (rquickjs): expressions in templates and conditions, Code nodes,
//! and transformer functions.
//!
//! One `Engine` per worker thread (a QuickJS runtime is not `Send`), created on first use. Each
//! call gets `input`, `context`, `profile` (and `ci`, `cc`, `cp`) as fresh globals parsed from
//! JSON, runs under a deadline (`limits.scriptTimeoutMs`, enforced by the interrupt handler) and
//! a memory limit (`limits.scriptMemoryBytes`), and hands JSON back. QuickJS has no file or
//! network access of its own and we add none, so scripts are pure computation. After a memory
//! or time failure the runtime is thrown away and a fresh one made, so one bad script cannot
//! leave a poisoned engine behind.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::{CatchResultExt, CaughtError, Context, Ctx, Function, Object, Runtime, Value as JsValue};
use serde_json::Value;

use crate::flow::template::Scope;

/// JavaScript that every context starts with: the `api` of Code nodes.
const PRELUDE: &str = r#"
globalThis.__hf_out = [];
globalThis.api = {
  output(text, data) {
    __hf_out.push({ text: text === undefined || text === null ? "" : String(text),
                    data: data === undefined || data === null ? {} : data });
  },
  say(text, data) { api.output(text, data); },
  setContext(key, value) {
    const keys = String(key).split(".");
    let o = globalThis.context;
    for (let i = 0; i < keys.length - 1; i++) {
      if (typeof o[keys[i]] !== "object" || o[keys[i]] === null) o[keys[i]] = {};
      o = o[keys[i]];
    }
    o[keys[keys.length - 1]] = value;
  },
  log() {},
};
"#;

/// A script failure, as logged and as put into `input.codeNodeError`.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptError {
    /// Ran past `limits.scriptTimeoutMs`.
    Timeout,
    /// Needed more than `limits.scriptMemoryBytes`.
    Memory,
    /// The script threw (or did not compile); the message, with position when known.
    Thrown(String),
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptError::Timeout => write!(f, "the script ran longer than limits.scriptTimeoutMs and was stopped"),
            ScriptError::Memory => write!(f, "the script needed more memory than limits.scriptMemoryBytes"),
            ScriptError::Thrown(m) => write!(f, "{m}"),
        }
    }
}

/// What a Code node did.
#[derive(Debug, Default)]
pub struct CodeResult {
    /// `api.output()` / `api.say()` calls, in order: (text, data).
    pub outputs: Vec<(String, Value)>,
}

/// Limits of every script call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory: usize,
}

impl Limits {
    /// The limits of `limits.scriptTimeoutMs` and `limits.scriptMemoryBytes`.
    pub fn of(config: &crate::config::Config) -> Limits {
        Limits { timeout: config.limits.script_timeout, memory: config.limits.script_memory_bytes }
    }
}

/// A QuickJS runtime with its main context and the contexts of loaded transformer files.
pub struct Engine {
    limits: Limits,
    rt: Runtime,
    ctx: Context,
    transformers: HashMap<PathBuf, Context>,
    deadline: Rc<Cell<Option<Instant>>>,
}

impl Engine {
    /// A fresh engine.
    pub fn new(limits: Limits) -> Engine {
        let rt = Runtime::new().expect("QuickJS can allocate a runtime");
        rt.set_memory_limit(limits.memory);
        rt.set_max_stack_size(256 * 1024);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::default();
        let d = deadline.clone();
        rt.set_interrupt_handler(Some(Box::new(move || d.get().is_some_and(|t| Instant::now() >= t))));
        let ctx = new_context(&rt);
        Engine { limits, rt, ctx, transformers: HashMap::new(), deadline }
    }

    /// Throws the runtime away after a limit was hit.
    fn reset(&mut self) {
        *self = Engine::new(self.limits);
    }

    /// Runs `f` in the main context under the limits; classifies failures.
    fn guarded<T>(
        &mut self,
        f: impl for<'js> FnOnce(&Ctx<'js>) -> Result<T, CaughtError<'js>>,
        ctx: Option<&Path>,
    ) -> Result<T, ScriptError> {
        self.deadline.set(Some(Instant::now() + self.limits.timeout));
        let context = match ctx {
            Some(p) => self.transformers.get(p).expect("transformer loaded before use").clone(),
            None => self.ctx.clone(),
        };
        let result = context.with(|ctx| f(&ctx).map_err(|e| caught_message(&e)));
        let timed_out = self.deadline.get().is_some_and(|t| Instant::now() >= t);
        self.deadline.set(None);
        match result {
            Ok(v) => Ok(v),
            Err(_) if timed_out => {
                self.reset();
                Err(ScriptError::Timeout)
            }
            Err(m) if m.contains("out of memory") => {
                self.reset();
                Err(ScriptError::Memory)
            }
            Err(m) => Err(ScriptError::Thrown(m)),
        }
    }

    /// Evaluates an expression; `Ok(None)` is `undefined`.
    pub fn eval(&mut self, src: &str, scope: &Scope<'_>) -> Result<Option<Value>, ScriptError> {
        let (input, context, profile) = (scope.input.to_string(), scope.context.to_string(), scope.profile.to_string());
        let code = format!("(\n{src}\n)");
        self.guarded(
            |ctx| {
                set_memory(ctx, &input, &context, &profile).catch(ctx)?;
                let v: JsValue = ctx.eval(code).catch(ctx)?;
                to_json(ctx, v).catch(ctx)
            },
            None,
        )
    }

    /// Runs a Code node's body; changes to `input`, `context` and `profile` are written back.
    pub fn run_code(
        &mut self,
        src: &str,
        input: &mut Value,
        context: &mut Value,
        profile: &mut Value,
    ) -> Result<CodeResult, ScriptError> {
        let (i, c, p) = (input.to_string(), context.to_string(), profile.to_string());
        let code = format!("__hf_out = []; (function () {{\n{src}\n}})();");
        let (ni, nc, np, out) = self.guarded(
            |ctx| {
                set_memory(ctx, &i, &c, &p).catch(ctx)?;
                ctx.eval::<(), _>(code).catch(ctx)?;
                let g = ctx.globals();
                let read = |name: &str| -> rquickjs::Result<Option<Value>> { to_json(ctx, g.get(name)?) };
                Ok((
                    read("input").catch(ctx)?,
                    read("context").catch(ctx)?,
                    read("profile").catch(ctx)?,
                    read("__hf_out").catch(ctx)?,
                ))
            },
            None,
        )?;
        *input = ni.unwrap_or(Value::Null);
        *context = nc.unwrap_or(Value::Null);
        *profile = np.unwrap_or(Value::Null);
        let outputs = match out {
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|o| (o["text"].as_str().unwrap_or("").to_owned(), o.get("data").cloned().unwrap_or(Value::Null)))
                .collect(),
            _ => vec![],
        };
        Ok(CodeResult { outputs })
    }

    /// Loads (once) a transformer file into its own context.
    pub fn load_transformer(&mut self, file: &Path, source: &str) -> Result<(), ScriptError> {
        if self.transformers.contains_key(file) {
            return Ok(());
        }
        let ctx = new_context(&self.rt);
        self.transformers.insert(file.to_owned(), ctx);
        let src = source.to_owned();
        let loaded = self.guarded(|ctx| ctx.eval::<(), _>(src).catch(ctx), Some(file));
        if loaded.is_err() {
            self.transformers.remove(file);
        }
        loaded
    }

    /// Whether a loaded transformer defines the function `name`.
    pub fn has_function(&self, file: &Path, name: &str) -> bool {
        let Some(ctx) = self.transformers.get(file) else { return false };
        ctx.with(|ctx| ctx.globals().get::<_, Option<Function>>(name).ok().flatten().is_some())
    }

    /// Calls `name(arg)` of a loaded transformer; awaits a returned promise. `Ok(None)` when the
    /// function is not defined or returned `undefined`.
    pub fn call_transformer(&mut self, file: &Path, name: &str, arg: &Value) -> Result<Option<Value>, ScriptError> {
        let arg = arg.to_string();
        self.guarded(
            |ctx| {
                let f: Option<Function> = ctx.globals().get(name).catch(ctx)?;
                let Some(f) = f else { return Ok(None) };
                let arg = ctx.json_parse(arg).catch(ctx)?;
                let mut v: JsValue = f.call((arg,)).catch(ctx)?;
                if let Some(p) = v.as_promise().cloned() {
                    // Cognigy's transformers are `async`: run the job queue until it settles.
                    v = p.finish::<JsValue>().catch(ctx)?;
                }
                to_json(ctx, v).catch(ctx)
            },
            Some(file),
        )
    }
}

impl crate::flow::template::Scripts for Engine {
    fn eval(&mut self, src: &str, scope: &Scope<'_>) -> Result<Option<Value>, String> {
        Engine::eval(self, src, scope).map_err(|e| e.to_string())
    }

    fn code(
        &mut self,
        src: &str,
        input: &mut Value,
        context: &mut Value,
        profile: &mut Value,
    ) -> Result<Vec<(String, Value)>, String> {
        self.run_code(src, input, context, profile).map(|r| r.outputs).map_err(|e| e.to_string())
    }
}

fn new_context(rt: &Runtime) -> Context {
    let ctx = Context::full(rt).expect("QuickJS can allocate a context");
    ctx.with(|ctx| ctx.eval::<(), _>(PRELUDE)).expect("the prelude is valid JavaScript");
    ctx
}

/// Sets `input`, `context`, `profile` and their aliases from JSON.
fn set_memory(ctx: &Ctx<'_>, input: &str, context: &str, profile: &str) -> rquickjs::Result<()> {
    let g: Object = ctx.globals();
    for (names, json) in [(["input", "ci"], input), (["context", "cc"], context), (["profile", "cp"], profile)] {
        let v = ctx.json_parse(json)?;
        g.set(names[0], v.clone())?;
        g.set(names[1], v)?;
    }
    Ok(())
}

/// A JS value as JSON; `None` for `undefined` (and functions, which JSON cannot hold).
fn to_json<'js>(ctx: &Ctx<'js>, v: JsValue<'js>) -> rquickjs::Result<Option<Value>> {
    if v.is_undefined() {
        return Ok(None);
    }
    let Some(s) = ctx.json_stringify(v)? else { return Ok(None) };
    // A value JSON cannot carry back (nested deeper than serde_json's 128 levels) is an error of
    // the script, not a silent null that would wipe `context`.
    serde_json::from_str(&s.to_string()?)
        .map(Some)
        .map_err(|e| rquickjs::Error::new_from_js_message("value", "JSON", format!("the value cannot be stored: {e}")))
}

/// The message of a caught JS error, with its position (`line L, column C` in the script) when
/// QuickJS gives one.
fn caught_message(e: &CaughtError<'_>) -> String {
    match e {
        CaughtError::Exception(ex) => {
            let msg = ex.message().unwrap_or_default();
            let name = ex.get::<_, String>("name").unwrap_or_else(|_| "Error".into());
            let at = ex.stack().as_deref().and_then(position).map(|(l, c)| format!(" (line {l}, column {c})"));
            format!("{name}: {msg}{}", at.unwrap_or_default())
        }
        CaughtError::Value(v) => {
            format!("thrown: {}", v.as_string().and_then(|s| s.to_string().ok()).unwrap_or_else(|| format!("{v:?}")))
        }
        CaughtError::Error(e) => e.to_string(),
    }
}

/// `eval_script:3:7` in a stack trace → (2, 7): the wrappers above add one line.
fn position(stack: &str) -> Option<(u32, u32)> {
    const NAME: &str = "eval_script:";
    let at = stack.find(NAME)? + NAME.len();
    let mut parts = stack[at..].split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let line: u32 = parts.next()?.parse().ok()?;
    let col: u32 = parts.next()?.parse().ok()?;
    Some((line.saturating_sub(1).max(1), col))
}

/// Compiles without running: a syntax error comes back with its position. `expression` is
/// for templates and conditions, otherwise the source is a Code node body.
pub fn check_syntax(src: &str, expression: bool) -> Result<(), String> {
    // Wrapping in a function that is never called compiles the body without executing it.
    let code = if expression {
        format!("(function () {{ return (\n{src}\n); }})")
    } else {
        format!("(function () {{\n{src}\n}})")
    };
    CHECKER.with(|c| {
        let mut c = c.borrow_mut();
        c.get_or_insert_with(checker).guarded(|ctx| ctx.eval::<(), _>(code).catch(ctx), None).map_err(|e| e.to_string())
    })
}

thread_local! {
    /// The engine `hookflow check` and Flow loading compile with; never runs Flow code.
    static CHECKER: std::cell::RefCell<Option<Engine>> = const { std::cell::RefCell::new(None) };
}

fn checker() -> Engine {
    Engine::new(Limits { timeout: Duration::from_secs(1), memory: 16 << 20 })
}

/// Checks that `src` (a `new RegExp(...)` expression) builds a regular expression.
pub fn check_regex(src: &str) -> Result<(), String> {
    let scope_v = Value::Null;
    let scope = Scope { input: &scope_v, context: &scope_v, profile: &scope_v };
    CHECKER.with(|c| {
        let mut c = c.borrow_mut();
        c.get_or_insert_with(checker).eval(src, &scope).map(drop).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine() -> Engine {
        Engine::new(Limits { timeout: Duration::from_millis(200), memory: 8 << 20 })
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
        assert!(matches!(&err, ScriptError::Thrown(m) if m.contains("TypeError")), "{err:?}");
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
        let bomb = "let a = []; while (true) { a.push('x'.repeat(1 << 16)); }";
        let err = e.run_code(bomb, &mut json!({}), &mut json!({}), &mut json!({})).unwrap_err();
        assert!(matches!(err, ScriptError::Memory | ScriptError::Timeout), "{err:?}");
        assert_eq!(eval(&mut e, "'still ' + 'alive'").unwrap(), Some(json!("still alive")));
    }

    #[test]
    fn code_changes_memory_and_emits_outputs() {
        let mut e = engine();
        let (mut input, mut context, mut profile) = (json!({"text": "x"}), json!({"n": 1}), json!({}));
        let code = "context.n += 1; profile.seen = true; api.setContext('a.b', 5); api.output('hello', {k: 1}); api.say('bye');";
        let r = e.run_code(code, &mut input, &mut context, &mut profile).unwrap();
        assert_eq!(context, json!({"n": 2, "a": {"b": 5}}));
        assert_eq!(profile, json!({"seen": true}));
        assert_eq!(r.outputs, vec![("hello".to_owned(), json!({"k": 1})), ("bye".to_owned(), json!({}))]);
    }

    #[test]
    fn scripts_have_no_file_or_network_access() {
        let mut e = engine();
        for src in
            ["typeof require", "typeof fetch", "typeof XMLHttpRequest", "typeof process", "typeof std", "typeof os"]
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
        let file = Path::new("t.js");
        e.load_transformer(file, "async function handleInput({ request }) { return { userId: request.body.user, text: request.body.message }; }").unwrap();
        let out = e
            .call_transformer(file, "handleInput", &json!({"request": {"body": {"user": "u", "message": "m"}}}))
            .unwrap();
        assert_eq!(out, Some(json!({"userId": "u", "text": "m"})));
        assert_eq!(e.call_transformer(file, "handleOutput", &json!({})).unwrap(), None);
    }
}
