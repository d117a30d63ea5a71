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
use crate::flow::script::{Called, Engine, TRANSFORMER_FUNCTIONS};
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
    let at = |e: String| format!("{}: {e}", file.display());
    crate::flow::script::check_syntax(&source, false).map_err(at)?;
    // Words that are one of the names in another case (`handleinput`), if the file makes them
    // functions (not a word in a comment): such a function would never be called; say so,
    // rather than transform nothing without a word.
    let mut near: Vec<&str> =
        words(&source).filter(|w| TRANSFORMER_FUNCTIONS.iter().any(|n| w != n && w.eq_ignore_ascii_case(n))).collect();
    near.sort_unstable();
    near.dedup();
    let (defined, misspelt) = crate::flow::script::transformer_defines(&source, &near)
        .map_err(|e| at(format!("running the file as each call does failed: {e}")))?;
    for name in TRANSFORMER_FUNCTIONS.iter().filter(|n| !defined.contains(n)) {
        if let Some(near) = misspelt.iter().find(|w| w.eq_ignore_ascii_case(name)) {
            return Err(at(format!("it defines {near}, but the function is called {name} (names are case-sensitive)")));
        }
    }
    if defined.is_empty() {
        return Err(at(format!(
            "it defines none of {}: nothing would be transformed",
            TRANSFORMER_FUNCTIONS.join(", ")
        )));
    }
    Ok(source)
}

/// The identifier-like words of `source`.
fn words(source: &str) -> impl Iterator<Item = &str> {
    source.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')).filter(|w| !w.is_empty())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::flow::script::Limits;

    /// `read` of a transformer file with `source`, in a folder of its own.
    fn read_source(name: &str, source: &str) -> Result<String, String> {
        let dir = std::env::temp_dir().join(format!("hookflow-transform-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.js");
        std::fs::write(&file, source).unwrap();
        let read = read(&file, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        read
    }

    /// Files that `check` passed and that then did nothing, or failed every call.
    #[test]
    fn a_file_whose_functions_would_never_be_called_is_refused_naming_why() {
        for (name, source, why) in [
            (
                "typo",
                "function handleinput({ request }) { return request.body; }",
                "it defines handleinput, but the function is called handleInput",
            ),
            ("none", "const x = 1;", "it defines none of handleInput, handleOutput"),
            // A word in a comment is no function: only "defines none" is said.
            ("comment", "// handleoutput is not needed\nconst x = 1;", "it defines none of"),
            ("return", "function handleInput() {}\nreturn;", "return"),
            ("cognigy", "createWebhookTransformer({ handleInput: async () => null });", "createWebhookTransformer"),
        ] {
            let e = read_source(name, source).expect_err(name);
            assert!(e.contains(why), "{name}: {e}");
            assert!(e.contains("t.js: "), "{name}: the file is named: {e}");
        }
    }

    /// `const handleInput = ...` is not a property of the global object; it was passed over.
    #[test]
    fn a_function_declared_with_const_is_called() {
        let source = "const handleInput = async ({ request }) => ({ text: 'const ' + request.body.text });";
        let source = read_source("const", source).unwrap();
        let settings = Transformer {
            file: "t.js".into(),
            input: true,
            output: true,
            inject: false,
            notify: false,
            abort_on_error: false,
        };
        let code = Code { file: "t.js".into(), source, settings };
        let limits = Limits { timeout: Duration::from_secs(1), memory: 8 << 20, turn: Duration::from_secs(5) };
        let mut engine = Engine::new(limits);
        let out = call(&mut engine, &code, "handleInput", &json!({ "request": { "body": { "text": "hi" } } }));
        assert_eq!(out, Outcome::Replaced(json!({ "text": "const hi" })));
        assert_eq!(call(&mut engine, &code, "handleOutput", &json!({})), Outcome::Unchanged);
    }
}
