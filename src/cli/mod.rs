//! Commands beside `serve`: `hookflow try` (a Flow in the terminal) and `hookflow sink` (a
//! webhook receiver for trying hookflow out).

pub mod sink;
pub mod try_cmd;
