//! CognigyScript on QuickJS (rquickjs): expressions in templates and conditions, Code nodes,
//! and transformer functions.
//!
//! One `Engine` per worker thread (a QuickJS runtime is not `Send`), created on first use
//! (`LazyEngine`). Each call gets `input`, `context`, `profile` (and `ci`, `cc`, `cp`) as fresh
//! globals parsed from JSON, runs under a deadline (`limits.scriptTimeoutMs`, enforced by the
//! interrupt handler) and a memory limit (`limits.scriptMemoryBytes`), and hands JSON back.
//! QuickJS has no file or network access of its own and we add none, so scripts are pure
//! computation. After a memory or time failure the runtime is thrown away and a fresh one made,
//! so one bad script cannot leave a poisoned engine behind.
//!
//! Isolation: every turn (`Engine::begin_turn`) and every transformer call runs in a new
//! QuickJS context, so what one turn does to `globalThis` or to the built-ins
//! (`Object.prototype.x = ...`) is never seen by another turn, of this session or any other. A
//! context is made at the first script of a turn: a turn without JavaScript pays nothing.
//! Freezing the built-ins and resetting the global object instead would cost less, but breaks
//! ordinary strict-mode code (`err.message = ...` on a frozen `Error.prototype` throws), so each
//! turn gets the whole set of intrinsics fresh (README, Choices).
//!
//! Budget: a turn's script calls together get `limits.turnScriptMs`; the call that reaches it is
//! interrupted, later calls of the turn are refused, and `Scripts::stopped` tells the
//! interpreter to end the turn. A stop flag set by the shutdown interrupts a running script the
//! same way (`Engine::interrupted`: the worker then keeps the message queued).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rquickjs::{CatchResultExt, CaughtError, Context, Ctx, Function, Object, Runtime, Value as JsValue};
use serde_json::Value;

use crate::flow::template::{CodeFailure, Scope};

/// JavaScript that a context gets before its first Code node: the `api` of Code nodes.
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
  // Real-time translation: the session's user language from now on (outputs of this turn
  // included); engine/translate keeps it with the session.
  setUserLanguage(code) {
    const c = String(code);
    if (!/^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(c))
      throw new Error("api.setUserLanguage: expected a language code like \"fr\" or \"pt-BR\", got " + JSON.stringify(c));
    globalThis.input.language = c;
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
    /// The turn's scripts together ran past `limits.turnScriptMs` (this one was stopped or not
    /// started).
    TurnBudget,
    /// Stopped (or not started) because the service is shutting down.
    Interrupted,
    /// The script threw (or did not compile): the message with its error name and position
    /// when known (`Error: boom (line 1, column 7)`), and the error's own `message` (`boom`).
    Thrown(String, String),
}

impl ScriptError {
    /// What `input.codeNodeError.message` says: the JavaScript error's own message, as a Flow
    /// compares it (`=== 'boom'`); the whole description for the other failures.
    pub fn message(&self) -> String {
        match self {
            ScriptError::Thrown(_, m) => m.clone(),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptError::Timeout => write!(f, "the script ran longer than limits.scriptTimeoutMs and was stopped"),
            ScriptError::Memory => write!(f, "the script needed more memory than limits.scriptMemoryBytes"),
            ScriptError::TurnBudget => {
                write!(f, "the turn's scripts ran longer than limits.turnScriptMs in all; this one was stopped")
            }
            ScriptError::Interrupted => write!(f, "the script was interrupted by the shutdown"),
            ScriptError::Thrown(m, _) => write!(f, "{m}"),
        }
    }
}

/// Why the scripts of the current turn are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `limits.turnScriptMs` is used up.
    Budget,
    /// The stop flag (shutdown) is set.
    Shutdown,
}

/// What a Code node did.
#[derive(Debug, Default)]
pub struct CodeResult {
    /// `api.output()` / `api.say()` calls, in order: (text, data).
    pub outputs: Vec<(String, Value)>,
}

/// What calling a transformer function gave.
#[derive(Debug, PartialEq)]
pub enum Called {
    /// The file defines no function of that name.
    Undefined,
    /// The function's value; `None` is `undefined`.
    Returned(Option<Value>),
}

/// Limits of script calls.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Each call.
    pub timeout: Duration,
    /// The runtime.
    pub memory: usize,
    /// All calls of one turn together (from `Engine::begin_turn`).
    pub turn: Duration,
}

impl Limits {
    /// `limits.scriptTimeoutMs`, `limits.scriptMemoryBytes` and `limits.turnScriptMs`.
    pub fn of(config: &crate::config::Config) -> Limits {
        Limits {
            timeout: config.limits.script_timeout,
            memory: config.limits.script_memory_bytes,
            turn: config.limits.turn_script,
        }
    }
}

