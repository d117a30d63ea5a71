//! The Flow: `model` (the file, validated and compiled to ops), `run` (the interpreter) and
//! `template` (CognigyScript templates and conditions).

pub mod model;
pub mod run;
pub mod template;

pub use model::Flow;
pub use run::{Output, RunOptions, SessionState, Turn, run};

#[cfg(test)]
mod tests;
