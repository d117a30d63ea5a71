//! hookflow: a self-hosted, Cognigy-compatible Webhook Endpoint.
//!
//! A client POSTs `{userId, sessionId, text, data}` to `/{URLToken}`; hookflow stores it, runs
//! the endpoint's Flow for that session, and POSTs each output to the endpoint's webhook URL.
//!
//! # The data path, one folder a room
//!
//! ```text
//! HTTP request ─► intake/ (http-N threads: routes.rs validates, admin.rs is /api/,
//!                           console.rs serves /console and console_api.rs its admin routes,
//!                           handover.rs the agent side of a handover, reply.rs the answers)
//!     ─► engine/writer.rs (group commit into the inbox, then 200; at low load the http thread
//!        commits its accept itself under the writer's lock, engine/inline.rs; replicas: the
//!        http threads write their accepts themselves, together, engine/direct.rs)
//!     ─► engine/scheduler.rs (per-session FIFO) ─► engine/worker.rs (worker-N: one turn each;
//!        at low load the http thread whose accept made a session runnable runs that turn
//!        itself after answering, `worker::run_job`)
//!     ─► engine/turn.rs (input object, engine/translate/ into the Flow's language, engine/nlu.rs,
//!        the Flow, http-node checkpoints, the outputs back into the user's language;
//!        turn/handover.rs: a handover's start, forwarded messages, agent jobs, the end;
//!        engine/driver.rs understands the message (translation, NLU) and runs a Flow to its
//!        end or its next call, for workers and `hookflow try`; engine/trace.rs the traces of
//!        test messages)
//!     ─► flow/ (model: compiled ops; compile, nodes: the compiler, one entry per node kind;
//!        run: the interpreter; handover: the handover a session keeps; template: {{ }} and
//!        conditions; script: JavaScript on QuickJS; intents: the built-in NLU; transform:
//!        transformers)
//!     ─► engine/writer.rs (group commit: session state + outputs into the outbox; at low load
//!        the worker commits its turn itself, engine/inline.rs)
//!     (parked turns: engine/effects.rs the calls a turn waits for, engine/calls.rs call-N
//!      threads make http-node, Rasa and handover provider calls, engine/handover/: webhook.rs,
//!      chatwoot.rs)
//!     ─► [wake channel] ─► delivery/ (sender-N lanes, `delivery.senders` per webhook URL:
//!        lane.rs outbox ─► attempt.rs POST ─► webhook; target.rs: a URL known down once for its
//!        lanes; history.rs the attempts noted for the delivery log)
//! ```
//!
//! Beside the path: `store/` (the `Store` trait every stage uses, its SQLite backend, and the
//! PostgreSQL backend of replicas, whose `Claims` feed `engine/claimer.rs` and
//! `delivery/claimed.rs` instead of the in-memory queues; `log.rs` the console's delivery log
//! as both backends assemble it),
//! `domain.rs` (the types the stages and the store share), `config/` (the config file, read and
//! validated once: `schema.rs` types and defaults, `loader.rs` and `checks.rs` the walk of the
//! file, `walk.rs` the JSON walker the Flow compiler shares, `handover.rs` the handover provider,
//! `files.rs` Flow and transformer files kept in the config folder, `translation.rs` the
//! `translation` setting, `store.rs` the `store` section), `wire.rs` (JSON shapes of the outside world), `crypto.rs` (key
//! digests, signatures), `tls.rs` (outbound TLS roots), `ops/` (metrics, health, systemd, the
//! logger), `cli/` (`try`, `sink`), `service.rs` (the wiring). Start reading at
//! `service::Service::start`.
//!
//! # Invariants
//!
//! - A message is answered 200 only once it is committed to the store's inbox; it leaves the
//!   inbox in the same transaction that stores its turn's outputs and session state. So after a
//!   crash a turn either happened entirely or runs again (from its last `http` checkpoint).
//! - A session is released for its next message only after its turn is committed.
//! - A session's handover to a human agent lives in its state (`SessionState::handover`),
//!   committed with its turns; what the agent side sends is queued as jobs of the session
//!   (`JobKind::AgentMessage`, `AgentEnd`) like messages, so it runs in the session's order.
//! - Messages of one session run one at a time, in acceptance order; a worker never waits for
//!   another session: a busy session is simply not in the ready FIFO.
//! - Outputs of one session go through one sender lane, in Seq order; output n+1 is sent only
//!   after n was delivered or became a dead letter. Lanes belong to one webhook URL, so a slow or
//!   down URL holds only its own lanes.
//! - Each thread gets a context of the handles it uses, built by `service.rs`; no module but
//!   `service.rs` knows every part, and none imports it.
//! - tiny_http: the listener is bound by `service.rs`, requests are read by `intake/` only
//!   (`cli/sink.rs` is a separate little server). ureq: built in `tls.rs`/`engine/http_node.rs`
//!   /`delivery/attempt.rs`, used by `delivery/` (deliveries), by `engine/` (the `http`
//!   node, Rasa, translation and handover providers: made by the `call-N` threads while the turn
//!   is parked, never by the interpreter or a worker) and by `cli/try_cmd.rs` (`hookflow try`
//!   makes its calls in line). SQL: only in `store/sqlite/` and
//!   `store/postgres/`.
//!   serde types of the outside world: `wire.rs`.
//! - The Flow interpreter (`flow/`) does no I/O: it takes state and input and returns outputs.
//!   JavaScript runs on the workers (templates, Code nodes, output transformers) and on the http
//!   threads (input transformers, and at low load the turns their accepts made runnable), each
//!   on its thread's own QuickJS runtime, in a fresh context per turn (per part of a turn that
//!   waits at an `http` node) and per transformer call (no turn sees another's globals).
//! - Channels are bounded except the scheduler's ready FIFO, which is bounded by
//!   `limits.queueCapacity` through the writer and inline commits (see `Scheduler::new`). Every thread is named and
//!   joined by `service.rs`, with two exceptions: a sender lane stuck in a delivery past the
//!   shutdown drain is left behind, and the `call-N` threads are told to stop but not waited for
//!   (a call may take its `timeoutMs`; the parked turn keeps its checkpoint).
//! - A worker never waits for the network: a turn that needs an outbound call parks, and the
//!   call's answer resumes it on any worker.
//!
//! # Cross-cutting
//!
//! Errors: `config::ConfigErrors` at start-up (exit 1), `service::Error` at run time (exit 2);
//! a failing turn is logged and costs that message only. Logs go through `log` to
//! `ops/logging.rs` (env_logger's filter and format; control characters escaped, repeats folded).
#![forbid(unsafe_code)]

// The data path, in order.
mod delivery;
mod engine;
pub mod flow;
mod intake;
pub mod store;

// Beside it.
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
mod ops;
pub mod service;
mod tls;
mod util;
pub mod wire;

/// The tests' throwaway PostgreSQL server (`tests/common/pgserver.rs`, shared with the
/// integration tests), loaded once for every unit test that needs one: one server per test run.
#[cfg(test)]
#[path = "../tests/common/pgserver.rs"]
mod pgserver;

pub use config::{Config, ConfigErrors};
pub use ops::logging;
pub use ops::systemd;
pub use service::{Error, Service};
pub use util::{hex, random_bytes, suggest};