/// A QuickJS runtime and the context of the current turn.
pub struct Engine {
    limits: Limits,
    rt: Runtime,
    /// The current turn's context; made at its first script, dropped by `begin_turn`.
    ctx: Option<Context>,
    /// Whether `ctx` has the Code node `api` yet.
    api: bool,
    /// When the running call must stop; read by the interrupt handler.
    deadline: Rc<Cell<Option<Instant>>>,
    /// Set by the shutdown: running scripts are interrupted, new ones refused.
    stop: Option<Arc<AtomicBool>>,
    /// Script time of the current turn so far.
    used: Duration,
    /// A context was made since the last collection (`begin_turn`).
    made: bool,
    stopped: Option<Stopped>,
}

impl Engine {
    /// A fresh engine; its first turn starts now.
    pub fn new(limits: Limits) -> Engine {
        Engine::with_stop(limits, None)
    }

    /// A fresh engine whose scripts stop when `stop` is set.
    pub fn with_stop(limits: Limits, stop: Option<Arc<AtomicBool>>) -> Engine {
        let deadline: Rc<Cell<Option<Instant>>> = Rc::default();
        let rt = runtime(limits, &deadline, &stop);
        Engine { limits, rt, ctx: None, api: false, deadline, stop, used: Duration::ZERO, made: false, stopped: None }
    }

    /// Starts a turn: a new context for its first script (nothing of the last turn's globals or
    /// built-ins is left) and the whole `limits.turnScriptMs` again.
    pub fn begin_turn(&mut self) {
        // The last turn's context (and a transformer call's) holds itself (`globalThis.globalThis`),
        // so dropping it frees nothing until QuickJS collects cycles, which it does only when its
        // heap has grown by half since the last time: a turn that kept 9 MB made later turns of
        // any session run out of `limits.scriptMemoryBytes`. Collected now, each turn starts with
        // the whole limit. A collection may queue jobs of the dead contexts (a
        // `FinalizationRegistry`'s callbacks): those must run nowhere, so the runtime goes.
        self.ctx = None;
        if std::mem::take(&mut self.made) {
            self.rt.run_gc();
            if self.rt.is_job_pending() {
                self.reset();
            }
        }
        self.api = false;
        self.used = Duration::ZERO;
        self.stopped = None;
    }

