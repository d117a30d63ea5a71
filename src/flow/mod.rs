//! The Flow, pure (no I/O): `model` (the compiled Flow; `compile` walks the files, `nodes`
//! describes each node kind once), `run` (the interpreter; `handover` the handover a session
//! keeps), `template` (CognigyScript templates and conditions), `script` (JavaScript on QuickJS: expressions, Code nodes, transformer
//! functions), `intents` (the built-in NLU scorer) and `transform` (the endpoint transformers'
//! files and calls).

mod compile;
pub mod handover;
pub mod intents;
pub mod model;
mod nodes;
pub mod run;
pub mod script;
pub mod template;
pub mod transform;

pub use model::Flow;
pub use run::{
    HandoverRequest, HandoverState, HandoverStatus, HttpCall, Output, RunOptions, SessionState, Turn, TurnIo,
    UserLanguageState, resume, run,
};

#[cfg(test)]
mod tests;
