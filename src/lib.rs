//! hookflow: a self-hosted, Cognigy-compatible Webhook Endpoint.
//!
//! A client POSTs `{userId, sessionId, text, data}` to `/{URLToken}`; hookflow stores it, runs
//! the endpoint's Flow for that session, and POSTs each output to the endpoint's webhook URL.
//!
//! # The data path
//!
//! ```text
//! HTTP request ─► server.rs (http-N threads: route, validate)
//!     ─► writer.rs (group commit into the inbox, then 200)
//!     ─► worker.rs (Scheduler: per-session FIFO; worker-N threads run one turn each)
//!     ─► turn.rs (input object, nlu.rs, the Flow, http-node checkpoints, output bodies)
//!     ─► flow/ (model: compiled ops; run: the interpreter; template: {{ }} and conditions;
//!        JavaScript through script.rs on QuickJS)
//!     ─► writer.rs (group commit: session state + outputs into the outbox; session released)
//!     ─► [wake channel] ─► sender.rs (sender-N lanes: outbox ─► ureq POST ─► webhook)
//! ```
//!
//! Start reading at `service::Service::start`, then `server::run`, `worker::run`, `sender::run`.
//!
//! # Invariants
//!
//! - A message is answered 200 only once it is committed to the `inbox` table; it leaves that
//!   table in the same transaction that stores its turn's outputs and session state. So after a
//!   crash a turn either happened entirely or runs again (from its last `http` checkpoint).
//! - A session is released for its next message only after its turn is committed.
//! - Messages of one session run one at a time, in acceptance (inbox id) order; a worker never
//!   waits for another session: a busy session is simply not in the ready FIFO.
//! - Outputs of one session go through one sender lane, in sequence order; output n+1 is sent
//!   only after n was delivered or became a dead letter.
//! - Only `server.rs`/`admin.rs`/`sink.rs` know tiny_http; ureq is used by `sender.rs`
//!   (deliveries), `http_node.rs` and `nlu.rs` (the Flow's outbound calls, made by the worker,
//!   never by the interpreter); only `store.rs` knows SQL; `wire.rs` holds the JSON shapes of
//!   the outside world.
//! - The Flow interpreter does no I/O: it takes state and input and returns outputs.
//! - Every channel is bounded; every thread is named and joined by `service.rs` (a sender lane
//!   stuck in a delivery past the shutdown drain is the one exception: it is left behind).
//!
//! # Cross-cutting
//!
//! Errors: `config::ConfigErrors` at start-up (exit 1), `service::Error` at run time (exit 2);
//! a failing turn is logged and costs that message only. Logs go through `log`/`env_logger`.
#![forbid(unsafe_code)]

mod admin;
pub mod config;
pub mod flow;
mod http_node;
mod metrics;
pub mod nlu;
pub mod notify;
pub mod script;
mod sender;
mod server;
pub mod service;
mod signing;
pub mod sink;
pub mod store;
pub mod transform;
mod try_cmd;
mod turn;
mod util;
pub mod wire;
mod worker;
mod writer;

pub use config::{Config, ConfigErrors};
pub use service::{Error, Service, load_flows};
pub use try_cmd::run as try_flow;
pub use util::{hex, random_bytes};