    /// Why this turn's scripts are stopped, if they are.
    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped
    }

    /// Whether the shutdown interrupted (or refused) a script of this turn: the turn did not run
    /// as written and must not be committed.
    pub fn interrupted(&self) -> bool {
        self.stopped == Some(Stopped::Shutdown)
    }

    /// Throws the runtime away after a limit was hit; the turn's accounting stays.
    fn reset(&mut self) {
        self.rt = runtime(self.limits, &self.deadline, &self.stop);
        self.ctx = None;
        self.api = false;
        self.made = false;
    }

    /// `must_stop` for this engine's running call, to hand to a script's closure (the loops in
    /// Rust that run the job queue ask it, as the interrupt handler does).
    fn stopper(&self) -> impl Fn() -> bool + use<> {
        let (deadline, stop) = (self.deadline.clone(), self.stop.clone());
        move || must_stop(&deadline, &stop)
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// The turn's context, made on first use.
    fn turn_context(&mut self) -> Result<Context, ScriptError> {
        if self.ctx.is_none() {
            self.ctx = Some(self.new_context()?);
        }
        Ok(self.ctx.clone().expect("made above"))
    }

    /// A new context; out of memory (`limits.scriptMemoryBytes` cannot hold even the built-ins)
    /// is the script's failure, as any other, not a panic of the thread running the turn.
    fn new_context(&mut self) -> Result<Context, ScriptError> {
        self.made = true;
        Context::full(&self.rt).map_err(|_| {
            self.reset();
            ScriptError::Memory
        })
    }

    /// Runs `f` in `context` under the limits; classifies failures and counts the time.
    fn guarded<T>(
        &mut self,
        context: &Context,
        f: impl for<'js> FnOnce(&Ctx<'js>) -> Result<T, CaughtError<'js>>,
    ) -> Result<T, ScriptError> {
        if self.stop_requested() {
            self.stopped = Some(Stopped::Shutdown);
        }
        let left = self.limits.turn.saturating_sub(self.used);
        if left.is_zero() && self.stopped.is_none() {
            self.stopped = Some(Stopped::Budget);
        }
        match self.stopped {
            Some(Stopped::Shutdown) => return Err(ScriptError::Interrupted),
            Some(Stopped::Budget) => return Err(ScriptError::TurnBudget),
            None => {}
        }
        let by_budget = left <= self.limits.timeout;
        let started = Instant::now();
        let deadline = started + left.min(self.limits.timeout);
        self.deadline.set(Some(deadline));
        let stop_now = self.stopper();
        let (result, emptied) = context.with(|ctx| {
            let result = f(&ctx).map_err(|e| caught_message(&e));
            // Promise callbacks the call left (also when it failed) run now, under its deadline:
            // the job queue belongs to the runtime, so a job left there ran in whichever call of
            // any session came next, and kept its turn's context alive until then.
            (result, run_jobs(&ctx, stop_now))
        });
        let ended = Instant::now();
        self.deadline.set(None);
        self.used = self.used.saturating_add(ended - started);
        let timed_out = ended >= deadline;
        // Callbacks that kept queueing more until the deadline: as a script that ran too long
        // (the runtime, with the jobs still queued in it, is thrown away below).
        let result = match emptied {
            true => result,
            false => Err(("the promise callbacks did not finish".to_owned(), String::new())),
        };
        match result {
            Ok(v) => Ok(v),
            Err(_) if self.stop_requested() => {
                self.stopped = Some(Stopped::Shutdown);
                self.reset();
                Err(ScriptError::Interrupted)
            }
            Err(_) if timed_out && by_budget => {
                self.stopped = Some(Stopped::Budget);
                self.reset();
                Err(ScriptError::TurnBudget)
            }
            Err(_) if timed_out => {
                self.reset();
                Err(ScriptError::Timeout)
            }
            Err((m, _)) if m.contains("out of memory") => {
                self.reset();
                Err(ScriptError::Memory)
            }
            Err((m, bare)) => Err(ScriptError::Thrown(m, bare)),
        }
    }

    /// Evaluates an expression; `Ok(None)` is `undefined`.
    pub fn eval(&mut self, src: &str, scope: &Scope<'_>) -> Result<Option<Value>, ScriptError> {
        let (input, context, profile) = (scope.input.to_string(), scope.context.to_string(), scope.profile.to_string());
        let code = format!("(\n{src}\n)");
        let ctx = self.turn_context()?;
        self.guarded(&ctx, |ctx| {
            set_memory(ctx, &input, &context, &profile).catch(ctx)?;
            let v: JsValue = ctx.eval(code).catch(ctx)?;
            to_json(ctx, v).catch(ctx)
        })
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
        let ctx = self.turn_context()?;
        let must_stop = self.stopper();
        // The api is only for Code nodes: templates, the common case, do not pay for it.
        let prelude = !std::mem::replace(&mut self.api, true);
        let (ni, nc, np, out) = self.guarded(&ctx, |ctx| {
            if prelude {
                ctx.eval::<(), _>(PRELUDE).catch(ctx)?;
            }
            set_memory(ctx, &i, &c, &p).catch(ctx)?;
            ctx.eval::<(), _>(code).catch(ctx)?;
            // Before the read-back, as a host runs them after a script: a `then` that sets
            // `context` or calls `api.output` is part of the node.
            if !run_jobs(ctx, &must_stop) {
                return Err(CaughtError::Error(rquickjs::Error::Unknown));
            }
            let g = ctx.globals();
            let read = |name: &str| -> rquickjs::Result<Option<Value>> { to_json(ctx, g.get(name)?) };
            Ok((
                read("input").catch(ctx)?,
                read("context").catch(ctx)?,
                read("profile").catch(ctx)?,
                read("__hf_out").catch(ctx)?,
            ))
        })?;
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

    /// Runs a transformer file in a context of its own, made for this call (so no call sees
    /// what an earlier one left), then calls `name(arg)`, awaiting a returned promise. Counts
    /// against the current turn's budget.
    pub fn call_transformer(&mut self, source: &str, name: &str, arg: &Value) -> Result<Called, ScriptError> {
        let (source, arg) = (source.to_owned(), arg.to_string());
        let context = self.new_context()?;
        let must_stop = self.stopper();
        // The context is garbage once this returns, collected at the next `begin_turn` (a
        // collection here could queue jobs of the turn's own live context after its last script).
        self.guarded(&context, |ctx| {
            ctx.eval::<(), _>(source).catch(ctx)?;
            let Some(f) = transformer_function(ctx, name).catch(ctx)? else { return Ok(Called::Undefined) };
            let arg = ctx.json_parse(arg).catch(ctx)?;
            let mut v: JsValue = f.call((arg,)).catch(ctx)?;
            if let Some(p) = v.as_promise().cloned() {
                // Cognigy's transformers are `async`: run the job queue until it settles, but
                // not past the deadline (rquickjs' `finish` loops for as long as jobs come).
                v = loop {
                    if let Some(settled) = p.result::<JsValue>() {
                        break settled.catch(ctx)?;
                    }
                    if must_stop() {
                        return Err(CaughtError::Error(rquickjs::Error::Unknown));
                    }
                    if !ctx.execute_pending_job() {
                        let never = "the promise it returned never settles (it waits for something that never comes)";
                        return Err(CaughtError::Error(rquickjs::Error::new_from_js_message(
                            "promise", "value", never,
                        )));
                    }
                };
            }
            to_json(ctx, v).map(Called::Returned).catch(ctx)
        })
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
    ) -> Result<Vec<(String, Value)>, CodeFailure> {
        let failure = |e: ScriptError| CodeFailure { shown: e.to_string(), message: e.message() };
        self.run_code(src, input, context, profile).map(|r| r.outputs).map_err(failure)
    }

    fn stopped(&self) -> Option<String> {
        Engine::stopped(self).map(|s| match s {
            Stopped::Budget => format!(
                "the turn's JavaScript ran longer than limits.turnScriptMs ({} ms) in all",
                self.limits.turn.as_millis()
            ),
            Stopped::Shutdown => {
                "the turn was interrupted by the shutdown; the message runs again after the next start".into()
            }
        })
    }
}

