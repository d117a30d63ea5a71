//! The Flow: `model` (the file, validated and compiled to ops), `run` (the interpreter) and
//! `template` (CognigyScript templates and conditions).

pub mod model;
pub mod run;
pub mod template;

pub use model::Flow;
pub use run::{HttpCall, Output, RunOptions, SessionState, Turn, TurnIo, resume, run};

#[cfg(test)]
mod tests;
