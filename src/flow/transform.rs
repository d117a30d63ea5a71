//! Transformers (flows.md, Transformers): an endpoint's JavaScript file with any of
//! `handleInput`, `handleOutput`, `handleInject`, `handleNotify`, as in Cognigy. Each call runs
//! on the calling thread's script engine (http threads for the input side, workers for outputs)
//! under the same limits as any script, in a context made for that call: no call sees what an
//! earlier one (or a Flow script) left in the globals or built-ins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::config::{Config, Endpoint, Transformer, files};
use crate::flow::script::{Called, Engine};
use crate::flow::template::truthy;

/// A transformer file, read and syntax-checked at start-up.
#[derive(Debug)]
pub struct Code {
    pub file: PathBuf,
    pub source: String,
    pub settings: Transformer,
}

/// What a transformer call decided.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Use this value instead.
    Replaced(Value),
    /// The function returned a falsy value: drop the request or output.
    Dropped,
    /// Not configured for this hook, or the function is not defined: go on untransformed.
    Unchanged,
    /// The function threw or ran out of time or memory.
    Failed(String),
}

/// The transformer of each endpoint that has one, by endpoint name.
pub type Transformers = HashMap<String, Arc<Code>>;

/// Reads and checks the transformer of every endpoint that has one; `Err` lists each problem.
pub fn load(config: &Config) -> Result<Transformers, Vec<String>> {
    let mut out = HashMap::new();
    let mut errors = Vec::new();
    for ep in &config.endpoints {
        let Some(t) = &ep.transformer else { continue };
        match read(&t.file, &config.dir) {
            Ok(source) => {
                out.insert(ep.name.clone(), Arc::new(Code { file: t.file.clone(), source, settings: t.clone() }));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Reads a transformer file, which must be inside `root` (the config file's folder, see
/// `config/files.rs`), and checks its syntax; `Err` is a `file: problem` line.
pub fn read(file: &Path, root: &Path) -> Result<String, String> {
    let source =
        files::read(root, file).map_err(|e| format!("{}: cannot read the transformer file: {e}", file.display()))?;
    crate::flow::script::check_syntax(&source, false).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(source)
}

/// The `endpoint` argument of every transformer function.
pub fn endpoint_arg(ep: &Endpoint) -> Value {
    serde_json::json!({ "name": ep.name, "URLToken": ep.url_token, "channel": "webhook" })
}

/// Calls `name(arg)` if the function exists, on `engine`, as part of its current turn (an
/// output transformer's time counts in the turn's `limits.turnScriptMs`).
pub fn call(engine: &mut Engine, code: &Code, name: &str, arg: &Value) -> Outcome {
    match engine.call_transformer(&code.source, name, arg) {
        Ok(Called::Returned(Some(v))) if truthy(Some(&v)) => Outcome::Replaced(v),
        // A falsy value, or `undefined` (the function returned nothing).
        Ok(Called::Returned(_)) => Outcome::Dropped,
        Ok(Called::Undefined) => Outcome::Unchanged,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