/// A worker's engine, created at its first script: Flows made only of paths never pay for one.
pub struct LazyEngine {
    limits: Limits,
    stop: Option<Arc<AtomicBool>>,
    engine: Option<Engine>,
}

impl LazyEngine {
    /// With the limits of `config`.
    pub fn new(config: &crate::config::Config) -> LazyEngine {
        LazyEngine { limits: Limits::of(config), stop: None, engine: None }
    }

    /// Scripts stop (running ones are interrupted) once `flag` is set.
    pub fn stop_on(mut self, flag: Arc<AtomicBool>) -> LazyEngine {
        self.stop = Some(flag);
        self
    }

    /// The engine, made now if this is its first use.
    pub fn get(&mut self) -> &mut Engine {
        self.engine.get_or_insert_with(|| Engine::with_stop(self.limits, self.stop.clone()))
    }

    /// See `Engine::begin_turn`.
    pub fn begin_turn(&mut self) {
        if let Some(e) = &mut self.engine {
            e.begin_turn();
        }
    }

    /// See `Engine::interrupted`.
    pub fn interrupted(&self) -> bool {
        self.engine.as_ref().is_some_and(Engine::interrupted)
    }

    /// Throws the engine away (after a panic), keeping limits and stop flag.
    pub fn reset(&mut self) {
        self.engine = None;
    }
}

impl crate::flow::template::Scripts for LazyEngine {
    fn eval(&mut self, src: &str, scope: &Scope<'_>) -> Result<Option<Value>, String> {
        crate::flow::template::Scripts::eval(self.get(), src, scope)
    }

    fn code(
        &mut self,
        src: &str,
        i: &mut Value,
        c: &mut Value,
        p: &mut Value,
    ) -> Result<Vec<(String, Value)>, CodeFailure> {
        crate::flow::template::Scripts::code(self.get(), src, i, c, p)
    }

    fn stopped(&self) -> Option<String> {
        self.engine.as_ref().and_then(crate::flow::template::Scripts::stopped)
    }
}

/// A runtime with the memory limit and the interrupt handler (deadline or stop flag).
fn runtime(limits: Limits, deadline: &Rc<Cell<Option<Instant>>>, stop: &Option<Arc<AtomicBool>>) -> Runtime {
    let rt = Runtime::new().expect("QuickJS can allocate a runtime");
    rt.set_memory_limit(limits.memory);
    rt.set_max_stack_size(256 * 1024);
    let (d, stop) = (deadline.clone(), stop.clone());
    rt.set_interrupt_handler(Some(Box::new(move || must_stop(&d, &stop))));
    rt
}

/// Whether the running call must stop: its deadline passed, or the shutdown began.
fn must_stop(deadline: &Cell<Option<Instant>>, stop: &Option<Arc<AtomicBool>>) -> bool {
    stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) || deadline.get().is_some_and(|t| Instant::now() >= t)
}

/// Runs the job queue (promise callbacks) until it is empty; false when the call must stop
/// first. The interrupt handler stops a long callback; this stops a chain of short ones, each
/// queueing the next.
fn run_jobs(ctx: &Ctx<'_>, must_stop: impl Fn() -> bool) -> bool {
    loop {
        if !ctx.execute_pending_job() {
            return true;
        }
        if must_stop() {
            return false;
        }
    }
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
/// QuickJS gives one; and the error's own `message` (what was thrown, if not an Error).
fn caught_message(e: &CaughtError<'_>) -> (String, String) {
    match e {
        CaughtError::Exception(ex) => {
            let msg = ex.message().unwrap_or_default();
            let name = ex.get::<_, String>("name").unwrap_or_else(|_| "Error".into());
            let at = ex.stack().as_deref().and_then(position).map(|(l, c)| format!(" (line {l}, column {c})"));
            (format!("{name}: {msg}{}", at.unwrap_or_default()), msg)
        }
        // QuickJS throws `null` when it cannot even allocate its "out of memory" error (a
        // script's own `throw null` reads the same, and is rare enough to share the message).
        CaughtError::Value(v) if v.is_null() => ("out of memory (null thrown)".into(), "null".into()),
        CaughtError::Value(v) => {
            let v = v.as_string().and_then(|s| s.to_string().ok()).unwrap_or_else(|| format!("{v:?}"));
            (format!("thrown: {v}"), v)
        }
        CaughtError::Error(e) => (e.to_string(), e.to_string()),
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
        let e = c.get_or_insert_with(checker);
        let ctx = e.turn_context().map_err(|e| e.to_string())?;
        e.guarded(&ctx, |ctx| ctx.eval::<(), _>(code).catch(ctx)).map_err(|e| past_the_end(e.to_string(), src))
    })
}

/// An error QuickJS places after the author's last line (on the wrapper's closing `)` or `}`)
/// is at the end of what they wrote: said so, instead of a line their text does not have.
fn past_the_end(message: String, src: &str) -> String {
    let lines = src.lines().count().max(1);
    let Some(at) = message.rfind(" (line ") else { return message };
    let line: Option<usize> = message[at + 7..].split(',').next().and_then(|l| l.parse().ok());
    match line {
        Some(l) if l > lines => format!("{} (at the end: something is missing before it)", &message[..at]),
        _ => message,
    }
}

/// The transformer function `name` (one of `TRANSFORMER_FUNCTIONS`), however the file declared
/// it: `function handleInput` is a property of the global object, `const handleInput = ...` is
/// not (a lexical binding), so it is looked up by name.
fn transformer_function<'js>(ctx: &Ctx<'js>, name: &str) -> rquickjs::Result<Option<Function<'js>>> {
    ctx.eval(format!("typeof {name} === 'function' ? {name} : undefined"))
}

/// The functions a transformer file may define (flows.md, Transformers).
pub const TRANSFORMER_FUNCTIONS: [&str; 4] = ["handleInput", "handleOutput", "handleInject", "handleNotify"];

/// Runs a transformer file once, as each call does (a script, not a function body: a top-level
/// `return` is an error), in a context of its own on the checker engine, and says which of
/// `TRANSFORMER_FUNCTIONS` it defines, and which of `others` (identifiers) it defines as
/// functions too. An error here (a name not defined, say) is one every call would meet.
pub fn transformer_defines(src: &str, others: &[&str]) -> Result<(Vec<&'static str>, Vec<String>), String> {
    CHECKER.with(|c| {
        let mut c = c.borrow_mut();
        let e = c.get_or_insert_with(checker);
        let context = Context::full(&e.rt).map_err(|e| format!("QuickJS cannot make a context: {e}"))?;
        let src = src.to_owned();
        e.guarded(&context, |ctx| {
            ctx.eval::<(), _>(src).catch(ctx)?;
            let mut defined = Vec::new();
            for name in TRANSFORMER_FUNCTIONS {
                if transformer_function(ctx, name).catch(ctx)?.is_some() {
                    defined.push(name);
                }
            }
            let mut also = Vec::new();
            for name in others {
                if transformer_function(ctx, name).catch(ctx)?.is_some() {
                    also.push((*name).to_owned());
                }
            }
            Ok((defined, also))
        })
        .map_err(|e| e.to_string())
    })
}

thread_local! {
    /// The engine `hookflow check` and Flow loading compile with; never runs Flow code.
    static CHECKER: std::cell::RefCell<Option<Engine>> = const { std::cell::RefCell::new(None) };
}

fn checker() -> Engine {
    // One long turn: compiling is quick, and the budget is for Flow turns.
    Engine::new(Limits { timeout: Duration::from_secs(1), memory: 16 << 20, turn: Duration::MAX })
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
#[path = "script_tests.rs"]
mod tests;
